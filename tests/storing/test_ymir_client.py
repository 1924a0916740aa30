"""The YMIR client against the stand-in of YMIR 2.3.0's backend: real HTTP on 127.0.0.1.

Imports run the real ``mir models`` (tests marked ``mir``); what a ready model shows (hash,
tp/fp/fn, recommended stage) is what mir stored, and an error code is the one mir wrote.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from conftest import mir_executable
from daemon_harness import wait_until
from factory import seed_info, seed_package
from ymir_standin import StandinProcess, YmirStandin

from ymir_dropbox.reading.normalization import normalize
from ymir_dropbox.storing.backends.ymir_client import (
    DockerImage,
    ModelState,
    Project,
    ResultState,
    YmirClient,
    YmirDuplicateGroupName,
    YmirError,
    YmirProjectNotFound,
    YmirRefused,
    YmirTextTooLong,
    YmirTokenRefused,
    YmirUnavailable,
    YmirUnknownAnswer,
    YmirWrongCredentials,
)

SHARING = "/ymir-sharing"  # the folder YMIR's backend container sees


@pytest.fixture
def sharing(tmp_path: Path) -> Path:
    """The host folder mounted at /ymir-sharing in YMIR's backend container."""
    folder = tmp_path / "ymir-sharing"
    folder.mkdir()
    return folder


@pytest.fixture
def standin(tmp_path: Path, sharing: Path) -> Iterator[YmirStandin]:
    with YmirStandin(tmp_path / "ymir", mounts={SHARING: sharing}, import_delay=0.2) as running:
        yield running


@pytest.fixture
def mir_standin(tmp_path: Path, sharing: Path) -> Iterator[YmirStandin]:
    """A stand-in whose imports run the real mir; project 2 is a segmentation project."""
    projects = [("detection", 2), ("segmentation", 3)]
    workplace = tmp_path / "ymir"
    with YmirStandin(
        workplace, mounts={SHARING: sharing}, projects=projects, import_delay=0.2,
        mir=mir_executable(),
    ) as running:  # fmt: skip
        yield running


def client_of(standin: YmirStandin, password: str | None = None) -> YmirClient:
    return YmirClient(standin.url, standin.user, password or standin.password, timeout=5)


def finished(client: YmirClient, model_id: int, timeout: float = 30) -> ModelState:
    """Poll the model, as YMIR's contract says, until it is no longer processing."""

    def result() -> ModelState | None:
        state = client.model(model_id)
        return None if state.result_state is ResultState.PROCESSING else state

    found: ModelState = wait_until(result, timeout, f"model {model_id} leaves processing")
    return found


def import_ran(standin: YmirStandin, task_id: int) -> bool:
    """The stand-in's background import for this task has run (whatever it did)."""
    with standin.store.lock:
        task = standin.store.get("tasks", task_id)
        return task is not None and task["job"] != "waiting"


def normalized_seed(folder: Path, name: str = "seed.tar.gz") -> str:
    """The seed's example as the daemon sends it (normalized); its path inside YMIR."""
    seed_package(folder / name, normalize(seed_info()))
    return f"{SHARING}/{name}"


# -- logging in -----------------------------------------------------------------------------------


def test_login_gives_a_token_that_later_calls_use(standin: YmirStandin) -> None:
    client = client_of(standin)

    client.login()

    assert client.project(1) == Project(id=1, name="detection", object_type=2)
    assert len(standin.store.data["tokens"]) == 1  # one login, not one per call


def test_a_wrong_password_is_refused_for_good_with_code_110107(standin: YmirStandin) -> None:
    client = client_of(standin, password="not-the-password")

    with pytest.raises(YmirWrongCredentials) as refused:
        client.login()

    assert not refused.value.passing
    assert (refused.value.ymir_code, refused.value.http_status) == (110107, 400)
    assert "POST /api/v1/auth/token" in str(refused.value) and "110107" in str(refused.value)


def test_an_expired_token_is_replaced_by_one_new_login(standin: YmirStandin) -> None:
    client = client_of(standin)
    client.project(1)

    standin.expire_tokens()

    assert client.project(1).id == 1
    assert len(standin.store.data["tokens"]) == 1


def test_a_token_refused_right_after_a_new_login_is_a_passing_error(
    tmp_path: Path,
) -> None:
    born_expired = YmirStandin(tmp_path / "ymir", token_seconds=-1)
    with born_expired, pytest.raises(YmirTokenRefused) as refused:
        client_of(born_expired).project(1)

    assert refused.value.passing
    assert refused.value.ymir_code == 110104
    assert "GET /api/v1/projects/1" in str(refused.value)


# -- projects -------------------------------------------------------------------------------------


def test_a_project_is_read_with_its_object_type(standin: YmirStandin) -> None:
    segmentation = standin.create_project("masks", object_type=3)

    assert client_of(standin).project(segmentation) == Project(segmentation, "masks", 3)


def test_a_missing_project_is_refused_for_good_with_code_111401(standin: YmirStandin) -> None:
    with pytest.raises(YmirProjectNotFound) as refused:
        client_of(standin).project(404)

    assert not refused.value.passing
    assert refused.value.ymir_code == 111401
    assert "GET /api/v1/projects/404" in str(refused.value) and "111401" in str(refused.value)


def test_projects_walks_every_page(standin: YmirStandin) -> None:
    for number in range(104):  # with the first one, more than a page of 100
        standin.create_project(f"project-{number}")

    projects = client_of(standin).projects()

    assert [project.id for project in projects] == list(range(105, 0, -1))  # newest first


# -- model groups ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "found"),
    [
        ("Run-1", True),
        ("run-1", True),
        ("RUN-1   ", True),
        (" run-1", False),
        ("run-10", False),
        ("run", False),
    ],
    ids=["same", "lower-case", "upper-case-trailing-spaces", "leading-space", "longer", "prefix"],
)
def test_a_group_is_found_by_name_as_ymir_compares_names(
    standin: YmirStandin, asked: str, found: bool
) -> None:
    client = client_of(standin)
    started = client.import_model(1, "Run-1", "a test", f"{SHARING}/absent.tar.gz")

    assert client.find_group(1, asked) == (started.group_id if found else None)


def test_a_colliding_group_name_is_refused_for_good_with_code_111602(
    standin: YmirStandin,
) -> None:
    client = client_of(standin)
    client.import_model(1, "Run-1", None, f"{SHARING}/absent.tar.gz")

    with pytest.raises(YmirDuplicateGroupName) as refused:
        client.import_model(1, "run-1 ", None, f"{SHARING}/absent.tar.gz")

    assert not refused.value.passing
    assert refused.value.ymir_code == 111602
    assert "POST /api/v1/models/importing" in str(refused.value)
    assert client.import_model(1, "run-2", None, f"{SHARING}/absent.tar.gz").group_name == "run-2"


def test_the_group_in_another_project_does_not_collide(standin: YmirStandin) -> None:
    other = standin.create_project("other")
    client = client_of(standin)
    client.import_model(1, "Run-1", None, f"{SHARING}/absent.tar.gz")

    started = client.import_model(other, "Run-1", None, f"{SHARING}/absent.tar.gz")

    assert client.find_group(other, "run-1") == started.group_id


# -- docker images --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "found"),
    [
        ("team/Detector:V1", True),
        ("team/detector:v1", False),
        ("team/Detector:V1 ", False),
        ("foo:1", False),
        ("foo", False),
    ],
    ids=["same", "other-case", "trailing-space", "shorter-tag", "no-tag"],
)
def test_an_image_is_found_by_its_exact_url_only(
    standin: YmirStandin, asked: str, found: bool
) -> None:
    """YMIR filters ``url == ?`` in MySQL, which ignores case and trailing spaces: it answers
    with an image of another name, which is not the package's executor."""
    detector = standin.register_image("team/Detector:V1")
    standin.register_image("foo:10")
    client = client_of(standin)

    image = client.image(asked)

    assert (image.id if image else None) == (detector if found else None)
    if asked.casefold().rstrip() == "team/detector:v1":
        assert [image.id for image in client.images(asked)] == [detector]  # YMIR's own answer


def test_an_image_shows_its_state_and_the_tasks_it_serves(standin: YmirStandin) -> None:
    pending = standin.register_image("team/new:1", state=1, types=(9, 1), object_type=3)

    assert client_of(standin).image("team/new:1") == DockerImage(
        id=pending,
        name="team/new:1",
        url="team/new:1",
        state=1,
        tasks=(1, 9),
        object_type=3,
        is_deleted=False,
    )


def test_a_deleted_image_is_not_listed(standin: YmirStandin) -> None:
    standin.register_image("team/old:1", is_deleted=True)
    kept = standin.register_image("team/kept:1")
    client = client_of(standin)

    assert client.image("team/old:1") is None
    assert [image.id for image in client.images()] == [kept]


def test_images_are_listed_newest_first_with_ymirs_filters(standin: YmirStandin) -> None:
    """As ``crud.docker_image.get_multi_with_filter`` of 2.3.0: ``name`` LIKE, ``state``,
    ``type`` (a config of that type), ``object_type``; a filter of 0 filters nothing; no
    paging (the endpoint takes no ``limit``)."""
    yolo = standin.register_image("team/yolo:1", name="YOLO v5")
    infer = standin.register_image("team/infer:1", name="infer", types=(9,))
    pending = standin.register_image("team/seg:1", name="seg", state=1, object_type=3)
    client = client_of(standin)

    def listed(**query: object) -> list[int]:
        result = client._call("GET", "/api/v1/images/", query=query)
        assert result["total"] == len(result["items"])
        return [item["id"] for item in result["items"]]

    assert listed() == [pending, infer, yolo]
    assert listed(name="yolo") == [yolo]
    assert listed(state=1) == [pending]
    assert listed(type=1) == [pending, yolo]
    assert listed(type=0) == [pending, infer, yolo]
    assert listed(object_type=3) == [pending]
    assert listed(limit=1) == [pending, infer, yolo]
    with pytest.raises(YmirRefused) as refused:
        listed(state=2)
    assert refused.value.ymir_code == 110102


def test_the_image_lookup_waits_out_the_gateways_429(tmp_path: Path) -> None:
    """The lookup is paced and waits out a 429 as its Retry-After says, like every call."""
    with YmirStandin(tmp_path / "ymir", rate_limit=(1.0, 1.0)) as standin:
        standin.register_image("team/yolo:1")
        client = client_of(standin)

        found = [client.image("team/yolo:1") for _ in range(3)]

        assert all(image is not None for image in found)
        assert standin.refused_by_gateway >= 1


# -- importing ------------------------------------------------------------------------------------


@pytest.mark.mir
def test_the_normalized_seed_example_becomes_ready_with_what_mir_stored(
    mir_standin: YmirStandin, sharing: Path
) -> None:
    client = client_of(mir_standin)

    started = client.import_model(1, "seed", "from ymir-dropbox", normalized_seed(sharing))
    ready = finished(client, started.model_id)

    assert ready.result_state is ResultState.READY
    assert (ready.name, ready.group_name, ready.group_id) == ("seed_1", "seed", started.group_id)
    assert ready.hash is not None and re.fullmatch(r"[0-9a-f]{40}", ready.hash)
    stored = mir_standin.models_path / ready.hash
    assert hashlib.sha1(stored.read_bytes()).hexdigest() == ready.hash
    stages = {stage.name: stage for stage in ready.stages}
    assert (stages["stage_1000"].tp, stages["stage_1000"].fp, stages["stage_1000"].fn) == (
        60,
        30,
        30,
    )
    assert ready.map == 0.6 and ready.recommended_stage == "stage_2000"
    assert ready.keywords == ("person", "cat")
    assert (ready.task_id, ready.task_state, ready.error_code) == (started.task_id, 3, None)
    assert client.models_of_group(1, started.group_id) == [ready]


@pytest.mark.mir
@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda path: path.write_bytes(bytes(range(256)) * 8), 160015),
        (seed_package, 169999),  # no package_version: mir 2.3.0 crashes on it
    ],
    ids=["random-bytes", "raw-seed-example"],
)
def test_a_package_mir_refuses_ends_in_error_with_mirs_code(
    mir_standin: YmirStandin, sharing: Path, make: object, code: int
) -> None:
    make(sharing / "refused.tar.gz")  # type: ignore[operator]
    client = client_of(mir_standin)

    started = client.import_model(1, "refused", None, f"{SHARING}/refused.tar.gz")
    failed = finished(client, started.model_id)

    assert failed.result_state is ResultState.ERROR
    assert (failed.error_code, failed.task_state) == (code, 4)
    assert failed.hash is None and failed.stages == ()


@pytest.mark.mir
def test_an_object_type_mismatch_ends_in_error_without_a_code(
    mir_standin: YmirStandin, sharing: Path
) -> None:
    client = client_of(mir_standin)

    started = client.import_model(2, "detector", None, normalized_seed(sharing))
    failed = finished(client, started.model_id)

    assert failed.result_state is ResultState.ERROR
    assert (failed.task_state, failed.error_code) == (3, None)


def test_a_package_path_ymir_cannot_see_ends_in_error_while_the_task_stays_pending(
    standin: YmirStandin,
) -> None:
    client = client_of(standin)

    started = client.import_model(1, "absent", None, f"{SHARING}/absent.tar.gz")
    failed = finished(client, started.model_id)

    assert failed.result_state is ResultState.ERROR
    assert (failed.task_state, failed.error_code) == (1, None)


def test_an_import_into_a_missing_project_is_accepted_and_stays_processing(
    standin: YmirStandin, sharing: Path
) -> None:
    client = client_of(standin)
    started = client.import_model(404, "lost", None, normalized_seed(sharing))

    wait_until(lambda: import_ran(standin, started.task_id), 10, "the stand-in ran the import")

    assert client.model(started.model_id).result_state is ResultState.PROCESSING


def test_a_description_over_100_characters_is_refused_before_ymir_half_creates_it(
    standin: YmirStandin,
) -> None:
    client = client_of(standin)

    with pytest.raises(YmirTextTooLong) as refused:
        client.import_model(1, "long", "d" * 101, f"{SHARING}/absent.tar.gz")

    assert not refused.value.passing
    assert "101 characters" in str(refused.value)
    assert client.find_group(1, "long") is None
    assert client.import_model(1, "long", "d" * 100, f"{SHARING}/absent.tar.gz").model_id


def test_ymir_answers_http_500_to_a_101_character_description_and_creates_nothing(
    standin: YmirStandin,
) -> None:
    """What the client guards against: the quirk as YMIR's contract describes it."""
    client = client_of(standin)
    client.login()
    (token,) = standin.store.data["tokens"]
    body = {"project_id": 1, "group_name": "long", "description": "d" * 101,
            "input_model_path": f"{SHARING}/x.tar.gz"}  # fmt: skip
    request = urllib.request.Request(
        f"{standin.url}/api/v1/models/importing", json.dumps(body).encode(),
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip

    with pytest.raises(urllib.error.HTTPError) as answered:
        urllib.request.urlopen(request, timeout=5)

    assert answered.value.code == 500
    answered.value.close()
    assert client.find_group(1, "long") is None


# -- YMIR down, or something else answering -------------------------------------------------------


def test_ymir_down_is_a_passing_error_and_the_next_call_works_again(
    standin: YmirStandin,
) -> None:
    client = client_of(standin)
    client.project(1)
    standin.stop()

    with pytest.raises(YmirUnavailable) as unavailable:
        client.project(1)

    assert unavailable.value.passing and unavailable.value.ymir_code is None
    assert "GET /api/v1/projects/1" in str(unavailable.value)
    standin.start()  # same port, same state: the token is still good
    assert client.project(1).id == 1


def test_an_import_waiting_when_ymir_was_killed_goes_on_after_a_restart(
    tmp_path: Path, sharing: Path
) -> None:
    arguments = ["--workplace", str(tmp_path / "ymir"), "--mount", f"{SHARING}={sharing}",
                 "--import-delay", "1"]  # fmt: skip
    with StandinProcess(arguments) as ymir:
        client = YmirClient(ymir.url, "admin@example.com", "standin-password", timeout=5)
        started = client.import_model(1, "absent", None, f"{SHARING}/absent.tar.gz")
        ymir.kill()

        with pytest.raises(YmirUnavailable):
            client.model(started.model_id)
        ymir.start()

        assert finished(client, started.model_id).result_state is ResultState.ERROR
        assert client.find_group(1, "ABSENT") == started.group_id


class _Gateway(BaseHTTPRequestHandler):
    """Something in front of YMIR that answers every request with one fixed answer."""

    status = 502
    body = b"Bad Gateway"

    def do_POST(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (502, b"Bad Gateway", YmirUnavailable),
        (429, b"Too Many Requests", YmirUnavailable),
        (200, b'{"code": 123456, "message": "Something New"}', YmirUnknownAnswer),
        (200, b"<!doctype html><title>YMIR</title>", YmirUnknownAnswer),
    ],
    ids=["bad-gateway", "rate-limited", "unknown-code", "web-page"],
)
def test_what_else_may_answer_is_classified(
    status: int, body: bytes, kind: type[Exception]
) -> None:
    handler = type("Gateway", (_Gateway,), {"status": status, "body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        client = YmirClient(f"http://127.0.0.1:{server.server_address[1]}", "u", "p", timeout=5)
        with pytest.raises(kind) as failed:
            client.login()
    finally:
        server.shutdown()
        server.server_close()

    assert type(failed.value) is kind
    assert "POST /api/v1/auth/token" in str(failed.value)
    assert getattr(failed.value, "passing", None) is (kind is YmirUnavailable)


def test_one_pace_for_the_process_spends_its_burst_then_waits_its_rate() -> None:
    from ymir_dropbox.storing.backends.ymir_client import Pace

    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(round(seconds, 3))
        now[0] += seconds

    pace = Pace(per_second=2.5, burst=5.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(7):
        pace.take()
    assert waits == [0.4, 0.4]  # five at once, then one every 0.4 s
    pace.hold(2.0)  # the gateway said Retry-After: 2
    pace.take()
    assert waits[-1] == pytest.approx(2.4)


# -- redirects ------------------------------------------------------------------------------------


def send_json(handler: BaseHTTPRequestHandler, answer: dict[str, object]) -> None:
    body = json.dumps(answer).encode()
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class _Recorder(BaseHTTPRequestHandler):
    """Another host: records the Authorization header of every request it gets."""

    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.headers.get("Authorization"))
        send_json(self, {"code": 0, "message": "success", "result": {}})

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize("same_origin", [True, False], ids=["same-host", "other-host"])
def test_a_redirect_is_followed_only_to_ymir_itself_and_never_carries_the_token_away(
    same_origin: bool,
) -> None:
    other = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    other_url = f"http://127.0.0.1:{other.server_address[1]}"

    class Redirecting(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the login
            token = {"access_token": "secret", "token_type": "bearer"}
            send_json(self, {"code": 0, "message": "success", **token, "result": token})

        def do_GET(self) -> None:
            if self.path.startswith("/here/"):
                send_json(self, {"code": 0, "message": "success",
                            "result": {"id": 1, "name": "p", "object_type": 2}})  # fmt: skip
                return
            self.send_response(307)
            target = "/here" + self.path if same_origin else other_url + self.path
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    ymir = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    threading.Thread(target=ymir.serve_forever, daemon=True).start()
    _Recorder.seen = []
    try:
        client = YmirClient(f"http://127.0.0.1:{ymir.server_address[1]}", "u", "p", timeout=5)
        client.login()
        if same_origin:
            assert client.project(1) == Project(id=1, name="p", object_type=2)
        else:
            with pytest.raises(YmirError):
                client.project(1)
            assert _Recorder.seen == []  # the other host never saw the request, nor the token
    finally:
        ymir.shutdown()
        other.shutdown()
