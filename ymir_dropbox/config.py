"""Configuration: one TOML file, validated with cerberus, parsed once into frozen dataclasses.

Nothing else in ymir-dropbox reads the TOML file or the environment. Relative paths in a file
are relative to that file's folder; the built-in defaults are relative to the working folder.
"""

from __future__ import annotations

import functools
import itertools
import os
import shlex
import tomllib
from pathlib import Path
from typing import Any

from ymir_dropbox.core.errors import ConfigError
from ymir_dropbox.core.jsonvalues import JsonObject
from ymir_dropbox.core.settings import (
    FOLDERS,
    BackendSettings,
    Config,
    DaemonConfig,
    ImportConfig,
    Limits,
    LogConfig,
    MetricsConfig,
    NotifyConfig,
    PackConfig,
    PackExecutors,
    Paths,
    PushConfig,
    RetentionConfig,
    WatchConfig,
)
from ymir_dropbox.reading.names import did_you_mean
from ymir_dropbox.reading.rules import (
    PATH,
    POSITIVE_NUMBER,
    StrictValidator,
    keys_beside,
    schema_errors,
)
from ymir_dropbox.storing.backends import REGISTRY, backend_module, registry_key

ENV_VAR = "YMIR_DROPBOX_CONFIG"
DEFAULT_BASE_DIR = "./dropbox"
GiB = 1024**3

DEFAULTS: dict[str, JsonObject] = {
    "import": {"backend": next(iter(REGISTRY)), "workers": 2, "compression_level": 1},
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
    "metrics": {"listen": "", "hosts": []},
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
    # `push` on a training server: the daemon's listener for --wait, and rsync's ssh command.
    "push": {"status_url": "", "rsh": ""},
}

_positive_int = {"type": "integer", "min": 1}
_positive_number = POSITIVE_NUMBER
_path = PATH
_globs = {"type": "list", "schema": {"type": "string", "empty": False}}

SCHEMA: JsonObject = {
    "base_dir": _path,
    "paths": {
        "type": "dict",
        "schema": {name: _path for name in (*FOLDERS, "ledger")},
    },
    "import": {
        "type": "dict",
        "schema": {
            "backend": {"type": "string"},  # one of the registered backends
            "workers": {"type": "integer", "min": 1, "max": 64},
            "compression_level": {"type": "integer", "min": 0, "max": 3},
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
        "schema": {
            "listen": {"type": "string", "regex": r"(|[^\s:]*:\d{1,5})"},
            "hosts": {"type": "list", "schema": {"type": "string", "regex": r"[^\s/:@]+"}},
        },
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
    "push": {
        "type": "dict",
        "schema": {
            "status_url": {"type": "string", "regex": r"(|https?://[^\s]+)"},
            "rsh": {"type": "string"},
        },
    },
}


def sections() -> dict[str, str]:
    """Each registered backend's table under [import], named after its module (the module
    ``storing/backends/<name>.py`` reads ``[import.<name>]``)."""
    return {name: module.rpartition(".")[2] for name, module in REGISTRY.items()}


__all__ = [
    "ENV_VAR",
    "Config",
    "NotifyConfig",
    "Paths",
    "RetentionConfig",
    "WatchConfig",
    "build_config",
    "config_path",
    "load_config",
]


def backend_settings(section: str) -> BackendSettings:
    """What the backend whose table is ``[import.<section>]`` declares about it."""
    name = next(name for name, table in sections().items() if table == section)
    declared: BackendSettings = backend_module(name).SETTINGS
    return declared


def _present_sections(document: JsonObject) -> tuple[str, ...]:
    """The backends' tables this document configures (only their modules are imported: a
    command starts sooner)."""
    given = document.get("import")
    known = set(sections().values())
    return tuple(sorted(name for name in given if name in known)) if isinstance(given, dict) else ()


@functools.lru_cache(maxsize=16)
def _validator(present: tuple[str, ...], registry: tuple[tuple[str, str], ...]) -> StrictValidator:
    """The validator for a document configuring these backends' tables, with these backends
    registered: building one (cerberus checks the schema itself) costs more than validating,
    so each is built once."""
    return StrictValidator(_with_sections(list(present)), allow_unknown=False)


def full_schema() -> JsonObject:
    """The schema with every backend's table (``config.example.toml`` documents them all)."""
    return _with_sections(sorted(sections().values()))


def _with_sections(sections: list[str]) -> JsonObject:
    tables = {
        section: {"type": "dict", "schema": dict(backend_settings(section).schema)}
        for section in sections
    }
    backend = {"type": "string", "allowed": list(REGISTRY)}
    schema = dict(SCHEMA)
    schema["import"] = {
        "type": "dict",
        "schema": {**SCHEMA["import"]["schema"], "backend": backend, **tables},
    }
    return schema


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


def build_config(document: JsonObject, *, source: Path | None, anchor: Path) -> Config:
    """Validate a parsed TOML document and turn it into a Config."""
    where = str(source) if source else "built-in defaults"
    validator = _validator(_present_sections(document), registry_key())
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
    _refuse_nested_folders({name: paths[name] for name in FOLDERS}, where)

    import_section = {**DEFAULTS["import"], **document.get("import", {})}
    known = sections()
    tables = {
        name: import_section.pop(name) for name in list(import_section) if name in known.values()
    }
    chosen = known[import_section["backend"]]
    declared = backend_settings(chosen)
    settings = declared.build({**declared.defaults, **tables.get(chosen, {})}, resolve, where)

    def section(name: str) -> JsonObject:
        return {**DEFAULTS[name], **document.get(name, {})}

    watch = section("watch")
    return Config(
        base_dir=base_dir,
        paths=Paths(**paths),
        import_=ImportConfig(settings=settings, **import_section),
        limits=Limits(**section("limits")),
        log=LogConfig(**section("log")),
        watch=WatchConfig(
            **{**watch, "patterns": tuple(watch["patterns"]), "ignore": tuple(watch["ignore"])}
        ),
        daemon=DaemonConfig(**section("daemon")),
        metrics=_metrics_config(section("metrics")),
        notify=_notify_config(section("notify"), anchor, where),
        retention=RetentionConfig(**section("retention")),
        pack=_pack_config(section("pack")),
        push=PushConfig(**section("push")),
        source=source,
    )


def _notify_config(section: JsonObject, anchor: Path, where: str) -> NotifyConfig:
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


def _refuse_nested_folders(folders: dict[str, Path], where: str) -> None:
    """Each folder apart from the others: a folder inside the inbox would be imported from,
    the daemon's own done/ among it, for ever."""
    real = {name: Path(os.path.realpath(folder)) for name, folder in folders.items()}
    for (name, path), (other, other_path) in itertools.combinations(real.items(), 2):
        if path == other_path:
            raise ConfigError(f"{where}: paths.{name} and paths.{other} are one folder, {path}")
        for inner, outer in ((name, other), (other, name)):
            if real[inner].is_relative_to(real[outer]):
                raise ConfigError(
                    f"{where}: paths.{inner} ({real[inner]}) is inside paths.{outer} "
                    f"({real[outer]}); each folder must be apart from the others"
                )


def _metrics_config(section: JsonObject) -> MetricsConfig:
    return MetricsConfig(listen=section["listen"], hosts=tuple(section["hosts"]))


def _pack_config(section: JsonObject) -> PackConfig:
    executors = {**DEFAULTS["pack"]["executor"], **section.get("executor", {})}
    return PackConfig(producer=section["producer"], executor=PackExecutors(**executors))


def _describe(error: Any) -> str:
    key = ".".join(str(part) for part in error.path)
    if error.rule == "unknown_field":
        return f"{key}: unknown key" + did_you_mean(
            str(error.path[-1]), keys_beside(full_schema(), error.path)
        )
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
    if error.rule == "required":
        return f"{key}: required"
    return f"{key}: invalid value {error.value!r} ({error.rule})"
