"""``pack``: build a package from a folder, the way the seed's step 3 meant it, and check it."""

from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path

from ymir_dropbox.reading.archive import scan_package
from ymir_dropbox.reading.limits import Limits
from ymir_dropbox.reading.validation import ValidationReport, validate_scan


def pack_folder(folder: Path, output: Path, limits: Limits) -> ValidationReport:
    """Pack every regular file under ``folder`` into ``output`` if the result is valid.

    The archive is written next to ``output`` under a temporary name and renamed only when
    it validates; an existing ``output`` is never overwritten. Returns the validation report.
    """
    if output.exists() or output.is_symlink():
        raise FileExistsError(f"{output} already exists; not overwriting it")
    fd, temporary = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    try:
        skip = {Path(temporary).resolve(), output.resolve()}
        with os.fdopen(fd, "wb") as stream, tarfile.open(fileobj=stream, mode="w:gz") as tar:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not path.is_symlink() and path.resolve() not in skip:
                    tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
            os.fchmod(stream.fileno(), 0o644)
        report = validate_scan(output.name, scan_package(Path(temporary), limits))
        if report.ok:
            os.link(temporary, output)  # fails rather than replace a file created meanwhile
    finally:
        Path(temporary).unlink(missing_ok=True)
    return report
