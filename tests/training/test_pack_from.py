"""``pack --from``: ymir-info.yaml written from a training run, as each framework writes it.

Run folders are built in code (``training_runs``), with fake checkpoints; every command runs
through the CLI's ``main``. The real ``mir`` imports these packages in ``test_pack_into_mir``.
"""

from __future__ import annotations

import getpass
import socket
from pathlib import Path

import pytest
from factory import write_config
from training_runs import (
    BASE_TIME,
    DETECTION_MODEL,
    EPOCHS,
    MMDET_CONFIG,
    OLD_MODEL,
    mmdet_run,
    pack,
    package_info,
    package_members,
    tree,
    ultralytics_run,
    yolov5_run,
)

from ymir_dropbox.config import DEFAULTS

YOLOV5_IMAGE = DEFAULTS["pack"]["executor"]["yolov5"]
OLD_YOLOV5_IMAGE = DEFAULTS["pack"]["executor"]["yolov5_before_v6_2"]
MMDET_IMAGE = DEFAULTS["pack"]["executor"]["mmdet"]
OWN_IMAGE = "registry.example.org/team/yolov8-executor:1.0"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "config.toml", "box")


# -- ultralytics and YOLOv5 -------------------------------------------------------------------


def test_a_stage_per_weights_file_best_and_last_first_then_epochs_newest_first(
    tmp_path: Path, config: Path
) -> None:
    run = ultralytics_run(tmp_path / "project", saved=(0, 1, 2, 3))

    done = pack(run, "--from", "ultralytics", "--executor", OWN_IMAGE, "--dry-run", config=config)

    assert done.code == 0, done.err
    stages = done.info["stages"]
    assert list(stages) == ["best", "last", "epoch3", "epoch2", "epoch1", "epoch0"]
    assert {name: stage["files"] for name, stage in stages.items()} == {
        name: [f"{name}.pt"] for name in stages
    }
    assert all(stage["stage_name"] == name for name, stage in stages.items())


@pytest.mark.parametrize("framework", ["ultralytics", "yolov5"])
def test_best_is_the_epoch_of_the_highest_fitness_not_of_the_highest_map50(
    framework: str, tmp_path: Path, config: Path
) -> None:
    make = ultralytics_run if framework == "ultralytics" else yolov5_run
    run = make(tmp_path / "project", saved=(1,))

    info = pack(run, "--from", framework, "--executor", OWN_IMAGE, "--dry-run", config=config).info

    assert info["best_stage_name"] == "best"
    assert info["stages"]["best"]["mAP"] == EPOCHS[2].map50 == 0.64
    assert info["stages"]["epoch1"]["mAP"] == EPOCHS[1].map50 == 0.71  # higher, yet not best
    assert info["stages"]["last"]["mAP"] == EPOCHS[3].map50
    assert info["task_context"]["mAP"] == 0.64


@pytest.mark.parametrize("framework", ["ultralytics", "yolov5"])
def test_epoch_n_weights_have_the_metrics_of_their_own_epoch(
    framework: str, tmp_path: Path, config: Path
) -> None:
    """epoch0.pt is the first epoch: results.csv's row 1 in ultralytics, row 0 in YOLOv5."""
    make = ultralytics_run if framework == "ultralytics" else yolov5_run
    run = make(tmp_path / "project", saved=(0, 3))

    stages = pack(run, "--from", framework, "--executor", OWN_IMAGE, "--dry-run", config=config)
    info = stages.info["stages"]

    assert (info["epoch0"]["mAP"], info["epoch0"]["mAR"]) == (EPOCHS[0].map50, EPOCHS[0].recall)
    assert (info["epoch3"]["mAP"], info["epoch3"]["mAR"]) == (EPOCHS[3].map50, EPOCHS[3].recall)


@pytest.mark.parametrize("width", [23, 0], ids=["padded-headers", "plain-headers"])
def test_results_csv_headers_padded_or_not(width: int, tmp_path: Path, config: Path) -> None:
    run = ultralytics_run(tmp_path / "project", width=width)

    done = pack(run, "--from", "ultralytics", "--executor", OWN_IMAGE, "--dry-run", config=config)

    assert done.code == 0, done.err
    assert done.info["stages"]["best"]["mAP"] == 0.64


def test_each_stage_carries_its_recall_and_the_mtime_of_its_weights(
    tmp_path: Path, config: Path
) -> None:
    run = ultralytics_run(tmp_path / "project")

    info = pack(run, "--from", "ultralytics", "--executor", OWN_IMAGE, "--dry-run", config=config)

    best = info.info["stages"]["best"]
    assert best["mAR"] == EPOCHS[2].recall
    assert best["timestamp"] == BASE_TIME + 60 * 2
    assert info.info["stages"]["last"]["timestamp"] == BASE_TIME + 60 * 3


@pytest.mark.parametrize("as_mapping", [False, True], ids=["names-list", "names-mapping"])
def test_class_names_come_from_the_dataset_yaml_in_index_order(
    as_mapping: bool, tmp_path: Path, config: Path
) -> None:
    run = ultralytics_run(tmp_path / "project", as_mapping=as_mapping)
    if as_mapping:  # indexes out of order in the file: the order is the indexes'
        (tmp_path / "project" / "pets.yaml").write_text("names:\n  2: dog\n  0: person\n  1: cat\n")
    expected = ["person", "cat", "dog"] if as_mapping else ["person", "cat"]

    info = pack(run, "--from", "ultralytics", "--executor", OWN_IMAGE, "--dry-run", config=config)

    assert info.info["executor_config"]["class_names"] == expected


def test_classes_on_the_command_line_when_the_dataset_yaml_is_elsewhere(
    tmp_path: Path, config: Path
) -> None:
    run = ultralytics_run(tmp_path / "project")
    (tmp_path / "project" / "pets.yaml").unlink()

    done = pack(
        run,
        "--from",
        "ultralytics",
        "--classes",
        "dog,cat",
        "--executor",
        OWN_IMAGE,
        "--dry-run",
        config=config,
    )

    assert done.code == 0, done.err
    assert done.info["executor_config"]["class_names"] == ["dog", "cat"]


def test_the_rest_of_the_document(tmp_path: Path, config: Path) -> None:
    run = ultralytics_run(tmp_path / "project")

    info = pack(run, "--from", "ultralytics", "--executor", OWN_IMAGE, "--dry-run", config=config)

    assert info.info["package_version"] == "2.0.0"
    assert info.info["object_type"] == 2
    assert info.info["executor_config"]["img_size"] == 640
    assert info.info["attachments"] == {"run": ["results.csv", "args.yaml"]}
    assert info.info["task_context"] == {
        "executor": OWN_IMAGE,
        "producer": f"{getpass.getuser()}@{socket.gethostname()}",
        "mAP": 0.64,
    }


@pytest.mark.parametrize(
    ("model", "image"),
    [(DETECTION_MODEL, YOLOV5_IMAGE), (OLD_MODEL, OLD_YOLOV5_IMAGE)],
    ids=["DetectionModel-v6.2+", "Model-before-v6.2"],
)
def test_yolov5_executor_follows_the_checkpoint_model_class(
    model: tuple[str, str], image: str, tmp_path: Path, config: Path
) -> None:
    run = yolov5_run(tmp_path / "yolov5", model=model)

    done = pack(run, "--from", "yolov5", "--dry-run", config=config)

    assert done.code == 0, done.err
    assert done.info["task_context"]["executor"] == image


def test_executor_and_producer_defaults_from_the_config(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.toml",
        "box",
        f'[pack]\nproducer = "vision-team"\n[pack.executor]\nultralytics = "{OWN_IMAGE}"\n',
    )
    run = ultralytics_run(tmp_path / "project")

    done = pack(run, "--from", "ultralytics", "--dry-run", config=config)

    assert done.code == 0, done.err
    assert done.info["task_context"]["executor"] == OWN_IMAGE
    assert done.info["task_context"]["producer"] == "vision-team"


def test_at_most_eleven_stages_the_oldest_epochs_left_out(tmp_path: Path, config: Path) -> None:
    epochs = [EPOCHS[index % 4] for index in range(12)]
    run = ultralytics_run(tmp_path / "project", epochs, saved=range(12))

    done = pack(run, "--from", "ultralytics", "--executor", OWN_IMAGE, "--dry-run", config=config)

    assert list(done.info["stages"]) == ["best", "last", *(f"epoch{n}" for n in range(11, 2, -1))]
    assert "epoch2, epoch1, epoch0" in done.err


# -- mmdetection 2.x --------------------------------------------------------------------------


def test_mmdet_a_stage_per_epoch_each_with_the_config(tmp_path: Path, config: Path) -> None:
    run = mmdet_run(tmp_path / "mmdetection")

    done = pack(run, "--from", "mmdet", "--dry-run", config=config)

    assert done.code == 0, done.err
    stages = done.info["stages"]
    assert list(stages) == ["epoch_3", "epoch_2", "epoch_1"]  # latest.pth is no stage
    assert stages["epoch_2"]["files"] == ["epoch_2.pth", "faster_rcnn_pets.py"]
    assert stages["epoch_2"]["timestamp"] == BASE_TIME + 120
    assert done.info["task_context"]["executor"] == MMDET_IMAGE
    assert done.info["attachments"] == {"run": ["20240301_101500.log.json"]}


def test_mmdet_best_is_the_highest_map50_not_the_highest_map(tmp_path: Path, config: Path) -> None:
    run = mmdet_run(tmp_path / "mmdetection")

    info = pack(run, "--from", "mmdet", "--dry-run", config=config).info

    assert info["best_stage_name"] == "epoch_2"
    assert [info["stages"][f"epoch_{n}"]["mAP"] for n in (1, 2, 3)] == [0.45, 0.58, 0.55]
    assert info["task_context"]["mAP"] == 0.58


WRAPPED_CLASSES = (
    MMDET_CONFIG.replace("classes = ('person', 'cat')\n", "")
    .replace(
        "    train=dict(\n        type='CocoDataset',",
        "    train=dict(\n        type='RepeatDataset',\n        times=3,\n        dataset=dict(",
    )
    .replace("train.json'))", "train.json')))")
)


@pytest.mark.parametrize(
    "config_text", [MMDET_CONFIG, WRAPPED_CLASSES], ids=["top-level", "data.train.dataset"]
)
def test_mmdet_class_names_from_the_config(config_text: str, tmp_path: Path, config: Path) -> None:
    run = mmdet_run(tmp_path / "mmdetection", config=config_text)

    info = pack(run, "--from", "mmdet", "--dry-run", config=config).info

    assert info["executor_config"]["class_names"] == ["person", "cat"]


def test_mmdet_an_epoch_never_validated_is_left_out_with_a_note(
    tmp_path: Path, config: Path
) -> None:
    run = mmdet_run(tmp_path / "mmdetection", {1: (0.2, 0.4), 3: (0.3, 0.5)}, checkpoints=(1, 2, 3))

    done = pack(run, "--from", "mmdet", "--dry-run", config=config)

    assert list(done.info["stages"]) == ["epoch_3", "epoch_1"]
    assert "epoch_2.pth: no validation of epoch 2" in done.err


# -- writing ----------------------------------------------------------------------------------


def test_the_package_holds_each_stage_under_its_name_and_the_rest_as_attachments(
    tmp_path: Path, config: Path
) -> None:
    run = mmdet_run(tmp_path / "mmdetection")
    before = tree(run)
    (tmp_path / "out").mkdir()
    output = tmp_path / "out" / "model.tar.gz"

    done = pack(run, "--from", "mmdet", "-o", output, config=config)

    assert done.code == 0, done.err
    assert package_members(output) == [
        "ymir-info.yaml",
        *(f"epoch_{n}/{name}" for n in (1, 2, 3) for name in (f"epoch_{n}.pth", run.name + ".py")),
        "attachments/run/20240301_101500.log.json",
    ]
    assert (output.parent / "epoch_3/epoch_3.pth").exists() is False
    assert package_info(output)["best_stage_name"] == "epoch_2"
    assert tree(run) == before  # nothing written into the run
    assert sorted(path.name for path in output.parent.iterdir()) == ["model.tar.gz"]


def test_dry_run_prints_the_document_and_writes_nothing(tmp_path: Path, config: Path) -> None:
    run = yolov5_run(tmp_path / "yolov5")
    before = tree(tmp_path)

    done = pack(
        run, "--from", "yolov5", "-o", tmp_path / "model.tar.gz", "--dry-run", config=config
    )

    assert done.code == 0, done.err
    assert done.info["best_stage_name"] == "best"
    assert tree(tmp_path) == before


def test_a_run_without_recall_gives_no_mAR(tmp_path: Path, config: Path) -> None:
    run = yolov5_run(tmp_path / "yolov5")
    rows = [line.split(",") for line in (run / "results.csv").read_text().splitlines()]
    (run / "results.csv").write_text("".join(",".join(row[:5] + row[6:]) + "\n" for row in rows))

    done = pack(run, "--from", "yolov5", "--dry-run", config=config)

    assert done.code == 0, done.err
    assert "mAR" not in done.info["stages"]["best"]
    assert done.info["stages"]["best"]["mAP"] == 0.64


@pytest.mark.parametrize("framework", ["ultralytics", "yolov5"])
def test_a_run_of_one_epoch_is_best_and_last(framework: str, tmp_path: Path, config: Path) -> None:
    make = ultralytics_run if framework == "ultralytics" else yolov5_run
    run = make(tmp_path / "project", EPOCHS[:1], saved=(0,))

    stages = pack(run, "--from", framework, "--executor", OWN_IMAGE, "--dry-run", config=config)

    assert {name: stage["mAP"] for name, stage in stages.info["stages"].items()} == {
        "best": 0.35,
        "last": 0.35,
        "epoch0": 0.35,
    }
