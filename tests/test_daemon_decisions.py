"""The daemon's decisions, in process: the retry policy, filing, recovery and stopping.

Real folders, a real ledger and the real importer; only the clock is the test's.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import threading
from pathlib import Path, PurePosixPath

import pytest
from factory import gzip_bytes, seed_package

from ymir_dropbox.config import Config, load_config
from ymir_dropbox.core.backoff import backoff
from ymir_dropbox.daemon.filing import Filing
from ymir_dropbox.daemon.inbox import InboxView
from ymir_dropbox.daemon.policy import (
    Action,
    JobEnd,
    JobResult,
    RetryPolicy,
)
from ymir_dropbox.daemon.readiness import ReadinessTracker
from ymir_dropbox.daemon.recovery import recover
from ymir_dropbox.daemon.scheduler import Scheduler
from ymir_dropbox.daemon.worker import Worker
from ymir_dropbox.operations.metrics import Metrics
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.storing.backends import make_backend
from ymir_dropbox.storing.documents import attempt_document
from ymir_dropbox.storing.durable import TEMP_PREFIX, TEMP_SUFFIX
from ymir_dropbox.storing.importer import Importer
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.lifecycle import IllegalTransition, Place, Status

NAME = PurePosixPath("model.tar.gz")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the policy -----------------------------------------------------------------------------------


def test_one_backoff_formula_doubles_from_the_base_up_to_the_maximum() -> None:
    assert [backoff(n, 5.0, 30.0) for n in range(1, 6)] == [5.0, 10.0, 20.0, 30.0, 30.0]


@pytest.mark.parametrize(
    ("end", "action"),
    [
        (JobEnd.SETTLED, Action.RECONSIDER),
        (JobEnd.NOT_READY, Action.WAIT_FOR_WRITER),
        (JobEnd.CHANGED, Action.WAIT_FOR_WRITER),
        (JobEnd.GONE, Action.FORGET),
        (JobEnd.IGNORED, Action.FORGET),
        (JobEnd.TRANSIENT, Action.RETRY_INBOX),
        (JobEnd.DEFERRED, Action.REDO),
        (JobEnd.CRASHED, Action.REDO),
    ],
    ids=lambda value: value.value,
)
def test_each_end_of_a_job_has_one_action(end: JobEnd, action: Action) -> None:
    assert RetryPolicy(5.0, 300.0).decide(JobResult(end, NAME)).action is action


def test_a_deferred_import_is_redone_later_and_later() -> None:
    clock = Clock()
    policy = RetryPolicy(5.0, 300.0, clock=clock)

    first = policy.decide(JobResult(JobEnd.DEFERRED, NAME))
    second = policy.decide(JobResult(JobEnd.DEFERRED, NAME))

    assert (first.at, second.at) == (105.0, 110.0)


def test_a_package_that_settles_starts_its_count_again() -> None:
    policy = RetryPolicy(5.0, 300.0)
    policy.decide(JobResult(JobEnd.DEFERRED, NAME))
    policy.decide(JobResult(JobEnd.SETTLED, NAME))

    assert policy.decide(JobResult(JobEnd.DEFERRED, NAME)).delay == 5.0


def test_the_third_crash_in_a_row_fails_the_package() -> None:
    policy = RetryPolicy(5.0, 300.0)

    decisions = [policy.decide(JobResult(JobEnd.CRASHED, NAME, crashes=n)) for n in (1, 2, 3)]

    assert [decision.action for decision in decisions] == [
        Action.REDO,
        Action.REDO,
        Action.FAIL_CRASHED,
    ]


# -- the lifecycle in the ledger ------------------------------------------------------------------


def test_the_ledger_refuses_a_step_the_lifecycle_does_not_list(config: Config) -> None:
    ledger = Ledger(config.paths.ledger)
    attempt = ledger.begin(package="a.tar.gz", place=Place.INBOX, processing_path=NAME)

    with pytest.raises(IllegalTransition):
        ledger.finish(attempt, Status.IMPORTED)  # never without the import step
    with pytest.raises(IllegalTransition):
        ledger.move(attempt, Place.DONE)  # never from the inbox straight to done/
    assert ledger.get(attempt).status == "claimed"  # type: ignore[union-attr]


def test_crashes_are_counted_from_the_ledger_until_the_package_settles(config: Config) -> None:
    ledger = Ledger(config.paths.ledger)
    crashed = Problem("import.crashed", "", "boom")

    def attempt(status: Status, errors: list[Problem]) -> None:
        row = ledger.begin(package=NAME.name, place=Place.PROCESSING, processing_path=NAME)
        ledger.start_import(row, "embedded")
        ledger.finish(row, status, errors=errors)

    attempt(Status.INTERRUPTED, [crashed])
    attempt(Status.FAILED, [])
    attempt(Status.INTERRUPTED, [crashed])
    attempt(Status.INTERRUPTED, [])  # a stop, not a crash: does not count, does not break
    attempt(Status.INTERRUPTED, [crashed])

    assert ledger.crashes_in_a_row(NAME) == 2
    assert ledger.crashes_in_a_row(PurePosixPath("other.tar.gz")) == 0


def test_a_name_that_is_not_utf8_is_kept_exactly(config: Config) -> None:
    ledger = Ledger(config.paths.ledger)
    name = PurePosixPath(os.fsdecode(b"caf\xe9.tar.gz"))
    attempt = ledger.begin(package=name.name, place=Place.PROCESSING, processing_path=name)
    ledger.start_import(attempt, "embedded")
    ledger.finish(attempt, Status.FAILED)

    row = ledger.settled_in_processing(name)

    assert row is not None and row.id == attempt
    assert row.processing_path == Path(os.fsdecode(b"caf\xe9.tar.gz"))  # stored exactly
    assert attempt_document(row)["processing_path"] == "caf\\xe9.tar.gz"  # shown escaped


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


# -- stopping -------------------------------------------------------------------------------------


def scheduler_for(config: Config, ledger: Ledger) -> Scheduler:
    backend = make_backend(config)
    filing = Filing(config.paths, ledger)
    worker = Worker(config, ledger, Importer(config, ledger, backend), filing, Metrics(""))
    inbox = InboxView(config.paths.inbox, config.watch, ReadinessTracker(1.0))
    return Scheduler(config, inbox, worker, RetryPolicy(1.0, 10.0), ledger, Metrics(""))


def test_a_crash_limit_reached_while_stopping_submits_nothing(config: Config) -> None:
    ledger = Ledger(config.paths.ledger)
    scheduler = scheduler_for(config, ledger)
    scheduler.shutdown(timeout=1.0)

    scheduler.apply(JobResult(JobEnd.CRASHED, NAME, reason="boom", crashes=3))
    scheduler.dispatch()

    assert scheduler.running == {}


def test_a_redo_due_while_stopping_is_left_for_the_next_start(config: Config) -> None:
    ledger = Ledger(config.paths.ledger)
    scheduler = scheduler_for(config, ledger)
    scheduler.redo[NAME] = 0.0
    scheduler.request_stop()

    scheduler.dispatch()

    assert scheduler.running == {} and NAME in scheduler.redo


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
