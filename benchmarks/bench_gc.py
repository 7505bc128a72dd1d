"""Full garbage collections during fit + rank, with and without ``gc.freeze()`` after the tagger loads.

The library froze the ~300k objects of spaCy, thinc and torch when a tagger loaded, so that full
(generation-2) collections would not re-scan them. This counts the full collections and their time
after the load, each setting in a fresh process (``gc.callbacks``):

    python benchmarks/bench_gc.py                     # ../shared/data/alpacaeval, else data/demo
    python benchmarks/bench_gc.py --data-dir DIR --features pos-paper

DIR holds reference files and student files, found as by the other benchmarks (``_inputs.py``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIRS = (ROOT.parent / "shared" / "data" / "alpacaeval", ROOT / "data" / "demo")


def _measure(data_dir: str, features: str, freeze: bool) -> dict:
    import gc
    import time

    from _inputs import records, reference_and_student_files

    from attribution.api import fit_reference, rank_student
    from attribution.tagging import get_tagger

    ref_files, student_files = reference_and_student_files(Path(data_dir))
    refs = list(records(ref_files, require_teacher=True))
    studs = list(records(student_files))
    get_tagger()
    if freeze:
        gc.freeze()
    stats = {"collections": 0, "seconds": 0.0, "frozen": gc.get_freeze_count()}
    started: list[float] = []

    def count(phase: str, info: dict) -> None:
        if info["generation"] == 2:
            if phase == "start":
                started.append(time.perf_counter())
            else:
                stats["collections"] += 1
                stats["seconds"] += time.perf_counter() - started.pop()

    gc.callbacks.append(count)
    start = time.perf_counter()
    rank_student(fit_reference(refs, features=features), studs)
    stats["fit_rank_seconds"] = time.perf_counter() - start
    stats.update(references=len(refs), students=len(studs))
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=next((str(d) for d in DEFAULT_DIRS if d.is_dir()), None))
    parser.add_argument("--features", default="combined")
    parser.add_argument("--child", choices=["freeze", "no-freeze"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.data_dir, args.features, args.child == "freeze")))
        return
    for mode in ("no-freeze", "freeze"):
        out = subprocess.run([sys.executable, __file__, "--data-dir", args.data_dir, "--features", args.features,
                              "--child", mode], capture_output=True, text=True, check=True).stdout
        s = json.loads(out.splitlines()[-1])
        print(f"{mode:>9}: {s['references']} references, {s['students']} students ({args.features}): fit + rank "
              f"{s['fit_rank_seconds']:.1f} s, {s['collections']} full collections ({s['seconds']:.2f} s); "
              f"{s['frozen']} objects frozen")


if __name__ == "__main__":
    main()
