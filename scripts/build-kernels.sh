#!/usr/bin/env bash
# Compiles kernels/*.cu with nvcc into kernels/build/<name>.cubin (one module per .cu
# file, named after it), which the CUDA backend loads at run time: its kernel manifest
# (backend/cuda/registry.go kernelModules) names, per module, the kernels it takes, so a
# .cu file added, renamed or split needs its entry there. Headers shared between .cu
# files (kernels/*.cuh, included as #include "x.cuh") are not compiled on their own.
# Runs where nvcc is: the GPU machine, or any machine with the CUDA toolkit.
#
#   LUKV_CUDA_ARCH=sm_90      target (default: the first GPU's compute capability from
#                             nvidia-smi, else sm_90)
#   LUKV_KERNEL_FORMAT=cubin  cubin (native code for that GPU) or ptx (compiled by the
#                             driver at load, for any newer GPU)
#   LUKV_KERNELS_OUT=dir      output folder (default kernels/build)
#
# ptxas' resource report (registers, shared memory, stack frame, spills) goes to
# <out>/ptxas.log; spills are printed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/kernels
out=${LUKV_KERNELS_OUT:-$src/build}
nvcc=${NVCC:-}
if [[ -z "$nvcc" ]]; then
	if command -v nvcc >/dev/null; then nvcc=nvcc
	elif [[ -x /usr/local/cuda/bin/nvcc ]]; then nvcc=/usr/local/cuda/bin/nvcc
	else echo "build-kernels: nvcc not found (install the CUDA toolkit or set NVCC)" >&2; exit 1
	fi
fi
arch=${LUKV_CUDA_ARCH:-}
if [[ -z "$arch" ]]; then
	cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .' || true)
	arch=sm_${cap:-90}
fi
format=${LUKV_KERNEL_FORMAT:-cubin}
case $format in
cubin) flags=(-cubin -arch="$arch") ;;
ptx) flags=(-ptx -arch="compute_${arch#sm_}") ;;
*) echo "build-kernels: LUKV_KERNEL_FORMAT=$format: want cubin or ptx" >&2; exit 1 ;;
esac
mkdir -p "$out"
printf '*\n' >"$out/.gitignore" # build output, never committed
rm -f "$out"/*.cubin "$out"/*.ptx "$out"/*.fatbin "$out"/*.log
echo "build-kernels: $("$nvcc" --version | tail -1), $arch, $format -> $out"
pids=()
names=()
for f in "$src"/*.cu; do
	name=$(basename "$f" .cu)
	"$nvcc" -O3 -std=c++17 -lineinfo -Xptxas -v -I"$src" "${flags[@]}" -o "$out/$name.$format" "$f" >"$out/$name.log" 2>&1 &
	pids+=($!)
	names+=("$name")
done
fail=0
for i in "${!pids[@]}"; do
	if ! wait "${pids[$i]}"; then
		echo "build-kernels: ${names[$i]}.cu failed:" >&2
		cat "$out/${names[$i]}.log" >&2
		fail=1
	fi
done
cat "$out"/*.log >"$out/ptxas.log.tmp" 2>/dev/null || true
mv "$out/ptxas.log.tmp" "$out/ptxas.log"
[[ $fail == 0 ]] || exit 1
# One line per kernel: registers, stack frame and spill bytes (spills and stack frames
# mean a register array went to local memory: look there first when a kernel is slow).
awk '/Function properties for/ { name = $NF }
	/bytes stack frame/ { stack = $1; spill = $5 + $9 }
	/Used [0-9]+ registers/ { for (i = 1; i <= NF; i++) if ($i == "Used") regs = $(i + 1)
		printf "  %-22s %4s registers, %4s B stack, %4s B spilled\n", name, regs, stack, spill }' "$out/ptxas.log"
ls -l "$out"
