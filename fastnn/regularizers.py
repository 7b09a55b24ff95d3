"""Weight regularizers, named as in `keras.regularizers`: L1, L2, L1L2.

A regularizer is a penalty on a weight array that the training step adds to the loss (so the
loss fit reports includes it, as in Keras), with its gradient added to the weight's gradient
(`Layer.regularization_loss`, called by fastnn/_step.py).  `regularizer(x)` is the penalty of
x; `regularizer.add_gradient(x, grad)` adds d penalty / dx to grad in place.

    layers.Dense(64, kernel_regularizer=regularizers.L2(1e-4), bias_regularizer="l1")

Names (`get`): "l1", "l2" (Keras' snake-case names, with the default factor 0.01), "L1", "L2",
"L1L2", and "l1_l2" (Keras exports keras.regularizers.l1_l2 as an alias of the class, but its
`get("l1_l2")` refuses the string; fastnn accepts it: L1L2() with l1 = l2 = 0).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray
    from typing_extensions import Self


def _factor(value: Any, name: str) -> float:
    """Keras' validate_float_arg: a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or math.isinf(value) or math.isnan(value) or value < 0:
        raise ValueError(f"Invalid value for argument {name}: expected a non-negative float. "
                         f"Received: {name}={value!r}")
    return float(value)


class Regularizer:
    """Base class: `__call__(x)` the penalty (a float), `add_gradient(x, grad)` grad += its
    gradient, get_config / from_config."""

    def __call__(self, x: NDArray[Any]) -> float:
        return 0.0

    def add_gradient(self, x: NDArray[Any], grad: NDArray[Any]) -> None:
        """grad += d penalty / dx (in place)."""

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError(f"{self} does not implement get_config()")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Self:
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config()})"


class L1L2(Regularizer):
    """penalty = l1 * sum(|x|) + l2 * sum(x^2); gradient l1 * sign(x) + 2 l2 x (0 at x = 0
    for the L1 part, as jax's).  l1, l2: non-negative floats (None means 0), default 0.0."""

    def __init__(self, l1: float | None = 0.0, l2: float | None = 0.0) -> None:
        self.l1 = _factor(0.0 if l1 is None else l1, "l1")
        self.l2 = _factor(0.0 if l2 is None else l2, "l2")

    def __call__(self, x: NDArray[Any]) -> float:
        out = 0.0
        if self.l1 != 0.0:
            out += self.l1 * float(np.abs(x).sum(dtype=np.float64))
        if self.l2 != 0.0:
            out += self.l2 * float(np.square(x, dtype=np.float64).sum())
        return out

    def add_gradient(self, x: NDArray[Any], grad: NDArray[Any]) -> None:
        if self.l1 != 0.0:
            grad += grad.dtype.type(self.l1) * np.sign(x)
        if self.l2 != 0.0:
            grad += grad.dtype.type(2 * self.l2) * x

    def get_config(self) -> dict[str, Any]:
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    """penalty = l1 * sum(|x|); l1 default 0.01 (None means 0.01).  As Keras, l1 is kept as a
    float32 number: get_config gives {"l1": 0.009999999776482582} for 0.01."""

    def __init__(self, l1: float | None = 0.01) -> None:
        super().__init__(l1=float(np.float32(_factor(0.01 if l1 is None else l1, "l1"))))

    def get_config(self) -> dict[str, Any]:
        return {"l1": self.l1}


class L2(L1L2):
    """penalty = l2 * sum(x^2); l2 default 0.01 (None means 0.01)."""

    def __init__(self, l2: float | None = 0.01) -> None:
        super().__init__(l2=0.01 if l2 is None else l2)

    def get_config(self) -> dict[str, Any]:
        return {"l2": self.l2}


_BY_NAME: dict[str, type[Regularizer]] = {
    "L1": L1, "L2": L2, "L1L2": L1L2, "l1": L1, "l2": L2, "l1l2": L1L2, "l1_l2": L1L2}


def serialize(regularizer: Regularizer | None) -> dict[str, Any] | None:
    """As keras.regularizers.serialize: {"module", "class_name", "config", "registered_name"}."""
    if regularizer is None:
        return None
    return {"module": "keras.regularizers", "class_name": type(regularizer).__name__,
            "config": regularizer.get_config(), "registered_name": None}


def deserialize(config: dict[str, Any]) -> Regularizer:
    cls = _BY_NAME.get(config.get("class_name", "")) if isinstance(config, dict) else None
    if cls is None or not isinstance(config.get("config", {}), dict):
        raise ValueError(f"Could not interpret regularizer identifier: {config!r}")
    return cls.from_config(config.get("config") or {})


def get(identifier: Any) -> Regularizer | None:
    """None, a name, a serialized dict, a Regularizer class or instance -> a Regularizer or None."""
    if identifier is None:
        return None
    if isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str) and identifier in _BY_NAME:
        return _BY_NAME[identifier]()
    if isinstance(identifier, type) and issubclass(identifier, Regularizer):
        return identifier()
    raise ValueError(f"Could not interpret regularizer identifier: {identifier!r}. Expected one "
                     f"of {sorted(_BY_NAME)}, a dict from serialize(), or a Regularizer.")
