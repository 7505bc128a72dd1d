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


def provenance(root: Path, argv: list[str]) -> dict[str, Any]:
    """Commit (and whether the tree had other changes than the artifact), UTC date and command of a benchmark run."""
    import datetime
    import shlex
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False).stdout.strip()

    changed = [line[3:] for line in git("status", "--porcelain").splitlines()
               if not line[3:].endswith("error_rates.json")]
    script = Path(argv[0]).resolve()
    name = script.relative_to(root) if script.is_relative_to(root) else Path(script.name)
    return {"commit": git("rev-parse", "HEAD") or "unknown", "dirty": bool(changed),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": shlex.join(["python", str(name), *map(_no_directory, argv[1:])])}


def _no_directory(arg: str) -> str:
    """An absolute path as its file name (``--model /somewhere/bank.npz`` -> ``--model bank.npz``): the artifact
    ships with the package, and no path of the machine that ran the benchmark belongs there."""
    option, sep, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    return option + sep + Path(value).name if Path(value).is_absolute() else arg


def record_artifact(path: Path, key: str, run: dict[str, Any]) -> None:
    """Put ``run`` under ``key`` in the error-rate artifact at ``path`` (the other runs kept), checked by the
    package's reader first, then written whole in one replace (never half a file)."""
    import json
    import os
    import tempfile

    from attribution.report.error_rates import FORMAT, VERSION, load_artifact

    data: dict[str, Any] = {"format": FORMAT, "version": VERSION, "runs": {}}
    if path.exists():
        load_artifact(path)  # a damaged artifact stops here (E609) instead of being overwritten
        data = json.loads(path.read_text(encoding="utf-8"))
    data["runs"][key] = run
    data["runs"] = dict(sorted(data["runs"].items()))
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, suffix=".tmp", delete=False)
    with handle:
        json.dump(data, handle, indent=1)
        handle.write("\n")
    try:
        load_artifact(handle.name)
        os.replace(handle.name, path)
    finally:
        if os.path.exists(handle.name):
            os.unlink(handle.name)
