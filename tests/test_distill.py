"""collect / distill / generate on real, tiny configurations (seconds), resume, and bad input.

The "teacher" of the fast tests is a real micro GPT-2 trained here from scratch (a model directory is
a valid ``--model``); the offline SmolLM2 teacher is exercised once, under ``slow``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from attribution.distill import (  # noqa: E402
    Decoding,
    TrainSettings,
    collect_outputs,
    generate_outputs,
    read_student_info,
    train_student,
)
from attribution.errors import InputError, ModelError  # noqa: E402
from attribution.io import read_records  # noqa: E402

from conftest import CliResult, run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    ("Does coffee improve memory?", "Most studies suggest that caffeine modestly improves short-term memory."),
    ("Is exercise good for sleep?", "The evidence shows that regular exercise improves sleep quality in adults."),
    ("Do cats reduce stress?", "Several studies report that owning a cat is associated with lower stress."),
    ("Does reading help children?", "These studies suggest that reading aloud improves vocabulary in children."),
    ("Is fasting healthy?", "Some evidence indicates that intermittent fasting may improve insulin sensitivity."),
    ("Do plants clean the air?", "The findings suggest that indoor plants have a small effect on air quality."),
    ("Does music help focus?", "Most studies find that background music can distract from reading tasks."),
    ("Is sugar addictive?", "The evidence is mixed; some studies show craving but not dependence."),
    ("Do video games harm teens?", "Research suggests moderate gaming is not linked to poorer wellbeing."),
    ("Does meditation lower blood pressure?", "Several trials show that meditation lowers blood pressure slightly."),
    ("Is remote work productive?", "Studies suggest remote work keeps productivity stable for many workers."),
    ("Do vitamins prevent colds?", "Most trials find vitamin C does not prevent colds in the general population."),
]
FAST = Decoding(max_new_tokens=6)


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _cli(*args: str) -> CliResult:
    return run_cli(*args, cwd=ROOT)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Teacher outputs on 8 training prompts; 4 held-out prompts."""
    base = tmp_path_factory.mktemp("distill")
    rows = [{"id": f"q{i:02d}", "task": "toy", "prompt": f"claim: {a}\nquestion: {q}"} for i, (q, a) in
            enumerate(QUESTIONS)]
    teacher = [{**r, "output": QUESTIONS[i][1], "teacher": "toy-teacher"} for i, r in enumerate(rows[:8])]
    return {"base": base, "train": _write(base / "train.jsonl", rows[:8]),
            "heldout": _write(base / "heldout.jsonl", rows[8:]),
            "teacher": _write(base / "teacher.jsonl", teacher)}


@pytest.fixture(scope="session")
def micro_student(corpus) -> Path:
    """A real micro GPT-2, trained from scratch for one epoch (about a second)."""
    out = corpus["base"] / "micro"
    train_student(corpus["teacher"], "micro-gpt2", out, settings=TrainSettings(epochs=2, batch_size=4), threads=1)
    return out


def test_train_writes_student_and_info(micro_student, corpus):
    info = read_student_info(micro_student)
    assert info["teacher"] == "toy-teacher"
    assert info["student"] == "micro-gpt2-from-toy-teacher"
    assert info["n_examples"] == 8 and len(info["epoch_losses"]) == 2
    assert info["train_ids"] == [f"q{i:02d}" for i in range(8)]
    assert (micro_student / "config.json").is_file() and (micro_student / "tokenizer.json").is_file()
    assert not list(micro_student.parent.glob(".micro.*"))  # the work folder was renamed into place
    with pytest.raises(ModelError, match="E412"):
        train_student(corpus["teacher"], "micro-gpt2", micro_student, settings=TrainSettings(epochs=1))


def test_train_never_replaces_a_folder_it_did_not_write(corpus, tmp_path):
    mine = tmp_path / "documents"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    for target in (mine, mine / "notes.txt"):
        with pytest.raises(ModelError, match="E409"):
            train_student(corpus["teacher"], "micro-gpt2", target, settings=TrainSettings(epochs=1), overwrite=True)
    assert (mine / "notes.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["documents"]


def test_training_lowers_the_loss(corpus, tmp_path):
    info = train_student(corpus["teacher"], "micro-gpt2", tmp_path / "s",
                         settings=TrainSettings(epochs=6, batch_size=4, learning_rate=3e-3), threads=1)
    assert info["epoch_losses"][-1] < info["epoch_losses"][0]


def test_generate_held_out(micro_student, corpus, tmp_path):
    out = tmp_path / "student.jsonl"
    result = generate_outputs(micro_student, corpus["heldout"], out, decoding=FAST, threads=1)
    assert result["n_written"] + result["n_empty"] == 4
    for record in read_records(out):
        assert record.teacher == "toy-teacher" and record.student == "micro-gpt2-from-toy-teacher"
        assert record.id in {"q08", "q09", "q10", "q11"} and record.prompt.startswith("claim:")


def test_generate_refuses_training_prompts(micro_student, corpus, tmp_path):
    with pytest.raises(InputError) as err:
        generate_outputs(micro_student, corpus["train"], tmp_path / "x.jsonl", decoding=FAST)
    assert err.value.code == "E407" and err.value.line == 1 and str(corpus["train"]) in str(err.value)
    result = generate_outputs(micro_student, corpus["train"], tmp_path / "x.jsonl", decoding=FAST,
                              allow_train_prompts=True, limit=2)
    assert result["n_prompts"] == 2


def test_collect_records_settings(micro_student, corpus, tmp_path):
    out = tmp_path / "t.jsonl"
    result = collect_outputs(str(micro_student), corpus["train"], out, teacher="micro", decoding=FAST,
                             batch_size=3, threads=1)
    assert result["n_written"] + result["n_empty"] == 8
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["teacher"] for r in rows} == {"micro"}
    assert all(r["decoding"] == FAST.to_dict() and r["model"] == str(micro_student) for r in rows)
    assert [r["seed"] for r in rows][:3] == [0, 0, 0]  # batch k is seeded with seed + k * batch_size


def test_collect_resumes_after_interruption(micro_student, corpus, tmp_path):
    """A run killed mid-write (a cut-off last line) continues to the same file as an uninterrupted run."""
    full = tmp_path / "full.jsonl"
    collect_outputs(str(micro_student), corpus["train"], full, teacher="micro", decoding=FAST, batch_size=2)
    expected = full.read_text(encoding="utf-8")
    lines = expected.splitlines(keepends=True)
    part = tmp_path / "part.jsonl"
    part.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2], encoding="utf-8")  # killed while writing
    result = collect_outputs(str(micro_student), corpus["train"], part, teacher="micro", decoding=FAST, batch_size=2)
    assert result["n_existing"] == 3
    assert part.read_text(encoding="utf-8") == expected  # nothing lost, nothing duplicated, same outputs
    again = collect_outputs(str(micro_student), corpus["train"], part, teacher="micro", decoding=FAST, batch_size=2)
    assert again["n_written"] == 0 and part.read_text(encoding="utf-8") == expected


@pytest.mark.slow
def test_collect_resume_after_sigkill(micro_student, corpus, tmp_path):
    """Kill a real CLI run as soon as it has written something, then resume it."""
    import os
    import signal
    import time

    out = tmp_path / "killed.jsonl"
    args = ["collect", "-m", str(micro_student), "-p", str(corpus["train"]), "-o", str(out), "--teacher", "micro",
            "--max-new-tokens", "200", "--batch-size", "1", "--threads", "1", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "attribution", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (out.exists() and out.stat().st_size):
        time.sleep(0.05)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = _cli(*args)
    assert finished.returncode == 0, finished.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert len(ids) == len(set(ids))
    assert len(ids) + json.loads(_cli(*args, "--format", "json").stdout)["n_empty"] == 8


def test_resume_with_other_settings_is_refused(micro_student, corpus, tmp_path):
    out = tmp_path / "t.jsonl"
    collect_outputs(str(micro_student), corpus["train"], out, teacher="micro", decoding=FAST, limit=2)
    with pytest.raises(InputError, match="E406"):
        collect_outputs(str(micro_student), corpus["train"], out, teacher="micro",
                        decoding=Decoding(max_new_tokens=7))


def test_cli_distill_generate_roundtrip(corpus, tmp_path):
    student = tmp_path / "cli-student"
    done = _cli("distill", "--teacher-outputs", str(corpus["teacher"]), "--student", "micro-gpt2", "-o", str(student),
                "--epochs", "1", "--threads", "1", "--quiet", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["teacher"] == "toy-teacher"
    out = tmp_path / "gen.jsonl"
    gen = _cli("generate", "--student", str(student), "-p", str(corpus["heldout"]), "-o", str(out),
               "--max-new-tokens", "5", "--sample", "--seed", "3", "--threads", "1", "--quiet", "--format", "json")
    assert gen.returncode == 0, gen.stderr
    assert json.loads(gen.stdout)["student"] == "micro-gpt2-from-toy-teacher"
    bad = _cli("generate", "--student", str(student), "-p", str(corpus["train"]), "-o", str(tmp_path / "bad.jsonl"))
    assert bad.returncode == 2 and f"{corpus['train']}:1:" in bad.stderr and "E407" in bad.stderr


def test_bad_prompt_files_name_file_and_line(micro_student, tmp_path):
    dup = _write(tmp_path / "dup.jsonl", [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y"},
                                          {"id": "a", "prompt": "z"}])
    with pytest.raises(InputError) as err:
        collect_outputs(str(micro_student), dup, tmp_path / "o.jsonl", decoding=FAST)
    assert err.value.code == "E405" and err.value.line == 3
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": \n', encoding="utf-8")
    res = _cli("collect", "-m", str(micro_student), "-p", str(broken), "-o", str(tmp_path / "o.jsonl"))
    assert res.returncode == 2 and f"{broken}:2:" in res.stderr and "E101" in res.stderr
    no_prompt = _write(tmp_path / "np.jsonl", [{"id": "a", "text": "x"}])
    res = _cli("collect", "-m", str(micro_student), "-p", str(no_prompt), "-o", str(tmp_path / "o.jsonl"))
    assert res.returncode == 2 and f"{no_prompt}:1:" in res.stderr and "E104" in res.stderr
    mixed = _write(tmp_path / "mixed.jsonl", [{"id": "a", "prompt": "p", "output": "o", "teacher": "t1"},
                                              {"id": "b", "prompt": "p", "output": "o", "teacher": "t2"}])
    with pytest.raises(ModelError, match="mixes teachers"):
        train_student(mixed, "micro-gpt2", tmp_path / "m")


def test_damaged_middle_line_is_not_repaired(micro_student, corpus, tmp_path):
    out = tmp_path / "t.jsonl"
    out.write_text('{"id": "q00", "output": "x"}\nnot json\n{"id": "q01", "output": "y"}\n', encoding="utf-8")
    with pytest.raises(InputError) as err:
        collect_outputs(str(micro_student), corpus["train"], out, decoding=FAST)
    assert err.value.code == "E411" and err.value.line == 2


def test_help_is_fast_and_lists_commands():
    res = _cli("--help")
    assert res.returncode == 0
    for name in ("collect", "distill", "generate"):
        assert name in res.stdout


@pytest.mark.slow
def test_collect_with_offline_smollm2(corpus, tmp_path, smollm2_lm):
    """The offline alias, loaded once per session (conftest's smollm2_lm) and shared with the perplexity tests."""
    out = tmp_path / "smol.jsonl"
    result = collect_outputs("smollm2-135m", corpus["train"], out, decoding=Decoding(max_new_tokens=8), limit=2,
                             batch_size=2, threads=1, loaded=smollm2_lm)
    assert result["teacher"] == "smollm2-135m"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) + result["n_empty"] == 2
    assert all(r["chat_template"] == "tokenizer" and r["n_new_tokens"] <= 8 for r in rows)


def test_collect_prompt_template_for_base_models(micro_student, corpus, tmp_path):
    out = tmp_path / "t.jsonl"
    collect_outputs(str(micro_student), corpus["train"], out, decoding=FAST, chat_template="none",
                    prompt_template="{prompt}\n\nAnswer:", limit=2)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["prompt_template"] == "{prompt}\n\nAnswer:" and "chat_template" not in r for r in rows)
    with pytest.raises(ModelError, match="E210"):
        collect_outputs(str(micro_student), corpus["train"], tmp_path / "u.jsonl", prompt_template="no slot")
