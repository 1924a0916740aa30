"""The project's one backoff formula: retries of imports, of unreadable files, of notifications."""

from __future__ import annotations


def backoff(failures: int, base: float, maximum: float) -> float:
    """Seconds to wait after the ``failures``-th passing failure in a row: doubling, capped."""
    return min(maximum, base * 2.0 ** max(0, failures - 1))
