"""Real distilled LLMs: does the verdict name the documented teacher? (AlpacaEval provenance benchmark)

Eleven real instruction-tuned models (nine with a documented teacher, two Guanaco controls trained
on human data) and five candidate teachers, all answering AlpacaEval instructions (see
``../shared/data/alpacaeval/README.md``). Two audit settings, as in issue 10:

- **A**, references only: fit on ``teachers_reference.jsonl`` (the other half of the prompts);
- **B**, the full audit recipe: fit on ``teachers_reference.jsonl`` + ``teachers_audit.jsonl`` (every
  candidate also answered the student's own prompts, same ids).

Prints, per setting: each student's documented teacher, top teacher, probability, support, verdict
and p-values; totals; per-output accuracy on the documented students; under A, "which LLM wrote
this" on the teachers' own audit outputs (per output, and each teacher ranked as a student);
verdicts from random subsets of 10/25/50/100 outputs per student; leave-one-teacher-out (fit B
without teacher U, rank the students whose documented teacher is U: any verdict is wrong); timings.

Everything runs in one process, so each text is tagged once (ranking normally tags streamed student
outputs without caching them, to keep memory flat; here they are served from the tag cache, since
the same outputs are ranked many times). Works with and without the paired verdict of issue 10
(``verdict.test``, ``p_paired``, ``n_paired`` are printed when present).

Setting B's full-data counts (documented students right / wrong / none, controls named, true teacher left out with
the default and the strict rule) go into the error-rate artifact ``attribution/data/error_rates.json`` (run
``full/alpacaeval``, with the commit, date and command), from which reports show them.

    python benchmarks/bench_alpacaeval.py [--data-dir ../shared/data/alpacaeval] [--quick] [--no-artifact]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from attribution.api import ALPHA, fit_reference, rank_student
from attribution.datasets import ALPACAEVAL_TASK, load_alpacaeval
from attribution.tagging import get_tagger

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT.parent / "shared" / "data" / "alpacaeval"
SIZES = (10, 25, 50, 100)
NO_TEACHER = "none"


def cache_streamed_tags() -> float:
    """Load the tagger (returns seconds) and make it cache every text it tags, streamed or not."""
    start = time.perf_counter()
    tagger = get_tagger()  # the instance TeacherAttributor's defaults use
    tag = tagger.tag
    tagger.tag = lambda texts, cache=True: tag(texts, cache=True)
    return time.perf_counter() - start


def by_student(records: list) -> dict[str, list]:
    groups: dict[str, list] = {}
    for record in records:
        groups.setdefault(record.student, []).append(record)
    return groups


def outcome(verdict: dict[str, Any], truth: str) -> str:
    """'right' / 'wrong' (a named teacher) or 'none' (inconclusive or unavailable)."""
    if verdict["status"] != "attributed":
        return "none"
    return "right" if verdict["teacher"] == truth else "wrong"


def fmt_p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def verdict_line(result: dict[str, Any]) -> str:
    v = result["verdict"]
    named = v.get("teacher") or f"({v.get('best_candidate')})"
    extra = ""
    if "test" in v or "p_paired" in v:
        extra = f"  test={v.get('test') or '-'} p_paired={fmt_p(v.get('p_paired'))} n_paired={v.get('n_paired', '-')}"
    return f"{v['status']:<12} {named:<22} p_unlisted={fmt_p(v.get('p_unlisted'))}{extra}"


def rank_students(model, students: dict[str, list], label: str) -> tuple[dict[str, dict], list[float]]:
    """Rank every student from all its outputs; print one line each and the totals."""
    results, seconds = {}, []
    print(f"\n== setting {label}: each student ranked from all its outputs ==")
    print(f"{'student':<27} {'documented':<19} {'top teacher':<19} {'prob':>5} {'supp':>5}  verdict")
    for name, records in students.items():
        start = time.perf_counter()
        result = rank_student(model, records)
        seconds.append(time.perf_counter() - start)
        top = result["ranking"][0]
        results[name] = result
        print(f"{name:<27} {records[0].teacher:<19} {top['teacher']:<19} {top['probability']:>5.2f} "
              f"{top['support']:>5.2f}  {verdict_line(result)}")
    documented = {n: r for n, r in results.items() if students[n][0].teacher != NO_TEACHER}
    ranked = sum(r["ranking"][0]["teacher"] == students[n][0].teacher for n, r in documented.items())
    verdicts = Counter(outcome(r["verdict"], students[n][0].teacher) for n, r in documented.items())
    controls = {n: r["verdict"]["status"] == "attributed" for n, r in results.items() if n not in documented}
    print(f"setting {label}: ranked right {ranked}/{len(documented)}; verdicts right {verdicts['right']}, "
          f"wrong {verdicts['wrong']}, none {verdicts['none']} (of {len(documented)}); controls attributed "
          f"{sum(controls.values())}/{len(controls)} ({', '.join(n for n, a in controls.items() if a) or 'none'})")
    return results, seconds


def per_output_accuracy(model, students: dict[str, list], label: str) -> None:
    sub = model.model_for(ALPACAEVAL_TASK)
    hits, per_student = [], []
    for name, records in students.items():
        truth = records[0].teacher
        if truth == NO_TEACHER:
            continue
        proba = sub.predict_proba([r.output for r in records])
        right = sub.classes_[proba.argmax(axis=1)] == truth
        hits.extend(right.tolist())
        per_student.append(f"{name} {right.mean():.2f}")
    print(f"setting {label}: per-output accuracy on documented students {np.mean(hits):.3f} "
          f"({len(hits)} outputs; chance {1 / len(sub.classes_):.2f}); per student: {', '.join(per_student)}")


def which_llm(model, audit: list) -> None:
    """Setting A only: the teachers' own audit-half outputs, per output and ranked as students."""
    sub = model.model_for(ALPACAEVAL_TASK)
    truth = np.array([r.teacher for r in audit])
    predicted = sub.classes_[sub.predict_proba([r.output for r in audit]).argmax(axis=1)]
    per = ", ".join(f"{t} {np.mean(predicted[truth == t] == t):.2f}" for t in sorted(set(truth.tolist())))
    print(f"\n== which LLM (setting A, the teachers' own audit outputs) ==\n"
          f"per output: {np.mean(predicted == truth):.3f} ({len(audit)} outputs); per teacher: {per}")
    for teacher in sorted(set(truth.tolist())):
        result = rank_student(model, [r for r in audit if r.teacher == teacher])
        print(f"  {teacher:<19} ranked as a student: top {result['ranking'][0]['teacher']:<19} {verdict_line(result)}")


def subsample_draws(students: dict[str, list], draws: int, seed: int = 0) -> dict[tuple[str, int], list[list]]:
    """The same seeded subsets for both settings: (student, size) -> draws of records."""
    rng = np.random.default_rng(seed)
    picks = {}
    for name, records in students.items():
        for size in SIZES:
            picks[(name, size)] = [[records[i] for i in rng.choice(len(records), size=size, replace=False)]
                                   for _ in range(draws)]
    return picks


def subsamples(model, students: dict[str, list], picks: dict, label: str) -> float:
    start = time.perf_counter()
    print(f"setting {label}: verdicts from n random outputs per student "
          f"({len(next(iter(picks.values())))} draws each; documented students: right/wrong/none share, ranked right; "
          f"controls: attributed share)")
    for size in SIZES:
        documented, ranked, controls = Counter(), [], []
        for name, records in students.items():
            truth = records[0].teacher
            for subset in picks[(name, size)]:
                result = rank_student(model, subset)
                if truth == NO_TEACHER:
                    controls.append(result["verdict"]["status"] == "attributed")
                else:
                    documented[outcome(result["verdict"], truth)] += 1
                    ranked.append(result["ranking"][0]["teacher"] == truth)
        total = sum(documented.values())
        print(f"  n={size:<4} right {documented['right'] / total:.2f}  wrong {documented['wrong'] / total:.2f}  "
              f"none {documented['none'] / total:.2f}  ranked right {np.mean(ranked):.2f}  "
              f"controls attributed {np.mean(controls):.2f}")
    return time.perf_counter() - start


def leave_one_teacher_out(references: list, students: dict[str, list]) -> tuple[float, Counter]:
    """Setting B without teacher U; rank U's documented students (a named teacher is always wrong), with the default
    rule and with the strict one (``both``). Returns the seconds and the counts (``wrong``, ``wrong_both``, ``n``)."""
    start = time.perf_counter()
    print("\n== leave one teacher out (setting B without U; rank the students U taught) ==")
    wrong = total = 0
    counts: Counter = Counter()
    for left_out in sorted({r.teacher for r in references}):
        taught = {n: recs for n, recs in students.items() if recs[0].teacher == left_out}
        if not taught:
            print(f"  without {left_out:<19} (no student of it)")
            continue
        model = fit_reference([r for r in references if r.teacher != left_out])
        for name, records in taught.items():
            result = rank_student(model, records)
            total += 1
            wrong += result["verdict"]["status"] == "attributed"
            counts["wrong_both"] += rank_student(model, records, tests="both")["verdict"]["status"] == "attributed"
            print(f"  without {left_out:<19} {name:<27} top {result['ranking'][0]['teacher']:<19} "
                  f"{verdict_line(result)}")
    print(f"leave-one-teacher-out: {wrong} wrong attribution(s) of {total} students ({counts['wrong_both']} with "
          "--verdict-test both)")
    counts.update(wrong=wrong, n=total)
    return time.perf_counter() - start, counts


def record_full_data(args: argparse.Namespace, source: dict[str, Any], model, students: dict[str, list],
                     results: dict[str, dict], left_out: Counter) -> None:
    """Setting B's full-data counts into the error-rate artifact (run ``full/alpacaeval``)."""
    from _inputs import record_artifact

    from attribution.report import error_rates

    documented = Counter(outcome(r["verdict"], students[n][0].teacher) for n, r in results.items()
                         if students[n][0].teacher != NO_TEACHER)
    controls = [r["verdict"]["status"] == "attributed" for n, r in results.items()
                if students[n][0].teacher == NO_TEACHER]
    sub = model.model_for(ALPACAEVAL_TASK)
    run = {"benchmark": "bench_alpacaeval", **source,
           "settings": {"data": "5-candidate AlpacaEval data", "setting": "B", "candidates": len(sub.classes_),
                        "rule": "either", "alpha": ALPHA, "outputs": "all (403 per student)",
                        "features": error_rates.signature_fields(sub.signature_).get("features"),
                        "signature": sub.signature_},
           "cases": {"documented": {"right": documented["right"], "wrong": documented["wrong"],
                                    "none": documented["none"], "n": sum(documented.values())},
                     "controls": {"named": sum(controls), "n": len(controls)},
                     "left_out": {"named": left_out["wrong"], "n": left_out["n"]},
                     "left_out_both": {"named": left_out["wrong_both"], "n": left_out["n"]}}}
    record_artifact(args.artifact, "full/alpacaeval", run)
    print(f"wrote 'full/alpacaeval' into {args.artifact}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--quick", action="store_true", help="2 subsample draws instead of 5")
    parser.add_argument("--artifact", type=Path, default=ROOT / "attribution" / "data" / "error_rates.json",
                        help="the error-rate artifact to update with setting B's full-data counts")
    parser.add_argument("--no-artifact", action="store_true", help="print only")
    args = parser.parse_args()
    from _inputs import provenance

    source = provenance(ROOT, sys.argv)
    references = load_alpacaeval("teachers_reference", args.data_dir)
    audit = load_alpacaeval("teachers_audit", args.data_dir)
    students = by_student(load_alpacaeval("students_audit", args.data_dir))
    print(f"data: {args.data_dir.name}: {len(references)} reference and {len(audit)} audit teacher outputs, "
          f"{len(students)} students x {len(next(iter(students.values())))} outputs")
    load_seconds = cache_streamed_tags()

    start = time.perf_counter()
    model_a = fit_reference(references)
    fit_a = time.perf_counter() - start
    results_a, rank_a = rank_students(model_a, students, "A")
    per_output_accuracy(model_a, students, "A")
    which_llm(model_a, audit)

    start = time.perf_counter()
    model_b = fit_reference([*references, *audit])
    fit_b = time.perf_counter() - start
    results_b, rank_b = rank_students(model_b, students, "B")
    per_output_accuracy(model_b, students, "B")

    print("\n== subsamples ==")
    picks = subsample_draws(students, 2 if args.quick else 5)
    sub_seconds = subsamples(model_a, students, picks, "A") + subsamples(model_b, students, picks, "B")
    loto_seconds, left_out = leave_one_teacher_out([*references, *audit], students)
    if not args.no_artifact:
        record_full_data(args, source, model_b, students, results_b, left_out)

    print("\n== timings (seconds; this machine, shared cores) ==")
    print(f"tagger load {load_seconds:.1f}; fit A {fit_a:.1f} ({len(references)} references, tagging included); "
          f"rank one student under A (its 403 outputs tagged first) mean {np.mean(rank_a):.2f}, max {max(rank_a):.2f}")
    print(f"fit B {fit_b:.1f} ({len(references) + len(audit)} references; audit outputs already tagged); "
          f"rank one student under B (tags cached) mean {np.mean(rank_b):.2f}")
    print(f"subsamples {sub_seconds:.1f}; leave-one-teacher-out {loto_seconds:.1f}")


if __name__ == "__main__":
    main()
