"""``pack``: build a package from a folder, the way the seed's step 3 meant it, and check it."""

from __future__ import annotations

import os
import tarfile
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ymir_dropbox.config import WatchConfig
from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.core.settings import Limits
from ymir_dropbox.reading.archive import Holder, scan_package
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.reading.validation import ValidationReport, validate_package, validate_scan
from ymir_dropbox.storing.durable import fsync_folder, temporary_file
from ymir_dropbox.storing.folders import is_ignored, is_package_name, split_suffix


class OutputRefused(DropboxError):
    """``pack`` will not write its output there (a missing folder, a name the daemon skips)."""


def pack_folder(folder: Path, output: Path, limits: Limits) -> ValidationReport:
    """Pack every regular file under ``folder`` into ``output`` if the result is valid.

    The archive is written next to ``output`` under a temporary name and renamed only when
    it validates; an existing ``output`` is never overwritten. Returns the validation report.
    """

    def write(stream: BinaryIO, temporary: Path) -> None:
        _write_archive(folder, stream, skip={temporary.resolve(), output.resolve()})

    return publish_package(output, limits, write, Holder.FOLDER)


def publish_package(
    output: Path,
    limits: Limits,
    write: Callable[[BinaryIO, Path], None],
    holder: Holder = Holder.ARCHIVE,
) -> ValidationReport:
    """Have ``write`` fill a temporary file beside ``output`` (given the stream and its path),
    validate it as the daemon would, and give it the name ``output`` only if it is valid; an
    existing ``output`` is never overwritten, and nothing is left behind otherwise. Problems
    name the package's files as ``holder``'s (a folder's, when it is packed as it is)."""
    if output.exists() or output.is_symlink():
        raise FileExistsError(f"{output} already exists; not overwriting it")
    _check_output_folder(output)
    with temporary_file(output.parent) as (stream, temporary):
        try:
            write(stream, temporary)
            stream.flush()
            os.fchmod(stream.fileno(), 0o644)
            os.fsync(stream.fileno())
            report = validate_scan(output.name, scan_package(temporary, limits, holder=holder))
            if report.ok:
                os.link(temporary, output)  # fails rather than replace a file created meanwhile
                fsync_folder(output.parent)
        finally:
            temporary.unlink(missing_ok=True)
    return report


def check_folder(folder: Path, limits: Limits) -> ValidationReport:
    """The report ``pack`` would give for ``folder``, without writing anything in it.

    The package is built as ``pack`` builds it, in a temporary folder (``$TMPDIR``, so room
    for one package is needed there), validated and removed. Problems speak of the folder
    and its files, not of the archive built from them.
    """
    with tempfile.TemporaryDirectory(prefix="ymir-dropbox-check-") as scratch:
        archive = Path(scratch) / f"{folder.name or 'folder'}.tar.gz"
        with archive.open("wb") as stream:
            _write_archive(folder, stream, skip={archive.resolve()})
        return validate_scan(folder.name, scan_package(archive, limits, holder=Holder.FOLDER))


def _write_archive(folder: Path, stream: BinaryIO, skip: Collection[Path]) -> None:
    """Every regular file under ``folder`` (symlinks skipped), in name order, as a gzip tar."""
    with tarfile.open(fileobj=stream, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink() and path.resolve() not in skip:
                tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)


def _check_output_folder(output: Path) -> None:
    folder = output.parent
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise OutputRefused(f"cannot write {output}: the folder {folder} {state}")


def check_output_name(output: Path, watch: WatchConfig, inbox: Path) -> None:
    """Refuse an output the daemon would never take: a name outside ``watch.patterns``, one
    that ``watch.ignore`` skips, or (written into the inbox) a place it does not look."""
    relative = PurePosixPath(output.name)
    inside = _relative_to(output.parent, inbox)
    if inside is not None:
        relative = inside / output.name
        if len(relative.parts) > 1 and not watch.recursive:
            raise OutputRefused(
                f"{output}: the daemon does not look in the inbox's folders "
                "(watch.recursive = false); write it at the top of the inbox"
            )
    if is_ignored(relative, watch):
        raise OutputRefused(
            f"{output}: the daemon ignores {relative} (watch.ignore: {', '.join(watch.ignore)})"
            f"{_suggestion(output.name, watch)}"
        )
    if not is_package_name(relative, watch):
        raise OutputRefused(
            f"{output}: the daemon takes only names matching {', '.join(watch.patterns)} "
            f"(watch.patterns){_suggestion(output.name, watch)}"
        )


def _relative_to(folder: Path, inbox: Path) -> PurePosixPath | None:
    try:
        return PurePosixPath(folder.resolve().relative_to(inbox.resolve()).as_posix())
    except ValueError:
        return None


def _suggestion(name: str, watch: WatchConfig) -> str:
    """``; name it model.tar.gz, for example``: the name without what made the daemon skip it."""
    base = name.lstrip(".").rstrip("~")
    stem = split_suffix(base)[0]
    for candidate in (base, stem, f"{stem}.tar.gz", f"{stem}.tgz"):
        path = PurePosixPath(candidate)
        if candidate and is_package_name(path, watch) and not is_ignored(path, watch):
            return f"; name it {candidate}, for example"
    return ""


def validate_path(path: Path, limits: Limits) -> ValidationReport:
    """``validate``: a package file as the daemon would judge it, or a folder as ``pack``
    would build it; a file that cannot be read is a report saying so."""
    try:
        if path.is_dir():
            return check_folder(path, limits)
        return validate_package(path, limits, hashed=False)
    except OSError as error:
        return ValidationReport(
            path.name,
            (Problem("package.unreadable", "", f"{path}: {error.strerror or error}"),),
        )
