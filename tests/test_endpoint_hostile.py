"""``collect`` / ``generate --endpoint`` against hostile and broken endpoints (issue 20, items 3, 4, 8, 9, 11-14).

Each endpoint is a :class:`tests.stub_openai.Stub` on 127.0.0.1 (a thread of this process) scripted to
misbehave: redirect elsewhere, echo the API key, answer malformed, huge or dripping bodies, ask for an
hour's wait, answer slowly while the run is killed. The property is the same throughout: nothing is sent
anywhere but the named endpoint, the key reaches no file or message, one bad answer fails one prompt
(coded, retried on resume) and never the run, and every run ends with its manifest written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("openai")

from attribution.distill.endpoint import (  # noqa: E402
    AnswerRefused,
    ApiDecoding,
    EndpointOptions,
    answer_limit,
    backoff_delay,
    collect_from_endpoint,
    parse_answer,
)
from attribution.distill.manifest import manifest_path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stub_openai import Stub, completion, prompt_of  # noqa: E402

from conftest import REPO, run_cli  # noqa: E402

KEY = "sk-stub-9f8e7d6c5b4a39281706f5e4d3c2b1a0"  # must never reach a file or a message
KEY_ENV = "TA_TEST_STUB_KEY"


def _prompts(folder: Path, n: int) -> Path:
    path = folder / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "task": "t", "prompt": f"prompt number {i}"}) + "\n"
                            for i in range(n)))
    return path


def _collect(url: str, prompts: Path, out: Path, *extra: str, env: dict[str, str] | None = None):
    return run_cli("collect", "--endpoint", url, "--model", "stub-model", "-p", prompts, "-o", out,
                   "--api-key-env", KEY_ENV, "--max-tokens", "6", "--format", "json", *extra,
                   env=env if env is not None else dict(os.environ, **{KEY_ENV: KEY}))


def _ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in out.read_text().splitlines()] if out.exists() else []


def _manifest(out: Path) -> dict:
    return json.loads(manifest_path(out).read_text())


def _clean(result) -> None:
    """No traceback and no 'unexpected' on stderr: every failure was a coded one."""
    assert "Traceback" not in result.stderr and "unexpected" not in result.stderr, result.stderr


# -- item 3: redirects to another origin ------------------------------------------------------------------------

@pytest.mark.parametrize("status", [307, 308])
def test_redirect_to_another_origin_is_not_followed(tmp_path, status):
    with Stub() as elsewhere:
        def redirect(handler, body):
            handler.send(status, b"", {"Location": f"{elsewhere.base_url}/chat/completions"})

        with Stub(redirect) as named:
            prompts, out = _prompts(tmp_path, 4), tmp_path / "out.jsonl"
            result = _collect(named.base_url, prompts, out, "--concurrency", "1", "--quiet")
    assert result.returncode == 2 and "[E418]" in result.stderr, result.stderr
    assert f"127.0.0.1:{named.port}" in result.stderr and f"127.0.0.1:{elsewhere.port}" in result.stderr
    assert elsewhere.requests == []  # not one prompt reached the server nobody named
    assert len(named.requests) == 1  # and the run stopped at the first redirect
    assert _manifest(out)["status"] == "failed" and "E418" in _manifest(out)["runs"][0]["error"]
    _clean(result)


def test_redirect_within_the_endpoint_is_followed(tmp_path):
    def moved(handler, body):
        if handler.path.startswith("/v1/"):
            handler.send(307, b"", {"Location": handler.path.replace("/v1/", "/v2/", 1)})
        else:
            handler.send(200, completion(f"On {prompt_of(body)}."))

    with Stub(moved) as stub:
        prompts, out = _prompts(tmp_path, 2), tmp_path / "out.jsonl"
        result = _collect(stub.base_url, prompts, out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert sorted(_ids(out)) == ["q0", "q1"] and {r["path"][:4] for r in stub.requests} == {"/v1/", "/v2/"}


# -- item 4: the API key reaches no file and no message ----------------------------------------------------------

def test_a_server_echoing_the_key_gets_it_nowhere(tmp_path):
    def echo(handler, body):
        key = handler.headers["Authorization"].removeprefix("Bearer ")
        if "1" in prompt_of(body):  # a failing prompt whose error message quotes the key
            handler.send(500, json.dumps({"error": {"message": f"key {key} is over quota"}}).encode())
        else:
            handler.send(200, completion(f"your key is {key}", model=key, finish=key))

    with Stub(echo) as stub:
        prompts, out = _prompts(tmp_path, 3), tmp_path / "out.jsonl"
        result = _collect(stub.base_url, prompts, out, "--max-retries", "0")
    assert stub.requests and all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in stub.requests)
    assert result.returncode == 1 and "E415" in result.stderr  # q1 failed; q0 and q2 written
    assert sorted(_ids(out)) == ["q0", "q2"]
    assert KEY not in result.stdout + result.stderr
    for path in tmp_path.rglob("*"):
        assert KEY not in path.read_text(errors="replace"), path.name
    assert _manifest(out)["served_models"] == ["***"]
    _clean(result)


@pytest.mark.parametrize("value", [KEY, "5e3b9c1d7a2f4e8b9c0d1e2f3a4b5c6d7e8f", "AIzaSyD4e5F6g7H8i9J0kLmNoPq"])
def test_a_key_given_as_the_variable_name_is_refused_unrepeated(tmp_path, value):
    with Stub() as stub:
        prompts, out = _prompts(tmp_path, 2), tmp_path / "out.jsonl"
        result = _collect(stub.base_url, prompts, out, "--api-key-env", value)
    assert result.returncode == 2 and "[E419]" in result.stderr, result.stderr
    assert value not in result.stdout + result.stderr
    assert stub.requests == [] and not out.exists() and not manifest_path(out).exists()
    with pytest.raises(ValueError, match="E419") as caught:
        EndpointOptions(api_key_env=value)
    assert value not in str(caught.value)


# -- item 8: one writer per output file ---------------------------------------------------------------------------

def test_a_second_collector_on_the_same_output_is_refused(tmp_path):
    started = threading.Event()

    def slow(handler, body):
        started.set()
        time.sleep(0.2)
        handler.send(200, completion(f"On {prompt_of(body)}."))

    with Stub(slow) as stub:
        prompts, out = _prompts(tmp_path, 6), tmp_path / "out.jsonl"
        first: dict = {}

        def run_first() -> None:
            first["summary"] = collect_from_endpoint(stub.base_url, "stub-model", prompts, out,
                                                     decoding=ApiDecoding(max_tokens=6),
                                                     options=EndpointOptions(concurrency=1))

        thread = threading.Thread(target=run_first)
        thread.start()
        assert started.wait(30)
        second = _collect(stub.base_url, prompts, out, "--quiet")
        thread.join(60)
    assert second.returncode == 1 and "[E422]" in second.stderr, second.stderr
    assert first["summary"]["n_written"] == 6 and sorted(_ids(out)) == [f"q{i}" for i in range(6)]
    assert len(stub.requests) == 6  # no prompt was paid for twice
    _clean(second)


# -- item 9: SIGTERM ends a run cleanly, every time -------------------------------------------------------------

def _wait_for_rows(out: Path, n: int, process: subprocess.Popen) -> None:
    for _ in range(600):
        if out.exists() and out.read_text().count("\n") >= n:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} rows in {out}")


@pytest.mark.slow
def test_sigterm_writes_the_manifest_and_exits_143_every_time(tmp_path):
    def slow(handler, body):
        time.sleep(0.3)
        handler.send(200, completion(f"On {prompt_of(body)}."))

    env = dict(os.environ, **{KEY_ENV: KEY})
    with Stub(slow) as stub:
        prompts, out = _prompts(tmp_path, 40), tmp_path / "out.jsonl"
        for run in range(3):  # each run resumes the last one's file, and is stopped in flight
            before = len(_ids(out))
            process = subprocess.Popen(
                [sys.executable, "-m", "attribution", "collect", "--endpoint", stub.base_url, "--model", "stub-model",
                 "-p", str(prompts), "-o", str(out), "--api-key-env", KEY_ENV, "--max-tokens", "6",
                 "--concurrency", "2", "--quiet"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            _wait_for_rows(out, before + 1, process)
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=60)
            assert process.returncode == 143, (run, process.returncode, stderr)
            assert stderr.decode().strip().endswith("terminated") and b"Traceback" not in stderr, stderr
            manifest = _manifest(out)
            assert manifest["status"] == "interrupted" and len(manifest["runs"]) == run + 1
            assert manifest["output"]["n_records"] == len(_ids(out)) < 40
        result = _collect(stub.base_url, prompts, out, "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    ids = _ids(out)
    assert sorted(ids) == sorted(f"q{i}" for i in range(40)) and len(ids) == len(set(ids))


def test_a_run_leaves_the_signal_handlers_as_it_found_them(tmp_path):
    """A SIGTERM after the run (while the manifest and the summary are written) must meet the caller's handler:
    the run used to leave SIG_DFL behind (asyncio's remove_signal_handler), and such a SIGTERM killed the
    process without a word or a manifest."""
    def handler(signum, frame):
        pass

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Stub() as stub:
            summary = collect_from_endpoint(stub.base_url, "stub-model", _prompts(tmp_path, 2), tmp_path / "o.jsonl",
                                            decoding=ApiDecoding(max_tokens=6))
        assert summary["status"] == "complete"
        assert signal.getsignal(signal.SIGTERM) is handler and signal.getsignal(signal.SIGINT) is handler
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


# -- item 11: a malformed answer fails its prompt, not the run ------------------------------------------------------

GOOD_MESSAGE = b'{"choices": [{"message": {"content": "hi"}}]'
MALFORMED = {
    "truncated JSON": b'{"id": "x", "choices": [{"message": {"content": "hel',
    "HTML page": b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>",
    "JSON list": b'[{"choices": [{"message": {"content": "hi"}}]}]',
    "choices null": b'{"choices": null}',
    "choices empty": b'{"choices": []}',
    "choices absent": b'{"id": "chatcmpl-1", "model": "m"}',
    "content a number": b'{"choices": [{"message": {"content": 42}}]}',
    "usage Infinity": GOOD_MESSAGE + b', "usage": {"prompt_tokens": Infinity, "completion_tokens": 1}}',
    "usage a string": GOOD_MESSAGE + b', "usage": "12 tokens"}',
    "usage count a string": GOOD_MESSAGE + b', "usage": {"prompt_tokens": "12", "completion_tokens": 1}}',
    "deeply nested": b'{"choices": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "lone surrogate": b'{"choices": [{"message": {"content": "x \\ud800 y"}}]}',
    "not UTF-8": b'{"choices": [{"message": {"content": "caf\xe9"}}]}',
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_each_malformed_answer_is_a_coded_refusal(case):
    with pytest.raises(AnswerRefused) as caught:
        parse_answer(MALFORMED[case], completion=False, model="m")
    assert caught.value.code == "E420" and str(caught.value).endswith("[E420]")
    str(caught.value).encode("utf-8")  # the message itself is printable


def test_malformed_answers_fail_their_prompts_and_are_retried_on_resume(tmp_path):
    cases = sorted(MALFORMED)  # prompt 2k gets case k, prompt 2k+1 a good answer

    def respond(handler, body):
        number = int(prompt_of(body).rsplit(" ", 1)[1])
        if number % 2 == 0:
            case = cases[number // 2]
            handler.send(200, MALFORMED[case], {"Content-Type": "text/html" if "HTML" in case else "application/json"})
        else:
            handler.send(200, completion(f"On {prompt_of(body)}."))

    n = 2 * len(cases)
    prompts, out = _prompts(tmp_path, n), tmp_path / "out.jsonl"
    with Stub(respond) as stub:
        result = _collect(stub.base_url, prompts, out, "--quiet", "--concurrency", "1")
    assert result.returncode == 1 and "[E415]" in result.stderr and "E420" in result.stderr, result.stderr
    assert f"{len(cases)} of {n} prompts failed" in result.stderr
    _clean(result)
    assert sorted(_ids(out)) == sorted(f"q{i}" for i in range(1, n, 2)) and len(stub.requests) == n  # no retries
    run = _manifest(out)["runs"][0]
    assert run["failed"] == len(cases) and run["http_statuses"]["AnswerRefused"] == len(cases)
    with Stub() as healed:  # the rerun asks only for the prompts that failed
        again = _collect(healed.base_url, prompts, out, "--quiet")
    assert again.returncode == 0, again.stderr
    assert sorted(prompt_of(r["body"]) for r in healed.requests) == sorted(f"prompt number {i}" for i in range(0, n, 2))
    assert sorted(_ids(out)) == sorted(f"q{i}" for i in range(n))


# -- item 12: --timeout bounds the whole answer ----------------------------------------------------------------------

def test_timeout_bounds_an_answer_dripping_a_byte_at_a_time(tmp_path):
    def drip(handler, body):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        for _ in range(120):  # 60 s of one byte per half second, each within the client's read timeout
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.5)

    with Stub(drip) as stub:
        prompts, out = _prompts(tmp_path, 1), tmp_path / "out.jsonl"
        start = time.monotonic()
        result = _collect(stub.base_url, prompts, out, "--timeout", "1", "--max-retries", "0", "--quiet")
        took = time.monotonic() - start
    assert result.returncode == 1 and "no complete answer within --timeout 1 s" in result.stderr, result.stderr
    assert took < 30  # not the 60 s the drip lasts
    _clean(result)


# -- item 13: Retry-After is capped, and a long wait is announced -----------------------------------------------------

def test_retry_after_is_capped_and_a_long_wait_is_announced(tmp_path, monkeypatch):
    import attribution.distill.endpoint as endpoint
    import attribution.distill.retry as retry

    assert backoff_delay(0, EndpointOptions(), 3600.0) <= retry.RETRY_AFTER_MAX_S * 1.1  # an hour asked: 60 s
    monkeypatch.setattr(retry, "RETRY_AFTER_MAX_S", 0.2)  # the same rule, at a scale a test can wait for
    monkeypatch.setattr(endpoint, "RETRY_AFTER_MAX_S", 0.2)
    monkeypatch.setattr(endpoint, "WAIT_NOTICE_S", 0.1)

    def busy_once(handler, body):
        if len(handler.server.stub.requests) == 1:
            handler.send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "3600"})
        else:
            handler.send(200, completion("fine"))

    with Stub(busy_once) as stub:
        prompts, out = _prompts(tmp_path, 1), tmp_path / "out.jsonl"
        result = _collect(stub.base_url, prompts, out, "--concurrency", "1")
    assert result.returncode == 0, result.stderr
    assert "retrying prompt 'q0'" in result.stderr and "3600 s (Retry-After), capped at 0.2 s" in result.stderr
    assert len(stub.requests) == 2 and _ids(out) == ["q0"]


# -- item 14: an answer's size is capped -----------------------------------------------------------------------------

@pytest.mark.parametrize("declared", [False, True])
def test_a_huge_answer_fails_its_prompt_and_writes_nothing_big(tmp_path, declared):
    def huge(handler, body):
        if declared:  # claims 5 GB: refused on the header, before reading
            handler.send(200, b'{"choices": [', {"Content-Length": str(5 * 10 ** 9)})
        else:  # a real 3 MB answer to --max-tokens 6
            handler.send(200, completion("many words " * 300_000))

    with Stub(huge) as stub:
        prompts, out = _prompts(tmp_path, 2), tmp_path / "out.jsonl"
        result = _collect(stub.base_url, prompts, out, "--quiet", "--max-retries", "0")
    assert result.returncode == 1 and "E421" in result.stderr and str(answer_limit(6)) in result.stderr, result.stderr
    assert sum(p.stat().st_size for p in tmp_path.glob("out*")) < 10_000
    assert _manifest(out)["runs"][0]["failed"] == 2
    _clean(result)
