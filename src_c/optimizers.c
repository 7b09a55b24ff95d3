/* The optimizer steps, float and double: see fastnn.h (struct fnn_optimizer). */
#include "runtime.h"

#define FNN_TEMPLATE "optimizers.inc"
#include "each_real.h"
