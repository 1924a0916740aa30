"""The YMIR web backend: each package becomes a model in a project of YMIR's web app.

YMIR's backend API imports a model by running ``mir models`` into the project's own
repository and recording the model, its group and its stages in its database: only then does
the web UI list it. The normalized package (so the seed's example and upper-case ``TP`` arrive
right) is written into a staging folder YMIR's backend can read, the import is POSTed, and the
model is polled until YMIR says ready or error.

Exactly once, across crashes: the group name is recorded before the POST, YMIR's model id
right after it. A later attempt on the same package resumes polling a recorded model, or finds
the group by its name in the project, instead of posting again.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path, PurePosixPath

import structlog

from ymir_dropbox.core.errors import ConfigError, DropboxError
from ymir_dropbox.core.jsonvalues import JsonObject
from ymir_dropbox.core.settings import BackendSettings, Config
from ymir_dropbox.reading.problems import Problem, register_codes
from ymir_dropbox.reading.rules import PATH, POSITIVE_NUMBER
from ymir_dropbox.storing.attempts import Attempt, Facts
from ymir_dropbox.storing.backends import (
    BackendCommand,
    ImportFailed,
    ImportResult,
    PassingFailure,
    PreparedPackage,
)
from ymir_dropbox.storing.backends.ymir_client import (
    TEXT_LIMIT,
    ModelState,
    ResultState,
    YmirClient,
    YmirDuplicateGroupName,
    YmirError,
    YmirProjectNotFound,
    YmirRefused,
    YmirUnavailable,
)
from ymir_dropbox.storing.backends.ymir_images import image_findings, judge_executor
from ymir_dropbox.storing.backends.ymir_routes import Routes, writer_findings
from ymir_dropbox.storing.checks import Finding, folder_finding
from ymir_dropbox.storing.durable import finish_file, temporary_file
from ymir_dropbox.storing.ledger import Ledger, LedgerQueries
from ymir_dropbox.storing.lifecycle import IN_FLIGHT, SETTLED, Status
from ymir_dropbox.storing.store import StreamedStore, write_tar

log = structlog.get_logger(__name__)
# This backend's problem codes (see reading.problems); routes and images have theirs.
PROBLEMS: dict[str, str] = {
    "import.ymir_project": "the YMIR project does not exist",
    "import.ymir_object_type": "the package's object type is not the YMIR project's",
    "import.ymir_refused": "YMIR refused the import (a group name, a text too long, ...)",
    "import.ymir_failed": "YMIR ended the import in an error (with YMIR's error code)",
}
register_codes(PROBLEMS)
_NAMING = threading.Lock()  # one group name chosen at a time, by every worker
POST_SETTLE_SECONDS = 5.0  # longer than YMIR takes to answer an import's POST
STAGED_DIGITS = 16  # of the sha256, naming a staged package
GROUP_SUFFIXES = 100  # "name", "name-2", ... "name-100": then the package fails
UNSAFE_IN_NAME = re.compile(r"[^\w.\- ]+")
# What YMIR's task error codes mean, in a person's words (the task gives no message).
ERROR_CODES = {
    160015: "the package is not a model package YMIR can read",
    169999: "YMIR's `mir models` failed on the package",
}


def read_password(settings: YmirApiSettings) -> str:
    """The password: from ``password`` (the environment at start) or ``password_file``."""
    if settings.password:
        return settings.password
    if settings.password_file is None:
        raise DropboxError(
            f"import.ymir_api: no password: set {YMIR_PASSWORD_ENV_VAR} or "
            "import.ymir_api.password_file"
        )
    try:
        return settings.password_file.read_text().strip()
    except OSError as error:
        raise DropboxError(
            f"import.ymir_api.password_file: cannot read {settings.password_file}: "
            f"{error.strerror or error}"
        ) from None


def _names_held(package: PreparedPackage, project_id: int) -> set[str]:
    """The group names (folded) other packages' attempts recorded in this project and have
    not given up (a failed attempt's name is free again, or a group in YMIR)."""
    if package.ledger is None:
        return set()
    return {
        _fold(held)
        for other in package.ledger.with_fact("ymir_project_id", project_id)
        if other.sha256 != package.sha256 and other.status is not Status.FAILED
        if (held := YmirFacts.of(other).group_name) is not None
    }


def _fold(name: str) -> str:
    """A group name as YMIR compares them: case-insensitively, trailing spaces ignored."""
    return name.rstrip(" ").casefold()


def _judged(ledger: LedgerQueries | None, model_id: int) -> bool:
    """Whether a failed attempt told YMIR's verdict on that model: it is over (an error, or
    a model gone); a retry of the package posts anew."""
    if ledger is None:
        return False
    return any(
        found.status is Status.FAILED for found in ledger.with_fact("ymir_model_id", model_id)
    )


def _alive(ledger: LedgerQueries | None, attempts: Iterable[Attempt]) -> list[Attempt]:
    """The attempts cut short whose import in YMIR may still be taken up: any but those
    whose model a failed attempt judged since. What one copy of the bytes started belongs to
    every copy, even past a copy that failed for another reason (a crash limit)."""
    return [
        attempt
        for attempt in attempts
        if (model_id := YmirFacts.of(attempt).model_id) is None or not _judged(ledger, model_id)
    ]


def group_name_for(template: str, package: str) -> str:
    """The model group name for a package: the template with ``{stem}`` filled, made short
    and plain enough for YMIR (at most 100 characters, leaving room for a suffix)."""
    stem = package
    for suffix in (".tar.gz", ".tgz"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    name = UNSAFE_IN_NAME.sub("-", template.format(stem=stem)).strip(" -") or "model"
    return name[: TEXT_LIMIT - 4].rstrip(" ")


def describe(package: PreparedPackage) -> str:
    """The description YMIR shows: the package, its sha256 (12 digits) and the attempt.

    A name that is not UTF-8 (its stray bytes are lone surrogates here) shows them as ``?``:
    YMIR stores the description as UTF-8 text and cannot store a surrogate.
    """
    tail = f" sha256 {package.sha256[:12]} attempt {package.attempt_id}"
    room = TEXT_LIMIT - len(tail) - len("ymir-dropbox: ")
    name = package.path.name.encode("utf-8", "replace").decode("utf-8")
    if len(name) > room:
        name = name[: room - 1] + "…"
    return f"ymir-dropbox: {name}{tail}"


class YmirApiBackend:
    name = "ymir-api"

    def __init__(self, config: Config, client: YmirClient | None = None) -> None:
        self.settings = settings_of(config)
        self.work = config.paths.work
        self.level = config.import_.compression_level
        self.clock: Callable[[], float] = time.monotonic
        self.sleep: Callable[[float], None] = time.sleep
        self._client = client
        self.routes = Routes(
            self.settings.projects,
            self.settings.writers,
            self.settings.project_id,
            config.paths.processing,
        )

    @property
    def client(self) -> YmirClient:
        if self._client is None:
            self._client = YmirClient(
                self.settings.url, self.settings.user, read_password(self.settings)
            )
        return self._client

    # -- start-up ---------------------------------------------------------------------------------

    def check(self) -> None:
        """Wrong credentials, a project that does not exist or a staging folder we cannot
        write stop the start, with the reason; YMIR being down does not (it is retried)."""
        staging = self.settings.staging
        if not staging.is_dir() or not os.access(staging, os.W_OK | os.X_OK):
            raise DropboxError(f"import.ymir_api.staging: {staging} is not a writable folder")
        try:
            self.client.login()
            for project_id in self.project_ids():
                self.client.project(project_id)
        except YmirUnavailable as error:
            log.warning("ymir_unavailable_at_start", error=str(error), note="retried per package")
        except YmirRefused as error:
            raise DropboxError(f"import.ymir_api: {error}") from None

    def project_ids(self) -> list[int]:
        ids = {self.settings.project_id, *self.settings.projects.values()}
        return sorted(project_id for project_id in ids if project_id)

    def streamed(self, package_bytes: int) -> AbstractContextManager[StreamedStore | None]:
        return nullcontext()  # the package is staged once it is known to be valid

    def temporary_folders(self) -> tuple[Path, ...]:
        return (self.settings.staging,)

    def reference(self, attempt_id: int) -> str | None:
        return None

    def recover(self, attempt: Attempt) -> ImportResult | None:
        # The next attempt on the package resumes from the ledger (see _resume): it is
        # validated again first, which costs little and keeps one path for every resume.
        return None

    def was_waiting(self, attempt: Attempt) -> bool:
        """Past the group name recorded before the POST, the attempt only waits for YMIR."""
        facts = YmirFacts.of(attempt)
        return facts.model_id is not None or facts.group_name is not None

    def clean_up(self, ledger: Ledger) -> None:
        clean_staging(self.settings.staging, ledger)

    # -- the import -------------------------------------------------------------------------------

    def import_package(self, package: PreparedPackage) -> ImportResult:
        try:
            try:
                return self._import(package)
            except YmirUnavailable as error:
                # The staged package stays: YMIR may have the import and read it later.
                raise PassingFailure(str(error)) from None
            except YmirProjectNotFound as error:
                raise ImportFailed(
                    [Problem("import.ymir_project", "import.ymir_api.project_id", str(error))]
                ) from None
            except YmirRefused as error:
                raise ImportFailed([Problem("import.ymir_refused", "ymir", str(error))]) from None
        except ImportFailed:
            # Failed for good (a POST refused, every group name taken, the model gone): no
            # YMIR import will read the staged package any more.
            self._unstage(package)
            raise

    def _import(self, package: PreparedPackage) -> ImportResult:
        route = self.routes.route(package)
        project = self.client.project(route.project_id)
        normalized = package.report.normalized
        assert normalized is not None
        if project.object_type != normalized["object_type"]:
            raise ImportFailed(
                [
                    Problem(
                        "import.ymir_object_type",
                        "object_type",
                        f"the package's object_type is {normalized['object_type']} but YMIR "
                        f"project {project.id} ({project.name!r}) holds object type "
                        f"{project.object_type}; YMIR would end the import in an error",
                    )
                ]
            )
        package.record_facts({"ymir_project_id": project.id})
        model_id = self._resume(package, project.id)
        # Judged before the POST; an import already in YMIR's hands is never refused for it.
        required = self.settings.require_registered_executor and model_id is None
        warnings = judge_executor(self.client, package.report.normalized, required)
        try:
            if model_id is None:
                model_id = self._post(package, project.id)
            result = self._wait(package, project.id, model_id)
        except ImportFailed as failure:
            failure.warnings = (*failure.warnings, *warnings)
            raise
        return replace(result, warnings=(*result.warnings, *warnings))

    def _resume(self, package: PreparedPackage, project_id: int) -> int | None:
        """A model an earlier attempt on the same package started in YMIR, if any."""
        waited = False
        for attempt in _alive(package.ledger, package.earlier):
            earlier = YmirFacts.of(attempt)
            if earlier.project_id not in (None, project_id):
                continue
            if earlier.model_id:
                log.info("ymir_resumed", model_id=earlier.model_id, attempt=attempt.id)
                package.record_facts(
                    YmirFacts(
                        model_id=earlier.model_id,
                        task_id=earlier.task_id,
                        group_name=earlier.group_name,
                    ).as_facts()
                )
                return earlier.model_id
            if earlier.group_name:
                found = _find_in_group(self.client, package, project_id, earlier.group_name)
                if found is None and not waited:
                    # Its POST may still be in YMIR's hands (sent just before the daemon died):
                    # give it the time a POST takes before posting again.
                    self.sleep(POST_SETTLE_SECONDS)
                    waited = True
                    found = _find_in_group(self.client, package, project_id, earlier.group_name)
                if found is not None:
                    return found
        return None

    def _post(self, package: PreparedPackage, project_id: int) -> int:
        staged = self._stage(package)
        base = group_name_for(self.settings.group_name, package.path.name)
        for number in range(1, GROUP_SUFFIXES + 1):
            name = base if number == 1 else f"{base}-{number}"
            if not self._reserve(package, project_id, name):
                continue  # taken: the next suffix, never a failure
            try:
                started = self.client.import_model(
                    project_id, name, describe(package), self._path_in_ymir(staged)
                )
            except YmirDuplicateGroupName:
                continue  # taken between our look and the POST
            package.record_facts(
                YmirFacts(
                    model_id=started.model_id,
                    task_id=started.task_id,
                    group_name=started.group_name,
                ).as_facts()
            )
            log.info(
                "ymir_import_started",
                project=project_id,
                model_id=started.model_id,
                task_id=started.task_id,
                group=started.group_name,
            )
            return started.model_id
        raise ImportFailed(
            [
                Problem(
                    "import.ymir_refused",
                    "import.ymir_api.group_name",
                    f"the model group names {base!r} to {base}-{GROUP_SUFFIXES} are all taken in "
                    f"YMIR project {project_id}",
                )
            ]
        )

    def _reserve(self, package: PreparedPackage, project_id: int, name: str) -> bool:
        """Take the group name for this package, or say it is taken: by a group in YMIR, or
        by another package's attempt in the ledger (the same name posted twice at once makes
        two groups of one name in YMIR: its check and its insert are not one transaction).
        Recorded before the POST, under one lock for all workers, kept across restarts."""
        with _NAMING:
            if _fold(name) in _names_held(package, project_id):
                return False
            if self.client.find_group(project_id, name) is not None:
                return False
            # Before the POST: a crash finds it by name, and no other import takes it.
            package.record_facts(YmirFacts(group_name=name).as_facts())
        return True

    def staged_path(self, package: PreparedPackage) -> Path:
        return self.settings.staging / f"{package.sha256[:STAGED_DIGITS]}.tar.gz"

    def _path_in_ymir(self, staged: Path) -> str:
        return str(PurePosixPath(self.settings.staging_in_ymir) / staged.name)

    def _stage(self, package: PreparedPackage) -> Path:
        """The normalized package in the staging folder, written atomically (readable by
        YMIR's backend, which runs as another user)."""
        target = self.staged_path(package)
        with temporary_file(self.settings.staging) as (stream, temporary):
            write_tar(package.report, package.source, stream, self.level, self.work)
            finish_file(stream, temporary, target, mode=STAGED_MODE)
        return target

    def _wait(self, package: PreparedPackage, project_id: int, model_id: int) -> ImportResult:
        deadline = self.clock() + self.settings.timeout
        while True:
            model = self.client.model(model_id)
            if model.result_state is ResultState.READY:
                self._unstage(package)
                return ready_result(project_id, model)
            if model.result_state is ResultState.ERROR:
                self._unstage(package)
                raise ImportFailed([_failure(model)])
            if self.clock() >= deadline:
                raise PassingFailure(
                    f"YMIR has not finished importing model {model_id} after "
                    f"{self.settings.timeout:g} s (import.ymir_api.timeout); waiting on"
                )
            package.progress(step="ymir", detail=f"waiting for YMIR model {model_id}")
            self.sleep(self.settings.poll_interval)

    def _unstage(self, package: PreparedPackage) -> None:
        self.staged_path(package).unlink(missing_ok=True)


def _find_in_group(
    client: YmirClient, package: PreparedPackage, project_id: int, name: str
) -> int | None:
    """Our model in the group an earlier attempt posted (its answer lost), if any."""
    group_id = client.find_group(project_id, name)
    if group_id is None:
        return None
    models = [
        model
        for model in client.models_of_group(project_id, group_id)
        if package.sha256[:12] in model.description  # ours, not a namesake
        and not _judged(package.ledger, model.model_id)  # a failure told: post anew
    ]
    if not models:
        return None
    found = models[0]
    package.record_facts(
        YmirFacts(
            model_id=found.model_id, task_id=found.task_id, group_name=found.group_name
        ).as_facts()
    )
    log.info("ymir_group_found", group=name, model_id=found.model_id)
    return found.model_id


def clean_staging(staging: Path, ledger: Ledger) -> None:
    """A staged package YMIR is done with (a kill before the daemon removed it): its
    package settled in our ledger, no attempt left to resume it. A staged file our ledger
    does not know may be another machine's: it stays."""
    for staged in sorted(staging.glob("*.tar.gz")):
        prefix = staged.name.removesuffix(".tar.gz")
        if len(prefix) != STAGED_DIGITS or not staged.is_file() or staged.is_symlink():
            continue
        attempts = [found for found in ledger.find(prefix) if found.sha256]
        if not attempts or any(found.status in IN_FLIGHT for found in attempts):
            continue
        sha256 = attempts[0].sha256
        assert sha256 is not None
        alive = _alive(ledger, ledger.resumable_by_sha256(sha256))
        if max(attempts, key=lambda found: found.id).status is Status.FAILED:
            # Failed for good: no attempt will resume it. Only a model YMIR may still be
            # importing from the staged file keeps it until YMIR is done.
            alive = [found for found in alive if YmirFacts.of(found).model_id is not None]
        if alive or all(found.status not in SETTLED for found in attempts):
            continue  # the next attempt on the package resumes from it
        staged.unlink(missing_ok=True)
        log.info("staged_package_removed", path=str(staged), reason="YMIR is done with it")


def ready_result(project_id: int, model: ModelState) -> ImportResult:
    """A model YMIR says is ready, as the import's result: its hash, mAP and facts."""
    stages = [
        {"name": stage.name, "mAP": stage.map, "tp": stage.tp, "fp": stage.fp, "fn": stage.fn}
        for stage in model.stages
    ]
    facts = YmirFacts(
        project_id, model.model_id, model.task_id, model.group_name, model.name, stages
    )
    return ImportResult(
        model_hash=model.hash or "", stored_path=None, facts=facts.as_facts(), mAP=model.map
    )


@dataclass(frozen=True, slots=True)
class YmirFacts:
    """What the ledger keeps of an attempt's life in YMIR, under the names ``ledger --json``
    and ``status --json`` show (``ymir_project_id``, ...)."""

    project_id: int | None = None
    model_id: int | None = None
    task_id: int | None = None
    group_name: str | None = None
    model_name: str | None = None
    stages: list[JsonObject] | None = None  # name, mAP, tp, fp, fn as YMIR shows them

    @classmethod
    def of(cls, attempt: Attempt) -> YmirFacts:
        facts = attempt.facts

        def number(key: str) -> int | None:
            value = facts.get(f"ymir_{key}")
            return int(value) if isinstance(value, int | str) and str(value).isdigit() else None

        def text(key: str) -> str | None:
            value = facts.get(f"ymir_{key}")
            return value if isinstance(value, str) else None

        stages = facts.get("ymir_stages")
        return cls(
            number("project_id"),
            number("model_id"),
            number("task_id"),
            text("group_name"),
            text("model_name"),
            stages if isinstance(stages, list) else None,
        )

    def as_facts(self) -> Facts:
        """The facts that are known, to merge into what the attempt recorded before."""
        return {
            f"ymir_{name}": value
            for name, value in (
                ("project_id", self.project_id),
                ("model_id", self.model_id),
                ("task_id", self.task_id),
                ("group_name", self.group_name),
                ("model_name", self.model_name),
                ("stages", self.stages),
            )
            if value is not None
        }


def _failure(model: ModelState) -> Problem:
    code = model.error_code
    meaning = ERROR_CODES.get(code or 0, "YMIR gave no reason")
    where = f"YMIR model {model.model_id} (group {model.group_name!r})"
    return Problem(
        "import.ymir_failed",
        "ymir",
        f"{where} ended in error" + (f" with code {code}" if code else "") + f": {meaning}",
    )


def check_setup(config: Config) -> Iterator[Finding]:
    """``check``: the staging folder, the login, every project packages may go to, and the
    docker images YMIR has (a package's executor must be one of them)."""
    settings = settings_of(config)
    yield folder_finding("import.ymir_api.staging", settings.staging)
    yield from writer_findings(settings.writers)
    if settings.password_file is not None:
        yield _password_file_finding(settings.password_file)
    login = f"log in to YMIR at {settings.url} as {settings.user}"
    try:
        client = YmirClient(settings.url, settings.user, read_password(settings), timeout=15)
        client.login()
    except (DropboxError, OSError) as error:
        yield Finding(login, False, str(error))
        return
    yield Finding(login, True, "")
    wanted = {settings.project_id: "import.ymir_api.project_id"} if settings.project_id else {}
    for routed, project_id in settings.projects.items():
        wanted.setdefault(project_id, f"import.ymir_api.projects.{routed}")
    if not wanted:
        yield Finding("a YMIR project to import into", False,
                      "import.ymir_api.project_id is 0 and no folder is routed")  # fmt: skip
    for project_id, key in sorted(wanted.items()):
        try:
            project = client.project(project_id)
        except YmirError as error:
            yield Finding(f"YMIR project {project_id} ({key})", False, str(error))
            continue
        yield Finding(
            f"YMIR project {project_id} ({key})",
            True,
            f"{project.name!r}, object type {project.object_type}",
        )
    yield from image_findings(client, settings.require_registered_executor)


def _password_file_finding(path: Path) -> Finding:
    """The password file is its owner's alone (read by the daemon, never by its group or the
    world): the daemon still reads a looser one, and ``check`` says so."""
    what = "import.ymir_api.password_file"
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as error:
        return Finding(what, False, f"{path}: {error.strerror}")
    if mode & 0o077:
        return Finding(what, False, f"{path} has mode {mode:04o}: others may read the "
                       f"password; chmod 600 {path}")  # fmt: skip
    return Finding(what, True, f"{path}, mode {mode:04o}")


def list_projects(config: Config) -> list[dict[str, object]]:
    """``ymir-dropbox projects``: the YMIR projects the configured user can import into."""
    settings = config.import_.settings
    if not isinstance(settings, YmirApiSettings):
        raise DropboxError("projects: import.backend is not 'ymir-api'")
    client = YmirClient(settings.url, settings.user, read_password(settings), timeout=15)
    return [asdict(project) for project in client.projects()]


BACKEND = YmirApiBackend
COMMANDS = (
    BackendCommand(
        "projects",
        "list the YMIR projects the configured user can import into",
        list_projects,
        ("id", "name", "object_type"),
        "one JSON object per project",
    ),
)
FACT_NAMES: tuple[str, ...] = tuple(f"ymir_{field.name}" for field in fields(YmirFacts))
# A staged package is read by YMIR's backend, which may run as a user of its own: readable by
# everyone, whatever the daemon's umask (the staging folder is YMIR's sharing folder).
STAGED_MODE = 0o644


@dataclass(frozen=True, slots=True)
class YmirApiSettings:
    """``[import.ymir_api]``: YMIR's web backend, reached over its API."""

    url: str
    user: str
    password_file: Path | None
    project_id: int  # 0: no default project (packages outside a routed folder fail)
    staging: Path  # where the normalized package is written, on this host
    staging_in_ymir: str  # the same folder as YMIR's backend sees it
    group_name: str
    poll_interval: float
    timeout: float
    projects: dict[str, int]  # top-level inbox folder -> project id
    # Top-level inbox folder -> the group whose members alone may import through it.
    writers: dict[str, str]
    # A package whose executor image YMIR lacks (or cannot run yet) fails before anything is
    # sent to YMIR, instead of being imported with a warning.
    require_registered_executor: bool
    # From YMIR_DROPBOX_YMIR_PASSWORD; else read from password_file when used. Never shown.
    password: str = field(repr=False)


YMIR_PASSWORD_ENV_VAR = "YMIR_DROPBOX_YMIR_PASSWORD"  # noqa: S105 - a variable's name


def settings_of(config: Config) -> YmirApiSettings:
    """``[import.ymir_api]``, when it is the configured backend."""
    settings = config.import_.settings
    if not isinstance(settings, YmirApiSettings):
        raise ConfigError("import.backend is not 'ymir-api'")
    return settings


def _settings(table: JsonObject, resolve: Callable[[str], Path], where: str) -> YmirApiSettings:
    for key in ("url", "user", "staging"):
        if not table[key]:
            raise ConfigError(
                f"{where}: import.ymir_api.{key}: required when import.backend is 'ymir-api'"
            )
    try:
        table["group_name"].format(stem="x")
    except (KeyError, IndexError, ValueError):
        raise ConfigError(
            f"{where}: import.ymir_api.group_name: {table['group_name']!r} may use only "
            "the field {stem}"
        ) from None
    return YmirApiSettings(
        url=table["url"].rstrip("/"),
        user=table["user"],
        password_file=resolve(table["password_file"]) if table["password_file"] else None,
        project_id=table["project_id"],
        staging=resolve(table["staging"]).absolute(),
        staging_in_ymir=table["staging_in_ymir"],
        group_name=table["group_name"],
        poll_interval=table["poll_interval"],
        timeout=table["timeout"],
        projects={
            folder: route["project"] if isinstance(route, dict) else route
            for folder, route in table["projects"].items()
        },
        writers={
            folder: route["group"]
            for folder, route in table["projects"].items()
            if isinstance(route, dict) and "group" in route
        },
        require_registered_executor=table["require_registered_executor"],
        # Needed only to talk to YMIR (the daemon, check, projects), and read only then from
        # the file: an operator's `status` or `ledger` needs neither the file nor the variable.
        password=os.environ.get(YMIR_PASSWORD_ENV_VAR, ""),
    )


SETTINGS = BackendSettings(
    schema={
        "url": {"type": "string", "regex": r"(|https?://\S+)"},
        "user": {"type": "string"},
        "password_file": PATH,
        "project_id": {"type": "integer", "min": 0},
        "staging": PATH,
        "staging_in_ymir": {"type": "string", "regex": r"/\S*"},
        "group_name": {"type": "string", "empty": False, "maxlength": 90},
        "poll_interval": POSITIVE_NUMBER,
        "timeout": POSITIVE_NUMBER,
        "projects": {
            "type": "dict",
            "keysrules": {"type": "string", "check_with": "path_component"},
            # ``team-a = 3``, or ``team-a = { project = 3, group = "team-a" }``: only the
            # members of that group import through the folder.
            "valuesrules": {
                "anyof": [
                    {"type": "integer", "min": 1},
                    {
                        "type": "dict",
                        "schema": {
                            "project": {"type": "integer", "min": 1, "required": True},
                            "group": {"type": "string", "empty": False},
                        },
                    },
                ]
            },
        },
        "require_registered_executor": {"type": "boolean"},
    },
    defaults={
        "url": "",
        "user": "",
        "password_file": None,
        "project_id": 0,
        "staging": None,
        "staging_in_ymir": "/ymir-sharing/ymir-dropbox",
        "group_name": "{stem}",
        "poll_interval": 5.0,
        "timeout": 3600.0,
        "projects": {},
        "require_registered_executor": False,
    },
    build=_settings,
)
