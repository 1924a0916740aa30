"""The status page: the status object (``ymir-dropbox status --json``) as one HTML page.

Pure: :func:`render_page` takes the status dict and returns the page. Every value is escaped
(package names and reasons come from uploaders), the page works without JavaScript, and the
one inline script only refreshes it: it fetches the page again every few seconds and swaps
its ``<main>`` in, so there is one renderer, here. The Content-Security-Policy the listener
sends allows that script and style by their hashes and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from html import escape
from typing import Any

from ymir_dropbox.core.jsonvalues import JsonObject
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.storing.attempts import failure_reason

REFRESH_SECONDS = 5
MAX_LISTED = 20  # waiting packages shown; the rest are counted

STYLE = """
:root { color-scheme: light dark; --muted: #6b7280; --line: #d1d5db; --bad: #b91c1c;
  --good: #15803d; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
main { max-width: 56rem; margin: 0 auto; padding: 1rem; }
h1 { font-size: 1.4rem; margin: 0; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 .5rem; }
header p, .meta { color: var(--muted); font-size: .9rem; margin: .2rem 0 0; }
.tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(9rem, 1fr)); gap: .5rem;
  margin-top: 1rem; }
.tile { border: 1px solid var(--line); border-radius: .5rem; padding: .5rem .75rem; }
.tile b { display: block; font-size: 1.6rem; }
ul { list-style: none; margin: 0; padding: 0; }
li { border-top: 1px solid var(--line); padding: .6rem 0; }
.name { font-weight: 600; overflow-wrap: anywhere; }
.reason { color: var(--bad); overflow-wrap: anywhere; }
.down { color: var(--bad); }
.up { color: var(--good); }
progress { width: 100%; height: 1rem; margin-top: .3rem; }
.empty { color: var(--muted); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: 0; }
dd { margin: 0; text-align: right; font-variant-numeric: tabular-nums; }
body.stale main { opacity: .6; }
"""

# Refresh by fetching this page again and swapping its <main> in: the server renders, the
# script never builds markup from data (a parsed document never runs its scripts).
SCRIPT = f"""
setInterval(async () => {{
  try {{
    const answer = await fetch(location.pathname, {{cache: "no-store"}});
    if (!answer.ok) throw new Error(answer.status);
    const page = new DOMParser().parseFromString(await answer.text(), "text/html");
    const fresh = page.querySelector("main");
    if (fresh) document.querySelector("main").replaceWith(document.adoptNode(fresh));
    document.body.classList.remove("stale");
  }} catch (error) {{
    document.body.classList.add("stale");
  }}
}}, {REFRESH_SECONDS * 1000});
"""


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_digest(SCRIPT)}; style-src {_digest(STYLE)}; "
    "connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def render_page(status: JsonObject, now: datetime | None = None) -> str:
    """The whole page for one status object."""
    moment = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC")
    running = status.get("daemon_running")
    state = (
        '<span class="up">daemon running</span>'
        if running
        else '<span class="down">daemon not running</span>'
    )
    body = "".join(
        [
            "<header><h1>ymir-dropbox</h1>",
            f"<p>{state} · updated {_e(moment)}</p>",
            f'<p class="meta">inbox {_e(status.get("inbox", ""))}</p></header>',
            _tiles(status),
            _in_flight(status),
            _waiting(status),
            _imports(status),
            _failures(status),
            _disk(status.get("disk") or {}),
        ]
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>ymir-dropbox</title><style>{STYLE}</style></head>"
        f'<body><main id="status">{body}</main><script>{SCRIPT}</script></body></html>\n'
    )


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _tiles(status: JsonObject) -> str:
    today = status.get("today") or {}
    in_flight = status.get("in_flight")
    tiles = [
        ("waiting", status.get("waiting", 0)),
        ("in flight", len(in_flight) if in_flight is not None else status.get("processing", 0)),
        ("imported today", today.get("imported", 0)),
        ("duplicates today", today.get("duplicate", 0)),
        ("failed today", today.get("failed", 0)),
    ]
    cells = "".join(
        f'<div class="tile" data-tile="{_e(label)}"><b>{_e(value)}</b>{_e(label)}</div>'
        for label, value in tiles
    )
    return f'<section class="tiles">{cells}</section>'


def _section(key: str, title: str, items: Iterable[str], empty: str) -> str:
    listed = "".join(items)
    inner = f"<ul>{listed}</ul>" if listed else f'<p class="empty">{_e(empty)}</p>'
    return f'<section id="{key}"><h2>{_e(title)}</h2>{inner}</section>'


def _in_flight(status: JsonObject) -> str:
    jobs = status.get("in_flight")
    if jobs is None:  # a status without progress: what processing/ holds
        jobs = [{"package": name} for name in status.get("processing_packages") or []]
    return _section("in-flight", "In flight", map(_job, jobs), "Nothing is being imported.")


def _job(job: JsonObject) -> str:
    percent = job.get("percent")
    if isinstance(percent, int | float) and not isinstance(percent, bool):
        shown = max(0.0, min(100.0, float(percent)))
        bar = f'<progress max="100" value="{shown:.0f}">{shown:.0f}%</progress>'
        amount = f"{shown:.0f}%"
    else:
        bar, amount = "<progress max=100></progress>", ""
    facts = [job.get("step") or "", amount, _duration(job.get("elapsed_s"))]
    meta = " · ".join(_e(fact) for fact in facts if fact)
    return (
        f'<li><div class="name">{_e(job.get("package"))}</div>'
        f'<div class="meta">{meta}</div>{bar}</li>'
    )


def _waiting(status: JsonObject) -> str:
    names = list(status.get("waiting_packages") or [])
    items = [f'<li class="name">{_e(name)}</li>' for name in names[:MAX_LISTED]]
    more = int(status.get("waiting") or len(names)) - len(items)
    if more > 0:
        items.append(f'<li class="meta">and {more} more</li>')
    title = f"Waiting ({_e(status.get('waiting', len(names)))})"
    items += [
        f'<li><div class="name">{_e(never.get("path"))}</div>'
        f'<div class="reason">never taken: {_e(never.get("why"))}</div></li>'
        for never in (status.get("never_taken") or [])[:MAX_LISTED]
    ]
    return _section("waiting", title, items, "The inbox is empty.")


def _imports(status: JsonObject) -> str:
    rows = status.get("recent_imports")
    if rows is None:
        rows = [status["last_import"]] if status.get("last_import") else []
    items = []
    for row in rows:
        model = row.get("model_hash")
        facts = [
            _when(row.get("finished_at")),
            f"model {str(model)[:12]}" if model else "",
            row.get("best_stage_name") or "",
            f"mAP {row['mAP']}" if row.get("mAP") is not None else "",
            "duplicate" if row.get("status") == "duplicate" else "",
        ]
        meta = " · ".join(_e(fact) for fact in facts if fact)
        name = _e(row.get("package"))
        items.append(f'<li><div class="name">{name}</div><div class="meta">{meta}</div></li>')
    return _section("recent-imports", "Recent imports", items, "No imports yet.")


def _failures(status: JsonObject) -> str:
    rows = status.get("recent_failures")
    if rows is None:
        rows = [status["last_error"]] if status.get("last_error") else []
    items = [
        f'<li><div class="name">{_e(row.get("package"))}</div>'
        f'<div class="reason">{_e(_reason(row))}</div>'
        f'<div class="meta">{_e(_when(row.get("finished_at")))}</div></li>'
        for row in rows
    ]
    return _section("recent-failures", "Recent failures", items, "No failures.")


def _reason(row: JsonObject) -> str:
    if row.get("reason"):
        return str(row["reason"])
    # A status from an older daemon: its failures carry their problems only.
    problems = tuple(Problem.recorded(found) for found in row.get("errors") or ())
    return failure_reason(problems)


def _disk(usage: JsonObject) -> str:
    if not usage:
        return ""
    rows = "".join(
        f"<dt>{_e(name)}</dt><dd>{_e(human_size(size))}</dd>" for name, size in usage.items()
    )
    return f'<section id="disk"><h2>Disk</h2><dl>{rows}</dl></section>'


def _when(text: Any) -> str:
    """``2024-05-01T12:03:04.123456Z`` as ``2024-05-01 12:03:04 UTC``."""
    if not isinstance(text, str) or "T" not in text:
        return "" if text is None else str(text)
    day, _, clock = text.partition("T")
    return f"{day} {clock[:8]} UTC" if text.endswith("Z") else f"{day} {clock[:8]}"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return ""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def human_size(size: Any) -> str:
    """``1.5 MiB``: a size in bytes for people."""
    if not isinstance(size, int | float) or isinstance(size, bool):
        return str(size)
    amount = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError  # pragma: no cover
