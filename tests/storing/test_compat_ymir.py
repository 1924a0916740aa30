"""Compatibility: what the embedded backend stores, the real YMIR code (ymir-cmd 2.3.0) reads.

Every valid package the factory makes is imported with the embedded backend; then YMIR's own
``ModelStorage`` parses the stored ``ymir-info.yaml`` and ``prepare_model`` unpacks every stage,
in the mir virtualenv, exactly as YMIR does before training, mining or inference.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conftest import mir_executable
from factory import VALID_PACKAGES, seed_info, seed_package

from ymir_dropbox.config import load_config
from ymir_dropbox.storing.backends import make_backend
from ymir_dropbox.storing.importer import Importer
from ymir_dropbox.storing.ledger import Ledger

pytestmark = [pytest.mark.mir, pytest.mark.xdist_group("compat-ymir")]

# Run with the mir venv's python; one line "RESULT {json}" per stored model (mir logs to stdout).
CHECK_WITH_YMIR = r"""
import hashlib, json, os, sys, tarfile, tempfile, traceback
import yaml
from google.protobuf import json_format
from mir.tools import models
from mir.tools.mir_storage import sha1sum_for_file
from mir.tools.model_updater import update_model_info


def check(path):
    location, model_hash = os.path.split(os.path.abspath(path))
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(path, "r") as tar:
            tar.extract("ymir-info.yaml", tmp)
        info = os.path.join(tmp, "ymir-info.yaml")
        update_model_info(info)
        with open(info) as stream:
            storage = models.ModelStorage.parse_obj(yaml.safe_load(stream))
        arrived = {}
        for stage_name in storage.stages:
            dst = os.path.join(tmp, "unpacked-" + stage_name)
            prepared = models.prepare_model(location, model_hash, stage_name, dst)
            arrived[stage_name] = {}
            for name in prepared.stages[stage_name].files:
                found = None
                for candidate in (os.path.join(dst, stage_name, name), os.path.join(dst, name)):
                    if os.path.isfile(candidate):
                        with open(candidate, "rb") as stream:
                            found = hashlib.sha256(stream.read()).hexdigest()
                        break
                arrived[stage_name][name] = found
        storage.model_hash = model_hash
        meta = json_format.MessageToDict(storage.get_model_meta())
        return {
            "sha1_matches_name": sha1sum_for_file(path) == model_hash,
            "best_stage_name": storage.best_stage_name,
            "class_names": storage.class_names,
            "object_type": storage.object_type,
            "package_version": storage.package_version,
            "mAP": storage.stages[storage.best_stage_name].mAP,
            "counts": {k: [v.tp, v.fp, v.fn] for k, v in storage.stages.items()},
            "attachments": storage.attachments,
            "arrived": arrived,
            "meta_class_names": meta.get("classNames"),
        }


for path in sys.argv[1:]:
    try:
        result = {"path": path, "ok": True, **check(path)}
    except BaseException:
        result = {"path": path, "ok": False, "error": traceback.format_exc()}
    print("RESULT " + json.dumps(result), flush=True)
"""


def package_files(package: Path) -> dict[str, bytes]:
    with tarfile.open(package, "r:gz") as tar:
        return {
            member.name.removeprefix("./"): tar.extractfile(member).read()  # type: ignore[union-attr]
            for member in tar.getmembers()
            if member.isreg()
        }


def expected_arrivals(package: Path, stages: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The sha256 of every stage file as YMIR must unpack it (stage folder first, then root)."""
    files = package_files(package)
    expected: dict[str, dict[str, str]] = {}
    for stage_name, stage in stages.items():
        expected[stage_name] = {}
        for name in stage["files"]:
            data = files.get(f"{stage_name}/{name}", files.get(name))
            assert data is not None
            expected[stage_name][name] = hashlib.sha256(data).hexdigest()
    return expected


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Import each valid package into a box of its own, then check all with YMIR's code."""
    python = mir_executable().parent / "python"
    imported: dict[str, Any] = {}
    for name, build in VALID_PACKAGES.items():
        root = tmp_path_factory.mktemp(f"compat-{name}")
        (root / "config.toml").write_text(
            'base_dir = "box"\n[log]\nformat = "json"\nlevel = "error"\n'
        )
        config = load_config(root / "config.toml")
        config.ensure_folders()
        package = build(root / f"{name}.tar.gz")
        ledger = Ledger(config.paths.ledger)
        attempt = ledger.begin(package=package.name)
        outcome = Importer(config, ledger, make_backend(config)).run(package, attempt)
        assert outcome.status == "imported", outcome.errors
        assert outcome.result is not None and outcome.report is not None
        imported[name] = {
            "package": package,
            "stored": outcome.result.stored_path,
            "normalized": outcome.report.normalized,
        }
    done = subprocess.run(
        [str(python), "-c", CHECK_WITH_YMIR, *(str(item["stored"]) for item in imported.values())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    results = {
        line["path"]: line
        for line in (
            json.loads(text.removeprefix("RESULT "))
            for text in done.stdout.splitlines()
            if text.startswith("RESULT ")
        )
    }
    for item in imported.values():
        item["ymir"] = results.get(str(item["stored"]), {"ok": False, "error": done.stderr})
    return imported


NAMES = sorted(VALID_PACKAGES)


@pytest.mark.parametrize("name", NAMES)
def test_ymir_reads_the_stored_model(name: str, checked: dict[str, Any]) -> None:
    ymir = checked[name]["ymir"]

    assert ymir["ok"], ymir.get("error")
    assert ymir["sha1_matches_name"] is True
    assert ymir["package_version"] == "2.0.0"


@pytest.mark.parametrize("name", NAMES)
def test_ymir_unpacks_every_stage_file_with_its_bytes(name: str, checked: dict[str, Any]) -> None:
    item = checked[name]
    ymir = item["ymir"]
    assert ymir["ok"], ymir.get("error")

    expected = expected_arrivals(item["package"], item["normalized"]["stages"])

    assert ymir["arrived"] == expected


@pytest.mark.parametrize("name", NAMES)
def test_ymir_sees_the_same_model_as_the_dropbox(name: str, checked: dict[str, Any]) -> None:
    item = checked[name]
    ymir, normalized = item["ymir"], item["normalized"]
    assert ymir["ok"], ymir.get("error")

    best = normalized["stages"][normalized["best_stage_name"]]
    assert ymir["best_stage_name"] == normalized["best_stage_name"]
    assert ymir["mAP"] == best["mAP"]
    assert ymir["class_names"] == normalized["executor_config"]["class_names"]
    assert ymir["meta_class_names"] == normalized["executor_config"]["class_names"]
    assert ymir["object_type"] == normalized["object_type"]
    assert ymir["attachments"] == normalized["attachments"]


def test_ymir_reads_the_seed_counts_it_would_have_dropped(checked: dict[str, Any]) -> None:
    ymir = checked["seed-TP-FP-FN"]["ymir"]
    assert ymir["ok"], ymir.get("error")

    assert ymir["counts"] == {"stage_1000": [60, 30, 30], "stage_2000": [70, 20, 10]}


def test_ymir_treats_object_type_0_as_detection(checked: dict[str, Any]) -> None:
    ymir = checked["object-type-0"]["ymir"]
    assert ymir["ok"], ymir.get("error")

    assert ymir["object_type"] == 2


def run_ymir_check(*stored: Path) -> dict[str, Any]:
    python = mir_executable().parent / "python"
    done = subprocess.run(
        [str(python), "-c", CHECK_WITH_YMIR, *map(str, stored)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [text for text in done.stdout.splitlines() if text.startswith("RESULT ")]
    assert lines, done.stderr
    result: dict[str, Any] = json.loads(lines[0].removeprefix("RESULT "))
    return result


@pytest.mark.parametrize("reserved", ["ymir-info.yaml", "attachments"])
def test_a_stage_named_like_what_the_stored_package_uses_itself_is_refused(
    tmp_path: Path, reserved: str
) -> None:
    """YMIR would read such a stage's folder as its own info file or attachments: refuse it."""
    info = seed_info()
    stage = info["stages"].pop("stage_1000")
    stage["stage_name"] = reserved
    info["stages"][reserved] = stage
    info["best_stage_name"] = reserved
    (tmp_path / "config.toml").write_text('base_dir = "box"\n[log]\nlevel = "error"\n')
    config = load_config(tmp_path / "config.toml")
    config.ensure_folders()
    package = seed_package(tmp_path / "p.tar.gz", info)
    ledger = Ledger(config.paths.ledger)

    outcome = Importer(config, ledger, make_backend(config)).run(
        package, ledger.begin(package=package.name)
    )

    assert outcome.status == "failed"
    assert ("info.bad_file_name", f"stages.{reserved}") in {
        (problem.code, problem.field) for problem in outcome.errors
    }
    assert list(config.paths.models.iterdir()) == []


def test_stored_attachments_are_where_ymir_looks(checked: dict[str, Any]) -> None:
    stored = checked["attachments"]["stored"]

    with tarfile.open(stored, "r") as tar:
        names = tar.getnames()
        data = tar.extractfile("attachments/configs/infer.yaml").read()  # type: ignore[union-attr]
    assert {"attachments/images/a.jpg", "attachments/images/b.jpg"} <= set(names)
    assert data == b"conf_thr: 0.3\n"
