"""Throughput of ``collect --endpoint`` against a local llama.cpp server, and the client's own overhead.

Usage (as measured for docs/auditing-api-models.md)::

    python benchmarks/bench_collect.py --n-prompts 24 --max-tokens 32 --concurrency 1,4,8

Starts llama.cpp's OpenAI-compatible server (``llama-cpp-python[server]``) on the offline
SmolLM2-135M-Instruct GGUF at 127.0.0.1 and, for each concurrency:

* ``collect``: :func:`attribution.distill.endpoint.collect_from_endpoint` into a fresh file (the
  ``openai`` async client, retries armed, one fsync'd line per output);
* ``raw``: the same requests sent by bare ``urllib`` from as many threads, nothing written: the
  server's own throughput as seen by the lightest client;
* ``stub``: ``collect`` against an in-process stub server that answers at once with a fixed
  completion, so the figure is the client's ceiling (requests/s with no model behind it).

Prompts are the demo held-out prompts (real, long: ~250 prompt tokens each). Prints one JSON
document on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

STUB_BODY = json.dumps({
    "id": "stub", "object": "chat.completion", "created": 0, "model": "stub",
    "choices": [{"index": 0, "finish_reason": "length",
                 "message": {"role": "assistant", "content": "A fixed answer of a few words for the benchmark."}}],
    "usage": {"prompt_tokens": 250, "completion_tokens": 12, "total_tokens": 262}}).encode()


class _Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        # one write for head and body: two small writes on a kept-alive connection meet Nagle's
        # algorithm and the client's delayed ACK (~40 ms a request), a stub artefact
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(STUB_BODY)}\r\n\r\n"
        self.wfile.write(head.encode() + STUB_BODY)

    def log_message(self, *args: object) -> None:
        pass


def run_collect(url: str, model: str, prompts: Path, concurrency: int, max_tokens: int) -> dict:
    from attribution.distill.endpoint import ApiDecoding, EndpointOptions, collect_from_endpoint

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        summary = collect_from_endpoint(url, model, prompts, Path(folder) / "out.jsonl",
                                        decoding=ApiDecoding(max_tokens=max_tokens),
                                        options=EndpointOptions(concurrency=concurrency))
        seconds = time.perf_counter() - start
    n = summary["n_written"] + summary["n_empty"]
    return {"seconds": round(seconds, 3), "requests": summary["requests"], "requests_per_s": round(n / seconds, 2),
            "output_tokens_per_s": round(summary["completion_tokens"] / seconds, 1),
            "completion_tokens": summary["completion_tokens"]}


def run_raw(url: str, model: str, texts: list[str], concurrency: int, max_tokens: int) -> dict:
    def one(text: str) -> int:
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": text}],
                           "max_tokens": max_tokens, "temperature": 0.0, "seed": 0}).encode()
        request = urllib.request.Request(url + "/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.loads(response.read())["usage"]["completion_tokens"]

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(one, texts))
    seconds = time.perf_counter() - start
    return {"seconds": round(seconds, 3), "requests_per_s": round(len(texts) / seconds, 2),
            "output_tokens_per_s": round(tokens / seconds, 1), "completion_tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-prompts", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (more only on an idle machine)")
    parser.add_argument("--stub-prompts", type=int, default=400, help="requests for the stub (client ceiling)")
    parser.add_argument("--prompts", type=Path, default=REPO / "data" / "demo" / "prompts_heldout.jsonl")
    args = parser.parse_args()
    from attribution.distill._jsonl import read_prompts

    from llama_server import SERVED_NAME, LlamaServer, missing_reason

    reason = missing_reason()
    if reason:
        raise SystemExit(reason)
    import openai  # noqa: F401 - imported once here, so no run pays for the import

    levels = [int(c) for c in args.concurrency.split(",")]
    records = read_prompts(args.prompts, limit=args.n_prompts)
    texts = [r.output for r in records]
    with tempfile.TemporaryDirectory() as folder:
        subset = Path(folder) / "prompts.jsonl"
        subset.write_text("".join(json.dumps({"id": r.key, "prompt": r.output}) + "\n" for r in records))
        many = Path(folder) / "many.jsonl"
        many.write_text("".join(json.dumps({"id": str(i), "prompt": texts[i % len(texts)]}) + "\n"
                                for i in range(args.stub_prompts)))
        results: dict = {"collect": {}, "raw": {}, "stub": {}}
        stub = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
        threading.Thread(target=stub.serve_forever, daemon=True).start()
        run_collect(f"http://127.0.0.1:{stub.server_address[1]}/v1", "stub", subset, 1, args.max_tokens)  # warm-up
        for c in levels:
            print(f"stub, concurrency {c}", file=sys.stderr)
            results["stub"][str(c)] = run_collect(f"http://127.0.0.1:{stub.server_address[1]}/v1", "stub", many, c,
                                                  args.max_tokens)
        stub.shutdown()
        start = time.perf_counter()
        server = LlamaServer(threads=args.threads, n_ctx=2048).start()
        load = time.perf_counter() - start
        try:
            run_raw(server.base_url, SERVED_NAME, texts[:2], 1, 4)  # warm-up
            for c in levels:
                print(f"llama.cpp, concurrency {c}: raw, then collect", file=sys.stderr)
                results["raw"][str(c)] = run_raw(server.base_url, SERVED_NAME, texts, c, args.max_tokens)
                results["collect"][str(c)] = run_collect(server.base_url, SERVED_NAME, subset, c, args.max_tokens)
        finally:
            server.stop()
    for c in map(str, levels):
        raw, ours = results["raw"][c]["requests_per_s"], results["collect"][c]["requests_per_s"]
        results["collect"][c]["vs_raw"] = round(ours / raw, 3) if raw else None
    print(json.dumps({"n_prompts": len(texts), "max_tokens": args.max_tokens, "server_start_s": round(load, 1),
                      "llama_threads": args.threads, "python": platform.python_version(),
                      "machine": platform.machine(), **results}, indent=2))


if __name__ == "__main__":
    main()
