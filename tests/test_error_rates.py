"""Error rates produced by the benchmarks, not copied (issue 21 item 10; issue 19 item 4): the artifact written by
``benchmarks/bench_budget.py``, read and checked by :mod:`attribution.report.error_rates`; Clopper-Pearson intervals;
the ``power`` entry of a result (the measured size nearest at or below the run's, the run with the nearest
number of candidates, and every way the run's settings differ); and what the report says with it.

Artifacts other than the shipped one are written here by the test itself, so expected figures come from them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from scipy.stats import binomtest

from attribution.errors import InputError
from attribution.report import error_rates
from attribution.report.error_rates import clopper_pearson, error_rate_table, load_artifact, power

from conftest import run_cli

REPO = Path(__file__).resolve().parents[1]


def cell(right: int, wrong: int, none: int, named: int, controls: int) -> dict:
    return {"documented": {"right": right, "wrong": wrong, "none": none, "n": right + wrong + none},
            "controls": {"named": named, "n": controls}}


def run(candidates: int, cells: dict[int, dict], **settings) -> dict:
    return {"benchmark": "bench_budget", "commit": "c0ffee" * 6 + "beef", "dirty": False,
            "date": "2026-12-04T16:00:00Z", "command": "python benchmarks/bench_budget.py --draws 3",
            "settings": {"data": f"{candidates}-candidate data", "candidates": candidates, "level": "teacher",
                         "rule": "either", "alpha": 0.05, "features": "combined", **settings},
            "arms": {"random": {str(n): c for n, c in cells.items()}}}


def write(path: Path, runs: dict) -> Path:
    path.write_text(json.dumps({"format": error_rates.FORMAT, "version": error_rates.VERSION, "runs": runs}),
                    encoding="utf-8")
    return path


@pytest.fixture
def artifact(tmp_path) -> Path:
    return write(tmp_path / "rates.json", {
        "budget/five": run(5, {10: cell(2, 0, 18, 1, 8), 50: cell(11, 1, 8, 0, 8)}),
        "budget/bank": run(26, {10: cell(1, 0, 19, 0, 8), 50: cell(7, 0, 13, 0, 8)}, level="family"),
    })


# -- the interval ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("k", "n"), [(0, 9), (9, 9), (1, 80), (3, 18), (50, 100), (0, 1), (1, 1)])
def test_clopper_pearson_is_scipys_exact_interval(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    low, high = clopper_pearson(k, n)
    assert low == pytest.approx(expected.low, abs=1e-9) and high == pytest.approx(expected.high, abs=1e-9)


def test_zero_of_nine_allows_a_third():
    assert error_rates.interval_text(0, 9) == "0 of 9 (0%; 95% CI 0%-34%)"
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)


# -- the artifact ----------------------------------------------------------------------------------------------------
def test_shipped_artifact_was_written_by_the_benchmark():
    runs = load_artifact()
    five = runs["budget/alpacaeval"]
    assert re.fullmatch(r"[0-9a-f]{40}", five.commit) and five.command.startswith("python benchmarks/bench_budget.py")
    assert five.settings["candidates"] == 5 and five.settings["rule"] == "either" and five.settings["setting"] == "B"
    assert five.sizes("random") == [10, 25, 50, 100, 200, 400] and "probes" in five.arms
    for counts in five.arms["random"].values():
        assert counts.right + counts.wrong + counts.none == counts.n and counts.controls > 0


def test_missing_artifact_is_not_measured_and_said_so(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_artifact(tmp_path / "none.json")
    entry = power(50, 5, path=tmp_path / "none.json")
    assert entry == {"measured": False,
                     "reason": "the error-rate artifact attribution/data/error_rates.json is missing"}


@pytest.mark.parametrize(("text", "detail"), [
    ('{"format": "teacher-attribution error rates",\n "version": 1,\n "runs": {,}}', r":3: .*invalid JSON"),
    ('{"format": "something else", "version": 1, "runs": {}}', "not an error-rate artifact"),
    ('{"format": "teacher-attribution error rates", "version": 7, "runs": {}}',
     "version 7; this reader knows version 1"),
])
def test_damaged_artifact_is_a_clear_error(tmp_path, text, detail):
    path = tmp_path / "rates.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_artifact(path)
    assert err.value.code == "E609" and re.search(detail, str(err.value)) and str(path) in str(err.value)


def test_counts_that_do_not_add_up_are_refused(tmp_path):
    bad = run(5, {10: cell(2, 0, 18, 1, 8)})
    bad["arms"]["random"]["10"]["documented"]["n"] = 21
    with pytest.raises(InputError, match=r"budget/x\.random\.10\.documented: right \+ wrong \+ none \(20\) must "
                                         r"equal n \(21\).*\[E609\]"):
        load_artifact(write(tmp_path / "rates.json", {"budget/x": bad}))
    bad = run(5, {10: cell(2, 0, 18, 1, 8)})
    bad["arms"]["random"]["10"]["controls"]["named"] = True
    with pytest.raises(InputError, match="controls.named must be a count"):
        load_artifact(write(tmp_path / "other.json", {"budget/x": bad}))


def test_rank_stops_on_a_damaged_artifact_without_a_traceback(tmp_path, monkeypatch, student_path, reference_path):
    monkeypatch.setattr(error_rates, "ARTIFACT", write(tmp_path / "rates.json", {"budget/x": {"commit": 3}}))
    out = tmp_path / "result.json"
    res = run_cli("rank", student_path, "--reference", reference_path, "--features", "pos-paper", "-o", out)
    assert res.returncode == 2 and "[E609]" in res.stderr and "Traceback" not in res.stderr
    assert "run 'budget/x' needs 'commit'" in res.stderr and not out.exists()


# -- the power lookup ---------------------------------------------------------------------------------------------
def test_power_reads_the_nearest_size_at_or_below(artifact):
    entry = power(49, 5, features="combined", path=artifact)
    assert entry["measured"] and entry["run"] == "budget/five" and entry["size"] == 10 and entry["n_outputs"] == 49
    assert entry["documented"] == {"right": 2, "wrong": 0, "none": 18, "n": 20,
                                   "right_interval": list(clopper_pearson(2, 20)),
                                   "wrong_interval": list(clopper_pearson(0, 20))}
    assert entry["controls"] == {"named": 1, "n": 8, "interval": list(clopper_pearson(1, 8))}
    assert entry["differences"] == [] and entry["curve"] == [[10, 2, 20], [50, 11, 20]]
    assert entry["commit"] == "c0ffee" * 6 + "beef" and entry["command"].endswith("--draws 3")
    assert power(50, 5, path=artifact)["size"] == 50


def test_power_says_how_the_run_differs_from_what_was_measured(artifact):
    few = power(4, 5, path=artifact)
    assert few["size"] == 10 and few["differences"] == [
        "this run has 4 outputs, fewer than the smallest measured size (10)"]
    many = power(900, 5, path=artifact)
    assert many["size"] == 50 and "more than the largest measured size (50)" in many["differences"][0]
    other = power(50, 20, rule="both", alpha=0.01, features="pos-paper", path=artifact)
    assert other["run"] == "budget/bank" and other["documented"]["right"] == 7  # 20 candidates: nearest is 26
    assert other["differences"] == [
        "this run has 20 candidates; the simulated audits had 26",
        "this run's verdict rule is 'both'; the simulated audits used 'either'",
        "this run's alpha is 0.01; the simulated audits used 0.05",
        "this run's features are 'pos-paper'; the simulated audits used 'combined'"]
    assert power(60, 7, path=artifact)["run"] == "budget/five"


def test_rank_result_carries_power_for_its_size_and_candidates(tmp_path, student_path, reference_path):
    out = tmp_path / "result.json"
    res = run_cli("rank", student_path, "--reference", reference_path, "--features", "pos-paper", "-o", out)
    assert res.returncode == 0, res.stderr
    result = json.loads(out.read_text(encoding="utf-8"))
    entry = result["power"]
    features = error_rates.signature_fields(result["signature"])["features"]
    expected = power(result["n_outputs"], len(result["ranking"]), rule="either", alpha=0.05, features=features)
    for key in ("documented", "controls"):  # the JSON rounds floats to 6 places
        assert entry[key] == {name: pytest.approx(value, abs=1e-6) if isinstance(value, list) else value
                              for name, value in expected[key].items()}
    assert {k: v for k, v in entry.items() if k not in ("documented", "controls")} == {
        k: v for k, v in expected.items() if k not in ("documented", "controls")}
    assert entry["artifact"] == "attribution/data/error_rates.json" and entry["n_outputs"] == result["n_outputs"]
    assert f"this run has {len(result['ranking'])} candidates" in entry["differences"][0]
    assert "this run's features are 'pos-paper'" in entry["differences"][-1]


# -- the full-data table ------------------------------------------------------------------------------------------
def full_run(benchmark: str = "bench_alpacaeval", **cases) -> dict:
    return {"benchmark": benchmark, "commit": "ab" * 20, "date": "2026-12-04T17:00:00Z",
            "command": f"python benchmarks/{benchmark}.py --quick", "settings": {"candidates": 5}, "cases": cases}


def test_full_data_rows_come_from_the_artifact(tmp_path):
    alpaca_run = full_run(documented={"right": 6, "wrong": 1, "none": 2, "n": 9}, controls={"named": 0, "n": 2},
                          left_out={"named": 5, "n": 9}, left_out_both={"named": 0, "n": 9})
    paper_run = {**full_run("bench_unlisted", listed={"right": 4, "wrong": 2, "none": 6, "n": 12},
                            left_out={"named": 3, "n": 12}), "commit": "cd" * 20}
    path = write(tmp_path / "rates.json", {error_rates.FULL_RUN: alpaca_run, error_rates.PAPER_RUN: paper_run})
    rows = error_rate_table(path)
    alpaca = [r for r in rows if r.command.startswith("python benchmarks/bench_alpacaeval.py")]
    assert [(r.n, r.right, r.wrong, r.none) for r in alpaca] == [(9, 6, 1, 2), (2, None, 0, 2), (9, None, 5, 4),
                                                                (9, None, 0, 9)]
    assert alpaca[0].doc_row == "| 9 documented students, all 403 outputs each | 6 | **1** | 2 |"
    assert {r.commit for r in alpaca} == {"ab" * 20}
    # the paper QA rows too: read from their own run, none typed by hand
    paper = rows[len(alpaca):]
    assert [(r.n, r.right, r.wrong, r.none, r.commit) for r in paper] == [(12, 4, 2, 6, "cd" * 20),
                                                                         (12, None, 3, 9, "cd" * 20)]
    assert {r.command for r in paper} == {"python benchmarks/bench_unlisted.py --quick"}
    assert paper[1].doc_row == "| true teacher left out (12 students) | n/a | **3** | 9 |"
    # a run the artifact lacks has no rows (none at all without the runs); a case that does not add up is refused
    assert error_rate_table(write(tmp_path / "alpaca.json", {error_rates.FULL_RUN: alpaca_run})) == tuple(alpaca)
    assert error_rate_table(write(tmp_path / "none.json", {})) == ()
    assert error_rate_table(tmp_path / "missing.json") == ()
    with pytest.raises(InputError, match=r"full/alpacaeval.controls: the counts do not add up to n \(2\)"):
        load_artifact(write(tmp_path / "bad.json", {error_rates.FULL_RUN: full_run(controls={"named": 3, "n": 2})}))

