"""Baselines the paper compares against: BERTScore, encoder embeddings, teacher perplexity,
bag-of-words cosine and ROUGE.

Every baseline maps (teacher reference outputs, student outputs) to a score matrix where
**higher means more likely the teacher**, so its rows feed
:func:`attribution.evaluation.score_attribution` exactly like the PoS-template scores.
Importing this package loads no torch; models load on first use, once per process.

Examples
--------
>>> from attribution.baselines import run_baseline
>>> result = run_baseline("cosine", references, students)      # doctest: +SKIP
>>> result.classes, result.scores.shape                         # doctest: +SKIP
(['gemma-2-9b', ...], (315, 5))
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from .. import registry as _registry
from ..errors import BaselineError, BaselineModelError, baseline_error
from ..io import Record
from ._common import ALIGNMENTS, BaselineScores

#: Valid baseline names (the ``baselines`` registry: built-ins and installed plugins).
#: ``rouge`` is ROUGE-L F; ``rouge1``/``rouge2`` are the n-gram variants.
BASELINES = _registry.baselines
#: Baselines that need a model from the ``[baselines]`` extra (torch).
MODEL_BASELINES = tuple(n for n in BASELINES.names() if BASELINES.entry(n).meta.get("needs_model"))


def run_baseline(name: str, references: Sequence[Record], students: Sequence[Record],
                 **options: Any) -> BaselineScores:
    """Score student outputs against candidate teachers with one baseline.

    Parameters
    ----------
    name : str
        One of :data:`BASELINES`.
    references : list of Record
        Teacher outputs, each with ``teacher`` (and ideally ``id``/``prompt``).
    students : list of Record
        Student outputs to attribute.
    **options
        Passed to the baseline: ``model``, ``num_layers``, ``device`` ("auto"/"cpu"/"cuda"),
        ``batch_size``, ``alignment`` ("auto"/"id"/"best"), ``shortlist``, ``normalize``
        (default True: clean ``####``, ``</s>``, loops first), ``show_progress``; for
        perplexity ``teacher_models`` (``{"teacher": "hub id, dir, .gguf or alias"}``),
        ``n_calibration``, ``prompt_format``, ``max_length``. Options a baseline does not
        use are ignored, so one dict can drive several baselines.

    Returns
    -------
    BaselineScores
        ``scores`` of shape (n_students, n_teachers); higher means more likely the teacher;
        columns follow the sorted ``classes``.

    Raises
    ------
    BaselineError
        Unknown name, bad option, or a teacher without a model (``ValueError`` subclass).
    BaselineModelError
        A model could not be loaded, or CUDA was requested without a GPU.
    MissingDependencyError
        The ``[baselines]`` extra is not installed.

    See Also
    --------
    attribution.registry.baselines : where a new baseline registers
        (``run(references, students, **options) -> BaselineScores``).
    """
    return BASELINES.get(name)(references, students, **options)


# -- the built-in baselines, as registered in attribution.registry -----------------------------
def _encoder(name: str, references: Sequence[Record], students: Sequence[Record],
             options: dict[str, Any]) -> BaselineScores:
    from . import bertscore

    keep = {"model", "num_layers", "device", "batch_size", "normalize", "show_progress"}
    keep |= {"alignment", "shortlist"} if name == "bertscore" else {"C", "random_state"}
    opts = {k: v for k, v in options.items() if k in keep and v is not None}
    run = bertscore.run_bertscore if name == "bertscore" else bertscore.run_embedding
    return run(references, students, **opts)


def run_bertscore(references: Sequence[Record], students: Sequence[Record], **options: Any) -> BaselineScores:
    """BERTScore F1 of each student output against the teachers' answers (see :mod:`.bertscore`)."""
    return _encoder("bertscore", references, students, options)


def run_embedding(references: Sequence[Record], students: Sequence[Record], **options: Any) -> BaselineScores:
    """A classifier on mean encoder embeddings (see :mod:`.bertscore`)."""
    return _encoder("embedding", references, students, options)


def _perplexity(references: Sequence[Record], students: Sequence[Record], options: dict[str, Any], *,
                normalized: bool) -> BaselineScores:
    from . import perplexity

    if "teacher_models" not in options or not options["teacher_models"]:
        classes = sorted({r.teacher for r in references if r.teacher})
        raise baseline_error("E503", missing=", ".join(classes), known=", ".join(classes))
    opts = {k: v for k, v in options.items() if k not in ("model", "num_layers", "shortlist", "alignment")}
    return perplexity.run_perplexity(references, students, normalized=normalized, **opts)


def run_perplexity(references: Sequence[Record], students: Sequence[Record], **options: Any) -> BaselineScores:
    """Minus the perplexity of each student output under each teacher's model (see :mod:`.perplexity`)."""
    return _perplexity(references, students, options, normalized=False)


def run_perplexity_normalized(references: Sequence[Record], students: Sequence[Record],
                              **options: Any) -> BaselineScores:
    """The perplexity baseline z-scored per teacher on its own references (see :mod:`.perplexity`)."""
    return _perplexity(references, students, options, normalized=True)


def _similarity_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items()
            if k in ("alignment", "normalize", "show_progress", "use_stemmer") and v is not None}


def run_cosine(references: Sequence[Record], students: Sequence[Record], **options: Any) -> BaselineScores:
    """Bag-of-words cosine similarity to the teachers' answers (see :mod:`.similarity`)."""
    from . import similarity

    return similarity.run_cosine(references, students, **_similarity_options(options))


def _rouge(name: str, rouge_type: str, references: Sequence[Record], students: Sequence[Record],
           options: dict[str, Any]) -> BaselineScores:
    from . import similarity

    return similarity.run_rouge(references, students, rouge_type=rouge_type,
                                shortlist=options.get("rouge_shortlist", 20), name=name,
                                **_similarity_options(options))


def run_rouge(references: Sequence[Record], students: Sequence[Record], **options: Any) -> BaselineScores:
    """ROUGE-L F (or ``rouge_type``) against the teachers' answers (see :mod:`.similarity`)."""
    return _rouge("rouge", options.get("rouge_type") or "rougeL", references, students, options)


def run_rouge1(references: Sequence[Record], students: Sequence[Record], **options: Any) -> BaselineScores:
    """ROUGE-1 F against the teachers' answers."""
    return _rouge("rouge1", "rouge1", references, students, options)


def run_rouge2(references: Sequence[Record], students: Sequence[Record], **options: Any) -> BaselineScores:
    """ROUGE-2 F against the teachers' answers."""
    return _rouge("rouge2", "rouge2", references, students, options)


def split_by_task(references: Sequence[Record], students: Sequence[Record]
                  ) -> dict[str | None, tuple[list[Record], list[Record]]]:
    """Group records by ``task``, in the order tasks first appear among the students (as
    :func:`attribution.evaluation.evaluate`); a task without references is an error."""
    refs: dict[str | None, list[Record]] = defaultdict(list)
    studs: dict[str | None, list[Record]] = defaultdict(list)
    for r in references:
        refs[r.task].append(r)
    for s in students:
        studs[s.task].append(s)
    out = {}
    for task in studs:
        untagged = set(refs) == {None}
        pool = refs.get(task) or (list(references) if task is None or untagged else [])
        if not pool:
            raise baseline_error("E509", name=f"references for task '{task}'")
        out[task] = (pool, studs[task])
    return out


__all__ = ["ALIGNMENTS", "BASELINES", "MODEL_BASELINES", "BaselineError", "BaselineModelError",
           "BaselineScores", "run_baseline", "split_by_task"]
