"""The scheduler while stopping: nothing is handed to a worker once a stop is requested."""

from __future__ import annotations

from pathlib import PurePosixPath

from ymir_dropbox.config import Config
from ymir_dropbox.daemon.filing import Filing
from ymir_dropbox.daemon.inbox import InboxView
from ymir_dropbox.daemon.machine import JobEnd, JobResult
from ymir_dropbox.daemon.policy import RetryPolicy
from ymir_dropbox.daemon.readiness import ReadinessTracker
from ymir_dropbox.daemon.scheduler import Scheduler
from ymir_dropbox.daemon.worker import Worker
from ymir_dropbox.operations.metrics import Metrics
from ymir_dropbox.storing.backends import make_backend
from ymir_dropbox.storing.importer import Importer
from ymir_dropbox.storing.ledger import Ledger

NAME = PurePosixPath("model.tar.gz")


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
