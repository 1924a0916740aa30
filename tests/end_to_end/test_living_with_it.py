"""What the operator and the uploaders see of a running daemon: why a package failed, what is
in flight, who is told, what is kept. Real daemon, real receivers, real commands."""

from __future__ import annotations

import http.server
import json
import os
import stat
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import Dropboxes, dropboxes, wait_until


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Dropboxes]:
    with dropboxes(tmp_path) as made:
        yield made


class Receiver(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []
        received = self.documents

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()


SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    document = json.load(sys.stdin)
    line = {"stdin": document, "env_status": os.environ["YMIR_DROPBOX_STATUS"]}
    with open(sys.argv[1], "a") as out:
        out.write(json.dumps(line) + "\\n")
    """
)


def test_every_outcome_reaches_the_webhook_and_the_command(
    make: Dropboxes, receiver: Receiver, tmp_path: Path
) -> None:
    script = tmp_path / "announce.py"
    script.write_text(SCRIPT)
    written = tmp_path / "announced.jsonl"
    dropbox = make(
        sections={
            "notify": {
                "webhook": receiver.url,
                "command": [sys.executable, str(script), str(written)],
            }
        }
    )
    dropbox.start()
    dropbox.drop_valid("good.tar.gz")
    dropbox.drop_invalid("bad.tar.gz")
    dropbox.wait_settled()

    wait_until(lambda: len(receiver.documents) == 2, 30, "both outcomes are POSTed")
    by_package = {document["package"]: document for document in receiver.documents}
    assert by_package["good.tar.gz"]["status"] == "imported"
    assert by_package["good.tar.gz"]["model_hash"]
    assert by_package["good.tar.gz"]["uploader"] == "root"
    bad = by_package["bad.tar.gz"]
    assert bad["status"] == "failed"
    assert [problem["code"] for problem in bad["problems"]] == ["info.missing"]
    wait_until(lambda: written.exists() and len(written.read_text().splitlines()) == 2, 30,
               "the command ran for both")  # fmt: skip
    lines = [json.loads(line) for line in written.read_text().splitlines()]
    assert {line["env_status"] for line in lines} == {"imported", "failed"}
    assert {line["stdin"]["package"] for line in lines} == {"good.tar.gz", "bad.tar.gz"}


def test_a_receiver_that_is_down_never_holds_up_an_import(make: Dropboxes) -> None:
    dropbox = make(sections={"notify": {"webhook": "http://127.0.0.1:9/down", "timeout": 5.0}})
    dropbox.start()
    started = time.monotonic()
    for number in range(3):
        dropbox.drop_valid(f"model-{number}.tar.gz")
    dropbox.wait_settled()
    assert time.monotonic() - started < 10
    assert len(dropbox.names("done")) == 3


def test_a_failure_is_logged_as_a_warning_with_its_problems(make: Dropboxes) -> None:
    dropbox = make()
    dropbox.start()
    dropbox.drop_invalid("bad.tar.gz")
    dropbox.wait_settled()
    [failed] = dropbox.events("package_failed")
    assert failed["level"] == "warning"
    assert failed["problems"][0]["code"] == "info.missing"
    assert failed["problems"][0]["field"] == "ymir-info.yaml"
    assert "ymir-info.yaml" in failed["problems"][0]["message"]


def test_status_shows_an_import_in_flight_and_the_last_failures(make: Dropboxes) -> None:
    dropbox = make()
    dropbox.start(env=dropbox.pause_at("validated", "slow.tar.gz"))
    dropbox.drop_invalid("bad.tar.gz")
    dropbox.drop_valid("slow.tar.gz")
    dropbox.wait_event("paused_at")

    def in_flight() -> list[dict[str, Any]]:
        status = json.loads(dropbox.cli("status", "--json", check=True).stdout)
        return [job for job in status["in_flight"] if job["package"] == "slow.tar.gz"]

    [job] = wait_until(in_flight, 10, "status shows the paused import")
    assert job["step"] and job["elapsed_s"] >= 0 and "percent" in job
    text = dropbox.cli("status", check=True).stdout
    assert "slow.tar.gz" in text and "info.missing" in text
    dropbox.release()
    dropbox.wait_settled()
    table = dropbox.cli("ledger", "--status", "failed", check=True).stdout
    assert "reason" in table.splitlines()[0] and "info.missing" in table


def test_error_files_are_readable_by_the_uploaders_group(make: Dropboxes) -> None:
    dropbox = make()
    dropbox.start()
    dropbox.drop_invalid("team/bad.tar.gz")
    dropbox.wait_settled()
    for name in ("bad.tar.gz.error.txt", "bad.tar.gz.error.json"):
        mode = os.stat(dropbox.folder("failed") / "team" / name).st_mode
        assert mode & stat.S_IRGRP, f"{name} is not readable by the group"
    assert os.stat(dropbox.folder("failed") / "team").st_mode & stat.S_IXGRP
