"""Validation: from one pass over a package to a report with every problem found.

Pure: it reads the package and returns a :class:`ValidationReport`; it does not log, move
files or touch the ledger. The daemon decides what to do with the report.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ymir_dropbox.core.jsonvalues import JsonObject
from ymir_dropbox.core.settings import Limits
from ymir_dropbox.reading.archive import (
    INFO_NAME,
    ArchiveScan,
    FileIdentity,
    Holder,
    Member,
    PackageUnreadable,
    open_package,
    scan_file,
)
from ymir_dropbox.reading.hints import (
    float_timestamp_hint,
    milliseconds_message,
    percentage_hint,
    seconds_from_milliseconds,
)
from ymir_dropbox.reading.info_schema import (
    KNOWN_VERSIONS,
    LEGACY_VERSION,
    RULE_CODES,
    SCHEMA_LEGACY,
    SCHEMA_V2,
)
from ymir_dropbox.reading.info_yaml import load_info
from ymir_dropbox.reading.names import did_you_mean, is_path_component
from ymir_dropbox.reading.normalization import migrate_legacy, normalize
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.reading.rules import SchemaError, StrictValidator, keys_beside, schema_errors

ATTACHMENTS = "attachments"
RESERVED_NAMES = frozenset({INFO_NAME, ATTACHMENTS})
MIR_MODEL_NAME = "model.tar.gz"  # what mir 2.3.0 calls the package it keeps


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One member of the stored package and the archive member its bytes come from."""

    name: str
    source: Member


@dataclass(frozen=True, slots=True)
class ValidationReport:
    package: str
    errors: tuple[Problem, ...]
    warnings: tuple[Problem, ...] = ()
    package_bytes: int = 0
    unpacked_bytes: int = 0
    sha256: str | None = None
    declared_version: str | None = None
    normalized: JsonObject | None = None
    files: tuple[StoredFile, ...] = field(default=())
    identity: FileIdentity | None = None

    @property
    def ok(self) -> bool:
        return not self.errors and self.normalized is not None

    @property
    def best_stage(self) -> JsonObject | None:
        if self.normalized is None:
            return None
        stage: JsonObject = self.normalized["stages"][self.normalized["best_stage_name"]]
        return stage

    @property
    def best_stage_name(self) -> str | None:
        return None if self.normalized is None else str(self.normalized["best_stage_name"])

    @property
    def best_mAP(self) -> float | None:
        stage = self.best_stage
        if stage is None:
            return None
        found: float = stage["mAP"]
        return found

    @property
    def class_names(self) -> tuple[str, ...] | None:
        if self.normalized is None:
            return None
        return tuple(self.normalized["executor_config"]["class_names"])

    @property
    def object_type(self) -> int | None:
        return None if self.normalized is None else int(self.normalized["object_type"])

    def summary(self) -> JsonObject:
        """The report as plain data (``validate --json``)."""
        result: JsonObject = {
            "package": self.package,
            "ok": self.ok,
            "errors": [problem.as_dict() for problem in self.errors],
            "warnings": [problem.as_dict() for problem in self.warnings],
        }
        if self.ok and self.normalized is not None and self.best_stage is not None:
            result.update(
                best_stage_name=self.normalized["best_stage_name"],
                mAP=self.best_stage["mAP"],
                class_names=self.normalized["executor_config"]["class_names"],
                object_type=self.normalized["object_type"],
                package_version=self.normalized["package_version"],
                declared_version=self.declared_version,
                stages=sorted(self.normalized["stages"]),
            )
        return result


def validate_package(
    path: Path, limits: Limits, *, sha256: str | None = None, hashed: bool = True
) -> ValidationReport:
    """Validate the package at ``path`` (see :func:`validated`).

    Raises ``OSError`` only when the file cannot be opened or read.
    """
    with validated(path, limits, sha256=sha256, hashed=hashed) as (report, _):
        return report


@contextmanager
def validated(
    path: Path, limits: Limits, *, sha256: str | None = None, hashed: bool = True
) -> Iterator[tuple[ValidationReport, io.BufferedReader | None]]:
    """Validate the package at ``path`` and keep it open while the block runs, so that the
    store reads again the very file validated, even if its path is deleted or replaced.

    One pass, which also computes the package's sha256 (in a second thread) unless
    ``sha256`` is given, as found by :func:`~ymir_dropbox.reading.archive.file_sha256`, or
    the report has no use for it (not ``hashed``). The file is ``None`` when it cannot be
    opened as a package (a symlink, a fifo): the report says why.
    """
    with ExitStack() as stack:
        opened: io.BufferedReader | None
        try:
            opened = stack.enter_context(open_package(path))
        except PackageUnreadable as error:
            opened = None
            report = ValidationReport(path.name, (Problem("package.not_regular", "", str(error)),))
        else:
            report = validate_file(path.name, opened, limits, sha256=sha256, hashed=hashed)
        yield report, opened


class PackageSink(Protocol):
    """Takes a package as validation reads it (a store writing alongside): what
    ``ymir-info.yaml`` says as soon as it is read, and the members' bytes (see
    :class:`~ymir_dropbox.reading.archive.MemberSink`). It decides nothing: the report does."""

    def info(self, judged: InfoJudgement) -> None:
        """``ymir-info.yaml`` was read and judged on its own."""

    def member(self, member: Member, readinto: Callable[[memoryview], int]) -> None:
        """Another member (as ``MemberSink.member``)."""


class _Judging:
    """The scan's sink: judges ``ymir-info.yaml`` once, as soon as it is read, for the report
    and for the package sink, to which it hands the members on."""

    def __init__(self, sink: PackageSink | None) -> None:
        self.sink = sink
        self.judged: InfoJudgement | None = None

    def info(self, member: Member, data: bytes) -> None:
        self.judged = judge_info(data, member.mtime)
        if self.sink is not None:
            self.sink.info(self.judged)

    def member(self, member: Member, readinto: Callable[[memoryview], int]) -> None:
        if self.sink is not None:
            self.sink.member(member, readinto)


def validate_file(
    name: str,
    opened: io.BufferedReader,
    limits: Limits,
    *,
    sha256: str | None = None,
    sink: PackageSink | None = None,
    hashed: bool = True,
) -> ValidationReport:
    """Validate an open package file (from its start) named ``name`` in the report; the
    package is given to ``sink`` as it is read (see :class:`PackageSink`)."""
    judging = _Judging(sink)
    scan = scan_file(opened, limits, sha256=sha256, sink=judging, hashed=hashed)
    return validate_scan(name, scan, judging.judged)


def validate_scan(
    package: str, scan: ArchiveScan, judged: InfoJudgement | None = None
) -> ValidationReport:
    """Turn what the archive pass found into a report (no I/O); ``judged``: what
    :func:`judge_info` found in the scan's ``ymir-info.yaml``, if it already ran."""
    errors = list(scan.problems)
    warnings: list[Problem] = []

    def report(**values: Any) -> ValidationReport:
        return ValidationReport(
            package,
            tuple(errors),
            tuple(warnings),
            scan.package_bytes,
            scan.unpacked_bytes,
            scan.sha256,
            identity=scan.identity,
            **values,
        )

    if scan.info is None:
        if scan.info_member is None and not errors:
            nested = [name for name in scan.members if name.rsplit("/", 1)[-1] == INFO_NAME]
            if nested:
                errors.append(
                    Problem(
                        "info.not_at_root",
                        nested[0],
                        f"{INFO_NAME} must be at the root of the {scan.holder}, "
                        f"found {nested[0]!r}",
                    )
                )
            else:
                errors.append(
                    Problem("info.missing", INFO_NAME, f"the {scan.holder} has no {INFO_NAME}")
                )
        return report()

    assert scan.info_member is not None
    if judged is None:
        judged = judge_info(scan.info, scan.info_member.mtime)
    errors.extend(judged.errors)
    warnings.extend(judged.warnings)
    if judged.info is None:
        if judged.unfit is not None:
            errors.extend(_files_still_judged(judged.unfit, scan.members, scan.holder))
        return report(declared_version=judged.declared)
    files, missing, unlisted = _plan_files(judged.info, scan.members, scan.holder)
    errors.extend(missing)
    warnings.extend(unlisted)
    if errors:
        return report(declared_version=judged.declared)
    return report(
        declared_version=judged.declared, normalized=normalize(judged.info), files=tuple(files)
    )


@dataclass(frozen=True, slots=True)
class InfoJudgement:
    """What ``ymir-info.yaml`` alone says: its problems, and the document in its 2.0.0 form
    (legacy migrated, not yet normalized) once it fits the schema, even when its meaning is
    wrong (a best stage that is not a stage): the files it lists are still checked."""

    info: JsonObject | None
    declared: str | None
    errors: tuple[Problem, ...]
    warnings: tuple[Problem, ...]
    # A 2.0.x document that does not fit the schema: the rules that can still be judged on
    # it (the files its stages list) run anyway, so every problem is told at once.
    unfit: JsonObject | None = None


def judge_info(data: bytes, mtime: int) -> InfoJudgement:
    """Check the bytes of ``ymir-info.yaml`` (whose archive mtime is ``mtime``) on their own,
    before any member is looked at: the store uses it as soon as the file has been read."""
    info, problems = load_info(data)
    errors = list(problems)
    if info is None:
        return InfoJudgement(None, None, tuple(errors), ())
    declared = info.get("package_version")
    if declared is not None and not isinstance(declared, str):
        errors.append(
            Problem(
                "info.wrong_type",
                "package_version",
                f"package_version must be a string such as '2.0.0' (quote it), "
                f"found {type(declared).__name__} {declared!r}",
            )
        )
        return InfoJudgement(None, None, tuple(errors), ())
    legacy = declared == LEGACY_VERSION or (
        declared is None and "models" in info and "stages" not in info
    )
    if not legacy and declared is not None and declared not in KNOWN_VERSIONS:
        errors.append(
            Problem(
                "info.unknown_version",
                "package_version",
                f"package_version {declared!r} is not known; expected one of "
                f"{', '.join(sorted(KNOWN_VERSIONS))} or {LEGACY_VERSION}",
            )
        )
        return InfoJudgement(None, declared, tuple(errors), ())

    schema_problems, warnings = _check_schema(info, "legacy" if legacy else "v2")
    errors.extend(schema_problems)
    warnings.extend(_executor_missing(info))
    if errors:
        if legacy:
            return InfoJudgement(None, declared, tuple(errors), tuple(warnings))
        errors.extend(_meaning_still_judged(info))
        return InfoJudgement(None, declared, tuple(errors), tuple(warnings), unfit=info)
    if legacy:
        info = migrate_legacy(info, mtime)
    errors.extend(_check_meaning(info))
    return InfoJudgement(info, declared, tuple(errors), tuple(warnings))


@dataclass(frozen=True, slots=True)
class PlannedFile:
    """One file of the stored package, and the archive members that can hold its bytes, the
    first found taken (a stage's file under ``<stage>/``, else at the root)."""

    name: str
    candidates: tuple[str, ...]
    field: str
    stage: str | None = None


def stored_files(info: JsonObject) -> list[PlannedFile]:
    """The files of the stored package, in their stored order: the stages by name, each
    stage's files as listed, then the attachments by section. The order depends on the
    document alone, so the same files packed in any order store the same bytes."""
    planned = []
    for name in sorted(info["stages"]):
        for index, file_name in enumerate(info["stages"][name]["files"]):
            planned.append(
                PlannedFile(
                    f"{name}/{file_name}",
                    (f"{name}/{file_name}", file_name),
                    f"stages.{name}.files[{index}]",
                    name,
                )
            )
    for section in sorted(info.get(ATTACHMENTS) or {}):
        for index, file_name in enumerate(info[ATTACHMENTS][section]):
            member_name = f"{ATTACHMENTS}/{section}/{file_name}"
            planned.append(
                PlannedFile(member_name, (member_name,), f"{ATTACHMENTS}.{section}[{index}]")
            )
    return planned


_validators = threading.local()
SCHEMAS: dict[str, JsonObject] = {"v2": SCHEMA_V2, "legacy": SCHEMA_LEGACY}


def _validator(schema: str) -> StrictValidator:
    """One validator per schema and thread: building one costs more than validating."""
    cached: dict[str, StrictValidator] | None = getattr(_validators, "by_schema", None)
    if cached is None:
        cached = _validators.by_schema = {
            "v2": StrictValidator(SCHEMA_V2, allow_unknown=False),
            "legacy": StrictValidator(SCHEMA_LEGACY, allow_unknown=False),
        }
    return cached[schema]


def _check_schema(info: JsonObject, schema: str) -> tuple[list[Problem], list[Problem]]:
    validator = _validator(schema)
    validator.validate(info)
    errors: list[Problem] = []
    warnings: list[Problem] = []
    for error in schema_errors(validator):
        code = RULE_CODES.get(error.rule, "info.invalid_value")
        problem = Problem(code, error.dotted, _schema_message(error, SCHEMAS[schema]))
        (warnings if code == "info.unknown_field" else errors).append(problem)
    return errors, warnings


def _schema_message(error: SchemaError, schema: JsonObject) -> str:
    field = error.dotted
    value = error.value
    found = f"found {type(value).__name__} {value!r}"
    match error.rule:
        case "required":
            return f"{field} is required but missing"
        case "type" | "nullable":
            hint = float_timestamp_hint(value) if _is_timestamp(error) else ""
            return f"{field} must be of type {error.constraint or 'non-null'}, {found}{hint}"
        case "min":
            return f"{field} must be at least {error.constraint}, {found}"
        case "max":
            return f"{field} must be at most {error.constraint}, {found}"
        case "unit_interval":
            return f"{field} must be a number between 0 and 1, {found}{percentage_hint(value)}"
        case "finite":
            return f"{field} must be a finite number, {found}"
        case "int32":
            seconds = seconds_from_milliseconds(value) if _is_timestamp(error) else None
            if seconds is not None:
                return milliseconds_message(field, value, seconds)
            return f"{field} must be at most 2147483647 (2^31-1, as YMIR stores it), {found}"
        case "empty" | "minlength" | "non_blank":
            return f"{field} must not be empty"
        case "unique_strings":
            return f"{field} lists {value!r} more than once"
        case "allowed":
            return f"{field} must be one of {error.constraint}, {found}"
        case "path_component":
            return f"{field} must be a plain name (no '/', backslash, '..', controls), {found}"
        case "unknown_field":
            hint = did_you_mean(str(error.path[-1]), keys_beside(schema, error.path))
            return f"{field} is not a field of the format; it is ignored{hint}"
    return f"{field} is invalid ({error.rule}), {found}"


def _executor_missing(info: JsonObject) -> list[Problem]:
    """A warning when ``task_context.executor`` does not name an image (the schema tells a
    ``task_context`` or an executor of the wrong type)."""
    context = info.get("task_context")
    if context is not None and not isinstance(context, dict):
        return []
    executor = None if context is None else context.get("executor")
    if not isinstance(executor, str | None) or (executor and executor.strip()):
        return []
    found = "missing" if executor is None else "empty"
    return [
        Problem(
            "info.no_executor",
            "task_context.executor",
            f"task_context.executor is {found}: YMIR imports the model, but can train, mine "
            "and infer with it only with an executor, the docker image that loads its files; "
            "name that image in task_context.executor",
        )
    ]


def _is_timestamp(error: SchemaError) -> bool:
    """Whether the error is about a stage's ``timestamp`` (unix seconds)."""
    return len(error.path) == 3 and error.path[0] == "stages" and error.path[2] == "timestamp"


def _check_meaning(info: JsonObject) -> list[Problem]:
    errors = []
    stages = info["stages"]
    best = info["best_stage_name"]
    if best not in stages:
        errors.append(
            Problem(
                "info.unknown_stage",
                "best_stage_name",
                f"best_stage_name {best!r} is not one of the stages ({', '.join(stages)})",
            )
        )
    for name, stage in stages.items():
        if name == MIR_MODEL_NAME:
            errors.append(
                Problem(
                    "info.reserved_stage_name",
                    f"stages.{name}",
                    f"{name!r} cannot name a stage: YMIR's mir names the stored model so, "
                    "and refuses the package",
                )
            )
        if name in RESERVED_NAMES:
            errors.append(
                Problem(
                    "info.bad_file_name",
                    f"stages.{name}",
                    f"{name!r} cannot name a stage: the stored package uses it for itself",
                )
            )
        if stage["stage_name"] != name:
            errors.append(
                Problem(
                    "info.stage_name_mismatch",
                    f"stages.{name}.stage_name",
                    f"stages.{name}.stage_name is {stage['stage_name']!r}, "
                    f"it must equal the key {name!r}",
                )
            )
    return errors


def _plain_stages(info: JsonObject) -> dict[str, JsonObject]:
    """The stages of a document that did not fit the schema whose names and files can still
    be judged: plain names, mappings, a list of plain file names (the schema told the rest)."""
    stages = info.get("stages")
    if not isinstance(stages, dict):
        return {}
    found = {}
    for name, stage in stages.items():
        files = stage.get("files") if isinstance(stage, dict) else None
        if (
            isinstance(name, str)
            and is_path_component(name)
            and isinstance(files, list)
            and all(isinstance(file, str) and is_path_component(file) for file in files)
        ):
            found[name] = stage
    return found


def _meaning_still_judged(info: JsonObject) -> list[Problem]:
    """Of the rules across the document, those its schema errors leave judgeable."""
    stages, best = info.get("stages"), info.get("best_stage_name")
    if isinstance(stages, dict) and stages and isinstance(best, str) and best not in stages:
        return [
            Problem(
                "info.unknown_stage",
                "best_stage_name",
                f"best_stage_name {best!r} is not one of the stages "
                f"({', '.join(map(str, stages))})",
            )
        ]
    return []


def _files_still_judged(
    info: JsonObject, members: dict[str, Member], holder: Holder
) -> list[Problem]:
    """The files that stages with plain names and file lists name, and the archive lacks."""
    plain = _plain_stages(info)
    _, missing, _ = _plan_files({"stages": plain, "attachments": {}}, members, holder)
    return missing


def _plan_files(
    info: JsonObject, members: dict[str, Member], holder: Holder
) -> tuple[list[StoredFile], list[Problem], list[Problem]]:
    """Which member becomes which stored file; what is missing; what no stage lists."""
    files: list[StoredFile] = []
    absent: list[PlannedFile] = []
    used = {INFO_NAME}
    for planned in stored_files(info):
        found = next((name for name in planned.candidates if name in members), None)
        if found is not None:
            files.append(StoredFile(planned.name, members[found]))
            used.add(found)
        else:
            absent.append(planned)
    left_over = sorted(set(members) - used)
    missing = [_missing(planned, left_over, holder) for planned in absent]
    unlisted = [
        Problem(
            "package.unlisted_file",
            name,
            f"{name!r} is in the {holder} but no stage lists it; it is not stored",
        )
        for name in left_over
    ]
    return files, missing, unlisted


def _missing(planned: PlannedFile, left_over: list[str], holder: Holder) -> Problem:
    """The problem of a listed file the package lacks; for a stage's file, with the name of
    a file no stage lists, where the stage would find it, when it is nearly the one listed
    (a typo): a file another stage lists is not what was meant."""
    if planned.stage is None:
        return Problem(
            "package.missing_attachment",
            planned.field,
            f"attachment {planned.name!r} is listed but not in the {holder}",
        )
    under, file_name = planned.candidates
    folder = f"{planned.stage}/"
    in_folder = [name.removeprefix(folder) for name in left_over if name.startswith(folder)]
    near = [name for name in [*in_folder, *left_over] if "/" not in name]
    return Problem(
        "package.missing_file",
        planned.field,
        f"stage {planned.stage!r} lists {file_name!r}, but the {holder} has "
        f"neither {under} nor {file_name}{did_you_mean(file_name, near)}",
    )
