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
from attribution.errors import InputError  # noqa: E402
from attribution.io import RecordReader, read_records  # noqa: E402
from attribution.outputs import to_json  # noqa: E402
from attribution.parallel import dask_client, dask_tagging, partitions, tag_texts  # noqa: E402
from attribution.parallel.fit import fit_file  # noqa: E402
from attribution.parallel.ranges import RangeReader, byte_ranges, line_offsets, shift_lines  # noqa: E402
from attribution.parallel.rank import rank_file  # noqa: E402
from attribution.tagging import _TagCache, get_tagger, read_ahead  # noqa: E402

DEMO = REPO / "data" / "demo"
FAST = ["--features", "pos-paper"]


@pytest.fixture(scope="module", autouse=True)
def no_disk_cache():
    """These tests are about tagging on the workers: the persistent tag cache, which would answer instead, is
    off for the module (and for the workers started in it); test_tag_cache_answers_before_the_workers turns it on."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ATTRIBUTION_NO_CACHE", "1")
        yield


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


def test_tag_cache_answers_before_the_workers(client, tmp_path, monkeypatch):
    """With the tag cache on, texts it holds are not sent to the workers (tag and tag_later), the rest is sent
    once and stored by this process; the tags are those of one process."""
    monkeypatch.delenv("ATTRIBUTION_NO_CACHE")
    monkeypatch.setenv("ATTRIBUTION_CACHE_DIR", str(tmp_path))
    texts = [r.output for r in read_records(DEMO / "student_gemma-3-270m.jsonl")][:40]
    tagger = get_tagger()
    local = tagger.tag(texts[:20], cache=False)  # half of the texts go to the disk cache here
    with dask_tagging(client, partition_size=8) as backend:
        before = tagger.n_tagged
        assert tagger.tag(texts, cache=False)[:20] == local
        assert tagger.n_tagged - before == len(set(texts[20:])) and backend.n_partitions >= 2
        sent = backend.n_partitions
        assert tagger.tag_later(texts)() == tagger.tag(texts, cache=False)  # everything on disk now
        assert backend.n_partitions == sent and tagger.n_tagged - before == len(set(texts[20:]))


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


def _lines_file(tmp_path, name: str, lines: list[str]):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _ranged(path, partition_bytes: int, **options) -> tuple[list, list[str]]:
    """Records and skipped errors read range by range, as the workers read them."""
    records, skipped, first_lines, readers = [], [], [], []
    for span in byte_ranges(path, partition_bytes):
        readers.append(RangeReader(path, *span, **options))
        records.extend(readers[-1])
    first_lines = line_offsets([reader.n_lines for reader in readers])
    for reader, first in zip(readers, first_lines):
        skipped += [str(shift_lines(err, first)) for err in reader.skipped]
    shifts = [first for reader, first in zip(readers, first_lines) for _ in range(reader.n_read)]
    return [(r.line + shift - 1, r.output, r.id) for r, shift in zip(records, shifts)], skipped


def test_byte_ranges_read_like_the_whole_file(tmp_path):
    """Every partitioning gives the records and the FILE:LINE of skipped lines of one reader; a byte-order
    mark is taken off the file's first line only."""
    demo = (DEMO / "student_human.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    lines = ["\ufeff" + demo[0], *demo[1:10], "", "{broken", '{"output": ""}', "   ", *demo[10:20],
             "\ufeff" + demo[20], "[1]", *demo[21:]]
    path = _lines_file(tmp_path, "s.jsonl", lines)
    whole = RecordReader(path, skip_invalid=True)
    expected = [(r.line, r.output, r.id) for r in whole], [str(e) for e in whole.skipped]
    assert len(expected[1]) == 4 and ":12: " in expected[1][0]
    for size in (1, 50, 700, 3000, 10**9):
        spans = byte_ranges(path, size)
        assert spans[0][0] == 0 and spans[-1][1] == path.stat().st_size
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
        assert _ranged(path, size, skip_invalid=True) == expected, size
    with pytest.raises(InputError, match="E127"):
        byte_ranges(_lines_file(tmp_path, "s.csv", ["output", "a"]))  # a CSV field may span lines: not split


@pytest.fixture(scope="module")
def demo_models():
    """The demo references, fitted once as one task (default features) and as two tasks (pos-paper), in
    batches of 32 outputs (so that a few hundred outputs make several batches for ranges to cut)."""
    import dataclasses

    refs = read_records(DEMO / "teachers.jsonl", require_teacher=True)
    split = [dataclasses.replace(r, task="ab"[i % 2]) for i, r in enumerate(refs)]
    return fit_reference(refs, batch_size=32), fit_reference(split, features="pos-paper", batch_size=32)


@pytest.mark.slow
def test_rank_file_on_workers_same_json(client, tmp_path, demo_models):
    """Workers read, tag and score byte ranges; the client adds sums: the same JSON as rank_student in one
    process, for ranges cutting batches anywhere (one line per range upwards), two tasks, --task, skipped lines, and
    the paired test (a teacher's own answers: the prompts match)."""
    one, two = demo_models
    demo = [(DEMO / f"student_{n}.jsonl").read_text(encoding="utf-8").splitlines()
            for n in ("smollm2-135m", "human")]
    lines = demo[0][:40] * 2 + demo[1][:50]
    tasked = [json.dumps({**json.loads(line), "task": "ab"[i % 3 == 0]}) for i, line in enumerate(lines)]
    bad = list(lines)
    bad[60:62] = ['{"output": ""}', "{not json"]
    paired = (DEMO / "teacher_human.jsonl").read_text(encoding="utf-8").splitlines()[:70]
    cases = [(one, _lines_file(tmp_path, "one.jsonl", lines), {}, (1_000, 20_000, 10**9)),
             (two, _lines_file(tmp_path, "two.jsonl", tasked), {}, (7_000,)),
             (two, tmp_path / "two.jsonl", {"task": "a"}, (12_000,)),
             (one, _lines_file(tmp_path, "bad.jsonl", bad), {"skip_invalid": True}, (5_000,)),
             (one, _lines_file(tmp_path, "paired.jsonl", paired), {}, (9_000,))]
    for model, path, options, sizes in cases:
        reader = RecordReader(path, skip_invalid=options.get("skip_invalid", False))
        single = to_json(rank_student(model, reader, task=options.get("task")))
        for size in sizes:
            result, skipped = rank_file(model, path, client=client, partition_bytes=size, **options)
            assert to_json(result) == single, (path.name, size)
            assert [str(e) for e in skipped] == [str(e) for e in reader.skipped]
    assert "paired" in json.loads(single)["verdict"]["test"]
    with pytest.raises(InputError) as single_error:
        rank_student(one, RecordReader(tmp_path / "bad.jsonl"))
    with pytest.raises(InputError) as worker_error:
        rank_file(one, tmp_path / "bad.jsonl", client=client, partition_bytes=2000)
    assert str(worker_error.value) == str(single_error.value) and ":61: " in str(single_error.value)


@pytest.mark.slow
def test_fit_file_on_workers_same_bytes(client, tmp_path):
    """Workers read, tag, count n-grams and featurize byte ranges of the references; the client picks the
    vocabulary from the summed counts and fits: the same model file as fit_reference in one process
    (two tasks, TF-IDF blocks, --task, skipped lines, the first error)."""
    lines = (DEMO / "teachers.jsonl").read_text(encoding="utf-8").splitlines()[::2]  # 150 per teacher
    tasked = [json.dumps({**json.loads(line), "task": "ab"[i % 2]}) for i, line in enumerate(lines)]
    tasked[7:9] = ['{"output": "no teacher"}', "{not json"]
    path = _lines_file(tmp_path, "refs.jsonl", tasked)
    cases = [({"features": "combined", "skip_invalid": True}, (60_000,)),
             ({"features": "pos-paper", "skip_invalid": True, "task": "a"}, (1_000, 10**9))]
    for options, sizes in cases:
        params = {k: v for k, v in options.items() if k != "skip_invalid"}
        reader = RecordReader(path, require_teacher=True, skip_invalid=True)
        fit_reference(reader, **params).save(tmp_path / "single.npz")
        for size in sizes:
            model, skipped = fit_file(path, client=client, partition_bytes=size, skip_invalid=True, **params)
            model.save(tmp_path / "workers.npz")
            assert (tmp_path / "workers.npz").read_bytes() == (tmp_path / "single.npz").read_bytes(), (options, size)
            assert [str(e) for e in skipped] == [str(e) for e in reader.skipped] and len(skipped) == 2
    with pytest.raises(InputError) as single_error:
        fit_reference(RecordReader(path, require_teacher=True), features="pos-paper")
    with pytest.raises(InputError) as worker_error:
        fit_file(path, client=client, partition_bytes=3_000, features="pos-paper")
    assert str(worker_error.value) == str(single_error.value) and ":8: " in str(single_error.value)


@pytest.mark.slow
def test_partitioned_paper_data_three_workers(paper_qa, tmp_path):
    """fit_file and rank_file on the released OpenBookQA outputs (every other record: all five teachers, half
    the tagging) with a cluster of 3 workers of their own (ranges cutting the batches): the model bytes and
    rank JSON of one process."""
    references, students = tmp_path / "references.jsonl", tmp_path / "students.jsonl"
    for name, target in (("openbookqa_teacher.jsonl", references), ("openbookqa_student.jsonl", students)):
        lines = (paper_qa / name).read_text(encoding="utf-8").splitlines(keepends=True)
        target.write_text("".join(lines[::2]), encoding="utf-8")
    single = fit_reference(RecordReader(references, require_teacher=True), features="pos-paper")
    single.save(tmp_path / "single.npz")
    ranked = to_json(rank_student(single, RecordReader(students)))
    with dask_client(n_workers=3) as cluster:
        model, _ = fit_file(references, client=cluster, partition_bytes=25_000, features="pos-paper")
        model.save(tmp_path / "workers.npz")
        result, _ = rank_file(model, students, client=cluster, partition_bytes=10_000)
    assert (tmp_path / "workers.npz").read_bytes() == (tmp_path / "single.npz").read_bytes()
    assert to_json(result) == ranked


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


@pytest.mark.slow
def test_cli_fit_on_workers_reads_the_file_there(client, capsys, tmp_path):
    """fit --scheduler on JSON Lines: the workers read the file (fit_file); the same model bytes, JSON and
    skipped lines, and the same message when the task has no reference."""
    lines = (DEMO / "teachers.jsonl").read_text(encoding="utf-8").splitlines()[::3]
    tasked = [json.dumps({**json.loads(line), "task": "ab"[i % 2]}) for i, line in enumerate(lines)]
    tasked[4] = '{"output": "no teacher"}'
    path = _lines_file(tmp_path, "refs.jsonl", tasked)
    outs = []
    for extra in ([], ["--scheduler", client.scheduler.address]):
        model = tmp_path / str(len(extra)) / "model.npz"
        out = _run(capsys, "fit", path, "-o", model, "--task", "b", "--skip-invalid", "-f", "json", *FAST, *extra)
        code = main([str(a) for a in ("fit", path, "-o", tmp_path / "none.npz", "--task", "c", "--skip-invalid",
                                      "-q", *extra)])
        _, err = capsys.readouterr()
        outs.append((out, model.read_bytes(), code, err.splitlines()[-1]))
    assert outs[0] == outs[1]
    assert json.loads(outs[0][0])["skipped"] == 1 and outs[0][2] == 2 and "E117" in outs[0][3]


def _students_file(tmp_path, name: str, bad: dict[int, str] | None = None):
    """Three students' demo outputs in one file (lines interleaved), lines of ``bad`` replaced (line number: text)."""
    demo = [(DEMO / f"student_{n}.jsonl").read_text(encoding="utf-8").splitlines()[:12]
            for n in ("smollm2-135m", "human", "gemma-3-270m")]
    lines = [json.dumps({**json.loads(line), "student": f"s{i % 3}", "task": "ab"[i % 4 == 0]})
             for i, line in enumerate(sum(map(list, zip(*demo)), []))]
    for number, text in (bad or {}).items():
        lines[number - 1] = text
    return _lines_file(tmp_path, name, lines)


def test_cli_rank_on_workers_reads_the_file_there(client, capsys, tmp_path, demo_models, monkeypatch):
    """rank --scheduler on JSON Lines: the workers read and tag the student file in byte ranges (ranges of a
    few lines here), this process parses none of it; the JSON, --per-output, --evidence and report files are the
    bytes of one process, with --group-by, --keep-outputs, --examples, --control, --task, --skip-invalid, and a
    bad record fails with the same FILE:LINE [code] (its line in the whole file)."""
    from attribution.parallel import rank as partitioned_rank

    monkeypatch.setattr(partitioned_rank, "MIN_PARTITION_BYTES", 1)  # a quarter of the file per worker thread
    demo_models[1].save(tmp_path / "model.npz")  # two tasks, batches of 32: ranges and batches cut anywhere
    skipping = _students_file(tmp_path, "skipping.jsonl", {3: "{not json", 6: '{"output": "", "student": "s2"}'})
    bad = _students_file(tmp_path, "bad.jsonl", {31: "[1]"})
    nameless = _students_file(tmp_path, "nameless.jsonl", {26: '{"output": "fine", "task": "a"}'})
    parsed = []
    real_lines = RecordReader._decoded_lines

    def watched(reader, handle):
        parsed.append(reader.path.name)
        return real_lines(reader, handle)

    answers = (DEMO / "teachers.jsonl").read_text(encoding="utf-8").splitlines()[600:640]  # students' prompts
    control = _lines_file(tmp_path, "control.jsonl",  # tagged on the cluster, not among the workers' ranges
                          [json.dumps({"id": row["id"], "output": row["output"]}) for row in map(json.loads, answers)])
    cases = [[skipping, "--keep-outputs", "--examples", "2", "--report", "{d}/r.md", "--skip-invalid", "--control",
              control],
             [skipping, "--group-by", "student", "--evidence", "{d}/e.csv", "--skip-invalid", "--task", "a"],
             [nameless, "--group-by", "student"], [bad, "--group-by", "student"]]
    errors = []
    for case in cases:
        runs = []
        for extra in ([], ["--scheduler", client.scheduler.address]):
            out = tmp_path / str(len(extra))
            out.mkdir(exist_ok=True)
            parsed.clear()
            with monkeypatch.context() as patch:
                patch.setattr(RecordReader, "_decoded_lines", watched)
                code = main([str(a).format(d=out) for a in ("rank", *case, "-m", tmp_path / "model.npz", "-o",
                                                            out / "out.json", "--per-output", out / "p.csv",
                                                            "-q", *extra)])
            _, err = capsys.readouterr()
            files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
            runs.append((code, err.replace(str(out), "OUT"), files))
            for path in out.iterdir():
                path.unlink()
            assert (case[0].name in parsed) == (not extra)
        assert runs[0] == runs[1], case[1:]
        errors.append(runs[0][1].strip().splitlines()[-1] if runs[0][0] else "")
    assert runs[0][2] == {} and "nameless.jsonl:26: " in errors[2] and "[E123]" in errors[2]
    assert "bad.jsonl:31: " in errors[3] and "[E102]" in errors[3] and errors[:2] == ["", ""]


def test_ready_tags_hand_each_tag_out_as_often_as_it_was_tagged(tagger):
    """rank on workers: the tags that came back with the ranges serve the ranking's batches; a batch with a text
    they lack (a control's) goes to the cluster whole, and none is held once used."""
    from attribution.parallel.rank import ReadyTags

    first, second = tagger.tag(["A first answer.", "Another one."], cache=False)
    ready = ReadyTags(inner=None)
    ready.add([first, second, first])
    assert ready.tagged(tagger, ["A first answer.", "Unknown."]) is None
    assert ready.tagged(tagger, ["A first answer."] * 3) is None  # tagged twice only
    assert ready.tagged(tagger, ["A first answer.", "Another one.", "A first answer."]) == [first, second, first]
    assert ready.tagged(tagger, ["Another one."]) is None and ready.docs == {}


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


class _Peer:
    """A TCP listener on 127.0.0.1 that is not a Dask scheduler: a web server answering 400, or a silent one."""

    def __init__(self, answer: bytes | None) -> None:
        import threading

        self.answer, self.sock, self.held = answer, socket.socket(), []
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.address = f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.answer is None:
                self.held.append(conn)  # accepted, never a byte in reply
            else:
                conn.recv(1024)
                conn.sendall(self.answer)
                conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_peer_that_is_not_a_scheduler_is_a_coded_error(tmp_path, reference_path):
    """A web server at the address: E706, exit 2, no 'unexpected MemoryError', and no Client left half-made (its
    __del__ printed a traceback at exit): a real process, so that the interpreter's exit is seen too."""
    peer = _Peer(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    try:
        proc = subprocess.run([sys.executable, "-m", "attribution", "tag", str(reference_path), "-o",
                               str(tmp_path / "t.jsonl"), "--scheduler", peer.address, "--quiet"],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        peer.close()
    assert proc.returncode == 2 and "[E706]" in proc.stderr and peer.address in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr and "__del__" not in proc.stderr
    assert not (tmp_path / "t.jsonl").exists()


@pytest.mark.parametrize("address", ["http://127.0.0.1:8786", "127.0.0.1", "tcp://"])
def test_a_scheduler_address_that_is_not_one_is_a_usage_error(capsys, tmp_path, reference_path, address):
    code = main(["tag", str(reference_path), "-o", str(tmp_path / "t.jsonl"), "--scheduler", address, "--quiet"])
    _, err = capsys.readouterr()
    assert code == 2 and "[E702]" in err and "tcp://10.0.0.5:8786" in err and "Traceback" not in err


def test_a_peer_that_never_speaks_fails_within_the_timeout():
    peer = _Peer(None)
    start = time.monotonic()
    try:
        with pytest.raises(InputError, match=r"no answer within 1 s \[E705\]"):
            with dask_tagging(scheduler=peer.address, timeout=1):
                pass
    finally:
        peer.close()
    assert time.monotonic() - start < 20  # bounded by the timeout (it hung for minutes before)


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_fit_file_on_workers_keeps_families(client, tmp_path):
    """Records' ``family`` fields are read on the workers: the model (families, the leave-one-family-out null)
    is the one of a single process, byte for byte; a teacher given two families stops at its line (E141)."""
    lines = (DEMO / "teachers.jsonl").read_text(encoding="utf-8").splitlines()[::4]
    family = {"smollm2-135m": "small-lm", "gemma-3-270m": "small-lm", "human": "human"}
    rows = [json.dumps({**json.loads(line), "family": family[json.loads(line)["teacher"]]}) for line in lines]
    path = _lines_file(tmp_path, "refs.jsonl", rows)
    params = {"features": "pos-paper", "open_set_min_teachers": 2}
    fit_reference(RecordReader(path, require_teacher=True), **params).save(tmp_path / "single.npz")
    model, _ = fit_file(path, client=client, partition_bytes=20_000, **params)
    model.save(tmp_path / "workers.npz")
    assert (tmp_path / "workers.npz").read_bytes() == (tmp_path / "single.npz").read_bytes()
    assert next(iter(model.models_.values())).families_["gemma-3-270m"] == "small-lm"
    bad = json.loads(rows[-1])
    rows[-1] = json.dumps({**bad, "family": "other"})
    with pytest.raises(InputError) as info:
        fit_file(_lines_file(tmp_path, "bad.jsonl", rows), client=client, partition_bytes=20_000, **params)
    assert info.value.code == "E141" and info.value.line == len(rows)
