"""Deterministic crash points, for the fault-injection tests and nothing else.

With ``YMIR_DROPBOX_CRASH_AT=<point>`` in its environment, the process kills itself with
SIGKILL when it reaches that point: the same as ``kill -9`` at that exact step, without
timing luck. Points, in pipeline order: ``claim`` (row written, file still in the inbox),
``claimed`` (file in processing), ``validated`` (hashed and checked), ``stored`` (model file
written, ledger not yet), ``recorded`` (final status in the ledger, file still in
processing), ``moved`` (file in done/ or failed/, ledger place not yet updated).
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "YMIR_DROPBOX_CRASH_AT"
POINTS = ("claim", "claimed", "validated", "stored", "recorded", "moved")
_armed = os.environ.get(ENV_VAR, "")


def crash_point(name: str) -> None:
    assert name in POINTS, name
    if _armed == name:
        os.kill(os.getpid(), signal.SIGKILL)
