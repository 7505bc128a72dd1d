#!/usr/bin/env bash
# GPU check of the model baselines, for a lent GPU machine (same code path as CPU: --device cuda).
#
# Usage, from the repository root, with a Python whose torch sees CUDA and that has the
# [baselines] extra installed (the GPU machine cannot reach PyPI; prepare the environment first):
#   OUT=/tmp/gpu_out PYTHON=.venv/bin/python bash benchmarks/gpu_baselines.sh
# Writes under $OUT: env.txt, tests.txt, bench_gpu.json, bench_cpu.json (same machine, 1 thread),
# and the paper_qa/demo baseline results run on cuda. Budget: about 5 minutes on one H100.
set -uo pipefail
OUT=${OUT:-$(pwd)/gpu_out}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"
export PYTHONPATH=$(pwd)${PYTHONPATH:+:$PYTHONPATH}
T() { timeout "$@"; }

"$PYTHON" - >"$OUT/env.txt" 2>&1 <<'PY'
import torch, transformers
print("torch", torch.__version__, "transformers", transformers.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
print("bf16", torch.cuda.is_available() and torch.cuda.is_bf16_supported())
PY
cat "$OUT/env.txt"
if ! grep -q "^cuda True" "$OUT/env.txt"; then
  echo "no CUDA device visible to $PYTHON; nothing to check" >&2
  exit 3
fi

# 1. Tests, including the CUDA-vs-CPU equality test (skipped on CPU machines).
T 240 "$PYTHON" -m pytest -q tests/test_baselines.py tests/test_baselines_models.py >"$OUT/tests.txt" 2>&1
echo "tests rc=$?" | tee -a "$OUT/tests.txt"

# 2. Throughput: GPU, then CPU on the same machine for a like-for-like baseline.
T 240 "$PYTHON" benchmarks/bench_baselines.py --device cuda --threads 0 --n-students 300 --n-references 440 \
  --n-lm-texts 300 --lms smollm2,gemma3-270m --quiet >"$OUT/bench_gpu.json" 2>"$OUT/bench_gpu.err"
echo "bench gpu rc=$?"
T 200 "$PYTHON" benchmarks/bench_baselines.py --device cpu --threads 1 --compare-pairs 0 --quiet \
  >"$OUT/bench_cpu.json" 2>"$OUT/bench_cpu.err"
echo "bench cpu rc=$?"

# 3. Baselines end to end on cuda (paper_qa when present, the demo corpus when built).
DATA=../shared/data/paper_qa
if [ -d "$DATA" ]; then
  for task in commonsenseqa openbookqa; do
    T 120 "$PYTHON" -m attribution baseline bertscore -r $DATA/${task}_teacher.jsonl -s $DATA/${task}_student.jsonl \
      --skip-invalid --device cuda -q -f json -o "$OUT/${task}_bertscore_cuda.json" >/dev/null
    echo "$task bertscore cuda rc=$?"
  done
fi
if [ -f data/demo/teacher_gemma-3-270m.jsonl ] && [ -f data/demo/student_gemma-3-270m.jsonl ]; then
  # each teacher framed as it was queried (data/demo/manifest.json): SmolLM2 chat, Gemma '{prompt}\n\nAnswer:'
  T 300 "$PYTHON" -m attribution baseline perplexity,perplexity-normalized,bertscore,embedding,cosine,rouge \
    -r data/demo/teacher_smollm2-135m.jsonl -r data/demo/teacher_gemma-3-270m.jsonl \
    -s data/demo/student_smollm2-135m.jsonl -s data/demo/student_gemma-3-270m.jsonl \
    -t smollm2-135m=smollm2-135m -t gemma-3-270m=gemma-3-270m \
    --prompt-format smollm2-135m=chat --prompt-format "gemma-3-270m={prompt}"$'\n\n'"Answer:" \
    --device cuda -q -f json -o "$OUT/demo_baselines_cuda.json" >/dev/null
  echo "demo baselines cuda rc=$?"
fi
echo "done; results in $OUT"
