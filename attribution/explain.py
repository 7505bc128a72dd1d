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

import unicodedata
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .errors import model_error

if TYPE_CHECKING:  # inference builds on this module
    from .estimator import TeacherAttributor
    from .features import SequenceNgramVectorizer
    from .inference import StudentEvidence
    from .verdicts import Verdict

#: Columns of :func:`templates`.
TEMPLATE_COLUMNS = ["teacher", "block", "feature", "weight", "n_outputs", "share_of_outputs", "reference_share",
                    "examples"]
#: PoS tags for punctuation, brackets, symbols and layout whose names are not themselves punctuation
#: (``,``, ``.``, ``:``, quotes, ``$`` and ``#`` are caught by their characters).
NON_CONTENT_TAGS = frozenset({"-LRB-", "-RRB-", "HYPH", "NFP", "SYM", "PUNCT", "_SP", "SP", "SPACE"})
#: Fewest content symbols (see :func:`is_content`) of an informative template.
MIN_CONTENT_SYMBOLS = 2


def is_content(symbol: str) -> bool:
    """Whether one symbol of an n-gram says something about wording or syntax: a word, a number or a
    part-of-speech tag, as opposed to punctuation, brackets, symbols or whitespace (a character of
    Unicode category P, S or Z, or a tag in :data:`NON_CONTENT_TAGS`)."""
    if symbol in NON_CONTENT_TAGS:
        return False
    return any(not ch.isspace() and unicodedata.category(ch)[0] not in "PSZ" for ch in symbol)


def is_informative(symbols: Sequence[str]) -> bool:
    """Whether a template is worth showing a reader as evidence: at least :data:`MIN_CONTENT_SYMBOLS`
    of its symbols carry content (:func:`is_content`).

    Punctuation habits (``NN ,``, ``, which``, ``. The``) are real stylistic signal and still count
    in the ranking, but a template made of one word or tag next to punctuation is something every
    teacher writes and a reader cannot check against the teachers' style: shown as top evidence,
    they crowd out the templates that say how a teacher phrases things. Two content symbols is the
    smallest unit of phrasing (a tag bigram such as ``DT NN``; ``DT NN ,`` keeps its comma).
    """
    return sum(is_content(symbol) for symbol in symbols) >= MIN_CONTENT_SYMBOLS


def feature_columns(model: TeacherAttributor) -> list[tuple[str, SequenceNgramVectorizer, str]]:
    """``(block, vectorizer, n-gram)`` of each feature column of a fitted model, in column order."""
    return list(_columns(model))


#: Per fitted model, what explaining a student needs that depends on the model alone (its columns, which
#: columns may be shown as evidence, each teacher's relative weights): computed once, not once per student
#: (``rank --group-by`` explains thousands). Kept while the model lives and its fitted parts are the same.
_MODEL_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _per_model(model: TeacherAttributor, key: Any, make: Callable[[], Any]) -> Any:
    """``make()``, remembered for ``model`` under ``key`` until its vectorizers, classifier or reference
    shares are replaced (a refit)."""
    parts = (model.blocks_, *(vec for _, vec in model.blocks_), model.classifier_,
             getattr(model, "reference_share_", None))
    entry: tuple[tuple, dict[Any, Any]] | None = _MODEL_CACHE.get(model)
    if entry is None or len(entry[0]) != len(parts) or any(a is not b for a, b in zip(entry[0], parts)):
        entry = (parts, {})
        _MODEL_CACHE[model] = entry
    store = entry[1]
    if key not in store:
        store[key] = make()
    return store[key]


def _columns(model: TeacherAttributor) -> list[tuple[str, SequenceNgramVectorizer, str]]:
    return _per_model(model, "columns", lambda: [(block, vec, gram) for block, vec in model.blocks_
                                                 for gram in vec.get_feature_names_out()])


def _symbol_columns(model: TeacherAttributor, min_n: int, informative: bool) -> np.ndarray:
    """Per column: ``min_n`` symbols or more (with ``informative``, and :func:`is_informative`)?"""

    def by_symbols() -> np.ndarray:
        symbols = [vec.split(gram) for _, vec, gram in _columns(model)]
        return np.fromiter((len(s) >= min_n and (not informative or is_informative(s)) for s in symbols),
                           dtype=bool, count=len(symbols))

    return _per_model(model, ("symbols", min_n, informative), by_symbols)


def _shown_columns(model: TeacherAttributor, teacher: str, min_n: int, informative: bool) -> np.ndarray:
    """Per column: may it be shown as evidence for ``teacher`` (``min_n`` symbols or more; with
    ``informative``, :func:`is_informative` and :func:`distinctive`)?"""

    def make() -> np.ndarray:
        mask = _symbol_columns(model, min_n, informative)
        distinct = distinctive(model, teacher) if informative else None
        return mask if distinct is None else mask & distinct

    return _per_model(model, ("shown", teacher, min_n, informative), make)


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
              min_n: int = 2, informative: bool = True) -> pd.DataFrame:
    """The templates that pushed this student towards ``teacher`` (default: the top one).

    ``weight`` is the feature's summed contribution to the teacher's logit over all
    outputs, relative to the average teacher (higher means more evidence for it).
    Only n-grams of at least ``min_n`` symbols are listed: single tags such as ``NN``
    contribute too, but say little a reader can check; with ``informative`` (default), only
    templates with two or more content symbols (:func:`is_informative`: not ``NN ,`` or ``, which``)
    that are more frequent in ``teacher``'s references than in any other candidate's (:func:`distinctive`).
    ``share_of_outputs`` is the share of the student's outputs that contain the template and
    ``reference_share`` the same share in each candidate teacher's references (``{teacher: share}``;
    ``None`` for a model saved before it was kept): the two, side by side, are what a reader checks.
    """
    if teacher is None:
        teacher = evidence.ranking().iloc[0]["teacher"]
    return pd.DataFrame(_template_rows(evidence, teacher, top=top, min_n=min_n, informative=informative),
                        columns=TEMPLATE_COLUMNS)


def _template_rows(evidence: StudentEvidence, teacher: str, *, top: int, min_n: int,
                   informative: bool) -> list[dict[str, Any]]:
    """The rows of :func:`templates`, as dicts."""
    model = evidence.model
    weights = _per_model(model, ("relative_coef", teacher), lambda: relative_coef(model, teacher))
    contribution = evidence.feature_sums * weights
    candidates = np.flatnonzero((contribution > 0) & _shown_columns(model, teacher, min_n, informative))
    if len(candidates) > top > 0:  # only those that can be among the first ``top`` (ties included) are sorted
        cut = np.partition(contribution[candidates], len(candidates) - top)[len(candidates) - top]
        candidates = candidates[contribution[candidates] >= cut]
    columns = _columns(model)
    order = sorted(candidates.tolist(), key=lambda j: (-contribution[j], f"{columns[j][0]}:{columns[j][2]}"))[:top]
    spans = evidence.examples(order)
    rows = []
    for j in order:
        block, vec, feature = columns[j]
        shown = spans.get(j, [] if vec.explained_by_words else [feature])
        rows.append({"teacher": teacher, "block": block, "feature": feature,
                     "weight": float(contribution[j]), "n_outputs": int(evidence.feature_outputs[j]),
                     "share_of_outputs": float(evidence.feature_outputs[j] / evidence.n_outputs),
                     "reference_share": _reference_share(model, j), "examples": list(shown)})
    return rows


def distinctive(model: TeacherAttributor, teacher: str) -> np.ndarray | None:
    """Per feature: is it used by a larger share of ``teacher``'s references than of any other
    candidate's? ``None`` for a model saved without reference shares.

    A classifier's weights are shared out among correlated features, so a template can push a
    student towards one teacher while another candidate actually writes it more often. Shown as
    evidence, such a template contradicts itself in the side-by-side table ("typical of ChatGPT",
    but in 79% of Cohere's outputs against 54% of ChatGPT's). Evidence shown to a reader is limited to
    templates the named teacher writes more often than every other candidate; they still all count in
    the ranking.
    """
    share = model.reference_share_
    if share is None:
        return None
    k = model.classes_.tolist().index(teacher)
    others = np.delete(share, k, axis=0)
    return share[k] > (others.max(axis=0) if len(others) else -1.0)


def _reference_share(model: TeacherAttributor, column: int) -> dict[str, float] | None:
    """``{teacher: share of its references holding the feature}``, or None for an older model file."""
    share = model.reference_share_
    if share is None:
        return None
    return {teacher: float(share[k, column]) for k, teacher in enumerate(model.classes_.tolist())}


def combined_templates(evidence: dict[str | None, StudentEvidence], teacher: str, *,
                       top: int = 10, informative: bool = True) -> list[dict[str, Any]]:
    """The strongest templates behind ``teacher`` over every task of a student (each row with its
    ``task``), strongest first (ties: by feature); ``informative`` as in :func:`templates`."""
    rows: list[dict[str, Any]] = []
    for task, ev in evidence.items():
        found = _template_rows(ev, teacher, top=top, min_n=2, informative=informative)
        rows.extend({**row, "task": task} for row in found)
    rows.sort(key=lambda row: (-row["weight"], row["feature"]))
    return rows[:top]


#: Family-wise level at which a contrasting template separates the named teacher from its runner-up.
CONTRAST_ALPHA = 0.05
#: Keys of each row of a contrast's ``templates`` (:func:`contrast`).
CONTRAST_COLUMNS = ["task", "block", "feature", "log_odds", "n_outputs", "student_rate", "teacher_rate",
                    "runner_up_rate", "p_references", "p_student", "separates", "examples"]


def log_odds_weights(model: TeacherAttributor, teacher: str, rival: str) -> tuple[np.ndarray, float]:
    """The classifier's log-odds of ``teacher`` over ``rival`` as a linear function of one output's features:
    ``(coefficients, intercept)``, so that ``log p(teacher | x) - log p(rival | x) = coefficients @ x +
    intercept`` exactly (multinomial logistic regression; a binary model's one row split symmetrically)."""
    def make() -> tuple[np.ndarray, float]:
        coef = relative_coef(model, teacher) - relative_coef(model, rival)
        intercept = np.asarray(model.classifier_.intercept_, dtype=float)
        if intercept.shape[0] == 1:
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
        classes = model.classes_.tolist()
        return coef, float(intercept[classes.index(teacher)] - intercept[classes.index(rival)])

    return _per_model(model, ("log_odds", teacher, rival), make)


def contrast(evidence: dict[str | None, StudentEvidence], teacher: str, runner_up: str, *, top: int = 10,
             informative: bool = True, alpha: float = CONTRAST_ALPHA,
             runner_up_source: str = "paired test") -> dict[str, Any]:
    """The templates that set ``teacher`` apart from ``runner_up`` in this student's outputs, and whether
    that evidence is weak.

    **What is decomposed.** The templates of :func:`templates` explain the *ranking*: what pulled the
    student towards a teacher relative to the average candidate. A template every strong candidate writes
    (list numbering) can top that list and still say nothing about the *verdict*, which names a teacher
    over its runner-up. Here each template's weight is its share of the student's summed log-odds of
    ``teacher`` over ``runner_up`` under the classifier: ``(w_teacher - w_runner_up)[j] * sum of x[j]``
    over the outputs (``log_odds``). The log-odds is linear in the features, so these shares add up
    exactly, with the intercepts' share, to the whole gap (``log_odds`` of the result); they need only
    the sums the evidence keeps, and exist whatever test decided (paired, unlisted-teacher, control).
    The paired test's own statistic (cosines to each candidate's answer) has no such exact per-feature
    split without keeping every output's features, so it is not the one decomposed; the rates below
    check the same thing on counts an auditor can verify.

    **Which templates.** Those used by the student that push towards ``teacher`` (positive ``log_odds``)
    and, when the model file keeps the rates, that ``teacher``'s references use more often than
    ``runner_up``'s (others contradict themselves); with ``informative``, two content symbols or more
    (:func:`is_informative`). The ``top`` largest are shown, with the student's, the teacher's and the
    runner-up's rates (share of outputs using the template) and example spans.

    **Separates.** A template separates the two when (1) the references tell them apart: one-sided Fisher
    exact test that ``teacher``'s references use it more often than ``runner_up``'s (``p_references``;
    needs the reference counts, kept by model files of this version); (2) the student uses it more often
    than ``runner_up``'s references do: the same test between the student's outputs and the runner-up's
    references (``p_student``; without the counts, a one-sided binomial test against the runner-up's rate
    taken as exact); and (3) the student's rate is nearer the teacher's than the runner-up's. Both p-values
    are Bonferroni-adjusted over every eligible template (``n_tested``), not only those shown: the shown
    ones were chosen on the same counts.

    **Weak.** ``weak`` is true, with its ``weak_reasons``, when no shown template separates at ``alpha``
    (family-wise), when the classifier's summed log-odds does not favour ``teacher`` at all, or when no
    eligible template exists. Too few student outputs show as large ``p_student`` values, so weak.
    """
    from scipy import stats

    rows: list[dict[str, Any]] = []
    gap, n_outputs, n_tested, have_counts, have_rates = 0.0, 0, 0, True, True
    for task, ev in evidence.items():
        model = ev.model
        classes = model.classes_.tolist()
        if teacher not in classes or runner_up not in classes or ev.n_outputs == 0:
            continue
        coef, intercept = log_odds_weights(model, teacher, runner_up)
        contribution = coef * ev.feature_sums
        gap += float(contribution.sum() + ev.n_outputs * intercept)
        n_outputs += ev.n_outputs
        share = model.reference_share_
        counts = getattr(model, "reference_count_", None)
        kt, kr = classes.index(teacher), classes.index(runner_up)
        eligible = (contribution > 0) & _symbol_columns(model, 2, informative)
        if share is None:
            have_rates = False
        else:
            eligible &= share[kt] > share[kr]
        have_counts &= counts is not None
        candidates = np.flatnonzero(eligible)
        n_tested += len(candidates)
        if len(candidates) > top > 0:
            cut = np.partition(contribution[candidates], len(candidates) - top)[len(candidates) - top]
            candidates = candidates[contribution[candidates] >= cut]
        columns = _columns(model)
        order = sorted(candidates.tolist(), key=lambda j: (-contribution[j], f"{columns[j][0]}:{columns[j][2]}"))
        spans = ev.examples(order[:top])
        for j in order[:top]:
            block, vec, feature = columns[j]
            rate_t = float(share[kt, j]) if share is not None else None
            rate_r = float(share[kr, j]) if share is not None else None
            rows.append({"task": task, "block": block, "feature": feature, "log_odds": float(contribution[j]),
                         "n_outputs": int(ev.feature_outputs[j]),
                         "student_rate": float(ev.feature_outputs[j] / ev.n_outputs),
                         "teacher_rate": rate_t, "runner_up_rate": rate_r,
                         "_n": ev.n_outputs, "_counts": None if counts is None else (int(counts[kt]), int(counts[kr])),
                         "examples": list(spans.get(j, [] if vec.explained_by_words else [feature]))})
    rows.sort(key=lambda row: (-row["log_odds"], row["feature"]))
    rows = rows[:max(top, 0)]
    for row in rows:
        row.update(_separation(row, n_tested, alpha, stats))
    shown = sum(row["log_odds"] for row in rows)
    n_separating = sum(bool(row["separates"]) for row in rows)
    reasons = _weak_reasons(teacher, runner_up, gap, rows, n_separating, n_tested, alpha, have_rates, have_counts)
    return {"teacher": teacher, "runner_up": runner_up, "runner_up_source": runner_up_source,
            "n_outputs": n_outputs, "log_odds": gap, "mean_log_odds": gap / n_outputs if n_outputs else None,
            "shown_log_odds": shown, "shown_share": shown / gap if gap > 0 else None, "n_tested": n_tested,
            "n_separating": n_separating, "alpha": alpha, "weak": bool(reasons), "weak_reasons": reasons,
            "templates": [{key: row[key] for key in CONTRAST_COLUMNS} for row in rows]}


def _separation(row: dict[str, Any], n_tested: int, alpha: float, stats: Any) -> dict[str, Any]:
    """``p_references``, ``p_student`` (Bonferroni over ``n_tested``) and ``separates`` of one row."""
    k, n = row["n_outputs"], row.pop("_n")
    counts = row.pop("_counts")
    rate_t, rate_r, rate_s = row["teacher_rate"], row["runner_up_rate"], row["student_rate"]
    if rate_t is None or rate_r is None:
        return {"p_references": None, "p_student": None, "separates": False}
    adjust = max(n_tested, 1)
    if counts is not None and min(counts) > 0:  # Fisher exact tests (one-sided): two samples each
        n_t, n_r = counts
        c_t, c_r = round(rate_t * n_t), round(rate_r * n_r)
        p_references: float | None = min(1.0, adjust * float(stats.hypergeom.sf(c_t - 1, n_t + n_r, c_t + c_r,
                                                                                n_t)))
        p_student = min(1.0, adjust * float(stats.hypergeom.sf(k - 1, n + n_r, k + c_r, n)))
    else:  # without the counts, the runner-up's rate taken as exact
        p_references = None
        p_student = min(1.0, adjust * float(stats.binom.sf(k - 1, n, rate_r)))
    nearer = abs(rate_s - rate_t) < abs(rate_s - rate_r)
    separates = nearer and p_student < alpha and (p_references is None or p_references < alpha)
    return {"p_references": p_references, "p_student": p_student, "separates": bool(separates)}


def _weak_reasons(teacher: str, runner_up: str, gap: float, rows: list[dict[str, Any]], n_separating: int,
                  n_tested: int, alpha: float, have_rates: bool, have_counts: bool) -> list[str]:
    """Why the contrast between ``teacher`` and ``runner_up`` is weak evidence (empty: it is not)."""
    reasons = []
    if gap <= 0:
        reasons.append(f"the classifier's summed log-odds of {teacher} over {runner_up} on these outputs is "
                       f"{gap:.3g}, not in {teacher}'s favour")
    if not have_rates:
        reasons.append("the model file keeps no reference rates, so no template can be checked against the "
                       "references")
    elif not rows:
        reasons.append(f"no template that {teacher}'s references use more often than {runner_up}'s pulls these "
                       f"outputs towards {teacher}")
    elif n_separating == 0:
        refs = sum(row["p_references"] is not None and row["p_references"] >= alpha for row in rows)
        student = sum(row["p_student"] is None or row["p_student"] >= alpha for row in rows)
        nearer = sum(abs(row["student_rate"] - row["teacher_rate"]) >= abs(row["student_rate"] - row["runner_up_rate"])
                     for row in rows)
        why = [f"the references do not tell the two apart on {refs}" if have_counts else
               "the references' counts are not in this model file (judged on the student's side)",
               f"the student does not use {student} more often than {runner_up}'s references do",
               f"the student's rate is nearer {runner_up}'s on {nearer}"]
        reasons.append(f"none of the {len(rows)} templates shown separates {teacher} from {runner_up} at "
                       f"{alpha} over {n_tested} templates tested: {', '.join(why)}")
    return reasons


def verdict_contrast(evidence: dict[str | None, StudentEvidence], verdict: Verdict,
                     ranking: Sequence[dict[str, Any]], *, top: int = 10,
                     informative: bool = True) -> dict[str, Any] | None:
    """:func:`contrast` of the verdict's teacher (the best candidate when none is named) and its runner-up:
    the verdict's ``runner_up`` (the rival behind the paired or control test; a family stands for its
    best-ranked version), else, when no test named one (the unlisted-teacher test, several tasks), the
    ranking's next teacher (``runner_up_source``: ``"paired test"`` or ``"ranking"``). ``None`` without a
    rival or with ``top`` 0."""
    teacher = verdict.teacher or verdict.best_candidate
    if not teacher or top <= 0:
        return None
    named, source = verdict.runner_up, "control test" if verdict.is_control else "paired test"
    if not named:
        named, source = None, "ranking"
    rival = next((str(row["teacher"]) for row in ranking if str(row["teacher"]) != teacher
                  and (named is None or named in (row["teacher"], row.get("family")))), None)
    if rival is None:
        return None
    return contrast(evidence, str(teacher), rival, top=top, informative=informative, runner_up_source=source)


__all__ = ["CONTRAST_ALPHA", "CONTRAST_COLUMNS", "MIN_CONTENT_SYMBOLS", "NON_CONTENT_TAGS", "TEMPLATE_COLUMNS",
           "combined_templates", "contrast", "distinctive", "examples", "feature_columns", "is_content",
           "is_informative", "log_odds_weights", "relative_coef", "share_of_outputs", "templates",
           "verdict_contrast"]
