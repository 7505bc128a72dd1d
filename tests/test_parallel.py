"""Distributed tagging on Dask (``attribution.parallel``, ``--workers``, ``--scheduler``): the same tags,
model bytes and rank JSON as one process. One in-process ``LocalCluster`` of 2 single-threaded worker
processes serves the module (one of its workers is killed mid-run by the last test); one test starts a
1-worker cluster through ``--workers 1``, and one (slow) a real ``dask scheduler`` + ``dask worker`` pair
on loopback."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO

distributed = pytest.importorskip("distributed")

from attribution.api import fit_reference, rank_student  # noqa: E402
from attribution.cli import main  # noqa: E402
from attribution.cli._app import to_json  # noqa: E402
from attribution.errors import InputError  # noqa: E402
from attribution.io import read_records  # noqa: E402
from attribution.parallel import dask_tagging, partitions, tag_texts  # noqa: E402
from attribution.tagging import _TagCache, get_tagger, read_ahead  # noqa: E402

DEMO = REPO / "data" / "demo"
FAST = ["--features", "pos-paper"]


@pytest.fixture(scope="module")
def client():
    """2 single-threaded worker processes, started once for the module."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        yield client


def _forget_tags():
    """Empty this process's tag cache, so that the next fit tags everything again (on the cluster)."""
    get_tagger()._cache = _TagCache()


def _run(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_partitions_keep_order_and_bounds():
    texts = [str(i) for i in range(10)]
    for n_workers, size in [(1, 256), (2, 256), (3, 4), (4, 1), (20, 256)]:
        parts = partitions(texts, n_workers, size)
        assert [t for p in parts for t in p] == texts
        assert all(0 < len(p) <= size for p in parts)
        assert len(parts) >= min(n_workers, len(texts))
    assert partitions([], 2, 10) == []


def test_tags_identical_to_one_process(client, reference_records):
    demo = [r.output for r in read_records(DEMO / "student_human.jsonl")]
    texts = [r.output for r in reference_records] + demo + [
        "", "   ", "x" * 450 + " tail", "Hello, world!"]  # a long run: cut into pieces, joined again
    local = get_tagger().tag(texts, cache=False)
    with dask_tagging(client, partition_size=16) as backend:
        remote = get_tagger().tag(texts, cache=False)
        assert backend.n_partitions >= len(texts) // 16
    assert remote == local
    assert tag_texts(texts[:7], client=client) == local[:7]


@pytest.mark.parametrize("name", ["fixture", "demo"])
def test_fit_and_rank_identical_api(client, tmp_path, name):
    """Model bytes and rank JSON of the Python API, one process against 2 workers."""
    ref, student = ((REPO / "tests" / "data" / "reference.jsonl", REPO / "tests" / "data" / "student.jsonl")
                    if name == "fixture" else (DEMO / "teachers.jsonl", DEMO / "student_smollm2-135m.jsonl"))
    refs = read_records(ref, require_teacher=True)
    outputs = list(read_records(student)) * (1 if name == "fixture" else 6)  # demo: 3 batches sent ahead
    params = {"features": "pos-paper"} if name == "fixture" else {}
    results = []
    for cluster in (None, client):
        _forget_tags()
        if cluster is None:
            model = fit_reference(refs, **params)
            ranked = rank_student(model, outputs)
        else:
            with dask_tagging(cluster, partition_size=64) as backend:
                assert read_ahead() == 4  # batches rank keeps in flight: two per worker
                model = fit_reference(refs, **params)
                ranked = rank_student(model, outputs)
            assert backend.n_partitions >= 2
        path = tmp_path / f"{cluster is None}.npz"
        model.save(path)
        results.append((path.read_bytes(), to_json(ranked)))
    assert results[0] == results[1]


def test_workers_with_another_tagger_are_refused(client):
    class Other:
        signature = "spacy:en_other==0.0"

    refused = pytest.raises(InputError, match=r"this process with spacy:en_other==0.0.*\[E704\]")
    with dask_tagging(client) as backend, refused:
        backend.tag(Other(), ("spacy", 256), ["Hello there."])


def test_cli_scheduler_two_workers_same_bytes(client, capsys, tmp_path, reference_path, student_path,
                                              labelled_path):
    address = client.scheduler.address
    outs = []
    for extra in ([], ["--scheduler", address]):
        model = tmp_path / f"model{len(extra)}.npz"
        _run(capsys, "fit", reference_path, "-o", model, "--quiet", *FAST, *extra)
        _forget_tags()
        ranked = _run(capsys, "rank", student_path, "--reference", reference_path, "--format", "json", "--quiet",
                      *FAST, *extra)
        tagged = tmp_path / f"tags{len(extra)}.jsonl"
        _run(capsys, "tag", student_path, "-o", tagged, "--batch-size", "3", "--quiet", *extra)  # 4 batches
        _forget_tags()
        evaluated = _run(capsys, "evaluate", "-r", reference_path, "-s", labelled_path, "--features", "pos-paper",
                         "--format", "json", "--quiet", *extra)
        outs.append((model.read_bytes(), ranked, tagged.read_bytes(), evaluated))
        _forget_tags()
    assert outs[0] == outs[1]
    assert json.loads(outs[1][1])["ranking"]


def test_cli_one_local_worker_same_bytes(capsys, tmp_path, reference_path):
    """--workers 1: a LocalCluster started and closed by the command."""
    paths = [tmp_path / "single.npz", tmp_path / "one.npz"]
    _forget_tags()
    _run(capsys, "fit", reference_path, "-o", paths[0], "--quiet", *FAST)
    _forget_tags()
    code = main([str(a) for a in ("fit", reference_path, "-o", paths[1], *FAST, "--workers", "1")])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "tagging on 1 local worker process(es)" in err
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_cli_workers_and_scheduler_are_exclusive(capsys, tmp_path, reference_path):
    code = main(["fit", str(reference_path), "-o", str(tmp_path / "m.npz"), "--workers", "2",
                 "--scheduler", "tcp://127.0.0.1:1"])
    _, err = capsys.readouterr()
    assert code == 2 and "not both" in err
    assert not (tmp_path / "m.npz").exists()


def test_api_errors_are_coded():
    with pytest.raises(InputError, match=r"E701"):
        with dask_tagging():
            pass
    with pytest.raises(InputError, match=r"E702"):
        with dask_tagging(n_workers=0):
            pass
    with pytest.raises(InputError, match=r"E705"):
        with dask_tagging(scheduler=f"tcp://127.0.0.1:{_free_port()}", timeout=0.5):
            pass


def test_core_imports_no_dask():
    code = ("import sys; import attribution, attribution.parallel, attribution.cli, attribution.api; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_real_scheduler_and_worker_subprocesses(capsys, tmp_path, reference_path, student_path):
    """A ``dask scheduler`` and a ``dask worker`` started as processes on 127.0.0.1: same rank JSON."""
    dask_cli = shutil.which("dask") or pytest.skip("the 'dask' command is not on PATH")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    procs = [subprocess.Popen([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], **quiet)]
    try:
        procs.append(subprocess.Popen([dask_cli, "worker", address, "--nworkers", "1", "--nthreads", "1",
                                       "--host", "127.0.0.1", "--no-dashboard"], **quiet))
        with distributed.Client(address, timeout=60) as probe:
            probe.wait_for_workers(1, timeout=60)
        _forget_tags()
        single = _run(capsys, "rank", student_path, "-r", reference_path, "-f", "json", "-q", *FAST)
        _forget_tags()
        remote = _run(capsys, "rank", student_path, "-r", reference_path, "-f", "json", "-q", *FAST,
                      "--scheduler", address)
        assert remote == single
    finally:
        for proc in reversed(procs):
            proc.terminate()
        deadline = time.monotonic() + 20
        for proc in reversed(procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_worker_killed_mid_run_same_tags(client):
    """A worker process killed while it tags: Dask reruns its partitions elsewhere (its nanny restarts
    it); the tags are gathered by position, so nothing is lost or duplicated. Last of the module-cluster
    tests: the restarted worker is waited for."""
    import signal
    import threading

    texts = [r.output for r in read_records(DEMO / "teachers.jsonl")] * 2
    local = get_tagger().tag(texts, cache=False)
    pids = client.run(os.getpid)
    result: dict = {}

    def run() -> None:
        with dask_tagging(client, partition_size=16):
            result["docs"] = get_tagger().tag(texts, cache=False)
        result["end"] = time.monotonic()

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while not any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    victim = next(iter(pids.values()))
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    thread.join(timeout=120)
    assert result["end"] > killed, "the run ended before the kill: nothing was tested"
    assert result["docs"] == local
    client.wait_for_workers(2, timeout=60)
    assert victim not in client.run(os.getpid).values()
