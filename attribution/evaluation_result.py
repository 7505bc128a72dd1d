"""Typed results of evaluation: one row type for feature sets and baselines alike.

:func:`attribution.evaluation.evaluate` returns an :class:`Evaluation` of :class:`EvaluationRow`,
whichever scored the students (a feature set or a baseline), so both carry the same fields in the
same task order; a baseline run on unlabelled students returns :class:`BaselinePredictions`. Each
has ``to_dict()`` (the JSON document the CLI prints) and ``to_frame()`` (a pandas DataFrame).
Rows and results also read like their dicts (``row["accuracy"]``, ``result["results"]``) for code
written against the documents.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any

import pandas as pd

from . import __version__

#: The first columns of :func:`results_table`, in order.
TABLE_COLUMNS = ["task", "features", "n_outputs", "accuracy", "balanced_accuracy", "macro_f1",
                 "n_students", "student_accuracy", "n_attributed", "attributed_accuracy"]


class _DictView:
    """``obj[key]`` and ``obj.get(key)`` read the fields of :meth:`to_dict`."""

    def to_dict(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def keys(self) -> list[str]:
        return list(self.to_dict())


@dataclass
class EvaluationRow(_DictView):
    """One feature set or baseline on one task.

    Attributes
    ----------
    features : str
        The feature set or baseline.
    task : str or None
    n_outputs, accuracy, balanced_accuracy, macro_f1 : per output (empty outputs included: they tie).
    n_students, student_accuracy, students : per student (``{key: {"true", "predicted", ...}}``; feature
        sets add each verdict's p-values and status), from the outputs that are evidence.
    confusion : dict
        ``{true: {predicted: count}}`` per output.
    student_accuracy_at : dict
        ``{"N": {"n_outputs", "draws", "mean", "std"}}``: student accuracy from N random outputs each.
    n_empty : int
        Outputs with no text after normalization (no evidence, see :func:`attribution.normalize.is_empty`).
    n_attributed, attributed_accuracy : int or None, float or None
        How many students a verdict names and how often rightly (feature sets; None for baselines and
        base-corrected rows, which have no verdict test).
    calibration_error : float or None
        Of the per-output probabilities (feature sets; None where scores are not probabilities).
    base_correction : bool
        Scores shifted by the students' shared style (:func:`attribution.evaluation.base_style`).
    meta : dict or None
        A baseline's own details (model, alignment, versions); None for feature sets.
    """

    features: str
    task: str | None
    n_outputs: int
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    n_students: int
    student_accuracy: float
    students: dict[str, dict[str, Any]]
    confusion: dict[str, dict[str, int]]
    student_accuracy_at: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_empty: int = 0
    n_attributed: int | None = None
    attributed_accuracy: float | None = None
    calibration_error: float | None = None
    base_correction: bool = False
    meta: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every field, as in ``evaluate --format json`` (nested values copied)."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}

    def to_frame(self) -> pd.DataFrame:
        """This row as a one-row :func:`results_table`."""
        return results_table({"results": [self.to_dict()]})


@dataclass
class Evaluation(_DictView):
    """The rows of one evaluation: per task (in the order tasks first appear among the students),
    the feature sets, then the baselines."""

    rows: list[EvaluationRow]
    version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        """``{"results": [row, ...], "version": ...}``, the JSON document of ``evaluate``."""
        return {"results": [row.to_dict() for row in self.rows], "version": self.version}

    def to_frame(self) -> pd.DataFrame:
        """One line per row: see :func:`results_table`."""
        return results_table(self)


@dataclass
class BaselinePredictions(_DictView):
    """A baseline on unlabelled students: per-output scores and a verdict per student.

    Attributes
    ----------
    name : str
    outputs : list of dict
        ``id``, ``task``, ``predicted`` and ``scores`` (``{teacher: score}``, higher is more likely).
    students : dict
        ``{key: {"verdict", "n_outputs", "n_empty", "mean_scores"}}``: the teacher with the highest mean
        score over the student's outputs that are evidence (``n_outputs``; ``n_empty`` left out). The key
        is ``TASK/STUDENT`` per task, or the student name.
    meta : dict
        The baseline's details per task.
    """

    name: str
    outputs: list[dict[str, Any]]
    students: dict[str, dict[str, Any]]
    meta: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "outputs": copy.deepcopy(self.outputs), "students": copy.deepcopy(self.students),
                "meta": copy.deepcopy(self.meta)}

    def to_frame(self) -> pd.DataFrame:
        """One line per student: ``student``, ``verdict``, ``n_outputs``, ``n_empty``, then one mean-score
        column per teacher."""
        rows = [{"student": key, "verdict": s["verdict"], "n_outputs": s["n_outputs"], "n_empty": s["n_empty"],
                 **s["mean_scores"]} for key, s in sorted(self.students.items())]
        return pd.DataFrame(rows)


def results_table(result: Evaluation | dict[str, Any]) -> pd.DataFrame:
    """The rows of :func:`~attribution.evaluation.evaluate` as a DataFrame (one line per task and
    feature set or baseline).

    Every figure is a column: :data:`TABLE_COLUMNS` first, then the others (``n_empty``,
    ``calibration_error``, ``base_correction``, ...) by name; ``student_accuracy_at`` becomes
    ``student_accuracy_at_N`` and ``student_accuracy_at_N_std`` per size N. The per-student verdicts and
    the confusion counts (``students``, ``confusion``, ``meta``) stay in the result.
    """
    document = result.to_dict() if isinstance(result, Evaluation) else result
    columns = list(TABLE_COLUMNS)
    nested = ("students", "confusion", "meta", "student_accuracy_at")
    rows = []
    for row in document["results"]:
        flat = {k: v for k, v in row.items() if k not in nested}
        for n, at in (row.get("student_accuracy_at") or {}).items():
            flat[f"student_accuracy_at_{n}"] = at.get("mean")
            flat[f"student_accuracy_at_{n}_std"] = at.get("std")
        rows.append(flat)
    for flat in rows:
        columns += [k for k in flat if k not in columns]
    return pd.DataFrame(rows, columns=columns)
