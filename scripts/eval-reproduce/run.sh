#!/usr/bin/env bash
# Reruns a small slice of the committed RULER-style evaluation of the default model on the
# CPU and checks that every cell reproduces the committed prediction and score
# (results/eval/2026-11-29-lukv-tiny-attempt6, made on the H200 in float32, which the CPU
# path matches). Used to show that a refactor kept behaviour.
#
#   SAMPLES=2 LENGTH=4096 TASKS=niah_single_1,... OUT=out/eval-reproduce bash scripts/eval-reproduce/run.sh
#
# Exit status: 0 when every rerun cell equals the committed one, 1 otherwise.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
samples=${SAMPLES:-2}
length=${LENGTH:-4096}
tasks=${TASKS:-niah_single_1,niah_single_2,niah_multikey_1,niah_multikey_3,niah_multivalue,niah_multiquery,vt,fwe}
methods=${METHODS:-full,snapkv,expected-attention,keydiff,pyramidkv,adakv,lukv,lukv:keydiff}
out=${OUT:-out/eval-reproduce}
committed=results/eval/2026-11-29-lukv-tiny-attempt6/results.jsonl.gz
rm -rf "$out"
echo "== $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD): $samples samples x $length tokens, tasks $tasks"
go run ./cmd/lukv-run eval ruler --lengths "$length" --samples "$samples" --tasks "$tasks" \
	--methods "$methods" --compression 0.5,0.8,0.9 --out "$out"
python3 scripts/eval-reproduce/compare.py "$committed" "$out/results.jsonl"
