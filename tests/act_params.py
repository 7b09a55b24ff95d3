"""The kernel parameters (struct fnn_activation, param[0..2]) the activation-kernel tests use
for each code of fastnn/_codes.py ACTIVATIONS (the others take none): Keras' defaults of
leaky_relu and elu, and a relu with every argument set (negative_slope, max_value, threshold);
Keras' defaults of hard_shrink, soft_shrink (threshold 0.5), celu (alpha 1) and squareplus
(b 4), and a threshold (which has no defaults) with threshold 0.3, default_value -1.5."""
PARAMS = {"leaky_relu": (0.2,), "elu": (1.0,), "relu_general": (0.1, 2.5, 0.3),
          "hard_shrink": (0.5,), "soft_shrink": (0.5,), "celu": (1.0,), "squareplus": (4.0,),
          "threshold": (0.3, -1.5)}
