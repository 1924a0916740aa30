"""A stand-in for YMIR 2.3.0's web backend, for tests: a real HTTP server on 127.0.0.1.

It answers the API of YMIR 2.3.0 as its contract describes it, shaped like the responses
captured there, and settles what the contract leaves open as YMIR's source does (tag
``release-2.3.0``, ``ymir/backend/src``): the gateway checks the token with the auth service,
which answers with real HTTP statuses; the app answers its errors with HTTP 200
(``USE_200_EVERYWHERE``); an exception the app does not catch is a plain-text HTTP 500.

An import runs as YMIR runs it, ``import_delay`` seconds later instead of through gRPC and a 20 s
monitor: the real ``mir models`` of ymir-cmd 2.3.0, with the controller's arguments, into the
project's mir repository (``<sandbox>/<user hash>/<project hash>``). The task's state and error
code are what mir wrote in its ``monitor.txt``; a ready model's data is what mir stored (the
tag's commit names the model hash, the stored tar holds ``ymir-info.yaml``), as YMIR's viewer
reads it. Everything is kept in ``<workplace>/state.json``: a stand-in killed and started again
on the same workplace carries on, and runs the imports that were still waiting.

As a process: ``python tests/ymir_standin.py --port N --workplace DIR --mount
/ymir-sharing=HOST_DIR``; it prints ``listening on URL`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
USER_ID = 1
DEFAULT_LIMIT = 20  # settings.DEFAULT_LIMIT
STRING_LEN_LIMIT = 100  # settings.STRING_LEN_LIMIT: names and descriptions are VARCHAR(100)
IMPORT_MODEL = 13  # TaskType.import_model
RESULT_MODEL = 2  # ResultType.model
PENDING, RUNNING, DONE, ERROR = 1, 2, 3, 4  # TaskState, mir's LogState
PROCESSING, READY, FAILED = 0, 1, 2  # ResultState
DETECTION = 2  # ObjectType.object_detect
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "ymir-standin",
    "GIT_AUTHOR_EMAIL": "ymir-standin@localhost",
    "GIT_COMMITTER_NAME": "ymir-standin",
    "GIT_COMMITTER_EMAIL": "ymir-standin@localhost",
}
IMPORT_COMMIT = re.compile(r" as ([0-9a-f]{40})$")  # "import model <path> as <hash>"

# The fields of each kind of row, in the order YMIR's schemas list them.
PROJECT_DEFAULTS: dict[str, Any] = {
    "description": None, "mining_strategy": 0, "chunk_size": 0, "enable_iteration": True,
    "iteration_target": None, "map_target": None, "training_dataset_count_target": None,
    "is_example": False, "candidate_training_dataset_id": None, "is_deleted": False,
    "training_dataset_group_id": None, "mining_dataset_id": None, "validation_dataset_id": None,
    "initial_model_id": None, "initial_model_stage_id": None, "initial_training_dataset_id": None,
    "current_iteration": None, "training_dataset_group": None, "validation_dataset": None,
    "mining_dataset": None, "referenced_model_ids": [], "referenced_dataset_ids": [],
    "testing_dataset_ids": None, "dataset_count": 0, "processing_dataset_count": 0,
    "error_dataset_count": 0, "training_keywords": [], "current_iteration_id": None,
    "total_asset_count": 0,
}  # fmt: skip
TASK_FIELDS = (
    "name", "type", "project_id", "is_deleted", "create_datetime", "update_datetime", "id", "hash",
    "state", "error_code", "duration", "percent", "parameters", "config", "user_id",
    "last_message_datetime", "is_terminated", "result_type",
)  # fmt: skip
MODEL_FIELDS = (
    "hash", "source", "description", "map", "miou", "mask_ap", "keywords", "result_state",
    "model_group_id", "project_id", "task_id", "user_id", "is_deleted", "create_datetime",
    "update_datetime", "id",
)  # fmt: skip
GROUP_FIELDS = (
    "name", "project_id", "training_dataset_id", "is_deleted", "create_datetime",
    "update_datetime", "id",
)  # fmt: skip
STAGE_FIELDS = (
    "name", "map", "metrics", "timestamp", "model_id", "is_deleted", "create_datetime",
    "update_datetime", "id",
)  # fmt: skip
IMAGE_FIELDS = (
    "name", "state", "hash", "url", "description", "enable_livecode", "object_type",
    "is_deleted", "create_datetime", "update_datetime", "id", "is_shared",
)  # fmt: skip
# The query parameters of GET /api/v1/images/ are enums (FastAPI refuses other values):
# DockerImageState (mir's LogState), DockerImageType (mir's TaskType), ObjectType.
IMAGE_STATES = (PENDING, DONE, ERROR)
TRAINING, MINING, INFERENCE = 1, 2, 9
IMAGE_TYPES = (0, TRAINING, MINING, INFERENCE)
OBJECT_TYPES = (0, 1, 2, 3, 4)

Answer = tuple[int, Any]  # an HTTP status and a body: JSON, or a str sent as text/plain
Row = dict[str, Any]


class Refusal(Exception):
    """An ``APIError`` of the app: HTTP 200 with ``{code, message}``."""

    def __init__(self, code: int, message: str, errors: Any = None) -> None:
        super().__init__(message)
        self.body: Row = {"code": code, "message": message}
        if errors is not None:
            self.body["errors"] = errors


class Crash(Exception):
    """An exception the app does not catch: a plain-text 5xx answer."""

    def __init__(self, text: str, status: int = 500) -> None:
        super().__init__(text)
        self.answer: Answer = (status, text)


def invalid(location: str, message: str) -> Refusal:
    """What the app's validation handler answers: code 110102 with pydantic's error list."""
    errors = [{"loc": location.split("."), "msg": message, "type": "value_error"}]
    return Refusal(110102, "Invalid Request Format", errors)


def default_mir() -> Path:
    """The mir the other tests use: $YMIR_DROPBOX_MIR, else .venv-mir/bin/mir."""
    return Path(os.environ.get("YMIR_DROPBOX_MIR", ROOT / ".venv-mir" / "bin" / "mir"))


def utc_now(timespec: str = "seconds") -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec=timespec)


def seconds_between(start: str, end: str) -> int:
    return int((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds())


def task_hash(project_id: int) -> str:
    """``gen_task_hash``: t, sub-task 0, 00, user, project, 6 random hex digits, epoch seconds."""
    return f"t000{USER_ID:0>4}{project_id:0>6}{secrets.token_hex(3)}{int(time.time())}"


def same_group_name(first: str, second: str) -> bool:
    """``name == name`` in YMIR's MySQL: case-insensitive, trailing spaces ignored."""
    return mysql_equal(first, second)


def mysql_equal(first: str, second: str) -> bool:
    """``column == value`` in YMIR's MySQL (its collation): case-insensitive, trailing spaces
    ignored. A filter YMIR's code writes as ``==`` finds more than the exact string."""
    return first.rstrip(" ").casefold() == second.rstrip(" ").casefold()


def like(value: str, pattern: str) -> bool:
    """MySQL's case-insensitive ``LIKE``: YMIR's name filters search ``%name%``."""
    parts = (".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch("".join(parts), value, re.IGNORECASE | re.DOTALL) is not None


def success(result: Any) -> Row:
    return {"code": 0, "message": "success", "result": result}


def path_int(name: str, value: str) -> int:
    if not value.isdigit():
        raise invalid(f"path.{name}", "value is not a valid integer")
    return int(value)


def query_int(query: dict[str, str], name: str, default: int) -> int:
    value = query.get(name)
    if value is None:
        return default
    if not value.lstrip("-").isdigit():
        raise invalid(f"query.{name}", "value is not a valid integer")
    return int(value)


def query_enum(query: dict[str, str], name: str, allowed: Sequence[int]) -> int | None:
    """An enum query parameter as FastAPI reads it: absent is None, another value refused."""
    value = query.get(name)
    if value is None:
        return None
    if not value.lstrip("-").isdigit() or int(value) not in allowed:
        permitted = ", ".join(map(str, allowed))
        raise invalid(f"query.{name}", f"value is not a valid enumeration member; permitted: "
                                       f"{permitted}")  # fmt: skip
    return int(value)


def parse_model_import(body: bytes) -> Row:
    """``schemas.ModelImport`` as pydantic 1 reads it: ``int`` and ``str`` are coerced."""
    try:
        request = json.loads(body or b"null")
    except ValueError:
        raise invalid("body", "Expecting value") from None
    if not isinstance(request, dict):
        raise invalid("body", "value is not a valid dict")
    try:
        request["project_id"] = int(request["project_id"])
    except KeyError:
        raise invalid("body.project_id", "field required") from None
    except (TypeError, ValueError):
        raise invalid("body.project_id", "value is not a valid integer") from None
    if not isinstance(request.get("group_name"), str | int | float):
        raise invalid("body.group_name", "field required")
    request["group_name"] = str(request["group_name"])
    sources = ("input_model_id", "input_model_path", "input_url")
    if not any(request.get(source) for source in sources):
        raise invalid("body.import_type", "Missing input source")
    return request


def stage_metrics(stage: Row) -> Row:
    """A stored stage as ``ModelMeta.stages[name].ci_averaged_evaluation`` holds it."""
    return {
        "ap": stage["mAP"], "ar": stage["mAR"], "tp": stage["tp"], "fp": stage["fp"],
        "fn": stage["fn"], "pr_curve": [], "iou": stage["mIoU"], "acc": stage["mAcc"],
        "maskAP": stage["maskAP"], "boxAP": stage["boxAP"],
    }  # fmt: skip


class Store:
    """YMIR's database: tables of rows, written to ``state.json`` after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.data: Row = {"next_id": {}, "tokens": {}}
        if path.exists():
            self.data = json.loads(path.read_text())
        for table in ("projects", "tasks", "groups", "models", "stages", "images"):
            self.data.setdefault(table, [])

    def save(self) -> None:
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.data, indent=1))
        os.replace(temporary, self.path)

    def next_id(self, table: str) -> int:
        number: int = self.data["next_id"].get(table, 1)
        self.data["next_id"][table] = number + 1
        return number

    def insert(self, table: str, row: Row) -> Row:
        row["id"] = self.next_id(table)
        self.data[table].append(row)
        return row

    def get(self, table: str, row_id: int) -> Row | None:
        return next((row for row in self.data[table] if row["id"] == row_id), None)

    def rows(self, table: str, **equal: Any) -> list[Row]:
        return [row for row in self.data[table] if all(row[k] == v for k, v in equal.items())]


class Gateway:
    """traefik's rate limit in front of YMIR's API (a token bucket per client address)."""

    def __init__(self, per_second: float, burst: float) -> None:
        self.per_second, self.burst = per_second, burst
        self.tokens, self.at = burst, time.monotonic()
        self.lock = threading.Lock()

    def allow(self) -> bool:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.per_second)
            self.at = now
            if self.tokens < 1.0:
                return False
            self.tokens -= 1.0
            return True


@dataclass
class YmirStandin:
    """YMIR's web port for one user, whose ``projects`` (name, object type) the first start makes.

    ``mounts`` maps a folder YMIR's backend container sees (``/ymir-sharing``) to the host folder
    behind it: ``input_model_path`` is joined to ``nginx_data_path`` as YMIR does, then mapped.
    """

    workplace: Path
    port: int = 0
    user: str = "admin@example.com"
    password: str = "standin-password"
    mounts: Mapping[str, Path] = field(default_factory=dict)
    nginx_data_path: str = "/ymir-storage"
    projects: Sequence[tuple[str, int]] = (("detection", DETECTION),)
    import_delay: float = 0.5
    mir: Path | None = None
    token_seconds: float = 40 * 3600  # ACCESS_TOKEN_EXPIRE_MINUTES = 60 * 40
    verbose: bool = False
    # The gateway's APIRateLimiter: average requests a second and burst, per client address
    # (every client here is 127.0.0.1: they share one budget, as behind one address).
    rate_limit: tuple[float, float] | None = (3.0, 10.0)
    # The name check and the insert of an import are not one transaction in YMIR: two posts
    # of one new group name within this window both create a group.
    name_race_seconds: float = 0.3

    def __post_init__(self) -> None:
        self.workplace = self.workplace.absolute()
        self.workplace.mkdir(parents=True, exist_ok=True)
        self.sandbox = self.workplace / "sandbox"
        self.models_path = self.workplace / "ymir-models"
        self.store = Store(self.workplace / "state.json")
        self._server: ThreadingHTTPServer | None = None
        self._jobs: list[threading.Timer] = []
        self._mir_lock = threading.Lock()
        self._gateway = Gateway(*self.rate_limit) if self.rate_limit else None
        self.refused_by_gateway = 0
        self._routes: list[tuple[str, str, Callable[..., Row]]] = [
            ("GET", r"/api/v1/projects/", self.list_projects),
            ("GET", r"/api/v1/projects/([^/]+)", self.get_project),
            ("GET", r"/api/v1/model_groups/", self.list_groups),
            ("GET", r"/api/v1/models/", self.list_models),
            ("GET", r"/api/v1/models/([^/]+)", self.get_model),
            ("POST", r"/api/v1/models/importing", self.import_model),
            ("GET", r"/api/v1/tasks/([^/]+)", self.get_task),
            ("GET", r"/api/v1/images/", self.list_images),
        ]
        if not self.store.data["projects"]:
            for name, object_type in self.projects:
                self.create_project(name, object_type)

    # -- life cycle and test hooks

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> YmirStandin:
        """Listen (on the same port as before, after a stop), and run the waiting imports."""
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        serve = self._server.serve_forever
        threading.Thread(target=serve, kwargs={"poll_interval": 0.05}, daemon=True).start()
        with self.store.lock:
            for task in self.store.rows("tasks", job="waiting"):
                self._schedule(task["id"], task["job_due"] - time.time())
        return self

    def stop(self) -> None:
        """Stop answering; an import already running finishes, the waiting ones stay waiting."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for job in self._jobs:
            job.cancel()
            job.join()
        self._jobs.clear()

    def __enter__(self) -> YmirStandin:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def expire_tokens(self) -> None:
        """Every token issued so far expires now: the next call is refused with 110104."""
        with self.store.lock:
            self.store.data["tokens"] = {}
            self.store.save()

    def create_project(self, name: str, object_type: int = DETECTION) -> int:
        with self.store.lock:
            now = utc_now()
            self.store.next_id("tasks")  # the task that creates the project's repository
            project = self.store.insert(
                "projects",
                {"name": name, "object_type": object_type, "create_datetime": now,
                 "update_datetime": now},
            )  # fmt: skip
            project["hash"] = task_hash(project["id"])
            self.store.save()
            return int(project["id"])

    def register_image(
        self,
        url: str,
        state: int = DONE,
        types: Sequence[int] = (TRAINING, MINING, INFERENCE),
        object_type: int = DETECTION,
        *,
        name: str | None = None,
        is_deleted: bool = False,
    ) -> int:
        """A docker image as YMIR's Docker images page leaves it: ``state`` 1 pending (being
        pulled), 3 done, 4 error; one config for each task type it serves (1 training,
        2 mining, 9 inference). Its id."""
        with self.store.lock:
            now = utc_now()
            image = self.store.insert("images", {
                "name": name or url, "state": state,
                "hash": "sha256:" + hashlib.sha256(url.encode()).hexdigest(), "url": url,
                "description": None, "enable_livecode": False, "object_type": object_type,
                "is_deleted": is_deleted, "create_datetime": now, "update_datetime": now,
                "is_shared": False, "types": list(types),
            })  # fmt: skip
            self.store.save()
            return int(image["id"])

    # -- HTTP

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.let_through():
                    self.answer(standin.handle("GET", self.path, self.token(), b""))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.let_through():
                    self.answer(standin.handle("POST", self.path, self.token(), body))

            def let_through(self) -> bool:
                """The gateway in front: HTTP 429 (traefik's) beyond the rate limit."""
                gateway = standin._gateway
                if gateway is None or gateway.allow() or self.path.startswith("/standin/"):
                    return True
                standin.refused_by_gateway += 1
                self.answer((429, "Too Many Requests"), {"Retry-After": "1"})
                return False

            def token(self) -> str:
                return self.headers.get("Authorization") or ""

            def answer(self, answer: Answer, headers: Mapping[str, str] | None = None) -> None:
                status, body = answer
                is_text = isinstance(body, str)
                data = (body if is_text else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if is_text else "application/json")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                if standin.verbose:
                    super().log_message(format, *args)

        return Handler

    def handle(self, method: str, target: str, authorization: str, body: bytes) -> Answer:
        parts = urlsplit(target)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        if (method, parts.path) == ("POST", "/standin/expire-tokens"):
            self.expire_tokens()
            return 200, {"expired": True}
        if (method, parts.path) == ("POST", "/api/v1/auth/token"):
            return self.login(body)
        refused = self.check_token(authorization)
        if refused is not None:
            return refused
        try:
            with self.store.lock:
                for route_method, pattern, endpoint in self._routes:
                    matched = re.fullmatch(pattern, parts.path)
                    if matched and route_method == method:
                        return 200, endpoint(*matched.groups(), query=query, body=body)
            raise Refusal(110103, "Unknown Error", errors="Not Found")
        except Refusal as refusal:
            return 200, refusal.body
        except Crash as crash:
            return crash.answer

    # -- the auth service, behind the gateway: real HTTP statuses

    def login(self, body: bytes) -> Answer:
        form = {key: values[-1] for key, values in parse_qs(body.decode()).items()}
        missing = [name for name in ("username", "password") if name not in form]
        if missing:
            errors = [{"loc": ["body", name], "msg": "field required"} for name in missing]
            return 422, {"code": 110102, "message": "Invalid Request Format", "errors": errors}
        hashed = hashlib.sha1(self.password.encode()).hexdigest()  # what the web UI sends
        if form["username"] != self.user or form["password"] != hashed:
            return 400, {"code": 110107, "message": "Incorrect email or password"}
        token = secrets.token_urlsafe(24)
        with self.store.lock:
            self.store.data["tokens"][token] = time.time() + self.token_seconds
            self.store.save()
        payload = {"access_token": token, "token_type": "bearer"}
        return 200, {"code": 0, "message": "success", **payload, "result": payload}

    def check_token(self, authorization: str) -> Answer | None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return 401, {"errors": "Not authenticated", "code": 110103, "message": "Unknown Error"}
        with self.store.lock:
            expires = self.store.data["tokens"].get(token)
        if expires is None or expires < time.time():
            return 401, {"code": 110104, "message": "Invalid Token"}
        return None

    # -- the app's endpoints

    def list_projects(self, *, query: dict[str, str], body: bytes) -> Row:
        return self.page(self.store.data["projects"], query, self.render_project)

    def get_project(self, project_id: str, *, query: dict[str, str], body: bytes) -> Row:
        project = self.store.get("projects", path_int("project_id", project_id))
        if project is None:
            raise Refusal(111401, "Project Not Found")
        return success(self.render_project(project))

    def list_groups(self, *, query: dict[str, str], body: bytes) -> Row:
        groups = self.in_project(self.store.data["groups"], query)
        groups = [group for group in groups if any(m["is_visible"] for m in self.models_of(group))]
        if query.get("name"):
            groups = [group for group in groups if like(group["name"], f"%{query['name']}%")]
        return self.page(groups, query, self.render_group)

    def list_models(self, *, query: dict[str, str], body: bytes) -> Row:
        models = self.in_project(self.store.data["models"], query)
        if "group_id" in query:
            group_id = query_int(query, "group_id", 0)
            models = [model for model in models if model["model_group_id"] == group_id]
        return self.page(models, query, self.render_model)

    def get_model(self, model_id: str, *, query: dict[str, str], body: bytes) -> Row:
        model = self.store.get("models", path_int("model_id", model_id))
        if model is None:
            raise Refusal(110601, "Model Not Found")
        return success(self.render_model(model))

    def get_task(self, task_id: str, *, query: dict[str, str], body: bytes) -> Row:
        task = self.store.get("tasks", path_int("task_id", task_id))
        if task is None:
            raise Refusal(110701, "Task Not Found")
        shown = self.render_task(task)
        for model in self.store.rows("models", task_id=task["id"]):
            shown["result_model"] = {
                "id": model["id"], "model_group_id": model["model_group_id"],
                "result_state": model["result_state"], "result_type": RESULT_MODEL,
            }  # fmt: skip
        return success({key: value for key, value in shown.items() if value is not None})

    def list_images(self, *, query: dict[str, str], body: bytes) -> Row:
        """``crud.docker_image.get_multi_with_filter`` of 2.3.0: deleted images left out; a
        filter counts only when its value is truthy (``type=0`` filters nothing); ``name`` is
        ``LIKE '%name%'``, ``url`` is ``==`` in MySQL (so case-insensitive), ``type`` any config
        of that type, ``object_type`` the image's own column. The endpoint takes no ``limit``
        or ``offset``: every match comes back, newest first."""
        state = query_enum(query, "state", IMAGE_STATES)
        type_ = query_enum(query, "type", IMAGE_TYPES)
        object_type = query_enum(query, "object_type", OBJECT_TYPES)
        images = [image for image in self.store.data["images"] if not image["is_deleted"]]
        if query.get("name"):
            images = [image for image in images if like(image["name"], f"%{query['name']}%")]
        if state:
            images = [image for image in images if image["state"] == state]
        if query.get("url"):
            images = [image for image in images if mysql_equal(image["url"], query["url"])]
        if type_:
            images = [image for image in images if type_ in image["types"]]
        if object_type:
            images = [image for image in images if image["object_type"] == object_type]
        newest_first = sorted(images, key=lambda image: image["id"], reverse=True)
        items = [self.render_image(image) for image in newest_first]
        return success({"total": len(items), "items": items})

    def import_model(self, *, query: dict[str, str], body: bytes) -> Row:
        request = parse_model_import(body)
        project_id, group_name = request["project_id"], request["group_name"]
        groups = self.store.rows("groups", project_id=project_id, is_deleted=False)
        if any(same_group_name(group["name"], group_name) for group in groups):
            raise Refusal(111602, "Duplicated ModelGroup Name")
        # As in YMIR, the check and the insert are two steps: another post may pass between
        # (the store's lock let go whole, however deep this thread holds it).
        held = self.store.lock._release_save()  # type: ignore[attr-defined]
        try:
            time.sleep(self.name_race_seconds)
        finally:
            self.store.lock._acquire_restore(held)  # type: ignore[attr-defined]
        if request.get("input_model_id") or not request.get("input_model_path"):
            raise Crash("the stand-in imports from input_model_path only", 501)
        description = request.get("description")
        if len(group_name) > STRING_LEN_LIMIT or len(description or "") > STRING_LEN_LIMIT:
            raise Crash("Internal Server Error")  # MySQL refuses the row; nothing is created
        project = self.store.get("projects", project_id)
        now = utc_now()
        hash_ = task_hash(project_id)
        task = self.store.insert("tasks", {
            "name": hash_, "type": IMPORT_MODEL, "project_id": project_id, "is_deleted": False,
            "create_datetime": now, "update_datetime": now, "hash": hash_, "state": PENDING,
            "error_code": None, "duration": None, "percent": 0.0, "parameters": {},
            "config": {}, "user_id": USER_ID, "last_message_datetime": utc_now("microseconds"),
            "is_terminated": False, "result_type": RESULT_MODEL,
            "job": "waiting", "job_due": time.time() + self.import_delay,
            "input_model_path": request["input_model_path"],
        })  # fmt: skip
        group = self.store.insert("groups", {
            "name": group_name, "project_id": project_id, "training_dataset_id": None,
            "is_deleted": False, "create_datetime": now, "update_datetime": now,
        })  # fmt: skip
        model = self.store.insert("models", {
            "hash": None, "source": IMPORT_MODEL, "description": description, "map": None,
            "miou": None, "mask_ap": None, "keywords": [], "result_state": PROCESSING,
            "model_group_id": group["id"], "project_id": project_id, "task_id": task["id"],
            "user_id": USER_ID, "is_deleted": False, "create_datetime": now,
            "update_datetime": now, "version_num": 1, "is_visible": True,
            "recommended_stage": None,
            "object_type": project["object_type"] if project else DETECTION,
        })  # fmt: skip
        self.store.save()
        self._schedule(task["id"], self.import_delay)
        return success(self.render_model(model))

    # -- queries and rendering

    def models_of(self, group: Row) -> list[Row]:
        return self.store.rows("models", model_group_id=group["id"], is_deleted=False)

    def in_project(self, rows: list[Row], query: dict[str, str]) -> list[Row]:
        rows = [row for row in rows if not row["is_deleted"]]
        if "project_id" in query:
            project_id = query_int(query, "project_id", 0)
            rows = [row for row in rows if row["project_id"] == project_id]
        return rows

    def page(self, rows: list[Row], query: dict[str, str], render: Callable[[Row], Row]) -> Row:
        """Newest first, ``limit`` (20 unless asked) from ``offset``."""
        newest_first = sorted(rows, key=lambda row: row["id"], reverse=True)
        offset = query_int(query, "offset", 0)
        limit = query_int(query, "limit", DEFAULT_LIMIT)
        items = newest_first[offset : offset + limit] if limit else newest_first[offset:]
        return success({"total": len(rows), "items": [render(row) for row in items]})

    def render_project(self, project: Row) -> Row:
        states = [model["result_state"] for model in self.store.rows("models", **{
            "project_id": project["id"], "is_deleted": False})]  # fmt: skip
        return {
            "name": project["name"], **PROJECT_DEFAULTS, "object_type": project["object_type"],
            "id": project["id"], "create_datetime": project["create_datetime"],
            "update_datetime": project["update_datetime"], "model_count": len(states),
            "processing_model_count": states.count(PROCESSING),
            "error_model_count": states.count(FAILED),
        }  # fmt: skip

    def render_task(self, task: Row) -> Row:
        return {name: task[name] for name in TASK_FIELDS}

    def render_model(self, model: Row) -> Row:
        group = self.store.get("groups", model["model_group_id"])
        task = self.store.get("tasks", model["task_id"])
        assert group is not None and task is not None
        stages = self.store.rows("stages", model_id=model["id"])
        return {
            **{name: model[name] for name in MODEL_FIELDS},
            "name": f"{group['name']}_{model['version_num']}", "group_name": group["name"],
            "version_num": model["version_num"], "related_task": self.render_task(task),
            "is_visible": model["is_visible"],
            "related_stages": [{name: stage[name] for name in STAGE_FIELDS} for stage in stages],
            "recommended_stage": model["recommended_stage"], "object_type": model["object_type"],
            "url": f"/ymir-models/{model['hash']}" if model["hash"] else None,
        }  # fmt: skip

    def render_image(self, image: Row) -> Row:
        """``schemas.DockerImage``: its configs' ``config`` is JSON text in the database,
        unravelled into a mapping."""
        configs = [{"image_id": image["id"], "config": {}, "type": kind} for kind in image["types"]]
        return {**{name: image[name] for name in IMAGE_FIELDS}, "related": [], "configs": configs}

    def render_group(self, group: Row) -> Row:
        models = [self.render_model(model) for model in self.models_of(group)]
        return {
            **{name: group[name] for name in GROUP_FIELDS},
            "models": models, "is_visible": any(model["is_visible"] for model in models),
        }  # fmt: skip

    # -- the import: app background task, controller, mir, monitor and viewer

    def _schedule(self, task_id: int, delay: float) -> None:
        job = threading.Timer(max(delay, 0.0), self._run_import, args=(task_id,))
        job.daemon = True
        self._jobs.append(job)
        job.start()

    def _run_import(self, task_id: int) -> None:
        with self.store.lock:
            task = self.store.get("tasks", task_id)
            assert task is not None
            (model,) = self.store.rows("models", task_id=task_id)
            project = self.store.get("projects", task["project_id"])
            task["job"] = "started"  # killed from here on, the import is lost, as in YMIR
            self.store.save()
        if project is None:
            # The controller refuses with INVALID_MIR_ROOT; the app raises InvalidRepo, which its
            # background task does not catch: model and task stay as they are, forever.
            return
        package = self.host_path(os.path.join(self.nginx_data_path, task["input_model_path"]))
        if package is None or not package.is_file():
            # "file not exists" from the controller: the app sets the model to error and never
            # touches the task (pending, 0 %).
            with self.store.lock:
                self._finish_model(model, FAILED)
            return
        state, code = self._run_mir(project, task["hash"], package)
        found = self._model_info(project, task["hash"]) if state == DONE else None
        with self.store.lock:
            task.update(state=state, error_code=str(code) if code else None,
                        update_datetime=utc_now())  # fmt: skip
            task["duration"] = seconds_between(task["create_datetime"], task["update_datetime"])
            if state in (DONE, ERROR):
                task["percent"] = 1.0
                # The app's rule: ready iff the viewer has the model and its object type is the
                # project's, whatever the task's state.
                ready = found is not None and found["object_type"] == project["object_type"]
                self._finish_model(model, READY if ready else FAILED, found if ready else None)
            self.store.save()

    def host_path(self, container_path: str) -> Path | None:
        """The host file behind a path YMIR's backend container sees; None if not mounted."""
        normalized = os.path.normpath(container_path)
        for inside, outside in self.mounts.items():
            relative = os.path.relpath(normalized, inside)
            if not relative.startswith(".."):
                return Path(outside) / relative
        return None

    def _repository(self, project: Row) -> Path:
        """The project's mir repository, made as the controller makes it with the project.

        YMIR runs ``mir init`` when it creates the project; the stand-in waits for the first
        import, so that tests which never import need no mir.
        """
        user_root = self.sandbox / f"{USER_ID:0>4}"
        repository = user_root / f"{project['id']:0>6}"
        if not (repository / ".mir").is_dir():
            (repository / ".mir").mkdir(parents=True)
            empty_rev = f"{project['hash']}@{project['hash']}"
            labels = user_root / "labels.yaml"
            init = self._mir("init", "--root", repository, "--user-label-file", labels,
                             "--with-empty-rev", empty_rev)  # fmt: skip
            if init.returncode != 0:
                raise RuntimeError(f"mir init failed:\n{init.stdout}{init.stderr}")
        return repository

    def _run_mir(self, project: Row, task_hash: str, package: Path) -> tuple[int, int]:
        """``TaskImportModelInvoker``'s command; the state and code mir wrote in monitor.txt."""
        with self._mir_lock:
            repository = self._repository(project)
            work_dir = self.sandbox / "work_dir" / "TaskTypeImportModel" / task_hash
            sub_task_dir = work_dir / "sub_task" / task_hash
            monitor = sub_task_dir / "out" / "monitor.txt"
            monitor.parent.mkdir(parents=True, exist_ok=True)
            # The controller registers the sub-task as running before it starts mir.
            monitor.write_text(f"{task_hash}\t{time.time():.6f}\t0.0\t{RUNNING}")
            self._mir("models", "--root", repository, "--package-path", package,
                      "-w", sub_task_dir, "--dst-rev", f"{task_hash}@{task_hash}",
                      "--model-location", self.models_path)  # fmt: skip
        fields = monitor.read_text().splitlines()[0].split("\t")
        return int(fields[3]), int(fields[4]) if len(fields) > 4 else 0

    def _mir(self, *arguments: str | Path) -> subprocess.CompletedProcess[str]:
        mir = self.mir or default_mir()
        if not mir.exists():
            raise RuntimeError(f"the stand-in needs the real mir at {mir}: run .ci/install-mir")
        completed = subprocess.run(
            [str(mir), *map(str, arguments)],
            capture_output=True,
            text=True,
            env={**os.environ, **GIT_IDENTITY},
            check=False,
        )
        if self.verbose:
            sys.stderr.write(completed.stdout + completed.stderr)
        return completed

    def _model_info(self, project: Row, task_hash: str) -> Row | None:
        """What YMIR's viewer answers for the task's branch: the model mir committed, or None."""
        repository = self.sandbox / f"{USER_ID:0>4}" / f"{project['id']:0>6}"
        tag = f"refs/tags/{task_hash}@{task_hash}"
        subject = subprocess.run(
            ["git", "-C", str(repository), "log", "-1", "--format=%s", tag],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        imported = IMPORT_COMMIT.search(subject)
        if imported is None:
            return None
        with tarfile.open(self.models_path / imported.group(1)) as tar:
            member = tar.extractfile("ymir-info.yaml")
            assert member is not None
            stored = yaml.safe_load(member.read())
        best = stored["stages"][stored["best_stage_name"]]
        return {
            "hash": imported.group(1), "map": best["mAP"], "miou": best["mIoU"],
            "mask_ap": best["maskAP"], "object_type": stored["object_type"],
            "executor_config": stored["executor_config"],
            "best_stage_name": stored["best_stage_name"], "stages": stored["stages"],
        }  # fmt: skip

    def _finish_model(self, model: Row, state: int, found: Row | None = None) -> None:
        """``crud.model.finish``, then ``create_model_stages`` for a ready model."""
        model.update(result_state=state, update_datetime=utc_now())
        if found is not None:
            class_names = found["executor_config"].get("class_names") or []
            model.update(hash=found["hash"], map=found["map"], miou=found["miou"],
                         mask_ap=found["mask_ap"], keywords=class_names)  # fmt: skip
            task = self.store.get("tasks", model["task_id"])
            assert task is not None
            task["config"] = found["executor_config"]
            task["parameters"] = {"docker_image_config": json.dumps(found["executor_config"])}
            for name, stored in found["stages"].items():
                metrics = stage_metrics(stored)
                stage = self.store.insert("stages", {
                    "name": name, "map": metrics["ap"], "metrics": metrics,
                    "timestamp": stored["timestamp"], "model_id": model["id"],
                    "is_deleted": False, "create_datetime": model["update_datetime"],
                    "update_datetime": model["update_datetime"],
                })  # fmt: skip
                if name == found["best_stage_name"]:
                    model["recommended_stage"] = stage["id"]
        self.store.save()


# -- as a process ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A stand-in for YMIR 2.3.0's web backend.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workplace", type=Path, required=True)
    parser.add_argument("--user", default="admin@example.com")
    parser.add_argument("--password", default="standin-password")
    parser.add_argument(
        "--mount",
        action="append",
        default=[],
        metavar="CONTAINER=HOST",
        help="a folder YMIR's container sees, and the host folder behind it",
    )
    parser.add_argument(
        "--project",
        action="append",
        default=[],
        metavar="NAME[:OBJECT_TYPE]",
        help="a project the first start makes (default: one detection project)",
    )
    parser.add_argument("--import-delay", type=float, default=0.5)
    parser.add_argument("--mir", type=Path, default=None)
    parser.add_argument("--verbose", action="store_true")
    arguments = parser.parse_args(argv)

    mounts = {inside: Path(outside) for inside, _, outside in
              (mount.partition("=") for mount in arguments.mount)}  # fmt: skip
    projects = [(name, int(kind or DETECTION)) for name, _, kind in
                (spec.partition(":") for spec in arguments.project)]  # fmt: skip
    standin = YmirStandin(
        arguments.workplace, arguments.port, arguments.user, arguments.password, mounts,
        projects=projects or [("detection", DETECTION)], import_delay=arguments.import_delay,
        mir=arguments.mir, verbose=arguments.verbose,
    )  # fmt: skip
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    standin.start()
    print(f"listening on {standin.url}", flush=True)
    stopping.wait()
    standin.stop()
    return 0


@dataclass
class StandinProcess:
    """The stand-in as a child process, to kill (YMIR down) and start again (same port)."""

    arguments: Sequence[str]
    port: int = 0
    process: subprocess.Popen[str] | None = None

    def start(self) -> StandinProcess:
        command = [sys.executable, __file__, "--port", str(self.port), *self.arguments]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # "listening on URL", or "" if it died
        if not line.startswith("listening on "):
            self.kill()
            raise RuntimeError("the stand-in did not start: see its stderr above")
        self.port = int(line.rsplit(":", 1)[1])
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None

    def __enter__(self) -> StandinProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.kill()


if __name__ == "__main__":
    sys.exit(main())
