"""Teacher perplexity: how likely each candidate teacher LM finds a student output.

A student distilled from a teacher might copy its token distribution, so its outputs
should be least surprising to that teacher. :class:`PerplexityScorer` loads one causal
LM once (Hugging Face id, local directory, ``.gguf`` file, or an offline alias) and
returns the mean log-probability per output token, conditioned on the prompt when one
is given; prompt tokens are never scored. Scores are cached by (prompt, text), so the
raw and normalized baselines share one pass.

The paper reports this baseline as unreliable: a teacher that is simply more confident
gives every text a lower perplexity. The normalized variant divides that out with a
z-score against the teacher's own reference outputs.

References
----------
Wadhwa, Shaib, Amir, Wallace (2025). Who Taught You That? Tracing Teachers in Model
Distillation. Findings of ACL. arXiv:2502.06659 (Section on baselines).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..causal_lm import ALIASES, LoadedModel, load_causal_lm, resolve_dtype
from ..errors import ModelError, baseline_error, baseline_model_error, missing_dependency, short_error
from ..io import Record
from ..runtime import register_cache
from ._common import (
    BaselineScores,
    check_records,
    prepare_texts,
    progress,
    quiet_transformers,
    resolve_device,
    versions,
)

PROMPT_FORMATS = ("plain", "chat")


def check_prompt_format(value: str) -> str:
    """``plain``, ``chat``, or a template holding ``{prompt}`` (e.g. ``"{prompt}\\n\\nAnswer:"``)."""
    if value in PROMPT_FORMATS or (isinstance(value, str) and "{prompt}" in value):
        return value
    raise baseline_error("E507", name="prompt_format",
                         expected="'plain', 'chat' or a template containing {prompt}", got=value)


#: Causal LMs whose logits are ``lm_head(decoder(...).last_hidden_state)`` (Gemma: then soft-capped).
HEAD_ONLY_ARCHITECTURES = frozenset({
    "LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
    "GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "OlmoForCausalLM", "Olmo2ForCausalLM",
})


class PerplexityScorer:
    """One causal LM, loaded once, that scores texts by mean log-probability per token.

    Parameters
    ----------
    model : str
        Hugging Face id, local directory, ``.gguf`` file, or an alias in :data:`attribution.causal_lm.ALIASES`.
    device : {"auto", "cpu", "cuda"}, default="auto"
        ``auto`` uses CUDA when available.
    dtype : str, optional
        ``float32`` on CPU by default; ``bfloat16`` (or ``float16``) on GPU.
    batch_size : int, optional
        Most sequences per forward pass; 64 on GPU, 8 on CPU by default. Batches are
        also capped so the logits stay under about 1 GB on CPU.
    max_length : int, default=1024
        Longest scored sequence; long prompts are cut from the left, outputs from the right.
    prompt_format : {"plain", "chat"} or str, default="plain"
        ``plain``: ``prompt + separator + output``; ``chat``: the prompt as a user turn through
        the tokenizer's chat template (for instruction-tuned teachers); any other string is a
        template such as ``"{prompt}\\n\\nAnswer:"``, filled in and followed directly by the output.
        Use the framing the teacher was queried with.
    separator : str, default="\\n"
        Between prompt and output in ``plain`` format.
    show_progress : bool, default=True
        tqdm bar on stderr.

    Attributes
    ----------
    device_ : str
    dtype_ : torch.dtype
    vocab_size_ : int
    """

    def __init__(self, model: str, *, device: str = "auto", dtype: str | None = None,
                 batch_size: int | None = None, max_length: int = 1024, prompt_format: str = "plain",
                 separator: str = "\n", show_progress: bool = True) -> None:
        try:
            import torch  # noqa: F401  (fail early with the extra to install)
            import transformers  # noqa: F401
        except ImportError as err:
            raise missing_dependency(err.name or "transformers", "baselines") from err
        check_prompt_format(prompt_format)
        if not isinstance(max_length, int) or max_length < 2:
            raise baseline_error("E507", name="max_length", expected="an integer >= 2", got=max_length)
        self.model = model
        self.max_length = max_length
        self.prompt_format = prompt_format
        self.separator = separator
        self.show_progress = show_progress
        self.device_ = resolve_device(device)
        self.dtype_ = resolve_dtype(self.device_, dtype)
        self.batch_size = batch_size or (64 if self.device_.startswith("cuda") else 8)
        loaded = _load_lm(model, self.device_, dtype, show_progress)
        self._model, self._tokenizer, self._chat_template = loaded.model, loaded.tokenizer, loaded.chat_template
        tok = self._tokenizer
        self._pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        if self._pad_id is None:
            self._pad_id = 0
        self._start_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        self.vocab_size_ = int(self._model.get_output_embeddings().weight.shape[0])
        budget = 2e9 if self.device_.startswith("cuda") else 2.5e8  # logits floats per batch
        self._max_batch_tokens = max(self.max_length, int(budget / self.vocab_size_))
        self._memo: dict[tuple[str, str, str | None, str], tuple[float, int]] = {}
        #: Compute logits only at scored positions (architectures whose head is exactly
        #: ``lm_head(last_hidden_state)``, plus Gemma's soft-capping); others use full logits.
        self.head_only_scored_ = type(self._model).__name__ in HEAD_ONLY_ARCHITECTURES
        if self.head_only_scored_:  # logits only for output tokens: the batch is bounded by size alone
            self._max_batch_tokens = max(self._max_batch_tokens, 4 * self.max_length)
        self.n_tokens_scored_ = 0

    # -- tokenization --------------------------------------------------------------------
    def _prefix_ids(self, prompt: str | None) -> list[int]:
        tok = self._tokenizer
        if prompt and self.prompt_format == "chat" and self._chat_template:
            # rendered as text, then tokenized without extra specials: as the teachers were prompted
            rendered = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                               chat_template=self._chat_template, add_generation_prompt=True)
            return list(tok(rendered, add_special_tokens=False)["input_ids"])
        if prompt and self.prompt_format not in PROMPT_FORMATS:
            body = self.prompt_format.replace("{prompt}", prompt)
        else:
            body = prompt + self.separator if prompt else ""
        ids = list(tok(body, add_special_tokens=True)["input_ids"]) if body else []
        if self._start_id is not None and (not ids or ids[0] != self._start_id):
            ids = [self._start_id, *ids]  # a start token, so the first output token is scored too
        return ids

    def _encode(self, prompt: str | None, text: str) -> tuple[list[int], int]:
        """Token ids and the number of leading (unscored) context tokens."""
        prefix = self._prefix_ids(prompt)
        output = self._tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        output = output[: self.max_length - 1]
        room = self.max_length - len(output)
        if len(prefix) > room:
            prefix = prefix[len(prefix) - room:]  # keep the prompt's end, next to the output
        if not prefix and output:  # nothing to condition the first token on: it goes unscored
            return output, 1
        return prefix + output, len(prefix)

    # -- scoring ---------------------------------------------------------------------------
    def log_likelihood(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Summed log-probability (natural log) of each text's tokens and how many were scored.

        Returns
        -------
        total : ndarray of shape (n,)
            Sum of log p(token | context) over the output tokens; 0 where none was scored.
        n_tokens : ndarray of shape (n,)
        """
        import torch

        if isinstance(texts, str):
            raise baseline_error("E508", name="texts", got="str")
        prompts = list(prompts) if prompts is not None else [None] * len(texts)
        frame = (self.prompt_format, self.separator)
        keys = [(*frame, p, t) for p, t in zip(prompts, texts)]
        todo = sorted({k for k in keys if k not in self._memo}, key=lambda k: (k[2] or "", k[3]))
        encoded = [(k, *self._encode(k[2], k[3])) for k in todo]
        encoded.sort(key=lambda e: len(e[1]))
        batches: list[list[Any]] = []
        current: list[Any] = []
        width = 0
        for item in encoded:
            new_width = max(width, len(item[1]))
            if current and (len(current) >= self.batch_size or new_width * (len(current) + 1)
                            > self._max_batch_tokens):
                batches.append(current)
                current, new_width = [], len(item[1])
            current.append(item)
            width = new_width
        if current:
            batches.append(current)
        with torch.inference_mode():
            bar = progress(batches, desc=f"perplexity ({Path(self.model).name})",
                           enabled=self.show_progress and bool(batches))
            for batch in bar:
                self._score_batch(batch)
        total = np.asarray([self._memo[k][0] for k in keys], dtype=float)
        count = np.asarray([self._memo[k][1] for k in keys], dtype=int)
        return total, count

    def _score_batch(self, batch: list[tuple[tuple, list[int], int]]) -> None:
        import torch

        width = max(len(ids) for _, ids, _ in batch)
        input_ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        for row, (_, ids, n_context) in enumerate(batch):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            attention[row, :len(ids)] = 1
            labels[row, n_context:len(ids)] = torch.tensor(ids[n_context:], dtype=torch.long)
        if width < 2:  # nothing can be predicted
            for key, _, _ in batch:
                self._memo[key] = (0.0, 0)
            return
        input_ids, attention = input_ids.to(self.device_), attention.to(self.device_)
        shift_labels = labels[:, 1:].to(self.device_)
        scored = shift_labels != -100
        if self.head_only_scored_:
            # Run the LM head only where a token is scored: prompt positions need no logits, and
            # with a 256k vocabulary the head costs more than the transformer body.
            hidden = self._model.get_decoder()(input_ids=input_ids, attention_mask=attention,
                                               use_cache=False).last_hidden_state[:, :-1]
            logits = self._model.get_output_embeddings()(hidden[scored]).float()
            cap = getattr(self._model.config, "final_logit_softcapping", None)
            if cap:
                logits = torch.tanh(logits / cap) * cap
            logp = -torch.nn.functional.cross_entropy(logits, shift_labels[scored], reduction="none")
            rows = scored.nonzero()[:, 0]
            totals_t = torch.zeros(len(batch), dtype=torch.float64, device=logp.device)
            totals_t.index_add_(0, rows, logp.double())
            totals = totals_t.cpu().numpy()
        else:
            logits = self._model(input_ids=input_ids, attention_mask=attention, use_cache=False).logits
            shift_logits = logits[:, :-1, :].float()
            nll = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]),
                                                    shift_labels.reshape(-1), ignore_index=-100,
                                                    reduction="none").view(shift_labels.shape)
            totals = (-nll * scored).sum(dim=1).double().cpu().numpy()
        counts = scored.sum(dim=1).cpu().numpy()
        for (key, _, _), total, count in zip(batch, totals, counts):
            self._memo[key] = (float(total), int(count))
            self.n_tokens_scored_ += int(count)

    def score(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None) -> np.ndarray:
        """Mean log-probability per output token, i.e. ``-log(perplexity)``; higher = more likely.

        NaN for a text with no scored token (empty after normalization).
        """
        total, count = self.log_likelihood(texts, prompts)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan)

    def signature(self) -> dict[str, Any]:
        """What was loaded and how texts were framed."""
        return {"model": self.model, "device": self.device_, "dtype": str(self.dtype_).replace("torch.", ""),
                "max_length": self.max_length, "prompt_format": self.prompt_format,
                "chat_template": ("tokenizer" if getattr(self._tokenizer, "chat_template", None) else
                                  "fallback" if self._chat_template else None)}


def _load_lm(model: str, device: str, dtype: str | None, show_progress: bool) -> LoadedModel:
    """The shared causal-LM loader; a model that cannot be loaded is this baseline's E501 (what to pass)."""
    try:
        with quiet_transformers(show_progress):
            return load_causal_lm(model, device=device, dtype=dtype)
    except ModelError as err:
        detail = short_error(err.__cause__) if err.code == "E304" and err.__cause__ else err.message
        raise baseline_model_error("E501", kind="causal LM", model=model, detail=detail,
                                   aliases=", ".join(ALIASES)) from err


#: Loaded LMs, least recently used first; at most :data:`MAX_LOADED` stay in memory.
_SCORERS: OrderedDict[tuple, PerplexityScorer] = OrderedDict()
MAX_LOADED = 2


def get_scorer(model: str, **options: Any) -> PerplexityScorer:
    """A cached :class:`PerplexityScorer` (each model loads once while it stays among the last
    :data:`MAX_LOADED` used; 7B teachers on one GPU are thus scored one after another).

    ``prompt_format`` and ``separator`` are framing, not part of the model: the same loaded
    model serves both (its score cache is keyed by framing too).
    """
    show = options.pop("show_progress", True)
    framing = {k: options.pop(k) for k in ("prompt_format", "separator") if options.get(k) is not None}
    options = {k: v for k, v in options.items() if v is not None}
    key = (model, resolve_device(options.get("device", "auto")), options.get("dtype"),
           options.get("batch_size"), options.get("max_length", 1024))
    if key in _SCORERS:
        _SCORERS.move_to_end(key)
    else:
        while len(_SCORERS) >= MAX_LOADED:
            _SCORERS.popitem(last=False)
            _free_gpu()
        _SCORERS[key] = PerplexityScorer(model, show_progress=show, **options, **framing)
    scorer = _SCORERS[key]
    scorer.show_progress = show
    scorer.prompt_format = check_prompt_format(framing.get("prompt_format", "plain"))
    scorer.separator = framing.get("separator", "\n")
    return scorer


def _free_gpu() -> None:
    import gc

    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@register_cache  # attribution.clear_caches()
def _clear_scorers() -> None:
    _SCORERS.clear()
    _free_gpu()


def parse_teacher_models(specs: Sequence[str] | dict[str, str]) -> dict[str, str]:
    """``["smollm2=smollm2", "gemma=/models/g.gguf"]`` -> ``{"smollm2": "smollm2", ...}``."""
    if isinstance(specs, dict):
        return dict(specs)
    out = {}
    for spec in specs:
        name, sep, model = spec.partition("=")
        if not sep or not name.strip() or not model.strip():
            raise baseline_error("E504", spec=spec)
        out[name.strip()] = model.strip()
    return out


def parse_prompt_formats(value: str | Sequence[str] | dict[str, str]) -> dict[str, str]:
    """One framing for all teachers (``"chat"``), or per teacher: ``["a=chat", "b={prompt} Answer:"]``
    or a dict; the key ``"*"`` is the default."""
    if isinstance(value, dict):
        items = dict(value)
    elif isinstance(value, str):
        items = {"*": value}
    else:
        items = {}
        for spec in value:
            name, sep, fmt = spec.partition("=")
            if sep and name.strip() and "{" not in name:
                items[name.strip()] = fmt
            else:
                items["*"] = spec
    return {k: check_prompt_format(v) for k, v in items.items()}


def run_perplexity(references: Sequence[Record], students: Sequence[Record], *,
                   teacher_models: Sequence[str] | dict[str, str], normalized: bool = False,
                   n_calibration: int = 100, random_state: int = 0, device: str = "auto",
                   dtype: str | None = None, batch_size: int | None = None, max_length: int = 1024,
                   prompt_format: str | dict[str, str] = "plain", normalize: bool = True,
                   use_prompts: bool = True,
                   show_progress: bool = True, **_: Any) -> BaselineScores:
    """Score every student output under every candidate teacher's LM.

    Parameters
    ----------
    teacher_models : dict or list of "NAME=MODEL"
        A model for every teacher in ``references``.
    normalized : bool, default=False
        ``False``: the score is ``-log(perplexity)`` (mean log-probability per output token).
        ``True``: that score as a z-score against the same teacher's scores on up to
        ``n_calibration`` of its own reference outputs (seeded sample), which removes a
        teacher's overall confidence: "is this text as typical for teacher t as t's own text?".
    prompt_format : str, list of "NAME=FORMAT" or dict, default="plain"
        How each teacher sees the prompt (see :class:`PerplexityScorer`); match how it was queried,
        e.g. ``{"smollm2-135m": "chat", "gemma-3-270m": "{prompt}\\n\\nAnswer:"}``.
    use_prompts : bool, default=True
        Condition on each record's ``prompt`` when it has one.

    Returns
    -------
    BaselineScores
        Higher means more likely the teacher. A student output with no token left to score
        gets equal scores for all teachers (a tie, counted in ``meta["n_empty_students"]``).
    """
    classes = check_records(references, students)
    models, formats = _check_options(classes, teacher_models, prompt_format, n_calibration)
    stu_texts = prepare_texts(students, normalize)
    stu_prompts = [s.prompt if use_prompts else None for s in students]
    rng = np.random.default_rng(random_state)
    scores = np.zeros((len(students), len(classes)))
    calibration: dict[str, dict[str, float]] = {}
    signatures = {}
    n_tokens = 0
    for j, teacher in enumerate(classes):
        scorer = get_scorer(models[teacher], device=device, dtype=dtype, batch_size=batch_size,
                            max_length=max_length, show_progress=show_progress,
                            prompt_format=formats.get(teacher, formats.get("*", "plain")))
        before = scorer.n_tokens_scored_
        scores[:, j] = scorer.score(stu_texts, stu_prompts)
        if normalized:
            own = [r for r in references if r.teacher == teacher]
            calibration[teacher] = _calibrate(scorer, own, teacher, rng=rng, n_calibration=n_calibration,
                                              normalize=normalize, use_prompts=use_prompts)
            scores[:, j] = (scores[:, j] - calibration[teacher]["mean"]) / calibration[teacher]["std"]
        n_tokens += scorer.n_tokens_scored_ - before
        signatures[teacher] = scorer.signature()
    empty = ~np.isfinite(scores).all(axis=1)
    scores[empty] = 0.0
    meta = {"teacher_models": signatures, "normalize": normalize, "use_prompts": use_prompts,
            "n_empty_students": int(empty.sum()), "n_tokens_scored": int(n_tokens),
            "score": _SCORE_NORMALIZED if normalized else _SCORE_RAW, "versions": versions()}
    if normalized:
        meta.update(calibration=calibration, n_calibration=n_calibration, random_state=random_state)
    return BaselineScores("perplexity-normalized" if normalized else "perplexity", classes, scores, meta)


_SCORE_RAW = "mean token log-probability = -log(perplexity) (higher = more likely the teacher)"
_SCORE_NORMALIZED = ("z-score of mean token log-probability against the teacher's own references (higher = more "
                     "likely the teacher)")


def _check_options(classes: list[str], teacher_models: Sequence[str] | dict[str, str],
                   prompt_format: str | Sequence[str] | dict[str, str], n_calibration: Any
                   ) -> tuple[dict[str, str], dict[str, str]]:
    """A model for every teacher, the prompt formats, and a usable calibration size, or a coded error."""
    models = parse_teacher_models(teacher_models)
    if missing := [t for t in classes if t not in models]:
        raise baseline_error("E503", missing=", ".join(missing), known=", ".join(classes))
    formats = parse_prompt_formats(prompt_format)
    if not isinstance(n_calibration, int) or n_calibration < 2:
        raise baseline_error("E507", name="n_calibration", expected="an integer >= 2", got=n_calibration)
    return models, formats


def _calibrate(scorer: PerplexityScorer, own: list[Record], teacher: str, *, rng: np.random.Generator,
               n_calibration: int, normalize: bool, use_prompts: bool) -> dict[str, Any]:
    """Mean and spread of ``scorer``'s scores on a seeded sample of the teacher's own references."""
    pick = np.sort(rng.choice(len(own), size=min(n_calibration, len(own)), replace=False))
    own = [own[i] for i in pick]
    ref_scores = scorer.score(prepare_texts(own, normalize), [r.prompt if use_prompts else None for r in own])
    ref_scores = ref_scores[np.isfinite(ref_scores)]
    if len(ref_scores) < 2:
        raise baseline_error("E505", name="perplexity-normalized", n=2,
                             got=f"{len(ref_scores)} scorable reference(s) for {teacher}")
    mu, sd = float(ref_scores.mean()), float(ref_scores.std(ddof=1)) or 1.0
    return {"mean": mu, "std": sd, "n": int(len(ref_scores))}
