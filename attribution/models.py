"""The teacher attributor: fit on teachers' reference outputs, rank the teacher of a student.

:class:`TeacherAttributor` follows scikit-learn's estimator API (``fit`` /
``predict_proba`` / ``predict``) for single outputs and adds :meth:`~TeacherAttributor.rank`,
a verdict for a *student* from all of its outputs. :class:`MultiTaskAttributor` fits one
attributor per task, because a teacher's templates differ between summarizing and
answering questions. Fitted models are saved as a NumPy ``.npz`` archive holding
arrays and one JSON document -- nothing in it can execute code when loaded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from . import __version__
from .errors import Errors, NotFittedError, model_error
from .features import SequenceNgramVectorizer, make_feature_blocks, ngrams
from .normalize import Normalizer
from .paired import PairedReferences, PairedTest
from .tagging import TaggedDoc, get_tagger

DEFAULT_FEATURES = "combined"


def _check_texts(texts: Any, name: str = "texts") -> list[str]:
    if isinstance(texts, str):
        raise ValueError(Errors.E202)
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise model_error("E210", name=f"{name}[{bad}]", expected="a string", got=texts[bad])
    return texts


class TeacherAttributor(ClassifierMixin, BaseEstimator):
    """Attribute outputs, and whole students, to one of several candidate teachers.

    Parameters
    ----------
    features : str, default="combined"
        Named feature set: ``"pos-paper"`` (the paper's top-50 binary PoS 4-grams),
        ``"ngram-paper"`` (1-3 word grams, 10k counts), ``"pos-rich"`` (PoS 1-4 grams,
        TF-IDF, 5k), ``"ngram-tfidf"``, or ``"combined"`` (pos-rich + word n-grams).
    C : float, default=1.0
        Inverse regularization strength of the logistic regression.
    class_weight : "balanced" or None, default="balanced"
        Reweight teachers so that one with more references is not favoured.
    max_iter : int, default=1000
    tagger : str, default="spacy"
        ``"spacy"``, ``"nltk"`` or a spaCy package name.
    normalize : bool, default=True
        Remove generation artifacts first (see :class:`attribution.normalize.Normalizer`).
    n_bootstrap : int, default=200
        Bootstrap replicates behind the ``support`` column of :meth:`rank`.
    open_set : bool, default=True
        Also fit one model per left-out teacher, to test whether a student could come
        from a teacher *outside* the candidates (see :func:`unlisted_p_value`). Costs
        one extra fit per teacher.
    open_set_min_teachers : int, default=4
        Fewest candidate teachers for that test. Below 4 it is unreliable: with 3
        candidates, simulations on the released paper data named a wrong teacher for 15
        of 40 students whose teacher was not a candidate (``benchmarks/bench_unlisted.py
        --subsets``); with 4 or 5, for none.
    batch_size : int, default=256
        Texts tagged and scored per batch; bounds memory when ranking streams.
    paired : bool, default=True
        When the references carry prompt ids and every teacher answered some prompt, keep
        each teacher's answer to those prompts, so that a student's outputs on the same
        prompts can be compared prompt by prompt (see :mod:`attribution.paired`).
    random_state : int, default=0
        Seeds the bootstrap; the classifier itself is deterministic.

    Attributes
    ----------
    classes_ : ndarray of str
        Candidate teachers, sorted; columns of :meth:`predict_proba` follow it.
    blocks_ : list of (str, SequenceNgramVectorizer)
        Fitted feature blocks.
    classifier_ : LogisticRegression
    n_features_ : int
    signature_ : str
        Reproducibility signature: version, tagger, features, C.
    paired_ : PairedReferences or None
        The teachers' answers to the prompts all of them answered (``None`` without ids).
    unlisted_log_proba_ : dict of str to ndarray
        For each teacher, log-probabilities of its reference outputs under a model fitted
        *without* it (the null of :func:`unlisted_p_value`); empty with fewer than
        ``open_set_min_teachers`` teachers or ``open_set=False``.

    Examples
    --------
    >>> from attribution import TeacherAttributor
    >>> model = TeacherAttributor(features="pos-paper").fit(
    ...     ["The answer is A because it is red.", "Sure! Here is the answer: B."] * 3,
    ...     ["t1", "t2"] * 3)
    >>> model.rank(["The answer is C because it is blue."]).iloc[0]["teacher"]
    't1'
    """

    def __init__(self, *, features: str = DEFAULT_FEATURES, C: float = 1.0,
                 class_weight: str | None = "balanced", max_iter: int = 1000, tagger: str = "spacy",
                 normalize: bool = True, n_bootstrap: int = 200, open_set: bool = True,
                 open_set_min_teachers: int = 4, batch_size: int = 256, paired: bool = True,
                 random_state: int = 0) -> None:
        self.features = features
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tagger = tagger
        self.normalize = normalize
        self.n_bootstrap = n_bootstrap
        self.open_set = open_set
        self.open_set_min_teachers = open_set_min_teachers
        self.batch_size = batch_size
        self.paired = paired
        self.random_state = random_state

    # -- preparation ---------------------------------------------------------------------
    def prepare(self, texts: Sequence[str], *, cache: bool = True) -> list[TaggedDoc]:
        """Normalize and tag texts; with ``cache`` a text is tagged once per process."""
        return get_tagger(self.tagger, batch_size=self.batch_size).tag(self._normalized(texts), cache=cache)

    def prepare_later(self, texts: Sequence[str]) -> Callable[[], list[TaggedDoc]]:
        """Normalize texts and start tagging them (not cached); the function returned gives the tags
        (see :meth:`attribution.tagging.Tagger.tag_later`: on Dask workers, tagging starts now)."""
        return get_tagger(self.tagger, batch_size=self.batch_size).tag_later(self._normalized(texts))

    def _normalized(self, texts: Sequence[str]) -> list[str]:
        texts = _check_texts(texts)
        if self.normalize:
            normalizer = Normalizer()
            texts = [normalizer(t) for t in texts]
        return texts

    def _featurize(self, docs: Sequence[TaggedDoc]) -> sp.csr_matrix:
        return sp.hstack([vec.transform(docs) for _, vec in self.blocks_], format="csr")

    def _check_fitted(self) -> None:
        if not hasattr(self, "classifier_"):
            raise NotFittedError(Errors.E204.format(name=type(self).__name__), code="E204")

    # -- estimator API -------------------------------------------------------------------
    def fit(self, texts: Sequence[str], teachers: Sequence[str],
            prompt_ids: Sequence[str | None] | None = None) -> TeacherAttributor:
        """Learn each teacher's style from its reference outputs.

        ``prompt_ids`` (optional, one per text) name the prompt each output answers; the
        teachers' answers to prompts that all of them answered are kept for paired tests.
        """
        texts = _check_texts(texts)
        teachers = [str(t) for t in _check_texts(teachers, "teachers")]
        if len(texts) != len(teachers):
            raise model_error("E203", n_texts=len(texts), n_labels=len(teachers))
        if len(set(teachers)) < 2:
            raise model_error("E201", n=len(set(teachers)), teachers=sorted(set(teachers)))
        if not (isinstance(self.C, (int, float)) and self.C > 0):
            raise model_error("E210", name="C", expected="a positive number", got=self.C)
        return self.fit_docs(self.prepare(texts), teachers, prompt_ids)

    def fit_docs(self, docs: Sequence[TaggedDoc], teachers: Sequence[str],
                 prompt_ids: Sequence[str | None] | None = None) -> TeacherAttributor:
        """Fit on already-tagged documents (lets callers tag once for several models)."""
        self.blocks_ = make_feature_blocks(self.features, tagger=self.tagger)
        X = sp.hstack([vec.fit_transform(docs) for _, vec in self.blocks_], format="csr")
        self.classifier_ = self._new_classifier()
        y = np.asarray(teachers)
        with threadpool_limits(1):  # small problem: BLAS threads only add contention (6x slower)
            self.classifier_.fit(X, y)
            self.unlisted_log_proba_ = self._fit_unlisted(X, y) if self.open_set else {}
        self.classes_ = self.classifier_.classes_
        self.paired_ = None
        if self.paired and prompt_ids is not None:
            if len(prompt_ids) != len(docs):
                raise model_error("E203", n_texts=len(docs), n_labels=len(prompt_ids))
            self.paired_ = PairedReferences.from_references(X, teachers, prompt_ids, self.classes_.tolist())
        self.n_features_ = X.shape[1]
        self.signature_ = self._signature()
        return self

    def _fit_unlisted(self, X: sp.csr_matrix, y: np.ndarray) -> dict[str, np.ndarray]:
        """Leave each teacher out, refit, and score its outputs: what an unlisted teacher looks like."""
        teachers = sorted(set(y.tolist()))
        if not self._open_set_applies(len(teachers)):
            return {}
        null = {}
        for teacher in teachers:
            held_out = y == teacher
            model = self._new_classifier().fit(X[~held_out], y[~held_out])
            null[teacher] = np.log(np.clip(model.predict_proba(X[held_out]), 1e-12, 1.0))
        return null

    def _open_set_applies(self, n_teachers: int) -> bool:
        """Whether the unlisted-teacher test runs with this many candidates (a null model
        needs 2+ teachers, and below ``open_set_min_teachers`` the test is unreliable)."""
        return n_teachers >= max(3, self.open_set_min_teachers)

    def _new_classifier(self) -> LogisticRegression:
        # Newton-CG: on these wide sparse problems it converges in ~6 steps, twice as fast
        # as L-BFGS and about ten times closer to the exact optimum (the unlisted-teacher
        # test is sensitive to how precisely its models are fitted).
        return LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=self.max_iter,
                                  solver="newton-cg")

    def _signature(self) -> str:
        tagger = get_tagger(self.tagger, batch_size=self.batch_size).signature
        return (f"teacher-attribution=={__version__}|tagger={tagger}|features={self.features}"
                f"|C={self.C}|normalize={self.normalize}")

    def predict_proba(self, texts: Sequence[str], *, as_frame: bool = False,
                      ids: Sequence[str] | None = None) -> np.ndarray | pd.DataFrame:
        """Probability of each teacher for each output, shape (n_outputs, n_teachers), columns in
        the order of ``classes_``. With ``as_frame=True``, a DataFrame whose columns are the
        teachers and whose index is ``ids`` (one per text, index name ``id``) when given."""
        self._check_fitted()
        proba = self.predict_proba_docs(self.prepare(texts))
        if not as_frame:
            return proba
        index = None
        if ids is not None:
            ids = list(ids)
            if len(ids) != len(proba):
                raise model_error("E210", name="ids", expected=f"one per text ({len(proba)} texts)", got=len(ids))
            index = pd.Index(ids, name="id")
        return pd.DataFrame(proba, columns=pd.Index(self.classes_.tolist(), name="teacher"), index=index)

    def predict_proba_docs(self, docs: Sequence[TaggedDoc]) -> np.ndarray:
        """:meth:`predict_proba` on already-tagged documents."""
        self._check_fitted()
        return self.classifier_.predict_proba(self._featurize(docs))

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Most likely teacher of each output."""
        return self.classes_[np.argmax(self.predict_proba(texts), axis=1)]

    # -- student-level verdict -------------------------------------------------------------
    def rank(self, texts: Iterable[str], prompt_ids: Iterable[str | None] | None = None, *,
             tests: str = "either", alpha: float = 0.05) -> pd.DataFrame:
        """Rank the teachers of one student from all of its outputs, most likely first.

        ``prompt_ids`` (one per text) enable the paired test when the model kept the
        teachers' answers to the same prompts (see :mod:`attribution.paired`).

        Returns
        -------
        DataFrame
            Columns ``teacher``, ``probability`` (sums to 1; higher means more likely
            the teacher), ``support`` (share of bootstrap resamples of the outputs that
            put this teacher first) and ``mean_log_proba``. ``frame.attrs`` holds
            ``n_outputs``, ``p_unlisted`` (see :func:`unlisted_p_value`) and ``paired`` (the
            paired test of the top teacher, see :meth:`StudentEvidence.paired_result`, or
            ``None``), and ``verdict`` (:func:`attribution.api.verdict` of these, under ``tests``
            and ``alpha``). The verdict concerns the top teacher, so its ``verdict`` (status) and
            ``p_value`` columns are filled on the first row only (None and NaN below).

        See Also
        --------
        StudentEvidence : the streaming accumulator behind this method.
        """
        evidence = StudentEvidence(self)
        if prompt_ids is None:
            for chunk in _chunks(texts, self.batch_size):
                evidence.add(chunk)
        else:
            for chunk in _chunks(zip(texts, prompt_ids, strict=True), self.batch_size):
                evidence.add([text for text, _ in chunk], [pid for _, pid in chunk])
        from .api import verdict  # api builds on this module

        frame = evidence.ranking()
        top = frame["teacher"].iloc[0]
        p_unlisted, paired = evidence.p_unlisted(), evidence.paired_result(top)
        judged = verdict(top, [p_unlisted], [paired], alpha=alpha, tests=tests)
        frame["verdict"] = [judged["status"]] + [None] * (len(frame) - 1)
        frame["p_value"] = [judged["p_value"]] + [None] * (len(frame) - 1)
        frame["p_value"] = frame["p_value"].astype(float)
        frame.attrs.update({"n_outputs": evidence.n_outputs, "p_unlisted": p_unlisted, "paired": paired,
                            "verdict": judged})
        return frame

    def get_feature_names_out(self) -> np.ndarray:
        """Feature names as ``block:ngram``, in column order."""
        self._check_fitted()
        return np.asarray([f"{block}:{name}" for block, vec in self.blocks_
                           for name in vec.get_feature_names_out()], dtype=object)

    # -- persistence -------------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Fitted state as JSON-able metadata and named arrays (see :func:`save_model`)."""
        self._check_fitted()
        meta: dict[str, Any] = {"params": self.get_params(), "classes": self.classes_.tolist(),
                                "signature": self.signature_, "blocks": []}
        arrays = {"coef": self.classifier_.coef_, "intercept": self.classifier_.intercept_}
        meta["unlisted"] = sorted(self.unlisted_log_proba_)
        arrays.update({f"unlisted{i}": self.unlisted_log_proba_[t] for i, t in enumerate(meta["unlisted"])})
        if self.paired_ is not None:
            arrays.update(self.paired_.get_state())
        for i, (block, vec) in enumerate(self.blocks_):
            vec_meta, vec_arrays = vec.get_state()
            meta["blocks"].append({"name": block, **vec_meta})
            arrays.update({f"block{i}_{k}": v for k, v in vec_arrays.items()})
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> TeacherAttributor:
        """Rebuild a fitted attributor from :meth:`get_state` output."""
        self = cls(**meta["params"])
        self.blocks_ = []
        for i, block in enumerate(meta["blocks"]):
            vec_arrays = {k.split("_", 1)[1]: v for k, v in arrays.items() if k.startswith(f"block{i}_")}
            self.blocks_.append((block["name"], SequenceNgramVectorizer.from_state(block, vec_arrays)))
        classifier = self._new_classifier()
        classifier.classes_ = np.asarray(meta["classes"], dtype=object)
        classifier.coef_ = np.asarray(arrays["coef"], dtype=float)
        classifier.intercept_ = np.asarray(arrays["intercept"], dtype=float)
        classifier.n_features_in_ = classifier.coef_.shape[1]
        self.classifier_ = classifier
        self.classes_ = classifier.classes_
        self.n_features_ = classifier.n_features_in_
        self.signature_ = meta["signature"]
        self.unlisted_log_proba_ = {t: np.asarray(arrays[f"unlisted{i}"], dtype=float)
                                    for i, t in enumerate(meta.get("unlisted", []))}
        if not self._open_set_applies(len(self.classes_)):  # saved before the test needed 4
            self.unlisted_log_proba_ = {}
        self.paired_ = PairedReferences.from_state(arrays, len(self.classes_), self.n_features_)
        return self


def _chunks(texts: Iterable[str], size: int) -> Iterable[list[str]]:
    if isinstance(texts, str):
        raise ValueError(Errors.E202)
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def rank_teachers(classes: Sequence[str], sum_log_proba: np.ndarray, n_outputs: int,
                  boot_sum: np.ndarray | None = None, boot_count: np.ndarray | None = None) -> pd.DataFrame:
    """A student's ranking from its summed evidence: softmax of the mean log-probability; the share
    of bootstrap replicates (rows of ``boot_sum``) that put each teacher first (``support``); and
    the 2.5-97.5 percentile interval of the probability over those replicates (``ci_low``,
    ``ci_high``: how much the probability would move with another sample of the outputs)."""
    mean = np.asarray(sum_log_proba, dtype=float) / n_outputs
    probability = _softmax(mean)
    k = len(classes)
    support, ci_low, ci_high = np.full(k, np.nan), np.full(k, np.nan), np.full(k, np.nan)
    if boot_sum is not None and len(boot_sum):
        replicates = boot_sum / np.maximum(boot_count, 1)[:, None]
        support = np.bincount(np.argmax(replicates, axis=1), minlength=k) / len(replicates)
        ci_low, ci_high = np.percentile(_softmax(replicates), [2.5, 97.5], axis=0)
    frame = pd.DataFrame({"teacher": list(classes), "probability": probability, "support": support,
                          "ci_low": ci_low, "ci_high": ci_high, "mean_log_proba": mean})
    return frame.sort_values(["probability", "teacher"], ascending=[False, True],
                             kind="mergesort").reset_index(drop=True)


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
    margins = []
    for teacher in sorted(null):
        rows = null[teacher]
        picks = rng.integers(0, len(rows), size=(n_draws, size))
        margins.append(_margin(rows[picks].mean(axis=1)))
    margins = np.concatenate(margins)
    return float((1 + np.sum(margins >= observed)) / (1 + len(margins)))


class StudentEvidence:
    """Accumulate one student's evidence over any number of outputs, in flat memory.

    The verdict multiplies the per-output probabilities (a sum of log-probabilities)
    and renormalizes their geometric mean, so that a student's ranking does not grow
    absurdly confident with the number of outputs: outputs of one student are not
    independent witnesses. How stable the verdict is shows in ``support``, the share
    of Poisson-bootstrap resamples of the outputs that keep each teacher first.

    It also keeps, per feature, how many outputs used it and a few example spans, so
    :meth:`templates` can show which templates drove the decision.

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
                 max_example_outputs: int = 256) -> None:
        model._check_fitted()
        self.model = model
        self.classes = model.classes_.tolist()
        k = len(self.classes)
        self.n_outputs = 0
        self.n_empty = 0
        self.sum_log_proba = np.zeros(k)
        self.feature_sums = np.zeros(model.n_features_)
        self.feature_outputs = np.zeros(model.n_features_, dtype=np.int64)
        self.n_examples = n_examples
        self.max_example_outputs = max_example_outputs
        self._example_docs: list[TaggedDoc] = []
        self._rng = np.random.default_rng(model.random_state)
        self._boot_sum = np.zeros((model.n_bootstrap, k))
        self._boot_count = np.zeros(model.n_bootstrap)
        self.keep_outputs = keep_outputs
        self.outputs: list[np.ndarray] = []
        self.paired = PairedTest(self.classes) if model.paired_ is not None else None

    def add(self, texts: Sequence[str], prompt_ids: Sequence[str | None] | None = None, *,
            docs: Sequence[TaggedDoc] | None = None) -> np.ndarray:
        """Add a batch of outputs (and, optionally, the prompt id of each); returns their
        per-output probabilities. ``docs``: their tags, when the caller tagged them already."""
        if docs is None:
            docs = self.model.prepare(texts, cache=False)
        X = self.model._featurize(docs)
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
        has_text = np.fromiter((len(doc) > 0 for doc in docs), dtype=bool, count=len(docs))
        self.n_empty += int((~has_text).sum())
        if not has_text.all():
            docs = [doc for doc, keep in zip(docs, has_text) if keep]
            X, proba = X[has_text], proba[has_text]
            if prompt_ids is not None:
                prompt_ids = [pid for pid, keep in zip(prompt_ids, has_text) if keep]
        if self.paired is not None and prompt_ids is not None:
            self.paired.add(self.model.paired_.scores(X, prompt_ids)[1])
        log_proba = np.log(np.clip(proba, 1e-12, 1.0))
        self.n_outputs += len(docs)
        self.sum_log_proba += log_proba.sum(axis=0)
        self.feature_sums += np.asarray(X.sum(axis=0)).ravel()
        self.feature_outputs += np.asarray((X != 0).sum(axis=0)).ravel()
        if self.model.n_bootstrap:
            weights = self._rng.poisson(1.0, size=(len(docs), self.model.n_bootstrap)).astype(float)
            self._boot_sum += weights.T @ log_proba
            self._boot_count += weights.sum(axis=0)
        if self.keep_outputs:
            self.outputs.extend(proba)
        room = self.max_example_outputs - len(self._example_docs)
        if room > 0:  # examples come from the first outputs only: bounded memory and cost
            self._example_docs.extend(docs[:room])

    def examples(self, columns: Iterable[int]) -> dict[int, list[str]]:
        """Up to ``n_examples`` distinct word spans per feature column, from the first outputs.

        Found on demand, for the few templates a reader sees, rather than for every
        template while streaming.
        """
        wanted: dict[tuple[int, int], dict[str, int]] = {}  # (block, n) -> gram -> column
        offset = 0
        for b, (_, vec) in enumerate(self.model.blocks_):
            names = vec.get_feature_names_out()
            for j in columns:
                if offset <= j < offset + len(names) and vec._source() != "words":
                    gram = names[j - offset]
                    wanted.setdefault((b, len(gram.split())), {})[gram] = j
            offset += len(names)
        found: dict[int, list[str]] = {j: [] for group in wanted.values() for j in group.values()}
        for doc in self._example_docs:
            for (b, n), grams in wanted.items():
                symbols = self.model.blocks_[b][1]._symbols(doc)
                for start, gram in enumerate(ngrams(symbols, n)):
                    kept = found.get(grams.get(gram, -1))
                    if kept is not None and len(kept) < self.n_examples:
                        span = " ".join(doc.words[start:start + n])
                        if span not in kept:
                            kept.append(span)
        return found

    def ranking(self) -> pd.DataFrame:
        """Teachers from most to least likely (ties: alphabetical)."""
        if self.n_outputs == 0:
            raise model_error("E209")
        boot = (self._boot_sum, self._boot_count) if self.model.n_bootstrap else (None, None)
        return rank_teachers(self.classes, self.sum_log_proba, self.n_outputs, *boot)

    def p_unlisted(self) -> float | None:
        """:func:`unlisted_p_value` for the outputs seen so far."""
        if self.n_outputs == 0:
            raise model_error("E209")
        return unlisted_p_value(self.sum_log_proba / self.n_outputs, self.n_outputs,
                                self.model.unlisted_log_proba_, random_state=self.model.random_state)

    def paired_result(self, teacher: str) -> dict[str, Any] | None:
        """The paired test of ``teacher`` against every other candidate over the outputs seen so
        far whose prompt the teachers answered (:meth:`attribution.paired.PairedTest.result`);
        ``None`` when the model kept no paired answers or too few outputs matched."""
        return self.paired.result(teacher) if self.paired is not None else None

    def share_of_outputs(self, feature: str) -> float:
        """Share of the outputs seen so far that contain ``feature`` (``"block:n-gram"``, as in
        :meth:`TeacherAttributor.get_feature_names_out`): does this student use a template?"""
        if self.n_outputs == 0:
            raise model_error("E209")
        names = self.model.get_feature_names_out()
        column = np.flatnonzero(names == feature)
        if column.size == 0:
            raise model_error("E211", feature=feature, example=str(names[0]) if names.size else "pos:DT NN")
        return float(self.feature_outputs[column[0]] / self.n_outputs)

    def templates(self, teacher: str | None = None, top: int = 10, min_n: int = 2) -> pd.DataFrame:
        """The templates that pushed this student towards ``teacher`` (default: the top one).

        ``weight`` is the feature's summed contribution to the teacher's logit over all
        outputs, relative to the average teacher (higher means more evidence for it).
        Only n-grams of at least ``min_n`` symbols are listed: single tags such as ``NN``
        contribute too, but say little a reader can check.
        """
        if teacher is None:
            teacher = self.ranking().iloc[0]["teacher"]
        k = self.classes.index(teacher)
        coef = self.model.classifier_.coef_
        if coef.shape[0] == 1:  # binary logistic regression: one row for classes_[1]
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        relative = coef[k] - coef.mean(axis=0)
        contribution = self.feature_sums * relative
        names = self.model.get_feature_names_out()
        candidates = [j for j in np.flatnonzero(contribution > 0) if len(names[j].split()) >= min_n]
        order = sorted(candidates, key=lambda j: (-contribution[j], names[j]))[:top]
        spans = self.examples(order)
        rows = []
        for j in order:
            block, feature = names[j].split(":", 1)
            examples = spans.get(j, [feature] if block == "words" else [])
            rows.append({"teacher": teacher, "block": block, "feature": feature,
                         "weight": float(contribution[j]), "n_outputs": int(self.feature_outputs[j]),
                         "share_of_outputs": float(self.feature_outputs[j] / self.n_outputs),
                         "examples": list(examples)})
        return pd.DataFrame(rows, columns=["teacher", "block", "feature", "weight", "n_outputs",
                                           "share_of_outputs", "examples"])


class MultiTaskAttributor:
    """One :class:`TeacherAttributor` per task, with a combined verdict across tasks.

    Records without a task share the task ``None``. Parameters are passed to each
    per-task attributor.

    Attributes
    ----------
    models_ : dict of str or None to TeacherAttributor
    classes_ : list of str
        Teachers known to every task (the combined ranking is over these).
    """

    def __init__(self, **params: Any) -> None:
        self.params = params

    def fit(self, texts: Sequence[str], teachers: Sequence[str],
            tasks: Sequence[str | None] | None = None,
            prompt_ids: Sequence[str | None] | None = None, *,
            progress: Callable[[int], None] | None = None) -> MultiTaskAttributor:
        """Fit one attributor per task (texts are tagged once, together); ``prompt_ids`` as in
        :meth:`TeacherAttributor.fit`; ``progress`` is called with the number of texts tagged, per batch."""
        texts = _check_texts(texts)
        tasks = list(tasks) if tasks is not None else [None] * len(texts)
        ids = list(prompt_ids) if prompt_ids is not None else [None] * len(texts)
        if not (len(texts) == len(teachers) == len(tasks) == len(ids)):
            raise model_error("E203", n_texts=len(texts), n_labels=len(teachers))
        probe = TeacherAttributor(**self.params)
        if progress is None:
            docs = probe.prepare(texts)
        else:  # the same tags (a text is tagged once per process), a few batches at a time (several
            docs = []  # batches per call keep the workers of attribution.parallel.dask_tagging busy together)
            step = 4 * probe.batch_size
            for start in range(0, len(texts), step):
                docs.extend(probe.prepare(texts[start:start + step]))
                progress(len(docs) - start)
        self.models_: dict[str | None, TeacherAttributor] = {}
        for task in sorted(set(tasks), key=lambda t: (t is not None, t or "")):
            idx = [i for i, t in enumerate(tasks) if t == task]
            task_teachers = [str(teachers[i]) for i in idx]
            if len(set(task_teachers)) < 2:
                raise model_error("E201", n=len(set(task_teachers)), teachers=sorted(set(task_teachers)))
            model = TeacherAttributor(**self.params)
            self.models_[task] = model.fit_docs([docs[i] for i in idx], task_teachers, [ids[i] for i in idx])
        self._set_classes()
        return self

    def _set_classes(self) -> None:
        common = set.intersection(*(set(m.classes_.tolist()) for m in self.models_.values()))
        self.classes_ = sorted(common)

    @property
    def tasks(self) -> list[str | None]:
        return list(self.models_)

    def task_key(self, task: str | None) -> str | None:
        """Which fitted task serves ``task``: itself, or ``None`` for a model fitted without tasks."""
        if not hasattr(self, "models_"):
            raise NotFittedError(Errors.E204.format(name=type(self).__name__), code="E204")
        if task in self.models_:
            return task
        if list(self.models_) == [None]:
            return None
        raise model_error("E208", task=task, known=", ".join(str(t) for t in self.models_))

    def model_for(self, task: str | None) -> TeacherAttributor:
        """The attributor of one task; a model fitted without tasks serves every task."""
        key = self.task_key(task)  # checks fitted first
        return self.models_[key]

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted model to one ``.npz`` file (atomically; no pickle)."""
        save_model(self, path)


# Saving and loading (with the checks a file from anyone needs) live in their own module.
from .persistence import MODEL_FORMAT, load_model, save_model  # noqa: E402
