"""Validation: every hostile package is refused with the right code and field; valid ones pass.

The hostile table lives in ``hostile.py``; here it is run through the library and through the
real ``ymir-dropbox validate --json``.
"""

from __future__ import annotations

import json
import random
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from factory import (
    VALID_PACKAGES,
    Entry,
    attachments_package,
    file_bytes,
    info_yaml,
    legacy_package,
    no_task_context_package,
    object_type_0_package,
    run_dropbox,
    seed_entries,
    seed_info,
    seed_package,
    seed_package_with,
    tar_command_package,
    write_config,
    write_package,
    ymir_layout_package,
)
from hostile import CASES, Hostile, params

from ymir_dropbox.config import DEFAULTS
from ymir_dropbox.core.settings import Limits
from ymir_dropbox.reading.info_schema import COUNTS, METRICS
from ymir_dropbox.reading.validation import ValidationReport, validate_package

# A module-scoped fixture: the module's tests run in one worker (pyproject's --dist).
pytestmark = pytest.mark.xdist_group("cli-validate")

LIMITS = Limits(**DEFAULTS["limits"])


def validate(path: Path, limits: Limits = LIMITS) -> ValidationReport:
    return validate_package(path, limits)


def found(report: ValidationReport) -> list[tuple[str, str]]:
    return [(problem.code, problem.field) for problem in report.errors]


# -- hostile packages, through the library ----------------------------------------------------


@pytest.mark.parametrize("case", params(CASES))
def test_validate_package_reports_the_code_and_field(case: Hostile, tmp_path: Path) -> None:
    package = case.build(tmp_path / "package.tar.gz")

    report = validate_package(package, case.limits_object)

    assert not report.ok
    assert report.normalized is None
    assert (case.code, case.expected_field(package)) in found(report)


# -- hostile packages, through `ymir-dropbox validate --json` ---------------------------------


def _validate_in_batches(packages: list[Path], config: Path, cwd: Path) -> dict[str, Any]:
    """Run `validate --json` over all packages, one process for as many as it gets through.

    A package that makes the command crash (a bug) ends its batch; it is recorded with the
    command's exit code and stderr, and the next batch starts after it.
    """
    results: dict[str, Any] = {}
    pending = list(packages)
    while pending:
        done = run_dropbox("validate", "--json", "--config", config, *pending, cwd=cwd)
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        for line in lines:
            results[line["package"]] = {"summary": line, "exit": done.returncode}
        handled = len(lines)
        if handled < len(pending):
            results[str(pending[handled])] = {
                "summary": None,
                "exit": done.returncode,
                "stderr": done.stderr[-2000:],
            }
            handled += 1
        pending = pending[handled:]
    return results


@pytest.fixture(scope="module")
def cli_validate(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every hostile package validated by the real command (one batch per set of limits)."""
    root = tmp_path_factory.mktemp("cli-validate")
    by_limits: dict[str, list[Hostile]] = {}
    for case in CASES:
        by_limits.setdefault(case.limits_toml(), []).append(case)
    results: dict[str, Any] = {}
    for index, (limits_toml, cases) in enumerate(by_limits.items()):
        folder = root / f"group-{index}"
        folder.mkdir()
        config = write_config(folder / "config.toml", "box", limits_toml)
        packages = [case.build(folder / f"{case.id}.tar.gz") for case in cases]
        by_path = _validate_in_batches(packages, config, folder)
        for case, package in zip(cases, packages, strict=True):
            results[case.id] = {**by_path[str(package)], "path": package}
    return results


@pytest.mark.parametrize("case", params(CASES))
def test_validate_json_reports_the_code_and_field(case: Hostile, cli_validate: Any) -> None:
    result = cli_validate[case.id]
    summary = result["summary"]

    assert summary is not None, f"validate crashed: {result.get('stderr')}"
    assert summary["ok"] is False
    problems = [(error["code"], error["field"]) for error in summary["errors"]]
    assert (case.code, case.expected_field(result["path"])) in problems
    assert result["exit"] == 1


def test_validate_json_prints_one_line_per_package(tmp_path: Path) -> None:
    good = seed_package(tmp_path / "good.tar.gz")
    bad = write_package(tmp_path / "bad.tar.gz", seed_entries()[:-1])

    done = run_dropbox("validate", "--json", good, bad, good, cwd=tmp_path)

    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(line["package"], line["ok"]) for line in lines] == [
        (str(good), True),
        (str(bad), False),
        (str(good), True),
    ]


@pytest.mark.parametrize(
    ("names", "expected_exit"),
    [(["good"], 0), (["good", "bad"], 1), (["bad", "good"], 1)],
    ids=["all-valid-exit-0", "one-invalid-last-exit-1", "one-invalid-first-exit-1"],
)
def test_validate_exit_code(names: list[str], expected_exit: int, tmp_path: Path) -> None:
    seed_package(tmp_path / "good")
    write_package(tmp_path / "bad", seed_entries()[:-1])

    done = run_dropbox("validate", *names, cwd=tmp_path)

    assert done.returncode == expected_exit, done.stderr


def test_validate_of_a_missing_file_reports_it_unreadable(tmp_path: Path) -> None:
    done = run_dropbox("validate", "--json", "absent.tar.gz", cwd=tmp_path)

    summary = json.loads(done.stdout)
    assert [error["code"] for error in summary["errors"]] == ["package.unreadable"]
    assert done.returncode == 1


def test_validate_refuses_a_symlink_as_not_regular(tmp_path: Path) -> None:
    seed_package(tmp_path / "real.tar.gz")
    (tmp_path / "link.tar.gz").symlink_to(tmp_path / "real.tar.gz")

    done = run_dropbox("validate", "--json", "link.tar.gz", cwd=tmp_path)

    summary = json.loads(done.stdout)
    assert [error["code"] for error in summary["errors"]] == ["package.not_regular"]


def test_validate_does_not_follow_a_symlink(tmp_path: Path) -> None:
    seed_package(tmp_path / "real.tar.gz")
    (tmp_path / "link.tar.gz").symlink_to(tmp_path / "real.tar.gz")

    done = run_dropbox("validate", "--json", "link.tar.gz", cwd=tmp_path)

    assert json.loads(done.stdout)["ok"] is False
    assert done.returncode == 1


# -- valid packages ---------------------------------------------------------------------------

SEED_EXPECTED = {
    "best_stage_name": "stage_2000",
    "mAP": 0.6,
    "class_names": ["person", "cat"],
    "stages": ["stage_1000", "stage_2000"],
    "package_version": "2.0.0",
}
LEGACY_EXPECTED = {
    "best_stage_name": "default_best_stage",
    "mAP": 0.42,
    "class_names": ["person"],
    "stages": ["default_best_stage"],
    "package_version": "2.0.0",
}


def _tar_dot(path: Path) -> Path:
    return tar_command_package(path, path.parent / "folder")


VALID: list[tuple[str, Callable[[Path], Path], dict[str, Any]]] = [
    ("seed-info-last", seed_package, SEED_EXPECTED),
    ("seed-info-first", VALID_PACKAGES["seed-info-first"], SEED_EXPECTED),
    ("legacy-1.1.0", legacy_package, LEGACY_EXPECTED),
    ("ymir-layout", ymir_layout_package, SEED_EXPECTED),
    ("attachments", attachments_package, SEED_EXPECTED),
    ("no-task-context", no_task_context_package, SEED_EXPECTED),
    ("object-type-0", object_type_0_package, SEED_EXPECTED),
]


@pytest.mark.parametrize(
    ("build", "expected"),
    [pytest.param(build, expected, id=name) for name, build, expected in VALID],
)
def test_valid_package_summary(
    build: Callable[[Path], Path], expected: dict[str, Any], tmp_path: Path
) -> None:
    report = validate(build(tmp_path / "package.tar.gz"))

    assert report.errors == ()
    summary = report.summary()
    assert {key: summary[key] for key in expected} == expected


def test_package_made_with_tar_czf_dot_is_valid(tmp_path: Path) -> None:
    report = validate(_tar_dot(tmp_path / "package.tar.gz"))

    assert report.errors == ()
    assert {key: report.summary()[key] for key in SEED_EXPECTED} == SEED_EXPECTED


def test_dot_slash_member_names_are_valid(tmp_path: Path) -> None:
    entries = [Entry(f"./{entry.name}", entry.data) for entry in seed_entries()]
    report = validate(write_package(tmp_path / "package.tar.gz", entries))

    assert report.ok, report.errors


def test_validate_json_of_a_valid_package(tmp_path: Path) -> None:
    package = seed_package(tmp_path / "seed.tar.gz")

    done = run_dropbox("validate", "--json", package, cwd=tmp_path)

    summary = json.loads(done.stdout)
    assert summary["ok"] is True
    assert {key: summary[key] for key in SEED_EXPECTED} == SEED_EXPECTED
    assert done.returncode == 0


# -- normalization ----------------------------------------------------------------------------


def normalized(build: Callable[[Path], Path], tmp_path: Path) -> dict[str, Any]:
    report = validate(build(tmp_path / "package.tar.gz"))
    assert report.ok, report.errors
    assert report.normalized is not None
    return report.normalized


def test_upper_case_counts_become_lower_case(tmp_path: Path) -> None:
    stage = normalized(seed_package, tmp_path)["stages"]["stage_1000"]

    assert {count: stage[count] for count in COUNTS} == {"tp": 60, "fp": 30, "fn": 30}
    assert not {"TP", "FP", "FN"} & set(stage)


def test_lower_case_counts_win_over_upper_case(tmp_path: Path) -> None:
    info = seed_info()
    info["stages"]["stage_1000"].update(tp=1, fp=2, fn=3)

    stage = normalized(lambda path: seed_package(path, info), tmp_path)["stages"]["stage_1000"]

    assert {count: stage[count] for count in COUNTS} == {"tp": 1, "fp": 2, "fn": 3}


@pytest.mark.parametrize(
    ("given", "stored"),
    [(0, 2), (None, 2), (1, 1), (2, 2), (3, 3), (4, 4)],
    ids=["0-unknown-is-detection", "absent-is-detection", "1", "2", "3", "4"],
)
def test_object_type(given: int | None, stored: int, tmp_path: Path) -> None:
    info = seed_info()
    if given is not None:
        info["object_type"] = given

    assert normalized(lambda path: seed_package(path, info), tmp_path)["object_type"] == stored


def test_every_metric_and_count_is_present(tmp_path: Path) -> None:
    stages = normalized(seed_package, tmp_path)["stages"]

    for stage in stages.values():
        assert set(stage) == {"stage_name", "files", "timestamp", *METRICS, *COUNTS}
    assert stages["stage_2000"]["mAR"] == 0
    assert stages["stage_1000"]["mAR"] == 0.6


@pytest.mark.parametrize("task_context", ["absent", None], ids=["absent", "null"])
def test_task_context_defaults_to_an_empty_mapping(task_context: Any, tmp_path: Path) -> None:
    info = seed_info()
    if task_context == "absent":
        del info["task_context"]
    else:
        info["task_context"] = task_context

    assert normalized(lambda path: seed_package(path, info), tmp_path)["task_context"] == {}


def test_legacy_becomes_one_default_best_stage(tmp_path: Path) -> None:
    info = normalized(legacy_package, tmp_path)

    assert info["best_stage_name"] == "default_best_stage"
    assert info["stages"]["default_best_stage"]["files"] == [
        "model-1000.params",
        "model-symbol.json",
    ]
    assert info["stages"]["default_best_stage"]["mAP"] == 0.42
    assert info["stages"]["default_best_stage"]["stage_name"] == "default_best_stage"
    assert info["package_version"] == "2.0.0"


def test_legacy_stage_timestamp_is_the_info_member_time(tmp_path: Path) -> None:
    entries = [
        Entry("ymir-info.yaml", info_yaml({**_legacy(), "package_version": "1.1.0"}), mtime=1234),
        Entry("model-1000.params", file_bytes("model-1000.params")),
        Entry("model-symbol.json", file_bytes("model-symbol.json")),
    ]

    info = normalized(lambda path: write_package(path, entries), tmp_path)

    assert info["stages"]["default_best_stage"]["timestamp"] == 1234


def _legacy() -> dict[str, Any]:
    return {
        "executor_config": {"class_names": ["person"]},
        "models": ["model-1000.params", "model-symbol.json"],
        "task_context": {"mAP": 0.42},
    }


def test_legacy_without_task_context_map_gets_map_0(tmp_path: Path) -> None:
    document = {**_legacy(), "task_context": {"producer": "x"}}
    entries = [
        Entry("ymir-info.yaml", info_yaml(document)),
        Entry("model-1000.params", b"1"),
        Entry("model-symbol.json", b"s"),
    ]

    info = normalized(lambda path: write_package(path, entries), tmp_path)

    assert info["stages"]["default_best_stage"]["mAP"] == 0


@pytest.mark.parametrize("declared", ["2.0.0", "2.0.1", "2.0.2"])
def test_known_versions_are_stored_as_2_0_0(declared: str, tmp_path: Path) -> None:
    info = {**seed_info(), "package_version": declared}

    report = validate(seed_package(tmp_path / "package.tar.gz", info))

    assert report.declared_version == declared
    assert report.normalized is not None
    assert report.normalized["package_version"] == "2.0.0"


def test_the_stored_form_has_exactly_ymir_model_storage_fields(tmp_path: Path) -> None:
    info = normalized(seed_package, tmp_path)

    assert set(info) == {
        "executor_config",
        "task_context",
        "stages",
        "best_stage_name",
        "model_hash",
        "stage_name",
        "attachments",
        "evaluate_config",
        "object_type",
        "package_version",
    }


def test_unknown_field_is_a_warning_and_dropped(tmp_path: Path) -> None:
    info = {**seed_info(), "comment": "made by hand"}

    report = validate(seed_package(tmp_path / "package.tar.gz", info))

    assert report.ok
    assert [(w.code, w.field) for w in report.warnings] == [("info.unknown_field", "comment")]
    assert report.normalized is not None
    assert "comment" not in report.normalized


def test_unlisted_file_is_a_warning_not_an_error(tmp_path: Path) -> None:
    package = seed_package_with(
        tmp_path / "package.tar.gz", seed_info(), [Entry("README.txt", b"notes")]
    )

    report = validate(package)

    assert report.ok
    assert [(w.code, w.field) for w in report.warnings] == [("package.unlisted_file", "README.txt")]
    assert "README.txt" not in [stored.name for stored in report.files]


def test_stage_folder_copy_wins_over_the_root_copy(tmp_path: Path) -> None:
    package = seed_package_with(
        tmp_path / "package.tar.gz",
        seed_info(),
        [Entry("stage_1000/model-1000.params", b"the stage's own copy")],
    )

    report = validate(package)

    sources = {stored.name: stored.source.name for stored in report.files}
    assert sources["stage_1000/model-1000.params"] == "stage_1000/model-1000.params"
    assert sources["stage_2000/model-symbol.json"] == "model-symbol.json"


def test_folders_in_the_archive_are_allowed(tmp_path: Path) -> None:
    entries = [Entry("stage_1000", kind=tarfile.DIRTYPE), *seed_entries()]

    assert validate(write_package(tmp_path / "package.tar.gz", entries)).ok


# -- several problems at once -----------------------------------------------------------------


def test_problems_from_archive_and_schema_are_all_reported(tmp_path: Path) -> None:
    info = seed_info()
    info["stages"]["stage_1000"]["mAP"] = "0.3"
    del info["stages"]["stage_2000"]["timestamp"]
    link = Entry("shortcut", kind=tarfile.SYMTYPE, linkname="/etc/passwd")

    report = validate(seed_package_with(tmp_path / "package.tar.gz", info, [link]))

    assert set(found(report)) == {
        ("tar.link_member", "shortcut"),
        ("info.wrong_type", "stages.stage_1000.mAP"),
        ("info.missing_field", "stages.stage_2000.timestamp"),
    }


def test_three_schema_problems_are_all_reported(tmp_path: Path) -> None:
    info = seed_info()
    info["executor_config"]["class_names"] = "person"
    info["object_type"] = 9
    del info["best_stage_name"]

    report = validate(seed_package(tmp_path / "package.tar.gz", info))

    assert set(found(report)) == {
        ("info.wrong_type", "executor_config.class_names"),
        ("info.invalid_value", "object_type"),
        ("info.missing_field", "best_stage_name"),
    }


def test_every_missing_file_is_reported(tmp_path: Path) -> None:
    info = {**seed_info(), "attachments": {"images": ["a.jpg"]}}
    entries = [e for e in seed_entries(info) if e.name not in {"model-1000.params"}]
    entries = [e for e in entries if e.name != "model-symbol.json"]

    report = validate(write_package(tmp_path / "package.tar.gz", entries))

    assert set(found(report)) == {
        ("package.missing_file", "stages.stage_1000.files[0]"),
        ("package.missing_file", "stages.stage_1000.files[1]"),
        ("package.missing_file", "stages.stage_2000.files[1]"),
        ("package.missing_attachment", "attachments.images[0]"),
    }


def test_meaning_and_missing_file_problems_are_all_reported(tmp_path: Path) -> None:
    info = seed_info()
    info["best_stage_name"] = "stage_3000"
    info["stages"]["stage_1000"]["stage_name"] = "stage_one"
    entries = [e for e in seed_entries(info) if e.name != "model-2000.params"]

    report = validate(write_package(tmp_path / "package.tar.gz", entries))

    assert set(found(report)) == {
        ("info.unknown_stage", "best_stage_name"),
        ("info.stage_name_mismatch", "stages.stage_1000.stage_name"),
        ("package.missing_file", "stages.stage_2000.files[0]"),
    }


def test_many_links_are_capped_but_counted(tmp_path: Path) -> None:
    links = [Entry(f"l{n}", kind=tarfile.SYMTYPE, linkname="/etc/passwd") for n in range(50)]

    report = validate(seed_package_with(tmp_path / "package.tar.gz", seed_info(), links))

    codes = [problem.code for problem in report.errors]
    assert codes.count("tar.link_member") == 21
    assert report.errors[-1].field == ""


@pytest.mark.parametrize(
    ("place", "misspelt", "suggested"),
    [((), "best_stage", "best_stage_name"), (("stages", "stage_1000"), "Map", "mAP")],
    ids=["top-level", "in-a-stage"],
)
def test_an_unknown_field_gets_a_suggestion(
    tmp_path: Path, place: tuple[str, ...], misspelt: str, suggested: str
) -> None:
    info = seed_info()
    target = info
    for key in place:
        target = target[key]
    target[misspelt] = 1

    report = validate_package(seed_package(tmp_path / "p.tar.gz", info), LIMITS)

    [warning] = [item for item in report.warnings if item.code == "info.unknown_field"]
    assert warning.field == ".".join([*place, misspelt])
    assert warning.message.endswith(f"(did you mean {suggested!r}?)")


def test_every_problem_that_can_be_judged_is_told_at_once(tmp_path: Path) -> None:
    """A float timestamp (the schema's), an unknown best stage and a missing file (the rules
    across the package): all three, not the first and the others after it is fixed."""
    info = seed_info()
    info["stages"]["stage_1000"]["timestamp"] = 1655975204.5
    info["best_stage_name"] = "stage_3000"
    info["stages"]["stage_2000"]["files"] = ["model-2000.params", "missing.params"]
    package = seed_package(tmp_path / "three.tar.gz", info)

    report = validate_package(package, LIMITS)

    assert [(problem.code, problem.field) for problem in report.errors] == [
        ("info.wrong_type", "stages.stage_1000.timestamp"),
        ("info.unknown_stage", "best_stage_name"),
        ("package.missing_file", "stages.stage_2000.files[1]"),
    ]


def test_a_huge_value_is_quoted_in_a_few_hundred_characters(tmp_path: Path) -> None:
    """A 1 MB scalar was echoed whole into the error files, the log, the ledger, every
    notification and the status page."""
    info = seed_info()
    info["stages"]["stage_1000"]["mAP"] = random.Random(1).randbytes(400_000).hex()
    info[random.Random(2).randbytes(20_000).hex()] = 1  # an unknown field, a huge name
    package = seed_package(tmp_path / "huge.tar.gz", info)

    report = validate_package(package, LIMITS)

    assert report.errors and report.warnings
    for problem in (*report.errors, *report.warnings):
        assert len(problem.message) <= 800 and len(problem.field) <= 300, problem.code
    [wrong] = [problem for problem in report.errors if problem.code == "info.wrong_type"]
    assert "characters left out" in wrong.message and "found str" in wrong.message
