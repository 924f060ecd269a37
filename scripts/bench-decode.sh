#!/usr/bin/env bash
# The decode-step benchmark in one GPU call (about 6-8 minutes on an H200), from the
# repository root on the GPU machine, with gpubin/lukv-run and gpubin/cuda.test built
# elsewhere by scripts/build-cuda.sh (carried in gpubin/). For the Llama-3.1-8B shape
# (random weights, scripts/make_bench_model.py), batch 1, it measures and prints beside
# each other:
#   1. the copy bandwidth of this GPU (torch, a 4 GiB device-to-device copy, bytes read
#      + written, median of 20), the one bandwidth every floor below uses;
#   2. per-kernel bandwidth: the decode GEMV on the 8B matrices, bf16 and int8
#      (BenchmarkMatMulDecode8B, BenchmarkMatMulDecode8BInt8), and the decode attention
#      at 8k and 32k (BenchmarkAttentionDecodeKV), from gpubin/cuda.test;
#   3. lukv-run bench: the decode step at each context, full cache and 80% evicted, with
#      bf16 weights, and again with int8 weights when this lukv-run has `--weights`;
#      floor = (decode weight bytes + live KV bytes) / the measured bandwidth;
#   4. where the decode step's GPU time goes, at the first context, 80% evicted:
#      `nsys profile --stats=true` when nsys is on the machine, else lukv's own kernel
#      times (LUKV_CUDA_KERNEL_TIMES=1);
#   5. the peer: transformers + StaticCache + torch.compile (scripts/bench_peers.py,
#      static_compile) at the same contexts;
#   6. scripts/bench_decode_report.py: one table (and decode.json) of all of it.
# $OUT (default ./out) gets decode.md, decode.json and every raw file and log.
#
#   BENCH_CONTEXTS=8192,32768     contexts (tokens)
#   BENCH_DECODE_STEPS=32         timed decode steps per row
#   BENCH_WEIGHTS="bf16 int8"     lukv runs: weight types (int8 needs lukv-run bench
#                                 --weights); a ":splitk" suffix (bf16:splitk) runs that one
#                                 with the split-K decode attention (LUKV_CUDA_DECODE_ATTN=splitk;
#                                 about 70 s more per run)
#   LUKV_BENCH_SECONDS=60         lukv's budget per weight type (after loading)
#   PEER_BENCH_SECONDS=150        the peer's budget (after loading); 0 skips the peer
#   BENCH_MODEL_DIR=/tmp/lukv-bench-8b
#   PYTHON                        interpreter with torch and transformers
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-$root/out}
mkdir -p "$out"
log=$out/bench-decode.log
: >"$log"
contexts=${BENCH_CONTEXTS:-8192,32768}
steps=${BENCH_DECODE_STEPS:-32}
weights=${BENCH_WEIGHTS:-bf16 int8}
lukv_budget=${LUKV_BENCH_SECONDS:-60}
peer_budget=${PEER_BENCH_SECONDS:-150}
model=${BENCH_MODEL_DIR:-/tmp/lukv-bench-8b}
first_ctx=${contexts%%,*}
start=$SECONDS
note() { echo "[bench-decode +$((SECONDS - start))s] $*" | tee -a "$log" >&2; }

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
for b in lukv-run cuda.test; do
	[[ -x gpubin/$b ]] || { note "gpubin/$b missing: run scripts/build-cuda.sh where Go is and carry gpubin/"; exit 1; }
done
note "$(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader 2>&1 | head -1); python $python"

note "building kernels (kernels.log) and the model ($model) in parallel"
bash scripts/build-kernels.sh >"$out/kernels.log" 2>&1 &
kpid=$!
PYTHONUNBUFFERED=1 timeout -k 10 300 "$python" scripts/make_bench_model.py "$model" >>"$log" 2>&1
model_rc=$?
wait "$kpid" || { note "kernel build failed"; tail -n 30 "$out/kernels.log" >&2; exit 1; }
grep -E "gemv|attention_decode|rmsnorm|dequant" "$out/kernels.log" >>"$log"
[[ $model_rc == 0 && -e $model/.complete ]] || { note "make_bench_model.py failed (status $model_rc)"; exit 1; }
export LUKV_KERNELS=$root/kernels/build

note "copy bandwidth"
timeout -k 5 60 "$python" - >"$out/bandwidth.json" 2>>"$log" <<'PY'
import json, torch
n = 4 << 30
a = torch.randint(0, 256, (n,), dtype=torch.uint8, device="cuda")
b = torch.empty_like(a)
for _ in range(3):
    b.copy_(a)
times = []
for _ in range(20):
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); b.copy_(a); e.record(); e.synchronize()
    times.append(s.elapsed_time(e) / 1e3)
times.sort()
med = times[len(times) // 2]
print(json.dumps({"bytes": 2 * n, "seconds_median": med, "bytes_per_sec": 2 * n / med, "device": torch.cuda.get_device_name()}))
PY
bw=$("$python" -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["bytes_per_sec"]))' "$out/bandwidth.json" 2>/dev/null || echo 4300000000000)
note "copy bandwidth $bw B/s"

note "kernel benchmarks (GEMV bf16 and int8, decode attention)"
(cd backend/cuda && timeout -k 5 150 ../../gpubin/cuda.test -test.run '^$' \
	-test.bench 'MatMulDecode8B|AttentionDecodeKV|AttentionDecodeSplitK' -test.benchtime 30x) >"$out/kernels-bench.txt" 2>&1
note "kernel benchmarks: status $?"

have_weights=0
gpubin/lukv-run bench -h 2>&1 | grep -q -- '-weights' && have_weights=1
for run in $weights; do
	wt=${run%%:*}
	label=$wt
	attn=${LUKV_CUDA_DECODE_ATTN:-}
	if [[ $run == *:splitk ]]; then
		label=$wt-splitk
		attn=splitk
	fi
	args=()
	if [[ $wt != bf16 ]]; then
		if [[ $have_weights == 0 ]]; then
			note "lukv-run bench has no --weights flag: $wt weights not measured"
			continue
		fi
		args=(--weights "$wt")
	fi
	note "lukv-run bench, $label, contexts $contexts, budget ${lukv_budget}s"
	rm -f "$out/lukv-$label.json"
	LUKV_CUDA_DECODE_ATTN=$attn timeout -k 20 $((lukv_budget + 240)) gpubin/lukv-run bench --device cuda --model "$model" "${args[@]}" \
		--contexts "$contexts" --compression 0.8 --overhead-contexts none --decode-steps "$steps" \
		--bandwidth "$bw" --max-seconds "$lukv_budget" --json "$out/lukv-$label.json" >"$out/lukv-$label.md" 2>>"$log"
	note "lukv-run bench $label: status $?"
done

prof=(gpubin/lukv-run bench --device cuda --model "$model" --contexts "$first_ctx" --compression 0.8
	--overhead-contexts none --decode-steps 16 --warmup 64 --bandwidth "$bw")
if command -v nsys >/dev/null; then
	note "nsys profile of the decode step at $first_ctx"
	timeout -k 10 200 nsys profile --stats=true --force-overwrite true -o "$out/decode-nsys" \
		"${prof[@]}" --json "$out/nsys-run.json" >"$out/nsys-stats.txt" 2>&1
	note "nsys: status $? (nsys-stats.txt)"
else
	note "no nsys on this machine: lukv's kernel times (LUKV_CUDA_KERNEL_TIMES=1) at $first_ctx"
	LUKV_CUDA_KERNEL_TIMES=1 timeout -k 10 200 "${prof[@]}" --json "$out/kernel-times.json" >"$out/kernel-times.md" 2>>"$log"
	note "kernel times: status $?"
fi

if [[ $peer_budget != 0 ]]; then
	note "peer: transformers + StaticCache + torch.compile, budget ${peer_budget}s"
	rm -f "$out/peers.json"
	PYTHONUNBUFFERED=1 timeout -k 20 $((peer_budget + 150)) "$python" scripts/bench_peers.py --model "$model" \
		--contexts "$contexts" --configs static_compile --decode-steps "$steps" --max-seconds "$peer_budget" \
		--json "$out/peers.json" 2>>"$log"
	note "bench_peers.py: status $?"
fi

"$python" scripts/bench_decode_report.py --out "$out" --json "$out/decode.json" >"$out/decode.md"
cat "$out/decode.md"
note "done; $out/decode.md, $out/decode.json"
