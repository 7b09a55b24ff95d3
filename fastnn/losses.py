"""Losses, named as in `keras.losses` (Keras 3).

Functions (`mean_squared_error(y_true, y_pred)`, ...) return the per-sample loss, reduced over
the last axis: shape `y_pred.shape[:-1]`.  Loss objects (`MeanSquaredError()`, ...) weight
those values by `sample_weight` and reduce them (`reduction`), as Keras' `Loss.__call__`.

Per sample, over the last axis (eps = 1e-7, Keras' backend.epsilon()):

    categorical_crossentropy:  q = p / sum(p), -sum t log clip(q, eps, 1 - eps)
    sparse_categorical_crossentropy: the same with integer labels
    binary_crossentropy:       mean -(t log c + (1 - t) log(1 - c)), c = clip(p, eps, 1 - eps);
                               from logits z: mean softplus(z) - t z
    mean_squared_error:        mean (p - t)^2          mean_absolute_error: mean |p - t|
    huber:                     e = p - t, mean (|e| <= delta ? e^2 / 2 : delta |e| - delta^2 / 2)
    log_cosh:                  mean e + softplus(-2 e) - log 2
    kl_divergence:             sum tc log(tc / pc), tc = clip(t, eps, 1), pc = clip(p, eps, 1)
    poisson:                   mean p - t log(p + eps)
    hinge:                     mean max(1 - t p, 0), t in {0, 1} turned into {-1, 1}
    categorical_hinge:         max(max((1 - t) p) - sum t p + 1, 0)
    cosine_similarity:         -sum t_hat p_hat, x_hat = x / max(|x|, eps)
    mean_absolute_percentage_error: 100 mean |t - p| / max(|t|, eps)
    mean_squared_logarithmic_error: mean (log(max(p, eps) + 1) - log(max(t, eps) + 1))^2
    squared_hinge:             mean max(1 - t p, 0)^2, t in {0, 1} turned into {-1, 1}

Each loss computes its values, gradient and weighted reduction in one kernel call
(`fnn_loss_backward` in src_c/fastnn.h).  When the model's last layer is a softmax, the
crossentropies give the gradient with respect to the softmax input directly (the fused path).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, cast

import numpy as np

from fastnn import _codes, backend

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, DTypeLike, NDArray

_SOFTMAX = _codes.ACTIVATIONS["softmax"]
# Keras 3's reductions (keras/src/losses/loss.py standardize_reduction)
REDUCTIONS = ("sum_over_batch_size", "sum", None, "none", "mean", "mean_with_sample_weight")


def _check_reduction(reduction: Any) -> str | None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"Invalid value for argument `reduction`. Expected one of "
                         f"{list(REDUCTIONS)}. Received: reduction={reduction!r}")
    return cast("str | None", reduction)


class Loss:
    """Loss base class, as `keras.losses.Loss(name=None, reduction="sum_over_batch_size",
    dtype=None)`.

    `__call__(y_true, y_pred, sample_weight=None)` computes the per-sample losses (`call`),
    weights them and reduces them by `reduction`:
      "sum_over_batch_size" / "mean": sum(w l) / (number of per-sample values), the batch size
        for 2-D predictions: Keras divides by the batch size, not by the sum of the weights;
      "sum": sum(w l);  "mean_with_sample_weight": sum(w l) / sum(w);
      None / "none": w l, unreduced.
    A scalar result is a Python float.  `sample_weight` broadcasts against the per-sample
    losses as in Keras (a scalar, (batch,) or (batch, 1)).  `dtype`: the dtype of the
    computation; None keeps float32/float64 inputs (Keras: its floatx, float32).

    A subclass defines `call(y_true, y_pred)` (NumPy, per-sample values); the built-in losses
    run it in the kernel of their code (fastnn/_codes.py LOSSES), which also gives the
    gradient the training step takes (`value_and_grad`), and `fused_code` where a final softmax
    fuses into that gradient."""

    code: int | None = None
    fused_code: int | None = None
    sparse = False     # targets are integer labels (batch,)
    from_logits = False

    def __init__(self, name: str | None = None, reduction: str | None = "sum_over_batch_size",
                 dtype: DTypeLike | None = None) -> None:
        self.name = name or _snake(type(self).__name__)
        self.reduction = _check_reduction(reduction)
        self._dtype = None if dtype is None else np.dtype(dtype)
        if self._dtype is not None and self._dtype not in (np.float32, np.float64):
            raise ValueError(f"Expected dtype float32 or float64. Received: dtype={dtype!r}")

    @property
    def dtype(self) -> str | None:
        return None if self._dtype is None else self._dtype.name

    @property
    def softmax_logits(self) -> bool:
        """Whether the predictions are logits that the training step turns into probabilities
        with a softmax before the kernel (the categorical crossentropies from logits)."""
        return self.from_logits and self.fused_code is not None

    @property
    def kernel_only(self) -> bool:
        """Whether the kernel of `code` alone computes this loss of a training batch (no label
        smoothing, Huber delta 1, no ignored class, a batch-size mean): the compiled step then
        may run it; else the step calls `value_and_grad`."""
        return self.code is not None and self.reduction in ("sum_over_batch_size", "mean")

    # ---- Keras API -----------------------------------------------------------------------

    def __call__(self, y_true: ArrayLike, y_pred: ArrayLike,
                 sample_weight: ArrayLike | None = None) -> Any:
        """The weighted, reduced loss (a float), or the weighted per-sample values for
        reduction None / "none"."""
        values, mask, run = self._values(y_true, y_pred)
        sw, out_shape = _broadcast_weights(sample_weight, values)
        m = None if mask is None else mask.reshape(-1)
        w = _reduction_weights(sw, m, self.reduction, values.size, values.dtype)
        if self.reduction in (None, "none"):
            return (values.reshape(-1) * w).reshape(out_shape) if w is not None else values
        if values.size == 0:
            raise ValueError("Expected at least one sample. Received: y_pred with no samples")
        return float(run(w) if run is not None
                     else (values.reshape(-1).astype(np.float64) * (1 if w is None else w)).sum()
                     / values.size)

    def call(self, y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[Any]:
        """The per-sample losses, shape y_pred.shape[:-1] (Keras' `call`)."""
        if self.code is None:
            raise NotImplementedError(f"{type(self).__name__} defines no call(y_true, y_pred)")
        return self._values(y_true, y_pred)[0]

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Loss:
        return cls(**config)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.get_config()}>"

    # ---- the training step's side (fastnn/_step.py) --------------------------------------

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

    def value_and_grad(self, dp: NDArray[Any], p: NDArray[Any], t: NDArray[Any],
                       sample_weight: NDArray[Any] | None = None) -> float:
        """The reduced loss of the batch p (n, k) against prepared targets t; writes
        dp := d loss / d p.  sample_weight: (n,) of p's dtype, or None."""
        return self._step_kernel(dp, p, t, sample_weight, self._code())

    def value(self, p: NDArray[Any], t: NDArray[Any],
              sample_weight: NDArray[Any] | None = None) -> float:
        return self._step_kernel(None, p, t, sample_weight, self._code())

    def fused_value_and_grad(self, dz: NDArray[Any], p: NDArray[Any], t: NDArray[Any],
                             sample_weight: NDArray[Any] | None = None) -> float:
        """p = softmax(z): the reduced loss; writes dz := d loss / d z."""
        if self.fused_code is None:
            raise ValueError(f"{type(self).__name__} has no gradient fused with a softmax")
        return self._step_kernel(dz, p, t, sample_weight, self.fused_code)

    # ---- one kernel call ----------------------------------------------------------------

    def _code(self) -> int:
        if self.code is None:
            raise NotImplementedError(f"{type(self).__name__} has no kernel: it cannot train")
        return self.code

    def _kernel_targets(self, t: NDArray[Any], k: int
                        ) -> tuple[NDArray[Any], NDArray[Any] | None]:
        """The targets the kernel takes (label smoothing applied) and the mask of the samples
        that count (ignore_class), or None."""
        return t, None

    def _kernel(self, dp: NDArray[Any] | None, p: NDArray[Any], t: NDArray[Any],
                sw: NDArray[Any] | None, per_sample: NDArray[Any] | None, code: int) -> float:
        return cast(float, backend.K.loss_backward(dp, p, t, code, sw, per_sample))

    def _step_kernel(self, dp: NDArray[Any] | None, p: NDArray[Any], t: NDArray[Any],
                     sample_weight: NDArray[Any] | None, code: int) -> float:
        if self.reduction in (None, "none"):
            raise ValueError(f"Expected a loss reduced to a scalar for training. Received: "
                             f"reduction={self.reduction!r}")
        t, mask = self._kernel_targets(t, p.shape[1])
        w = _reduction_weights(sample_weight, mask, self.reduction, len(p), p.dtype)
        return self._kernel(dp, p, t, w, None, code)

    def _values(self, y_true: ArrayLike, y_pred: ArrayLike
                ) -> tuple[NDArray[Any], NDArray[Any] | None,
                           Callable[[NDArray[Any] | None], float] | None]:
        """(per-sample losses of shape y_pred.shape[:-1], the mask of the samples that count or
        None, run(w): the kernel's weighted mean sum(w l) / count)."""
        if self.code is None:
            return np.asarray(self.call(y_true, y_pred)), None, None
        p = _as_float(y_pred, "y_pred", self._dtype)
        if self.sparse:
            t = np.asarray(y_true)
            if t.ndim == p.ndim and t.ndim and t.shape[-1] == 1:
                t = t[..., 0]
            if p.ndim < 1 or t.shape != p.shape[:-1]:
                raise ValueError(f"Expected y_true of integer labels with shape "
                                 f"{p.shape[:-1]} (y_pred.shape[:-1]). "
                                 f"Received: y_true.shape={t.shape}")
            t = _labels(t, p.shape[-1], getattr(self, "ignore_class", None), self.name)
        else:
            t, p = _same_rank(_as_float(y_true, "y_true", p.dtype), p)
            if t.shape != p.shape or p.ndim < 1:
                want = f"(batch, {', '.join(map(str, p.shape[1:]))})" if p.ndim > 1 else p.shape
                raise ValueError(f"Expected y with shape {want} to match y_pred for "
                                 f"{self.name}. Received: y.shape={t.shape}, "
                                 f"y_pred.shape={p.shape}")
        k = p.shape[-1]
        batch = p.shape[:-1]
        p2 = np.ascontiguousarray(p.reshape(-1, k))
        t2 = np.ascontiguousarray(t.reshape(-1) if self.sparse else t.reshape(-1, k))
        if self.softmax_logits:
            p2 = _softmax(p2)
        t2, mask = self._kernel_targets(t2, k)
        per = np.empty(len(p2), p2.dtype)
        if len(p2) == 0:
            return per.reshape(batch), None, None
        self._kernel(None, p2, t2, None, per, self._code())
        if mask is not None:
            per[~mask] = 0  # Keras: the ignored samples' losses are 0 (and masked)
            mask = mask.reshape(batch)

        def run(w: NDArray[Any] | None) -> float:
            return self._kernel(None, p2, t2, w, None, self._code())
        return per.reshape(batch), mask, run


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() and i else c.lower()
                   for i, c in enumerate(name))


def _as_float(a: ArrayLike, name: str, dtype: DTypeLike | None) -> NDArray[Any]:
    a = np.asarray(a)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"Expected {name} to hold numbers. Received: {name}.dtype={a.dtype}")
    dtype = dtype or (a.dtype if a.dtype in (np.float32, np.float64) else np.float32)
    return np.ascontiguousarray(a, dtype=dtype)


def _softmax(z: NDArray[Any]) -> NDArray[Any]:
    p = np.empty_like(z)
    backend.K.act_forward(p, z, _SOFTMAX, ())
    return p


def _same_rank(t: NDArray[Any], p: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """Keras' squeeze_or_expand_to_same_rank(y_true, y_pred): a trailing axis of 1 squeezed
    (or the rank-1 one expanded) when the ranks differ by one."""
    if t.ndim == p.ndim + 1 and t.shape[-1] == 1:
        t = t[..., 0] if p.ndim != 1 else t
        p = p[..., None] if p.ndim == 1 else p
    elif p.ndim == t.ndim + 1 and p.shape[-1] == 1:
        p = p[..., 0] if t.ndim != 1 else p
        t = t[..., None] if t.ndim == 1 else t
    return t, p


def _labels(y: NDArray[Any], k: int, ignore_class: int | None, name: str) -> NDArray[Any]:
    """Integer class labels as int64, each in [0, k) or ignore_class."""
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or np.any(np.mod(y, 1) != 0):
            raise ValueError(f"Expected integer class labels for {name}. "
                             f"Received: y.dtype={y.dtype}")
    bad = (y < 0) | (y >= k)
    if ignore_class is not None:
        bad &= y != ignore_class
    if np.any(bad):  # checked before the cast to int64
        raise ValueError(f"Expected labels in [0, {k}) for {name} (the model has {k} "
                         f"outputs). Received: a label {y[bad].flat[0]}")
    return np.ascontiguousarray(y.astype(np.int64))


def _broadcast_weights(sample_weight: ArrayLike | None, values: NDArray[Any]
                       ) -> tuple[NDArray[Any] | None, tuple[int, ...]]:
    """sample_weight against the per-sample values as Keras' reduce_weighted_values: ranks
    matched by squeeze_or_expand_to_same_rank, then broadcast.  Returns (a weight per value,
    flat, or None; the shape of the weighted values)."""
    if sample_weight is None:
        return None, values.shape
    sw = _as_float(sample_weight, "sample_weight", values.dtype)
    v = values
    if v.ndim == sw.ndim + 1 and v.ndim and v.shape[-1] == 1:
        v, sw = (v, sw[..., None]) if sw.ndim == 1 else (v[..., 0], sw)
    elif sw.ndim == v.ndim + 1 and sw.shape[-1] == 1:
        v, sw = (v[..., None], sw) if v.ndim == 1 else (v, sw[..., 0])
    try:
        shape = np.broadcast_shapes(v.shape, sw.shape)
    except ValueError:
        shape = None
    if shape is None or math.prod(shape) != values.size:
        raise ValueError(f"Expected sample_weight broadcastable to the per-sample losses of "
                         f"shape {values.shape}. Received: sample_weight.shape={sw.shape}")
    return np.ascontiguousarray(np.broadcast_to(sw, shape).reshape(-1)), shape


def _reduction_weights(sw: NDArray[Any] | None, mask: NDArray[Any] | None,
                       reduction: str | None, n: int, dtype: DTypeLike) -> NDArray[Any] | None:
    """Keras' reduction (apply_mask + reduce_values of keras/src/losses/loss.py) as weights w
    (n,) with reduced loss = sum_i w_i l_i / n, the kernel's return value; None: all ones.
      mask (ignore_class), for the batch means: weight n / valid on the valid samples (the
        mean over the valid ones), else 0/1;
      "sum": n w;  "mean_with_sample_weight": n w / sum(w) (0 if that sum is 0).
    For None / "none": the weights of the values."""
    w = sw
    if mask is not None:
        m = mask.astype(dtype)
        if reduction in ("mean", "sum_over_batch_size"):
            valid = float(m.sum())
            m *= m.dtype.type(n / valid if valid else 0.0)
        w = m if w is None else w * m
    scale = 1.0
    if reduction == "sum":
        scale = float(n)
    elif reduction == "mean_with_sample_weight" and w is not None:
        s = float(w.sum(dtype=np.float64))
        scale = n / s if s else 0.0
    if scale != 1.0:
        w = np.full(n, scale, dtype) if w is None else w * np.asarray(scale, w.dtype)
    return None if w is None else np.ascontiguousarray(w, dtype=dtype)


# ---- the losses --------------------------------------------------------------------------

class _Crossentropy(Loss):
    """from_logits / label_smoothing / axis of the categorical and binary crossentropies."""

    _smoothing_center: float | None = None  # binary: toward 0.5; categorical: 1 / classes

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1,
                 reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = _check_bool(from_logits, "from_logits")
        if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
                or not 0 <= label_smoothing <= 1:
            raise ValueError(f"Expected label_smoothing to be a float in [0, 1]. "
                             f"Received: label_smoothing={label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self.axis = _check_axis(axis)

    @property
    def kernel_only(self) -> bool:
        return super().kernel_only and not self.label_smoothing

    def _kernel_targets(self, t: NDArray[Any], k: int
                        ) -> tuple[NDArray[Any], NDArray[Any] | None]:
        ls = self.label_smoothing
        if not ls:
            return t, None
        one = t.dtype.type
        if self._smoothing_center is None:  # categorical: t (1 - ls) + ls / k
            return t * one(1.0 - ls) + one(ls) / one(k), None
        return t * one(1.0 - ls) + one(0.5 * ls), None  # binary: t (1 - ls) + ls / 2

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "from_logits": self.from_logits,
                "label_smoothing": self.label_smoothing, "axis": self.axis}


def _check_bool(v: Any, name: str) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise TypeError(f"Expected {name} to be a bool. Received: {name}={v!r}")
    return bool(v)


def _check_axis(axis: Any) -> int:
    if isinstance(axis, bool) or axis != -1:
        raise ValueError(f"Expected axis=-1 (fastnn reduces over the last axis). "
                         f"Received: axis={axis!r}")
    return -1


class CategoricalCrossentropy(_Crossentropy):
    """Crossentropy between one-hot (or soft) targets and predicted probabilities.

    from_logits=True: the predictions are logits and a softmax is applied first (Keras takes
    log_softmax directly; fastnn clips the softmax's probabilities at 1e-7 as for
    from_logits=False, which gives the same loss unless a probability falls below 1e-7).
    label_smoothing ls: targets t (1 - ls) + ls / classes.  axis: -1 only."""

    code = _codes.LOSSES["categorical_crossentropy"]
    fused_code = _codes.LOSSES["softmax_crossentropy"]

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1,
                 reduction: str | None = "sum_over_batch_size",
                 name: str = "categorical_crossentropy", dtype: DTypeLike | None = None) -> None:
        super().__init__(from_logits, label_smoothing, axis, reduction, name, dtype)


class BinaryCrossentropy(_Crossentropy):
    """Crossentropy between 0/1 targets and predicted probabilities, per output, averaged
    over the last axis.  from_logits=True: the predictions are logits (the kernel takes them
    with the sigmoid fused, and the gradient is with respect to the logits).
    label_smoothing ls: targets t (1 - ls) + ls / 2.  axis: -1 only."""

    _smoothing_center = 0.5

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1,
                 reduction: str | None = "sum_over_batch_size",
                 name: str = "binary_crossentropy", dtype: DTypeLike | None = None) -> None:
        super().__init__(from_logits, label_smoothing, axis, reduction, name, dtype)
        self.code = _codes.LOSSES["sigmoid_binary_crossentropy" if self.from_logits
                                  else "binary_crossentropy"]


class SparseCategoricalCrossentropy(Loss):
    """Crossentropy between integer class labels and predicted probabilities (logits with
    from_logits=True, as CategoricalCrossentropy).  ignore_class: a label whose samples count
    for nothing: their loss is 0, and the batch mean is over the other samples (Keras' mask).
    axis: -1 only."""

    code = _codes.LOSSES["sparse_categorical_crossentropy"]
    fused_code = _codes.LOSSES["sparse_softmax_crossentropy"]
    sparse = True

    def __init__(self, from_logits: bool = False, ignore_class: int | None = None,
                 reduction: str | None = "sum_over_batch_size", axis: int = -1,
                 name: str = "sparse_categorical_crossentropy",
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = _check_bool(from_logits, "from_logits")
        if ignore_class is not None and (isinstance(ignore_class, bool)
                                         or not isinstance(ignore_class, (int, np.integer))):
            raise ValueError(f"Expected ignore_class to be an int or None. "
                             f"Received: ignore_class={ignore_class!r}")
        self.ignore_class = None if ignore_class is None else int(ignore_class)
        self.axis = _check_axis(axis)

    @property
    def kernel_only(self) -> bool:
        return super().kernel_only and self.ignore_class is None

    def prepare_targets(self, y: ArrayLike, n_out: int, dtype: DTypeLike) -> NDArray[Any]:
        """Integer class labels (batch,) as int64, checked against the model's outputs."""
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"Expected y of integer class labels, shape (batch,). "
                             f"Received: y.shape={y.shape}")
        return _labels(y, n_out, self.ignore_class, self.name)

    def _kernel_targets(self, t: NDArray[Any], k: int
                        ) -> tuple[NDArray[Any], NDArray[Any] | None]:
        if self.ignore_class is None:
            return t, None
        mask = t != self.ignore_class
        return np.where(mask, t, 0), mask

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "from_logits": self.from_logits,
                "ignore_class": self.ignore_class}


class MeanSquaredError(Loss):
    """Mean of (y_pred - y_true)^2 over the last axis."""

    code = _codes.LOSSES["mean_squared_error"]

    def __init__(self, reduction: str | None = "sum_over_batch_size",
                 name: str = "mean_squared_error", dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)


class MeanAbsoluteError(Loss):
    """Mean of |y_pred - y_true| over the last axis (gradient sign(y_pred - y_true), 0 at 0)."""

    code = _codes.LOSSES["mean_absolute_error"]

    def __init__(self, reduction: str | None = "sum_over_batch_size",
                 name: str = "mean_absolute_error", dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)


class Huber(Loss):
    """Huber loss: e = y_pred - y_true, mean over the last axis of e^2 / 2 where
    |e| <= delta, else delta |e| - delta^2 / 2.  (Keras' Huber.get_config leaves delta out,
    so a Keras round trip resets it to 1; fastnn's config keeps it.)"""

    code = _codes.LOSSES["huber"]

    def __init__(self, delta: float = 1.0, reduction: str | None = "sum_over_batch_size",
                 name: str = "huber_loss", dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not delta > 0 \
                or not math.isfinite(delta):
            raise ValueError(f"Expected delta to be a positive float. Received: delta={delta!r}")
        self.delta = float(delta)

    @property
    def kernel_only(self) -> bool:
        return super().kernel_only and self.delta == 1.0

    def _kernel(self, dp: NDArray[Any] | None, p: NDArray[Any], t: NDArray[Any],
                sw: NDArray[Any] | None, per_sample: NDArray[Any] | None, code: int) -> float:
        return cast(float, backend.K.huber_backward(dp, p, t, self.delta, sw, per_sample))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "delta": self.delta}


class LogCosh(Loss):
    """log(cosh(y_pred - y_true)) averaged over the last axis, in Keras' form
    e + softplus(-2 e) - log 2."""

    code = _codes.LOSSES["log_cosh"]

    def __init__(self, reduction: str | None = "sum_over_batch_size", name: str = "log_cosh",
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)


class KLDivergence(Loss):
    """Kullback-Leibler divergence, summed over the last axis: y_true and y_pred are clipped
    to [1e-7, 1] first."""

    code = _codes.LOSSES["kl_divergence"]

    def __init__(self, reduction: str | None = "sum_over_batch_size",
                 name: str = "kl_divergence", dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)


class Poisson(Loss):
    """Mean over the last axis of y_pred - y_true log(y_pred + 1e-7)."""

    code = _codes.LOSSES["poisson"]

    def __init__(self, reduction: str | None = "sum_over_batch_size", name: str = "poisson",
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)


class Hinge(Loss):
    """Mean over the last axis of max(1 - y_true y_pred, 0).  y_true is -1 or 1; as in
    Keras, when every target of the call (of the batch, in training) is 0 or 1 they are
    turned into -1 and 1 first."""

    code = _codes.LOSSES["hinge"]

    def __init__(self, reduction: str | None = "sum_over_batch_size", name: str = "hinge",
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)


class CategoricalHinge(Loss):
    """max(neg - pos + 1, 0), pos = sum(y_true y_pred), neg = max((1 - y_true) y_pred)."""

    code = _codes.LOSSES["categorical_hinge"]

    def __init__(self, reduction: str | None = "sum_over_batch_size",
                 name: str = "categorical_hinge", dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)


class CosineSimilarity(Loss):
    """-sum(l2_normalize(y_true) l2_normalize(y_pred)) over the last axis, x / max(|x|, 1e-7)
    (0 when either is a zero vector).  axis: -1 only (Keras' get_config leaves it out)."""

    code = _codes.LOSSES["cosine_similarity"]

    def __init__(self, axis: int = -1, reduction: str | None = "sum_over_batch_size",
                 name: str = "cosine_similarity", dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.axis = _check_axis(axis)


class MeanAbsolutePercentageError(Loss):
    """100 times the mean over the last axis of |y_true - y_pred| / max(|y_true|, 1e-7)."""

    code = _codes.LOSSES["mean_absolute_percentage_error"]

    def __init__(self, reduction: str | None = "sum_over_batch_size",
                 name: str = "mean_absolute_percentage_error",
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)


class MeanSquaredLogarithmicError(Loss):
    """Mean over the last axis of (log(max(y_pred, 1e-7) + 1) - log(max(y_true, 1e-7) + 1))^2:
    values <= 1e-7 count as 1e-7 (no gradient flows to a y_pred there)."""

    code = _codes.LOSSES["mean_squared_logarithmic_error"]

    def __init__(self, reduction: str | None = "sum_over_batch_size",
                 name: str = "mean_squared_logarithmic_error",
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)


class SquaredHinge(Loss):
    """Mean over the last axis of max(1 - y_true y_pred, 0)^2.  y_true is -1 or 1; as in
    Keras, when every target of the call (of the batch, in training) is 0 or 1 they are
    turned into -1 and 1 first."""

    code = _codes.LOSSES["squared_hinge"]

    def __init__(self, reduction: str | None = "sum_over_batch_size",
                 name: str = "squared_hinge", dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)


# ---- the functions: per-sample values -----------------------------------------------------

def categorical_crossentropy(y_true: ArrayLike, y_pred: ArrayLike, from_logits: bool = False,
                             label_smoothing: float = 0.0, axis: int = -1) -> NDArray[Any]:
    return CategoricalCrossentropy(from_logits, label_smoothing, axis).call(y_true, y_pred)


def sparse_categorical_crossentropy(y_true: ArrayLike, y_pred: ArrayLike,
                                    from_logits: bool = False, ignore_class: int | None = None,
                                    axis: int = -1) -> NDArray[Any]:
    return SparseCategoricalCrossentropy(from_logits, ignore_class, axis=axis).call(y_true, y_pred)


def binary_crossentropy(y_true: ArrayLike, y_pred: ArrayLike, from_logits: bool = False,
                        label_smoothing: float = 0.0, axis: int = -1) -> NDArray[Any]:
    return BinaryCrossentropy(from_logits, label_smoothing, axis).call(y_true, y_pred)


def mean_squared_error(y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[Any]:
    return MeanSquaredError().call(y_true, y_pred)


def mean_absolute_error(y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[Any]:
    return MeanAbsoluteError().call(y_true, y_pred)


def huber(y_true: ArrayLike, y_pred: ArrayLike, delta: float = 1.0) -> NDArray[Any]:
    return Huber(delta).call(y_true, y_pred)


def log_cosh(y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[Any]:
    return LogCosh().call(y_true, y_pred)


def kl_divergence(y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[Any]:
    return KLDivergence().call(y_true, y_pred)


def poisson(y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[Any]:
    return Poisson().call(y_true, y_pred)


def hinge(y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[Any]:
    return Hinge().call(y_true, y_pred)


def categorical_hinge(y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[Any]:
    return CategoricalHinge().call(y_true, y_pred)


def cosine_similarity(y_true: ArrayLike, y_pred: ArrayLike, axis: int = -1) -> NDArray[Any]:
    return CosineSimilarity(axis).call(y_true, y_pred)


def mean_absolute_percentage_error(y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[Any]:
    return MeanAbsolutePercentageError().call(y_true, y_pred)


def mean_squared_logarithmic_error(y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[Any]:
    return MeanSquaredLogarithmicError().call(y_true, y_pred)


def squared_hinge(y_true: ArrayLike, y_pred: ArrayLike) -> NDArray[Any]:
    return SquaredHinge().call(y_true, y_pred)


# Keras' aliases (keras.losses ALL_OBJECTS_DICT)
mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error
kld = KLD = kl_divergence
bce = BCE = binary_crossentropy
mape = MAPE = mean_absolute_percentage_error
msle = MSLE = mean_squared_logarithmic_error

_CLASSES: dict[str, type[Loss]] = {c.__name__: c for c in (
    CategoricalCrossentropy, SparseCategoricalCrossentropy, BinaryCrossentropy,
    MeanSquaredError, MeanAbsoluteError, Huber, LogCosh, KLDivergence, Poisson, Hinge,
    CategoricalHinge, CosineSimilarity, MeanAbsolutePercentageError, MeanSquaredLogarithmicError,
    SquaredHinge)}
_FUNCTIONS: dict[str, Callable[..., NDArray[Any]]] = {f.__name__: f for f in (
    categorical_crossentropy, sparse_categorical_crossentropy, binary_crossentropy,
    mean_squared_error, mean_absolute_error, huber, log_cosh, kl_divergence, poisson, hinge,
    categorical_hinge, cosine_similarity, mean_absolute_percentage_error,
    mean_squared_logarithmic_error, squared_hinge)}
_ALIASES = {"mse": "mean_squared_error", "MSE": "mean_squared_error",
            "mae": "mean_absolute_error", "MAE": "mean_absolute_error",
            "kld": "kl_divergence", "KLD": "kl_divergence",
            "bce": "binary_crossentropy", "BCE": "binary_crossentropy",
            "mape": "mean_absolute_percentage_error", "MAPE": "mean_absolute_percentage_error",
            "msle": "mean_squared_logarithmic_error", "MSLE": "mean_squared_logarithmic_error"}
# each function's class (its loss object), and each class's default name
_CLASS_OF_FUNCTION = {"categorical_crossentropy": CategoricalCrossentropy,
                      "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
                      "binary_crossentropy": BinaryCrossentropy,
                      "mean_squared_error": MeanSquaredError,
                      "mean_absolute_error": MeanAbsoluteError, "huber": Huber,
                      "log_cosh": LogCosh, "kl_divergence": KLDivergence, "poisson": Poisson,
                      "hinge": Hinge, "categorical_hinge": CategoricalHinge,
                      "cosine_similarity": CosineSimilarity,
                      "mean_absolute_percentage_error": MeanAbsolutePercentageError,
                      "mean_squared_logarithmic_error": MeanSquaredLogarithmicError,
                      "squared_hinge": SquaredHinge}
_CLASS_OF_NAME = {**_CLASS_OF_FUNCTION, "huber_loss": Huber}
NAMES = sorted({*_CLASSES, *_FUNCTIONS, *_ALIASES})


def _loss_class(name: str) -> type[Loss] | None:
    name = _ALIASES.get(name, name)
    return _CLASSES.get(name) or _CLASS_OF_FUNCTION.get(name)


def get(identifier: Any) -> Loss:
    """A loss object from a name (a Keras function, class or alias: "mse",
    "CategoricalCrossentropy", ...), a `serialize` dict, a Loss instance or class, or one of
    this module's functions.  Unlike Keras, which returns the function itself for a function's
    name, fastnn always returns a Loss object (the function's class with its defaults): the
    training step needs its kernel."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    name = getattr(identifier, "__name__", identifier)
    cls = _loss_class(name) if isinstance(name, str) else None
    if cls is None or (callable(identifier) and not isinstance(identifier, type)
                       and identifier is not _FUNCTIONS.get(name)):
        raise ValueError(f"Expected loss to be one of {NAMES}, a fastnn.losses.Loss or its "
                         f"serialized config. Received: loss={identifier!r}")
    return cls()


def serialize(loss: Loss | Callable[..., Any]) -> dict[str, Any]:
    """Keras' serialized form: a loss object by its class and `get_config()`, a function by
    its name."""
    if isinstance(loss, Loss):
        cls = type(loss).__name__
        if _CLASSES.get(cls) is not type(loss):
            raise ValueError(f"Expected a fastnn loss to serialize. Received: {loss!r}")
        return {"module": "keras.losses", "class_name": cls, "config": loss.get_config(),
                "registered_name": None}
    name = getattr(loss, "__name__", None)
    if name not in _FUNCTIONS or _FUNCTIONS[name] is not loss:
        raise ValueError(f"Expected a fastnn loss or loss function. Received: {loss!r}")
    return {"module": "builtins", "class_name": "function", "config": name,
            "registered_name": "function"}


def deserialize(config: Any) -> Loss:
    """The loss of `serialize(loss)` (or a name), as a Loss object (see `get`)."""
    if isinstance(config, str):
        return get(config)
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"Expected a serialized loss {{'class_name': ..., 'config': ...}}. "
                         f"Received: {config!r}")
    cls, cfg = config["class_name"], config.get("config")
    if cls == "function":
        return get(cfg)
    if cls not in _CLASSES or not isinstance(cfg, dict):
        raise ValueError(f"Expected a loss class in {sorted(_CLASSES)} with a config dict. "
                         f"Received: {config!r}")
    return _from_class(_CLASSES[cls], cfg)


def _from_class(cls: type[Loss], cfg: dict[str, Any]) -> Loss:
    try:
        return cls.from_config(dict(cfg))
    except TypeError as e:
        raise ValueError(f"Expected a config of {cls.__name__}. Received: {cfg!r} ({e})") from None


def from_config(cfg: Any) -> Loss:
    """The loss of a saved compile config: `serialize(loss)`, or `loss.get_config()` of a
    loss by its default name (fastnn's files: {'name': 'categorical_crossentropy',
    'from_logits': ...}).  Every value is checked."""
    if isinstance(cfg, dict) and "class_name" in cfg:
        return deserialize(cfg)
    name = cfg.get("name") if isinstance(cfg, dict) else None
    cls = _CLASS_OF_NAME.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"Expected a loss config {{'name': one of {sorted(_CLASS_OF_NAME)}, "
                         f"...}}. Received: {cfg!r}")
    cfg = dict(cast("dict[str, Any]", cfg))
    if "reduction" not in cfg and set(cfg) <= {"name", "from_logits"}:
        # the files of the fastnn before Keras' configs: {name, from_logits} of every loss
        from_logits = cfg.pop("from_logits", False)
        if not isinstance(from_logits, bool):
            raise TypeError(f"Expected from_logits to be a bool. "
                            f"Received: from_logits={from_logits!r}")
        if from_logits:
            cfg["from_logits"] = True
    return _from_class(cls, cfg)
