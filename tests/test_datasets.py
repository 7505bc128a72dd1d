"""The released-data loader: the authors' CSV format, the local layout, the cache, offline errors.

No test touches the network: downloads are exercised through ``file://`` URLs, and the
offline path through a closed local port.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from attribution.datasets import (
    DATA_ENV,
    PAPER_QA_TEACHERS,
    AuthorsCsvReader,
    PaperQAReader,
    csv_name,
    export_paper_qa,
    load_paper_qa,
)
from attribution.errors import AttributionError, InputError

from conftest import ALPACAEVAL, PAPER_QA, needs_shared, run_cli, shared_data

REPO = Path(__file__).resolve().parents[1]
needs_paper_qa = needs_shared(PAPER_QA)


def test_missing_shared_data_fails_under_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the tests that read it"):
        shared_data(tmp_path / "absent")
    assert shared_data(tmp_path) == tmp_path
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="needs the ../shared checkout"):
        shared_data(tmp_path / "absent")


QUESTION = "Question: Where would you keep a book?\nChoices:\nA: shelf\nB: oven\n"
# Rows as the authors wrote them: a multi-line prompt, doubled quotes, the student's "#### " marker.
TEACHER_ROWS = [
    ("q1", QUESTION, 'The answer is A because a "shelf" holds books.'),
    ("q2", "Question: What is cold?\nChoices:\nA: ice\nB: fire\n", "The answer is A because ice is frozen.\n</s>"),
]
STUDENT_ROWS = [
    ("q1", QUESTION, "#### The answer is A because books go on a shelf.<|endoftext|>"),
    ("q2", "Question: What is cold?\nChoices:\nA: ice\nB: fire\n", "#### The answer is A because ice."),
]


def write_authors_csv(path: Path, split: str, rows) -> Path:
    header = ["id", "text", "gold_rationale" if split == "teacher" else "rationale"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)  # pandas' to_csv quoting, as in the release
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def authors_dir(tmp_path: Path) -> Path:
    """One task of the release in the authors' file names, two teachers."""
    root = tmp_path / "qa_outputs"
    root.mkdir()
    for teacher in ("mistral-7b", "llama-3-8b"):
        write_authors_csv(root / csv_name("openbookqa", teacher, "teacher"), "teacher", TEACHER_ROWS)
        write_authors_csv(root / csv_name("openbookqa", teacher, "student"), "student", STUDENT_ROWS)
    return root


def test_file_names_follow_the_authors_spelling():
    assert csv_name("openbookqa", "mistral-7b", "teacher") == "openbookqa_mistral_7b_with_gold_rationales.csv"
    assert csv_name("openbookqa", "mistral-7b", "student") == "openbookqa_GPT2_mistral7b.csv"
    assert csv_name("quarel", "mixtral-8x7b", "student") == "quarel_GPT2_mixtral.csv"
    assert csv_name("commonsenseqa", "gemma-2-9b", "teacher") == "commonsenseqa_gemma2_9b_with_gold_rationales.csv"
    assert len(PAPER_QA_TEACHERS) == 5


def test_authors_csv_becomes_records(tmp_path):
    path = write_authors_csv(tmp_path / "t.csv", "student", STUDENT_ROWS)
    records = list(AuthorsCsvReader(path, task="openbookqa", teacher="mistral-7b", split="student"))
    assert [r.id for r in records] == ["q1", "q2"]
    first = records[0]
    assert first.prompt == QUESTION  # the 'text' column is the question, newlines kept
    assert first.output.startswith("#### The answer is A")  # raw, as released; normalization is later
    assert (first.task, first.teacher, first.student) == ("openbookqa", "mistral-7b", "gpt2")
    assert first.line == 2 and records[1].line == 7  # physical line of each multi-line CSV row
    teacher = list(AuthorsCsvReader(write_authors_csv(tmp_path / "r.csv", "teacher", TEACHER_ROWS),
                                    task="openbookqa", teacher="llama-3-8b", split="teacher"))
    assert teacher[0].output == 'The answer is A because a "shelf" holds books.'
    assert teacher[0].student is None


def test_empty_rationale_names_file_and_line(tmp_path):
    path = write_authors_csv(tmp_path / "t.csv", "teacher", [*TEACHER_ROWS, ("q3", "Question: x?\n", "")])
    with pytest.raises(InputError) as info:
        list(AuthorsCsvReader(path, task="openbookqa", teacher="llama-3-8b", split="teacher"))
    assert str(info.value).startswith(f"{path}:13: field 'gold_rationale' must be a non-empty string")
    reader = AuthorsCsvReader(path, task="openbookqa", teacher="llama-3-8b", split="teacher", skip_invalid=True)
    assert len(list(reader)) == 2 and reader.skipped[0].line == 13


def test_wrong_columns_are_reported(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,text,answer\nq1,Question,The answer is A.\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"t.csv:2: missing required field 'gold_rationale' \[E107\]"):
        list(AuthorsCsvReader(path, task="openbookqa", teacher="llama-3-8b", split="teacher"))


def test_local_directory_of_authors_csvs(authors_dir):
    refs = load_paper_qa("teacher", data_dir=authors_dir, teachers=["llama-3-8b", "mistral-7b"])
    assert [(r.teacher, r.id) for r in refs] == [("llama-3-8b", "q1"), ("llama-3-8b", "q2"),
                                                 ("mistral-7b", "q1"), ("mistral-7b", "q2")]
    assert {r.task for r in refs} == {"openbookqa"}
    with pytest.raises(InputError, match=r"E602"):  # gemma's file is not there
        load_paper_qa("teacher", data_dir=authors_dir, tasks=["openbookqa"])


def test_download_into_cache_then_read_from_cache(authors_dir, tmp_path):
    cache = tmp_path / "cache"
    options = {"tasks": ["openbookqa"], "teachers": ["mistral-7b"], "cache_dir": cache,
               "base_url": authors_dir.as_uri()}
    students = load_paper_qa("student", **options)
    assert (cache / "openbookqa_GPT2_mistral7b.csv").is_file()
    assert [r.student for r in students] == ["gpt2", "gpt2"]
    for path in authors_dir.iterdir():  # the source is gone: the cache must serve
        path.unlink()
    assert load_paper_qa("student", **options) == students  # same records, same source: the cache file


def test_offline_download_fails_clearly_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(DATA_ENV, raising=False)
    cache = tmp_path / "cache"
    with pytest.raises(AttributionError) as info:
        load_paper_qa("teacher", tasks=["quarel"], cache_dir=cache, base_url="http://127.0.0.1:9/qa_outputs")
    assert info.value.code == "E601"
    message = str(info.value)
    assert "quarel_gemma2_9b_with_gold_rationales.csv" in message and "data_dir=" in message
    assert DATA_ENV in message
    assert not cache.exists() or not any(cache.iterdir())  # no half-written file
    with pytest.raises(InputError, match=r"E602"):
        load_paper_qa("teacher", tasks=["quarel"], cache_dir=cache, download=False)


def test_environment_variable_names_the_local_copy(authors_dir, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(authors_dir))
    assert len(load_paper_qa("student", teachers=["mistral-7b"])) == 2


def test_bad_choices_are_rejected(authors_dir):
    with pytest.raises(InputError, match=r"unknown task 'squad'.*\[E603\]"):
        load_paper_qa("teacher", tasks=["squad"], data_dir=authors_dir)
    with pytest.raises(InputError, match=r"unknown split 'students'"):
        load_paper_qa("students", data_dir=authors_dir)
    with pytest.raises(InputError, match=r"E109"):
        load_paper_qa("teacher", data_dir=authors_dir / "missing")


def test_export_writes_the_jsonl_layout_and_reads_back(authors_dir, tmp_path):
    out = tmp_path / "jsonl"
    result = export_paper_qa(out, data_dir=authors_dir, teachers=["mistral-7b", "llama-3-8b"])
    assert result["files"] == {"openbookqa_student.jsonl": 4, "openbookqa_teacher.jsonl": 4}
    row = json.loads((out / "openbookqa_student.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert row == {"id": "q1", "task": "openbookqa", "teacher": "mistral-7b", "student": "gpt2",
                   "prompt": QUESTION, "output": STUDENT_ROWS[0][2]}
    again = load_paper_qa("student", data_dir=out)
    original = load_paper_qa("student", data_dir=authors_dir, teachers=["mistral-7b", "llama-3-8b"])
    assert [r.to_dict() for r in again] == [r.to_dict() for r in original]


def test_data_paper_qa_refuses_an_incomplete_copy_and_exports_a_complete_one(authors_dir, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("data", "paper-qa", "--data-dir", authors_dir, "-o", out, "--format", "json")
    assert proc.returncode == 2, proc.stderr  # gemma-2-9b and others are missing from this copy
    assert "E602" in proc.stderr
    for teacher in PAPER_QA_TEACHERS:  # complete the copy
        for split, rows in (("teacher", TEACHER_ROWS), ("student", STUDENT_ROWS)):
            write_authors_csv(authors_dir / csv_name("openbookqa", teacher, split), split, rows)
    proc = run_cli("data", "paper-qa", "--data-dir", authors_dir, "-o", out, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"files": {"openbookqa_student.jsonl": 10, "openbookqa_teacher.jsonl": 10},
                                       "skipped": 0}


@needs_paper_qa
def test_released_copy_counts():
    reader = PaperQAReader("teacher", data_dir=PAPER_QA)
    refs = list(reader)
    # 448 + 391 records in the copy; one CommonsenseQA teacher output is empty and skipped
    assert len(refs) == 448 + 391 - 1 and len(reader.skipped) == 1
    assert "commonsenseqa_teacher.jsonl:26" in str(reader.skipped[0])
    students = load_paper_qa("student", data_dir=PAPER_QA)
    assert len(students) == 315 + 338
    assert {r.teacher for r in students} == set(PAPER_QA_TEACHERS)
    assert {r.task for r in students} == {"commonsenseqa", "openbookqa"}


def test_docstring_examples_run():
    import doctest

    import attribution.datasets

    result = doctest.testmod(attribution.datasets, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# -- AlpacaEval provenance benchmark ------------------------------------------------------------

from attribution.datasets import (  # noqa: E402
    ALPACAEVAL_ENV,
    ALPACAEVAL_SPLITS,
    ALPACAEVAL_STUDENTS,
    ALPACAEVAL_TEACHERS,
    alpacaeval_id,
    bank_candidates,
    build_alpacaeval,
    documented_teacher,
    documented_teachers,
    load_alpacaeval,
    read_alpacaeval_outputs,
    split_instructions,
)

needs_alpacaeval = needs_shared(ALPACAEVAL)
INSTRUCTIONS = [f"Instruction number {i}: explain topic {i}." for i in range(11)]


def write_model_outputs(root: Path, model: str, outputs: dict[str, str]) -> Path:
    """One ``results/<model>/model_outputs.json`` as AlpacaEval publishes it."""
    path = root / model / "model_outputs.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"instruction": text, "output": out, "generator": model, "dataset": "helpful_base"}
            for text, out in outputs.items()]
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return path


@pytest.fixture
def alpacaeval_results(tmp_path: Path) -> Path:
    """A fake AlpacaEval results/ folder: two teachers, two students (one undocumented), 11 instructions."""
    root = tmp_path / "results"
    for model in ("teacher-a", "teacher-b", "alpaca-7b", "mystery-7b"):
        outputs = {text: f"{model} answers: {text}" for text in INSTRUCTIONS}
        if model == "teacher-b":
            outputs[INSTRUCTIONS[3]] = ""  # an empty output is left out
        write_model_outputs(root, model, outputs)
    return root


@pytest.fixture
def fake_fetch(alpacaeval_results, monkeypatch):
    """Serve downloads from the fake results/ folder; remember the URLs asked for."""
    import shutil

    import attribution.datasets.alpacaeval as datasets  # where fetch is looked up

    urls: list[str] = []

    def fetch(url, path, **_):
        urls.append(url)
        model = url.split("/")[-2]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(alpacaeval_results / model / "model_outputs.json", path)
        return Path(path)

    monkeypatch.setattr(datasets, "fetch", fetch)
    return urls


def test_alpacaeval_ids_and_split():
    assert alpacaeval_id("How did US states get their names?") == "f2bf20386693"
    reference, audit = split_instructions(INSTRUCTIONS, seed=0)
    assert len(reference) == 5 and len(audit) == 6 and not set(reference) & set(audit)
    assert set(reference) | set(audit) == {alpacaeval_id(t) for t in INSTRUCTIONS}
    # order and repeats don't matter
    assert split_instructions(reversed(INSTRUCTIONS * 2), seed=0) == (reference, audit)
    assert split_instructions(INSTRUCTIONS, seed=1) != (reference, audit)


def test_build_alpacaeval_from_published_outputs(fake_fetch, tmp_path):
    out = tmp_path / "bench"
    result = build_alpacaeval(out, teachers=["teacher-a", "teacher-b"], students=["alpaca-7b", "mystery-7b"],
                              cache_dir=tmp_path / "cache", base_url="https://example.invalid/results")
    assert fake_fetch == [f"https://example.invalid/results/{m}/model_outputs.json"
                          for m in ("teacher-a", "teacher-b", "alpaca-7b", "mystery-7b")]
    assert (result["instructions"], result["reference"], result["audit"]) == (11, 5, 6)
    assert result["empty"] == {"teacher-b": 1}
    reference, audit = split_instructions(INSTRUCTIONS)
    refs = load_alpacaeval("teachers_reference", out)
    held = load_alpacaeval("teachers_audit", out)
    students = load_alpacaeval("students_audit", out)
    assert result["files"] == {"teachers_reference.jsonl": len(refs), "teachers_audit.jsonl": len(held),
                               "students_audit.jsonl": len(students), "prompts_audit.jsonl": 6}
    prompts = [json.loads(line) for line in (out / "prompts_audit.jsonl").read_text(encoding="utf-8").splitlines()]
    assert prompts == [{"id": alpacaeval_id(t), "prompt": t, "task": "alpaca_eval"}
                       for t in sorted(INSTRUCTIONS, key=alpacaeval_id) if alpacaeval_id(t) in audit]
    assert len(refs) + len(held) == 2 * 11 - 1 and len(students) == 2 * 6
    assert {r.id for r in refs} == set(reference) and {r.id for r in held} == set(audit) == {r.id for r in students}
    first = refs[0]
    assert (first.task, first.teacher, first.student) == ("alpaca_eval", "teacher-a", None)
    assert first.id == alpacaeval_id(first.prompt) and first.output == f"teacher-a answers: {first.prompt}"
    assert [r.id for r in refs if r.teacher == "teacher-a"] == sorted(reference)  # sorted by id per model
    labels = {(r.student, r.teacher) for r in students}
    assert labels == {("alpaca-7b", "text_davinci_003"), ("mystery-7b", None)}  # documented teacher, or none known
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["seed"] == 0 and manifest["students"] == {"alpaca-7b": "text_davinci_003", "mystery-7b": None}
    assert set(manifest["model_outputs_sha256"]) == {"teacher-a", "teacher-b", "alpaca-7b", "mystery-7b"}
    # the cache now serves: no second download, same files
    again = build_alpacaeval(tmp_path / "again", teachers=["teacher-a", "teacher-b"],
                             students={"alpaca-7b": "x", "mystery-7b": None}, cache_dir=tmp_path / "cache",
                             download=False)
    assert len(fake_fetch) == 4 and again["files"] == result["files"]
    assert {r.teacher for r in load_alpacaeval("students_audit", tmp_path / "again")} == {"x", None}


def test_build_alpacaeval_refuses_bad_input(fake_fetch, tmp_path, alpacaeval_results):
    with pytest.raises(InputError, match=r"E602"):  # not cached, no download allowed
        build_alpacaeval(tmp_path / "o", teachers=["teacher-a"], students=[], cache_dir=tmp_path / "empty",
                         download=False)
    with pytest.raises(InputError, match=r"also a teacher"):
        build_alpacaeval(tmp_path / "o", teachers=["teacher-a"], students=["teacher-a"], cache_dir=tmp_path / "c")
    bad = alpacaeval_results / "broken" / "model_outputs.json"
    bad.parent.mkdir()
    bad.write_text('{"instruction": "x"}', encoding="utf-8")
    with pytest.raises(InputError, match=r"not a JSON list"):
        read_alpacaeval_outputs(bad)
    bad.write_text('[{"output": "no instruction"}]', encoding="utf-8")
    with pytest.raises(InputError, match=r"item 0 needs a string 'instruction'"):
        build_alpacaeval(tmp_path / "o", teachers=["broken"], students=[], cache_dir=alpacaeval_results,
                         download=False)
    assert not (tmp_path / "o").exists()  # nothing written


def test_build_alpacaeval_offline_fails_clearly(tmp_path):
    with pytest.raises(AttributionError) as info:
        build_alpacaeval(tmp_path / "o", teachers=["teacher-a"], students=[], cache_dir=tmp_path / "cache",
                         base_url="http://127.0.0.1:9/results")
    assert info.value.code == "E601" and "cache_dir=" in str(info.value)
    assert "teacher-a/model_outputs.json" in str(info.value)


def test_load_alpacaeval_needs_a_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(ALPACAEVAL_ENV, raising=False)
    with pytest.raises(InputError, match=rf"E602.*|{ALPACAEVAL_ENV}") as info:
        load_alpacaeval("teachers_reference")
    assert ALPACAEVAL_ENV in str(info.value) and "data alpacaeval" in str(info.value)
    with pytest.raises(InputError, match=r"unknown split 'students'.*\[E603\]"):
        load_alpacaeval("students", tmp_path)
    with pytest.raises(InputError, match=r"E602"):
        load_alpacaeval("teachers_audit", tmp_path)
    (tmp_path / "teachers_audit.jsonl").write_text(
        '{"id": "a", "task": "alpaca_eval", "teacher": "t", "output": "hello"}\n', encoding="utf-8")
    monkeypatch.setenv(ALPACAEVAL_ENV, str(tmp_path))
    assert [r.teacher for r in load_alpacaeval("teachers_audit")] == ["t"]


def test_documented_teachers_table():
    rows = documented_teachers()
    assert len(rows) >= 20
    known = {*ALPACAEVAL_TEACHERS, "none"}
    for row in rows:
        assert set(row) >= {"model", "alpaca_eval", "base", "teacher", "data", "sources"}
        assert row["teacher"] in known, row
        assert row["sources"] and all(url.startswith("https://") for url in row["sources"]), row
    assert len({row["model"] for row in rows}) == len(rows)
    assert [documented_teacher(s) for s in ALPACAEVAL_STUDENTS] == [
        "text_davinci_003", "gpt-3.5-turbo-0301", "gpt-3.5-turbo-0301", "gpt4_0314", "claude-2",
        "gpt-3.5-turbo-0301", "gpt-3.5-turbo-0301", "gpt4_0314", "text_davinci_003", "none", "none"]
    rows[0]["teacher"] = "changed"  # a copy: the package table is not modified
    assert documented_teachers()[0]["teacher"] != "changed"


def test_data_alpacaeval_cli(alpacaeval_results, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("data", "alpacaeval", "-o", out, "--cache-dir", alpacaeval_results, "--no-download",
                   "--teachers", "teacher-a,teacher-b", "--students", "alpaca-7b", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["files"] == {"teachers_reference.jsonl": 10, "teachers_audit.jsonl": 11,
                                                "students_audit.jsonl": 6, "prompts_audit.jsonl": 6}
    assert "family" not in (out / "teachers_audit.jsonl").read_text(encoding="utf-8")
    proc = run_cli("data", "alpacaeval", "-o", tmp_path / "seeded", "--cache-dir", alpacaeval_results,
                   "--no-download", "--teachers", "teacher-a", "--students", "alpaca-7b", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "seeded" / "manifest.json").read_text(encoding="utf-8"))["seed"] == 1
    # --seed is the split's seed, not only recorded
    assert [json.loads(line)["id"] for line in (tmp_path / "seeded" / "prompts_audit.jsonl").open()] == \
        split_instructions(INSTRUCTIONS, seed=1)[1]
    proc = run_cli("data", "alpacaeval", "-o", out, "--cache-dir", tmp_path / "none", "--no-download")
    assert proc.returncode == 2 and "E602" in proc.stderr


@needs_alpacaeval
def test_shared_alpacaeval_copy(tmp_path):
    splits = {split: load_alpacaeval(split, ALPACAEVAL) for split in ALPACAEVAL_SPLITS}
    assert [len(splits[s]) for s in ALPACAEVAL_SPLITS] == [2009, 2014, 4433]
    assert {r.teacher for r in splits["teachers_reference"]} == set(ALPACAEVAL_TEACHERS)
    assert sorted({r.student for r in splits["students_audit"]}) == sorted(ALPACAEVAL_STUDENTS)
    assert all(r.teacher == documented_teacher(r.student) for r in splits["students_audit"])
    # the builder reproduces the shared copy from the same outputs (split, ids, labels, texts)
    cache = tmp_path / "results"
    for model in (*ALPACAEVAL_TEACHERS, *ALPACAEVAL_STUDENTS):
        records = [r for s in splits.values() for r in s if (r.student or r.teacher) == model and
                   (r.student is not None or model in ALPACAEVAL_TEACHERS)]
        write_model_outputs(cache, model, {r.prompt: r.output for r in records})
    build_alpacaeval(tmp_path / "rebuilt", cache_dir=cache, download=False)
    for split in ALPACAEVAL_SPLITS:
        rebuilt = load_alpacaeval(split, tmp_path / "rebuilt")
        assert sorted(r.to_dict().items() for r in rebuilt) == sorted(r.to_dict().items() for r in splits[split])


# -- the 26-candidate bank ------------------------------------------------------------------------

ALPACAEVAL_BANK = REPO.parent / "shared" / "data" / "alpacaeval_bank"
#: Three candidates of three families (text_davinci_001 left three instructions unanswered) and two students
#: (one documented, one trained on human data): enough to check the split, ids, labels and families.
BANK_SAMPLE = ("text_davinci_001", "claude-2.1", "Qwen1.5-72B-Chat")
STUDENT_SAMPLE = ("alpaca-7b", "guanaco-7b")


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def shared_bank() -> dict[str, list[dict]]:
    """The shared bank's teacher records (and the shared benchmark's students), read once. Skips without
    ``../shared``; fails instead under CI (``$CI`` set), where ``../shared`` is part of the checkout."""
    files = {"teachers_reference": ALPACAEVAL_BANK / "teachers_reference.jsonl",
             "teachers_audit": ALPACAEVAL_BANK / "teachers_audit.jsonl",
             "students_audit": ALPACAEVAL / "students_audit.jsonl"}
    missing = [path for path in [*files.values(), ALPACAEVAL_BANK / "candidates.tsv"] if not path.is_file()]
    if missing:
        message = f"AlpacaEval bank not found: {missing[0]} (needs the ../shared checkout)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return {name: read_jsonl(path) for name, path in files.items()}


def test_bank_candidates_table():
    bank = bank_candidates()
    assert [set(c) for c in bank] == [{"teacher", "family", "provider"}] * 26
    assert len({c["teacher"] for c in bank}) == 26 and len({c["family"] for c in bank}) == 14
    assert set(ALPACAEVAL_TEACHERS) < {c["teacher"] for c in bank}  # the five candidates are bank candidates
    family = {c["teacher"]: c["family"] for c in bank}
    # the documented students' answers at family level (../shared/data/alpacaeval_bank/README.md)
    assert [family[t] for t in ("text_davinci_003", "gpt-3.5-turbo-0301", "gpt4_0314", "claude-2")] == [
        "davinci", "gpt-3.5-turbo", "gpt-4", "claude-2"]
    bank[0]["family"] = "changed"  # a copy: the package table is not modified
    assert bank_candidates()[0]["family"] != "changed"


def test_data_alpacaeval_bank_rebuilds_the_shared_bank(shared_bank, tmp_path):
    # a local clone of AlpacaEval's results/ for a few models, rebuilt from the shared records themselves
    results = tmp_path / "results"
    teachers = [r for split in ("teachers_reference", "teachers_audit") for r in shared_bank[split]]
    instructions = {r["prompt"] for r in teachers}
    for model in BANK_SAMPLE:
        answers = {r["prompt"]: r["output"] for r in teachers if r["teacher"] == model}
        unanswered = instructions - set(answers)  # AlpacaEval publishes these as empty outputs
        write_model_outputs(results, model, {**{text: "" for text in sorted(unanswered)}, **answers})
    students = [r for r in shared_bank["students_audit"] if r["student"] in STUDENT_SAMPLE]
    for model in STUDENT_SAMPLE:
        write_model_outputs(results, model, {r["prompt"]: r["output"] for r in students if r["student"] == model})
    out = tmp_path / "bank"
    proc = run_cli("data", "alpacaeval-bank", "-o", out, "--cache-dir", results, "--no-download",
                   "--teachers", ",".join(reversed(BANK_SAMPLE)), "--students", ",".join(STUDENT_SAMPLE),
                   "--format", "json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)

    def key(record: dict) -> tuple:
        return record.get("student") or "", record["teacher"], record["id"]

    expected = {split: sorted((r for r in records if r.get("student") in STUDENT_SAMPLE or
                               r.get("teacher") in BANK_SAMPLE and "student" not in r), key=key)
                for split, records in shared_bank.items()}
    for split, records in expected.items():  # same ids, same halves, same labels and families, same texts
        assert sorted(read_jsonl(out / f"{split}.jsonl"), key=key) == records, split
        assert result["files"][f"{split}.jsonl"] == len(records)
    assert len({r["family"] for r in expected["teachers_reference"]}) == len(BANK_SAMPLE)
    assert result["empty"] == {"text_davinci_001": len(instructions) - sum(
        r["teacher"] == "text_davinci_001" for r in teachers)} != {"text_davinci_001": 0}
    assert [r["id"] for r in read_jsonl(out / "prompts_audit.jsonl")] == sorted(
        {r["id"] for r in shared_bank["teachers_audit"]})
    shared_table = (ALPACAEVAL_BANK / "candidates.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    assert (out / "candidates.tsv").read_text(encoding="utf-8") == "".join(
        line for line in shared_table if line.split("\t")[0] in ("teacher", *BANK_SAMPLE))
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["teachers"] == list(BANK_SAMPLE) and manifest["families"] == {
        c["teacher"]: c["family"] for c in bank_candidates() if c["teacher"] in BANK_SAMPLE}


def test_bank_candidates_match_the_shared_bank(shared_bank):
    with (ALPACAEVAL_BANK / "candidates.tsv").open(encoding="utf-8") as handle:
        assert bank_candidates() == list(csv.DictReader(handle, delimiter="\t"))
    labels = {(r["teacher"], r["family"]) for r in shared_bank["teachers_reference"]}
    assert labels == {(c["teacher"], c["family"]) for c in bank_candidates()}


def test_data_alpacaeval_bank_refuses_bad_input(alpacaeval_results, tmp_path):
    out = tmp_path / "bank"
    proc = run_cli("data", "alpacaeval-bank", "-o", out, "--cache-dir", alpacaeval_results, "--no-download",
                   "--teachers", "claude-2,gpt-5")
    assert proc.returncode == 2 and "unknown bank candidate 'gpt-5'" in proc.stderr and "E603" in proc.stderr
    # one candidate's outputs are there, the other's are not: nothing is written
    write_model_outputs(alpacaeval_results, "claude-2", {text: "An answer." for text in INSTRUCTIONS})
    proc = run_cli("data", "alpacaeval-bank", "-o", out, "--cache-dir", alpacaeval_results, "--no-download",
                   "--teachers", "claude-2,cohere", "--students", "alpaca-7b")
    assert proc.returncode == 2 and "E602" in proc.stderr and "cohere/model_outputs.json" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    with pytest.raises(InputError, match=r"teacher \(it has no family\) 'teacher-b'.*E603"):
        build_alpacaeval(out, teachers=["teacher-a", "teacher-b"], students=[], families={"teacher-a": "a"},
                         cache_dir=alpacaeval_results, download=False)
    assert not out.exists()
