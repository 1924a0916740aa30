"""Which classes a PyTorch checkpoint holds, read from its pickle's opcodes, never unpickled.

A ``.pt`` file is a zip holding ``<name>/data.pkl`` (the pickled object) beside its tensors.
Unpickling runs whatever code the pickle names: a checkpoint from elsewhere is untrusted, and
loading it would also need the framework installed. The classes it names are plain text in
the opcodes that push them (``GLOBAL``, or ``STACK_GLOBAL`` after two strings), and that is
enough to tell a YOLOv5 v6.2+ model (``models.yolo DetectionModel``) from an older one
(``models.yolo Model``).
"""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path

PICKLE_NAME = "data.pkl"
# data.pkl holds the model's structure, not its weights: a few MB at most. A bigger one is
# not read (its classes stay unknown), so a hostile file cannot make memory grow.
MAX_PICKLE_BYTES = 64 * 1024 * 1024
STRING_OPCODES = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING"}
)
MEMO_PUTS = frozenset({"BINPUT", "LONG_BINPUT", "PUT"})
MEMO_GETS = frozenset({"BINGET", "LONG_BINGET", "GET"})


def checkpoint_classes(path: Path) -> frozenset[str]:
    """Every class the checkpoint's pickle names, as ``"module name"``. Empty when the file
    is not a zip checkpoint (the format of PyTorch 1.6 and later) or its pickle is too big."""
    try:
        with zipfile.ZipFile(path) as archive:
            entry = _pickle_entry(archive)
            if entry is None or entry.file_size > MAX_PICKLE_BYTES:
                return frozenset()
            with archive.open(entry) as stream:
                data = stream.read(MAX_PICKLE_BYTES + 1)
    except (zipfile.BadZipFile, OSError, EOFError):
        return frozenset()
    return pickle_classes(data)


def _pickle_entry(archive: zipfile.ZipFile) -> zipfile.ZipInfo | None:
    """``archive/data.pkl`` (the folder is the name the checkpoint was saved under)."""
    for entry in archive.infolist():
        parts = entry.filename.split("/")
        if parts[-1] == PICKLE_NAME and len(parts) <= 2:
            return entry
    return None


def pickle_classes(data: bytes) -> frozenset[str]:
    """The classes a pickle names, from its opcodes alone; a damaged or truncated pickle
    gives those found before the damage."""
    found: set[str] = set()
    strings: list[str | None] = []  # what the last pushes were, when strings
    memo: dict[int, str | None] = {}  # every object memoized: MEMOIZE numbers them all
    try:
        for opcode, argument, _ in pickletools.genops(data):
            name = opcode.name
            if name == "GLOBAL":
                found.add(str(argument))
            elif name == "STACK_GLOBAL" and len(strings) >= 2:
                module, qualified = strings[-2], strings[-1]
                if module is not None and qualified is not None:
                    found.add(f"{module} {qualified}")
            if name in STRING_OPCODES:
                text = argument.decode("latin-1") if isinstance(argument, bytes) else argument
                strings.append(str(text))
            elif name in MEMO_GETS:
                strings.append(memo.get(int(argument)) if argument is not None else None)
            elif name in MEMO_PUTS or name == "MEMOIZE":
                index = len(memo) if argument is None else int(argument)  # MEMOIZE: None
                memo[index] = strings[-1] if strings else None
                continue  # a memo put leaves the stack as it is
            elif name != "FRAME":
                strings.append(None)
            del strings[:-2]
    except (ValueError, EOFError):
        pass
    return frozenset(found)
