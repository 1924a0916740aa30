"""A value computed again in the background once it is old: readers never wait on the walk
that makes it (an uploader decides how long walking the folders takes), except for the
first value, and then only as long as they say."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger(__name__)
T = TypeVar("T")


class Refreshing(Generic[T]):
    def __init__(
        self,
        compute: Callable[[], T],
        max_age: float,
        name: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._compute = compute
        self._max_age = max_age
        self._name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._value: T | None = None
        self._computed_at = float("-inf")
        self._running = False
        self._first = threading.Event()

    def get(self, wait: float) -> T | None:
        """The latest value (a new one is started if it is ``max_age`` old); before the first
        is ready, wait up to ``wait`` seconds for it, and None if it is not there by then."""
        with self._lock:
            if not self._running and self._clock() - self._computed_at >= self._max_age:
                self._running = True
                threading.Thread(target=self._refresh, name=self._name, daemon=True).start()
        self._first.wait(wait)
        return self._value

    def _refresh(self) -> None:
        try:
            value = self._compute()
        except Exception as error:  # the old value stays; the next reader tries again
            log.exception("refresh_failed", value=self._name, error=repr(error))
            with self._lock:
                self._running = False
            return
        with self._lock:
            self._value, self._computed_at, self._running = value, self._clock(), False
        self._first.set()
