"""Surface similarity between student and teacher outputs: bag-of-words cosine and ROUGE.

Both compare a student output with the teacher's reference for the same id (by id, never
by row position), or with the best-matching reference of that teacher when none shares
the id. They need no model and no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import baseline_error, missing_dependency
from ..io import Record
from ._common import (
    BaselineScores,
    candidate_sets,
    check_records,
    max_over_sets,
    prepare_texts,
    progress,
    versions,
)

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def _bow_cosine(ref_texts: Sequence[str], stu_texts: Sequence[str]) -> np.ndarray:
    """Cosine between lower-cased word-count vectors, shape (n_students, n_references); in [0, 1]."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize as l2

    vectorizer = CountVectorizer(lowercase=True, token_pattern=r"(?u)\b\w+\b")
    vectorizer.fit(list(ref_texts) + list(stu_texts))
    refs = l2(vectorizer.transform(ref_texts).astype(float))
    stus = l2(vectorizer.transform(stu_texts).astype(float))
    return np.asarray((stus @ refs.T).todense())


def run_cosine(references: Sequence[Record], students: Sequence[Record], *, alignment: str = "auto",
               normalize: bool = True, **_: Any) -> BaselineScores:
    """Bag-of-words cosine similarity of each student output to each teacher (higher = more likely).

    Range [0, 1]; an empty text scores 0 against everything.
    """
    classes = check_records(references, students)
    sets, info = candidate_sets(references, students, classes, alignment)
    pair = _bow_cosine(prepare_texts(references, normalize), prepare_texts(students, normalize))
    meta = {**info, "normalize": normalize, "vectorizer": "CountVectorizer(lowercase, words)",
            "score": "cosine of word counts (higher = more likely the teacher)", "versions": versions()}
    return BaselineScores("cosine", classes, max_over_sets(pair, sets), meta)


def run_rouge(references: Sequence[Record], students: Sequence[Record], *, rouge_type: str = "rougeL",
              alignment: str = "auto", shortlist: int = 20, normalize: bool = True,
              use_stemmer: bool = True, show_progress: bool = True, name: str = "rouge",
              **_: Any) -> BaselineScores:
    """ROUGE F-measure of each student output against each teacher (higher = more likely).

    Parameters
    ----------
    rouge_type : {"rougeL", "rouge1", "rouge2"}, default="rougeL"
        ROUGE-L (longest common subsequence) F by default; the ``rouge`` baseline.
    shortlist : int, default=20
        For best-match pairs, ROUGE (pure Python, about 1 ms a pair) is computed only on
        the ``shortlist`` references of that teacher closest by bag-of-words cosine; 0
        means all references (exact, slow).

    Returns
    -------
    BaselineScores
        F-measure in [0, 1]; the student is the prediction (``score(target=reference,
        prediction=student)``).
    """
    try:
        from rouge_score import rouge_scorer
    except ImportError as err:
        raise missing_dependency("rouge-score", "baselines") from err
    if rouge_type not in ROUGE_TYPES:
        raise baseline_error("E507", name="rouge_type", expected=" or ".join(ROUGE_TYPES), got=rouge_type)
    if not isinstance(shortlist, int) or shortlist < 0:
        raise baseline_error("E507", name="shortlist", expected="an integer >= 0", got=shortlist)
    classes = check_records(references, students)
    sets, info = candidate_sets(references, students, classes, alignment)
    ref_texts = prepare_texts(references, normalize)
    stu_texts = prepare_texts(students, normalize)
    if shortlist:
        cos = _bow_cosine(ref_texts, stu_texts)
        sets = [[idx if len(idx) <= shortlist else idx[np.argsort(-cos[i, idx], kind="stable")[:shortlist]]
                 for idx in row] for i, row in enumerate(sets)]
    scorer = rouge_scorer.RougeScorer([rouge_type], use_stemmer=use_stemmer)
    scores = np.empty((len(students), len(classes)))
    for i in progress(range(len(students)), desc=rouge_type, enabled=show_progress):
        cache: dict[int, float] = {}
        for j, cand in enumerate(sets[i]):
            for k in cand.tolist():
                if k not in cache:
                    cache[k] = scorer.score(ref_texts[k], stu_texts[i])[rouge_type].fmeasure
            scores[i, j] = max(cache[k] for k in cand.tolist())
    meta = {**info, "normalize": normalize, "rouge_type": rouge_type, "use_stemmer": use_stemmer,
            "shortlist": shortlist, "score": f"{rouge_type} F-measure (higher = more likely the teacher)",
            "versions": versions()}
    return BaselineScores(name, classes, scores, meta)
