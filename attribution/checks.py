"""Checks that catch silent mistakes in the inputs: they warn (stderr and the result's ``warnings``),
they never refuse (issue 12, section 4).

- :class:`OutputChecks`: a student's outputs that repeat another output (whitespace and case aside),
  that are near-empty (fewer than :data:`SHORT_WORDS` words), or that do not read as English (the
  taggers are English-only): counted, and a warning when they are more than :data:`WARN_SHARE`.
- :func:`reference_warnings`: a teacher with fewer than :data:`SMALL_REFERENCE` reference outputs in a
  task, or a task whose teachers are unbalanced (more than :data:`UNBALANCED_RATIO` to 1).

All checks are cheap (no model, no tagger) and stream; repeats are looked for among the first
:data:`MAX_REMEMBERED` outputs only, so memory stays bounded.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

#: Fewest reference outputs per teacher and task before a warning: the learning curves in the README
#: (paper QA) still rise steeply below this many.
SMALL_REFERENCE = 50
#: Largest ratio between a task's most and least represented teacher before a warning.
UNBALANCED_RATIO = 3.0
#: An output of fewer words is near-empty.
SHORT_WORDS = 3
#: Share of repeated, near-empty or non-English outputs above which a warning is given.
WARN_SHARE = 0.05
#: Outputs whose texts are remembered (as 8-byte digests) to find repeats.
MAX_REMEMBERED = 100_000
#: Outputs of at least this many words are checked for English.
LANGUAGE_MIN_WORDS = 20
#: Below this share of English function words an output does not read as English (English prose has
#: about 40%; other languages, code and tables have almost none).
ENGLISH_MIN_SHARE = 0.08
FUNCTION_WORDS = frozenset(
    "the of and to a in is it that for on with as are was be this by or an at from not but have has "
    "you your we our they their he she his her its which what when how can will would should there "
    "if then than so these those do does more also each any all one".split())
_WORD = re.compile(r"[^\W\d_]+")


class OutputChecks:
    """Count, while streaming a student's outputs, those that repeat, are near-empty or are not English."""

    def __init__(self) -> None:
        self.n = 0
        self.n_repeated = 0
        self.n_short = 0
        self.n_not_english = 0
        self._seen: set[bytes] = set()

    def add(self, text: str) -> None:
        self.n += 1
        words = text.split()
        if len(words) < SHORT_WORDS:
            self.n_short += 1
        if self.n <= MAX_REMEMBERED:
            digest = hashlib.blake2b(" ".join(words).lower().encode("utf-8", "replace"), digest_size=8).digest()
            if digest in self._seen:
                self.n_repeated += 1
            else:
                self._seen.add(digest)
        if len(words) >= LANGUAGE_MIN_WORDS and not reads_as_english(text):
            self.n_not_english += 1

    def counts(self) -> dict[str, int]:
        """``n_repeated``, ``n_short``, ``n_not_english`` (for the result's ``checks``)."""
        return {"n_repeated": self.n_repeated, "n_short": self.n_short, "n_not_english": self.n_not_english}

    def warnings(self) -> list[str]:
        """One sentence per count above :data:`WARN_SHARE` of the outputs."""
        if not self.n:
            return []
        out = []
        if self.n_repeated > WARN_SHARE * min(self.n, MAX_REMEMBERED):
            out.append(f"{self.n_repeated} of {self.n} outputs repeat an earlier output word for word "
                       f"({_share(self.n_repeated, self.n)}); each copy counts again in the ranking")
        if self.n_short > WARN_SHARE * self.n:
            out.append(f"{self.n_short} of {self.n} outputs are near-empty (fewer than {SHORT_WORDS} words, "
                       f"{_share(self.n_short, self.n)}); they carry little evidence")
        if self.n_not_english > WARN_SHARE * self.n:
            out.append(f"{self.n_not_english} of {self.n} outputs do not read as English prose "
                       f"({_share(self.n_not_english, self.n)}: few English function words, as in other languages, "
                       "code, lists or tables); the taggers are English-only, so their templates mean little there")
        return out


def reads_as_english(text: str) -> bool:
    """Whether enough of ``text``'s words are English function words (a cheap, model-free test)."""
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return False
    return sum(w in FUNCTION_WORDS for w in words) / len(words) >= ENGLISH_MIN_SHARE


def reference_warnings(records: Iterable[Any]) -> list[str]:
    """Warnings about references too small or too unbalanced to be trusted, per task."""
    counts: dict[Any, Counter] = {}
    for record in records:
        counts.setdefault(record.task, Counter())[str(record.teacher)] += 1
    out = []
    for task, teachers in sorted(counts.items(), key=lambda kv: (kv[0] is not None, str(kv[0]))):
        where = f" of task '{task}'" if task is not None else ""
        small = sorted((n, t) for t, n in teachers.items() if n < SMALL_REFERENCE)
        if small:
            named = ", ".join(f"{t} ({n})" for n, t in small)
            out.append(f"few references{where}: {named} ha{'s' if len(small) == 1 else 've'} fewer than "
                       f"{SMALL_REFERENCE} outputs; with so few, attributions are unreliable (accuracy still "
                       "rises with more references)")
        low_t = min(sorted(teachers), key=lambda t: teachers[t])
        high_t = max(sorted(teachers), key=lambda t: teachers[t])
        if len(teachers) > 1 and teachers[high_t] > UNBALANCED_RATIO * teachers[low_t]:
            out.append(f"unbalanced references{where}: {high_t} has {teachers[high_t]} outputs, {low_t} "
                       f"{teachers[low_t]}; the rarer "
                       "teachers are known less well")
    return out


def _share(n: int, total: int) -> str:
    return f"{100 * n / total:.0f}%"


__all__ = ["OutputChecks", "reference_warnings", "reads_as_english"]
