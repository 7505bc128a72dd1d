"""The regulator's report (issue 12, section 3): methodology, limitations, counts, settings, side-by-side
template frequencies, whole example outputs, one word for "no verdict", PDF export; and the
prompt/task mismatch check (section 4).

Rendering rules use hand-written results of the documented shape; the CLI tests rank the small
fixture corpus (tests/data: 3 teachers, 2 tasks) in-process; the browser and PDF tests run a real
headless Chromium and skip with a reason without one.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from test_report import CHROMIUM, _chromium, needs_chromium  # noqa: E402  (the same headless Chromium)

from attribution.checks import PROMPT_MIN_SIMILARITY, PromptChecks, PromptProfile  # noqa: E402
from attribution.errors import InputError, exit_status  # noqa: E402
from attribution.io import Record  # noqa: E402
from attribution.report import render_html, render_markdown, write_report  # noqa: E402
from attribution.report.error_rates import budget_runs, error_rate_table, load_artifact, markdown_table  # noqa: E402
from attribution.verdicts import VerdictRule, rule_table  # noqa: E402

from conftest import run_cli, write_jsonl  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATE = "2026-01-02 (UTC)"
SETTINGS = {"C": 0.5, "class_weight": "balanced", "features": "combined", "n_bootstrap": 50, "normalize": True,
            "random_state": 7, "verdict_test": "either", "top_templates": 10, "task": None}


def result(**extra) -> dict:
    """A result as `rank` writes it: paired-only verdict, reference shares, a run entry."""
    base = {
        "n_outputs": 120, "n_empty": 2, "skipped": 3,
        "ranking": [{"teacher": "alpha", "probability": 0.5, "support": 1.0, "ci_low": 0.45, "ci_high": 0.55},
                    {"teacher": "beta", "probability": 0.3, "support": 0.0, "ci_low": 0.25, "ci_high": 0.35},
                    {"teacher": "gamma", "probability": 0.2, "support": 0.0, "ci_low": 0.15, "ci_high": 0.25}],
        "verdict": {"status": "attributed", "teacher": "alpha", "best_candidate": "alpha", "test": "paired or unlisted",
                    "p_value": 0.004, "p_paired": 0.002, "p_unlisted": 0.7, "n_paired": 118, "runner_up": "beta",
                    "alpha": 0.05},
        "evidence": [{"teacher": "alpha", "block": "words", "feature": "in summary", "weight": 3.5, "n_outputs": 60,
                      "share_of_outputs": 0.5, "task": None, "examples": ["in summary"],
                      "reference_share": {"alpha": 0.41, "beta": 0.07, "gamma": 0.02}}],
        "checks": {"n_repeated": 1, "n_short": 4, "n_not_english": 0},
        "warnings": ["unbalanced references: alpha has 300 outputs, gamma 90"],
        "signature": ("teacher-attribution==0.1.0|tagger=spacy:en_core_web_sm==3.8.0|features=combined|C=0.5"
                      "|normalize=True"),
        "inputs": {"outputs": {"name": "student.jsonl", "sha256": "a" * 64}},
        "run": {"references": {"source": "reference file", "tasks": {"None": {"alpha": 300, "beta": 150, "gamma": 90}}},
                "settings": SETTINGS, "skipped_records": ["student.jsonl:4 [E103]", "student.jsonl:9 [E101]",
                                                          "refs.jsonl:2 [E103]"],
                "n_skipped_outputs": 2, "n_skipped_references": 1,
                "prompts": {"tasks_not_in_references": [], "prompt_similarity": 0.97}},
    }
    base.update(extra)
    return base


def text_of(html_text: str) -> str:
    """The page's text, tags removed and whitespace collapsed (for phrase checks)."""
    return " ".join(re.sub(r"<[^>]+>", " ", html_text).replace("&#x27;", "'").split())


# -- the sections ------------------------------------------------------------------------------------------------
def test_methodology_is_written_from_the_results_settings():
    text = text_of(render_html(result(), {}, date=DATE))
    assert "Methodology" in text
    assert "3 candidate teachers (alpha, beta, gamma)" in text
    assert "part-of-speech tag n-grams of lengths 1-4" in text and "word n-grams of lengths 1-3" in text
    assert "logistic-regression classifier (C = 0.5, balanced class weights)" in text
    assert "50 Poisson bootstrap resamples of the outputs (seed 7)" in text
    assert "The paired test ran on 118 outputs" in text and "unlisted-teacher test asks" in text
    assert "Rule --verdict-test either: the top-ranked candidate is named when the paired test or the " \
           "unlisted-teacher test passes, each at alpha/2" in text
    assert VerdictRule("either").description in text  # the rule's own sentence, nowhere else written
    assert "alpha = 0.05" in text
    strict = result(verdict={**result()["verdict"], "test": "paired and unlisted", "alpha": 0.01},
                    run={**result()["run"], "settings": {**SETTINGS, "verdict_test": "both"}})
    text = text_of(render_html(strict, {}, date=DATE))
    assert "Rule --verdict-test both: the top-ranked candidate is named when both tests pass" in text
    assert "alpha = 0.01" in text


def test_limitations_show_the_measured_error_rates_and_what_they_mean_here():
    text = text_of(render_html(result(), {}, date=DATE))
    assert "Limitations: the verdict's measured error rates" in text
    rows = error_rate_table()
    for row in rows:
        assert row.case in text and row.command in text and f"commit {row.commit[:10]}" in text
    assert {r.command.split()[1] for r in rows} == {"benchmarks/bench_alpacaeval.py", "benchmarks/bench_unlisted.py"}
    # a paired-only attribution gets the left-out-teacher caveat, with the measured 7 of 9
    assert "7 of 9 AlpacaEval students were attributed to its closest candidate" in text
    assert "At 100 outputs (this result has 120), simulated audits of 100 outputs of documented students" in text
    assert "0 of 9 (0%; 95% CI" not in text and "| 0 (0-34%)" not in text
    assert "0 (0-34%)" in text  # no wrong teacher among 9 students still allows a third
    passed = result(verdict={**result()["verdict"], "p_unlisted": 0.001})
    assert "closest candidate" not in text_of(render_html(passed, {}, date=DATE))


def test_the_glossary_says_what_p_value_is_under_the_runs_rule():
    """p_value is the paired test's only under 'paired': under the default rule it is twice the smaller p-value
    (Bonferroni) when both tests ran, under 'both' the larger one."""
    def glossary_of(rule: str, test: str) -> str:
        doc = result(verdict={**result()["verdict"], "test": test},
                     run={**result()["run"], "settings": {**SETTINGS, "verdict_test": rule}})
        text = text_of(render_html(doc, {}, date=DATE))
        return text[text.index("How to read the numbers"):]

    assert "under this run's rule (either), twice the smaller of p_paired and p_unlisted (Bonferroni)" in (
        glossary_of("either", "paired or unlisted"))
    assert "under this run's rule (both), the larger of p_paired and p_unlisted" in glossary_of(
        "both", "paired and unlisted")
    assert "under this run's rule (paired), p_paired;" in glossary_of("paired", "paired")


def test_the_rules_in_the_docs_are_the_rules_in_the_code():
    """docs/verdict.md shows the rule table VerdictRule writes (regenerate it from attribution.verdicts.rule_table)."""
    assert rule_table() in (REPO / "docs" / "verdict.md").read_text(encoding="utf-8")


def test_error_rates_match_the_docs():
    """The report's figures and docs/verdict.md say the same (change both with the benchmark run)."""
    for row in error_rate_table():
        assert row.doc_row in (REPO / row.doc).read_text(encoding="utf-8"), row.case
    budget_doc = (REPO / "docs" / "budget.md").read_text(encoding="utf-8")
    for run in budget_runs(load_artifact()):  # the measured curves, as the artifact holds them
        assert markdown_table(run) in budget_doc, run.key
        assert run.commit[:10] in budget_doc and run.command in budget_doc


def test_counts_settings_interval_and_date():
    html_text = render_html(result(), {}, date=DATE)
    text = text_of(html_text)
    assert re.search(r"alpha 300 beta 150 gamma 90", text)  # reference outputs per teacher
    assert "Counted from the reference file" in text
    assert "used as evidence 120" in text and "empty after normalization (not used) 2" in text
    assert "invalid, skipped 2" in text and "repeating an earlier output 1" in text
    assert "Skipped records (the first 3 of 3)" not in text  # all named: no "first N of M"
    assert "student.jsonl:4 [E103]" in text and "refs.jsonl:2 [E103]" in text
    assert "0.450-0.550" in text  # the probability's interval
    assert f"report date {DATE}" in text and "teacher-attribution version 0.1.0" in text
    assert "random_state (seed of the bootstrap) 7" in text and "verdict_test either" in text
    assert "Warning: unbalanced references" in text


def test_older_results_say_what_is_missing():
    old = result()
    for key in ("run", "checks", "warnings"):
        del old[key]
    del old["evidence"][0]["reference_share"]
    text = text_of(render_html(old, {}, date=DATE))
    assert "Reference outputs per teacher Not in this result" in text
    assert "not in this model file" in text
    assert "settings and seeds not in this result" in text


def test_side_by_side_template_frequencies():
    html_text = render_html(result(), {}, date=DATE)
    header = re.search(r"<th>#</th><th>template</th>.*?</tr>", html_text).group(0)
    assert [h for h in re.findall(r"<th>([^<]*)</th>", header)] == [
        "#", "template", "weight", "student", "alpha refs", "beta refs", "gamma refs"]
    row = re.search(r"<tr><td class=\"num\">1</td><td><code>words: in summary</code>.*?</tr>", html_text).group(0)
    assert re.findall(r"<td[^>]*>([^<]*)</td>", row)[1:] == ["3.500", "50% (60)", "41%", "7%", "2%"]
    md = render_markdown(result(), {}, date=DATE)
    assert "| 1 | <code>words: in summary</code> | 3.500 | 50% \\(60\\) | 41% | 7% | 2% |" in md
    # a model file without the references' side (older, or the share is null)
    for shares in (None, "absent"):
        older = copy.deepcopy(result())
        if shares == "absent":
            del older["evidence"][0]["reference_share"]
        else:
            older["evidence"][0]["reference_share"] = None
        text = text_of(render_html(older, {}, date=DATE))
        assert "alpha refs" not in text and "not in this model file" in text


def test_whole_example_outputs_on_request(tmp_path):
    kept = result()
    kept["evidence"][0]["example_outputs"] = [{"id": "q7", "output": "First line.\nIn summary, <b>x</b>."}]
    assert "Appendix" not in render_html(kept, {}, date=DATE)  # only on request
    html_text = render_html(kept, {}, date=DATE, examples=1)
    assert "Appendix: whole outputs using the templates" in html_text
    assert "(output q7)" in html_text and "First line.\nIn summary, &lt;b&gt;x&lt;/b&gt;." in html_text
    assert "rank with" in render_html(result(), {}, date=DATE, examples=2)  # asked for, not kept


def test_settings_table_wraps_long_values_in_a_fixed_layout():
    html_text = render_html(result(), {}, date=DATE)
    assert '<table class="settings">' in html_text
    css = re.search(r"<style>(.*?)</style>", html_text, re.S).group(1)
    assert "table.settings{table-layout:fixed;width:100%}" in css
    assert "overflow-wrap:anywhere" in css and "@page{size:A4" in css


def test_same_result_and_date_give_the_same_bytes(tmp_path):
    first = write_report(result(), tmp_path / "a.html", date=DATE).read_bytes()
    assert write_report(copy.deepcopy(result()), tmp_path / "b.html", date=DATE).read_bytes() == first
    os.environ["SOURCE_DATE_EPOCH"] = "0"
    try:
        assert "Report of 1970-01-01 (UTC)" in write_report(result(), tmp_path / "c.html").read_text(encoding="utf-8")
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]


# -- the browser and the PDF -------------------------------------------------------------------------------------
@needs_chromium
def test_chromium_renders_no_table_wider_than_the_page(tmp_path):
    """At a narrow window, long settings, hashes and a long signature wrap: the page does not scroll sideways."""
    long = result(signature="teacher-attribution==0.1.0|" + "|".join(f"key{i}=" + "v" * 60 for i in range(8)))
    long["run"]["settings"] = {**SETTINGS, "text_field": "x" * 300}
    path = write_report(long, tmp_path / "r.html", date=DATE)
    probe = ('<script>window.addEventListener("load",function(){var p=document.createElement("pre");'
             'p.id="width-check";var w=0;document.querySelectorAll("table").forEach(function(t){'
             'w=Math.max(w,t.getBoundingClientRect().right)});p.textContent=[document.documentElement.scrollWidth,'
             'document.documentElement.clientWidth,Math.ceil(w)].join(",");document.body.appendChild(p);});'
             '</script>')
    probed = tmp_path / "probe.html"
    probed.write_text(path.read_text(encoding="utf-8").replace("</body>", probe + "</body>"), encoding="utf-8")
    dom = _chromium("--window-size=700,900", "--virtual-time-budget=5000", "--dump-dom", probed.as_uri(),
                    tmp_path=tmp_path).stdout
    found = re.search(r'<pre id="width-check">(\d+),(\d+),(\d+)</pre>', dom)
    assert found, "Chromium did not run the probe"
    scroll, client, widest = map(int, found.groups())
    assert scroll <= client and widest <= client, (scroll, client, widest)
    shot = tmp_path / "shot.png"
    _chromium("--window-size=700,3000", f"--screenshot={shot}", path.as_uri(), tmp_path=tmp_path)
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (700, 3000) and len(image.convert("RGB").getcolors(1 << 20) or ()) > 20


@needs_chromium
def test_pdf_report_is_printed_by_chromium(tmp_path):
    path = write_report(result(), tmp_path / "r.pdf", date=DATE)
    data = path.read_bytes()
    assert data.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", data)) >= 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.pdf"]  # no temporary file left
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (Debian: poppler-utils) is not installed: the PDF's text is not checked")
    text = " ".join(subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True,
                                   check=True).stdout.split())
    for phrase in ("Teacher attribution report", "Verdict: attributed.", "Methodology",
                   "Limitations: the verdict's measured error rates", "Reference outputs per teacher",
                   "alpha refs", DATE):
        assert phrase in text, phrase


#: report.pdf's flags before issue 20: Chromium reached clients2.google.com, update.googleapis.com and
#: accounts.google.com, and resolved www.google.com, while printing.
FLAGS_BEFORE_ISSUE_20 = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--no-pdf-header-footer", "--hide-scrollbars")
#: Events of Chromium's network log that reach outside the process: a DNS query, a TCP connection, a datagram sent.
NETWORK_EVENTS = ("HOST_RESOLVER_SYSTEM_TASK", "HOST_RESOLVER_DNS_TASK", "HOST_RESOLVER_MANAGER_JOB", "DNS_TRANSACTION",
                  "TCP_CONNECT_ATTEMPT", "UDP_BYTES_SENT", "SSL_HANDSHAKE")


def _print_logged(tmp_path: Path, name: str, html_text: str) -> tuple[list[str], list[str]]:
    """Print ``html_text`` to PDF through report.pdf, with Chromium writing its network log (a wrapper adds only
    --log-net-log): (URLs Chromium requested, events that reached the network)."""
    from attribution.report.pdf import html_to_pdf

    log, wrapper = tmp_path / f"{name}.netlog.json", tmp_path / f"{name}-chromium"
    wrapper.write_text(f'#!/bin/sh\nexec "{CHROMIUM}" "$@" "--log-net-log={log}"\n', encoding="utf-8")
    wrapper.chmod(0o755)
    html_to_pdf(html_text, tmp_path / f"{name}.pdf", chromium=wrapper)
    data = json.loads(log.read_text(encoding="utf-8"))
    names = {number: event for event, number in data["constants"]["logEventTypes"].items()}
    requested, reached = [], []
    for event in data["events"]:
        kind, params = names.get(event["type"], ""), event.get("params") or {}
        if kind == "URL_REQUEST_START_JOB" and "url" in params:
            requested.append(params["url"])
        if kind.startswith(NETWORK_EVENTS):
            reached.append(f"{kind} {params}")
    return requested, reached


@needs_chromium
def test_pdf_printing_makes_no_network_traffic(tmp_path, monkeypatch):
    """Chromium's own network log, for a page that asks for a loopback and a public image: every request ends
    inside Chromium (no DNS query, no connection), and the listener on loopback is never reached. The same check
    on the flags used before catches the page's connection (the public names stay blocked there too)."""
    import socket
    import threading

    from attribution.report import pdf

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port, accepted = listener.getsockname()[1], []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn.recv(200))
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    page = (f'<html><body><p>report</p><img src="http://127.0.0.1:{port}/probe.png">'
            '<img src="https://www.example.com/beacon.png"></body></html>')
    try:
        requested, reached = _print_logged(tmp_path, "now", page)
        assert any(f"127.0.0.1:{port}/probe.png" in url for url in requested)  # the log sees what was asked
        assert reached == [] and accepted == []
        monkeypatch.setattr(pdf, "_FLAGS", (*FLAGS_BEFORE_ISSUE_20,
                                            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"))
        _, reached_before = _print_logged(tmp_path, "before", page)
    finally:
        listener.close()
    assert any(f"127.0.0.1:{port}" in event for event in reached_before if event.startswith("TCP_CONNECT_ATTEMPT"))
    assert any(b"/probe.png" in request for request in accepted)


def test_pdf_without_chromium_is_a_coded_error(tmp_path):
    saved = tmp_path / "result.json"
    saved.write_text(json.dumps(result()), encoding="utf-8")
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    env.pop("ATTRIBUTION_CHROMIUM", None)
    proc = subprocess.run([sys.executable, "-m", "attribution", "report", str(saved), "-o", str(tmp_path / "r.pdf")],
                          capture_output=True, text=True, cwd=REPO, env=env)
    # exit 1: the environment lacks a program (attribution.errors.ENVIRONMENT_CODES), as for a missing package
    assert proc.returncode == exit_status("E606") == 1
    assert "[E606]" in proc.stderr and "apt-get install chromium" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r.pdf").exists()
    proc = run_cli("report", saved, "-o", tmp_path / "r.pdf", "--chromium", tmp_path / "no-such-browser")
    assert proc.returncode == 1 and "no-such-browser: a PDF report needs headless Chromium" in proc.stderr


def test_a_failing_chromium_leaves_no_file(tmp_path):
    fake = tmp_path / "fake-chromium"
    fake.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 1\n", encoding="utf-8")
    fake.chmod(0o755)
    with pytest.raises(InputError, match=r"cannot open display \[E607\]"):
        write_report(result(), tmp_path / "r.pdf", chromium=fake)
    assert not (tmp_path / "r.pdf").exists()


# -- the CLI end to end -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ranked(tmp_path_factory, reference_path, student_path):
    """rank -r (fixture corpus: 3 teachers) with -o JSON, a report and --examples; and fit a model."""
    root = tmp_path_factory.mktemp("ranked")
    proc = run_cli(student_path, "-r", reference_path, "-o", root / "r.json", "--report", root / "r.html",
                   "--examples", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    fit = run_cli("fit", reference_path, "-o", root / "m.npz", "--quiet")
    assert fit.returncode == 0, fit.stderr
    return root, proc


def test_rank_records_counts_settings_and_examples(ranked, reference_path):
    root, proc = ranked
    saved = json.loads((root / "r.json").read_text(encoding="utf-8"))
    run = saved["run"]
    assert run["references"] == {"source": "reference file",
                                 "tasks": {t: {"chatty": 12, "formal": 12, "terse": 12}
                                           for t in ("commonsense", "science")}}
    assert run["settings"]["random_state"] == 0 and run["settings"]["examples"] == 1
    assert run["skipped_records"] == [] and run["prompts"]["tasks_not_in_references"] == []
    kept = [row for row in saved["evidence"] if row.get("example_outputs")]
    assert kept, "no whole example outputs kept"
    for row in kept:
        output = row["example_outputs"][0]["output"]
        assert any(" ".join(span.split()).lower().replace(" ", "") in output.lower().replace(" ", "")
                   for span in row["examples"])
    text = text_of((root / "r.html").read_text(encoding="utf-8"))
    assert "Appendix: whole outputs using the templates" in text and "chatty 12 12" in text


def test_skipped_records_are_named(tmp_path, ranked, student_path):
    root, _ = ranked
    lines = student_path.read_text(encoding="utf-8").splitlines()
    broken = tmp_path / "student.jsonl"
    broken.write_text("\n".join([lines[0], "{not json", *lines[1:], '{"id": "x", "output": 3}']) + "\n",
                      encoding="utf-8")
    proc = run_cli(broken, "--model", root / "m.npz", "--skip-invalid", "--format", "json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)["run"]
    assert run["n_skipped_outputs"] == 2 and run["skipped_records"][0] == "student.jsonl:2 [E101]"
    assert re.fullmatch(r"student\.jsonl:12 \[E1\d\d\]", run["skipped_records"][1])
    assert "references" not in run  # a 3-teacher model file keeps no per-teacher counts


def test_no_verdict_is_one_word_everywhere(ranked, student_path):
    """'unavailable' in the JSON, the table, the CSV and the report (3 candidates: no test can run)."""
    root, _ = ranked
    saved = json.loads((root / "r.json").read_text(encoding="utf-8"))
    assert saved["verdict"]["status"] == "unavailable"
    table = run_cli(student_path, "--model", root / "m.npz", "--quiet").stdout
    assert "verdict: unavailable:" in table and "verdict: none" not in table
    csv = run_cli(student_path, "--model", root / "m.npz", "--format", "csv", "--quiet").stdout
    header, row = (line.split(",") for line in csv.splitlines()[:2])
    assert row[header.index("status")] == "unavailable" and row[header.index("teacher")] == ""
    assert "Verdict: unavailable." in text_of((root / "r.html").read_text(encoding="utf-8"))


# -- prompt / task mismatch (issue 12, section 4) ---------------------------------------------------------------
def _records(rows):
    return [Record(id=str(i), output=r.get("output", "x"), task=r.get("task"), prompt=r.get("prompt"))
            for i, r in enumerate(rows)]


def test_prompt_checks_warn_on_other_tasks_and_unlike_prompts_only():
    refs = PromptProfile.of(_records([{"task": "qa", "prompt": f"Question: why is item {i} blue? Answer choices: "
                                                                 "A B C D"} for i in range(30)]))
    same = PromptChecks(["qa"], refs)
    for record in _records([{"task": "qa", "prompt": f"Question: why does thing {i} float? Answer choices: A B C"}
                            for i in range(25)]):
        same.add(record)
    assert same.warnings() == [] and same.counts()["prompt_similarity"] > PROMPT_MIN_SIMILARITY
    other = PromptChecks(["qa"], refs)
    for record in _records([{"task": "poems", "prompt": f"Write a short poem about the sea, number {i}."}
                            for i in range(25)]):
        other.add(record)
    warnings = other.warnings()
    assert len(warnings) == 2
    assert "task(s) 'poems', which the references do not name (they name 'qa')" in warnings[0]
    assert "differ in style" in warnings[1] and other.counts()["prompt_similarity"] < PROMPT_MIN_SIMILARITY
    few = PromptChecks(["qa"], refs)
    for record in _records([{"task": "qa", "prompt": "Write a poem."}] * 5):
        few.add(record)
    assert few.counts()["prompt_similarity"] is None and few.warnings() == []  # too few prompts to compare


def test_rank_warns_about_another_task_and_prompt_style(tmp_path, reference_path):
    refs = [json.loads(line) for line in reference_path.read_text(encoding="utf-8").splitlines()]
    untasked = write_jsonl(tmp_path / "refs.jsonl", [{k: v for k, v in r.items() if k != "task"} for r in refs])
    student = write_jsonl(tmp_path / "student.jsonl",
                          [{"id": f"s{i}", "task": "poems", "prompt": f"Write a short poem about the sea, number {i}.",
                            "output": r["output"]} for i, r in enumerate(refs[:30])])
    proc = run_cli(student, "-r", untasked, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert "warning: the student's outputs are of task(s) 'poems', which the references do not name (they name " \
           "no task)" in proc.stderr
    assert "warning: the student's prompts differ in style from the references'" in proc.stderr
    saved = json.loads(proc.stdout)
    assert any("differ in style" in w for w in saved["warnings"])
    assert saved["run"]["prompts"]["tasks_not_in_references"] == ["poems"]
    assert saved["run"]["prompts"]["prompt_similarity"] < PROMPT_MIN_SIMILARITY
    same = write_jsonl(tmp_path / "same.jsonl", [{k: v for k, v in r.items() if k != "teacher"} for r in refs[:30]])
    proc = run_cli(same, "-r", reference_path, "--format", "json", "--quiet")
    saved = json.loads(proc.stdout)
    assert saved["run"]["prompts"] == {"tasks_not_in_references": [], "prompt_similarity": 1.0}
    assert not any("prompts" in w or "task(s)" in w for w in saved.get("warnings", []))


def test_report_on_one_student_of_a_grouped_result(tmp_path):
    """`report` renders one student of a `rank --group-by` document (with the run's shared keys)."""
    one = result()
    shared = {key: one.pop(key) for key in ("signature", "inputs", "run", "skipped")}
    grouped = {"group_by": "student", "students": [{**one, "student": "alpaca-7b"},
                                                   {**copy.deepcopy(one), "student": "vicuna", "n_outputs": 77}],
               **shared}
    saved = tmp_path / "grouped.json"
    saved.write_text(json.dumps(grouped), encoding="utf-8")
    proc = run_cli("report", saved, "-o", tmp_path / "r.html")
    assert proc.returncode == 2 and "[E604]" in proc.stderr and "pick one with --student NAME (alpaca-7b, vicuna)" \
        in proc.stderr and not (tmp_path / "r.html").exists()
    proc = run_cli("report", saved, "-o", tmp_path / "r.html", "--student", "vicuna")
    assert proc.returncode == 0, proc.stderr
    text = text_of((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert "77 student outputs ranked" in text and "alpha 300 beta 150 gamma 90" in text  # the entry + shared run
    assert "random_state (seed of the bootstrap) 7" in text
    assert "invalid, skipped (in the whole file of 2 student groups) 2" in text


@needs_chromium
def test_rank_report_pdf(ranked, student_path, reference_path, tmp_path):
    root, _ = ranked
    proc = run_cli(student_path, "--model", root / "m.npz", "--report", tmp_path / "r.pdf", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")
    proc = run_cli(student_path, "-r", reference_path, "--report", tmp_path / "s.pdf", "--chromium",
                   tmp_path / "missing")
    assert proc.returncode == 1 and "[E606]" in proc.stderr and "fitting" not in proc.stderr  # before any work
    assert not (tmp_path / "s.pdf").exists()
