"""Global settings, named as in `keras.config`: the float type and the fuzz factor."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fastnn import _codes

if TYPE_CHECKING:
    from numpy.typing import DTypeLike

_FLOATX = "float32"


def floatx() -> str:
    """The default float type of weights and computations: "float32" (default) or "float64"."""
    return _FLOATX


def set_floatx(value: str) -> None:
    """Set the default float type, "float32" or "float64", for models built afterwards."""
    global _FLOATX
    if value not in ("float32", "float64"):
        raise ValueError(f"Expected floatx to be 'float32' or 'float64'. Received: {value!r}")
    _FLOATX = value


def epsilon() -> float:
    """The fuzz factor of the losses: they clip probabilities to [eps, 1 - eps].  Fixed at
    1e-7 (Keras' default), compiled into the kernels (FNN_EPSILON in src_c/fastnn.h)."""
    return _codes.EPSILON


def dtype(value: DTypeLike | None = None) -> np.dtype[Any]:
    """The NumPy dtype for value, "float32" or "float64" (or np.float32 / np.float64), or for
    floatx() when value is None.  fastnn's kernels compute in these two only, so any other
    dtype (a layer's dtype="int8", a saved file's) is refused here, at construction."""
    if value is None:
        return np.dtype(_FLOATX)
    if isinstance(value, str) and value in ("float32", "float64") or \
            isinstance(value, (np.dtype, type)) and value in (np.float32, np.float64):
        return np.dtype(value)
    raise ValueError(f"Expected dtype to be 'float32' or 'float64'. Received: dtype={value!r}")
