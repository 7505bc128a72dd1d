"""Record-level workflows behind the CLI: fit on references, rank a student.

These functions take :class:`~attribution.io.Record` streams and return plain dicts
(JSON-ready) or models, so notebooks, scripts and the CLI share one code path.
They never print; pass ``progress`` to follow them (e.g. a tqdm bar on stderr).

The names below that are defined elsewhere stay importable from here: the verdict (``verdict``,
``describe_verdict``, ``ALPHA``: :mod:`attribution.inference`), ``evaluate``, ``results_table``
and ``base_style`` (:mod:`attribution.evaluation`) and ``file_digest`` (:mod:`attribution.io`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import input_error, model_error
from .estimator import TeacherAttributor
from .evaluation import base_style, evaluate, results_table
from .inference import ALPHA, StudentEvidence, describe_verdict, summarize_evidence, verdict
from .io import Record, file_digest
from .multitask import MultiTaskAttributor, as_multitask
from .references import check_references, reference_families
from .tagging import TaggedDoc, read_ahead
from .verdicts import VerdictRule


def fit_reference(records: Iterable[Record], *, task: str | None = None,
                  families: Mapping[str, str] | None = None,
                  progress: Callable[[int], None] | None = None, **params: Any) -> MultiTaskAttributor:
    """Fit one attributor per task on teachers' reference outputs.

    Parameters
    ----------
    records : iterable of Record
        Reference outputs, each with a ``teacher``.
    task : str, optional
        Keep only this task.
    families : mapping of str to str, optional
        Teacher -> model family (e.g. :func:`attribution.families.read_families` of a ``candidates.tsv``),
        for records without a ``family`` field; a record's own ``family`` must agree with it (E141).
    progress : callable, optional
        Called with the number of reference outputs tagged so far, batch by batch (tagging is
        most of the fitting time).
    **params
        Passed to :class:`~attribution.estimator.TeacherAttributor`.
    """
    records = [r for r in records if task is None or r.task == task]
    if not records:
        raise model_error("E208", task=task, known="(no records)")
    check_references(records, normalize=params.get("normalize", True))
    family_of = reference_families(records, families)
    return MultiTaskAttributor(**params).fit([r.output for r in records], [str(r.teacher) for r in records],
                                             [r.task for r in records], [r.id for r in records],
                                             families=family_of or None, progress=progress)


def rank_student(model: MultiTaskAttributor | TeacherAttributor, records: Iterable[Record], *, task: str | None = None,
                 top_templates: int = 10, keep_outputs: bool = False, alpha: float = ALPHA,
                 tests: str | VerdictRule = "either", informative_evidence: bool = True, exclude: Iterable[str] = (),
                 control: Iterable[Record] | None = None,
                 progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Rank the teacher of one student from all its outputs, streaming in batches (``exclude``: teachers or
    families left out of the ranking and its tests, without refitting; ``control``: outputs of a model of the
    student's base taught by no candidate, on the same prompts (matched by ``id``), against which the verdict
    compares the student, see docs/verdict.md).

    Returns
    -------
    dict
        ``n_outputs`` (outputs used as evidence); ``n_empty`` (outputs with no text left after
        normalization, counted but not used); ``ranking`` (best first: ``teacher``, ``probability``, ``support``);
        ``tasks`` (the same per task); ``verdict`` (see :func:`attribution.inference.verdict`);
        ``evidence`` (templates that drove the top teacher, with
        example spans from these outputs); with ``keep_outputs``, ``outputs`` (per-output
        probabilities, for reports); ``checks`` (repeated, near-empty and non-English outputs, see
        :mod:`attribution.checks`); ``warnings`` when there is something to say, e.g. the records name
        several students (pooled here; :func:`attribution.result.rank_students` ranks each). See also
        :func:`attribution.result.audit_student`, the whole document of ``attribute-teacher rank`` (this one,
        the model's ``signature``, and ``inputs``, ``skipped`` and ``run``) as an object of DataFrames.
        ``informative_evidence=False`` also lists templates made mostly of punctuation as evidence
        (see :func:`attribution.explain.is_informative`).
    """
    run = StudentRun(model, task=task, keep_outputs=keep_outputs, progress=progress, exclude=exclude,
                     control=ControlScores(control) if control is not None else None)
    for record in records:
        run.add(record)
    return run.finish(top_templates=top_templates, alpha=alpha, tests=tests, informative_evidence=informative_evidence)


#: Distinct ``student`` names a :class:`StudentRun` remembers (to name them in its warning).
MAX_NAMED_STUDENTS = 20


class StudentRun:
    """One student's outputs, streamed: records are batched per task and scored into one
    :class:`~attribution.inference.StudentEvidence` per task (flat memory). :func:`rank_student` is one
    run; :func:`attribution.result.rank_students` keeps one run per group of a file, all scored through
    one :class:`SharedScoring` (``scoring``), so that a thousand one-output students are tagged in a few
    batches, not in a thousand."""

    def __init__(self, model: MultiTaskAttributor | TeacherAttributor, *, task: str | None = None,
                 keep_outputs: bool = False, progress: Callable[[int], None] | None = None,
                 warn_pooled: bool = True, scoring: SharedScoring | None = None,
                 exclude: Iterable[str] = (), control: ControlScores | Sequence[Record] | None = None) -> None:
        from .checks import OutputChecks

        self.model = as_multitask(model)  # a TeacherAttributor serves every task
        self.task, self.keep_outputs, self.progress = task, keep_outputs, progress
        self.warn_pooled = warn_pooled
        self.scoring = scoring
        self.exclude = list(exclude)
        self.control = control if isinstance(control, ControlScores) or control is None else ControlScores(control)
        for sub in self.model.models_.values():  # unknown names fail now, before any output is read
            sub.hierarchy(self.exclude)
        self.checks = OutputChecks()  # repeated, near-empty and non-English outputs (warnings only)
        self.evidence: dict[str | None, StudentEvidence] = {}
        self.pending: dict[str | None, list[Record]] = {}
        self.scored: dict[str | None, list[tuple[Record, TaggedDoc, Any, Any]]] = {}  # from ``scoring``
        self.in_flight: collections.deque = collections.deque()  # (task, batch, tags) sent to Dask workers
        self.kept: list[dict[str, Any]] = []
        self.students: set[str] = set()  # distinct 'student' fields (the first MAX_NAMED_STUDENTS + 1)

    def add(self, record: Record) -> None:
        """Queue one record; a full batch of its task is scored at once."""
        if self.task is not None and record.task not in (self.task, None):
            return
        if record.student is not None and len(self.students) <= MAX_NAMED_STUDENTS:
            self.students.add(record.student)
        key = self.model.task_of(record, self.task)  # fails early on an unknown task
        self.checks.add(record.output)
        if self.scoring is not None:
            self.scoring.add(self, key, record)
            return
        self.pending.setdefault(key, []).append(record)
        if len(self.pending[key]) >= self.model.models_[key].batch_size:
            self._flush(key)

    def take(self, key: str | None, records: list[Record], docs: list[TaggedDoc], X: Any, proba: Any) -> None:
        """Outputs of this student scored by :class:`SharedScoring` (rows of ``X`` and ``proba``, in order):
        added to the evidence in the same batches as if this run had scored them (the same sums, bit for bit)."""
        rows = self.scored.setdefault(key, [])
        rows.extend(zip(records, docs, [X[i:i + 1] for i in range(len(records))], proba))
        size = self.model.models_[key].batch_size
        while len(rows) >= size:
            self._add_scored(key, rows[:size])
            del rows[:size]

    def _add_scored(self, key: str | None, rows: list[tuple[Record, TaggedDoc, Any, Any]]) -> None:
        import scipy.sparse as sp

        sub = self.model.models_[key]
        records = [row[0] for row in rows]
        proba = np.vstack([row[3] for row in rows])
        self._evidence_of(key).add_scored([row[1] for row in rows], sp.vstack([row[2] for row in rows], format="csr"),
                                      proba, [r.id for r in records])
        self._keep(sub, records, proba)

    def _control_for(self, key: str | None) -> dict[str, np.ndarray] | None:
        """The control's scores on task ``key`` (:class:`ControlScores`); ``None`` without a control."""
        return None if self.control is None else self.control.for_task(self.model, key)

    def _evidence_of(self, key: str | None) -> StudentEvidence:
        """Task ``key``'s evidence, made on its first output."""
        if key not in self.evidence:
            self.evidence[key] = StudentEvidence(self.model.models_[key], exclude=self.exclude,
                                                 control=self._control_for(key))
        return self.evidence[key]

    def _flush(self, key: str | None) -> None:
        batch = self.pending.pop(key, [])
        if not batch:
            return
        sub = self.model.models_[key]
        self._evidence_of(key)
        # On Dask workers (attribution.parallel), the next batches are tagged while this process scores
        # earlier ones, in the order they were sent (the same results); otherwise each is scored at once.
        self.in_flight.append((key, batch, sub.prepare_later([r.output for r in batch])))
        while len(self.in_flight) > read_ahead():
            self._score(*self.in_flight.popleft())

    def _score(self, key: str | None, batch: list[Record], tags: Callable[[], Any]) -> None:
        sub = self.model.models_[key]
        proba = self.evidence[key].add([r.output for r in batch], [r.id for r in batch], docs=tags())
        self._keep(sub, batch, proba)
        if self.progress:
            self.progress(len(batch))

    def _keep(self, sub: TeacherAttributor, records: list[Record], proba: np.ndarray) -> None:
        if self.keep_outputs:
            for record, row in zip(records, proba):
                self.kept.append({"id": record.key, "task": record.task,
                                  "probabilities": dict(zip(sub.classes_.tolist(), row.tolist()))})

    def flush(self) -> None:
        """Score every queued record now, so that the evidence holds every record added so far (what
        :class:`attribution.sequential.SequentialRank` needs before each look)."""
        for key in list(self.pending):
            self._flush(key)
        while self.in_flight:
            self._score(*self.in_flight.popleft())

    def finish(self, *, top_templates: int = 10, alpha: float | None = None, tests: str | VerdictRule = "either",
               informative_evidence: bool = True) -> dict[str, Any]:
        """Score what is still queued and summarize (see :func:`rank_student` for the keys), with
        ``checks`` (counts of :class:`attribution.checks.OutputChecks`) and, when there is something
        to say, ``warnings``: several students pooled into one, many repeated, near-empty or
        non-English outputs."""
        if self.scoring is not None:
            self.scoring.finish()  # every student's outputs scored (once for all of them)
        self.flush()
        for key, rows in self.scored.items():
            if rows:
                self._add_scored(key, rows)
        self.scored.clear()
        evidence = self.evidence
        if not evidence:
            raise model_error("E209")
        empty = sorted(str(key) for key, ev in evidence.items() if ev.n_outputs == 0)
        if empty and len(empty) < len(evidence):  # else E209: nothing at all to rank
            raise model_error("E215", tasks=", ".join(empty))
        result = summarize_evidence(evidence, self.model.classes_, top_templates=top_templates,
                                    outputs=self.kept or None, keep_outputs=self.keep_outputs, alpha=alpha,
                                    tests=tests, informative=informative_evidence)
        result["checks"] = self.checks.counts()
        result["power"] = measured_power(self.model, result, VerdictRule.of(tests, alpha))
        warnings = [pooled_students_warning(self.students)] if self.warn_pooled and len(self.students) > 1 else []
        warnings += self.checks.warnings()
        repeats = [ev for ev in evidence.values() if ev.control_repeats]
        if repeats:
            warnings.append(control_repeats_warning(sum(ev.control_repeats for ev in repeats),
                                                    str(repeats[0].first_control_repeat)))
        if warnings:
            result["warnings"] = warnings
        return result


class ControlScores:
    """A control's outputs (``rank --control``) and, per task, its per-teacher log-probabilities on each prompt
    id, scored once and shared by every student ranked against it. One answer per prompt id and task: a
    second is refused (``InputError`` E143 at its line, naming the first), before any output is scored."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.records = list(records)
        refuse_repeated_ids(self.records)
        self._scores: dict[str | None, dict[str, np.ndarray]] = {}

    def for_task(self, model: MultiTaskAttributor, key: str | None) -> dict[str, np.ndarray]:
        if getattr(self, "_model", None) is not model:  # scores belong to one model
            self._model, self._scores = model, {}
        if key not in self._scores:
            sub = model.models_[key]
            records = [r for r in self.records if key is None or r.task in (key, None)]
            missing = next((r for r in records if r.id is None), None)
            if missing is not None:
                raise input_error("E142", source=missing.source, line=missing.line)
            by_id: dict[str, np.ndarray] = {}
            for start in range(0, len(records), sub.batch_size):
                chunk = records[start:start + sub.batch_size]
                proba = sub.predict_proba_docs(sub.prepare([r.output for r in chunk]))
                for record, row in zip(chunk, np.log(np.clip(proba, 1e-12, 1.0))):
                    by_id[str(record.id)] = row
            self._scores[key] = by_id
        return self._scores[key]


def refuse_repeated_ids(records: Sequence[Record]) -> None:
    """A control's records answer each prompt id once per task (a record without ``task`` answers it in every
    task): the second answer is refused, ``InputError`` E143 at its file and line, naming the first's. Records
    without an ``id`` are left to E142 (when their task is ranked)."""
    first: dict[str, dict[str | None, Record]] = {}
    for record in records:
        if record.id is None:
            continue
        seen = first.setdefault(str(record.id), {})
        clash = (next(iter(seen.values()), None) if record.task is None
                 else seen.get(record.task) or seen.get(None))
        if clash is not None:
            where = ":".join(str(part) for part in (clash.source, clash.line) if part is not None)
            raise input_error("E143", source=record.source, line=record.line, id=record.id,
                              first=where or "an earlier record")
        seen[record.task] = record


class SharedScoring:
    """Tag, featurize and score the outputs of many :class:`StudentRun` in shared batches (per task), and
    hand each run its rows (:meth:`StudentRun.take`). Tagging one output at a time costs far more than its
    share of a batch: ``rank --group-by`` with one-output students spent most of its time there."""

    def __init__(self, model: MultiTaskAttributor, progress: Callable[[int], None] | None = None) -> None:
        self.model, self.progress = model, progress
        self.pending: dict[str | None, list[tuple[StudentRun, Record]]] = {}
        self.in_flight: collections.deque = collections.deque()  # (task, batch, tags) sent to Dask workers

    def add(self, run: StudentRun, key: str | None, record: Record) -> None:
        self.pending.setdefault(key, []).append((run, record))
        if len(self.pending[key]) >= self.model.models_[key].batch_size:
            self._flush(key)

    def _flush(self, key: str | None) -> None:
        batch = self.pending.pop(key, [])
        if batch:
            sub = self.model.models_[key]
            self.in_flight.append((key, batch, sub.prepare_later([record.output for _, record in batch])))
        while len(self.in_flight) > read_ahead():
            self._score(*self.in_flight.popleft())

    def _score(self, key: str | None, batch: list[tuple[StudentRun, Record]], tags: Callable[[], Any]) -> None:
        sub = self.model.models_[key]
        docs = tags()
        X = sub.featurize(docs)
        proba = sub.classifier_.predict_proba(X)
        rows: dict[int, list[int]] = {}
        runs: dict[int, StudentRun] = {}
        for i, (run, _) in enumerate(batch):
            rows.setdefault(id(run), []).append(i)
            runs[id(run)] = run
        for ident, index in rows.items():
            runs[ident].take(key, [batch[i][1] for i in index], [docs[i] for i in index], X[index], proba[index])
        if self.progress:
            self.progress(len(batch))

    def finish(self) -> None:
        """Score everything still queued (the first run to finish does it for all)."""
        for key in list(self.pending):
            self._flush(key)
        while self.in_flight:
            self._score(*self.in_flight.popleft())


def measured_power(model: MultiTaskAttributor, result: dict[str, Any], rule: VerdictRule) -> dict[str, Any]:
    """The result's ``power``: how often the benchmark's documented students (and controls) were named at about
    this many outputs and candidates (:func:`attribution.report.error_rates.power`; docs/json.md)."""
    from .report.error_rates import power, signature_fields

    features = signature_fields(next(iter(model.models_.values())).signature_).get("features")
    return power(int(result["n_outputs"]), len(result["ranking"]), rule=rule.name, alpha=rule.alpha, features=features)


def control_repeats_warning(n: int, first: str) -> str:
    """The warning for student outputs on a prompt the control test had paired already (``rank --control``)."""
    return (f"{n} output(s) answer a prompt id that an earlier output of the student answered (the first: "
            f"'{first}'); the control test compares each prompt once, the student's first output on it with the "
            f"control's answer, so these count in the ranking only")


def pooled_students_warning(students: set[str]) -> str:
    """The warning for a file of several students ranked as one."""
    names = sorted(students)[:MAX_NAMED_STUDENTS]
    more = len(students) > MAX_NAMED_STUDENTS
    count = f"more than {MAX_NAMED_STUDENTS}" if more else str(len(students))
    return (f"the outputs name {count} students ({', '.join(names)}{', ...' if more else ''}) and were ranked "
            f"as one student; use --group-by student (API: attribution.result.rank_students) for one ranking each")


__all__ = ["ALPHA", "MAX_NAMED_STUDENTS", "ControlScores", "SharedScoring", "StudentRun", "base_style",
           "describe_verdict", "evaluate", "file_digest", "fit_reference", "pooled_students_warning", "rank_student",
           "results_table", "verdict"]
