"""Recovery at start: finish or redo what a previous run left, from the ledger and folders.

Every attempt still in flight was cut short: by a stop past its timeout (recorded as such
before the exit), or by the death of the process (killed, out of memory, a power cut), which
counts as a crash of that import (unless it only waited on the backend). A backend may have
finished the import anyway (before we heard of it): then the import is recorded, not redone.
Every settled attempt still placed in processing/ is filed; every other file in processing/ is
imported again; the backend cleans up after itself (what it wrote for attempts that will
never use it).
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import structlog

from ymir_dropbox.core.settings import Paths
from ymir_dropbox.daemon.filing import Filing
from ymir_dropbox.daemon.machine import AtStart, at_start
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.storing.attempts import Attempt
from ymir_dropbox.storing.backends import Backend
from ymir_dropbox.storing.durable import remove_temporaries
from ymir_dropbox.storing.folders import walk_files
from ymir_dropbox.storing.ledger import DuplicateImport, Ledger
from ymir_dropbox.storing.lifecycle import (
    IllegalTransition,
    Place,
    Status,
    destination,
)
from ymir_dropbox.storing.lock import import_gone

log = structlog.get_logger(__name__)
DIED = "the daemon died during this import (killed, out of memory or a power cut)"


@dataclass(frozen=True, slots=True)
class Start:
    """What a start works with: the folders, the ledger, the backend, the filing."""

    paths: Paths
    ledger: Ledger
    backend: Backend
    filing: Filing
    present: set[PurePosixPath]  # the regular files in processing/
    dying: int = 0  # imports at work (not only waiting on the backend) when the daemon died
    solo: set[PurePosixPath] = field(default_factory=set)  # to redo alone, to find the guilty


def its_own(start: Start, attempt: Attempt) -> None:
    """A `ymir-dropbox import`'s: it owns its attempt while it runs; killed, it left the
    attempt to us (its lock free): interrupted, and what it stored is cleaned up after."""
    if import_gone(start.paths.work, attempt.id):
        notes = [*attempt.notes, "interrupted: its `ymir-dropbox import` was killed"]
        start.ledger.finish(attempt.id, Status.INTERRUPTED, notes=notes)
        log.warning("attempt_interrupted", attempt=attempt.id, package=attempt.package)


def finish_or_interrupt(start: Start, attempt: Attempt) -> None:
    """Cut short: record the import if the backend finished it, else interrupt the attempt:
    a crash if it was importing (a package that kills the daemon ends failed), unless it only
    waited on the backend (YMIR importing what it was sent: no work of ours can have died)."""
    if _completed_in_backend(start.ledger, start.backend, attempt):
        return
    waiting = start.backend.was_waiting(attempt)
    died = attempt.status is Status.IMPORTING and not waiting
    # A death is charged to the import that was at work alone; with several, none is yet:
    # they are redone one at a time, and a death then is the guilty one's.
    charged = died and start.dying == 1
    errors = [Problem("import.crashed", "", DIED)] if charged else []
    why = "while it waited on the backend" if waiting else "mid-import"
    notes = [*attempt.notes, f"interrupted: the daemon stopped {why}"]
    if died and not charged and attempt.relative is not None:
        start.solo.add(attempt.relative)
        notes.append(f"one of {start.dying} imports at work when the daemon died: redone alone")
    start.ledger.finish(attempt.id, Status.INTERRUPTED, notes=notes, errors=errors)
    log.warning("attempt_interrupted", attempt=attempt.id, package=attempt.package)


def file_it(start: Start, attempt: Attempt) -> None:
    """Judged, not filed: file it now, under the verdict it has."""
    relative = attempt.relative
    assert relative is not None  # only claimed attempts are placed in processing/
    start.present.discard(relative)
    start.filing.file(attempt.id, relative, attempt.status)


def record_filed(start: Start, attempt: Attempt) -> None:
    """Filed before the crash, the move not recorded: record it; gone: lost."""
    if attempt.final_path is not None and attempt.final_path.exists():
        start.ledger.move(attempt.id, destination(attempt.status))
        return
    start.ledger.move_away(attempt.id, Place.LOST)
    log.error("package_missing_from_processing", attempt=attempt.id, path=str(attempt.final_path))


STEPS: dict[AtStart, Callable[[Start, Attempt], None]] = {
    AtStart.ITS_OWN: its_own,
    AtStart.FINISH_OR_INTERRUPT: finish_or_interrupt,
    AtStart.FILE: file_it,
    AtStart.RECORD_FILED: record_filed,
}


def recover(
    paths: Paths,
    ledger: Ledger,
    backend: Backend,
    filing: Filing,
    solo: set[PurePosixPath] | None = None,
) -> list[PurePosixPath]:
    """Settle what can be settled (the rows of :data:`ymir_dropbox.daemon.machine.AT_START`);
    return the packages in processing/ that no attempt accounts for, to import again. Of
    those, ``solo`` gets the ones to redo alone (several were at work when the daemon died:
    which one killed it is not known yet)."""
    _remove_temporaries(paths, backend)
    present = {
        relative
        for relative, info in walk_files(paths.processing, True)
        if stat.S_ISREG(info.st_mode)
    }
    unfinished = ledger.in_flight()
    dying = sum(
        1
        for attempt in unfinished
        if attempt.status is Status.IMPORTING
        and attempt.place is not Place.NONE
        and not backend.was_waiting(attempt)
    )
    start = Start(paths, ledger, backend, filing, present, dying)
    for attempt in unfinished:
        _step_for(attempt, present)(start, attempt)
    backend.clean_up(ledger)
    for attempt in ledger.in_place(Place.PROCESSING):
        _step_for(attempt, present)(start, attempt)
    for relative in sorted(present):
        log.info("package_recovered", path=str(relative), alone=relative in start.solo)
    if solo is not None:
        solo.update(start.solo & present)
    return sorted(present)


def _step_for(attempt: Attempt, present: set[PurePosixPath]) -> Callable[[Start, Attempt], None]:
    step = at_start(attempt.status, attempt.place, attempt.relative in present)
    if step is None:
        raise IllegalTransition(f"no step at start for {attempt.status} in {attempt.place}")
    return STEPS[step]


def _remove_temporaries(paths: Paths, backend: Backend) -> None:
    """The model store's in any case (the backend may have been another before this start);
    a backend's own folders (YMIR's staging, maybe shared by other machines) by lock alone."""
    shared = [folder for folder in backend.temporary_folders() if folder != paths.models]
    for removed in [
        *remove_temporaries(paths.models),
        *(path for folder in shared for path in remove_temporaries(folder, by_lock=True)),
        *remove_temporaries(paths.failed, recursive=True),
    ]:
        log.info("temporary_removed", path=str(removed))


def _completed_in_backend(ledger: Ledger, backend: Backend, attempt: Attempt) -> bool:
    """Record an import the backend finished before the crash, rather than redo it."""
    result = backend.recover(attempt)
    if result is None:
        return False
    try:
        ledger.finish(
            attempt.id,
            Status.IMPORTED,
            model_hash=result.model_hash,
            dst_rev=result.dst_rev,
            notes=[*attempt.notes, *result.notes],
            errors=[],
            facts=result.facts,
        )
    except DuplicateImport:
        ledger.finish(attempt.id, Status.DUPLICATE, model_hash=result.model_hash)
    log.warning("attempt_completed_by_backend", attempt=attempt.id, model_hash=result.model_hash)
    return True
