/* The normalization and PReLU kernels, float and double: see fastnn.h. */
#include "runtime.h"

#define FNN_TEMPLATE "norm.inc"
#include "each_real.h"
