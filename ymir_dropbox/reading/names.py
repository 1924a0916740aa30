"""Which names are safe: a single path component, also once Unicode look-alikes are folded.

Used for member names in the archive and for stage, file and section names in the YAML;
and the suggestion for a name that is nearly one we know.
"""

from __future__ import annotations

import difflib
import unicodedata

MAX_NAME_BYTES = 255
# Characters that mean "/" to a person or after folding; "\\" is a separator on Windows.
SLASH_LOOKALIKES = str.maketrans({"\\": "/", "\u2215": "/", "\u2044": "/", "\u29f8": "/"})


# Characters that reorder what follows on a screen: a name holding one can show as another.
REORDERING = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def is_control(char: str) -> bool:
    """A C0 or C1 control character, DEL, or a bidirectional override or isolate."""
    code = ord(char)
    return code < 32 or 127 <= code <= 159 or char in REORDERING


def is_path_component(name: str) -> bool:
    """A name we may use as one folder or file name: no separators, no climbing, no controls,
    also once Unicode look-alikes are folded (``．．``, ``a∕b``), as member names are checked."""
    folded = unicodedata.normalize("NFKC", name).translate(SLASH_LOOKALIKES)
    return (
        bool(name)
        and not {name, folded} & {".", ".."}
        and "/" not in folded
        and not any(is_control(char) for char in name)
        and not any(0xD800 <= ord(char) <= 0xDFFF for char in name)
        and len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES
    )


def did_you_mean(word: str, known: list[str]) -> str:
    """`` (did you mean 'mAP'?)`` for a near miss among ``known`` (case ignored), else ""."""
    folded = {name.casefold(): name for name in known}
    close = difflib.get_close_matches(word.casefold(), list(folded), n=1, cutoff=0.6)
    return f" (did you mean {folded[close[0]]!r}?)" if close else ""
