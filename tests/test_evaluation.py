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
    assert student_key(Record(output="x", student="gpt2")) == "gpt2"  # unlabelled: the student's name


def test_perfect_predictions_score_one_on_every_metric():
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


# -- one evaluation path (issue 14, item 3) --------------------------------------------------------------
@pytest.fixture(scope="module")
def both(reference_records, labelled_records):
    from attribution.evaluation import evaluate

    return evaluate(reference_records, labelled_records, features=["pos-paper"], baselines=["cosine"],
                    subsets=(2,), draws=3)


def test_feature_sets_and_baselines_give_the_same_rows(both, reference_records, labelled_records):
    from attribution.evaluation import evaluate_baseline
    from attribution.evaluation_result import Evaluation, EvaluationRow

    assert isinstance(both, Evaluation) and all(isinstance(row, EvaluationRow) for row in both.rows)
    document = both.to_dict()
    assert document["results"] == [row.to_dict() for row in both.rows] == both["results"]
    assert len({tuple(sorted(row)) for row in document["results"]}) == 1  # the same keys for both kinds
    tasks = list(dict.fromkeys(r.task for r in labelled_records))
    assert [(r.task, r.features) for r in both.rows] == [(t, f) for t in tasks for f in ("pos-paper", "cosine")]
    feature, baseline = both.rows[:2]
    assert feature.meta is None and feature.n_attributed is not None and feature.calibration_error is not None
    assert baseline.meta["alignment"] == "auto" and baseline.n_attributed is None and baseline.calibration_error is None
    # evaluate_baseline is the same path: the same rows, in the same task order
    rows = evaluate_baseline("cosine", reference_records, labelled_records, subsets=(2,), draws=3)
    assert [r.to_dict() for r in rows] == [r.to_dict() for r in both.rows if r.features == "cosine"]


def test_to_frame_is_the_results_table(both):
    from attribution.evaluation import results_table

    frame = both.to_frame()
    assert frame.equals(results_table(both.to_dict())) and len(frame) == len(both.rows)
    assert {"student_accuracy_at_2", "n_empty"} <= set(frame.columns) and "meta" not in frame.columns
    assert both.rows[0].to_frame().iloc[0]["features"] == "pos-paper"


def test_the_empty_rule_is_one_rule(tagger):
    from attribution.normalize import Normalizer, empty_outputs, is_empty

    texts = ["", "   \n\t ", "\u00a0", "####", "</s> <|endoftext|>", "nannannan", "nan", "x", " . ", "\u200b"]
    normalizer = Normalizer()
    # a text is empty by the rule exactly when its tagged document has no token
    for text in texts:
        assert is_empty(normalizer(text)) == tagger.tag([normalizer(text)])[0].is_empty, text
    assert empty_outputs(["####", "ok"]) == [True, False]
    assert empty_outputs(["####", "ok"], normalize=False) == [False, False]


def test_baseline_rows_honour_normalize(reference_records):
    from attribution.evaluation import evaluate

    students = [Record(output="#### </s>", teacher="formal", task="science", id="e1"),
                *[Record(output=r.output, teacher=r.teacher, task=r.task, id=f"s{i}")
                  for i, r in enumerate(reference_records) if r.task == "science"][:6]]
    on = evaluate(reference_records, students, features=(), baselines=["cosine"], subsets=(), draws=1)
    off = evaluate(reference_records, students, features=(), baselines=["cosine"], subsets=(), draws=1,
                   baseline_options={"normalize": False})
    assert on.rows[0].n_empty == 1 and off.rows[0].n_empty == 0


def test_select_students_drops_empty_and_samples():
    from attribution.evaluation import select_students

    records = [Record(output=text, id=str(i)) for i, text in enumerate(["a", "####", "b", "c", "</s>", "d"])]
    kept, n_empty = select_students(records, drop_empty=True)
    assert [r.output for r in kept] == ["a", "b", "c", "d"] and n_empty == 2
    assert select_students(records, drop_empty=True, normalize=False)[1] == 0
    sample, _ = select_students(records, limit=3, random_state=1)
    assert len(sample) == 3 and [r.id for r in sample] == sorted(r.id for r in sample)  # file order
    assert select_students(records, limit=3, random_state=1)[0] == sample  # seeded


def test_predict_baseline_groups_by_student_key_and_skips_empty_outputs(reference_records):
    from attribution.evaluation import predict_baseline

    science = [r for r in reference_records if r.task == "science"]
    students = [Record(output=science[0].output, student="s1", task="science", id="a"),
                Record(output="####", student="s1", task="science", id="b"),
                Record(output=science[1].output, task="science", id="c")]
    result = predict_baseline("cosine", reference_records, students)
    assert set(result.students) == {"science/s1", "science/?"}
    s1 = result.students["science/s1"]
    assert s1["n_outputs"] == 1 and s1["n_empty"] == 1 and s1["verdict"] == science[0].teacher
    assert len(result.outputs) == 3 and result.to_dict()["name"] == "cosine"
    assert list(result.to_frame()["student"]) == ["science/?", "science/s1"]
