"""PoS-template and word n-gram featurizers sharing one n-gram core.

A *PoS template* is a sequence of ``n`` consecutive Penn Treebank tags, e.g.
``DT NN VBZ DT``; the paper found that students reproduce their teacher's
templates. Word n-grams are the same thing over lower-cased words. Both are
:class:`SequenceNgramVectorizer` instances reading a different field of a
:class:`~attribution.tagging.TaggedDoc`, so they count, select and weight n-grams
identically and never cross document boundaries.

Inputs are lists of ``TaggedDoc`` (tag once, featurize many times) or of raw strings,
which are tagged with the vectorizer's ``tagger``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin

from .errors import Errors, NotFittedError, model_error
from .tagging import TaggedDoc, get_tagger

SOURCES = ("tags", "words")
WEIGHTINGS = ("binary", "count", "tfidf")


def ngrams(symbols: Sequence[str], n: int) -> list[str]:
    """The n-grams of ``symbols`` in order of their start, joined by single spaces."""
    if n == 1:
        return list(symbols)
    return [" ".join(gram) for gram in zip(*(symbols[i:] for i in range(n)))]


def iter_ngrams(symbols: Sequence[str], n_min: int, n_max: int) -> Iterator[str]:
    """All n-grams of ``symbols`` with ``n_min <= n <= n_max``, shortest first."""
    for n in range(n_min, n_max + 1):
        yield from ngrams(symbols, n)


class SequenceNgramVectorizer(TransformerMixin, BaseEstimator):
    """Count n-grams of tags or words and keep the ``top_k`` most frequent.

    Parameters
    ----------
    source : {"tags", "words"}, default="tags"
        Which sequence of a tagged document to read.
    ngram_range : tuple of int, default=(4, 4)
        Smallest and largest n.
    top_k : int or None, default=50
        Keep this many n-grams, the most frequent over all training documents
        (ties: alphabetical); ``None`` keeps all.
    weighting : {"binary", "count", "tfidf"}, default="binary"
        Presence, raw counts, or sublinear TF-IDF with l2 rows.
    lowercase : bool, default=True
        Lower-case words (ignored for tags).
    tagger : str, default="spacy"
        Tagger used when raw strings are passed (see :func:`attribution.tagging.get_tagger`).

    Attributes
    ----------
    vocabulary_ : dict of str to int
        Column of each kept n-gram.
    idf_ : ndarray of shape (n_features,) or None
        Inverse document frequencies when ``weighting="tfidf"``.
    """

    def __init__(self, *, source: str = "tags", ngram_range: tuple[int, int] = (4, 4),
                 top_k: int | None = 50, weighting: str = "binary", lowercase: bool = True,
                 tagger: str = "spacy") -> None:
        self.source = source
        self.ngram_range = ngram_range
        self.top_k = top_k
        self.weighting = weighting
        self.lowercase = lowercase
        self.tagger = tagger

    # -- validation and input --------------------------------------------------------
    def _validate_params(self) -> None:
        span = self._range()
        # PosTemplateVectorizer takes ``n`` instead of ``ngram_range``: name the parameter the user set
        span_name, span_expected = (("ngram_range", "n-gram lengths with 1 <= n_min <= n_max")
                                    if hasattr(self, "ngram_range") else ("n", "an int >= 1"))
        checks = [
            ("source", self._source() in SOURCES, f"one of {SOURCES}"),
            ("weighting", self.weighting in WEIGHTINGS, f"one of {WEIGHTINGS}"),
            (span_name, len(span) == 2 and all(isinstance(v, int) for v in span)
             and 1 <= span[0] <= span[1], span_expected),
            ("top_k", self.top_k is None or (isinstance(self.top_k, int) and self.top_k > 0),
             "a positive int or None"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise model_error("E210", name=name, expected=expected, got=getattr(self, name))

    def _docs(self, X: Sequence[TaggedDoc | str]) -> list[TaggedDoc]:
        if isinstance(X, str):
            raise ValueError(Errors.E202)
        X = list(X)
        if X and isinstance(X[0], str):
            return get_tagger(self.tagger).tag(X)
        return X

    def _source(self) -> str:
        return self.source

    def _range(self) -> tuple[int, int]:
        return tuple(self.ngram_range)

    def _symbols(self, doc: TaggedDoc) -> Sequence[str]:
        if self._source() == "tags":
            return doc.tags
        return [w.lower() for w in doc.words] if getattr(self, "lowercase", True) else doc.words

    def _counts(self, doc: TaggedDoc) -> Counter:
        n_min, n_max = self._range()
        return Counter(iter_ngrams(self._symbols(doc), n_min, n_max))

    # -- estimator API -----------------------------------------------------------------
    def fit(self, X: Sequence[TaggedDoc | str], y: Any = None) -> SequenceNgramVectorizer:
        """Learn the vocabulary (and IDF) from training documents."""
        self._fit_counts([self._counts(doc) for doc in self._docs_checked(X)])
        return self

    def fit_transform(self, X: Sequence[TaggedDoc | str], y: Any = None, **fit_params: Any) -> sp.csr_matrix:
        """:meth:`fit` then :meth:`transform`, counting each document's n-grams once."""
        counts = [self._counts(doc) for doc in self._docs_checked(X)]
        self._fit_counts(counts)
        return self._matrix(counts)

    def _docs_checked(self, X: Sequence[TaggedDoc | str]) -> list[TaggedDoc]:
        self._validate_params()
        return self._docs(X)

    def _fit_counts(self, per_doc: list[Counter]) -> None:
        # Counting from flat iterables and sorting on itemgetter keys keeps this in C:
        # it was the slowest step of fitting.
        total = Counter(chain.from_iterable(counts.elements() for counts in per_doc))
        doc_freq = Counter(chain.from_iterable(per_doc))
        # most frequent first, ties alphabetical: sort by n-gram, then stably by count
        ranked = sorted(sorted(total.items(), key=itemgetter(0)), key=itemgetter(1), reverse=True)
        if self.top_k is not None:
            ranked = ranked[:self.top_k]
        self.vocabulary_ = {gram: i for i, (gram, _) in enumerate(ranked)}
        if self.weighting == "tfidf":
            df = np.array([doc_freq[g] for g, _ in ranked], dtype=float)
            self.idf_ = np.log((1 + len(per_doc)) / (1 + df)) + 1.0
        else:
            self.idf_ = None

    def transform(self, X: Sequence[TaggedDoc | str]) -> sp.csr_matrix:
        """Documents as a sparse (n_docs, n_features) matrix."""
        if not hasattr(self, "vocabulary_"):
            raise NotFittedError(Errors.E204.format(name=type(self).__name__), code="E204")
        return self._matrix([self._counts(doc) for doc in self._docs(X)])

    def _matrix(self, per_doc: list[Counter]) -> sp.csr_matrix:
        vocabulary = self.vocabulary_
        indptr, cols, vals = [0], [], []
        for counts in per_doc:
            hits = [(vocabulary[g], c) for g, c in counts.items() if g in vocabulary]
            cols.extend(j for j, _ in hits)
            vals.extend(c for _, c in hits)
            indptr.append(len(cols))
        matrix = sp.csr_matrix((np.asarray(vals, dtype=float), np.asarray(cols, dtype=np.int64), indptr),
                               shape=(len(per_doc), len(vocabulary)))
        matrix.sum_duplicates()
        if self.weighting == "binary":
            matrix.data[:] = 1.0
        elif self.weighting == "tfidf":
            matrix.data = 1.0 + np.log(matrix.data)
            matrix = matrix @ sp.diags(self.idf_)
            norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
            norms[norms == 0] = 1.0
            matrix = sp.diags(1.0 / norms) @ matrix
        return sp.csr_matrix(matrix)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The kept n-grams in column order."""
        if not hasattr(self, "vocabulary_"):
            raise NotFittedError(Errors.E204.format(name=type(self).__name__), code="E204")
        names = sorted(self.vocabulary_, key=self.vocabulary_.get)
        return np.asarray(names, dtype=object)

    # -- persistence (plain JSON + arrays, no pickle) ----------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Fitted state as a JSON-able dict and named arrays."""
        meta = {"params": _jsonable(self.get_params()), "class": type(self).__name__,
                "vocabulary": list(self.get_feature_names_out())}
        arrays = {"idf": self.idf_} if self.idf_ is not None else {}
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> SequenceNgramVectorizer:
        """Rebuild a fitted vectorizer from :meth:`get_state` output."""
        klass = {c.__name__: c for c in (SequenceNgramVectorizer, PosTemplateVectorizer,
                                         WordNgramVectorizer)}[meta["class"]]
        params = dict(meta["params"])
        for key in ("ngram_range",):
            if key in params:
                params[key] = tuple(params[key])
        self = klass(**params)
        self.vocabulary_ = {g: i for i, g in enumerate(meta["vocabulary"])}
        self.idf_ = arrays.get("idf")
        return self


class PosTemplateVectorizer(SequenceNgramVectorizer):
    """PoS templates: tag n-grams of one length. Defaults are the paper's preset.

    Parameters
    ----------
    n : int, default=4
        Template length.
    top_k : int or None, default=50
        Most frequent templates over all reference outputs.
    weighting : {"binary", "count", "tfidf"}, default="binary"
        The paper uses presence.
    tagger : str, default="spacy"

    References
    ----------
    Wadhwa et al., "Who Taught You That? Tracing Teachers in Model Distillation",
    Findings of ACL 2025 (arXiv 2502.06659).

    Examples
    --------
    >>> vec = PosTemplateVectorizer(n=2, top_k=3).fit(["The cat sat.", "A dog ran."])
    >>> list(vec.get_feature_names_out())
    ['DT NN', 'NN VBD', 'VBD .']
    """

    def __init__(self, *, n: int = 4, top_k: int | None = 50, weighting: str = "binary",
                 tagger: str = "spacy") -> None:
        self.n = n
        self.top_k = top_k
        self.weighting = weighting
        self.tagger = tagger

    def _source(self) -> str:
        return "tags"

    def _range(self) -> tuple[int, int]:
        return (self.n, self.n) if isinstance(self.n, int) else (0, 0)


class WordNgramVectorizer(SequenceNgramVectorizer):
    """Lower-cased word n-grams; defaults are the paper's baseline (1-3 grams, 10,000, counts)."""

    def __init__(self, *, ngram_range: tuple[int, int] = (1, 3), top_k: int | None = 10_000,
                 weighting: str = "count", lowercase: bool = True, tagger: str = "spacy") -> None:
        self.ngram_range = ngram_range
        self.top_k = top_k
        self.weighting = weighting
        self.lowercase = lowercase
        self.tagger = tagger

    def _source(self) -> str:
        return "words"


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


#: Named feature sets: lists of (block name, vectorizer factory). ``pos-paper`` and
#: ``ngram-paper`` are the paper's presets; the others were chosen by measurement
#: (see README, "Choosing the defaults").
FEATURE_SETS: dict[str, list[tuple[str, Any]]] = {
    "pos-paper": [("pos", lambda: PosTemplateVectorizer(n=4, top_k=50, weighting="binary"))],
    "ngram-paper": [("words", lambda: WordNgramVectorizer(ngram_range=(1, 3), top_k=10_000,
                                                          weighting="count"))],
    "pos-rich": [("pos", lambda: SequenceNgramVectorizer(source="tags", ngram_range=(1, 4),
                                                         top_k=2_000, weighting="tfidf"))],
    "ngram-tfidf": [("words", lambda: WordNgramVectorizer(ngram_range=(1, 3), top_k=20_000,
                                                          weighting="tfidf"))],
    "combined": [
        ("pos", lambda: SequenceNgramVectorizer(source="tags", ngram_range=(1, 4), top_k=2_000,
                                                weighting="tfidf")),
        ("words", lambda: WordNgramVectorizer(ngram_range=(1, 3), top_k=5_000, weighting="tfidf")),
    ],
}


def make_feature_blocks(name: str, tagger: str = "spacy") -> list[tuple[str, SequenceNgramVectorizer]]:
    """Fresh, unfitted vectorizers for a named feature set."""
    if name not in FEATURE_SETS:
        raise model_error("E205", name=name, choices=", ".join(FEATURE_SETS))
    blocks = []
    for block, factory in FEATURE_SETS[name]:
        vectorizer = factory()
        vectorizer.set_params(tagger=tagger)
        blocks.append((block, vectorizer))
    return blocks
