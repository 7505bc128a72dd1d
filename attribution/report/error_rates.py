"""The verdict's measured error rates: one table, shown in every report's limitations and kept equal
to the docs by a test (``tests/test_report_sections.py`` finds each row's ``doc_row`` in its ``doc``).

Every figure was printed by the row's ``command`` on this project's benchmarks (see
docs/verdict.md, "Measured error rates", and docs/results.md, "Verdict error rates"); none is
estimated here. Change a figure only with the run that printed it, in the docs and here together.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorRate:
    """One measured row: what was audited, how often the verdict named the right teacher, a wrong
    one, or none, and where the figure comes from."""

    data: str
    case: str
    n: int
    right: int | None
    wrong: int
    none: int
    command: str
    doc: str
    doc_row: str

    @property
    def wrong_text(self) -> str:
        return f"{self.wrong} of {self.n}"


_ALPACA = "python benchmarks/bench_alpacaeval.py"
_PAPER = "python benchmarks/bench_unlisted.py"
_VERDICT_DOC = "docs/verdict.md"

#: Default rule (``--verdict-test either``) unless the case says otherwise.
ERROR_RATES: tuple[ErrorRate, ...] = (
    ErrorRate("AlpacaEval (real distilled LLMs, setting B)", "documented students, true teacher among the "
              "candidates (403 outputs each)", 9, 8, 0, 1, _ALPACA, _VERDICT_DOC,
              "| 9 documented students, all 403 outputs each | 8 | **0** | 1 (alpaca-farm-ppo-human) |"),
    ErrorRate("AlpacaEval (real distilled LLMs, setting B)", "human-data controls (Guanaco 7B, 33B): no LLM "
              "teacher", 2, None, 0, 2, _ALPACA, _VERDICT_DOC,
              "| 2 human-data controls (Guanaco 7B, 33B) | n/a | **0** | 2 |"),
    ErrorRate("AlpacaEval (real distilled LLMs, setting B)", "true teacher left out of the candidates", 9, None,
              7, 2, _ALPACA, _VERDICT_DOC,
              "| true teacher left out of the candidates (9 students) | n/a | **7** | 2 |"),
    ErrorRate("AlpacaEval (real distilled LLMs, setting B)", "true teacher left out, --verdict-test both", 9, None,
              0, 9, _ALPACA, _VERDICT_DOC, "| the same with `--verdict-test both` | n/a | 0 | 9 |"),
    ErrorRate("Paper QA (GPT-2 students of 5 LLMs)", "true teacher among the candidates", 10, 5, 0, 5, _PAPER,
              _VERDICT_DOC, "| true teacher among the candidates (10 students) | 5 | **0** | 5 |"),
    ErrorRate("Paper QA (GPT-2 students of 5 LLMs)", "true teacher left out of the candidates", 10, None, 1, 9,
              _PAPER, _VERDICT_DOC, "| true teacher left out (10 students) | n/a | **1** | 9 |"),
)

#: Simulated audits of fewer outputs (``python benchmarks/bench_calibration.py``: 40 random subsets per
#: documented AlpacaEval student and size, paired test at alpha): outputs -> share named right (never a
#: wrong teacher at any size).
RIGHT_BY_SIZE: tuple[tuple[int, float], ...] = ((10, 0.08), (25, 0.22), (50, 0.33), (100, 0.46), (200, 0.66),
                                                (400, 0.89))
RIGHT_BY_SIZE_COMMAND = "python benchmarks/bench_calibration.py"
#: The same figures as docs/verdict.md states them (compared with whitespace collapsed).
RIGHT_BY_SIZE_DOC_ROW = ("documented students named right / wrong / none: 10 outputs 0.08 / 0 / 0.92, 25 outputs "
                         "0.22 / 0 / 0.78, 50 outputs 0.33 / 0 / 0.67, 100 outputs 0.46 / 0 / 0.54, 200 outputs "
                         "0.66 / 0 / 0.34, 400 outputs 0.89 / 0 / 0.11. Controls: 1 of 80 ten-output audits named "
                         "a teacher")
#: Control audits of 10 outputs that named a teacher (same command); none of the larger ones did.
CONTROLS_NAMED_AT_10 = (1, 80)
#: What the simulated audits were run on: figures for other candidates or settings were not measured.
RIGHT_BY_SIZE_DATA = "the 5-candidate AlpacaEval data (setting B)"


def sizes_text() -> str:
    """Every simulated audit size with its share named right, in words (``10 outputs 8%, 25 outputs 22%, ...``)."""
    return ", ".join(f"{size} outputs {100 * share:.0f}%" for size, share in RIGHT_BY_SIZE)


def right_at_size(n_outputs: int) -> tuple[int, float] | None:
    """The simulated audit size nearest below ``n_outputs`` (or the smallest) and its share named right."""
    if n_outputs <= 0:
        return None
    below = [row for row in RIGHT_BY_SIZE if row[0] <= n_outputs]
    return below[-1] if below else RIGHT_BY_SIZE[0]


__all__ = ["CONTROLS_NAMED_AT_10", "ERROR_RATES", "RIGHT_BY_SIZE", "RIGHT_BY_SIZE_COMMAND", "RIGHT_BY_SIZE_DATA",
           "ErrorRate", "right_at_size", "sizes_text"]
