"""Save and load fitted models: an ``.npz`` archive of float arrays plus one JSON header.

A model file may come from anyone, so loading trusts nothing in it:

- the header is read first (at most :data:`MAX_HEADER_BYTES`) and checked against
  :data:`HEADER`, a declarative schema: every key known, every type, range and enum value
  checked, unknown keys refused;
- the archive's members are then checked against what the header implies
  (:data:`TASK_ARRAYS`): names, dtypes (floats only: nothing to unpickle) and shapes are read
  from the zip directory and each ``.npy`` header *before* anything is decompressed, and
  their total size is bounded (:data:`MAX_ARRAY_BYTES`), so a small file cannot expand
  into gigabytes;
- every weight must be finite;
- a tagger named by the file is ``spacy``, ``nltk``, or an installed spaCy package that
  the caller allowed (``load_model(path, tagger=NAME)``, CLI ``--tagger NAME``); nothing is
  imported or opened because the file names it.

Any failure is a :class:`~attribution.errors.ModelError` with code ``E206`` (``E214`` for a
tagger the caller did not allow).

To add a parameter to :class:`~attribution.estimator.TeacherAttributor`, add one line to
:data:`~attribution.estimator.PARAMETER_CONSTRAINTS`; to save a new array, one line to :data:`TASK_ARRAYS`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy

from . import __version__, registry
from .errors import Errors, model_error
from .estimator import PARAMETER_CONSTRAINTS, TeacherAttributor
from .features import SOURCES, WEIGHTINGS
from .multitask import MultiTaskAttributor
from .saving import MODEL_FORMAT, save_model
from .schema import Anything, Bool, Enum, Int, List, Map, Obj, OneOf, Opt, SchemaError, Str
from .tagging import SPACY_PACKAGE_RE, TAGGERS

# -- bounds ---------------------------------------------------------------------------------
#: Largest JSON header (bytes).
MAX_HEADER_BYTES = 64 << 20
#: Largest total size of the arrays once decompressed (bytes).
MAX_ARRAY_BYTES = 1 << 30
MAX_TASKS = 1_000
MAX_TEACHERS = 1_000
#: Largest vocabulary of one feature block, and longest n-gram.
MAX_VOCABULARY = 1_000_000
MAX_NGRAM = 16
MAX_LABEL_CHARS = 1_000
#: Most reference outputs per left-out teacher in the unlisted-teacher null.
MAX_NULL_ROWS = 10_000_000

# -- header schema --------------------------------------------------------------------------
LABEL = Str(MAX_LABEL_CHARS)
#: A tagger as a model file may name it; anything but "spacy"/"nltk" needs the caller's consent.
TAGGER = OneOf(TAGGERS, pattern=SPACY_PACKAGE_RE.pattern, max_len=64)
#: Parameters added after the first release: absent from older model files, they take their default.
ADDED_PARAMS = ("paired",)
#: Parameters of TeacherAttributor: its constraint table (a new parameter is one line there, and goes
#: into ADDED_PARAMS), with the stricter tagger a file may name.
PARAMS = Obj({**PARAMETER_CONSTRAINTS, "tagger": TAGGER}, optional=ADDED_PARAMS)
#: Parameters of the feature vectorizers; each class must have exactly its own (see _check_block).
VECTORIZER_PARAMS = {
    "source": Enum(*SOURCES),
    "ngram_range": List(Int(1, MAX_NGRAM), 2, 2),
    "n": Int(1, MAX_NGRAM),
    "top_k": Opt(Int(1, MAX_VOCABULARY)),
    "weighting": Enum(*WEIGHTINGS),
    "lowercase": Bool(),
    "tagger": TAGGER,
}
BLOCK = Obj({
    "name": Str(32, pattern=r"[a-z][a-z0-9_-]*"),  # a label shown with the block's evidence ("pos", "words")
    "class": OneOf(registry.vectorizers),  # a registered class: the file picks one, never imports one
    "params": Anything(),  # checked against the block's class by _check_block
    "vocabulary": List(Str(10_000), 0, MAX_VOCABULARY, unique=True),
})
TASK = Obj({
    "task": Opt(LABEL),
    "params": PARAMS,
    "classes": List(LABEL, 2, MAX_TEACHERS, unique=True),
    "signature": Str(10_000),
    "blocks": List(BLOCK, 1, 8),
    "unlisted": List(LABEL, 0, MAX_TEACHERS, unique=True),
    # each class's model family (attribution.families), in class order; absent: every teacher its own family
    "families": List(LABEL, 2, MAX_TEACHERS),
}, optional=("families",))
#: The reference files a model was fitted on (attribution.refit): name, SHA-256 and outputs per teacher of each,
#: and how they were read. Absent from models fitted from Python records and from files saved before it existed.
REFERENCE_FILES = Obj({
    "files": List(Obj({"name": Str(MAX_LABEL_CHARS), "sha256": Str(64, pattern=r"[0-9a-f]{64}"),
                       "outputs": Int(0, MAX_NULL_ROWS),
                       "teachers": Map(Int(0, MAX_NULL_ROWS), key=LABEL, max_len=MAX_TEACHERS)}),
                  1, MAX_TASKS),
    "reading": Obj({"task": Opt(LABEL), "text_field": Opt(Str(MAX_LABEL_CHARS)), "skip_invalid": Bool(),
                    "max_chars": Int(0, 2**62)}),
})
#: Which class was saved: load_model returns the same. Absent (files of a MultiTaskAttributor, and every
#: file saved before the key existed): a MultiTaskAttributor.
ESTIMATORS = ("MultiTaskAttributor", "TeacherAttributor")
HEADER = Obj({
    "format": Enum(MODEL_FORMAT),
    "version": Str(100, pattern=r"[0-9A-Za-z.+_-]+"),  # shown in the E207 warning: no control characters
    "estimator": Enum(*ESTIMATORS),
    "tasks": List(TASK, 1, MAX_TASKS),
    "reference_files": REFERENCE_FILES,
}, optional=("estimator", "reference_files"))

@dataclass(frozen=True)
class Array:
    """What one saved array must look like.

    ``shape`` entries: a dimension of the task (``classes``, ``others`` = classes - 1, ``rows`` =
    rows of the coefficients, ``features``, ``vocab`` = the block's vocabulary); ``None``, any
    length up to MAX_NULL_ROWS; ``"*name"``, a free length bound by its first use and equal in
    every later array of the task; or a function of those dimensions (a dict) for derived lengths.
    ``kind``: numpy dtype kind (``f`` floats, which must be finite; ``i`` integers; ``U`` strings).
    ``over``: one array per unlisted teacher (``unlisted``) or per TF-IDF block (``tfidf_blocks``),
    ``{k}`` in the name being its index. ``optional``: the arrays of one ``group`` are all present or
    all absent. ``values``: a function of (array, dimensions) saying what is wrong with its values,
    or None (integers used as indices must be checked: scipy does not bound-check them).
    """

    shape: tuple[Any, ...]
    kind: str = "f"
    over: str | None = None
    optional: bool = False
    group: str | None = None
    values: Any = None


def _indices_below(dim: str) -> Any:
    def check(array: np.ndarray, dims: dict[str, int]) -> str | None:
        bad = array.size and (array.min() < 0 or array.max() >= dims[dim])
        return f"indices outside [0, {dims[dim]})" if bad else None
    return check


def _csr_indptr(nnz: str) -> Any:
    def check(array: np.ndarray, dims: dict[str, int]) -> str | None:
        ok = array.size and array[0] == 0 and array[-1] == dims[nnz] and bool((np.diff(array) >= 0).all())
        return None if ok else f"not a CSR row pointer (from 0, non-decreasing, to {dims[nnz]})"
    return check


def _shares(array: np.ndarray, dims: dict[str, int]) -> str | None:
    return "shares outside [0, 1]" if array.size and (array.min() < 0 or array.max() > 1) else None


def _counts(array: np.ndarray, dims: dict[str, int]) -> str | None:
    return "negative counts" if array.size and array.min() < 0 else None


#: Arrays of task ``i`` (members ``t{i}_NAME.npy``), one line each.
TASK_ARRAYS: dict[str, Array] = {
    "coef": Array(("rows", "features")),
    "intercept": Array(("rows",)),
    "unlisted{k}": Array((None, "others"), over="unlisted"),
    "block{k}_idf": Array(("vocab",), over="tfidf_blocks"),
    # teachers' answers to shared prompts (attribution.paired), a CSR matrix of ids x teachers rows
    "paired_ids": Array(("*ids",), kind="U", optional=True, group="paired"),
    "paired_data": Array(("*nnz",), optional=True, group="paired"),
    "paired_indices": Array(("*nnz",), kind="i", optional=True, group="paired", values=_indices_below("features")),
    "paired_indptr": Array((lambda d: d["*ids"] * d["classes"] + 1,), kind="i", optional=True, group="paired",
                           values=_csr_indptr("*nnz")),
    # share of each teacher's references holding each feature (absent from files saved before it was kept)
    "reference_share": Array(("classes", "features"), optional=True, values=_shares),
    # each teacher's non-empty references, the shares' denominators (absent from files saved before it was kept)
    "reference_count": Array(("classes",), kind="i", optional=True, values=_counts),
}


def _repetitions(meta: dict[str, Any], over: str | None) -> list[tuple[int, dict[str, int]]]:
    """(k, extra dimensions) for each array of a repeated kind."""
    if over is None:
        return [(0, {})]
    if over == "unlisted":
        return [(k, {}) for k in range(len(meta["unlisted"]))]
    if over == "tfidf_blocks":
        return [(k, {"vocab": len(b["vocabulary"])}) for k, b in enumerate(meta["blocks"])
                if b["params"].get("weighting") == "tfidf"]
    raise ValueError(f"unknown repetition {over!r}")  # a programming error in TASK_ARRAYS


def expected_arrays(header: dict[str, Any]) -> dict[str, tuple[int, Array, dict[str, int]]]:
    """Member name (without ``.npy``) -> (task index, spec, task dimensions), for a checked header."""
    out: dict[str, tuple[int, Array, dict[str, int]]] = {}
    for i, meta in enumerate(header["tasks"]):
        n_classes = len(meta["classes"])
        n_groups = len(set(meta.get("families", meta["classes"])))  # the unlisted null leaves out families
        dims = {"classes": n_classes, "others": n_groups - 1, "rows": n_classes if n_classes > 2 else 1,
                "features": sum(len(b["vocabulary"]) for b in meta["blocks"])}
        for name, spec in TASK_ARRAYS.items():
            for k, extra in _repetitions(meta, spec.over):
                # one dict per task, so that a free "*" length bound by one array holds for the others
                out[f"t{i}_{name.format(k=k)}"] = (i, spec, {**dims, **extra} if extra else dims)
    return out


def _select_present(expected: dict[str, tuple[int, Array, dict[str, int]]],
                    members: dict[str, Any]) -> list[str]:
    """The expected arrays the archive must hold: all required ones, and each optional group of a
    task entirely or not at all."""
    names: list[str] = []
    groups: dict[tuple[int, str], list[str]] = {}
    for name, (i, spec, _) in expected.items():
        if not spec.optional:
            names.append(name)
        else:
            groups.setdefault((i, spec.group or name), []).append(name)
    for (_, group), group_names in groups.items():
        present = [n for n in group_names if n in members]
        if present and len(present) != len(group_names):
            missing = next(n for n in group_names if n not in members)
            raise _Invalid(f"missing array {missing!r} (the '{group}' arrays come together)")
        names.extend(present)
    return names


def _expected_shape(shape: tuple[Any, ...], actual: tuple[int, ...], dims: dict[str, int]) -> tuple[int | None, ...]:
    """Resolve a spec's shape against the task dimensions, binding free ``*`` dimensions (in ``dims``)."""
    out: list[int | None] = []
    for d, got in zip(shape, actual + (None,) * len(shape)):
        if callable(d):
            out.append(int(d(dims)))
        elif isinstance(d, str) and d.startswith("*"):
            if got is not None and got > MAX_NULL_ROWS:
                raise _Invalid(f"a length of {got}, over the limit of {MAX_NULL_ROWS}")
            out.append(dims.setdefault(d, got))  # type: ignore[arg-type]  # None: fewer dimensions than specified
        else:
            out.append(None if d is None else dims[d])
    return tuple(out)


# -- saving ---------------------------------------------------------------------------------
# -- loading --------------------------------------------------------------------------------
class _Invalid(Exception):
    """Internal: the file is not a valid model; the message is the detail of E206."""


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype, int]:
    """Shape, dtype and header length of one ``.npy`` member, reading only its first bytes."""
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _Invalid(f"member {info.filename!r} uses an unsupported compression")
    with archive.open(info) as handle:
        version = npy.read_magic(handle)
        reader = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        if version not in ((1, 0), (2, 0)):
            raise _Invalid(f"member {info.filename!r} has .npy version {version}")
        shape, _fortran, dtype = reader(handle)
        offset = handle.tell()
    return shape, dtype, offset


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    with archive.open(info) as handle:
        return npy.read_array(handle, allow_pickle=False)


_KINDS = {"f": ("floats", 8), "i": ("integers", 8), "u": ("bytes", 1), "U": ("strings", 4 * MAX_LABEL_CHARS)}


def _check_member(info: zipfile.ZipInfo, shape: tuple[int, ...], dtype: np.dtype, offset: int,
                  expected: tuple[int | None, ...], kind: str) -> int:
    """Check one member's declared dtype, shape and size; return its size in bytes."""
    name = info.filename
    what, max_itemsize = _KINDS[kind]
    if dtype.kind != kind or dtype.hasobject or dtype.itemsize > max_itemsize or dtype.fields is not None:
        raise _Invalid(f"member {name!r} has dtype {dtype.str}, expected {what}")
    if len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
        raise _Invalid(f"member {name!r} has shape {shape}, the header implies {expected}")
    if any(s > MAX_NULL_ROWS for s, e in zip(shape, expected) if e is None):
        raise _Invalid(f"member {name!r} has shape {shape}, over the limit of {MAX_NULL_ROWS} rows")
    nbytes = math.prod(shape) * dtype.itemsize
    if info.file_size != offset + nbytes:
        raise _Invalid(f"member {name!r} declares {info.file_size} bytes, its shape needs {offset + nbytes}")
    return nbytes


def _check_block(block: dict[str, Any], tagger: str, where: str) -> None:
    klass = registry.vectorizers.get(block["class"])
    # a registered vectorizer with parameters of its own declares their specs as PARAM_SPECS
    specs = {**VECTORIZER_PARAMS, **getattr(klass, "PARAM_SPECS", {})}
    keys = set(klass().get_params())
    if keys - set(specs):
        raise SchemaError(f"{where}.class: {block['class']} has parameters without a spec: {sorted(keys - set(specs))}")
    Obj({k: specs[k] for k in keys}).check(block["params"], f"{where}.params")
    params = block["params"]
    if "ngram_range" in params and params["ngram_range"][0] > params["ngram_range"][1]:
        raise SchemaError(f"{where}.params.ngram_range: must be increasing (got {params['ngram_range']})")
    if params["tagger"] != tagger:
        raise SchemaError(f"{where}.params.tagger: must be the task's tagger {tagger!r}")


def check_header(header: Any) -> None:
    """Raise :class:`~attribution.schema.SchemaError` unless ``header`` is a valid model header."""
    HEADER.check(header, "header")
    tasks = [meta["task"] for meta in header["tasks"]]
    if len(set(tasks)) != len(tasks):
        raise SchemaError("header.tasks: task names must be distinct")
    if header.get("estimator") == "TeacherAttributor" and tasks != [None]:
        raise SchemaError("header.tasks: a TeacherAttributor is saved as one task, null")
    for i, meta in enumerate(header["tasks"]):
        where = f"header.tasks[{i}]"
        families = meta.get("families", meta["classes"])
        if len(families) != len(meta["classes"]):
            raise SchemaError(f"{where}.families: must name one family per class")
        if not set(meta["unlisted"]) <= set(families):
            raise SchemaError(f"{where}.unlisted: must name teachers (or families) of the task")
        for b, block in enumerate(meta["blocks"]):
            _check_block(block, meta["params"]["tagger"], f"{where}.blocks[{b}]")


def _check_tagger(header: dict[str, Any], allowed: str | None, path: Path) -> None:
    from .tagging import is_spacy_package

    for meta in header["tasks"]:
        name = meta["params"]["tagger"]
        if name in TAGGERS:
            continue
        if allowed is None or name != allowed.replace("-", "_"):
            raise model_error("E214", path=path, name=name)
        if not is_spacy_package(name):
            raise model_error("E304", model=name, detail="not an installed spaCy package")


def _read_header(archive: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo]) -> Any:
    info = members.get("__header__")
    if info is None:
        raise _Invalid("no header")
    shape, dtype, offset = _npy_header(archive, info)
    if len(shape) == 1 and shape[0] > MAX_HEADER_BYTES:
        raise _Invalid(f"header of {shape[0]} bytes, over the limit of {MAX_HEADER_BYTES}")
    _check_member(info, shape, dtype, offset, (None,), "u")
    raw = _read_member(archive, info)
    try:
        return json.loads(raw.tobytes().decode("utf-8"))
    except RecursionError:
        raise _Invalid("header: JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, huge integers
        raise _Invalid(f"header: {type(exc).__name__}: {exc}") from None


def _read_arrays(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The checked header and arrays of a model file; raises _Invalid, never decompresses blindly."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _Invalid(f"not a zip archive ({type(exc).__name__}: {exc})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > 16 * MAX_TASKS:
            raise _Invalid(f"{len(infos)} members")
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = info.filename
            if not name.endswith(".npy") or name[:-4] in members or info.is_dir():
                raise _Invalid(f"unexpected member {name[:100]!r}")
            members[name[:-4]] = info
        header = _read_header(archive, members)
        try:
            check_header(header)
        except SchemaError as exc:
            raise _Invalid(str(exc)) from None
        expected = expected_arrays(header)
        extra = sorted(set(members) - set(expected) - {"__header__"})
        if extra:
            raise _Invalid(f"unexpected member {extra[0][:100]!r}")
        wanted = _select_present(expected, members)
        missing = [name for name in wanted if name not in members]
        if missing:
            raise _Invalid(f"missing array {missing[0]!r}")
        total = 0
        for name in wanted:
            info, (_, spec, dims) = members[name], expected[name]
            shape, dtype, offset = _npy_header(archive, info)
            total += _check_member(info, shape, dtype, offset, _expected_shape(spec.shape, shape, dims), spec.kind)
            if total > MAX_ARRAY_BYTES:
                raise _Invalid(f"arrays of more than {MAX_ARRAY_BYTES} bytes")
        arrays = {}
        for name in wanted:
            array = _read_member(archive, members[name])
            if array.dtype.kind == "f":
                if not np.isfinite(array).all():
                    raise _Invalid(f"array {name!r} holds non-finite values (NaN or infinity)")
                array = array.astype(float, copy=False)
            spec, dims = expected[name][1], expected[name][2]
            problem = spec.values(array, dims) if spec.values is not None else None
            if problem:
                raise _Invalid(f"array {name!r}: {problem}")
            arrays[name] = array
    return header, arrays


def load_model(path: str | os.PathLike, *, tagger: str | None = None) -> MultiTaskAttributor | TeacherAttributor:
    """Load a model saved by :func:`save_model`, checking everything first (see the module doc).

    Returns the class that was saved: a :class:`~attribution.estimator.TeacherAttributor`, or a
    :class:`~attribution.multitask.MultiTaskAttributor` (also for files saved before the header named
    the class); :func:`attribution.multitask.as_multitask` turns either into the latter.

    Parameters
    ----------
    path : str or Path
    tagger : str, optional
        The spaCy package the caller allows, when the model was fitted with one other than
        ``spacy`` or ``nltk``: a model file alone cannot choose which package gets imported.

    Raises
    ------
    ModelError
        ``E206`` for anything that is not a valid model file; ``E214`` for a tagger package the
        caller did not allow; ``E304`` when that package is not installed.
    """

    path = Path(path)
    if not path.is_file():
        raise model_error("E206", path=path, detail="file not found")
    try:
        header, arrays = _read_arrays(path)
    except _Invalid as exc:
        raise model_error("E206", path=path, detail=str(exc)) from None
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError, KeyError, NotImplementedError,
            RuntimeError) as exc:  # damaged data (RuntimeError: an encrypted member)
        raise model_error("E206", path=path, detail=f"{type(exc).__name__}: {exc}") from None
    _check_tagger(header, tagger, path)
    if header["version"] != __version__:
        warnings.warn(Errors.E207.format(path=path, saved=header["version"], current=__version__), stacklevel=2)
    try:  # the header and shapes were checked; this only guards against what they cannot see
        models = {}
        for i, meta in enumerate(header["tasks"]):
            sub_arrays = {k.split("_", 1)[1]: v for k, v in arrays.items() if k.startswith(f"t{i}_")}
            models[meta["task"]] = TeacherAttributor.from_state(meta, sub_arrays)
        loaded = models[None] if header.get("estimator") == "TeacherAttributor" else \
            MultiTaskAttributor.from_fitted(models)
        if "reference_files" in header:
            loaded.reference_files_ = header["reference_files"]
        return loaded
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise model_error("E206", path=path, detail=f"{type(exc).__name__}: {exc}") from exc


__all__ = ["ESTIMATORS", "HEADER", "MODEL_FORMAT", "PARAMS", "TASK_ARRAYS", "check_header", "expected_arrays",
           "load_model", "save_model"]
