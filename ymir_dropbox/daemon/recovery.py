"""Recovery at start: finish or redo what a previous run left, from the ledger and folders.

Every attempt still in flight was cut short: by a stop past its timeout (recorded as such
before the exit), or by the death of the process (killed, out of memory, a power cut), which
counts as a crash of that import. A backend may have finished the import anyway (mir commits
before we hear of it): then the import is recorded, not redone. Every settled attempt still
placed in processing/ is filed; every other file in processing/ is imported again; a model
file the store wrote for an attempt that never imported it is removed.
"""

from __future__ import annotations

import shutil
import stat
from pathlib import PurePosixPath
from typing import Any

import structlog

from ymir_dropbox.config import Paths
from ymir_dropbox.daemon.filing import Filing
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.storing.backends import Backend
from ymir_dropbox.storing.durable import fsync_folder, remove_temporaries
from ymir_dropbox.storing.folders import walk_inbox
from ymir_dropbox.storing.ledger import DuplicateImport, Ledger, path_of, relative_of
from ymir_dropbox.storing.lifecycle import Place, Status

log = structlog.get_logger(__name__)
DIED = "the daemon died during this import (killed, out of memory or a power cut)"


def recover(paths: Paths, ledger: Ledger, backend: Backend, filing: Filing) -> list[PurePosixPath]:
    """Settle what can be settled; return the packages in processing/ to import again."""
    # The model store in any case (the backend may have been another before this start); a
    # backend's own folders (YMIR's staging, maybe shared by other machines) by lock alone.
    shared = [folder for folder in backend.temporary_folders() if folder != paths.models]
    for removed in [
        *remove_temporaries(paths.models),
        *(path for folder in shared for path in remove_temporaries(folder, by_lock=True)),
        *remove_temporaries(paths.failed, recursive=True),
    ]:
        log.info("temporary_removed", path=str(removed))
    for entry in paths.work.iterdir():
        if entry.is_dir() and not entry.is_symlink() and entry.name.startswith("mir-"):
            shutil.rmtree(entry, ignore_errors=True)
    for row in ledger.in_flight():
        if row["place"] == Place.NONE:
            continue  # a `ymir-dropbox import` beside us: its own process owns it
        if _completed_in_backend(ledger, backend, row):
            continue
        notes = [*(row.get("notes") or []), "interrupted: the daemon stopped mid-import"]
        errors = []
        if row["status"] == Status.IMPORTING:
            errors = [Problem("import.crashed", "", DIED).as_dict()]
        ledger.finish(row["id"], Status.INTERRUPTED, notes=notes, errors=errors)
        log.warning("attempt_interrupted", attempt=row["id"], package=row["package"])
    for model_hash in ledger.orphan_models():
        orphan = paths.models / model_hash
        if orphan.is_file() and not orphan.is_symlink():
            orphan.unlink()
            fsync_folder(paths.models)
            log.warning("model_removed", model_hash=model_hash, reason="no attempt imported it")
    present = {
        relative
        for relative, info in walk_inbox(paths.processing, True)
        if stat.S_ISREG(info.st_mode)
    }
    for row in ledger.in_place(Place.PROCESSING):
        relative = relative_of(row)
        final = path_of(row, "final_path")
        if relative in present:
            present.discard(relative)
            assert relative is not None
            filing.file(row["id"], relative, Status(row["status"]))
        elif final is not None and final.exists():
            ledger.move(row["id"], Place.FAILED if row["status"] == Status.FAILED else Place.DONE)
        else:
            ledger.move(row["id"], Place.LOST, final_path=None)
            log.error("package_missing_from_processing", attempt=row["id"], path=str(final))
    for relative in sorted(present):
        log.info("package_recovered", path=str(relative))
    return sorted(present)


def _completed_in_backend(ledger: Ledger, backend: Backend, row: dict[str, Any]) -> bool:
    """Record an import the backend finished before the crash, rather than redo it."""
    result = backend.recover(row)
    if result is None:
        return False
    try:
        ledger.finish(
            row["id"],
            Status.IMPORTED,
            model_hash=result.model_hash,
            dst_rev=result.dst_rev,
            notes=[*(row.get("notes") or []), *result.notes],
            errors=[],
        )
    except DuplicateImport:
        ledger.finish(row["id"], Status.DUPLICATE, model_hash=result.model_hash)
    log.warning("attempt_completed_by_backend", attempt=row["id"], model_hash=result.model_hash)
    return True
