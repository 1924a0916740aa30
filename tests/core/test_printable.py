"""Names an uploader chose never reach a person's terminal, or a program's environment, with
their control characters: every human output shows them escaped, JSON keeps them exact."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_harness import Dropbox, dropboxes, valid_package

from ymir_dropbox.core.printable import PrintableStream, printable, printable_values
from ymir_dropbox.operations.notifications import outcome_environment

# Retitles the terminal, clears it, forges a line, and reverses what follows on screen.
EVIL = "run\x1b]0;pwned\x07\x1b[2J\nimported: fake\u202egz.rat.tar.gz"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b[2J", "\\u001b[2J"),
        ("a\nb\rc\td", "a\\u000ab\\u000dc\\u0009d"),
        ("\x9b31m", "\\u009b31m"),  # the one-byte CSI of C1
        ("x\u202ey\u2066z", "x\\u202ey\\u2066z"),
        ("猫 café ✓", "猫 café ✓"),
    ],
    ids=["esc", "newline-cr-tab", "c1", "bidi", "plain-unicode"],
)
def test_control_and_reordering_characters_are_shown_escaped(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_a_document_is_escaped_through_and_through() -> None:
    document = {"package": EVIL, "problems": [{"message": "\x07"}], "mAP": 0.5, EVIL: None}
    escaped = printable_values(document)
    assert "\x1b" not in json.dumps(escaped, ensure_ascii=False)
    assert escaped["mAP"] == 0.5 and escaped["problems"] == [{"message": "\\u0007"}]


def test_the_stream_keeps_its_own_lines_and_json_stays_the_same_json() -> None:
    raw = io.StringIO()
    stream = PrintableStream(raw)  # type: ignore[arg-type]
    line = json.dumps({"package": "a\x85b\u202e"}, ensure_ascii=False)
    stream.write(f"first\n\x1b[2J{line}\n")
    first, second, _ = raw.getvalue().split("\n")
    assert first == "first" and second.startswith("\\u001b[2J")
    assert json.loads(second[len("\\u001b[2J") :]) == {"package": "a\x85b\u202e"}


def test_a_notify_program_sees_no_forged_line_in_its_environment() -> None:
    variables = outcome_environment({"package": EVIL, "status": "imported"})
    assert "\n" not in variables["YMIR_DROPBOX_PACKAGE"]
    assert "\x1b" not in variables["YMIR_DROPBOX_PACKAGE"]


@pytest.fixture
def imported(tmp_path: Path) -> Iterator[Dropbox]:
    with dropboxes(tmp_path) as make:
        dropbox = make()
        package = tmp_path / f"{EVIL}.tar.gz"
        package.write_bytes(valid_package("evil"))
        assert dropbox.cli("import", str(package)).returncode == 0
        (dropbox.inbox / f"waiting-{EVIL}.tar.gz").write_bytes(b"x")
        yield dropbox


@pytest.mark.parametrize(
    "command", [("ledger",), ("ledger", "show", "1"), ("status",)], ids=" ".join
)
def test_no_human_output_carries_a_control_character(
    imported: Dropbox, command: tuple[str, ...]
) -> None:
    done = imported.cli(*command)
    assert done.returncode == 0, done.stderr
    assert "\\u001b]0;pwned" in done.stdout  # the name is there, escaped
    assert "\x1b" not in done.stdout + done.stderr and "\x07" not in done.stdout
    assert "\u202e" not in done.stdout
    assert not any(line.startswith("imported: fake") for line in done.stdout.splitlines())


def test_json_output_keeps_the_exact_name(imported: Dropbox) -> None:
    done = imported.cli("ledger", "--json")
    assert "\x1b" not in done.stdout
    assert json.loads(done.stdout.splitlines()[0])["package"] == f"{EVIL}.tar.gz"
