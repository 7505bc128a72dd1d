"""Throughput of tagging, fit and rank with Dask workers (``attribution.parallel``) against one process.

Each configuration runs in a fresh interpreter: ``single`` (one process, as today), ``pinned`` (one
process, BLAS pinned to one thread: what one Dask worker is), and ``workers=N`` (a local Dask cluster
of N single-threaded worker processes started by ``dask_tagging(n_workers=N)``). Each reports the
start-up cost (tagger load; for a cluster also starting the workers and loading the tagger on each),
then tokens/s of tagging alone, of ``fit_reference`` and of ``rank_student``, the peak memory (RSS) of
the client and of each worker, and a digest of the saved model and the rank JSON, which must be the
same in every configuration.

    python benchmarks/bench_scale.py                       # data/demo, workers 1 and 2, students x4
    python benchmarks/bench_scale.py --data-dir ../shared/data/paper_qa --workers 1,2,3 --repeat 8

``--outputs N`` measures the partitioned ranking instead (:func:`attribution.parallel.rank.rank_file`:
workers read byte ranges of the file, tag, featurize and score them, the client adds sums): a JSON Lines
file of N outputs (the students' real outputs repeated, ids kept) is ranked with a model fitted on the
references, by each ``--workers`` count, and, with ``--single-up-to M`` (default 20,000) when N <= M, by
``rank_student`` in one process; it prints wall time, outputs/s, peak memory of the client and of each
worker, and the digest of the rank JSON (the same in every configuration)::

    python benchmarks/bench_scale.py --outputs 1000000 --workers 2

``--fit-references FILE`` times the command ``fit FILE`` (tag cache off) in one process and with ``--workers N``
for each ``--workers`` count, each in a fresh interpreter, with the workers' steps broken out: starting the
local cluster, each range's time on its worker (its tagger load apart), the first pass (read and tag), the
n-gram counts, the vocabulary (client), sending it (scatter), the matrix rows, the regressions (client), and
what is left (closing the cluster, saving); it checks that the model bytes are the same::

    python benchmarks/bench_scale.py --fit-references ../shared/data/alpacaeval/teachers_reference.jsonl --workers 2

The machine's load average is printed before and after: on a shared machine the figures move with
what else runs, and N workers cannot go faster than the N cores that are actually free.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _inputs import records, reference_and_student_files  # noqa: E402


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pin() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _warm() -> float:
    """On a worker: load the tagger (once per process); returns seconds taken."""
    from attribution.parallel import pin_threads
    from attribution.tagging import get_tagger

    start = time.perf_counter()
    pin_threads()
    get_tagger()
    return time.perf_counter() - start


def child(config: str, data_dir: Path, repeat: int) -> dict:
    """One configuration, in a fresh interpreter."""
    import contextlib

    from attribution.api import fit_reference, rank_student
    from attribution.normalize import Normalizer
    from attribution.outputs import to_json
    from attribution.tagging import _TagCache, get_tagger

    refs_paths, stud_paths = reference_and_student_files(data_dir)
    refs = list(records(refs_paths, require_teacher=True))
    students = list(records(stud_paths)) * repeat
    normalizer = Normalizer()
    texts = [normalizer(r.output) for r in refs + students]
    out: dict = {"config": config}
    start = time.perf_counter()
    if config == "pinned":
        _pin()
    tagger = get_tagger()
    out["load_s"] = time.perf_counter() - start
    context: contextlib.AbstractContextManager = contextlib.nullcontext()
    if config.startswith("workers="):
        from attribution.parallel import dask_tagging

        start = time.perf_counter()
        context = dask_tagging(n_workers=int(config.split("=")[1]))
        backend = context.__enter__()
        out["cluster_start_s"] = time.perf_counter() - start
        start = time.perf_counter()
        backend.client.run(_warm)
        out["workers_load_s"] = time.perf_counter() - start
    try:
        start = time.perf_counter()
        docs = tagger.tag(texts, cache=False)
        out["tag_s"] = time.perf_counter() - start
        out["n_texts"], out["n_tokens"] = len(texts), sum(len(d) for d in docs)
        out["n_fit_tokens"] = sum(len(d) for d in docs[:len(refs)])
        out["n_rank_tokens"] = out["n_tokens"] - out["n_fit_tokens"]
        del docs
        tagger._cache = _TagCache()
        start = time.perf_counter()
        model = fit_reference(refs)
        out["fit_s"] = time.perf_counter() - start
        start = time.perf_counter()
        result = rank_student(model, students)
        out["rank_s"] = time.perf_counter() - start
        with tempfile.TemporaryDirectory() as tmp:
            model.save(Path(tmp) / "m.npz")
            out["model_sha256"] = hashlib.sha256((Path(tmp) / "m.npz").read_bytes()).hexdigest()[:16]
        out["rank_sha256"] = hashlib.sha256(to_json(result).encode()).hexdigest()[:16]
        if config.startswith("workers="):
            peaks = backend.client.run(_peak_mb)
            out["worker_peak_mb"] = sorted(round(v) for v in peaks.values())
    finally:
        if config.startswith("workers="):
            context.__exit__(None, None, None)
    out["client_peak_mb"] = round(_peak_mb())
    return out


def _outputs_file(data_dir: Path, n: int, tmp: Path) -> Path:
    """The students' outputs repeated to ``n`` lines (id, student, output), written once."""
    path = tmp / f"bench_scale_{data_dir.name}_{n}.jsonl"
    if not path.exists():
        rows = [json.dumps({"id": r.id, "student": r.student, "output": r.output}, ensure_ascii=False)
                for r in records(reference_and_student_files(data_dir)[1])]
        with open(path.with_suffix(".tmp"), "w", encoding="utf-8") as handle:
            for i in range(n):
                handle.write(rows[i % len(rows)] + "\n")
        os.replace(path.with_suffix(".tmp"), path)
    return path


def file_child(config: str, model_path: Path, path: Path) -> dict:
    """Rank one file in one configuration (``single`` or ``workers=N``), in a fresh interpreter."""
    from attribution.api import rank_student
    from attribution.io import RecordReader
    from attribution.models import load_model
    from attribution.outputs import to_json

    model = load_model(model_path)
    out: dict = {"config": config}
    if config == "single":
        start = time.perf_counter()
        result = rank_student(model, RecordReader(path))
        out["rank_s"] = time.perf_counter() - start
    else:
        from attribution.parallel import dask_client
        from attribution.parallel.rank import rank_file

        start = time.perf_counter()
        with dask_client(n_workers=int(config.split("=")[1])) as client:
            out["cluster_start_s"] = time.perf_counter() - start
            start = time.perf_counter()
            client.run(_warm)
            out["workers_load_s"] = time.perf_counter() - start
            start = time.perf_counter()
            stats: dict = {}
            result, _ = rank_file(model, path, client=client, stats=stats)
            out["rank_s"] = time.perf_counter() - start
            out.update(stats)
            out["worker_peak_mb"] = sorted(round(v) for v in client.run(_peak_mb).values())
    out["n_outputs"] = result["n_outputs"] + result["n_empty"]
    out["rank_sha256"] = hashlib.sha256(to_json(result).encode()).hexdigest()[:16]
    out["client_peak_mb"] = round(_peak_mb())
    return out


def bench_file(args: argparse.Namespace) -> None:
    """``--outputs N``: the partitioned ranking of one large file."""
    from attribution.api import fit_reference

    tmp = Path(args.tmp)
    path = _outputs_file(args.data_dir, args.outputs, tmp)
    model_path = tmp / f"bench_scale_{args.data_dir.name}.npz"
    if not model_path.exists():
        fit_reference(records(reference_and_student_files(args.data_dir)[0], require_teacher=True)).save(model_path)
    configs = (["single"] if args.outputs <= args.single_up_to else []) + [f"workers={n}" for n in
                                                                            args.workers.split(",")]
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} (1 min) before; {args.outputs:,} outputs "
          f"({path.stat().st_size / 2**20:,.0f} MiB) of {args.data_dir}")
    shas = set()
    for config in configs:
        proc = subprocess.run([sys.executable, __file__, "--file-child", config, "--model", str(model_path),
                               "--file", str(path)], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        shas.add(row["rank_sha256"])
        extra = ""
        if "worker_peak_mb" in row:
            extra = (f"; cluster start {row['cluster_start_s']:.1f}s, tagger load on workers "
                     f"{row['workers_load_s']:.1f}s; worker peaks {row['worker_peak_mb']} MB\n{'':>12}"
                     f"{row['n_ranges']:.0f} ranges: scan {row['scan_s']:.1f}s, score {row['score_s']:.1f}s "
                     f"(of which the client's reduce {row['reduce_s']:.1f}s)")
        rate = row["n_outputs"] / row["rank_s"]
        print(f"{config:>10}: {row['n_outputs']:,} outputs in {row['rank_s']:.1f}s ({rate:,.0f} outputs/s); "
              f"client peak {row['client_peak_mb']} MB{extra}; rank {row['rank_sha256']}; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
    print(f"identical rank JSON: {len(shas) == 1}")
    if len(shas) != 1:
        sys.exit(1)


def fit_child(config: str, path: Path, model_path: Path) -> dict:
    """``attribute-teacher fit PATH`` in this fresh interpreter, one process or ``workers=N``; the workers'
    steps timed through ``fit_file(stats=)`` and the cluster's start through ``tag_on_cluster``."""
    import attribution.cli.rank as rank_module
    import attribution.parallel.fit as partitioned_fit
    from attribution.cli import main as cli

    out: dict = {"config": config}
    stats: dict = {}
    starting, fitting = rank_module.tag_on_cluster, partitioned_fit.fit_file

    def timed_cluster(*args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        try:
            return starting(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            out["cluster_start_s"] = time.perf_counter() - start

    def timed_fit(*args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        try:
            return fitting(*args, stats=stats, **kwargs)  # type: ignore[arg-type]
        finally:
            out["fit_file_s"] = time.perf_counter() - start

    rank_module.tag_on_cluster, partitioned_fit.fit_file = timed_cluster, timed_fit  # type: ignore[assignment]
    extra = [] if config == "single" else ["--workers", config.split("=")[1]]
    start = time.perf_counter()
    code = cli(["fit", str(path), "-o", str(model_path), "--no-cache", "-q", *extra])
    out["total_s"] = time.perf_counter() - start
    times = os.times()
    out["cpu_s"] = times.user + times.system
    out["workers_cpu_s"] = times.children_user + times.children_system
    out["code"] = code
    out["stats"] = stats
    out["model_sha256"] = hashlib.sha256(model_path.read_bytes()).hexdigest()[:16] if code == 0 else None
    return out


def bench_fit(args: argparse.Namespace) -> None:
    """``--fit-references FILE``: the command ``fit FILE``, one process against local workers."""
    configs = ["single", *(f"workers={n}" for n in args.workers.split(","))]
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} (1 min) before; fit {args.fit_references} "
          f"({args.fit_references.stat().st_size / 2**20:.1f} MiB), tag cache off")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in configs:
            proc = subprocess.run([sys.executable, __file__, "--fit-child", config, "--file", str(args.fit_references),
                                   "--model", str(Path(tmp) / f"{config}.npz")], capture_output=True, text=True,
                                  cwd=ROOT)
            if proc.returncode != 0:
                sys.exit(proc.stderr)
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            line = (f"{config:>10}: {row['total_s']:.1f}s wall; CPU {row['cpu_s']:.1f}s in this process"
                    + (f", {row['workers_cpu_s']:.1f}s in the workers" if config != "single" else "")
                    + f"; {row['total_s'] / rows[0]['total_s']:.2f}x one process; model {row['model_sha256']}; "
                    f"load average {os.getloadavg()[0]:.1f}")
            print(line, flush=True)
            stats = row["stats"]
            if stats:
                per_range = ", ".join(f"{r:.1f}" for r in stats["worker_read_s"])
                loads = ", ".join(f"{r:.1f}" for r in stats["worker_load_s"] if r > 0.01)
                busy = sum(stats["worker_read_s"]) / stats["n_threads"]
                steps = sum(stats[name] for name in ("read_s", "count_s", "vocabulary_s", "scatter_s", "matrix_s",
                                                     "fit_s"))
                print(f"{'':>12}cluster start {row['cluster_start_s']:.1f}s; {stats['n_ranges']} ranges, each on its "
                      f"worker {per_range}s (tagger loads {loads}s included)\n"
                      f"{'':>12}read+tag {stats['read_s']:.1f}s (workers busy {busy:.1f}s of it on average: "
                      f"{stats['read_s'] - busy:.1f}s scheduling, transfer, imbalance), "
                      f"counts {stats['count_s']:.1f}s, "
                      f"vocabulary {stats['vocabulary_s']:.1f}s, scatter {stats['scatter_s']:.2f}s, "
                      f"matrix {stats['matrix_s']:.1f}s, regressions {stats['fit_s']:.1f}s; the rest (imports, "
                      f"closing the cluster, saving) {row['total_s'] - row['cluster_start_s'] - steps:.1f}s",
                      flush=True)
    same = len({row["model_sha256"] for row in rows}) == 1
    print(f"identical model bytes: {same}")
    if not same:
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "demo")
    parser.add_argument("--workers", default="1,2", help="comma-separated numbers of local workers")
    parser.add_argument("--repeat", type=int, default=4, help="student outputs repeated this many times")
    parser.add_argument("--outputs", type=int, help="rank one file of this many outputs on workers (see above)")
    parser.add_argument("--single-up-to", type=int, default=20_000, help="with --outputs: also one process up to this")
    parser.add_argument("--tmp", default=tempfile.gettempdir(), help="with --outputs: where the file and model go")
    parser.add_argument("--fit-references", type=Path, help="time the command 'fit FILE' (see above)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--fit-child", help=argparse.SUPPRESS)
    parser.add_argument("--file-child", help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.data_dir, args.repeat)))
        return
    if args.file_child:
        print(json.dumps(file_child(args.file_child, args.model, args.file)))
        return
    if args.fit_child:
        print(json.dumps(fit_child(args.fit_child, args.file, args.model)))
        return
    if args.fit_references:
        bench_fit(args)
        return
    if args.outputs:
        bench_file(args)
        return
    configs = ["single", "pinned", *(f"workers={n}" for n in args.workers.split(","))]
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} (1 min) before; data {args.data_dir}, "
          f"students x{args.repeat}")
    rows = []
    for config in configs:
        proc = subprocess.run([sys.executable, __file__, "--child", config, "--data-dir", str(args.data_dir),
                               "--repeat", str(args.repeat)], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        row = rows[-1]
        start = f"tagger load {row['load_s']:.1f}s"
        if "cluster_start_s" in row:
            start += (f", cluster start {row['cluster_start_s']:.1f}s, "
                      f"tagger load on workers {row['workers_load_s']:.1f}s")
        memory = f"client peak {row['client_peak_mb']} MB"
        if "worker_peak_mb" in row:
            memory += f", worker peaks {row['worker_peak_mb']} MB"
        print(f"{config:>10}: tag {row['n_tokens'] / row['tag_s']:>7,.0f} tok/s ({row['tag_s']:.2f}s)  "
              f"fit {row['n_fit_tokens'] / row['fit_s']:>7,.0f} tok/s ({row['fit_s']:.2f}s)  "
              f"rank {row['n_rank_tokens'] / row['rank_s']:>7,.0f} tok/s ({row['rank_s']:.2f}s)\n"
              f"{'':>12}{start}; {memory}; model {row['model_sha256']} rank {row['rank_sha256']}")
    base = {r["config"]: r for r in rows}
    for row in rows[2:]:
        print(f"{row['config']}: tagging {base['single']['tag_s'] / row['tag_s']:.2f}x single, "
              f"{base['pinned']['tag_s'] / row['tag_s']:.2f}x pinned; fit+rank "
              f"{(base['single']['fit_s'] + base['single']['rank_s']) / (row['fit_s'] + row['rank_s']):.2f}x single")
    same = len({(r["model_sha256"], r["rank_sha256"]) for r in rows}) == 1
    print(f"texts {rows[0]['n_texts']}, tokens {rows[0]['n_tokens']:,}; identical model and rank JSON: {same}; "
          f"load average {os.getloadavg()[0]:.1f} after")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
