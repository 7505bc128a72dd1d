"""Make untrusted text safe to show: on a terminal, in JSON on a terminal.

Teacher labels, task names, file names and record fields come from files the user may
not have written. Printed raw, an ANSI escape in a label can clear the screen and draw
a fake ranking. :func:`for_terminal` turns every control character (C0 except newline
and tab, DEL, C1) and every bidirectional override into a visible escape such as
``\\x1b``, so what is printed is what the file holds.
"""

from __future__ import annotations

import re

#: C0 controls except tab and newline, DEL, C1 controls, and the bidi embeddings, overrides and
#: isolates (U+061C, U+200E/F, U+202A-E, U+2066-9) that reorder what a terminal shows.
CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: Characters that ``json.dumps(..., ensure_ascii=False)`` leaves raw although a terminal acts on them
#: (C0 controls are always escaped by json).
_JSON_RAW_RE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def for_terminal(text: object) -> str:
    """``str(text)`` with control characters shown as escapes (newlines and tabs kept)."""
    return CONTROL_RE.sub(_escape, str(text))


def json_for_terminal(text: str) -> str:
    """JSON text with the characters a terminal would act on written as ``\\uXXXX`` escapes.

    Only valid on JSON produced by :func:`json.dumps`: those characters can only occur inside
    strings there, where the escape decodes to the same character.
    """
    return _JSON_RAW_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


__all__ = ["CONTROL_RE", "for_terminal", "json_for_terminal"]
