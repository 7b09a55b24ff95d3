/* The kernels, written once for a real type T.  fastnn.c includes this file twice, defining
   T (float / double), S (f32 / f64), GEMM, GEMV (cblas_s... / cblas_d...), M(name) (the libm
   function for T: expf / exp ...), VEXP and VTANH (vectorisable exp and tanh for T);
   the end of this file undefines them all. */

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(op) CAT(op, S)       /* FN(fnn_act_forward) -> fnn_act_forward_f32 */
#define LOCAL(op) CAT(op, S)    /* static helpers get the suffix too */

/* ---- activations, one element or one row -------------------------------------------- */

static inline T LOCAL(sigmoid1)(T x) {
    /* 1 / (1 + e^-x) = e / (1 + e) with e = e^-|x| <= 1: never overflows; branch-free */
    T e = VEXP(-M(fabs)(x));
    T s = (T)1 / ((T)1 + e);
    return x >= 0 ? s : e * s;
}

static inline T LOCAL(gelu1)(T x) { return (T)0.5 * x * ((T)1 + M(erf)(x * (T)M_SQRT1_2)); }

static inline T LOCAL(gelu_grad1)(T x) {
    /* d/dx x Phi(x) = Phi(x) + x phi(x) */
    T cdf = (T)0.5 * ((T)1 + M(erf)(x * (T)M_SQRT1_2));
    return cdf + x * M(exp)((T)-0.5 * x * x) * (T)(0.5 * M_2_SQRTPI * M_SQRT1_2);
}

/* Row reductions in eight independent lanes: the compiler turns the lane loop into one
   vector operation (a pragma'd `omp simd` reduction costs ~60 ns per short row), and the
   sum is kept in double, since a long float row would lose digits. */
static inline T LOCAL(row_max)(const T *v, int64_t m) {
    T lane[8];
    int64_t j = 0, k;
    for (k = 0; k < 8; k++) lane[k] = v[0];
    for (; j + 8 <= m; j += 8)
        for (k = 0; k < 8; k++) lane[k] = v[j + k] > lane[k] ? v[j + k] : lane[k];
    for (; j < m; j++) lane[0] = v[j] > lane[0] ? v[j] : lane[0];
    for (k = 1; k < 8; k++) lane[0] = lane[k] > lane[0] ? lane[k] : lane[0];
    return lane[0];
}

static inline double LOCAL(row_sum)(const T *v, int64_t m) {
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t j = 0, k;
    for (; j + 8 <= m; j += 8)
        for (k = 0; k < 8; k++) lane[k] += v[j + k];
    for (; j < m; j++) lane[0] += v[j];
    return ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7]));
}

/* y := act(x + b) for one row of m; b may be NULL; y may be x.  The bias goes in first
   (the row is in L1), so each activation loop reads one array and vectorizes. */
FNN_VEC static void LOCAL(act_row)(T *y, const T *x, const T *b, int64_t m, int act, T alpha) {
    int64_t j;
    const T *v = x;
    if (b) {
        for (j = 0; j < m; j++) y[j] = x[j] + b[j];
        v = y;
    }
    switch (act) {
    case FNN_LINEAR:
        if (y != v) for (j = 0; j < m; j++) y[j] = v[j];
        break;
    case FNN_RELU: /* written so that NaN passes through, as np.maximum(x, 0) */
        for (j = 0; j < m; j++) { T t = v[j]; y[j] = t <= 0 ? 0 : t; }
        break;
    case FNN_SIGMOID:
        for (j = 0; j < m; j++) y[j] = LOCAL(sigmoid1)(v[j]);
        break;
    case FNN_TANH:
        for (j = 0; j < m; j++) y[j] = VTANH(v[j]);
        break;
    case FNN_LEAKY_RELU:
        for (j = 0; j < m; j++) { T t = v[j]; y[j] = t > 0 ? t : alpha * t; }
        break;
    case FNN_ELU:
        for (j = 0; j < m; j++) { T t = v[j]; y[j] = t > 0 ? t : alpha * M(expm1)(t); }
        break;
    case FNN_GELU:
        for (j = 0; j < m; j++) y[j] = LOCAL(gelu1)(v[j]);
        break;
    case FNN_SOFTMAX: {
        /* y := exp(v - max v) / sum exp(v - max v) */
        T mx = LOCAL(row_max)(v, m);
        for (j = 0; j < m; j++) y[j] = VEXP(v[j] - mx);
        T inv = (T)(1.0 / LOCAL(row_sum)(y, m));
        for (j = 0; j < m; j++) y[j] *= inv;
        break;
    }
    }
}

/* dx := dy * act'(.) for one row, from y = act(x) (x read only for gelu); dx may be dy. */
FNN_VEC static void LOCAL(act_grad_row)(T *dx, const T *dy, const T *y, const T *x, int64_t m, int act,
                                T alpha) {
    int64_t j;
    switch (act) {
    case FNN_LINEAR:
        if (dx != dy) for (j = 0; j < m; j++) dx[j] = dy[j];
        break;
    case FNN_RELU: /* loads stay unconditional so the select vectorizes */
        for (j = 0; j < m; j++) { T d = dy[j]; dx[j] = y[j] > 0 ? d : 0; }
        break;
    case FNN_SIGMOID:
        for (j = 0; j < m; j++) dx[j] = dy[j] * y[j] * ((T)1 - y[j]);
        break;
    case FNN_TANH:
        for (j = 0; j < m; j++) dx[j] = dy[j] * ((T)1 - y[j] * y[j]);
        break;
    case FNN_LEAKY_RELU:
        for (j = 0; j < m; j++) { T d = dy[j]; dx[j] = y[j] > 0 ? d : alpha * d; }
        break;
    case FNN_ELU: /* x <= 0: d/dx alpha (e^x - 1) = alpha e^x = y + alpha */
        for (j = 0; j < m; j++) { T d = dy[j], v = y[j]; dx[j] = v > 0 ? d : d * (v + alpha); }
        break;
    case FNN_GELU:
        for (j = 0; j < m; j++) dx[j] = dy[j] * LOCAL(gelu_grad1)(x[j]);
        break;
    case FNN_SOFTMAX: { /* dx := y * (dy - <dy, y>) */
        double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t k;
        for (j = 0; j + 8 <= m; j += 8)
            for (k = 0; k < 8; k++) lane[k] += (double)dy[j + k] * y[j + k];
        for (; j < m; j++) lane[0] += (double)dy[j] * y[j];
        T dot = (T)(((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7])));
        for (j = 0; j < m; j++) dx[j] = y[j] * (dy[j] - dot);
        break;
    }
    }
}

/* Rows are split across OpenMP threads only when there is enough work per call. */
#define FNN_PAR_ROWS(n, m) ((n) > 1 && (n) * (m) >= FNN_OMP_MIN_ELEMS)

void FN(fnn_act_forward)(T *y, const T *x, int64_t n, int64_t m, int act, T alpha) {
    FNN_PARALLEL_BEGIN(FNN_PAR_ROWS(n, m))
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; i++) LOCAL(act_row)(y + i * m, x + i * m, NULL, m, act, alpha);
    FNN_PARALLEL_END
}

void FN(fnn_act_backward)(T *dx, const T *dy, const T *y, const T *x, int64_t n, int64_t m,
                          int act, T alpha) {
    FNN_PARALLEL_BEGIN(FNN_PAR_ROWS(n, m))
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; i++)
        LOCAL(act_grad_row)(dx + i * m, dy + i * m, y + i * m, x ? x + i * m : NULL, m, act,
                            alpha);
    FNN_PARALLEL_END
}

/* ---- dense layer ----------------------------------------------------------------------- */

/* Rows [r0, r1) of C (m, n) := op(A) @ op(B), row-major; ta: A is stored transposed (k, m),
   tb: B is stored transposed (n, k). */
static void LOCAL(gemm_rows)(T *c, const T *a, const T *b, int ta, int tb, int64_t r0, int64_t r1,
                             int64_t m, int64_t n, int64_t k) {
    GEMM(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
         (blasint)(r1 - r0), (blasint)n, (blasint)k, (T)1, ta ? a + r0 : a + r0 * k,
         (blasint)(ta ? m : k), b, (blasint)(tb ? k : n), (T)0, c + r0 * n, (blasint)n);
}

/* Block `blk` of `blocks` row blocks of m rows: [*r0, *r1). */
static inline void LOCAL(block_rows)(int64_t blk, int64_t blocks, int64_t m, int64_t *r0,
                                     int64_t *r1) {
    *r0 = m * blk / blocks;
    *r1 = m * (blk + 1) / blocks;
}

/* Inside a parallel region: C (m, n) := op(A) @ op(B) in `blocks` row blocks shared by the
   team (no barrier at the end). */
static void LOCAL(gemm_blocks)(T *c, const T *a, const T *b, int ta, int tb, int64_t blocks,
                               int64_t m, int64_t n, int64_t k) {
#pragma omp for schedule(static) nowait
    for (int64_t blk = 0; blk < blocks; blk++) {
        int64_t r0, r1;
        LOCAL(block_rows)(blk, blocks, m, &r0, &r1);
        LOCAL(gemm_rows)(c, a, b, ta, tb, r0, r1, m, n, k);
    }
}

/* The forward epilogue for row i: (z := acc + b), y := act(acc + b); acc is z or y. */
static inline void LOCAL(dense_epilogue_row)(T *y, T *z, T *acc, const T *b, int64_t i,
                                             int64_t out, int act, T alpha) {
    T *zr = acc + i * out;
    if (z && b) {
        for (int64_t j = 0; j < out; j++) zr[j] += b[j];
        LOCAL(act_row)(y + i * out, zr, NULL, out, act, alpha);
    } else {
        LOCAL(act_row)(y + i * out, zr, b, out, act, alpha);
    }
}

void FN(fnn_dense_forward)(T *y, T *z, const T *x, const T *w, const T *b, int64_t n,
                           int64_t in, int64_t out, int act, T alpha) {
    T *acc = z ? z : y; /* the GEMM writes the pre-activation here */
    const int64_t blocks = n > 1 ? fnn_row_blocks(n, out, in) : 0;
    if (n == 1) { /* one sample: acc (out) := w.T (out, in) @ x (in), a GEMV split by rows */
        FNN_PARALLEL_BEGIN(in * out >= FNN_OMP_MIN_ELEMS && out <= FNN_GEMV_SPLIT_OUT &&
                           in * out <= (int64_t)FNN_GEMV_SERIAL * fnn_get_num_threads())
        T part[FNN_GEMV_SPLIT_OUT];
        int64_t r0 = in, r1 = 0;
#pragma omp for schedule(static) nowait
        for (int64_t r = 0; r < in; r++) { /* this thread's rows: the rank-1 step's split */
            r0 = r < r0 ? r : r0;
            r1 = r + 1;
        }
        const int first = r0 == 0; /* writes acc; the others add their partial sums to it */
        if (r1 > r0)
            GEMV(CblasRowMajor, CblasTrans, (blasint)(r1 - r0), (blasint)out, (T)1, w + r0 * out,
                 (blasint)out, x + r0, 1, (T)0, first ? acc : part, 1);
#pragma omp barrier
        if (!first && r1 > r0) {
#pragma omp critical(fnn_gemv_sum)
            for (int64_t j = 0; j < out; j++) acc[j] += part[j];
        }
        FNN_PARALLEL_END
    } else if (!blocks) {
        FNN_CSR_SAVE
        LOCAL(gemm_rows)(acc, x, w, 0, 0, 0, n, n, out, in);
        FNN_CSR_RESTORE
    }
    FNN_PARALLEL_BEGIN(blocks || FNN_PAR_ROWS(n, out))
    if (blocks) { /* each thread: its rows' product, then their epilogue while in cache */
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < blocks; blk++) {
            int64_t r0, r1;
            LOCAL(block_rows)(blk, blocks, n, &r0, &r1);
            LOCAL(gemm_rows)(acc, x, w, 0, 0, r0, r1, n, out, in);
            for (int64_t i = r0; i < r1; i++)
                LOCAL(dense_epilogue_row)(y, z, acc, b, i, out, act, alpha);
        }
    } else {
#pragma omp for schedule(static)
        for (int64_t i = 0; i < n; i++) LOCAL(dense_epilogue_row)(y, z, acc, b, i, out, act, alpha);
    }
    FNN_PARALLEL_END
}

/* Columns of db are summed in chunks of this many, one chunk per thread at a time. */
#define FNN_DB_CHUNK 64

void FN(fnn_dense_backward)(T *dw, T *db, T *dx, T *dz, const T *dy, const T *x, const T *w,
                            const T *y, const T *z, int64_t n, int64_t in, int64_t out,
                            int act, T alpha) {
    /* dw (in, out) := x.T (in, n) @ dz (n, out);  dx (n, in) := dz (n, out) @ w.T (out, in) */
    const int64_t bw = dw && n > 1 ? fnn_row_blocks(in, out, n) : 0;
    const int64_t bx = dx && n > 1 ? fnn_row_blocks(n, in, out) : 0;
    FNN_PARALLEL_BEGIN(bw || bx || FNN_PAR_ROWS(n, out))
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; i++)
        LOCAL(act_grad_row)(dz + i * out, dy + i * out, y + i * out, z ? z + i * out : NULL,
                            out, act, alpha);
    if (db) { /* db := sum_rows(dz) */
#pragma omp for schedule(static) nowait
        for (int64_t c0 = 0; c0 < out; c0 += FNN_DB_CHUNK) {
            const int64_t c1 = c0 + FNN_DB_CHUNK < out ? c0 + FNN_DB_CHUNK : out;
            for (int64_t j = c0; j < c1; j++) db[j] = 0;
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = c0; j < c1; j++) db[j] += dz[i * out + j];
        }
    }
    if (bw) LOCAL(gemm_blocks)(dw, x, dz, 1, 0, bw, in, out, n);
    if (bx) LOCAL(gemm_blocks)(dx, dz, w, 0, 1, bx, n, in, out);
    FNN_PARALLEL_END
    FNN_CSR_SAVE
    if (!dw || bw) {
        /* not wanted (the caller applies x dz.T itself, an _outer_step), or done above */
    } else if (n == 1) { /* the outer product x dz.T */
        for (int64_t i = 0; i < in; i++)
            for (int64_t j = 0; j < out; j++) dw[i * out + j] = x[i] * dz[j];
    } else {
        LOCAL(gemm_rows)(dw, x, dz, 1, 0, 0, in, in, out, n);
    }
    if (!dx || bx) {
    } else if (n == 1) { /* dx (in) := w (in, out) @ dz (out) */
        GEMV(CblasRowMajor, CblasNoTrans, (blasint)in, (blasint)out, (T)1, w, (blasint)out, dz, 1,
             (T)0, dx, 1);
    } else {
        LOCAL(gemm_rows)(dx, dz, w, 0, 1, 0, n, n, in, out);
    }
    FNN_CSR_RESTORE
}

/* ---- losses ------------------------------------------------------------------------------ */

#define EPS_CLIP ((T)1e-7)

/* One row of categorical crossentropy from probabilities p against targets t (or a label,
   when t == NULL).  Returns the row loss; writes dp (may be NULL) := d loss / d p. */
static double LOCAL(cce_row)(T *dp, const T *p, const T *t, int64_t label, int64_t k) {
    int64_t j;
    double s = 0;
    for (j = 0; j < k; j++) s += p[j];
    T inv = (T)(1.0 / s);
    double loss = 0;
    T gq_dot_q = 0; /* sum_j dl/dq_j q_j, for the gradient through q = p / s */
    for (j = 0; j < k; j++) {
        T tj = t ? t[j] : (T)(j == label);
        if (tj == 0) {
            if (dp) dp[j] = 0;
            continue;
        }
        T q = p[j] * inv;
        T c = q < EPS_CLIP ? EPS_CLIP : (q > (T)1 - EPS_CLIP ? (T)1 - EPS_CLIP : q);
        loss -= (double)tj * (double)M(log)(c);
        if (dp) {
            /* clip passes the gradient only inside [eps, 1 - eps] */
            T gq = (q >= EPS_CLIP && q <= (T)1 - EPS_CLIP) ? -tj / c : 0;
            dp[j] = gq;
            gq_dot_q += gq * q;
        }
    }
    if (dp) /* dl/dp_j = (dl/dq_j - sum_i dl/dq_i q_i) / s */
        for (j = 0; j < k; j++) dp[j] = (dp[j] - gq_dot_q) * inv;
    return loss;
}

static double LOCAL(cce)(T *dp, const T *p, const T *t, const int64_t *labels, int64_t n,
                         int64_t k) {
    double loss = 0;
    T scale = (T)1 / (T)n;
    FNN_CSR_SAVE
    for (int64_t i = 0; i < n; i++) {
        T *dpr = dp ? dp + i * k : NULL;
        loss += LOCAL(cce_row)(dpr, p + i * k, t ? t + i * k : NULL, labels ? labels[i] : -1, k);
        if (dpr)
            for (int64_t j = 0; j < k; j++) dpr[j] *= scale;
    }
    FNN_CSR_RESTORE
    return loss / (double)n;
}

double FN(fnn_categorical_crossentropy_backward)(T *dp, const T *p, const T *t, int64_t n,
                                                 int64_t k) {
    return LOCAL(cce)(dp, p, t, NULL, n, k);
}
double FN(fnn_sparse_categorical_crossentropy_backward)(T *dp, const T *p,
                                                        const int64_t *labels, int64_t n,
                                                        int64_t k) {
    return LOCAL(cce)(dp, p, NULL, labels, n, k);
}

double FN(fnn_softmax_crossentropy_backward)(T *dz, const T *p, const T *t, int64_t n,
                                             int64_t k) {
    double loss = LOCAL(cce)(NULL, p, t, NULL, n, k);
    T scale = (T)1 / (T)n;
    FNN_CSR_SAVE
    for (int64_t i = 0; i < n; i++) {
        const T *pr = p + i * k, *tr = t + i * k;
        T st = 0;
        for (int64_t j = 0; j < k; j++) st += tr[j];
        for (int64_t j = 0; j < k; j++) dz[i * k + j] = (pr[j] * st - tr[j]) * scale;
    }
    FNN_CSR_RESTORE
    return loss;
}

double FN(fnn_sparse_softmax_crossentropy_backward)(T *dz, const T *p, const int64_t *labels,
                                                    int64_t n, int64_t k) {
    double loss = LOCAL(cce)(NULL, p, NULL, labels, n, k);
    T scale = (T)1 / (T)n;
    FNN_CSR_SAVE
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < k; j++) dz[i * k + j] = p[i * k + j] * scale;
        dz[i * k + labels[i]] -= scale;
    }
    FNN_CSR_RESTORE
    return loss;
}

static double LOCAL(bce)(T *dp, const T *p, const T *t, int64_t n, int64_t k) {
    FNN_CSR_SAVE
    double loss = 0;
    T scale = (T)1 / ((T)n * (T)k);
    for (int64_t i = 0; i < n * k; i++) {
        T q = p[i], c = q < EPS_CLIP ? EPS_CLIP : (q > (T)1 - EPS_CLIP ? (T)1 - EPS_CLIP : q);
        loss -= (double)t[i] * M(log)(c) + (double)((T)1 - t[i]) * M(log)((T)1 - c);
        if (dp)
            dp[i] = (q >= EPS_CLIP && q <= (T)1 - EPS_CLIP)
                        ? (-t[i] / c + ((T)1 - t[i]) / ((T)1 - c)) * scale
                        : 0;
    }
    FNN_CSR_RESTORE
    return loss / ((double)n * (double)k);
}

double FN(fnn_binary_crossentropy_backward)(T *dp, const T *p, const T *t, int64_t n,
                                            int64_t k) {
    return LOCAL(bce)(dp, p, t, n, k);
}

static double LOCAL(mse)(T *dp, const T *p, const T *t, int64_t n, int64_t k) {
    FNN_CSR_SAVE
    double loss = 0;
    T scale = (T)2 / ((T)n * (T)k);
    for (int64_t i = 0; i < n * k; i++) {
        T d = p[i] - t[i];
        loss += (double)d * (double)d;
        if (dp) dp[i] = d * scale;
    }
    FNN_CSR_RESTORE
    return loss / ((double)n * (double)k);
}

double FN(fnn_mean_squared_error_backward)(T *dp, const T *p, const T *t, int64_t n,
                                           int64_t k) {
    return LOCAL(mse)(dp, p, t, n, k);
}

/* ---- optimizer steps: one pass over p, g and the state --------------------------------- */

/* Each rule is written once, as UPDATE: a statement that updates element i from its gradient
   gi.  FNN_STEP_LOOPS runs it over n elements, either from a gradient array g, or, when ga is
   not NULL, from the rank-1 gradient g = ga gb.T (rows = n / cols, cols) that a dense kernel
   has for a single sample, computed on the fly so it is never written to memory. */
#define FNN_STEP_LOOPS(...)                                                          \
    FNN_PARALLEL_BEGIN(n >= FNN_OMP_MIN_ELEMS && !fnn_in_parallel())                \
    if (!ga) {                                                                       \
        _Pragma("omp for simd schedule(static)")                                     \
        for (int64_t i = 0; i < n; i++) {                                            \
            const T gi = g[i];                                                       \
            __VA_ARGS__                                                              \
        }                                                                            \
    } else {                                                                         \
        _Pragma("omp for schedule(static)")                                          \
        for (int64_t r = 0; r < n / cols; r++) {                                     \
            const T ar = ga[r];                                                      \
            const int64_t base = r * cols;                                           \
            _Pragma("omp simd")                                                      \
            for (int64_t i = base; i < base + cols; i++) {                           \
                const T gi = ar * gb[i - base];                                      \
                __VA_ARGS__                                                          \
            }                                                                        \
        }                                                                            \
    }                                                                                \
    FNN_PARALLEL_END

FNN_VEC static void LOCAL(sgd)(T *restrict p, T *restrict m, const T *restrict g,
                               const T *restrict ga, const T *restrict gb, int64_t n,
                               int64_t cols, T lr, T mu, int nesterov, T wd) {
    const T keep = (T)1 - lr * wd; /* weight decay factor; 1 when wd == 0 */
    if (!m) {
        FNN_STEP_LOOPS(p[i] = p[i] * keep - lr * gi;)
    } else if (!nesterov) {
        FNN_STEP_LOOPS(T mi = mu * m[i] - lr * gi; m[i] = mi; p[i] = p[i] * keep + mi;)
    } else {
        FNN_STEP_LOOPS(T mi = mu * m[i] - lr * gi; m[i] = mi;
                       p[i] = p[i] * keep + (mu * mi - lr * gi);)
    }
}

FNN_VEC static void LOCAL(adagrad)(T *restrict p, T *restrict a, const T *restrict g,
                                   const T *restrict ga, const T *restrict gb, int64_t n,
                                   int64_t cols, T lr, T eps, T wd) {
    const T keep = (T)1 - lr * wd;
    FNN_STEP_LOOPS(T ai = a[i] + gi * gi; a[i] = ai;
                   p[i] = p[i] * keep - lr * gi / M(sqrt)(ai + eps);)
}

FNN_VEC static void LOCAL(rmsprop)(T *restrict p, T *restrict v, T *restrict mom,
                                   T *restrict mg, const T *restrict g, const T *restrict ga,
                                   const T *restrict gb, int64_t n, int64_t cols, T lr, T rho,
                                   T mu, T eps, T wd) {
    const T keep = (T)1 - lr * wd, one_m_rho = (T)1 - rho;
    if (!mom && !mg) { /* the common case, kept branch-free for the vectorizer */
        FNN_STEP_LOOPS(T vi = rho * v[i] + one_m_rho * gi * gi; v[i] = vi;
                       p[i] = p[i] * keep - lr * gi / M(sqrt)(vi + eps);)
    } else {
        FNN_STEP_LOOPS(
            T vi = rho * v[i] + one_m_rho * gi * gi, d; v[i] = vi;
            if (mg) {
                T mgi = rho * mg[i] + one_m_rho * gi;
                mg[i] = mgi;
                d = vi - mgi * mgi + eps;
            } else {
                d = vi + eps;
            }
            T inc = lr * gi / M(sqrt)(d);
            if (mom) {
                inc = mu * mom[i] + inc;
                mom[i] = inc;
            }
            p[i] = p[i] * keep - inc;)
    }
}

FNN_VEC static void LOCAL(adam)(T *restrict p, T *restrict m, T *restrict v, T *restrict vhat,
                                const T *restrict g, const T *restrict ga, const T *restrict gb,
                                int64_t n, int64_t cols, T lr, T b1, T b2, T eps, T wd,
                                int64_t t) {
    const T keep = (T)1 - lr * wd;
    const T a = (T)((double)lr * sqrt(1.0 - pow((double)b2, (double)t)) /
                    (1.0 - pow((double)b1, (double)t)));
    const T one_m_b1 = (T)1 - b1, one_m_b2 = (T)1 - b2;
    FNN_STEP_LOOPS(
        T mi = m[i] + (gi - m[i]) * one_m_b1;
        T vi = v[i] + (gi * gi - v[i]) * one_m_b2;
        m[i] = mi;
        v[i] = vi;
        if (vhat) {
            vi = vhat[i] > vi ? vhat[i] : vi;
            vhat[i] = vi;
        }
        p[i] = p[i] * keep - a * mi / (M(sqrt)(vi) + eps);)
}

/* The public steps: from a gradient array g (n), or (_outer_) from the rank-1 gradient
   a b.T with a (rows), b (cols), n = rows * cols. */
void FN(fnn_sgd_step)(T *p, T *m, const T *g, int64_t n, T lr, T mu, int nesterov, T wd) {
    LOCAL(sgd)(p, m, g, NULL, NULL, n, 1, lr, mu, nesterov, wd);
}
void FN(fnn_sgd_outer_step)(T *p, T *m, const T *a, const T *b, int64_t rows, int64_t cols,
                            T lr, T mu, int nesterov, T wd) {
    LOCAL(sgd)(p, m, NULL, a, b, rows * cols, cols, lr, mu, nesterov, wd);
}
void FN(fnn_adagrad_step)(T *p, T *acc, const T *g, int64_t n, T lr, T eps, T wd) {
    LOCAL(adagrad)(p, acc, g, NULL, NULL, n, 1, lr, eps, wd);
}
void FN(fnn_adagrad_outer_step)(T *p, T *acc, const T *a, const T *b, int64_t rows,
                                int64_t cols, T lr, T eps, T wd) {
    LOCAL(adagrad)(p, acc, NULL, a, b, rows * cols, cols, lr, eps, wd);
}
void FN(fnn_rmsprop_step)(T *p, T *v, T *mom, T *mg, const T *g, int64_t n, T lr, T rho, T mu,
                          T eps, T wd) {
    LOCAL(rmsprop)(p, v, mom, mg, g, NULL, NULL, n, 1, lr, rho, mu, eps, wd);
}
void FN(fnn_rmsprop_outer_step)(T *p, T *v, T *mom, T *mg, const T *a, const T *b,
                                int64_t rows, int64_t cols, T lr, T rho, T mu, T eps, T wd) {
    LOCAL(rmsprop)(p, v, mom, mg, NULL, a, b, rows * cols, cols, lr, rho, mu, eps, wd);
}
void FN(fnn_adam_step)(T *p, T *m, T *v, T *vhat, const T *g, int64_t n, T lr, T b1, T b2,
                       T eps, T wd, int64_t t) {
    LOCAL(adam)(p, m, v, vhat, g, NULL, NULL, n, 1, lr, b1, b2, eps, wd, t);
}
void FN(fnn_adam_outer_step)(T *p, T *m, T *v, T *vhat, const T *a, const T *b, int64_t rows,
                             int64_t cols, T lr, T b1, T b2, T eps, T wd, int64_t t) {
    LOCAL(adam)(p, m, v, vhat, NULL, a, b, rows * cols, cols, lr, b1, b2, eps, wd, t);
}

/* ---- a whole training step for a stack of dense layers ------------------------------- */

/* The optimizer step on n parameters from offset `off` of the flat buffers; with a and b
   (rank-1), the gradient of those parameters is a b.T, a (rows), b (n / rows). */
static void LOCAL(stack_opt)(const struct fnn_dense_stack *s, int64_t off, int64_t n,
                             const T *a, const T *b, int64_t rows, T lr, int64_t t) {
    T *p = (T *)s->p + off, *g = (T *)s->g + off, *st[3];
    for (int k = 0; k < 3; k++) st[k] = s->state[k] ? (T *)s->state[k] + off : NULL;
    const T h0 = (T)s->hyper[0], h1 = (T)s->hyper[1], h2 = (T)s->hyper[2], wd = (T)s->wd;
    const int64_t cols = a ? n / rows : 0;
    switch (s->opt) {
    case FNN_OPT_SGD:
        if (a) FN(fnn_sgd_outer_step)(p, st[0], a, b, rows, cols, lr, h0, s->flag, wd);
        else FN(fnn_sgd_step)(p, st[0], g, n, lr, h0, s->flag, wd);
        break;
    case FNN_OPT_ADAGRAD:
        if (a) FN(fnn_adagrad_outer_step)(p, st[0], a, b, rows, cols, lr, h0, wd);
        else FN(fnn_adagrad_step)(p, st[0], g, n, lr, h0, wd);
        break;
    case FNN_OPT_RMSPROP:
        if (a) FN(fnn_rmsprop_outer_step)(p, st[0], st[1], st[2], a, b, rows, cols, lr, h0, h1, h2, wd);
        else FN(fnn_rmsprop_step)(p, st[0], st[1], st[2], g, n, lr, h0, h1, h2, wd);
        break;
    case FNN_OPT_ADAM:
        if (a) FN(fnn_adam_outer_step)(p, st[0], st[1], st[2], a, b, rows, cols, lr, h0, h1, h2, wd, t);
        else FN(fnn_adam_step)(p, st[0], st[1], st[2], g, n, lr, h0, h1, h2, wd, t);
        break;
    }
}

/* Layer 0 forward with each thread owning rows [r0, r1) of w (struct fnn_dense_stack, part):
   acc := x[:, r0:r1] @ w[r0:r1, :] summed over the threads, then the epilogue.  The BLAS runs
   single-threaded inside the team (and is set back after). */
static void LOCAL(owned_forward)(const struct fnn_dense_stack *s, int64_t n) {
    const struct fnn_dense_layer *L = s->layer;
    const int64_t in = L->in, out = L->out;
    T *acc = L->z ? (T *)L->z : (T *)L->y;
    const int blas = scipy_openblas_get_num_threads();
    scipy_openblas_set_num_threads(1);
    FNN_PARALLEL_BEGIN(1)
    const int64_t th = fnn_thread_num(), nt = fnn_team_size();
    int64_t r0, r1;
    LOCAL(block_rows)(th, nt, in, &r0, &r1);
    GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)n, (blasint)out, (blasint)(r1 - r0),
         (T)1, (const T *)s->xb + r0, (blasint)in, (const T *)L->w + r0 * out, (blasint)out, (T)0,
         th ? (T *)s->part + (th - 1) * n * out : acc, (blasint)out);
#pragma omp barrier
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        for (int64_t u = 1; u < nt; u++) {
            const T *pr = (const T *)s->part + (u - 1) * n * out + i * out;
            for (int64_t j = 0; j < out; j++) acc[i * out + j] += pr[j];
        }
        LOCAL(dense_epilogue_row)((T *)L->y, (T *)L->z, acc, (const T *)L->b, i, out, L->act,
                                  (T)L->alpha);
    }
    FNN_PARALLEL_END
    scipy_openblas_set_num_threads(blas);
}

/* Layer 0's kernel gradient and optimizer step, each thread on the rows it owns: dw[r0:r1] :=
   x[:, r0:r1].T @ dz, then the step on those rows while they are in its cache. */
static void LOCAL(owned_dw_step)(const struct fnn_dense_stack *s, const T *dz, int64_t n, T lr,
                                 int64_t t) {
    const struct fnn_dense_layer *L = s->layer;
    const int64_t in = L->in, out = L->out;
    const int blas = scipy_openblas_get_num_threads();
    scipy_openblas_set_num_threads(1);
    FNN_PARALLEL_BEGIN(1)
    int64_t r0, r1;
    LOCAL(block_rows)(fnn_thread_num(), fnn_team_size(), in, &r0, &r1);
    LOCAL(gemm_rows)((T *)L->dw, (const T *)s->xb, dz, 1, 0, r0, r1, in, out, n);
    LOCAL(stack_opt)(s, r0 * out, (r1 - r0) * out, NULL, NULL, 0, lr, t); /* on this thread */
    FNN_PARALLEL_END
    scipy_openblas_set_num_threads(blas);
}

/* The same kernel calls, in the same order, as Sequential's step in Python (models.py), so
   both give bit-identical results (tested in tests/test_train_step.py); except where layer 0
   is owned by rows (see struct fnn_dense_stack, part): its forward then sums the product in
   per-thread parts, which rounds differently. */
double FN(fnn_dense_stack_step)(const struct fnn_dense_stack *s, const int64_t *idx, int64_t n,
                                double lr, int64_t t) {
    const struct fnn_dense_layer *L = s->layer;
    const int64_t last = s->n_layers - 1, k = L[last].out;
    const int fused = s->loss == FNN_LOSS_SOFTMAX_CCE || s->loss == FNN_LOSS_SOFTMAX_SCCE;
    const int rank1 = s->rank1 && n == 1;
    const int own = fnn_dense_stack_owns(s, n);
    fnn_gather_forward_u8(s->xb, s->x, idx, n, s->x_row_bytes);
    fnn_gather_forward_u8(s->tb, s->t, idx, n, s->t_row_bytes);
    const T *in = (const T *)s->xb;
    for (int64_t l = 0; l <= last; l++) {
        if (l == 0 && own)
            LOCAL(owned_forward)(s, n);
        else
            FN(fnn_dense_forward)((T *)L[l].y, (T *)L[l].z, in, (const T *)L[l].w,
                                  (const T *)L[l].b, n, L[l].in, L[l].out, L[l].act, (T)L[l].alpha);
        in = (const T *)L[l].y;
    }
    const T *p = (const T *)L[last].y, *tf = (const T *)s->tb;
    const int64_t *lab = (const int64_t *)s->tb;
    T *d = (T *)s->grad; /* d loss / d (this layer's output), then its dz */
    double loss = 0;
    switch (s->loss) {
    case FNN_LOSS_CCE: loss = FN(fnn_categorical_crossentropy_backward)(d, p, tf, n, k); break;
    case FNN_LOSS_SCCE: loss = FN(fnn_sparse_categorical_crossentropy_backward)(d, p, lab, n, k); break;
    case FNN_LOSS_SOFTMAX_CCE: loss = FN(fnn_softmax_crossentropy_backward)(d, p, tf, n, k); break;
    case FNN_LOSS_SOFTMAX_SCCE: loss = FN(fnn_sparse_softmax_crossentropy_backward)(d, p, lab, n, k); break;
    case FNN_LOSS_BCE: loss = FN(fnn_binary_crossentropy_backward)(d, p, tf, n, k); break;
    case FNN_LOSS_MSE: loss = FN(fnn_mean_squared_error_backward)(d, p, tf, n, k); break;
    }
    for (int64_t l = last; l >= 0; l--) { /* fused: the loss gave dz of the last layer */
        const int skip = fused && l == last;
        FN(fnn_dense_backward)((rank1 || own) && l == 0 ? NULL : (T *)L[l].dw, (T *)L[l].db,
                               l ? (T *)L[l].dx : NULL, d, d, l ? (const T *)L[l - 1].y : (const T *)s->xb,
                               (const T *)L[l].w, (const T *)L[l].y, (const T *)L[l].z, n, L[l].in,
                               L[l].out, skip ? FNN_LINEAR : L[l].act, skip ? (T)0 : (T)L[l].alpha);
        if (l) d = (T *)L[l].dx;
    }
    if (own) { /* layer 0's kernel: dw and the step by rows, each thread its own */
        const int64_t nk = L[0].in * L[0].out;
        LOCAL(owned_dw_step)(s, d, n, (T)lr, t);
        if (s->n_params > nk) LOCAL(stack_opt)(s, nk, s->n_params - nk, NULL, NULL, 0, (T)lr, t);
    } else if (rank1) { /* layer 0's kernel steps from the gradient x dz.T, never written */
        const int64_t nk = L[0].in * L[0].out;
        LOCAL(stack_opt)(s, 0, nk, (const T *)s->xb, d, L[0].in, (T)lr, t);
        if (s->n_params > nk) LOCAL(stack_opt)(s, nk, s->n_params - nk, NULL, NULL, 0, (T)lr, t);
    } else {
        LOCAL(stack_opt)(s, 0, s->n_params, NULL, NULL, 0, (T)lr, t);
    }
    return loss;
}

#undef FNN_STEP_LOOPS
#undef FNN_DB_CHUNK
#undef EPS_CLIP
#undef FNN_PAR_ROWS
#undef FN
#undef LOCAL
#undef CAT
#undef CAT_
#undef T
#undef S
#undef GEMM
#undef GEMV
#undef M
#undef VEXP
#undef VTANH
