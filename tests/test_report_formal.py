"""The report as a document an auditor files (issue 21): the verdict's evidence (its level, each test's p-value and
rival, the paired scores with the runner-up), the family ranking, what an inconclusive verdict means at this size,
the suspect in the title, the case fields, page numbers and a running header on every printed page, and a verdict
sentence without command-line options.

Rendering rules use hand-written results of the documented shape (tests/test_report_sections.py's); the family
model is fitted on the bundled demo (data/demo: 3 teachers, 2 of them one family) and ranks the demo student whose
prompts the teachers answered, so its paired tests run; the PDF is printed by a real headless Chromium and read
back page by page with pdftotext (skipped with a reason without them).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from test_report import needs_chromium  # noqa: E402
from test_report_sections import DATE, result, text_of  # noqa: E402

from attribution.errors import InputError  # noqa: E402
from attribution.report import render_html, render_markdown, verdict_sentence, write_report  # noqa: E402
from attribution.report.case import CaseDetails, case_details  # noqa: E402
from attribution.report.error_rates import interval_text, power  # noqa: E402
from attribution.report.validate import check_result  # noqa: E402

from conftest import run_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"
CASE = CaseDetails(case_id="NCA-2026-0117", auditor="J. Okafor", organisation="Model Audit Office")
PAIRED_SCORES = {"alpha": 0.31, "beta": 0.27, "gamma": 0.12}
#: What an inconclusive report must not say: a bolded teacher it did not name, and a reassurance the benchmark
#: does not support.
MISLEADING = ("<strong>alpha</strong>", "not evidence against the top teacher")


def attributed() -> dict:
    """A paired attribution (the unlisted test did not pass), with the paired scores behind it."""
    return result(verdict={**result()["verdict"], "paired_score": dict(PAIRED_SCORES), "level": "teacher",
                           "family": "alpha", "best_family": "alpha"})


def inconclusive(status: str = "inconclusive") -> dict:
    verdict = {**result()["verdict"], "status": status, "teacher": None, "p_value": 0.4, "p_paired": 0.2,
               "paired_score": dict(PAIRED_SCORES), "level": None, "family": None}
    if status == "unavailable":
        verdict.update(p_value=None, p_paired=None, p_unlisted=None, test=None, paired_score=None, runner_up=None,
                       n_paired=0)
    return result(verdict=verdict)


def html_text(res: dict, **options) -> tuple[str, str]:
    page = render_html(res, {}, date=DATE, **options)
    return page, text_of(page)


# -- the verdict's evidence -----------------------------------------------------------------------------------------
def test_verdict_evidence_shows_each_test_and_the_paired_scores_with_the_runner_up():
    page, text = html_text(attributed())
    assert "Evidence behind the verdict Level of the verdict: teacher. The teacher alpha is named." in text
    assert "paired: the top candidate against every other, prompt by prompt 0.002 beta" in text  # p and its rival
    assert "unlisted teacher: could a teacher outside the candidates explain the outputs as well? 0.7" in text
    rows = re.search(r"<th>mean paired score</th>.*?</table>", page, re.S).group(0)
    cells = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", rows)]
    assert cells == [["alpha", "top", "0.3100", "0.0000", ""],
                     ["beta", "runner-up", "0.2700", "-0.0400", "0.002"],
                     ["gamma", "", "0.1200", "-0.1900", "at most 0.002"]]
    assert "runner-up beta" in text  # the verdict sentence names the same runner-up as the table
    # without paired scores (an unlisted-only verdict) there is no score table, and nothing is made up
    unlisted = result(verdict={"status": "attributed", "teacher": "alpha", "best_candidate": "alpha",
                               "test": "unlisted", "p_value": 0.001, "p_unlisted": 0.001, "alpha": 0.05})
    page, text = html_text(unlisted)
    assert "mean paired score" not in text and "unlisted teacher: could a teacher outside" in text


def test_family_model_report_shows_the_family_ranking_and_the_versions_test():
    """A model fitted with families on the demo (gemma and smollm2 one family, human another) ranks the demo
    student whose prompts the teachers answered: the report shows the families, the verdict's level and the
    paired scores between families and between the versions."""
    from attribution.api import fit_reference, rank_student
    from attribution.io import read_records

    student = read_records(DEMO / "student_gemma-3-270m.jsonl")
    ids = {r.id for r in student}
    references = [r for r in read_records(DEMO / "teachers.jsonl", require_teacher=True) if r.id in ids]
    model = fit_reference(references, families={"gemma-3-270m": "small-lms", "smollm2-135m": "small-lms",
                                                "human": "human"})
    ranked = rank_student(model, student)
    verdict = ranked["verdict"]
    page, text = html_text(ranked)
    assert "Ranking of the candidate families" in text
    for i, row in enumerate(ranked["family_ranking"]):
        assert f"{i + 1} {row['family']} {', '.join(row['members'])} {row['probability']:.3f}" in text
    assert "Ranking of the candidate teachers" in text
    assert f"Level of the verdict: {verdict['level'] or 'none'}" in text
    assert "family mean paired score" in text  # the paired test between families
    for family in verdict["paired_score"] or {}:
        assert f"<td>{family}</td>" in page
    if verdict["teacher_test"]:
        assert f"version within the family {verdict['best_family']}: {verdict['best_candidate']}" in text
    # a family verdict names the family, not a version
    family_level = copy.deepcopy(ranked)
    family_level["verdict"].update(status="attributed", level="family", teacher=None, family="small-lms")
    text = html_text(family_level)[1]
    assert (f"Level of the verdict: family. The family small-lms is named, not a version: its best-ranked version, "
            f"{verdict['best_candidate']}, is not singled out") in text


def test_verdict_sentence_has_no_command_line_options():
    sentences = [verdict_sentence(attributed()["verdict"]), verdict_sentence(inconclusive()["verdict"]),
                 verdict_sentence(inconclusive("unavailable")["verdict"])]
    assert "the strict rule, which needs both tests, would name no one" in sentences[0]
    for sentence in sentences:
        assert "--" not in sentence, sentence
    verdict_paragraph = re.search(r'<p class="verdict [^"]*">(.*?)</p>', html_text(attributed())[0]).group(1)
    assert "--" not in verdict_paragraph


# -- an inconclusive verdict ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", ["inconclusive", "unavailable"])
def test_inconclusive_report_says_what_it_means_at_this_size(status):
    page, text = html_text(inconclusive(status))
    for phrase in MISLEADING:
        assert phrase not in page, phrase
    assert "Templates that pushed the outputs towards the top-ranked candidate, alpha, though the tests did not " \
           "single it out" in text
    measured = power(120, 3, features="combined")  # 120 outputs, 3 candidates: the 100-output audits of 5
    doc, ctl = measured["documented"], measured["controls"]
    assert (f"At 100 outputs (this result has 120), simulated audits of 100 outputs of documented students (their "
            f"teacher among the candidates) named it in {interval_text(doc['right'], doc['n'])}, a wrong teacher in "
            f"{interval_text(doc['wrong'], doc['n'])} and none in the rest; audits of 100 outputs of human-data "
            f"controls (taught by no LLM) named a teacher in {interval_text(ctl['named'], ctl['n'])}") in text
    assert (f"Measured by {measured['command']} (commit {measured['commit'][:10]}") in text
    assert "on the 5-candidate AlpacaEval data (5 candidates, rule either, alpha 0.05, features combined" in text
    assert ("These figures may not apply here: this run has 3 candidates; the simulated audits had 5.") in text
    assert "it neither names nor clears the top-ranked candidate" in text
    assert ("No test could run, so this result decides nothing." in text) == (status == "unavailable")
    # an attributed verdict bolds its teacher and reads the same figures as a success rate
    page, text = html_text(attributed())
    assert "<strong>alpha</strong>" in page and "This result names no teacher" not in text
    assert "not evidence against the top teacher" not in text


def test_report_reads_the_results_power_and_says_when_it_was_not_measured():
    measured = json.loads(json.dumps(power(30, 5, features="combined")))  # as read back from a result file
    measured["curve"].reverse()  # any order in the file: the report lists sizes smallest first
    text = text_of(render_html(inconclusive() | {"power": measured}, {}, date=DATE))
    sizes = ", ".join(f"{s} outputs {round(100 * k / n)}%" for s, k, n in sorted(measured["curve"]))
    assert f"Named right by audit size: {sizes}." in text and "At 25 outputs (this result has 30)" in text
    assert "These figures may not apply here" not in text  # 5 candidates, rule, alpha and features as measured
    missing = {"measured": False, "reason": "the error-rate artifact attribution/data/error_rates.json is missing"}
    text = text_of(render_html(inconclusive() | {"power": missing}, {}, date=DATE))
    assert ("How often a verdict from this many outputs names the teacher was not measured (the error-rate artifact "
            "attribution/data/error_rates.json is missing): an inconclusive result here says nothing about the power "
            "of the test.") in text
    check_result(inconclusive() | {"power": measured})
    with pytest.raises(InputError, match=r"power\.curve.*\[E604\]"):  # a crafted entry is refused before rendering
        check_result(inconclusive() | {"power": {**measured, "curve": {"10": "x"}}})


# -- a formal document ----------------------------------------------------------------------------------------------
def test_title_names_the_suspect():
    def title(res: dict, case: CaseDetails | None = None) -> str:
        page = render_html(res, {}, date=DATE, case=case)
        head, first = re.search(r"<title>(.*?)</title>", page).group(1), re.search(r"<h1>(.*?)</h1>", page).group(1)
        assert head == first
        return head

    assert title(result()) == "Teacher attribution report: student.jsonl"  # the student file's name
    assert title(result(student="vicuna-13b")) == "Teacher attribution report: vicuna-13b"  # a group's name
    assert title(result(), CaseDetails(suspect="vendor-mini")) == "Teacher attribution report: vendor-mini"
    assert title(result(inputs={})) == "Teacher attribution report"  # nothing names it
    assert render_markdown(result(), {}, date=DATE).startswith("# Teacher attribution report: student.jsonl\n")


def test_case_fields_appear_only_when_given():
    text = html_text(result(), case=CASE)[1]
    assert "Case ID NCA-2026-0117 Auditor J. Okafor Organisation Model Audit Office Verdict:" in text
    one = html_text(result(), case=CaseDetails(auditor="J. Okafor"))[1]
    assert "Auditor J. Okafor" in one and "Case ID" not in one and "Organisation" not in one
    plain = html_text(result())[1]
    assert "Case ID" not in plain and "Auditor" not in plain and "Organisation" not in plain
    with pytest.raises(InputError, match=r"--auditor must be one line .* \(got a line break or control character\) "
                                         r"\[E608\]"):
        case_details({"auditor": "J. Okafor\n<b>"}, names={"auditor": "--auditor"})


def test_report_and_rank_take_the_case_options(tmp_path, reference_path, student_path):
    saved = tmp_path / "result.json"
    saved.write_text(json.dumps(result()), encoding="utf-8")
    proc = run_cli("report", saved, "-o", tmp_path / "r.html", "--case-id", "NCA-7", "--auditor", "J. Okafor",
                   "--organisation", "Model Audit Office")
    assert proc.returncode == 0, proc.stderr
    text = text_of((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert "Case ID NCA-7 Auditor J. Okafor Organisation Model Audit Office" in text
    proc = run_cli(student_path, "-r", reference_path, "--report", tmp_path / "rank.md", "--case-id", "NCA-8",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    markdown = (tmp_path / "rank.md").read_text(encoding="utf-8")
    assert markdown.startswith(f"# Teacher attribution report: {student_path.name}\n")
    assert "| Case ID | NCA-8 |" in markdown and "Auditor" not in markdown
    proc = run_cli("report", saved, "-o", tmp_path / "bad.html", "--case-id", " ")
    assert proc.returncode == 2 and "--case-id must be one line" in proc.stderr and "[E608]" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "bad.html").exists()


def test_audit_config_case_table(tmp_path):
    from attribution.audit import load_config

    student = DEMO / "student_human.jsonl"
    text = (f"[student]\nname = 'vendor-mini'\nfile = '{student}'\n\n[[teachers]]\nfile = '{DEMO / 'teachers.jsonl'}'"
            "\n\n[case]\nid = 'NCA-9'\nauditor = 'J. Okafor'\n")
    config_path = tmp_path / "audit.toml"
    config_path.write_text(text, encoding="utf-8")
    assert load_config(config_path).case == CaseDetails(suspect="vendor-mini", case_id="NCA-9", auditor="J. Okafor")
    config_path.write_text(text + "court = 'x'\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"audit.toml:11: .*unknown key 'court' in \[case\]"):
        load_config(config_path)
    config_path.write_text(text.replace("'J. Okafor'", "''"), encoding="utf-8")
    with pytest.raises(InputError, match=r"audit.toml:10: .*\[case\] auditor must be one line .*\[E608\]"):
        load_config(config_path)


@needs_chromium
def test_every_printed_page_carries_the_header_and_its_number(tmp_path):
    if shutil.which("pdftotext") is None or shutil.which("pdfinfo") is None:
        pytest.skip("pdftotext and pdfinfo (Debian: poppler-utils) are not installed: the pages are not read")
    path = write_report(inconclusive(), tmp_path / "r.pdf", date=DATE, case=CASE)
    info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
    pages = int(re.search(r"Pages:\s+(\d+)", info).group(1))
    assert pages >= 2
    for page in range(1, pages + 1):
        text = " ".join(subprocess.run(["pdftotext", "-f", str(page), "-l", str(page), str(path), "-"],
                                       capture_output=True, text=True, check=True).stdout.split())
        assert f"Page {page} of {pages}" in text, (page, text[-200:])
        assert "Teacher attribution report: student.jsonl · Case ID NCA-2026-0117" in text, (page, text[:200])


def test_scores_against_a_control_are_not_called_similarities():
    """With --control the verdict's scores are the student's log-probability gains over the control, not the
    paired test's similarities: the report names them as such."""
    verdict = {**attributed()["verdict"], "test": "control", "p_control": 0.002}
    def section(res: dict) -> str:  # the verdict's evidence (the glossary explains the paired score anyway)
        return render_markdown(res, {}, date=DATE).split("Evidence behind the verdict")[1].split("## Ranking")[0]

    md = section(result(verdict=verdict))
    assert "Scores against the control." in md and "mean gain over the control" in md
    assert "similarity" not in md and "mean paired score" not in md
    md = section(attributed())
    assert "Paired scores." in md and "mean paired score" in md and "against the control" not in md
