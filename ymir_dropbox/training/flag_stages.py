"""Any other layout, described on the command line: what the example in YMIR's import guide
writes by hand (an mxnet run with ``model-1000.params`` and ``model-symbol.json``) as flags.

``--stage NAME=FILE[,FILE...]`` (files relative to the folder), ``--mAP NAME=VALUE``,
``--metric NAME.KEY=VALUE`` (``mAR``, ``tp``, ``fp``, ``fn``, ...), ``--classes``, ``--best``.
Each stage's ``timestamp`` is the newest modification time of its files, and the best stage
the one of the highest mAP (the newer on a tie) unless ``--best`` names it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from ymir_dropbox.reading.info_schema import COUNTS, METRICS
from ymir_dropbox.reading.names import did_you_mean
from ymir_dropbox.training.plan import (
    MAX_STAGES,
    PackInputError,
    PackPlan,
    Stage,
    check_stage_name,
    mtime_of,
)

KEYS = {**{name.casefold(): name for name in METRICS}, **{name: name for name in COUNTS}}


def parse_class_names(text: str) -> tuple[str, ...]:
    """``person,cat`` -> the class names, in class-index order."""
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise PackInputError(f"--classes {text!r}: an empty class name (NAME,NAME,...)")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise PackInputError(f"--classes: {', '.join(repeated)} given twice")
    return names


def plan_from_flags(
    folder: Path,
    classes: str | None,
    stage_flags: Sequence[str],
    map_flags: Sequence[str],
    metric_flags: Sequence[str],
    best: str | None,
) -> PackPlan:
    if classes is None:
        raise PackInputError("--stage needs --classes NAME,NAME,... (in class-index order)")
    files = _stages(folder, stage_flags)
    metrics: dict[str, dict[str, float | int]] = {name: {} for name in files}
    for flag in map_flags:
        name, value = _split(flag, "--mAP", "NAME=VALUE")
        _put(metrics, name, "mAP", value, f"--mAP {flag}")
    for flag in metric_flags:
        target, value = _split(flag, "--metric", "NAME.KEY=VALUE")
        name, dot, key = target.rpartition(".")
        if not dot:
            raise PackInputError(f"--metric {flag}: expected NAME.KEY=VALUE, such as best.mAR=0.6")
        _put(metrics, name, key, value, f"--metric {flag}")
    stages = []
    for name, paths in files.items():
        if "mAP" not in metrics[name]:
            raise PackInputError(f"stage {name} has no mAP: add --mAP {name}=VALUE")
        timestamp = max(mtime_of(path) for path in paths)
        stages.append(Stage(name, paths, metrics[name], timestamp))
    if best is not None and best not in files:
        raise PackInputError(f"--best {best}: no --stage names it ({', '.join(files)})")
    chosen = best or max(stages, key=lambda stage: (stage.mAP, stage.timestamp)).name
    return PackPlan(folder, parse_class_names(classes), tuple(stages), chosen)


def _stages(folder: Path, flags: Sequence[str]) -> dict[str, tuple[Path, ...]]:
    stages: dict[str, tuple[Path, ...]] = {}
    for flag in flags:
        name, listed = _split(flag, "--stage", "NAME=FILE[,FILE...]")
        check_stage_name(name, f"--stage {flag}")
        if name in stages:
            raise PackInputError(f"--stage {flag}: stage {name} is already given")
        paths = tuple(folder / text.strip() for text in listed.split(","))
        for path in paths:
            if not path.is_file():
                state = "does not exist" if not path.exists() else "is not a file"
                raise PackInputError(f"--stage {flag}: {path} {state}")
        names = [path.name for path in paths]
        if len(set(names)) < len(names):
            raise PackInputError(f"--stage {flag}: two files named alike in one stage")
        stages[name] = paths
    if len(stages) > MAX_STAGES:
        raise PackInputError(f"{len(stages)} stages; YMIR keeps at most {MAX_STAGES}")
    return stages


def _split(flag: str, option: str, form: str) -> tuple[str, str]:
    name, equals, value = flag.partition("=")
    if not equals or not name.strip() or not value.strip():
        raise PackInputError(f"{option} {flag}: expected {form}")
    return name.strip(), value.strip()


def _put(
    metrics: dict[str, dict[str, float | int]], name: str, key: str, text: str, flag: str
) -> None:
    if name not in metrics:
        named = f" ({', '.join(metrics)})" if metrics else ""
        raise PackInputError(f"{flag}: stage {name!r} is not named by any --stage{named}")
    field = KEYS.get(key) or KEYS.get(key.casefold())
    if field is None:
        raise PackInputError(
            f"{flag}: {key!r} is not a metric YMIR keeps ({', '.join(KEYS.values())})"
            f"{did_you_mean(key, list(KEYS.values()))}"
        )
    if field in metrics[name]:
        raise PackInputError(f"{flag}: {name}.{field} is already given")
    metrics[name][field] = _value(field, text, flag)


def _value(field: str, text: str, flag: str) -> float | int:
    if field in COUNTS:
        if not text.isdigit():
            raise PackInputError(f"{flag}: {field} is a count of boxes, 0 or more, not {text!r}")
        return int(text)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise PackInputError(f"{flag}: {field} is a number from 0 to 1, not {text!r}")
    return value
