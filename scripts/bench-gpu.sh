#!/usr/bin/env bash
# The GPU benchmark in one command, on the GPU machine, from the repository root, with
# gpubin/lukv-run built elsewhere by scripts/build-cuda.sh (carried in gpubin/):
#   1. builds the kernels (scripts/build-kernels.sh) while
#   2. scripts/make_bench_model.py writes the random-weight Llama-3.1-8B-shaped model to
#      $BENCH_MODEL_DIR (local disk, ~16 GB; kept when already complete);
#   3. gpubin/lukv-run bench --device cuda on it (prefill, decode full and compressed,
#      eviction overhead, memory; bf16 tensor-core matmuls unless
#      LUKV_CUDA_TENSOR_CORES=0);
#   4. scripts/bench_peers.py: transformers SDPA + DynamicCache, and StaticCache +
#      torch.compile, at the same contexts;
#   5. scripts/bench_report.py: one Markdown table of lukv vs peers vs floors and the
#      targets met or missed, printed and written to $OUT/bench.md.
# $OUT gets bench.md, lukv-bench.json, lukv-bench.md, peers.json, bench.log and
# kernels.log. Each step has a time limit and writes what it finished, so a slow
# context costs its budget, not the run. Total: about 7-8 minutes with the defaults.
#
#   BENCH_CONTEXTS=8192,32768,65536   contexts (tokens)
#   BENCH_OVERHEAD_CONTEXTS=8192      contexts of the eviction-overhead measurement (a
#                                     second prefill with the expected-attention scorer,
#                                     which scores on the CPU); "none" to skip
#   BENCH_DECODE_STEPS=32             timed decode steps per row
#   LUKV_BENCH_SECONDS=140            lukv's measurement budget (after loading)
#   PEER_BENCH_SECONDS=140            the peers' budget (after loading)
#   BENCH_MODEL_DIR=/tmp/lukv-bench-8b
#   PYTHON                            interpreter with torch and transformers (default:
#                                     python3, else /opt/torch/.venv/bin/python)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-$root/out}
mkdir -p "$out"
log=$out/bench.log
: >"$log"
contexts=${BENCH_CONTEXTS:-8192,32768,65536}
overhead=${BENCH_OVERHEAD_CONTEXTS:-8192}
steps=${BENCH_DECODE_STEPS:-32}
lukv_budget=${LUKV_BENCH_SECONDS:-140}
peer_budget=${PEER_BENCH_SECONDS:-140}
model=${BENCH_MODEL_DIR:-/tmp/lukv-bench-8b}
start=$SECONDS
note() { echo "[bench-gpu +$((SECONDS - start))s] $*" | tee -a "$log" >&2; }

python=${PYTHON:-}
if [[ -z $python ]]; then
	for p in python3 /opt/torch/.venv/bin/python; do
		if command -v "$p" >/dev/null && "$p" -c 'import torch, transformers, safetensors' 2>/dev/null; then
			python=$p
			break
		fi
	done
fi
if [[ -z $python ]]; then
	note "no Python with torch, transformers and safetensors (set PYTHON)"
	exit 1
fi
if [[ ! -x gpubin/lukv-run ]]; then
	note "gpubin/lukv-run missing: run scripts/build-cuda.sh where Go is and carry gpubin/"
	exit 1
fi
note "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1); python $python"

note "building kernels (kernels.log) and the model ($model) in parallel"
bash scripts/build-kernels.sh >"$out/kernels.log" 2>&1 &
kpid=$!
PYTHONUNBUFFERED=1 timeout -k 10 300 "$python" scripts/make_bench_model.py "$model" 2>&1 | tee -a "$log"
model_rc=${PIPESTATUS[0]}
if ! wait "$kpid"; then
	note "kernel build failed:"
	tail -n 30 "$out/kernels.log" >&2
	exit 1
fi
grep "registers," "$out/kernels.log" >>"$log"
if [[ $model_rc != 0 || ! -e $model/.complete ]]; then
	note "make_bench_model.py failed (status $model_rc)"
	exit 1
fi
export LUKV_KERNELS=$root/kernels/build

note "lukv-run bench --device cuda, contexts $contexts, budget ${lukv_budget}s"
rm -f "$out/lukv-bench.json"
timeout -k 20 $((lukv_budget + 180)) gpubin/lukv-run bench --device cuda --model "$model" --contexts "$contexts" \
	--overhead-contexts "$overhead" --decode-steps "$steps" --max-seconds "$lukv_budget" \
	--json "$out/lukv-bench.json" >"$out/lukv-bench.md" 2> >(tee -a "$log" >&2)
lukv_rc=$?
note "lukv-run bench: status $lukv_rc"

note "transformers peers, budget ${peer_budget}s"
rm -f "$out/peers.json"
PYTHONUNBUFFERED=1 timeout -k 20 $((peer_budget + 150)) "$python" scripts/bench_peers.py --model "$model" --contexts "$contexts" \
	--decode-steps "$steps" --max-seconds "$peer_budget" --json "$out/peers.json" 2> >(tee -a "$log" >&2)
peer_rc=$?
note "bench_peers.py: status $peer_rc"

"$python" scripts/bench_report.py "$out/lukv-bench.json" "$out/peers.json" >"$out/bench.md"
cat "$out/bench.md"
note "done: lukv status $lukv_rc, peers status $peer_rc; $out/bench.md"
[[ $lukv_rc == 0 && $peer_rc == 0 ]]
