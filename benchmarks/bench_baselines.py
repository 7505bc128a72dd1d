"""Throughput of the model baselines: BERTScore pairs/s and teacher-perplexity tokens/s.

Usage (CPU, one thread, as measured for the README)::

    python benchmarks/bench_baselines.py --device cpu --threads 1
    python benchmarks/bench_baselines.py --device cuda --n-students 300 --lms smollm2,gemma3-270m  # GPU

Texts are real: released student and teacher outputs from ``../shared/data/paper_qa``
(CommonsenseQA), or any JSONL pair given with ``--students``/``--references``. Model load
time is reported apart from throughput. Prints one JSON document on stdout; progress on
stderr. BERTScore is timed twice: this package's scorer (each text embedded once, greedy
matching as batched matrix products) and, on a small sample, ``bert_score.BERTScorer.score``
on the same pairs, so the speed-up is measured rather than claimed.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "paper_qa"


def load_texts(args: argparse.Namespace) -> tuple[list, list]:
    from attribution.io import read_records

    students = Path(args.students or DEFAULT_DATA / "commonsenseqa_student.jsonl")
    references = Path(args.references or DEFAULT_DATA / "commonsenseqa_teacher.jsonl")
    if not students.is_file() or not references.is_file():
        raise SystemExit(f"benchmark texts not found: {students} / {references}; pass --students/--references")
    studs = read_records(students, skip_invalid=True)
    refs = read_records(references, require_teacher=True, skip_invalid=True)
    rng = random.Random(args.seed)
    studs = rng.sample(studs, min(args.n_students, len(studs)))
    refs = rng.sample(refs, min(args.n_references, len(refs)))
    return studs, refs


def bench_bertscore(args: argparse.Namespace, studs: list, refs: list) -> dict:
    import numpy as np

    from attribution.baselines._common import prepare_texts
    from attribution.baselines.bertscore import BertScoreScorer

    s_texts, r_texts = prepare_texts(studs, True), prepare_texts(refs, True)
    t0 = time.perf_counter()
    scorer = BertScoreScorer(args.model, device=args.device, show_progress=not args.quiet)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scorer.f1_pairs(s_texts, r_texts, [np.arange(len(r_texts))] * len(s_texts))
    ours_s = time.perf_counter() - t0
    n_pairs = len(s_texts) * len(r_texts)
    out = {"model": scorer.signature(), "load_s": load_s, "n_students": len(s_texts), "n_references": len(r_texts),
           "mean_words": float(np.mean([len(t.split()) for t in s_texts + r_texts])),
           "all_pairs": {"pairs": n_pairs, "seconds": ours_s, "pairs_per_s": n_pairs / ours_s}}
    if args.compare_pairs:
        from bert_score import BERTScorer

        reference = BERTScorer(model_type=scorer.model_path, num_layers=scorer.num_layers, lang="en",
                               device=scorer.device_)
        rng = random.Random(args.seed)
        pairs = [(rng.choice(s_texts), rng.choice(r_texts)) for _ in range(args.compare_pairs)]
        pairs = [(c, r) for c, r in pairs if c.strip() and r.strip()]
        t0 = time.perf_counter()
        reference.score([c for c, _ in pairs], [r for _, r in pairs], batch_size=64)
        theirs_s = time.perf_counter() - t0
        out["bert_score_package"] = {"pairs": len(pairs), "seconds": theirs_s, "pairs_per_s": len(pairs) / theirs_s}
        out["speedup_all_pairs"] = out["all_pairs"]["pairs_per_s"] / out["bert_score_package"]["pairs_per_s"]
    return out


def bench_perplexity(args: argparse.Namespace, studs: list, lm: str) -> dict:
    from attribution.baselines._common import prepare_texts
    from attribution.baselines.perplexity import PerplexityScorer

    texts = [t for t in prepare_texts(studs, True) if t][: args.n_lm_texts]
    prompts = [s.prompt for s in studs if s.output][: len(texts)]
    t0 = time.perf_counter()
    scorer = PerplexityScorer(lm, device=args.device, show_progress=not args.quiet)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    scorer.log_likelihood(texts, prompts)
    seconds = time.perf_counter() - t0
    scored = scorer.n_tokens_scored_
    return {"model": scorer.signature(), "load_s": load_s, "n_texts": len(texts), "output_tokens": scored,
            "seconds": seconds, "output_tokens_per_s": scored / seconds, "texts_per_s": len(texts) / seconds,
            "note": "prompt tokens are processed but not counted"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = default)")
    parser.add_argument("--model", default="minilm", help="BERTScore encoder")
    parser.add_argument("--lms", default="smollm2", help="comma-separated causal LMs ('' to skip)")
    parser.add_argument("--n-students", type=int, default=100)
    parser.add_argument("--n-references", type=int, default=200)
    parser.add_argument("--n-lm-texts", type=int, default=60)
    parser.add_argument("--compare-pairs", type=int, default=200, help="pairs for bert_score.score (0 = skip)")
    parser.add_argument("--students")
    parser.add_argument("--references")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    studs, refs = load_texts(args)
    result = {"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(),
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "bertscore": bench_bertscore(args, studs, refs)}
    result["perplexity"] = {lm: bench_perplexity(args, studs, lm) for lm in args.lms.split(",") if lm}
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
