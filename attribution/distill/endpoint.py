"""Collect outputs from a model served behind an OpenAI-compatible API, resumably.

The same record format and resume rules as local collection (:mod:`.collect`): each finished
output is appended as one flushed JSON line, a rerun skips the ids already in the file, and a
cut-off last line is repaired. Requests go out concurrently (``concurrency``) through the official
``openai`` client, only to the ``base_url`` given; 429, 5xx, timeouts and dropped connections are
retried with exponential backoff and jitter (a ``Retry-After`` header wins); 401, 403 and 404 stop
the run at once. A manifest (``OUT.manifest.json`` beside ``OUT.jsonl``) records where the outputs
came from: endpoint (no credentials), model as served, decoding, prompt file digest, dates, tool
version, token usage and request counts. The API key is read from an environment variable and is
never written anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import AttributionError, Errors, missing_dependency, model_error
from . import settings as _settings
from ._jsonl import AppendWriter, load_finished, read_prompts
from .manifest import check_url, manifest_path, public_url, redact, utc_now, write_manifest
from .retry import FATAL_STATUSES, RateLimiter, backoff_delay, classify_error, retry_after

#: A run whose first requests are all refused as bad requests (400, 422) stops after this many: the
#: request itself is wrong (e.g. a decoding option the model does not take), not one prompt.
FIRST_REJECTIONS_STOP = 5
#: After this many prompts in a row failed every retry (a dead or overloaded endpoint), no new prompt
#: is started: the run ends as incomplete at once instead of spending the full backoff on every prompt.
FAILED_IN_A_ROW_STOP = 5


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
    return openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=options.timeout)


def _framed(prompt: str, template: str | None) -> str:
    return template.replace("{prompt}", prompt) if template else prompt


async def _request(client: Any, model: str, prompt: str, decoding: ApiDecoding, options: EndpointOptions,
                   system_prompt: str | None) -> tuple[str, str, int, int, str]:
    """One request: (text, finish reason, prompt tokens, completion tokens, served model)."""
    kwargs: dict[str, Any] = decoding.to_dict()
    if options.completion:
        response = await client.completions.create(model=model, prompt=prompt, **kwargs)
        choice = response.choices[0]
        text = choice.text or ""
    else:
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": prompt}]
        response = await client.chat.completions.create(model=model, messages=messages, **kwargs)
        choice = response.choices[0]
        text = choice.message.content or ""
    usage = getattr(response, "usage", None)
    return (text.strip(), str(choice.finish_reason or ""), int(getattr(usage, "prompt_tokens", 0) or 0),
            int(getattr(usage, "completion_tokens", 0) or 0), str(getattr(response, "model", "") or model))


def collect_from_endpoint(base_url: str, model: str, prompts: str | os.PathLike, output: str | os.PathLike, *,
                          label: str | None = None, role: str = "teacher", true_teacher: str | None = None,
                          task: str | None = None, decoding: ApiDecoding | None = None,
                          options: EndpointOptions | None = None, system_prompt: str | None = None,
                          prompt_template: str | None = None, limit: int = 0,
                          progress: bool = False) -> dict[str, Any]:
    """Query ``model`` at ``base_url`` for every prompt whose id is not yet in ``output``.

    Parameters
    ----------
    base_url : str
        The OpenAI-compatible API root, e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``.
    model : str
        The model name the endpoint serves.
    prompts, output : path
        As for :func:`attribution.distill.collect_outputs`; ``output`` is appended to, and its manifest
        (:func:`manifest_path`) rewritten after the run.
    label : str, optional
        The ``teacher`` (``role="teacher"``) or ``student`` (``role="student"``) label of each record;
        defaults to ``model``.
    true_teacher : str, optional
        For ``role="student"``: the teacher label to record when it is known (for ``evaluate``).
    decoding : ApiDecoding, optional
        Greedy, 80 tokens by default.
    options : EndpointOptions, optional
        Chat or completion API, key variable, concurrency, rate limits, retries.

    Returns
    -------
    dict
        ``output``, ``manifest``, ``endpoint``, ``model``, ``label``, ``n_prompts``, ``n_existing`` (skipped),
        ``n_written``, ``n_empty``, ``n_failed``, ``requests``, ``retries``, ``prompt_tokens``,
        ``completion_tokens``, ``seconds``, ``status``.

    Raises
    ------
    EndpointStopped
        On 401, 403 or 404 (the manifest then says ``failed``).
    CollectionIncomplete
        When prompts still failed after every retry (the finished ones are kept; rerun to retry).
    """
    # over 60 lines only by its numpydoc docstring; the body is 29 lines
    decoding = decoding or ApiDecoding()
    options = options or EndpointOptions()
    _check_arguments(base_url, role=role, prompt_template=prompt_template, system_prompt=system_prompt,
                     completion=options.completion, limit=limit)
    label = label or model
    records = read_prompts(prompts, limit=limit)
    existing = load_finished(output)
    settings = {"model": model, "api": "completion" if options.completion else "chat",
                "decoding": decoding.to_dict(), "system_prompt": system_prompt, "prompt_template": prompt_template}
    from .collect import _check_same_settings

    if role == "teacher":
        _check_same_settings(output, existing, settings, label)
    else:  # student rows carry the true teacher (or none) in 'teacher'
        _check_same_settings(output, existing, {**settings, "student": label}, true_teacher)
    done = {str(row["id"]) for row in existing}
    todo = [r for r in records if r.key not in done]
    if todo:
        _openai()  # a missing client is an install problem, not a failed run
    job = _Job(model=model, endpoint=public_url(base_url), decoding=decoding, options=options, label=label,
               role=role, true_teacher=true_teacher, task=task, system_prompt=system_prompt,
               prompt_template=prompt_template, settings=settings, secret=os.environ.get(options.api_key_env))
    stats = Stats()
    summary = {"output": str(output), "manifest": str(manifest_path(output)), "endpoint": job.endpoint,
               "model": model, "label": label, "n_prompts": len(records), "n_existing": len(existing)}
    summary = _recorded_run(base_url, job, todo, output, stats, prompts=prompts, summary=summary, progress=progress)
    if stats.failed:
        raise _incomplete(stats, len(todo), options, output)
    return summary


def _recorded_run(base_url: str, job: _Job, todo: list[Any], output: str | os.PathLike, stats: Stats, *,
                  prompts: str | os.PathLike, summary: dict[str, Any], progress: bool) -> dict[str, Any]:
    """Run the workers on ``todo``; whatever happens, write the manifest (status ``complete``, ``incomplete``,
    ``failed`` or ``interrupted``) and return the summary completed with the run's counts."""
    start_date, start = utc_now(), time.perf_counter()
    status, error = "complete", None
    try:
        if todo:
            _run(base_url, job, todo, output, stats, n_total=summary["n_prompts"], progress=progress)
        if stats.failed:
            status = "incomplete"
    except EndpointStopped as err:
        status, error = "failed", str(err)
        raise
    except (KeyboardInterrupt, asyncio.CancelledError):
        status, error = "interrupted", "interrupted"
        raise KeyboardInterrupt from None
    except Exception as err:
        status, error = "failed", f"{type(err).__name__}: {_short(err)}"
        raise
    finally:
        summary = {**summary, "n_written": stats.written, "n_empty": stats.empty, "n_failed": len(stats.failed),
                   "requests": stats.requests, "retries": stats.retries, "prompt_tokens": stats.prompt_tokens,
                   "completion_tokens": stats.completion_tokens,
                   "seconds": round(time.perf_counter() - start, 3), "status": status}
        write_manifest(output, prompts, base_url, job.settings, stats, summary, role=job.role, label=job.label,
                       started=start_date, error=redact(error, job.secret) if error else None, options=job.options)
    return summary


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
    secret: str | None = field(default=None, repr=False)  # the API key, only to redact it from messages


def _run(base_url: str, job: _Job, todo: list[Any], output: Any, stats: Stats, *, n_total: int,
         progress: bool) -> None:
    from tqdm import tqdm

    bar = tqdm(total=n_total, initial=n_total - len(todo), disable=not progress, unit="prompt",
               desc=f"{job.role} {job.label}", dynamic_ncols=True)
    try:
        asyncio.run(_main(base_url, job, todo, output, stats, bar=bar))
    finally:
        bar.close()


async def _main(base_url: str, job: _Job, todo: list[Any], output: Any, stats: Stats, *, bar: Any) -> None:
    """``job.options.concurrency`` workers share one queue of prompts; SIGTERM cancels the run like Ctrl-C."""
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
        if main_task is not None:
            loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
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
            with contextlib.suppress(Exception):
                await client.close()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGTERM)


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
        """Query one prompt until it is answered or given up."""
        job = self.job
        prompt = _framed(record.output, job.prompt_template)
        estimate = len(prompt) / 4 + job.decoding.max_tokens
        for attempt in range(job.options.max_retries + 1):
            entry = await self.limiter.acquire(estimate)
            self.stats.requests += 1
            try:
                answer = await _request(self.client, job.model, prompt, job.decoding, job.options, job.system_prompt)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - classified in _failed; nothing unexpected is swallowed
                if self._failed(record, err, last=attempt == job.options.max_retries):
                    return
                await asyncio.sleep(backoff_delay(attempt, job.options, retry_after(err), self.rng))
                continue
            self._answered(record, answer, entry, estimate)
            return

    def _failed(self, record: Any, err: Exception, *, last: bool) -> bool:
        """Count a failed request: True when the prompt is given up, False to retry it; raises to stop the run
        (401/403/404, an unexpected error, or a run whose first requests were all refused)."""
        job, stats = self.job, self.stats
        kind, status = classify_error(err)
        stats.count(str(status) if status else type(err).__name__)
        if kind == "fatal":
            raise EndpointStopped(_fatal_message(status, err, job.endpoint, job.model, job.options, job.secret),
                                  code="E413") from None
        if kind == "fail" and not isinstance(err, _known_errors()):
            raise err
        if kind == "fail" or last:
            stats.failed[record.key] = redact(f"{status or type(err).__name__}: {_short(err)}", job.secret)
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
        """Count the answer, settle its token estimate, and append its row (an empty answer is only counted)."""
        text, finish, n_in, n_out, served = answer
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

    return (openai.OpenAIError, asyncio.TimeoutError, ConnectionError)


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


