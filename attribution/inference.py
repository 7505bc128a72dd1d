"""Student-level inference: a student's ranking, its uncertainty and the verdict, from all its outputs.

:class:`StudentEvidence` streams one student's outputs into fixed-size sums (log-probabilities, Poisson
bootstrap replicates, feature counts, the paired test's scores); :func:`rank_teachers` turns the sums
into a ranking with bootstrap support and intervals; :func:`unlisted_p_value` tests whether a teacher
outside the candidates could explain the outputs; :func:`verdict` names a teacher only when a test
rules out the alternatives, and :func:`summarize_evidence` combines the tasks of one student into the
document ``attribute-teacher rank`` prints. Which templates drove a ranking is :mod:`attribution.explain`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import explain
from .errors import model_error
from .families import Hierarchy
from .paired import LOG_ODDS_BINS, MidpointTest, PairedTest
from .tagging import TaggedDoc
from .verdicts import ALPHA, PairedSummary, Verdict, VerdictRule, describe_sequential

if TYPE_CHECKING:  # the estimator builds on this module
    from .estimator import TeacherAttributor

def rank_teachers(classes: Sequence[str], sum_log_proba: np.ndarray, n_outputs: int,
                  boot_sum: np.ndarray | None = None, boot_count: np.ndarray | None = None) -> pd.DataFrame:
    """A student's ranking from its summed evidence: softmax of the mean log-probability; the share
    of bootstrap replicates (rows of ``boot_sum``) that put each teacher first (``support``); and
    the 2.5-97.5 percentile interval of the probability over those replicates (``ci_low``,
    ``ci_high``: how much the probability would move with another sample of the outputs)."""
    columns = _ranking_columns(classes, sum_log_proba, n_outputs, boot_sum, boot_count)
    return pd.DataFrame(columns, columns=["teacher", "probability", "support", "ci_low", "ci_high", "mean_log_proba"])


def _ranking_columns(classes: Sequence[str], sum_log_proba: np.ndarray, n_outputs: int,
                     boot_sum: np.ndarray | None = None, boot_count: np.ndarray | None = None) -> dict[str, list]:
    """:func:`rank_teachers` as columns of plain lists, in its order (probability, then teacher name)
    without pandas: a summary per student of ``rank --group-by`` pays for no DataFrame."""
    mean = np.asarray(sum_log_proba, dtype=float) / n_outputs
    probability = _softmax(mean)
    k = len(classes)
    support, ci_low, ci_high = np.full(k, np.nan), np.full(k, np.nan), np.full(k, np.nan)
    if boot_sum is not None and boot_count is not None and len(boot_sum):
        replicates = boot_sum / np.maximum(boot_count, 1)[:, None]
        support = np.bincount(np.argmax(replicates, axis=1), minlength=k) / len(replicates)
        ci_low, ci_high = np.percentile(_softmax(replicates), [2.5, 97.5], axis=0)
    names = [str(c) for c in classes]
    order = sorted(range(k), key=lambda i: (-probability[i], names[i]))
    return {"teacher": [names[i] for i in order],
            **{name: [float(values[i]) for i in order] for name, values in (
                ("probability", probability), ("support", support), ("ci_low", ci_low), ("ci_high", ci_high),
                ("mean_log_proba", mean))}}


def rank_hierarchy(hierarchy: Hierarchy, sum_log_proba: np.ndarray, family_total: np.ndarray,
                   boot_family: np.ndarray | None, boot_count: np.ndarray | None, n_outputs: int,
                   boot_sum: np.ndarray | None = None) -> pd.DataFrame:
    """:func:`rank_teachers` with families (:mod:`attribution.families`): a teacher's probability is its
    family's (softmax of the families' mean log-probability) times its share within the family (softmax
    of the mean log-probability over the family's teachers in play), so a family's teachers sum to the
    family; ``support`` and the interval come from the same product in each bootstrap replicate. Rows
    are grouped by family, families in the order of their probability, versions by theirs: the first
    row is the best version of the best family (a version of a large family can have a smaller
    probability than a family of one)."""
    h = hierarchy
    column = {f: i for i, f in enumerate(h.families)}
    position = {int(c): j for j, c in enumerate(h.active)}          # class column -> row of the ranking
    rows_of = {f: [position[int(c)] for c in h.members[f]] for f in h.families}

    def product(family_p: np.ndarray, teacher_sums: np.ndarray, count: Any) -> np.ndarray:
        out = np.zeros(family_p.shape[:-1] + (len(h.active),))
        for family, cols in h.members.items():
            share = _softmax(teacher_sums[..., cols] / count)
            out[..., rows_of[family]] = family_p[..., column[family], None] * share
        return out

    family_p = _softmax(np.asarray(family_total, dtype=float) / n_outputs)
    probability = product(family_p, np.asarray(sum_log_proba, dtype=float), n_outputs)
    k = len(h.active)
    support, ci_low, ci_high = np.full(k, np.nan), np.full(k, np.nan), np.full(k, np.nan)
    if boot_family is not None and boot_sum is not None and boot_count is not None and len(boot_family):
        count = np.maximum(boot_count, 1)[:, None]
        replicates = product(_softmax(boot_family / count), boot_sum, count)
        # support: the share of replicates whose best family's best version is this one (the first row)
        in_top = np.zeros_like(replicates, dtype=bool)
        top_family = np.argmax(boot_family, axis=1)
        for f, family in enumerate(h.families):
            in_top[np.ix_(top_family == f, rows_of[family])] = True
        best = np.argmax(np.where(in_top, replicates, -np.inf), axis=1)
        support = np.bincount(best, minlength=k) / len(replicates)
        ci_low, ci_high = np.percentile(replicates, [2.5, 97.5], axis=0)
    teachers = h.active_classes()
    family_rank = {f: r for r, f in enumerate(sorted(h.families, key=lambda f: (-family_p[column[f]], f)))}
    frame = pd.DataFrame({"teacher": teachers, "family": [h.family_of[t] for t in teachers],
                          "probability": probability, "support": support, "ci_low": ci_low, "ci_high": ci_high,
                          "mean_log_proba": np.asarray(sum_log_proba, dtype=float)[h.active] / n_outputs,
                          "_family_rank": [family_rank[h.family_of[t]] for t in teachers]})
    # family first (the order of the family ranking), then the versions within it
    frame = frame.sort_values(["_family_rank", "probability", "teacher"], ascending=[True, False, True],
                              kind="mergesort")
    return frame.drop(columns="_family_rank").reset_index(drop=True)


def _softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis."""
    out = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return out / out.sum(axis=-1, keepdims=True)


def _margin(mean_log_proba: np.ndarray) -> np.ndarray:
    """Lead of the best teacher over the runner-up, in mean log-probability (last axis)."""
    top2 = np.sort(mean_log_proba, axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0]


def unlisted_p_value(mean_log_proba: np.ndarray, n_outputs: int, null: dict[str, np.ndarray], *,
                     n_draws: int = 200, max_outputs: int = 1000, random_state: int = 0) -> float | None:
    """How plausible is it that a teacher *outside* the candidates taught this student?

    A student of a listed teacher should single it out: its best teacher leads the
    runner-up by a clear margin. A student of an unlisted teacher is attributed to
    whichever candidate resembles its teacher most, usually by a smaller margin. The
    null distribution is simulated from the references: each teacher in turn is left
    out, a model is fitted on the others, and groups of ``n_outputs`` of the left-out
    teacher's outputs are scored like a student.

    Returns
    -------
    float or None
        The share of simulated unlisted-teacher students whose margin is at least the
        observed one (add-one smoothed). Small values rule out an unlisted teacher; 0.05
        is the conventional threshold. ``None`` without a null (too few teachers were fitted).
        Groups larger than ``max_outputs`` are simulated at ``max_outputs`` (the null
        margin has settled by then), which makes the test slightly conservative.
    """
    if not null:
        return None
    observed = float(_margin(mean_log_proba))
    rng = np.random.default_rng(random_state)
    size = max(1, min(n_outputs, max_outputs))
    draws = []
    for teacher in sorted(null):
        rows = null[teacher]
        picks = rng.integers(0, len(rows), size=(n_draws, size))
        draws.append(_margin(rows[picks].mean(axis=1)))
    margins = np.concatenate(draws)
    return float((1 + np.sum(margins >= observed)) / (1 + len(margins)))


class StudentEvidence:
    """Accumulate one student's evidence over any number of outputs, in flat memory.

    The verdict multiplies the per-output probabilities (a sum of log-probabilities)
    and renormalizes their geometric mean, so that a student's ranking does not grow
    absurdly confident with the number of outputs: outputs of one student are not
    independent witnesses. How stable the verdict is shows in ``support``, the share
    of Poisson-bootstrap resamples of the outputs that keep each teacher first.

    It also keeps, per feature, how many outputs used it and the first outputs' tags, so
    :meth:`templates` (see :mod:`attribution.explain`) can show which templates drove the decision.

    Parameters
    ----------
    model : TeacherAttributor
        A fitted attributor.
    keep_outputs : bool, default=False
        Also keep each output's probabilities (memory grows with the outputs).
    n_examples : int, default=3
        Example spans kept per template (of two or more symbols).
    max_example_outputs : int, default=256
        Examples are taken from the first outputs only, which bounds their cost.
    """

    def __init__(self, model: TeacherAttributor, *, keep_outputs: bool = False, n_examples: int = 3,
                 max_example_outputs: int = 256, exclude: Iterable[str] = (),
                 control: Mapping[str, np.ndarray] | None = None) -> None:
        model.check_fitted()
        self.model = model
        self.classes = model.classes_.tolist()
        #: families and the candidates in play (``exclude``): see :mod:`attribution.families`
        self.hierarchy = model.hierarchy(exclude)
        k = len(self.classes)
        self.n_outputs = 0
        self.n_empty = 0
        self.sum_log_proba = np.zeros(k)
        self.feature_sums = np.zeros(model.n_features_in_)
        self.feature_outputs = np.zeros(model.n_features_in_, dtype=np.int64)
        self.n_examples = n_examples
        self.max_example_outputs = max_example_outputs
        self.example_docs: list[TaggedDoc] = []
        self._rng = np.random.default_rng(model.random_state)
        self._boot_sum = np.zeros((model.n_bootstrap, k))
        self._boot_count = np.zeros(model.n_bootstrap)
        self.keep_outputs = keep_outputs
        self.outputs: list[np.ndarray] = []
        h = self.hierarchy
        self.sum_family_log_proba = np.zeros(len(h.families))
        self._boot_family = np.zeros((model.n_bootstrap, len(h.families)))
        # the paired test between families (without families or exclusions: between teachers, as always),
        # and between the versions of each family of several (centred on the family's mean answer)
        self._paired_weights = None if h.trivial else h.family_weights
        paired = model.paired_ is not None
        self.paired = PairedTest(h.families) if paired else None
        self.sibling_paired = self._per_family(PairedTest) if paired else {}
        self._sibling_weights = {f: np.eye(k)[h.members[f]] for f in self.sibling_paired}
        # --control: outputs of a model sharing the student's base but taught by no candidate, on the same
        # prompts (prompt id -> the control's per-teacher log-probabilities): the verdict then compares the
        # student's log-odds with the control's, prompt by prompt, which removes what the base model brings
        self.control = dict(control) if control is not None else None
        # one pair per prompt: the student's first output on a prompt id is compared with the control's answer;
        # a later output on the same id counts in the ranking only (control_repeats, the first such id)
        self._control_paired: set[str] = set()
        self.control_repeats = 0
        self.first_control_repeat: str | None = None
        self.control_test = PairedTest(h.families, LOG_ODDS_BINS) if self.control is not None else None
        self.sibling_control = self._per_family(PairedTest) if self.control is not None else {}
        # with families, a second paired statistic in the classifier's log-probability space must agree
        # (attribution.paired.MidpointTest): between families, and between the versions of each family
        grouped = paired and h.grouped
        self.midpoint = MidpointTest(h.families) if grouped else None
        #: a list to receive each batch's per-output paired scores (in order), or None (the default: only sums)
        self.paired_scores: list[np.ndarray] | None = None
        self.sibling_midpoint = self._per_family(MidpointTest) if grouped else {}

    def _per_family(self, test: Callable[[list[str]], Any]) -> dict[str, Any]:
        """One test between the versions of each family of several, in play."""
        h = self.hierarchy
        return {f: test([self.classes[i] for i in h.members[f]]) for f in h.multi_version_families()}

    def _midpoint_answers(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The candidates' answers as :class:`~attribution.paired.MidpointTest` reads them: per prompt, each
        family's (the mean of its versions' family log-probabilities) and, per family of several, each
        version's (renormalized within the family). Computed once per model and candidates in play."""
        paired = self.model.paired_
        assert paired is not None
        h, k = self.hierarchy, len(self.classes)

        def compute() -> tuple[np.ndarray, dict[str, np.ndarray]]:
            answers = paired.answer_log_proba(self.model.classifier_)                  # (prompts, k, k)
            family = h.family_log_proba(answers.reshape(-1, k)).reshape(answers.shape[0], k, -1)
            by_family = np.stack([family[:, h.members[f]].mean(axis=1) for f in h.families], axis=1)
            return by_family, {f: h.version_log_proba(answers[:, h.members[f]], f)
                               for f in h.multi_version_families()}

        key = ("midpoint answers", tuple(h.excluded), tuple(sorted(h.family_of.items())))
        return paired.derived(self.model.classifier_, key, compute)

    def add(self, texts: Sequence[str], prompt_ids: Sequence[str | None] | None = None, *,
            docs: Sequence[TaggedDoc] | None = None) -> np.ndarray:
        """Add a batch of outputs (and, optionally, the prompt id of each); returns their
        per-output probabilities. ``docs``: their tags, when the caller tagged them already."""
        if docs is None:
            docs = self.model.prepare(texts, cache=False)
        X = self.model.featurize(docs)
        proba = self.model.classifier_.predict_proba(X)
        self.add_scored(docs, X, proba, prompt_ids)
        return proba

    def add_scored(self, docs: Sequence[TaggedDoc], X: sp.csr_matrix, proba: np.ndarray,
                   prompt_ids: Sequence[str | None] | None = None) -> None:
        """Add outputs that were already featurized and scored.

        Outputs with no tokens (e.g. only ``nannan...`` before normalization) carry no
        evidence, only the classifier's intercept: they are counted in ``n_empty`` and
        otherwise left out, so they do not dilute the verdict.
        """
        has_text = np.fromiter((not doc.is_empty for doc in docs), dtype=bool, count=len(docs))
        self.n_empty += int((~has_text).sum())
        if not has_text.all():
            docs = [doc for doc, keep in zip(docs, has_text) if keep]
            X, proba = X[has_text], proba[has_text]
            if prompt_ids is not None:
                prompt_ids = [pid for pid, keep in zip(prompt_ids, has_text) if keep]
        log_proba = np.log(np.clip(proba, 1e-12, 1.0))
        if self.paired is not None and prompt_ids is not None and self.model.paired_ is not None:
            dots = self.model.paired_.dot_products(X, prompt_ids)[1]
            scores = self.model.paired_.cosines(dots, self._paired_weights)
            self.paired.add(scores)
            if self.paired_scores is not None:  # attribution.sequential reads them batch by batch
                self.paired_scores.append(scores)
            for family, test in self.sibling_paired.items():
                test.add(self.model.paired_.cosines(dots, self._sibling_weights[family]))
            if self.midpoint is not None:
                self._add_midpoint(log_proba, prompt_ids)
        if self.control_test is not None and prompt_ids is not None:
            self._add_control(log_proba, prompt_ids)
        self.n_outputs += len(docs)
        self.sum_log_proba += log_proba.sum(axis=0)
        self.feature_sums += np.asarray(X.sum(axis=0)).ravel()
        self.feature_outputs += np.asarray((X != 0).sum(axis=0)).ravel()
        self.add_bootstrap(log_proba)
        if self.keep_outputs:
            self.outputs.extend(proba)
        self.add_examples(docs)

    def _add_midpoint(self, log_proba: np.ndarray, prompt_ids: Sequence[str | None]) -> None:
        """Feed :class:`~attribution.paired.MidpointTest` the outputs whose prompt has paired answers."""
        assert self.midpoint is not None and self.model.paired_ is not None
        rows, prompts = self.model.paired_.locate(prompt_ids)
        family_answers, version_answers = self._midpoint_answers()
        h = self.hierarchy
        self.midpoint.add(h.family_log_proba(log_proba[rows]), family_answers[prompts])
        for family, test in self.sibling_midpoint.items():
            test.add(h.version_log_proba(log_proba[rows], family), version_answers[family][prompts])

    def _add_control(self, log_proba: np.ndarray, prompt_ids: Sequence[str | None]) -> None:
        """Feed the control tests: per output, its log-probabilities minus the control's on the same prompt, for
        the student's first output on each prompt id only (a prompt's outputs share the control's answer: paired
        again, they would count it as independent evidence)."""
        assert self.control is not None and self.control_test is not None
        rows = []
        for n, pid in enumerate(prompt_ids):
            key = None if pid is None else str(pid)
            if key is None or key not in self.control:
                continue
            if key in self._control_paired:
                self.control_repeats += 1
                self.first_control_repeat = self.first_control_repeat or key
                continue
            self._control_paired.add(key)
            rows.append(n)
        if not rows:
            return
        student = log_proba[rows]
        control = np.stack([self.control[str(prompt_ids[n])] for n in rows])
        h = self.hierarchy
        self.control_test.add(h.family_log_proba(student) - h.family_log_proba(control))
        for family, test in self.sibling_control.items():
            test.add(h.version_log_proba(student, family) - h.version_log_proba(control, family))

    def control_result(self, family: str) -> dict[str, Any] | None:
        """The control test of ``family`` against every other one (``None`` without ``control``)."""
        return self.control_test.result(family) if self.control_test is not None else None

    def sibling_control_result(self, family: str, teacher: str) -> dict[str, Any] | None:
        test = self.sibling_control.get(family)
        return test.result(teacher) if test is not None else None

    def paired_tests(self) -> list[Any]:
        """Every paired test's accumulator, in a fixed order (what a Dask worker's batch returns)."""
        return [t for t in (self.paired, *self.sibling_paired.values(), self.midpoint,
                            *self.sibling_midpoint.values(), self.control_test, *self.sibling_control.values())
                if t is not None]

    def add_bootstrap(self, log_proba: np.ndarray) -> None:
        """Add what needs each output's log-probabilities: the families' sums, and each output's Poisson
        weight in every bootstrap replicate (drawn in the order outputs arrive, so the same outputs in the
        same order give the same replicates)."""
        family = None if self.hierarchy.trivial else self.hierarchy.family_log_proba(log_proba)
        if family is not None:  # without families, the teachers' sums serve (family_sums)
            self.sum_family_log_proba += family.sum(axis=0)
        if self.model.n_bootstrap:
            weights = self._rng.poisson(1.0, size=(len(log_proba), self.model.n_bootstrap)).astype(float)
            self._boot_sum += weights.T @ log_proba
            self._boot_count += weights.sum(axis=0)
            if family is not None:
                self._boot_family += weights.T @ family

    def add_examples(self, docs: Sequence[TaggedDoc]) -> None:
        """Keep the tags of outputs for example spans, up to ``max_example_outputs`` (the first ones:
        bounded memory and cost)."""
        room = self.max_example_outputs - len(self.example_docs)
        if room > 0:
            self.example_docs.extend(docs[:room])

    def bootstrap(self, classes: Sequence[str] | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The Poisson-bootstrap sums so far: per replicate, the weighted sum of log-probabilities
        (columns: ``classes``, default all of this model's) and the sum of weights; ``(None, None)``
        when the model draws no replicates (``n_bootstrap=0``). Sums of several students' or tasks'
        replicates are replicates of their union (see :func:`summarize_evidence`)."""
        if not self.model.n_bootstrap:
            return None, None
        cols = [self.classes.index(c) for c in classes] if classes is not None else slice(None)
        return self._boot_sum[:, cols], self._boot_count.copy()

    def family_sums(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """The families' summed log-probabilities and bootstrap replicates (columns:
        ``hierarchy.families``); without families or exclusions, the teachers'."""
        if self.hierarchy.trivial:
            return self.sum_log_proba, *self.bootstrap()
        count = self._boot_count.copy() if self.model.n_bootstrap else None
        return self.sum_family_log_proba, (self._boot_family if self.model.n_bootstrap else None), count

    def ranking(self) -> pd.DataFrame:
        """Teachers from most to least likely (ties: alphabetical); with families, a teacher's probability
        is its family's times its share within the family (see :mod:`attribution.families`)."""
        return pd.DataFrame(self._ranking_columns())

    def _ranking_columns(self) -> dict[str, list]:
        """:meth:`ranking` as columns of plain lists (no pandas: ``rank --group-by`` pays per student)."""
        if self.n_outputs == 0:
            raise model_error("E209")
        if self.hierarchy.trivial:
            return _ranking_columns(self.classes, self.sum_log_proba, self.n_outputs, *self.bootstrap())
        return rank_hierarchy(self.hierarchy, self.sum_log_proba, *self.family_sums(), self.n_outputs,
                              self.bootstrap()[0]).to_dict("list")

    def family_ranking(self) -> pd.DataFrame:
        """Families from most to least likely (column ``family``; without families, the teachers)."""
        if self.n_outputs == 0:
            raise model_error("E209")
        total, boot_sum, boot_count = self.family_sums()
        frame = rank_teachers(self.hierarchy.families, total, self.n_outputs, boot_sum, boot_count)
        return frame.rename(columns={"teacher": "family"})

    def p_unlisted(self) -> float | None:
        """:func:`unlisted_p_value` for the outputs seen so far (between families: is a family outside the
        candidates as plausible as the top one?)."""
        if self.n_outputs == 0:
            raise model_error("E209")
        total = self.family_sums()[0]
        return unlisted_p_value(total / self.n_outputs, self.n_outputs, self._null(),
                                random_state=self.model.random_state)

    def _null(self) -> dict[str, np.ndarray]:
        """The model's unlisted-family null, restricted to the families in play."""
        null = self.model.unlisted_log_proba_
        h = self.hierarchy
        if not h.excluded:
            return null
        kept = {}
        for family, rows in null.items():
            if family in h.families:
                columns = [f for f in h.all_families if f != family]
                keep = [i for i, f in enumerate(columns) if f in h.families]
                kept[family] = rows[:, keep]
        return kept if len(kept) >= 2 else {}

    def paired_result(self, family: str) -> dict[str, Any] | None:
        """The paired test of ``family`` (without families: a teacher) against every other one over the
        outputs seen so far whose prompt the teachers answered (:meth:`attribution.paired.PairedTest.result`);
        ``None`` when the model kept no paired answers or too few outputs matched."""
        if self.paired is None:
            return None
        return _both(self.paired.result(family), self.midpoint.result(family) if self.midpoint else None)

    def sibling_result(self, family: str, teacher: str) -> dict[str, Any] | None:
        """The paired tests of ``teacher`` against the other versions of its ``family`` in play (centred on
        the family's mean answer); ``None`` for a family of one or without paired answers."""
        test = self.sibling_paired.get(family)
        if test is None:
            return None
        midpoint = self.sibling_midpoint.get(family)
        return _both(test.result(teacher), midpoint.result(teacher) if midpoint is not None else None)

    # -- explanation: see attribution.explain ------------------------------------------------
    def examples(self, columns: Iterable[int]) -> dict[int, list[str]]:
        """:func:`attribution.explain.examples` of these outputs."""
        return explain.examples(self, columns)

    def share_of_outputs(self, feature: str) -> float:
        """:func:`attribution.explain.share_of_outputs` of these outputs."""
        return explain.share_of_outputs(self, feature)

    def templates(self, teacher: str | None = None, top: int = 10, min_n: int = 2, *,
                  informative: bool = True) -> pd.DataFrame:
        """:func:`attribution.explain.templates` behind ``teacher`` (default: the top one)."""
        return explain.templates(self, teacher, top=top, min_n=min_n, informative=informative)

def _both(cosine: dict[str, Any] | None, midpoint: dict[str, Any] | None) -> dict[str, Any] | None:
    """One paired result from the feature-space test and, with families, the log-probability midpoint test
    (:class:`~attribution.paired.MidpointTest`): both must reject (intersection-union, the larger p-value;
    ``runner_up`` is the rival behind it). Without the second, the first as it is."""
    if cosine is None or midpoint is None:
        return cosine
    worse = midpoint if midpoint["p_paired"] > cosine["p_paired"] else cosine
    return {**cosine, "p_paired": worse["p_paired"], "runner_up": worse["runner_up"],
            "p_paired_cosine": cosine["p_paired"], "p_paired_midpoint": midpoint["p_paired"]}


def _by_task(evidence: dict[str | None, StudentEvidence]) -> list[tuple[str | None, StudentEvidence]]:
    """Tasks in a stable order: the task-less one first, then by name."""
    return sorted(evidence.items(), key=lambda kv: (kv[0] is not None, kv[0] or ""))


def combined_hierarchy(evidence: dict[str | None, StudentEvidence], classes: Sequence[str]) -> Hierarchy:
    """The families of the teachers every task knows (``classes``), less what the runs excluded."""
    first = _by_task(evidence)[0][1]
    family_of = getattr(first.model, "families_", None) or {}
    known = set(classes) | {family_of.get(c, c) for c in classes}
    return Hierarchy(classes, family_of, [n for n in first.hierarchy.excluded if n in known])


def _summed(evidence: dict[str | None, StudentEvidence], h: Hierarchy) -> dict[str, Any]:
    """Every task's sums added up, columns in ``h``'s order (teachers: ``h.classes``; families: ``h.families``)."""
    sums: dict[str, Any] = {"teacher": np.zeros(len(h.classes)), "family": np.zeros(len(h.families)),
                            "n": 0, "boot": None, "boot_family": None, "count": None}
    for _, ev in _by_task(evidence):
        teacher_cols = [ev.classes.index(c) for c in h.classes]
        family_cols = [ev.hierarchy.families.index(f) for f in h.families]
        total, boot_family, count = ev.family_sums()
        sums["teacher"] += ev.sum_log_proba[teacher_cols]
        sums["family"] += total[family_cols]
        sums["n"] += ev.n_outputs
        boot, _ = ev.bootstrap(h.classes)
        if boot is not None and boot_family is not None and count is not None:
            for key, value in (("boot", boot), ("boot_family", boot_family[:, family_cols]), ("count", count)):
                sums[key] = value + (0 if sums[key] is None else sums[key])
    return sums


def combined_ranking(evidence: dict[str | None, StudentEvidence], classes: Sequence[str]) -> pd.DataFrame:
    """One ranking over every task's outputs (over ``classes``, the teachers every task knows): summed
    log-probabilities and summed bootstrap replicates, as if the outputs had been streamed together."""
    h = combined_hierarchy(evidence, classes)
    return pd.DataFrame(_combined_columns(h, _summed(evidence, h)))


def _combined_columns(h: Hierarchy, sums: dict[str, Any]) -> dict[str, list]:
    if h.trivial:
        return _ranking_columns(h.classes, sums["teacher"], sums["n"], sums["boot"], sums["count"])
    return rank_hierarchy(h, sums["teacher"], sums["family"], sums["boot_family"], sums["count"], sums["n"],
                          sums["boot"]).to_dict("list")


def combined_family_ranking(evidence: dict[str | None, StudentEvidence], classes: Sequence[str]) -> pd.DataFrame:
    """:func:`combined_ranking` of the families (column ``family``, with ``members`` in play)."""
    h = combined_hierarchy(evidence, classes)
    return _family_frame(h, _summed(evidence, h))


def _family_frame(h: Hierarchy, sums: dict[str, Any]) -> pd.DataFrame:
    frame = rank_teachers(h.families, sums["family"], sums["n"], sums["boot_family"] if not h.trivial
                          else sums["boot"], sums["count"]).rename(columns={"teacher": "family"})
    frame["members"] = [[h.classes[i] for i in h.members[f]] for f in frame["family"]]
    return frame


def judge(evidence: dict[str | None, StudentEvidence], ranking: list[dict[str, Any]], family: str,
          grouped: bool, family_size: int, rule: VerdictRule | None = None) -> Verdict:
    """:func:`hierarchical_verdict` of ``family`` (the top one) and of its best teacher in ``ranking``, over
    the tasks of ``evidence``, under ``rule`` (default: ``either`` at :data:`ALPHA`); with a control
    (``rank --control``), the control test alone."""
    rule = rule or VerdictRule()
    teacher = next(row["teacher"] for row in ranking if row.get("family", row["teacher"]) == family)
    evs = [ev for _, ev in _by_task(evidence)]
    if any(ev.control is not None for ev in evs):  # --control: the student against its control, alone
        return hierarchical_verdict(family, teacher, [None] * len(evs), [ev.control_result(family) for ev in evs],
                                    [ev.sibling_control_result(family, teacher) for ev in evs], grouped=grouped,
                                    family_size=family_size, tests=VerdictRule("control", rule.alpha))
    return hierarchical_verdict(family, teacher, [ev.p_unlisted() for ev in evs],
                                [ev.paired_result(family) for ev in evs],
                                [ev.sibling_result(family, teacher) for ev in evs],
                                grouped=grouped, family_size=family_size, tests=rule)


def summarize_evidence(evidence: dict[str | None, StudentEvidence], classes: Sequence[str], *,
                       top_templates: int = 10, outputs: list | None = None,
                       keep_outputs: bool = False, alpha: float | None = None,
                       tests: str | VerdictRule = "either", informative: bool = True) -> dict[str, Any]:
    """Combine per-task evidence into one verdict (over teachers every task knows): the document of
    :func:`attribution.api.rank_student` (``informative``: see :func:`attribution.explain.templates`;
    ``tests`` and ``alpha``: the :class:`~attribution.verdicts.VerdictRule`). With families (or ``exclude``),
    ``family_ranking`` lists the families in play."""
    if any(ev.n_outputs == 0 for ev in evidence.values()):
        raise model_error("E209")
    h = combined_hierarchy(evidence, classes)
    sums = _summed(evidence, h)
    ranking = _ranking_records(_combined_columns(h, sums))
    families = None if h.trivial else _family_frame(h, sums)
    top_family = ranking[0]["teacher"] if families is None else str(families["family"].iloc[0])
    rule = VerdictRule.of(tests, alpha)
    judged = judge(evidence, ranking, top_family, h.grouped, len(h.members[top_family]), rule)
    explained = judged.teacher or judged.best_candidate
    assert explained is not None  # judge names the best candidate
    result: dict[str, Any] = {
        "n_outputs": sum(ev.n_outputs for ev in evidence.values()),
        "n_empty": sum(ev.n_empty for ev in evidence.values()), "ranking": ranking,
        "evidence": explain.combined_templates(dict(_by_task(evidence)), explained, top=top_templates,
                                               informative=informative),
        "verdict": judged.to_dict()}
    contrast = explain.verdict_contrast(dict(_by_task(evidence)), judged, ranking, top=top_templates,
                                        informative=informative)
    if contrast is not None:
        result["contrast"] = contrast
    scores = verdict_scores(evidence, judged)
    if scores is not None:
        result["verdict_scores"] = scores
    if families is not None:
        result["family_ranking"] = _ranking_records(families.to_dict("list"))
    per_task = {key: ev for key, ev in _by_task(evidence)}
    if len(per_task) > 1 or None not in per_task:
        result["tasks"] = {}
        for key, ev in per_task.items():
            task_ranking = _ranking_records(ev._ranking_columns())
            task_family = (task_ranking[0]["teacher"] if ev.hierarchy.trivial
                           else str(ev.family_ranking()["family"].iloc[0]))
            result["tasks"][str(key)] = {
                "n_outputs": ev.n_outputs, "ranking": task_ranking,
                "verdict": judge({key: ev}, task_ranking, task_family, ev.hierarchy.grouped,
                                  len(ev.hierarchy.members[task_family]), rule).to_dict()}
    if keep_outputs:
        result["outputs"] = outputs or []
    return result


def verdict_scores(evidence: dict[str | None, StudentEvidence], judged: Verdict) -> dict[str, Any] | None:
    """The per-prompt differences behind ``judged``'s paired (or control) test: its top candidate (the best family;
    without families the best teacher) against its ``runner_up``, :meth:`attribution.paired.PairedTest.differences`
    with ``statistic`` (``"cosine"`` or ``"control log-odds"``); ``None`` without a runner-up (no paired test, or
    several tasks: their runner-ups differ)."""
    top, rival, evs = judged.best_family or judged.best_candidate, judged.runner_up, list(evidence.values())
    test = (evs[0].control_test if judged.is_control else evs[0].paired) if len(evs) == 1 else None
    found = test.differences(top, rival) if test is not None and top and rival else None
    return None if found is None else {**found, "statistic": "control log-odds" if judged.is_control else "cosine"}


#: How a verdict combines its two tests (see :func:`verdict`): the choices of :class:`VerdictRule`.
VERDICT_TESTS = VerdictRule.CHOICES


def verdict(teacher: str, p_values: Sequence[float | None], paired: Sequence[dict[str, Any] | None] | None = None,
            *, alpha: float | None = None, tests: str | VerdictRule = "either") -> Verdict:
    """Name the best-ranked teacher only when a test rules out the alternatives, in every task.

    Two tests, per task. The **paired** test (:mod:`attribution.paired`, ``p_paired``) runs when the
    model kept every candidate's answer to the student's prompts: the top-ranked teacher must beat
    every other candidate prompt by prompt. It has power on real students but only compares the
    candidates. The **unlisted**-teacher test (:func:`unlisted_p_value`,
    ``p_unlisted``; 4+ candidates) asks whether a teacher outside the candidates could explain the
    outputs as well; it rarely concludes when candidates are related. ``tests`` chooses the rule
    (:class:`~attribution.verdicts.VerdictRule`, or its name): ``"either"`` (default: one test suffices, each
    at ``alpha / 2``), ``"paired"``, ``"unlisted"``, or ``"both"`` (both must pass: the strict open-set rule).

    ``p_value`` is the largest p-value over the tasks (every task must pass); ``status`` is
    ``"attributed"`` when it is below ``alpha``, ``"inconclusive"`` when it is not, and
    ``"unavailable"`` when a task has no test that the rule accepts. ``paired_score`` is the evidence
    behind a paired test: each teacher's mean per-prompt score. Returns a :class:`~attribution.verdicts.Verdict`
    between teachers (``to_dict()``: its JSON).
    """
    rule = VerdictRule.of(tests, alpha)
    paired = list(paired) if paired is not None else [None] * len(p_values)
    task_tests = [rule.task_test(p_u, None if p_p is None else p_p["p_paired"]) for p_u, p_p in zip(p_values, paired)]
    p = _largest([p for p, _ in task_tests])
    status = "unavailable" if p is None else ("attributed" if p < rule.alpha else "inconclusive")
    return Verdict(status=status, best_candidate=teacher, alpha=rule.alpha,
                   tests=tuple(sorted({name for _, name in task_tests}, key=lambda t: t.value)),
                   teacher=teacher if status == "attributed" else None, p_value=p, p_unlisted=_largest(p_values),
                   paired=PairedSummary.combine([t for t in paired if t is not None]), hierarchical=False, rule=rule)


def hierarchical_verdict(family: str, teacher: str, p_values: Sequence[float | None],
                         paired: Sequence[dict[str, Any] | None], siblings: Sequence[dict[str, Any] | None], *,
                         grouped: bool, family_size: int, alpha: float | None = None,
                         tests: str | VerdictRule = "either") -> Verdict:
    """Name the family first, then the version (:mod:`attribution.families`).

    The family is named by :func:`verdict` between families: the unlisted-family test and the paired test
    of ``family`` against every other family, under the ``tests`` rule. The version is named only when
    the family is, and then, in a family of several versions, only when the paired test of ``teacher``
    against each sibling (centred on the family's mean answer) passes at ``alpha`` in every task
    (``teacher_test``). ``level`` says how far the verdict went: ``"teacher"``, ``"family"`` or None.
    Without families (``grouped=False``) every teacher is a family and this is :func:`verdict` itself,
    with ``level`` ``"teacher"`` when it names one.
    """
    out = verdict(family, p_values, paired, alpha=alpha, tests=tests)
    named_family = family if out.status == "attributed" else None
    found = [t for t in siblings if t is not None] if grouped and family_size > 1 else []
    teacher_test = PairedSummary.combine(found) if found and len(found) == len(siblings) else None
    if not grouped:  # every teacher is a family
        named_teacher = named_family
    elif family_size == 1:  # the family is one version
        named_teacher = teacher if named_family else None
    else:  # a version only when it also beats its siblings
        p_version = teacher_test.p_paired if teacher_test is not None else None
        named_teacher = teacher if named_family and p_version is not None and p_version < out.alpha else None
    level = "teacher" if named_teacher else ("family" if named_family else None)
    return replace(out, teacher=named_teacher, family=named_family, level=level, best_candidate=teacher,
                   best_family=family, teacher_test=teacher_test, hierarchical=True)


def _largest(p_values: Sequence[float | None]) -> float | None:
    """The largest p-value, or None when there is none or one of them is missing."""
    present = [p for p in p_values if p is not None]
    return max(present) if present and len(present) == len(p_values) else None


def describe_verdict(verdict: Verdict | Mapping[str, Any] | None) -> str:
    """One plain sentence saying what a :func:`verdict` means (for tables and reports); a verdict of a JSON
    result is read with :meth:`Verdict.from_dict`."""
    if not verdict:
        return "No verdict in this result (it predates the verdict's tests): read the ranking with care."
    v = verdict if isinstance(verdict, Verdict) else Verdict.from_dict(verdict)
    if v.is_sequential:
        return describe_sequential(v)
    best, alpha, status, test = v.best_candidate, v.alpha, v.status, v.test
    if status == "unavailable":  # no test the rule accepts ran: the same words under every rule
        return _unavailable_sentence(v)
    p_text = _p_text(v.p_value)
    does = "s do" if v.several_tests else " does"
    if v.is_control:
        if status == "attributed":
            return (f"{v.teacher or v.family}: prompt by prompt, the student's log-odds of {v.family} against every "
                    f"other candidate exceed those of the control (a model of the same base taught by no "
                    f"candidate) on the same prompts ({v.n_paired} prompts; runner-up {v.runner_up}); "
                    f"p = {p_text} < {alpha} (control).")
        return (f"{status}: against the control, {v.best_family or best} is not singled out "
                f"(p = {p_text}, alpha = {alpha}); no teacher is named.")
    family = v.best_family
    if family is not None and family != best and status == "inconclusive":
        return (f"inconclusive: family {family} ranks first (its best version {best}), but the {test} "
                f"test{does} not single it out (p = {p_text}, alpha = {alpha}); no family is named.")
    if family is not None and family != best and status == "attributed":  # a verdict between families
        sentence = describe_verdict(replace(v, best_family=None, best_candidate=family, teacher=family))
        sentence = sentence.replace(f"{family}: ", f"family {family}: ", 1)
        version = v.teacher_test
        p_version = _p_text(version.p_paired if version is not None else None)
        if v.level == "teacher":
            return (f"{v.teacher} ({sentence[0].lower()}{sentence[1:]}) Within the family, its answers "
                    f"beat every sibling's prompt by prompt (p = {p_version}).")
        return (f"{sentence} The version is not singled out: {best} ranks first in the family, but its paired "
                f"test against {(version.runner_up if version is not None else None) or 'its siblings'} gives "
                f"p = {p_version}.")
    if v.uses_paired:
        reasons = []
        if v.paired_passed:
            reasons.append(f"prompt by prompt, the outputs resemble {best}'s answers more than every other "
                           f"candidate's ({v.n_paired} paired prompts; runner-up {v.runner_up})")
        if v.unlisted_passed:
            reasons.append("a teacher outside the candidates is implausible")
        if status == "attributed":
            caveat = "" if v.unlisted_passed else (
                f" Among the candidates only: a teacher outside them that resembles {best} is not ruled out"
                + (" (the unlisted-teacher test did not run)." if v.p_unlisted is None else
                   f" (p_unlisted = {_p_text(v.p_unlisted)}); the strict rule, which needs both "
                   f"tests, would name no one."))
            return f"{v.teacher}: {' and '.join(reasons)}; p = {p_text} < {alpha} ({test}).{caveat}"
        return (f"inconclusive: {best} ranks first, but the {test} test{does} not "
                f"single it out (p = {p_text}, alpha = {alpha}); no teacher is named.")
    if status == "attributed":
        return f"{v.teacher}: a teacher outside the candidates is implausible (p = {p_text} < {alpha})."
    return (f"inconclusive: the outputs are as consistent with a teacher outside the candidates as with "
            f"{best} (p = {p_text}, alpha = {alpha}); no teacher is named.")


def _unavailable_sentence(v: Verdict) -> str:
    """What an ``unavailable`` verdict means, whatever its rule: a group with nothing to rank (its ``reason``);
    no test at all (the same sentence under every rule: under ``paired`` or ``both`` it read "inconclusive ...
    p = n/a"); the control test with no prompt the control answered; or a test that ran while the rule needs
    one that did not, in some task (e.g. ``both`` with fewer than 4 candidates)."""
    best = v.best_candidate
    if v.reason:  # a group of rank --group-by with nothing to rank (attribution.result.unranked_result)
        return f"unavailable: not ranked: {v.reason}"
    if v.is_control:
        return (f"unavailable: no test could run (the control answered none of the student's prompts, matched by "
                f"id); best candidate {best}, relative to the candidates only.")
    ran = [(name, p) for name, p in (("paired", v.p_paired), ("unlisted-teacher", v.p_unlisted)) if p is not None]
    if not ran:
        return (f"unavailable: no test could run (no teacher answers to the student's prompts, and the "
                f"unlisted-teacher test needs 4+ candidate teachers); best candidate {best}, relative to the "
                f"candidates only.")
    done = ", ".join(f"{name} p = {_p_text(p)}" for name, p in ran)
    return (f"unavailable: no test that the rule ({v.test}) accepts could run in every task ({done}; the paired "
            f"test needs teacher answers to the student's prompts, the unlisted-teacher test 4+ candidate "
            f"teachers); best candidate {best}, relative to the candidates only; no teacher is named.")


def _p_text(p: Any) -> str:
    return f"{p:.3g}" if isinstance(p, (int, float)) and not isinstance(p, bool) else "n/a"


def _ranking_records(columns: dict[str, list]) -> list[dict[str, Any]]:
    """Rows of a ranking's columns (teachers, or families with their ``members``) as JSON-able dicts."""
    labels = [key for key in ("teacher", "family") if key in columns]
    numbers = ("probability", "support", "ci_low", "ci_high")
    out = []
    for i in range(len(columns[labels[0]])):
        record: dict[str, Any] = {key: str(columns[key][i]) for key in labels}
        record.update({key: float(columns[key][i]) for key in numbers})
        if "members" in columns:
            record["members"] = list(columns["members"][i])
        out.append(record)
    return out


__all__ = ["ALPHA", "VERDICT_TESTS", "StudentEvidence", "Verdict", "VerdictRule", "combined_family_ranking",
           "combined_ranking", "describe_verdict", "hierarchical_verdict", "judge", "rank_hierarchy", "rank_teachers",
           "summarize_evidence", "unlisted_p_value", "verdict"]
