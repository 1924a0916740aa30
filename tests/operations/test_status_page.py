"""The metrics listener: ``/metrics`` for Prometheus, ``/`` the status page, ``/status.json``;
the page escapes everything an uploader controls, checked in a real headless browser."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from ymir_dropbox.core.errors import DropboxError
from ymir_dropbox.operations.listener import Listener
from ymir_dropbox.operations.metrics import Metrics
from ymir_dropbox.operations.status_page import render_page
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.storing.attempts import failure_reason

HOSTILE = "<script>alert(1)</script>.tar.gz"
# Each one, if it ever ran, would leave a mark on the page the browser test looks for.
HOSTILE_IMG = '<img src=x onerror="document.body.dataset.pwned=1">.tgz'
HOSTILE_REASON = "info.bad_file_name [stages]: <script>document.title='pwned'</script>"
HOSTILE_STEP = "<b onmouseover=alert(3)>validating</b>"


def status(percent: float = 42.0) -> dict[str, Any]:
    """A status object as ``ymir-dropbox status --json`` gives it, with hostile names."""
    return {
        "daemon_running": True,
        "inbox": "/srv/ymir-dropbox/inbox",
        "waiting": 2,
        "waiting_packages": [HOSTILE_IMG, "team-a/plain.tar.gz"],
        "processing": 1,
        "processing_packages": [HOSTILE],
        "today": {"imported": 3, "duplicate": 1, "failed": 1},
        "total": {"imported": 30, "duplicate": 2, "failed": 4},
        "last_import": None,
        "last_error": None,
        "in_flight": [
            {"package": HOSTILE, "step": HOSTILE_STEP, "percent": percent, "elapsed_s": 75.5}
        ],
        "recent_imports": [
            {
                "package": "yolo-v5.tar.gz",
                "finished_at": "2024-06-01T12:03:04.123456Z",
                "model_hash": "c" * 40,
                "best_stage_name": "epoch_10",
                "mAP": 0.73,
            }
        ],
        "recent_failures": [
            {
                "package": HOSTILE_IMG,
                "finished_at": "2024-06-01T12:00:00.000000Z",
                "reason": HOSTILE_REASON,
            }
        ],
        "disk": {"inbox": 2048, "processing": 0, "done": 5 * 1024**3, "failed": 10, "models": 0},
    }


# -- the page (pure) --------------------------------------------------------------------------


class Page(HTMLParser):
    """What a page shows: the text of each ``class`` of element, progress values, the
    elements it holds."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.texts: dict[str, list[str]] = {}
        self.progress: list[str | None] = []
        self.tags: list[str] = []
        self.body: dict[str, str | None] = {}
        self.title = ""
        self._open: list[tuple[str, str]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append(tag)
        if tag == "progress":
            self.progress.append(attributes.get("value"))
        if tag == "body":
            self.body = attributes
        if tag not in ("meta", "progress", "br", "img"):
            self._open.append((tag, attributes.get("class") or ""))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self._open:
            return
        tag, kind = self._open[-1]
        if tag == "title":
            self.title += data
        if kind:
            self.texts.setdefault(kind, []).append(data)


def test_every_uploader_value_is_shown_as_text() -> None:
    page = Page(render_page(status()))

    in_flight, waiting, imported, failed = HOSTILE, HOSTILE_IMG, "yolo-v5.tar.gz", HOSTILE_IMG
    shown = [in_flight, waiting, "team-a/plain.tar.gz", imported, failed]
    assert page.texts["name"] == shown
    assert page.texts["reason"] == [HOSTILE_REASON]
    assert HOSTILE_STEP in page.texts["meta"][1]
    assert page.tags.count("script") == 1  # the page's own
    assert "img" not in page.tags and "b" in page.tags  # <b> of the tiles only
    assert page.tags.count("b") == 5


def test_the_page_reads_well_on_a_phone() -> None:
    html = render_page(status())

    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "overflow-wrap: anywhere" in html  # long package names wrap


@pytest.mark.parametrize(
    ("percent", "shown"),
    [(42.4, "42"), (150, "100"), (-3, "0"), (None, None)],
    ids=["percent", "capped", "floored", "unknown-is-indeterminate"],
)
def test_progress_bars(percent: float | None, shown: str | None) -> None:
    page = Page(render_page(status(percent)))  # type: ignore[arg-type]

    assert page.progress == [shown]


def test_a_status_without_the_new_keys_still_renders() -> None:
    """Today's ``collect_status`` object: no in_flight, recent_* or disk yet."""
    old = {
        "daemon_running": False,
        "inbox": "/srv/inbox",
        "waiting": 0,
        "waiting_packages": [],
        "processing": 1,
        "processing_packages": ["a.tar.gz"],
        "today": {},
        "total": {},
        "last_import": {"package": "b.tar.gz", "finished_at": "2024-06-01T00:00:00.0Z"},
        "last_error": {
            "package": "c.tar.gz",
            "errors": [{"code": "info.missing", "field": "", "message": "no ymir-info.yaml"}],
        },
    }

    page = Page(render_page(old))

    assert page.texts["name"] == ["a.tar.gz", "b.tar.gz", "c.tar.gz"]
    assert page.texts["reason"] == ["info.missing: no ymir-info.yaml"]
    assert page.texts["down"] == ["daemon not running"]


def test_a_failure_reason_is_its_first_problem_and_a_count() -> None:
    problems = (
        Problem("info.missing_field", "stages.s1.mAP", "mAP is required"),
        Problem("package.missing_file", "", "a.pt is not in the archive"),
    )

    assert failure_reason(problems) == (
        "info.missing_field [stages.s1.mAP]: mAP is required (and 1 more)"
    )
    assert failure_reason(problems[1:]) == "package.missing_file: a.pt is not in the archive"
    assert failure_reason(()) == ""


# -- the listener over real HTTP --------------------------------------------------------------


def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    served = Metrics("127.0.0.1:0", status_source=status, disk_source=lambda: status()["disk"])
    yield served
    served.close()


def base_url(metrics: Metrics) -> str:
    assert metrics.address is not None
    host, port = metrics.address
    return f"http://{host}:{port}"


def test_one_port_serves_the_page_the_status_and_the_metrics(metrics: Metrics) -> None:
    metrics.record("imported", 1.5, 2048, 1_700_000_000.0)
    url = base_url(metrics)

    code, headers, page = fetch(url + "/")
    assert code == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src 'sha256-" in headers["Content-Security-Policy"]
    assert Page(page.decode()).texts["reason"] == [HOSTILE_REASON]

    code, headers, document = fetch(url + "/status.json")
    assert code == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(document) == status()

    code, headers, exposition = fetch(url + "/metrics")
    text = exposition.decode()
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 'ymir_dropbox_packages_total{status="imported"} 1.0' in text
    assert 'ymir_dropbox_folder_bytes{folder="done"} 5.36870912e+09' in text
    assert 'ymir_dropbox_folder_bytes{folder="inbox"} 2048.0' in text


def test_head_unknown_paths_and_writes(metrics: Metrics) -> None:
    url = base_url(metrics)

    assert fetch(url + "/status.json", "HEAD")[0] == 200
    assert fetch(url + "/status.json?fresh=1")[0] == 200
    assert fetch(url + "/etc/passwd")[0] == 404
    assert fetch(url + "/", "POST")[0] == 405  # GET and HEAD only


def test_a_failing_status_source_answers_503_and_the_listener_goes_on() -> None:
    answers = iter([RuntimeError("ledger locked"), status()])

    def flaky() -> dict[str, Any]:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    listener = Listener(
        "127.0.0.1", 0, metrics_text=lambda accept: (b"", "text/plain"), status_source=flaky,
        status_max_age=0,
    )  # fmt: skip
    listener.start()
    try:
        url = f"http://127.0.0.1:{listener.address[1]}"
        assert fetch(url + "/status.json")[0] == 503
        assert fetch(url + "/status.json")[0] == 200
    finally:
        listener.close()


def test_without_a_status_source_only_metrics_are_served() -> None:
    served = Metrics("127.0.0.1:0")
    try:
        url = base_url(served)
        assert fetch(url + "/metrics")[0] == 200
        assert fetch(url + "/")[0] == 404
    finally:
        served.close()


def test_a_port_in_use_is_named_in_the_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(
            DropboxError, match=f"metrics.listen: cannot listen on 127.0.0.1:{port}"
        ):
            Metrics(f"127.0.0.1:{port}")


def test_metrics_off_serves_nothing() -> None:
    off = Metrics("")

    off.record("imported", 1.0, 1, 1.0)
    off.close()

    assert off.address is None


# -- in a real browser ------------------------------------------------------------------------


def chromium_executable() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.fail(
            "chromium not found: the status page test loads the page in a real headless browser;"
            " install Debian's package: `apt-get update && apt-get install -y chromium`"
        )
    return found


def dump_dom(url: str, profile: Path, budget_ms: int) -> str:
    """The page as chromium has it after ``budget_ms`` of virtual time (timers run, fetches
    complete), serialized."""
    try:
        done = subprocess.run(
            [
                chromium_executable(), "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={profile}", "--window-size=390,844",
                f"--virtual-time-budget={budget_ms}", "--dump-dom", url,
            ],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        # A headless chromium waits for ever on an alert() dialog.
        raise AssertionError("chromium hung: did the page run a hostile alert()?") from None
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.browser
def test_the_page_in_a_browser_shows_hostile_names_as_text_and_runs_none(
    tmp_path: Path,
) -> None:
    calls: list[int] = []

    def source() -> dict[str, Any]:
        calls.append(1)
        return status(42.0 if len(calls) == 1 else 77.0)  # the refresh brings new progress

    listener = Listener(
        "127.0.0.1", 0, metrics_text=lambda accept: (b"", "text/plain"), status_source=source,
        status_max_age=0,
    )  # fmt: skip
    listener.start()
    try:
        dom = dump_dom(f"http://127.0.0.1:{listener.address[1]}/", tmp_path / "profile", 7000)
    finally:
        listener.close()

    page = Page(dom)
    assert len(calls) >= 2, "the page's script refreshed it"
    assert page.progress == ["77"]
    assert page.texts["name"][0] == HOSTILE
    assert page.texts["name"].count(HOSTILE_IMG) == 2
    assert page.texts["reason"] == [HOSTILE_REASON]
    assert HOSTILE_STEP in " ".join(page.texts["meta"])
    assert "77%" in " ".join(page.texts["meta"])
    # Nothing the names carry ran: no mark on the body, the title untouched, no element made.
    assert "data-pwned" not in page.body
    assert page.title == "ymir-dropbox"
    assert "img" not in page.tags
    assert page.tags.count("script") == 1


def test_the_page_names_what_the_daemon_will_never_take() -> None:
    status = {
        "daemon_running": True,
        "inbox": "/srv/inbox",
        "waiting": 0,
        "waiting_packages": [],
        "processing": 0,
        "processing_packages": [],
        "never_taken": [{"path": "y8<b>.zip", "why": "not named *.tar.gz (watch.patterns)"}],
        "today": {},
        "total": {},
    }

    page = Page(render_page(status))

    assert "y8<b>.zip" in page.texts["name"]  # as text, escaped in the HTML
    assert "never taken: not named *.tar.gz (watch.patterns)" in page.texts["reason"]
