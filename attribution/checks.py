"""Checks that catch silent mistakes in the inputs: they warn (stderr and the result's ``warnings``),
they never refuse (issue 12, section 4).

- :class:`OutputChecks`: a student's outputs that repeat another output (whitespace and case aside),
  that are near-empty (fewer than :data:`SHORT_WORDS` words), or that do not read as English (the
  taggers are English-only): counted, and a warning when they are more than :data:`WARN_SHARE`.
- :func:`reference_warnings`: a teacher with fewer than :data:`SMALL_REFERENCE` reference outputs in a
  task, or a task whose teachers are unbalanced (more than :data:`UNBALANCED_RATIO` to 1).
- :class:`PromptChecks`: the student's outputs answer other prompts than the references: a ``task`` the
  references do not name, or (when both sides have prompts) prompts of another style
  (:data:`PROMPT_MIN_SIMILARITY`).

All checks are cheap (no model, no tagger) and stream; repeats are looked for among the first
:data:`MAX_REMEMBERED` outputs only, so memory stays bounded.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
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
#: Prompts compared per side (the first distinct ones): enough for a stable profile, bounded memory.
MAX_PROMPTS = 2_000
#: Fewest distinct prompts on each side before their style is compared: with 20 AlpacaEval prompts the
#: similarity to AlpacaEval references was 0.81 or more in 200 random draws, with 10 it fell to 0.68.
MIN_PROMPTS = 20
#: Below this similarity of prompt profiles the student answers other prompts than the references.
#: Measured with :class:`PromptProfile` on the prompts of ../shared/data and data/demo (references vs
#: students): the same task 0.98-1.00 (AlpacaEval, CommonsenseQA, the demo); CommonsenseQA references vs
#: OpenBookQA students (the same "Question: ... choices" frame) 0.88; different tasks 0.35-0.63.
PROMPT_MIN_SIMILARITY = 0.7
_TOKEN = re.compile(r"[^\W_]+|[^\w\s]")
#: Distinct task names remembered per side (for the warning).
MAX_TASKS = 50


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

    @property
    def digests(self) -> AbstractSet[bytes]:
        """Digests of the distinct outputs among the first :data:`MAX_REMEMBERED` (read-only): what
        :mod:`attribution.parallel.rank` unites across ranges to count repeats over a whole file."""
        return self._seen

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


def count_references(records: Iterable[Any]) -> dict[Any, Counter]:
    """Reference outputs per task (``None`` for records without one) and teacher."""
    counts: dict[Any, Counter] = {}
    for record in records:
        counts.setdefault(record.task, Counter())[str(record.teacher)] += 1
    return counts


def reference_warnings(records: Iterable[Any]) -> list[str]:
    """Warnings about references too small or too unbalanced to be trusted, per task."""
    counts = count_references(records)
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


class PromptProfile:
    """What a set of prompts looks like: the share of prompts each word or punctuation mark occurs in
    (the recurring frame of a task, e.g. ``Question:`` and answer choices, weighs most), over the first
    :data:`MAX_PROMPTS` distinct prompts."""

    def __init__(self) -> None:
        self.n = 0
        self.tasks: set[str | None] = set()
        self._df: Counter = Counter()
        self._seen: set[bytes] = set()

    def add(self, task: Any, prompt: Any) -> None:
        if len(self.tasks) < MAX_TASKS:
            self.tasks.add(None if task is None else str(task))
        if not isinstance(prompt, str) or not prompt.strip() or self.n >= MAX_PROMPTS:
            return
        digest = hashlib.blake2b(prompt.encode("utf-8", "replace"), digest_size=8).digest()
        if digest not in self._seen:
            self._seen.add(digest)
            self.n += 1
            self._df.update({w.lower() for w in _TOKEN.findall(prompt)})

    @classmethod
    def of(cls, records: Iterable[Any]) -> PromptProfile:
        """The profile of records with ``task`` and ``prompt`` (e.g. the references)."""
        profile = cls()
        for record in records:
            profile.add(record.task, getattr(record, "prompt", None))
        return profile

    def similarity(self, other: PromptProfile) -> float | None:
        """Cosine similarity of the two profiles (1: the same kind of prompts), or None when either
        side has fewer than :data:`MIN_PROMPTS` prompts."""
        if min(self.n, other.n) < MIN_PROMPTS:
            return None
        a = {w: c / self.n for w, c in self._df.items()}
        b = {w: c / other.n for w, c in other._df.items()}
        dot = sum(v * b.get(w, 0.0) for w, v in a.items())
        norm = math.sqrt(sum(v * v for v in a.values()) * sum(v * v for v in b.values()))
        return dot / norm if norm else 0.0


class PromptChecks:
    """Whether the student's outputs answer the same prompts as the references.

    ``reference_tasks``: the tasks the model knows (``None`` alone: the references named no task);
    ``references``: the references' :class:`PromptProfile` when they are at hand (fitting from a
    reference file), else None (a saved model keeps no prompts, so only the tasks are compared).
    Feed every student record to :meth:`add`.
    """

    def __init__(self, reference_tasks: Iterable[Any], references: PromptProfile | None = None) -> None:
        self.reference_tasks = {None if t is None else str(t) for t in reference_tasks}
        self.references = references
        self.student = PromptProfile()

    def add(self, record: Any) -> None:
        self.student.add(record.task, getattr(record, "prompt", None))

    def unknown_tasks(self) -> list[str]:
        """The student's task names the references do not name (sorted)."""
        return sorted(t for t in self.student.tasks if t is not None and t not in self.reference_tasks)

    def counts(self) -> dict[str, Any]:
        """``tasks_not_in_references`` and ``prompt_similarity`` (None when not measured)."""
        similarity = None if self.references is None else self.references.similarity(self.student)
        return {"tasks_not_in_references": self.unknown_tasks(),
                "prompt_similarity": None if similarity is None else round(similarity, 6)}

    def warnings(self) -> list[str]:
        """A sentence for a task the references do not name, and one for prompts of another style."""
        out = []
        unknown = self.unknown_tasks()
        if unknown:
            named = sorted(str(t) for t in self.reference_tasks if t is not None)
            theirs = f"they name {', '.join(repr(t) for t in named)}" if named else "they name no task"
            out.append(f"the student's outputs are of task(s) {', '.join(repr(t) for t in unknown)}, which the "
                       f"references do not name ({theirs}); they are ranked against references written for "
                       "other prompts: check that both answer the same kind of prompts")
        similarity = self.counts()["prompt_similarity"]
        if similarity is not None and similarity < PROMPT_MIN_SIMILARITY:
            out.append(f"the student's prompts differ in style from the references' (similarity {similarity:.2f}, "
                       f"below {PROMPT_MIN_SIMILARITY}; the same task scores 0.98 or more): templates that follow "
                       "from the prompts, not from the teacher, may decide the ranking")
        return out


def _share(n: int, total: int) -> str:
    return f"{100 * n / total:.0f}%"


__all__ = ["OutputChecks", "PromptChecks", "PromptProfile", "reads_as_english", "reference_warnings"]
