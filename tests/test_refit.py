"""The reference files a model records, and ``fit --add`` (``attribution.refit``): adding a candidate gives the
bytes of a fit on all the files and tags only the new texts; wrong, missing or repeated files are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attribution import refit, tagcache
from attribution.errors import ModelError
from attribution.io import read_records
from attribution.normalize import normalize_texts
from attribution.persistence import load_model
from attribution.tagging import _TagCache, get_tagger

from conftest import REPO, run_cli

DEMO = REPO / "data" / "demo"
OLD = [DEMO / "teacher_smollm2-135m.jsonl", DEMO / "teacher_human.jsonl"]
NEW = DEMO / "teacher_gemma-3-270m.jsonl"
FAST = ["--features", "pos-paper"]


@pytest.fixture(scope="module")
def old_model(tmp_path_factory) -> Path:
    """A model fitted by the CLI on the two old files."""
    path = tmp_path_factory.mktemp("refit") / "old.npz"
    result = run_cli("fit", *OLD, "-o", path, *FAST, "-q")
    assert result.returncode == 0, result.stderr
    return path


def test_the_model_records_its_reference_files(old_model):
    recorded = load_model(old_model).reference_files_
    assert [f["name"] for f in recorded["files"]] == [p.name for p in OLD]
    import hashlib

    assert [f["sha256"] for f in recorded["files"]] == [hashlib.sha256(p.read_bytes()).hexdigest() for p in OLD]
    assert recorded["files"][0]["teachers"] == {"smollm2-135m": 200} and recorded["files"][0]["outputs"] == 200
    assert recorded["reading"] == refit.READING_DEFAULTS


def test_add_gives_the_bytes_of_the_union_fit_and_tags_only_the_new_texts(old_model, tmp_path, monkeypatch):
    union = tmp_path / "union.npz"
    assert run_cli("fit", *OLD, NEW, "-o", union, *FAST, "-q").returncode == 0
    tagger = get_tagger()
    monkeypatch.setattr(tagger, "_cache", _TagCache())  # only the disk cache knows the old texts now
    before = tagger.n_tagged
    added = tmp_path / "added.npz"
    # the old files in another order: matched by digest, fitted in the recorded order
    result = run_cli("fit", "--add", NEW, "--model", old_model, "-r", OLD[1], "-r", OLD[0], "-o", added,
                     "--format", "json")
    assert result.returncode == 0, result.stderr
    assert added.read_bytes() == union.read_bytes()
    assert json.loads(result.stdout)["references"] == [p.name for p in [*OLD, NEW]]
    new_texts = set(normalize_texts([r.output for r in read_records(NEW, require_teacher=True)]))
    assert tagger.n_tagged - before <= len(new_texts)  # the old references were read back from the cache
    # the API: the same model
    api = tmp_path / "api.npz"
    refit.add_references(load_model(old_model), [NEW], references=OLD).save(api)
    assert api.read_bytes() == union.read_bytes()


def test_add_then_add_again(old_model, tmp_path):
    """A model made by --add records every file, so more can be added to it later."""
    first = tmp_path / "first.npz"
    assert run_cli("fit", "--add", NEW, "-m", old_model, "-r", *OLD[:1], "-r", OLD[1], "-o", first, "-q",
                   ).returncode == 0
    recorded = load_model(first).reference_files_["files"]
    assert [f["name"] for f in recorded] == [p.name for p in [*OLD, NEW]]


@pytest.mark.parametrize("case, code", [("wrong", "E221"), ("missing", "E222"), ("again", "E223"),
                                        ("features", "E213"), ("task", "E213")])
def test_add_refuses_what_does_not_match_the_model(old_model, tmp_path, case, code):
    args = {"wrong": ["-r", OLD[0], "-r", NEW, "--add", DEMO / "student_human.jsonl"],
            "missing": ["-r", OLD[0], "--add", NEW],
            "again": ["-r", OLD[0], "-r", OLD[1], "--add", OLD[1]],
            "features": ["-r", OLD[0], "-r", OLD[1], "--add", NEW, "--features", "combined"],
            "task": ["-r", OLD[0], "-r", OLD[1], "--add", NEW, "--task", "x"]}[case]
    result = run_cli("fit", "-m", old_model, "-o", tmp_path / "out.npz", "-q", *args)
    assert result.returncode == 2 and f"[{code}]" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out.npz").exists()


def test_add_to_a_model_without_a_record_of_its_files(tmp_path, reference_records):
    from attribution.api import fit_reference

    path = tmp_path / "api.npz"
    fit_reference(reference_records, features="pos-paper").save(path)
    result = run_cli("fit", "--add", NEW, "-m", path, "-r", REPO / "tests" / "data" / "reference.jsonl", "-o",
                     tmp_path / "out.npz", "-q")
    assert result.returncode == 2 and "[E220]" in result.stderr
    with pytest.raises(ModelError, match="E220"):
        refit.union_files(load_model(path), [], [NEW])


def test_a_file_given_twice_is_refused(tmp_path):
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(OLD[0].read_bytes())
    result = run_cli("fit", OLD[0], copy, "-o", tmp_path / "out.npz", "-q")
    assert result.returncode == 2 and "[E223]" in result.stderr and "given twice" in result.stderr
    assert not (tmp_path / "out.npz").exists()
    with pytest.raises(ModelError, match="E223"):
        refit.fit_files([OLD[0], OLD[0]])


@pytest.mark.parametrize("args", [["--add", NEW], ["-m", "x.npz"], []])
def test_fit_usage_errors(tmp_path, args):
    result = run_cli("fit", *args, "-o", tmp_path / "out.npz", "-q")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_a_damaged_record_of_files_is_refused(old_model, tmp_path):
    """The record is checked like the rest of the header: a digest that is not 64 hex digits is E206."""
    import zipfile

    import numpy as np

    with zipfile.ZipFile(old_model) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header_npy = members["__header__.npy"]
    import io

    header = json.loads(np.load(io.BytesIO(header_npy)).tobytes())
    header["reference_files"]["files"][0]["sha256"] = "not-a-digest"
    buffer = io.BytesIO()
    np.save(buffer, np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))
    members["__header__.npy"] = buffer.getvalue()
    bad = tmp_path / "bad.npz"
    with zipfile.ZipFile(bad, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(ModelError, match=r"reference_files.*sha256") as info:
        load_model(bad)
    assert info.value.code == "E206"


def test_chunked_counting_gives_the_same_features(monkeypatch, reference_records):
    """Fitting counts n-grams chunk by chunk (features.CHUNK_TOKENS); tiny chunks give the same vocabulary,
    IDF and matrix as one chunk."""
    from attribution import features

    docs = get_tagger().tag([r.output for r in reference_records])
    results = []
    for chunk in (10**9, 37):
        monkeypatch.setattr(features, "CHUNK_TOKENS", chunk)
        out = []
        for _, vec in features.combined() + features.ngram_paper():
            matrix = vec.fit_transform(docs)
            out.append((vec.vocabulary_, None if vec.idf_ is None else vec.idf_.tobytes(), matrix.data.tobytes(),
                        matrix.indices.tobytes(), matrix.indptr.tobytes()))
        results.append(out)
    assert results[0] == results[1]
    assert len(list(features._chunks(docs))) > 10  # the small chunks were used


def test_the_cache_dir_of_the_session_is_not_the_users(tag_cache_dir):
    assert tagcache.settings()[0] == tag_cache_dir and Path.home() not in tag_cache_dir.parents
