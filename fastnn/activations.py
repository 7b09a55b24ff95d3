"""Activation functions, named as in `keras.activations`.

Each name maps to a kernel code: Dense applies it fused into its matmul epilogue, the
Activation layer on its own.  The functions below apply one to an array.
"""
import numpy as np

from fastnn import backend
from fastnn._codes import ACTIVATIONS as ACT_CODES

# Keras' default parameter of the two parametrised activations.
DEFAULT_ALPHA = {"leaky_relu": 0.2, "elu": 1.0}
NAMES = tuple(ACT_CODES)


class Spec:
    """A resolved activation: its name, kernel code and parameter alpha."""

    __slots__ = ("name", "code", "alpha")

    def __init__(self, name, alpha=None):
        self.name = name
        self.code = ACT_CODES[name]
        self.alpha = DEFAULT_ALPHA.get(name, 0.0) if alpha is None else float(alpha)

    @property
    def needs_preactivation(self):
        """gelu's derivative is written from its input, the others' from their output."""
        return self.name == "gelu"

    def __repr__(self):
        return f"activations.{self.name}"


def get(identifier):
    """Resolve None (linear), a name, or a function of this module to a Spec."""
    if identifier is None:
        return Spec("linear")
    if isinstance(identifier, Spec):
        return identifier
    name = getattr(identifier, "__name__", identifier)
    if not isinstance(name, str) or name not in ACT_CODES:
        raise ValueError(f"Expected activation to be one of {list(NAMES)} or None. "
                         f"Received: activation={identifier!r}")
    return Spec(name)


def serialize(spec):
    return {"name": spec.name, "alpha": spec.alpha}


def _apply(name, x, alpha=None):
    spec = Spec(name, alpha)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating) or x.dtype.itemsize < 4:
        x = x.astype(np.float32)
    flat = np.ascontiguousarray(x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1),
                                dtype=x.dtype if x.dtype.itemsize in (4, 8) else np.float32)
    y = np.empty_like(flat)
    backend.K.act_forward(y, flat, spec.code, spec.alpha)
    return y.reshape(x.shape)


def linear(x):
    return _apply("linear", x)


def relu(x):
    return _apply("relu", x)


def sigmoid(x):
    return _apply("sigmoid", x)


def tanh(x):
    return _apply("tanh", x)


def softmax(x):
    """Softmax over the last axis."""
    return _apply("softmax", x)


def leaky_relu(x, negative_slope=0.2):
    return _apply("leaky_relu", x, negative_slope)


def elu(x, alpha=1.0):
    return _apply("elu", x, alpha)


def gelu(x):
    """Exact gelu, x * Phi(x) (Keras' approximate=False)."""
    return _apply("gelu", x)
