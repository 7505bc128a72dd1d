"""Which prompts to ask a suspect first: rank a fitted model's paired prompts by how well the candidates'
own answers to them tell the candidates apart.

A model fitted on references where every candidate answered the same prompts keeps those answers
(:class:`attribution.paired.PairedReferences`). A student distilled from candidate ``f`` copies ``f``'s way of
answering, so a prompt is worth asking when, on it, ``f``'s answer and every rival's answer lie far apart
in what the classifier uses to tell the candidates apart. For one prompt, with ``s_g(a)`` the model's
log-probability of candidate (or, when the model has families, family) ``g`` for answer ``a`` and ``a_f``
candidate ``f``'s answer to the prompt,

    gap_fg = [s_f(a_f) - s_g(a_f)] - [s_f(a_g) - s_g(a_g)]

is how far apart ``f``'s and ``g``'s answers lie on the ``f``-against-``g`` log-odds axis (symmetric in ``f``
and ``g``; half of it is how far a copy of ``f``'s answer would sit on ``f``'s side of the midpoint that the
paired midpoint statistic, :class:`attribution.paired.MidpointTest`, measures from). The verdict must beat
*every* rival, so each candidate counts its nearest rival, and the prompt's **score** is

    score = mean over candidates f of (min over g != f of gap_fg) / 2,

in nats of log-odds. Only the candidates' answers enter: no student output is needed. With families, a
family's answer is the mean of its versions' per-family log-probabilities (as in the verdict's midpoint
test), and the score separates families. The answers were training data of the classifier, so the scores
are optimistic in absolute terms; they serve to order prompts. Ties are broken by prompt id.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .errors import model_error

#: Columns of :func:`rank_probes`.
COLUMNS = ("id", "task", "score", "rank")


def _group_answers(model: Any) -> np.ndarray:
    """(n_prompts, n_groups, n_groups): row ``f`` holds the per-group log-probabilities of group ``f``'s
    answer to each prompt; groups are the families in play when there are two or more, else the teachers."""
    answers = model.paired_.answer_log_proba(model.classifier_)            # (prompts, k answers, k classes)
    hierarchy = model.hierarchy()
    if len(hierarchy.families) < 2:  # one family holds every candidate: separate its versions instead
        return answers
    n_prompts, k, _ = answers.shape
    family = hierarchy.family_log_proba(answers.reshape(-1, k)).reshape(n_prompts, k, -1)
    return np.stack([family[:, hierarchy.members[f]].mean(axis=1) for f in hierarchy.families], axis=1)


def prompt_scores(model: Any) -> np.ndarray:
    """The score of each of ``model.paired_``'s prompts (in ``model.paired_.prompt_ids`` order): the mean over
    candidates (families) of half the log-odds gap between its answer and its nearest rival's (module doc)."""
    s = _group_answers(model)
    own = np.diagonal(s, axis1=1, axis2=2)                                  # s_f(a_f): (prompts, groups)
    # gap[p, f, g] = s_f(a_f) - s_g(a_f) - s_f(a_g) + s_g(a_g)
    gap = own[:, :, None] - s - np.swapaxes(s, 1, 2) + own[:, None, :]
    n = gap.shape[1]
    gap[:, np.arange(n), np.arange(n)] = np.inf
    return gap.min(axis=2).mean(axis=1) / 2


def rank_probes(model: Any, n: int | None = None) -> pd.DataFrame:
    """Rank the prompts every candidate answered by how well their answers separate the candidates.

    Parameters
    ----------
    model : TeacherAttributor or MultiTaskAttributor
        A fitted model with paired answers (fitted on references where every candidate answered the same
        prompts, matched by ``id``). Each task's prompts are ranked by that task's model; tasks without
        paired answers are left out.
    n : int, optional
        Keep the ``n`` best prompts of each task (default: all).

    Returns
    -------
    DataFrame
        Columns ``id``, ``task`` (None for a model fitted without tasks), ``score`` (see the module doc;
        higher is more informative) and ``rank`` (1 = best, within its task), sorted by rank, then task, then
        id: the first rows hold every task's best prompts, so a prompt file cut anywhere covers every task.

    Raises
    ------
    ModelError
        ``E240`` when no task of the model has paired answers; ``E210`` for a bad ``n``.
    """
    from .multitask import as_multitask

    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise model_error("E210", name="n", expected="a positive integer or None", got=n)
    multi = as_multitask(model)
    frames = []
    for task, sub in multi.models_.items():
        sub.check_fitted()
        paired = getattr(sub, "paired_", None)
        if paired is None:
            continue
        ids = paired.prompt_ids.tolist()
        scores = prompt_scores(sub)
        order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))[:n]
        frames.append(pd.DataFrame({"id": [ids[i] for i in order], "task": [task] * len(order),
                                    "score": scores[order].astype(float), "rank": np.arange(1, len(order) + 1)}))
    if not frames:
        raise model_error("E240")
    table = pd.concat(frames, ignore_index=True)
    table["_task"] = table["task"].fillna("")
    table = table.sort_values(["rank", "_task", "id"], kind="mergesort").drop(columns="_task")
    return table.reset_index(drop=True)


__all__ = ["COLUMNS", "prompt_scores", "rank_probes"]
