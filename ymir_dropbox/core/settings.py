"""The configuration's values: one frozen dataclass tree, made once by
:func:`ymir_dropbox.config.load_config` and read everywhere else.

On the bottom floor so that every floor can take what it needs; the loading (TOML, the
schema, the backends' own sections) is in :mod:`ymir_dropbox.config`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ymir_dropbox.core.jsonvalues import JsonObject

FOLDERS = ("inbox", "processing", "done", "failed", "models", "work")


@dataclass(frozen=True, slots=True)
class Limits:
    max_package_bytes: int
    max_unpacked_bytes: int
    max_members: int
    max_ratio: float


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """What a backend declares about its table ``[import.<its module>]``: the cerberus schema
    of the table, its defaults, and how its frozen settings are made from the table (with
    relative paths resolved, raising ConfigError naming the key)."""

    schema: Mapping[str, Any]
    defaults: Mapping[str, Any]
    build: Callable[[JsonObject, Callable[[str], Path], str], object]


@dataclass(frozen=True, slots=True)
class Paths:
    inbox: Path
    processing: Path
    done: Path
    failed: Path
    models: Path
    work: Path
    ledger: Path

    def folders(self) -> dict[str, Path]:
        return {name: getattr(self, name) for name in FOLDERS}


@dataclass(frozen=True, slots=True)
class ImportConfig:
    backend: str
    workers: int
    compression_level: int
    # The configured backend's own settings (``[import.<its module>]``), as it declared them.
    settings: object = None


@dataclass(frozen=True, slots=True)
class LogConfig:
    format: str
    level: str


@dataclass(frozen=True, slots=True)
class WatchConfig:
    mode: str
    recursive: bool
    settle_seconds: float
    poll_interval: float
    rescan_interval: float
    patterns: tuple[str, ...]
    ignore: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    shutdown_timeout: float
    retry_max_seconds: float


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``[metrics]``: the listener (status page, verdicts, metrics); ``listen`` "": off."""

    listen: str
    hosts: tuple[str, ...] = ()  # host names it answers to besides its own and IP addresses


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """Where final outcomes are announced; neither ``command`` nor ``webhook``: off."""

    command: tuple[str, ...]
    webhook: str
    timeout: float
    retries: int
    retry_base_seconds: float
    retry_max_seconds: float
    queue_size: int

    @property
    def enabled(self) -> bool:
        return bool(self.command or self.webhook)


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """Days a package stays in done/ or failed/ before it is removed; 0: kept for ever."""

    done_days: int
    failed_days: int


@dataclass(frozen=True, slots=True)
class PackExecutors:
    """``[pack.executor]``: the executor image ``pack`` names by default ("": none)."""

    ultralytics: str
    yolov5: str  # YOLOv5 v6.2 and later (checkpoints of models.yolo.DetectionModel)
    yolov5_before_v6_2: str  # older YOLOv5 (models.yolo.Model)
    mmdet: str
    other: str  # packages described by ``--stage``


@dataclass(frozen=True, slots=True)
class PackConfig:
    """``[pack]``: what ``pack`` writes into ``task_context`` when the command line does not
    say; an empty ``producer`` is the user and host running it."""

    producer: str
    executor: PackExecutors


@dataclass(frozen=True, slots=True)
class PushConfig:
    """``[push]``: what ``push`` uses when the command line does not say."""

    status_url: str = ""  # the daemon's listener, for --wait ("": none)
    rsh: str = ""  # the ssh command rsync runs for host:path ("": rsync's own, ssh)


@dataclass(frozen=True, slots=True)
class Config:
    base_dir: Path
    paths: Paths
    import_: ImportConfig
    limits: Limits
    log: LogConfig
    watch: WatchConfig
    daemon: DaemonConfig
    metrics: MetricsConfig
    notify: NotifyConfig
    retention: RetentionConfig
    pack: PackConfig
    push: PushConfig = field(default_factory=PushConfig)
    source: Path | None = field(default=None)

    def ensure_folders(self) -> None:
        """Create the folder layout (idempotent); the ledger's folder too. A folder made here
        is made durable in its parent: a power cut never takes the layout away."""
        for folder in [*self.paths.folders().values(), self.paths.ledger.parent]:
            _make_durably(folder.absolute())


def _make_durably(folder: Path) -> None:
    missing = [folder, *folder.parents]
    missing = [path for path in missing if not path.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    for made in reversed(missing):
        fd = os.open(made.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
