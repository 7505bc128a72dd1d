"""The Typer app, shared options and the error-to-exit-code policy.

Each command lives in its own module of this package and registers itself on
:data:`app` by decorator. Command wrappers stay thin: they parse options, call a
plain library function that returns a dict, and hand it to :func:`emit`.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import io
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import typer

from .. import registry
from ..outputs import to_json

app = typer.Typer(
    name="attribute-teacher",
    help="Which teacher LLM was this small model distilled from? Rank candidate teachers "
    "from a student's outputs.\n\nA bare `attribute-teacher OUTPUTS --reference REF` means `rank`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help is plain text: under Rich markup, '[baselines]' in 'the [baselines] extra' vanished as a style tag.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


def _natural_metavars() -> None:
    """Help shows no type for a flag (typer 0.2x writes ``<bool>``) and ``<file> ...`` for a
    repeatable option (not ``<list[Path]>``). Only the help text changes; parsing does not."""
    import re

    from typer import core

    option = getattr(core, "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if option is None or shown is None or getattr(shown, "natural", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        if self.metavar is None and getattr(self, "is_flag", False):
            return None
        text = shown(self, ctx)
        if isinstance(text, str):
            text = re.sub(r"<list\[(\w+)\]>(\.\.\.)?", lambda m: "<file> ..." if m[1] == "Path" else f"<{m[1]}> ...",
                          text)
        return text

    display_type_rich.natural = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich


_natural_metavars()


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that temporary files are removed on the way out."""


#: The signals received while a command runs (the last one last): an interruption that third-party code turned
#: into another exception on its way out (a Ctrl-C inside an import can surface as a TypeError) still exits 130/143.
RECEIVED: list[int] = []


def _raise_interrupted(signum: int, frame: Any) -> None:
    RECEIVED.append(signum)
    raise KeyboardInterrupt


def _raise_terminated(signum: int, frame: Any) -> None:
    RECEIVED.append(signum)
    raise Terminated()


def install_signal_handlers(handlers: dict[int, Any]) -> dict[int, Any]:
    """Set signal handlers (main thread only); returns the previous ones, for restoring."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}


#: While a command runs: Ctrl-C raises KeyboardInterrupt, SIGTERM raises Terminated (exit 130 / 143).
RUN_HANDLERS: dict[int, Any] = {signal.SIGINT: _raise_interrupted, signal.SIGTERM: _raise_terminated}


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"teacher-attribution {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Which teacher LLM was this small model distilled from?"""

class OutputFormat(str, enum.Enum):
    table = "table"
    json = "json"


class Device(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class VerdictTest(str, enum.Enum):
    """Choices of --verdict-test (attribution.verdicts.VerdictRule.CHOICES; a test checks they agree)."""

    either = "either"
    paired = "paired"
    unlisted = "unlisted"
    both = "both"


def _verdict_test_help() -> str:
    from ..verdicts import VerdictRule

    return "Which test may name a teacher (alpha 0.05): " + "; ".join(
        f"'{name}'{' (default)' if name == 'either' else ''}: when {VerdictRule(name).when}"
        for name in VerdictRule.CHOICES) + "."


# Options shared by several commands (Typer reads these as metadata; reusing them is safe).
FEATURES_HELP = f"Feature set: {registry.feature_sets.help()}."
TAGGER_HELP = f"Tagger: {registry.taggers.help()}, or an installed spaCy package name."
TASK_OPTION = typer.Option(None, "--task", help="Keep only records of this task.")
FEATURES_OPTION = typer.Option(registry.DEFAULT_FEATURE_SET, "--features", help=FEATURES_HELP)
TAGGER_OPTION = typer.Option("spacy", "--tagger", help=TAGGER_HELP)
NORMALIZE_OPTION = typer.Option(True, "--normalize/--no-normalize", help="Remove generation artifacts first.")
TEXT_FIELD_OPTION = typer.Option(None, "--text-field", help="Field holding the text (default: output, then text).")
SKIP_INVALID_OPTION = typer.Option(False, "--skip-invalid",
                                   help="Skip bad records (each reported on stderr) instead of stopping.")
MAX_CHARS_OPTION = typer.Option(100_000, "--max-chars", min=0, help="Reject longer texts (0 = no limit).")
FORMAT_OPTION = typer.Option(OutputFormat.table, "--format", "-f", help="table or json.")
QUIET_OPTION = typer.Option(False, "--quiet", "-q", help="No progress or counts on stderr.")
CHROMIUM_OPTION = typer.Option(None, "--chromium", help="Chromium binary for a PDF report (default: "
                               "$ATTRIBUTION_CHROMIUM, else chromium on PATH).")
CASE_ID_OPTION = typer.Option(None, "--case-id", help="Case ID shown in the report and its running header.")
AUDITOR_OPTION = typer.Option(None, "--auditor", help="Auditor named in the report.")
ORGANISATION_OPTION = typer.Option(None, "--organisation", help="Organisation named in the report.")
VERDICT_TEST_OPTION = typer.Option(VerdictTest.either, "--verdict-test", case_sensitive=False,
                                   help=_verdict_test_help())


def report_case(case_id: str | None, auditor: str | None, organisation: str | None) -> Any:
    """The report's case details from the three options (``E608`` for a value that is not one short line)."""
    from ..report.case import case_details

    return case_details({"case_id": case_id, "auditor": auditor, "organisation": organisation},
                        names={"case_id": "--case-id", "auditor": "--auditor", "organisation": "--organisation"})


FAMILIES_OPTION = typer.Option(None, "--families", dir_okay=False,
                               help="Tab-separated teacher -> family table (columns 'teacher' and 'family', e.g. the "
                               "bank's candidates.tsv), for references without a 'family' field.")
WORKERS_OPTION = typer.Option(None, "--workers", min=1, help="Tag on a local Dask cluster of N single-threaded "
                              "worker processes, started and closed here (needs the dask extra; the same results).")
SCHEDULER_OPTION = typer.Option(None, "--scheduler", help="Tag on an existing Dask cluster: its scheduler's "
                                "address, e.g. tcp://10.0.0.5:8786 (needs the dask extra; the same results).")
NO_CACHE_OPTION = typer.Option(False, "--no-cache", help="Neither read nor write the tag cache (tags kept on disk "
                               "between runs, in $ATTRIBUTION_CACHE_DIR, default ~/.cache/teacher-attribution).")
OUTPUT_JSON_OPTION = typer.Option(None, "--output", "-o", dir_okay=False, allow_dash=True,
                                  help="Write the JSON here instead of printing it ('-': stdout).")
DEVICE_OPTION = typer.Option(Device.auto, "--device", help="auto (CUDA if available), cpu or cuda.")
THREADS_OPTION = typer.Option(0, "--threads", min=0, help="torch CPU threads while the command runs (0: torch's "
                              "default).")

#: Each short flag abbreviates one long option, in every command that has it (tests/test_cli.py checks).
SHORT_FLAGS = {"-r": "--reference", "-s": "--students", "-t": "--teacher-model", "-m": "--model",
               "-p": "--prompts", "-o": "--output", "-f": "--format", "-q": "--quiet", "-h": "--help", "-n": "--top"}


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """Set environment variables for a command (``ctx.with_resource``), then put back what was there."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def use_tag_cache(ctx: typer.Context, no_cache: bool) -> None:
    """Check the tag cache's settings before any work (E306), and with ``--no-cache`` turn the cache off until
    the command ends, for this process and the local Dask workers it starts (call before :func:`tag_on_cluster`)."""
    from ..tagcache import ENV_OFF, settings

    if no_cache:
        ctx.with_resource(environ(**{ENV_OFF: "1"}))
    settings()


def tag_on_cluster(ctx: typer.Context, workers: int | None, scheduler: str | None, *, quiet: bool) -> Any:
    """With ``--workers`` or ``--scheduler``, tagging goes to Dask until the command ends (the local
    cluster and the connection are closed on exit, error or Ctrl-C); without them nothing changes.
    Returns the Dask client (``None`` without them)."""
    if workers is None and scheduler is None:
        return None
    if workers is not None and scheduler is not None:
        raise typer.BadParameter("give --workers or --scheduler, not both", param_hint="--workers")
    from ..parallel import dask_tagging

    backend = ctx.with_resource(dask_tagging(n_workers=workers, scheduler=scheduler))
    where = f"{workers} local worker process(es)" if workers is not None else f"the Dask cluster at {scheduler}"
    log(f"tagging on {where} ({backend.n_workers} worker thread(s))", quiet=quiet)
    return backend.client


def echo(message: Any, *, err: bool = False) -> None:
    """Print with control characters made visible: labels and file names come from untrusted files."""
    from ..sanitize import for_terminal

    typer.echo(for_terminal(message), err=err)


def log(message: str, *, quiet: bool = False) -> None:
    """Counts and notes go to stderr, never stdout; each is one line (a label cannot break it:
    :func:`attribution.sanitize.one_line`)."""
    from ..sanitize import one_line

    if not quiet:
        typer.echo(one_line(message), err=True)


def report_skipped(skipped: list, *, quiet: bool = False) -> None:
    """Name every record skipped under --skip-invalid, FILE:LINE first."""
    for err in skipped:
        log(f"skipped {err}", quiet=quiet)
    if skipped:
        log(f"skipped {len(skipped)} invalid record(s)", quiet=quiet)


class Tally:
    """Iterate over a reader's records, counting them per task (to say why nothing was left)."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.tasks: Counter = Counter()

    def __iter__(self) -> Iterator[Any]:
        for record in self.reader:
            self.tasks[record.task] += 1
            yield record


def nothing_left(reader: Any, tasks: Counter, task: str | None, *, untagged_match: bool = True) -> Exception | None:
    """The true reason a file gave nothing to work on: empty, all invalid, or no record of ``task``
    (records without a task count for any ``task`` when ``untagged_match``)."""
    from ..errors import input_error

    if reader.n_read == 0:
        return reader.no_records_error()
    if task is not None and tasks[task] + (tasks[None] if untagged_match else 0) == 0:
        return input_error("E117", source=reader.source, task=task,
                           known=", ".join(sorted(str(t) for t in tasks)))
    return None


def read_inputs(reference: list[Path], students: list[Path], *, task: str | None, quiet: bool,
                **reader_options: Any) -> tuple[list, list, list]:
    """Read reference and student files (each repeatable), keep one task, report skipped records.

    Student records without a task are taken as ``task``. Fails with the true reason when the
    references or the students come out empty. Returns (references, students, skipped errors).
    """
    import dataclasses

    from ..io import RecordReader

    ref_readers = [Tally(RecordReader(path, require_teacher=True, **reader_options)) for path in reference]
    stud_readers = [Tally(RecordReader(path, **reader_options)) for path in students]
    refs = [r for tally in ref_readers for r in tally if task is None or r.task == task]
    studs = [r if r.task is not None or task is None else dataclasses.replace(r, task=task)
             for tally in stud_readers for r in tally if task is None or r.task in (task, None)]
    skipped = [err for tally in ref_readers + stud_readers for err in tally.reader.skipped]
    report_skipped(skipped, quiet=quiet)
    for records, tallies, untagged_match in ((refs, ref_readers, False), (studs, stud_readers, True)):
        problems = [nothing_left(t.reader, t.tasks, task, untagged_match=untagged_match) for t in tallies]
        if not records and any(problems):
            raise next(p for p in problems if p)
    return refs, studs, skipped


def output_file(path: Path | None) -> Path | None:
    """The file ``-o`` names, or None for stdout (no ``-o``, or ``-o -``)."""
    return None if path is None or str(path) == "-" else path


def emit(result: dict[str, Any], fmt: OutputFormat, render_table: Callable[[dict[str, Any]], str],
         output: Path | None = None, *, quiet: bool = False) -> None:
    """Print ``result`` on stdout as JSON or as a table; or, given ``output`` (see :func:`output_file`),
    write the JSON there atomically instead, with a note on stderr, so stdout stays quiet."""
    from ..io import atomic_write

    if output is not None:
        with atomic_write(output) as handle:
            handle.write(to_json(result) + "\n")
        log(f"wrote {output}", quiet=quiet)
    elif fmt is OutputFormat.json:
        typer.echo(to_json(result))
    else:
        echo(render_table(result))


def _shortened(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 3:]}"


def run_app(argv: list[str]) -> int:
    """Run the app and translate exceptions into exit codes: 0 ok; for a coded error the code's status
    (:func:`attribution.errors.exit_status`: 1 when the environment failed, 2 for the command or its input);
    2 for usage errors and a missing file; 1 unexpected (traceback only with --debug); 130 interrupted."""
    from ..errors import AttributionError, exit_status

    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    RECEIVED.clear()
    try:
        code = app(args=argv, prog_name="attribute-teacher", standalone_mode=False)
    except KeyboardInterrupt:
        echo("interrupted", err=True)
        return EXIT_INTERRUPTED
    except Terminated:
        echo("terminated", err=True)
        return EXIT_TERMINATED
    except FileNotFoundError as err:
        log(f"error: {err}")
        return EXIT_USAGE
    except AttributionError as err:
        log(f"error: {err}")
        status = exit_status(err.code)  # an uncoded error: bad values are usage, anything else unexpected
        return status if status is not None else EXIT_USAGE if isinstance(err, ValueError) else EXIT_ERROR
    except Exception as err:  # noqa: BLE001 - the one place that catches everything
        if RECEIVED:  # what a signal left behind, whatever its type: the interruption is the cause
            interrupted = RECEIVED[-1] == signal.SIGINT
            echo("interrupted" if interrupted else "terminated", err=True)
            return EXIT_INTERRUPTED if interrupted else EXIT_TERMINATED
        import click

        # typer >= 0.2x raises exceptions of its own vendored click, not of the installed click
        usage_errors = (click.ClickException,
                        *(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"))
        if isinstance(err, (click.exceptions.Abort, typer.Abort)):
            typer.echo("aborted", err=True)
            return EXIT_INTERRUPTED
        if isinstance(err, usage_errors):
            shown = io.StringIO()
            cast(Any, err).show(file=shown)  # the message may quote a hostile option value
            echo(shown.getvalue().rstrip("\n"), err=True)
            return EXIT_USAGE
        if isinstance(err, (click.exceptions.Exit, typer.Exit)):
            return err.exit_code
        from ..errors import input_error
        from ..outputs import NO_SPACE_ERRNOS, write_error

        if isinstance(err, OSError) and err.errno in (*NO_SPACE_ERRNOS, errno.ENAMETOOLONG):
            # stdout redirected to a full disk; a name too long where the file system first said so
            coded = (write_error(err, err.filename or "(standard output)") if err.errno != errno.ENAMETOOLONG
                     else input_error("E126", path=_shortened(str(err.filename))))
            log(f"error: {coded}")
            return exit_status(coded.code) or EXIT_ERROR
        if debug:
            raise
        log(f"error: unexpected {type(err).__name__}: {err} (rerun with --debug for a traceback)")
        return EXIT_ERROR
    if code == EXIT_INTERRUPTED:  # typer turns KeyboardInterrupt into a silent 130
        echo("interrupted", err=True)
    return code if isinstance(code, int) else EXIT_OK
