"""What a person most likely meant: the hints that end a problem's message.

Each guesses from what was found alone (a value, a YAML node, the first bytes of a file) and
returns nothing when the guess would be idle, so a message reads the same without its hint.
The mistakes are those of a ``ymir-info.yaml`` written by hand or by a training script: a
``time.time()`` in milliseconds or as a float, an mAP in percent, numpy values that
``yaml.dump`` wrote as Python objects, a package compressed with something other than gzip.
"""

from __future__ import annotations

import base64
import binascii
import struct
from dataclasses import dataclass
from decimal import Decimal

import yaml

from ymir_dropbox.reading.rules import INT32_MAX

SECONDS_PER_DAY = 86_400
YEAR_3000 = 32_503_680_000  # 3000-01-01 in unix seconds
# A millisecond timestamp is told by the date it means once divided by 1000.
MILLISECONDS_FROM = 631_152_000  # 1990-01-01
MILLISECONDS_UNTIL = 4_102_444_800  # 2100-01-01
WHOLE_SECONDS = "YMIR wants whole seconds, e.g. int(time.time())"


def year_of(seconds: int) -> int:
    """The (proleptic Gregorian) year of a unix time, of any size: ``datetime`` stops at 9999.

    Howard Hinnant's ``civil_from_days``.
    """
    days = seconds // SECONDS_PER_DAY + 719_468  # counted from 0000-03-01
    era = days // 146_097
    day_of_era = days - era * 146_097
    year_of_era = (
        day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    march_based_month = (5 * day_of_year + 2) // 153  # 0 is March, 10 and 11 the next year's
    return year_of_era + era * 400 + (march_based_month >= 10)


def seconds_from_milliseconds(value: object) -> int | None:
    """The whole seconds a timestamp written in milliseconds means, if it is one: read as
    seconds it lies past the year 3000, read as milliseconds between 1990 and 2100."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= YEAR_3000:
        return None
    seconds = value // 1000
    return seconds if MILLISECONDS_FROM <= seconds < MILLISECONDS_UNTIL else None


def milliseconds_message(field: str, value: int, seconds: int) -> str:
    """The message for a timestamp in milliseconds (see :func:`seconds_from_milliseconds`)."""
    return (
        f"{field} is {value}, which read as seconds is the year {year_of(value)}: it looks like "
        f"milliseconds; YMIR wants whole seconds: {seconds}"
    )


def float_timestamp_hint(value: object) -> str:
    """``; YMIR wants whole seconds, e.g. int(time.time()): 1714521600`` for a float
    timestamp (what ``time.time()`` gives), with the seconds it means when it is plausible."""
    if not isinstance(value, float):
        return ""
    if 0 <= value <= INT32_MAX:
        return f"; {WHOLE_SECONDS}: {int(value)}"
    if 0 < value < YEAR_3000 * 1000 and (seconds := seconds_from_milliseconds(int(value))):
        return f"; {WHOLE_SECONDS}: {seconds} (it looks like milliseconds)"
    return f"; {WHOLE_SECONDS}"  # also NaN and the infinities


def percentage_hint(value: object) -> str:
    """``; it looks like a percentage: 0.553?`` for a metric above 1 and at most 100."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not 1 < value <= 100:
        return ""
    # Through the decimal text, so that 55.3 gives 0.553, not 55.3 / 100 = 0.5529999999999999.
    fraction = Decimal(repr(value)).scaleb(-2).normalize()
    return f"; it looks like a percentage: {fraction:f}?"


# -- numpy values dumped by yaml.dump ---------------------------------------------------------
# yaml.dump (not safe_dump) writes a numpy value through its __reduce__: a scalar as
#   !!python/object/apply:numpy._core.multiarray.scalar [<dtype>, !!binary <its bytes>]
# (numpy.core before numpy 2), the dtype as !!python/object/apply:numpy.dtype
# {args: [f8, false, true], state: !!python/tuple [3, <, ...]}, an array as ..._reconstruct.

PYTHON_APPLY = "tag:yaml.org,2002:python/object/apply:"
NUMPY_SCALAR = frozenset(
    f"{PYTHON_APPLY}numpy.{core}.multiarray.scalar" for core in ("core", "_core")
)
NUMPY_ARRAY = frozenset(
    f"{PYTHON_APPLY}numpy.{core}.multiarray._reconstruct" for core in ("core", "_core")
)
NUMPY_DTYPE = f"{PYTHON_APPLY}numpy.dtype"
# A dtype's code (kind and bytes) as a struct format, and the Python type to convert to.
STRUCT_FORMATS = {
    "f2": "e", "f4": "f", "f8": "d",
    "i1": "b", "i2": "h", "i4": "i", "i8": "q",
    "u1": "B", "u2": "H", "u4": "I", "u8": "Q",
    "b1": "?",
}  # fmt: skip
CONVERSIONS = {"f": "float()", "i": "int()", "u": "int()", "b": "bool()"}
SIGNIFICANT_DIGITS = {"f2": 4, "f4": 7}  # a float16 or float32, shown without float64 noise


@dataclass(frozen=True, slots=True)
class NumpyScalar:
    """A numpy scalar as ``yaml.dump`` wrote it: its dtype code (``f8``) and, when its bytes
    could be read, the plain value it stands for."""

    code: str | None
    value: bool | int | float | None

    @property
    def type_name(self) -> str:
        if self.code is None or self.code[0] not in CONVERSIONS:
            return "scalar"
        if self.code[0] == "b":
            return "bool"
        kind = {"f": "float", "i": "int", "u": "uint"}[self.code[0]]
        return f"{kind}{int(self.code[1:]) * 8}"

    @property
    def conversion(self) -> str:
        if self.code is None or self.code[0] not in CONVERSIONS:
            return "float() or int()"
        return CONVERSIONS[self.code[0]]


def numpy_tag_message(node: yaml.Node, field: str, where: str) -> str | None:
    """The message for a numpy value ``yaml.dump`` wrote at ``field`` (found ``where`` in
    the file), or None if the node is no numpy value."""
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    if node.tag in NUMPY_SCALAR:
        scalar = read_numpy_scalar(node)
        written = "" if scalar.value is None else f", so that it is written as {scalar.value!r}"
        return (
            f"{field} ({where}) is a numpy {scalar.type_name} scalar that yaml.dump wrote as "
            f"{tag}, a tag that is not allowed: convert it with {scalar.conversion} before "
            f"dumping{written}"
        )
    if node.tag in NUMPY_ARRAY:
        return (
            f"{field} ({where}) is a numpy array that yaml.dump wrote as {tag}, a tag that is "
            "not allowed: convert it with .tolist() before dumping"
        )
    if node.tag == NUMPY_DTYPE:
        return (
            f"{field} ({where}) is a numpy dtype that yaml.dump wrote as {tag}, a tag that is "
            "not allowed: dump plain values (a number converted with float() or int(), a "
            "type's name as a string)"
        )
    return None


def read_numpy_scalar(node: yaml.Node) -> NumpyScalar:
    """The dtype and value of a dumped numpy scalar, read from the nodes, nothing constructed."""
    items = node.value if isinstance(node, yaml.SequenceNode) else []
    if len(items) != 2 or not isinstance(items[0], yaml.MappingNode):
        return NumpyScalar(None, None)
    dtype = {key.value: value for key, value in items[0].value if isinstance(key, yaml.ScalarNode)}
    code = _first_scalar(dtype.get("args"), 0)
    if code not in STRUCT_FORMATS:
        return NumpyScalar(None, None)
    order = ">" if _first_scalar(dtype.get("state"), 1) == ">" else "<"
    data = items[1]
    if not isinstance(data, yaml.ScalarNode) or data.tag != "tag:yaml.org,2002:binary":
        return NumpyScalar(code, None)
    try:
        (value,) = struct.unpack(order + STRUCT_FORMATS[code], base64.b64decode(data.value))
    except (binascii.Error, struct.error, ValueError):
        return NumpyScalar(code, None)
    if code in SIGNIFICANT_DIGITS:
        value = float(f"{value:.{SIGNIFICANT_DIGITS[code]}g}")
    return NumpyScalar(code, value)


def _first_scalar(node: yaml.Node | None, index: int) -> str | None:
    if not isinstance(node, yaml.SequenceNode) or len(node.value) <= index:
        return None
    item = node.value[index]
    return str(item.value) if isinstance(item, yaml.ScalarNode) else None


# -- what a file that is not gzip is ----------------------------------------------------------

REPACK = "pack it again with gzip: `tar czf NAME.tar.gz ymir-info.yaml ...`"
# (offset, magic bytes, what the file is, what to do)
CONTAINERS: tuple[tuple[int, bytes, str, str], ...] = (
    (0, b"PK\x03\x04", "a zip archive (PK..)", f"unpack it and {REPACK}"),
    (0, b"PK\x05\x06", "an empty zip archive (PK..)", REPACK),
    (
        0,
        b"BZh",
        "bzip2-compressed (BZh)",
        f"recompress it: `bzip2 -dc FILE | gzip > NAME.tar.gz`, or {REPACK}",
    ),
    (
        0,
        b"\xfd7zXZ\x00",
        "xz-compressed (FD 37 7A 58 5A 00)",
        f"recompress it: `xz -dc FILE | gzip > NAME.tar.gz`, or {REPACK}",
    ),
    (
        0,
        b"\x28\xb5\x2f\xfd",
        "zstd-compressed (28 B5 2F FD)",
        f"recompress it: `zstd -dc FILE | gzip > NAME.tar.gz`, or {REPACK}",
    ),
    (
        257,
        b"ustar",
        "an uncompressed tar archive (ustar at offset 257)",
        "compress it: `gzip -c FILE > NAME.tar.gz`, or pack it with `tar czf` (not `tar cf`)",
    ),
)
HEAD_BYTES = 512  # enough to see every magic above


def what_the_file_is(head: bytes) -> str | None:
    """``it is a zip archive (PK..); unpack it and ...`` for a file whose first bytes
    (``head``) name a container other than gzip, else None."""
    for offset, magic, what, advice in CONTAINERS:
        if head[offset : offset + len(magic)] == magic:
            return f"it is {what}; {advice}"
    return None
