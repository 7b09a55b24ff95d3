"""Nadam and AdamW against Keras 3's own unit tests (keras/src/optimizers/nadam_test.py and
adamw_test.py): the same inputs, the golden values and tolerances Keras asserts, on both
backends.  Keras' protocol: one step with gradients 0.01, check golden[0]; then steps with
gradients 0.1 ... 1.0, checking the next row before each."""
import numpy as np
import pytest

import fastnn
from fastnn import optimizers

BACKENDS = ["compiled", "numpy"]


@pytest.fixture(params=BACKENDS)
def backend_name(request):
    before = fastnn.get_backend()
    fastnn.set_backend(request.param)
    yield request.param
    fastnn.set_backend(before)


def _apply(opt, var, grad):
    opt.apply([var], [np.asarray(grad, np.float32)])


NADAM_GOLDEN = np.array([
    [0.4281, 0.4281, 0.4281, 0.4281, 0.4281, 0.4281, 0.4281, 0.4281, 0.4281, 0.4281],
    [-0.1738, -0.1731, -0.1726, -0.1723, -0.1721, -0.172, -0.1719, -0.1718, -0.1718, -0.1717],
    [-0.7115, -0.7103, -0.7096, -0.7092, -0.709, -0.7088, -0.7086, -0.7085, -0.7085, -0.7084],
    [-1.2335, -1.2322, -1.2313, -1.2309, -1.2306, -1.2304, -1.2302, -1.2301, -1.23, -1.2299],
    [-1.7492, -1.7478, -1.7469, -1.7464, -1.7461, -1.7459, -1.7457, -1.7456, -1.7455, -1.7454]])

ADAMW_GOLDEN = np.array([
    [0.4998, 0.4998, 0.4998, 0.4998, 0.4998, 0.4998, 0.4998, 0.4998, 0.4998, 0.4998],
    [0.2486, 0.2475, 0.2463, 0.2451, 0.244, 0.2428, 0.2417, 0.2405, 0.2394, 0.2382],
    [0.1223, 0.1198, 0.1174, 0.1149, 0.1124, 0.11, 0.1075, 0.1051, 0.1027, 0.1003],
    [0.0586, 0.0549, 0.0512, 0.0475, 0.0439, 0.0402, 0.0366, 0.033, 0.0294, 0.0258],
    [0.0263, 0.0215, 0.0167, 0.012, 0.0073, 0.0026, -0.0021, -0.0067, -0.0113, -0.0159]])


@pytest.mark.parametrize("make, golden", [
    (lambda: optimizers.Nadam(learning_rate=0.5, beta_1=0.5, beta_2=0.67, epsilon=1e-5), NADAM_GOLDEN),
    (lambda: optimizers.AdamW(learning_rate=1.0, weight_decay=0.5, epsilon=2), ADAMW_GOLDEN),
], ids=["nadam", "adamw"])
def test_correctness_with_keras_golden_values(make, golden, backend_name):
    opt, x = make(), np.ones(10, np.float32)
    grads = np.arange(0.1, 1.1, 0.1)
    _apply(opt, x, np.full(10, 0.01))
    for i in range(5):
        np.testing.assert_allclose(x, golden[i], rtol=5e-4, atol=5e-4)
        _apply(opt, x, grads)


@pytest.mark.parametrize("make, want", [
    (lambda: optimizers.Nadam(learning_rate=0.5), [0.4686, 1.4686, 2.4686, 3.4686]),
    (lambda: optimizers.AdamW(learning_rate=0.5), [0.4980, 1.4960, 2.494, 3.492]),
], ids=["nadam", "adamw"])
def test_single_step_as_keras(make, want, backend_name):
    x = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    _apply(make(), x, [1.0, 6.0, 7.0, 2.0])
    np.testing.assert_allclose(x, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls", [optimizers.Nadam, optimizers.AdamW])
def test_weight_decay_as_keras(cls, backend_name):
    # three optimizers each decay var1 once with a zero gradient: 2 (1 - 0.004)^3
    var1 = np.array([2.0], np.float32)
    for _ in range(3):
        _apply(cls(learning_rate=1.0, weight_decay=0.004), var1, [0.0])
    assert var1[0] == pytest.approx(1.9760959, abs=1e-6)


def test_adamw_defaults_and_refusal():
    opt = optimizers.AdamW()
    assert (opt.learning_rate, opt.weight_decay, opt.beta_1, opt.beta_2, opt.epsilon, opt.amsgrad) == \
        (0.001, 0.004, 0.9, 0.999, 1e-7, False)
    with pytest.raises(ValueError, match="Argument `weight_decay` must be a float. Received: weight_decay=None"):
        optimizers.AdamW(learning_rate=1.0, weight_decay=None)
    nadam = optimizers.Nadam()
    assert (nadam.learning_rate, nadam.beta_1, nadam.beta_2, nadam.epsilon, nadam.weight_decay) == \
        (0.001, 0.9, 0.999, 1e-7, None)


@pytest.mark.parametrize("name, cls", [("nadam", optimizers.Nadam), ("adamw", optimizers.AdamW),
                                       ("Nadam", optimizers.Nadam), ("AdamW", optimizers.AdamW)])
def test_by_name_as_keras(name, cls):
    assert type(optimizers.get(name)) is cls


@pytest.mark.parametrize("make", [
    lambda: optimizers.Nadam(learning_rate=0.5, beta_1=0.5, beta_2=0.67, epsilon=1e-5),
    lambda: optimizers.AdamW(learning_rate=0.5, weight_decay=0.008, beta_1=0.5, beta_2=0.67,
                             epsilon=1e-5, amsgrad=True),
], ids=["nadam", "adamw"])
def test_config_round_trip_continues_the_same_trajectory(make):
    """Serialized mid-training (Nadam's running product is rebuilt from the step count),
    the copy continues exactly as the original."""
    a, xa = make(), np.ones(10, np.float32)
    for _ in range(3):
        _apply(a, xa, np.arange(0.1, 1.1, 0.1))
    b = optimizers.deserialize(optimizers.serialize(a))
    assert b.get_config() == a.get_config() and b.iterations == 3
    xb = xa.copy()
    b.build([xb])
    for va, vb in zip(a.variables, b.variables):
        vb[...] = va
    for _ in range(2):
        _apply(a, xa, np.full(10, 0.3))
        _apply(b, xb, np.full(10, 0.3))
    np.testing.assert_array_equal(xa, xb)


def test_nadam_and_adamw_train_the_book_network_shape(mnist_small):
    x, y, xt, yt = mnist_small[:4]
    for opt in ("nadam", "adamw"):
        m = fastnn.Sequential([fastnn.layers.Dense(64, activation="relu", input_shape=(784,)),
                               fastnn.layers.Dense(10, activation="softmax")], seed=0)
        m.compile(opt, "categorical_crossentropy", metrics=["accuracy"])
        m.fit(x, y, epochs=3, batch_size=64, verbose=0)
        assert m.evaluate(xt, yt, verbose=0)[1] > 0.8, opt


def test_nadam_after_a_jump_continues_as_the_running_optimizer():
    """A loaded Nadam rebuilds its running product P_t from the step count (at most 1000
    factors, for any count): after 1499 steps, a copy made from the saved config and state
    takes the same next step."""
    a, xa = optimizers.Nadam(0.01), np.ones(3, np.float32)
    for _ in range(1499):
        _apply(a, xa, [0.1, -0.2, 0.3])
    b = optimizers.deserialize(optimizers.serialize(a))
    xb = xa.copy()
    b.build([xb])
    for va, vb in zip(a.variables, b.variables):
        vb[...] = va
    _apply(a, xa, [0.3, 0.2, -0.1])
    _apply(b, xb, [0.3, 0.2, -0.1])
    np.testing.assert_allclose(xb, xa, rtol=1e-6)
    loaded = optimizers.deserialize({"class": "Nadam", "config": optimizers.Nadam().get_config(),
                                     "iterations": 10**15})
    x = np.ones(4, np.float32)
    _apply(loaded, x, [0.1, 0.2, 0.3, 0.4])  # one step, at once
    assert np.all(np.isfinite(x)) and loaded.iterations == 10**15 + 1
