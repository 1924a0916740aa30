"""JSON as it crosses the daemon's edges: a document shown to the world (``status --json``,
a notification, ``ledger --json``) or read from it (a YAML or TOML file, a status page's
source), before it is a typed value, or after it was one."""

from __future__ import annotations

from typing import Any

JsonObject = dict[str, Any]
