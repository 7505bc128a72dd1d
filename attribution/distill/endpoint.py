"""Collect outputs from a model served behind an OpenAI-compatible API, resumably.

The same record format and resume rules as local collection (:mod:`.collect`): each finished
output is appended as one flushed JSON line, a rerun skips the ids already in the file, and a
cut-off last line is repaired. Requests go out concurrently (``concurrency``) through the official
``openai`` client, only to the ``base_url`` given; 429, 5xx, timeouts and dropped connections are
retried with exponential backoff and jitter (a ``Retry-After`` header wins); 401, 403 and 404 stop
the run at once. A manifest (``OUT.manifest.json`` beside ``OUT.jsonl``) records where the outputs
came from: endpoint (no credentials), model as served, decoding, prompt file digest, dates, tool
version, token usage and request counts. The API key is read from an environment variable and is
never written anywhere: every string written or printed is scrubbed of it.

A hostile or broken endpoint cannot take more than one prompt with it: a redirect to another origin
stops the run (E418) before anything is sent there; an answer that is not a well-formed completion
(E420) or is larger than :func:`answer_limit` (E421) fails its prompt only (a rerun retries it);
``timeout`` bounds each whole request, however slowly the answer arrives; a ``Retry-After`` is obeyed
up to :data:`~.retry.RETRY_AFTER_MAX_S`. The output file is locked while a run writes it (a second
run on it is refused, E422), and SIGINT/SIGTERM end a run cleanly: manifest written, then the signal's
usual effect (the CLI exits 130 / 143).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..errors import AttributionError, Errors, missing_dependency, model_error
from . import settings as _settings
from ._jsonl import AppendWriter, exclusive_output, load_finished, read_prompts
from .manifest import check_url, has_manifest, manifest_path, public_url, redact, utc_now, write_manifest
from .retry import FATAL_STATUSES, RETRY_AFTER_MAX_S, RateLimiter, backoff_delay, classify_error, retry_after

#: A run whose first requests are all refused as bad requests (400, 422) stops after this many: the
#: request itself is wrong (e.g. a decoding option the model does not take), not one prompt.
FIRST_REJECTIONS_STOP = 5
#: After this many prompts in a row failed every retry (a dead or overloaded endpoint), no new prompt
#: is started: the run ends as incomplete at once instead of spending the full backoff on every prompt.
FAILED_IN_A_ROW_STOP = 5
#: The largest answer body read for one prompt: 1 MiB plus 64 bytes per requested token (80 tokens: 1.05 MB),
#: room for any real completion of ``max_tokens`` with its JSON escapes; a longer one fails its prompt (E421).
ANSWER_BYTES_BASE, ANSWER_BYTES_PER_TOKEN = 1 << 20, 64
#: A wait before a retry at least this long (seconds) is announced on stderr (``log``).
WAIT_NOTICE_S = 5.0


def answer_limit(max_tokens: int) -> int:
    """Bytes of one answer body read at most (:data:`ANSWER_BYTES_BASE` + :data:`ANSWER_BYTES_PER_TOKEN` per token)."""
    return ANSWER_BYTES_BASE + ANSWER_BYTES_PER_TOKEN * max(int(max_tokens), 0)


@dataclass(frozen=True)
class ApiDecoding:
    """Decoding settings sent with every request and recorded with every output.

    Greedy (``temperature=0``) unless ``sample``; ``seed`` is sent when not None (providers that
    support it make sampling reproducible); ``stop`` holds up to four stop strings.
    """

    max_tokens: int = 80
    sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Each setting within its range (:data:`attribution.distill.settings.SETTINGS`; ``E210``)."""
        for name in ("max_tokens", "sample", "temperature", "top_p", "stop"):
            _settings.check(name, getattr(self, name))
        if self.seed is not None:
            _settings.check("seed", self.seed)
        _settings.check_sampling(self.sample, self.temperature, self.top_p)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"max_tokens": self.max_tokens, "temperature": self.temperature if self.sample else 0.0}
        if self.sample:
            data["top_p"] = self.top_p
        if self.seed is not None:
            data["seed"] = self.seed
        if self.stop:
            data["stop"] = list(self.stop)
        return data


@dataclass(frozen=True)
class EndpointOptions:
    """How to talk to the endpoint: API flavour, key, concurrency, rate limits, retries."""

    completion: bool = False
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 4
    rpm: float = 0.0
    tpm: float = 0.0
    max_retries: int = 6
    timeout: float = 120.0
    backoff_base: float = 1.0
    backoff_max: float = 60.0

    def __post_init__(self) -> None:
        """Each setting within its range (``E210``); a key given as ``api_key_env`` is refused unrepeated (``E419``)."""
        for name in ("completion", "api_key_env", "concurrency", "rpm", "tpm", "max_retries", "timeout"):
            _settings.check(name, getattr(self, name))


@dataclass
class Stats:
    """Counters kept during one run (written to the manifest)."""

    requests: int = 0
    retries: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    served_models: set[str] = field(default_factory=set)
    written: int = 0
    empty: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    succeeded: int = 0
    failed_in_a_row: int = 0

    def count(self, status: str) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1


class EndpointStopped(AttributionError, ValueError):
    """The endpoint refused the run (401/403/404): nothing more is sent (CLI exit code 2)."""


class CollectionIncomplete(AttributionError):
    """Some prompts failed after every retry; rerunning the same command retries only those."""


class RedirectRefused(EndpointStopped):
    """The endpoint redirected a request to another origin (E418): not followed, the run stops."""


class AnswerRefused(AttributionError):
    """One answer was malformed (E420) or too large (E421): its prompt fails, the run goes on."""


def _openai() -> Any:
    try:
        import openai
    except ModuleNotFoundError as err:
        if err.name != "openai":
            raise
        raise missing_dependency("openai", "api") from None
    return openai


def _client(base_url: str, options: EndpointOptions) -> Any:
    openai = _openai()
    # Local servers (llama.cpp, vLLM, Ollama) accept any key; the client insists on one.
    key = os.environ.get(options.api_key_env) or "no-key"
    http = openai.DefaultAsyncHttpxClient(event_hooks={"response": [_same_origin_only(base_url)]})
    return openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=options.timeout, http_client=http)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


def _same_origin_only(base_url: str) -> Callable[[Any], Any]:
    """An HTTP response hook: a redirect to another scheme, host or port raises :class:`RedirectRefused` (E418)
    before it is followed, so nothing (no prompt, no key) is sent there. Same-origin redirects are followed."""
    origin = _origin(base_url)

    async def check(response: Any) -> None:
        location = response.headers.get("location")
        if location is None or not 300 <= response.status_code < 400:
            return
        target = str(response.url.join(location))
        if _origin(target) != origin:
            raise RedirectRefused(Errors.E418.format(endpoint=public_url(str(response.url)),
                                                     status=response.status_code, target=public_url(target)),
                                  code="E418")

    return check


def _framed(prompt: str, template: str | None) -> str:
    return template.replace("{prompt}", prompt) if template else prompt


async def _request(client: Any, model: str, prompt: str, decoding: ApiDecoding, options: EndpointOptions,
                   system_prompt: str | None) -> tuple[str, str, int, int, str]:
    """One request: (text, finish reason, prompt tokens, completion tokens, served model).

    The body is read as it streams, up to :func:`answer_limit` bytes (E421 beyond), and parsed by
    :func:`parse_answer` (E420 for anything but a well-formed completion). The caller bounds the whole call
    in time.
    """
    kwargs: dict[str, Any] = decoding.to_dict()
    if options.completion:
        call = client.completions.with_streaming_response.create(model=model, prompt=prompt, **kwargs)
    else:
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": prompt}]
        call = client.chat.completions.with_streaming_response.create(model=model, messages=messages, **kwargs)
    limit = answer_limit(decoding.max_tokens)
    async with call as response:
        endpoint = public_url(str(client.base_url))
        declared = response.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            raise _too_large(endpoint, limit, decoding.max_tokens)
        body = bytearray()
        async for chunk in response.iter_bytes():
            body += chunk
            if len(body) > limit:
                raise _too_large(endpoint, limit, decoding.max_tokens)
    return parse_answer(bytes(body), completion=options.completion, model=model, endpoint=endpoint)


def _too_large(endpoint: str, limit: int, max_tokens: int) -> AnswerRefused:
    return AnswerRefused(Errors.E421.format(endpoint=endpoint, limit=limit, max_tokens=max_tokens), code="E421")


def _malformed(endpoint: str, detail: str) -> AnswerRefused:
    return AnswerRefused(Errors.E420.format(endpoint=endpoint, detail=detail), code="E420")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_answer(body: bytes, *, completion: bool, model: str,
                 endpoint: str = "the endpoint") -> tuple[str, str, int, int, str]:
    """(text, finish reason, prompt tokens, completion tokens, served model) from an answer body.

    Anything but a JSON object with a non-empty ``choices`` list whose first entry holds the text
    (``text``, or ``message.content`` for chat; null means empty) as valid Unicode, an optional string
    ``finish_reason`` and ``model``, and an optional ``usage`` of non-negative integer counts, raises
    :class:`AnswerRefused` (``E420``) saying what was wrong.
    """
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise _malformed(endpoint, "the body is not UTF-8") from None
    except RecursionError:
        raise _malformed(endpoint, "the JSON is nested too deeply") from None
    except ValueError as err:
        start = body[:40].decode("utf-8", "replace")
        raise _malformed(endpoint, f"not JSON ({str(err).split(':')[0]}; it starts {start!r})") from None
    if not isinstance(data, dict):
        raise _malformed(endpoint, f"a JSON {type(data).__name__}, not an object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _malformed(endpoint, f"'choices' is {_shape(choices)}, not a list of objects")
    choice = choices[0]
    if completion:
        text = choice.get("text")
    else:
        message = choice.get("message")
        if not isinstance(message, dict):
            raise _malformed(endpoint, f"'choices[0].message' is {_shape(message)}, not an object")
        text = message.get("content")
    where = "choices[0].text" if completion else "choices[0].message.content"
    text = _string(text, where, endpoint)
    finish = _string(choice.get("finish_reason"), "choices[0].finish_reason", endpoint)
    served = _string(data.get("model"), "model", endpoint) or model
    usage = data.get("usage")
    if usage is not None and not isinstance(usage, dict):
        raise _malformed(endpoint, f"'usage' is {_shape(usage)}, not an object")
    usage = usage or {}
    n_in, n_out = (_count(usage.get(key), f"usage.{key}", endpoint) for key in ("prompt_tokens", "completion_tokens"))
    return text.strip(), finish, n_in, n_out, served


def _shape(value: Any) -> str:
    if value is None:
        return "absent or null"
    if isinstance(value, list) and not value:
        return "an empty list"
    return f"a {type(value).__name__}"


def _string(value: Any, where: str, endpoint: str) -> str:
    """A string field of the answer (null: empty), valid Unicode; else E420."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _malformed(endpoint, f"'{where}' is {_shape(value)}, not a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _malformed(endpoint, f"'{where}' is not valid Unicode (a lone surrogate)") from None
    return value


def _count(value: Any, where: str, endpoint: str) -> int:
    """A token count of the answer's usage (absent or null: 0): a whole number from 0 to 10**9; else E420."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not (math.isfinite(value) and value.is_integer())) or not 0 <= value <= 1e9:
        raise _malformed(endpoint, f"'{where}' is {value!r:.40}, not a token count")
    return int(value)


def collect_from_endpoint(base_url: str, model: str, prompts: str | os.PathLike, output: str | os.PathLike, *,
                          label: str | None = None, role: str = "teacher", true_teacher: str | None = None,
                          task: str | None = None, decoding: ApiDecoding | None = None,
                          options: EndpointOptions | None = None, system_prompt: str | None = None,
                          prompt_template: str | None = None, limit: int = 0,
                          progress: bool = False, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Query ``model`` at ``base_url`` for every prompt whose id is not yet in ``output``.

    Parameters
    ----------
    base_url : str
        The OpenAI-compatible API root, e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``.
    model : str
        The model name the endpoint serves.
    prompts, output : path
        As for :func:`attribution.distill.collect_outputs`; ``output`` is appended to (locked while this
        runs: a second run on it is refused, ``E422``), and its manifest (:func:`manifest_path`) rewritten
        after the run.
    label : str, optional
        The ``teacher`` (``role="teacher"``) or ``student`` (``role="student"``) label of each record;
        defaults to ``model``.
    true_teacher : str, optional
        For ``role="student"``: the teacher label to record when it is known (for ``evaluate``).
    decoding : ApiDecoding, optional
        Greedy, 80 tokens by default.
    options : EndpointOptions, optional
        Chat or completion API, key variable, concurrency, rate limits, retries.
    log : callable, optional
        Receives notes worth a line on stderr (a long wait before a retry).

    Returns
    -------
    dict
        ``output``, ``manifest``, ``endpoint``, ``model``, ``label``, ``n_prompts``, ``n_existing`` (skipped),
        ``n_written``, ``n_empty``, ``n_failed``, ``requests``, ``retries``, ``prompt_tokens``,
        ``completion_tokens``, ``seconds``, ``status``.

    Raises
    ------
    EndpointStopped
        On 401, 403 or 404, or a redirect to another origin (the manifest then says ``failed``).
    CollectionIncomplete
        When prompts still failed after every retry (the finished ones are kept; rerun to retry).
    """
    # over 60 lines only by its numpydoc docstring; the body is 32 lines
    decoding = decoding or ApiDecoding()
    options = options or EndpointOptions()
    _check_arguments(base_url, role=role, prompt_template=prompt_template, system_prompt=system_prompt,
                     completion=options.completion, limit=limit)
    label = label or model
    records = read_prompts(prompts, limit=limit)
    settings = {"model": model, "api": "completion" if options.completion else "chat",
                "decoding": decoding.to_dict(), "system_prompt": system_prompt, "prompt_template": prompt_template}
    secret = os.environ.get(options.api_key_env)
    with exclusive_output(output), _scrubbed(secret):
        existing = load_finished(output)
        from .collect import check_same_settings

        if role == "teacher":
            check_same_settings(output, existing, settings, label)
        else:  # student rows carry the true teacher (or none) in 'teacher'
            check_same_settings(output, existing, {**settings, "student": label}, true_teacher)
        done = {str(row["id"]) for row in existing}
        todo = [r for r in records if r.key not in done]
        if todo:
            _openai()  # a missing client is an install problem, not a failed run
        job = _Job(model=model, endpoint=public_url(base_url), decoding=decoding, options=options, label=label,
                   role=role, true_teacher=true_teacher, task=task, system_prompt=system_prompt,
                   prompt_template=prompt_template, settings=settings, secret=secret, log=log)
        stats = Stats()
        manifest = str(manifest_path(output)) if has_manifest(output) else None  # none for -o /dev/null
        summary = {"output": str(output), "manifest": manifest, "endpoint": job.endpoint,
                   "model": model, "label": label, "n_prompts": len(records), "n_existing": len(existing)}
        summary = _recorded_run(base_url, job, todo, output, stats, prompts=prompts, summary=summary,
                                progress=progress)
    if stats.failed:
        raise _incomplete(stats, len(todo), options, output)
    return summary


@contextlib.contextmanager
def _scrubbed(secret: str | None) -> Any:
    """Whatever escapes the block leaves without the API key in its message (an unexpected error included)."""
    try:
        yield
    except BaseException as err:
        if secret and secret in str(err):
            err.args = tuple(redact(a, secret) if isinstance(a, str) else a for a in err.args)
            if isinstance(err, AttributionError):
                err.message = redact(err.message, secret)
        raise


def _recorded_run(base_url: str, job: _Job, todo: list[Any], output: str | os.PathLike, stats: Stats, *,
                  prompts: str | os.PathLike, summary: dict[str, Any], progress: bool) -> dict[str, Any]:
    """Run the workers on ``todo``; whatever happens, write the manifest (status ``complete``, ``incomplete``,
    ``failed`` or ``interrupted``) and return the summary completed with the run's counts.

    SIGINT and SIGTERM (:class:`_Interruptions`) cancel the run; the manifest is written with the signal held
    back, then the signal takes its usual course (the CLI: exit 130 / 143).
    """
    start_date, start = utc_now(), time.perf_counter()
    status, error = "complete", None
    interrupted: BaseException | None = None
    with _Interruptions() as signals:  # on leaving, a signal held back is given to its previous handler
        try:
            if todo:
                _run(base_url, job, todo, output, stats, n_total=summary["n_prompts"], progress=progress,
                     signals=signals)
            if stats.failed:
                status = "incomplete"
        except EndpointStopped as err:
            status, error = "failed", str(err)
            raise
        except Exception as err:
            status, error = "failed", f"{type(err).__name__}: {_short(err)}"
            raise
        except BaseException as err:  # Ctrl-C, SIGTERM (through _Interruptions or a handler of the caller's)
            status, error, interrupted = "interrupted", "interrupted", err
        finally:
            signals.hold()  # from here a signal waits until the manifest is written
            summary = {**summary, "n_written": stats.written, "n_empty": stats.empty,
                       "n_failed": len(stats.failed), "requests": stats.requests, "retries": stats.retries,
                       "prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens,
                       "seconds": round(time.perf_counter() - start, 3), "status": status}
            write_manifest(output, prompts, base_url, job.settings, stats, summary, role=job.role, label=job.label,
                           started=start_date, error=redact(error, job.secret) if error else None,
                           options=job.options, secret=job.secret)
    if isinstance(interrupted, asyncio.CancelledError):  # cancelled by a signal whose handler did not raise
        raise KeyboardInterrupt from None
    if interrupted is not None:
        raise interrupted
    return summary


class _Interruptions:
    """SIGINT and SIGTERM while a run is recorded (main thread only).

    While the run goes on, the first one cancels the run's main task through the event loop (a second one goes
    to its previous handler at once); once the run is over (:meth:`hold`) a signal is only remembered, so that
    the manifest is written whole. On exit the previous handlers are put back (never ``SIG_DFL`` in their place,
    which is what asyncio's ``remove_signal_handler`` leaves: a later SIGTERM then killed the process without a
    word) and the remembered signal is given to its previous handler: the CLI's raise KeyboardInterrupt or
    Terminated (exit 130 / 143); with no handler of Python's, the signal's default action. A signal set to be
    ignored stays ignored.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.previous: dict[int, Any] = {}
        self.received: int | None = None
        self._cancel: Callable[[], None] | None = None

    def __enter__(self) -> _Interruptions:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                handler = signal.getsignal(signum)
                if handler is not signal.SIG_IGN and handler is not None:
                    self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signum, self.received = self.received, None
        previous, self.previous = self.previous, {}
        for number, handler in previous.items():
            signal.signal(number, handler)
        if signum is not None:
            self._give(signum, previous.get(signum, signal.SIG_DFL))

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
            if self._cancel is not None:
                self._cancel()
        elif self._cancel is not None:  # a second signal while the run winds down: no more waiting
            self.received = None
            previous, self.previous = self.previous, {}
            for number, handler in previous.items():
                signal.signal(number, handler)
            self._give(signum, previous.get(signum, signal.SIG_DFL))

    @staticmethod
    def _give(signum: int, handler: Any) -> None:
        if callable(handler):
            handler(signum, None)
        elif handler == signal.SIG_DFL:
            signal.raise_signal(signum)  # what the signal would have done: end the process

    def attach(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task) -> None:
        """Cancel ``task`` on the next signal (at once if one came already)."""

        def cancel() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(task.cancel)

        self._cancel = cancel
        if self.received is not None:
            task.cancel()

    def hold(self) -> None:
        """From now on a signal is only remembered (given to its handler on exit)."""
        self._cancel = None


def _check_arguments(base_url: str, *, role: str, prompt_template: str | None, system_prompt: str | None,
                     completion: bool, limit: int) -> None:
    """Refuse, before anything is read or sent, a URL or argument combination that cannot work."""
    check_url(base_url)
    if role not in ("teacher", "student"):
        raise model_error("E210", name="role", expected="'teacher' or 'student'", got=role)
    if prompt_template is not None:
        _settings.check("prompt_template", prompt_template)
    if completion and system_prompt:
        raise model_error("E210", name="system", expected="unset with --completion (no chat turns)", got=system_prompt)
    if system_prompt is not None:
        _settings.check("system", system_prompt, label="system_prompt")
    _settings.check("limit", limit)


def _incomplete(stats: Stats, n_todo: int, options: EndpointOptions, output: Any) -> CollectionIncomplete:
    """E415: how many prompts failed (and why the first did), and how many were never tried."""
    first_id, reason = next(iter(stats.failed.items()))
    message = Errors.E415.format(n=len(stats.failed), total=n_todo, retries=options.max_retries, id=first_id,
                                 reason=reason, written=stats.written, path=output)
    not_tried = n_todo - len(stats.failed) - stats.written - stats.empty
    if not_tried:
        message += f"; {not_tried} were not tried: {stats.failed_in_a_row} prompts failed in a row, so the run stopped"
    return CollectionIncomplete(message, code="E415")


@dataclass(frozen=True)
class _Job:
    """What one run asks of the endpoint and how its rows are labelled (shared by its workers)."""

    model: str
    endpoint: str  # without credentials
    decoding: ApiDecoding
    options: EndpointOptions
    label: str
    role: str
    true_teacher: str | None
    task: str | None
    system_prompt: str | None
    prompt_template: str | None
    settings: dict[str, Any]
    secret: str | None = field(default=None, repr=False)  # the API key, only to scrub it from what is written
    log: Callable[[str], None] | None = field(default=None, repr=False)


def _run(base_url: str, job: _Job, todo: list[Any], output: Any, stats: Stats, *, n_total: int,
         progress: bool, signals: _Interruptions) -> None:
    from tqdm import tqdm

    bar = tqdm(total=n_total, initial=n_total - len(todo), disable=not progress, unit="prompt",
               desc=f"{job.role} {job.label}", dynamic_ncols=True)
    try:
        asyncio.run(_main(base_url, job, todo, output, stats, bar=bar, signals=signals))
    finally:
        bar.close()


async def _main(base_url: str, job: _Job, todo: list[Any], output: Any, stats: Stats, *, bar: Any,
                signals: _Interruptions) -> None:
    """``job.options.concurrency`` workers share one queue of prompts; SIGINT and SIGTERM cancel the run."""
    main_task = asyncio.current_task()
    if main_task is not None:
        signals.attach(asyncio.get_running_loop(), main_task)
    client = _client(base_url, job.options)
    queue: asyncio.Queue = asyncio.Queue()
    for record in todo:
        queue.put_nowait(record)
    with AppendWriter(output) as writer:
        collector = _Collector(job, client, stats, writer, bar)
        try:
            workers = [asyncio.create_task(collector.work(queue))
                       for _ in range(min(job.options.concurrency, len(todo)))]
            try:
                await asyncio.gather(*workers)
            finally:
                for worker in workers:
                    worker.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
        finally:
            signals.hold()
            with contextlib.suppress(Exception):
                await client.close()


class _Collector:
    """The workers of one run: each takes the next prompt, queries the endpoint (retrying what may be retried,
    within the rate limits) and appends the answer; every count goes to ``stats``."""

    def __init__(self, job: _Job, client: Any, stats: Stats, writer: Any, bar: Any) -> None:
        self.job, self.client, self.stats, self.writer, self.bar = job, client, stats, writer, bar
        self.limiter = RateLimiter(job.options.rpm, job.options.tpm)
        self.rng = random.Random()

    async def work(self, queue: asyncio.Queue) -> None:
        """Take prompts until none is left or too many failed in a row (a dead endpoint)."""
        while self.stats.failed_in_a_row < max(FAILED_IN_A_ROW_STOP, self.job.options.concurrency):
            try:
                record = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await self.one(record)

    async def one(self, record: Any) -> None:
        """Query one prompt until it is answered or given up; each attempt ends within ``timeout`` seconds."""
        job = self.job
        prompt = _framed(record.output, job.prompt_template)
        estimate = len(prompt) / 4 + job.decoding.max_tokens
        for attempt in range(job.options.max_retries + 1):
            entry = await self.limiter.acquire(estimate)
            self.stats.requests += 1
            try:
                answer = await asyncio.wait_for(
                    _request(self.client, job.model, prompt, job.decoding, job.options, job.system_prompt),
                    job.options.timeout)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - classified in _failed; nothing unexpected is swallowed
                if self._failed(record, err, last=attempt == job.options.max_retries):
                    return
                hinted = retry_after(err)
                delay = backoff_delay(attempt, job.options, hinted, self.rng)
                self._announce(record, delay, hinted)
                await asyncio.sleep(delay)
                continue
            self._answered(record, answer, entry, estimate)
            return

    def _announce(self, record: Any, delay: float, hinted: float | None) -> None:
        """Say on stderr (``job.log``) when a retry waits long: the server's Retry-After, or a long backoff."""
        if delay < WAIT_NOTICE_S or self.job.log is None:
            return
        if hinted is None:
            why = "backing off after repeated failures"
        elif hinted > RETRY_AFTER_MAX_S:
            why = f"the server asked for {hinted:.0f} s (Retry-After), capped at {RETRY_AFTER_MAX_S:g} s"
        else:
            why = "the server asked (Retry-After)"
        from tqdm import tqdm

        with tqdm.external_write_mode():
            self.job.log(f"waiting {delay:.1f} s before retrying prompt '{record.key}' ({why})")

    def _failed(self, record: Any, err: Exception, *, last: bool) -> bool:
        """Count a failed request: True when the prompt is given up, False to retry it; raises to stop the run
        (401/403/404, a redirect to another origin, an unexpected error, or a run whose first requests were all
        refused)."""
        job, stats = self.job, self.stats
        stop = err if isinstance(err, EndpointStopped) else err.__cause__
        if isinstance(stop, EndpointStopped):  # raised by the redirect hook (openai 1.x wraps it)
            stats.count(type(stop).__name__)
            raise stop from None
        kind, status = classify_error(err)
        stats.count(str(status) if status else type(err).__name__)
        if kind == "fatal":
            raise EndpointStopped(_fatal_message(status, err, job.endpoint, job.model, job.options, job.secret),
                                  code="E413") from None
        if kind == "fail" and not isinstance(err, _known_errors()):
            raise err
        if kind == "fail" or last:
            stats.failed[record.key] = redact(_reason(err, status, job.options.timeout), job.secret)
            stats.failed_in_a_row += 1
            if status in (400, 422) and not stats.succeeded and len(stats.failed) >= FIRST_REJECTIONS_STOP:
                raise EndpointStopped(redact(Errors.E413.format(
                    endpoint=job.endpoint, status=status, meaning="bad request", detail=_short(err),
                    hint=f"the first {len(stats.failed)} requests were all refused: check the decoding "
                    "options (some models refuse max_tokens, temperature, top_p, seed or stop) and "
                    "--completion"), job.secret), code="E413") from None
            self.bar.set_postfix(failed=len(stats.failed), retries=stats.retries, refresh=False)
            self.bar.update(1)
            return True
        stats.retries += 1
        self.bar.set_postfix(failed=len(stats.failed), retries=stats.retries, refresh=False)
        return False

    def _answered(self, record: Any, answer: tuple[str, str, int, int, str], entry: Any, estimate: float) -> None:
        """Count the answer, settle its token estimate, and append its row (an empty answer is only counted).

        The server's strings (text, finish reason, model name) are scrubbed of the API key first: a server
        echoing it back must not get it written."""
        text, finish, n_in, n_out, served = answer
        text, finish, served = (redact(v, self.job.secret, shaped=False) for v in (text, finish, served))
        stats = self.stats
        stats.count("200")
        stats.succeeded += 1
        stats.failed_in_a_row = 0
        stats.prompt_tokens += n_in
        stats.completion_tokens += n_out
        stats.served_models.add(served)
        RateLimiter.settle(entry, n_in + n_out if n_in + n_out else estimate)
        if text:
            self.writer.write(self._row(record, text, finish, n_out))
            stats.written += 1
        else:
            stats.empty += 1
        self.bar.update(1)

    def _row(self, record: Any, text: str, finish: str, n_new: int) -> dict[str, Any]:
        job = self.job
        row = {"id": record.key, "task": record.task or job.task, "prompt": record.output, "output": text,
               "finish": finish, "n_new_tokens": n_new, "endpoint": job.endpoint, **job.settings}
        if job.role == "teacher":
            row["teacher"] = job.label
        else:
            row["student"] = job.label
            row["teacher"] = job.true_teacher
        return {k: v for k, v in row.items() if v is not None}


def _known_errors() -> tuple[type[BaseException], ...]:
    import openai

    return (openai.OpenAIError, asyncio.TimeoutError, ConnectionError, AnswerRefused)


def _reason(err: BaseException, status: int | None, timeout: float) -> str:
    """Why a prompt failed, for the manifest and E415: the status or error type and its message."""
    if isinstance(err, AnswerRefused):
        return str(err)
    if isinstance(err, asyncio.TimeoutError):
        return f"no complete answer within --timeout {timeout:g} s"
    return f"{status or type(err).__name__}: {_short(err)}"


def _short(err: BaseException) -> str:
    text = " ".join(str(getattr(err, "message", None) or err).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _fatal_message(status: int | None, err: BaseException, endpoint: str, model: str, options: EndpointOptions,
                   secret: str | None) -> str:
    unset = "" if secret else f" (${options.api_key_env} is not set)"
    hint = {401: f"check the key in ${options.api_key_env}{unset}",
            403: f"check that the key in ${options.api_key_env} may use model '{model}'",
            404: f"check the model name '{model}' (list the served ones at {endpoint}/models) and the URL path "
                 "(most servers want it to end in /v1)"}.get(status or 0, "")
    return redact(Errors.E413.format(endpoint=endpoint, status=status, meaning=FATAL_STATUSES.get(status or 0, ""),
                                     detail=_short(err), hint=hint), secret)
