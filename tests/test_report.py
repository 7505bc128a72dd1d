"""The auditor's report: HTML and Markdown from a real ranking, checked by decoding its plots,
and in headless Chromium when it is installed.

The ranking comes from the real tagger on the authors' released OpenBookQA outputs; tests that
need it skip when ../shared is absent. Rendering rules (escaping, validation) use a small
hand-written result dict of the documented shape.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402  (Pillow comes with matplotlib)

from attribution.errors import InputError  # noqa: E402
from attribution.report import write_report  # noqa: E402

from conftest import PAPER_QA, CliResult, needs_shared, run_cli, shared_data  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
needs_paper_qa = needs_shared(PAPER_QA)
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                    "(apt-get install -y chromium)")
DATA_URI = re.compile(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


def small_result() -> dict:
    """A ranking result of the documented shape, with hostile text in the evidence."""
    return {
        "n_outputs": 3,
        "ranking": [{"teacher": "alpha", "probability": 0.6, "support": 0.9},
                    {"teacher": "beta", "probability": 0.3, "support": 0.1},
                    {"teacher": "gamma", "probability": 0.1, "support": None}],
        "verdict": {"status": "attributed", "teacher": "alpha", "best_candidate": "alpha",
                    "p_unlisted": 0.01, "alpha": 0.05},
        "evidence": [{"teacher": "alpha", "block": "pos", "feature": "DT NN | VBZ", "weight": 1.5,
                      "n_outputs": 2, "share_of_outputs": 0.667, "task": None,
                      "examples": ["<script>alert(1)</script>", "a | b `c`"]}],
        "outputs": [{"id": str(i), "task": None,
                     "probabilities": {"alpha": 0.5 + 0.1 * i, "beta": 0.3, "gamma": 0.2 - 0.1 * i}}
                    for i in range(3)],
        "signature": "teacher-attribution==0.1.0|tagger=spacy|features=combined|C=1.0|normalize=True",
        "inputs": {"outputs": {"name": "student.jsonl", "sha256": "0" * 64}},
        "skipped": 0,
    }


@pytest.fixture(scope="session")
def paper_files(tmp_path_factory) -> tuple[Path, Path]:
    """OpenBookQA references, and the outputs of one student (distilled from Mistral-7B)."""
    shared_data(PAPER_QA)
    root = tmp_path_factory.mktemp("paper")
    lines = [line for line in (PAPER_QA / "openbookqa_student.jsonl").read_text(encoding="utf-8").splitlines()
             if json.loads(line)["teacher"] == "mistral-7b"]
    student = root / "student.jsonl"
    student.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return PAPER_QA / "openbookqa_teacher.jsonl", student


@pytest.fixture(scope="session")
def real_result(paper_files) -> dict:
    """What ``attribute-teacher STUDENT --reference REF --report ...`` hands to write_report."""
    from attribution.api import file_digest, fit_reference, rank_student
    from attribution.io import RecordReader, read_records

    reference, student = paper_files
    model = fit_reference(read_records(reference, require_teacher=True, skip_invalid=True))
    result = rank_student(model, RecordReader(student), keep_outputs=True)
    result["signature"] = next(iter(model.models_.values())).signature_
    result["inputs"] = {"outputs": file_digest(student), "reference": file_digest(reference)}
    result["skipped"] = 0
    return result


def decoded_pngs(html_text: str) -> list[Image.Image]:
    images = []
    for data in DATA_URI.findall(html_text):
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
        images.append(image)
    return images


def assert_real_plot(image: Image.Image) -> None:
    assert image.format == "PNG"
    assert image.width > 200 and image.height > 100
    low, high = image.convert("L").getextrema()
    assert high - low > 100  # ink on paper, not a blank canvas


@needs_paper_qa
def test_html_is_self_contained_with_real_plots(real_result, tmp_path):
    path = write_report(real_result, tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "<script" not in text and "http://" not in text and "https://" not in text
    assert text.count("<img ") == 3  # the per-prompt differences behind the verdict, ranking, per-output evidence
    images = decoded_pngs(text)
    assert len(images) == 3
    for image in images:
        assert_real_plot(image)
    top = real_result["ranking"][0]["teacher"]
    assert top in text and real_result["signature"] in text
    assert real_result["inputs"]["outputs"]["sha256"] in text
    assert real_result["inputs"]["reference"]["sha256"] in text
    first = real_result["evidence"][0]
    assert first["feature"] in text and first["examples"][0] in text  # a span from the student's outputs
    assert str(tmp_path) not in text  # no absolute paths


@needs_paper_qa
def test_markdown_writes_pngs_beside_it(real_result, tmp_path):
    path = write_report(real_result, tmp_path / "audit.md")
    text = path.read_text(encoding="utf-8")
    names = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert names == ["audit_differences.png", "audit_ranking.png", "audit_outputs.png"]
    for name in names:
        with Image.open(tmp_path / name) as image:
            image.load()
            assert_real_plot(image)
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / names[1]).shape[0] > 100  # readable without Pillow too
    assert "| 1 | " + real_result["ranking"][0]["teacher"] + " |" in text


@needs_paper_qa
def test_same_result_gives_same_bytes(real_result, tmp_path):
    first = write_report(real_result, tmp_path / "a.html").read_bytes()
    second = write_report(copy.deepcopy(real_result), tmp_path / "b.html").read_bytes()
    assert first == second


def test_hostile_text_is_escaped(tmp_path):
    text = write_report(small_result(), tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    md = write_report(small_result(), tmp_path / "r.md").read_text(encoding="utf-8")
    row = next(line for line in md.splitlines() if line.startswith("| 1 |") and "alert" in line)  # examples
    assert len(re.findall(r"(?<!\\)\|", row)) == 4  # 3 cells: the pipes in the text are escaped
    assert "&lt;script&gt;" in md


def test_without_outputs_the_report_says_so(tmp_path):
    result = small_result()
    del result["outputs"]
    text = write_report(result, tmp_path / "r.html").read_text(encoding="utf-8")
    assert len(decoded_pngs(text)) == 1  # the ranking plot only
    assert "no per-output probabilities" in text
    write_report(result, tmp_path / "r.md")
    assert not (tmp_path / "r_outputs.png").exists() and (tmp_path / "r_ranking.png").is_file()


def test_bad_results_are_rejected_with_every_problem(tmp_path):
    with pytest.raises(InputError) as info:
        write_report({"ranking": [{"teacher": 3}], "outputs": {}}, tmp_path / "r.html")
    message = str(info.value)
    assert info.value.code == "E604"
    assert "'n_outputs' must be an integer" in message and "ranking[0]" in message and "'outputs'" in message
    with pytest.raises(InputError, match=r"\[E605\]"):
        write_report(small_result(), tmp_path / "r.docx")
    assert list(tmp_path.iterdir()) == []  # nothing written


def _chromium(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@needs_chromium
@needs_paper_qa
def test_chromium_decodes_the_embedded_plots(real_result, tmp_path):
    path = write_report(real_result, tmp_path / "report.html")
    # A copy with a probe that lists, after load, what the browser decoded for each <img>.
    probe = ('<script>window.addEventListener("load",function(){var r=[];'
             'document.querySelectorAll("img").forEach(function(i){r.push([i.complete,i.naturalWidth,'
             'i.naturalHeight].join(","))});var p=document.createElement("pre");p.id="img-check";'
             'p.textContent=r.join(";");document.body.appendChild(p);});</script>')
    probed = tmp_path / "probe.html"
    probed.write_text(path.read_text(encoding="utf-8").replace("</body>", probe + "</body>"), encoding="utf-8")
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", probed.as_uri(), tmp_path=tmp_path).stdout
    found = re.search(r'<pre id="img-check">([^<]*)</pre>', dom)
    assert found, "Chromium did not run the probe"
    states = [s.split(",") for s in found.group(1).split(";")]
    assert len(states) == 3  # the per-prompt differences, the ranking, the per-output evidence
    for complete, width, height in states:
        assert complete == "true" and int(width) > 200 and int(height) > 100
    shot = tmp_path / "shot.png"
    _chromium("--window-size=1000,1600", f"--screenshot={shot}", path.as_uri(), tmp_path=tmp_path)
    with Image.open(shot) as image:
        image.load()
        assert image.size == (1000, 1600)
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or ()) > 50  # text, bars and dots drawn


def _cli(*args: str) -> CliResult:
    return run_cli(*args)


def test_report_command_renders_a_saved_result(tmp_path):
    saved = tmp_path / "result.json"
    saved.write_text(json.dumps(small_result()), encoding="utf-8")
    proc = _cli("report", str(saved), "-o", str(tmp_path / "report.html"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert len(decoded_pngs((tmp_path / "report.html").read_text(encoding="utf-8"))) == 2
    broken = tmp_path / "broken.json"
    broken.write_text('{"n_outputs": 3,\n "ranking": [}', encoding="utf-8")
    proc = _cli("report", str(broken), "-o", str(tmp_path / "x.html"))
    assert proc.returncode == 2 and f"{broken}:2: invalid JSON" in proc.stderr
    saved.write_text(json.dumps({"ranking": []}), encoding="utf-8")
    proc = _cli("report", str(saved), "-o", str(tmp_path / "x.html"))
    assert proc.returncode == 2 and f"{saved}: not a rank result" in proc.stderr and "[E604]" in proc.stderr
    assert not (tmp_path / "x.html").exists()


@needs_paper_qa
def test_rank_command_writes_a_report(paper_files, tmp_path):
    reference, student = paper_files
    proc = _cli(str(student), "--reference", str(reference), "--report", str(tmp_path / "r.html"),
                "--format", "json", "--quiet", "--skip-invalid")
    assert proc.returncode == 0, proc.stderr
    ranking = json.loads(proc.stdout)["ranking"]
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert len(decoded_pngs(text)) == 3  # the per-prompt differences, the ranking, the per-output evidence
    assert f"<td>{ranking[0]['teacher']}</td>" in text
