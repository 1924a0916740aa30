"""A run folder of ultralytics (``runs/detect/trainN``) or YOLOv5 (``runs/train/expN``), read
as each writes it, into the stages of a package.

Both keep ``weights/best.pt`` (the epoch of the highest fitness, 0.1 x mAP@0.5 + 0.9 x
mAP@0.5:0.95, the later on a tie), ``weights/last.pt`` (the final epoch) and, with
``save_period``, ``weights/epoch{N}.pt`` where N counts from 0; a ``results.csv`` with one row
per epoch, whose ``epoch`` counts from 1 in ultralytics and from 0 in YOLOv5, and whose
headers are padded with spaces; and the run's arguments (``args.yaml``, ``opt.yaml``), whose
``data`` names the dataset yaml holding the class names.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ymir_dropbox.training.checkpoints import checkpoint_classes
from ymir_dropbox.training.plan import (
    PackInputError,
    PackPlan,
    Stage,
    keep_stages,
    mtime_of,
    regular_files,
)

FITNESS = (0.1, 0.9)  # of mAP@0.5 and mAP@0.5:0.95, as both frameworks weigh them
EPOCH_WEIGHTS = re.compile(r"epoch(\d+)\.pt")
RUN_SECTION = "run"
# The executor default by the model class a YOLOv5 checkpoint holds (its [pack.executor] key).
YOLOV5_MODELS = {
    "models.yolo DetectionModel": "yolov5",  # v6.2 and later
    "models.yolo Model": "yolov5_before_v6_2",
}
ULTRALYTICS_MODEL = "ultralytics.nn.tasks"


@dataclass(frozen=True, slots=True)
class YoloLayout:
    """What tells one framework's run folder from the other's."""

    framework: str
    arguments: str  # the run's arguments, holding `data`
    recall: str  # optional: mAR where the run has it
    map50: str
    map50_95: str
    first_epoch: int  # the `epoch` column of the first epoch
    image_size: tuple[str, ...]  # the argument holding the image size, by version
    also_attached: tuple[str, ...] = ()

    @property
    def metrics(self) -> tuple[str, str]:
        return self.map50, self.map50_95


ULTRALYTICS = YoloLayout(
    "ultralytics",
    "args.yaml",
    "metrics/recall(B)",
    "metrics/mAP50(B)",
    "metrics/mAP50-95(B)",
    first_epoch=1,
    image_size=("imgsz",),
)
YOLOV5 = YoloLayout(
    "yolov5",
    "opt.yaml",
    "metrics/recall",
    "metrics/mAP_0.5",
    "metrics/mAP_0.5:0.95",
    first_epoch=0,
    image_size=("imgsz", "img_size"),
    also_attached=("hyp.yaml",),
)


@dataclass(frozen=True, slots=True)
class Epoch:
    """One row of ``results.csv``; ``number`` counts from 0, as the checkpoints do."""

    number: int
    map50: float
    map50_95: float
    recall: float | None

    @property
    def fitness(self) -> float:
        return FITNESS[0] * self.map50 + FITNESS[1] * self.map50_95


def read_yolo_run(
    folder: Path, layout: YoloLayout, class_names: tuple[str, ...] | None
) -> PackPlan:
    """The package of a run folder; ``class_names`` (``--classes``) instead of the dataset's."""
    weights = _weights(folder, layout)
    epochs = read_results(folder / "results.csv", layout)
    best = max(epochs.values(), key=lambda epoch: (epoch.fitness, epoch.number))
    last = max(epochs)
    stages, notes, fitness = [], [], {}
    for path in weights:
        number = {"best.pt": best.number, "last.pt": last}.get(path.name, _epoch_of(path))
        epoch = epochs.get(number)
        if epoch is None:
            notes.append(
                f"{path}: results.csv has no row for its epoch "
                f"({number + layout.first_epoch}); not packed"
            )
            continue
        metrics = {"mAP": epoch.map50}
        if epoch.recall is not None:
            metrics["mAR"] = epoch.recall
        stages.append(Stage(path.name.removesuffix(".pt"), (path,), metrics, mtime_of(path)))
        fitness[stages[-1].name] = (epoch.fitness, epoch.number)
    if not stages:
        raise PackInputError(f"{folder / 'results.csv'}: no row for any weights file")
    # best.pt when there is one; else the weights file the framework would have called best
    best_name = "best" if "best" in fitness else max(fitness, key=fitness.__getitem__)
    best_file = next(stage.files[0] for stage in stages if stage.name == best_name)
    stages, kept_notes = keep_stages(stages, best_name, layout.framework)
    arguments = _arguments(folder / layout.arguments, required=class_names is None)
    executor_key, unknown = _executor_key(layout, best_file)
    return PackPlan(
        source=folder,
        class_names=class_names or dataset_class_names(folder, layout, arguments),
        stages=tuple(stages),
        best=best_name,
        attachments=_attachments(folder, layout),
        executor_config=_image_size(arguments, layout),
        evaluate_config={"iou_thr": 0.5},
        executor_key=executor_key,
        executor_unknown=unknown,
        notes=(*notes, *kept_notes),
    )


def _weights(folder: Path, layout: YoloLayout) -> list[Path]:
    """best.pt, last.pt, then epoch{N}.pt, newest first."""
    found = regular_files(folder / "weights", "*.pt")
    named = [path for path in found if path.name in {"best.pt", "last.pt"}]
    epochs = sorted((path for path in found if _epoch_of(path) >= 0), key=_epoch_of, reverse=True)
    if not named and not epochs:
        raise PackInputError(
            f"{folder / 'weights'}: no best.pt, last.pt or epoch<N>.pt: not the run folder of "
            f"a {layout.framework} training, or it saved no weights"
        )
    return sorted(named) + epochs


def _epoch_of(weights: Path) -> int:
    """N of ``epoch{N}.pt``; -1 for any other name."""
    match = EPOCH_WEIGHTS.fullmatch(weights.name)
    return int(match.group(1)) if match else -1


def read_results(path: Path, layout: YoloLayout) -> dict[int, Epoch]:
    """The rows of ``results.csv`` by epoch (from 0); a later row of an epoch wins (a resumed
    run)."""
    try:
        with path.open(newline="", encoding="utf-8") as stream:
            rows = [row for row in csv.reader(stream) if any(cell.strip() for cell in row)]
    except FileNotFoundError:
        raise PackInputError(
            f"{path}: missing; the mAP of each weights file comes from it"
        ) from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise PackInputError(f"{path}: cannot be read: {error}") from None
    if not rows:
        raise PackInputError(f"{path}: empty; the mAP of each weights file comes from it")
    header = [cell.strip() for cell in rows[0]]
    columns = [_column(path, header, name, layout) for name in ("epoch", *layout.metrics)]
    recall = header.index(layout.recall) if layout.recall in header else None
    epochs = {}
    for line, row in enumerate(rows[1:], start=2):
        number, map50, map50_95 = (_number(path, line, header, row, at) for at in columns)
        epoch = int(number) - layout.first_epoch
        found = None if recall is None else _number(path, line, header, row, recall)
        epochs[epoch] = Epoch(epoch, map50, map50_95, found)
    if not epochs:
        raise PackInputError(f"{path}: no rows; the run validated no epoch")
    return epochs


def _column(path: Path, header: list[str], name: str, layout: YoloLayout) -> int:
    if name in header:
        return header.index(name)
    other = YOLOV5 if layout is ULTRALYTICS else ULTRALYTICS
    hint = (
        f" (a {other.framework} run? use --from {other.framework})" if other.map50 in header else ""
    )
    raise PackInputError(
        f"{path}: no column {name!r}, which {layout.framework} writes; it has "
        f"{', '.join(header)}{hint}"
    )


def _number(path: Path, line: int, header: list[str], row: list[str], column: int) -> float:
    text = row[column].strip() if column < len(row) else ""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (header[column] != "epoch" and not 0 <= value <= 1):
        raise PackInputError(
            f"{path}, line {line}: {header[column]} is {text!r}, not a number"
            + ("" if header[column] == "epoch" else " from 0 to 1")
        )
    return value


def _arguments(path: Path, required: bool) -> dict[str, Any]:
    """The run's arguments (``args.yaml``, ``opt.yaml``); ``{}`` when missing and not needed."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise PackInputError(
                f"{path}: missing; the class names come from the dataset yaml its `data` "
                "names: pass --classes NAME,NAME,... (in class-index order)"
            ) from None
        return {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise PackInputError(f"{path}: cannot be read: {error}") from None
    return document if isinstance(document, dict) else {}


def dataset_class_names(
    folder: Path, layout: YoloLayout, arguments: dict[str, Any]
) -> tuple[str, ...]:
    """The class names of the dataset yaml the run's ``data`` names, in class-index order."""
    where = folder / layout.arguments
    data = arguments.get("data")
    if not isinstance(data, str) or not data:
        raise PackInputError(
            f"{where}: no `data` naming the dataset yaml: pass --classes NAME,NAME,... "
            "(in class-index order)"
        )
    candidates = (
        [Path(data)]
        if Path(data).is_absolute()
        else [
            Path.cwd() / data,
            *(ancestor / data for ancestor in folder.absolute().parents),
        ]
    )
    found = next((path for path in candidates if path.is_file()), None)
    if found is None:
        raise PackInputError(
            f"{where}: the dataset yaml {data!r} (`data`) is not on this machine (looked in "
            "the working folder and the run folder's parents): pass --classes NAME,NAME,... "
            "(in class-index order)"
        )
    return names_of_dataset(found)


def names_of_dataset(path: Path) -> tuple[str, ...]:
    """``names`` of a dataset yaml: a list, or a mapping from class index to name."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise PackInputError(f"{path}: cannot be read: {error}") from None
    names = document.get("names") if isinstance(document, dict) else None
    if isinstance(names, dict):
        indexes = sorted(names, key=lambda key: int(key) if str(key).isdigit() else -1)
        if [str(index) for index in indexes] != [str(number) for number in range(len(names))]:
            raise PackInputError(
                f"{path}: names: the class indexes must be 0 to {len(names) - 1}, found "
                f"{', '.join(map(str, indexes))}"
            )
        names = [names[index] for index in indexes]
    if not isinstance(names, list) or not names:
        raise PackInputError(
            f"{path}: no `names` (a list, or class index: name): pass --classes NAME,NAME,..."
        )
    return tuple(str(name) for name in names)


def _image_size(arguments: dict[str, Any], layout: YoloLayout) -> dict[str, Any]:
    for key in layout.image_size:
        size = arguments.get(key)
        if isinstance(size, int) and not isinstance(size, bool):
            return {"img_size": size}
        if isinstance(size, list) and size and all(isinstance(item, int) for item in size):
            return {"img_size": max(size)}
    return {}


def _attachments(folder: Path, layout: YoloLayout) -> dict[str, tuple[Path, ...]]:
    """The run's other files kept with the model (attachments/run/...)."""
    names = ("results.csv", layout.arguments, *layout.also_attached)
    paths = tuple(
        folder / name
        for name in names
        if (folder / name).is_file() and not (folder / name).is_symlink()
    )
    return {RUN_SECTION: paths} if paths else {}


def _executor_key(layout: YoloLayout, weights: Path) -> tuple[str, str]:
    """The ``[pack.executor]`` key for this run, or "" and why none fits."""
    if layout is ULTRALYTICS:
        return "ultralytics", ""
    classes = checkpoint_classes(weights)
    for model, key in YOLOV5_MODELS.items():
        if model in classes:
            return key, ""
    if any(name.startswith(ULTRALYTICS_MODEL) for name in classes):
        return "", (
            f"{weights} holds an ultralytics model, not a YOLOv5 one (pack the run with "
            "--from ultralytics)"
        )
    return "", (
        f"{weights}: cannot tell which YOLOv5 made it: its data.pkl names neither "
        "models.yolo DetectionModel (v6.2 and later) nor models.yolo Model (older), or it is "
        "no zip checkpoint"
    )
