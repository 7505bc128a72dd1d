"""Property-based tests (hypothesis) over what reads untrusted input: the record reader, the model
loader, the report renderers, API answers and audit configs. The property is the same everywhere:
bad input is a coded error (``InputError`` / ``ModelError`` / ``AnswerRefused``) or a clean result,
never another exception, and what is written for a reader (Markdown, HTML) stays inert. About 20
seconds in all.
"""

from __future__ import annotations

import functools
import io
import json
import re
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attribution.errors import InputError, ModelError
from attribution.io import KNOWN_FIELDS, RecordReader

from conftest import DATA

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SCRATCH = Path(tempfile.mkdtemp(prefix="fuzz-"))

#: Text with the characters that matter: controls, escapes, Markdown and HTML syntax, quotes, separators.
HOSTILE = st.text(st.one_of(st.characters(max_codepoint=0x2100),
                            st.sampled_from(list("\x1b\x9b\u202e\x00\r\n\t$[]()!<>&|`*_\\\",'#~"))), max_size=40)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | HOSTILE,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE, inner, max_size=3), max_leaves=8)
RECORDS = st.dictionaries(st.sampled_from([*KNOWN_FIELDS, "extra"]), JSON_VALUES, max_size=6)
JSONL_LINES = st.one_of(
    RECORDS.map(lambda r: json.dumps(r).encode()),
    RECORDS.map(lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
    st.sampled_from([b'{"output": "x \\ud800"}', b'{"output": "x", "id": ' + b"9" * 5000 + b"}",
                     b'{"output": ' + b"[" * 5000 + b"]" * 5000 + b"}", b"\xef\xbb\xbf{}", b"[]", b"null"]),
)


def _read_all(path: Path, **options):
    """Records of a file, or the InputError: anything else escapes and fails the test."""
    reader = RecordReader(path, **options)
    try:
        return list(reader), reader
    except InputError as err:
        assert err.code and err.source == str(path)
        return err, reader


@FUZZ
@given(st.lists(JSONL_LINES, max_size=8))
def test_jsonl_reader_fails_only_with_coded_record_errors(lines):
    path = SCRATCH / "fuzz.jsonl"
    path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines) + b"\n")
    strict, _ = _read_all(path)
    if isinstance(strict, InputError):
        assert strict.line is not None and 1 <= strict.line <= max(len(lines), 1)
    lenient, reader = _read_all(path, skip_invalid=True)
    assert isinstance(lenient, list)  # --skip-invalid can skip every bad record
    for record in lenient:
        assert isinstance(record.output, str) and record.output.strip()
        record.output.encode("utf-8")  # valid Unicode: the tagger can take it
    assert all(err.code and err.line for err in reader.skipped)


CSV_CELLS = st.text(st.sampled_from(list('ab ,"\n\r\x00\u00e9')), max_size=12)


@FUZZ
@given(st.lists(st.lists(CSV_CELLS, min_size=1, max_size=4), max_size=6), st.booleans())
def test_csv_reader_fails_only_with_coded_record_errors(rows, header_first):
    path = SCRATCH / "fuzz.csv"
    body = "\n".join(",".join(row) for row in rows)
    path.write_text(("id,output\n" if header_first else "") + body, encoding="utf-8")
    _read_all(path)
    lenient, _ = _read_all(path, skip_invalid=True)
    assert isinstance(lenient, list)


# -- the model loader -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _model_bytes() -> bytes:
    from attribution.api import fit_reference
    from attribution.io import read_records

    path = SCRATCH / "good.npz"
    fit_reference(read_records(DATA / "reference.jsonl", require_teacher=True), features="pos-paper").save(path)
    return path.read_bytes()


def _load(data: bytes):
    from attribution.models import load_model

    path = SCRATCH / "fuzz.npz"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # E207 (version) is a warning, not a failure
        try:
            return load_model(path)
        except ModelError as err:
            assert err.code in {"E206", "E214", "E304"}
            return err


@FUZZ
@given(st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=6))
def test_loader_survives_corrupted_bytes(flips):
    data = bytearray(_model_bytes())
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    _load(bytes(data))


@FUZZ
@given(st.floats(0, 1))
def test_loader_survives_truncation(keep):
    _load(_model_bytes()[: int(keep * len(_model_bytes()))])


def _paths(value, prefix=()):
    """Every (path, value) inside a JSON document."""
    yield prefix, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


def _set(doc, path, value):
    if not path:
        return value
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


@FUZZ
@given(st.data())
def test_loader_refuses_any_edited_header_field(data):
    with zipfile.ZipFile(io.BytesIO(_model_bytes())) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    header = json.loads(np.load(io.BytesIO(members["__header__.npy"])).tobytes())
    paths = [p for p, _ in _paths(header)]
    path = data.draw(st.sampled_from(paths))
    header = _set(header, path, data.draw(JSON_VALUES))
    buffer = io.BytesIO()
    np.save(buffer, np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8))
    members["__header__.npy"] = buffer.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, blob in members.items():
            archive.writestr(name, blob)
    result = _load(out.getvalue())
    if not isinstance(result, ModelError):  # accepted: then it must be a usable model
        assert all(len(m.classes_) >= 2 for m in result.models_.values())


# -- the report renderers -------------------------------------------------------------------------
LABEL = HOSTILE.filter(bool)
RESULTS = st.fixed_dictionaries(
    {"n_outputs": st.integers(0, 10**6),
     "ranking": st.lists(st.fixed_dictionaries({"teacher": LABEL, "probability": st.floats(0, 1),
                                                "support": st.none() | st.floats(0, 1)}), min_size=1, max_size=4),
     "verdict": st.fixed_dictionaries({"status": st.sampled_from(["attributed", "inconclusive", "unavailable"]),
                                       "teacher": st.none() | LABEL, "best_candidate": LABEL,
                                       "p_unlisted": st.none() | st.floats(0, 1), "alpha": st.just(0.05)})},
    optional={"skipped": st.integers(0, 99) | HOSTILE, "signature": HOSTILE,
              "tasks": st.dictionaries(LABEL, st.fixed_dictionaries(
                  {"n_outputs": st.integers(0, 9), "ranking": st.lists(st.fixed_dictionaries(
                      {"teacher": LABEL, "probability": st.floats(0, 1)}), min_size=1, max_size=2)}), max_size=2),
              "evidence": st.lists(st.fixed_dictionaries(
                  {"teacher": LABEL, "block": HOSTILE, "feature": HOSTILE, "weight": st.floats(-9, 9),
                   "n_outputs": st.integers(0, 9), "examples": st.lists(HOSTILE, max_size=2),
                   "task": st.none() | LABEL}), max_size=3),
              "inputs": st.dictionaries(LABEL, st.fixed_dictionaries(
                  {"name": HOSTILE, "sha256": st.sampled_from(["0" * 64, "<script>"])}), max_size=2)})
#: The tags our HTML report writes; a label must never add one.
HTML_TAGS = {"!DOCTYPE", "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "strong",
             "table", "thead", "tbody", "tr", "th", "td", "img", "code", "dl", "dt", "dd", "br"}
#: What a GitHub-flavoured renderer links by itself in plain text (extended autolinks): never outside a code span.
AUTOLINK = re.compile(r"://|www\.|@|mailto:|xmpp:", re.IGNORECASE)


def _tokens(tokens):
    for token in tokens:
        yield token
        yield from _tokens(token.children or [])


@FUZZ
@given(RESULTS)
def test_renderers_are_inert_or_refuse(result):
    from attribution.report import check_result, render_html, render_markdown

    try:
        check_result(result)
    except InputError as err:
        assert err.code == "E604"
        return
    from markdown_it import MarkdownIt

    md = render_markdown(result, {"ranking": "r_ranking.png"})
    for token in _tokens(MarkdownIt("commonmark").enable(["table", "strikethrough"]).parse(md)):
        assert token.type not in ("link_open", "html_block", "s_open", "em_open"), token
        if token.type == "image":
            assert token.attrGet("src") == "r_ranking.png"  # only our plot
        elif token.type == "html_inline":
            assert token.content in ("<code>", "</code>")  # no HTML but ours
        elif token.type == "text":
            assert not AUTOLINK.search(token.content), token.content  # URLs, www., e-mails only in code spans
    html = render_html(result, {"ranking": b"png"})
    assert set(re.findall(r"</?([!A-Za-z][A-Za-z0-9]*)", html)) <= HTML_TAGS
    for text in (md, html):
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", text.replace("\r", ""))


@settings(max_examples=12, deadline=None, derandomize=True, database=None)
@given(st.lists(LABEL, min_size=2, max_size=3, unique=True))
def test_plots_render_any_label(labels):
    from attribution.report import render_plots

    result = {"n_outputs": 1, "ranking": [{"teacher": t, "probability": 1 / len(labels)} for t in labels],
              "outputs": [{"task": labels[0], "probabilities": {t: 1 / len(labels) for t in labels}}]}
    plots = render_plots(result)
    assert all(png.startswith(b"\x89PNG") for png in plots.values())


# -- answers from an API endpoint (collect/generate --endpoint) ------------------------------------------------------
#: Answer bodies shaped like a chat or completion, with any value in any field, and raw bytes.
ANSWER_FIELDS = st.fixed_dictionaries({}, optional={
    "model": JSON_VALUES, "usage": JSON_VALUES | st.fixed_dictionaries(
        {}, optional={"prompt_tokens": JSON_VALUES, "completion_tokens": JSON_VALUES}),
    "choices": JSON_VALUES | st.lists(st.fixed_dictionaries({}, optional={
        "text": JSON_VALUES, "finish_reason": JSON_VALUES,
        "message": JSON_VALUES | st.fixed_dictionaries({}, optional={"content": JSON_VALUES})}), max_size=2)})
ANSWERS = st.one_of(
    ANSWER_FIELDS.map(lambda a: json.dumps(a).encode()),
    ANSWER_FIELDS.map(lambda a: json.dumps(a, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.binary(max_size=60),
    st.sampled_from([b'{"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": NaN}}',
                     b'{"choices": ' + b"[" * 5000 + b"]" * 5000 + b"}", b"<html>502</html>", b"null", b"[]"]),
)


@FUZZ
@given(ANSWERS, st.booleans())
def test_an_answer_is_read_or_refused_with_e420(body, completion):
    from attribution.distill.endpoint import AnswerRefused, parse_answer

    try:
        text, finish, n_in, n_out, served = parse_answer(body, completion=completion, model="asked")
    except AnswerRefused as err:
        assert err.code == "E420"
        str(err).encode("utf-8")  # the reason is printable and storable
        return
    for value in (text, finish, served):
        assert isinstance(value, str)
        value.encode("utf-8")  # valid Unicode: the row can be written
    assert served and all(isinstance(n, int) and 0 <= n <= 10**9 for n in (n_in, n_out))


# -- audit configs ---------------------------------------------------------------------------------------------------
TOML_VALUES = st.one_of(st.integers(-10, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                        HOSTILE, st.lists(HOSTILE, max_size=6), st.lists(st.integers(), max_size=2))
TOML_KEYS = st.sampled_from(["max_tokens", "sample", "temperature", "top_p", "seed", "stop", "system",
                             "prompt_template", "completion", "api_key_env", "concurrency", "rpm", "tpm",
                             "max_retries", "timeout", "limit", "prompts", "endpoint", "model", "file", "name"])


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value != value or abs(value) == float("inf"):
            return "nan" if value != value else "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


CONFIG_LINES = st.one_of(
    st.sampled_from(["[audit]", "[defaults]", "[student]", "[[teachers]]", "[attribution]", "[bogus]"]),
    st.tuples(TOML_KEYS, TOML_VALUES).map(lambda kv: f"{kv[0]} = {_toml(kv[1])}"),
    HOSTILE, st.just("stop = " + "[" * 400 + "]" * 400))


@FUZZ
@given(st.lists(CONFIG_LINES, max_size=8), st.binary(max_size=4))
def test_an_audit_config_is_read_or_refused_with_file_and_code(lines, tail):
    from attribution.audit import load_config

    path = SCRATCH / "audit.toml"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + b"\n" + tail)
    try:
        load_config(path)
    except InputError as err:
        assert err.code in {"E109", "E416"} and err.source == str(path)
        str(err).encode("utf-8")


# -- what the CLI writes and prints (issue 20) -------------------------------------------------------
CELLS = st.one_of(HOSTILE, st.floats(allow_nan=False, allow_infinity=False, width=32), st.integers(-10**6, 10**6),
                  st.sampled_from(["=1+2", "+cmd", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "-3", "-1e5", "\uff1d1"]))


@FUZZ
@given(st.lists(st.tuples(HOSTILE, CELLS, CELLS), min_size=1, max_size=5), HOSTILE)
def test_csv_cells_never_start_a_formula(rows, header):
    """Every CSV the CLI writes comes from frame_to_csv: rows stay rows, no text cell starts a formula, the
    values come back (with a leading ' where one was added), numbers stay numbers."""
    import csv

    import pandas as pd

    from attribution.result import frame_to_csv
    from attribution.sanitize import FORMULA_STARTS

    frame = pd.DataFrame(rows, columns=["label", header or "x", "other"]).astype(object)
    parsed = list(csv.reader(io.StringIO(frame_to_csv(frame), newline="")))
    assert len(parsed) == len(rows) + 1
    for got, value in zip((cell for row in parsed for cell in row),
                          [*frame.columns, *(v for row in frame.itertuples(index=False) for v in row)]):
        if isinstance(value, str):
            number = re.fullmatch(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?", value)
            assert got == ("'" + value if value.startswith(FORMULA_STARTS) and not number else value)
        else:
            assert float(got) == pytest.approx(round(float(value), 6), abs=1e-6)


@FUZZ
@given(st.lists(LABEL, min_size=2, max_size=3, unique=True), LABEL)
def test_labels_print_on_their_own_line(labels, student):
    """rank's tables: one line per teacher, per student; no control character reaches the terminal."""
    from attribution.cli.rank import ranking_table, students_table

    ranking = [{"teacher": t, "probability": 0.5, "support": 0.5, "ci_low": 0.1, "ci_high": 0.9} for t in labels]
    verdict = {"status": "attributed", "teacher": labels[0], "best_candidate": labels[0], "test": "unlisted",
               "p_value": 0.01, "p_unlisted": 0.01, "alpha": 0.05}
    result = {"n_outputs": 3, "ranking": ranking, "verdict": verdict, "tasks": {labels[1]: {
        "n_outputs": 3, "ranking": ranking}}, "evidence": [{"block": labels[1], "feature": labels[0],
                                                              "n_outputs": 1, "examples": [student]}]}
    table = ranking_table(result)
    assert len(table.splitlines()) == len(labels) + 6  # header, teachers, note, verdict, task, evidence x2
    grouped = students_table({"group_by": "student", "students": [{"student": student, **result}]})
    assert len(grouped.splitlines()) == 3
    for text in (table, grouped):
        assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]", text)
