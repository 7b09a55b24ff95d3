"""Metrics, named as in `keras.metrics`: stateful objects with Keras 3's API,
`update_state(y_true, y_pred, sample_weight=None)`, `result()`, `reset_state()`, and
`__call__` (updates the state, then returns the result of everything seen since the last
reset, as Keras 3 does).

Every metric keeps its state in `variables`: float64 NumPy arrays of sums (a Mean's total and
count, a Precision's true and false positives per threshold, an AUC's confusion matrix per
threshold).  The training loop uses the same objects through a small internal contract:
`prepare_targets(y)` once per fit, `update(p, t, sample_weight)` per batch (no conversion
or checks), and `state()` / `set_state()`, the variables as one flat float64 array, which a
distributed fit sums over its ranks (fastnn/distribution.py).

Differences from Keras, on purpose: the sums are float64 (Keras accumulates in the metric's
dtype, float32 by default), so results agree with Keras to float32 rounding; comparisons
with thresholds are made in the metric's dtype, as Keras makes them.  `result()` returns a
Python float, or a NumPy array where Keras returns a vector.

'accuracy' / 'acc' (any case) in compile() resolves as Keras 3's compile does it, by shapes:
binary accuracy for one output, sparse categorical accuracy for integer labels (a sparse
loss), categorical accuracy otherwise.
"""
from __future__ import annotations

import math
import re
import warnings
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from fastnn import activations, config

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, DTypeLike, NDArray

    from fastnn.losses import Loss

NEG_INF = -1e10  # Keras' metrics_utils.NEG_INF: the threshold of top_k without thresholds


def _snake_case(name: str) -> str:
    """Keras' naming.to_snake_case: "AUC" -> "auc", "TopKCategoricalAccuracy" ->
    "top_k_categorical_accuracy"."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _same_rank(x1: NDArray[Any], x2: NDArray[Any], expand_rank_1: bool = True
               ) -> tuple[NDArray[Any], NDArray[Any]]:
    """Keras' squeeze_or_expand_to_same_rank: where the ranks differ by one and the longer
    ends in 1, squeeze it (or expand a rank-1 other one, with expand_rank_1)."""
    if x1.ndim == x2.ndim + 1 and x1.shape[-1] == 1:
        if x2.ndim == 1 and expand_rank_1:
            x2 = x2[:, None]
        else:
            x1 = x1[..., 0]
    elif x2.ndim == x1.ndim + 1 and x2.shape[-1] == 1:
        if x1.ndim == 1 and expand_rank_1:
            x1 = x1[:, None]
        else:
            x2 = x2[..., 0]
    return x1, x2


def _as_array(a: ArrayLike, name: str) -> NDArray[Any]:
    """a as a NumPy array of real numbers (floats keep their dtype, others become float64)."""
    a = np.asarray(a)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"Expected {name} to hold real numbers. Received: {name}.dtype={a.dtype}")
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    return a


def _broadcast(a: NDArray[Any], shape: tuple[int, ...], name: str, to: str) -> NDArray[Any]:
    try:
        return np.broadcast_to(a, shape)
    except ValueError:
        raise ValueError(f"Expected {name} broadcastable to {to}.shape={shape}. "
                         f"Received: {name}.shape={a.shape}") from None


def _same_shape(t: NDArray[Any], p: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """(y_true, y_pred) of an elementwise metric, Keras' rank rule applied; they must
    broadcast together."""
    t, p = _same_rank(t, p)
    try:
        np.broadcast_shapes(t.shape, p.shape)
    except ValueError:
        raise ValueError(f"Expected y_true and y_pred of the same shape. Received: "
                         f"y_true.shape={t.shape}, y_pred.shape={p.shape}") from None
    return t, p


def _check_thresholds(thresholds: Sequence[float]) -> None:
    bad = [t for t in thresholds if t is None or not 0 <= t <= 1]
    if bad:
        raise ValueError(f"Expected thresholds in [0, 1]. Received: thresholds={bad}")


def _parse_thresholds(thresholds: float | Sequence[float] | None, default: float
                      ) -> tuple[list[float], float | list[float] | None]:
    """Keras' parse_init_thresholds: (the thresholds as a list, [default] for None; the
    thresholds as given, for the config: a tuple or an array as a list (JSON))."""
    if thresholds is None:
        return [default], None
    listed: list[float] = np.ravel(thresholds).tolist()
    _check_thresholds(listed)
    return listed, listed if np.ndim(thresholds) else listed[0]


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"Expected {name} to be an int >= {low}. Received: {name}={value!r}")
    return int(value)


def _evenly_distributed(thresholds: Sequence[float]) -> bool:
    """Keras' is_evenly_distributed_thresholds: [0, 1/(n-1), ..., 1] (n >= 3), within 1e-7."""
    n = len(thresholds)
    return n >= 3 and bool(np.allclose(thresholds, np.arange(n, dtype=np.float32) / (n - 1),
                                       atol=config.epsilon()))


class Metric:
    """Encapsulates metric logic and state, as `keras.metrics.Metric`.

    Args:
        dtype: the dtype of the computations, "float32" (default: `fastnn.config.floatx()`)
            or "float64".  (The sums themselves are float64 whatever the dtype.)
        name: the metric's name; default None: the class name in snake case, made unique
            ("precision", "precision_1", ...) as Keras does.

    A subclass declares its state in `__init__` with `self.add_variable(shape, name=...)`
    (float64 arrays of zeros, updated in place), implements `update_state(y_true, y_pred,
    sample_weight=None)` and `result()`.  `reset_state()` zeroes the variables.
    """

    _count: dict[str, int] = {}
    # "up" or "down": which way is better (Keras' metric._direction), what a callback's
    # mode="auto" follows; None: unknown
    direction: str | None = None
    # whether update() on the rows of several batches at once leaves the state update() on
    # each batch in turn leaves, bit for bit, without sample weights: then fit may join steps
    joins_exactly = False

    def __init__(self, dtype: DTypeLike | None = None, name: str | None = None) -> None:
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Expected name to be a str. Received: name={name!r}")
        if not name:
            kind = _snake_case(type(self).__name__)
            Metric._count[kind] = Metric._count.get(kind, 0) + 1
            name = kind if Metric._count[kind] == 1 else f"{kind}_{Metric._count[kind] - 1}"
        self.name = name
        self.dtype = config.dtype(dtype).name
        self._variables: list[NDArray[np.float64]] = []

    # ---- state ------------------------------------------------------------------------------

    def add_variable(self, shape: Sequence[int] | int, initializer: str = "zeros",
                     dtype: DTypeLike | None = None, aggregation: str = "sum",
                     name: str | None = None) -> NDArray[np.float64]:
        """A new state variable: a float64 array of zeros, to update in place (`v += ...`).
        Only Keras' defaults are supported (initializer "zeros", aggregation "sum": a
        distributed fit sums the variables over its ranks); `name` is not kept."""
        if initializer != "zeros" or aggregation != "sum":
            raise ValueError(f"Expected initializer='zeros' and aggregation='sum'. Received: "
                             f"initializer={initializer!r}, aggregation={aggregation!r}")
        v = np.zeros(shape, np.float64)
        self._variables.append(v)
        return v

    @property
    def variables(self) -> list[NDArray[np.float64]]:
        """The state variables (NumPy arrays), in the order Keras lists them."""
        return list(self._variables)

    def reset_state(self) -> None:
        """Zero every state variable (fit does it at the start of every epoch)."""
        for v in self._variables:
            v[...] = 0

    def state(self) -> NDArray[np.float64]:
        """The variables as one new flat float64 array of sums: summing the states of several
        metrics (e.g. over the ranks of a distributed fit) merges what they have seen."""
        if not self._variables:
            return np.zeros(0)
        return np.concatenate([v.ravel() for v in self._variables])

    def set_state(self, state: ArrayLike) -> None:
        """Write a `state()` back into the variables (in place)."""
        state = np.asarray(state, np.float64)
        size = sum(v.size for v in self._variables)
        if state.shape != (size,):
            raise ValueError(f"Expected a state of shape ({size},) for {self.name!r}. "
                             f"Received: shape={state.shape}")
        k = 0
        for v in self._variables:
            v[...] = state[k:k + v.size].reshape(v.shape)
            k += v.size

    # ---- Keras' API -------------------------------------------------------------------------

    def update_state(self, *args: Any, **kwargs: Any) -> None:
        """Accumulate statistics for the metric (subclasses)."""
        raise NotImplementedError

    def result(self) -> Any:
        """The current value: a Python float, or a NumPy array where Keras returns a vector
        (subclasses)."""
        raise NotImplementedError

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """`update_state(...)` then `result()`: as Keras 3, the result of every batch since
        the last reset, not of this batch alone."""
        self.update_state(*args, **kwargs)
        return self.result()

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Metric:
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}>"

    # ---- the training loop's contract -------------------------------------------------------

    def prepare_targets(self, y: NDArray[Any]) -> NDArray[Any]:
        """The targets as `update` takes them, converted once per fit (e.g. class indices for
        the categorical accuracies); y unchanged by default."""
        return y

    def update(self, p: NDArray[Any], t: NDArray[Any],
               sample_weight: NDArray[Any] | None = None) -> None:
        """One batch of the training loop: predictions p (batch, outputs), targets t (rows of
        `prepare_targets`' output), sample_weight (batch,) or None; no conversion or checks.
        By default `update_state(t, p, sample_weight)`, for subclasses that define only that."""
        if sample_weight is None:
            self.update_state(t, p)
        else:
            self.update_state(t, p, sample_weight=sample_weight)


# ---- mean metrics -----------------------------------------------------------------------------

class Mean(Metric):
    """The (weighted) mean of the given values, as `keras.metrics.Mean`.

    `update_state(values, sample_weight=None)`: with weights, the mean is
    sum(w * v) / sum(w).  Values of rank > 1 are first averaged per sample (over all axes but
    the first, or those the weights do not have).  As Keras: a scalar weight makes the batch
    count as one sample of that weight.

    >>> m = Mean(); m.update_state([1, 3, 5, 7]); m.result()
    4.0
    >>> m.reset_state(); m.update_state([1, 3, 5, 7], sample_weight=[1, 1, 0, 0]); m.result()
    2.0
    """

    def __init__(self, name: str | None = "mean", dtype: DTypeLike | None = None) -> None:
        super().__init__(dtype=dtype, name=name)
        self.total = self.add_variable((), name="total")
        self.count = self.add_variable((), name="count")

    def update_state(self, values: ArrayLike, sample_weight: ArrayLike | None = None) -> None:
        self._add(_as_array(values, "values"),
                  None if sample_weight is None else _as_array(sample_weight, "sample_weight"))

    def _add(self, values: NDArray[Any], w: NDArray[Any] | None) -> None:
        """Keras' reduce_to_samplewise_values, then total += sum(values), count += sum(w)
        (or the number of samples).  Unweighted, no temporary: a per-sample mean summed is
        the sum over the elements divided by the elements per sample."""
        if w is None:
            n = values.shape[0] if values.ndim else 1
            per = values.size // n if n else 1
            s = np.count_nonzero(values) if values.dtype.kind == "b" else \
                values.sum(dtype=np.float64)
            self.total[()] += s / per  # ([()]: a scalar's add, not a 0-d array's ufunc)
            self.count[()] += n
            return
        values, w = _same_rank(values, w)
        if values.ndim > w.ndim:  # reduced to the weights' rank
            values = values.mean(axis=tuple(range(w.ndim, values.ndim)), dtype=np.float64)
        w = _broadcast(w, values.shape, "sample_weight", "values")
        values = values * w
        if w.ndim > 1:
            w = w.mean(axis=tuple(range(1, w.ndim)))
        if values.ndim > 1:
            values = values.mean(axis=tuple(range(1, values.ndim)))
        self.total[()] += values.sum(dtype=np.float64)
        self.count[()] += w.sum(dtype=np.float64)

    def result(self) -> float:
        """total / count; 0.0 before any sample (Keras' divide_no_nan)."""
        return float(self.total / self.count) if self.count else 0.0


class _MeanMetric(Mean):
    """The mean of a per-sample value of (y_true, y_pred): Keras' MeanMetricWrapper, its
    function the subclass' `_values(p, t)` on prepared targets."""

    def _values(self, p: NDArray[Any], t: NDArray[Any]) -> NDArray[Any]:
        raise NotImplementedError

    def _standardize(self, t: NDArray[Any], p: NDArray[Any]
                     ) -> tuple[NDArray[Any], NDArray[Any]]:
        return _same_shape(t, p)

    def update_state(self, y_true: ArrayLike, y_pred: ArrayLike,  # type: ignore[override]
                     sample_weight: ArrayLike | None = None) -> None:
        """Add a batch: y_true and y_pred (batch, ...), sample_weight None (each sample
        weighs 1), a scalar, (batch,) or of y_true's shape."""
        t, p = self._standardize(_as_array(y_true, "y_true"), _as_array(y_pred, "y_pred"))
        self.update(p, self.prepare_targets(t),
                    None if sample_weight is None else _as_array(sample_weight, "sample_weight"))

    def update(self, p: NDArray[Any], t: NDArray[Any],
               sample_weight: NDArray[Any] | None = None) -> None:
        self._add(self._values(p, t), sample_weight)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype}


class Accuracy(_MeanMetric):
    """How often predictions equal labels (elementwise y_true == y_pred), as
    `keras.metrics.Accuracy`.

    >>> m = Accuracy(); m.update_state([[1], [2], [3], [4]], [[0], [2], [3], [4]]); m.result()
    0.75
    """

    direction = "up"

    def __init__(self, name: str | None = "accuracy", dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, dtype=dtype)

    def _values(self, p: NDArray[Any], t: NDArray[Any]) -> NDArray[Any]:
        out: NDArray[Any] = t == p
        return out


class BinaryAccuracy(_MeanMetric):
    """How often predictions match binary labels, as `keras.metrics.BinaryAccuracy`: an
    output matches when y_true == (y_pred > threshold), so (as Keras) a target other than
    0 or 1 never matches.  Per sample, the share of its outputs that match.

    Args:
        name: default "binary_accuracy".
        dtype: see `Metric`.
        threshold: predictions above it count as 1 (default 0.5).
    """

    direction = "up"

    def __init__(self, name: str | None = "binary_accuracy", dtype: DTypeLike | None = None,
                 threshold: float = 0.5) -> None:
        super().__init__(name=name, dtype=dtype)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) \
                or not math.isfinite(threshold):
            raise ValueError(f"Expected threshold to be a finite number. "
                             f"Received: threshold={threshold!r}")
        self.threshold = threshold

    def _values(self, p: NDArray[Any], t: NDArray[Any]) -> NDArray[Any]:
        out: NDArray[Any] = t == (p > p.dtype.type(self.threshold))
        return out

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "threshold": self.threshold}


class CategoricalAccuracy(_MeanMetric):
    """How often the predicted class (argmax of y_pred) is the one-hot label's, as
    `keras.metrics.CategoricalAccuracy` (ties: the first maximum).  Targets are turned into
    class indices once per fit, so each batch compares integers."""

    direction = "up"
    joins_exactly = True  # a count of samples (one value each): the same sums in any grouping

    def __init__(self, name: str | None = "categorical_accuracy",
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, dtype=dtype)

    def _standardize(self, t: NDArray[Any], p: NDArray[Any]
                     ) -> tuple[NDArray[Any], NDArray[Any]]:
        if t.ndim != p.ndim or t.shape[:-1] != p.shape[:-1]:
            raise ValueError(f"Expected one-hot y_true with y_pred's shape. Received: "
                             f"y_true.shape={t.shape}, y_pred.shape={p.shape}")
        return t, p

    def prepare_targets(self, y: NDArray[Any]) -> NDArray[Any]:
        labels: NDArray[Any] = np.argmax(y, axis=-1) if y.ndim >= 2 else y
        return labels

    def _values(self, p: NDArray[Any], t: NDArray[Any]) -> NDArray[Any]:
        out: NDArray[Any] = np.argmax(p, axis=-1) == t
        return out


class SparseCategoricalAccuracy(CategoricalAccuracy):
    """How often the predicted class (argmax of y_pred) equals the integer label, as
    `keras.metrics.SparseCategoricalAccuracy`: y_true (batch,) or (batch, 1)."""

    def __init__(self, name: str | None = "sparse_categorical_accuracy",
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, dtype=dtype)

    def _standardize(self, t: NDArray[Any], p: NDArray[Any]
                     ) -> tuple[NDArray[Any], NDArray[Any]]:
        return _sparse_labels(t, p)

    def prepare_targets(self, y: NDArray[Any]) -> NDArray[Any]:
        return y


def _sparse_labels(t: NDArray[Any], p: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """Integer labels y_true (batch,) (a trailing axis of 1 squeezed) for y_pred (batch, k)."""
    if t.ndim == p.ndim and t.ndim and t.shape[-1] == 1:
        t = t[..., 0]
    if p.ndim < 1 or t.shape != p.shape[:-1]:
        raise ValueError(f"Expected y_true of integer labels with shape y_pred.shape[:-1]. "
                         f"Received: y_true.shape={t.shape}, y_pred.shape={p.shape}")
    return t, p


def _in_top_k(labels: NDArray[Any], p: NDArray[Any], k: int) -> NDArray[Any]:
    """Keras' ops.in_top_k: whether fewer than k scores exceed the label's (ties count as
    in the top k; a NaN score at the label never is).  labels (n,), p (n, classes)."""
    idx = labels.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= p.shape[-1]):
        raise ValueError(f"Expected labels in [0, {p.shape[-1]}). Received: labels from "
                         f"{idx.min()} to {idx.max()}")
    at = np.take_along_axis(p, idx[:, None], axis=-1)
    at[np.isnan(at)] = -np.inf
    out: NDArray[Any] = np.count_nonzero(p > at, axis=-1) < k
    return out


class TopKCategoricalAccuracy(CategoricalAccuracy):
    """How often the one-hot label's class is among the k highest predictions, as
    `keras.metrics.TopKCategoricalAccuracy`.

    Args:
        k: the number of top predictions (default 5).
        name: default "top_k_categorical_accuracy".
        dtype: see `Metric`.
    """

    direction = "up"

    def __init__(self, k: int = 5, name: str | None = "top_k_categorical_accuracy",
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, dtype=dtype)
        self.k = _check_int("k", k, 1)

    def _values(self, p: NDArray[Any], t: NDArray[Any]) -> NDArray[Any]:
        return _in_top_k(t, p.reshape(-1, p.shape[-1]), self.k).reshape(t.shape)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "k": self.k}


class SparseTopKCategoricalAccuracy(SparseCategoricalAccuracy):
    """How often the integer label is among the k highest predictions, as
    `keras.metrics.SparseTopKCategoricalAccuracy`.

    Args:
        k: the number of top predictions (default 5).
        name: default "sparse_top_k_categorical_accuracy".
        dtype: see `Metric`.
        from_sorted_ids: False (default): y_pred holds a score per class; True: y_pred
            (batch, N >= k) holds class ids sorted from the highest score down.
    """

    def __init__(self, k: int = 5, name: str | None = "sparse_top_k_categorical_accuracy",
                 dtype: DTypeLike | None = None, from_sorted_ids: bool = False) -> None:
        super().__init__(name=name, dtype=dtype)
        self.k = _check_int("k", k, 1)
        self.from_sorted_ids = bool(from_sorted_ids)

    def _values(self, p: NDArray[Any], t: NDArray[Any]) -> NDArray[Any]:
        p = p.reshape(-1, p.shape[-1])
        if self.from_sorted_ids:
            out: NDArray[Any] = np.any(p[:, :self.k] == t.reshape(-1, 1), axis=-1)
            return out.reshape(t.shape)
        return _in_top_k(t.reshape(-1), p, self.k).reshape(t.shape)

    def get_config(self) -> dict[str, Any]:
        config = {"name": self.name, "dtype": self.dtype, "k": self.k}
        if self.from_sorted_ids:
            config["from_sorted_ids"] = True
        return config


class MeanSquaredError(_MeanMetric):
    """The mean of mean((y_true - y_pred)^2, axis=-1), as `keras.metrics.MeanSquaredError`."""

    direction = "down"

    def __init__(self, name: str | None = "mean_squared_error",
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, dtype=dtype)

    def _values(self, p: NDArray[Any], t: NDArray[Any]) -> NDArray[Any]:
        d = p - t
        d *= d
        out: NDArray[Any] = d.mean(axis=-1)
        return out


class MeanAbsoluteError(_MeanMetric):
    """The mean of mean(|y_true - y_pred|, axis=-1), as `keras.metrics.MeanAbsoluteError`."""

    direction = "down"

    def __init__(self, name: str | None = "mean_absolute_error",
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, dtype=dtype)

    def _values(self, p: NDArray[Any], t: NDArray[Any]) -> NDArray[Any]:
        d = p - t
        np.abs(d, out=d)
        out: NDArray[Any] = d.mean(axis=-1)
        return out


class RootMeanSquaredError(_MeanMetric):
    """sqrt of the (weighted) mean of (y_pred - y_true)^2, as
    `keras.metrics.RootMeanSquaredError`: the squared errors are averaged per sample, the
    square root taken of the mean over samples (not a mean of per-batch roots)."""

    direction = "down"

    def __init__(self, name: str | None = "root_mean_squared_error",
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, dtype=dtype)

    def _values(self, p: NDArray[Any], t: NDArray[Any]) -> NDArray[Any]:
        d: NDArray[Any] = p - t
        d *= d
        return d

    def result(self) -> float:
        return math.sqrt(super().result())


# ---- confusion-matrix metrics -----------------------------------------------------------------

def _filter_top_k(x: NDArray[Any], k: int) -> NDArray[Any]:
    """Keras' _filter_top_k: the k highest values of the last axis kept (ties: the first
    ones), the others set to NEG_INF."""
    top = np.argsort(-x, axis=-1, kind="stable")[..., :k]
    keep = np.zeros(x.shape, bool)
    np.put_along_axis(keep, top, True, axis=-1)
    out: NDArray[Any] = np.where(keep, x, x.dtype.type(NEG_INF))
    return out


def _counts_column(p: NDArray[Any], pos: NDArray[Any], w: NDArray[Any] | None,
                   thresholds: NDArray[Any], evenly: bool
                   ) -> tuple[NDArray[Any], NDArray[Any], float, float]:
    """(tp, fp, total positive weight, total negative weight) of one column: tp[i] :=
    sum(w * pos * (p > thresholds[i])), fp[i] the same over the negatives.  p, pos, w (n,).
    evenly: thresholds spread evenly over [0, 1] (ends possibly moved by epsilon): Keras'
    bucket method, which first clips p to [0, 1]; otherwise sorted scores and searchsorted."""
    pw = pos.astype(np.float64) if w is None else np.where(pos, w, 0.0)
    nw = (1.0 - pw) if w is None else w - pw
    total_p, total_n = float(pw.sum()), float(nw.sum())
    T = len(thresholds)
    if evenly:
        # bucket b holds (t_b, t_b+1]: b := ceil(p * (T - 1)) - 1, in p's dtype as Keras
        b = np.ceil(np.clip(p, 0, 1) * p.dtype.type(T - 1)) - 1
        if thresholds[0] < 0 or thresholds[-1] > 1:  # ends moved by epsilon: 0 is above the first
            np.maximum(b, 0, out=b)
        b[np.isnan(b)] = -1  # (NaN: counted at no threshold)
        idx = b.astype(np.int64) + 1  # (index 0: counted at no threshold, as Keras' -1)
        tp = np.cumsum(np.bincount(idx, pw, T + 1)[:0:-1])[::-1]
        fp = np.cumsum(np.bincount(idx, nw, T + 1)[:0:-1])[::-1]
        return tp, fp, total_p, total_n
    order = np.argsort(p, kind="stable")
    ps = p[order]
    ps[np.isnan(ps)] = -np.inf  # NaN is above no threshold
    j = np.searchsorted(ps, thresholds, side="right")  # the first score above each threshold
    tp = np.append(np.cumsum(pw[order][::-1])[::-1], 0.0)[j]
    fp = np.append(np.cumsum(nw[order][::-1])[::-1], 0.0)[j]
    return tp, fp, total_p, total_n


def _confusion(t: NDArray[Any], p: NDArray[Any], sample_weight: NDArray[Any] | None,
               thresholds: NDArray[Any], evenly: bool, top_k: int | None = None,
               class_id: int | None = None, multi_label: bool = False,
               label_weights: NDArray[Any] | None = None
               ) -> tuple[NDArray[np.float64], ...]:
    """(tp, fp, tn, fn) at each threshold, as Keras' update_confusion_matrix_variables: a
    prediction is positive where p > threshold, a label where y_true != 0; each element
    weighs its sample weight (broadcast to p) times its label weight.  Shapes (T,), or
    (T, labels) with multi_label (p (batch, labels)); flattened otherwise."""
    p, t = _same_rank(p, t)
    w = None
    if sample_weight is not None:
        _, w = _same_rank(t, sample_weight[..., None], expand_rank_1=False)
    if top_k is not None:
        p = _filter_top_k(p, top_k)
    if class_id is not None:
        if p.ndim == 1:
            raise ValueError(f"Expected y_pred of shape (batch, classes) with class_id. "
                             f"Received: y_pred.shape={p.shape}")
        if class_id >= p.shape[-1]:
            raise ValueError(f"Expected class_id < {p.shape[-1]} (the classes of y_pred). "
                             f"Received: class_id={class_id}")
        t, p = t[..., class_id, None], p[..., class_id, None]
    pos = _broadcast(t != 0, p.shape, "y_true", "y_pred")
    if w is not None:
        w = _broadcast(w, p.shape, "sample_weight", "y_pred")
    if label_weights is not None and not multi_label:
        lw = _broadcast(label_weights, p.shape, "label_weights", "y_pred")
        w = lw if w is None else w * lw
    if multi_label:
        if p.ndim != 2:
            raise ValueError(f"Expected y_pred of rank 2 with multi_label=True. "
                             f"Received: y_pred.shape={p.shape}")
        cols = [(p[:, j], pos[:, j], None if w is None else w[:, j]) for j in range(p.shape[1])]
    else:
        cols = [(p.ravel(), pos.ravel(), None if w is None else w.ravel())]
    counts = [_counts_column(pc, tc, wc, thresholds, evenly) for pc, tc, wc in cols]
    tp = np.stack([c[0] for c in counts], axis=-1)
    fp = np.stack([c[1] for c in counts], axis=-1)
    fn = np.array([c[2] for c in counts]) - tp
    tn = np.array([c[3] for c in counts]) - fp
    if not multi_label:
        tp, fp, tn, fn = tp[:, 0], fp[:, 0], tn[:, 0], fn[:, 0]
    return tp, fp, tn, fn


def _ratio(a: NDArray[Any], b: NDArray[Any]) -> NDArray[np.float64]:
    """a / b, 0 where b is 0 (Keras' divide_no_nan)."""
    out: NDArray[np.float64] = np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape),
                                         where=b != 0)
    return out


class _ConfusionMetric(Metric):
    """A metric over the confusion counts at thresholds (Precision, Recall, AUC)."""

    def _predictions(self, p: NDArray[Any]) -> NDArray[Any]:
        """y_pred in the metric's dtype, as Keras compares it with the thresholds."""
        return p.astype(self.dtype, copy=False)

    def update_state(self, y_true: ArrayLike, y_pred: ArrayLike,
                     sample_weight: ArrayLike | None = None) -> None:
        """Add a batch: y_true (cast to bool: nonzero is positive) and y_pred of the same
        shape, sample_weight None (1), a scalar, (batch,) or of y_true's shape."""
        t, p = _same_shape(_as_array(y_true, "y_true"), _as_array(y_pred, "y_pred"))
        self.update(p, t, None if sample_weight is None else
                    _as_array(sample_weight, "sample_weight"))


class _AtThresholds(_ConfusionMetric):
    """Precision and Recall: the true positives and one other count at each threshold (the
    subclass' `_other`: "false_positives" or "false_negatives", _confusion's 2nd or 4th)."""

    _other: str
    _other_index: int

    def __init__(self, thresholds: float | Sequence[float] | None = None,
                 top_k: int | None = None, class_id: int | None = None,
                 name: str | None = None, dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, dtype=dtype)
        self.top_k = None if top_k is None else _check_int("top_k", top_k, 1)
        self.class_id = None if class_id is None else _check_int("class_id", class_id, 0)
        listed, self.init_thresholds = _parse_thresholds(
            thresholds, 0.5 if top_k is None else NEG_INF)
        self.thresholds = listed
        self._evenly = _evenly_distributed(listed)
        self.true_positives = self.add_variable((len(listed),), name="true_positives")
        setattr(self, self._other, self.add_variable((len(listed),), name=self._other))

    def update(self, p: NDArray[Any], t: NDArray[Any],
               sample_weight: NDArray[Any] | None = None) -> None:
        counts = self._counts(p, t, sample_weight)
        self.true_positives += counts[0]
        getattr(self, self._other)[...] += counts[self._other_index]

    def _counts(self, p: NDArray[Any], t: NDArray[Any], sample_weight: NDArray[Any] | None
                ) -> tuple[NDArray[np.float64], ...]:
        p = self._predictions(p)
        return _confusion(t, p, sample_weight, np.asarray(self.thresholds, p.dtype),
                          self._evenly, self.top_k, self.class_id)

    def result(self) -> float | NDArray[np.float64]:
        """One value per threshold: a float for one threshold, else an array."""
        tp = self.true_positives
        r = _ratio(tp, tp + self._variables[1])
        return float(r[0]) if len(r) == 1 else r

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "thresholds": self.init_thresholds,
                "top_k": self.top_k, "class_id": self.class_id}


class Precision(_AtThresholds):
    """The precision tp / (tp + fp) of the predictions, as `keras.metrics.Precision`
    (0 before any predicted positive).

    Args:
        thresholds: a float or a list of floats in [0, 1]; a prediction above a threshold is
            positive.  One result per threshold (a NumPy array when there are several).
            Default None: 0.5, or with top_k, no threshold (NEG_INF).
        top_k: count only the k highest predictions of each sample (last axis) as positive
            (ties: the first ones).
        class_id: the class (index of the last axis) to compute the metric for.
        name: default None ("precision", made unique).
        dtype: see `Metric`.

    >>> m = Precision(); m.update_state([0, 1, 1, 1], [1, 0, 1, 1]); m.result()
    0.666...
    """

    direction = "up"

    _other, _other_index = "false_positives", 1


class Recall(_AtThresholds):
    """The recall tp / (tp + fn) of the predictions, as `keras.metrics.Recall`; arguments
    as `Precision` (name default None: "recall", made unique).

    >>> m = Recall(); m.update_state([0, 1, 1, 1], [1, 0, 1, 1]); m.result()
    0.666...
    """

    direction = "up"

    _other, _other_index = "false_negatives", 3


_CURVES = {"ROC": "ROC", "roc": "ROC", "PR": "PR", "pr": "PR", "PRGAIN": "PRGAIN",
           "prgain": "PRGAIN"}
_SUMMATIONS = {"interpolation": "interpolation", "Interpolation": "interpolation",
               "majoring": "majoring", "Majoring": "majoring",
               "minoring": "minoring", "Minoring": "minoring"}


class AUC(_ConfusionMetric):
    """The area under the ROC or PR curve, approximated over thresholds as `keras.metrics.AUC`
    does: confusion counts at num_thresholds thresholds (0 - epsilon, then evenly spaced in
    (0, 1), then 1 + epsilon), then a Riemann sum between successive thresholds.

    Args:
        num_thresholds: the number of thresholds (> 1, default 200); ignored with thresholds.
        curve: "ROC" (default), "PR" (precision over recall) or "PRGAIN".
        summation_method: "interpolation" (default: the trapezoid rule for ROC; for PR the
            Davis & Goadrich interpolation of tp and fp), "minoring" (the lower of the two
            heights of each interval) or "majoring" (the higher).
        name: default None ("auc", made unique).
        dtype: see `Metric`.
        thresholds: a list of thresholds in [0, 1] to use instead (the two end points are
            added to them).
        multi_label: False (default): every (label, prediction) pair is one data point; True:
            one AUC per label (last axis of y_pred (batch, labels)), averaged.
        num_labels: the number of labels with multi_label=True (else taken from the first
            batch).
        label_weights: non-negative weights of the labels: of the per-label AUCs' average
            with multi_label, of each element's counts otherwise.
        from_logits: y_pred are logits: sigmoid(y_pred) is counted (default False).

    >>> m = AUC(num_thresholds=3); m.update_state([0, 0, 1, 1], [0, 0.5, 0.3, 0.9]); m.result()
    0.75
    """

    direction = "up"

    def __init__(self, num_thresholds: int = 200, curve: str = "ROC",
                 summation_method: str = "interpolation", name: str | None = None,
                 dtype: DTypeLike | None = None, thresholds: Sequence[float] | None = None,
                 multi_label: bool = False, num_labels: int | None = None,
                 label_weights: ArrayLike | None = None, from_logits: bool = False) -> None:
        if curve not in _CURVES:
            raise ValueError(f"Expected curve to be one of 'ROC', 'PR', 'PRGAIN'. "
                             f"Received: curve={curve!r}")
        if summation_method not in _SUMMATIONS:
            raise ValueError(f"Expected summation_method to be one of 'interpolation', "
                             f"'majoring', 'minoring'. Received: "
                             f"summation_method={summation_method!r}")
        inner: list[float]
        if thresholds is not None:
            inner = sorted(float(t) for t in thresholds)
            self.num_thresholds = len(inner) + 2
            self._evenly = _evenly_distributed([0.0] + inner + [1.0])
        else:
            self.num_thresholds = _check_int("num_thresholds", num_thresholds, 2)
            inner = [(i + 1) * 1.0 / (self.num_thresholds - 1)
                     for i in range(self.num_thresholds - 2)]
            self._evenly = True
        self._init_from_thresholds = thresholds is not None
        eps = config.epsilon()
        self._thresholds = np.array([0.0 - eps] + inner + [1.0 + eps])
        self.curve, self.summation_method = _CURVES[curve], _SUMMATIONS[summation_method]
        super().__init__(name=name, dtype=dtype)
        self.multi_label = bool(multi_label)
        if num_labels is not None:
            if not self.multi_label:
                raise ValueError("Expected num_labels only with multi_label=True. Received: "
                                 f"num_labels={num_labels!r}, multi_label={multi_label!r}")
            num_labels = _check_int("num_labels", num_labels, 1)
        self.num_labels = num_labels
        self.label_weights = None if label_weights is None else \
            np.asarray(label_weights, np.float64)
        if self.label_weights is not None and (self.label_weights.ndim != 1 or
                                               np.any(self.label_weights < 0)):
            raise ValueError(f"Expected label_weights to be a list of non-negative numbers. "
                             f"Received: label_weights={label_weights!r}")
        self.from_logits = bool(from_logits)
        self._built = False
        if not self.multi_label or num_labels:
            self._build(num_labels)

    @property
    def thresholds(self) -> list[float]:
        """The thresholds, end points included."""
        return [float(t) for t in self._thresholds]

    def _build(self, num_labels: int | None) -> None:
        shape = (self.num_thresholds,) if num_labels is None else \
            (self.num_thresholds, num_labels)
        self.true_positives = self.add_variable(shape, name="true_positives")
        self.false_positives = self.add_variable(shape, name="false_positives")
        self.true_negatives = self.add_variable(shape, name="true_negatives")
        self.false_negatives = self.add_variable(shape, name="false_negatives")
        self._built = True

    def prepare_targets(self, y: NDArray[Any]) -> NDArray[Any]:
        """(multi_label: builds the state for y's labels, so every rank has the same.)"""
        if not self._built:
            self._build(y.shape[-1])
        return y

    def update(self, p: NDArray[Any], t: NDArray[Any],
               sample_weight: NDArray[Any] | None = None) -> None:
        if not self._built:
            if p.ndim != 2:
                raise ValueError(f"Expected y_pred of rank 2 with multi_label=True. "
                                 f"Received: y_pred.shape={p.shape}")
            self._build(p.shape[1])
        if self.from_logits:
            p = activations.sigmoid(p)
        p = self._predictions(p)
        counts = _confusion(t, p, sample_weight, self._thresholds.astype(p.dtype), self._evenly,
                            multi_label=self.multi_label,
                            label_weights=None if self.multi_label else self.label_weights)
        for v, c in zip(self._variables, counts):
            v += c

    def _average(self, by_label: NDArray[np.float64]) -> float:
        """The AUC: the per-label AUCs' mean (weighted by label_weights) with multi_label."""
        if not self.multi_label:
            return float(by_label)
        if self.label_weights is None:
            return float(by_label.mean())
        total = float(np.sum(self.label_weights))
        return float(np.sum(by_label * self.label_weights)) / total if total else 0.0

    def _interpolate_pr_auc(self) -> float:
        """Keras' interpolate_pr_auc (Davis & Goadrich 2006, section 4): tp and p = tp + fp
        linear between successive thresholds A, B, the precision tp / p integrated exactly:
        slope * (dtp + intercept * log(p_A / p_B)) / (tp_B + fn_B) per interval."""
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        dtp = tp[:-1] - tp[1:]
        p = tp + fp
        dp = p[:-1] - p[1:]
        slope = _ratio(dtp, np.maximum(dp, 0))
        intercept = tp[1:] - slope * p[1:]
        both = (p[:-1] > 0) & (p[1:] > 0)
        ratio = np.where(both, _ratio(p[:-1], np.maximum(p[1:], 0)), 1.0)
        ratio[ratio <= 0] = 1.0  # (only where `both` is False: log is not taken of it)
        increments = _ratio(slope * (dtp + intercept * np.log(ratio)),
                            np.maximum(tp[1:] + fn[1:], 0))
        return self._average(increments.sum(axis=0))

    def result(self) -> float:
        if not self._built:
            return 0.0
        if self.curve == "PR" and self.summation_method == "interpolation":
            return self._interpolate_pr_auc()
        tp, fp = self.true_positives, self.false_positives
        tn, fn = self.true_negatives, self.false_negatives
        recall = _ratio(tp, tp + fn)
        if self.curve == "ROC":
            x, y = _ratio(fp, fp + tn), recall
        elif self.curve == "PR":
            x, y = recall, _ratio(tp, tp + fp)
        else:  # PRGAIN, as Keras (0 recall gain and 1 precision gain where tp is 0)
            scale = _ratio(tp + fn, tn + fp)
            x = np.where(tp == 0, 0.0, 1.0 - scale * _ratio(fn, tp))
            y = np.where(tp == 0, 1.0, 1.0 - scale * _ratio(fp, tp))
            x = np.maximum(x, 0.0)
        if self.summation_method == "interpolation":
            heights = (y[:-1] + y[1:]) / 2.0
        elif self.summation_method == "minoring":
            heights = np.minimum(y[:-1], y[1:])
        else:
            heights = np.maximum(y[:-1], y[1:])
        return self._average(((x[:-1] - x[1:]) * heights).sum(axis=0))

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), "num_thresholds": self.num_thresholds,
                  "curve": self.curve, "summation_method": self.summation_method,
                  "multi_label": self.multi_label, "num_labels": self.num_labels,
                  "label_weights": None if self.label_weights is None else
                  self.label_weights.tolist(),
                  "from_logits": self.from_logits}
        if self._init_from_thresholds:
            config["thresholds"] = self.thresholds[1:-1]
        return config


class _ConditionCount(_ConfusionMetric):
    """TruePositives, FalsePositives, TrueNegatives, FalseNegatives: the (weighted) count of
    one of `_confusion`'s four at each threshold (the subclass' `_index` into them), Keras'
    _ConfusionMatrixConditionCount.  Its state: one variable, "accumulator"."""

    _index: int

    def __init__(self, thresholds: float | Sequence[float] | None = None,
                 name: str | None = None, dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, dtype=dtype)
        self.thresholds, self.init_thresholds = _parse_thresholds(thresholds, 0.5)
        self._evenly = _evenly_distributed(self.thresholds)
        self.accumulator = self.add_variable((len(self.thresholds),), name="accumulator")

    def update(self, p: NDArray[Any], t: NDArray[Any],
               sample_weight: NDArray[Any] | None = None) -> None:
        p = self._predictions(p)
        self.accumulator += _confusion(t, p, sample_weight, np.asarray(self.thresholds, p.dtype),
                                       self._evenly)[self._index]

    def result(self) -> float | NDArray[np.float64]:
        """The count: a float for one threshold, else an array (one per threshold)."""
        a = self.accumulator
        return float(a[0]) if len(a) == 1 else a.copy()

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "thresholds": self.init_thresholds}


class TruePositives(_ConditionCount):
    """The (weighted) number of true positives, as `keras.metrics.TruePositives`: labels
    y_true != 0 predicted above the threshold.

    Args:
        thresholds: a float or a list of floats in [0, 1] (default None: 0.5); one count per
            threshold (a NumPy array when there are several).
        name: default None ("true_positives", made unique).
        dtype: see `Metric`.

    >>> m = TruePositives(); m.update_state([0, 1, 1, 1], [1, 0, 1, 1]); m.result()
    2.0
    """

    _index = 0


class FalsePositives(_ConditionCount):
    """The (weighted) number of false positives, as `keras.metrics.FalsePositives`; arguments
    as `TruePositives` (name default None: "false_positives", made unique).

    >>> m = FalsePositives(); m.update_state([0, 1, 0, 0], [0, 0, 1, 1]); m.result()
    2.0
    """

    _index = 1


class TrueNegatives(_ConditionCount):
    """The (weighted) number of true negatives, as `keras.metrics.TrueNegatives`; arguments
    as `TruePositives` (name default None: "true_negatives", made unique).

    >>> m = TrueNegatives(); m.update_state([0, 1, 0, 0], [1, 1, 0, 0]); m.result()
    2.0
    """

    _index = 2


class FalseNegatives(_ConditionCount):
    """The (weighted) number of false negatives, as `keras.metrics.FalseNegatives`; arguments
    as `TruePositives` (name default None: "false_negatives", made unique).

    >>> m = FalseNegatives(); m.update_state([0, 1, 1, 1], [0, 1, 0, 0]); m.result()
    2.0
    """

    _index = 3


class _AtConstraint(_ConfusionMetric):
    """Keras' SensitivitySpecificityBase: the confusion counts at num_thresholds thresholds
    (0, evenly spaced, 1; or 0.5 alone for num_thresholds=1), and the highest value of one
    rate over the thresholds where another rate is >= the given value (0 where none is).
    A subclass names its value (`_value_name`, its constructor's first argument) and gives
    `_rates()`: (the constrained rate, the maximized rate), one per threshold."""

    direction = "up"
    _value_name: str

    def __init__(self, value: float, num_thresholds: int = 200, class_id: int | None = None,
                 name: str | None = None, dtype: DTypeLike | None = None) -> None:
        v = self._value_name
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer,
                                                             np.floating)) or not 0 <= value <= 1:
            raise ValueError(f"Argument `{v}` must be in the range [0, 1]. Received: {v}={value}")
        if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, (int, np.integer)) \
                or num_thresholds <= 0:
            raise ValueError("Argument `num_thresholds` must be an integer > 0. "
                             f"Received: num_thresholds={num_thresholds}")
        super().__init__(name=name, dtype=dtype)
        self.value = value
        setattr(self, v, value)
        self.num_thresholds = int(num_thresholds)
        self.class_id = None if class_id is None else _check_int("class_id", class_id, 0)
        n = self.num_thresholds
        self.thresholds = [0.5] if n == 1 else \
            [0.0] + [(i + 1) * 1.0 / (n - 1) for i in range(n - 2)] + [1.0]
        self._evenly = n > 1
        shape = (len(self.thresholds),)
        self.true_positives = self.add_variable(shape, name="true_positives")
        self.false_positives = self.add_variable(shape, name="false_positives")
        self.true_negatives = self.add_variable(shape, name="true_negatives")
        self.false_negatives = self.add_variable(shape, name="false_negatives")

    def update(self, p: NDArray[Any], t: NDArray[Any],
               sample_weight: NDArray[Any] | None = None) -> None:
        p = self._predictions(p)
        counts = _confusion(t, p, sample_weight, np.asarray(self.thresholds, p.dtype),
                            self._evenly, class_id=self.class_id)
        for var, c in zip(self._variables, counts):
            var += c

    def _sensitivity(self) -> NDArray[np.float64]:  # (= recall) tp / (tp + fn)
        return _ratio(self.true_positives, self.true_positives + self.false_negatives)

    def _specificity(self) -> NDArray[np.float64]:  # tn / (tn + fp)
        return _ratio(self.true_negatives, self.true_negatives + self.false_positives)

    def _precision(self) -> NDArray[np.float64]:  # tp / (tp + fp)
        return _ratio(self.true_positives, self.true_positives + self.false_positives)

    def _rates(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        raise NotImplementedError

    def result(self) -> float:
        """max(dependent where constrained >= value, else 0), 0.0 at the least (Keras'
        _find_max_under_constraint)."""
        constrained, dependent = self._rates()
        return float(np.max(np.where(constrained >= self.value, dependent, 0.0), initial=0.0))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "class_id": self.class_id,
                "num_thresholds": self.num_thresholds, self._value_name: self.value}


class SensitivityAtSpecificity(_AtConstraint):
    """The best sensitivity tp / (tp + fn) over the thresholds where the specificity
    tn / (tn + fp) is >= `specificity`, as `keras.metrics.SensitivityAtSpecificity`.

    Args:
        specificity: a number in [0, 1].
        num_thresholds: the number of thresholds (default 200): 0, evenly spaced, 1
            (num_thresholds=1: 0.5 alone).
        class_id: the class (index of the last axis of y_pred) to compute the metric for.
        name: default None ("sensitivity_at_specificity", made unique).
        dtype: see `Metric`.

    >>> m = SensitivityAtSpecificity(0.5)
    >>> m.update_state([0, 0, 0, 1, 1], [0, 0.3, 0.8, 0.3, 0.8]); m.result()
    0.5
    """

    _value_name = "specificity"

    def __init__(self, specificity: float, num_thresholds: int = 200,
                 class_id: int | None = None, name: str | None = None,
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(specificity, num_thresholds, class_id, name, dtype)

    def _rates(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return self._specificity(), self._sensitivity()


class SpecificityAtSensitivity(_AtConstraint):
    """The best specificity tn / (tn + fp) over the thresholds where the sensitivity
    tp / (tp + fn) is >= `sensitivity`, as `keras.metrics.SpecificityAtSensitivity`;
    arguments as `SensitivityAtSpecificity` (name default None:
    "specificity_at_sensitivity", made unique).

    >>> m = SpecificityAtSensitivity(0.5)
    >>> m.update_state([0, 0, 0, 1, 1], [0, 0.3, 0.8, 0.3, 0.8]); m.result()
    0.666...
    """

    _value_name = "sensitivity"

    def __init__(self, sensitivity: float, num_thresholds: int = 200,
                 class_id: int | None = None, name: str | None = None,
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(sensitivity, num_thresholds, class_id, name, dtype)

    def _rates(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return self._sensitivity(), self._specificity()


class PrecisionAtRecall(_AtConstraint):
    """The best precision tp / (tp + fp) over the thresholds where the recall tp / (tp + fn)
    is >= `recall`, as `keras.metrics.PrecisionAtRecall`; arguments as
    `SensitivityAtSpecificity` (name default None: "precision_at_recall", made unique).

    >>> m = PrecisionAtRecall(0.5)
    >>> m.update_state([0, 0, 0, 1, 1], [0, 0.3, 0.8, 0.3, 0.8]); m.result()
    0.5
    """

    _value_name = "recall"

    def __init__(self, recall: float, num_thresholds: int = 200, class_id: int | None = None,
                 name: str | None = None, dtype: DTypeLike | None = None) -> None:
        super().__init__(recall, num_thresholds, class_id, name, dtype)

    def _rates(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return self._sensitivity(), self._precision()


class RecallAtPrecision(_AtConstraint):
    """The best recall tp / (tp + fn) over the thresholds where the precision tp / (tp + fp)
    is >= `precision` (0 when no threshold reaches it), as `keras.metrics.RecallAtPrecision`;
    arguments as `SensitivityAtSpecificity` (name default None: "recall_at_precision", made
    unique).  As Keras: a threshold where nothing is predicted positive has precision 0.

    >>> m = RecallAtPrecision(0.8); m.update_state([0, 0, 1, 1], [0, 0.5, 0.3, 0.9]); m.result()
    0.5
    """

    _value_name = "precision"

    def __init__(self, precision: float, num_thresholds: int = 200,
                 class_id: int | None = None, name: str | None = None,
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(precision, num_thresholds, class_id, name, dtype)

    def _rates(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return self._precision(), self._sensitivity()


# ---- F-scores and R2 --------------------------------------------------------------------------

_AVERAGES = (None, "micro", "macro", "weighted")


def _check_2d(cls: str, t: NDArray[Any], p: NDArray[Any]) -> None:
    """FBetaScore's and R2Score's inputs: (batch_size, output_dim), of the same shape."""
    if p.ndim != 2 or t.ndim != 2:
        raise ValueError(f"{cls} expects 2D inputs with shape (batch_size, output_dim). "
                         f"Received input shapes: y_pred.shape={p.shape} and "
                         f"y_true.shape={t.shape}.")
    if t.shape != p.shape:
        raise ValueError(f"Expected y_true and y_pred of the same shape. Received: "
                         f"y_true.shape={t.shape}, y_pred.shape={p.shape}")


def _row_weights(sample_weight: NDArray[Any] | None, shape: tuple[int, ...]
                 ) -> NDArray[Any] | None:
    """A sample weight (a scalar or (batch,)) as a column broadcast to shape (batch, k)."""
    if sample_weight is None:
        return None
    if sample_weight.ndim > 1:
        raise ValueError(f"Expected sample_weight of shape (batch,) or a scalar. "
                         f"Received: sample_weight.shape={sample_weight.shape}")
    return _broadcast(sample_weight.reshape(-1, 1), shape, "sample_weight", "y_pred")


class FBetaScore(Metric):
    """The F-beta score (1 + b^2) * precision * recall / (b^2 * precision + recall), b = beta,
    per class (the last axis of y_true and y_pred (batch, classes)), as
    `keras.metrics.FBetaScore`.

    Args:
        average: None (default: one score per class, a NumPy array), "micro" (one score of the
            counts summed over the classes), "macro" (the mean of the per-class scores) or
            "weighted" (their mean weighted by each class' sum of y_true).
        beta: a Python float > 0 (default 1.0), the weight of recall (Keras refuses an int).
        threshold: None (default: the highest prediction of each sample is positive, ties
            all, but never a 0) or a Python float in (0, 1]: predictions above it are positive.
        name: default "fbeta_score".
        dtype: see `Metric`.

    As Keras, with epsilon = `fastnn.config.epsilon()`: precision = tp / (tp + fp + epsilon),
    recall = tp / (tp + fn + epsilon), and epsilon added to the denominator of the score, so
    a class never predicted nor seen scores 0.  The state is built from the number of classes
    of the first batch (micro: scalars).  `sample_weight`: None, a scalar or (batch,).

    >>> m = FBetaScore(beta=2.0, threshold=0.5)
    >>> m.update_state([[1, 1, 1], [1, 0, 0], [1, 1, 0]],
    ...                [[0.2, 0.6, 0.7], [0.2, 0.6, 0.6], [0.6, 0.8, 0.0]])
    >>> m.result()
    array([0.3846..., 0.9090..., 0.8333...])
    """

    direction = "up"

    def __init__(self, average: str | None = None, beta: float = 1.0,
                 threshold: float | None = None, name: str | None = "fbeta_score",
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(dtype=dtype, name=name)
        if average not in _AVERAGES:
            raise ValueError("Invalid `average` argument value. Expected one of: "
                             "{None, 'micro', 'macro', 'weighted'}. "
                             f"Received: average={average}")
        if not isinstance(beta, float):
            raise ValueError("Invalid `beta` argument value. It should be a Python float. "
                             f"Received: beta={beta} of type '{type(beta)}'")
        if not beta > 0.0:
            raise ValueError(f"Invalid `beta` argument value. It should be > 0. "
                             f"Received: beta={beta}")
        if threshold is not None:
            if not isinstance(threshold, float):
                raise ValueError("Invalid `threshold` argument value. It should be a Python "
                                 f"float. Received: threshold={threshold} of type "
                                 f"'{type(threshold)}'")
            if not 0.0 < threshold <= 1.0:
                raise ValueError("Invalid `threshold` argument value. It should verify "
                                 f"0 < threshold <= 1. Received: threshold={threshold}")
        self.average, self.beta, self.threshold = average, beta, threshold
        self._built = False
        if average == "micro":
            self._build(None)

    def _build(self, num_classes: int | None) -> None:
        shape: tuple[int, ...] = () if num_classes is None else (num_classes,)
        self.true_positives = self.add_variable(shape, name="true_positives")
        self.false_positives = self.add_variable(shape, name="false_positives")
        self.false_negatives = self.add_variable(shape, name="false_negatives")
        self.intermediate_weights = self.add_variable(shape, name="intermediate_weights")
        self._built = True

    def update_state(self, y_true: ArrayLike, y_pred: ArrayLike,
                     sample_weight: ArrayLike | None = None) -> None:
        """Add a batch: y_true and y_pred (batch, classes), sample_weight None (1), a scalar
        or (batch,)."""
        t, p = _as_array(y_true, "y_true"), _as_array(y_pred, "y_pred")
        self.update(p, t,
                    None if sample_weight is None else _as_array(sample_weight, "sample_weight"))

    def prepare_targets(self, y: NDArray[Any]) -> NDArray[Any]:
        """(builds the state for y's classes, so every rank of a distributed fit has it.)"""
        if not self._built:
            self._build(y.shape[-1])
        return y

    def update(self, p: NDArray[Any], t: NDArray[Any],
               sample_weight: NDArray[Any] | None = None) -> None:
        _check_2d("FBetaScore", t, p)  # (F1Score's message too, as Keras)
        self.prepare_targets(p)
        if self.average != "micro" and p.shape[-1] != len(self.true_positives):
            raise ValueError(f"Expected y_pred with {len(self.true_positives)} classes, as the "
                             f"first batch. Received: y_pred.shape={p.shape}")
        p = p.astype(self.dtype, copy=False)
        if self.threshold is None:  # the maximum of each row (all of them on ties), never a 0
            pred = (p >= p.max(axis=-1, keepdims=True)) & (np.abs(p) > 1e-9)
        else:
            pred = p > p.dtype.type(self.threshold)
        yp = pred.astype(np.float64)
        yt = t.astype(np.float64)
        w = _row_weights(sample_weight, p.shape)
        axis = None if self.average == "micro" else 0

        def wsum(v: NDArray[np.float64]) -> NDArray[np.float64] | np.float64:
            out: NDArray[np.float64] | np.float64 = (v if w is None else v * w).sum(axis=axis)
            return out

        self.true_positives += wsum(yp * yt)
        self.false_positives += wsum(yp * (1 - yt))
        self.false_negatives += wsum((1 - yp) * yt)
        self.intermediate_weights += wsum(yt)

    def result(self) -> float | NDArray[np.float64]:
        """The score per class (average=None: a NumPy array), else a float; 0.0 before the
        first batch."""
        if not self._built:
            return 0.0
        eps, b2 = config.epsilon(), self.beta ** 2
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        precision = tp / (tp + fp + eps)
        recall = tp / (tp + fn + eps)
        f = precision * recall / (b2 * precision + recall + eps) * (1 + b2)
        if self.average == "weighted":
            iw = self.intermediate_weights
            return float(np.sum(f * iw / (np.sum(iw) + eps)))
        if self.average is not None:
            return float(np.mean(f))
        out: NDArray[np.float64] = f
        return out

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "average": self.average,
                "beta": self.beta, "threshold": self.threshold}


class F1Score(FBetaScore):
    """The F1 score 2 * precision * recall / (precision + recall), as `keras.metrics.F1Score`:
    `FBetaScore` with beta=1.0 (see it for average, threshold and the epsilons).

    Args:
        average: None (default), "micro", "macro" or "weighted".
        threshold: None (default: the row's maximum is positive) or a float in (0, 1].
        name: default "f1_score".
        dtype: see `Metric`.

    >>> m = F1Score(threshold=0.5)
    >>> m.update_state([[1, 1, 1], [1, 0, 0], [1, 1, 0]],
    ...                [[0.2, 0.6, 0.7], [0.2, 0.6, 0.6], [0.6, 0.8, 0.0]])
    >>> m.result()
    array([0.5, 0.8, 0.6666...])
    """

    def __init__(self, average: str | None = None, threshold: float | None = None,
                 name: str | None = "f1_score", dtype: DTypeLike | None = None) -> None:
        super().__init__(average=average, beta=1.0, threshold=threshold, name=name, dtype=dtype)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        del config["beta"]
        return config


_CLASS_AGGREGATIONS = (None, "uniform_average", "variance_weighted_average")


class R2Score(Metric):
    """The coefficient of determination R2 = 1 - sum((y_true - y_pred)^2) /
    sum((y_true - mean(y_true))^2) per output (the last axis of y_true and y_pred
    (batch, outputs)), weighted by sample_weight, as `keras.metrics.R2Score`.

    Args:
        class_aggregation: "uniform_average" (default: the mean over the outputs),
            "variance_weighted_average" (weighted by each output's sum of squares about its
            mean) or None (one score per output, a NumPy array).
        num_regressors: the number p of independent regressors, for the adjusted R2
            1 - (1 - R2) (n - 1) / (n - p - 1), n the number of samples seen; 0 (default): R2.
        name: default "r2_score".
        dtype: see `Metric`.

    As Keras: n counts the elements of y_true (samples times outputs); with p >= n - 1 the
    adjusted score falls back to R2 with a warning; an output whose y_true is constant scores
    0 where its residuals are not 0 (NaN where they are: 0 / 0); after `reset_state()` the
    result is NaN (0.0 before the first batch, where Keras fails).  The state is built from the
    number of outputs of the first batch.  `sample_weight`: None, a scalar, (batch,) or of
    y_true's shape.

    >>> m = R2Score(); m.update_state([[1], [4], [3]], [[2], [4], [4]]); m.result()
    0.5714...
    """

    direction = "up"

    def __init__(self, class_aggregation: str | None = "uniform_average",
                 num_regressors: int = 0, name: str | None = "r2_score",
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(dtype=dtype, name=name)
        if class_aggregation not in _CLASS_AGGREGATIONS:
            raise ValueError("Invalid value for argument `class_aggregation`. Expected one of "
                             f"{_CLASS_AGGREGATIONS}. Received: "
                             f"class_aggregation={class_aggregation}")
        if isinstance(num_regressors, bool) or not isinstance(num_regressors, (int, np.integer)) \
                or num_regressors < 0:
            raise ValueError("Invalid value for argument `num_regressors`. Expected a value "
                             f">= 0. Received: num_regressors={num_regressors}")
        self.class_aggregation = class_aggregation
        self.num_regressors = int(num_regressors)
        self.num_samples = self.add_variable((), name="num_samples")
        self._built = False

    def _build(self, num_outputs: int) -> None:
        self.squared_sum = self.add_variable((num_outputs,), name="squared_sum")
        self.sum = self.add_variable((num_outputs,), name="sum")
        self.total_mse = self.add_variable((num_outputs,), name="residual")
        self.count = self.add_variable((num_outputs,), name="count")
        self._built = True

    def update_state(self, y_true: ArrayLike, y_pred: ArrayLike,
                     sample_weight: ArrayLike | None = None) -> None:
        """Add a batch: y_true and y_pred (batch, outputs) (a rank-1 one is made a column),
        sample_weight None (1), a scalar, (batch,) or of y_true's shape."""
        t, p = _same_rank(_as_array(y_true, "y_true"), _as_array(y_pred, "y_pred"))
        self.update(p, t,
                    None if sample_weight is None else _as_array(sample_weight, "sample_weight"))

    def prepare_targets(self, y: NDArray[Any]) -> NDArray[Any]:
        """(builds the state for y's outputs, so every rank of a distributed fit has it.)"""
        if not self._built:
            self._build(y.shape[-1])
        return y

    def update(self, p: NDArray[Any], t: NDArray[Any],
               sample_weight: NDArray[Any] | None = None) -> None:
        _check_2d("R2Score", t, p)
        self.prepare_targets(t)
        if t.shape[-1] != len(self.sum):
            raise ValueError(f"Expected y_true with {len(self.sum)} outputs, as the first "
                             f"batch. Received: y_true.shape={t.shape}")
        yt = t.astype(np.float64)
        if sample_weight is None:
            w: NDArray[Any] = np.ones_like(yt)
        else:
            w = sample_weight[:, None] if sample_weight.ndim == 1 else sample_weight
            w = _broadcast(w, yt.shape, "sample_weight", "y_true")
        wt = yt * w
        d = yt - p
        self.sum += wt.sum(axis=0)
        self.squared_sum += (yt * wt).sum(axis=0)
        self.total_mse += (d * d * w).sum(axis=0)
        self.count += w.sum(axis=0)
        self.num_samples[()] += yt.size

    def result(self) -> float | NDArray[np.float64]:
        if not self._built:
            return 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = self.sum / self.count
            total = self.squared_sum - self.sum * mean  # sum of w (y - mean)^2 per output
            raw = 1 - self.total_mse / total
            raw[np.isinf(raw)] = 0.0
            r2: Any
            if self.class_aggregation == "uniform_average":
                r2 = float(np.mean(raw))
            elif self.class_aggregation == "variance_weighted_average":
                r2 = float(np.sum(total * raw) / np.sum(total))
            else:
                r2 = raw
        p, n = self.num_regressors, float(self.num_samples)
        if p:
            if p > n - 1:
                warnings.warn("More independent predictors than datapoints in adjusted R2 "
                              "score. Falling back to standard R2 score.", stacklevel=2)
            elif p == n - 1:
                warnings.warn("Division by zero in Adjusted R2 score. Falling back to "
                              "standard R2 score.", stacklevel=2)
            else:
                r2 = 1.0 - (1.0 - r2) * (n - 1.0) / (n - p - 1.0)
        return r2  # type: ignore[no-any-return]

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype,
                "class_aggregation": self.class_aggregation,
                "num_regressors": self.num_regressors}


# ---- names ------------------------------------------------------------------------------------

_CLASSES: tuple[type[Metric], ...] = (
    Mean, MeanSquaredError, RootMeanSquaredError, MeanAbsoluteError, AUC, Precision, Recall,
    Accuracy, BinaryAccuracy, CategoricalAccuracy, SparseCategoricalAccuracy,
    TopKCategoricalAccuracy, SparseTopKCategoricalAccuracy,
    TruePositives, FalsePositives, TrueNegatives, FalseNegatives, PrecisionAtRecall,
    RecallAtPrecision, SensitivityAtSpecificity, SpecificityAtSensitivity, FBetaScore,
    F1Score, R2Score)
# Keras' ALL_OBJECTS_DICT (for these classes): class names, their snake case, and the aliases
_BY_NAME: dict[str, type[Metric]] = {
    **{c.__name__: c for c in _CLASSES}, **{_snake_case(c.__name__): c for c in _CLASSES},
    "mse": MeanSquaredError, "MSE": MeanSquaredError,
    "mae": MeanAbsoluteError, "MAE": MeanAbsoluteError}


def _accuracy(identifier: str, loss: Loss | None, n_out: int | None) -> Metric:
    """'accuracy' in compile(), as Keras 3's compile_utils.get_metric: binary accuracy for one
    output, sparse categorical accuracy for integer labels, categorical otherwise."""
    cls: type[Metric]
    if n_out == 1:
        cls = BinaryAccuracy
    elif getattr(loss, "sparse", False):
        cls = SparseCategoricalAccuracy
    else:
        cls = CategoricalAccuracy
    return cls(name=identifier)


def get(identifier: Any, loss: Loss | None = None, n_out: int | None = None) -> Metric:
    """A metric from a name, a config dict (see `serialize`), a Metric class or instance, as
    `keras.metrics.get` (a name: a class name or its snake case, or "mse" / "mae"; "accuracy"
    is `Accuracy`).

    With `loss` (and the model's output width `n_out`), as Keras' compile() resolves the
    metrics it is given: "accuracy" / "acc" (any case) by the targets and outputs (see the
    module), and a name names the metric (metrics=["mse"] logs "mse")."""
    compiling = loss is not None
    if compiling and isinstance(identifier, str) and identifier.lower() in ("accuracy", "acc"):
        return _accuracy(identifier, loss, n_out)
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str) and identifier in _BY_NAME:
        # (compiling: named by the string, as Keras names it, e.g. "mse")
        return _BY_NAME[identifier](name=identifier) if compiling else _BY_NAME[identifier]()
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    names = sorted(set(_BY_NAME) | ({"acc"} if compiling else set()))
    raise ValueError(f"Expected metrics from {names}, a config dict or a "
                     f"fastnn.metrics.Metric. Received: {identifier!r}")


def serialize(metric: Metric | str) -> dict[str, Any] | str:
    """A metric as Keras' serialize_keras_object writes it:
    {"module": "keras.metrics", "class_name", "config", "registered_name": None}; a name
    stays a name."""
    if isinstance(metric, str):
        return metric
    if not isinstance(metric, Metric):
        raise TypeError(f"Expected a fastnn.metrics.Metric or a name. Received: {metric!r}")
    return {"module": "keras.metrics", "class_name": type(metric).__name__,
            "config": metric.get_config(), "registered_name": None}


def deserialize(config: dict[str, Any] | str) -> Metric:
    """The metric `serialize` wrote (a dict with "class_name" and "config", or a name)."""
    if isinstance(config, str):
        return get(config)
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ValueError(f"Expected a metric config {{'class_name', 'config'}} or a name. "
                         f"Received: {config!r}")
    cls = {c.__name__: c for c in _CLASSES}.get(config["class_name"])
    if cls is None:
        raise ValueError(f"Expected class_name from {sorted(c.__name__ for c in _CLASSES)}. "
                         f"Received: class_name={config['class_name']!r}")
    cfg = config.get("config") or {}
    if not isinstance(cfg, dict):
        raise ValueError(f"Expected the metric's config to be a dict. Received: {cfg!r}")
    return cls.from_config(cfg)
