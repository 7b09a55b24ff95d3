"""Losses, named as in `keras.losses`; each is the batch mean of a per-sample loss.

    categorical_crossentropy:         q = p / sum(p), -sum t log clip(q, eps, 1 - eps)
    sparse_categorical_crossentropy:  the same with integer labels
    binary_crossentropy:              mean -(t log c + (1 - t) log(1 - c)), c = clip(p)
    mean_squared_error ("mse"):       mean (p - t)^2

Each loss computes its value and its gradient in one kernel call.  When the model's last
layer is a softmax, the crossentropies instead give the gradient with respect to the
softmax input directly, (p - t) / batch (the fused path).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, cast

import numpy as np

from fastnn import _codes, backend

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, DTypeLike, NDArray

_SOFTMAX = _codes.ACTIVATIONS["softmax"]


class Loss:
    """Base class.  `__call__(y_true, y_pred)` returns the loss value as a float.

    A loss is declared by its kernel codes (fastnn/_codes.py LOSSES): `code`, and
    `fused_code` where a softmax before it fuses into the gradient (else None)."""

    name: str | None = None
    code: int | None = None
    fused_code: int | None = None
    sparse = False     # targets are integer labels (batch,)

    def __init__(self, from_logits: bool = False, name: str | None = None) -> None:
        if from_logits and self.fused_code is None:
            raise ValueError(f"{type(self).__name__} does not take from_logits=True")
        self.from_logits = bool(from_logits)
        if name:
            self.name = name

    def prepare_targets(self, y: ArrayLike, n_out: int, dtype: DTypeLike) -> NDArray[Any]:
        """Convert the targets once per fit: float (batch, n_out) of the model's dtype."""
        y = _as_float(y, "y", dtype)
        if y.ndim == 1 and n_out == 1:
            y = y.reshape(-1, 1)
        if y.ndim != 2 or y.shape[1] != n_out:
            hint = (" Integer labels need loss='sparse_categorical_crossentropy' or "
                    "fastnn.utils.to_categorical(y)." if y.ndim == 1 else "")
            raise ValueError(f"Expected y with shape (batch, {n_out}) to match the model output "
                             f"for {self.name}. Received: y.shape={y.shape}.{hint}")
        return y

    def value_and_grad(self, dp: NDArray[Any], p: NDArray[Any], t: NDArray[Any]) -> float:
        """Loss value; writes dp := d loss / d p."""
        return cast(float, backend.K.loss_backward(dp, p, t, self.code))

    def value(self, p: NDArray[Any], t: NDArray[Any]) -> float:
        return cast(float, backend.K.loss_backward(None, p, t, self.code))

    def fused_value_and_grad(self, dz: NDArray[Any], p: NDArray[Any], t: NDArray[Any]) -> float:
        """p = softmax(z): loss value; writes dz := d loss / d z."""
        return cast(float, backend.K.loss_backward(dz, p, t, self.fused_code))

    def __call__(self, y_true: ArrayLike, y_pred: ArrayLike) -> float:
        p = _as_float(y_pred, "y_pred", None)
        if p.ndim == 1:
            p = p.reshape(-1, 1)
        t = self.prepare_targets(y_true, p.shape[1], p.dtype)
        if self.from_logits:
            logits, p = p, np.empty_like(p)
            backend.K.act_forward(p, logits, _SOFTMAX, ())
        return float(self.value(p, t))

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "from_logits": self.from_logits}


def _as_float(a: ArrayLike, name: str, dtype: DTypeLike | None) -> NDArray[Any]:
    a = np.asarray(a)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"Expected {name} to hold numbers. Received: {name}.dtype={a.dtype}")
    dtype = dtype or (a.dtype if a.dtype in (np.float32, np.float64) else np.float32)
    return np.ascontiguousarray(a, dtype=dtype)


class CategoricalCrossentropy(Loss):
    """Crossentropy between one-hot (or soft) targets and predicted probabilities.
    from_logits=True: the predictions are logits and a softmax is applied first."""
    name = "categorical_crossentropy"
    code = _codes.LOSSES["categorical_crossentropy"]
    fused_code = _codes.LOSSES["softmax_crossentropy"]


class SparseCategoricalCrossentropy(Loss):
    """Crossentropy between integer class labels and predicted probabilities."""
    name = "sparse_categorical_crossentropy"
    code = _codes.LOSSES["sparse_categorical_crossentropy"]
    fused_code = _codes.LOSSES["sparse_softmax_crossentropy"]
    sparse = True

    def prepare_targets(self, y: ArrayLike, n_out: int, dtype: DTypeLike) -> NDArray[Any]:
        """Integer class labels (batch,) as int64, checked against the model's outputs."""
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"Expected y of integer class labels, shape (batch,). "
                             f"Received: y.shape={y.shape}")
        if y.size and not np.issubdtype(y.dtype, np.integer):
            if not np.issubdtype(y.dtype, np.floating) or np.any(np.mod(y, 1) != 0):
                raise ValueError(f"Expected integer class labels for {self.name}. "
                                 f"Received: y.dtype={y.dtype}")
        if y.size and (y.min() < 0 or y.max() >= n_out):  # checked before the cast to int64
            bad = y[(y < 0) | (y >= n_out)][0]
            raise ValueError(f"Expected labels in [0, {n_out}) for {self.name} (the model "
                             f"has {n_out} outputs). Received: a label {bad}")
        return np.ascontiguousarray(y.astype(np.int64))


class BinaryCrossentropy(Loss):
    """Crossentropy between 0/1 targets and predicted probabilities, per output."""
    name = "binary_crossentropy"
    code = _codes.LOSSES["binary_crossentropy"]


class MeanSquaredError(Loss):
    """Mean of (y_pred - y_true)^2 over the outputs and the batch."""
    name = "mean_squared_error"
    code = _codes.LOSSES["mean_squared_error"]


_BY_NAME: dict[str, type[Loss]] = {
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "mean_squared_error": MeanSquaredError,
    "mse": MeanSquaredError,
}


def categorical_crossentropy(y_true: ArrayLike, y_pred: ArrayLike,
                             from_logits: bool = False) -> float:
    return CategoricalCrossentropy(from_logits)(y_true, y_pred)


def sparse_categorical_crossentropy(y_true: ArrayLike, y_pred: ArrayLike,
                                    from_logits: bool = False) -> float:
    return SparseCategoricalCrossentropy(from_logits)(y_true, y_pred)


def binary_crossentropy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    return BinaryCrossentropy()(y_true, y_pred)


def mean_squared_error(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    return MeanSquaredError()(y_true, y_pred)


mse = mean_squared_error


def get(identifier: str | Loss | type[Loss] | Callable[..., Any]) -> Loss:
    """Resolve a name, a Loss instance or class, or one of this module's functions."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    name = getattr(identifier, "__name__", identifier)
    if isinstance(name, str) and name in _BY_NAME:
        return _BY_NAME[name]()
    raise ValueError(f"Expected loss to be one of {sorted(_BY_NAME)} or a fastnn.losses.Loss. "
                     f"Received: loss={identifier!r}")


def from_config(cfg: Any) -> Loss:
    """The loss of `Loss.get_config()`, e.g. from a saved file: every value is checked."""
    name = cfg.get("name") if isinstance(cfg, dict) else None
    if not isinstance(name, str) or name not in _BY_NAME:
        raise ValueError(f"Expected a loss config {{'name': one of {sorted(_BY_NAME)}, "
                         f"'from_logits': bool}}. Received: {cfg!r}")
    from_logits = cfg.get("from_logits", False)
    if not isinstance(from_logits, bool):
        raise TypeError(f"Expected from_logits to be a bool. Received: from_logits={from_logits!r}")
    return _BY_NAME[name](from_logits=from_logits)
