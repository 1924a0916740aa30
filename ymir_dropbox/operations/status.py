"""``ymir-dropbox status``: what is waiting, processing, imported and failed, from the folders
and the ledger alone (works whether the daemon runs or not)."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ymir_dropbox.config import Config
from ymir_dropbox.operations.retention import folder_usage
from ymir_dropbox.operations.status_page import human_size
from ymir_dropbox.storing.documents import brief_document
from ymir_dropbox.storing.folders import is_ignored, is_package_name, walk_inbox
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.lifecycle import Status
from ymir_dropbox.storing.lock import lock_held

RECENT = 10


def daemon_state_path(config: Config) -> Path:
    """Where the running daemon publishes what it is doing (the imports in flight): beside
    the ledger, like its lock, where readers of the ledger can read it too."""
    return config.paths.ledger.with_name(config.paths.ledger.name + ".state.json")


def publish_state(config: Config, state: dict[str, Any]) -> None:
    """Written by the daemon about once a second: a rename, never a half file (no fsync:
    after a crash it is stale, and ``status`` only trusts it while the daemon runs)."""
    path = daemon_state_path(config)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(state, ensure_ascii=False))
    os.replace(temporary, path)


def _published(config: Config) -> dict[str, Any]:
    try:
        found: dict[str, Any] = json.loads(daemon_state_path(config).read_text())
    except (OSError, ValueError):
        return {}
    return found


def collect_status(config: Config, in_flight: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What ``status --json`` prints and the status page shows. ``in_flight`` is the running
    daemon's own view; without it, what the daemon last published (if it runs)."""
    watch = config.watch
    waiting = [
        str(relative)
        for relative, info in walk_inbox(config.paths.inbox, watch.recursive)
        if stat.S_ISREG(info.st_mode)
        and is_package_name(relative, watch)
        and not is_ignored(relative, watch)
    ]
    processing = [
        str(relative)
        for relative, info in walk_inbox(config.paths.processing, True)
        if stat.S_ISREG(info.st_mode)
    ]
    running = lock_held(config)
    if in_flight is None:
        in_flight = _published(config).get("in_flight", []) if running else []
    result: dict[str, Any] = {
        "daemon_running": running,
        "inbox": str(config.paths.inbox.absolute()),
        "waiting": len(waiting),
        "waiting_packages": sorted(waiting)[:50],
        "processing": len(processing),
        "processing_packages": sorted(processing)[:50],
        "in_flight": in_flight,
        "disk": folder_usage(config.paths),
    }
    if not config.paths.ledger.exists():
        return {
            **result,
            "today": {},
            "total": {},
            "last_import": None,
            "last_error": None,
            "recent_imports": [],
            "recent_failures": [],
            "deferred": [],
        }
    ledger = Ledger.open_for_reading(config.paths.ledger)
    try:
        today = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00")
        imports = [brief_document(found) for found in ledger.latest(Status.IMPORTED, RECENT)]
        failures = [brief_document(found) for found in ledger.latest(Status.FAILED, RECENT)]
        deferred = [
            brief_document(found)
            for found in ledger.latest(Status.INTERRUPTED, RECENT)
            if found.package in {Path(name).name for name in processing} and found.errors
        ]
        result.update(
            today=asdict(ledger.counts_since(today)),
            total=asdict(ledger.counts_since("")),
            last_import=imports[0] if imports else None,
            last_error=failures[0] if failures else None,
            recent_imports=imports,
            recent_failures=failures,
            deferred=deferred,
        )
    finally:
        ledger.close()
    return result


def render_status(status: dict[str, Any]) -> str:
    lines = [
        f"daemon:      {'running' if status['daemon_running'] else 'not running'}",
        f"inbox:       {status['inbox']}",
        f"waiting:     {status['waiting']}",
        f"processing:  {status['processing']}",
    ]
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
