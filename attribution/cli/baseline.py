"""``attribute-teacher baseline NAME``: score students with one of the paper's baselines.

With labelled students (every record has ``teacher``) it prints the same metric rows as
``evaluate`` (one per task); otherwise each output's scores and top teacher, plus a
verdict per student. torch and the models load inside the command only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from .. import registry
from ._app import (
    FORMAT_OPTION,
    OUTPUT_JSON_OPTION,
    QUIET_OPTION,
    SKIP_INVALID_OPTION,
    TASK_OPTION,
    TEXT_FIELD_OPTION,
    THREADS_OPTION,
    OutputFormat,
    app,
    emit,
    environ,
    log,
    output_file,
    read_inputs,
)
from ._options import FROM_REGISTRY, registry_options

NAME_HELP = f"{registry.baselines.help()}."


def _table(result: dict[str, Any]) -> str:
    from ..sanitize import one_line

    if "results" in result:
        lines = [f"{'task':<16} {'baseline':<22} {'n':>5} {'acc':>6} {'bal_acc':>8} {'students':>9} {'stud_acc':>9}"]
        for row in result["results"]:
            lines.append(f"{one_line(row['task']):<16} {one_line(row['features']):<22} {row['n_outputs']:>5} "
                         f"{row['accuracy']:>6.3f} {row['balanced_accuracy']:>8.3f} {row['n_students']:>9} "
                         f"{row['student_accuracy']:>9.3f}")
        return "\n".join(lines)
    parts = result["predictions"].items() if "predictions" in result else [("", result)]
    lines = [f"{'baseline':<22} {'student':<28} {'verdict':<24} {'n':>5}"]
    for baseline, sub in parts:
        for student, row in sorted(sub["students"].items()):
            name = baseline or sub.get("name", "")
            lines.append(f"{one_line(name):<22} {one_line(student):<28} {one_line(row['verdict']):<24} "
                         f"{row['n_outputs']:>5}")
    return "\n".join(lines)


@app.command("baseline")
@registry_options(registry.baselines, "options")
def baseline_cli(
    ctx: typer.Context,
    name: str = typer.Argument(..., help=f"Baseline, or several separated by commas: {NAME_HELP}"),
    reference: list[Path] = typer.Option(..., "--reference", "-r", dir_okay=False,
                                         help="Teachers' reference outputs (each with 'teacher'; 'id' aligns "
                                         "pairs); repeat for several files."),
    students: list[Path] = typer.Option(..., "--students", "-s", dir_okay=False,
                                        help="Student outputs to attribute; repeat for several files."),
    options: dict[str, Any] = FROM_REGISTRY,  # one option per option a baseline declares in the registry
    normalize: bool = typer.Option(True, "--normalize/--no-normalize", help="Remove generation artifacts first."),
    per_task: bool = typer.Option(True, "--per-task/--pooled", help="Score each task separately."),
    task: Optional[str] = TASK_OPTION,
    drop_empty: bool = typer.Option(False, "--drop-empty",
                                    help="Leave out students that are empty after normalization (they tie for "
                                    "every teacher, and ties go to the alphabetically first)."),
    limit: int = typer.Option(0, "--limit", min=0,
                              help="Score a seeded random sample of this many students (0 = all)."),
    threads: int = THREADS_OPTION,
    text_field: Optional[str] = TEXT_FIELD_OPTION,
    skip_invalid: bool = SKIP_INVALID_OPTION,
    fmt: OutputFormat = FORMAT_OPTION,
    output: Optional[Path] = OUTPUT_JSON_OPTION,
    seed: int = typer.Option(0, "--seed", help="Seed for --limit and the calibration sample."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Attribute student outputs with a baseline (BERTScore, embeddings, teacher perplexity, cosine, ROUGE)."""
    # over 60 lines only by its signature (typer: one parameter per option) and docstring; the body is 50 lines
    from ..baselines import BASELINES, MODEL_BASELINES
    from ..baselines._common import versions
    from ..evaluation import predict_baseline

    names = [n.strip() for n in name.split(",") if n.strip()]
    for each in names or [name]:
        BASELINES.entry(each)  # an unknown name is E502, listing the registered ones
    from ..io import check_outputs

    output = output_file(output)
    check_outputs([output], [*reference, *students])
    if quiet:  # until the command ends: also silences transformers' GGUF conversion bar
        ctx.with_resource(environ(TQDM_DISABLE="1"))
    if set(names) & set(MODEL_BASELINES):
        from ..runtime import torch_threads

        ctx.with_resource(torch_threads(threads))
    refs, studs, skipped = read_inputs(reference, students, task=task, quiet=quiet, text_field=text_field,
                                       skip_invalid=skip_invalid)
    if not refs or not studs:
        from ..errors import baseline_error

        what = "references" if not refs else "students"
        raise baseline_error("E509", name=what + (f" of task '{task}'" if task else ""))
    from ..evaluation import evaluate, select_students

    studs, n_empty = select_students(studs, drop_empty=drop_empty, normalize=normalize, limit=limit,
                                     random_state=seed)
    if drop_empty:
        log(f"left out {n_empty} student output(s) empty after normalization", quiet=quiet)
    log(f"{len(refs)} reference and {len(studs)} student outputs; baseline {name}", quiet=quiet)
    options = {**registry.baselines.option_values(names, options), "normalize": normalize,
               "show_progress": not quiet, "random_state": seed}
    labelled = bool(studs) and all(s.teacher for s in studs)
    if labelled:  # the evaluate path: the same rows as feature sets; models load once for all names
        result = evaluate(refs, studs, features=(), baselines=names, baseline_options=options, per_task=per_task,
                          random_state=seed).to_dict()
    elif len(names) == 1:
        result = predict_baseline(name, refs, studs, per_task=per_task, **options).to_dict()
    else:
        result = {"predictions": {n: predict_baseline(n, refs, studs, per_task=per_task, **options).to_dict()
                                  for n in names}}
    result["signature"] = {"baseline": name, "n_references": len(refs), "n_students": len(studs),
                           "limit": limit, "seed": seed,
                           "dropped_empty": n_empty, "versions": versions()}
    result["skipped"] = len(skipped)
    emit(result, fmt, _table, output, quiet=quiet)
