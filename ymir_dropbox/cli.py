"""The ``ymir-dropbox`` command: parse arguments, load config, call the library, render.

Exit codes: 0 success, 1 a package or operation failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn, TextIO

import structlog

from ymir_dropbox import __version__
from ymir_dropbox.config import Config, config_path, load_config
from ymir_dropbox.core.errors import ConfigError, DropboxError, UsageError
from ymir_dropbox.core.faults import FaultPlan
from ymir_dropbox.core.jsonvalues import JsonObject
from ymir_dropbox.core.logs import configure_logging
from ymir_dropbox.core.printable import PrintableStream, printable_values
from ymir_dropbox.storing.backends import registry_key
from ymir_dropbox.storing.ledger import MIN_PREFIX

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130
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
PACKAGE_WIDTH = 48
log = structlog.get_logger(__name__)


class _Parser(argparse.ArgumentParser):
    """argparse, whose mistakes read ``usage error:`` like the commands' own."""

    def usage_error(self, message: str) -> None:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: usage error: {message}", file=sys.stderr)

    def error(self, message: str) -> NoReturn:
        self.usage_error(message)
        self.exit(EXIT_USAGE)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; what it prints shows no control character an uploader put in a name."""
    raw_out, raw_err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PrintableStream(raw_out), PrintableStream(raw_err)
    try:
        return _main(argv, raw_err)
    finally:
        sys.stdout, sys.stderr = raw_out, raw_err


def _main(argv: Sequence[str] | None, log_stream: TextIO) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    # The backends' own commands need their modules: loaded only when no command of ours is
    # named (a command starts sooner).
    ours = {name for name, *_ in COMMANDS}
    parser = build_parser(with_backends=not ours & set(given))
    arguments = parser.parse_args(given)
    if not hasattr(arguments, "command"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        config = load_config(config_path(getattr(arguments, "config", None)))
        configure_logging(config.log.format, config.log.level, log_stream)
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


Handler = Callable[[Config, argparse.Namespace], int]
Arguments = Callable[[argparse.ArgumentParser], None]
COMMANDS: list[tuple[str, str, Handler, Arguments]] = []


def command(name: str, text: str) -> Callable[[Arguments], Callable[[Handler], Handler]]:
    """Register a command: its name, what it does, its arguments, and its handler, which
    parses nothing, calls one library function and renders what it returns."""

    def with_arguments(arguments: Arguments) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            COMMANDS.append((name, text, handler, arguments))
            return handler

        return register

    return with_arguments


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """A command that takes nothing but the common options."""


def json_flag(text: str) -> Arguments:
    def arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help=text)

    return arguments


def build_parser(with_backends: bool = True) -> argparse.ArgumentParser:
    """The command line's parser, built once for each set of registered backends (it only
    reads what it is given)."""
    return _build_parser(registry_key() if with_backends else None)


@functools.lru_cache(maxsize=4)
def _build_parser(backends: tuple[tuple[str, str], ...] | None) -> argparse.ArgumentParser:
    with_backends = backends is not None
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
    for name, text, handler, arguments in [
        *COMMANDS,
        *(_backend_commands() if with_backends else []),
    ]:
        sub = commands.add_parser(name, parents=[common], help=text, description=text)
        sub.set_defaults(command=handler, parser=sub)
        arguments(sub)
    return parser


def _backend_commands() -> list[tuple[str, str, Handler, Arguments]]:
    """The commands of the backends (``projects``): rows printed as a table or JSON lines."""
    from ymir_dropbox.storing.backends import BackendCommand, backend_commands

    def handler_of(command: BackendCommand) -> Handler:
        def handle(config: Config, arguments: argparse.Namespace) -> int:
            rows = command.run(config)
            if arguments.json:
                for row in rows:
                    print(json.dumps(row, ensure_ascii=False))
            else:
                print_table(rows, command.columns)
            return EXIT_OK

        return handle

    return [
        (command.name, command.help, handler_of(command), json_flag(command.json_help))
        for command in backend_commands()
    ]


@command("run", "run the daemon in the foreground (systemd manages it)")(no_arguments)
def cmd_run(config: Config, arguments: argparse.Namespace) -> int:
    from ymir_dropbox.daemon import run_daemon

    return run_daemon(config, FaultPlan.from_environment(os.environ))


def validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "packages",
        nargs="+",
        type=Path,
        metavar="PACKAGE",
        help="a package file, or a folder holding ymir-info.yaml and the stage files (checked "
        "as `pack` would build it, through a temporary file under $TMPDIR)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per package per line")


@command("validate", "check packages, or folders before `pack`, without importing")(
    validate_arguments
)
def cmd_validate(config: Config, arguments: argparse.Namespace) -> int:
    from ymir_dropbox.training.packing import validate_path

    worst = EXIT_OK
    for path in arguments.packages:
        report = validate_path(path, config.limits)
        summary = {**report.summary(), "package": str(path)}
        if arguments.json:
            print(json.dumps(summary, ensure_ascii=False), flush=True)
        else:
            _print_report(summary)
        if not report.ok:
            worst = EXIT_FAILED
    return worst


def _print_report(summary: JsonObject) -> None:
    summary = printable_values(summary)
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


def import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "package", type=Path, metavar="PACKAGE", help="the package file (it is not moved)"
    )
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")


@command("import", "validate, deduplicate, store and record one package file")(import_arguments)
def cmd_import(config: Config, arguments: argparse.Namespace) -> int:
    from ymir_dropbox.storing.documents import attempt_document
    from ymir_dropbox.storing.importer import import_file
    from ymir_dropbox.storing.ledger import Ledger
    from ymir_dropbox.storing.lifecycle import Status

    path: Path = arguments.package
    outcome = import_file(config, path, FaultPlan.from_environment(os.environ))
    ledger = Ledger.open_for_reading(config.paths.ledger)
    attempt = ledger.get(outcome.attempt_id)
    ledger.close()
    if arguments.json and attempt is not None:
        print(json.dumps(attempt_document(attempt), ensure_ascii=False))
    elif outcome.status is Status.IMPORTED and outcome.result and outcome.report:
        print(
            f"pack success, model hash: {outcome.result.model_hash}, "
            f"best_stage_name: {outcome.report.best_stage_name}, mAP: {outcome.report.best_mAP}"
        )
    elif outcome.status is Status.DUPLICATE:
        model_hash = attempt.model_hash if attempt is not None else None
        print(
            f"duplicate of attempt {outcome.duplicate_of}, "
            f"model hash: {model_hash}; not imported again"
        )
    elif outcome.status is Status.FAILED:
        print(f"{path}: import failed", file=sys.stderr)
        for problem in outcome.errors:
            where = f" [{problem.field}]" if problem.field else ""
            print(f"  error: {problem.code}{where}: {problem.message}", file=sys.stderr)
    return EXIT_FAILED if outcome.status is Status.FAILED else EXIT_OK


def ledger_arguments(parser: argparse.ArgumentParser) -> None:
    from ymir_dropbox.storing.lifecycle import Status

    statuses = [str(status) for status in Status]
    parser.add_argument(
        "show",
        nargs="?",
        choices=["show"],
        metavar="show",
        help="show the attempts KEY names, in full (`ledger show KEY [--json]`)",
    )
    parser.add_argument(
        "key",
        nargs="?",
        metavar="KEY",
        help=f"with `show`: an attempt id, or a sha256 or model hash prefix of at least "
        f"{MIN_PREFIX} characters",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--status", choices=statuses, metavar="STATUS", help=f"only these: {', '.join(statuses)}"
    )
    parser.add_argument(
        "--limit", type=_positive, default=20, metavar="N", help="at most N, newest first (20)"
    )


@command("ledger", "list recent attempts, or show one (`ledger show KEY`)")(ledger_arguments)
def cmd_ledger(config: Config, arguments: argparse.Namespace) -> int:
    from ymir_dropbox.storing.documents import attempt_document
    from ymir_dropbox.storing.ledger import Ledger
    from ymir_dropbox.storing.lifecycle import Status

    key: str | None = arguments.key
    if arguments.show and not key:
        raise UsageError("ledger show needs a KEY: an attempt id, a sha256 or model hash prefix")
    ledger = Ledger.open_for_reading(config.paths.ledger)
    if key:
        found = [attempt_document(attempt) for attempt in ledger.find(key)]
        if not found:
            longer = (
                f" (a sha256 or model hash prefix needs at least {MIN_PREFIX} characters)"
                if len(key) < MIN_PREFIX
                else ""
            )
            print(f"no attempt matches {key!r}{longer}", file=sys.stderr)
            return EXIT_FAILED
        for document in found:
            if arguments.json:
                print(json.dumps(document, ensure_ascii=False))
            else:
                if len(found) > 1:
                    print(f"== attempt {document['id']} ==")
                _print_fields(document)
        return EXIT_OK
    status = Status(arguments.status) if arguments.status else None
    documents = [attempt_document(attempt) for attempt in ledger.recent(arguments.limit, status)]
    if arguments.json:
        for document in documents:
            print(json.dumps(document, ensure_ascii=False))
        return EXIT_OK
    print_table(documents, LEDGER_COLUMNS)
    return EXIT_OK


def _print_fields(document: dict[str, object]) -> None:
    """What the attempt has, one field a line (nothing for what it has not: no empty
    lists, no backend facts of another backend)."""
    document = printable_values(document)
    shown = {name: value for name, value in document.items() if value not in (None, [], "")}
    width = max(map(len, shown))
    for name, value in shown.items():
        text = json.dumps(value, ensure_ascii=False) if isinstance(value, list) else value
        print(f"{name:<{width}}  {text}")
    print()


def print_table(rows: Sequence[JsonObject], columns: Sequence[str]) -> None:
    def cell(row: JsonObject, column: str) -> str:
        value = printable_values(row.get(column))
        text = "" if value is None else str(value)
        if column == "reason" and len(text) > REASON_WIDTH:
            return text[: REASON_WIDTH - 1] + "…"
        if column == "package" and len(text) > PACKAGE_WIDTH:  # shortened in the middle
            half = (PACKAGE_WIDTH - 1) // 2
            return text[:half] + "…" + text[-half:]
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


def pack_arguments(parser: argparse.ArgumentParser) -> None:
    from ymir_dropbox.training.pack_options import add_pack_options

    parser.add_argument(
        "folder",
        type=Path,
        metavar="DIR",
        help="ymir-info.yaml at its top and the stage files; or a run (--from), or --stage files",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="OUT.tar.gz",
        help="the package to write: a new file, in an existing folder, named as the daemon "
        "takes it (watch.patterns, not watch.ignore); written only if valid",
    )
    add_pack_options(parser)


@command("pack", "build a package from ymir-info.yaml, a training run or --stage flags")(
    pack_arguments
)
def cmd_pack(config: Config, arguments: argparse.Namespace) -> int:
    from ymir_dropbox.training.pack_command import run_pack
    from ymir_dropbox.training.pack_options import describes_the_package
    from ymir_dropbox.training.packing import check_output_name, pack_folder
    from ymir_dropbox.training.plan import PackInputError

    if not arguments.folder.is_dir():
        raise UsageError(f"{arguments.folder}: no such folder")
    if describes_the_package(arguments) or arguments.dry_run:
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


def push_arguments(parser: argparse.ArgumentParser) -> None:
    from ymir_dropbox.training.pack_options import add_pack_options

    parser.add_argument(
        "sources",
        type=Path,
        nargs="+",
        metavar="SOURCE",
        help="a package file, or a folder pack builds (ymir-info.yaml at its top, or a "
        "training run with --from and the other pack options)",
    )
    parser.add_argument(
        "destination",
        metavar="DEST",
        help="the daemon's inbox: a folder (local or a mounted share), or [user@]host:path "
        "reached with rsync over ssh",
    )
    parser.add_argument("--name", help="deliver the package under this name (one SOURCE)")
    parser.add_argument(
        "--rsh",
        metavar="COMMAND",
        help='the ssh command rsync runs for host:path, e.g. "ssh -p 2222 -i KEY" '
        "(default: [push] rsh, else ssh)",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="wait for the daemon's verdict on each package (asks its listener)",
    )
    parser.add_argument(
        "--status-url",
        metavar="URL",
        help="the daemon's listener, http://HOST:PORT (default: [push] status_url)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="with --wait: give up after this long, exit 3 (default: 3600)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON verdict per package per line")
    add_pack_options(parser)


def _terminated(number: int, _: object) -> NoReturn:
    raise SystemExit(128 + number)


@command("push", "deliver packages to the daemon's inbox and, with --wait, learn their verdict")(
    push_arguments
)
def cmd_push(config: Config, arguments: argparse.Namespace) -> int:
    from ymir_dropbox.pushing.push_command import run_push

    if arguments.timeout <= 0:
        raise UsageError(f"--timeout {arguments.timeout:g}: must be more than 0 seconds")
    # A CI job cancelled, `timeout`: SIGTERM unwinds like Ctrl-C, so the packed copies go.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        outcome = run_push(config, arguments)
    except KeyboardInterrupt:
        print("ymir-dropbox: push interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    for line in outcome.messages:
        print(line, file=sys.stderr)
    for line in outcome.output:
        print(line, flush=True)
    return outcome.exit_code


@command("status", "what is waiting, processing, imported and failed")(
    json_flag("print the status as one JSON object")
)
def cmd_status(config: Config, arguments: argparse.Namespace) -> int:
    from ymir_dropbox.operations.status import collect_status, render_status

    status = collect_status(config)
    if arguments.json:
        print(json.dumps(status, ensure_ascii=False))
    else:
        print(render_status(printable_values(status)))
    return EXIT_OK


def retry_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ids", nargs="*", type=int, metavar="ID", help="attempts to retry (see `ledger`)"
    )
    parser.add_argument("--all-failed", action="store_true", help="every package in failed/")
    parser.add_argument(
        "--force",
        action="store_true",
        help="retry a package even if it has not changed since it failed",
    )


@command("retry", "move failed packages back into the inbox")(retry_arguments)
def cmd_retry(config: Config, arguments: argparse.Namespace) -> int:
    from ymir_dropbox.operations.retry import retry_failed
    from ymir_dropbox.storing.documents import text_of
    from ymir_dropbox.storing.ledger import Ledger

    if not arguments.ids and not arguments.all_failed:
        raise UsageError("retry needs attempt IDs or --all-failed")
    ledger = Ledger(config.paths.ledger)
    ids: list[int] | None = None if arguments.all_failed else arguments.ids
    retried = retry_failed(config, ledger, ids, force=arguments.force)
    for attempt in retried.unchanged:
        codes = ", ".join(sorted(attempt.codes))
        print(
            f"attempt {attempt.id}: {text_of(attempt.final_path)} has not changed "
            f"since it failed ({codes}); left in failed/. Fix it, or retry it as it is with "
            "--force",
            file=sys.stderr,
        )
    for attempt_id, source, target in retried.moved:
        print(f"attempt {attempt_id}: {text_of(source)} -> {text_of(target)}")
    if not retried.moved and not retried.unchanged:
        print("nothing to retry", file=sys.stderr)
    if not retried.moved or (retried.unchanged and not arguments.all_failed):
        return EXIT_FAILED
    return EXIT_OK


@command("check", "check the set-up for the configured backend; exit 0 when all is well")(
    json_flag("one JSON object per check")
)
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


def retention_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--failed", action="store_true", help="also remove failed packages (and error files)"
    )
    parser.add_argument(
        "--days",
        type=int,
        metavar="N",
        help="with --failed: older than N days (default: [retention] failed_days)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list what would go; remove nothing")


@command(
    "retention",
    "remove old packages from done/ ([retention] done_days) and, when asked, from failed/",
)(retention_arguments)
def cmd_retention(config: Config, arguments: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from ymir_dropbox.operations.retention import run_retention
    from ymir_dropbox.storing.documents import text_of
    from ymir_dropbox.storing.ledger import Ledger

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
        print(f"attempt {removal.attempt}: {verb} {text_of(removal.path)} ({removal.size} bytes)")
    if not removed:
        print("nothing to remove", file=sys.stderr)
    return EXIT_OK
