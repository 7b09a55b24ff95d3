"""Nadam, AdamW, Adamax, Adadelta and Lion against Keras 3's own unit tests
(keras/src/optimizers/{nadam,adamw,adamax,adadelta,lion}_test.py): the same inputs, the golden
values and tolerances Keras asserts, on both backends.  Keras' protocol: one step with
gradients 0.01, check golden[0]; then steps with gradients 0.1 ... 1.0, checking the next row
before each."""
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


# ---- Adamax, Adadelta, Lion (Keras 3.15's adamax_test.py, adadelta_test.py, lion_test.py) ----

ADAMAX_GOLDEN = np.array([  # adamax_test.py test_correctness_with_golden
    [0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8],
    [0.6827, 0.6873, 0.6888, 0.6896, 0.6901, 0.6904, 0.6906, 0.6908, 0.6909, 0.691],
    [0.5333, 0.5407, 0.5431, 0.5444, 0.5451, 0.5456, 0.546, 0.5462, 0.5464, 0.5466],
    [0.368, 0.3773, 0.3804, 0.382, 0.3829, 0.3835, 0.384, 0.3843, 0.3846, 0.3848],
    [0.1933, 0.204, 0.2076, 0.2094, 0.2105, 0.2112, 0.2117, 0.2121, 0.2124, 0.2126]])
# adadelta_test.py and lion_test.py: every element takes the same values
ADADELTA_GOLDEN = np.tile([[0.9978], [0.9947], [0.9915], [0.9882], [0.9849]], (1, 10))
LION_GOLDEN = np.tile([[0.999], [0.998], [0.997], [0.996], [0.995]], (1, 10))
NEW = ["adamax", "adadelta", "lion"]


@pytest.mark.parametrize("make, golden", [
    (lambda: optimizers.Adamax(learning_rate=0.2, beta_1=0.85, beta_2=0.95, epsilon=1e-6),
     ADAMAX_GOLDEN),
    (lambda: optimizers.Adadelta(learning_rate=1.0, rho=0.8, epsilon=1e-6), ADADELTA_GOLDEN),
    (lambda: optimizers.Lion(), LION_GOLDEN),
], ids=NEW)
def test_new_optimizers_with_keras_golden_values(make, golden, backend_name):
    test_correctness_with_keras_golden_values(make, golden, backend_name)


@pytest.mark.parametrize("make, want", [
    # Keras' test_single_step values, and by hand: Adamax's first step is
    # lr / (1 - b1) * (1 - b1) g / (|g| + eps) = lr sign(g) (to eps); Lion's is lr sign(g);
    # Adadelta's is lr sqrt(eps) g / sqrt(0.05 g^2 + eps) = 0.5 sqrt(1e-7 / 0.05) = 7.07e-4
    # for every g >> sqrt(eps)
    (lambda: optimizers.Adamax(learning_rate=0.5), [0.5, 1.5, 2.5, 3.5]),
    (lambda: optimizers.Adadelta(learning_rate=0.5), [0.9993, 1.9993, 2.9993, 3.9993]),
    (lambda: optimizers.Lion(learning_rate=0.5), [0.5, 1.5, 2.5, 3.5]),
], ids=NEW)
def test_new_optimizers_single_step_as_keras(make, want, backend_name):
    test_single_step_as_keras(make, want, backend_name)


@pytest.mark.parametrize("cls", [optimizers.Adamax, optimizers.Adadelta, optimizers.Lion],
                         ids=NEW)
def test_new_optimizers_weight_decay_as_keras(cls, backend_name):
    test_weight_decay_as_keras(cls, backend_name)


def test_new_optimizers_two_steps_by_hand(backend_name):
    """Two steps of each rule in float64 from its documented formula (p = 1, g = 0.5 then -1):
    Adamax (lr 0.1, b1 0.5, b2 0.8, eps 0.01): m = 0.25, u = 0.5, p = 1 - 0.1/0.5 * 0.25/0.51;
      m = -0.375, u = max(0.4, 1) = 1, p -= 0.1/0.75 * -0.375/1.01.
    Adadelta (lr 1, rho 0.5, eps 0.01): ag = 0.125, d = -sqrt(0.01) 0.5 / sqrt(0.135),
      ad = 0.5 d^2;  ag = 0.5625, d2 = sqrt(ad + 0.01) / sqrt(0.5725), p = 1 + d + d2.
    Lion (lr 0.1, b1 0.5, b2 0.8): p = 1 - 0.1, m = 0.1;  sign(0.05 - 0.5) = -1: p = 1."""
    import math
    p1 = 1 - 0.1 / 0.5 * 0.25 / 0.51
    adamax = p1 - 0.1 / 0.75 * -0.375 / 1.01
    d = -math.sqrt(0.01) * 0.5 / math.sqrt(0.135)
    ad = 0.5 * d * d
    adadelta = 1 + d + math.sqrt(ad + 0.01) / math.sqrt(0.5625 + 0.01)
    for opt, want, state in [
            (optimizers.Adamax(0.1, beta_1=0.5, beta_2=0.8, epsilon=0.01), adamax, [-0.375, 1.0]),
            (optimizers.Adadelta(1.0, rho=0.5, epsilon=0.01), adadelta, [0.5625, None]),
            (optimizers.Lion(0.1, beta_1=0.5, beta_2=0.8), 1.0, [0.8 * 0.1 - 0.2])]:
        x = np.ones(1)
        for g in (0.5, -1.0):
            opt.apply([x], [np.array([g])])
        assert x[0] == pytest.approx(want, rel=1e-12), type(opt).__name__
        for v, w in zip(opt.variables, state):
            if w is not None:
                assert v[0] == pytest.approx(w, rel=1e-12), type(opt).__name__


def test_new_optimizers_defaults_and_names_as_keras():
    a, d, l = optimizers.Adamax(), optimizers.Adadelta(), optimizers.Lion()
    assert (a.name, a.learning_rate, a.beta_1, a.beta_2, a.epsilon, a.weight_decay) == \
        ("adamax", 0.001, 0.9, 0.999, 1e-7, None)
    assert (d.name, d.learning_rate, d.rho, d.epsilon, d.weight_decay) == \
        ("adadelta", 0.001, 0.95, 1e-7, None)
    assert (l.name, l.learning_rate, l.beta_1, l.beta_2, l.weight_decay) == \
        ("lion", 0.001, 0.9, 0.99, None)
    # Keras' get_config keys after the base ones, in Keras' order
    assert list(a.get_config())[-3:] == ["beta_1", "beta_2", "epsilon"]
    assert list(d.get_config())[-2:] == ["rho", "epsilon"]
    assert list(l.get_config())[-2:] == ["beta_1", "beta_2"]
    for name, cls in [("adamax", optimizers.Adamax), ("Adadelta", optimizers.Adadelta),
                      ("lion", optimizers.Lion)]:
        assert type(optimizers.get(name)) is cls


@pytest.mark.parametrize("beta_1", [-0.1, 0.0, 1.1])
def test_lion_refuses_beta_1_outside_its_range_as_keras(beta_1):
    with pytest.raises(ValueError, match=r"Argument `beta_1` must be in the \[0, 1\] range. "
                       r"Otherwise, the optimizer degenerates to SignSGD. Received: "
                       rf"beta_1={beta_1}."):
        optimizers.Lion(beta_1=beta_1)


@pytest.mark.parametrize("make, match", [
    (lambda: optimizers.Adamax(beta_2=1.5), "beta_2"),
    (lambda: optimizers.Adamax(epsilon=-1.0), "epsilon"),
    (lambda: optimizers.Adadelta(rho=float("nan")), "rho"),
    (lambda: optimizers.Adadelta(epsilon=0.0), "epsilon"),
    (lambda: optimizers.Lion(beta_1=float("nan")), "beta_1"),
    (lambda: optimizers.Lion(beta_2=2.0), "beta_2"),
])
def test_new_optimizers_refuse_poisoned_hyper_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("make", [
    lambda: optimizers.Adamax(learning_rate=0.5, beta_1=0.8, beta_2=0.95, epsilon=1e-5),
    lambda: optimizers.Adadelta(learning_rate=0.5, rho=0.9, epsilon=1e-5, weight_decay=0.01),
    lambda: optimizers.Lion(learning_rate=0.5, beta_1=0.5, beta_2=0.67),
], ids=NEW)
def test_new_optimizers_config_round_trip(make):
    test_config_round_trip_continues_the_same_trajectory(make)


def _fit(make, compiled, batch_size, dtype=np.float32):
    from conftest import blobs
    x, y, _ = blobs(n=30, d=6, k=3)
    m = fastnn.Sequential([fastnn.layers.Dense(7, activation="relu", input_shape=(6,), dtype=dtype),
                           fastnn.layers.Dense(3, activation="softmax", dtype=dtype)], seed=3)
    m.compile(make(), "categorical_crossentropy", jit_compile="auto" if compiled else False)
    m.fit(x.astype(dtype), y, epochs=2, batch_size=batch_size, verbose=0)
    xp, t = np.ascontiguousarray(x, dtype), m.loss.prepare_targets(y, 3, dtype)
    ran = m.trainer.compiled_step(m.optimizer, xp, t, batch_size) is not None
    return m.get_weights() + [a.copy() for a in m.optimizer.variables], ran


TRAINED = {"adamax": lambda: optimizers.Adamax(0.01, weight_decay=0.004),
           "adadelta": lambda: optimizers.Adadelta(1.0),
           "lion": lambda: optimizers.Lion(0.001, weight_decay=0.04)}


@pytest.mark.parametrize("name", NEW)
@pytest.mark.parametrize("batch_size", [1, 7])  # 1: the rank-1 step; 7: a last partial batch
def test_new_optimizers_in_the_compiled_step(name, batch_size):
    """fit's compiled step (one call into C per step) is bit for bit the layer-by-layer step,
    which the golden values above check against Keras."""
    (a, ran_a), (b, ran_b) = (_fit(TRAINED[name], c, batch_size) for c in (True, False))
    assert ran_a and not ran_b
    for u, v in zip(a, b):
        assert np.array_equal(u, v)


@pytest.mark.parametrize("name", NEW)
def test_new_optimizers_compiled_step_matches_the_numpy_reference(name):
    runs = []
    for backend in ("compiled", "numpy"):
        before = fastnn.get_backend()
        fastnn.set_backend(backend)
        try:
            runs.append(_fit(TRAINED[name], True, 8, np.float64)[0])
        finally:
            fastnn.set_backend(before)
    for u, v in zip(*runs):
        np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NEW)
def test_new_optimizers_with_the_options(name):
    """clipnorm, use_ema and gradient accumulation take the Python step around the same rule:
    equal to the rule applied by hand to the clipped / averaged / summed gradients."""
    g1, g2 = np.array([3.0, -4.0, 0.5]), np.array([-1.0, 2.0, 0.25])
    plain, x0 = TRAINED[name](), np.array([0.3, -0.2, 0.1])
    xp = x0.copy()
    plain.apply([xp], [g1 * min(1.0, 1.0 / np.linalg.norm(g1))])  # clipnorm=1
    clipped, xc = type(plain).from_config({**plain.get_config(), "clipnorm": 1.0}), x0.copy()
    clipped.apply([xc], [g1.copy()])
    np.testing.assert_allclose(xc, xp, rtol=1e-12)
    acc, xa = type(plain).from_config({**plain.get_config(),
                                       "gradient_accumulation_steps": 2}), x0.copy()
    acc.apply([xa], [g1.copy()])
    np.testing.assert_array_equal(xa, x0)
    acc.apply([xa], [g2.copy()])
    ref, xr = TRAINED[name](), x0.copy()
    ref.apply([xr], [(g1 + g2) / 2])
    np.testing.assert_allclose(xa, xr, rtol=1e-12)
    ema, xe = type(plain).from_config({**plain.get_config(), "use_ema": True,
                                       "ema_momentum": 0.5}), x0.copy()
    ref, xr = TRAINED[name](), x0.copy()
    ema.apply([xe], [g1.copy()])
    ref.apply([xr], [g1.copy()])
    w1 = xr.copy()
    ema.apply([xe], [g2.copy()])
    ref.apply([xr], [g2.copy()])
    np.testing.assert_array_equal(xe, xr)
    np.testing.assert_allclose(ema.moving_averages[0], 0.5 * w1 + 0.5 * xr, rtol=1e-12)
