"""The report's sections, built from a result (no new numbers: only what the result holds).

:func:`build_document` puts them in the order an auditor reads: the verdict, the ranking, the
evidence (per-output plot, then each evidence template's frequency in the student's outputs beside
its frequency in each teacher's references), the methodology and the limitations
(:mod:`attribution.report.method`), the counts, the input checks, how to read the numbers, and the
date, versions, settings and input hashes.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..verdicts import Verdict
from .case import CaseDetails, suspect_name
from .document import Code, Document, Heading, Image, Para, Quotes, Strong, Terms, format_interval, num, pct, table
from .evidence import contrast_blocks, plain_sentence, verdict_blocks
from .method import limitation_blocks, methodology_blocks, result_verdict
from .validate import is_number

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
                "beat every other candidate prompt by prompt?), the unlisted-teacher test's (could a teacher outside "
                "the candidates explain the outputs as well?), or the two combined, as the verdict's rule says (see "
                "Methodology); with several tasks, the largest over the tasks. The verdict names a teacher only when "
                "it is below alpha."),
    ("paired score", "a candidate's mean per-prompt similarity to the student's outputs, its answer to the same "
                     "prompt compared after removing what all the candidates' answers share; the paired test asks "
                     "whether the top candidate's exceeds each rival's prompt by prompt."),
    ("weight", "a template's summed contribution to the top teacher's score over all outputs, relative to the "
               "average teacher (higher means more evidence for it)."),
    ("share", "the share of outputs that use a template at least once: the student's outputs, and each teacher's "
              "reference outputs."),
)


def glossary(verdict: Verdict) -> tuple[tuple[str, str], ...]:
    """:data:`GLOSSARY`, its ``p_value`` said under the verdict's own rule when the result shows it."""
    rule = verdict.rule
    if rule is None:
        return GLOSSARY
    p_value = (f"the p-value behind the verdict, the number to act on: under this run's rule ({rule.name}), "
               f"{rule.p_value_text}; with several tasks, the largest over the tasks. The verdict names a teacher "
               f"only when it is below alpha ({rule.alpha:g}). The rule: see Methodology.")
    return tuple((term, p_value if term == "p_value" else text) for term, text in GLOSSARY)


#: Skipped records listed by name (the rest are counted).
MAX_SKIPPED_SHOWN = 20


def verdict_sentence(verdict: dict[str, Any] | None) -> str:
    """One plain sentence saying what the verdict means (no command-line options in it)."""
    from ..inference import describe_verdict

    return plain_sentence(describe_verdict(verdict))


#: The report's title; the suspect's name follows it when known.
TITLE = "Teacher attribution report"


def build_document(result: dict[str, Any], plots: Any, *, date: str, examples: int = 0,
                   case: CaseDetails | None = None) -> Document:
    """The whole report; ``plots``: the plot keys available (``outputs`` only when kept); ``case``: the
    suspect's name and the case fields to show (:mod:`attribution.report.case`)."""
    suspect = suspect_name(result, case)
    doc = Document(f"{TITLE}: {suspect}" if suspect else TITLE)
    rows = (case or CaseDetails()).rows()
    doc.header = " · ".join([doc.title, *(f"{label} {value}" for label, value in rows if label == "Case ID")])
    if rows:
        doc.add(table(["case", ""], rows))
    verdict = result.get("verdict") or {}
    status = str(verdict.get("status", "unavailable"))
    skipped = f"; {result['skipped']} invalid record(s) skipped" if result.get("skipped") else ""
    doc.add(Para((Strong(f"Verdict: {status}."), " " + verdict_sentence(verdict or None)), f"verdict-{status}"),
            Para(f"{result['n_outputs']} student outputs ranked{skipped}. Report of {date}."))
    if verdict:
        doc.add(Heading(2, "Evidence behind the verdict"), *verdict_blocks(result), *contrast_blocks(result))
    _ranking(doc, result)
    _per_output(doc, "outputs" in plots)
    _evidence(doc, result, examples)
    doc.add(Heading(2, "Methodology"), *methodology_blocks(result))
    doc.add(Heading(2, "Limitations: the verdict's measured error rates"), *limitation_blocks(result))
    _counts(doc, result)
    _checks(doc, result)
    doc.add(Heading(2, "How to read the numbers"), Terms(glossary(result_verdict(result))))
    _settings(doc, result, date)
    _full_examples(doc, result, examples)
    return doc


def _ranking(doc: Document, result: dict[str, Any]) -> None:
    families = [row for row in result.get("family_ranking") or [] if isinstance(row, dict)]
    if families:
        doc.add(Heading(2, "Ranking of the candidate families"),
                Para("Versions of one model line form a family; families are ranked first, and the verdict names a "
                     "family before a version.", "note"),
                table(["rank", "family", "versions", "probability", "95% interval", "support"],
                      [(i + 1, r["family"], ", ".join(map(str, r.get("members") or [])), num(r["probability"]),
                        format_interval(r), num(r.get("support"), 2)) for i, r in enumerate(families)],
                      numeric=(0, 3, 4, 5)))
    doc.add(Heading(2, "Ranking of the candidate teachers"),
            table(["rank", "teacher", "probability", "95% interval", "support"],
                  [(i + 1, r["teacher"], num(r["probability"]), format_interval(r), num(r.get("support"), 2))
                   for i, r in enumerate(result["ranking"])], numeric=(0, 2, 3, 4)),
            Image("ranking", "Student-level probability of each candidate teacher: bar chart"))
    rows = []
    for task, sub in sorted((result.get("tasks") or {}).items()):
        best = (sub.get("ranking") or [{}])[0]
        rows.append((task, sub.get("n_outputs", ""), str(best.get("teacher", "")), num(best.get("probability")),
                     format_interval(best), num(best.get("support"), 2),
                     str((sub.get("verdict") or {}).get("status", "n/a"))))
    if rows:
        doc.add(Heading(3, "Per task"),
                table(["task", "outputs", "top teacher", "probability", "95% interval", "support", "verdict"], rows,
                      numeric=(1, 3, 4, 5)))


def _per_output(doc: Document, has_plot: bool) -> None:
    doc.add(Heading(2, "Per-output evidence"))
    if has_plot:
        doc.add(Para("Each dot is one output: the probability it gives each teacher. The ranking combines them "
                     "(geometric mean); a wide spread means the outputs disagree.", "note"),
                Image("outputs", "Per-output probability of each teacher: box and strip plot"))
    else:
        doc.add(Para(("This result holds no per-output probabilities. Rank with ", Code("--report"), " (or ",
                      Code("rank_student(..., keep_outputs=True)"), ") to plot them."), "note"))


def _evidence(doc: Document, result: dict[str, Any], examples: int) -> None:
    doc.add(Heading(2, "Templates that drove the decision"))
    evidence = [row for row in result.get("evidence") or [] if isinstance(row, dict)]
    if not evidence:
        doc.add(Para("No template evidence in this result.", "note"))
        return
    teachers = [r["teacher"] for r in result["ranking"]]
    top = evidence[0].get("teacher", teachers[0])
    with_refs = any(isinstance(row.get("reference_share"), dict) for row in evidence)
    tasks = {row.get("task") for row in evidence}
    attributed = (result.get("verdict") or {}).get("status") == "attributed"
    towards: tuple[Any, ...] = (("Templates that pushed the outputs towards ", Strong(str(top)))
                                if attributed else
                                ("The verdict names no teacher. Templates that pushed the outputs towards the "
                                 f"top-ranked candidate, {top}, though the tests did not single it out",))
    doc.add(Para((*towards, ", strongest first, with the share of outputs using each: the student's, and beside it "
                  "each teacher's references. ", Code("pos"), " templates are Penn Treebank tag sequences; ",
                  Code("words"), " are word n-grams."), "note"))
    rows = []
    for i, row in enumerate(evidence):
        where = f" ({row['task']})" if len(tasks) > 1 and row.get("task") is not None else ""
        shares = row["reference_share"] if isinstance(row.get("reference_share"), dict) else {}
        student = pct(row.get("share_of_outputs")) + (f" ({row['n_outputs']})" if "n_outputs" in row else "")
        rows.append((i + 1, Code(f"{row.get('block', '')}: {row.get('feature', '')}{where}"), num(row.get("weight")),
                     student, *((pct(shares.get(t)) for t in teachers) if with_refs else ())))
    header = ["#", "template", "weight", "student", *(f"{t} refs" for t in teachers)] if with_refs else \
        ["#", "template", "weight", "student"]
    doc.add(table(header, rows, numeric=tuple(range(2, len(header))) + (0,), kind="evidence"))
    if not with_refs:
        doc.add(Para("Each teacher's share of reference outputs using these templates: not in this model file "
                     "(a model fitted by a version that records it shows them here).", "note"))
    doc.add(Heading(3, "Examples from the student's outputs"),
            table(["#", "template", "spans"],
                  [(i + 1, Code(f"{row.get('block', '')}: {row.get('feature', '')}"),
                    Quotes(tuple(map(str, row.get("examples") or ()))) if row.get("examples") else "-")
                   for i, row in enumerate(evidence)], numeric=(0,)))
    if examples > 0:
        doc.add(Para("Whole outputs using each template: in the appendix at the end.", "note"))


def _full_examples(doc: Document, result: dict[str, Any], examples: int) -> None:
    """Whole outputs per evidence template (``examples`` each), when the result kept them."""
    evidence = [row for row in result.get("evidence") or [] if isinstance(row, dict)]
    if examples <= 0 or not evidence:
        return
    doc.add(Heading(2, "Appendix: whole outputs using the templates"))
    if not any(row.get("example_outputs") for row in evidence):
        doc.add(Para(("This result keeps no whole outputs; rank with ", Code(f"--examples {examples}"),
                      " to keep them. The spans under the templates come from the student's outputs."), "note"))
        return
    for i, row in enumerate(evidence):
        for output in (row.get("example_outputs") or [])[:examples]:
            doc.add(Para((Strong(f"#{i + 1} {row.get('feature', '')}"), f" (output {output.get('id', '')}): "),
                         "note"), Para(str(output.get("output", "")), "output"))


def _counts(doc: Document, result: dict[str, Any]) -> None:
    run = result.get("run") or {}
    doc.add(Heading(2, "Counts"), Heading(3, "Reference outputs per teacher"))
    references = run.get("references")
    if references and references.get("tasks"):
        tasks = sorted(references["tasks"])
        teachers = sorted({t for counts in references["tasks"].values() for t in counts})
        doc.add(table(["teacher", *tasks],
                      [(t, *(references["tasks"][task].get(t, 0) for task in tasks)) for t in teachers],
                      numeric=tuple(range(1, len(tasks) + 1))),
                Para(f"Counted from the {references.get('source', 'references')}.", "note"))
    else:
        doc.add(Para("Not in this result: the model file does not record them (fit from the references, or with "
                     "4 or more candidates, to count them).", "note"))
    checks = result.get("checks") or {}
    scope = f" (in {run['scope']})" if isinstance(run.get("scope"), str) else ""
    rows = [("used as evidence", result["n_outputs"]),
            ("empty after normalization (not used)", result.get("n_empty", "n/a")),
            (f"invalid, skipped{scope}", run.get("n_skipped_outputs", result.get("skipped", "n/a")))]
    rows += [(label, checks[key]) for key, label in (("n_repeated", "repeating an earlier output"),
                                                     ("n_short", "near-empty (fewer than 3 words)"),
                                                     ("n_not_english", "not read as English"))
             if is_number(checks.get(key))]
    doc.add(Heading(3, "Student outputs"), table(["outputs", "count"], rows, numeric=(1,)))
    skipped = list(run.get("skipped_records") or [])
    if skipped:
        total = run.get("n_skipped_outputs", 0) + run.get("n_skipped_references", 0)
        more = f" (the first {len(skipped)} of {total})" if total > len(skipped) else ""
        doc.add(Para(f"Skipped records{more}:", "note"), Para(Quotes(tuple(skipped)), "note"))


def _checks(doc: Document, result: dict[str, Any]) -> None:
    doc.add(Heading(2, "Input checks"))
    warnings = [str(w) for w in result.get("warnings") or []]
    if not warnings:
        doc.add(Para("The input checks found nothing to warn about (repeated, near-empty or non-English outputs; "
                     "small or unbalanced references; prompts of another task).", "note"))
    for warning in warnings:
        doc.add(Para(f"Warning: {warning}.", "warning"))
    checks = result.get("checks") or {}
    similarity = checks.get("prompt_similarity")
    if is_number(similarity):
        doc.add(Para(f"Similarity of the student's prompts to the references' prompts: {num(similarity, 2)} "
                     "(1 = the same kind of prompts).", "note"))


#: Settings shown under a longer name.
_SETTING_NAMES = {"random_state": "random_state (seed of the bootstrap)", "C": "C (regularization)",
                  "n_bootstrap": "n_bootstrap (resamples)"}


def _signature_rows(signature: Any, versions_only: bool) -> list[tuple[str, Any]]:
    """The signature's parts (``teacher-attribution==0.1.0|tagger=spacy:...==3.8.0|features=...``) as
    rows: the versions, and the settings it records unless ``versions_only``."""
    if not isinstance(signature, str) or not signature:
        return [("signature", "n/a")]
    rows: list[tuple[str, Any]] = []
    for part in signature.split("|"):
        key, sep, value = part.partition("=")
        if value.startswith("="):  # "teacher-attribution==0.1.0"
            rows.append((f"{key} version", Code(value[1:])))
        elif sep and (key == "tagger" or not versions_only):
            rows.append((key, Code(value)))
        elif not sep:
            rows.append(("", Code(part)))
    return rows + [("signature", Code(signature))]


def _settings(doc: Document, result: dict[str, Any], date: str) -> None:
    settings = (result.get("run") or {}).get("settings") or {}
    rows: list[tuple[str, Any]] = [("report date", date), ("rendered by", f"teacher-attribution {__version__}")]
    rows += _signature_rows(result.get("signature"), versions_only=bool(settings))
    rows += [(_SETTING_NAMES.get(key, key), Code("null" if value is None else str(value)))
             for key, value in sorted(settings.items())]
    if not settings:
        rows.append(("settings and seeds", "not in this result (rank with this version to record them)"))
    doc.add(Heading(2, "Date, versions and settings"), table(["setting", "value"], rows, kind="settings"),
            Heading(2, "Inputs"))
    inputs = result.get("inputs")
    if not inputs:
        doc.add(Para("No input hashes in this result.", "note"))
        return
    rows3: list[tuple[str, str, Any]] = []
    for role, info in sorted(inputs.items()):
        if isinstance(info, dict):
            name = str(info.get("name", "")) + (f" ({info['source']})" if info.get("source") else "")
            rows3.append((role, name, Code(str(info.get("sha256", "")))))
        else:
            rows3.append((role, str(info), ""))
    doc.add(table(["role", "file", "SHA-256"], rows3, kind="settings"))


__all__ = ["GLOSSARY", "TITLE", "build_document", "glossary", "verdict_sentence"]
