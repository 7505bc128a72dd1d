"""Deterministic cleanup of generation artifacts, rule by rule, with counts."""

from __future__ import annotations

import pytest

from attribution.normalize import RULES, Normalizer, normalize_text


@pytest.mark.parametrize("raw, clean", [
    ("The answer is A.<|endoftext|>", "The answer is A."),
    ("The answer is A.</s>", "The answer is A."),
    ("<s>[INST] The answer is A. [/INST]<|eot_id|>", "The answer is A."),
    ("It is red.<end_of_turn><eos><pad><pad>", "It is red."),
    ("It is red.<|IM_END|>", "It is red."),
])
def test_special_tokens_are_removed(raw, clean):
    normalizer = Normalizer()
    assert normalizer(raw) == clean
    assert normalizer.stats["special_tokens"] == 1


def test_answer_markers_are_removed_but_not_hashes_inside_words():
    normalizer = Normalizer()
    assert normalizer("#### The answer is A.") == "The answer is A."
    assert normalizer("It is C#. Use ###ids here.") == "It is C#. Use ###ids here."
    assert normalizer.stats["markers"] == 1


def test_nan_runs_are_removed_but_words_with_nan_are_kept():
    normalizer = Normalizer()
    assert normalizer("nannannannan") == ""
    assert normalizer("The banana costs nan dollars. NaNNaN") == "The banana costs nan dollars."
    assert normalizer.stats["nan_runs"] == 2


def test_a_leading_nan_is_removed_but_words_starting_with_nan_are_kept():
    normalizer = Normalizer()
    # as in the released CommonsenseQA student of gemma-2-9b
    assert normalizer("nan **The answer is A because people cry.**") == "**The answer is A because people cry.**"
    assert normalizer("nannan animals often experience pleasure.") == "animals often experience pleasure."
    assert normalizer("nanotechnology is a field of science.") == "nanotechnology is a field of science."
    assert normalizer("nan") == ""
    assert normalizer.stats["nan_runs"] == 3
    assert normalizer.stats["emptied"] == 1


def test_loops_keep_the_first_occurrence_and_drop_the_cut_off_repetition():
    normalizer = Normalizer()
    text = "Here's the thing! It spins. Definitely A! Definitely A! definitely a!  Definitely A! Defini"
    assert normalizer(text) == "Here's the thing! It spins. Definitely A!"
    assert normalizer.stats["loops"] == 1


def test_a_finished_last_sentence_is_kept():
    assert normalize_text("It is red. It is red. It is blue.") == "It is red. It is blue."


def test_docstring_example_all_rules_together():
    normalizer = Normalizer()
    assert normalizer("#### It is red. It is red. It is re<|endoftext|>") == "It is red."
    assert {r: normalizer.stats[r] for r in RULES} == {"special_tokens": 1, "markers": 1, "nan_runs": 0,
                                                       "loops": 1}


def test_whitespace_is_collapsed_and_paragraphs_kept():
    assert normalize_text("  One   two\t three.\n\n\n\nFour.  ") == "One two three.\n\nFour."


def test_rules_can_be_switched_off():
    text = "#### It is red. It is red.</s>"
    assert Normalizer(special_tokens=False)("#### It is red.</s>") == "It is red.</s>"
    assert Normalizer(markers=False)("#### It is red.</s>") == "#### It is red."
    assert Normalizer(loops=False)(text) == "It is red. It is red."
    assert normalize_text("nannan ok", nan_runs=False) == "nannan ok"
    assert Normalizer(**{r: False for r in RULES})("plain   text") == "plain text"


def test_stats_count_texts_changed_per_rule(student_records):
    normalizer = Normalizer()
    cleaned = [normalizer(r.output) for r in student_records]
    assert normalizer.stats["texts"] == 10
    # the fixture student has one '####', one '<|endoftext|>', one '</s>' and one looped output
    assert normalizer.stats["markers"] == 1
    assert normalizer.stats["special_tokens"] == 2
    assert normalizer.stats["loops"] == 1
    assert normalizer.stats["emptied"] == 0
    assert not any("<|" in t or "</s>" in t or "####" in t for t in cleaned)


def test_clean_text_is_unchanged(reference_records):
    normalizer = Normalizer()
    assert [normalizer(r.output) for r in reference_records] == [r.output for r in reference_records]
    assert sum(normalizer.stats[r] for r in RULES) == 0


def test_idempotent_and_deterministic(student_records, reference_records):
    texts = [r.output for r in student_records + reference_records]
    once = [normalize_text(t) for t in texts]
    assert [normalize_text(t) for t in once] == once
    assert [normalize_text(t) for t in texts] == once


def test_normalizers_compare_by_rules_not_stats():
    a, b = Normalizer(), Normalizer()
    a("something")
    assert a == b and a != Normalizer(loops=False)
