#!/usr/bin/env bash
# Runs lukv's GPU checks on the GPU machine, from the repository root, with the binaries
# that scripts/build-cuda.sh built elsewhere in gpubin/:
#   1. builds the kernels (scripts/build-kernels.sh, nvcc);
#   2. runs gpubin/cuda.test -test.v (conformance suite, dtype and attention cases against
#      the CPU backend, memory release, out-of-memory, golden models);
#   3. runs the benchmarks (decode/prefill matmul, decode attention at 32k);
#   4. runs compute-sanitizer's memcheck over the small tests and racecheck over the
#      shared-memory kernels, where the tool works;
#   5. if gpubin/lukv-run is there, generates with --device cuda and --device cpu.
# GPU_TEST_QUICK=1 skips steps 3 and 4 (for a short device call; the table says so).
# Everything goes to $OUT/gpu-test.log (OUT defaults to ./out); a pass/fail table is
# printed last. Exit status: non-zero when the kernels do not build or a test fails.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-$root/out}
mkdir -p "$out"
log=$out/gpu-test.log
: >"$log"
rows=()  # "name|status|detail"
note() { echo "$*" | tee -a "$log"; }

note "== gpu-test $(date -u +%FT%TZ)"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1 | tee -a "$log"

note "== build kernels"
if bash scripts/build-kernels.sh >>"$log" 2>&1; then
	rows+=("build-kernels|PASS|$(ls kernels/build/*.cubin kernels/build/*.ptx 2>/dev/null | wc -l) modules")
	grep "registers," "$log" | tail -n 40
else
	rows+=("build-kernels|FAIL|see $log")
	tail -n 40 "$log"
	printf '%-40s %s\n' "build-kernels" "FAIL"
	exit 1
fi
export LUKV_KERNELS=$root/kernels/build

if [[ ! -x gpubin/cuda.test ]]; then
	note "gpubin/cuda.test missing: run scripts/build-cuda.sh where Go is and carry gpubin/"
	exit 1
fi

note "== tests"
testlog=$out/cuda-test.log
(cd backend/cuda && timeout 420 ../../gpubin/cuda.test -test.v -test.count=1 -test.timeout=400s) >"$testlog" 2>&1
test_rc=$?
cat "$testlog" >>"$log"
# One row per top-level test and per subtest.
while IFS= read -r line; do
	name=$(sed -E 's/^ *--- (PASS|FAIL|SKIP): ([^ ]+) .*/\2/' <<<"$line")
	status=$(sed -E 's/^ *--- (PASS|FAIL|SKIP): .*/\1/' <<<"$line")
	secs=$(sed -E 's/.*\(([0-9.]+s)\).*/\1/' <<<"$line")
	rows+=("$name|$status|$secs")
done < <(grep -E '^ *--- (PASS|FAIL|SKIP): ' "$testlog")
if [[ $test_rc != 0 ]]; then
	rows+=("cuda.test exit|FAIL|status $test_rc")
	grep -E -B2 -A12 '^(panic|fatal error)|--- FAIL|_test.go:[0-9]+:' "$testlog" | head -n 80
fi

if [[ ${GPU_TEST_QUICK:-0} == 1 ]]; then
	rows+=("benchmarks, memcheck, racecheck|INFO|skipped (GPU_TEST_QUICK=1)")
else
note "== benchmarks"
(cd backend/cuda && timeout 90 ../../gpubin/cuda.test -test.run '^$' -test.bench . -test.benchtime 20x) 2>&1 | tee -a "$log" | grep -E '^Benchmark|FAIL|panic' || rows+=("benchmarks|FAIL|no output")

note "== compute-sanitizer memcheck (small tests)"
if command -v compute-sanitizer >/dev/null; then
	# --report-api-errors no: API errors the backend expects and handles would fill the
	# print limit before any memory error. (Kernel lookups no longer probe every module,
	# the main source of them: backend/cuda/registry.go looks each kernel up in its own.)
	(cd backend/cuda && timeout 200 compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 99 \
		../../gpubin/cuda.test -test.run 'TestConformance|TestMatMulDTypes|TestEmbedDTypes|TestAttentionAgainstCPU/small|TestGEMVFast|TestDecodeAttention|TestFusedRoPEAppend|TestKVBF16CacheOps|TestDeviceSelectAndCompact|TestPagedPoolFullAndRelease|TestPagedAttentionAgainstCPU/bf16_true/case[0134]' -test.count=1) >"$out/memcheck.log" 2>&1
	mc=$?
	cat "$out/memcheck.log" >>"$log"
	case $mc in
	0) rows+=("memcheck|PASS|$(grep -m1 'ERROR SUMMARY' "$out/memcheck.log")") ;;
	99) rows+=("memcheck|FAIL|$(grep -m1 'ERROR SUMMARY' "$out/memcheck.log")"); grep -m5 -A6 'Invalid\|Error' "$out/memcheck.log" ;;
	*) rows+=("memcheck|INFO|did not run cleanly (status $mc), see memcheck.log") ;;
	esac
else
	rows+=("memcheck|INFO|compute-sanitizer not found")
fi

note "== compute-sanitizer racecheck (shared-memory kernels)"
if command -v compute-sanitizer >/dev/null; then
	# Small cases only (-test.short drops the long score tests' contexts): racecheck runs
	# kernels hundreds of times slower (all of TestDecodeAttention did not finish in 150 s).
	(cd backend/cuda && timeout 200 compute-sanitizer --tool racecheck --report-api-errors no --error-exitcode 99 \
		../../gpubin/cuda.test -test.run 'TestAttentionTCAgainstCPU/n100|TestDecodeAttention/bf16_(false|true)/case(2|4|6)|TestDeviceScorersMatchHost|TestExpectedAttentionTensorCores|TestDeviceSelectAndCompact' -test.short -test.count=1) >"$out/racecheck.log" 2>&1
	rc=$?
	cat "$out/racecheck.log" >>"$log"
	case $rc in
	0) rows+=("racecheck|PASS|$(grep -m1 'RACECHECK SUMMARY' "$out/racecheck.log")") ;;
	99) rows+=("racecheck|FAIL|$(grep -m1 'RACECHECK SUMMARY' "$out/racecheck.log")") ;;
	*) rows+=("racecheck|INFO|did not run cleanly (status $rc), see racecheck.log") ;;
	esac
fi

fi # GPU_TEST_QUICK

if [[ -x gpubin/lukv-run ]]; then
	note "== lukv-run generate (embedded default model)"
	args=(generate --max-new-tokens 24 --prompt "The old lighthouse keeper" --json)
	# float32 KV and matmuls on the GPU: the tokens must equal the CPU's exactly.
	export LUKV_CUDA_KV=f32 LUKV_CUDA_TENSOR_CORES=0
	gpu_out=$(timeout 45 gpubin/lukv-run "${args[@]}" --device cuda 2>>"$log")
	g=$?
	cpu_out=$(timeout 45 gpubin/lukv-run "${args[@]}" --device cpu 2>>"$log")
	echo "cuda: $gpu_out" >>"$log"
	echo "cpu:  $cpu_out" >>"$log"
	if [[ $g != 0 ]]; then
		rows+=("lukv-run --device cuda|FAIL|status $g")
	else
		# --json output is indented: join it to one line before picking the token list.
		toks() { tr -d ' \n' <<<"$1" | sed -E 's/.*"tokens":(\[[^]]*\]).*/\1/'; }
		rate=$(tr -d ' \n' <<<"$gpu_out" | sed -E 's/.*"decode_tokens_per_sec":([0-9.]+).*/\1/')
		if [[ -n "$gpu_out" && "$(toks "$gpu_out")" == "$(toks "$cpu_out")" ]]; then
			rows+=("lukv-run --device cuda|PASS|same tokens as --device cpu; decode $rate tok/s")
		else
			rows+=("lukv-run --device cuda|INFO|ran; tokens differ from cpu (see log)")
		fi
	fi

	note "== lukv-run generate with eviction (every scorer, every allocator, each compress-at)"
	# A needle question whose context is evicted at 80%, on both devices (float32 KV, no
	# tensor cores). Device scorers compute in float32 where the host may differ in the
	# last bits, so a near-tie can keep another token: a difference is INFO, a failure
	# to run is FAIL.
	ctx="The grass is green. The sky is blue. One of the special magic numbers for quiet-harbor is: 6038215. The sun is yellow. Here we go. There and back again."
	question="What is the special magic number for quiet-harbor mentioned in the provided text? The special magic number for quiet-harbor mentioned in the provided text is"
	for spec in expected-attention:uniform:context snapkv:uniform:context keydiff:uniform:context knorm:uniform:context \
		streaming:uniform:context tova:uniform:context h2o:uniform:context random:uniform:context \
		snapkv:pyramid:context expected-attention:adakv:context expected-attention:lukv:context keydiff:lukv:question \
		expected-attention:lukv:decode tova:uniform:decode; do
		IFS=: read -r method alloc at <<<"$spec"
		eargs=(generate --max-new-tokens 12 --prompt "$ctx" --question "$question" --method "$method" --allocator "$alloc"
			--compression 0.8 --compress-at "$at" --json)
		[[ $at == decode ]] && eargs+=(--every 4 --buffer 4)
		g_out=$(timeout 45 gpubin/lukv-run "${eargs[@]}" --device cuda 2>>"$log")
		g=$?
		c_out=$(timeout 45 gpubin/lukv-run "${eargs[@]}" --device cpu 2>>"$log")
		echo "$spec cuda: $(tr -d ' \n' <<<"$g_out")" >>"$log"
		echo "$spec cpu:  $(tr -d ' \n' <<<"$c_out")" >>"$log"
		name="generate --device cuda $method/$alloc@$at"
		if [[ $g != 0 || -z "$g_out" ]]; then
			rows+=("$name|FAIL|status $g (see log)")
		elif [[ "$(toks "$g_out")" == "$(toks "$c_out")" ]]; then
			rows+=("$name|PASS|same tokens as --device cpu")
		else
			rows+=("$name|INFO|ran; tokens differ from cpu (see log)")
		fi
	done
fi

echo
printf '%-52s %-5s %s\n' TEST RESULT DETAIL | tee -a "$log"
fails=0
for r in "${rows[@]}"; do
	IFS='|' read -r name status detail <<<"$r"
	printf '%-52s %-5s %s\n' "$name" "$status" "$detail" | tee -a "$log"
	[[ $status == FAIL ]] && fails=$((fails + 1))
done
echo "$(grep -c '|PASS|' <<<"$(printf '%s\n' "${rows[@]}")") passed, $fails failed" | tee -a "$log"
[[ $fails == 0 ]]
