"""The persistent tag cache (``attribution.tagcache``): a second fit tags nothing and saves the same bytes,
damaged entries are tagged again, a fit killed with SIGKILL leaves the cache readable, the size stays under
its cap, concurrent processes share it, and ``--no-cache`` and the environment variables do what they say.

Each test points the cache at a folder of its own (the session's, set by ``tests/conftest.py``, is shared)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from attribution import tagcache
from attribution.api import fit_reference
from attribution.io import read_records
from attribution.normalize import normalize_texts
from attribution.tagging import SpacyTagger, _TagCache, get_tagger

from conftest import REPO, run_cli

DEMO = REPO / "data" / "demo"


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A fresh cache folder for this test, and this process's memory of tags emptied (restored after), so
    that what is not on disk is tagged again."""
    path = tmp_path / "cache"
    monkeypatch.setenv(tagcache.ENV_DIR, str(path))
    monkeypatch.setattr(get_tagger(), "_cache", _TagCache())
    yield path
    tagcache.close_all()


@pytest.fixture
def count_tagged(monkeypatch) -> list[str]:
    """Every text the spaCy pipeline is given, in order (a spy on the tagger's batch method)."""
    seen: list[str] = []
    original = SpacyTagger._tag_batch

    def spy(self, texts):
        seen.extend(texts)
        return original(self, texts)

    monkeypatch.setattr(SpacyTagger, "_tag_batch", spy)
    return seen


def _entries(path: Path, kind: str = "tags") -> int:
    with sqlite3.connect(path / tagcache.DB_NAME) as conn:
        return conn.execute("SELECT COUNT(*) FROM entries WHERE kind = ?", (kind,)).fetchone()[0]


def _distinct_texts(path: Path) -> int:
    """Distinct texts the tagger sees when fitting on ``path`` (normalized, as the estimator tags them)."""
    return len(set(normalize_texts([r.output for r in read_records(path, require_teacher=True)])))


def test_second_fit_tags_nothing_and_saves_the_same_bytes(cache_dir, count_tagged, tmp_path, monkeypatch):
    """... and fits no regression again (attribution.fitcache); with the cache off, everything is done again."""
    from sklearn.linear_model import LogisticRegression

    fits: list[int] = []
    original = LogisticRegression.fit
    monkeypatch.setattr(LogisticRegression, "fit", lambda self, X, y, *a, **k: fits.append(1) or original(
        self, X, y, *a, **k))
    references = read_records(DEMO / "teachers.jsonl", require_teacher=True)
    distinct, tagger = _distinct_texts(DEMO / "teachers.jsonl"), get_tagger()
    saved = []
    for run in ("first", "second", "no-cache"):
        if run == "no-cache":
            monkeypatch.setenv(tagcache.ENV_OFF, "1")
        monkeypatch.setattr(tagger, "_cache", _TagCache())  # forget the tags this process holds
        calls, before, fitted = len(count_tagged), tagger.n_tagged, len(fits)
        model = fit_reference(references, features="pos-paper")
        saved.append(tmp_path / f"{run}.npz")
        model.save(saved[-1])
        if run == "second":
            assert len(count_tagged) == calls and tagger.n_tagged == before  # read back from disk
            assert len(fits) == fitted  # so were the regressions
        else:
            assert tagger.n_tagged - before == distinct  # each distinct text once
            assert len(fits) > fitted
        if run == "first":
            assert _entries(cache_dir) == distinct and _entries(cache_dir, "fit") == len(fits) - fitted
    assert saved[0].read_bytes() == saved[1].read_bytes() == saved[2].read_bytes()


def test_damaged_entries_are_tagged_again_and_replaced(cache_dir, count_tagged):
    texts = ["Damaged one: the owl hooted.", "Damaged two: a mole dug deep.", "Damaged three: bees hummed.",
             "Intact: the fox slept."]
    tagger = get_tagger()
    first = tagger.tag(texts, cache=False)
    with sqlite3.connect(cache_dir / tagcache.DB_NAME) as conn:
        keys = [k for (k,) in conn.execute("SELECT key FROM entries WHERE kind = 'tags' ORDER BY key")]
        values = dict(conn.execute("SELECT key, value FROM entries"))
        conn.execute("UPDATE entries SET value = ? WHERE key = ?", (b"not a value at all", keys[0]))
        flipped = bytearray(values[keys[1]])
        flipped[20] ^= 0xFF  # one byte changed: the checksum no longer matches
        conn.execute("UPDATE entries SET value = ? WHERE key = ?", (bytes(flipped), keys[1]))
        conn.execute("UPDATE entries SET value = ? WHERE key = ?", (values[keys[2]][:-30], keys[2]))  # cut short
    before = len(count_tagged)
    assert tagger.tag(texts, cache=False) == first
    assert len(count_tagged) - before == 3  # the three damaged entries, not the intact one
    assert tagger.tag(texts, cache=False) == first and len(count_tagged) - before == 3  # replaced on disk


def test_a_value_is_checked_against_its_text():
    doc = get_tagger().tag(["Checked: the cat sat."], cache=False)[0]
    blob = tagcache.encode(doc.words, doc.tags, doc.offsets, len(doc.text))
    share = {}.setdefault
    words, tags, offsets = tagcache.decode(blob, doc.text, share)
    assert (words, tags, list(offsets)) == (doc.words, doc.tags, list(doc.offsets))
    assert tagcache.decode(blob, doc.text + " more", share) is None  # another text (length differs)
    assert tagcache.decode(blob[:10], doc.text, share) is None


def test_killed_fit_leaves_the_cache_readable(cache_dir, count_tagged, tmp_path):
    """SIGKILL while ``fit`` tags and commits batches; the cache then opens, passes SQLite's integrity check,
    and a fit reads back what was committed and tags only the rest."""
    env = {**os.environ, tagcache.ENV_DIR: str(cache_dir)}
    proc = subprocess.Popen([sys.executable, "-m", "attribution", "fit", DEMO / "teachers.jsonl", "-o",
                             tmp_path / "killed.npz", "--features", "pos-paper", "-q"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            if (cache_dir / tagcache.DB_NAME).is_file():
                try:
                    if _entries(cache_dir) > 0:
                        break
                except sqlite3.Error:
                    pass  # being created
            time.sleep(0.05)
        assert proc.poll() is None, "the fit ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not (tmp_path / "killed.npz").exists()
    with sqlite3.connect(cache_dir / tagcache.DB_NAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored, distinct, tagger = _entries(cache_dir), _distinct_texts(DEMO / "teachers.jsonl"), get_tagger()
    assert 0 < stored < distinct
    before = tagger.n_tagged
    result = run_cli("fit", DEMO / "teachers.jsonl", "-o", tmp_path / "after.npz", "--features", "pos-paper", "-q")
    assert result.returncode == 0, result.stderr
    assert tagger.n_tagged - before == distinct - stored  # what the killed fit committed was read back
    assert _entries(cache_dir) == distinct


def test_least_recently_used_entries_go_first_and_the_cap_holds(tmp_path, monkeypatch):
    clock = [1_000_000]
    monkeypatch.setattr(tagcache.time, "time", lambda: clock[0])
    store = tagcache.TagStore(tmp_path / "t.sqlite3", max_bytes=256 << 10)
    value = os.urandom(8 << 10)  # incompressible, 8 KB a value
    for i in range(20):
        store.put_many([(f"k{i:03d}".encode(), value)])
        clock[0] += 1
    clock[0] += tagcache.TOUCH_SECONDS + 1
    assert set(store.get_many([b"k000"])) == {b"k000"}  # used again: now the most recent
    i = 20
    while store.stats()["entries"] == i:  # until the first eviction
        store.put_many([(f"k{i:03d}".encode(), value)])
        clock[0] += 1
        i += 1
    stats = store.stats()
    assert stats["bytes"] <= tagcache.LOW_WATER * store.max_bytes + len(value) and i > 20
    kept = set(store.get_many([f"k{j:03d}".encode() for j in range(i)]))
    assert b"k000" in kept and b"k001" not in kept and f"k{i - 1:03d}".encode() in kept
    assert (tmp_path / "t.sqlite3").stat().st_size <= 2 * store.max_bytes  # freed pages are given back
    store.close()


def test_two_processes_write_and_read_at_once(tmp_path):
    """Another process writes 300 entries in 100 transactions while this one does the same: no error, and
    both see all 600 (SQLite's write-ahead log and busy timeout)."""
    code = ("import sys\nfrom attribution.tagcache import TagStore\n"
            "s = TagStore(sys.argv[1], 1 << 30)\n"
            "for i in range(100):\n"
            "    s.put_many([(b'other%d-%d' % (i, j), b'v' * 2000) for j in range(3)])\n"
            "    s.get_many([b'mine%d-0' % i])\n")
    path = tmp_path / "shared.sqlite3"
    store = tagcache.TagStore(path, 1 << 30)
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    for i in range(100):
        store.put_many([(b"mine%d-%d" % (i, j), b"w" * 2000) for j in range(3)])
        store.get_many([b"other%d-0" % i])
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert store.stats()["entries"] == 600
    store.close()


def test_no_cache_option_writes_nothing(cache_dir, tmp_path):
    result = run_cli("tag", REPO / "tests" / "data" / "student.jsonl", "-o", tmp_path / "tags.jsonl", "--no-cache",
                     "-q")
    assert result.returncode == 0, result.stderr
    assert not cache_dir.exists()
    assert tagcache.ENV_OFF not in os.environ  # only for the command
    get_tagger()._cache = _TagCache()
    result = run_cli("tag", REPO / "tests" / "data" / "student.jsonl", "-o", tmp_path / "tags2.jsonl", "-q")
    assert result.returncode == 0 and _entries(cache_dir) > 0
    assert (tmp_path / "tags.jsonl").read_bytes() == (tmp_path / "tags2.jsonl").read_bytes()


def test_a_bad_size_cap_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv(tagcache.ENV_MAX_MB, "lots")
    result = run_cli("fit", REPO / "tests" / "data" / "reference.jsonl", "-o", tmp_path / "m.npz", "-q")
    assert result.returncode == 2 and "ATTRIBUTION_CACHE_MAX_MB" in result.stderr and "[E306]" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize("damage", ["not a database", "another format"])
def test_an_unusable_cache_warns_once_and_tags_anyway(tmp_path, monkeypatch, count_tagged, damage):
    folder = tmp_path / "cache"
    folder.mkdir()
    if damage == "not a database":
        (folder / tagcache.DB_NAME).write_bytes(b"this is not an SQLite database" * 100)
    else:  # a cache file written by a later version
        with sqlite3.connect(folder / tagcache.DB_NAME) as conn:
            conn.execute("PRAGMA user_version = 99")
            conn.execute("CREATE TABLE entries (key BLOB, something_else TEXT)")
    monkeypatch.setenv(tagcache.ENV_DIR, str(folder))
    tagcache.close_all()
    tagger = get_tagger()
    texts = ["Unusable cache: the seal barked."]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        docs = tagger.tag(texts, cache=False)
        assert tagger.tag(texts, cache=False) == docs
    cache_warnings = [w for w in caught if issubclass(w.category, tagcache.TagCacheWarning)]
    assert len(cache_warnings) == 1 and "[E307]" in str(cache_warnings[0].message)
    assert "tagging without it" in str(cache_warnings[0].message) and str(folder) in str(cache_warnings[0].message)
    assert len(count_tagged) == 2  # tagged each time, nothing stored
    tagcache.close_all()


def test_default_location_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert tagcache.default_dir() == tmp_path / "teacher-attribution"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # not absolute: ignored, as the specification says
    assert tagcache.default_dir() == Path.home() / ".cache" / "teacher-attribution"
    monkeypatch.delenv(tagcache.ENV_DIR)
    assert tagcache.settings() == (Path.home() / ".cache" / "teacher-attribution", tagcache.DEFAULT_MAX_MB << 20)
    monkeypatch.setenv(tagcache.ENV_OFF, "1")
    assert tagcache.settings() is None


def test_another_tagger_reads_none_of_the_entries(cache_dir, count_tagged, monkeypatch):
    texts = ["Identity: the lark sang."]
    tagger = get_tagger()
    tagger.tag(texts, cache=False)
    monkeypatch.setattr(SpacyTagger, "cache_identity", property(lambda self: "another model==9.9"))
    tagger.tag(texts, cache=False)
    assert len(count_tagged) == 2 and _entries(cache_dir) == 2


@pytest.mark.parametrize("n_classes", [2, 5])
def test_a_regression_read_back_is_the_fitted_one(n_classes):
    """What fitcache restores is every attribute fit sets, equal in value and dtype; a damaged value or one of
    another shape is refused (refitted)."""
    import numpy as np
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    from attribution import fitcache

    X = sp.random(60, 15, density=0.3, format="csr", random_state=1)
    y = np.array([f"t{i % n_classes}" for i in range(60)])
    fitted = LogisticRegression(solver="newton-cg", class_weight="balanced").fit(X, y)
    blob = fitcache.encode(fitted)
    restored = LogisticRegression(solver="newton-cg", class_weight="balanced")
    assert fitcache.restore(restored, blob, X, y)
    mine, theirs = vars(restored), vars(fitted)
    assert mine.keys() == theirs.keys()
    for name, value in theirs.items():
        assert np.array_equal(mine[name], value) and getattr(mine[name], "dtype", None) == getattr(value, "dtype", None)
        if isinstance(value, np.ndarray):  # the memory order, which np.save writes into the model file
            assert (mine[name].flags.c_contiguous, mine[name].flags.f_contiguous) == (
                value.flags.c_contiguous, value.flags.f_contiguous)
    assert (restored.predict_proba(X) == fitted.predict_proba(X)).all()
    fresh = LogisticRegression()
    assert not fitcache.restore(fresh, blob[:-1] + bytes([blob[-1] ^ 1]), X, y)  # checksum
    assert not fitcache.restore(fresh, blob, X[:, :10], y)  # another number of features
    assert not hasattr(fresh, "coef_")
    assert fitcache.fit_key(fitted, X, y) != fitcache.fit_key(fitted, X, y[::-1])  # the labels' order counts
