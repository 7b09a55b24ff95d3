"""The book's lessons as features: gradient checking, learning rates, momentum,
backpropagation by hand, optimizers side by side."""
import math

import numpy as np
import pytest

import fastnn
from fastnn import layers, losses, models, optimizers
from conftest import blobs

HIDDEN = ["linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu", "elu", "gelu"]
HEADS = [  # (output activation, loss, target kind)
    ("softmax", "categorical_crossentropy", "onehot"),
    ("softmax", "sparse_categorical_crossentropy", "labels"),
    ("sigmoid", "binary_crossentropy", "onehot"),
    ("linear", "mse", "onehot"),
    ("linear", losses.CategoricalCrossentropy(from_logits=True), "onehot"),
    ("tanh", "mse", "onehot"),
]


@pytest.mark.parametrize("head", HEADS, ids=lambda h: f"{h[0]}-{getattr(h[1], 'name', h[1])}")
@pytest.mark.parametrize("hidden", HIDDEN)
def test_gradcheck_every_activation_and_loss(hidden, head):
    out_act, loss, kind = head
    x, y, labels = blobs(n=6, d=4, k=3, seed=1)
    model = models.Sequential([layers.Input(shape=(4,)), layers.Dense(5, activation=hidden),
                               layers.Activation("tanh"), layers.Dropout(0.3),
                               layers.Dense(3, activation=out_act)], seed=0)
    model.compile("sgd", loss)
    errors = fastnn.gradcheck(model, x, labels if kind == "labels" else y)
    first, last = model.layers[0].name, model.layers[-1].name
    assert set(errors) == {f"{first}/kernel", f"{first}/bias", f"{last}/kernel", f"{last}/bias"}
    assert max(errors.values()) < 1e-6, errors


def test_gradcheck_with_flatten_and_no_bias():
    x = np.random.default_rng(0).standard_normal((4, 3, 2)).astype("float32")
    model = models.Sequential([layers.Input(shape=(3, 2)), layers.Flatten(),
                               layers.Dense(4, activation="elu", use_bias=False),
                               layers.Dense(2, activation="softmax")], seed=0)
    model.compile("sgd", "categorical_crossentropy")
    errors = fastnn.gradcheck(model, x, np.eye(2)[[0, 1, 1, 0]])
    assert len(errors) == 3 and max(errors.values()) < 1e-6


def test_gradcheck_catches_a_wrong_gradient(monkeypatch):
    model = models.Sequential([layers.Dense(3, activation="tanh", input_shape=(4,)),
                               layers.Dense(2, activation="softmax")], seed=0)
    model.compile("sgd", "categorical_crossentropy")
    x, y, _ = blobs(n=5, d=4, k=2)
    # a backward pass that forgets the activation derivative of tanh
    original = layers.Dense.backward

    def wrong(self, dy, need_dx, skip_activation=False):
        return original(self, dy, need_dx, skip_activation=skip_activation or self.activation.name == "tanh")
    monkeypatch.setattr(layers.Dense, "backward", wrong)
    errors = fastnn.gradcheck(model, x, y)
    first, last = model.layers[0].name, model.layers[1].name
    assert errors[f"{first}/kernel"] > 1e-2 and errors[f"{last}/kernel"] < 1e-6


def test_gradcheck_function_form():
    w = np.array([1.0, -2.0, 0.5])
    assert fastnn.gradcheck_function(lambda v: float(np.sum(v ** 3)), lambda v: 3 * v ** 2, w) < 1e-8
    assert fastnn.gradcheck_function(lambda v: float(np.sum(v ** 3)), lambda v: 2 * v ** 2, w) > 0.1
    with pytest.raises(TypeError, match="float64"):
        fastnn.gradcheck_function(lambda v: 0.0, lambda v: v, w.astype("float32"))


def test_learning_rate_example_crawls_converges_diverges(capsys):
    from fastnn.examples import learning_rate
    r = learning_rate.run(verbose=True)
    small, good, large = r["too small"], r["good"], r["too large"]
    assert small["loss"][-1] > 0.8 * small["loss"][0]          # crawling
    assert good["loss"][-1] < 0.02 and abs(good["w"] - 3) < 0.05 and abs(good["b"] - 2) < 0.05
    assert large["steps"] < 100 and not math.isfinite(large["loss"][-1])  # stopped on inf/NaN
    assert "Invalid loss, terminating training" in capsys.readouterr().out


def test_slides_momentum_corrected_is_keras_nesterov():
    """The slides' pseudo-code with its sign fixed (velocity = momentum * past_velocity
    - learning_rate * gradient; w = w + momentum * velocity - learning_rate * gradient)
    is exactly SGD(momentum=m, nesterov=True)."""
    lr, momentum = 0.1, 0.9
    grad = lambda w: 2 * (w - 3.0) + np.cos(w)  # noqa: E731  (some smooth loss)
    w_slides, past_velocity = np.array([0.5]), np.array([0.0])
    p = np.array([0.5], np.float64)
    opt = optimizers.SGD(learning_rate=lr, momentum=momentum, nesterov=True)
    fastnn.set_backend("compiled")
    for _ in range(25):
        g = grad(w_slides)
        velocity = past_velocity * momentum - lr * g
        w_slides = w_slides + momentum * velocity - lr * g
        past_velocity = velocity
        opt.apply([p], [grad(p)])
        np.testing.assert_allclose(p, w_slides, rtol=1e-12)
    # the misprinted version (+ learning_rate * gradient) is something else entirely
    w_bad, v = np.array([0.5]), np.array([0.0])
    for _ in range(25):
        v = v * momentum + lr * grad(w_bad)
        w_bad = w_bad + momentum * v - lr * grad(w_bad)
    assert not np.allclose(w_bad, p, rtol=1e-3)


def test_backprop_by_hand_agrees_with_fit_and_the_slides():
    from fastnn.examples import backprop_by_hand as bp
    hand_w0, hand_w1, v = bp.by_hand(verbose=False)
    fit_w0, fit_w1, loss = bp.with_fit()
    np.testing.assert_allclose(fit_w0, hand_w0, atol=1e-6)
    np.testing.assert_allclose(fit_w1, hand_w1, atol=1e-6)
    assert loss == pytest.approx(v["e_tot"], rel=1e-5)
    # the slides' numbers, to the digits they print
    assert round(v["a1"][0, 0], 3) == 0.518
    assert (round(v["a2"][0, 0], 3), round(v["a2"][0, 1], 3)) == (0.609, 0.633)
    assert round(v["g_w1"][0, 0], 4) == 0.0381                       # dE/dw10^(1)
    assert round(v["g_w1"][0, 0] / v["a1"][0, 0] * 0.4, 4) == 0.0294  # dE1/da10
    assert round(hand_w0[0, 0], 4) == 0.1501


def test_backprop_by_hand_script_runs():
    from fastnn.examples import backprop_by_hand as bp
    assert bp.main() == 0


def test_compare_optimizers_runs_and_plots(tmp_path):
    from fastnn.examples import compare_optimizers as co
    results = co.run(epochs=2, n_train=3000, verbose=0)
    assert list(results) == list(co.OPTIMIZERS)
    table = co.table(results)
    assert table.count("\n") == len(co.OPTIMIZERS) + 1
    for r in results.values():  # every optimizer learns something; the adaptive ones a lot
        assert r["history"]["val_accuracy"][-1] > 0.15
    assert min(results[k]["history"]["val_accuracy"][-1] for k in ("RMSprop", "Adam")) > 0.8
    co.plot(results, tmp_path / "o.png")
    assert (tmp_path / "o.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
