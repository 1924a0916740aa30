"""Running the daemon as an admin does: the default layout, systemd's notify protocol,
Prometheus metrics, the filesystem checks and the choice of watch mode."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from daemon_harness import (
    Dropboxes,
    daemon_command,
    dropboxes,
    valid_package,
    wait_until,
    without_file_permission_bypass,
)

from ymir_dropbox.daemon.watching import choose_mode, filesystem_type


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Dropboxes]:
    with dropboxes(tmp_path) as made:
        yield made


def test_run_without_config_uses_the_default_layout_and_says_where(tmp_path: Path) -> None:
    environment = {key: value for key, value in os.environ.items() if key != "YMIR_DROPBOX_CONFIG"}
    log = tmp_path / "daemon.log"
    with log.open("wb") as stream:
        daemon = subprocess.Popen(
            [*daemon_command(), "run"], cwd=tmp_path, stdout=stream, stderr=stream, env=environment
        )
    try:
        wait_until(lambda: "daemon_ready" in log.read_text(), 30, "the daemon to start")
        inbox = tmp_path / "dropbox" / "inbox"
        assert str(inbox) in log.read_text()
        (inbox / "model.tar.gz").write_bytes(valid_package("default"))
        wait_until(
            lambda: (tmp_path / "dropbox" / "done" / "model.tar.gz").exists(), 30, "the import"
        )
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
    assert len(list((tmp_path / "dropbox" / "models").iterdir())) == 1


def test_systemd_notify_protocol(make: Dropboxes, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(address)
        listener.settimeout(30)
        dropbox = make()
        dropbox.start(env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"}, wait=False)
        received: list[str] = []

        def heard(message: str) -> bool:
            while not any(message in line for line in received):
                received.append(listener.recv(4096).decode())
            return True

        heard("READY=1")
        dropbox.drop_valid("model.tar.gz")
        dropbox.wait_settled()
        heard("WATCHDOG=1")
        heard("imported 1")
        dropbox.send(signal.SIGTERM)
        heard("STOPPING=1")
        assert dropbox.wait_exit() == 0
    status = [line for line in received if line.startswith("STATUS=")]
    assert status and "waiting" in status[0] and "failed 0" in status[-1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_prometheus_metrics(make: Dropboxes) -> None:
    port = free_port()
    dropbox = make(sections={"metrics": {"listen": f"127.0.0.1:{port}"}})
    dropbox.start()
    dropbox.drop_valid("good.tar.gz")
    dropbox.drop_invalid("bad.tar.gz")
    dropbox.wait_settled()

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text: str = response.read().decode()
            return text

    def both_counted() -> str | None:
        page = scrape()
        return page if 'ymir_dropbox_packages_total{status="failed"} 1.0' in page else None

    text = wait_until(both_counted, 10, "metrics of both packages")
    assert 'ymir_dropbox_packages_total{status="imported"} 1.0' in text
    assert "ymir_dropbox_import_duration_seconds_count 2.0" in text
    assert "ymir_dropbox_last_success_timestamp_seconds" in text
    assert "ymir_dropbox_queue_depth" in text
    dropbox.stop()


def test_the_last_success_survives_a_restart(make: Dropboxes) -> None:
    """Read from the ledger at start: an alert on "no success in N hours" must not fire at
    every restart."""
    port = free_port()
    dropbox = make(sections={"metrics": {"listen": f"127.0.0.1:{port}"}})
    dropbox.start()
    dropbox.drop_valid("good.tar.gz")
    dropbox.wait_settled()
    assert dropbox.stop() == 0
    [row] = dropbox.ledger_rows()
    finished = datetime.fromisoformat(row["finished_at"]).timestamp()

    dropbox.start()

    def gauge() -> float | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("ymir_dropbox_last_success_timestamp_seconds "):
                    return float(line.split()[1]) or None
        return None

    assert wait_until(gauge, 10, "the gauge is read") == pytest.approx(finished, abs=0.01)
    dropbox.stop()


def test_folders_on_two_filesystems_are_refused(make: Dropboxes, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dropbox = make(sections={"paths": {"done": str(elsewhere)}})
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(elsewhere)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs here (root needed): {mounted.stderr.decode()}")
    try:
        dropbox.start(wait=False)
        assert dropbox.wait_exit() == 1
        assert "one filesystem" in dropbox.log_text()
    finally:
        subprocess.run(["umount", str(elsewhere)], check=True)


@pytest.mark.parametrize(
    ("kind", "mode"),
    [("nfs4", "polling"), ("cifs", "polling"), ("fuse.sshfs", "polling"), ("ext4", "inotify")],
)
def test_auto_mode_reads_the_mount_table(tmp_path: Path, kind: str, mode: str) -> None:
    inbox = tmp_path / "share" / "inbox"
    inbox.mkdir(parents=True)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        f"40 22 0:50 / {tmp_path / 'share'} rw,relatime shared:2 - {kind} server:/export rw\n"
    )

    assert filesystem_type(inbox, mountinfo) == kind
    assert choose_mode("auto", inbox, mountinfo) == mode
    assert choose_mode("inotify", inbox, mountinfo) == "inotify"


@pytest.mark.parametrize("daemon", ["running", "stopped"])
def test_status_and_ledger_need_only_read_access(make: Dropboxes, daemon: str) -> None:
    """An operator or uploader who can read the ledger, and no more, still sees it."""
    dropbox = make()
    dropbox.start()
    dropbox.drop_valid("model.tar.gz")
    dropbox.wait_settled()
    if daemon == "stopped":
        assert dropbox.stop() == 0
    for path in [dropbox.base, *dropbox.base.glob("ledger.sqlite*")]:
        os.chown(path, 4242, 4242)
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    reader = without_file_permission_bypass()

    for command in (["status", "--json"], ["ledger", "--json"]):
        done = subprocess.run(
            [*reader, *daemon_command(), "--config", str(dropbox.config_path), *command],
            capture_output=True,
            text=True,
            cwd=dropbox.root,
        )
        assert done.returncode == 0, done.stderr
        assert "model.tar.gz" in done.stdout
    assert not dropbox.base.joinpath("ledger.sqlite-journal").exists()
