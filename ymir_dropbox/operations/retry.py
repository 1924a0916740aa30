"""``ymir-dropbox retry``: failed packages back into the inbox for a new try."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ymir_dropbox.config import Config
from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.reading.archive import package_sha256
from ymir_dropbox.storing.attempts import Attempt
from ymir_dropbox.storing.folders import free_path, move, remove_error_files
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.lifecycle import Place


@dataclass(frozen=True, slots=True)
class Retried:
    """What ``retry`` did: the packages moved (attempt, from, to), and the failed attempts left
    in failed/ because their file has not changed since it failed."""

    moved: list[tuple[int, Path, Path]]
    unchanged: list[Attempt]


def retry_failed(
    config: Config, ledger: Ledger, ids: list[int] | None, force: bool = False
) -> Retried:
    """Move failed packages back into the inbox, at its top level.

    Not under their old relative path: uploaders own the inbox's folders, and one of them
    may by now be a symlink leading out of it. A package whose file has not changed since it
    failed would fail again: it stays, unless ``force``.
    """
    attempts = ledger.in_place(Place.FAILED)
    if ids is not None:
        wanted = set(ids)
        attempts = [attempt for attempt in attempts if attempt.id in wanted]
        missing = wanted - {attempt.id for attempt in attempts}
        if missing:
            listed = ", ".join(map(str, sorted(missing)))
            raise DropboxError(f"no failed package in failed/ for attempt(s) {listed}")
    unchanged = (
        [] if force else [attempt for attempt in attempts if unchanged_since_failing(attempt)]
    )
    left = {attempt.id for attempt in unchanged}
    moved = []
    for attempt in attempts:
        if attempt.id in left:
            continue
        source = attempt.final_path
        failed = config.paths.failed
        if source is None or not source.is_relative_to(failed) or not _regular(source):
            continue
        while True:
            # The name it was uploaded under, when it is free (not failed/'s .N, if it got one)
            uploaded = (attempt.source or source).name  # its exact bytes, from the ledger
            target = free_path(config.paths.inbox, PurePosixPath(uploaded))
            try:
                move(
                    failed,
                    PurePosixPath(source.relative_to(failed)),
                    config.paths.inbox,
                    PurePosixPath(target.name),
                )
                break
            except FileExistsError:  # an uploader took the name meanwhile
                continue
        remove_error_files(failed, PurePosixPath(source.relative_to(failed)))
        ledger.move(attempt.id, Place.RETRIED)
        moved.append((int(attempt.id), source, target))
    return Retried(moved, unchanged)


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def unchanged_since_failing(attempt: Attempt) -> bool:
    """Whether the file in failed/ still has the sha256 its failed attempt recorded.

    False when that cannot be told (no sha256 recorded, the file gone or unreadable): a
    retry then goes ahead.
    """
    path, recorded = attempt.final_path, attempt.sha256
    if path is None or not recorded:
        return False
    try:
        return package_sha256(path) == str(recorded)
    except OSError:
        return False
