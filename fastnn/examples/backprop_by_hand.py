"""Backpropagation by hand: the course slides' 2-2-2 network, one SGD step, chain rule spelled out.

    python -m fastnn.examples.backprop_by_hand

Network: inputs x = (x0, x1); hidden a1 = sigmoid(x @ W0); outputs a2 = sigmoid(a1 @ W1);
error E = 1/2 * sum((target - a2)^2) with targets (0.3, 0.9); plain SGD, learning rate 0.5.

The slides give x0 = 0.5, the weights w10^(0) = 0.15 (x0 -> a10), w10^(1) = 0.4 (a10 -> y1)
and w11^(1) = 0.5 (a10 -> y2), and the forward values a10 = 0.518, y1 = 0.609, y2 = 0.633.
They do not show the rest of the network; the values below marked "chosen" complete it (no
biases) so that the forward pass reproduces those numbers.  The slides round; so do we.
The slides state y2 both as 0.633 and as 0.621 and use 0.621 in E_tot = 0.087 and in
dE2/da10 = -0.0328; with y2 = 0.633 these are 0.083 and -0.0310, which is what this
script prints (so its dE/dw10^(0) is -0.00019 where the slides have -0.00042).

The same step is then taken by fastnn itself: Dense(2, sigmoid, use_bias=False) twice,
loss "mse" (the mean over the two outputs equals 1/2 * sum of squares) and SGD(0.5), via fit.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

X = np.array([[0.5, 0.1]])                 # x0 from the slides, x1 chosen
TARGET = np.array([[0.3, 0.9]])
W0 = np.array([[0.15, 0.20],               # row: input, column: hidden unit; 0.15 from the slides
               [-0.03, 0.30]])             # chosen
W1 = np.array([[0.40, 0.50],               # row: hidden unit, column: output; 0.4, 0.5 from the slides
               [0.44, 0.54]])              # chosen
LR = 0.5


def sigmoid(z: NDArray[Any]) -> NDArray[Any]:
    s: NDArray[Any] = 1 / (1 + np.exp(-z))
    return s


def by_hand(verbose: bool = True) -> tuple[NDArray[Any], NDArray[Any], dict[str, Any]]:
    """The slides' computation, written out.  Returns the updated (W0, W1) and the values."""
    say: Callable[..., None] = print if verbose else (lambda *a: None)
    z1 = X @ W0
    a1 = sigmoid(z1)
    z2 = a1 @ W1
    a2 = sigmoid(z2)
    e_tot = 0.5 * np.sum((TARGET - a2) ** 2)
    say("forward")
    say(f"  a10 = sigmoid({z1[0, 0]:.4f}) = {a1[0, 0]:.3f}    a11 = {a1[0, 1]:.3f}")
    say(f"  y1 = a20 = {a2[0, 0]:.3f}    y2 = a21 = {a2[0, 1]:.3f}")
    say(f"  E_tot = 1/2 (0.3 - {a2[0, 0]:.3f})^2 + 1/2 (0.9 - {a2[0, 1]:.3f})^2 = {e_tot:.4f}")

    # output layer: dE/dw = dE/da2 * da2/dz2 * dz2/dw
    dE_da2 = -(TARGET - a2)                      # d(1/2 (t - a)^2)/da = -(t - a)
    da2_dz2 = a2 * (1 - a2)                      # sigmoid'(z) = sigmoid(z)(1 - sigmoid(z))
    delta2 = dE_da2 * da2_dz2
    g_w1 = a1.T @ delta2                         # dz2/dw = a1
    say("\noutput weight w10^(1) (a10 -> y1)")
    say(f"  dE/dw10^(1) = -(0.3 - {a2[0, 0]:.3f}) * {a2[0, 0]:.3f} * (1 - {a2[0, 0]:.3f}) * "
        f"{a1[0, 0]:.3f} = {g_w1[0, 0]:.4f}")
    say(f"  w10^(1)+ = 0.4 - 0.5 * {g_w1[0, 0]:.4f} = {W1[0, 0] - LR * g_w1[0, 0]:.3f}")

    # hidden layer: both outputs' errors flow back into a10
    dE1_da10 = delta2[0, 0] * W1[0, 0]
    dE2_da10 = delta2[0, 1] * W1[0, 1]
    da1_dz1 = a1 * (1 - a1)
    delta1 = (delta2 @ W1.T) * da1_dz1
    g_w0 = X.T @ delta1
    say("\nhidden weight w10^(0) (x0 -> a10)")
    say(f"  dE1/da10 = -(0.3 - {a2[0, 0]:.3f}) * {a2[0, 0]:.3f} * (1 - {a2[0, 0]:.3f}) * 0.4 = {dE1_da10:.4f}")
    say(f"  dE2/da10 = -(0.9 - {a2[0, 1]:.3f}) * {a2[0, 1]:.3f} * (1 - {a2[0, 1]:.3f}) * 0.5 = {dE2_da10:.4f}")
    say(f"  da10/dz10 = {a1[0, 0]:.3f} * (1 - {a1[0, 0]:.3f}) = {da1_dz1[0, 0]:.3f}")
    say(f"  dE/dw10^(0) = ({dE1_da10:.4f} + {dE2_da10:.4f}) * {da1_dz1[0, 0]:.3f} * 0.5 = {g_w0[0, 0]:.5f}")
    say(f"  w10^(0)+ = 0.15 - 0.5 * ({g_w0[0, 0]:.5f}) = {W0[0, 0] - LR * g_w0[0, 0]:.4f}")

    new_w0, new_w1 = W0 - LR * g_w0, W1 - LR * g_w1
    after = sigmoid(sigmoid(X @ new_w0) @ new_w1)
    say(f"\nbefore the step: y1 = {a2[0, 0]:.3f}, y2 = {a2[0, 1]:.3f}")
    say(f"after the step:  y1 = {after[0, 0]:.3f}, y2 = {after[0, 1]:.3f}")
    return new_w0, new_w1, {"a1": a1, "a2": a2, "e_tot": e_tot, "g_w0": g_w0, "g_w1": g_w1}


def with_fit() -> tuple[NDArray[Any], NDArray[Any], float]:
    """The same step taken by fastnn's fit; returns the updated (W0, W1) and the loss logged."""
    from fastnn import layers, models, optimizers

    model = models.Sequential([layers.Input(shape=(2,)),
                               layers.Dense(2, activation="sigmoid", use_bias=False),
                               layers.Dense(2, activation="sigmoid", use_bias=False)])
    model.set_weights([W0, W1])
    model.compile(optimizer=optimizers.SGD(learning_rate=LR), loss="mse")
    history = model.fit(X, TARGET, batch_size=1, epochs=1, verbose=0)
    w0, w1 = model.get_weights()
    return w0, w1, history.history["loss"][0]


def main() -> int:
    hand_w0, hand_w1, values = by_hand()
    fit_w0, fit_w1, loss = with_fit()
    print("\nfastnn fit, same step:")
    print(f"  loss logged {loss:.4f} (E_tot {values['e_tot']:.4f})")
    print(f"  W0 = {np.array2string(fit_w0, precision=5)}\n  W1 = {np.array2string(fit_w1, precision=5)}")
    agree = np.allclose(fit_w0, hand_w0, atol=1e-6) and np.allclose(fit_w1, hand_w1, atol=1e-6)
    print("by hand and fit agree" if agree else "MISMATCH between by hand and fit")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
