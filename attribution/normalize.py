"""Deterministic cleanup of generated text before tagging.

Released student outputs carry artifacts of the generation pipeline rather than of
the teacher: special tokens (``</s>``, ``<|endoftext|>``), ``####`` answer markers,
``nannan...`` runs from empty cells, and one sentence looped until the length limit.
Left in, they dominate PoS templates (a looped sentence counts its templates a
hundred times) and reward pipeline quirks instead of teacher style. Each rule can be
switched off, and :class:`Normalizer` counts how often each one fired.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

#: Special tokens of common tokenizers (GPT-2, Llama, Mistral, Gemma, ChatML, Llama-3).
SPECIAL_TOKEN_RE = re.compile(
    r"<\|[a-z_]{2,40}\|>"  # <|endoftext|>, <|im_end|>, <|eot_id|>
    r"|</?s>|<pad>|<unk>|<eos>|<bos>|<mask>"
    r"|<(?:start|end)_of_turn>|\[/?INST\]",
    re.IGNORECASE,
)
MARKER_RE = re.compile(r"(?:^|(?<=\s))#{3,}(?=\s|$)")
NAN_RUN_RE = re.compile(r"(?:nan){2,}", re.IGNORECASE)
#: A lone ``nan`` opening a text: a student trained on empty (``NaN``) targets learns to
#: start with it. Elsewhere a lone ``nan`` is left alone (it may be a word).
LEADING_NAN_RE = re.compile(r"^\s*nan\b")
SENTENCE_SPLIT_RE = re.compile(r"(?<=[.!?])\s+")
SPACE_RE = re.compile(r"[ \t]+")
BLANK_LINES_RE = re.compile(r"\n\s*\n+")

RULES = ("special_tokens", "markers", "nan_runs", "loops")


@dataclass
class Normalizer:
    """Remove generation artifacts; every rule is on by default.

    Parameters
    ----------
    special_tokens : bool, default=True
        Drop tokenizer control tokens such as ``</s>`` and ``<|endoftext|>``.
    markers : bool, default=True
        Drop ``####`` answer markers.
    nan_runs : bool, default=True
        Drop runs like ``nannannan`` (a serialized missing value, repeated) and a lone
        ``nan`` at the start of a text (``nan **The answer is A**``).
    loops : bool, default=True
        Keep only the first occurrence of each repeated sentence, and drop the
        fragment a looped text was cut off in.

    Attributes
    ----------
    stats : Counter
        How many texts each rule changed, plus ``texts`` seen and ``emptied`` (texts
        with nothing left).

    Examples
    --------
    >>> Normalizer()("#### It is red. It is red. It is re<|endoftext|>")
    'It is red.'
    """

    special_tokens: bool = True
    markers: bool = True
    nan_runs: bool = True
    loops: bool = True
    stats: Counter = field(default_factory=Counter, compare=False, repr=False)

    def __call__(self, text: str) -> str:
        self.stats["texts"] += 1
        for rule in RULES:
            if getattr(self, rule):
                cleaned = getattr(self, f"_{rule}")(text)
                if cleaned != text:
                    self.stats[rule] += 1
                    text = cleaned
        text = BLANK_LINES_RE.sub("\n\n", SPACE_RE.sub(" ", text)).strip()
        if not text:
            self.stats["emptied"] += 1
        return text

    @staticmethod
    def _special_tokens(text: str) -> str:
        return SPECIAL_TOKEN_RE.sub(" ", text)

    @staticmethod
    def _markers(text: str) -> str:
        return MARKER_RE.sub(" ", text)

    @staticmethod
    def _nan_runs(text: str) -> str:
        return LEADING_NAN_RE.sub(" ", NAN_RUN_RE.sub(" ", text))

    @staticmethod
    def _loops(text: str) -> str:
        sentences = SENTENCE_SPLIT_RE.split(text.strip())
        seen: set[str] = set()
        kept: list[str] = []
        for sentence in sentences:
            key = " ".join(sentence.lower().split())
            if key in seen:
                continue
            seen.add(key)
            kept.append(sentence)
        looped = len(kept) < len(sentences)
        if looped and len(kept) > 1 and kept[-1] and kept[-1][-1] not in ".!?\"')":
            kept.pop()  # the cut-off repetition, e.g. "It is re"
        return " ".join(kept) if looped else text


def normalize_text(text: str, **rules: bool) -> str:
    """Normalize one text with the default rules (see :class:`Normalizer`)."""
    return Normalizer(**rules)(text)  # type: ignore[arg-type]  # rules are the boolean fields, never stats


def normalize_texts(texts: Iterable[str], *, normalize: bool = True) -> list[str]:
    """``texts`` after the default normalization (unchanged without ``normalize``): how every text is
    prepared before it is tagged or scored (the estimator, vectorizers given raw strings, the empty rule)."""
    if not normalize:
        return list(texts)
    normalizer = Normalizer()
    return [normalizer(t) for t in texts]


def is_empty(text: str) -> bool:
    """Whether an output carries no evidence: nothing but whitespace left in the text as scored.

    The one rule behind "an output empty after normalization is not evidence", wherever outputs are
    counted (references per teacher, student verdicts, evaluation, baselines): apply it to the
    normalized text when normalizing (see :func:`empty_outputs`). A tagged document of such a text has
    no tokens (:attr:`attribution.tagging.TaggedDoc.is_empty`), and a text with any other character has.
    """
    return not text.strip()


def empty_outputs(texts: Iterable[str], *, normalize: bool = True) -> list[bool]:
    """:func:`is_empty` of each text, after the default normalization when ``normalize``."""
    return [is_empty(t) for t in normalize_texts(texts, normalize=normalize)]
