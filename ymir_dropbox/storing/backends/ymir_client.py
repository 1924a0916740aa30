"""A small client for YMIR 2.3.0's web backend: log in, check a project, import a model, poll it.

Only what importing needs, with YMIR's own rules (release-2.3.0, ``ymir/backend/src``): the auth
service answers with real HTTP statuses, the app answers its errors with HTTP 200 and a non-zero
``code``; a token YMIR no longer accepts (110104, or 110112 after an upgrade) is replaced by one
new login and the call repeated once. Every failure is a :class:`YmirError`; its subclasses say
whether trying again later can help (:class:`YmirUnavailable`) or not (:class:`YmirRefused`).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar

from ymir_dropbox.core.errors import DropboxError

TEXT_LIMIT = 100  # YMIR stores names and descriptions as VARCHAR(100)
PAGE_SIZE = 100
LOGIN_PATH = "/api/v1/auth/token"
RELOGIN_CODES = frozenset({110104, 110112})  # Invalid Token, System Version Conflict

Parsed = TypeVar("Parsed")


class YmirError(DropboxError):
    """A call to YMIR failed. ``endpoint`` is "METHOD /path"; ``ymir_code`` is YMIR's code."""

    code = "ymir.error"
    passing = False  # True when the same call may succeed later

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        ymir_code: int | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.ymir_code = ymir_code
        self.http_status = http_status


class YmirUnavailable(YmirError):
    """Passing: YMIR unreachable, too slow, overloaded (HTTP 5xx or 429)."""

    code = "ymir.unavailable"
    passing = True


class YmirTokenRefused(YmirUnavailable):
    """Passing: YMIR refused a token it had just issued (its auth service is out of step)."""

    code = "ymir.token_refused"


class YmirRefused(YmirError):
    """Permanent: YMIR understood the call and said no; repeating it will not help."""

    code = "ymir.refused"


class YmirWrongCredentials(YmirRefused):
    code = "ymir.wrong_credentials"


class YmirProjectNotFound(YmirRefused):
    code = "ymir.project_not_found"


class YmirDuplicateGroupName(YmirRefused):
    """The project already has a model group of that name: import under another name."""

    code = "ymir.duplicate_group_name"


class YmirTextTooLong(YmirRefused):
    """A group name or description over 100 characters: YMIR answers HTTP 500 on every try."""

    code = "ymir.text_too_long"


class YmirUnknownAnswer(YmirRefused):
    """A code this client does not know, or an answer that is not YMIR's JSON."""

    code = "ymir.unknown_answer"


# YMIR's codes (common/id_definition/error_codes.py): the class to raise, and what it means.
REFUSALS: dict[int, tuple[type[YmirRefused], str]] = {
    110101: (YmirRefused, "YMIR's general API error"),
    110102: (YmirRefused, "YMIR found the request malformed"),
    110103: (YmirRefused, "the path is unknown to YMIR, or the token did not reach it"),
    110104: (YmirRefused, "YMIR no longer accepts the token"),
    110107: (YmirWrongCredentials, "the user or the password is wrong"),
    110112: (YmirRefused, "the token comes from another YMIR version"),
    110206: (YmirRefused, "the user is inactive"),
    110601: (YmirRefused, "YMIR has no such model"),
    110701: (YmirRefused, "YMIR has no such task"),
    111401: (YmirProjectNotFound, "YMIR has no such project for this user"),
    111602: (
        YmirDuplicateGroupName,
        "the project already has a model group of that name (YMIR ignores case and trailing "
        "spaces): import under another name",
    ),
    111801: (YmirRefused, "YMIR failed to import the model"),
}


class ResultState(IntEnum):
    PROCESSING = 0
    READY = 1
    ERROR = 2


class ImageState(IntEnum):
    """A docker image in YMIR (``DockerImageState``, mir's LogState)."""

    PENDING = 1  # being pulled
    DONE = 3  # usable
    ERROR = 4  # the pull failed


class ImageTask(IntEnum):
    """What a docker image serves: the ``type`` of its configs (mir's ``TaskType``)."""

    TRAINING = 1
    MINING = 2
    INFERENCE = 9


@dataclass(frozen=True, slots=True)
class Project:
    id: int
    name: str
    object_type: int  # 2 is detection


@dataclass(frozen=True, slots=True)
class ImportStarted:
    """YMIR's immediate answer to an import: the rows it created, the model still processing."""

    model_id: int
    task_id: int
    group_id: int
    group_name: str
    model_name: str


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    map: float
    tp: int
    fp: int
    fn: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class ModelState:
    """A model as YMIR shows it. ``error_code`` is the task's (e.g. 169999: mir refused it)."""

    model_id: int
    result_state: ResultState
    name: str
    group_id: int
    group_name: str
    hash: str | None
    map: float | None
    keywords: tuple[str, ...]
    stages: tuple[Stage, ...]
    recommended_stage: str | None
    task_id: int | None
    task_state: int | None  # 1 pending, 2 running, 3 done, 4 error, 100 terminated
    error_code: int | None
    description: str = ""


@dataclass(frozen=True, slots=True)
class DockerImage:
    """A docker image registered in YMIR (its Docker images page). ``state`` and ``tasks`` are
    kept as YMIR said them (:class:`ImageState`, :class:`ImageTask` name the known ones)."""

    id: int
    name: str
    url: str  # the image YMIR pulled, e.g. "youdaoyzbx/ymir-executor:ymir2.1.0-yolov5-v7.0-tmi"
    state: int
    tasks: tuple[int, ...]
    object_type: int
    is_deleted: bool


def same_group_name(first: str, second: str) -> bool:
    """YMIR's comparison of group names: case-insensitive, trailing spaces ignored."""
    return first.rstrip(" ").casefold() == second.rstrip(" ").casefold()


def _project(item: Any) -> Project:
    return Project(int(item["id"]), str(item["name"]), int(item["object_type"]))


def _stage(item: Any) -> Stage:
    metrics = item.get("metrics") or {}
    return Stage(
        name=str(item["name"]),
        map=float(item.get("map") or 0.0),
        tp=int(metrics.get("tp", 0)),
        fp=int(metrics.get("fp", 0)),
        fn=int(metrics.get("fn", 0)),
        timestamp=int(item["timestamp"]),
    )


def _optional(kind: Callable[[Any], Parsed], value: Any) -> Parsed | None:
    return None if value is None else kind(value)


def _model(item: Any) -> ModelState:
    task = item.get("related_task") or {}
    stages = [(stage.get("id"), _stage(stage)) for stage in item.get("related_stages") or []]
    recommended = item.get("recommended_stage")
    return ModelState(
        model_id=int(item["id"]),
        result_state=ResultState(int(item["result_state"])),
        name=str(item["name"]),
        group_id=int(item["model_group_id"]),
        group_name=str(item["group_name"]),
        hash=_optional(str, item.get("hash")),
        map=_optional(float, item.get("map")),
        keywords=tuple(str(keyword) for keyword in item.get("keywords") or ()),
        stages=tuple(stage for _, stage in stages),
        recommended_stage=next((s.name for i, s in stages if i == recommended), None),
        task_id=_optional(int, task.get("id")),
        task_state=_optional(int, task.get("state")),
        error_code=_optional(int, task.get("error_code")),
        description=str(item.get("description") or ""),
    )


def _image(item: Any) -> DockerImage:
    return DockerImage(
        id=int(item["id"]),
        name=str(item["name"]),
        url=str(item["url"]),
        state=int(item["state"]),
        tasks=tuple(sorted({int(config["type"]) for config in item.get("configs") or ()})),
        object_type=int(item.get("object_type") or 0),
        is_deleted=bool(item.get("is_deleted")),
    )


def _import_started(item: Any) -> ImportStarted:
    return ImportStarted(
        model_id=int(item["id"]),
        task_id=int(item["task_id"]),
        group_id=int(item["model_group_id"]),
        group_name=str(item["group_name"]),
        model_name=str(item["name"]),
    )


class Pace:
    """One budget of requests for the whole process: YMIR's gateway allows every client
    address 3 requests a second on average, in bursts of 10, and answers HTTP 429 beyond.
    Every client of this process (every worker's) takes a token before each request: a
    token bucket a little slower and smaller than the gateway's, so the process stays
    within it even with a clock a little off."""

    def __init__(
        self,
        per_second: float = 2.5,
        burst: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.per_second = per_second
        self.burst = burst
        self.clock = clock
        self.sleep = sleep
        self._tokens = burst
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> None:
        """Wait for a token; requests go out in the order they asked."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
            self._at = now
            self._tokens -= 1.0
            wait = -self._tokens / self.per_second if self._tokens < 0 else 0.0
            if wait > 0:
                self.sleep(wait)

    def hold(self, seconds: float) -> None:
        """The gateway said to wait (``Retry-After``): nobody of this process asks before."""
        with self._lock:
            self._tokens = min(self._tokens, 0.0) - seconds * self.per_second


PACE = Pace()


class _SameOrigin(urllib.request.HTTPRedirectHandler):
    """Redirects are followed only to YMIR itself (scheme, host and port): urllib would send
    the token (``Authorization``) to wherever a redirect points."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        before, after = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(newurl)
        if (before.scheme, before.netloc) != (after.scheme, after.netloc):
            return None  # the 3xx itself is the answer: refused, not followed
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_SameOrigin)
MAX_RETRY_AFTER_SECONDS = 30.0
RETRIES_AFTER_429 = 3


class YmirClient:
    """YMIR's web port (the gateway, e.g. ``http://ymir-host:12001``) as one user.

    ``timeout`` bounds each HTTP request, in seconds. Requests are paced by the process's one
    :data:`PACE` (the gateway's rate limit is per client address), and an HTTP 429 is waited
    out as its ``Retry-After`` says, a few times, before it counts as YMIR unavailable.
    """

    def __init__(self, url: str, user: str, password: str, timeout: float = 30.0) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"YMIR's URL must start with http:// or https://, not {url!r}")
        self.url = url.rstrip("/")
        self.user = user
        self.password = password
        self.timeout = timeout
        self._token: str | None = None

    # -- the calls

    def login(self) -> None:
        """Get a token; the web UI sends the hex SHA-1 of the password, so does this client."""
        hashed = hashlib.sha1(self.password.encode()).hexdigest()  # noqa: S324 - YMIR's protocol
        form = urllib.parse.urlencode({"username": self.user, "password": hashed}).encode()
        answer = self._request("POST", LOGIN_PATH, None, form, "application/x-www-form-urlencoded")
        self._token = _parse(f"POST {LOGIN_PATH}", lambda body: str(body["access_token"]), answer)

    def project(self, project_id: int) -> Project:
        path = f"/api/v1/projects/{project_id}"
        return _parse(f"GET {path}", _project, self._call("GET", path))

    def projects(self) -> list[Project]:
        path = "/api/v1/projects/"
        return [_parse(f"GET {path}", _project, item) for item in self._pages(path, {})]

    def find_group(self, project_id: int, name: str) -> int | None:
        """The id of the project's model group that YMIR takes for ``name``, or None.

        YMIR lists only groups with a visible model; a group whose models are all hidden still
        takes its name.
        """
        path = "/api/v1/model_groups/"
        query = {"project_id": project_id, "name": name.rstrip(" ")}  # YMIR: LIKE '%name%'
        for item in self._pages(path, query):
            group_id, found = _parse(f"GET {path}", lambda i: (int(i["id"]), str(i["name"])), item)
            if same_group_name(found, name):
                return group_id
        return None

    def images(self, url: str | None = None) -> list[DockerImage]:
        """The docker images YMIR lists (it leaves deleted ones out), newest first; with
        ``url``, those YMIR's filter matches (see :meth:`image`)."""
        path = "/api/v1/images/"
        query = {"url": url} if url else {}
        return [_parse(f"GET {path}", _image, item) for item in self._pages(path, query)]

    def image(self, url: str) -> DockerImage | None:
        """The image registered under exactly ``url``, not deleted; None if YMIR has none.

        YMIR filters ``url == ?`` in MySQL, whose collation ignores case (and trailing
        spaces): ``foo:V1`` finds ``foo:v1``, another image. The match here is exact.
        """
        return next(
            (image for image in self.images(url) if image.url == url and not image.is_deleted),
            None,
        )

    def import_model(
        self,
        project_id: int,
        group_name: str,
        description: str | None,
        input_model_path: str,
    ) -> ImportStarted:
        """Ask YMIR to import the package at ``input_model_path``, as its backend sees it.

        A relative path is under YMIR's ``NGINX_DATA_PATH`` (``/ymir-storage``). The model is
        named ``<group_name>_1``; follow it with :meth:`model`.
        """
        path = "/api/v1/models/importing"
        for field, text in (("group_name", group_name), ("description", description or "")):
            if len(text) > TEXT_LIMIT:
                raise YmirTextTooLong(
                    f"The {field} is {len(text)} characters long; YMIR stores at most "
                    f"{TEXT_LIMIT} and answers POST {path} with HTTP 500 (no YMIR code) to a "
                    "longer one: shorten it.",
                    endpoint=f"POST {path}",
                )
        payload = {
            "project_id": project_id,
            "group_name": group_name,
            "description": description,
            "input_model_path": input_model_path,
        }
        result = self._call("POST", path, payload=payload)
        return _parse(f"POST {path}", _import_started, result)

    def model(self, model_id: int) -> ModelState:
        path = f"/api/v1/models/{model_id}"
        return _parse(f"GET {path}", _model, self._call("GET", path))

    def models_of_group(self, project_id: int, group_id: int) -> list[ModelState]:
        """The group's models, newest first (an imported group has one)."""
        path = "/api/v1/models/"
        query = {"project_id": project_id, "group_id": group_id}
        return [_parse(f"GET {path}", _model, item) for item in self._pages(path, query)]

    # -- the plumbing

    def _pages(self, path: str, query: Mapping[str, object]) -> Iterator[Any]:
        """Every item of a list endpoint, page after page (YMIR gives 20 unless asked)."""
        offset = 0
        while True:
            page = {**query, "limit": PAGE_SIZE, "offset": offset}
            result = self._call("GET", path, query=page)
            items, total = _parse(
                f"GET {path}", lambda r: (list(r["items"]), int(r["total"])), result
            )
            yield from items
            offset += len(items)
            if not items or offset >= total:
                return

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, object] | None = None,
        payload: object = None,
    ) -> Any:
        """The ``result`` of one call with the token; on 110104 or 110112, a new login, once."""
        if self._token is None:
            self.login()
        url = f"{path}?{urllib.parse.urlencode(query)}" if query else path
        body = None if payload is None else json.dumps(payload).encode()
        content_type = None if payload is None else "application/json"
        try:
            answer = self._request(method, url, self._token, body, content_type)
        except YmirRefused as refused:
            if refused.ymir_code not in RELOGIN_CODES:
                raise
            self.login()
            answer = self._repeat(method, url, body, content_type)
        return _parse(f"{method} {path}", lambda a: a["result"], answer)

    def _repeat(self, method: str, url: str, body: bytes | None, content_type: str | None) -> Any:
        try:
            return self._request(method, url, self._token, body, content_type)
        except YmirRefused as refused:
            if refused.ymir_code not in RELOGIN_CODES:
                raise
            raise YmirTokenRefused(
                f"YMIR refused a token it had just issued: {refused.endpoint} answered code "
                f"{refused.ymir_code} again after a new login.",
                endpoint=refused.endpoint,
                ymir_code=refused.ymir_code,
                http_status=refused.http_status,
            ) from None

    def _request(
        self,
        method: str,
        target: str,
        token: str | None,
        body: bytes | None,
        content_type: str | None,
    ) -> Any:
        """Send one request; YMIR's JSON answer when its code is 0, else the matching error."""
        endpoint = f"{method} {urllib.parse.urlsplit(target).path}"
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if content_type is not None:
            headers["Content-Type"] = content_type
        for _ in range(RETRIES_AFTER_429):
            status, data, retry_after = self._send(endpoint, method, target, headers, body)
            if status != 429:
                break
            PACE.hold(retry_after)
        return _interpret(self.url, endpoint, status, data)

    def _send(
        self,
        endpoint: str,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | None,
    ) -> tuple[int, bytes, float]:
        """One request, paced: its status, body and (for a 429) how long to wait."""
        PACE.take()
        # The scheme is http or https: __init__ checks it.
        request = urllib.request.Request(self.url + target, body, headers, method=method)  # noqa: S310
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                return response.status, response.read(), 0.0
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read(), _retry_after(error.headers.get("Retry-After"))
        except (OSError, http.client.HTTPException) as error:  # URLError and timeouts included
            raise self._unreachable(endpoint, error) from None

    def _unreachable(self, endpoint: str, error: Exception) -> YmirUnavailable:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        if isinstance(reason, TimeoutError):
            what = f"did not answer within {self.timeout:g} s"
        else:
            what = f"could not be reached ({str(reason) or type(reason).__name__})"
        return YmirUnavailable(
            f"YMIR at {self.url} {what} on {endpoint}, so there is no YMIR code.",
            endpoint=endpoint,
        )


def _parse(endpoint: str, parse: Callable[[Any], Parsed], value: Any) -> Parsed:
    """``parse(value)``, or YmirUnknownAnswer if the answer does not have YMIR's shape."""
    try:
        return parse(value)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise YmirUnknownAnswer(
            f"YMIR's answer to {endpoint} does not have the expected shape ({error!r}).",
            endpoint=endpoint,
        ) from None


def _interpret(url: str, endpoint: str, status: int, data: bytes) -> Any:
    """YMIR's JSON answer when its code is 0, else the matching error."""
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    code = answer.get("code") if isinstance(answer, dict) else None
    known = code if isinstance(code, int) else None
    if status >= 500 or status == 429:
        raise YmirUnavailable(
            f"YMIR answered {endpoint} with HTTP {status} "
            f"({'code ' + str(known) if known is not None else 'no YMIR code'}); "
            "it may work later.",
            endpoint=endpoint,
            ymir_code=known,
            http_status=status,
        )
    if known is None:
        raise YmirUnknownAnswer(
            f"YMIR answered {endpoint} with HTTP {status} and no YMIR code in its body: "
            f"is {url} YMIR's web port?",
            endpoint=endpoint,
            http_status=status,
        )
    if known == 0 and status < 300:
        return answer
    kind, meaning = REFUSALS.get(known, (YmirUnknownAnswer, "a code this client does not know"))
    message = answer.get("message") if isinstance(answer, dict) else None
    raise kind(
        f"YMIR refused {endpoint} with code {known} ({message or 'no message'}): {meaning}.",
        endpoint=endpoint,
        ymir_code=known,
        http_status=status,
    )


def _retry_after(value: str | None) -> float:
    """Seconds from a ``Retry-After`` header (seconds only; a date or nothing: one second)."""
    try:
        seconds = float(value) if value else 1.0
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)
