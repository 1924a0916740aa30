"""Text an uploader chose (package and member names, problems quoting them), made safe to
show a person: on a terminal, in an environment variable, in a log line read with ``less``.

A control character (C0, DEL, C1: ``ESC ]0;...BEL`` retitles a terminal, ``ESC [2J`` clears
it, a newline forges a line) or a character that reorders text on screen (the bidirectional
overrides and isolates) becomes a visible escape, ``\\u001b`` or ``\\u202e``: the form JSON
reads back as the same character, so a JSON line stays valid and means the same.

The command line writes through :class:`PrintableStream`, which escapes all of them but the
newline and the tab (its own lines); what it prints of a name goes through :func:`printable`
first, which escapes those too.
"""

from __future__ import annotations

import io
import re
from typing import Any, TextIO

_REORDERING = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f{_REORDERING}]")
_UNSAFE_BUT_LINES = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_REORDERING}]")


def _escape(found: re.Match[str]) -> str:
    return f"\\u{ord(found[0]):04x}"


def printable(text: str) -> str:
    """``text`` with every control and reordering character shown as an escape."""
    return _UNSAFE.sub(_escape, text)


def printable_values(value: Any) -> Any:
    """A JSON document with every string in it (keys too) made :func:`printable`."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable_values(key): printable_values(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [printable_values(item) for item in value]
    return value


class PrintableStream(io.TextIOBase):
    """A text stream that escapes what :func:`printable` does, except newlines and tabs."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(_UNSAFE_BUT_LINES.sub(_escape, text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding
