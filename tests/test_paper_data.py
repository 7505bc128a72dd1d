"""The released paper outputs (``../shared/data/paper_qa``): messy real data, and pinned numbers.

Every test here skips with a reason when the shared folder is absent; the core tests never need it.
Pinned numbers are the paper's protocol with the paper's features (``pos-paper``) on the partial
released copy, measured with this code; the tolerance absorbs tagger-version noise, not regressions.
"""

from __future__ import annotations

import json

import pytest

from attribution.api import evaluate, fit_reference, rank_student
from attribution.errors import InputError
from attribution.io import RecordReader, read_records
from attribution.normalize import RULES, SENTENCE_SPLIT_RE, Normalizer

COUNTS = {"commonsenseqa": (448, 315), "openbookqa": (391, 338)}  # from the data README
TEACHERS = ["gemma-2-9b", "llama-3-70b", "llama-3-8b", "mistral-7b", "mixtral-8x7b"]


def records(paper_qa, task, kind, **options):
    return read_records(paper_qa / f"{task}_{kind}.jsonl", **options)


@pytest.mark.parametrize("task", list(COUNTS))
def test_released_files_read_as_documented(paper_qa, task):
    n_teacher, n_student = COUNTS[task]
    reader = RecordReader(paper_qa / f"{task}_teacher.jsonl", require_teacher=True, skip_invalid=True)
    teachers = list(reader)
    assert len(teachers) + len(reader.skipped) == n_teacher
    assert sorted({r.teacher for r in teachers}) == TEACHERS
    students = records(paper_qa, task, "student")
    assert len(students) == n_student
    assert {r.student for r in students} == {"gpt2"} and {r.task for r in students} == {task}
    assert all(r.id for r in teachers + students)


def test_empty_released_teacher_output_is_reported_with_its_line(paper_qa):
    path = paper_qa / "commonsenseqa_teacher.jsonl"
    with pytest.raises(InputError) as info:
        read_records(path, require_teacher=True)
    assert (info.value.code, info.value.line) == ("E103", 26)
    assert str(info.value).startswith(f"{path}:26: field 'output' must be a non-empty string")


@pytest.mark.parametrize("task", list(COUNTS))
def test_normalizer_cleans_released_student_outputs(paper_qa, task):
    normalizer = Normalizer()
    cleaned = [normalizer(r.output) for r in records(paper_qa, task, "student")]
    assert all(normalizer.stats[rule] > 0 for rule in RULES), dict(normalizer.stats)
    for text in cleaned:
        assert "<|endoftext|>" not in text and "</s>" not in text
        assert not text.startswith("####") and "nannan" not in text.lower()
    # loops are gone: no sentence repeats within a cleaned output
    for text in cleaned:
        sentences = [" ".join(s.lower().split()) for s in SENTENCE_SPLIT_RE.split(text)]
        assert len(sentences) == len(set(sentences)), text[:200]


@pytest.mark.parametrize("task, accuracy, balanced", [
    ("openbookqa", 0.405, 0.314),
    ("commonsenseqa", 0.375, 0.356),
])
def test_pos_paper_numbers_are_pinned(paper_qa, task, accuracy, balanced):
    refs = records(paper_qa, task, "teacher", skip_invalid=True)
    studs = records(paper_qa, task, "student")
    (row,) = evaluate(refs, studs, features=["pos-paper"])["results"]
    assert row["task"] == task and row["n_outputs"] == COUNTS[task][1] and row["n_students"] == 5
    assert row["accuracy"] == pytest.approx(accuracy, abs=0.02)
    assert row["balanced_accuracy"] == pytest.approx(balanced, abs=0.02)
    assert row["accuracy"] > 0.2  # better than chance over five teachers


def test_rank_a_released_student(paper_qa):
    refs = records(paper_qa, "openbookqa", "teacher")
    model = fit_reference(refs, features="pos-paper")
    student = [r for r in records(paper_qa, "openbookqa", "student") if r.teacher == "llama-3-8b"]
    result = rank_student(model, student)
    # outputs left empty by normalization (only "nannan...") are counted apart, not used as evidence
    assert result["n_outputs"] + result["n_empty"] == len(student) > 20
    assert 0 < result["n_empty"] < 5
    assert sorted(r["teacher"] for r in result["ranking"]) == TEACHERS
    assert sum(r["probability"] for r in result["ranking"]) == pytest.approx(1.0)
    assert result == rank_student(model, student)  # reproducible
    assert "tasks" in result and list(result["tasks"]) == ["openbookqa"]


def test_cli_reports_the_empty_released_output(cli, paper_qa, tmp_path):
    out = tmp_path / "eval.json"
    proc = cli("evaluate", "-r", paper_qa / "commonsenseqa_teacher.jsonl",
               "-s", paper_qa / "commonsenseqa_student.jsonl", "--features", "pos-paper", "-f", "json", "-o", out)
    assert proc.returncode == 2
    assert "commonsenseqa_teacher.jsonl:26: field 'output'" in proc.stderr and "[E103]" in proc.stderr
    assert proc.stdout == "" and not out.exists()


def test_cli_evaluate_on_released_data_with_skip_invalid(cli, paper_qa):
    proc = cli("evaluate", "-r", paper_qa / "commonsenseqa_teacher.jsonl",
               "-s", paper_qa / "commonsenseqa_student.jsonl", "--features", "pos-paper", "-f", "json",
               "--skip-invalid")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["skipped"] == 1
    assert "commonsenseqa_teacher.jsonl:26:" in proc.stderr
    (row,) = result["results"]
    assert row["accuracy"] == pytest.approx(0.375, abs=0.02)
