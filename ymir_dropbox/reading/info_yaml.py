"""Loading ``ymir-info.yaml`` from an untrusted package: safe tags, bounded size, no bombs."""

from __future__ import annotations

import re
from typing import Any

import yaml

from ymir_dropbox.core.jsonvalues import JsonObject
from ymir_dropbox.reading.archive import INFO_NAME
from ymir_dropbox.reading.hints import numpy_tag_message
from ymir_dropbox.reading.problems import Problem

MAX_NODES = 100_000
MAX_DEPTH = 64
SAFE_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}"
    for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp", "binary")
)


def load_info(data: bytes) -> tuple[JsonObject | None, list[Problem]]:
    """Parse the document; return it when it is a mapping, with the problems found."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        return None, [_invalid(_not_utf8(data, error))]
    try:
        loader = _Loader(text)
    except yaml.YAMLError as error:
        return None, [_invalid(describe_yaml_error(error, text))]
    try:
        try:
            root = loader.get_single_node()
        except RecursionError:
            return None, [
                Problem(
                    "info.too_deep", INFO_NAME, f"{INFO_NAME} nests deeper than {MAX_DEPTH} levels"
                )
            ]
        except yaml.YAMLError as error:
            return None, [_invalid(describe_yaml_error(error, text))]
        if root is None:
            return None, [Problem("info.not_mapping", INFO_NAME, f"{INFO_NAME} is empty")]
        problems = _check_graph(root)
        if problems:
            return None, problems
        if not isinstance(root, yaml.MappingNode):
            return None, [
                Problem("info.not_mapping", INFO_NAME, f"the top of {INFO_NAME} must be a mapping")
            ]
        try:
            document = loader.construct_document(root)
        except yaml.YAMLError as error:
            return None, [_invalid(describe_yaml_error(error, text))]
        except (ValueError, OverflowError) as error:  # not from one value: no position to give
            return None, [_invalid(f"{INFO_NAME}: {error}")]
    finally:
        loader.dispose()
    if not isinstance(document, dict) or not all(isinstance(key, str) for key in document):
        return None, [
            Problem(
                "info.not_mapping", INFO_NAME, f"the top of {INFO_NAME} must map names to values"
            )
        ]
    return document, []


def _check_graph(root: yaml.Node) -> list[Problem]:
    """Walk the node graph as it would expand: tags, depth, duplicate keys, alias bombs."""
    problems: list[Problem] = []
    stack: list[tuple[yaml.Node, int, str]] = [(root, 0, "")]
    visited = 0
    while stack:
        node, depth, path = stack.pop()
        visited += 1
        field = path or INFO_NAME
        if visited > MAX_NODES:
            return [
                Problem(
                    "info.yaml_bomb",
                    INFO_NAME,
                    f"{INFO_NAME} expands to more than {MAX_NODES} values through aliases",
                )
            ]
        if depth > MAX_DEPTH:
            return [
                Problem("info.too_deep", field, f"{INFO_NAME} nests deeper than {MAX_DEPTH} levels")
            ]
        if node.tag not in SAFE_TAGS and node.tag != "tag:yaml.org,2002:merge":
            where = _at(node.start_mark.line, node.start_mark.column)
            message = numpy_tag_message(node, field, where)
            problems.append(
                Problem(
                    "info.yaml_tag",
                    field,
                    message or f"the YAML tag {node.tag!r} is not allowed",
                )
            )
            continue
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key_node, value_node in node.value:
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
                child = f"{path}.{key}" if path else key
                if key in keys:
                    problems.append(
                        Problem("info.duplicate_key", child, f"the key {key!r} appears twice")
                    )
                keys.add(key)
                stack.append((key_node, depth + 1, child))
                stack.append((value_node, depth + 1, child))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(
                (item, depth + 1, f"{path}[{index}]") for index, item in enumerate(node.value)
            )
    return problems


# -- syntax errors in a person's words ------------------------------------------------------------
# PyYAML's messages quote its own state ("while parsing a block mapping", '<block end>') and
# draw the line with a caret; a user needs the line, the column and what to change.

# What PyYAML was inside when it failed ("while ..."), as the thing the user wrote.
_INSIDE = {
    "while parsing a flow sequence": "the list opened with '['",
    "while parsing a flow mapping": "the mapping opened with '{'",
    "while scanning a quoted scalar": "the quoted text",
    "while scanning a double-quoted scalar": "the quoted text",
    "while scanning a block scalar": "the block of text",
    "while scanning a simple key": "the key",
    "while parsing a block mapping": "the mapping",
    "while parsing a block collection": "the list",
    "while parsing a indentless sequence": "the list",
    "while parsing a block node": "the value",
    "while parsing a flow node": "the value",
    "while parsing a node": "the value",
    "while composing a mapping": "the mapping",
    "while constructing a mapping": "the mapping",
    "while scanning an anchor": "the anchor",
    "while scanning an alias": "the alias",
    "while scanning a tag": "the tag",
    "while scanning a directive": "the directive",
}
# PyYAML's names of tokens ('<stream end>') as what the user sees in the file.
_TOKENS = {
    "stream end": "the end of the file",
    "document start": "'---'",
    "document end": "'...'",
    "block end": "the end of an indented block",
    "block mapping start": "a key",
    "block sequence start": "a '- ' list entry",
    "flow mapping start": "'{'",
    "flow mapping end": "'}'",
    "flow sequence start": "'['",
    "flow sequence end": "']'",
    "scalar": "a value",
}
_TOKEN = re.compile(r"'?<([a-z ]+)>'?")
# Problems whose words or whose usual cause are worth spelling out: (pattern, message).
_PROBLEMS = (
    (
        r"mapping values are not allowed here",
        "a mapping value is not allowed here (is a ':' missing a space after it, a value "
        "holding ': ' not quoted, or this line indented wrong?)",
    ),
    (
        r"sequence entries are not allowed here",
        "a '- ' list entry is not allowed here (is it indented like the lines around it?)",
    ),
    (r"found character '\\t' that cannot start any token", "a tab: YAML indents with spaces only"),
    (
        r"found character '(.)' that cannot start any token",
        r"a value cannot start with '\1' (put the value in quotes)",
    ),
    (r"found undefined alias '(.*)'", r"the alias *\1 refers to no anchor &\1 above it"),
    (r"found unhashable key", "a list or a mapping cannot be a key"),
    (r"found unexpected end of stream", "the file ends before {inside} is closed"),
    (
        r"found unknown escape character '(.*)'",
        r"'\\\1' is not an escape in double quotes (write '\\\\' for a backslash, or use "
        "single quotes)",
    ),
    (r"expected <block end>, but found .*", "this line is not indented like the lines above it"),
    (
        r"expected '<document start>', but found .*",
        f"only one YAML document may follow '...'; {INFO_NAME} holds one mapping",
    ),
)


class _Loader(yaml.SafeLoader):
    """The safe loader, whose scalar errors (``!!int x``, a 13th month) name where they are."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as error:
            kind = node.tag.rsplit(":", 1)[-1]
            reason = f": {error}" if kind == "timestamp" else ""
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} is not a valid {kind}{reason}", node.start_mark
            ) from None


def _invalid(message: str) -> Problem:
    return Problem("info.invalid_yaml", INFO_NAME, message)


def _at(line: int, column: int) -> str:
    """A position in the file, counted from 1 as editors do."""
    return f"line {line + 1}, column {column + 1}"


def describe_yaml_error(error: yaml.YAMLError, text: str) -> str:
    """``ymir-info.yaml line 4, column 7: <what is wrong> [, in <what> at line L, column C]``."""
    if isinstance(error, yaml.reader.ReaderError):
        before = text[: error.position]
        line, column = before.count("\n"), len(before) - (before.rfind("\n") + 1)
        character = f"U+{error.character:04X}" if isinstance(error.character, int) else "a byte"
        return (
            f"{INFO_NAME} {_at(line, column)}: the character {character} is not allowed in YAML "
            "(write it as an escape in double quotes)"
        )
    if not isinstance(error, yaml.MarkedYAMLError):
        return f"{INFO_NAME}: {error}"
    mark = error.problem_mark or error.context_mark
    where = f" {_at(mark.line, mark.column)}" if mark is not None else ""
    opened = error.context_mark
    opened_at = _at(opened.line, opened.column) if opened is not None else ""
    if error.context == "expected a single document in the stream":
        return f"{INFO_NAME}{where}: a second YAML document starts here; {INFO_NAME} holds one"
    anchor = re.fullmatch(r"found duplicate anchor '(.*)'; first occurrence", error.context or "")
    if anchor:
        first = f" (first at {opened_at})" if opened_at else ""
        return f"{INFO_NAME}{where}: the anchor &{anchor.group(1)} is defined again{first}"
    problem = _plain_problem(error.problem or error.context or "invalid YAML")
    inside = _INSIDE.get(error.context or "", "")
    if inside and opened_at and opened is not mark:
        inside = f"{inside} at {opened_at}"
        problem = problem if "{inside}" in problem else problem + ", in {inside}"
    return f"{INFO_NAME}{where}: {problem.replace('{inside}', inside or 'it')}"


def _plain_problem(problem: str) -> str:
    for pattern, replacement in _PROBLEMS:
        match = re.fullmatch(pattern, problem)
        if match:
            return match.expand(replacement)
    return _TOKEN.sub(
        lambda token: _TOKENS.get(token.group(1), token.group(1)),
        problem.replace(", but got ", ", but found "),
    )


def _not_utf8(data: bytes, error: UnicodeDecodeError) -> str:
    start = error.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
    before = data[:start]
    line, column = before.count(b"\n"), len(before) - (before.rfind(b"\n") + 1)
    return (
        f"{INFO_NAME} {_at(line, column)}: byte 0x{data[start]:02x} is not UTF-8 "
        "(save the file as UTF-8)"
    )
