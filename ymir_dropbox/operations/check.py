"""``ymir-dropbox check``: is the whole set-up ready, for the configured backend?

Every check runs, whatever failed before it, and each says what it looked at and what is
wrong; the command exits 0 only when all is well. A backend checks what is its own
(``check_setup`` in its module).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ymir_dropbox.config import Config
from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.storing.backends import backend_module
from ymir_dropbox.storing.checks import Finding, folder_finding, run_check
from ymir_dropbox.storing.folders import check_same_filesystem
from ymir_dropbox.storing.ledger import Ledger


def check_setup(config: Config) -> list[Finding]:
    """Every check, whatever failed before it: the folders, one filesystem, the ledger, then
    the configured backend's own."""
    return list(_findings(config))


def _findings(config: Config) -> Iterator[Finding]:
    for name, folder in config.paths.folders().items():
        yield folder_finding(f"folder {name}", folder)
    if all(folder.is_dir() for folder in config.paths.folders().values()):
        yield run_check("one filesystem for inbox, processing, done and failed",
                        lambda: check_same_filesystem(config))  # fmt: skip
    yield run_check("the ledger opens", lambda: _open_ledger(config.paths.ledger))
    yield from backend_module(config.import_.backend).check_setup(config)


def _open_ledger(path: Path) -> None:
    if path.exists():
        Ledger.open_for_reading(path).close()
        return
    folder = folder_finding("the ledger's folder", path.parent)
    if not folder.ok:
        raise DropboxError(f"{path} does not exist and cannot be created: {folder.detail}")
