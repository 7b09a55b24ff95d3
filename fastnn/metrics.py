"""Metrics, named as in `keras.metrics`: running means over the batches seen since the last
reset, weighted by batch size (as Keras logs them during fit).

'accuracy' resolves as in Keras: binary accuracy for one output (or binary_crossentropy),
sparse categorical accuracy for integer labels, categorical accuracy otherwise.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from fastnn.losses import Loss


class Metric:
    """A running mean.  `update(p, t)` adds one batch; `result()` is the mean so far."""

    # the logged name: every metric class sets one (the base class' None is never logged)
    name: str = None  # type: ignore[assignment]
    sparse_targets = False  # wants integer labels (n,) instead of an array like p
    # "up" or "down": which way is better, as Keras' metric._direction (what a callback's
    # mode="auto" follows); None: unknown
    _direction: str | None = None

    if TYPE_CHECKING:
        def _batch(self, p: NDArray[Any],
                   t: NDArray[Any]) -> tuple[float | np.number[Any], int]:
            """(sum of the per-sample values, number of samples) of one batch (subclasses)."""

    def __init__(self, name: str | None = None) -> None:
        self.name = name or self.name
        self.reset_state()

    def reset_state(self) -> None:
        self._total = 0.0
        self._count = 0

    def update(self, p: NDArray[Any], t: NDArray[Any]) -> None:
        total, count = self._batch(p, t)
        self._total += float(total)
        self._count += count

    def result(self) -> float:
        return self._total / self._count if self._count else 0.0

    def state(self) -> tuple[float, int]:
        """(total, count): what result() divides; sums of states merge metrics (e.g. over
        the ranks of a distributed fit)."""
        return self._total, self._count

    def set_state(self, total: float, count: int) -> None:
        self._total, self._count = float(total), int(count)

    def prepare_targets(self, y: NDArray[Any]) -> NDArray[Any]:
        return y


class CategoricalAccuracy(Metric):
    """Share of samples whose predicted class (argmax of y_pred) is the target's argmax.
    Targets are turned into class indices once, so each batch compares integers."""
    name = "categorical_accuracy"
    _direction = "up"
    sparse_targets = True

    def prepare_targets(self, y: NDArray[Any]) -> NDArray[Any]:
        labels: NDArray[Any] = np.argmax(y, axis=1)
        return labels

    def _batch(self, p: NDArray[Any],
               labels: NDArray[Any]) -> tuple[float | np.number[Any], int]:
        return np.count_nonzero(np.argmax(p, axis=1) == labels), len(labels)


class SparseCategoricalAccuracy(CategoricalAccuracy):
    """Share of samples whose predicted class (argmax of y_pred) equals the integer label."""
    name = "sparse_categorical_accuracy"

    def prepare_targets(self, y: NDArray[Any]) -> NDArray[Any]:
        return y


class BinaryAccuracy(Metric):
    """Share of outputs where (y_pred > threshold) equals the 0/1 target."""
    name = "binary_accuracy"
    _direction = "up"

    def __init__(self, name: str | None = None, threshold: float = 0.5) -> None:
        self.threshold = threshold
        super().__init__(name)

    def _batch(self, p: NDArray[Any], t: NDArray[Any]
               ) -> tuple[float | np.number[Any], int]:
        return np.count_nonzero((p > self.threshold) == (t > 0.5)) / p.shape[1], p.shape[0]


class MeanAbsoluteError(Metric):
    name = "mean_absolute_error"
    _direction = "down"

    def _batch(self, p: NDArray[Any], t: NDArray[Any]
               ) -> tuple[float | np.number[Any], int]:
        return np.abs(p - t).mean(axis=1).sum(dtype=np.float64), p.shape[0]


class MeanSquaredError(Metric):
    name = "mean_squared_error"
    _direction = "down"

    def _batch(self, p: NDArray[Any], t: NDArray[Any]
               ) -> tuple[float | np.number[Any], int]:
        d = p - t
        return (d * d).mean(axis=1).sum(dtype=np.float64), p.shape[0]


_BY_NAME: dict[str, type[Metric]] = {
    "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
}


def get(identifier: str | Metric, loss: Loss | None = None, n_out: int | None = None) -> Metric:
    """Resolve a metric name or instance; 'accuracy'/'acc' depends on the loss and output
    width as in Keras.  The logged name of 'accuracy' stays 'accuracy'."""
    if isinstance(identifier, Metric):
        return identifier
    if identifier in ("accuracy", "acc"):
        loss_name = getattr(loss, "name", None)
        cls: type[Metric]
        if n_out == 1 or loss_name == "binary_crossentropy":
            cls = BinaryAccuracy
        elif getattr(loss, "sparse", False):
            cls = SparseCategoricalAccuracy
        else:
            cls = CategoricalAccuracy
        return cls(name=identifier)
    if isinstance(identifier, str) and identifier in _BY_NAME:
        return _BY_NAME[identifier](name=identifier)
    raise ValueError(f"Expected metrics from {sorted(_BY_NAME) + ['accuracy']}. "
                     f"Received: {identifier!r}")
