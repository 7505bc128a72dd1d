"""The reference files behind a model, and adding references to a fitted model.

A model fitted from files (``attribute-teacher fit``, :func:`fit_files`) records them in its file: each
file's name, SHA-256, and how many of its outputs were fitted on per teacher, and how the files were read
(task, text field, ``--skip-invalid``, ``--max-chars``): :attr:`reference_files_` on the model, the
``reference_files`` key of the model header (:mod:`attribution.persistence`).

**Adding candidates or references** (``attribute-teacher fit --add NEW.jsonl --model M.npz -r OLD.jsonl``,
:func:`add_references`) refits on the union: the model's reference files, checked against the digests it
recorded and taken in the order it recorded, then the new files, with the model's settings. The result is
the model ``fit OLD.jsonl NEW.jsonl`` gives, byte for byte. It has to be a refit: the vocabulary is the
``top_k`` most frequent n-grams over *all* references and the classifiers are fitted on all of them, so
new references change both. What makes it cheap is the tag cache (:mod:`attribution.tagcache`): the old
texts' tags are read back from disk, so only the new texts are tagged; the n-gram counts and the logistic
regressions are computed again (on the 26-candidate bank these take most of the time: ``docs/speed.md``).
The old reference files are needed because a model keeps only the selected n-grams' weights, not the
references' own n-grams, which the new vocabulary and the refitted classifiers depend on.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import model_error
from .io import DEFAULT_MAX_CHARS, Record, read_records
from .multitask import MultiTaskAttributor, as_multitask

#: How reference files are read (the keys of ``reference_files_["reading"]``) and the defaults.
READING_DEFAULTS: dict[str, Any] = {"task": None, "text_field": None, "skip_invalid": False,
                                    "max_chars": DEFAULT_MAX_CHARS}


def describe_files(paths: Sequence[str | os.PathLike], records: Sequence[Iterable[Record]],
                   reading: dict[str, Any]) -> dict[str, Any]:
    """What a model records of the files it was fitted on: per file (``records``: the records fitted on from
    each path) its name, SHA-256, outputs fitted on and their count per teacher; and the ``reading`` options."""
    from .io import file_digest

    files = []
    for path, kept in zip(paths, records, strict=True):
        teachers = Counter(str(r.teacher) for r in kept)
        files.append({**file_digest(path), "outputs": sum(teachers.values()),
                      "teachers": dict(sorted(teachers.items()))})
    return {"files": files, "reading": {**READING_DEFAULTS, **reading}}


def records_by_file(paths: Sequence[str | os.PathLike], records: Sequence[Record]) -> list[list[Record]]:
    """``records`` split by the file they were read from (their ``source``), one list per path."""
    by_source: dict[str, list[Record]] = {str(path): [] for path in paths}
    for record in records:
        by_source[str(record.source)].append(record)
    return [by_source[str(path)] for path in paths]


def union_files(model: Any, references: Sequence[str | os.PathLike], add: Sequence[str | os.PathLike]) -> list[Path]:
    """The files a refit with ``add`` reads: the model's reference files, each given in ``references`` and
    matched by SHA-256, in the order the model recorded them, then ``add`` in order.

    Raises ``E220`` when the model records no files, ``E221`` for a file of ``references`` the model was not
    fitted on, ``E222`` for a recorded file not given, ``E223`` for a file given twice or already in the model.
    """
    from .io import file_digest

    recorded = getattr(model, "reference_files_", None)
    if not recorded:
        raise model_error("E220")
    known = ", ".join(f"{f['name']} (SHA-256 {f['sha256'][:12]}...)" for f in recorded["files"])
    given: dict[str, Path] = {}
    for path in references:
        digest = file_digest(path)["sha256"]
        if digest in given:
            raise model_error("E223", path=path, other=given[digest], what="given twice")
        given[digest] = Path(path)
    wanted = {f["sha256"] for f in recorded["files"]}
    for digest, path in given.items():
        if digest not in wanted:
            raise model_error("E221", path=path, digest=digest[:12], known=known)
    missing = [f for f in recorded["files"] if f["sha256"] not in given]
    if missing:
        raise model_error("E222", missing=", ".join(f"{f['name']} (SHA-256 {f['sha256'][:12]}...)" for f in missing))
    for path in add:
        digest = file_digest(path)["sha256"]
        if digest in given:
            raise model_error("E223", path=path, other=given[digest], what="already a reference file of the model")
        given[digest] = Path(path)
    return [given[f["sha256"]] for f in recorded["files"]] + [Path(p) for p in add]


def check_distinct(paths: Sequence[str | os.PathLike]) -> None:
    """Refuse a file given twice (the same SHA-256): its references would count twice (E223)."""
    from .io import file_digest

    seen: dict[str, str | os.PathLike] = {}
    for path in paths:
        digest = file_digest(path)["sha256"]
        if digest in seen:
            raise model_error("E223", path=path, other=seen[digest], what="given twice")
        seen[digest] = path


def fit_files(paths: Sequence[str | os.PathLike], *, task: str | None = None, text_field: str | None = None,
              skip_invalid: bool = False, max_chars: int = DEFAULT_MAX_CHARS,
              progress: Callable[[int], None] | None = None, **params: Any) -> MultiTaskAttributor:
    """Fit on the teachers' references in ``paths`` (read in order, as one list) and record the files in the
    model (:func:`describe_files`); ``params`` go to :class:`~attribution.estimator.TeacherAttributor`.
    What ``attribute-teacher fit PATH ...`` does (the same model bytes)."""
    from .api import fit_reference

    check_distinct(paths)
    options = {"text_field": text_field, "skip_invalid": skip_invalid, "max_chars": max_chars}
    per_file = [[r for r in read_records(path, require_teacher=True, **options) if task is None or r.task == task]
                for path in paths]
    model = fit_reference([r for kept in per_file for r in kept], progress=progress, **params)
    model.reference_files_ = describe_files(paths, per_file, {"task": task, **options})
    return model


def model_params(model: Any) -> dict[str, Any]:
    """The estimator parameters a model was fitted with (its first task's: they are shared)."""
    return next(iter(as_multitask(model).models_.values())).get_params()


def add_references(model: Any, add: Sequence[str | os.PathLike], references: Sequence[str | os.PathLike], *,
                   progress: Callable[[int], None] | None = None) -> MultiTaskAttributor:
    """``model`` refitted on its reference files plus ``add`` (see the module doc): the model
    :func:`fit_files` gives on :func:`union_files`, with the model's parameters and reading options.
    Tags of texts fitted on before come from the tag cache, when it holds them."""
    paths = union_files(model, references, add)
    reading = model.reference_files_["reading"]
    return fit_files(paths, progress=progress, **reading, **model_params(model))


__all__ = ["READING_DEFAULTS", "add_references", "check_distinct", "describe_files", "fit_files", "model_params",
           "records_by_file", "union_files"]
