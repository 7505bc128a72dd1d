"""Checks on labelled records before fitting or evaluating: can these references and students be used?

:func:`check_references` refuses a teacher with too few usable reference outputs in a task (it would be
fitted on nothing and would still count towards the unlisted-teacher test); :func:`match_students`
checks that each labelled student output names a teacher and a task the references know.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from .errors import InputError, input_error, model_error
from .io import Record
from .normalize import empty_outputs

#: Fewest usable reference outputs (non-empty after normalization) per teacher and task: a teacher
#: without them would be fitted on nothing and would still count towards the unlisted-teacher test.
MIN_REFERENCES_PER_TEACHER = 3


def check_references(records: Sequence[Record], *, normalize: bool = True,
                     minimum: int = MIN_REFERENCES_PER_TEACHER) -> None:
    """Refuse (``E212``) a teacher with fewer than ``minimum`` usable reference outputs in a task."""
    usable: dict[tuple[str | None, str], list[int]] = {}
    for record, empty in zip(records, empty_outputs([r.output for r in records], normalize=normalize)):
        counts = usable.setdefault((record.task, str(record.teacher)), [0, 0])
        counts[1] += 1
        counts[0] += not empty
    for (task, teacher), (n, total) in sorted(usable.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        if n < minimum:
            where = f" (task '{task}')" if task is not None else ""
            raise model_error("E212", teacher=teacher, where=where, n=n, total=total, minimum=minimum)


def match_students(references: Sequence[Record], students: Sequence[Record], *,
                   skip_invalid: bool = False) -> tuple[list[Record], list[InputError]]:
    """Check that every student output can be evaluated: a ``teacher`` label among the references
    of its task, and a task the references have (a student without a task takes the references'
    only task). Returns the students (tasks filled in) and, with ``skip_invalid``, the errors of
    the ones left out; otherwise the first problem is raised (``E107``, ``E108``, ``E116``)."""
    known: dict[str | None, set[str]] = {}
    for record in references:
        known.setdefault(record.task, set()).add(str(record.teacher))
    only = next(iter(known)) if len(known) == 1 else None
    kept: list[Record] = []
    skipped: list[InputError] = []
    for record in students:
        if record.task is None and None not in known and only is not None:
            record = dataclasses.replace(record, task=only)
        err = _unmatched(record, known)
        if err is None:
            kept.append(record)
        elif skip_invalid:
            skipped.append(err)
        else:
            raise err
    return kept, skipped


def _unmatched(record: Record, known: dict[str | None, set[str]]) -> InputError | None:
    """Why a student output cannot be evaluated against references of these tasks and teachers, or None."""
    def error(code: str, field: str, **values: str) -> InputError:
        return input_error(code, source=record.source, line=record.line, field=field, **values)

    tasks = ", ".join(sorted(str(t) for t in known))
    if record.task is None and None not in known:
        return error("E122", "task", known=tasks)
    if record.task not in known:
        return error("E116", "task", label=str(record.task), known=tasks)
    if record.teacher is None:
        return error("E107", "teacher")
    if record.teacher not in known[record.task]:
        return error("E108", "teacher", label=record.teacher, known=", ".join(sorted(known[record.task])))
    return None

__all__ = ["MIN_REFERENCES_PER_TEACHER", "check_references", "match_students"]


def reference_families(records: Iterable[Record], families: Mapping[str, str] | None = None) -> dict[str, str]:
    """Teacher -> family from the records' ``family`` fields and a ``families`` table (both optional);
    a teacher given two families stops with E141 at the record that disagrees."""
    family_of = dict(families or {})
    given: dict[str, str] = {}
    for record in records:
        if record.family is None or record.teacher is None:
            continue
        first = given.setdefault(record.teacher, family_of.get(record.teacher, record.family))
        if first != record.family:
            raise input_error("E141", source=record.source, line=record.line, teacher=record.teacher,
                              first=first, second=record.family)
    family_of.update(given)
    return family_of

