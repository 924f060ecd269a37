#!/usr/bin/env bash
# Builds lukv's CUDA binaries into gpubin/ (git-ignored): gpubin/cuda.test (the
# backend/cuda tests and benchmarks) and gpubin/lukv-run, both with -tags cuda.
#
# Needs Go, a C compiler, cuda.h and libcuda.so (the driver stub is enough to link;
# no nvcc: the kernels are compiled where they run, by scripts/build-kernels.sh).
# gorgonia.org/cu v0.9.6 does not compile against CUDA 13's cuda.h as is, so the
# compatibility header backend/cuda/cudacompat/cuda.h goes first on the include path;
# with CUDA 12 headers it changes nothing.
#
#   CUDA_INCLUDE=/path/to/include  use that folder's cuda.h (default: /usr/local/cuda/include)
#   GPUBIN=dir                     output folder (default: gpubin)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=${GPUBIN:-gpubin}
inc="-I$root/backend/cuda/cudacompat"
if [[ -n "${CUDA_INCLUDE:-}" ]]; then
	inc="$inc -I$CUDA_INCLUDE"
fi
export CGO_ENABLED=1
export CGO_CFLAGS="-O2 -g $inc"
mkdir -p "$out"
echo "CGO_CFLAGS=$CGO_CFLAGS"
go vet -tags cuda ./backend/cuda/ ./cmd/lukv-run/
go test -c -tags cuda -ldflags='-s -w' -o "$out/cuda.test" ./backend/cuda/
go build -tags cuda -ldflags='-s -w' -o "$out/lukv-run" ./cmd/lukv-run
ls -l "$out"
