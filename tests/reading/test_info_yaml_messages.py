"""A YAML syntax error in ymir-info.yaml says where it is and what to change, in plain words:
no parser state, no quoted source line with a caret, one line of text."""

from __future__ import annotations

import re

import pytest

from ymir_dropbox.reading.info_yaml import load_info

POSITION = re.compile(r"ymir-info\.yaml line \d+, column \d+: \S")


def only_problem(data: bytes) -> tuple[str, str, str]:
    document, problems = load_info(data)
    assert document is None
    assert len(problems) == 1, problems
    problem = problems[0]
    return problem.code, problem.field, problem.message


MESSAGES = {
    "value-holding-colon-space": (
        b"executor_config:\n  class_names: [person]\nstages:\n  best: a: b\n",
        "ymir-info.yaml line 4, column 10: a mapping value is not allowed here (is a ':' missing"
        " a space after it, a value holding ': ' not quoted, or this line indented wrong?)",
    ),
    "unclosed-list": (
        b"a: [1, 2\n",
        "ymir-info.yaml line 2, column 1: expected ',' or ']', but found the end of the file, "
        "in the list opened with '[' at line 1, column 4",
    ),
    "unclosed-quote": (
        b"a: 'x\n",
        "ymir-info.yaml line 2, column 1: the file ends before the quoted text at line 1, "
        "column 4 is closed",
    ),
    "tab-indent": (
        b"a:\n\t- 1\n",
        "ymir-info.yaml line 2, column 1: a tab: YAML indents with spaces only",
    ),
    "undefined-alias": (
        b"a: *nothing\n",
        "ymir-info.yaml line 1, column 4: the alias *nothing refers to no anchor &nothing above it",
    ),
    "two-documents": (
        b"a: 1\n---\nb: 2\n",
        "ymir-info.yaml line 2, column 1: a second YAML document starts here; "
        "ymir-info.yaml holds one",
    ),
    "outdented-key": (
        b"a: 1\nb:\n  c: 2\n d: 3\n",
        "ymir-info.yaml line 4, column 2: this line is not indented like the lines above it, "
        "in the mapping at line 1, column 1",
    ),
    "invalid-utf8": (
        b"a: 1\nb: caf\xe9\n",
        "ymir-info.yaml line 2, column 7: byte 0xe9 is not UTF-8 (save the file as UTF-8)",
    ),
    "control-character": (
        b"a: 1\nb: \x07\n",
        "ymir-info.yaml line 2, column 4: the character U+0007 is not allowed in YAML "
        "(write it as an escape in double quotes)",
    ),
    "impossible-date": (
        b"a: 1\nt: 2022-13-45\n",
        "ymir-info.yaml line 2, column 4: '2022-13-45' is not a valid timestamp: "
        "month must be in 1..12",
    ),
    "not-an-int": (b"n: !!int x\n", "ymir-info.yaml line 1, column 4: 'x' is not a valid int"),
}


@pytest.mark.parametrize(("data", "message"), MESSAGES.values(), ids=MESSAGES.keys())
def test_a_syntax_error_says_where_and_what(data: bytes, message: str) -> None:
    assert only_problem(data) == ("info.invalid_yaml", "ymir-info.yaml", message)


MORE_SYNTAX_ERRORS = {
    "unclosed-mapping": b"{a: 1\n",
    "unclosed-double-quote": b'a: "x\n',
    "unknown-escape": b'a: "\\q"\n',
    "reserved-character": b"a: @x\n",
    "list-as-key": b"? [a, b]\n: c\n",
    "list-after-mapping": b"a: b\n- c\n",
    "duplicate-anchor": b"a: &x 1\nb: &x 2\n",
    "document-after-end-marker": b"a: 1\n...\nb: 2\n",
    "yaml-2": b"%YAML 2.0\n---\na: 1\n",
    "not-a-float": b"f: !!float x\n",
    "bom-then-invalid-utf8": b"\xef\xbb\xbfa: \xff\n",
}


@pytest.mark.parametrize(
    "data",
    [*MORE_SYNTAX_ERRORS.values(), *(data for data, _ in MESSAGES.values())],
    ids=[*MORE_SYNTAX_ERRORS.keys(), *MESSAGES.keys()],
)
def test_no_parser_internals_in_the_message(data: bytes) -> None:
    code, field, message = only_problem(data)

    assert (code, field) == ("info.invalid_yaml", "ymir-info.yaml")
    assert POSITION.match(message), message
    assert "\n" not in message
    for internal in ("<unicode string>", "^", "while ", "<stream end>", "<block", "codec"):
        assert internal not in message
