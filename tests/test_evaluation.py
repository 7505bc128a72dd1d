"""Id-aligned metrics: per output, per student, and from subsets of a student's outputs."""

from __future__ import annotations

import numpy as np
import pytest

from attribution.evaluation import score_attribution, student_accuracy_at, student_key, student_verdicts
from attribution.io import Record

CLASSES = ["alpha", "beta", "gamma"]


def onehot(labels, classes=CLASSES, hit=0.8):
    rest = (1 - hit) / (len(classes) - 1)
    return np.log(np.array([[hit if c == label else rest for c in classes] for label in labels]))


def test_student_key():
    assert student_key(Record(output="x", teacher="alpha", student="gpt2")) == "gpt2/alpha"
    assert student_key(Record(output="x", teacher="alpha")) == "alpha"
    assert student_key(Record(output="x")) == "?"
    assert student_key(Record(output="x", student="gpt2")) == "gpt2/?"


def test_perfect_scores():
    y = ["alpha", "alpha", "beta", "gamma"]
    result = score_attribution(y, onehot(y), CLASSES, y, features="pos-paper", task="qa")
    assert result["accuracy"] == result["balanced_accuracy"] == result["macro_f1"] == 1.0
    assert result["student_accuracy"] == 1.0 and result["n_students"] == 3
    assert (result["features"], result["task"], result["n_outputs"]) == ("pos-paper", "qa", 4)
    assert result["confusion"] == {"alpha": {"alpha": 2}, "beta": {"beta": 1}, "gamma": {"gamma": 1}}


def test_accuracy_balanced_accuracy_and_confusion():
    y_true = ["alpha"] * 4 + ["beta"] * 2
    y_pred = ["alpha", "alpha", "alpha", "beta", "alpha", "beta"]
    result = score_attribution(y_true, onehot(y_pred), CLASSES, y_true, features="f")
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2) / 2)
    assert result["confusion"] == {"alpha": {"alpha": 3, "beta": 1}, "beta": {"alpha": 1, "beta": 1}}
    assert result["students"] == {"alpha": {"true": "alpha", "predicted": "alpha"},
                                  "beta": {"true": "beta", "predicted": "alpha"}}  # tie -> first column
    assert result["student_accuracy"] == 0.5


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_student_verdict_uses_the_mean_score_not_the_majority():
    # two weak votes for beta, one confident vote for alpha: the mean log-probability favours alpha
    scores = np.log(np.array([[0.4, 0.6, 1e-9], [0.4, 0.6, 1e-9], [0.98, 0.01, 0.01]]))
    result = score_attribution(["alpha"] * 3, scores, CLASSES, ["s"] * 3, features="f")
    assert result["accuracy"] == pytest.approx(1 / 3)
    assert result["confusion"] == {"alpha": {"alpha": 1, "beta": 2}}  # the majority of outputs says beta
    assert result["students"]["s"]["predicted"] == "alpha"
    assert result["student_accuracy"] == 1.0
    assert student_verdicts(scores, ["s"] * 3) == {"s": 0}


def test_columns_follow_classes_not_alphabet():
    classes = ["gamma", "alpha", "beta"]
    y = ["alpha", "gamma"]
    result = score_attribution(y, onehot(y, classes), classes, y, features="f")
    assert result["accuracy"] == 1.0


def test_label_outside_the_classes_counts_as_wrong():
    y_true = ["alpha", "delta"]
    result = score_attribution(y_true, onehot(["alpha", "alpha"]), CLASSES, y_true, features="f")
    assert result["accuracy"] == 0.5
    assert result["confusion"]["delta"] == {"alpha": 1}


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        score_attribution(["alpha"], np.zeros((2, 3)), CLASSES, ["a"], features="f")
    with pytest.raises(ValueError, match="shape"):
        score_attribution(["alpha"], np.zeros((1, 2)), CLASSES, ["a"], features="f")


def test_student_accuracy_at_uses_seeded_subsets():
    # student "a" (alpha): 3 outputs point to alpha, 7 weakly to beta -> subsets of 1 are mostly wrong
    scores = np.vstack([onehot(["alpha"] * 3, hit=0.99), onehot(["beta"] * 7, hit=0.4)])
    y_true = ["alpha"] * 10
    groups = ["a"] * 10
    all_outputs = student_accuracy_at(scores, CLASSES, y_true, groups, 10, draws=5)
    assert all_outputs == {"n_outputs": 10, "draws": 5, "mean": 1.0, "std": 0.0}  # whole student: right
    one = student_accuracy_at(scores, CLASSES, y_true, groups, 1, draws=200)
    assert 0.15 < one["mean"] < 0.45 and one["std"] > 0  # about 3 in 10
    assert student_accuracy_at(scores, CLASSES, y_true, groups, 1, draws=200) == one
    assert student_accuracy_at(scores, CLASSES, y_true, groups, 1, draws=200, random_state=1) != one


def test_student_accuracy_at_on_several_students():
    y = ["alpha"] * 5 + ["beta"] * 5 + ["gamma"] * 5
    scores = onehot(y)
    result = student_accuracy_at(scores, CLASSES, y, y, 25, draws=3)  # more than each student has
    assert result["mean"] == 1.0


def test_expected_calibration_error_reads_confidence_against_accuracy():
    from attribution.evaluation import expected_calibration_error

    classes = ["a", "b"]
    sure_and_right = np.array([[0.95, 0.05]] * 10)
    assert expected_calibration_error(sure_and_right, ["a"] * 10, classes) == pytest.approx(0.05)
    sure_and_wrong = np.array([[0.95, 0.05]] * 10)
    assert expected_calibration_error(sure_and_wrong, ["b"] * 10, classes) == pytest.approx(0.95)
    half = np.array([[0.6, 0.4]] * 10)
    assert expected_calibration_error(half, ["a"] * 6 + ["b"] * 4, classes) == pytest.approx(0.0)
