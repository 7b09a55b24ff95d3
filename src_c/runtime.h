/* fastnn's runtime, shared by every kernel file (not part of the public header): SIMD
   clones, the floating-point mode, OpenMP regions, thread queries, when to split a product,
   the BLAS, and vectorisable exp and tanh for float.  runtime.c defines the rest. */
#ifndef FASTNN_RUNTIME_H
#define FASTNN_RUNTIME_H

#include "fastnn.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "cblas.h" /* scipy-openblas32: every symbol carries the scipy_ prefix */

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

/* Portable default build: the elementwise loops get AVX-512 / AVX2 clones chosen at run time
   (GCC's function multiversioning), with the baseline x86-64 path as fallback.  The AVX2 clone
   is x86-64-v3 (AVX2 with FMA) where GCC can name it (12 and later): "avx2" alone has no FMA,
   which halved the portable bf16 product on an AVX2 CPU. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(FNN_NO_CLONES)
#if __GNUC__ >= 12
#define FNN_VEC __attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
#define FNN_SIMD_TARGETS "x86-64 baseline + x86-64-v3/avx512f clones (runtime dispatch)"
#else
#define FNN_VEC __attribute__((target_clones("avx512f", "avx2", "default")))
#define FNN_SIMD_TARGETS "x86-64 baseline + avx2/avx512f clones (runtime dispatch)"
#endif
#else
#define FNN_VEC
#define FNN_SIMD_TARGETS "compiler baseline"
#endif

/* Below this many elements a kernel stays on one thread: spawning costs more than it saves. */
#ifndef FNN_OMP_MIN_ELEMS
#define FNN_OMP_MIN_ELEMS (1 << 15)
#endif

/* The batch gathers (fnn_gather_forward_u8, fnn_bf16_gather_forward) read rows of x at random
   indices, each a miss in the caches and the TLB: a gather reading at least this many bytes
   is shared by the team, which halves the wait. */
#define FNN_GATHER_PAR_BYTES (1 << 16)

/* Every kernel runs with subnormals flushed to zero (FTZ|DAZ) and restores the caller's
   MXCSR before returning: a subnormal operand otherwise costs ~100 cycles (measured: an
   MNIST-sized GEMM 150x, a sigmoid row 40x slower).  MXCSR is per thread, so a parallel region
   sets it in each thread: FNN_PARALLEL_BEGIN(cond) opens a region (parallel only when cond
   holds) with the flush on, FNN_PARALLEL_END closes it; `#pragma omp for` loops go between.
   A region's team is fnn_team_now() threads, whichever thread opens it (see Threads below):
   code inside must not assume a team size, only `omp for` over shares. */
#if defined(__SSE2__)
#define FNN_CSR_SAVE unsigned int fnn_csr_ = _mm_getcsr(); _mm_setcsr(fnn_csr_ | 0x8040u);
#define FNN_CSR_RESTORE _mm_setcsr(fnn_csr_);
#else
#define FNN_CSR_SAVE
#define FNN_CSR_RESTORE
#endif
#define FNN_PARALLEL_BEGIN(cond)                                          \
    {                                                                     \
        const int fnn_nt_ = (cond) ? fnn_team_now() : 1;                  \
        (void)fnn_nt_;                                                    \
        _Pragma("omp parallel if (fnn_nt_ > 1) num_threads(fnn_nt_)") {  \
            FNN_CSR_SAVE
#define FNN_PARALLEL_END \
    FNN_CSR_RESTORE      \
    }                    \
    }

/* fnn_dense_backward_step_bf16 (fastnn.h), and then, on the team's last thread once its rows
   are done (the share with the fewest rows, fnn_static_rows), tail(arg) when tail is not
   NULL: work for one thread that waits for no other (the compiled step's small optimizer
   steps of the other layers, otherwise run alone after the region). */
void fnn_dense_backward_step_bf16_then(float *p, uint16_t *wp, float *db, float *dz,
                                       uint16_t *scratch, const float *dy, const uint16_t *x16,
                                       const float *y, const float *z, int64_t off, int64_t n,
                                       int64_t in, int64_t out, struct fnn_activation act,
                                       const struct fnn_optimizer *o, void (*tail)(void *),
                                       void *arg);

/* Layer 0 of the mixed step owned by rows (struct fnn_dense_stack, part): share u of P is the
   32-row blocks of w that fnn_static_rows(u, P, ceil(in / 32)) gives, the rows thread u of a
   team of P updates in fnn_dense_backward_step_bf16.  On this thread, on AMX tiles, c (n, out)
   := x16[:, rows] @ w[rows, :] from the packed wp.  Only where fnn_bf16_shares_on_tiles() said
   1 (the AMX path runs: the step owns layer 0 only there; a path forced afterwards changes
   nothing, the tiles stay usable).  Shares summed in order round differently from one
   product. */
void fnn_bf16_forward_share(float *c, const uint16_t *x16, const uint16_t *wp, int64_t n,
                            int64_t in, int64_t out, int64_t u, int64_t P);
int fnn_bf16_shares_on_tiles(void);
/* y (n) := bf16(x (n)) on this thread (fnn_bf16_convert_forward's bits). */
void fnn_bf16_convert_row_f32(uint16_t *y, const float *x, int64_t n);

/* Threads (runtime.c).  Three counts:
   - the count asked for (fastnn.set_num_threads, else OpenMP's default), the BLAS's too;
   - fnn_team_max() (= fnn_get_num_threads(), fastnn's team size): the shares, P.  Work split
     per thread (row blocks of small products, layer 0 owned by rows, the batch-1 GEMV) is cut
     in P shares whatever team computes them, so results depend on P only, never on the
     machine's load.  P is the count asked for, capped at the CPUs this process may use
     (affinity mask, cgroup v2 CPU quota) unless the environment has
     FASTNN_ALLOW_OVERSUBSCRIPTION=1 (read once, at import); 1 in a child forked after fastnn
     loaded;
   - fnn_team_now(): the team a region opens now, at most P: fewer while other processes keep
     fastnn's threads waiting for a core (the contention monitor in runtime.c), so a region
     never waits at its barrier for a thread that has no core.  The BLAS's count follows the
     same caps. */
int fnn_team_max(void);
int fnn_team_now(void);

/* Before a product the BLAS may thread itself: catches a count set from outside fastnn
   (threadpoolctl) and holds the BLAS to the same cap as the team.  Cheap when nothing changed. */
void fnn_blas_check(void);

/* Rows [*r0, *r1) of share t of nt when n rows are shared as `omp for schedule(static)` shares
   them among nt threads (the first n % nt shares one row longer). */
static inline void fnn_static_rows(int64_t t, int64_t nt, int64_t n, int64_t *r0, int64_t *r1) {
    const int64_t q = n / nt, rem = n % nt;
    *r0 = t * q + (t < rem ? t : rem);
    *r1 = *r0 + q + (t < rem);
}

/* Request every cache line of a row a loop reads soon (random rows of a big array: the
   hardware prefetchers cannot guess the next one).  Gathers run FNN_GATHER_AHEAD rows ahead:
   the book's batch (128 rows of 3 KiB) gathers in 37 us instead of 42 (cold rows). */
#define FNN_GATHER_AHEAD 2
static inline void fnn_prefetch_row(const void *row, int64_t bytes) {
    for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch((const char *)row + b, 0, 3);
}

/* Rows are split across OpenMP threads only when there is enough work per call. */
#define FNN_PAR_ROWS(n, m) ((n) > 1 && (n) * (m) >= FNN_OMP_MIN_ELEMS)

/* Small products go to the BLAS in row blocks, one share per OpenMP thread.  OpenBLAS runs a
   product with m n k <= 65536 * 4 (its SMP threshold) on the calling thread, and those of the
   book's second layer (128 x 512 x 10) on one thread too: split, they take half the time
   (measured: 16 -> 10 us forward, 23 -> 12 us for dx).  Each block stays under the threshold,
   so a block never starts BLAS threads of its own inside the team.  Bigger products go whole:
   the BLAS's own threads do as well as any split of ours (measured at 128 x 784 x 512). */
#define FNN_BLAS_SERIAL_MNK 262144.0
#define FNN_SPLIT_MIN_MNK 32768.0
#define FNN_SPLIT_MAX_MNK 2097152.0

/* At batch size 1 the dense forward is a GEMV, y (out) := w.T @ x.  Split by rows of w in P
   shares (partial sums added in share order), each thread reads the rows of w that the rank-1
   optimizer step then updates on the same thread, so a core finds its half of the kernel in
   its own cache.  Only up to FNN_GEMV_SPLIT_OUT outputs (the partial sums live on the stack)
   and FNN_GEMV_SERIAL elements per share: OpenBLAS 0.3.34 runs a GEMV of 784 x 512 on the
   calling thread (checked with a counting threads callback; 784 x 4096 it splits itself). */
#define FNN_GEMV_SPLIT_OUT 2048
#define FNN_GEMV_SERIAL (784 * 512)

#define cblas_sgemm scipy_cblas_sgemm
#define cblas_dgemm scipy_cblas_dgemm
#define cblas_sgemv scipy_cblas_sgemv
#define cblas_dgemv scipy_cblas_dgemv

/* This thread's number and its team's size (0 and 1 outside a parallel region), and whether
   it runs inside one (a kernel called there stays on its thread). */
static inline int64_t fnn_thread_num(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}
static inline int64_t fnn_team_size(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}
static inline int fnn_in_parallel(void) {
#ifdef _OPENMP
    return omp_in_parallel();
#else
    return 0;
#endif
}

/* Rows [*r0, *r1) of block `blk` of `blocks` row blocks of m rows. */
static inline void fnn_block_rows(int64_t blk, int64_t blocks, int64_t m, int64_t *r0,
                                  int64_t *r1) {
    *r0 = m * blk / blocks;
    *r1 = m * (blk + 1) / blocks;
}

/* Row blocks for C (m, n) := A (m, k) @ B (k, n): 0 to call the BLAS once for the whole
   product, else a multiple of the thread count, each block at least one row. */
int64_t fnn_row_blocks(int64_t m, int64_t n, int64_t k);

/* fnn_matmul_forward's blocking (gemm.inc): tiles of FNN_GEMM_MR rows x a few vectors, panels
   of B of FNN_GEMM_KC rows (on the stack: KC x 256 bytes at most).  FNN_GEMM_X86: the avx2
   and avx512 kernels are built beside the baseline one. */
#define FNN_GEMM_MR 6
#define FNN_GEMM_MC 192 /* a multiple of MR; at least the book's batch of 128 (one block) */
#define FNN_GEMM_KC 256
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define FNN_GEMM_X86 1
#else
#define FNN_GEMM_X86 0
#endif
int fnn_matmul_best(void); /* gemm.c: the best path of fnn_matmul_paths() */

/* Shared by the dense kernels (layers.inc) and the step driver (step.inc).
   fnn_gemm_rows: rows [r0, r1) of C (m, n) := op(A) @ op(B), row-major; ta: A is stored
   transposed (k, m), tb: B is stored transposed (n, k).
   fnn_dense_epilogue_row: row i of the forward epilogue, (z := acc + b), y := act(acc + b);
   acc is z or y and holds x @ w.  Overwrites y (and z). */
#define FNN_DECLARE_SHARED(T, S)                                                              \
    void fnn_gemm_rows_##S(T *c, const T *a, const T *b, int ta, int tb, int64_t r0,           \
                           int64_t r1, int64_t m, int64_t n, int64_t k);                      \
    void fnn_dense_epilogue_row_##S(T *y, T *z, T *acc, const T *b, int64_t i, int64_t out,    \
                                    struct fnn_activation act);
FNN_DECLARE_SHARED(float, f32)
FNN_DECLARE_SHARED(double, f64)
#undef FNN_DECLARE_SHARED

/* exp and tanh for float, written so that the compiler vectorizes them (libm's expf/tanhf
   are scalar calls, 5-15 ns each).  Cephes' single-precision algorithms: exp(x) = 2^k e^r,
   k = round(x / ln2), r = x - k ln2 (ln2 in two parts), e^r by a degree-6 polynomial,
   relative error ~1 ulp; tanh by an odd polynomial for |x| < 0.625, else 1 - 2 / (e^2|x| + 1).
   Results overflow to inf above 88.72 and reach subnormals and 0 below -87.3, as expf. */
static inline float fnn_pow2i(int k) { /* 2^k for k in [-126, 127] */
    uint32_t bits = (uint32_t)(k + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline float fnn_expf(float x) {
    /* clamp to the range where the result is finite and nonzero; NaN computes exp(0) and is
       passed through at the end, so no NaN ever reaches the integer conversion */
    float xc = x > 88.72283905f ? 88.72283905f : (x < -103.972684f ? -103.972684f : x);
    xc = xc == xc ? xc : 0.0f;
    float k = rintf(xc * 1.44269504088896341f);
    float r = xc - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float e = p * r * r + r + 1.0f;
    int ki = (int)k, k1 = ki / 2; /* 2^k as 2^k1 2^(k-k1): both factors stay normal */
    float y = e * fnn_pow2i(k1) * fnn_pow2i(ki - k1);
    y = x > 88.72283905f ? INFINITY : y;
    return x == x ? y : x;
}

static inline float fnn_tanhf(float x) {
    float a = fabsf(x);
    float z = x * x;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    float small = x + x * z * p;
    float big = 1.0f - 2.0f / (fnn_expf(2.0f * a) + 1.0f);
    big = x < 0 ? -big : big;
    return a < 0.625f ? small : big;
}

#endif
