"""The ``ymir-dropbox`` command: parse arguments, load config, call the library, render.

Exit codes: 0 success, 1 a package or operation failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import structlog

from ymir_dropbox import __version__
from ymir_dropbox.config import Config, config_path, load_config
from ymir_dropbox.core.errors import ConfigError, DropboxError
from ymir_dropbox.core.logs import configure_logging
from ymir_dropbox.storing.ledger import MIN_PREFIX, for_people
from ymir_dropbox.training.pack_options import add_pack_options, describes_the_package

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
    "reason",
)
REASON_WIDTH = 72
STATUSES = ("imported", "failed", "duplicate", "interrupted", "claimed", "importing")
log = structlog.get_logger(__name__)


class UsageError(Exception):
    """The command line asks for something that cannot be done as asked (exit 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, whose mistakes read ``usage error:`` like the commands' own."""

    def usage_error(self, message: str) -> None:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: usage error: {message}", file=sys.stderr)

    def error(self, message: str) -> NoReturn:
        self.usage_error(message)
        self.exit(EXIT_USAGE)


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
    except UsageError as error:
        arguments.parser.usage_error(str(error))
        return EXIT_USAGE
    except ConfigError as error:
        print(f"ymir-dropbox: configuration error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except DropboxError as error:
        print(f"ymir-dropbox: {error}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:
        return EXIT_OK


def _positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML configuration file (default: $YMIR_DROPBOX_CONFIG, else built-in defaults)",
    )
    parser = _Parser(
        prog="ymir-dropbox",
        parents=[common],
        description="Watch an inbox for YMIR model packages and import each one exactly once.",
    )
    parser.add_argument("--version", action="version", version=f"ymir-dropbox {__version__}")
    commands = parser.add_subparsers(
        metavar="COMMAND", help="one of these; `ymir-dropbox COMMAND --help` tells more"
    )

    def command(
        name: str, function: Callable[[Config, argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=text, description=text)
        sub.set_defaults(command=function, parser=sub)
        return sub

    sub = command("run", cmd_run, "run the daemon in the foreground (systemd manages it)")
    sub = command(
        "validate", cmd_validate, "check packages, or folders before `pack`, without importing"
    )
    sub.add_argument(
        "packages",
        nargs="+",
        type=Path,
        metavar="PACKAGE",
        help="a package file, or a folder holding ymir-info.yaml and the stage files (checked "
        "as `pack` would build it, through a temporary file under $TMPDIR)",
    )
    sub.add_argument("--json", action="store_true", help="one JSON object per package per line")
    sub = command("import", cmd_import, "validate, deduplicate, store and record one package file")
    sub.add_argument(
        "package", type=Path, metavar="PACKAGE", help="the package file (it is not moved)"
    )
    sub.add_argument("--json", action="store_true", help="print the outcome as JSON")
    sub = command("ledger", cmd_ledger, "list recent attempts, or show one (`ledger show KEY`)")
    sub.add_argument(
        "show",
        nargs="?",
        choices=["show"],
        metavar="show",
        help="show the attempts KEY names, in full (`ledger show KEY [--json]`)",
    )
    sub.add_argument(
        "key",
        nargs="?",
        metavar="KEY",
        help=f"with `show`: an attempt id, or a sha256 or model hash prefix of at least "
        f"{MIN_PREFIX} characters",
    )
    sub.add_argument("--json", action="store_true", help="one JSON object per line")
    sub.add_argument(
        "--status", choices=STATUSES, metavar="STATUS", help=f"only these: {', '.join(STATUSES)}"
    )
    sub.add_argument(
        "--limit", type=_positive, default=20, metavar="N", help="at most N, newest first (20)"
    )
    sub = command(
        "pack", cmd_pack, "build a package from ymir-info.yaml, a training run or --stage flags"
    )
    sub.add_argument(
        "folder",
        type=Path,
        metavar="DIR",
        help="ymir-info.yaml at its top and the stage files; or a run (--from), or --stage files",
    )
    sub.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="OUT.tar.gz",
        help="the package to write: a new file, in an existing folder, named as the daemon "
        "takes it (watch.patterns, not watch.ignore); written only if valid",
    )
    add_pack_options(sub)
    sub = command("status", cmd_status, "what is waiting, processing, imported and failed")
    sub.add_argument("--json", action="store_true", help="print the status as one JSON object")
    sub = command("retry", cmd_retry, "move failed packages back into the inbox")
    sub.add_argument(
        "ids", nargs="*", type=int, metavar="ID", help="attempts to retry (see `ledger`)"
    )
    sub.add_argument("--all-failed", action="store_true", help="every package in failed/")
    sub.add_argument(
        "--force",
        action="store_true",
        help="retry a package even if it has not changed since it failed",
    )
    sub = command(
        "check", cmd_check, "check the set-up for the configured backend; exit 0 when all is well"
    )
    sub.add_argument("--json", action="store_true", help="one JSON object per check")
    sub = command(
        "projects", cmd_projects, "list the YMIR projects the configured user can import into"
    )
    sub.add_argument("--json", action="store_true", help="one JSON object per project")
    sub = command(
        "retention",
        cmd_retention,
        "remove old packages from done/ ([retention] done_days) and, when asked, from failed/",
    )
    sub.add_argument(
        "--failed", action="store_true", help="also remove failed packages (and error files)"
    )
    sub.add_argument(
        "--days",
        type=int,
        metavar="N",
        help="with --failed: older than N days (default: [retention] failed_days)",
    )
    sub.add_argument("--dry-run", action="store_true", help="list what would go; remove nothing")
    return parser


def cmd_validate(config: Config, arguments: argparse.Namespace) -> int:
    from ymir_dropbox.reading.validation import ValidationReport, validate_package
    from ymir_dropbox.training.packing import check_folder

    worst = EXIT_OK
    for path in arguments.packages:
        try:
            if path.is_dir():
                report = check_folder(path, config.limits)
            else:
                report = validate_package(path, config.limits, hashed=False)
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

    key: str | None = arguments.key
    if arguments.show and not key:
        raise UsageError("ledger show needs a KEY: an attempt id, a sha256 or model hash prefix")
    if key and not key.isdigit() and len(key) < MIN_PREFIX:
        raise DropboxError(
            f"a sha256 or model hash prefix needs at least {MIN_PREFIX} characters; "
            f"{key!r} has {len(key)}"
        )
    ledger = Ledger.open_for_reading(config.paths.ledger)
    if key:
        rows = [for_people(row) for row in ledger.find(key)]
        if not rows:
            longer = (
                f" (a sha256 or model hash prefix needs at least {MIN_PREFIX} characters)"
                if len(key) < MIN_PREFIX
                else ""
            )
            print(f"no attempt matches {key!r}{longer}", file=sys.stderr)
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
        if column == "reason" and len(text) > REASON_WIDTH:
            return text[: REASON_WIDTH - 1] + "…"
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
    from ymir_dropbox.training.pack_command import run_pack
    from ymir_dropbox.training.packing import check_output_name, pack_folder
    from ymir_dropbox.training.plan import PackInputError

    if describes_the_package(arguments):
        try:
            outcome = run_pack(config, arguments)
        except PackInputError as error:
            raise UsageError(str(error)) from None
        for line in outcome.messages:
            print(line, file=sys.stderr)
        for line in outcome.output:
            print(line)
        return outcome.exit_code
    if arguments.output is None:
        raise UsageError("pack needs -o OUT.tar.gz")
    if not (arguments.folder / "ymir-info.yaml").is_file():
        print(
            f"{arguments.folder}: no ymir-info.yaml in this folder (or describe the package "
            "with --from FRAMEWORK or --stage NAME=FILE,...)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    check_output_name(arguments.output, config.watch, config.paths.inbox)
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
    from ymir_dropbox.daemon import run_daemon

    return run_daemon(config)


def cmd_status(config: Config, arguments: argparse.Namespace) -> int:
    from ymir_dropbox.operations.status import collect_status, render_status

    status = collect_status(config)
    if arguments.json:
        print(json.dumps(status, ensure_ascii=False))
    else:
        print(render_status(status))
    return EXIT_OK


def cmd_retry(config: Config, arguments: argparse.Namespace) -> int:
    from ymir_dropbox.operations.retry import retry_failed
    from ymir_dropbox.storing.ledger import Ledger, as_text, path_of

    if not arguments.ids and not arguments.all_failed:
        raise UsageError("retry needs attempt IDs or --all-failed")
    ledger = Ledger(config.paths.ledger)
    ids: list[int] | None = None if arguments.all_failed else arguments.ids
    retried = retry_failed(config, ledger, ids, force=arguments.force)
    for row in retried.unchanged:
        codes = ", ".join(sorted({problem["code"] for problem in row.get("errors") or []}))
        print(
            f"attempt {row['id']}: {as_text(str(path_of(row, 'final_path')))} has not changed "
            f"since it failed ({codes}); left in failed/. Fix it, or retry it as it is with "
            "--force",
            file=sys.stderr,
        )
    for attempt_id, source, target in retried.moved:
        print(f"attempt {attempt_id}: {as_text(str(source))} -> {as_text(str(target))}")
    if not retried.moved and not retried.unchanged:
        print("nothing to retry", file=sys.stderr)
    if not retried.moved or (retried.unchanged and not arguments.all_failed):
        return EXIT_FAILED
    return EXIT_OK


def cmd_retention(config: Config, arguments: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from ymir_dropbox.operations.retention import run_retention
    from ymir_dropbox.storing.ledger import Ledger, as_text

    if arguments.days is not None and not arguments.failed:
        raise UsageError("--days goes with --failed")
    ledger = Ledger(config.paths.ledger)
    removed = run_retention(
        config,
        ledger,
        datetime.now(UTC),
        failed=arguments.failed,
        failed_days=arguments.days,
        dry_run=arguments.dry_run,
    )
    verb = "would remove" if arguments.dry_run else "removed"
    for removal in removed:
        print(
            f"attempt {removal.attempt}: {verb} {as_text(str(removal.path))} ({removal.size} bytes)"
        )
    if not removed:
        print("nothing to remove", file=sys.stderr)
    return EXIT_OK


def cmd_check(config: Config, arguments: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ymir_dropbox.operations.check import check_setup

    findings = check_setup(config)
    for finding in findings:
        if arguments.json:
            print(json.dumps(asdict(finding), ensure_ascii=False))
        else:
            mark = "ok  " if finding.ok else "FAIL"
            detail = f": {finding.detail}" if finding.detail else ""
            print(f"{mark} {finding.what}{detail}")
    return EXIT_OK if all(finding.ok for finding in findings) else EXIT_FAILED


def cmd_projects(config: Config, arguments: argparse.Namespace) -> int:
    from dataclasses import asdict

    from ymir_dropbox.operations.check import list_projects

    projects = list_projects(config)
    if arguments.json:
        for project in projects:
            print(json.dumps(asdict(project), ensure_ascii=False))
        return EXIT_OK
    print_table([asdict(project) for project in projects], ("id", "name", "object_type"))
    return EXIT_OK
