"""Temporary files: a start removes the leftovers of writers that are gone, never a file that
a live writer (a `ymir-dropbox import` beside the daemon) is still writing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from ymir_dropbox.storing.durable import (
    TEMP_PREFIX,
    TEMP_SUFFIX,
    remove_temporaries,
    write_atomically,
)

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from ymir_dropbox.storing.durable import temporary_file
    with temporary_file(Path(sys.argv[1])) as (stream, path):
        stream.write(b"half a model")
        stream.flush()
        print(path, flush=True)
        sys.stdin.read()  # writes on until told to stop
    """
)


def test_a_file_a_live_writer_holds_is_not_removed(tmp_path: Path) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdin is not None
    held = Path(writer.stdout.readline().strip())
    try:
        assert remove_temporaries(tmp_path) == []
        assert held.is_file()
    finally:
        writer.stdin.close()
        writer.wait(timeout=30)


def test_the_leftover_of_a_writer_that_is_gone_is_removed(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], text=True,
                          capture_output=True, check=True)  # fmt: skip
    leftover = tmp_path / f"{TEMP_PREFIX}{gone.stdout.strip()}-abc{TEMP_SUFFIX}"
    leftover.write_bytes(b"half a model")
    of_old_release = tmp_path / f"{TEMP_PREFIX}abc{TEMP_SUFFIX}"  # no pid in the name
    of_old_release.write_bytes(b"half a model")
    someone_elses = tmp_path / "model.tmp"
    someone_elses.write_bytes(b"not ours")

    removed = remove_temporaries(tmp_path)

    assert sorted(removed) == sorted([leftover, of_old_release])
    assert someone_elses.is_file()


def test_an_atomic_write_leaves_no_temporary(tmp_path: Path) -> None:
    write_atomically(tmp_path / "report.json", b"{}")

    assert [path.name for path in tmp_path.iterdir()] == ["report.json"]
