"""Stream and validate output records from JSON Lines or CSV files; write results atomically.

A record is one model output with optional metadata::

    {"id": "q17", "task": "commonsenseqa", "teacher": "llama-3-8b", "student": "gpt2",
     "prompt": "Question: ...", "output": "The answer is A because ..."}

The text lives in ``output`` (or ``text``, or a field named by the caller). Files are
read line by line, so memory stays flat however long they are. Every problem is
reported as ``FILE:LINE: what is wrong [Exxx]``; with ``skip_invalid=True`` bad records
are skipped and remembered in :attr:`RecordReader.skipped` instead.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from .errors import InputError, input_error

#: Fields the toolkit understands; anything else in a record is kept in ``extra``.
KNOWN_FIELDS = ("id", "task", "teacher", "student", "prompt", "output", "text")
#: Default text fields, tried in order.
TEXT_FIELDS = ("output", "text")
#: Texts longer than this are rejected unless the caller raises the limit (0 = no limit).
DEFAULT_MAX_CHARS = 100_000
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
CSV_SUFFIXES = (".csv",)


@dataclass(frozen=True)
class Record:
    """One output text and where it came from."""

    output: str
    id: str | None = None
    task: str | None = None
    teacher: str | None = None
    student: str | None = None
    prompt: str | None = None
    source: str | None = None
    line: int | None = None

    @property
    def key(self) -> str:
        """A stable identifier: the record's ``id``, else ``line:N``."""
        return self.id if self.id is not None else f"line:{self.line}"

    def to_dict(self) -> dict[str, Any]:
        """The record as written back to JSONL (no ``source``/``line``, no empty fields)."""
        data = asdict(self)
        data.pop("source")
        data.pop("line")
        return {k: v for k, v in data.items() if v is not None}


class RecordReader:
    """Iterate over the valid records of one file, streaming.

    Parameters
    ----------
    path : str or Path
        A ``.jsonl`` (or ``.json``/``.ndjson`` holding JSON Lines) or ``.csv`` file.
    text_field : str, optional
        Field holding the text; by default ``output``, then ``text``.
    require_teacher : bool, default=False
        Reference files must label every record with its ``teacher``.
    skip_invalid : bool, default=False
        Skip bad records (remembered in :attr:`skipped`) instead of raising.
    max_chars : int, default=100_000
        Longest accepted text; 0 means no limit.

    Attributes
    ----------
    skipped : list of InputError
        The records skipped so far, each naming its file and line.
    n_read : int
        Valid records yielded so far.
    """

    def __init__(self, path: str | os.PathLike, *, text_field: str | None = None,
                 require_teacher: bool = False, skip_invalid: bool = False,
                 max_chars: int = DEFAULT_MAX_CHARS) -> None:
        self.path = Path(path)
        self.text_field = text_field
        self.require_teacher = require_teacher
        self.skip_invalid = skip_invalid
        self.max_chars = max_chars
        self.skipped: list[InputError] = []
        self.n_read = 0

    @property
    def source(self) -> str:
        return str(self.path)

    def __iter__(self) -> Iterator[Record]:
        if not self.path.is_file():
            raise input_error("E109", source=self.source)
        suffix = self.path.suffix.lower()
        if suffix in JSONL_SUFFIXES:
            rows = self._jsonl_rows()
        elif suffix in CSV_SUFFIXES:
            rows = self._csv_rows()
        else:
            raise input_error("E111", source=self.source, suffix=suffix or "(none)")
        for line, row in rows:
            try:
                if isinstance(row, InputError):
                    raise row
                record = self._validate(row, line)
            except InputError as err:
                if not self.skip_invalid:
                    raise
                self.skipped.append(err)
                continue
            self.n_read += 1
            yield record

    # -- parsing -----------------------------------------------------------------
    def _decoded_lines(self, handle: IO[bytes]) -> Iterator[tuple[int, str | InputError]]:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # tolerate a UTF-8 byte-order mark
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, input_error("E105", source=self.source, line=number,
                                          detail=f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1}")

    def _jsonl_rows(self) -> Iterator[tuple[int, Any]]:
        with self.path.open("rb") as handle:
            for number, text in self._decoded_lines(handle):
                if isinstance(text, InputError):
                    yield number, text
                    continue
                if not text.strip():
                    continue  # blank lines separate nothing in JSON Lines
                try:
                    yield number, json.loads(text)
                except json.JSONDecodeError as exc:
                    yield number, input_error("E101", source=self.source, line=number,
                                              detail=f"{exc.msg} at column {exc.colno}")

    def _csv_rows(self) -> Iterator[tuple[int, Any]]:
        with self.path.open("rb") as handle:
            bad: dict[int, InputError] = {}

            def text_lines() -> Iterator[str]:
                for number, text in self._decoded_lines(handle):
                    if isinstance(text, InputError):
                        bad[number] = text
                        yield "\n"  # keep csv's line count aligned with the file
                    else:
                        yield text

            reader = csv.reader(text_lines())
            header: list[str] | None = None
            start = 1
            for cells in reader:
                line, start = start, reader.line_num + 1
                errors = [bad.pop(n) for n in range(line, start) if n in bad]
                if errors:
                    yield line, errors[0]
                elif header is None:
                    header = cells
                elif not any(cell.strip() for cell in cells):
                    continue
                elif len(cells) != len(header):
                    yield line, input_error("E112", source=self.source, line=line,
                                            got=len(cells), expected=len(header))
                else:
                    yield line, dict(zip(header, cells))

    # -- validation --------------------------------------------------------------
    def _validate(self, row: Any, line: int) -> Record:
        src = self.source
        if not isinstance(row, dict):
            raise input_error("E102", source=src, line=line, got=type(row).__name__)
        fields = (self.text_field,) if self.text_field else TEXT_FIELDS
        name = next((f for f in fields if f in row), None)
        if name is None:
            raise input_error("E104", source=src, line=line, field=fields[0],
                              expected=" or ".join(repr(f) for f in fields))
        text = row[name]
        if not isinstance(text, str) or not text.strip():
            raise input_error("E103", source=src, line=line, field=name, got=_describe(text))
        if self.max_chars and len(text) > self.max_chars:
            raise input_error("E106", source=src, line=line, field=name,
                              n_chars=len(text), limit=self.max_chars)
        values: dict[str, str | None] = {}
        for key in ("id", "task", "teacher", "student", "prompt"):
            value = row.get(key)
            if value is None or value == "":
                values[key] = None
            elif key == "id" and isinstance(value, int) and not isinstance(value, bool):
                values[key] = str(value)
            elif isinstance(value, str):
                values[key] = value if key == "prompt" else value.strip()
            else:
                raise input_error("E113", source=src, line=line, field=key, got=_describe(value))
        if self.require_teacher and not values["teacher"]:
            if "teacher" in row:
                raise input_error("E103", source=src, line=line, field="teacher",
                                  got=_describe(row["teacher"]))
            raise input_error("E107", source=src, line=line, field="teacher")
        return Record(output=text, source=src, line=line, **values)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return "an empty string" if not value.strip() else "a string"
    return type(value).__name__ if not isinstance(value, bool) else "a boolean"


def read_records(path: str | os.PathLike, **options: Any) -> list[Record]:
    """Read all valid records of a file into a list (see :class:`RecordReader` for options).

    Raises
    ------
    InputError
        On the first bad record, or when the file holds no valid record at all.
    """
    reader = RecordReader(path, **options)
    records = list(reader)
    if not records:
        raise input_error("E110", source=reader.source)
    return records


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path`` and rename it into place only on success.

    An exception inside the block leaves no file (and no half-written one) behind.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        binary = "b" in mode
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> int:
    """Write dictionaries as JSON Lines atomically; return how many were written."""
    count = 0
    with atomic_write(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
    return count
