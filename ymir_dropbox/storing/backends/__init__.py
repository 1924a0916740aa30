"""Backends put a validated package into YMIR. One small Protocol; one module per backend."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, BinaryIO, Protocol

from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.core.settings import Config
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.storing.attempts import NO_FACTS, Attempt, Facts

if TYPE_CHECKING:  # what a backend module needs at import stays light: `status` imports one
    from ymir_dropbox.reading.validation import ValidationReport
    from ymir_dropbox.storing.ledger import Ledger
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
    # Where the backend records its facts before its next step (YMIR's ids, a name).
    ledger: Ledger | None = None
    # What a long step is doing now (``step``, ``detail``), for the log and ``status``.
    progress: Callable[..., None] = field(default=lambda step, detail="": None)
    # Earlier attempts on the same package that a fault cut short, newest first: a backend
    # may resume what one of them started instead of starting again.
    earlier: tuple[Attempt, ...] = ()
    # The stored archive written while validation read the package, when the backend asked.
    streamed: StreamedStore | None = None

    def record_facts(self, facts: Facts) -> None:
        """Facts the ledger must hold before the backend's next step."""
        if self.ledger is not None:
            self.ledger.add_facts(self.attempt_id, facts)

    def record_model_hash(self, model_hash: str) -> None:
        """The model file about to take its name (so a start can tell it from an orphan)."""
        if self.ledger is not None:
            self.ledger.record_model_hash(self.attempt_id, model_hash)


@dataclass(frozen=True, slots=True)
class ImportResult:
    model_hash: str
    stored_path: Path | None = None  # None when the model is not in a store of ours
    dst_rev: str | None = None
    notes: tuple[str, ...] = field(default=())
    facts: Facts = field(default_factory=lambda: NO_FACTS)  # the backend's own, for the ledger
    mAP: float | None = None  # the backend's own reading of the best stage's mAP, if any
    # What the backend found wrong without refusing the package (YMIR lacks its executor
    # image): recorded with validation's warnings.
    warnings: tuple[Problem, ...] = field(default=())


class PassingFailure(DropboxError):
    """The backend cannot be reached or did not answer in time: not the package's fault. The
    package waits in processing/ and is retried later."""


class ImportFailed(DropboxError):
    """The backend refused the package; the problems say why. The package goes to failed/."""

    def __init__(
        self,
        problems: list[Problem],
        notes: tuple[str, ...] = (),
        dst_rev: str | None = None,
        warnings: tuple[Problem, ...] = (),
    ) -> None:
        super().__init__("; ".join(problem.message for problem in problems))
        self.problems = problems
        self.notes = notes
        self.dst_rev = dst_rev
        self.warnings = warnings  # found before the refusal, recorded with validation's


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

    def recover(self, attempt: Attempt) -> ImportResult | None:
        """After a crash mid-import: the result if the backend finished the attempt anyway."""

    def was_waiting(self, attempt: Attempt) -> bool:
        """Whether an attempt cut short was only waiting on the backend (YMIR importing what
        it was sent), not doing work that can kill a process: its death is then no crash of
        the package's."""

    def clean_up(self, ledger: Ledger) -> None:
        """At start, once every attempt a crash cut short is settled: remove what the
        backend wrote for attempts that will never use it."""


@dataclass(frozen=True, slots=True)
class BackendCommand:
    """A command of a backend's own (``projects``): it returns rows, which the command line
    prints as a table, or as JSON lines with ``--json``."""

    name: str
    help: str
    run: Callable[[Config], list[dict[str, object]]]
    columns: tuple[str, ...]
    json_help: str


# The backends, one line each: the name `[import] backend` takes, and its module. A module
# defines ``BACKEND`` (its class, made from the config), ``SETTINGS`` (its table
# ``[import.<module>]``: schema, defaults, frozen settings), ``check_setup(config)`` (its part of
# ``ymir-dropbox check``), ``FACT_NAMES`` (what it records in an attempt's facts, shown by
# ``ledger --json`` even when unknown) and, if it has any, ``COMMANDS`` of its own.
# The first is the default: it needs nothing but the folders.
REGISTRY: dict[str, str] = {
    "embedded": "ymir_dropbox.storing.backends.embedded",
    "mir": "ymir_dropbox.storing.backends.mir",
    "ymir-api": "ymir_dropbox.storing.backends.ymir_api",
}


def backend_module(name: str) -> ModuleType:
    """The module of a registered backend; only it is imported (a command starts sooner)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown backend {name!r}")  # config validation refuses it
    return importlib.import_module(REGISTRY[name])


def make_backend(config: Config) -> Backend:
    """The configured backend."""
    made: Backend = backend_module(config.import_.backend).BACKEND(config)
    return made


def backend_commands() -> list[BackendCommand]:
    """The commands every backend adds to the command line."""
    return [
        command for name in REGISTRY for command in getattr(backend_module(name), "COMMANDS", ())
    ]


def registry_key() -> tuple[tuple[str, str], ...]:
    """The registered backends, as a key for what is built from them and kept (a parser, a
    validator): a test that registers one gets a fresh build."""
    return tuple(sorted(REGISTRY.items()))


def fact_names() -> tuple[str, ...]:
    """Every fact any backend records, in the order ``ledger --json`` shows them."""
    names: list[str] = []
    for name in REGISTRY:
        names.extend(backend_module(name).FACT_NAMES)
    return tuple(dict.fromkeys(names))
