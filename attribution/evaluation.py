"""Id-aligned evaluation of attribution scores: per output and per student.

A *student* is the group of student outputs that share a true ``teacher`` (and a
``student`` name when present). Scores are any per-output, per-teacher numbers where
higher means "more likely the teacher" (log-probabilities, similarities, negative
perplexities); a student's verdict is the teacher with the highest mean score.
"""

from __future__ import annotations

import dataclasses
import random
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score

from .errors import baseline_error
from .estimator import DEFAULT_FEATURES, TeacherAttributor
from .evaluation_result import BaselinePredictions, Evaluation, EvaluationRow
from .evaluation_result import results_table as results_table  # re-exported: the table of evaluate
from .inference import unlisted_p_value, verdict
from .io import Record
from .normalize import empty_outputs
from .paired import PairedTest
from .references import check_references, match_students
from .verdicts import VerdictRule

#: Labels per output (teachers, students): a list or an array.
Labels = Sequence[str] | np.ndarray
#: Which outputs count as evidence: a boolean list or array, or None for all.
Mask = Sequence[bool] | np.ndarray | None


def student_key(record: Record) -> str:
    """Which student an output belongs to: ``student/teacher``, the ``teacher`` alone for an unnamed
    student, the ``student`` alone when unlabelled (``?`` when neither is given)."""
    if not record.teacher:
        return record.student or "?"
    return f"{record.student}/{record.teacher}" if record.student else record.teacher


def evidence_mask(groups: Labels, evidence: Mask) -> np.ndarray:
    """``evidence`` as a boolean mask, except that a student with no usable output keeps all of them."""
    names = np.asarray(list(groups))
    use = np.ones(len(names), dtype=bool) if evidence is None else np.array(evidence, dtype=bool)
    for group in set(names.tolist()) - set(names[use].tolist()):
        use[names == group] = True
    return use


def student_verdicts(scores: np.ndarray, groups: Labels) -> dict[str, int]:
    """Index of the top-scoring teacher for each group, from the mean of its outputs' scores.

    Ties go to the lower column index, i.e. alphabetically first teacher.
    """
    names = np.asarray(groups)
    verdicts = {}
    for group in sorted(set(names.tolist())):
        mean = np.asarray(scores[names == group], dtype=float).mean(axis=0)
        verdicts[group] = int(np.argmax(mean))
    return verdicts


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the teachers present in ``y_true`` (predictions of absent teachers are
    simply wrong; sklearn warns about them, which is expected when only some students are evaluated)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y_true, y_pred))


def score_attribution(y_true: Labels, scores: np.ndarray, classes: Sequence[str],
                      groups: Labels, *, features: str, task: str | None = None,
                      evidence: Mask = None) -> dict[str, Any]:
    """Metrics for one feature set (or baseline) on one task.

    Parameters
    ----------
    y_true : sequence of str
        True teacher of each student output.
    scores : ndarray of shape (n_outputs, n_teachers)
        Higher means more likely; columns follow ``classes``.
    classes : sequence of str
        Candidate teachers, in column order.
    groups : sequence of str
        Student of each output (see :func:`student_key`).
    features : str
        Name of the feature set or baseline, echoed in the result.
    evidence : sequence of bool, optional
        Which outputs count towards their student's verdict (default: all). Outputs with
        no text left after normalization are scored per output but carry no evidence.

    Returns
    -------
    dict
        ``features``, ``task``, ``n_outputs``, ``accuracy``, ``balanced_accuracy``, ``macro_f1``,
        ``n_students``, ``student_accuracy``, ``students`` (verdict per student) and
        ``confusion`` (``{true: {predicted: count}}``).
    """
    scores = np.asarray(scores, dtype=float)
    classes = list(classes)
    truth_of = np.asarray(list(y_true))
    if scores.shape != (len(y_true), len(classes)):
        raise ValueError(f"scores has shape {scores.shape}, expected {(len(y_true), len(classes))}")
    y_pred = np.asarray(classes)[np.argmax(scores, axis=1)]
    labels = sorted(set(classes) | set(truth_of.tolist()))
    matrix = confusion_matrix(truth_of, y_pred, labels=labels)
    confusion = {t: {p: int(matrix[i, j]) for j, p in enumerate(labels) if matrix[i, j]}
                 for i, t in enumerate(labels) if matrix[i].sum()}
    names = np.asarray(list(groups))
    use = evidence_mask(names, evidence)
    verdicts = student_verdicts(scores[use], names[use])
    truth = {g: t for g, t in zip(names, truth_of.tolist())}
    students = {g: {"true": truth[g], "predicted": classes[i]} for g, i in verdicts.items()}
    correct = [s["true"] == s["predicted"] for s in students.values()]
    return {
        "features": features,
        "task": task,
        "n_outputs": int(len(truth_of)),
        "accuracy": float(np.mean(y_pred == truth_of)),
        "balanced_accuracy": _balanced_accuracy(truth_of, y_pred),
        "macro_f1": float(f1_score(truth_of, y_pred, labels=sorted(set(truth_of.tolist())),
                                   average="macro", zero_division=0)),
        "n_students": len(students),
        "student_accuracy": float(np.mean(correct)) if correct else float("nan"),
        "students": students,
        "confusion": confusion,
    }


def student_accuracy_at(scores: np.ndarray, classes: Sequence[str], y_true: Labels,
                        groups: Labels, n_outputs: int, *, draws: int = 20,
                        random_state: int = 0) -> dict[str, float]:
    """Share of students attributed correctly when each is judged from ``n_outputs`` random outputs.

    Returns the mean and standard deviation over ``draws`` random subsets (seeded).
    """
    rng = np.random.default_rng(random_state)
    names = np.asarray(groups)
    truth = np.asarray(y_true)
    per_draw = []
    for _ in range(draws):
        hits = []
        for group in sorted(set(names.tolist())):
            idx = np.flatnonzero(names == group)
            pick = rng.choice(idx, size=min(n_outputs, len(idx)), replace=False)
            verdict = classes[int(np.argmax(scores[pick].mean(axis=0)))]
            hits.append(verdict == truth[idx[0]])
        per_draw.append(np.mean(hits))
    return {"n_outputs": n_outputs, "draws": draws, "mean": float(np.mean(per_draw)),
            "std": float(np.std(per_draw))}


def expected_calibration_error(proba: np.ndarray, y_true: Labels, classes: Sequence[str],
                               n_bins: int = 10) -> float:
    """Gap between confidence and accuracy of the top prediction, averaged over equal-width bins.

    0 means the per-output probabilities can be read at face value; the released data shows
    how far a classifier fitted on teachers drifts on students.
    """
    proba = np.asarray(proba, dtype=float)
    confidence = proba.max(axis=1)
    correct = np.asarray(classes)[proba.argmax(axis=1)] == np.asarray(list(y_true))
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    gap = 0.0
    for b in range(n_bins):
        inside = bins == b
        if inside.any():
            gap += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(gap)


# -- the paper's protocol: fit on teachers' outputs, attribute labelled student outputs ----------------
#: Feature sets compared by ``evaluate`` when none are named: the paper's two presets and our default.
DEFAULT_EVAL_FEATURES = ("pos-paper", "ngram-paper", DEFAULT_FEATURES)


def evaluate(references: Sequence[Record], students: Sequence[Record], *,
             features: Sequence[str] = DEFAULT_EVAL_FEATURES, subsets: Sequence[int] = (10, 25),
             draws: int = 20, random_state: int = 0, baselines: Sequence[str] = (),
             baseline_options: dict[str, Any] | None = None, base_correction: bool = False,
             per_task: bool = True, tests: str | VerdictRule = "either", alpha: float | None = None,
             **params: Any) -> Evaluation:
    """The paper's protocol: fit on teacher outputs, predict each student output, per task.

    Feature sets and baselines go through the same path and give rows of the same type
    (:class:`~attribution.evaluation_result.EvaluationRow`), tasks in the order they first appear
    among the students. Every student output must carry its true ``teacher``, and that teacher must
    be among the references of its task (else :class:`~attribution.errors.InputError` naming the file
    and line). Outputs with no text after normalization are scored per output but are no evidence for
    their student's verdict (:func:`attribution.normalize.is_empty`). Texts are tagged once and shared
    by all feature sets.

    With ``base_correction``, each feature set gets a second row, ``NAME+base-correction``, whose
    scores are shifted by the students' shared style (see :func:`base_style`). It assumes the students
    share a base model and that each teacher taught about one of them, as in the paper's protocol;
    it has no unlisted-teacher verdicts. ``per_task=False`` pools all tasks (rows with task None).
    ``tests`` and ``alpha``: the rule of each student's verdict (:class:`~attribution.verdicts.VerdictRule`, or
    its name), as for ``rank``.
    ``baseline_options`` go to :func:`attribution.baselines.run_baseline`; ``params`` to
    :class:`~attribution.estimator.TeacherAttributor`.

    Returns
    -------
    Evaluation
        ``rows``: one per (task, feature set or baseline), see
        :class:`~attribution.evaluation_result.EvaluationRow`; ``to_dict()``, ``to_frame()``.
    """
    if not per_task:
        references = [dataclasses.replace(r, task=None) for r in references]
        students = [dataclasses.replace(r, task=None) for r in students]
    rule = VerdictRule.of(tests, alpha)  # a wrong rule fails before any fitting
    students, _ = match_students(references, students)  # every task checked before fitting any model
    if features:  # a classifier needs a few references per teacher; a baseline compares with any
        check_references(references, normalize=params.get("normalize", True))
    ref_tasks = _by_task(references)
    protocol: dict[str, Any] = {"subsets": subsets, "draws": draws, "random_state": random_state}
    rows: list[EvaluationRow] = []
    for task, studs in _by_task(students).items():
        for name in features:
            rows.extend(_feature_rows(name, task, ref_tasks[task], studs, protocol, base_correction, params, rule))
        for name in baselines:
            rows.append(_baseline_row(name, task, ref_tasks[task], studs, protocol, baseline_options or {}))
    return Evaluation(rows)


def evaluate_baseline(name: str, references: Sequence[Record], students: Sequence[Record], *,
                      per_task: bool = True, subsets: Sequence[int] = (10, 25), draws: int = 20,
                      random_state: int = 0, **options: Any) -> list[EvaluationRow]:
    """One baseline scored like the feature sets: the rows of
    ``evaluate(references, students, features=(), baselines=[name], ...)`` (one per task, the same fields).

    ``options`` go to :func:`attribution.baselines.run_baseline`; with ``per_task`` references of a task are only
    compared with students of the same task.

    Raises
    ------
    BaselineError
        A student has no ``teacher`` label (E511), or as :func:`attribution.baselines.run_baseline`.
    """
    unlabeled = [s for s in students if not s.teacher]
    if unlabeled:
        first = unlabeled[0]
        where = f"{first.source}:{first.line}" if first.source else first.key
        raise baseline_error("E511", n=len(unlabeled), where=where)
    return evaluate(references, students, features=(), baselines=[name], baseline_options=options,
                    per_task=per_task, subsets=subsets, draws=draws, random_state=random_state).rows


def predict_baseline(name: str, references: Sequence[Record], students: Sequence[Record], *,
                     per_task: bool = True, **options: Any) -> BaselinePredictions:
    """One baseline on unlabelled students: each output's scores and top teacher, and a verdict per
    student (the teacher with the highest mean score over its outputs that are evidence: outputs with no
    text after normalization are left out, see :func:`attribution.normalize.is_empty`).

    Students are grouped by :func:`student_key`, per task with ``per_task`` (key ``TASK/STUDENT``).
    """
    from .baselines import run_baseline, split_by_task

    tasks = split_by_task(references, students) if per_task else {None: (list(references), list(students))}
    outputs: list[dict[str, Any]] = []
    verdicts: dict[str, dict[str, Any]] = {}
    metas: dict[str, Any] = {}
    for task, (task_refs, task_studs) in tasks.items():
        result = run_baseline(name, task_refs, task_studs, **options)
        metas[str(task)] = result.meta
        for record, row in zip(task_studs, result.scores):
            outputs.append({"id": record.key, "task": task, "predicted": result.classes[int(np.argmax(row))],
                            "scores": dict(zip(result.classes, row.tolist()))})
        groups = np.asarray([f"{task}/{student_key(r)}" if task else student_key(r) for r in task_studs])
        empty = np.asarray(empty_outputs([r.output for r in task_studs], normalize=options.get("normalize", True)))
        use = evidence_mask(groups, ~empty)
        for key in dict.fromkeys(groups.tolist()):
            mine = groups == key
            mean = result.scores[mine & use].mean(axis=0)
            verdicts[key] = {"verdict": result.classes[int(np.argmax(mean))],
                             "n_outputs": int((mine & use).sum()), "n_empty": int((mine & empty).sum()),
                             "mean_scores": dict(zip(result.classes, mean.tolist()))}
    return BaselinePredictions(name, outputs, verdicts, metas)


def select_students(students: Sequence[Record], *, drop_empty: bool = False, normalize: bool = True,
                    limit: int = 0, random_state: int = 0) -> tuple[list[Record], int]:
    """The student outputs to score, and how many were dropped as empty.

    With ``drop_empty``, outputs with no text after normalization (:func:`attribution.normalize.is_empty`)
    are left out (they tie for every teacher, and ties go to the alphabetically first); with ``limit``,
    a seeded random sample of that many is kept, in file order.
    """
    students = list(students)
    n_empty = 0
    if drop_empty:
        empty = empty_outputs([s.output for s in students], normalize=normalize)
        n_empty = sum(empty)
        students = [s for s, e in zip(students, empty) if not e]
    if limit and len(students) > limit:
        keep = sorted(random.Random(random_state).sample(range(len(students)), limit))
        students = [students[i] for i in keep]
    return students, n_empty


def _feature_rows(name: str, task: str | None, refs: Sequence[Record], studs: Sequence[Record],
                  protocol: dict[str, Any], base_correction: bool, params: dict[str, Any],
                  rule: VerdictRule | None = None) -> list[EvaluationRow]:
    """One feature set on one task: its row (and its base-corrected row)."""
    y_true = [str(r.teacher) for r in studs]
    groups = [student_key(r) for r in studs]
    model = TeacherAttributor(features=name, random_state=protocol["random_state"], **params)
    model.fit([r.output for r in refs], [str(r.teacher) for r in refs], [r.id for r in refs])
    docs = model.prepare([r.output for r in studs])
    scores = np.log(np.clip(model.predict_proba_docs(docs), 1e-12, 1.0))
    has_text = np.array([not doc.is_empty for doc in docs])
    use = evidence_mask(groups, has_text)
    row = _row(y_true, scores, model.classes_.tolist(), groups, name, task, has_text, **protocol)
    _add_verdicts(row, scores[use], np.asarray(groups)[use], model,
                  _paired_scores(model, [d for d, u in zip(docs, use) if u], [r.id for r, u in zip(studs, use) if u]),
                  rule or VerdictRule())
    row.calibration_error = expected_calibration_error(np.exp(scores), y_true, model.classes_)
    if not base_correction:
        return [row]
    corrected = scores - base_style(scores[use], np.asarray(groups)[use])
    extra = _row(y_true, corrected, model.classes_.tolist(), groups, f"{name}+base-correction", task, has_text,
                 **protocol)
    extra.base_correction = True
    return [row, extra]


def _baseline_row(name: str, task: str | None, refs: Sequence[Record], studs: Sequence[Record],
                  protocol: dict[str, Any], options: dict[str, Any]) -> EvaluationRow:
    """One baseline on one task (``attribution.baselines``; model-based ones need the ``baselines`` extra)."""
    from .baselines import run_baseline

    out = run_baseline(name, list(refs), list(studs), **options)
    empty = empty_outputs([r.output for r in studs], normalize=options.get("normalize", True))
    row = _row([str(r.teacher) for r in studs], out.scores, out.classes, [student_key(r) for r in studs], name, task,
               [not e for e in empty], **protocol)
    row.meta = out.meta
    return row


def _row(y_true: Labels, scores: np.ndarray, classes: Sequence[str], groups: Labels, name: str,
         task: str | None, has_text: Sequence[bool] | np.ndarray, *, subsets: Sequence[int], draws: int,
         random_state: int) -> EvaluationRow:
    """The metrics every row has, whatever scored the outputs (``has_text``: which are evidence)."""
    use = evidence_mask(groups, has_text)
    metrics = score_attribution(y_true, scores, classes, groups, features=name, task=task, evidence=use)
    y_used, groups_used = np.asarray(y_true)[use], np.asarray(groups)[use]
    at = {str(n): student_accuracy_at(scores[use], classes, y_used, groups_used, n, draws=draws,
                                      random_state=random_state)
          for n in subsets}
    return EvaluationRow(**metrics, student_accuracy_at=at, n_empty=int(len(has_text) - np.count_nonzero(has_text)))


def base_style(scores: np.ndarray, groups: Labels) -> np.ndarray:
    """The students' shared pull towards some teachers: the mean, over students, of each student's
    mean log-probability vector.

    Students fine-tuned from one base model (GPT-2 in the paper) share its style, which the teacher
    classifier reads as a preference for whichever teacher writes most like that base model. With
    several students of the same base, one per teacher, subtracting this vector leaves what
    distinguishes the students from each other.
    """
    names = np.asarray(groups)
    return np.mean([scores[names == g].mean(axis=0) for g in sorted(set(names.tolist()))], axis=0)


def _paired_scores(model: TeacherAttributor, docs: Sequence[Any], ids: Sequence[str | None]) -> np.ndarray | None:
    """Per-output paired scores (NaN rows where the prompt has no teachers' answers), or ``None``."""
    if model.paired_ is None:
        return None
    return model.paired_.scores_per_output(model.featurize(docs), ids)


def _add_verdicts(row: EvaluationRow, scores: np.ndarray, groups: Labels, model: TeacherAttributor,
                  paired: np.ndarray | None = None, rule: VerdictRule | None = None) -> None:
    """Per student: the verdict's p-values and status (as :func:`rank_student` gives them); per row: how
    often a verdict is given (``n_attributed``) and how often it is right (``attributed_accuracy``, null
    when none is given)."""
    names = np.asarray(groups)
    hits = []
    for group, student in row.students.items():
        mine = names == group
        rows = scores[mine]
        p = unlisted_p_value(rows.mean(axis=0), len(rows), model.unlisted_log_proba_,
                             random_state=model.random_state)
        test = None
        if paired is not None:
            accumulated = PairedTest(model.classes_.tolist())
            accumulated.add(paired[mine])
            test = accumulated.result(student["predicted"])
        v = verdict(student["predicted"], [p], [test], tests=rule or VerdictRule())
        student.update(p_unlisted=v.p_unlisted, p_paired=v.p_paired, p_value=v.p_value, test=v.test, status=v.status)
        if v.status == "attributed":
            hits.append(student["predicted"] == student["true"])
    row.n_attributed = len(hits)
    row.attributed_accuracy = float(np.mean(hits)) if hits else None


def _by_task(records: Sequence[Record]) -> dict[str | None, list[Record]]:
    out: dict[str | None, list[Record]] = {}
    for record in records:
        out.setdefault(record.task, []).append(record)
    return out
