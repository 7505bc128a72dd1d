"""teacher-attribution: which teacher LLM was this small model distilled from?

Quick start::

    from attribution import TeacherAttributor, read_records
    refs = read_records("teachers.jsonl", require_teacher=True)
    model = TeacherAttributor().fit([r.output for r in refs], [r.teacher for r in refs])
    model.rank([r.output for r in read_records("student.jsonl")])

Importing the package loads no spaCy model and no torch: taggers load on first use.
"""

__version__ = "0.1.0"

from .errors import AttributionError, InputError, ModelError, NotFittedError  # noqa: E402
from .features import PosTemplateVectorizer, SequenceNgramVectorizer, WordNgramVectorizer  # noqa: E402
from .io import Record, RecordReader, read_records  # noqa: E402
from .models import MultiTaskAttributor, StudentEvidence, TeacherAttributor, load_model, save_model  # noqa: E402
from .normalize import Normalizer, normalize_text  # noqa: E402
from .tagging import TaggedDoc, get_tagger  # noqa: E402

#: Short alias used in the docs and issues.
Attributor = TeacherAttributor

__all__ = [
    "__version__",
    "Attributor",
    "AttributionError",
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
    "get_tagger",
    "load_model",
    "normalize_text",
    "read_records",
    "save_model",
]
