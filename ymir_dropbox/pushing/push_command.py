"""``push SOURCE... DEST``: build each package, deliver it, and (``--wait``) learn its
verdict from the daemon's listener. The one function the CLI calls returns what to print and
the exit code:

- 0: every package imported, or a duplicate of an earlier import (or, without ``--wait``,
  delivered);
- 1: a package failed (the daemon's verdict, a folder that does not make a valid package, a
  delivery that did not happen);
- 2: the command line cannot be carried out (a bad SOURCE or DEST, a name the daemon never
  takes, a file of that name in DEST); nothing was written;
- 3: a verdict did not come within ``--timeout`` (and nothing failed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ymir_dropbox.config import Config
from ymir_dropbox.core.errors import UsageError
from ymir_dropbox.core.jsonvalues import JsonObject
from ymir_dropbox.core.printable import printable_values
from ymir_dropbox.pushing.client import check_status_url
from ymir_dropbox.pushing.destinations import (
    DeliveryError,
    Destination,
    check_destination,
    deliver,
    parse_destination,
)
from ymir_dropbox.pushing.sources import Package, Unbuilt, build, check_names, delivered_names
from ymir_dropbox.pushing.waiting import Awaited, before_delivery, wait_for_verdicts

EXIT_OK, EXIT_FAILED, EXIT_TIMEOUT = 0, 1, 3
YMIR_IDS = ("ymir_project_id", "ymir_model_id", "ymir_group_name", "ymir_model_name")


@dataclass(frozen=True, slots=True)
class PushOutcome:
    exit_code: int
    output: tuple[str, ...] = ()  # for stdout: the verdicts
    messages: tuple[str, ...] = ()  # for stderr


def run_push(config: Config, options: argparse.Namespace) -> PushOutcome:
    """Carry out ``push``; raises :class:`UsageError` before anything is written."""
    sources: list[Path] = options.sources
    destination = parse_destination(options.destination)
    names = delivered_names(sources, options.name)
    check_names(names, config)
    check_destination(destination, names)
    status_url = options.status_url or config.push.status_url or _own_listener(config)
    if options.wait:
        if not status_url:
            raise UsageError(
                "--wait needs the daemon's listener: --status-url http://HOST:PORT, or "
                "[push] status_url in the config"
            )
        status_url = check_status_url(status_url)
    rsh = options.rsh or config.push.rsh or None
    deadline = time.monotonic() + options.timeout
    # The packed copies live only until they are delivered.
    with _scratch_folder() as scratch:
        built = [
            build(source, name, options, config, Path(scratch))
            for source, name in zip(sources, names, strict=True)
        ]
        if any(isinstance(item, Unbuilt) for item in built):
            return _unbuilt(built, options.json)
        packages = [item for item in built if isinstance(item, Package)]
        if options.dry_run:
            return PushOutcome(
                EXIT_OK,
                tuple(
                    f"would deliver: {package.name} (sha256 {package.sha256}) to {destination}"
                    for package in packages
                ),
            )
        awaited, verdicts = _deliver_all(packages, destination, rsh, status_url, options, deadline)
    if options.wait and awaited:
        wait_for_verdicts(status_url, awaited, max(deadline - time.monotonic(), 0.0))
        verdicts += [_verdict(item) for item in awaited]
    return _outcome(verdicts, options.json, status_url, options.timeout)


@contextmanager
def _scratch_folder() -> Iterator[str]:
    """A folder for the packed copies, removed at the end whatever ends it: SIGTERM and
    SIGINT raise (see the CLI), so they wait while it is removed, not to cut that short."""
    scratch = tempfile.mkdtemp(prefix="ymir-dropbox-push-")
    try:
        yield scratch
    finally:
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        try:
            shutil.rmtree(scratch, ignore_errors=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _deliver_all(
    packages: list[Package],
    destination: Destination,
    rsh: str | None,
    status_url: str,
    options: argparse.Namespace,
    deadline: float,
) -> tuple[list[Awaited], list[JsonObject]]:
    """Deliver each package; with ``--wait``, ask first for the latest attempt at its bytes
    (while the listener answers: one that does not is not asked again before delivering)."""
    awaited: list[Awaited] = []
    verdicts: list[JsonObject] = []
    unanswered = ""
    for package in packages:
        after: int | None = 0
        if options.wait:
            after = None
            if not unanswered:
                after, unanswered = before_delivery(
                    status_url, package, max(deadline - time.monotonic(), 0.0)
                )
        delivered_at = time.time()
        try:
            where = deliver(package.path, package.name, destination, rsh)
        except DeliveryError as error:
            verdicts.append(_not_delivered(package, str(error)))
            continue
        awaited.append(Awaited(package, after, delivered_at, error=unanswered))
        if not options.wait:
            verdicts.append(
                {**_blank(package.name, package.sha256), "status": "delivered", "to": where}
            )
    return awaited, verdicts


def _own_listener(config: Config) -> str:
    """On the daemon's own host, with its configuration: its listener."""
    host, _, port = config.metrics.listen.rpartition(":")
    if not port:
        return ""
    if host in ("", "0.0.0.0", "::", "[::]"):  # noqa: S104 - a listener on every address
        host = "127.0.0.1"
    return f"http://{host}:{port}"


VERDICT_KEYS = (
    "package", "sha256", "status", "attempt", "model_hash", "mAP", "best_stage_name",
    "duplicate_of", "problems", "warnings", *YMIR_IDS,
)  # fmt: skip
WAITING_KEYS = ("reached", "error", "last_status", "step", "percent", "to", "source")


def _blank(name: str, sha256: str | None) -> JsonObject:
    """A verdict object with every key ``--json`` has, whatever the status."""
    blank: JsonObject = dict.fromkeys((*VERDICT_KEYS, *WAITING_KEYS))
    return {**blank, "package": name, "sha256": sha256, "problems": [], "warnings": []}


def _unbuilt(built: list[Package | Unbuilt], as_json: bool) -> PushOutcome:
    verdicts = []
    for item in built:
        if isinstance(item, Unbuilt):
            problems = [problem.as_dict() for problem in item.problems]
            verdict = {"status": "invalid", "source": str(item.source), "problems": problems}
            verdicts.append({**_blank(item.name, None), **verdict})
        else:
            reason = "another SOURCE makes no valid package: nothing was delivered"
            verdicts.append(_not_delivered(item, reason))
    lines = _render(verdicts, as_json, "", 0)
    return PushOutcome(EXIT_FAILED, lines, ("nothing delivered: a SOURCE makes no valid package",))


def _not_delivered(package: Package, reason: str) -> JsonObject:
    problem = {"code": "push.not_delivered", "field": "", "message": reason}
    return {
        **_blank(package.name, package.sha256),
        "status": "not_delivered",
        "problems": [problem],
    }


def _verdict(item: Awaited) -> JsonObject:
    """The verdict object of ``--json``: the daemon's answer, or a timeout saying what was
    last known."""
    package = item.package
    verdict = _blank(package.name, package.sha256)
    if item.verdict is not None:
        answer = item.verdict
        found = {key: answer.get(key) for key in VERDICT_KEYS if key not in ("package", "sha256")}
        return {
            **verdict,
            **found,
            "problems": answer.get("problems") or [],
            "warnings": answer.get("warnings") or [],
        }
    seen = item.seen or {}
    return {
        **verdict,
        "status": "timeout",
        "reached": item.reached,
        "error": item.error or None,
        "attempt": seen.get("attempt"),
        "last_status": seen.get("status"),
        "step": seen.get("step"),
        "percent": seen.get("percent"),
    }


def _outcome(verdicts: list[JsonObject], as_json: bool, url: str, timeout: float) -> PushOutcome:
    statuses = {verdict["status"] for verdict in verdicts}
    if statuses & {"failed", "not_delivered", "invalid"}:
        code = EXIT_FAILED
    elif "timeout" in statuses:
        code = EXIT_TIMEOUT
    else:
        code = EXIT_OK
    return PushOutcome(code, _render(verdicts, as_json, url, timeout))


def _render(verdicts: list[JsonObject], as_json: bool, url: str, timeout: float) -> tuple[str, ...]:
    if as_json:
        return tuple(json.dumps(verdict, ensure_ascii=False) for verdict in verdicts)
    lines: list[str] = []
    for verdict in verdicts:
        lines.extend(verdict_lines(printable_values(verdict), url, timeout))
    return tuple(lines)


def verdict_lines(verdict: JsonObject, url: str = "", timeout: float = 0) -> list[str]:
    """One verdict for people: a first line saying what became of the package, then its
    problems or YMIR's ids, then its warnings."""
    name, status = verdict["package"], verdict["status"]
    if status == "imported":
        lines = [
            f"imported: {name} model hash {verdict['model_hash']}, "
            f"best stage {verdict['best_stage_name']}, mAP {verdict['mAP']}"
        ]
        if verdict.get("ymir_model_id") is not None:
            lines.append(
                f"  YMIR project {verdict['ymir_project_id']}, model id "
                f"{verdict['ymir_model_id']}, group {verdict['ymir_group_name']}"
            )
        return lines + _problem_lines(verdict.get("warnings"), "warning: ")
    if status == "duplicate":
        return [
            f"duplicate: {name} of attempt {verdict['duplicate_of']} "
            f"(model hash {verdict['model_hash']})"
        ]
    if status == "delivered":
        return [f"delivered: {name} to {verdict['to']} (sha256 {verdict['sha256']})"]
    if status == "timeout":
        return [f"timed out: {name}: no verdict within {timeout:g} s; {_last_known(verdict, url)}"]
    head = {"failed": "failed", "invalid": "invalid", "not_delivered": "not delivered"}
    lines = [f"{head.get(str(status), str(status))}: {name}"]
    lines += _problem_lines(verdict.get("problems"))
    return lines + _problem_lines(verdict.get("warnings"), "warning: ")


def _problem_lines(found: object, kind: str = "") -> list[str]:
    """``  [warning: ]code [field]: message``, one per problem of an answer."""
    lines = []
    for problem in found if isinstance(found, list) else []:
        if isinstance(problem, dict):
            where = f" [{problem.get('field')}]" if problem.get("field") else ""
            lines.append(f"  {kind}{problem.get('code')}{where}: {problem.get('message')}")
    return lines


def _last_known(verdict: JsonObject, url: str) -> str:
    if not verdict["reached"]:
        return f"the daemon's listener at {url} was never reached ({verdict['error']})"
    if verdict["attempt"] is None:
        gone = f"; then it stopped answering ({verdict['error']})" if verdict["error"] else ""
        return f"the daemon has not taken it yet (it answered: no attempt at these bytes){gone}"
    step = f", step {verdict['step']}" if verdict.get("step") else ""
    percent = f", {verdict['percent']}%" if verdict.get("percent") is not None else ""
    gone = f"; the listener stopped answering ({verdict['error']})" if verdict["error"] else ""
    return f"last seen: attempt {verdict['attempt']} {verdict['last_status']}{step}{percent}{gone}"
