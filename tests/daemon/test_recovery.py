"""Recovery at start: what the last run left is filed, redone or cleaned up, from the ledger
and the folders alone."""

from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path, PurePosixPath

from factory import seed_package

from ymir_dropbox.config import Config, load_config
from ymir_dropbox.daemon.filing import Filing
from ymir_dropbox.daemon.machine import JobEnd
from ymir_dropbox.daemon.recovery import recover
from ymir_dropbox.daemon.worker import Worker
from ymir_dropbox.operations.metrics import Metrics
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.storing.backends import make_backend
from ymir_dropbox.storing.durable import TEMP_PREFIX, TEMP_SUFFIX
from ymir_dropbox.storing.importer import Importer
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.lifecycle import Place, Status


def claimed_in_processing(config: Config, ledger: Ledger, name: str, status: Status) -> int:
    seed_package(config.paths.processing / name)
    relative = PurePosixPath(name)
    attempt = ledger.begin(package=name, place=Place.PROCESSING, processing_path=relative)
    ledger.start_import(attempt, "embedded")
    errors = [Problem("info.missing", "ymir-info.yaml", f"{name} is bad")]
    ledger.finish(attempt, status, errors=errors if status is Status.FAILED else [])
    return attempt


# -- recovery -------------------------------------------------------------------------------------


def test_recovery_files_what_was_judged_and_redoes_what_was_cut_short(config: Config) -> None:
    ledger = Ledger(config.paths.ledger)
    judged = claimed_in_processing(config, ledger, "judged.tar.gz", Status.FAILED)
    seed_package(config.paths.processing / "cut.tar.gz")
    cut = ledger.begin(
        package="cut.tar.gz", place=Place.PROCESSING, processing_path=PurePosixPath("cut.tar.gz")
    )
    ledger.start_import(cut, "embedded")
    cli = ledger.begin(package="beside.tar.gz", place=Place.NONE)
    ledger.start_import(cli, "embedded")
    filing = Filing(config.paths, ledger)

    redo = recover(config.paths, ledger, make_backend(config), filing)

    assert redo == [PurePosixPath("cut.tar.gz")]
    assert ledger.get(judged).place == "failed"  # type: ignore[union-attr]
    assert (config.paths.failed / "judged.tar.gz.error.txt").is_file()
    cut_row = ledger.get(cut)
    assert cut_row is not None and cut_row.status == "interrupted"
    assert [error.code for error in cut_row.errors] == ["import.crashed"]
    assert ledger.crashes_in_a_row(PurePosixPath("cut.tar.gz")) == 1
    assert ledger.get(cli).status == "importing"  # type: ignore[union-attr]  # not ours


def test_a_package_that_took_the_daemon_down_three_times_is_failed(config: Config) -> None:
    ledger = Ledger(config.paths.ledger)
    seed_package(config.paths.processing / "deadly.tar.gz")
    relative = PurePosixPath("deadly.tar.gz")
    backend = make_backend(config)
    filing = Filing(config.paths, ledger)
    for _ in range(3):
        attempt = ledger.begin(
            package=relative.name, place=Place.PROCESSING, processing_path=relative
        )
        ledger.start_import(attempt, "embedded")
        assert recover(config.paths, ledger, backend, filing) == [relative]
    worker = Worker(config, ledger, Importer(config, ledger, backend), filing, Metrics(""))

    result = worker.redo(relative)

    assert result.end is JobEnd.SETTLED and result.status == "failed"
    [row] = ledger.latest(Status.FAILED)
    assert [error.code for error in row.errors] == ["import.crashed"]
    assert (config.paths.failed / "deadly.tar.gz").is_file()


def test_a_start_removes_what_a_killed_writer_left_in_the_ymir_staging_folder(
    tmp_path: Path,
) -> None:
    """The ymir-api backend stages packages outside the configured folders; a temporary file
    a killed daemon left there goes at the next start, a live writer's and a staged package
    (which an import may resume) stay."""
    staging = tmp_path / "staging"
    staging.mkdir()
    path = tmp_path / "config.toml"
    path.write_text(
        'base_dir = "dropbox"\n[import]\nbackend = "ymir-api"\n[import.ymir_api]\n'
        f'url = "http://127.0.0.1:9"\nuser = "u"\nproject_id = 1\nstaging = "{staging}"\n'
        'staging_in_ymir = "/data/staging"\n'
    )
    config = load_config(path)
    config.ensure_folders()
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = staging / f"{TEMP_PREFIX}{dead.pid}-x{TEMP_SUFFIX}"
    live = staging / f"{TEMP_PREFIX}{os.getpid()}-y{TEMP_SUFFIX}"
    # Another machine's daemon at work: its pid means nothing here, its lock does.
    elsewhere = staging / f"{TEMP_PREFIX}{dead.pid}-z{TEMP_SUFFIX}"
    staged = staging / "0123456789abcdef.tar.gz"
    for file in (left, live, elsewhere, staged):
        file.write_bytes(b"partial")
    ledger = Ledger(config.paths.ledger)

    with live.open("rb") as ours, elsewhere.open("rb") as theirs:
        fcntl.flock(ours, fcntl.LOCK_EX)
        fcntl.flock(theirs, fcntl.LOCK_EX)
        recover(config.paths, ledger, make_backend(config), Filing(config.paths, ledger))

    kept = sorted(path.name for path in staging.iterdir())
    assert kept == sorted([live.name, elsewhere.name, staged.name])
