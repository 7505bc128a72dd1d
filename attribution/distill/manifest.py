"""Where collected outputs came from: endpoint URLs without secrets, and the manifest beside each file.

``OUT.manifest.json`` (beside ``OUT.jsonl``) records the endpoint (no credentials), the model as
served, decoding, the prompt file's digest, dates, tool version, token usage and request counts,
appended run by run. :func:`manifest_source` turns it into the one line shown in results and reports.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import model_error
from ._jsonl import load_finished

if TYPE_CHECKING:
    from .endpoint import EndpointOptions, Stats


def public_url(url: str) -> str:
    """``url`` without user info, query or fragment: what may be written to files and messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    netloc = host + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def check_url(url: str) -> str:
    """Validate an endpoint URL (``http(s)://host[:port][/path]``); return it unchanged."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as err:
        raise model_error("E414", url=public_url(url), detail=str(err)) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise model_error("E414", url=public_url(url) if "://" in url else url,
                          detail="expected http(s)://host[:port][/path], e.g. http://127.0.0.1:8000/v1")
    return url


def manifest_path(output: str | os.PathLike) -> Path:
    """``out.jsonl`` -> ``out.manifest.json``."""
    out = Path(output)
    return out.with_name(out.stem + ".manifest.json") if out.suffix else out.with_name(out.name + ".manifest.json")


def has_manifest(output: str | os.PathLike) -> bool:
    """Whether ``output`` gets a manifest beside it: a regular file (or one still to be made) does; a device,
    FIFO or open descriptor (``-o /dev/null``, ``/dev/stdout``) does not, since its folder is not the user's
    (``/dev/null.manifest.json`` would be a new file in ``/dev``) and its outputs are not kept anyway."""
    from ..outputs import output_kind

    return output_kind(output) == "file"


def read_manifest(output: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest beside an output file, or None when there is none (or it is unreadable)."""
    if not has_manifest(output):
        return None
    path = manifest_path(output)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def manifest_source(output: str | os.PathLike) -> dict[str, str]:
    """``{"source": "MODEL at ENDPOINT (api, decoding)"}`` from the manifest beside ``output``, else ``{}``.

    Shown next to the file's name and digest in results and reports, so a reader sees where a
    reference came from. Dates and counts are left out: the same file gives the same text.
    """
    manifest = read_manifest(output)
    if not manifest or not manifest.get("model"):
        return {}
    decoding = ", ".join(f"{k} {v}" for k, v in sorted((manifest.get("decoding") or {}).items()))
    return {"source": f"{manifest['model']} at {manifest.get('endpoint')} ({manifest.get('api')}; {decoding})"}


def redact(text: str, secret: str | None, *, shaped: bool = True) -> str:
    """Remove the API key (and, unless ``shaped`` is false, anything shaped like a provider key) from a message."""
    if secret:
        text = text.replace(secret, "***")
    return re.sub(r"\b(sk|key|api)[-_][A-Za-z0-9_\-*.]{6,}", r"\1-***", text) if shaped else text


def scrub(value: Any, secret: str | None) -> Any:
    """``value`` (strings in nested dicts and lists) with every occurrence of ``secret`` replaced by ``***``."""
    if not secret:
        return value
    if isinstance(value, str):
        return value.replace(secret, "***")
    if isinstance(value, dict):
        return {scrub(k, secret): scrub(v, secret) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, secret) for v in value]
    return value


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def write_manifest(output: Any, prompts: Any, base_url: str, settings: dict[str, Any], stats: Stats,
                    summary: dict[str, Any], *, role: str, label: str, started: str, error: str | None,
                    options: EndpointOptions, secret: str | None = None) -> None:
    """Rewrite ``OUT.manifest.json``: this run appended to the earlier runs, totals over all of them.

    Every string in it is scrubbed of ``secret`` (the API key), whatever put it there (a server echoing
    the key as its model name, an error message). Nothing is written for a device output (:func:`has_manifest`)."""
    if not has_manifest(output):
        return
    from .. import __version__
    from ..io import atomic_write, file_digest

    previous = read_manifest(output) or {}
    runs = [r for r in previous.get("runs", []) if isinstance(r, dict)]
    opts = asdict(options)
    opts.pop("api_key_env")
    runs.append({"started": started, "finished": utc_now(), "status": summary["status"], "error": error,
                 "endpoint": public_url(base_url), "served_models": sorted(stats.served_models),
                 "written": stats.written, "empty": stats.empty, "failed": len(stats.failed),
                 "skipped": summary["n_existing"], "requests": stats.requests, "retries": stats.retries,
                 "http_statuses": dict(sorted(stats.statuses.items())),
                 "usage": {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens},
                 "client": opts})
    served = sorted({m for r in runs for m in r.get("served_models", [])})
    rows = len(load_finished(output)) if Path(output).exists() else 0
    manifest = {
        "tool": "teacher-attribution", "version": __version__, "role": role, "label": label,
        "endpoint": public_url(base_url), "model": settings["model"], "served_models": served,
        "api": settings["api"], "decoding": settings["decoding"], "system_prompt": settings["system_prompt"],
        "prompt_template": settings["prompt_template"], "prompts": {**file_digest(prompts),
                                                                    "n_prompts": summary["n_prompts"]},
        "output": {"name": Path(output).name, "n_records": rows},
        "status": summary["status"] if summary["status"] != "complete" or rows + stats.empty >= summary["n_prompts"]
        else "incomplete",
        "created": previous.get("created", started), "updated": utc_now(),
        "usage": {k: sum(r.get("usage", {}).get(k, 0) for r in runs) for k in ("prompt_tokens", "completion_tokens")},
        "requests": sum(r.get("requests", 0) for r in runs), "retries": sum(r.get("retries", 0) for r in runs),
        "runs": runs,
    }
    with atomic_write(manifest_path(output)) as handle:
        handle.write(json.dumps(scrub(manifest, secret), indent=2, sort_keys=True, ensure_ascii=False) + "\n")
