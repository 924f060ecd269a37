#!/usr/bin/env bash
# Evaluates lukv-small (issue 16) on the GPU machine in one device call, through lukv itself
# (gpubin/lukv-run, --device cuda) and, for perplexity, transformers:
#   1. full cache, every format family (trained and held out), 4k / 16k / 32k tokens,
#      EVAL_SAMPLES per family, task and length (eval formats; report.md splits trained and
#      held-out families);
#   2. held-out bits per byte of lukv-small and lukv-tiny (scripts/heldout_bpb.py; the
#      tokenizers differ, so bytes are the common unit);
#   3. LU-KV budget curve of lukv-small for the expected-attention scorer (profile);
#   4. eviction: held-out families and two trained ones, retrieval tasks, 4k and 16k,
#      compression 0.5 / 0.8 / 0.9, LU-KV against the baselines (EVICT_SAMPLES per cell).
# Each step has a time limit (SIGINT: eval writes a partial report marked interrupted and
# can be resumed from its results.jsonl).
#
# Here, before the call:
#   bash scripts/build-cuda.sh && mkdir -p gpubin-gz eval-carry &&
#   xz -T2 -c gpubin/lukv-run >gpubin-gz/lukv-run.xz &&
#   cp data/broad/heldout.jsonl.gz data/corpus/heldout_prose.txt eval-carry/
# Device call (carry ["gpubin-gz", "eval-carry"]): bash scripts/eval-small-model.sh
# Results: $OUT/eval-small.tgz (formats-full/, evict/, curves/, bpb.json, logs).
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=$(mkdir -p "${OUT:-out}" && cd "${OUT:-out}" && pwd)
R=/tmp/eval-small
mkdir -p $R gpubin
M=models/lukv-small
log=$R/log
{
	nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
	date -u
	python3 -c "import lzma, shutil; shutil.copyfileobj(lzma.open('gpubin-gz/lukv-run.xz'), open('gpubin/lukv-run', 'wb'))"
	chmod +x gpubin/lukv-run
	bash scripts/build-kernels.sh >$R/build-kernels.log 2>&1 || { echo "kernels failed"; tail $R/build-kernels.log; }
	echo "== 1. full cache, every family"
	time timeout -s INT "${FULL_SECONDS:-170}" gpubin/lukv-run eval formats --device cuda --model $M --methods full \
		--lengths 4096,16384,32768 --samples "${EVAL_SAMPLES:-10}" --out $R/formats-full 2>&1 | tr '\r' '\n' | grep -v '^\s*$' | tail -n 40
	echo "== 2. held-out bits per byte"
	time timeout 90 python3 scripts/heldout_bpb.py --model $M --model models/lukv-tiny --broad eval-carry/heldout.jsonl.gz \
		--prose eval-carry/heldout_prose.txt --max-bytes 1000000 --out $R/bpb.json 2>&1 | grep -v Loading
	echo "== 3. LU-KV curve (expected-attention)"
	mkdir -p $R/curves
	time timeout 90 gpubin/lukv-run profile --device cuda --model $M --calibration models/lukv-tiny/calibration.json \
		--scorer expected-attention --sink 4 --window 1 --horizon 64 --temperature 0.7 --seed 0 \
		--out $R/curves/expected-attention.npy 2>&1 | tr '\r' '\n' | tail -n 5
	echo "== 4. eviction"
	curve=()
	[[ -s $R/curves/expected-attention.npy ]] && curve=(--curve $R/curves/expected-attention.npy)
	time timeout -s INT "${EVICT_SECONDS:-150}" gpubin/lukv-run eval formats --device cuda --model $M "${curve[@]}" \
		--families narrative,yaml,funcdef,email,sentence,json --tasks single,multikey,multivalue,multihop \
		--methods full,lukv,snapkv,expected-attention,pyramidkv,adakv,keydiff --compression 0.5,0.8,0.9 \
		--lengths 4096,16384 --samples "${EVICT_SAMPLES:-5}" --out $R/evict 2>&1 | tr '\r' '\n' | grep -v '^\s*$' | tail -n 40
	date -u
} 2>&1 | tee $log
(cd /tmp && tar czf "$OUTDIR/eval-small.tgz" eval-small)
ls -l "$OUTDIR"
