"""The systemd unit under a real systemd: a Debian bookworm root booted with ``systemd-nspawn -b``.

The root is built once by ``.ci/systemd-root`` (mmdebstrap; cached) and booted read-only with a
tmpfs overlay (``--volatile=overlay``), so every run starts from the same clean system. The
project is installed in it from the working tree with the README's "Running under systemd"
commands (pip offline, from wheels built on the host), and ``/srv/ymir-dropbox`` is a host folder
bound into the container: the tests drop packages there and read the folders directly, and
talk to the container's systemd with ``nsenter`` (systemctl, journalctl).

Needs root, ``systemd-nspawn`` (systemd-container) and the root (``sudo .ci/systemd-root``).
A missing root fails with the command to build it; it is skipped only when
``YMIR_DROPBOX_SYSTEMD_OPTIONAL=1`` says these tests are optional.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import invalid_package, valid_package, wait_until

pytestmark = [pytest.mark.systemd, pytest.mark.xdist_group("systemd")]

REPO = Path(__file__).resolve().parents[2]
ROOT_ENV = "YMIR_DROPBOX_SYSTEMD_ROOT"
OPTIONAL_ENV = "YMIR_DROPBOX_SYSTEMD_OPTIONAL"
SOURCE_ENV = "YMIR_DROPBOX_SYSTEMD_SOURCE"  # the tree to install (default: this working tree)
DEFAULT_ROOT = Path("/var/tmp/ymir-dropbox-systemd-root")
ROOT_STAMP = ".ymir-dropbox-root"
UNIT = "ymir-dropbox"
CONFIG = "/etc/ymir-dropbox/config.toml"
SRC = "/usr/src/ymir-dropbox"  # the working tree's copy, inside the container
WHEELS = "/var/cache/ymir-dropbox-wheels"  # the dependencies' wheels, built on the host
DROPIN = f"/run/systemd/system/{UNIT}.service.d"
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
BOOT_TIMEOUT = 60.0
COMMAND_TIMEOUT = 120.0
MAX_EXPOSURE = 1.5  # `systemd-analyze security` of the unit today: 1.5 OK
STATUS_LINE = re.compile(
    r"^waiting \d+, importing \d+, imported (\d+), duplicates \d+, failed \d+$"
)
# What a copy of the working tree leaves out (caches, virtualenvs, local data).
NOT_COPIED = (
    ".git", ".venv*", ".hypothesis", ".benchmarks", ".pytest_cache", ".mypy_cache",
    ".ruff_cache", "__pycache__", "*.egg-info", "build", "dist", "dropbox",
)  # fmt: skip


# -- the root and the container -------------------------------------------------------------------


def root_path() -> Path:
    return Path(os.environ.get(ROOT_ENV, DEFAULT_ROOT))


def require_root_tree() -> Path:
    root = root_path()
    build = f"sudo {REPO / '.ci' / 'systemd-root'} {root}"
    if not (root / ROOT_STAMP).is_file():
        reason = f"no systemd test root at {root}: build it with `{build}`"
        if os.environ.get(OPTIONAL_ENV) == "1":
            pytest.skip(f"{reason} ({OPTIONAL_ENV}=1: systemd tests are optional)")
        pytest.fail(f"{reason} (or set {OPTIONAL_ENV}=1 to skip these tests)", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the systemd tests boot a container: run them as root", pytrace=False)
    if shutil.which("systemd-nspawn") is None:
        pytest.fail(
            f"systemd-nspawn is missing: `apt-get install systemd-container` (or `{build}`)",
            pytrace=False,
        )
    return root


class Cgroups:
    """A cgroup of our own in each hierarchy nspawn uses, when no systemd on the host gives one.

    Without systemd as the host's PID 1 there is no bus to ask for a scope, so nspawn runs with
    ``--keep-unit`` in the cgroup it was started in, and creates ``payload/`` and
    ``supervisor/`` there: that must not be the hierarchy's root, shared by every run.
    """

    def __init__(self, name: str) -> None:
        self.paths: list[Path] = []
        own = {}
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            number, controllers, current = line.split(":", 2)
            if number == "0":
                own["cgroup2"] = current
            elif controllers == "name=systemd":
                own["name=systemd"] = current
        for line in Path("/proc/self/mounts").read_text().splitlines():
            _, mountpoint, kind, options = line.split()[:4]
            key = "cgroup2" if kind == "cgroup2" else None
            if kind == "cgroup" and "name=systemd" in options.split(","):
                key = "name=systemd"
            if key in own:
                path = Path(mountpoint) / own.pop(key).lstrip("/") / name
                path.mkdir(exist_ok=True)
                self.paths.append(path)

    def enter(self) -> None:
        """In the child, before exec: move this process into the cgroups."""
        for path in self.paths:
            (path / "cgroup.procs").write_text(str(os.getpid()))

    def remove(self) -> None:
        for top in self.paths:
            for path in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if path.is_dir():
                    with_retry_rmdir(path)
            with_retry_rmdir(top)


def with_retry_rmdir(path: Path) -> None:
    try:
        wait_until(lambda: _rmdir(path), 10, f"{path} can be removed")
    except AssertionError as error:
        print(f"warning: {error}", file=sys.stderr)


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


@dataclass
class Container:
    """A booted container: run commands in it, read its journal, drive the unit."""

    leader: int
    process: subprocess.Popen[bytes]
    log: Path
    srv: Path
    cgroups: Cgroups | None = None
    timings: dict[str, float] = field(default_factory=dict)
    readme_failure: str | None = None

    # -- commands

    def run(
        self, command: str, check: bool = True, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """``sh -c command`` inside the container, as root, with a clean environment."""
        env = ["env", "-i", f"PATH={PATH}", "LANG=C.UTF-8", "SYSTEMD_COLORS=0", "SYSTEMD_PAGER="]
        result = subprocess.run(
            ["nsenter", f"--target={self.leader}", "--all", "--", *env, "sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"in the container: `{command}` exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def out(self, command: str) -> str:
        return self.run(command).stdout.strip()

    def as_daemon_user(self, command: str) -> str:
        """``command`` as the unit's user, without capabilities (as the unit runs it)."""
        return (
            "setpriv --reuid=ymir-dropbox --regid=ymir-dropbox --init-groups --no-new-privs "
            f"--bounding-set=-all --inh-caps=-all -- sh -c {shlex.quote(command)}"
        )

    # -- the unit

    def show(self, *properties: str) -> dict[str, str]:
        text = self.out(f"systemctl show {UNIT} " + " ".join(f"-p {name}" for name in properties))
        return dict(line.split("=", 1) for line in text.splitlines())

    def main_pid(self) -> int:
        return int(self.show("MainPID")["MainPID"])

    def describe(self) -> str:
        """What a failing assertion shows: the unit's state and the end of its journal."""
        state = self.run(
            f"systemctl show {UNIT} -p ActiveState -p SubState -p Result -p MainPID "
            f"-p NRestarts -p StatusText; journalctl -u {UNIT} --no-pager -n 25 -o short-precise",
            check=False,
        )
        return f"\n--- unit state and journal ---\n{state.stdout}{state.stderr}"

    def wait_active(self, timeout: float = 30.0) -> int:
        """Wait until the unit is active and running; its main PID."""
        wait_until(
            lambda: (
                self.show("ActiveState", "SubState")
                == {"ActiveState": "active", "SubState": "running"}
            ),
            timeout,
            lambda: f"{UNIT} is active (running){self.describe()}",
            interval=0.2,
        )
        return self.main_pid()

    def ensure_running(self) -> int:
        """Bring the unit back to active (running) from whatever a previous test left."""
        state = self.show("ActiveState", "SubState")
        if state == {"ActiveState": "active", "SubState": "running"}:
            return self.main_pid()
        self.run(f"systemctl kill --signal=SIGKILL {UNIT}", check=False)
        wait_until(
            lambda: self.show("ActiveState")["ActiveState"] != "deactivating",
            30,
            lambda: f"{UNIT} is no longer deactivating{self.describe()}",
            interval=0.2,
        )
        self.run(f"systemctl reset-failed {UNIT}; systemctl restart {UNIT}")
        return self.wait_active()

    # -- the journal

    def cursor(self) -> str:
        """The journal's position now: :meth:`journal` reads what comes after it."""
        last = self.out("journalctl --no-pager -n 1 -o json")
        return str(json.loads(last)["__CURSOR"])

    def journal(self, after: str) -> list[dict[str, Any]]:
        """The unit's journal entries after ``after``; the daemon's JSON lines parsed as ``log``."""
        text = self.out(
            f"journalctl --no-pager -u {UNIT} -o json --after-cursor={shlex.quote(after)}"
        )
        entries = []
        for line in text.splitlines():
            entry = json.loads(line)
            message = entry.get("MESSAGE")
            if isinstance(message, list):  # not UTF-8: journalctl gives the bytes
                message = bytes(message).decode(errors="replace")
            entry["MESSAGE"] = message or ""
            try:
                entry["log"] = json.loads(message) if message.startswith("{") else None
            except ValueError:
                entry["log"] = None
            entries.append(entry)
        return entries

    def events(self, after: str, name: str) -> list[dict[str, Any]]:
        """The daemon's log events called ``name`` after ``after``."""
        return [
            {**entry["log"], "_PID": int(entry["_PID"])}
            for entry in self.journal(after)
            if entry["log"] and entry["log"].get("event") == name
        ]

    def wait_event(
        self, after: str, name: str, count: int = 1, timeout: float = 30.0
    ) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = wait_until(
            lambda: (events := self.events(after, name)) and len(events) >= count and events,
            timeout,
            lambda: f"the daemon logs {name!r} x{count}{self.describe()}",
            interval=0.2,
        )
        return found

    def systemd_said(self, after: str, pattern: str) -> bool:
        return any(
            entry.get("_PID") == "1" and re.search(pattern, entry["MESSAGE"])
            for entry in self.journal(after)
        )

    # -- packages

    def drop(self, name: str, data: bytes) -> Path:
        """Put a package into the inbox in one rename, as rsync does (hidden name first)."""
        inbox = self.srv / "inbox"
        hidden = inbox / f".{name}.upload"
        hidden.write_bytes(data)
        hidden.rename(inbox / name)
        return inbox / name

    def ledger(self) -> list[dict[str, Any]]:
        """The ledger, read with the installed CLI as the daemon's user."""
        command = f"/opt/ymir-dropbox/bin/ymir-dropbox --config {CONFIG} ledger --json"
        text = self.out(self.as_daemon_user(command))
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def wait_imported(self, name: str, timeout: float = 30.0) -> dict[str, Any]:
        def imported() -> dict[str, Any] | None:
            if not (self.srv / "done" / name).exists():
                return None
            rows = [row for row in self.ledger() if row["package"] == name]
            return rows[0] if rows and rows[0]["status"] == "imported" else None

        row: dict[str, Any] = wait_until(
            imported, timeout, lambda: f"{name} is imported into done/{self.describe()}", 0.2
        )
        return row


def source_tree() -> Path:
    return Path(os.environ.get(SOURCE_ENV, REPO))


def copy_working_tree(destination: Path) -> Path:
    shutil.copytree(
        source_tree(), destination, ignore=shutil.ignore_patterns(*NOT_COPIED), symlinks=True
    )
    return destination


def project_requirements() -> list[str]:
    import tomllib

    project = tomllib.loads((source_tree() / "pyproject.toml").read_text())
    requires = project["build-system"]["requires"]
    return [*project["project"]["dependencies"], *requires]


def build_wheelhouse(wheels: Path) -> None:
    """Wheels of the dependencies and build requirements: offline if the cache has them all."""
    wheels.mkdir(parents=True, exist_ok=True)
    base = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels)]
    requirements = project_requirements()
    offline = subprocess.run(
        [*base, "--no-index", "--find-links", str(wheels), *requirements],
        capture_output=True,
        text=True,
    )
    if offline.returncode != 0:
        subprocess.run([*base, *requirements], check=True, timeout=600)


def readme_systemd_commands() -> list[str]:
    """The README's "Running under systemd" install block: its command lines, without sudo."""
    text = (source_tree() / "README.md").read_text()
    section = text.split("## Running under systemd", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    script = re.sub(r"\\\n\s*", " ", block.strip())  # continuation lines
    return [re.sub(r"(^|&&\s*)sudo\s+", r"\1", line) for line in script.splitlines()]


def boot(root: Path, work: Path, srv: Path, wheels: Path, src: Path) -> Container:
    """Boot the root; return once its systemd reports the boot finished (nspawn's READY=1)."""
    notify_path = work / "nspawn.notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    name = f"ymir-test-{os.getpid()}"
    command = [
        "systemd-nspawn",
        f"--directory={root}",
        "--boot",
        "--volatile=overlay",  # the root stays as built; changes go to a tmpfs
        "--private-network",
        f"--machine={name}",
        "--register=no",  # no systemd-machined needed on the host
        "--notify-ready=yes",
        "--console=read-only",
        f"--bind={srv}:/srv/ymir-dropbox",
        f"--bind-ro={wheels}:{WHEELS}",
        f"--bind={src}:{SRC}",
    ]
    cgroups = None
    if not Path("/run/systemd/system").exists():  # no systemd on the host: no scope to ask for
        command.insert(1, "--keep-unit")
        cgroups = Cgroups(name)
    log = work / "nspawn.log"
    started = time.monotonic()
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
            preexec_fn=cgroups.enter if cgroups else None,
        )
    leader = None
    listener.settimeout(0.5)
    try:
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"systemd-nspawn exited ({process.returncode}) before the container was "
                    f"ready:\n{shlex.join(command)}\n{log.read_text(errors='replace')}"
                )
            if time.monotonic() - started > BOOT_TIMEOUT:
                raise AssertionError(
                    f"the container did not finish booting within {BOOT_TIMEOUT:g}s:\n"
                    + log.read_text(errors="replace")
                )
            try:
                message = listener.recv(4096).decode()
            except TimeoutError:
                continue
            for line in message.splitlines():
                if line.startswith("X_NSPAWN_LEADER_PID="):
                    leader = int(line.split("=", 1)[1])
            if "READY=1" in message.splitlines() and leader is not None:
                break
    except BaseException:
        shutdown(process, cgroups)
        raise
    finally:
        listener.close()
    container = Container(leader, process, log, srv, cgroups)
    container.timings["boot"] = time.monotonic() - started
    return container


def shutdown(process: subprocess.Popen[bytes], cgroups: Cgroups | None) -> None:
    """SIGTERM to nspawn powers the container off; SIGKILL if that takes too long."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
    if cgroups is not None:
        cgroups.remove()


@pytest.fixture(scope="module")
def container(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Container]:
    root = require_root_tree()
    work = tmp_path_factory.mktemp("systemd")
    srv = work / "srv"
    srv.mkdir()
    started = time.monotonic()
    wheels = root.with_name(f"{root.name}-wheels")  # cached beside the root, like it
    build_wheelhouse(wheels)
    wheels_seconds = time.monotonic() - started
    src = copy_working_tree(work / "src")
    box = boot(root, work, srv, wheels, src)
    box.timings["wheels"] = wheels_seconds
    try:
        started = time.monotonic()
        # pip inside has no network: the dependencies come from the host's wheels.
        offline = f"export PIP_NO_INDEX=1 PIP_FIND_LINKS={WHEELS} PIP_DISABLE_PIP_VERSION_CHECK=1"
        for line in readme_systemd_commands():
            command = f"{offline}; cd {SRC} && {line}"
            result = box.run(command, check=False)
            if result.returncode != 0:
                box.readme_failure = box.readme_failure or (
                    f"`{line}` exited {result.returncode}: {result.stderr.strip()}"
                )
                # Debian 12's systemd package ships no /etc/sysusers.d
                box.run(f"mkdir -p /etc/sysusers.d && {command}")
        box.timings["install"] = time.monotonic() - started
        box.wait_active()
        yield box
    finally:
        shutdown(box.process, box.cgroups)
        print(f"\nsystemd container timings: {box.timings}", file=sys.stderr)


@pytest.fixture
def unit(container: Container) -> Container:
    container.ensure_running()
    return container


# -- the tests ------------------------------------------------------------------------------------


def test_readme_install_commands_run_verbatim(container: Container) -> None:
    """The README's install block, as written, works on a fresh Debian 12 (only `sudo` dropped)."""
    assert container.readme_failure is None, (
        "the README's 'Running under systemd' commands failed on Debian 12:\n"
        + container.readme_failure
    )


def test_start_waits_for_ready_and_status_reports_counts(unit: Container) -> None:
    assert unit.show("Type", "NotifyAccess") == {"Type": "notify", "NotifyAccess": "main"}
    cursor = unit.cursor()
    unit.run(f"systemctl restart {UNIT}")  # returns once the start job is done: at READY=1
    assert unit.out(f"systemctl is-active {UNIT}") == "active"
    pid = unit.main_pid()
    ready = unit.events(cursor, "daemon_ready")
    started = unit.events(cursor, "daemon_started")
    assert [event["_PID"] for event in started] == [pid], unit.describe()
    # daemon_ready is logged right after READY=1; the journal may lag a little
    ready = ready or unit.wait_event(cursor, "daemon_ready", timeout=5)
    assert ready[0]["_PID"] == pid

    status = wait_until(
        lambda: STATUS_LINE.match(unit.show("StatusText")["StatusText"]),
        10,
        lambda: f"StatusText holds the daemon's STATUS= line{unit.describe()}",
        interval=0.2,
    )
    assert status.group(1) == "0"
    unit.drop("status.tar.gz", valid_package("systemd-status"))
    unit.wait_imported("status.tar.gz")
    wait_until(  # STATUS= is sent every 5 s
        lambda: (
            (m := STATUS_LINE.match(unit.show("StatusText")["StatusText"])) and m.group(1) == "1"
        ),
        15,
        lambda: f"StatusText counts the import{unit.describe()}",
        interval=0.2,
    )
    assert unit.main_pid() == pid


def test_security_exposure(unit: Container) -> None:
    text = unit.out(f"systemd-analyze security --no-pager {UNIT}")
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\S+)", text)
    assert found, text
    print(f"systemd-analyze security {UNIT}: {found.group(1)} {found.group(2)}")
    assert float(found.group(1)) <= MAX_EXPOSURE, text


def test_the_running_daemon_cannot_write_outside_srv(unit: Container) -> None:
    pid = unit.main_pid()
    status = unit.out(f"grep -E '^(Uid|CapEff|CapBnd|NoNewPrivs):' /proc/{pid}/status")
    fields = dict(re.split(r":\s+", line, maxsplit=1) for line in status.splitlines())
    uid = unit.out("id -u ymir-dropbox")
    assert fields["Uid"].split() == [uid] * 4
    assert fields["CapEff"] == fields["CapBnd"] == "0000000000000000"
    assert fields["NoNewPrivs"] == "1"

    def write(path: str) -> subprocess.CompletedProcess[str]:
        """As the daemon's user, in the daemon's own mount namespace (what the unit gave it)."""
        probe = unit.as_daemon_user(f"echo probe > {path}")
        return unit.run(f"nsenter --target={pid} --mount -- {probe}", check=False)

    refused = {
        "/etc/ymir-dropbox/probe": "Read-only file system",
        "/opt/ymir-dropbox/probe": "Read-only file system",
        "/usr/local/probe": "Read-only file system",
        "/var/lib/probe": "Read-only file system",
        "/srv/probe": "Read-only file system",
        "/root/probe": "Permission denied",  # ProtectHome: inaccessible
        "/home/probe": "Permission denied",
    }
    for path, error in refused.items():
        result = write(path)
        assert result.returncode != 0 and error in result.stderr, (path, result)
    assert write("/srv/ymir-dropbox/work/probe").returncode == 0
    assert (unit.srv / "work" / "probe").read_text() == "probe\n"
    # PrivateTmp: its /tmp is writable, and not the system's
    assert write("/tmp/probe").returncode == 0
    assert unit.run("test -e /tmp/probe", check=False).returncode != 0


def test_watchdog_restarts_a_daemon_that_stops_pinging(unit: Container) -> None:
    unit.run(
        f"mkdir -p {DROPIN} && printf '[Service]\\nWatchdogSec=3\\n' > {DROPIN}/watchdog.conf"
        f" && systemctl daemon-reload && systemctl restart {UNIT}"
    )
    try:
        assert unit.show("WatchdogUSec")["WatchdogUSec"] == "3s"
        before = unit.show("MainPID", "NRestarts")
        cursor = unit.cursor()
        unit.run(f"kill -STOP {before['MainPID']}")
        stopped = time.monotonic()

        def restarted() -> bool:
            now = unit.show("MainPID", "NRestarts", "ActiveState", "SubState")
            return now["MainPID"] not in ("0", before["MainPID"]) and (
                now["ActiveState"],
                now["SubState"],
            ) == ("active", "running")

        # WatchdogSec=3, then the unit's own RestartSec=5
        wait_until(restarted, 30, lambda: f"systemd restarts the daemon{unit.describe()}", 0.2)
        took = time.monotonic() - stopped
        assert unit.systemd_said(cursor, r"Watchdog timeout \(limit 3s\)"), unit.describe()
        assert unit.systemd_said(cursor, "Failed with result 'watchdog'"), unit.describe()
        assert int(unit.show("NRestarts")["NRestarts"]) == int(before["NRestarts"]) + 1
        assert 3 <= took < 20, took
        unit.drop("after-watchdog.tar.gz", valid_package("systemd-after-watchdog"))
        unit.wait_imported("after-watchdog.tar.gz")
    finally:
        unit.run(f"rm -rf {DROPIN} && systemctl daemon-reload && systemctl restart {UNIT}")


def test_what_the_daemon_writes_is_for_its_group_not_for_everyone(unit: Container) -> None:
    """UMask=0027: an operator in the ymir-dropbox group reads the ledger and runs status;
    another user reads neither the ledger nor a model."""
    unit.drop("modes.tar.gz", valid_package("systemd-modes"))
    row = unit.wait_imported("modes.tar.gz")
    models = [path for path in (unit.srv / "models").rglob("*") if row["model_hash"] in path.name]
    assert models, row
    written = [unit.srv / "ledger.sqlite", unit.srv / "ledger.sqlite-wal", *models]
    for path in written:
        if path.exists():  # the WAL may be checkpointed away
            assert path.stat().st_mode & 0o007 == 0, f"{path} is {oct(path.stat().st_mode)}"
    reader = "useradd --no-create-home --user-group --groups ymir-dropbox reader"
    unit.run(f"id reader >/dev/null 2>&1 || {reader}")
    status = f"/opt/ymir-dropbox/bin/ymir-dropbox --config {CONFIG} status --json"
    as_operator = unit.run(f"setpriv --reuid=reader --regid=reader --init-groups -- {status}")
    assert json.loads(as_operator.stdout)["total"]["imported"] >= 1
    as_nobody = "setpriv --reuid=nobody --regid=nogroup --clear-groups -- "
    for path in (unit.srv / "ledger.sqlite", models[0]):
        inside = Path("/srv/ymir-dropbox") / path.relative_to(unit.srv)
        refused = unit.run(f"{as_nobody} cat {inside} >/dev/null", check=False)
        assert refused.returncode != 0 and "Permission denied" in refused.stderr, (path, refused)


def test_a_teams_failed_weights_are_the_teams_and_its_reasons_every_uploaders(
    unit: Container,
) -> None:
    """As the README sets it up: inbox/team-a of group team-a (3770), the daemon in that
    group. alice (team-a) uploads a package that fails; bob, another uploader, reads why in
    failed/ but not the weights; alice does both."""
    unit.run(
        "getent group team-a >/dev/null || groupadd team-a; "
        "id alice >/dev/null 2>&1 || useradd --no-create-home -G ymir-uploaders,team-a alice; "
        "id bob >/dev/null 2>&1 || useradd --no-create-home -G ymir-uploaders bob; "
        "usermod -aG team-a ymir-dropbox; "
        "install -d -m 3770 -o ymir-dropbox -g team-a /srv/ymir-dropbox/inbox/team-a"
    )
    unit.run(f"systemctl restart {UNIT}")  # the daemon's new group, at its next start
    (unit.srv / "staged.tar.gz").write_bytes(invalid_package("team-a"))
    unit.run(
        "setpriv --reuid=alice --regid=alice --init-groups -- sh -c 'umask 027 && "
        "cp /srv/ymir-dropbox/staged.tar.gz /srv/ymir-dropbox/inbox/team-a/.w.tmp && "
        "mv /srv/ymir-dropbox/inbox/team-a/.w.tmp /srv/ymir-dropbox/inbox/team-a/w.tar.gz'"
    )
    failed = unit.srv / "failed" / "team-a"
    wait_until(lambda: (failed / "w.tar.gz.error.txt").exists(), 30, unit.describe, 0.2)

    def reads(user: str, name: str) -> bool:
        path = f"/srv/ymir-dropbox/failed/team-a/{name}"
        command = f"setpriv --reuid={user} --regid={user} --init-groups -- cat {path}"
        return unit.run(f"{command} >/dev/null", check=False).returncode == 0

    assert reads("bob", "w.tar.gz.error.txt") and not reads("bob", "w.tar.gz")
    assert reads("alice", "w.tar.gz.error.txt") and reads("alice", "w.tar.gz")


def test_reload_reexecs_and_the_unit_stays_active(unit: Container) -> None:
    unit.drop("before-reload.tar.gz", valid_package("systemd-before-reload"))
    unit.wait_imported("before-reload.tar.gz")
    pid = unit.main_pid()
    cursor = unit.cursor()
    unit.run(f"systemctl reload {UNIT}")
    unit.wait_event(cursor, "daemon_reexec")
    ready = unit.wait_event(cursor, "daemon_ready")
    assert ready[0]["_PID"] == pid  # re-executed in place: systemd keeps its main PID
    unit.drop("after-reload.tar.gz", valid_package("systemd-after-reload"))
    unit.wait_imported("after-reload.tar.gz")
    state = unit.show("ActiveState", "SubState", "MainPID")
    assert state == {"ActiveState": "active", "SubState": "running", "MainPID": str(pid)}, (
        f"after `systemctl reload` the unit is {state['ActiveState']} ({state['SubState']}), "
        f"not active (running){unit.describe()}"
    )


def test_stop_during_an_import_lets_it_finish(unit: Container) -> None:
    """The import is held at the ``validated`` fault point while ``systemctl stop`` begins,
    and let go once the daemon says it is stopping: it finishes, then the daemon exits."""
    gate = unit.srv / "gate-validated"
    gate.touch()
    pause = f"YMIR_DROPBOX_PAUSE_AT=validated:slow.tar.gz:/srv/ymir-dropbox/{gate.name}"
    unit.run(
        f"mkdir -p {DROPIN} && printf '[Service]\\nEnvironment={pause}\\n' > {DROPIN}/pause.conf"
        f" && systemctl daemon-reload && systemctl restart {UNIT}"
    )
    try:
        unit.wait_active()
        cursor = unit.cursor()
        unit.drop("slow.tar.gz", valid_package("systemd-stop-during-import"))
        unit.wait_event(cursor, "paused_at")
        started = time.monotonic()
        unit.run(f"systemctl stop --no-block {UNIT}")
        unit.wait_event(cursor, "daemon_stopping")
        gate.unlink()
        wait_until(
            lambda: unit.show("ActiveState")["ActiveState"] == "inactive",
            30,
            lambda: f"{UNIT} stops{unit.describe()}",
            interval=0.2,
        )
        took = time.monotonic() - started
        state = unit.show("ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
        assert state == {
            "ActiveState": "inactive",
            "Result": "success",
            "ExecMainStatus": "0",
            "ExecMainCode": "1",  # CLD_EXITED: it exited, it was not killed
        }, unit.describe()
        stopping = unit.events(cursor, "daemon_stopping")
        assert stopping and stopping[0]["running"] == 1, (stopping, unit.describe())
        imported = unit.events(cursor, "package_imported")
        assert [event["path"] for event in imported] == ["slow.tar.gz"], unit.describe()
        assert unit.events(cursor, "daemon_stopped"), unit.describe()
        assert (unit.srv / "done" / "slow.tar.gz").exists()
        assert not any((unit.srv / "processing").iterdir())
        rows = [row for row in unit.ledger() if row["package"] == "slow.tar.gz"]
        assert [row["status"] for row in rows] == ["imported"]
        print(f"systemctl stop during the import of slow.tar.gz took {took:.1f}s")
    finally:
        gate.unlink(missing_ok=True)
        unit.run(f"rm -rf {DROPIN} && systemctl daemon-reload && systemctl restart {UNIT}")
