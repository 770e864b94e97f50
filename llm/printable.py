"""Which characters a name people give things (a dataset, a job, a model, a project, a setting) may hold.

Control characters (Unicode category Cc: NUL, newlines, escapes) break storage (PostgreSQL refuses NUL in
text) and logs; bidirectional controls make a name display as another ("gpj.exe" shown as "exe.jpg", with a
right-to-left override). Both are declared here once, for the job settings (llm/params.py) and the web services
(web/services/common.py), which refuse such a name naming its field, or clean a file name a browser sent.
"""

from __future__ import annotations

import unicodedata

# Bidirectional overrides and isolates, and the marks that steer them.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def is_unprintable(character: str) -> bool:
    return character in BIDI_CONTROLS or unicodedata.category(character) == "Cc"


def first_unprintable(text: str) -> str | None:
    """The first character of `text` a name may not hold, described ("U+202E RIGHT-TO-LEFT OVERRIDE"), or None."""
    for character in text:
        if is_unprintable(character):
            return f"U+{ord(character):04X} {unicodedata.name(character, 'control character')}"
    return None


def printable(text: str) -> str:
    """`text` without the characters a name may not hold (for a file name a browser sent, which is not refused)."""
    return "".join(character for character in text if not is_unprintable(character))
