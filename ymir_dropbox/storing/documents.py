"""An attempt as the documents people and scripts read: ``ledger --json`` and ``ledger show``,
the notification every receiver gets, the error files beside a failed package, the brief
lines of ``status``, and the verdict ``push --wait`` asks the listener for. One module renders
all of them, from the typed :class:`Attempt`.
"""

from __future__ import annotations

from pathlib import Path

from ymir_dropbox.core.jsonvalues import JsonObject
from ymir_dropbox.core.progress import JobProgress
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.storing.attempts import Attempt
from ymir_dropbox.storing.backends import fact_names
from ymir_dropbox.storing.lifecycle import SETTLED, Place

Document = JsonObject


def text_of(path: Path | None) -> str | None:
    """A path for people: bytes that are not UTF-8 shown as ``\\xNN``."""
    if path is None:
        return None
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def problems(found: tuple[Problem, ...]) -> list[Document]:
    return [problem.as_dict() for problem in found]


def attempt_document(attempt: Attempt) -> Document:
    """Every field of an attempt, the backend's facts among them, and the reason of a
    failure in one line (``ledger --json``)."""
    return {
        "id": attempt.id,
        "package": attempt.package,
        "source": text_of(attempt.source),
        "size": attempt.size,
        "sha256": attempt.sha256,
        "received_at": attempt.received_at,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
        "status": str(attempt.status),
        "place": None if attempt.place is None else str(attempt.place),
        "processing_path": text_of(attempt.processing_path),
        "final_path": text_of(attempt.final_path),
        "backend": attempt.backend,
        "model_hash": attempt.model_hash,
        "best_stage_name": attempt.best_stage_name,
        "mAP": attempt.mAP,
        "class_names": None if attempt.class_names is None else list(attempt.class_names),
        "object_type": attempt.object_type,
        "package_version": attempt.package_version,
        "errors": problems(attempt.errors),
        "warnings": problems(attempt.warnings),
        "dst_rev": attempt.dst_rev,
        "duplicate_of": attempt.duplicate_of,
        "duration": attempt.duration,
        "notes": list(attempt.notes),
        "uploader": attempt.uploader,
        **dict.fromkeys(fact_names()),
        **attempt.facts,
        "reason": attempt.reason,
    }


def outcome_document(attempt: Attempt) -> Document:
    """The JSON object a notification receiver gets for one settled attempt."""
    return {
        "package": attempt.package,
        "sha256": attempt.sha256,
        "status": str(attempt.status),
        "model_hash": attempt.model_hash,
        "mAP": attempt.mAP,
        "best_stage_name": attempt.best_stage_name,
        "problems": problems(attempt.errors),
        "warnings": problems(attempt.warnings),
        "attempt": attempt.id,
        "duplicate_of": attempt.duplicate_of,
        "uploader": attempt.uploader,
        "finished_at": attempt.finished_at,
        "folder": None if attempt.place is None else str(attempt.place),  # done or failed
        "path": text_of(attempt.final_path),
    }


def error_document(attempt: Attempt) -> Document:
    """``<name>.error.json`` beside a failed package."""
    return {
        "package": attempt.package,
        "source": text_of(attempt.source),
        "attempt": attempt.id,
        "sha256": attempt.sha256,
        "finished_at": attempt.finished_at,
        "errors": problems(attempt.errors),
        "warnings": problems(attempt.warnings),
    }


def error_text(attempt: Attempt) -> str:
    """``<name>.error.txt`` beside a failed package: the same, for people."""
    lines = [
        f"{attempt.package} was not imported (attempt {attempt.id}, {attempt.finished_at}).",
        "",
    ]
    for problem in attempt.errors:
        where = f" [{problem.field}]" if problem.field else ""
        lines.append(f"- {problem.code}{where}: {problem.message}")
    lines += ["", "Fix the package and copy it into the inbox again, or run `ymir-dropbox retry`."]
    return "\n".join(lines) + "\n"


def brief_document(attempt: Attempt) -> Document:
    """An attempt in ``status --json`` and on the status page."""
    return {
        "id": attempt.id,
        "package": attempt.package,
        "sha256": attempt.sha256,
        "model_hash": attempt.model_hash,
        "best_stage_name": attempt.best_stage_name,
        "mAP": attempt.mAP,
        "errors": problems(attempt.errors),
        "finished_at": attempt.finished_at,
        "uploader": attempt.uploader,
        "reason": attempt.reason,
    }


def is_announced(attempt: Attempt) -> bool:
    """Whether the attempt's verdict may be told: it is settled and its package has left
    processing/ (in done/, or in failed/ beside its error files), so what the verdict
    describes is on disk."""
    return attempt.status in SETTLED and attempt.place not in (Place.INBOX, Place.PROCESSING)


def verdict_document(attempt: Attempt, in_flight: JobProgress | None = None) -> Document:
    """``GET /packages/<sha256>``: an attempt as a training server may see it (no path of
    the daemon's host beyond the inbox-relative name), with its step while in flight."""
    relative = attempt.relative
    return {
        "package": str(relative) if relative is not None else attempt.package,
        "sha256": attempt.sha256,
        "status": str(attempt.status),
        "final": is_announced(attempt),
        "place": None if attempt.place is None else str(attempt.place),
        "attempt": attempt.id,
        "model_hash": attempt.model_hash,
        "mAP": attempt.mAP,
        "best_stage_name": attempt.best_stage_name,
        "duplicate_of": attempt.duplicate_of,
        "problems": problems(attempt.errors),
        "warnings": problems(attempt.warnings),
        "received_at": attempt.received_at,
        "finished_at": attempt.finished_at,
        "step": None if in_flight is None else in_flight.step,
        "percent": None if in_flight is None else in_flight.percent,
        **dict.fromkeys(fact_names()),
        **attempt.facts,
    }
