#!/usr/bin/env bash
# Runs the RULER-style evaluation of issue #5 on the embedded default model (and its
# embedded evaluation split: no data folder needed) with the
# CUDA build (gpubin/lukv-run from scripts/build-cuda.sh), one process per shard so the
# GPU and the host's cores stay busy, each shard resumable in its own folder.
#
#   EVAL_DIR=dir            where the shard folders go (default out/eval; resumable)
#   OUT=dir                 if set, EVAL_DIR is also packed into OUT/eval.tgz at the end
#   LENGTHS="4096 8192 16384"
#   SAMPLES=50              samples per task and length (one sample = 2 points)
#   METHODS=...             --methods list (default below)
#   SECONDS_BUDGET=420      every shard stops after this long; rerun to resume
#   DEVICE=cuda
#
# Builds kernels/build first when it is empty (a fresh GPU machine). A shard stopped by the
# budget says "eval: interrupted" and resumes on the next run; a shard that failed prints
# its "lukv-run: ..." reason below the summary and makes the script exit 1.
#
# The shards' results.jsonl are merged afterwards with
#   cat EVAL_DIR/*/results.jsonl > merged/results.jsonl
#   lukv-run eval ruler --out merged <same flags>   (every cell done: writes the report)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${EVAL_DIR:-$root/out/eval}
lengths=${LENGTHS:-"4096 8192 16384"}
samples=${SAMPLES:-50}
methods=${METHODS:-full,snapkv,expected-attention,keydiff,pyramidkv,adakv,lukv,lukv:keydiff}
budget=${SECONDS_BUDGET:-420}
device=${DEVICE:-cuda}
bin=${LUKV_RUN:-gpubin/lukv-run}
# One shard (process) per task and length: most of the work is many small GPU launches
# and host-side scoring, which separate processes overlap.
tasks=${TASKS:-"niah_single_1 niah_single_2 niah_single_3 niah_multikey_1 niah_multikey_2 niah_multikey_3 niah_multivalue niah_multiquery vt cwe fwe"}
mkdir -p "$out"
# A fresh GPU machine has no kernels/build: every shard would stop at once with
# "compiled kernels not found" (seen 2026-11-29), so build them first when nvcc is there.
if [[ $device == cuda && -z ${LUKV_KERNELS:-} ]] && ! compgen -G "kernels/build/*.cubin" >/dev/null \
	&& ! compgen -G "kernels/build/*.ptx" >/dev/null; then
	echo "eval-default-model: kernels/build is empty: bash scripts/build-kernels.sh"
	bash scripts/build-kernels.sh >/dev/null || { echo "eval-default-model: building the kernels failed" >&2; exit 1; }
fi
pids=()
for len in $lengths; do
	for task in $tasks; do
		dir=$out/$len-$task
		mkdir -p "$dir"
		timeout -k 40 "$budget" "$bin" eval ruler --device "$device" --lengths "$len" --samples "$samples" \
			--methods "$methods" --compression 0.5,0.8,0.9 --tasks "$task" --out "$dir" \
			>"$dir/stdout.txt" 2>"$dir/stderr.txt" &
		pids+=($!)
	done
done
for p in "${pids[@]}"; do wait "$p"; done
for d in "$out"/*/; do
	# The progress bar redraws with \r: keep the lines that are not the bar.
	tr '\r' '\n' <"$d/stderr.txt" | grep -v '^eval ruler\|^ *$' >"$d/log.txt"
	echo "$d: $(cat "$d/results.jsonl" 2>/dev/null | wc -l) cells; $(grep 'eval: time' "$d/log.txt" | tail -1)"
	# A shard that failed (not one stopped by the budget) says why in its log: show it.
	grep -m1 '^lukv-run: ' "$d/log.txt" && failed=1
done
if [[ -n "${OUT:-}" ]]; then
	tar czf "$OUT/eval.tgz" -C "$out" --exclude stderr.txt .
fi
exit "${failed:-0}"
