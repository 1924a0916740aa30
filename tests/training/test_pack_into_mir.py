"""What ``pack`` writes, the real ``mir models`` of ymir-cmd 2.3.0 imports as it is (no daemon
in between): one package per framework and the example of YMIR's import guide, each packed
by the ``ymir-dropbox`` command and imported once into one mir repository."""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import mir_executable
from factory import run_dropbox, write_config
from training_runs import GUIDE_FLAGS, mmdet_run, mxnet_folder, ultralytics_run, yolov5_run

pytestmark = [pytest.mark.mir, pytest.mark.xdist_group("pack-into-mir")]

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "tests",
    "GIT_AUTHOR_EMAIL": "tests@localhost",
    "GIT_COMMITTER_NAME": "tests",
    "GIT_COMMITTER_EMAIL": "tests@localhost",
}
PACK_SUCCESS = re.compile(r"Pack success, model hash: ([0-9a-f]{40})")
OWN_IMAGE = "registry.example.org/team/yolov8-executor:1.0"
# name: (make the run folder, pack's flags, best stage, its mAP, the stored files)
PACKAGES: dict[str, tuple[Any, tuple[str, ...], str, float, set[str]]] = {
    "ultralytics": (
        lambda root: ultralytics_run(root, saved=(1,)),
        ("--from", "ultralytics", "--executor", OWN_IMAGE),
        "best",
        0.64,
        {"best/best.pt", "last/last.pt", "epoch1/epoch1.pt", "attachments/run/args.yaml"},
    ),
    "yolov5": (
        yolov5_run,
        ("--from", "yolov5"),
        "best",
        0.64,
        {"best/best.pt", "last/last.pt", "attachments/run/hyp.yaml"},
    ),
    "mmdet": (
        mmdet_run,
        ("--from", "mmdet"),
        "epoch_2",
        0.58,
        {"epoch_2/epoch_2.pth", "epoch_2/faster_rcnn_pets.py", "epoch_3/faster_rcnn_pets.py"},
    ),
    "import-guide": (
        lambda root: mxnet_folder(root / "mxnet"),
        GUIDE_FLAGS,
        "stage_2000",
        0.6,
        {"stage_1000/model-symbol.json", "stage_2000/model-2000.params"},
    ),
}


def mir(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(mir_executable()), *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_IDENTITY},
        timeout=120,
    )


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each package packed by the command, then imported with `mir models`; what mir stored."""
    root = tmp_path_factory.mktemp("mir")
    assert mir("init", "--root", str(root / "repo"), cwd=root).returncode == 0
    config = write_config(root / "config.toml", "box")
    results = {}
    for name, (make, flags, *_) in PACKAGES.items():
        package = root / f"{name}.tar.gz"
        packed = run_dropbox("pack", make(root / name), *flags, "-o", package, "--config", config,
                             cwd=root)  # fmt: skip
        assert packed.returncode == 0, packed.stderr
        done = mir("models", "--package-path", str(package), "--root", str(root / "repo"),
                   "--dst-rev", f"{name}@{name}", "--model-location", str(root / "models"),
                   "-w", str(root / "work" / name), cwd=root)  # fmt: skip
        results[name] = {"returncode": done.returncode, "log": done.stdout + done.stderr}
        stored = PACK_SUCCESS.search(done.stdout + done.stderr)
        if done.returncode == 0 and stored:
            results[name].update(_read_stored(root / "models" / stored.group(1)))
    return results


def _read_stored(path: Path) -> dict[str, Any]:
    """The stored model, as YMIR reads it back."""
    with tarfile.open(path) as archive:
        member = archive.extractfile("ymir-info.yaml")
        assert member is not None
        return {"info": yaml.safe_load(member.read()), "members": set(archive.getnames())}


@pytest.mark.parametrize("name", list(PACKAGES))
def test_mir_imports_the_package_with_its_best_stage_and_mAP(
    name: str, imported: dict[str, dict[str, Any]]
) -> None:
    _, _, best, mAP, files = PACKAGES[name]
    result = imported[name]

    assert result["returncode"] == 0, result["log"][-3000:]
    info = result["info"]
    assert info["best_stage_name"] == best
    assert info["stages"][best]["mAP"] == mAP
    assert files <= result["members"]
    assert info["package_version"] == "2.0.0"
