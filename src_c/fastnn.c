/* fastnn kernels: build facts, thread control, and the f32/f64 instantiations of
   fastnn_impl.h.  See fastnn.h for what each kernel computes. */
#define _GNU_SOURCE
#include "fastnn.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "cblas.h" /* scipy-openblas32: every symbol carries the scipy_ prefix */

#ifdef _OPENMP
#include <omp.h>
#include <pthread.h>
#endif
#if defined(__SSE2__)
#include <xmmintrin.h>
#endif

/* Portable default build: the optimizer loops get AVX-512 / AVX2 clones chosen at run time
   (GCC's function multiversioning), with the baseline x86-64 path as fallback. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(FNN_NO_CLONES)
#define FNN_VEC __attribute__((target_clones("avx512f", "avx2", "default")))
#define FNN_SIMD_TARGETS "x86-64 baseline + avx2/avx512f clones (runtime dispatch)"
#else
#define FNN_VEC
#define FNN_SIMD_TARGETS "compiler baseline"
#endif

/* Below this many elements a kernel stays on one thread: spawning costs more than it saves. */
#ifndef FNN_OMP_MIN_ELEMS
#define FNN_OMP_MIN_ELEMS (1 << 15)
#endif

/* Every kernel runs with subnormals flushed to zero (FTZ|DAZ) and restores the caller's
   MXCSR before returning: a subnormal operand costs ~100 cycles (measured: an MNIST-sized
   GEMM 150x, a sigmoid row 40x slower).  MXCSR is per thread, so a parallel region sets it
   in each thread: FNN_PARALLEL_BEGIN(cond) opens a region (parallel only when cond holds)
   with the flush on, FNN_PARALLEL_END closes it; `#pragma omp for` loops go in between. */
#if defined(__SSE2__)
#define FNN_CSR_SAVE unsigned int fnn_csr_ = _mm_getcsr(); _mm_setcsr(fnn_csr_ | 0x8040u);
#define FNN_CSR_RESTORE _mm_setcsr(fnn_csr_);
#else
#define FNN_CSR_SAVE
#define FNN_CSR_RESTORE
#endif
#define FNN_PARALLEL_BEGIN(cond)                    \
    {                                               \
        const int fnn_par_ = (cond);                \
        (void)fnn_par_;                             \
        _Pragma("omp parallel if (fnn_par_)") {    \
            FNN_CSR_SAVE
#define FNN_PARALLEL_END \
    FNN_CSR_RESTORE      \
    }                    \
    }

/* Small products go to the BLAS in row blocks, one share per OpenMP thread.  OpenBLAS runs a
   product with m n k <= 65536 * 4 (its SMP threshold) on the calling thread, and those of the
   book's second layer (128 x 512 x 10) on one thread too: split, they take half the time
   (measured: 16 -> 10 us forward, 23 -> 12 us for dx).  Each block stays under the threshold,
   so a block never starts BLAS threads of its own inside the team.  Bigger products go whole:
   the BLAS's own threads do as well as any split of ours (measured at 128 x 784 x 512). */
#define FNN_BLAS_SERIAL_MNK 262144.0
#define FNN_SPLIT_MIN_MNK 32768.0
#define FNN_SPLIT_MAX_MNK 2097152.0

/* At batch size 1 the dense forward is a GEMV, y (out) := w.T @ x.  Split by rows of w over
   the team (partial sums added), each thread reads the rows of w that the rank-1 optimizer
   step then updates on the same thread, so a core finds its half of the kernel in its own
   cache.  Only up to FNN_GEMV_SPLIT_OUT outputs (the partial sums live on the stack) and
   FNN_GEMV_SERIAL elements per thread: OpenBLAS 0.3.34 runs a GEMV of 784 x 512 on the
   calling thread (checked with a counting threads callback; 784 x 4096 it splits itself). */
#define FNN_GEMV_SPLIT_OUT 2048
#define FNN_GEMV_SERIAL (784 * 512)

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

/* Row blocks for C (m, n) := A (m, k) @ B (k, n): 0 to call the BLAS once for the whole
   product, else a multiple of the thread count, each block at least one row. */
static int64_t fnn_row_blocks(int64_t m, int64_t n, int64_t k) {
    const double mnk = (double)m * (double)n * (double)k;
    const int threads = fnn_get_num_threads();
    if (threads < 2 || mnk < FNN_SPLIT_MIN_MNK || mnk > FNN_SPLIT_MAX_MNK) return 0;
    int64_t blocks = threads;
    while (mnk / (double)blocks > FNN_BLAS_SERIAL_MNK) blocks += threads;
    return blocks <= m ? blocks : 0;
}

#define cblas_sgemm scipy_cblas_sgemm
#define cblas_dgemm scipy_cblas_dgemm
#define cblas_sgemv scipy_cblas_sgemv
#define cblas_dgemv scipy_cblas_dgemv
extern void scipy_openblas_set_num_threads(int);
extern int scipy_openblas_get_num_threads(void);
extern char *scipy_openblas_get_config(void);

#ifdef _OPENMP
/* OpenBLAS runs its parallel jobs on fastnn's OpenMP team instead of its own pthreads:
   one owner of threads (no OpenMP and BLAS pools competing for the cores), and each job
   runs with subnormals flushed (FTZ|DAZ; a GEMM on subnormal inputs is ~150x slower).
   OpenBLAS's jobs may wait on each other, so each one gets a thread of its own. */
struct fnn_blas_job {
    openblas_dojob_callback dojob;
    int i, dojob_data;
    void *data;
};

static void *fnn_blas_job_run(void *arg) {
    struct fnn_blas_job *job = (struct fnn_blas_job *)arg;
    FNN_CSR_SAVE
    job->dojob(job->i, job->data, job->dojob_data);
    FNN_CSR_RESTORE
    return NULL;
}

static void fnn_blas_threads(int sync, openblas_dojob_callback dojob, int numjobs,
                             size_t jobdata_elsize, void *jobdata, int dojob_data) {
    (void)sync;
    if (numjobs <= 64 && (numjobs > omp_get_thread_limit() ||
                          omp_get_active_level() >= omp_get_max_active_levels())) {
        /* Called from inside a parallel region (or past the thread limit), OpenMP would hand
           us fewer threads than jobs, and jobs waiting on each other in one thread would
           never finish: give each job a thread of its own instead (slow, but correct). */
        pthread_t tid[64];
        struct fnn_blas_job job[64];
        int started[64] = {0};
        for (int i = 0; i < numjobs; i++)
            job[i] = (struct fnn_blas_job){dojob, i, dojob_data,
                                           (char *)jobdata + (size_t)i * jobdata_elsize};
        for (int i = 1; i < numjobs; i++)
            started[i] = pthread_create(&tid[i], NULL, fnn_blas_job_run, &job[i]) == 0;
        fnn_blas_job_run(&job[0]);
        for (int i = 1; i < numjobs; i++) {
            if (started[i])
                pthread_join(tid[i], NULL);
            else
                fnn_blas_job_run(&job[i]); /* could not start a thread: last resort */
        }
        return;
    }
#pragma omp parallel num_threads(numjobs)
    {
        FNN_CSR_SAVE
        for (int i = omp_get_thread_num(); i < numjobs; i += omp_get_num_threads())
            dojob(i, (char *)jobdata + (size_t)i * jobdata_elsize, dojob_data);
        FNN_CSR_RESTORE
    }
}
#endif

void fnn_init(void) {
#ifdef _OPENMP
    /* Only where OpenMP promises full teams: with OMP_DYNAMIC or a thread limit below the
       core count the BLAS keeps its own threads. */
    if (!omp_get_dynamic() && omp_get_thread_limit() >= omp_get_num_procs())
        scipy_openblas_set_threads_callback_function(fnn_blas_threads);
#endif
}

int fnn_have_openmp(void) {
#ifdef _OPENMP
    return _OPENMP;
#else
    return 0;
#endif
}

const char *fnn_simd_targets(void) { return FNN_SIMD_TARGETS; }

void fnn_set_num_threads(int n) {
    if (n < 1) n = 1;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    scipy_openblas_set_num_threads(n);
}

int fnn_get_num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int fnn_blas_get_num_threads(void) { return scipy_openblas_get_num_threads(); }

const char *fnn_blas_config(void) { return scipy_openblas_get_config(); }

/* Rows are copied by the whole team: a random row misses the caches and the TLB, so two
   threads halve the wait (measured on MNIST batches: 79 -> 23 us). */
void fnn_gather_forward_u8(void *out, const void *x, const int64_t *idx, int64_t n,
                           int64_t row_bytes) {
    char *o = (char *)out;
    const char *src = (const char *)x;
#pragma omp parallel for schedule(static) if (n * row_bytes >= (1 << 16))
    for (int64_t i = 0; i < n; i++)
        memcpy(o + i * row_bytes, src + idx[i] * row_bytes, (size_t)row_bytes);
}

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

int fnn_dense_stack_owns(const struct fnn_dense_stack *s, int64_t n) {
    const struct fnn_dense_layer *L = s->layer;
    return s->part && n > 1 && s->part_threads > 1 && !fnn_in_parallel() &&
           fnn_get_num_threads() == s->part_threads && L[0].in >= 16 * s->part_threads &&
           (double)n * (double)L[0].in * (double)L[0].out > FNN_SPLIT_MAX_MNK;
}

#define T float
#define S f32
#define GEMM cblas_sgemm
#define GEMV cblas_sgemv
#define M(fn) fn##f
#define VEXP fnn_expf
#define VTANH fnn_tanhf
#include "fastnn_impl.h"

#define T double
#define S f64
#define GEMM cblas_dgemm
#define GEMV cblas_dgemv
#define M(fn) fn
#define VEXP exp
#define VTANH tanh
#include "fastnn_impl.h"
