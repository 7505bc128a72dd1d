"""Sequence-level distillation: fine-tune a student LM on (prompt -> teacher output) pairs.

The student sees ``prompt_template.format(prompt=...)`` followed by the teacher's output and an
end-of-text token; the loss covers only the output tokens (and the end token), never the prompt.
Students are either

* a preset trained from scratch (``tiny-gpt2``, ``micro-gpt2``; see :data:`PRESETS`) with a byte-level
  BPE tokenizer trained on the training texts: CPU-feasible in minutes,
* a GPT-2 config ``.json`` trained from scratch the same way, or
* a pretrained causal LM (hub id or directory, e.g. ``gpt2``), fine-tuned with its own tokenizer:
  use ``--device cuda`` for real students.

The result is a directory that ``save_pretrained`` wrote, plus ``distill.json`` describing how it was made.

References
----------
Kim and Rush, "Sequence-Level Knowledge Distillation", EMNLP 2016.
Wadhwa et al., "Who Taught You That? Tracing Teachers in Model Distillation", Findings of ACL 2025.
"""

from __future__ import annotations

import json
import math
import os
import random
import secrets
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..causal_lm import require_torch, resolve_device, resolve_model
from ..errors import input_error, model_error
from ..io import RecordReader

#: Student presets trained from scratch: GPT-2 shapes plus the BPE vocabulary size.
PRESETS: dict[str, dict[str, int]] = {
    "micro-gpt2": {"n_layer": 1, "n_embd": 32, "n_head": 2, "n_positions": 384, "vocab_size": 400},
    "tiny-gpt2": {"n_layer": 2, "n_embd": 128, "n_head": 4, "n_positions": 512, "vocab_size": 4000},
    "small-gpt2": {"n_layer": 4, "n_embd": 256, "n_head": 4, "n_positions": 512, "vocab_size": 8000},
}
#: How a prompt is shown to the student, at training and at generation time.
PROMPT_TEMPLATE = "{prompt}\n\nAnswer:"
EOS = "<|endoftext|>"
INFO_FILE = "distill.json"


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings, recorded in ``distill.json``."""

    epochs: int = 10
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    max_length: int = 0  # 0: the model's context size
    seed: int = 0


def read_pairs(path: str | os.PathLike, *, teacher: str | None = None) -> tuple[list[dict[str, str]], str]:
    """Read (id, prompt, output) pairs of one teacher; return them and the teacher's label."""
    reader = RecordReader(path, max_chars=0)
    pairs: list[dict[str, str]] = []
    labels: set[str] = set()
    seen: dict[str, int] = {}
    for record in reader:
        if teacher and record.teacher != teacher:
            continue
        if not record.prompt:
            raise input_error("E107", source=reader.source, line=record.line, field="prompt")
        if record.key in seen:
            raise input_error("E405", source=reader.source, line=record.line, id=record.key, first=seen[record.key])
        seen[record.key] = record.line or 0
        labels.add(record.teacher or "unknown")
        pairs.append({"id": record.key, "prompt": record.prompt, "output": record.output})
    if not pairs:
        of_teacher = f" of teacher '{teacher}'" if teacher else ""
        raise model_error("E408", detail=f"{reader.source} has no records{of_teacher}")
    if len(labels) > 1:
        raise model_error("E408", detail=f"{reader.source} mixes teachers {sorted(labels)}; pick one with --teacher")
    return pairs, labels.pop()


def _train_tokenizer(texts: list[str], vocab_size: int, out_dir: Path) -> Any:
    """A byte-level BPE trained on the student's training texts, wrapped for transformers."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS], show_progress=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    bpe.save(str(out_dir / "bpe.json"))
    # GPT2TokenizerFast(vocab, merges) silently yields a 1-token vocabulary in transformers 5: load the file.
    tok = PreTrainedTokenizerFast(tokenizer_file=str(out_dir / "bpe.json"), eos_token=EOS, pad_token=EOS,
                                  bos_token=EOS, unk_token=EOS)
    (out_dir / "bpe.json").unlink()
    return tok


def _build_student(student: str, pairs: list[dict[str, str]], work: Path, seed: int) -> tuple[Any, Any, dict]:
    """Model and tokenizer for ``student``, and what it was (preset, config or pretrained)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

    key = student.strip()
    shape: dict[str, Any] | None = None
    if key in PRESETS:
        shape, kind = dict(PRESETS[key]), "preset"
    elif key.endswith(".json") and Path(key).is_file():
        try:
            shape, kind = json.loads(Path(key).read_text(encoding="utf-8")), "config"
        except json.JSONDecodeError as err:
            raise input_error("E101", source=key, line=err.lineno, detail=err.msg) from err
        if not isinstance(shape, dict):
            raise input_error("E102", source=key, got=type(shape).__name__)
    if shape is not None:
        vocab = int(shape.pop("vocab_size", 4000))
        texts = [p["prompt"] for p in pairs] + [p["output"] for p in pairs]
        tok = _train_tokenizer(texts, vocab, work)
        torch.manual_seed(seed)
        config = GPT2Config(vocab_size=len(tok), bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                            pad_token_id=tok.eos_token_id, **shape)
        return GPT2LMHeadModel(config), tok, {"kind": kind, "preset": key if kind == "preset" else None,
                                               "config": {**shape, "vocab_size": len(tok)}}
    spec = resolve_model(key)
    if spec.gguf_file:
        raise model_error("E410", spec=student, presets=", ".join(PRESETS))
    try:
        tok = AutoTokenizer.from_pretrained(spec.path)
        model = AutoModelForCausalLM.from_pretrained(spec.path, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise model_error("E410", spec=student, presets=", ".join(PRESETS)) from err
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok, {"kind": "pretrained", "preset": None, "config": {"name_or_path": spec.spec}}


def _encode(tok: Any, pairs: list[dict[str, str]], max_length: int) -> list[tuple[list[int], int]]:
    """Token ids of prompt + output + EOS, and where the output starts; prompts are cut from the left."""
    examples = []
    eos = tok.eos_token_id
    for pair in pairs:
        prompt_ids = tok(PROMPT_TEMPLATE.format(prompt=pair["prompt"]), add_special_tokens=False)["input_ids"]
        target = tok(" " + pair["output"].strip(), add_special_tokens=False)["input_ids"][: max_length // 2] + [eos]
        prompt_ids = prompt_ids[-(max_length - len(target)):]
        examples.append((prompt_ids + target, len(prompt_ids)))
    return examples


def train_student(teacher_outputs: str | os.PathLike, student: str, output_dir: str | os.PathLike, *,
                  teacher: str | None = None, name: str | None = None, settings: TrainSettings | None = None,
                  device: str = "auto", threads: int = 0, overwrite: bool = False,
                  progress: bool = False) -> dict[str, Any]:
    """Fine-tune ``student`` on one teacher's outputs; save it to ``output_dir``.

    Parameters
    ----------
    teacher_outputs : path
        JSONL/CSV with ``prompt`` and ``output`` (and ``id``, ``teacher``) per record.
    student : str
        Preset (:data:`PRESETS`), GPT-2 config ``.json``, model directory or hub id.
    output_dir : path
        Written at the end (via a temporary directory renamed into place).
    teacher : str, optional
        Use only records of this teacher (needed when the file mixes teachers).
    name : str, optional
        The student's label in generated records [default: ``<student>-from-<teacher>``].
    settings : TrainSettings, optional
    device : {"auto", "cpu", "cuda"}, default="auto"
    threads : int, default=0
        Torch CPU threads (0: torch default).
    overwrite : bool, default=False
        Replace an existing student directory.

    Returns
    -------
    dict
        The contents of ``distill.json``: labels, settings, per-epoch losses, time taken.
    """
    require_torch()
    import torch

    settings = settings or TrainSettings()
    if settings.epochs < 1 or settings.batch_size < 1 or not settings.learning_rate > 0:
        raise model_error("E210", name="epochs/batch-size/learning-rate", expected="positive",
                          got=(settings.epochs, settings.batch_size, settings.learning_rate))
    out = Path(output_dir)
    check_student_dir(out, overwrite=overwrite)
    pairs, label = read_pairs(teacher_outputs, teacher=teacher)
    device = resolve_device(device)
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    work = _work_dir(out)
    threads_before = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        info = _train(work, pairs, label, student, settings, device=device, name=name, progress=progress)
    except BaseException:  # a failed or interrupted run leaves nothing behind
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads_before)  # the thread count is the caller's process setting
    info["teacher_outputs"] = Path(teacher_outputs).name
    (work / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(work, out)
    return info


def _work_dir(out: Path) -> Path:
    """A new folder beside ``out`` to train into; renamed to ``out`` once the student is complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"  # a fresh name: nobody else's
    work.mkdir()  # plain mkdir: the student folder gets the user's usual permissions
    return work


def _batch_tensors(batch: list[tuple[list[int], int]], pad: int) -> tuple[Any, Any, Any]:
    """Right-padded input ids, labels (-100 on the prompt and padding: only the output is learned) and mask."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, start_out) in enumerate(batch):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        labels[row, start_out:len(ids)] = torch.tensor(ids[start_out:])
        mask[row, :len(ids)] = 1
    return input_ids, labels, mask


def check_student_dir(out: Path, *, overwrite: bool) -> None:
    """Refuse, before training, to replace anything but an empty folder or (with ``overwrite``) a student
    written by ``distill``: the folder is replaced whole at the end, and it may be the user's."""
    if (out / INFO_FILE).exists():
        if not overwrite:
            raise model_error("E412", path=str(out))
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise model_error("E409", path=str(out), missing=f"{INFO_FILE}; refusing to replace it: choose a new or "
                          "empty directory")


def _train(work: Path, pairs: list[dict[str, str]], label: str, student: str, settings: TrainSettings, *,
           device: str, name: str | None, progress: bool) -> dict[str, Any]:
    """Train into ``work``; returns the ``distill.json`` contents (without the input's name)."""
    import torch

    start = time.perf_counter()
    model, tok, made = _build_student(student, pairs, work, settings.seed)
    context = int(getattr(model.config, "n_positions", 0) or getattr(model.config, "max_position_embeddings", 1024))
    max_length = min(settings.max_length or context, context)
    examples = _encode(tok, pairs, max_length)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    steps = settings.epochs * math.ceil(len(examples) / settings.batch_size)
    warmup = max(1, int(settings.warmup_ratio * steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup))))
    pad = tok.pad_token_id
    rng = random.Random(settings.seed)
    losses: list[float] = []
    from tqdm import tqdm

    bar = tqdm(total=steps, disable=not progress, desc=f"distill {label}", unit="step", dynamic_ncols=True)
    use_bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    for _ in range(settings.epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        total = count = 0.0
        for b in range(0, len(order), settings.batch_size):
            input_ids, labels, mask = _batch_tensors([examples[i] for i in order[b:b + settings.batch_size]], pad)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                loss = model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                             labels=labels.to(device)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            n_tokens = float((labels[:, 1:] != -100).sum())
            total += float(loss.detach()) * n_tokens
            count += n_tokens
            bar.update(1)
        losses.append(round(total / max(count, 1.0), 4))
        bar.set_postfix(loss=losses[-1])
    bar.close()
    model.eval()
    model.save_pretrained(work)
    tok.save_pretrained(work)
    from .. import __version__

    info = {"student": name or f"{made['preset'] or Path(student).stem or student}-from-{label}", "teacher": label,
            "base": student, **made, "prompt_template": PROMPT_TEMPLATE, "training": asdict(settings),
            "max_length": max_length, "n_examples": len(pairs), "train_ids": sorted(p["id"] for p in pairs),
            "epoch_losses": losses,
            "final_loss": losses[-1] if losses else None, "device": device,
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "seconds": round(time.perf_counter() - start, 1), "teacher_attribution_version": __version__}
    return info
