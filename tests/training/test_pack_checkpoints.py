"""The model class of a PyTorch checkpoint, read from its pickle's opcodes and never unpickled:
it picks the executor of a YOLOv5 run."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
from training_runs import (
    DETECTION_MODEL,
    OLD_MODEL,
    ULTRALYTICS_MODEL,
    checkpoint_pickle,
    write_checkpoint,
)

from ymir_dropbox.training.checkpoints import checkpoint_classes, pickle_classes


@pytest.mark.parametrize("stack_global", [False, True], ids=["GLOBAL", "STACK_GLOBAL"])
@pytest.mark.parametrize(
    "model",
    [DETECTION_MODEL, OLD_MODEL, ULTRALYTICS_MODEL],
    ids=["yolov5-DetectionModel", "yolov5-Model", "ultralytics"],
)
def test_the_class_a_checkpoint_holds(
    model: tuple[str, str], stack_global: bool, tmp_path: Path
) -> None:
    path = write_checkpoint(tmp_path / "best.pt", model, stack_global=stack_global)

    assert checkpoint_classes(path) == {f"{model[0]} {model[1]}"}


def test_a_checkpoint_holding_no_object_names_no_class(tmp_path: Path) -> None:
    assert checkpoint_classes(write_checkpoint(tmp_path / "best.pt", None)) == frozenset()


def test_a_file_that_is_no_zip_checkpoint_names_no_class(tmp_path: Path) -> None:
    """PyTorch before 1.6 wrote a bare pickle stream: no class is claimed from it."""
    path = tmp_path / "best.pt"
    path.write_bytes(checkpoint_pickle(DETECTION_MODEL) + b"\x00" * 1024)

    assert checkpoint_classes(path) == frozenset()


def test_a_checkpoint_is_never_unpickled(tmp_path: Path) -> None:
    """A pickle that would run a command when loaded is only read: the command never runs."""
    marker = tmp_path / "ran"
    hostile = pickle.dumps(_RunsACommand(f"touch {marker}"), protocol=2)
    path = tmp_path / "best.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", hostile)

    classes = checkpoint_classes(path)

    assert classes == {"posix system"}
    assert not marker.exists()


def test_a_damaged_pickle_gives_what_came_before_the_damage() -> None:
    data = checkpoint_pickle(OLD_MODEL)

    assert pickle_classes(data[: data.index(b"epoch")]) == {"models.yolo Model"}


class _RunsACommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.system, (self.command,)
