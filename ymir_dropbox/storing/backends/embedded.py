"""The embedded backend (default): write the model store directly, no YMIR install needed."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.core.settings import BackendSettings, Config
from ymir_dropbox.storing.attempts import Attempt
from ymir_dropbox.storing.backends import ImportResult, PreparedPackage
from ymir_dropbox.storing.checks import Finding, run_check
from ymir_dropbox.storing.durable import fsync_folder

if TYPE_CHECKING:
    from ymir_dropbox.storing.ledger import Ledger
    from ymir_dropbox.storing.store import StreamedStore

log = structlog.get_logger(__name__)


class EmbeddedBackend:
    name = "embedded"

    def __init__(self, config: Config) -> None:
        self.models = config.paths.models
        self.work = config.paths.work
        self.level = config.import_.compression_level

    def check(self) -> None:
        if not os.access(self.models, os.W_OK | os.X_OK):
            raise DropboxError(f"model store {self.models} is not writable")

    def streamed(self, package_bytes: int) -> AbstractContextManager[StreamedStore | None]:
        from ymir_dropbox.storing.store import streamed_store

        return streamed_store(self.models, self.level, self.work, package_bytes)

    def temporary_folders(self) -> tuple[Path, ...]:
        return (self.models,)

    def reference(self, attempt_id: int) -> str | None:
        return None

    def recover(self, attempt: Attempt) -> ImportResult | None:
        # A crash after the store is harmless: the redo writes the same bytes, same hash,
        # and a file no attempt ends up importing is removed at start (see recovery).
        return None

    def was_waiting(self, attempt: Attempt) -> bool:
        return False  # a death mid-store may be the package's (a bomb, a bug it triggers)

    def clean_up(self, ledger: Ledger) -> None:
        """A model file written for an attempt that never imported it (its hash is in the
        ledger before the file takes its name): nothing in the store is unaccounted for."""
        for model_hash in ledger.orphan_models(self.name):
            orphan = self.models / model_hash
            if orphan.is_file() and not orphan.is_symlink():
                orphan.unlink()
                fsync_folder(self.models)
                log.warning("model_removed", model_hash=model_hash, reason="no attempt imported it")

    def import_package(self, package: PreparedPackage) -> ImportResult:
        from ymir_dropbox.storing.store import store_package

        if package.streamed is not None:
            model_hash, stored = package.streamed.commit(
                package.report, package.source, package.record_model_hash
            )
        else:
            model_hash, stored = store_package(
                package.report,
                package.source,
                self.models,
                self.level,
                self.work,
                package.record_model_hash,
            )
        return ImportResult(model_hash=model_hash, stored_path=stored)


def check_setup(config: Config) -> Iterator[Finding]:
    """``check``: the backend can work (once the model store exists)."""
    if config.paths.models.is_dir():
        yield run_check(
            f"the {EmbeddedBackend.name} backend", lambda: EmbeddedBackend(config).check()
        )


BACKEND = EmbeddedBackend
FACT_NAMES: tuple[str, ...] = ()

# No table of its own: the model store is [paths] models, its compression [import].
SETTINGS = BackendSettings(schema={}, defaults={}, build=lambda table, resolve, where: None)
