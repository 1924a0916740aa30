"""What ``pack`` builds when nobody wrote ``ymir-info.yaml``: the stages of a training run or
of the command line, and the document that describes them.

A stage is a set of files YMIR's executors find at ``/in/models/<stage>/<file>``, its metrics
and the time it was made; the package stores each file as ``<stage>/<file>``, any other file
of the run under ``attachments/<section>/<file>``.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.reading.info_schema import CURRENT_VERSION
from ymir_dropbox.reading.validation import ATTACHMENTS, RESERVED_NAMES, stored_files

DETECTION = 2
# YMIR's executor SDK keeps at most 11 stages (the 10 latest and the best) and refuses a stage
# name that is not a Python identifier.
MAX_STAGES = 11


class PackInputError(DropboxError):
    """The run folder or the command line cannot describe a package (a usage error)."""


def check_stage_name(name: str, where: str) -> None:
    """Refuse a stage name YMIR's executors would refuse (``stage-1``)."""
    if not name.isidentifier():
        raise PackInputError(
            f"{where}: stage name {name!r} would be refused by YMIR's executors: it must be a "
            "Python identifier (letters, digits and _, not starting with a digit), such as "
            f"{_identifier_like(name)!r}"
        )
    if name in RESERVED_NAMES:
        raise PackInputError(f"{where}: {name!r} cannot name a stage: the package uses it")


def _identifier_like(name: str) -> str:
    cleaned = "".join(char if char.isalnum() or char == "_" else "_" for char in name)
    return cleaned if cleaned.isidentifier() else f"stage_{cleaned}"


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage: its files (the paths to pack), ``mAP`` and any other metric, and the Unix
    time it was made."""

    name: str
    files: tuple[Path, ...]
    metrics: Mapping[str, float | int]
    timestamp: int

    @property
    def mAP(self) -> float:
        return float(self.metrics["mAP"])


@dataclass(frozen=True, slots=True)
class PackPlan:
    """Everything ``ymir-info.yaml`` will say, and where each packed file comes from.

    ``executor_key`` names the ``[pack.executor]`` default that fits the run ("" when none
    can be told, ``executor_unknown`` says why); ``notes`` are what the user should hear
    (a checkpoint left out, and why).
    """

    source: Path
    class_names: tuple[str, ...]
    stages: tuple[Stage, ...]
    best: str
    executor: str = ""
    producer: str = ""
    attachments: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)
    executor_config: Mapping[str, Any] = field(default_factory=dict)
    evaluate_config: Mapping[str, float] = field(default_factory=dict)
    executor_key: str = "other"
    executor_unknown: str = ""
    notes: tuple[str, ...] = ()

    @property
    def best_stage(self) -> Stage:
        return next(stage for stage in self.stages if stage.name == self.best)

    def info(self) -> dict[str, Any]:
        """The ``ymir-info.yaml`` document, in the 2.0.0 form YMIR reads."""
        task_context: dict[str, Any] = {}
        if self.executor:
            task_context["executor"] = self.executor
        task_context["producer"] = self.producer
        task_context["mAP"] = self.best_stage.mAP
        document: dict[str, Any] = {
            "package_version": CURRENT_VERSION,
            "object_type": DETECTION,
            "executor_config": {"class_names": list(self.class_names), **self.executor_config},
            "stages": {
                stage.name: {
                    "stage_name": stage.name,
                    "files": [path.name for path in stage.files],
                    **stage.metrics,
                    "timestamp": stage.timestamp,
                }
                for stage in self.stages
            },
            "best_stage_name": self.best,
            "task_context": task_context,
        }
        if self.attachments:
            document[ATTACHMENTS] = {
                section: [path.name for path in paths]
                for section, paths in self.attachments.items()
            }
        if self.evaluate_config:
            document["evaluate_config"] = dict(self.evaluate_config)
        return document

    def members(self) -> list[tuple[str, Path]]:
        """Each archive member and the file it is read from, in the order the daemon (and
        ``mir``) store them, so the daemon stores each member as it reads it."""
        sources = {
            f"{stage.name}/{path.name}": path for stage in self.stages for path in stage.files
        }
        for section, paths in self.attachments.items():
            sources.update({f"{ATTACHMENTS}/{section}/{path.name}": path for path in paths})
        return [(planned.name, sources[planned.name]) for planned in stored_files(self.info())]


def dump_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False)


def default_producer() -> str:
    """``user@host`` of whoever runs ``pack``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def mtime_of(path: Path) -> int:
    """A file's modification time in whole seconds, as ``ls --time-style=+%s`` shows it."""
    return int(path.stat().st_mtime)


def regular_files(folder: Path, pattern: str) -> list[Path]:
    """Files in ``folder`` matching ``pattern``; a symlink (mmdetection's ``latest.pth``) is
    never one of them."""
    return sorted(path for path in folder.glob(pattern) if path.is_file() and not path.is_symlink())


def keep_stages(stages: list[Stage], best: str, framework: str) -> tuple[list[Stage], list[str]]:
    """At most ``MAX_STAGES``, in the order given (the best and newest first), the best always
    kept; and a note naming what was left out."""
    if len(stages) <= MAX_STAGES:
        return stages, []
    best_stage = [stage for stage in stages if stage.name == best]
    others = [stage for stage in stages if stage.name != best]
    kept_others = others[: MAX_STAGES - len(best_stage)]
    kept = [stage for stage in stages if stage in best_stage or stage in kept_others]
    left = [stage.name for stage in others[len(kept_others) :]]
    note = (
        f"{framework}: {len(stages)} weights files; YMIR keeps at most {MAX_STAGES} stages, so "
        f"the oldest are left out: {', '.join(left)}"
    )
    return kept, [note]
