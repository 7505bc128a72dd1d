"""Id-aligned evaluation of attribution scores: per output and per student.

A *student* is the group of student outputs that share a true ``teacher`` (and a
``student`` name when present). Scores are any per-output, per-teacher numbers where
higher means "more likely the teacher" (log-probabilities, similarities, negative
perplexities); a student's verdict is the teacher with the highest mean score.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, f1_score

from .io import Record


def student_key(record: Record) -> str:
    """Which student an output belongs to: ``student/teacher`` (or just ``teacher``)."""
    teacher = record.teacher or "?"
    return f"{record.student}/{teacher}" if record.student else teacher


def evidence_mask(groups: Sequence[str], evidence: Sequence[bool] | None) -> np.ndarray:
    """``evidence`` as a boolean mask, except that a student with no usable output keeps all of them."""
    groups = np.asarray(list(groups))
    use = np.ones(len(groups), dtype=bool) if evidence is None else np.array(evidence, dtype=bool)
    for group in set(groups.tolist()) - set(groups[use].tolist()):
        use[groups == group] = True
    return use


def student_verdicts(scores: np.ndarray, groups: Sequence[str]) -> dict[str, int]:
    """Index of the top-scoring teacher for each group, from the mean of its outputs' scores.

    Ties go to the lower column index, i.e. alphabetically first teacher.
    """
    groups = np.asarray(groups)
    verdicts = {}
    for group in sorted(set(groups.tolist())):
        mean = np.asarray(scores[groups == group], dtype=float).mean(axis=0)
        verdicts[group] = int(np.argmax(mean))
    return verdicts


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the teachers present in ``y_true`` (predictions of absent teachers are
    simply wrong; sklearn warns about them, which is expected when only some students are evaluated)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y_true, y_pred))


def score_attribution(y_true: Sequence[str], scores: np.ndarray, classes: Sequence[str],
                      groups: Sequence[str], *, features: str, task: str | None = None,
                      evidence: Sequence[bool] | None = None) -> dict[str, Any]:
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
    y_true = np.asarray(list(y_true))
    if scores.shape != (len(y_true), len(classes)):
        raise ValueError(f"scores has shape {scores.shape}, expected {(len(y_true), len(classes))}")
    y_pred = np.asarray(classes)[np.argmax(scores, axis=1)]
    labels = sorted(set(classes) | set(y_true.tolist()))
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    confusion = {t: {p: int(matrix[i, j]) for j, p in enumerate(labels) if matrix[i, j]}
                 for i, t in enumerate(labels) if matrix[i].sum()}
    groups = np.asarray(list(groups))
    use = evidence_mask(groups, evidence)
    verdicts = student_verdicts(scores[use], groups[use])
    truth = {g: t for g, t in zip(groups, y_true.tolist())}
    students = {g: {"true": truth[g], "predicted": classes[i]} for g, i in verdicts.items()}
    correct = [s["true"] == s["predicted"] for s in students.values()]
    return {
        "features": features,
        "task": task,
        "n_outputs": int(len(y_true)),
        "accuracy": float(np.mean(y_pred == y_true)),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
        "macro_f1": float(f1_score(y_true, y_pred, labels=sorted(set(y_true.tolist())),
                                   average="macro", zero_division=0)),
        "n_students": len(students),
        "student_accuracy": float(np.mean(correct)) if correct else float("nan"),
        "students": students,
        "confusion": confusion,
    }


def student_accuracy_at(scores: np.ndarray, classes: Sequence[str], y_true: Sequence[str],
                        groups: Sequence[str], n_outputs: int, *, draws: int = 20,
                        random_state: int = 0) -> dict[str, float]:
    """Share of students attributed correctly when each is judged from ``n_outputs`` random outputs.

    Returns the mean and standard deviation over ``draws`` random subsets (seeded).
    """
    rng = np.random.default_rng(random_state)
    groups = np.asarray(groups)
    y_true = np.asarray(y_true)
    per_draw = []
    for _ in range(draws):
        hits = []
        for group in sorted(set(groups.tolist())):
            idx = np.flatnonzero(groups == group)
            pick = rng.choice(idx, size=min(n_outputs, len(idx)), replace=False)
            verdict = classes[int(np.argmax(scores[pick].mean(axis=0)))]
            hits.append(verdict == y_true[idx[0]])
        per_draw.append(np.mean(hits))
    return {"n_outputs": n_outputs, "draws": draws, "mean": float(np.mean(per_draw)),
            "std": float(np.std(per_draw))}


def expected_calibration_error(proba: np.ndarray, y_true: Sequence[str], classes: Sequence[str],
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
