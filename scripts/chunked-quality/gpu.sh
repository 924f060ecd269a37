#!/usr/bin/env bash
# Chunked eviction against one-shot eviction on the GPU (issue 17, item 5), in one call on
# the GPU machine from the repository root, with gpubin/lukv-run built where Go is
# (scripts/build-cuda.sh):
#
#   bash scripts/chunked-quality/gpu.sh
#
# For every length: `lukv-run eval ruler --device cuda` once with one-shot eviction (the
# context prefilled, then evicted once) and once with --chunk (prefilled chunk by chunk,
# evicting after every chunk), the same methods, ratios, tasks and samples; then
# compare.py writes $OUT/chunked-quality.{json,md} and, where matplotlib imports,
# $OUT/chunked-quality.png: per length, method and ratio the mean score of both, the
# difference in points, and whether chunked is within 2 points of one-shot.
#
# The default model (lukv-tiny) has a 16384-token context, so its lengths are 8192 and
# 16384; 32k needs a model whose context reaches it (QUALITY_MODEL, QUALITY_LENGTHS).
#
#   QUALITY_MODEL=             checkpoint folder (default: the embedded default model)
#   QUALITY_LENGTHS=8192,16384
#   QUALITY_METHODS=lukv,snapkv,expected-attention,pyramidkv,adakv
#   QUALITY_RATIOS=0.5,0.8,0.9
#   QUALITY_TASKS=niah_single_2,niah_multikey_1
#   QUALITY_SAMPLES=10         per task and length: cells average tasks x samples (20)
#   QUALITY_CHUNK=2048
#   QUALITY_SECONDS=110        limit per eval run (4 runs: about 4 minutes at most)
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=${OUT:-$root/out}
mkdir -p "$out"
lengths=${QUALITY_LENGTHS:-8192,16384}
methods=${QUALITY_METHODS:-lukv,snapkv,expected-attention,pyramidkv,adakv}
ratios=${QUALITY_RATIOS:-0.5,0.8,0.9}
tasks=${QUALITY_TASKS:-niah_single_2,niah_multikey_1}
samples=${QUALITY_SAMPLES:-10}
chunk=${QUALITY_CHUNK:-2048}
limit=${QUALITY_SECONDS:-110}
model=()
[[ -n ${QUALITY_MODEL:-} ]] && model=(--model "$QUALITY_MODEL")
[[ -x gpubin/lukv-run ]] || { echo "gpubin/lukv-run missing: run scripts/build-cuda.sh where Go is and carry gpubin/" >&2; exit 1; }
if [[ -z ${LUKV_KERNELS:-} ]]; then
	bash scripts/build-kernels.sh >"$out/kernels.log" 2>&1 || { tail -n 30 "$out/kernels.log" >&2; exit 1; }
	export LUKV_KERNELS=$root/kernels/build
fi
start=$SECONDS
for n in ${lengths//,/ }; do
	for mode in oneshot chunked; do
		extra=()
		[[ $mode == chunked ]] && extra=(--chunk "$chunk")
		t0=$SECONDS
		timeout -k 10 "$limit" gpubin/lukv-run eval ruler --device cuda "${model[@]}" --methods "$methods" --compression "$ratios" \
			--lengths "$n" --tasks "$tasks" --samples "$samples" "${extra[@]}" --out "$out/$mode-$n" >"$out/$mode-$n.log" 2>&1
		echo "[chunked-quality +$((SECONDS - start))s] $mode $n: status $? in $((SECONDS - t0)) s ($out/$mode-$n.log)" >&2
	done
done
python3 scripts/chunked-quality/compare.py --out "$out" --lengths "$lengths" --chunk "$chunk" | tee "$out/chunked-quality.md"
