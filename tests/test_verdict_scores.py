"""The per-prompt differences behind the verdict's paired test (issue 21, item 1): what the test sums, kept as a
fixed-size summary (``verdict_scores`` of the result: mean, sd, who each prompt favours, quantiles, a histogram
with fixed bins that merges by addition), and the report's plot of it."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
from scipy import stats

from attribution.api import rank_student
from attribution.errors import InputError
from attribution.models import TeacherAttributor
from attribution.paired import COSINE_BINS, LOG_ODDS_BINS, QUANTILES, TIE, PairedTest
from attribution.report.validate import check_result

from test_models import OPEN_SET_3, texts_of

CLASSES = ["a", "b", "c"]
#: The documented keys of ``verdict_scores`` (docs/json.md).
KEYS = {"top", "runner_up", "statistic", "n", "mean", "sd", "favour_top", "favour_runner_up", "ties", "share_top",
        "quantiles", "histogram"}


def _scores(n: int = 60, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scores = np.clip(rng.normal(scale=0.3, size=(n, 3)) + np.array([0.15, 0.1, 0.0]), -1, 1)
    scores[7] = [0.2, 0.2, 0.1]  # a tie between a and b
    return scores


def test_differences_summarise_what_the_paired_test_sums():
    scores = _scores()
    test = PairedTest(CLASSES)
    test.add(np.vstack([scores[:30], np.full((3, 3), np.nan), scores[30:]]))  # outputs without paired answers
    found = test.differences("a", "b")
    d = scores[:, 0] - scores[:, 1]
    assert found is not None and found["n"] == test.n == len(scores)
    assert found["mean"] == pytest.approx(test.mean()[0] - test.mean()[1], abs=1e-12)
    assert found["mean"] == pytest.approx(d.mean(), abs=1e-12) and found["sd"] == pytest.approx(d.std(ddof=1))
    # the paired test's own t statistic, from the summary's mean and sd
    t = found["mean"] / (found["sd"] / np.sqrt(found["n"]))
    assert stats.t.sf(t, found["n"] - 1) == pytest.approx(test.p_value("a", "b"), rel=1e-9)
    assert (found["favour_top"], found["favour_runner_up"], found["ties"]) == (
        int((d > TIE).sum()), int((d < -TIE).sum()), int((abs(d) <= TIE).sum()))
    assert found["ties"] >= 1 and found["share_top"] == pytest.approx((d > 0).mean())
    histogram = found["histogram"]
    assert sum(histogram["counts"]) == test.n and histogram["counts"][0] and histogram["counts"][-1]
    edges = histogram["start"] + histogram["width"] * np.arange(len(histogram["counts"]) + 1)
    assert histogram["counts"] == np.histogram(d, edges)[0].tolist()
    assert histogram["width"] == pytest.approx((COSINE_BINS[1] - COSINE_BINS[0]) / COSINE_BINS[2])
    for q in QUANTILES:  # from the bins: to a bin's width
        assert abs(found["quantiles"][f"{q:g}"] - np.quantile(d, q)) <= histogram["width"]
    mirror = test.differences("b", "a")
    assert mirror["mean"] == pytest.approx(-found["mean"]) and mirror["favour_top"] == found["favour_runner_up"]
    assert test.differences("a", "a") is None and test.differences("a", "zzz") is None
    assert PairedTest(CLASSES).differences("a", "b") is None  # no outputs


def test_batch_states_merge_by_addition_to_the_same_summary():
    """What a Dask worker returns per batch (``state``), added in order on the client (``merge_state``), gives
    the summary of one test fed every output; ``merge`` with columns in another order does too."""
    scores = _scores(n=101, seed=9)
    whole = PairedTest(CLASSES)
    whole.add(scores)
    merged = PairedTest(CLASSES)
    for batch in np.array_split(scores, [13, 14, 60]):
        part = PairedTest(CLASSES)
        part.add(batch)
        merged.merge_state(part.state())
    reordered = PairedTest(CLASSES[::-1])
    reordered.add(scores[:, ::-1])
    by_columns = PairedTest(CLASSES)
    by_columns.merge(reordered, [2, 1, 0])
    for pair in (("a", "b"), ("c", "a")):
        expected = json.dumps(whole.differences(*pair))
        assert json.dumps(merged.differences(*pair)) == expected
        assert json.dumps(by_columns.differences(*pair)) == expected
    assert merged.p_value("a", "b") == pytest.approx(whole.p_value("a", "b"), rel=1e-12)


def test_end_bins_count_what_lies_beyond_them():
    test = PairedTest(CLASSES, LOG_ODDS_BINS)
    test.add(np.array([[100.0, 0.0, 0.0], [0.0, 100.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    found = test.differences("a", "b")
    assert sum(found["histogram"]["counts"]) == 4 == found["n"]
    assert found["histogram"]["start"] == LOG_ODDS_BINS[0]  # -100 counted in the first bin
    assert len(found["histogram"]["counts"]) == LOG_ODDS_BINS[2]  # +100 in the last
    assert (found["favour_top"], found["favour_runner_up"], found["ties"]) == (2, 1, 1)


@pytest.fixture(scope="module")
def paired_result(reference_records, student_records):
    """``rank_student`` of the fixture corpus with paired answers: each teacher's i-th reference answers prompt
    ``p<i>``, and the student's outputs are given those prompt ids (the test compares answers by prompt id)."""
    seen: dict[str, int] = {}
    ids = []
    for r in reference_records:
        seen[r.teacher] = seen.get(r.teacher, -1) + 1
        ids.append(f"p{seen[r.teacher]}")
    model = TeacherAttributor(**OPEN_SET_3).fit(texts_of(reference_records), [r.teacher for r in reference_records],
                                                 prompt_ids=ids)
    students = [dataclasses.replace(r, id=f"p{i}", task=None) for i, r in enumerate(student_records)]
    students += [dataclasses.replace(r, id=f"p{i}", task=None, teacher=None)
                 for i, r in enumerate(r for r in reference_records if r.teacher == "formal") if i < 8]
    return model, students, rank_student(model, students)


def test_result_keeps_the_differences_behind_the_verdict(paired_result):
    _, students, result = paired_result
    verdict, found = result["verdict"], result["verdict_scores"]
    assert set(found) == KEYS and found["statistic"] == "cosine"
    top = verdict["best_family"] or verdict["best_candidate"]
    assert (found["top"], found["runner_up"]) == (top, verdict["runner_up"]) and verdict["runner_up"]
    assert found["n"] == verdict["n_paired"] == len(students)
    scores = verdict["paired_score"]
    assert found["mean"] == pytest.approx(scores[top] - scores[verdict["runner_up"]], abs=1e-12)
    assert sum(found["histogram"]["counts"]) == verdict["n_paired"]
    assert found["favour_top"] + found["favour_runner_up"] + found["ties"] == verdict["n_paired"]
    assert len(json.dumps(found)) < 2_000  # a fixed-size summary, not one number per prompt
    check_result(json.loads(json.dumps(result)))


def test_no_runner_up_no_differences(paired_result):
    model, students, _ = paired_result
    unpaired = rank_student(model, [dataclasses.replace(r, id=None) for r in students])
    assert unpaired["verdict"]["n_paired"] == 0 and "verdict_scores" not in unpaired


def test_a_malformed_summary_is_refused(paired_result):
    bad = copy.deepcopy(json.loads(json.dumps(paired_result[2])))
    bad["verdict_scores"]["histogram"]["counts"] = ["many"]
    with pytest.raises(InputError) as error:
        check_result(bad)
    assert "verdict_scores" in str(error.value) and "[E604]" in str(error.value)


def test_report_plots_the_differences_and_says_what_share_favours_the_top(paired_result, tmp_path):
    """HTML embeds the histogram (a real PNG), Markdown writes it beside the report and says what share of the
    prompts favour the top candidate; a result without ``verdict_scores`` has neither."""
    pytest.importorskip("matplotlib")
    import base64
    import io
    import re

    from PIL import Image

    from attribution.report import render_plots, write_report
    from attribution.report.evidence import differences_sentence

    result = json.loads(json.dumps(paired_result[2]))
    found = result["verdict_scores"]
    html = write_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    images = re.findall(r'<img alt="Histogram of the per-prompt differences[^"]*" src="data:image/png;base64,'
                        r'([A-Za-z0-9+/=]+)">', html)
    assert len(images) == 1
    with Image.open(io.BytesIO(base64.b64decode(images[0]))) as image:
        image.load()
        assert image.width > 200 and image.height > 100
        low, high = image.convert("L").getextrema()
        assert high - low > 100  # ink on paper
    md = write_report(result, tmp_path / "r.md").read_text(encoding="utf-8").replace("\\", "")  # no escapes
    assert "](r_differences.png)" in md and (tmp_path / "r_differences.png").is_file()
    share = (f"{found['favour_top']} of the {found['n']} prompts ({round(100 * found['share_top'])}%) favour "
             f"{found['top']} over {found['runner_up']}")
    assert share in md and share in html and share in differences_sentence(found)
    assert f"{found['favour_runner_up']} favour {found['runner_up']}" in md
    # 8 of 18 prompts favour the top: its lead comes from fewer, larger differences, and the report says so
    assert found["share_top"] < 0.5 and found["mean"] > 0 and f"Most prompts favour {found['runner_up']}" in md
    without = {k: v for k, v in result.items() if k != "verdict_scores"}
    assert "differences" not in render_plots(without)
    md = write_report(without, tmp_path / "w.md").read_text(encoding="utf-8")
    assert "Per-prompt differences" not in md and not (tmp_path / "w_differences.png").exists()


def test_with_a_control_the_differences_are_the_control_tests(paired_result):
    """``--control``: the summary is of the control test's statistic (log-odds gains over the control, in its
    own bins); a control identical to the student gives only ties."""
    from attribution.report.evidence import differences_sentence
    from attribution.result import audit_student

    model, students, _ = paired_result
    students = students[:10]  # one output per prompt: the control's output is found by prompt id
    rotated = [dataclasses.replace(r, output=students[(i + 5) % len(students)].output) for i, r in enumerate(students)]
    result = audit_student(model, students, control=rotated).to_dict()
    verdict, found = result["verdict"], result["verdict_scores"]
    assert verdict["test"] == "control" and found["statistic"] == "control log-odds"
    top, rival = found["top"], found["runner_up"]
    assert (top, rival) == (verdict["best_family"], verdict["runner_up"]) and found["n"] == verdict["n_paired"]
    assert found["mean"] == pytest.approx(verdict["paired_score"][top] - verdict["paired_score"][rival], abs=1e-12)
    assert found["histogram"]["width"] == pytest.approx((LOG_ODDS_BINS[1] - LOG_ODDS_BINS[0]) / LOG_ODDS_BINS[2])
    assert sum(found["histogram"]["counts"]) == found["n"]
    assert "gain more over the control's" in differences_sentence(found)
    itself = audit_student(model, students, control=students).to_dict()["verdict_scores"]
    # the student and the control are scored in separate batches: rounding, not a preference
    assert itself["ties"] == itself["n"] == len(students) and itself["mean"] == pytest.approx(0.0, abs=1e-9)
    assert sum(itself["histogram"]["counts"]) == len(students) and len(itself["histogram"]["counts"]) <= 2


@pytest.mark.parametrize(("favour", "mean", "says"), [
    (8, 0.3, "Most prompts favour b: a's lead comes from a minority of prompts"),
    (14, -0.01, "Most prompts favour a, but by less than the others favour b"),
    (4, -0.2, "On average the prompts do not favour a."),
    (15, 0.2, None)])
def test_the_sentence_says_when_the_mean_and_the_majority_disagree(favour, mean, says):
    from attribution.report.evidence import differences_sentence

    scores = {"top": "a", "runner_up": "b", "n": 20, "mean": mean, "sd": 0.5, "favour_top": favour,
              "favour_runner_up": 20 - favour, "ties": 0, "share_top": favour / 20,
              "quantiles": {"0.05": -0.5, "0.5": 0.1, "0.95": 0.9}}
    sentence = differences_sentence(scores)
    assert sentence.startswith(f"{favour} of the 20 prompts ({favour * 5}%) favour a over b")
    for other in ("Most prompts favour", "On average the prompts do not favour"):
        assert (other in sentence) == (says is not None and says.startswith(other))
    assert says is None or says in sentence
