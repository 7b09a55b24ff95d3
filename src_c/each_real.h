/* Instantiates the template FNN_TEMPLATE (a .inc file of kernels written once for a real type)
   for float and for double.  Inside the template:
     T        the real type            S        its suffix, f32 / f64
     FN(op)   op##_S, a kernel name    LOCAL(h) h##_S, a static helper's name
     GEMM     cblas_sgemm / dgemm      GEMV     cblas_sgemv / dgemv
     M(fn)    the libm function for T (expf / exp, ...)
     VEXP     vectorisable exp for T   VTANH    vectorisable tanh for T
   Usage, in a .c file after runtime.h:  #define FNN_TEMPLATE "layers.inc"  #include "each_real.h" */
#define FNN_CAT_(a, b) a##_##b
#define FNN_CAT(a, b) FNN_CAT_(a, b)
#define FN(op) FNN_CAT(op, S)
#define LOCAL(op) FNN_CAT(op, S)

#define T float
#define S f32
#define GEMM cblas_sgemm
#define GEMV cblas_sgemv
#define M(fn) fn##f
#define VEXP fnn_expf
#define VTANH fnn_tanhf
#include FNN_TEMPLATE
#undef T
#undef S
#undef GEMM
#undef GEMV
#undef M
#undef VEXP
#undef VTANH

#define T double
#define S f64
#define GEMM cblas_dgemm
#define GEMV cblas_dgemv
#define M(fn) fn
#define VEXP exp
#define VTANH tanh
#include FNN_TEMPLATE
#undef T
#undef S
#undef GEMM
#undef GEMV
#undef M
#undef VEXP
#undef VTANH

#undef FN
#undef LOCAL
#undef FNN_CAT
#undef FNN_CAT_
#undef FNN_TEMPLATE
