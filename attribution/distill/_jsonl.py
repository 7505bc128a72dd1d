"""Append-only JSON Lines for resumable runs: one flushed line per finished record."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ..errors import input_error, model_error
from ..io import Record, RecordReader
from ..outputs import output_kind

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here
    fcntl = None  # type: ignore[assignment]


def read_prompts(path: str | os.PathLike, *, limit: int = 0) -> list[Record]:
    """Read prompt records (``prompt`` field, optional ``id``/``task``); ids must be unique.

    Raises :class:`~attribution.errors.InputError` naming FILE:LINE for a bad or duplicate record.
    """
    reader = RecordReader(path, text_field="prompt", max_chars=0)
    seen: dict[str, int] = {}
    records: list[Record] = []
    for record in reader:
        if record.key in seen:
            raise input_error("E405", source=reader.source, line=record.line, id=record.key,
                              first=seen[record.key])
        seen[record.key] = record.line or 0
        records.append(record)
        if limit and len(records) >= limit:
            break
    if not records:
        raise input_error("E110", source=reader.source)
    return records


def load_finished(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records already in an output file, repairing a cut-off last line in place.

    An interrupted run may leave a last line without its newline (or half-written JSON):
    that line is removed, so the record is generated again. A damaged line elsewhere is an error.
    """
    target = Path(path)
    if not target.is_file():
        return []
    data = target.read_bytes()
    good_end = data.rfind(b"\n") + 1  # everything after the last newline is an unfinished write
    if good_end < len(data):
        with target.open("r+b") as handle:
            handle.truncate(good_end)
        data = data[:good_end]
    rows: list[dict[str, Any]] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise input_error("E411", source=str(target), line=number,
                              detail=type(err).__name__) from err
        if not isinstance(row, dict) or "id" not in row:
            raise input_error("E411", source=str(target), line=number,
                              detail="not a record with an 'id'")
        rows.append(row)
    return rows


class AppendWriter:
    """Append one JSON object per line, flushed and synced, so a killed run loses nothing written."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] | None = None
        self._sync = True

    def __enter__(self) -> AppendWriter:
        self._handle = self.path.open("a", encoding="utf-8")
        # a device or FIFO (``-o /dev/null``) keeps nothing to sync, and fsync on it fails with EINVAL
        self._sync = stat.S_ISREG(os.fstat(self._handle.fileno()).st_mode)
        return self

    def write(self, row: dict[str, Any]) -> None:
        assert self._handle is not None, "use AppendWriter as a context manager"
        self._handle.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        self._handle.flush()
        if self._sync:
            os.fsync(self._handle.fileno())

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


@contextlib.contextmanager
def exclusive_output(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on the output file ``path`` while a run appends to it.

    A second run on the same file (another process, or another thread of this one) is refused at once with
    ``E422`` instead of querying every prompt again and appending each record twice. The lock is the file's
    own (``flock``), released when the run ends however it ends, a killed process included. A file created
    here and still empty at the end is removed again. A device or FIFO (``-o /dev/null``) is not locked:
    it is shared with every other program, and keeps nothing a second run could duplicate.
    """
    target = Path(path)
    if output_kind(target) != "file":
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    existed = target.exists()
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise model_error("E422", path=str(target)) from None
        try:
            yield
        finally:
            if not existed and os.fstat(fd).st_size == 0 and target.exists() and os.path.samestat(
                    os.fstat(fd), os.stat(target)):
                target.unlink()
    finally:
        os.close(fd)
