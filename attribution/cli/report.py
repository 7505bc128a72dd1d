"""``attribute-teacher report``: render a saved ranking (``rank ... -o result.json``) for an auditor."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from ._app import (
    AUDITOR_OPTION,
    CASE_ID_OPTION,
    CHROMIUM_OPTION,
    ORGANISATION_OPTION,
    QUIET_OPTION,
    app,
    log,
    report_case,
)


@app.command("report")
def report_cli(
    result_path: Path = typer.Argument(..., dir_okay=False,
                                       help="A ranking saved by 'attribute-teacher rank ... -o result.json'."),
    output: Path = typer.Option(..., "--output", "-o", dir_okay=False,
                                help="report.html (self-contained), report.md (PNG plots written beside it) or "
                                     "report.pdf (printed by headless Chromium)."),
    examples: int = typer.Option(0, "--examples", min=0,
                                 help="Show up to N whole outputs per evidence template (kept by 'rank --examples')."),
    chromium: Optional[str] = CHROMIUM_OPTION,
    student: Optional[str] = typer.Option(None, "--student",
                                          help="With a 'rank --group-by' result: the student (group) to report on."),
    case_id: Optional[str] = CASE_ID_OPTION,
    auditor: Optional[str] = AUDITOR_OPTION,
    organisation: Optional[str] = ORGANISATION_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Render a saved ranking as an HTML, Markdown or PDF report (verdict, ranking, evidence, methodology,
    limitations, counts, settings)."""
    from ..errors import input_error
    from ..io import check_outputs
    from ..report import report_files, write_report
    from ..report.validate import one_student

    case = report_case(case_id, auditor, organisation)
    if not result_path.is_file():
        raise input_error("E109", source=str(result_path))
    check_outputs(report_files(output), [result_path])
    if output.suffix.lower() == ".pdf":
        from ..report.pdf import find_chromium

        chromium = find_chromium(chromium)  # E606 before reading anything
    try:
        result = json.loads(result_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise input_error("E105", source=str(result_path), detail=str(err)) from err
    except json.JSONDecodeError as err:
        raise input_error("E101", source=str(result_path), line=err.lineno,
                          detail=f"{err.msg} at column {err.colno}") from err
    except RecursionError:
        raise input_error("E101", source=str(result_path), detail="nested too deeply") from None
    except ValueError as err:  # an integer of more than 4,300 digits
        raise input_error("E101", source=str(result_path), detail=str(err)) from None
    try:
        result = one_student(result, student)
        write_report(result, output, examples=examples, chromium=chromium, case=case)
    except InputError as err:
        if err.code == "E604" and err.source is None:
            err.source = str(result_path)  # name the file the problem is in
        raise
    if "outputs" not in result:
        log("note: the result holds no per-output probabilities, so the report has no per-output plot",
            quiet=quiet)
    log(f"wrote report {output}", quiet=quiet)
