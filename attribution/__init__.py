"""teacher-attribution: which teacher LLM was this small model distilled from?

Quick start::

    from attribution import TeacherAttributor, read_records
    refs = read_records("teachers.jsonl", require_teacher=True)
    model = TeacherAttributor().fit([r.output for r in refs], [r.teacher for r in refs])
    model.rank([r.output for r in read_records("student.jsonl")])
"""

__version__ = "0.1.0"

from .errors import AttributionError, InputError, ModelError, NotFittedError  # noqa: E402
from .io import Record, RecordReader, read_records  # noqa: E402

__all__ = [
    "__version__",
    "AttributionError",
    "InputError",
    "ModelError",
    "NotFittedError",
    "Record",
    "RecordReader",
    "read_records",
]
