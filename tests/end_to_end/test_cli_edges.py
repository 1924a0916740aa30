"""Rough edges of the command a first-time user met: checking a folder before ``pack``, names
the daemon would never take, help for everything, usage mistakes, retrying the same bytes."""

from __future__ import annotations

import argparse
import json
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import Dropbox, Dropboxes, dropboxes, invalid_package
from factory import (
    Entry,
    info_yaml,
    run_dropbox,
    seed_entries,
    seed_info,
    seed_package,
    write_config,
    write_folder,
    write_package,
)

from ymir_dropbox.cli import build_parser
from ymir_dropbox.storing.ledger import MIN_PREFIX


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes() if path.is_file() else b""
        for path in sorted(folder.rglob("*"))
    }


def seed_folder(folder: Path, info: dict[str, Any] | None = None) -> Path:
    folder.mkdir()
    return write_folder(folder, seed_entries(info))


def summary_of(*arguments: str | Path, cwd: Path) -> dict[str, Any]:
    done = run_dropbox("validate", "--json", *arguments, cwd=cwd)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture
def box(tmp_path: Path) -> Path:
    """A config file whose base_dir is tmp_path/box."""
    return write_config(tmp_path / "config.toml", "box")


# -- validate DIR -----------------------------------------------------------------------------


def test_validate_a_folder_says_ok_like_for_its_package(tmp_path: Path) -> None:
    folder = seed_folder(tmp_path / "model")

    done = run_dropbox("validate", folder, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"{folder}: ok, best_stage_name: stage_2000, mAP: 0.6, stages: stage_1000, stage_2000\n"
    )


def test_validate_a_folder_gives_the_report_of_the_package_pack_builds(tmp_path: Path) -> None:
    folder = seed_folder(tmp_path / "model")
    run_dropbox("pack", folder, "-o", tmp_path / "model.tar.gz", cwd=tmp_path)

    of_folder = summary_of(folder, cwd=tmp_path)
    of_package = summary_of(tmp_path / "model.tar.gz", cwd=tmp_path)

    assert of_folder.pop("package") == str(folder)
    of_package.pop("package")
    assert of_folder == of_package


def test_validate_a_folder_writes_nothing_in_it(tmp_path: Path) -> None:
    folder = seed_folder(tmp_path / "model")
    before = files_under(folder)

    run_dropbox("validate", folder, cwd=tmp_path)

    assert files_under(folder) == before
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_validate_an_invalid_folder_exits_1_and_names_the_problem(tmp_path: Path) -> None:
    info = seed_info()
    info["best_stage_name"] = "stage_3000"
    folder = seed_folder(tmp_path / "model", info)

    done = run_dropbox("validate", folder, cwd=tmp_path)

    assert done.returncode == 1
    assert done.stdout.startswith(f"{folder}: invalid\n")
    assert "info.unknown_stage [best_stage_name]" in done.stdout


def test_validate_a_folder_missing_a_stage_file_names_it(tmp_path: Path) -> None:
    folder = seed_folder(tmp_path / "model")
    (folder / "model-1000.params").unlink()

    summary = summary_of(folder, cwd=tmp_path)

    assert summary["ok"] is False
    assert "package.missing_file" in [error["code"] for error in summary["errors"]]


def test_validate_a_folder_without_info(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    write_folder(folder, seed_entries()[:-1])

    summary = summary_of(folder, cwd=tmp_path)

    assert [error["code"] for error in summary["errors"]] == ["info.missing"]


def test_validate_folders_and_packages_together(tmp_path: Path) -> None:
    folder = seed_folder(tmp_path / "model")
    package = seed_package(tmp_path / "other.tar.gz")

    done = run_dropbox("validate", "--json", folder, package, cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(line["package"], line["ok"]) for line in lines] == [
        (str(folder), True),
        (str(package), True),
    ]


# -- YAML syntax errors, as the CLI shows them --------------------------------------------------


def test_validate_shows_a_yaml_syntax_error_with_its_line_and_column(tmp_path: Path) -> None:
    document = info_yaml(seed_info()).replace(b"stages:\n", b"stages: x: y\n", 1)
    entries = [*seed_entries()[:-1], Entry("ymir-info.yaml", document)]
    line = document.split(b"\n").index(b"stages: x: y") + 1
    package = write_package(tmp_path / "model.tar.gz", entries)

    done = run_dropbox("validate", package, cwd=tmp_path)

    assert done.returncode == 1
    assert done.stdout.splitlines()[1] == (
        f"  error: info.invalid_yaml [ymir-info.yaml]: ymir-info.yaml line {line}, column 10: "
        "a mapping value is not allowed here (is a ':' missing a space after it, a value "
        "holding ': ' not quoted, or this line indented wrong?)"
    )
    assert len(done.stdout.splitlines()) == 2


# -- pack -o ----------------------------------------------------------------------------------

REFUSED_NAMES = {
    "zip": ("model.zip", "model.tar.gz"),
    "tar-without-gzip": ("model.tar", "model.tar.gz"),
    "hidden": (".model.tar.gz", "model.tar.gz"),
    "part": ("model.tar.gz.part", "model.tar.gz"),
    "tmp": ("model.tgz.tmp", "model.tgz"),
    "backup": ("model.tar.gz~", "model.tar.gz"),
}


@pytest.mark.parametrize(("name", "suggested"), REFUSED_NAMES.values(), ids=REFUSED_NAMES.keys())
def test_pack_refuses_a_name_the_daemon_would_not_take(
    tmp_path: Path, name: str, suggested: str
) -> None:
    folder = seed_folder(tmp_path / "model")

    done = run_dropbox("pack", folder, "-o", tmp_path / name, cwd=tmp_path)

    assert done.returncode == 1
    assert f"name it {suggested}" in done.stderr
    assert "*.tar.gz" in done.stderr or "watch.ignore" in done.stderr
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_pack_takes_the_names_the_config_watches_for(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "config.toml", "box", '[watch]\npatterns = ["*.ymir"]\nignore = []'
    )
    folder = seed_folder(tmp_path / "model")

    refused = run_dropbox("pack", "--config", config, folder, "-o", "a.tar.gz", cwd=tmp_path)
    done = run_dropbox("pack", "--config", config, folder, "-o", "a.ymir", cwd=tmp_path)

    assert refused.returncode == 1
    assert "*.ymir" in refused.stderr
    assert done.returncode == 0, done.stderr
    with tarfile.open(tmp_path / "a.ymir") as tar:
        assert "ymir-info.yaml" in tar.getnames()


def test_pack_refuses_a_hidden_folder_inside_the_inbox(box: Path, tmp_path: Path) -> None:
    folder = seed_folder(tmp_path / "model")
    staging = tmp_path / "box" / "inbox" / ".staging"
    staging.mkdir(parents=True)

    done = run_dropbox(
        "pack", "--config", box, folder, "-o", staging / "model.tar.gz", cwd=tmp_path
    )

    assert done.returncode == 1
    assert ".staging/model.tar.gz" in done.stderr
    assert os.listdir(staging) == []


def test_pack_into_the_inbox_writes_a_name_the_daemon_takes(box: Path, tmp_path: Path) -> None:
    folder = seed_folder(tmp_path / "model")
    inbox = tmp_path / "box" / "inbox"
    inbox.mkdir(parents=True)

    done = run_dropbox("pack", "--config", box, folder, "-o", inbox / "model.tar.gz", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert os.listdir(inbox) == ["model.tar.gz"]


def test_pack_of_a_folder_that_does_not_exist_says_so(tmp_path: Path) -> None:
    done = run_dropbox("pack", tmp_path / "nowhere", "-o", tmp_path / "x.tar.gz", cwd=tmp_path)

    assert done.returncode == 2
    assert f"usage error: {tmp_path / 'nowhere'}: no such folder" in done.stderr
    assert "ymir-info.yaml" not in done.stderr


def test_pack_into_a_missing_folder_names_it(tmp_path: Path) -> None:
    folder = seed_folder(tmp_path / "model")
    output = tmp_path / "no-such-folder" / "model.tar.gz"

    done = run_dropbox("pack", folder, "-o", output, cwd=tmp_path)

    assert done.returncode == 1
    assert done.stderr == (
        f"ymir-dropbox: cannot write {output}: the folder {output.parent} does not exist\n"
    )
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_pack_into_a_file_as_folder_says_so(tmp_path: Path) -> None:
    folder = seed_folder(tmp_path / "model")
    (tmp_path / "plain").write_text("not a folder")

    done = run_dropbox("pack", folder, "-o", tmp_path / "plain" / "model.tar.gz", cwd=tmp_path)

    assert done.returncode == 1
    assert f"the folder {tmp_path / 'plain'} is not a folder" in done.stderr


# -- help -------------------------------------------------------------------------------------


def every_action() -> Iterator[tuple[str, argparse.Action]]:
    parser = build_parser()
    yield from (("ymir-dropbox", action) for action in parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((name, inner) for inner in sub._actions)


def test_every_argument_and_option_has_help() -> None:
    missing = [
        f"{command} {action.dest}"
        for command, action in every_action()
        if not action.help or action.help == argparse.SUPPRESS
    ]

    assert missing == []


def test_ledger_help_shows_show(tmp_path: Path) -> None:
    done = run_dropbox("ledger", "--help", cwd=tmp_path)

    assert done.returncode == 0
    assert done.stdout.startswith("usage: ymir-dropbox ledger ")
    assert "[show] [KEY]" in done.stdout
    assert re.search(r"^  show +\S", done.stdout, re.MULTILINE)


# -- usage mistakes ---------------------------------------------------------------------------


@pytest.fixture
def ledger_box(box: Path, tmp_path: Path) -> Path:
    """``box`` with a ledger holding one import."""
    done = run_dropbox("import", "--config", box, seed_package(tmp_path / "m.tar.gz"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return box


USAGE_MISTAKES = {
    "retry-without-ids": (("retry",), "retry needs attempt IDs or --all-failed"),
    "ledger-show-without-key": (("ledger", "show"), "ledger show needs a KEY"),
    "ledger-limit-0": (("ledger", "--limit", "0"), "argument --limit: must be 1 or more"),
}


@pytest.mark.parametrize(
    ("arguments", "message"), USAGE_MISTAKES.values(), ids=USAGE_MISTAKES.keys()
)
def test_a_usage_mistake_exits_2_as_a_usage_error(
    ledger_box: Path, tmp_path: Path, arguments: tuple[str, ...], message: str
) -> None:
    done = run_dropbox(*arguments, "--config", ledger_box, cwd=tmp_path)

    assert done.returncode == 2
    assert done.stderr.startswith(f"usage: ymir-dropbox {arguments[0]} ")
    assert f"ymir-dropbox {arguments[0]}: usage error: {message}" in done.stderr
    assert "configuration" not in done.stderr


def test_argparse_mistakes_read_usage_error_too(tmp_path: Path) -> None:
    done = run_dropbox("ledger", "--status", "nonsense", cwd=tmp_path)

    assert done.returncode == 2
    assert "ymir-dropbox ledger: usage error: argument --status" in done.stderr


def test_a_bad_config_is_still_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[watch]\nmode = 'sometimes'\n")

    done = run_dropbox("status", "--config", config, cwd=tmp_path)

    assert done.returncode == 2
    assert "configuration error" in done.stderr


def test_ledger_show_of_a_short_prefix_says_how_long_it_must_be(
    ledger_box: Path, tmp_path: Path
) -> None:
    done = run_dropbox("ledger", "show", "ab", "--config", ledger_box, cwd=tmp_path)

    assert done.returncode == 2  # the command line's mistake, not a failure
    assert done.stderr.endswith(
        f"ymir-dropbox ledger: usage error: a sha256 or model hash prefix needs at least "
        f"{MIN_PREFIX} characters; 'ab' has 2\n"
    )


def test_ledger_show_finds_by_a_prefix_of_the_minimum_length(
    ledger_box: Path, tmp_path: Path
) -> None:
    row = json.loads(run_dropbox("ledger", "--json", "--config", ledger_box, cwd=tmp_path).stdout)

    done = run_dropbox(
        "ledger", "show", row["sha256"][:MIN_PREFIX], "--json", "--config", ledger_box, cwd=tmp_path
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["id"] == row["id"]


def test_ledger_show_of_a_short_unknown_id_mentions_the_prefix_length(
    ledger_box: Path, tmp_path: Path
) -> None:
    done = run_dropbox("ledger", "show", "99", "--config", ledger_box, cwd=tmp_path)

    assert done.returncode == 1
    assert f"prefix needs at least {MIN_PREFIX} characters" in done.stderr


# -- retry of bytes that already failed -------------------------------------------------------


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Dropboxes]:
    with dropboxes(tmp_path) as made:
        yield made


def failed_once(make: Dropboxes, *names: str) -> Dropbox:
    """A layout whose daemon failed each package of ``names``, then stopped."""
    dropbox = make()
    dropbox.start()
    for name in names:
        dropbox.drop_invalid(name)
    dropbox.wait_settled()
    assert dropbox.stop() == 0
    assert dropbox.names("failed") == set(names)
    return dropbox


def failed_ids(dropbox: Dropbox) -> dict[str, int]:
    return {
        Path(row["final_path"]).name: row["id"]
        for row in dropbox.ledger_rows()
        if row["place"] == "failed"
    }


def test_retry_leaves_a_package_unchanged_since_it_failed(make: Dropboxes) -> None:
    dropbox = failed_once(make, "bad.tar.gz")
    attempt = failed_ids(dropbox)["bad.tar.gz"]

    done = dropbox.cli("retry", str(attempt))

    assert done.returncode == 1
    assert f"attempt {attempt}: " in done.stderr
    assert "has not changed since it failed (info.missing)" in done.stderr
    assert "--force" in done.stderr
    assert dropbox.names("failed") == {"bad.tar.gz"}
    assert dropbox.names("inbox") == set()


def test_retry_force_moves_it_back_all_the_same(make: Dropboxes) -> None:
    dropbox = failed_once(make, "bad.tar.gz")
    attempt = failed_ids(dropbox)["bad.tar.gz"]

    done = dropbox.cli("retry", "--force", str(attempt))

    assert done.returncode == 0, done.stderr
    assert dropbox.names("inbox") == {"bad.tar.gz"}
    assert dropbox.names("failed") == set()


def test_retry_force_gives_back_the_uploaded_name_when_it_is_free(make: Dropboxes) -> None:
    """Filed as bad.1.tar.gz (failed/ had a bad.tar.gz), it goes back as bad.tar.gz."""
    dropbox = make()
    dropbox.start()
    dropbox.drop_invalid("bad.tar.gz", "first")
    dropbox.wait_settled()
    dropbox.drop_invalid("bad.tar.gz", "second")
    dropbox.wait_settled()
    assert dropbox.stop() == 0
    attempt = failed_ids(dropbox)["bad.1.tar.gz"]

    done = dropbox.cli("retry", "--force", str(attempt))

    assert done.returncode == 0, done.stderr
    assert dropbox.names("inbox") == {"bad.tar.gz"}


def test_retry_moves_a_package_fixed_in_failed(make: Dropboxes) -> None:
    dropbox = failed_once(make, "bad.tar.gz")
    attempt = failed_ids(dropbox)["bad.tar.gz"]
    (dropbox.folder("failed") / "bad.tar.gz").write_bytes(invalid_package("fixed, or not"))

    done = dropbox.cli("retry", str(attempt))

    assert done.returncode == 0, done.stderr
    assert dropbox.names("inbox") == {"bad.tar.gz"}


def test_retry_all_failed_moves_the_changed_and_leaves_the_unchanged(make: Dropboxes) -> None:
    dropbox = failed_once(make, "same.tar.gz", "changed.tar.gz")
    ids = failed_ids(dropbox)
    (dropbox.folder("failed") / "changed.tar.gz").write_bytes(invalid_package("new bytes"))

    done = dropbox.cli("retry", "--all-failed")

    assert done.returncode == 0, done.stderr
    assert f"attempt {ids['same.tar.gz']}: " in done.stderr
    assert f"attempt {ids['changed.tar.gz']}: " in done.stdout
    assert dropbox.names("inbox") == {"changed.tar.gz"}
    assert dropbox.names("failed") == {"same.tar.gz"}


def test_retry_all_failed_with_nothing_changed_exits_1(make: Dropboxes) -> None:
    dropbox = failed_once(make, "same.tar.gz")

    done = dropbox.cli("retry", "--all-failed")

    assert done.returncode == 1
    assert "has not changed since it failed" in done.stderr
    assert dropbox.names("failed") == {"same.tar.gz"}
