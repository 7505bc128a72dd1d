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
from ._jsonl import AppendWriter, load_finished, read_prompts
from .manifest import (
    check_url,
    manifest_path,
    public_url,
    redact,
    utc_now,
    write_manifest,
)
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
    decoding = decoding or ApiDecoding()
    options = options or EndpointOptions()
    check_url(base_url)
    if role not in ("teacher", "student"):
        raise model_error("E210", name="role", expected="'teacher' or 'student'", got=role)
    if prompt_template is not None and "{prompt}" not in prompt_template:
        raise model_error("E210", name="prompt_template", expected="a string containing {prompt}", got=prompt_template)
    if options.completion and system_prompt:
        raise model_error("E210", name="system", expected="unset with --completion (no chat turns)", got=system_prompt)
    if options.concurrency < 1:
        raise model_error("E210", name="concurrency", expected="at least 1", got=options.concurrency)
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
    start_date, start = utc_now(), time.perf_counter()
    stats = Stats()
    secret = os.environ.get(options.api_key_env)
    status, error = "complete", None
    try:
        if todo:
            _run(base_url, model, todo, output, stats, decoding=decoding, options=options, label=label, role=role,
                 true_teacher=true_teacher, task=task, system_prompt=system_prompt, prompt_template=prompt_template,
                 settings=settings, n_total=len(records), progress=progress, secret=secret)
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
        summary = {"output": str(output), "manifest": str(manifest_path(output)), "endpoint": public_url(base_url),
                   "model": model, "label": label, "n_prompts": len(records), "n_existing": len(existing),
                   "n_written": stats.written, "n_empty": stats.empty, "n_failed": len(stats.failed),
                   "requests": stats.requests, "retries": stats.retries, "prompt_tokens": stats.prompt_tokens,
                   "completion_tokens": stats.completion_tokens,
                   "seconds": round(time.perf_counter() - start, 3), "status": status}
        write_manifest(output, prompts, base_url, settings, stats, summary, role=role, label=label,
                        started=start_date, error=redact(error, secret) if error else None, options=options)
    if stats.failed:
        first_id, reason = next(iter(stats.failed.items()))
        message = Errors.E415.format(n=len(stats.failed), total=len(todo), retries=options.max_retries, id=first_id,
                                     reason=reason, written=stats.written, path=output)
        not_tried = len(todo) - len(stats.failed) - stats.written - stats.empty
        if not_tried:
            message += f"; {not_tried} were not tried: {stats.failed_in_a_row} prompts failed in a row, so the run stopped"
        raise CollectionIncomplete(message, code="E415")
    return summary


def _run(base_url: str, model: str, todo: list[Any], output: Any, stats: Stats, *, n_total: int,
         progress: bool, **kwargs: Any) -> None:
    from tqdm import tqdm

    bar = tqdm(total=n_total, initial=n_total - len(todo), disable=not progress, unit="prompt",
               desc=f"{kwargs['role']} {kwargs['label']}", dynamic_ncols=True)
    try:
        asyncio.run(_main(base_url, model, todo, output, stats, bar=bar, **kwargs))
    finally:
        bar.close()


async def _main(base_url: str, model: str, todo: list[Any], output: Any, stats: Stats, *, bar: Any,
                decoding: ApiDecoding, options: EndpointOptions, label: str, role: str, true_teacher: str | None,
                task: str | None, system_prompt: str | None, prompt_template: str | None,
                settings: dict[str, Any], secret: str | None) -> None:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
        if main_task is not None:
            loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    client = _client(base_url, options)
    limiter = RateLimiter(options.rpm, options.tpm)
    queue: asyncio.Queue = asyncio.Queue()
    for record in todo:
        queue.put_nowait(record)
    endpoint = public_url(base_url)
    rng = random.Random()

    def row_for(record: Any, text: str, finish: str, n_new: int) -> dict[str, Any]:
        row = {"id": record.key, "task": record.task or task, "prompt": record.output, "output": text,
               "finish": finish, "n_new_tokens": n_new, "endpoint": endpoint, **settings}
        if role == "teacher":
            row["teacher"] = label
        else:
            row["student"] = label
            row["teacher"] = true_teacher
        return {k: v for k, v in row.items() if v is not None}

    async def one(record: Any) -> None:
        prompt = _framed(record.output, prompt_template)
        estimate = len(prompt) / 4 + decoding.max_tokens
        for attempt in range(options.max_retries + 1):
            entry = await limiter.acquire(estimate)
            stats.requests += 1
            try:
                text, finish, n_in, n_out, served = await _request(client, model, prompt, decoding, options,
                                                                   system_prompt)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # noqa: BLE001 - classified below; nothing unexpected is swallowed
                kind, status = classify_error(err)
                stats.count(str(status) if status else type(err).__name__)
                if kind == "fatal":
                    raise EndpointStopped(_fatal_message(status, err, endpoint, model, options, secret),
                                          code="E413") from None
                if kind == "fail" and not isinstance(err, _known_errors()):
                    raise
                if kind == "fail" or attempt == options.max_retries:
                    stats.failed[record.key] = redact(f"{status or type(err).__name__}: {_short(err)}", secret)
                    stats.failed_in_a_row += 1
                    if status in (400, 422) and not stats.succeeded and len(stats.failed) >= FIRST_REJECTIONS_STOP:
                        raise EndpointStopped(redact(Errors.E413.format(
                            endpoint=endpoint, status=status, meaning="bad request", detail=_short(err),
                            hint=f"the first {len(stats.failed)} requests were all refused: check the decoding "
                            "options (some models refuse max_tokens, temperature, top_p, seed or stop) and "
                            "--completion"), secret), code="E413") from None
                    bar.set_postfix(failed=len(stats.failed), retries=stats.retries, refresh=False)
                    bar.update(1)
                    return
                stats.retries += 1
                bar.set_postfix(failed=len(stats.failed), retries=stats.retries, refresh=False)
                await asyncio.sleep(backoff_delay(attempt, options, retry_after(err), rng))
                continue
            stats.count("200")
            stats.succeeded += 1
            stats.failed_in_a_row = 0
            stats.prompt_tokens += n_in
            stats.completion_tokens += n_out
            stats.served_models.add(served)
            RateLimiter.settle(entry, n_in + n_out if n_in + n_out else estimate)
            if text:
                writer.write(row_for(record, text, finish, n_out))
                stats.written += 1
            else:
                stats.empty += 1
            bar.update(1)
            return

    async def worker() -> None:
        while stats.failed_in_a_row < max(FAILED_IN_A_ROW_STOP, options.concurrency):
            try:
                record = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await one(record)

    with AppendWriter(output) as writer:
        try:
            workers = [asyncio.create_task(worker()) for _ in range(min(options.concurrency, len(todo)))]
            try:
                await asyncio.gather(*workers)
            finally:
                for job in workers:
                    job.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
        finally:
            with contextlib.suppress(Exception):
                await client.close()
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGTERM)


def _known_errors() -> tuple[type[BaseException], ...]:
    import openai

    return (openai.OpenAIError, asyncio.TimeoutError, ConnectionError)


def _short(err: BaseException) -> str:
    text = " ".join(str(getattr(err, "message", None) or err).split())
    return text[:200] + ("..." if len(text) > 200 else "")


def _fatal_message(status: int | None, err: BaseException, endpoint: str, model: str, options: EndpointOptions,
                   secret: str | None) -> str:
    hint = {401: f"check the key in ${options.api_key_env}" + ("" if secret else f" (${options.api_key_env} is not set)"),
            403: f"check that the key in ${options.api_key_env} may use model '{model}'",
            404: f"check the model name '{model}' (list the served ones at {endpoint}/models) and the URL path "
                 "(most servers want it to end in /v1)"}.get(status or 0, "")
    return redact(Errors.E413.format(endpoint=endpoint, status=status, meaning=FATAL_STATUSES.get(status or 0, ""),
                                     detail=_short(err), hint=hint), secret)


