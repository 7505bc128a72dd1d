"""PoS-template and word n-gram vectorizers: counting, top-k selection, weighting, persistence, sklearn API."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from attribution.errors import ModelError, NotFittedError
from attribution.features import (
    FEATURE_SETS,
    PosTemplateVectorizer,
    SequenceNgramVectorizer,
    WordNgramVectorizer,
    iter_ngrams,
    make_feature_blocks,
    ngrams,
)
from attribution.tagging import TaggedDoc


def doc(words: str, tags: str | None = None) -> TaggedDoc:
    """A hand-made tagged document (tags default to the words), for exact counting tests."""
    w = tuple(words.split())
    return TaggedDoc(w, tuple(tags.split()) if tags else w)


@pytest.fixture(scope="module")
def reference_docs(tagger, reference_records):
    return tagger.tag([r.output for r in reference_records])


# -- the n-gram core -----------------------------------------------------------------------------
def test_ngrams_in_order():
    assert ngrams(["DT", "NN", "VBZ", "JJ"], 2) == ["DT NN", "NN VBZ", "VBZ JJ"]
    assert ngrams(["DT", "NN"], 1) == ["DT", "NN"]
    assert ngrams(["DT", "NN", "VBZ"], 4) == []
    assert list(iter_ngrams(["a", "b", "c"], 1, 3)) == ["a", "b", "c", "a b", "b c", "a b c"]


def test_ngrams_never_cross_documents():
    vec = SequenceNgramVectorizer(ngram_range=(2, 2), top_k=None).fit([doc("a b"), doc("c d")])
    assert list(vec.get_feature_names_out()) == ["a b", "c d"]  # no "b c"


def test_document_shorter_than_n_gives_an_empty_row(reference_docs):
    vec = PosTemplateVectorizer().fit(reference_docs)
    row = vec.transform([doc("Yes .", "UH .")])
    assert row.shape == (1, 50) and row.nnz == 0


def _oracle(docs, source, n_min, n_max, top_k):
    """The definition, spelled out with strings and a Counter: what the integer-coded core must match."""
    from collections import Counter

    def symbols(d):
        return d.tags if source == "tags" else [w.lower() for w in d.words]

    per_doc = [Counter(iter_ngrams(symbols(d), n_min, n_max)) for d in docs]
    total = sum(per_doc, Counter())
    ranked = sorted(total, key=lambda g: (-total[g], g))
    vocab = ranked[:top_k] if top_k else ranked
    counts = np.array([[c[g] for g in vocab] for c in per_doc], dtype=float)
    return vocab, counts


@pytest.mark.parametrize("source,span,top_k", [("tags", (1, 4), 300), ("tags", (4, 4), 50),
                                               ("words", (1, 3), 2000), ("words", (2, 2), None)])
def test_integer_coded_counts_equal_the_string_definition(reference_docs, source, span, top_k):
    train, test = reference_docs[:60], reference_docs[60:]
    vec = SequenceNgramVectorizer(source=source, ngram_range=span, top_k=top_k, weighting="count")
    fitted = vec.fit_transform(train).toarray()
    vocab, train_counts = _oracle(train, source, *span, top_k)
    assert list(vec.get_feature_names_out()) == vocab
    np.testing.assert_array_equal(fitted, train_counts)
    _, test_counts = _oracle(test, source, *span, None)
    all_test = dict(zip(_oracle(test, source, *span, None)[0], test_counts.T))
    expected = np.stack([all_test.get(g, np.zeros(len(test))) for g in vocab], axis=1)
    np.testing.assert_array_equal(vec.transform(test).toarray(), expected)


def test_unseen_symbols_and_empty_inputs():
    vec = SequenceNgramVectorizer(source="words", ngram_range=(1, 2), top_k=None, weighting="count")
    vec.fit([doc("a b"), doc("b c")])
    # "zz" is unknown: neither it nor the bigrams around it may be counted (or collide with a known one)
    out = vec.transform([doc("a zz b"), doc(""), doc("b c")]).toarray()
    names = list(vec.get_feature_names_out())
    assert out[0].tolist() == [1.0 if g in ("a", "b") else 0.0 for g in names]
    assert out[1].sum() == 0 and out[2][names.index("b c")] == 1.0
    assert vec.transform([]).shape == (0, len(names))
    empty = SequenceNgramVectorizer(ngram_range=(3, 3), top_k=None).fit([doc("a b")])
    assert empty.get_feature_names_out().size == 0 and empty.transform([doc("a b c")]).shape == (1, 0)


def test_huge_symbol_tables_fall_back_to_exact_integers():
    # base ** n overflows int64 with 70k distinct words and 4-grams: codes become Python ints
    words = [f"w{i}" for i in range(70_000)]
    docs = [TaggedDoc(tuple(words[i:i + 7]), tuple(words[i:i + 7])) for i in range(0, 70_000, 7)] + [doc("w0 w1 w2 w3")]
    vec = SequenceNgramVectorizer(source="words", ngram_range=(4, 4), top_k=3, weighting="count").fit(docs)
    assert list(vec.get_feature_names_out()) == ["w0 w1 w2 w3", "w1 w2 w3 w4", "w10 w11 w12 w13"]
    assert vec.transform([doc("w0 w1 w2 w3 w4")]).toarray().tolist() == [[1.0, 1.0, 0.0]]


# -- the paper's preset ----------------------------------------------------------------------
def test_pos_template_defaults_are_the_paper_preset():
    vec = PosTemplateVectorizer()
    assert vec.get_params() == {"n": 4, "top_k": 50, "weighting": "binary", "tagger": "spacy"}
    (name, preset), = make_feature_blocks("pos-paper")
    assert name == "pos" and preset.get_params() == vec.get_params()


def test_paper_preset_on_real_tags(reference_docs):
    vec = PosTemplateVectorizer()
    X = vec.fit_transform(reference_docs)
    names = vec.get_feature_names_out()
    assert X.shape == (72, 50) and len(names) == 50
    assert all(len(name.split()) == 4 for name in names)
    assert set(np.unique(X.toarray())) <= {0.0, 1.0}
    # the kept templates are the 50 most frequent 4-grams of tags over all documents
    totals = {}
    for d in reference_docs:
        for gram in ngrams(d.tags, 4):
            totals[gram] = totals.get(gram, 0) + 1
    ranked = sorted(totals, key=lambda g: (-totals[g], g))
    assert list(names) == ranked[:50]
    # binary: a template repeated in one output still counts 1
    assert X.toarray().sum() == sum(len(set(ngrams(d.tags, 4)) & set(names)) for d in reference_docs)


def test_raw_strings_are_tagged_with_the_real_tagger(reference_records, reference_docs):
    texts = [r.output for r in reference_records]
    from_text = PosTemplateVectorizer(n=3, top_k=20).fit(texts)
    from_docs = PosTemplateVectorizer(n=3, top_k=20).fit(reference_docs)
    assert list(from_text.get_feature_names_out()) == list(from_docs.get_feature_names_out())
    assert (from_text.transform(texts) != from_docs.transform(reference_docs)).nnz == 0


def test_docstring_example():
    vec = PosTemplateVectorizer(n=2, top_k=3).fit(["The cat sat.", "A dog ran."])
    assert list(vec.get_feature_names_out()) == ["DT NN", "NN VBD", "VBD ."]


def test_templates_separate_the_teachers(reference_records, reference_docs):
    vec = PosTemplateVectorizer(n=2, top_k=30).fit(reference_docs)
    X = vec.transform(reference_docs).toarray()
    teachers = np.asarray([r.teacher for r in reference_records])
    names = list(vec.get_feature_names_out())
    # "Answer: A." opens every terse output: NN : NNP (or similar) is present in all terse rows
    terse_share = X[teachers == "terse"].mean(axis=0)
    chatty_share = X[teachers == "chatty"].mean(axis=0)
    assert np.max(np.abs(terse_share - chatty_share)) > 0.8, names


# -- top-k and tie-breaking --------------------------------------------------------------------
def test_top_k_keeps_most_frequent_then_alphabetical():
    docs = [doc("d c b a"), doc("c b a"), doc("a")]  # a:3, b:2, c:2, d:1
    vec = SequenceNgramVectorizer(source="words", ngram_range=(1, 1), top_k=2, weighting="count")
    assert list(vec.fit(docs).get_feature_names_out()) == ["a", "b"]
    vec.set_params(top_k=3)
    assert list(vec.fit(docs[::-1]).get_feature_names_out()) == ["a", "b", "c"]  # order of input is irrelevant
    vec.set_params(top_k=None)
    assert list(vec.fit(docs).get_feature_names_out()) == ["a", "b", "c", "d"]


def test_ties_break_alphabetically_whatever_the_order():
    forward = SequenceNgramVectorizer(ngram_range=(1, 1), top_k=2).fit([doc("z y x")])
    backward = SequenceNgramVectorizer(ngram_range=(1, 1), top_k=2).fit([doc("x y z")])
    assert list(forward.get_feature_names_out()) == list(backward.get_feature_names_out()) == ["x", "y"]


# -- weighting ------------------------------------------------------------------------------------
def test_count_and_binary_weighting():
    docs = [doc("a a a b"), doc("b")]
    count = SequenceNgramVectorizer(ngram_range=(1, 1), top_k=None, weighting="count").fit(docs)
    binary = SequenceNgramVectorizer(ngram_range=(1, 1), top_k=None, weighting="binary").fit(docs)
    assert count.transform(docs).toarray().tolist() == [[3.0, 1.0], [0.0, 1.0]]
    assert binary.transform(docs).toarray().tolist() == [[1.0, 1.0], [0.0, 1.0]]


def test_tfidf_rows_are_l2_normalized(reference_docs):
    vec = SequenceNgramVectorizer(ngram_range=(1, 4), top_k=500, weighting="tfidf")
    X = vec.fit_transform(reference_docs)
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms, 1.0, rtol=1e-12)
    assert vec.idf_.shape == (X.shape[1],) and np.all(vec.idf_ >= 1.0)
    empty = vec.transform([TaggedDoc((), ())])
    assert empty.nnz == 0  # an empty row stays zero, no division by zero


def test_tfidf_values_follow_the_formula():
    docs = [doc("a a b"), doc("b c")]
    vec = SequenceNgramVectorizer(ngram_range=(1, 1), top_k=None, weighting="tfidf").fit(docs)
    idf = {"a": np.log(3 / 2) + 1, "b": np.log(3 / 3) + 1, "c": np.log(3 / 2) + 1}
    raw = np.array([(1 + np.log(2)) * idf["a"], idf["b"], 0.0])  # sublinear tf
    names = list(vec.get_feature_names_out())
    got = vec.transform(docs[:1]).toarray()[0]
    np.testing.assert_allclose([got[names.index(g)] for g in "abc"], raw / np.linalg.norm(raw))


# -- word n-grams ---------------------------------------------------------------------------------
def test_word_ngrams_defaults_and_lowercasing(tagger):
    vec = WordNgramVectorizer()
    assert vec.get_params() == {"ngram_range": (1, 3), "top_k": 10_000, "weighting": "count",
                                "lowercase": True, "tagger": "spacy"}
    docs = tagger.tag(["The dog saw the Dog."])
    lower = WordNgramVectorizer(ngram_range=(1, 1)).fit(docs)
    assert lower.transform(docs)[0, lower.vocabulary_["dog"]] == 2
    cased = WordNgramVectorizer(ngram_range=(1, 1), lowercase=False).fit(docs)
    assert {"Dog", "dog", "The", "the"} <= set(cased.vocabulary_)


# -- validation and the estimator API -----------------------------------------------------------
def test_bare_string_is_rejected(reference_docs):
    with pytest.raises(ValueError, match="single string"):
        PosTemplateVectorizer().fit("The cat sat on the mat.")
    vec = PosTemplateVectorizer().fit(reference_docs)
    with pytest.raises(ValueError, match="single string"):
        vec.transform("The cat sat on the mat.")


def test_not_fitted():
    with pytest.raises(NotFittedError) as info:
        PosTemplateVectorizer().transform([doc("a b c d")])
    assert info.value.code == "E204"
    with pytest.raises(NotFittedError):
        WordNgramVectorizer().get_feature_names_out()


@pytest.mark.parametrize("params, name", [
    ({"top_k": 0}, "top_k"), ({"top_k": 2.5}, "top_k"), ({"weighting": "tf"}, "weighting"),
    ({"n": 0}, "n"), ({"n": "4"}, "n"),
])
def test_bad_parameters_name_the_parameter(params, name):
    with pytest.raises(ModelError) as info:
        PosTemplateVectorizer(**params).fit([doc("a b c d")])
    assert info.value.code == "E210" and f"'{name}'" in str(info.value)


def test_bad_ngram_range_and_source():
    with pytest.raises(ModelError, match="'ngram_range'"):
        SequenceNgramVectorizer(ngram_range=(3, 2)).fit([doc("a b c")])
    with pytest.raises(ModelError, match="'source'"):
        SequenceNgramVectorizer(source="lemmas").fit([doc("a b c")])


def test_constructor_only_stores_and_clone_works(reference_docs):
    for vec in (PosTemplateVectorizer(n=3, top_k=7, weighting="tfidf", tagger="nltk"),
                WordNgramVectorizer(ngram_range=(2, 2), top_k=None, lowercase=False),
                SequenceNgramVectorizer(source="words", ngram_range=(1, 2), top_k=9)):
        copy = clone(vec)
        assert type(copy) is type(vec) and copy.get_params() == vec.get_params()
        assert not hasattr(copy, "vocabulary_")
    fitted = PosTemplateVectorizer(n=3, top_k=7).fit(reference_docs)
    assert not hasattr(clone(fitted), "vocabulary_")


def test_works_inside_a_pipeline(reference_records):
    texts = [r.output for r in reference_records]
    teachers = [r.teacher for r in reference_records]
    pipe = Pipeline([("pos", PosTemplateVectorizer(n=2, top_k=40)), ("lr", LogisticRegression(max_iter=1000))])
    pipe.fit(texts, teachers)
    assert np.mean(pipe.predict(texts) == np.asarray(teachers)) > 0.9


@pytest.mark.parametrize("vec", [PosTemplateVectorizer(), PosTemplateVectorizer(n=2, weighting="tfidf"),
                                 WordNgramVectorizer(weighting="tfidf"),
                                 SequenceNgramVectorizer(ngram_range=(1, 3), top_k=100, weighting="count")],
                         ids=["pos-paper", "pos-tfidf", "words-tfidf", "tags-count"])
def test_state_round_trip(vec, reference_docs):
    vec = clone(vec).fit(reference_docs)
    meta, arrays = vec.get_state()
    meta = json.loads(json.dumps(meta))  # the metadata is plain JSON
    again = SequenceNgramVectorizer.from_state(meta, arrays)
    assert type(again) is type(vec) and again.get_params() == vec.get_params()
    assert list(again.get_feature_names_out()) == list(vec.get_feature_names_out())
    np.testing.assert_array_equal(again.transform(reference_docs).toarray(), vec.transform(reference_docs).toarray())


def test_feature_sets_give_fresh_unfitted_blocks_and_refuse_unknown_names(reference_docs):
    assert {"pos-paper", "ngram-paper", "pos-rich", "ngram-tfidf", "combined"} <= set(FEATURE_SETS)
    blocks = make_feature_blocks("combined", tagger="nltk")
    assert [name for name, _ in blocks] == ["pos", "words"]
    assert all(vec.tagger == "nltk" and not hasattr(vec, "vocabulary_") for _, vec in blocks)
    assert make_feature_blocks("pos-paper")[0][1] is not make_feature_blocks("pos-paper")[0][1]
    with pytest.raises(ModelError) as info:
        make_feature_blocks("pos-fancy")
    assert info.value.code == "E205" and "pos-paper" in str(info.value)


# -- registries and the character n-grams (issue 14, item 2) -----------------------------------
def test_feature_sets_come_from_the_registry():
    from attribution import registry

    assert FEATURE_SETS is registry.feature_sets
    assert list(FEATURE_SETS)[:6] == ["pos-paper", "ngram-paper", "pos-rich", "ngram-tfidf", "combined", "char-tfidf"]
    assert "char-tfidf (character 1-5 grams within words" in FEATURE_SETS.help()


def test_a_registered_feature_set_is_usable_by_name():
    from attribution import registry

    registry.feature_sets.register("test-words-binary", lambda: [("words", WordNgramVectorizer(weighting="binary"))])
    try:
        (block, vec), = make_feature_blocks("test-words-binary", tagger="nltk")
        assert block == "words" and vec.weighting == "binary" and vec.tagger == "nltk"
    finally:
        del registry.feature_sets._entries["test-words-binary"]
    with pytest.raises(ModelError):
        make_feature_blocks("test-words-binary")


def test_from_state_builds_only_registered_classes(reference_docs):
    meta, arrays = PosTemplateVectorizer(n=2).fit(reference_docs).get_state()
    for bad in ("Pipeline", "os.system", "attribution.features:PosTemplateVectorizer"):
        with pytest.raises(KeyError, match="unknown vectorizers"):
            SequenceNgramVectorizer.from_state({**meta, "class": bad}, arrays)


def test_char_ngrams_stay_within_words():
    from attribution.chars import CharNgramVectorizer

    vec = CharNgramVectorizer(ngram_range=(1, 3), top_k=None, weighting="count").fit(
        [TaggedDoc(("ab", "c"), ("X", "Y"), "ab c")])
    names = list(vec.get_feature_names_out())
    assert set(names) == {" ", "a", "b", "c", " a", "ab", "b ", " c", "c ", " ab", "ab ", " c "}
    assert "b c" not in names and "b  " not in names  # nothing crosses the word boundary
    assert vec.transform([TaggedDoc((), (), "")]).nnz == 0


def test_char_tfidf_reads_the_normalized_text(tagger):
    from attribution.chars import CharNgramVectorizer

    (block, vec), = make_feature_blocks("char-tfidf")
    assert block == "chars" and isinstance(vec, CharNgramVectorizer) and vec.explained_by_words
    assert vec.get_params() == {"ngram_range": (1, 5), "top_k": 20_000, "weighting": "tfidf",
                                "lowercase": False, "tagger": "spacy"}
    # raw strings are normalized like the estimator's input: the </s> and #### never become n-grams
    vec.fit(["**Answer:** B. </s>", "#### The answer is C"])
    names = set(vec.get_feature_names_out())
    assert " **An" in names and "</s" not in names and "##" not in names


def test_char_state_round_trip(reference_docs):
    from attribution.chars import CharNgramVectorizer

    vec = CharNgramVectorizer(top_k=300).fit(reference_docs)
    meta, arrays = vec.get_state()
    again = SequenceNgramVectorizer.from_state(json.loads(json.dumps(meta)), arrays)
    assert type(again) is CharNgramVectorizer and again.get_params() == vec.get_params()
    np.testing.assert_array_equal(again.transform(reference_docs).toarray(), vec.transform(reference_docs).toarray())


def test_find_spans_shows_the_words_behind_templates(tagger):
    docs = tagger.tag(["The cat sat."])
    vec = PosTemplateVectorizer(n=2, top_k=None).fit(docs)
    assert list(vec.find_spans(docs[0], {"DT NN": 0, "VBD .": 1})) == [("DT NN", "The cat"), ("VBD .", "sat .")]


def test_char_tfidf_model_saves_loads_and_explains(reference_records, tmp_path):
    from attribution.api import rank_student
    from attribution.estimator import TeacherAttributor
    from attribution.persistence import load_model, save_model

    texts, teachers = [r.output for r in reference_records], [r.teacher for r in reference_records]
    model = TeacherAttributor(features="char-tfidf", n_bootstrap=0).fit(texts, teachers)
    assert [name for name, _ in model.blocks_] == ["chars"]
    save_model(model, tmp_path / "char.npz")
    loaded = load_model(tmp_path / "char.npz")
    np.testing.assert_allclose(loaded.predict_proba(texts[:5]), model.predict_proba(texts[:5]))
    result = rank_student(loaded, reference_records[:6])
    assert result["ranking"][0]["teacher"] in teachers
    shown = [e for e in result["evidence"] if e["block"] == "chars" and e["examples"]]
    # the words a character n-gram occurs in
    assert shown and all(e["feature"] in f" {word} " for e in shown for word in e["examples"])


def test_model_file_names_only_registered_vectorizers(reference_records, tmp_path):
    import zipfile

    from attribution.estimator import TeacherAttributor
    from attribution.persistence import load_model, save_model

    model = TeacherAttributor(features="pos-paper", n_bootstrap=0).fit(
        [r.output for r in reference_records], [r.teacher for r in reference_records])
    save_model(model, tmp_path / "ok.npz")
    with zipfile.ZipFile(tmp_path / "ok.npz") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header = np.load(tmp_path / "ok.npz")["__header__"].tobytes().decode()
    for bad in ("Pipeline", "attribution.features:PosTemplateVectorizer", "CharNgramVectorizer"):
        tampered = header.replace('"PosTemplateVectorizer"', json.dumps(bad))
        with zipfile.ZipFile(tmp_path / "bad.npz", "w") as archive:
            for name, data in members.items():
                if name != "__header__.npy":
                    archive.writestr(name, data)
            with archive.open("__header__.npy", "w") as handle:
                np.lib.format.write_array(handle, np.frombuffer(tampered.encode(), dtype=np.uint8))
        with pytest.raises(ModelError) as info:
            load_model(tmp_path / "bad.npz")
        assert info.value.code == "E206"


class _LongWords(WordNgramVectorizer):
    """A plugin's vectorizer: word unigrams of at least ``min_len`` characters (a parameter the schema lacks)."""

    def __init__(self, *, min_len: int = 4, ngram_range=(1, 1), top_k=None, weighting="count", lowercase=True,
                 tagger="spacy"):
        self.min_len = min_len
        super().__init__(ngram_range=ngram_range, top_k=top_k, weighting=weighting, lowercase=lowercase,
                         tagger=tagger)

    def symbols(self, doc):
        return [w if len(w) >= self.min_len else None for w in super().symbols(doc)]


def test_a_plugin_vectorizer_saves_with_its_parameter_specs(reference_records, tmp_path):
    from attribution import registry
    from attribution.estimator import TeacherAttributor
    from attribution.persistence import load_model, save_model
    from attribution.schema import Int

    registry.vectorizers.register("_LongWords", _LongWords)
    registry.feature_sets.register("test-long-words", lambda: [("words", _LongWords())])
    texts, teachers = [r.output for r in reference_records], [r.teacher for r in reference_records]
    try:
        model = TeacherAttributor(features="test-long-words", n_bootstrap=0).fit(texts, teachers)
        assert all(len(g) >= 4 for g in model.blocks_[0][1].get_feature_names_out())
        save_model(model, tmp_path / "plugin.npz")
        with pytest.raises(ModelError) as info:  # 'min_len' has no spec: refused
            load_model(tmp_path / "plugin.npz")
        assert info.value.code == "E206" and "min_len" in str(info.value)
        _LongWords.PARAM_SPECS = {"min_len": Int(1, 100)}
        loaded = load_model(tmp_path / "plugin.npz")
        np.testing.assert_allclose(loaded.predict_proba(texts[:3]), model.predict_proba(texts[:3]))
    finally:
        del registry.vectorizers._entries["_LongWords"], registry.feature_sets._entries["test-long-words"]
