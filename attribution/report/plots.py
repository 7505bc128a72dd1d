"""The report's plots, as PNG bytes: the ranking (bars), the per-prompt differences behind the verdict's paired
test (a histogram) and the per-output probabilities (box and strip).

matplotlib's object API only (no pyplot: no global state, no GUI backend); labels are plain text
(a teacher named ``$x^$`` never reaches the math parser); no version stamp, so the same result gives
the same bytes.
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

from ..errors import missing_dependency
from .validate import is_number

#: Palette for per-task colours (colour-blind safe, Okabe-Ito).
TASK_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
#: Plots of a Markdown report, written beside it as ``<stem>_<key>.png``.
PLOT_KEYS = ("ranking", "differences", "outputs")


# -- plots ---------------------------------------------------------------------------------
def render_plots(result: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes of the report's plots: ``ranking`` always, ``differences`` when the result has ``verdict_scores``,
    ``outputs`` when it has them."""
    try:
        import matplotlib
    except ImportError as err:
        raise missing_dependency("matplotlib", "report") from err
    # labels are plain text: a teacher named '$x^$' must not reach matplotlib's math parser
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        plots = {"ranking": _ranking_plot(result)}
        if isinstance(result.get("verdict_scores"), dict):
            plots["differences"] = _differences_plot(result["verdict_scores"])
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
    with warnings.catch_warnings():  # a label in a script the font lacks is drawn as boxes: not worth a warning
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning)
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
    intervals = [(row.get("ci_low"), row.get("ci_high")) for row in result["ranking"]]
    with_ci = all(is_number(low) and is_number(high) for low, high in intervals)
    # the 95% bootstrap interval as error bars, when every row has one
    xerr = [[max(0.0, p - float(low)) for p, (low, _) in zip(probability, intervals)],
            [max(0.0, float(high) - p) for p, (_, high) in zip(probability, intervals)]] if with_ci else None
    ax.barh(y, probability, color=colors, xerr=xerr, error_kw={"ecolor": "#333333", "capsize": 3, "elinewidth": 1})
    ax.axvline(1 / len(teachers), color="#666666", linestyle=":", linewidth=1, label="uniform")
    for yi, p, row in zip(y, probability, result["ranking"]):
        support = row.get("support")
        note = f"{p:.3f}" + (f"  (support {float(support):.2f})" if is_number(support) else "")
        right = max(p, float(row["ci_high"])) if with_ci else p
        ax.text(right + 0.008, yi, note, va="center", fontsize=8)
    ax.set_yticks(y, teachers)
    ax.set_xlim(0, min(1.0, max(probability) * 1.45 + 0.05))
    ax.set_xlabel("probability (student level)" + ("; bars: 95% interval" if with_ci else ""))
    ax.set_title(f"Ranking from {result['n_outputs']} outputs", fontsize=10)
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return _png(fig)


def _differences_plot(scores: dict[str, Any]) -> bytes:
    """The histogram of ``verdict_scores``: per prompt, the top candidate's score minus the runner-up's, with
    zero and the mean marked."""
    histogram = scores["histogram"]
    counts = [int(c) for c in histogram["counts"]]
    start, width = float(histogram["start"]), float(histogram["width"])
    top, rival, mean = str(scores["top"]), str(scores["runner_up"]), float(scores["mean"])
    fig = _figure(6.4, 3.4)
    ax = fig.add_subplot()
    lefts = [start + i * width for i in range(len(counts))]
    ax.bar(lefts, counts, width=width, align="edge", color="#9DB9CF", edgecolor="#5A7D99", linewidth=0.5)
    ax.axvline(0.0, color="#666666", linestyle=":", linewidth=1.2, label="zero: no preference")
    ax.axvline(mean, color="#0072B2", linewidth=1.6, label=f"mean {mean:.3f}")
    end = start + len(counts) * width
    ax.set_xlim(min(start, 0.0, mean) - width, max(end, 0.0, mean) + width)
    ax.set_ylabel("prompts")
    what = "log-odds gain over the control" if scores.get("statistic") == "control log-odds" else "paired score"
    ax.set_xlabel(f"{what}: {top} minus {rival}, per prompt")
    ax.set_title(f"Per-prompt differences behind the verdict ({scores['n']} prompts)\n"
                 f"{scores['favour_top']} favour {top}, {scores['favour_runner_up']} favour {rival}", fontsize=9)
    ax.legend(loc="best", fontsize=8, frameon=False)
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


__all__ = ["PLOT_KEYS", "TASK_COLORS", "render_plots"]
