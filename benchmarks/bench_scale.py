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

``--cost-model`` (with ``--fit-references`` or ``--outputs``) adds a **cost model**, stated as such: from the run at
the one ``--workers`` count measured (each task's compute time on its worker, from the scheduler's task stream; the
gaps between one worker's tasks; the client's serial steps; the client's and scheduler's overhead around each
parallel step; the broadcast of the vocabulary or model, proportional to the workers), it predicts the wall time
and speed-up at ``--predict`` workers (default 1,2,4,8,14) with the ranges the code would cut for each count, and
Amdahl's bound from the serial share. It is a model, not a measurement at those counts (``benchmarks/device_scale.sh``
measures them on a machine with the cores). ``--no-single`` skips the one-process run; ``--rank-model MODEL``
ranks with a fitted model, and ``--outputs-from FILE`` repeats that file's outputs instead of the students'::

    python benchmarks/bench_scale.py --fit-references bank.jsonl --workers 2 --no-single --cost-model

The machine's load average is printed before and after: on a shared machine the figures move with
what else runs, and N workers cannot go faster than the N cores that are actually free.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _inputs import records, reference_and_student_files  # noqa: E402


def _task_times(client: Any) -> list[dict]:
    """Each task finished since the scheduler's task stream was switched on (``client.get_task_stream()``): its
    function, worker, first start and last stop of its computation, and seconds computing."""
    from distributed.utils import key_split

    rows = []
    for task in client.get_task_stream():
        compute = [s for s in task.get("startstops", ()) if s["action"] == "compute"]
        if compute:
            rows.append({"kind": key_split(task["key"]), "worker": task["worker"],
                         "start": min(s["start"] for s in compute), "stop": max(s["stop"] for s in compute),
                         "compute_s": sum(s["stop"] - s["start"] for s in compute)})
    return rows


def _cpu_s() -> float:
    """On a worker: seconds of CPU its process has used (user + system)."""
    times = os.times()
    return times.user + times.system


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


def _outputs_file(data_dir: Path, n: int, tmp: Path, source: Path | None = None) -> Path:
    """The students' outputs (or ``source``'s) repeated to ``n`` lines (id, student, output), written once."""
    name = source.stem if source is not None else data_dir.name
    path = tmp / f"bench_scale_{name}_{n}.jsonl"
    if not path.exists():
        rows = [json.dumps({"id": r.id, "student": r.student or "student", "output": r.output}, ensure_ascii=False)
                for r in records([source] if source is not None else reference_and_student_files(data_dir)[1])]
        with open(path.with_suffix(".tmp"), "w", encoding="utf-8") as handle:
            for i in range(n):
                handle.write(rows[i % len(rows)] + "\n")
        os.replace(path.with_suffix(".tmp"), path)
    return path


def file_child(config: str, model_path: Path, path: Path) -> dict:
    """Rank one file in one configuration (``single`` or ``workers=N``), in a fresh interpreter (tag cache off)."""
    from attribution.tagcache import ENV_OFF

    os.environ[ENV_OFF] = "1"  # inherited by the local workers: every output is tagged
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
            for _ in range(2):  # the model's broadcast alone (rank_file makes its own, in its scan step), timed
                start = time.perf_counter()  # the second: the first also has the workers import the modules
                client.cancel(client.scatter(model, broadcast=True, hash=False))
                out["broadcast_s"] = time.perf_counter() - start
            client.get_task_stream()  # switches the scheduler's task stream on
            start = time.perf_counter()
            stats: dict = {}
            result, _ = rank_file(model, path, client=client, stats=stats)
            out["rank_s"] = time.perf_counter() - start
            out.update(stats)
            out["tasks"] = _task_times(client)
            out["worker_cpu_s"] = sum(client.run(_cpu_s).values())
            out["n_workers"] = int(config.split("=")[1])
            out["worker_peak_mb"] = sorted(round(v) for v in client.run(_peak_mb).values())
    out["n_outputs"] = result["n_outputs"] + result["n_empty"]
    out["rank_sha256"] = hashlib.sha256(to_json(result).encode()).hexdigest()[:16]
    out["client_peak_mb"] = round(_peak_mb())
    return out


def bench_file(args: argparse.Namespace) -> None:
    """``--outputs N``: the partitioned ranking of one large file."""
    from attribution.api import fit_reference

    tmp = Path(args.tmp)
    path = _outputs_file(args.data_dir, args.outputs, tmp, args.outputs_from)
    model_path = args.rank_model or tmp / f"bench_scale_{args.data_dir.name}.npz"
    if not model_path.exists():
        fit_reference(records(reference_and_student_files(args.data_dir)[0], require_teacher=True)).save(model_path)
    configs = (["single"] if args.outputs <= args.single_up_to and not args.no_single else []) + [
        f"workers={n}" for n in
                                                                            args.workers.split(",")]
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} (1 min) before; {args.outputs:,} outputs "
          f"({path.stat().st_size / 2**20:,.0f} MiB) of {args.outputs_from or args.data_dir}; model {model_path}")
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
        if args.cost_model and "tasks" in row:
            print(cost_table(rank_model(row, path), args.predict), flush=True)
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
    clients: list = []
    starting, fitting = rank_module.tag_on_cluster, partitioned_fit.fit_file

    def timed_cluster(*args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        try:
            client = starting(*args, **kwargs)  # type: ignore[arg-type]
            clients.append(client)
            return client
        finally:
            out["cluster_start_s"] = time.perf_counter() - start
            if clients and clients[0] is not None:
                clients[0].get_task_stream()  # switches the scheduler's task stream on

    def timed_fit(*args: object, **kwargs: object) -> object:
        start = time.perf_counter()
        try:
            return fitting(*args, stats=stats, **kwargs)  # type: ignore[arg-type]
        finally:
            out["fit_file_s"] = time.perf_counter() - start
            if clients and clients[0] is not None:  # the CLI's cluster is still up
                out["tasks"] = _task_times(clients[0])
                out["worker_cpu_s"] = sum(clients[0].run(_cpu_s).values())

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
    configs = [*([] if args.no_single else ["single"]), *(f"workers={n}" for n in args.workers.split(","))]
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
            if args.save_model and row["code"] == 0:  # the model for a following --outputs run (--rank-model)
                shutil.copyfile(Path(tmp) / f"{config}.npz", args.save_model)
            line = (f"{config:>10}: {row['total_s']:.1f}s wall; CPU {row['cpu_s']:.1f}s in this process"
                    + (f", {row['workers_cpu_s']:.1f}s in the workers" if config != "single" else "")
                    + (f"; {row['total_s'] / rows[0]['total_s']:.2f}x one process" if not args.no_single else "")
                    + f"; model {row['model_sha256']}; "
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
                if args.cost_model and row.get("tasks"):
                    print(cost_table(fit_model(row, args.fit_references), args.predict), flush=True)
    same = len({row["model_sha256"] for row in rows}) == 1
    print(f"identical model bytes: {same}")
    if not same:
        sys.exit(1)

# --- the cost model (--cost-model): a prediction from one measured run, not a measurement --------------------------


def _phase(tasks: list[dict], kinds: tuple[str, ...], wall: float, n_units: int, load_s: float = 0.0) -> dict:
    """One parallel step of a measured run: its tasks' compute seconds (the workers' tagger loads taken out), the
    mean idle gap between one worker's consecutive tasks (the scheduler's dispatch, the worker's (de)serialization)
    per unit of work (a range), and the client's overhead around it: the step's wall time on the client less the
    span of its tasks on the workers (submitting, gathering and unpickling the results, in the client)."""
    mine = [t for t in tasks if t["kind"] in kinds]
    if not mine:
        return {"work_s": 0.0, "gap_s": 0.0, "client_s": wall}
    gaps = 0.0
    workers: dict[str, list[dict]] = {}
    for task in mine:
        workers.setdefault(task["worker"], []).append(task)
    for own in workers.values():
        own.sort(key=lambda t: t["start"])
        gaps += sum(max(0.0, b["start"] - a["stop"]) for a, b in zip(own, own[1:]))
    span = max(t["stop"] for t in mine) - min(t["start"] for t in mine)
    return {"work_s": sum(t["compute_s"] for t in mine) - load_s * len(workers),
            "gap_s": gaps / max(1, n_units - len(workers)), "client_s": max(0.0, wall - span)}


def _cpu_per_wall(row: dict) -> float:
    """The workers' CPU seconds (their whole processes: imports and tagger loads too) per second of their tasks'
    wall time: below 1 where other processes took the cores from them (a busy machine), about 1 on free cores."""
    busy = sum(task["compute_s"] for task in row["tasks"])
    return min(1.0, row["worker_cpu_s"] / busy) if busy and row.get("worker_cpu_s") else 1.0


def _predict_phase(phase: dict, n_ranges: int, workers: int, load_s: float = 0.0) -> float:
    """Wall seconds of a step's tasks at ``workers``: ranges of equal work, dealt in rounds of ``workers``, the
    tagger loaded once per worker (in parallel), the gaps between a worker's ranges (the client's overhead around
    the step is counted with the serial part)."""
    rounds = -(-n_ranges // workers)
    return load_s + rounds * (phase["work_s"] / n_ranges) + (rounds - 1) * phase["gap_s"]


def fit_model(row: dict, path: Path) -> dict:
    """The cost model of ``fit --workers N`` from one measured ``fit_child`` row."""
    from attribution.parallel.fit import FIT_PARTITION_BYTES, MIN_FIT_PARTITION_BYTES, RANGES_PER_THREAD
    from attribution.parallel.ranges import byte_ranges

    stats, tasks, measured = row["stats"], row["tasks"], int(row["config"].split("=")[1])
    loads = [s for s in stats["worker_load_s"] if s > 0.01]
    load = sum(loads) / len(loads) if loads else 0.0
    n = stats["n_ranges"]
    phases = {"read+tag": (_phase(tasks, ("read_range", "_summary"), stats["read_s"], n, load), load),
              "counts": (_phase(tasks, ("range_counts",), stats["count_s"], n), 0.0),
              "matrix rows": (_phase(tasks, ("range_matrix",), stats["matrix_s"], n), 0.0)}
    steps = sum(stats[name] for name in ("read_s", "count_s", "vocabulary_s", "scatter_s", "matrix_s", "fit_s"))
    serial = {"vocabulary": stats["vocabulary_s"], "regressions": stats["fit_s"],
              "rest (imports, saving, closing)": row["total_s"] - row["cluster_start_s"] - steps}
    size = path.stat().st_size

    def ranges(workers: int) -> int:
        return len(byte_ranges(path, max(MIN_FIT_PARTITION_BYTES,
                                         min(FIT_PARTITION_BYTES, size // (RANGES_PER_THREAD * workers) + 1))))

    serial["cluster start"] = row["cluster_start_s"]
    return {"what": f"fit {path.name}", "measured": measured, "phases": phases, "serial": serial,
            "cpu_per_wall": _cpu_per_wall(row),
            "per_worker": {"vocabulary broadcast": stats["scatter_s"] / measured},
            "load_s": load, "ranges": ranges}


def rank_model(row: dict, path: Path) -> dict:
    """The cost model of ``rank_file`` on N workers from one measured ``file_child`` row."""
    from attribution.parallel.ranges import byte_ranges
    from attribution.parallel.rank import default_partition_bytes

    tasks, measured, n = row["tasks"], row["n_workers"], int(row["n_ranges"])
    broadcast = row["broadcast_s"]
    load = row["workers_load_s"]  # measured before the run (client.run): every worker at once
    phases = {"scan": (_phase(tasks, ("scan_range",), row["scan_s"] - broadcast, n), 0.0),
              "tag+score": (_phase(tasks, ("score_range",), row["score_s"] - row["reduce_s"], n), 0.0)}
    return {"what": f"rank {path.name}", "measured": measured, "phases": phases, "cpu_per_wall": _cpu_per_wall(row),
            "serial": {"reduce (client)": row["reduce_s"], "tagger load (once per worker, in parallel)": load,
                       "cluster start": row["cluster_start_s"]},
            "per_worker": {"model broadcast": broadcast / measured},
            "load_s": 0.0, "ranges": lambda workers: len(byte_ranges(path, default_partition_bytes(path, workers)))}


def cost_table(model: dict, predict: str) -> str:
    """:func:`_cost_table` twice: with the workers' task times as measured, and scaled to their CPU time."""
    out = [_cost_table(model, predict, 1.0, "the workers' task times as measured (at this machine's load)")]
    if model["cpu_per_wall"] < 0.95:
        out.append(_cost_table(model, predict, model["cpu_per_wall"],
                               f"the workers' tasks at their CPU time ({model['cpu_per_wall']:.2f} s of CPU a "
                               f"second: as on free cores; the client's steps as measured)"))
    return "\n".join(out)


def _cost_table(model: dict, predict: str, scale: float, basis: str) -> str:
    """The model's inputs and its predicted wall time, speed-up over one process and Amdahl bound per worker count.

    One process (modeled) = every step's work on one core plus the client's serial steps and one tagger load,
    without cluster start, broadcast, gaps or the client's overhead around parallel steps. At N workers: the
    cluster start as measured (its workers start at once; on a busy 2-core machine, an upper bound), the broadcast
    grows with N (per worker as measured), each parallel step as :func:`_predict_phase`, plus the client's overhead
    around each step as measured. Amdahl's bound: 1 / (s + (1 - s) / N) with s the serial share of the one-process
    time (the client's steps, which more workers do not cut); the predicted wall adds the costs of the cluster."""
    phases = {name: ({**p, "work_s": p["work_s"] * scale}, load * scale) for name, (p, load) in model["phases"].items()}
    serial = model["serial"]
    work = sum(phase["work_s"] for phase, _ in phases.values())
    serial_s = sum(v for name, v in serial.items() if name != "cluster start")
    one = work + serial_s + model["load_s"] * scale
    lines = [f"{'':>12}COST MODEL of {model['what']} from the run at {model['measured']} workers (a prediction, "
             f"not a measurement), {basis}:",
             f"{'':>12}parallel work " + ", ".join(f"{name} {p['work_s']:.1f}s (gap per range {p['gap_s']:.2f}s, "
                                                   f"client overhead {p['client_s']:.1f}s)"
                                                   for name, (p, _) in phases.items()),
             f"{'':>12}serial (client) " + ", ".join(f"{name} {v:.1f}s" for name, v in serial.items())
             + "; per worker " + ", ".join(f"{name} {v:.2f}s" for name, v in model["per_worker"].items())
             + f"; one process (modeled) {one:.1f}s",
             f"{'':>12}{'workers':>7} {'ranges':>6} {'wall':>8} {'speed-up':>8} {'serial share':>12} "
             f"{'Amdahl bound':>12}"]
    for workers in (int(w) for w in predict.split(",")):
        n_ranges = model["ranges"](workers)
        cluster = serial.get("cluster start", 0.0) + sum(v * workers for v in model["per_worker"].values()) + sum(
            p["client_s"] for p, _ in phases.values())
        wall = serial_s + cluster + sum(_predict_phase(p, n_ranges, workers, load) for p, load in phases.values())
        share = serial_s / one
        bound = 1 / (share + (1 - share) / workers)
        lines.append(f"{'':>12}{workers:>7} {n_ranges:>6} {wall:>7.1f}s {one / wall:>7.2f}x {share:>11.1%} "
                     f"{bound:>11.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "demo")
    parser.add_argument("--workers", default="1,2", help="comma-separated numbers of local workers")
    parser.add_argument("--repeat", type=int, default=4, help="student outputs repeated this many times")
    parser.add_argument("--outputs", type=int, help="rank one file of this many outputs on workers (see above)")
    parser.add_argument("--single-up-to", type=int, default=20_000, help="with --outputs: also one process up to this")
    parser.add_argument("--tmp", default=tempfile.gettempdir(), help="with --outputs: where the file and model go")
    parser.add_argument("--fit-references", type=Path, help="time the command 'fit FILE' (see above)")
    parser.add_argument("--cost-model", action="store_true", help="predict other worker counts (see above)")
    parser.add_argument("--predict", default="1,2,4,8,14", help="with --cost-model: the worker counts predicted")
    parser.add_argument("--no-single", action="store_true", help="skip the one-process run")
    parser.add_argument("--rank-model", type=Path, help="with --outputs: rank with this fitted model")
    parser.add_argument("--outputs-from", type=Path, help="with --outputs: repeat this file's outputs")
    parser.add_argument("--save-model", type=Path, help="with --fit-references: keep the fitted model there")
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
