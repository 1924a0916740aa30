"""`ymir-dropbox check` and `ymir-dropbox projects`, against real folders and a stand-in of
YMIR's backend on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from factory import run_dropbox, write_config
from ymir_standin import YmirStandin

PASSWORD_ENV = "YMIR_DROPBOX_YMIR_PASSWORD"


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[YmirStandin]:
    projects = [("detection", 2), ("segmentation", 3)]
    with YmirStandin(tmp_path / "ymir", projects=projects) as running:
        yield running


def ymir_config(tmp_path: Path, standin: YmirStandin, extra: str = "") -> Path:
    (tmp_path / "staging").mkdir(exist_ok=True)
    section = (
        '[import]\nbackend = "ymir-api"\n[import.ymir_api]\n'
        f'url = "{standin.url}"\nuser = "{standin.user}"\nstaging = "staging"\n' + extra
    )
    return write_config(tmp_path / "config.toml", extra=section)


def checks(tmp_path: Path, config: Path, password: str) -> tuple[int, list[dict[str, object]]]:
    done = run_dropbox("--config", config, "check", "--json", cwd=tmp_path,
                       env={PASSWORD_ENV: password})  # fmt: skip
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


def the_finding(found: list[dict[str, object]], what: str) -> dict[str, object]:
    """The one finding about ``what``."""
    (finding,) = [item for item in found if item["what"] == what]
    return finding


def test_a_fresh_default_layout_checks_out(tmp_path: Path) -> None:
    done = run_dropbox("check", cwd=tmp_path)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout and "created at start" in done.stdout


def test_a_mir_backend_without_mir_fails_the_check_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    config = write_config(
        tmp_path / "config.toml",
        extra='[import]\nbackend = "mir"\n[import.mir]\nbin = "no-such-mir"\nroot = "repo"\n',
    )
    run_dropbox("--config", config, "status", cwd=tmp_path)  # creates nothing: folders first
    (tmp_path / "box" / "models").mkdir(parents=True)

    done = run_dropbox("--config", config, "check", cwd=tmp_path)

    assert done.returncode == 1
    assert "FAIL the mir backend" in done.stdout and "no-such-mir" in done.stdout


def test_the_ymir_api_set_up_checks_out(tmp_path: Path, standin: YmirStandin) -> None:
    config = ymir_config(tmp_path, standin, "project_id = 1\nprojects = { seg = 2 }\n")

    code, found = checks(tmp_path, config, standin.password)

    assert code == 0, found
    projects = [item for item in found if str(item["what"]).startswith("YMIR project")]
    assert [item["detail"] for item in projects] == [
        "'detection', object type 2",
        "'segmentation', object type 3",
    ]


def test_the_ymir_api_check_lists_ymirs_docker_images_in_words(
    tmp_path: Path, standin: YmirStandin
) -> None:
    standin.register_image("youdaoyzbx/ymir-executor:ymir2.1.0-yolov5-v7.0-cu111-tmi")
    standin.register_image("team/infer:1", types=(9,))
    standin.register_image("team/pulling:1", state=1, types=())
    standin.register_image("team/broken:1", state=4, types=(1, 2))
    config = ymir_config(tmp_path, standin, "project_id = 1\n")

    done = run_dropbox("--config", config, "check", cwd=tmp_path,
                       env={PASSWORD_ENV: standin.password})  # fmt: skip

    assert done.returncode == 0, done.stdout
    images = [line for line in done.stdout.splitlines() if line.startswith("ok   image ")]
    assert images == [  # newest first, as YMIR lists them
        "ok   image team/broken:1: error (its pull failed); training, mining",
        "ok   image team/pulling:1: pending (being pulled); serves no task",
        "ok   image team/infer:1: ready; inference",
        "ok   image youdaoyzbx/ymir-executor:ymir2.1.0-yolov5-v7.0-cu111-tmi: ready; "
        "training, mining, inference",
    ]


@pytest.mark.parametrize(
    ("require", "ok"), [(False, True), (True, False)], ids=["warnings", "required"]
)
def test_a_ymir_without_docker_images_fails_the_check_only_when_executors_are_required(
    tmp_path: Path, standin: YmirStandin, require: bool, ok: bool
) -> None:
    extra = f"project_id = 1\nrequire_registered_executor = {str(require).lower()}\n"
    config = ymir_config(tmp_path, standin, extra)

    code, found = checks(tmp_path, config, standin.password)

    images = the_finding(found, "YMIR's docker images")
    assert (code == 0, images["ok"]) == (ok, ok)
    assert str(images["detail"]).startswith("none registered")


@pytest.mark.parametrize(
    ("password", "extra", "failing"),
    [
        ("wrong", "project_id = 1\n", "log in to YMIR"),
        (None, "project_id = 42\n", "YMIR project 42"),
        (None, "projects = { team = 7 }\n", "YMIR project 7 (import.ymir_api.projects.team)"),
        (None, "", "a YMIR project to import into"),
    ],
    ids=["wrong-password", "missing-project", "missing-routed-project", "no-project"],
)
def test_a_ymir_api_set_up_that_cannot_work_fails_the_check_and_names_the_problem(
    tmp_path: Path, standin: YmirStandin, password: str | None, extra: str, failing: str
) -> None:
    config = ymir_config(tmp_path, standin, extra)

    code, found = checks(tmp_path, config, password or standin.password)

    assert code == 1
    assert str(next(item["what"] for item in found if not item["ok"])).startswith(failing)


def test_projects_lists_what_the_user_can_import_into(tmp_path: Path, standin: YmirStandin) -> None:
    config = ymir_config(tmp_path, standin, "project_id = 1\n")

    done = run_dropbox("--config", config, "projects", "--json", cwd=tmp_path,
                       env={PASSWORD_ENV: standin.password})  # fmt: skip

    assert done.returncode == 0, done.stderr
    listed = [json.loads(line) for line in done.stdout.splitlines()]
    assert {(item["id"], item["name"], item["object_type"]) for item in listed} == {
        (1, "detection", 2),
        (2, "segmentation", 3),
    }


@pytest.mark.parametrize(("mode", "ok"), [(0o600, True), (0o644, False)], ids=["600", "644"])
def test_a_password_file_others_can_read_fails_the_check(
    tmp_path: Path, standin: YmirStandin, mode: int, ok: bool
) -> None:
    secret = tmp_path / "ymir-password"
    secret.write_text(standin.password + "\n")
    secret.chmod(mode)
    config = ymir_config(tmp_path, standin, 'project_id = 1\npassword_file = "ymir-password"\n')

    done = run_dropbox("--config", config, "check", "--json", cwd=tmp_path)
    found = [json.loads(line) for line in done.stdout.splitlines()]

    finding = the_finding(found, "import.ymir_api.password_file")
    assert finding["ok"] is ok, finding
    assert (done.returncode == 0) is ok
    if not ok:
        assert "chmod 600" in str(finding["detail"])
    assert any(item["what"].startswith("log in") and item["ok"] for item in found)


@pytest.mark.parametrize(("group", "ok"), [("daemon", True), ("no-such-group", False)])
def test_a_routed_folders_group_must_exist(
    tmp_path: Path, standin: YmirStandin, group: str, ok: bool
) -> None:
    routes = f'project_id = 1\nprojects = {{ team-a = {{ project = 2, group = "{group}" }} }}\n'
    config = ymir_config(tmp_path, standin, routes)

    code, found = checks(tmp_path, config, standin.password)

    finding = the_finding(found, "import.ymir_api.projects.team-a.group")
    assert finding["ok"] is ok and (code == 0) is ok, found
    expected = "members of 'daemon' (gid 1) only" if ok else "no group 'no-such-group'"
    assert expected in str(finding["detail"])
    assert any(item["what"] == "YMIR project 2 (import.ymir_api.projects.team-a)" for item in found)
