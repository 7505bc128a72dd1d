"""Render a ranking result as an auditor's report: self-contained HTML, Markdown with PNGs, or PDF.

The report shows what :func:`attribution.api.rank_student` (``attribute-teacher rank``) found and
nothing more: it computes no new numbers. It holds

- a title naming the suspect, and the case ID, auditor and organisation when given
  (:class:`~attribution.report.case.CaseDetails`);
- the verdict, its evidence (level, each test's p-value and the rival behind it, the paired scores:
  :mod:`attribution.report.evidence`), a histogram of the per-prompt differences behind the paired test (top
  candidate minus runner-up, ``verdict_scores``), and the ranking of the candidate families (with families) and
  teachers (probability, 95% interval, support), overall and per task;
- plots of the per-output evidence, when the result kept its ``outputs``;
- the templates that drove the decision: their share of the student's outputs beside their share of
  each teacher's references, with example spans (and whole outputs with ``examples=N``);
- the methodology (features, classifier, references, the verdict's tests and alpha) and the
  limitations (the verdict's error rates measured on this project's benchmarks,
  :mod:`attribution.report.error_rates`), written from the result's own settings;
- the counts (reference outputs per teacher; student outputs used, empty and skipped, and which
  records were skipped), the input checks' warnings, and the date, versions, settings, seeds and
  SHA-256 of every input.

HTML reports embed their plots as base64 PNGs and load nothing from elsewhere (no script, font or
stylesheet), so one file can be archived or mailed. Markdown reports write their plots beside the
``.md`` file (``report_differences.png``, ``report_ranking.png``, ``report_outputs.png``). PDF reports are the
HTML printed by headless Chromium (:mod:`attribution.report.pdf`), with a running header and page numbers on each
page. The same result and date render to the same HTML and Markdown bytes. Plots need matplotlib (the
``[report]`` extra).

Examples
--------
>>> from attribution.report import write_report
>>> write_report(result, "report.html")          # doctest: +SKIP
>>> write_report(result, "report.pdf")           # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

from ..errors import Errors, InputError
from ..io import atomic_write, write_together
from .case import CaseDetails
from .document import format_interval
from .html import render_document as _html_document
from .markdown import render_document as _markdown_document
from .plots import PLOT_KEYS, TASK_COLORS, render_plots
from .sections import GLOSSARY, build_document, verdict_sentence
from .validate import RESULT_SCHEMA, check_result

#: Report types by file suffix.
SUFFIXES = (".html", ".htm", ".md", ".pdf")


def report_files(path: str | os.PathLike) -> list[Path]:
    """Every file :func:`write_report` may write for ``path`` (a Markdown report's PNGs too);
    ``E605`` for a report type it cannot write (so the CLI refuses it before any work)."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(Errors.E605.format(suffix=suffix or "(none)"), source=str(target), code="E605")
    if suffix != ".md":
        return [target]
    return [target, *(_png_path(target, key) for key in PLOT_KEYS)]


def _png_path(target: Path, key: str) -> Path:
    return target.with_name(f"{target.stem}_{key}.png")


def report_date() -> str:
    """Today's date (UTC), or the date of ``SOURCE_DATE_EPOCH`` when set (reproducible builds)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    when = (_dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch.isdigit()
            else _dt.datetime.now(_dt.timezone.utc))
    return when.strftime("%Y-%m-%d (UTC)")


def render_html(result: dict[str, Any], plots: dict[str, bytes], *, date: str | None = None,
                examples: int = 0, case: CaseDetails | None = None) -> str:
    """The report as one self-contained HTML document (plots as base64 PNGs; no scripts)."""
    return _html_document(build_document(result, plots, date=date or report_date(), examples=examples, case=case),
                          plots)


def render_markdown(result: dict[str, Any], images: dict[str, str], *, date: str | None = None,
                    examples: int = 0, case: CaseDetails | None = None) -> str:
    """The report as Markdown; ``images`` maps plot keys to PNG file names beside it."""
    return _markdown_document(build_document(result, images, date=date or report_date(), examples=examples,
                                             case=case), images)


def write_report(result: dict[str, Any], path: str | os.PathLike, *, date: str | None = None, examples: int = 0,
                 chromium: str | os.PathLike | None = None, case: CaseDetails | None = None) -> Path:
    """Write an auditor's report of a ranking result, as HTML, Markdown or PDF by the file suffix.

    Parameters
    ----------
    result : dict
        A result of :func:`attribution.api.rank_student` as the CLI completes it: ``n_outputs``,
        ``ranking``, and optionally ``verdict``, ``tasks``, ``evidence``, ``outputs`` (per-output
        probabilities; without them the report says so instead of plotting them), ``checks``,
        ``warnings``, ``run`` (reference counts, settings, skipped records), ``signature``,
        ``inputs`` and ``skipped``. What is missing is named as missing in the report.
    path : str or Path
        ``.html`` (self-contained, plots embedded), ``.md`` (plots written beside it as
        ``<stem>_differences.png``, ``<stem>_ranking.png`` and ``<stem>_outputs.png``) or ``.pdf`` (the HTML
        printed by headless Chromium). Written atomically.
    date : str, optional
        The report's date; default today (UTC, or ``SOURCE_DATE_EPOCH``).
    examples : int, default=0
        Whole student outputs to show per evidence template (when the result kept them: ``rank
        --examples N``).
    chromium : str or Path, optional
        The Chromium binary for PDF (default: ``ATTRIBUTION_CHROMIUM``, else found on ``PATH``).
    case : CaseDetails, optional
        The suspect's name for the title (default: the result's ``student``, else the student file's
        name) and the case ID, auditor and organisation to show (each only when given).

    Returns
    -------
    Path
        The report file.

    Raises
    ------
    InputError
        ``E605`` for another suffix; ``E604`` when ``result`` is not a ranking result (every
        problem is listed); ``E606``/``E607`` when Chromium is missing or cannot print a PDF.
    MissingDependencyError
        matplotlib is not installed (``pip install 'teacher-attribution[report]'``).
    """
    # over 60 lines only by its numpydoc docstring; the body is 25 lines
    target = Path(path)
    suffix = target.suffix.lower()
    report_files(target)  # E605 for another suffix
    check_result(result)
    if suffix == ".pdf":
        from .pdf import find_chromium, html_to_pdf

        binary = find_chromium(chromium)  # E606 before any rendering
        html_to_pdf(render_html(result, render_plots(result), date=date, examples=examples, case=case), target,
                    chromium=binary)
        return target
    plots = render_plots(result)
    with write_together():  # a Markdown report and its PNGs appear together
        if suffix == ".md":
            names = {key: _png_path(target, key).name for key in plots}
            for key, png in plots.items():
                with atomic_write(_png_path(target, key), "wb") as handle:
                    handle.write(png)
            text = render_markdown(result, names, date=date, examples=examples, case=case)
        else:
            text = render_html(result, plots, date=date, examples=examples, case=case)
        with atomic_write(target) as handle:
            handle.write(text)
    return target


__all__ = ["GLOSSARY", "PLOT_KEYS", "RESULT_SCHEMA", "SUFFIXES", "TASK_COLORS", "CaseDetails", "check_result",
           "format_interval", "render_html", "render_markdown", "render_plots", "report_date", "report_files",
           "verdict_sentence", "write_report"]
