"""The limits a package is judged against (``[limits]`` in the configuration)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    max_package_bytes: int
    max_unpacked_bytes: int
    max_members: int
    max_ratio: float
