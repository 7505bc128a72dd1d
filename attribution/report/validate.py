"""What a result must look like before any of it is rendered (``E604`` names every problem).

Keys the renderers do not show are allowed (newer results may carry more); every shown field is
type-checked, so a crafted JSON file cannot reach the renderers with a value they do not expect.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import Errors, InputError
from ..schema import Anything, Bool, Enum, Int, List, Map, Num, Obj, Opt, SchemaError, Str

_LABEL = Str(1_000)
_RANKING = List(Obj({"teacher": _LABEL, "probability": Num(0, 1), "support": Opt(Num(0, 1)),
                     "ci_low": Opt(Num(0, 1)), "ci_high": Opt(Num(0, 1))},
                    optional=("support", "ci_low", "ci_high"), extra=Anything()), 1, 10_000)
#: The paired test within the named family (``verdict.teacher_test``).
_TEACHER_TEST = Obj({"p_paired": Opt(Num(0, 1)), "n_paired": Int(0), "runner_up": Opt(_LABEL),
                     "paired_score": Opt(Map(Num(), key=_LABEL, max_len=10_000)), "p_paired_cosine": Opt(Num(0, 1)),
                     "p_paired_midpoint": Opt(Num(0, 1))},
                    optional=("p_paired", "n_paired", "runner_up", "paired_score", "p_paired_cosine",
                              "p_paired_midpoint"), extra=Anything())
_VERDICT_FIELDS = {"status": Enum("attributed", "inconclusive", "unavailable"), "teacher": Opt(_LABEL),
                   "best_candidate": Opt(_LABEL), "p_unlisted": Opt(Num(0, 1)), "p_value": Opt(Num(0, 1)),
                   "alpha": Opt(Num(0, 1)), "test": Opt(Str(200)), "p_paired": Opt(Num(0, 1)), "n_paired": Int(0),
                   "runner_up": Opt(_LABEL), "paired_score": Opt(Map(Num(), key=_LABEL, max_len=10_000)),
                   "level": Enum("family", "teacher", None), "family": Opt(_LABEL), "best_family": Opt(_LABEL),
                   "teacher_test": Opt(_TEACHER_TEST), "p_paired_cosine": Opt(Num(0, 1)),
                   "p_paired_midpoint": Opt(Num(0, 1)), "p_control": Opt(Num(0, 1))}
_VERDICT = Obj(_VERDICT_FIELDS, optional=tuple(k for k in _VERDICT_FIELDS if k != "status"), extra=Anything())
#: ``family_ranking``: the families in play, with a model fitted with families.
_FAMILY_RANKING = List(Obj({"family": _LABEL, "probability": Num(0, 1), "support": Opt(Num(0, 1)),
                            "ci_low": Opt(Num(0, 1)), "ci_high": Opt(Num(0, 1)),
                            "members": List(_LABEL, 0, 10_000)},
                           optional=("support", "ci_low", "ci_high", "members"), extra=Anything()), 1, 10_000)
_EVIDENCE = Obj({"teacher": _LABEL, "block": Str(100), "feature": Str(10_000), "weight": Num(),
                 "n_outputs": Int(0), "share_of_outputs": Num(0, 1), "task": Opt(_LABEL),
                 "examples": List(Str(10_000), 0, 100),
                 "reference_share": Opt(Map(Num(0, 1), key=_LABEL, max_len=10_000)),
                 "example_outputs": List(Obj({"id": Str(10_000), "output": Str(1_000_000)}, extra=Anything()),
                                         0, 100)},
                optional=("teacher", "task", "share_of_outputs", "examples", "n_outputs", "weight",
                          "reference_share", "example_outputs"), extra=Anything())
#: ``contrast``: the templates that set the verdict's teacher apart from its runner-up (attribution.explain.contrast).
_CONTRAST_ROW = Obj({"task": Opt(_LABEL), "block": Str(100), "feature": Str(10_000), "log_odds": Num(),
                     "n_outputs": Int(0), "student_rate": Num(0, 1), "teacher_rate": Opt(Num(0, 1)),
                     "runner_up_rate": Opt(Num(0, 1)), "p_references": Opt(Num(0, 1)), "p_student": Opt(Num(0, 1)),
                     "separates": Bool(), "examples": List(Str(10_000), 0, 100)},
                    optional=("task", "teacher_rate", "runner_up_rate", "p_references", "p_student", "examples"),
                    extra=Anything())
_CONTRAST = Obj({"teacher": _LABEL, "runner_up": _LABEL, "runner_up_source": Str(100), "n_outputs": Int(0),
                 "log_odds": Num(), "mean_log_odds": Opt(Num()), "shown_log_odds": Num(), "shown_share": Opt(Num()),
                 "n_tested": Int(0), "n_separating": Int(0), "alpha": Num(0, 1), "weak": Bool(),
                 "weak_reasons": List(Str(10_000), 0, 100), "templates": List(_CONTRAST_ROW, 0, 10_000)},
                optional=("runner_up_source", "mean_log_odds", "shown_log_odds", "shown_share", "n_tested",
                          "n_separating", "alpha", "weak_reasons", "templates"), extra=Anything())
#: ``verdict_scores``: the per-prompt differences behind the paired test (attribution.paired.PairedTest.differences).
_VERDICT_SCORES = Obj({"top": _LABEL, "runner_up": _LABEL, "statistic": Str(100), "n": Int(1), "mean": Num(),
                       "sd": Opt(Num(0)), "favour_top": Int(0), "favour_runner_up": Int(0), "ties": Int(0),
                       "share_top": Num(0, 1), "quantiles": Map(Num(), key=Str(20), max_len=100),
                       "histogram": Obj({"start": Num(), "width": Num(0, min_exclusive=True),
                                         "counts": List(Int(0), 1, 10_000)})},
                      optional=("statistic", "sd", "ties", "quantiles"), extra=Anything())
#: ``run``: what the CLI records about the run (:func:`attribution.report.run.run_facts`).
_RUN = Obj({"references": Opt(Obj({"source": Str(100), "tasks": Map(Map(Int(0), key=_LABEL), max_len=10_000)},
                                  extra=Anything())),
            "settings": Map(Anything(), key=Str(100), max_len=200),
            "skipped_records": List(Str(10_000), 0, 1_000), "n_skipped_references": Int(0),
            "n_skipped_outputs": Int(0)},
           optional=("references", "settings", "skipped_records", "n_skipped_references", "n_skipped_outputs"),
           extra=Anything())
_INTERVAL = List(Num(0, 1), 2, 2)
#: ``power``: how often the benchmark's documented students and controls were named at about this size
#: (:func:`attribution.report.error_rates.power`); ``measured`` false with a ``reason`` when not measured.
_POWER = Obj({"measured": Bool(), "reason": Str(1_000), "artifact": Str(1_000), "run": Str(200), "commit": Str(100),
              "dirty": Bool(), "date": Str(100), "command": Str(2_000), "data": Opt(Str(1_000)), "candidates": Int(1),
              "level": Opt(Str(100)), "rule": Opt(Str(100)), "alpha": Opt(Num(0, 1)), "features": Opt(Str(1_000)),
              "arm": Str(100), "n_outputs": Int(0), "size": Int(1),
              "documented": Obj({"right": Int(0), "wrong": Int(0), "none": Int(0), "n": Int(1),
                                 "right_interval": _INTERVAL, "wrong_interval": _INTERVAL}, extra=Anything()),
              "controls": Obj({"named": Int(0), "n": Int(0), "interval": Opt(_INTERVAL)}, extra=Anything()),
              "curve": List(List(Int(0), 3, 3), 0, 100),
              "differences": List(Str(1_000), 0, 20)},
             optional=("reason", "artifact", "run", "commit", "dirty", "date", "command", "data", "candidates", "level",
                       "rule", "alpha", "features", "arm", "n_outputs", "size", "documented", "controls", "curve",
                       "differences"), extra=Anything())
RESULT_SCHEMA = Obj({
    "n_outputs": Int(0),
    "n_empty": Int(0),
    "skipped": Int(0),
    "ranking": _RANKING,
    "family_ranking": _FAMILY_RANKING,
    "student": Opt(_LABEL),
    "verdict": _VERDICT,
    "tasks": Map(Obj({"n_outputs": Int(0), "ranking": _RANKING, "verdict": _VERDICT}, optional=("verdict",),
                     extra=Anything()), max_len=10_000),
    "evidence": List(_EVIDENCE, 0, 10_000),
    "contrast": _CONTRAST,
    "verdict_scores": _VERDICT_SCORES,
    "outputs": List(Obj({"id": Str(10_000), "task": Opt(_LABEL), "probabilities": Map(Num(0, 1))},
                        optional=("id", "task"), extra=Anything())),
    "signature": Str(10_000),
    "inputs": Map(Obj({"name": Str(10_000), "sha256": Str(64, pattern="[0-9a-f]{64}")}, extra=Anything())),
    "checks": Map(Anything(), key=Str(100), max_len=100),
    "warnings": List(Str(100_000), 0, 1_000),
    "run": _RUN,
    "power": _POWER,
}, optional=("n_empty", "skipped", "family_ranking", "student", "verdict", "tasks", "evidence", "contrast",
             "verdict_scores", "outputs", "signature", "inputs", "checks", "warnings", "run", "power"),
    extra=Anything())


def is_number(value: Any) -> bool:
    """A finite-or-infinite real number, not a bool and not NaN."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not (
        isinstance(value, float) and math.isnan(value))


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
                        and is_number(row.get("probability"))):
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


def one_student(result: Any, student: str | None = None) -> Any:
    """The one-student result to render: ``result`` itself, or, from a ``rank --group-by`` document
    (``{"group_by", "students": [...], "signature", "inputs", "run", ...}``), the entry named ``student``
    with the run's shared keys (warnings of both). ``E604`` names the students when none or an unknown
    one is given."""
    grouped = isinstance(result, dict) and isinstance(result.get("students"), list)
    if not grouped:
        if student is not None:
            raise InputError(Errors.E604.format(detail="--student picks one student of a 'rank --group-by' "
                                                       "result, and this is one student's"), code="E604")
        return result
    entries = [e for e in result["students"] if isinstance(e, dict)]
    names = [str(e.get("student")) for e in entries]
    if student is None or student not in names:
        shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
        given = "" if student is None else f"no student '{student}' in it; "
        raise InputError(Errors.E604.format(
            detail=f"a 'rank --group-by {result.get('group_by')}' result of {len(names)} students: {given}pick one "
                   f"with --student NAME ({shown})"), code="E604")
    entry = entries[names.index(student)]
    shared = {k: v for k, v in result.items() if k not in ("students", "group_by")}
    merged = {**shared, **entry}
    if isinstance(merged.get("run"), dict):  # skipped records and reference counts are the whole file's
        merged["run"] = {**merged["run"], "scope": f"the whole file of {len(names)} {result.get('group_by')} groups"}
    warnings = [*(shared.get("warnings") or []), *(entry.get("warnings") or [])]
    if warnings:
        merged["warnings"] = warnings
    return merged


__all__ = ["RESULT_SCHEMA", "check_result", "is_number", "one_student"]
