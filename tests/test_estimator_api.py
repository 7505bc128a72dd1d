"""The estimator API (issue 14, item 6): MultiTaskAttributor's parameters, clone, n_features_in_,
declarative parameter validation, and load_model returning the class that was saved."""

from __future__ import annotations

import inspect
import json
import warnings

import numpy as np
import pytest
from sklearn.base import clone

from attribution.api import rank_student
from attribution.errors import ModelError
from attribution.estimator import PARAMETER_CONSTRAINTS, TeacherAttributor
from attribution.multitask import MultiTaskAttributor, as_multitask
from attribution.persistence import PARAMS, load_model, save_model

from test_models import OPEN_SET_3, _rewrite, texts_of

PARAMS_SET = {"features": "pos-paper", "C": 0.5, "class_weight": None, "max_iter": 50, "tagger": "nltk",
              "normalize": False, "n_bootstrap": 10, "open_set": False, "open_set_min_teachers": 5,
              "batch_size": 8, "paired": False, "random_state": 3}
TINY = (["The answer is A.", "Sure! B it is.", "It is C, clearly."] * 2, ["a", "b", "c"] * 2)


@pytest.fixture(scope="module")
def pos_model(reference_records):
    return TeacherAttributor(features="pos-paper", **OPEN_SET_3).fit(texts_of(reference_records),
                                                                     [r.teacher for r in reference_records])


def test_multitask_takes_the_attributors_parameters_and_clones():
    assert (inspect.signature(MultiTaskAttributor.__init__).parameters
            == inspect.signature(TeacherAttributor.__init__).parameters)
    model = MultiTaskAttributor(**PARAMS_SET)
    assert model.get_params() == PARAMS_SET
    assert clone(model).get_params() == PARAMS_SET
    assert model.set_params(C=2.0) is model and model.C == 2.0
    with pytest.raises(TypeError):
        MultiTaskAttributor(no_such_param=1)


def test_fitted_multitask_clones_unfitted(reference_records):
    model = MultiTaskAttributor(features="pos-paper", open_set=False, n_bootstrap=0).fit(
        texts_of(reference_records), [r.teacher for r in reference_records], [r.task for r in reference_records])
    assert all(sub.get_params() == model.get_params() for sub in model.models_.values())
    twin = clone(model)
    assert twin.get_params() == model.get_params() and not hasattr(twin, "models_")


def test_n_features_in(pos_model):
    assert pos_model.n_features_in_ == 50 == len(pos_model.get_feature_names_out())
    with pytest.warns(DeprecationWarning, match="n_features_in_"):
        assert pos_model.n_features_ == 50


def test_parameter_table_is_the_file_schema():
    names = set(TeacherAttributor().get_params())
    assert set(PARAMETER_CONSTRAINTS) == names == set(MultiTaskAttributor().get_params()) == set(PARAMS.fields)
    for name, spec in PARAMETER_CONSTRAINTS.items():  # the defaults satisfy their own constraints
        spec.check(TeacherAttributor().get_params()[name], name)


@pytest.mark.parametrize(("param", "value", "expected"), [
    ("n_bootstrap", -1, "an integer in [0, 100000]"), ("C", 0, "a finite number in (0, "),
    ("C", "1", "a finite number"), ("C", float("nan"), "a finite number"), ("max_iter", 0, "an integer in [1,"),
    ("class_weight", "weighted", "one of 'balanced', None"), ("batch_size", 0, "an integer in [1,"),
    ("random_state", -1, "null or an integer"), ("normalize", "yes", "true or false"),
    ("open_set_min_teachers", 1, "an integer in [2,"), ("paired", None, "true or false"), ("tagger", 3, "a string"),
])
@pytest.mark.parametrize("klass", [TeacherAttributor, MultiTaskAttributor])
def test_bad_parameters_are_refused_by_fit_naming_what_was_expected(klass, param, value, expected):
    with pytest.raises(ModelError) as info:
        klass(**{param: value}).fit(*TINY)
    assert info.value.code == "E210"
    message = str(info.value)
    assert f"parameter '{param}' must be {expected}" in message and f"(got {value!r})" in message


def test_unknown_feature_set_keeps_its_code_and_is_refused_before_tagging(monkeypatch):
    from attribution import tagging

    monkeypatch.setattr(tagging, "get_tagger", lambda *a, **k: pytest.fail("tagged before checking parameters"))
    for klass in (TeacherAttributor, MultiTaskAttributor):
        with pytest.raises(ModelError) as info:
            klass(features="pos-fancy").fit(*TINY)
        assert info.value.code == "E205" and "pos-paper" in str(info.value)


def test_load_model_returns_the_class_that_was_saved(pos_model, reference_records, tmp_path):
    save_model(pos_model, tmp_path / "single.npz")
    single = load_model(tmp_path / "single.npz")
    assert type(single) is TeacherAttributor and single.get_params() == pos_model.get_params()
    multi = as_multitask(pos_model)
    multi.save(tmp_path / "multi.npz")
    loaded = load_model(tmp_path / "multi.npz")
    assert type(loaded) is MultiTaskAttributor and loaded.tasks == [None]
    # a multi-task file names no class (as every file saved before the key existed): MultiTaskAttributor
    header = json.loads(np.load(tmp_path / "multi.npz")["__header__"].tobytes())
    assert "estimator" not in header
    # a header claiming a TeacherAttributor must hold exactly the task null
    def retask(arrays):
        meta = json.loads(arrays["__header__"].tobytes())
        meta["tasks"][0]["task"] = "science"
        arrays["__header__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    bad = _rewrite(tmp_path / "single.npz", tmp_path / "bad.npz", retask)
    with pytest.raises(ModelError) as info:
        load_model(bad)
    assert info.value.code == "E206" and "one task" in str(info.value)


def test_workflows_and_cli_take_a_saved_teacher_attributor(pos_model, student_path, student_records, tmp_path):
    from typer.testing import CliRunner

    import attribution.cli.rank  # noqa: F401  registers the command
    from attribution.cli import app

    expected = rank_student(as_multitask(pos_model), student_records)
    assert rank_student(pos_model, student_records) == expected
    save_model(pos_model, tmp_path / "single.npz")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # nothing reads the deprecated n_features_
        run = CliRunner().invoke(app, ["rank", str(student_path), "--model", str(tmp_path / "single.npz"),
                                       "--format", "json", "--quiet"])
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["ranking"][0]["teacher"] == expected["ranking"][0]["teacher"]
