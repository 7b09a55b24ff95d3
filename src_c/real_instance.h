/* One instance of the template FNN_TEMPLATE for the real type FNN_REAL selects (32: float,
   64: double); each_real.h includes this file once per type. */
#if FNN_REAL == 32
#define T float
#define S f32
#define GEMM cblas_sgemm
#define GEMV cblas_sgemv
#define M(fn) fn##f
#define VEXP fnn_expf
#define VTANH fnn_tanhf
#else
#define T double
#define S f64
#define GEMM cblas_dgemm
#define GEMV cblas_dgemv
#define M(fn) fn
#define VEXP exp
#define VTANH tanh
#endif

#include FNN_TEMPLATE

#undef T
#undef S
#undef GEMM
#undef GEMV
#undef M
#undef VEXP
#undef VTANH
#undef FNN_REAL
