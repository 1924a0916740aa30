"""``ymir-dropbox check``: is the whole set-up ready, for the configured backend?

Every check runs, whatever failed before it, and each says what it looked at and what is
wrong; the command exits 0 only when all is well.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ymir_dropbox.config import Config
from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.storing.backends import make_backend
from ymir_dropbox.storing.backends.ymir_api import read_password
from ymir_dropbox.storing.backends.ymir_client import Project, YmirClient, YmirError
from ymir_dropbox.storing.folders import check_same_filesystem
from ymir_dropbox.storing.ledger import Ledger


@dataclass(frozen=True, slots=True)
class Finding:
    what: str
    ok: bool
    detail: str


def check_setup(config: Config) -> list[Finding]:
    return list(_findings(config))


def _findings(config: Config) -> Iterator[Finding]:
    for name, folder in config.paths.folders().items():
        yield _folder(f"folder {name}", folder)
    if all(folder.is_dir() for folder in config.paths.folders().values()):
        yield _run("one filesystem for inbox, processing, done and failed",
                   lambda: check_same_filesystem(config))  # fmt: skip
    yield _run("the ledger opens", lambda: _open_ledger(config.paths.ledger))
    settings = config.import_.ymir_api
    if settings is None:
        if config.paths.models.is_dir():
            yield _run(
                f"the {config.import_.backend} backend", lambda: make_backend(config).check()
            )
        return
    yield _folder("import.ymir_api.staging", settings.staging)
    try:
        client = YmirClient(settings.url, settings.user, read_password(settings), timeout=15)
        client.login()
    except (DropboxError, OSError) as error:
        yield Finding(f"log in to YMIR at {settings.url} as {settings.user}", False, str(error))
        return
    yield Finding(f"log in to YMIR at {settings.url} as {settings.user}", True, "")
    wanted = {settings.project_id: "import.ymir_api.project_id"} if settings.project_id else {}
    for routed, project_id in settings.projects.items():
        wanted.setdefault(project_id, f"import.ymir_api.projects.{routed}")
    if not wanted:
        yield Finding("a YMIR project to import into", False,
                      "import.ymir_api.project_id is 0 and no folder is routed")  # fmt: skip
    for project_id, key in sorted(wanted.items()):
        try:
            project = client.project(project_id)
        except YmirError as error:
            yield Finding(f"YMIR project {project_id} ({key})", False, str(error))
            continue
        yield Finding(
            f"YMIR project {project_id} ({key})",
            True,
            f"{project.name!r}, object type {project.object_type}",
        )


def _folder(what: str, folder: Path) -> Finding:
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


def _open_ledger(path: Path) -> None:
    if path.exists():
        Ledger.open_for_reading(path).close()
        return
    folder = _folder("the ledger's folder", path.parent)
    if not folder.ok:
        raise DropboxError(f"{path} does not exist and cannot be created: {folder.detail}")


def _run(what: str, check: Callable[[], None]) -> Finding:
    try:
        check()
    except (DropboxError, OSError) as error:
        return Finding(what, False, str(error))
    return Finding(what, True, "")


def list_projects(config: Config) -> list[Project]:
    """``ymir-dropbox projects``: the YMIR projects the configured user can import into."""
    settings = config.import_.ymir_api
    if settings is None:
        raise DropboxError("projects: import.backend is not 'ymir-api'")
    client = YmirClient(settings.url, settings.user, read_password(settings), timeout=15)
    return client.projects()
