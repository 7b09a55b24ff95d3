/* The loss kernels (value and gradient in one pass), float and double: see fastnn.h. */
#include "runtime.h"

#define FNN_TEMPLATE "losses.inc"
#include "each_real.h"
