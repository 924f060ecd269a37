#!/usr/bin/env bash
# Chunked prefill with eviction on the GPU, in one command, on the GPU machine, from the
# repository root, with gpubin/lukv-run built elsewhere by scripts/build-cuda.sh:
#
#   bash scripts/bench-chunked.sh
#
# Built where Go is, next to scripts/build-cuda.sh's binaries (carried in gpubin/):
#   CGO_ENABLED=1 CGO_CFLAGS="-O2 -I$PWD/backend/cuda/cudacompat" \
#     go test -c -tags cuda -o gpubin/generate-cuda.test ./generate/
# which this script runs first (chunked prefill on the GPU against the CPU: logits
# without eviction, kept tokens with it; $OUT/chunked-cuda-test.log).
#
#   1. builds the kernels (scripts/build-kernels.sh) and the random-weight
#      Llama-3.1-8B-shaped model (scripts/make_bench_model.py, kept when complete);
#   2. makes $model-long: the same weights (symlinks) with max_position_embeddings raised
#      to the longest context (Llama 3.1's rope scaling is kept; positions past 131072
#      extrapolate it, which does not change the cost), and prompt files of about each
#      context's length from the evaluation haystack;
#   3. per context and ratio: gpubin/lukv-run generate --device cuda --chunk $chunk
#      --method $method --compression r --json (prefill chunk by chunk, evicting after
#      every chunk, then 16 greedy tokens), with nvidia-smi sampling the GPU's memory every
#      100 ms; then the full cache chunked (--method full) and one-shot (--chunk = the
#      context, lukv's prefill before chunking) where they fit;
#   4. transformers + SDPA (scripts/bench_peers.py --configs sdpa_dynamic) at the
#      contexts up to $peer_max;
#   5. scripts/bench_chunked_report.py: one Markdown table (peak device memory against
#      weights + kept KV + one chunk + 1 GiB, prefill time, decode, per-chunk time as the
#      context grows), printed and written to $OUT/bench-chunked.md.
#
# A configuration that does not fit is refused by lukv-run's memory check before it
# allocates (its error is in the log and the table says "does not fit"), or runs out of
# memory (the table says OOM). Each run has a time limit.
#
# One call on the GPU machine fits in about 9 minutes with the defaults (runs in order of
# importance; a run that would start after BENCH_DEADLINE seconds, or with less than 30 s
# left before BENCH_END, is reported "skipped"; a run cut by the end says "timeout").
# For everything, raise BENCH_DEADLINE/BENCH_END or split the contexts over two calls.
# Every chunked run's JSON has, per chunk, its total, forward, scoring and eviction
# (keep/compact) time, the device memory in use and the cache's reallocations; the run
# named timed-* repeats one configuration with LUKV_CUDA_KERNEL_TIMES=1, so its chunks
# also say the GPU time of attention, compaction and the rest (timing slows it down: its
# speed is not comparable).
#
#   BENCH_CONTEXTS=32768,131072,524288,1048576
#   BENCH_RATIOS=0.8,0.9
#   BENCH_CHUNK=4096
#   BENCH_METHOD=knorm            knorm scores each token once, from its chunk (no reads of
#                                 the cache); snapkv/expected-attention re-score the kept
#                                 keys on the host every chunk (slow at long contexts)
#   BENCH_FULL_CONTEXTS=32768,131072   contexts of the full-cache chunked rows ("none" to skip)
#   BENCH_ONESHOT_CONTEXTS=none        contexts of one-shot full-cache prefill rows
#   BENCH_PEER_CONTEXTS=32768,131072   contexts of transformers + SDPA ("none" to skip)
#   BENCH_TIMED=131072:0.9        context:ratio of the kernel-timed run ("none" to skip)
#   BENCH_PARITY=0                1: run gpubin/generate-cuda.test first (the parity tests)
#   BENCH_RUN_SECONDS=330         limit per lukv-run (1M at 0.9 needs most of it)
#   BENCH_DEADLINE=480            no lukv-run starts after this many seconds
#   BENCH_END=540                 every run is cut to end by this many seconds
#   BENCH_MODEL_DIR=/tmp/lukv-bench-8b
#   PYTHON                        interpreter with torch and transformers
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-$root/out}
mkdir -p "$out"
log=$out/bench-chunked.log
: >"$log"
contexts=${BENCH_CONTEXTS:-32768,131072,524288,1048576}
ratios=${BENCH_RATIOS:-0.8,0.9}
chunk=${BENCH_CHUNK:-4096}
method=${BENCH_METHOD:-knorm}
full_contexts=${BENCH_FULL_CONTEXTS:-32768,131072}
oneshot_contexts=${BENCH_ONESHOT_CONTEXTS:-none}
peer_contexts=${BENCH_PEER_CONTEXTS:-32768,131072}
timed=${BENCH_TIMED:-131072:0.9}
limit=${BENCH_RUN_SECONDS:-330}
deadline=${BENCH_DEADLINE:-480}
hard_end=${BENCH_END:-540}
model=${BENCH_MODEL_DIR:-/tmp/lukv-bench-8b}
start=$SECONDS
note() { echo "[bench-chunked +$((SECONDS - start))s] $*" | tee -a "$log" >&2; }

python=${PYTHON:-}
if [[ -z $python ]]; then
	for p in python3 /opt/torch/.venv/bin/python; do
		if command -v "$p" >/dev/null && "$p" -c 'import torch, transformers, safetensors' 2>/dev/null; then
			python=$p
			break
		fi
	done
fi
[[ -n $python ]] || { note "no Python with torch, transformers and safetensors (set PYTHON)"; exit 1; }
[[ -x gpubin/lukv-run ]] || { note "gpubin/lukv-run missing: run scripts/build-cuda.sh where Go is and carry gpubin/"; exit 1; }
note "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

bash scripts/build-kernels.sh >"$out/kernels.log" 2>&1 &
kpid=$!
PYTHONUNBUFFERED=1 timeout -k 10 300 "$python" scripts/make_bench_model.py "$model" 2>&1 | tee -a "$log"
if ! wait "$kpid"; then
	note "kernel build failed:"; tail -n 30 "$out/kernels.log" >&2; exit 1
fi
[[ -e $model/.complete ]] || { note "make_bench_model.py failed"; exit 1; }
export LUKV_KERNELS=$root/kernels/build

if [[ ${BENCH_PARITY:-0} != 1 ]]; then
	note "parity tests skipped (BENCH_PARITY=1 runs gpubin/generate-cuda.test)"
elif [[ -x gpubin/generate-cuda.test ]]; then
	(cd generate && timeout -k 10 600 ../gpubin/generate-cuda.test -test.run CUDA -test.v) >"$out/chunked-cuda-test.log" 2>&1
	note "chunked prefill GPU tests: status $? ($(grep -cE '^--- PASS' "$out/chunked-cuda-test.log") passed, $(grep -cE '^--- FAIL' "$out/chunked-cuda-test.log") failed; chunked-cuda-test.log)"
else
	note "gpubin/generate-cuda.test missing: the GPU parity tests of chunked prefill are skipped (see the header)"
fi

# The long-context copy of the model and the prompts.
longest=$(tr ',' '\n' <<<"$contexts,$full_contexts,$oneshot_contexts" | grep -v none | sort -n | tail -1)
long=$model-long
mkdir -p "$long" "$out/prompts"
for f in "$model"/*; do
	[[ $(basename "$f") == config.json ]] || ln -sf "$f" "$long/"
done
"$python" - "$model/config.json" "$long/config.json" "$((longest + 8192))" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["max_position_embeddings"] = max(c["max_position_embeddings"], int(sys.argv[3]))
json.dump(c, open(sys.argv[2], "w"), indent=2)
PY
prompt_for() { # prompt_for TOKENS: a file of about TOKENS tokens (3.4 characters a token)
	local p=$out/prompts/$1.txt
	if [[ ! -s $p ]]; then
		"$python" - "$1" "$p" <<'PY'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
hay = open("eval/corpus/eval_haystack_devil.txt").read()
want = int(n * 353383 / 103395 * 0.97)  # the haystack is 353383 characters, 103395 tokens
text = (hay * (want // len(hay) + 1))[:want]
open(path, "w").write(text)
PY
	fi
	echo "$p"
}

# run NAME ARGS...: one lukv-run generate with the GPU's memory sampled; skipped (a .run
# with rc "skipped") once the deadline has passed. LUKV_CUDA_KERNEL_TIMES passes through.
run() {
	local name=$1
	shift
	local left=$((hard_end - (SECONDS - start)))
	if ((SECONDS - start > deadline || left < 30)); then
		echo "{\"name\": \"$name\", \"rc\": \"skipped\", \"seconds\": 0, \"baseline_mib\": 0, \"args\": \"$*\"}" >"$out/$name.run"
		note "$name: skipped (past the ${deadline} s deadline)"
		return
	fi
	local base
	base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
	nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$out/$name.mem" &
	local smi=$!
	local t0=$SECONDS
	timeout -k 10 "$((left < limit ? left : limit))" gpubin/lukv-run generate --device cuda --model "$long" --max-new-tokens 16 --json "$@" >"$out/$name.json" 2>"$out/$name.err"
	local rc=$?
	kill "$smi" 2>/dev/null
	wait "$smi" 2>/dev/null
	echo "{\"name\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0)), \"baseline_mib\": $base, \"args\": \"$*\"}" >"$out/$name.run"
	note "$name: status $rc in $((SECONDS - t0)) s, peak $(sort -n "$out/$name.mem" | tail -1) MiB used (baseline $base); $(tail -c 300 "$out/$name.err" | tr '\n' ' ')"
}
has() { [[ ,$1, == *,$2,* ]]; }
evict() { # evict CONTEXT RATIO
	run "lukv-$method-$2-$1" --prompt-file "$(prompt_for "$1")" --chunk "$chunk" --method "$method" --compression "$2"
}
full() { # full CONTEXT
	run "full-chunked-$1" --prompt-file "$(prompt_for "$1")" --chunk "$chunk"
}

# In order of importance: the 128k speed comparison, 32k, the 1M target at the highest
# ratio, the kernel-timed run, transformers + SDPA, then 512k and the other ratios of 1M.
ratios_desc=$(tr ',' '\n' <<<"$ratios" | sort -r)
for n in 131072 32768; do
	has "$contexts" "$n" || continue
	for r in $ratios_desc; do evict "$n" "$r"; done
	has "$full_contexts" "$n" && full "$n"
done
has "$contexts" 1048576 && evict 1048576 "$(head -1 <<<"$ratios_desc")"
if [[ $timed != none ]]; then
	LUKV_CUDA_KERNEL_TIMES=1 run "timed-lukv-$method-${timed#*:}-${timed%%:*}" --prompt-file "$(prompt_for "${timed%%:*}")" \
		--chunk "$chunk" --method "$method" --compression "${timed#*:}"
fi
left=$((hard_end - (SECONDS - start)))
if [[ $peer_contexts != none ]] && ((left < 60)); then
	note "transformers + SDPA skipped ($left s left)"
elif [[ $peer_contexts != none ]]; then
	note "transformers + SDPA at $peer_contexts"
	timeout -k 10 "$((left < 120 ? left : 120))" "$python" scripts/bench_peers.py --model "$model" --contexts "$peer_contexts" --configs sdpa_dynamic \
		--decode-steps 16 --json "$out/peers.json" 2>&1 | tail -n 20 | tee -a "$log"
fi
for n in ${contexts//,/ }; do
	[[ $n == 131072 || $n == 32768 || $n == 1048576 ]] && continue
	for r in $ratios_desc; do evict "$n" "$r"; done
	has "$full_contexts" "$n" && full "$n"
done
for n in ${full_contexts//,/ }; do
	[[ $n == none ]] || has "$contexts" "$n" || full "$n"
done
if has "$contexts" 1048576; then
	for r in $(tail -n +2 <<<"$ratios_desc"); do evict 1048576 "$r"; done
fi
if [[ $oneshot_contexts != none ]]; then
	for n in ${oneshot_contexts//,/ }; do
		run "full-oneshot-$n" --prompt-file "$(prompt_for "$n")" --chunk "$((n + 8192))"
	done
fi
"$python" scripts/bench_chunked_report.py "$out" "$model" "$chunk" | tee "$out/bench-chunked.md"
note "done: $out/bench-chunked.md"
