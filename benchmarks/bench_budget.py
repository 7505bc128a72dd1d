"""Verdicts from few outputs: how often documented students are named right / wrong / not at all, and how often
controls are named, at 10, 25, 50, 100, 200 and 400 outputs, per way of choosing the prompts (an *arm*).

Two data sets (setting B: the model is fitted on the references plus every candidate's answers to the students'
prompts, so the paired test runs; the tool never sees a student's label):

- ``alpacaeval`` (default): the 5-candidate AlpacaEval data (``../shared/data/alpacaeval``, loaded as
  ``bench_calibration.py`` and ``bench_probes.py`` load it); a verdict is right when it names the documented
  teacher;
- ``bank``: the 26-candidate bank (``../shared/data/alpacaeval_bank``, 14 families, loaded as ``bench_bank.py``
  does; ``--model`` reuses a fitted model, else it is fitted); a verdict is right when it names the documented
  teacher's family.

The 9 documented students and the 2 human-data controls (Guanaco 7B, 33B: ``teacher`` = none) each give
``--draws`` simulated audits per size and arm, each a seeded random subset of the student's outputs ranked with
the default rule (``--verdict-test either``, alpha 0.05). Each student's outputs are tagged and scored once; a
subset's verdict is then the library's own (:class:`attribution.api.StudentRun`, the path of ``rank --group-by``).

Arms (``ARMS``; add one there):

- ``random``: ``n`` outputs on random prompts;
- ``probes``: ``n`` outputs drawn from the student's ``2 n`` prompts ranked best by
  :func:`attribution.probes.rank_probes` (from the candidates' answers alone), so that draws vary; only where
  the student answered ``2 n`` or more ranked prompts.

Prints, per data set, arm and size, the counts with Clopper-Pearson 95% intervals, and writes them (counts, not
only rates, with the commit, date, command and settings) into the artifact ``attribution/data/error_rates.json``
(``--artifact``) that reports read (:mod:`attribution.report.error_rates`).

    nice -n 10 python benchmarks/bench_budget.py                              # 5 candidates, 50 draws
    nice -n 10 python benchmarks/bench_budget.py --data bank --model bank.npz --draws 10
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _inputs import alpacaeval_records, provenance, record_artifact  # noqa: E402

from attribution.api import ALPHA, StudentRun  # noqa: E402
from attribution.multitask import as_multitask  # noqa: E402
from attribution.probes import rank_probes  # noqa: E402
from attribution.report import error_rates  # noqa: E402

SIZES = (10, 25, 50, 100, 200, 400)
RULE = "either"
SHARED = ROOT.parent / "shared" / "data"


@dataclasses.dataclass
class Student:
    """One student's outputs, tagged, featurized and scored once; :meth:`verdict` ranks any subset of them."""

    name: str
    truth: str | None  # documented teacher (or family, at family level); None for a control
    model: Any
    key: str | None
    records: list
    docs: list
    X: Any
    proba: np.ndarray

    @classmethod
    def score(cls, model: Any, name: str, truth: str | None, records: list) -> Student:
        model = as_multitask(model)
        key = model.task_of(records[0])
        sub = model.models_[key]
        docs = sub.prepare([r.output for r in records])
        X = sub.featurize(docs)
        return cls(name, truth, model, key, records, docs, X, sub.classifier_.predict_proba(X))

    def verdict(self, rows: np.ndarray) -> dict[str, Any]:
        """The verdict of the outputs at ``rows`` (in that order), as ``rank`` gives it."""
        run = StudentRun(self.model, warn_pooled=False)
        rows = np.asarray(rows)
        run.take(self.key, [self.records[i] for i in rows], [self.docs[i] for i in rows], self.X[rows],
                 self.proba[rows])
        return run.finish(top_templates=0, alpha=ALPHA, tests=RULE)["verdict"]


@dataclasses.dataclass
class Context:
    """What every arm may use: the model, its probe order (prompt ids, best first) and the run's settings."""

    model: Any
    probe_order: list[str]
    draws: int
    seed: int


#: An arm: (context, student, size, rng) -> the verdicts of its simulated audits (empty: not measured there).
Arm = Callable[[Context, Student, int, np.random.Generator], list[dict[str, Any]]]


def random_arm(ctx: Context, student: Student, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    total = len(student.records)
    if n > total:
        return []
    # every subset of all the outputs is the same audit: one draw
    return [student.verdict(np.sort(rng.choice(total, size=n, replace=False)))
            for _ in range(ctx.draws if n < total else 1)]


def probes_arm(ctx: Context, student: Student, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    row_of = {r.id: i for i, r in enumerate(student.records)}
    pool = [row_of[i] for i in ctx.probe_order if i in row_of][:2 * n]
    if len(pool) < 2 * n:
        return []
    return [student.verdict(np.sort(rng.choice(pool, size=n, replace=False))) for _ in range(ctx.draws)]


ARMS: dict[str, Arm] = {"random": random_arm, "probes": probes_arm}


def outcome(verdict: dict[str, Any], truth: str | None, level: str) -> str:
    """'right' / 'wrong' / 'none' for a documented student; 'named' / 'none' for a control."""
    if verdict["status"] != "attributed":
        return "none"
    if truth is None:
        return "named"
    named = verdict.get("family") if level == "family" else verdict.get("teacher")
    return "right" if named == truth else "wrong"


def rng_for(seed: int, student: str, n: int, arm: str) -> np.random.Generator:
    """Independent, reproducible draws per student, size and arm (adding an arm changes no other arm's draws)."""
    return np.random.default_rng([seed, zlib.crc32(student.encode()), n, zlib.crc32(arm.encode())])


def alpacaeval_students(model: Any, data_dir: Path) -> Iterator[Student]:
    _, _, students = alpacaeval_records(data_dir)
    for name in sorted({r.student for r in students if r.student}):
        rows = [dataclasses.replace(r, teacher=None) for r in students if r.student == name]
        truth = next(r.teacher for r in students if r.student == name)
        yield Student.score(model, name, None if truth == "none" else truth, rows)


def bank_students(model: Any) -> Iterator[Student]:
    from bench_bank import STUDENTS, family_table

    from attribution.io import read_records

    families = family_table()
    students = read_records(STUDENTS)
    for name in sorted({r.student for r in students if r.student}):
        truth = next(r.teacher for r in students if r.student == name)
        rows = [dataclasses.replace(r, teacher=None) for r in students if r.student == name]
        yield Student.score(model, name, None if truth == "none" else families[truth], rows)


def load_model(args: argparse.Namespace) -> tuple[Any, str]:
    """The model and, for the artifact, how it was made."""
    if args.model is not None:
        from attribution.persistence import load_model as load

        return load(args.model), f"loaded from {args.model.name}"
    if args.data == "bank":
        from bench_bank import BANK, fit_bank

        model, _, n = fit_bank([BANK / "teachers_reference.jsonl", BANK / "teachers_audit.jsonl"])
        return model, f"fitted on {n} outputs"
    from attribution.api import fit_reference

    reference, teacher_audit, _ = alpacaeval_records(args.data_dir or SHARED / "alpacaeval")
    return fit_reference(reference + teacher_audit), f"fitted on {len(reference) + len(teacher_audit)} outputs"


def tally(ctx: Context, students: Iterator[Student], arms: list[str], sizes: tuple[int, ...], level: str,
          start: float) -> dict[str, dict[int, dict[str, Counter]]]:
    """arm -> size -> {'documented': Counter(right/wrong/none), 'controls': Counter(named/none)}."""
    counts: dict[str, dict[int, dict[str, Counter]]] = {
        arm: {n: {"documented": Counter(), "controls": Counter()} for n in sizes} for arm in arms}
    for student in students:
        group = "documented" if student.truth is not None else "controls"
        for arm in arms:
            for n in sizes:
                for verdict in ARMS[arm](ctx, student, n, rng_for(ctx.seed, student.name, n, arm)):
                    counts[arm][n][group][outcome(verdict, student.truth, level)] += 1
        print(f"  {student.name} done ({time.perf_counter() - start:.0f} s)", flush=True)
    return counts


def show(counts: dict[str, dict[int, dict[str, Counter]]]) -> None:
    def rate(k: int, total: int) -> str:
        low, high = error_rates.clopper_pearson(k, total)
        return f"{k:3d}/{total:<4d} {k / total:.2f} [{low:.2f}, {high:.2f}]"

    print("\narm     size  documented named right / wrong / none (k/n share [95% CI])"
          "                       controls named")
    for arm, by_size in counts.items():
        for n, groups in by_size.items():
            doc, ctl = groups["documented"], groups["controls"]
            total, controls = sum(doc.values()), sum(ctl.values())
            if not total:
                print(f"{arm:<7} {n:4d}  not measured")
                continue
            print(f"{arm:<7} {n:4d}  right {rate(doc['right'], total)}  wrong {rate(doc['wrong'], total)}  "
                  f"none {rate(doc['none'], total)}   controls "
                  + (rate(ctl["named"], controls) if controls else "n/a"))


def entry(args: argparse.Namespace, ctx: Context, counts: dict[str, dict[int, dict[str, Counter]]],
          level: str, model_note: str, source: dict[str, Any]) -> dict[str, Any]:
    sub = next(iter(as_multitask(ctx.model).models_.values()))
    families = sorted(set(sub.hierarchy().family_of.values()))
    arms: dict[str, Any] = {}
    for arm, by_size in counts.items():
        arms[arm] = {}
        for n, groups in by_size.items():
            doc, ctl = groups["documented"], groups["controls"]
            if sum(doc.values()):
                arms[arm][str(n)] = {
                    "documented": {"right": doc["right"], "wrong": doc["wrong"], "none": doc["none"],
                                   "n": sum(doc.values())},
                    "controls": {"named": ctl["named"], "n": sum(ctl.values())}}
    data = "26-candidate AlpacaEval bank" if args.data == "bank" else "5-candidate AlpacaEval data"
    return {"benchmark": "bench_budget", **source,
            "settings": {"data": data, "setting": "B", "candidates": len(sub.classes_), "families": len(families),
                         "level": level, "rule": RULE, "alpha": ALPHA,
                         "features": error_rates.signature_fields(sub.signature_).get("features"),
                         "signature": sub.signature_, "draws": args.draws, "seed": args.seed,
                         "model": model_note},
            "arms": arms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("alpacaeval", "bank"), default="alpacaeval")
    parser.add_argument("--data-dir", type=Path, help="the 5-candidate folder (default ../shared/data/alpacaeval)")
    parser.add_argument("--model", type=Path, help="reuse a model fitted by 'attribute-teacher fit' on the data")
    parser.add_argument("--draws", type=int, default=50, help="simulated audits per student, size and arm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated output counts")
    parser.add_argument("--artifact", type=Path, default=error_rates.ARTIFACT,
                        help="the error-rate artifact to update (default: the package's)")
    parser.add_argument("--no-artifact", action="store_true", help="print only")
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or args.draws < 1:
        parser.error(f"unknown arm(s) {', '.join(unknown)}" if unknown else "--draws must be 1 or more")
    sizes = tuple(int(s) for s in args.sizes.split(","))
    source = provenance(ROOT, sys.argv)  # the code that runs: taken before anything else changes the tree
    start = time.perf_counter()
    model, model_note = load_model(args)
    level = "family" if args.data == "bank" else "teacher"
    print(f"model {model_note} ({time.perf_counter() - start:.0f} s)", flush=True)
    probes = rank_probes(model)
    ctx = Context(model, probes["id"].tolist(), args.draws, args.seed)
    students = (bank_students(model) if args.data == "bank"
                else alpacaeval_students(model, args.data_dir or SHARED / "alpacaeval"))
    counts = tally(ctx, students, arms, sizes, level, start)
    show(counts)
    if not args.no_artifact:
        key = f"budget/{args.data}"
        record_artifact(args.artifact, key, entry(args, ctx, counts, level, model_note, source))
        print(f"\nwrote '{key}' into {args.artifact}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
