"""Does the verdict say "inconclusive" when the true teacher is not among the candidates?

For every student in the released data, fit on the references *without* its teacher and rank
it (expect ``inconclusive``); then fit on all references and rank it (expect the true teacher
when a verdict is given). Prints one line per student and the totals.

Then the same over every subset of 3, 4 and 5 candidate teachers (``--subsets``), ranking every
student against each subset: how often is a wrong teacher named when the true one is missing?
The totals (the default rule, every teacher listed, then the true one left out) go into the error-rate
artifact ``attribution/data/error_rates.json`` (run ``full/paper_qa``, with the commit, date, command and
settings), from which reports show them (:mod:`attribution.report.error_rates`).

Subsets of 3 are run with ``open_set_min_teachers=3`` to show why the default needs 4.
``--matched-null`` also tries an alternative null (rejected): each observed margin is measured
under the same leave-one-out model as its null, so both rank the same number of teachers.

    python benchmarks/bench_unlisted.py [--data-dir ../shared/data/paper_qa] [--features combined]
                                        [--subsets [--matched-null]] [--no-artifact]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from attribution.api import ALPHA, fit_reference, rank_student
from attribution.estimator import TeacherAttributor
from attribution.evaluation import student_key
from attribution.inference import _margin
from attribution.io import read_records

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT.parent / "shared" / "data" / "paper_qa"
#: The artifact's run of this benchmark (the report's paper QA rows).
RUN = "full/paper_qa"


def _p(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--features", default="combined")
    parser.add_argument("--subsets", action="store_true", help="also rank against every subset of 3-5 teachers")
    parser.add_argument("--matched-null", action="store_true", help="with --subsets: also try the class-matched null")
    parser.add_argument("--artifact", type=Path, default=ROOT / "attribution" / "data" / "error_rates.json",
                        help="the error-rate artifact to update with the totals (run 'full/paper_qa')")
    parser.add_argument("--no-artifact", action="store_true", help="print only")
    args = parser.parse_args()
    from _inputs import provenance

    source = provenance(ROOT, sys.argv)  # the code that runs: taken before anything else changes the tree
    listed = {"attributed right": 0, "attributed wrong": 0, "inconclusive": 0}
    unlisted = {"attributed (wrong)": 0, "inconclusive": 0}
    candidates, signatures = set(), set()
    for ref_path in sorted(args.data_dir.glob("*_teacher.jsonl")):
        refs = read_records(ref_path, require_teacher=True, skip_invalid=True)
        students = read_records(Path(str(ref_path).replace("_teacher", "_student")), skip_invalid=True)
        full = fit_reference(refs, features=args.features)
        candidates.add(len({r.teacher for r in refs}))
        for group in sorted({student_key(r) for r in students}):
            outputs = [r for r in students if student_key(r) == group]
            truth = outputs[0].teacher
            signatures.add(full.model_for(outputs[0].task).signature_)
            v = rank_student(full, outputs)["verdict"]
            key = "inconclusive" if v["status"] != "attributed" else (
                "attributed right" if v["teacher"] == truth else "attributed wrong")
            listed[key] += 1
            without = fit_reference([r for r in refs if r.teacher != truth], features=args.features)
            w = rank_student(without, outputs)["verdict"]
            unlisted["inconclusive" if w["status"] != "attributed" else "attributed (wrong)"] += 1
            print(f"{ref_path.stem.split('_')[0]:<14} {group:<18} n={len(outputs):<4} "
                  f"listed: {v['status']:<12} {v.get('best_candidate') or v['teacher']:<13} p={v['p_value']:.3f} "
                  f"(paired {_p(v['p_paired'])}, unlisted {_p(v['p_unlisted'])})   "
                  f"unlisted: {w['status']:<12} {w.get('best_candidate') or w['teacher']:<13} p={w['p_value']:.3f} "
                  f"(paired {_p(w['p_paired'])}, unlisted {_p(w['p_unlisted'])})")
    print("teacher among the candidates:", listed)
    print("teacher left out of the candidates:", unlisted)
    if not args.no_artifact:
        record_totals(args, source, listed, unlisted, candidates, signatures)
    if args.subsets:
        subsets(args.data_dir, args.features, args.matched_null)


def record_totals(args: argparse.Namespace, source: dict[str, Any], listed: dict[str, int],
                  unlisted: dict[str, int], candidates: set[int], signatures: set[str]) -> None:
    """The totals into the error-rate artifact (run ``full/paper_qa``), in the format of ``full/alpacaeval``."""
    from _inputs import record_artifact

    from attribution.report import error_rates

    if len(candidates) != 1 or len(signatures) != 1:
        sys.exit(f"{args.data_dir}: the tasks differ in candidates {sorted(candidates)} or model settings "
                 f"{sorted(signatures)}: one artifact run cannot describe them (use --no-artifact)")
    signature = signatures.pop()
    run = {"benchmark": "bench_unlisted", **source,
           "settings": {"data": "paper QA (GPT-2 students of 5 LLMs)", "candidates": candidates.pop(),
                        "rule": "either", "alpha": ALPHA, "outputs": "all of each student",
                        "features": error_rates.signature_fields(signature).get("features"), "signature": signature},
           "cases": {"listed": {"right": listed["attributed right"], "wrong": listed["attributed wrong"],
                                "none": listed["inconclusive"], "n": sum(listed.values())},
                     "left_out": {"named": unlisted["attributed (wrong)"], "n": sum(unlisted.values())}}}
    record_artifact(args.artifact, RUN, run)
    print(f"wrote '{RUN}' into {args.artifact}")


def matched_p_value(model: TeacherAttributor, references: list, outputs: list[str], top: str,
                    rng: np.random.Generator, n_draws: int = 200) -> float:
    """The rejected alternative: for each candidate j other than the top one, compare the student's
    margin under a model fitted without j with the margins of groups of j's outputs under that model."""
    p_values = []
    for left_out in model.classes_:
        if left_out == top:
            continue
        kept = [r for r in references if r.teacher != left_out]
        sub = TeacherAttributor(features=model.features, open_set=False, n_bootstrap=0).fit(
            [r.output for r in kept], [r.teacher for r in kept])
        mean = np.log(np.clip(sub.predict_proba(outputs), 1e-12, 1)).mean(axis=0)
        if sub.classes_[np.argmax(mean)] != top:
            p_values.append(1.0)
            continue
        held = np.log(np.clip(sub.predict_proba([r.output for r in references if r.teacher == left_out]),
                              1e-12, 1))
        picks = rng.integers(0, len(held), size=(n_draws, min(len(outputs), 1000)))
        null = _margin(held[picks].mean(axis=1))
        p_values.append(float((1 + np.sum(null >= _margin(mean))) / (1 + n_draws)))
    return max(p_values)


def subsets(data_dir: Path, features: str, matched: bool = False) -> None:
    """Rank every student against every subset of 3, 4 and 5 candidate teachers."""
    outcomes: Counter = Counter()
    smallest_p: dict[int, float] = {}  # per k, over students of an unlisted teacher
    rng = np.random.default_rng(0)
    for ref_path in sorted(data_dir.glob("*_teacher.jsonl")):
        refs = read_records(ref_path, require_teacher=True, skip_invalid=True)
        students = read_records(Path(str(ref_path).replace("_teacher", "_student")), skip_invalid=True)
        teachers = sorted({r.teacher for r in refs})
        for k in range(3, len(teachers) + 1):
            for candidates in itertools.combinations(teachers, k):
                model = fit_reference([r for r in refs if r.teacher in candidates], features=features,
                                      open_set_min_teachers=3, n_bootstrap=0)
                for group in sorted({student_key(r) for r in students}):
                    outputs = [r for r in students if student_key(r) == group]
                    truth = outputs[0].teacher
                    v = rank_student(model, outputs)["verdict"]
                    outcome = ("inconclusive" if v["status"] != "attributed" else
                               "right" if v["teacher"] == truth else "WRONG")
                    outcomes[(k, "listed" if truth in candidates else "unlisted", outcome)] += 1
                    if truth not in candidates:
                        smallest_p[k] = min(smallest_p.get(k, 1.0), v["p_unlisted"])
                    if matched:
                        listed = [r for r in refs if r.teacher in candidates]
                        p = matched_p_value(model.model_for(outputs[0].task), listed,
                                            [r.output for r in outputs], v["best_candidate"], rng)
                        outcome = ("inconclusive" if p >= 0.05 else
                                   "right" if v["best_candidate"] == truth else "WRONG")
                        outcomes[(k, "listed" if truth in candidates else "unlisted", f"matched null: {outcome}")] += 1
    print("every subset of candidates (k, true teacher listed?, verdict): count")
    for key in sorted(outcomes):
        print(f"  {key}: {outcomes[key]}")
    for k, p in sorted(smallest_p.items()):
        print(f"  smallest p_unlisted of a student whose teacher is not among {k} candidates: {p:.3f}")


if __name__ == "__main__":
    main()
