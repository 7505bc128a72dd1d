"""Per-prompt statistics at few outputs: which paired statistic names the documented teacher from 25-100 outputs?

On the AlpacaEval provenance data (5 candidates, setting B: the model keeps every candidate's answer to the
students' prompts), every documented student, the two human-data controls and, with each documented teacher
left out of the fit (leave one teacher out: the student's teacher is not a candidate, so any name is wrong),
every student of it, is audited many times from random subsets of its outputs. Per audit and per variant:
the one-sided paired test of the tested candidate against each other candidate, combined by the
intersection-union rule (the largest p-value; as :mod:`attribution.paired`); a candidate is named when that
p-value is below ``--alpha``. Prints, per variant and size, documented students right / wrong / none,
controls named, left-out students named, with Clopper-Pearson 95% intervals.

Variants (per output ``x`` on prompt ``p``; ``a_ip`` candidate ``i``'s answer, ``s_i`` the classifier's
per-output log-probability of ``i``; ``d_ij(x)`` the per-output difference the test averages):

- ``cosine``: today's statistic. Cosine between ``x - c`` and ``a_ip - c`` (``c`` the candidates' mean
  answer in feature space), ``d_ij = cos_i - cos_j``;
- ``midpoint``: :class:`attribution.paired.MidpointTest` for flat models (today only with families):
  ``d_ij = s_i(x) - s_j(x) - [(s_i - s_j)(a_ip) + (s_i - s_j)(a_jp)] / 2``;
- ``centred-logodds``: log-odds centred by the candidates' mean answer:
  ``d_ij = s_i(x) - s_j(x) - mean_m (s_i - s_j)(a_mp)``;
- ``logodds-cosine``: today's cosine computed in the classifier's log-odds space (each output and answer a
  vector of k centred log-probabilities, centred by the candidates' mean answer);
- ``logodds-covariance``: prompt-specific copying only: the covariance, over the audit's prompts, of the
  ``centred-logodds`` difference with the pair's own contrast ``(s_i - s_j)(a_ip) - (s_i - s_j)(a_jp)``
  (a student leaning towards ``i`` by the same amount on every prompt contributes nothing);
- ``raw-cosine``: an uncentred kernel difference (MMD with one sample per prompt and a cosine kernel, as in
  Model Equality Testing): ``d_ij = cos(x, a_ip) - cos(x, a_jp)``;
- ``cosine+midpoint``: both tests must pass (the larger p-value; what families use today);
- ``stouffer``: ``d_ij`` the sum of the cosine's and the midpoint's, each divided by its sample standard
  deviation over the audit's outputs (a t-test on it is Stouffer's combination of the two, allowing for
  their correlation);
- ``... sign-flip``: the same ``d_ij`` tested by a within-prompt permutation (swapping the labels of ``i``'s
  and ``j``'s answers to a prompt, which flips the sign of the cosine's ``d_ij``; for the midpoint it
  assumes ``d_ij`` is symmetric about 0 under the null) instead of a t-test, ``--flips`` random flips;
- the tested candidate is the classifier's top-ranked one (today's verdict) or, ``/own-best``, the one the
  statistic itself ranks first (largest mean ``d`` against the others), or, ``centred-logodds/cosine-best``
  (added after the first table was seen, so post hoc), the one the cosine ranks first.

``--out-of-sample``: the classifier was trained on the very answers the log-odds statistics centre on (setting
B), so their log-probabilities are in-sample and more extreme than a student's; this scores the students and
the answers with setting A's model (fitted on the reference half only) instead; the cosines are unchanged.

Rerun (3-4 minutes on 2 shared cores once the texts are in the tag cache):

    python benchmarks/bench_statistics.py [--data-dir ../shared/data/alpacaeval] [--draws 100] [--cache F.npz]
    python benchmarks/bench_statistics.py --out-of-sample    # log-probabilities from setting A's model
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from attribution.api import fit_reference
from attribution.datasets import ALPACAEVAL_TASK, load_alpacaeval
from attribution.paired import PairedReferences, one_sided_t
from attribution.report.error_rates import clopper_pearson

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpacaeval"
SIZES = (10, 25, 50, 100, 200)
NO_TEACHER = "none"
ARRAYS = ("lp", "tx", "xx", "gram", "ans")


# -- per-output quantities --------------------------------------------------------------------------------
def extract(model, records, scorer=None, answers=None) -> dict[str, np.ndarray]:
    """Per output with a paired prompt: log-probabilities ``lp`` (k), dot products ``tx`` (k), ``xx``, the
    prompt's Gram matrix ``gram`` (k, k) and its answers' log-probabilities ``ans`` (k answers, k classes).

    ``scorer`` (``--out-of-sample``): another model, fitted without the candidates' answers to these prompts,
    gives ``lp`` and ``ans`` (``answers``: (prompt id, teacher) -> the answer's text); the cosines stay
    ``model``'s."""
    sub = model.model_for(ALPACAEVAL_TASK)
    docs = sub.prepare([r.output for r in records])
    kept = [(d, r.id) for d, r in zip(docs, records) if not d.is_empty]
    X = sub.featurize([d for d, _ in kept])
    ids = [i for _, i in kept]
    paired: PairedReferences = sub.paired_
    rows, prompts = paired.locate(ids)
    _, (tx, xx, gram) = paired.dot_products(X, ids)
    if scorer is None:
        lp = np.log(np.clip(sub.classifier_.predict_proba(X), 1e-12, 1.0))[rows]
        ans = paired.answer_log_proba(sub.classifier_)[prompts]
    else:
        other = scorer.model_for(ALPACAEVAL_TASK)
        classes = sub.classes_.tolist()
        assert other.classes_.tolist() == classes
        lp = np.log(np.clip(other.classifier_.predict_proba(other.featurize([d for d, _ in kept])), 1e-12, 1.0))[rows]
        texts = [answers[(ids[n], t)] for n in rows.tolist() for t in classes]
        ans = np.log(np.clip(other.predict_proba(texts), 1e-12, 1.0)).reshape(len(rows), len(classes), len(classes))
    return {"lp": lp, "tx": tx, "xx": xx, "gram": gram, "ans": ans}


def sources(data_dir: Path, out_of_sample: bool = False) -> list[tuple[str, str, str, list[str], dict]]:
    """(kind, student, truth, candidates, arrays): documented students and controls under setting B, and
    each documented student under setting B refitted without its teacher (kind ``left-out``). With
    ``out_of_sample``, the log-probabilities come from setting A (fitted on the reference half only, so the
    candidates' answers to the students' prompts are not its training data)."""
    reference = load_alpacaeval("teachers_reference", data_dir)
    audit = load_alpacaeval("teachers_audit", data_dir)
    answers = {(r.id, r.teacher): r.output for r in audit}
    students: dict[str, list] = {}
    for r in load_alpacaeval("students_audit", data_dir):
        students.setdefault(r.student, []).append(r)
    out = []
    start = time.perf_counter()

    def fit(left_out: str | None = None):
        model = fit_reference([r for r in [*reference, *audit] if r.teacher != left_out])
        scorer = fit_reference([r for r in reference if r.teacher != left_out]) if out_of_sample else None
        return model, scorer, model.model_for(ALPACAEVAL_TASK).classes_.tolist()

    model, scorer, classes = fit()
    print(f"fitted setting B in {time.perf_counter() - start:.0f} s")
    for name, rows in sorted(students.items()):
        kind = "control" if rows[0].teacher == NO_TEACHER else "student"
        out.append((kind, name, rows[0].teacher, classes, extract(model, rows, scorer, answers)))
    for left_out in sorted({r.teacher for r in reference}):
        taught = {n: rows for n, rows in students.items() if rows[0].teacher == left_out}
        if not taught:
            continue
        model, scorer, classes = fit(left_out)
        for name, rows in sorted(taught.items()):
            out.append(("left-out", name, left_out, classes, extract(model, rows, scorer, answers)))
        print(f"fitted setting B without {left_out} ({time.perf_counter() - start:.0f} s so far)")
    return out


def save(path: Path, found: list) -> None:
    flat = {}
    for n, (kind, name, truth, classes, arrays) in enumerate(found):
        flat[f"{n}/meta"] = np.array([kind, name, truth, *classes])
        flat.update({f"{n}/{key}": arrays[key] for key in ARRAYS})
    np.savez_compressed(path, **flat)


def load(path: Path) -> list:
    data = np.load(path)
    found = []
    for n in range(len([k for k in data.files if k.endswith("/meta")])):
        kind, name, truth, *classes = data[f"{n}/meta"].tolist()
        found.append((kind, name, truth, classes, {key: data[f"{n}/{key}"] for key in ARRAYS}))
    return found


# -- statistics: per-output pairwise differences d[n, i, j] (antisymmetric in i, j) --------------------------
def cosine(a: dict[str, np.ndarray]) -> np.ndarray:
    cos = PairedReferences.cosines((a["tx"], a["xx"], a["gram"]))
    return cos[:, :, None] - cos[:, None, :]


def midpoint(a: dict[str, np.ndarray]) -> np.ndarray:
    lp, ans = a["lp"], a["ans"]                                # ans[n, m, i] = s_i(a_m)
    diag = np.diagonal(ans, axis1=1, axis2=2)                  # s_i(a_i)
    mid = (diag[:, :, None] - ans + np.swapaxes(ans, 1, 2) - diag[:, None, :]) / 2
    return lp[:, :, None] - lp[:, None, :] - mid


def centred_logodds(a: dict[str, np.ndarray]) -> np.ndarray:
    lp, centre = a["lp"], a["ans"].mean(axis=1)               # mean over the candidates' answers
    return (lp - centre)[:, :, None] - (lp - centre)[:, None, :]


def logodds_cosine(a: dict[str, np.ndarray]) -> np.ndarray:
    """Today's cosine, in the classifier's log-odds space instead of the feature space: vectors of centred
    log-probabilities (k numbers per output and per answer), centred by the candidates' mean answer."""
    x = a["lp"] - a["lp"].mean(axis=1, keepdims=True)
    answers = a["ans"] - a["ans"].mean(axis=2, keepdims=True)  # [n, m, :] answer m's centred log-probabilities
    centre = answers.mean(axis=1)
    dx, da = x - centre, answers - centre[:, None, :]
    norm = np.linalg.norm(dx, axis=1)[:, None] * np.linalg.norm(da, axis=2)
    cos = np.divide(np.einsum("nk,nmk->nm", dx, da), norm, out=np.zeros(norm.shape), where=norm > 1e-12)
    return cos[:, :, None] - cos[:, None, :]


def logodds_covariance(a: dict[str, np.ndarray]) -> np.ndarray:
    """Prompt-specific copying only: the covariance over the audit's prompts between the student's centred
    log-odds of i against j and how far i's own answer lies on i's side of j's (a constant lean of the student
    towards i, the same on every prompt, contributes nothing)."""
    u = centred_logodds(a)
    ans = a["ans"]
    diag = np.diagonal(ans, axis1=1, axis2=2)                  # s_i(a_i)
    own = diag[:, :, None] - ans                                # [n, i, j] = (s_i - s_j)(a_i)
    v = own + np.swapaxes(own, 1, 2)                            # (s_i - s_j)(a_i) - (s_i - s_j)(a_j)
    return (u - u.mean(axis=0)) * (v - v.mean(axis=0))


def raw_cosine(a: dict[str, np.ndarray]) -> np.ndarray:
    norm = np.sqrt(np.maximum(a["xx"][:, None] * np.diagonal(a["gram"], axis1=1, axis2=2), 0.0))
    cos = np.divide(a["tx"], norm, out=np.zeros_like(a["tx"]), where=norm > 1e-12)
    return cos[:, :, None] - cos[:, None, :]


def standardized(d: np.ndarray) -> np.ndarray:
    sd = d.std(axis=0, ddof=1)
    return np.divide(d, sd, out=np.zeros_like(d), where=sd > 1e-12)


def stouffer(a: dict[str, np.ndarray]) -> np.ndarray:
    return standardized(cosine(a)) + standardized(midpoint(a))


# -- tests ---------------------------------------------------------------------------------------------------
def t_p(d: np.ndarray, i: int) -> float:
    """Intersection-union of one-sided paired t-tests: is candidate i's mean above each other's?"""
    others = [j for j in range(d.shape[1]) if j != i]
    return max(one_sided_t(len(d), float(d[:, i, j].sum()), float((d[:, i, j] ** 2).sum())) for j in others)


def flip_p(d: np.ndarray, i: int, signs: np.ndarray) -> float:
    """Intersection-union of one-sided sign-flip tests (``signs``: (B, n) random +-1, one set for all pairs)."""
    others = [j for j in range(d.shape[1]) if j != i]
    observed = d[:, i, others].sum(axis=0)
    flipped = signs @ d[:, i, others]                          # (B, k-1)
    return float(((1 + (flipped >= observed - 1e-12).sum(axis=0)) / (len(signs) + 1)).max())


def own_best(d: np.ndarray) -> int:
    return int(np.argmax(d.mean(axis=0).sum(axis=1)))


STATISTICS: dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]] = {
    "cosine": cosine, "midpoint": midpoint, "centred-logodds": centred_logodds,
    "logodds-cosine": logodds_cosine, "logodds-covariance": logodds_covariance, "raw-cosine": raw_cosine,
    "stouffer": stouffer}


def variants(a: dict[str, np.ndarray], signs: np.ndarray) -> dict[str, tuple[int, float]]:
    """(tested candidate, p-value) of every variant on one audit's outputs ``a``."""
    top = int(np.argmax(a["lp"].sum(axis=0)))
    d = {name: f(a) for name, f in STATISTICS.items()}
    out = {}
    for name, values in d.items():
        out[name] = (top, t_p(values, top))
        best = own_best(values)
        out[f"{name}/own-best"] = (best, t_p(values, best))
    out["cosine+midpoint"] = (top, max(out["cosine"][1], out["midpoint"][1]))
    out["cosine+centred-logodds"] = (top, max(out["cosine"][1], out["centred-logodds"][1]))
    best = own_best(d["cosine"])
    both = best if best == own_best(d["midpoint"]) else -1
    out["cosine+midpoint/own-best"] = (best, max(t_p(d["cosine"], best), t_p(d["midpoint"], best)) if both >= 0
                                       else 1.0)
    best = own_best(d["cosine"])
    out["centred-logodds/cosine-best"] = (best, t_p(d["centred-logodds"], best))
    for name in ("cosine", "midpoint", "centred-logodds", "stouffer"):
        out[f"{name} sign-flip"] = (top, flip_p(d[name], top, signs))
    return out


# -- simulated audits --------------------------------------------------------------------------------------
def subset(a: dict[str, np.ndarray], pick: np.ndarray) -> dict[str, np.ndarray]:
    return {key: value[pick] for key, value in a.items()}


def interval(k: int, n: int) -> str:
    """The 95% Clopper-Pearson interval of k in n, as the table prints it."""
    low, high = clopper_pearson(k, n)
    return f"[{low:.2f}, {high:.2f}]"


def run(found: list, draws: int, flips: int, alpha: float, seed: int) -> dict:
    """outcomes[(variant, size, kind)] = list of (named?, right?) per audit."""
    rng = np.random.default_rng(seed)
    outcomes: dict = {}
    for kind, _name, truth, classes, arrays in found:
        n_all = len(arrays["lp"])
        for size in (*SIZES, n_all):
            if size > n_all:
                continue
            signs = rng.choice([-1.0, 1.0], size=(flips, size))
            for _ in range(draws if size < n_all else 1):
                pick = rng.choice(n_all, size=size, replace=False)
                for variant, (tested, p) in variants(subset(arrays, pick), signs).items():
                    named = tested >= 0 and p < alpha
                    key = (variant, "all" if size == n_all else size, kind)
                    outcomes.setdefault(key, []).append((named, named and classes[tested] == truth))
    return outcomes


def report(outcomes: dict, alpha: float) -> None:
    """One row per variant: the documented students' right / wrong / none per size, the controls and the left-out
    students named (count, and the Clopper-Pearson 95% interval of the rate)."""
    names = list(dict.fromkeys(k[0] for k in outcomes))
    sizes = list(dict.fromkeys(k[1] for k in outcomes))
    print(f"\nalpha = {alpha}. Per variant and number of outputs n: documented students named right, wrong, "
          "none (shares; Clopper-Pearson 95% interval of right); human-data controls named; students whose teacher "
          "was left out of the fit named (any name is wrong). n = all: each model once, from all its outputs.")
    print("\n| variant | n | right | wrong | none | controls named | left-out named |\n|---|---|---|---|---|---|---|")
    for variant in names:
        for size in sizes:
            doc = outcomes.get((variant, size, "student"), [])
            ctl = outcomes.get((variant, size, "control"), [])
            out = outcomes.get((variant, size, "left-out"), [])
            if not doc:
                continue
            right = sum(r for _, r in doc)
            named = sum(n for n, _ in doc)
            c_named, o_named = sum(n for n, _ in ctl), sum(n for n, _ in out)
            print(f"| {variant} | {size} | {right / len(doc):.2f} {interval(right, len(doc))} | "
                  f"{named - right}/{len(doc)} | {1 - named / len(doc):.2f} | {c_named}/{len(ctl)} "
                  f"{interval(c_named, len(ctl))} | {o_named}/{len(out)} {interval(o_named, len(out))} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--draws", type=int, default=100, help="random subsets per student and size")
    parser.add_argument("--flips", type=int, default=999, help="random sign flips of the sign-flip tests")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-of-sample", action="store_true",
                        help="log-probabilities from setting A (not fitted on the candidates' answers)")
    parser.add_argument("--cache", type=Path, help="keep the per-output arrays here (read them if it exists)")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.cache is not None and args.cache.exists():
        found = load(args.cache)
    else:
        found = sources(args.data_dir, args.out_of_sample)
        if args.cache is not None:
            save(args.cache, found)
    print(f"per-output arrays of {len(found)} audited models in {time.perf_counter() - start:.0f} s")
    outcomes = run(found, args.draws, args.flips, args.alpha, args.seed)
    report(outcomes, args.alpha)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
