"""The teacher attributor: fit on teachers' reference outputs, score outputs, rank a student.

:class:`TeacherAttributor` follows scikit-learn's estimator API (``fit`` / ``predict_proba`` /
``predict``) for single outputs and adds :meth:`~TeacherAttributor.rank`, a verdict for a *student*
from all of its outputs (the student-level statistics live in :mod:`attribution.inference`, the
templates behind a ranking in :mod:`attribution.explain`). Fitting also fits the null of the
unlisted-teacher test: one model per left-out teacher.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from . import __version__, registry
from .errors import Errors, NotFittedError, model_error
from .families import Hierarchy
from .features import SequenceNgramVectorizer, make_feature_blocks
from .fitcache import fit_classifier
from .inference import StudentEvidence, judge
from .normalize import normalize_texts
from .paired import PairedReferences
from .schema import Bool, Enum, Int, Num, OneOf, Opt, SchemaError, Spec, Str
from .tagging import TaggedDoc, get_tagger
from .verdicts import VerdictRule

DEFAULT_FEATURES = registry.DEFAULT_FEATURE_SET

#: What each parameter of :class:`TeacherAttributor` must be, one line each; ``fit`` checks them before
#: any work and names the parameter, what it must be and what it got (E210). The model-file schema
#: (:data:`attribution.persistence.PARAMS`) reads the same table, so whatever fits also saves and loads.
#: The feature set and the tagger are names looked up in their registries, which keep their own codes
#: (E205; E302 when the tagger loads: a spaCy package or pipeline directory may also be named).
PARAMETER_CONSTRAINTS: dict[str, Spec] = {
    "features": OneOf(registry.feature_sets),
    "C": Num(0, 1e9, min_exclusive=True),
    "class_weight": Enum("balanced", None),
    "max_iter": Int(1, 1_000_000),
    "tagger": Str(4096),
    "normalize": Bool(),
    "n_bootstrap": Int(0, 100_000),
    "open_set": Bool(),
    "open_set_min_teachers": Int(2, 1_000),
    "batch_size": Int(1, 1 << 16),
    "paired": Bool(),
    "random_state": Opt(Int(0, 2**64 - 1)),
}


def check_params(params: dict[str, Any]) -> None:
    """Check estimator parameters against :data:`PARAMETER_CONSTRAINTS` (E205 for an unknown feature
    set, else E210 naming the first parameter out of bounds)."""
    registry.feature_sets.entry(params["features"])  # unknown: E205, listing the feature sets
    for name, spec in PARAMETER_CONSTRAINTS.items():
        try:
            spec.check(params[name], name)
        except SchemaError:
            raise model_error("E210", name=name, expected=spec.expected, got=params[name]) from None


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """``texts`` as a list of strings; a bare string (E202) or a non-string item (E210) is refused."""
    if isinstance(texts, str):
        raise ValueError(Errors.E202)
    texts = list(texts)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise model_error("E210", name=f"{name}[{bad}]", expected="a string", got=texts[bad])
    return texts


def reference_share(X: sp.csr_matrix, teachers: np.ndarray, classes: np.ndarray,
                    has_text: Sequence[bool]) -> np.ndarray:
    """Share of each teacher's non-empty outputs (rows of ``X``) in which each feature occurs, shape
    (n_teachers, n_features), float32 (rows follow ``classes``; a teacher without usable outputs: 0)."""
    used = np.asarray(has_text, dtype=bool)
    present = (X != 0).astype(np.float64)
    out = np.zeros((len(classes), X.shape[1]), dtype=np.float32)
    for k, teacher in enumerate(classes):
        rows = np.flatnonzero((teachers == teacher) & used)
        if rows.size:
            out[k] = np.asarray(present[rows].sum(axis=0)).ravel() / rows.size
    return out


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of ``size`` (the last one shorter); a bare string is refused (E202)."""
    if isinstance(items, str):
        raise ValueError(Errors.E202)
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class AttributorParams(BaseEstimator):
    """The parameters of :class:`TeacherAttributor` and :class:`~attribution.multitask.MultiTaskAttributor`
    (documented on the former): one ``__init__`` that only stores them, as scikit-learn's
    ``get_params`` and ``clone`` expect, shared so that the two cannot drift apart."""

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


class TeacherAttributor(ClassifierMixin, AttributorParams):
    """Attribute outputs, and whole students, to one of several candidate teachers.

    Parameters
    ----------
    features : str, default="combined"
        Named feature set (:data:`attribution.registry.feature_sets`, plugins included):

{feature_sets}

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
        from a teacher *outside* the candidates (see :func:`~attribution.inference.unlisted_p_value`). Costs
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
    n_features_in_ : int
        Number of feature columns (``n_features_`` is a deprecated alias).
    signature_ : str
        Reproducibility signature: version, tagger, features, C.
    paired_ : PairedReferences or None
        The teachers' answers to the prompts all of them answered (``None`` without ids).
    reference_share_ : ndarray of shape (n_teachers, n_features), float32, or None
        Share of each teacher's non-empty reference outputs that contain each feature (rows follow
        ``classes_``): what a student's ``share_of_outputs`` of a template is compared with. ``None``
        for a model loaded from a file saved before it was kept.
    reference_count_ : ndarray of shape (n_teachers,), int64, or None
        Each teacher's non-empty reference outputs (the denominators of ``reference_share_``); ``None`` for
        a model loaded from a file saved before it was kept.
    unlisted_log_proba_ : dict of str to ndarray
        For each teacher, log-probabilities of its reference outputs under a model fitted
        *without* it (the null of :func:`~attribution.inference.unlisted_p_value`); empty with fewer than
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

    # -- preparation ---------------------------------------------------------------------
    def prepare(self, texts: Sequence[str], *, cache: bool = True) -> list[TaggedDoc]:
        """Normalize and tag texts; with ``cache`` a text is tagged once per process."""
        return get_tagger(self.tagger, batch_size=self.batch_size).tag(self._normalized(texts), cache=cache)

    def prepare_later(self, texts: Sequence[str]) -> Callable[[], list[TaggedDoc]]:
        """Normalize texts and start tagging them (not cached); the function returned gives the tags
        (see :meth:`attribution.tagging.Tagger.tag_later`: on Dask workers, tagging starts now)."""
        return get_tagger(self.tagger, batch_size=self.batch_size).tag_later(self._normalized(texts))

    def _normalized(self, texts: Sequence[str]) -> list[str]:
        return normalize_texts(check_texts(texts), normalize=self.normalize)

    def featurize(self, docs: Sequence[TaggedDoc]) -> sp.csr_matrix:
        """The feature matrix of tagged documents (columns: :meth:`get_feature_names_out`)."""
        self.check_fitted()
        return sp.hstack([vec.transform(docs) for _, vec in self.blocks_], format="csr")

    @property
    def n_features_(self) -> int:
        """Deprecated alias of ``n_features_in_`` (scikit-learn's name)."""
        warnings.warn("n_features_ is deprecated; use n_features_in_", DeprecationWarning, stacklevel=2)
        return self.n_features_in_

    def check_fitted(self) -> None:
        """Raise :class:`~attribution.errors.NotFittedError` (E204) unless the model is fitted."""
        if not hasattr(self, "classifier_"):
            raise NotFittedError(Errors.E204.format(name=type(self).__name__), code="E204")

    # -- estimator API -------------------------------------------------------------------
    def fit(self, texts: Sequence[str], teachers: Sequence[str],
            prompt_ids: Sequence[str | None] | None = None, *,
            families: Mapping[str, str] | None = None) -> TeacherAttributor:
        """Learn each teacher's style from its reference outputs.

        ``prompt_ids`` (optional, one per text) name the prompt each output answers; the
        teachers' answers to prompts that all of them answered are kept for paired tests.
        ``families`` (optional) maps teachers to model families (:mod:`attribution.families`): the
        ranking and the verdict then work family first. Parameters are checked first
        (:data:`PARAMETER_CONSTRAINTS`).
        """
        check_params(self.get_params())
        texts = check_texts(texts)
        teachers = [str(t) for t in check_texts(teachers, "teachers")]
        if len(texts) != len(teachers):
            raise model_error("E203", n_texts=len(texts), n_labels=len(teachers))
        if len(set(teachers)) < 2:
            raise model_error("E201", n=len(set(teachers)), teachers=sorted(set(teachers)))
        return self.fit_docs(self.prepare(texts), teachers, prompt_ids, families=families)

    def fit_docs(self, docs: Sequence[TaggedDoc], teachers: Sequence[str],
                 prompt_ids: Sequence[str | None] | None = None, *,
                 families: Mapping[str, str] | None = None) -> TeacherAttributor:
        """Fit on already-tagged documents (lets callers tag once for several models)."""
        check_params(self.get_params())
        blocks = make_feature_blocks(self.features, tagger=self.tagger)
        X = sp.hstack([vec.fit_transform(docs) for _, vec in blocks], format="csr")
        return self.fit_features(blocks, X, teachers, prompt_ids, [len(doc) > 0 for doc in docs], families=families)

    def fit_features(self, blocks: list[tuple[str, SequenceNgramVectorizer]], X: sp.csr_matrix,
                     teachers: Sequence[str], prompt_ids: Sequence[str | None] | None = None,
                     has_text: Sequence[bool] | None = None, *,
                     families: Mapping[str, str] | None = None,
                     tagger_signature: str | None = None) -> TeacherAttributor:
        """Fit on feature blocks fitted elsewhere and their matrix of the references (one row per output;
        ``has_text``: which outputs have tokens), e.g. by Dask workers (:mod:`attribution.parallel.fit`);
        ``tagger_signature``: the signature of the tagger that tagged them (else this process loads its own)."""
        check_params(self.get_params())
        self.blocks_ = blocks
        self.classifier_ = self._new_classifier()
        y = np.asarray(teachers)
        self.families_ = {str(t): str((families or {}).get(str(t), str(t))) for t in sorted(set(y.tolist()))}
        with threadpool_limits(1):  # small problem: BLAS threads only add contention (6x slower)
            fit_classifier(self.classifier_, X, y)  # read back from the cache when fitted before
            self.unlisted_log_proba_ = self._fit_unlisted(X, y) if self.open_set else {}
        self.classes_ = self.classifier_.classes_
        self.paired_ = None
        if self.paired and prompt_ids is not None:
            if len(prompt_ids) != X.shape[0]:
                raise model_error("E203", n_texts=X.shape[0], n_labels=len(prompt_ids))
            self.paired_ = PairedReferences.from_references(X, teachers, prompt_ids, self.classes_.tolist())
        used = [True] * X.shape[0] if has_text is None else has_text
        self.reference_share_: np.ndarray | None = reference_share(X, y, self.classes_, used)
        self.reference_count_: np.ndarray | None = np.array(
            [int(np.sum((y == c) & np.asarray(used, dtype=bool))) for c in self.classes_], dtype=np.int64)
        self.n_features_in_ = X.shape[1]
        self.signature_ = self._signature(tagger_signature)
        return self

    def _fit_unlisted(self, X: sp.csr_matrix, y: np.ndarray) -> dict[str, np.ndarray]:
        """Leave each family (without families: each teacher) out, refit, and score its outputs: what a
        student of an unlisted family looks like. Arrays are per-output family log-probabilities over the
        other families (sorted), see :meth:`attribution.families.Hierarchy.family_log_proba`."""
        family_of = self.families_
        families = sorted(set(family_of.values()))
        if not self._open_set_applies(len(families)):
            return {}
        labels = np.asarray([family_of[t] for t in y.tolist()])
        null = {}
        for family in families:
            held_out = labels == family
            model = fit_classifier(self._new_classifier(), X[~held_out], y[~held_out])
            log_proba = np.log(np.clip(model.predict_proba(X[held_out]), 1e-12, 1.0))
            if all(family_of[t] == t for t in model.classes_.tolist()):
                null[family] = log_proba  # teachers are families: the per-teacher log-probabilities
            else:
                null[family] = Hierarchy(model.classes_.tolist(), family_of).family_log_proba(log_proba)
        return null

    def hierarchy(self, exclude: Iterable[str] = ()) -> Hierarchy:
        """The model's teachers grouped into families, less the excluded teachers or families."""
        self.check_fitted()
        return Hierarchy(self.classes_.tolist(), getattr(self, "families_", None), exclude)

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

    def _signature(self, tagger: str | None = None) -> str:
        tagger = tagger or get_tagger(self.tagger, batch_size=self.batch_size).signature
        return (f"teacher-attribution=={__version__}|tagger={tagger}|features={self.features}"
                f"|C={self.C}|normalize={self.normalize}")

    def predict_proba(self, texts: Sequence[str], *, as_frame: bool = False,
                      ids: Sequence[str] | None = None) -> np.ndarray | pd.DataFrame:
        """Probability of each teacher for each output, shape (n_outputs, n_teachers), columns in
        the order of ``classes_``. With ``as_frame=True``, a DataFrame whose columns are the
        teachers and whose index is ``ids`` (one per text, index name ``id``) when given."""
        self.check_fitted()
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
        self.check_fitted()
        return self.classifier_.predict_proba(self.featurize(docs))

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Most likely teacher of each output."""
        return self.classes_[np.argmax(self.predict_proba(texts), axis=1)]

    # -- student-level verdict -------------------------------------------------------------
    def rank(self, texts: Iterable[str], prompt_ids: Iterable[str | None] | None = None, *,
             tests: str | VerdictRule = "either", alpha: float | None = None,
             exclude: Iterable[str] = ()) -> pd.DataFrame:
        """Rank the teachers of one student from all of its outputs, most likely first.

        ``prompt_ids`` (one per text) enable the paired test when the model kept the
        teachers' answers to the same prompts (see :mod:`attribution.paired`). ``exclude`` names
        teachers or families to leave out of this ranking, without refitting.

        Returns
        -------
        DataFrame
            Columns ``teacher``, ``probability`` (sums to 1; higher means more likely
            the teacher), ``support`` (share of bootstrap resamples of the outputs that
            put this teacher first) and ``mean_log_proba``. ``frame.attrs`` holds
            ``n_outputs``, ``p_unlisted`` (see :func:`~attribution.inference.unlisted_p_value`) and ``paired`` (the
            paired test of the top teacher, see :meth:`StudentEvidence.paired_result`, or
            ``None``), and ``verdict`` (:func:`attribution.inference.verdict` of these, under ``tests``
            and ``alpha``). The verdict concerns the top teacher, so its ``verdict`` (status) and
            ``p_value`` columns are filled on the first row only (None and NaN below).

        See Also
        --------
        StudentEvidence : the streaming accumulator behind this method.
        """
        evidence = StudentEvidence(self, exclude=exclude)
        if prompt_ids is None:
            for chunk in chunks(texts, self.batch_size):
                evidence.add(chunk)
        else:
            for chunk in chunks(zip(texts, prompt_ids, strict=True), self.batch_size):
                evidence.add([text for text, _ in chunk], [pid for _, pid in chunk])
        frame = evidence.ranking()
        h = evidence.hierarchy
        family = str(evidence.family_ranking()["family"].iloc[0])
        p_unlisted, paired = evidence.p_unlisted(), evidence.paired_result(family)
        judged = judge({None: evidence}, frame.to_dict("records"), family, h.grouped, len(h.members[family]),
                       VerdictRule.of(tests, alpha))
        frame["verdict"] = [judged.status] + [None] * (len(frame) - 1)
        frame["p_value"] = [judged.p_value] + [None] * (len(frame) - 1)
        frame["p_value"] = frame["p_value"].astype(float)
        frame.attrs.update({"n_outputs": evidence.n_outputs, "p_unlisted": p_unlisted, "paired": paired,
                            "verdict": judged.to_dict()})
        return frame

    def get_feature_names_out(self) -> np.ndarray:
        """Feature names as ``block:ngram``, in column order."""
        self.check_fitted()
        return np.asarray([f"{block}:{name}" for block, vec in self.blocks_
                           for name in vec.get_feature_names_out()], dtype=object)

    # -- persistence -------------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Fitted state as JSON-able metadata and named arrays (see :func:`save_model`)."""
        self.check_fitted()
        meta: dict[str, Any] = {"params": self.get_params(), "classes": self.classes_.tolist(),
                                "signature": self.signature_, "blocks": []}
        arrays = {"coef": self.classifier_.coef_, "intercept": self.classifier_.intercept_}
        family_of = getattr(self, "families_", {})
        if any(family_of.get(c, c) != c for c in meta["classes"]):
            meta["families"] = [family_of.get(c, c) for c in meta["classes"]]
        meta["unlisted"] = sorted(self.unlisted_log_proba_)
        arrays.update({f"unlisted{i}": self.unlisted_log_proba_[t] for i, t in enumerate(meta["unlisted"])})
        if self.paired_ is not None:
            arrays.update(self.paired_.get_state())
        if self.reference_share_ is not None:
            arrays["reference_share"] = self.reference_share_
        if getattr(self, "reference_count_", None) is not None:
            arrays["reference_count"] = self.reference_count_
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
        self.n_features_in_ = classifier.n_features_in_
        self.signature_ = meta["signature"]
        self.families_ = dict(zip(meta["classes"], meta.get("families", meta["classes"])))
        self.unlisted_log_proba_ = {t: np.asarray(arrays[f"unlisted{i}"], dtype=float)
                                    for i, t in enumerate(meta.get("unlisted", []))}
        if not self._open_set_applies(len(set(self.families_.values()))):  # saved before the test needed 4
            self.unlisted_log_proba_ = {}
        self.paired_ = PairedReferences.from_state(arrays, len(self.classes_), self.n_features_in_)
        share = arrays.get("reference_share")  # absent from files saved before it was kept
        self.reference_share_ = None if share is None else np.asarray(share, dtype=np.float32)
        count = arrays.get("reference_count")  # absent from files saved before it was kept
        self.reference_count_ = None if count is None else np.asarray(count, dtype=np.int64)
        return self


if TeacherAttributor.__doc__:  # the feature sets as registered (None under python -OO)
    TeacherAttributor.__doc__ = TeacherAttributor.__doc__.replace("{feature_sets}", registry.feature_set_list(" " * 8))


__all__ = ["DEFAULT_FEATURES", "PARAMETER_CONSTRAINTS", "AttributorParams", "TeacherAttributor", "check_params",
           "check_texts", "chunks", "reference_share"]
