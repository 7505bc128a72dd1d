"""``attribute-teacher data paper-qa`` (the authors' released QA outputs), ``data alpacaeval`` (the
AlpacaEval provenance benchmark) and ``data alpacaeval-bank`` (its 26-candidate bank), written as JSON Lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from ._app import FORMAT_OPTION, QUIET_OPTION, OutputFormat, app, emit, log

data_app = typer.Typer(help="Released data sets: fetch (or read a local copy) and export as JSON Lines.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


#: Options of both AlpacaEval builders.
STUDENTS_OPTION = typer.Option("", "--students", help="Comma-separated AlpacaEval models used as students "
                               "(labelled with their documented teacher); default the shared benchmark's eleven.")
SPLIT_SEED_OPTION = typer.Option(0, "--seed", help="Seed of the reference/audit split of the instructions.")
RESULTS_CACHE_OPTION = typer.Option(None, "--cache-dir", file_okay=False, help="Where <model>/model_outputs.json "
                                    "live or are downloaded to (a copy of AlpacaEval's results/ works offline); "
                                    "default ~/.cache/teacher-attribution/alpaca_eval.")
DOWNLOAD_OPTION = typer.Option(True, "--download/--no-download", help="Fetch missing files from GitHub.")


def _names(value: str) -> list[str]:
    """The names of a comma-separated list."""
    return [n.strip() for n in value.split(",") if n.strip()]


def _table(result: dict[str, Any]) -> str:
    from ..sanitize import one_line

    lines = [f"{one_line(name):<32} {count:>6} records" for name, count in result["files"].items()]
    lines.append(f"({result['skipped']} invalid record(s) skipped)")
    return "\n".join(lines)


@data_app.command("paper-qa")
def paper_qa_cli(
    output: Path = typer.Option(..., "--output", "-o", file_okay=False,
                                help="Directory to write {task}_teacher.jsonl and {task}_student.jsonl into."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", file_okay=False,
                                            help="Local copy (JSON Lines layout or the authors' CSVs); default "
                                            "$TEACHER_ATTRIBUTION_DATA, else download into the cache."),
    tasks: str = typer.Option("", "--tasks", help="Comma-separated tasks (commonsenseqa, openbookqa, quarel); "
                              "default all the source holds."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", file_okay=False,
                                             help="Download cache (default ~/.cache/teacher-attribution/paper_qa)."),
    download: bool = DOWNLOAD_OPTION,
    fmt: OutputFormat = FORMAT_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Export the paper's released QA outputs (teachers and GPT-2 students) as JSON Lines."""
    from ..datasets import export_paper_qa

    names = [t.strip() for t in tasks.split(",") if t.strip()] or None
    result = export_paper_qa(output, tasks=names, data_dir=data_dir, cache_dir=cache_dir, download=download)
    for line in result.pop("skipped_records"):
        log(f"skipped {line}", quiet=quiet)
    emit(result, fmt, _table)


@data_app.command("alpacaeval")
def alpacaeval_cli(
    output: Path = typer.Option(..., "--output", "-o", file_okay=False,
                                help="Directory to write teachers_reference/teachers_audit/students_audit.jsonl into."),
    teachers: str = typer.Option("", "--teachers", help="Comma-separated AlpacaEval models used as candidate "
                                 "teachers; default the five of the shared benchmark."),
    students: str = STUDENTS_OPTION,
    seed: int = SPLIT_SEED_OPTION,
    cache_dir: Optional[Path] = RESULTS_CACHE_OPTION,
    download: bool = DOWNLOAD_OPTION,
    fmt: OutputFormat = FORMAT_OPTION,
) -> None:
    """Build the AlpacaEval provenance benchmark from AlpacaEval's published per-model outputs."""
    from ..datasets import ALPACAEVAL_STUDENTS, ALPACAEVAL_TEACHERS, build_alpacaeval

    result = build_alpacaeval(output, teachers=_names(teachers) or ALPACAEVAL_TEACHERS,
                              students=_names(students) or ALPACAEVAL_STUDENTS, seed=seed, cache_dir=cache_dir,
                              download=download)
    emit(result, fmt, _layout_table)


@data_app.command("alpacaeval-bank")
def alpacaeval_bank_cli(
    output: Path = typer.Option(..., "--output", "-o", file_okay=False,
                                help="Directory to write the bank into (teachers_reference/teachers_audit/"
                                "students_audit/prompts_audit.jsonl, candidates.tsv)."),
    teachers: str = typer.Option("", "--teachers", help="Comma-separated bank candidates to keep; default all 26."),
    students: str = STUDENTS_OPTION,
    seed: int = SPLIT_SEED_OPTION,
    cache_dir: Optional[Path] = RESULTS_CACHE_OPTION,
    download: bool = DOWNLOAD_OPTION,
    fmt: OutputFormat = FORMAT_OPTION,
) -> None:
    """Build the 26-candidate AlpacaEval bank (every candidate's family) from AlpacaEval's published outputs."""
    from ..datasets import ALPACAEVAL_STUDENTS, build_alpacaeval_bank

    result = build_alpacaeval_bank(output, teachers=_names(teachers) or None,
                                   students=_names(students) or ALPACAEVAL_STUDENTS, seed=seed, cache_dir=cache_dir,
                                   download=download)
    emit(result, fmt, _layout_table)


def _layout_table(result: dict[str, Any]) -> str:
    """The files an AlpacaEval builder wrote, and how many empty outputs it left out."""
    return _table({**result, "skipped": sum(result["empty"].values())})
