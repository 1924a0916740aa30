"""Every hostile package of tests/hostile.py, dropped into the inbox of a running daemon.

Each ends in failed/ with its specific error code in ``<name>.error.json`` and a readable
reason in ``<name>.error.txt``; nothing appears outside the configured folders.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import Dropboxes, dropboxes
from hostile import CASES, Hostile

# Cases that need limits other than the defaults get a daemon of their own below.
DEFAULT_LIMITS = [case for case in CASES if not case.limits]
OWN_LIMITS = [case for case in CASES if case.limits]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Dropboxes]:
    with dropboxes(tmp_path) as made:
        yield made


def snapshot(root: Path, skip: Path) -> set[str]:
    """Every path under ``root`` except those under ``skip``."""
    found = set()
    for folder, folders, files in os.walk(root):
        if Path(folder) == skip:
            folders.clear()
            continue
        found.update(os.path.join(folder, name) for name in folders + files)
    return found


def drop_all(make: Dropboxes, cases: list[Hostile], limits: dict[str, object] | None) -> None:
    dropbox = make(sections={"limits": limits} if limits else None)
    staging = dropbox.root / "staging"
    staging.mkdir()
    built = {case.id: case.build(staging / f"{case.id}.tar.gz") for case in cases}
    before = snapshot(dropbox.root, dropbox.base)
    dropbox.start()
    for path in built.values():
        dropbox.record(path.name, path)  # before the daemon can take it
        path.rename(dropbox.inbox / path.name)
    dropbox.wait_settled(timeout=120)

    for case in cases:
        package = dropbox.folder("failed") / f"{case.id}.tar.gz"
        assert package.is_file(), f"{case.id}: not in failed/; {dropbox.describe()}"
        report = json.loads(Path(f"{package}.error.json").read_text())
        codes = [error["code"] for error in report["errors"]]
        assert case.code in codes, f"{case.id}: expected {case.code}, got {codes}"
        reason = Path(f"{package}.error.txt").read_text()
        assert case.code in reason and "was not imported" in reason
    assert not list(dropbox.folder("models").iterdir())
    moved = {str(staging / f"{case.id}.tar.gz") for case in cases}
    logs = {str(path) for path in dropbox.root.glob("daemon-*.log")}
    assert snapshot(dropbox.root, dropbox.base) - logs == before - moved
    assert not (staging / "escaped-absolute").exists()
    dropbox.assert_invariants()


def test_every_hostile_package_fails_with_its_code(make: Dropboxes) -> None:
    assert len(DEFAULT_LIMITS) >= 40
    drop_all(make, DEFAULT_LIMITS, None)


@pytest.mark.parametrize("case", OWN_LIMITS, ids=[case.id for case in OWN_LIMITS])
def test_hostile_packages_against_small_limits(make: Dropboxes, case: Hostile) -> None:
    drop_all(make, [case], case.limits)
