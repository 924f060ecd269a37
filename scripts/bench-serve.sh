#!/usr/bin/env bash
# The serving benchmark in one command, on the GPU machine, from the repository root, with
# gpubin/lukv-run built elsewhere by scripts/build-cuda.sh (carried in gpubin/):
#   1. builds the kernels (scripts/build-kernels.sh) while scripts/make_bench_model.py
#      writes the random-weight Llama-3.1-8B-shaped model to $BENCH_MODEL_DIR (kept when
#      already complete);
#   2. starts `lukv-run serve --device cuda` on it with a KV pool of $BENCH_KV_MEMORY (small
#      on purpose: the pool, not the request count, should limit how many sequences run
#      at once, with few requests) and --step-log;
#   3. scripts/bench_serve.py client: per compression level (0, 0.8, 0.9 with the
#      expected-attention scorer), $BENCH_REQUESTS concurrent streamed requests of
#      $BENCH_PROMPT-token prompts and $BENCH_GEN generated tokens (ignore_eos); TTFT and
#      inter-token latency per request, most sequences decoded at once, decode tokens/s,
#      per-step time against its memory floor (weights + live KV over 4.3 TB/s);
#   4. stops the server, then scripts/bench_serve.py peer: transformers' batched generate
#      with a static cache at batch sizes $BENCH_PEER_BATCHES (an out-of-memory batch is
#      recorded and skipped);
#   5. scripts/bench_serve.py report: $OUT/bench-serve.json and the table
#      $OUT/bench-serve.md (printed).
# Everything else goes to $OUT/bench-serve.log and $OUT/serve.log. Each step has a time
# limit. With the defaults the whole run takes about 6-8 minutes (model + kernels ~1.5,
# server load ~0.5, three levels up to $BENCH_LEVEL_SECONDS each, peer up to
# $PEER_BENCH_SECONDS); scale up with the variables:
#
#   BENCH_PROMPT=32768            prompt tokens per request
#   BENCH_GEN=256                 generated tokens per request
#   BENCH_REQUESTS=3,10,18        requests per level (compressions 0, 0.8, 0.9)
#   BENCH_KV_MEMORY=12GiB         the server's KV pool (auto: the whole GPU but 12 GiB)
#   BENCH_LEVEL_SECONDS=110       a level's time limit (unfinished requests are cut)
#   BENCH_PEER_BATCHES=1,2,4      transformers' batch sizes
#   PEER_BENCH_SECONDS=120        the peer's budget after loading
#   BENCH_MODEL_DIR=/tmp/lukv-bench-8b
#   PYTHON                        interpreter with torch and transformers
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-$root/out}
mkdir -p "$out"
log=$out/bench-serve.log
: >"$log"
prompt=${BENCH_PROMPT:-32768}
gen=${BENCH_GEN:-256}
requests=${BENCH_REQUESTS:-3,10,18}
kvmem=${BENCH_KV_MEMORY:-12GiB}
level_secs=${BENCH_LEVEL_SECONDS:-110}
peer_batches=${BENCH_PEER_BATCHES:-1,2,4}
peer_secs=${PEER_BENCH_SECONDS:-120}
model=${BENCH_MODEL_DIR:-/tmp/lukv-bench-8b}
port=${BENCH_PORT:-8431}
start=$SECONDS
note() { echo "[bench-serve +$((SECONDS - start))s] $*" | tee -a "$log" >&2; }

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

note "building kernels and the model ($model) in parallel"
bash scripts/build-kernels.sh >"$out/kernels.log" 2>&1 &
kpid=$!
PYTHONUNBUFFERED=1 timeout -k 10 300 "$python" scripts/make_bench_model.py "$model" 2>&1 | tee -a "$log"
model_rc=${PIPESTATUS[0]}
if ! wait "$kpid"; then
	note "kernel build failed:"
	tail -n 30 "$out/kernels.log" >&2
	exit 1
fi
if [[ $model_rc != 0 || ! -e $model/.complete ]]; then
	note "make_bench_model.py failed (status $model_rc)"
	exit 1
fi
export LUKV_KERNELS=$root/kernels/build

note "lukv-run serve --device cuda --kv-memory $kvmem (serve.log)"
steps=$out/serve-steps.jsonl
rm -f "$steps" "$out/bench-serve-lukv.json" "$out/bench-serve-peer.json"
gpubin/lukv-run serve --device cuda --model "$model" --port "$port" --kv-memory "$kvmem" --max-running 64 \
	--max-waiting 256 --step-log "$steps" >"$out/serve.log" 2>&1 &
spid=$!
ready=0
for _ in $(seq 1 240); do
	if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
		ready=1
		break
	fi
	if ! kill -0 "$spid" 2>/dev/null; then
		break
	fi
	sleep 1
done
if [[ $ready != 1 ]]; then
	note "the server did not come up:"
	tail -n 20 "$out/serve.log" >&2
	kill "$spid" 2>/dev/null
	exit 1
fi
note "server up: $(grep -m1 serving "$out/serve.log")"

PYTHONUNBUFFERED=1 timeout -k 10 $((3 * level_secs + 60)) "$python" scripts/bench_serve.py client --url "http://127.0.0.1:$port" \
	--model "$model" --step-log "$steps" --requests "$requests" --prompt-tokens "$prompt" --gen-tokens "$gen" \
	--level-seconds "$level_secs" --json "$out/bench-serve-lukv.json" 2> >(tee -a "$log" >&2)
client_rc=$?
note "client: status $client_rc; stopping the server"
kill -INT "$spid" 2>/dev/null
for _ in $(seq 1 30); do
	kill -0 "$spid" 2>/dev/null || break
	sleep 1
done
kill -9 "$spid" 2>/dev/null
wait "$spid" 2>/dev/null
tail -n 5 "$out/serve.log" >>"$log"

note "transformers batched generate (static cache), batches $peer_batches, budget ${peer_secs}s"
PYTHONUNBUFFERED=1 timeout -k 10 $((peer_secs + 120)) "$python" scripts/bench_serve.py peer --model "$model" \
	--batches "$peer_batches" --prompt-tokens "$prompt" --gen-tokens "$gen" --max-seconds "$peer_secs" \
	--json "$out/bench-serve-peer.json" 2> >(tee -a "$log" >&2)
peer_rc=$?
note "peer: status $peer_rc"

"$python" scripts/bench_serve.py report --lukv "$out/bench-serve-lukv.json" --peer "$out/bench-serve-peer.json" \
	--json "$out/bench-serve.json" | tee "$out/bench-serve.md"
note "done: client status $client_rc, peer status $peer_rc; $out/bench-serve.md"
[[ $client_rc == 0 && $peer_rc == 0 ]]
