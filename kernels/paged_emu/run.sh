#!/usr/bin/env bash
# Runs kernels/paged_attention.cu on the CPU, for machines without a GPU: run.sh rewrites
# the .cu into C++ (shim.h stands in for the CUDA built-ins: every thread of a block is a
# std::thread, __syncthreads a barrier over the block, __shfl_xor_sync two barriers over
# the warp and an exchange array), and harness.cpp launches the append, attention and
# combine kernels with descriptors laid out as backend/cuda/paged_attention.go lays them
# out, then checks every output against a double-precision attention over the same block
# tables. Cases: GQA groups 1-8 (3: not a power of two), head dims 16-256, heads of 0 and
# 1 entries before the append, block boundaries, several rows per sequence, split-K with
# the combine, bf16 and float32 pools. It checks indexing and arithmetic only: not
# alignment, coalescing or what the GPU's scheduling could expose (the GPU tests in
# backend/cuda/paged_test.go do). Needs g++ with C++20; about 20 s.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed -e 's|#include <cuda_bf16.h>|#include "shim.h"|' -e 's|extern __shared__ float smem\[\];|float* smem = tl_smem;|' \
	"$here/../paged_attention.cu" >"$tmp/kernel.cpp"
cp "$here/shim.h" "$here/harness.cpp" "$tmp/"
g++ -std=c++20 -O1 -o "$tmp/harness" "$tmp/harness.cpp" -lpthread
"$tmp/harness"
