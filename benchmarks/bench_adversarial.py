"""Tagging cost on adversarial texts: it must grow linearly with the text length.

    python benchmarks/bench_adversarial.py [--max-chars 64000] [--tagger spacy]

Each pattern is repeated to 1k, 2k, 4k, ... characters and normalized + tagged as one output
(what ranking does). The ratio column is time(n) / time(n/2): about 2 means linear, 4 quadratic.
spaCy's tokenizer alone is quadratic in a run of non-space characters (16,000 ')' took 40-50 s);
the tagger cuts such runs at ``attribution.tagging.MAX_RUN_CHARS`` characters.
"""

from __future__ import annotations

import argparse
import time

from attribution.normalize import Normalizer
from attribution.tagging import get_tagger

PATTERNS = {
    "close parens": ")",
    "open parens": "(",
    "quotes": "'",
    "dots": ".",
    "url-like": "http://a.b/",
    "hashes": "#",
    "nan run": "nan",
    "special tokens": "</s>",
    "newlines+spaces": "\n ",
    "looped sentence": "It is red. ",
    "words": "the cat sat ",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-chars", type=int, default=64_000)
    parser.add_argument("--tagger", default="spacy")
    args = parser.parse_args()
    tagger = get_tagger(args.tagger)
    normalizer = Normalizer()
    tagger.tag(["Warm up."], cache=False)
    sizes = []
    n = 1_000
    while n <= args.max_chars:
        sizes.append(n)
        n *= 2
    print(f"{'pattern':<18}" + "".join(f"{s:>10,}" for s in sizes) + "   worst ratio  (seconds per size)")
    for name, unit in PATTERNS.items():
        times = []
        for size in sizes:
            text = (unit * (size // len(unit) + 1))[:size]
            start = time.perf_counter()
            tagger.tag([normalizer(text)], cache=False)
            times.append(time.perf_counter() - start)
        ratios = [b / a for a, b in zip(times, times[1:]) if a > 0.05]  # tiny times are noise
        worst = f"{max(ratios):.1f}" if ratios else "-"
        print(f"{name:<18}" + "".join(f"{t:>10.3f}" for t in times) + f"   {worst:>11}")


if __name__ == "__main__":
    main()
