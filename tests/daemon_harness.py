"""The real daemon on a temporary layout: start, feed, signal, stop, and count the invariants.

End-to-end tests drive ``ymir-dropbox --config CFG run`` as a subprocess, exactly as systemd
would, and only look at what a user could look at: the folders, the ledger, the model store
and the JSON log lines. Every wait is a deadline on a polled condition (:func:`wait_until`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from factory import Entry, file_bytes, gzip_bytes, info_yaml, seed_entries, seed_info, tar_bytes
from forked import forked

from ymir_dropbox.storing.backends import fact_names
from ymir_dropbox.storing.ledger import as_text

PACKAGE_FOLDERS = ("inbox", "processing", "done", "failed")
FOLDERS = (*PACKAGE_FOLDERS, "models", "work")
ERROR_SUFFIXES = (".error.json", ".error.txt")
IN_FLIGHT = ("claimed", "importing")
FINISHED = ("imported", "duplicate", "failed")
CRASH_ENV = "YMIR_DROPBOX_CRASH_AT"
PAUSE_ENV = "YMIR_DROPBOX_PAUSE_AT"
DEFAULT_TIMEOUT = 30.0


def daemon_command() -> list[str]:
    """The installed console script, without the pyenv shim in front (signals reach it)."""
    beside = Path(sys.executable).with_name("ymir-dropbox")
    found = str(beside) if beside.exists() else shutil.which("ymir-dropbox")
    if found is None:
        pytest.fail("the ymir-dropbox console script is not installed: run `pip install -e .`")
    return [found]


def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    message: str | Callable[[], str],
    interval: float = 0.05,
) -> Any:
    """Poll ``condition`` until it is truthy (and return it) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:g}s waiting until {text}")
        time.sleep(interval)


# -- packages -------------------------------------------------------------------------------------


def valid_package(tag: str, size: int = 2048) -> bytes:
    """A valid package (the seed's example) whose bytes, sha256 and model hash depend on ``tag``."""
    entries = seed_entries()
    first = entries[0]
    entries[0] = Entry(first.name, file_bytes(first.name, size) + tag.encode())
    return gzip_bytes(tar_bytes(entries))


def invalid_package(tag: str) -> bytes:
    """A well-formed gzip tar that is not a model package (no ymir-info.yaml)."""
    return gzip_bytes(tar_bytes([Entry("readme.txt", f"not a model: {tag}\n".encode())]))


class _RandomStream:
    """``size`` pseudo-random bytes, read in pieces (incompressible model weights)."""

    def __init__(self, size: int, seed: int) -> None:
        import random

        self.left = size
        self.random = random.Random(seed)

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return self.random.randbytes(size)


def write_large_package(path: Path, payload_bytes: int, seed: int = 0) -> Path:
    """A valid package whose first stage file holds ``payload_bytes`` of random data.

    Streamed to disk (the payload never sits in memory) with gzip level 0: fast to build,
    and the daemon still has to hash, decompress, spool and recompress every byte.
    """
    from isal import igzip

    info = seed_info()
    with (
        path.open("wb") as raw,
        igzip.GzipFile(fileobj=raw, mode="wb", compresslevel=0, mtime=0) as compressed,  # type: ignore[no-untyped-call]
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        big = tarfile.TarInfo("model-1000.params")
        big.size = payload_bytes
        tar.addfile(big, _RandomStream(payload_bytes, seed))
        for name in ("model-2000.params", "model-symbol.json"):
            member = tarfile.TarInfo(name)
            data = file_bytes(name)
            member.size = len(data)
            tar.addfile(member, _bytes_io(data))
        document = info_yaml(info)
        member = tarfile.TarInfo("ymir-info.yaml")
        member.size = len(document)
        tar.addfile(member, _bytes_io(document))
    return path


def _bytes_io(data: bytes) -> BinaryIO:
    import io

    return io.BytesIO(data)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def sha1_of(path: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as stream:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


# -- the daemon -------------------------------------------------------------------------------


@dataclass
class Drop:
    """A file a test put into the inbox; ``stays``: the daemon must leave it there."""

    relative: str
    sha256: str
    stays: bool = False


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):  # an inline table
        return "{" + ", ".join(f"{key} = {_toml_value(item)}" for key, item in value.items()) + "}"
    # JSON strings, numbers, booleans and arrays of them are valid TOML
    return json.dumps(value)


class Dropbox:
    """One temporary layout (config, folders, ledger) and the daemon running on it."""

    def __init__(
        self,
        root: Path,
        *,
        base_dir: Path | None = None,
        mode: str = "inotify",
        settle_seconds: float = 1.0,
        poll_interval: float = 0.2,
        rescan_interval: float = 2.0,
        workers: int = 2,
        shutdown_timeout: float = 30.0,
        retry_max_seconds: float = 2.0,
        sections: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.root = root
        self.base = base_dir or root / "dropbox"
        self.config_path = root / "config.toml"
        self.settings: dict[str, dict[str, Any]] = {
            "watch": {
                "mode": mode,
                "settle_seconds": settle_seconds,
                "poll_interval": poll_interval,
                "rescan_interval": rescan_interval,
            },
            "log": {"format": "json", "level": "info"},
            "import": {"workers": workers},
            "daemon": {
                "shutdown_timeout": shutdown_timeout,
                "retry_max_seconds": retry_max_seconds,
            },
        }
        self.paths: dict[str, str] = {}
        for name, values in (sections or {}).items():
            if name == "paths":
                self.paths.update(values)
            else:
                self.settings.setdefault(name, {}).update(values)
        self.write_config()
        for name in FOLDERS:
            self.folder(name).mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path = root / "daemon-0.log"
        self.drops: list[Drop] = []
        self._hashes: dict[tuple[str, int, int, int], str] = {}

    # -- layout

    def write_config(self) -> None:
        lines = [f"base_dir = {_toml_value(str(self.base))}"]
        if self.paths:
            lines.append("[paths]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in self.paths.items()]
        for section, values in self.settings.items():
            lines.append(f"[{section}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        self.config_path.write_text("\n".join(lines) + "\n")

    def folder(self, name: str) -> Path:
        if name in self.paths:
            return Path(self.paths[name])
        return self.base / name

    @property
    def inbox(self) -> Path:
        return self.folder("inbox")

    @property
    def ledger_path(self) -> Path:
        return self.base / "ledger.sqlite"

    # -- process

    def start(
        self,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
        wait: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> subprocess.Popen[bytes]:
        assert self.process is None or self.process.poll() is not None, "daemon already running"
        self.starts += 1
        self.log_path = self.root / f"daemon-{self.starts}.log"
        environment = {
            key: value
            for key, value in os.environ.items()
            if key
            not in {CRASH_ENV, PAUSE_ENV, "YMIR_DROPBOX_CONFIG", "NOTIFY_SOCKET", "WATCHDOG_USEC"}
        }
        environment.update(env or {})
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*prefix, *daemon_command(), "--config", str(self.config_path), "run"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
                cwd=self.root,
                start_new_session=True,
            )
        if wait:
            self.wait_ready(timeout=timeout)
        return self.process

    def pause_at(self, point: str, package: str) -> dict[str, str]:
        """The environment that makes ``package`` wait at ``point`` until :meth:`release`."""
        self.gate = self.root / f"gate-{point}"
        self.gate.touch()
        return {PAUSE_ENV: f"{point}:{package}:{self.gate}"}

    def release(self) -> None:
        self.gate.unlink(missing_ok=True)

    def log_text(self, path: Path | None = None) -> str:
        try:
            return (path or self.log_path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def events(self, name: str | None = None, every_start: bool = False) -> list[dict[str, Any]]:
        """The JSON log events of the current run (or of every run), optionally of one name."""
        logs = (
            [self.root / f"daemon-{number}.log" for number in range(1, self.starts + 1)]
            if every_start
            else [self.log_path]
        )
        found = []
        for path in logs:
            for line in self.log_text(path).splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict) and (name is None or event.get("event") == name):
                    found.append(event)
        return found

    def wait_event(
        self,
        name: str,
        count: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
        where: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        def seen() -> list[dict[str, Any]] | None:
            found = [event for event in self.events(name) if where is None or where(event)]
            if len(found) >= count:
                return found
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"the daemon exited ({self.process.returncode}) before logging {name!r}:\n"
                    + self.tail()
                )
            return None

        result: list[dict[str, Any]] = wait_until(
            seen, timeout, lambda: f"the daemon logs {name!r} x{count}\n{self.tail()}"
        )
        return result

    def wait_ready(self, count: int = 1, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.wait_event("daemon_ready", count=count, timeout=timeout)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, number: int) -> None:
        assert self.process is not None
        self.process.send_signal(number)

    def wait_exit(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the daemon did not exit within {timeout:g}s:\n{self.tail()}"
            ) from None

    def stop(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        """SIGTERM and wait: the exit code."""
        if not self.running:
            assert self.process is not None
            return self.process.returncode
        self.send(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> int:
        """``kill -9``: the exit code (-9)."""
        if self.running:
            self.send(signal.SIGKILL)
        return self.wait_exit()

    def close(self) -> None:
        if self.running:
            self.kill()

    def cli(self, *arguments: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run another ``ymir-dropbox`` command on this layout (see :mod:`forked`)."""
        done = forked().run(
            ["--config", str(self.config_path), *arguments],
            cwd=self.root,
            timeout=DEFAULT_TIMEOUT,
            errors="backslashreplace",  # a name that is not UTF-8 must not break the test
        )
        if check:
            done.check_returncode()
        return done

    # -- feeding the inbox

    def record(self, relative: str, data_or_path: bytes | Path, stays: bool = False) -> Drop:
        """Remember a file put into the inbox by other means (cp, rsync, a writer process)."""
        if isinstance(data_or_path, Path):
            digest = sha256_of(data_or_path)
        else:
            digest = hashlib.sha256(data_or_path).hexdigest()
        drop = Drop(relative, digest, stays)
        self.drops.append(drop)
        return drop

    def forget(self, drop: Drop) -> None:
        self.drops.remove(drop)

    def drop(self, relative: str, data: bytes, stays: bool = False) -> Drop:
        """Write a file straight into the inbox under its final name (like scp does)."""
        path = self.inbox / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as stream:
            stream.write(data)
        return self.record(relative, data, stays)

    def drop_valid(self, relative: str, tag: str | None = None) -> Drop:
        return self.drop(relative, valid_package(tag if tag is not None else relative))

    def drop_invalid(self, relative: str, tag: str | None = None) -> Drop:
        return self.drop(relative, invalid_package(tag if tag is not None else relative))

    # -- looking

    def names(self, folder: str) -> set[str]:
        """Relative paths of the regular files in a folder (error files of failed/ excluded)."""
        base = self.folder(folder)
        found = set()
        for directory, _, files in os.walk(base):
            for name in files:
                path = Path(directory, name)
                with suppress(FileNotFoundError):
                    if not stat.S_ISREG(path.lstat().st_mode):
                        continue
                    if folder == "failed" and name.endswith(ERROR_SUFFIXES):
                        continue
                    if name.startswith(".ymir-dropbox-") and name.endswith(".tmp"):
                        continue  # an error report being written; see temporaries()
                    found.add(str(path.relative_to(base)))
        return found

    def temporaries(self) -> list[Path]:
        """The daemon's own temporary files in the package folders (removed at its start)."""
        return [
            path
            for folder in PACKAGE_FOLDERS
            for path in self.folder(folder).rglob(".ymir-dropbox-*.tmp")
        ]

    def error_files(self) -> set[str]:
        base = self.folder("failed")
        return {
            str(Path(directory, name).relative_to(base))
            for directory, _, files in os.walk(base)
            for name in files
            if name.endswith(ERROR_SUFFIXES)
        }

    def _sha256(self, path: Path) -> str | None:
        try:
            info = path.lstat()
            key = (str(path), info.st_size, info.st_mtime_ns, info.st_ino)
            if key not in self._hashes:
                self._hashes[key] = sha256_of(path)
            return self._hashes[key]
        except FileNotFoundError:
            return None

    def files(self, folder: str) -> dict[str, str]:
        """Relative path -> sha256 of the package files in a folder."""
        found = {}
        for relative in self.names(folder):
            digest = self._sha256(self.folder(folder) / relative)
            if digest is not None:
                found[relative] = digest
        return found

    def where(self, drop: Drop) -> list[tuple[str, str]]:
        """(folder, relative path) of every file holding this drop's bytes."""
        return [
            (folder, relative)
            for folder in PACKAGE_FOLDERS
            for relative, digest in self.files(folder).items()
            if digest == drop.sha256
        ]

    def ledger_rows(self) -> list[dict[str, Any]]:
        if not self.ledger_path.exists():
            return []
        connection = sqlite3.connect(self.ledger_path, timeout=DEFAULT_TIMEOUT)
        try:
            connection.row_factory = sqlite3.Row
            rows = [dict(row) for row in connection.execute("SELECT * FROM attempts ORDER BY id")]
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return []
            raise
        finally:
            connection.close()
        for row in rows:
            for column in ("errors", "warnings", "notes", "class_names"):
                if isinstance(row.get(column), str):
                    row[column] = json.loads(row[column])
            # A backend's facts, under the names `ledger --json` shows them.
            row.update(dict.fromkeys(fact_names()))
            row.update(json.loads(row.pop("backend_facts", None) or "{}"))
        return rows

    def rows_for(self, drop: Drop) -> list[dict[str, Any]]:
        return [row for row in self.ledger_rows() if row["sha256"] == drop.sha256]

    def final_status(self, drop: Drop) -> list[str]:
        return [row["status"] for row in self.rows_for(drop) if row["status"] in FINISHED]

    def settled(self) -> bool:
        """Every drop the daemon should take is in done/ or failed/; nothing is in flight."""
        if self.names("processing"):
            return False
        placed = Counter(self.files("done").values()) + Counter(self.files("failed").values())
        wanted = Counter(drop.sha256 for drop in self.drops if not drop.stays)
        if any(placed[digest] < count for digest, count in wanted.items()):
            return False
        rows = self.ledger_rows()
        if any(row["status"] in IN_FLIGHT for row in rows):
            return False
        # the ledger's place is written just after the rename: wait for it to catch up
        recorded = {(row["place"], row["final_path"]) for row in rows}
        return all(
            (folder, as_text(str(self.folder(folder) / relative))) in recorded
            for folder in ("done", "failed")
            for relative in self.names(folder)
        )

    def describe(self) -> str:
        listing = {folder: sorted(self.names(folder)) for folder in PACKAGE_FOLDERS}
        shown = {
            folder: names[:20] + (["..."] if len(names) > 20 else [])
            for folder, names in listing.items()
        }
        statuses = Counter(row["status"] for row in self.ledger_rows())
        return f"folders {shown}, ledger {dict(statuses)}\n{self.tail()}"

    def wait_settled(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        def check() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(
                    f"the daemon exited ({self.process.returncode}) with work left:\n"
                    + self.describe()
                )
            return self.settled()

        wait_until(check, timeout, lambda: "every package is settled: " + self.describe())

    # -- the invariants

    def invariant_problems(self, idle: bool = True) -> list[str]:
        problems: list[str] = []
        located: dict[str, list[tuple[str, str]]] = {}
        for folder in PACKAGE_FOLDERS:
            for relative, digest in self.files(folder).items():
                located.setdefault(digest, []).append((folder, relative))
        dropped = Counter(drop.sha256 for drop in self.drops)
        for digest, count in dropped.items():
            found = located.get(digest, [])
            if len(found) != count:
                problems.append(f"package {digest[:12]} dropped {count}x but found at {found}")
        for digest, found in located.items():
            if digest not in dropped:
                problems.append(f"files nobody dropped: {found}")
        for drop in self.drops:
            folders = [folder for folder, _ in located.get(drop.sha256, [])]
            if drop.stays and folders != ["inbox"]:
                problems.append(f"{drop.relative!r} should have stayed in the inbox")

        rows = self.ledger_rows()
        imported = Counter(row["sha256"] for row in rows if row["status"] == "imported")
        problems += [
            f"package {digest[:12]} imported {count} times"
            for digest, count in imported.items()
            if count > 1
        ]
        models = self.folder("models")
        for row in rows:
            if row["status"] not in {"imported", "duplicate"}:
                continue
            stored = models / str(row["model_hash"])
            if not stored.is_file():
                problems.append(f"attempt {row['id']}: model {row['model_hash']} not in models/")
            elif sha1_of(stored) != row["model_hash"]:
                problems.append(f"attempt {row['id']}: models/{row['model_hash']} has other bytes")
        for path in models.iterdir():
            if path.name.startswith(".ymir-dropbox-") and path.name.endswith(".tmp"):
                if idle:
                    problems.append(f"temporary file left in models/: {path.name}")
            elif path.is_file() and sha1_of(path) != path.name:
                problems.append(f"half or foreign file in models/: {path.name}")
        if idle:
            problems += self._idle_problems(rows)
            problems += [f"temporary file left: {path}" for path in self.temporaries()]
        return problems

    def _idle_problems(self, rows: list[dict[str, Any]]) -> list[str]:
        """What must hold once the daemon has recovered and has nothing left to do."""
        problems = []
        work = self.folder("work")
        leftovers = sorted(str(path.relative_to(work)) for path in work.rglob("*"))
        if leftovers:
            problems.append(f"files left in work/: {leftovers}")
        problems += [
            f"attempt {row['id']} still {row['status']} while idle"
            for row in rows
            if row["status"] in IN_FLIGHT
        ]
        if self.names("processing"):
            problems.append(f"files left in processing/: {sorted(self.names('processing'))}")

        failed = self.names("failed")
        for relative in sorted(failed):
            for suffix in ERROR_SUFFIXES:
                if not (self.folder("failed") / (relative + suffix)).is_file():
                    problems.append(f"failed/{relative} has no {suffix}")
        for relative in sorted(self.error_files()):
            package = relative.removesuffix(".error.json").removesuffix(".error.txt")
            if package not in failed:
                problems.append(f"failed/{relative} describes a package that is not there")

        for folder, statuses in (("done", {"imported", "duplicate"}), ("failed", {"failed"})):
            base = self.folder(folder)
            placed = {row["final_path"]: row for row in rows if row["place"] == folder}
            on_disk = {as_text(str(path)): path for path in self.folder(folder).rglob("*")}
            for final_path, row in placed.items():
                path = on_disk.get(final_path, Path(final_path))
                if not path.is_file():
                    problems.append(f"attempt {row['id']}: final_path {final_path} is not a file")
                elif self._sha256(path) != row["sha256"]:
                    problems.append(f"attempt {row['id']}: {final_path} holds other bytes")
                if row["status"] not in statuses:
                    problems.append(f"attempt {row['id']}: {row['status']} but in {folder}/")
            for relative, digest in self.files(folder).items():
                placing = placed.get(as_text(str(base / relative)))
                if placing is None:
                    problems.append(f"{folder}/{relative}: no ledger row places it there")
                elif placing["sha256"] != digest:
                    problems.append(f"{folder}/{relative}: ledger sha256 differs")
        for drop in self.drops:
            finals = [
                row for row in rows if row["sha256"] == drop.sha256 and row["status"] in FINISHED
            ]
            if not drop.stays and not finals:
                problems.append(f"{drop.relative!r}: no final ledger row")
        return problems

    def stale_places(self) -> list[str]:
        """Attempts whose ``place`` says processing/ although their file is not there."""
        return [
            f"attempt {row['id']} ({row['status']}) says processing/{row['processing_path']}"
            for row in self.ledger_rows()
            if row["place"] == "processing"
            and not (self.folder("processing") / str(row["processing_path"])).exists()
        ]

    def assert_invariants(self, idle: bool = True) -> None:
        problems = self.invariant_problems(idle)
        assert not problems, "invariants broken:\n  " + "\n  ".join(problems)


class Dropboxes:
    """Makes layouts for one test and, at the end, kills their daemons and undoes mounts."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.made: list[Dropbox] = []
        self.mounts: list[Path] = []
        self.immutable: list[Path] = []

    def __call__(self, name: str = "layout", **options: Any) -> Dropbox:
        root = self.tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        dropbox = Dropbox(root, **options)
        self.made.append(dropbox)
        return dropbox

    def mount(self, arguments: Sequence[str], target: Path) -> None:
        """``mount ARGUMENTS TARGET``; skips the test when this machine does not allow it."""
        target.mkdir(parents=True, exist_ok=True)
        completed = subprocess.run(
            ["mount", *arguments, str(target)], capture_output=True, text=True, check=False
        )
        if completed.returncode != 0:
            reason = completed.stderr.strip()
            pytest.skip(f"cannot mount here (needs root in a privileged container): {reason}")
        self.mounts.append(target)

    def remount(self, options: str, target: Path) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(target)], check=True)

    def unmount(self, target: Path) -> None:
        subprocess.run(["umount", str(target)], check=True)
        self.mounts.remove(target)

    def close(self) -> None:
        for dropbox in self.made:
            dropbox.close()
        for target in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(target)], check=False)
        for path in self.immutable:
            subprocess.run(["chattr", "-i", str(path)], check=False)


@contextmanager
def dropboxes(tmp_path: Path) -> Iterator[Dropboxes]:
    made = Dropboxes(tmp_path)
    try:
        yield made
    finally:
        made.close()


def without_file_permission_bypass() -> list[str]:
    """A command prefix that runs the daemon as root minus the capabilities that ignore
    file modes, so a file with mode 000 really is unreadable to it."""
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv is missing: install util-linux (apt-get install util-linux)")
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
