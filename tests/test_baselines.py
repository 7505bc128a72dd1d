"""Baselines without model weights: id alignment, cosine/ROUGE, options, errors, CLI plumbing.

The model-backed baselines (BERTScore, embeddings, perplexity) are tested with the real
offline models in ``test_baselines_models.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attribution.baselines import BASELINES, BaselineError, run_baseline
from attribution.baselines._common import candidate_sets
from attribution.errors import AttributionError
from attribution.evaluation import evaluate_baseline
from attribution.io import Record, read_records

from conftest import PAPER_QA, CliResult, needs_shared, run_cli

REPO = Path(__file__).resolve().parents[1]
needs_paper_qa = needs_shared(PAPER_QA)

SENT = "the cat sat on the warm mat near the kitchen door"
OTHER = "stock markets fell sharply after the central bank raised interest rates"


def ref(teacher: str, id_: str | None, text: str, prompt: str | None = None) -> Record:
    return Record(output=text, id=id_, teacher=teacher, prompt=prompt)


@pytest.fixture
def refs() -> list[Record]:
    # alpha's reference for q1 repeats the student; beta's q1 is unrelated, but beta's q2 repeats it.
    return [ref("alpha", "q1", SENT), ref("alpha", "q2", OTHER),
            ref("beta", "q1", OTHER), ref("beta", "q2", SENT)]


def test_import_does_not_load_torch():
    code = "import sys, attribution.baselines, attribution.baselines.similarity; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_cosine_aligns_by_id_not_best_match(refs):
    student = [Record(output=SENT, id="q1", teacher="alpha")]
    result = run_baseline("cosine", refs, student)
    assert result.classes == ["alpha", "beta"]
    assert result.scores[0, 0] == pytest.approx(1.0)
    assert result.scores[0, 1] < 0.3  # beta's q1, not beta's identical q2
    assert result.meta["n_pairs_id"] == 2 and result.meta["n_pairs_best_match"] == 0
    best = run_baseline("cosine", refs, student, alignment="best")
    assert best.scores[0, 1] == pytest.approx(1.0)


def test_alignment_ignores_row_order(refs):
    students = [Record(output=SENT, id="q1", teacher="alpha"), Record(output=OTHER, id="q2", teacher="alpha")]
    forward = run_baseline("rouge", refs, students)
    backward = run_baseline("rouge", refs[::-1], students[::-1])
    np.testing.assert_allclose(forward.scores, backward.scores[::-1])
    # student q2 (OTHER) matches alpha's q2 (OTHER) exactly, beta's q2 is SENT
    assert forward.scores[1, 0] == pytest.approx(1.0) and forward.scores[1, 1] < 0.3


def test_missing_id_falls_back_to_best_match_and_says_so(refs):
    refs = refs + [ref("alpha", "q3", OTHER)]  # only alpha has q3
    student = [Record(output=SENT, id="q3", teacher="beta")]
    auto = run_baseline("cosine", refs, student)
    assert auto.meta["n_students_best_match"] == 1 and "best match" in auto.meta["note"]
    assert auto.scores[0].tolist() == pytest.approx([1.0, 1.0])  # both best-matched: SENT exists for both
    mixed = run_baseline("cosine", refs, student, alignment="id")
    assert mixed.meta["n_pairs_id"] == 1 and mixed.meta["n_pairs_best_match"] == 1
    assert mixed.scores[0, 0] < 0.3 and mixed.scores[0, 1] == pytest.approx(1.0)


def test_prompt_aligns_when_ids_are_absent():
    refs = [ref("alpha", None, SENT, prompt="P1"), ref("alpha", None, OTHER, prompt="P2"),
            ref("beta", None, OTHER, prompt="P1"), ref("beta", None, SENT, prompt="P2")]
    sets, info = candidate_sets(refs, [Record(output=SENT, prompt="P1")], ["alpha", "beta"])
    assert [s.tolist() for s in sets[0]] == [[0], [2]] and info["n_pairs_id"] == 2


def test_rouge_variants_and_normalization(refs):
    student = [Record(output="#### " + SENT + " </s>", id="q1", teacher="alpha")]
    raw = run_baseline("rouge1", refs, student, normalize=False)
    clean = run_baseline("rouge1", refs, student)
    assert clean.scores[0, 0] == pytest.approx(1.0) and raw.scores[0, 0] < 1.0
    assert run_baseline("rouge2", refs, student).meta["rouge_type"] == "rouge2"
    assert run_baseline("rouge", refs, student).meta["rouge_type"] == "rougeL"


def test_evaluate_baseline_rows_match_evaluation(refs):
    students = [Record(output=SENT, id="q1", teacher="alpha", task="t"),
                Record(output=SENT, id="q2", teacher="beta", task="t")]
    refs = [Record(output=r.output, id=r.id, teacher=r.teacher, task="t") for r in refs]
    [row] = evaluate_baseline("cosine", refs, students)
    assert row["features"] == "cosine" and row["task"] == "t"
    assert row["accuracy"] == 1.0 and row["n_students"] == 2 and row["student_accuracy"] == 1.0
    assert row["meta"]["alignment"] == "auto"


@pytest.mark.parametrize("call, code", [
    (lambda r, s: run_baseline("bleu", r, s), "E502"),
    (lambda r, s: run_baseline("perplexity", r, s), "E503"),
    (lambda r, s: run_baseline("perplexity", r, s, teacher_models=["alpha=smollm2"]), "E503"),
    (lambda r, s: run_baseline("perplexity", r, s, teacher_models=["alpha:smollm2"]), "E504"),
    (lambda r, s: run_baseline("cosine", r, s, alignment="position"), "E507"),
    (lambda r, s: run_baseline("cosine", r, []), "E509"),
    (lambda r, s: run_baseline("cosine", r, "a text"), "E508"),
    (lambda r, s: run_baseline("cosine", [Record(output="x")], s), "E510"),
    (lambda r, s: evaluate_baseline("cosine", r, [Record(output="x")]), "E511"),
])
def test_bad_requests_raise_coded_errors(refs, call, code):
    with pytest.raises(BaselineError) as info:
        call(refs, [Record(output=SENT, id="q1")])
    assert info.value.code == code and isinstance(info.value, (AttributionError, ValueError))
    assert str(info.value).endswith(f"[{code}]")


def test_every_documented_baseline_name_is_registered():
    assert {"bertscore", "embedding", "perplexity", "perplexity-normalized", "cosine", "rouge"} <= set(BASELINES)


def _cli(*args: str) -> CliResult:
    return run_cli("baseline", *args)


def test_cli_unknown_baseline_exits_2(tmp_path):
    out = _cli("bleu", "-r", str(tmp_path / "r.jsonl"), "-s", str(tmp_path / "s.jsonl"))
    assert out.returncode == 2 and "E502" in out.stderr and "Traceback" not in out.stderr


def test_cli_json_is_stable_and_on_stdout(tmp_path, refs):
    r, s = tmp_path / "refs.jsonl", tmp_path / "students.jsonl"
    r.write_text("".join(json.dumps(x.to_dict()) + "\n" for x in refs))
    s.write_text(json.dumps({"id": "q1", "teacher": "alpha", "output": SENT}) + "\n"
                 + json.dumps({"id": "q2", "teacher": "beta", "output": SENT}) + "\n")
    first = _cli("cosine", "-r", str(r), "-s", str(s), "--format", "json")
    second = _cli("cosine", "-r", str(r), "-s", str(s), "--format", "json", "-q")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    doc = json.loads(first.stdout)
    assert doc["results"][0]["accuracy"] == 1.0 and doc["signature"]["baseline"] == "cosine"
    unlabelled = tmp_path / "u.jsonl"
    unlabelled.write_text(json.dumps({"id": "q1", "student": "mystery", "output": SENT}) + "\n")
    pred = json.loads(_cli("cosine", "-r", str(r), "-s", str(unlabelled), "-f", "json", "-q").stdout)
    assert pred["students"]["mystery"]["verdict"] == "alpha"


def test_cli_perplexity_without_models_exits_2(tmp_path, refs):
    r = tmp_path / "refs.jsonl"
    r.write_text("".join(json.dumps(x.to_dict()) + "\n" for x in refs))
    out = _cli("perplexity", "-r", str(r), "-s", str(r), "-t", "alpha=smollm2")
    assert out.returncode == 2 and "E503" in out.stderr and "beta" in out.stderr


@needs_paper_qa
def test_cosine_on_released_outputs_pairs_every_student_with_every_teacher():
    refs = read_records(PAPER_QA / "openbookqa_teacher.jsonl", require_teacher=True, skip_invalid=True)
    studs = read_records(PAPER_QA / "openbookqa_student.jsonl", skip_invalid=True)[:60]
    [row] = evaluate_baseline("cosine", refs, studs)
    assert row["n_outputs"] == 60 and 0.0 <= row["accuracy"] <= 1.0
    assert row["meta"]["n_pairs_id"] + row["meta"]["n_pairs_best_match"] == 60 * 5


def test_cli_baseline_is_the_api(reference_path, labelled_path):
    """``baseline NAME`` on labelled students prints the API's evaluation of the selected students."""
    from attribution.evaluation import evaluate, select_students

    out = _cli("cosine", "-r", str(reference_path), "-s", str(labelled_path), "--limit", "10", "--seed", "3",
               "--format", "json", "--quiet")
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    students, _ = select_students(read_records(labelled_path), limit=10, random_state=3)
    expected = evaluate(read_records(reference_path), students, features=(), baselines=["cosine"], random_state=3)
    assert printed["results"] == json.loads(json.dumps(expected.to_dict()["results"]))
    assert printed["signature"]["n_students"] == 10 and printed["skipped"] == 0
