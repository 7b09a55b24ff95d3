/* The dense layer and activation kernels, float and double: see fastnn.h. */
#include "runtime.h"

#define FNN_TEMPLATE "layers.inc"
#include "each_real.h"
