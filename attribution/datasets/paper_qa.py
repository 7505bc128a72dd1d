"""The paper authors' released QA outputs (Wadhwa et al.): readers, download cache, export.

See the package docstring (:mod:`attribution.datasets`) for the layouts.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import AttributionError, Errors, InputError, input_error
from ..io import Record, RecordReader, atomic_write, write_jsonl

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
    check_choice("task", task, PAPER_QA_TASKS)
    check_choice("teacher", teacher, tuple(PAPER_QA_TEACHERS))
    check_choice("split", split, SPLITS)
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
        check_choice("split", split, SPLITS)
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
        check_choice("split", self.split, SPLITS)
        tasks = [self.tasks] if isinstance(self.tasks, str) else None if self.tasks is None else list(self.tasks)
        for task in tasks or ():
            check_choice("task", task, PAPER_QA_TASKS)
        teachers = ([self.teachers] if isinstance(self.teachers, str)
                    else list(PAPER_QA_TEACHERS) if self.teachers is None else list(self.teachers))
        for teacher in teachers:
            check_choice("teacher", teacher, tuple(PAPER_QA_TEACHERS))
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
                        raise missing_data_error(task, self.split, cache, name)
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
                raise missing_data_error("*", self.split, root, JSONL_LAYOUT.format(task="{task}", split=self.split))
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
                raise missing_data_error(task, self.split, root, f"{jsonl.name} or the authors' CSVs ({names[0]}, ...)")
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


def _layout_hint() -> str:
    return (f"{JSONL_LAYOUT.format(task='<task>', split='teacher')} and "
            f"{JSONL_LAYOUT.format(task='<task>', split='student')}, or the authors' CSVs")


def missing_data_error(task: str, split: str, root: Path | str, expected: str) -> InputError:
    """E602: the files of a released data set's split are not where they were looked for."""
    return input_error("E602", task=task, split=split, path=root, expected=expected)


def check_choice(what: str, value: Any, choices: Iterable[str]) -> None:
    """E603 unless ``value`` is one of ``choices`` (a task, teacher or split name)."""
    choices = tuple(choices)
    if value not in choices:
        raise input_error("E603", field=what, what=what, value=value, choices=", ".join(choices))
