"""The ``ymir-dropbox`` command: parse arguments, load config, call the library, render.

Exit codes: 0 success, 1 a package or operation failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from ymir_dropbox import __version__
from ymir_dropbox.config import Config, config_path, load_config
from ymir_dropbox.reading.problems import ConfigError, DropboxError
from ymir_dropbox.running.logs import configure_logging
from ymir_dropbox.storing.ledger import for_people

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
LEDGER_COLUMNS = (
    "id",
    "status",
    "package",
    "sha256",
    "model_hash",
    "best_stage_name",
    "mAP",
    "finished_at",
)
log = structlog.get_logger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    if not hasattr(arguments, "command"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        config = load_config(config_path(getattr(arguments, "config", None)))
        configure_logging(config.log.format, config.log.level)
        result: int = arguments.command(config, arguments)
        return result
    except ConfigError as error:
        print(f"ymir-dropbox: configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except DropboxError as error:
        print(f"ymir-dropbox: {error}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML configuration file (default: $YMIR_DROPBOX_CONFIG, else built-in defaults)",
    )
    parser = argparse.ArgumentParser(
        prog="ymir-dropbox",
        parents=[common],
        description="Watch an inbox for YMIR model packages and import each one exactly once.",
    )
    parser.add_argument("--version", action="version", version=f"ymir-dropbox {__version__}")
    commands = parser.add_subparsers(metavar="COMMAND")

    def command(
        name: str, function: Callable[[Config, argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=text, description=text)
        sub.set_defaults(command=function)
        return sub

    sub = command("run", cmd_run, "run the daemon in the foreground (systemd manages it)")
    sub = command("validate", cmd_validate, "check package files without importing them")
    sub.add_argument("packages", nargs="+", type=Path, metavar="PACKAGE")
    sub.add_argument("--json", action="store_true", help="one JSON object per package per line")
    sub = command("import", cmd_import, "validate, deduplicate, store and record one package file")
    sub.add_argument("package", type=Path, metavar="PACKAGE")
    sub.add_argument("--json", action="store_true", help="print the outcome as JSON")
    sub = command("ledger", cmd_ledger, "list recent attempts, or show one")
    sub.add_argument("show", nargs="?", choices=["show"], help=argparse.SUPPRESS)
    sub.add_argument(
        "key", nargs="?", help="with `show`: an id, a sha256 prefix or a model hash prefix"
    )
    sub.add_argument("--json", action="store_true", help="one JSON object per line")
    sub.add_argument(
        "--status",
        choices=["imported", "failed", "duplicate", "interrupted", "claimed", "importing"],
    )
    sub.add_argument("--limit", type=int, default=20)
    sub = command(
        "pack", cmd_pack, "build a package from a folder holding ymir-info.yaml and the stage files"
    )
    sub.add_argument("folder", type=Path, metavar="DIR")
    sub.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.tar.gz")
    sub = command("status", cmd_status, "what is waiting, processing, imported and failed")
    sub.add_argument("--json", action="store_true")
    sub = command("retry", cmd_retry, "move failed packages back into the inbox")
    sub.add_argument("ids", nargs="*", type=int, metavar="ID")
    sub.add_argument("--all-failed", action="store_true")
    return parser


def cmd_validate(config: Config, arguments: argparse.Namespace) -> int:
    from ymir_dropbox.reading.validation import ValidationReport, validate_package

    worst = EXIT_OK
    for path in arguments.packages:
        try:
            report = validate_package(path, config.limits)
        except OSError as error:
            from ymir_dropbox.reading.problems import Problem

            report = ValidationReport(
                path.name,
                (Problem("package.unreadable", "", f"{path}: {error.strerror or error}"),),
            )
        summary = {**report.summary(), "package": str(path)}
        if arguments.json:
            print(json.dumps(summary, ensure_ascii=False), flush=True)
        else:
            _print_report(summary)
        if not report.ok:
            worst = EXIT_FAILED
    return worst


def _print_report(summary: dict[str, Any]) -> None:
    if summary["ok"]:
        print(
            f"{summary['package']}: ok, best_stage_name: {summary['best_stage_name']}, "
            f"mAP: {summary['mAP']}, stages: {', '.join(summary['stages'])}"
        )
    else:
        print(f"{summary['package']}: invalid")
    for kind in ("errors", "warnings"):
        for problem in summary[kind]:
            where = f" [{problem['field']}]" if problem["field"] else ""
            print(f"  {kind[:-1]}: {problem['code']}{where}: {problem['message']}")


def cmd_import(config: Config, arguments: argparse.Namespace) -> int:
    from ymir_dropbox.storing.backends import make_backend
    from ymir_dropbox.storing.importer import Importer
    from ymir_dropbox.storing.ledger import Ledger
    from ymir_dropbox.storing.lifecycle import Place

    config.ensure_folders()
    backend = make_backend(config)
    backend.check()
    ledger = Ledger(config.paths.ledger)
    path: Path = arguments.package
    attempt_id = ledger.begin(package=path.name, source=path.absolute(), place=Place.NONE)
    try:
        outcome = Importer(config, ledger, backend).run(path, attempt_id)
    except OSError as error:
        raise DropboxError(f"{path}: {error.strerror or error}") from None
    if arguments.json:
        print(json.dumps(for_people(ledger.get(attempt_id) or {}), ensure_ascii=False))
    if outcome.status == "imported":
        assert outcome.result is not None and outcome.report is not None
        best = outcome.report.best_stage
        assert best is not None
        if not arguments.json:
            print(
                f"pack success, model hash: {outcome.result.model_hash}, "
                f"best_stage_name: {best['stage_name']}, mAP: {best['mAP']}"
            )
        return EXIT_OK
    if outcome.status == "duplicate":
        if not arguments.json:
            row = ledger.get(attempt_id) or {}
            print(
                f"duplicate of attempt {outcome.duplicate_of}, "
                f"model hash: {row.get('model_hash')}; not imported again"
            )
        return EXIT_OK
    if not arguments.json:
        print(f"{path}: import failed", file=sys.stderr)
        for problem in outcome.errors:
            where = f" [{problem.field}]" if problem.field else ""
            print(f"  error: {problem.code}{where}: {problem.message}", file=sys.stderr)
    return EXIT_FAILED


def cmd_ledger(config: Config, arguments: argparse.Namespace) -> int:
    from ymir_dropbox.storing.ledger import Ledger

    ledger = Ledger.open_for_reading(config.paths.ledger)
    if arguments.show:
        if not arguments.key:
            raise ConfigError("ledger show needs an ID, a SHA256 prefix or a MODEL-HASH prefix")
        rows = [for_people(row) for row in ledger.find(arguments.key)]
        if not rows:
            print(f"no attempt matches {arguments.key!r}", file=sys.stderr)
            return EXIT_FAILED
        for row in rows:
            if arguments.json:
                print(json.dumps(row, ensure_ascii=False))
            else:
                width = max(map(len, row))
                for key, value in row.items():
                    shown = (
                        json.dumps(value, ensure_ascii=False) if isinstance(value, list) else value
                    )
                    print(f"{key:<{width}}  {shown}")
                print()
        return EXIT_OK
    rows = [
        for_people(row) for row in ledger.recent(limit=arguments.limit, status=arguments.status)
    ]
    if arguments.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return EXIT_OK
    print_table(rows, LEDGER_COLUMNS)
    return EXIT_OK


def print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    def cell(row: dict[str, Any], column: str) -> str:
        value = row.get(column)
        text = "" if value is None else str(value)
        return text[:12] if column in {"sha256", "model_hash"} else text

    cells = [[cell(row, column) for column in columns] for row in rows]
    widths = [
        max([len(column), *(len(line[index]) for line in cells)])
        for index, column in enumerate(columns)
    ]
    print(
        "  ".join(
            column.ljust(width) for column, width in zip(columns, widths, strict=True)
        ).rstrip()
    )
    for line in cells:
        print(
            "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        )


def cmd_pack(config: Config, arguments: argparse.Namespace) -> int:
    from ymir_dropbox.running.packing import pack_folder

    if not (arguments.folder / "ymir-info.yaml").is_file():
        print(f"{arguments.folder}: no ymir-info.yaml in this folder", file=sys.stderr)
        return EXIT_FAILED
    try:
        report = pack_folder(arguments.folder, arguments.output, config.limits)
    except (FileExistsError, OSError) as error:
        print(f"ymir-dropbox: {error}", file=sys.stderr)
        return EXIT_FAILED
    summary = {**report.summary(), "package": str(arguments.output)}
    _print_report(summary)
    if not report.ok:
        print(f"{arguments.output} not written: the package would be invalid", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_run(config: Config, arguments: argparse.Namespace) -> int:
    from ymir_dropbox.running.daemon import run_daemon

    return run_daemon(config)


def cmd_status(config: Config, arguments: argparse.Namespace) -> int:
    from ymir_dropbox.running.status import collect_status, render_status

    status = collect_status(config)
    if arguments.json:
        print(json.dumps(status, ensure_ascii=False))
    else:
        print(render_status(status))
    return EXIT_OK


def cmd_retry(config: Config, arguments: argparse.Namespace) -> int:
    from ymir_dropbox.running.retry import retry_failed
    from ymir_dropbox.storing.ledger import Ledger

    if not arguments.ids and not arguments.all_failed:
        raise ConfigError("retry needs attempt IDs or --all-failed")
    ledger = Ledger(config.paths.ledger)
    moved = retry_failed(config, ledger, None if arguments.all_failed else arguments.ids)
    for attempt_id, source, target in moved:
        print(f"attempt {attempt_id}: {source} -> {target}")
    if not moved:
        print("nothing to retry", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
