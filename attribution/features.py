"""PoS-template and word n-gram featurizers sharing one n-gram core.

A *PoS template* is a sequence of ``n`` consecutive Penn Treebank tags, e.g.
``DT NN VBZ DT``; the paper found that students reproduce their teacher's
templates. Word n-grams are the same thing over lower-cased words. Both are
:class:`SequenceNgramVectorizer` instances reading a different field of a
:class:`~attribution.tagging.TaggedDoc`, so they count, select and weight n-grams
identically and never cross document boundaries.

Inputs are lists of ``TaggedDoc`` (tag once, featurize many times) or of raw strings,
which are normalized and tagged with the vectorizer's ``tagger`` exactly as the estimator
does (:func:`attribution.tagging.prepare_docs`).

A subclass reads another sequence by overriding :meth:`SequenceNgramVectorizer.symbols`
(and, for n-grams not written with spaces between symbols, :meth:`~SequenceNgramVectorizer.join`
and :meth:`~SequenceNgramVectorizer.split`); feature sets and vectorizers are registered in
:mod:`attribution.registry` (see :mod:`attribution.chars` for a whole example).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
from typing import Any, cast

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin

from . import registry
from .errors import Errors, NotFittedError, model_error
from .tagging import TaggedDoc, prepare_docs

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


#: Tokens per chunk when fitting (:meth:`SequenceNgramVectorizer.fit_transform`): bounds the memory
#: of counting n-gram occurrences (about 100 bytes each while a chunk is counted).
CHUNK_TOKENS = 250_000


def _chunks(docs: Sequence[TaggedDoc]) -> Iterator[Sequence[TaggedDoc]]:
    """Consecutive slices of ``docs`` of about :data:`CHUNK_TOKENS` tokens (at least one document each)."""
    start, tokens = 0, 0
    for i, doc in enumerate(docs):
        tokens += len(doc)
        if tokens >= CHUNK_TOKENS:
            yield docs[start:i + 1]
            start, tokens = i + 1, 0
    if start < len(docs):
        yield docs[start:]


def _columns(rows: np.ndarray, codes: np.ndarray, sorted_codes: np.ndarray,
             columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The occurrences (``rows``, ``codes``) whose code is in ``sorted_codes``, as (rows, their columns)."""
    if len(sorted_codes) == 0:
        return rows[:0], rows[:0]
    at = np.minimum(np.searchsorted(sorted_codes, codes), len(sorted_codes) - 1)
    hit = sorted_codes[at] == codes
    return rows[hit], columns[at[hit]]


class _NgramTotals:
    """Running totals of n-gram codes over chunks: sorted distinct ``codes``, their occurrences
    (``total``) and the documents holding them (``df``)."""

    def __init__(self) -> None:
        self.codes: np.ndarray = np.zeros(0, dtype=np.int64)
        self.total: np.ndarray = np.zeros(0, dtype=np.int64)
        self.df: np.ndarray = np.zeros(0, dtype=np.int64)

    def add(self, codes: np.ndarray, total: np.ndarray, df: np.ndarray) -> None:
        """Add one chunk's sorted distinct ``codes`` and their counts (two sorted runs: a linear merge)."""
        if not len(self.codes):
            self.codes, self.total, self.df = codes, total.astype(np.int64), df.astype(np.int64)
            return
        merged = np.concatenate([self.codes, codes])
        order = np.argsort(merged, kind="stable")
        merged = merged[order]
        first = np.ones(len(merged), dtype=bool)
        first[1:] = merged[1:] != merged[:-1]
        starts = np.flatnonzero(first)
        self.codes = merged[starts]
        self.total = np.add.reduceat(np.concatenate([self.total, total])[order], starts)
        self.df = np.add.reduceat(np.concatenate([self.df, df])[order], starts)


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

    #: Whether an n-gram's evidence is better shown with the words it occurs in (PoS tags, characters:
    #: yes; word n-grams are readable as they are). See :meth:`find_spans`.
    explained_by_words = True

    # -- validation and input --------------------------------------------------------
    def _validate_params(self) -> None:
        span = self._range()
        # PosTemplateVectorizer takes ``n`` instead of ``ngram_range``: name the parameter the user set
        span_name, span_expected = (("ngram_range", "n-gram lengths with 1 <= n_min <= n_max")
                                    if hasattr(self, "ngram_range") else ("n", "an int >= 1"))
        checks = [
            ("source", "source" not in self.get_params() or self.source in SOURCES, f"one of {SOURCES}"),
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
        items = list(X)
        if items and isinstance(items[0], str):
            return prepare_docs(cast("list[str]", items), tagger=self.tagger)
        return cast("list[TaggedDoc]", items)

    def _source(self) -> str:
        return self.source

    def _range(self) -> tuple[int, int]:
        low, high = self.ngram_range
        return int(low), int(high)

    # -- the public sequence API (what subclasses and evidence use) ------------------------
    def symbols(self, doc: TaggedDoc) -> Sequence[str | None]:
        """The sequence whose n-grams are counted; ``None`` marks a boundary no n-gram crosses."""
        if self._source() == "tags":
            return doc.tags
        return [w.lower() for w in doc.words] if getattr(self, "lowercase", True) else doc.words

    def join(self, symbols: Sequence[str]) -> str:
        """An n-gram's name from its symbols (the inverse of :meth:`split`)."""
        return " ".join(symbols)

    def split(self, name: str) -> list[str]:
        """An n-gram's symbols from its name."""
        return name.split(" ")

    def find_spans(self, doc: TaggedDoc, grams: dict[str, Any]) -> Iterator[tuple[str, str]]:
        """``(gram, words)`` for each occurrence in ``doc`` of an n-gram in ``grams``, in order:
        the words a PoS template covers (what a reader is shown as evidence)."""
        lengths = sorted({len(self.split(g)) for g in grams})
        symbols = self.symbols(doc)
        for n in lengths:
            for start in range(len(symbols) - n + 1):
                part = symbols[start:start + n]
                if None in part:
                    continue
                gram = self.join(part)  # type: ignore[arg-type]
                if gram in grams:
                    yield gram, " ".join(doc.words[start:start + n])

    # -- the n-gram core: every occurrence as an integer code ----------------------------
    def _encode(self, docs: Sequence[TaggedDoc], table: dict[Any, int], *,
                grow: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Row and code of every n-gram occurrence in ``docs``, shortest n first.

        A symbol's id is ``table[symbol] >= 1``; an n-gram's code is its ids read as
        base-``len(table) + 1`` digits, so codes of different lengths never collide and
        decode back to the n-gram. With ``grow``, new symbols are added to ``table`` (fitting);
        otherwise they get id 0, and n-grams holding one are dropped (none of them can be in
        the vocabulary). Counting codes with numpy is what keeps featurizing cheap next to tagging.
        """
        seqs = [self.symbols(doc) for doc in docs]
        lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        symbols = chain.from_iterable(seqs)
        if grow:
            ids_iter = (table.setdefault(s, len(table) + 1) for s in symbols)
        else:
            get = table.get
            ids_iter = (get(s, 0) for s in symbols)
        ids = np.fromiter(ids_iter, dtype=np.int64, count=int(lengths.sum()))
        if None in table:  # a boundary (see symbols): no n-gram holding it is counted
            ids[ids == table[None]] = 0
        base = len(table) + 1
        n_min, n_max = self._range()
        ids = ids.astype(self._code_dtype(base), copy=False)
        doc_of = np.repeat(np.arange(len(seqs)), lengths)
        doc_end = np.repeat(np.cumsum(lengths), lengths)
        rows, codes = [], []
        for n in range(n_min, n_max + 1):
            m = len(ids) - n + 1
            if m <= 0:
                continue
            code = ids[:m].copy()
            keep = np.arange(m) + n <= doc_end[:m]  # the n-gram does not cross into the next doc
            for k in range(n):
                part = ids[k:k + m]
                keep &= part != 0
                if k:
                    code = code * base + part
            rows.append(doc_of[:m][keep])
            codes.append(code[keep])
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=ids.dtype)
        return np.concatenate(rows), np.concatenate(codes)

    def _code_dtype(self, base: int) -> type:
        """int64 when every code fits, else exact Python integers (a huge vocabulary: slower)."""
        return np.int64 if base ** self._range()[1] < 2 ** 63 else object

    def _decode(self, code: int, symbols: list[str], base: int) -> str:
        """The n-gram behind a code (``symbols[id]`` is the symbol with that id)."""
        parts = []
        code = int(code)
        while code:
            code, digit = divmod(code, base)
            parts.append(symbols[digit])
        return self.join(parts[::-1])

    # -- estimator API -----------------------------------------------------------------
    def fit(self, X: Sequence[TaggedDoc | str], y: Any = None) -> SequenceNgramVectorizer:
        """Learn the vocabulary (and IDF) from training documents."""
        self.fit_transform(X)
        return self

    def fit_transform(self, X: Sequence[TaggedDoc | str], y: Any = None, **fit_params: Any) -> sp.csr_matrix:
        """:meth:`fit` then :meth:`transform`.

        Documents are counted and featurized in chunks of about :data:`CHUNK_TOKENS` tokens, so memory
        holds the n-gram counts, never every occurrence at once (the same vocabulary and matrix as in one
        piece: the counts are integers and each row depends on its document only).
        """
        docs = self._docs_checked(X)
        table: dict[Any, int] = {}
        for symbol in chain.from_iterable(map(self.symbols, docs)):
            table.setdefault(symbol, len(table) + 1)
        counts = _NgramTotals()
        for part in _chunks(docs):
            rows, codes = self._encode(part, table)
            uniq, inverse = np.unique(codes, return_inverse=True)
            total = np.bincount(inverse, minlength=len(uniq))
            df = (np.bincount(np.unique(rows * len(uniq) + inverse) % len(uniq), minlength=len(uniq))
                  if self.weighting == "tfidf" else total)
            counts.add(uniq, total, df)
        uniq, total, df = counts.codes, counts.total, counts.df
        # most frequent first, ties alphabetical; only n-grams that can make the cut are decoded
        candidates = np.arange(len(uniq))
        if self.top_k is not None and self.top_k < len(uniq):
            kth = np.partition(total, len(uniq) - self.top_k)[len(uniq) - self.top_k]
            candidates = np.flatnonzero(total >= kth)
        symbols = ["", *table]
        names = [self._decode(uniq[i], symbols, len(table) + 1) for i in candidates]
        order = sorted(range(len(candidates)), key=lambda i: (-total[candidates[i]], names[i]))
        order = order[:self.top_k] if self.top_k is not None else order
        kept = candidates[order]
        self.vocabulary_ = {names[i]: col for col, i in enumerate(order)}
        if self.weighting == "tfidf":
            self.idf_: np.ndarray | None = np.log((1 + len(docs)) / (1 + df[kept].astype(float))) + 1.0
        else:
            self.idf_ = None
        sorted_kept = np.argsort(uniq[kept], kind="stable")
        kept_codes, columns = uniq[kept][sorted_kept], sorted_kept.astype(np.int64)
        parts = []
        for part in _chunks(docs):
            rows, codes = self._encode(part, table)
            parts.append(self._matrix(*_columns(rows, codes, kept_codes, columns), len(part)))
        if not parts:
            return self._matrix(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 0)
        return sp.vstack(parts, format="csr") if len(parts) > 1 else parts[0]

    def _docs_checked(self, X: Sequence[TaggedDoc | str]) -> list[TaggedDoc]:
        self._validate_params()
        return self._docs(X)

    def _lookup(self) -> tuple[dict[str, int], np.ndarray, np.ndarray]:
        """Symbol table, sorted codes and their columns for the fitted vocabulary (cached)."""
        cached = getattr(self, "_lookup_cache", None)
        if cached is not None and cached[0] is self.vocabulary_:
            return cached[1]
        grams = [self.split(gram) for gram in self.get_feature_names_out()]
        table: dict[str, int] = {}
        for gram in grams:
            for symbol in gram:
                table.setdefault(symbol, len(table) + 1)
        base = len(table) + 1
        gram_codes: list[int] = []
        for gram in grams:
            code = 0
            for symbol in gram:
                code = code * base + table[symbol]
            gram_codes.append(code)
        codes: np.ndarray = np.asarray(gram_codes, dtype=self._code_dtype(base))
        order = np.argsort(codes, kind="stable")
        lookup = (table, codes[order], order.astype(np.int64))
        self._lookup_cache = (self.vocabulary_, lookup)
        return lookup

    def transform(self, X: Sequence[TaggedDoc | str]) -> sp.csr_matrix:
        """Documents as a sparse (n_docs, n_features) matrix."""
        if not hasattr(self, "vocabulary_"):
            raise NotFittedError(Errors.E204.format(name=type(self).__name__), code="E204")
        docs = self._docs(X)
        table, sorted_codes, columns = self._lookup()
        rows, codes = self._encode(docs, table)
        return self._matrix(*_columns(rows, codes, sorted_codes, columns), len(docs))

    def _matrix(self, rows: np.ndarray, cols: np.ndarray, n_docs: int) -> sp.csr_matrix:
        """Counts of (row, column) occurrences, weighted."""
        matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_docs, len(self.vocabulary_)))
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
        names = sorted(self.vocabulary_, key=self.vocabulary_.__getitem__)
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
        """Rebuild a fitted vectorizer from :meth:`get_state` output.

        ``meta["class"]`` picks a class of the ``vectorizers`` registry (classes register under
        their own name); a name nobody registered is an error, never an import.
        """
        klass = registry.vectorizers.get(meta["class"])
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

    explained_by_words = False


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


# -- the built-in feature sets (registered in attribution.registry) -------------------------------
#: ``pos-paper`` and ``ngram-paper`` are the paper's presets; the others were chosen by
#: measurement (docs/results.md). A feature set returns fresh ``[(block, vectorizer), ...]``.
def pos_paper() -> list[tuple[str, SequenceNgramVectorizer]]:
    return [("pos", PosTemplateVectorizer(n=4, top_k=50, weighting="binary"))]


def ngram_paper() -> list[tuple[str, SequenceNgramVectorizer]]:
    return [("words", WordNgramVectorizer(ngram_range=(1, 3), top_k=10_000, weighting="count"))]


def pos_rich() -> list[tuple[str, SequenceNgramVectorizer]]:
    return [("pos", SequenceNgramVectorizer(source="tags", ngram_range=(1, 4), top_k=2_000, weighting="tfidf"))]


def ngram_tfidf() -> list[tuple[str, SequenceNgramVectorizer]]:
    return [("words", WordNgramVectorizer(ngram_range=(1, 3), top_k=20_000, weighting="tfidf"))]


def combined() -> list[tuple[str, SequenceNgramVectorizer]]:
    return [*pos_rich(), ("words", WordNgramVectorizer(ngram_range=(1, 3), top_k=5_000, weighting="tfidf"))]


#: The feature-set names (the ``feature_sets`` registry: built-ins and installed plugins).
FEATURE_SETS = registry.feature_sets


def make_feature_blocks(name: str, tagger: str = "spacy") -> list[tuple[str, SequenceNgramVectorizer]]:
    """Fresh, unfitted vectorizers for a named feature set (unknown names: E205)."""
    blocks = list(registry.feature_sets.get(name)())
    for _, vectorizer in blocks:
        vectorizer.set_params(tagger=tagger)
    return blocks
