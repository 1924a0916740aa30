"""Filing: a finished package is renamed into done/ or failed/ under a free name.

The name is recorded in the ledger before the rename, and a failed package's error files are
written before it, so a crash between the two leaves nothing unaccounted for. Choosing a name
in failed/ and writing its error files happen under one lock: two packages filed at the same
moment never get the same name, and one never removes the other's error files.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path, PurePosixPath

import structlog

from ymir_dropbox.config import Paths
from ymir_dropbox.core.faults import NO_FAULTS, FaultPlan
from ymir_dropbox.daemon.readiness import Observation
from ymir_dropbox.operations.notifications import Notifier
from ymir_dropbox.storing.attempts import Attempt
from ymir_dropbox.storing.folders import (
    fitting_name,
    free_path,
    move,
    prune_empty_folders,
    remove_error_files,
    write_error_files,
)
from ymir_dropbox.storing.ledger import Ledger, LedgerError
from ymir_dropbox.storing.lifecycle import Place, Status, destination

log = structlog.get_logger(__name__)


class Filing:
    def __init__(
        self,
        paths: Paths,
        ledger: Ledger,
        notifier: Notifier | None = None,
        faults: FaultPlan = NO_FAULTS,
    ) -> None:
        self.paths = paths
        self.ledger = ledger
        self.notifier = notifier
        self.faults = faults
        self._naming = threading.Lock()

    def folder(self, place: Place) -> Path:
        return self.paths.failed if place is Place.FAILED else self.paths.done

    def file(
        self,
        attempt_id: int,
        relative: PurePosixPath,
        status: Status,
        imported: Observation | None = None,
    ) -> bool:
        """Rename the package at ``processing/relative`` into done/ or failed/.

        ``imported`` is the file the attempt read; if processing/ now holds another file (it
        was deleted or replaced meanwhile), that file is not filed under this attempt, and
        False is returned so that it gets an attempt of its own. Raises OSError (disk full,
        read-only folder) and LedgerError: passing faults, the caller retries the filing.
        """
        source = self.paths.processing / relative
        try:
            now_there = Observation.of(os.lstat(source))
        except FileNotFoundError:
            self.ledger.move_away(attempt_id, Place.LOST)
            log.error("package_missing_from_processing", attempt=attempt_id, path=str(relative))
            return True
        if imported is not None and now_there != imported:
            self.ledger.move_away(attempt_id, Place.REPLACED)
            log.warning("package_replaced_while_imported", attempt=attempt_id, path=str(relative))
            return False
        place = destination(status)
        folder = self.folder(place)
        attempt = self.ledger.get(attempt_id)
        if attempt is None:
            raise LedgerError(f"attempt {attempt_id} is not in the ledger")
        if place is Place.FAILED:
            with self._naming:
                target = self._rename(attempt, relative, folder)
        else:
            target = self._rename(attempt, relative, folder)
        self.faults.reach("moved", relative.name)
        self.ledger.move(attempt_id, place)
        prune_empty_folders(self.paths.processing, relative)
        filed = self.ledger.get(attempt_id)
        if self.notifier is not None and filed is not None:
            self.notifier.send(filed)
        log.info(
            "package_filed",
            attempt=attempt_id,
            path=str(relative),
            sha256=attempt.sha256,
            status=str(status),
            target=str(target),
            step="file",
            duration=attempt.duration,
        )
        return True

    def _rename(self, attempt: Attempt, relative: PurePosixPath, folder: Path) -> Path:
        attempt_id = attempt.id
        planned = attempt.final_path
        if (
            planned is not None
            and planned.name == fitting_name(planned.name)  # a name planned by an older release
            and planned.parent.is_relative_to(folder)
            and not planned.exists()
        ):
            target = planned  # chosen before a crash; its error files may exist already
        else:
            target = free_path(folder, relative)
        while True:
            self.ledger.plan(attempt_id, target)
            if folder == self.paths.failed:
                write_error_files(folder, PurePosixPath(target.relative_to(folder)), attempt)
            self.faults.reach("recorded", relative.name)
            try:
                move(
                    self.paths.processing,
                    relative,
                    folder,
                    PurePosixPath(target.relative_to(folder)),
                )
                return target
            except FileExistsError:  # a name taken outside this daemon (by hand) meanwhile
                if folder == self.paths.failed:
                    remove_error_files(folder, PurePosixPath(target.relative_to(folder)))
                target = free_path(folder, relative)
