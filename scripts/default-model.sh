#!/usr/bin/env bash
# Builds lukv-tiny end to end on the GPU machine: tokenizer, training, evaluation.
#
# Before (here, on the development machine; data/ is git-ignored):
#   bash scripts/corpus/fetch_sources.sh && python3 scripts/corpus/build_corpus.py
# Then one device call (tool `run`, kind nvidia-h200, timeout 600) with carry ["data/corpus"]:
#   TRAIN_SECONDS=380 bash scripts/default-model.sh
# It writes to $OUT (default out/): model.safetensors (or its 15 MiB parts), lukv-tiny-files.tgz (config.json,
# generation_config.json, tokenizer.json, tokenizer_config.json, loss.csv, loss.png,
# train_log.json), lukv-tiny-golden.tgz (transformers goldens), eval.json and log;
# `bash scripts/adopt-default-model.sh DIR` (DIR: where they came back) puts them in place.
#
# Knobs (environment): TRAIN_SECONDS (380), PHASES (see train_model.py), EVAL_N (50),
# EVAL_LENGTHS (4096,16384), EVAL_TASKS (all 11;
# a comma list), EVAL (0: no evaluation in this call, e.g. to give training all of it), EVAL_TIMEOUT (180; the full n=50 evaluation needs ~200 s, see models/lukv-tiny/README.md), SEED (1234), EXTRA_TRAIN_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p "${OUT:-out}"
OUTDIR=$(cd "${OUT:-out}" && pwd)
W=${WORKDIR:-/tmp/lukv-tiny}
mkdir -p "$W"
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  python3 -c 'import torch, transformers, tokenizers; print("torch", torch.__version__, "transformers", transformers.__version__, "tokenizers", tokenizers.__version__)'
  test -s data/corpus/train_prose.txt || { echo "default-model.sh: data/corpus missing: run scripts/corpus/fetch_sources.sh and build_corpus.py, carry data/corpus"; exit 2; }
  python3 scripts/train_tokenizer.py --data data/corpus --out "$W"
  python3 scripts/train_model.py --data data/corpus --tokenizer "$W/tokenizer.json" --out "$W" \
    --time-budget "${TRAIN_SECONDS:-380}" --seed "${SEED:-1234}" \
    ${PHASES:+--phases "$PHASES"} ${EXTRA_TRAIN_ARGS:-}
  # Results leave before the evaluation, so a slow evaluation cannot lose the checkpoint.
  # The device tool returns files of at most 16 MiB: larger weights (head size 64: 18.3 MiB)
  # come back as model.safetensors.part-aa, -ab, ..., which adopt-default-model.sh joins.
  if (($(stat -c %s "$W/model.safetensors") > 16 * 1024 * 1024)); then
    split -b 15M "$W/model.safetensors" "$OUTDIR/model.safetensors.part-"
  else
    cp "$W/model.safetensors" "$OUTDIR/"
  fi
  (cd "$W" && tar czf "$OUTDIR/lukv-tiny-files.tgz" config.json generation_config.json tokenizer.json \
      tokenizer_config.json loss.csv train_log.json $(ls loss.png 2>/dev/null))
  # transformers' logits and greedy continuation of the new checkpoint, for lukv's golden
  # test (tests/testdata/lukv-tiny): adopting a model needs no second call for them.
  python3 scripts/make_goldens.py --checkpoint "$W" "$W/golden" \
    && (cd "$W" && tar czf "$OUTDIR/lukv-tiny-golden.tgz" golden) || echo "goldens failed: $?"
  [[ ${EVAL:-1} == 0 ]] || timeout "${EVAL_TIMEOUT:-180}" python3 scripts/eval_model_hf.py --model "$W" --data data/corpus \
    --n "${EVAL_N:-50}" --lengths "${EVAL_LENGTHS:-4096,16384}" ${EVAL_TASKS:+--tasks "$EVAL_TASKS"} --out "$OUTDIR/eval.json" || echo "eval failed: $?"
  ls -l "$OUTDIR"
} 2>&1 | tee "$OUTDIR/log"
