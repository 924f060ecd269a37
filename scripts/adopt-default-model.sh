#!/usr/bin/env bash
# Makes a checkpoint trained by scripts/default-model.sh the embedded default model:
#   bash scripts/adopt-default-model.sh DIR
# DIR holds what that call returned: model.safetensors, lukv-tiny-files.tgz,
# lukv-tiny-golden.tgz and (optionally) eval.json. Steps: checks the weights fit the cap
# (32 MiB), puts the checkpoint in models/lukv-tiny/ and the transformers goldens in
# tests/testdata/lukv-tiny/, re-profiles the LU-KV curves on this CPU
# (scripts/default-curves.sh; SCORERS=... to limit), and runs the tests. What stays for a
# person: the model card (recipe, attempts, metrics) and a new evaluation
# (scripts/eval-default-model.sh on the GPU), since every result of the old model is void.
set -euo pipefail
src=${1:?usage: adopt-default-model.sh DIR (model.safetensors, lukv-tiny-files.tgz, lukv-tiny-golden.tgz)}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Weights over the device tool's 16 MiB per file come back in parts (default-model.sh).
weights=$src/model.safetensors
if [[ ! -e "$weights" ]] && compgen -G "$src/model.safetensors.part-*" >/dev/null; then
	weights=$tmp/model.safetensors
	cat "$src"/model.safetensors.part-* >"$weights"
fi
for f in "$weights" "$src/lukv-tiny-files.tgz" "$src/lukv-tiny-golden.tgz"; do
	[[ -s "$f" ]] || { echo "adopt-default-model: $f is missing or empty" >&2; exit 1; }
done
size=$(stat -c %s "$weights")
if ((size > 32 * 1024 * 1024)); then
	echo "adopt-default-model: $weights is $size bytes, over the 32 MiB cap of issue #3" >&2
	exit 1
fi
tar xzf "$src/lukv-tiny-files.tgz" -C "$tmp"
tar xzf "$src/lukv-tiny-golden.tgz" -C "$tmp"
for f in config.json generation_config.json tokenizer.json tokenizer_config.json golden/golden.json golden/golden.safetensors; do
	[[ -s "$tmp/$f" ]] || { echo "adopt-default-model: the archives lack $f" >&2; exit 1; }
done
m=models/lukv-tiny
cp "$weights" "$m/model.safetensors"
for f in config.json generation_config.json tokenizer.json tokenizer_config.json loss.csv loss.png train_log.json; do
	[[ -f "$tmp/$f" ]] && cp "$tmp/$f" "$m/"
done
[[ -f "$src/eval.json" ]] && cp "$src/eval.json" "$m/"
mkdir -p tests/testdata/lukv-tiny
cp "$tmp/golden/golden.json" "$tmp/golden/golden.safetensors" tests/testdata/lukv-tiny/
echo "adopt-default-model: checkpoint and goldens in place; profiling the LU-KV curves"
bash scripts/default-curves.sh
go test ./...
echo "adopt-default-model: done. Update $m/README.md (recipe, attempts, metrics) and re-run the evaluation."
