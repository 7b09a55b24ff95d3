/* Instantiates the template FNN_TEMPLATE (a .inc file of kernels written once for a real type)
   for float and for double.  Inside the template:
     T        the real type            S        its suffix, f32 / f64
     FN(op)   op##_S, a kernel name    LOCAL(h) h##_S, a static helper's name
     GEMM     cblas_sgemm / dgemm      GEMV     cblas_sgemv / dgemv
     M(fn)    the libm function for T (expf / exp, ...)
     VEXP     vectorisable exp for T   VTANH    vectorisable tanh for T
   Usage, in a .c file after runtime.h:  #define FNN_TEMPLATE "layers.inc"  #include "each_real.h"
   (real_instance.h makes one instance: FNN_REAL 32 or 64 selects the type.) */
#define FNN_CAT_(a, b) a##_##b
#define FNN_CAT(a, b) FNN_CAT_(a, b)
#define FN(op) FNN_CAT(op, S)
#define LOCAL(op) FNN_CAT(op, S)

#define FNN_REAL 32
#include "real_instance.h"
#define FNN_REAL 64
#include "real_instance.h"

#undef FN
#undef LOCAL
#undef FNN_CAT
#undef FNN_CAT_
#undef FNN_TEMPLATE
