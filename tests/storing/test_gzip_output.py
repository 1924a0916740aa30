"""The stored file's gzip stream: standard gzip, the same bytes for the same data however they
arrive, stored blocks for what does not compress, and the SHA-1 of what was written."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from ymir_dropbox.storing import gzip_output
from ymir_dropbox.storing.gzip_output import CHUNK, GzipOutput

RANDOM = random.Random(3).randbytes(3 * CHUNK + 12345)
TEXT = b"".join(b"stage_%d/model-%d.params\n" % (n, n) for n in range(200_000))[: 2 * CHUNK + 77]


def encode(
    data: bytes,
    level: int = 1,
    threaded: bool = True,
    piece: int = 0,
    target: io.IOBase | None = None,
) -> tuple[bytes, str]:
    """``data`` through a GzipOutput, written in one go or read in pieces of ``piece`` bytes."""
    buffer = io.BytesIO() if target is None else target
    output = GzipOutput(buffer, level, threaded)  # type: ignore[arg-type]
    try:
        if piece:
            source = io.BytesIO(data)

            def readinto(view: memoryview) -> int:
                return source.readinto(view[:piece])

            assert output.fill(readinto, len(data)) == len(data)
        else:
            output.write(data)
        sha1 = output.finish()
    finally:
        output.stop()
    return (buffer.getvalue() if isinstance(buffer, io.BytesIO) else b""), sha1


SIZES = {
    "empty": 0,
    "one-byte": 1,
    "chunk-less-one": CHUNK - 1,
    "one-chunk": CHUNK,
    "chunk-and-one": CHUNK + 1,
    "three-chunks-and-some": 3 * CHUNK + 12345,
}


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize("data", [RANDOM, TEXT], ids=["random", "text"])
def test_the_stream_is_gzip_of_the_data(size: int, data: bytes) -> None:
    encoded, sha1 = encode(data[:size])

    assert gzip.decompress(encoded) == data[:size]
    assert sha1 == hashlib.sha1(encoded).hexdigest()


@pytest.mark.parametrize("piece", [1000, 65536, 3 * CHUNK])
@pytest.mark.parametrize("threaded", [True, False], ids=["threaded", "one-thread"])
def test_the_same_data_gives_the_same_bytes_however_it_arrives(piece: int, threaded: bool) -> None:
    data = RANDOM[: CHUNK + 5000] + TEXT[: CHUNK + 3000]

    assert encode(data, piece=piece, threaded=threaded) == encode(data)


def test_data_that_does_not_compress_is_stored_for_5_bytes_per_64_kib() -> None:
    encoded, _ = encode(RANDOM)

    assert len(encoded) - len(RANDOM) < len(RANDOM) * 0.0001  # 0.01%


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_data_that_compresses_is_compressed_at_the_level(level: int) -> None:
    encoded, _ = encode(TEXT, level=level)

    assert gzip.decompress(encoded) == TEXT
    assert len(encoded) < len(TEXT) / 3


def test_gnu_gzip_accepts_the_stream(tmp_path: Path) -> None:
    stored = tmp_path / "stored.gz"
    stored.write_bytes(encode(RANDOM + TEXT)[0])

    done = subprocess.run(["gzip", "-t", str(stored)], capture_output=True, text=True)

    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("mode", ["wb", "w+b"], ids=["write-only", "read-write"])
@pytest.mark.parametrize("threaded", [True, False], ids=["threaded", "one-thread"])
def test_a_file_target_is_written_past_its_buffer(
    mode: str, threaded: bool, tmp_path: Path
) -> None:
    """The stream starts where the file is, after what its buffer held."""
    path = tmp_path / "stored.gz"
    with path.open(mode) as target:
        target.write(b"before")  # the stream starts where the file is
        _, sha1 = encode(TEXT + RANDOM, threaded=threaded, target=target)  # type: ignore[arg-type]

    assert gzip.decompress(path.read_bytes()[6:]) == TEXT + RANDOM
    assert sha1 == hashlib.sha1(path.read_bytes()[6:]).hexdigest()


def test_a_chunk_buffer_is_filled_again_only_once_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a single buffer, every chunk waits for the hashing thread: were it filled again
    sooner, the thread would hash the next chunk's bytes in place of this one's."""
    monkeypatch.setattr(gzip_output, "BUFFERS", 1)
    path = tmp_path / "stored.gz"
    with path.open("wb") as target:
        _, sha1 = encode(RANDOM * 4 + TEXT, target=target)  # type: ignore[arg-type]

    assert sha1 == hashlib.sha1(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("threaded", [True, False], ids=["threaded", "one-thread"])
def test_a_failed_write_raises_and_ends_the_thread(threaded: bool) -> None:
    with open("/dev/full", "w+b") as full, pytest.raises(OSError):
        encode(RANDOM, threaded=threaded, target=full)  # type: ignore[arg-type]


def test_fill_stops_where_the_source_runs_dry() -> None:
    output = GzipOutput(io.BytesIO(), 1, threaded=False)
    source = io.BytesIO(b"x" * 100)
    readinto: Callable[[memoryview], int] = source.readinto

    assert output.fill(readinto, 1000) == 100
    output.stop()


class _FailingDigest:
    """A SHA-1 whose third update fails, as hashlib would with no memory left."""

    def __init__(self) -> None:
        self.updates = 0

    def update(self, data: object) -> None:
        self.updates += 1
        if self.updates == 3:
            raise MemoryError("no memory left")

    def hexdigest(self) -> str:
        return "0" * 40


@pytest.mark.parametrize("chunks", [1, 6])
def test_a_hashing_thread_that_fails_fails_the_stream(chunks: int, tmp_path: Path) -> None:
    """Never a hash of part of the file (a file renamed to a wrong name), never a writer
    waiting forever for a buffer the thread will not give back."""
    raised: list[BaseException] = []

    def write() -> None:
        with (tmp_path / "stored.gz").open("wb") as target:
            output = GzipOutput(target, 1, threaded=True)
            assert output.hashing is not None
            output.hashing.digest = _FailingDigest()  # type: ignore[assignment]
            try:
                output.fill(io.BytesIO(RANDOM * chunks).readinto, len(RANDOM) * chunks)
                output.finish()
            except MemoryError as error:
                raised.append(error)
            finally:
                output.stop()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(timeout=30)

    assert not writer.is_alive(), "the writer waits for a buffer forever"
    assert len(raised) == 1
