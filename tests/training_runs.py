"""Training run folders built in code, as ultralytics, YOLOv5 and mmdetection 2.x write them,
with small fake checkpoints: no framework installed, nothing ever unpickled.

A PyTorch checkpoint is a zip holding ``<name>/data.pkl`` (the pickled object), its tensors
under ``<name>/data/`` and ``<name>/version``; the pickle here is written by hand, opcode by
opcode, so it names the model class exactly as a real checkpoint does.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

BASE_TIME = 1_700_000_000  # the mtime of the first weights file written
DETECTION_MODEL = ("models.yolo", "DetectionModel")  # YOLOv5 v6.2 and later
OLD_MODEL = ("models.yolo", "Model")  # YOLOv5 before v6.2
ULTRALYTICS_MODEL = ("ultralytics.nn.tasks", "DetectionModel")


def _unicode(text: str) -> bytes:
    data = text.encode()
    return b"X" + len(data).to_bytes(4, "little") + data  # BINUNICODE


def checkpoint_pickle(model: tuple[str, str] | None, *, stack_global: bool = False) -> bytes:
    """``{'model': <module.Class>(), 'epoch': -1}`` as pickle opcodes: protocol 2's
    ``GLOBAL`` (as ``torch.save`` writes), or protocol 4's ``STACK_GLOBAL``."""
    body = b"}q\x00(" + _unicode("model") + b"q\x01"  # EMPTY_DICT, BINPUT, MARK, key, BINPUT
    if model is None:
        body += b"N"  # no model object: None
    elif stack_global:
        body += _unicode(model[0]) + b"\x94" + _unicode(model[1]) + b"\x94\x93)\x81"
    else:
        body += b"c" + f"{model[0]}\n{model[1]}\n".encode() + b"q\x02)\x81"  # GLOBAL, NEWOBJ
    body += _unicode("epoch") + b"J\xff\xff\xff\xffu."  # BININT -1, SETITEMS, STOP
    return (b"\x80\x04" if stack_global else b"\x80\x02") + body


def write_checkpoint(
    path: Path,
    model: tuple[str, str] | None = DETECTION_MODEL,
    *,
    weights: int = 4096,
    stack_global: bool = False,
) -> Path:
    """A fake ``torch.save`` zip: ``archive/data.pkl``, one tensor of random bytes, version."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", checkpoint_pickle(model, stack_global=stack_global))
        archive.writestr("archive/data/0", os.urandom(weights))
        archive.writestr("archive/version", "3\n")
    return path


def set_mtime(path: Path, seconds: int) -> None:
    os.utime(path, (seconds, seconds), follow_symlinks=False)


@dataclass(frozen=True)
class Metrics:
    """What one epoch's validation gave."""

    precision: float
    recall: float
    map50: float
    map50_95: float

    @property
    def fitness(self) -> float:
        return 0.1 * self.map50 + 0.9 * self.map50_95


# Four epochs where the best fitness (epoch index 2) is not the best mAP@0.5 (index 1).
EPOCHS = (
    Metrics(0.41, 0.32, 0.35, 0.15),
    Metrics(0.62, 0.51, 0.71, 0.28),  # highest mAP@0.5, fitness 0.323
    Metrics(0.66, 0.55, 0.64, 0.39),  # highest fitness, 0.415: best.pt
    Metrics(0.65, 0.56, 0.63, 0.37),  # last.pt
)

ULTRALYTICS_COLUMNS = (
    "epoch", "train/box_loss", "train/cls_loss", "train/dfl_loss", "metrics/precision(B)",
    "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)", "val/box_loss",
    "val/cls_loss", "val/dfl_loss", "lr/pg0", "lr/pg1", "lr/pg2",
)  # fmt: skip
YOLOV5_COLUMNS = (
    "epoch", "train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision",
    "metrics/recall", "metrics/mAP_0.5", "metrics/mAP_0.5:0.95", "val/box_loss",
    "val/obj_loss", "val/cls_loss", "x/lr0", "x/lr1", "x/lr2",
)  # fmt: skip


def results_csv(
    columns: Sequence[str], epochs: Sequence[Metrics], first_epoch: int, width: int
) -> str:
    """``results.csv`` as the frameworks write it: every cell right-aligned in ``width``
    characters (0: not padded), values as ``%g`` with 5 digits."""

    def line(cells: Sequence[object], form: str) -> str:
        return ",".join(form % cell for cell in cells) + "\n"

    header = line(columns, f"%{width}s" if width else "%s")
    rows = []
    for index, metrics in enumerate(epochs):
        values = [first_epoch + index, 1.2, 0.8, 1.1]
        values += [metrics.precision, metrics.recall, metrics.map50, metrics.map50_95]
        values += [1.3, 0.9, 1.0, 0.001, 0.001, 0.001]
        rows.append(line(values, f"%{width}.5g" if width else "%.5g"))
    return header + "".join(rows)


def write_dataset_yaml(path: Path, names: Sequence[str], *, as_mapping: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    listed: object = dict(enumerate(names)) if as_mapping else list(names)
    path.write_text(
        yaml.safe_dump(
            {
                "path": "../datasets/pets",
                "train": "images/train",
                "val": "images/val",
                "names": listed,
            }
        )
    )
    return path


def write_yolo_weights(
    run: Path,
    best_epoch: int,
    last_epoch: int,
    saved: Sequence[int],
    model: tuple[str, str] | None,
) -> None:
    """best.pt, last.pt and epoch{N}.pt, each with the mtime of the end of its epoch."""
    weights = run / "weights"
    for name, epoch in [("best.pt", best_epoch), ("last.pt", last_epoch)] + [
        (f"epoch{number}.pt", number) for number in saved
    ]:
        set_mtime(write_checkpoint(weights / name, model), BASE_TIME + 60 * epoch)


def ultralytics_run(
    project: Path,
    epochs: Sequence[Metrics] = EPOCHS,
    *,
    saved: Sequence[int] = (),
    names: Sequence[str] = ("person", "cat"),
    as_mapping: bool = True,
    width: int = 23,
) -> Path:
    """``project/runs/detect/train3``, trained from ``project`` on ``pets.yaml``."""
    run = project / "runs" / "detect" / "train3"
    run.mkdir(parents=True)
    write_dataset_yaml(project / "pets.yaml", names, as_mapping=as_mapping)
    (run / "args.yaml").write_text(
        yaml.safe_dump(
            {
                "task": "detect",
                "mode": "train",
                "model": "yolov8n.pt",
                "data": "pets.yaml",
                "epochs": len(epochs),
                "imgsz": 640,
                "save_period": 1 if saved else -1,
            }
        )
    )
    (run / "results.csv").write_text(results_csv(ULTRALYTICS_COLUMNS, epochs, 1, width))
    best = max(range(len(epochs)), key=lambda index: (epochs[index].fitness, index))
    write_yolo_weights(run, best, len(epochs) - 1, saved, ULTRALYTICS_MODEL)
    return run


def yolov5_run(
    project: Path,
    epochs: Sequence[Metrics] = EPOCHS,
    *,
    saved: Sequence[int] = (),
    names: Sequence[str] = ("person", "cat"),
    model: tuple[str, str] | None = DETECTION_MODEL,
) -> Path:
    """``project/runs/train/exp2`` of a YOLOv5 clone at ``project``, on ``data/pets.yaml``."""
    run = project / "runs" / "train" / "exp2"
    run.mkdir(parents=True)
    write_dataset_yaml(project / "data" / "pets.yaml", names)
    (run / "opt.yaml").write_text(
        yaml.safe_dump(
            {
                "weights": "yolov5s.pt",
                "cfg": "",
                "data": "data/pets.yaml",
                "hyp": "data/hyps/hyp.scratch-low.yaml",
                "epochs": len(epochs),
                "batch_size": 16,
                "imgsz": 640,
                "save_period": 1 if saved else -1,
            }
        )
    )
    (run / "hyp.yaml").write_text(yaml.safe_dump({"lr0": 0.01, "lrf": 0.01}))
    (run / "results.csv").write_text(results_csv(YOLOV5_COLUMNS, epochs, 0, 20))
    best = max(range(len(epochs)), key=lambda index: (epochs[index].fitness, index))
    write_yolo_weights(run, best, len(epochs) - 1, saved, model)
    return run


# epoch -> (bbox_mAP, bbox_mAP_50): epoch 2 has the best mAP@0.5, epoch 3 the best mAP.
MMDET_VALIDATION = {1: (0.21, 0.45), 2: (0.30, 0.58), 3: (0.33, 0.55)}
MMDET_CONFIG = """\
model = dict(
    type='FasterRCNN',
    roi_head=dict(bbox_head=dict(type='Shared2FCBBoxHead', num_classes=2)))
dataset_type = 'CocoDataset'
data_root = 'data/pets/'
classes = ('person', 'cat')
data = dict(
    samples_per_gpu=2,
    train=dict(
        type='CocoDataset',
        classes=('person', 'cat'),
        ann_file='data/pets/annotations/train.json'))
evaluation = dict(interval=1, metric='bbox')
work_dir = './work_dirs/faster_rcnn_pets'
"""


def mmdet_run(
    project: Path,
    validation: dict[int, tuple[float, float]] | None = None,
    *,
    checkpoints: Sequence[int] = (1, 2, 3),
    config: str = MMDET_CONFIG,
) -> Path:
    """``project/work_dirs/faster_rcnn_pets``: epoch_N.pth, latest.pth -> the newest, the
    dumped config and one JSON log."""
    validation = MMDET_VALIDATION if validation is None else validation
    run = project / "work_dirs" / "faster_rcnn_pets"
    run.mkdir(parents=True)
    (run / "faster_rcnn_pets.py").write_text(config)
    lines = [{"env_info": "sys.platform: linux", "config": config, "seed": 0}]
    for epoch, (bbox_map, bbox_map_50) in sorted(validation.items()):
        lines.append({"mode": "train", "epoch": epoch, "iter": 50, "lr": 0.02, "loss": 0.9})
        lines.append(
            {
                "mode": "val",
                "epoch": epoch,
                "iter": 100,
                "lr": 0.02,
                "bbox_mAP": bbox_map,
                "bbox_mAP_50": bbox_map_50,
                "bbox_mAP_75": bbox_map / 2,
            }
        )
    (run / "20240301_101500.log.json").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for epoch in checkpoints:
        path = write_checkpoint(run / f"epoch_{epoch}.pth", None)
        set_mtime(path, BASE_TIME + 60 * epoch)
    (run / "latest.pth").symlink_to(f"epoch_{max(checkpoints)}.pth")
    return run


def mxnet_folder(folder: Path) -> Path:
    """The files of the example in YMIR's import guide."""
    folder.mkdir(parents=True)
    for name, seconds in [
        ("model-1000.params", 1655975204),
        ("model-2000.params", 1655975205),
        ("model-symbol.json", 1655975100),
    ]:
        (folder / name).write_bytes(os.urandom(3000))
        set_mtime(folder / name, seconds)
    return folder


GUIDE_FLAGS = (
    "--classes", "person,cat",
    "--stage", "stage_1000=model-1000.params,model-symbol.json",
    "--stage", "stage_2000=model-2000.params,model-symbol.json",
    "--mAP", "stage_1000=0.3", "--mAP", "stage_2000=0.6",
    "--metric", "stage_1000.mAR=0.6", "--metric", "stage_1000.tp=60",
    "--metric", "stage_1000.fp=30", "--metric", "stage_1000.fn=30",
    "--executor", "sample-executor", "--producer", "fenrir-z",
)  # fmt: skip


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folder`` with its size and mtime (links not followed): what a
    command that must write nothing leaves unchanged."""
    found = {}
    for path in [folder, *folder.rglob("*")]:
        status = path.lstat()
        found[str(path.relative_to(folder))] = (status.st_size, status.st_mtime_ns)
    return found


@dataclass(frozen=True)
class Packed:
    """What ``ymir-dropbox pack`` did, run in this process."""

    code: int
    out: str
    err: str

    @property
    def info(self) -> dict[str, Any]:
        """The ymir-info.yaml ``--dry-run`` printed."""
        document = yaml.safe_load(self.out)
        assert isinstance(document, dict), self.out
        return document


def pack(*arguments: str | Path, config: Path) -> Packed:
    """``ymir-dropbox pack ARGUMENTS --config CONFIG`` through the CLI's ``main``."""
    from ymir_dropbox.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["pack", *map(str, arguments), "--config", str(config)])
        except SystemExit as exit:  # argparse's own usage errors
            code = int(exit.code or 0)
    return Packed(code, out.getvalue(), err.getvalue())


def package_info(package: Path) -> dict[str, Any]:
    with tarfile.open(package) as archive:
        member = archive.extractfile("ymir-info.yaml")
        assert member is not None
        document = yaml.safe_load(member.read())
    assert isinstance(document, dict)
    return document


def package_members(package: Path) -> list[str]:
    with tarfile.open(package) as archive:
        return archive.getnames()
