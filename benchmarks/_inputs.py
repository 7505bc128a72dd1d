"""Input files of a benchmark folder, shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def reference_and_student_files(data_dir: Path) -> tuple[list[Path], list[Path]]:
    """The reference files and the student files of ``data_dir``, sorted.

    The demo folder holds both ``teachers.jsonl`` and the per-teacher ``teacher_*.jsonl`` it was built
    from: when ``teachers.jsonl`` is there, only it is read, so no reference is counted twice.
    """
    combined = (data_dir / "teachers.jsonl").exists()
    refs = sorted(p for p in data_dir.glob("*.jsonl") if p.name == "teachers.jsonl" or "reference" in p.name
                  or ("teacher" in p.name and not combined))
    studs = sorted(p for p in data_dir.glob("*.jsonl") if "student" in p.name)
    if not refs or not studs:
        sys.exit(f"{data_dir}: need teacher (or teachers.jsonl) and *student*.jsonl files")
    return refs, studs


def records(paths: list[Path], **options: Any) -> Iterator[Any]:
    """Every valid record of ``paths`` in order (invalid ones skipped, as the CLI's --skip-invalid)."""
    from attribution.io import RecordReader

    for path in paths:
        yield from RecordReader(path, skip_invalid=True, **options)


def alpacaeval_records(data_dir: Path) -> tuple[list[Any], list[Any], list[Any]]:
    """The AlpacaEval provenance folder's references, the candidates' answers to the students' prompts (the
    audit half: setting B fits on both) and the students' outputs."""
    from attribution.io import read_records

    return (read_records(data_dir / "teachers_reference.jsonl", require_teacher=True),
            read_records(data_dir / "teachers_audit.jsonl", require_teacher=True),
            read_records(data_dir / "students_audit.jsonl"))
