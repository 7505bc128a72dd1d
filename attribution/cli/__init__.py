"""Command-line interface: ``attribute-teacher`` (also ``python -m attribution``).

Commands register themselves on the shared Typer app when their module is imported.
Heavy libraries (spaCy models, torch) are imported inside commands, so ``--help`` is instant.
"""

from __future__ import annotations

import os
import signal
import sys


def _exit_at_once(signum: int, frame: object) -> None:
    """Ctrl-C or SIGTERM while the CLI is still importing: nothing to clean up yet, so leave
    quietly with the conventional code instead of a traceback from inside an import."""
    os.write(2, b"interrupted\n" if signum == signal.SIGINT else b"terminated\n")
    os._exit(128 + signum)


def _importing_handlers() -> dict:
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, _exit_at_once) for s in (signal.SIGINT, signal.SIGTERM)}


#: Started as the command line (console script or ``python -m attribution``), not imported by a library
#: user: then the quiet exit stays in place until main() takes over, leaving no gap in between.
_AS_CLI = (os.path.basename(sys.argv[0]) == "attribute-teacher"
           or sys.argv[0].endswith(os.path.join("attribution", "__main__.py")))
_previous_handlers = _importing_handlers()
try:
    import importlib

    from ._app import EXIT_INTERRUPTED, EXIT_TERMINATED, RUN_HANDLERS, Terminated, app, install_signal_handlers, run_app
finally:  # a library import leaves the caller's handlers as they were
    for _signum, _handler in _previous_handlers.items():
        if not _AS_CLI:
            signal.signal(_signum, _handler)

#: Command modules, imported for their registration side effect. A module whose optional
#: dependencies are missing still registers; it fails with a clear message when run.
COMMAND_MODULES = ("rank", "evaluate", "tag", "baseline", "distill", "report", "data", "audit", "probes")
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
    previous = install_signal_handlers(RUN_HANDLERS)  # interruptions become exceptions: temp files go
    try:
        _register_commands()
        args = list(sys.argv[1:] if argv is None else argv)
        code = run_app(_with_default_command(args))
    except KeyboardInterrupt:
        os.write(2, b"interrupted\n")
        code = EXIT_INTERRUPTED
    except Terminated:
        os.write(2, b"terminated\n")
        code = EXIT_TERMINATED
    finally:
        install_signal_handlers(previous)
    if argv is None:
        if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
            # CPython remembers a Ctrl-C that interrupted code an extension ran through PyRun_* (e.g.
            # pydantic-core while importing) even once it was handled, and would then kill the process
            # with SIGINT at exit: leave directly, with the code (temporary files are already gone).
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:  # noqa: BLE001 - a closed pipe must not change the exit code
                    pass
            os._exit(code)
        sys.exit(code)
    return code


__all__ = ["app", "main"]
