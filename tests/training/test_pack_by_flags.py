"""``pack DIR --stage ...``: any other layout, described on the command line, such as the
example in YMIR's import guide (an mxnet run); and ``pack DIR`` with its own ymir-info.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
from factory import seed_info, write_config
from training_runs import GUIDE_FLAGS, mxnet_folder, pack, package_members, tree

from ymir_dropbox.reading.archive import INFO_NAME

# The guide's ymir-info.yaml, in the 2.0.0 form: with the package_version whose absence
# makes real `mir models` 2.3.0 crash, the object type, and tp/fp/fn as YMIR spells them.
GUIDE_INFO = {
    "package_version": "2.0.0",
    "object_type": 2,
    "executor_config": {"class_names": ["person", "cat"]},
    "stages": {
        "stage_1000": {
            "stage_name": "stage_1000",
            "files": ["model-1000.params", "model-symbol.json"],
            "mAP": 0.3,
            "mAR": 0.6,
            "tp": 60,
            "fp": 30,
            "fn": 30,
            "timestamp": 1655975204,
        },
        "stage_2000": {
            "stage_name": "stage_2000",
            "files": ["model-2000.params", "model-symbol.json"],
            "mAP": 0.6,
            "timestamp": 1655975205,
        },
    },
    "best_stage_name": "stage_2000",
    "task_context": {"executor": "sample-executor", "producer": "fenrir-z", "mAP": 0.6},
}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "config.toml", "box")


def test_the_guide_example_by_flags_gives_the_guide_document(tmp_path: Path, config: Path) -> None:
    """Timestamps are each stage's newest file: the guide's own, read off `ls` by hand."""
    folder = mxnet_folder(tmp_path / "mxnet")

    done = pack(folder, *GUIDE_FLAGS, "--dry-run", config=config)

    assert done.code == 0, done.err
    assert done.info == GUIDE_INFO


def test_the_guide_example_packs_each_stage_under_its_name(tmp_path: Path, config: Path) -> None:
    folder = mxnet_folder(tmp_path / "mxnet")
    output = tmp_path / "model.tar.gz"

    done = pack(folder, *GUIDE_FLAGS, "-o", output, config=config)

    assert done.code == 0, done.err
    assert "best_stage_name: stage_2000, mAP: 0.6" in done.out
    assert package_members(output) == [
        INFO_NAME,
        "stage_1000/model-1000.params",
        "stage_1000/model-symbol.json",
        "stage_2000/model-2000.params",
        "stage_2000/model-symbol.json",
    ]


def test_best_is_the_highest_mAP_unless_named(tmp_path: Path, config: Path) -> None:
    folder = mxnet_folder(tmp_path / "mxnet")

    done = pack(folder, *GUIDE_FLAGS, "--best", "stage_1000", "--dry-run", config=config)

    assert done.info["best_stage_name"] == "stage_1000"
    assert done.info["task_context"]["mAP"] == 0.3


def test_without_an_executor_the_package_says_none_and_the_user_hears_why(
    tmp_path: Path, config: Path
) -> None:
    folder = mxnet_folder(tmp_path / "mxnet")
    flags = list(GUIDE_FLAGS)
    del flags[flags.index("--executor") : flags.index("--executor") + 2]

    done = pack(folder, *flags, "--dry-run", config=config)

    assert done.code == 0, done.err
    assert "executor" not in done.info["task_context"]
    assert "no --executor" in done.err


def test_a_folder_with_its_own_info_is_shown_as_it_is_by_dry_run(
    tmp_path: Path, config: Path
) -> None:
    folder = mxnet_folder(tmp_path / "mxnet")
    (folder / INFO_NAME).write_text("best_stage_name: stage_2000\n")
    before = tree(tmp_path)

    done = pack(folder, "--dry-run", config=config)

    assert (done.code, done.out) == (0, "best_stage_name: stage_2000\n")
    assert tree(tmp_path) == before


def test_a_folder_with_its_own_info_takes_no_description(tmp_path: Path, config: Path) -> None:
    folder = mxnet_folder(tmp_path / "mxnet")
    (folder / INFO_NAME).write_text(str(seed_info()))

    done = pack(folder, "--executor", "x", "-o", tmp_path / "model.tar.gz", config=config)

    assert done.code == 2
    assert "is packed as it is" in done.err
    assert not (tmp_path / "model.tar.gz").exists()


def test_a_folder_without_info_or_description_says_how_to_describe_it(
    tmp_path: Path, config: Path
) -> None:
    folder = mxnet_folder(tmp_path / "mxnet")

    done = pack(folder, "--dry-run", config=config)

    assert done.code == 2
    assert "--from FRAMEWORK, or with --stage" in done.err


def test_an_existing_package_is_never_overwritten(tmp_path: Path, config: Path) -> None:
    folder = mxnet_folder(tmp_path / "mxnet")
    output = tmp_path / "model.tar.gz"
    assert pack(folder, *GUIDE_FLAGS, "-o", output, config=config).code == 0
    before = tree(tmp_path)

    done = pack(folder, *GUIDE_FLAGS, "--best", "stage_1000", "-o", output, config=config)

    assert done.code == 1
    assert "already exists" in done.err
    assert tree(tmp_path) == before
