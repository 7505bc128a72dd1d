"""``attribute-teacher rank`` (the default command) and ``attribute-teacher fit``."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Any, List, Optional

import typer

from ..outputs import to_json
from ._app import (
    AUDITOR_OPTION,
    CASE_ID_OPTION,
    CHROMIUM_OPTION,
    FAMILIES_OPTION,
    FEATURES_OPTION,
    FORMAT_OPTION,
    MAX_CHARS_OPTION,
    NO_CACHE_OPTION,
    NORMALIZE_OPTION,
    ORGANISATION_OPTION,
    QUIET_OPTION,
    SCHEDULER_OPTION,
    SKIP_INVALID_OPTION,
    TAGGER_OPTION,
    TASK_OPTION,
    TEXT_FIELD_OPTION,
    VERDICT_TEST_OPTION,
    WORKERS_OPTION,
    OutputFormat,
    Tally,
    VerdictTest,
    app,
    echo,
    emit,
    log,
    nothing_left,
    output_file,
    report_case,
    report_skipped,
    tag_on_cluster,
    use_tag_cache,
)


def _reader_options(text_field: Optional[str], skip_invalid: bool, max_chars: int) -> dict[str, Any]:
    return {"text_field": text_field, "skip_invalid": skip_invalid, "max_chars": max_chars}


def _fit_from_file(reference: Path | list[Path], *, task: Optional[str], features: str, tagger: str, normalize: bool,
                   seed: int, reader: dict[str, Any], quiet: bool,
                   params: Optional[dict[str, Any]] = None,
                   families: Optional[dict[str, str]] = None) -> tuple[Any, list, list[str], list]:
    """Fit on a reference file (or several, read in order as one); returns the model, the skipped records'
    errors, warnings about the references (each also logged) and the records fitted on. ``params``: every
    estimator parameter (``fit --add``: the model's), instead of the four options."""
    from ..api import fit_reference
    from ..checks import reference_warnings
    from ..io import RecordReader

    paths = reference if isinstance(reference, list) else [reference]
    tallies = [Tally(RecordReader(path, require_teacher=True, **reader)) for path in paths]
    records = [r for tally in tallies for r in tally if task is None or r.task == task]
    skipped = [err for tally in tallies for err in tally.reader.skipped]
    report_skipped(skipped, quiet=quiet)
    if not records:
        problem = next(filter(None, (nothing_left(t.reader, t.tasks, task, untagged_match=False) for t in tallies)),
                       None)
        if problem is not None:
            raise problem
    from tqdm import tqdm

    log(f"fitting on {len(records)} reference outputs from {', '.join(p.name for p in paths)}", quiet=quiet)
    if params is None:
        params = {"features": features, "tagger": tagger, "normalize": normalize, "random_state": seed}
    with tqdm(desc="fitting: tagging references", total=len(records), unit="out", disable=quiet,
              leave=False) as bar:
        model = fit_reference(records, task=task, progress=bar.update, families=families, **params)
    warnings = reference_warnings(records)
    for warning in warnings:
        log(f"warning: {warning}", quiet=quiet)
    return model, skipped, warnings, records


def _fit_on_workers(client: Any) -> Any:
    """:func:`_fit_from_file`, with the Dask workers reading the JSON Lines file in byte ranges
    (:func:`attribution.parallel.fit.fit_file`: the same model, the same errors and messages)."""

    def fit(reference: Path, *, task: Optional[str], features: str, tagger: str, normalize: bool, seed: int,
            reader: dict[str, Any], quiet: bool,
            families: Optional[dict[str, str]] = None) -> tuple[Any, list, list[str], list]:
        from ..checks import reference_warnings
        from ..parallel.fit import fit_file

        def read(facts: Any) -> None:
            report_skipped(facts.skipped, quiet=quiet)
            problem = nothing_left(facts, facts.tasks, task, untagged_match=False) if not facts.labels else None
            if problem is not None:
                raise problem
            log(f"fitting on {len(facts.labels)} reference outputs from {reference.name} (read by the workers)",
                quiet=quiet)
            kept.extend(facts.records())

        kept: list = []
        model, skipped = fit_file(reference, client=client, task=task, on_read=read, features=features,
                                  tagger=tagger, normalize=normalize, random_state=seed, families=families, **reader)
        warnings = reference_warnings(kept)
        for warning in warnings:
            log(f"warning: {warning}", quiet=quiet)
        return model, skipped, warnings, kept

    return fit


class RankFormat(str, Enum):
    """Choices of rank's --format: csv prints one row per student (attribution.result.SUMMARY_COLUMNS)."""

    table = "table"
    json = "json"
    csv = "csv"


class GroupBy(str, Enum):
    """Choices of --group-by (attribution.result.GROUP_FIELDS)."""

    student = "student"
    teacher = "teacher"
    task = "task"


def students_table(result: dict[str, Any]) -> str:
    """rank --group-by as a table: one line per group (labels on one line each: sanitize.one_line)."""
    from ..report import format_interval
    from ..sanitize import one_line

    lines = [f"{result['group_by']:<28} {'teacher':<24} {'probability':>11} {'95% interval':>14}  verdict"]
    for entry in result["students"]:
        verdict = entry["verdict"]
        if not entry["ranking"]:  # nothing to rank (attribution.result.unranked_result): the reason instead
            lines.append(f"{one_line(entry['student']):<28} {'-':<24} {'-':>11} {'-':>14}  {verdict['status']}: "
                         f"not ranked: {one_line(verdict.get('reason'))}")
            continue
        best, p_value = entry["ranking"][0], verdict.get("p_value")
        shown = verdict["status"] + (f" (p = {p_value:.3g})" if isinstance(p_value, (int, float)) else "")
        lines.append(f"{one_line(entry['student']):<28} {one_line(best['teacher']):<24} {best['probability']:>11.3f} "
                     f"{format_interval(best):>14}  {one_line(shown)}")
    lines.append(f"({len(result['students'])} groups by '{result['group_by']}'; --format json for each one's "
                 "ranking, verdict and evidence)")
    return "\n".join(lines)


def _verdict_line(verdict: dict[str, Any]) -> str:
    from ..inference import describe_verdict
    from ..sanitize import one_line

    return f"verdict: {one_line(describe_verdict(verdict))}"


def ranking_table(result: dict[str, Any]) -> str:
    """The table of a rank document, printed by ``rank`` and ``audit``: every label, task, template and example on
    one line (sanitize.one_line), so that none can print a line of its own, e.g. a fake verdict."""
    from ..report import format_interval
    from ..sanitize import one_line

    lines = []
    if result.get("family_ranking"):  # families first: the auditor's first question
        lines.append(f"{'family':<24} {'probability':>11} {'95% interval':>14} {'support':>8}  versions in play")
        lines += [f"{one_line(r['family']):<24} {r['probability']:>11.3f} {format_interval(r):>14} "
                  f"{r['support']:>8.2f}  {one_line(', '.join(r['members']))}" for r in result["family_ranking"]]
    lines.append(f"{'teacher':<24} {'probability':>11} {'95% interval':>14} {'support':>8}")
    lines += [f"{one_line(r['teacher']):<24} {r['probability']:>11.3f} {format_interval(r):>14} {r['support']:>8.2f}"
              for r in result["ranking"]]
    lines.append(f"({result['n_outputs']} outputs; interval and support from bootstrap resamples of the outputs; "
                 "support = share ranking it first)")
    lines.append(_verdict_line(result["verdict"]))
    for task, sub in sorted(result.get("tasks", {}).items()):
        best = sub["ranking"][0]
        lines.append(f"  task {one_line(task)}: {one_line(best['teacher'])} ({best['probability']:.3f}, "
                     f"{sub['n_outputs']} outputs)")
    if result.get("evidence"):
        lines.append(f"templates behind '{one_line(result['ranking'][0]['teacher'])}':")
        for row in result["evidence"][:5]:
            example = f"  e.g. \"{one_line(row['examples'][0])}\"" if row["examples"] else ""
            lines.append(f"  {one_line(row['block'])}: {one_line(row['feature']):<28} in {row['n_outputs']} "
                         f"outputs{example}")
    return "\n".join(lines)


#: Options a saved model fixes: CLI option -> (parameter name, model parameter).
MODEL_FIXED = {"--features": ("features", "features"), "--tagger": ("tagger", "tagger"),
               "--normalize/--no-normalize": ("normalize", "normalize"), "--seed": ("seed", "random_state")}


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def _check_model_options(ctx: typer.Context, model: Any, values: dict[str, Any]) -> None:
    """Refuse options given on the command line that contradict what the loaded model fixes."""
    from ..errors import model_error

    params = next(iter(model.models_.values())).get_params()
    for option, (name, param) in MODEL_FIXED.items():
        value = values[name]
        if name == "tagger":
            value = value.replace("-", "_")
        if _given(ctx, name) and value != params[param]:
            shown = option if name != "normalize" else ("--normalize" if value else "--no-normalize")
            raise model_error("E213", option=shown, value="" if name == "normalize" else value,
                              fixed=f"{param}={params[param]}")


def _count_records(path: Path) -> int | None:
    """Records in a JSON Lines file (its non-blank lines), for the progress bar; None for CSV (a quoted
    field may span lines) or when the file cannot be read (the reader then says why)."""
    from ..io import JSONL_SUFFIXES

    if path.suffix.lower() not in JSONL_SUFFIXES:
        return None
    try:
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    except OSError:
        return None


def _empty_hint(model_path: Optional[Path], model: Any) -> str:
    if not next(iter(model.models_.values())).normalize:
        return ""
    if model_path is not None:
        return "; the model normalizes its inputs (refit with --no-normalize to keep them)"
    return "; rank with --no-normalize to keep them"


@app.command("rank")
def rank_cli(
    ctx: typer.Context,
    outputs: Path = typer.Argument(..., help="The student's outputs (.jsonl or .csv).", dir_okay=False),
    reference: Optional[Path] = typer.Option(
        None, "--reference", "-r", dir_okay=False,
        help="Teachers' reference outputs to fit on (each with 'teacher'). One of --reference or --model is required."),
    model_path: Optional[Path] = typer.Option(
        None, "--model", "-m", dir_okay=False,
        help="A model saved by 'attribute-teacher fit' (instead of --reference; one of the two is required)."),
    task: Optional[str] = TASK_OPTION,
    features: str = FEATURES_OPTION,
    tagger: str = TAGGER_OPTION,
    normalize: bool = NORMALIZE_OPTION,
    text_field: Optional[str] = TEXT_FIELD_OPTION,
    skip_invalid: bool = SKIP_INVALID_OPTION,
    max_chars: int = MAX_CHARS_OPTION,
    top_templates: int = typer.Option(10, "--top-templates", min=0, help="Templates to report as evidence."),
    fmt: RankFormat = typer.Option(RankFormat.table, "--format", "-f",
                                   help="table, json, or csv (one row per student: top teacher, interval, verdict)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", dir_okay=False, allow_dash=True,
                                          help="Write the JSON here instead of printing it ('-': stdout); a .csv or "
                                          ".parquet file gets the csv rows."),
    report: Optional[Path] = typer.Option(None, "--report", dir_okay=False,
                                          help="Write a report: HTML (.html), Markdown (.md) or PDF (.pdf, needs "
                                          "Chromium)."),
    examples: int = typer.Option(0, "--examples", min=0,
                                 help="Keep up to N whole student outputs per evidence template (JSON and report)."),
    chromium: Optional[str] = CHROMIUM_OPTION,
    case_id: Optional[str] = CASE_ID_OPTION,
    auditor: Optional[str] = AUDITOR_OPTION,
    organisation: Optional[str] = ORGANISATION_OPTION,
    group_by: Optional[GroupBy] = typer.Option(
        None, "--group-by", case_sensitive=False,
        help="Rank each group of records sharing this field (typically 'student') on its own, in one run."),
    per_output: Optional[Path] = typer.Option(None, "--per-output", dir_okay=False,
                                              help="Write each output's probabilities, keyed by id (.csv or "
                                              ".parquet)."),
    evidence_file: Optional[Path] = typer.Option(None, "--evidence", dir_okay=False,
                                                 help="Write the template evidence rows (.csv or .parquet)."),
    keep_outputs: bool = typer.Option(False, "--keep-outputs",
                                      help="Keep per-output probabilities in the JSON (for 'attribute-teacher "
                                      "report')."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap behind 'support'."),
    verdict_test: VerdictTest = VERDICT_TEST_OPTION,
    exclude: str = typer.Option("", "--exclude", help="Comma-separated teachers or families to leave out of the "
                                "ranking and its tests, without refitting (probabilities renormalized)."),
    families: Optional[Path] = FAMILIES_OPTION,
    control: Optional[Path] = typer.Option(
        None, "--control", dir_okay=False,
        help="Outputs of a model of the student's base model taught by no candidate (e.g. the base model prompted "
             "few-shot), on the student's prompts (same 'id'): the verdict compares the student with it."),
    sequential: bool = typer.Option(
        False, "--sequential", help="Read the outputs in order, in batches, and stop as soon as the anytime-valid "
        "sequential verdict names a teacher (docs/verdict.md); the result says how many outputs were needed."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="With --sequential: outputs per look [default: 10]."),
    max_outputs: Optional[int] = typer.Option(
        None, "--max-outputs", help="With --sequential: read at most this many outputs (the budget)."),
    sequential_design: Optional[str] = typer.Option(
        None, "--sequential-design", help="With --sequential: 'e-process' (default: anytime-valid, no budget needed) "
        "or 'spending' (alpha spent over --max-outputs, fixed in advance: the fixed-n test's power at the budget)."),
    workers: Optional[int] = WORKERS_OPTION,
    scheduler: Optional[str] = SCHEDULER_OPTION,
    no_cache: bool = NO_CACHE_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Rank the candidate teachers of one student from all its outputs.

    When the references hold every candidate's answer to the student's prompts (same 'id'), the
    verdict comes from a paired, prompt-by-prompt test; otherwise from the unlisted-teacher test.
    """
    # over 60 lines only by its signature (typer: one parameter per option) and docstring; the body is 43 lines
    output = output_file(output)
    case = report_case(case_id, auditor, organisation)  # E608 before any work
    _check_before_work(outputs, reference, model_path, output=output, report=report, group_by=group_by,
                       per_output=per_output, evidence_file=evidence_file, control=control, families=families)
    stepwise = _sequential_options(ctx, sequential, batch_size, max_outputs, sequential_design, group_by=group_by,
                                   control=control)
    if report is not None and report.suffix.lower() == ".pdf":
        from ..report.pdf import find_chromium

        chromium = find_chromium(chromium)  # E606 before any work
    reader = _reader_options(text_field, skip_invalid, max_chars)
    use_tag_cache(ctx, no_cache)
    client = tag_on_cluster(ctx, workers, scheduler, quiet=quiet)
    from ..api import refuse_repeated_ids
    from ..families import read_families
    from ..io import read_records

    control_records = read_records(control, **reader) if control is not None else None  # bad input: before work
    if control_records is not None:
        refuse_repeated_ids(control_records)  # E143: a control answers each prompt once
    model, skipped, warnings, ref_records = _model_for_ranking(
        ctx, reference, model_path, task=task, features=features, tagger=tagger, normalize=normalize, seed=seed,
        reader=reader, quiet=quiet, families=read_families(families) if families is not None else None)
    from ..result import AuditBatch

    student = _student_reader(ctx, client, outputs, model, task=task, reader=reader)
    excluded = [n.strip() for n in exclude.split(",") if n.strip()]
    options = {"task": task, "top_templates": top_templates, "tests": verdict_test.value, "exclude": excluded,
               "control": control_records, "examples": examples, "references": ref_records,
               "reference_files": [reference] if reference is not None else None, "model_file": model_path,
               "reader": student, "skipped_references": skipped,
               "keep_outputs": report is not None or keep_outputs or per_output is not None}
    if stepwise is not None:  # the sequential verdict's own test; no control
        options = {**{k: v for k, v in options.items() if k not in ("tests", "control")}, **stepwise}
    group = group_by.value if group_by is not None else None
    audit = _rank_records(model, student, outputs, group=group, options=options, model_path=model_path,
                          quiet=quiet)
    for warning in audit.warnings:
        if warning not in warnings:  # those about the references: logged when fitting
            log(f"warning: {warning}", quiet=quiet)
    batch = audit if group_by is not None else AuditBatch([audit])
    _write_results(audit, batch, fmt=fmt, output=output, report=report, per_output=per_output,
                   evidence_file=evidence_file, keep_outputs=keep_outputs, examples=examples, chromium=chromium,
                   grouped=group_by is not None, case=case)
    if output is not None:
        log(f"wrote {output}", quiet=quiet)
    if report is not None:
        log(f"wrote report {report}", quiet=quiet)


def _check_before_work(outputs: Path, reference: Optional[Path], model_path: Optional[Path], *,
                       output: Optional[Path], report: Optional[Path], group_by: Optional[GroupBy],
                       per_output: Optional[Path], evidence_file: Optional[Path], control: Optional[Path] = None,
                       families: Optional[Path] = None) -> None:
    """Every check that needs no model: options that go together, output paths (never one of the inputs:
    student, references, model, control, families), the student file."""
    from ..errors import input_error, model_error
    from ..io import check_outputs
    from ..report import report_files
    from ..result import require_parquet, table_suffix

    if reference is None and model_path is None:
        raise model_error("E417")
    if reference is not None and model_path is not None:
        raise typer.BadParameter("give exactly one of --reference or --model")
    if families is not None and model_path is not None:
        raise typer.BadParameter("families are fitted into the model: give them to 'fit'", param_hint="--families")
    if group_by is not None and report is not None:
        raise typer.BadParameter("a report shows one student; with --group-by, write --evidence and --per-output "
                                 "tables, or rank each student on its own", param_hint="--report")
    for path, option in ((per_output, "--per-output"), (evidence_file, "--evidence")):
        if path is not None:
            table_suffix(path, option)
    if output is not None and output.suffix.lower() == ".parquet":
        require_parquet()
    check_outputs([output, per_output, evidence_file, *(report_files(report) if report is not None else [])],
                  [outputs, reference, model_path, control, families])
    if not os.path.isfile(outputs):  # before fitting: a typo in the student path should not cost a fit
        raise input_error("E109", source=str(outputs))


def _sequential_options(ctx: typer.Context, sequential: bool, batch_size: Optional[int],
                        max_outputs: Optional[int], design: Optional[str], *, group_by: Optional[GroupBy],
                        control: Optional[Path]) -> Optional[dict[str, Any]]:
    """``--sequential``'s settings (``batch_size``, ``max_outputs``, ``design``), or None without it: E250 for a
    value below 1, E253 for an unknown design, E252 for an option it does not combine with (before any work)."""
    from ..errors import model_error
    from ..sequential import DEFAULT_BATCH, check_design, check_options

    if not sequential:
        for name, value in (("--batch-size", batch_size), ("--max-outputs", max_outputs),
                            ("--sequential-design", design)):
            if value is not None:
                raise model_error("E252", option=name, detail="applies only with --sequential")
        return None
    for name, given in (("--group-by", group_by is not None), ("--control", control is not None),
                        ("--verdict-test", _given(ctx, "verdict_test"))):
        if given:
            raise model_error("E252", option=name, detail="does not combine with --sequential (the sequential "
                              "verdict ranks one student with its own paired test)")
    batch = DEFAULT_BATCH if batch_size is None else batch_size
    check_options(batch, max_outputs, ("--batch-size", "--max-outputs"))
    design = design or "e-process"
    check_design(design, max_outputs, ("--sequential-design", "--max-outputs"))
    return {"batch_size": batch, "max_outputs": max_outputs, "design": design}


def _model_for_ranking(ctx: typer.Context, reference: Optional[Path], model_path: Optional[Path], *,
                       task: Optional[str], features: str, tagger: str, normalize: bool, seed: int,
                       reader: dict[str, Any], quiet: bool,
                       families: Optional[dict[str, str]] = None) -> tuple[Any, list, list[str], Optional[list]]:
    """The saved model (checked against the options given) or one fitted on the reference file; with the
    references' skipped records, warnings and records (None for a saved model)."""
    if model_path is None:
        assert reference is not None  # _check_before_work
        return _fit_from_file(reference, task=task, features=features, tagger=tagger, normalize=normalize,
                              seed=seed, reader=reader, quiet=quiet, families=families)
    from ..multitask import as_multitask
    from ..persistence import load_model

    model = as_multitask(load_model(model_path, tagger=tagger if _given(ctx, "tagger") else None))
    _check_model_options(ctx, model, {"features": features, "tagger": tagger, "normalize": normalize,
                                      "seed": seed})
    return model, [], [], None


def _student_reader(ctx: typer.Context, client: Any, outputs: Path, model: Any, *, task: Optional[str],
                    reader: dict[str, Any]) -> Any:
    """The student's records: read here, or with --workers/--scheduler (JSON Lines) read and tagged by the
    workers in byte ranges (attribution.parallel.rank.worker_records: the same records, errors and result)."""
    from ..io import RecordReader
    from ..parallel.ranges import splittable

    if client is None or not splittable(outputs):
        return RecordReader(outputs, **reader)
    from ..parallel.rank import worker_records

    return ctx.with_resource(worker_records(outputs, model, client=client, task=task, **reader))


def _rank_records(model: Any, student: Any, outputs: Path, *, group: Optional[str], options: dict[str, Any],
                  model_path: Optional[Path], quiet: bool) -> Any:
    """The whole document (:func:`attribution.result.audit_student`, or :func:`~attribution.result.rank_students`
    per group), streaming the student file with a progress bar; a file with nothing left to rank gets the
    reason (E118 or the reader's) instead of E209."""
    from tqdm import tqdm

    from ..errors import ModelError, input_error
    from ..result import audit_student, rank_students

    tally = Tally(student)
    from ..parallel.rank import WorkerRecords

    counted = not quiet and not isinstance(student, WorkerRecords)  # counting would read the file here
    with tqdm(desc="ranking", unit="out", total=_count_records(outputs) if counted else None,
              disable=quiet, leave=False) as bar:
        try:
            audit: Any
            if group is None and "batch_size" in options:
                from ..sequential import rank_sequential

                audit = audit_student(model, tally, progress=bar.update, ranker=rank_sequential, **options)
            elif group is None:
                audit = audit_student(model, tally, progress=bar.update, **options)
            else:
                audit = rank_students(model, tally, group_by=group, progress=bar.update, **options)
        except ModelError as err:
            if err.code != "E209":
                raise
            report_skipped(student.skipped, quiet=quiet)
            task = options["task"]
            problem = nothing_left(student, tally.tasks, task)
            n = sum(tally.tasks.values()) if task is None else tally.tasks[task] + tally.tasks[None]
            raise problem or input_error("E118", source=student.source, n=n,
                                         hint=_empty_hint(model_path, model)) from None
    report_skipped(student.skipped, quiet=quiet)
    return audit


def _write_results(audit: Any, batch: Any, *, fmt: RankFormat, output: Optional[Path], report: Optional[Path],
                   per_output: Optional[Path], evidence_file: Optional[Path], keep_outputs: bool, examples: int,
                   chromium: Optional[str], grouped: bool, case: Any = None) -> None:
    """Every output file, written together (all appear or none does); the document on stdout unless
    ``output`` holds it."""
    from ..io import atomic_write, write_together
    from ..result import TABLE_SUFFIXES, frame_to_csv, write_table

    with write_together():
        if report is not None:
            from ..report import write_report

            write_report(audit.data if not grouped else audit.meta, report, examples=examples, chromium=chromium,
                         case=case)
        if per_output is not None:
            write_table(batch.per_output, per_output)
        if evidence_file is not None:
            write_table(batch.evidence, evidence_file)
        if not keep_outputs:
            for entry in batch:
                entry.data.pop("outputs", None)
        if output is not None and output.suffix.lower() in TABLE_SUFFIXES:
            write_table(batch.table(), output)
        elif output is not None:
            with atomic_write(output) as handle:
                handle.write(to_json(audit.to_dict()) + "\n")
        elif fmt is RankFormat.csv:
            echo(frame_to_csv(batch.table()).rstrip("\n"))
        else:
            emit(audit.to_dict(), OutputFormat(fmt.value), ranking_table if not grouped else students_table)


@app.command("fit")
def fit_cli(
    ctx: typer.Context,
    reference: Optional[List[Path]] = typer.Argument(
        None, dir_okay=False, help="Teachers' reference outputs (each with 'teacher'); several files are fitted on "
        "together, in order."),
    output: Path = typer.Option(..., "--output", "-o", dir_okay=False, help="Where to save the model (.npz)."),
    add: List[Path] = typer.Option(
        [], "--add", dir_okay=False, help="Add these references (new candidates or more outputs) to the model of "
        "--model: a refit on its reference files (--reference) and these, the old tags read from the tag cache; the "
        "same model as fitting on all of them."),
    model_path: Optional[Path] = typer.Option(None, "--model", "-m", dir_okay=False,
                                              help="With --add: the model to add to (its settings are kept)."),
    old_references: List[Path] = typer.Option(
        [], "--reference", "-r", dir_okay=False, help="With --add: the reference files the model was fitted on "
        "(checked against the SHA-256 digests it recorded)."),
    task: Optional[str] = TASK_OPTION,
    features: str = FEATURES_OPTION,
    tagger: str = TAGGER_OPTION,
    normalize: bool = NORMALIZE_OPTION,
    text_field: Optional[str] = TEXT_FIELD_OPTION,
    skip_invalid: bool = SKIP_INVALID_OPTION,
    max_chars: int = MAX_CHARS_OPTION,
    fmt: OutputFormat = FORMAT_OPTION,
    seed: int = typer.Option(0, "--seed", help="Seed stored in the model (bootstrap)."),
    families: Optional[Path] = FAMILIES_OPTION,
    workers: Optional[int] = WORKERS_OPTION,
    scheduler: Optional[str] = SCHEDULER_OPTION,
    no_cache: bool = NO_CACHE_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Fit on teachers' reference outputs and save the model (safe .npz, no pickle); the model records the
    reference files (name, SHA-256, outputs per teacher). With --add, add references to a fitted model."""
    from ..families import read_families
    from ..io import check_outputs
    from ..parallel.ranges import splittable
    from ..refit import describe_files, records_by_file

    values = {"features": features, "tagger": tagger, "normalize": normalize, "seed": seed, "task": task,
              "text_field": text_field, "skip_invalid": skip_invalid, "max_chars": max_chars}
    paths, params, reading, model_families = _fit_plan(ctx, list(reference or []), add, model_path,
                                                       old_references, values)
    check_outputs([output], [*paths, model_path, families])
    family_of = read_families(families) if families is not None else model_families
    use_tag_cache(ctx, no_cache)
    client = tag_on_cluster(ctx, workers, scheduler, quiet=quiet)
    split = client is not None and len(paths) == 1 and splittable(paths[0])
    fit = _fit_on_workers(client) if split else _fit_from_file
    model, skipped, warnings, records = fit(
        paths[0] if split else paths, task=reading["task"], features=params["features"], tagger=params["tagger"],
        normalize=params["normalize"], seed=params["random_state"], quiet=quiet,
        reader=_reader_options(reading["text_field"], reading["skip_invalid"], reading["max_chars"]),
        families=family_of, **({} if split else {"params": params}))
    per_file = records_by_file(paths, records) if len(paths) > 1 else [records]
    model.reference_files_ = describe_files(paths, per_file, reading)
    model.save(output)
    first = next(iter(model.models_.values()))
    result = {"model": output.name, "tasks": [str(t) for t in model.models_], "teachers": model.classes_,
              "families": {t: first.families_.get(t, t) for t in model.classes_},
              "n_features": {str(t): m.n_features_in_ for t, m in model.models_.items()},
              "signature": first.signature_, "skipped": len(skipped),
              "references": [f["name"] for f in model.reference_files_["files"]]}
    if warnings:
        result["warnings"] = warnings
    from ..sanitize import one_line

    emit(result, fmt, lambda r: one_line(f"saved {r['model']}: teachers {', '.join(r['teachers'])}; tasks "
                                         f"{', '.join(r['tasks'])}"))


#: Options that say how reference files are read: CLI option -> its name in ``reference_files_["reading"]``.
READING_FIXED = {"--task": "task", "--text-field": "text_field", "--skip-invalid": "skip_invalid",
                 "--max-chars": "max_chars"}


def _fit_plan(ctx: typer.Context, reference: list[Path], add: list[Path], model_path: Optional[Path],
              old_references: list[Path], values: dict[str, Any]
              ) -> tuple[list[Path], dict[str, Any], dict[str, Any], Optional[dict[str, str]]]:
    """What ``fit`` reads and how: (reference files in order, estimator parameters, reading options). Without
    --add, the files given and the options; with --add, the model's files (checked by SHA-256) then the new
    ones, with the model's settings (an option given that contradicts them: E213)."""
    if not add:
        if model_path is not None or old_references:
            raise typer.BadParameter("--model and --reference go with --add", param_hint="--model")
        if not reference:
            raise typer.BadParameter("give the reference files to fit on", param_hint="REFERENCE")
        if len(reference) > 1:
            from ..refit import check_distinct

            check_distinct(reference)
        params = {"features": values["features"], "tagger": values["tagger"], "normalize": values["normalize"],
                  "random_state": values["seed"]}
        return reference, params, {name: values[name] for name in READING_FIXED.values()}, None
    if reference:
        raise typer.BadParameter("with --add, name the model's reference files with --reference", param_hint="--add")
    if model_path is None:
        raise typer.BadParameter("--add needs the model to add to (--model)", param_hint="--add")
    from ..errors import model_error
    from ..multitask import as_multitask
    from ..persistence import load_model
    from ..refit import model_params, union_files

    model = load_model(model_path, tagger=values["tagger"] if _given(ctx, "tagger") else None)
    _check_model_options(ctx, as_multitask(model), values)
    paths = union_files(model, old_references, add)
    reading = model.reference_files_["reading"]
    for option, name in READING_FIXED.items():
        if _given(ctx, name) and values[name] != reading[name]:
            raise model_error("E213", option=option, value=values[name], fixed=f"{name}={reading[name]}")
    family_of = next(iter(as_multitask(model).models_.values())).families_  # kept, whether from records or a TSV
    return paths, model_params(model), reading, {t: f for t, f in family_of.items() if f != t} or None
