"""Whether YMIR can run a package's executor: the docker image ``task_context.executor``
names, as YMIR's Docker images page has it, judged in a person's words.

YMIR never checks an imported model's executor: a user picks one of the images registered in
YMIR to train, mine or infer with the model. A package whose image YMIR lacks imports fine
and then cannot be used; this says so in the attempt's warnings (or refuses it, before
anything is sent, with ``import.ymir_api.require_registered_executor``).
"""

from __future__ import annotations

from collections.abc import Iterator

import structlog

from ymir_dropbox.core.jsonvalues import JsonObject
from ymir_dropbox.reading.problems import Problem, register_codes
from ymir_dropbox.storing.backends import ImportFailed
from ymir_dropbox.storing.backends.ymir_client import (
    DockerImage,
    ImageState,
    ImageTask,
    YmirClient,
    YmirError,
)
from ymir_dropbox.storing.checks import Finding

log = structlog.get_logger(__name__)
# The executor image as YMIR has it: warnings; the first three are errors, before anything
# is sent to YMIR, with import.ymir_api.require_registered_executor (see reading.problems).
PROBLEMS: dict[str, str] = {
    "ymir.executor_not_registered": "YMIR has no docker image of the name task_context.executor "
    "gives",
    "ymir.executor_not_ready": "the executor image is registered in YMIR but pending (being "
    "pulled) or in error",
    "ymir.executor_missing": "the package names no executor (task_context.executor), and "
    "import.ymir_api.require_registered_executor asks for one",
    "ymir.executor_partial": "the executor image serves only some of training, mining and "
    "inference in YMIR (warning)",
    "ymir.executor_unchecked": "YMIR could not be asked about the executor image (warning; "
    "an error when import.ymir_api.require_registered_executor is true and YMIR refused)",
}
register_codes(PROBLEMS)
FIELD = "task_context.executor"
REGISTER = "register it in YMIR's web app (Docker images page)"
STATE_WORDS = {
    ImageState.PENDING: "pending (being pulled)",
    ImageState.DONE: "ready",
    ImageState.ERROR: "error (its pull failed)",
}
TASK_WORDS = {
    ImageTask.TRAINING: "training",
    ImageTask.MINING: "mining",
    ImageTask.INFERENCE: "inference",
}
# What require_registered_executor refuses: an image YMIR cannot run at all.
UNUSABLE = frozenset({"ymir.executor_not_registered", "ymir.executor_not_ready"})


def executor_of(normalized: JsonObject) -> str | None:
    """The executor image the package names, or None (absent, null or blank)."""
    executor = (normalized.get("task_context") or {}).get("executor")
    return executor if isinstance(executor, str) and executor.strip() else None


def state_words(image: DockerImage) -> str:
    """``ready``, ``pending (being pulled)``, ...; a state this client does not know by its
    number."""
    known = {int(state): words for state, words in STATE_WORDS.items()}
    return known.get(image.state, f"state {image.state}")


def task_words(tasks: tuple[int, ...]) -> str:
    """``training, mining``: the task types YMIR knows, in their order; others left out."""
    return ", ".join(words for task, words in TASK_WORDS.items() if task in tasks)


def judge(executor: str, image: DockerImage | None) -> Problem | None:
    """What is wrong with the executor as YMIR has it (``image`` the exact match), or None."""
    if image is None:
        return Problem(
            "ymir.executor_not_registered",
            FIELD,
            f"{FIELD} is {executor!r}, an image YMIR does not have: {REGISTER}, or fix "
            f"{FIELD}; until then nobody can train, mine or infer with this model in YMIR",
        )
    named = f"{FIELD} is {executor!r}, YMIR's image {image.id}"
    if image.state == ImageState.PENDING:
        return Problem(
            "ymir.executor_not_ready",
            FIELD,
            f"{named}, which is pending (still being pulled): YMIR cannot run it until the "
            f"pull is done (see its Docker images page), or fix {FIELD}",
        )
    if image.state != ImageState.DONE:
        how = (
            "in error (its pull failed)"
            if image.state == ImageState.ERROR
            else f"in state {image.state}, not ready"
        )
        return Problem(
            "ymir.executor_not_ready",
            FIELD,
            f"{named}, which is {how}: YMIR cannot run it; {REGISTER} again, or fix {FIELD}",
        )
    lacking = [words for task, words in TASK_WORDS.items() if task not in image.tasks]
    if not lacking:
        return None
    serves = task_words(image.tasks)
    without = " or ".join(lacking)
    return Problem(
        "ymir.executor_partial",
        FIELD,
        f"{named}, which serves {'only ' + serves if serves else 'no task'}: YMIR cannot use "
        f"it for {without} with this model; register an image that serves {without} in "
        f"YMIR's web app (Docker images page), or fix {FIELD}",
    )


def judge_executor(
    client: YmirClient, normalized: JsonObject | None, required: bool
) -> tuple[Problem, ...]:
    """The package's executor image as YMIR has it: a warning for the ledger when YMIR
    cannot run it. ``required`` (``require_registered_executor`` and nothing sent yet):
    such a package fails instead, and a lookup YMIR could not answer is a passing fault."""
    assert normalized is not None
    executor = executor_of(normalized)
    if executor is None:  # validation says so, in its own warnings
        if required:
            raise ImportFailed([refused_before_sending(missing())])
        return ()
    try:
        image = client.image(executor)
    except YmirError as error:
        if required and error.passing:
            raise  # retried later, as any call YMIR could not answer
        log.warning("ymir_executor_unchecked", executor=executor, error=str(error))
        if required:
            raise ImportFailed([refused_before_sending(unchecked(executor, error))]) from None
        return (unchecked(executor, error),)
    problem = judge(executor, image)
    log.info(
        "ymir_executor_checked",
        executor=executor,
        image_id=image.id if image else None,
        verdict=problem.code if problem else "ok",
    )
    if problem is None:
        return ()
    if required and problem.code in UNUSABLE:
        raise ImportFailed([refused_before_sending(problem)])
    return (problem,)


def missing() -> Problem:
    """A package that names no executor, when one is required."""
    return Problem(
        "ymir.executor_missing",
        FIELD,
        f"the package names no executor image ({FIELD} is absent or empty): name the image "
        "YMIR trains, mines and infers with this model",
    )


def unchecked(executor: str, error: YmirError) -> Problem:
    """The lookup failed: the executor could not be judged."""
    return Problem(
        "ymir.executor_unchecked",
        FIELD,
        f"could not ask YMIR whether it has the image {FIELD} names ({executor!r}): {error} "
        "The import went on without that check: look for the image on YMIR's Docker images "
        "page",
    )


def refused_before_sending(problem: Problem) -> Problem:
    """The problem as the error that stopped the import (require_registered_executor)."""
    return Problem(
        problem.code,
        problem.field,
        f"{problem.message} (import.ymir_api.require_registered_executor is true: nothing "
        "was sent to YMIR)",
    )


def image_findings(client: YmirClient, required: bool) -> Iterator[Finding]:
    """``check``: every image YMIR has, its state and the tasks it serves, in words."""
    what = "YMIR's docker images"
    try:
        images = client.images()
    except YmirError as error:
        yield Finding(what, False, str(error))
        return
    if not images:
        refused = "; require_registered_executor refuses them all" if required else ""
        detail = "none registered: every package's executor is reported as not registered"
        yield Finding(what, not required, detail + refused)
        return
    for image in images:
        serves = task_words(image.tasks) or "serves no task"
        yield Finding(f"image {image.url}", True, f"{state_words(image)}; {serves}")
