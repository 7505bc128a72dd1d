"""When to stop: an anytime-valid version of the paired verdict, checked after every batch of outputs.

The fixed-n paired test (:class:`attribution.paired.PairedTest`) reads all of a student's outputs once: its
p-value is valid only at a sample size fixed in advance. An auditor who pays per query wants to look after
every batch and stop as soon as the evidence suffices; re-running the t-test at every look would inflate its
error rate. :class:`SequentialTest` is a test that may be looked at after every batch, with its error rate
kept under any stopping rule (a *test supermartingale*, Ville's inequality).

The statistic is the paired test's: per output, each candidate's score ``s_i`` (the cosine between the
student's and candidate ``i``'s deviation from the candidates' mean answer to the same prompt, in ``[-1, 1]``;
between families in play when there are families or exclusions), and for two candidates the difference
``d_ij = s_i - s_j`` (in ``[-2, 2]``).

**The test.** For every candidate ``c`` the hypothesis ``H_c``: *c is a best candidate*, i.e. for every output
``t``, given the outputs before it, ``E[s_j - s_c] <= 0`` for every ``j``. A gambler bets against ``H_c`` with
wealth

    W_c = prod over outputs t of  (1 + lambda_b * x_t),   x_t = (s_(L_b) - s_c) / 2  in [-1, 1],

where ``b`` is the batch of output ``t``, ``L_b`` the *leader* (the candidate with the highest mean score over
the batches before ``b``; ``x_t = 0`` when ``L_b = c``), and ``lambda_b`` in ``[0, 0.8]`` the bet, chosen from
the batches before ``b`` only (the plug-in ``mean(x) / mean(x**2)`` of the growth-optimal bet, over all earlier
outputs). Under ``H_c`` each factor has conditional expectation at most 1 and is positive: ``W_c`` is a
non-negative supermartingale starting at 1, and by Ville's inequality ``P(W_c ever reaches 2 / alpha) <=
alpha / 2``, however the looks and the stopping are chosen.

**The verdict.** After each batch, every candidate whose wealth has reached ``2 / alpha`` is *refuted* as the
best; as soon as every candidate but one is refuted, that one is named and the stream stops. Naming ``L``
wrongly (``L`` is not strictly better than every other candidate) means every candidate of the best set
``B`` other than ``L`` was refuted although ``H_c`` holds for it: with ``m = |B|``, at least ``max(m - 1, 1)``
of ``m`` true hypotheses rejected, whose probability is at most ``m (alpha / 2) / max(m - 1, 1) <= alpha``. The
rivals need no Bonferroni correction (one wealth per candidate, not per pair), the leader is chosen from past
batches only, and exact ties at the top are covered by the factor 2 in the threshold.

**Assumptions.** The outputs arrive in an order that does not depend on them (the prompts asked in a random
order; a file sorted by topic or length breaks the conditional-mean condition above); the scores are bounded
(cosines are); the hypotheses are about the candidates' mean scores, as for the fixed-n test: a student of a
teacher outside the candidates may truly resemble one of them more than the others, and then naming it is not
an error of this test (``benchmarks/bench_sequential.py`` measures how often that happens on real students).

The stream can only stop on an attribution: an anytime-valid test never concludes that there is no teacher,
so a budget (``max_outputs``) ends it as ``inconclusive``. ``e_value`` is the smallest wealth among the
leader's rivals and ``p_value = min(1, 2 / e_value)`` an anytime-valid p-value (below ``alpha`` exactly when
the verdict names the leader).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .errors import model_error
from .inference import ALPHA
from .paired import PairedTest, difference_sums

#: Largest bet on ``x`` in ``[-1, 1]``: every factor ``1 + lambda x`` stays at least 0.2.
MAX_BET = 0.8
#: Prior second moment of ``x`` (one pseudo-output): keeps the first bets small.
PRIOR_SQUARE = 0.05
#: The threshold is ``TIES / alpha``: a factor 2 keeps the error at ``alpha`` even with two candidates tied at
#: the top (see the module's docstring).
TIES = 2.0
#: Outputs per look when none is given (``rank --sequential``, ``audit``'s ``batch_size``).
DEFAULT_BATCH = 10


class SequentialTest:
    """The e-process verdict of this module, fed the cumulative sums of a paired test after every batch.

    Parameters
    ----------
    classes : sequence of str
        The candidates (or families), in the order of the sums' columns.
    alpha : float
        Level of the test (anytime-valid: under any stopping rule).
    """

    def __init__(self, classes: Sequence[str], *, alpha: float = ALPHA) -> None:
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < 1:
            raise model_error("E210", name="alpha", expected="a number between 0 and 1", got=alpha)
        self.classes = [str(c) for c in classes]
        self.alpha = float(alpha)
        k = len(self.classes)
        self.log_threshold = math.log(TIES / self.alpha)
        self.log_wealth = np.zeros(k)
        self.leader: int | None = None
        self.named: str | None = None
        self.looks = 0
        self.concluded_at: int | None = None  # outputs read when the verdict concluded
        self._n, self._sum, self._outer = 0, np.zeros(k), np.zeros((k, k))

    @property
    def concluded(self) -> bool:
        return self.named is not None

    def add(self, scores: np.ndarray, outputs_read: int | None = None, top: str | None = None) -> bool:
        """One look, after a batch: ``scores`` are the batch's per-output scores of every candidate (columns:
        ``classes``; rows with NaN, outputs without paired answers, are left out). Returns whether the verdict
        has concluded (then further looks change nothing). ``top`` (the ranking's first) is not used: the
        e-process chooses its leader from the earlier batches."""
        if self.concluded:
            return True
        scores = np.asarray(scores, dtype=float).reshape(-1, len(self.classes))
        scores = scores[~np.isnan(scores).any(axis=1)]
        self.looks += 1
        if self.leader is not None and len(scores):
            lead = self.leader
            for c in range(len(self.classes)):
                if c != lead:
                    x = (scores[:, lead] - scores[:, c]) / 2
                    self.log_wealth[c] += float(np.log1p(self._bet(lead, c) * x).sum())
        self._n += len(scores)
        self._sum = self._sum + scores.sum(axis=0)
        self._outer = self._outer + scores.T @ scores
        if self._n > 0:  # the next batch's leader, from what was read so far
            mean = self._sum / self._n
            self.leader = min(range(len(self.classes)), key=lambda i: (-mean[i], self.classes[i]))
        standing = [c for c in range(len(self.classes)) if self.log_wealth[c] < self.log_threshold]
        if len(standing) <= 1:
            last = standing[0] if standing else int(np.argmin(self.log_wealth))
            self.named = self.classes[last]
            self.concluded_at = outputs_read
        return self.concluded

    def _bet(self, lead: int, c: int) -> float:
        """The bet on ``x = (s_lead - s_c) / 2`` for the next batch, from the outputs before it only."""
        s, q = difference_sums(self._sum, self._outer, lead, c)
        s, q = s / 2, q / 4  # sums of x and of x squared
        mean = s / (self._n + 1)
        second = (q + PRIOR_SQUARE) / (self._n + 1)
        return float(min(MAX_BET, max(0.0, mean / second)))

    def e_value(self, candidate: str | None = None) -> float:
        """The evidence for ``candidate`` (default: the named one, else the leader): the smallest wealth
        among its rivals."""
        name = candidate or self.named or (self.classes[self.leader] if self.leader is not None else None)
        if name is None:
            return 1.0
        i = self.classes.index(name)
        rivals = [w for c, w in enumerate(self.log_wealth) if c != i]
        return float(math.exp(min(rivals))) if rivals else 1.0

    def result(self, *, outputs_used: int, batch_size: int, max_outputs: int | None) -> dict[str, Any]:
        """What the JSON's ``verdict.sequential`` holds (see docs/json.md)."""
        e = self.e_value()
        leader = self.named or (self.classes[self.leader] if self.leader is not None else None)
        return {"design": "e-process", "stopped": self.concluded, "outputs_used": int(outputs_used),
                "n_paired": int(self._n),
                "looks": self.looks, "batch_size": int(batch_size), "max_outputs": max_outputs,
                "leader": leader, "e_value": e, "threshold": TIES / self.alpha,
                "p_value": min(1.0, TIES / e) if e > 0 else 1.0,
                "wealth": {c: float(math.exp(w)) for c, w in zip(self.classes, self.log_wealth)}}


#: The sequential designs: the e-process (:class:`SequentialTest`, no budget needed) and alpha spending
#: (:class:`SpendingTest`, a budget fixed in advance).
DESIGNS = ("e-process", "spending")


def spending_boundaries(looks: Sequence[float], alpha: float) -> np.ndarray:
    """One-sided z boundaries at the information fractions ``looks`` (increasing, in ``(0, 1]``) that spend
    ``alpha(t) = 2 - 2 Phi(z_(1 - alpha / 2) / sqrt(t))`` by time ``t`` (Lan and DeMets' O'Brien-Fleming-type
    spending function): ``P(Z_1 < c_1, ..., Z_(k-1) < c_(k-1), Z_k >= c_k) = alpha(t_k) - alpha(t_(k-1))`` for
    ``Z_k = B(t_k) / sqrt(t_k)`` of a Brownian motion ``B`` (the joint law of a z-statistic's looks), computed by
    numerical integration on a grid (Armitage, McPherson and Rowe's recursion)."""
    from scipy import optimize, stats

    spent = [2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - alpha / 2) / math.sqrt(t)) for t in looks]
    grid = np.linspace(-10, 10, 1001)
    step = grid[1] - grid[0]
    bounds = [float(stats.norm.isf(max(spent[0], 1e-300)))]
    density = stats.norm.pdf(grid, scale=math.sqrt(looks[0])) * (grid < bounds[0] * math.sqrt(looks[0]))
    kernels: dict[float, np.ndarray] = {}
    for k in range(1, len(looks)):
        root_t, root_dt = math.sqrt(looks[k]), math.sqrt(looks[k] - looks[k - 1])
        target = spent[k] - spent[k - 1]
        if target > 1e-12:
            bound = float(optimize.brentq(_excess, -5.0, 40.0, args=(density, grid, root_t, root_dt, step, target),
                                          xtol=1e-6))
        else:  # nothing left to spend at this look
            bound = 40.0
        bounds.append(bound)
        key = round(root_dt, 12)
        if key not in kernels:
            kernels[key] = stats.norm.pdf(grid[:, None] - grid[None, :], scale=root_dt) * step  # (new, old)
        density = (kernels[key] @ density) * (grid < bound * root_t)
    return np.asarray(bounds)


@functools.lru_cache(maxsize=32)
def _boundaries(looks: tuple[float, ...], alpha: float) -> np.ndarray:
    """:func:`spending_boundaries`, computed once per looks and alpha (read-only)."""
    bounds = spending_boundaries(looks, alpha)
    bounds.setflags(write=False)
    return bounds


def _excess(bound: float, density: np.ndarray, grid: np.ndarray, root_t: float, root_dt: float, step: float,
            target: float) -> float:
    """Probability of a first crossing of ``bound`` at this look (from the density of the paths still below the
    earlier boundaries), less the alpha this look may spend."""
    from scipy import stats

    return float((density * stats.norm.sf((bound * root_t - grid) / root_dt)).sum() * step) - target


class SpendingTest:
    """A group-sequential version of the fixed-n paired verdict, with a budget fixed in advance.

    At look ``k`` (after every batch, ``t_k`` = outputs read / ``max_outputs``), the candidate the ranking puts
    first (as the fixed-n verdict chooses it) is named when its one-sided paired t-statistic against **every**
    rival (intersection-union, as the fixed-n test) reaches the boundary ``c_k`` of
    :func:`spending_boundaries`. Under the hypothesis that it does not beat a given rival, the looks of that
    pair's statistic are, for many outputs, those of a Brownian motion, so the chance of ever crossing is at most
    ``alpha``. Assumptions: the budget and the batch size are fixed before the first look; the outputs come in an
    order that does not depend on them; the t-statistic is close to normal (the first looks, with few outputs,
    have boundaries so high that they spend almost nothing); the top candidate is chosen from the data, as by the
    fixed-n verdict. A stream that ends before the budget leaves the rest of ``alpha`` unspent (conservative).
    """

    def __init__(self, classes: Sequence[str], *, max_outputs: int, batch_size: int, alpha: float = ALPHA) -> None:
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0 < alpha < 1:
            raise model_error("E210", name="alpha", expected="a number between 0 and 1", got=alpha)
        self.classes = [str(c) for c in classes]
        self.alpha, self.max_outputs, self.batch_size = float(alpha), max_outputs, batch_size
        n_looks = math.ceil(max_outputs / batch_size)
        self.looks_at = [min(max_outputs, (k + 1) * batch_size) for k in range(n_looks)]
        self.bounds = _boundaries(tuple(n / max_outputs for n in self.looks_at), self.alpha)
        self.test = PairedTest(self.classes)
        self.looks = 0
        self.named: str | None = None
        self.concluded_at: int | None = None
        self.top: str | None = None
        self.z: float | None = None

    @property
    def concluded(self) -> bool:
        return self.named is not None

    def add(self, scores: np.ndarray, outputs_read: int | None = None, top: str | None = None) -> bool:
        """One look, after a batch: ``scores`` the batch's per-output scores (NaN rows left out), ``top`` the
        candidate the ranking puts first now (default: the highest mean score). Returns whether it concluded."""
        if self.concluded:
            return True
        self.test.add(np.asarray(scores, dtype=float).reshape(-1, len(self.classes)))
        self.looks += 1
        if self.test.n < 3 or self.looks > len(self.bounds):
            return False
        self.top = top if top is not None else self.classes[int(np.argmax(self.test.mean()))]
        from scipy import stats

        self.z = float(min(stats.norm.isf(max(self.test.p_value(self.top, c), 1e-300))
                           for c in self.classes if c != self.top))
        if self.z >= self.bounds[self.looks - 1]:
            self.named, self.concluded_at = self.top, outputs_read
        return self.concluded

    def result(self, *, outputs_used: int, batch_size: int, max_outputs: int | None) -> dict[str, Any]:
        """What the JSON's ``verdict.sequential`` holds for this design (see docs/json.md)."""
        look = min(self.looks, len(self.bounds))
        return {"design": "spending", "stopped": self.concluded, "outputs_used": int(outputs_used),
                "n_paired": int(self.test.n), "looks": self.looks, "batch_size": int(batch_size),
                "max_outputs": max_outputs, "leader": self.named or self.top, "z": self.z,
                "boundary": float(self.bounds[look - 1]) if look else None,
                "final_boundary": float(self.bounds[-1])}


def check_options(batch_size: Any, max_outputs: Any, names: tuple[str, str] = ("batch_size", "max_outputs")) -> None:
    """``E250`` for a batch size or budget (``max_outputs``: None for none) that is not a whole number of at least
    1; ``names``: how the caller calls them (options, config keys)."""
    for name, value in zip(names, (batch_size, max_outputs)):
        if value is None and name == names[1]:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise model_error("E250", name=name, got=value)


def check_design(design: Any, max_outputs: Any, names: tuple[str, str] = ("design", "max_outputs")) -> None:
    """``E250`` for an unknown design, ``E252`` for alpha spending without a budget (``names``: as the caller
    calls them)."""
    if design not in DESIGNS:
        raise model_error("E253", name=names[0], choices=", ".join(DESIGNS), got=design)
    if design == "spending" and max_outputs is None:
        raise model_error("E252", option=f"{names[0]} spending", detail=f"needs {names[1]} (the budget, fixed "
                          "before the first look)")


class SequentialRank:
    """``rank --sequential``: one student's outputs read in order, in batches of ``batch_size``, the sequential
    verdict checked after each; :meth:`add` says when to stop. The ranking, evidence and the fixed-n tests are
    those of :class:`attribution.api.StudentRun` over the outputs used; :meth:`finish` gives the document, its
    verdict decided by :class:`SequentialTest` (``verdict.test`` = ``"sequential"``)."""

    def __init__(self, model: Any, *, batch_size: int = DEFAULT_BATCH, max_outputs: int | None = None,
                 alpha: float = ALPHA, task: str | None = None, exclude: Iterable[str] = (),
                 keep_outputs: bool = False, progress: Any = None, design: str = "e-process") -> None:
        from .api import StudentRun

        check_options(batch_size, max_outputs)
        check_design(design, max_outputs)
        self.run = StudentRun(model, task=task, keep_outputs=keep_outputs, progress=progress, exclude=exclude)
        models = self.run.model.models_
        if task is None and len(models) != 1:
            raise model_error("E251", detail=f"the model has {len(models)} tasks; pass --task with one of: "
                              f"{', '.join(sorted(map(str, models)))}")
        key = self.run.model.task_key(task) if task is not None else next(iter(models))  # E208: unknown task
        subs = [models[key]]
        if subs[0].paired_ is None:
            raise model_error("E251", detail="the model holds no paired answers (every candidate's answer to the "
                              "student's prompts, with the same 'id'), so the paired test cannot run")
        from .inference import StudentEvidence

        self.hierarchy = subs[0].hierarchy(self.run.exclude)
        # the run's evidence, made here so that it hands over each batch's per-output paired scores
        self.evidence = StudentEvidence(subs[0], exclude=self.run.exclude)
        self.evidence.paired_scores = []
        self.run.evidence[key] = self.evidence
        self.test: SequentialTest | SpendingTest
        if design == "spending":
            assert max_outputs is not None  # check_design
            self.test = SpendingTest(self.hierarchy.families, max_outputs=max_outputs, batch_size=batch_size,
                                     alpha=alpha)
        else:
            self.test = SequentialTest(self.hierarchy.families, alpha=alpha)
        self.batch_size, self.max_outputs, self.task = batch_size, max_outputs, task
        self.read = 0
        self._since_look = 0

    @property
    def done(self) -> bool:
        """Concluded, or the budget spent."""
        return self.test.concluded or (self.max_outputs is not None and self.read >= self.max_outputs)

    def add(self, record: Any) -> bool:
        """Read one output; after every ``batch_size`` of them, look. Returns :attr:`done`."""
        if self.done:
            return True
        if self.task is not None and record.task not in (self.task, None):
            return False
        self.run.add(record)
        self.read += 1
        self._since_look += 1
        if self._since_look >= self.batch_size or self.done:
            self.look()
        return self.done

    def look(self) -> None:
        """Score what is queued and update the verdict (nothing to do when nothing was read since)."""
        if not self._since_look:
            return
        self._since_look = 0
        self.run.flush()
        scores = self.evidence.paired_scores or []
        batch = np.vstack(scores) if scores else np.zeros((0, len(self.test.classes)))
        self.evidence.paired_scores = []
        total = self.evidence.family_sums()[0]  # the ranking's first family, as the fixed-n verdict takes it
        top = min(zip(self.hierarchy.families, total), key=lambda pair: (-pair[1], pair[0]))[0]
        self.test.add(batch, self.read, top)

    def finish(self, **options: Any) -> dict[str, Any]:
        """The rank document over the outputs used (``options``: :meth:`attribution.api.StudentRun.finish`'s),
        its verdict replaced by the sequential one."""
        self.look()  # the last, partial batch
        result = self.run.finish(**options)
        result["verdict"] = self.verdict(result["verdict"])
        return result

    def verdict(self, fixed: dict[str, Any]) -> dict[str, Any]:
        """``fixed`` (the fixed-n verdict over the outputs used, for its other keys) with the sequential decision:
        ``status``, ``teacher``, ``family``, ``level``, ``test`` = ``"sequential"``, ``p_value`` (anytime-valid)
        and ``sequential`` (see :meth:`SequentialTest.result`)."""
        seq = self.test.result(outputs_used=self.read, batch_size=self.batch_size, max_outputs=self.max_outputs)
        named = self.test.named
        h = self.hierarchy
        teacher = None
        if named is not None:
            members = h.members[named]
            teacher = h.classes[members[0]] if len(members) == 1 else None
        out = {key: value for key, value in fixed.items() if key not in ("p_paired_cosine", "p_paired_midpoint")}
        out.update({"status": "attributed" if named else "inconclusive", "teacher": teacher,
                    "test": "sequential", "p_value": seq.get("p_value"), "sequential": seq,
                    "fixed_n_p_value": fixed.get("p_value")})
        if "level" in fixed:
            out.update({"family": named, "level": "teacher" if teacher else ("family" if named else None)})
        return out


def rank_sequential(model: Any, records: Iterable[Any], *, batch_size: int = DEFAULT_BATCH,
                    max_outputs: int | None = None, alpha: float = ALPHA, task: str | None = None,
                    exclude: Iterable[str] = (), top_templates: int = 10, keep_outputs: bool = False,
                    informative_evidence: bool = True, progress: Any = None,
                    design: str = "e-process") -> dict[str, Any]:
    """:func:`attribution.api.rank_student` with the sequential verdict: ``records`` are read in order, in
    batches of ``batch_size``, until the verdict concludes or ``max_outputs`` were read; the records after
    that are not read at all. ``verdict.sequential.outputs_used`` says how many were needed. ``design``:
    ``"e-process"`` (:class:`SequentialTest`) or ``"spending"`` (:class:`SpendingTest`, needs ``max_outputs``)."""
    ranker = SequentialRank(model, batch_size=batch_size, max_outputs=max_outputs, alpha=alpha, task=task,
                            exclude=exclude, keep_outputs=keep_outputs, progress=progress, design=design)
    for record in records:
        if ranker.add(record):
            break
    return ranker.finish(top_templates=top_templates, alpha=alpha, tests="paired",
                         informative_evidence=informative_evidence)


def audit_sequential(model: Any, records: Iterable[Any], **options: Any) -> Any:
    """:func:`rank_sequential` (same options) as an :class:`attribution.result.AuditResult`, as
    :func:`attribution.result.audit_student` gives :func:`attribution.api.rank_student`."""
    from .result import audit_student

    return audit_student(model, records, ranker=rank_sequential, **options)


__all__ = ["DEFAULT_BATCH", "DESIGNS", "SequentialRank", "SequentialTest", "SpendingTest", "audit_sequential",
           "check_design", "check_options", "rank_sequential", "spending_boundaries"]
