"""``attribute-teacher audit audit.toml``: a whole audit from one config file."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ._app import FORMAT_OPTION, QUIET_OPTION, OutputFormat, app, emit, log


@app.command("audit")
def audit_cli(
    config: Path = typer.Argument(..., dir_okay=False, help="Audit config (TOML); see examples/audit.toml."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "--output", "-o", file_okay=False,
                                              help="Folder for collected outputs, result.json and the report "
                                              "(required unless --check)."),
    check: bool = typer.Option(False, "--check", help="Only read and check the config; query nothing."),
    fmt: OutputFormat = FORMAT_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Collect missing outputs from endpoints (resumable), fit on the teachers, rank the student.

    Writes OUTPUT_DIR (--output-dir)/result.json, the report and a copy of the config; teacher and student outputs
    queried from endpoints go to OUTPUT_DIR/teachers/NAME.jsonl and OUTPUT_DIR/student.jsonl, each
    with its manifest. Running it again resumes: finished outputs are not queried twice.
    """
    from ..audit import load_config, run_audit
    from .rank import ranking_table

    settings = load_config(config)
    if check:
        from ..sanitize import one_line

        sources = [("student", settings.student)] + [("teacher", t) for t in settings.teachers]
        lines = [f"{role:<8} {one_line(s.label):<24} "
                 + one_line(f"endpoint {s.model}" if s.endpoint else f"file {s.file}") for role, s in sources]
        typer.echo("\n".join([f"{one_line(config)}: ok", *lines]))
        return
    if output_dir is None:
        raise typer.BadParameter("give the folder to write into: --output-dir DIR", param_hint="'--output-dir'")
    result = run_audit(settings, output_dir, progress=not quiet, log=lambda message: log(message, quiet=quiet))
    log(f"wrote {output_dir / 'result.json'}", quiet=quiet)
    emit(result, fmt, ranking_table)
