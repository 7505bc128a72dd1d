"""The ``attribute-teacher`` CLI: exit codes, stdout, stderr. In-process through ``attribution.cli.main`` (the
console script's entry point), plus two real processes for the entry points themselves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli, run_cli_subprocess, write_jsonl

COMMANDS = ["rank", "fit", "evaluate", "tag"]


def registered_commands() -> list[str]:
    """Every command the app registers (core and optional), for the --help test."""
    from attribution.cli import _register_commands, app

    _register_commands()
    names = [c.name for c in app.registered_commands] + [g.name for g in app.registered_groups]
    assert set(COMMANDS) <= set(names)
    return names

FAST = ["--features", "pos-paper"]


def parse(proc):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # exactly one JSON document, nothing else on stdout


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def ranked(cli, student_path, reference_path):
    """``rank --format json -o -``: the JSON document on stdout ('-' is stdout, as without -o)."""
    return cli("rank", student_path, "--reference", reference_path, "--format", "json", "-o", "-", *FAST)


@pytest.fixture(scope="module")
def saved_model(cli, work, reference_path):
    path = work / "model.npz"
    proc = cli("fit", reference_path, "-o", path, "--format", "json", *FAST)
    return proc, path


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_exits_zero(cli, command):
    proc = cli(*([command] if command else []), "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage: attribute-teacher" in proc.stdout
    if command is None:
        assert all(name in proc.stdout for name in registered_commands())


@pytest.mark.parametrize("command", registered_commands())
def test_help_of_every_registered_command_in_process(command, capsys):
    """The same check for every command, optional ones too, without a process each (same entry point)."""
    from attribution.cli import main

    assert main([command, "--help"]) == 0
    assert f"Usage: attribute-teacher {command}" in capsys.readouterr().out


def test_module_entry_point_in_a_real_process():
    """``python -m attribution --help`` (the other CLI tests run the same ``main`` in-process)."""
    proc = run_cli_subprocess("--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage: attribute-teacher" in proc.stdout and proc.stderr == ""


@pytest.mark.slow
def test_console_script_ranks_in_a_real_process(student_path, reference_path, tmp_path):
    """The installed ``attribute-teacher`` script: exit status, JSON on stdout, a usage error exits 2."""
    script = shutil.which("attribute-teacher", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                        os.environ.get("PATH", "")]))
    if script is None:
        pytest.skip("the attribute-teacher console script is not installed")
    proc = subprocess.run([script, student_path, "-r", reference_path, "--format", "json", *FAST], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert json.loads(proc.stdout)["ranking"][0]["teacher"] == "chatty" and proc.returncode == 0
    bad = subprocess.run([script, "rank", student_path, "--no-such-option"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and "No such option" in bad.stderr and "Traceback" not in bad.stderr


def test_rank_json_document(ranked):
    proc = ranked
    result = parse(proc)
    assert result["n_outputs"] == 10 and result["skipped"] == 0
    ranking = result["ranking"]
    assert ranking[0]["teacher"] == "chatty"
    assert sorted(r["teacher"] for r in ranking) == ["chatty", "formal", "terse"]
    probabilities = [r["probability"] for r in ranking]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
    assert set(result["tasks"]) == {"science", "commonsense"}
    assert result["verdict"]["best_candidate"] == "chatty"
    assert "features=pos-paper" in result["signature"]
    assert result["inputs"]["outputs"]["name"] == "student.jsonl"
    assert result["inputs"]["reference"]["name"] == "reference.jsonl"
    assert "/" not in json.dumps(result["inputs"]).replace('"name": "', "")  # no absolute paths
    assert list(json.loads(proc.stdout)) == sorted(result)  # sorted keys
    assert "fitting on 72 reference outputs" in proc.stderr


def test_bare_form_means_rank_and_repeats_the_bytes(cli, ranked, student_path, reference_path):
    """A second run (in the bare ``attribute-teacher OUTPUTS --reference REF`` form) prints identical bytes."""
    proc = ranked
    bare = cli(student_path, "--reference", reference_path, "--format", "json", *FAST)
    assert bare.returncode == 0, bare.stderr
    assert bare.stdout == proc.stdout


@pytest.mark.parametrize("command", ["rank", "evaluate", "baseline"])
def test_output_file_gets_the_document_and_stdout_stays_quiet(cli, work, student_path, labelled_path,
                                                               reference_path, command):
    """``-o FILE`` writes the JSON there instead of stdout (a note on stderr says where; none with --quiet);
    ``-o -`` prints the same document on stdout."""
    args = {"rank": ["rank", student_path, "-r", reference_path, *FAST],
            "evaluate": ["evaluate", "-r", reference_path, "-s", labelled_path, "--subsets", "2", "--draws", "2",
                         *FAST],
            "baseline": ["baseline", "cosine", "-r", reference_path, "-s", student_path]}[command]
    out = work / f"{command}-document.json"
    to_file = cli(*args, "-o", out)
    assert to_file.returncode == 0, to_file.stderr
    assert to_file.stdout == ""
    assert f"wrote {out}" in to_file.stderr.splitlines()
    to_stdout = cli(*args, "--format", "json", "-o", "-")
    assert json.loads(out.read_text(encoding="utf-8")) == parse(to_stdout)
    assert not (work / "-").exists()
    quiet = cli(*args, "-o", work / f"{command}-quiet.json", "--quiet")
    assert quiet.returncode == 0 and quiet.stdout == "" and quiet.stderr == ""


def test_rank_table_and_quiet(cli, student_path, saved_model):
    proc = cli("rank", student_path, "--model", saved_model[1], "--quiet")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["teacher", "probability", "95%", "interval", "support"]
    assert lines[1].split()[0] == "chatty"
    assert any(line.startswith("verdict:") for line in lines)
    assert "(10 outputs;" in proc.stdout
    assert proc.stderr == ""


def test_fit_then_rank_with_the_model(cli, saved_model, ranked, student_path):
    proc, path = saved_model
    fitted = parse(proc)
    assert fitted["teachers"] == ["chatty", "formal", "terse"]
    assert fitted["tasks"] == ["commonsense", "science"]
    assert fitted["n_features"] == {"commonsense": 50, "science": 50} and fitted["skipped"] == 0
    assert path.is_file()
    with_model = parse(cli("rank", student_path, "--model", path, "--format", "json"))
    with_reference = json.loads(ranked.stdout)
    assert with_model["inputs"]["model"]["name"] == "model.npz"
    for key in ("ranking", "tasks", "verdict", "evidence", "n_outputs", "signature"):
        assert with_model[key] == with_reference[key], key


def test_evaluate_json_has_a_row_per_task_and_feature_set(cli, reference_path, labelled_path):
    proc = cli("evaluate", "-r", reference_path, "-s", labelled_path, "--features", "pos-paper,combined",
               "--subsets", "2", "--draws", "3", "--format", "json")
    result = parse(proc)
    assert [(r["task"], r["features"]) for r in result["results"]] == [
        ("science", "pos-paper"), ("science", "combined"), ("commonsense", "pos-paper"),
        ("commonsense", "combined")]
    assert all(r["n_outputs"] == 9 and r["accuracy"] >= 0.8 for r in result["results"])
    assert result["skipped"] == 0
    assert "72 reference and 18 student outputs" in proc.stderr


def test_evaluate_decides_each_students_verdict_under_the_verdict_test(cli, reference_path, labelled_path):
    """evaluate takes the verdict's rule as rank does (--verdict-test); an unknown rule is a usage error."""
    def tests_of(rule: str) -> set[str]:
        result = parse(cli("evaluate", "-r", reference_path, "-s", labelled_path, *FAST, "--subsets", "2",
                           "--draws", "1", "--verdict-test", rule, "--format", "json"))
        return {s["test"] for row in result["results"] for s in row["students"].values()}

    assert tests_of("both") == {"paired and unlisted"}
    assert tests_of("unlisted") == {"unlisted"}
    bad = cli("evaluate", "-r", reference_path, "-s", labelled_path, *FAST, "--verdict-test", "any")
    assert bad.returncode == 2 and "--verdict-test" in bad.stderr


def test_tag_writes_words_and_tags(cli, work, student_path, student_records):
    out = work / "tags.jsonl"
    proc = cli("tag", student_path, "-o", out)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["id"] for row in rows] == [r.id for r in student_records]
    assert all(len(row["words"]) == len(row["tags"]) > 0 for row in rows)
    assert rows[0]["words"][:2] == ["Good", "one"]  # normalized: '#### ' is gone
    assert not any("<|endoftext|>" in w for row in rows for w in row["words"])
    assert "tagged 10 texts with spacy:" in proc.stderr
    assert proc.stdout == ""


# -- bad input: exit 2, FILE:LINE on stderr, nothing on stdout, no output file ----------------------
GOOD = {"id": "g", "task": "science", "output": "Oh wow, the answer is A! I'd pick A!"}
BAD_STUDENT = {
    "invalid-json": (b'{"output": "unterminated', "E101"),
    "missing-text": ({"id": "x", "task": "science"}, "E104"),
    "wrong-type": ({"id": "x", "task": "science", "output": ["a", "list"]}, "E103"),
    "non-utf8": (b'{"id": "x", "task": "science", "output": "caf\xe9"}', "E105"),
    "empty-text": ({"id": "x", "task": "science", "output": "  "}, "E103"),
    "huge-text": ({"id": "x", "task": "science", "output": "Wow! " * 25_000}, "E106"),
}


@pytest.mark.parametrize("case", list(BAD_STUDENT))
def test_bad_student_record_exits_2_naming_file_and_line_with_no_output(cli, work, saved_model, case):
    raw, code = BAD_STUDENT[case]
    path = write_jsonl(work / f"bad-{case}.jsonl", [GOOD, GOOD, raw, GOOD])
    out = work / f"out-{case}.json"
    proc = cli("rank", path, "--model", saved_model[1], "--format", "json", "-o", out)
    assert proc.returncode == 2, proc.stderr
    assert f"{path}:3: " in proc.stderr and f"[{code}]" in proc.stderr
    assert proc.stdout == ""
    assert not out.exists()
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["rank", "fit"])
def test_reference_missing_teacher(cli, work, student_path, reference_path, command):
    lines = reference_path.read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[6])
    del row["teacher"]
    lines[6] = json.dumps(row)
    bad = work / "ref-no-teacher.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = work / f"never-{command}.out"
    args = [student_path, "-r", bad] if command == "rank" else [bad]
    proc = cli(command, *args, "-f", "json", "-o", out, *FAST)
    assert proc.returncode == 2
    assert f"{bad}:7: missing required field 'teacher' [E107]" in proc.stderr
    assert proc.stdout == "" and not out.exists()


def test_tag_bad_input_leaves_no_output(cli, work):
    path = write_jsonl(work / "tag-bad.jsonl", [GOOD] * 3 + [b'{"output": "caf\xe9"}'])
    out = work / "tags-never.jsonl"
    proc = cli("tag", path, "-o", out, "--batch-size", "2")  # two records are tagged before the failure
    assert proc.returncode == 2
    assert f"{path}:4: bytes are not valid UTF-8" in proc.stderr and "[E105]" in proc.stderr
    assert not out.exists() and not list(work.glob(".tags-never.jsonl.*"))  # no temp file either


def test_evaluate_unknown_teacher_label(cli, work, reference_path, labelled_path):
    lines = labelled_path.read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[11])
    row["teacher"] = "mystery-llm"
    lines[11] = json.dumps(row)
    bad = work / "students-unknown.jsonl"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = work / "eval-never.json"
    proc = cli("evaluate", "-r", reference_path, "-s", bad, "-f", "json", "-o", out, *FAST)
    assert proc.returncode == 2
    assert f"{bad}:12: unknown teacher label 'mystery-llm'" in proc.stderr and "[E108]" in proc.stderr
    assert proc.stdout == "" and not out.exists()


def test_skip_invalid_reports_lines_and_count(cli, work, saved_model):
    path = write_jsonl(work / "mixed.jsonl", [GOOD, b"{broken", GOOD, {"id": "e", "output": ""}, GOOD])
    proc = cli("rank", path, "--model", saved_model[1], "--format", "json", "--skip-invalid")
    result = parse(proc)
    assert result["skipped"] == 2 and result["n_outputs"] == 3
    assert f"skipped {path}:2: invalid JSON" in proc.stderr
    assert f"skipped {path}:4: field 'output'" in proc.stderr
    assert "skipped 2 invalid record(s)" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["rank", "{student}"], "no reference outputs given: pass --reference"),
    (["rank", "{student}", "-r", "{reference}", "-m", "{model}"], "give exactly one of --reference or --model"),
    (["rank", "{student}", "-m", "{model}", "--max-chars", "-1"], "--max-chars"),
    (["fit", "{reference}"], "--output"),
    (["evaluate", "-r", "{reference}", "-s", "{student}", "--features", "pos-paper,nope"], "unknown feature set"),
    (["rank", "{missing}", "-m", "{model}"], "no-such-file.jsonl: file not found [E109]"),
    (["rank", "{student}", "-m", "{reference}"], "[E206]"),
])
def test_usage_errors_exit_2(cli, saved_model, student_path, reference_path, work, args, message):
    paths = {"student": student_path, "reference": reference_path, "model": saved_model[1],
             "missing": work / "no-such-file.jsonl"}
    proc = cli(*(a.format(**paths) for a in args))
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert message in proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr


def test_exit_status_follows_the_error_code():
    """Issue 14, item 4: the status comes from the code, not from the exception class (E302, an unknown
    tagger, exited 1 as a plain AttributionError; E705, an unreachable scheduler, exited 2 as an InputError)."""
    from attribution.errors import ENVIRONMENT_CODES, Errors, exit_status

    assert ENVIRONMENT_CODES <= set(vars(Errors))  # every listed code is in the catalogue
    assert [exit_status(c) for c in ("E103", "E205", "E302", "E304", "E501")] == [2, 2, 2, 2, 2]
    assert [exit_status(c) for c in ("E301", "E305", "E415", "E601", "E705")] == [1, 1, 1, 1, 1]
    assert exit_status(None) is None


def test_unknown_tagger_and_feature_set_exit_2(cli, student_path, reference_path):
    for option, value, code in (("--tagger", "no-such-tagger", "E302"), ("--features", "nope", "E205")):
        proc = cli("rank", student_path, "-r", reference_path, option, value, "-q")
        assert proc.returncode == 2 and f"[{code}]" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("error, status", [
    ("AttributionError('x', code='E601')", 1),  # a failed download: retry, the command was right
    ("InputError('x', code='E705')", 1),  # the class says input, the code says environment
    ("AttributionError('x', code='E302')", 2),
    ("AttributionError('x')", 1),  # no code: the class decides, as before
    ("InputError('x')", 2),
])
def test_a_command_error_exits_with_its_codes_status(monkeypatch, tmp_path, error, status):
    import attribution.report
    from attribution import errors

    def fail(*args, **kwargs):
        raise eval(error, vars(errors))

    monkeypatch.setattr(attribution.report, "write_report", fail)
    saved = tmp_path / "result.json"
    saved.write_text("{}", encoding="utf-8")
    proc = run_cli("report", saved, "-o", tmp_path / "r.html")
    assert proc.returncode == status and proc.stderr.startswith("error: x") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", registered_commands())
def test_help_renders_every_help_text_literally(command):
    """Issue 14, item 4: option help is printed as written (Rich markup ate '[baselines]' and
    '[default: ...]'); compared without whitespace, since help is wrapped to the terminal (also at hyphens)."""
    import click
    import typer

    from attribution.cli import app

    group = typer.main.get_command(app)
    proc = run_cli(command, "--help")
    shown = "".join(proc.stdout.split())
    sub = group.commands[command]
    commands = sub.commands.values() if isinstance(sub, click.Group) else [sub]
    for cmd in commands:
        text = shown if cmd is sub else "".join(run_cli(command, cmd.name, "--help").stdout.split())
        for param in cmd.params:
            if getattr(param, "help", None):
                assert "".join(param.help.split()) in text, (cmd.name, param.name)


def test_a_short_flag_means_one_long_option_everywhere():
    """Issue 14, item 4: '-s' was --students in evaluate/baseline and --student in distill/generate,
    '-t' --teacher-model and --teacher-outputs; now cli._app.SHORT_FLAGS is the one table."""
    import typer

    from attribution.cli import _register_commands, app
    from attribution.cli._app import SHORT_FLAGS

    _register_commands()
    seen = []

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, f"{path} {name}".strip())
        for param in getattr(command, "params", []):
            for flag in [o for o in [*param.opts, *param.secondary_opts] if len(o) == 2]:
                assert SHORT_FLAGS.get(flag) in param.opts + param.secondary_opts, (path, flag, param.opts)
                seen.append(flag)

    walk(typer.main.get_command(app), "")
    assert {"-r", "-s", "-t", "-m", "-o", "-f", "-q"} <= set(seen)


@pytest.mark.parametrize("raised, status, shown", [
    ("KeyboardInterrupt()", 130, "interrupted"),  # as main() ends a real process: 130, no traceback
    ("SystemExit(3)", 3, ""),  # as the interpreter maps SystemExit
    ("SystemExit('bye')", 1, "bye"),
    ("SystemExit(None)", 0, ""),
])
def test_run_cli_gives_the_status_a_process_would(monkeypatch, tmp_path, raised, status, shown):
    import attribution.report

    def stop(*args, **kwargs):
        raise eval(raised)

    monkeypatch.setattr(attribution.report, "write_report", stop)
    saved = tmp_path / "result.json"
    saved.write_text("{}", encoding="utf-8")
    proc = run_cli("report", saved, "-o", tmp_path / "r.html")
    assert proc.returncode == status and shown in proc.stderr and "Traceback" not in proc.stderr
