"""Power-cut soak: the daemon on a filesystem that loses all unsynced state at random moments.

    python bench/powercut.py --cuts 40 --seed 1

The daemon (``python -m ymir_dropbox run``) runs with every folder and its ledger on the
power-loss filesystem of ``tests/powerfs.py``. Writers upload packages the careful way
(temporary name, write, fsync, rename, fsync the folder) or the careless way (``cp``, a plain
write in pieces, no fsync): valid packages, invalid ones, and again the bytes of an earlier
upload. At random moments a power cut SIGKILLs the daemon and every writer still at work and
drops all unsynced state at the same instant; the daemon is started again. After the last
cut the writers stop and the daemon is left to finish, then stopped.

After every cut (on what the next start finds) and at the end, it counts from the folders,
the ledger and the model store alone:

- **lost**: an upload that was durable before the cut (its careful writer had finished) is
  in none of inbox, processing, done or failed and was never imported; a package the ledger
  places in done/ or failed/ (or is filing there) is missing there or holds other bytes than
  its row's sha256, or a package it claimed is not in processing/ with the size it recorded
  (what the daemon announced must be durable, whoever wrote it); an imported row whose model
  file is missing or does not hash to its name (ymir-api: that is no ready model in YMIR).
- **twice**: a sha256 with more than one ``imported`` row; an upload's bytes in more files
  than they were uploaded; (ymir-api) two models in YMIR for one package.
- **unaccounted**: a model file that no row names (at the end: no imported or duplicate
  row); (ymir-api) a model in YMIR that no row names (at the end: a ready one that no
  imported row names) and, at the end, a file left in the staging folder; a file in done/
  without an imported or duplicate row naming it, in failed/ without a failed row naming it
  or without its error files; a ledger that does not open or fails ``PRAGMA
  integrity_check``; at the end, anything still in flight.
- **refused to start**: a start after a cut that never logs ``daemon_ready``.

With ``--backend ymir-api`` the imports go to the stand-in of YMIR's web backend
(``tests/ymir_standin.py``, running the real ``mir``: ``.ci/install-mir`` or
``YMIR_DROPBOX_MIR``) on a host that keeps its power: its state and the staging folder (YMIR's
``/ymir-sharing``) are not on the power-loss disk, and a cut never stops it.

The last line is always ``N cuts: L lost, T twice, U unaccounted, F refused to start``; the
exit code is 1 when any count is not zero. ``--keep`` keeps the layout for inspection.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from daemon_harness import invalid_package, valid_package
from powerfs import PowerLossMount

ROOT = Path(__file__).resolve().parent.parent

PACKAGE_FOLDERS = ("inbox", "processing", "done", "failed")
FOLDERS = (*PACKAGE_FOLDERS, "models", "work")
ERROR_SUFFIXES = (".error.json", ".error.txt")
SETTLED = ("imported", "duplicate", "failed")
IN_FLIGHT = {"claimed", "importing"}
START_TIMEOUT = 30.0
SETTLE_TIMEOUT = 90.0  # seconds; YMIR's imports (one mir at a time) get four times as long

# The careful writer: a hidden temporary name (the daemon ignores it), fsync, rename, fsync.
CAREFUL = """
import os, sys
source, folder, name = sys.argv[1:4]
temporary = os.path.join(folder, "." + name + ".part")
with open(source, "rb") as stream:
    data = stream.read()
with open(temporary, "wb") as stream:
    stream.write(data)
    stream.flush()
    os.fsync(stream.fileno())
os.rename(temporary, os.path.join(folder, name))
descriptor = os.open(folder, os.O_RDONLY)
os.fsync(descriptor)
"""

# The careless writer: the final name, a few pieces with pauses, no fsync.
PLAIN = """
import sys, time
source, target = sys.argv[1:3]
with open(source, "rb") as stream:
    data = stream.read()
step = len(data) // 3 + 1
with open(target, "wb") as stream:
    for start in range(0, len(data), step):
        stream.write(data[start : start + step])
        stream.flush()
        time.sleep(0.05)
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_digests: dict[tuple[str, str, int, int, int], str] = {}


def file_digest(path: Path, algorithm: str = "sha256") -> str | None:
    """The file's digest, remembered while its size, mtime and ctime stay (a cut rewrites
    every file it keeps: a new ctime)."""
    try:
        info = path.stat()
        key = (algorithm, str(path), info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        if key not in _digests:
            digest = hashlib.new(algorithm)
            with path.open("rb") as stream:
                while chunk := stream.read(1 << 20):
                    digest.update(chunk)
            _digests[key] = digest.hexdigest()
    except (FileNotFoundError, IsADirectoryError):
        return None
    return _digests[key]


@dataclass
class Upload:
    name: str
    sha256: str
    kind: str  # careful, cp, plain
    writer: subprocess.Popen[bytes]

    @property
    def durable(self) -> bool:
        """The careful writer finished (its last fsync returned) before any cut killed it."""
        return self.kind == "careful" and self.writer.poll() == 0

    @property
    def writing(self) -> bool:
        return self.writer.poll() is None


CATEGORIES = ("lost", "twice", "unaccounted", "refused")


@dataclass
class Tally:
    """Problems by category, each under a key naming its subject (a package, an attempt, a
    file), so that one seen after several cuts counts once."""

    found: dict[str, dict[str, str]] = field(
        default_factory=lambda: {category: {} for category in CATEGORIES}
    )

    def note(self, category: str, key: str, message: str) -> None:
        self.found[category].setdefault(key, message)

    def count(self, category: str) -> int:
        return len(self.found[category])

    def add(self, other: Tally, when: str) -> None:
        for category, problems in other.found.items():
            for key, message in problems.items():
                self.note(category, key, f"{when}: {message}")

    def lines(self) -> Iterator[str]:
        for category, problems in self.found.items():
            for message in problems.values():
                yield f"{category}: {message}"


# -- looking at the layout ------------------------------------------------------------------------


@dataclass
class Snapshot:
    """The folders, the model store and the ledger, as a user could see them."""

    files: dict[str, dict[str, str]]  # folder -> relative path -> sha256
    errors: set[str]  # relative paths of the error files in failed/
    models: dict[str, str | None]  # name -> sha1 of its bytes
    rows: list[dict[str, Any]]
    ledger_problem: str | None


def read_ledger(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The attempts, from a copy of the ledger (and its WAL) taken while nobody writes it:
    reading never changes what the next start finds."""
    if not path.exists():
        return [], None
    with tempfile.TemporaryDirectory(prefix="powercut-ledger-") as folder:
        copy = Path(folder) / path.name
        for suffix in ("", "-wal"):
            with suppress(FileNotFoundError):
                shutil.copyfile(f"{path}{suffix}", f"{copy}{suffix}")
        try:
            connection = sqlite3.connect(copy)
            try:
                connection.row_factory = sqlite3.Row
                verdict = connection.execute("PRAGMA integrity_check").fetchone()[0]
                if verdict != "ok":
                    return [], f"ledger integrity_check: {verdict}"
                tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
                if "attempts" not in tables:
                    return [], None
                rows = [dict(row) for row in connection.execute("SELECT * FROM attempts")]
            finally:
                connection.close()
        except sqlite3.DatabaseError as error:
            return [], f"ledger does not open: {error}"
    return rows, None


def snapshot(base: Path) -> Snapshot:
    files: dict[str, dict[str, str]] = {}
    errors: set[str] = set()
    for folder in PACKAGE_FOLDERS:
        files[folder] = {}
        top = base / folder
        for directory, _, names in os.walk(top):
            for name in names:
                path = Path(directory, name)
                relative = str(path.relative_to(top))
                if not path.is_file() or path.is_symlink() or name.startswith("."):
                    continue  # hidden: a writer's or the daemon's temporary file
                if folder == "failed" and name.endswith(ERROR_SUFFIXES):
                    errors.add(relative)
                    continue
                digest = file_digest(path)
                if digest is not None:
                    files[folder][relative] = digest
    models = {
        path.name: file_digest(path, "sha1")
        for path in (base / "models").iterdir()
        if path.is_file() and not path.name.startswith(".")
    }
    rows, problem = read_ledger(base / "ledger.sqlite")
    return Snapshot(files, errors, models, rows, problem)


def judge(
    state: Snapshot, base: Path, uploads: list[Upload], backend: Backend, idle: bool
) -> Tally:
    """Count what the layout shows against what was uploaded (see the module docstring).
    ``idle``: the daemon has finished everything and stopped."""
    tally = Tally()
    if state.ledger_problem:
        tally.note("unaccounted", "ledger", state.ledger_problem)
    rows = state.rows
    imported = [row for row in rows if row["status"] == "imported"]
    for digest, count in Counter(row["sha256"] for row in imported).items():
        if count > 1:
            tally.note("twice", digest, f"package {digest[:12]} imported {count} times")

    intact = backend.judge_models(state, rows, idle, tally)

    by_final = {str(row["final_path"]): row for row in rows if row["final_path"]}
    for row in by_final.values():
        final = Path(str(row["final_path"]))
        folder = final.relative_to(base).parts[0] if final.is_relative_to(base) else "?"
        relative = str(final.relative_to(base / folder)) if folder in PACKAGE_FOLDERS else ""
        present = state.files.get(folder, {}).get(relative)
        if row["place"] in ("done", "failed") and present is None:
            tally.note("lost", f"filed {row['id']}", f"attempt {row['id']}: {final} is missing")
        elif present is not None and row["sha256"] and present != row["sha256"]:
            size = (base / folder / relative).stat().st_size
            tally.note(
                "lost",
                f"filed {row['id']}",
                f"attempt {row['id']} ({row['status']}): {folder}/{relative} holds other "
                f"bytes than its sha256 {row['sha256'][:12]} ({size} bytes)",
            )

    for row in rows:
        if row["place"] == "processing" and row["status"] in IN_FLIGHT:
            path = base / "processing" / str(row["processing_path"])
            size = path.stat().st_size if path.is_file() else None
            if size != row["size"]:
                tally.note(
                    "lost",
                    f"claimed {row['id']}",
                    f"attempt {row['id']} claimed {row['size']} bytes, processing/"
                    f"{row['processing_path']} holds {'none' if size is None else size}",
                )

    wanted = {"done": {"imported", "duplicate"}, "failed": {"failed"}}
    for folder, statuses in wanted.items():
        for relative in state.files[folder]:
            row = by_final.get(str(base / folder / relative))
            if row is None or row["status"] not in statuses:
                status = "no row" if row is None else f"a {row['status']} row"
                tally.note("unaccounted", f"{folder}/{relative}", f"{status} names it")
    for relative in state.files["failed"]:
        missing = [suffix for suffix in ERROR_SUFFIXES if relative + suffix not in state.errors]
        if missing:
            tally.note("unaccounted", f"failed/{relative}", f"no {' '.join(missing)}")

    copies = Counter(digest for folder in state.files.values() for digest in folder.values())
    uploaded = Counter(upload.sha256 for upload in uploads)
    durable = Counter(upload.sha256 for upload in uploads if upload.durable)
    for digest, count in durable.items():
        if copies[digest] < count and digest not in intact:
            names = [upload.name for upload in uploads if upload.sha256 == digest]
            tally.note("lost", digest, f"durable upload {names} ({digest[:12]}) is gone")
    for digest, count in copies.items():
        if digest in uploaded and count > uploaded[digest]:
            tally.note("twice", digest, f"package {digest[:12]} is in {count} files")

    if idle:
        for folder in ("inbox", "processing"):
            for relative in state.files[folder]:
                tally.note("unaccounted", f"{folder}/{relative}", "still there at the end")
        for row in rows:
            if row["status"] in IN_FLIGHT:
                tally.note("unaccounted", f"attempt {row['id']}", f"still {row['status']}")
    return tally


# -- where imports go ------------------------------------------------------------------------------


def fact(row: dict[str, Any], name: str) -> Any:
    """A backend's fact about an attempt: its own column, or a key of ``backend_facts``."""
    if row.get(name) is not None:
        return row[name]
    facts = json.loads(row.get("backend_facts") or "{}")
    return facts.get(name)


class Backend:
    """The embedded model store: ``<base>/models/<sha1 of the file>``, on the power-loss disk."""

    name = "embedded"

    def config(self) -> str:
        """Tables of the config file beyond ``[import] backend``."""
        return ""

    def environment(self) -> dict[str, str]:
        return {}

    def close(self) -> None:
        pass

    def judge_models(
        self, state: Snapshot, rows: list[dict[str, Any]], idle: bool, tally: Tally
    ) -> set[str]:
        """Count the problems of the model store; return the sha256 of every package whose
        import is intact (its row is ``imported`` and its model is there, whole)."""
        intact = set()
        for row in rows:
            if row["status"] != "imported":
                continue
            stored = state.models.get(str(row["model_hash"]), "missing")
            if stored == row["model_hash"]:
                intact.add(row["sha256"])
            else:
                what = "is missing" if stored == "missing" else "holds other bytes"
                tally.note("lost", f"model of {row['id']}", f"model {row['model_hash']} {what}")
        naming = {"imported", "duplicate"} if idle else None
        named = {row["model_hash"] for row in rows if naming is None or row["status"] in naming}
        for name in state.models:
            if name not in named:
                tally.note("unaccounted", f"models/{name}", "no row names this model file")
        return intact


class YmirApi(Backend):
    """YMIR's web backend, the stand-in of tests/ymir_standin.py running the real ``mir``, on
    a host that keeps its power: its state and the staging folder are not on the power-loss
    disk. A model is YMIR's when the stand-in's database holds it."""

    name = "ymir-api"
    sharing = "/ymir-sharing"

    def __init__(self, root: Path, import_delay: float = 0.2) -> None:
        from ymir_standin import YmirStandin, default_mir

        mir = default_mir()
        if not mir.exists():
            raise SystemExit(
                f"the real mir is missing at {mir}: run `.ci/install-mir .venv-mir` "
                "or point YMIR_DROPBOX_MIR at it"
            )
        self.staging = root / "ymir-sharing" / "ymir-dropbox"
        self.staging.mkdir(parents=True)

        class Standin(YmirStandin):
            """An answer to a daemon the cut killed goes nowhere, without a traceback."""

            def _handler_class(self) -> type[BaseHTTPRequestHandler]:
                handler: Any = super()._handler_class()

                class Quiet(handler):  # type: ignore[misc]
                    def answer(self, answer: Any, *more: Any) -> None:
                        with suppress(BrokenPipeError, ConnectionResetError):
                            super().answer(answer, *more)

                return cast(type[BaseHTTPRequestHandler], Quiet)

        self.ymir = Standin(
            root / "ymir",
            mounts={self.sharing: self.staging.parent},
            import_delay=import_delay,
            mir=mir,
        ).start()

    def config(self) -> str:
        api = {
            "url": self.ymir.url,
            "user": self.ymir.user,
            "project_id": 1,
            "staging": str(self.staging),
            "staging_in_ymir": f"{self.sharing}/ymir-dropbox",
            "poll_interval": 0.2,
        }
        lines = [f"{key} = {json.dumps(value)}" for key, value in api.items()]
        return "[import.ymir_api]\n" + "\n".join(lines) + "\n"

    def environment(self) -> dict[str, str]:
        return {"YMIR_DROPBOX_YMIR_PASSWORD": self.ymir.password}

    def close(self) -> None:
        self.ymir.stop()

    def models(self) -> list[dict[str, Any]]:
        with self.ymir.store.lock:
            return [dict(row) for row in self.ymir.store.rows("models", is_deleted=False)]

    def judge_models(
        self, state: Snapshot, rows: list[dict[str, Any]], idle: bool, tally: Tally
    ) -> set[str]:
        models = {row["id"]: row for row in self.models()}
        ready = 1  # ResultState.READY
        intact = set()
        for row in rows:
            model_id = fact(row, "ymir_model_id")
            if row["status"] != "imported":
                continue
            model = models.get(model_id)
            if model is not None and model["result_state"] == ready:
                intact.add(row["sha256"])
            else:
                what = "is not in YMIR" if model is None else "is not ready in YMIR"
                tally.note("lost", f"model of {row['id']}", f"model {model_id} {what}")
        packages: dict[str, list[int]] = {}
        for model in models.values():
            found = re.search(r"sha256 ([0-9a-f]{12})", model["description"] or "")
            packages.setdefault(found.group(1) if found else "?", []).append(model["id"])
        for prefix, ids in packages.items():
            if len(ids) > 1:
                tally.note("twice", f"ymir {prefix}", f"package {prefix} is YMIR models {ids}")
        # A ready model is an import: at the end an imported row names it. Before, any row
        # may (the next attempt resumes it), or the group name an attempt in flight recorded
        # before its POST (the answer was lost: the next attempt finds the group by name).
        if idle:
            named = {fact(row, "ymir_model_id") for row in rows if row["status"] == "imported"}
            named |= {
                fact(row, "ymir_model_id")
                for row in rows
                if models.get(fact(row, "ymir_model_id"), {}).get("result_state") != ready
            }
            groups = set()
        else:
            named = {fact(row, "ymir_model_id") for row in rows}
            # The group name an attempt recorded before its POST names the model until the
            # package settles: the answer may be lost (and the attempt interrupted by the
            # restart), and the next attempt finds the group by that name.
            settled = {row["sha256"] for row in rows if row["status"] in SETTLED}
            groups = {
                fact(row, "ymir_group_name")
                for row in rows
                if row["status"] in IN_FLIGHT
                or (row["status"] == "interrupted" and row["sha256"] not in settled)
            }
        for model in models.values():
            group = (self.ymir.store.get("groups", model["model_group_id"]) or {}).get("name")
            if model["id"] not in named and group not in groups:
                owners = [
                    f"{row['id']} {row['status']}"
                    for row in rows
                    if fact(row, "ymir_model_id") == model["id"]
                ]
                tally.note(
                    "unaccounted",
                    f"ymir model {model['id']}",
                    f"YMIR model {model['id']} ({group}, {model['description']}) is "
                    f"ready but no imported row names it (attempts: {owners or 'none'})",
                )
        if idle:
            for path in self.staging.iterdir():
                tally.note("unaccounted", f"staged {path.name}", f"staged {path.name} left over")
        return intact


# -- the soak ---------------------------------------------------------------------------------


class Soak:
    def __init__(
        self, root: Path, seed: int, backend: str = "embedded", ymir_import_delay: float = 0.2
    ) -> None:
        self.root = root
        self.backend_name = backend
        self.ymir_import_delay = ymir_import_delay
        self.backend = Backend()
        self.rng = random.Random(seed)
        self.disk = PowerLossMount(root / "backing", root / "mount")
        self.base = self.disk.mount / "dropbox"
        self.config = root / "config.toml"
        self.sources = root / "sources"
        self.daemon: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.uploads: list[Upload] = []
        self.contents: list[bytes] = []
        self.tally = Tally()
        self.cuts = 0

    # -- set-up

    def prepare(self) -> None:
        """The layout, made durable (as on a machine up for a while), and the config."""
        self.disk.start()
        if self.backend_name == "ymir-api":
            self.backend = YmirApi(self.root, self.ymir_import_delay)
        self.sources.mkdir()
        self.base.mkdir()
        for name in FOLDERS:
            (self.base / name).mkdir()
        for folder in (self.disk.mount, self.base):
            descriptor = os.open(folder, os.O_RDONLY)
            os.fsync(descriptor)
            os.close(descriptor)
        self.config.write_text(
            f"base_dir = {json.dumps(str(self.base))}\n"
            "[watch]\nmode = 'inotify'\nsettle_seconds = 0.2\nrescan_interval = 1.0\n"
            "[log]\nformat = 'json'\nlevel = 'info'\n"
            f"[import]\nworkers = 2\nbackend = {json.dumps(self.backend.name)}\n"
            "[daemon]\nshutdown_timeout = 10.0\nretry_max_seconds = 1.0\n" + self.backend.config()
        )

    def close(self) -> None:
        for upload in self.uploads:
            if upload.writing:
                with suppress(ProcessLookupError):
                    os.killpg(upload.writer.pid, signal.SIGKILL)
                upload.writer.wait()
        if self.daemon is not None and self.daemon.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.daemon.pid, signal.SIGKILL)
            self.daemon.wait()
        self.backend.close()
        self.disk.close()

    # -- the daemon

    def log_path(self) -> Path:
        return self.root / f"daemon-{self.starts}.log"

    def start(self, env: dict[str, str] | None = None) -> bool:
        """Start the daemon; whether it logs ``daemon_ready`` in time."""
        self.starts += 1
        environment = {**os.environ, **self.backend.environment(), **(env or {})}
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *filter(None, [environment.get("PYTHONPATH")])]
        )
        with self.log_path().open("wb") as log:
            self.daemon = subprocess.Popen(
                [sys.executable, "-m", "ymir_dropbox", "--config", str(self.config), "run"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
                cwd=self.root,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.daemon.poll() is None:
            if '"daemon_ready"' in self.log_path().read_text(errors="replace"):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGTERM)
        try:
            self.daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()

    def log_tail(self, lines: int = 15) -> str:
        text = self.log_path().read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    # -- writers

    def upload(self) -> None:
        number = len(self.uploads)
        name = f"p{number:04}.tar.gz"
        roll = self.rng.random()
        if roll < 0.1 and self.contents:
            data = self.rng.choice(self.contents)  # the same bytes again: a duplicate
        elif roll < 0.2:
            data = invalid_package(name)
        else:
            data = valid_package(name, size=self.rng.choice([2048, 65536, 400_000]))
        self.contents.append(data)
        source = self.sources / name
        source.write_bytes(data)
        inbox = self.base / "inbox"
        kind = self.rng.choice(["careful", "careful", "cp", "plain"])
        if kind == "careful":
            command = [sys.executable, "-c", CAREFUL, str(source), str(inbox), name]
        elif kind == "cp":
            command = ["cp", str(source), str(inbox / name)]
        else:
            command = [sys.executable, "-c", PLAIN, str(source), str(inbox / name)]
        writer = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        self.uploads.append(Upload(name, sha256(data), kind, writer))

    # -- the cut

    def cut(self) -> None:
        assert self.daemon is not None
        groups = [self.daemon.pid] + [u.writer.pid for u in self.uploads if u.writing]
        self.disk.cut(groups)
        self.daemon.wait()
        for upload in self.uploads:
            upload.writer.poll()
        self.cuts += 1

    def check(self, when: str, idle: bool = False) -> Tally:
        # Nothing runs on the disk now (after a cut, before the restart; or at the end): the
        # backing folder holds what the mount shows, and reads there skip FUSE's round trips.
        state = snapshot(self.disk.backing / self.base.relative_to(self.disk.mount))
        found = judge(state, self.base, self.uploads, self.backend, idle)
        self.tally.add(found, when)
        return found

    def settle(self) -> bool:
        """Wait until the writers are done and the daemon has taken and finished everything:
        as long as it makes progress (a package leaves inbox/processing at least once every
        SETTLE_TIMEOUT seconds, four times as long with YMIR), however long the backlog."""
        patience = SETTLE_TIMEOUT * (4 if self.backend.name != "embedded" else 1)
        deadline = time.monotonic() + patience
        quiet_since: float | None = None
        fewest: int | None = None
        while time.monotonic() < deadline:
            left = sum(
                not name.startswith(".")
                for folder in ("inbox", "processing")
                for _, _, names in os.walk(self.base / folder)
                for name in names
            )
            if fewest is None or left < fewest:
                fewest, deadline = left, time.monotonic() + patience
            if left or any(upload.writing for upload in self.uploads):
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 1.0:
                return True
            time.sleep(0.1)
        return False

    # -- the whole run

    def run(self, cuts: int, window: float, verbose: bool) -> None:
        self.prepare()
        if not self.start():
            self.tally.note("refused", "start 1", f"the first start: {self.log_tail()}")
            return
        for number in range(1, cuts + 1):
            until = time.monotonic() + self.rng.uniform(0.2, window)
            while time.monotonic() < until:
                self.upload()
                time.sleep(self.rng.uniform(0.02, 0.25))
            time.sleep(self.rng.uniform(0, 0.3))
            self.cut()
            found = self.check(f"after cut {number}")
            started = self.start()
            if not started:
                self.tally.note(
                    "refused", f"cut {number}", f"after cut {number}: {self.log_tail()}"
                )
            if verbose:
                print(
                    f"cut {number}: {found.count('lost')} lost, {found.count('twice')} twice, "
                    f"{found.count('unaccounted')} unaccounted"
                    + ("" if started else ", refused to start"),
                    flush=True,
                )
            if not started and not self.start():
                return  # two refusals in a row: nothing more to learn
        if not self.settle():
            self.tally.note("unaccounted", "end", "the daemon did not finish in the quiet end")
        self.stop()
        self.check("at the end", idle=True)


@contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="ymir-dropbox-powercut-"))
    try:
        yield root
    finally:
        if keep:
            print(f"layout kept for inspection: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cuts", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--window", type=float, default=1.5, help="longest time between cuts, in seconds"
    )
    parser.add_argument("--backend", choices=["embedded", "ymir-api"], default="embedded")
    parser.add_argument("--keep", action="store_true", help="keep the layout for inspection")
    parser.add_argument("--quiet", action="store_true", help="only the problems and the total")
    arguments = parser.parse_args()
    started = time.monotonic()
    with workspace(arguments.keep) as root:
        soak = Soak(root, arguments.seed, arguments.backend)
        try:
            soak.run(arguments.cuts, arguments.window, verbose=not arguments.quiet)
        finally:
            soak.close()
    tally = soak.tally
    for line in tally.lines():
        print("  " + line)
    print(
        f"{len(soak.uploads)} uploads ({sum(u.durable for u in soak.uploads)} durable), "
        f"{soak.starts} starts, {time.monotonic() - started:.1f} s"
    )
    print(
        f"{soak.cuts} cuts: {tally.count('lost')} lost, {tally.count('twice')} twice, "
        f"{tally.count('unaccounted')} unaccounted, {tally.count('refused')} refused to start"
    )
    sys.exit(1 if any(tally.lines()) else 0)


if __name__ == "__main__":
    main()
