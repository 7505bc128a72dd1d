"""``attribute-teacher probes`` / :func:`attribution.probes.rank_probes` on the bundled demo: the demo's
teachers.jsonl holds every demo teacher's answer to the same prompts, so a model fitted on it keeps paired
answers whose prompts can be ranked."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from attribution.api import fit_reference
from attribution.errors import ModelError
from attribution.io import read_records
from attribution.probes import prompt_scores, rank_probes

from conftest import run_cli

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
TEACHERS = DEMO / "teachers.jsonl"


@pytest.fixture(scope="module")
def records():
    return read_records(TEACHERS, require_teacher=True)


@pytest.fixture(scope="module")
def model(records):
    return fit_reference(records)


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("probes") / "demo.npz"
    model.save(path)
    return path


def test_every_paired_prompt_is_ranked_best_first_and_ties_go_by_id(model):
    table = rank_probes(model)
    sub = model.model_for(None if list(model.models_) == [None] else next(iter(model.models_)))
    assert list(table.columns) == ["id", "task", "score", "rank"]
    assert sorted(table["id"]) == sorted(sub.paired_.prompt_ids.tolist())
    assert list(table["rank"]) == list(range(1, len(table) + 1))
    scores = table["score"].to_numpy()
    assert np.all(np.diff(scores) <= 0)
    assert scores[0] > scores[-1]  # the prompts differ
    for (s1, i1), (s2, i2) in zip(zip(scores, table["id"]), zip(scores[1:], table["id"][1:])):
        assert s1 > s2 or i1 < i2
    assert rank_probes(model).equals(table)  # deterministic
    assert rank_probes(model, 5).equals(table.head(5))


def test_the_score_is_half_the_log_odds_gap_to_the_nearest_rival_averaged_over_candidates(model):
    """Recomputed pair by pair from the classifier's log-probabilities of each candidate's answer."""
    sub = next(iter(model.models_.values()))
    s = sub.paired_.answer_log_proba(sub.classifier_)
    k = s.shape[1]
    for p in (0, len(s) // 2, len(s) - 1):
        nearest = [min((s[p, f, f] - s[p, f, g] - s[p, g, f] + s[p, g, g]) / 2 for g in range(k) if g != f)
                   for f in range(k)]
        assert prompt_scores(sub)[p] == pytest.approx(np.mean(nearest))


def test_families_rank_by_how_well_the_answers_separate_the_families(records):
    """Grouping the two model teachers into one family changes what must be told apart: the scores change,
    and they still cover every paired prompt."""
    grouped = fit_reference(records, families={"gemma-3-270m": "llm", "smollm2-135m": "llm"})
    sub = next(iter(grouped.models_.values()))
    assert sub.hierarchy().families == ["human", "llm"]
    table = rank_probes(grouped)
    assert len(table) == len(sub.paired_.prompt_ids)
    plain = rank_probes(fit_reference(records)).set_index("id")["score"]
    assert not np.allclose(table.set_index("id")["score"].reindex(plain.index), plain)


def test_cli_writes_the_ranking_and_reference_prompts_that_generate_can_read(model, model_file, records, tmp_path):
    out = tmp_path / "probes.jsonl"
    result = run_cli("probes", "--model", model_file, "-n", "4", "-o", out, "--quiet")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    expected = rank_probes(model, 4)
    assert [r["id"] for r in rows] == expected["id"].tolist()
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert [r["score"] for r in rows] == pytest.approx(expected["score"].tolist(), abs=1e-6)
    assert all(set(r) == {"id", "task", "score", "rank"} for r in rows)

    with_prompts = tmp_path / "prompts.jsonl"
    result = run_cli("probes", "-m", model_file, "-n", "4", "-r", TEACHERS, "-o", with_prompts, "--quiet")
    assert result.returncode == 0, result.stderr
    prompt_of = {r.id: r.prompt for r in records}
    from attribution.distill._jsonl import read_prompts  # what generate/collect -p read

    prompts = read_prompts(with_prompts)
    assert [p.key for p in prompts] == [r["id"] for r in rows]
    assert [p.output for p in prompts] == [prompt_of[r["id"]] for r in rows]


def test_cli_prints_to_stdout_without_output(model_file):
    result = run_cli("probes", "-m", model_file, "-n", "2")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["rank"] for line in result.stdout.splitlines()] == [1, 2]


def test_a_model_without_paired_answers_is_refused_with_e240(records, tmp_path):
    unpaired = fit_reference([dataclasses.replace(r, id=None) for r in records[::3]])
    with pytest.raises(ModelError, match=r"E240"):
        rank_probes(unpaired)
    path = tmp_path / "unpaired.npz"
    unpaired.save(path)
    out = tmp_path / "probes.jsonl"
    result = run_cli("probes", "-m", path, "-o", out)
    assert result.returncode == 2
    assert "no paired answers" in result.stderr and "[E240]" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_a_reference_without_a_ranked_prompt_is_refused_with_e241_and_nothing_written(model, model_file, tmp_path):
    top = rank_probes(model, 1)["id"].iloc[0]
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps({"id": "other", "prompt": "Something else?"}) + "\n", encoding="utf-8")
    out = tmp_path / "probes.jsonl"
    result = run_cli("probes", "-m", model_file, "-n", "1", "-r", partial, "-o", out)
    assert result.returncode == 2
    assert f"{partial}: prompt id '{top}'" in result.stderr and "[E241]" in result.stderr
    assert not out.exists()


def test_the_output_never_overwrites_the_model(model_file):
    before = model_file.read_bytes()
    result = run_cli("probes", "-m", model_file, "-o", model_file)
    assert result.returncode == 2 and "[E120]" in result.stderr
    assert model_file.read_bytes() == before


def test_a_task_without_paired_answers_is_left_out_with_a_note(records, tmp_path):
    mixed = fit_reference([*records, *(dataclasses.replace(r, task="unpaired", id=None) for r in records[::3])])
    table = rank_probes(mixed)
    paired_task = next(t for t, m in mixed.models_.items() if m.paired_ is not None)
    assert set(table["task"]) == {paired_task}
    path = tmp_path / "mixed.npz"
    mixed.save(path)
    result = run_cli("probes", "-m", path, "-n", "3")
    assert result.returncode == 0, result.stderr
    assert "task 'unpaired' has no paired answers" in result.stderr
    assert [json.loads(line)["task"] for line in result.stdout.splitlines()] == [paired_task] * 3
