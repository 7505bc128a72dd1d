"""Render a ranking result as an auditor's report: self-contained HTML or Markdown with PNGs.

The report shows what :func:`attribution.api.rank_student` (``attribute-teacher rank``)
found and nothing more: it computes no new numbers. It holds

- the verdict and the ranking of the candidate teachers (probability and support), overall
  and per task;
- plots of the per-output evidence: the probability each output gives each teacher (a box
  and strip plot), when the result kept its ``outputs``;
- the templates that drove the decision, with example spans from the student's own outputs;
- the settings and versions (``signature``) and the SHA-256 of every input (``inputs``).

HTML reports embed their plots as base64 PNGs and load nothing from elsewhere (no script,
no font, no stylesheet), so one file can be archived or mailed. Markdown reports write their
plots as PNG files beside the ``.md`` file (``report_ranking.png``, ``report_outputs.png``).
The same result renders to the same bytes. Plots need matplotlib (the ``[report]`` extra).

Examples
--------
>>> from attribution.report import write_report
>>> write_report(result, "report.html")          # doctest: +SKIP
>>> write_report(result, "report.md")            # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .errors import Errors, InputError, missing_dependency
from .io import atomic_write, write_together
from .sanitize import for_terminal
from .schema import Anything, Enum, Int, List, Map, Num, Obj, Opt, SchemaError, Str

#: Report types by file suffix.
SUFFIXES = (".html", ".htm", ".md")
#: Plots of a Markdown report, written beside it as ``<stem>_<key>.png``.
PLOT_KEYS = ("ranking", "outputs")

# What a result must look like before any of it is rendered. Keys the renderers do not show are
# allowed (newer results may carry more); every shown field is type-checked.
_LABEL = Str(1_000)
_RANKING = List(Obj({"teacher": _LABEL, "probability": Num(0, 1), "support": Opt(Num(0, 1)),
                     "ci_low": Opt(Num(0, 1)), "ci_high": Opt(Num(0, 1))},
                    optional=("support", "ci_low", "ci_high"), extra=Anything()), 1, 10_000)
_VERDICT = Obj({"status": Enum("attributed", "inconclusive", "unavailable"), "teacher": Opt(_LABEL),
                "best_candidate": Opt(_LABEL), "p_unlisted": Opt(Num(0, 1)), "p_value": Opt(Num(0, 1)),
                "alpha": Opt(Num(0, 1)), "test": Opt(Str(200)),
                "p_paired": Opt(Num(0, 1)), "n_paired": Int(0), "runner_up": Opt(_LABEL)},
               optional=("teacher", "best_candidate", "p_unlisted", "p_value", "alpha", "test", "p_paired",
                         "n_paired", "runner_up"), extra=Anything())
RESULT_SCHEMA = Obj({
    "n_outputs": Int(0),
    "n_empty": Int(0),
    "skipped": Int(0),
    "ranking": _RANKING,
    "verdict": _VERDICT,
    "tasks": Map(Obj({"n_outputs": Int(0), "ranking": _RANKING, "verdict": _VERDICT}, optional=("verdict",),
                     extra=Anything()), max_len=10_000),
    "evidence": List(Obj({"teacher": _LABEL, "block": Str(100), "feature": Str(10_000), "weight": Num(),
                          "n_outputs": Int(0), "share_of_outputs": Num(0, 1), "task": Opt(_LABEL),
                          "examples": List(Str(10_000), 0, 100)},
                         optional=("teacher", "task", "share_of_outputs", "examples", "n_outputs", "weight"),
                         extra=Anything()), 0, 10_000),
    "outputs": List(Obj({"id": Str(10_000), "task": Opt(_LABEL), "probabilities": Map(Num(0, 1))},
                        optional=("id", "task"), extra=Anything())),
    "signature": Str(10_000),
    "inputs": Map(Obj({"name": Str(10_000), "sha256": Str(64, pattern="[0-9a-f]{64}")}, extra=Anything())),
}, optional=("n_empty", "skipped", "verdict", "tasks", "evidence", "outputs", "signature", "inputs"),
    extra=Anything())


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
#: Palette for per-task colours (colour-blind safe, Okabe-Ito).
TASK_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
#: How the numbers read, shown in every report.
GLOSSARY = (
    ("probability", "how strongly a typical output points at the teacher: the renormalized geometric mean of the "
                    "per-output probabilities. It does not grow with the number of outputs; with 5 candidates, "
                    "0.3 against four others near 0.2 is a clear lead."),
    ("95% interval", "the 2.5-97.5 percentiles of the probability over bootstrap resamples of the outputs: how much "
                     "it would move with another sample of the same student's outputs."),
    ("support", "share of bootstrap resamples of the outputs that keep the teacher first: sampling noise only, "
                "not model error."),
    ("p_value", "the p-value behind the verdict, the number to act on: the paired test's (does the top teacher "
                "beat every other candidate prompt by prompt?) when the teachers answered the student's prompts, "
                "else the unlisted-teacher test's (could a teacher outside the candidates explain the outputs as "
                "well?). The verdict names a teacher only when it is below alpha in every task."),
    ("weight", "a template's summed contribution to the top teacher's score over all outputs, relative to the "
               "average teacher (higher means more evidence for it)."),
)


def write_report(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write an auditor's report of a ranking result, as HTML or Markdown by the file suffix.

    Parameters
    ----------
    result : dict
        A result of :func:`attribution.api.rank_student` as the CLI completes it: ``n_outputs``,
        ``ranking`` (``teacher``, ``probability``, ``support``), and optionally ``verdict``,
        ``tasks``, ``evidence``, ``outputs`` (per-output probabilities; without them the report
        says so instead of plotting them), ``signature``, ``inputs`` and ``skipped``.
    path : str or Path
        ``.html`` (self-contained, plots embedded) or ``.md`` (plots written beside it as
        ``<stem>_ranking.png`` and ``<stem>_outputs.png``). Written atomically.

    Returns
    -------
    Path
        The report file.

    Raises
    ------
    InputError
        ``E605`` for another suffix; ``E604`` when ``result`` is not a ranking result (every
        problem is listed).
    MissingDependencyError
        matplotlib is not installed (``pip install 'teacher-attribution[report]'``).
    """
    target = Path(path)
    suffix = target.suffix.lower()
    report_files(target)  # E605 for another suffix
    check_result(result)
    plots = render_plots(result)
    with write_together():  # a Markdown report and its PNGs appear together
        if suffix == ".md":
            names = {key: _png_path(target, key).name for key in plots}
            for key, png in plots.items():
                with atomic_write(_png_path(target, key), "wb") as handle:
                    handle.write(png)
            text = render_markdown(result, names)
        else:
            text = render_html(result, plots)
        with atomic_write(target) as handle:
            handle.write(text)
    return target


def check_result(result: Any) -> None:
    """Raise one :class:`InputError` (``E604``) naming every way ``result`` is not a ranking result."""
    problems = []
    if not isinstance(result, dict):
        problems.append(f"expected a JSON object, got {type(result).__name__}")
    else:
        if not isinstance(result.get("n_outputs"), int) or isinstance(result.get("n_outputs"), bool):
            problems.append("'n_outputs' must be an integer")
        ranking = result.get("ranking")
        if not isinstance(ranking, list) or not ranking:
            problems.append("'ranking' must be a non-empty list")
        else:
            for i, row in enumerate(ranking):
                if not (isinstance(row, dict) and isinstance(row.get("teacher"), str)
                        and _is_number(row.get("probability"))):
                    problems.append(f"ranking[{i}] needs 'teacher' (string) and 'probability' (number)")
        for key, kind in (("evidence", list), ("outputs", list), ("tasks", dict), ("inputs", dict),
                          ("verdict", dict)):
            if result.get(key) is not None and not isinstance(result[key], kind):
                problems.append(f"'{key}' must be a {'list' if kind is list else 'JSON object'}")
        for i, row in enumerate(result.get("outputs") or []):
            if not (isinstance(row, dict) and isinstance(row.get("probabilities"), dict)):
                problems.append(f"outputs[{i}] needs 'probabilities' (object)")
                break
    if not problems:
        try:
            RESULT_SCHEMA.check(result, "result")
        except SchemaError as err:
            problems.append(str(err))
    if problems:
        raise InputError(Errors.E604.format(detail="; ".join(problems)), code="E604")


# -- plots ---------------------------------------------------------------------------------
def render_plots(result: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes of the report's plots: ``ranking`` always, ``outputs`` when the result has them."""
    try:
        import matplotlib
    except ImportError as err:
        raise missing_dependency("matplotlib", "report") from err
    # labels are plain text: a teacher named '$x^$' must not reach matplotlib's math parser
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        plots = {"ranking": _ranking_plot(result)}
        if result.get("outputs"):
            plots["outputs"] = _outputs_plot(result)
    return plots


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(width, height), dpi=100)
    fig.set_layout_engine("constrained")
    return fig


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})  # no version stamp: same bytes
    return buffer.getvalue()


def _teachers(result: dict[str, Any]) -> list[str]:
    return [row["teacher"] for row in result["ranking"]]


def _ranking_plot(result: dict[str, Any]) -> bytes:
    teachers = _teachers(result)
    probability = [float(row["probability"]) for row in result["ranking"]]
    fig = _figure(6.4, 0.5 * len(teachers) + 1.2)
    ax = fig.add_subplot()
    y = list(range(len(teachers)))[::-1]
    colors = ["#0072B2"] + ["#9DB9CF"] * (len(teachers) - 1)
    ax.barh(y, probability, color=colors)
    ax.axvline(1 / len(teachers), color="#666666", linestyle=":", linewidth=1, label="uniform")
    for yi, row in zip(y, result["ranking"]):
        support = row.get("support")
        note = f"{float(row['probability']):.3f}"
        if _is_number(support):
            note += f"  (support {float(support):.2f})"
        ax.text(float(row["probability"]) + 0.005, yi, note, va="center", fontsize=8)
    ax.set_yticks(y, teachers)
    ax.set_xlim(0, min(1.0, max(probability) * 1.45 + 0.05))
    ax.set_xlabel("probability (student level)")
    ax.set_title(f"Ranking from {result['n_outputs']} outputs", fontsize=10)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return _png(fig)


def _outputs_plot(result: dict[str, Any]) -> bytes:
    import numpy as np

    teachers = _teachers(result)
    outputs = result["outputs"]
    tasks = sorted({str(o.get("task")) for o in outputs})
    colors = {task: TASK_COLORS[i % len(TASK_COLORS)] for i, task in enumerate(tasks)}
    fig = _figure(7.2, 0.55 * len(teachers) + 1.6)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)  # jitter only: fixed, so the same result gives the same picture
    positions = list(range(len(teachers)))[::-1]
    columns = []
    for teacher in teachers:
        columns.append([float(o["probabilities"].get(teacher, np.nan)) for o in outputs])
    data = [np.asarray(c)[~np.isnan(c)] for c in columns]
    import matplotlib

    version = tuple(int(v) for v in matplotlib.__version__.split(".")[:2])
    horizontal = {"orientation": "horizontal"} if version >= (3, 10) else {"vert": False}
    ax.boxplot(data, positions=positions, widths=0.6, showfliers=False, **horizontal,
               medianprops={"color": "#000000"}, boxprops={"color": "#555555"},
               whiskerprops={"color": "#555555"}, capprops={"color": "#555555"})
    for pos, column in zip(positions, columns):
        jitter = rng.uniform(-0.22, 0.22, size=len(column))
        for task in tasks:
            pick = [i for i, o in enumerate(outputs) if str(o.get("task")) == task and not math.isnan(column[i])]
            if pick:
                ax.scatter(np.asarray(column)[pick], pos + jitter[pick], s=9, alpha=0.55, color=colors[task],
                           linewidths=0, label=task if pos == positions[0] else None)
    ax.axvline(1 / len(teachers), color="#666666", linestyle=":", linewidth=1)
    ax.set_yticks(positions, teachers)
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability of the teacher, per output")
    ax.set_title(f"Per-output evidence ({len(outputs)} outputs; box = quartiles, dotted = uniform)", fontsize=10)
    if len(tasks) > 1 or tasks != ["None"]:
        ax.legend(title="task", loc="lower right", fontsize=8, title_fontsize=8, frameon=False)
    return _png(fig)


# -- shared content ------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not (
        isinstance(value, float) and math.isnan(value))


def _num(value: Any, digits: int = 3) -> str:
    return f"{float(value):.{digits}f}" if _is_number(value) else "n/a"


def format_interval(row: dict[str, Any]) -> str:
    """The bootstrap interval of a ranking row's probability, or n/a (older results have none)."""
    low, high = row.get("ci_low"), row.get("ci_high")
    return f"{_num(low)}-{_num(high)}" if _is_number(low) and _is_number(high) else "n/a"


def verdict_sentence(verdict: dict[str, Any] | None) -> str:
    """One plain sentence saying what the verdict means."""
    from .api import describe_verdict

    return describe_verdict(verdict)


def _signature_rows(signature: Any) -> list[tuple[str, str]]:
    if not isinstance(signature, str) or not signature:
        return [("signature", "n/a")]
    rows = []
    for part in signature.split("|"):
        if "==" in part:  # "teacher-attribution==0.1.0"
            name, _, version = part.partition("==")
            rows.append((name, version))
        else:
            key, sep, value = part.partition("=")
            rows.append((key, value) if sep else ("", part))
    rows.append(("signature", signature))
    return rows


def _input_rows(inputs: Any) -> list[tuple[str, str, str]]:
    rows = []
    for role, info in sorted((inputs or {}).items()):
        if isinstance(info, dict):
            name = str(info.get("name", "")) + (f" ({info['source']})" if info.get("source") else "")
            rows.append((role, name, str(info.get("sha256", ""))))
        else:
            rows.append((role, str(info), ""))
    return rows


def _task_rows(result: dict[str, Any]) -> list[tuple[str, int, str, str, str, str]]:
    rows = []
    for task, sub in sorted((result.get("tasks") or {}).items()):
        best = (sub.get("ranking") or [{}])[0]
        verdict = sub.get("verdict") or {}
        rows.append((task, sub.get("n_outputs", ""), str(best.get("teacher", "")), _num(best.get("probability")),
                     _num(best.get("support"), 2), str(verdict.get("status", "n/a"))))
    return rows


def _evidence(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [row for row in result.get("evidence") or [] if isinstance(row, dict)]


# -- HTML ----------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;max-width:60rem;
margin:2rem auto;padding:0 1rem;color:#1a1a1a;line-height:1.45}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;background:#f5f5f5;padding:0 .2em}
.verdict{padding:.6rem .9rem;border-left:4px solid #0072B2;background:#eef5fb}
.verdict.inconclusive,.verdict.unavailable{border-color:#E69F00;background:#fdf6e8}
img{max-width:100%;height:auto;display:block;margin:.5rem 0}
.note{color:#555;font-size:.9rem}dt{font-weight:600}dd{margin:0 0 .5rem 1rem}
"""


def _e(value: Any) -> str:
    return html.escape(for_terminal(value), quote=True)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if i in numeric else ""
            cells.append(f"<td{cls}>{cell}</td>")  # cells are escaped by the caller
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def render_html(result: dict[str, Any], plots: dict[str, bytes]) -> str:
    """The report as one self-contained HTML document (plots as base64 PNGs; no scripts)."""
    verdict = result.get("verdict") or {}
    status = str(verdict.get("status", "unavailable"))
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>Teacher attribution report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>Teacher attribution report</h1>",
             f'<p class="verdict {_e(status)}"><strong>Verdict: {_e(status)}.</strong> '
             f"{_e(verdict_sentence(verdict or None))}</p>",
             f"<p>{_e(result['n_outputs'])} student outputs ranked"
             + (f"; {_e(result['skipped'])} invalid record(s) skipped" if result.get("skipped") else "")
             + ".</p>",
             "<h2>Ranking of the candidate teachers</h2>",
             _html_table(["rank", "teacher", "probability", "95% interval", "support"],
                         [(i + 1, _e(r["teacher"]), _num(r["probability"]), format_interval(r), _num(r.get("support"), 2))
                          for i, r in enumerate(result["ranking"])], numeric=(0, 2, 3, 4)),
             _img(plots["ranking"], "Bar chart: student-level probability of each candidate teacher")]
    task_rows = _task_rows(result)
    if task_rows:
        parts += ["<h3>Per task</h3>",
                  _html_table(["task", "outputs", "top teacher", "probability", "support", "verdict"],
                              [tuple(_e(c) for c in row) for row in task_rows], numeric=(1, 3, 4))]
    parts.append("<h2>Per-output evidence</h2>")
    if "outputs" in plots:
        parts += ['<p class="note">Each dot is one output: the probability it gives each teacher. The ranking '
                  "combines them (geometric mean); a wide spread means the outputs disagree.</p>",
                  _img(plots["outputs"], "Box and strip plot: per-output probability of each teacher")]
    else:
        parts.append('<p class="note">This result holds no per-output probabilities. Rank with '
                     "<code>--report</code> (or <code>rank_student(..., keep_outputs=True)</code>) to plot "
                     "them.</p>")
    parts.append("<h2>Templates that drove the decision</h2>")
    evidence = _evidence(result)
    if evidence:
        top = _e(evidence[0].get("teacher", result["ranking"][0]["teacher"]))
        parts.append(f'<p class="note">Features that pushed the outputs towards <strong>{top}</strong>, with '
                     "example spans from the student's own outputs. <code>pos</code> templates are Penn Treebank "
                     "tag sequences; <code>words</code> are word n-grams.</p>")
        rows = []
        for i, row in enumerate(evidence):
            examples = "<br>".join(f"&ldquo;{_e(x)}&rdquo;" for x in row.get("examples") or []) or "&mdash;"
            share = row.get("share_of_outputs")
            used = f"{_e(row.get('n_outputs', ''))}" + (f" ({float(share):.0%})" if _is_number(share) else "")
            rows.append((i + 1, _e(row.get("task") if row.get("task") is not None else "all"),
                         _e(row.get("block", "")), f"<code>{_e(row.get('feature', ''))}</code>",
                         _num(row.get("weight")), used, examples))
        parts.append(_html_table(["#", "task", "block", "template", "weight", "outputs using it", "examples"],
                                 rows, numeric=(0, 4, 5)))
    else:
        parts.append('<p class="note">No template evidence in this result.</p>')
    parts += ["<h2>How to read the numbers</h2><dl>"]
    parts += [f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in GLOSSARY]
    parts += ["</dl>", "<h2>Settings and versions</h2>",
              _html_table(["setting", "value"], [(_e(k), f"<code>{_e(v)}</code>")
                                                 for k, v in _signature_rows(result.get("signature"))]),
              "<h2>Inputs</h2>",
              _html_table(["role", "file", "SHA-256"],
                          [(_e(r), _e(n), f"<code>{_e(h)}</code>") for r, n, h in _input_rows(result.get("inputs"))])
              if result.get("inputs") else '<p class="note">No input hashes in this result.</p>',
              f'<p class="note">Rendered by teacher-attribution {_e(__version__)}.</p>',
              "</body></html>", ""]
    return "\n".join(parts)


# -- Markdown ------------------------------------------------------------------------------
#: Characters that open Markdown constructs inside a line (links, images, emphasis, code, tables, math,
#: strikethrough; '<' and '&' are HTML-escaped). Backslash-escaped, '[x](javascript:...)' or
#: '![x](http://...)' from a label stays plain text, not a link or an image.
_MD_PUNCTUATION = re.compile(r"([\\`*_\[\]()!|~$#{}])")


def _md(value: Any) -> str:
    """Untrusted text as inert Markdown: one line, every Markdown and HTML character escaped."""
    text = " ".join(for_terminal(value).replace("\r", "\n").split("\n"))
    return html.escape(_MD_PUNCTUATION.sub(r"\\\1", text), quote=False)


def _md_code(value: Any) -> str:
    # inline HTML, not a backtick span: inside it the escapes of _md work (in a code span they would show)
    return f"<code>{_md(value)}</code>"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines + [""]


def render_markdown(result: dict[str, Any], images: dict[str, str]) -> str:
    """The report as Markdown; ``images`` maps plot keys to PNG file names beside it."""
    verdict = result.get("verdict") or {}
    lines = ["# Teacher attribution report", "",
             f"**Verdict: {_md(verdict.get('status', 'unavailable'))}.** {_md(verdict_sentence(verdict or None))}",
             "",
             f"{result['n_outputs']} student outputs ranked"
             + (f"; {result['skipped']} invalid record(s) skipped" if result.get("skipped") else "") + ".", "",
             "## Ranking of the candidate teachers", ""]
    lines += _md_table(["rank", "teacher", "probability", "95% interval", "support"],
                       [(i + 1, _md(r["teacher"]), _num(r["probability"]), format_interval(r), _num(r.get("support"), 2))
                        for i, r in enumerate(result["ranking"])])
    lines += [f"![Student-level probability of each candidate teacher]({images['ranking']})", ""]
    task_rows = _task_rows(result)
    if task_rows:
        lines += ["### Per task", ""]
        lines += _md_table(["task", "outputs", "top teacher", "probability", "support", "verdict"],
                           [tuple(_md(c) for c in row) for row in task_rows])
    lines += ["## Per-output evidence", ""]
    if "outputs" in images:
        lines += ["Each dot is one output: the probability it gives each teacher. The ranking combines them "
                  "(geometric mean); a wide spread means the outputs disagree.", "",
                  f"![Per-output probability of each teacher]({images['outputs']})", ""]
    else:
        lines += ["This result holds no per-output probabilities. Rank with `--report` (or "
                  "`rank_student(..., keep_outputs=True)`) to plot them.", ""]
    lines += ["## Templates that drove the decision", ""]
    evidence = _evidence(result)
    if evidence:
        top = evidence[0].get("teacher", result["ranking"][0]["teacher"])
        lines += [f"Features that pushed the outputs towards **{_md(top)}**, with example spans from the "
                  "student's own outputs (`pos`: Penn Treebank tag sequences; `words`: word n-grams).", ""]
        rows = []
        for i, row in enumerate(evidence):
            share = row.get("share_of_outputs")
            used = f"{row.get('n_outputs', '')}" + (f" ({float(share):.0%})" if _is_number(share) else "")
            examples = "; ".join(f"“{_md(x)}”" for x in row.get("examples") or []) or "—"
            rows.append((i + 1, _md(row.get("task") if row.get("task") is not None else "all"),
                         _md(row.get("block", "")), _md_code(row.get("feature", "")), _num(row.get("weight")),
                         used, examples))
        lines += _md_table(["#", "task", "block", "template", "weight", "outputs using it", "examples"], rows)
    else:
        lines += ["No template evidence in this result.", ""]
    lines += ["## How to read the numbers", ""]
    lines += [f"- **{k}**: {_md(v)}" for k, v in GLOSSARY] + [""]
    lines += ["## Settings and versions", ""]
    lines += _md_table(["setting", "value"],
                       [(_md(k), _md_code(v)) for k, v in _signature_rows(result.get("signature"))])
    lines += ["## Inputs", ""]
    if result.get("inputs"):
        lines += _md_table(["role", "file", "SHA-256"],
                           [(_md(r), _md(n), _md_code(h)) for r, n, h in _input_rows(result.get("inputs"))])
    else:
        lines += ["No input hashes in this result.", ""]
    lines += [f"Rendered by teacher-attribution {__version__}.", ""]
    return "\n".join(lines)


__all__ = ["check_result", "render_html", "render_markdown", "render_plots", "verdict_sentence", "write_report"]
