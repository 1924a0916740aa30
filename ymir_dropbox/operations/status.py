"""``ymir-dropbox status``: what is waiting, processing, imported and failed, from the folders
and the ledger alone (works whether the daemon runs or not)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from ymir_dropbox.config import Config
from ymir_dropbox.core.jsonvalues import JsonObject
from ymir_dropbox.operations.retention import folder_usage
from ymir_dropbox.operations.status_page import human_size
from ymir_dropbox.storing.attempts import Attempt
from ymir_dropbox.storing.documents import brief_document
from ymir_dropbox.storing.folders import Kind, scan_inbox, walk_files
from ymir_dropbox.storing.ledger import Counts, Ledger
from ymir_dropbox.storing.lifecycle import Status
from ymir_dropbox.storing.lock import lock_held

RECENT = 10


def daemon_state_path(config: Config) -> Path:
    """Where the running daemon publishes what it is doing (the imports in flight): beside
    the ledger, like its lock, where readers of the ledger can read it too."""
    return config.paths.ledger.with_name(config.paths.ledger.name + ".state.json")


def publish_state(config: Config, state: JsonObject) -> None:
    """Written by the daemon about once a second: a rename, never a half file (no fsync:
    after a crash it is stale, and ``status`` only trusts it while the daemon runs)."""
    path = daemon_state_path(config)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(state, ensure_ascii=False))
    os.replace(temporary, path)


def _published(config: Config) -> JsonObject:
    try:
        found: JsonObject = json.loads(daemon_state_path(config).read_text())
    except (OSError, ValueError):
        return {}
    return found


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """What is waiting, in flight, imported and failed, from the folders and the ledger."""

    daemon_running: bool
    inbox: Path
    waiting: tuple[str, ...]
    processing: tuple[str, ...]
    never_taken: tuple[str, ...]  # in the inbox, named as the daemon never takes a package
    in_flight: tuple[JsonObject, ...]
    disk: dict[str, int]
    today: Counts | None = None  # None: no ledger yet
    total: Counts | None = None
    recent_imports: tuple[Attempt, ...] = ()
    recent_failures: tuple[Attempt, ...] = ()
    deferred: tuple[Attempt, ...] = ()  # interrupted, in processing/, waiting for a retry


def take_snapshot(
    config: Config,
    in_flight: list[JsonObject] | None = None,
    disk: Mapping[str, int] | None = None,
) -> StatusSnapshot:
    """``in_flight`` is the running daemon's own view; without it, what the daemon last
    published (if it runs). ``disk``: the bytes per folder if they are known (the daemon's
    are counted in the background), else counted now."""
    watch = config.watch
    waiting: list[str] = []
    never: list[str] = []
    for relative, kind, _ in scan_inbox(config.paths.inbox, watch):
        if kind is Kind.PACKAGE:
            waiting.append(relative)
        elif kind is Kind.MISNAMED:
            never.append(relative)
    waiting.sort()
    processing = sorted(
        str(relative)
        for relative, info in walk_files(config.paths.processing, True)
        if stat.S_ISREG(info.st_mode)
    )
    running = lock_held(config)
    if in_flight is None:
        in_flight = _published(config).get("in_flight", []) if running else []
    snapshot = StatusSnapshot(
        running,
        config.paths.inbox.absolute(),
        tuple(waiting),
        tuple(processing),
        tuple(sorted(never)),
        tuple(in_flight or ()),
        dict(folder_usage(config.paths) if disk is None else disk),
    )
    if not config.paths.ledger.exists():
        return snapshot
    ledger = Ledger.open_for_reading(config.paths.ledger)
    try:
        names = {Path(name).name for name in processing}
        return replace(
            snapshot,
            today=ledger.counts_since(datetime.now(UTC).strftime("%Y-%m-%dT00:00:00")),
            total=ledger.counts_since(""),
            recent_imports=tuple(ledger.latest(Status.IMPORTED, RECENT)),
            recent_failures=tuple(ledger.latest(Status.FAILED, RECENT)),
            deferred=tuple(
                found
                for found in ledger.latest(Status.INTERRUPTED, RECENT)
                if found.package in names and found.errors
            ),
        )
    finally:
        ledger.close()


def collect_status(
    config: Config,
    in_flight: list[JsonObject] | None = None,
    disk: Mapping[str, int] | None = None,
) -> JsonObject:
    """What ``status --json`` prints and the status page shows."""
    snapshot = take_snapshot(config, in_flight, disk)
    document = status_document(snapshot, config.watch.patterns)
    if snapshot.total is None:  # no ledger
        document["no_ledger"] = (
            f"no ledger at {config.paths.ledger}: is this the daemon's configuration? "
            "Point at it with --config FILE or YMIR_DROPBOX_CONFIG"
        )
    return document


def status_document(snapshot: StatusSnapshot, patterns: tuple[str, ...]) -> JsonObject:
    imports = [brief_document(found) for found in snapshot.recent_imports]
    failures = [brief_document(found) for found in snapshot.recent_failures]
    return {
        "daemon_running": snapshot.daemon_running,
        "inbox": str(snapshot.inbox),
        "waiting": len(snapshot.waiting),
        "waiting_packages": list(snapshot.waiting[:50]),
        "processing": len(snapshot.processing),
        "processing_packages": list(snapshot.processing[:50]),
        "never_taken": [
            {"path": path, "why": f"not named {' or '.join(patterns)} (watch.patterns)"}
            for path in snapshot.never_taken[:50]
        ],
        "in_flight": list(snapshot.in_flight),
        "disk": snapshot.disk,
        "today": asdict(snapshot.today) if snapshot.today else {},
        "total": asdict(snapshot.total) if snapshot.total else {},
        "last_import": imports[0] if imports else None,
        "last_error": failures[0] if failures else None,
        "recent_imports": imports,
        "recent_failures": failures,
        "deferred": [brief_document(found) for found in snapshot.deferred],
    }


def render_status(status: JsonObject) -> str:
    lines = [
        f"daemon:      {'running' if status['daemon_running'] else 'not running'}",
        f"inbox:       {status['inbox']}",
        f"waiting:     {status['waiting']}",
        f"processing:  {status['processing']}",
    ]
    if status.get("no_ledger"):
        lines.append(f"note:        {status['no_ledger']}")
    for never in status.get("never_taken") or []:
        lines.append(f"never taken: {never['path']}: {never['why']}")
    for period in ("today", "total"):
        numbers = status[period]
        if numbers:
            lines.append(
                f"{period + ':':<12} imported {numbers['imported']}, "
                f"duplicates {numbers['duplicate']}, failed {numbers['failed']}"
            )
    if status.get("last_import"):
        row = status["last_import"]
        lines.append(
            f"last import: #{row['id']} {row['package']} model {row['model_hash']} "
            f"({row['best_stage_name']}, mAP {row['mAP']}) at {row['finished_at']}"
        )
    if status.get("last_error"):
        row = status["last_error"]
        first = (row.get("errors") or [{}])[0]
        lines.append(
            f"last error:  #{row['id']} {row['package']} at {row['finished_at']}: "
            f"{first.get('code')}: {first.get('message')}"
        )
    for job in status.get("in_flight") or []:
        percent = "" if job.get("percent") is None else f" {job['percent']:.0f}%"
        lines.append(
            f"importing:   {job['package']} ({job['step']}{percent}, {job['elapsed_s']:.0f} s)"
            + (f": {job['detail']}" if job.get("detail") else "")
        )
    for row in status.get("deferred") or []:
        lines.append(f"waiting on:  {row['package']}: {row['reason']}")
    failures = status.get("recent_failures") or []
    if failures:
        lines.append("recent failures:")
        lines.extend(
            f"  #{row['id']} {row['package']} at {row['finished_at']}: {row['reason']}"
            for row in failures[:5]
        )
    disk = status.get("disk") or {}
    if disk:
        lines.append(
            "disk:        " + ", ".join(f"{name} {human_size(size)}" for name, size in disk.items())
        )
    return "\n".join(lines)
