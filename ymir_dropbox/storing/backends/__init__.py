"""Backends put a validated package into YMIR. One small Protocol; one module per backend."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from ymir_dropbox.config import Config
from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.reading.validation import ValidationReport
from ymir_dropbox.storing.store import StreamedStore


@dataclass(frozen=True, slots=True)
class PreparedPackage:
    """A package that passed validation: what validation found in it, and the package file,
    open since it was validated. The store reads that file again: what it stores is what was
    validated, even if the path has been deleted or replaced meanwhile."""

    path: Path
    sha256: str
    attempt_id: int
    report: ValidationReport
    source: BinaryIO
    # Facts a backend must have in the ledger before its next step (YMIR's ids, a name).
    record: Callable[..., None] = field(default=lambda **fields: None)
    # What a long step is doing now (``step``, ``detail``), for the log and ``status``.
    progress: Callable[..., None] = field(default=lambda step, detail="": None)
    # Earlier attempts on the same package that a fault cut short, newest first: a backend
    # may resume what one of them started instead of starting again.
    earlier: tuple[dict[str, Any], ...] = ()
    # The stored archive written while validation read the package, when the backend asked.
    streamed: StreamedStore | None = None


@dataclass(frozen=True, slots=True)
class ImportResult:
    model_hash: str
    stored_path: Path | None = None  # None when the model is not in a store of ours
    dst_rev: str | None = None
    notes: tuple[str, ...] = field(default=())
    fields: dict[str, Any] = field(default_factory=dict)  # more ledger columns to record


class PassingFailure(DropboxError):
    """The backend cannot be reached or did not answer in time: not the package's fault. The
    package waits in processing/ and is retried later."""


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

    def streamed(self, package_bytes: int) -> AbstractContextManager[StreamedStore | None]:
        """A store to write while validation reads the package (it becomes the
        ``PreparedPackage.streamed`` of a valid one), or None when the backend stores after."""

    def import_package(self, package: PreparedPackage) -> ImportResult:
        """Store the package; raise ImportFailed (the package's fault), OSError or
        PassingFailure (the machine's or the network's: retried later)."""

    def temporary_folders(self) -> tuple[Path, ...]:
        """Where the backend writes its temporary files (``durable.temporary_file``): a
        start removes those a killed writer left there."""

    def reference(self, attempt_id: int) -> str | None:
        """What the backend will create for this attempt outside the model store (a dst-rev),
        recorded in the ledger before the import starts; None if nothing."""

    def recover(self, attempt: dict[str, Any]) -> ImportResult | None:
        """After a crash mid-import: the result if the backend finished the attempt anyway."""


def make_backend(config: Config) -> Backend:
    """The configured backend; only its module is imported (a command starts sooner)."""
    match config.import_.backend:
        case "embedded":
            from ymir_dropbox.storing.backends.embedded import EmbeddedBackend

            return EmbeddedBackend(config)
        case "mir":
            from ymir_dropbox.storing.backends.mir import MirBackend

            return MirBackend(config)
        case "ymir-api":
            from ymir_dropbox.storing.backends.ymir_api import YmirApiBackend

            return YmirApiBackend(config)
    raise ValueError(f"unknown backend {config.import_.backend!r}")  # config validation refuses it
