"""The verdict as a typed value: the rule that decides it (:class:`VerdictRule`) and what it decided (:class:`Verdict`).

A rule names which test may name a teacher (``--verdict-test``, API ``tests=``) at which ``alpha``, and says so in
words (:attr:`VerdictRule.description`, the sentence the report's methodology and glossary and ``docs/verdict.md``
use: the rule is written down here only). :func:`attribution.inference.hierarchical_verdict` returns a
:class:`Verdict`; :meth:`Verdict.to_dict` is the ``verdict`` of the JSON (``docs/json.md``) and
:meth:`Verdict.from_dict` reads one back, so that reports and tables ask typed fields (did the paired test run, at
which level did each test pass) instead of parsing the ``test`` string.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from .errors import model_error

#: Significance level of the tests behind a verdict.
ALPHA = 0.05


class TestName(str, Enum):
    """What decided one task's verdict (the ``test`` of the JSON; several tasks join theirs with ``"; "``)."""

    __test__ = False  # not a pytest test class

    PAIRED = "paired"
    UNLISTED = "unlisted"
    EITHER = "paired or unlisted"
    BOTH = "paired and unlisted"
    CONTROL = "control"
    SEQUENTIAL = "sequential"

    @property
    def uses_paired(self) -> bool:
        return self in (TestName.PAIRED, TestName.EITHER, TestName.BOTH)

    @property
    def uses_unlisted(self) -> bool:
        return self in (TestName.UNLISTED, TestName.EITHER, TestName.BOTH)

    @property
    def plain(self) -> str:
        """The test in a report's words (no option names)."""
        return {TestName.PAIRED: "paired test", TestName.UNLISTED: "unlisted-teacher test",
                TestName.EITHER: "either test", TestName.BOTH: "both tests",
                TestName.CONTROL: "control test", TestName.SEQUENTIAL: "sequential test"}[self]


@dataclass(frozen=True)
class _RuleText:
    when: str  # names the top candidate when ...
    p_value: str  # what p_value is under the rule


#: Each rule in words: when it names the top candidate, and what its p_value is. The one place the rules are
#: written down: the report, the glossary and docs/verdict.md (checked by a test) take them from here.
_RULES: dict[str, _RuleText] = {
    "either": _RuleText("the paired test or the unlisted-teacher test passes, each at alpha/2; when only one of "
                        "them can run (no paired answers, or fewer than 4 candidates), it decides alone at alpha",
                        "twice the smaller of p_paired and p_unlisted (Bonferroni), capped at 1; the one test's "
                        "p-value when only one ran"),
    "paired": _RuleText("the paired test passes", "p_paired"),
    "unlisted": _RuleText("the unlisted-teacher test passes (the rule before the paired test)", "p_unlisted"),
    "both": _RuleText("both tests pass: the strict open-set rule", "the larger of p_paired and p_unlisted"),
    "control": _RuleText("the control test passes: prompt by prompt, the student's log-odds of the top-ranked "
                         "candidate against every other one exceed those of the control; it decides alone (the rule "
                         "between the paired and unlisted-teacher tests does not apply)", "p_control"),
    "sequential": _RuleText("the anytime-valid sequential test, checked after every batch of "
                            "outputs read in order, refutes every other candidate; it decides alone",
                            "the sequential test's anytime-valid p-value (valid however early the reading stopped)"),
}


@dataclass(frozen=True)
class VerdictRule:
    """Which test may name a teacher, and at which ``alpha``.

    ``name``: ``"either"`` (default: the paired or the unlisted-teacher test, each at ``alpha / 2``),
    ``"paired"``, ``"unlisted"``, ``"both"`` (the choices of ``--verdict-test``, :attr:`CHOICES`),
    ``"control"`` (``rank --control``: the control test alone) or ``"sequential"`` (``rank --sequential``).
    With several tasks every task must pass.
    """

    name: str = "either"
    alpha: float = ALPHA
    #: The rules ``--verdict-test`` (API ``tests=``) accepts.
    CHOICES: ClassVar[tuple[str, ...]] = ("either", "paired", "unlisted", "both")

    def __post_init__(self) -> None:
        if self.name not in _RULES:
            raise model_error("E210", name="tests", expected=f"one of {', '.join(self.CHOICES)}", got=self.name)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < 1:
            raise model_error("E210", name="alpha", expected="a number between 0 and 1", got=self.alpha)

    @classmethod
    def of(cls, tests: str | VerdictRule = "either", alpha: float | None = None) -> VerdictRule:
        """The rule of a ``tests=`` argument (a name or a rule) and ``alpha`` (None: the rule's own, or
        :data:`ALPHA`); a rule given with a different ``alpha`` is refused (``E210``)."""
        if isinstance(tests, VerdictRule):
            if alpha is not None and alpha != tests.alpha and alpha != ALPHA:
                raise model_error("E210", name="alpha", expected=f"the rule's own ({tests.alpha}) when a "
                                  "VerdictRule is given", got=alpha)
            return tests
        return cls(str(tests), ALPHA if alpha is None else alpha)

    @property
    def when(self) -> str:
        """When the rule names the top-ranked candidate (a clause)."""
        return _RULES[self.name].when

    @property
    def p_value_text(self) -> str:
        """What the verdict's ``p_value`` is under this rule (a noun phrase)."""
        return _RULES[self.name].p_value

    @property
    def description(self) -> str:
        """The rule in one sentence, for reports and docs."""
        lead = {"control": "With a control", "sequential": "Sequential verdict"}.get(
            self.name, f"Rule --verdict-test {self.name}")
        return (f"{lead}: the top-ranked candidate is named when {self.when}; p_value is {self.p_value_text}, "
                f"and it must be below alpha = {self.alpha:g} in every task.")

    def task_test(self, p_unlisted: float | None, p_paired: float | None) -> tuple[float | None, TestName]:
        """One task's p-value under this rule, and what it tested."""
        if self.name == "control":
            return p_paired, TestName.CONTROL
        if self.name == "paired":
            return p_paired, TestName.PAIRED
        if self.name == "unlisted":
            return p_unlisted, TestName.UNLISTED
        if self.name == "both":
            both = None if p_paired is None or p_unlisted is None else max(p_paired, p_unlisted)
            return both, TestName.BOTH
        available = [p for p in (p_paired, p_unlisted) if p is not None]
        if len(available) == 2:  # Bonferroni: the union of two tests at alpha/2 each
            return min(1.0, 2 * min(available)), TestName.EITHER
        return (available[0] if available else None), (TestName.PAIRED if p_paired is not None else TestName.UNLISTED)

    @classmethod
    def implied_by(cls, tests: tuple[TestName, ...], alpha: float | None) -> VerdictRule | None:
        """The rule a verdict's tests show (a result that does not record its rule), when they show one."""
        rule = ("control" if TestName.CONTROL in tests else "sequential" if TestName.SEQUENTIAL in tests
                else "either" if TestName.EITHER in tests
                else "both" if TestName.BOTH in tests else None)
        usable = isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 < alpha < 1
        return None if rule is None else cls(rule, float(alpha) if usable and alpha is not None else ALPHA)


def rule_table() -> str:
    """The rules of ``--verdict-test`` as the Markdown table of ``docs/verdict.md`` (a test compares them)."""
    rows = ["| rule | names the top teacher when | p_value |", "|---|---|---|"]
    for name in VerdictRule.CHOICES:
        rule = VerdictRule(name)
        rows.append(f"| `{name}`{' (default)' if name == 'either' else ''} | {rule.when} | {rule.p_value_text} |")
    return "\n".join(rows)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class PairedSummary:
    """A paired test over the tasks: the largest p-value, the prompts it ran on, the rival behind it and the
    candidates' mean scores (one task only); with families, the two statistics behind ``p_paired``."""

    p_paired: float | None = None
    n_paired: int = 0
    runner_up: str | None = None
    paired_score: Mapping[str, float] | None = None
    p_paired_cosine: float | None = None
    p_paired_midpoint: float | None = None

    @classmethod
    def combine(cls, found: list[dict[str, Any]]) -> PairedSummary:
        """The tasks' paired results (:meth:`attribution.paired.PairedTest.result`), combined."""
        one = found[0] if len(found) == 1 else {}
        return cls(p_paired=max(t["p_paired"] for t in found) if found else None,
                   n_paired=sum(t["n_paired"] for t in found), runner_up=one.get("runner_up"),
                   paired_score=one.get("paired_score"), p_paired_cosine=one.get("p_paired_cosine"),
                   p_paired_midpoint=one.get("p_paired_midpoint"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PairedSummary:
        score = data.get("paired_score")
        return cls(p_paired=_number(data.get("p_paired")), n_paired=int(_number(data.get("n_paired")) or 0),
                   runner_up=data.get("runner_up"), paired_score=score if isinstance(score, Mapping) else None,
                   p_paired_cosine=_number(data.get("p_paired_cosine")),
                   p_paired_midpoint=_number(data.get("p_paired_midpoint")))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"p_paired": self.p_paired, "n_paired": self.n_paired, "runner_up": self.runner_up,
                               "paired_score": self.paired_score}
        if self.p_paired_midpoint is not None:  # the two statistics, shown (with families, one task)
            out.update(p_paired_cosine=self.p_paired_cosine, p_paired_midpoint=self.p_paired_midpoint)
        return out


@dataclass(frozen=True)
class Verdict:
    """A student's verdict: ``status`` (``"attributed"``, ``"inconclusive"`` or ``"unavailable"``), what it
    names (``teacher``; with families ``family`` and ``level``), the best-ranked candidate and family, the
    tests behind it (``tests``: one per distinct task test; the JSON's ``test`` joins them), ``p_value`` (the
    rule's, compared with ``alpha``), each test's p-value, the paired test's rival (``runner_up``) and scores,
    and ``teacher_test`` (the paired test between the best family's versions). ``rule``: the rule it was
    decided under, when known (not part of the JSON). See ``docs/verdict.md``."""

    status: str
    best_candidate: str | None
    alpha: float = ALPHA
    tests: tuple[TestName, ...] = ()
    teacher: str | None = None
    p_value: float | None = None
    p_unlisted: float | None = None
    paired: PairedSummary = field(default_factory=PairedSummary)
    #: the hierarchical fields (None in a verdict between teachers only, e.g. ``evaluate``'s)
    family: str | None = None
    level: str | None = None
    best_family: str | None = None
    teacher_test: PairedSummary | None = None
    hierarchical: bool = True
    reason: str | None = None  # a group that could not be ranked (attribution.result.unranked_result)
    rule: VerdictRule | None = field(default=None, compare=False)
    #: ``rank --sequential``: the sequential test's state (:mod:`attribution.sequential`), and the fixed-n
    #: rule's p-value over the same outputs
    sequential: Mapping[str, Any] | None = None
    fixed_n_p_value: float | None = None

    # -- what the JSON holds ------------------------------------------------------------------------------------
    @property
    def test(self) -> str | None:
        """The JSON's ``test``: the tasks' distinct tests, joined."""
        return "; ".join(t.value for t in self.tests) or None

    @property
    def p_paired(self) -> float | None:
        return self.paired.p_paired

    @property
    def n_paired(self) -> int:
        return self.paired.n_paired

    @property
    def runner_up(self) -> str | None:
        return self.paired.runner_up

    @property
    def paired_score(self) -> Mapping[str, float] | None:
        return self.paired.paired_score

    @property
    def p_control(self) -> float | None:
        return self.paired.p_paired if self.is_control else None

    # -- what the tests mean -------------------------------------------------------------------------------------
    @property
    def is_control(self) -> bool:
        """Decided by the control test (``rank --control``)."""
        return TestName.CONTROL in self.tests

    @property
    def is_sequential(self) -> bool:
        """Decided by the anytime-valid sequential test (``rank --sequential``)."""
        return TestName.SEQUENTIAL in self.tests

    @property
    def uses_paired(self) -> bool:
        """The paired test (between the candidates) is part of the rule that decided."""
        return any(t.uses_paired for t in self.tests)

    @property
    def uses_unlisted(self) -> bool:
        return any(t.uses_unlisted for t in self.tests)

    @property
    def several_tests(self) -> bool:
        """More than one test behind the p-value (a sentence says "tests do")."""
        return len(self.tests) > 1 or any(t in (TestName.EITHER, TestName.BOTH) for t in self.tests)

    @property
    def test_level(self) -> float:
        """The level each test passes at on its own: ``alpha / 2`` under Bonferroni (either test), else ``alpha``."""
        return self.alpha / 2 if TestName.EITHER in self.tests else self.alpha

    def passed(self, p: float | None) -> bool:
        """Whether one test's p-value passed on its own, at :attr:`test_level`."""
        return p is not None and p < self.test_level

    @property
    def paired_passed(self) -> bool:
        return self.passed(self.p_paired)

    @property
    def unlisted_passed(self) -> bool:
        return self.passed(self.p_unlisted)

    # -- JSON ------------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The ``verdict`` of the JSON (keys in ``docs/json.md``)."""
        if self.reason is not None:  # an unranked group: the keys it has always had
            return {"status": self.status, "teacher": self.teacher, "best_candidate": self.best_candidate,
                    "test": self.test, "p_value": self.p_value, "p_unlisted": self.p_unlisted,
                    "p_paired": self.p_paired, "n_paired": self.n_paired, "runner_up": self.runner_up,
                    "paired_score": self.paired_score, "alpha": self.alpha, "reason": self.reason}
        out: dict[str, Any] = {
            "teacher": self.teacher, "best_candidate": self.best_candidate, "alpha": self.alpha, "test": self.test,
            "p_unlisted": self.p_unlisted, "p_paired": self.p_paired, "n_paired": self.n_paired,
            "runner_up": self.runner_up, "paired_score": self.paired_score, "status": self.status,
            "p_value": self.p_value}
        if self.paired.p_paired_midpoint is not None:
            out.update(p_paired_cosine=self.paired.p_paired_cosine, p_paired_midpoint=self.paired.p_paired_midpoint)
        if self.hierarchical:
            out.update(family=self.family, level=self.level, best_family=self.best_family,
                       teacher_test=None if self.teacher_test is None else self.teacher_test.to_dict())
        if self.is_control:
            out["p_control"] = self.p_control
        if self.sequential is not None:
            out.update(sequential=dict(self.sequential), fixed_n_p_value=self.fixed_n_p_value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], rule: VerdictRule | None = None) -> Verdict:
        """A verdict of a JSON result (checked by :mod:`attribution.report.validate` when it comes from a file).

        ``rule``: the rule it was decided under, when the caller knows it (``run.settings.verdict_test``); else
        the one its tests show, if any. A result saved before the paired test (no ``test``, no ``p_value``) is
        read as the unlisted-teacher test's; test names this version does not know are left out."""
        names = {t.value: t for t in TestName}
        text = data.get("test")
        tests = tuple(names[part] for part in str(text).split("; ") if part in names) if text else ()
        p_value = _number(data.get("p_value"))
        status = str(data.get("status") or "unavailable")
        if not text and p_value is None and status != "unavailable" and _number(data.get("p_unlisted")) is not None:
            tests, p_value = (TestName.UNLISTED,), _number(data.get("p_unlisted"))
        alpha = _number(data.get("alpha"))
        inner = data.get("teacher_test")
        return cls(status=status, best_candidate=data.get("best_candidate"),
                   alpha=alpha if alpha is not None else ALPHA, tests=tests, teacher=data.get("teacher"),
                   p_value=p_value, p_unlisted=_number(data.get("p_unlisted")),
                   paired=PairedSummary.from_dict(data), family=data.get("family"), level=data.get("level"),
                   best_family=data.get("best_family"),
                   teacher_test=PairedSummary.from_dict(inner) if isinstance(inner, Mapping) else None,
                   hierarchical="level" in data, reason=data.get("reason"),
                   sequential=data["sequential"] if isinstance(data.get("sequential"), Mapping) else None,
                   fixed_n_p_value=_number(data.get("fixed_n_p_value")),
                   rule=rule or VerdictRule.implied_by(tests, alpha))


def describe_sequential(verdict: Verdict) -> str:
    """The verdict sentence of a sequential verdict (``rank --sequential``: :mod:`attribution.sequential`);
    :func:`attribution.inference.describe_verdict` gives it."""
    seq = verdict.sequential or {}
    used, size, alpha = seq.get("outputs_used"), seq.get("batch_size"), verdict.alpha
    if seq.get("design") == "spending":
        return _describe_spending(verdict, seq)
    e, threshold = seq.get("e_value", float("nan")), seq.get("threshold", float("nan"))
    named = verdict.teacher or verdict.family
    if verdict.status == "attributed":
        at_family = verdict.level == "family"
        return (f"{'family ' if at_family else ''}{named}: checked after every {size} outputs, its answers beat every "
                f"other candidate's prompt by prompt; the sequential test concluded after {used} outputs (e-value "
                f"{e:.3g} >= {threshold:.3g}, anytime-valid p = {verdict.p_value:.3g} < {alpha})."
                + (" The sequential test does not choose between the family's versions." if at_family else ""))
    budget = seq.get("max_outputs")
    spent = f"the budget of {budget} outputs was spent" if budget is not None and used is not None and \
        used >= budget else "the outputs ran out"
    return (f"inconclusive: {spent} ({used} outputs, checked every {size}) before the sequential test singled out "
            f"{seq.get('leader') or verdict.best_candidate} (e-value {e:.3g} < {threshold:.3g}); no teacher "
            f"is named.")


def _describe_spending(verdict: Verdict, seq: Mapping[str, Any]) -> str:
    named = verdict.teacher or verdict.family
    z, bound = seq.get("z"), seq.get("boundary")
    z_text = "n/a" if z is None else f"{z:.3g}"
    bound_text = "n/a" if bound is None else f"{bound:.3g}"
    if verdict.status == "attributed":
        prefix = "family " if verdict.level == "family" else ""
        return (f"{prefix}{named}: checked after every {seq.get('batch_size')} outputs within a budget of "
                f"{seq.get('max_outputs')}, its answers beat every other candidate's prompt by prompt; the "
                f"group-sequential test concluded after {seq.get('outputs_used')} outputs (z = {z_text} >= boundary "
                f"{bound_text}, alpha = {verdict.alpha} spent over the budget).")
    leader = seq.get("leader") or verdict.best_candidate
    return (f"inconclusive: {seq.get('outputs_used')} outputs read (budget {seq.get('max_outputs')}, checked every "
            f"{seq.get('batch_size')}) and the group-sequential test did not single out {leader} (z = {z_text}, "
            f"boundary {bound_text}); no teacher is named.")


__all__ = ["ALPHA", "PairedSummary", "TestName", "Verdict", "VerdictRule", "describe_sequential", "rule_table"]
