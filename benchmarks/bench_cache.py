"""The tag cache and ``fit --add`` on a candidate bank: first fit, second fit, adding one candidate, memory.

Side by side, in one run, each step a fresh ``attribute-teacher fit`` process (wall time, CPU time and peak
memory of that process) on one tag cache folder of its own:

1. **first fit**: the union of the references (the bank without one candidate, then that candidate's
   outputs), cache empty: every text is tagged. This is also the *full refit* that ``--add`` is compared with;
2. **second fit**: the same, cache warm: nothing is tagged (the model bytes must be those of 1);
3. the candidate's tagged texts and every cached regression are deleted from the cache (so that ``--add`` has
   to tag them and fit the regressions, as for a new candidate), and the bank without it is fitted (tags
   cached): the model to add to;
4. **fit --add** of that candidate (``fit --add NEW -m BASE -r BASE_FILE``): tags only its outputs and refits
   on the union (the model bytes must be those of 1);
5. with ``--no-cache-fit``, the union once more with ``--no-cache`` (the bytes must be those of 1).

    nice -n 10 python benchmarks/bench_cache.py                   # the 26-candidate bank (../shared)
    python benchmarks/bench_cache.py --references ../shared/data/alpacaeval/teachers_reference.jsonl

The commit, the load average before and after, and where each step's time goes (tagging; n-gram counting
and featurizing; the logistic regressions) are printed too. A 2-core machine shared with other work moves
wall times by tens of percent; CPU times move less.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BANK = ROOT.parent / "shared" / "data" / "alpacaeval_bank"
DEFAULT_REFERENCES = [BANK / "teachers_reference.jsonl", BANK / "teachers_audit.jsonl"]


def _child(out: Path, argv: list[str]) -> None:
    """Run one CLI command in this process and write its wall time, CPU time and peak memory to ``out``,
    with the time spent in the phases (tagging, features, regressions) measured by wrapping them."""
    from attribution import estimator, tagging
    from attribution.cli import main

    phases = {"tagging": 0.0, "features": 0.0, "regressions": 0.0}

    def timed(owner: object, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                phases[phase] += time.perf_counter() - start

        setattr(owner, name, wrapper)

    timed(tagging.Tagger, "tag", "tagging")
    timed(estimator.TeacherAttributor, "fit_docs", "features")  # minus the regressions, below
    timed(estimator.TeacherAttributor, "fit_features", "regressions")
    start, cpu = time.perf_counter(), time.process_time()
    code = main(argv)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    phases["features"] -= phases["regressions"]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out.write_text(json.dumps({"code": code, "wall": wall, "cpu": cpu, "peak_mb": usage.ru_maxrss / 1024,
                               "phases": phases}))


def _run(step: str, argv: list[str], env: dict[str, str], work: Path) -> dict:
    out = work / f"{step}.json"
    proc = subprocess.run([sys.executable, __file__, "--child", str(out), "--", *argv], env=env, cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0 or not out.is_file():
        sys.exit(f"{step} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(out.read_text())
    if result["code"] != 0:
        sys.exit(f"{step}: exit {result['code']}:\n{proc.stderr[-3000:]}")
    return result


def _split(references: list[Path], teacher: str | None, work: Path) -> tuple[Path, Path, str, int]:
    """The references without one candidate (``base.jsonl``, file order kept) and that candidate's outputs
    (``new.jsonl``); by default the last candidate in sorted order with the most outputs."""
    rows = [line for path in references for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    teachers = [json.loads(line).get("teacher") for line in rows]
    if teacher is None:
        counts = {t: teachers.count(t) for t in set(teachers)}
        teacher = max(sorted(counts), key=lambda t: counts[t])
    base, new = work / "base.jsonl", work / "new.jsonl"
    base.write_text("".join(line + "\n" for line, t in zip(rows, teachers) if t != teacher), encoding="utf-8")
    new.write_text("".join(line + "\n" for line, t in zip(rows, teachers) if t == teacher), encoding="utf-8")
    return base, new, teacher, teachers.count(teacher)


def _forget(path: Path, env: dict[str, str], features_tagger: str = "spacy") -> tuple[int, int]:
    """Delete the cache entries of ``path``'s outputs (normalized, as fit tags them) and every cached regression
    (the first fits stored the union's, which ``--add`` would read back); returns how many of each."""
    code = ("import sys\nfrom attribution import tagcache\nfrom attribution.io import read_records\n"
            "from attribution.normalize import normalize_texts\nfrom attribution.tagging import get_tagger\n"
            "texts = normalize_texts([r.output for r in read_records(sys.argv[1])])\n"
            f"keys = get_tagger({features_tagger!r}).cache_keys(texts)\n"
            "store = tagcache.current()\nbefore = store.stats()['kinds']\nstore.delete(keys)\n"
            "store.delete(store.keys('fit'))\n"
            "after = store.stats()['kinds']\n"
            "print(before.get('tags', 0) - after.get('tags', 0), before.get('fit', 0) - after.get('fit', 0))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(path)], env=env, cwd=ROOT, capture_output=True, text=True,
                          check=True)
    tags, fits = proc.stdout.split()
    return int(tags), int(fits)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--references", type=Path, nargs="+", default=DEFAULT_REFERENCES)
    parser.add_argument("--add-teacher", default=None, help="The candidate added by --add (default: one with the "
                        "most outputs).")
    parser.add_argument("--features", default="combined")
    parser.add_argument("--no-cache-fit", action="store_true", help="Also fit once with --no-cache.")
    parser.add_argument("--work", type=Path, default=None, help="Folder for the files (default: a temporary one).")
    args = parser.parse_args()
    for path in args.references:
        if not path.is_file():
            sys.exit(f"{path}: not found")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_cache_"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ATTRIBUTION_CACHE_DIR": str(work / "cache"), "PYTHONPATH": str(ROOT)}
    env.pop("ATTRIBUTION_NO_CACHE", None)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    print(f"commit {commit.strip() or '?'}; load average {os.getloadavg()}; work folder {work}", flush=True)
    base, new, teacher, n_new = _split(args.references, args.add_teacher, work)
    n_all = sum(1 for _ in base.open(encoding="utf-8")) + n_new
    print(f"{n_all} reference outputs; added candidate: {teacher} ({n_new} outputs)", flush=True)
    fit = ["fit", "--features", args.features, "-q"]
    steps: dict[str, dict] = {}
    steps["first fit (cache empty)"] = _run("first", [*fit, str(base), str(new), "-o", str(work / "first.npz")],
                                            env, work)
    steps["second fit (cache warm)"] = _run("second", [*fit, str(base), str(new), "-o", str(work / "second.npz")],
                                            env, work)
    forgotten = _forget(new, env)
    steps["fit without the candidate (warm)"] = _run("base", [*fit, str(base), "-o", str(work / "base.npz")], env,
                                                     work)
    steps["fit --add the candidate"] = _run("add", ["fit", "-q", "--add", str(new), "-m", str(work / "base.npz"),
                                                    "-r", str(base), "-o", str(work / "added.npz")], env, work)
    if args.no_cache_fit:
        steps["fit --no-cache"] = _run("nocache", [*fit, "--no-cache", str(base), str(new), "-o",
                                                   str(work / "nocache.npz")], env, work)
    first = steps["first fit (cache empty)"]
    print(f"\n{'step':34} {'wall s':>8} {'cpu s':>8} {'cpu/first':>9} {'peak MB':>8}   tagging / features / "
          "regressions (wall s)")
    for name, step in steps.items():
        p = step["phases"]
        print(f"{name:34} {step['wall']:8.1f} {step['cpu']:8.1f} {step['cpu'] / first['cpu']:9.1%} "
              f"{step['peak_mb']:8.0f}   {p['tagging']:.1f} / {p['features']:.1f} / {p['regressions']:.1f}")
    digest = _digest(work / "first.npz")
    same = {"second fit": _digest(work / "second.npz") == digest, "fit --add": _digest(work / "added.npz") == digest}
    if args.no_cache_fit:
        same["fit --no-cache"] = _digest(work / "nocache.npz") == digest
    print(f"\ndeleted from the cache before --add: the candidate's {forgotten[0]} tagged texts and {forgotten[1]} "
          "regressions (so --add tags the candidate and fits every regression, as for a new one)")
    checks = ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in same.items())
    print(f"model bytes identical to the first fit: {checks}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        sys.path.insert(0, str(ROOT))
        _child(Path(sys.argv[2]), sys.argv[sys.argv.index("--") + 1:])
    else:
        main()
