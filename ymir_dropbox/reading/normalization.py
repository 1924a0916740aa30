"""Normalization: turn any accepted ``ymir-info.yaml`` into the 2.0.0 form YMIR stores.

The result has exactly the fields of YMIR's ``ModelStorage`` (ymir-cmd 2.3.0), every metric
present, ``tp``/``fp``/``fn`` spelled in lowercase, ``object_type`` 0 read as 2 (detection),
and ``task_context`` always a mapping, because YMIR's reader requires it.
"""

from __future__ import annotations

import yaml

from ymir_dropbox.core.jsonvalues import JsonObject
from ymir_dropbox.reading.info_schema import COUNTS, CURRENT_VERSION, METRICS

LEGACY_STAGE = "default_best_stage"
DETECTION = 2


def migrate_legacy(info: JsonObject, timestamp: int) -> JsonObject:
    """Turn a 1.1.0 document (``models:`` list) into 2.0.0 the way YMIR does.

    YMIR stamps the stage with the import time; we use ``timestamp`` (the mtime of
    ``ymir-info.yaml`` in the archive) so that the same package always stores the same bytes.
    """
    task_context = info.get("task_context") or {}
    migrated = {key: value for key, value in info.items() if key != "models"}
    migrated["stages"] = {
        LEGACY_STAGE: {
            "files": list(info["models"]),
            "mAP": task_context.get("mAP", 0),
            "stage_name": LEGACY_STAGE,
            "timestamp": timestamp,
        }
    }
    migrated["best_stage_name"] = LEGACY_STAGE
    migrated["package_version"] = CURRENT_VERSION
    return migrated


def normalize(info: JsonObject) -> JsonObject:
    """The stored form of a valid 2.0.x document (unknown fields dropped, defaults filled)."""
    stages = {}
    for name, stage in info["stages"].items():
        normalized: JsonObject = {
            "stage_name": stage["stage_name"],
            "files": list(stage["files"]),
            "timestamp": stage["timestamp"],
        }
        for metric in METRICS:
            normalized[metric] = stage.get(metric, 0)
        for count in COUNTS:
            normalized[count] = stage.get(count, stage.get(count.upper(), 0))
        stages[name] = normalized
    object_type = info.get("object_type") or DETECTION
    return {
        "executor_config": info["executor_config"],
        "task_context": info.get("task_context") or {},
        "stages": stages,
        "best_stage_name": info["best_stage_name"],
        "model_hash": "",
        "stage_name": "",
        "attachments": info.get("attachments") or {},
        "evaluate_config": info.get("evaluate_config") or {},
        "object_type": object_type,
        "package_version": CURRENT_VERSION,
    }


def dump_info(normalized: JsonObject) -> bytes:
    """The bytes of the stored ``ymir-info.yaml``: sorted keys, so always the same for one input."""
    text = yaml.safe_dump(normalized, sort_keys=True, allow_unicode=True, default_flow_style=False)
    return text.encode("utf-8")
