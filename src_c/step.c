/* A whole training step of a stack of dense layers, float and double: see fastnn.h. */
#include "runtime.h"

#define FNN_TEMPLATE "step.inc"
#include "each_real.h"

int fnn_dense_stack_owns(const struct fnn_dense_stack *s, int64_t n) {
    const struct fnn_dense_layer *L = s->layer;
    /* (under bf16: shares of whole 32-row tiles, on AMX only: fnn_bf16_forward_share) */
    return s->part && n > 1 && s->part_threads > 1 && !fnn_in_parallel() &&
           fnn_get_num_threads() == s->part_threads &&
           L[0].in >= (s->bf16 ? 32 : 16) * s->part_threads &&
           (!s->bf16 || fnn_bf16_shares_on_tiles()) &&
           (double)n * (double)L[0].in * (double)L[0].out > FNN_SPLIT_MAX_MNK;
}
