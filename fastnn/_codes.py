"""The codes and constants the C kernels and Python share, mirrored from src_c/fastnn.h
(enum fnn_act, struct fnn_activation, enum fnn_loss_code, enum fnn_opt_rule, FNN_EPSILON).  One place on the
Python side: the layers, losses, optimizers and both backends read them from here, and
tests/test_codes.py checks them against the compiled module."""

# enum fnn_act: the kernels' activation codes (fastnn/activations.py maps Keras' functions and
# arguments to them: relu_general is relu with parameters, gelu_tanh gelu(approximate=True))
ACTIVATIONS = {
    "linear": 0, "relu": 1, "sigmoid": 2, "tanh": 3, "softmax": 4, "leaky_relu": 5, "elu": 6,
    "gelu": 7, "relu_general": 8, "gelu_tanh": 9, "silu": 10, "softplus": 11, "softsign": 12,
    "selu": 13, "hard_sigmoid": 14, "hard_silu": 15, "exponential": 16, "relu6": 17, "mish": 18,
    "log_softmax": 19,
    # Keras 3's further element-wise activations (issue #11)
    "hard_tanh": 20, "hard_shrink": 21, "soft_shrink": 22, "tanh_shrink": 23, "threshold": 24,
    "log_sigmoid": 25, "celu": 26, "squareplus": 27, "sparse_plus": 28, "sparse_sigmoid": 29,
    "sparsemax": 30,
}
# FNN_ACT_NEEDS_X: the codes whose backward reads the pre-activation, not only the output
ACT_NEEDS_X = ("gelu", "relu_general", "gelu_tanh", "silu", "hard_silu", "mish", "tanh_shrink",
               "threshold")
# FNN_ACT_PARAMS: the parameters of struct fnn_activation
ACT_PARAMS = 3

# enum fnn_loss_code: the loss kernels by code (the fused ones take the softmax's logits)
LOSSES = {
    "categorical_crossentropy": 0, "sparse_categorical_crossentropy": 1,
    "softmax_crossentropy": 2, "sparse_softmax_crossentropy": 3,
    "binary_crossentropy": 4, "mean_squared_error": 5,
    "mean_absolute_error": 6, "huber": 7, "log_cosh": 8, "kl_divergence": 9, "poisson": 10,
    "hinge": 11, "categorical_hinge": 12, "cosine_similarity": 13,
    "sigmoid_binary_crossentropy": 14,  # binary crossentropy from logits (takes the logits)
    "mean_absolute_percentage_error": 15, "mean_squared_logarithmic_error": 16,
    "squared_hinge": 17,
}
SPARSE_LOSSES = ("sparse_categorical_crossentropy", "sparse_softmax_crossentropy")

# enum fnn_opt_rule
OPTIMIZER_RULES = {"sgd": 0, "adagrad": 1, "rmsprop": 2, "adam": 3, "nadam": 4, "adamax": 5,
                   "adadelta": 6, "lion": 7}

# struct fnn_optimizer: its hyper-parameters and state arrays, by Keras' names
OPTIMIZER_HYPER = ("momentum", "nesterov", "rho", "epsilon", "beta_1", "beta_2")
OPTIMIZER_SLOTS = ("momentums", "velocities", "velocity_hats", "average_gradients",
                   "accumulators", "norms", "accumulated_grads", "accumulated_delta_vars")

# FNN_EPSILON: losses clip probabilities to [EPSILON, 1 - EPSILON]
EPSILON = 1e-7

# the state arrays each rule reads whatever its options (the C step dereferences them)
OPTIMIZER_REQUIRED = {"sgd": (), "adagrad": ("accumulators",), "rmsprop": ("velocities",),
                      "adam": ("momentums", "velocities"), "nadam": ("momentums", "velocities"),
                      "adamax": ("momentums", "norms"),
                      "adadelta": ("accumulated_grads", "accumulated_delta_vars"),
                      "lion": ("momentums",)}

# enum fnn_bf16_path_code: the instruction paths of the bfloat16 kernels (src_c/bf16.c)
BF16_PATHS = {"portable": 0, "avx512bf16": 1, "amx": 2}

# enum fnn_gemm_path_code: the instruction sets of fnn_matmul_forward's kernels (src_c/gemm.inc)
GEMM_PATHS = {"base": 0, "avx2": 1, "avx512": 2}
