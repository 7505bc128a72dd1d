"""spaCy vs NLTK tagger: speed and tag agreement on the same (normalized) texts and tokens.

    python benchmarks/bench_taggers.py [--data-dir ../shared/data/paper_qa]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from attribution.io import RecordReader
from attribution.normalize import Normalizer
from attribution.tagging import NltkTagger, SpacyTagger

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "paper_qa"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    normalizer = Normalizer()
    texts = [normalizer(r.output) for path in sorted(args.data_dir.glob("*.jsonl"))
             for r in RecordReader(path, skip_invalid=True)]
    results = {}
    for tagger in (SpacyTagger(), NltkTagger()):
        start = time.perf_counter()
        docs = tagger.tag(texts, cache=False)
        seconds = time.perf_counter() - start
        n_tokens = sum(len(d) for d in docs)
        results[tagger.name] = docs
        print(f"{tagger.signature:<45} {len(texts)} texts, {n_tokens} tokens, {n_tokens / seconds:,.0f} tokens/s")
    spacy_docs, nltk_docs = results.values()
    same = sum(a == b for d1, d2 in zip(spacy_docs, nltk_docs) for a, b in zip(d1.tags, d2.tags))
    total = sum(len(d) for d in spacy_docs)
    print(f"tag agreement (same tokens): {same / total:.1%}")


if __name__ == "__main__":
    main()
