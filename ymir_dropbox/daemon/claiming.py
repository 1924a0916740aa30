"""Claiming: a ready inbox file becomes ours by one rename into processing/.

The attempt's row is written first (place ``inbox``), then the rename, then the place
``processing``. The file must still be the one readiness judged: any change since is the
writer at work again, and the file stays in the inbox.

A close is not the end of every writer: one that closes, pauses and reopens the file by its
path to append would, once the file is claimed, append to a new file in the inbox, and its
package would be split in two. So a file signalled by a close or a rename, up to
``CHECK_BEFORE_CLAIM_BYTES``, is claimed only once its gzip stream reaches its end (a few
milliseconds). A larger one is not read twice for this: the import's own pass finds a stream
that ends too early and puts the file back in the inbox, which works unless the writer has
reopened the name in the meantime.
"""

from __future__ import annotations

import errno
import io
import os
import pwd
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import structlog

from ymir_dropbox.config import Config
from ymir_dropbox.core.faults import NO_FAULTS, FaultPlan
from ymir_dropbox.daemon.machine import JobEnd, JobResult
from ymir_dropbox.daemon.readiness import Observation, Ready
from ymir_dropbox.reading.archive import (
    PackageUnreadable,
    gzip_complete,
    opened_package,
)
from ymir_dropbox.storing.folders import NotTheFile, move, open_folder, prune_empty_folders
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.lifecycle import Place, Status

log = structlog.get_logger(__name__)
CHECK_BEFORE_CLAIM_BYTES = 64 * 1024 * 1024
SYMLINKED_FOLDER = (errno.ELOOP, errno.ENOTDIR)  # what an open through a symlinked folder gives


@dataclass(frozen=True, slots=True)
class Claimed:
    attempt_id: int
    relative: PurePosixPath
    observation: Observation  # the file as readiness judged it: the import's baseline
    # The file itself, opened in the inbox before the rename and the same inode after it:
    # the import reads what was claimed, whatever stands at its name later. None for a
    # package taken up again from processing/ (a redo), opened there by the import.
    held: io.BufferedReader | None = None


def _still_ready(
    ready: Ready, config: Config
) -> tuple[os.stat_result, io.BufferedReader] | JobResult:
    """The file, opened through the inbox's folders without following a symlink, and its
    ``fstat``, if it is still the one readiness judged (and, signalled by a close or a
    rename, its gzip stream ends); else why it stays in the inbox. The caller closes it."""
    relative = ready.relative
    try:
        with open_folder(config.paths.inbox, relative.parent) as folder:
            opened = opened_package(Path(relative.name), dir_fd=folder)
    except FileNotFoundError:
        return JobResult(JobEnd.GONE, relative)
    except PackageUnreadable:  # a symlink, a fifo
        return JobResult(JobEnd.IGNORED, relative)
    except OSError as error:
        if error.errno in SYMLINKED_FOLDER:
            return _symlinked_folder(relative, error)
        return JobResult(JobEnd.TRANSIENT, relative, reason=f"{error.strerror or error}")
    try:
        info = os.fstat(opened.fileno())
        if Observation.of(info) != ready.observation:
            end = JobResult(JobEnd.CHANGED, relative)
        elif (
            not ready.quiet
            and info.st_size <= CHECK_BEFORE_CLAIM_BYTES
            and not gzip_complete(opened, config.limits.max_ratio)
        ):
            end = JobResult(JobEnd.NOT_READY, relative)
        else:
            opened.seek(0)
            return info, opened
    except OSError as error:
        end = JobResult(JobEnd.TRANSIENT, relative, reason=f"{error.strerror or error}")
    except BaseException:
        opened.close()
        raise
    opened.close()
    return end


def owner_name(uid: int) -> str:
    """The uploader: the user owning the file (its uid when the name is unknown here)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def claim(
    ready: Ready, config: Config, ledger: Ledger, faults: FaultPlan = NO_FAULTS
) -> Claimed | JobResult:
    """Claim the file readiness found complete, or say why it stays in the inbox."""
    checked = _still_ready(ready, config)
    if isinstance(checked, JobResult):
        return checked
    info, held = checked  # the file judged, open: the import reads it (and closes it)
    try:
        return _claim(ready, config, ledger, faults, info, held)
    except BaseException:
        held.close()
        raise


def _claim(
    ready: Ready,
    config: Config,
    ledger: Ledger,
    faults: FaultPlan,
    info: os.stat_result,
    held: io.BufferedReader,
) -> Claimed | JobResult:
    """Rename the judged file into processing/, its attempt recorded first; anything but a
    claim closes ``held``."""
    relative = ready.relative
    target = config.paths.processing / relative
    if target.is_dir() and not target.is_symlink():
        prune_empty_folders(config.paths.processing, relative / "-")  # an empty one left over
    if target.exists() or target.is_symlink():
        held.close()
        return JobResult(
            JobEnd.TRANSIENT, relative, reason="a package of that name is being imported"
        )
    attempt_id = ledger.begin(
        package=relative.name,
        source=relative,
        place=Place.INBOX,
        processing_path=relative,
        size=info.st_size,
        uploader=owner_name(info.st_uid),
    )
    faults.reach("claim", relative.name)
    try:
        move(
            config.paths.inbox,
            relative,
            config.paths.processing,
            relative,
            expected=(info.st_dev, info.st_ino),
        )
    except OSError as error:
        held.close()
        return _not_claimed(ledger, attempt_id, relative, error)
    ledger.move(attempt_id, Place.PROCESSING)
    faults.reach("claimed", relative.name)
    log.info(
        "package_claimed",
        attempt=attempt_id,
        path=str(relative),
        size=info.st_size,
        since_write=round(time.time() - info.st_mtime, 3),
        step="claim",
    )
    return Claimed(attempt_id, relative, ready.observation, held)


def _not_claimed(
    ledger: Ledger, attempt_id: int, relative: PurePosixPath, error: OSError
) -> JobResult:
    """The rename into processing/ refused: the attempt was interrupted, and why."""
    if isinstance(error, NotTheFile):
        ledger.finish(attempt_id, Status.INTERRUPTED, notes=[f"claim refused: {error}"])
        log.warning("file_swapped_at_claim", path=str(relative), reason=error.strerror)
        return JobResult(JobEnd.CHANGED, relative, reason=str(error))
    ledger.finish(attempt_id, Status.INTERRUPTED, notes=[f"claim failed: {error}"])
    if error.errno in SYMLINKED_FOLDER:
        return _symlinked_folder(relative, error)
    end = JobEnd.GONE if isinstance(error, FileNotFoundError) else JobEnd.TRANSIENT
    return JobResult(end, relative, reason=str(error))


def _symlinked_folder(relative: PurePosixPath, error: OSError) -> JobResult:
    """A folder on the package's path is a symlink by now: the package stays where it is."""
    log.warning("file_left_alone", path=str(relative), reason="a folder on its path is a symlink")
    return JobResult(JobEnd.IGNORED, relative, reason=str(error))
