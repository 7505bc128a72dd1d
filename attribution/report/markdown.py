"""A :class:`~attribution.report.document.Document` as Markdown, its plots as PNG files beside it.

Untrusted text is made inert: one line per cell, every Markdown construct escaped (links, images,
emphasis, code, tables, math) and ``<``/``&`` HTML-escaped; the only markup written is ``<code>``.
"""

from __future__ import annotations

import html
import re
from typing import Any

from ..sanitize import for_terminal
from .document import Code, Document, Heading, Image, Inline, Para, Quotes, Strong, Table, Terms, Text, inlines

#: Characters that open Markdown constructs inside a line (links, images, emphasis, code, tables, math,
#: strikethrough; '<' and '&' are HTML-escaped). Backslash-escaped, '[x](javascript:...)' or
#: '![x](http://...)' from a label stays plain text, not a link or an image.
_MD_PUNCTUATION = re.compile(r"([\\`*_\[\]()!|~$#{}])")


def md(value: Any) -> str:
    """Untrusted text as inert Markdown: one line, every Markdown and HTML character escaped."""
    text = " ".join(for_terminal(value).replace("\r", "\n").split("\n"))
    return html.escape(_MD_PUNCTUATION.sub(r"\\\1", text), quote=False)


def _inline(piece: Inline) -> str:
    if isinstance(piece, Code):
        # inline HTML, not a backtick span: inside it the escapes of md() work (in a code span they would show)
        return f"<code>{md(piece.text)}</code>"
    if isinstance(piece, Strong):
        return f"**{md(piece.text)}**"
    if isinstance(piece, Quotes):
        return "; ".join(f"“{md(item)}”" for item in piece.items)
    return md(piece)


def _text(text: Text) -> str:
    return "".join(_inline(piece) for piece in inlines(text))


def _table(block: Table) -> list[str]:
    lines = ["| " + " | ".join(md(h) for h in block.header) + " |",
             "|" + "|".join("---:" if i in block.numeric else "---" for i in range(len(block.header))) + "|"]
    lines += ["| " + " | ".join(_text(c) for c in row) + " |" for row in block.rows]
    return lines + [""]


def render_document(doc: Document, images: dict[str, str]) -> str:
    """The Markdown text; ``images`` maps image keys to PNG file names (an image without one is left out)."""
    lines = [f"# {md(doc.title)}", ""]
    for block in doc.blocks:
        if isinstance(block, Heading):
            lines += [f"{'#' * block.level} {md(block.text)}", ""]
        elif isinstance(block, Para):
            prefix = "> " if block.kind == "output" else ""
            lines += [prefix + _text(block.text), ""]
        elif isinstance(block, Table):
            lines += _table(block)
        elif isinstance(block, Image) and block.key in images:
            lines += [f"![{md(block.alt)}]({images[block.key]})", ""]
        elif isinstance(block, Terms):
            lines += [f"- **{md(k)}**: {md(v)}" for k, v in block.pairs] + [""]
    return "\n".join(lines)


__all__ = ["md", "render_document"]
