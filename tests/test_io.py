"""Reading and validating records (JSONL, CSV), atomic writes, and the error catalogue."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from attribution.errors import (
    AttributionError,
    Errors,
    InputError,
    ModelError,
    NotFittedError,
    input_error,
    model_error,
)
from attribution.io import Record, RecordReader, atomic_write, read_records, write_jsonl

GOOD = {"id": "q1", "task": "qa", "teacher": "alpha", "output": "The answer is A because it is red."}


def codes(errors):
    return [e.code for e in errors]


# -- the error catalogue -------------------------------------------------------------------
def test_catalogue_codes_are_unique_and_well_formed():
    names = [n for n in vars(Errors) if not n.startswith("_")]
    assert names, "no codes in the catalogue"
    assert all(re.fullmatch(r"E\d{3}", n) for n in names)
    templates = [getattr(Errors, n) for n in names]
    assert all(isinstance(t, str) and t for t in templates)


def test_input_error_renders_file_line_message_code():
    err = input_error("E103", source="outputs.jsonl", line=17, field="output", got="null")
    assert str(err) == "outputs.jsonl:17: field 'output' must be a non-empty string (got null) [E103]"
    assert (err.source, err.line, err.field, err.code) == ("outputs.jsonl", 17, "output", "E103")
    assert isinstance(err, ValueError) and isinstance(err, AttributionError)


def test_input_error_without_line_or_source():
    assert str(input_error("E109", source="x.jsonl")) == "x.jsonl: file not found [E109]"
    assert str(InputError("plain")) == "plain"


def test_model_errors_are_value_errors_with_codes():
    err = model_error("E209")
    assert isinstance(err, ModelError) and isinstance(err, ValueError)
    assert str(err).endswith("[E209]")
    assert issubclass(NotFittedError, ModelError)


# -- reading JSON Lines --------------------------------------------------------------------
def test_reads_fixture_with_fields_and_line_numbers(reference_path):
    records = read_records(reference_path, require_teacher=True)
    assert len(records) == 72
    assert {r.teacher for r in records} == {"formal", "chatty", "terse"}
    assert {r.task for r in records} == {"science", "commonsense"}
    assert [r.line for r in records] == list(range(1, 73))
    assert all(r.source == str(reference_path) for r in records)
    assert all(r.prompt.startswith("Question: ") for r in records)


def test_record_key_to_dict_and_integer_id(make_jsonl):
    path = make_jsonl([{"id": 7, "output": "One."}, {"output": "Two.", "teacher": "  beta  "}])
    first, second = read_records(path)
    assert first.id == "7" and first.key == "7"
    assert second.id is None and second.key == "line:2"
    assert second.teacher == "beta"  # labels are stripped
    assert second.to_dict() == {"output": "Two.", "teacher": "beta"}


def test_text_field_fallback_and_custom_field(make_jsonl):
    path = make_jsonl([{"text": "From text."}, {"output": "From output.", "text": "ignored"},
                       {"body": "From body.", "output": "not this"}])
    with pytest.raises(InputError) as info:
        read_records(path, text_field="body")
    assert info.value.code == "E104" and info.value.line == 1
    assert [r.output for r in read_records(path, skip_invalid=True)] == ["From text.", "From output.",
                                                                         "not this"]
    only_body = make_jsonl([{"body": "From body.", "output": "not this"}], "body.jsonl")
    assert read_records(only_body, text_field="body")[0].output == "From body."


def test_blank_lines_are_skipped_but_counted(make_jsonl):
    path = make_jsonl([GOOD, "", "   ", {**GOOD, "id": "q2"}])
    assert [r.line for r in read_records(path)] == [1, 4]


def test_byte_order_mark_is_tolerated(make_jsonl):
    path = make_jsonl([b"\xef\xbb\xbf" + json.dumps(GOOD).encode()])
    assert read_records(path)[0].id == "q1"


def test_prompt_whitespace_is_kept_but_labels_are_stripped(make_jsonl):
    path = make_jsonl([{**GOOD, "prompt": "  Q?\n", "task": " qa "}])
    record = read_records(path)[0]
    assert record.prompt == "  Q?\n" and record.task == "qa"


# -- one test per bad-input class ------------------------------------------------------------
BAD_LINES = {
    "invalid JSON": (b'{"output": "unterminated', "E101"),
    "not an object": (b'["a list"]', "E102"),
    "missing text": (json.dumps({"id": "q", "teacher": "alpha"}).encode(), "E104"),
    "wrong type of text": (json.dumps({"output": 42}).encode(), "E103"),
    "null text": (json.dumps({"output": None}).encode(), "E103"),
    "wrong type of label": (json.dumps({"output": "Fine.", "teacher": ["alpha"]}).encode(), "E113"),
    "non-UTF-8 bytes": (b'{"output": "caf\xe9 au lait"}', "E105"),
    "empty text": (json.dumps({"output": "   \n"}).encode(), "E103"),
    "huge text": (json.dumps({"output": "word " * 30_000}).encode(), "E106"),
}


@pytest.mark.parametrize("bad", list(BAD_LINES), ids=lambda s: s.replace(" ", "-"))
def test_bad_line_raises_input_error_with_file_and_line(make_jsonl, bad):
    raw, code = BAD_LINES[bad]
    path = make_jsonl([GOOD, raw, {**GOOD, "id": "q3"}])
    with pytest.raises(InputError) as info:
        read_records(path)
    err = info.value
    assert err.code == code
    assert err.line == 2 and err.source == str(path)
    assert str(err).startswith(f"{path}:2: ") and str(err).endswith(f"[{code}]")


def test_messages_describe_the_problem(make_jsonl):
    def message(raw):
        with pytest.raises(InputError) as info:
            read_records(make_jsonl([raw]))
        return str(info.value)

    assert "byte 0xe9 at column 16" in message(BAD_LINES["non-UTF-8 bytes"][0])
    assert "(got int)" in message(BAD_LINES["wrong type of text"][0])
    assert "(got null)" in message(BAD_LINES["null text"][0])
    assert "(got an empty string)" in message(BAD_LINES["empty text"][0])
    assert "150000 characters (limit 100000)" in message(BAD_LINES["huge text"][0])
    assert "field 'teacher' must be a string (got list)" in message(BAD_LINES["wrong type of label"][0])


def test_max_chars_can_be_raised_or_disabled(make_jsonl):
    path = make_jsonl([{"output": "x" * 200}])
    with pytest.raises(InputError, match=r"limit 100\b"):
        read_records(path, max_chars=100)
    assert len(read_records(path, max_chars=200)[0].output) == 200
    assert len(read_records(path, max_chars=0)[0].output) == 200


def test_reference_needs_teacher(make_jsonl):
    path = make_jsonl([GOOD, {"id": "q2", "output": "No label here."}])
    with pytest.raises(InputError) as info:
        read_records(path, require_teacher=True)
    assert (info.value.code, info.value.line, info.value.field) == ("E107", 2, "teacher")
    assert len(read_records(path)) == 2  # students need no label


def test_reference_with_empty_teacher(make_jsonl):
    path = make_jsonl([{**GOOD, "teacher": ""}])
    with pytest.raises(InputError) as info:
        read_records(path, require_teacher=True)
    assert info.value.code == "E103" and "field 'teacher'" in str(info.value)


def test_missing_file_unsupported_suffix_and_empty_file(tmp_path, make_jsonl):
    with pytest.raises(InputError) as info:
        read_records(tmp_path / "nope.jsonl")
    assert info.value.code == "E109"
    txt = tmp_path / "notes.txt"
    txt.write_text("hello\n")
    with pytest.raises(InputError) as info:
        read_records(txt)
    assert info.value.code == "E111" and "'.txt'" in str(info.value)
    with pytest.raises(InputError) as info:  # an empty or blank file says so (E110 is for all-invalid)
        read_records(make_jsonl([]))
    assert info.value.code == "E119"
    with pytest.raises(InputError) as info:
        read_records(make_jsonl(["", " "], "blank.jsonl"))
    assert info.value.code == "E119"


def test_reader_streams_and_fails_at_the_bad_line(make_jsonl):
    path = make_jsonl([GOOD, {**GOOD, "id": "q2"}, b"{broken"])
    reader = RecordReader(path)
    seen = []
    with pytest.raises(InputError) as info:
        for record in reader:
            seen.append(record.id)
    assert seen == ["q1", "q2"] and info.value.line == 3
    assert reader.n_read == 2


def test_skip_invalid_keeps_good_records_and_lists_bad_lines(make_jsonl):
    path = make_jsonl([GOOD, b"{broken", {"output": ""}, {**GOOD, "id": "q4"}, b'{"output": "\xff"}',
                       {"id": "q6"}])
    reader = RecordReader(path, skip_invalid=True)
    records = list(reader)
    assert [r.id for r in records] == ["q1", "q4"]
    assert [(e.line, e.code) for e in reader.skipped] == [(2, "E101"), (3, "E103"), (5, "E105"), (6, "E104")]
    assert all(str(e).startswith(f"{path}:{e.line}: ") for e in reader.skipped)
    assert reader.n_read == 2


def test_skip_invalid_with_nothing_valid_still_fails(make_jsonl):
    path = make_jsonl([b"{broken", {"output": ""}])
    with pytest.raises(InputError) as info:
        read_records(path, skip_invalid=True)
    assert info.value.code == "E110"


# -- reading CSV -------------------------------------------------------------------------------
def test_csv_rows_become_records_with_file_lines(tmp_path):
    path = tmp_path / "refs.csv"
    path.write_text('id,teacher,output\nq1,alpha,"Plain answer."\nq2,beta,"Two\nlines, with a comma."\n'
                    "\nq3,alpha,Last one.\n", encoding="utf-8")
    records = read_records(path, require_teacher=True)
    assert [(r.id, r.teacher, r.line) for r in records] == [("q1", "alpha", 2), ("q2", "beta", 3),
                                                            ("q3", "alpha", 6)]
    assert records[1].output == "Two\nlines, with a comma."


def test_csv_bad_rows(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"id,output\nq1,fine\nq2,too,many\nq3,caf\xe9\nq4,\nq5,also fine\n")
    reader = RecordReader(path, skip_invalid=True)
    assert [r.id for r in reader] == ["q1", "q5"]
    assert [(e.line, e.code) for e in reader.skipped] == [(3, "E112"), (4, "E105"), (5, "E103")]
    with pytest.raises(InputError, match=r"bad\.csv:3: CSV row has 3 cells, header has 2 \[E112\]"):
        read_records(path)


def test_csv_and_jsonl_give_the_same_records(tmp_path, make_jsonl):
    rows = [{"id": "a", "teacher": "t1", "output": "Some text."}, {"id": "b", "teacher": "t2", "output": "More."}]
    jsonl = make_jsonl(rows)
    csv_path = tmp_path / "same.csv"
    csv_path.write_text("id,teacher,output\n" + "".join(f"{r['id']},{r['teacher']},{r['output']}\n" for r in rows))
    strip = lambda recs: [r.to_dict() for r in recs]  # noqa: E731 - source/line differ by design
    assert strip(read_records(jsonl)) == strip(read_records(csv_path))


# -- writing -----------------------------------------------------------------------------------
def test_atomic_write_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "out.json"
    with atomic_write(target) as handle:
        handle.write("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_write_binary(tmp_path):
    with atomic_write(tmp_path / "b.bin", "wb") as handle:
        handle.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_write_jsonl_round_trips_records(tmp_path, reference_records):
    path = tmp_path / "copy.jsonl"
    assert write_jsonl(path, (r.to_dict() for r in reference_records[:5])) == 5
    lines = path.read_text(encoding="utf-8").splitlines()
    assert all(list(json.loads(line)) == sorted(json.loads(line)) for line in lines)  # sorted keys
    again = read_records(path, require_teacher=True)
    assert [r.to_dict() for r in again] == [r.to_dict() for r in reference_records[:5]]


def test_write_jsonl_keeps_unicode_readable(tmp_path):
    path = tmp_path / "u.jsonl"
    write_jsonl(path, [{"output": "café – naïve"}])
    assert "café – naïve" in path.read_text(encoding="utf-8")
    assert read_records(path)[0].output == "café – naïve"


def test_record_is_frozen():
    record = Record(output="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.output = "y"  # type: ignore[misc]


def test_range_reader_refuses_csv(tmp_path):
    """A CSV file is never read in byte ranges (a quoted field may span lines): the range reader refuses it as
    not splittable (E127, at once, saying to read it whole) instead of reading a range's lines as rows (E112 'row
    has 1 cells, header has 0')."""
    from attribution.parallel.ranges import RangeReader

    path = tmp_path / "s.csv"
    path.write_text('output\n"a\nb"\nc\n', encoding="utf-8")
    assert [r.output for r in RecordReader(path)] == ["a\nb", "c"]  # whole, the file is fine
    for start in (0, 9):
        with pytest.raises(InputError) as info:
            RangeReader(path, start, path.stat().st_size)
        assert info.value.code == "E127" and str(info.value).startswith(f"{path}: ") and "'.csv'" in str(info.value)
        assert "read it whole" in str(info.value)
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text('{"output": "a"}\n{"output": "b"}\n', encoding="utf-8")
    assert [r.output for r in RangeReader(jsonl, 16, jsonl.stat().st_size)] == ["b"]
