"""Batch audits and tabular results (issue 12, sections 1-2): ``rank --group-by``, ``--format csv``,
``-o x.csv/x.parquet``, ``--per-output``, ``--evidence``; :mod:`attribution.result`.

The CLI runs in-process (``attribution.cli.main``), so spaCy loads once.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_hardening import cli  # in-process: (exit code, stdout, stderr)

from attribution.api import fit_reference, rank_student, results_table
from attribution.cli import main
from attribution.errors import InputError, ModelError
from attribution.io import read_records
from attribution.outputs import round_floats
from attribution.result import SUMMARY_COLUMNS, AuditBatch, audit_student, rank_students, write_table

from conftest import ALPACAEVAL, shared_data, write_jsonl

STUDENTS = ["s-chatty", "s-formal", "s-terse"]


@pytest.fixture(scope="module")
def model(reference_records):
    return fit_reference(reference_records, features="pos-paper")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("model") / "model.npz"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def students_path(tmp_path_factory, labelled_path):
    """The labelled fixture outputs as three students (one per teacher), interleaved as in the file."""
    rows = [json.loads(line) for line in labelled_path.read_text().splitlines()]
    return write_jsonl(tmp_path_factory.mktemp("students") / "students.jsonl",
                       [{**row, "student": f"s-{row['teacher']}"} for row in rows])


# -- the API ---------------------------------------------------------------------------------------------
def test_rank_students_gives_each_group_the_single_student_result(model, students_path):
    records = read_records(students_path)
    batch = rank_students(model, records, keep_outputs=True)
    assert isinstance(batch, AuditBatch) and [r.student for r in batch] == STUDENTS
    for result in batch:
        alone = rank_student(model, [r for r in records if r.student == result.student], keep_outputs=True)
        assert result.to_dict() == {"student": result.student, **alone}  # exactly one student's result
        assert result.ranking["teacher"].iloc[0] == result.student[2:]
    table = batch.table()
    assert list(table.columns) == list(SUMMARY_COLUMNS) and table["student"].tolist() == STUDENTS
    assert (table["top_teacher"] == ["chatty", "formal", "terse"]).all() and (table["n_outputs"] == 6).all()
    assert (table["ci_low"] <= table["probability"]).all()
    # teacher / runner_up are the verdict's: nobody named (3 candidates, no paired answers), no runner-up
    assert table["teacher"].isna().all() and table["runner_up"].isna().all()
    assert (table["status"] == [r.data["verdict"]["status"] for r in batch]).all()
    per_output = batch.per_output
    assert len(per_output) == 18 and per_output.columns[:3].tolist() == ["student", "id", "task"]
    assert sorted(per_output.columns[3:]) == ["chatty", "formal", "terse"]
    assert per_output.set_index("id").loc["formal-s1", "student"] == "s-formal"
    assert batch.evidence["student"].isin(STUDENTS).all()
    doc = batch.to_dict()
    assert doc["group_by"] == "student" and len(doc["students"]) == 3 and "signature" in doc
    assert batch["s-terse"].student == "s-terse"


def test_audit_student_is_rank_student_as_frames(model, student_records):
    """The whole document: rank_student's ranking part, the model's signature, and what describes the run."""
    result = audit_student(model, student_records)
    expected = rank_student(model, student_records)
    document = result.to_dict()
    about_the_run = {key: document.pop(key) for key in ("skipped", "inputs", "run")}
    assert document == {**expected, "signature": next(iter(model.models_.values())).signature_}
    assert about_the_run["skipped"] == 0 and about_the_run["inputs"]["outputs"]["name"] == "student.jsonl"
    assert about_the_run["run"]["settings"]["verdict_test"] == "either"
    assert result.ranking.columns.tolist() == ["teacher", "probability", "support", "ci_low", "ci_high"]
    assert result.ranking["teacher"].tolist() == [r["teacher"] for r in expected["ranking"]]
    assert result.verdict["status"].iloc[0] == expected["verdict"]["status"]
    assert result.evidence["feature"].tolist() == [r["feature"] for r in expected["evidence"]]
    assert result.warnings == []
    with pytest.raises(ModelError) as info:
        result.per_output  # noqa: B018 - not kept
    assert info.value.code == "E217"
    kept = audit_student(model, student_records, keep_outputs=True)
    assert len(kept.per_output) == kept.to_dict()["n_outputs"] + kept.to_dict()["n_empty"]


def test_pooled_students_are_warned_about(model, students_path):
    result = audit_student(model, read_records(students_path))
    assert result.student is None and len(result.warnings) == 1
    assert all(name in result.warnings[0] for name in STUDENTS) and "--group-by student" in result.warnings[0]
    assert result.table()["student"].isna().all()


def test_rank_students_refuses_a_record_without_the_field(model, make_jsonl, students_path):
    rows = [json.loads(line) for line in students_path.read_text().splitlines()]
    del rows[3]["student"]
    path = make_jsonl(rows)
    with pytest.raises(InputError) as info:
        rank_students(model, read_records(path))
    assert info.value.code == "E123" and str(info.value).startswith(f"{path}:4: ")
    with pytest.raises(ModelError) as info:
        rank_students(model, read_records(path), group_by="prompt")
    assert info.value.code == "E210"


def test_a_group_with_nothing_to_rank_is_named_and_the_others_ranked(model, make_jsonl, students_path):
    """Issue 20, item 10: one such group used to abort the whole batch with E216."""
    rows = [json.loads(line) for line in students_path.read_text().splitlines()]
    rows.append({"id": "x", "task": "science", "student": "s-broken", "output": "</s> nannannan"})
    batch = rank_students(model, read_records(make_jsonl(rows)))
    assert [r.student for r in batch] == sorted([*STUDENTS, "s-broken"])
    broken = batch["s-broken"].to_dict()
    assert broken["ranking"] == [] and broken["verdict"]["status"] == "unavailable" and broken["n_empty"] == 1
    assert "[E209]" in broken["verdict"]["reason"] and any("s-broken" in w for w in batch.warnings)
    assert all(batch[name].data["ranking"] for name in STUDENTS)
    table = batch.table().set_index("student")
    assert table.loc["s-broken", "status"] == "unavailable" and pd.isna(table.loc["s-broken", "probability"])
    only_broken = [row for row in rows if row["student"] == "s-broken"]
    with pytest.raises(ModelError) as info:  # nothing at all to rank
        rank_students(model, read_records(make_jsonl(only_broken)))
    assert info.value.code == "E216" and "student 's-broken'" in str(info.value)


def test_write_table_csv_is_stable_and_lists_are_json(tmp_path):
    frame = pd.DataFrame({"a": [1 / 3, None], "examples": [["x", "y"], []], "s": ["é", None]})
    write_table(frame, tmp_path / "t.csv")
    text = (tmp_path / "t.csv").read_text()
    assert text == 'a,examples,s\n0.333333,"[""x"", ""y""]",é\n,[],\n'
    with pytest.raises(InputError) as info:
        write_table(frame, tmp_path / "t.xlsx")
    assert info.value.code == "E124"


def test_results_table_keeps_every_figure(reference_records, labelled_records):
    from attribution.api import evaluate

    result = evaluate(reference_records, labelled_records, features=["pos-paper"], subsets=(2, 4), draws=2)
    table = results_table(result)
    assert table.columns[:4].tolist() == ["task", "features", "n_outputs", "accuracy"]
    for column in ("calibration_error", "n_empty", "student_accuracy_at_2", "student_accuracy_at_4_std"):
        assert column in table.columns and table[column].notna().all()
    assert table["student_accuracy_at_2"].tolist() == [r["student_accuracy_at"]["2"]["mean"]
                                                       for r in result["results"]]
    assert "students" not in table.columns and "confusion" not in table.columns


# -- the CLI ---------------------------------------------------------------------------------------------
FAST = ["-q"]


def test_cli_group_by_json_one_entry_per_student(capsys, model, model_file, students_path):
    rc, out, err = cli(capsys, students_path, "-m", model_file, "--group-by", "student", "--format", "json", *FAST)
    assert rc == 0, err
    doc = json.loads(out)
    assert [e["student"] for e in doc["students"]] == STUDENTS and doc["group_by"] == "student"
    assert doc["skipped"] == 0 and doc["inputs"]["outputs"]["name"] == "students.jsonl" and "signature" in doc
    api = rank_students(model, read_records(students_path)).to_dict()
    assert round_floats(api["students"]) == doc["students"]  # the API's to_dict is the CLI's JSON
    assert "warning" not in err


def test_cli_group_by_csv_and_table(capsys, model_file, students_path):
    rc, out, err = cli(capsys, students_path, "-m", model_file, "--group-by", "student", "--format", "csv", *FAST)
    assert rc == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["student"] for r in rows] == STUDENTS and list(rows[0]) == list(SUMMARY_COLUMNS)
    assert [r["top_teacher"] for r in rows] == ["chatty", "formal", "terse"]
    assert [r["teacher"] for r in rows] == ["", "", ""]  # empty unless the verdict names one
    rc, out, err = cli(capsys, students_path, "-m", model_file, "--group-by", "student", *FAST)
    assert rc == 0 and all(name in out for name in STUDENTS) and "3 groups" in out


def test_cli_without_group_by_warns_about_several_students(capsys, model_file, students_path):
    rc, out, err = cli(capsys, students_path, "-m", model_file, "--format", "json")
    assert rc == 0
    shown = [line[len("warning: "):] for line in err.splitlines() if line.startswith("warning: ")]
    assert shown == json.loads(out)["warnings"]
    assert shown[0].startswith("the outputs name 3 students (s-chatty, s-formal, s-terse)")
    rc, out, err = cli(capsys, students_path, "-m", model_file, "--format", "json", "-q")
    assert "warning" not in err and json.loads(out)["warnings"] == shown  # --quiet: the JSON still says it


def test_cli_writes_all_tables_together(capsys, model_file, students_path, tmp_path):
    pytest.importorskip("pyarrow")
    summary, per_output, evidence = tmp_path / "sum.parquet", tmp_path / "out" / "po.csv", tmp_path / "ev.parquet"
    rc, out, err = cli(capsys, students_path, "-m", model_file, "--group-by", "student", "-o", summary,
                       "--per-output", per_output, "--evidence", evidence, "--format", "json", *FAST)
    assert rc == 0, err
    assert out == "" and err == ""  # the summary went to -o, so stdout stays quiet (and -q silences the note)
    table = pd.read_parquet(summary)
    assert table["student"].tolist() == STUDENTS and table.columns.tolist() == list(SUMMARY_COLUMNS)
    rows = pd.read_csv(per_output)
    assert len(rows) == 18 and rows.columns[:3].tolist() == ["student", "id", "task"]
    assert rows["id"].is_unique
    ev = pd.read_parquet(evidence)
    assert set(ev["student"]) == set(STUDENTS) and list(ev["examples"].iloc[0])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["ev.parquet", "out", "po.csv", "sum.parquet"]
    rc, out, err = cli(capsys, students_path, "-m", model_file, "--group-by", "student", "-o", "-",
                       "--per-output", tmp_path / "again.csv", "--format", "json", *FAST)
    assert rc == 0 and "outputs" not in json.loads(out)["students"][0]  # per-output rows go to their file only


@pytest.mark.parametrize("case", ["per-output-is-input", "bad-suffix", "report-with-group-by", "evidence-is-output"])
def test_cli_refuses_bad_table_outputs_before_work(capsys, model_file, students_path, tmp_path, case):
    before = students_path.read_bytes()
    args = [students_path, "-m", model_file, "--group-by", "student", *FAST]
    if case == "per-output-is-input":  # through a link with a table's suffix
        (tmp_path / "po.csv").symlink_to(students_path)
        args += ["--per-output", tmp_path / "po.csv"]
    elif case == "bad-suffix":
        args += ["--evidence", tmp_path / "ev.xlsx"]
    elif case == "report-with-group-by":
        args += ["--report", tmp_path / "r.html"]
    else:
        args += ["-o", tmp_path / "x.csv", "--evidence", tmp_path / "x.csv"]
    rc, out, err = cli(capsys, *args)
    assert rc == 2 and "Traceback" not in err
    code = {"per-output-is-input": "[E120]", "bad-suffix": "[E124]", "evidence-is-output": "[E120]"}.get(case)
    assert code is None or code in err
    assert students_path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == (["po.csv"] if case == "per-output-is-input" else [])


def test_cli_parquet_without_pyarrow_says_what_to_install(capsys, model_file, students_path, tmp_path,
                                                          monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    rc, out, err = cli(capsys, students_path, "-m", model_file, "-o", tmp_path / "x.parquet", *FAST)
    assert rc != 0 and "[E305]" in err and "pyarrow" in err and "teacher-attribution[report]" in err
    assert list(tmp_path.iterdir()) == []


# -- the released AlpacaEval benchmark (issue 12's check), on a small subset ------------------------------
@pytest.fixture(scope="module")
def alpacaeval_subset(tmp_path_factory) -> tuple[Path, Path]:
    shared_data(ALPACAEVAL / "students_audit.jsonl")
    out = tmp_path_factory.mktemp("alpacaeval")

    def first(path: Path, key: str, n: int) -> list[dict]:
        seen: dict[str, int] = {}
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if seen.get(row[key], 0) < n:
                seen[row[key]] = seen.get(row[key], 0) + 1
                rows.append(row)
        return rows

    refs = write_jsonl(out / "teachers.jsonl", first(ALPACAEVAL / "teachers_reference.jsonl", "teacher", 12))
    students = write_jsonl(out / "students.jsonl", first(ALPACAEVAL / "students_audit.jsonl", "student", 4))
    model = out / "m.npz"
    assert main(["fit", str(refs), "-o", str(model), "--features", "pos-paper", "-q"]) == 0
    return model, students


def test_alpacaeval_group_by_student_json_and_csv(capsys, alpacaeval_subset):
    model, students = alpacaeval_subset
    rc, out, err = cli(capsys, students, "--model", model, "--group-by", "student", "--format", "json", *FAST)
    assert rc == 0, err
    entries = json.loads(out)["students"]
    assert len(entries) == 11 and all(e["n_outputs"] == 4 for e in entries)
    assert {"student", "n_outputs", "n_empty", "ranking", "verdict", "evidence"} <= set(entries[0])
    rc, out, err = cli(capsys, students, "--model", model, "--group-by", "student", "--format", "csv", *FAST)
    assert rc == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 11 and {r["student"] for r in rows} == {e["student"] for e in entries}


def test_rank_help_reads_naturally(capsys, monkeypatch):
    """Issue 12, item 5: flags show no '<bool>', repeatable options no '<list[Path]>', and rank says that
    one of --reference and --model is required."""
    monkeypatch.setenv("COLUMNS", "200")
    rc, out, _ = cli(capsys, "rank", "--help")
    assert rc == 0 and "<bool>" not in out and "One of --reference or --model is required" in " ".join(out.split())
    rc, out, _ = cli(capsys, "baseline", "--help")
    assert rc == 0 and "list[" not in out and "<file> ..." in out and "<bool>" not in out


def test_fit_reports_tagging_progress_and_fits_the_same_model(reference_records, model):
    seen = []
    again = fit_reference(reference_records, features="pos-paper", progress=seen.append)
    assert sum(seen) == len(reference_records) and all(n > 0 for n in seen)
    for task, sub in model.models_.items():
        assert (again.models_[task].classifier_.coef_ == sub.classifier_.coef_).all()


# -- input checks (issue 12, section 4) --------------------------------------------------------------------
def test_output_checks_count_repeats_short_and_non_english():
    from attribution.checks import OutputChecks

    checks = OutputChecks()
    texts = ["The answer is B because light bends in the water drop."] * 3 + ["ok", "B"]
    texts += ["Le chat dort sur la table pendant que le chien mange sa soupe chaude, puis les enfants rentrent de "
              "l'école et racontent leur journée à leurs parents dans la cuisine."]
    texts += [f"This is output number {i}, and it reads as English prose for the test." for i in range(13)]
    for text in texts:
        checks.add(text)
    assert checks.counts() == {"n_repeated": 2, "n_short": 2, "n_not_english": 1}
    warnings = checks.warnings()
    assert len(warnings) == 3 and warnings[0].startswith("2 of 19 outputs repeat")
    assert "near-empty" in warnings[1] and "English prose" in warnings[2]


def test_reference_warnings_small_and_unbalanced(reference_records):
    from attribution.checks import reference_warnings

    warnings = reference_warnings(reference_records)
    assert len(warnings) == 2 and all("fewer than 50 outputs" in w for w in warnings)
    assert "task 'commonsense'" in warnings[0] and "chatty (12), formal (12), terse (12)" in warnings[0]
    records = [r for r in reference_records if r.task == "science"]
    records = [r for r in records if r.teacher != "terse"] * 10 + [r for r in records if r.teacher == "terse"][:3]
    unbalanced = reference_warnings(records)
    assert unbalanced[-1].startswith("unbalanced references of task 'science': chatty has 120 outputs, terse 3")


def test_cli_rank_and_fit_warn_about_small_references(capsys, students_path, reference_path, tmp_path):
    rc, out, err = cli(capsys, students_path, "-r", reference_path, "--features", "pos-paper", "--group-by",
                       "student", "--format", "json")
    assert rc == 0, err
    doc = json.loads(out)
    assert [w[:16] for w in doc["warnings"]] == ["few references o"] * 2 and "warning: few references" in err
    assert all(entry["checks"] == {"n_repeated": 0, "n_short": 0, "n_not_english": 0} for entry in doc["students"])
    rc, out, err = cli(capsys, "fit", reference_path, "-o", tmp_path / "m.npz", "--features", "pos-paper",
                       "--format", "json", "-q")
    assert rc == 0 and len(json.loads(out)["warnings"]) == 2 and err == ""


def test_the_package_exports_the_result_api():
    import attribution
    import attribution.result as result

    for name in ("AuditBatch", "AuditResult", "audit_student", "rank_students"):
        assert getattr(attribution, name) is getattr(result, name) and name in attribution.__all__
