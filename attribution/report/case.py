"""The case a report is filed under: the suspect's name, and optional case ID, auditor and organisation.

The suspect is named by the caller (``audit``: the ``[student]`` name), else by the result (a student of a
``rank --group-by`` run), else by the student file's name in ``inputs``. The other fields come from ``rank
--report`` / ``report`` options (``--case-id``, ``--auditor``, ``--organisation``) or an ``audit.toml``'s
``[case]`` table; a field not given is not shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ..errors import input_error

#: The longest value a case field may hold (one line of a title page).
MAX_FIELD = 200


@dataclass(frozen=True)
class CaseDetails:
    """What the report's title and case table show (every field optional)."""

    suspect: str | None = None
    case_id: str | None = None
    auditor: str | None = None
    organisation: str | None = None

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) of the fields given, suspect excluded (it is in the title)."""
        labels = {"case_id": "Case ID", "auditor": "Auditor", "organisation": "Organisation"}
        return [(labels[f.name], str(getattr(self, f.name))) for f in fields(self)
                if f.name in labels and getattr(self, f.name)]


def case_details(values: Mapping[str, Any], *, source: str | None = None,
                 names: Mapping[str, str] | None = None) -> CaseDetails:
    """:class:`CaseDetails` from user input (``values``: ``suspect``, ``case_id``, ``auditor``, ``organisation``,
    each optional or None), each value stripped; ``E608`` for a value that is empty, longer than
    :data:`MAX_FIELD` or holds a line break or another control character (``names``: how the error calls each
    field, e.g. ``{"case_id": "--case-id"}``; ``source``: the file it came from)."""
    given = {f.name: values.get(f.name) for f in fields(CaseDetails)}
    for key, value in given.items():
        if value is None:
            continue
        text = value.strip() if isinstance(value, str) else value
        if not isinstance(text, str) or not text or len(text) > MAX_FIELD or any(
                not ch.isprintable() for ch in text):
            got = (f"a {type(value).__name__}" if not isinstance(value, str) else
                   f"{len(text)} characters" if len(text) > MAX_FIELD else
                   "an empty value" if not text else "a line break or control character")
            raise input_error("E608", source=source, name=(names or {}).get(key, key), max_len=MAX_FIELD, got=got)
        given[key] = text
    return CaseDetails(**given)


def suspect_name(result: dict[str, Any], case: CaseDetails | None) -> str | None:
    """The suspect's name: the case's, the result's ``student``, else the student file's name (``inputs``)."""
    if case is not None and case.suspect:
        return case.suspect
    if isinstance(result.get("student"), str) and result["student"]:
        return str(result["student"])
    inputs = result.get("inputs") or {}
    for role in ("outputs", "student"):
        info = inputs.get(role)
        if isinstance(info, dict) and isinstance(info.get("name"), str) and info["name"]:
            return str(info["name"])
    return None


__all__ = ["CaseDetails", "MAX_FIELD", "case_details", "suspect_name"]
