"""Character n-grams within words: the ``char-tfidf`` feature set.

Characters catch what tokens and tags smooth over: markdown (``**``, ``###``), punctuation habits
(``--`` for a dash, a space before ``?``), capitalization and affixes. Like scikit-learn's
``analyzer="char_wb"``, each whitespace-separated word of the normalized text is padded with one
space on each side and n-grams never cross words, so the vocabulary stays bounded by what words
look like rather than by how they follow each other.

This module is the whole feature set: the vectorizer and the preset, registered by one line
each in :mod:`attribution.registry`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from .features import SequenceNgramVectorizer
from .tagging import TaggedDoc


class CharNgramVectorizer(SequenceNgramVectorizer):
    """Character n-grams of each word of the normalized text (padded with spaces).

    Parameters
    ----------
    ngram_range : tuple of int, default=(1, 5)
        Smallest and largest n, in characters (the padding spaces count).
    top_k : int or None, default=20_000
        Keep this many n-grams, the most frequent over all training documents.
    weighting : {"binary", "count", "tfidf"}, default="tfidf"
        Sublinear TF-IDF with l2 rows by default.
    lowercase : bool, default=False
        Lower-case first; off, since capitalization is part of a teacher's style.
    tagger : str, default="spacy"
        Tagger for raw strings (the text and its tokens come from one tagging pass).

    Examples
    --------
    >>> vec = CharNgramVectorizer(ngram_range=(3, 3), top_k=None, weighting="count").fit(["ab ab"])
    >>> list(vec.get_feature_names_out())
    [' ab', 'ab ']
    """

    #: Evidence shows the words an n-gram occurs in (`` **A`` in ``**Answer:**``).
    explained_by_words = True

    def __init__(self, *, ngram_range: tuple[int, int] = (1, 5), top_k: int | None = 20_000,
                 weighting: str = "tfidf", lowercase: bool = False, tagger: str = "spacy") -> None:
        self.ngram_range = ngram_range
        self.top_k = top_k
        self.weighting = weighting
        self.lowercase = lowercase
        self.tagger = tagger

    def symbols(self, doc: TaggedDoc) -> list[str | None]:
        """`` w o r d `` for each word, with a boundary (``None``) between words. A document
        built by hand without ``text`` reads its tokens joined by spaces."""
        text = doc.text if doc.text or not doc.words else " ".join(doc.words)
        if self.lowercase:
            text = text.lower()
        out: list[str | None] = []
        for word in text.split():
            out.extend((" ", *word, " ", None))
        return out

    def join(self, symbols: Sequence[str]) -> str:
        return "".join(symbols)

    def split(self, name: str) -> list[str]:
        return list(name)

    def find_spans(self, doc: TaggedDoc, grams: dict[str, Any]) -> Iterator[tuple[str, str]]:
        """``(gram, word)`` for each word of ``doc`` holding an n-gram of ``grams``."""
        for word in (doc.text or " ".join(doc.words)).split():
            padded = f" {word.lower() if self.lowercase else word} "
            for gram in grams:
                if gram in padded:
                    yield gram, word


def char_tfidf() -> list[tuple[str, SequenceNgramVectorizer]]:
    """The ``char-tfidf`` feature set: one block of character 1-5-grams, top 20,000, TF-IDF."""
    return [("chars", CharNgramVectorizer())]
