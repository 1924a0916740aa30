"""The mir backend: hand the normalized package to YMIR's own ``mir models``.

The package ``mir`` receives is the one our pipeline validated and normalized (real ``mir``
2.3.0 crashes on the seed's own example and drops ``TP``/``FP``/``FN``). Each attempt gets its
own dst-rev from the ledger id, because a failed ``mir`` run leaves its tag behind and refuses
that name forever, and its own work folder. One ``mir`` call at a time per repository.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import structlog

from ymir_dropbox.core.errors import ConfigError, DropboxError
from ymir_dropbox.core.jsonvalues import JsonObject
from ymir_dropbox.core.settings import BackendSettings, Config
from ymir_dropbox.reading.problems import Problem, register_codes
from ymir_dropbox.reading.rules import PATH
from ymir_dropbox.storing.attempts import Attempt
from ymir_dropbox.storing.backends import ImportFailed, ImportResult, PreparedPackage
from ymir_dropbox.storing.checks import Finding, run_check
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.store import StreamedStore, write_tar

log = structlog.get_logger(__name__)
# This backend's problem codes (see reading.problems).
PROBLEMS: dict[str, str] = {
    "import.mir_failed": "the mir command failed",
    "import.mir_hash_mismatch": "the model file mir reported is not in the model store",
}
register_codes(PROBLEMS)
PACK_SUCCESS = re.compile(r"Pack success, model hash: ([0-9a-f]{40})")
IMPORT_COMMIT = re.compile(r"^import model .* as ([0-9a-f]{40})$", re.MULTILINE)
TAIL_LINES = 20
MIR_TIMEOUT_SECONDS = 6 * 3600
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "ymir-dropbox",
    "GIT_AUTHOR_EMAIL": "ymir-dropbox@localhost",
    "GIT_COMMITTER_NAME": "ymir-dropbox",
    "GIT_COMMITTER_EMAIL": "ymir-dropbox@localhost",
}
_repository_locks: dict[Path, threading.Lock] = {}
_repository_locks_guard = threading.Lock()


def dst_rev_for(template: str, attempt_id: int) -> str:
    return template.format(id=attempt_id)


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-TAIL_LINES:])


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()  # noqa: S324 - YMIR's model hash is a SHA-1
    with path.open("rb") as stream:
        while chunk := stream.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _repository_flock(root: Path) -> Iterator[int]:
    """Across processes too (a CLI import beside the daemon): flock the repository folder.

    The descriptor is handed to ``mir``, so a ``mir`` that outlives a killed daemon still
    holds the lock, and recovery waits for it before it looks at what ``mir`` did.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


class MirBackend:
    name = "mir"

    def __init__(self, config: Config) -> None:
        settings = config.import_.settings
        if not isinstance(settings, MirSettings) or settings.root is None:
            raise ConfigError("import.mir.root: required when import.backend is 'mir'")
        self.root = settings.root
        self.bin = settings.bin
        self.template = settings.dst_rev
        self.models = config.paths.models.absolute()
        self.work = config.paths.work.absolute()
        self.level = config.import_.compression_level

    def executable(self) -> str:
        found = shutil.which(self.bin)
        if found is None:
            raise DropboxError(
                f"import.mir.bin: the mir executable {self.bin!r} was not found "
                "(install ymir-cmd 2.3.0, see the README, or set import.mir.bin)"
            )
        return found

    def check(self) -> None:
        self.executable()
        if not (self.root / ".mir").is_dir() or not (self.root / ".git").exists():
            raise DropboxError(
                f"import.mir.root: {self.root} is not a mir repository "
                f"(create one with `mir init --root {self.root}`)"
            )
        if not os.access(self.models, os.W_OK | os.X_OK):
            raise DropboxError(f"model store {self.models} is not writable")

    def _lock(self) -> threading.Lock:
        with _repository_locks_guard:
            return _repository_locks.setdefault(self.root, threading.Lock())

    def streamed(self, package_bytes: int) -> AbstractContextManager[StreamedStore | None]:
        return nullcontext()  # the package is staged once it is known to be valid

    def temporary_folders(self) -> tuple[Path, ...]:
        return ()  # it stages in work/mir-* folders, removed whole at start

    def reference(self, attempt_id: int) -> str | None:
        return dst_rev_for(self.template, attempt_id)

    def recover(self, attempt: Attempt) -> ImportResult | None:
        """mir may have committed the import before the crash: its tag says so."""
        dst_rev = attempt.dst_rev
        if not dst_rev:
            return None
        with self._lock(), _repository_flock(self.root):
            found = subprocess.run(
                ["git", "-C", str(self.root), "log", "-1", "--format=%s", f"refs/tags/{dst_rev}"],
                capture_output=True,
                text=True,
                check=False,
            )
        imported = IMPORT_COMMIT.search(found.stdout) if found.returncode == 0 else None
        if imported is None:
            return None
        stored = self.models / imported.group(1)
        if not stored.is_file():
            return None
        return ImportResult(
            imported.group(1), stored, dst_rev, ("completed by mir before a crash",)
        )

    def was_waiting(self, attempt: Attempt) -> bool:
        return False  # mir runs beside us; its own crash is its exit code, not our death

    def clean_up(self, ledger: Ledger) -> None:
        """The work folders of mir runs a crash cut short."""
        for entry in self.work.iterdir():
            if entry.is_dir() and not entry.is_symlink() and entry.name.startswith("mir-"):
                shutil.rmtree(entry, ignore_errors=True)

    def import_package(self, package: PreparedPackage) -> ImportResult:
        dst_rev = dst_rev_for(self.template, package.attempt_id)
        completed, appeared = self._run_mir(package, dst_rev)
        log.info(
            "mir_finished",
            attempt=package.attempt_id,
            dst_rev=dst_rev,
            exit_code=completed.returncode,
        )
        return self._verdict(completed, appeared, dst_rev)

    def _run_mir(
        self, package: PreparedPackage, dst_rev: str
    ) -> tuple[subprocess.CompletedProcess[str], list[str]]:
        """``mir models`` on the normalized package, in a work folder of the attempt's own,
        one run at a time per repository; and the files it left in the model store."""
        attempt_work = self.work / f"mir-{package.attempt_id}"
        shutil.rmtree(attempt_work, ignore_errors=True)
        (attempt_work / "w").mkdir(parents=True)
        try:
            normalized = attempt_work / "package.tar.gz"
            with normalized.open("w+b") as target:  # read back for its SHA-1
                write_tar(package.report, package.source, target, self.level, attempt_work)
            command = [
                self.executable(),
                "models",
                "--package-path", str(normalized),
                "--root", str(self.root),
                "--dst-rev", dst_rev,
                "--model-location", str(self.models),
                "-w", str(attempt_work / "w"),
            ]  # fmt: skip
            with self._lock(), _repository_flock(self.root) as lock:
                before = {path.name for path in self.models.iterdir()}
                try:
                    completed = subprocess.run(
                        command,
                        capture_output=True,
                        text=True,
                        errors="replace",
                        cwd=attempt_work,
                        env={**GIT_IDENTITY, **os.environ},
                        timeout=MIR_TIMEOUT_SECONDS,
                        check=False,
                        pass_fds=(lock,),  # mir keeps the lock even if we are killed
                    )
                except subprocess.TimeoutExpired:
                    message = f"`mir models` ran over {MIR_TIMEOUT_SECONDS} s and was killed"
                    raise ImportFailed(
                        [Problem("import.mir_failed", "mir", message)], dst_rev=dst_rev
                    ) from None
                appeared = sorted({path.name for path in self.models.iterdir()} - before)
        finally:
            shutil.rmtree(attempt_work, ignore_errors=True)
        return completed, appeared

    def _verdict(
        self, completed: subprocess.CompletedProcess[str], appeared: list[str], dst_rev: str
    ) -> ImportResult:
        """The model mir says it packed, checked against the model store."""
        output = completed.stdout + completed.stderr
        found = PACK_SUCCESS.search(completed.stdout)
        notes = tuple(f"mir left {name} in the model store" for name in appeared)
        if completed.returncode != 0 or found is None:
            raise ImportFailed(
                [
                    Problem(
                        "import.mir_failed",
                        "mir",
                        f"`mir models` exited with code {completed.returncode}: {_tail(output)}",
                    )
                ],
                notes=notes,
                dst_rev=dst_rev,
            )
        model_hash = found.group(1)
        stored = self.models / model_hash
        if not stored.is_file() or _sha1(stored) != model_hash:
            raise ImportFailed(
                [
                    Problem(
                        "import.mir_hash_mismatch",
                        "mir",
                        f"mir reported model hash {model_hash}, "
                        f"but {stored} is missing or has another hash",
                    )
                ],
                notes=notes,
                dst_rev=dst_rev,
            )
        return ImportResult(model_hash=model_hash, stored_path=stored, dst_rev=dst_rev)


def check_setup(config: Config) -> Iterator[Finding]:
    """``check``: the backend can work (once the model store exists)."""
    if config.paths.models.is_dir():
        yield run_check(f"the {MirBackend.name} backend", lambda: MirBackend(config).check())


BACKEND = MirBackend
FACT_NAMES: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MirSettings:
    """``[import.mir]``: the real ``mir`` and the repository it imports into."""

    bin: str
    root: Path | None
    dst_rev: str


def _settings(table: JsonObject, resolve: Callable[[str], Path], where: str) -> MirSettings:
    if not table["root"]:
        raise ConfigError(f"{where}: import.mir.root: required when import.backend is 'mir'")
    try:
        table["dst_rev"].format(id=1)
    except (KeyError, IndexError, ValueError):
        raise ConfigError(
            f"{where}: import.mir.dst_rev: {table['dst_rev']!r} may use only the field {{id}}"
        ) from None
    return MirSettings(table["bin"], resolve(table["root"]).absolute(), table["dst_rev"])


SETTINGS = BackendSettings(
    schema={
        "bin": PATH,
        "root": PATH,
        "dst_rev": {"type": "string", "regex": r"[^@\s]*\{id\}[^@\s]*@[^@\s]+"},
    },
    defaults={"bin": "mir", "root": None, "dst_rev": "dropbox-{id}@dropbox-{id}"},
    build=_settings,
)
