"""Which executor image ``task_context.executor`` names: the one given, else the configured
default for what the run is (``[pack.executor]``).

YMIR never checks it on import, but trains, mines and infers with the model only through an
image that can load it: a wrong default is worse than asking.
"""

from __future__ import annotations

from ymir_dropbox.core.settings import PackExecutors
from ymir_dropbox.training.plan import PackInputError, PackPlan


def choose_executor(given: str | None, plan: PackPlan, executors: PackExecutors) -> str:
    """The image for ``plan``; "" only for a package described by ``--stage`` with no
    default configured (the executor is optional in the format)."""
    if given:
        return given
    if not plan.executor_key:
        raise PackInputError(f"{plan.executor_unknown}: pass --executor IMAGE")
    image: str = getattr(executors, plan.executor_key)
    if image or plan.executor_key == "other":
        return image
    if plan.executor_key == "ultralytics":
        raise PackInputError(
            "no published YMIR executor image loads ultralytics checkpoints: pass --executor "
            "IMAGE (an executor image of your own that does), or set it as [pack.executor] "
            "ultralytics in the configuration"
        )
    raise PackInputError(
        f"[pack.executor] {plan.executor_key} is empty in the configuration: pass --executor IMAGE"
    )
