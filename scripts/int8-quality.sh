#!/usr/bin/env bash
# What int8 weights cost in quality on the CPU (issue #20), written to OUT
# (default results/cpu/DATE-int8-quality):
#   logits-perplexity.txt  the default model: perplexity on held-out text and logit
#                          differences, f32 vs bf16 vs int8 (go run ./scripts/int8-quality)
#   logits-790m.txt        the 790 MB random bf16 shape: logit differences bf16 vs int8
#                          (8B is too big for quick CPU runs; the 790 MB shape stands in)
#   ruler-f32/, ruler-int8/  lukv-run eval ruler, a small grid (4 tasks x 2048 tokens,
#                          full cache and SnapKV at 0.5), with --weights f32 and int8;
#                          bf16 is not run: the default model is stored bf16, so f32 and
#                          bf16 weights give bit-identical logits (model.TestKeepBF16SameLogits)
# Usage: bash scripts/int8-quality.sh [HELDOUT_TEXT] (default data/corpus/heldout_prose.txt
# when it exists: the default model's held-out prose, not in the repository).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${OUT:-results/cpu/$(date -u +%F)-int8-quality}
samples=${SAMPLES:-5}
mkdir -p "$out"
texts=eval/corpus/eval_haystack_devil.txt
heldout=${1:-data/corpus/heldout_prose.txt}
[[ -f $heldout ]] && texts="$texts,$heldout"
bin=$(mktemp -d)/lukv-run
go build -o "$bin" ./cmd/lukv-run
echo "# commit $(git rev-parse --short HEAD)$(git diff --quiet || echo +dirty), $(date -u +%FT%H:%MZ)" | tee "$out/logits-perplexity.txt"
go run ./scripts/int8-quality --text "$texts" --ctx 1024 --chunks 8 --prompt-tokens 256 2>&1 | tee -a "$out/logits-perplexity.txt"
if [[ ! -f /tmp/lukv-790m/model.safetensors ]]; then
  go run ./scripts/make-random-checkpoint --shape 790m --out /tmp/lukv-790m
fi
go run ./scripts/int8-quality --model /tmp/lukv-790m --ppl=false --weights bf16,int8 --prompt-tokens 64 2>&1 | tee "$out/logits-790m.txt"
for w in f32 int8; do
  "$bin" eval ruler --weights "$w" --methods full,snapkv --compression 0.5 --lengths 2048 --samples "$samples" \
    --tasks niah_single_2,niah_multikey_1,niah_multivalue,vt --out "$out/ruler-$w" 2>&1 | tail -3
done
rm -rf "$(dirname "$bin")"
