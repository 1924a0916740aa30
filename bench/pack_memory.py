"""Memory and time of `ymir-dropbox pack --from` on a large checkpoint, run by hand.

    python bench/pack_memory.py                 # a 1.5 GB best.pt
    python bench/pack_memory.py --size-mb 4000  # another size
    python bench/pack_memory.py --smoke         # 20 MB: checks that it still works

Builds a YOLOv5 run folder (results.csv, opt.yaml, the dataset yaml) whose `weights/best.pt`
is a PyTorch-style zip holding a hand-made `data.pkl` and one tensor of random bytes of the
given size (weights hardly compress), then packs it with the `ymir-dropbox` command of this
interpreter and reports its wall time and peak RSS: the package is streamed, so the peak must
stay flat whatever the checkpoint's size. The floor beside it is `cp` of best.pt plus `sync`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import yaml

MB = 1000 * 1000
CHUNK = 4 * 1024 * 1024
DROPBOX = [sys.executable, "-m", "ymir_dropbox"]
# {'model': models.yolo.DetectionModel(), 'epoch': -1} as pickle protocol 2, by hand.
DATA_PKL = (
    b"\x80\x02}q\x00(X\x05\x00\x00\x00modelq\x01cmodels.yolo\nDetectionModel\nq\x02)\x81"
    b"X\x05\x00\x00\x00epochJ\xff\xff\xff\xffu."
)
COLUMNS = (
    "epoch",
    "metrics/precision",
    "metrics/recall",
    "metrics/mAP_0.5",
    "metrics/mAP_0.5:0.95",
)


def write_checkpoint(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", DATA_PKL)
        with archive.open("archive/data/0", "w", force_zip64=True) as tensor:
            for start in range(0, size, CHUNK):
                tensor.write(os.urandom(min(CHUNK, size - start)))
        archive.writestr("archive/version", "3\n")


def make_run(project: Path, size: int) -> Path:
    """``project/runs/train/exp`` of a YOLOv5 clone at ``project``: two epochs, best.pt of
    ``size`` bytes, a small last.pt."""
    run = project / "runs" / "train" / "exp"
    run.mkdir(parents=True)
    (project / "data").mkdir()
    (project / "data" / "pets.yaml").write_text(yaml.safe_dump({"names": ["person", "cat"]}))
    (run / "opt.yaml").write_text(yaml.safe_dump({"data": "data/pets.yaml", "imgsz": 640}))
    rows = [",".join(f"{name:>20}" for name in COLUMNS)]
    rows += [f"{0:>20},{0.6:>20},{0.5:>20},{0.55:>20},{0.3:>20}"]
    rows += [f"{1:>20},{0.7:>20},{0.6:>20},{0.65:>20},{0.4:>20}"]
    (run / "results.csv").write_text("\n".join(rows) + "\n")
    write_checkpoint(run / "weights" / "best.pt", size)
    write_checkpoint(run / "weights" / "last.pt", 4 * MB)
    return run


def measure(command: list[str]) -> tuple[float, int, str]:
    """Wall time, peak RSS (KiB, its ``ru_maxrss``) and what one command said on stderr;
    fails if it fails."""
    os.sync()
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    said = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command} failed: {said[-2000:]}")
    return elapsed, usage.ru_maxrss, said


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mb", type=int, default=1500, help="best.pt, in MB (1500)")
    parser.add_argument("--smoke", action="store_true", help="20 MB, to check it still runs")
    parser.add_argument("--scratch", type=Path, default=None, help="folder for generated data")
    arguments = parser.parse_args()
    size = 20 * MB if arguments.smoke else arguments.size_mb * MB
    scratch = Path(tempfile.mkdtemp(prefix="ymir-dropbox-pack-bench-", dir=arguments.scratch))
    try:
        run = make_run(scratch / "yolov5", size)
        best = run / "weights" / "best.pt"
        os.sync()  # the generated run is on disk before anything is timed
        started = time.perf_counter()
        shutil.copyfile(best, scratch / "copy.pt")
        os.sync()
        floor = time.perf_counter() - started
        (scratch / "copy.pt").unlink()
        package = scratch / "model.tar.gz"
        elapsed, peak, said = measure(
            [*DROPBOX, "pack", str(run), "--from", "yolov5", "-o", str(package)]
        )
        packed = package.stat().st_size
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("| best.pt | package | floor `cp` + `sync` | `pack --from yolov5` | peak RSS |")
    print("|---|---|---|---|---|")
    print(
        f"| {size / MB:,.0f} MB | {packed / MB:,.0f} MB | {floor:.2f} s | {elapsed:.2f} s "
        f"| {peak / 1024:.0f} MiB |"
    )
    print(said.strip())


if __name__ == "__main__":
    main()
