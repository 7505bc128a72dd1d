"""Shared pieces of the baselines: the result type, text preparation, id alignment, devices.

Nothing here imports torch at module import time; :func:`resolve_device` imports it lazily.
"""

from __future__ import annotations

import contextlib
import platform
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import registry
from ..errors import BaselineModelError, ModelError, baseline_error
from ..io import Record

#: How a student is paired with each teacher's references (see :func:`candidate_sets`).
ALIGNMENTS: tuple[str, ...] = registry.baselines.options()["alignment"].choices


@dataclass
class BaselineScores:
    """Per-output, per-teacher scores of one baseline.

    Attributes
    ----------
    name : str
        The baseline (one of :data:`attribution.baselines.BASELINES`).
    classes : list of str
        Candidate teachers, sorted; the columns of ``scores``.
    scores : ndarray of shape (n_students, n_teachers)
        Higher means more likely the teacher (a similarity, a log-probability or a
        negative log-perplexity); rows follow the student records given.
    meta : dict
        Model, device, library versions, alignment counts and options: enough to
        reproduce the numbers.
    """

    name: str
    classes: list[str]
    scores: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def predict(self) -> list[str]:
        """The top-scoring teacher of each output (ties go to the alphabetically first)."""
        return [self.classes[i] for i in np.argmax(self.scores, axis=1)]


def check_records(references: Sequence[Record], students: Sequence[Record]) -> list[str]:
    """Validate inputs and return the sorted teacher names found in ``references``."""
    for name, value in (("references", references), ("students", students)):
        if isinstance(value, (str, Record)):
            raise baseline_error("E508", name=name, got=type(value).__name__)
    if not students:
        raise baseline_error("E509", name="students")
    if not references:
        raise baseline_error("E509", name="references")
    missing = [r for r in references if not r.teacher]
    if missing:
        where = f"{missing[0].source}:{missing[0].line}" if missing[0].source else f"record {missing[0].key}"
        raise baseline_error("E510", n=len(missing), where=where)
    return sorted({r.teacher for r in references})  # type: ignore[misc]


def prepare_texts(records: Sequence[Record], normalize: bool) -> list[str]:
    """The texts to score: optionally cleaned of generation artifacts (``####``, ``</s>``, loops)."""
    if not normalize:
        return [r.output.strip() for r in records]
    from ..normalize import normalize_text

    return [normalize_text(r.output).strip() for r in records]


def _alignment_key(record: Record) -> str | None:
    """Records pair by ``id``; without an id, by identical prompt text."""
    if record.id is not None:
        return f"id:{record.id}"
    if record.prompt:
        return f"prompt:{record.prompt.strip()}"
    return None


def candidate_sets(references: Sequence[Record], students: Sequence[Record], classes: Sequence[str],
                   alignment: str = "auto") -> tuple[list[list[np.ndarray]], dict[str, Any]]:
    """Which references each student output is compared with, per teacher.

    Pairing is by ``id`` (or, without ids, by identical ``prompt``), never by row
    position. A student's score for a teacher is the maximum over its candidate set.

    Parameters
    ----------
    alignment : {"auto", "id", "best"}, default="auto"
        ``"id"``: the teacher's references with the student's id when there are any,
        otherwise all of that teacher's references (best match). ``"auto"``: the same-id
        reference for every teacher when *every* teacher has one, otherwise best match for
        every teacher -- so a student is never scored against one reference for one
        teacher and the best of hundreds for another (the maximum is biased upward).
        ``"best"``: always the best match among all of a teacher's references.

    Returns
    -------
    sets : list of list of ndarray
        ``sets[i][j]`` holds indices into ``references`` for student ``i``, teacher ``classes[j]``.
    info : dict
        ``alignment`` and the counts ``n_pairs_id`` / ``n_pairs_best_match`` and
        ``n_students_best_match``, reported in the result's meta.
    """
    if alignment not in ALIGNMENTS:
        raise baseline_error("E507", name="alignment", expected=" or ".join(map(repr, ALIGNMENTS)),
                             got=alignment)
    by_teacher: dict[str, list[int]] = defaultdict(list)
    by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, ref in enumerate(references):
        by_teacher[ref.teacher].append(index)  # type: ignore[index]
        key = _alignment_key(ref)
        if key is not None:
            by_key[(ref.teacher, key)].append(index)  # type: ignore[index]
    all_refs = [np.asarray(by_teacher[t], dtype=np.int64) for t in classes]
    sets: list[list[np.ndarray]] = []
    n_id = n_best = n_students_best = 0
    for student in students:
        key = _alignment_key(student)
        same = [by_key.get((t, key), []) if key is not None and alignment != "best" else [] for t in classes]
        if alignment == "auto" and not all(same):
            same = [[] for _ in classes]
        row = []
        for j, hits in enumerate(same):
            if hits:
                row.append(np.asarray(hits, dtype=np.int64))
                n_id += 1
            else:
                row.append(all_refs[j])
                n_best += 1
        n_students_best += int(any(not hits for hits in same))
        sets.append(row)
    info = {"alignment": alignment, "n_pairs_id": n_id, "n_pairs_best_match": n_best,
            "n_students_best_match": n_students_best}
    if n_best:
        info["note"] = ("best match used where no reference of that teacher shares the student's id "
                        "(score = maximum over that teacher's references)")
    return sets, info


def max_over_sets(pair_scores: np.ndarray, sets: list[list[np.ndarray]]) -> np.ndarray:
    """Reduce a (n_students, n_references) score matrix to (n_students, n_teachers) maxima."""
    out = np.empty((len(sets), len(sets[0]) if sets else 0), dtype=float)
    for i, row in enumerate(sets):
        for j, idx in enumerate(row):
            out[i, j] = pair_scores[i, idx].max() if len(idx) else -np.inf
    return out


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` means CUDA when available, else CPU; ``"cuda"`` without a GPU is an error (E403)."""
    if device not in ("auto", "cpu", "cuda") and not str(device).startswith("cuda:"):
        raise baseline_error("E507", name="device", expected="'auto', 'cpu' or 'cuda'", got=device)
    from ..causal_lm import resolve_device as resolve

    try:
        return resolve(device)
    except ModelError as err:
        raise BaselineModelError(err.message, code=err.code) from None


def versions() -> dict[str, str]:
    """Library versions for the reproducibility signature."""
    from importlib import metadata

    from .. import __version__

    out = {"teacher-attribution": __version__, "python": platform.python_version()}
    for package in ("torch", "transformers", "bert-score", "rouge-score", "scikit-learn", "gguf"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return out


def progress(iterable: Any, *, desc: str, total: int | None = None, enabled: bool = True) -> Any:
    """A tqdm bar on stderr (silent when ``enabled`` is false)."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=not enabled, leave=False)


@contextlib.contextmanager
def quiet_transformers(show_progress: bool) -> Iterator[None]:
    """transformers draws its own "Loading weights" bar: inside the block it is shown or hidden
    like ours, then set back (the switch is process-wide)."""
    from transformers.utils import logging as hf_logging

    def switch(on: bool) -> None:
        (hf_logging.enable_progress_bar if on else hf_logging.disable_progress_bar)()

    shown = hf_logging.is_progress_bar_enabled()
    switch(show_progress)
    try:
        yield
    finally:
        switch(shown)
