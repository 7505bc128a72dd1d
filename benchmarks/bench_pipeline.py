"""Throughput and memory of tagging alone vs. the whole fit + rank pipeline.

Prints tokens/s for spaCy tagging alone and for fit+rank on the same texts, the ratio
between them, and the peak memory of ranking 1x and 4x the student outputs (each
measurement in a fresh subprocess, so caches and allocations don't leak between them).

    python benchmarks/bench_pipeline.py                      # ../shared/data/paper_qa, else data/demo
    python benchmarks/bench_pipeline.py --data-dir DIR --tagger nltk

DIR holds ``*teacher*.jsonl`` reference files (only ``teachers.jsonl`` when there is one) and
``*student*.jsonl`` files.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _inputs import records, reference_and_student_files  # noqa: E402

DEFAULT_DIRS = (ROOT.parent / "shared" / "data" / "paper_qa", ROOT / "data" / "demo")


def child(mode: str, data_dir: Path, tagger: str, student_file: Path | None) -> dict:
    """One measurement, run inside a fresh interpreter."""
    from attribution.api import fit_reference, rank_student
    from attribution.normalize import Normalizer
    from attribution.tagging import get_tagger

    refs, studs = reference_and_student_files(data_dir)
    start = time.perf_counter()
    tag = get_tagger(tagger)
    load_s = time.perf_counter() - start
    if mode == "tag":
        normalizer = Normalizer()
        students = [student_file] if student_file else studs
        texts = [normalizer(r.output) for r in records(refs + students)]
        start = time.perf_counter()
        docs = tag.tag(texts, cache=False)
        seconds = time.perf_counter() - start
        n_tokens = sum(len(d) for d in docs)
        out = {"texts": len(texts), "tokens": n_tokens, "seconds": seconds}
    else:
        start = time.perf_counter()
        model = fit_reference(records(refs, require_teacher=True), tagger=tagger)
        fit_s = time.perf_counter() - start
        students = [student_file] if student_file else studs
        result = rank_student(model, records(students))
        seconds = time.perf_counter() - start
        out = {"seconds": seconds, "fit_seconds": fit_s, "n_outputs": result["n_outputs"],
               "top": result["ranking"][0]["teacher"]}
    out["load_seconds"] = load_s
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_child(*args: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(data_dir: Path, tagger: str, students: Path, repeat: int) -> tuple[dict, dict]:
    """Tagging alone and fit + rank, alternating run by run so that both see the same load on
    the machine; the fastest run of each counts (the ``timeit`` convention)."""
    tags, pipes = [], []
    for _ in range(repeat):
        tags.append(run_child("tag", str(data_dir), tagger, str(students)))
        pipes.append(run_child("pipeline", str(data_dir), tagger, str(students)))
    pipe = min(pipes, key=lambda run: run["seconds"])
    pipe["peak_rss_mb"] = max(run["peak_rss_mb"] for run in pipes)
    return min(tags, key=lambda run: run["seconds"]), pipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--tagger", default="spacy")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the fastest counts")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        mode, data_dir, tagger, student = args.child
        print(json.dumps(child(mode, Path(data_dir), tagger, Path(student) if student != "-" else None)))
        return
    data_dir = args.data_dir or next((d for d in DEFAULT_DIRS if d.is_dir()), None)
    if data_dir is None:
        sys.exit("no data: pass --data-dir")
    refs, studs = reference_and_student_files(data_dir)
    print(f"data: {data_dir} ({', '.join(p.name for p in refs + studs)}); tagger: {args.tagger}; "
          f"fastest of {args.repeat} alternating runs")
    with tempfile.TemporaryDirectory() as tmp:
        lines = [line for path in studs for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        for scale in (1, 4):
            path = Path(tmp) / f"students_x{scale}.jsonl"
            path.write_text("\n".join(lines * scale) + "\n", encoding="utf-8")
            tag, pipe = measure(data_dir, args.tagger, path, args.repeat)
            tag_rate = tag["tokens"] / tag["seconds"]
            pipe_rate = tag["tokens"] / pipe["seconds"]
            print(f"students {scale}x ({pipe['n_outputs']} outputs ranked; {tag['texts']} texts, "
                  f"{tag['tokens']} tokens with the references):")
            print(f"  tagging alone {tag['seconds']:.2f}s = {tag_rate:,.0f} tokens/s "
                  f"(model load {tag['load_seconds']:.1f}s)")
            print(f"  fit + rank    {pipe['seconds']:.2f}s (fit {pipe['fit_seconds']:.2f}s) = {pipe_rate:,.0f} "
                  f"tokens/s = {pipe_rate / tag_rate:.0%} of tagging alone; peak memory {pipe['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
