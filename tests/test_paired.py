"""The paired, per-prompt test behind verdicts when the teachers answered the student's prompts.

Unit tests check the arithmetic against direct computations (dense cosines, scipy's paired
t-test); the end-to-end tests use real distilled LLMs (../shared/data/alpacaeval) and skip
without them.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

from attribution.api import describe_verdict, fit_reference, rank_student, verdict
from attribution.errors import ModelError
from attribution.inference import hierarchical_verdict
from attribution.io import read_records
from attribution.models import load_model, save_model
from attribution.paired import PairedReferences, PairedTest
from attribution.verdicts import Verdict, VerdictRule

from conftest import ALPACAEVAL, shared_data

CLASSES = ["a", "b", "c"]


def _dense_scores(T: np.ndarray, x: np.ndarray) -> np.ndarray:
    c = T.mean(axis=0)
    Tc, xc = T - c, x - c
    denominator = np.linalg.norm(Tc, axis=1) * np.linalg.norm(xc)
    return np.divide(Tc @ xc, denominator, out=np.zeros(len(T)), where=denominator > 1e-12)


def test_scores_are_cosines_of_deviations_from_the_teachers_mean():
    rng = np.random.default_rng(0)
    X = sp.random(12, 40, density=0.3, random_state=1, format="csr")  # 4 prompts x 3 teachers
    teachers = CLASSES * 4
    ids = [f"p{i // 3}" for i in range(12)]
    paired = PairedReferences.from_references(X, teachers, ids, CLASSES)
    assert paired is not None and len(paired) == 4
    student = sp.csr_matrix(rng.random((5, 40)) * (rng.random((5, 40)) < 0.3))
    student_ids = ["p2", "nope", "p0", None, "p3"]
    rows, scores = paired.scores(student, student_ids)
    assert rows.tolist() == [0, 2, 4]
    laid_out = paired.scores_per_output(student, student_ids)
    assert np.isnan(laid_out[[1, 3]]).all() and np.array_equal(laid_out[rows], scores)
    for n, row in enumerate(rows):
        p = int(student_ids[row][1])
        answers = X[p * 3:(p + 1) * 3].toarray().astype(np.float32).astype(float)  # stored at float32 precision
        expected = _dense_scores(answers, student[row].toarray().ravel())
        np.testing.assert_allclose(scores[n], expected, atol=1e-12)


def test_only_prompts_every_teacher_answered_are_kept_first_answer_wins():
    X = sp.csr_matrix(np.arange(1, 15, dtype=float).reshape(7, 2))
    teachers = ["a", "b", "c", "a", "b", "a", "a"]
    ids = ["p", "p", "p", "q", "q", "p", None]
    paired = PairedReferences.from_references(X, teachers, ids, CLASSES)
    assert paired.prompt_ids.tolist() == ["p"]  # q lacks c
    np.testing.assert_array_equal(paired.matrix.toarray(), X[:3].toarray())  # row 5 (a second 'a' on p) ignored
    assert PairedReferences.from_references(X, teachers, [None] * 7, CLASSES) is None


def test_paired_test_matches_scipy_and_is_an_intersection_union_test():
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(50, 3)) + np.array([0.5, 0.2, 0.0])
    test = PairedTest(CLASSES)
    test.add(scores[:20])
    test.add(scores[20:])
    for other in (1, 2):
        expected = stats.ttest_rel(scores[:, 0], scores[:, other], alternative="greater").pvalue
        assert test.p_value("a", CLASSES[other]) == pytest.approx(expected, rel=1e-9)
    result = test.result("a")
    assert result["p_paired"] == pytest.approx(max(test.p_value("a", "b"), test.p_value("a", "c")))
    assert result["runner_up"] == "b" and result["n_paired"] == 50
    np.testing.assert_allclose(list(result["paired_score"].values()), scores.mean(axis=0))
    assert test.result("b")["p_paired"] > 0.5  # "b" does not beat "a"
    with_gaps = PairedTest(CLASSES)
    with_gaps.add(np.vstack([scores, np.full((4, 3), np.nan)]))  # outputs without paired answers
    assert with_gaps.n == 50 and with_gaps.p_value("a", "b") == pytest.approx(test.p_value("a", "b"), rel=1e-12)
    small = PairedTest(CLASSES)
    small.add(scores[:2])
    assert small.result("a") is None


def test_verdict_rules_combine_the_paired_and_unlisted_tests():
    paired = {"p_paired": 0.001, "runner_up": "b", "n_paired": 40, "paired_score": {"a": 0.1, "b": 0.0}}
    either = verdict("a", [0.5], [paired])  # default: either test, each at alpha / 2 (Bonferroni)
    assert (either.status, either.teacher, either.test) == ("attributed", "a", "paired or unlisted")
    assert either.p_value == pytest.approx(0.002)
    assert verdict("a", [0.5], [{**paired, "p_paired": 0.03}]).status == "inconclusive"  # 0.06 >= 0.05
    assert verdict("a", [0.01], [{**paired, "p_paired": 0.9}]).status == "attributed"  # unlisted suffices
    only = verdict("a", [0.5], [paired], tests="paired")
    assert (only.status, only.test, only.p_value) == ("attributed", "paired", 0.001)
    both = verdict("a", [0.5], [paired], tests="both")
    assert (both.status, both.test, both.p_value) == ("inconclusive", "paired and unlisted", 0.5)
    assert verdict("a", [None], [paired], tests="both").status == "unavailable"  # < 4 candidates
    assert verdict("a", [0.01], [paired], tests="unlisted").p_value == 0.01
    old = verdict("a", [0.01], [None])  # no paired answers: the unlisted test alone, at alpha
    assert (old.status, old.test, old.p_value) == ("attributed", "unlisted", 0.01)
    none = verdict("a", [None], [None])
    assert none.status == "unavailable" and none.teacher is None
    mixed = verdict("a", [0.01, 0.3], [paired, None])  # every task must pass
    assert (mixed.status, mixed.test, mixed.p_value) == ("inconclusive", "paired or unlisted; unlisted", 0.3)
    assert "paired prompts" in describe_verdict(either) and "inconclusive" in describe_verdict(both)
    assert describe_verdict(None).startswith("No verdict")
    with pytest.raises(ModelError):
        verdict("a", [0.5], [paired], tests="any")


def test_a_verdict_where_no_test_ran_is_unavailable_with_one_sentence_under_every_rule(reference_records,
                                                                                       student_records, capsys):
    """The fixture's student: no teacher answered its prompts, 3 candidates (no unlisted-teacher test). Under
    'paired' and 'both' the sentence read "inconclusive: ... (p = n/a)" for an unavailable verdict."""
    from attribution.cli import main

    model = fit_reference(reference_records, features="pos-paper")
    found = {}
    for rule in VerdictRule.CHOICES:
        result = rank_student(model, student_records, tests=rule)
        verdicts = [result["verdict"], *(task["verdict"] for task in result["tasks"].values())]
        assert all(v["status"] == "unavailable" and v["p_value"] is None and v["teacher"] is None for v in verdicts)
        found[rule] = {describe_verdict(v) for v in verdicts}
    default = found.pop("either")
    assert len(default) == 1 and next(iter(default)).startswith("unavailable: no test could run")
    assert found == {rule: default for rule in found}, found
    capsys.readouterr()
    assert main([str(student_records[0].source), "-r", str(reference_records[0].source), "--verdict-test",
                 "both", "--features", "pos-paper", "-q"]) == 0
    assert f"verdict: {next(iter(default))}" in capsys.readouterr().out.splitlines()
    # a test ran, but not one the rule accepts (both tests; fewer than 4 candidates): unavailable, p named
    paired = {"p_paired": 0.001, "runner_up": "b", "n_paired": 40, "paired_score": {"a": 0.1, "b": 0.0}}
    partial = describe_verdict(verdict("a", [None], [paired], tests="both"))
    assert partial.startswith("unavailable: no test that the rule") and "paired p = 0.001" in partial
    control = hierarchical_verdict("A", "a1", [None], [None], [None], grouped=True, family_size=2,
                                   tests=VerdictRule("control"))
    assert control.status == "unavailable"
    assert describe_verdict(control).startswith("unavailable: no test could run (the control answered none")


def test_a_verdict_reads_back_from_its_json_and_its_rule_describes_itself():
    paired = {"p_paired": 0.001, "runner_up": "b", "n_paired": 40, "paired_score": {"a": 0.1, "b": 0.0},
              "p_paired_cosine": 0.001, "p_paired_midpoint": 0.0005}
    sibling = {"p_paired": 0.2, "runner_up": "a2", "n_paired": 40, "paired_score": {"a1": 0.1, "a2": 0.05}}
    for v in (verdict("a", [0.5], [paired]), verdict("a", [None], [None]),
              hierarchical_verdict("A", "a1", [0.5], [paired], [sibling], grouped=True, family_size=2),
              hierarchical_verdict("A", "a1", [None], [paired], [sibling], grouped=True, family_size=2,
                                   tests=VerdictRule("control"))):
        assert Verdict.from_dict(v.to_dict()) == v and Verdict.from_dict(v.to_dict()).to_dict() == v.to_dict()
    family_only = hierarchical_verdict("A", "a1", [0.5], [paired], [sibling], grouped=True, family_size=2)
    assert (family_only.level, family_only.family, family_only.teacher) == ("family", "A", None)
    assert family_only.to_dict()["teacher_test"]["p_paired"] == 0.2
    control = hierarchical_verdict("A", "a1", [None], [paired], [sibling], grouped=True, family_size=2,
                                   tests=VerdictRule("control"))
    assert control.to_dict()["test"] == "control" and control.to_dict()["p_control"] == 0.001
    # typed fields, not the test string: Bonferroni halves each test's level under 'either' only
    either = verdict("a", [0.04], [{**paired, "p_paired": 0.04}])
    assert either.uses_paired and either.uses_unlisted and either.test_level == 0.025
    assert not either.paired_passed and either.status == "inconclusive"  # 2 x 0.04 = 0.08
    assert verdict("a", [0.04], [paired], tests="both").test_level == 0.05
    assert "twice the smaller" in VerdictRule("either").description
    assert "alpha = 0.01" in VerdictRule("both", 0.01).description
    assert VerdictRule.of(VerdictRule("both", 0.01)).alpha == 0.01
    with pytest.raises(ModelError):
        VerdictRule.of(VerdictRule("both", 0.01), alpha=0.2)  # two alphas for one rule
    with pytest.raises(ModelError):
        VerdictRule("either", alpha=1.5)


# -- real distilled LLMs ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def alpacaeval_subset():
    """Setting B on a subset: the teachers' reference outputs and their answers to 60 audit prompts,
    and two students' outputs on those prompts."""
    shared_data(ALPACAEVAL / "students_audit.jsonl")
    audit = read_records(ALPACAEVAL / "teachers_audit.jsonl", require_teacher=True)
    prompts = sorted({r.id for r in audit})[:60]
    keep = set(prompts)
    references = read_records(ALPACAEVAL / "teachers_reference.jsonl", require_teacher=True)
    references = [r for r in references if r.id in set(sorted({r.id for r in references})[:80])]
    students = [r for r in read_records(ALPACAEVAL / "students_audit.jsonl") if r.id in keep]
    model = fit_reference(references + [r for r in audit if r.id in keep])
    return model, students


@pytest.mark.slow
def test_real_students_paired_verdict(alpacaeval_subset, tmp_path):
    model, students = alpacaeval_subset
    claude = [r for r in students if r.student == "claude2-alpaca-13b"]
    result = rank_student(model, claude)
    v = result["verdict"]
    assert v["test"] == "paired or unlisted" and v["n_paired"] == len(claude)
    assert (v["status"], v["teacher"]) == ("attributed", "claude-2")
    assert v["paired_score"]["claude-2"] == max(v["paired_score"].values())
    human = rank_student(model, [r for r in students if r.student == "guanaco-33b"])["verdict"]
    assert human["status"] != "attributed"  # no candidate taught it
    # the paired answers survive saving, and the loaded model gives the same JSON
    path = tmp_path / "m.npz"
    save_model(model, path)
    again = rank_student(load_model(path), claude)
    assert json.dumps(again, sort_keys=True) == json.dumps(result, sort_keys=True)
    # without prompt ids (or with other prompts) the old unlisted-teacher test decides
    unpaired = rank_student(model, [r.__class__(output=r.output) for r in claude])["verdict"]
    assert unpaired["test"] == "unlisted" and unpaired["n_paired"] == 0
