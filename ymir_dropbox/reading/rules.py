"""The cerberus validator both schemas use: strict types and rules named in plain English.

YAML and TOML both give ``bool`` as a subclass of ``int`` in Python; a ``true`` where a count
belongs is a mistake, so ``integer`` and ``number`` refuse bools here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cerberus import TypeDefinition, Validator
from cerberus import errors as cerberus_errors

from ymir_dropbox.core.jsonvalues import JsonObject
from ymir_dropbox.reading.names import is_path_component

# Errors of our named rules: cerberus files them under ``check_with``; the first item of
# their info says which rule failed (see ``schema_errors``).
CHECK_FAILED = cerberus_errors.ErrorDefinition(
    0x4F, "check_with"
)  # a value error, like min and max


INT32_MAX = 2**31 - 1  # YMIR keeps timestamps and counts in 32-bit integers

# Rules several schemas share (the configuration and each backend's table).
PATH: JsonObject = {"type": "string", "empty": False}
POSITIVE_NUMBER: JsonObject = {"type": "number", "min": 0.001, "check_with": "finite"}


class StrictValidator(Validator):  # type: ignore[misc]
    types_mapping = Validator.types_mapping.copy()
    types_mapping["integer"] = TypeDefinition("integer", (int,), (bool,))
    types_mapping["number"] = TypeDefinition("number", (int, float), (bool,))

    def _check_with_unit_interval(self, field: str, value: Any) -> None:
        if isinstance(value, int | float) and not (0.0 <= value <= 1.0):
            self._error(field, CHECK_FAILED, "unit_interval", value)

    def _check_with_finite(self, field: str, value: Any) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            self._error(field, CHECK_FAILED, "finite", value)

    def _check_with_unique_strings(self, field: str, value: Any) -> None:
        if isinstance(value, list):
            seen: set[Any] = set()
            for item in value:
                if not isinstance(item, str):
                    continue  # the type rule reports it
                if item in seen:
                    self._error(field, CHECK_FAILED, "unique_strings", item)
                seen.add(item)

    def _check_with_path_component(self, field: str, value: Any) -> None:
        if isinstance(value, str) and not is_path_component(value):
            self._error(field, CHECK_FAILED, "path_component", value)

    def _check_with_int32(self, field: str, value: Any) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and value > INT32_MAX:
            self._error(field, CHECK_FAILED, "int32", value)

    def _check_with_non_blank(self, field: str, value: Any) -> None:
        if isinstance(value, str) and not value.strip():
            self._error(field, CHECK_FAILED, "non_blank", value)


@dataclass(frozen=True, slots=True)
class SchemaError:
    """One cerberus error, flattened: where it is, which rule failed, and the details."""

    path: tuple[Any, ...]
    rule: str
    constraint: Any
    value: Any

    @property
    def dotted(self) -> str:
        parts: list[str] = []
        for part in self.path:
            if isinstance(part, int):
                parts.append(f"[{part}]")
            else:
                parts.append(("." if parts else "") + str(part))
        return "".join(parts)


def schema_errors(validator: StrictValidator) -> Iterator[SchemaError]:
    """Every leaf error of the last validation, in document order."""

    def leaves(errors: Any) -> Iterator[Any]:
        for error in errors:
            if error.is_group_error:
                yield from leaves(error.child_errors)
            else:
                yield error

    for error in leaves(validator._errors):
        rule = error.rule
        value = error.value
        if rule == "check_with" and error.info:
            rule, value = error.info[0], error.info[1]
        elif rule is None:
            rule = "unknown_field" if error.code == cerberus_errors.UNKNOWN_FIELD.code else "other"
        yield SchemaError(tuple(error.document_path), rule, error.constraint, value)


def keys_beside(schema: JsonObject, path: tuple[Any, ...]) -> list[str]:
    """The keys a schema allows beside the unknown one at ``path`` (for a "did you mean"):
    the configuration's and ymir-info.yaml's alike."""
    rules: JsonObject = {"schema": schema}
    for part in path[:-1]:
        inner = rules.get("schema")
        if isinstance(inner, dict) and str(part) in inner:
            rules = inner[str(part)]
        elif isinstance(rules.get("valuesrules"), dict):
            rules = rules["valuesrules"]  # a key chosen by the package (a stage's name)
        else:
            return []
    fields = rules.get("schema")
    return list(fields) if isinstance(fields, dict) else []
