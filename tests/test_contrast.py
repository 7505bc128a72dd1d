"""Evidence that separates the verdict's teacher from its runner-up (attribution.explain.contrast, issue 21
item 2): each template's share of the classifier's log-odds of the one over the other, the three rates
beside it, and a statement of when that evidence is weak; in the JSON result and in the report."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess

import numpy as np
import pytest

from attribution.errors import InputError
from attribution.explain import CONTRAST_COLUMNS, contrast
from attribution.models import StudentEvidence, TeacherAttributor, load_model, save_model
from attribution.report.evidence import contrast_sentence
from attribution.report.validate import check_result

from conftest import REPO, run_cli
from test_models import OPEN_SET_3, _rewrite, texts_of

#: The documented keys of a result's ``contrast`` (docs/json.md).
CONTRAST_KEYS = {"teacher", "runner_up", "runner_up_source", "n_outputs", "log_odds", "mean_log_odds",
                 "shown_log_odds", "shown_share", "n_tested", "n_separating", "alpha", "weak", "weak_reasons",
                 "templates"}


@pytest.fixture(scope="module")
def model(reference_records):
    return TeacherAttributor(**OPEN_SET_3).fit(texts_of(reference_records), [r.teacher for r in reference_records])


def _evidence(model, texts):
    ev = StudentEvidence(model)
    ev.add(texts)
    return ev


def _references_of(records, teacher):
    return [r.output for r in records if r.teacher == teacher]


def test_contrast_log_odds_are_the_classifiers_log_odds_of_teacher_over_runner_up(model, student_records):
    """The stated quantity: the rows are the largest per-template shares of the student's summed log-odds of
    the teacher over the runner-up, which with every other share and the intercepts add up to the log-odds
    the classifier gives, output by output."""
    texts = texts_of(student_records)
    ev = _evidence(model, texts)
    teacher, rival = ev.ranking()["teacher"].iloc[:2]
    found = contrast({None: ev}, teacher, rival, top=10_000, informative=False)
    docs = model.prepare(texts)
    X = model.featurize(docs)
    keep = np.array([not doc.is_empty for doc in docs])
    log_proba = np.log(model.classifier_.predict_proba(X[keep]))
    classes = model.classes_.tolist()
    t, r = classes.index(teacher), classes.index(rival)
    assert found["log_odds"] == pytest.approx(float((log_proba[:, t] - log_proba[:, r]).sum()), rel=1e-9)
    assert found["log_odds"] > 0  # the ranking's first over its second
    coef = model.classifier_.coef_[t] - model.classifier_.coef_[r]
    sums = np.asarray(X[keep].sum(axis=0)).ravel()
    names = model.get_feature_names_out().tolist()
    rows = found["templates"]
    assert rows and [row["log_odds"] for row in rows] == sorted((row["log_odds"] for row in rows), reverse=True)
    for row in rows:
        j = names.index(f"{row['block']}:{row['feature']}")
        assert row["log_odds"] == pytest.approx(coef[j] * sums[j]) and row["log_odds"] > 0
        assert row["teacher_rate"] > row["runner_up_rate"]  # the references side with the teacher
        assert row["student_rate"] == pytest.approx(np.count_nonzero(X[keep][:, j].toarray()) / keep.sum())
    assert found["shown_log_odds"] == pytest.approx(sum(row["log_odds"] for row in rows))


@pytest.fixture(scope="module")
def demo_result(tmp_path_factory):
    """``rank`` of the bundled demo's SmolLM2 student (JSON), through the CLI."""
    demo = REPO / "data" / "demo"
    out = tmp_path_factory.mktemp("demo") / "r.json"
    res = run_cli("rank", demo / "student_smollm2-135m.jsonl", "--reference", demo / "teachers.jsonl", "-o", out,
                  "-q")
    assert res.returncode == 0, res.stderr
    return out


def test_demo_student_is_separating_evidence(demo_result):
    """The demo's SmolLM2 student (99 outputs, 300 references per teacher) against its paired runner-up:
    templates separate the two, references and student alike, and the sentence says so."""
    found = json.loads(demo_result.read_text())["contrast"]
    assert not found["weak"] and found["weak_reasons"] == []
    separating = [row for row in found["templates"] if row["separates"]]
    assert found["n_separating"] == len(separating) >= 1
    for row in separating:
        assert row["p_references"] < found["alpha"] and row["p_student"] < found["alpha"]
        assert abs(row["student_rate"] - row["teacher_rate"]) < abs(row["student_rate"] - row["runner_up_rate"])
    sentence = contrast_sentence(found)
    assert "Separating evidence" in sentence and "Weak evidence" not in sentence
    assert f"{found['n_separating']} of the {len(found['templates'])} templates" in sentence
    assert "the references tell the two apart on them" in sentence and "not tested" not in sentence


def test_few_references_are_weak_evidence(model, reference_records):
    """24 references per teacher cannot show, at the family-wise level over every template tested, that
    a template separates two teachers, even for a student writing exactly as one of them does."""
    ev = _evidence(model, _references_of(reference_records, "chatty"))
    found = contrast({None: ev}, "chatty", "formal")
    assert found["log_odds"] > 0 and found["templates"]
    assert found["weak"] and found["n_separating"] == 0
    assert all(row["p_references"] >= found["alpha"] for row in found["templates"])
    assert f"the references do not tell the two apart on {len(found['templates'])}," in found["weak_reasons"][0]
    assert "Weak evidence" in contrast_sentence(found)


def test_two_outputs_are_weak_evidence(model, reference_records):
    """Two outputs cannot show, at the family-wise level over every template tested, that a student uses a
    template more often than the runner-up's references: the report says the evidence is weak, and why."""
    ev = _evidence(model, _references_of(reference_records, "chatty")[:2])
    found = contrast({None: ev}, "chatty", "formal")
    assert found["weak"] and found["n_separating"] == 0
    assert any(f"at {found['alpha']} over {found['n_tested']} templates tested" in r for r in found["weak_reasons"])
    sentence = contrast_sentence(found)
    assert "Weak evidence" in sentence and "Separating evidence" not in sentence


def test_a_teacher_the_classifier_does_not_favour_is_weak_evidence(model, reference_records):
    """Contrasting 'chatty' with 'formal' on outputs written by 'formal': the summed log-odds is against
    'chatty', and the reason says so with its number."""
    ev = _evidence(model, _references_of(reference_records, "formal"))
    found = contrast({None: ev}, "chatty", "formal")
    assert found["log_odds"] < 0 and found["weak"] and found["shown_share"] is None
    assert any("not in chatty's favour" in r for r in found["weak_reasons"])


def test_a_model_file_without_rates_or_counts_says_what_it_cannot_check(model, reference_records, tmp_path):
    """A model saved before the reference counts were kept still judges templates on the student's side
    (no p_references); without the rates nothing can be checked, and the evidence is called weak."""
    path = tmp_path / "m.npz"
    save_model(model, path)
    assert np.array_equal(load_model(path).reference_count_, model.reference_count_)
    assert model.reference_count_.tolist() == [24, 24, 24]
    old = tmp_path / "old.npz"
    _rewrite(path, old, lambda arrays: arrays.pop(next(k for k in arrays if k.endswith("reference_count"))))
    without_counts = load_model(old)
    assert without_counts.reference_count_ is None
    texts = _references_of(reference_records, "chatty")
    found = contrast({None: _evidence(without_counts, texts)}, "chatty", "formal")
    assert found["templates"] and all(row["p_references"] is None for row in found["templates"])
    assert found["n_separating"] >= 1  # on the student's side alone, and the report says the references are not
    sentence = contrast_sentence(found)
    assert "Separating evidence" in sentence and "whether the references tell the two apart is not tested" in sentence
    assert "the references tell the two apart on them" not in sentence
    no_rates = TeacherAttributor(**OPEN_SET_3)
    no_rates.__dict__.update(model.__dict__, reference_share_=None)
    found = contrast({None: _evidence(no_rates, texts)}, "chatty", "formal")
    assert found["weak"] and any("no reference rates" in r for r in found["weak_reasons"])


def test_demo_contrast_names_the_verdicts_teacher_and_runner_up(demo_result, tmp_path):
    """On the bundled demo, the JSON's contrast is between the verdict's teacher and its paired runner-up,
    with the documented keys; every shown template favours the teacher by the stated quantity, and the
    references of the two tell them apart on the separating ones."""
    out = demo_result
    result = json.loads(out.read_text())
    verdict, found = result["verdict"], result["contrast"]
    assert set(found) == CONTRAST_KEYS
    assert found["teacher"] == (verdict["teacher"] or verdict["best_candidate"])
    assert verdict["runner_up"] and found["runner_up"] == verdict["runner_up"]
    assert found["runner_up_source"] == "paired test"
    assert found["templates"] and all(set(row) == set(CONTRAST_COLUMNS) for row in found["templates"])
    for row in found["templates"]:
        assert row["log_odds"] > 0 and row["teacher_rate"] > row["runner_up_rate"]
        if row["separates"]:
            assert row["p_references"] < found["alpha"] and row["p_student"] < found["alpha"]
    assert found["weak"] == (found["n_separating"] == 0)
    check_result(result)
    md = tmp_path / "r.md"
    assert run_cli("report", out, "-o", md, "-q").returncode == 0
    text = md.read_text()
    assert f"### What sets {found['teacher']} apart from {found['runner_up']}" in text
    assert "| p refs | p student | separates |" in text
    assert ("Weak evidence" in text) == found["weak"]


def _result(found: dict) -> dict:
    return {"n_outputs": found["n_outputs"], "ranking": [{"teacher": "chatty", "probability": 0.6},
                                                         {"teacher": "formal", "probability": 0.4}],
            "verdict": {"status": "attributed", "teacher": "chatty", "best_candidate": "chatty",
                        "runner_up": "formal", "test": "paired", "p_value": 0.001, "p_paired": 0.001,
                        "alpha": 0.05, "n_paired": found["n_outputs"]},
            "contrast": found}


@pytest.mark.parametrize("weak", [False, True])
def test_report_shows_the_contrast_and_says_when_it_is_weak(model, reference_records, demo_result, weak):
    """HTML and Markdown show the contrast table under the verdict, with the weak-evidence wording (a
    warning) only for weak evidence: two outputs of the fixture corpus, against the demo's student."""
    from attribution.report import render_html, render_markdown

    if weak:
        texts = _references_of(reference_records, "chatty")[:2]
        result = _result(json.loads(json.dumps(contrast({None: _evidence(model, texts)}, "chatty", "formal"))))
    else:
        result = json.loads(demo_result.read_text())
    found = result["contrast"]
    assert found["weak"] is weak
    check_result(result)
    html = render_html(result, {}, date="2026-01-02")
    md = render_markdown(result, {}, date="2026-01-02")
    heading = f"What sets {found['teacher']} apart from {found['runner_up']}"
    for text in (html, md):
        assert heading in text
        assert ("Weak evidence" in text) is weak and ("Separating evidence" in text) is not weak
        assert found["templates"][0]["feature"] in text
    section = html.split(heading)[1].split("<h2")[0]
    assert ('class="warning"' in section) is weak
    assert "The verdict names no teacher" not in md
    result["verdict"] = {**result["verdict"], "status": "inconclusive", "teacher": None}
    assert f"compare the top-ranked candidate, {found['teacher']}, with {found['runner_up']} only" in \
        render_markdown(result, {}, date="2026-01-02")


def test_a_malformed_contrast_is_refused(model, reference_records):
    found = contrast({None: _evidence(model, _references_of(reference_records, "chatty"))}, "chatty", "formal")
    bad = _result(json.loads(json.dumps(found)))
    bad["contrast"] = copy.deepcopy(bad["contrast"])
    bad["contrast"]["templates"][0]["separates"] = "yes"
    with pytest.raises(InputError) as err:
        check_result(bad)
    assert err.value.code == "E604" and "separates" in str(err.value)


def test_python_result_exposes_the_contrast(reference_records, student_records):
    """``audit_student(...).contrast``: the JSON's rows as a frame, its summary in ``attrs``; multi-task
    rows name their task."""
    from attribution.api import fit_reference
    from attribution.result import audit_student

    fitted = fit_reference(reference_records, open_set_min_teachers=3)
    audited = audit_student(fitted, student_records)
    found = audited.to_dict()["contrast"]
    frame = audited.contrast
    assert list(frame.columns) == CONTRAST_COLUMNS and len(frame) == len(found["templates"]) > 0
    assert frame.attrs["teacher"] == found["teacher"] and frame.attrs["weak"] == found["weak"]
    assert set(frame["task"]) <= set(fitted.models_)
    assert (frame["log_odds"] > 0).all()


def test_runner_up_family_stands_for_its_best_ranked_version_and_ranking_is_the_fallback(model, student_records):
    """A verdict between families names a family as runner-up: the contrast takes its best-ranked version.
    Without a runner-up (the unlisted-teacher test decided), the ranking's next teacher, said so."""
    from attribution.explain import verdict_contrast
    from attribution.verdicts import Verdict

    evidence = {None: _evidence(model, texts_of(student_records))}
    ranking = [{"teacher": "chatty", "family": "A"}, {"teacher": "terse", "family": "B"},
               {"teacher": "formal", "family": "B"}]
    found = verdict_contrast(evidence, Verdict.from_dict({"teacher": None, "best_candidate": "chatty",
                                                          "runner_up": "B", "test": "paired"}), ranking)
    assert (found["teacher"], found["runner_up"], found["runner_up_source"]) == ("chatty", "terse", "paired test")
    found = verdict_contrast(evidence, Verdict.from_dict({"teacher": "chatty", "runner_up": None, "test": "unlisted"}),
                             list(reversed(ranking)))
    assert (found["runner_up"], found["runner_up_source"]) == ("formal", "ranking")
    assert verdict_contrast(evidence, Verdict.from_dict({"teacher": "chatty", "runner_up": "B"}), ranking,
                            top=0) is None


@pytest.mark.skipif(shutil.which("chromium") is None or shutil.which("pdftotext") is None,
                    reason="headless Chromium and pdftotext (poppler-utils) are needed to print and read the PDF")
def test_pdf_report_prints_the_contrast_and_its_weak_evidence(model, reference_records, tmp_path):
    from attribution.report import write_report

    texts = _references_of(reference_records, "chatty")[:2]
    res = _result(json.loads(json.dumps(contrast({None: _evidence(model, texts)}, "chatty", "formal"))))
    path = write_report(res, tmp_path / "r.pdf", date="2026-01-02")
    text = " ".join(subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True,
                                   check=True).stdout.split())
    assert "What sets chatty apart from formal" in text and "Weak evidence: none of the" in text
    assert res["contrast"]["templates"][0]["feature"] in text
