"""Command-line interface: ``attribute-teacher`` (also ``python -m attribution``).

Commands register themselves on the shared Typer app when their module is imported.
Heavy libraries (spaCy models, torch) are imported inside commands, so ``--help`` is instant.
"""

from __future__ import annotations

import importlib
import sys

from ._app import app, run_app

#: Command modules, imported for their registration side effect. A module whose optional
#: dependencies are missing still registers; it fails with a clear message when run.
COMMAND_MODULES = ("rank", "evaluate", "tag", "baseline", "distill", "report", "data", "audit")
DEFAULT_COMMAND = "rank"


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":
                raise


def _with_default_command(argv: list[str]) -> list[str]:
    """``attribute-teacher outputs.jsonl ...`` means ``attribute-teacher rank outputs.jsonl ...``."""
    names = {cmd.name for cmd in app.registered_commands} | {g.name for g in app.registered_groups}
    head = next((a for a in argv if a != "--debug"), None)
    if head is None or head in names or head in ("-h", "--help", "--version"):
        return argv
    return [DEFAULT_COMMAND, *argv]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    _register_commands()
    args = list(sys.argv[1:] if argv is None else argv)
    code = run_app(_with_default_command(args))
    if argv is None:
        sys.exit(code)
    return code


__all__ = ["app", "main"]
