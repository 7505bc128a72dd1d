"""Evidence for a reader (attribution.explain): each template's share in every teacher's references next
to the student's, and informative templates (not punctuation) as the top evidence."""

from __future__ import annotations

import numpy as np
import pytest

from attribution.errors import ModelError
from attribution.explain import is_content, is_informative
from attribution.models import StudentEvidence, TeacherAttributor, load_model, save_model

from test_models import OPEN_SET_3, _rewrite, texts_of


@pytest.fixture(scope="module")
def model(reference_records):
    """PoS 1-4-grams and word n-grams (the default feature set) on the fixture references."""
    return TeacherAttributor(**OPEN_SET_3).fit(texts_of(reference_records), [r.teacher for r in reference_records])


@pytest.fixture(scope="module")
def evidence(model, student_records):
    ev = StudentEvidence(model)
    ev.add(texts_of(student_records))
    return ev


def test_reference_share_counts_each_teachers_outputs_holding_a_feature(model, reference_records):
    share = model.reference_share_
    assert share.shape == (3, model.n_features_in_) and share.dtype == np.float32
    assert share.min() >= 0 and share.max() <= 1
    docs = model.prepare(texts_of(reference_records))
    present = (model.featurize(docs) != 0).toarray()
    teachers = np.array([r.teacher for r in reference_records])
    for k, teacher in enumerate(model.classes_):
        mine = (teachers == teacher) & np.array([len(doc) > 0 for doc in docs])
        np.testing.assert_allclose(share[k], present[mine].mean(axis=0), rtol=1e-6)


def test_templates_show_reference_share_of_every_teacher(model, evidence):
    table = evidence.templates(top=5)
    assert len(table) == 5
    for row in table.itertuples():
        assert sorted(row.reference_share) == model.classes_.tolist()
        column = model.get_feature_names_out().tolist().index(f"{row.block}:{row.feature}")
        assert row.reference_share == {t: pytest.approx(float(model.reference_share_[k, column]))
                                       for k, t in enumerate(model.classes_)}


def test_reference_share_is_saved_and_older_files_load_without_it(model, evidence, student_records, tmp_path):
    save_model(model, tmp_path / "m.npz")
    loaded = load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.reference_share_, model.reference_share_)
    assert loaded.reference_share_.dtype == np.float32
    older = _rewrite(tmp_path / "m.npz", tmp_path / "old.npz", lambda a: a.pop("t0_reference_share"))
    old = load_model(older)
    assert old.reference_share_ is None
    ev = StudentEvidence(old)
    ev.add(texts_of(student_records))
    table = ev.templates(top=3)
    assert table["reference_share"].isna().all()
    assert table.drop(columns="reference_share").equals(evidence.templates(top=3).drop(columns="reference_share"))


def test_shares_outside_zero_one_are_refused(model, tmp_path):
    save_model(model, tmp_path / "m.npz")
    bad = _rewrite(tmp_path / "m.npz", tmp_path / "bad.npz",
                   lambda a: a.update(t0_reference_share=a["t0_reference_share"] * 2 + 0.5))
    with pytest.raises(ModelError) as info:
        load_model(bad)
    assert info.value.code == "E206" and "reference_share" in str(info.value)


@pytest.mark.parametrize(("symbols", "expected"), [
    (["NN", ","], False), ([",", "which"], False), (["*", "*"], False), (["NFP", "NFP"], False),
    (["NN", ":"], False), (["-LRB-", "NN", "-RRB-"], False), ([".", "DT"], False), (["''", "``"], False),
    (["DT", "NN"], True), (["DT", "NN", ","], True), (["if", "you"], True), (["NN", ".", "DT"], True),
    (["3", "%"], False), (["$", "CD", "CD"], True), ([" ", "t", "h"], True), ([" ", "*", "*"], False),
])
def test_informative_templates_need_two_content_symbols(symbols, expected):
    assert is_informative(symbols) is expected


def test_content_symbols():
    assert is_content("NN") and is_content("the") and is_content("n't") and is_content("42") and is_content("é")
    assert not any(is_content(s) for s in [",", ".", ":", "``", "''", "$", "#", "-LRB-", "HYPH", "NFP", "_SP", " ",
                                            "—", "…", "**"])


def test_uninformative_templates_are_left_out_by_default(evidence):
    every = evidence.templates(top=10_000, informative=False)
    shown = evidence.templates(top=10_000)
    teacher = every["teacher"].iloc[0]
    kept = [is_informative(f.split()) and share[teacher] > max(v for t, v in share.items() if t != teacher)
            for f, share in zip(every["feature"], every["reference_share"])]
    assert not all(kept), "the fixture student should use some punctuation or shared templates"
    assert 0 < len(shown) and shown["feature"].tolist() == every["feature"][kept].tolist()
    assert evidence.templates(top=5, informative=False)["feature"].tolist() == every["feature"][:5].tolist()


def test_rank_json_evidence_has_reference_share_and_keeps_the_old_list_on_request(reference_records,
                                                                                  student_records):
    from attribution.api import fit_reference, rank_student

    fitted = fit_reference(reference_records, open_set_min_teachers=3)
    shown = rank_student(fitted, student_records, top_templates=50)
    every = rank_student(fitted, student_records, top_templates=50, informative_evidence=False)
    assert shown["ranking"] == every["ranking"] and shown["verdict"] == every["verdict"]
    assert all(is_informative(row["feature"].split()) for row in shown["evidence"])
    assert not all(is_informative(row["feature"].split()) for row in every["evidence"])
    task_teachers = {t: sorted({r.teacher for r in reference_records if r.task == t}) for t in fitted.models_}
    for row in shown["evidence"]:
        assert sorted(row["reference_share"]) == task_teachers[row["task"]]
        assert 0 <= row["share_of_outputs"] <= 1


def test_shown_evidence_is_written_most_often_by_the_named_teacher(model, evidence):
    """A template weighted towards a teacher that another candidate writes more often contradicts the
    side-by-side table; it still counts in the ranking but is not shown."""
    every = evidence.templates(top=10_000, informative=False)
    teacher = every["teacher"].iloc[0]
    contradicting = [f for f, share in zip(every["feature"], every["reference_share"])
                     if share[teacher] <= max(v for t, v in share.items() if t != teacher)]
    assert contradicting, "the fixture should have weighted templates another teacher writes more often"
    shown = evidence.templates(top=10_000)
    assert not set(contradicting) & set(shown["feature"])
    for share in shown["reference_share"]:
        assert share[teacher] > max(v for t, v in share.items() if t != teacher)
    old = TeacherAttributor(**OPEN_SET_3)  # without reference shares, only the content rule applies
    old.__dict__.update(model.__dict__, reference_share_=None)
    ev = StudentEvidence(old)
    ev.add_scored(*_scored(old, evidence))
    assert len(ev.templates(top=10_000)) >= len(shown)


def _scored(model, evidence):
    docs = evidence.example_docs
    X = model.featurize(docs)
    return docs, X, model.classifier_.predict_proba(X)
