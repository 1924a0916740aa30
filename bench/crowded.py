"""A crowded inbox, run by hand: how an uploader's heap of files slows the daemon.

    python bench/crowded.py --hidden 300000 --visible 0
    python bench/crowded.py --source before=/path/to/older/checkout --source now=.

Fills one inbox with ``--hidden`` empty files in a hidden folder and ``--visible`` empty
files that are not packages in a visible one, then, for each ``--source`` in turn (a source
tree run with ``python -m ymir_dropbox``, side by side on the same folders), starts a daemon
that rescans every ``--rescan`` seconds and measures:

- pick-up: from a package renamed into the inbox to its row saying imported, for
  ``--packages`` packages dropped one after another;
- ``/status.json`` and ``/metrics``: how long each answer takes, sampled while it runs.

Prints one line per source; compare the lines of one run, not runs on different days.
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from daemon_harness import valid_package


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def crowd(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        os.close(os.open(folder / f"f{number:07d}", os.O_CREAT | os.O_WRONLY, 0o644))


def imported(ledger: Path, name: str) -> bool:
    if not ledger.exists():
        return False
    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5) as connection:
        row = connection.execute(
            "SELECT 1 FROM attempts WHERE package = ? AND status = 'imported'", (name,)
        ).fetchone()
    return row is not None


def timed_get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as answer:
        answer.read()
    return time.perf_counter() - started


def run(label: str, source: Path, base: Path, args: argparse.Namespace) -> str:
    port = free_port()
    config = base / f"config-{label}.toml"
    config.write_text(
        f'base_dir = "{base}"\n'
        f"[watch]\nrescan_interval = {args.rescan}\nsettle_seconds = 0.5\n"
        f'[metrics]\nlisten = "127.0.0.1:{port}"\n'
        '[log]\nformat = "json"\n'
    )
    environment = {**os.environ, "PYTHONPATH": str(source.resolve())}
    log = (base / f"daemon-{label}.log").open("wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "ymir_dropbox", "--config", str(config), "run"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=environment,
        cwd=base,  # not the project's folder: `python -m` would import the code there first
    )
    ledger = base / "ledger.sqlite"
    try:
        started = time.perf_counter()
        while b"daemon_ready" not in (base / f"daemon-{label}.log").read_bytes():
            time.sleep(0.05)
        ready = time.perf_counter() - started
        pickups, status_times, metrics_times = [], [], []
        for number in range(args.packages):
            name = f"{label}-{number}.tar.gz"
            staged = base / f".staged-{name}"
            staged.write_bytes(valid_package(f"{label}{number}"))
            moment = time.perf_counter()
            os.rename(staged, base / "inbox" / name)
            while not imported(ledger, name):
                time.sleep(0.02)
            pickups.append(time.perf_counter() - moment)
            status_times.append(timed_get(f"http://127.0.0.1:{port}/status.json"))
            metrics_times.append(timed_get(f"http://127.0.0.1:{port}/metrics"))
    finally:
        daemon.terminate()
        daemon.wait(timeout=120)
        log.close()
    return (
        f"{label:>8}: ready {ready:6.2f} s | pick-up median {statistics.median(pickups):6.2f} s "
        f"max {max(pickups):6.2f} s | status.json median {statistics.median(status_times):6.2f}"
        f" s max {max(status_times):6.2f} s | metrics median "
        f"{statistics.median(metrics_times):6.2f} s max {max(metrics_times):6.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden", type=int, default=300_000)
    parser.add_argument("--visible", type=int, default=0)
    parser.add_argument("--packages", type=int, default=10)
    parser.add_argument("--rescan", type=float, default=2.0)
    parser.add_argument("--source", action="append", default=[], metavar="LABEL=PATH")
    parser.add_argument("--scratch", default="/var/tmp", help="where the layout is made")
    args = parser.parse_args()
    sources = [part.split("=", 1) for part in args.source] or [["now", "."]]
    with tempfile.TemporaryDirectory(prefix="crowded-", dir=args.scratch) as scratch:
        base = Path(scratch)
        started = time.perf_counter()
        crowd(base / "inbox" / ".heap", args.hidden)
        crowd(base / "inbox" / "heap", args.visible)
        print(
            f"inbox: {args.hidden} hidden and {args.visible} visible files, "
            f"made in {time.perf_counter() - started:.1f} s; rescan every {args.rescan} s"
        )
        for label, path in sources:
            print(run(label, Path(path), base, args), flush=True)


if __name__ == "__main__":
    main()
