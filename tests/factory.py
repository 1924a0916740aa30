"""Small factories that build model packages in code: the seed's example, legacy, YMIR layout."""

from __future__ import annotations

import copy
import functools
import io
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SEED_INFO: dict[str, Any] = {
    "executor_config": {"class_names": ["person", "cat"]},
    "stages": {
        "stage_1000": {
            "files": ["model-1000.params", "model-symbol.json"],
            "mAP": 0.3,
            "mAR": 0.6,
            "TP": 60,
            "FP": 30,
            "FN": 30,
            "stage_name": "stage_1000",
            "timestamp": 1655975204,
        },
        "stage_2000": {
            "files": ["model-2000.params", "model-symbol.json"],
            "mAP": 0.6,
            "stage_name": "stage_2000",
            "timestamp": 1655975205,
        },
    },
    "best_stage_name": "stage_2000",
    "task_context": {"executor": "sample-executor", "mAP": 0.6, "producer": "fenrir-z"},
}

LEGACY_INFO: dict[str, Any] = {
    "executor_config": {"class_names": ["person"]},
    "models": ["model-1000.params", "model-symbol.json"],
    "task_context": {"mAP": 0.42, "producer": "fenrir-z"},
}


def seed_info() -> dict[str, Any]:
    return copy.deepcopy(SEED_INFO)


def legacy_info() -> dict[str, Any]:
    return copy.deepcopy(LEGACY_INFO)


def file_bytes(name: str, size: int = 2048) -> bytes:
    """Deterministic content standing in for model weights."""
    seed = name.encode()
    return (seed * (size // max(len(seed), 1) + 1))[:size]


@dataclass
class Entry:
    """One tar member to write; `kind` is a tarfile type, data for regular files."""

    name: str
    data: bytes = b""
    kind: bytes = tarfile.REGTYPE
    linkname: str = ""
    mtime: int = 1655975300
    size: int | None = None


@dataclass
class PackageSpec:
    entries: list[Entry] = field(default_factory=list)

    def add(self, name: str, data: bytes | str = b"", **options: Any) -> PackageSpec:
        if isinstance(data, str):
            data = data.encode()
        self.entries.append(Entry(name, data, **options))
        return self


def info_yaml(info: Any) -> bytes:
    return yaml.safe_dump(info, sort_keys=False).encode()


def tar_bytes(entries: Iterable[Entry], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = entry.kind
            info.mtime = entry.mtime
            info.linkname = entry.linkname
            if entry.kind == tarfile.REGTYPE:
                info.size = len(entry.data) if entry.size is None else entry.size
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, mtime=0)


def write_package(path: Path, entries: Iterable[Entry]) -> Path:
    path.write_bytes(gzip_bytes(tar_bytes(entries)))
    return path


@functools.cache
def _seed_yaml() -> bytes:
    """The seed's ymir-info.yaml, made once: the bursts build hundreds of packages from it."""
    return info_yaml(seed_info())


def seed_entries(info: dict[str, Any] | None = None, *, info_last: bool = True) -> list[Entry]:
    """The seed's example: every file at the root, ymir-info.yaml last (as `tar -czvf` made it)."""
    names = ["model-1000.params", "model-2000.params", "model-symbol.json"]
    entries = [Entry(name, file_bytes(name)) for name in names]
    document = Entry("ymir-info.yaml", _seed_yaml() if info is None else info_yaml(info))
    return [*entries, document] if info_last else [document, *entries]


def seed_package(path: Path, info: dict[str, Any] | None = None) -> Path:
    return write_package(path, seed_entries(info))


def legacy_package(path: Path) -> Path:
    entries = [Entry(name, file_bytes(name)) for name in LEGACY_INFO["models"]]
    return write_package(path, [Entry("ymir-info.yaml", info_yaml(legacy_info())), *entries])


def ymir_layout_package(path: Path) -> Path:
    """What YMIR itself stores: <stage>/<file>, attachments, a 2.0.x ymir-info.yaml."""
    info = seed_info()
    info.update(package_version="2.0.2", object_type=2, attachments={"images": ["sample.jpg"]})
    for stage in info["stages"].values():
        stage["tp"] = stage.pop("TP", 0)
        stage.pop("FP", None)
        stage.pop("FN", None)
    entries = [Entry("ymir-info.yaml", info_yaml(info))]
    for name, stage in info["stages"].items():
        entries += [
            Entry(f"{name}/{file}", file_bytes(f"{name}/{file}")) for file in stage["files"]
        ]
    entries.append(Entry("attachments/images/sample.jpg", b"\xff\xd8jpeg"))
    return write_package(path, entries)


# -- more packages: the valid variants every test can share -----------------------------------


def seed_package_with(
    path: Path, info: dict[str, Any], extra: Iterable[Entry] = (), *, info_last: bool = True
) -> Path:
    """The seed's files, ``extra`` members, and ``info`` as ymir-info.yaml."""
    entries = seed_entries(info, info_last=info_last)
    return write_package(path, [*entries, *extra])


def seed_info_first_package(path: Path) -> Path:
    return write_package(path, seed_entries(info_last=False))


def seed_all_upper_counts_package(path: Path) -> Path:
    """Both stages with the seed's TP/FP/FN spelling."""
    info = seed_info()
    info["stages"]["stage_2000"].update(TP=70, FP=20, FN=10)
    return seed_package(path, info)


def object_type_0_package(path: Path) -> Path:
    info = seed_info()
    info.update(package_version="2.0.0", object_type=0)
    return seed_package(path, info)


def attachments_package(path: Path) -> Path:
    info = seed_info()
    info["attachments"] = {"images": ["a.jpg", "b.jpg"], "configs": ["infer.yaml"]}
    extra = [
        Entry("attachments/images/a.jpg", b"\xff\xd8a"),
        Entry("attachments/images/b.jpg", b"\xff\xd8b"),
        Entry("attachments/configs/infer.yaml", b"conf_thr: 0.3\n"),
    ]
    return seed_package_with(path, info, extra)


def no_task_context_package(path: Path) -> Path:
    info = seed_info()
    del info["task_context"]
    return seed_package(path, info)


def segmentation_package(path: Path) -> Path:
    info = seed_info()
    info.update(package_version="2.0.1", object_type=3, evaluate_config={"iou_thr": 0.5})
    info["stages"]["stage_2000"].update(mIoU=0.7, mAcc=0.8)
    return seed_package(path, info)


VALID_PACKAGES = {
    "seed": seed_package,
    "seed-info-first": seed_info_first_package,
    "legacy-1.1.0": legacy_package,
    "ymir-layout": ymir_layout_package,
    "seed-TP-FP-FN": seed_all_upper_counts_package,
    "object-type-0": object_type_0_package,
    "attachments": attachments_package,
    "no-task-context": no_task_context_package,
    "segmentation-2.0.1": segmentation_package,
}


def write_folder(folder: Path, entries: Iterable[Entry]) -> Path:
    """Write regular entries as files under ``folder`` (what a user has before packing)."""
    for entry in entries:
        target = folder / entry.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(entry.data)
    return folder


def tar_command_package(path: Path, folder: Path) -> Path:
    """The seed's files packed with the real ``tar -czf OUT .`` (members named ``./...``)."""
    import subprocess

    write_folder(folder, seed_entries())
    subprocess.run(["tar", "-czf", str(path), "."], cwd=folder, check=True)
    return path


# -- the real command and its config ----------------------------------------------------------


def dropbox_command() -> list[str]:
    """The installed ``ymir-dropbox`` script of this interpreter (not a slow shim)."""
    import shutil
    import sys

    script = Path(sys.executable).parent / "ymir-dropbox"
    if script.exists():
        return [str(script)]
    found = shutil.which("ymir-dropbox")
    assert found, "ymir-dropbox is not installed: run `pip install -e '.[dev]'`"
    return [found]


def write_config(path: Path, base_dir: Path | str = "box", extra: str = "") -> Path:
    """A config file with this base_dir (relative to the file), JSON logs, and ``extra`` TOML."""
    path.write_text(f'base_dir = "{base_dir}"\n{extra}\n[log]\nformat = "json"\n')
    return path


def run_dropbox(
    *arguments: str | Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> Any:
    """Run the real CLI (in a child of this worker's runner, see :mod:`forked`); the
    caller's YMIR_DROPBOX_CONFIG never leaks in."""
    import os

    from forked import forked

    environment = {k: v for k, v in os.environ.items() if k != "YMIR_DROPBOX_CONFIG"}
    environment.update(env or {})
    return forked().run(arguments, cwd=cwd, env=environment, timeout=timeout)
