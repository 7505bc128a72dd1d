"""Cost per student of ``rank --group-by student``: N one-output students against one student of N outputs.

Fits a model on ``data/demo/teachers.jsonl`` once (``fit -o``), writes two student files of N records taken
in turn from the demo students' outputs: ``many.jsonl`` names a different student on each record,
``one.jsonl`` the same student on all. Each is ranked by the CLI in a fresh interpreter, ``rank --group-by
student --format json``, and the wall time and peak memory (RSS) of that process are printed; the
difference between the two, divided by N, is what one more student costs.

    python benchmarks/bench_group_by.py                  # N = 2000
    python benchmarks/bench_group_by.py --students 10000 --features pos-paper

Issue 20, item 15 measured 10,000 one-output students at 210 s and 1.69 GB (one student of the same file:
10.6 s, 488 MB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"


def _run(args: list[str]) -> tuple[float, float, str]:
    """Run the CLI in a fresh interpreter; returns (seconds, peak RSS in MB of that process, stdout)."""
    start = time.perf_counter()
    code = ("import resource, sys; from attribution.cli import main; code = main(sys.argv[1:]); "
            "sys.stderr.write(f'\\nPEAK {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n'); sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(args)}\n{proc.stderr[-3000:]}")
    peak_kb = int(proc.stderr.rsplit("PEAK ", 1)[1].split()[0])
    return seconds, peak_kb / 1024, proc.stdout


def _student_outputs() -> list[str]:
    outputs = []
    for path in sorted(DEMO.glob("student_*.jsonl")):
        with path.open(encoding="utf-8") as handle:
            outputs += [json.loads(line)["output"] for line in handle if line.strip()]
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--students", type=int, default=2000, help="N: one-output students (default 2000)")
    parser.add_argument("--features", default="combined", help="feature set of the model (default combined)")
    args = parser.parse_args()
    outputs = _student_outputs()
    print(f"load average before: {os.getloadavg()[0]:.2f}; N = {args.students}; features {args.features}")
    with tempfile.TemporaryDirectory(prefix="bench-group-by-") as tmp:
        model = Path(tmp) / "model.npz"
        _run(["fit", str(DEMO / "teachers.jsonl"), "-o", str(model), "--features", args.features, "-q"])
        files = {}
        for name, student in (("many", lambda i: f"student-{i:06d}"), ("one", lambda i: "student")):
            files[name] = Path(tmp) / f"{name}.jsonl"
            with files[name].open("w", encoding="utf-8") as handle:
                for i in range(args.students):
                    handle.write(json.dumps({"id": f"o{i}", "student": student(i),
                                             "output": outputs[i % len(outputs)]}) + "\n")
        figures = {}
        for name, path in files.items():
            seconds, peak, stdout = _run(["rank", str(path), "-m", str(model), "--group-by", "student", "-f", "json",
                                          "-q"])
            n = len(json.loads(stdout)["students"])
            figures[name] = (seconds, peak)
            print(f"{name:>4}: {n:>6} student(s), {seconds:7.1f} s, peak RSS {peak:7.0f} MB")
    (t_many, m_many), (t_one, m_one) = figures["many"], figures["one"]
    print(f"per extra student: {1000 * (t_many - t_one) / args.students:.2f} ms, "
          f"{1024 * (m_many - m_one) / args.students:.1f} kB")
    print(f"load average after: {os.getloadavg()[0]:.2f}; this process peak "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
