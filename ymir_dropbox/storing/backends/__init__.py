"""Backends put a validated package into YMIR. One small Protocol; one module per backend."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from ymir_dropbox.config import Config
from ymir_dropbox.reading.problems import DropboxError, Problem
from ymir_dropbox.reading.validation import ValidationReport


@dataclass(frozen=True, slots=True)
class PreparedPackage:
    """A package that passed validation, with its decompressed tar spooled for random access."""

    path: Path
    sha256: str
    attempt_id: int
    report: ValidationReport
    spool: BinaryIO


@dataclass(frozen=True, slots=True)
class ImportResult:
    model_hash: str
    stored_path: Path
    dst_rev: str | None = None
    notes: tuple[str, ...] = field(default=())


class ImportFailed(DropboxError):
    """The backend refused the package; the problems say why. The package goes to failed/."""

    def __init__(
        self, problems: list[Problem], notes: tuple[str, ...] = (), dst_rev: str | None = None
    ) -> None:
        super().__init__("; ".join(problem.message for problem in problems))
        self.problems = problems
        self.notes = notes
        self.dst_rev = dst_rev


class Backend(Protocol):
    name: str

    def check(self) -> None:
        """Raise a DropboxError with a clear message when the backend cannot work."""

    def import_package(self, package: PreparedPackage) -> ImportResult:
        """Store the package; raise ImportFailed (package's fault) or OSError (environment's)."""

    def reference(self, attempt_id: int) -> str | None:
        """What the backend will create for this attempt outside the model store (a dst-rev),
        recorded in the ledger before the import starts; None if nothing."""

    def recover(self, attempt: dict[str, Any]) -> ImportResult | None:
        """After a crash mid-import: the result if the backend finished the attempt anyway."""


def make_backend(config: Config) -> Backend:
    from ymir_dropbox.storing.backends.embedded import EmbeddedBackend
    from ymir_dropbox.storing.backends.mir import MirBackend

    factories: dict[str, Callable[[Config], Backend]] = {
        "embedded": EmbeddedBackend,
        "mir": MirBackend,
    }
    return factories[config.import_.backend](config)
