"""Options and the shared body of ``collect --endpoint`` and ``generate --endpoint``.

The commands themselves live in :mod:`.distill`; with ``--endpoint`` they hand over here, and
:mod:`attribution.distill.endpoint` does the work (the ``openai`` client is imported only then).
"""

from __future__ import annotations

from typing import Any

import typer

from ..distill.settings import option_callback
from ._app import emit, log

ENDPOINT_OPTION = typer.Option(
    None, "--endpoint", help="Query a model served behind an OpenAI-compatible API at this URL (e.g. "
    "https://api.openai.com/v1, http://127.0.0.1:8000/v1) instead of loading it; --model is then the served name.")
COMPLETION_OPTION = typer.Option(False, "--completion", help="With --endpoint: the plain completions API (base "
                                 "models) instead of chat completions.")
STOP_OPTION = typer.Option(None, "--stop", callback=option_callback("stop"),
                           help="With --endpoint: a stop string (repeatable, up to 4).")
API_KEY_ENV_OPTION = typer.Option("OPENAI_API_KEY", "--api-key-env", callback=option_callback("api_key_env"),
                                  help="With --endpoint: the environment variable holding the API key (its name, "
                                  "not the key: the key is never written anywhere).")
CONCURRENCY_OPTION = typer.Option(4, "--concurrency", callback=option_callback("concurrency"),
                                  help="With --endpoint: requests in flight at once (1 to 1024).")
RPM_OPTION = typer.Option(0.0, "--rpm", callback=option_callback("rpm"),
                          help="With --endpoint: at most this many requests per minute (0: no limit).")
TPM_OPTION = typer.Option(0.0, "--tpm", callback=option_callback("tpm"),
                          help="With --endpoint: at most this many tokens per minute (0: no limit).")
MAX_RETRIES_OPTION = typer.Option(6, "--max-retries", callback=option_callback("max_retries"),
                                  help="With --endpoint: retries per prompt (0 to 100) on 429, 5xx, timeouts and "
                                  "dropped connections (exponential backoff with jitter, Retry-After honoured up "
                                  "to 60 s).")
TIMEOUT_OPTION = typer.Option(120.0, "--timeout", callback=option_callback("timeout"),
                              help="With --endpoint: seconds one request may take in all, answer included.")


def endpoint_settings(params: dict[str, Any]) -> tuple[Any, Any]:
    """(ApiDecoding, EndpointOptions) from the command's options, each checked against
    :data:`attribution.distill.settings.SETTINGS` (as an audit config's are)."""
    from ..distill.endpoint import ApiDecoding, EndpointOptions
    from ..errors import model_error

    if params["repetition_penalty"] != 1.0:
        raise model_error("E210", name="repetition-penalty", expected="1.0 with --endpoint (the OpenAI API has "
                          "no such setting)", got=params["repetition_penalty"])
    decoding = ApiDecoding(max_tokens=params["max_new_tokens"], sample=params["sample"],
                           temperature=params["temperature"], top_p=params["top_p"], seed=params["seed"],
                           stop=tuple(params["stop"] or ()))
    options = EndpointOptions(completion=params["completion"], **{key: params[key] for key in (
        "api_key_env", "concurrency", "rpm", "tpm", "max_retries", "timeout")})
    return decoding, options


def _table(result: dict[str, Any]) -> str:
    from ..sanitize import one_line

    return "\n".join(f"{key:>17}  {one_line(value)}" for key, value in sorted(result.items())
                     if not isinstance(value, (dict, list)))


def run_endpoint(params: dict[str, Any], **labels: Any) -> None:
    """Collect over ``params["endpoint"]`` with the command's options (``params``: its locals).

    Prints the final counts on stderr and the summary on stdout; ``labels`` are ``role``, ``label``
    and, for students, ``true_teacher``.
    """
    from ..distill.endpoint import collect_from_endpoint
    from ..errors import model_error

    if not params["model"]:
        raise model_error("E210", name="model", expected="the served model name with --endpoint (e.g. gpt-4o-mini)",
                          got=params["model"])
    decoding, options = endpoint_settings(params)
    quiet = params["quiet"]
    result = collect_from_endpoint(params["endpoint"], params["model"], params["prompts"], params["output"],
                                   task=params["task"], decoding=decoding, options=options,
                                   system_prompt=params["system_prompt"], prompt_template=params["prompt_template"],
                                   limit=params["limit"], progress=not quiet,
                                   log=lambda message: log(message, quiet=quiet), **labels)
    log(f"{result['n_written']} written, {result['n_existing']} skipped (already there), {result['n_failed']} failed, "
        f"{result['n_empty']} empty; {result['requests']} requests, {result['retries']} retries "
        f"({result['seconds']:.1f}s); manifest {result['manifest']}", quiet=quiet)
    emit(result, params["fmt"], _table)
