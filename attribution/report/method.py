"""The report's methodology and limitations, written from the result's own settings.

The methodology says what was compared (features, tagger, references), by what (the classifier and
its bootstrap) and how the verdict was decided (which test, at which alpha), in plain words. The
limitations show the verdict's error rates measured on this project's benchmarks
(:mod:`attribution.report.error_rates`), then what they mean for this result.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..verdicts import Verdict, VerdictRule
from .document import Block, Code, Para, Strong, num, table
from .error_rates import error_rate_table, interval_text, power, short_interval, signature_fields

#: What each block of a feature set counts, by block name.
_BLOCKS = {"pos": "part-of-speech tag n-grams", "words": "word n-grams", "chars": "character n-grams"}


_WEIGHTING = {"tfidf": "TF-IDF weighted", "binary": "present or absent", "count": "counted"}


def _signature(result: dict[str, Any]) -> dict[str, str]:
    return signature_fields(result.get("signature"))


def _settings(result: dict[str, Any]) -> dict[str, Any]:
    return dict((result.get("run") or {}).get("settings") or {})


def describe_features(name: str) -> str:
    """A named feature set in words, from its vectorizers' parameters (or its name when unknown)."""
    from ..features import FEATURE_SETS, make_feature_blocks

    if name not in FEATURE_SETS:
        return f"the feature set '{name}'"
    parts = []
    for block, vectorizer in make_feature_blocks(name):
        params = vectorizer.get_params()
        low, high = params.get("ngram_range", (params.get("n"), params.get("n")))
        what = _BLOCKS.get(block, f"{block} n-grams")
        size = f"lengths {low}-{high}" if low != high else f"length {low}"
        weighting = _WEIGHTING.get(params.get("weighting"), f"{params.get('weighting')} weighted")
        parts.append(f"{what} of {size} (the {params.get('top_k'):,} most frequent in the references, {weighting})")
    return f"'{name}': " + " and ".join(parts)


def methodology_blocks(result: dict[str, Any]) -> list[Block]:
    """What was compared, the classifier, and the verdict's test(s) with alpha, from the result."""
    sig, settings = _signature(result), _settings(result)
    teachers = [r["teacher"] for r in result["ranking"]]
    features = settings.get("features", sig.get("features"))
    compared = (f"The student's {result['n_outputs']} outputs were compared with the reference outputs of "
                f"{len(teachers)} candidate teachers ({', '.join(teachers)}); the counts are under Counts. Each "
                "text is described by " + (describe_features(str(features)) if features else "its features")
                + (f", tagged by {sig['tagger']}" if sig.get("tagger") else "")
                + (". Texts were normalized first (artifacts such as </s>, <|endoftext|> and runs of 'nan' "
                   "removed)." if str(settings.get("normalize", sig.get("normalize"))) == "True" else "."))
    c_value = settings.get("C", sig.get("C", "n/a"))
    weights = settings.get("class_weight")
    boot = f"{settings['n_bootstrap']} " if "n_bootstrap" in settings else ""
    seed = f" (seed {settings['random_state']})" if "random_state" in settings else ""
    classifier = (f"A logistic-regression classifier (C = {c_value}"
                  + (f", {weights} class weights" if weights else "") + ") fitted on the references gives each "
                  "student output a probability per teacher. The student-level probability is their renormalized "
                  f"geometric mean; its 95% interval and the support come from {boot}Poisson bootstrap resamples "
                  f"of the outputs{seed}.")
    return [Para((Strong("What was compared."), " " + compared)), Para((Strong("Classifier."), " " + classifier)),
            Para((Strong("Verdict."), " " + _verdict_method(result, settings)))]


def result_verdict(result: dict[str, Any]) -> Verdict:
    """The result's verdict, typed, with the rule of the run when its settings record it."""
    settings = _settings(result)
    verdict = Verdict.from_dict(result.get("verdict") or {})
    rule = settings.get("verdict_test")
    if rule in VerdictRule.CHOICES and not verdict.is_control and 0 < verdict.alpha < 1:
        verdict = replace(verdict, rule=VerdictRule(rule, verdict.alpha))
    if verdict.status == "unavailable":  # no test ran, whatever it would have been
        verdict = replace(verdict, tests=())
    return verdict


def _verdict_method(result: dict[str, Any], settings: dict[str, Any]) -> str:
    verdict = result_verdict(result)
    parts = []
    if verdict.uses_paired:
        parts.append(f"The paired test ran on {verdict.n_paired} outputs whose prompts every candidate "
                     "answered in the references (matched by id): per output, each teacher's answer to the same "
                     "prompt is compared with the student's output after removing what all the teachers' answers "
                     "share; one-sided paired t-tests ask whether the top-ranked teacher scores higher than every "
                     "other candidate, and p_paired is the largest of them (an intersection-union test).")
    if verdict.uses_unlisted:
        parts.append("The unlisted-teacher test asks whether a teacher outside the candidates could explain the "
                     "outputs as well: at fit time each teacher was left out in turn and its references scored by "
                     "a model of the others; p_unlisted is the share of such simulated students, as large as this "
                     "one, whose margin reaches this student's.")
    if verdict.is_control:
        parts.append(f"The control test ran on {verdict.n_paired} outputs whose prompts the control "
                     "(a model of the student's base model taught by no candidate) also answered: per prompt, the "
                     "student's log-probability of the top-ranked family (then version) against each other candidate "
                     "is compared with the control's; one-sided paired t-tests, and p_control is the largest of them.")
    elif verdict.is_sequential:
        seq = verdict.sequential or {}
        design = ("alpha spending (O'Brien-Fleming boundaries for the fixed-n paired statistic, over a budget of "
                  f"{seq.get('max_outputs')} outputs)" if seq.get("design") == "spending" else
                  "an e-process: per candidate, a test supermartingale betting, with leaders and bets chosen from "
                  "earlier batches only, that the leader's answers beat that candidate's; a candidate is refuted when "
                  "its wealth reaches 2/alpha (Ville's inequality)")
        parts.append(f"The sequential test read the student's outputs in order, {seq.get('batch_size')} at a time, "
                     f"looking after each batch, and stopped after {seq.get('outputs_used')} outputs. Its design is "
                     f"{design}. Its error rate holds however early it stopped, if the order of the outputs does not "
                     "depend on them (shuffle the prompts); it compares the candidates only.")
    elif not verdict.tests:
        parts.append("No test could run: the references hold no candidate's answers to the student's prompts, and "
                     "the unlisted-teacher test needs 4 or more candidates. Only the ranking is reported.")
    if verdict.rule is not None:
        parts.append(verdict.rule.description)
    else:
        parts.append(f"alpha = {verdict.alpha:g}; with several tasks, every task must pass.")
    parts.append("A teacher is named only when p_value < alpha.")
    return " ".join(parts)


def limitation_blocks(result: dict[str, Any]) -> list[Block]:
    """The measured error rates (one table, with their commands) and what they mean here."""
    rates = error_rate_table()
    rows = [(r.data, r.case, r.n, "n/a" if r.right is None else short_interval(r.right, r.n),
             short_interval(r.wrong, r.n), r.none) for r in rates]
    commands: dict[str, list[str]] = {}
    for r in rates:
        when = f", commit {r.commit[:10]}, {r.date}" if r.commit else ", quoted"
        commands.setdefault(r.command, []).append(r.data.split(" (")[0] + when)
    sources: list[Any] = ["Commands: "]
    for i, (command, data) in enumerate(commands.items()):
        sources += ["; " if i else "", Code(command), f" ({data[0]})"]
    blocks: list[Block] = [
        Para("Measured on this project's benchmarks with the default rule (--verdict-test either) unless a row "
             "says otherwise (docs/verdict.md, docs/results.md), on the data the rule was chosen on; in brackets, "
             "the 95% Clopper-Pearson interval of each rate (0 wrong of 9 still allows up to 34%).", "note"),
        table(["data", "case", "students", "right teacher named", "wrong teacher named", "none named"], rows,
              numeric=(2, 3, 4, 5)),
        Para(tuple(sources) + (".",), "note")]
    blocks += [Para(text) for text in _what_it_means(result)]
    return blocks


def _what_it_means(result: dict[str, Any]) -> list[str]:
    verdict = result.get("verdict") or {}
    left_out = next((r for r in error_rate_table() if r.case == "true teacher left out of the candidates"
                     and r.data.startswith("AlpacaEval")), None)
    out = []
    typed = result_verdict(result)
    if typed.status == "attributed" and typed.uses_paired and not typed.unlisted_passed:
        named = typed.teacher or typed.family
        measured = (f"With the true teacher left out of the candidates, {left_out.wrong_text} AlpacaEval students "
                    "were attributed to its closest candidate: " if left_out else "")
        out.append(f"This verdict compares the candidates with each other. {measured}if {named}'s likeness may have "
                   "taught this student, this verdict does not rule it out (the strict rule, which also asks the "
                   "unlisted-teacher test, would).")
    out += _at_this_size(result, str(verdict.get("status", "unavailable")))
    out.append("The probability is not the chance that the top teacher is right (read as one, its calibration "
               "error is 0.43); the support is sampling noise only, not model error. The rates come from one "
               "real-model dev set (9 documented students, 2 controls) and the paper's GPT-2 students: validate "
               f"on your own candidates. Top probability here: {num(result['ranking'][0]['probability'])}.")
    return out


#: What the report reads of a measured ``power`` entry (one that lacks any is looked up again).
_POWER_KEYS = ("documented", "controls", "size", "n_outputs", "commit", "date", "command", "data", "candidates", "rule",
               "alpha", "features", "artifact")


def result_power(result: dict[str, Any]) -> dict[str, Any]:
    """The result's ``power`` entry; for a result saved without one, looked up now from its own settings."""
    given = result.get("power")
    if isinstance(given, dict) and (not given.get("measured") or all(k in given for k in _POWER_KEYS)):
        return given
    settings, verdict = _settings(result), result.get("verdict") or {}
    alpha = verdict.get("alpha")
    return power(int(result["n_outputs"]), len(result["ranking"]), rule=str(settings.get("verdict_test") or "either"),
                 alpha=float(alpha) if isinstance(alpha, (int, float)) else 0.05,
                 features=settings.get("features") or _signature(result).get("features"))


def _at_this_size(result: dict[str, Any], status: str) -> list[str]:
    """What the simulated audits of about this many outputs say about this verdict (the result's ``power``)."""
    p = result_power(result)
    if not p.get("measured"):
        return [f"How often a verdict from this many outputs names the teacher was not measured ({p.get('reason')}): "
            "an inconclusive result here says nothing about the power of the test."]
    doc, ctl = p["documented"], p["controls"]
    size = p["size"]
    right = interval_text(doc["right"], doc["n"])
    wrong = interval_text(doc["wrong"], doc["n"])
    controls = interval_text(ctl["named"], ctl["n"]) if ctl.get("n") else "not measured"
    curve = ", ".join(f"{s} outputs {round(100 * k / n)}%" for s, k, n in sorted(p.get("curve") or []) if n)
    commit = str(p["commit"])[:10] + (" with uncommitted changes" if p.get("dirty") else "")
    source = (f"Measured by {p['command']} (commit {commit}, {p['date']}) on the {p['data']} ({p['candidates']} "
              f"candidates, rule {p['rule']}, alpha {p['alpha']}, features {p['features']}; random subsets of each "
              f"student's outputs; {p['artifact']}).")
    differs = p.get("differences") or []
    caveat = (" These figures may not apply here: " + "; ".join(differs) + "." if differs else "")
    audits = (f"simulated audits of {size} outputs of documented students (their teacher among the candidates) "
              f"named it in {right}, a wrong teacher in {wrong} and none in the rest; audits of {size} outputs of "
              f"human-data controls (taught by no LLM) named a teacher in {controls}")
    at = f"At {size} outputs (this result has {p['n_outputs']})" if p["n_outputs"] != size else f"At {size} outputs"
    if status == "attributed":
        return [f"{at}, {audits}. {source}{caveat}"]
    lead = ("No test could run, so this result decides nothing. When a test runs: " if status == "unavailable"
            else "This result names no teacher. ")
    return [f"{lead}{at}, {audits}. So an inconclusive result at this number of outputs is common when the true "
            "teacher is a candidate, and it is also what a student taught by none of them gives: it neither names "
            "nor clears the top-ranked candidate; more outputs (or the prompts 'attribute-teacher probes' ranks "
            f"first) give the test more power. Named right by audit size: {curve}. {source}{caveat}"]


__all__ = ["describe_features", "limitation_blocks", "methodology_blocks", "result_verdict"]
