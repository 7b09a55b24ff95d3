"""The oracle itself: backward kernels and loss gradients against central finite
differences in float64; optimizer steps against hand computations and an independent
scalar loop over several steps."""
import math

import numpy as np
import pytest

from fastnn import _reference as R
from fastnn._codes import LOSSES, OPTIMIZER_SLOTS
from act_params import PARAMS
from conftest import numgrad


def assert_grad(analytic, numeric):
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("act", list(R.ACT_CODES))
def test_dense_backward_matches_finite_differences(act):
    rng = np.random.default_rng(1)
    code, params = R.ACT_CODES[act], PARAMS.get(act, ())
    n, i, o = 4, 5, 3
    x, w, b = rng.standard_normal((n, i)), rng.standard_normal((i, o)), rng.standard_normal(o)
    r = rng.standard_normal((n, o))  # loss = sum(r * y), so dy = r

    def loss():
        y = np.empty((n, o))
        R.dense_forward(y, None, x, w, b, code, params)
        return float((r * y).sum())

    y, z = np.empty((n, o)), np.empty((n, o))
    R.dense_forward(y, z, x, w, b, code, params)
    dw, db, dx, dz = np.empty((i, o)), np.empty(o), np.empty((n, i)), np.empty((n, o))
    R.dense_backward(dw, db, dx, dz, r, x, w, y, z, code, params)
    assert_grad(dw, numgrad(loss, w))
    assert_grad(db, numgrad(loss, b))
    assert_grad(dx, numgrad(loss, x))


@pytest.mark.parametrize("act", list(R.ACT_CODES))
def test_act_backward_matches_finite_differences(act):
    rng = np.random.default_rng(2)
    code, params = R.ACT_CODES[act], PARAMS.get(act, ())
    x, r = rng.standard_normal((3, 6)) * 2, rng.standard_normal((3, 6))

    def loss():
        y = np.empty_like(x)
        R.act_forward(y, x, code, params)
        return float((r * y).sum())

    y, dx = np.empty_like(x), np.empty_like(x)
    R.act_forward(y, x, code, params)
    R.act_backward(dx, r, y, x, code, params)
    assert_grad(dx, numgrad(loss, x))


def _targets(name, rng, n, k):
    labels = rng.integers(0, k, n)
    if "sparse" in name:
        return labels
    if name == "binary_crossentropy":
        return rng.random((n, k))
    if name == "mean_squared_error":
        return rng.standard_normal((n, k))
    t = rng.random((n, k))
    return t / t.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("name", ["categorical_crossentropy", "sparse_categorical_crossentropy",
                                  "binary_crossentropy", "mean_squared_error"])
def test_loss_gradient_matches_finite_differences(name):
    rng = np.random.default_rng(3)
    n, k = 4, 5
    p = rng.uniform(0.05, 0.9, (n, k))  # inside the clip range; unnormalised rows
    t = _targets(name, rng, n, k)
    dp = np.empty_like(p)
    value = R.loss_backward(dp, p, t, LOSSES[name])
    assert value == pytest.approx(_loss(name, p, t), rel=1e-15)
    assert_grad(dp, numgrad(lambda: _loss(name, p, t), p))


@pytest.mark.parametrize("sparse", [False, True])
def test_fused_softmax_crossentropy_is_the_gradient_through_softmax(sparse):
    rng = np.random.default_rng(4)
    n, k = 5, 4
    z = rng.standard_normal((n, k)) * 3
    t = _targets("sparse" if sparse else "categorical", rng, n, k)
    loss_name = "sparse_categorical_crossentropy" if sparse else "categorical_crossentropy"

    def loss():
        p = np.empty_like(z)
        R.act_forward(p, z, R.SOFTMAX, ())
        return R.loss_backward(None, p, t, LOSSES[loss_name])

    p, dz = np.empty_like(z), np.empty_like(z)
    R.act_forward(p, z, R.SOFTMAX, ())
    fused = "sparse_softmax_crossentropy" if sparse else "softmax_crossentropy"
    value = R.loss_backward(dz, p, t, LOSSES[fused])
    assert value == pytest.approx(loss(), rel=1e-14)
    assert_grad(dz, numgrad(loss, z))


def _loss(name, p, t):
    return R.loss_backward(None, p, t, LOSSES[name])


def test_categorical_crossentropy_by_hand():
    # one sample, p = (0.2, 0.3, 0.5) (already normalised), target class 2: loss = -log 0.5
    p = np.array([[0.2, 0.3, 0.5]])
    assert _loss("categorical_crossentropy", p, np.array([[0.0, 0.0, 1.0]])) == pytest.approx(math.log(2))
    assert _loss("sparse_categorical_crossentropy", p, np.array([2])) == pytest.approx(math.log(2))
    # clipping as Keras: a zero probability costs -log(1e-7), not infinity
    q = np.array([[1.0, 0.0]])
    assert _loss("categorical_crossentropy", q, np.array([[0.0, 1.0]])) == pytest.approx(-math.log(1e-7))


def test_softmax_and_sigmoid_by_hand():
    y = np.empty((1, 3))
    R.act_forward(y, np.array([[1.0, 2.0, 3.0]]), R.SOFTMAX, ())
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(y[0], e / e.sum(), rtol=1e-15)
    s = np.empty((1, 2))
    R.act_forward(s, np.array([[0.0, math.log(3)]]), R.SIGMOID, ())
    np.testing.assert_allclose(s[0], [0.5, 0.75], rtol=1e-15)


# ---- optimizers: first step by hand --------------------------------------------------------

def _step(rule, p, g, lr, t=1, **kw):
    """One step of the reference rule (R.OptimizerStep); keyword arrays are state slots."""
    slots = {k: v for k, v in kw.items() if k in OPTIMIZER_SLOTS}
    k = R.OptimizerStep(p, rule, {k: v for k, v in kw.items() if k not in slots}, slots)
    k.begin(lr, t, _u_product(rule, kw, t))
    k.step(p, g)


def _u_product(rule, kw, t):
    b1 = kw.get("beta_1", 0.0)
    return math.prod(b1 * (1 - 0.5 * 0.96 ** s) for s in range(1, t + 1)) if rule == "nadam" else 1.0


def test_rmsprop_first_step_matches_keras_docstring():
    # Keras' RMSprop docstring: lr=0.1, var=10, loss=var**2/2 (gradient = var) -> 9.683772
    p, v = np.array([10.0], np.float32), np.zeros(1, np.float32)
    _step("rmsprop", p, p.copy(), 0.1, rho=0.9, epsilon=1e-7, velocities=v)
    assert p[0] == pytest.approx(9.683772, abs=1e-6)


def test_sgd_first_steps_by_hand():
    p, g = np.array([1.0]), np.array([0.5])
    _step("sgd", p, g, 0.1)
    assert p[0] == pytest.approx(1.0 - 0.1 * 0.5)
    # momentum 0.9: m1 = -lr g = -0.05, p = 1 - 0.05;  m2 = 0.9*(-0.05) - 0.05 = -0.095
    p, m = np.array([1.0]), np.zeros(1)
    _step("sgd", p, g, 0.1, momentum=0.9, momentums=m)
    assert (p[0], m[0]) == (pytest.approx(0.95), pytest.approx(-0.05))
    _step("sgd", p, g, 0.1, momentum=0.9, momentums=m)
    assert (p[0], m[0]) == (pytest.approx(0.855), pytest.approx(-0.095))
    # nesterov: p = 1 + 0.9*(-0.05) - 0.05 = 0.905
    p, m = np.array([1.0]), np.zeros(1)
    _step("sgd", p, g, 0.1, momentum=0.9, nesterov=True, momentums=m)
    assert p[0] == pytest.approx(0.905)


def test_adagrad_and_adam_first_step_by_hand():
    p, a, g = np.array([1.0]), np.array([0.1]), np.array([0.5])
    _step("adagrad", p, g, 0.001, epsilon=1e-7, accumulators=a)
    assert a[0] == pytest.approx(0.35)
    assert p[0] == pytest.approx(1 - 0.001 * 0.5 / math.sqrt(0.35 + 1e-7), rel=1e-15)
    # adam step 1: m = 0.1 g, v = 0.001 g^2, alpha = lr sqrt(0.001) / 0.1
    p, m, v = np.array([1.0]), np.zeros(1), np.zeros(1)
    _step("adam", p, g, 0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, momentums=m, velocities=v)
    alpha = 0.001 * math.sqrt(1 - 0.999) / (1 - 0.9)
    assert p[0] == pytest.approx(1 - alpha * 0.05 / (math.sqrt(0.001 * 0.25) + 1e-7), rel=1e-14)


def test_weight_decay_is_decoupled_and_applied_first():
    # Keras: p := p - p * wd * lr, then the rule with the gradient
    p, g = np.array([2.0]), np.array([0.5])
    _step("sgd", p, g, 0.1, weight_decay=0.01)
    assert p[0] == pytest.approx(2.0 - 2.0 * 0.01 * 0.1 - 0.1 * 0.5, rel=1e-15)


# ---- optimizers: a trajectory against a scalar loop written from the formulas --------------

def _scalar_trajectory(rule, p0, grads, **h):
    p, s1, s2, s3, prod = p0, h.get("init", 0.0), 0.0, 0.0, 1.0
    out = []
    for t, g in enumerate(grads, 1):
        p = p - p * h.get("wd", 0.0) * h["lr"]
        if rule == "sgd":
            s1 = h["mu"] * s1 - h["lr"] * g
            p = p + (h["mu"] * s1 - h["lr"] * g if h["nesterov"] else s1)
        elif rule == "adagrad":
            s1 += g * g
            p -= h["lr"] * g / math.sqrt(s1 + 1e-7)
        elif rule == "rmsprop":
            s1 = 0.9 * s1 + 0.1 * g * g
            s2 = 0.9 * s2 + 0.1 * g
            s3 = h["mu"] * s3 + h["lr"] * g / math.sqrt(s1 - s2 * s2 + 1e-7)
            p -= s3
        elif rule == "nadam":  # Keras 3's formula, beta_1 = 0.9, beta_2 = 0.999
            u_t, u_t1 = 0.9 * (1 - 0.5 * 0.96 ** t), 0.9 * (1 - 0.5 * 0.96 ** (t + 1))
            prod = prod * u_t
            s1 += (g - s1) * 0.1
            s2 += (g * g - s2) * 0.001
            m_hat = u_t1 * s1 / (1 - prod * u_t1) + (1 - u_t) * g / (1 - prod)
            p -= h["lr"] * m_hat / (math.sqrt(s2 / (1 - 0.999 ** t)) + 1e-7)
        else:  # adam with amsgrad
            s1 += (g - s1) * 0.1
            s2 += (g * g - s2) * 0.001
            s3 = max(s3, s2)
            p -= h["lr"] * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * s1 / (math.sqrt(s3) + 1e-7)
        out.append(p)
    return out


@pytest.mark.parametrize("rule", ["sgd", "sgd_nesterov", "adagrad", "rmsprop", "adam", "nadam"])
def test_optimizer_trajectory_matches_scalar_loop(rule):
    rng = np.random.default_rng(5)
    grads = rng.standard_normal(20)
    h = dict(lr=0.05, wd=0.01, mu=0.8, nesterov=rule == "sgd_nesterov", init=0.1 if rule == "adagrad" else 0.0)
    want = _scalar_trajectory(rule.split("_")[0], 1.5, grads, **h)
    p = np.array([1.5])
    hyper = {"sgd": dict(momentum=0.8, nesterov=h["nesterov"]), "adagrad": dict(epsilon=1e-7),
             "rmsprop": dict(rho=0.9, momentum=0.8, epsilon=1e-7),
             "adam": dict(beta_1=0.9, beta_2=0.999, epsilon=1e-7),
             "nadam": dict(beta_1=0.9, beta_2=0.999, epsilon=1e-7)}[rule.split("_")[0]]
    slots = {"sgd": ["momentums"], "adagrad": ["accumulators"],
             "rmsprop": ["velocities", "momentums", "average_gradients"],
             "adam": ["momentums", "velocities", "velocity_hats"],
             "nadam": ["momentums", "velocities"]}[rule.split("_")[0]]
    k = R.OptimizerStep(p, rule.split("_")[0], {**hyper, "weight_decay": h["wd"]},
                        {n: np.full(1, h["init"]) for n in slots})
    got, prod = [], 1.0
    for t, g in enumerate(grads, 1):
        prod *= 0.9 * (1 - 0.5 * 0.96 ** t)
        k.begin(h["lr"], t, prod)
        k.step(p, np.array([g]))
        got.append(p[0])
    np.testing.assert_allclose(got, want, rtol=1e-12)
