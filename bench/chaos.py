"""Crash soak, run by hand: writers feed a daemon that is killed with SIGKILL at random moments.

    python bench/chaos.py --packages 60 --seed 1

Each package is written by `cp`, `rsync`, a slow writer that pauses between chunks, or a
writer that closes and reopens the file; about one drop in eight is followed by `kill -9`
of the daemon and a restart. At the end it counts, from the ledger and the folders: packages
lost, imported twice, failed (a complete valid package must never fail: that would be an
import of a half-written file), and the harness's invariants.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from daemon_harness import Dropbox
from factory import Entry, gzip_bytes, seed_entries, tar_bytes


def package(tag: str, size: int) -> bytes:
    """A valid package whose first stage file is random bytes, like weights."""
    entries = seed_entries()
    entries[0] = Entry(entries[0].name, os.urandom(size) + tag.encode())
    return gzip_bytes(tar_bytes(entries))


def write(kind: str, source: Path, target: Path, data: bytes) -> None:
    if kind == "cp":
        subprocess.run(["cp", str(source), str(target)], check=True)
    elif kind == "rsync":
        subprocess.run(["rsync", str(source), str(target)], check=True)
    else:
        step = len(data) // 4 + 1
        chunks = [data[start : start + step] for start in range(0, len(data), step)]
        if kind == "slow":
            with target.open("wb") as stream:
                for chunk in chunks:
                    stream.write(chunk)
                    stream.flush()
                    time.sleep(0.3)
        else:  # closes and reopens between chunks
            for chunk in chunks:
                with target.open("ab") as stream:
                    stream.write(chunk)
                time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packages", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-chance", type=float, default=0.12)
    parser.add_argument("--mode", choices=["inotify", "polling"], default="inotify")
    arguments = parser.parse_args()
    rng = random.Random(arguments.seed)
    root = Path(tempfile.mkdtemp(prefix="ymir-dropbox-chaos-"))
    dropbox = Dropbox(
        root, mode=arguments.mode, settle_seconds=1.0, poll_interval=0.2, rescan_interval=2.0
    )
    source = root / "source"
    source.mkdir()
    packages: dict[str, bytes] = {}
    for index in range(arguments.packages):
        name = f"p{index:03}.tar.gz"
        packages[name] = package(name, rng.choice([2048, 200_000, 2_000_000]))
        (source / name).write_bytes(packages[name])
        dropbox.record(name, packages[name])
    dropbox.start()
    writers, kills = [], 0
    for name, data in packages.items():
        kind = rng.choice(["cp", "rsync", "slow", "reopen"])
        writer = threading.Thread(
            target=write, args=(kind, source / name, dropbox.inbox / name, data)
        )
        writer.start()
        writers.append(writer)
        time.sleep(rng.uniform(0, 0.15))
        if rng.random() < arguments.kill_chance:
            dropbox.kill()
            kills += 1
            dropbox.start()
    for writer in writers:
        writer.join()
    dropbox.wait_settled(timeout=300)
    dropbox.stop()

    statuses: dict[str, list[str]] = {}
    for row in dropbox.ledger_rows():
        statuses.setdefault(row["sha256"], []).append(row["status"])
    digests = {hashlib.sha256(data).hexdigest(): name for name, data in packages.items()}
    lost = [name for digest, name in digests.items() if "imported" not in statuses.get(digest, [])]
    twice = [
        name for digest, name in digests.items() if statuses.get(digest, []).count("imported") > 1
    ]
    failed = [name for digest, name in digests.items() if "failed" in statuses.get(digest, [])]
    problems = dropbox.invariant_problems()
    print(
        f"packages {len(packages)}, kills {kills}: lost {len(lost)}, imported twice {len(twice)}, "
        f"failed (imported early) {len(failed)}, invariant problems {len(problems)}"
    )
    for line in [*lost, *twice, *failed, *problems]:
        print("  ", line)
    print(f"layout kept for inspection: {root}")
    sys.exit(1 if lost or twice or failed or problems else 0)


if __name__ == "__main__":
    main()
