/* bfloat16 products with float32 sums for a dense layer (see the bf16 block of fastnn.h).

   bfloat16 is the top half of a float32 (sign, 8-bit exponent, 7 stored significand bits),
   stored as uint16_t.  Three paths run the same kernels, chosen at run time (the best this
   machine has) or forced (fnn_bf16_set_path, FASTNN_BF16_PATH=amx|avx512bf16|portable):
   - amx: Intel AMX tiles (TDPBF16PS: a 16 x 32 by 32 x 16 block product per instruction);
   - avx512bf16: VDPBF16PS (16 float32 lanes += a pair of bf16 products each);
   - portable: plain loops in float32 (every x86-64 and any other CPU).
   The default build stays portable: only the functions below marked FNN_AMX / FNN_AVX512BF16
   are compiled for those instruction sets, and only called when the CPU and the kernel (the
   AMX tile state needs the kernel's permission) say they run.

   The packed layout of a (k, n) matrix B, shared by all three paths: tiles of 32 rows by 16
   columns, each 16 rows of 16 column pairs (B[2r][j], B[2r + 1][j]) ("VNNI pairs": a row of a
   tile is one 64-byte register of VDPBF16PS and one row of an AMX B tile), the k / 32 tiles of
   each 16-column block one after another, zero outside B:
     packed[((j / 16) ceil(k / 32) + i / 32) 512 + ((i % 32) / 2) 32 + (j % 16) 2 + i % 2] = B[i][j].
   Products of two bfloat16 (8-bit significands) are exact in float32 (24 bits): the paths
   differ only in how they add the products in float32 (the order; the instructions round each
   addition to nearest even, and treat subnormal inputs as zero as the kernels' FTZ/DAZ mode
   does for the portable path). */
#define _GNU_SOURCE
#include "runtime.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && (defined(__clang__) || __GNUC__ >= 11) && \
    !defined(FNN_NO_BF16_SIMD)
#define FNN_BF16_X86 1
#include <cpuid.h>
#include <immintrin.h>
#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
#endif
#define FNN_AVX512BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define FNN_AMX __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512bf16")))
#else
#define FNN_BF16_X86 0
#endif

#define FNN_BF16_TK 32    /* rows (k) of a packed tile */
#define FNN_BF16_TN 16    /* columns of a packed tile */
#define FNN_BF16_TILE 512 /* its elements */

/* Products of at least this many multiply-adds are shared by the team (the book's second
   layer, 128 x 512 x 10, is: its backward 48 -> 38 us on two threads). */
#define FNN_BF16_PAR_MNK (1 << 18)

static inline int64_t fnn_ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t fnn_min64(int64_t a, int64_t b) { return a < b ? a : b; }

int64_t fnn_bf16_packed_size(int64_t k, int64_t n) {
    return fnn_ceil_div(n, FNN_BF16_TN) * fnn_ceil_div(k, FNN_BF16_TK) * FNN_BF16_TILE;
}

/* The backward's scratch holds three parts, each starting on 64 bytes (a tile row that
   straddles two cache lines costs its loads and stores ~10% of the backward): up to 31
   elements of padding before each. */
#define FNN_BF16_SCRATCH_PAD 32

int64_t fnn_bf16_backward_scratch_size(int64_t n, int64_t in, int64_t out) {
    return n * out + fnn_bf16_packed_size(n, out) + in * n + 3 * FNN_BF16_SCRATCH_PAD;
}

/* q rounded up to the next 64-byte address (q is 2-byte aligned). */
static uint16_t *fnn_bf16_align64(uint16_t *q) {
    return q + ((64 - ((uintptr_t)q & 63)) & 63) / 2;
}

/* The parts of the backward's scratch: dz16 (n, out), dzp (fnn_bf16_packed_size(n, out)),
   xt (in, n), in that order. */
static void fnn_bf16_scratch_parts(uint16_t *scratch, int64_t n, int64_t out, uint16_t **dz16,
                                   uint16_t **dzp, uint16_t **xt) {
    *dz16 = fnn_bf16_align64(scratch);
    *dzp = fnn_bf16_align64(*dz16 + n * out);
    *xt = fnn_bf16_align64(*dzp + fnn_bf16_packed_size(n, out));
}

/* ---- paths ---------------------------------------------------------------------------- */

static const char *const fnn_bf16_names[FNN_BF16_N_PATH] = {"portable", "avx512bf16", "amx"};

const char *fnn_bf16_path_name(int path) {
    return path >= 0 && path < FNN_BF16_N_PATH ? fnn_bf16_names[path] : "none";
}

/* What the CPU and the operating system let this process run (bit p: path p). */
static int fnn_bf16_detect(void) {
    int paths = 1 << FNN_BF16_PORTABLE;
#if FNN_BF16_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return paths; /* OSXSAVE */
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    const uint64_t xcr0 = ((uint64_t)xhi << 32) | xlo;
    if (__get_cpuid_max(0, NULL) < 7) return paths;
    unsigned b7, c7, d7, a71, b71, c71, d71;
    __cpuid_count(7, 0, a, b7, c7, d7);
    __cpuid_count(7, 1, a71, b71, c71, d71);
    (void)c7; (void)b71; (void)c71; (void)d71;
    const int avx512 = (b7 & (1u << 16)) && (b7 & (1u << 30)) && (b7 & (1u << 31)) && /* f bw vl */
                       (a71 & (1u << 5)) &&                          /* avx512_bf16 */
                       (xcr0 & 0xe6) == 0xe6;                        /* the OS saves zmm, k */
    if (!avx512) return paths;
    paths |= 1 << FNN_BF16_AVX512BF16;
    const int amx = (d7 & (1u << 24)) && (d7 & (1u << 22)) && /* amx_tile, amx_bf16 */
                    (xcr0 & 0x60000) == 0x60000;              /* XTILECFG, XTILEDATA */
#ifdef __linux__
    /* the tile data (8 KiB of state) must be asked for once per process: ARCH_REQ_XCOMP_PERM
       for XFEATURE_XTILEDATA; a refusal (an old kernel, a seccomp policy) leaves AMX off */
    if (amx && syscall(SYS_arch_prctl, 0x1023, 18) == 0) paths |= 1 << FNN_BF16_AMX;
#else
    (void)amx;
#endif
#endif
    return paths;
}

static int fnn_bf16_avail = -1;  /* fnn_bf16_detect(), once */
static int fnn_bf16_forced = -2; /* fnn_bf16_set_path's path; -2: none (the environment's) */
static int fnn_bf16_env = -2;    /* FASTNN_BF16_PATH's path: -2 unset, -1 unknown/unavailable */

int fnn_bf16_paths(void) {
    int a = __atomic_load_n(&fnn_bf16_avail, __ATOMIC_ACQUIRE);
    if (a < 0) { /* any thread may detect: the result, and the permission asked, are the same */
        a = fnn_bf16_detect();
        const char *e = getenv("FASTNN_BF16_PATH");
        int env = -2;
        if (e && *e) {
            env = -1;
            for (int p = 0; p < FNN_BF16_N_PATH; p++)
                if (strcmp(e, fnn_bf16_names[p]) == 0) env = (a >> p) & 1 ? p : -1;
        }
        __atomic_store_n(&fnn_bf16_env, env, __ATOMIC_RELAXED);
        __atomic_store_n(&fnn_bf16_avail, a, __ATOMIC_RELEASE);
    }
    return a;
}

int fnn_bf16_get_path(void) {
    const int a = fnn_bf16_paths();
    const int f = __atomic_load_n(&fnn_bf16_forced, __ATOMIC_RELAXED);
    if (f >= 0) return f;
    const int env = __atomic_load_n(&fnn_bf16_env, __ATOMIC_RELAXED);
    if (env != -2) return env;
    for (int p = FNN_BF16_N_PATH - 1; p > 0; p--)
        if ((a >> p) & 1) return p;
    return FNN_BF16_PORTABLE;
}

int fnn_bf16_set_path(int path) {
    const int a = fnn_bf16_paths();
    if (path < 0) {
        __atomic_store_n(&fnn_bf16_forced, -2, __ATOMIC_RELAXED);
    } else {
        if (path >= FNN_BF16_N_PATH || !((a >> path) & 1)) return -1;
        __atomic_store_n(&fnn_bf16_forced, path, __ATOMIC_RELAXED);
    }
    return fnn_bf16_get_path();
}

/* The path a kernel runs: an unavailable forced path (refused by the Python wrappers before
   any kernel runs) falls back to the portable one. */
static int fnn_bf16_run_path(void) {
    const int p = fnn_bf16_get_path();
    return p < 0 ? FNN_BF16_PORTABLE : p;
}

/* ---- conversion ------------------------------------------------------------------------ */

/* float32 -> bfloat16 as VCVTNEPS2BF16 does it: round to nearest even on the top 16 bits, NaN
   kept NaN (made quiet: bit 6 set), zero and subnormal inputs to a zero of their sign. */
static inline uint16_t fnn_bf16_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    if ((u & 0x7f800000u) == 0) return (uint16_t)((u >> 16) & 0x8000u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float fnn_f32_of(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void fnn_bf16_convert_scalar(uint16_t *y, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = fnn_bf16_of(x[i]);
}

#if FNN_BF16_X86
FNN_AVX512BF16 static void fnn_bf16_convert_avx512(uint16_t *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
        _mm512_storeu_si512((void *)(y + i), (__m512i)h);
    }
    for (; i < n; i += 16) { /* masked: never touches memory past n */
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + i));
        _mm256_mask_storeu_epi16((void *)(y + i), m, (__m256i)h);
    }
}
#endif

/* y (n) := bf16(x (n)) on the path's instructions (bit-identical results on every path). */
static void fnn_bf16_convert_row(uint16_t *y, const float *x, int64_t n, int path) {
#if FNN_BF16_X86
    if (path != FNN_BF16_PORTABLE) {
        fnn_bf16_convert_avx512(y, x, n);
        return;
    }
#endif
    (void)path;
    fnn_bf16_convert_scalar(y, x, n);
}

#define FNN_BF16_CONVERT_CHUNK 4096

void fnn_bf16_convert_forward(uint16_t *y, const float *x, int64_t n) {
    const int path = fnn_bf16_run_path();
    const int64_t chunks = fnn_ceil_div(n, FNN_BF16_CONVERT_CHUNK);
    FNN_PARALLEL_BEGIN(n >= 4 * FNN_OMP_MIN_ELEMS)
#pragma omp for schedule(static)
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t i0 = c * FNN_BF16_CONVERT_CHUNK;
        fnn_bf16_convert_row(y + i0, x + i0, fnn_min64(FNN_BF16_CONVERT_CHUNK, n - i0), path);
    }
    FNN_PARALLEL_END
}

void fnn_bf16_gather_forward(uint16_t *out, const float *x, const int64_t *idx, int64_t n,
                             int64_t width) {
    const int path = fnn_bf16_run_path();
    FNN_PARALLEL_BEGIN(n * width * (int64_t)sizeof *x >= FNN_GATHER_PAR_BYTES) /* runtime.h */
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        if (i + FNN_GATHER_AHEAD < n)
            fnn_prefetch_row(x + idx[i + FNN_GATHER_AHEAD] * width, width * (int64_t)sizeof *x);
        fnn_bf16_convert_row(out + i * width, x + idx[i] * width, width, path);
    }
    FNN_PARALLEL_END
}

/* ---- packing ---------------------------------------------------------------------------- */

/* A packed tile from a 32 x 32 piece t of bf16 values (rows: k, columns: n): of its columns
   [16 h, 16 h + 16) (the pairs of rows (2p, 2p + 1) of each column), or of its rows [16 h,
   16 h + 16) as columns of the transposed piece (the pairs (t[r][2p], t[r][2p + 1]) are two
   adjacent bf16 in a row of t: a 16 x 16 transpose of 32-bit pairs). */
static void fnn_bf16_tile_of_cols(uint16_t *tile, uint16_t (*t)[32], int h) {
    for (int p = 0; p < 16; p++)
        for (int c = 0; c < 16; c++) {
            tile[p * 32 + 2 * c] = t[2 * p][16 * h + c];
            tile[p * 32 + 2 * c + 1] = t[2 * p + 1][16 * h + c];
        }
}

static void fnn_bf16_tile_of_rows(uint16_t *tile, uint16_t (*t)[32], int h) {
    for (int p = 0; p < 16; p++)
        for (int c = 0; c < 16; c++) {
            tile[p * 32 + 2 * c] = t[16 * h + c][2 * p];
            tile[p * 32 + 2 * c + 1] = t[16 * h + c][2 * p + 1];
        }
}

#if FNN_BF16_X86
/* The same two, in AVX-512: one two-source permutation of 16-bit lanes per tile row, and one
   gather of sixteen 32-bit pairs per tile row (the same bits). */
static const uint16_t fnn_bf16_interleave[2][32] __attribute__((aligned(64))) = {
    {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
     8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47},
    {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
     24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63}};

FNN_AVX512BF16 static void fnn_bf16_tile_of_cols_avx512(uint16_t *tile, uint16_t (*t)[32], int h) {
    const __m512i idx = _mm512_load_si512((const void *)fnn_bf16_interleave[h]);
    for (int p = 0; p < 16; p++) {
        const __m512i a = _mm512_load_si512((const void *)t[2 * p]);
        const __m512i b = _mm512_load_si512((const void *)t[2 * p + 1]);
        _mm512_storeu_si512((void *)(tile + p * 32), _mm512_permutex2var_epi16(a, idx, b));
    }
}

FNN_AVX512BF16 static void fnn_bf16_tile_of_rows_avx512(uint16_t *tile, uint16_t (*t)[32], int h) {
    const __m512i rows = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(16));
    const int *base = (const int *)(const void *)t[16 * h]; /* t as 32 x 16 pairs */
    for (int p = 0; p < 16; p++)
        _mm512_storeu_si512((void *)(tile + p * 32), _mm512_i32gather_epi32(rows, base + p, 4));
}
#endif

#if FNN_BF16_X86
/* Tile row r0 / 32 of every column block of bp := pack(bf16(src)) straight from src (k, n)
   float32, padding included: each row p of a tile is one conversion of the 16 columns of src's
   rows r0 + 2p and r0 + 2p + 1 (VCVTNE2PS2BF16: both rows in one register) and one
   permutation that interleaves them into pairs; rows past k and columns past n read as 0.
   The same bits as the conversion then fnn_bf16_tile_of_cols below, in half the passes. */
static const uint16_t fnn_bf16_pairs[32] __attribute__((aligned(64))) = {
    0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
    8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};

FNN_AVX512BF16 static void fnn_bf16_pack_cols_avx512(uint16_t *bp, const float *src, int64_t r0,
                                                     int64_t k, int64_t n, int64_t j0,
                                                     int64_t j1) {
    const __m512i idx = _mm512_load_si512((const void *)fnn_bf16_pairs);
    const int64_t rows = fnn_min64(32, k - r0), kb = fnn_ceil_div(k, FNN_BF16_TK);
    const int64_t nb = fnn_ceil_div(fnn_min64(n, j1), FNN_BF16_TN);
    for (int64_t jb = j0 / FNN_BF16_TN; jb < nb; jb++) {
        const int64_t cols = fnn_min64(16, n - 16 * jb);
        const __mmask16 m = cols >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << cols) - 1);
        uint16_t *tile = bp + (jb * kb + r0 / 32) * FNN_BF16_TILE;
        const float *col = src + r0 * n + 16 * jb;
        for (int64_t q = 0; q < 16; q++) {
            const __m512 a = 2 * q < rows ? _mm512_maskz_loadu_ps(m, col + 2 * q * n)
                                          : _mm512_setzero_ps();
            const __m512 b = 2 * q + 1 < rows ? _mm512_maskz_loadu_ps(m, col + (2 * q + 1) * n)
                                              : _mm512_setzero_ps();
            const __m512i h = (__m512i)_mm512_cvtne2ps_pbh(b, a); /* a in lanes 0-15 */
            _mm512_storeu_si512((void *)(tile + q * 32), _mm512_permutexvar_epi16(idx, h));
        }
    }
}
#endif

/* Rows [r0, r0 + 32) of a float32 matrix src (k, n), its columns [j0, j1) (multiples of 32;
   j1 may pass n), into their tiles: bp := pack(bf16(src)) (tile row r0 / 32 of those column
   blocks) and bt := pack(bf16(src.T)) (column blocks r0 / 16 and r0 / 16 + 1 of src.T (n, k),
   those tile rows), padding included; either may be NULL.  Each 32 x 32 piece goes through a
   small array on the stack, converted a row at a time. */
static void fnn_bf16_pack_rows(uint16_t *bp, uint16_t *bt, const float *src, int64_t r0,
                               int64_t k, int64_t n, int64_t j0, int64_t j1, int path) {
#if FNN_BF16_X86
    if (!bt && path != FNN_BF16_PORTABLE) {
        if (bp) fnn_bf16_pack_cols_avx512(bp, src, r0, k, n, j0, j1);
        return;
    }
#endif
    uint16_t t[32][32] __attribute__((aligned(64)));
    const int64_t rows = fnn_min64(32, k - r0);
    const int64_t kb = fnn_ceil_div(k, FNN_BF16_TK), nb = fnn_ceil_div(n, FNN_BF16_TN);
    const int64_t kbt = fnn_ceil_div(n, FNN_BF16_TK), nbt = fnn_ceil_div(k, FNN_BF16_TN);
    void (*of_cols)(uint16_t *, uint16_t(*)[32], int) = fnn_bf16_tile_of_cols;
    void (*of_rows)(uint16_t *, uint16_t(*)[32], int) = fnn_bf16_tile_of_rows;
#if FNN_BF16_X86
    if (path != FNN_BF16_PORTABLE) {
        of_cols = fnn_bf16_tile_of_cols_avx512;
        of_rows = fnn_bf16_tile_of_rows_avx512;
    }
#endif
    for (; j0 < fnn_min64(n, j1); j0 += 32) {
        const int64_t cols = fnn_min64(32, n - j0);
        for (int64_t r = 0; r < 32; r++) {
            int64_t c = 0;
            if (r < rows) {
                fnn_bf16_convert_row(t[r], src + (r0 + r) * n + j0, cols, path);
                c = cols;
            }
            for (; c < 32; c++) t[r][c] = 0;
        }
        for (int h = 0; h < 2; h++) {
            if (bp && j0 / 16 + h < nb)
                of_cols(bp + ((j0 / 16 + h) * kb + r0 / 32) * FNN_BF16_TILE, t, h);
            if (bt && r0 / 16 + h < nbt)
                of_rows(bt + ((r0 / 16 + h) * kbt + j0 / 32) * FNN_BF16_TILE, t, h);
        }
    }
}

void fnn_bf16_pack_forward(uint16_t *wp, uint16_t *wtp, const float *w, int64_t in,
                           int64_t out) {
    const int path = fnn_bf16_run_path();
    const int64_t blocks = fnn_ceil_div(in, 32);
    FNN_PARALLEL_BEGIN(in * out >= FNN_OMP_MIN_ELEMS)
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < blocks; blk++)
        fnn_bf16_pack_rows(wp, wtp, w, 32 * blk, in, out, 0, out, path);
    FNN_PARALLEL_END
}

/* 32-row blocks stepped per call of the plain step in fnn_optimizer_step_bf16pack_f32. */
#ifndef FNN_BF16_STEP_BLOCKS
#define FNN_BF16_STEP_BLOCKS 4
#endif

void fnn_optimizer_step_bf16pack_f32(float *p, uint16_t *wp, uint16_t *wtp, const float *g,
                                     int64_t off, int64_t in, int64_t out,
                                     const struct fnn_optimizer *o) {
    const int path = fnn_bf16_run_path();
    const int64_t blocks = fnn_ceil_div(in, 32);
    FNN_PARALLEL_BEGIN(in * out >= FNN_OMP_MIN_ELEMS)
    /* each thread its share of the 32-row blocks (as `omp for schedule(static)` shares them),
       in chunks of FNN_BF16_STEP_BLOCKS: the plain step on a chunk's rows (each element's
       rule reads only its own values, so any split gives the same float32 results; one call
       per chunk, as each call inside the team opens a region of its own), then their packs
       while they are in cache */
    int64_t b0, b1;
    fnn_static_rows(fnn_thread_num(), fnn_team_size(), blocks, &b0, &b1);
    for (int64_t c0 = b0; c0 < b1; c0 += FNN_BF16_STEP_BLOCKS) {
        const int64_t c1 = fnn_min64(b1, c0 + FNN_BF16_STEP_BLOCKS);
        const int64_t r0 = 32 * c0, r1 = fnn_min64(in, 32 * c1);
        fnn_optimizer_step_f32(p, g, off + r0 * out, (r1 - r0) * out, o);
        for (int64_t blk = c0; blk < c1; blk++)
            fnn_bf16_pack_rows(wp, wtp, p + off, 32 * blk, in, out, 0, out, path);
    }
    FNN_PARALLEL_END
}

/* ---- the product c (m, n) := a (m, k) @ B, B packed ----------------------------------------
   a row-major with lda elements per row, c float32 with ldc per row; overwrites c.  Each path
   cuts c in blocks of rows x columns shared by the team (`omp for`, so inside a parallel
   region, with its barrier at the end); a thread takes consecutive row blocks of one column
   block, which keeps that block of B in its cache (AMX: fnn_bf16_gemm_amx says when). */

/* Portable: rows of 4 x one 16-column tile, in vectors of 8 float32 (one AVX2 register).  Row q
   of a tile is 16 32-bit words, the pairs (B[2q][j], B[2q + 1][j]): B[2q][j] is word j shifted
   left by 16, B[2q + 1][j] its top half; the same for a pair of a row of a.  A block of fewer
   rows repeats its last row and stores only its own. */
typedef float fnn_f32x8 __attribute__((vector_size(32)));
typedef uint32_t fnn_u32x8 __attribute__((vector_size(32), aligned(4)));

FNN_VEC static void fnn_bf16_block_portable(float *c, int64_t ldc, const uint16_t *a,
                                            int64_t lda, const uint16_t *bp, int64_t m,
                                            int64_t n, int64_t k, int64_t i0, int64_t jb) {
    fnn_f32x8 acc[4][2] = {{{0}}};
    const int64_t rows = fnn_min64(4, m - i0), kb = fnn_ceil_div(k, FNN_BF16_TK);
    const uint16_t *bcol = bp + jb * kb * FNN_BF16_TILE, *ar[4];
    for (int r = 0; r < 4; r++) ar[r] = a + (i0 + fnn_min64(r, rows - 1)) * lda;
    for (int64_t q = 0; 2 * q < k; q++) { /* the pair (2q, 2q + 1) of k: row q of the tiles */
        const fnn_u32x8 *w = (const fnn_u32x8 *)(bcol + q * 32);
        const fnn_f32x8 b0[2] = {(fnn_f32x8)(w[0] << 16), (fnn_f32x8)(w[1] << 16)};
        const fnn_f32x8 b1[2] = {(fnn_f32x8)(w[0] & 0xffff0000u), (fnn_f32x8)(w[1] & 0xffff0000u)};
        const int two = 2 * q + 1 < k; /* else k is odd and this pair its last element */
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            const float a0 = fnn_f32_of(ar[r][2 * q]);
            const float a1 = two ? fnn_f32_of(ar[r][2 * q + 1]) : 0.0f;
            acc[r][0] = acc[r][0] + a0 * b0[0] + a1 * b1[0];
            acc[r][1] = acc[r][1] + a0 * b0[1] + a1 * b1[1];
        }
    }
    const int64_t cols = fnn_min64(16, n - jb * 16);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c0 = 0; c0 < cols; c0++)
            c[(i0 + r) * ldc + jb * 16 + c0] = acc[r][c0 / 8][c0 % 8];
}

static void fnn_bf16_gemm_portable(float *c, int64_t ldc, const uint16_t *a, int64_t lda,
                                   const uint16_t *bp, int64_t m, int64_t n, int64_t k) {
    const int64_t rb = fnn_ceil_div(m, 4), cb = fnn_ceil_div(n, 16);
#pragma omp for schedule(static)
    for (int64_t it = 0; it < rb * cb; it++)
        fnn_bf16_block_portable(c, ldc, a, lda, bp, m, n, k, (it % rb) * 4, it / rb);
}

#if FNN_BF16_X86
/* AVX512-BF16: R rows (up to 8) x NC tiles of 16 columns (1 or 2), R x NC accumulators;
   each pair of k is one 32-bit broadcast of a row of a and one VDPBF16PS per accumulator.
   An odd k's last pair reads its one element alone; the last tile's columns past n are
   stored masked. */
FNN_AVX512BF16 static inline __attribute__((always_inline)) void fnn_bf16_block_avx512(
    float *c, int64_t ldc, const uint16_t *a, int64_t lda, const uint16_t *bp, int64_t n,
    int64_t k, int64_t i0, int64_t jb, const int R, const int NC) {
    __m512 acc[8][2];
    const int64_t kb = fnn_ceil_div(k, FNN_BF16_TK);
    const uint16_t *b0 = bp + jb * kb * FNN_BF16_TILE, *b1 = b0 + kb * FNN_BF16_TILE;
    for (int r = 0; r < R; r++)
        for (int t = 0; t < NC; t++) acc[r][t] = _mm512_setzero_ps();
    int64_t q = 0;
    for (; 2 * q + 1 < k; q++) {
        const __m512bh B0 = (__m512bh)_mm512_loadu_si512((const void *)(b0 + q * 32));
        const __m512bh B1 = NC > 1 ? (__m512bh)_mm512_loadu_si512((const void *)(b1 + q * 32)) : B0;
        for (int r = 0; r < R; r++) {
            int32_t pair;
            memcpy(&pair, a + (i0 + r) * lda + 2 * q, sizeof pair);
            const __m512bh A = (__m512bh)_mm512_set1_epi32(pair);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], A, B0);
            if (NC > 1) acc[r][1] = _mm512_dpbf16_ps(acc[r][1], A, B1);
        }
    }
    if (2 * q < k) { /* odd k: the pair (k - 1, 0) */
        const __m512bh B0 = (__m512bh)_mm512_loadu_si512((const void *)(b0 + q * 32));
        const __m512bh B1 = NC > 1 ? (__m512bh)_mm512_loadu_si512((const void *)(b1 + q * 32)) : B0;
        for (int r = 0; r < R; r++) {
            const __m512bh A = (__m512bh)_mm512_set1_epi32((int32_t)a[(i0 + r) * lda + 2 * q]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], A, B0);
            if (NC > 1) acc[r][1] = _mm512_dpbf16_ps(acc[r][1], A, B1);
        }
    }
    for (int t = 0; t < NC; t++) {
        const int64_t cols = fnn_min64(16, n - (jb + t) * 16);
        const __mmask16 mk = cols >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << cols) - 1);
        for (int r = 0; r < R; r++)
            _mm512_mask_storeu_ps(c + (i0 + r) * ldc + (jb + t) * 16, mk, acc[r][t]);
    }
}

/* The block of c at rows [i0, i0 + 8) (those below m), column tiles jb and jb + 1 (below n). */
FNN_AVX512BF16 static void fnn_bf16_block8_avx512(float *c, int64_t ldc, const uint16_t *a,
                                                  int64_t lda, const uint16_t *bp, int64_t m,
                                                  int64_t n, int64_t k, int64_t i0, int64_t jb) {
    const int rows = (int)fnn_min64(8, m - i0), two = jb + 1 < fnn_ceil_div(n, 16);
#define FNN_BLOCK(R)                                                                    \
    case R:                                                                             \
        if (two) fnn_bf16_block_avx512(c, ldc, a, lda, bp, n, k, i0, jb, R, 2);         \
        else fnn_bf16_block_avx512(c, ldc, a, lda, bp, n, k, i0, jb, R, 1);             \
        break;
    switch (rows) {
        FNN_BLOCK(1) FNN_BLOCK(2) FNN_BLOCK(3) FNN_BLOCK(4)
        FNN_BLOCK(5) FNN_BLOCK(6) FNN_BLOCK(7) FNN_BLOCK(8)
    }
#undef FNN_BLOCK
}

FNN_AVX512BF16 static void fnn_bf16_gemm_avx512(float *c, int64_t ldc, const uint16_t *a,
                                                int64_t lda, const uint16_t *bp, int64_t m,
                                                int64_t n, int64_t k) {
    const int64_t rb = fnn_ceil_div(m, 8), nb = fnn_ceil_div(n, 16), cb = fnn_ceil_div(nb, 2);
#pragma omp for schedule(static)
    for (int64_t it = 0; it < rb * cb; it++)
        fnn_bf16_block8_avx512(c, ldc, a, lda, bp, m, n, k, (it % rb) * 8, (it / rb) * 2);
}

/* AMX: blocks of 32 rows x 32 columns, 2 x 2 tiles of c (tmm0-3) from 2 tiles of a (tmm4-5)
   and 2 of B (tmm6-7) per 32 of k.  A tile of a that would cross the end of a's rows or of k
   is copied, zero-padded, to the stack first, and a tile of c that would cross the end of c
   is stored (or loaded) through the stack: no tile load or store touches memory outside the
   operands. */
struct fnn_tilecfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
};

/* The 16 x 32 tile of a at (i0, k0) into buf (16 x 32), zero past m and k. */
static void fnn_bf16_a_tile(uint16_t *buf, const uint16_t *a, int64_t lda, int64_t m,
                            int64_t k, int64_t i0, int64_t k0) {
    const int64_t rows = fnn_min64(16, m - i0), cols = fnn_min64(32, k - k0);
    memset(buf, 0, 16 * 32 * sizeof *buf);
    for (int64_t r = 0; r < rows; r++)
        memcpy(buf + r * 32, a + (i0 + r) * lda + k0, (size_t)cols * sizeof *buf);
}

/* Tile t of c at (i0 + 16 ti, j0 + 16 tj): stored, or loaded, through cbuf where it crosses
   c's end (rows past m and columns past n are neither read nor written). */
#define FNN_AMX_C(t, ti, tj, store)                                                        \
    do {                                                                                   \
        const int64_t r_ = fnn_min64(16, m - i0 - 16 * (ti));                              \
        const int64_t c_ = fnn_min64(16, n - j0 - 16 * (tj));                              \
        float *at_ = c + (i0 + 16 * (ti)) * ldc + j0 + 16 * (tj);                          \
        if (r_ == 16 && c_ == 16) {                                                        \
            if (store) _tile_stored(t, at_, ldc * (int64_t)sizeof(float));                 \
            else _tile_loadd(t, at_, ldc * (int64_t)sizeof(float));                        \
        } else if (store) {                                                                \
            _tile_stored(t, cbuf, 64);                                                     \
            for (int64_t rr_ = 0; rr_ < r_; rr_++)                                         \
                memcpy(at_ + rr_ * ldc, cbuf + rr_ * 16, (size_t)c_ * sizeof(float));      \
        } else {                                                                           \
            memset(cbuf, 0, sizeof cbuf);                                                  \
            for (int64_t rr_ = 0; rr_ < r_; rr_++)                                         \
                memcpy(cbuf + rr_ * 16, at_ + rr_ * ldc, (size_t)c_ * sizeof(float));      \
            _tile_loadd(t, cbuf, 64);                                                      \
        }                                                                                  \
    } while (0)

/* The block of c at (i0, j0) := (acc ? itself : 0) + its product over the k tiles [t0, t1).
   ap, or NULL: a's tiles of these rows and k tiles, copied in a row (fnn_bf16_a_panel).
   at, or NULL: a's two tiles of these rows in the last k tile, copied (when k % 32 != 0). */
FNN_AMX static inline __attribute__((always_inline)) void
fnn_bf16_block_amx(float *c, int64_t ldc, const uint16_t *a, int64_t lda, const uint16_t *ap,
                   const uint16_t *at, const uint16_t *bp, int64_t m, int64_t n, int64_t k,
                   int64_t i0, int64_t j0, int64_t t0, int64_t t1, int acc) {
    uint16_t abuf[2][16 * 32] __attribute__((aligned(64)));
    float cbuf[16 * 16] __attribute__((aligned(64)));
    const int64_t kb = fnn_ceil_div(k, FNN_BF16_TK), nb = fnn_ceil_div(n, FNN_BF16_TN);
    const int rows2 = i0 + 16 < m, cols2 = j0 / 16 + 1 < nb;
    const int full0 = i0 + 16 <= m, full1 = i0 + 32 <= m;
    const uint16_t *b0 = bp + (j0 / 16) * kb * FNN_BF16_TILE, *b1 = b0 + kb * FNN_BF16_TILE;
    const int64_t stride = lda * (int64_t)sizeof(uint16_t);
    if (acc) {
        FNN_AMX_C(0, 0, 0, 0);
        if (cols2) FNN_AMX_C(1, 0, 1, 0);
        if (rows2) FNN_AMX_C(2, 1, 0, 0);
        if (rows2 && cols2) FNN_AMX_C(3, 1, 1, 0);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    for (int64_t t = t0; t < t1; t++) {
        const int64_t k0 = t * FNN_BF16_TK;
        const int kfull = k0 + FNN_BF16_TK <= k;
        if (ap) {
            _tile_loadd(4, ap + (t - t0) * FNN_BF16_TILE, 64);
        } else if (at && !kfull) {
            _tile_loadd(4, at, 64);
        } else if (full0 && kfull) {
            _tile_loadd(4, a + i0 * lda + k0, stride);
        } else {
            fnn_bf16_a_tile(abuf[0], a, lda, m, k, i0, k0);
            _tile_loadd(4, abuf[0], 64);
        }
        _tile_loadd(6, b0 + t * FNN_BF16_TILE, 64);
        _tile_dpbf16ps(0, 4, 6);
        if (cols2) {
            _tile_loadd(7, b1 + t * FNN_BF16_TILE, 64);
            _tile_dpbf16ps(1, 4, 7);
        }
        if (rows2) {
            if (ap) {
                _tile_loadd(5, ap + (t1 - t0 + t - t0) * FNN_BF16_TILE, 64);
            } else if (at && !kfull) {
                _tile_loadd(5, at + FNN_BF16_TILE, 64);
            } else if (full1 && kfull) {
                _tile_loadd(5, a + (i0 + 16) * lda + k0, stride);
            } else {
                fnn_bf16_a_tile(abuf[1], a, lda, m, k, i0 + 16, k0);
                _tile_loadd(5, abuf[1], 64);
            }
            _tile_dpbf16ps(2, 5, 6);
            if (cols2) _tile_dpbf16ps(3, 5, 7);
        }
    }
    FNN_AMX_C(0, 0, 0, 1);
    if (cols2) FNN_AMX_C(1, 0, 1, 1);
    if (rows2) FNN_AMX_C(2, 1, 0, 1);
    if (rows2 && cols2) FNN_AMX_C(3, 1, 1, 1);
}
#undef FNN_AMX_C

/* Big products (a past FNN_AMX_A_BIG elements) go in panels: each share of the team takes
   FNN_AMX_NC columns of c at a time and runs k in chunks of FNN_AMX_KC, so that chunk of B
   (KC x NC, 256 KiB) stays in the core's L2 while the rows of a stream by, each 32 x KC piece
   of a (32 KiB) read once from memory and reused for the NC / 32 column blocks.  Same tile
   products in the same order: the same results as one pass over k (c is float32 between the
   chunks). */
#define FNN_AMX_A_BIG (1 << 19)
#define FNN_AMX_NC 256
#define FNN_AMX_KC 512
/* Products whose B is at most this many bytes (half a core's L2 here) run their blocks row
   block after row block. */
#define FNN_AMX_B_ROWS (1 << 20)
/* Products of at most this many 32-row blocks keep their partial k tiles of a (64 KiB). */
#define FNN_AMX_TAIL_ROWS 32

/* The tile configuration of the AMX blocks, on this thread (_tile_release when done). */
FNN_AMX static void fnn_bf16_amx_config(void) {
    struct fnn_tilecfg cfg __attribute__((aligned(64)));
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) { /* every tile 16 rows of 64 bytes */
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    /* LDTILECFG, per thread.  Not GCC's _tile_loadconfig: its asm names only a pointer's worth
       of the operand as read, so the compiler may drop the stores to rows and colsb above
       (it did once this function stopped being inlined) */
    __asm__ volatile("ldtilecfg %0" : : "m"(cfg));
}

FNN_AMX static void fnn_bf16_amx_release(void) { _tile_release(); }

/* The 32 x 32 block of c at (i0, j0), as fnn_bf16_gemm_amx computes it (tiles configured). */
FNN_AMX static void fnn_bf16_block32_amx(float *c, int64_t ldc, const uint16_t *a, int64_t lda,
                                         const uint16_t *bp, int64_t m, int64_t n, int64_t k,
                                         int64_t i0, int64_t j0) {
    fnn_bf16_block_amx(c, ldc, a, lda, NULL, NULL, bp, m, n, k, i0, j0, 0, fnn_ceil_div(k, 32),
                       0);
}

FNN_AMX static void fnn_bf16_gemm_amx(float *c, int64_t ldc, const uint16_t *a, int64_t lda,
                                      const uint16_t *bp, int64_t m, int64_t n, int64_t k) {
    fnn_bf16_amx_config();
    const int64_t rb = fnn_ceil_div(m, 32), cb = fnn_ceil_div(n, 32), kb = fnn_ceil_div(k, 32);
    if (m * k <= FNN_AMX_A_BIG || n <= FNN_AMX_NC) {
        /* a thread's blocks run across the column blocks of a row block, then the next row
           block, so each thread writes whole rows of c, the rows the epilogue and the next
           kernels read on this thread; when B does not fit in L2, down the row blocks of a
           column block instead, so each block of B is read from memory once.  With few row
           blocks, each one's last, partial k tile of a is copied once per thread, not once
           per block (a copy a tile load reads at once is slow) */
        const int rows = 2 * cb * kb * FNN_BF16_TILE * (int64_t)sizeof *bp <= FNN_AMX_B_ROWS;
        uint16_t tails[FNN_AMX_TAIL_ROWS][2 * FNN_BF16_TILE] __attribute__((aligned(64)));
        const int cache = k % FNN_BF16_TK && rb <= FNN_AMX_TAIL_ROWS;
        uint64_t have = 0; /* bit r: tails[r] copied */
#pragma omp for schedule(static)
        for (int64_t it = 0; it < rb * cb; it++) {
            const int64_t r = rows ? it / cb : it % rb, j = rows ? it % cb : it / rb;
            if (cache && !(have >> r & 1)) {
                for (int64_t h = 0; h < 2; h++)
                    fnn_bf16_a_tile(tails[r] + h * FNN_BF16_TILE, a, lda, m, k, r * 32 + 16 * h,
                                    (kb - 1) * FNN_BF16_TK);
                have |= (uint64_t)1 << r;
            }
            fnn_bf16_block_amx(c, ldc, a, lda, NULL, cache ? tails[r] : NULL, bp, m, n, k, r * 32,
                               j * 32, 0, kb, 0);
        }
    } else {
        const int64_t per = FNN_AMX_NC / 32, kc = FNN_AMX_KC / 32, panels = fnn_ceil_div(cb, per);
        uint16_t ap[2 * (FNN_AMX_KC / 32) * FNN_BF16_TILE] __attribute__((aligned(64)));
#pragma omp for schedule(static)
        for (int64_t p = 0; p < panels; p++)
            for (int64_t t0 = 0; t0 < kb; t0 += kc)
                for (int64_t r = 0; r < rb; r++) {
                    const int64_t t1 = fnn_min64(kb, t0 + kc);
                    /* a's 32 x KC piece, tile after tile: one read of a, in tile rows of 64
                       bytes (rows of a whose length is a power of two would otherwise share
                       a few L1 sets) */
                    for (int64_t h = 0; h < 2; h++)
                        for (int64_t t = t0; t < t1; t++)
                            fnn_bf16_a_tile(ap + (h * (t1 - t0) + t - t0) * FNN_BF16_TILE, a, lda,
                                            m, k, r * 32 + 16 * h, t * FNN_BF16_TK);
                    for (int64_t j = p * per; j < fnn_min64(cb, (p + 1) * per); j++)
                        fnn_bf16_block_amx(c, ldc, a, lda, ap, NULL, bp, m, n, k, r * 32, j * 32,
                                           t0, t1, t0 > 0);
                }
    }
    _tile_release();
}
#endif

/* Share u of P of the forward product of an owned layer 0 (runtime.h), on this thread. */
#if FNN_BF16_X86
FNN_AMX static void fnn_bf16_share_amx(float *c, const uint16_t *x16, const uint16_t *wp,
                                       int64_t n, int64_t in, int64_t out, int64_t t0,
                                       int64_t t1) {
    fnn_bf16_amx_config();
    const int64_t rb = fnn_ceil_div(n, 32), cb = fnn_ceil_div(out, 32), kb = fnn_ceil_div(in, 32);
    uint16_t tails[2 * FNN_BF16_TILE] __attribute__((aligned(64)));
    const int tail = t1 == kb && in % FNN_BF16_TK; /* the partial last k tile: copied per row block */
    for (int64_t r = 0; r < rb; r++) {
        if (tail)
            for (int64_t h = 0; h < 2; h++)
                fnn_bf16_a_tile(tails + h * FNN_BF16_TILE, x16, in, n, in, r * 32 + 16 * h,
                                (kb - 1) * FNN_BF16_TK);
        for (int64_t j = 0; j < cb; j++)
            fnn_bf16_block_amx(c, out, x16, in, NULL, tail ? tails : NULL, wp, n, out, in, r * 32,
                               j * 32, t0, t1, 0);
    }
    _tile_release();
}
#endif

void fnn_bf16_forward_share(float *c, const uint16_t *x16, const uint16_t *wp, int64_t n,
                            int64_t in, int64_t out, int64_t u, int64_t P) {
    int64_t t0, t1;
    fnn_static_rows(u, P, fnn_ceil_div(in, FNN_BF16_TK), &t0, &t1);
#if FNN_BF16_X86
    fnn_bf16_share_amx(c, x16, wp, n, in, out, t0, t1);
#else
    (void)c, (void)x16, (void)wp, (void)n, (void)out; /* never: no AMX, no shares (runtime.h) */
#endif
}

int fnn_bf16_shares_on_tiles(void) { return fnn_bf16_run_path() == FNN_BF16_AMX; }

void fnn_bf16_convert_row_f32(uint16_t *y, const float *x, int64_t n) {
    fnn_bf16_convert_row(y, x, n, fnn_bf16_run_path());
}

/* Inside a parallel region (or on one thread): c (m, n) := a (m, k) @ B on the path. */
static void fnn_bf16_gemm(float *c, int64_t ldc, const uint16_t *a, int64_t lda,
                          const uint16_t *bp, int64_t m, int64_t n, int64_t k, int path) {
#if FNN_BF16_X86
    if (path == FNN_BF16_AMX) {
        fnn_bf16_gemm_amx(c, ldc, a, lda, bp, m, n, k);
        return;
    }
    if (path == FNN_BF16_AVX512BF16) {
        fnn_bf16_gemm_avx512(c, ldc, a, lda, bp, m, n, k);
        return;
    }
#endif
    (void)path;
    fnn_bf16_gemm_portable(c, ldc, a, lda, bp, m, n, k);
}

/* The AMX tile configuration of this thread, around fnn_bf16_gemm_block calls (on = 1, then 0);
   nothing on the other paths. */
static void fnn_bf16_tiles(int path, int on) {
#if FNN_BF16_X86
    if (path == FNN_BF16_AMX) {
        if (on) fnn_bf16_amx_config();
        else fnn_bf16_amx_release();
    }
#endif
    (void)path, (void)on;
}

/* The 32 x 32 block at (i0, j0) (multiples of 32) of a (m, k) @ B into cb (its rows ldc apart;
   rows past m and columns past n not written), on this thread, in the blocks of fnn_bf16_gemm
   on the path: the same sums, bit for bit (the AMX panels of big products only reorder the
   blocks and keep c in float32 between chunks of k). */
static void fnn_bf16_gemm_block(float *cb, int64_t ldc, const uint16_t *a, int64_t lda,
                                const uint16_t *bp, int64_t m, int64_t n, int64_t k, int64_t i0,
                                int64_t j0, int path) {
    /* the block's rows of a and column blocks of B, as a product of its own at (0, 0) */
    a += i0 * lda;
    bp += (j0 / FNN_BF16_TN) * fnn_ceil_div(k, FNN_BF16_TK) * FNN_BF16_TILE;
    m -= i0;
    n -= j0;
#if FNN_BF16_X86
    if (path == FNN_BF16_AMX) {
        fnn_bf16_block32_amx(cb, ldc, a, lda, bp, m, n, k, 0, 0);
        return;
    }
    if (path == FNN_BF16_AVX512BF16) {
        for (int64_t r = 0; r < fnn_min64(32, m); r += 8)
            fnn_bf16_block8_avx512(cb, ldc, a, lda, bp, m, n, k, r, 0);
        return;
    }
#endif
    (void)path;
    for (int64_t r = 0; r < fnn_min64(32, m); r += 4)
        for (int64_t jb = 0; jb < fnn_min64(2, fnn_ceil_div(n, 16)); jb++)
            fnn_bf16_block_portable(cb, ldc, a, lda, bp, m, n, k, r, jb);
}

/* The 32 x 32 block of xt (in, n) := x.T at (i0, r0), x (n, in) bf16. */
static void fnn_bf16_transpose_scalar(uint16_t *xt, const uint16_t *x, int64_t n, int64_t in,
                                      int64_t r0, int64_t i0) {
    for (int64_t i = i0; i < fnn_min64(i0 + 32, in); i++)
        for (int64_t r = r0; r < fnn_min64(r0 + 32, n); r++) xt[i * n + r] = x[r * in + i];
}

#if FNN_BF16_X86
static const uint16_t fnn_bf16_deinterleave[2][32] __attribute__((aligned(64))) = {
    {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30,
     32, 34, 36, 38, 40, 42, 44, 46, 48, 50, 52, 54, 56, 58, 60, 62},
    {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
     33, 35, 37, 39, 41, 43, 45, 47, 49, 51, 53, 55, 57, 59, 61, 63}};

/* The same for a whole block inside x (32 rows, columns i0 + 32 <= in): two rows of xt at a
   time from two gathers of the 32-bit pairs (x[r][i], x[r][i + 1]), split by permutations. */
FNN_AVX512BF16 static void fnn_bf16_transpose_avx512(uint16_t *xt, const uint16_t *x, int64_t n,
                                                     int64_t in, int64_t r0, int64_t i0) {
    const __m512i lo = _mm512_load_si512((const void *)fnn_bf16_deinterleave[0]);
    const __m512i hi = _mm512_load_si512((const void *)fnn_bf16_deinterleave[1]);
    const __m512i rows = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32((int)in)); /* in 16-bit elements: scale 2 */
    for (int64_t i = i0; i < i0 + 32; i += 2) {
        const __m512i a = _mm512_i32gather_epi32(rows, (const void *)(x + r0 * in + i), 2);
        const __m512i b = _mm512_i32gather_epi32(rows, (const void *)(x + (r0 + 16) * in + i), 2);
        _mm512_storeu_si512((void *)(xt + i * n + r0), _mm512_permutex2var_epi16(a, lo, b));
        _mm512_storeu_si512((void *)(xt + (i + 1) * n + r0), _mm512_permutex2var_epi16(a, hi, b));
    }
}
#endif

static void fnn_bf16_transpose_block(uint16_t *xt, const uint16_t *x, int64_t n, int64_t in,
                                     int64_t r0, int64_t i0, int path) {
#if FNN_BF16_X86
    /* a full block whose pairs stay inside x (rows of 16-bit elements: in * 16 < 2^31) */
    if (path != FNN_BF16_PORTABLE && r0 + 32 <= n && i0 + 32 <= in && in < (1 << 26)) {
        fnn_bf16_transpose_avx512(xt, x, n, in, r0, i0);
        return;
    }
#endif
    (void)path;
    fnn_bf16_transpose_scalar(xt, x, n, in, r0, i0);
}

/* ---- dense layer ------------------------------------------------------------------------ */

void fnn_dense_forward_bf16(float *y, float *z, uint16_t *y16, const uint16_t *x16,
                            const uint16_t *wp, const float *b, int64_t n, int64_t in,
                            int64_t out, struct fnn_activation act) {
    const int path = fnn_bf16_run_path();
    float *acc = z ? z : y; /* the product goes here, then the epilogue (layers.inc's) */
    FNN_PARALLEL_BEGIN((double)n * (double)in * (double)out >= FNN_BF16_PAR_MNK)
    fnn_bf16_gemm(acc, out, x16, in, wp, n, out, in, path);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        fnn_dense_epilogue_row_f32(y, z, acc, b, i, out, act);
        if (y16) fnn_bf16_convert_row(y16 + i * out, y + i * out, out, path);
    }
    FNN_PARALLEL_END
}

/* Columns of db are summed in chunks of this many, one chunk per thread at a time. */
#define FNN_BF16_DB_CHUNK 64

/* Inside a parallel region: db (out) := sum_rows(dz (n, out)) in float32, chunks of columns
   shared by the team (no barrier at the end). */
static void fnn_bf16_sum_rows(float *db, const float *dz, int64_t n, int64_t out) {
#pragma omp for schedule(static) nowait
    for (int64_t c0 = 0; c0 < out; c0 += FNN_BF16_DB_CHUNK) {
        const int64_t w = fnn_min64(FNN_BF16_DB_CHUNK, out - c0);
        float acc[FNN_BF16_DB_CHUNK] = {0}; /* the sums in registers, in the same order */
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < w; j++) acc[j] += dz[i * out + c0 + j];
        for (int64_t j = 0; j < w; j++) db[c0 + j] = acc[j];
    }
}

void fnn_dense_backward_bf16(float *dw, float *db, float *dx, float *dz, uint16_t *scratch,
                             const float *dy, const uint16_t *x16, const uint16_t *wtp,
                             const float *y, const float *z, int64_t n, int64_t in,
                             int64_t out, struct fnn_activation act) {
    const int path = fnn_bf16_run_path();
    /* scratch: dz16 (n, out) := bf16(dz), row-major (a of dx := dz16 @ w.T); dzp := pack(dz)
       (B of dw := x.T @ dz); xt (in, n) := x16.T (a of dw) */
    uint16_t *dz16, *dzp, *xt;
    fnn_bf16_scratch_parts(scratch, n, out, &dz16, &dzp, &xt);
    fnn_act_backward_f32(dz, dy, y, z, n, out, act); /* dz := dy * act'(.) */
    const double mnk = (double)n * (double)in * (double)out;
    FNN_PARALLEL_BEGIN(mnk >= FNN_BF16_PAR_MNK)
    if (dx) {
#pragma omp for schedule(static) nowait
        for (int64_t i = 0; i < n; i++) fnn_bf16_convert_row(dz16 + i * out, dz + i * out, out, path);
    }
    if (db) fnn_bf16_sum_rows(db, dz, n, out); /* db := sum_rows(dz), float32 */
    if (dw) {
#pragma omp for schedule(static) nowait
        for (int64_t blk = 0; blk < fnn_ceil_div(n, 32); blk++)
            fnn_bf16_pack_rows(dzp, NULL, dz, 32 * blk, n, out, 0, out, path);
#pragma omp for schedule(static) nowait
        for (int64_t i0 = 0; i0 < in; i0 += 32) /* xt := x16.T in 32 x 32 blocks */
            for (int64_t r0 = 0; r0 < n; r0 += 32) fnn_bf16_transpose_block(xt, x16, n, in, r0, i0, path);
    }
#pragma omp barrier
    if (dw) fnn_bf16_gemm(dw, out, xt, n, dzp, in, out, n, path);
    if (dx) fnn_bf16_gemm(dx, in, dz16, out, wtp, n, in, out, path);
    FNN_PARALLEL_END
}

void fnn_dense_backward_step_bf16(float *p, uint16_t *wp, float *db, float *dz,
                                  uint16_t *scratch, const float *dy, const uint16_t *x16,
                                  const float *y, const float *z, int64_t off, int64_t n,
                                  int64_t in, int64_t out, struct fnn_activation act,
                                  const struct fnn_optimizer *o) {
    fnn_dense_backward_step_bf16_then(p, wp, db, dz, scratch, dy, x16, y, z, off, n, in, out, act,
                                      o, NULL, NULL);
}

void fnn_dense_backward_step_bf16_then(float *p, uint16_t *wp, float *db, float *dz,
                                       uint16_t *scratch, const float *dy, const uint16_t *x16,
                                       const float *y, const float *z, int64_t off, int64_t n,
                                       int64_t in, int64_t out, struct fnn_activation act,
                                       const struct fnn_optimizer *o, void (*tail)(void *),
                                       void *arg) {
    const int path = fnn_bf16_run_path();
    /* scratch as fnn_dense_backward_bf16's (its dz16 unused) */
    uint16_t *dz16, *dzp, *xt;
    fnn_bf16_scratch_parts(scratch, n, out, &dz16, &dzp, &xt);
    (void)dz16;
    const int64_t nblk = fnn_ceil_div(n, 32), blocks = fnn_ceil_div(in, 32);
    /* rows of dz per call of the activation's backward: few enough that it stays on this
       thread (fnn_act_backward_f32 shares only calls of FNN_OMP_MIN_ELEMS elements) */
    const int64_t arows = out < FNN_OMP_MIN_ELEMS ? (FNN_OMP_MIN_ELEMS - 1) / out : 1;
    const double mnk = (double)n * (double)in * (double)out;
    FNN_PARALLEL_BEGIN(mnk >= FNN_BF16_PAR_MNK || in * out >= FNN_OMP_MIN_ELEMS)
    const int64_t t = fnn_thread_num(), nt = fnn_team_size();
    int64_t b0, b1;
    /* this thread's 32-row blocks of dz: dz := dy * act'(.), then their tiles of dzp */
    fnn_static_rows(t, nt, nblk, &b0, &b1);
    for (int64_t r = 32 * b0; r < fnn_min64(n, 32 * b1); r += arows) {
        const int64_t rows = fnn_min64(arows, fnn_min64(n, 32 * b1) - r);
        fnn_act_backward_f32(dz + r * out, dy + r * out, y + r * out, z ? z + r * out : NULL,
                             rows, out, act);
    }
    for (int64_t blk = b0; blk < b1; blk++)
        fnn_bf16_pack_rows(dzp, NULL, dz, 32 * blk, n, out, 0, out, path);
#pragma omp barrier
    if (db) fnn_bf16_sum_rows(db, dz, n, out); /* as fnn_dense_backward_bf16 sums it */
    /* this thread's 32-row blocks of dw (fnn_optimizer_step_bf16pack_f32's share): their rows
       of xt := x16.T, then 32 x 32 block after block, dw's block := xt @ dzp into a buffer in
       this core's cache, the step on its elements from there, and their pack */
    fnn_static_rows(t, nt, blocks, &b0, &b1);
    float cbuf[2][32 * 32] __attribute__((aligned(64)));
    const int64_t cbn = fnn_ceil_div(out, 32);
    fnn_bf16_tiles(path, 1);
    /* block e of this thread: (u, q) = (b0 + e / cbn, e % cbn); its product runs one block
       ahead of its step and pack, so the core overlaps the two */
    const int64_t ne = (b1 - b0) * cbn;
    for (int64_t e = 0; e <= ne; e++) {
        if (e < ne) {
            const int64_t u = b0 + e / cbn, j0 = 32 * (e % cbn);
            if (j0 == 0) /* its rows of xt first */
                for (int64_t s0 = 0; s0 < n; s0 += 32)
                    fnn_bf16_transpose_block(xt, x16, n, in, s0, 32 * u, path);
            fnn_bf16_gemm_block(cbuf[e & 1], 32, xt, n, dzp, in, out, n, 32 * u, j0, path);
        }
        if (e > 0) {
            const int64_t u = b0 + (e - 1) / cbn, j0 = 32 * ((e - 1) % cbn), i0 = 32 * u;
            fnn_optimizer_block_step_f32(p, cbuf[(e - 1) & 1], 32, off + i0 * out + j0,
                                         fnn_min64(32, in - i0), fnn_min64(32, out - j0), out, o);
            fnn_bf16_pack_rows(wp, NULL, p + off, i0, in, out, j0, j0 + 32, path);
        }
    }
    fnn_bf16_tiles(path, 0);
    if (tail && t == nt - 1) tail(arg);
    FNN_PARALLEL_END
}

#undef FNN_BF16_DB_CHUNK
