"""The report's content as a small document model, rendered to HTML and Markdown alike.

Builders return blocks (headings, paragraphs, tables, images, definition lists) holding plain text
and a few inline marks (code, strong, quoted spans); the renderers escape every piece of text. So
both formats say the same thing, and untrusted labels never become markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .validate import is_number


@dataclass(frozen=True)
class Code:
    """Inline code: a template, a command, a setting's value."""

    text: str


@dataclass(frozen=True)
class Strong:
    text: str


@dataclass(frozen=True)
class Quotes:
    """Quoted spans of the student's outputs, one per line."""

    items: tuple[str, ...]


Inline = str | Code | Strong | Quotes
#: A paragraph or a table cell: one inline piece or several in a row.
Text = Inline | tuple[Inline, ...]


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Para:
    """A paragraph; ``kind``: "" (body), "note" (smaller, grey), "verdict-STATUS", "warning" or
    "output" (a full output, line breaks kept)."""

    text: Text
    kind: str = ""


@dataclass(frozen=True)
class Table:
    """``numeric``: right-aligned columns; ``kind`` "settings" wraps long values in a fixed layout."""

    header: tuple[str, ...]
    rows: tuple[tuple[Text, ...], ...]
    numeric: tuple[int, ...] = ()
    kind: str = ""


@dataclass(frozen=True)
class Image:
    key: str
    alt: str


@dataclass(frozen=True)
class Terms:
    pairs: tuple[tuple[str, str], ...]


Block = Heading | Para | Table | Image | Terms


@dataclass
class Document:
    """``header``: the running header of each printed page (default: the title)."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    header: str = ""

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)


def inlines(text: Text) -> tuple[Inline, ...]:
    """A paragraph's or cell's pieces, in order."""
    return text if isinstance(text, tuple) else (text,)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = (),
          kind: str = "") -> Table:
    """A :class:`Table` whose cells that are not marks become text (numbers via ``str``)."""
    def cell(value: Any) -> Text:
        return value if isinstance(value, (str, Code, Strong, Quotes, tuple)) else str(value)

    return Table(tuple(header), tuple(tuple(cell(c) for c in row) for row in rows), tuple(numeric), kind)


def num(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or n/a."""
    return f"{float(value):.{digits}f}" if is_number(value) else "n/a"


def pct(value: Any) -> str:
    """A share as a whole percentage, or n/a."""
    return f"{100 * float(value):.0f}%" if is_number(value) else "n/a"


def format_interval(row: dict[str, Any]) -> str:
    """The bootstrap interval of a ranking row's probability, or n/a (older results have none)."""
    low, high = row.get("ci_low"), row.get("ci_high")
    return f"{num(low)}-{num(high)}" if is_number(low) and is_number(high) else "n/a"


__all__ = ["Block", "Code", "Document", "Heading", "Image", "Para", "Quotes", "Strong", "Table", "Terms",
           "format_interval", "inlines", "num", "pct", "table"]
