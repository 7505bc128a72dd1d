#!/usr/bin/env bash
# Scaling of fit and rank on the 26-candidate bank, measured where cores exist (issue 22, item 5): one run, under
# 10 minutes, on a machine with 16 cores (the device machine). For each worker count it prints the wall time, the
# breakdown (cluster start, each range on its worker, the client's steps, the scheduler's and client's overheads)
# and the cost model of that run (docs/cluster.md, "Scaling: a cost model"), so the 2-core prediction can be
# checked. Run it from the repository root:
#
#     PYTHON=.venv/bin/python BANK_DIR=../shared/data/alpacaeval_bank bash benchmarks/device_scale.sh
#
# Needs: the package with its Dask extra and the spaCy model installed for $PYTHON (`pip install -e '.[dask]'`),
# and BANK_DIR holding teachers_reference.jsonl and teachers_audit.jsonl (20,924 outputs in all).
# Why these counts fit in 10 minutes: on 2 busy cores a fit of the bank spent 185 s in the client's regressions
# (serial: every fit pays them) and 238 s of CPU on the workers, so one process takes 7-8 minutes and each fit on
# workers 3-4: the fit runs once, at 8 workers (the goal's count; FIT_WORKERS=8,14 FIT_SINGLE=1 adds 14 workers and
# one process, about 15 minutes in all), and its cost model predicts the other counts; rank runs one process and
# 2-14 workers on RANK_OUTPUTS of the bank's outputs (about 3 minutes), with the model the fit saved. Each part has
# its own time limit, so a slow machine still prints the counts done.
set -uo pipefail
PY=${PYTHON:-python}
BANK_DIR=${BANK_DIR:-../shared/data/alpacaeval_bank}
WORK=${WORK_DIR:-$(mktemp -d)}
FIT_WORKERS=${FIT_WORKERS:-8}
RANK_WORKERS=${RANK_WORKERS:-2,4,8,14}
RANK_OUTPUTS=${RANK_OUTPUTS:-4000}
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD}
cat "$BANK_DIR/teachers_reference.jsonl" "$BANK_DIR/teachers_audit.jsonl" > "$WORK/bank.jsonl"
echo "== $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $(nproc) cores;" \
     "$(wc -l < "$WORK/bank.jsonl") outputs; load $(cut -d' ' -f1 /proc/loadavg)"
single=--no-single
[ "${FIT_SINGLE:-0}" = 1 ] && single=
timeout 340 "$PY" benchmarks/bench_scale.py --fit-references "$WORK/bank.jsonl" --workers "$FIT_WORKERS" $single \
    --cost-model --save-model "$WORK/bank.npz" || echo "fit: stopped (exit $?)"
[ -f "$WORK/bank.npz" ] || { echo "no fitted model: rank not run"; exit 1; }
timeout 200 "$PY" benchmarks/bench_scale.py --outputs "$RANK_OUTPUTS" --outputs-from "$WORK/bank.jsonl" \
    --rank-model "$WORK/bank.npz" --single-up-to "$RANK_OUTPUTS" --workers "$RANK_WORKERS" --tmp "$WORK" \
    --cost-model || echo "rank: stopped (exit $?)"
echo "== $(date -u +%FT%TZ) done; load $(cut -d' ' -f1 /proc/loadavg)"
