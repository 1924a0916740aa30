"""``validate DIR`` (and ``pack DIR``) judge the package built from a folder, and speak of the
folder and its files, not of an archive the user never made."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from factory import Entry, seed_entries, write_folder, write_package

from ymir_dropbox.config import DEFAULTS
from ymir_dropbox.core.settings import Limits
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.training.packing import pack_folder, validate_path

LIMITS = Limits(**DEFAULTS["limits"])


def empty(folder: Path) -> None:
    pass


def without_info(folder: Path) -> None:
    write_folder(folder, seed_entries()[:-1])


def info_in_a_sub_folder(folder: Path) -> None:
    write_folder(folder, [Entry(f"model/{entry.name}", entry.data) for entry in seed_entries()])


def without_a_stage_file(folder: Path) -> None:
    write_folder(folder, [e for e in seed_entries() if e.name != "model-2000.params"])


def with_an_unlisted_file(folder: Path) -> None:
    write_folder(folder, [*seed_entries(), Entry("notes.txt", b"notes")])


FOLDERS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "empty": (empty, "container.empty", "the folder holds no files"),
    "without-info": (without_info, "info.missing", "the folder has no ymir-info.yaml"),
    "info-in-a-sub-folder": (
        info_in_a_sub_folder,
        "info.not_at_root",
        "ymir-info.yaml must be at the root of the folder, found 'model/ymir-info.yaml'",
    ),
    "missing-stage-file": (
        without_a_stage_file,
        "package.missing_file",
        "but the folder has neither stage_2000/model-2000.params nor model-2000.params",
    ),
    "unlisted-file": (
        with_an_unlisted_file,
        "package.unlisted_file",
        "'notes.txt' is in the folder but no stage lists it",
    ),
}


def problem_of(problems: tuple[Problem, ...], code: str) -> Problem:
    [problem] = [problem for problem in problems if problem.code == code]
    return problem


@pytest.mark.parametrize(("fill", "code", "says"), FOLDERS.values(), ids=FOLDERS.keys())
def test_validate_a_folder_speaks_of_the_folder(
    tmp_path: Path, fill: Callable[[Path], None], code: str, says: str
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    fill(folder)

    report = validate_path(folder, LIMITS)

    problem = problem_of((*report.errors, *report.warnings), code)
    assert says in problem.message
    assert "archive" not in problem.message


@pytest.mark.parametrize(
    ("limit", "code", "says"),
    [
        ("max_members", "tar.too_many_members", "the folder has more than 2 files"),
        ("max_unpacked_bytes", "tar.too_large_unpacked", "the folder's files add up to more"),
    ],
    ids=["too-many-files", "too-many-bytes"],
)
def test_a_folder_over_the_limits_speaks_of_its_files(
    tmp_path: Path, limit: str, code: str, says: str
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    write_folder(folder, seed_entries())
    limits = Limits(**{**DEFAULTS["limits"], limit: 2})

    report = validate_path(folder, limits)

    assert problem_of(report.errors, code).message.startswith(says)


def test_pack_a_folder_speaks_of_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    without_a_stage_file(folder)

    report = pack_folder(folder, tmp_path / "model.tar.gz", LIMITS)

    problem = problem_of(report.errors, "package.missing_file")
    assert "but the folder has neither" in problem.message


def test_validate_a_package_file_still_speaks_of_the_archive(tmp_path: Path) -> None:
    package = write_package(tmp_path / "model.tar.gz", [])

    report = validate_path(package, LIMITS)

    assert problem_of(report.errors, "container.empty").message == "the archive holds no members"
