"""Read a JSON Lines file in byte-range partitions, each on its own (a Dask worker), with the same records,
the same skip rules and the same ``FILE:LINE`` errors as :class:`~attribution.io.RecordReader` on the whole file.

A partition is the lines that *start* in bytes ``[start, end)``; :func:`byte_ranges` puts every boundary at a
line start, reading a few bytes around each boundary and nothing else, so the client never reads the file.
A worker does not know how many lines come before its range: it numbers lines from 1, returns how many
it read, and the client adds the lines of the ranges before (:func:`line_offsets`) to the lines of any
error it reports. The second pass over a range (scoring) is given its true first line.

CSV files are not split (a quoted field may span lines): they are read by one process, as before.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from ..errors import InputError, input_error
from ..io import JSONL_SUFFIXES, RecordReader

#: Default bytes per partition: about 30k outputs of 500 characters, a few seconds of a worker's time.
DEFAULT_PARTITION_BYTES = 16 * 2**20


def splittable(path: str | os.PathLike) -> bool:
    """Whether ``path`` can be read in byte ranges (a JSON Lines file; CSV fields may span lines)."""
    return Path(path).suffix.lower() in JSONL_SUFFIXES


def byte_ranges(path: str | os.PathLike, partition_bytes: int = DEFAULT_PARTITION_BYTES) -> list[tuple[int, int]]:
    """``(start, end)`` byte ranges of about ``partition_bytes`` covering the file, each starting at a line.

    Raises ``E109`` when the path is not a file, ``E127`` for CSV and ``E111`` when it is not JSON Lines, like
    :class:`~attribution.io.RecordReader`.
    """
    path = Path(path)
    if not path.is_file():
        raise input_error("E109", source=str(path))
    if not splittable(path):
        raise input_error("E127" if path.suffix.lower() == ".csv" else "E111", source=str(path),
                          suffix=path.suffix.lower() or "(none)")
    size = path.stat().st_size
    starts = [0]
    with path.open("rb") as handle:
        for guess in range(partition_bytes, size, partition_bytes):
            if guess <= starts[-1]:
                continue  # the previous line ran past this guess
            handle.seek(guess - 1)
            handle.readline()  # to the end of the line holding byte guess-1: the next line starts at or after guess
            if handle.tell() < size:
                starts.append(handle.tell())
    return list(zip(starts, [*starts[1:], size]))


class RangeReader(RecordReader):
    """:class:`~attribution.io.RecordReader` over the lines starting in bytes ``[start, end)``.

    Lines are numbered from ``first_line`` (1 when unknown: the caller then shifts the lines of the
    errors by :func:`shift_lines`); a UTF-8 byte-order mark is tolerated only at the start of the file.

    Attributes
    ----------
    n_lines : int
        Lines read from the range so far (blank ones included).
    """

    def __init__(self, path: str | os.PathLike, start: int, end: int, *, first_line: int = 1,
                 **options: Any) -> None:
        super().__init__(path, **options)
        if not splittable(self.path):  # CSV is never split (a quoted field may span lines): E127, as byte_ranges
            suffix = self.path.suffix.lower() or "(none)"
            raise input_error("E127" if suffix == ".csv" else "E111", source=self.source, suffix=suffix)
        self.start, self.end, self.first_line = start, end, first_line
        self.n_lines = 0

    def _range_lines(self, handle: IO[bytes]) -> Iterator[bytes]:
        handle.seek(self.start)
        position = self.start
        while position < self.end:
            raw = handle.readline()
            if not raw:
                return
            position += len(raw)
            self.n_lines += 1
            yield raw

    def _decoded_lines(self, handle: Any) -> Iterator[tuple[int, str | InputError]]:
        lines: Iterable[bytes] = self._range_lines(handle)
        shift = self.first_line - 1
        if self.start > 0:  # a blank line 1 first: the reader takes a byte-order mark off line 1 only
            lines, shift = itertools.chain([b"\n"], lines), shift - 1
        for number, text in super()._decoded_lines(lines):  # type: ignore[arg-type]  # it only iterates
            if isinstance(text, InputError) and text.line is not None:
                text.line += shift
            yield number + shift, text


def line_offsets(n_lines: Sequence[int]) -> list[int]:
    """First line of each range, from the lines each one read."""
    return list(itertools.accumulate(n_lines, initial=1))[:-1]


def shift_lines(error: InputError, first_line: int) -> InputError:
    """``error`` of a range read from line 1, with the line it has in the whole file."""
    if error.line is not None:
        error.line += first_line - 1
    return error
