"""What can be wrong with a package: one catalogue of stable codes, and the Problem record.

A problem in a package is data, not an exception. The codes are part of the public
interface (``validate --json``, the ledger, ``<name>.error.json``): never rename one. A
backend's own codes are in its module, which adds them to the catalogue with
:func:`register_codes` when it is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

from ymir_dropbox.core.jsonvalues import JsonObject

CODES: dict[str, str] = {
    # the file itself
    "package.unreadable": "the package file cannot be opened or read",
    "package.too_large": "the package file is larger than limits.max_package_bytes",
    "package.not_regular": "the path is not a regular file (symlink, fifo, device, folder)",
    "package.hard_linked": "the package file has other names (hard links) that could change it",
    # the gzip container
    "container.not_gzip": "the file does not start with the gzip magic bytes",
    "container.truncated": "the gzip stream ends before its end marker",
    "container.corrupt": "the gzip stream is damaged (bad data or checksum)",
    "container.not_tar": "the gzip stream does not hold a tar archive",
    "container.empty": "the tar archive (or the folder validated) holds no members",
    "container.trailing_data": "non-zero data follows the end of the tar archive",
    # tar members
    "tar.absolute_path": "a member name is absolute",
    "tar.path_traversal": "a member name climbs out of the archive ('..', backslash, look-alike)",
    "tar.bad_name": "a member name is empty, too long, or holds control characters (C0, C1) "
    "or bidirectional overrides",
    "tar.link_member": "a member is a symbolic or hard link",
    "tar.special_member": "a member is a device, fifo or other special file",
    "tar.duplicate_member": "two members have the same name",
    "tar.too_many_members": "more members than limits.max_members",
    "tar.too_large_unpacked": "more unpacked bytes than limits.max_unpacked_bytes",
    "tar.compression_ratio": "unpacked size over packed size exceeds limits.max_ratio",
    "tar.header_too_large": "a member's long-name or PAX headers, or the archive's global PAX "
    "headers, are larger than 64 KiB",
    # ymir-info.yaml as a document
    "info.missing": "the archive has no ymir-info.yaml",
    "info.not_at_root": "ymir-info.yaml is in a sub-folder, not at the archive root",
    "info.too_large": "ymir-info.yaml is larger than 1 MiB",
    "info.invalid_yaml": "ymir-info.yaml is not valid UTF-8 YAML",
    "info.yaml_tag": "ymir-info.yaml uses a YAML tag that safe loading refuses",
    "info.yaml_bomb": "ymir-info.yaml expands through aliases beyond a sane size",
    "info.too_deep": "ymir-info.yaml nests deeper than allowed",
    "info.duplicate_key": "a mapping in ymir-info.yaml repeats a key",
    "info.not_mapping": "the top of ymir-info.yaml is not a mapping",
    # ymir-info.yaml fields (schema)
    "info.missing_field": "a required field is absent",
    "info.wrong_type": "a field has the wrong type",
    "info.out_of_range": "a number is outside its allowed range",
    "info.empty": "a list or mapping that must not be empty is empty",
    "info.not_unique": "a list holds the same value twice",
    "info.invalid_value": "a field's value is not one of the allowed values",
    "info.bad_file_name": "a file, stage or section name is not a plain single path component",
    "info.unknown_field": "a field the format does not know (warning; it is dropped)",
    "info.too_large_for_ymir": "a timestamp or count above 2^31-1, which YMIR's mir refuses",
    "info.reserved_stage_name": "a stage named model.tar.gz, a name YMIR's mir keeps for itself",
    "info.no_executor": "task_context.executor names no docker image: YMIR imports the model "
    "but cannot train, mine or infer with it (warning)",
    # meaning across the package
    "info.unknown_version": "package_version is not one ymir-dropbox can import",
    "info.unknown_stage": "best_stage_name is not a key of stages",
    "info.stage_name_mismatch": "a stage's stage_name differs from its key",
    "package.missing_file": "a file a stage lists is not in the archive",
    "package.missing_attachment": "an attachment listed in ymir-info.yaml is not in the archive",
    "package.unlisted_file": "a file in the archive that no stage lists (warning)",
    # import
    "import.io_error": "reading the package or writing the store failed (retried later)",
    "import.crashed": "the import failed with an unexpected error several times",
    "import.backend_unavailable": "the backend (YMIR) cannot be reached or did not finish in time "
    "(retried later)",
}


def register_codes(codes: Mapping[str, str]) -> None:
    """Add a backend's codes (code -> meaning) to the catalogue; no code means two things."""
    taken = sorted(code for code, meaning in codes.items() if CODES.get(code, meaning) != meaning)
    if taken:
        raise ValueError(f"problem codes already in the catalogue: {taken}")
    CODES.update(codes)


MAX_FIELD = 300  # characters of a field or member name in a problem
MAX_MESSAGE = 800  # characters of a problem's message


def shortened(text: str, limit: int) -> str:
    """``text``, or its beginning and end around a note of how much was left out."""
    if len(text) <= limit:
        return text
    keep = limit - 40
    head, tail = text[: keep * 2 // 3], text[-(keep // 3) :]
    return f"{head}… ({len(text) - len(head) - len(tail)} characters left out) …{tail}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a package: a stable code, the field or member, a message."""

    code: str
    field: str
    message: str

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown problem code {self.code!r}")
        self._cap()

    def _cap(self) -> None:
        # What a package holds is quoted in its problems: a 1 MB value would be 1 MB in the
        # error files, the log, the ledger, every notification and the status page. Capped
        # here, where every problem is made.
        object.__setattr__(self, "field", shortened(self.field, MAX_FIELD))
        object.__setattr__(self, "message", shortened(self.message, MAX_MESSAGE))

    @classmethod
    def recorded(cls, document: Mapping[str, object]) -> Problem:
        """A problem as a ledger row or a status document holds it (``code``, ``field``,
        ``message``), whatever release or backend recorded it: its code is taken as it is,
        not checked against this catalogue (a backend not imported here, a code of a newer
        release after a downgrade)."""
        problem = object.__new__(cls)
        object.__setattr__(problem, "code", str(document.get("code")))
        object.__setattr__(problem, "field", str(document.get("field") or ""))
        object.__setattr__(problem, "message", str(document.get("message")))
        problem._cap()
        return problem

    def as_dict(self) -> JsonObject:
        return asdict(self)
