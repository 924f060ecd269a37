// score_expected.cuh: the layout of expected attention's query second moment, shared by
// its CUDA-core kernels (score_expected.cu) and its tensor-core ones
// (score_expected_tc.cu): the D dims are 4 blocks of BD = D/4, and only the 10 block
// pairs A <= B of the symmetric matrix are kept, each a BD x BD tile, in this order.
#pragma once

// ea_pair maps a block pair index p in [0, 10) to blocks A <= B:
// (0,0) (0,1) (0,2) (0,3) (1,1) (1,2) (1,3) (2,2) (2,3) (3,3).
__device__ __forceinline__ void ea_pair(int p, int& A, int& B) {
	A = p < 4 ? 0 : p < 7 ? 1 : p < 9 ? 2 : 3;
	const int start = A == 0 ? 0 : A == 1 ? 4 : A == 2 ? 7 : 9;
	B = A + (p - start);
}

__device__ __forceinline__ int ea_pair_index(int A, int B) {
	return (A == 0 ? 0 : A == 1 ? 4 : A == 2 ? 7 : 9) + (B - A);
}
