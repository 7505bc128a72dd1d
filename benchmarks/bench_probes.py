"""Which prompts to ask: verdicts from 25 and 50 outputs on random prompts vs ``probes``-selected ones.

On the 5-candidate AlpacaEval data (setting B: fitted on the references plus every candidate's answers to
the students' prompts), the prompts are ranked with :func:`attribution.probes.rank_probes` from the model
alone (no student output enters the ranking). For each student, ``--draws`` simulated audits per size and
arm, each ranked with :func:`attribution.api.rank_student` (the ``teacher`` labels are hidden from it):

- random: ``n`` of the student's outputs on random prompts;
- probes: ``n`` of its outputs drawn from the top ``2 n`` probe prompts (25 of the top 50, 50 of the top
  100), so that the draws vary. The model's paired prompts are those of the references and of the students'
  prompt set; the simulation has the students' outputs on the latter only, so the probes are ranked among
  those (the prompt set is the same for every student: no student output enters the choice);
- bottom: the same from the ``2 n`` lowest-ranked prompts (a check that the score orders prompts).

Prints, per size and arm, how often the 9 documented students are named right / wrong / not at all, and
how often the human-data controls (``teacher`` = none) are attributed at all.

    nice -n 10 python benchmarks/bench_probes.py [--data-dir ../shared/data/alpacaeval] [--draws 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import Counter
from pathlib import Path

import numpy as np
from _inputs import alpacaeval_records

from attribution.api import fit_reference, rank_student
from attribution.probes import rank_probes

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpacaeval"
SIZES = (25, 50)


def outcome(verdict: dict, truth: str) -> str:
    if verdict["status"] != "attributed":
        return "none"
    return "right" if verdict["teacher"] == truth else "wrong"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--draws", type=int, default=20, help="simulated audits per student, size and arm")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    reference, teacher_audit, students = alpacaeval_records(args.data_dir)
    start = time.perf_counter()
    model = fit_reference(reference + teacher_audit)
    print(f"fitted setting B on {len(reference) + len(teacher_audit)} outputs in {time.perf_counter() - start:.0f} s")
    probes = rank_probes(model)
    order = probes["id"].tolist()
    print(f"ranked {len(order)} paired prompts; score: top 10 mean {probes['score'][:10].mean():.3f}, "
          f"median {probes['score'].median():.3f}, bottom 10 mean {probes['score'][-10:].mean():.3f}")
    rng = np.random.default_rng(args.seed)
    counts: dict[tuple[str, int, str], Counter] = {}
    for name in sorted({r.student for r in students if r.student}):
        rows = [dataclasses.replace(r, teacher=None) for r in students if r.student == name]
        truth = next(r.teacher for r in students if r.student == name)
        kind = "control" if truth == "none" else "documented"
        by_id = {r.id: r for r in rows}
        for n in SIZES:
            ranked = [by_id[i] for i in order if i in by_id]
            for arm, pool in (("random", rows), ("probes", ranked[:2 * n]), ("bottom", ranked[-2 * n:])):
                tally = counts.setdefault((kind, n, arm), Counter())
                for _ in range(args.draws):
                    pick = rng.choice(len(pool), size=n, replace=False)
                    result = rank_student(model, [pool[i] for i in sorted(pick)])
                    tally[outcome(result["verdict"], truth) if kind == "documented"
                          else result["verdict"]["status"]] += 1
        print(f"  {name} done ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"\nverdicts per size and arm ({args.draws} draws per student): documented students right / wrong / "
          "none; controls attributed")
    for n in SIZES:
        for arm in ("random", "probes", "bottom"):
            doc, ctl = counts[("documented", n, arm)], counts.get(("control", n, arm), Counter())
            total = sum(doc.values())
            print(f"  n={n:3d} {arm:<7}: right {doc['right'] / total:.3f}  wrong {doc['wrong'] / total:.3f}  "
                  f"none {doc['none'] / total:.3f}  ({total} audits)   controls attributed "
                  f"{ctl['attributed']}/{sum(ctl.values())}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
