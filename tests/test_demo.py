"""The bundled demo corpus (data/demo/) matches its manifest and is well formed."""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from pathlib import Path

import pytest

from attribution.io import read_records

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"
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


def test_combined_reference_holds_the_teacher_files_and_every_answer_to_the_students_prompts():
    """teachers.jsonl: each teacher file, then every teacher's answer to every held-out prompt (what the
    paired test needs); the students answer held-out prompts only."""
    refs = read_records(DEMO / "teachers.jsonl", require_teacher=True)
    heldout = {r.id for r in read_records(DEMO / "prompts_heldout.jsonl", text_field="prompt")}
    training = [r for r in refs if r.id not in heldout]
    for label in sorted(LABELS):
        own = read_records(DEMO / f"teacher_{label}.jsonl", require_teacher=True)
        assert [(r.id, r.output) for r in training if r.teacher == label] == [(r.id, r.output) for r in own]
        assert sorted(r.id for r in refs if r.teacher == label and r.id in heldout) == sorted(heldout)


@pytest.mark.parametrize("label", sorted(LABELS))
def test_main_job_names_each_students_true_teacher_by_the_paired_test(label):
    """The README's command: each demo student's true teacher comes first, and the paired test, run on
    the candidates' answers to the student's own prompts, names it."""
    from conftest import run_cli

    res = run_cli(f"data/demo/student_{label}.jsonl", "--reference", "data/demo/teachers.jsonl", "--format", "json",
                  cwd=REPO)
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert result["ranking"][0]["teacher"] == label
    assert result["ranking"][0]["probability"] > 0.5
    verdict = result["verdict"]
    assert verdict["status"] == "attributed" and verdict["teacher"] == label
    assert verdict["n_paired"] == result["n_outputs"]  # every output's prompt has every candidate's answer


def test_readme_shows_what_its_first_command_prints():
    """README's quick-start command, and the sample output under it character for character: what a
    terminal shows, stderr's notes and warnings (progress bars erase themselves) then stdout."""
    from conftest import run_cli

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    command = re.search(r"&& attribute-teacher (data/demo/.+)$", readme, re.MULTILINE)
    assert command, "the README's first command ranks a demo student"
    shown = re.search(r"```text\n(.*?)```", readme[command.end():], re.DOTALL)
    assert shown, "a text block after the command shows its output"
    res = run_cli(*shlex.split(command.group(1)), cwd=REPO)
    assert res.returncode == 0, res.stderr
    terminal = [line.rsplit("\r", 1)[-1] for line in res.stderr.split("\n")]  # a bar's line ends erased
    printed = [line for line in terminal if line.strip()] + res.stdout.splitlines()
    assert "\n".join(printed) + "\n" == shown.group(1)
