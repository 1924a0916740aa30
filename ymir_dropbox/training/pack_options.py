"""The options of ``pack`` that describe the package instead of a ``ymir-info.yaml`` in DIR.

Apart from :mod:`pack_command`, which carries them out, so that building the command line
of every command imports nothing more than argparse.
"""

from __future__ import annotations

import argparse

FRAMEWORKS = ("ultralytics", "yolov5", "mmdet")


def add_pack_options(parser: argparse.ArgumentParser) -> None:
    """The options that describe the package instead of a ``ymir-info.yaml`` in DIR."""
    parser.add_argument(
        "--from",
        dest="framework",
        choices=FRAMEWORKS,
        help="DIR is a training run: ultralytics (runs/detect/trainN), yolov5 (runs/train/expN) "
        "or mmdet (mmdetection 2.x work_dirs/CONFIG); ymir-info.yaml is written from it",
    )
    parser.add_argument(
        "--classes",
        metavar="NAME,NAME,...",
        help="the class names, in class-index order (with --from: instead of the dataset's)",
    )
    parser.add_argument(
        "--stage",
        dest="stages",
        action="append",
        default=[],
        metavar="NAME=FILE[,FILE...]",
        help="a stage and its files (relative to DIR); repeat for each stage",
    )
    parser.add_argument(
        "--mAP",
        dest="maps",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a stage's mAP",
    )
    parser.add_argument(
        "--metric",
        dest="metrics",
        action="append",
        default=[],
        metavar="NAME.KEY=VALUE",
        help="another metric of a stage: mAR, tp, fp, fn, mIoU, mAcc, maskAP, boxAP",
    )
    parser.add_argument("--best", metavar="NAME", help="the best stage (default: highest mAP)")
    parser.add_argument(
        "--executor",
        metavar="IMAGE",
        help="task_context.executor: the docker image YMIR trains, mines and infers with this "
        "model (default: [pack.executor] for the framework)",
    )
    parser.add_argument(
        "--producer",
        metavar="NAME",
        help="task_context.producer (default: [pack] producer, else user@host)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the ymir-info.yaml that would be packed; write nothing",
    )


def describes_the_package(options: argparse.Namespace) -> bool:
    """Whether the command line, not a ``ymir-info.yaml`` in DIR, says what to pack."""
    return any(
        (
            options.framework,
            options.stages,
            options.maps,
            options.metrics,
            options.best,
            options.classes is not None,
            options.executor,
            options.producer,
        )
    )
