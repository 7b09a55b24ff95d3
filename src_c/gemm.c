/* fastnn's own serial GEMM (the row-owned products of the step), float and double. */
#include "runtime.h"

int fnn_matmul_paths(void) {
    int paths = 1 << FNN_GEMM_BASE;
#if FNN_GEMM_X86
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        paths |= 1 << FNN_GEMM_AVX2;
    if (__builtin_cpu_supports("avx512f")) paths |= 1 << FNN_GEMM_AVX512;
#endif
    return paths;
}

int fnn_matmul_best(void) {
    const int paths = fnn_matmul_paths();
    int best = FNN_GEMM_BASE;
    for (int p = 0; p < FNN_GEMM_N_PATH; p++)
        if (paths & (1 << p)) best = p;
    return best;
}

#define FNN_TEMPLATE "gemm.inc"
#include "each_real.h"
