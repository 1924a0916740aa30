"""Filing: a judged package renamed into done/ or failed/ under a free name, with its error
files, and retried with its verdict kept when the machine fails."""

from __future__ import annotations

import json
import threading
from pathlib import Path, PurePosixPath

from factory import gzip_bytes, seed_package

from ymir_dropbox.config import Config
from ymir_dropbox.daemon.filing import Filing
from ymir_dropbox.daemon.machine import JobEnd
from ymir_dropbox.daemon.worker import Worker
from ymir_dropbox.operations.metrics import Metrics
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.storing.backends import make_backend
from ymir_dropbox.storing.importer import Importer
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.lifecycle import Place, Status

# -- filing ---------------------------------------------------------------------------------------


def claimed_in_processing(config: Config, ledger: Ledger, name: str, status: Status) -> int:
    seed_package(config.paths.processing / name)
    relative = PurePosixPath(name)
    attempt = ledger.begin(package=name, place=Place.PROCESSING, processing_path=relative)
    ledger.start_import(attempt, "embedded")
    errors = [Problem("info.missing", "ymir-info.yaml", f"{name} is bad")]
    ledger.finish(attempt, status, errors=errors if status is Status.FAILED else [])
    return attempt


def test_two_failed_packages_filed_at_once_never_share_a_name(config: Config) -> None:
    ledger = Ledger(config.paths.ledger)
    filing = Filing(config.paths, ledger)
    (config.paths.failed / "x.tar.gz").write_bytes(b"an older failure")
    jobs = []
    for number in range(6):
        folder = config.paths.processing / f"team-{number}"
        folder.mkdir()
        attempt = claimed_in_processing(config, ledger, f"team-{number}/x.tar.gz", Status.FAILED)
        jobs.append((attempt, PurePosixPath(f"team-{number}/x.tar.gz")))
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def file(attempt: int, relative: PurePosixPath) -> None:
        barrier.wait()
        try:
            filing.file(attempt, relative, Status.FAILED)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=file, args=job) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    for attempt, _ in jobs:
        row = ledger.get(attempt)
        assert row is not None and row.place == "failed"
        target = Path(row.final_path)
        assert target.is_file()
        document = json.loads(target.with_name(target.name + ".error.json").read_text())
        assert document["attempt"] == attempt, "another package's error file"


def test_a_package_gone_from_processing_is_recorded_lost(config: Config) -> None:
    ledger = Ledger(config.paths.ledger)
    attempt = claimed_in_processing(config, ledger, "gone.tar.gz", Status.IMPORTED)
    (config.paths.processing / "gone.tar.gz").unlink()

    assert Filing(config.paths, ledger).file(attempt, PurePosixPath("gone.tar.gz"), Status.IMPORTED)
    assert ledger.get(attempt).place == "lost"  # type: ignore[union-attr]


# -- filing faults -------------------------------------------------------------------------------


def test_a_filing_fault_is_retried_and_the_package_keeps_its_own_reason(config: Config) -> None:
    ledger = Ledger(config.paths.ledger)
    backend = make_backend(config)
    worker = Worker(
        config, ledger, Importer(config, ledger, backend), Filing(config.paths, ledger), Metrics("")
    )
    relative = PurePosixPath("team/broken.tar.gz")
    (config.paths.processing / "team").mkdir()
    (config.paths.processing / relative).write_bytes(gzip_bytes(b"not a tar" * 100))
    (config.paths.failed / "team").write_bytes(b"a file where failed/team/ should be")

    first = worker.redo(relative)

    assert first.end is JobEnd.DEFERRED and "filing failed" in first.reason
    [judged] = ledger.latest(Status.FAILED)
    assert judged.place == "processing"
    assert [error.code for error in judged.errors] == ["container.not_tar"]

    (config.paths.failed / "team").unlink()
    second = worker.redo(relative)

    assert second.end is JobEnd.SETTLED
    assert ledger.count_by_status(Status.FAILED) == 1, "judged once, filed once"
    report = json.loads((config.paths.failed / "team/broken.tar.gz.error.json").read_text())
    assert [error["code"] for error in report["errors"]] == ["container.not_tar"]
    assert ledger.get(judged.id).place == "failed"  # type: ignore[union-attr]
