#!/usr/bin/env bash
# Scaling of fit and rank on the 26-candidate bank, measured where cores exist (issue 22, item 5): one run, under
# 10 minutes, on a machine with 16 cores (the device machine), printing for each worker count the wall time, the
# speed-up over one process and the breakdown (cluster start, each range on its worker, the client's steps, the
# scheduler's and the client's overheads), with the cost model of the run at the lowest count beside it so the
# prediction can be checked (docs/cluster.md, "Scaling: a cost model"). Run it from the repository root:
#
#     PYTHON=.venv/bin/python BANK_DIR=../shared/data/alpacaeval_bank bash benchmarks/device_scale.sh
#
# Needs: the package with its Dask extra and the spaCy model installed for $PYTHON (`pip install -e '.[dask]'`),
# and BANK_DIR holding teachers_reference.jsonl and teachers_audit.jsonl (20,924 outputs in all). Each part has its
# own time limit, so a slow machine still prints the counts done. Figures on the bank at 2 busy cores: fit about
# 8 CPU-minutes, rank of the 20,924 outputs about 4 (one process each); on 16 free cores the whole script should
# take 6-8 minutes.
set -uo pipefail
PY=${PYTHON:-python}
BANK_DIR=${BANK_DIR:-../shared/data/alpacaeval_bank}
WORK=${WORK_DIR:-$(mktemp -d)}
FIT_WORKERS=${FIT_WORKERS:-2,4,8,14}
RANK_WORKERS=${RANK_WORKERS:-2,4,8,14}
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-$PWD}
cat "$BANK_DIR/teachers_reference.jsonl" "$BANK_DIR/teachers_audit.jsonl" > "$WORK/bank.jsonl"
echo "== $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $(nproc) cores;" \
     "$(wc -l < "$WORK/bank.jsonl") outputs; $($PY -c 'import dask, spacy; print("dask", dask.__version__, "spacy", spacy.__version__)')"
# fit: one process (the speed-up's base), then each worker count; the model bytes must be the same
timeout 330 "$PY" benchmarks/bench_scale.py --fit-references "$WORK/bank.jsonl" --workers "$FIT_WORKERS" --cost-model || echo "fit: stopped (exit $?)"
# rank: the bank's outputs as one student's, with the model the one-process fit above would save (fitted here
# with 8 workers, untimed), one process then each worker count; the rank JSON must be the same
if [ ! -f "$WORK/bank.npz" ]; then
    timeout 120 "$PY" -m attribution fit "$WORK/bank.jsonl" -o "$WORK/bank.npz" --no-cache --workers 8 -q \
        || echo "fit of the rank model: stopped (exit $?)"
fi
timeout 240 "$PY" benchmarks/bench_scale.py --outputs 20924 --outputs-from "$WORK/bank.jsonl" \
    --rank-model "$WORK/bank.npz" --single-up-to 20924 --workers "$RANK_WORKERS" --tmp "$WORK" --cost-model || echo "rank: stopped (exit $?)"
echo "== $(date -u +%FT%TZ) done"
