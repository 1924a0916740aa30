"""``ymir-dropbox push SOURCE... DEST``, end to end: a real daemon with its listener, real
package files and training runs, delivery into a folder or with the real rsync over a
private sshd, and ``--wait`` learning each verdict from ``GET /packages/<sha256>``.

Every push runs as a subprocess (``python -m ymir_dropbox`` on this checkout), every wait is
a deadline on a polled condition, and every test that ran a daemon ends on its invariants.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import (
    Dropbox,
    Dropboxes,
    dropboxes,
    invalid_package,
    sha256_of,
    valid_package,
    wait_until,
    write_large_package,
)
from factory import seed_entries, write_folder
from sshd import SshServer, sshd_fixture  # noqa: F401
from training_runs import tree, yolov5_run

ROOT = Path(__file__).resolve().parents[2]  # the checkout whose code runs
WORKTREE = {"PYTHONPATH": str(ROOT)}
PUSH_TIMEOUT = 60.0  # a push subprocess that runs longer than this has hung
SCRATCH_PREFIX = "ymir-dropbox-push-"
VERDICT_KEYS = {
    "package",
    "sha256",
    "status",
    "attempt",
    "model_hash",
    "mAP",
    "best_stage_name",
    "duplicate_of",
    "problems",
    "ymir_project_id",
    "ymir_model_id",
    "ymir_group_name",
    "ymir_model_name",
    "warnings",
    # Every verdict object has every key, whatever its status: these are null for a verdict.
    "reached",
    "error",
    "last_status",
    "step",
    "percent",
    "to",
    "source",
}


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Dropboxes]:
    with dropboxes(tmp_path) as made:
        yield made


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def listening(make: Dropboxes, name: str = "layout") -> tuple[Dropbox, str]:
    """A layout whose daemon serves its listener on a free port, and that listener's URL."""
    port = free_port()
    dropbox = make(
        name,
        settle_seconds=0.3,
        poll_interval=0.1,
        sections={"metrics": {"listen": f"127.0.0.1:{port}"}},
    )
    return dropbox, f"http://127.0.0.1:{port}"


def start(dropbox: Dropbox, env: dict[str, str] | None = None) -> None:
    """Start the daemon of this checkout (not whatever ``pip install -e`` points at)."""
    dropbox.start(env={**WORKTREE, **(env or {})})


def push_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if key != "YMIR_DROPBOX_CONFIG"}
    environment.update(WORKTREE)
    environment.update(extra or {})
    return environment


def push_command(dropbox: Dropbox, *arguments: str | Path) -> list[str]:
    """``ymir-dropbox --config CFG push ARGUMENTS`` as this checkout runs it."""
    return [
        sys.executable,
        "-m",
        "ymir_dropbox",
        "--config",
        str(dropbox.config_path),
        "push",
        *map(str, arguments),
    ]


def push(
    dropbox: Dropbox, *arguments: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``push`` to its end, as :meth:`Dropbox.cli` runs a command (cwd: the layout's root,
    never a checkout, so ``-m`` finds this checkout's code through PYTHONPATH only)."""
    return subprocess.run(
        push_command(dropbox, *arguments),
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=PUSH_TIMEOUT,
        check=False,
        cwd=dropbox.root,
        env=push_environment(env),
        stdin=subprocess.DEVNULL,
    )


@contextmanager
def push_in_background(
    dropbox: Dropbox, *arguments: str | Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """A ``push`` left running while the test acts; killed if the test ends before it."""
    process = subprocess.Popen(
        push_command(dropbox, *arguments),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="backslashreplace",
        cwd=dropbox.root,
        env=push_environment(env),
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def delivered(dropbox: Dropbox, pushing: subprocess.Popen[str], name: str) -> None:
    """Wait until the push running in the background has put ``name`` into the inbox (or
    has ended)."""
    wait_until(
        lambda: (dropbox.inbox / name).exists() or pushing.poll() is not None,
        30,
        "the push delivers into the inbox",
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=PUSH_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"push did not end within {PUSH_TIMEOUT:g}s:\n{out}\n{err}") from None
    return process.returncode, out, err


def said(
    done: subprocess.CompletedProcess[str],
    dropbox: Dropbox | None = None,
    url: str | None = None,
    sha256: str | None = None,
) -> str:
    """What a push printed and, for a failure message, what its daemon logged last, the
    ledger held and the listener answers now about these bytes."""
    text = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    if dropbox is not None:
        rows = [
            (row["id"], row["package"], row["status"], row["place"], row["received_at"])
            for row in dropbox.ledger_rows()
        ]
        text += f"\nledger: {rows}\ndaemon log:\n{dropbox.tail()}"
    if url is not None and sha256 is not None:
        try:
            answer = ask(f"{url}/packages/{sha256}")
            text += f"\nthe listener now: {answer.code} {answer.body!r}"
        except OSError as error:
            text += f"\nthe listener now: {error!r}"
    return text


def package_file(folder: Path, name: str, data: bytes) -> Path:
    """A package file on the "training server", outside every folder the daemon watches."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def imported_rows(dropbox: Dropbox, sha256: str) -> list[dict[str, Any]]:
    return [
        row
        for row in dropbox.ledger_rows()
        if row["sha256"] == sha256 and row["status"] == "imported"
    ]


def row_of(dropbox: Dropbox, package: str, status: str) -> dict[str, Any]:
    [row] = [
        row
        for row in dropbox.ledger_rows()
        if row["package"] == package and row["status"] == status
    ]
    return row


def imported_line(row: dict[str, Any], name: str) -> str:
    return (
        f"imported: {name} model hash {row['model_hash']}, "
        f"best stage {row['best_stage_name']}, mAP {row['mAP']}"
    )


def scratch_folders(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith(SCRATCH_PREFIX))


@contextmanager
def silent_listener() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP server on 127.0.0.1 that accepts every connection and never sends a byte:
    yields its port and the connections it accepted."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    accepted: list[socket.socket] = []
    stopping = threading.Event()

    def accept() -> None:
        while not stopping.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(connection)

    thread = threading.Thread(target=accept, name="silent-listener", daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stopping.set()
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()
        server.close()


def refused_url() -> str:
    """A status URL where nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


@dataclass(frozen=True)
class Served:
    """A running daemon that has imported one package and failed another."""

    dropbox: Dropbox
    url: str
    root: Path
    imported: str  # sha256
    failed: str  # sha256


@dataclass(frozen=True)
class Answer:
    code: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        document = json.loads(self.body)
        assert isinstance(document, dict), self.body
        return document


def ask(url: str, method: str = "GET", data: bytes | None = None) -> Answer:
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Answer(error.code, dict(error.headers), error.read())


@pytest.fixture(scope="class")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One daemon for :class:`TestPackagesEndpoint`, whose tests only read."""
    root = tmp_path_factory.mktemp("served")
    with dropboxes(root) as made:
        dropbox, url = listening(made)
        start(dropbox)
        good = dropbox.drop_valid("good.tar.gz")
        bad = dropbox.drop_invalid("bad.tar.gz")
        dropbox.wait_settled()
        yield Served(dropbox, url, root, good.sha256, bad.sha256)
        dropbox.assert_invariants()
        assert dropbox.stop() == 0


class TestPushIntoAFolder:
    """A package file pushed into the daemon's inbox folder."""

    def test_without_wait_the_package_is_delivered_whole_under_its_name(
        self, make: Dropboxes, tmp_path: Path
    ) -> None:
        dropbox = make()  # no daemon: what push leaves in the inbox stays there to look at
        package = package_file(tmp_path / "server", "model.tar.gz", valid_package("no wait"))

        done = push(dropbox, package, dropbox.inbox)

        assert done.returncode == 0, said(done)
        target = dropbox.inbox / "model.tar.gz"
        assert done.stdout == f"delivered: model.tar.gz to {target} (sha256 {sha256_of(package)})\n"
        assert os.listdir(dropbox.inbox) == ["model.tar.gz"]  # no hidden temporary left
        assert target.read_bytes() == package.read_bytes()

    def test_a_package_pushed_into_the_inbox_with_wait_is_imported_and_filed_in_done(
        self, make: Dropboxes, tmp_path: Path
    ) -> None:
        dropbox, url = listening(make)
        start(dropbox)
        package = package_file(tmp_path / "server", "model.tar.gz", valid_package("one"))
        sha256 = sha256_of(package)

        done = push(
            dropbox, package, dropbox.inbox, "--wait", "--status-url", url, "--timeout", "30"
        )
        dropbox.record("model.tar.gz", package)

        assert done.returncode == 0, said(done, dropbox)
        [row] = imported_rows(dropbox, sha256)
        assert done.stdout.splitlines() == [imported_line(row, "model.tar.gz")]
        assert dropbox.files("done") == {"model.tar.gz": sha256}
        assert [row["status"] for row in dropbox.ledger_rows()] == ["imported"]
        assert package.read_bytes() == valid_package("one")  # the source is left as it was
        dropbox.wait_settled()
        dropbox.assert_invariants()

    def test_one_invalid_package_among_several_fails_alone_and_the_push_exits_1(
        self, make: Dropboxes, tmp_path: Path
    ) -> None:
        dropbox, url = listening(make)
        start(dropbox)
        good = package_file(tmp_path / "server", "good.tar.gz", valid_package("good"))
        bad = package_file(tmp_path / "server", "bad.tar.gz", invalid_package("bad"))

        done = push(
            dropbox, good, bad, dropbox.inbox, "--wait", "--status-url", url, "--timeout", "30"
        )
        dropbox.record("good.tar.gz", good)
        dropbox.record("bad.tar.gz", bad)

        assert done.returncode == 1, said(done, dropbox)
        row = row_of(dropbox, "good.tar.gz", "imported")
        assert done.stdout.splitlines() == [
            imported_line(row, "good.tar.gz"),
            "failed: bad.tar.gz",
            "  info.missing [ymir-info.yaml]: the archive has no ymir-info.yaml",
        ]
        dropbox.wait_settled()
        assert dropbox.files("failed") == {"bad.tar.gz": sha256_of(bad)}
        assert dropbox.error_files() == {"bad.tar.gz.error.json", "bad.tar.gz.error.txt"}
        assert dropbox.files("done") == {"good.tar.gz": sha256_of(good)}
        dropbox.assert_invariants()

    def test_the_same_bytes_pushed_again_are_a_duplicate_of_the_first_import(
        self, make: Dropboxes, tmp_path: Path
    ) -> None:
        """Once the first delivery is imported and filed, the same bytes pushed under the same
        name, then under another: each answer is about its own delivery (a duplicate), never
        the first import told again, and nothing is imported twice."""
        dropbox, url = listening(make)
        start(dropbox)
        package = package_file(tmp_path / "server", "model.tar.gz", valid_package("again"))
        sha256 = sha256_of(package)
        dropbox.drop("model.tar.gz", package.read_bytes())
        dropbox.wait_settled()
        [imported] = imported_rows(dropbox, sha256)
        duplicate = f"of attempt {imported['id']} (model hash {imported['model_hash']})"
        wait = ("--wait", "--status-url", url, "--timeout", "30")

        same_name = push(dropbox, package, dropbox.inbox, *wait)
        dropbox.record("model.tar.gz", package)
        other_name = push(dropbox, package, dropbox.inbox, "--name", "copy.tar.gz", *wait)
        dropbox.record("copy.tar.gz", package)

        assert same_name.returncode == 0, said(same_name, dropbox, url, sha256)
        assert same_name.stdout == f"duplicate: model.tar.gz {duplicate}\n"
        assert other_name.returncode == 0, said(other_name, dropbox, url, sha256)
        assert other_name.stdout == f"duplicate: copy.tar.gz {duplicate}\n"
        assert imported_rows(dropbox, sha256) == [imported]
        statuses = [row["status"] for row in dropbox.ledger_rows() if row["sha256"] == sha256]
        assert statuses == ["imported", "duplicate", "duplicate"]
        dropbox.wait_settled()
        dropbox.assert_invariants()

    def test_json_gives_one_verdict_object_per_package_with_the_ledgers_values(
        self, make: Dropboxes, tmp_path: Path
    ) -> None:
        dropbox, url = listening(make)
        start(dropbox)
        good = package_file(tmp_path / "server", "good.tar.gz", valid_package("json"))
        bad = package_file(tmp_path / "server", "bad.tar.gz", invalid_package("json"))

        done = push(
            dropbox,
            good,
            bad,
            dropbox.inbox,
            "--wait",
            "--status-url",
            url,
            "--timeout",
            "30",
            "--json",
        )
        dropbox.record("good.tar.gz", good)
        dropbox.record("bad.tar.gz", bad)

        assert done.returncode == 1, said(done, dropbox)
        verdicts = [json.loads(line) for line in done.stdout.splitlines()]
        assert [set(verdict) for verdict in verdicts] == [VERDICT_KEYS, VERDICT_KEYS]
        imported, failed = verdicts
        row = row_of(dropbox, "good.tar.gz", "imported")
        assert imported == {
            "package": "good.tar.gz",
            "sha256": sha256_of(good),
            "status": "imported",
            "attempt": row["id"],
            "model_hash": row["model_hash"],
            "mAP": row["mAP"],
            "best_stage_name": row["best_stage_name"],
            "duplicate_of": None,
            "problems": [],
            "ymir_project_id": None,
            "ymir_model_id": None,
            "ymir_group_name": None,
            "ymir_model_name": None,
            "warnings": [],
            **dict.fromkeys(("reached", "error", "last_status", "step", "percent", "to", "source")),
        }
        row = row_of(dropbox, "bad.tar.gz", "failed")
        assert (failed["package"], failed["sha256"]) == ("bad.tar.gz", sha256_of(bad))
        assert (failed["status"], failed["attempt"], failed["model_hash"]) == (
            "failed",
            row["id"],
            None,
        )
        assert failed["problems"] == row["errors"]
        assert [(problem["code"], problem["field"]) for problem in failed["problems"]] == [
            ("info.missing", "ymir-info.yaml")
        ]
        dropbox.wait_settled()
        dropbox.assert_invariants()


class TestPushAFolder:
    """A folder ``push`` packs first, outside the folder, into a scratch folder of its own."""

    def test_a_yolov5_run_is_packed_outside_the_run_and_imported(
        self, make: Dropboxes, tmp_path: Path
    ) -> None:
        dropbox, url = listening(make)
        start(dropbox)
        run = yolov5_run(tmp_path / "server" / "yolov5")
        before = tree(run.parent.parent.parent)  # the clone: the run, its dataset yaml, all of it
        scratch = tmp_path / "tmpdir"
        scratch.mkdir()

        done = push(
            dropbox,
            run,
            dropbox.inbox,
            "--from",
            "yolov5",
            "--wait",
            "--status-url",
            url,
            "--timeout",
            "30",
            env={"TMPDIR": str(scratch)},
        )

        assert done.returncode == 0, said(done, dropbox)
        row = row_of(dropbox, "exp2.tar.gz", "imported")
        assert done.stdout.splitlines() == [imported_line(row, "exp2.tar.gz")]
        assert (row["best_stage_name"], row["mAP"]) == ("best", 0.64)
        assert tree(run.parent.parent.parent) == before  # nothing written into the run
        assert scratch_folders(scratch) == []
        assert list(scratch.iterdir()) == []
        dropbox.record("exp2.tar.gz", dropbox.folder("done") / "exp2.tar.gz")
        dropbox.wait_settled()
        dropbox.assert_invariants()

    def test_a_folder_holding_its_own_ymir_info_is_packed_and_imported(
        self, make: Dropboxes, tmp_path: Path
    ) -> None:
        dropbox, url = listening(make)
        start(dropbox)
        folder = write_folder(tmp_path / "server" / "model", seed_entries())
        before = tree(folder)

        done = push(
            dropbox, folder, dropbox.inbox, "--wait", "--status-url", url, "--timeout", "30"
        )

        assert done.returncode == 0, said(done, dropbox)
        row = row_of(dropbox, "model.tar.gz", "imported")
        assert done.stdout.splitlines() == [imported_line(row, "model.tar.gz")]
        assert (row["best_stage_name"], row["mAP"], row["class_names"]) == (
            "stage_2000",
            0.6,
            ["person", "cat"],
        )
        assert tree(folder) == before
        dropbox.record("model.tar.gz", dropbox.folder("done") / "model.tar.gz")
        dropbox.wait_settled()
        dropbox.assert_invariants()


class TestPushOverSsh:
    """DEST ``user@host:path``: the real rsync over a private sshd on 127.0.0.1."""

    def test_a_package_pushed_with_rsync_over_ssh_is_imported_and_never_taken_half_written(
        self, make: Dropboxes, sshd: SshServer, tmp_path: Path
    ) -> None:
        dropbox, url = listening(make)
        start(dropbox)
        (tmp_path / "server").mkdir()
        package = write_large_package(tmp_path / "server" / "big.tar.gz", 8 * 1024 * 1024)
        size = package.stat().st_size

        done = push(
            dropbox,
            package,
            sshd.destination(dropbox.inbox),
            "--rsh",
            sshd.rsh,
            "--wait",
            "--status-url",
            url,
            "--timeout",
            "30",
        )
        dropbox.record("big.tar.gz", package)

        assert done.returncode == 0, said(done, dropbox) + "\nsshd log:\n" + sshd.log_text()
        row = row_of(dropbox, "big.tar.gz", "imported")
        assert done.stdout.splitlines() == [imported_line(row, "big.tar.gz")]
        assert "Accepted publickey for " + sshd.user in sshd.log_text()
        rows = dropbox.ledger_rows()
        assert [(entry["package"], entry["size"]) for entry in rows] == [("big.tar.gz", size)]
        dropbox.wait_settled()
        assert dropbox.files("done") == {"big.tar.gz": sha256_of(package)}
        dropbox.assert_invariants()

    def test_rsync_over_ssh_never_overwrites_a_name_already_in_the_remote_inbox(
        self, make: Dropboxes, sshd: SshServer, tmp_path: Path
    ) -> None:
        """The remote inbox holds model.tar.gz (no daemon has taken it yet): another package
        pushed under that name leaves it alone, and the push says so."""
        dropbox = make()  # its daemon is not running: the file stays in the inbox
        existing = valid_package("there first")
        (dropbox.inbox / "model.tar.gz").write_bytes(existing)
        other = package_file(tmp_path / "server", "other.tar.gz", valid_package("second"))

        done = push(
            dropbox,
            other,
            sshd.destination(dropbox.inbox),
            "--rsh",
            sshd.rsh,
            "--name",
            "model.tar.gz",
        )

        assert done.returncode == 1, said(done, dropbox)
        target = sshd.destination(dropbox.inbox / "model.tar.gz")
        assert done.stdout.splitlines() == [
            "not delivered: model.tar.gz",
            f"  push.not_delivered: {target} already exists; push never overwrites a file",
        ]
        assert (dropbox.inbox / "model.tar.gz").read_bytes() == existing
        assert sorted(os.listdir(dropbox.inbox)) == ["model.tar.gz"]  # no rsync temporary left


class TestDaemonDownWhileAPushWaits:
    """The daemon being down for a while is normal: the push keeps asking until its deadline."""

    def test_a_push_waiting_through_a_daemon_restart_gets_the_verdict(
        self, make: Dropboxes, tmp_path: Path
    ) -> None:
        """The import is held mid-way, the daemon killed (the listener goes away while the push
        waits) and started again: the restarted daemon imports the package and the push, which
        kept asking, is told."""
        dropbox, url = listening(make)
        start(dropbox, env=dropbox.pause_at("validated", "model.tar.gz"))
        package = package_file(tmp_path / "server", "model.tar.gz", valid_package("restart"))
        wait = ("--wait", "--status-url", url, "--timeout", "60")

        with push_in_background(dropbox, package, dropbox.inbox, *wait) as pushing:
            dropbox.record("model.tar.gz", package)
            dropbox.wait_event("paused_at")
            dropbox.kill()
            dropbox.release()
            assert pushing.poll() is None, "the push ended although nothing was final"
            start(dropbox)
            code, out, err = finish(pushing)

        assert code == 0, f"{out}\n{err}"
        row = row_of(dropbox, "model.tar.gz", "imported")
        assert out.splitlines() == [imported_line(row, "model.tar.gz")]
        dropbox.wait_settled()
        dropbox.assert_invariants()

    def test_a_push_delivered_while_the_daemon_is_down_gets_the_verdict_once_it_starts(
        self, make: Dropboxes, tmp_path: Path
    ) -> None:
        """The listener cannot be asked before the delivery: the push learns the daemon's clock
        from its first answer and takes the attempt received since the delivery."""
        dropbox, url = listening(make)
        package = package_file(tmp_path / "server", "model.tar.gz", valid_package("late start"))
        wait = ("--wait", "--status-url", url, "--timeout", "60")

        with push_in_background(dropbox, package, dropbox.inbox, *wait) as pushing:
            dropbox.record("model.tar.gz", package)
            delivered(dropbox, pushing, "model.tar.gz")
            assert pushing.poll() is None, "the push ended before the daemon ever answered"
            start(dropbox)
            code, out, err = finish(pushing)

        assert code == 0, f"{out}\n{err}"
        row = row_of(dropbox, "model.tar.gz", "imported")
        assert out.splitlines() == [imported_line(row, "model.tar.gz")]
        dropbox.wait_settled()
        dropbox.assert_invariants()

    def test_bytes_redelivered_while_the_daemon_is_down_are_told_as_a_duplicate_not_the_old_import(
        self, make: Dropboxes, tmp_path: Path
    ) -> None:
        """The ledger already holds a final import of these bytes under this name: the first
        answer after the start is that old attempt, which the push must not take for its own."""
        dropbox, url = listening(make)
        start(dropbox)
        package = package_file(tmp_path / "server", "model.tar.gz", valid_package("old"))
        dropbox.drop("model.tar.gz", package.read_bytes())
        dropbox.wait_settled()
        [first] = imported_rows(dropbox, sha256_of(package))
        dropbox.stop()
        wait = ("--wait", "--status-url", url, "--timeout", "60")

        with push_in_background(dropbox, package, dropbox.inbox, *wait) as pushing:
            dropbox.record("model.tar.gz", package)
            delivered(dropbox, pushing, "model.tar.gz")
            start(dropbox)
            code, out, err = finish(pushing)

        assert code == 0, f"{out}\n{err}"
        assert out == (
            f"duplicate: model.tar.gz of attempt {first['id']} (model hash {first['model_hash']})\n"
        )
        dropbox.wait_settled()
        dropbox.assert_invariants()


class TestNoAnswer:
    """No verdict within ``--timeout``: exit 3, saying what was (not) heard."""

    def test_a_listener_that_never_answers_ends_the_wait_with_exit_3(
        self, make: Dropboxes, tmp_path: Path
    ) -> None:
        dropbox = make()  # only its folders: the package is delivered, nobody answers
        package = package_file(tmp_path / "server", "model.tar.gz", valid_package("silence"))

        with silent_listener() as (port, accepted):
            started = time.monotonic()
            done = push(
                dropbox,
                package,
                dropbox.inbox,
                "--wait",
                "--status-url",
                f"http://127.0.0.1:{port}",
                "--timeout",
                "1",
            )
            took = time.monotonic() - started

        assert done.returncode == 3, said(done)
        [line] = done.stdout.splitlines()
        assert line.startswith("timed out: model.tar.gz: no verdict within 1 s; "), line
        assert f"the daemon's listener at http://127.0.0.1:{port} was never reached" in line
        assert accepted, "the push never connected to the listener"
        assert took < 10, f"took {took:.1f}s for --timeout 1"
        assert (dropbox.inbox / "model.tar.gz").read_bytes() == package.read_bytes()

    def test_a_listener_that_never_answers_is_named_as_the_reason_of_the_timeout(
        self, make: Dropboxes, tmp_path: Path
    ) -> None:
        dropbox = make()
        package = package_file(tmp_path / "server", "model.tar.gz", valid_package("silent reason"))

        with silent_listener() as (port, _):
            done = push(
                dropbox,
                package,
                dropbox.inbox,
                "--wait",
                "--status-url",
                f"http://127.0.0.1:{port}",
                "--timeout",
                "1",
            )

        assert done.returncode == 3, said(done)
        assert "(None)" not in done.stdout
        assert "no answer within" in done.stdout

    def test_a_wait_on_several_packages_ends_within_its_timeout_when_nobody_answers(
        self, make: Dropboxes, tmp_path: Path
    ) -> None:
        dropbox = make()
        packages = [
            package_file(tmp_path / "server", f"model{number}.tar.gz", valid_package(f"n{number}"))
            for number in range(4)
        ]

        with silent_listener() as (port, _):
            started = time.monotonic()
            done = push(
                dropbox,
                *packages,
                dropbox.inbox,
                "--wait",
                "--status-url",
                f"http://127.0.0.1:{port}",
                "--timeout",
                "2",
            )
            took = time.monotonic() - started

        assert done.returncode == 3, said(done)
        # Were each package's question before its delivery to wait the whole time on its
        # own, four packages would take eight seconds and more.
        assert took < 6, f"--timeout 2 took {took:.1f}s"

    def test_a_status_url_where_nothing_listens_ends_the_wait_with_exit_3(
        self, make: Dropboxes, tmp_path: Path
    ) -> None:
        dropbox = make()
        package = package_file(tmp_path / "server", "model.tar.gz", valid_package("refused"))
        url = refused_url()

        done = push(
            dropbox, package, dropbox.inbox, "--wait", "--status-url", url, "--timeout", "1"
        )

        assert done.returncode == 3, said(done)
        assert done.stdout.splitlines() == [
            "timed out: model.tar.gz: no verdict within 1 s; the daemon's listener at "
            f"{url} was never reached ([Errno 111] Connection refused)"
        ]
        assert (dropbox.inbox / "model.tar.gz").read_bytes() == package.read_bytes()

    def test_a_push_terminated_while_it_waits_leaves_no_scratch_folder(
        self, make: Dropboxes, tmp_path: Path
    ) -> None:
        dropbox = make()
        folder = write_folder(tmp_path / "server" / "model", seed_entries())
        scratch = tmp_path / "tmpdir"
        scratch.mkdir()
        wait = ("--wait", "--status-url", refused_url(), "--timeout", "60")

        environment = {"TMPDIR": str(scratch)}
        with push_in_background(dropbox, folder, dropbox.inbox, *wait, env=environment) as pushing:
            delivered(dropbox, pushing, "model.tar.gz")
            pushing.send_signal(signal.SIGTERM)
            finish(pushing)

        assert scratch_folders(scratch) == []


class TestRefusedBeforeAnythingIsWritten:
    """Usage errors: exit 2, and neither the inbox nor a file in it is touched."""

    def test_a_name_the_daemon_skips_is_refused_before_anything_is_written(
        self, make: Dropboxes, tmp_path: Path
    ) -> None:
        dropbox = make()
        package = package_file(tmp_path / "server", "model.tar.gz", valid_package("part"))

        done = push(dropbox, package, dropbox.inbox, "--name", "model.tar.gz.part")

        assert done.returncode == 2, said(done)
        assert "model.tar.gz.part: the daemon never takes this name" in done.stderr
        assert done.stdout == ""
        assert os.listdir(dropbox.inbox) == []

    def test_a_name_already_in_a_local_inbox_is_refused_and_that_file_kept(
        self, make: Dropboxes, tmp_path: Path
    ) -> None:
        dropbox = make()
        existing = valid_package("already there")
        (dropbox.inbox / "model.tar.gz").write_bytes(existing)
        package = package_file(tmp_path / "server", "model.tar.gz", valid_package("newer"))

        done = push(dropbox, package, dropbox.inbox)

        assert done.returncode == 2, said(done)
        assert (
            f"{dropbox.inbox / 'model.tar.gz'} already exists; push never overwrites" in done.stderr
        )
        assert (dropbox.inbox / "model.tar.gz").read_bytes() == existing
        assert os.listdir(dropbox.inbox) == ["model.tar.gz"]

    def test_a_destination_that_does_not_exist_is_refused(
        self, make: Dropboxes, tmp_path: Path
    ) -> None:
        dropbox = make()
        package = package_file(tmp_path / "server", "model.tar.gz", valid_package("nowhere"))
        missing = tmp_path / "no-such-inbox"

        done = push(dropbox, package, missing)

        assert done.returncode == 2, said(done)
        assert f"DEST {missing} does not exist" in done.stderr
        assert not missing.exists()

    def test_wait_without_a_status_url_is_refused_before_anything_is_written(
        self, make: Dropboxes, tmp_path: Path
    ) -> None:
        dropbox = make()  # its config has no [push] status_url
        package = package_file(tmp_path / "server", "model.tar.gz", valid_package("no url"))

        done = push(dropbox, package, dropbox.inbox, "--wait")

        assert done.returncode == 2, said(done)
        assert "--wait needs the daemon's listener" in done.stderr
        assert os.listdir(dropbox.inbox) == []


@pytest.mark.xdist_group("packages-endpoint")  # one daemon for the class
class TestPackagesEndpoint:
    """``GET /packages/<sha256>`` on the daemon's listener, asked directly with urllib."""

    def test_the_endpoint_tells_an_imported_package_as_final(self, served: Served) -> None:
        answer = ask(f"{served.url}/packages/{served.imported}")

        assert answer.code == 200
        assert answer.headers["Content-Type"] == "application/json"
        document = answer.json
        row = row_of(served.dropbox, "good.tar.gz", "imported")
        assert document["final"] is True
        assert document["status"] == "imported"
        assert document["place"] == "done"
        assert (document["package"], document["sha256"]) == ("good.tar.gz", served.imported)
        assert (document["attempt"], document["model_hash"]) == (row["id"], row["model_hash"])
        assert document["problems"] == []
        assert document["received_at"] == row["received_at"]
        assert isinstance(document["now"], str) and document["now"].endswith("Z")

    def test_the_endpoint_tells_a_failed_package_with_its_problems(self, served: Served) -> None:
        answer = ask(f"{served.url}/packages/{served.failed}")

        assert answer.code == 200
        document = answer.json
        assert (document["status"], document["final"], document["place"]) == (
            "failed",
            True,
            "failed",
        )
        assert [(problem["code"], problem["field"]) for problem in document["problems"]] == [
            ("info.missing", "ymir-info.yaml")
        ]

    def test_the_endpoint_narrows_by_name_and_after(self, served: Served) -> None:
        row = row_of(served.dropbox, "good.tar.gz", "imported")
        base = f"{served.url}/packages/{served.imported}"

        assert ask(f"{base}?name=good.tar.gz&after={row['id'] - 1}").json["attempt"] == row["id"]
        assert ask(f"{base}?name=other.tar.gz").code == 404
        assert ask(f"{base}?after={row['id']}").code == 404
        assert ask(f"{base}?since=2999-01-01T00:00:00Z").code == 404

    def test_the_endpoint_answers_404_with_json_for_bytes_it_never_saw(
        self, served: Served
    ) -> None:
        unknown = hashlib.sha256(b"never delivered").hexdigest()

        answer = ask(f"{served.url}/packages/{unknown}")

        assert answer.code == 404
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.json["sha256"] == unknown
        assert answer.json["status"] == "unknown"

    @pytest.mark.parametrize(
        "path",
        [
            "abc",
            "a" * 63,
            "a" * 65,
            "../etc",
            "%2e%2e%2fetc",
            f"{'a' * 64}?colour=red",
            f"{'a' * 64}?after=-1",
            f"{'a' * 64}?since=yesterday",
        ],
        ids=[
            "abc",
            "63-hex",
            "65-hex",
            "dotdot",
            "encoded-dotdot",
            "unknown-parameter",
            "after",
            "since",
        ],
    )
    def test_the_endpoint_answers_400_with_json_for_what_is_not_a_question(
        self, served: Served, path: str
    ) -> None:
        answer = ask(f"{served.url}/packages/{path}")

        assert answer.code == 400, answer
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.json["error"]

    def test_the_endpoint_refuses_post_with_405_and_says_what_it_allows(
        self, served: Served
    ) -> None:
        answer = ask(f"{served.url}/packages/{served.imported}", method="POST", data=b"{}")

        assert answer.code == 405
        assert answer.headers["Allow"] == "GET, HEAD"

    def test_the_endpoint_answers_head_with_no_body(self, served: Served) -> None:
        answer = ask(f"{served.url}/packages/{served.imported}", method="HEAD")

        assert answer.code == 200
        assert answer.body == b""
        assert int(answer.headers["Content-Length"]) > 0

    def test_the_endpoint_names_no_absolute_path_of_the_daemons_host(self, served: Served) -> None:
        for sha256 in (served.imported, served.failed):
            body = ask(f"{served.url}/packages/{sha256}").body.decode()
            assert str(served.root) not in body
            assert str(served.dropbox.base) not in body
            assert '"/' not in body  # no JSON string value starts with a path
