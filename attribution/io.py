"""Stream and validate output records from JSON Lines or CSV files (results are written by
:mod:`attribution.outputs`, whose writers are importable from here too).

A record is one model output with optional metadata::

    {"id": "q17", "task": "commonsenseqa", "teacher": "llama-3-8b", "student": "gpt2",
     "prompt": "Question: ...", "output": "The answer is A because ..."}

The text lives in ``output`` (or ``text``, or a field named by the caller). Files are
read line by line, so memory stays flat however long they are. Every problem is
reported as ``FILE:LINE: what is wrong [Exxx]``; with ``skip_invalid=True`` bad records
are skipped and remembered in :attr:`RecordReader.skipped` instead.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from . import registry
from .errors import InputError, input_error
from .outputs import atomic_write, check_outputs, write_jsonl, write_together

#: Fields the toolkit understands; anything else in a record is kept in ``extra``.
KNOWN_FIELDS = ("id", "task", "teacher", "family", "student", "prompt", "output", "text")
#: Default text fields, tried in order.
TEXT_FIELDS = ("output", "text")
#: Texts longer than this are rejected unless the caller raises the limit (0 = no limit).
DEFAULT_MAX_CHARS = 100_000
#: File suffixes of each input format (the ``input_formats`` registry, where a new format registers
#: ``rows(reader) -> iterator of (line, dict or InputError)`` with its ``suffixes``).
JSONL_SUFFIXES: tuple[str, ...] = registry.input_formats.entry("jsonl").meta["suffixes"]
CSV_SUFFIXES: tuple[str, ...] = registry.input_formats.entry("csv").meta["suffixes"]
#: Largest CSV field the reader accepts (the csv module's own default, 131,072, is below --max-chars).
CSV_FIELD_LIMIT = 2**31 - 1
_RECORD_STRINGS = ("output", "text", "id", "task", "teacher", "family", "student", "prompt")


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
    #: The teacher's model family (e.g. ``gpt-4`` for ``gpt4_0314``); reference records only, optional.
    family: str | None = None

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
    skipped_names : list of dict
        For each skipped record (in the order of :attr:`skipped`), its ``student``, ``teacher`` and
        ``task`` when they are non-empty strings (``rank --group-by`` names a group whose every
        record was skipped).
    n_read : int
        Valid records yielded so far.
    n_rows : int
        Records seen so far, valid or not (0 after a full pass: the file holds no record).
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
        self.skipped_names: list[dict[str, str]] = []
        self.n_read = 0
        self.n_rows = 0

    @property
    def source(self) -> str:
        return str(self.path)

    def __iter__(self) -> Iterator[Record]:
        try:
            found = self.path.is_file()
        except OSError:  # e.g. a name too long for the file system: no such file can exist
            found = False
        if not found:
            raise input_error("E109", source=self.source)
        suffix = self.path.suffix.lower()
        rows_of = _format_of(suffix)
        if rows_of is None:
            raise input_error("E111", source=self.source, suffix=suffix or "(none)")
        rows = rows_of(self)
        for line, row in rows:
            self.n_rows += 1
            try:
                if isinstance(row, InputError):
                    raise row
                record = self._validate(row, line)
            except InputError as err:
                if not self.skip_invalid:
                    raise
                self.skipped.append(err)
                self.skipped_names.append(_names(row))
                continue
            self.n_read += 1
            yield record

    def no_records_error(self) -> InputError:
        """The error for a pass that yielded nothing: an empty file (E119) or only bad records (E110)."""
        return input_error("E119" if self.n_rows == 0 else "E110", source=self.source)

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

    def jsonl_rows(self) -> Iterator[tuple[int, Any]]:
        """The ``jsonl`` input format: each non-blank line's JSON value, or the error that line makes."""
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
                except RecursionError:
                    yield number, input_error("E101", source=self.source, line=number,
                                              detail="nested too deeply")
                except ValueError as exc:  # e.g. an integer of more than 4,300 digits
                    yield number, input_error("E101", source=self.source, line=number, detail=str(exc))

    def csv_rows(self) -> Iterator[tuple[int, Any]]:
        """The ``csv`` input format: each row under the header as a dict, or the error that row makes."""
        with self.path.open("rb") as handle:
            bad: dict[int, InputError] = {}

            def text_lines() -> Iterator[str]:
                for number, text in self._decoded_lines(handle):
                    if isinstance(text, InputError):
                        bad[number] = text
                        yield "\n"  # keep csv's line count aligned with the file
                    else:
                        yield text

            csv.field_size_limit(max(csv.field_size_limit(), CSV_FIELD_LIMIT))
            reader = csv.reader(text_lines(), strict=True)
            header: list[str] | None = None
            start = 1
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:
                    line, start = start, reader.line_num + 1
                    bad.clear()
                    detail = ("a quoted field opened here is never closed" if "end of data" in str(exc)
                              else str(exc))
                    yield line, input_error("E115", source=self.source, line=line, detail=detail)
                    if header is None:
                        return  # no header, no records
                    continue
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
        for key in (name, *_RECORD_STRINGS):
            _check_unicode(row.get(key), key, src, line)
        values: dict[str, str | None] = {}
        for key in ("id", "task", "teacher", "family", "student", "prompt"):
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


#: Fields of a skipped record that :attr:`RecordReader.skipped_names` keeps.
_NAME_FIELDS = ("student", "teacher", "task")


def _names(row: Any) -> dict[str, str]:
    if not isinstance(row, dict):
        return {}
    return {key: row[key].strip() for key in _NAME_FIELDS if isinstance(row.get(key), str) and row[key].strip()}


def _format_of(suffix: str) -> Any:
    """The ``rows(reader)`` function of the first input format claiming ``suffix``, or None. A plugin
    registered by entry point names its suffixes as a ``suffixes`` attribute of that function."""
    for name in registry.input_formats.names():
        entry = registry.input_formats.entry(name)
        suffixes: Any = entry.meta.get("suffixes")
        if suffixes is None:
            suffixes = getattr(entry.load(), "suffixes", ())
        if suffix in suffixes:
            return entry.load()
    return None


def _check_unicode(value: Any, field: str, source: str, line: int) -> None:
    """Refuse strings that cannot be encoded (lone surrogates such as the JSON escape ``\\ud800``)."""
    if not isinstance(value, str) or value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise input_error("E114", source=source, line=line, field=field,
                          detail=f"lone surrogate U+{ord(value[exc.start]):04X} at character {exc.start + 1}") from None


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
        raise reader.no_records_error()
    return records


def file_digest(path: str | os.PathLike) -> dict[str, str]:
    """Name and SHA-256 of an input file, for reports (no absolute paths)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"name": Path(path).name, "sha256": digest.hexdigest()}


__all__ = ["CSV_FIELD_LIMIT", "CSV_SUFFIXES", "DEFAULT_MAX_CHARS", "JSONL_SUFFIXES", "KNOWN_FIELDS", "TEXT_FIELDS",
           "Record", "RecordReader", "atomic_write", "check_outputs", "file_digest", "read_records",
           "write_jsonl", "write_together"]
