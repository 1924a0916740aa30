"""The ymir-dropbox benchmark: every row measured in one run, on data generated here.

    python bench/run.py                 # 100 MB, 400 MB and 1.6 GB packages, 1,000 small, 50 drops
    python bench/run.py --sizes 420     # one size (MB)
    python bench/run.py --smoke         # tiny sizes: checks that the benchmark still works

Large packages: `ymir-dropbox import` (embedded backend) against real `mir models` (when the
mir environment exists, see README) and against GNU `tar -xzf` + `tar -czf` of the same file;
time and peak RSS of each command, with ratios. Throughput: small packages moved into the inbox
at once, through the daemon with the default config, until all are in the ledger. Pick-up
latency: time from the writer's close (cp) or rename (rsync) to the claim in the ledger.
"""

from __future__ import annotations

import argparse
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


def make_large_package(path: Path, total_bytes: int) -> None:
    """Two stage files of random bytes (like real weights), packed the way users pack them:
    GNU `tar -czf` (gzip's default level). Valid for real `mir models` too."""
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
    shutil.rmtree(source)


def measure(command: list[str], cwd: Path | None = None) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one command; fails loudly if it fails."""
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


def write_config(folder: Path, **watch: object) -> Path:
    lines = [f'base_dir = "{folder / "box"}"', "[log]", 'format = "json"']
    if watch:
        lines.append("[watch]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in watch.items()]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def bench_large(sizes_mb: list[int], scratch: Path) -> list[dict[str, object]]:
    rows = []
    have_mir = MIR.exists()
    for size_mb in sizes_mb:
        case = scratch / f"large-{size_mb}"
        case.mkdir()
        package = case / "package.tar.gz"
        make_large_package(package, size_mb * MB)
        config = write_config(case)
        row: dict[str, object] = {"size_mb": size_mb, "package_bytes": package.stat().st_size}
        row["embedded_s"], row["embedded_rss_kib"] = measure(
            ["ymir-dropbox", "--config", str(config), "import", str(package)]
        )
        extracted = case / "extracted"
        extracted.mkdir()
        untar_s, untar_rss = measure(["tar", "-xzf", str(package), "-C", str(extracted)])
        retar_s, retar_rss = measure(
            ["tar", "-czf", str(case / "re.tar.gz"), "-C", str(extracted), "."]
        )
        row["tar_s"] = untar_s + retar_s
        row["tar_rss_kib"] = max(untar_rss, retar_rss)
        shutil.rmtree(extracted)
        (case / "re.tar.gz").unlink()
        if have_mir:
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
            ["ymir-dropbox", "--config", str(config), "run"], stdout=self.stream, stderr=self.stream
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
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 400, 1600], help="MB")
    parser.add_argument("--small", type=int, default=1000, help="packages for the throughput row")
    parser.add_argument("--drops", type=int, default=50, help="drops per writer for latency")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check it still runs")
    parser.add_argument("--scratch", type=Path, default=None, help="folder for generated data")
    arguments = parser.parse_args()
    if arguments.smoke:
        arguments.sizes, arguments.small, arguments.drops = [2], 20, 3
    scratch = Path(tempfile.mkdtemp(prefix="ymir-dropbox-bench-", dir=arguments.scratch))
    try:
        large = bench_large(arguments.sizes, scratch)
        throughput = bench_throughput(arguments.small, scratch)
        latency = {
            mode: bench_latency(mode, arguments.drops, scratch) for mode in ("inotify", "polling")
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print_report(large, throughput, latency)


def print_report(
    large: list[dict[str, Any]], throughput: dict[str, Any], latency: dict[str, Any]
) -> None:
    print("\nLarge packages (one run, same files; RSS is peak resident memory)")
    columns = ("size", "embedded", "RSS", "tar x+c", "ratio", "mir", "ratio", "mir RSS")
    print(" ".join(f"{name:>9}" for name in columns))
    for row in large:
        embedded, tar = row["embedded_s"], row["tar_s"]
        cells = [
            f"{row['size_mb']}MB",
            f"{embedded:.2f}s",
            f"{row['embedded_rss_kib'] // 1024}MB",
            f"{tar:.2f}s",
            f"{embedded / tar:.3f}",
        ]
        if "mir_s" in row:
            mir = row["mir_s"]
            cells += [f"{mir:.2f}s", f"{embedded / mir:.3f}", f"{row['mir_rss_kib'] // 1024}MB"]
        else:
            cells.append("(no mir environment)")
        print(" ".join(f"{cell:>9}" for cell in cells))
    print(
        f"\nThroughput: {throughput['packages']} small packages in {throughput['seconds']:.2f}s "
        f"= {throughput['per_second']:.1f} packages/s (imported {throughput['imported']})"
    )
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
