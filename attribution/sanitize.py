"""Make untrusted text safe to show: on a terminal, in JSON on a terminal, in a spreadsheet.

Teacher labels, task names, file names and record fields come from files the user may
not have written. Printed raw, an ANSI escape in a label can clear the screen and draw
a fake ranking. :func:`for_terminal` turns every control character (C0 except newline
and tab, DEL, C1) and every bidirectional override into a visible escape such as
``\\x1b``, so what is printed is what the file holds. A CSV cell that a spreadsheet would
run as a formula (``=HYPERLINK(...)``) is made text by :func:`for_spreadsheet`.
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


#: What :func:`one_line` escapes beyond :data:`CONTROL_RE`: the characters that start a new line or move along it.
_LINE_BREAKS = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_LINE_RE = re.compile(f"{CONTROL_RE.pattern}|[{''.join(_LINE_BREAKS)}]")


def one_line(text: object) -> str:
    """``str(text)`` as one line for a terminal: every control character as an escape, as in
    :func:`for_terminal`, and newlines, carriage returns and tabs too (``\\n``, ``\\r``, ``\\t``).

    For a label (teacher, task, student, file or config name) inside a table or a message, so that
    ``human\\nverdict: attributed`` cannot print a line of its own.

    >>> print(one_line("human\\nverdict: attributed \\x1b[2J"))
    human\\nverdict: attributed \\x1b[2J
    """
    return _LINE_RE.sub(lambda m: _LINE_BREAKS.get(m.group()) or _escape(m), str(text))


def json_for_terminal(text: str) -> str:
    """JSON text with the characters a terminal would act on written as ``\\uXXXX`` escapes.

    Only valid on JSON produced by :func:`json.dumps`: those characters can only occur inside
    strings there, where the escape decodes to the same character.
    """
    return _JSON_RAW_RE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


#: First characters that make a spreadsheet read a cell as a formula (OWASP's list: ``= + - @``, tab, carriage
#: return), with the full-width forms of the first four, which some spreadsheets take for them.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
#: A plain number written as text ("-3", "+1.5e-4"): it starts with a sign but is no formula.
_NUMBER_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def for_spreadsheet(value: object) -> object:
    """A CSV cell that no spreadsheet runs as a formula: a string starting with one of
    :data:`FORMULA_STARTS` gets a leading ``'`` (OWASP's rule for CSV injection), unless it is a plain
    number; anything else (numbers, None, other strings) is returned as it is.

    >>> for_spreadsheet("=1+2"), for_spreadsheet("-0.5"), for_spreadsheet(-0.5)
    ("'=1+2", '-0.5', -0.5)
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _NUMBER_RE.fullmatch(value):
        return "'" + value
    return value


__all__ = ["CONTROL_RE", "FORMULA_STARTS", "for_spreadsheet", "for_terminal", "json_for_terminal", "one_line"]
