"""Sample a distilled student on held-out prompts, writing the toolkit's JSONL format, resumably.

Each record carries ``student`` (the student's name), ``teacher`` (the label of the teacher it was
distilled from, i.e. the ground truth for attribution), ``id``, ``task``, ``prompt`` and ``output``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..causal_lm import load_causal_lm
from ..errors import input_error, model_error
from ..runtime import with_torch_threads
from ._generation import Decoding, generate_to_file, render_prompt
from ._jsonl import exclusive_output, load_finished, read_prompts
from .train import INFO_FILE


def read_student_info(student_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``distill.json`` of a student directory written by :func:`train_student`."""
    path = Path(student_dir) / INFO_FILE
    if not path.is_file():
        raise model_error("E409", path=str(student_dir), missing=INFO_FILE)
    return json.loads(path.read_text(encoding="utf-8"))


@with_torch_threads
def generate_outputs(student_dir: str | os.PathLike, prompts: str | os.PathLike, output: str | os.PathLike, *,
                     decoding: Decoding | None = None, batch_size: int = 16, device: str = "auto", threads: int = 0,
                     allow_train_prompts: bool = False, limit: int = 0, progress: bool = False) -> dict[str, Any]:
    """Write the student's outputs for every prompt not yet in ``output``.

    Parameters
    ----------
    student_dir : path
        A directory written by ``attribute-teacher distill``.
    prompts : path
        JSONL/CSV prompts; by default none may be among the student's training prompts (by id).
    output : path
        JSONL written append-only; ids already in it are skipped (resume).
    decoding : Decoding, optional
        Greedy with 80 new tokens by default.
    allow_train_prompts : bool, default=False
        Permit prompts the student was trained on (they make attribution look easier than it is).

    Returns
    -------
    dict
        ``output``, ``student``, ``teacher``, ``n_prompts``, ``n_existing``, ``n_written``, ``n_empty``, ``seconds``.
    """
    decoding = decoding or Decoding()
    info = read_student_info(student_dir)
    records = read_prompts(prompts, limit=limit)
    if not allow_train_prompts:
        trained = set(info.get("train_ids", ()))
        for record in records:
            if record.key in trained:
                raise input_error("E407", source=str(prompts), line=record.line, id=record.key)
    with exclusive_output(output):  # one writer at a time (E422): a second run would write each record again
        existing = load_finished(output)
        for number, row in enumerate(existing, start=1):
            if row.get("student") != info["student"] or row.get("decoding") != decoding.to_dict():
                raise input_error("E406", source=str(output), line=number, path=str(output),
                                  detail=f"student/decoding differ from {info['student']!r}, {decoding.to_dict()}")
        done = {str(row["id"]) for row in existing}
        todo = [(i, r) for i, r in enumerate(records) if r.key not in done]
        start = time.perf_counter()
        written = empty = 0
        if todo:
            written, empty = _generate(student_dir, info, todo, output, decoding=decoding, batch_size=batch_size,
                                       device=device, n_prompts=len(records), progress=progress)
    return {"output": str(output), "student": info["student"], "teacher": info["teacher"],
            "n_prompts": len(records), "n_existing": len(existing), "n_written": written, "n_empty": empty,
            "seconds": round(time.perf_counter() - start, 3), "decoding": decoding.to_dict()}


def _generate(student_dir: str | os.PathLike, info: dict[str, Any], todo: list[tuple[int, Any]],
              output: str | os.PathLike, *, decoding: Decoding, batch_size: int, device: str, n_prompts: int,
              progress: bool) -> tuple[int, int]:
    """Load the student and append its outputs for ``todo``; returns (written, empty)."""
    from tqdm import tqdm

    loaded = load_causal_lm(str(student_dir), device=device, chat_template="none")
    context = int(getattr(loaded.model.config, "n_positions", 0)
                  or getattr(loaded.model.config, "max_position_embeddings", 0) or 0)
    max_prompt = max(1, context - decoding.max_new_tokens) if context else 0
    bar = tqdm(total=n_prompts, initial=n_prompts - len(todo), disable=not progress,
               desc=f"generate {info['student']}", unit="prompt", dynamic_ncols=True)
    written, empty = generate_to_file(
        loaded, todo, output, batch_size=batch_size, decoding=decoding,
        render=lambda text: render_prompt(loaded, text, template=info["prompt_template"]),
        make_row=lambda record, text, finish, n_new, seed: {
            "id": record.key, "task": record.task, "prompt": record.output, "output": text,
            "student": info["student"], "teacher": info["teacher"], "finish": finish,
            "n_new_tokens": n_new, "seed": seed, "decoding": decoding.to_dict()},
        max_prompt_tokens=max_prompt, add_special_tokens=False, progress=bar)
    bar.close()
    return written, empty
