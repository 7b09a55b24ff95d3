"""Trusting a backward pass: analytic gradients against central finite differences.

    worst = fastnn.gradcheck(model, x, y)          # {"dense/kernel": 3e-9, ...}
    err = fastnn.gradcheck_function(f, grad_f, w)  # one function of one array

Both work in float64, where the central difference (f(w + h) - f(w - h)) / 2h is accurate
to about h^2, and report the worst relative error |a - n| / (|a| + |n|) (see _rel_err).  Errors
of 1e-5 or less mean the analytic gradient is right; a wrong one gives 1e-2 to 1.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, cast

import numpy as np

from fastnn import config

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    from fastnn.models import Sequential


def _rel_err(a: NDArray[Any], n: NDArray[Any]) -> float:
    """max |a - n| / (|a| + |n|), the denominator floored at 1e-3 of the largest entry: an
    entry a thousand times smaller than the rest is compared at that scale, where the
    differences' roundoff (~1e-10 of the loss) would otherwise dominate it."""
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(n), initial=0.0)))
    floor = max(1e-3 * scale, 1e-12)
    return float(np.max(np.abs(a - n) / np.maximum(np.abs(a) + np.abs(n), floor)))


def gradcheck_function(f: Callable[[NDArray[np.float64]], float],
                       grad: Callable[[NDArray[np.float64]], ArrayLike], w: ArrayLike,
                       eps: float = 1e-6, max_entries: int | None = None, seed: int = 0) -> float:
    """Worst relative error between grad(w) and central differences of the scalar f at w.

    f(w) -> float and grad(w) -> array shaped like w.  w is perturbed in place and
    restored.  eps: the finite-difference step (default 1e-6).  max_entries: check a random
    subset of that many entries (default None: all), drawn with seed (default 0)."""
    w = np.asarray(w)
    if w.dtype != np.float64:
        raise TypeError(f"Expected w in float64 (finite differences need it). Received: {w.dtype}")
    analytic = np.array(grad(w), dtype=np.float64)
    if analytic.shape != w.shape:
        raise ValueError(f"Expected grad(w) with shape {w.shape}. Received: {analytic.shape}")
    flat = w.reshape(-1)
    idx: NDArray[Any] = np.arange(flat.size)
    if max_entries is not None and flat.size > max_entries:
        idx = np.random.default_rng(seed).choice(flat.size, max_entries, replace=False)
    numeric = np.empty(len(idx))
    for k, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + eps
        up = f(w)
        flat[i] = old - eps
        down = f(w)
        flat[i] = old
        numeric[k] = (up - down) / (2 * eps)
    return _rel_err(analytic.reshape(-1)[idx], numeric)


def gradcheck(model: Sequential, x: ArrayLike, y: ArrayLike, eps: float = 1e-6,
              max_entries: int | None = 64, seed: int = 0) -> dict[str, float]:
    """Worst relative error of every parameter's analytic gradient, per parameter.

    A float64 copy of the compiled model computes the gradients fastnn's backward pass
    gives and the central differences of the loss, on (x, y) as one batch; the model
    itself is not changed.  Dropout is off (rate 0 in the copy).  Returns {"layer/weight": err}.
    eps: the finite-difference step (default 1e-6); max_entries: entries checked per
    parameter, a random subset drawn with seed (defaults 64 and 0; None: all).
    """
    from fastnn import _step
    from fastnn.models import Sequential

    if not model.compiled:
        raise RuntimeError("You must call compile() before gradcheck().")
    before = config.floatx()
    config.set_floatx("float64")
    try:
        # float64 everywhere, dropout off (rate 0) so the loss is a deterministic function
        twin = Sequential.from_config(_float64_without_dropout(model._file_config()))
        twin.build(model.input_shape)
    finally:
        config.set_floatx(before)
    twin.set_weights([w.astype(np.float64) for w in model.get_weights()])
    twin.compile(optimizer="sgd", loss=model.loss)
    xb = np.ascontiguousarray(x, dtype=np.float64)
    output_shape = cast("tuple[int, ...]", twin.output_shape)  # built above
    tb = twin.loss.prepare_targets(y, output_shape[-1], np.float64)
    step = twin.trainer

    def loss() -> float:
        return step.loss_value(_step.forward(twin._leaves(), xb, training=False), tb)

    step.gradients(xb, tb)  # every layer's full gradients
    checks = [(f"{layer.name}/{'kernel' if i == 0 else 'bias'}", w, g.copy())
              for layer in twin._leaves() for i, (w, g) in enumerate(zip(layer.weights, layer.grads))]
    return {name: gradcheck_function(lambda _: loss(), lambda _: g, w, eps, max_entries, seed)
            for name, w, g in checks}


def _float64_without_dropout(cfg: dict[str, Any]) -> dict[str, Any]:
    """A model's file config (Sequential._file_config) with every layer in float64 and every
    Dropout's rate 0, nested models' too."""
    return {**cfg, "layers": [
        {"class": e["class"], "config": _float64_without_dropout(e["config"])
         if e["class"] == "Sequential" else
         {**e["config"], "dtype": "float64", **({"rate": 0.0} if e["class"] == "Dropout" else {})}}
        for e in cfg["layers"]]}
