# Declarations mirroring src_c/fastnn.h (one line per kernel; see the header for formulas).
from libc.stdint cimport int64_t, uint16_t

cdef extern from "fastnn.h" nogil:
    enum fnn_act:
        FNN_LINEAR, FNN_RELU, FNN_SIGMOID, FNN_TANH, FNN_SOFTMAX, FNN_LEAKY_RELU, FNN_ELU,
        FNN_GELU, FNN_RELU_GENERAL, FNN_GELU_TANH, FNN_SILU, FNN_SOFTPLUS, FNN_SOFTSIGN,
        FNN_SELU, FNN_HARD_SIGMOID, FNN_HARD_SILU, FNN_EXPONENTIAL, FNN_RELU6, FNN_MISH,
        FNN_LOG_SOFTMAX, FNN_HARD_TANH, FNN_HARD_SHRINK, FNN_SOFT_SHRINK, FNN_TANH_SHRINK,
        FNN_THRESHOLD, FNN_LOG_SIGMOID, FNN_CELU, FNN_SQUAREPLUS, FNN_SPARSE_PLUS,
        FNN_SPARSE_SIGMOID, FNN_SPARSEMAX, FNN_N_ACT
    bint FNN_ACT_NEEDS_X(int code)
    enum: FNN_ACT_PARAMS
    struct fnn_activation:
        int code
        double param[FNN_ACT_PARAMS]

    enum fnn_loss_code:
        FNN_LOSS_CCE, FNN_LOSS_SCCE, FNN_LOSS_SOFTMAX_CCE, FNN_LOSS_SOFTMAX_SCCE, FNN_LOSS_BCE,
        FNN_LOSS_MSE, FNN_LOSS_MAE, FNN_LOSS_HUBER, FNN_LOSS_LOG_COSH, FNN_LOSS_KLD,
        FNN_LOSS_POISSON, FNN_LOSS_HINGE, FNN_LOSS_CATEGORICAL_HINGE, FNN_LOSS_COSINE,
        FNN_LOSS_SIGMOID_BCE, FNN_LOSS_MAPE, FNN_LOSS_MSLE, FNN_LOSS_SQUARED_HINGE, FNN_N_LOSS
    enum fnn_opt_rule:
        FNN_OPT_SGD, FNN_OPT_ADAGRAD, FNN_OPT_RMSPROP, FNN_OPT_ADAM, FNN_OPT_NADAM,
        FNN_OPT_ADAMAX, FNN_OPT_ADADELTA, FNN_OPT_LION, FNN_N_OPT
    double FNN_EPSILON

    struct fnn_optimizer:
        int rule
        double momentum
        int nesterov
        double rho, epsilon, beta_1, beta_2, weight_decay, learning_rate
        int64_t iterations
        double u_product
        void *momentums
        void *velocities
        void *velocity_hats
        void *average_gradients
        void *accumulators
        void *norms
        void *accumulated_grads
        void *accumulated_delta_vars

    struct fnn_dense_layer:
        int64_t in_ "in"
        int64_t out
        const void *w
        const void *b
        void *dw
        void *db
        void *y
        void *z
        void *dx
        fnn_activation act
        void *wp
        void *wtp
        void *y16

    struct fnn_dense_stack:
        int64_t n_layers
        const fnn_dense_layer *layer
        const void *x
        const void *t
        int64_t x_row_bytes, t_row_bytes
        void *xb
        void *tb
        void *grad
        const void *sw
        void *swb
        int loss
        void *p
        void *g
        int64_t n_params
        const fnn_optimizer *opt
        int rank1
        void *part
        int64_t part_threads
        int bf16
        void *scratch
        void (*ready)(void *ctx, int64_t off, int64_t count) noexcept nogil
        void *ready_ctx
        const int64_t *buckets
        int64_t n_buckets

    int fnn_dense_stack_owns(const fnn_dense_stack *s, int64_t n) noexcept
    double fnn_dense_stack_step_f32(const fnn_dense_stack *s, const int64_t *idx, int64_t n) noexcept
    double fnn_dense_stack_step_f64(const fnn_dense_stack *s, const int64_t *idx, int64_t n) noexcept

    void fnn_init() noexcept
    int fnn_have_openmp() noexcept
    const char *fnn_simd_targets() noexcept
    void fnn_set_num_threads(int n) noexcept
    int fnn_get_num_threads() noexcept
    int fnn_forked_child() noexcept
    int fnn_blas_get_num_threads() noexcept
    const char *fnn_blas_config() noexcept
    void fnn_gather_forward_u8(void *out, const void *x, const int64_t *idx, int64_t n, int64_t row_bytes) noexcept

    void fnn_dense_forward_f32(float *y, float *z, const float *x, const float *w, const float *b, int64_t n, int64_t i, int64_t o, fnn_activation act) noexcept
    void fnn_dense_forward_f64(double *y, double *z, const double *x, const double *w, const double *b, int64_t n, int64_t i, int64_t o, fnn_activation act) noexcept
    void fnn_dense_backward_f32(float *dw, float *db, float *dx, float *dz, const float *dy, const float *x, const float *w, const float *y, const float *z, int64_t n, int64_t i, int64_t o, fnn_activation act) noexcept
    void fnn_dense_backward_f64(double *dw, double *db, double *dx, double *dz, const double *dy, const double *x, const double *w, const double *y, const double *z, int64_t n, int64_t i, int64_t o, fnn_activation act) noexcept
    void fnn_act_forward_f32(float *y, const float *x, int64_t n, int64_t m, fnn_activation act) noexcept
    void fnn_act_forward_f64(double *y, const double *x, int64_t n, int64_t m, fnn_activation act) noexcept
    void fnn_act_backward_f32(float *dx, const float *dy, const float *y, const float *x, int64_t n, int64_t m, fnn_activation act) noexcept
    void fnn_act_backward_f64(double *dx, const double *dy, const double *y, const double *x, int64_t n, int64_t m, fnn_activation act) noexcept

    double fnn_loss_backward_f32(float *dp, float *per_sample, const float *p, const void *t, const float *sw, int64_t n, int64_t k, int loss) noexcept
    double fnn_loss_backward_f64(double *dp, double *per_sample, const double *p, const void *t, const double *sw, int64_t n, int64_t k, int loss) noexcept
    double fnn_huber_backward_f32(float *dp, float *per_sample, const float *p, const float *t, const float *sw, int64_t n, int64_t k, float delta) noexcept
    double fnn_huber_backward_f64(double *dp, double *per_sample, const double *p, const double *t, const double *sw, int64_t n, int64_t k, double delta) noexcept
    void fnn_optimizer_step_f32(float *p, const float *g, int64_t off, int64_t n, const fnn_optimizer *o) noexcept
    void fnn_optimizer_step_f64(double *p, const double *g, int64_t off, int64_t n, const fnn_optimizer *o) noexcept
    void fnn_optimizer_outer_step_f32(float *p, const float *a, const float *b, int64_t rows, int64_t cols, const fnn_optimizer *o) noexcept
    void fnn_optimizer_outer_step_f64(double *p, const double *a, const double *b, int64_t rows, int64_t cols, const fnn_optimizer *o) noexcept

    void fnn_batchnorm_forward_f32(float *y, float *mean, float *var, const float *x, const float *gamma, const float *beta, int64_t n, int64_t m, float epsilon, int training) noexcept
    void fnn_batchnorm_forward_f64(double *y, double *mean, double *var, const double *x, const double *gamma, const double *beta, int64_t n, int64_t m, double epsilon, int training) noexcept
    void fnn_batchnorm_backward_f32(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x, const float *mean, const float *var, const float *gamma, int64_t n, int64_t m, float epsilon) noexcept
    void fnn_batchnorm_backward_f64(double *dx, double *dgamma, double *dbeta, const double *dy, const double *x, const double *mean, const double *var, const double *gamma, int64_t n, int64_t m, double epsilon) noexcept
    void fnn_layernorm_forward_f32(float *y, float *mean, float *rstd, const float *x, const float *gamma, const float *beta, int64_t n, int64_t m, float epsilon) noexcept
    void fnn_layernorm_forward_f64(double *y, double *mean, double *rstd, const double *x, const double *gamma, const double *beta, int64_t n, int64_t m, double epsilon) noexcept
    void fnn_layernorm_backward_f32(float *dx, float *dgamma, float *dbeta, const float *dy, const float *x, const float *mean, const float *rstd, const float *gamma, int64_t n, int64_t m) noexcept
    void fnn_layernorm_backward_f64(double *dx, double *dgamma, double *dbeta, const double *dy, const double *x, const double *mean, const double *rstd, const double *gamma, int64_t n, int64_t m) noexcept
    void fnn_prelu_forward_f32(float *y, const float *x, const float *alpha, int64_t n, int64_t m) noexcept
    void fnn_prelu_forward_f64(double *y, const double *x, const double *alpha, int64_t n, int64_t m) noexcept
    void fnn_prelu_backward_f32(float *dx, float *dalpha, const float *dy, const float *x, const float *alpha, int64_t n, int64_t m) noexcept
    void fnn_prelu_backward_f64(double *dx, double *dalpha, const double *dy, const double *x, const double *alpha, int64_t n, int64_t m) noexcept
    void fnn_matmul_forward_on_f32(int path, float *c, const float *a, const float *b, int ta, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc) noexcept
    void fnn_matmul_forward_on_f64(int path, double *c, const double *a, const double *b, int ta, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc) noexcept
    enum fnn_gemm_path_code:
        FNN_GEMM_BASE, FNN_GEMM_AVX2, FNN_GEMM_AVX512, FNN_GEMM_N_PATH
    int fnn_matmul_paths() noexcept
    # bfloat16 products with float32 sums (src_c/bf16.c); bf16 values are uint16_t
    enum fnn_bf16_path_code:
        FNN_BF16_PORTABLE, FNN_BF16_AVX512BF16, FNN_BF16_AMX, FNN_BF16_N_PATH
    int fnn_bf16_paths() noexcept
    int fnn_bf16_get_path() noexcept
    int fnn_bf16_set_path(int path) noexcept
    const char *fnn_bf16_path_name(int path) noexcept
    int64_t fnn_bf16_packed_size(int64_t k, int64_t n) noexcept
    int64_t fnn_bf16_backward_scratch_size(int64_t n, int64_t i, int64_t o) noexcept
    void fnn_bf16_convert_forward(uint16_t *y, const float *x, int64_t n) noexcept
    void fnn_bf16_gather_forward(uint16_t *out, const float *x, const int64_t *idx, int64_t n,
                                 int64_t width) noexcept
    void fnn_bf16_pack_forward(uint16_t *wp, uint16_t *wtp, const float *w, int64_t i, int64_t o) noexcept
    void fnn_optimizer_step_bf16pack_f32(float *p, uint16_t *wp, uint16_t *wtp, const float *g, int64_t off, int64_t i, int64_t o, const fnn_optimizer *opt) noexcept
    void fnn_dense_forward_bf16(float *y, float *z, uint16_t *y16, const uint16_t *x16, const uint16_t *wp, const float *b, int64_t n, int64_t i, int64_t o, fnn_activation act) noexcept
    void fnn_dense_backward_bf16(float *dw, float *db, float *dx, float *dz, uint16_t *scratch, const float *dy, const uint16_t *x16, const uint16_t *wtp, const float *y, const float *z, int64_t n, int64_t i, int64_t o, fnn_activation act) noexcept
    void fnn_dense_backward_step_bf16(float *p, uint16_t *wp, float *db, float *dz, uint16_t *scratch, const float *dy, const uint16_t *x16, const float *y, const float *z, int64_t off, int64_t n, int64_t i, int64_t o, fnn_activation act, const fnn_optimizer *opt) noexcept


# Each kernel once for both real types (scikit-learn's `floating` pattern): the wrappers in
# _kernels.pyx are written once over `real` and call these.
ctypedef fused real:
    float
    double


cdef inline void dense_forward_k(real *y, real *z, const real *x, const real *w, const real *b, int64_t n, int64_t i, int64_t o, fnn_activation act) noexcept nogil:
    if real is float:
        fnn_dense_forward_f32(y, z, x, w, b, n, i, o, act)
    else:
        fnn_dense_forward_f64(y, z, x, w, b, n, i, o, act)


cdef inline void dense_backward_k(real *dw, real *db, real *dx, real *dz, const real *dy, const real *x, const real *w, const real *y, const real *z, int64_t n, int64_t i, int64_t o, fnn_activation act) noexcept nogil:
    if real is float:
        fnn_dense_backward_f32(dw, db, dx, dz, dy, x, w, y, z, n, i, o, act)
    else:
        fnn_dense_backward_f64(dw, db, dx, dz, dy, x, w, y, z, n, i, o, act)


cdef inline void act_forward_k(real *y, const real *x, int64_t n, int64_t m, fnn_activation act) noexcept nogil:
    if real is float:
        fnn_act_forward_f32(y, x, n, m, act)
    else:
        fnn_act_forward_f64(y, x, n, m, act)


cdef inline void act_backward_k(real *dx, const real *dy, const real *y, const real *x, int64_t n, int64_t m, fnn_activation act) noexcept nogil:
    if real is float:
        fnn_act_backward_f32(dx, dy, y, x, n, m, act)
    else:
        fnn_act_backward_f64(dx, dy, y, x, n, m, act)


cdef inline double loss_backward_k(real *dp, real *per_sample, const real *p, const void *t, const real *sw, int64_t n, int64_t k, int loss) noexcept nogil:
    if real is float:
        return fnn_loss_backward_f32(dp, per_sample, p, t, sw, n, k, loss)
    else:
        return fnn_loss_backward_f64(dp, per_sample, p, t, sw, n, k, loss)


cdef inline double huber_backward_k(real *dp, real *per_sample, const real *p, const real *t, const real *sw, int64_t n, int64_t k, double delta) noexcept nogil:
    if real is float:
        return fnn_huber_backward_f32(dp, per_sample, p, t, sw, n, k, <float>delta)
    else:
        return fnn_huber_backward_f64(dp, per_sample, p, t, sw, n, k, delta)


cdef inline void optimizer_step_k(real *p, const real *g, int64_t off, int64_t n, const fnn_optimizer *o) noexcept nogil:
    if real is float:
        fnn_optimizer_step_f32(p, g, off, n, o)
    else:
        fnn_optimizer_step_f64(p, g, off, n, o)


cdef inline void optimizer_outer_step_k(real *p, const real *a, const real *b, int64_t rows, int64_t cols, const fnn_optimizer *o) noexcept nogil:
    if real is float:
        fnn_optimizer_outer_step_f32(p, a, b, rows, cols, o)
    else:
        fnn_optimizer_outer_step_f64(p, a, b, rows, cols, o)


cdef inline double dense_stack_step_k(real *kind, const fnn_dense_stack *s, const int64_t *idx, int64_t n) noexcept nogil:
    if real is float:
        return fnn_dense_stack_step_f32(s, idx, n)
    else:
        return fnn_dense_stack_step_f64(s, idx, n)


cdef inline void batchnorm_forward_k(real *y, real *mean, real *var, const real *x, const real *gamma, const real *beta, int64_t n, int64_t m, double epsilon, int training) noexcept nogil:
    if real is float:
        fnn_batchnorm_forward_f32(y, mean, var, x, gamma, beta, n, m, <float>epsilon, training)
    else:
        fnn_batchnorm_forward_f64(y, mean, var, x, gamma, beta, n, m, epsilon, training)


cdef inline void batchnorm_backward_k(real *dx, real *dgamma, real *dbeta, const real *dy, const real *x, const real *mean, const real *var, const real *gamma, int64_t n, int64_t m, double epsilon) noexcept nogil:
    if real is float:
        fnn_batchnorm_backward_f32(dx, dgamma, dbeta, dy, x, mean, var, gamma, n, m, <float>epsilon)
    else:
        fnn_batchnorm_backward_f64(dx, dgamma, dbeta, dy, x, mean, var, gamma, n, m, epsilon)


cdef inline void layernorm_forward_k(real *y, real *mean, real *rstd, const real *x, const real *gamma, const real *beta, int64_t n, int64_t m, double epsilon) noexcept nogil:
    if real is float:
        fnn_layernorm_forward_f32(y, mean, rstd, x, gamma, beta, n, m, <float>epsilon)
    else:
        fnn_layernorm_forward_f64(y, mean, rstd, x, gamma, beta, n, m, epsilon)


cdef inline void layernorm_backward_k(real *dx, real *dgamma, real *dbeta, const real *dy, const real *x, const real *mean, const real *rstd, const real *gamma, int64_t n, int64_t m) noexcept nogil:
    if real is float:
        fnn_layernorm_backward_f32(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, n, m)
    else:
        fnn_layernorm_backward_f64(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, n, m)


cdef inline void prelu_forward_k(real *y, const real *x, const real *alpha, int64_t n, int64_t m) noexcept nogil:
    if real is float:
        fnn_prelu_forward_f32(y, x, alpha, n, m)
    else:
        fnn_prelu_forward_f64(y, x, alpha, n, m)


cdef inline void prelu_backward_k(real *dx, real *dalpha, const real *dy, const real *x, const real *alpha, int64_t n, int64_t m) noexcept nogil:
    if real is float:
        fnn_prelu_backward_f32(dx, dalpha, dy, x, alpha, n, m)
    else:
        fnn_prelu_backward_f64(dx, dalpha, dy, x, alpha, n, m)


cdef inline void matmul_forward_k(int path, real *c, const real *a, const real *b, int ta, int64_t m, int64_t n, int64_t k) noexcept nogil:
    if real is float:
        fnn_matmul_forward_on_f32(path, c, a, b, ta, m, n, k, k if not ta else m, n, n)
    else:
        fnn_matmul_forward_on_f64(path, c, a, b, ta, m, n, k, k if not ta else m, n, n)
