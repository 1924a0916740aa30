"""Notifications: the outcome as JSON to a real local webhook and a real script, retried with
backoff, bounded, and never in the way of an import."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
from daemon_harness import wait_until

from ymir_dropbox.config import NotifyConfig, build_config, load_config
from ymir_dropbox.core.errors import ConfigError
from ymir_dropbox.operations.notifications import (
    Notifier,
    outcome_environment,
)
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.storing.attempts import Attempt, Findings
from ymir_dropbox.storing.documents import outcome_document
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.lifecycle import Place, Status

FAST = {"timeout": 2.0, "retries": 3, "retry_base_seconds": 0.05, "retry_max_seconds": 0.2}


def notify_config(tmp_path: Path, **section: Any) -> NotifyConfig:
    """A ``[notify]`` section, validated as a config file's would be."""
    return build_config({"notify": {**FAST, **section}}, source=None, anchor=tmp_path).notify


# -- the document -----------------------------------------------------------------------------


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = Ledger(tmp_path / "ledger.sqlite")
    yield opened
    opened.close()


def settled_row(
    ledger: Ledger,
    package: str,
    status: Status = Status.IMPORTED,
    *,
    model_hash: str | None = None,
    mAP: float | None = None,
    best_stage_name: str | None = None,
    errors: list[dict[str, str]] = (),  # type: ignore[assignment]
) -> Attempt:
    """A ledger row as the daemon leaves it: finished and filed."""
    sha256 = hashlib.sha256(package.encode()).hexdigest()
    attempt = ledger.begin(package=package, place=Place.INBOX, source=Path(package), sha256=sha256)
    ledger.move(attempt, Place.PROCESSING)
    ledger.start_import(attempt, "embedded")
    ledger.finish(
        attempt,
        status,
        model_hash=model_hash,
        findings=Findings(best_stage_name=best_stage_name, mAP=mAP),
        errors=[Problem(**problem) for problem in errors],
    )
    place = Place.FAILED if status is Status.FAILED else Place.DONE
    ledger.plan(attempt, Path(f"/srv/box/{place}/{package}"))
    ledger.move(attempt, place)
    row = ledger.get(attempt)
    assert row is not None
    return row


def test_the_document_of_an_import_holds_the_model(ledger: Ledger) -> None:
    row = settled_row(
        ledger, "yolo.tar.gz", model_hash="c" * 40, mAP=0.73, best_stage_name="epoch_10"
    )

    document = outcome_document(dataclasses.replace(row, uploader="alice"))

    assert document == {
        "package": "yolo.tar.gz",
        "sha256": hashlib.sha256(b"yolo.tar.gz").hexdigest(),
        "status": "imported",
        "model_hash": "c" * 40,
        "mAP": 0.73,
        "best_stage_name": "epoch_10",
        "problems": [],
        "warnings": [],
        "attempt": row.id,
        "duplicate_of": None,
        "uploader": "alice",
        "finished_at": row.finished_at,
        "folder": "done",
        "path": "/srv/box/done/yolo.tar.gz",
    }
    json.dumps(document)  # JSON as it is


def test_the_document_of_a_failure_lists_its_problems(ledger: Ledger) -> None:
    problem = {"code": "info.missing_field", "field": "stages.s1.mAP", "message": "mAP missing"}
    row = settled_row(ledger, "bad.tar.gz", Status.FAILED, errors=[problem])

    document = outcome_document(row)

    assert document["status"] == "failed"
    assert document["problems"] == [problem]
    assert document["folder"] == "failed"
    assert document["uploader"] is None  # a ledger without the uploader column yet


def test_every_environment_variable_is_set_even_when_empty(ledger: Ledger) -> None:
    problems = [{"code": "tar.link_member", "field": "a", "message": "m"}]
    row = settled_row(ledger, "bad.tar.gz", Status.FAILED, errors=problems * 2)

    environment = outcome_environment(outcome_document(row))

    assert environment["YMIR_DROPBOX_STATUS"] == "failed"
    assert environment["YMIR_DROPBOX_PACKAGE"] == "bad.tar.gz"
    assert environment["YMIR_DROPBOX_SHA256"] == row.sha256
    assert environment["YMIR_DROPBOX_ATTEMPT"] == str(row.id)
    assert environment["YMIR_DROPBOX_MODEL_HASH"] == ""
    assert environment["YMIR_DROPBOX_PROBLEMS"] == "tar.link_member tar.link_member"
    assert set(environment) >= {
        "YMIR_DROPBOX_MAP", "YMIR_DROPBOX_BEST_STAGE_NAME", "YMIR_DROPBOX_UPLOADER",
        "YMIR_DROPBOX_FINISHED_AT", "YMIR_DROPBOX_FOLDER", "YMIR_DROPBOX_PATH",
    }  # fmt: skip


def test_off_by_default() -> None:
    config = build_config({}, source=None, anchor=Path.cwd()).notify
    notifier = Notifier(config)

    notifier.start()
    notifier.send(Attempt(id=1, package="a.tar.gz", status=Status.IMPORTED, place=Place.DONE))
    notifier.stop(1.0)

    assert not notifier.enabled


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '"hooks/announce --to \\"model team\\""',
            ("{anchor}/hooks/announce", "--to", "model team"),
        ),
        ('["/usr/bin/announce", "a b"]', ("/usr/bin/announce", "a b")),
        ('"announce"', ("announce",)),
    ],
    ids=["string-split-like-a-shell", "list-as-is", "bare-name-on-path"],
)
def test_command_is_a_list_or_a_string(
    text: str, expected: tuple[str, ...], tmp_path: Path
) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text(f"[notify]\ncommand = {text}\n")

    command = load_config(config_file).notify.command

    assert command == tuple(part.format(anchor=tmp_path) for part in expected)


BAD_SECTIONS = {
    "webhook-not-http": ({"notify": {"webhook": "file:///etc/passwd"}}, "notify.webhook"),
    "command-not-text": ({"notify": {"command": [1]}}, "notify.command.0"),
    "command-unclosed-quote": ({"notify": {"command": 'a "b'}}, "notify.command"),
    "no-queue": ({"notify": {"queue_size": 0}}, "notify.queue_size"),
    "negative-days": ({"retention": {"done_days": -1}}, "retention.done_days"),
    "days-as-bool": ({"retention": {"failed_days": True}}, "retention.failed_days"),
    "unknown-key": ({"notify": {"url": "http://x"}}, "notify.url"),
}


@pytest.mark.parametrize(("document", "key"), BAD_SECTIONS.values(), ids=BAD_SECTIONS.keys())
def test_bad_notify_and_retention_sections_name_the_key(
    document: dict[str, Any], key: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=rf"(^|\W){re.escape(key)}:"):
        build_config(document, source=None, anchor=tmp_path)


# -- a real webhook ---------------------------------------------------------------------------


class Receiver:
    """A webhook on 127.0.0.1: records each POST, answers from ``answers`` (then 200), and
    holds requests while ``hold`` is clear."""

    def __init__(self) -> None:
        self.requests: list[tuple[int, dict[str, Any], str]] = []
        self.answers: deque[int] = deque()
        self.hold = threading.Event()
        self.hold.set()
        self.arrived = threading.Semaphore(0)
        self.server: ThreadingHTTPServer | None = None
        self.port = 0

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.arrived.release()
                receiver.hold.wait(30)
                code = receiver.answers.popleft() if receiver.answers else 200
                receiver.requests.append((code, json.loads(body), self.headers["Content-Type"]))
                try:
                    self.send_response(code)
                    self.end_headers()
                except OSError:
                    pass  # the client gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def delivered(self) -> list[str]:
        return [document["package"] for code, document, _ in self.requests if code == 200]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    webhook = Receiver()
    webhook.start()
    yield webhook
    webhook.hold.set()
    webhook.stop()


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in list(logs) if entry["event"] == name]


@pytest.fixture
def started() -> Iterator[list[Notifier]]:
    """Notifiers a test started; stopped at its end."""
    notifiers: list[Notifier] = []
    yield notifiers
    for notifier in notifiers:
        notifier.stop(0.5)


def start(notifiers: list[Notifier], config: NotifyConfig) -> Notifier:
    notifier = Notifier(config)
    notifier.start()
    notifiers.append(notifier)
    return notifier


def test_webhook_receives_the_outcome_as_json(
    receiver: Receiver, ledger: Ledger, tmp_path: Path, started: list[Notifier]
) -> None:
    row = settled_row(ledger, "yolo.tar.gz", model_hash="c" * 40, mAP=0.5)
    notifier = start(started, notify_config(tmp_path, webhook=receiver.url))

    notifier.send(row)

    wait_until(lambda: receiver.requests, 10, "the webhook got a request")
    _code, document, content_type = receiver.requests[0]
    assert document == outcome_document(row)
    assert content_type.startswith("application/json")


def test_receiver_down_then_up_gets_it_after_a_retry(
    receiver: Receiver,
    ledger: Ledger,
    tmp_path: Path,
    started: list[Notifier],
    logs: list[dict[str, Any]],
) -> None:
    receiver.stop()  # the port is known, nothing listens on it
    notifier = start(started, notify_config(tmp_path, webhook=receiver.url, retries=100))

    notifier.send(settled_row(ledger, "late.tar.gz"))
    wait_until(lambda: events(logs, "notification_retry"), 10, "a failed try was logged")
    receiver.start()

    wait_until(lambda: receiver.delivered() == ["late.tar.gz"], 10, "delivery after the retry")
    delivered = wait_until(lambda: events(logs, "notification_delivered"), 5, "it was logged")
    assert delivered[0]["tries"] >= 2
    assert "cannot reach the webhook" in events(logs, "notification_retry")[0]["reason"]


@pytest.mark.parametrize(
    ("answers", "delivered", "tries"),
    [([503, 200], True, 2), ([429, 200], True, 2), ([400], False, 1), ([500] * 4, False, 4)],
    ids=["5xx-retried", "429-retried", "4xx-not-retried", "gives-up-after-retries"],
)
def test_answers_that_are_retried_and_those_that_are_not(
    answers: list[int],
    delivered: bool,
    tries: int,
    receiver: Receiver,
    ledger: Ledger,
    tmp_path: Path,
    started: list[Notifier],
    logs: list[dict[str, Any]],
) -> None:
    receiver.answers.extend(answers)
    notifier = start(started, notify_config(tmp_path, webhook=receiver.url, retries=3))

    notifier.send(settled_row(ledger, "a.tar.gz"))

    outcome = "notification_delivered" if delivered else "notification_failed"
    logged = wait_until(lambda: events(logs, outcome), 10, f"{outcome} was logged")
    assert logged[0]["tries"] == tries
    assert len(receiver.requests) == tries


def test_hanging_receiver_times_out_and_send_returns_at_once(
    receiver: Receiver,
    ledger: Ledger,
    tmp_path: Path,
    started: list[Notifier],
    logs: list[dict[str, Any]],
) -> None:
    receiver.hold.clear()
    config = notify_config(tmp_path, webhook=receiver.url, timeout=0.3, retries=0)
    notifier = start(started, config)
    rows = [settled_row(ledger, f"p{number}.tar.gz") for number in range(3)]

    began = time.monotonic()
    for row in rows:
        notifier.send(row)
    sending = time.monotonic() - began

    assert sending < 0.1
    failed = wait_until(
        lambda: (
            len(events(logs, "notification_failed")) == 3 and events(logs, "notification_failed")
        ),
        10,
        "three timed-out deliveries were logged",
    )
    assert [entry["package"] for entry in failed] == ["p0.tar.gz", "p1.tar.gz", "p2.tar.gz"]
    assert all("timed out" in entry["reason"] for entry in failed), failed


def test_a_full_queue_drops_the_oldest_and_logs_it(
    receiver: Receiver,
    ledger: Ledger,
    tmp_path: Path,
    started: list[Notifier],
    logs: list[dict[str, Any]],
) -> None:
    receiver.hold.clear()
    notifier = start(started, notify_config(tmp_path, webhook=receiver.url, queue_size=2))
    rows = [settled_row(ledger, f"p{number}.tar.gz") for number in range(5)]
    notifier.send(rows[0])
    assert receiver.arrived.acquire(timeout=10), "the first delivery reached the receiver"

    for row in rows[1:]:  # p0 is being delivered: the queue holds two of the other four
        notifier.send(row)
    receiver.hold.set()

    wait_until(lambda: len(receiver.delivered()) == 3, 10, "three deliveries")
    assert receiver.delivered() == ["p0.tar.gz", "p3.tar.gz", "p4.tar.gz"]
    dropped = events(logs, "notification_dropped")
    assert [(entry["package"], entry["log_level"]) for entry in dropped] == [
        ("p1.tar.gz", "warning"),
        ("p2.tar.gz", "warning"),
    ]


def test_stop_waits_no_longer_than_its_timeout(
    receiver: Receiver,
    ledger: Ledger,
    tmp_path: Path,
    logs: list[dict[str, Any]],
) -> None:
    receiver.hold.clear()
    notifier = Notifier(notify_config(tmp_path, webhook=receiver.url, timeout=20.0))
    notifier.start()
    notifier.send(settled_row(ledger, "stuck.tar.gz"))
    notifier.send(settled_row(ledger, "queued.tar.gz"))
    assert receiver.arrived.acquire(timeout=10)

    began = time.monotonic()
    notifier.stop(0.3)

    assert time.monotonic() - began < 2.0
    dropped = events(logs, "notification_dropped")
    assert [entry["package"] for entry in dropped] == ["queued.tar.gz"]
    notifier.send(settled_row(ledger, "after-stop.tar.gz"))
    assert events(logs, "notification_dropped")[-1]["package"] == "after-stop.tar.gz"


def test_attempts_that_are_not_outcomes_are_not_sent(
    receiver: Receiver, ledger: Ledger, tmp_path: Path
) -> None:
    notifier = Notifier(notify_config(tmp_path, webhook=receiver.url))
    notifier.start()
    attempt = ledger.begin(package="cut.tar.gz", place=Place.INBOX)
    ledger.finish(attempt, Status.INTERRUPTED)

    cut = ledger.get(attempt)
    assert cut is not None
    notifier.send(cut)
    notifier.send(settled_row(ledger, "real.tar.gz"))
    notifier.stop(10)

    assert receiver.delivered() == ["real.tar.gz"]


# -- a real program ---------------------------------------------------------------------------


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return path


def test_command_gets_the_json_on_stdin_and_in_its_environment(
    ledger: Ledger, tmp_path: Path, started: list[Notifier]
) -> None:
    out = tmp_path / "out"
    script = write_script(
        tmp_path / "announce",
        'cat > "$1.json.tmp"\nenv | grep ^YMIR_DROPBOX_ | sort > "$1.env"\n'
        'mv "$1.json.tmp" "$1.json"\n',
    )
    row = settled_row(ledger, "it's a <model>.tar.gz", model_hash="d" * 40, mAP=0.9)
    notifier = start(started, notify_config(tmp_path, command=[str(script), str(out)]))

    notifier.send(row)

    written = wait_until(lambda: out.with_suffix(".json").exists(), 10, "the script ran")
    assert written
    assert json.loads(out.with_suffix(".json").read_text()) == outcome_document(row)
    environment = dict(
        line.split("=", 1) for line in out.with_suffix(".env").read_text().splitlines()
    )
    assert environment["YMIR_DROPBOX_PACKAGE"] == "it's a <model>.tar.gz"
    assert environment["YMIR_DROPBOX_STATUS"] == "imported"
    assert environment["YMIR_DROPBOX_SHA256"] == row.sha256
    assert environment["YMIR_DROPBOX_MODEL_HASH"] == "d" * 40
    assert environment["YMIR_DROPBOX_ATTEMPT"] == str(row.id)
    assert environment["YMIR_DROPBOX_MAP"] == "0.9"


def test_a_failing_command_is_logged_and_retried_not_raised(
    ledger: Ledger, tmp_path: Path, started: list[Notifier], logs: list[dict[str, Any]]
) -> None:
    script = write_script(tmp_path / "broken", 'echo "receiver said no" >&2\nexit 3\n')
    notifier = start(started, notify_config(tmp_path, command=[str(script)], retries=1))

    notifier.send(settled_row(ledger, "a.tar.gz"))

    failed = wait_until(lambda: events(logs, "notification_failed"), 10, "the failure logged")
    assert failed[0]["reason"] == "exit status 3: receiver said no"
    assert failed[0]["tries"] == 2
    assert failed[0]["receiver"] == "command"
    assert len(events(logs, "notification_retry")) == 1


def test_a_missing_program_is_not_retried(
    ledger: Ledger, tmp_path: Path, started: list[Notifier], logs: list[dict[str, Any]]
) -> None:
    notifier = start(started, notify_config(tmp_path, command=[str(tmp_path / "absent")]))

    notifier.send(settled_row(ledger, "a.tar.gz"))

    failed = wait_until(lambda: events(logs, "notification_failed"), 10, "the failure logged")
    assert failed[0]["tries"] == 1
    assert "cannot run" in failed[0]["reason"]


def test_a_command_that_hangs_is_killed_with_what_it_started(
    ledger: Ledger, tmp_path: Path, started: list[Notifier], logs: list[dict[str, Any]]
) -> None:
    pid_file = tmp_path / "child.pid"
    script = write_script(tmp_path / "slow", f'sleep 60 &\necho $! > "{pid_file}"\nwait\n')
    notifier = start(
        started, notify_config(tmp_path, command=[str(script)], timeout=0.5, retries=0)
    )

    notifier.send(settled_row(ledger, "a.tar.gz"))

    failed = wait_until(lambda: events(logs, "notification_failed"), 10, "the timeout logged")
    assert "killed" in failed[0]["reason"]
    child = int(pid_file.read_text())
    wait_until(lambda: not Path(f"/proc/{child}").exists() or _zombie(child), 5, "child gone")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_command_and_webhook_each_get_every_outcome(
    receiver: Receiver, ledger: Ledger, tmp_path: Path, started: list[Notifier]
) -> None:
    seen = tmp_path / "seen"
    script = write_script(tmp_path / "count", f'echo "$YMIR_DROPBOX_PACKAGE" >> "{seen}"\n')
    config = notify_config(tmp_path, command=[str(script)], webhook=receiver.url)
    notifier = start(started, config)

    for number in range(3):
        notifier.send(settled_row(ledger, f"p{number}.tar.gz"))

    expected = ["p0.tar.gz", "p1.tar.gz", "p2.tar.gz"]
    wait_until(lambda: receiver.delivered() == expected, 10, "the webhook got all three")
    wait_until(
        lambda: seen.exists() and seen.read_text().split() == expected, 10, "the command too"
    )


def test_a_receiver_trickling_its_answer_is_cut_off_at_the_timeout() -> None:
    """The timeout once bounded each read: a byte every 0.3 s held a 1 s delivery for ever."""
    import socket

    from ymir_dropbox.operations.notifications import DeliveryFailed, post_webhook

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    stop = threading.Event()

    def trickle() -> None:
        connection, _ = server.accept()
        with connection:
            connection.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100:
                if stop.is_set():
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.3)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    started = time.monotonic()
    with pytest.raises(DeliveryFailed, match="timed out"):
        post_webhook(f"http://127.0.0.1:{port}/hook", {"package": "p"}, timeout=1.0)
    took = time.monotonic() - started
    stop.set()
    server.close()
    assert took < 3.0, took
