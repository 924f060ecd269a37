/*
 * cudacompat/cuda.h: lets gorgonia.org/cu v0.9.6 build against CUDA 13's cuda.h.
 *
 * gorgonia.org/cu v0.9.6 calls five driver functions whose names CUDA 13.0 turned into
 * macros for newer versions with other parameters:
 *
 *   cuCtxCreate            -> cuCtxCreate_v4 (takes a CUctxCreateParams*)
 *   cuMemAdvise            -> cuMemAdvise_v2 (takes a CUmemLocation, not a CUdevice)
 *   cuMemPrefetchAsync     -> cuMemPrefetchAsync_v2 (CUmemLocation and flags)
 *   cuGraphAddDependencies -> cuGraphAddDependencies_v2 (edge data)
 *   cuGraphGetEdges        -> cuGraphGetEdges_v2 (edge data)
 *
 * This header is found before the toolkit's one (scripts/build-cuda.sh puts its folder
 * first in CGO_CFLAGS), includes the real header with #include_next and, for CUDA 13 and
 * later only, maps the five names back to the old signatures: cuCtxCreate to the driver's
 * still exported cuCtxCreate_v2, the other four to small inline wrappers that call the
 * new entry points with a CUmemLocation built from the device ordinal, or with no edge
 * data (NULL: every edge is a default edge, which is all the old calls could express).
 * With CUDA 12 headers it only includes the real header.
 */
#ifndef LUKV_CUDACOMPAT_CUDA_H
#define LUKV_CUDACOMPAT_CUDA_H

#include_next <cuda.h>

#if defined(CUDA_VERSION) && CUDA_VERSION >= 13000

#include <stddef.h>

/* Declared by cuda.h 13 only in its __CUDA_API_VERSION_INTERNAL section; still exported
 * by the driver (libcuda.so.1, 580 series). */
CUresult CUDAAPI cuCtxCreate_v2(CUcontext *pctx, unsigned int flags, CUdevice dev);

/* lukv_compat_location turns a CUDA 12 style device argument (an ordinal, or
 * CU_DEVICE_CPU for host memory) into a CUDA 13 CUmemLocation. */
static inline CUmemLocation lukv_compat_location(CUdevice dev) {
	CUmemLocation loc;
	if (dev == CU_DEVICE_CPU) {
		loc.type = CU_MEM_LOCATION_TYPE_HOST;
		loc.id = 0;
	} else {
		loc.type = CU_MEM_LOCATION_TYPE_DEVICE;
		loc.id = (int)dev;
	}
	return loc;
}

static inline CUresult lukv_compat_cuMemAdvise(CUdeviceptr devPtr, size_t count, CUmem_advise advice, CUdevice device) {
	return cuMemAdvise_v2(devPtr, count, advice, lukv_compat_location(device));
}

static inline CUresult lukv_compat_cuMemPrefetchAsync(CUdeviceptr devPtr, size_t count, CUdevice dstDevice, CUstream hStream) {
	return cuMemPrefetchAsync_v2(devPtr, count, lukv_compat_location(dstDevice), 0, hStream);
}

static inline CUresult lukv_compat_cuGraphAddDependencies(CUgraph hGraph, const CUgraphNode *from, const CUgraphNode *to, size_t numDependencies) {
	return cuGraphAddDependencies_v2(hGraph, from, to, NULL, numDependencies);
}

static inline CUresult lukv_compat_cuGraphGetEdges(CUgraph hGraph, CUgraphNode *from, CUgraphNode *to, size_t *numEdges) {
	return cuGraphGetEdges_v2(hGraph, from, to, NULL, numEdges);
}

#undef cuCtxCreate
#define cuCtxCreate cuCtxCreate_v2
#undef cuMemAdvise
#define cuMemAdvise lukv_compat_cuMemAdvise
#undef cuMemPrefetchAsync
#define cuMemPrefetchAsync lukv_compat_cuMemPrefetchAsync
#undef cuGraphAddDependencies
#define cuGraphAddDependencies lukv_compat_cuGraphAddDependencies
#undef cuGraphGetEdges
#define cuGraphGetEdges lukv_compat_cuGraphGetEdges

#endif /* CUDA_VERSION >= 13000 */

#endif /* LUKV_CUDACOMPAT_CUDA_H */
