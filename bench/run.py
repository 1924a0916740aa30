"""The ymir-dropbox benchmark: every row measured in one run, on data generated here.

    python bench/run.py                         # 420 MB, 1.6 GB and 4 GB packages, small, latency
    python bench/run.py --sizes 420 --repeat 3  # one size (MB), best of three
    python bench/run.py --smoke                 # tiny sizes: checks that the benchmark still works

Large packages, each measured on the same file in the same run: the floor (`cp` of the package
plus `sync`: read it once, write it once), `ymir-dropbox import` with the embedded backend and
its ratio to the floor, the same import of the same files packed with ymir-info.yaml last (as
`mir` packs them), its peak RSS, one pass of Python's hashlib sha256 over the file, the
same package imported a second time (a duplicate: one hashing pass), `ymir-dropbox import` with
the mir backend in a fresh `mir init` repository, and real `mir models` alone (when the mir
environment exists, see README), so that what ymir-dropbox adds to mir is visible.
Throughput: small packages moved into the inbox at once, through the daemon with the default
config, until all are in the ledger. Pick-up latency: time from the writer's close (cp) or
rename (rsync) to the claim in the ledger.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from isal import igzip

ROOT = Path(__file__).resolve().parent.parent
MIR = Path(os.environ.get("YMIR_DROPBOX_MIR", ROOT / ".venv-mir" / "bin" / "mir"))
MB = 1000 * 1000
CLAIMED = "SELECT count(*) FROM attempts WHERE package = ?"
CHUNK = 4 * 1024 * 1024
# The same interpreter, without a version manager's shim (pyenv's costs about 0.3 s a call).
DROPBOX = [sys.executable, "-m", "ymir_dropbox"]


def make_large_package(path: Path, total_bytes: int, info_last: Path | None = None) -> None:
    """Two stage files of random bytes (like real weights), packed the way users pack them:
    GNU `tar -czf` (gzip's default level), ymir-info.yaml first. Valid for real `mir models`
    too. With ``info_last``, the same files are also packed there with ymir-info.yaml last,
    as `mir` itself packs them."""
    half = total_bytes // 2
    info = {
        "package_version": "2.0.0",
        "executor_config": {"class_names": ["person", "cat"]},
        "task_context": {"executor": "bench", "mAP": 0.6},
        "stages": {
            name: {
                "files": [f"{name}.params"],
                "mAP": 0.3 + index * 0.3,
                "stage_name": name,
                "timestamp": 1655975204 + index,
            }
            for index, name in enumerate(["stage_1000", "stage_2000"])
        },
        "best_stage_name": "stage_2000",
    }
    source = path.parent / "source"
    source.mkdir()
    (source / "ymir-info.yaml").write_text(yaml.safe_dump(info))
    for name in info["stages"]:
        (source / name).mkdir()
        with (source / name / f"{name}.params").open("wb") as stream:
            for start in range(0, half, CHUNK):
                stream.write(os.urandom(min(CHUNK, half - start)))
    subprocess.run(
        ["tar", "-czf", str(path), "-C", str(source), "ymir-info.yaml", *info["stages"]],
        check=True,
    )
    if info_last is not None:
        subprocess.run(
            ["tar", "-czf", str(info_last), "-C", str(source), *info["stages"], "ymir-info.yaml"],
            check=True,
        )
    shutil.rmtree(source)


def measure(command: list[str], cwd: Path | None = None) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one command; fails loudly if it fails.

    The RSS is the child's ``ru_maxrss``, which also counts this process's own peak at the fork:
    this process stays far below the commands it measures.
    """
    os.sync()  # no writeback of an earlier step competes with this one
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        error = process.stderr.read().decode(errors="replace") if process.stderr else ""
        raise SystemExit(f"{command[0]} failed ({process.returncode}): {error[-2000:]}")
    return elapsed, usage.ru_maxrss


def hashlib_pass(path: Path) -> float:
    """One pass of Python's hashlib sha256 over the file, in large reads (this process)."""
    os.sync()
    started = time.perf_counter()
    with path.open("rb", buffering=0) as stream:
        hashlib.file_digest(stream, "sha256")
    return time.perf_counter() - started


def ledger_duration(config: Path, attempt: int) -> float:
    """The duration the importer recorded for an attempt (its own work, without start-up)."""
    ledger = config.parent / "box" / "ledger.sqlite"
    with sqlite3.connect(ledger) as connection:
        found = connection.execute("SELECT duration FROM attempts WHERE id = ?", (attempt,))
        return float(found.fetchone()[0])


def write_config(folder: Path, mir_root: Path | None = None, **watch: object) -> Path:
    """A config in ``folder`` (its base_dir is ``folder/box``); the mir backend if ``mir_root``."""
    lines = [f'base_dir = "{folder / "box"}"', "[log]", 'format = "json"']
    if mir_root is not None:
        lines += ["[import]", 'backend = "mir"', "[import.mir]"]
        lines += [f'bin = "{MIR}"', f'root = "{mir_root}"']
    if watch:
        lines.append("[watch]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in watch.items()]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def bench_large(sizes_mb: list[int], repeat: int, scratch: Path) -> list[dict[str, object]]:
    rows = []
    have_mir = MIR.exists()
    for size_mb in sizes_mb:
        case = scratch / f"large-{size_mb}"
        case.mkdir()
        package = case / "package.tar.gz"
        info_last = case / "info-last.tar.gz"
        make_large_package(package, size_mb * MB, info_last)
        row: dict[str, object] = {"size_mb": size_mb, "package_bytes": package.stat().st_size}
        floors, imports, duplicates, hashlib_passes, last = [], [], [], [], []
        rss, duplicate_in_ledger = 0, []
        # Side by side: each round measures the floor, then the import, on the same file.
        for round_ in range(repeat):
            copy = case / "copy.tar.gz"
            floors.append(measure(["sh", "-c", f'cp "{package}" "{copy}" && sync'])[0])
            copy.unlink()
            config = write_config(case / f"embedded-{round_}")
            elapsed, peak = measure([*DROPBOX, "--config", str(config), "import", str(package)])
            imports.append(elapsed)
            rss = max(rss, peak)
            elapsed, peak = measure([*DROPBOX, "--config", str(config), "import", str(package)])
            duplicates.append(elapsed)
            duplicate_in_ledger.append(ledger_duration(config, 2))
            rss = max(rss, peak)
            hashlib_passes.append(hashlib_pass(package))
            shutil.rmtree(config.parent)
            config = write_config(case / f"info-last-{round_}")
            last.append(measure([*DROPBOX, "--config", str(config), "import", str(info_last)])[0])
            shutil.rmtree(config.parent)
        row.update(
            floor_s=min(floors),
            embedded_s=min(imports),
            embedded_rss_kib=rss,
            sha256_s=min(hashlib_passes),
            duplicate_s=min(duplicates),
            duplicate_in_ledger_s=min(duplicate_in_ledger),
            info_last_s=min(last),
        )
        if have_mir:
            repo = case / "mir-backend-repo"
            subprocess.run([str(MIR), "init", "--root", str(repo)], check=True, capture_output=True)
            config = write_config(case / "mir-backend", mir_root=repo)
            row["mir_backend_s"], row["mir_backend_rss_kib"] = measure(
                [*DROPBOX, "--config", str(config), "import", str(package)]
            )
            shutil.rmtree(repo)
            shutil.rmtree(config.parent)
            repo = case / "mir-repo"
            subprocess.run([str(MIR), "init", "--root", str(repo)], check=True, capture_output=True)
            row["mir_s"], row["mir_rss_kib"] = measure(
                [str(MIR), "models", "--package-path", str(package), "--root", str(repo),
                 "--dst-rev", "bench@bench", "--model-location", str(case / "mir-models"),
                 "-w", str(case / "mir-work")]
            )  # fmt: skip
        rows.append(row)
        shutil.rmtree(case)
    return rows


class Daemon:
    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self.stream = log.open("w")
        self.process = subprocess.Popen(
            [*DROPBOX, "--config", str(config), "run"], stdout=self.stream, stderr=self.stream
        )
        wait_for(lambda: "daemon_ready" in log.read_text(), 30, "daemon start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.stream.close()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


def ledger_count(ledger: Path, sql: str, params: tuple[object, ...] = ()) -> int:
    if not ledger.exists():
        return 0
    with sqlite3.connect(ledger, timeout=30) as connection:
        return int(connection.execute(sql, params).fetchone()[0])


def small_package(path: Path, index: int) -> None:
    info = {
        "executor_config": {"class_names": ["person"]},
        "stages": {"s": {"files": ["m.params"], "mAP": 0.5, "stage_name": "s", "timestamp": index}},
        "best_stage_name": "s",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("ymir-info.yaml", yaml.safe_dump(info).encode()),
                           ("m.params", os.urandom(4096))):  # fmt: skip
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    path.write_bytes(igzip.compress(buffer.getvalue()))


def bench_throughput(count: int, scratch: Path) -> dict[str, object]:
    case = scratch / "throughput"
    case.mkdir()
    config = write_config(case)
    staging = case / "staging"
    staging.mkdir()
    for index in range(count):
        small_package(staging / f"p{index:05}.tar.gz", index)
    daemon = Daemon(config, case / "daemon.log")
    inbox = case / "box" / "inbox"
    ledger = case / "box" / "ledger.sqlite"
    started = time.perf_counter()
    for path in staging.iterdir():
        path.rename(inbox / path.name)
    final = "SELECT count(*) FROM attempts WHERE status IN ('imported', 'failed', 'duplicate')"
    wait_for(lambda: ledger_count(ledger, final) >= count, 600, "all small packages")
    elapsed = time.perf_counter() - started
    imported = ledger_count(ledger, "SELECT count(*) FROM attempts WHERE status = 'imported'")
    daemon.stop()
    shutil.rmtree(case)
    return {
        "packages": count,
        "imported": imported,
        "seconds": elapsed,
        "per_second": count / elapsed,
    }


def bench_latency(mode: str, count: int, scratch: Path) -> dict[str, object]:
    case = scratch / f"latency-{mode}"
    case.mkdir()
    config = write_config(case, mode=mode)
    daemon = Daemon(config, case / "daemon.log")
    inbox = case / "box" / "inbox"
    ledger = case / "box" / "ledger.sqlite"
    source = case / "source"
    source.mkdir()
    results: dict[str, list[float]] = {"cp": [], "rsync": []}
    for index in range(count):
        for writer in ("cp", "rsync"):
            name = f"{writer}-{index:03}.tar.gz"
            small_package(source / name, index)
            if writer == "cp":
                subprocess.run(["cp", str(source / name), str(inbox / name)], check=True)
            else:
                subprocess.run(["rsync", str(source / name), str(inbox / name)], check=True)
            done_writing = time.time()
            wait_for(lambda name=name: ledger_count(ledger, CLAIMED, (name,)) > 0, 60, name)
            with sqlite3.connect(ledger) as connection:
                received = connection.execute(
                    "SELECT received_at FROM attempts WHERE package = ?", (name,)
                ).fetchone()[0]
            claimed = datetime.fromisoformat(received.replace("Z", "+00:00")).timestamp()
            results[writer].append(claimed - done_writing)
    daemon.stop()
    shutil.rmtree(case)
    return {
        writer: {"median_s": statistics.median(values), "max_s": max(values), "n": len(values)}
        for writer, values in results.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="*", default=[420, 1600, 4000], help="MB")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per size; the best counts")
    parser.add_argument("--small", type=int, default=1000, help="packages for throughput (0: none)")
    parser.add_argument("--drops", type=int, default=50, help="drops per writer, latency (0: none)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check it still runs")
    parser.add_argument("--scratch", type=Path, default=None, help="folder for generated data")
    arguments = parser.parse_args()
    if arguments.smoke:
        arguments.sizes, arguments.small, arguments.drops = [2], 20, 3
    scratch = Path(tempfile.mkdtemp(prefix="ymir-dropbox-bench-", dir=arguments.scratch))
    try:
        large = bench_large(arguments.sizes, arguments.repeat, scratch)
        throughput = bench_throughput(arguments.small, scratch) if arguments.small else None
        latency = {
            mode: bench_latency(mode, arguments.drops, scratch)
            for mode in ("inotify", "polling")
            if arguments.drops
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print_report(large, throughput, latency)


def print_report(
    large: list[dict[str, Any]], throughput: dict[str, Any] | None, latency: dict[str, Any]
) -> None:
    print("\nLarge packages (one run, same file per row; best of --repeat; RSS is peak resident)")
    columns = (
        "size", "floor", "embedded", "ratio", "info last", "RSS", "sha256", "dup", "dup/sha",
        "mir backend", "real mir",
    )  # fmt: skip
    print(" ".join(f"{name:>11}" for name in columns))
    for row in large:
        embedded, floor = row["embedded_s"], row["floor_s"]
        cells = [
            f"{row['package_bytes'] / MB:.0f}MB",
            f"{floor:.2f}s",
            f"{embedded:.2f}s",
            f"{embedded / floor:.2f}",
            f"{row['info_last_s']:.2f}s",
            f"{row['embedded_rss_kib'] / 1024:.0f}MiB",
            f"{row['sha256_s']:.2f}s",
            f"{row['duplicate_s']:.2f}s",
            f"{row['duplicate_s'] / row['sha256_s']:.2f}",
        ]
        if "mir_s" in row:
            cells += [f"{row['mir_backend_s']:.2f}s", f"{row['mir_s']:.2f}s"]
        else:
            cells.append("(no mir environment)")
        print(" ".join(f"{cell:>11}" for cell in cells))
    print(
        "  floor: cp + sync of the package; ratio: embedded / floor; info last: the same files "
        "packed with ymir-info.yaml last, as mir packs them; dup: the same package "
        "imported again (its attempt took "
        + ", ".join(f"{row['duplicate_in_ledger_s']:.2f}s" for row in large)
        + " in the ledger, without start-up); sha256: one hashlib pass over the file"
    )
    if throughput is not None:
        print(
            f"\nThroughput: {throughput['packages']} small packages in "
            f"{throughput['seconds']:.2f}s = {throughput['per_second']:.1f} packages/s "
            f"(imported {throughput['imported']})"
        )
    if latency:
        print("\nPick-up latency (writer done -> claim)")
    for mode, writers in latency.items():
        for writer, values in writers.items():
            print(
                f"  {mode:<8} {writer:<6} median {values['median_s']:.3f}s  "
                f"max {values['max_s']:.3f}s  (n={values['n']})"
            )
    print(json.dumps({"large": large, "throughput": throughput, "latency": latency}))


if __name__ == "__main__":
    sys.exit(main())
