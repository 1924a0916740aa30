"""Writers that act on the file by path after closing it: the daemon waits for them.

`install` chmods the file after writing it; `wget`, `curl -R` and `rsync --inplace -t` set its
mtime. A package claimed at its close would make them fail ("No such file or directory").
Each tool here is the real one, writing straight into the inbox of a running daemon.
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from daemon_harness import (
    Dropbox,
    Dropboxes,
    dropboxes,
    valid_package,
    wait_until,
    write_large_package,
)

REPEATS = 5


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Dropboxes]:
    with dropboxes(tmp_path) as made:
        yield made


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A folder served over HTTP on 127.0.0.1, for wget and curl."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()


def need(tool: str, package: str) -> str:
    found = shutil.which(tool)
    if found is None:
        pytest.fail(f"{tool} is missing: install it with `apt-get install {package}`")
    return found


def imported_each(dropbox: Dropbox, results: list[subprocess.CompletedProcess[str]]) -> None:
    for result in results:
        assert result.returncode == 0, result.stderr
    dropbox.wait_settled()
    assert dropbox.names("failed") == set()
    assert len(dropbox.names("done")) == len(results)
    dropbox.assert_invariants()


def test_install_with_a_mode_is_never_cut_short(make: Dropboxes, tmp_path: Path) -> None:
    install = need("install", "coreutils")
    dropbox = make(settle_seconds=5.0)
    dropbox.start()
    results = []
    for number in range(REPEATS):
        source = tmp_path / f"model-{number}.tar.gz"
        source.write_bytes(valid_package(f"install-{number}"))
        dropbox.record(source.name, source)
        results.append(
            subprocess.run(
                [install, "-m", "644", str(source), str(dropbox.inbox / source.name)],
                capture_output=True,
                text=True,
            )
        )
    imported_each(dropbox, results)


CHMOD_AFTER_CLOSE = textwrap.dedent(
    """
    import os, sys, time
    source, target = sys.argv[1:3]
    with open(target, "wb") as stream:
        stream.write(open(source, "rb").read())
    time.sleep(0.05)
    os.chmod(target, 0o640)  # by path, 50 ms after the close
    """
)


def test_a_chmod_50_ms_after_the_close_finds_the_file(make: Dropboxes, tmp_path: Path) -> None:
    dropbox = make(settle_seconds=5.0)
    dropbox.start()
    results = []
    for number in range(REPEATS):
        source = tmp_path / f"model-{number}.tar.gz"
        source.write_bytes(valid_package(f"chmod-{number}"))
        dropbox.record(source.name, source)
        results.append(
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHMOD_AFTER_CLOSE,
                    str(source),
                    str(dropbox.inbox / source.name),
                ],
                capture_output=True,
                text=True,
            )
        )
    imported_each(dropbox, results)


@pytest.mark.parametrize("tool", ["wget", "curl"])
def test_a_download_that_sets_the_mtime_after_closing_is_imported(
    make: Dropboxes, served: tuple[str, Path], tool: str
) -> None:
    url, folder = served
    dropbox = make(settle_seconds=5.0)
    dropbox.start()
    results = []
    for number in range(REPEATS):
        name = f"model-{number}.tar.gz"
        data = valid_package(f"{tool}-{number}")
        (folder / name).write_bytes(data)
        os.utime(folder / name, (1_600_000_000, 1_600_000_000))  # an mtime to copy over
        dropbox.record(name, data)
        target = str(dropbox.inbox / name)
        command = (
            [need("wget", "wget"), "-q", "-O", target, f"{url}/{name}"]
            if tool == "wget"
            else [need("curl", "curl"), "-s", "-f", "-R", "-o", target, f"{url}/{name}"]
        )
        results.append(subprocess.run(command, capture_output=True, text=True))
    imported_each(dropbox, results)


def test_rsync_in_place_with_times_is_imported(make: Dropboxes, tmp_path: Path) -> None:
    rsync = need("rsync", "rsync")
    dropbox = make(settle_seconds=5.0)
    dropbox.start()
    results = []
    for number in range(REPEATS):
        source = tmp_path / f"model-{number}.tar.gz"
        source.write_bytes(valid_package(f"rsync-{number}"))
        dropbox.record(source.name, source)
        results.append(
            subprocess.run(
                [rsync, "--inplace", "-t", str(source), f"{dropbox.inbox}/"],
                capture_output=True,
                text=True,
            )
        )
    imported_each(dropbox, results)


REUPLOAD = textwrap.dedent(
    """
    import sys, time
    first, second, target, delay = sys.argv[1:5]
    with open(target, "wb") as stream:
        stream.write(open(first, "rb").read())
    time.sleep(float(delay))
    with open(target, "wb") as stream:  # the same name again, truncated: version 2
        data = open(second, "rb").read()
        for start in range(0, len(data), 1 << 20):
            stream.write(data[start : start + (1 << 20)])
    """
)


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03, 0.06])
def test_a_reupload_racing_the_claim_imports_the_second_version_whole(
    make: Dropboxes, tmp_path: Path, delay: float
) -> None:
    dropbox = make(settle_seconds=5.0)
    dropbox.start()
    first, second = tmp_path / "v1.tar.gz", tmp_path / "v2.tar.gz"
    first.write_bytes(valid_package("version 1"))
    write_large_package(second, 16 << 20)  # incompressible, like weights
    for number in range(3):
        name = f"model-{number}.tar.gz"
        subprocess.run(
            [sys.executable, "-c", REUPLOAD, str(first), str(second), str(dropbox.inbox / name),
             str(delay)],
            check=True,
        )  # fmt: skip
        dropbox.record(name, second)
    dropbox.wait_settled(timeout=60)
    assert dropbox.names("failed") == set()
    assert dropbox.names("done") == {f"model-{number}.tar.gz" for number in range(3)}
    dropbox.assert_invariants()


def test_polling_takes_a_file_it_saw_growing_after_settle_seconds(
    make: Dropboxes, tmp_path: Path
) -> None:
    """A polled change is no sign of an open writer: no 10 x settle_seconds wait."""
    dropbox = make(mode="polling", settle_seconds=1.0, poll_interval=0.2)
    dropbox.start()
    data = write_large_package(tmp_path / "grown.tar.gz", 4 << 20).read_bytes()
    target = dropbox.inbox / "grown.tar.gz"
    with target.open("wb") as stream:
        for start in range(0, len(data), len(data) // 4):
            stream.write(data[start : start + len(data) // 4])
            stream.flush()
            time.sleep(0.4)  # the poller sees it grow
    written = time.monotonic()
    dropbox.record("grown.tar.gz", data)
    dropbox.wait_settled(timeout=30)
    assert time.monotonic() - written < 5.0, "waited as if a writer held it open"
    assert dropbox.names("done") == {"grown.tar.gz"}


def test_polling_waits_for_a_writer_that_pauses_longer_than_settle(
    make: Dropboxes, tmp_path: Path
) -> None:
    """No close signal while polling: an incomplete stream waits instead of failing, and the
    writer's second half lands in the inbox, not in failed/."""
    dropbox = make(mode="polling", settle_seconds=0.5, poll_interval=0.1)
    dropbox.start()
    data = write_large_package(tmp_path / "paused.tar.gz", 2 << 20).read_bytes()
    target = dropbox.inbox / "paused.tar.gz"
    with target.open("wb") as stream:
        stream.write(data[: len(data) // 2])
        stream.flush()
        time.sleep(2.0)  # four times settle_seconds, with the file open
        stream.write(data[len(data) // 2 :])
    dropbox.record("paused.tar.gz", data)
    dropbox.wait_settled(timeout=30)
    assert dropbox.names("failed") == set()
    assert dropbox.names("done") == {"paused.tar.gz"}
    dropbox.assert_invariants()


def test_a_failed_package_that_its_writer_completes_later_is_judged_again(
    make: Dropboxes, tmp_path: Path
) -> None:
    """A writer that paused longer than any wait (10 x settle_seconds), then went on writing
    into its file, now in failed/: the verdict was about other bytes; it is judged again."""
    dropbox = make(settle_seconds=0.2, rescan_interval=0.5)
    dropbox.start()
    data = write_large_package(tmp_path / "late.tar.gz", 1 << 20).read_bytes()
    target = dropbox.inbox / "late.tar.gz"
    with target.open("wb") as stream:
        stream.write(data[: len(data) // 2])
        stream.flush()
        failed = dropbox.folder("failed") / "late.tar.gz"
        wait_until(failed.exists, 30, "the half package fails as truncated")
        stream.write(data[len(data) // 2 :])  # into the same file, now in failed/
    dropbox.record("late.tar.gz", data)
    wait_until(lambda: "late.tar.gz" in dropbox.names("done"), 30, "it is judged again")
    dropbox.wait_settled()
    assert dropbox.names("failed") == set()
    assert dropbox.events("failed_package_changed")
    dropbox.assert_invariants()
