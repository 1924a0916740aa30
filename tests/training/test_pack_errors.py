"""``pack --from`` and ``pack --stage`` refuse bad input as a usage error (exit 2) that names
the file and what is missing, and write nothing at all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from factory import write_config
from training_runs import (
    GUIDE_FLAGS,
    MMDET_CONFIG,
    mmdet_run,
    mxnet_folder,
    pack,
    tree,
    ultralytics_run,
    yolov5_run,
)

OWN_IMAGE = "registry.example.org/team/yolov8-executor:1.0"


@dataclass(frozen=True)
class Bad:
    """A run or a command line that cannot make a package, and what the message must say."""

    id: str
    arguments: Callable[[Path], list[str | Path]]  # built in the given folder
    says: tuple[str, ...]


def ultralytics(project: Path) -> Path:
    return ultralytics_run(project)


def without_weights(project: Path) -> list[str | Path]:
    run = ultralytics(project)
    for path in (run / "weights").iterdir():
        path.unlink()
    return [run, "--from", "ultralytics", "--executor", OWN_IMAGE]


def without_map50_95(project: Path) -> list[str | Path]:
    run = ultralytics(project)
    rows = [line.split(",") for line in (run / "results.csv").read_text().splitlines()]
    (run / "results.csv").write_text("".join(",".join(row[:7]) + "\n" for row in rows))
    return [run, "--from", "ultralytics", "--executor", OWN_IMAGE]


def without_dataset_yaml(project: Path) -> list[str | Path]:
    run = ultralytics(project)
    (project / "pets.yaml").unlink()
    return [run, "--from", "ultralytics", "--executor", OWN_IMAGE]


def voc_metrics(run: Path) -> Path:
    """The log of a run evaluated with VOC's metric: ``AP50``, not ``bbox_mAP_50``."""
    log = run / "20240301_101500.log.json"
    log.write_text(log.read_text().replace('"bbox_mAP_50"', '"AP50"'))
    return run


def guide(*flags: str) -> Callable[[Path], list[str | Path]]:
    """The example of YMIR's import guide, with ``flags`` instead of its own."""

    def arguments(project: Path) -> list[str | Path]:
        return [mxnet_folder(project / "mxnet"), *flags]

    return arguments


CLASSES = ("--classes", "person,cat")
CASES = [
    Bad("run-without-weights", without_weights, ("weights", "no best.pt, last.pt")),
    Bad("results-without-a-metric", without_map50_95, ("results.csv", "'metrics/mAP50-95(B)'")),
    Bad(
        "a-yolov5-run-read-as-ultralytics",
        lambda project: [yolov5_run(project), "--from", "ultralytics", "--executor", OWN_IMAGE],
        ("results.csv", "'metrics/mAP50(B)'", "use --from yolov5"),
    ),
    Bad("class-names-not-found", without_dataset_yaml, ("'pets.yaml'", "pass --classes")),
    Bad(
        "mmdet-config-without-classes",
        lambda project: [
            mmdet_run(project, config=MMDET_CONFIG.replace("classes", "labels")),
            "--from",
            "mmdet",
        ],
        ("faster_rcnn_pets.py", "no `classes`", "pass --classes"),
    ),
    Bad(
        "mmdet-log-without-map50",
        lambda project: [voc_metrics(mmdet_run(project)), "--from", "mmdet"],
        ("20240301_101500.log.json", 'no validation line ("mode": "val") with bbox_mAP_50', "AP50"),
    ),
    Bad("unknown-framework", lambda project: [project, "--from", "keras"], ("invalid choice",)),
    Bad(
        "ultralytics-without-an-executor",
        lambda project: [ultralytics(project), "--from", "ultralytics"],
        ("no published YMIR executor image loads ultralytics checkpoints", "--executor"),
    ),
    Bad(
        "yolov5-checkpoint-of-an-unknown-model",
        lambda project: [yolov5_run(project, model=None), "--from", "yolov5"],
        ("best.pt", "cannot tell which YOLOv5", "--executor"),
    ),
    Bad(
        "stage-file-that-does-not-exist",
        guide(*CLASSES, "--stage", "stage_3000=model-3000.params", "--mAP", "stage_3000=0.5"),
        ("model-3000.params", "does not exist"),
    ),
    Bad(
        "mAP-of-a-stage-never-named",
        guide(*GUIDE_FLAGS, "--mAP", "stage_3000=0.7"),
        ("--mAP stage_3000=0.7", "'stage_3000' is not named by any --stage"),
    ),
    Bad(
        "stage-name-ymir-refuses",
        guide(*CLASSES, "--stage", "stage-1=model-1000.params", "--mAP", "stage-1=0.3"),
        ("'stage-1'", "Python identifier", "'stage_1'"),
    ),
    Bad(
        "stage-without-mAP",
        guide(*CLASSES, "--stage", "stage_1000=model-1000.params"),
        ("stage stage_1000 has no mAP", "--mAP stage_1000=VALUE"),
    ),
    Bad(
        "stage-without-classes",
        guide("--stage", "stage_1000=model-1000.params", "--mAP", "stage_1000=0.3"),
        ("--classes",),
    ),
    Bad(
        "mAP-out-of-range",
        guide(*CLASSES, "--stage", "stage_1000=model-1000.params", "--mAP", "stage_1000=30"),
        ("mAP is a number from 0 to 1, not '30'",),
    ),
    Bad(
        "metric-ymir-does-not-know",
        guide(*GUIDE_FLAGS, "--metric", "stage_1000.recall=0.5"),
        ("'recall' is not a metric YMIR keeps",),
    ),
    Bad(
        "output-inside-the-run",
        lambda project: [
            ultralytics(project),
            "--from",
            "ultralytics",
            "--executor",
            OWN_IMAGE,
            "-o",
            project / "runs" / "detect" / "train3" / "model.tar.gz",
        ],
        ("pack never writes into the folder it reads",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_a_usage_error_naming_the_problem_and_nothing_is_written(
    case: Bad, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.toml", "box")
    arguments = case.arguments(tmp_path / "project")
    if "-o" not in arguments:
        arguments += ["-o", tmp_path / "model.tar.gz"]
    before = tree(tmp_path)

    done = pack(*arguments, config=config)

    assert done.code == 2, (done.out, done.err)
    assert "ymir-dropbox pack: usage error: " in done.err
    for words in case.says:
        assert words in done.err
    assert tree(tmp_path) == before
