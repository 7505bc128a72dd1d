"""A :class:`~attribution.report.document.Document` as one self-contained HTML page.

Plots are embedded as base64 PNGs; nothing is loaded from elsewhere (no script, font or stylesheet),
so one file can be archived, mailed or printed to PDF. Every piece of text is escaped. Long values
(signatures, hashes, templates) wrap inside their cells, so no table is wider than the page, on
screen or printed (A4, ``@page``).
"""

from __future__ import annotations

import base64
import html
from typing import Any

from ..sanitize import for_terminal
from .document import Code, Document, Heading, Image, Inline, Para, Quotes, Strong, Table, Terms, Text, inlines

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;max-width:60rem;
margin:2rem auto;padding:0 1rem;color:#1a1a1a;line-height:1.45}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}h3{font-size:1rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem;max-width:100%}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top;overflow-wrap:break-word}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.settings{table-layout:fixed;width:100%}table.settings th:first-child{width:16rem}
table.settings td{overflow-wrap:anywhere}
table.evidence td.num{white-space:nowrap}table.evidence td:nth-child(2){min-width:9rem}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;background:#f5f5f5;padding:0 .2em;
white-space:pre-wrap;overflow-wrap:anywhere;word-break:break-word}
.verdict{padding:.6rem .9rem;border-left:4px solid #0072B2;background:#eef5fb}
.verdict.inconclusive,.verdict.unavailable{border-color:#E69F00;background:#fdf6e8}
.warning{padding:.3rem .6rem;border-left:4px solid #D55E00;background:#fbeee6}
.output{white-space:pre-wrap;overflow-wrap:anywhere;border-left:3px solid #ccc;padding-left:.6rem;font-size:.9rem}
img{max-width:100%;height:auto;display:block;margin:.5rem 0}
.note{color:#555;font-size:.9rem}dt{font-weight:600}dd{margin:0 0 .5rem 1rem}
@page{size:A4;margin:16mm 14mm}
@media print{body{max-width:none;margin:0;padding:0}h2{break-after:avoid}tr,img{break-inside:avoid}}
"""
#: Printed pages: the running header (the title, and the case ID when given) and "Page N of M" in the margins
#: (CSS paged media margin boxes; Chromium prints them from version 131).
PAGE_CSS = ("@page{{@top-left{{content:\"{header}\";font:8pt system-ui,sans-serif;color:#555}}"
            "@bottom-right{{content:\"Page \" counter(page) \" of \" counter(pages);"
            "font:8pt system-ui,sans-serif;color:#555}}}}")


def css_string(value: Any) -> str:
    """Text as the inside of a CSS string: every character but ASCII letters and digits as a hex escape ended by
    a space (which the escape consumes), so nothing in it can end the string or the stylesheet."""
    return "".join(ch if ch.isascii() and ch.isalnum() else f"\\{ord(ch):x} " for ch in for_terminal(value))


def _e(value: Any) -> str:
    return html.escape(for_terminal(value), quote=True)


def _inline(piece: Inline) -> str:
    if isinstance(piece, Code):
        return f"<code>{_e(piece.text)}</code>"
    if isinstance(piece, Strong):
        return f"<strong>{_e(piece.text)}</strong>"
    if isinstance(piece, Quotes):
        return "<br>".join(f"&ldquo;{_e(item)}&rdquo;" for item in piece.items)
    return _e(piece)


def _text(text: Text) -> str:
    return "".join(_inline(piece) for piece in inlines(text))


_NUM = ' class="num"'


def _table(block: Table) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in block.header)
    body = []
    for row in block.rows:
        cells = "".join(f"<td{_NUM if i in block.numeric else ''}>{_text(c)}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    kind = f' class="{block.kind}"' if block.kind else ""
    return f"<table{kind}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _para(block: Para) -> str:
    kind = block.kind
    if kind.startswith("verdict-"):
        kind = f"verdict {_e(kind[len('verdict-'):])}"
    text = _text(block.text)
    return f'<p class="{kind}">{text}</p>' if kind else f"<p>{text}</p>"


def render_document(doc: Document, plots: dict[str, bytes]) -> str:
    """The page; ``plots`` maps image keys to PNG bytes (an image without its plot is left out)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_e(doc.title)}</title>",
             f"<style>{CSS}{PAGE_CSS.format(header=css_string((doc.header or doc.title)[:160]))}\n"
             "</style></head><body>",
             f"<h1>{_e(doc.title)}</h1>"]
    for block in doc.blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{_e(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            parts.append(_para(block))
        elif isinstance(block, Table):
            parts.append(_table(block))
        elif isinstance(block, Image) and block.key in plots:
            data = base64.b64encode(plots[block.key]).decode("ascii")
            parts.append(f'<img alt="{_e(block.alt)}" src="data:image/png;base64,{data}">')
        elif isinstance(block, Terms):
            parts.append("<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in block.pairs) + "</dl>")
    parts += ["</body></html>", ""]
    return "\n".join(parts)


__all__ = ["CSS", "PAGE_CSS", "css_string", "render_document"]
