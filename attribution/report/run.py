"""What a rank run records for its report, beside the API's result (the JSON's ``run`` entry).

:func:`run_facts` gathers what only the caller knows: how many reference outputs each teacher had
(counted from the reference file, else from what the model file keeps), the settings and seeds, and
which records were skipped (``FILE:LINE [code]``, file names only). :class:`ExampleOutputs` keeps the
first outputs of a student so that the report can show whole outputs that use an evidence template
(``--examples N``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

#: Skipped records named in ``run.skipped_records`` (the rest are only counted).
MAX_SKIPPED_NAMED = 20
#: Outputs per student (or group) kept to find full examples in: the first ones, bounded memory.
MAX_KEPT_OUTPUTS = 256


def reference_counts(records: Iterable[Any]) -> dict[str, dict[str, int]]:
    """Reference outputs per task and teacher (``str(task)`` keys, as the result's ``tasks``)."""
    from ..checks import count_references

    counts: dict[str, Counter] = {}
    for task, teachers in count_references(records).items():  # task None and "None" share a key, as in the JSON
        counts[str(task)] = counts.get(str(task), Counter()) + teachers
    return {task: dict(sorted(c.items())) for task, c in sorted(counts.items())}


def model_reference_counts(model: Any) -> dict[str, dict[str, int]] | None:
    """Reference outputs per task and teacher as a saved model knows them: the leave-one-teacher-out
    scores of the unlisted-teacher test hold one row per reference output (4+ candidates); None when
    a task has none."""
    counts = {}
    for task, sub in model.models_.items():
        null = getattr(sub, "unlisted_log_proba_", None) or {}
        if not null:
            return None
        counts[str(task)] = {str(t): int(len(rows)) for t, rows in sorted(null.items())}
    return dict(sorted(counts.items()))


def _where(err: Any) -> str:
    name = Path(str(err.source)).name if getattr(err, "source", None) else "?"
    line = f":{err.line}" if getattr(err, "line", None) else ""
    return f"{name}{line} [{getattr(err, 'code', None) or 'skipped'}]"


def _jsonable(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def run_facts(model: Any, *, references: Sequence[Any] | None = None, skipped_references: Sequence[Any] = (),
              skipped_outputs: Sequence[Any] = (), options: dict[str, Any] | None = None,
              prompts: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``run`` entry of a rank result: ``references`` (``source`` and ``tasks`` counts, when known),
    ``settings`` (the model's parameters, seed included, and the run's ``options``), the skipped records
    (named up to :data:`MAX_SKIPPED_NAMED`, student outputs first) and ``prompts`` (the prompt check)."""
    from ..multitask import as_multitask

    model = as_multitask(model)  # a single TeacherAttributor serves every task
    facts: dict[str, Any] = {}
    counts = reference_counts(references) if references is not None else model_reference_counts(model)
    if counts is not None:
        source = "reference file" if references is not None else "model file (the unlisted-teacher test's scores)"
        facts["references"] = {"source": source, "tasks": counts}
    params = next(iter(model.models_.values())).get_params()
    facts["settings"] = {k: _jsonable(v) for k, v in sorted({**params, **(options or {})}.items())}
    facts["skipped_records"] = [_where(e) for e in [*skipped_outputs, *skipped_references][:MAX_SKIPPED_NAMED]]
    facts["n_skipped_outputs"], facts["n_skipped_references"] = len(skipped_outputs), len(skipped_references)
    if prompts is not None:
        facts["prompts"] = prompts
    return facts


class ExampleOutputs:
    """The first :data:`MAX_KEPT_OUTPUTS` outputs of each group (``group_by``: a record field, or None
    for one student), to show whole outputs beside an evidence template's spans."""

    def __init__(self, n: int, group_by: str | None = None) -> None:
        self.n, self.group_by = n, group_by
        self.kept: dict[Any, list[tuple[str, str]]] = {}

    def add(self, record: Any) -> None:
        if self.n <= 0:
            return
        group = getattr(record, self.group_by) if self.group_by else None
        kept = self.kept.setdefault(group, [])
        if len(kept) < MAX_KEPT_OUTPUTS:
            kept.append((str(record.key), record.output))

    def attach(self, evidence: list[dict[str, Any]], group: Any = None) -> None:
        """Add ``example_outputs`` (up to ``n`` of ``{"id", "output"}``) to each evidence row: kept outputs
        that contain one of the row's example spans (whitespace and case aside)."""
        if self.n <= 0:
            return
        kept = self.kept.get(group, [])
        for row in evidence:
            spans = [s for s in row.get("examples") or [] if s.split()]
            patterns = [re.compile(r"\s*".join(map(re.escape, s.split())), re.IGNORECASE) for s in spans]
            found = [{"id": key, "output": text} for key, text in kept if any(p.search(text) for p in patterns)]
            row["example_outputs"] = found[:self.n]


class RunRecorder:
    """Watches one rank run for its report, in the same pass as the ranking: the prompt/task check
    (:class:`attribution.checks.PromptChecks`) and the kept example outputs.

    ``references``: the reference records when the model was fitted from them (their counts and
    prompts), else None (a saved model: counts from the file when it keeps them, tasks only).
    """

    def __init__(self, model: Any, *, references: Sequence[Any] | None = None, examples: int = 0,
                 group_by: str | None = None) -> None:
        from ..checks import PromptChecks, PromptProfile
        from ..multitask import as_multitask

        model = as_multitask(model)
        self.model, self.references, self.group_by = model, references, group_by
        self.prompts = PromptChecks(model.models_, PromptProfile.of(references) if references is not None else None)
        self.examples = ExampleOutputs(examples, group_by=group_by)

    def watch(self, records: Iterable[Any]) -> Iterator[Any]:
        """Pass ``records`` on, looking at each."""
        for record in records:
            self.prompts.add(record)
            self.examples.add(record)
            yield record

    def finish(self, result: dict[str, Any], entries: Iterable[Any], *, skipped_references: Sequence[Any] = (),
               skipped_outputs: Sequence[Any] = (), options: dict[str, Any] | None = None) -> list[str]:
        """Add ``run`` (see :func:`run_facts`) and the prompt check's warnings to ``result`` (the JSON's
        top level), and example outputs to each entry's evidence; returns the new warnings."""
        warnings = self.prompts.warnings()
        if warnings:
            result["warnings"] = [*result.get("warnings", []), *warnings]
        result["run"] = run_facts(self.model, references=self.references, skipped_references=skipped_references,
                                  skipped_outputs=skipped_outputs, options=options, prompts=self.prompts.counts())
        for entry in entries:
            self.examples.attach(entry.data.get("evidence") or [], entry.student if self.group_by else None)
        return warnings


__all__ = ["ExampleOutputs", "RunRecorder", "model_reference_counts", "reference_counts", "run_facts"]
