"""The kernel parameters (struct fnn_activation, param[0..2]) the activation-kernel tests use
for each code of fastnn/_codes.py ACTIVATIONS (the others take none): Keras' defaults of
leaky_relu and elu, and a relu with every argument set (negative_slope, max_value, threshold)."""
PARAMS = {"leaky_relu": (0.2,), "elu": (1.0,), "relu_general": (0.1, 2.5, 0.3)}
