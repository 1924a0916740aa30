"""Loading ``ymir-info.yaml`` from an untrusted package: safe tags, bounded size, no bombs."""

from __future__ import annotations

from typing import Any

import yaml

from ymir_dropbox.reading.archive import INFO_NAME
from ymir_dropbox.reading.problems import Problem

MAX_NODES = 100_000
MAX_DEPTH = 64
SAFE_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}"
    for name in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp", "binary")
)


def load_info(data: bytes) -> tuple[dict[str, Any] | None, list[Problem]]:
    """Parse the document; return it when it is a mapping, with the problems found."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        return None, [Problem("info.invalid_yaml", INFO_NAME, f"{INFO_NAME} is not UTF-8: {error}")]
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as error:
        return None, [Problem("info.invalid_yaml", INFO_NAME, f"{INFO_NAME}: {error}")]
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
            return None, [Problem("info.invalid_yaml", INFO_NAME, f"{INFO_NAME}: {error}")]
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
        except (yaml.YAMLError, ValueError, OverflowError) as error:
            return None, [Problem("info.invalid_yaml", INFO_NAME, f"{INFO_NAME}: {error}")]
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
            problems.append(
                Problem("info.yaml_tag", field, f"the YAML tag {node.tag!r} is not allowed")
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
