"""``ymir-dropbox status``: what is waiting, processing, imported and failed, from the folders
and the ledger alone (works whether the daemon runs or not)."""

from __future__ import annotations

import stat
from datetime import UTC, datetime
from typing import Any

from ymir_dropbox.config import Config
from ymir_dropbox.running.folders import is_ignored, is_package_name, walk_inbox
from ymir_dropbox.running.lock import lock_held
from ymir_dropbox.storing.ledger import Ledger
from ymir_dropbox.storing.lifecycle import Status


def collect_status(config: Config) -> dict[str, Any]:
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
    result: dict[str, Any] = {
        "daemon_running": lock_held(config),
        "inbox": str(config.paths.inbox.absolute()),
        "waiting": len(waiting),
        "waiting_packages": sorted(waiting)[:50],
        "processing": len(processing),
        "processing_packages": sorted(processing)[:50],
    }
    if not config.paths.ledger.exists():
        return {**result, "today": {}, "total": {}, "last_import": None, "last_error": None}
    ledger = Ledger.open_for_reading(config.paths.ledger)
    today = datetime.now(UTC).strftime("%Y-%m-%dT00:00:00")
    last_import = ledger.latest(Status.IMPORTED)
    last_error = ledger.latest(Status.FAILED)
    result.update(
        today=ledger.counts_since(today),
        total=ledger.counts_since(""),
        last_import=_brief(last_import[0]) if last_import else None,
        last_error=_brief(last_error[0]) if last_error else None,
    )
    ledger.close()
    return result


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "package", "sha256", "model_hash", "best_stage_name", "mAP", "errors")
    return {key: row.get(key) for key in (*keys, "finished_at")}


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
    return "\n".join(lines)
