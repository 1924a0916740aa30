"""Deterministic fault points, for the fault-injection tests and nothing else.

Points, in pipeline order: ``claim`` (row written, file still in the inbox), ``claimed`` (file
in processing), ``validated`` (hashed and checked), ``stored`` (model file written, ledger not
yet), ``recorded`` (final status in the ledger, file still in processing), ``moved`` (file in
done/ or failed/, ledger place not yet updated).

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

import structlog

ENV_VAR = "YMIR_DROPBOX_CRASH_AT"
FAIL_ENV_VAR = "YMIR_DROPBOX_FAIL_AT"
PAUSE_ENV_VAR = "YMIR_DROPBOX_PAUSE_AT"
POINTS = ("claim", "claimed", "validated", "stored", "recorded", "moved")
_kill_at = os.environ.get(ENV_VAR, "")
_fail_at = os.environ.get(FAIL_ENV_VAR, "")
_pause_at, _, _pause_rest = os.environ.get(PAUSE_ENV_VAR, "").partition(":")
_pause_package, _, _pause_gate = _pause_rest.partition(":")
log = structlog.get_logger(__name__)


class InjectedFault(RuntimeError):
    """Raised at ``YMIR_DROPBOX_FAIL_AT``: stands for a bug in ymir-dropbox."""


def crash_point(name: str, package: str = "") -> None:
    assert name in POINTS, name
    if _kill_at == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if _fail_at == name:
        raise InjectedFault(f"injected fault at {name}")
    if _pause_at == name and fnmatch.fnmatchcase(package, _pause_package):
        log.info("paused_at", point=name, package=package)
        while os.path.exists(_pause_gate):
            time.sleep(0.01)
