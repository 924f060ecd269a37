#!/usr/bin/env bash
# CPU speed of lukv beside the machine's memory-bandwidth floor (and llama.cpp when given):
# prefill and decode tokens/s and peak RSS for a ~512-token prompt and 64 greedy tokens, on
# the embedded default model (lukv-tiny) and on a random-weight 790 MB bf16 Llama (8 layers,
# hidden 2048, MLP 5632, 16/4 heads, vocabulary 8192; scripts/make-cpu-bench-model).
#
#   bash scripts/bench-cpu.sh            # from the repository root
#
# Settings (environment):
#   BENCH_DIR=/tmp/lukv-bench-cpu   binaries, the 790 MB model (kept between runs), GGUF files
#   BENCH_ROUNDS=3                  rounds; each round runs every configuration once, in turn
#                                   (interleaved, so load on a shared machine hits all alike);
#                                   the table reports medians
#   BENCH_THREADS=2                 threads for lukv (--threads) and llama.cpp (-t)
#   BENCH_MODELS="tiny 790m"
#   LLAMA_BENCH=/path/llama-bench   llama.cpp's llama-bench, built elsewhere; when set, each
#                                   round also runs it on lukv-run convert's BF16 and Q8_0
#                                   GGUF files of the same models (-p prompt tokens -n 64)
#
# Each lukv row is `lukv-run generate --json` under /usr/bin/time (peak RSS); int8 rows run
# when lukv-run generate has --weights (int8 weights quantized at load). The "go bench" rows
# are backend/cpu's BenchmarkForward (512 prompt tokens, 64 decode steps, no tokenizer or
# sampling) with the weights as loaded, with the BF16Dot option (activations rounded to
# bf16 for AVX512-BF16 dot products, as llama.cpp computes BF16 models) and as int8. The bandwidth row is
# `go test ./backend/cpu/vec -bench MemoryRead` (a 512 MiB read on the same threads), run in
# every round; the decode floor of a model is its weight bytes / that bandwidth.
set -euo pipefail

dir=${BENCH_DIR:-/tmp/lukv-bench-cpu}
rounds=${BENCH_ROUNDS:-3}
threads=${BENCH_THREADS:-2}
models=${BENCH_MODELS:-tiny 790m}
mkdir -p "$dir/runs"
root=$(pwd)
[ -f go.mod ] && [ -d backend/cpu/vec ] || { echo "bench-cpu.sh: run it from the repository root" >&2; exit 1; }

echo "== build"
go build -o "$dir/lukv-run" ./cmd/lukv-run
go test -c -o "$dir/vec.test" ./backend/cpu/vec
go test -c -o "$dir/cpu.test" ./backend/cpu
if [[ " $models " == *" 790m "* ]] && [ ! -f "$dir/bench-790m/.complete" ]; then
	go run ./scripts/make-cpu-bench-model -out "$dir/bench-790m"
fi
model_dir() { if [ "$1" = tiny ]; then echo ""; else echo "$dir/bench-$1"; fi; }

# About 512 tokens of lukv-tiny's tokenizer (both models use it) from the evaluation text.
head -c 1880 eval/corpus/eval_haystack_devil.txt > "$dir/prompt.txt"

int8=0
if "$dir/lukv-run" generate -h 2>&1 | grep -q -- '-weights'; then int8=1; fi

if [ -n "${LLAMA_BENCH:-}" ]; then
	for m in $models; do
		for t in bf16 q8_0; do
			f="$dir/$m-$t.gguf"
			md=$(model_dir "$m")
			[ -f "$f" ] || "$dir/lukv-run" convert --to gguf ${md:+--model "$md"} --type "$t" --out "$f"
		done
	done
fi

lukv_run() { # model label extra-flags... -> runs/<model>-<label>-<round>.json, .time
	local m=$1 label=$2 r=$3; shift 3
	local md; md=$(model_dir "$m")
	/usr/bin/time -f '%M' -o "$dir/runs/$m-$label-$r.time" \
		"$dir/lukv-run" generate ${md:+--model "$md"} --prompt-file "$dir/prompt.txt" \
		--max-new-tokens 64 --threads "$threads" --json "$@" > "$dir/runs/$m-$label-$r.json"
}

for r in $(seq 1 "$rounds"); do
	echo "== round $r of $rounds"
	"$dir/vec.test" -test.run XXX -test.bench MemoryRead -test.benchtime 5x -test.cpu "$threads" \
		| tee "$dir/runs/bandwidth-$r.txt" | grep MemoryRead
	for m in $models; do
		LUKV_BENCH_MODEL=$(model_dir "$m") "$dir/cpu.test" -test.run XXX -test.bench Forward \
			-test.benchtime 1x -test.cpu "$threads" > "$dir/runs/$m-gobench-$r.txt"
		lukv_run "$m" bf16 "$r"
		if [ "$int8" = 1 ]; then lukv_run "$m" int8 "$r" --weights int8; fi
		if [ -n "${LLAMA_BENCH:-}" ]; then
			ptok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["prompt_tokens"])' "$dir/runs/$m-bf16-$r.json")
			for t in bf16 q8_0; do
				"$LLAMA_BENCH" -m "$dir/$m-$t.gguf" -p "$ptok" -n 64 -t "$threads" -r 1 -o json \
					> "$dir/runs/$m-llama-$t-$r.json" 2> "$dir/runs/$m-llama-$t-$r.log" || echo "llama-bench failed: $dir/runs/$m-llama-$t-$r.log"
			done
		fi
	done
done

echo "== results (medians of $rounds rounds, $threads threads)"
python3 - "$dir" "$rounds" "$models" <<'PY'
import json, os, re, statistics, sys
d, rounds, models = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
runs = os.path.join(d, "runs")
med = lambda xs: statistics.median(xs) if xs else None
bw = []
for r in range(1, rounds + 1):
    m = re.search(r"([\d.]+) MB/s", open(os.path.join(runs, f"bandwidth-{r}.txt")).read())
    bw.append(float(m.group(1)) * 1e6)
bwm = med(bw)
print(f"memory read bandwidth: {bwm/1e9:.1f} GB/s (median; rounds: {', '.join(f'{b/1e9:.1f}' for b in bw)})")
def weight_bytes(m):
    if m == "tiny":
        return None
    return sum(os.path.getsize(os.path.join(d, f"bench-{m}", f)) for f in os.listdir(os.path.join(d, f"bench-{m}")) if f.endswith(".safetensors"))
print()
print("| model | runtime | weights | prompt tokens | prefill tok/s | decode tok/s | decode floor tok/s | peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|")
for m in models:
    wb = weight_bytes(m)
    for label in ["bf16", "int8"]:
        pre, dec, rss, pt = [], [], [], None
        for r in range(1, rounds + 1):
            p = os.path.join(runs, f"{m}-{label}-{r}.json")
            if not os.path.exists(p):
                continue
            t = open(p).read()
            j = json.loads(t[t.index("{"):t.rindex("}") + 1])
            pre.append(j["prefill_tokens_per_sec"]); dec.append(j["decode_tokens_per_sec"]); pt = j["prompt_tokens"]
            rss.append(int(open(os.path.join(runs, f"{m}-{label}-{r}.time")).read().split()[-1]) / 1024)
        if not pre:
            continue
        floor = "" if wb is None else f"{bwm / (wb if label == 'bf16' else wb * 0.5 * 1.125):.1f}"
        print(f"| {m} | lukv | {label} | {pt} | {med(pre):.0f} | {med(dec):.1f} | {floor} | {med(rss):.0f} |")
    gb = {}
    for r in range(1, rounds + 1):
        p = os.path.join(runs, f"{m}-gobench-{r}.txt")
        if os.path.exists(p):
            for row in re.finditer(r"BenchmarkForward/([\w-]+)/(prefill|decode)\S*\s+\d+\s+\d+ ns/op\s+([\d.]+) tok/s", open(p).read()):
                gb.setdefault(row.group(1), {}).setdefault(row.group(2), []).append(float(row.group(3)))
    for w, v in gb.items():
        print(f"| {m} | lukv (go bench) | {w} | 512 | {med(v.get('prefill', [0])):.0f} | {med(v.get('decode', [0])):.1f} | | |")
    for t in ["bf16", "q8_0"]:
        pre, dec = [], []
        for r in range(1, rounds + 1):
            p = os.path.join(runs, f"{m}-llama-{t}-{r}.json")
            if not os.path.exists(p):
                continue
            try:
                for row in json.load(open(p)):
                    (pre if row.get("n_prompt", 0) > 0 else dec).append(row["avg_ts"])
            except (ValueError, KeyError):
                pass
        if pre or dec:
            print(f"| {m} | llama.cpp | {t} | | {med(pre) or 0:.0f} | {med(dec) or 0:.1f} | | |")
PY
