"""SASLprep (RFC 4013): the string preparation SCRAM applies to passwords.

A client prepares the password before hashing it, so the users file must store
keys of the prepared password or a non-ASCII password would never match.
"""

from __future__ import annotations

import stringprep
import unicodedata


def saslprep(text: str, allow_unassigned: bool = True) -> str:
    """Map, normalise (NFKC) and check ``text``; raise ValueError on prohibited
    characters. A string to be stored (a new password) is prepared with
    ``allow_unassigned=False`` (RFC 3454 section 7); a received one may have them."""
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch
        for ch in text
        if not stringprep.in_table_b1(ch)
    )
    prepared = unicodedata.normalize("NFKC", mapped)
    if not prepared:
        return prepared
    prohibited = (
        stringprep.in_table_c12, stringprep.in_table_c21, stringprep.in_table_c22,
        stringprep.in_table_c3, stringprep.in_table_c4, stringprep.in_table_c5,
        stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
        stringprep.in_table_c9,
    )
    for ch in prepared:
        if any(test(ch) for test in prohibited):
            raise ValueError(f"prohibited character U+{ord(ch):04X}")
        if not allow_unassigned and stringprep.in_table_a1(ch):
            raise ValueError(f"unassigned code point U+{ord(ch):04X}")
    if any(stringprep.in_table_d1(ch) for ch in prepared):
        # Bidirectional rule (RFC 3454 section 6).
        if any(stringprep.in_table_d2(ch) for ch in prepared):
            raise ValueError("mixes right-to-left and left-to-right characters")
        if not (stringprep.in_table_d1(prepared[0]) and stringprep.in_table_d1(prepared[-1])):
            raise ValueError("right-to-left text must start and end with such a character")
    return prepared
