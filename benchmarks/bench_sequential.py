"""When to stop: the sequential verdict (``rank --sequential``) against the fixed-n paired verdict, simulated audits.

On the 5-candidate AlpacaEval data (setting B: fitted on the references plus every candidate's answers to the
students' prompts, as ``bench_calibration.py`` and ``bench_probes.py``), each student's outputs are scored once
(per-output paired scores, as :class:`attribution.inference.StudentEvidence` computes them, and per-output
log-probabilities); a simulated audit is a random order of them, read in batches of ``--batch-size``:

- the **e-process** rule (:class:`attribution.sequential.SequentialTest`, the library's own) looks after every
  batch and stops when it names a candidate; at a budget of ``N`` outputs it has named one if it stopped by
  ``N``, having used ``min(stop, N)`` outputs;
- the **fixed-n** rule reads the first ``N`` outputs of the same order and names the ranking's top candidate
  when the paired test (intersection-union of one-sided t-tests, ``p_paired < alpha``) says so.

- the **spending** rule (:class:`attribution.sequential.SpendingTest`, ``rank --sequential --sequential-design
  spending``): the fixed-n rule's statistic looked at after every batch against O'Brien-Fleming-type boundaries
  from Lan-DeMets alpha spending over the budget ``N`` (fixed before the first look); the top candidate at each
  look is the ranking's first over the outputs read so far.

Three kinds of audit, each ``--audits`` at least (spread over the students of the kind):

- *controls*: the two human-data students (``teacher`` = none): every attribution is false;
- *excluded*: each documented student with its own teacher left out of the candidates (``exclude=``): every
  attribution is false;
- *documented*: each documented student with every candidate: right / wrong / none, and outputs used.

Prints the false-attribution rate with its 95% Clopper-Pearson interval, and the rates and mean outputs used,
per budget and rule.

    nice -n 10 python benchmarks/bench_sequential.py [--data-dir ../shared/data/alpacaeval] [--audits 200]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _inputs import alpacaeval_records

from attribution.api import ALPHA, fit_reference
from attribution.paired import PairedTest
from attribution.report.error_rates import clopper_pearson
from attribution.sequential import SequentialTest, SpendingTest

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpacaeval"
BUDGETS = (50, 100, 200, 400)
RULES = ("e-process", "spending", "fixed-n")


class Source:
    """One student's outputs scored once: per-output log-probabilities and paired scores between the candidates
    in play (NaN rows: no paired answers)."""

    def __init__(self, kind: str, name: str, truth: str, classes: list[str], log_proba: np.ndarray,
                 scores: np.ndarray) -> None:
        self.kind, self.name, self.truth, self.classes = kind, name, truth, classes
        self.log_proba, self.scores = log_proba, scores


def score_student(model, records, exclude: Sequence[str] = ()) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The candidates in play (families of one teacher here) and each output's log-probabilities and paired
    scores, the weighting of ``StudentEvidence`` (exclusions renormalize the candidates' mean answer)."""
    sub = model.model_for(records[0].task)
    docs = sub.prepare([r.output for r in records])
    keep = [not d.is_empty for d in docs]
    docs = [d for d, k in zip(docs, keep) if k]
    ids = [r.id for r, k in zip(records, keep) if k]
    X = sub.featurize(docs)
    h = sub.hierarchy(exclude)
    family = h.family_log_proba(np.log(np.clip(sub.classifier_.predict_proba(X), 1e-12, 1.0)))
    rows, dots = sub.paired_.dot_products(X, ids)
    scores = np.full((len(ids), len(h.families)), np.nan)
    scores[rows] = sub.paired_.cosines(dots, None if h.trivial else h.family_weights)
    return list(h.families), family, scores


def sequential_audit(source: Source, order: np.ndarray, batch_size: int, alpha: float) -> tuple[str | None, int]:
    """The sequential rule over one order of the outputs: (named candidate or None, outputs read when it stopped;
    all of them when it did not)."""
    test = SequentialTest(source.classes, alpha=alpha)
    for start in range(0, len(order), batch_size):
        stop = min(start + batch_size, len(order))
        if test.add(source.scores[order[start:stop]], stop):
            return test.named, stop
    return None, len(order)


def fixed_audit(source: Source, pick: np.ndarray, alpha: float) -> str | None:
    """The fixed-n paired rule on the outputs ``pick``: the ranking's top candidate when ``p_paired < alpha``."""
    top = source.classes[int(np.argmax(source.log_proba[pick].sum(axis=0)))]
    test = PairedTest(source.classes)
    test.add(source.scores[pick])
    result = test.result(top)
    return top if result is not None and result["p_paired"] < alpha else None


def spending_audit(source: Source, order: np.ndarray, batch_size: int, alpha: float) -> tuple[str | None, int]:
    """The alpha-spending rule with the budget ``len(order)``: (named candidate or None, outputs read when it
    stopped), the top candidate at each look the ranking's first over the outputs read so far."""
    test = SpendingTest(source.classes, max_outputs=len(order), batch_size=batch_size, alpha=alpha)
    for start in range(0, len(order), batch_size):
        stop = min(start + batch_size, len(order))
        top = source.classes[int(np.argmax(source.log_proba[order[:stop]].sum(axis=0)))]
        if test.add(source.scores[order[start:stop]], stop, top):
            return test.named, stop
    return None, len(order)


def simulate(sources: list[Source], audits: int, batch_size: int, alpha: float, rng: np.random.Generator) -> list:
    """Every simulated audit: (kind, truth, budget, rule, named, outputs used)."""
    rows = []
    by_kind: dict[str, list[Source]] = {}
    for source in sources:
        by_kind.setdefault(source.kind, []).append(source)
    for kind, group in by_kind.items():
        per_source = math.ceil(audits / len(group))
        for source in group:
            for _ in range(per_source):
                order = rng.permutation(len(source.scores))
                named, used = sequential_audit(source, order[:max(BUDGETS)], batch_size, alpha)
                for budget in BUDGETS:
                    n = min(budget, len(order))
                    seq_named = named if used <= n and named is not None else None
                    rows.append((kind, source.truth, budget, "e-process", seq_named,
                                 used if seq_named is not None else n))
                    rows.append((kind, source.truth, budget, "fixed-n", fixed_audit(source, order[:n], alpha), n))
                    rows.append((kind, source.truth, budget, "spending",
                                 *spending_audit(source, order[:n], batch_size, alpha)))
    return rows


def report(rows: list, alpha: float) -> None:
    print(f"\nfalse attributions (controls; documented students with their teacher excluded), alpha = {alpha}, "
          "95% Clopper-Pearson interval")
    for kind in ("control", "excluded"):
        for budget in BUDGETS:
            for rule in RULES:
                sub = [r for r in rows if r[0] == kind and r[2] == budget and r[3] == rule]
                k = sum(r[4] is not None for r in sub)
                low, high = clopper_pearson(k, len(sub))
                print(f"  {kind:<9} N={budget:3d} {rule:<10}: {k:3d}/{len(sub)} = {k / len(sub):.3f} "
                      f"[{low:.3f}, {high:.3f}]   mean outputs used {np.mean([r[5] for r in sub]):.1f}")
    print("\ndocumented students (every candidate): right / wrong / none, mean outputs used (all audits; named ones)")
    for budget in BUDGETS:
        for rule in RULES:
            sub = [r for r in rows if r[0] == "documented" and r[2] == budget and r[3] == rule]
            right = sum(r[4] == r[1] for r in sub)
            wrong = sum(r[4] is not None and r[4] != r[1] for r in sub)
            named = [r[5] for r in sub if r[4] is not None]
            used = np.mean([r[5] for r in sub])
            print(f"  N={budget:3d} {rule:<10}: right {right / len(sub):.3f}  wrong {wrong / len(sub):.3f}  none "
                  f"{1 - (right + wrong) / len(sub):.3f}  ({len(sub)} audits)  outputs used {used:.1f}"
                  f"; when named {np.mean(named) if named else float('nan'):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--audits", type=int, default=200, help="simulated audits per kind (at least)")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[10, 25])
    parser.add_argument("--alpha", type=float, default=ALPHA)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    reference, teacher_audit, students = alpacaeval_records(args.data_dir)
    start = time.perf_counter()
    model = fit_reference(reference + teacher_audit)
    print(f"fitted setting B on {len(reference) + len(teacher_audit)} outputs in {time.perf_counter() - start:.0f} s",
          flush=True)
    sources = []
    for name in sorted({r.student for r in students if r.student}):
        rows = [r for r in students if r.student == name]
        truth = str(rows[0].teacher)
        kinds = [("control", ())] if truth == "none" else [("documented", ()), ("excluded", (truth,))]
        for kind, exclude in kinds:
            sources.append(Source(kind, name, truth, *score_student(model, rows, exclude)))
    print(f"scored {len(sources)} sources in {time.perf_counter() - start:.0f} s", flush=True)
    for batch_size in args.batch_size:
        rng = np.random.default_rng(args.seed)
        print(f"\n=== batch size {batch_size} ===")
        report(simulate(sources, args.audits, batch_size, args.alpha, rng), args.alpha)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
