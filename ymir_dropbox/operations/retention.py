"""Retention (``[retention]``): old packages removed from done/ and failed/, and disk use.

The one place ymir-dropbox deletes a package file, and only one it filed itself: the ledger
says which file and since when; the file must be a regular file under the configured done/
or failed/ folder, reached through real folders only (every step opened without following a
symlink), or it is left alone. Each removal is noted in the ledger before the file goes, and
recorded as place ``removed`` after, so a crash in between is finished by the next run.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import structlog

from ymir_dropbox.config import Config, Paths
from ymir_dropbox.core.errors import DropboxError, UsageError
from ymir_dropbox.storing.attempts import Attempt
from ymir_dropbox.storing.folders import ERROR_SUFFIXES, open_folder, walk_files
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.lifecycle import Place, Status

log = structlog.get_logger(__name__)

USAGE_FOLDERS = ("inbox", "processing", "done", "failed", "models")

# Which settled attempts each folder holds.
_KEPT_IN = {
    Place.DONE: frozenset({Status.IMPORTED, Status.DUPLICATE}),
    Place.FAILED: frozenset({Status.FAILED}),
}


@dataclass(frozen=True, slots=True)
class Removal:
    """A package removed by the retention policy (or that would be, in a dry run)."""

    attempt: int
    place: Place  # where it was: done or failed
    path: Path
    size: int  # bytes freed, error files included; 0 if it was gone already


def plan_retention(
    attempts: Iterable[Attempt], now: datetime, done_days: int, failed_days: int
) -> list[Attempt]:
    """The ledger attempts whose packages are due for removal: in done/ (imported, duplicate) for
    more than ``done_days``, in failed/ for more than ``failed_days``; 0 days: never.

    Age counts from ``finished_at``; ``now`` must be timezone-aware (the ledger is UTC).
    """
    limits = {Place.DONE: done_days, Place.FAILED: failed_days}
    due = []
    for attempt in attempts:
        place, status = attempt.place, attempt.status
        if place not in limits:
            continue
        days = limits[place]
        if days <= 0 or status not in _KEPT_IN[place]:
            continue
        finished = _parse_time(attempt.finished_at)
        if finished is not None and now - finished >= timedelta(days=days):
            due.append(attempt)
    return due


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def apply_retention(
    paths: Paths,
    ledger: Ledger,
    now: datetime,
    done_days: int,
    failed_days: int,
    *,
    dry_run: bool = False,
) -> list[Removal]:
    """Remove the packages :func:`plan_retention` finds due, and record each removal.

    A package whose recorded path is not a regular file under the configured folder (moved
    by hand, a symlink put in its place, a folder changed in the config) is logged and left.
    """
    attempts = [*ledger.in_place(Place.DONE), *ledger.in_place(Place.FAILED)]
    removed = []
    for attempt in plan_retention(attempts, now, done_days, failed_days):
        place = Place.DONE if attempt.place is Place.DONE else Place.FAILED
        folder, days = (
            (paths.done, done_days) if place is Place.DONE else (paths.failed, failed_days)
        )
        path = attempt.final_path
        bound = log.bind(attempt=attempt.id, package=attempt.package, place=str(place))
        if path is None:
            bound.warning("retention_skipped", reason="no path recorded")
            continue
        try:
            removal = _remove(ledger, attempt, place, folder, path, days, dry_run)
        except (OSError, DropboxError) as error:
            reason = error.strerror if isinstance(error, OSError) else str(error)
            bound.warning("retention_skipped", path=str(path), reason=reason)
            continue
        if not dry_run:
            bound.info("package_removed", path=str(path), size=removal.size)
        removed.append(removal)
    return removed


def _remove(
    ledger: Ledger,
    attempt: Attempt,
    place: Place,
    folder: Path,
    path: Path,
    days: int,
    dry_run: bool,
) -> Removal:
    parts = _parts_under(folder, path)
    # The configured folder must be there (not an unmounted share): only below it does a
    # missing entry mean the package is gone.
    with _open_folder(folder, parts[:-1]) as parent:
        name = parts[-1]
        targets = [name]
        if place is Place.FAILED:
            targets += [name + suffix for suffix in ERROR_SUFFIXES]
        sizes = {target: _regular_size(parent, target) for target in targets}
        kept = f"kept in {place}/ for {days} days since {attempt.finished_at}"
        gone = sizes.get(name) is None
        note = f"retention: {kept}; " + ("the file was gone already" if gone else "removed")
        freed = sum(size or 0 for size in sizes.values())
        if dry_run:
            return Removal(attempt.id, place, path, freed)
        current = ledger.get(attempt.id)
        if current is None or current.place is not place:
            now_at = current.place if current is not None else None
            raise DropboxError(f"its place changed to {now_at} meanwhile")
        ledger.add_note(attempt.id, note)
        for target, size in sizes.items():
            if size is not None:
                os.unlink(target, dir_fd=parent)
        if parent >= 0:
            os.fsync(parent)
    ledger.move(attempt.id, Place.REMOVED)
    return Removal(attempt.id, place, path, freed)


def _parts_under(folder: Path, path: Path) -> list[str]:
    """The names leading from ``folder`` to ``path``; refuses a path outside it, compared both
    as written and with every symlink resolved."""
    absolute = Path(os.path.abspath(path))
    if ".." in path.parts or not absolute.is_relative_to(os.path.abspath(folder)):
        raise DropboxError(f"{path} is not under {folder}")
    parts = list(absolute.relative_to(os.path.abspath(folder)).parts)
    if not parts:
        raise DropboxError(f"{path} is the folder itself")
    resolved_parent = absolute.parent.resolve()
    if not resolved_parent.is_relative_to(folder.resolve()):
        raise DropboxError(f"{path} leads out of {folder} through a symlink")
    return parts


@contextmanager
def _open_folder(folder: Path, parts: list[str]) -> Iterator[int]:
    """A descriptor on ``folder/parts...`` walked without following a symlink (see
    :func:`folders.open_folder`), or -1 when one of ``parts`` does not exist. The configured
    folder itself must exist (not an unmounted share)."""
    with ExitStack() as stack:
        try:
            fd = stack.enter_context(open_folder(folder, PurePosixPath(*parts)))
        except FileNotFoundError:
            os.stat(folder)  # raises if the configured folder is the one missing
            fd = -1
        yield fd


def _regular_size(parent: int, name: str) -> int | None:
    """The size of a regular file in the folder ``parent`` (-1: a folder that is gone); None
    if absent; refuses anything else (a symlink, a folder, a fifo) rather than remove it."""
    if parent < 0:
        return None
    try:
        info = os.lstat(name, dir_fd=parent)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EPERM, f"{name} is not a regular file; left alone")
    return info.st_size


def run_retention(
    config: Config,
    ledger: Ledger,
    now: datetime,
    *,
    failed: bool = False,
    failed_days: int | None = None,
    dry_run: bool = False,
) -> list[Removal]:
    """``ymir-dropbox retention [--failed [--days N]] [--dry-run]``: done/ after ``[retention]
    done_days``; failed/ only when asked (``failed``), after ``failed_days`` (default: ``[retention]
    failed_days``, which must then be set)."""
    days = 0
    if failed:
        days = config.retention.failed_days if failed_days is None else failed_days
        if failed_days is not None and failed_days < 1:
            raise UsageError(
                f"--days {failed_days} removes nothing (0 days is 'never', as in "
                "[retention] failed_days): give --days N, N of 1 or more, to remove failed "
                "packages older than N days"
            )
        if days < 1:
            raise DropboxError(
                "removing failed packages needs an age: --days N, or [retention] failed_days"
            )
    return apply_retention(
        config.paths, ledger, now, config.retention.done_days, days, dry_run=dry_run
    )


def folder_usage(paths: Paths) -> dict[str, int]:
    """Bytes of regular files under each folder (inbox, processing, done, failed, models).

    Symlinks are neither followed nor counted; a file with several links is counted once;
    entries that vanish or cannot be read while counting are skipped.
    """
    return {name: _bytes_under(getattr(paths, name)) for name in USAGE_FOLDERS}


def _bytes_under(folder: Path) -> int:
    total = 0
    seen: set[tuple[int, int]] = set()
    for _, info in walk_files(folder, True):
        if not stat.S_ISREG(info.st_mode):
            continue
        if info.st_nlink > 1:
            key = (info.st_dev, info.st_ino)
            if key in seen:
                continue
            seen.add(key)
        total += info.st_size
    return total
