"""Why the learning rate matters: too small crawls, a good one converges, too large diverges.

    python -m fastnn.examples.learning_rate

Full-batch gradient descent (batch_size = all samples) fits y = 3 x + 2 with one Dense(1)
unit and mean squared error, for 100 steps at three learning rates.  With x ~ N(0, 2^2) the
loss's curvature along the weight is 2 E[x^2] = 8, so any rate above 2 / 8 = 0.25 overshoots
further at every step: the loss grows geometrically until it overflows to inf and then NaN,
and TerminateOnNaN stops the run with a message.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from fastnn import callbacks, layers, models, optimizers

if TYPE_CHECKING:
    from numpy.typing import NDArray

RATES = {"too small": 1e-4, "good": 0.05, "too large": 1.0}


def data(n: int = 256, seed: int = 0) -> tuple[NDArray[Any], NDArray[Any]]:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, 1)) * 2).astype("float32")
    y = (3 * x + 2 + 0.1 * rng.standard_normal((n, 1))).astype("float32")
    return x, y


def run(steps: int = 100, verbose: bool = True) -> dict[str, dict[str, Any]]:
    x, y = data()
    results: dict[str, dict[str, Any]] = {}
    for label, lr in RATES.items():
        model = models.Sequential([layers.Dense(1, input_shape=(1,))], seed=0)
        model.compile(optimizer=optimizers.SGD(learning_rate=lr), loss="mse")
        if verbose:
            print(f"learning rate {lr:g} ({label}):")
        h = model.fit(x, y, batch_size=len(x), epochs=steps, verbose=0,
                      callbacks=[callbacks.TerminateOnNaN()])
        loss = h.history["loss"]
        w, b = (float(v.reshape(-1)[0]) for v in model.get_weights())
        results[label] = {"lr": lr, "loss": loss, "steps": len(loss), "w": w, "b": b}
        if verbose:
            shown = ", ".join(f"{v:.3g}" for v in loss[:: max(1, len(loss) // 5)])
            print(f"  loss every {max(1, len(loss) // 5)} steps: {shown}")
            print(f"  after {len(loss)} steps: loss {loss[-1]:.4g}, w = {w:.4g}, b = {b:.4g} "
                  f"(target w = 3, b = 2)\n")
    if verbose:
        small, good, large = results["too small"], results["good"], results["too large"]
        print(f"too small: loss fell only from {small['loss'][0]:.3g} to {small['loss'][-1]:.3g}")
        print(f"good:      converged to {good['loss'][-1]:.3g} (the noise level is 0.01)")
        print(f"too large: {'diverged (loss inf/NaN), stopped' if not math.isfinite(large['loss'][-1]) else 'did not diverge'}"
              f" after {large['steps']} of {steps} steps")
    return results


if __name__ == "__main__":
    run()
