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
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ymir_dropbox.config import Config
from ymir_dropbox.core.errors import UsageError
from ymir_dropbox.core.jsonvalues import JsonObject
from ymir_dropbox.core.printable import printable_values
from ymir_dropbox.pushing.client import check_status_url
from ymir_dropbox.pushing.destinations import (
    DeliveryError,
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
    status_url = options.status_url or config.push.status_url
    if options.wait:
        if not status_url:
            raise UsageError(
                "--wait needs the daemon's listener: --status-url http://HOST:PORT, or "
                "[push] status_url in the config"
            )
        status_url = check_status_url(status_url)
    rsh = options.rsh or config.push.rsh or None
    with tempfile.TemporaryDirectory(prefix="ymir-dropbox-push-") as scratch:
        built = [
            build(source, name, options, config, Path(scratch))
            for source, name in zip(sources, names, strict=True)
        ]
        unbuilt = [item for item in built if isinstance(item, Unbuilt)]
        if unbuilt:
            return _unbuilt(unbuilt, options.json)
        packages = [item for item in built if isinstance(item, Package)]
        if options.dry_run:
            return PushOutcome(
                EXIT_OK,
                tuple(
                    f"would deliver: {package.name} (sha256 {package.sha256}) to {destination}"
                    for package in packages
                ),
            )
        started = time.monotonic()
        awaited: list[Awaited] = []
        failures: list[JsonObject] = []
        for package in packages:
            after = before_delivery(status_url, package, options.timeout) if options.wait else 0
            delivered_at = time.time()
            try:
                where = deliver(package.path, package.name, destination, rsh)
            except DeliveryError as error:
                failures.append(_not_delivered(package, str(error)))
                continue
            awaited.append(Awaited(package, after, delivered_at))
            if not options.wait:
                failures.append(_delivered(package, where))
        if options.wait and awaited:
            left = max(options.timeout - (time.monotonic() - started), 0.0)
            wait_for_verdicts(status_url, awaited, left)
        verdicts = failures if not options.wait else [*failures, *map(_verdict, awaited)]
    return _outcome(verdicts, options.json, status_url, options.timeout)


def _unbuilt(unbuilt: list[Unbuilt], as_json: bool) -> PushOutcome:
    verdicts = [
        {
            "package": item.name,
            "source": str(item.source),
            "status": "invalid",
            "problems": [problem.as_dict() for problem in item.problems],
        }
        for item in unbuilt
    ]
    lines = _render(verdicts, as_json, "", 0)
    return PushOutcome(EXIT_FAILED, lines, ("nothing delivered: a SOURCE makes no valid package",))


def _delivered(package: Package, where: str) -> JsonObject:
    return {"package": package.name, "sha256": package.sha256, "status": "delivered", "to": where}


def _not_delivered(package: Package, reason: str) -> JsonObject:
    return {
        "package": package.name,
        "sha256": package.sha256,
        "status": "not_delivered",
        "problems": [{"code": "push.not_delivered", "field": "", "message": reason}],
    }


def _verdict(item: Awaited) -> JsonObject:
    """The verdict object of ``--json``: the daemon's answer, or a timeout saying what was
    last known."""
    package = item.package
    if item.verdict is not None:
        answer = item.verdict
        return {
            "package": package.name,
            "sha256": package.sha256,
            "status": answer.get("status"),
            "attempt": answer.get("attempt"),
            "model_hash": answer.get("model_hash"),
            "mAP": answer.get("mAP"),
            "best_stage_name": answer.get("best_stage_name"),
            "duplicate_of": answer.get("duplicate_of"),
            "problems": answer.get("problems") or [],
            "warnings": answer.get("warnings") or [],
            **{key: answer.get(key) for key in YMIR_IDS},
        }
    seen = item.seen or {}
    return {
        "package": package.name,
        "sha256": package.sha256,
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
        return "the daemon has not taken it yet (it answered: no attempt at these bytes)"
    step = f", step {verdict['step']}" if verdict.get("step") else ""
    percent = f", {verdict['percent']}%" if verdict.get("percent") is not None else ""
    gone = f"; the listener stopped answering ({verdict['error']})" if verdict["error"] else ""
    return f"last seen: attempt {verdict['attempt']} {verdict['last_status']}{step}{percent}{gone}"
