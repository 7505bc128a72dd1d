"""Attribution among the 26-candidate AlpacaEval bank (14 families): students, controls, excluded families,
which-LLM accuracy, fit cost.

Usage (from the repository root; ``../shared`` beside it)::

    python benchmarks/bench_bank.py                       # fits the bank (setting B), minutes
    python benchmarks/bench_bank.py --model bank.npz      # reuse a model fitted by 'attribute-teacher fit'
    python benchmarks/bench_bank.py --which-llm           # also: fit on the reference half, rank every
                                                          # candidate's own audit outputs, per output

Setting B: the model is fitted on the bank's reference and audit halves (every candidate's answer to the
students' prompts is there, so the paired tests run); each student is ranked from its 403 audit outputs.
A student's documented teacher is a version of the 5-candidate set; its family (from the bank's
``candidates.tsv``) is the answer at family level. Prints one table per verdict rule, then the runs with
the student's true family excluded (``--exclude``), then timings. Nothing here is tuned to these students:
the method's settings are the defaults.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from attribution.api import fit_reference  # noqa: E402
from attribution.io import read_records  # noqa: E402
from attribution.persistence import load_model  # noqa: E402
from attribution.result import rank_students  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
BANK = SHARED / "alpacaeval_bank"
STUDENTS = SHARED / "alpacaeval" / "students_audit.jsonl"


def family_table() -> dict[str, str]:
    with open(BANK / "candidates.tsv", encoding="utf-8") as handle:
        return {row["teacher"]: row["family"] for row in csv.DictReader(handle, delimiter="\t")}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fit_bank(files: list[Path]):
    records = [r for path in files for r in read_records(path, require_teacher=True)]
    start = time.perf_counter()
    model = fit_reference(records)
    return model, time.perf_counter() - start, len(records)


def students_run(model, student_records, truth, *, tests: str, exclude_true: bool = False) -> list[dict]:
    rows = []
    groups: dict[str, list] = {}
    for record in student_records:
        groups.setdefault(record.student, []).append(record)
    for name in sorted(groups):
        true_family = truth[name]
        exclude = [true_family] if exclude_true and true_family else []
        if exclude_true and not true_family:
            continue
        start = time.perf_counter()
        result = rank_students(model, groups[name], tests=tests, exclude=exclude)[name].data
        seconds = time.perf_counter() - start
        verdict = result["verdict"]
        rows.append({"student": name, "true_family": true_family, "top_family": result["ranking"][0].get("family"),
                     "top_teacher": result["ranking"][0]["teacher"], "status": verdict["status"],
                     "level": verdict.get("level"), "family": verdict.get("family"), "teacher": verdict.get("teacher"),
                     "p_value": verdict.get("p_value"), "p_paired": verdict.get("p_paired"),
                     "p_unlisted": verdict.get("p_unlisted"), "runner_up": verdict.get("runner_up"),
                     "seconds": seconds})
    return rows


#: --controls: a human-taught model of the same base (LLaMA-1) for each LLaMA-1 student (the README of
#: ../shared/data/alpacaeval lists the bases); the Llama-2 and Mistral students have none in the data.
LLAMA1_CONTROLS = {"alpaca-7b": "guanaco-7b", "alpaca-farm-ppo-human": "guanaco-7b", "baize-v2-7b": "guanaco-7b",
                   "vicuna-13b": "guanaco-7b", "wizardlm-13b": "guanaco-7b", "airoboros-33b": "guanaco-33b",
                   "guanaco-7b": "guanaco-33b", "guanaco-33b": "guanaco-7b"}


def controls_run(model, student_records, truth, *, exclude_true: bool) -> list[dict]:
    groups: dict[str, list] = {}
    for record in student_records:
        groups.setdefault(record.student, []).append(record)
    rows = []
    for name, control in sorted(LLAMA1_CONTROLS.items()):
        if exclude_true and not truth[name]:
            continue
        start = time.perf_counter()
        exclude = [truth[name]] if exclude_true else []
        result = rank_students(model, groups[name], exclude=exclude, control=groups[control])[name].data
        verdict = result["verdict"]
        rows.append({"student": name, "true_family": truth[name], "top_family": result["ranking"][0].get("family"),
                     "top_teacher": result["ranking"][0]["teacher"] + f" / ctrl {control}",
                     "status": verdict["status"], "level": verdict.get("level"), "family": verdict.get("family"),
                     "teacher": verdict.get("teacher"), "p_value": verdict.get("p_value"),
                     "p_paired": verdict.get("p_paired"), "p_unlisted": None, "runner_up": verdict.get("runner_up"),
                     "seconds": time.perf_counter() - start})
    return rows


def summarize(rows: list[dict], *, excluded: bool) -> str:
    documented = [r for r in rows if r["true_family"]]
    controls = [r for r in rows if not r["true_family"]]
    right = sum(r["family"] == r["true_family"] for r in documented if r["family"])
    wrong = sum(r["family"] != r["true_family"] for r in documented if r["family"])
    top = sum(r["top_family"] == r["true_family"] for r in documented)
    named_controls = sum(bool(r["family"]) for r in controls)
    if excluded:
        return f"true family excluded: attributed {right + wrong} of {len(documented)} (all wrong by construction)"
    return (f"top family right {top}/{len(documented)}; family verdicts right {right}, wrong {wrong}, none "
            f"{len(documented) - right - wrong} of {len(documented)}; controls named {named_controls}/{len(controls)}")


def print_rows(rows: list[dict]) -> None:
    print(f"{'student':28s} {'true family':14s} {'top (family)':30s} {'verdict':12s} {'level':7s} "
          f"{'named':30s} {'p':>8s} {'runner-up':14s} {'s':>5s}")
    for r in rows:
        named = r["teacher"] or r["family"] or "-"
        p = "n/a" if r["p_value"] is None else f"{r['p_value']:.2g}"
        top = f"{r['top_teacher']} ({r['top_family']})"
        print(f"{r['student']:28s} {r['true_family'] or 'none':14s} {top:30s} "
              f"{r['status']:12s} {r['level'] or '-':7s} {named:30s} {p:>8s} {str(r['runner_up']):14s} "
              f"{r['seconds']:5.1f}")


def which_llm(families: dict[str, str]) -> None:
    """Fit on the reference half; each candidate's own audit-half outputs, one by one: is the top teacher
    (and the top family, from the per-output family probabilities) the one that wrote it?"""
    from attribution.families import Hierarchy
    from attribution.multitask import as_multitask

    model, seconds, n = fit_bank([BANK / "teachers_reference.jsonl"])
    sub = next(iter(as_multitask(model).models_.values()))
    records = read_records(BANK / "teachers_audit.jsonl", require_teacher=True)
    proba = np.vstack([sub.predict_proba([r.output for r in records[i:i + 512]])
                       for i in range(0, len(records), 512)])
    classes = sub.classes_.tolist()
    h = Hierarchy(classes, sub.families_)
    family_lp = h.family_log_proba(np.log(np.clip(proba, 1e-12, 1)))
    truth_v = np.asarray([r.teacher for r in records])
    truth_f = np.asarray([families[r.teacher] for r in records])
    version = np.asarray(classes)[proba.argmax(axis=1)] == truth_v
    family = np.asarray(h.families)[family_lp.argmax(axis=1)] == truth_f
    summed = np.asarray(h.families)[np.stack([proba[:, h.members[f]].sum(axis=1) for f in h.families], 1)
                                    .argmax(axis=1)] == truth_f
    print(f"\nwhich LLM wrote it (fit on the reference half, {n} outputs, {seconds:.0f} s; "
          f"{len(records)} audit-half outputs, one at a time)")
    print(f"  version {version.mean():.3f}; family {family.mean():.3f} (family = mean of its versions' "
          f"probabilities); family by summed probabilities {summed.mean():.3f}")
    per = Counter()
    tot = Counter()
    for f, ok in zip(truth_f, family):
        per[f] += int(ok)
        tot[f] += 1
    print("  per family: " + ", ".join(f"{f} {per[f] / tot[f]:.2f}" for f in sorted(tot)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="a model of the bank fitted by 'attribute-teacher fit'")
    parser.add_argument("--tests", default="either,both", help="verdict rules to run (comma-separated)")
    parser.add_argument("--which-llm", action="store_true", help="also the per-output which-LLM accuracy")
    parser.add_argument("--controls", action="store_true",
                        help="also rank the LLaMA-1 students with --control (a human-taught LLaMA-1 model)")
    parser.add_argument("--json", type=Path, help="also write every row as JSON here")
    args = parser.parse_args()
    if not BANK.is_dir():
        sys.exit(f"{BANK} not found: the benchmark reads ../shared/data/alpacaeval_bank")
    families = family_table()
    if args.model is not None:
        start = time.perf_counter()
        model = load_model(args.model)
        print(f"model {args.model} ({os.path.getsize(args.model) / 1e6:.1f} MB) loaded in "
              f"{time.perf_counter() - start:.1f} s")
    else:
        model, seconds, n = fit_bank([BANK / "teachers_reference.jsonl", BANK / "teachers_audit.jsonl"])
        print(f"fitted the bank on {n} outputs in {seconds:.0f} s; peak memory so far {peak_mb():.0f} MB")
    students = read_records(STUDENTS)
    labels = {r.student: r.teacher for r in read_records(STUDENTS)}
    truth = {s: (families.get(t) if t != "none" else None) for s, t in labels.items()}
    for record in students:
        object.__setattr__(record, "teacher", None)  # the tool never sees the label
    out: dict[str, list] = {}
    for tests in [t.strip() for t in args.tests.split(",") if t.strip()]:
        rows = students_run(model, students, truth, tests=tests)
        print(f"\n== setting B, rule '{tests}' ==")
        print_rows(rows)
        print(summarize(rows, excluded=False))
        excluded = students_run(model, students, truth, tests=tests, exclude_true=True)
        print("-- the same, each documented student with its true family excluded (--exclude) --")
        print_rows(excluded)
        print(summarize(excluded, excluded=True))
        out[tests] = rows
        out[tests + "+exclude"] = excluded
    if args.controls:
        for excluded_run in (False, True):
            rows = controls_run(model, students, truth, exclude_true=excluded_run)
            title = "--control (a human-taught model of the same LLaMA-1 base)"
            print(f"\n== {title}{', true family excluded' * excluded_run} ==")
            print_rows(rows)
            print(summarize(rows, excluded=excluded_run))
            out["control" + "+exclude" * excluded_run] = rows
    if args.which_llm:
        which_llm(families)
    print(f"\npeak memory of this process {peak_mb():.0f} MB")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
