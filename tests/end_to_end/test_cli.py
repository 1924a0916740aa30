"""The ``ymir-dropbox`` command, run for real: import, the hostile-package canary, pack."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from factory import (
    Entry,
    dropbox_command,
    run_dropbox,
    seed_entries,
    seed_info,
    seed_package,
    write_config,
    write_folder,
    write_package,
)
from forked import ForkedCommand
from hostile import CASES, Hostile, params

# A module-scoped fixture: the module's tests run in one worker (pyproject's --dist).
pytestmark = pytest.mark.xdist_group("canary")

SUCCESS = re.compile(
    r"pack success, model hash: [0-9a-f]{40}, best_stage_name: stage_2000, mAP: 0\.6"
)


def files_under(folder: Path) -> list[str]:
    """Every path under ``folder`` (files, folders, links), relative, without following links."""
    found = []
    for top, folders, files in os.walk(folder):
        for name in [*folders, *files]:
            found.append((Path(top) / name).relative_to(folder).as_posix())
    return sorted(found)


# -- import -----------------------------------------------------------------------------------


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A config file whose base_dir is tmp_path/box."""
    return write_config(tmp_path / "config.toml", "box")


def test_import_prints_the_seed_wording(box: Path, tmp_path: Path) -> None:
    package = seed_package(tmp_path / "model.tar.gz")

    done = run_dropbox("import", "--config", box, package, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert SUCCESS.fullmatch(done.stdout.strip()), done.stdout


def test_import_stores_the_model_under_the_printed_hash(box: Path, tmp_path: Path) -> None:
    package = seed_package(tmp_path / "model.tar.gz")

    done = run_dropbox("import", "--config", box, package, cwd=tmp_path)

    model_hash = re.search(r"model hash: ([0-9a-f]{40})", done.stdout)
    assert model_hash is not None
    assert os.listdir(tmp_path / "box" / "models") == [model_hash.group(1)]


def test_import_leaves_the_package_in_place(box: Path, tmp_path: Path) -> None:
    package = seed_package(tmp_path / "model.tar.gz")
    before = package.read_bytes()

    run_dropbox("import", "--config", box, package, cwd=tmp_path)

    assert package.read_bytes() == before


def test_import_twice_is_a_duplicate_with_exit_0(box: Path, tmp_path: Path) -> None:
    package = seed_package(tmp_path / "model.tar.gz")
    first = run_dropbox("import", "--config", box, package, cwd=tmp_path)

    again = run_dropbox("import", "--config", box, package, cwd=tmp_path)

    assert again.returncode == 0, again.stderr
    assert "duplicate" in again.stdout
    first_hash = re.search(r"model hash: ([0-9a-f]{40})", first.stdout)
    assert first_hash is not None and first_hash.group(1) in again.stdout


def test_import_of_the_same_bytes_under_another_name_is_a_duplicate(
    box: Path, tmp_path: Path
) -> None:
    run_dropbox("import", "--config", box, seed_package(tmp_path / "a.tar.gz"), cwd=tmp_path)

    again = run_dropbox(
        "import", "--config", box, seed_package(tmp_path / "b.tar.gz"), cwd=tmp_path
    )

    assert again.returncode == 0
    assert "duplicate" in again.stdout


def test_import_of_an_invalid_package_exits_1_and_names_the_problem(
    box: Path, tmp_path: Path
) -> None:
    package = write_package(tmp_path / "bad.tar.gz", seed_entries()[:-1])

    done = run_dropbox("import", "--config", box, package, cwd=tmp_path)

    assert done.returncode == 1
    assert done.stdout == ""
    assert "info.missing" in done.stderr


def test_import_json_prints_the_ledger_row(box: Path, tmp_path: Path) -> None:
    package = seed_package(tmp_path / "model.tar.gz")

    done = run_dropbox("import", "--json", "--config", box, package, cwd=tmp_path)

    row = json.loads(done.stdout)
    assert (row["status"], row["best_stage_name"], row["mAP"]) == ("imported", "stage_2000", 0.6)
    assert row["class_names"] == ["person", "cat"]


def test_import_of_a_missing_file_is_a_usage_error_and_records_nothing(
    box: Path, tmp_path: Path
) -> None:
    done = run_dropbox("import", "--config", box, tmp_path / "absent.tar.gz", cwd=tmp_path)

    assert done.returncode == 2
    assert "absent.tar.gz: no such file" in done.stderr and "Traceback" not in done.stderr
    listing = run_dropbox("ledger", "--json", "--config", box, cwd=tmp_path)
    assert listing.stdout == ""


# -- the canary: no hostile package writes anything outside the box ---------------------------

# Two runners (see forked): the hostile cases take their two commands each in turn.
RUNNERS = 2


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Import every hostile package, each in a folder of its own, then read its ledger.

    Each case's folder holds its package, its config and its base_dir (``box``); the command
    runs with its working folder in an empty ``cwd`` there.
    """
    roots = {case.id: tmp_path_factory.mktemp("canary") for case in CASES}

    def run_share(share: list[Hostile]) -> dict[str, Any]:
        command = ForkedCommand()
        runs: dict[str, Any] = {}
        try:
            for case in share:
                root = roots[case.id]
                (root / "cwd").mkdir()
                package = case.build(root / "package.tar.gz")
                config = write_config(root / "config.toml", "box", case.limits_toml())
                done = command.run(["import", "--config", config, package], cwd=root / "cwd")
                listing = command.run(["ledger", "--json", "--config", config], cwd=root / "cwd")
                rows = [json.loads(line) for line in listing.stdout.splitlines()]
                runs[case.id] = {"root": root, "done": done, "rows": rows}
        finally:
            command.close()
        return runs

    shares = [CASES[index::RUNNERS] for index in range(RUNNERS)]
    with ThreadPoolExecutor(RUNNERS) as pool:
        return {key: value for runs in pool.map(run_share, shares) for key, value in runs.items()}


@pytest.mark.parametrize(
    "arguments",
    [["--version"], ["validate", "--json", "seed.tar.gz"], ["ledger"], ["no-such-command"]],
    ids=["version", "validate", "ledger-from-the-environment", "usage-error"],
)
def test_a_forked_command_answers_as_the_console_script(
    arguments: list[str], tmp_path: Path
) -> None:
    """The runner's child, in its working folder with its environment, gives the console
    script's exit code, output and errors."""
    seed_package(tmp_path / "seed.tar.gz")
    write_config(tmp_path / "config.toml", "box")
    environment = {**os.environ, "YMIR_DROPBOX_CONFIG": "config.toml"}
    command = ForkedCommand()
    try:
        forked = command.run(arguments, cwd=tmp_path, env=environment)
    finally:
        command.close()
    real = subprocess.run(
        [*dropbox_command(), *arguments],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )

    assert (forked.returncode, forked.stdout, forked.stderr) == (
        real.returncode,
        real.stdout,
        real.stderr,
    )
    assert forked.stdout or forked.stderr


def test_a_forked_command_past_its_timeout_is_killed(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", "box")
    command = ForkedCommand()
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            command.run(["--config", config, "run"], cwd=tmp_path, timeout=1.0)  # never ends
        assert command.run(["--version"], cwd=tmp_path).returncode == 0  # the runner serves on
    finally:
        command.close()


@pytest.mark.parametrize("case", params(CASES))
def test_hostile_import_writes_nothing_outside_the_box(case: Hostile, canary: Any) -> None:
    result = canary[case.id]
    root: Path = result["root"]
    work = root / "box" / "work"

    outside = [
        path
        for path in files_under(root)
        if path not in {"package.tar.gz", "config.toml", "cwd", "box"}
        and not path.startswith("box/")
    ]
    assert outside == []
    assert os.listdir(root / "cwd") == []
    assert os.listdir(root / "box" / "models") == []
    assert [path for path in files_under(work) if not (work / path).is_dir()] == []


@pytest.mark.parametrize("case", params(CASES))
def test_hostile_import_exits_1_and_records_the_failure(case: Hostile, canary: Any) -> None:
    result = canary[case.id]
    done = result["done"]

    assert done.returncode == 1, done.stderr[-2000:]
    assert [row["status"] for row in result["rows"]] == ["failed"]
    assert case.code in [error["code"] for error in result["rows"][0]["errors"]]


# -- pack -------------------------------------------------------------------------------------


def seed_folder(folder: Path, info: dict[str, Any] | None = None) -> Path:
    folder.mkdir()
    return write_folder(folder, seed_entries(info))


def test_pack_builds_a_valid_package(tmp_path: Path) -> None:
    folder = seed_folder(tmp_path / "model")

    done = run_dropbox("pack", folder, "-o", tmp_path / "model.tar.gz", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    checked = run_dropbox("validate", "--json", tmp_path / "model.tar.gz", cwd=tmp_path)
    summary = json.loads(checked.stdout)
    assert (summary["ok"], summary["best_stage_name"], summary["mAP"]) == (True, "stage_2000", 0.6)


def test_pack_holds_exactly_the_folder_files(tmp_path: Path) -> None:
    folder = seed_folder(tmp_path / "model")

    run_dropbox("pack", folder, "-o", tmp_path / "model.tar.gz", cwd=tmp_path)

    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        assert sorted(tar.getnames()) == sorted(entry.name for entry in seed_entries())


def test_pack_into_the_folder_itself_packs_only_the_model_files(tmp_path: Path) -> None:
    folder = seed_folder(tmp_path / "model")

    run_dropbox("pack", folder, "-o", folder / "model.tar.gz", cwd=tmp_path)

    with tarfile.open(folder / "model.tar.gz") as tar:
        assert sorted(tar.getnames()) == sorted(entry.name for entry in seed_entries())


def test_pack_output_has_the_usual_permissions(tmp_path: Path) -> None:
    folder = seed_folder(tmp_path / "model")
    output = tmp_path / "model.tar.gz"

    subprocess.run(
        [*dropbox_command(), "pack", str(folder), "-o", str(output)],
        cwd=tmp_path,
        capture_output=True,
        umask=0o022,
        check=True,
    )

    assert stat.S_IMODE(output.stat().st_mode) == 0o644


def test_pack_refuses_an_invalid_package(tmp_path: Path) -> None:
    info = seed_info()
    info["best_stage_name"] = "stage_3000"
    folder = seed_folder(tmp_path / "model", info)

    done = run_dropbox("pack", folder, "-o", tmp_path / "model.tar.gz", cwd=tmp_path)

    assert done.returncode == 1
    assert "info.unknown_stage" in done.stdout + done.stderr
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_pack_refuses_a_folder_without_info(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    write_folder(folder, seed_entries()[:-1])

    done = run_dropbox("pack", folder, "-o", tmp_path / "model.tar.gz", cwd=tmp_path)

    assert done.returncode == 1
    assert not (tmp_path / "model.tar.gz").exists()


def test_pack_refuses_to_overwrite(tmp_path: Path) -> None:
    folder = seed_folder(tmp_path / "model")
    output = tmp_path / "model.tar.gz"
    output.write_bytes(b"precious")

    done = run_dropbox("pack", folder, "-o", output, cwd=tmp_path)

    assert done.returncode == 1
    assert output.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["model", "model.tar.gz"]


def test_pack_refuses_to_overwrite_through_a_dangling_symlink(tmp_path: Path) -> None:
    folder = seed_folder(tmp_path / "model")
    output = tmp_path / "model.tar.gz"
    output.symlink_to(tmp_path / "elsewhere.tar.gz")

    done = run_dropbox("pack", folder, "-o", output, cwd=tmp_path)

    assert done.returncode == 1
    assert not (tmp_path / "elsewhere.tar.gz").exists()


def test_pack_skips_symlinks_in_the_folder(tmp_path: Path) -> None:
    folder = seed_folder(tmp_path / "model")
    (folder / "passwd").symlink_to("/etc/passwd")

    run_dropbox("pack", folder, "-o", tmp_path / "model.tar.gz", cwd=tmp_path)

    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        assert "passwd" not in tar.getnames()


def test_pack_keeps_stage_folders(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    entries = [
        Entry(f"stage_2000/{e.name}", e.data) if e.name == "model-2000.params" else e
        for e in seed_entries()
    ]
    write_folder(folder, entries)

    run_dropbox("pack", folder, "-o", tmp_path / "model.tar.gz", cwd=tmp_path)

    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        assert "stage_2000/model-2000.params" in tar.getnames()


# -- usage ------------------------------------------------------------------------------------


def test_no_command_prints_help_and_exits_2(tmp_path: Path) -> None:
    done = run_dropbox(cwd=tmp_path)

    assert done.returncode == 2
    assert "usage" in done.stderr


def test_ledger_before_any_import_exits_1(box: Path, tmp_path: Path) -> None:
    done = run_dropbox("ledger", "--config", box, cwd=tmp_path)

    assert done.returncode == 1
    assert "no ledger" in done.stderr
