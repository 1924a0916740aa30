"""The private sshd carries rsync the way ``ymir-dropbox push`` relies on it.

Each test copies with the real rsync over the real ssh to a real sshd on 127.0.0.1: a file
arrives whole, it is written under a hidden temporary name and renamed, ``--ignore-existing``
leaves an existing file alone and does not name it, and a key sshd does not know is refused.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from sshd import SshServer, generate_key, sshd_fixture  # noqa: F401

RSYNC_TIMEOUT = 20.0


@pytest.fixture
def rsync() -> str:
    """The rsync executable; missing, the test fails (``.ci/run`` installs it)."""
    found = shutil.which("rsync")
    if found is None:
        pytest.fail("rsync not found: apt-get install rsync (see .ci/run)")
    return found


def run_rsync(rsync: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run rsync to completion, its output captured as text."""
    return subprocess.run(
        [rsync, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=RSYNC_TIMEOUT,
    )


def explain(result: subprocess.CompletedProcess[str], server: SshServer) -> str:
    """rsync's output and sshd's log, for an assertion message."""
    return (
        f"rsync exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}\n"
        f"sshd log:\n{server.log_text()}"
    )


def hidden_names(folder: Path) -> list[str]:
    """Dot files in ``folder``: an rsync temporary left behind would be one."""
    return sorted(name for name in os.listdir(folder) if name.startswith("."))


def test_rsync_copies_a_file_into_a_folder(sshd: SshServer, rsync: str, tmp_path: Path) -> None:
    source = tmp_path / "model.tar.gz"
    source.write_bytes(os.urandom(100_000))
    dest = tmp_path / "remote" / "inbox"
    dest.mkdir(parents=True)

    result = run_rsync(rsync, "-a", "--rsh", sshd.rsh, str(source), sshd.destination(f"{dest}/"))

    assert result.returncode == 0, explain(result, sshd)
    assert (dest / "model.tar.gz").read_bytes() == source.read_bytes()
    assert "Accepted publickey for " + sshd.user in sshd.log_text()


def test_rsync_writes_a_hidden_temporary_then_renames_it(
    sshd: SshServer, rsync: str, tmp_path: Path
) -> None:
    """Throttled, the transfer lasts long enough to see ``.NAME.XXXXXX`` before the rename."""
    source = tmp_path / "model.tar.gz"
    source.write_bytes(os.urandom(256 * 1024))
    dest = tmp_path / "remote"
    dest.mkdir()
    temporary = re.compile(r"^\.model\.tar\.gz\.[A-Za-z0-9]{6}$")

    process = subprocess.Popen(
        [
            rsync,
            "-a",
            "--bwlimit=1024",
            "--rsh",
            sshd.rsh,
            str(source),
            sshd.destination(f"{dest}/"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: set[str] = set()
    deadline = time.monotonic() + RSYNC_TIMEOUT
    while process.poll() is None and time.monotonic() < deadline:
        seen.update(os.listdir(dest))
        time.sleep(0.005)
    if process.poll() is None:
        process.kill()
    stdout, stderr = process.communicate()

    assert process.returncode == 0, f"{stdout}\n{stderr}\n{sshd.log_text()}"
    hidden = sorted(name for name in seen if temporary.match(name))
    assert hidden, f"no hidden temporary seen during the transfer, only {sorted(seen)}"
    assert os.listdir(dest) == ["model.tar.gz"]
    assert (dest / "model.tar.gz").read_bytes() == source.read_bytes()


def test_ignore_existing_keeps_the_file_there_and_does_not_name_it(
    sshd: SshServer, rsync: str, tmp_path: Path
) -> None:
    """``push`` tells "already there" from "sent" by the names ``--out-format=%n`` prints."""
    sources = tmp_path / "outbox"
    sources.mkdir()
    (sources / "old.tar.gz").write_bytes(b"the new bytes")
    (sources / "new.tar.gz").write_bytes(b"a package never sent")
    dest = tmp_path / "remote"
    dest.mkdir()
    (dest / "old.tar.gz").write_bytes(b"what was delivered before")

    result = run_rsync(
        rsync,
        "-a",
        "--ignore-existing",
        "--out-format=%n",
        "--rsh",
        sshd.rsh,
        str(sources / "old.tar.gz"),
        str(sources / "new.tar.gz"),
        sshd.destination(f"{dest}/"),
    )

    assert result.returncode == 0, explain(result, sshd)
    assert result.stdout.splitlines() == ["new.tar.gz"]
    assert (dest / "old.tar.gz").read_bytes() == b"what was delivered before"
    assert (dest / "new.tar.gz").read_bytes() == b"a package never sent"
    assert hidden_names(dest) == []


def test_a_key_sshd_does_not_know_is_refused(sshd: SshServer, rsync: str, tmp_path: Path) -> None:
    stranger = generate_key(tmp_path / "stranger_ed25519")
    source = tmp_path / "model.tar.gz"
    source.write_bytes(b"not welcome")
    dest = tmp_path / "remote"
    dest.mkdir()

    result = run_rsync(
        rsync, "-a", "--rsh", sshd.rsh_with(stranger), str(source), sshd.destination(f"{dest}/")
    )

    assert result.returncode != 0, explain(result, sshd)
    assert "Permission denied (publickey)" in result.stderr, explain(result, sshd)
    assert os.listdir(dest) == []
    assert "Accepted publickey" not in sshd.log_text()


def test_the_users_own_ssh_folder_is_left_alone(sshd: SshServer, tmp_path: Path) -> None:
    """The client reads and writes only our files: ``~/.ssh`` is as it was (or still absent)."""
    home_ssh = Path(os.path.expanduser("~" + sshd.user)) / ".ssh"

    def snapshot() -> dict[str, int] | None:
        if not home_ssh.exists():
            return None
        return {entry.name: entry.stat().st_mtime_ns for entry in home_ssh.iterdir()}

    before = snapshot()
    result = subprocess.run(
        [*sshd.ssh_args(), sshd.host, "true"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=RSYNC_TIMEOUT,
    )

    assert result.returncode == 0, f"{result.stderr}\n{sshd.log_text()}"
    assert snapshot() == before
