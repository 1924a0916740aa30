"""What ``push`` delivers: each SOURCE made a package file with its name and sha256.

A SOURCE is a package file, delivered as it is, or a folder ``pack`` can build: one holding
its own ``ymir-info.yaml``, or a training run described by ``--from`` (or ``--stage``) and
the other ``pack`` options. A folder is packed into a scratch folder outside the run, and
checked as the daemon will check it, before anything is delivered.
"""

from __future__ import annotations

import argparse
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ymir_dropbox.config import Config
from ymir_dropbox.core.errors import UsageError
from ymir_dropbox.reading.archive import INFO_NAME, file_sha256
from ymir_dropbox.reading.problems import Problem
from ymir_dropbox.storing.folders import is_ignored, is_package_name
from ymir_dropbox.training.pack_command import describe, write_described
from ymir_dropbox.training.pack_options import describes_the_package
from ymir_dropbox.training.packing import pack_folder
from ymir_dropbox.training.plan import PackInputError


@dataclass(frozen=True, slots=True)
class Package:
    """One package to deliver."""

    source: Path  # what the command line named
    path: Path  # the package file (the source, or one packed in the scratch folder)
    name: str  # the name it is delivered under
    sha256: str


@dataclass(frozen=True, slots=True)
class Unbuilt:
    """A folder that does not make a valid package: nothing is delivered."""

    source: Path
    name: str
    problems: tuple[Problem, ...]


def delivered_names(sources: list[Path], name: str | None) -> list[str]:
    """The name each source is delivered under: ``--name`` (one source only), a package's
    own name, a folder's name with ``.tar.gz``."""
    if name is not None:
        if len(sources) != 1:
            raise UsageError("--name names one package; give one SOURCE with it")
        return [name]
    return [
        source.name if not source.is_dir() else f"{source.resolve().name}.tar.gz"
        for source in sources
    ]


def check_names(names: list[str], config: Config) -> None:
    """Refuse, before anything is written, a name the daemon would never take (as ``pack
    -o`` does) and a name given twice."""
    seen: set[str] = set()
    for name in names:
        relative = PurePosixPath(name)
        if "/" in name or name in ("", ".", ".."):
            raise UsageError(f"{name!r}: a package name is one file name, without a folder")
        if is_ignored(relative, config.watch) or not is_package_name(relative, config.watch):
            raise UsageError(
                f"{name}: the daemon never takes this name (watch.patterns: "
                f"{', '.join(config.watch.patterns)}; watch.ignore: "
                f"{', '.join(config.watch.ignore) or 'none'})"
            )
        if name in seen:
            raise UsageError(f"{name}: two SOURCEs would be delivered under this one name")
        seen.add(name)


def build(
    source: Path, name: str, options: argparse.Namespace, config: Config, scratch: Path
) -> Package | Unbuilt:
    """The package ``source`` makes, packed into ``scratch`` when it is a folder. Raises
    :class:`UsageError` for a source that is neither, or options that cannot make one."""
    try:
        info = source.stat()
    except OSError as error:
        raise UsageError(f"{source}: {error.strerror}") from None
    if stat.S_ISREG(info.st_mode):
        if describes_the_package(options):
            raise UsageError(f"{source}: a package file is pushed as it is; --from and the "
                             "pack options describe a folder")  # fmt: skip
        return Package(source, source, name, _sha256_of(source))
    if not stat.S_ISDIR(info.st_mode):
        raise UsageError(f"{source}: neither a package file nor a folder")
    output = scratch / name
    try:
        if describes_the_package(options):
            report = write_described(describe(source, options, config), output, config)
        elif (source / INFO_NAME).is_file():
            report = pack_folder(source, output, config.limits)
        else:
            raise UsageError(
                f"{source}: no {INFO_NAME}; describe the package with --from FRAMEWORK, or "
                "with --stage NAME=FILE,... --mAP NAME=VALUE --classes NAME,..."
            )
    except PackInputError as error:
        raise UsageError(str(error)) from None
    if not report.ok:
        return Unbuilt(source, name, report.errors)
    return Package(source, output, name, report.sha256 or _sha256_of(output))


def _sha256_of(path: Path) -> str:
    with path.open("rb") as opened:
        return file_sha256(opened)
