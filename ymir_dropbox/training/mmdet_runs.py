"""An mmdetection 2.x work folder (``work_dirs/<config>``), read as mmdetection writes it,
into the stages of a package.

It holds ``epoch_N.pth`` (N from 1), ``latest.pth`` (a symlink to the newest, never packed),
the dumped config ``<config>.py`` and the JSON log ``<timestamp>.log.json``, whose validation
lines (``"mode": "val"``) carry ``epoch``, ``bbox_mAP`` and ``bbox_mAP_50``. YMIR's
mmdetection executors load the config beside the weights, so every stage holds both. The
config is read with ``ast``, never executed.
"""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path
from typing import Any

from ymir_dropbox.training.plan import (
    PackInputError,
    PackPlan,
    Stage,
    keep_stages,
    mtime_of,
    regular_files,
)

FRAMEWORK = "mmdet"
CHECKPOINT = re.compile(r"epoch_(\d+)\.pth")
MAP_50 = "bbox_mAP_50"
RUN_SECTION = "run"


def read_mmdet_run(folder: Path, class_names: tuple[str, ...] | None) -> PackPlan:
    """The package of a work folder; ``class_names`` (``--classes``) instead of the config's."""
    checkpoints = sorted(
        (
            (int(match.group(1)), path)
            for path in regular_files(folder, "epoch_*.pth")
            if (match := CHECKPOINT.fullmatch(path.name))
        ),
        reverse=True,
    )
    if not checkpoints:
        raise PackInputError(
            f"{folder}: no epoch_<N>.pth: not an mmdetection 2.x work folder, or its training "
            "saved no checkpoint"
        )
    config = _config_file(folder)
    logs = regular_files(folder, "*.log.json")
    map50 = validation_map50(folder, logs)
    stages, notes, order = [], [], {}
    for epoch, path in checkpoints:
        if epoch not in map50:
            notes.append(f"{path}: no validation of epoch {epoch} in the log; not packed")
            continue
        stages.append(Stage(path.stem, (path, config), {"mAP": map50[epoch]}, mtime_of(path)))
        order[path.stem] = (map50[epoch], epoch)
    if not stages:
        raise PackInputError(
            f"{', '.join(str(log) for log in logs)}: no validation of any saved epoch "
            f"({', '.join(str(epoch) for epoch, _ in checkpoints)})"
        )
    best = max(order, key=order.__getitem__)  # the highest mAP@0.5, the later on a tie
    stages, kept_notes = keep_stages(stages, best, FRAMEWORK)
    return PackPlan(
        source=folder,
        class_names=class_names or config_class_names(config),
        stages=tuple(stages),
        best=best,
        attachments={RUN_SECTION: tuple(logs)},
        evaluate_config={"iou_thr": 0.5},
        executor_key=FRAMEWORK,
        notes=(*notes, *kept_notes),
    )


def _config_file(folder: Path) -> Path:
    """``<folder name>.py``, else the one ``.py`` in the folder."""
    named = folder / f"{folder.name}.py"
    if named.is_file() and not named.is_symlink():
        return named
    found = regular_files(folder, "*.py")
    if len(found) == 1:
        return found[0]
    if not found:
        raise PackInputError(
            f"{folder}: no dumped config ({folder.name}.py): YMIR's mmdetection executors need "
            "it beside the weights"
        )
    raise PackInputError(
        f"{folder}: several configs ({', '.join(path.name for path in found)}) and none named "
        f"{folder.name}.py: cannot tell which one the run dumped"
    )


def validation_map50(folder: Path, logs: list[Path]) -> dict[int, float]:
    """``bbox_mAP_50`` of each validated epoch, across the logs in name order (a resumed run
    starts a new log; a later line of an epoch wins)."""
    if not logs:
        raise PackInputError(
            f"{folder}: no <timestamp>.log.json: the mAP of each checkpoint comes from it"
        )
    found: dict[int, float] = {}
    other_keys: set[str] = set()
    for log in logs:
        for line, record in _records(log):
            if record.get("mode") != "val" or not isinstance(record.get("epoch"), int):
                continue
            value = record.get(MAP_50)
            if value is None:
                other_keys.update(key for key in record if key not in {"mode", "epoch", "iter"})
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                value = math.nan
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise PackInputError(f"{log}, line {line}: {MAP_50} is {value!r}, not 0 to 1")
            found[record["epoch"]] = float(value)
    if not found:
        seen = f" (its validation lines have {', '.join(sorted(other_keys))})" if other_keys else ""
        raise PackInputError(
            f"{', '.join(str(log) for log in logs)}: no validation line "
            f'("mode": "val") with {MAP_50}{seen}'
        )
    return found


def _records(log: Path) -> list[tuple[int, dict[str, Any]]]:
    """The JSON objects of a log, one a line; a last line still being written is skipped."""
    try:
        lines = log.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise PackInputError(f"{log}: cannot be read: {error}") from None
    records = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as error:
            if number == len(lines):
                break
            raise PackInputError(f"{log}, line {number}: not JSON: {error}") from None
        if isinstance(record, dict):
            records.append((number, record))
    return records


def config_class_names(path: Path) -> tuple[str, ...]:
    """The class names of a dumped config: its top-level ``classes``, else the ``classes`` of
    its training data (``data = dict(train=dict(classes=...))``, wrappers included)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, UnicodeDecodeError) as error:
        raise PackInputError(f"{path}: cannot be read: {error}") from None
    except SyntaxError as error:
        raise PackInputError(f"{path}, line {error.lineno}: not Python: {error.msg}") from None
    assigned = {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    node = assigned.get("classes")
    if node is None and "data" in assigned:
        train = _entry(assigned["data"], "train")
        node = _find_classes(train) if train is not None else None
    if node is None:
        raise PackInputError(
            f"{path}: no `classes` (mmdetection then trains on its dataset's own classes, "
            "which the config does not list): pass --classes NAME,NAME,... (in class-index order)"
        )
    if isinstance(node, ast.Name) and node.id in assigned:
        node = assigned[node.id]
    try:
        value = ast.literal_eval(node)
    except ValueError:
        value = None
    if isinstance(value, str):
        raise PackInputError(
            f"{path}: classes is a file name ({value!r}), read at training time: pass "
            "--classes NAME,NAME,... (in class-index order)"
        )
    if not isinstance(value, list | tuple) or not value:
        raise PackInputError(
            f"{path}, line {node.lineno}: classes is not a list of names: pass --classes"
        )
    return tuple(str(name) for name in value)


def _entry(node: ast.expr, key: str) -> ast.expr | None:
    """``key`` of ``dict(key=...)`` or ``{'key': ...}``."""
    if isinstance(node, ast.Call):
        return next((word.value for word in node.keywords if word.arg == key), None)
    if isinstance(node, ast.Dict):
        for name, value in zip(node.keys, node.values, strict=True):
            if isinstance(name, ast.Constant) and name.value == key:
                return value
    return None


def _find_classes(node: ast.expr) -> ast.expr | None:
    """``classes`` of a dataset, or of the dataset a wrapper (``RepeatDataset``) holds."""
    found = _entry(node, "classes")
    if found is not None:
        return found
    for key in ("dataset", "datasets"):
        inner = _entry(node, key)
        if isinstance(inner, ast.List | ast.Tuple):
            inner = inner.elts[0] if inner.elts else None
        if inner is not None and (found := _find_classes(inner)) is not None:
            return found
    return None
