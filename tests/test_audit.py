"""``attribute-teacher audit CONFIG``: config checking (FILE:LINE, key named), a file-only audit, and
an audit whose student is queried from a real llama.cpp server (the shipped example, shortened)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from attribution.audit import load_config
from attribution.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_server import SERVED_NAME, LlamaServer, ServerUnusable, missing_reason  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def split_reference(tmp_path, reference_path):
    """The fixture corpus split into one file per teacher, without 'teacher' fields (the config names them)."""
    rows: dict[str, list[dict]] = {}
    for line in reference_path.read_text().splitlines():
        row = json.loads(line)
        rows.setdefault(row.pop("teacher"), []).append(row)
    for teacher, items in rows.items():
        (tmp_path / f"{teacher}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
    return sorted(rows)


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "audit.toml"
    path.write_text(text)
    return path


FILES_ONLY = """\
[audit]

[student]
name = "suspect"
file = "{student}"

[[teachers]]
name = "chatty"
file = "chatty.jsonl"

[[teachers]]
name = "formal"
file = "formal.jsonl"

[[teachers]]
name = "terse"
file = "terse.jsonl"

[attribution]
features = "pos-rich"
report = "md"
"""


@pytest.mark.parametrize("text, where, message", [
    ("[audit]\nlimit = 0\ntempreature = 1\n", 3, "unknown key 'tempreature' in [audit]"),
    ("[audit]\nlimit = 0\n[defaults]\n\nmax_tokens = 'many'\n", 5, "[defaults] max_tokens must be an integer"),
    ("[audit]\nlimit = 0\n[student]\nfile = 'x.jsonl'\n", 4, "file not found"),
    ("[audit]\nlimit = 0\n[student]\nendpoint = 'http://127.0.0.1:1/v1'\n", 4, "needs 'model'"),
    ("[audit]\nlimit = 0\n[student]\nendpoint = 'localhost:1'\nmodel = 'm'\n", 4, "invalid endpoint URL"),
    ("[audit]\nlimit = 0\n[student]\nmodel = 'm'\n", 3, "exactly one of 'file'"),
    ("[audit]\nlimit = = 0\n", 2, "invalid TOML"),
    ("[audti]\nlimit = 0\n", 1, "unknown table [audti]"),
    ("[audit]\nprompts = 'p.jsonl'\noutput_dir = '/tmp/x'\n", 3, "output_dir is not read from a config"),
    ("[attribution]\nreport = '../../x.html'\n", 2, "report must be false or one of"),
    ("[attribution]\nreport = 'md'\nverdict_test = 'any'\n", 3, "verdict_test must be one of either, paired"),
    ("[audit]\nlimit = 0\n[defaults]\nsample = 1\n", 4, "sample must be true or false"),
])
def test_config_errors_name_line_and_key(tmp_path, text, where, message):
    path = _config(tmp_path, text)
    with pytest.raises(InputError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}:{where}: audit config: ")
    assert message in str(caught.value) and "[E416]" in str(caught.value)


@pytest.mark.parametrize("content, line, message", [
    (b"[audit]\nlimit = 0\n# caf\xe9\n", 3, "not UTF-8 text (byte 0xe9"),
    (b"\xff\xfe[audit]\n", 1, "not UTF-8 text (byte 0xff"),
    (b"[audit]\nlimit = 0\n[defaults]\nstop = " + b"[" * 5000 + b"]" * 5000 + b"\n", 4, "nested deeper than 32"),
    (b"[defaults]\nstop = [\n" + b"  [" * 40 + b"\n", 3, "nested deeper than 32"),
    (b"[defaults]\nsystem = '" + b"[" * 100 + b"'\nstop = [[[1]]]\n", 3, "stop must be a list of at most 4 strings"),
])
def test_a_config_that_is_not_utf8_or_nests_too_deep_is_e416_at_its_line(cli, tmp_path, content, line, message):
    path = tmp_path / "audit.toml"
    path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}:{line}: audit config: ") and message in str(caught.value)
    proc = cli("audit", path, "--check")
    assert proc.returncode == 2 and f"{path}:{line}: audit config:" in proc.stderr and "[E416]" in proc.stderr
    assert "Traceback" not in proc.stderr and "unexpected" not in proc.stderr


#: Values the command line refuses: an audit config refuses each the same way, by the same table.
REFUSED = [("max_retries", "-1", "--max-retries"), ("limit", "-1", "--limit"), ("timeout", "-1", "--timeout"),
           ("temperature", "-5", "--temperature"), ("max_tokens", "0", "--max-tokens"), ("rpm", "-1", "--rpm"),
           ("concurrency", "0", "--concurrency"), ("top_p", "1.5", "--top-p"), ("timeout", "nan", "--timeout")]


@pytest.mark.parametrize("key, value, option", REFUSED)
def test_endpoint_settings_are_refused_like_the_command_line_refuses_them(cli, tmp_path, key, value, option):
    from attribution.distill.settings import SETTINGS

    expected = SETTINGS[key].expected
    table = "audit" if key == "limit" else "defaults"
    path = _config(tmp_path, f"[{table}]\n\n{key} = {value}\n")
    with pytest.raises(InputError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}:3: audit config: [{table}] {key} must be {expected}")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    proc = cli("collect", "--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "-p", prompts,
               "-o", tmp_path / "o.jsonl", option, value)
    assert proc.returncode == 2 and f"must be {expected}" in proc.stderr and option in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "o.jsonl").exists()


def test_a_key_given_as_api_key_env_is_refused_without_repeating_it(tmp_path):
    key = "sk-proj-A1b2C3d4E5f6G7h8I9j0K1l2M3n4"
    path = _config(tmp_path, f"[defaults]\napi_key_env = '{key}'\n")
    with pytest.raises(InputError) as caught:
        load_config(path)
    assert f"{path}:2: audit config: [defaults] api_key_env must be the name of an environment variable" in str(
        caught.value)
    assert key not in str(caught.value) and "starts like an API key" in str(caught.value)


def test_sampling_without_a_temperature_is_refused_in_a_config(tmp_path, student_path):
    path = _config(tmp_path, "[audit]\nprompts = 'p.jsonl'\n[defaults]\nsample = true\ntemperature = 0\n"
                   "[student]\nendpoint = 'http://127.0.0.1:9/v1'\nmodel = 'm'\n")
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    with pytest.raises(InputError, match=r"audit.toml:7: audit config: \[student\] parameter 'temperature' must be "
                       r"above 0 with sampling"):
        load_config(path)


def test_teacher_entry_line_is_named(tmp_path, split_reference, student_path):
    text = FILES_ONLY.format(student=student_path) + "\n[[teachers]]\nname = 'chatty'\nfile = 'terse.jsonl'\n"
    with pytest.raises(InputError, match=r"audit.toml:24: .*two teachers are named 'chatty'"):
        load_config(_config(tmp_path, text))


def test_config_error_from_the_cli_exit_2(cli, tmp_path):
    path = _config(tmp_path, "[audit]\nlimit = 0\nbogus = 1\n")
    proc = cli("audit", path)
    assert proc.returncode == 2 and f"{path}:3: audit config: unknown key 'bogus'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bundled_example_configs_pass_check(cli):
    for name in ("audit.toml", "audit-local.toml"):
        proc = cli("audit", REPO / "examples" / name, "--check")
        assert proc.returncode == 0, proc.stderr
        assert "ok" in proc.stdout


def test_files_only_audit_writes_result_report_and_config(cli, tmp_path, split_reference, student_path):
    config = _config(tmp_path, FILES_ONLY.format(student=student_path))
    proc = cli("audit", config, "--output-dir", tmp_path / "out", "--format", "json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ranking"][0]["teacher"] == "chatty"  # the fixture student was distilled from 'chatty'
    out = tmp_path / "out"
    assert json.loads((out / "result.json").read_text())["ranking"] == result["ranking"]
    assert (out / "report.md").is_file() and (out / "audit.toml").read_text() == config.read_text()
    assert set(result["audit"]["sources"]) == {"suspect", "chatty", "formal", "terse"}
    # inputs: the keys of rank's (one per role; a role of several files numbered, in the config's order)
    assert [result["inputs"][f"reference {i}"]["name"] for i in (1, 2, 3)] == ["chatty.jsonl", "formal.jsonl",
                                                                                "terse.jsonl"]
    assert result["inputs"]["outputs"]["name"] == student_path.name
    assert result["run"]["references"]["tasks"]["commonsense"]["chatty"] > 0 and result["skipped"] == 0


ONE_REFERENCE_FILE = """\
[student]
name = "suspect"
file = "{student}"

[[teachers]]
file = "{reference}"

[attribution]
report = false
"""


def test_rank_audit_and_python_give_the_same_document(cli, tmp_path, reference_path, student_path):
    """One path from records to the document: the same audit through ``rank``, ``audit`` and Python
    (:func:`attribution.result.audit_student`) gives the same JSON, ``inputs``, ``run`` and ``skipped`` included.
    Normalized: only ``audit`` (the audit command's config name, version and each source's provenance), which the
    others have no config for; the documents hold no timestamps or paths (file names only)."""
    from attribution.api import fit_reference
    from attribution.io import RecordReader, read_records
    from attribution.outputs import to_json
    from attribution.result import audit_student

    config = _config(tmp_path, ONE_REFERENCE_FILE.format(student=student_path, reference=reference_path))
    audited = cli("audit", config, "--output-dir", tmp_path / "out", "--format", "json", "--quiet")
    assert audited.returncode == 0, audited.stderr
    ranked = cli("rank", student_path, "--reference", reference_path, "--format", "json", "--quiet")
    assert ranked.returncode == 0, ranked.stderr
    references = read_records(reference_path, require_teacher=True)
    python = audit_student(fit_reference(references), RecordReader(student_path), references=references)
    from_audit, from_rank = json.loads(audited.stdout), json.loads(ranked.stdout)
    assert set(from_audit.pop("audit")["sources"]) == {"suspect", reference_path.stem}
    assert from_audit == from_rank == json.loads(to_json(python.to_dict()))
    assert set(from_rank["inputs"]) == {"outputs", "reference"} and from_rank["run"]["settings"]["verdict_test"] == (
        "either")
    # the rule too: [attribution] verdict_test is rank's --verdict-test
    strict = _config(tmp_path, ONE_REFERENCE_FILE.format(student=student_path, reference=reference_path)
                     + 'verdict_test = "both"\n')
    audited = cli("audit", strict, "--output-dir", tmp_path / "strict", "--format", "json", "--quiet")
    ranked = cli("rank", student_path, "--reference", reference_path, "--format", "json", "--quiet",
                 "--verdict-test", "both")
    from_audit, from_rank = json.loads(audited.stdout), json.loads(ranked.stdout)
    del from_audit["audit"]
    assert from_audit == from_rank and from_rank["run"]["settings"]["verdict_test"] == "both"
    # and the same table: audit prints rank's (attribution.cli.rank.ranking_table)
    tables = [cli(*command, "--quiet").stdout for command in (
        ("audit", strict, "--output-dir", tmp_path / "table"),
        ("rank", student_path, "--reference", reference_path, "--verdict-test", "both"))]
    assert tables[0] == tables[1] and "\nverdict: " in tables[0] and "teacher " in tables[0]


@pytest.mark.slow
def test_audit_queries_the_student_endpoint_and_resumes(cli, tmp_path):
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    try:
        server = LlamaServer(n_ctx=2048, log_path=tmp_path / "server.log").start()
    except ServerUnusable as err:
        pytest.skip(str(err))
    try:
        text = (REPO / "examples" / "audit-local.toml").read_text()
        text = text.replace("http://127.0.0.1:8000/v1", server.base_url).replace("max_tokens = 64", "max_tokens = 32")
        text = text.replace('[audit]\n', '[audit]\nlimit = 4\n')  # 4 prompts: 3 s each on one llama.cpp thread
        data = tmp_path / "data" / "demo"
        data.mkdir(parents=True)
        for name in ("smollm2-135m", "gemma-3-270m", "human"):  # 80 of the 200 references each: a faster fit
            lines = (REPO / "data" / "demo" / f"teacher_{name}.jsonl").read_text().splitlines(keepends=True)
            (data / f"teacher_{name}.jsonl").write_text("".join(lines[:80]))
        text = text.replace('student_prompts = "../data/demo/', f'student_prompts = "{REPO / "data" / "demo"}/')
        config = tmp_path / "examples" / "audit.toml"
        config.parent.mkdir()
        config.write_text(text)
        proc = cli("audit", config, "-o", tmp_path / "out", "--format", "json", "--quiet")
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert result["n_outputs"] == 4
        assert result["ranking"][0]["teacher"] == "smollm2-135m"  # the suspect is SmolLM2 itself
        student = result["audit"]["sources"]["suspect"]
        assert student["model"] == SERVED_NAME and student["endpoint"] == server.base_url
        assert "smollm2-135m at http://127.0.0.1" in result["inputs"]["outputs"]["source"]
        again = cli("audit", config, "-o", tmp_path / "out", "--format", "json")
        assert again.returncode == 0 and "0 written, 4 already there" in again.stderr
    finally:
        server.stop()


def test_audit_needs_an_output_dir_and_never_writes_over_its_inputs(cli, tmp_path, split_reference, student_path):
    config = _config(tmp_path, FILES_ONLY.format(student=student_path))
    proc = cli("audit", config, "--quiet")
    assert proc.returncode == 2 and "--output-dir" in proc.stderr and "Traceback" not in proc.stderr
    # the output folder is the config's own folder: result.json would be fine, but the copy of the config
    # is the config itself (skipped), and a report named like an input would be refused
    (tmp_path / "result.json").symlink_to(tmp_path / "chatty.jsonl")
    before = (tmp_path / "chatty.jsonl").read_bytes()
    proc = cli("audit", config, "-o", tmp_path, "--quiet")
    assert proc.returncode == 2 and "[E120]" in proc.stderr, proc.stderr
    assert (tmp_path / "chatty.jsonl").read_bytes() == before and not (tmp_path / "report.html").exists()
