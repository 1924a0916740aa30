"""``ymir-dropbox ARGS`` run for real, without paying a Python start for each command.

Starting Python and importing the CLI costs about 0.25 s of CPU a command, and the suite runs
a few hundred commands. A runner process imports the CLI once and forks one child per
command: each child is a process of its own, with the command's working folder, environment,
standard input (``/dev/null``) and output files, and calls ``ymir_dropbox.cli.main(argv)``,
which is all the console script does. Each test process has one runner, started when first
used; a command that outlives its timeout is killed, as ``subprocess.run`` would.

A test about how the command starts (a signal's default, another user, a fresh interpreter)
runs the console script itself.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

RUNNER = r"""
import json, os, select, signal, sys, traceback
from pathlib import Path
from ymir_dropbox import cli
from ymir_dropbox.config import build_config
from ymir_dropbox.reading import validation
import ymir_dropbox.storing.backends.embedded, ymir_dropbox.storing.importer
import ymir_dropbox.storing.ledger

# As the console script: no working folder on the import path (python -c puts it first).
sys.path[:] = [entry for entry in sys.path if entry]
# What every command builds first, built once here for all the children: the parser, the
# configuration's and ymir-info.yaml's validators (cerberus checks a schema when it is built).
# Not the backends' commands: they would import every backend, which a command does not.
cli.build_parser(False)
build_config({}, source=None, anchor=Path.cwd())
validation._validator("v2"), validation._validator("legacy")

for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.environ.clear()
            os.environ.update(job["env"])
            quiet = os.open(os.devnull, os.O_RDONLY)
            os.dup2(quiet, 0)
            os.close(quiet)
            for fd, name in ((1, "stdout"), (2, "stderr")):
                target = os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(target, fd)
                os.close(target)
            os.chdir(job["cwd"])
            sys.argv = ["ymir-dropbox", *job["argv"]]
            code = cli.main(job["argv"])
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    child = os.pidfd_open(pid)
    finished, _, _ = select.select([child], [], [], job["timeout"])
    if not finished:
        os.kill(pid, signal.SIGKILL)
    os.close(child)
    _, status = os.waitpid(pid, 0)
    reply = {"exit": os.waitstatus_to_exitcode(status), "timed_out": not finished}
    print(json.dumps(reply), flush=True)
"""


class ForkedCommand:
    """One runner: commands run one at a time, in forked children of it."""

    def __init__(self) -> None:
        self.output = Path(tempfile.mkdtemp(prefix="ymir-dropbox-forked-"))
        self.count = 0
        self.lock = threading.Lock()
        self.runner = subprocess.Popen(
            [sys.executable, "-c", RUNNER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(
        self,
        arguments: Sequence[str | Path],
        cwd: Path,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
        errors: str = "strict",
    ) -> subprocess.CompletedProcess[str]:
        """Like ``subprocess.run([ymir-dropbox, *arguments], capture_output=True, text=True)``."""
        argv = [str(argument) for argument in arguments]
        with self.lock:
            assert self.runner.stdin is not None and self.runner.stdout is not None
            self.count += 1
            stdout = self.output / f"{self.count}.out"
            stderr = self.output / f"{self.count}.err"
            job = {
                "argv": argv,
                "cwd": str(cwd),
                "env": dict(os.environ if env is None else env),
                "stdout": str(stdout),
                "stderr": str(stderr),
                "timeout": timeout,
            }
            self.runner.stdin.write(json.dumps(job) + "\n")
            self.runner.stdin.flush()
            reply = self.runner.stdout.readline()
        assert reply, "the fork runner died"
        answer = json.loads(reply)
        out = stdout.read_text(errors=errors)
        err = stderr.read_text(errors=errors)
        stdout.unlink()
        stderr.unlink()
        command = ["ymir-dropbox", *argv]
        if answer["timed_out"]:
            raise subprocess.TimeoutExpired(command, timeout, out, err)
        return subprocess.CompletedProcess(command, answer["exit"], out, err)

    def close(self) -> None:
        assert self.runner.stdin is not None
        self.runner.stdin.close()
        self.runner.wait(timeout=30)
        for leftover in self.output.iterdir():
            leftover.unlink()
        self.output.rmdir()


_shared: ForkedCommand | None = None
_sharing = threading.Lock()


def forked() -> ForkedCommand:
    """This process's runner (one per test worker), started when first asked for."""
    global _shared
    with _sharing:
        if _shared is None or _shared.runner.poll() is not None:
            _shared = ForkedCommand()
            atexit.register(_shared.close)
        return _shared
