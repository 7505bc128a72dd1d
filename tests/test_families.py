"""Families of candidate teachers: fitting with them, the family ranking, the hierarchical verdict, --exclude.

On a slice of the 26-candidate AlpacaEval bank (../shared): six candidates in three families, 40 prompts of
each half (the model keeps every candidate's answer to the audit prompts, so the paired tests run).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attribution.api import fit_reference
from attribution.errors import InputError, ModelError
from attribution.families import Hierarchy, read_families
from attribution.io import read_records
from attribution.paired import MidpointTest
from attribution.persistence import load_model
from attribution.result import audit_student

from conftest import SHARED_DATA, run_cli, shared_data

BANK = SHARED_DATA / "alpacaeval_bank"
CANDIDATES = ("gpt-3.5-turbo-0301", "gpt-3.5-turbo-0613", "claude", "claude-instant-1.2", "text_davinci_003",
              "cohere")


@pytest.fixture(scope="module")
def bank_slice(tmp_path_factory) -> dict[str, Path]:
    """References with and without ``family`` fields, the families table, and one student's outputs."""
    bank = shared_data(BANK)
    out = tmp_path_factory.mktemp("bank")
    rows = []
    for half in ("reference", "audit"):
        records = [json.loads(line) for line in (bank / f"teachers_{half}.jsonl").open(encoding="utf-8")]
        ids = sorted({r["id"] for r in records})[:40]
        rows += [r for r in records if r["id"] in ids and r["teacher"] in CANDIDATES]
    audit_ids = {r["id"] for r in rows if r in rows[-6 * 40:]}
    with_family = out / "refs_family.jsonl"
    with_family.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    plain = out / "refs.jsonl"
    plain.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "family"}) + "\n" for r in rows),
                     encoding="utf-8")
    table = out / "families.tsv"
    table.write_text("teacher\tfamily\tprovider\n" + "".join(
        f"{t}\t{f}\tx\n" for t, f in sorted({(r["teacher"], r["family"]) for r in rows})), encoding="utf-8")
    students = [json.loads(line) for line in (SHARED_DATA / "alpacaeval" / "students_audit.jsonl").open()]
    student = out / "student.jsonl"
    student.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "teacher"}) + "\n" for r in students
                               if r["student"] == "alpaca-7b" and r["id"] in audit_ids), encoding="utf-8")
    return {"with_family": with_family, "plain": plain, "table": table, "student": student, "dir": out}


@pytest.fixture(scope="module")
def model(bank_slice):
    return fit_reference(read_records(bank_slice["with_family"], require_teacher=True), n_bootstrap=50)


def test_record_families_and_a_families_table_fit_the_same_model(bank_slice, model, tmp_path):
    """A ``family`` field on each record and ``--families FILE.tsv`` are two spellings of one model."""
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    assert run_cli("fit", bank_slice["with_family"], "-o", first, "--quiet").returncode == 0
    result = run_cli("fit", bank_slice["plain"], "--families", bank_slice["table"], "-o", second, "--quiet")
    assert result.returncode == 0, result.stderr
    # the same model: every array and setting (the files differ only in the reference files they record)
    (meta_a, arrays_a), (meta_b, arrays_b) = (next(iter(load_model(p).models_.values())).get_state()
                                              for p in (first, second))
    assert meta_a == meta_b and arrays_a.keys() == arrays_b.keys()
    assert all(np.array_equal(arrays_a[k], arrays_b[k]) for k in arrays_a)
    loaded = next(iter(load_model(first).models_.values()))
    assert loaded.families_["claude-instant-1.2"] == "claude-1"
    assert loaded.families_ == next(iter(model.models_.values())).families_
    assert sorted(loaded.unlisted_log_proba_) == ["claude-1", "cohere-command", "davinci", "gpt-3.5-turbo"]


def test_family_ranking_sums_its_versions_and_leads_the_version_ranking(model, bank_slice):
    audit = audit_student(model, read_records(bank_slice["student"]))
    families = audit.family_ranking
    assert families["probability"].sum() == pytest.approx(1.0)
    ranking = audit.ranking
    for row in families.itertuples():
        versions = ranking[ranking["family"] == row.family]
        assert sorted(versions["teacher"]) == sorted(row.members)
        assert versions["probability"].sum() == pytest.approx(row.probability)
    # versions are grouped by family, in the family ranking's order
    order = list(dict.fromkeys(ranking["family"]))
    assert order == list(families["family"])
    verdict = audit.data["verdict"]
    assert verdict["best_family"] == families["family"].iloc[0]
    assert verdict["level"] in (None, "family", "teacher")
    if verdict["level"] == "family":
        assert verdict["teacher"] is None and verdict["family"] == verdict["best_family"]
    if verdict["status"] == "attributed":
        assert {"p_paired_cosine", "p_paired_midpoint"} <= set(verdict)
        assert verdict["p_paired"] == max(verdict["p_paired_cosine"], verdict["p_paired_midpoint"])


def test_exclude_drops_a_family_without_refitting(model, bank_slice):
    full = audit_student(model, read_records(bank_slice["student"]))
    top = full.family_ranking["family"].iloc[0]
    without = audit_student(model, read_records(bank_slice["student"]), exclude=[top])
    assert top not in set(without.family_ranking["family"])
    assert not set(without.ranking["teacher"]) & set(full.family_ranking["members"].iloc[0])
    assert without.ranking["probability"].sum() == pytest.approx(1.0)
    assert without.data["verdict"]["best_family"] != top
    # a teacher can be excluded by name too, and the others keep their order within its family
    one = audit_student(model, read_records(bank_slice["student"]), exclude=["claude"])
    assert "claude" not in set(one.ranking["teacher"]) and "claude-instant-1.2" in set(one.ranking["teacher"])


def test_exclude_refuses_unknown_names_and_leaving_one_candidate(model, bank_slice, tmp_path):
    npz = tmp_path / "m.npz"
    model.save(npz)
    result = run_cli(bank_slice["student"], "--model", npz, "--exclude", "gpt-5")
    assert result.returncode == 2 and "[E230]" in result.stderr and "Traceback" not in result.stderr
    result = run_cli(bank_slice["student"], "--model", npz, "--exclude", "gpt-3.5-turbo,claude-1,davinci")
    assert result.returncode == 2 and "[E231]" in result.stderr
    result = run_cli(bank_slice["student"], "--model", npz, "--exclude", "davinci", "--format", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert "davinci" not in {row["family"] for row in document["family_ranking"]}


def test_a_teacher_given_two_families_is_refused_at_its_line(bank_slice, tmp_path):
    lines = bank_slice["with_family"].read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[5])
    record["family"] = "something-else"
    lines[5] = json.dumps(record)
    bad = tmp_path / "refs.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        fit_reference(read_records(bad, require_teacher=True))
    assert info.value.code == "E141" and info.value.line is not None
    table = tmp_path / "f.tsv"
    table.write_text("teacher\tfamily\na\tx\na\ty\n", encoding="utf-8")
    with pytest.raises(InputError) as info:
        read_families(table)
    assert info.value.code == "E141" and info.value.line == 3
    table.write_text("name\tgroup\na\tx\n", encoding="utf-8")
    result = run_cli("fit", bank_slice["plain"], "--families", table, "-o", tmp_path / "m.npz")
    assert result.returncode == 2 and "[E140]" in result.stderr and not (tmp_path / "m.npz").exists()


def test_hierarchy_family_probability_is_the_mean_of_its_versions():
    classes = ["a1", "a2", "a3", "b"]
    h = Hierarchy(classes, {"a1": "a", "a2": "a", "a3": "a", "b": "b"})
    proba = np.array([[0.1, 0.1, 0.1, 0.7], [0.3, 0.3, 0.3, 0.1]])
    family = np.exp(h.family_log_proba(np.log(proba)))
    # a family of three gets the mean of its versions, renormalized: no prior mass for its size
    np.testing.assert_allclose(family, [[0.1 / 0.8, 0.7 / 0.8], [0.3 / 0.4, 0.1 / 0.4]])
    h2 = Hierarchy(classes, {"a1": "a", "a2": "a", "a3": "a", "b": "b"}, exclude=["a2"])
    assert h2.active_classes() == ["a1", "a3", "b"] and h2.families == ["a", "b"]
    with pytest.raises(ModelError) as info:
        Hierarchy(classes, None, exclude=["zz"])
    assert info.value.code == "E230"


def test_midpoint_statistic_is_the_log_odds_beyond_the_answers_midpoint():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(7, 3))
    answers = rng.normal(size=(7, 3, 3))
    test = MidpointTest(["x", "y", "z"])
    test.add(scores[:4], answers[:4])
    test.add(scores[4:], answers[4:])
    i, j = 0, 2
    d = (scores[:, i] - scores[:, j]
         - (answers[:, i, i] - answers[:, i, j] + answers[:, j, i] - answers[:, j, j]) / 2)
    assert test.n == 7
    assert test.sum[i, j] == pytest.approx(d.sum())
    assert test.sum_sq[i, j] == pytest.approx((d ** 2).sum())
    assert test.sum[j, i] == pytest.approx(-d.sum())  # antisymmetric
    # an output that is candidate x's own answer lies on x's side of every midpoint
    own = MidpointTest(["x", "y"])
    answers2 = np.array([[[0.0, -2.0], [-3.0, 0.0]]] * 5) + rng.normal(scale=0.01, size=(5, 2, 2))
    own.add(answers2[:, 0, :], answers2)
    assert own.result("x")["p_paired"] < 0.01


def test_a_control_identical_to_the_student_names_no_one(model, bank_slice, tmp_path):
    """--control: the verdict compares the student's log-odds with the control's on the same prompts; a
    control that is the student itself leaves nothing to attribute, whatever the ranking says."""
    records = read_records(bank_slice["student"])
    alone = audit_student(model, records).data["verdict"]
    against_itself = audit_student(model, records, control=records).data["verdict"]
    assert against_itself["test"] == "control" and against_itself["status"] == "inconclusive"
    assert against_itself["p_control"] == 1.0 and against_itself["n_paired"] == len(records)
    assert alone["test"] != "control"
    npz = tmp_path / "m.npz"
    model.save(npz)
    result = run_cli(bank_slice["student"], "--model", npz, "--control", bank_slice["student"], "-f", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verdict"]["test"] == "control"
    no_ids = tmp_path / "control.jsonl"
    no_ids.write_text(json.dumps({"output": "Sure! Here is a list."}) + "\n", encoding="utf-8")
    result = run_cli(bank_slice["student"], "--model", npz, "--control", no_ids)
    assert result.returncode == 2 and "[E142]" in result.stderr and "control.jsonl:1" in result.stderr


def test_a_control_of_another_model_keeps_the_family_test(model, bank_slice):
    """With a control that differs from the student (guanaco-7b, LLaMA-7B taught by humans, for alpaca-7b, a
    LLaMA-7B taught by text-davinci-003), the test runs on every shared prompt and names at most one family."""
    ids = {r.id for r in read_records(bank_slice["student"])}
    control = [r for r in read_records(SHARED_DATA / "alpacaeval" / "students_audit.jsonl")
               if r.student == "guanaco-7b" and r.id in ids]
    verdict = audit_student(model, read_records(bank_slice["student"]), control=control).data["verdict"]
    assert verdict["test"] == "control" and verdict["n_paired"] == len(control) > 0
    assert verdict["family"] in (None, verdict["best_family"])


def test_fit_add_keeps_the_families_of_the_model(bank_slice, tmp_path):
    """fit --add refits on the model's references plus new ones: families given by a table at the first fit
    are kept, and a table given again names the new teachers' too."""
    lines = bank_slice["plain"].read_text(encoding="utf-8").splitlines()
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old.write_text("".join(line + "\n" for line in lines if '"cohere"' not in line), encoding="utf-8")
    new.write_text("".join(line + "\n" for line in lines if '"cohere"' in line), encoding="utf-8")
    first, added = tmp_path / "m.npz", tmp_path / "m2.npz"
    assert run_cli("fit", old, "--families", bank_slice["table"], "-o", first, "-q").returncode == 0
    result = run_cli("fit", "--add", new, "-m", first, "-r", old, "-o", added, "-q")
    assert result.returncode == 0, result.stderr
    families = next(iter(load_model(added).models_.values())).families_
    assert families["claude-instant-1.2"] == "claude-1" and families["cohere"] == "cohere"
    result = run_cli("fit", "--add", new, "-m", first, "-r", old, "-o", tmp_path / "m3.npz", "-q",
                     "--families", bank_slice["table"])
    assert result.returncode == 0, result.stderr
    assert next(iter(load_model(tmp_path / "m3.npz").models_.values())).families_["cohere"] == "cohere-command"


def test_a_control_verdict_is_described_as_the_control_test_in_the_report(model, bank_slice):
    from attribution.report.method import methodology_blocks

    records = read_records(bank_slice["student"])
    result = audit_student(model, records, control=records).to_dict()
    text = " ".join(str(getattr(block, "text", "")) for block in methodology_blocks(result))
    assert "control test ran on" in text and "--verdict-test" not in text


def test_a_control_pairs_each_prompt_once_and_refuses_two_answers_to_one_id(reference_records, student_records,
                                                                          tmp_path):
    """--control looked the control's answer up by prompt id alone: a student output repeating a prompt id was
    paired with the control's answer again (counted as independent evidence), and two control answers to one id
    were averaged, silently. Now the control test pairs each prompt once (the student's first output on it) and
    warns; a control answering one id twice in a task is refused at the second line, naming the first."""
    import dataclasses

    from attribution.api import rank_student

    model = fit_reference(reference_records, features="pos-paper", n_bootstrap=20)
    science = [r for r in student_records if r.task == "science"]
    control = [dataclasses.replace(r, output=science[(i + 1) % len(science)].output, student="control")
               for i, r in enumerate(science)]  # other outputs, the same prompt ids
    once = rank_student(model, science, control=control)
    assert once["verdict"]["test"] == "control" and once["verdict"]["n_paired"] == len(science)
    assert not any("control test" in w for w in once.get("warnings", []))
    repeated = [*science, dataclasses.replace(science[1], output=science[4].output),
                dataclasses.replace(science[2], output=science[0].output)]
    twice = rank_student(model, repeated, control=control)
    assert twice["n_outputs"] == len(science) + 2  # the repeats count in the ranking
    assert twice["verdict"]["n_paired"] == len(science)  # not in the control test: each prompt paired once
    assert twice["verdict"]["p_control"] == once["verdict"]["p_control"]  # with the first output on it
    warning = next(w for w in twice["warnings"] if "control test" in w)
    assert warning.startswith("2 output(s)") and f"'{science[1].id}'" in warning
    # the control answering one prompt id twice (in one task, or once without a task) is refused
    rows = [r.to_dict() for r in control]
    rows.insert(2, {**rows[0], "output": science[3].output})  # line 3 repeats line 1's id
    path = tmp_path / "control.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    student = tmp_path / "student.jsonl"
    student.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in science), encoding="utf-8")
    result = run_cli(student, "-r", reference_records[0].source, "--control", path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "fitting" not in result.stderr  # refused before any work
    assert f"{path}:3:" in result.stderr and "[E143]" in result.stderr and f"{path}:1" in result.stderr
    other_task = [*control, dataclasses.replace(control[0], task="commonsense")]  # another task: allowed
    assert rank_student(model, science, control=other_task)["verdict"]["n_paired"] == len(science)
    untasked = [*control, dataclasses.replace(control[0], task=None)]  # answers it in every task: refused
    with pytest.raises(InputError) as err:
        rank_student(model, science, control=untasked)
    assert err.value.code == "E143" and err.value.line == control[0].line
