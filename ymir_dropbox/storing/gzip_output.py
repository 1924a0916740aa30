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

import fcntl
import hashlib
import os
import struct
import threading
from collections.abc import Callable
from typing import BinaryIO

from isal import isal_zlib

from ymir_dropbox.storing.linux import start_writeback

CHUNK = 1024 * 1024
READ_BACK = 1024 * 1024
# The writer waits when the hashing thread falls this far behind: what it reads back is still
# in the page cache, however little memory the machine has.
MAX_LAG = 64 * 1024 * 1024
SAMPLE = 8 * 1024
MIN_SAVING = 0.02
STORED_BLOCK = 0xFFFF
WRITEBACK_BYTES = 16 * 1024 * 1024
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


def _readable(fd: int) -> bool:
    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR


class _Sha1ReadBack:
    """The SHA-1 of a file being written, computed by a thread that reads it back behind the
    writer (``pread`` on the same descriptor): told how far the file is written, it hashes up
    to there, then waits for more."""

    def __init__(self, fd: int, start: int) -> None:
        self.fd = fd
        self.hashed = start
        self.written = start
        self.done = False
        self.error: BaseException | None = None
        self.digest = hashlib.sha1()  # noqa: S324 - YMIR names models by SHA-1; not for security
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="store-sha1", daemon=True)
        self.thread.start()

    def advance(self, written: int) -> None:
        with self.changed:
            self.written += written
            self.changed.notify_all()
            self.changed.wait_for(lambda: self.written - self.hashed <= MAX_LAG or self.done)

    def _run(self) -> None:
        buffer = bytearray(READ_BACK)
        view = memoryview(buffer)
        try:
            while True:
                with self.changed:
                    self.changed.wait_for(lambda: self.done or self.written > self.hashed)
                    until, last = self.written, self.done
                while self.hashed < until:
                    wanted = view[: min(READ_BACK, until - self.hashed)]
                    count = os.preadv(self.fd, [wanted], self.hashed)
                    if not count:
                        raise OSError(f"the stored file ends at byte {self.hashed}, not {until}")
                    self.digest.update(view[:count])
                    with self.changed:
                        self.hashed += count
                        self.changed.notify_all()
                if last:
                    return
        except BaseException as error:
            with self.changed:
                self.error = error
                self.done = True  # the writer waits no more
                self.changed.notify_all()

    def stop(self) -> None:
        """Let the thread hash what is written and end."""
        with self.changed:
            self.done = True
            self.changed.notify()
        self.thread.join()

    def hexdigest(self) -> str:
        self.stop()
        if self.error is not None:
            raise self.error
        return self.digest.hexdigest()


class GzipOutput:
    """A gzip stream written to ``target`` in fixed chunks; :meth:`finish` returns its SHA-1.

    Call :meth:`stop` in any case when done (it ends the hashing thread). The SHA-1 is computed
    in a second thread when ``threaded`` and ``target`` is a file open for reading and writing;
    otherwise as the pieces are written.
    """

    def __init__(self, target: BinaryIO, level: int, threaded: bool) -> None:
        self.target = target
        self.level = level
        self.crc = 0
        self.size = 0
        self.written = 0
        self.flushed = 0
        try:
            self.fd: int | None = target.fileno()
        except (AttributeError, OSError):  # not a file (io.BytesIO)
            self.fd = None
        self.read_back: _Sha1ReadBack | None = None
        self.sha1 = hashlib.sha1()  # noqa: S324 - YMIR names models by SHA-1; not for security
        if self.fd is not None:
            target.flush()  # what follows is written to the descriptor, past the buffer
            if threaded and _readable(self.fd):
                self.read_back = _Sha1ReadBack(self.fd, os.lseek(self.fd, 0, os.SEEK_CUR))
        self.buffer = bytearray(CHUNK)
        self.view = memoryview(self.buffer)
        self.filled = 0
        self._put([GZIP_HEADER])

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
            self._put(pieces)
        self.filled = 0

    def _worth_compressing(self, data: memoryview) -> bool:
        """Whether a sample from the middle of the chunk shrinks by ``MIN_SAVING`` at least."""
        if len(data) <= 2 * SAMPLE:
            return True
        middle = len(data) // 2
        sample = data[middle : middle + SAMPLE]
        packed = isal_zlib.compress(sample, self.level, -isal_zlib.MAX_WBITS)
        return len(packed) < SAMPLE * (1 - MIN_SAVING)

    def _put(self, pieces: list[Piece]) -> None:
        """Write the pieces (the chunk buffer is free again once this returns) and hash them."""
        if self.fd is None:
            for piece in pieces:
                self.target.write(piece)
        else:
            count = _write_all(self.fd, pieces)
            self.written += count
            if self.written - self.flushed >= WRITEBACK_BYTES:
                # Start the disk on what is written so far; the final fsync waits for less.
                start_writeback(self.fd, self.flushed, self.written - self.flushed)
                self.flushed = self.written
            if self.read_back is not None:
                self.read_back.advance(count)
                return
        for piece in pieces:
            self.sha1.update(piece)

    def finish(self) -> str:
        """Write the last chunk, the end of the deflate stream and the gzip trailer; return
        the SHA-1 of the whole file."""
        if self.filled:
            self._emit()
        trailer = struct.pack("<II", self.crc, self.size & 0xFFFFFFFF)
        self._put([LAST_BLOCK + trailer])
        if self.read_back is not None:
            return self.read_back.hexdigest()
        return self.sha1.hexdigest()

    def stop(self) -> None:
        if self.read_back is not None:
            self.read_back.stop()
