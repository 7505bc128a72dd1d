"""The paper authors' released outputs, as :class:`~attribution.io.Record` streams.

Wadhwa et al. published the teacher rationales and the GPT-2 students' rationales of their
QA experiments in ``sominw/pattern_distillation`` (folder ``qa_outputs/``), one CSV per
task and model. :class:`PaperQAReader` reads them from one of two places:

- a **local directory** (``data_dir=`` or the ``TEACHER_ATTRIBUTION_DATA`` environment
  variable) in the toolkit's JSON Lines layout, ``{task}_teacher.jsonl`` and
  ``{task}_student.jsonl`` (what :func:`export_paper_qa` writes), or holding the authors'
  CSV files under their original names;
- otherwise the **download cache** (``~/.cache/teacher-attribution/paper_qa``, or
  ``$XDG_CACHE_HOME``), filled from GitHub on first use. Offline, this fails with an
  :class:`~attribution.errors.AttributionError` (``E601``) that says how to point at a
  local copy.

Records carry ``id``, ``task``, ``teacher`` (the toolkit's spelling, e.g. ``mistral-7b``),
``prompt`` (the question with its choices), ``output`` (the rationale) and, for student
files, ``student="gpt2"``. Files are read in a fixed order (task, then teacher), so the
record order never depends on the filesystem.

Examples
--------
>>> from attribution.datasets import load_paper_qa
>>> refs = load_paper_qa("teacher", tasks=["openbookqa"], data_dir="../shared/data/paper_qa")  # doctest: +SKIP
>>> refs[0].teacher, refs[0].task                                                                # doctest: +SKIP
('gemma-2-9b', 'openbookqa')

**AlpacaEval provenance benchmark.** Real instruction-tuned models and the teachers their
fine-tuning data came from, all answering AlpacaEval's 805 instructions:
:func:`load_alpacaeval` reads the layout ``teachers_reference.jsonl``, ``teachers_audit.jsonl``
and ``students_audit.jsonl`` from a directory (``data_dir=`` or ``TEACHER_ATTRIBUTION_ALPACAEVAL``),
:func:`build_alpacaeval` builds that layout from AlpacaEval's published per-model outputs for
any models, and :func:`documented_teachers` lists the documented teachers of well-known
distilled models, with their sources.

>>> from attribution.datasets import alpacaeval_id, documented_teacher
>>> alpacaeval_id("How did US states get their names?")
'f2bf20386693'
>>> documented_teacher("alpaca-7b"), documented_teacher("guanaco-33b"), documented_teacher("my-model")
('text_davinci_003', 'none', None)
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import AttributionError, Errors, InputError, input_error
from .io import Record, RecordReader, atomic_write, read_records, write_jsonl

#: Where the authors published their QA outputs (one CSV per task and model).
PAPER_QA_URL = "https://raw.githubusercontent.com/sominw/pattern_distillation/main/qa_outputs"
#: Environment variable naming a local directory of released outputs.
DATA_ENV = "TEACHER_ATTRIBUTION_DATA"
#: QA tasks of the release.
PAPER_QA_TASKS = ("commonsenseqa", "openbookqa", "quarel")
#: Splits: the teachers' rationales (references) and the GPT-2 students' rationales.
SPLITS = ("teacher", "student")
#: Teacher name in the toolkit -> (spelling in teacher file names, spelling in student file names).
PAPER_QA_TEACHERS: dict[str, tuple[str, str]] = {
    "gemma-2-9b": ("gemma2_9b", "gemma2_9b"),
    "llama-3-70b": ("llama3_70b", "llama3_70b"),
    "llama-3-8b": ("llama3_8b", "llama3_8b"),
    "mistral-7b": ("mistral_7b", "mistral7b"),
    "mixtral-8x7b": ("mixtral", "mixtral"),
}
#: The student model of the released student files.
PAPER_QA_STUDENT = "gpt2"
#: Text column of the authors' CSVs per split (the ``text`` column holds the prompt).
CSV_TEXT_COLUMN = {"teacher": "gold_rationale", "student": "rationale"}
#: The local JSON Lines layout, one file per task and split.
JSONL_LAYOUT = "{task}_{split}.jsonl"
#: Seconds to wait for GitHub before reporting the machine as offline.
DOWNLOAD_TIMEOUT = 30.0


def csv_name(task: str, teacher: str, split: str) -> str:
    """File name of one released CSV, as spelled in the authors' repository.

    Examples
    --------
    >>> csv_name("openbookqa", "mistral-7b", "teacher")
    'openbookqa_mistral_7b_with_gold_rationales.csv'
    >>> csv_name("openbookqa", "mistral-7b", "student")
    'openbookqa_GPT2_mistral7b.csv'
    """
    _check_choice("task", task, PAPER_QA_TASKS)
    _check_choice("teacher", teacher, tuple(PAPER_QA_TEACHERS))
    _check_choice("split", split, SPLITS)
    teacher_spelling, student_spelling = PAPER_QA_TEACHERS[teacher]
    if split == "teacher":
        return f"{task}_{teacher_spelling}_with_gold_rationales.csv"
    return f"{task}_GPT2_{student_spelling}.csv"


def default_cache_dir() -> Path:
    """Download cache: ``$XDG_CACHE_HOME/teacher-attribution/paper_qa`` (default ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "teacher-attribution" / "paper_qa"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local data directory: ``data_dir`` if given, else ``$TEACHER_ATTRIBUTION_DATA``, else None."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else None


class AuthorsCsvReader(RecordReader):
    """Read one of the authors' CSV files (``id,text,gold_rationale`` or ``id,text,rationale``).

    The ``text`` column (the question) becomes ``prompt``, the rationale becomes ``output``,
    and ``task``, ``teacher`` and (for student files) ``student`` come from the file name's
    meaning, passed here. Problems are reported as ``FILE:LINE`` like any other input.

    Parameters
    ----------
    path : str or Path
        The CSV file.
    task : str
        Task of every record.
    teacher : str
        Teacher (toolkit spelling) of every record: the model that wrote it, or that the
        student was distilled from.
    split : {"teacher", "student"}
        Which kind of file this is.
    skip_invalid : bool, default=False
        Skip bad rows (remembered in :attr:`skipped`) instead of raising.
    max_chars : int, default=0
        Longest accepted text; 0 means no limit (looping students write long texts).
    """

    def __init__(self, path: str | os.PathLike, *, task: str, teacher: str, split: str,
                 skip_invalid: bool = False, max_chars: int = 0) -> None:
        _check_choice("split", split, SPLITS)
        super().__init__(path, text_field=CSV_TEXT_COLUMN[split], skip_invalid=skip_invalid, max_chars=max_chars)
        self.task = task
        self.teacher = teacher
        self.split = split

    def _validate(self, row: Any, line: int) -> Record:
        if isinstance(row, dict):
            column = CSV_TEXT_COLUMN[self.split]
            if column not in row:
                raise input_error("E107", source=self.source, line=line, field=column)
            row = {"id": row.get("id"), "prompt": row.get("text"), column: row[column],
                   "task": self.task, "teacher": self.teacher,
                   "student": PAPER_QA_STUDENT if self.split == "student" else None}
        return super()._validate(row, line)


class PaperQAReader:
    """Stream the released QA outputs of one split, task by task, teacher by teacher.

    Parameters
    ----------
    split : {"teacher", "student"}
        ``"teacher"``: the teachers' rationales (references to fit on); ``"student"``: the
        GPT-2 students' rationales, each labelled with the teacher it was distilled from.
    tasks : str or sequence of str, optional
        Tasks to read, default all of :data:`PAPER_QA_TASKS` that the source holds (a local
        directory) or all three (download).
    teachers : str or sequence of str, optional
        Teachers to keep, default all five.
    data_dir : str or Path, optional
        Local directory; default ``$TEACHER_ATTRIBUTION_DATA``, else the download cache.
    cache_dir : str or Path, optional
        Download cache, default :func:`default_cache_dir`.
    download : bool, default=True
        Fetch missing files into the cache when no local directory is given.
    base_url : str, default=PAPER_QA_URL
        Where the CSVs live (any URL ``urllib`` opens, ``file://`` included).
    skip_invalid : bool, default=True
        The release holds a few empty outputs; skip such records (remembered in
        :attr:`skipped`, each naming its file and line) instead of raising.
    max_chars : int, default=0
        Longest accepted text; 0 means no limit.

    Attributes
    ----------
    skipped : list of InputError
        Records skipped so far.
    files : list of Path
        Files read so far, in reading order.
    """

    def __init__(self, split: str = "teacher", *, tasks: Sequence[str] | None = None,
                 teachers: Sequence[str] | None = None, data_dir: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, download: bool = True,
                 base_url: str = PAPER_QA_URL, skip_invalid: bool = True, max_chars: int = 0) -> None:
        self.split = split
        self.tasks = tasks
        self.teachers = teachers
        self.data_dir = data_dir
        self.cache_dir = cache_dir
        self.download = download
        self.base_url = base_url
        self.skip_invalid = skip_invalid
        self.max_chars = max_chars
        self.skipped: list[InputError] = []
        self.files: list[Path] = []

    def _checked(self) -> tuple[list[str] | None, list[str]]:
        _check_choice("split", self.split, SPLITS)
        tasks = [self.tasks] if isinstance(self.tasks, str) else None if self.tasks is None else list(self.tasks)
        for task in tasks or ():
            _check_choice("task", task, PAPER_QA_TASKS)
        teachers = ([self.teachers] if isinstance(self.teachers, str)
                    else list(PAPER_QA_TEACHERS) if self.teachers is None else list(self.teachers))
        for teacher in teachers:
            _check_choice("teacher", teacher, tuple(PAPER_QA_TEACHERS))
        return tasks, teachers

    def __iter__(self) -> Iterator[Record]:
        tasks, teachers = self._checked()
        local = resolve_data_dir(self.data_dir)
        if local is not None:
            yield from self._read_local(local, tasks, teachers)
            return
        cache = Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()
        for task in tasks or PAPER_QA_TASKS:
            for teacher in teachers:
                name = csv_name(task, teacher, self.split)
                path = cache / name
                if not path.is_file():
                    if not self.download:
                        raise _missing(task, self.split, cache, name)
                    fetch(f"{self.base_url.rstrip('/')}/{name}", path)
                yield from self._read_csv(path, task, teacher)

    def _read_local(self, root: Path, tasks: list[str] | None, teachers: list[str]) -> Iterator[Record]:
        if not root.is_dir():
            raise input_error("E109", source=str(root))
        if tasks is None:  # whatever the directory holds, in a fixed order
            tasks = [t for t in PAPER_QA_TASKS
                     if (root / JSONL_LAYOUT.format(task=t, split=self.split)).is_file()
                     or (root / csv_name(t, teachers[0], self.split)).is_file()]
            if not tasks:
                raise _missing("*", self.split, root, JSONL_LAYOUT.format(task="{task}", split=self.split))
        keep = set(teachers)
        for task in tasks:
            jsonl = root / JSONL_LAYOUT.format(task=task, split=self.split)
            if jsonl.is_file():
                reader = RecordReader(jsonl, require_teacher=True, skip_invalid=self.skip_invalid,
                                      max_chars=self.max_chars)
                self.files.append(jsonl)
                for record in reader:
                    if record.teacher in keep:
                        yield record if record.task else replace(record, task=task)
                self.skipped.extend(reader.skipped)
                continue
            names = [csv_name(task, teacher, self.split) for teacher in teachers]
            if not all((root / name).is_file() for name in names):
                raise _missing(task, self.split, root, f"{jsonl.name} or the authors' CSVs ({names[0]}, ...)")
            for teacher, name in zip(teachers, names):
                yield from self._read_csv(root / name, task, teacher)

    def _read_csv(self, path: Path, task: str, teacher: str) -> Iterator[Record]:
        reader = AuthorsCsvReader(path, task=task, teacher=teacher, split=self.split,
                                  skip_invalid=self.skip_invalid, max_chars=self.max_chars)
        self.files.append(path)
        yield from reader
        self.skipped.extend(reader.skipped)


def load_paper_qa(split: str = "teacher", **options: Any) -> list[Record]:
    """All records of one split of the released QA outputs (see :class:`PaperQAReader`).

    Parameters
    ----------
    split : {"teacher", "student"}
    **options
        ``tasks``, ``teachers``, ``data_dir``, ``cache_dir``, ``download``, ``base_url``,
        ``skip_invalid``, ``max_chars``.

    Returns
    -------
    list of Record

    Raises
    ------
    AttributionError
        ``E601`` when a file must be downloaded and cannot be (offline); ``E603`` for an
        unknown split, task or teacher.
    InputError
        ``E602``/``E109`` when the local directory lacks a file; a bad record when
        ``skip_invalid=False``; ``E110`` when nothing valid was read.
    """
    reader = PaperQAReader(split, **options)
    records = list(reader)
    if not records:
        raise input_error("E110", source=str(reader.files[0]) if reader.files else split)
    return records


def fetch(url: str, path: str | os.PathLike, *, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Download ``url`` to ``path`` atomically (nothing is left behind on failure).

    Raises
    ------
    AttributionError
        ``E601``, naming the URL and what to do offline.
    """
    target = Path(path)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_write(target, "wb") as handle:
            while block := response.read(1 << 16):
                handle.write(block)
    except (urllib.error.URLError, OSError, ValueError) as err:
        detail = getattr(err, "reason", None) or err
        raise AttributionError(Errors.E601.format(url=url, detail=detail, layout=_layout_hint()),
                               code="E601") from err
    return target


def download_paper_qa(*, tasks: Sequence[str] | None = None, cache_dir: str | os.PathLike | None = None,
                      base_url: str = PAPER_QA_URL, overwrite: bool = False) -> list[Path]:
    """Fetch the released CSVs of ``tasks`` (default all) into the cache; return their paths."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    paths = []
    for task in tasks or PAPER_QA_TASKS:
        for split in SPLITS:
            for teacher in PAPER_QA_TEACHERS:
                name = csv_name(task, teacher, split)
                if overwrite or not (cache / name).is_file():
                    fetch(f"{base_url.rstrip('/')}/{name}", cache / name)
                paths.append(cache / name)
    return paths


def export_paper_qa(out_dir: str | os.PathLike, *, tasks: Sequence[str] | None = None,
                    **options: Any) -> dict[str, Any]:
    """Write the released outputs in the local JSON Lines layout, ``{task}_{split}.jsonl``.

    Everything is read (and validated) before anything is written, and each file is
    written atomically.

    Parameters
    ----------
    out_dir : str or Path
        Target directory (created if needed).
    tasks : sequence of str, optional
        Default: all tasks the source holds.
    **options
        Passed to :class:`PaperQAReader` (``data_dir``, ``cache_dir``, ``download``, ...).

    Returns
    -------
    dict
        ``files``: ``{file name: number of records}``; ``skipped``: records skipped.
    """
    by_file: dict[str, list[dict[str, Any]]] = {}
    skipped: list[InputError] = []
    for split in SPLITS:
        reader = PaperQAReader(split, tasks=tasks, **options)
        for record in reader:
            by_file.setdefault(JSONL_LAYOUT.format(task=record.task, split=split), []).append(record.to_dict())
        skipped.extend(reader.skipped)
    out = Path(out_dir)
    counts = {name: write_jsonl(out / name, rows) for name, rows in sorted(by_file.items())}
    return {"files": counts, "skipped": len(skipped), "skipped_records": [str(e) for e in skipped]}


# -- AlpacaEval provenance benchmark ------------------------------------------------------------

#: Where AlpacaEval publishes each model's outputs: ``{ALPACAEVAL_URL}/<model>/model_outputs.json``.
ALPACAEVAL_URL = "https://raw.githubusercontent.com/tatsu-lab/alpaca_eval/main/results"
#: Environment variable naming a local directory in the AlpacaEval benchmark layout.
ALPACAEVAL_ENV = "TEACHER_ATTRIBUTION_ALPACAEVAL"
#: ``task`` of every AlpacaEval record.
ALPACAEVAL_TASK = "alpaca_eval"
#: Files of the layout: candidate teachers on the reference half and on the audit half, and
#: students on the audit half (one ``{split}.jsonl`` each).
ALPACAEVAL_SPLITS = ("teachers_reference", "teachers_audit", "students_audit")
#: The candidate teachers of the shared benchmark (AlpacaEval folder names).
ALPACAEVAL_TEACHERS = ("text_davinci_003", "gpt-3.5-turbo-0301", "gpt4_0314", "claude-2", "cohere")
#: The students of the shared benchmark (AlpacaEval folder names); their labels come from
#: :func:`documented_teacher`.
ALPACAEVAL_STUDENTS = ("alpaca-7b", "vicuna-13b", "wizardlm-13b", "airoboros-33b", "claude2-alpaca-13b",
                       "vicuna-13b-v1.5", "baize-v2-7b", "OpenHermes-2.5-Mistral-7B", "alpaca-farm-ppo-human",
                       "guanaco-33b", "guanaco-7b")
#: Seed of the instruction split (the shared copy was built with it).
ALPACAEVAL_SEED = 0


def alpacaeval_id(instruction: str) -> str:
    """Record ``id`` of an AlpacaEval instruction: the first 12 hex digits of its SHA-1."""
    return hashlib.sha1(instruction.encode("utf-8")).hexdigest()[:12]


def split_instructions(instructions: Iterable[str], *, seed: int = ALPACAEVAL_SEED) -> tuple[list[str], list[str]]:
    """Split instructions into a reference half and an audit half (ids, each list sorted).

    The distinct ids are sorted, shuffled with ``random.Random(seed)``, and the first
    ``n // 2`` are the reference half (402 of AlpacaEval's 805), the rest the audit half. The
    split depends only on the set of instructions and the seed, never on file order.
    """
    ids = sorted({alpacaeval_id(text) for text in instructions})
    random.Random(seed).shuffle(ids)
    half = len(ids) // 2
    return sorted(ids[:half]), sorted(ids[half:])


def load_alpacaeval(split: str, data_dir: str | os.PathLike | None = None, *, skip_invalid: bool = False,
                    max_chars: int = 0) -> list[Record]:
    """All records of one file of the AlpacaEval benchmark layout.

    Parameters
    ----------
    split : {"teachers_reference", "teachers_audit", "students_audit"}
        The candidate teachers' outputs on the reference half (fit on these), the same
        teachers on the audit half, or the students' outputs on the audit half (each with
        ``student`` and its documented ``teacher``, ``none`` for human-data models).
    data_dir : str or Path, optional
        Directory holding ``{split}.jsonl``; default ``$TEACHER_ATTRIBUTION_ALPACAEVAL``.
        :func:`build_alpacaeval` (CLI: ``attribute-teacher data alpacaeval -o DIR``) writes it.
    skip_invalid, max_chars
        As for :class:`~attribution.io.RecordReader` (default: no length limit).

    Raises
    ------
    InputError
        ``E603`` for an unknown split; ``E602`` when no directory is given or it lacks the
        file; ``E110`` when the file holds no valid record; a bad record otherwise.
    """
    _check_choice("split", split, ALPACAEVAL_SPLITS)
    root = data_dir if data_dir is not None else os.environ.get(ALPACAEVAL_ENV)
    name = f"{split}.jsonl"
    if not root:
        raise _missing(ALPACAEVAL_TASK, split, f"(no directory: pass data_dir= or set {ALPACAEVAL_ENV})",
                       f"{name}; build it with 'attribute-teacher data alpacaeval -o DIR' when online")
    path = Path(root) / name
    if not path.is_file():
        raise _missing(ALPACAEVAL_TASK, split, Path(root), name)
    return read_records(path, require_teacher=split.startswith("teachers"), skip_invalid=skip_invalid,
                        max_chars=max_chars)


def alpacaeval_cache_dir() -> Path:
    """Download cache of AlpacaEval outputs: ``$XDG_CACHE_HOME/teacher-attribution/alpaca_eval``."""
    return default_cache_dir().parent / "alpaca_eval"


def fetch_alpacaeval_outputs(model: str, *, cache_dir: str | os.PathLike | None = None,
                             base_url: str = ALPACAEVAL_URL, download: bool = True) -> Path:
    """Path of ``<model>/model_outputs.json`` in the cache, downloaded first when missing.

    Raises
    ------
    AttributionError
        ``E601`` when the download fails (offline: pass a local copy of AlpacaEval's
        ``results/`` folder as ``cache_dir``); ``E602`` when missing and ``download=False``.
    """
    cache = Path(cache_dir) if cache_dir is not None else alpacaeval_cache_dir()
    path = cache / model / "model_outputs.json"
    if path.is_file():
        return path
    if not download:
        raise _missing(ALPACAEVAL_TASK, model, cache, f"{model}/model_outputs.json")
    url = f"{base_url.rstrip('/')}/{urllib.parse.quote(model)}/model_outputs.json"
    try:
        return fetch(url, path)
    except AttributionError as err:
        cause = err.__cause__
        detail = getattr(cause, "reason", None) or cause or err
        raise AttributionError(f"could not download {url}: {detail}. Offline? Pass cache_dir= (CLI: --cache-dir) "
                               "naming a copy of AlpacaEval's results/ folder (<model>/model_outputs.json)",
                               code="E601") from err


def read_alpacaeval_outputs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of one ``model_outputs.json`` (a JSON list of ``{instruction, output, generator, dataset}``).

    Raises
    ------
    InputError
        When the file is not such a list (naming the file and the first bad row).
    """
    source = str(path)
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"not a JSON list of model outputs: {err}", source=source, code="E102") from None
    if not isinstance(rows, list):
        raise InputError("not a JSON list of model outputs", source=source, code="E102")
    for number, row in enumerate(rows):
        if not (isinstance(row, dict) and isinstance(row.get("instruction"), str)
                and isinstance(row.get("output", ""), (str, type(None)))):
            raise InputError(f"item {number} needs a string 'instruction' and 'output'", source=source, code="E102")
    return rows


def build_alpacaeval(out_dir: str | os.PathLike, *, teachers: Sequence[str] = ALPACAEVAL_TEACHERS,
                     students: Sequence[str] | Mapping[str, str | None] = ALPACAEVAL_STUDENTS,
                     seed: int = ALPACAEVAL_SEED, cache_dir: str | os.PathLike | None = None,
                     base_url: str = ALPACAEVAL_URL, download: bool = True) -> dict[str, Any]:
    """Build the benchmark layout from AlpacaEval's published per-model outputs.

    Each model's ``model_outputs.json`` is read from the cache (downloaded when missing).
    The instructions (all models' together) are split by :func:`split_instructions`;
    teachers' outputs go to ``teachers_reference.jsonl`` and ``teachers_audit.jsonl``
    (``teacher`` = the model), students' audit-half outputs to ``students_audit.jsonl``
    (``student`` = the model, ``teacher`` = its documented teacher). Every record has
    ``id`` (:func:`alpacaeval_id`), ``task="alpaca_eval"`` and ``prompt`` (the instruction).
    Empty outputs are left out (counted in ``empty``), as is a repeated instruction of one
    model. A ``manifest.json`` records the models, seed, sources and counts. Everything is
    read before anything is written, and each file is written atomically.

    Parameters
    ----------
    out_dir : str or Path
        Target directory (created if needed).
    teachers : sequence of str
        Candidate teachers (AlpacaEval folder names).
    students : sequence of str, or mapping of str to str or None
        Students; a mapping gives each one's teacher label, a sequence takes it from
        :func:`documented_teacher` (no ``teacher`` field when undocumented).
    seed : int, default=0
        Seed of the split (0 reproduces the shared copy).
    cache_dir, base_url, download
        See :func:`fetch_alpacaeval_outputs`.

    Returns
    -------
    dict
        ``files`` (``{file name: number of records}``), ``instructions``, ``reference``,
        ``audit`` (half sizes), ``empty`` (``{model: outputs left out}``).
    """
    labels = dict(students) if isinstance(students, Mapping) else {s: documented_teacher(s) for s in students}
    if not teachers:
        raise input_error("E603", field="teachers", what="teachers", value="(none)", choices="AlpacaEval models")
    overlap = sorted(set(teachers) & set(labels))
    if overlap:
        raise input_error("E603", field="students", what="student (it is also a teacher)", value=overlap[0],
                          choices="models not among the teachers")
    rows: dict[str, list[dict[str, Any]]] = {}
    sources: dict[str, str] = {}
    for model in [*teachers, *labels]:
        path = fetch_alpacaeval_outputs(model, cache_dir=cache_dir, base_url=base_url, download=download)
        rows[model] = read_alpacaeval_outputs(path)
        sources[model] = hashlib.sha256(path.read_bytes()).hexdigest()
    reference, audit = split_instructions(row["instruction"] for model_rows in rows.values() for row in model_rows)
    halves = {**{i: "reference" for i in reference}, **{i: "audit" for i in audit}}
    files: dict[str, list[dict[str, Any]]] = {split: [] for split in ALPACAEVAL_SPLITS}
    empty: dict[str, int] = {}
    for model, model_rows in rows.items():
        is_teacher = model not in labels
        by_id: dict[str, dict[str, Any]] = {}
        for row in model_rows:
            key = alpacaeval_id(row["instruction"])
            output = row.get("output") or ""
            if not output.strip():
                empty[model] = empty.get(model, 0) + 1
                continue
            if key in by_id:
                continue
            record = {"id": key, "task": ALPACAEVAL_TASK, "prompt": row["instruction"], "output": output}
            if is_teacher:
                record["teacher"] = model
            else:
                record["student"] = model
                if labels[model] is not None:
                    record["teacher"] = labels[model]
            by_id[key] = record
        for key in sorted(by_id):
            half = halves[key]
            if is_teacher:
                files[f"teachers_{half}"].append(by_id[key])
            elif half == "audit":
                files["students_audit"].append(by_id[key])
    out = Path(out_dir)
    counts = {f"{split}.jsonl": write_jsonl(out / f"{split}.jsonl", files[split]) for split in ALPACAEVAL_SPLITS}
    manifest = {"source": base_url, "seed": seed, "task": ALPACAEVAL_TASK, "instructions": len(halves),
                "reference": len(reference), "audit": len(audit), "teachers": list(teachers),
                "students": {s: labels[s] for s in labels}, "model_outputs_sha256": sources,
                "files": counts, "empty": empty}
    with atomic_write(out / "manifest.json") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return {"files": counts, "instructions": len(halves), "reference": len(reference), "audit": len(audit),
            "empty": empty}


@lru_cache(maxsize=1)
def _documented_table() -> str:
    return resources.files("attribution").joinpath("data/documented_teachers.json").read_text(encoding="utf-8")


def documented_teachers() -> list[dict[str, Any]]:
    """Documented teachers of well-known distilled models (package data), one dict per model.

    Keys: ``model``, ``alpaca_eval`` (its AlpacaEval folder, or None), ``base``, ``teacher``
    (AlpacaEval spelling of the teacher; ``none`` for human-written data), ``data`` (what
    the fine-tuning data was) and ``sources`` (model card / paper URLs). The teacher is the
    *dominant documented* source; some data sets mix sources.
    """
    return json.loads(_documented_table())["models"]


def documented_teacher(model: str) -> str | None:
    """The documented teacher of ``model`` (its name or AlpacaEval folder), ``"none"`` for a
    model trained on human-written data, None when the table does not know it."""
    for row in documented_teachers():
        if model in (row["model"], row["alpaca_eval"]):
            return row["teacher"]
    return None


def _layout_hint() -> str:
    return (f"{JSONL_LAYOUT.format(task='<task>', split='teacher')} and "
            f"{JSONL_LAYOUT.format(task='<task>', split='student')}, or the authors' CSVs")


def _missing(task: str, split: str, root: Path | str, expected: str) -> InputError:
    return input_error("E602", task=task, split=split, path=root, expected=expected)


def _check_choice(what: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise input_error("E603", field=what, what=what, value=value, choices=", ".join(choices))


__all__ = ["ALPACAEVAL_ENV", "ALPACAEVAL_SPLITS", "ALPACAEVAL_STUDENTS", "ALPACAEVAL_TASK", "ALPACAEVAL_TEACHERS",
           "ALPACAEVAL_URL", "DATA_ENV", "PAPER_QA_TASKS", "PAPER_QA_TEACHERS", "PAPER_QA_URL", "SPLITS",
           "AuthorsCsvReader", "PaperQAReader", "alpacaeval_cache_dir", "alpacaeval_id", "build_alpacaeval",
           "csv_name", "default_cache_dir", "documented_teacher", "documented_teachers", "download_paper_qa",
           "export_paper_qa", "fetch", "fetch_alpacaeval_outputs", "load_alpacaeval", "load_paper_qa",
           "read_alpacaeval_outputs", "resolve_data_dir", "split_instructions"]
