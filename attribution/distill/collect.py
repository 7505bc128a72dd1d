"""Collect a teacher's outputs on a prompt file, resumably.

Each finished output is appended to the output file as one JSON line and flushed, so an
interrupted run keeps every finished record; running the same command again skips the ids
already present and generates only the rest. Model, chat template and decoding settings
(seed included) are recorded in every record, and a resumed run must use the same ones.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..causal_lm import LoadedModel, load_causal_lm, resolve_model
from ..errors import input_error, model_error
from ..runtime import with_torch_threads
from ._generation import Decoding, generate_to_file, render_prompt
from ._jsonl import exclusive_output, load_finished, read_prompts


@with_torch_threads
def collect_outputs(model: str, prompts: str | os.PathLike, output: str | os.PathLike, *,
                    teacher: str | None = None, task: str | None = None, decoding: Decoding | None = None,
                    batch_size: int = 8, device: str = "auto", threads: int = 0, chat_template: str = "auto",
                    system_prompt: str | None = None, prompt_template: str | None = None,
                    max_prompt_tokens: int = 0, limit: int = 0,
                    progress: bool = False, loaded: Any = None) -> dict[str, Any]:
    """Generate ``model``'s outputs for every prompt not yet in ``output``.

    Parameters
    ----------
    model : str
        Offline alias (``smollm2-135m``, ``gemma-3-270m``), ``.gguf`` path, model directory or hub id.
    prompts : path
        JSONL/CSV with a ``prompt`` field and, ideally, a unique ``id`` (else ``line:N``) and ``task``.
    output : path
        JSONL written append-only; existing records are kept and their ids skipped.
    teacher : str, optional
        Label stored in each record's ``teacher`` field; defaults to the model's short name.
    task : str, optional
        Task label for prompts that carry none.
    decoding : Decoding, optional
        Greedy with 80 new tokens by default. Sampling is seeded per batch with ``seed + position``.
    batch_size : int, default=8
    device : {"auto", "cpu", "cuda"}, default="auto"
    threads : int, default=0
        Torch CPU threads during this call (restored after); 0 leaves torch's setting.
    chat_template : str, default="auto"
        See :func:`attribution.causal_lm.load_causal_lm`.
    system_prompt : str, optional
        A system turn placed before each prompt (chat models only).
    prompt_template : str, optional
        Wraps each prompt before any chat template, e.g. ``"{prompt}\\n\\nAnswer:"`` for a base model
        used with ``chat_template="none"``.
    max_prompt_tokens : int, default=0
        Keep only the last tokens of longer prompts (0: no limit).
    limit : int, default=0
        Use only the first ``limit`` prompts (0: all).
    progress : bool, default=False
        Show a progress bar on stderr.

    Returns
    -------
    dict
        ``output``, ``model``, ``teacher``, ``n_prompts``, ``n_existing``, ``n_written``, ``n_empty``
        (outputs that were empty and not written), ``seconds``, ``decoding``.
    """
    # over 60 lines only by its numpydoc docstring; the body is 25 lines
    decoding = decoding or Decoding()
    if prompt_template is not None and "{prompt}" not in prompt_template:
        raise model_error("E210", name="prompt_template", expected="a string containing {prompt}", got=prompt_template)
    records = read_prompts(prompts, limit=limit)
    with exclusive_output(output):  # one writer at a time (E422): a second run would write each record again
        existing = load_finished(output)
        todo_ids = {r.key for r in records} - {str(row["id"]) for row in existing}
        todo = [(i, r) for i, r in enumerate(records) if r.key in todo_ids]
        start = time.perf_counter()
        written = empty = 0
        label = teacher
        if todo:
            loaded = loaded or load_teacher(model, device=device, chat_template=chat_template)
            label = teacher or loaded.spec.name
            settings = {"model": loaded.spec.spec, "chat_template": _template_name(loaded),
                        "decoding": decoding.to_dict(), "system_prompt": system_prompt,
                        "prompt_template": prompt_template,
                        "max_prompt_tokens": max_prompt_tokens}
            check_same_settings(output, existing, settings, label)
            written, empty = _generate(loaded, todo, output, settings, label=label, task=task, decoding=decoding,
                                       batch_size=batch_size, n_prompts=len(records), progress=progress)
        elif existing:
            label = teacher or str(existing[0].get("teacher", ""))
    return {"output": str(output), "model": model, "teacher": label, "n_prompts": len(records),
            "n_existing": len(existing), "n_written": written, "n_empty": empty,
            "seconds": round(time.perf_counter() - start, 3), "decoding": decoding.to_dict()}


def load_teacher(model: str, *, device: str = "auto", chat_template: str = "auto") -> LoadedModel:
    """A teacher for collection; GGUF weights stay float32 (as transformers dequantizes them) on every device,
    other weights get :func:`~attribution.causal_lm.load_causal_lm`'s default dtype."""
    spec = resolve_model(model)
    return load_causal_lm(spec, device=device, chat_template=chat_template,
                          dtype="float32" if spec.gguf_file else None)


def _generate(loaded: LoadedModel, todo: list[tuple[int, Any]], output: str | os.PathLike,
              settings: dict[str, Any], *, label: str | None, task: str | None, decoding: Decoding,
              batch_size: int, n_prompts: int, progress: bool) -> tuple[int, int]:
    """Append the teacher's outputs for ``todo``, each row stamped with ``settings``; returns (written, empty)."""
    from tqdm import tqdm

    bar = tqdm(total=n_prompts, initial=n_prompts - len(todo), disable=not progress,
               desc=f"collect {label}", unit="prompt", dynamic_ncols=True)
    written, empty = generate_to_file(
        loaded, todo, output, batch_size=batch_size, decoding=decoding,
        render=lambda text: render_prompt(loaded, text, system_prompt=settings["system_prompt"],
                                          template=settings["prompt_template"]),
        make_row=lambda record, text, finish, n_new, seed: {
            "id": record.key, "task": record.task or task, "prompt": record.output, "output": text,
            "teacher": label, "finish": finish, "n_new_tokens": n_new, "seed": seed, **settings},
        max_prompt_tokens=settings["max_prompt_tokens"], progress=bar)
    bar.close()
    return written, empty


def _template_name(loaded: Any) -> str | None:
    if not loaded.chat_template:
        return None
    own = getattr(loaded.tokenizer, "chat_template", None)
    return "tokenizer" if own and own == loaded.chat_template else f"fallback:{loaded.family}"


def check_same_settings(output: Any, existing: list[dict[str, Any]], settings: dict[str, Any],
                         label: str | None) -> None:
    """A resumed run must use the model, template and decoding of the records already written."""
    for number, row in enumerate(existing, start=1):
        for key, value in (*settings.items(), ("teacher", label)):
            if row.get(key) != value:
                raise input_error("E406", source=str(output), line=number, path=str(output),
                                  detail=f"{key}: {row.get(key)!r} there, {value!r} now")
