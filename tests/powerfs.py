"""A FUSE filesystem that loses, on a simulated power cut, everything not made durable by fsync.

It passes every operation through to a backing folder and keeps, beside it, what a disk would
still hold if the power failed now. A power cut (:meth:`PowerLossMount.cut`) SIGKILLs the
given process groups and, at the same instant, puts the backing folder back to that durable
state. Tests and ``bench/powercut.py`` run the daemon on it to check its fsync discipline.

The model
---------

* **File content** is durable as of the file's last ``fsync`` or ``fdatasync`` (size, bytes,
  mode and mtime; ``fdatasync`` counts as ``fsync``). Everything written, truncated or chmodded
  since is lost. A file never synced since its creation comes back empty (if its name does).
* **Names** (create, mkdir, symlink, unlink, rmdir, rename) are metadata changes, kept in one
  list in the order they happened. An ``fsync`` of a folder makes durable every change that
  touches that folder, and before each one every earlier change on the same file or the same
  name (its creation, the renames that brought it there): a file's history is committed in
  order, so a file never comes back under two names, and a name never comes back holding a
  file that was replaced after it. A rename is one change touching both its folders: an fsync
  of either commits it whole (the file leaves the old folder and enters the new one at once).
  Changes not committed are undone: a new name disappears, an unlinked name comes back, a
  renamed file goes back to its old name.
* A folder's own name is a change in its parent: a new folder (and all in it) disappears
  unless its parent was fsynced after the ``mkdir``.
* An ``fsync`` of a file never makes its name durable, and ``sync``/``syncfs`` do nothing
  (FUSE does not pass them on). Whatever was in the backing folder at mount time is durable.

Against ext4 with ``data=ordered`` (the default), this model is **stricter** where ext4 is
kind to careless programs:

* ext4 has one journal: an fsync of any file or folder commits every metadata change made so
  far, in every folder, and the journal also commits on its own every 5 s. Here only the
  changes touching the fsynced folder (and their history) become durable, and nothing is
  ever committed without an fsync.
* ext4's fsync of a newly created file also commits its name; here it does not.
* ext4 writes back dirty data on its own (``dirty_expire_centisecs``, 30 s) and, with
  ``auto_da_alloc``, flushes a file's data before committing a rename that replaces another
  file or a truncate to zero; here unsynced data is lost however old it is.

and **laxer** where ext4 could lose more:

* a write is all-or-nothing at fsync granularity: ext4 can also keep part of the unsynced
  writes (pages written back before the cut) or, with delayed allocation, a file of the
  right size full of zeros; here unsynced content is simply the last synced content.
* renames are atomic and committed whole by an fsync of either folder, as ext4 and XFS do in
  their journals; a filesystem that logs each folder on its own could commit only one half.
* inode numbers, timestamps other than mtime, xattrs, hard links and special files are not
  modelled (``link`` and ``mknod`` are not supported).

What the mount offers: multithreaded, no ``direct_io`` (so ``mmap`` of SQLite's ``-shm``
works), locks (``flock``, ``fcntl``) handled by the kernel, no attribute or name caching (the
kernel always asks, so nothing stale survives a cut), ``hard_remove`` (an open file that is
unlinked is really gone). Handles opened before a cut fail with EIO afterwards, and so does
any operation that arrives while a cut is under way.

Run by hand: ``python tests/powerfs.py serve --backing B --mount M --state S --control NAME``;
the state folder holds the durable copies; the abstract Unix socket NAME takes one line,
``cut PGID...`` (or ``ping``), and answers one JSON line.
It needs libfuse 2 or 3 (Debian: ``apt-get install fuse libfuse2``) and ``pip install mfusepy``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes.util
import errno
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVER_LOG = "server.log"
INSTALL_HINT = (
    "the power-loss filesystem needs FUSE: /dev/fuse, libfuse and fusermount "
    "(apt-get install fuse libfuse2) and the mfusepy package (pip install -e '.[test]')"
)


class PowerFSUnavailable(RuntimeError):
    """FUSE, libfuse or mfusepy is missing on this machine."""


# -- the model ----------------------------------------------------------------------------------


@dataclass(eq=False)
class Node:
    id: int


@dataclass(eq=False)
class FileNode(Node):
    """``durable``: the copy of the content as of the last fsync (None: empty)."""

    durable: Path | None = None
    durable_mode: int = 0o644
    durable_mtime_ns: int = 0
    dirty: bool = False


@dataclass(eq=False)
class SymlinkNode(Node):
    target: str = ""


@dataclass(eq=False)
class FolderNode(Node):
    entries: dict[str, Node] = field(default_factory=dict)  # as it is now
    durable: dict[str, Node] = field(default_factory=dict)  # as the disk holds it
    mode: int = 0o755


@dataclass(eq=False)
class Change:
    """One metadata change waiting for an fsync of one of its ``folders``.

    ``source`` is where the node was (rename, unlink), ``target`` where it is now (create,
    rename)."""

    node: Node
    source: tuple[FolderNode, str] | None
    target: tuple[FolderNode, str] | None

    @property
    def folders(self) -> set[FolderNode]:
        return {slot[0] for slot in (self.source, self.target) if slot is not None}

    @property
    def slots(self) -> set[tuple[int, str]]:
        return {(slot[0].id, slot[1]) for slot in (self.source, self.target) if slot is not None}

    def commit(self) -> None:
        if self.source is not None:
            folder, name = self.source
            if folder.durable.get(name) is self.node:
                del folder.durable[name]
        if self.target is not None:
            folder, name = self.target
            folder.durable[name] = self.node


def changes_to_commit(pending: list[Change], folder: FolderNode) -> list[int]:
    """Indexes (in order) of the changes an fsync of ``folder`` commits: those touching it,
    and every earlier change on the same node or the same name as one of those."""
    nodes: set[int] = set()
    slots: set[tuple[int, str]] = set()
    chosen = []
    for index in range(len(pending) - 1, -1, -1):
        change = pending[index]
        if folder in change.folders or change.node.id in nodes or change.slots & slots:
            chosen.append(index)
            nodes.add(change.node.id)
            slots |= change.slots
    return chosen[::-1]


# -- the filesystem -----------------------------------------------------------------------------


@dataclass(eq=False)
class Handle:
    node: Node
    fd: int  # -1 for folders, and once a cut made the handle stale
    generation: int


def _error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _copy_out(fd: int, target: Path) -> None:
    """The whole content of open file ``fd`` into a new file ``target``."""
    with target.open("wb") as out:
        offset = 0
        while True:
            try:
                copied = os.copy_file_range(fd, out.fileno(), 1 << 24, offset)
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL):
                    raise
                copied = len(chunk := os.pread(fd, 1 << 20, offset))
                out.write(chunk)
            if copied == 0:
                return
            offset += copied


class PowerLossFS:
    """The FUSE operations (mfusepy's high-level API), one lock around each."""

    use_ns = True
    flag_nullpath_ok = True  # operations on an open, unlinked file come with their handle

    def __init__(self, backing: Path, state: Path) -> None:
        self.backing = str(backing)
        self.state = state
        self.mutex = threading.Lock()
        self.cutting = False
        self.generation = 0
        self.handles: dict[int, Handle] = {}
        self.pending: list[Change] = []
        self.counter = 0
        self.root = self._scan(backing)
        self.cuts = 0

    # -- the model's bookkeeping

    def _new_id(self) -> int:
        self.counter += 1
        return self.counter

    def _scan(self, path: Path) -> FolderNode:
        """Nodes for what the backing folder holds at mount time: all of it durable."""
        folder = FolderNode(self._new_id(), mode=stat.S_IMODE(path.lstat().st_mode))
        for entry in os.scandir(path):
            node: Node
            if entry.is_symlink():
                node = SymlinkNode(self._new_id(), target=os.readlink(entry.path))
            elif entry.is_dir(follow_symlinks=False):
                node = self._scan(Path(entry.path))
            elif entry.is_file(follow_symlinks=False):
                node = FileNode(self._new_id())
                fd = os.open(entry.path, os.O_RDONLY)
                try:
                    self._snapshot(node, fd)
                finally:
                    os.close(fd)
            else:
                continue  # fifos, sockets, devices: not modelled
            folder.entries[entry.name] = folder.durable[entry.name] = node
        return folder

    def _snapshot(self, node: FileNode, fd: int) -> None:
        copy = self.state / f"{node.id}.copy"
        temporary = self.state / f"{node.id}.new"
        _copy_out(fd, temporary)
        info = os.fstat(fd)
        os.replace(temporary, copy)
        node.durable = copy
        node.durable_mode = stat.S_IMODE(info.st_mode)
        node.durable_mtime_ns = info.st_mtime_ns
        node.dirty = False

    def _real(self, path: str) -> str:
        return os.path.join(self.backing, path.lstrip("/"))

    def _lookup(self, path: str) -> Node:
        node: Node = self.root
        for part in path.strip("/").split("/"):
            if not part:
                continue
            if not isinstance(node, FolderNode) or part not in node.entries:
                raise _error(errno.ENOENT)
            node = node.entries[part]
        return node

    def _parent(self, path: str) -> tuple[FolderNode, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        folder = self._lookup(head or "/")
        if not isinstance(folder, FolderNode):
            raise _error(errno.ENOTDIR)
        return folder, name

    def _handle(self, fh: int) -> Handle:
        handle = self.handles.get(fh)
        if handle is None or handle.generation != self.generation:
            raise _error(errno.EIO)  # opened before a power cut
        return handle

    def _new_handle(self, node: Node, fd: int) -> int:
        number = self._new_id()
        self.handles[number] = Handle(node, fd, self.generation)
        return number

    def _file_of(self, path: str | None, fh: int | None) -> FileNode | None:
        node = self._handle(fh).node if fh is not None else self._lookup(path or "/")
        return node if isinstance(node, FileNode) else None

    @contextlib.contextmanager
    def _operation(self) -> Iterator[None]:
        with self.mutex:
            if self.cutting:
                raise _error(errno.EIO)  # the power is going: nothing more lands
            yield

    # -- the power cut

    def cut(self, groups: Iterable[int], timeout: float = 30.0) -> dict[str, int]:
        """SIGKILL every process of ``groups`` and drop all that is not durable, at once."""
        groups = list(groups)
        with self.mutex:
            self.cutting = True
            for group in groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
        # Outside the lock: a killed process whose request waits for the lock gets EIO and dies.
        deadline = time.monotonic() + timeout
        while any(_living_members(group) for group in groups):
            if time.monotonic() > deadline:
                raise TimeoutError(f"processes of groups {groups} outlived SIGKILL")
            time.sleep(0.005)
        with self.mutex:
            dropped = len(self.pending)
            self._restore()
            self.generation += 1
            self.cuts += 1
            self.cutting = False
        return {"cuts": self.cuts, "changes_dropped": dropped}

    def _restore(self) -> None:
        """Make the backing folder hold exactly the durable state; forget everything else."""
        for handle in self.handles.values():
            if handle.fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(handle.fd)
                handle.fd = -1
        with os.scandir(self.backing) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
        kept: set[int] = set()
        self._write_durable(self.root, self.backing, kept)
        for leftover in self.state.glob("*.copy"):
            if int(leftover.name.partition(".")[0]) not in kept:
                leftover.unlink()
        self.pending.clear()

    def _write_durable(self, folder: FolderNode, path: str, kept: set[int]) -> None:
        folder.entries = dict(folder.durable)
        for name, node in folder.durable.items():
            if node.id in kept:
                raise AssertionError(f"node {node.id} has two durable names (a model bug)")
            kept.add(node.id)
            target = os.path.join(path, name)
            if isinstance(node, FolderNode):
                os.mkdir(target, node.mode)
                os.chmod(target, node.mode)
                self._write_durable(node, target, kept)
            elif isinstance(node, SymlinkNode):
                os.symlink(node.target, target)
            elif isinstance(node, FileNode):
                if node.durable is None:
                    Path(target).touch()
                else:
                    shutil.copyfile(node.durable, target)
                os.chmod(target, node.durable_mode)
                if node.durable_mtime_ns:
                    os.utime(target, ns=(node.durable_mtime_ns, node.durable_mtime_ns))
                node.dirty = False

    # -- names

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        with self._operation():
            handle = self._handle(fh) if fh is not None else None
            if handle is not None and handle.fd >= 0:
                info = os.fstat(handle.fd)
            else:
                info = os.lstat(self._real(path or "/"))
            return {
                "st_mode": info.st_mode,
                "st_nlink": info.st_nlink,
                "st_uid": info.st_uid,
                "st_gid": info.st_gid,
                "st_size": info.st_size,
                "st_blocks": info.st_blocks,
                "st_atime": info.st_atime_ns,
                "st_mtime": info.st_mtime_ns,
                "st_ctime": info.st_ctime_ns,
            }

    def access(self, path: str, amode: int) -> int:
        with self._operation():
            self._lookup(path)
            return 0

    def readlink(self, path: str) -> str:
        with self._operation():
            return os.readlink(self._real(path))

    def readdir(self, path: str, fh: int) -> list[str]:
        with self._operation():
            node = self._handle(fh).node
            assert isinstance(node, FolderNode)
            return [".", "..", *node.entries]

    def opendir(self, path: str) -> int:
        with self._operation():
            node = self._lookup(path)
            if not isinstance(node, FolderNode):
                raise _error(errno.ENOTDIR)
            return self._new_handle(node, -1)

    def releasedir(self, path: str | None, fh: int) -> int:
        with self.mutex:
            self.handles.pop(fh, None)
            return 0

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        with self._operation():
            folder = self._handle(fh).node
            assert isinstance(folder, FolderNode)
            chosen = changes_to_commit(self.pending, folder)
            for index in chosen:
                self.pending[index].commit()
            for index in reversed(chosen):
                del self.pending[index]
            return 0

    def mkdir(self, path: str, mode: int) -> int:
        with self._operation():
            folder, name = self._parent(path)
            os.mkdir(self._real(path), mode)
            node = FolderNode(self._new_id(), mode=stat.S_IMODE(os.lstat(self._real(path)).st_mode))
            folder.entries[name] = node
            self.pending.append(Change(node, None, (folder, name)))
            return 0

    def symlink(self, target: str, source: str) -> int:
        """``target`` is the new link's path, ``source`` what it points to."""
        with self._operation():
            folder, name = self._parent(target)
            os.symlink(source, self._real(target))
            node = SymlinkNode(self._new_id(), target=source)
            folder.entries[name] = node
            self.pending.append(Change(node, None, (folder, name)))
            return 0

    def _remove(self, path: str, remove: Callable[[str], None]) -> int:
        with self._operation():
            folder, name = self._parent(path)
            node = self._lookup(path)
            remove(self._real(path))
            del folder.entries[name]
            self.pending.append(Change(node, (folder, name), None))
            return 0

    def unlink(self, path: str) -> int:
        return self._remove(path, os.unlink)

    def rmdir(self, path: str) -> int:
        return self._remove(path, os.rmdir)

    def rename(self, old: str, new: str) -> int:
        with self._operation():
            source, old_name = self._parent(old)
            target, new_name = self._parent(new)
            node = self._lookup(old)
            os.rename(self._real(old), self._real(new))
            del source.entries[old_name]
            target.entries[new_name] = node
            self.pending.append(Change(node, (source, old_name), (target, new_name)))
            return 0

    # -- attributes

    def _touch(self, path: str | None, fh: int | None = None) -> None:
        node = self._file_of(path, fh)
        if node is not None:
            node.dirty = True

    # An unlinked open file's attributes come without a path (nor a handle): it is gone at
    # the next cut whatever they are, so they are not changed.

    def chmod(self, path: str | None, mode: int) -> int:
        with self._operation():
            if path is None:
                return 0
            os.chmod(self._real(path), mode, follow_symlinks=False)
            node = self._lookup(path)
            if isinstance(node, FolderNode):
                node.mode = stat.S_IMODE(mode)
            self._touch(path)
            return 0

    def chown(self, path: str | None, uid: int, gid: int) -> int:
        with self._operation():
            if path is not None:
                os.chown(self._real(path), uid, gid, follow_symlinks=False)
            return 0

    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        with self._operation():
            if path is None:
                return 0
            real = self._real(path)
            if times is None:
                os.utime(real, follow_symlinks=False)
            else:
                os.utime(real, ns=times, follow_symlinks=False)
            self._touch(path)
            return 0

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        with self._operation():
            if fh is not None:
                os.ftruncate(self._handle(fh).fd, length)
            elif path is not None:
                os.truncate(self._real(path), length)
            self._touch(path, fh)
            return 0

    def statfs(self, path: str) -> dict[str, int]:
        with self._operation():
            info = os.statvfs(self.backing)
            keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail")
            return {key: getattr(info, key) for key in (*keys, "f_files", "f_ffree", "f_namemax")}

    # -- content

    @staticmethod
    def _open_flags(flags: int) -> int:
        # The kernel gives each write its offset (O_APPEND included): pwrite must not append.
        # A file opened to write is opened to read too, so that fsync can copy it.
        flags &= ~(os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_DIRECT)
        if flags & os.O_ACCMODE == os.O_WRONLY:
            flags = flags & ~os.O_ACCMODE | os.O_RDWR
        return flags | os.O_CLOEXEC

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY) -> int:
        with self._operation():
            folder, name = self._parent(path)
            if name in folder.entries:  # created meanwhile by another opener
                node = folder.entries[name]
                fd = os.open(self._real(path), self._open_flags(flags))
            else:
                fd = os.open(self._real(path), self._open_flags(flags) | os.O_CREAT, mode)
                node = FileNode(self._new_id(), durable_mode=stat.S_IMODE(os.fstat(fd).st_mode))
                folder.entries[name] = node
                self.pending.append(Change(node, None, (folder, name)))
            if isinstance(node, FileNode):
                node.dirty = True
            return self._new_handle(node, fd)

    def open(self, path: str, flags: int) -> int:
        with self._operation():
            node = self._lookup(path)
            fd = os.open(self._real(path), self._open_flags(flags))
            if flags & os.O_TRUNC and isinstance(node, FileNode):
                node.dirty = True
            return self._new_handle(node, fd)

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        with self._operation():
            return os.pread(self._handle(fh).fd, size, offset)

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        with self._operation():
            handle = self._handle(fh)
            written = os.pwrite(handle.fd, data, offset)
            if isinstance(handle.node, FileNode):
                handle.node.dirty = True
            return written

    def flush(self, path: str | None, fh: int) -> int:
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        with self._operation():
            handle = self._handle(fh)
            if isinstance(handle.node, FileNode) and (
                handle.node.dirty or handle.node.durable is None
            ):
                self._snapshot(handle.node, handle.fd)
            return 0

    def release(self, path: str | None, fh: int) -> int:
        with self.mutex:
            handle = self.handles.pop(fh, None)
            if handle is not None and handle.fd >= 0:
                os.close(handle.fd)
            return 0

    # -- the control socket

    def serve_control(self, name: str) -> None:
        """Answer ``cut PGID...`` and ``ping`` on the abstract Unix socket ``name``, one line
        each, one JSON line back."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind("\0" + name)
        listener.listen(4)

        def loop() -> None:
            while True:
                connection, _ = listener.accept()
                with connection, connection.makefile("rwb") as stream:
                    words = stream.readline().decode().split()
                    try:
                        if words[:1] == ["cut"]:
                            answer: dict[str, Any] = self.cut(int(word) for word in words[1:])
                        elif words[:1] == ["ping"]:
                            answer = {"generation": self.generation, "pending": len(self.pending)}
                        else:
                            answer = {"error": f"unknown command {words!r}"}
                    except Exception as error:
                        answer = {"error": repr(error)}
                    stream.write(json.dumps(answer).encode() + b"\n")
                    stream.flush()

        threading.Thread(target=loop, name="powerfs-control", daemon=True).start()


def _living_members(group: int) -> list[int]:
    """The processes of a process group that have not exited (zombies have: their files are
    closed)."""
    living = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = text.rpartition(")")[2].split()
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            living.append(int(entry.name))
    return living


def serve(backing: Path, mount: Path, state: Path, control: str) -> None:
    """Mount the filesystem at ``mount`` and serve it until it is unmounted."""
    import mfusepy

    operations = PowerLossFS(backing, state)
    operations.serve_control(control)
    mfusepy.FUSE(
        operations,
        str(mount),
        foreground=True,
        nothreads=False,
        fsname="powerfs",
        hard_remove=True,
        default_permissions=True,
        allow_other=True,
        big_writes=True,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
    )


# -- the test side ------------------------------------------------------------------------------


def require_fuse() -> None:
    """Raise PowerFSUnavailable, saying what to install, unless FUSE can be mounted here."""
    missing = []
    if not Path("/dev/fuse").exists():
        missing.append("/dev/fuse")
    if not (shutil.which("fusermount") or shutil.which("fusermount3")):
        missing.append("fusermount")
    if not (ctypes.util.find_library("fuse") or ctypes.util.find_library("fuse3")):
        missing.append("libfuse")
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError):
        missing.append("mfusepy")
    if missing:
        raise PowerFSUnavailable(f"{', '.join(missing)} missing: {INSTALL_HINT}")


class PowerLossMount:
    """The filesystem served by a child process: ``backing`` mounted at ``mount``."""

    def __init__(self, backing: Path, mount: Path, state: Path | None = None) -> None:
        self.backing = backing
        self.mount = mount
        self.state = state or backing.with_name(backing.name + ".durable")
        self.control = f"powerfs-{os.getpid()}-{id(self)}"
        self.server: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> PowerLossMount:
        require_fuse()
        for folder in (self.backing, self.mount, self.state):
            folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, __file__, "serve", "--backing", str(self.backing)]
        command += ["--mount", str(self.mount), "--state", str(self.state)]
        command += ["--control", self.control]
        with (self.state / SERVER_LOG).open("ab") as log:
            self.server = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # never in a group a cut kills
            )
        deadline = time.monotonic() + timeout
        while not (os.path.ismount(self.mount) and self._answers()):
            if self.server.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise PowerFSUnavailable(f"the filesystem did not mount: {self.log()}")
            time.sleep(0.02)
        return self

    def __enter__(self) -> PowerLossMount:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def log(self) -> str:
        try:
            return (self.state / SERVER_LOG).read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def _answers(self) -> bool:
        try:
            self.command("ping", timeout=1.0)
        except OSError:
            return False
        return True

    def command(self, line: str, timeout: float = 60.0) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout)
            connection.connect("\0" + self.control)
            connection.sendall(line.encode() + b"\n")
            with connection.makefile("rb") as stream:
                answer: dict[str, Any] = json.loads(stream.readline())
        if "error" in answer:
            raise RuntimeError(f"powerfs: {answer['error']}")
        return answer

    def cut(self, groups: Iterable[int] = ()) -> dict[str, Any]:
        """A power cut: SIGKILL the process groups and drop what is not durable, at once.
        Returns once the killed processes are gone and the mount shows the durable state."""
        return self.command(" ".join(["cut", *(str(group) for group in groups)]))

    def close(self) -> None:
        """Unmount (lazily if busy) and stop the server; never leaves a mount behind."""
        if os.path.ismount(self.mount):
            for command in (["fusermount", "-u"], ["fusermount3", "-u"], ["umount", "-l"]):
                if shutil.which(command[0]) is None:
                    continue
                done = subprocess.run([*command, str(self.mount)], capture_output=True, check=False)
                if done.returncode == 0:
                    break
        if self.server is not None:
            try:
                self.server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()
        if os.path.ismount(self.mount):
            subprocess.run(["umount", "-l", str(self.mount)], capture_output=True, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description="A FUSE filesystem with power cuts.")
    commands = parser.add_subparsers(dest="command", required=True)
    serving = commands.add_parser("serve", help="mount and serve until unmounted")
    serving.add_argument("--backing", type=Path, required=True)
    serving.add_argument("--mount", type=Path, required=True)
    serving.add_argument("--state", type=Path, required=True)
    serving.add_argument("--control", required=True, help="abstract Unix socket name")
    arguments = parser.parse_args()
    serve(arguments.backing, arguments.mount, arguments.state, arguments.control)


if __name__ == "__main__":
    main()
