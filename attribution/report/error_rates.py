"""The verdict's measured error rates, read from the artifact the benchmarks write, shown in every report's
limitations and in each result's ``power`` entry.

The artifact (``attribution/data/error_rates.json``, package data) holds counts, not rates, per benchmark run,
with the run's commit, date, command and settings: ``benchmarks/bench_budget.py`` writes simulated audits of
10-400 outputs per arm (``budget/...``), ``benchmarks/bench_alpacaeval.py`` setting B's full-data counts
(``full/alpacaeval``), ``benchmarks/bench_unlisted.py`` the paper QA counts (``full/paper_qa``). Nothing here
is typed by hand. Every rate is shown with its 95% Clopper-Pearson interval (0 wrong of 9 still allows a third).
``tests/test_report_sections.py`` keeps docs/verdict.md and docs/budget.md equal to the artifact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import InputError, input_error


@dataclass(frozen=True)
class ErrorRate:
    """One measured row: what was audited, how often the verdict named the right teacher, a wrong
    one, or none, and where the figure comes from (``commit`` and ``date`` when read from the artifact)."""

    data: str
    case: str
    n: int
    right: int | None
    wrong: int
    none: int
    command: str
    doc: str
    doc_row: str
    commit: str | None = None
    date: str | None = None

    @property
    def wrong_text(self) -> str:
        return f"{self.wrong} of {self.n}"


_VERDICT_DOC = "docs/verdict.md"
#: The artifact's run of ``bench_alpacaeval.py`` (all outputs of each student, setting B).
FULL_RUN = "full/alpacaeval"
#: The artifact's run of ``bench_unlisted.py`` (the paper's GPT-2 students, all 5 teachers, then one left out).
PAPER_RUN = "full/paper_qa"
#: The full-data runs the table shows, in order: (run, the report's data, its cases). A case is (artifact case,
#: the report's case, the row docs/verdict.md shows, filled from the counts).
_FULL_RUNS = (
    (FULL_RUN, "AlpacaEval (real distilled LLMs, setting B)", (
        ("documented", "documented students, true teacher among the candidates (403 outputs each)",
         "| {n} documented students, all 403 outputs each | {right} | **{wrong}** | {none} |"),
        ("controls", "human-data controls (Guanaco 7B, 33B): no LLM teacher",
         "| {n} human-data controls (Guanaco 7B, 33B) | n/a | **{wrong}** | {none} |"),
        ("left_out", "true teacher left out of the candidates",
         "| true teacher left out of the candidates ({n} students) | n/a | **{wrong}** | {none} |"),
        ("left_out_both", "true teacher left out, --verdict-test both",
         "| the same with `--verdict-test both` | n/a | {wrong} | {none} |"))),
    (PAPER_RUN, "Paper QA (GPT-2 students of 5 LLMs)", (
        ("listed", "true teacher among the candidates",
         "| true teacher among the candidates ({n} students) | {right} | **{wrong}** | {none} |"),
        ("left_out", "true teacher left out of the candidates",
         "| true teacher left out ({n} students) | n/a | **{wrong}** | {none} |"))),
)


def error_rate_table(path: str | Path | None = None) -> tuple[ErrorRate, ...]:
    """The full-data error rates, default rule unless the case says otherwise, read from the artifact: the
    AlpacaEval rows (run ``full/alpacaeval``), then the paper QA rows (run ``full/paper_qa``); none for a run
    the artifact lacks (none at all without the artifact)."""
    try:
        runs = load_artifact(path)
    except FileNotFoundError:
        runs = {}
    rows = []
    for key, data, cases in _FULL_RUNS:
        run = runs.get(key)
        for name, case, doc_row in cases if run is not None else ():
            assert run is not None
            c = run.cases.get(name)
            if c is None:
                continue
            if "named" in c:  # no right teacher to name: every named one is wrong
                right, wrong, none = None, c["named"], c["n"] - c["named"]
            else:
                right, wrong, none = c["right"], c["wrong"], c["none"]
            rows.append(ErrorRate(data, case, c["n"], right, wrong, none, run.command, _VERDICT_DOC,
                                  doc_row.format(n=c["n"], right=right, wrong=wrong, none=none), run.commit,
                                  run.date))
    return tuple(rows)


# --- measured power: the artifact written by the benchmarks -------------------------------------------------

#: The error-rate artifact shipped with the package: counts per benchmark run, written by
#: ``benchmarks/bench_budget.py``, ``bench_alpacaeval.py`` and ``bench_unlisted.py`` (never by hand), with the
#: commit, date, command and settings of each run.
ARTIFACT = Path(__file__).resolve().parents[1] / "data" / "error_rates.json"
#: The artifact's ``format`` and ``version``: a reader refuses any other.
FORMAT, VERSION = "teacher-attribution error rates", 1
#: Where the artifact is named in results and reports (relative to the package, not this machine's path).
ARTIFACT_NAME = "attribution/data/error_rates.json"
#: The arm whose figures answer "how often are students of this size named": prompts at random, as an
#: audit of whatever outputs the auditor has.
POWER_ARM = "random"
#: Confidence of every interval shown (two-sided Clopper-Pearson).
CONFIDENCE = 0.95


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided interval for a rate of ``k`` in ``n``: 0 of 9 gives (0, 0.336)."""
    from scipy.stats import beta

    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    tail = (1 - confidence) / 2
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - tail, k + 1, n - k))
    return low, high


def interval_text(k: int, n: int) -> str:
    """``k of n (95% CI low-high%)``, as the report prints a measured count."""
    low, high = clopper_pearson(k, n)
    return f"{k} of {n} ({_pct(k / n)}; 95% CI {_pct(low)}-{_pct(high)})"


def short_interval(k: int, n: int) -> str:
    """``k (low-high%)``: a count in a table whose row gives ``n``."""
    low, high = clopper_pearson(k, n)
    return f"{k} ({_pct(low).rstrip('%')}-{_pct(high)})"


def _pct(share: float) -> str:
    if 0 < share < 0.001:
        return "<0.1%"
    return f"{100 * share:.0f}%" if share == 0 or share >= 0.01 else f"{100 * share:.1f}%"


def signature_fields(signature: Any) -> dict[str, str]:
    """A model signature (``features=...|C=...|...``) as its fields."""
    parts = str(signature or "").split("|")
    return dict(p.split("=", 1) for p in parts if "=" in p and "==" not in p)


@dataclass(frozen=True)
class Counts:
    """Simulated audits at one size: documented students named right / wrong / none, controls named."""

    right: int
    wrong: int
    none: int
    n: int
    controls_named: int
    controls: int


@dataclass(frozen=True)
class MeasuredRun:
    """One benchmark run of the artifact: provenance, settings, and counts per arm and size."""

    key: str
    commit: str
    dirty: bool
    date: str
    command: str
    settings: dict[str, Any]
    arms: dict[str, dict[int, Counts]]
    cases: dict[str, dict[str, int]]

    def sizes(self, arm: str = POWER_ARM) -> list[int]:
        return sorted(self.arms.get(arm, {}))


def _artifact_error(path: Path, detail: str, line: int | None = None) -> InputError:
    return input_error("E609", source=str(path), line=line, detail=detail)


def _int(value: Any, where: str, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _artifact_error(path, f"{where} must be a count (a whole number, 0 or more), got {value!r}")
    return value


def _counts(cell: Any, where: str, path: Path) -> Counts:
    if not isinstance(cell, dict) or not isinstance(cell.get("documented"), dict) \
            or not isinstance(cell.get("controls"), dict):
        raise _artifact_error(path, f"{where} needs 'documented' and 'controls' objects")
    doc, ctl = cell["documented"], cell["controls"]
    right, wrong, none, n = (_int(doc.get(k), f"{where}.documented.{k}", path) for k in ("right", "wrong", "none", "n"))
    named, controls = _int(ctl.get("named"), f"{where}.controls.named", path), _int(ctl.get("n"), f"{where}.controls.n",
                                                                                  path)
    if right + wrong + none != n or n == 0:
        raise _artifact_error(path, f"{where}.documented: right + wrong + none ({right + wrong + none}) must equal n "
                                    f"({n}), and n be 1 or more")
    if named > controls:
        raise _artifact_error(path, f"{where}.controls: named ({named}) exceeds n ({controls})")
    return Counts(right, wrong, none, n, named, controls)


def _run(key: str, raw: Any, path: Path) -> MeasuredRun:
    if not isinstance(raw, dict):
        raise _artifact_error(path, f"run '{key}' must be an object")
    for field in ("commit", "date", "command"):
        if not isinstance(raw.get(field), str) or not raw[field]:
            raise _artifact_error(path, f"run '{key}' needs '{field}' (a non-empty string)")
    settings, arms = raw.get("settings"), raw.get("arms")
    if not isinstance(settings, dict) or not isinstance(settings.get("candidates"), int):
        raise _artifact_error(path, f"run '{key}' needs 'settings' with 'candidates'")
    cases = raw.get("cases", {})
    if not isinstance(cases, dict) or not all(isinstance(c, dict) for c in cases.values()):
        raise _artifact_error(path, f"run '{key}': 'cases' must map case names to counts")
    arms = {} if arms is None and cases else arms
    if not isinstance(arms, dict) or not (arms or cases):
        raise _artifact_error(path, f"run '{key}' needs 'arms' (arm -> size -> counts) or 'cases'")
    parsed: dict[str, dict[int, Counts]] = {}
    for arm, by_size in arms.items():
        if not isinstance(by_size, dict):
            raise _artifact_error(path, f"run '{key}', arm '{arm}' must map sizes to counts")
        parsed[arm] = {}
        for size, cell in by_size.items():
            if not str(size).isdigit() or int(size) < 1:
                raise _artifact_error(path, f"run '{key}', arm '{arm}': size {size!r} is not a number of outputs")
            parsed[arm][int(size)] = _counts(cell, f"{key}.{arm}.{size}", path)
    return MeasuredRun(key, raw["commit"], bool(raw.get("dirty", False)), raw["date"], raw["command"],
                       dict(settings), parsed, {name: _case(c, f"{key}.{name}", path) for name, c in cases.items()})


def _case(cell: dict[str, Any], where: str, path: Path) -> dict[str, int]:
    """A full-data case: ``{"right", "wrong", "none", "n"}`` or, with no right teacher to name, ``{"named", "n"}``."""
    names = ("named", "n") if "named" in cell else ("right", "wrong", "none", "n")
    counts = {k: _int(cell.get(k), f"{where}.{k}", path) for k in names}
    total = counts["named"] if "named" in counts else counts["right"] + counts["wrong"] + counts["none"]
    if counts["n"] == 0 or (total > counts["n"] if "named" in counts else total != counts["n"]):
        raise _artifact_error(path, f"{where}: the counts do not add up to n ({counts['n']})")
    return counts


def load_artifact(path: str | Path | None = None) -> dict[str, MeasuredRun]:
    """Every run of the error-rate artifact (default :data:`ARTIFACT`), checked: a missing file raises
    ``FileNotFoundError``; a file that is not a valid artifact, ``InputError`` E609 naming what is wrong."""
    path = Path(path) if path is not None else ARTIFACT
    stat = path.stat()  # FileNotFoundError when missing
    return _load(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _load(name: str, mtime_ns: int, size: int) -> dict[str, MeasuredRun]:
    path = Path(name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise _artifact_error(path, f"invalid JSON: {err.msg}", err.lineno) from None
    except (OSError, UnicodeDecodeError) as err:
        raise _artifact_error(path, f"cannot be read: {err}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _artifact_error(path, f"not an error-rate artifact (expected \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise _artifact_error(path, f"version {data.get('version')!r}; this reader knows version {VERSION}")
    if not isinstance(data.get("runs"), dict):
        raise _artifact_error(path, "needs 'runs' (an object: run name -> run)")
    return {key: _run(key, raw, path) for key, raw in data["runs"].items()}


def markdown_table(run: MeasuredRun) -> str:
    """The run's counts as the Markdown table docs/budget.md shows (a test keeps the page equal to the artifact)."""
    lines = ["| arm | outputs | named right | named wrong | none | controls named |", "|---|---|---|---|---|---|"]
    for arm in sorted(run.arms, key=lambda a: (a != POWER_ARM, a)):
        for size in sorted(run.arms[arm]):
            c = run.arms[arm][size]
            controls = interval_text(c.controls_named, c.controls) if c.controls else "n/a"
            lines.append(f"| {arm} | {size} | {interval_text(c.right, c.n)} | {interval_text(c.wrong, c.n)} | "
                         f"{interval_text(c.none, c.n)} | {controls} |")
    return "\n".join(lines)


def budget_runs(runs: dict[str, MeasuredRun]) -> list[MeasuredRun]:
    """The runs of ``bench_budget.py`` (simulated audits per size), in name order."""
    return [runs[k] for k in sorted(runs) if POWER_ARM in runs[k].arms]


def power(n_outputs: int, candidates: int, *, rule: str = "either", alpha: float = 0.05,
          features: str | None = None, path: str | Path | None = None) -> dict[str, Any]:
    """How often the benchmark's documented students were named at the measured size nearest at or below
    ``n_outputs`` (the smallest when below it), and how often controls were, from the artifact's run with
    ``candidates`` candidates (else the nearest count), with 95% Clopper-Pearson intervals, the run's commit,
    date, command and settings, and ``differences``: each way this run's settings differ from those measured.

    Returns ``{"measured": False, "reason": ...}`` when there is nothing to read (no artifact, no run of
    simulated audits); a damaged artifact raises ``InputError`` E609.
    """
    try:
        runs = budget_runs(load_artifact(path))
    except FileNotFoundError:
        return {"measured": False, "reason": f"the error-rate artifact {ARTIFACT_NAME} is missing"}
    if not runs or n_outputs < 1:
        return {"measured": False, "reason": "no simulated audits in the error-rate artifact" if not runs
                else "no outputs"}
    run = min(runs, key=lambda r: (abs(r.settings["candidates"] - candidates), r.settings["candidates"], r.key))
    sizes = run.sizes()
    size = max([s for s in sizes if s <= n_outputs], default=sizes[0])
    c = run.arms[POWER_ARM][size]
    measured = run.settings
    differences = []
    if measured["candidates"] != candidates:
        differences.append(f"this run has {candidates} candidates; the simulated audits had {measured['candidates']}")
    if measured.get("rule") not in (None, rule):
        differences.append(f"this run's verdict rule is '{rule}'; the simulated audits used '{measured['rule']}'")
    if measured.get("alpha") not in (None, alpha):
        differences.append(f"this run's alpha is {alpha}; the simulated audits used {measured['alpha']}")
    if features and measured.get("features") not in (None, features):
        differences.append(f"this run's features are '{features}'; the simulated audits used "
                           f"'{measured['features']}'")
    if n_outputs < sizes[0]:
        differences.append(f"this run has {n_outputs} outputs, fewer than the smallest measured size ({sizes[0]})")
    elif n_outputs > sizes[-1]:
        differences.append(f"this run has {n_outputs} outputs, more than the largest measured size ({sizes[-1]}); "
                           "with more outputs the share named right is likely higher")
    return {"measured": True, "artifact": ARTIFACT_NAME, "run": run.key, "commit": run.commit, "dirty": run.dirty,
            "date": run.date, "command": run.command, "data": measured.get("data"),
            "candidates": measured["candidates"], "level": measured.get("level"), "rule": measured.get("rule"),
            "alpha": measured.get("alpha"), "features": measured.get("features"), "arm": POWER_ARM,
            "n_outputs": n_outputs, "size": size,
            "documented": {"right": c.right, "wrong": c.wrong, "none": c.none, "n": c.n,
                           "right_interval": list(clopper_pearson(c.right, c.n)),
                           "wrong_interval": list(clopper_pearson(c.wrong, c.n))},
            "controls": {"named": c.controls_named, "n": c.controls,
                         "interval": list(clopper_pearson(c.controls_named, c.controls)) if c.controls else None},
            "curve": [[s, run.arms[POWER_ARM][s].right, run.arms[POWER_ARM][s].n] for s in sizes],
            "differences": differences}

__all__ = ["ARTIFACT", "ARTIFACT_NAME", "CONFIDENCE", "FORMAT", "FULL_RUN", "PAPER_RUN", "POWER_ARM", "VERSION",
           "Counts", "ErrorRate", "MeasuredRun", "budget_runs", "clopper_pearson", "error_rate_table", "interval_text",
           "load_artifact", "markdown_table", "power", "short_interval", "signature_fields"]
