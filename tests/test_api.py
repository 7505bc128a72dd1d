"""Record-level workflows: fit on references, rank a student (per task and combined), evaluate."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from attribution.api import evaluate, file_digest, fit_reference, rank_student, results_table, verdict
from attribution.errors import InputError, ModelError
from attribution.io import Record, read_records
from attribution.models import MultiTaskAttributor

TEACHERS = ["chatty", "formal", "terse"]


#: The fixture corpus has 3 teachers; the unlisted-teacher test needs 4 by default (it is unreliable
#: with 3, see benchmarks/bench_unlisted.py), so tests of its mechanics lower the bar explicitly.
OPEN_SET_3 = {"open_set_min_teachers": 3}


@pytest.fixture(scope="module")
def model(reference_records):
    return fit_reference(reference_records, features="pos-paper", **OPEN_SET_3)


def test_three_candidates_give_no_verdict_by_default(reference_records, student_records):
    result = rank_student(fit_reference(reference_records, features="pos-paper"), student_records)
    assert result["verdict"] == {"teacher": None, "best_candidate": "chatty", "status": "unavailable",
                                 "p_unlisted": None, "alpha": 0.05, "p_value": None, "test": "unlisted",
                                 "p_paired": None, "n_paired": 0, "runner_up": None, "paired_score": None,
                                 "family": None, "best_family": "chatty", "level": None, "teacher_test": None}
    assert all(sub["verdict"]["status"] == "unavailable" for sub in result["tasks"].values())
    assert result["ranking"][0]["teacher"] == "chatty"  # the ranking itself is unchanged


def test_fit_reference_per_task(model, reference_records):
    assert isinstance(model, MultiTaskAttributor)
    assert model.tasks == ["commonsense", "science"] and model.classes_ == TEACHERS
    science = fit_reference(reference_records, task="science", features="pos-paper")
    assert science.tasks == ["science"]
    with pytest.raises(ModelError) as info:
        fit_reference(reference_records, task="math")
    assert info.value.code == "E208"


def test_task_of_a_record(model, reference_records):
    """The fitted task that scores a record: its own, else the caller's, else the only one; else E122/E208 at the
    record's file and line."""
    record = reference_records[0]
    assert model.task_of(record) == record.task and model.task_of(record, "science") == record.task
    untagged = Record(output="x", source="s.jsonl", line=7)
    assert model.task_of(untagged, "science") == "science"
    for task, code in ((None, "E122"), ("math", "E208")):
        with pytest.raises(InputError) as info:
            model.task_of(untagged, task)
        assert info.value.code == code and str(info.value).startswith("s.jsonl:7: ")
    single = fit_reference(reference_records, task="science", features="pos-paper")
    assert single.task_of(untagged) == "science"


def test_rank_student_per_task_and_combined(model, student_records):
    result = rank_student(model, student_records)
    assert result["n_outputs"] == 10
    ranking = result["ranking"]
    assert [row["teacher"] for row in ranking][0] == "chatty"
    assert sorted(row["teacher"] for row in ranking) == TEACHERS
    assert sum(row["probability"] for row in ranking) == pytest.approx(1.0)
    assert [row["probability"] for row in ranking] == sorted((row["probability"] for row in ranking), reverse=True)
    assert set(result["tasks"]) == {"science", "commonsense"}
    assert result["tasks"]["science"]["n_outputs"] == 6 and result["tasks"]["commonsense"]["n_outputs"] == 4
    for sub in result["tasks"].values():
        assert sum(row["probability"] for row in sub["ranking"]) == pytest.approx(1.0)
        assert sub["verdict"]["status"] in {"attributed", "inconclusive"}
    assert result["verdict"]["best_candidate"] == "chatty"
    assert result["verdict"]["status"] in {"attributed", "inconclusive"}
    assert 0 < result["verdict"]["p_unlisted"] <= 1
    evidence = result["evidence"]
    assert 0 < len(evidence) <= 10 and {row["task"] for row in evidence} <= {"science", "commonsense"}
    assert [row["weight"] for row in evidence] == sorted((row["weight"] for row in evidence), reverse=True)
    assert all(row["teacher"] == "chatty" for row in evidence)
    json.dumps(result)  # plain JSON-ready values


def test_rank_student_streams_with_progress_and_keeps_outputs(model, student_path):
    from attribution.io import RecordReader

    seen = []
    result = rank_student(model, RecordReader(student_path), keep_outputs=True, progress=seen.append)
    assert sum(seen) == 10
    assert [row["id"] for row in result["outputs"]] == sorted(row["id"] for row in result["outputs"])
    assert {row["id"] for row in result["outputs"]} == {f"s{i:02d}" for i in range(1, 11)}
    for row in result["outputs"]:
        assert sum(row["probabilities"].values()) == pytest.approx(1.0)


def test_rank_student_task_filter(model, student_records):
    result = rank_student(model, student_records, task="commonsense")
    assert result["n_outputs"] == 4 and list(result["tasks"]) == ["commonsense"]


def test_rank_student_with_a_task_free_model(reference_records, student_records):
    untasked = [Record(output=r.output, teacher=r.teacher, id=r.id) for r in reference_records]
    model = fit_reference(untasked, features="pos-paper")
    result = rank_student(model, student_records)  # students carry tasks; the one model serves them
    assert model.tasks == [None] and "tasks" not in result
    assert result["ranking"][0]["teacher"] == "chatty" and result["n_outputs"] == 10


def test_rank_student_errors(model, student_records):
    stranger = [Record(output="The answer is A.", task="math", id="m1")]
    with pytest.raises(ModelError) as info:
        rank_student(model, stranger)
    assert info.value.code == "E208"
    with pytest.raises(ModelError) as info:
        rank_student(model, [])
    assert info.value.code == "E209"
    with pytest.raises(ModelError) as info:
        rank_student(model, student_records, task="math")
    assert info.value.code == "E209"


def test_rank_student_is_deterministic(model, student_records):
    assert rank_student(model, student_records) == rank_student(model, student_records)


def test_verdict_statuses():
    assert verdict("a", [None]).to_dict() == {"teacher": None, "best_candidate": "a", "status": "unavailable",
                                              "p_unlisted": None, "alpha": 0.05, "p_value": None, "test": "unlisted",
                                              "p_paired": None, "n_paired": 0, "runner_up": None, "paired_score": None}
    assert verdict("a", []).status == "unavailable"
    attributed = verdict("a", [0.01, 0.02])
    assert attributed.to_dict() == {"teacher": "a", "best_candidate": "a", "status": "attributed", "p_unlisted": 0.02,
                                    "alpha": 0.05, "p_value": 0.02, "test": "unlisted", "p_paired": None,
                                    "n_paired": 0, "runner_up": None, "paired_score": None}
    inconclusive = verdict("a", [0.01, 0.3])
    assert inconclusive.status == "inconclusive" and inconclusive.teacher is None
    assert verdict("a", [0.04], alpha=0.01).status == "inconclusive"


# -- evaluate ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def evaluation(reference_records, labelled_records):
    return evaluate(reference_records, labelled_records, features=["pos-paper", "combined"], subsets=(2, 4),
                    draws=5, **OPEN_SET_3)


def test_evaluate_rows_per_task_and_feature_set(evaluation):
    rows = evaluation["results"]
    assert [(r["task"], r["features"]) for r in rows] == [("science", "pos-paper"), ("science", "combined"),
                                                          ("commonsense", "pos-paper"),
                                                          ("commonsense", "combined")]
    for row in rows:
        assert row["n_outputs"] == 9 and row["n_students"] == 3
        assert set(row["student_accuracy_at"]) == {"2", "4"}
        assert 0 <= row["balanced_accuracy"] <= 1
        assert row["n_attributed"] <= 3
        assert all(s["status"] in {"attributed", "inconclusive"} for s in row["students"].values())
        assert row["accuracy"] >= 0.8
    combined = [r for r in rows if r["features"] == "combined"]
    assert all(r["accuracy"] == 1.0 and r["student_accuracy"] == 1.0 for r in combined)
    table = results_table(evaluation)
    assert len(table) == 4 and list(table.columns[:4]) == ["task", "features", "n_outputs", "accuracy"]


def test_evaluate_is_deterministic(reference_records, labelled_records, evaluation):
    again = evaluate(reference_records, labelled_records, features=["pos-paper", "combined"], subsets=(2, 4),
                     draws=5, **OPEN_SET_3)
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(evaluation.to_dict(), sort_keys=True)


def test_evaluate_unknown_teacher_label_names_file_and_line(reference_records, make_jsonl, labelled_path):
    rows = [json.loads(line) for line in labelled_path.read_text().splitlines()]
    rows[4]["teacher"] = "gpt-5"
    path = make_jsonl(rows, "students.jsonl")
    with pytest.raises(InputError) as info:
        evaluate(reference_records, read_records(path), features=["pos-paper"])
    err = info.value
    assert (err.code, err.line, err.field, err.source) == ("E108", 5, "teacher", str(path))
    assert str(err).startswith(f"{path}:5: unknown teacher label 'gpt-5'; the model knows chatty, formal, terse")


def test_evaluate_student_without_label(reference_records, make_jsonl):
    path = make_jsonl([{"task": "science", "output": "Answer: A. Reason: none."}])
    with pytest.raises(InputError) as info:
        evaluate(reference_records, read_records(path), features=["pos-paper"])
    assert (info.value.code, info.value.line) == ("E107", 1)


def test_evaluate_unknown_task(reference_records, make_jsonl):
    path = make_jsonl([{"task": "science", "teacher": "terse", "output": "Answer: A."},
                       {"task": "history", "teacher": "terse", "output": "Answer: B."}])
    with pytest.raises(InputError) as info:
        evaluate(reference_records, read_records(path), features=["pos-paper"])
    assert (info.value.code, info.value.line, info.value.field) == ("E116", 2, "task")  # a task, not a teacher
    assert "unknown task 'history'" in str(info.value)


def test_evaluate_teacher_missing_from_the_task_references(reference_records, labelled_records):
    # 'terse' only wrote science references: a commonsense student of 'terse' is an unknown label there
    refs = [r for r in reference_records if not (r.teacher == "terse" and r.task == "commonsense")]
    with pytest.raises(InputError) as info:
        evaluate(refs, labelled_records, features=["pos-paper"])
    first = next(r for r in labelled_records if r.teacher == "terse" and r.task == "commonsense")
    assert (info.value.code, info.value.line) == ("E108", first.line)
    assert "'terse'" in str(info.value) and "chatty, formal" in str(info.value)


def test_file_digest_has_no_absolute_path(reference_path):
    digest = file_digest(reference_path)
    assert digest == {"name": "reference.jsonl",
                      "sha256": hashlib.sha256(reference_path.read_bytes()).hexdigest()}


def test_evaluate_checks_every_task_before_fitting(reference_records, labelled_records):
    # a bad label in the second task must be reported before the first task's models are fitted
    # (an unknown feature set would fail at the first fit, so seeing E108 proves nothing was fitted)
    bad = [Record(**{**r.__dict__, "teacher": "nobody"}) if r.task == "commonsense" else r
           for r in labelled_records]
    assert labelled_records[0].task == "science"
    with pytest.raises(InputError) as info:
        evaluate(reference_records, bad, features=["no-such-features"])
    assert info.value.code == "E108" and "'nobody'" in str(info.value)


def test_evaluate_adds_a_row_per_baseline(reference_records, labelled_records):
    from attribution.api import evaluate

    result = evaluate(reference_records, labelled_records, features=["pos-paper"], baselines=["cosine"],
                      subsets=(5,), draws=3)
    rows = {(row["task"], row["features"]) for row in result["results"]}
    tasks = {r.task for r in labelled_records}
    assert rows == {(t, f) for t in tasks for f in ("pos-paper", "cosine")}
    for row in result["results"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["n_students"] >= 1
        assert set(row["student_accuracy_at"]) == {"5"}


def test_base_style_is_the_mean_of_student_means():
    from attribution.api import base_style

    scores = np.array([[0.0, -2.0], [-1.0, -1.0], [-3.0, 0.0]])
    groups = ["s1", "s1", "s2"]
    # s1's mean is (-0.5, -1.5), s2's (-3, 0): students count equally, whatever their size
    np.testing.assert_allclose(base_style(scores, groups), [-1.75, -0.75])


def test_evaluate_with_base_correction_adds_a_row_per_feature_set(reference_records, labelled_records):
    from attribution.api import evaluate

    result = evaluate(reference_records, labelled_records, features=["pos-paper"], subsets=(), draws=1,
                      base_correction=True)
    names = [row["features"] for row in result["results"]]
    assert names.count("pos-paper") == names.count("pos-paper+base-correction") >= 1
    corrected = [row for row in result["results"] if row.get("base_correction")]
    assert all(row["n_attributed"] is None and 0 <= row["accuracy"] <= 1 for row in corrected)
