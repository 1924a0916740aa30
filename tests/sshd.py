"""A real, private sshd on 127.0.0.1 for tests that deliver files with rsync over ssh.

``private_sshd(folder)`` generates a host key and a client key pair under ``folder``, writes
an sshd_config of its own (public key only, the current user only, a free port), runs
``/usr/sbin/sshd -D -e`` until the block ends and yields an :class:`SshServer` saying how to
reach it. The client side never reads the user's ``~/.ssh`` (``-F /dev/null``, a known_hosts
file of our own, no agent), so tests leave the real user's ssh setup as it was.

Use the ``sshd`` fixture by importing it into a test module (conftest.py stays untouched);
it is defined as ``sshd_fixture`` so that test arguments named ``sshd`` do not shadow an
import (ruff F811)::

    from sshd import SshServer, sshd_fixture  # noqa: F401

    def test_copy(sshd: SshServer, tmp_path: Path) -> None:
        dest = tmp_path / "inbox"
        dest.mkdir()
        run(["rsync", "-a", "--rsh", sshd.rsh, str(src), sshd.destination(f"{dest}/")])

or call ``with private_sshd(tmp_path / "sshd") as server:`` from a fixture of your own.
Missing OpenSSH tools fail the test (never skip): ``.ci/run`` installs them.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")
HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
PORT_ATTEMPTS = 5


@dataclass(frozen=True)
class SshServer:
    """How to reach a running private sshd, and what it logged."""

    host: str
    port: int
    user: str
    key: Path
    known_hosts: Path
    log: Path
    process: subprocess.Popen[bytes]

    def ssh_args(self, key: Path | None = None) -> list[str]:
        """The ssh command (as argv) logging in with ``key`` (default: the authorized key)."""
        return [
            "ssh",
            "-F",
            "/dev/null",
            "-p",
            str(self.port),
            "-i",
            str(key or self.key),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "IdentityAgent=none",
            "-o",
            "ConnectTimeout=10",
        ]

    def rsh_with(self, key: Path) -> str:
        """The ``--rsh`` string for rsync logging in with another key."""
        return shlex.join(self.ssh_args(key))

    @property
    def rsh(self) -> str:
        """The ``--rsh`` string for rsync, logging in with the authorized key."""
        return shlex.join(self.ssh_args())

    def destination(self, path: str | os.PathLike[str]) -> str:
        """``user@127.0.0.1:/abs/path``; a trailing slash on a ``str`` path is kept."""
        text = os.fspath(path)
        absolute = os.path.abspath(text)
        if text.endswith("/") and not absolute.endswith("/"):
            absolute += "/"
        return f"{self.user}@{self.host}:{absolute}"

    def log_text(self) -> str:
        """What sshd has logged so far (for failure messages)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def require_tools() -> None:
    """Fail (never skip) when an OpenSSH program the tests need is not installed."""
    if not SSHD.exists():
        pytest.fail(f"{SSHD} not found: apt-get install openssh-server (see .ci/run)")
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: apt-get install openssh-client (see .ci/run)")


def generate_key(path: Path) -> Path:
    """A fresh ed25519 key pair at ``path`` and ``path.pub``, private part mode 0600."""
    require_tools()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    path.chmod(0o600)  # ssh and sshd both refuse a private key others can read
    return path


def public_key(key: Path) -> str:
    """The ``.pub`` line ssh-keygen wrote beside the private ``key``."""
    return Path(f"{key}.pub").read_text()


def free_port() -> int:
    """A port nobody listens on right now (sshd may still lose it to a race: we retry)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def ensure_privsep_dir() -> None:
    """sshd started by root refuses to run without /run/sshd (a tmpfs, empty after boot)."""
    if os.geteuid() != 0:
        return  # an unprivileged sshd does not chroot, so it needs no such folder
    try:
        PRIVSEP_DIR.mkdir()
    except FileExistsError:
        return
    PRIVSEP_DIR.chmod(0o755)


def sshd_config(folder: Path, port: int, user: str) -> str:
    """A config that reads nothing from /etc/ssh and lets ``user`` in by public key only."""
    lines = [
        f"ListenAddress {HOST}",
        f"Port {port}",
        f"HostKey {folder / 'host_ed25519'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}",
        f"PidFile {folder / 'sshd.pid'}",
        f"AllowUsers {user}",
        "AuthenticationMethods publickey",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "StrictModes no",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "X11Forwarding no",
        "AllowAgentForwarding no",
        "AllowTcpForwarding no",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
    ]
    return "\n".join(lines) + "\n"


def banner_received(port: int) -> bool:
    """True when something on ``port`` accepts a connection and speaks SSH first."""
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as connection:
            return connection.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def start_sshd(config: Path, log: Path, port: int) -> subprocess.Popen[bytes] | None:
    """Start sshd and wait until it serves ``port``; None when the port was taken meanwhile."""
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
        )
    listening = f"Server listening on {HOST} port {port}."
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text(errors="replace")
            if "Address already in use" in text:
                return None
            pytest.fail(f"sshd exited with {process.returncode} at start:\n{text}")
        if listening in log.read_text(errors="replace") and banner_received(port):
            return process
        time.sleep(0.02)
    stop(process)
    pytest.fail(f"sshd did not serve port {port} within {START_TIMEOUT}s:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate sshd and wait for it; kill it if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def private_sshd(folder: Path) -> Iterator[SshServer]:
    """Run a private sshd whose keys, config, pid file and log live in ``folder``."""
    require_tools()
    if any(char.isspace() or char in "'\"\\" for char in str(folder)):
        raise ValueError(f"ssh options cannot name files under {folder!r}: pick a plain path")
    folder.mkdir(parents=True, exist_ok=True)
    ensure_privsep_dir()
    user = pwd.getpwuid(os.geteuid()).pw_name
    host_key = generate_key(folder / "host_ed25519")
    key = generate_key(folder / "client_ed25519")
    (folder / "authorized_keys").write_text(public_key(key))
    config = folder / "sshd_config"
    log = folder / "sshd.log"
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        config.write_text(sshd_config(folder, port, user))
        process = start_sshd(config, log, port)
        if process is not None:
            break
    else:
        pytest.fail(f"sshd lost its port to another process {PORT_ATTEMPTS} times in a row")
    known_hosts = folder / "known_hosts"
    host_type, host_blob = public_key(host_key).split()[:2]
    known_hosts.write_text(f"[{HOST}]:{port} {host_type} {host_blob}\n")
    server = SshServer(HOST, port, user, key, known_hosts, log, process)
    try:
        yield server
    finally:
        stop(process)


@pytest.fixture(name="sshd")
def sshd_fixture(tmp_path: Path) -> Iterator[SshServer]:
    """A private sshd for one test, its files under ``tmp_path / "sshd"``."""
    with private_sshd(tmp_path / "sshd") as server:
        yield server
