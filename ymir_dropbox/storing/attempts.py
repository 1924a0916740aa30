"""An attempt as a value: what the ledger hands out, decoded once from its row.

Nothing outside the ledger reads a row by a column name. Paths are kept as their exact bytes
in the ledger and come back as :class:`~pathlib.Path`; problems come back as
:class:`~ymir_dropbox.reading.problems.Problem`; statuses and places as the enums of
:mod:`ymir_dropbox.storing.lifecycle`. A backend's own facts (YMIR's ids, ...) travel in
:attr:`Attempt.facts`, a mapping the backend reads with its own typed record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.storing.lifecycle import Place, Status

# JSON as the ledger keeps it: a backend's facts are values of these kinds.
Fact = str | int | float | bool | None | list[Any] | dict[str, Any]
Facts = Mapping[str, Fact]
NO_FACTS: Facts = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Findings:
    """What validation found in a package, as the ledger keeps it for people and scripts."""

    best_stage_name: str | None = None
    mAP: float | None = None
    class_names: tuple[str, ...] | None = None
    object_type: int | None = None
    package_version: str | None = None
    warnings: tuple[Problem, ...] = ()


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at one package file (one ledger row)."""

    id: int
    package: str
    status: Status
    place: Place | None
    source: Path | None = None
    processing_path: Path | None = None
    final_path: Path | None = None
    size: int | None = None
    sha256: str | None = None
    received_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    backend: str | None = None
    model_hash: str | None = None
    best_stage_name: str | None = None
    mAP: float | None = None
    class_names: tuple[str, ...] | None = None
    object_type: int | None = None
    package_version: str | None = None
    errors: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()
    dst_rev: str | None = None
    duplicate_of: int | None = None
    duration: float | None = None
    notes: tuple[str, ...] = ()
    uploader: str | None = None
    facts: Facts = field(default_factory=lambda: NO_FACTS)

    @property
    def relative(self) -> PurePosixPath | None:
        """The package's path under processing/ (and the inbox), when it was claimed."""
        path = self.processing_path
        return PurePosixPath(path) if path is not None else None

    @property
    def codes(self) -> frozenset[str]:
        return frozenset(problem.code for problem in self.errors)

    @property
    def reason(self) -> str:
        return failure_reason(self.errors)


def failure_reason(errors: tuple[Problem, ...]) -> str:
    """An attempt's problems in one line for people: the first one, ``code [field]:
    message``, and how many more there are."""
    if not errors:
        return ""
    first = errors[0]
    where = f" [{first.field}]" if first.field else ""
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{first.code}{where}: {first.message}{more}"
