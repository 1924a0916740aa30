"""Configuration: one TOML file, validated with cerberus, parsed once into frozen dataclasses.

Nothing else in ymir-dropbox reads the TOML file or the environment. Relative paths in a file
are relative to that file's folder; the built-in defaults are relative to the working folder.
"""

from __future__ import annotations

import os
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ymir_dropbox.core.errors import ConfigError
from ymir_dropbox.reading.limits import Limits
from ymir_dropbox.reading.names import did_you_mean
from ymir_dropbox.reading.rules import StrictValidator, schema_errors

ENV_VAR = "YMIR_DROPBOX_CONFIG"
DEFAULT_BASE_DIR = "./dropbox"
FOLDERS = ("inbox", "processing", "done", "failed", "models", "work")
GiB = 1024**3

DEFAULTS: dict[str, dict[str, Any]] = {
    "import": {"backend": "embedded", "workers": 2, "compression_level": 1},
    "mir": {"bin": "mir", "root": None, "dst_rev": "dropbox-{id}@dropbox-{id}"},
    "ymir_api": {
        "url": "",
        "user": "",
        "password_file": None,
        "project_id": 0,
        "staging": None,
        "staging_in_ymir": "/ymir-sharing/ymir-dropbox",
        "group_name": "{stem}",
        "poll_interval": 5.0,
        "timeout": 3600.0,
        "projects": {},
    },
    "limits": {
        "max_package_bytes": 64 * GiB,
        "max_unpacked_bytes": 128 * GiB,
        "max_members": 10_000,
        "max_ratio": 200.0,
    },
    "log": {"format": "auto", "level": "info"},
    "watch": {
        "mode": "auto",
        "recursive": True,
        "settle_seconds": 5.0,
        "poll_interval": 1.0,
        "rescan_interval": 30.0,
        "patterns": ["*.tar.gz", "*.tgz"],
        "ignore": [".*", "*.part", "*.tmp", "*.crdownload", "*~"],
    },
    "daemon": {"shutdown_timeout": 60.0, "retry_max_seconds": 300.0},
    "metrics": {"listen": ""},
    # Off by default: no command, no webhook.
    "notify": {
        "command": [],
        "webhook": "",
        "timeout": 10.0,
        "retries": 5,
        "retry_base_seconds": 2.0,
        "retry_max_seconds": 300.0,
        "queue_size": 1000,
    },
    # Off by default: 0 days means "never remove".
    "retention": {"done_days": 0, "failed_days": 0},
    # `pack --from`: task_context.executor when --executor is not given, by framework (the
    # images YMIR 2.x published; none loads ultralytics checkpoints), and the producer ("":
    # the user and host running pack).
    "pack": {
        "producer": "",
        "executor": {
            "ultralytics": "",
            "yolov5": "youdaoyzbx/ymir-executor:ymir2.1.0-yolov5-v7.0-cu111-tmi",
            "yolov5_before_v6_2": (
                "industryessentials/ymir-executor:ymir2.4.0-detection-instance-sementic-in-one"
            ),
            "mmdet": "youdaoyzbx/ymir-executor:ymir2.0.2-mmdet-cu111-tmi",
            "other": "",
        },
    },
}

_positive_int = {"type": "integer", "min": 1}
_positive_number = {"type": "number", "min": 0.001, "check_with": "finite"}
_path = {"type": "string", "empty": False}
_globs = {"type": "list", "schema": {"type": "string", "empty": False}}

SCHEMA: dict[str, Any] = {
    "base_dir": _path,
    "paths": {
        "type": "dict",
        "schema": {name: _path for name in (*FOLDERS, "ledger")},
    },
    "import": {
        "type": "dict",
        "schema": {
            "backend": {"type": "string", "allowed": ["embedded", "mir", "ymir-api"]},
            "workers": {"type": "integer", "min": 1, "max": 64},
            "compression_level": {"type": "integer", "min": 0, "max": 3},
            "mir": {
                "type": "dict",
                "schema": {
                    "bin": _path,
                    "root": _path,
                    "dst_rev": {"type": "string", "regex": r"[^@\s]*\{id\}[^@\s]*@[^@\s]+"},
                },
            },
            "ymir_api": {
                "type": "dict",
                "schema": {
                    "url": {"type": "string", "regex": r"(|https?://\S+)"},
                    "user": {"type": "string"},
                    "password_file": _path,
                    "project_id": {"type": "integer", "min": 0},
                    "staging": _path,
                    "staging_in_ymir": {"type": "string", "regex": r"/\S*"},
                    "group_name": {"type": "string", "empty": False, "maxlength": 90},
                    "poll_interval": _positive_number,
                    "timeout": _positive_number,
                    "projects": {
                        "type": "dict",
                        "keysrules": {"type": "string", "check_with": "path_component"},
                        "valuesrules": {"type": "integer", "min": 1},
                    },
                },
            },
        },
    },
    "limits": {
        "type": "dict",
        "schema": {
            "max_package_bytes": _positive_int,
            "max_unpacked_bytes": _positive_int,
            "max_members": _positive_int,
            "max_ratio": {"type": "number", "min": 1, "check_with": "finite"},
        },
    },
    "log": {
        "type": "dict",
        "schema": {
            "format": {"type": "string", "allowed": ["auto", "json", "console"]},
            "level": {
                "type": "string",
                "allowed": ["debug", "info", "warning", "error", "critical"],
            },
        },
    },
    "watch": {
        "type": "dict",
        "schema": {
            "mode": {"type": "string", "allowed": ["inotify", "polling", "auto"]},
            "recursive": {"type": "boolean"},
            "settle_seconds": _positive_number,
            "poll_interval": _positive_number,
            "rescan_interval": _positive_number,
            "patterns": {**_globs, "minlength": 1},
            "ignore": _globs,
        },
    },
    "daemon": {
        "type": "dict",
        "schema": {"shutdown_timeout": _positive_number, "retry_max_seconds": _positive_number},
    },
    "metrics": {
        "type": "dict",
        "schema": {"listen": {"type": "string", "regex": r"(|[^\s:]*:\d{1,5})"}},
    },
    "notify": {
        "type": "dict",
        "schema": {
            # A list of arguments, or one string split as a shell would (never run by a shell).
            "command": {"type": ["string", "list"], "schema": {"type": "string", "empty": False}},
            "webhook": {"type": "string", "regex": r"(|https?://[^\s]+)"},
            "timeout": _positive_number,
            "retries": {"type": "integer", "min": 0, "max": 100},
            "retry_base_seconds": _positive_number,
            "retry_max_seconds": _positive_number,
            "queue_size": {"type": "integer", "min": 1, "max": 1_000_000},
        },
    },
    "retention": {
        "type": "dict",
        "schema": {
            "done_days": {"type": "integer", "min": 0},
            "failed_days": {"type": "integer", "min": 0},
        },
    },
    "pack": {
        "type": "dict",
        "schema": {
            "producer": {"type": "string"},
            "executor": {
                "type": "dict",
                "schema": {
                    name: {"type": "string", "regex": r"\S*"}
                    for name in DEFAULTS["pack"]["executor"]
                },
            },
        },
    },
}


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
class MirConfig:
    bin: str
    root: Path | None
    dst_rev: str


@dataclass(frozen=True, slots=True)
class YmirApiConfig:
    """``[import.ymir_api]``: YMIR's web backend, reached over its API."""

    url: str
    user: str
    password: str  # from YMIR_DROPBOX_YMIR_PASSWORD; else read from password_file when used
    password_file: Path | None
    project_id: int  # 0: no default project (packages outside a routed folder fail)
    staging: Path  # where the normalized package is written, on this host
    staging_in_ymir: str  # the same folder as YMIR's backend sees it
    group_name: str
    poll_interval: float
    timeout: float
    projects: dict[str, int]  # top-level inbox folder -> project id


@dataclass(frozen=True, slots=True)
class ImportConfig:
    backend: str
    workers: int
    compression_level: int
    mir: MirConfig
    ymir_api: YmirApiConfig | None = None


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
    listen: str


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
    source: Path | None = field(default=None)

    def ensure_folders(self) -> None:
        """Create the folder layout (idempotent); the ledger's folder too."""
        for folder in self.paths.folders().values():
            folder.mkdir(parents=True, exist_ok=True)
        self.paths.ledger.parent.mkdir(parents=True, exist_ok=True)


def config_path(explicit: str | None) -> Path | None:
    """The config file to read: ``--config``, else the environment variable, else none."""
    chosen = explicit or os.environ.get(ENV_VAR) or None
    return Path(chosen) if chosen else None


def load_config(path: Path | None = None) -> Config:
    """Read and validate a config file; with ``None``, the built-in defaults."""
    if path is None:
        return build_config({}, source=None, anchor=Path.cwd())
    try:
        with path.open("rb") as stream:
            document = tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config file: {error.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return build_config(document, source=path, anchor=path.resolve().parent)


def build_config(document: dict[str, Any], *, source: Path | None, anchor: Path) -> Config:
    """Validate a parsed TOML document and turn it into a Config."""
    where = str(source) if source else "built-in defaults"
    validator = StrictValidator(SCHEMA, allow_unknown=False)
    if not validator.validate(document):
        messages = [f"{where}: {_describe(error)}" for error in schema_errors(validator)]
        raise ConfigError("\n".join(messages))

    def resolve(value: str) -> Path:
        path = Path(os.path.expanduser(value))
        return path if path.is_absolute() else anchor / path

    base_dir = resolve(document.get("base_dir", DEFAULT_BASE_DIR))
    given_paths = document.get("paths", {})
    paths = {name: resolve(given_paths[name]) for name in given_paths}
    for name in FOLDERS:
        paths.setdefault(name, base_dir / name)
    paths.setdefault("ledger", base_dir / "ledger.sqlite")
    for name in given_paths:
        folder = paths[name].parent if name == "ledger" else paths[name]
        if not folder.is_dir():
            raise ConfigError(f"{where}: paths.{name}: folder {folder} does not exist")

    import_section = {**DEFAULTS["import"], **document.get("import", {})}
    mir_section = {**DEFAULTS["mir"], **import_section.pop("mir", {})}
    if import_section["backend"] == "mir" and not mir_section["root"]:
        raise ConfigError(f"{where}: import.mir.root: required when import.backend is 'mir'")
    try:
        mir_section["dst_rev"].format(id=1)
    except (KeyError, IndexError, ValueError):
        raise ConfigError(
            f"{where}: import.mir.dst_rev: {mir_section['dst_rev']!r} may use only the field {{id}}"
        ) from None
    mir = MirConfig(
        bin=mir_section["bin"],
        root=resolve(mir_section["root"]).absolute() if mir_section["root"] else None,
        dst_rev=mir_section["dst_rev"],
    )
    api_section = {**DEFAULTS["ymir_api"], **import_section.pop("ymir_api", {})}
    ymir_api = None
    if import_section["backend"] == "ymir-api":
        ymir_api = _ymir_api_config(api_section, resolve, where)

    def section(name: str) -> dict[str, Any]:
        return {**DEFAULTS[name], **document.get(name, {})}

    watch = section("watch")
    return Config(
        base_dir=base_dir,
        paths=Paths(**paths),
        import_=ImportConfig(mir=mir, ymir_api=ymir_api, **import_section),
        limits=Limits(**section("limits")),
        log=LogConfig(**section("log")),
        watch=WatchConfig(
            **{**watch, "patterns": tuple(watch["patterns"]), "ignore": tuple(watch["ignore"])}
        ),
        daemon=DaemonConfig(**section("daemon")),
        metrics=MetricsConfig(**section("metrics")),
        notify=_notify_config(section("notify"), anchor, where),
        retention=RetentionConfig(**section("retention")),
        pack=_pack_config(section("pack")),
        source=source,
    )


def _notify_config(section: dict[str, Any], anchor: Path, where: str) -> NotifyConfig:
    """``command`` as arguments; a program named by a relative path (``hooks/notify``) is
    relative to the config file's folder, a bare name is looked up on PATH."""
    given = {**DEFAULTS["notify"], **section}
    command = given.pop("command")
    if isinstance(command, str):
        try:
            command = shlex.split(command)
        except ValueError as error:
            raise ConfigError(f"{where}: notify.command: {command!r}: {error}") from None
    if command:
        program = os.path.expanduser(command[0])
        if "/" in program and not os.path.isabs(program):
            program = str(anchor / program)
        command = [program, *command[1:]]
    return NotifyConfig(command=tuple(command), **given)


def _pack_config(section: dict[str, Any]) -> PackConfig:
    executors = {**DEFAULTS["pack"]["executor"], **section.get("executor", {})}
    return PackConfig(producer=section["producer"], executor=PackExecutors(**executors))


YMIR_PASSWORD_ENV_VAR = "YMIR_DROPBOX_YMIR_PASSWORD"  # noqa: S105 - a variable's name


def _ymir_api_config(
    section: dict[str, Any], resolve: Callable[[str], Path], where: str
) -> YmirApiConfig:
    for key in ("url", "user", "staging"):
        if not section[key]:
            raise ConfigError(
                f"{where}: import.ymir_api.{key}: required when import.backend is 'ymir-api'"
            )
    # The password is needed only to talk to YMIR (the daemon, check, projects), and read
    # only then: an operator's `status` or `ledger` needs neither the file nor the variable.
    password = os.environ.get(YMIR_PASSWORD_ENV_VAR, "")
    try:
        section["group_name"].format(stem="x")
    except (KeyError, IndexError, ValueError):
        raise ConfigError(
            f"{where}: import.ymir_api.group_name: {section['group_name']!r} may use only "
            "the field {stem}"
        ) from None
    return YmirApiConfig(
        url=section["url"].rstrip("/"),
        user=section["user"],
        password=password,
        password_file=resolve(section["password_file"]) if section["password_file"] else None,
        project_id=section["project_id"],
        staging=resolve(section["staging"]).absolute(),
        staging_in_ymir=section["staging_in_ymir"],
        group_name=section["group_name"],
        poll_interval=section["poll_interval"],
        timeout=section["timeout"],
        projects=dict(section["projects"]),
    )


def _known_keys(path: tuple[Any, ...]) -> list[str]:
    """The keys the schema allows beside the unknown one at ``path``."""
    schema: dict[str, Any] = SCHEMA
    for part in path[:-1]:
        inner = schema.get(str(part), {}).get("schema")
        if not isinstance(inner, dict):
            return []
        schema = inner
    return list(schema)


def _describe(error: Any) -> str:
    key = ".".join(str(part) for part in error.path)
    if error.rule == "unknown_field":
        return f"{key}: unknown key" + did_you_mean(str(error.path[-1]), _known_keys(error.path))
    if error.rule == "type":
        found = f"{type(error.value).__name__} {error.value!r}"
        kinds = error.constraint
        expected = " or ".join(kinds) if isinstance(kinds, list) else kinds
        return f"{key}: expected {expected}, found {found}"
    if error.rule == "allowed":
        return f"{key}: {error.value!r} is not one of {', '.join(map(repr, error.constraint))}"
    if error.rule == "min":
        return f"{key}: {error.value!r} is below the minimum {error.constraint}"
    if error.rule == "max":
        return f"{key}: {error.value!r} is above the maximum {error.constraint}"
    if error.rule == "regex":
        return f"{key}: {error.value!r} does not have the expected form"
    if error.rule == "empty":
        return f"{key}: must not be empty"
    return f"{key}: invalid value {error.value!r} ({error.rule})"
