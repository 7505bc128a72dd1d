"""teacher-attribution: which teacher LLM was this small model distilled from?

Quick start::

    from attribution import TeacherAttributor, read_records
    refs = read_records("teachers.jsonl", require_teacher=True)
    model = TeacherAttributor().fit([r.output for r in refs], [r.teacher for r in refs])
    model.rank([r.output for r in read_records("student.jsonl")])

Importing the package loads no spaCy model and no torch: taggers load on first use. The names
below are imported on first access, so the command line starts (and handles Ctrl-C) at once.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> module that defines it (``Attributor`` is a short alias of ``TeacherAttributor``).
_EXPORTS = {
    "AttributionError": "errors", "InputError": "errors", "ModelError": "errors", "NotFittedError": "errors",
    "PosTemplateVectorizer": "features", "SequenceNgramVectorizer": "features", "WordNgramVectorizer": "features",
    "Record": "io", "RecordReader": "io", "read_records": "io",
    "MultiTaskAttributor": "multitask", "StudentEvidence": "inference", "TeacherAttributor": "estimator",
    "load_model": "persistence", "save_model": "persistence",
    "Normalizer": "normalize", "normalize_text": "normalize",
    "AuditBatch": "result", "AuditResult": "result", "audit_student": "result", "rank_students": "result",
    "TaggedDoc": "tagging", "get_tagger": "tagging",
    "clear_caches": "runtime",
}


def __getattr__(name: str) -> Any:
    if name == "Attributor":
        name = "TeacherAttributor"
    if name not in _EXPORTS:
        raise AttributeError(f"module 'attribution' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS, "Attributor"])


__all__ = [
    "__version__",
    "Attributor",
    "AttributionError",
    "AuditBatch",
    "AuditResult",
    "InputError",
    "ModelError",
    "MultiTaskAttributor",
    "Normalizer",
    "NotFittedError",
    "PosTemplateVectorizer",
    "Record",
    "RecordReader",
    "SequenceNgramVectorizer",
    "StudentEvidence",
    "TaggedDoc",
    "TeacherAttributor",
    "WordNgramVectorizer",
    "audit_student",
    "clear_caches",
    "get_tagger",
    "load_model",
    "normalize_text",
    "rank_students",
    "read_records",
    "save_model",
]
