"""Record-level workflows behind the CLI: fit on references, rank a student, evaluate.

These functions take :class:`~attribution.io.Record` streams and return plain dicts
(JSON-ready) or DataFrames, so notebooks, scripts and the CLI share one code path.
They never print; pass ``progress`` to get a tqdm bar on stderr.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import __version__
from .errors import InputError, ModelError, input_error, model_error
from .evaluation import (evidence_mask, expected_calibration_error, score_attribution, student_accuracy_at,
                         student_key)
from .io import Record, RecordReader, read_records
from .normalize import Normalizer
from .paired import PairedTest
from .tagging import read_ahead
from .models import (DEFAULT_FEATURES, MultiTaskAttributor, StudentEvidence, TeacherAttributor, rank_teachers,
                     unlisted_p_value)

#: Significance level of the unlisted-teacher test behind a verdict.
ALPHA = 0.05
#: Feature sets compared by ``evaluate`` when none are named: the paper's two presets and our default.
DEFAULT_EVAL_FEATURES = ("pos-paper", "ngram-paper", DEFAULT_FEATURES)
#: Fewest usable reference outputs (non-empty after normalization) per teacher and task: a teacher
#: without them would be fitted on nothing and would still count towards the unlisted-teacher test.
MIN_REFERENCES_PER_TEACHER = 3


def check_references(records: Sequence[Record], *, normalize: bool = True,
                     minimum: int = MIN_REFERENCES_PER_TEACHER) -> None:
    """Refuse (``E212``) a teacher with fewer than ``minimum`` usable reference outputs in a task."""
    normalizer = Normalizer() if normalize else None
    usable: dict[tuple[str | None, str], list[int]] = {}
    for record in records:
        counts = usable.setdefault((record.task, str(record.teacher)), [0, 0])
        counts[1] += 1
        counts[0] += bool(normalizer(record.output) if normalizer else record.output.strip())
    for (task, teacher), (n, total) in sorted(usable.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        if n < minimum:
            where = f" (task '{task}')" if task is not None else ""
            raise model_error("E212", teacher=teacher, where=where, n=n, total=total, minimum=minimum)


def fit_reference(records: Iterable[Record], *, task: str | None = None,
                  progress: Callable[[int], None] | None = None, **params: Any) -> MultiTaskAttributor:
    """Fit one attributor per task on teachers' reference outputs.

    Parameters
    ----------
    records : iterable of Record
        Reference outputs, each with a ``teacher``.
    task : str, optional
        Keep only this task.
    progress : callable, optional
        Called with the number of reference outputs tagged so far, batch by batch (tagging is
        most of the fitting time).
    **params
        Passed to :class:`~attribution.models.TeacherAttributor`.
    """
    records = [r for r in records if task is None or r.task == task]
    if not records:
        raise model_error("E208", task=task, known="(no records)")
    check_references(records, normalize=params.get("normalize", True))
    return MultiTaskAttributor(**params).fit([r.output for r in records], [r.teacher for r in records],
                                             [r.task for r in records], [r.id for r in records], progress=progress)


def rank_student(model: MultiTaskAttributor, records: Iterable[Record], *, task: str | None = None,
                 top_templates: int = 10, keep_outputs: bool = False, alpha: float = ALPHA,
                 tests: str = "either",
                 progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Rank the teacher of one student from all its outputs, streaming in batches.

    Returns
    -------
    dict
        ``n_outputs`` (outputs used as evidence); ``n_empty`` (outputs with no text left after
        normalization, counted but not used); ``ranking`` (best first: ``teacher``, ``probability``, ``support``);
        ``tasks`` (the same per task); ``verdict`` (see :func:`verdict`); ``evidence`` (templates that drove the top teacher, with
        example spans from these outputs); with ``keep_outputs``, ``outputs`` (per-output
        probabilities, for reports); ``checks`` (repeated, near-empty and non-English outputs, see
        :mod:`attribution.checks`); ``warnings`` when there is something to say, e.g. the records name
        several students (pooled here; :func:`attribution.result.rank_students` ranks each). See also
        :func:`attribution.result.audit_student`, the same as an object of DataFrames.
    """
    run = StudentRun(model, task=task, keep_outputs=keep_outputs, progress=progress)
    for record in records:
        run.add(record)
    return run.finish(top_templates=top_templates, alpha=alpha, tests=tests)


#: Distinct ``student`` names a :class:`StudentRun` remembers (to name them in its warning).
MAX_NAMED_STUDENTS = 20


class StudentRun:
    """One student's outputs, streamed: records are batched per task and scored into one
    :class:`~attribution.models.StudentEvidence` per task (flat memory). :func:`rank_student` is one
    run; :func:`attribution.result.rank_students` keeps one run per group of a file."""

    def __init__(self, model: MultiTaskAttributor, *, task: str | None = None, keep_outputs: bool = False,
                 progress: Callable[[int], None] | None = None, warn_pooled: bool = True) -> None:
        from .checks import OutputChecks

        self.model, self.task, self.keep_outputs, self.progress = model, task, keep_outputs, progress
        self.warn_pooled = warn_pooled
        self.checks = OutputChecks()  # repeated, near-empty and non-English outputs (warnings only)
        self.evidence: dict[str | None, StudentEvidence] = {}
        self.pending: dict[str | None, list[Record]] = {}
        self.in_flight: collections.deque = collections.deque()  # (task, batch, tags) sent to Dask workers
        self.kept: list[dict[str, Any]] = []
        self.students: set[str] = set()  # distinct 'student' fields (the first MAX_NAMED_STUDENTS + 1)

    def add(self, record: Record) -> None:
        """Queue one record; a full batch of its task is scored at once."""
        if self.task is not None and record.task not in (self.task, None):
            return
        if record.student is not None and len(self.students) <= MAX_NAMED_STUDENTS:
            self.students.add(record.student)
        key = _task_key(self.model, record, self.task)  # fails early on an unknown task
        self.checks.add(record.output)
        self.pending.setdefault(key, []).append(record)
        if len(self.pending[key]) >= self.model.models_[key].batch_size:
            self._flush(key)

    def _flush(self, key: str | None) -> None:
        batch = self.pending.pop(key, [])
        if not batch:
            return
        sub = self.model.models_[key]
        if key not in self.evidence:
            self.evidence[key] = StudentEvidence(sub)
        # On Dask workers (attribution.parallel), the next batches are tagged while this process scores
        # earlier ones, in the order they were sent (the same results); otherwise each is scored at once.
        self.in_flight.append((key, batch, sub.prepare_later([r.output for r in batch])))
        while len(self.in_flight) > read_ahead():
            self._score(*self.in_flight.popleft())

    def _score(self, key: str | None, batch: list[Record], tags: Callable[[], Any]) -> None:
        sub = self.model.models_[key]
        proba = self.evidence[key].add([r.output for r in batch], [r.id for r in batch], docs=tags())
        if self.keep_outputs:
            for record, row in zip(batch, proba):
                self.kept.append({"id": record.key, "task": record.task,
                                  "probabilities": dict(zip(sub.classes_.tolist(), row.tolist()))})
        if self.progress:
            self.progress(len(batch))

    def finish(self, *, top_templates: int = 10, alpha: float = ALPHA, tests: str = "either") -> dict[str, Any]:
        """Score what is still queued and summarize (see :func:`rank_student` for the keys), with
        ``checks`` (counts of :class:`attribution.checks.OutputChecks`) and, when there is something
        to say, ``warnings``: several students pooled into one, many repeated, near-empty or
        non-English outputs."""
        for key in list(self.pending):
            self._flush(key)
        while self.in_flight:
            self._score(*self.in_flight.popleft())
        evidence = self.evidence
        if not evidence:
            raise model_error("E209")
        empty = sorted(str(key) for key, ev in evidence.items() if ev.n_outputs == 0)
        if empty and len(empty) < len(evidence):  # else E209: nothing at all to rank
            raise model_error("E215", tasks=", ".join(empty))
        result = summarize_evidence(evidence, self.model.classes_, top_templates=top_templates,
                                    outputs=self.kept or None, keep_outputs=self.keep_outputs, alpha=alpha,
                                    tests=tests)
        result["checks"] = self.checks.counts()
        warnings = [pooled_students_warning(self.students)] if self.warn_pooled and len(self.students) > 1 else []
        warnings += self.checks.warnings()
        if warnings:
            result["warnings"] = warnings
        return result


def pooled_students_warning(students: set[str]) -> str:
    """The warning for a file of several students ranked as one."""
    names = sorted(students)[:MAX_NAMED_STUDENTS]
    more = len(students) > MAX_NAMED_STUDENTS
    count = f"more than {MAX_NAMED_STUDENTS}" if more else str(len(students))
    return (f"the outputs name {count} students ({', '.join(names)}{', ...' if more else ''}) and were ranked "
            f"as one student; use --group-by student (API: attribution.result.rank_students) for one ranking each")


def _task_key(model: MultiTaskAttributor, record: Record, task: str | None) -> str | None:
    """The model task that scores ``record``: its own; for a record without one, ``task`` (the
    caller's ``--task``) or the model's only task."""
    name = record.task if record.task is not None else task
    if name is None and len(model.models_) == 1:
        return next(iter(model.models_))
    if name is None and None not in model.models_:
        raise input_error("E122", source=record.source, line=record.line,
                          known=", ".join(str(t) for t in model.models_))
    try:
        return model.task_key(name)
    except ModelError as err:  # E208, with the record's file and line
        if err.code != "E208" or record.source is None:
            raise
        raise input_error("E208", source=record.source, line=record.line, task=name,
                          known=", ".join(str(t) for t in model.models_)) from None


def match_students(references: Sequence[Record], students: Sequence[Record], *,
                   skip_invalid: bool = False) -> tuple[list[Record], list[InputError]]:
    """Check that every student output can be evaluated: a ``teacher`` label among the references
    of its task, and a task the references have (a student without a task takes the references'
    only task). Returns the students (tasks filled in) and, with ``skip_invalid``, the errors of
    the ones left out; otherwise the first problem is raised (``E107``, ``E108``, ``E116``)."""
    known: dict[str | None, set[str]] = {}
    for record in references:
        known.setdefault(record.task, set()).add(record.teacher)
    only = next(iter(known)) if len(known) == 1 else None
    kept: list[Record] = []
    skipped: list[InputError] = []
    for record in students:
        if record.task is None and None not in known and only is not None:
            record = dataclasses.replace(record, task=only)
        where = {"source": record.source, "line": record.line}
        if record.task is None and None not in known:
            err = input_error("E122", **where, field="task", known=", ".join(sorted(str(t) for t in known)))
        elif record.task not in known:
            err = input_error("E116", **where, field="task", label=record.task,
                              known=", ".join(sorted(str(t) for t in known)))
        elif record.teacher is None:
            err = input_error("E107", **where, field="teacher")
        elif record.teacher not in known[record.task]:
            err = input_error("E108", **where, field="teacher", label=record.teacher,
                              known=", ".join(sorted(known[record.task])))
        else:
            kept.append(record)
            continue
        if not skip_invalid:
            raise err
        skipped.append(err)
    return kept, skipped


def summarize_evidence(evidence: dict[str | None, StudentEvidence], classes: Sequence[str], *,
                       top_templates: int = 10, outputs: list | None = None,
                       keep_outputs: bool = False, alpha: float = ALPHA,
                       tests: str = "either") -> dict[str, Any]:
    """Combine per-task evidence into one verdict (over teachers every task knows)."""
    total = np.zeros(len(classes))
    boot_sum = None
    boot_count = None
    n_outputs = 0
    n_empty = sum(ev.n_empty for ev in evidence.values())
    per_task = {}
    for key, ev in sorted(evidence.items(), key=lambda kv: (kv[0] is not None, kv[0] or "")):
        per_task[key] = _ranking_records(ev.ranking())
        cols = [ev.classes.index(c) for c in classes]
        total += ev.sum_log_proba[cols]
        n_outputs += ev.n_outputs
        if ev.model.n_bootstrap:
            boot_sum = ev._boot_sum[:, cols] + (0 if boot_sum is None else boot_sum)
            boot_count = ev._boot_count + (0 if boot_count is None else boot_count)
    ranking = _ranking_records(rank_teachers(classes, total, n_outputs, boot_sum, boot_count))
    top = ranking[0]["teacher"]
    templates = []
    for key, ev in sorted(evidence.items(), key=lambda kv: (kv[0] is not None, kv[0] or "")):
        rows = ev.templates(top, top=top_templates).to_dict("records")
        templates.extend({**row, "task": key} for row in rows)
    templates.sort(key=lambda row: (-row["weight"], row["feature"]))
    p_values = {key: ev.p_unlisted() for key, ev in evidence.items()}
    paired = {key: ev.paired_result(top) for key, ev in evidence.items()}
    options = {"alpha": alpha, "tests": tests}
    result: dict[str, Any] = {"n_outputs": n_outputs, "n_empty": n_empty, "ranking": ranking,
                              "evidence": templates[:top_templates],
                              "verdict": verdict(top, list(p_values.values()), list(paired.values()), **options)}
    if len(per_task) > 1 or None not in per_task:
        result["tasks"] = {str(k): {"n_outputs": evidence[k].n_outputs, "ranking": v,
                                    "verdict": verdict(v[0]["teacher"], [p_values[k]],
                                                       [evidence[k].paired_result(v[0]["teacher"])], **options)}
                           for k, v in per_task.items()}
    if keep_outputs:
        result["outputs"] = outputs or []
    return result


#: How a verdict combines its two tests (see :func:`verdict`).
VERDICT_TESTS = ("either", "paired", "unlisted", "both")


def _task_test(p_unlisted: float | None, paired: dict[str, Any] | None, tests: str) -> tuple[float | None, str]:
    """One task's p-value and the name of what it tested, under the ``tests`` rule of :func:`verdict`."""
    p_paired = None if paired is None else paired["p_paired"]
    if tests == "paired":
        return p_paired, "paired"
    if tests == "unlisted":
        return p_unlisted, "unlisted"
    if tests == "both":
        both = None if p_paired is None or p_unlisted is None else max(p_paired, p_unlisted)
        return both, "paired and unlisted"
    available = [p for p in (p_paired, p_unlisted) if p is not None]
    if len(available) == 2:  # Bonferroni: the union of two tests at alpha/2 each
        return min(1.0, 2 * min(available)), "paired or unlisted"
    return (available[0] if available else None), ("paired" if p_paired is not None else "unlisted")


def verdict(teacher: str, p_values: Sequence[float | None], paired: Sequence[dict[str, Any] | None] | None = None,
            *, alpha: float = ALPHA, tests: str = "either") -> dict[str, Any]:
    """Name the best-ranked teacher only when a test rules out the alternatives, in every task.

    Two tests, per task. The **paired** test (:mod:`attribution.paired`, ``p_paired``) runs when the
    model kept every candidate's answer to the student's prompts: the top-ranked teacher must beat
    every other candidate prompt by prompt. It has power on real students but only compares the
    candidates. The **unlisted**-teacher test (:func:`~attribution.models.unlisted_p_value`,
    ``p_unlisted``; 4+ candidates) asks whether a teacher outside the candidates could explain the
    outputs as well; it rarely concludes when candidates are related. ``tests`` chooses the rule:
    ``"either"`` (default: one test suffices, each at ``alpha / 2``), ``"paired"``, ``"unlisted"``,
    or ``"both"`` (both must pass: the strict open-set rule).

    ``p_value`` is the largest p-value over the tasks (every task must pass); ``status`` is
    ``"attributed"`` when it is below ``alpha``, ``"inconclusive"`` when it is not, and
    ``"unavailable"`` when a task has no test that the rule accepts. ``paired_score`` is the evidence
    behind a paired test: each teacher's mean per-prompt score.
    """
    if tests not in VERDICT_TESTS:
        raise model_error("E210", name="tests", expected=f"one of {', '.join(VERDICT_TESTS)}", got=tests)
    paired = list(paired) if paired is not None else [None] * len(p_values)
    task_tests = [_task_test(p_u, p_p, tests) for p_u, p_p in zip(p_values, paired)]
    task_p = [p for p, _ in task_tests]
    found = [t for t in paired if t is not None]
    out: dict[str, Any] = {
        "teacher": None, "best_candidate": teacher, "alpha": alpha,
        "test": "; ".join(sorted({name for _, name in task_tests})) or None,
        "p_unlisted": None if any(p is None for p in p_values) or not p_values else max(p_values),
        "p_paired": max(t["p_paired"] for t in found) if found else None,
        "n_paired": sum(t["n_paired"] for t in found),
        "runner_up": found[0]["runner_up"] if len(found) == 1 else None,
        "paired_score": found[0]["paired_score"] if len(found) == 1 else None,
    }
    if not task_p or any(p is None for p in task_p):  # no test: name nobody, show the best candidate
        return {**out, "status": "unavailable", "p_value": None}
    p = max(task_p)
    status = "attributed" if p < alpha else "inconclusive"
    return {**out, "teacher": teacher if status == "attributed" else None, "status": status, "p_value": p}


def describe_verdict(verdict: dict[str, Any] | None) -> str:
    """One plain sentence saying what a :func:`verdict` means (for tables and reports)."""
    if not verdict:
        return "No verdict in this result (it predates the verdict's tests): read the ranking with care."
    best, p, alpha, test = verdict.get("best_candidate"), verdict.get("p_value"), verdict.get("alpha"), verdict.get("test")
    if p is None and test is None:  # a result saved before the paired test
        p, test = verdict.get("p_unlisted"), "unlisted"
    status = verdict.get("status")
    p_text = _p_text(p)
    if test and "paired" in test:
        paired_ok = _below(verdict.get("p_paired"), alpha, test)
        unlisted_ok = _below(verdict.get("p_unlisted"), alpha, test)
        reasons = []
        if paired_ok:
            reasons.append(f"prompt by prompt, the outputs resemble {best}'s answers more than every other "
                           f"candidate's ({verdict.get('n_paired')} paired prompts; runner-up "
                           f"{verdict.get('runner_up')})")
        if unlisted_ok:
            reasons.append("a teacher outside the candidates is implausible")
        if status == "attributed":
            caveat = "" if unlisted_ok else (
                f" Among the candidates only: a teacher outside them that resembles {best} is not ruled out "
                f"(p_unlisted = {_p_text(verdict.get('p_unlisted'))}); --verdict-test both also requires that.")
            return f"{verdict.get('teacher')}: {' and '.join(reasons)}; p = {p_text} < {alpha} ({test}).{caveat}"
        return (f"inconclusive: {best} ranks first, but the {test} test{'s do' if ' ' in test else ' does'} not "
                f"single it out (p = {p_text}, alpha = {alpha}); no teacher is named.")
    if status == "attributed":
        return f"{verdict.get('teacher')}: a teacher outside the candidates is implausible (p = {p_text} < {alpha})."
    if status == "inconclusive":
        return (f"inconclusive: the outputs are as consistent with a teacher outside the candidates as with "
                f"{best} (p = {p_text}, alpha = {alpha}); no teacher is named.")
    return (f"unavailable: no test could run (no teacher answers to the student's prompts, and the unlisted-teacher "
            f"test needs 4+ candidate teachers); best candidate {best}, relative to the candidates only.")


def _p_text(p: Any) -> str:
    return f"{p:.3g}" if isinstance(p, (int, float)) and not isinstance(p, bool) else "n/a"


def _below(p: Any, alpha: Any, test: str) -> bool:
    """Whether one test passed on its own, at the level the ``test`` rule gives it."""
    if not isinstance(p, (int, float)) or not isinstance(alpha, (int, float)):
        return False
    return p < (alpha / 2 if " or " in test else alpha)


def _ranking_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{"teacher": str(row.teacher), "probability": float(row.probability), "support": float(row.support),
             "ci_low": float(row.ci_low), "ci_high": float(row.ci_high)} for row in frame.itertuples(index=False)]


def evaluate(references: Sequence[Record], students: Sequence[Record], *,
             features: Sequence[str] = DEFAULT_EVAL_FEATURES, subsets: Sequence[int] = (10, 25),
             draws: int = 20, random_state: int = 0, baselines: Sequence[str] = (),
             baseline_options: dict[str, Any] | None = None, base_correction: bool = False,
             **params: Any) -> dict[str, Any]:
    """The paper's protocol: fit on teacher outputs, predict each student output, per task.

    Every student output must carry its true ``teacher``, and that teacher must be among
    the references of its task (else :class:`~attribution.errors.InputError` naming the
    file and line). Texts are tagged once and shared by all feature sets.

    With ``base_correction``, each feature set gets a second row, ``NAME+base-correction``, whose
    scores are shifted by the students' shared style (see :func:`base_style`). It assumes the students
    share a base model and that each teacher taught about one of them, as in the paper's protocol;
    it has no unlisted-teacher verdicts.

    Returns
    -------
    dict
        ``{"results": [row, ...]}``, one row per (task, feature set or baseline); see
        :func:`attribution.evaluation.score_attribution` for the keys, plus
        ``student_accuracy_at`` (mean and spread over ``draws`` random subsets per size).
    """
    students, _ = match_students(references, students)  # every task checked before fitting any model
    check_references(references, normalize=params.get("normalize", True))
    ref_tasks = _by_task(references)
    stud_tasks = _by_task(students)
    results = []
    for task, studs in stud_tasks.items():
        refs = ref_tasks[task]
        y_true = [r.teacher for r in studs]
        groups = [student_key(r) for r in studs]
        for name in features:
            model = TeacherAttributor(features=name, random_state=random_state, **params)
            model.fit([r.output for r in refs], [r.teacher for r in refs], [r.id for r in refs])
            docs = model.prepare([r.output for r in studs])
            scores = np.log(np.clip(model.predict_proba_docs(docs), 1e-12, 1.0))
            has_text = np.array([len(doc) > 0 for doc in docs])
            use = evidence_mask(groups, has_text)
            row = _row(y_true, scores, model.classes_.tolist(), groups, name, task, subsets, draws, random_state,
                       evidence=use)
            _add_verdicts(row, scores[use], np.asarray(groups)[use], model,
                          _paired_scores(model, [d for d, u in zip(docs, use) if u],
                                         [r.id for r, u in zip(studs, use) if u]))
            row["n_empty"] = int((~has_text).sum())
            row["calibration_error"] = expected_calibration_error(np.exp(scores), y_true, model.classes_)
            results.append(row)
            if base_correction:
                corrected = scores - base_style(scores[use], np.asarray(groups)[use])
                extra = _row(y_true, corrected, model.classes_.tolist(), groups, f"{name}+base-correction", task,
                             subsets, draws, random_state, evidence=use)
                extra.update({"base_correction": True, "n_empty": row["n_empty"], "n_attributed": None,
                              "attributed_accuracy": None})
                results.append(extra)
        for name in baselines:
            from .baselines import run_baseline

            out = run_baseline(name, list(refs), list(studs), **(baseline_options or {}))
            normalizer = Normalizer()
            has_text = [bool(normalizer(r.output)) for r in studs]  # same rule as the feature rows
            row = _row(y_true, out.scores, out.classes, groups, name, task, subsets, draws, random_state,
                       evidence=evidence_mask(groups, has_text))
            row["meta"] = out.meta
            results.append(row)
    return {"results": results, "version": __version__}


def _row(y_true, scores, classes, groups, name, task, subsets, draws, random_state,
         evidence=None) -> dict[str, Any]:
    row = score_attribution(y_true, scores, classes, groups, features=name, task=task, evidence=evidence)
    use = evidence_mask(groups, evidence)
    y_used, groups_used = np.asarray(y_true)[use], np.asarray(groups)[use]
    row["student_accuracy_at"] = {
        str(n): student_accuracy_at(scores[use], classes, y_used, groups_used, n, draws=draws,
                                    random_state=random_state)
        for n in subsets}
    return row


def base_style(scores: np.ndarray, groups: Sequence[str]) -> np.ndarray:
    """The students' shared pull towards some teachers: the mean, over students, of each student's
    mean log-probability vector.

    Students fine-tuned from one base model (GPT-2 in the paper) share its style, which the teacher
    classifier reads as a preference for whichever teacher writes most like that base model. With
    several students of the same base, one per teacher, subtracting this vector leaves what
    distinguishes the students from each other.
    """
    groups = np.asarray(groups)
    return np.mean([scores[groups == g].mean(axis=0) for g in sorted(set(groups.tolist()))], axis=0)


def _paired_scores(model: TeacherAttributor, docs: Sequence[Any], ids: Sequence[str | None]) -> np.ndarray | None:
    """Per-output paired scores (NaN rows where the prompt has no teachers' answers), or ``None``."""
    if model.paired_ is None:
        return None
    return model.paired_.scores_per_output(model._featurize(docs), ids)


def _add_verdicts(row: dict[str, Any], scores: np.ndarray, groups: Sequence[str], model: TeacherAttributor,
                  paired: np.ndarray | None = None, alpha: float = ALPHA) -> None:
    """Per student: the verdict's p-values and status (as :func:`rank_student` gives them); per row: how
    often a verdict is given (``n_attributed``) and how often it is right (``attributed_accuracy``, null
    when none is given)."""
    groups = np.asarray(groups)
    hits = []
    for group, student in row["students"].items():
        mine = groups == group
        rows = scores[mine]
        p = unlisted_p_value(rows.mean(axis=0), len(rows), model.unlisted_log_proba_,
                             random_state=model.random_state)
        test = None
        if paired is not None:
            accumulated = PairedTest(model.classes_.tolist())
            accumulated.add(paired[mine])
            test = accumulated.result(student["predicted"])
        v = verdict(student["predicted"], [p], [test], alpha=alpha)
        student.update({key: v[key] for key in ("p_unlisted", "p_paired", "p_value", "test", "status")})
        if v["status"] == "attributed":
            hits.append(student["predicted"] == student["true"])
    row["n_attributed"] = len(hits)
    row["attributed_accuracy"] = float(np.mean(hits)) if hits else None


def _by_task(records: Sequence[Record]) -> dict[str | None, list[Record]]:
    out: dict[str | None, list[Record]] = {}
    for record in records:
        out.setdefault(record.task, []).append(record)
    return out


def results_table(result: dict[str, Any]) -> pd.DataFrame:
    """The ``results`` of :func:`evaluate` as a DataFrame (one row per task and feature set).

    Every figure ``evaluate`` computes is a column: the ones below first, then the others it added
    (``n_empty``, ``calibration_error``, ``base_correction``, ...) by name; ``student_accuracy_at``
    becomes ``student_accuracy_at_N`` and ``student_accuracy_at_N_std`` per size N. The per-student
    verdicts and the confusion counts (``students``, ``confusion``, ``meta``) stay in the dict.
    """
    columns = ["task", "features", "n_outputs", "accuracy", "balanced_accuracy", "macro_f1",
               "n_students", "student_accuracy", "n_attributed", "attributed_accuracy"]
    nested = ("students", "confusion", "meta", "student_accuracy_at")
    rows = []
    for row in result["results"]:
        flat = {k: v for k, v in row.items() if k not in nested}
        for n, at in (row.get("student_accuracy_at") or {}).items():
            flat[f"student_accuracy_at_{n}"] = at.get("mean")
            flat[f"student_accuracy_at_{n}_std"] = at.get("std")
        rows.append(flat)
    for flat in rows:
        columns += [k for k in flat if k not in columns]
    return pd.DataFrame(rows, columns=columns)


def file_digest(path: str | os.PathLike) -> dict[str, str]:
    """Name and SHA-256 of an input file, for reports (no absolute paths)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"name": Path(path).name, "sha256": digest.hexdigest()}


__all__ = ["fit_reference", "rank_student", "evaluate", "results_table", "file_digest",
           "read_records", "RecordReader"]
