/* fastnn kernels: dense layers, activations, losses and optimizer steps.

   Conventions (every kernel):
   - name: fnn_<op>_<forward|backward|step>_<f32|f64>;
   - arguments: outputs (or in/out state) first, then const inputs, then sizes, then scalars;
   - all arrays are C-contiguous, row-major; the caller owns every buffer;
   - kernels never allocate, print or exit; each says whether it overwrites or accumulates;
   - every kernel flushes subnormals to zero (FTZ/DAZ) while it runs and restores the
     caller's floating-point mode: subnormal operands otherwise cost ~100 cycles each.
   Matrix products go through the BLAS (scipy-openblas32, cblas with a `scipy_` prefix).
   Where each lives: layers.inc (dense, activations), losses.inc, optimizers.inc, step.inc (a
   whole training step), norm.inc (batch/layer normalization, PReLU), each written once for a
   real type and instantiated for float and double by layers.c, losses.c, optimizers.c,
   step.c, norm.c; runtime.c (threads, BLAS, gather); bf16.c (bfloat16 products with float32
   sums for a dense layer, float32 only). */
#ifndef FASTNN_H
#define FASTNN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The fuzz factor of the losses: probabilities are clipped to [FNN_EPSILON, 1 - FNN_EPSILON]
   (Keras' backend.epsilon()). */
#define FNN_EPSILON 1e-7

/* Activation codes, shared by the dense and activation kernels.  fastnn/_codes.py mirrors every
   code and constant of this header (tests/test_codes.py checks it against the build).  The
   Keras activation and its parameters (struct fnn_activation, param[0..2]) of each code: */
enum fnn_act {
    FNN_LINEAR = 0,
    FNN_RELU = 1,        /* max(x, 0), Keras' relu with its defaults */
    FNN_SIGMOID = 2,
    FNN_TANH = 3,
    FNN_SOFTMAX = 4,     /* row-wise over the last axis */
    FNN_LEAKY_RELU = 5,  /* param[0] = negative slope (>= 0) */
    FNN_ELU = 6,         /* param[0] = alpha, the scale of the negative part (> 0) */
    FNN_GELU = 7,        /* exact (erf) form; backward needs the pre-activation */
    /* Keras' relu(x, negative_slope, max_value, threshold) in general: param[0] = negative_slope
       (>= 0), param[1] = max_value (>= 0, +inf for None), param[2] = threshold;
       y := x > threshold ? (max_value finite ? clip(x, 0, max_value) : x)
                          : negative_slope * (x - threshold).  Backward needs x. */
    FNN_RELU_GENERAL = 8,
    FNN_GELU_TANH = 9,   /* gelu(approximate=True): x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)));
                            backward needs x */
    FNN_SILU = 10,       /* x sigmoid(x); backward needs x */
    FNN_SOFTPLUS = 11,   /* log(1 + e^x) */
    FNN_SOFTSIGN = 12,   /* x / (1 + |x|) */
    FNN_SELU = 13,       /* scale (x > 0 ? x : alpha (e^x - 1)), Keras' alpha and scale */
    FNN_HARD_SIGMOID = 14, /* relu6(x + 3) / 6 */
    FNN_HARD_SILU = 15,  /* x relu6(x + 3) / 6; backward needs x */
    FNN_EXPONENTIAL = 16, /* e^x */
    FNN_RELU6 = 17,      /* min(max(x, 0), 6) */
    FNN_MISH = 18,       /* x tanh(softplus(x)); backward needs x */
    FNN_LOG_SOFTMAX = 19, /* x - max - log(sum e^(x - max)), row-wise over the last axis */
    /* Keras 3's further element-wise activations (issue #11) */
    FNN_HARD_TANH = 20,  /* clip(x, -1, 1) */
    FNN_HARD_SHRINK = 21, /* |x| > param[0] ? x : 0; param[0] = threshold (>= 0) */
    FNN_SOFT_SHRINK = 22, /* x - t (x > t), x + t (x < -t), else 0; param[0] = t (>= 0) */
    FNN_TANH_SHRINK = 23, /* x - tanh(x); backward needs x */
    FNN_THRESHOLD = 24,  /* x > param[0] ? x : param[1] (threshold, default_value); backward
                            needs x */
    FNN_LOG_SIGMOID = 25, /* log sigmoid(x) = -softplus(-x) */
    FNN_CELU = 26,       /* x > 0 ? x : alpha (e^(x / alpha) - 1); param[0] = alpha (> 0) */
    FNN_SQUAREPLUS = 27, /* (x + sqrt(x^2 + b)) / 2; param[0] = b (> 0) */
    FNN_SPARSE_PLUS = 28, /* 0 (x <= -1), (x + 1)^2 / 4 (-1 < x < 1), x (x >= 1) */
    FNN_SPARSE_SIGMOID = 29, /* clip((x + 1) / 2, 0, 1) */
    FNN_SPARSEMAX = 30,  /* max(x - tau, 0), sum = 1, row-wise over the last axis */
    FNN_N_ACT = 31
};

/* Whether an activation's backward reads its input (the pre-activation x or z), not only its
   output y. */
#define FNN_ACT_NEEDS_X(code)                                                              \
    ((code) == FNN_GELU || (code) == FNN_RELU_GENERAL || (code) == FNN_GELU_TANH ||         \
     (code) == FNN_SILU || (code) == FNN_HARD_SILU || (code) == FNN_MISH ||                 \
     (code) == FNN_TANH_SHRINK || (code) == FNN_THRESHOLD)

/* An activation: its code and parameters (enum fnn_act says which; the others are 0), passed
   by value to every kernel that applies one. */
#define FNN_ACT_PARAMS 3
struct fnn_activation {
    int code;                      /* enum fnn_act */
    double param[FNN_ACT_PARAMS];
};

/* Once, before any kernel: route the BLAS's threads through fastnn's OpenMP team. */
void fnn_init(void);

/* Build facts for show_config(). */
int fnn_have_openmp(void);
const char *fnn_simd_targets(void);
void fnn_set_num_threads(int n);  /* OpenMP loops and the BLAS, for every thread */
int fnn_get_num_threads(void);    /* fastnn's team size (1 in a forked child) */
int fnn_forked_child(void);       /* whether this process was forked after fastnn loaded */
int fnn_blas_get_num_threads(void);
const char *fnn_blas_config(void);

/* The kernels of fnn_matmul_forward, one per instruction set, the best this machine runs
   chosen at each call.  Results differ between paths only in the order of additions. */
enum fnn_gemm_path_code {
    FNN_GEMM_BASE = 0,   /* the compiler's baseline (SSE2 on x86-64) */
    FNN_GEMM_AVX2 = 1,   /* AVX2 and FMA */
    FNN_GEMM_AVX512 = 2, /* AVX-512F */
    FNN_GEMM_N_PATH = 3
};
int fnn_matmul_paths(void); /* the paths this machine runs: bit p for path p */

/* out[i, :] := x[idx[i], :] for i < n; rows of row_bytes bytes, so any dtype.  Every idx
   must lie in [0, rows of x).  Overwrites out. */
void fnn_gather_forward_u8(void *out, const void *x, const int64_t *idx, int64_t n,
                           int64_t row_bytes);

/* Loss codes (fnn_loss_backward, struct fnn_dense_stack). */
enum fnn_loss_code {
    FNN_LOSS_CCE = 0, FNN_LOSS_SCCE = 1,                 /* from probabilities */
    FNN_LOSS_SOFTMAX_CCE = 2, FNN_LOSS_SOFTMAX_SCCE = 3, /* fused with the last softmax */
    FNN_LOSS_BCE = 4, FNN_LOSS_MSE = 5,
    FNN_LOSS_MAE = 6, FNN_LOSS_HUBER = 7, FNN_LOSS_LOG_COSH = 8, FNN_LOSS_KLD = 9,
    FNN_LOSS_POISSON = 10, FNN_LOSS_HINGE = 11, FNN_LOSS_CATEGORICAL_HINGE = 12,
    FNN_LOSS_COSINE = 13,
    FNN_LOSS_SIGMOID_BCE = 14,                           /* binary, from logits */
    FNN_LOSS_MAPE = 15, FNN_LOSS_MSLE = 16, FNN_LOSS_SQUARED_HINGE = 17, /* see losses.inc */
    FNN_N_LOSS = 18
};

/* Optimizer rules (Keras 3's), the rule of struct fnn_optimizer. */
enum fnn_opt_rule {
    FNN_OPT_SGD = 0, FNN_OPT_ADAGRAD = 1, FNN_OPT_RMSPROP = 2, FNN_OPT_ADAM = 3,
    FNN_OPT_NADAM = 4, FNN_OPT_ADAMAX = 5, FNN_OPT_ADADELTA = 6, FNN_OPT_LION = 7,
    FNN_N_OPT = 8
};

/* One optimizer: its rule, hyper-parameters and state, and this step's scalars (set before
   each step).  Every state array is as long as the parameters, NULL where the rule (or its
   options) does not use it; names and rules are Keras 3's.  At step t = iterations (from 1),
   with lr = learning_rate and g the gradient, first p := p - lr * weight_decay * p, then:
   sgd:      momentums NULL: p := p - lr g;  else m := momentum m - lr g, p := p + m
             (nesterov: p := p + momentum m - lr g)
   adagrad:  acc := acc + g^2;  p := p - lr g / sqrt(acc + epsilon)      (acc: accumulators)
   rmsprop:  v := rho v + (1 - rho) g^2;  average_gradients mg: mg := rho mg + (1 - rho) g,
             d := v - mg^2 + epsilon, else d := v + epsilon;  inc := lr g / sqrt(d);
             momentums mom: mom := momentum mom + inc, p := p - mom;  else p := p - inc
   adam:     m := m + (g - m)(1 - beta_1);  v := v + (g^2 - v)(1 - beta_2);
             velocity_hats vhat (amsgrad): vhat := max(vhat, v), used for v;
             p := p - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m / (sqrt(v) + epsilon)
   nadam:    u_s := beta_1 (1 - 0.5 * 0.96^s), P_t := u_1 ... u_t (u_product);  m, v as adam;
             m_hat := u_{t+1} m / (1 - P_t u_{t+1}) + (1 - u_t) g / (1 - P_t);
             v_hat := v / (1 - beta_2^t);  p := p - lr m_hat / (sqrt(v_hat) + epsilon)
   adamax:   m := m + (g - m)(1 - beta_1);  u := max(beta_2 u, |g|)            (u: norms)
             p := p - lr / (1 - beta_1^t) m / (u + epsilon)
   adadelta: ag := rho ag + (1 - rho) g^2;  d := -sqrt(ad + epsilon) g / sqrt(ag + epsilon);
             ad := rho ad + (1 - rho) d^2;  p := p + lr d
             (ag: accumulated_grads, ad: accumulated_delta_vars)
   lion:     p := p - lr sign(beta_1 m + (1 - beta_1) g);  m := beta_2 m + (1 - beta_2) g
   (m: momentums, v: velocities.) */
struct fnn_optimizer {
    int rule;                /* enum fnn_opt_rule */
    double momentum;         /* sgd, rmsprop */
    int nesterov;            /* sgd */
    double rho;              /* rmsprop, adadelta */
    double epsilon;          /* adagrad, rmsprop, adam, nadam, adamax, adadelta */
    double beta_1, beta_2;   /* adam, nadam, adamax, lion */
    double weight_decay;     /* decoupled; 0: none */
    double learning_rate;    /* this step's */
    int64_t iterations;      /* this step's number t, from 1 */
    double u_product;        /* nadam: P_t */
    void *momentums, *velocities, *velocity_hats, *average_gradients, *accumulators;
    void *norms, *accumulated_grads, *accumulated_delta_vars; /* adamax; adadelta */
};

/* A whole training step of a stack of dense layers in one call (fit's inner loop without
   the interpreter between kernels): gather the batch, forward, loss, backward, one optimizer
   step over the flat parameter buffer.  Arrays are void * of the stack's real type; the caller
   (fastnn/_kernels.pyx, DenseStack) checks every size and keeps every array alive. */
struct fnn_dense_layer {
    int64_t in, out;
    const void *w, *b;  /* kernel (in, out), bias (out) or NULL: views into the flat p */
    void *dw, *db;      /* their gradients: views into the flat g; dw unused when rank1 */
    void *y, *z, *dx;   /* output (n, out); pre-activation (n, out) or NULL; dx (n, in) or NULL */
    struct fnn_activation act; /* the layer's; the last layer's is skipped when fused */
    /* mixed bfloat16 (struct fnn_dense_stack bf16): the packed bf16 kernel and its transpose
       (fnn_bf16_pack_forward), and the bf16 copy of y (n, out), the next layer's input (NULL
       for the last layer) */
    void *wp, *wtp, *y16;
};

struct fnn_dense_stack {
    int64_t n_layers;
    const struct fnn_dense_layer *layer;
    const void *x, *t;        /* training inputs (rows of x_row_bytes), targets (rows or int64) */
    int64_t x_row_bytes, t_row_bytes;
    void *xb, *tb, *grad;     /* batch buffers: inputs, targets, d loss / d output (n, k) */
    const void *sw;           /* per-sample weights of the training rows (T), or NULL */
    void *swb;                /* their batch buffer (n), or NULL */
    int loss;                 /* enum fnn_loss_code */
    void *p;                  /* flat parameters and gradients (n_params) */
    void *g;
    int64_t n_params;
    /* its state as long as p, this step's scalars set; NULL: the step ends with the gradients
       in g (data parallel: the ranks add them up, then the optimizer steps; no rank1, part) */
    const struct fnn_optimizer *opt;
    int rank1;                /* at n == 1, layer 0's kernel (first in p) steps from x dz.T */
    /* Scratch for layer 0 when each thread owns a block of its kernel's rows (n > 1, a product
       too big to split in row blocks of the batch, and as many threads as part_threads): the
       forward adds up per-thread partial products x[:, rows] @ w[rows, :], and the backward
       computes dw[rows] and steps the optimizer on those rows at once, so each core keeps its
       rows of w, dw and the optimizer state in its own cache.  (part_threads - 1) x n x out
       of layer 0, or NULL. */
    void *part;
    int64_t part_threads;
    /* Mixed bfloat16 (float32 stacks only): xb holds the batch's rows of x in bfloat16
       (uint16_t, converted as they are gathered), every
       layer's products run in bf16 with float32 sums (fnn_dense_forward_bf16/backward_bf16),
       and each kernel's optimizer step also writes its packs (fnn_optimizer_step_bf16pack_f32);
       rank1 is unused; part owns layer 0 by 32-row tiles of its kernel, on the AMX path only.
       scratch: fnn_bf16_backward_scratch_size of the widest layer. */
    int bf16;
    void *scratch;
    /* Data parallel with overlap (opt NULL; else ready NULL): n_buckets buckets tiling g,
       bucket i = g[buckets[i], buckets[i + 1]), buckets[0] = 0 < ... < buckets[n_buckets] =
       n_params, over gradients that lie in g in layer order (checked by the caller).  The step
       calls ready(ready_ctx, off, count) once per bucket g[off, off + count), top bucket first,
       on the calling thread outside any parallel region, as soon as every gradient in it is
       final, so the caller can start its reduction while the backward goes on; layer 0's
       kernel gradient is then computed in row chunks, top rows first, ending at the bucket
       boundaries inside it.  ready NULL: no calls, no chunks. */
    void (*ready)(void *ctx, int64_t off, int64_t count);
    void *ready_ctx;
    const int64_t *buckets;
    int64_t n_buckets;
};

/* Whether a step of n samples owns layer 0 by rows (see part above) with the current threads. */
int fnn_dense_stack_owns(const struct fnn_dense_stack *s, int64_t n);

#define FNN_DECLARE(T, S)                                                                   \
    /* y := act(x @ w + b).  x (n, in), w (in, out), b (out) or NULL, y (n, out);          \
       z (n, out) or NULL receives the pre-activation x @ w + b.  Overwrites y and z. */   \
    void fnn_dense_forward_##S(T *y, T *z, const T *x, const T *w, const T *b,              \
                               int64_t n, int64_t in, int64_t out, struct fnn_activation act); \
    /* dz := dy * act'(.), dw := x.T @ dz, db := sum_rows(dz), dx := dz @ w.T.             \
       dz (n, out) is scratch and may be the same buffer as dy; dw, db, dx may be NULL;     \
       y is the forward output, z the pre-activation (read only if FNN_ACT_NEEDS_X).       \
       Overwrites dw, db, dx, dz. */                                                        \
    void fnn_dense_backward_##S(T *dw, T *db, T *dx, T *dz, const T *dy, const T *x,        \
                                const T *w, const T *y, const T *z,                         \
                                int64_t n, int64_t in, int64_t out, struct fnn_activation act); \
    /* y := act(x).  x, y (n, m); y may be x.  Overwrites y. */                             \
    void fnn_act_forward_##S(T *y, const T *x, int64_t n, int64_t m,                        \
                             struct fnn_activation act);                                 \
    /* dx := dy * act'(x), from y = act(x) (and x if FNN_ACT_NEEDS_X).  dx may be dy.      \
       Overwrites dx. */                                                                    \
    void fnn_act_backward_##S(T *dx, const T *dy, const T *y, const T *x,                   \
                              int64_t n, int64_t m, struct fnn_activation act);           \
    /* Any loss by its code (enum fnn_loss_code), value and gradient in one pass.  p, t (n, k)  \
       (t: int64 labels (n) in [0, k) for the sparse ones), sw (n) per-sample weights or NULL \
       (all ones).  Per sample, over the last axis (Keras' formulas, eps = FNN_EPSILON):      \
       cce:      q = p / sum_k p, l = -sum_k t log clip(q, eps, 1 - eps)  (scce: t = one_hot) \
       softmax_cce (scce): p = softmax(z), l as cce; the gradient is w.r.t. z:             \
                 d l / d z = p sum_k t - t  (= p - t for rows of t summing to 1)              \
       bce:      c = clip(p, eps, 1 - eps), l = mean_k -(t log c + (1 - t) log(1 - c))       \
       sigmoid_bce: p holds logits z, l = mean_k softplus(z) - t z, gradient w.r.t. z        \
       mse:      l = mean_k (p - t)^2          mae: l = mean_k |p - t|                      \
       huber:    delta = 1, see fnn_huber_backward                                          \
       log_cosh: e = p - t, l = mean_k e + softplus(-2 e) - log 2                           \
       kld:      l = sum_k tc log(tc / pc), tc = clip(t, eps, 1), pc = clip(p, eps, 1)      \
       poisson:  l = mean_k p - t log(p + eps)                                              \
       hinge:    y = 2 t - 1 if every t of the batch is 0 or 1, else t; l = mean_k max(1 - y p, 0) \
       categorical_hinge: l = max(max_k (1 - t) p - sum_k t p + 1, 0)                       \
       cosine:   x_hat = x min(1 / |x|, 1 / eps), l = -sum_k t_hat p_hat.                   \
       per_sample (n) := l_i unless NULL; returns sum_i sw_i l_i / n (Keras'                \
       "sum_over_batch_size"); dp (n, k) := d(return value) / dp (row i: sw_i / n d l_i/dp) \
       unless NULL (the fused softmax ones require it).  Overwrites dp and per_sample. */    \
    double fnn_loss_backward_##S(T *dp, T *per_sample, const T *p, const void *t, const T *sw, \
                                 int64_t n, int64_t k, int loss);                          \
    /* Huber with its delta (> 0), as fnn_loss_backward:  e = p - t,                        \
       l = mean_k (|e| <= delta ? e^2 / 2 : delta |e| - delta^2 / 2). */                    \
    double fnn_huber_backward_##S(T *dp, T *per_sample, const T *p, const T *t, const T *sw, \
                                  int64_t n, int64_t k, T delta);                           \
    /* The optimizer step o (its rule: see struct fnn_optimizer) on elements [off, off + n)  \
       of p, g and o's state arrays, in place, one pass.  Overwrites those elements. */      \
    void fnn_optimizer_step_##S(T *p, const T *g, int64_t off, int64_t n,                    \
                                const struct fnn_optimizer *o);                             \
    /* The same on elements [0, rows cols) with the rank-1 gradient g := a b.T, a (rows),    \
       b (cols): a dense kernel's gradient for one sample, computed on the fly instead of    \
       being written and read back. */                                                      \
    void fnn_optimizer_outer_step_##S(T *p, const T *a, const T *b, int64_t rows,            \
                                      int64_t cols, const struct fnn_optimizer *o);         \
    /* The same on the block of rows (rows) of cols elements, ld apart, from off, with the   \
       gradient block g (rows, cols) whose rows are ldg apart: a product's block of a        \
       kernel's gradient, stepped while in cache. */                                         \
    void fnn_optimizer_block_step_##S(T *p, const T *g, int64_t ldg, int64_t off,            \
                                      int64_t rows, int64_t cols, int64_t ld,               \
                                      const struct fnn_optimizer *o);                       \
    /* One training step on the rows idx (n) of the stack's x and t, with the optimizer's    \
       scalars for this step already set: returns the batch loss. */                        \
    double fnn_dense_stack_step_##S(const struct fnn_dense_stack *s, const int64_t *idx,     \
                                    int64_t n);                                             \
    /* Batch normalization over the rows of x (n, m), per feature j (norm.inc):             \
       training: mean := sum_rows(x) / n, var := sum_rows((x - mean)^2) / n (biased, as     \
       Keras; overwritten), else mean, var (m) are read;                                    \
       y := (x - mean) * gamma / sqrt(var + epsilon) + beta; gamma, beta (m) or NULL        \
       (1, 0).  Overwrites y (n, m). */                                                      \
    void fnn_batchnorm_forward_##S(T *y, T *mean, T *var, const T *x, const T *gamma,       \
                                   const T *beta, int64_t n, int64_t m, T epsilon,          \
                                   int training);                                          \
    /* Its gradient with the batch statistics mean, var of x:  xhat := (x - mean) /         \
       sqrt(var + epsilon), dbeta := sum_rows(dy), dgamma := sum_rows(dy xhat),             \
       dx := gamma / sqrt(var + epsilon) / n * (n dy - dbeta - xhat dgamma).                \
       dgamma, dbeta (m) are required; gamma may be NULL (1); dx may be dy.  Overwrites     \
       dx, dgamma, dbeta. */                                                                \
    void fnn_batchnorm_backward_##S(T *dx, T *dgamma, T *dbeta, const T *dy, const T *x,    \
                                    const T *mean, const T *var, const T *gamma,            \
                                    int64_t n, int64_t m, T epsilon);                       \
    /* Layer normalization of each row of x (n, m): mean := mean_row(x), rstd :=            \
       1 / sqrt(mean_row((x - mean)^2) + epsilon) (n each), y := (x - mean) rstd gamma +    \
       beta; gamma, beta (m) or NULL.  Overwrites y, mean, rstd. */                         \
    void fnn_layernorm_forward_##S(T *y, T *mean, T *rstd, const T *x, const T *gamma,      \
                                   const T *beta, int64_t n, int64_t m, T epsilon);        \
    /* Its gradient: xhat := (x - mean) rstd, g := dy gamma, dx := rstd (g - mean_row(g) -  \
       xhat mean_row(g xhat)), dgamma := sum_rows(dy xhat), dbeta := sum_rows(dy);          \
       dgamma, dbeta, gamma may be NULL; dx may be dy.  Overwrites dx, dgamma, dbeta. */    \
    void fnn_layernorm_backward_##S(T *dx, T *dgamma, T *dbeta, const T *dy, const T *x,    \
                                    const T *mean, const T *rstd, const T *gamma,           \
                                    int64_t n, int64_t m);                                  \
    /* PReLU: y := x > 0 ? x : alpha x, alpha (m) per column of x, y (n, m).  Overwrites y. */ \
    void fnn_prelu_forward_##S(T *y, const T *x, const T *alpha, int64_t n, int64_t m);     \
    /* dx := dy (x > 0 ? 1 : alpha), dalpha := sum_rows(dy min(x, 0)) (or NULL); dx may be  \
       dy.  Overwrites dx, dalpha. */                                                        \
    void fnn_prelu_backward_##S(T *dx, T *dalpha, const T *dy, const T *x, const T *alpha,  \
                                int64_t n, int64_t m);                                      \
    /* c (m, n) := op(a) @ b on the calling thread, never the BLAS (whose thread count is    \
       the caller's): the row-owned products of the step.  Row-major with row strides lda,  \
       ldb, ldc; ta: a is stored transposed, (k, m).  Overwrites c. */                      \
    void fnn_matmul_forward_##S(T *c, const T *a, const T *b, int ta, int64_t m, int64_t n, \
                                int64_t k, int64_t lda, int64_t ldb, int64_t ldc);  \
    /* the same on the kernel of one path (FNN_GEMM_*, which fnn_matmul_paths() must list) */ \
    void fnn_matmul_forward_on_##S(int path, T *c, const T *a, const T *b, int ta, int64_t m, \
                                   int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc);

FNN_DECLARE(float, f32)
FNN_DECLARE(double, f64)
#undef FNN_DECLARE

/* ---- bfloat16 products with float32 sums (bf16.c) ------------------------------------------
   bfloat16 values are stored as uint16_t: the top half of a float32.  bf16(x) rounds a float32
   to the nearest bfloat16, ties to even, as VCVTNEPS2BF16 does: NaN stays NaN (made quiet),
   +-inf stays, zero and subnormal inputs become a zero of their sign (subnormals are flushed,
   as every fastnn kernel flushes them).  Products of two bfloat16 are exact in float32; they
   are added in float32, in an order that differs between paths.  A weight matrix is read in
   a packed layout (fnn_bf16_packed_size, fnn_bf16_pack_forward; described in bf16.c). */

/* The instruction paths of the bf16 kernels, chosen at run time: the best this machine runs,
   or the one FASTNN_BF16_PATH names (portable, avx512bf16 or amx; read at the first call), or
   the one fnn_bf16_set_path sets.  Results differ between paths only in the order of float32
   additions. */
enum fnn_bf16_path_code {
    FNN_BF16_PORTABLE = 0,   /* float32 loops */
    FNN_BF16_AVX512BF16 = 1, /* VDPBF16PS */
    FNN_BF16_AMX = 2,        /* AMX tiles (TDPBF16PS) */
    FNN_BF16_N_PATH = 3
};
int fnn_bf16_paths(void);    /* the paths this machine runs: bit p for path p */
/* The path the kernels run; -1 when FASTNN_BF16_PATH names an unknown or unavailable path
   (the kernels then run the portable one; fastnn/_kernels.pyx refuses to call them). */
int fnn_bf16_get_path(void);
/* Force path (-1: back to FASTNN_BF16_PATH, else the best); returns the path now run, or -1
   (and changes nothing) when this machine cannot run it. */
int fnn_bf16_set_path(int path);
const char *fnn_bf16_path_name(int path);

/* Elements (uint16_t) of the packed form of a (k, n) matrix: ceil(n/16) ceil(k/32) 512. */
int64_t fnn_bf16_packed_size(int64_t k, int64_t n);
/* Elements (uint16_t) of fnn_dense_backward_bf16's scratch: n out + packed(n, out) + in n + 96
   (bf16(dz), its pack and x16.T, each from the first 64-byte address past the previous one). */
int64_t fnn_bf16_backward_scratch_size(int64_t n, int64_t in, int64_t out);

/* y := bf16(x).  x float32 (n), y (n).  Overwrites y. */
void fnn_bf16_convert_forward(uint16_t *y, const float *x, int64_t n);
/* out[i, :] := bf16(x[idx[i], :]) for i < n: the batch gather that writes bfloat16 directly.
   x float32 rows of width, out (n, width); every idx in x's rows.  Overwrites out. */
void fnn_bf16_gather_forward(uint16_t *out, const float *x, const int64_t *idx, int64_t n,
                             int64_t width);
/* wp := pack(bf16(w)), wtp := pack(bf16(w.T)).  w float32 (in, out); wp of
   fnn_bf16_packed_size(in, out), wtp of fnn_bf16_packed_size(out, in), either may be NULL.
   Overwrites wp, wtp (padding included). */
void fnn_bf16_pack_forward(uint16_t *wp, uint16_t *wtp, const float *w, int64_t in,
                           int64_t out);
/* fnn_optimizer_step_f32(p, g, off, in out, o) (same rule, same float32 results, bit for bit),
   on the kernel w = p[off : off + in out] (in, out), and in the same pass wp, wtp := the packs
   of the updated w, as fnn_bf16_pack_forward writes them (either may be NULL).  Overwrites
   those elements of p and o's state, and wp, wtp. */
void fnn_optimizer_step_bf16pack_f32(float *p, uint16_t *wp, uint16_t *wtp, const float *g,
                                     int64_t off, int64_t in, int64_t out,
                                     const struct fnn_optimizer *o);
/* y := act(x @ w + b), products in bfloat16, sums in float32.  x16 (n, in) bf16; wp the
   packed w (in, out); b (out) float32 or NULL; y (n, out) float32; z (n, out) or NULL receives
   the pre-activation x @ w + b; y16 (n, out) or NULL receives bf16(y), the next layer's input.
   The epilogue is fnn_dense_forward_f32's.  Overwrites y, z, y16. */
void fnn_dense_forward_bf16(float *y, float *z, uint16_t *y16, const uint16_t *x16,
                            const uint16_t *wp, const float *b, int64_t n, int64_t in,
                            int64_t out, struct fnn_activation act);
/* dz := dy * act'(.) (float32, as fnn_dense_backward_f32), db := sum_rows(dz) (float32),
   dw := x.T @ bf16(dz), dx := bf16(dz) @ w.T (bfloat16 products, float32 sums).  x16 (n, in)
   bf16, the forward's input; wtp the packed w.T (fnn_bf16_pack_forward); y, z as
   fnn_dense_backward_f32; dz (n, out) may be dy; dw (in, out), db (out), dx (n, in) may be
   NULL; scratch of fnn_bf16_backward_scratch_size(n, in, out).  Overwrites dw, db, dx, dz,
   scratch. */
void fnn_dense_backward_bf16(float *dw, float *db, float *dx, float *dz, uint16_t *scratch,
                             const float *dy, const uint16_t *x16, const uint16_t *wtp,
                             const float *y, const float *z, int64_t n, int64_t in,
                             int64_t out, struct fnn_activation act);
/* Layer 0's backward and its kernel's step in one pass (the compiled bf16 step): the results of
   fnn_dense_backward_bf16(dw, db, NULL, dz, scratch, dy, x16, -, y, z, n, in, out, act) then
   fnn_optimizer_step_bf16pack_f32(p, wp, NULL, g, off, in, out, o) with dw = g[off : off +
   in out] (in, out), bit for bit, except that dw is never written to memory: each thread
   computes its rows of dw a 32 x 32 block at a time into its cache, steps that block of p and
   packs it.  db may be NULL.  Overwrites db, dz, scratch, elements [off, off + in out) of p
   and o's state, and wp. */
void fnn_dense_backward_step_bf16(float *p, uint16_t *wp, float *db, float *dz,
                                  uint16_t *scratch, const float *dy, const uint16_t *x16,
                                  const float *y, const float *z, int64_t off, int64_t n,
                                  int64_t in, int64_t out, struct fnn_activation act,
                                  const struct fnn_optimizer *o);

#ifdef __cplusplus
}
#endif
#endif
