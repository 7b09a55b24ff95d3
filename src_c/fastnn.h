/* fastnn kernels: dense layers, activations, losses and optimizer steps.

   Conventions (every kernel):
   - name: fnn_<op>_<forward|backward|step>_<f32|f64>;
   - arguments: outputs (or in/out state) first, then const inputs, then sizes, then scalars;
   - all arrays are C-contiguous, row-major; the caller owns every buffer;
   - kernels never allocate, print or exit; each says whether it overwrites or accumulates;
   - every kernel flushes subnormals to zero (FTZ/DAZ) while it runs and restores the
     caller's floating-point mode: subnormal operands otherwise cost ~100 cycles each.
   Matrix products go through the BLAS (scipy-openblas32, cblas with a `scipy_` prefix). */
#ifndef FASTNN_H
#define FASTNN_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Activation codes, shared by the dense and activation kernels. */
enum fnn_act {
    FNN_LINEAR = 0,
    FNN_RELU = 1,
    FNN_SIGMOID = 2,
    FNN_TANH = 3,
    FNN_SOFTMAX = 4,     /* row-wise over the last axis */
    FNN_LEAKY_RELU = 5,  /* alpha = negative slope (>= 0) */
    FNN_ELU = 6,         /* alpha = scale of the negative part (> 0) */
    FNN_GELU = 7,        /* exact (erf) form; backward needs the pre-activation */
    FNN_N_ACT = 8
};

/* Once, before any kernel: route the BLAS's threads through fastnn's OpenMP team. */
void fnn_init(void);

/* Build facts for show_config(). */
int fnn_have_openmp(void);
const char *fnn_simd_targets(void);
void fnn_set_num_threads(int n);  /* OpenMP loops and the BLAS */
int fnn_get_num_threads(void);
int fnn_blas_get_num_threads(void);
const char *fnn_blas_config(void);

/* out[i, :] := x[idx[i], :] for i < n; rows of row_bytes bytes, so any dtype.  Every idx
   must lie in [0, rows of x).  Overwrites out. */
void fnn_gather_forward_u8(void *out, const void *x, const int64_t *idx, int64_t n,
                           int64_t row_bytes);

/* A whole training step of a stack of dense layers in one call (fit's inner loop without
   the interpreter between kernels): gather the batch, forward, loss, backward, one optimizer
   step over the flat parameter buffer.  Arrays are void * of the stack's real type; the caller
   (fastnn/_kernels.pyx, DenseStack) checks every size and keeps every array alive. */
enum fnn_loss_code {
    FNN_LOSS_CCE = 0, FNN_LOSS_SCCE = 1,           /* from probabilities */
    FNN_LOSS_SOFTMAX_CCE = 2, FNN_LOSS_SOFTMAX_SCCE = 3, /* fused with the last softmax */
    FNN_LOSS_BCE = 4, FNN_LOSS_MSE = 5
};
enum fnn_opt_code { FNN_OPT_SGD = 0, FNN_OPT_ADAGRAD = 1, FNN_OPT_RMSPROP = 2, FNN_OPT_ADAM = 3 };

struct fnn_dense_layer {
    int64_t in, out;
    const void *w, *b;  /* kernel (in, out), bias (out) or NULL: views into the flat p */
    void *dw, *db;      /* their gradients: views into the flat g; dw unused when rank1 */
    void *y, *z, *dx;   /* output (n, out); pre-activation (n, out) or NULL; dx (n, in) or NULL */
    int act;            /* the layer's activation; the last layer's is skipped when fused */
    double alpha;
};

struct fnn_dense_stack {
    int64_t n_layers;
    const struct fnn_dense_layer *layer;
    const void *x, *t;        /* training inputs (rows of x_row_bytes), targets (rows or int64) */
    int64_t x_row_bytes, t_row_bytes;
    void *xb, *tb, *grad;     /* batch buffers: inputs, targets, d loss / d output (n, k) */
    int loss;                 /* enum fnn_loss_code */
    int opt;                  /* enum fnn_opt_code */
    void *p;                  /* flat parameters, gradients and optimizer state (n_params) */
    void *g;
    void *state[3];           /* in the step kernel's argument order; NULL when unused */
    int64_t n_params;
    double hyper[3];          /* sgd: mu; adagrad: eps; rmsprop: rho, mu, eps; adam: b1, b2, eps */
    int flag;                 /* sgd: nesterov */
    double wd;
    int rank1;                /* at n == 1, layer 0's kernel (first in p) steps from x dz.T */
    /* Scratch for layer 0 when each thread owns a block of its kernel's rows (n > 1, a product
       too big to split in row blocks of the batch, and as many threads as part_threads): the
       forward adds up per-thread partial products x[:, rows] @ w[rows, :], and the backward
       computes dw[rows] and steps the optimizer on those rows at once, so each core keeps its
       rows of w, dw and the optimizer state in its own cache.  (part_threads - 1) x n x out
       of layer 0, or NULL. */
    void *part;
    int64_t part_threads;
};

/* Whether a step of n samples owns layer 0 by rows (see part above) with the current threads. */
int fnn_dense_stack_owns(const struct fnn_dense_stack *s, int64_t n);

#define FNN_DECLARE(T, S)                                                                   \
    /* y := act(x @ w + b).  x (n, in), w (in, out), b (out) or NULL, y (n, out);          \
       z (n, out) or NULL receives the pre-activation x @ w + b.  Overwrites y and z. */   \
    void fnn_dense_forward_##S(T *y, T *z, const T *x, const T *w, const T *b,              \
                               int64_t n, int64_t in, int64_t out, int act, T alpha);      \
    /* dz := dy * act'(.), dw := x.T @ dz, db := sum_rows(dz), dx := dz @ w.T.             \
       dz (n, out) is scratch and may be the same buffer as dy; dw, db, dx may be NULL;     \
       y is the forward output, z the pre-activation (read only for gelu, else NULL ok).   \
       Overwrites dw, db, dx, dz. */                                                        \
    void fnn_dense_backward_##S(T *dw, T *db, T *dx, T *dz, const T *dy, const T *x,        \
                                const T *w, const T *y, const T *z,                         \
                                int64_t n, int64_t in, int64_t out, int act, T alpha);     \
    /* y := act(x).  x, y (n, m); y may be x.  Overwrites y. */                             \
    void fnn_act_forward_##S(T *y, const T *x, int64_t n, int64_t m, int act, T alpha);    \
    /* dx := dy * act'(x), written from y = act(x) (and x for gelu).  dx may be dy.        \
       Overwrites dx. */                                                                    \
    void fnn_act_backward_##S(T *dx, const T *dy, const T *y, const T *x,                   \
                              int64_t n, int64_t m, int act, T alpha);                     \
    /* Losses over p, t (n, k); each returns the batch mean of the per-sample loss and,     \
       unless dp is NULL, overwrites dp (n, k) := d(loss)/dp.                               \
       categorical: q = p / sum_row(p), c = clip(q, 1e-7, 1-1e-7), l = -sum t*log(c). */   \
    double fnn_categorical_crossentropy_backward_##S(T *dp, const T *p, const T *t,         \
                                                     int64_t n, int64_t k);                 \
    /* sparse: labels (n) int64 in [0, k), l = -log(clip(q[label])). */                     \
    double fnn_sparse_categorical_crossentropy_backward_##S(T *dp, const T *p,              \
                                                            const int64_t *labels,          \
                                                            int64_t n, int64_t k);          \
    /* Fused softmax + crossentropy: p = softmax(logits), value as above,                   \
       dz := (p * sum_row(t) - t) / n, the gradient with respect to the logits              \
       (= (p - t) / n for one-hot or any t whose rows sum to 1). */                         \
    double fnn_softmax_crossentropy_backward_##S(T *dz, const T *p, const T *t,             \
                                                 int64_t n, int64_t k);                     \
    double fnn_sparse_softmax_crossentropy_backward_##S(T *dz, const T *p,                  \
                                                        const int64_t *labels,              \
                                                        int64_t n, int64_t k);              \
    /* binary: c = clip(p), l = mean_k -(t log c + (1-t) log(1-c)). */                      \
    double fnn_binary_crossentropy_backward_##S(T *dp, const T *p, const T *t,              \
                                                int64_t n, int64_t k);                      \
    /* mse: l = mean_k (p - t)^2. */                                                         \
    double fnn_mean_squared_error_backward_##S(T *dp, const T *p, const T *t,               \
                                               int64_t n, int64_t k);                       \
    /* Optimizer steps: in place, one pass; p, state, g (n).  First, when wd > 0,           \
       p := p - lr * wd * p (decoupled weight decay).  Then, Keras 3 rules:                 \
       sgd:     m == NULL: p := p - lr g;                                                   \
                else m := mu m - lr g;  p := p + m  (nesterov: p := p + mu m - lr g). */    \
    void fnn_sgd_step_##S(T *p, T *m, const T *g, int64_t n, T lr, T mu, int nesterov,      \
                          T wd);                                                            \
    /* adagrad: acc := acc + g^2;  p := p - lr g / sqrt(acc + eps). */                            \
    void fnn_adagrad_step_##S(T *p, T *acc, const T *g, int64_t n, T lr, T eps, T wd);        \
    /* rmsprop: v := rho v + (1-rho) g^2;  centered (mg != NULL): mg := rho mg + (1-rho) g, \
       d := v - mg^2 + eps, else d := v + eps;  inc := lr g / sqrt(d);                      \
       mom != NULL: mom := mu mom + inc, p := p - mom;  else p := p - inc. */               \
    void fnn_rmsprop_step_##S(T *p, T *v, T *mom, T *mg, const T *g, int64_t n, T lr,       \
                              T rho, T mu, T eps, T wd);                                    \
    /* adam (step t >= 1): a := lr sqrt(1 - b2^t) / (1 - b1^t);                             \
       m := m + (g - m)(1 - b1);  v := v + (g^2 - v)(1 - b2);                               \
       vhat != NULL (amsgrad): vhat := max(vhat, v), v' = vhat, else v' = v;                \
       p := p - a m / (sqrt(v') + eps). */                                                  \
    void fnn_adam_step_##S(T *p, T *m, T *v, T *vhat, const T *g, int64_t n, T lr, T b1,    \
                           T b2, T eps, T wd, int64_t t);                                   \
    /* The same four steps with the rank-1 gradient g := a b.T, a (rows), b (cols),          \
       p and the state (rows, cols): a dense kernel's gradient for one sample, computed      \
       on the fly instead of being written and read back. */                                 \
    void fnn_sgd_outer_step_##S(T *p, T *m, const T *a, const T *b, int64_t rows,            \
                                int64_t cols, T lr, T mu, int nesterov, T wd);              \
    void fnn_adagrad_outer_step_##S(T *p, T *acc, const T *a, const T *b, int64_t rows,      \
                                    int64_t cols, T lr, T eps, T wd);                       \
    void fnn_rmsprop_outer_step_##S(T *p, T *v, T *mom, T *mg, const T *a, const T *b,       \
                                    int64_t rows, int64_t cols, T lr, T rho, T mu, T eps,  \
                                    T wd);                                                  \
    void fnn_adam_outer_step_##S(T *p, T *m, T *v, T *vhat, const T *a, const T *b,          \
                                 int64_t rows, int64_t cols, T lr, T b1, T b2, T eps, T wd, \
                                 int64_t t);                                                \
    /* One training step on the rows idx (n) of the stack's x and t: returns the batch loss. \
       lr is this step's learning rate, t the optimizer's step count (1, 2, ...). */         \
    double fnn_dense_stack_step_##S(const struct fnn_dense_stack *s, const int64_t *idx,     \
                                    int64_t n, double lr, int64_t t);

FNN_DECLARE(float, f32)
FNN_DECLARE(double, f64)
#undef FNN_DECLARE

#ifdef __cplusplus
}
#endif
#endif
