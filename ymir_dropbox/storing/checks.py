"""Findings of ``ymir-dropbox check``: what was looked at, whether it is well, and why not.

The generic checks (folders, the ledger) and each backend's own ``check_setup`` make them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ymir_dropbox.core.errors import DropboxError


@dataclass(frozen=True, slots=True)
class Finding:
    what: str
    ok: bool
    detail: str


def folder_finding(what: str, folder: Path) -> Finding:
    """A folder the daemon writes: there (or creatable) and writable by this user."""
    if not folder.exists():
        parent = next(parent for parent in folder.parents if parent.exists())
        if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
            return Finding(what, True, f"{folder} (created at start)")
        return Finding(what, False, f"{folder} does not exist and cannot be created in {parent}")
    if not folder.is_dir():
        return Finding(what, False, f"{folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        return Finding(what, False, f"{folder} is not writable by uid {os.geteuid()}")
    return Finding(what, True, str(folder))


def run_check(what: str, check: Callable[[], None]) -> Finding:
    """A check that raises when something is wrong."""
    try:
        check()
    except (DropboxError, OSError) as error:
        return Finding(what, False, str(error))
    return Finding(what, True, "")
