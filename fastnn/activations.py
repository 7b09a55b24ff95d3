"""Activation functions, named as in `keras.activations`.

Each name maps to a kernel code: Dense applies it fused into its matmul epilogue, the
Activation layer on its own.  The functions below apply one to an array.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from fastnn import backend
from fastnn._codes import ACTIVATIONS as ACT_CODES

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

# Keras' default parameter of the two parametrised activations.
DEFAULT_ALPHA = {"leaky_relu": 0.2, "elu": 1.0}
NAMES = tuple(ACT_CODES)


class Spec:
    """A resolved activation: its name, kernel code and parameter alpha."""

    __slots__ = ("name", "code", "alpha")

    def __init__(self, name: str, alpha: float | None = None) -> None:
        self.name = name
        self.code = ACT_CODES[name]
        self.alpha = DEFAULT_ALPHA.get(name, 0.0) if alpha is None else float(alpha)

    @property
    def needs_preactivation(self) -> bool:
        """gelu's derivative is written from its input, the others' from their output."""
        return self.name == "gelu"

    def __repr__(self) -> str:
        return f"activations.{self.name}"


def get(identifier: str | Spec | Callable[..., Any] | None) -> Spec:
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


def serialize(spec: Spec) -> dict[str, Any]:
    return {"name": spec.name, "alpha": spec.alpha}


def _apply(name: str, x: ArrayLike, alpha: float | None = None) -> NDArray[Any]:
    spec = Spec(name, alpha)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating) or x.dtype.itemsize < 4:
        x = x.astype(np.float32)
    flat = np.ascontiguousarray(x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1),
                                dtype=x.dtype if x.dtype.itemsize in (4, 8) else np.float32)
    y = np.empty_like(flat)
    backend.K.act_forward(y, flat, spec.code, spec.alpha)
    return y.reshape(x.shape)


def linear(x: ArrayLike) -> NDArray[Any]:
    return _apply("linear", x)


def relu(x: ArrayLike) -> NDArray[Any]:
    return _apply("relu", x)


def sigmoid(x: ArrayLike) -> NDArray[Any]:
    return _apply("sigmoid", x)


def tanh(x: ArrayLike) -> NDArray[Any]:
    return _apply("tanh", x)


def softmax(x: ArrayLike) -> NDArray[Any]:
    """Softmax over the last axis."""
    return _apply("softmax", x)


def leaky_relu(x: ArrayLike, negative_slope: float = 0.2) -> NDArray[Any]:
    return _apply("leaky_relu", x, negative_slope)


def elu(x: ArrayLike, alpha: float = 1.0) -> NDArray[Any]:
    return _apply("elu", x, alpha)


def gelu(x: ArrayLike) -> NDArray[Any]:
    """Exact gelu, x * Phi(x) (Keras' approximate=False)."""
    return _apply("gelu", x)
