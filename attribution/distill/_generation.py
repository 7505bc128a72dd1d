"""Batched generation shared by ``collect`` (teachers) and ``generate`` (students)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..causal_lm import LoadedModel


@dataclass(frozen=True)
class Decoding:
    """Decoding settings, recorded with every output. Greedy unless ``do_sample``."""

    max_new_tokens: int = 80
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.do_sample:
            data.pop("temperature")
            data.pop("top_p")
        return data


def fixed_batches(todo: list[tuple[int, Any]], batch_size: int) -> list[list[tuple[int, Any]]]:
    """Group ``(position, record)`` pairs into batches by ``position // batch_size``.

    Batch boundaries depend only on each prompt's position in the prompt file, so a resumed run
    forms the same batches (and, with sampling, uses the same seeds) as an uninterrupted one.
    """
    groups: dict[int, list[tuple[int, Any]]] = {}
    for item in todo:
        groups.setdefault(item[0] // batch_size, []).append(item)
    return [groups[k] for k in sorted(groups)]


def render_prompt(loaded: LoadedModel, text: str, *, system_prompt: str | None = None,
                  template: str | None = None) -> tuple[str, bool]:
    """The text fed to the model and whether the tokenizer should add special tokens itself.

    ``template`` (a string with ``{prompt}``) is applied first; with a chat template the result
    then becomes one user turn (after an optional system turn).
    """
    body = template.replace("{prompt}", text) if template else text
    if loaded.chat_template:
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": body}]
        rendered = loaded.tokenizer.apply_chat_template(messages, chat_template=loaded.chat_template,
                                                        tokenize=False, add_generation_prompt=True)
        return rendered, False
    return body, True


def generate_texts(loaded: LoadedModel, rendered: list[str], decoding: Decoding, *, add_special_tokens: bool,
                   seed: int, max_prompt_tokens: int = 0) -> list[tuple[str, str, int]]:
    """Generate one continuation per rendered prompt: ``(text, finish, n_new_tokens)``.

    Prompts are left-padded into one batch; with sampling, the generator is seeded with ``seed`` first;
    ``max_prompt_tokens`` (0: no limit) keeps the end of over-long prompts. ``finish`` is ``"stop"`` (a stop
    token) or ``"length"``.
    """
    import torch

    tok = loaded.tokenizer
    tok.padding_side = "left"
    if max_prompt_tokens:
        tok.truncation_side = "left"
    enc = tok(rendered, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens,
              truncation=bool(max_prompt_tokens), max_length=max_prompt_tokens or None)
    enc = {k: v.to(loaded.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    kwargs: dict[str, Any] = {"max_new_tokens": decoding.max_new_tokens, "do_sample": decoding.do_sample,
                              "pad_token_id": tok.pad_token_id, "eos_token_id": loaded.stop_token_ids or None}
    if decoding.do_sample:
        kwargs.update(temperature=decoding.temperature, top_p=decoding.top_p, top_k=0)
        torch.manual_seed(seed)
        if torch.cuda.is_available():
            torch.cuda.manual_seed_all(seed)
    else:  # greedy: unset sampling defaults from generation_config, so no warning is printed
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if decoding.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = decoding.repetition_penalty
    with torch.inference_mode():
        out = loaded.model.generate(**enc, **kwargs)
    new = out[:, enc["input_ids"].shape[1]:].tolist()
    stops = set(loaded.stop_token_ids)
    results = []
    for ids in new:
        finish = "length"
        kept = []
        for token in ids:
            if token in stops:
                finish = "stop"
                break
            kept.append(token)
        while kept and kept[-1] == tok.pad_token_id and tok.pad_token_id not in stops:
            kept.pop()
        text = tok.decode(kept, skip_special_tokens=True).strip()
        results.append((text, finish, len(kept)))
    return results


def generate_to_file(loaded: LoadedModel, todo: list[tuple[int, Any]], output: Any, *, batch_size: int,
                     decoding: Decoding, render: Callable[[str], tuple[str, bool]],
                     make_row: Callable[[Any, str, str, int, int], dict[str, Any]],
                     max_prompt_tokens: int = 0, add_special_tokens: bool | None = None,
                     progress: Any = None) -> tuple[int, int]:
    """Generate for ``(position, record)`` pairs in fixed batches and append each row as it is done.

    ``render`` maps a prompt to (model input, tokenizer adds special tokens); ``add_special_tokens``
    overrides the latter. ``make_row(record, text, finish, n_new, seed)`` builds the written row.
    Batch k uses seed ``decoding.seed + k * batch_size``, so a resumed run reproduces the same
    outputs. Empty outputs are not written. Returns (written, empty).
    """
    from ._jsonl import AppendWriter

    written = empty = 0
    with AppendWriter(output) as writer:
        for batch in fixed_batches(todo, batch_size):
            framed = [render(record.output) for _, record in batch]
            add_special = framed[0][1] if add_special_tokens is None else add_special_tokens
            seed = decoding.seed + batch[0][0] - batch[0][0] % batch_size  # the block start
            results = generate_texts(loaded, [text for text, _ in framed], decoding,
                                     add_special_tokens=add_special, seed=seed,
                                     max_prompt_tokens=max_prompt_tokens)
            for (_, record), (text, finish, n_new) in zip(batch, results):
                if not text:
                    empty += 1
                    continue
                row = make_row(record, text, finish, n_new, seed)
                writer.write({k: v for k, v in row.items() if v is not None})
                written += 1
            if progress is not None:
                progress.update(len(batch))
    return written, empty
