"""Issue 14, item 5: importing or calling the library leaves the process as it was, apart from the
caches it keeps on purpose, which are bounded and dropped by ``attribution.clear_caches()``."""

from __future__ import annotations

import gc
import os
import stat

import pytest

from attribution import runtime, tagging
from attribution.io import atomic_write


def test_loading_a_tagger_freezes_no_objects():
    """gc.freeze() ran on every tagger load: measured, it no longer saves any full collection."""
    before = gc.get_freeze_count()
    tagging.get_tagger("spacy")  # spaCy imported: the fresh load below takes about a second
    tagging._load_tagger.__wrapped__("spacy", 64, 1)  # past the cache
    assert gc.get_freeze_count() == before


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_atomic_write_gives_the_umask_mode_without_touching_the_umask(tmp_path, monkeypatch, umask):
    previous = os.umask(umask)
    try:
        def refuse(mask):
            raise AssertionError("atomic_write changed the umask")

        with monkeypatch.context() as patch:
            patch.setattr(os, "umask", refuse)
            with atomic_write(tmp_path / "out.txt") as handle:
                handle.write("x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary file left


def test_torch_threads_are_restored():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    with runtime.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before

    @runtime.with_torch_threads
    def work(*, threads: int = 0) -> int:
        return torch.get_num_threads()

    assert work(threads=1) == 1 and work() == before and torch.get_num_threads() == before
    with pytest.raises(ZeroDivisionError), runtime.torch_threads(1):
        1 / 0  # noqa: B018 - an error inside the block restores the count too
    assert torch.get_num_threads() == before


def test_baseline_command_restores_the_environment(capsys, reference_path, labelled_path):
    """``baseline --quiet`` sets TQDM_DISABLE for its own run only (called without run_cli, which would
    restore the environment itself)."""
    from attribution.cli import main

    before = os.environ.get("TQDM_DISABLE")
    assert main(["baseline", "cosine", "-r", str(reference_path), "-s", str(labelled_path), "-q"]) == 0
    capsys.readouterr()
    assert os.environ.get("TQDM_DISABLE") == before


def test_clear_caches_calls_every_registered_clear(monkeypatch):
    import attribution

    calls: list[int] = []
    monkeypatch.setattr(runtime, "_CLEARERS", [lambda: calls.append(1), lambda: calls.append(2)])
    attribution.clear_caches()
    assert calls == [1, 2]


def test_every_process_wide_cache_is_registered(monkeypatch):
    """Checked by registration, not by clearing: clearing would drop the session's tagger and models,
    which other tests expect to stay loaded (``get_tagger`` returns the same object all session)."""
    pytest.importorskip("torch")
    from collections import OrderedDict

    from attribution.baselines import bertscore, perplexity

    assert tagging._load_tagger.cache_clear in runtime._CLEARERS
    assert bertscore._SCORERS.clear in runtime._CLEARERS
    assert perplexity._clear_scorers in runtime._CLEARERS
    monkeypatch.setattr(perplexity, "_SCORERS", OrderedDict(fake=object()))  # the loaded models stay
    perplexity._clear_scorers()
    assert not perplexity._SCORERS


def test_bertscore_keeps_only_the_texts_of_its_last_run():
    pytest.importorskip("torch")
    from attribution.baselines.bertscore import BertScoreScorer

    scorer = BertScoreScorer.__new__(BertScoreScorer)  # no model needed to test the cache rule
    scorer._cache = {text: (None, None) for text in ("a", "b", "c")}
    scorer.retain(["b", "c", "d"])
    assert list(scorer._cache) == ["b", "c"]
