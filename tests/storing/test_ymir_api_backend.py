"""The ymir-api backend end to end: a real daemon, the stand-in of YMIR 2.3.0's web backend.

What is asserted is what a YMIR user would see (the models, groups and stages of a project, read
through the API or the stand-in's database) and what the ledger says about it. Imports run the
real ``mir models`` of ymir-cmd 2.3.0 (tests marked ``mir``). The tests are grouped in classes,
by what they show; the workers take them one by one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pwd
import threading
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import (
    CRASH_ENV,
    FINISHED,
    Drop,
    Dropbox,
    Dropboxes,
    dropboxes,
    invalid_package,
    valid_package,
    wait_until,
)
from factory import gzip_bytes, legacy_package, seed_entries, seed_info, tar_bytes
from hostile import BY_ID
from ymir_standin import Crash, Refusal, Row, StandinProcess, YmirStandin

from ymir_dropbox.pushing.push_command import verdict_lines
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.storing.backends.ymir_client import ModelState, ResultState, YmirClient
from ymir_dropbox.storing.documents import outcome_document, verdict_document
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.lifecycle import Status

SHARING = "/ymir-sharing"  # the folder YMIR's backend container sees
STAGING_IN_YMIR = f"{SHARING}/ymir-dropbox"
USER = "admin@example.com"
PASSWORD = "standin-password"
PASSWORD_ENV = "YMIR_DROPBOX_YMIR_PASSWORD"
DETECTION, SEGMENTATION = 2, 3
TIMEOUT = 30.0
HOSTILE = ("traversal-dotdot", "symlink-absolute", "info-alias-bomb", "mAP-over-1")


# -- YMIR: the stand-in, and what its user sees ---------------------------------------------------


class HeldStandin(YmirStandin):
    """A stand-in whose imports wait while ``imports`` is clear, and whose POSTs wait while
    ``posts`` is clear (``post_arrived`` tells one came in): the daemon can be killed at a
    chosen step of YMIR's import. ``lose_posts``: a held POST is then dropped unprocessed;
    ``refuse_posts``: every POST is refused with that YMIR code."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.imports = threading.Event()
        self.posts = threading.Event()
        self.imports.set()
        self.posts.set()
        self.post_arrived = threading.Event()
        self.post_handled = threading.Event()
        self.lose_posts = False
        self.refuse_posts: int | None = None

    def import_model(self, *, query: dict[str, str], body: bytes) -> Row:
        self.post_arrived.set()
        try:
            self.posts.wait()
            if self.lose_posts:
                raise Crash("the request never reached YMIR's app", 502)
            if self.refuse_posts is not None:
                raise Refusal(self.refuse_posts, "General API Error")
            return super().import_model(query=query, body=body)
        finally:
            self.post_handled.set()

    def _run_import(self, task_id: int) -> None:
        self.imports.wait()
        super()._run_import(task_id)

    def stop(self) -> None:
        self.imports.set()
        self.posts.set()
        super().stop()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        """An answer to a daemon killed meanwhile goes nowhere, without a traceback."""
        handler: Any = super()._handler_class()

        class Quiet(handler):  # type: ignore[misc]
            def answer(self, answer: Any, headers: Any = None) -> None:
                with suppress(BrokenPipeError, ConnectionResetError):
                    super().answer(answer, headers)

        return Quiet


@pytest.fixture
def sharing(tmp_path: Path) -> Path:
    """The host folder mounted at /ymir-sharing in YMIR's backend container."""
    folder = tmp_path / "ymir-sharing"
    folder.mkdir()
    return folder


@pytest.fixture
def staging(sharing: Path) -> Path:
    """Where the daemon writes the normalized package for YMIR: /ymir-sharing/ymir-dropbox."""
    folder = sharing / "ymir-dropbox"
    folder.mkdir()
    return folder


@pytest.fixture
def make_ymir(tmp_path: Path, sharing: Path) -> Iterator[Callable[..., YmirStandin]]:
    started: list[YmirStandin] = []

    def make(
        kind: type[YmirStandin] = YmirStandin,
        projects: tuple[tuple[str, int], ...] = (("detection", DETECTION),),
        mir: Path | None = None,
    ) -> YmirStandin:
        standin = kind(
            tmp_path / "ymir", mounts={SHARING: sharing}, projects=projects,
            import_delay=0.2, mir=mir,
        )  # fmt: skip
        started.append(standin.start())
        return standin

    yield make
    for standin in started:
        standin.stop()


@pytest.fixture
def boxes(tmp_path: Path) -> Iterator[Dropboxes]:
    with dropboxes(tmp_path) as made:
        yield made


def ymir_rows(workplace: Path, table: str, project_id: int | None = None) -> list[Row]:
    """A table of YMIR's database (the stand-in's state.json, written after every change)."""
    state = json.loads((workplace / "state.json").read_text())
    return [
        row
        for row in state.get(table, [])
        if not row.get("is_deleted") and project_id in (None, row["project_id"])
    ]


def client_of(url: str) -> YmirClient:
    return YmirClient(url, USER, PASSWORD, timeout=5)


def ymir_model(url: str, model_id: int) -> ModelState:
    """The model as the web UI shows it."""
    return client_of(url).model(model_id)


def staged(staging: Path) -> list[str]:
    return sorted(path.name for path in staging.iterdir())


# -- the daemon -----------------------------------------------------------------------------------


def make_box(
    boxes: Dropboxes,
    url: str,
    staging: Path,
    *,
    project_id: int = 1,
    projects: dict[str, Any] | None = None,
    **settings: Any,
) -> Dropbox:
    api = {
        "url": url,
        "user": USER,
        "project_id": project_id,
        "staging": str(staging),
        "staging_in_ymir": STAGING_IN_YMIR,
        "poll_interval": 0.2,
        "projects": projects or {},
        **settings,
    }
    return boxes(
        settle_seconds=0.3,
        poll_interval=0.1,
        rescan_interval=1.0,
        retry_max_seconds=1.0,
        sections={"import": {"backend": "ymir-api", "ymir_api": api}},
    )


def start(box: Dropbox, **env: str) -> None:
    box.start(env={PASSWORD_ENV: PASSWORD, **env})


def final_row(box: Dropbox, drop: Drop) -> dict[str, Any]:
    """The one finished attempt of a package."""
    rows = [row for row in box.rows_for(drop) if row["status"] in FINISHED]
    assert len(rows) == 1, f"{drop.relative}: {rows}"
    return rows[0]


def codes(row: dict[str, Any]) -> list[str]:
    return [problem["code"] for problem in row.get("errors") or []]


def ledger_stages(row: dict[str, Any]) -> dict[str, tuple[int, int, int]]:
    return {stage["name"]: (stage["tp"], stage["fp"], stage["fn"]) for stage in row["ymir_stages"]}


def seed_bytes(info: dict[str, Any] | None = None) -> bytes:
    """The seed's example as it ships (no package_version, upper-case TP/FP/FN)."""
    return gzip_bytes(tar_bytes(seed_entries(info)))


def with_executor(executor: str | None) -> bytes:
    """The seed's example naming this executor image (None: naming none)."""
    info = seed_info()
    if executor is None:
        del info["task_context"]["executor"]
    else:
        info["task_context"]["executor"] = executor
    return seed_bytes(info)


def ymir_warnings(row: dict[str, Any]) -> list[dict[str, str]]:
    """The warnings about the package in YMIR (validation's own left out)."""
    return [problem for problem in row.get("warnings") or [] if problem["code"].startswith("ymir.")]


def held_ymir(
    boxes: Dropboxes,
    make_ymir: Callable[..., YmirStandin],
    staging: Path,
    mir_bin: Path,
    *,
    posts: bool = False,
    imports: bool = False,
) -> tuple[HeldStandin, Dropbox, Drop]:
    """A stand-in that holds its POSTs and (or) its imports, a daemon on it, and a package
    dropped."""
    ymir = make_ymir(HeldStandin, mir=mir_bin)
    assert isinstance(ymir, HeldStandin)
    if posts:
        ymir.posts.clear()
    if imports:
        ymir.imports.clear()
    box = make_box(boxes, ymir.url, staging)
    start(box)
    return ymir, box, box.drop_valid("model.tar.gz")


def killed_while_ymir_imports(
    boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
) -> tuple[HeldStandin, Dropbox, Drop, dict[str, Any]]:
    """A package whose import YMIR holds (it takes its time), and the daemon killed once
    YMIR's model id is recorded: YMIR, the layout, the package and the killed attempt."""
    ymir, box, drop = held_ymir(boxes, make_ymir, staging, mir_bin, imports=True)
    killed = wait_until(
        lambda: in_flight_with(box, "ymir_model_id"), TIMEOUT, "YMIR's model id is recorded"
    )
    box.kill()
    return ymir, box, drop, killed


def in_flight_with(box: Dropbox, column: str) -> dict[str, Any] | None:
    """The attempt still importing that has ``column`` recorded, if any."""
    return next(
        (row for row in box.ledger_rows() if row["status"] == "importing" and row[column]),
        None,
    )


class TestWhatAPackageBecomes:
    """The package as a model in YMIR: its group, name, stages and hash."""

    @pytest.mark.mir
    def test_the_seeds_example_is_a_model_in_the_project_with_tp_60(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
    ) -> None:
        ymir = make_ymir(mir=mir_bin)
        box = make_box(boxes, ymir.url, staging)
        start(box)

        drop = box.drop("seed.tar.gz", seed_bytes())
        box.wait_settled()

        row = final_row(box, drop)
        assert row["status"] == "imported", row["errors"]
        assert box.names("done") == {"seed.tar.gz"}
        assert (row["ymir_project_id"], row["ymir_group_name"], row["ymir_model_name"]) == (
            1,
            "seed",
            "seed_1",
        )
        model = ymir_model(ymir.url, row["ymir_model_id"])
        assert model.result_state is ResultState.READY
        stages = {stage.name: (stage.tp, stage.fp, stage.fn) for stage in model.stages}
        assert stages == {"stage_1000": (60, 30, 30), "stage_2000": (0, 0, 0)}
        assert (model.map, model.recommended_stage, model.keywords) == (
            0.6,
            "stage_2000",
            ("person", "cat"),
        )
        assert ledger_stages(row) == stages
        # the ledger's model hash is the model YMIR stored
        assert model.hash is not None and row["model_hash"] == model.hash
        stored = (ymir.models_path / model.hash).read_bytes()
        assert hashlib.sha1(stored).hexdigest() == model.hash
        (shown,) = ymir_rows(ymir.workplace, "models", project_id=1)
        assert shown["id"] == row["ymir_model_id"]
        assert row["sha256"][:12] in shown["description"]
        assert staged(staging) == []  # removed once YMIR had it

    @pytest.mark.mir
    def test_a_legacy_package_is_a_model_with_its_one_stage(
        self,
        boxes: Dropboxes,
        make_ymir: Callable[..., YmirStandin],
        staging: Path,
        mir_bin: Path,
        tmp_path: Path,
    ) -> None:
        ymir = make_ymir(mir=mir_bin)
        box = make_box(boxes, ymir.url, staging)
        start(box)

        drop = box.drop(
            "resnet-1.1.0.tar.gz", legacy_package(tmp_path / "legacy.tar.gz").read_bytes()
        )
        box.wait_settled()

        row = final_row(box, drop)
        assert row["status"] == "imported", row["errors"]
        assert (row["ymir_group_name"], row["ymir_model_name"]) == (
            "resnet-1.1.0",
            "resnet-1.1.0_1",
        )
        model = ymir_model(ymir.url, row["ymir_model_id"])
        assert model.result_state is ResultState.READY
        (stage,) = model.stages
        assert (stage.name, stage.map, model.keywords) == ("default_best_stage", 0.42, ("person",))
        # the package we migrated and sent, stamped with its own date, not mir's migration's
        assert stage.timestamp == 1655975300
        assert row["model_hash"] == model.hash
        assert staged(staging) == []

    @pytest.mark.mir
    def test_a_group_name_taken_in_ymir_gets_the_suffix_2(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
    ) -> None:
        ymir = make_ymir(mir=mir_bin)
        # someone imported under that name already (YMIR compares names case-insensitively)
        taken = client_of(ymir.url).import_model(1, "SEED", "by hand", f"{SHARING}/hand.tar.gz")
        box = make_box(boxes, ymir.url, staging)
        start(box)

        drop = box.drop("seed.tar.gz", seed_bytes())
        box.wait_settled()

        row = final_row(box, drop)
        assert row["status"] == "imported", row["errors"]
        assert (row["ymir_group_name"], row["ymir_model_name"]) == ("seed-2", "seed-2_1")
        model = ymir_model(ymir.url, row["ymir_model_id"])
        assert (model.result_state, model.group_name) == (ResultState.READY, "seed-2")
        groups = {group["name"] for group in ymir_rows(ymir.workplace, "groups", 1)}
        assert groups == {"SEED", "seed-2"}
        models = ymir_rows(ymir.workplace, "models", 1)
        assert sorted(model["id"] for model in models) == [taken.model_id, row["ymir_model_id"]]

    @pytest.mark.mir
    def test_a_name_that_is_not_utf8_gives_plain_text_to_ymir(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
    ) -> None:
        """YMIR keeps names and descriptions as UTF-8 text: a stray byte must not reach it."""
        ymir = make_ymir(mir=mir_bin)
        box = make_box(boxes, ymir.url, staging)
        start(box)

        drop = box.drop(os.fsdecode(b"mod\xe8le-\xff.tar.gz"), valid_package("latin-1"))
        box.wait_settled()

        row = final_row(box, drop)
        assert row["status"] == "imported", row["errors"]
        (group,) = ymir_rows(ymir.workplace, "groups", 1)
        (model,) = ymir_rows(ymir.workplace, "models", 1)
        for text in (group["name"], model["description"]):
            text.encode("utf-8")  # no lone surrogate: YMIR's database would refuse it
        assert group["name"] == row["ymir_group_name"] == "mod-le"
        assert model["description"].startswith("ymir-dropbox: mod?le-?.tar.gz sha256 ")


class TestWhichProject:
    """The project: by the top-level inbox folder, checked for the object type."""

    @pytest.mark.mir
    def test_packages_go_to_the_project_of_their_top_level_folder(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
    ) -> None:
        projects = (("detection", DETECTION), ("masks", SEGMENTATION), ("team-b", DETECTION))
        ymir = make_ymir(projects=projects, mir=mir_bin)
        box = make_box(boxes, ymir.url, staging, project_id=0, projects={"team-a": 1, "team-b": 3})
        start(box)

        team_a = box.drop("team-a/sub/model.tar.gz", valid_package("a"))
        team_b = box.drop("team-b/model.tar.gz", valid_package("b"))
        loose = box.drop("loose.tar.gz", valid_package("c"))
        elsewhere = box.drop("elsewhere/model.tar.gz", valid_package("d"))
        box.wait_settled()

        for drop, project_id in ((team_a, 1), (team_b, 3)):
            row = final_row(box, drop)
            assert row["status"] == "imported", row["errors"]
            assert (row["ymir_project_id"], row["ymir_group_name"]) == (project_id, "model")
            (shown,) = ymir_rows(ymir.workplace, "models", project_id)
            assert shown["id"] == row["ymir_model_id"]
            assert ymir_model(ymir.url, shown["id"]).result_state is ResultState.READY
        for drop in (loose, elsewhere):
            row = final_row(box, drop)
            assert (row["status"], codes(row)) == ("failed", ["import.ymir_unrouted"])
            assert row["ymir_model_id"] is None
        assert box.names("done") == {"team-a/sub/model.tar.gz", "team-b/model.tar.gz"}
        assert box.names("failed") == {"loose.tar.gz", "elsewhere/model.tar.gz"}
        assert len(ymir_rows(ymir.workplace, "models")) == 2
        assert staged(staging) == []

    @pytest.mark.mir
    def test_a_folder_that_names_a_group_takes_packages_from_its_members_only(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
    ) -> None:
        """Anyone may make inbox/team-a/; only a member of its group imports into its project.
        The owner is the file's (the kernel sets it): `daemon` is in the group `daemon` by its
        primary group, `nobody` is not."""
        ymir = make_ymir(mir=mir_bin)
        team = {"team-a": {"project": 1, "group": "daemon"}}
        box = make_box(boxes, ymir.url, staging, project_id=0, projects=team)
        start(box)

        def upload(name: str, owner: str) -> Drop:
            data = valid_package(name)
            written = box.root / name
            written.write_bytes(data)
            os.chown(written, pwd.getpwnam(owner).pw_uid, pwd.getpwnam(owner).pw_gid)
            (box.inbox / "team-a").mkdir(exist_ok=True)
            written.rename(box.inbox / "team-a" / name)
            return box.record(f"team-a/{name}", data)

        member = upload("member.tar.gz", "daemon")
        stranger = upload("stranger.tar.gz", "nobody")
        box.wait_settled()

        assert final_row(box, member)["status"] == "imported"
        row = final_row(box, stranger)
        assert (row["status"], codes(row)) == ("failed", ["import.ymir_not_allowed"])
        assert row["errors"][0]["field"] == "import.ymir_api.projects.team-a.group"
        assert (
            "its owner nobody (uid 65534) is not in the group 'daemon'"
            in (row["errors"][0]["message"])
        )
        assert row["ymir_model_id"] is None
        assert len(ymir_rows(ymir.workplace, "models", 1)) == 1
        assert box.names("failed") == {"team-a/stranger.tar.gz"}
        assert staged(staging) == []

    def test_a_package_of_another_object_type_fails_before_ymir_creates_anything(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path
    ) -> None:
        ymir = make_ymir(projects=(("detection", DETECTION), ("masks", SEGMENTATION)))
        box = make_box(boxes, ymir.url, staging, projects={"masks": 2})
        start(box)

        drop = box.drop("masks/detector.tar.gz", valid_package("detector"))
        box.wait_settled()

        row = final_row(box, drop)
        assert (row["status"], codes(row)) == ("failed", ["import.ymir_object_type"])
        assert "YMIR project 2 ('masks') holds object type 3" in row["errors"][0]["message"]
        assert box.names("failed") == {"masks/detector.tar.gz"}
        assert "masks/detector.tar.gz.error.json" in box.error_files()
        for table in ("tasks", "groups", "models"):
            assert ymir_rows(ymir.workplace, table) == [], table
        assert staged(staging) == []


class TestYmirUnavailable:
    """YMIR away for a while, or its token expired: the package waits, nothing fails."""

    @pytest.mark.mir
    def test_a_package_waits_while_ymir_is_down_and_is_imported_once_it_is_back(
        self, boxes: Dropboxes, tmp_path: Path, sharing: Path, staging: Path, mir_bin: Path
    ) -> None:
        workplace = tmp_path / "ymir"
        arguments = ["--workplace", str(workplace), "--mount", f"{SHARING}={sharing}",
                     "--import-delay", "0.2", "--mir", str(mir_bin)]  # fmt: skip
        with StandinProcess(arguments) as ymir:
            box = make_box(boxes, ymir.url, staging)
            start(box)
            ymir.kill()

            drop = box.drop_valid("model.tar.gz")

            def waiting() -> bool:
                rows = box.rows_for(drop)
                return box.names("processing") == {"model.tar.gz"} and any(
                    row["status"] == "interrupted" and codes(row) == ["import.backend_unavailable"]
                    for row in rows
                )

            wait_until(waiting, TIMEOUT, lambda: "the package waits for YMIR: " + box.describe())
            assert box.names("done") == set() and box.names("failed") == set()
            assert box.final_status(drop) == []
            assert all(row["ymir_model_id"] is None for row in box.rows_for(drop))
            assert box.running

            ymir.start()  # the same port
            box.wait_settled()

            assert box.final_status(drop) == ["imported"]
            row = final_row(box, drop)
            (shown,) = ymir_rows(workplace, "models", 1)
            assert shown["id"] == row["ymir_model_id"]
            assert ymir_model(ymir.url, shown["id"]).result_state is ResultState.READY
            assert len(ymir_rows(workplace, "tasks")) == 1  # one POST
            assert box.names("done") == {"model.tar.gz"}
            assert staged(staging) == []

    @pytest.mark.mir
    def test_a_token_that_expired_between_two_packages_is_replaced(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
    ) -> None:
        ymir = make_ymir(mir=mir_bin)
        box = make_box(boxes, ymir.url, staging)
        start(box)
        first = box.drop_valid("first.tar.gz")
        box.wait_settled()

        ymir.expire_tokens()
        second = box.drop_valid("second.tar.gz")
        box.wait_settled()

        assert box.final_status(first) == ["imported"]
        assert box.final_status(second) == ["imported"], final_row(box, second)["errors"]
        assert len(ymir.store.data["tokens"]) == 1  # one new login
        models = ymir_rows(ymir.workplace, "models", 1)
        assert [model["result_state"] for model in models] == [ResultState.READY] * 2


class TestTheGatewaysRateLimit:
    @pytest.mark.mir
    def test_ten_packages_at_once_stay_within_ymirs_rate_limit(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
    ) -> None:
        """YMIR's gateway allows 3 requests a second, bursts of 10, per client address; the
        daemon's workers share one budget under it, and are never answered HTTP 429."""
        ymir = make_ymir(mir=mir_bin)
        assert ymir.rate_limit == (3.0, 10.0)
        box = make_box(boxes, ymir.url, staging)
        start(box)
        for number in range(10):
            box.drop_valid(f"burst-{number}.tar.gz")
        box.wait_settled(timeout=120)

        statuses = [row["status"] for row in box.ledger_rows() if row["status"] != "interrupted"]
        assert statuses == ["imported"] * 10
        assert ymir.refused_by_gateway == 0


class TestYmirsRace:
    def test_a_group_name_another_package_holds_in_the_ledger_is_taken(
        self, make_ymir: Callable[..., YmirStandin], staging: Path, tmp_path: Path
    ) -> None:
        """The name is reserved in the ledger before the POST, folded as YMIR compares
        names: no other import of this daemon, now or after a restart, posts it again."""
        from ymir_dropbox.config import build_config
        from ymir_dropbox.storing.backends import PreparedPackage
        from ymir_dropbox.storing.backends.ymir_api import YmirApiBackend
        from ymir_dropbox.storing.ledger import Ledger
        from ymir_dropbox.storing.lifecycle import Place

        ymir = make_ymir()
        api = {"url": ymir.url, "user": USER, "project_id": 1, "staging": str(staging)}
        config = build_config(
            {"base_dir": "box", "import": {"backend": "ymir-api", "ymir_api": api}},
            source=None,
            anchor=tmp_path,
        )
        config.ensure_folders()
        backend = YmirApiBackend(config)
        backend.settings = dataclasses.replace(backend.settings, password=PASSWORD)
        ledger = Ledger(config.paths.ledger)
        first = ledger.begin(package="a/run.tar.gz", place=Place.PROCESSING, sha256="a" * 64)
        ledger.start_import(first, "ymir-api")
        ledger.add_facts(first, {"ymir_project_id": 1, "ymir_group_name": "Run "})
        second = ledger.begin(package="b/run.tar.gz", place=Place.PROCESSING, sha256="b" * 64)
        package = PreparedPackage(
            Path("b/run.tar.gz"),
            "b" * 64,
            second,
            None,
            None,
            ledger=ledger,  # type: ignore[arg-type]
        )

        assert backend._reserve(package, 1, "run") is False
        assert backend._reserve(package, 1, "run-2") is True
        reserved = ledger.get(second)
        assert reserved is not None and reserved.facts["ymir_group_name"] == "run-2"

    @pytest.mark.mir
    def test_two_packages_of_one_stem_at_once_never_post_one_group_name_twice(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
    ) -> None:
        """YMIR's name check and insert are not one transaction (the stand-in leaves the same
        window): two imports posted at once with one new name made two groups of that name."""
        ymir = make_ymir(mir=mir_bin)
        ymir.name_race_seconds = 3.0  # wide: both posts fall in it unless one is never sent
        box = make_box(boxes, ymir.url, staging)
        start(box)
        box.drop_valid("a/run.tar.gz")
        box.drop_valid("b/run.tar.gz")
        box.wait_settled()

        names = sorted(group["name"] for group in ymir_rows(ymir.workplace, "groups", 1))
        assert names == ["run", "run-2"]
        rows = [row for row in box.ledger_rows() if row["status"] == "imported"]
        assert sorted(row["ymir_group_name"] for row in rows) == ["run", "run-2"]


class TestDaemonKilled:
    @pytest.mark.mir
    def test_a_start_removes_a_staged_package_ymir_is_done_with_and_keeps_strangers(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
    ) -> None:
        """A kill after YMIR finished and before the daemon removed the staged package left
        it there for ever; one our ledger does not know may be another machine's."""
        ymir = make_ymir(mir=mir_bin)
        box = make_box(boxes, ymir.url, staging)
        start(box)
        drop = box.drop_valid("model.tar.gz")
        box.wait_settled()
        assert box.stop() == 0
        left = staging / f"{drop.sha256[:16]}.tar.gz"
        left.write_bytes(b"what a kill left")
        stranger = staging / f"{'f' * 16}.tar.gz"
        stranger.write_bytes(b"another machine's")

        start(box)
        box.drop_valid("sentinel.tar.gz")
        box.wait_settled()

        assert not left.exists() and stranger.exists()
        assert box.events("staged_package_removed")

    """The daemon killed during YMIR's import: resumed, never posted twice."""

    @pytest.mark.mir
    def test_a_daemon_killed_while_ymir_imports_resumes_the_same_model(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
    ) -> None:
        ymir, box, drop, killed = killed_while_ymir_imports(boxes, make_ymir, staging, mir_bin)
        (model,) = ymir_rows(ymir.workplace, "models", 1)
        assert (model["id"], model["result_state"]) == (killed["ymir_model_id"], 0)

        start(box)
        wait_until(
            lambda: [row for row in box.rows_for(drop) if row["id"] > killed["id"]
                     and row["ymir_model_id"] == killed["ymir_model_id"]],
            TIMEOUT,
            "the next attempt takes up YMIR's model",
        )  # fmt: skip
        ymir.imports.set()
        box.wait_settled()

        row = final_row(box, drop)
        assert row["status"] == "imported", row["errors"]
        assert row["ymir_model_id"] == killed["ymir_model_id"]
        (before,) = [r for r in box.rows_for(drop) if r["id"] == killed["id"]]
        # A kill while YMIR imports is no crash of the package's: it only waited on YMIR.
        assert (before["status"], codes(before)) == ("interrupted", [])
        assert any("waited on the backend" in note for note in before["notes"])
        assert box.events("ymir_resumed")
        (shown,) = ymir_rows(ymir.workplace, "models", 1)
        assert ymir_model(ymir.url, shown["id"]).result_state is ResultState.READY
        assert len(ymir_rows(ymir.workplace, "tasks")) == 1
        assert staged(staging) == []

    @pytest.mark.mir
    def test_a_copy_of_the_bytes_that_failed_meanwhile_never_makes_a_second_model(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
    ) -> None:
        """Found by the power-cut soak: two files of the same bytes; one attempt posted and
        was cut short while YMIR imported; a copy then failed (three deaths in a row). The
        next attempt must still take up YMIR's model, not post a second one."""
        ymir, box, drop, killed = killed_while_ymir_imports(boxes, make_ymir, staging, mir_bin)
        with closing(Ledger(box.ledger_path)) as ledger:  # as the crash limit leaves a copy
            copy = ledger.begin(package="copy.tar.gz", sha256=drop.sha256, size=1)
            ledger.start_import(copy, "ymir-api")
            crashed = Problem("import.crashed", "", "3 crashes in a row")
            ledger.finish(copy, Status.FAILED, errors=[crashed])
        ymir.imports.set()
        start(box)
        box.wait_settled()

        (row,) = [r for r in box.rows_for(drop) if r["package"] == drop.relative][-1:]
        assert row["status"] == "imported", row["errors"]
        assert row["ymir_model_id"] == killed["ymir_model_id"]
        assert len(ymir_rows(ymir.workplace, "models")) == 1
        assert len(ymir_rows(ymir.workplace, "tasks")) == 1

    @pytest.mark.mir
    @pytest.mark.parametrize("ymir_got_it", [True, False], ids=["ymir-created-it", "post-lost"])
    def test_a_daemon_killed_after_recording_the_group_name_finds_the_group_or_posts_again(
        self,
        boxes: Dropboxes,
        make_ymir: Callable[..., YmirStandin],
        staging: Path,
        mir_bin: Path,
        ymir_got_it: bool,
    ) -> None:
        ymir, box, drop = held_ymir(boxes, make_ymir, staging, mir_bin, posts=True)
        wait_until(ymir.post_arrived.is_set, TIMEOUT, "the daemon posts the import")
        killed = in_flight_with(box, "ymir_group_name")
        assert killed is not None and killed["ymir_model_id"] is None
        assert killed["ymir_group_name"] == "model"
        box.kill()  # while YMIR has the POST and has not answered
        ymir.lose_posts = not ymir_got_it
        ymir.posts.set()
        wait_until(ymir.post_handled.is_set, TIMEOUT, "YMIR is done with the POST")
        ymir.lose_posts = False
        assert len(ymir_rows(ymir.workplace, "groups", 1)) == (1 if ymir_got_it else 0)

        start(box)
        box.wait_settled()

        row = final_row(box, drop)
        assert row["status"] == "imported", row["errors"]
        assert row["ymir_group_name"] == "model"
        (group,) = ymir_rows(ymir.workplace, "groups", 1)
        (model,) = ymir_rows(ymir.workplace, "models", 1)
        assert (group["name"], model["id"]) == ("model", row["ymir_model_id"])
        assert ymir_model(ymir.url, model["id"]).result_state is ResultState.READY
        assert bool(box.events("ymir_group_found")) is ymir_got_it
        assert staged(staging) == []

    @pytest.mark.mir
    def test_deaths_after_a_lost_post_answer_never_fail_the_package_ymir_imports(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
    ) -> None:
        """The answer to the POST is lost (the daemon dies while YMIR holds it); each of the
        next three starts finds YMIR's model by its group and dies again while YMIR imports.
        Four deaths, none of them the package's: it ends imported, as the one model."""
        ymir, box, drop = held_ymir(boxes, make_ymir, staging, mir_bin, posts=True, imports=True)
        wait_until(ymir.post_arrived.is_set, TIMEOUT, "the daemon posts the import")
        box.kill()  # the POST's answer goes nowhere
        ymir.posts.set()
        wait_until(ymir.post_handled.is_set, TIMEOUT, "YMIR has the POST")
        (model,) = ymir_rows(ymir.workplace, "models", 1)

        for _ in range(3):
            seen = max(row["id"] for row in box.rows_for(drop))
            start(box)
            wait_until(
                lambda seen=seen: [row for row in box.rows_for(drop) if row["id"] > seen
                                   and row["ymir_model_id"] == model["id"]],
                TIMEOUT,
                "the next attempt takes up YMIR's model",
            )  # fmt: skip
            box.kill()
        ymir.imports.set()
        start(box)
        box.wait_settled()

        row = final_row(box, drop)
        assert row["status"] == "imported", row["errors"]
        assert row["ymir_model_id"] == model["id"]
        rows = box.rows_for(drop)
        assert all(not codes(earlier) for earlier in rows), [
            (earlier["status"], earlier["errors"], earlier["notes"]) for earlier in rows
        ]
        assert len(ymir_rows(ymir.workplace, "models")) == 1
        assert len(ymir_rows(ymir.workplace, "tasks")) == 1
        assert ymir_model(ymir.url, model["id"]).result_state is ResultState.READY
        assert box.names("done") == {"model.tar.gz"} and staged(staging) == []

    @pytest.mark.mir
    def test_a_daemon_killed_after_ymir_finished_records_that_model(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
    ) -> None:
        ymir = make_ymir(mir=mir_bin)
        box = make_box(boxes, ymir.url, staging)
        start(box, **{CRASH_ENV: "stored"})

        drop = box.drop_valid("model.tar.gz")
        assert box.wait_exit() == -9
        (killed,) = box.rows_for(drop)
        assert (killed["status"], killed["ymir_model_id"] is not None) == ("importing", True)
        start(box)
        box.wait_settled()

        row = final_row(box, drop)
        assert row["status"] == "imported", row["errors"]
        assert row["ymir_model_id"] == killed["ymir_model_id"]
        assert row["model_hash"] == ymir_model(ymir.url, row["ymir_model_id"]).hash
        assert len(ymir_rows(ymir.workplace, "models", 1)) == 1
        assert staged(staging) == []

    @pytest.mark.mir
    def test_a_package_retried_after_ymir_failed_it_is_imported_anew(
        self,
        boxes: Dropboxes,
        make_ymir: Callable[..., YmirStandin],
        staging: Path,
        mir_bin: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        ymir, box, drop, killed = killed_while_ymir_imports(boxes, make_ymir, staging, mir_bin)
        for path in staging.iterdir():
            path.unlink()  # YMIR cannot read the package (say, a mount was missing): error
        ymir.imports.set()
        start(box)
        box.wait_settled()
        failed = final_row(box, drop)
        assert (failed["ymir_model_id"], codes(failed)) == (
            killed["ymir_model_id"],
            ["import.ymir_failed"],
        )

        monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
        retried = box.cli("retry", "--force", str(failed["id"]))
        assert retried.returncode == 0, retried.stderr
        box.wait_settled()

        assert box.final_status(drop) == ["failed", "imported"]
        row = box.rows_for(drop)[-1]
        assert row["ymir_model_id"] != killed["ymir_model_id"]
        assert ymir_model(ymir.url, row["ymir_model_id"]).result_state is ResultState.READY
        assert len(ymir_rows(ymir.workplace, "tasks")) == 2


class TestRefused:
    """What YMIR or we refuse: failed/, the reason, nothing left staged."""

    @pytest.mark.mir
    def test_a_package_mir_would_refuse_fails_before_ymir_sees_it(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
    ) -> None:
        """A stage timestamp past 2**31 - 1: mir 2.3.0 crashes on it (the protobuf field is an
        int32) and YMIR ended the model in error with code 169999. Refused in validation now,
        the package never reaches YMIR."""
        ymir = make_ymir(mir=mir_bin)
        box = make_box(boxes, ymir.url, staging)
        start(box)
        info = seed_info()
        info["stages"]["stage_1000"]["timestamp"] = 2**40

        drop = box.drop("far-future.tar.gz", seed_bytes(info))
        box.wait_settled()

        row = final_row(box, drop)
        assert (row["status"], codes(row)) == ("failed", ["info.too_large_for_ymir"])
        assert box.names("failed") == {"far-future.tar.gz"}
        assert row["ymir_model_id"] is None and ymir_rows(ymir.workplace, "models") == []
        assert staged(staging) == []

    @pytest.mark.mir
    def test_a_package_ymir_cannot_read_fails_with_ymirs_error_code(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
    ) -> None:
        """The staged file damaged before YMIR reads it: mir finds no package in it (160015)."""
        ymir, box, drop = held_ymir(boxes, make_ymir, staging, mir_bin, imports=True)
        wait_until(lambda: in_flight_with(box, "ymir_model_id"), TIMEOUT, "YMIR has the import")
        (name,) = staged(staging)
        (staging / name).write_bytes(bytes(range(256)) * 8)
        ymir.imports.set()
        box.wait_settled()

        row = final_row(box, drop)
        assert (row["status"], codes(row)) == ("failed", ["import.ymir_failed"])
        message = row["errors"][0]["message"]
        assert "160015" in message and "not a model package YMIR can read" in message
        model = ymir_model(ymir.url, row["ymir_model_id"])
        assert (model.result_state, model.error_code) == (ResultState.ERROR, 160015)
        assert staged(staging) == []

    def test_an_import_ymir_refuses_for_good_fails_and_leaves_nothing_staged(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path
    ) -> None:
        ymir = make_ymir(HeldStandin)
        assert isinstance(ymir, HeldStandin)
        ymir.refuse_posts = 110101
        box = make_box(boxes, ymir.url, staging)
        start(box)

        drop = box.drop_valid("model.tar.gz")
        box.wait_settled()

        row = final_row(box, drop)
        assert (row["status"], codes(row)) == ("failed", ["import.ymir_refused"])
        assert "110101" in row["errors"][0]["message"]
        assert row["ymir_group_name"] == "model" and row["ymir_model_id"] is None
        assert ymir.post_arrived.is_set()
        assert ymir_rows(ymir.workplace, "models") == []
        assert staged(staging) == []  # written for YMIR, then removed: no import will read it

    def test_invalid_and_hostile_packages_never_reach_ymir(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, tmp_path: Path
    ) -> None:
        ymir = make_ymir()
        box = make_box(boxes, ymir.url, staging)
        start(box)

        drops = [(box.drop("not-a-model.tar.gz", invalid_package("x")), "info.missing")]
        for case_id in HOSTILE:
            case = BY_ID[case_id]
            built = case.build(tmp_path / f"{case_id}.tar.gz")
            drops.append((box.drop(f"{case_id}.tar.gz", built.read_bytes()), case.code))
        box.wait_settled()

        for drop, code in drops:
            row = final_row(box, drop)
            assert row["status"] == "failed"
            assert code in codes(row), (drop.relative, codes(row))
            assert row["ymir_project_id"] is None and row["ymir_group_name"] is None
        for table in ("tasks", "groups", "models"):
            assert ymir_rows(ymir.workplace, table) == [], table
        assert staged(staging) == []


class ImagesDown(YmirStandin):
    """A stand-in whose ``GET /api/v1/images/`` answers HTTP 502 while ``images_down``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.images_down = True

    def list_images(self, *, query: dict[str, str], body: bytes) -> Row:
        if self.images_down:
            raise Crash("Bad Gateway", 502)
        return super().list_images(query=query, body=body)


YOLO = "youdaoyzbx/ymir-executor:ymir2.1.0-yolov5-v7.0-cu111-tmi"


class TestTheExecutorImage:
    """``task_context.executor`` looked up among YMIR's docker images before the POST: YMIR
    never checks it, and a model whose image YMIR lacks cannot be trained, mined or used.
    (Each class below is a unit of work of its own: they run side by side.)"""

    @pytest.mark.mir
    def test_what_ymir_has_of_each_packages_executor_is_a_warning_on_its_attempt(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
    ) -> None:
        ymir = make_ymir(mir=mir_bin)
        ymir.register_image(YOLO)
        ymir.register_image("team/pending:1", state=1)
        ymir.register_image("team/infer-only:1", types=(9,))
        ymir.register_image("team/Detector:V1")  # MySQL's == finds it for team/detector:v1
        box = make_box(boxes, ymir.url, staging)
        start(box)
        expected = {  # package: its executor, and the warning (with words it must say)
            "ready": (YOLO, None, ()),
            "unregistered": ("sample-executor", "ymir.executor_not_registered",
                             ("'sample-executor'", "Docker images page")),
            "pending": ("team/pending:1", "ymir.executor_not_ready", ("pending",)),
            "infer-only": ("team/infer-only:1", "ymir.executor_partial",
                           ("only inference", "training or mining")),
            "other-case": ("team/detector:v1", "ymir.executor_not_registered", ()),
            "no-executor": (None, None, ()),
        }  # fmt: skip
        drops = {
            name: box.drop(f"{name}.tar.gz", with_executor(executor))
            for name, (executor, _, _) in expected.items()
        }
        box.wait_settled(timeout=120)

        for name, (_, code, words) in expected.items():
            row = final_row(box, drops[name])
            assert row["status"] == "imported", (name, row["errors"])
            found = ymir_warnings(row)
            assert [problem["code"] for problem in found] == ([code] if code else []), name
            for problem in found:
                assert problem["field"] == "task_context.executor"
                message = problem["message"]
                assert "task_context.executor" in message and all(w in message for w in words)
        assert len(ymir_rows(ymir.workplace, "models", 1)) == len(expected)
        assert ymir.refused_by_gateway == 0
        # a package that names no executor is not looked up
        looked_up = {event["executor"] for event in box.events("ymir_executor_checked")}
        assert looked_up == {executor for executor, _, _ in expected.values() if executor}
        # what the notification and push --wait's verdict carry
        ledger = Ledger.open_for_reading(box.ledger_path)
        attempt = ledger.get(final_row(box, drops["unregistered"])["id"])
        ledger.close()
        assert attempt is not None
        for document in (outcome_document(attempt), verdict_document(attempt)):
            assert [w["code"] for w in document["warnings"]] == ["ymir.executor_not_registered"]
        assert verdict_lines(verdict_document(attempt))[-1].startswith(
            "  warning: ymir.executor_not_registered [task_context.executor]: "
            "task_context.executor is 'sample-executor', an image YMIR does not have"
        )


class TestRequireRegisteredExecutor:
    @pytest.mark.mir
    def test_with_require_registered_executor_a_package_ymir_cannot_run_fails_unsent(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
    ) -> None:
        ymir = make_ymir(mir=mir_bin)
        ymir.register_image(YOLO)
        ymir.register_image("team/pending:1", state=1)
        box = make_box(boxes, ymir.url, staging, require_registered_executor=True)
        start(box)

        refused = {
            "ymir.executor_not_registered": box.drop("a.tar.gz", with_executor("team/gone:1")),
            "ymir.executor_not_ready": box.drop("b.tar.gz", with_executor("team/pending:1")),
            "ymir.executor_missing": box.drop("c.tar.gz", with_executor(None)),
        }
        ready = box.drop("ready.tar.gz", with_executor(YOLO))
        box.wait_settled(timeout=60)

        for code, drop in refused.items():
            row = final_row(box, drop)
            assert (row["status"], codes(row)) == ("failed", [code])
            assert "nothing was sent to YMIR" in row["errors"][0]["message"]
            assert row["ymir_group_name"] is None and row["ymir_model_id"] is None
        assert box.names("failed") == {"a.tar.gz", "b.tar.gz", "c.tar.gz"}
        imported = final_row(box, ready)
        assert (imported["status"], ymir_warnings(imported)) == ("imported", [])
        # YMIR holds the one model it was sent, and nothing of the others
        for table in ("tasks", "groups", "models"):
            assert len(ymir_rows(ymir.workplace, table)) == 1, table
        (model,) = ymir_rows(ymir.workplace, "models", 1)
        assert model["id"] == imported["ymir_model_id"]
        assert staged(staging) == []


class TestTheExecutorLookupFails:
    @pytest.mark.mir
    def test_a_lookup_ymir_cannot_answer_is_a_warning_and_the_import_goes_on(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
    ) -> None:
        ymir = make_ymir(ImagesDown, mir=mir_bin)
        box = make_box(boxes, ymir.url, staging)
        start(box)

        drop = box.drop("model.tar.gz", with_executor(YOLO))
        box.wait_settled()

        row = final_row(box, drop)
        assert row["status"] == "imported", row["errors"]
        (warning,) = ymir_warnings(row)
        assert warning["code"] == "ymir.executor_unchecked"
        assert "HTTP 502" in warning["message"] and YOLO in warning["message"]

    @pytest.mark.mir
    def test_with_require_registered_executor_a_lookup_ymir_cannot_answer_waits(
        self, boxes: Dropboxes, make_ymir: Callable[..., YmirStandin], staging: Path, mir_bin: Path
    ) -> None:
        ymir = make_ymir(ImagesDown, mir=mir_bin)
        assert isinstance(ymir, ImagesDown)
        ymir.register_image(YOLO)
        box = make_box(boxes, ymir.url, staging, require_registered_executor=True)
        start(box)

        drop = box.drop("model.tar.gz", with_executor(YOLO))

        def waiting() -> bool:
            return any(
                row["status"] == "interrupted" and codes(row) == ["import.backend_unavailable"]
                for row in box.rows_for(drop)
            )

        wait_until(waiting, TIMEOUT, lambda: "the package waits for YMIR: " + box.describe())
        assert box.names("processing") == {"model.tar.gz"}
        assert ymir_rows(ymir.workplace, "tasks") == []  # nothing sent meanwhile
        ymir.images_down = False
        box.wait_settled()

        assert box.final_status(drop) == ["imported"]
        assert ymir_warnings(final_row(box, drop)) == []
        assert len(ymir_rows(ymir.workplace, "tasks")) == 1
