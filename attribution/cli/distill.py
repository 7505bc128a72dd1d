"""``collect``, ``distill`` and ``generate``: make teacher outputs, train a student on them, sample it.

Thin wrappers over :mod:`attribution.distill`; torch and transformers are imported only when a
command runs, so ``--help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ..distill.settings import option_callback
from ._app import DEVICE_OPTION, FORMAT_OPTION, QUIET_OPTION, THREADS_OPTION, Device, OutputFormat, app, emit, log
from ._endpoint import (
    API_KEY_ENV_OPTION,
    COMPLETION_OPTION,
    CONCURRENCY_OPTION,
    ENDPOINT_OPTION,
    MAX_RETRIES_OPTION,
    RPM_OPTION,
    STOP_OPTION,
    TIMEOUT_OPTION,
    TPM_OPTION,
    run_endpoint,
)


def _table(result: dict[str, Any]) -> str:
    from ..sanitize import one_line

    return "\n".join(f"{key:>16}  {one_line(value)}" for key, value in sorted(result.items())
                     if not isinstance(value, (dict, list)))


def _decoding(max_new_tokens: int, sample: bool, temperature: float, top_p: float, repetition_penalty: float,
              seed: int) -> Any:
    from ..distill import Decoding
    from ..distill.settings import check_sampling

    check_sampling(sample, temperature, top_p)  # each option's range is checked by its callback
    return Decoding(max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature, top_p=top_p,
                    repetition_penalty=repetition_penalty, seed=seed)


def _unescape(text: str | None) -> str | None:
    """Let shell users write newlines and tabs as ``\\n`` and ``\\t``."""
    return None if text is None else text.replace("\\n", "\n").replace("\\t", "\t")


# Decoding options shared by collect and generate, checked like an audit config's (attribution.distill.settings).
MAX_NEW_TOKENS_OPTION = typer.Option(80, "--max-new-tokens", "--max-tokens", callback=option_callback("max_tokens"),
                                     help="New tokens per output.")
SAMPLE_OPTION = typer.Option(False, "--sample/--greedy", help="Seeded sampling instead of greedy decoding.")
TEMPERATURE_OPTION = typer.Option(0.7, callback=option_callback("temperature"),
                                  help="Sampling temperature (with --sample; >= 0).")
TOP_P_OPTION = typer.Option(0.95, callback=option_callback("top_p"), help="Nucleus sampling mass (with --sample; "
                            "0 < top-p <= 1).")
REPETITION_PENALTY_OPTION = typer.Option(1.0, help="HF repetition penalty (1.0: off).")
SEED_OPTION = typer.Option(0, callback=option_callback("seed"), help="Base seed; batch k (prompts k*B..) uses "
                           "seed + k*B.")
LIMIT_OPTION = typer.Option(0, callback=option_callback("limit"), help="Only the first N prompts (0: all).")


@app.command("collect")
def collect_cli(
    model: str = typer.Option(..., "--model", "-m", help="Offline alias (smollm2-135m, gemma-3-270m), .gguf file, "
                              "model directory or Hugging Face id; with --endpoint, the served model name."),
    prompts: Path = typer.Option(..., "--prompts", "-p", exists=True, dir_okay=False,
                                 help="JSONL/CSV with 'prompt' (and 'id', 'task') per record."),
    output: Path = typer.Option(..., "--output", "-o", dir_okay=False,
                                help="JSONL to append to; ids already in it are skipped (resume)."),
    teacher: Optional[str] = typer.Option(None, help="Label for the 'teacher' field [default: model's short name]."),
    task: Optional[str] = typer.Option(None, help="Task label for prompts without one."),
    max_new_tokens: int = MAX_NEW_TOKENS_OPTION,
    sample: bool = SAMPLE_OPTION,
    temperature: float = TEMPERATURE_OPTION,
    top_p: float = TOP_P_OPTION,
    repetition_penalty: float = REPETITION_PENALTY_OPTION,
    seed: int = SEED_OPTION,
    batch_size: int = typer.Option(8, min=1, help="Prompts per generate() call."),
    device: Device = DEVICE_OPTION,
    threads: int = THREADS_OPTION,
    chat_template: str = typer.Option("auto", help="auto (tokenizer's, else a known family template), none, or gemma."),
    system_prompt: Optional[str] = typer.Option(None, "--system-prompt", "--system",
                                                help="System turn before each prompt (chat models)."),
    prompt_template: Optional[str] = typer.Option(None, help="Wrap each prompt first, e.g. '{prompt}\\n\\nAnswer:' "
                                                  "for a base model (with --chat-template none); \\n means newline."),
    max_prompt_tokens: int = typer.Option(0, min=0, help="Keep only the last N prompt tokens (0: no limit)."),
    limit: int = LIMIT_OPTION,
    fmt: OutputFormat = FORMAT_OPTION,
    quiet: bool = QUIET_OPTION,
    endpoint: Optional[str] = ENDPOINT_OPTION,
    completion: bool = COMPLETION_OPTION,
    stop: Optional[list[str]] = STOP_OPTION,
    api_key_env: str = API_KEY_ENV_OPTION,
    concurrency: int = CONCURRENCY_OPTION,
    rpm: float = RPM_OPTION,
    tpm: float = TPM_OPTION,
    max_retries: int = MAX_RETRIES_OPTION,
    timeout: float = TIMEOUT_OPTION,
) -> None:
    """Generate a teacher's outputs for a prompt file (batched, resumable, settings recorded per record).

    With --endpoint, query a model served behind an OpenAI-compatible API instead (concurrent,
    retried, rate-limited, resumable; a manifest OUT.manifest.json records where the outputs came from).
    """
    from ..distill import collect_outputs
    from ..io import check_outputs

    check_outputs([output], [prompts])  # appended to, never the prompts file itself (E120)
    if endpoint is not None:
        run_endpoint(dict(locals(), system_prompt=_unescape(system_prompt), prompt_template=_unescape(prompt_template)),
                     role="teacher", label=teacher)
        return
    decoding = _decoding(max_new_tokens, sample, temperature, top_p, repetition_penalty, seed)
    result = collect_outputs(model, prompts, output, teacher=teacher, task=task, decoding=decoding,
                             batch_size=batch_size, device=device.value, threads=threads,
                             chat_template=chat_template, system_prompt=system_prompt,
                             prompt_template=_unescape(prompt_template), max_prompt_tokens=max_prompt_tokens,
                             limit=limit, progress=not quiet)
    log(f"{result['n_written']} written, {result['n_existing']} already there, {result['n_empty']} empty "
        f"({result['seconds']:.1f}s)", quiet=quiet)
    emit(result, fmt, _table)


@app.command("distill")
def distill_cli(
    teacher_outputs: Path = typer.Option(..., "--teacher-outputs", exists=True, dir_okay=False,
                                         help="JSONL/CSV of one teacher's outputs with 'prompt' and 'output'."),
    student: str = typer.Option("tiny-gpt2", "--student", help="Preset (micro-gpt2, tiny-gpt2, small-gpt2; "
                                "trained from scratch), GPT-2 config .json, model directory or hub id (e.g. gpt2)."),
    output_dir: Path = typer.Option(..., "--output", "-o", file_okay=False, help="Directory for the trained student."),
    teacher: Optional[str] = typer.Option(None, help="Use only this teacher's records (for files mixing teachers)."),
    name: Optional[str] = typer.Option(None,
                                       help="Student label in generated records [default: STUDENT-from-TEACHER]."),
    epochs: int = typer.Option(10, min=1, help="Passes over the training pairs."),
    batch_size: int = typer.Option(8, min=1, help="Pairs per optimisation step."),
    learning_rate: float = typer.Option(1e-3, min=0.0, help="AdamW peak learning rate (use ~5e-5 for pretrained)."),
    weight_decay: float = typer.Option(0.01, min=0.0, help="AdamW weight decay."),
    warmup_ratio: float = typer.Option(0.05, min=0.0, max=1.0, help="Share of steps with linear warmup."),
    max_length: int = typer.Option(0, min=0, help="Tokens per example, prompt cut from the left (0: context size)."),
    seed: int = typer.Option(0, help="Seed for initialisation and shuffling."),
    device: Device = DEVICE_OPTION,
    threads: int = THREADS_OPTION,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing student directory."),
    fmt: OutputFormat = FORMAT_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Fine-tune a student on prompt -> teacher output (sequence-level distillation, loss on output tokens)."""
    from ..distill import TrainSettings, train_student

    settings = TrainSettings(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                             weight_decay=weight_decay, warmup_ratio=warmup_ratio, max_length=max_length, seed=seed)
    info = train_student(teacher_outputs, student, output_dir, teacher=teacher, name=name, settings=settings,
                         device=device.value, threads=threads, overwrite=overwrite, progress=not quiet)
    log(f"trained {info['student']} on {info['n_examples']} pairs in {info['seconds']:.1f}s "
        f"(final loss {info['final_loss']})", quiet=quiet)
    result = {k: v for k, v in info.items() if k != "train_ids"}
    result["output"] = str(output_dir)
    emit(result, fmt, _table)


@app.command("generate")
def generate_cli(
    student: Optional[Path] = typer.Option(None, "--student", exists=True, file_okay=False,
                                           help="Directory written by 'attribute-teacher distill' "
                                           "(or use --endpoint)."),
    prompts: Path = typer.Option(..., "--prompts", "-p", exists=True, dir_okay=False,
                                 help="Held-out prompts (JSONL/CSV with 'prompt', 'id', 'task')."),
    output: Path = typer.Option(..., "--output", "-o", dir_okay=False,
                                help="JSONL to append to; ids already in it are skipped (resume)."),
    max_new_tokens: int = MAX_NEW_TOKENS_OPTION,
    sample: bool = SAMPLE_OPTION,
    temperature: float = TEMPERATURE_OPTION,
    top_p: float = TOP_P_OPTION,
    repetition_penalty: float = REPETITION_PENALTY_OPTION,
    seed: int = SEED_OPTION,
    batch_size: int = typer.Option(16, min=1, help="Prompts per generate() call."),
    device: Device = DEVICE_OPTION,
    threads: int = THREADS_OPTION,
    allow_train_prompts: bool = typer.Option(False, "--allow-train-prompts",
                                             help="Permit prompts the student was trained on."),
    limit: int = LIMIT_OPTION,
    fmt: OutputFormat = FORMAT_OPTION,
    quiet: bool = QUIET_OPTION,
    endpoint: Optional[str] = ENDPOINT_OPTION,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="With --endpoint: the served model name."),
    name: Optional[str] = typer.Option(None, "--name", help="With --endpoint: the student label [default: --model]."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="With --endpoint: the true teacher, when known "
                                          "(recorded for 'evaluate')."),
    task: Optional[str] = typer.Option(None, help="With --endpoint: task label for prompts without one."),
    system_prompt: Optional[str] = typer.Option(None, "--system-prompt", "--system",
                                                help="With --endpoint: system turn before each prompt."),
    prompt_template: Optional[str] = typer.Option(None, help="With --endpoint: wrap each prompt first, e.g. "
                                                  "'{prompt}\\n\\nAnswer:'; \\n means newline."),
    completion: bool = COMPLETION_OPTION,
    stop: Optional[list[str]] = STOP_OPTION,
    api_key_env: str = API_KEY_ENV_OPTION,
    concurrency: int = CONCURRENCY_OPTION,
    rpm: float = RPM_OPTION,
    tpm: float = TPM_OPTION,
    max_retries: int = MAX_RETRIES_OPTION,
    timeout: float = TIMEOUT_OPTION,
) -> None:
    """Write a distilled student's outputs on held-out prompts (toolkit JSONL, with the true teacher label).

    With --endpoint --model NAME, query a suspect model served behind an OpenAI-compatible API instead.
    """
    # over 60 lines only by its signature (typer: one parameter per option) and docstring; the body is 17 lines
    from ..distill import generate_outputs
    from ..io import check_outputs

    check_outputs([output], [prompts])  # appended to, never the prompts file itself (E120)
    if endpoint is not None:
        run_endpoint(dict(locals(), system_prompt=_unescape(system_prompt), prompt_template=_unescape(prompt_template)),
                     role="student", label=name, true_teacher=teacher)
        return
    if student is None:
        raise typer.BadParameter("give --student DIR (a distilled student) or --endpoint URL --model NAME")
    decoding = _decoding(max_new_tokens, sample, temperature, top_p, repetition_penalty, seed)
    result = generate_outputs(student, prompts, output, decoding=decoding, batch_size=batch_size,
                              device=device.value, threads=threads, allow_train_prompts=allow_train_prompts,
                              limit=limit, progress=not quiet)
    log(f"{result['n_written']} written, {result['n_existing']} already there, {result['n_empty']} empty "
        f"({result['seconds']:.1f}s)", quiet=quiet)
    emit(result, fmt, _table)
