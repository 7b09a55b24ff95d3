/* fastnn's own serial GEMM (the row-owned products of the step), float and double. */
#include "runtime.h"

#define FNN_TEMPLATE "gemm.inc"
#include "each_real.h"
