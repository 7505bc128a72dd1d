"""A :class:`~attribution.report.document.Document` as Markdown, its plots as PNG files beside it.

Untrusted text is made inert: one line per cell, every Markdown construct escaped (links, images,
emphasis, code, tables, math) and ``<``/``&`` HTML-escaped, and words that GitHub-flavoured renderers
would link by themselves (``http://``, ``www.``, e-mail addresses) in code spans; the only markup
written is ``<code>`` and those code spans.
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


#: What GitHub-flavoured renderers turn into a link by themselves (extended autolinks: a scheme, ``www.``, an e-mail
#: address), wherever it stands in a word; escapes and entities do not stop them (cmark-gfm links ``a&#64;b.com``).
_AUTOLINK_RE = re.compile(r"://|www\.|@|mailto:|xmpp:", re.IGNORECASE)


def md(value: Any) -> str:
    """Untrusted text as inert Markdown: one line, every Markdown and HTML character escaped, and every word
    that a renderer would make a link (``http://...``, ``www.x``, ``a@b.c``) in a code span, where none does."""
    text = " ".join(for_terminal(value).replace("\r", "\n").split("\n"))
    return "".join(_code_span(word) if _AUTOLINK_RE.search(word) else _escaped(word)
                   for word in re.split(r"(\s+)", text) if word)


def _escaped(text: str) -> str:
    return html.escape(_MD_PUNCTUATION.sub(r"\\\1", text), quote=False)


def _code_span(text: str) -> str:
    """``text`` as a code span: fenced by one backtick more than its longest run of them, padded with a space
    (which renderers strip) where it starts or ends with a backtick or a space, ``|`` escaped for table cells."""
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text[:1] in ("`", " ") or text[-1:] in ("`", " ") else ""
    return fence + pad + text.replace("|", "\\|") + pad + fence


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
