/* The optimizer steps, float and double: see fastnn.h (struct fnn_optimizer). */

/* No contraction of a * b + c into a fused multiply-add in the steps: the vectorized body and
   the scalar remainder of a loop then round every element alike, so an element's result never
   depends on where a call's range begins or ends (fnn_optimizer_step_bf16pack_f32 steps a kernel
   in blocks of rows, bit for bit as one step over the whole range; measured without this: an
   avx512f clone rounded sgd's momentum update differently in its remainder, 1 ulp). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#include "runtime.h"

#define FNN_TEMPLATE "optimizers.inc"
#include "each_real.h"
