"""Shared fixtures: repository paths, the fixture corpus, the real spaCy tagger, a CLI runner.

Expensive objects (the tagger, fitted models) are session-scoped. Nothing here needs
``../shared``; tests that read the released paper outputs use the ``paper_qa`` fixture,
which skips with a reason when the folder is absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Small hand-written corpus (see tests/data/README.md): three teachers, two tasks, students.
DATA = REPO / "tests" / "data"
#: The released paper outputs (QA tasks), shared between checkouts; optional.
PAPER_QA = Path(__file__).parents[1] / ".." / "shared" / "data" / "paper_qa"


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
def paper_qa() -> Path:
    """The released paper outputs; skips the test when ``../shared/data/paper_qa`` is absent."""
    if not (PAPER_QA / "openbookqa_teacher.jsonl").is_file():
        pytest.skip(f"released paper outputs not found at {PAPER_QA.resolve()} (needs the ../shared checkout)")
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


def run_cli(*args: Any, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m attribution ARGS`` in a subprocess; returns the completed process (text mode)."""
    return subprocess.run([sys.executable, "-m", "attribution", *map(str, args)], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def cli() -> Callable[..., subprocess.CompletedProcess]:
    """The :func:`run_cli` helper as a fixture."""
    return run_cli
