"""Evidence behind a ranking: which templates pushed a student towards a teacher, with example spans.

A ranking is a sum of per-feature contributions, so it can be explained feature by feature:
:func:`templates` lists the n-grams that contributed most to a teacher's logit over a student's
outputs, how many of them use each, and the words each PoS template covered in the student's own
outputs. Everything is read from a :class:`~attribution.inference.StudentEvidence` (its sums and the
tags of its first outputs) through the vectorizers' public sequence API
(:meth:`~attribution.features.SequenceNgramVectorizer.find_spans`, ``split``, ``explained_by_words``),
so a new kind of feature explains itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import model_error

if TYPE_CHECKING:  # inference builds on this module
    from .estimator import TeacherAttributor
    from .features import SequenceNgramVectorizer
    from .inference import StudentEvidence

#: Columns of :func:`templates`.
TEMPLATE_COLUMNS = ["teacher", "block", "feature", "weight", "n_outputs", "share_of_outputs", "examples"]


def feature_columns(model: TeacherAttributor) -> list[tuple[str, SequenceNgramVectorizer, str]]:
    """``(block, vectorizer, n-gram)`` of each feature column of a fitted model, in column order."""
    return [(block, vec, gram) for block, vec in model.blocks_ for gram in vec.get_feature_names_out()]


def examples(evidence: StudentEvidence, columns: Iterable[int]) -> dict[int, list[str]]:
    """Up to ``n_examples`` distinct word spans per feature column, from the student's first outputs.

    Only for features a reader understands better through the words they cover (PoS templates);
    found on demand, for the few templates a reader sees, rather than for every template while
    streaming.
    """
    blocks = evidence.model.blocks_
    wanted: dict[int, dict[str, int]] = {}  # block -> n-gram -> column
    offset = 0
    for b, (_, vec) in enumerate(blocks):
        names = vec.get_feature_names_out()
        if vec.explained_by_words:
            for j in columns:
                if offset <= j < offset + len(names):
                    wanted.setdefault(b, {})[names[j - offset]] = j
        offset += len(names)
    found: dict[int, list[str]] = {j: [] for grams in wanted.values() for j in grams.values()}
    for doc in evidence.example_docs:
        for b, grams in wanted.items():
            for gram, span in blocks[b][1].find_spans(doc, grams):
                kept = found[grams[gram]]
                if len(kept) < evidence.n_examples and span not in kept:
                    kept.append(span)
    return found


def share_of_outputs(evidence: StudentEvidence, feature: str) -> float:
    """Share of the outputs seen so far that contain ``feature`` (``"block:n-gram"``, as in
    :meth:`TeacherAttributor.get_feature_names_out`): does this student use a template?"""
    if evidence.n_outputs == 0:
        raise model_error("E209")
    names = evidence.model.get_feature_names_out()
    column = np.flatnonzero(names == feature)
    if column.size == 0:
        raise model_error("E211", feature=feature, example=str(names[0]) if names.size else "pos:DT NN")
    return float(evidence.feature_outputs[column[0]] / evidence.n_outputs)


def relative_coef(model: TeacherAttributor, teacher: str) -> np.ndarray:
    """Each feature's weight for ``teacher`` relative to the average teacher (the classifier's
    coefficients; a binary model's one row is split symmetrically between its two classes)."""
    k = model.classes_.tolist().index(teacher)
    coef = model.classifier_.coef_
    if coef.shape[0] == 1:  # binary logistic regression: one row for classes_[1]
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
    return coef[k] - coef.mean(axis=0)


def templates(evidence: StudentEvidence, teacher: str | None = None, *, top: int = 10,
              min_n: int = 2) -> pd.DataFrame:
    """The templates that pushed this student towards ``teacher`` (default: the top one).

    ``weight`` is the feature's summed contribution to the teacher's logit over all
    outputs, relative to the average teacher (higher means more evidence for it).
    Only n-grams of at least ``min_n`` symbols are listed: single tags such as ``NN``
    contribute too, but say little a reader can check.
    """
    if teacher is None:
        teacher = evidence.ranking().iloc[0]["teacher"]
    contribution = evidence.feature_sums * relative_coef(evidence.model, teacher)
    columns = feature_columns(evidence.model)
    candidates = [int(j) for j in np.flatnonzero(contribution > 0) if len(columns[j][1].split(columns[j][2])) >= min_n]
    order = sorted(candidates, key=lambda j: (-contribution[j], f"{columns[j][0]}:{columns[j][2]}"))[:top]
    spans = evidence.examples(order)
    rows = []
    for j in order:
        block, vec, feature = columns[j]
        shown = spans.get(j, [] if vec.explained_by_words else [feature])
        rows.append({"teacher": teacher, "block": block, "feature": feature,
                     "weight": float(contribution[j]), "n_outputs": int(evidence.feature_outputs[j]),
                     "share_of_outputs": float(evidence.feature_outputs[j] / evidence.n_outputs),
                     "examples": list(shown)})
    return pd.DataFrame(rows, columns=TEMPLATE_COLUMNS)


def combined_templates(evidence: dict[str | None, StudentEvidence], teacher: str, *,
                       top: int = 10) -> list[dict[str, Any]]:
    """The strongest templates behind ``teacher`` over every task of a student (each row with its
    ``task``), strongest first (ties: by feature)."""
    rows: list[dict[str, Any]] = []
    for task, ev in evidence.items():
        rows.extend({**row, "task": task} for row in ev.templates(teacher, top=top).to_dict("records"))
    rows.sort(key=lambda row: (-row["weight"], row["feature"]))
    return rows[:top]


__all__ = ["TEMPLATE_COLUMNS", "combined_templates", "examples", "feature_columns", "relative_coef",
           "share_of_outputs", "templates"]
