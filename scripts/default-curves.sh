#!/usr/bin/env bash
# Profiles lukv-tiny with every scorer and writes its LU-KV budget curves to
# models/lukv-tiny/curves/<scorer>.npy (+ .npy.json sidecar, .png heat map, .log).
# CPU only; about a minute per scorer on 2 quiet cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out=models/lukv-tiny/curves
mkdir -p "$out"
go build -o /tmp/lukv-run-curves ./cmd/lukv-run
for scorer in ${SCORERS:-expected-attention snapkv keydiff knorm streaming tova h2o random}; do
  echo "== $scorer"
  /tmp/lukv-run-curves profile --model models/lukv-tiny --calibration models/lukv-tiny/calibration.json \
    --scorer "$scorer" --sink 4 --window 1 --horizon 64 --temperature 0.7 --seed 0 \
    --out "$out/$scorer.npy" 2> >(tr '\r' '\n' | tail -n 3 >&2) | tee "$out/$scorer.log"
done
