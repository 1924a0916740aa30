"""The schema of ``ymir-info.yaml`` as data (cerberus), for the 2.0.x format and legacy 1.1.0.

Rules with names (``unit_interval``, ``unique_strings``, ``path_component``) live in
:mod:`ymir_dropbox.reading.rules`. Names used as folder or file names inside the stored
package must be plain single path components, so a package can never make us write outside a folder.
"""

from __future__ import annotations

from ymir_dropbox.core.jsonvalues import JsonObject

CURRENT_VERSION = "2.0.0"
KNOWN_VERSIONS = frozenset({"2.0.0", "2.0.1", "2.0.2"})
LEGACY_VERSION = "1.1.0"
METRICS = ("mAP", "mAR", "mIoU", "mAcc", "maskAP", "boxAP")
COUNTS = ("tp", "fp", "fn")
OBJECT_TYPES = (0, 1, 2, 3, 4)

_metric: JsonObject = {"type": "number", "check_with": ["finite", "unit_interval"]}
_count: JsonObject = {"type": "integer", "min": 0, "check_with": "int32"}
_file_name: JsonObject = {"type": "string", "empty": False, "check_with": "path_component"}
_file_list: JsonObject = {
    "type": "list",
    "empty": False,
    "schema": _file_name,
    "check_with": "unique_strings",
}

STAGE: JsonObject = {
    "files": {**_file_list, "required": True},
    "stage_name": {"type": "string", "required": True, "empty": False},
    "timestamp": {"type": "integer", "required": True, "min": 0, "check_with": "int32"},
    "mAP": {**_metric, "required": True},
    **{name: _metric for name in METRICS if name != "mAP"},
    **{name: _count for name in COUNTS},
    **{name.upper(): _count for name in COUNTS},
}

_common: JsonObject = {
    "package_version": {"type": "string"},
    "executor_config": {
        "type": "dict",
        "required": True,
        "allow_unknown": True,
        "schema": {
            "class_names": {
                "type": "list",
                "required": True,
                "empty": False,
                "schema": {"type": "string", "empty": False, "check_with": "non_blank"},
                "check_with": "unique_strings",
            }
        },
    },
    "task_context": {
        "type": "dict",
        "nullable": True,
        "allow_unknown": True,
        "schema": {
            "mAP": _metric,
            "executor": {"type": "string", "nullable": True},
            "producer": {"type": "string", "nullable": True},
        },
    },
    "object_type": {"type": "integer", "allowed": list(OBJECT_TYPES)},
    "attachments": {
        "type": "dict",
        "keysrules": {"type": "string", "empty": False, "check_with": "path_component"},
        "valuesrules": {"type": "list", "schema": _file_name, "check_with": "unique_strings"},
    },
    "evaluate_config": {
        "type": "dict",
        "keysrules": {"type": "string"},
        "valuesrules": {"type": "number", "check_with": "finite"},
    },
    # written by YMIR itself into the packages it stores; ignored on import
    "model_hash": {"type": "string", "nullable": True},
    "stage_name": {"type": "string", "nullable": True},
}

SCHEMA_V2: JsonObject = {
    **_common,
    "stages": {
        "type": "dict",
        "required": True,
        "empty": False,
        "keysrules": {"type": "string", "empty": False, "check_with": "path_component"},
        "valuesrules": {"type": "dict", "schema": STAGE},
    },
    "best_stage_name": {"type": "string", "required": True, "empty": False},
}

SCHEMA_LEGACY: JsonObject = {
    **_common,
    "models": {**_file_list, "required": True},
}

RULE_CODES: dict[str, str] = {
    "required": "info.missing_field",
    "type": "info.wrong_type",
    "nullable": "info.wrong_type",
    "min": "info.out_of_range",
    "max": "info.out_of_range",
    "unit_interval": "info.out_of_range",
    "finite": "info.out_of_range",
    "empty": "info.empty",
    "non_blank": "info.empty",
    "minlength": "info.empty",
    "unique_strings": "info.not_unique",
    "allowed": "info.invalid_value",
    "path_component": "info.bad_file_name",
    "unknown_field": "info.unknown_field",
    "int32": "info.too_large_for_ymir",
}
