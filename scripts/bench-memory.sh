#!/usr/bin/env bash
# Peak resident memory of `lukv-run generate` on a random-weight bf16 checkpoint, against
# the bound of issue #20: peak RSS <= 1.2 x (weights file + KV cache).
#
#   bash scripts/bench-memory.sh SHAPE [WEIGHTS...]
#
# SHAPE is 8b (Llama-3.1-8B's shape, a 16 GB file) or 790m (the 790 MB model); WEIGHTS are
# --weights values to run (default: bf16). The checkpoint is made by
# scripts/make-random-checkpoint in $LUKV_MEMORY_DIR (default /tmp/lukv-memory-SHAPE),
# used, and deleted at the end unless LUKV_KEEP=1. Each run generates a few greedy tokens
# from a short prompt; peak RSS comes from /usr/bin/time -v. Prints one line per run and a
# table for results/cpu/.
set -euo pipefail
shape=${1:?usage: bench-memory.sh 8b|790m [bf16 f32 int8 ...]}
shift
weights=("${@:-bf16}")
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${LUKV_MEMORY_DIR:-/tmp/lukv-memory-$shape}
bin=$(mktemp -d)/lukv-run
tokens=${LUKV_MEMORY_TOKENS:-4}
threads=${LUKV_THREADS:-0}

cleanup() { [[ ${LUKV_KEEP:-0} == 1 ]] || rm -rf "$dir"; rm -rf "$(dirname "$bin")"; }
trap cleanup EXIT

(cd "$root" && go build -o "$bin" ./cmd/lukv-run)
if [[ ! -f $dir/model.safetensors ]]; then
  avail=$(df -B1 --output=avail "$(dirname "$dir")" | tail -1)
  echo "making the $shape checkpoint in $dir ($((avail >> 30)) GiB free on its disk)" >&2
  (cd "$root" && go run ./scripts/make-random-checkpoint --shape "$shape" --out "$dir" >&2)
fi
file=$(stat -c %s "$dir/model.safetensors")

echo "# lukv-run generate memory: $shape random bf16 checkpoint, $tokens new tokens"
echo "# commit $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet || echo +dirty), $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, MemAvailable $(awk '/MemAvailable/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "# weights file $file bytes ($(awk -v b="$file" 'BEGIN {printf "%.1f MiB", b/1048576}'))"
echo "| --weights | peak RSS MiB | KV cache | bound 1.2 x (file + KV) MiB | RSS / (file + KV) | within | prefill | decode |"
echo "|---|---|---|---|---|---|---|---|"
for w in "${weights[@]}"; do
  log=$(mktemp)
  /usr/bin/time -v "$bin" generate --model "$dir" --weights "$w" --threads "$threads" --max-new-tokens "$tokens" \
      --prompt "The grass is green and the sky is" --json >"$log.json" 2>"$log" || { cat "$log" >&2; exit 1; }
  rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
  grep '^\[lukv\]' "$log" >&2 || true
  python3 - "$w" "$rss_kb" "$file" "$log.json" <<'PY'
import json, sys
w, rss, file, out = sys.argv[1], int(sys.argv[2]) * 1024, int(sys.argv[3]), json.load(open(sys.argv[4]))
kv = out["kv_bytes"]
r = rss / (file + kv)
print(f"| {w} | {rss / 2**20:.0f} | {kv / 2**10:.1f} KiB | {1.2 * (file + kv) / 2**20:.0f} | {r:.3f} | {'yes' if r <= 1.2 else 'no'} "
      f"| {out['prefill_tokens_per_sec']:.1f} tok/s | {out['decode_tokens_per_sec']:.2f} tok/s |")
PY
  rm -f "$log" "$log.json"
done
