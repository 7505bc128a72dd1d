"""TeacherAttributor, StudentEvidence and MultiTaskAttributor on the fixture corpus; safe save and load."""

from __future__ import annotations

import io
import json
import pickle
import zipfile

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from attribution import __version__
from attribution.errors import ModelError, NotFittedError
from attribution.models import (
    MODEL_FORMAT,
    MultiTaskAttributor,
    StudentEvidence,
    TeacherAttributor,
    load_model,
    save_model,
    unlisted_p_value,
)

TEACHERS = ["chatty", "formal", "terse"]


def texts_of(records):
    return [r.output for r in records]


#: The fixture corpus has 3 teachers; the unlisted-teacher test needs 4 by default, so the tests of its
#: mechanics lower the bar explicitly.
OPEN_SET_3 = {"open_set_min_teachers": 3}


@pytest.fixture(scope="module")
def pos_model(reference_records):
    """The paper's preset on all reference outputs (both tasks together)."""
    return TeacherAttributor(features="pos-paper", **OPEN_SET_3).fit(texts_of(reference_records),
                                                                     [r.teacher for r in reference_records])


@pytest.fixture(scope="module")
def multi_model(reference_records):
    """The default feature set, one model per task."""
    return MultiTaskAttributor(**OPEN_SET_3).fit(texts_of(reference_records), [r.teacher for r in reference_records],
                                                 [r.task for r in reference_records])


def test_unlisted_teacher_test_needs_four_teachers_by_default(reference_records, student_records):
    model = TeacherAttributor(features="pos-paper").fit(texts_of(reference_records),
                                                        [r.teacher for r in reference_records])
    assert model.open_set_min_teachers == 4 and model.unlisted_log_proba_ == {}
    assert model.rank(texts_of(student_records)).attrs["p_unlisted"] is None
    # a fourth teacher (here: the formal teacher's outputs relabelled by task) switches it on
    four = [r.teacher if r.teacher != "formal" else f"formal-{r.task}" for r in reference_records]
    model4 = TeacherAttributor(features="pos-paper").fit(texts_of(reference_records), four)
    assert sorted(model4.unlisted_log_proba_) == sorted(set(four))
    assert 0 < model4.rank(texts_of(student_records)).attrs["p_unlisted"] <= 1


# -- fit / predict ---------------------------------------------------------------------------------
def test_fitted_attributes(pos_model):
    assert pos_model.classes_.tolist() == TEACHERS
    assert pos_model.n_features_in_ == 50
    assert pos_model.get_feature_names_out().shape == (50,)
    assert all(name.startswith("pos:") for name in pos_model.get_feature_names_out())
    assert pos_model.signature_.startswith(f"teacher-attribution=={__version__}|tagger=spacy:")
    assert "features=pos-paper" in pos_model.signature_
    assert sorted(pos_model.unlisted_log_proba_) == TEACHERS  # open_set_min_teachers=3: null is fitted


def test_predict_proba_rows_and_columns(pos_model, labelled_records):
    proba = pos_model.predict_proba(texts_of(labelled_records))
    assert proba.shape == (18, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    predicted = pos_model.predict(texts_of(labelled_records))
    assert predicted.tolist() == [TEACHERS[i] for i in proba.argmax(axis=1)]


def test_predict_proba_as_frame_is_labelled(pos_model, labelled_records):
    texts, ids = texts_of(labelled_records)[:4], [r.id for r in labelled_records[:4]]
    frame = pos_model.predict_proba(texts, as_frame=True, ids=ids)
    assert frame.columns.tolist() == pos_model.classes_.tolist() and frame.index.tolist() == ids
    assert frame.index.name == "id"
    np.testing.assert_array_equal(frame.to_numpy(), pos_model.predict_proba(texts))
    assert pos_model.predict_proba(texts, as_frame=True).index.tolist() == [0, 1, 2, 3]
    with pytest.raises(ModelError) as info:
        pos_model.predict_proba(texts, as_frame=True, ids=ids[:2])
    assert info.value.code == "E210"


@pytest.mark.parametrize("features, floor", [("pos-paper", 0.8), ("ngram-paper", 0.8), ("combined", 0.9)])
def test_attributes_held_out_student_outputs(reference_records, labelled_records, features, floor):
    model = TeacherAttributor(features=features, open_set=False).fit(
        texts_of(reference_records), [r.teacher for r in reference_records])
    accuracy = np.mean(model.predict(texts_of(labelled_records)) == np.asarray([r.teacher for r in labelled_records]))
    assert accuracy >= floor


def test_fit_is_deterministic(reference_records, labelled_records, pos_model):
    again = TeacherAttributor(features="pos-paper").fit(texts_of(reference_records),
                                                        [r.teacher for r in reference_records])
    texts = texts_of(labelled_records)
    np.testing.assert_array_equal(again.predict_proba(texts), pos_model.predict_proba(texts))


def test_normalization_removes_artifacts_before_scoring(pos_model):
    clean = "Good one! The tree stops making green stuff, so the reds show up. I'd pick C!"
    dirty = "#### " + clean + " I'd pick C! I'd pick C! I'd pi<|endoftext|>"
    proba = pos_model.predict_proba([clean, dirty])
    np.testing.assert_array_equal(proba[0], proba[1])


def test_constructor_stores_params_and_clones(pos_model):
    params = {"features": "pos-paper", "C": 0.5, "class_weight": None, "max_iter": 50, "tagger": "nltk",
              "normalize": False, "n_bootstrap": 10, "open_set": False, "open_set_min_teachers": 5,
              "batch_size": 8, "paired": False, "random_state": 3}
    model = TeacherAttributor(**params)
    assert model.get_params() == params
    assert clone(model).get_params() == params
    assert not hasattr(clone(pos_model), "classifier_")


def test_fit_refuses_bad_texts_and_labels_with_coded_errors(reference_records):
    texts, teachers = texts_of(reference_records), [r.teacher for r in reference_records]
    with pytest.raises(ValueError, match="single string"):
        TeacherAttributor().fit("one text", ["alpha"])
    with pytest.raises(ModelError) as info:
        TeacherAttributor().fit(texts[:3], ["alpha"] * 3)
    assert info.value.code == "E201"
    with pytest.raises(ModelError) as info:
        TeacherAttributor().fit(texts[:3], teachers[:2])
    assert info.value.code == "E203"
    with pytest.raises(ModelError) as info:
        TeacherAttributor().fit(["fine", None], ["a", "b"])
    assert info.value.code == "E210" and "texts[1]" in str(info.value)
    with pytest.raises(ModelError) as info:
        TeacherAttributor(C=0).fit(texts, teachers)
    assert info.value.code == "E210" and "'C'" in str(info.value)


def test_unfitted_model():
    model = TeacherAttributor()
    for call in (lambda: model.predict_proba(["x"]), lambda: model.rank(["x"]), lambda: StudentEvidence(model)):
        with pytest.raises(NotFittedError) as info:
            call()
        assert info.value.code == "E204"


# -- ranking a student ---------------------------------------------------------------------------
def test_rank_names_the_teacher_of_the_student(pos_model, student_records):
    frame = pos_model.rank(texts_of(student_records))
    assert list(frame.columns) == ["teacher", "probability", "support", "ci_low", "ci_high", "mean_log_proba",
                                   "verdict", "p_value"]
    assert frame["verdict"].iloc[0] == frame.attrs["verdict"]["status"] and frame["verdict"].iloc[1:].isna().all()
    assert frame.attrs["verdict"]["best_candidate"] == "chatty" and frame["p_value"].iloc[1:].isna().all()
    assert (frame["ci_low"] <= frame["probability"] + 1e-9).all()
    assert (frame["probability"] <= frame["ci_high"] + 1e-9).all()
    assert frame["teacher"].iloc[0] == "chatty"
    assert sorted(frame["teacher"]) == TEACHERS
    assert frame["probability"].is_monotonic_decreasing
    assert frame["probability"].sum() == pytest.approx(1.0)
    assert frame["support"].between(0, 1).all() and frame["support"].sum() == pytest.approx(1.0)
    assert frame.attrs["n_outputs"] == 10
    assert 0 < frame.attrs["p_unlisted"] <= 1


def test_rank_streams_in_batches_with_the_same_result(reference_records, student_records, pos_model):
    small = clone(pos_model).set_params(batch_size=3).fit(texts_of(reference_records),
                                                          [r.teacher for r in reference_records])
    streamed = small.rank(r.output for r in student_records)  # a generator, 4 batches
    whole = pos_model.rank(texts_of(student_records))
    assert streamed["teacher"].tolist() == whole["teacher"].tolist()
    np.testing.assert_allclose(streamed["probability"], whole["probability"], rtol=1e-9)


def test_rank_is_reproducible(pos_model, student_records):
    a, b = pos_model.rank(texts_of(student_records)), pos_model.rank(texts_of(student_records))
    pd.testing.assert_frame_equal(a, b)
    assert a.attrs == b.attrs


def test_rank_refuses_no_outputs_and_a_bare_string(pos_model):
    with pytest.raises(ModelError) as info:
        pos_model.rank([])
    assert info.value.code == "E209"
    with pytest.raises(ValueError, match="single string"):
        pos_model.rank("a bare string")


def test_student_evidence_and_templates(pos_model, student_records):
    evidence = StudentEvidence(pos_model, keep_outputs=True)
    texts = texts_of(student_records)
    first = evidence.add(texts[:4])
    evidence.add(texts[4:])
    assert evidence.n_outputs == 10 and first.shape == (4, 3) and len(evidence.outputs) == 10
    pd.testing.assert_frame_equal(evidence.ranking(), pos_model.rank(texts).drop(columns=["verdict", "p_value"]))
    table = evidence.templates(top=5)
    assert list(table.columns) == ["teacher", "block", "feature", "weight", "n_outputs", "share_of_outputs",
                                   "reference_share", "examples"]
    assert 0 < len(table) <= 5
    assert (table["teacher"] == "chatty").all() and (table["block"] == "pos").all()
    assert table["weight"].is_monotonic_decreasing and (table["weight"] > 0).all()
    assert (table["n_outputs"] <= 10).all()
    np.testing.assert_allclose(table["share_of_outputs"], table["n_outputs"] / 10)
    # every template is 4 tags, and its examples are spans of 4 tokens from the student's outputs
    assert all(len(f.split()) == 4 for f in table["feature"])
    for examples in table["examples"]:
        assert examples and all(len(span.split()) == 4 for span in examples)
    other = evidence.templates("terse", top=3)
    assert (other["teacher"] == "terse").all()
    # share_of_outputs agrees with the table, and with counting the template's tags by hand
    row = table.iloc[0]
    assert evidence.share_of_outputs(f"pos:{row.feature}") == pytest.approx(row.share_of_outputs)
    tagged = pos_model.prepare(texts)
    by_hand = np.mean([f" {row.feature} " in f" {' '.join(doc.tags)} " for doc in tagged])
    assert evidence.share_of_outputs(f"pos:{row.feature}") == pytest.approx(by_hand)
    with pytest.raises(ModelError, match=r"block:n-gram.*\[E211\]"):
        evidence.share_of_outputs(row.feature)  # the block prefix is missing


def test_evidence_with_no_outputs(pos_model):
    evidence = StudentEvidence(pos_model)
    with pytest.raises(ModelError, match=r"\[E209\]"):
        evidence.ranking()
    with pytest.raises(ModelError, match=r"\[E209\]"):
        evidence.p_unlisted()


def test_open_set_needs_three_teachers(reference_records, student_records):
    two = [r for r in reference_records if r.teacher != "terse"]
    model = TeacherAttributor(features="pos-paper").fit(texts_of(two), [r.teacher for r in two])
    assert model.unlisted_log_proba_ == {}
    frame = model.rank(texts_of(student_records))
    assert frame.attrs["p_unlisted"] is None and frame["teacher"].iloc[0] == "chatty"
    closed = TeacherAttributor(features="pos-paper", open_set=False, n_bootstrap=0).fit(
        texts_of(reference_records), [r.teacher for r in reference_records])
    ranked = closed.rank(texts_of(student_records))
    assert closed.unlisted_log_proba_ == {} and ranked["support"].isna().all()


def test_unlisted_p_value_falls_with_the_margin():
    rng = np.random.default_rng(0)
    null = {t: np.log(rng.dirichlet([1, 1], size=30)) for t in "abc"}
    assert unlisted_p_value(np.log([0.5, 0.5]), 5, {}) is None
    p_small = unlisted_p_value(np.log([0.55, 0.45]), 5, null)
    p_large = unlisted_p_value(np.log([0.99, 0.01]), 5, null)
    assert 0 < p_large < p_small <= 1
    assert unlisted_p_value(np.log([0.55, 0.45]), 5, null) == p_small  # seeded


# -- several tasks -----------------------------------------------------------------------------------
def test_multitask_fits_one_model_per_task(multi_model, reference_records):
    assert multi_model.tasks == ["commonsense", "science"]
    assert multi_model.classes_ == TEACHERS
    science = multi_model.model_for("science")
    assert isinstance(science, TeacherAttributor) and science.features == "combined"
    assert science is not multi_model.model_for("commonsense")
    with pytest.raises(ModelError) as info:
        multi_model.model_for("math")
    assert info.value.code == "E208" and "commonsense" in str(info.value)


def test_multitask_without_tasks_serves_every_task(reference_records):
    model = MultiTaskAttributor(features="pos-paper", open_set=False).fit(
        texts_of(reference_records), [r.teacher for r in reference_records])
    assert model.tasks == [None]
    assert model.model_for("anything") is model.model_for(None)


def test_multitask_errors(reference_records):
    with pytest.raises(NotFittedError):
        MultiTaskAttributor().model_for(None)
    texts = texts_of(reference_records)
    teachers = [r.teacher for r in reference_records]
    tasks = [r.task if r.teacher != "formal" else "formal-only" for r in reference_records]
    with pytest.raises(ModelError) as info:
        MultiTaskAttributor(features="pos-paper").fit(texts, teachers, tasks)
    assert info.value.code == "E201"
    with pytest.raises(ModelError) as info:
        MultiTaskAttributor().fit(texts, teachers, tasks[:-1])
    assert info.value.code == "E203"


# -- saving and loading --------------------------------------------------------------------------------
def test_save_load_round_trip_multitask(multi_model, labelled_records, tmp_path):
    path = tmp_path / "model.npz"
    multi_model.save(path)
    loaded = load_model(path)
    assert loaded.tasks == multi_model.tasks and loaded.classes_ == multi_model.classes_
    for task in multi_model.tasks:
        texts = [r.output for r in labelled_records if r.task == task]
        before, after = multi_model.model_for(task), loaded.model_for(task)
        np.testing.assert_array_equal(after.predict_proba(texts), before.predict_proba(texts))
        assert after.get_params() == before.get_params()
        assert after.signature_ == before.signature_
        assert list(after.get_feature_names_out()) == list(before.get_feature_names_out())
        assert sorted(after.unlisted_log_proba_) == sorted(before.unlisted_log_proba_)
        for teacher, null in before.unlisted_log_proba_.items():
            np.testing.assert_array_equal(after.unlisted_log_proba_[teacher], null)
        pd.testing.assert_frame_equal(after.rank(texts), before.rank(texts))
        assert after.rank(texts).attrs == before.rank(texts).attrs


def test_save_load_single_attributor(pos_model, student_records, tmp_path):
    path = tmp_path / "deep" / "pos.npz"
    save_model(pos_model, path)
    loaded = load_model(path)
    assert type(loaded) is TeacherAttributor  # what was saved
    assert loaded.get_params() == pos_model.get_params()
    texts = texts_of(student_records)
    np.testing.assert_array_equal(loaded.predict_proba(texts), pos_model.predict_proba(texts))
    assert [p.name for p in path.parent.iterdir()] == ["pos.npz"]  # no temp file left


def test_saved_file_is_arrays_and_json_only(pos_model, tmp_path):
    path = tmp_path / "m.npz"
    save_model(pos_model, path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}  # would raise on any object (pickled) array
    assert all(a.dtype != object for a in arrays.values())
    header = json.loads(arrays["__header__"].tobytes().decode("utf-8"))
    assert header["format"] == MODEL_FORMAT and header["version"] == __version__


def test_load_never_unpickles(pos_model, tmp_path, monkeypatch, student_records):
    path = tmp_path / "m.npz"
    save_model(pos_model, path)

    def refuse(*args, **kwargs):
        raise AssertionError("load_model used pickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    loaded = load_model(path)
    assert loaded.classes_.tolist() == TEACHERS


def _rewrite(path, out, edit):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    edit(arrays)
    np.savez(out, **arrays)
    return out


def _header_edit(**changes):
    def edit(arrays):
        header = json.loads(arrays["__header__"].tobytes().decode("utf-8"))
        header.update(changes)
        arrays["__header__"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    return edit


def _task_edit(**changes):
    def edit(arrays):
        header = json.loads(arrays["__header__"].tobytes().decode("utf-8"))
        for key, value in changes.items():
            if value is None:
                header["tasks"][0].pop(key)
            else:
                header["tasks"][0][key] = value
        arrays["__header__"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    return edit


@pytest.mark.parametrize("case", ["missing", "not-a-zip", "truncated", "no-header", "bad-header-json",
                                  "other-format", "pickled-array", "no-tasks", "no-blocks", "no-coef",
                                  "wrong-coef-shape", "unknown-param"])
def test_tampered_or_foreign_files_raise_model_error(pos_model, tmp_path, case):
    good = tmp_path / "good.npz"
    save_model(pos_model, good)
    bad = tmp_path / "bad.npz"
    if case == "not-a-zip":
        bad.write_bytes(b"definitely not a model\n" * 10)
    elif case == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif case == "no-header":
        _rewrite(good, bad, lambda a: a.pop("__header__"))
    elif case == "bad-header-json":
        _rewrite(good, bad, lambda a: a.update(__header__=np.frombuffer(b"{not json", dtype=np.uint8)))
    elif case == "other-format":
        _rewrite(good, bad, _header_edit(format="someone-else/1"))
    elif case == "pickled-array":
        _rewrite(good, bad, lambda a: a.update(t0_coef=np.array([{"evil": 1}], dtype=object)))
    elif case == "no-tasks":
        _rewrite(good, bad, _header_edit(tasks=[]))
    elif case == "no-blocks":
        _rewrite(good, bad, _task_edit(blocks=None))
    elif case == "no-coef":
        _rewrite(good, bad, lambda a: a.pop("t0_coef"))
    elif case == "wrong-coef-shape":
        _rewrite(good, bad, lambda a: a.update(t0_coef=np.zeros((3, 7))))
    elif case == "unknown-param":
        _rewrite(good, bad, _task_edit(params={"features": "pos-paper", "evil": "rm -rf"}))
    with pytest.raises(ModelError) as info:
        load_model(bad)
    assert info.value.code == "E206" and str(bad) in str(info.value)


def test_loading_a_zip_of_a_pickle_is_refused(tmp_path):
    """A classic attack: an .npz member that is a pickle, not an .npy array."""
    bad = tmp_path / "evil.npz"
    with zipfile.ZipFile(bad, "w") as archive:
        buffer = io.BytesIO()
        np.save(buffer, np.array([object()], dtype=object), allow_pickle=True)
        archive.writestr("__header__.npy", buffer.getvalue())
    with pytest.raises(ModelError) as info:
        load_model(bad)
    assert info.value.code == "E206"


def test_version_mismatch_warns(pos_model, tmp_path):
    good = tmp_path / "good.npz"
    save_model(pos_model, good)
    old = _rewrite(good, tmp_path / "old.npz", _header_edit(version="0.0.1"))
    with pytest.warns(UserWarning, match=r"saved by teacher-attribution 0\.0\.1"):
        loaded = load_model(old)
    assert loaded.classes_.tolist() == TEACHERS


def test_outputs_emptied_by_normalization_carry_no_evidence(pos_model, student_records):
    texts = [r.output for r in student_records]
    clean = StudentEvidence(pos_model)
    clean.add(texts)
    padded = StudentEvidence(pos_model)
    padded.add(texts + ["nannannannannan", "</s> <|endoftext|>"])
    assert (padded.n_outputs, padded.n_empty) == (clean.n_outputs, 2)
    np.testing.assert_allclose(padded.sum_log_proba, clean.sum_log_proba)
    empty_only = StudentEvidence(pos_model)
    empty_only.add(["nannannannan"])
    with pytest.raises(ModelError, match="E209"):
        empty_only.ranking()


def test_models_saved_before_the_four_teacher_rule_lose_their_three_teacher_null(pos_model):
    meta, arrays = pos_model.get_state()
    assert TeacherAttributor.from_state(meta, arrays).unlisted_log_proba_  # saved with the bar at 3: kept
    del meta["params"]["open_set_min_teachers"]  # what an older file holds
    assert TeacherAttributor.from_state(meta, arrays).unlisted_log_proba_ == {}
