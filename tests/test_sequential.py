"""When to stop: the anytime-valid sequential verdict (``rank --sequential``, ``audit`` with ``max_outputs``).

The e-process is checked on synthetic score streams: under the null (no candidate ahead, or two tied at the top)
it names someone in at most ``alpha`` of many streams though it looks after every batch; under an alternative it
stops early and names the right one. End to end, on the bundled demo: a student whose outputs are one
candidate's own answers stops after a few batches, a budget ends an undecided run, ``audit`` queries a (stub)
endpoint batch by batch and stops asking once the verdict concludes, and bad values are ``[Exxx]`` errors.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from attribution.errors import InputError, ModelError
from attribution.inference import describe_verdict
from attribution.sequential import SequentialTest, SpendingTest, spending_boundaries
from attribution.verdicts import Verdict

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stub_openai import Stub, completion, prompt_of  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"
CLASSES = ["a", "b", "c", "d", "e"]


def _run(means, rng, *, n=300, batch=10, sd=0.3, alpha=0.05):
    """One stream: the name the test gives (or None) and the outputs read when it stopped."""
    scores = np.clip(rng.normal(means, sd, size=(n, len(means))), -1, 1)
    test = SequentialTest(CLASSES[:len(means)], alpha=alpha)
    for start in range(0, n, batch):
        if test.add(scores[start:start + batch], start + batch):
            return test.named, test.concluded_at
    return None, n


@pytest.mark.parametrize("means", [[0.0] * 5, [0.05, 0.05, 0, 0, 0]], ids=["all-equal", "two-tied-at-the-top"])
def test_under_the_null_it_names_someone_in_at_most_alpha_of_the_streams_looking_after_every_batch(means):
    rng = np.random.default_rng(0)
    named = [_run(means, rng, batch=5)[0] for _ in range(400)]
    # every name is an error here: no candidate beats every other one
    assert sum(n is not None for n in named) / len(named) <= 0.05


def test_under_an_alternative_it_stops_early_and_names_the_leader():
    rng = np.random.default_rng(1)
    runs = [_run([0.25, 0, 0, 0, 0], rng) for _ in range(40)]
    assert all(name == "a" for name, _ in runs)
    assert np.mean([used for _, used in runs]) < 150


def test_the_leader_and_the_bets_come_from_earlier_batches_only():
    test = SequentialTest(["a", "b", "c"])
    test.add(np.array([[1.0, -1.0, -1.0]] * 10))
    assert np.all(test.log_wealth == 0)  # nothing bet on the first batch: no leader yet
    assert test.leader == 0
    test.add(np.array([[1.0, -1.0, -1.0]] * 10))
    assert test.log_wealth[1] > 0 and test.log_wealth[2] > 0 and test.log_wealth[0] == 0
    result = test.result(outputs_used=20, batch_size=10, max_outputs=None)
    assert result["leader"] == "a" and result["threshold"] == pytest.approx(40.0)
    assert result["p_value"] == pytest.approx(min(1.0, 2 / result["e_value"]))


def test_a_bad_alpha_is_refused():
    with pytest.raises(ModelError, match=r"alpha.*\[E210\]"):
        SequentialTest(["a", "b"], alpha=1.5)


def test_spending_boundaries_match_the_published_obrien_fleming_values():
    # Lan-DeMets O'Brien-Fleming-type spending, 4 equally spaced looks, one-sided alpha 0.025 (Jennison & Turnbull)
    np.testing.assert_allclose(spending_boundaries([0.25, 0.5, 0.75, 1.0], 0.025), [4.333, 2.963, 2.359, 2.014],
                               atol=0.005)
    assert spending_boundaries([1.0], 0.05)[0] == pytest.approx(1.645, abs=1e-3)  # one look: the fixed-n test


def _spend(means, rng, *, n=200, batch=10):
    scores = np.clip(rng.normal(means, 0.3, size=(n, len(means))), -1, 1)
    test = SpendingTest(CLASSES[:len(means)], max_outputs=n, batch_size=batch)
    for start in range(0, n, batch):
        if test.add(scores[start:start + batch], start + batch, top="a"):
            return test.named, test.concluded_at
    return None, n


def test_alpha_spending_keeps_its_level_over_all_looks_and_stops_early_under_an_alternative():
    rng = np.random.default_rng(2)
    # the candidate tested does not beat its rival: named in at most alpha of the streams, over 20 looks each
    assert sum(_spend([0.0, 0.0], rng)[0] is not None for _ in range(400)) / 400 <= 0.05
    runs = [_spend([0.2, 0, 0, 0, 0], rng) for _ in range(40)]
    assert all(name == "a" for name, _ in runs) and np.mean([used for _, used in runs]) < 150


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory):
    from attribution.api import fit_reference
    from attribution.io import read_records
    from attribution.models import save_model

    path = tmp_path_factory.mktemp("sequential") / "demo.npz"
    save_model(fit_reference(read_records(DEMO / "teachers.jsonl", require_teacher=True)), path)
    return path


@pytest.fixture
def gemma_student(tmp_path):
    """A student whose outputs are the gemma candidate's own answers (no 'teacher' field)."""
    rows = [json.loads(line) for line in (DEMO / "teacher_gemma-3-270m.jsonl").read_text().splitlines()]
    path = tmp_path / "student.jsonl"
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "teacher"}) + "\n" for r in rows))
    return path


def test_rank_sequential_stops_as_soon_as_the_verdict_concludes(cli, demo_model, gemma_student, tmp_path):
    runs = []
    for name in ("one.json", "two.json"):
        proc = cli("rank", gemma_student, "--model", demo_model, "--sequential", "--batch-size", "10", "--quiet",
                   "-o", tmp_path / name)
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads((tmp_path / name).read_text()))
    result = runs[0]
    verdict, seq = result["verdict"], result["verdict"]["sequential"]
    assert verdict["status"] == "attributed" and verdict["teacher"] == "gemma-3-270m"
    assert verdict["test"] == "sequential"
    assert seq["stopped"] and seq["outputs_used"] % 10 == 0 and seq["outputs_used"] < 200
    assert result["n_outputs"] == seq["outputs_used"]  # the ranking reads only the outputs used
    assert seq["e_value"] >= seq["threshold"] and verdict["p_value"] < verdict["alpha"]
    assert result["run"]["settings"]["batch_size"] == 10
    assert result["run"]["settings"]["verdict_test"] == "sequential"
    assert runs[1]["verdict"] == verdict and runs[1]["ranking"] == result["ranking"]  # deterministic
    typed = Verdict.from_dict(verdict)  # the report reads it typed
    assert typed.is_sequential and not typed.uses_paired and typed.to_dict() == verdict
    assert "sequential test concluded after" in describe_verdict(typed)
    report = tmp_path / "report.md"
    assert cli("report", tmp_path / "one.json", "-o", report).returncode == 0
    text = report.read_text()  # the methodology describes the test that decided, the glossary its p-value
    assert "The sequential test read the student's outputs in order, 10 at a time" in text
    assert "Sequential verdict: the top-ranked candidate is named when" in text
    assert "under this run's rule (sequential)" in text.replace("\\", "")


def test_a_budget_ends_an_undecided_run_inconclusive(cli, demo_model):
    proc = cli("rank", DEMO / "student_human.jsonl", "--model", demo_model, "--sequential", "--max-outputs", "25",
               "--batch-size", "10", "--format", "json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    seq = result["verdict"]["sequential"]
    assert result["verdict"]["status"] == "inconclusive" and not seq["stopped"]
    assert seq["outputs_used"] == result["n_outputs"] == 25 and seq["looks"] == 3  # 10, 20 and the last 5
    assert "the budget of 25 outputs was spent" in describe_verdict(result["verdict"])


def test_rank_with_alpha_spending_stops_early_within_its_budget(cli, demo_model, gemma_student):
    proc = cli("rank", gemma_student, "--model", demo_model, "--sequential", "--sequential-design", "spending",
               "--max-outputs", "100", "--format", "json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    verdict = json.loads(proc.stdout)["verdict"]
    seq = verdict["sequential"]
    assert verdict["teacher"] == "gemma-3-270m" and seq["design"] == "spending" and seq["stopped"]
    assert seq["outputs_used"] < 100 and seq["z"] >= seq["boundary"] > seq["final_boundary"]
    assert "group-sequential test concluded" in describe_verdict(verdict)


@pytest.mark.parametrize("args, code, message", [
    (["--sequential", "--batch-size", "0"], "E250", "--batch-size must be a whole number of at least 1"),
    (["--sequential", "--max-outputs", "-3"], "E250", "--max-outputs must be a whole number"),
    (["--batch-size", "5"], "E252", "--batch-size applies only with --sequential"),
    (["--sequential", "--group-by", "student"], "E252", "--group-by does not combine with --sequential"),
    (["--sequential", "--verdict-test", "both"], "E252", "--verdict-test does not combine"),
    (["--sequential", "--sequential-design", "spending"], "E252", "needs --max-outputs"),
    (["--sequential", "--sequential-design", "sprt"], "E253", "must be one of e-process, spending"),
    (["--sequential-design", "spending"], "E252", "--sequential-design applies only with --sequential"),
])
def test_bad_sequential_options_are_errors_before_any_work(cli, gemma_student, args, code, message):
    proc = cli("rank", gemma_student, "--reference", DEMO / "teachers.jsonl", *args, "--quiet")
    assert proc.returncode == 2 and f"[{code}]" in proc.stderr and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_without_paired_answers_the_sequential_verdict_cannot_run(cli, tmp_path, gemma_student):
    model = tmp_path / "unpaired.npz"
    refs = [json.loads(line) for line in (DEMO / "teachers.jsonl").read_text().splitlines()]
    (tmp_path / "refs.jsonl").write_text("".join(json.dumps({**r, "id": f"{r['teacher']}-{i}"}) + "\n"
                                                 for i, r in enumerate(refs)))
    assert cli("fit", tmp_path / "refs.jsonl", "-o", model, "--quiet").returncode == 0
    proc = cli("rank", gemma_student, "--model", model, "--sequential", "--quiet")
    assert proc.returncode == 2 and "[E251]" in proc.stderr and "no paired answers" in proc.stderr, proc.stderr


AUDIT = """\
[audit]
prompts = "prompts.jsonl"
max_outputs = {max_outputs}
batch_size = 10

[defaults]
concurrency = 1

[student]
name = "suspect"
endpoint = "{url}"
model = "suspect-model"

[[teachers]]
name = "gemma-3-270m"
file = "{demo}/teacher_gemma-3-270m.jsonl"

[[teachers]]
name = "smollm2-135m"
file = "{demo}/teacher_smollm2-135m.jsonl"

[[teachers]]
name = "human"
file = "{demo}/teacher_human.jsonl"

[attribution]
report = false
"""


def test_audit_with_a_budget_queries_the_suspect_in_batches_and_stops_when_the_verdict_concludes(cli, tmp_path):
    rows = [json.loads(line) for line in (DEMO / "teacher_gemma-3-270m.jsonl").read_text().splitlines()]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"id": r["id"], "prompt": r["prompt"]}) + "\n"
                                                    for r in rows))
    answers = {r["prompt"]: r["output"] for r in rows}  # the suspect answers as the gemma candidate did

    with Stub(lambda handler, body: handler.send(200, completion(answers[prompt_of(body)]))) as stub:
        config = tmp_path / "audit.toml"
        config.write_text(AUDIT.format(max_outputs=150, url=stub.base_url, demo=DEMO))
        proc = cli("audit", config, "-o", tmp_path / "out", "--format", "json", "--quiet")
        assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    seq = result["verdict"]["sequential"]
    assert result["verdict"]["teacher"] == "gemma-3-270m" and seq["stopped"]
    assert len(stub.requests) == seq["outputs_used"] < 150  # asked no more once the verdict concluded
    assert len((tmp_path / "out" / "student.jsonl").read_text().splitlines()) == seq["outputs_used"]


@pytest.mark.parametrize("line, where, message", [
    ("max_outputs = 0", 3, "[audit] max_outputs must be a whole number of at least 1"),
    ("max_outputs = 'many'", 3, "[audit] max_outputs must be int"),
    ("max_outputs = 5\nsequential_design = 'wald'", 4, "[audit] sequential_design must be one of"),
    ("sequential_design = 'spending'", 3, "[audit] sequential_design applies only with max_outputs"),
])
def test_a_bad_budget_is_a_config_error_at_its_line(tmp_path, line, where, message):
    config = tmp_path / "audit.toml"
    config.write_text(AUDIT.format(max_outputs=1, url="http://127.0.0.1:9/v1", demo=DEMO).replace(
        "max_outputs = 1\nbatch_size = 10", line))
    (tmp_path / "prompts.jsonl").write_text('{"id": "q", "prompt": "hi"}\n')
    with pytest.raises(InputError) as info:
        from attribution.audit import load_config

        load_config(config)
    assert info.value.code == "E416" and info.value.line == where and message in str(info.value)


def test_with_families_the_sequential_verdict_names_the_family(cli, gemma_student, tmp_path):
    families = tmp_path / "families.tsv"
    families.write_text("teacher\tfamily\ngemma-3-270m\tsmall\nsmollm2-135m\tsmall\nhuman\thuman\n")
    proc = cli("rank", gemma_student, "--reference", DEMO / "teachers.jsonl", "--families", families, "--sequential",
               "--format", "json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    verdict = json.loads(proc.stdout)["verdict"]
    assert (verdict["status"], verdict["level"], verdict["family"], verdict["teacher"]) == (
        "attributed", "family", "small", None)
    assert set(verdict["sequential"]["wealth"]) == {"small", "human"}
    assert describe_verdict(verdict).startswith("family small: ")
