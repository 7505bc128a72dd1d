"""``collect`` / ``generate --endpoint``: pure helpers, then a real llama.cpp OpenAI-compatible server.

The server (``llama-cpp-python[server]`` on the offline SmolLM2 GGUF, 127.0.0.1, a free port) is
started once for this module; the fault tests put :class:`tests.llama_server.FaultProxy` in front
of it. Outputs are kept to a few tokens so the module stays fast on two CPU cores.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attribution.distill.endpoint import (
    ApiDecoding,
    EndpointOptions,
    RateLimiter,
    backoff_delay,
    check_url,
    manifest_path,
    public_url,
    redact,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llama_server import SERVED_NAME, FaultProxy, LlamaServer, ServerUnusable, missing_reason  # noqa: E402

API_KEY = "sk-test-5e3b9c1d7a2f4e8b9c0d1e2f3a4b5c6d"  # the server's key: must never reach a file
KEY_ENV = "TA_TEST_ENDPOINT_KEY"
TINY = ["--max-tokens", "6", "--quiet", "--format", "json"]


# -- pure helpers --------------------------------------------------------------------------

def test_public_url_drops_credentials_query_and_fragment():
    assert public_url("https://user:pw@api.example.com:8443/v1/?key=sk-abc#x") == "https://api.example.com:8443/v1"
    assert public_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize("url", ["api.openai.com/v1", "ftp://host/v1", "http://:80/v1", "http://host:99999/v1"])
def test_check_url_rejects_what_is_not_http(url):
    from attribution.errors import ModelError

    with pytest.raises(ModelError, match=r"E414"):
        check_url(url)


def test_manifest_beside_output(tmp_path):
    assert manifest_path(tmp_path / "gpt-4o.jsonl") == tmp_path / "gpt-4o.manifest.json"


def test_redact_removes_the_key_and_key_shaped_strings():
    text = redact(f"Incorrect API key provided: {API_KEY}; also sk-proj-abcdefgh1234", API_KEY)
    assert API_KEY not in text and "abcdefgh1234" not in text


def test_backoff_grows_with_jitter_and_honours_retry_after():
    import random

    opts = EndpointOptions(backoff_base=1.0, backoff_max=8.0)
    rng = random.Random(0)
    for attempt, ceiling in [(0, 1), (1, 2), (2, 4), (3, 8), (6, 8)]:
        delays = [backoff_delay(attempt, opts, None, rng) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jitter
    assert 3.0 <= backoff_delay(0, opts, 3.0, rng) <= 3.3


def test_rate_limiter_spaces_requests_and_caps_tokens():
    async def run(rpm, tpm, n, tokens):
        limiter = RateLimiter(rpm, tpm)
        start = time.monotonic()
        for _ in range(n):
            await limiter.acquire(tokens)
        return time.monotonic() - start

    assert 0.9 <= asyncio.run(run(120, 0, 3, 10)) < 1.5  # 0.5 s apart
    assert asyncio.run(run(0, 0, 50, 10)) < 0.1
    clock = [0.0]
    limiter = RateLimiter(0, 100, clock=lambda: clock[0])

    async def tpm_run():
        await limiter.acquire(60)
        sleeper = asyncio.ensure_future(limiter.acquire(60))
        await asyncio.sleep(0.05)
        assert not sleeper.done()  # 120 > 100 tokens in the minute: waits
        clock[0] = 61.0
        await asyncio.wait_for(sleeper, 2)

    asyncio.run(tpm_run())


def test_api_decoding_greedy_and_sampled():
    assert ApiDecoding(max_tokens=5).to_dict() == {"max_tokens": 5, "temperature": 0.0, "seed": 0}
    sampled = ApiDecoding(max_tokens=5, sample=True, temperature=0.9, top_p=0.8, seed=None, stop=("\n",))
    assert sampled.to_dict() == {"max_tokens": 5, "temperature": 0.9, "top_p": 0.8, "stop": ["\n"]}


def test_no_model_name_with_endpoint_is_a_usage_error(cli, tmp_path):
    prompts = _prompts(tmp_path, 1)
    result = cli(*["generate", "--endpoint", "http://127.0.0.1:9/v1", "-p", str(prompts), "-o",
                  str(tmp_path / "s.jsonl")])
    assert result.returncode == 2 and "served model name" in result.stderr


def test_rank_and_report_show_where_a_reference_came_from(cli, tmp_path, reference_path, student_path):
    reference = tmp_path / "refs.jsonl"
    reference.write_bytes(reference_path.read_bytes())
    manifest_path(reference).write_text(json.dumps({
        "model": "gpt-4o-mini", "endpoint": "https://api.openai.com/v1", "api": "chat",
        "decoding": {"max_tokens": 128, "temperature": 0.0}, "runs": []}))
    proc = cli("rank", student_path, "-r", reference, "--format", "json", "--quiet", "--report", tmp_path / "r.md")
    assert proc.returncode == 0, proc.stderr
    source = json.loads(proc.stdout)["inputs"]["reference"]["source"]
    assert source == "gpt-4o-mini at https://api.openai.com/v1 (chat; max_tokens 128, temperature 0.0)"
    # a URL in Markdown is a code span, never a live link (issue 20, item 7)
    assert "gpt-4o-mini at `https://api.openai.com/v1`" in (tmp_path / "r.md").read_text()


# -- a real server -----------------------------------------------------------------------------

def _prompts(folder: Path, n: int, *, prefix: str = "q", offset: int = 0) -> Path:
    topics = ["rain", "bread", "tides", "volcanoes", "bees", "maps", "glass", "clocks", "salt", "kites",
              "rivers", "snow", "coffee", "owls", "bridges", "paper"]
    path = folder / f"{prefix}-prompts.jsonl"
    with path.open("w") as handle:
        for i in range(offset, offset + n):
            handle.write(json.dumps({"id": f"{prefix}{i}", "task": "explain",
                                     "prompt": f"In one sentence, what are {topics[i % len(topics)]}?"}) + "\n")
    return path


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _no_key_in(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            assert API_KEY not in path.read_text(errors="replace"), path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    log = tmp_path_factory.mktemp("llama") / "server.log"
    try:
        srv = LlamaServer(api_key=API_KEY, log_path=log).start()
    except ServerUnusable as err:
        pytest.skip(str(err))
    yield srv
    srv.stop()


@pytest.fixture
def keyed(monkeypatch):
    monkeypatch.setenv(KEY_ENV, API_KEY)


def _collect(cli, url, prompts, out, *extra):
    return cli(*["collect", "--endpoint", url, "--model", SERVED_NAME, "-p", str(prompts), "-o", str(out),
                "--api-key-env", KEY_ENV, *TINY, *extra])


@pytest.mark.slow
def test_chat_collect_resume_and_manifest(cli, server, keyed, tmp_path):
    prompts, out = _prompts(tmp_path, 6), tmp_path / "smol.jsonl"
    result = _collect(cli, server.base_url, prompts, out, "--concurrency", "3", "--system", "Be brief.",
                      "--teacher", "smollm2-chat")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    rows = _rows(out)
    assert sorted(r["id"] for r in rows) == [f"q{i}" for i in range(6)]
    assert summary["n_written"] + summary["n_empty"] == 6 and summary["status"] == "complete"
    row = rows[0]
    assert row["teacher"] == "smollm2-chat" and row["api"] == "chat" and row["model"] == SERVED_NAME
    assert row["decoding"] == {"max_tokens": 6, "temperature": 0.0, "seed": 0}
    assert row["system_prompt"] == "Be brief." and row["endpoint"] == server.base_url
    assert 1 <= row["n_new_tokens"] <= 6 and row["output"]
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["status"] == "complete" and manifest["model"] == SERVED_NAME
    assert manifest["served_models"] and manifest["usage"]["completion_tokens"] > 0
    assert manifest["prompts"]["n_prompts"] == 6 and len(manifest["prompts"]["sha256"]) == 64
    assert manifest["requests"] == 6 and manifest["runs"][0]["http_statuses"] == {"200": 6}

    again = _collect(cli, server.base_url, prompts, out, "--system", "Be brief.", "--teacher", "smollm2-chat")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["n_existing"] == len(rows) and len(_rows(out)) == len(rows)
    assert len(json.loads(manifest_path(out).read_text())["runs"]) == 2

    other = _collect(cli, server.base_url, prompts, out, "--teacher", "smollm2-chat")  # no system prompt now
    assert other.returncode == 2 and "E406" in other.stderr
    _no_key_in(tmp_path)


@pytest.mark.slow
def test_completion_mode_then_fit_and_rank(cli, server, keyed, tmp_path):
    prompts = _prompts(tmp_path, 8)
    chat, plain = tmp_path / "chat.jsonl", tmp_path / "plain.jsonl"
    assert _collect(cli, server.base_url, prompts, chat, "--teacher", "chat", "--max-tokens", "12",
                    "--concurrency", "4").returncode == 0
    result = _collect(cli, server.base_url, prompts, plain, "--completion", "--teacher", "plain", "--max-tokens",
                      "12", "--prompt-template", "Question: {prompt}\\nAnswer: In short,", "--concurrency", "4")
    assert result.returncode == 0, result.stderr
    rows = _rows(plain)
    assert rows and rows[0]["api"] == "completion"
    assert rows[0]["prompt_template"] == "Question: {prompt}\nAnswer: In short,"
    assert json.loads(manifest_path(plain).read_text())["api"] == "completion"

    student_prompts = _prompts(tmp_path, 6, prefix="s", offset=8)
    student = tmp_path / "student.jsonl"
    gen = cli(*["generate", "--endpoint", server.base_url, "--model", SERVED_NAME, "--name", "suspect",
               "-p", str(student_prompts), "-o", str(student), "--api-key-env", KEY_ENV, *TINY, "--max-tokens", "12"])
    assert gen.returncode == 0, gen.stderr
    assert all(r["student"] == "suspect" and "teacher" not in r for r in _rows(student))
    assert json.loads(manifest_path(student).read_text())["role"] == "student"

    reference = tmp_path / "reference.jsonl"
    reference.write_text(chat.read_text() + plain.read_text())
    ranked = cli(*["rank", str(student), "--reference", str(reference), "--format", "json", "--quiet",
                  "--no-normalize"])
    assert ranked.returncode == 0, ranked.stderr
    ranking = json.loads(ranked.stdout)["ranking"]
    assert {r["teacher"] for r in ranking} == {"chat", "plain"}  # which wins is not tested: 8 short outputs each
    assert abs(sum(r["probability"] for r in ranking) - 1) < 1e-6


@pytest.mark.slow
def test_faults_429_500_drop_slow_lose_nothing(cli, server, keyed, tmp_path):
    prompts, out = _prompts(tmp_path, 6), tmp_path / "faults.jsonl"
    script = ["429", "500", "drop", "pass", "slow", "hang", "500", "429"]
    with FaultProxy(server.port, script, retry_after=1.0, slow_seconds=1.0, hang_seconds=5.0) as proxy:
        start = time.monotonic()
        result = _collect(cli, proxy.base_url, prompts, out, "--concurrency", "2", "--timeout", "3")
        took = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    assert sorted(r["id"] for r in _rows(out)) == [f"q{i}" for i in range(6)]
    assert proxy.seen["429"] == 2 and proxy.seen["500"] == 2 and proxy.seen["drop"] == 1 and proxy.seen["hang"] == 1
    statuses = json.loads(manifest_path(out).read_text())["runs"][0]["http_statuses"]
    assert statuses["429"] == 2 and statuses["500"] == 2 and statuses["200"] == 6
    timeouts = statuses.get("APITimeoutError", 0) + statuses.get("TimeoutError", 0)  # the client's or the deadline's
    assert timeouts >= 1 and statuses.get("APIConnectionError", 0) >= 1  # hang, drop
    summary = json.loads(result.stdout)
    assert summary["retries"] >= 6 and summary["requests"] == 6 + summary["retries"]
    assert summary["status"] == "complete"
    assert took >= 1.0  # Retry-After: 1 was honoured


@pytest.mark.slow
def test_retries_exhausted_reports_incomplete_and_rerun_completes(cli, server, keyed, tmp_path):
    prompts, out = _prompts(tmp_path, 3), tmp_path / "part.jsonl"
    with FaultProxy(server.port, ["500", "500"]) as proxy:
        first = _collect(cli, proxy.base_url, prompts, out, "--concurrency", "1", "--max-retries", "1")
    assert first.returncode == 1 and "E415" in first.stderr and "1 of 3 prompts failed" in first.stderr
    assert len(_rows(out)) == 2
    assert json.loads(manifest_path(out).read_text())["status"] == "incomplete"
    second = _collect(cli, server.base_url, prompts, out)
    assert second.returncode == 0 and json.loads(second.stdout)["n_written"] == 1
    assert sorted(r["id"] for r in _rows(out)) == ["q0", "q1", "q2"]
    assert json.loads(manifest_path(out).read_text())["status"] == "complete"


@pytest.mark.slow
def test_wrong_key_stops_at_once_exit_2(cli, server, monkeypatch, tmp_path):
    wrong = "sk-wrong-0123456789abcdef0123456789"
    monkeypatch.setenv(KEY_ENV, wrong)
    prompts, out = _prompts(tmp_path, 8), tmp_path / "denied.jsonl"
    with FaultProxy(server.port, []) as proxy:  # to count what was sent
        result = _collect(cli, proxy.base_url, prompts, out, "--concurrency", "1")
    assert result.returncode == 2
    assert "HTTP 401" in result.stderr and KEY_ENV in result.stderr and "Traceback" not in result.stderr
    assert proxy.seen["pass"] == 1  # one request, no retries, nothing more sent
    assert not out.exists() or not _rows(out)
    assert json.loads(manifest_path(out).read_text())["status"] == "failed"
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert wrong not in path.read_text() and API_KEY not in path.read_text()
    assert wrong not in result.stderr + result.stdout


@pytest.mark.slow
def test_every_first_request_refused_as_bad_stops_early(cli, server, keyed, tmp_path):
    prompts, out = _prompts(tmp_path, 12), tmp_path / "bad.jsonl"
    with FaultProxy(server.port, ["400"] * 12) as proxy:
        result = _collect(cli, proxy.base_url, prompts, out, "--concurrency", "1")
    assert result.returncode == 2 and "HTTP 400 bad request" in result.stderr and "decoding options" in result.stderr
    assert proxy.seen["400"] == 5 and json.loads(manifest_path(out).read_text())["status"] == "failed"


@pytest.mark.slow
def test_unknown_model_path_stops_with_404(cli, server, keyed, tmp_path):
    result = cli(*["collect", "--endpoint", server.base_url.removesuffix("/v1") + "/nope", "--model", SERVED_NAME,
                  "-p", str(_prompts(tmp_path, 2)), "-o", str(tmp_path / "x.jsonl"), "--api-key-env", KEY_ENV, *TINY])
    assert result.returncode == 2 and "HTTP 404" in result.stderr


def _collect_process(server_url: str, prompts: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, **{KEY_ENV: API_KEY})
    return subprocess.Popen([sys.executable, "-m", "attribution", "collect", "--endpoint", server_url, "--model",
                             SERVED_NAME, "-p", str(prompts), "-o", str(out), "--api-key-env", KEY_ENV, *TINY,
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for_rows(out: Path, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out.exists() and out.read_text().count("\n") >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} rows in {out}")


@pytest.mark.slow
def test_client_killed_then_resumed_has_every_prompt_once(cli, server, keyed, tmp_path):
    prompts, out = _prompts(tmp_path, 10), tmp_path / "killed.jsonl"
    process = _collect_process(server.base_url, prompts, out, "--concurrency", "1", "--max-tokens", "12")
    _wait_for_rows(out, 2)
    process.kill()  # kill -9
    process.wait()
    done_before = len(_rows(out))
    assert 2 <= done_before < 10
    result = _collect(cli, server.base_url, prompts, out, "--max-tokens", "12")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n_existing"] == done_before
    ids = [r["id"] for r in _rows(out)]
    assert sorted(ids) == sorted(f"q{i}" for i in range(10)) and len(ids) == len(set(ids))


@pytest.mark.slow
def test_sigterm_leaves_an_interrupted_manifest_and_resumes(cli, server, keyed, tmp_path):
    import signal

    prompts, out = _prompts(tmp_path, 8), tmp_path / "term.jsonl"
    process = _collect_process(server.base_url, prompts, out, "--concurrency", "1", "--max-tokens", "12")
    _wait_for_rows(out, 1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode in (130, 143) and b"Traceback" not in stderr, stderr
    assert json.loads(manifest_path(out).read_text())["status"] == "interrupted"
    result = _collect(cli, server.base_url, prompts, out, "--max-tokens", "12")
    assert result.returncode == 0, result.stderr
    ids = [r["id"] for r in _rows(out)]
    assert sorted(ids) == sorted(f"q{i}" for i in range(8)) and len(ids) == len(set(ids))


@pytest.mark.slow
def test_server_killed_mid_run_then_restarted(cli, server, keyed, tmp_path):
    prompts, out = _prompts(tmp_path, 10), tmp_path / "dead.jsonl"
    process = _collect_process(server.base_url, prompts, out, "--concurrency", "1", "--max-tokens", "12",
                               "--max-retries", "0")  # the dead server refuses at once: fail fast
    _wait_for_rows(out, 2)
    server.stop(kill=True)
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        server.start()
    assert process.returncode == 1 and b"E415" in stderr  # connection refused after retries: incomplete
    assert b"failed in a row, so the run stopped" in stderr or len(_rows(out)) >= 5  # not every prompt tried
    assert json.loads(manifest_path(out).read_text())["status"] == "incomplete"
    result = _collect(cli, server.base_url, prompts, out, "--max-tokens", "12")
    assert result.returncode == 0, result.stderr
    ids = [r["id"] for r in _rows(out)]
    assert sorted(ids) == sorted(f"q{i}" for i in range(10)) and len(ids) == len(set(ids))
    assert json.loads(manifest_path(out).read_text())["status"] == "complete"


@pytest.mark.slow
def test_collect_to_a_device_writes_no_manifest_beside_it(cli, server, keyed, tmp_path):
    """``-o /dev/null`` once wrote ``/dev/null.manifest.json`` into /dev; a link to the device stands in for it."""
    prompts, sink = _prompts(tmp_path, 2), tmp_path / "sink.jsonl"
    sink.symlink_to(os.devnull)
    result = _collect(cli, server.base_url, prompts, sink, "--teacher", "smollm2-chat")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["manifest"] is None and json.loads(result.stdout)["status"] == "complete"
    assert not manifest_path(sink).exists() and sink.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([prompts.name, sink.name])
