"""Loading ymir-info.yaml from an untrusted package: safe tags only, no bombs, bounded depth."""

from __future__ import annotations

import datetime

import pytest
from factory import info_yaml, seed_info

from ymir_dropbox.reading.info_yaml import MAX_DEPTH, MAX_NODES, load_info


def codes_and_fields(text: str | bytes) -> list[tuple[str, str]]:
    data = text.encode() if isinstance(text, str) else text
    document, problems = load_info(data)
    assert (document is None) == bool(problems)
    return [(problem.code, problem.field) for problem in problems]


def test_the_seed_document_loads() -> None:
    assert load_info(info_yaml(seed_info())) == (seed_info(), [])


ACCEPTED = {
    "byte-order-mark": ("\ufeffa: 1\n", {"a": 1}),
    "merge-key": (
        "base: &b {x: 1}\nc:\n  <<: *b\n  y: 2\n",
        {"base": {"x": 1}, "c": {"x": 1, "y": 2}},
    ),
    "small-alias": ("a: &x [1, 2]\nb: *x\n", {"a": [1, 2], "b": [1, 2]}),
    "binary": ("b: !!binary aGk=\n", {"b": b"hi"}),
    "timestamp": ("t: 2022-06-23\n", {"t": datetime.date(2022, 6, 23)}),
    "explicit-str-tag": ("s: !!str 1\n", {"s": "1"}),
    "number-keys-below-the-top": ("stages: {1000: a}\n", {"stages": {1000: "a"}}),
    "nesting-at-the-limit": ("a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n", None),
}


@pytest.mark.parametrize(("text", "expected"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_documents(text: str, expected: object) -> None:
    document, problems = load_info(text.encode())

    assert problems == []
    if expected is not None:
        assert document == expected


REFUSED: dict[str, tuple[str | bytes, list[tuple[str, str]]]] = {
    "python-object": (
        "a: !!python/object/apply:os.system ['true']\n",
        [("info.yaml_tag", "a")],
    ),
    "python-name-at-the-top": ("!!python/name:os.system\n", [("info.yaml_tag", "ymir-info.yaml")]),
    "python-tuple-in-a-list": ("a: [1, !!python/tuple [1, 2]]\n", [("info.yaml_tag", "a[1]")]),
    "local-tag": ("a: !custom 1\n", [("info.yaml_tag", "a")]),
    "set": ("a: !!set {x}\n", [("info.yaml_tag", "a")]),
    "omap": ("a: !!omap [x: 1]\n", [("info.yaml_tag", "a")]),
    "two-bad-tags": (
        "a: !x 1\nb: !y 2\n",
        [("info.yaml_tag", "b"), ("info.yaml_tag", "a")],
    ),
    "duplicate-top-key": ("a: 1\na: 2\n", [("info.duplicate_key", "a")]),
    "duplicate-nested-key": ("a:\n  b: 1\n  b: 2\n", [("info.duplicate_key", "a.b")]),
    "list": ("- a\n", [("info.not_mapping", "ymir-info.yaml")]),
    "scalar": ("text\n", [("info.not_mapping", "ymir-info.yaml")]),
    "empty": ("", [("info.not_mapping", "ymir-info.yaml")]),
    "comment-only": ("# nothing\n", [("info.not_mapping", "ymir-info.yaml")]),
    "number-key-at-the-top": ("1: a\n", [("info.not_mapping", "ymir-info.yaml")]),
    "two-documents": ("a: 1\n---\nb: 2\n", [("info.invalid_yaml", "ymir-info.yaml")]),
    "unclosed-flow": ("a: [1, 2\n", [("info.invalid_yaml", "ymir-info.yaml")]),
    "tab-indent": ("a:\n\t- 1\n", [("info.invalid_yaml", "ymir-info.yaml")]),
    "undefined-alias": ("a: *nothing\n", [("info.invalid_yaml", "ymir-info.yaml")]),
    "list-as-key": ("? [a, b]\n: c\n", [("info.invalid_yaml", "ymir-info.yaml")]),
    "invalid-utf8": (b"a: \xff\n", [("info.invalid_yaml", "ymir-info.yaml")]),
    "latin-1": ("a: caf\xe9\n".encode("latin-1"), [("info.invalid_yaml", "ymir-info.yaml")]),
    "one-level-too-deep": (
        "a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n",
        [("info.too_deep", "a" + "[0]" * MAX_DEPTH)],
    ),
    "past-the-recursion-limit": (
        "a: " + "[" * 800 + "]" * 800 + "\n",
        [("info.too_deep", "ymir-info.yaml")],
    ),
    "wide-alias-bomb": (
        "a: &a [" + ",".join(["x"] * 1000) + "]\nb: [" + ",".join(["*a"] * 200) + "]\n",
        [("info.yaml_bomb", "ymir-info.yaml")],
    ),
}


@pytest.mark.parametrize(("text", "expected"), REFUSED.values(), ids=REFUSED.keys())
def test_refused_documents(text: str | bytes, expected: list[tuple[str, str]]) -> None:
    assert codes_and_fields(text) == expected


def test_many_plain_values_are_not_a_bomb() -> None:
    document = "a: [" + ",".join(["1"] * (MAX_NODES // 2)) + "]\n"

    assert codes_and_fields(document) == []


def test_a_refused_document_is_never_constructed() -> None:
    document, _ = load_info(b"a: !!python/object/apply:os.system ['true']\nb: 1\n")

    assert document is None
