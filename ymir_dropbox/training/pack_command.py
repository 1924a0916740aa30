"""``pack`` when the command line says what to pack: ``--from`` a training run, or
``--stage`` and its flags for any other layout (the options: :mod:`pack_options`). The one
function the CLI calls, which returns what to print and the exit code.

Without these options ``pack DIR`` packs a folder holding its own ``ymir-info.yaml``
(:func:`~ymir_dropbox.training.packing.pack_folder`).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ymir_dropbox.config import Config
from ymir_dropbox.reading.archive import INFO_NAME
from ymir_dropbox.reading.validation import ValidationReport
from ymir_dropbox.training.executors import choose_executor
from ymir_dropbox.training.flag_stages import parse_class_names, plan_from_flags
from ymir_dropbox.training.mmdet_runs import read_mmdet_run
from ymir_dropbox.training.package_writer import write_package
from ymir_dropbox.training.packing import check_output_name, publish_package
from ymir_dropbox.training.plan import PackInputError, PackPlan, default_producer, dump_yaml
from ymir_dropbox.training.yolo_runs import ULTRALYTICS, YOLOV5, read_yolo_run

EXIT_OK, EXIT_FAILED = 0, 1
WEB_UPLOAD_BYTES = 1000**3  # YMIR's web app takes uploads up to 1 GB


@dataclass(frozen=True, slots=True)
class PackOutcome:
    exit_code: int
    output: tuple[str, ...] = ()  # for stdout
    messages: tuple[str, ...] = ()  # for stderr


def run_pack(config: Config, options: argparse.Namespace) -> PackOutcome:
    """Describe the package, then print it (``--dry-run``) or write it to ``-o``.

    Raises :class:`PackInputError` for a command line or a run folder that cannot make a
    package, before anything is written.
    """
    folder: Path = options.folder
    if not folder.is_dir():
        raise PackInputError(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    if not options.framework and not options.stages:
        return _own_info(folder, options)
    plan = describe(folder, options, config)
    text = dump_yaml(plan.info())
    notes = tuple(f"note: {note}" for note in plan.notes)
    if not plan.executor:
        notes += (
            "note: no --executor: YMIR imports the model, but can train, mine and infer "
            "with it only once task_context.executor names an image that loads it",
        )
    output: Path | None = options.output
    if output is not None:
        _check_output(output, folder, config)
    if options.dry_run:
        return PackOutcome(EXIT_OK, (text.rstrip("\n"),), notes)
    if output is None:
        raise PackInputError("pack needs -o OUT.tar.gz (or --dry-run)")

    try:
        report = write_described(plan, output, config)
    except OSError as error:  # an existing output, a full disk
        return PackOutcome(EXIT_FAILED, (), (*notes, f"ymir-dropbox: {error}"))
    if not report.ok:
        problems = tuple(f"  error: {p.code} [{p.field}]: {p.message}" for p in report.errors)
        return PackOutcome(EXIT_FAILED, (), (*notes, f"{output}: not written", *problems))
    stages = ", ".join(stage.name for stage in plan.stages)
    if report.package_bytes > WEB_UPLOAD_BYTES:
        notes += (
            f"note: {output} is {report.package_bytes / 1000**3:.1f} GB: over the 1 GB YMIR's "
            "web upload takes; drop it into the inbox instead",
        )
    return PackOutcome(
        EXIT_OK,
        (
            f"{output}: ok, best_stage_name: {plan.best}, mAP: {plan.best_stage.mAP}, "
            f"stages: {stages}",
            f"  executor: {plan.executor or '(none)'}, sha256: {report.sha256}",
        ),
        notes,
    )


def write_described(plan: PackPlan, output: Path, config: Config) -> ValidationReport:
    """Write the package ``plan`` describes to ``output`` if it is valid (as
    :func:`~ymir_dropbox.training.packing.publish_package` does); return the report."""
    text = dump_yaml(plan.info()).encode()

    def write(stream: BinaryIO, _: Path) -> None:
        write_package(stream, text, plan.members(), config.import_.compression_level)

    return publish_package(output, config.limits, write)


def describe(folder: Path, options: argparse.Namespace, config: Config) -> PackPlan:
    """The package the options describe: read from the run, executor and producer chosen."""
    framework: str | None = options.framework
    if framework and (options.stages or options.maps or options.metrics):
        raise PackInputError("--stage, --mAP and --metric describe a folder without --from")
    if framework:
        classes = parse_class_names(options.classes) if options.classes is not None else None
        if framework == "mmdet":
            plan = read_mmdet_run(folder, classes)
        else:
            plan = read_yolo_run(
                folder, ULTRALYTICS if framework == "ultralytics" else YOLOV5, classes
            )
    else:
        plan = plan_from_flags(
            folder, options.classes, options.stages, options.maps, options.metrics, options.best
        )
    if options.best and options.best not in {stage.name for stage in plan.stages}:
        packed = ", ".join(stage.name for stage in plan.stages)
        raise PackInputError(f"--best {options.best}: no such stage is packed ({packed})")
    return dataclasses.replace(
        plan,
        best=options.best or plan.best,
        executor=choose_executor(options.executor, plan, config.pack.executor),
        producer=options.producer or config.pack.producer or default_producer(),
    )


def _own_info(folder: Path, options: argparse.Namespace) -> PackOutcome:
    """DIR holds its own ``ymir-info.yaml``: ``--dry-run`` shows it; it is packed as it is."""
    own = folder / INFO_NAME
    if not own.is_file():
        raise PackInputError(
            f"{folder}: no {INFO_NAME}; describe the package with --from FRAMEWORK, or with "
            "--stage NAME=FILE,... --mAP NAME=VALUE --classes NAME,..."
        )
    extra = [
        name
        for name in ("maps", "metrics", "best", "classes", "executor", "producer")
        if getattr(options, name)
    ]
    if extra or not options.dry_run:
        raise PackInputError(
            f"{own} is packed as it is: --mAP, --metric, --best, --classes, --executor and "
            "--producer go with --from or --stage"
        )
    return PackOutcome(EXIT_OK, (own.read_text(encoding="utf-8").rstrip("\n"),))


def _check_output(output: Path, folder: Path, config: Config) -> None:
    """Refuse an output inside the run (pack never writes there) or one the daemon skips."""
    try:
        output.absolute().parent.resolve().relative_to(folder.resolve())
    except ValueError:
        pass
    else:
        raise PackInputError(
            f"-o {output}: inside {folder}; pack never writes into the folder it reads"
        )
    check_output_name(output, config.watch, config.paths.inbox)
