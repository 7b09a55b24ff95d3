"""Weight constraints, named as in `keras.constraints`: MaxNorm, NonNeg, UnitNorm, MinMaxNorm.

A constraint maps a weight array to its projection; the training step applies it in place
after every optimizer step (`Layer.apply_constraints`, called by fastnn/_step.py), as Keras
applies `variable.constraint` after each update.  `constraint(w)` returns the projected
array.  Norms are computed over `axis` (for a Dense kernel (in, units), axis=0: each unit's
incoming weights), with Keras' epsilon 1e-7 in the denominators.

Names (`get`): "max_norm", "non_neg", "unit_norm", "min_max_norm" and the class names.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from fastnn import _codes

if TYPE_CHECKING:
    from numpy.typing import NDArray
    from typing_extensions import Self

_EPSILON = _codes.EPSILON  # Keras' backend.epsilon()


class Constraint:
    """Base class: `__call__(w)` -> the constrained array; get_config / from_config."""

    def __call__(self, w: NDArray[Any]) -> NDArray[Any]:
        return w

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Self:
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config()})"


def _axis(axis: Any) -> int | tuple[int, ...]:
    if isinstance(axis, (list, tuple)):
        return tuple(int(a) for a in axis)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"Expected axis to be an int or a list of ints. Received: axis={axis!r}")
    return int(axis)


def _norms(w: NDArray[Any], axis: int | tuple[int, ...]) -> NDArray[Any]:
    out: NDArray[Any] = np.sqrt(np.sum(np.square(w), axis=axis, keepdims=True))
    return out


class MaxNorm(Constraint):
    """w := w * clip(norm, 0, max_value) / (epsilon + norm), norms over axis: each unit's
    incoming weights rescaled to a norm <= max_value (default 2, axis 0)."""

    def __init__(self, max_value: float = 2, axis: int | Sequence[int] = 0) -> None:
        self.max_value = max_value
        self.axis = axis
        self._ax = _axis(axis)

    def __call__(self, w: NDArray[Any]) -> NDArray[Any]:
        norms = _norms(w, self._ax)
        desired = np.clip(norms, 0, self.max_value)
        out: NDArray[Any] = w * (desired / (w.dtype.type(_EPSILON) + norms))
        return out

    def get_config(self) -> dict[str, Any]:
        return {"max_value": self.max_value, "axis": self.axis}


class NonNeg(Constraint):
    """w := max(w, 0)."""

    def __call__(self, w: NDArray[Any]) -> NDArray[Any]:
        out: NDArray[Any] = np.maximum(w, 0)
        return out


class UnitNorm(Constraint):
    """w := w / (epsilon + norm), norms over axis (default 0)."""

    def __init__(self, axis: int | Sequence[int] = 0) -> None:
        self.axis = axis
        self._ax = _axis(axis)

    def __call__(self, w: NDArray[Any]) -> NDArray[Any]:
        out: NDArray[Any] = w / (w.dtype.type(_EPSILON) + _norms(w, self._ax))
        return out

    def get_config(self) -> dict[str, Any]:
        return {"axis": self.axis}


class MinMaxNorm(Constraint):
    """w := w * desired / (epsilon + norm), desired = rate * clip(norm, min_value, max_value)
    + (1 - rate) * norm (defaults 0.0, 1.0, rate 1.0, axis 0)."""

    def __init__(self, min_value: float = 0.0, max_value: float = 1.0, rate: float = 1.0,
                 axis: int | Sequence[int] = 0) -> None:
        self.min_value, self.max_value, self.rate = min_value, max_value, rate
        self.axis = axis
        self._ax = _axis(axis)

    def __call__(self, w: NDArray[Any]) -> NDArray[Any]:
        norms = _norms(w, self._ax)
        desired = self.rate * np.clip(norms, self.min_value, self.max_value) \
            + (1 - self.rate) * norms
        out: NDArray[Any] = w * (desired / (w.dtype.type(_EPSILON) + norms)).astype(w.dtype)
        return out

    def get_config(self) -> dict[str, Any]:
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate,
                "axis": self.axis}


_BY_NAME: dict[str, type[Constraint]] = {
    "MaxNorm": MaxNorm, "NonNeg": NonNeg, "UnitNorm": UnitNorm, "MinMaxNorm": MinMaxNorm,
    "max_norm": MaxNorm, "non_neg": NonNeg, "unit_norm": UnitNorm, "min_max_norm": MinMaxNorm}


def serialize(constraint: Constraint | None) -> dict[str, Any] | None:
    """As keras.constraints.serialize: {"module", "class_name", "config", "registered_name"}."""
    if constraint is None:
        return None
    return {"module": "keras.constraints", "class_name": type(constraint).__name__,
            "config": constraint.get_config(), "registered_name": None}


def deserialize(config: dict[str, Any]) -> Constraint:
    cls = _BY_NAME.get(config.get("class_name", "")) if isinstance(config, dict) else None
    if cls is None or not isinstance(config.get("config", {}), dict):
        raise ValueError(f"Could not interpret constraint identifier: {config!r}")
    return cls.from_config(config.get("config") or {})


def get(identifier: Any) -> Constraint | None:
    """None, a name, a serialized dict, a Constraint class or instance -> a Constraint or None."""
    if identifier is None:
        return None
    if isinstance(identifier, Constraint):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str) and identifier in _BY_NAME:
        return _BY_NAME[identifier]()
    if isinstance(identifier, type) and issubclass(identifier, Constraint):
        return identifier()
    raise ValueError(f"Could not interpret constraint identifier: {identifier!r}. Expected one "
                     f"of {sorted(_BY_NAME)}, a dict from serialize(), or a Constraint.")
