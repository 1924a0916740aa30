"""Deterministic fault points, for the fault-injection tests and nothing else.

Points, in pipeline order: ``claim`` (row written, file still in the inbox), ``claimed`` (file
in processing), ``validated`` (hashed and checked), ``stored`` (model file written, ledger not
yet), ``recorded`` (final status in the ledger, file still in processing), ``moved`` (file in
done/ or failed/, ledger place not yet updated). Beside the pipeline: ``scanning`` (a walk of
the inbox, on the scanner's thread, before it looks; its "package" is the folder walked,
``.`` for the whole inbox).

A :class:`FaultPlan` is made once, where the command starts, and handed to whatever reaches
a point (the importer, the claim, the filing). The command line makes it from:

- ``YMIR_DROPBOX_CRASH_AT=<point>``: the process kills itself with SIGKILL there, the same as
  ``kill -9`` at that exact step, without timing luck.
- ``YMIR_DROPBOX_FAIL_AT=<point>``: raises :class:`InjectedFault` there instead: an unexpected
  error (a bug) that the daemon must survive without losing the package.
- ``YMIR_DROPBOX_PAUSE_AT=<point>:<package glob>:<gate file>``: a package whose name matches
  waits there while the gate file exists (logged as ``paused_at``): an import that "takes a
  while" for as long as a test needs, without a large payload.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass

import structlog

ENV_VAR = "YMIR_DROPBOX_CRASH_AT"
FAIL_ENV_VAR = "YMIR_DROPBOX_FAIL_AT"
PAUSE_ENV_VAR = "YMIR_DROPBOX_PAUSE_AT"
POINTS = ("claim", "claimed", "validated", "stored", "recorded", "moved")  # a package's way
BESIDE = ("scanning",)  # the daemon's own work beside the packages
log = structlog.get_logger(__name__)


class InjectedFault(RuntimeError):
    """Raised at ``YMIR_DROPBOX_FAIL_AT``: stands for a bug in ymir-dropbox."""


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Where to die, fail or wait; empty in production."""

    kill_at: str = ""
    fail_at: str = ""
    pause_at: str = ""
    pause_package: str = ""
    pause_gate: str = ""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> FaultPlan:
        pause_at, _, rest = environ.get(PAUSE_ENV_VAR, "").partition(":")
        package, _, gate = rest.partition(":")
        return cls(environ.get(ENV_VAR, ""), environ.get(FAIL_ENV_VAR, ""), pause_at, package, gate)

    def reach(self, point: str, package: str = "") -> None:
        """Called at each point of the pipeline: does what the plan says there."""
        if point not in POINTS + BESIDE:
            raise ValueError(f"unknown fault point {point!r}")
        if self.kill_at == point:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.fail_at == point:
            raise InjectedFault(f"injected fault at {point}")
        if self.pause_at == point and fnmatch.fnmatchcase(package, self.pause_package):
            log.info("paused_at", point=point, package=package)
            while os.path.exists(self.pause_gate):
                time.sleep(0.01)


NO_FAULTS = FaultPlan()
