"""Recovery at start: finish or redo what a previous run left, from the ledger and folders.

Every attempt still in flight was cut short: by a stop past its timeout (recorded as such
before the exit), or by the death of the process (killed, out of memory, a power cut), which
counts as a crash of that import. A backend may have finished the import anyway (mir commits
before we hear of it): then the import is recorded, not redone. Every settled attempt still
placed in processing/ is filed; every other file in processing/ is imported again; the backend
cleans up after itself (a model file the embedded store wrote for an attempt that never
imported it, mir's work folders).
"""

from __future__ import annotations

import stat
from pathlib import PurePosixPath

import structlog

from ymir_dropbox.config import Paths
from ymir_dropbox.daemon.filing import Filing
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.storing.attempts import Attempt
from ymir_dropbox.storing.backends import Backend
from ymir_dropbox.storing.durable import remove_temporaries
from ymir_dropbox.storing.folders import walk_inbox
from ymir_dropbox.storing.ledger import DuplicateImport, Ledger
from ymir_dropbox.storing.lifecycle import Place, Status, destination

log = structlog.get_logger(__name__)
DIED = "the daemon died during this import (killed, out of memory or a power cut)"


def recover(paths: Paths, ledger: Ledger, backend: Backend, filing: Filing) -> list[PurePosixPath]:
    """Settle what can be settled; return the packages in processing/ to import again."""
    _remove_temporaries(paths, backend)
    for attempt in ledger.in_flight():
        if attempt.place is Place.NONE:
            continue  # a `ymir-dropbox import` beside us: its own process owns it
        if _completed_in_backend(ledger, backend, attempt):
            continue
        errors = [Problem("import.crashed", "", DIED)] if attempt.status is Status.IMPORTING else []
        notes = [*attempt.notes, "interrupted: the daemon stopped mid-import"]
        ledger.finish(attempt.id, Status.INTERRUPTED, notes=notes, errors=errors)
        log.warning("attempt_interrupted", attempt=attempt.id, package=attempt.package)
    backend.clean_up(ledger)
    present = {
        relative
        for relative, info in walk_inbox(paths.processing, True)
        if stat.S_ISREG(info.st_mode)
    }
    for attempt in ledger.in_place(Place.PROCESSING):
        relative = attempt.relative
        if relative is not None and relative in present:
            present.discard(relative)
            filing.file(attempt.id, relative, attempt.status)
        elif attempt.final_path is not None and attempt.final_path.exists():
            ledger.move(attempt.id, destination(attempt.status))
        else:
            ledger.move_away(attempt.id, Place.LOST)
            log.error(
                "package_missing_from_processing",
                attempt=attempt.id,
                path=str(attempt.final_path),
            )
    for relative in sorted(present):
        log.info("package_recovered", path=str(relative))
    return sorted(present)


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
