"""Tagging with the real spaCy model (and NLTK's perceptron): real tags, one load, each text tagged once."""

from __future__ import annotations

import importlib.util

import pytest

from attribution.errors import AttributionError
from attribution.tagging import SpacyTagger, TaggedDoc, get_tagger

needs_nltk = pytest.mark.skipif(
    importlib.util.find_spec("nltk") is None or importlib.util.find_spec("textblob_aptagger") is None,
    reason="NLTK backend needs nltk and textblob-aptagger")


def test_spacy_gives_penn_treebank_tags(tagger):
    doc = tagger.tag(["The cat sat on the mat."])[0]
    assert doc == TaggedDoc(("The", "cat", "sat", "on", "the", "mat", "."),
                            ("DT", "NN", "VBD", "IN", "DT", "NN", "."))
    assert len(doc) == 7


def test_contractions_and_punctuation(tagger):
    doc = tagger.tag(["Great question! Honestly, it's all about scattering."])[0]
    assert doc.words == ("Great", "question", "!", "Honestly", ",", "it", "'s", "all", "about", "scattering", ".")
    assert doc.tags[:7] == ("JJ", "NN", ".", "RB", ",", "PRP", "VBZ")


def test_whitespace_tokens_are_dropped_and_empty_text_is_empty(tagger):
    spaced, empty = tagger.tag(["Hello  \n\n world", ""])
    assert spaced.words == ("Hello", "world") and "_SP" not in spaced.tags
    assert empty == TaggedDoc((), ())


def test_get_tagger_loads_once(tagger):
    assert get_tagger("spacy") is tagger
    # spelling out the default batch size must not load a second copy of the model
    assert get_tagger("spacy", batch_size=256) is tagger
    assert tagger.signature.startswith("spacy:en_core_web_sm")
    assert tagger.signature.count("==") == 1


def test_each_distinct_text_is_tagged_once(tagger):
    a, b = "Cache probe one: the zebra jumped.", "Cache probe two: a walrus swam."
    before = tagger.n_tagged
    first = tagger.tag([a, b, a, a])
    assert tagger.n_tagged - before == 2
    assert first[0] == first[2] == first[3] and first[0] != first[1]
    again = tagger.tag([b, a])
    assert tagger.n_tagged - before == 2  # both cached now
    assert again == [first[1], first[0]]


def test_uncached_tagging_counts_every_text_and_matches(tagger, monkeypatch):
    """Without any cache (memory: cache=False; disk: ATTRIBUTION_NO_CACHE), every text is tagged."""
    monkeypatch.setenv("ATTRIBUTION_NO_CACHE", "1")
    texts = ["No cache here: the otter slept.", "No cache here: the otter slept."]
    before = tagger.n_tagged
    docs = tagger.tag(texts, cache=False)
    assert tagger.n_tagged - before == 2
    assert docs[0] == docs[1] == tagger.tag(texts[:1])[0]


def test_without_memory_cache_the_disk_cache_still_tags_each_text_once(tagger):
    texts = ["Disk only: the heron waited.", "Disk only: the heron waited.", "Disk only: a crab ran."]
    before = tagger.n_tagged
    docs = tagger.tag(texts, cache=False)
    assert tagger.n_tagged - before == 2  # two distinct texts
    assert tagger.tag(texts, cache=False) == docs and tagger.n_tagged - before == 2  # read back from disk
    assert docs[0] == docs[1] != docs[2]


def test_iter_tag_streams_in_order(tagger, reference_records, monkeypatch):
    monkeypatch.setenv("ATTRIBUTION_NO_CACHE", "1")  # every text tagged by this fresh tagger, none read back
    texts = [r.output for r in reference_records[:9]]
    fresh = SpacyTagger(batch_size=4)  # a small batch makes the stream span three batches
    streamed = list(fresh.iter_tag(iter(texts)))
    assert streamed == tagger.tag(texts)
    assert fresh.n_tagged == 9


def test_tiny_cache_evicts_but_stays_correct(tagger, reference_records):
    texts = [r.output for r in reference_records[:6]]
    small = SpacyTagger(batch_size=2, cache_size=2)
    assert small.tag(texts) == tagger.tag(texts)
    assert len(small._cache._items) == 2


def test_bare_string_is_rejected(tagger):
    with pytest.raises(TypeError, match="single string"):
        tagger.tag("The cat sat.")


def test_unknown_tagger_name():
    with pytest.raises(AttributionError) as info:
        get_tagger("no_such_spacy_model_xyz")
    assert info.value.code == "E302"


def test_missing_spacy_package_path():
    with pytest.raises(AttributionError) as info:
        SpacyTagger("no_such_spacy_model_xyz")
    assert info.value.code == "E304"


@needs_nltk
def test_nltk_backend_shares_spacy_tokens(tagger, reference_records):
    nltk = get_tagger("nltk")
    assert nltk.signature.startswith("nltk:")
    assert nltk.tag(["The cat sat on the mat."])[0].tags == ("DT", "NN", "VBD", "IN", "DT", "NN", ".")
    texts = [r.output for r in reference_records]
    ours, theirs = tagger.tag(texts), nltk.tag(texts)
    assert [d.words for d in ours] == [d.words for d in theirs]
    pairs = [(a, b) for d1, d2 in zip(ours, theirs) for a, b in zip(d1.tags, d2.tags)]
    agreement = sum(a == b for a, b in pairs) / len(pairs)
    assert 0.8 < agreement < 1.0  # same tag set, a different model


def test_docs_keep_the_text_and_token_offsets(tagger):
    text = "Hello  \n\n world, it's  me." + " x" * 3 + " " + ")" * 250  # a long run is tagged in pieces
    doc = tagger.tag([text], cache=False)[0]
    assert doc.text == text and len(doc.offsets) == len(doc.words)
    assert all(text[at:at + len(w)] == w for w, at in zip(doc.words, doc.offsets))
    assert list(doc.offsets) == sorted(doc.offsets)
    assert doc.offsets.itemsize == 4  # compact: 4 bytes a token
    assert doc == TaggedDoc(doc.words, doc.tags)  # equality: tokens and tags, as before


def test_prepare_docs_normalizes_before_tagging(tagger):
    from attribution.tagging import prepare_docs

    cleaned, raw = prepare_docs(["#### The answer is B. </s>"]), tagger.tag(["#### The answer is B. </s>"])
    assert cleaned[0].text == "The answer is B." and "</s" not in "".join(cleaned[0].words)
    assert len(raw[0]) > len(cleaned[0])
    assert prepare_docs(["#### B"], normalize=False)[0].text == "#### B"
