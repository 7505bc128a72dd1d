"""``attribute-teacher evaluate``: the paper's protocol on labelled student outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer

from .. import registry
from ._app import (
    FORMAT_OPTION,
    MAX_CHARS_OPTION,
    NO_CACHE_OPTION,
    NORMALIZE_OPTION,
    OUTPUT_JSON_OPTION,
    QUIET_OPTION,
    SCHEDULER_OPTION,
    SKIP_INVALID_OPTION,
    TAGGER_OPTION,
    TASK_OPTION,
    TEXT_FIELD_OPTION,
    VERDICT_TEST_OPTION,
    WORKERS_OPTION,
    OutputFormat,
    VerdictTest,
    app,
    emit,
    log,
    output_file,
    read_inputs,
    report_skipped,
    tag_on_cluster,
    use_tag_cache,
)
from ._options import FROM_REGISTRY, registry_options


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _table(result: dict[str, Any]) -> str:
    import pandas as pd

    from ..evaluation import results_table
    from ..sanitize import one_line

    table = results_table(result)
    for column in table.columns:
        if not pd.api.types.is_numeric_dtype(table[column]):
            table[column] = [one_line(v) if isinstance(v, str) else v for v in table[column]]
    return table.to_string(index=False, float_format=lambda v: f"{v:.3f}")


@app.command("evaluate")
@registry_options(registry.baselines, "baseline_options", flags={"model": ("--baseline-model",)})
def evaluate_cli(
    ctx: typer.Context,
    reference: List[Path] = typer.Option(..., "--reference", "-r", dir_okay=False,
                                         help="Teachers' outputs (training); repeat for several files."),
    students: List[Path] = typer.Option(..., "--students", "-s", dir_okay=False,
                                        help="Student outputs, each labelled with its true 'teacher'; repeatable."),
    features: str = typer.Option("pos-paper,ngram-paper,combined", "--features",
                                 help="Comma-separated feature sets to compare: "
                                 f"{', '.join(registry.feature_sets.names())}."),
    baselines: str = typer.Option("", "--baselines", help="Comma-separated baselines (model-based ones need the "
                                  f"baselines extra): {', '.join(registry.baselines.names())}."),
    baseline_options: dict[str, Any] = FROM_REGISTRY,  # one option per option a baseline declares
    task: Optional[str] = TASK_OPTION,
    tagger: str = TAGGER_OPTION,
    normalize: bool = NORMALIZE_OPTION,
    base_correction: bool = typer.Option(False, "--base-correction",
                                         help="Also score each feature set with the students' shared "
                                         "(base-model) style subtracted; assumes one student per teacher."),
    subsets: str = typer.Option("10,25", "--subsets", help="Student accuracy from this many outputs per student."),
    draws: int = typer.Option(20, "--draws", min=1, help="Random subsets per size."),
    text_field: Optional[str] = TEXT_FIELD_OPTION,
    skip_invalid: bool = SKIP_INVALID_OPTION,
    max_chars: int = MAX_CHARS_OPTION,
    fmt: OutputFormat = FORMAT_OPTION,
    output: Optional[Path] = OUTPUT_JSON_OPTION,
    seed: int = typer.Option(0, "--seed", help="Seed of the random subsets."),
    verdict_test: VerdictTest = VERDICT_TEST_OPTION,
    workers: Optional[int] = WORKERS_OPTION,
    scheduler: Optional[str] = SCHEDULER_OPTION,
    no_cache: bool = NO_CACHE_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Fit on teacher outputs, attribute every student output, and score it (per output and per student)."""
    # over 60 lines only by its signature (typer: one parameter per option) and docstring; the body is 33 lines
    from ..evaluation import evaluate
    from ..features import FEATURE_SETS
    from ..io import check_outputs
    from ..references import match_students

    names = _split(features)
    unknown = [n for n in names if n not in FEATURE_SETS]
    if unknown:
        raise typer.BadParameter(f"unknown feature set(s) {unknown}; choose from {sorted(FEATURE_SETS)}",
                                 param_hint="--features")
    sizes = [int(v) for v in _split(subsets)]
    output = output_file(output)
    check_outputs([output], [*reference, *students])
    refs, studs, skipped = read_inputs(reference, students, task=task, quiet=quiet, text_field=text_field,
                                       skip_invalid=skip_invalid, max_chars=max_chars)
    studs, unmatched = match_students(refs, studs, skip_invalid=skip_invalid)  # labels and tasks, before fitting
    report_skipped(unmatched, quiet=quiet)
    skipped += unmatched
    log(f"{len(refs)} reference and {len(studs)} student outputs", quiet=quiet)
    use_tag_cache(ctx, no_cache)
    tag_on_cluster(ctx, workers, scheduler, quiet=quiet)
    baseline_names = _split(baselines)
    baseline_options = {**registry.baselines.option_values(baseline_names, baseline_options),
                        "normalize": normalize, "show_progress": not quiet, "random_state": seed}
    result = evaluate(refs, studs, features=names, baselines=baseline_names, subsets=sizes, draws=draws,
                      random_state=seed, tagger=tagger, normalize=normalize, baseline_options=baseline_options,
                      base_correction=base_correction, tests=verdict_test.value)
    emit({**result.to_dict(), "skipped": len(skipped)}, fmt, _table, output, quiet=quiet)
