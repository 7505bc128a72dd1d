"""How far can a student-level probability, its support and the verdict be trusted? Simulated audits.

On the AlpacaEval provenance data (real distilled LLMs), every documented student and every
teacher's own audit outputs are audited many times from random subsets of 10-400 outputs. Per
simulated audit: the top teacher, its ``probability`` and ``support`` (as `rank` computes them,
with the library's own functions) and, for students, the verdict. Prints reliability tables
(confidence bin, mean confidence, accuracy, count) and the expected calibration error (ECE) of
``probability`` and ``support`` read as "the chance that the top teacher is right", and the
verdict's rates (right / wrong / none) per subset size, including on the human-data controls.

Students use setting B (references plus the teachers' answers to the students' prompts: paired
test); the teachers' own audit outputs use setting A (references only: they are not training data).

    python benchmarks/bench_calibration.py [--data-dir ../shared/data/alpacaeval] [--draws 40]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from attribution.api import ALPHA, fit_reference
from attribution.io import read_records
from attribution.models import rank_teachers
from attribution.paired import PairedTest

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpacaeval"
SIZES = (10, 25, 50, 100, 200, 400)
BINS = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0001])


def scored(model, records):
    """Per-output log-probabilities and paired scores (NaN rows without a paired prompt)."""
    sub = model.model_for(records[0].task)
    docs = sub.prepare([r.output for r in records])
    keep = np.array([len(d) > 0 for d in docs])
    docs = [d for d, k in zip(docs, keep) if k]
    ids = [r.id for r, k in zip(records, keep) if k]
    X = sub.featurize(docs)
    log_proba = np.log(np.clip(sub.classifier_.predict_proba(X), 1e-12, 1.0))
    paired = sub.paired_.scores_per_output(X, ids) if sub.paired_ is not None else np.full(log_proba.shape, np.nan)
    return sub, log_proba, paired


def audit(sub, log_proba, paired, rng, n_boot=200):
    """One simulated audit of the given outputs: top teacher, probability, support, verdict p."""
    classes = sub.classes_.tolist()
    weights = rng.poisson(1.0, size=(len(log_proba), n_boot)).astype(float)
    frame = rank_teachers(classes, log_proba.sum(axis=0), len(log_proba), weights.T @ log_proba, weights.sum(axis=0))
    top = frame.iloc[0]
    test = PairedTest(classes)
    test.add(paired)  # outputs without paired answers are left out
    result = test.result(top["teacher"])
    p = None if result is None else result["p_paired"]
    return top["teacher"], float(top["probability"]), float(top["support"]), p


def reliability(confidence, correct, name):
    confidence, correct = np.asarray(confidence), np.asarray(correct, dtype=float)
    which = np.digitize(confidence, BINS) - 1
    print(f"  {name}: bin         mean conf  accuracy      n")
    ece = 0.0
    for b in range(len(BINS) - 1):
        mask = which == b
        if mask.any():
            gap = abs(confidence[mask].mean() - correct[mask].mean())
            ece += mask.mean() * gap
            print(f"    [{BINS[b]:.1f}, {min(BINS[b + 1], 1):.1f})   {confidence[mask].mean():9.3f} "
                  f"{correct[mask].mean():9.3f} {mask.sum():6d}")
    print(f"    ECE = {ece:.3f} over {len(confidence)} simulated audits")
    return ece


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--draws", type=int, default=40, help="simulated audits per source and size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    d = args.data_dir
    reference = read_records(d / "teachers_reference.jsonl", require_teacher=True)
    teacher_audit = read_records(d / "teachers_audit.jsonl", require_teacher=True)
    students = read_records(d / "students_audit.jsonl")
    start = time.perf_counter()
    model_a = fit_reference(reference)
    model_b = fit_reference(reference + teacher_audit)
    print(f"fitted settings A and B in {time.perf_counter() - start:.0f} s")
    rng = np.random.default_rng(args.seed)
    sources = []  # (kind, name, truth, sub, log_proba, paired)
    for name in sorted({r.student for r in students}):
        rows = [r for r in students if r.student == name]
        sources.append(("student", name, rows[0].teacher, *scored(model_b, rows)))
    for name in sorted({r.teacher for r in teacher_audit}):
        rows = [r for r in teacher_audit if r.teacher == name]
        sources.append(("teacher", name, name, *scored(model_a, rows)))
    records = []  # kind, truth, n, top, probability, support, p
    for kind, name, truth, sub, log_proba, paired in sources:
        for n in SIZES:
            if n > len(log_proba):
                continue
            for _ in range(args.draws if n < len(log_proba) else 1):
                pick = rng.choice(len(log_proba), size=n, replace=False)
                top, probability, support, p = audit(sub, log_proba[pick], paired[pick], rng)
                records.append((kind, name, truth, n, top, probability, support, p))
    for kind in ("student", "teacher"):
        rows = [r for r in records if r[0] == kind and r[2] != "none"]
        correct = [r[4] == r[2] for r in rows]
        print(f"\n{kind}s ({'setting B' if kind == 'student' else 'setting A'}): top teacher right in "
              f"{np.mean(correct):.3f} of {len(rows)} simulated audits")
        reliability([r[5] for r in rows], correct, "probability")
        reliability([r[6] for r in rows], correct, "support")
        print("  by size: n, top right, mean probability, mean support")
        for n in SIZES:
            sub = [r for r in rows if r[3] == n]
            if sub:
                print(f"    {n:4d}  {np.mean([r[4] == r[2] for r in sub]):.3f}  {np.mean([r[5] for r in sub]):.3f}  "
                      f"{np.mean([r[6] for r in sub]):.3f}")
    print(f"\npaired verdict (setting B, alpha={ALPHA}) per subset size: documented students right / wrong / none; "
          "human-data controls attributed")
    for n in SIZES:
        doc = [r for r in records if r[0] == "student" and r[2] != "none" and r[3] == n]
        ctl = [r for r in records if r[0] == "student" and r[2] == "none" and r[3] == n]
        named = [r for r in doc if r[7] is not None and r[7] < ALPHA]
        right = sum(r[4] == r[2] for r in named)
        false_ctl = sum(r[7] is not None and r[7] < ALPHA for r in ctl)
        print(f"  n={n:4d}: right {right / len(doc):.3f}  wrong {(len(named) - right) / len(doc):.3f}  "
              f"none {1 - len(named) / len(doc):.3f}  ({len(doc)} audits)   controls attributed "
              f"{false_ctl}/{len(ctl)}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
