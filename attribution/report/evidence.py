"""The verdict's evidence, as the result holds it: what the verdict names (its level), the p-value of each
test beside alpha, and the paired scores behind the paired test, with the runner-up (``verdict.runner_up``,
the rival behind the verdict's p-value, as in the JSON and the CSV) and the p-value against it.

Only the runner-up's p-value is in a result: the paired test is an intersection-union test, so the
runner-up is the rival with the largest p-value and every other rival's is at most that (shown as
"at most p"). Nothing new is computed.

:func:`contrast_blocks` shows the result's ``contrast`` (:func:`attribution.explain.contrast`): the templates
that set the verdict's teacher apart from its runner-up, each with the student's, the teacher's and the
runner-up's rates, and a sentence saying whether that evidence is weak and why, with its numbers.

:func:`differences_blocks` shows the result's ``verdict_scores``: the per-prompt differences the paired test sums
(top minus runner-up), as a plot and a sentence saying what share of the prompts favour the top candidate.
"""

from __future__ import annotations

import re
from typing import Any

from ..verdicts import TestName, Verdict
from .document import Block, Code, Heading, Image, Para, Quotes, Strong, Table, num, pct, table
from .validate import is_number

#: Phrases of the verdict sentence that name command-line options, and their plain words in a report.
_PLAIN_WORDS = tuple((f"({test.value})", f"({test.plain})") for test in TestName)


def plain_sentence(sentence: str) -> str:
    """The verdict sentence without command-line jargon: known phrases in plain words, any other
    ``--option`` left out."""
    for jargon, plain in _PLAIN_WORDS:
        sentence = sentence.replace(jargon, plain)
    return re.sub(r"\s*\(?--[a-z][a-z-]*( [a-z]+)?\)?", "", sentence)


def _p(value: Any) -> str:
    return f"{value:.3g}" if is_number(value) else "n/a"


def level_sentence(verdict: dict[str, Any], with_families: bool) -> str:
    """What the verdict names: a teacher, a family (not a version), or nothing."""
    level = verdict.get("level")
    if verdict.get("status") != "attributed":
        what = "family or teacher" if with_families else "teacher"
        return f"Level of the verdict: none. No {what} is named."
    if level == "family":
        best = verdict.get("best_candidate")
        return (f"Level of the verdict: family. The family {verdict.get('family')} is named, not a version: its "
                f"best-ranked version, {best}, is not singled out from its siblings.")
    family = verdict.get("family")
    inside = f" (family {family})" if with_families and family and family != verdict.get("teacher") else ""
    return f"Level of the verdict: teacher. The teacher {verdict.get('teacher')}{inside} is named."


def _test_rows(verdict: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(test, p-value, rival behind it) for each test the verdict holds."""
    rows = []
    if is_number(verdict.get("p_value")):
        rows.append(("the verdict's p-value (the rule's, compared with alpha)", _p(verdict["p_value"]), ""))
    rival = str(verdict.get("runner_up") or "")
    if Verdict.from_dict(verdict).is_control and is_number(verdict.get("p_control")):
        rows.append(("against the control (the student's log-odds above the control's, prompt by prompt)",
                     _p(verdict["p_control"]), rival))
    elif is_number(verdict.get("p_paired")):
        rows.append(("paired: the top candidate against every other, prompt by prompt", _p(verdict["p_paired"]),
                     rival))
    for key, label in (("p_paired_cosine", "paired, feature-space cosine"),
                       ("p_paired_midpoint", "paired, log-probability midpoint")):
        if is_number(verdict.get(key)):
            rows.append((label, _p(verdict[key]), ""))
    if is_number(verdict.get("p_unlisted")):
        rows.append(("unlisted teacher: could a teacher outside the candidates explain the outputs as well?",
                     _p(verdict["p_unlisted"]), ""))
    inner = verdict.get("teacher_test") or {}
    if is_number(inner.get("p_paired")):
        rows.append((f"version within the family {verdict.get('best_family')}: {verdict.get('best_candidate')} "
                     "against each sibling", _p(inner["p_paired"]), str(inner.get("runner_up") or "")))
    return rows


def _score_table(scores: dict[str, Any], top: Any, runner_up: Any, p_value: Any, label: str,
                 score: str = "mean paired score") -> Table:
    """Each candidate's mean paired score, its distance below the top, and the top's p-value against it."""
    ordered = sorted(((str(name), float(value)) for name, value in scores.items() if is_number(value)),
                     key=lambda item: (-item[1], item[0]))
    best = dict(ordered).get(str(top), ordered[0][1] if ordered else 0.0)
    rows = []
    for name, value in ordered:
        if name == str(top):
            role, p_text = "top", ""
        elif name == str(runner_up):
            role, p_text = "runner-up", _p(p_value)
        else:
            role, p_text = "", f"at most {_p(p_value)}" if is_number(p_value) else "n/a"
        rows.append((name, role, num(value, 4), num(value - best, 4), p_text))
    return table([label, "", score, "minus the top's", "p-value of the top against it"], rows,
                 numeric=(2, 3, 4))


def verdict_blocks(result: dict[str, Any]) -> list[Block]:
    """The level of the verdict, the p-value of each test and the paired scores behind it."""
    verdict = result.get("verdict") or {}
    with_families = bool(result.get("family_ranking"))
    blocks: list[Block] = [Para(level_sentence(verdict, with_families))]
    rows = _test_rows(verdict)
    if rows:
        blocks.append(table(["test", "p-value", "rival behind it"], rows, numeric=(1,)))
        blocks.append(Para(f"alpha = {verdict.get('alpha', 'n/a')}: a test names a candidate only when its p-value "
                           "is below alpha under the rule (see Methodology).", "note"))
    scores = verdict.get("paired_score")
    if isinstance(scores, dict) and scores:
        top = verdict.get("best_family") or verdict.get("best_candidate")
        label = "family" if with_families else "teacher"
        if Verdict.from_dict(verdict).is_control:
            what, score = (Strong("Scores against the control."), f" Over {verdict.get('n_paired', 'n/a')} prompts "
                           "the student and the control both answered, each candidate's mean per-prompt "
                           "log-probability (the classifier's) of the student's output minus that of the control's "
                           "output. The top must gain more than every rival prompt by prompt; the runner-up is the "
                           "rival it beats least clearly, and its p-value is the control test's (every other rival's "
                           "is at most that)."), "mean gain over the control"
        else:
            what, score = (Strong("Paired scores."), f" Over {verdict.get('n_paired', 'n/a')} prompts every candidate "
                           "answered, each candidate's mean per-prompt similarity to the student's output (after "
                           "removing what all the candidates' answers share). The top must score above every rival "
                           "prompt by prompt; the runner-up is the rival it beats least clearly, and its p-value is "
                           "the paired test's (every other rival's is at most that)."), "mean paired score"
        blocks += [Para(what), _score_table(scores, top, verdict.get("runner_up"), verdict.get("p_paired"), label,
                                            score)]
    blocks += differences_blocks(result)
    inner = verdict.get("teacher_test") or {}
    if isinstance(inner.get("paired_score"), dict) and inner["paired_score"]:
        blocks += [Para(f"Within the family {verdict.get('best_family')}: the same scores between its versions "
                        "(centred on the family's mean answer).", "note"),
                   _score_table(inner["paired_score"], verdict.get("best_candidate"), inner.get("runner_up"),
                                inner.get("p_paired"), "version")]
    return blocks


def differences_sentence(scores: dict[str, Any]) -> str:
    """What share of the prompts favour the top candidate over its runner-up, with the mean and spread of the
    per-prompt differences (``verdict_scores`` of the result)."""
    top, rival, n = scores.get("top"), scores.get("runner_up"), scores.get("n")
    favour, against, ties = scores.get("favour_top"), scores.get("favour_runner_up"), scores.get("ties") or 0
    quantiles = scores.get("quantiles") or {}
    tie_text = f", and {ties} are ties" if ties else ""
    spread = (f"; median {num(quantiles.get('0.5'))}, 90% of the prompts between {num(quantiles.get('0.05'))} and "
              f"{num(quantiles.get('0.95'))}" if all(is_number(quantiles.get(q)) for q in ("0.05", "0.5", "0.95"))
              else "")
    means = (f"the student's log-odds of {top} gain more over the control's than those of {rival}"
             if scores.get("statistic") == "control log-odds" else
             f"the student's output is nearer {top}'s answer to the same prompt than {rival}'s")
    sentence = (f"{favour} of the {n} prompts ({pct(scores.get('share_top'))}) favour {top} over {rival} ({means}); "
                f"{against} favour {rival}{tie_text}. "
                f"The mean difference, which the test asks to be clearly above zero, is {num(scores.get('mean'), 4)} "
                f"(sd {num(scores.get('sd'), 4)}{spread}).")
    if is_number(scores.get("mean")) and is_number(scores.get("share_top")):
        if scores["mean"] > 0 and scores["share_top"] < 0.5:
            sentence += (f" Most prompts favour {rival}: {top}'s lead comes from a minority of prompts where it "
                         "leads by much.")
        elif scores["mean"] <= 0 and scores["share_top"] > 0.5:
            sentence += (f" Most prompts favour {top}, but by less than the others favour {rival}: on average the "
                         f"prompts do not favour {top}.")
        elif scores["mean"] <= 0:
            sentence += f" On average the prompts do not favour {top}."
    return sentence


def differences_blocks(result: dict[str, Any]) -> list[Block]:
    """The per-prompt differences behind the paired test (``verdict_scores``): a sentence and the plot."""
    scores = result.get("verdict_scores")
    if not isinstance(scores, dict):
        return []
    what = ("each prompt's gain over the control" if scores.get("statistic") == "control log-odds"
            else "each prompt's paired score")
    return [Para((Strong("Per-prompt differences."), f" The paired test sums, over the prompts, {what} of "
                  f"{scores.get('top')} minus that of {scores.get('runner_up')}. " + differences_sentence(scores))),
            Image("differences", f"Histogram of the per-prompt differences, {scores.get('top')} minus "
                  f"{scores.get('runner_up')}, with zero and the mean marked")]


def _small_p(value: Any) -> str:
    """An adjusted p-value, with the tiny ones as a bound (they underflow to 0)."""
    if not is_number(value):
        return "n/a"
    return "< 0.0001" if value < 1e-4 else f"{value:.2g}"


def contrast_sentence(contrast: dict[str, Any]) -> str:
    """Whether the contrast between the teacher and its runner-up is weak evidence, with its numbers."""
    teacher, rival = contrast.get("teacher"), contrast.get("runner_up")
    n, shown = len(contrast.get("templates") or []), contrast.get("n_separating", 0)
    share: Any = contrast.get("shown_share")
    share_text = ""
    if is_number(share) and n:
        share_text = (f"; the {n} templates shown carry {pct(share)} of it" + (
            f", more than the whole: other templates pull back towards {rival}" if share > 1 else
            " (other templates push either way)"))
    gap = (f"On these {contrast.get('n_outputs')} outputs the classifier's log-odds of {teacher} over {rival} "
           f"sums to {num(contrast.get('log_odds'), 1)} ({num(contrast.get('mean_log_odds'), 2)} per output)"
           f"{share_text}. ")
    if contrast.get("weak"):
        reasons = "; ".join(str(r) for r in contrast.get("weak_reasons") or [])
        return (f"{gap}Weak evidence: {reasons}. The verdict rests on its tests above; these templates do not "
                f"show what sets {teacher} apart from {rival}.")
    rows = [row for row in contrast.get("templates") or [] if isinstance(row, dict)]
    counted = any(is_number(row.get("p_references")) for row in rows)
    refs = ("the references tell the two apart on them, and " if counted else "")
    untested = ("" if counted else " The model file keeps no reference counts, so whether the references tell the "
                "two apart is not tested (a model fitted by this version keeps them).")
    return (f"{gap}Separating evidence: {shown} of the {n} templates shown separate {teacher} from {rival} "
            f"(family-wise level {contrast.get('alpha')} over {contrast.get('n_tested')} templates tested): "
            f"{refs}the student uses them more often than {rival}'s references do, nearer {teacher}'s rate.{untested}")


def contrast_blocks(result: dict[str, Any]) -> list[Block]:
    """The templates that set the verdict's teacher apart from its runner-up (``contrast`` of the result),
    their rates, examples, and whether the evidence is weak; nothing for a result without it."""
    contrast = result.get("contrast")
    if not isinstance(contrast, dict):
        return []
    teacher, rival = str(contrast.get("teacher")), str(contrast.get("runner_up"))
    named = (result.get("verdict") or {}).get("status") == "attributed"
    source = {"paired test": "the paired test's runner-up", "control test": "the control test's runner-up",
              "ranking": "the next in the ranking: no test named a runner-up"}.get(
        str(contrast.get("runner_up_source")), "runner-up")
    blocks: list[Block] = [
        Heading(3, f"What sets {teacher} apart from {rival}"),
        *(() if named else (Para(f"The verdict names no teacher: these templates compare the top-ranked candidate, "
                                 f"{teacher}, with {rival} only. Even when they separate the two, they are not "
                                 "evidence that either taught the student; the verdict's tests decide that."),)),
        Para(contrast_sentence(contrast), "warning" if contrast.get("weak") else ""),
        Para(f"{rival} is {source}. Each template's log-odds is its share of the classifier's log-odds of {teacher} "
             f"over {rival}, summed over the student's outputs; beside it, the share of outputs using it: the "
             f"student's (and how many), {teacher}'s references and {rival}'s. A template separates the two when "
             f"{teacher}'s references use it more often than {rival}'s (p refs: one-sided Fisher exact test), the "
             f"student uses it more often than {rival}'s references do (p student: the same test; a binomial test "
             f"against {rival}'s rate without reference counts), and the student's rate is nearer the teacher's; "
             "both p-values Bonferroni-adjusted over every template tested.", "note")]
    rows = [row for row in contrast.get("templates") or [] if isinstance(row, dict)]
    tasks = {row.get("task") for row in rows}
    if rows:
        blocks.append(table(
            ["#", "template", "log-odds", "student", f"{teacher} refs", f"{rival} refs", "p refs", "p student",
             "separates"],
            [(i + 1, Code(f"{row.get('block', '')}: {row.get('feature', '')}"
                          + (f" ({row['task']})" if len(tasks) > 1 and row.get("task") is not None else "")),
              num(row.get("log_odds"), 2), f"{pct(row.get('student_rate'))} ({row.get('n_outputs', 'n/a')})",
              pct(row.get("teacher_rate")), pct(row.get("runner_up_rate")), _small_p(row.get("p_references")),
              _small_p(row.get("p_student")), "yes" if row.get("separates") else "no")
             for i, row in enumerate(rows)], numeric=(0, 2, 3, 4, 5, 6, 7), kind="evidence"))
        blocks.append(table(["#", "template", "in the student's outputs"],
                            [(i + 1, Code(f"{row.get('block', '')}: {row.get('feature', '')}"),
                              Quotes(tuple(map(str, row.get("examples") or ()))) if row.get("examples") else "-")
                             for i, row in enumerate(rows)], numeric=(0,)))
    return blocks


__all__ = ["contrast_blocks", "contrast_sentence", "differences_blocks", "differences_sentence", "level_sentence",
           "plain_sentence", "verdict_blocks"]
