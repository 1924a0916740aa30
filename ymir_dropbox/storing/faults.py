"""Deterministic crash points, for the fault-injection tests and nothing else.

With ``YMIR_DROPBOX_CRASH_AT=<point>`` in its environment, the process kills itself with
SIGKILL when it reaches that point: the same as ``kill -9`` at that exact step, without
timing luck. Points, in pipeline order: ``claim`` (row written, file still in the inbox),
``claimed`` (file in processing), ``validated`` (hashed and checked), ``stored`` (model file
written, ledger not yet), ``recorded`` (final status in the ledger, file still in
processing), ``moved`` (file in done/ or failed/, ledger place not yet updated).

With ``YMIR_DROPBOX_FAIL_AT=<point>`` it raises :class:`InjectedFault` there instead: an
unexpected error (a bug) that the daemon must survive without losing the package.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "YMIR_DROPBOX_CRASH_AT"
FAIL_ENV_VAR = "YMIR_DROPBOX_FAIL_AT"
POINTS = ("claim", "claimed", "validated", "stored", "recorded", "moved")
_kill_at = os.environ.get(ENV_VAR, "")
_fail_at = os.environ.get(FAIL_ENV_VAR, "")


class InjectedFault(RuntimeError):
    """Raised at ``YMIR_DROPBOX_FAIL_AT``: stands for a bug in ymir-dropbox."""


def crash_point(name: str) -> None:
    assert name in POINTS, name
    if _kill_at == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if _fail_at == name:
        raise InjectedFault(f"injected fault at {name}")
