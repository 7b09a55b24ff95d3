# Declarations mirroring src_c/fastnn.h (one line per kernel; see the header for formulas).
from libc.stdint cimport int64_t

cdef extern from "fastnn.h" nogil:
    enum fnn_act:
        FNN_LINEAR, FNN_RELU, FNN_SIGMOID, FNN_TANH, FNN_SOFTMAX, FNN_LEAKY_RELU, FNN_ELU,
        FNN_GELU, FNN_N_ACT

    enum fnn_loss_code:
        FNN_LOSS_CCE, FNN_LOSS_SCCE, FNN_LOSS_SOFTMAX_CCE, FNN_LOSS_SOFTMAX_SCCE, FNN_LOSS_BCE,
        FNN_LOSS_MSE
    enum fnn_opt_code:
        FNN_OPT_SGD, FNN_OPT_ADAGRAD, FNN_OPT_RMSPROP, FNN_OPT_ADAM

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
        int act
        double alpha

    struct fnn_dense_stack:
        int64_t n_layers
        const fnn_dense_layer *layer
        const void *x
        const void *t
        int64_t x_row_bytes, t_row_bytes
        void *xb
        void *tb
        void *grad
        int loss, opt
        void *p
        void *g
        void *state[3]
        int64_t n_params
        double hyper[3]
        int flag
        double wd
        int rank1
        void *part
        int64_t part_threads

    int fnn_dense_stack_owns(const fnn_dense_stack *s, int64_t n) noexcept
    double fnn_dense_stack_step_f32(const fnn_dense_stack *s, const int64_t *idx, int64_t n, double lr, int64_t t) noexcept
    double fnn_dense_stack_step_f64(const fnn_dense_stack *s, const int64_t *idx, int64_t n, double lr, int64_t t) noexcept

    void fnn_init() noexcept
    int fnn_have_openmp() noexcept
    const char *fnn_simd_targets() noexcept
    void fnn_set_num_threads(int n) noexcept
    int fnn_get_num_threads() noexcept
    int fnn_blas_get_num_threads() noexcept
    const char *fnn_blas_config() noexcept
    void fnn_gather_forward_u8(void *out, const void *x, const int64_t *idx, int64_t n, int64_t row_bytes) noexcept

    void fnn_dense_forward_f32(float *y, float *z, const float *x, const float *w, const float *b, int64_t n, int64_t i, int64_t o, int act, float alpha) noexcept
    void fnn_dense_forward_f64(double *y, double *z, const double *x, const double *w, const double *b, int64_t n, int64_t i, int64_t o, int act, double alpha) noexcept
    void fnn_dense_backward_f32(float *dw, float *db, float *dx, float *dz, const float *dy, const float *x, const float *w, const float *y, const float *z, int64_t n, int64_t i, int64_t o, int act, float alpha) noexcept
    void fnn_dense_backward_f64(double *dw, double *db, double *dx, double *dz, const double *dy, const double *x, const double *w, const double *y, const double *z, int64_t n, int64_t i, int64_t o, int act, double alpha) noexcept
    void fnn_act_forward_f32(float *y, const float *x, int64_t n, int64_t m, int act, float alpha) noexcept
    void fnn_act_forward_f64(double *y, const double *x, int64_t n, int64_t m, int act, double alpha) noexcept
    void fnn_act_backward_f32(float *dx, const float *dy, const float *y, const float *x, int64_t n, int64_t m, int act, float alpha) noexcept
    void fnn_act_backward_f64(double *dx, const double *dy, const double *y, const double *x, int64_t n, int64_t m, int act, double alpha) noexcept

    double fnn_categorical_crossentropy_backward_f32(float *dp, const float *p, const float *t, int64_t n, int64_t k) noexcept
    double fnn_categorical_crossentropy_backward_f64(double *dp, const double *p, const double *t, int64_t n, int64_t k) noexcept
    double fnn_sparse_categorical_crossentropy_backward_f32(float *dp, const float *p, const int64_t *labels, int64_t n, int64_t k) noexcept
    double fnn_sparse_categorical_crossentropy_backward_f64(double *dp, const double *p, const int64_t *labels, int64_t n, int64_t k) noexcept
    double fnn_softmax_crossentropy_backward_f32(float *dz, const float *p, const float *t, int64_t n, int64_t k) noexcept
    double fnn_softmax_crossentropy_backward_f64(double *dz, const double *p, const double *t, int64_t n, int64_t k) noexcept
    double fnn_sparse_softmax_crossentropy_backward_f32(float *dz, const float *p, const int64_t *labels, int64_t n, int64_t k) noexcept
    double fnn_sparse_softmax_crossentropy_backward_f64(double *dz, const double *p, const int64_t *labels, int64_t n, int64_t k) noexcept
    double fnn_binary_crossentropy_backward_f32(float *dp, const float *p, const float *t, int64_t n, int64_t k) noexcept
    double fnn_binary_crossentropy_backward_f64(double *dp, const double *p, const double *t, int64_t n, int64_t k) noexcept
    double fnn_mean_squared_error_backward_f32(float *dp, const float *p, const float *t, int64_t n, int64_t k) noexcept
    double fnn_mean_squared_error_backward_f64(double *dp, const double *p, const double *t, int64_t n, int64_t k) noexcept

    void fnn_sgd_step_f32(float *p, float *m, const float *g, int64_t n, float lr, float mu, int nesterov, float wd) noexcept
    void fnn_sgd_step_f64(double *p, double *m, const double *g, int64_t n, double lr, double mu, int nesterov, double wd) noexcept
    void fnn_adagrad_step_f32(float *p, float *a, const float *g, int64_t n, float lr, float eps, float wd) noexcept
    void fnn_adagrad_step_f64(double *p, double *a, const double *g, int64_t n, double lr, double eps, double wd) noexcept
    void fnn_rmsprop_step_f32(float *p, float *v, float *mom, float *mg, const float *g, int64_t n, float lr, float rho, float mu, float eps, float wd) noexcept
    void fnn_rmsprop_step_f64(double *p, double *v, double *mom, double *mg, const double *g, int64_t n, double lr, double rho, double mu, double eps, double wd) noexcept
    void fnn_adam_step_f32(float *p, float *m, float *v, float *vhat, const float *g, int64_t n, float lr, float b1, float b2, float eps, float wd, int64_t t) noexcept
    void fnn_adam_step_f64(double *p, double *m, double *v, double *vhat, const double *g, int64_t n, double lr, double b1, double b2, double eps, double wd, int64_t t) noexcept
    void fnn_sgd_outer_step_f32(float *p, float *m, const float *a, const float *b, int64_t rows, int64_t cols, float lr, float mu, int nesterov, float wd) noexcept
    void fnn_sgd_outer_step_f64(double *p, double *m, const double *a, const double *b, int64_t rows, int64_t cols, double lr, double mu, int nesterov, double wd) noexcept
    void fnn_adagrad_outer_step_f32(float *p, float *acc, const float *a, const float *b, int64_t rows, int64_t cols, float lr, float eps, float wd) noexcept
    void fnn_adagrad_outer_step_f64(double *p, double *acc, const double *a, const double *b, int64_t rows, int64_t cols, double lr, double eps, double wd) noexcept
    void fnn_rmsprop_outer_step_f32(float *p, float *v, float *mom, float *mg, const float *a, const float *b, int64_t rows, int64_t cols, float lr, float rho, float mu, float eps, float wd) noexcept
    void fnn_rmsprop_outer_step_f64(double *p, double *v, double *mom, double *mg, const double *a, const double *b, int64_t rows, int64_t cols, double lr, double rho, double mu, double eps, double wd) noexcept
    void fnn_adam_outer_step_f32(float *p, float *m, float *v, float *vhat, const float *a, const float *b, int64_t rows, int64_t cols, float lr, float b1, float b2, float eps, float wd, int64_t t) noexcept
    void fnn_adam_outer_step_f64(double *p, double *m, double *v, double *vhat, const double *a, const double *b, int64_t rows, int64_t cols, double lr, double b1, double b2, double eps, double wd, int64_t t) noexcept
