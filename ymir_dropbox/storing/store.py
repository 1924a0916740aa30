"""Writing a package into YMIR's model store: ``<models>/<sha1 of the file>``, atomically.

The stored file is a standard gzip tar that YMIR reads with ``tarfile.open(path, 'r')``:
``<stage>/<file>`` for every stage file, ``attachments/<section>/<file>``, then the normalized
``ymir-info.yaml``. Member order, times, owners and the YAML are fixed, so the same package
content always yields the same bytes and the same model hash. Members are copied from the
spooled decompressed tar in 1 MiB chunks: memory does not grow with the package.
"""

from __future__ import annotations

import hashlib
import io
import queue
import tarfile
import threading
from pathlib import Path
from typing import BinaryIO

from isal import igzip

from ymir_dropbox.reading.archive import INFO_NAME
from ymir_dropbox.reading.normalization import dump_info
from ymir_dropbox.reading.validation import ValidationReport
from ymir_dropbox.storing.durable import finish_file, temporary_file
from ymir_dropbox.storing.linux import start_writeback

COPY_CHUNK = 1024 * 1024
QUEUE_CHUNKS = 4
# Below this, starting a thread costs more than it saves.
THREAD_ABOVE_BYTES = 8 * 1024 * 1024
WRITEBACK_BYTES = 16 * 1024 * 1024


class _HashingWriter:
    """Hashes and writes the compressed stream in a second thread, overlapping compression.

    hashlib and file writes release the GIL, so SHA-1 (the model hash) and the disk cost
    little extra time. At most ``QUEUE_CHUNKS`` chunks wait: memory stays bounded.
    """

    def __init__(self, target: BinaryIO, threaded: bool) -> None:
        self.target = target
        self.written = 0
        self.flushed = 0
        try:
            self.fd: int | None = target.fileno()
        except (AttributeError, OSError):  # not a file (io.BytesIO)
            self.fd = None
        self.sha1 = hashlib.sha1()  # noqa: S324 - YMIR names models by SHA-1; not for security
        self.chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUE_CHUNKS)
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        if threaded:
            self.thread = threading.Thread(target=self._drain, name="store-writer", daemon=True)
            self.thread.start()

    def _drain(self) -> None:
        while (chunk := self.chunks.get()) is not None:
            if self.error is None:
                try:
                    self._write(chunk)
                except BaseException as error:
                    self.error = error

    def _write(self, data: bytes) -> int:
        self.sha1.update(data)
        count = self.target.write(data)
        self.written += count
        if self.fd is not None and self.written - self.flushed >= WRITEBACK_BYTES:
            # Start the disk on what is written so far; the final fsync waits for less.
            self.target.flush()
            start_writeback(self.fd, self.flushed, self.written - self.flushed)
            self.flushed = self.written
        return count

    def write(self, data: bytes) -> int:
        if self.thread is None:
            return self._write(data)
        if self.error is not None:
            raise self.error
        self.chunks.put(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> str:
        """Wait for every chunk to be written; return the SHA-1, or raise the write's error."""
        if self.thread is not None:
            self.chunks.put(None)
            self.thread.join()
        if self.error is not None:
            raise self.error
        return self.sha1.hexdigest()


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tar(report: ValidationReport, spool: BinaryIO, target: BinaryIO, level: int) -> str:
    """Write the stored form of a validated package to ``target``; return its SHA-1."""
    hashing = _HashingWriter(target, threaded=report.unpacked_bytes > THREAD_ABOVE_BYTES)
    try:
        _write_members(report, spool, hashing, level)
    finally:
        model_hash = hashing.close()
    return model_hash


def _write_members(
    report: ValidationReport, spool: BinaryIO, output: _HashingWriter, level: int
) -> None:
    assert report.normalized is not None
    compressed = igzip.GzipFile(fileobj=output, mode="wb", compresslevel=level, mtime=0)  # type: ignore[no-untyped-call]
    with compressed, tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.copybufsize = COPY_CHUNK  # type: ignore[attr-defined]
        for stored in report.files:
            spool.seek(stored.source.offset)
            tar.addfile(_member(stored.name, stored.source.size), spool)
        info = dump_info(report.normalized)
        tar.addfile(_member(INFO_NAME, len(info)), io.BytesIO(info))


def store_package(
    report: ValidationReport, spool: BinaryIO, models: Path, level: int
) -> tuple[str, Path]:
    """Write the stored file under a temporary name, fsync, and rename it to its hash.

    A crash leaves at most a temporary file (removed by ``remove_temporaries`` at start),
    never a half file under a hash name. Returns the model hash and the stored path.
    """
    with temporary_file(models) as (target, temporary):
        model_hash = write_tar(report, spool, target, level)
        stored = models / model_hash
        finish_file(target, temporary, stored)
    return model_hash, stored
