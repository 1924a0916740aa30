"""The mistakes people make writing ymir-info.yaml by hand, or packing it, and the hint each
problem gives: the code and field stay what they are, the message says what was meant."""

from __future__ import annotations

import bz2
import io
import lzma
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from factory import (
    Entry,
    info_yaml,
    legacy_package,
    seed_entries,
    seed_info,
    seed_package,
    tar_bytes,
    write_package,
)

from ymir_dropbox.config import DEFAULTS
from ymir_dropbox.core.settings import Limits
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.reading.validation import ValidationReport, validate_package

LIMITS = Limits(**DEFAULTS["limits"])


def validate(path: Path) -> ValidationReport:
    return validate_package(path, LIMITS)


def the_problem(problems: tuple[Problem, ...], code: str) -> Problem:
    """The one problem of ``code``: one mistake is told once."""
    [problem] = [problem for problem in problems if problem.code == code]
    return problem


def package_with_stage(tmp_path: Path, **values: Any) -> ValidationReport:
    info = seed_info()
    info["stages"]["stage_1000"].update(values)
    return validate(seed_package(tmp_path / "package.tar.gz", info))


# -- timestamps -------------------------------------------------------------------------------


def test_a_timestamp_in_milliseconds_says_the_year_it_reads_as_and_the_seconds(
    tmp_path: Path,
) -> None:
    report = package_with_stage(tmp_path, timestamp=1714521600000)

    [problem] = report.errors  # YMIR's mir refuses it (above 2^31-1): still an error
    assert (problem.code, problem.field) == (
        "info.too_large_for_ymir",
        "stages.stage_1000.timestamp",
    )
    assert "the year 56301" in problem.message  # 1714521600000 s after 1970
    assert "milliseconds" in problem.message
    assert problem.message.endswith("YMIR wants whole seconds: 1714521600")


def test_a_timestamp_too_large_but_not_in_milliseconds_gets_no_milliseconds_hint(
    tmp_path: Path,
) -> None:
    report = package_with_stage(tmp_path, timestamp=2**31)  # 2038, one second too late

    problem = the_problem(report.errors, "info.too_large_for_ymir")
    assert "milliseconds" not in problem.message
    assert "must be at most 2147483647" in problem.message


def test_a_float_timestamp_asks_for_whole_seconds_from_int_time_time(tmp_path: Path) -> None:
    report = package_with_stage(tmp_path, timestamp=1714521600.123)

    [problem] = report.errors  # YMIR's mir reads it as an int: still an error
    assert (problem.code, problem.field) == ("info.wrong_type", "stages.stage_1000.timestamp")
    assert "found float 1714521600.123" in problem.message
    assert problem.message.endswith("whole seconds, e.g. int(time.time()): 1714521600")


def test_a_float_timestamp_in_milliseconds_gives_the_seconds(tmp_path: Path) -> None:
    report = package_with_stage(tmp_path, timestamp=1714521600123.0)

    problem = the_problem(report.errors, "info.wrong_type")
    assert "int(time.time()): 1714521600 (it looks like milliseconds)" in problem.message


# -- metrics in percent -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("place", "metric", "value", "fraction"),
    [
        (("stages", "stage_1000"), "mAP", 55.3, "0.553"),
        (("stages", "stage_1000"), "mAP", 71.2, "0.712"),
        (("stages", "stage_1000"), "mAR", 60, "0.6"),
        (("task_context",), "mAP", 100, "1"),
    ],
    ids=["stage-mAP", "stage-mAP-no-float-noise", "stage-mAR-int", "task-context-mAP-100"],
)
def test_a_metric_in_percent_says_it_looks_like_a_percentage(
    tmp_path: Path, place: tuple[str, ...], metric: str, value: float, fraction: str
) -> None:
    info = seed_info()
    target = info
    for key in place:
        target = target[key]
    target[metric] = value
    field = ".".join([*place, metric])

    report = validate(seed_package(tmp_path / "package.tar.gz", info))

    problem = the_problem(report.errors, "info.out_of_range")
    assert problem.field == field
    assert problem.message == (
        f"{field} must be a number between 0 and 1, found {type(value).__name__} {value}; "
        f"it looks like a percentage: {fraction}?"
    )


@pytest.mark.parametrize("value", [-0.5, 100.5], ids=["negative", "above-100"])
def test_a_metric_out_of_range_but_not_a_percentage_gets_no_hint(
    tmp_path: Path, value: float
) -> None:
    report = package_with_stage(tmp_path, mAP=value)

    assert "percentage" not in the_problem(report.errors, "info.out_of_range").message


# -- numpy values dumped by yaml.dump ---------------------------------------------------------


def numpy_scalar_yaml(core: str, code: str, data: str, indent: int) -> str:
    """A numpy scalar as ``yaml.dump`` writes it (numpy 1 names ``numpy.core``, numpy 2
    ``numpy._core``), its lines after the first indented by ``indent``."""
    lines = [
        f"!!python/object/apply:numpy.{core}.multiarray.scalar",
        "- !!python/object/apply:numpy.dtype",
        "  args:",
        f"  - {code}",
        "  - false",
        "  - true",
        "  state: !!python/tuple",
        "  - 3",
        "  - <",
        "  - null",
        "  - null",
        "  - null",
        "  - -1",
        "  - -1",
        "  - 0",
        "- !!binary |",
        f"  {data}",
    ]
    return f"\n{' ' * indent}".join(lines)


def with_numpy_value(path: Path, key: str, core: str, code: str, data: str) -> tuple[Path, int]:
    """The seed package whose stage_2000 ``key`` was dumped from a numpy scalar; and the
    line it is on."""
    info = seed_info()
    info["stages"]["stage_2000"][key] = "NUMPY"
    text = info_yaml(info).decode()
    text = text.replace("NUMPY", numpy_scalar_yaml(core, code, data, 4))
    tag = f"!!python/object/apply:numpy.{core}.multiarray.scalar"
    line = text.splitlines().index(f"    {key}: {tag}")
    entries = [*seed_entries()[:-1], Entry("ymir-info.yaml", text.encode())]
    return write_package(path, entries), line + 1


@pytest.mark.parametrize(
    ("core", "key", "code", "data", "type_name", "conversion", "value"),
    [
        ("_core", "mAP", "f8", "AAAAAAAA4D8=", "float64", "float()", "0.5"),
        ("core", "mAP", "f4", "AACAPg==", "float32", "float()", "0.25"),
        ("core", "tp", "i8", "PAAAAAAAAAA=", "int64", "int()", "60"),
    ],
    ids=["numpy-2-float64", "numpy-1-float32", "numpy-1-int64"],
)
def test_a_numpy_scalar_says_to_convert_it_before_dumping(
    tmp_path: Path,
    core: str,
    key: str,
    code: str,
    data: str,
    type_name: str,
    conversion: str,
    value: str,
) -> None:
    package, line = with_numpy_value(tmp_path / "package.tar.gz", key, core, code, data)

    report = validate(package)

    [problem] = report.errors
    assert (problem.code, problem.field) == ("info.yaml_tag", f"stages.stage_2000.{key}")
    assert f"(line {line}, column " in problem.message
    assert f"is a numpy {type_name} scalar that yaml.dump wrote as" in problem.message
    assert f"convert it with {conversion} before dumping" in problem.message
    assert problem.message.endswith(f"so that it is written as {value}")


def test_a_numpy_dtype_says_it_is_numpy_written_by_yaml_dump(tmp_path: Path) -> None:
    text = info_yaml(seed_info()).decode() + (
        "precision: !!python/object/apply:numpy.dtype\n  args:\n  - f8\n  - false\n  - true\n"
    )
    entries = [*seed_entries()[:-1], Entry("ymir-info.yaml", text.encode())]

    report = validate(write_package(tmp_path / "package.tar.gz", entries))

    [problem] = report.errors
    assert (problem.code, problem.field) == ("info.yaml_tag", "precision")
    assert "is a numpy dtype that yaml.dump wrote as" in problem.message
    assert "float() or int()" in problem.message


def test_another_python_tag_keeps_the_plain_message(tmp_path: Path) -> None:
    text = info_yaml(seed_info()).decode() + "extra: !!python/tuple [1, 2]\n"
    entries = [*seed_entries()[:-1], Entry("ymir-info.yaml", text.encode())]

    report = validate(write_package(tmp_path / "package.tar.gz", entries))

    [problem] = report.errors
    assert (problem.code, problem.field) == ("info.yaml_tag", "extra")
    assert problem.message == "the YAML tag 'tag:yaml.org,2002:python/tuple' is not allowed"


# -- a file name with a typo ------------------------------------------------------------------


def test_a_missing_file_suggests_the_near_file_no_stage_lists(tmp_path: Path) -> None:
    report = package_with_stage(tmp_path, files=["model-100.params", "model-symbol.json"])

    problem = the_problem(report.errors, "package.missing_file")
    assert problem.field == "stages.stage_1000.files[0]"
    assert "lists 'model-100.params', but the archive has neither" in problem.message
    assert problem.message.endswith("(did you mean 'model-1000.params'?)")


def test_a_missing_file_suggests_a_near_file_in_the_stage_folder(tmp_path: Path) -> None:
    info = seed_info()
    info["stages"]["stage_1000"]["files"] = ["model-1000.param", "model-symbol.json"]
    entries = [
        Entry("stage_1000/model-1000.params", b"weights") if entry.name == "model-1000.params"
        else entry
        for entry in seed_entries(info)
    ]  # fmt: skip

    report = validate(write_package(tmp_path / "package.tar.gz", entries))

    problem = the_problem(report.errors, "package.missing_file")
    assert problem.message.endswith("(did you mean 'model-1000.params'?)")


def test_a_missing_file_suggests_no_file_another_stage_lists(tmp_path: Path) -> None:
    """stage_3000's weights were left out: model-2000.params is stage_2000's, not a typo."""
    info = seed_info()
    info["stages"]["stage_3000"] = {
        "files": ["model-3000.params", "model-symbol.json"],
        "mAP": 0.7,
        "stage_name": "stage_3000",
        "timestamp": 1655975206,
    }

    report = validate(seed_package(tmp_path / "package.tar.gz", info))

    problem = the_problem(report.errors, "package.missing_file")
    assert problem.field == "stages.stage_3000.files[0]"
    assert "did you mean" not in problem.message


# -- a package compressed with something else than gzip ---------------------------------------


def seed_tar(fmt: int = tarfile.PAX_FORMAT) -> bytes:
    return tar_bytes(seed_entries(), fmt)


def seed_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry in seed_entries():
            archive.writestr(entry.name, entry.data)
    return buffer.getvalue()


def zstd_frame() -> bytes:
    """The zstd magic 28 B5 2F FD, written literally: the standard library has no zstd."""
    return b"\x28\xb5\x2f\xfd" + bytes(64)


CONTAINERS: dict[str, tuple[Callable[[], bytes], str, str]] = {
    "zip": (seed_zip, "it is a zip archive (PK..)", "tar czf NAME.tar.gz"),
    "bzip2": (lambda: bz2.compress(seed_tar()), "it is bzip2-compressed", "bzip2 -dc FILE | gzip"),
    "xz": (lambda: lzma.compress(seed_tar()), "it is xz-compressed", "xz -dc FILE | gzip"),
    "zstd": (zstd_frame, "it is zstd-compressed (28 B5 2F FD)", "zstd -dc FILE | gzip"),
    "plain-tar-pax": (
        seed_tar,
        "it is an uncompressed tar archive (ustar at offset 257)",
        "gzip -c FILE > NAME.tar.gz",
    ),
    "plain-tar-gnu": (
        lambda: seed_tar(tarfile.GNU_FORMAT),
        "it is an uncompressed tar archive (ustar at offset 257)",
        "gzip -c FILE > NAME.tar.gz",
    ),
}


@pytest.mark.parametrize(("make", "what", "advice"), CONTAINERS.values(), ids=CONTAINERS.keys())
def test_not_gzip_names_what_the_file_is_and_what_to_do(
    tmp_path: Path, make: Callable[[], bytes], what: str, advice: str
) -> None:
    package = tmp_path / "package.tar.gz"
    package.write_bytes(make())

    report = validate(package)

    [problem] = report.errors
    assert (problem.code, problem.field) == ("container.not_gzip", "")
    assert problem.message.startswith(f"the file is not gzip-compressed: {what}")
    assert advice in problem.message


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"", "the file is empty"), (b"just some text\n" * 100, "no gzip magic bytes")],
    ids=["empty", "unknown-bytes"],
)
def test_not_gzip_of_no_known_kind_says_so(tmp_path: Path, data: bytes, reason: str) -> None:
    package = tmp_path / "package.tar.gz"
    package.write_bytes(data)

    [problem] = validate(package).errors

    assert (problem.code, problem.message) == (
        "container.not_gzip",
        f"the file is not gzip-compressed ({reason})",
    )


# -- no executor ------------------------------------------------------------------------------


def without_executor(change: str) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        info = seed_info()
        if change == "absent":
            del info["task_context"]["executor"]
        elif change == "no-task-context":
            del info["task_context"]
        else:
            info["task_context"]["executor"] = {"empty": "", "blank": "  ", "null": None}[change]
        return seed_package(path, info)

    return build


NO_EXECUTOR: dict[str, tuple[Callable[[Path], Path], str]] = {
    "executor-absent": (without_executor("absent"), "missing"),
    "executor-empty": (without_executor("empty"), "empty"),
    "executor-blank": (without_executor("blank"), "empty"),
    "executor-null": (without_executor("null"), "missing"),
    "no-task-context": (without_executor("no-task-context"), "missing"),
    "legacy-1.1.0": (legacy_package, "missing"),
}


@pytest.mark.parametrize(("build", "found"), NO_EXECUTOR.values(), ids=NO_EXECUTOR.keys())
def test_a_package_without_an_executor_is_imported_with_a_warning_saying_why(
    tmp_path: Path, build: Callable[[Path], Path], found: str
) -> None:
    report = validate(build(tmp_path / "package.tar.gz"))

    assert report.ok
    warning = the_problem(report.warnings, "info.no_executor")
    assert warning.field == "task_context.executor"
    assert warning.message.startswith(f"task_context.executor is {found}: YMIR imports the model")
    assert "train, mine and infer with it only with an executor" in warning.message


def test_a_package_naming_its_executor_has_no_such_warning(tmp_path: Path) -> None:
    report = validate(seed_package(tmp_path / "package.tar.gz"))

    assert report.warnings == ()


@pytest.mark.parametrize(
    ("place", "value"),
    [(("task_context", "executor"), 7), (("task_context",), "sample-executor")],
    ids=["executor-not-a-string", "task-context-not-a-mapping"],
)
def test_a_task_context_of_the_wrong_type_is_the_schema_error_alone(
    tmp_path: Path, place: tuple[str, ...], value: Any
) -> None:
    info = seed_info()
    target = info
    for key in place[:-1]:
        target = target[key]
    target[place[-1]] = value

    report = validate(seed_package(tmp_path / "package.tar.gz", info))

    assert [(p.code, p.field) for p in report.errors] == [("info.wrong_type", ".".join(place))]
    assert report.warnings == ()
