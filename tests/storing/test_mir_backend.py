"""The mir backend against the real `mir` of ymir-cmd 2.3.0, in a fresh mir repository."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from daemon_harness import dropboxes, wait_until
from factory import legacy_package, seed_info, seed_package, ymir_layout_package

pytestmark = pytest.mark.mir

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "tests",
    "GIT_AUTHOR_EMAIL": "tests@localhost",
    "GIT_COMMITTER_NAME": "tests",
    "GIT_COMMITTER_EMAIL": "tests@localhost",
}


@pytest.fixture
def mir_repo(tmp_path: Path, mir_bin: Path) -> Path:
    root = (tmp_path / "mir-root").absolute()
    subprocess.run(
        [str(mir_bin), "init", "--root", str(root)],
        check=True,
        capture_output=True,
        env={**os.environ, **GIT_IDENTITY},
    )
    return root


@pytest.fixture
def mir_config(tmp_path: Path, mir_bin: Path, mir_repo: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'base_dir = "{tmp_path / "box"}"\n'
        '[import]\nbackend = "mir"\n'
        f'[import.mir]\nbin = "{mir_bin}"\nroot = "{mir_repo}"\n'
        "[watch]\nsettle_seconds = 1.0\npoll_interval = 0.2\n"
        '[log]\nformat = "json"\n'
    )
    return path


def git(repo: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *arguments], check=True, capture_output=True, text=True
    ).stdout


def dropbox(config: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ymir-dropbox", "--config", str(config), *arguments], capture_output=True, text=True
    )


def ledger_rows(config: Path) -> list[dict[str, object]]:
    listing = dropbox(config, "ledger", "--json", "--limit", "1000")
    assert listing.returncode == 0, listing.stderr
    return [json.loads(line) for line in listing.stdout.splitlines()]


def test_seed_example_is_imported_as_a_branch_and_task(
    tmp_path: Path, mir_config: Path, mir_repo: Path
) -> None:
    package = seed_package(tmp_path / "model.tar.gz")

    result = dropbox(mir_config, "import", str(package))

    assert result.returncode == 0, result.stderr
    (row,) = ledger_rows(mir_config)
    assert row["status"] == "imported" and row["backend"] == "mir"
    assert row["dst_rev"] == f"dropbox-{row['id']}@dropbox-{row['id']}"
    assert f"model hash: {row['model_hash']}" in result.stdout
    assert (tmp_path / "box" / "models" / str(row["model_hash"])).is_file()
    assert f"dropbox-{row['id']}@dropbox-{row['id']}" in git(mir_repo, "tag").split()
    assert f"dropbox-{row['id']}" in git(mir_repo, "branch", "--format=%(refname:short)").split()
    log = git(mir_repo, "log", "--format=%s", f"dropbox-{row['id']}")
    assert f"as {row['model_hash']}" in log


def test_mir_receives_our_normalized_package(
    tmp_path: Path, mir_config: Path, mir_bin: Path, mir_repo: Path
) -> None:
    """TP/FP/FN reach YMIR as tp/fp/fn (real mir would drop them from the raw package)."""
    package = seed_package(tmp_path / "model.tar.gz")
    assert dropbox(mir_config, "import", str(package)).returncode == 0
    (row,) = ledger_rows(mir_config)

    shown = subprocess.run(
        [
            str(mir_bin),
            "show",
            "--root",
            str(mir_repo),
            "--src-revs",
            str(row["dst_rev"]),
            "--verbose",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    assert str(row["model_hash"]) in shown
    assert "'tp': 60" in shown


@pytest.mark.parametrize(
    "make", [legacy_package, ymir_layout_package], ids=["legacy-1.1.0", "ymir-layout"]
)
def test_other_formats_are_imported(
    tmp_path: Path, mir_config: Path, mir_repo: Path, make: object
) -> None:
    package = make(tmp_path / "model.tar.gz")  # type: ignore[operator]

    result = dropbox(mir_config, "import", str(package))

    assert result.returncode == 0, result.stderr + result.stdout
    (row,) = ledger_rows(mir_config)
    assert row["status"] == "imported"
    assert str(row["dst_rev"]) in git(mir_repo, "tag").split()


def test_a_failed_mir_run_fails_the_package_and_the_next_import_works(
    tmp_path: Path, mir_config: Path, mir_repo: Path
) -> None:
    # A tag that a failed run left behind: mir refuses that dst-rev forever.
    git(mir_repo, "tag", "dropbox-1@dropbox-1")
    first = seed_package(tmp_path / "first.tar.gz")
    info = seed_info()
    info["executor_config"]["class_names"] = ["dog"]
    second = seed_package(tmp_path / "second.tar.gz", info)

    failed = dropbox(mir_config, "import", str(first))
    worked = dropbox(mir_config, "import", str(second))

    assert failed.returncode == 1
    assert "import.mir_failed" in failed.stderr
    assert worked.returncode == 0, worked.stderr
    rows = {row["id"]: row for row in ledger_rows(mir_config)}
    assert rows[1]["status"] == "failed"
    (error,) = rows[1]["errors"]  # type: ignore[misc]
    assert error["code"] == "import.mir_failed" and "exited with code" in error["message"]
    assert rows[2]["status"] == "imported"
    assert "dropbox-2@dropbox-2" in git(mir_repo, "tag").split()


def test_start_up_refuses_a_folder_that_is_not_a_mir_repository(
    tmp_path: Path, mir_bin: Path
) -> None:
    (tmp_path / "plain").mkdir()
    config = tmp_path / "config.toml"
    config.write_text(
        f'base_dir = "{tmp_path / "box"}"\n[import]\nbackend = "mir"\n'
        f'[import.mir]\nbin = "{mir_bin}"\nroot = "{tmp_path / "plain"}"\n'
    )

    result = dropbox(config, "run")

    assert result.returncode == 1
    assert "is not a mir repository" in result.stderr


def test_start_up_refuses_a_missing_mir(tmp_path: Path, mir_repo: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'base_dir = "{tmp_path / "box"}"\n[import]\nbackend = "mir"\n'
        f'[import.mir]\nbin = "/nonexistent/mir"\nroot = "{mir_repo}"\n'
    )

    result = dropbox(config, "run")

    assert result.returncode == 1
    assert "mir executable" in result.stderr and "not found" in result.stderr


def test_daemon_imports_each_format_into_the_repository(
    tmp_path: Path, mir_config: Path, mir_repo: Path
) -> None:
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen(
        ["ymir-dropbox", "--config", str(mir_config), "run"], stdout=log, stderr=log
    )
    try:
        inbox = tmp_path / "box" / "inbox"
        wait_until(inbox.is_dir, 30, "the inbox")
        staging = tmp_path / "staging"
        staging.mkdir()
        made = [
            seed_package(staging / "seed.tar.gz"),
            legacy_package(staging / "legacy.tar.gz"),
            ymir_layout_package(staging / "ymir.tar.gz"),
        ]
        wait_until(inbox.is_dir, 60, "the daemon made its folders")
        for package in made:
            subprocess.run(["cp", str(package), str(inbox / package.name)], check=True)
        ledger = tmp_path / "box" / "ledger.sqlite"

        def all_imported() -> bool:
            if not ledger.exists():
                return False
            try:
                with sqlite3.connect(ledger) as connection:
                    return connection.execute(
                        "SELECT count(*) FROM attempts WHERE status = 'imported' AND place = 'done'"
                    ).fetchone()[0] == len(made)
            except sqlite3.OperationalError:  # the daemon is creating the ledger's tables
                return False

        wait_until(all_imported, 120, "three imports through mir")
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=60) == 0
        log.close()

    rows = ledger_rows(mir_config)
    tags = git(mir_repo, "tag").split()
    models = {path.name for path in (tmp_path / "box" / "models").iterdir()}
    assert sorted(path.name for path in (tmp_path / "box" / "done").iterdir()) == sorted(
        package.name for package in made
    )
    for row in rows:
        assert row["dst_rev"] in tags
        assert row["model_hash"] in models
    assert len(models) == len(made)


def test_a_crash_after_mir_finished_does_not_import_twice(
    tmp_path: Path, mir_bin: Path, mir_repo: Path
) -> None:
    """Killed after `mir models` committed but before the ledger heard of it: the restart
    finds mir's tag and records the import instead of running mir again."""
    with dropboxes(tmp_path) as make:
        dropbox = make(
            sections={
                "import": {"backend": "mir", "mir": {"bin": str(mir_bin), "root": str(mir_repo)}}
            }
        )
        dropbox.start(env={"YMIR_DROPBOX_CRASH_AT": "stored", **GIT_IDENTITY})
        drop = dropbox.drop_valid("model.tar.gz")
        assert dropbox.wait_exit(timeout=120) == -signal.SIGKILL
        dropbox.start(env=GIT_IDENTITY)
        dropbox.wait_settled(timeout=120)
        dropbox.stop()

        (row,) = [row for row in dropbox.ledger_rows() if row["status"] != "interrupted"]
        assert row["status"] == "imported" and dropbox.final_status(drop) == ["imported"]
        tags = [tag for tag in git(mir_repo, "tag").split() if tag.startswith("dropbox-")]
        assert tags == [row["dst_rev"]]
        assert (dropbox.folder("models") / str(row["model_hash"])).is_file()
        dropbox.assert_invariants()
