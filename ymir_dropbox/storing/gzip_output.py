"""The stored file's gzip stream: cut in fixed chunks, deterministic, fast where compression
cannot help.

The tar stream is cut into 1 MiB chunks at fixed offsets. Each chunk is compressed at the
configured ISA-L level as an independent deflate segment that ends on a byte boundary (a sync
flush), the way pigz cuts its blocks. A chunk whose sample would shrink by less than 2%
(weights that look random) is written as stored deflate blocks instead: no compression work
at all, for 5 bytes per 64 KiB, where compressing it would gain nothing anyway. The same tar
stream always gives the same bytes.

The SHA-1 of the output (YMIR's model hash) is computed by a second thread that reads back, a
little behind, what was just written (from the page cache): handing it the chunks instead
would have it read memory the other core just wrote, which on two cores costs more than the
read. hashlib and the reads release the GIL. The disk is asked to start writing every 16 MiB,
so that the final fsync waits for little. Memory is a chunk or two, whatever the package.
"""

from __future__ import annotations

import hashlib
import os
import queue
import struct
import threading
from collections.abc import Callable
from typing import BinaryIO

from isal import isal_zlib

from ymir_dropbox.core.linux import finish_writeback, start_writeback

CHUNK = 1024 * 1024
# Chunk buffers: the writer fills one while the hashing thread hashes the others, and waits
# for one when the thread falls this far behind.
BUFFERS = 4
SAMPLE = 8 * 1024
MIN_SAVING = 0.02
STORED_BLOCK = 0xFFFF
WRITEBACK_BYTES = 16 * 1024 * 1024
PACE_STEPS = 4
# gzip magic, deflate, no flags, mtime 0, no extra flags, OS unknown: nothing varies
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
LAST_BLOCK = b"\x01\x00\x00\xff\xff"  # an empty stored block, marked last
FULL_STORED_HEADER = struct.pack("<BHH", 0, STORED_BLOCK, 0)

Piece = bytes | memoryview


def _stored_header(size: int) -> bytes:
    return struct.pack("<BHH", 0, size, size ^ 0xFFFF)


def _write_all(fd: int, pieces: list[Piece]) -> int:
    """Write every piece; a short write (disk full, file size limit) goes on piece by piece
    so that the next write reports the error."""
    total = sum(len(piece) for piece in pieces)
    done = os.writev(fd, pieces)
    if done < total:
        skip = done
        for piece in pieces:
            view = memoryview(piece)
            if skip >= len(view):
                skip -= len(view)
                continue
            view, skip = view[skip:], 0
            while view:
                view = view[os.write(fd, view) :]
    return total


class _Writer:
    """Writes the pieces of the stream to the target, and has the disk follow close behind:
    every ``WRITEBACK_BYTES`` it starts writing them out, and it waits for (and drops from
    the page cache) what it wrote ``PACE_STEPS`` steps before (see ``finish_writeback``).
    The final fsync then waits for little."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        try:
            self.fd: int | None = target.fileno()
        except (AttributeError, OSError):  # not a file (io.BytesIO)
            self.fd = None
            return
        target.flush()  # what follows is written to the descriptor, past the buffer
        # Offsets in the file: written up to, writeback started up to, on disk up to.
        self.written = self.flushed = self.done = os.lseek(self.fd, 0, os.SEEK_CUR)

    def put(self, pieces: list[Piece]) -> None:
        if self.fd is None:
            for piece in pieces:
                self.target.write(piece)
            return
        self.written += _write_all(self.fd, pieces)
        if self.written - self.flushed >= WRITEBACK_BYTES:
            start_writeback(self.fd, self.flushed, self.written - self.flushed)
            self.flushed = self.written
            behind = self.flushed - WRITEBACK_BYTES * PACE_STEPS
            if behind > self.done:
                finish_writeback(self.fd, self.done, behind - self.done)
                self.done = behind


class _HashingThread:
    """The SHA-1 of the pieces written, computed by a second thread from the very buffers
    they were written from, just after (no copy); each buffer comes back to the writer once
    hashed. hashlib releases the GIL. A few buffers only: more let the bytes leave the
    caches before they are hashed, which costs more than the waits it saves."""

    def __init__(self, buffers: int) -> None:
        self.digest = hashlib.sha1()  # noqa: S324 - YMIR names models by SHA-1; not for security
        self.error: BaseException | None = None
        self.pending: queue.SimpleQueue[tuple[list[Piece], bytearray | None] | None] = (
            queue.SimpleQueue()
        )
        self.free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(buffers):
            self.free.put(bytearray(CHUNK))
        self.thread = threading.Thread(target=self._run, name="store-sha1", daemon=True)
        self.thread.start()

    def put(self, pieces: list[Piece], buffer: bytearray | None) -> None:
        """Hash the pieces (views of ``buffer``, if any, which is then free again)."""
        if self.error is not None:
            raise self.error
        self.pending.put((pieces, buffer))

    def buffer(self) -> bytearray:
        """A chunk buffer that no piece still waiting refers to."""
        return self.free.get()

    def _run(self) -> None:
        while (job := self.pending.get()) is not None:
            pieces, buffer = job
            if self.error is None:
                try:
                    for piece in pieces:
                        self.digest.update(piece)
                except BaseException as error:  # out of memory: raised to the writer
                    self.error = error
            if buffer is not None:  # always given back: the writer never waits in vain
                self.free.put(buffer)

    def stop(self) -> None:
        if self.thread.is_alive():
            self.pending.put(None)
            self.thread.join()

    def hexdigest(self) -> str:
        self.stop()
        if self.error is not None:
            raise self.error
        return self.digest.hexdigest()


class GzipOutput:
    """A gzip stream written to ``target`` in fixed chunks; :meth:`finish` returns its SHA-1.

    Call :meth:`stop` in any case when done (it ends the hashing thread). The SHA-1 is
    computed by a second thread when ``threaded``; otherwise as the pieces are written.
    """

    def __init__(self, target: BinaryIO, level: int, threaded: bool) -> None:
        self.level = level
        self.crc = 0
        self.size = 0
        self.writer = _Writer(target)
        self.sha1 = hashlib.sha1()  # noqa: S324 - YMIR names models by SHA-1; not for security
        self.hashing = _HashingThread(BUFFERS) if threaded else None
        self.buffer = self.hashing.buffer() if self.hashing is not None else bytearray(CHUNK)
        self.view = memoryview(self.buffer)
        self.filled = 0
        try:
            self._put([GZIP_HEADER])
        except BaseException:
            self.stop()
            raise

    def write(self, data: bytes) -> None:
        """Append a few bytes (headers, padding, a small file)."""
        position = 0
        while position < len(data):
            count = min(len(data) - position, CHUNK - self.filled)
            self.view[self.filled : self.filled + count] = data[position : position + count]
            self.filled += count
            position += count
            if self.filled == CHUNK:
                self._emit()

    def fill(
        self,
        readinto: Callable[[memoryview], int],
        size: int,
        tee: Callable[[memoryview], object] | None = None,
    ) -> int:
        """Append ``size`` bytes read straight into the chunks by ``readinto`` (no copy), each
        piece also given to ``tee`` if set. Returns how many came before ``readinto`` ran dry."""
        left = size
        while left:
            space = self.view[self.filled : min(CHUNK, self.filled + left)]
            count = readinto(space)
            if not count:
                break
            if tee is not None:
                tee(space[:count])
            self.filled += count
            left -= count
            if self.filled == CHUNK:
                self._emit()
        return size - left

    def _emit(self) -> None:
        data = self.view[: self.filled]
        self.crc = isal_zlib.crc32(data, self.crc)
        self.size += self.filled
        if self._worth_compressing(data):
            compressor = isal_zlib.compressobj(self.level, isal_zlib.DEFLATED, -isal_zlib.MAX_WBITS)
            self._put([compressor.compress(data) + compressor.flush(isal_zlib.Z_SYNC_FLUSH)])
        else:
            pieces: list[Piece] = []
            for start in range(0, self.filled, STORED_BLOCK):
                block = data[start : start + STORED_BLOCK]
                full = len(block) == STORED_BLOCK
                pieces += [FULL_STORED_HEADER if full else _stored_header(len(block)), block]
            self._put(pieces, self.buffer)
            if self.hashing is not None:  # the pieces are views of this buffer: take another
                self.buffer = self.hashing.buffer()
                self.view = memoryview(self.buffer)
        self.filled = 0

    def _worth_compressing(self, data: memoryview) -> bool:
        """Whether a sample from the middle of the chunk shrinks by ``MIN_SAVING`` at least."""
        if len(data) <= 2 * SAMPLE:
            return True
        middle = len(data) // 2
        sample = data[middle : middle + SAMPLE]
        packed = isal_zlib.compress(sample, self.level, -isal_zlib.MAX_WBITS)
        return len(packed) < SAMPLE * (1 - MIN_SAVING)

    def _put(self, pieces: list[Piece], buffer: bytearray | None = None) -> None:
        """Write the pieces (views of ``buffer``, if any), then hash them."""
        self.writer.put(pieces)
        if self.hashing is not None:
            self.hashing.put(pieces, buffer)
        else:
            for piece in pieces:
                self.sha1.update(piece)

    def finish(self) -> str:
        """Write the last chunk, the end of the deflate stream and the gzip trailer; return
        the SHA-1 of the whole file."""
        if self.filled:
            self._emit()
        trailer = struct.pack("<II", self.crc, self.size & 0xFFFFFFFF)
        self._put([LAST_BLOCK + trailer])
        if self.hashing is not None:
            return self.hashing.hexdigest()
        return self.sha1.hexdigest()

    def stop(self) -> None:
        if self.hashing is not None:
            self.hashing.stop()
