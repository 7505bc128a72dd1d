"""A scripted OpenAI-compatible server on 127.0.0.1, for what a real server will not do on request.

:class:`Stub` answers each POST with its ``respond(handler, body)`` (default: a well-formed chat
completion naming the prompt), records every request it received, and runs in a thread of the test
process. It plays the hostile or broken endpoints of ``tests/test_endpoint_hostile.py``: redirects,
malformed or huge answers, answers dripping a byte at a time, an echoed API key. Loopback only;
``tests/llama_server.py`` is the real server.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def completion(text: str | None = "A short answer.", *, model: str = "stub-model", finish: str | None = "stop",
               usage: Any = None) -> bytes:
    """The body of a chat completion answering ``text``."""
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": text}}],
            "usage": usage if usage is not None else {"prompt_tokens": 5, "completion_tokens": 3,
                                                      "total_tokens": 8}}
    return json.dumps(body).encode()


def prompt_of(body: dict[str, Any]) -> str:
    """The prompt of a chat or completion request body."""
    if "messages" in body:
        return str(body["messages"][-1]["content"])
    return str(body.get("prompt", ""))


class Handler(BaseHTTPRequestHandler):
    """One request: recorded, then answered by the stub's ``respond``."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        stub = self.server.stub
        with stub.lock:
            headers = {name.lower(): value for name, value in self.headers.items()}
            stub.requests.append({"path": self.path, "body": body, "headers": headers})
        stub.respond(self, body)

    def send(self, status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        """Answer with ``status``, ``body`` and ``headers`` (JSON unless they say otherwise)."""
        self.send_response(status)
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    stub: Stub

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up (a refused answer, a deadline) is not the test's failure


class Stub:
    """A server on a free loopback port; ``base_url`` ends in ``/v1``; ``requests`` lists what it received."""

    def __init__(self, respond: Callable[[Handler, dict[str, Any]], None] | None = None) -> None:
        self.respond = respond or (lambda handler, body: handler.send(200, completion(f"On {prompt_of(body)}.")))
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.stub = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> Stub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
