"""The bundled demo corpus (data/demo/) matches its manifest and is well formed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from attribution.io import read_records

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
MANIFEST = DEMO / "manifest.json"
LABELS = {"smollm2-135m", "gemma-3-270m", "human"}

pytestmark = pytest.mark.skipif(not MANIFEST.is_file(), reason="demo corpus not built")


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(MANIFEST.read_text(encoding="utf-8"))


def test_every_file_matches_its_sha256_and_line_count(manifest):
    listed = manifest["files"]
    on_disk = {p.name for p in DEMO.glob("*.jsonl")}
    assert on_disk == set(listed), "files in data/demo/ and in manifest.json differ"
    for name, entry in listed.items():
        data = (DEMO / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
        assert data.count(b"\n") == entry["lines"], name
        assert len(data) == entry["bytes"], name


def test_corpus_stays_small(manifest):
    assert sum(entry["bytes"] for entry in manifest["files"].values()) < 5_000_000


def test_manifest_records_how_it_was_made(manifest):
    for key in ("source", "teachers", "decoding", "students", "environment", "commands", "seconds_total", "rebuild"):
        assert key in manifest, key
    assert set(manifest["teachers"]) == LABELS
    assert set(manifest["students"]) == LABELS
    assert all(c["command"].startswith("attribute-teacher ") for c in manifest["commands"])


def test_students_answer_only_held_out_prompts():
    train = {r.id for r in read_records(DEMO / "prompts_train.jsonl", text_field="prompt")}
    heldout = {r.id for r in read_records(DEMO / "prompts_heldout.jsonl", text_field="prompt")}
    assert train and heldout and not train & heldout
    for label in LABELS:
        refs = read_records(DEMO / f"teacher_{label}.jsonl", require_teacher=True)
        assert {r.teacher for r in refs} == {label}
        assert {r.id for r in refs} <= train
        outputs = read_records(DEMO / f"student_{label}.jsonl", require_teacher=True)
        assert {r.teacher for r in outputs} == {label}
        assert len({r.student for r in outputs}) == 1
        assert {r.id for r in outputs} <= heldout and len(outputs) >= 0.9 * len(heldout)


def test_combined_reference_holds_all_teachers():
    refs = read_records(DEMO / "teachers.jsonl", require_teacher=True)
    assert {r.teacher for r in refs} == LABELS
    n = sum(1 for label in LABELS for _ in (DEMO / f"teacher_{label}.jsonl").open(encoding="utf-8"))
    assert len(refs) == n


@pytest.mark.parametrize("label", sorted(LABELS))
def test_main_job_ranks_the_true_teacher_first(label):
    """The README's command: each demo student's true teacher comes first."""
    from conftest import run_cli

    res = run_cli(f"data/demo/student_{label}.jsonl", "--reference", "data/demo/teachers.jsonl", "--format", "json",
                  cwd=DEMO.parents[1])
    assert res.returncode == 0, res.stderr
    ranking = json.loads(res.stdout)["ranking"]
    assert ranking[0]["teacher"] == label
    assert ranking[0]["probability"] > 0.5
