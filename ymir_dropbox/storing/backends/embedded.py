"""The embedded backend (default): write the model store directly, no YMIR install needed."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from ymir_dropbox.config import Config
from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.storing.backends import ImportResult, PreparedPackage
from ymir_dropbox.storing.store import StreamedStore, store_package, streamed_store


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
        return streamed_store(self.models, self.level, self.work, package_bytes)

    def temporary_folders(self) -> tuple[Path, ...]:
        return (self.models,)

    def reference(self, attempt_id: int) -> str | None:
        return None

    def recover(self, attempt: dict[str, Any]) -> ImportResult | None:
        # A crash after the store is harmless: the redo writes the same bytes, same hash,
        # and a file no attempt ends up importing is removed at start (see recovery).
        return None

    def import_package(self, package: PreparedPackage) -> ImportResult:
        def record(model_hash: str) -> None:
            package.record(model_hash=model_hash)

        if package.streamed is not None:
            model_hash, stored = package.streamed.commit(package.report, package.source, record)
        else:
            model_hash, stored = store_package(
                package.report, package.source, self.models, self.level, self.work, record
            )
        return ImportResult(model_hash=model_hash, stored_path=stored)
