"""fastnn.losses against Keras 3: per-sample functions, loss objects (reduction, sample_weight,
label_smoothing, from_logits, ignore_class), configs and names; the NumPy twins of the loss
kernels against central finite differences, and the kernels' sample weights against a hand
computation.  (The C kernels against their twins: tests/test_kernels.py, every loss code.)"""
import math

import numpy as np
import pytest

import fastnn
from fastnn import _kernels as C
from fastnn import _reference as R
from fastnn import gradcheck, layers, losses, models
from fastnn._codes import LOSSES
from test_kernels import _loss_inputs
from tolerances import TOL
from conftest import numgrad

FUNCTIONS = ["categorical_crossentropy", "sparse_categorical_crossentropy",
             "binary_crossentropy", "mean_squared_error", "mean_absolute_error", "huber",
             "log_cosh", "kl_divergence", "poisson", "hinge", "categorical_hinge",
             "cosine_similarity", "mean_absolute_percentage_error",
             "mean_squared_logarithmic_error", "squared_hinge"]
CLASSES = {"categorical_crossentropy": losses.CategoricalCrossentropy,
           "sparse_categorical_crossentropy": losses.SparseCategoricalCrossentropy,
           "binary_crossentropy": losses.BinaryCrossentropy,
           "mean_squared_error": losses.MeanSquaredError,
           "mean_absolute_error": losses.MeanAbsoluteError, "huber": losses.Huber,
           "log_cosh": losses.LogCosh, "kl_divergence": losses.KLDivergence,
           "poisson": losses.Poisson, "hinge": losses.Hinge,
           "categorical_hinge": losses.CategoricalHinge,
           "cosine_similarity": losses.CosineSimilarity,
           "mean_absolute_percentage_error": losses.MeanAbsolutePercentageError,
           "mean_squared_logarithmic_error": losses.MeanSquaredLogarithmicError,
           "squared_hinge": losses.SquaredHinge}


def _inputs(name, shape, rng, dtype=np.float64):
    """(y_true, y_pred) of any shape (batch, ..., k) in the loss's domain."""
    n, k = math.prod(shape[:-1]), shape[-1]
    p, t = _loss_inputs(name, n, k, dtype, rng)
    return t.reshape(shape[:-1] if "sparse" in name else shape), p.reshape(shape)


# ---- functions: per-sample values ---------------------------------------------------------

@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("shape", [(5, 3), (1, 1), (2, 3, 4), (4,)])
def test_functions_return_one_value_per_sample(name, shape):
    rng = np.random.default_rng(0)
    t, p = _inputs(name, shape, rng)
    values = getattr(losses, name)(t, p)
    assert isinstance(values, np.ndarray) and values.shape == shape[:-1]
    # the same values as the kernel on the (samples, k) rows
    per = np.empty(math.prod(shape[:-1]))
    t2 = t.reshape(-1) if "sparse" in name else t.reshape(-1, shape[-1])
    R.loss_backward(None, p.reshape(-1, shape[-1]), t2, LOSSES[name], None, per)
    np.testing.assert_allclose(values.reshape(-1), per, rtol=1e-12)


def test_aliases_are_the_functions():
    assert losses.mse is losses.MSE is losses.mean_squared_error
    assert losses.mae is losses.MAE is losses.mean_absolute_error
    assert losses.kld is losses.KLD is losses.kl_divergence
    assert losses.bce is losses.BCE is losses.binary_crossentropy
    assert losses.mape is losses.MAPE is losses.mean_absolute_percentage_error
    assert losses.msle is losses.MSLE is losses.mean_squared_logarithmic_error


def test_per_sample_formulas_by_hand():
    t = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 2.0]])
    p = np.array([[0.5, 0.25, 3.0], [0.75, 0.2, 0.1]])
    e = p - t
    np.testing.assert_allclose(losses.mean_absolute_error(t, p), np.abs(e).mean(1))
    huber = np.where(np.abs(e) <= 1, 0.5 * e ** 2, np.abs(e) - 0.5).mean(1)
    np.testing.assert_allclose(losses.huber(t, p), huber)
    huber2 = np.where(np.abs(e) <= 2, 0.5 * e ** 2, 2 * np.abs(e) - 2).mean(1)
    np.testing.assert_allclose(losses.huber(t, p, delta=2.0), huber2)
    np.testing.assert_allclose(losses.log_cosh(t, p), np.log(np.cosh(e)).mean(1), rtol=1e-12)
    np.testing.assert_allclose(losses.poisson(t, p), (p - t * np.log(p + 1e-7)).mean(1))
    tc, pc = np.clip(t, 1e-7, 1), np.clip(p, 1e-7, 1)
    np.testing.assert_allclose(losses.kl_divergence(t, p), (tc * np.log(tc / pc)).sum(1))
    # t is not all 0/1: hinge takes it as is
    np.testing.assert_allclose(losses.hinge(t, p), np.maximum(1 - t * p, 0).mean(1))
    b = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # all 0/1: turned into -1/1
    np.testing.assert_allclose(losses.hinge(b, p), np.maximum(1 - (2 * b - 1) * p, 0).mean(1))
    neg, pos = ((1 - b) * p).max(1), (b * p).sum(1)
    np.testing.assert_allclose(losses.categorical_hinge(b, p), np.maximum(neg - pos + 1, 0))
    cos = -(t * p).sum(1) / np.linalg.norm(t, axis=1) / np.linalg.norm(p, axis=1)
    np.testing.assert_allclose(losses.cosine_similarity(t, p), cos, rtol=1e-12)
    z = np.array([[-3.0, 0.5, 20.0], [4.0, -0.25, -40.0]])
    sig = 1 / (1 + np.exp(-z))
    bce = -(b * np.log(sig) + (1 - b) * np.log(1 - sig)).mean(1)
    np.testing.assert_allclose(losses.binary_crossentropy(b, z, from_logits=True), bce,
                               rtol=1e-12)


# ---- Keras' documented values (keras/src/losses/losses.py docstrings, Keras 3.15) ---------

def test_keras_documented_values():
    # MeanSquaredError: y_true [1, 0, 1], y_pred [0.9, 0.1, 0.8] -> 0.02
    assert losses.MeanSquaredError()([1.0, 0.0, 1.0], [0.9, 0.1, 0.8]) == pytest.approx(0.02)
    # MeanAbsoluteError: [1, 0.3, 1], [1.9, 0.3, 1.8] -> 0.5666667
    assert losses.MeanAbsoluteError()([1.0, 0.3, 1.0], [1.9, 0.3, 1.8]) == pytest.approx(
        0.5666667, rel=1e-6)
    # BinaryCrossentropy(from_logits=True), examples 1 and 2
    assert losses.BinaryCrossentropy(from_logits=True)(
        np.array([0, 1, 0, 0]), np.array([-18.6, 0.51, 2.94, -12.8])) == pytest.approx(0.8654, abs=1e-4)
    yt, yp = np.array([[0, 1], [0, 0]]), np.array([[-18.6, 0.51], [2.94, -12.8]])
    bce = losses.BinaryCrossentropy(from_logits=True)
    assert bce(yt, yp) == pytest.approx(0.8654, abs=1e-4)
    assert bce(yt, yp, sample_weight=[0.8, 0.2]) == pytest.approx(0.243, abs=1e-3)
    assert losses.BinaryCrossentropy(from_logits=True, reduction="sum")(yt, yp) == pytest.approx(
        1.730, abs=1e-3)
    np.testing.assert_allclose(losses.BinaryCrossentropy(from_logits=True, reduction=None)(yt, yp),
                               [0.235, 1.496], atol=1e-3)
    # CategoricalCrossentropy and SparseCategoricalCrossentropy
    yt, yp = np.array([[0, 1, 0], [0, 0, 1]]), np.array([[0.05, 0.95, 0], [0.1, 0.8, 0.1]])
    for cls, y in [(losses.CategoricalCrossentropy, yt), (losses.SparseCategoricalCrossentropy,
                                                          np.array([1, 2]))]:
        assert cls()(y, yp) == pytest.approx(1.177, abs=1e-3)
        assert cls()(y, yp, sample_weight=np.array([0.3, 0.7])) == pytest.approx(0.814, abs=1e-3)
        assert cls(reduction="sum")(y, yp) == pytest.approx(2.354, abs=1e-3)
        np.testing.assert_allclose(cls(reduction=None)(y, yp), [0.0513, 2.303], atol=1e-3)
    np.testing.assert_allclose(losses.categorical_crossentropy(yt, yp), [0.0513, 2.303], atol=1e-3)
    np.testing.assert_allclose(losses.sparse_categorical_crossentropy([1, 2], yp),
                               [0.0513, 2.303], atol=1e-3)
    # binary_crossentropy: [[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]] -> [0.916, 0.714]
    np.testing.assert_allclose(losses.binary_crossentropy([[0, 1], [0, 0]],
                                                          [[0.6, 0.4], [0.4, 0.6]]),
                               [0.916, 0.714], atol=1e-3)
    # cosine_similarity -> [-0., -0.99999994, 0.99999994] (float32)
    np.testing.assert_allclose(
        losses.cosine_similarity(np.array([[0., 1.], [1., 1.], [1., 1.]], np.float32),
                                 np.array([[1., 0.], [1., 1.], [-1., -1.]], np.float32)),
        [0.0, -0.99999994, 0.99999994], atol=1e-7)
    # huber: the docstring's 0.155 is the mean of the per-sample [0.18, 0.13]
    values = losses.huber([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]])
    np.testing.assert_allclose(values, [0.18, 0.13])
    assert losses.Huber()([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]]) == pytest.approx(0.155)
    # log_cosh: [[0, 1], [0, 0]], [[1, 1], [0, 0]] -> 0.108 (the mean over the samples)
    assert losses.LogCosh()([[0., 1.], [0., 0.]], [[1., 1.], [0., 0.]]) == pytest.approx(0.108, abs=1e-3)


def test_mape_msle_squared_hinge_keras_documented_values():
    # MeanAbsolutePercentageError's docstring: [100, 200, 300], [90, 210, 310] -> 6.111111
    assert losses.MeanAbsolutePercentageError()([100.0, 200.0, 300.0], [90.0, 210.0, 310.0]) == \
        pytest.approx(6.111111, rel=1e-6)
    # keras/src/losses/losses_test.py (Keras 3.15): MAPE and MSLE on these, to 3 decimals
    yt = np.array([[1, 9, 2], [-5, -2, 6]], np.float32)
    yp = np.array([[4, 8, 12], [8, 1, 3]], np.float32)
    sw = np.array([[1.2], [3.4]])
    mape = losses.MeanAbsolutePercentageError
    assert mape()(yt, yp) == pytest.approx(211.8518, abs=1e-3)
    assert mape()(yt, yp, sample_weight=2.3) == pytest.approx(487.259, abs=1e-3)
    assert mape()(yt, yp, sample_weight=sw) == pytest.approx(422.8888, abs=1e-3)
    assert mape()(yt, yp, sample_weight=0) == pytest.approx(0.0, abs=1e-3)
    np.testing.assert_allclose(mape(reduction=None)(yt, yp, sample_weight=2.3),
                               [621.8518, 352.6666], rtol=1e-6)
    assert mape(reduction="mean_with_sample_weight")(yt, yp, sample_weight=sw) == \
        pytest.approx(183.865, abs=1e-3)
    assert mape()(yt, yt) == 0.0
    msle = losses.MeanSquaredLogarithmicError
    assert msle()(yt, yp) == pytest.approx(1.4370, abs=1e-3)
    assert msle()(yt, yp, sample_weight=2.3) == pytest.approx(3.3051, abs=1e-3)
    assert msle()(yt, yp, sample_weight=sw) == pytest.approx(3.7856, abs=1e-3)
    assert msle(reduction="mean_with_sample_weight")(yt, yp, sample_weight=sw) == \
        pytest.approx(1.646, abs=1e-3)
    # SquaredHinge: {0, 1} labels turned into {-1, 1}
    yt, yp = np.array([[0.0, 1.0], [0.0, 0.0]]), np.array([[0.6, 0.4], [0.4, 0.6]])
    sh = losses.SquaredHinge
    assert sh()(yt, yp) == pytest.approx(1.86, abs=1e-3)
    assert sh(reduction="sum")(yt, yp) == pytest.approx(3.72, abs=1e-3)
    np.testing.assert_allclose(sh(reduction=None)(yt, yp), [1.46, 2.26], rtol=1e-12)
    assert sh()(yt, yp, sample_weight=[1, 0]) == pytest.approx(0.73, abs=1e-3)
    np.testing.assert_allclose(sh(reduction=None)(yt, yp, sample_weight=[1, 0]), [1.46, 0.0],
                               rtol=1e-12)


def test_mape_msle_squared_hinge_by_hand():
    # MAPE divides by max(|t|, 1e-7): a zero target counts |p| / 1e-7
    t, p = np.array([[2.0, -4.0, 0.0]]), np.array([[1.0, -5.0, 1e-9]])
    np.testing.assert_allclose(losses.mean_absolute_percentage_error(t, p),
                               [100 * (0.5 + 0.25 + 0.01) / 3], rtol=1e-12)
    # MSLE: values <= 1e-7 count as 1e-7
    t, p = np.array([[0.0, 3.0, -2.0]]), np.array([[-1.0, 1.0, 2.0]])
    e = np.log1p(np.array([1e-7, 1.0, 2.0])) - np.log1p(np.array([1e-7, 3.0, 1e-7]))
    np.testing.assert_allclose(losses.mean_squared_logarithmic_error(t, p), [np.mean(e * e)],
                               rtol=1e-12)
    # squared hinge: t not all 0/1 is taken as is
    t, p = np.array([[-1.0, 1.0, 0.5]]), np.array([[0.5, 2.0, -1.0]])
    np.testing.assert_allclose(losses.squared_hinge(t, p), [(1.5 ** 2 + 0 + 1.5 ** 2) / 3],
                               rtol=1e-12)


# ---- reductions and sample weights --------------------------------------------------------

@pytest.mark.parametrize("name", FUNCTIONS)
def test_each_reduction_and_sample_weight(name):
    rng = np.random.default_rng(1)
    t, p = _inputs(name, (6, 4), rng)
    values = getattr(losses, name)(t, p)
    sw = rng.random(6)
    cls = CLASSES[name]
    # Keras: sum_over_batch_size and mean divide sum(w l) by the number of values, not sum(w)
    for reduction in ("sum_over_batch_size", "mean"):
        assert cls(reduction=reduction)(t, p) == pytest.approx(values.mean(), rel=1e-12)
        assert cls(reduction=reduction)(t, p, sample_weight=sw) == pytest.approx(
            (sw * values).sum() / 6, rel=1e-12)
    assert cls(reduction="sum")(t, p, sample_weight=sw) == pytest.approx((sw * values).sum(),
                                                                          rel=1e-12)
    assert cls(reduction="mean_with_sample_weight")(t, p, sample_weight=sw) == pytest.approx(
        (sw * values).sum() / sw.sum(), rel=1e-12)
    assert cls(reduction="mean_with_sample_weight")(t, p) == pytest.approx(values.mean(),
                                                                            rel=1e-12)
    for none in (None, "none"):
        np.testing.assert_allclose(cls(reduction=none)(t, p, sample_weight=sw), sw * values,
                                   rtol=1e-12)
        np.testing.assert_allclose(cls(reduction=none)(t, p), values, rtol=1e-12)


def test_sample_weight_broadcasts_as_in_keras():
    rng = np.random.default_rng(2)
    t, p = rng.random((5, 3)), rng.random((5, 3))
    values = losses.mean_squared_error(t, p)
    mse = losses.MeanSquaredError()
    assert mse(t, p, sample_weight=2.0) == pytest.approx(2 * values.mean())
    assert mse(t, p, sample_weight=[3.0]) == pytest.approx(3 * values.mean())
    sw = rng.random(5)
    assert mse(t, p, sample_weight=sw[:, None]) == pytest.approx((sw * values).mean())
    # reduction None with (batch, 1) weights: Keras expands the losses to (batch, 1)
    out = losses.MeanSquaredError(reduction=None)(t, p, sample_weight=sw[:, None])
    assert out.shape == (5, 1)
    np.testing.assert_allclose(out[:, 0], sw * values)
    # 3-D predictions: one weight per sample, broadcast over the middle axis
    t3, p3 = rng.random((2, 4, 3)), rng.random((2, 4, 3))
    v3 = losses.mean_squared_error(t3, p3)
    w3 = np.array([[0.5], [2.0]])
    assert mse(t3, p3, sample_weight=w3) == pytest.approx((v3 * w3).sum() / 8)
    with pytest.raises(ValueError, match=r"sample_weight broadcastable .* \(5,\)\. Received: "
                                         r"sample_weight.shape=\(4,\)"):
        mse(t, p, sample_weight=np.ones(4))


def test_kernel_sample_weights_against_a_hand_computation():
    """fnn_loss_backward's contract: returns sum_i sw_i l_i / n, per_sample = l unweighted,
    dp row i = sw_i / n d l_i / dp (the unweighted gradient times sw_i)."""
    rng = np.random.default_rng(3)
    n, k = 7, 5
    for name in LOSSES:
        for K in (C, R):
            for dtype in (np.float32, np.float64):
                p, t = _loss_inputs(name, n, k, dtype, rng)
                sw = rng.random(n).astype(dtype)
                sw[2] = 0
                dp1, dpw = np.empty((n, k), dtype), np.empty((n, k), dtype)
                l1, lw = np.empty(n, dtype), np.empty(n, dtype)
                mean = K.loss_backward(dp1, p, t, LOSSES[name], None, l1)
                value = K.loss_backward(dpw, p, t, LOSSES[name], sw, lw)
                np.testing.assert_array_equal(lw, l1)
                tol = TOL[dtype]
                assert mean == pytest.approx(l1.astype(np.float64).mean(), rel=tol["rtol"])
                assert value == pytest.approx((sw * l1.astype(np.float64)).sum() / n,
                                              rel=tol["rtol"], abs=tol["atol"])
                np.testing.assert_allclose(dpw, dp1 * sw[:, None], **tol)
    dp, p, t = np.empty((3, 2)), np.ones((3, 2)), np.ones((3, 2))
    with pytest.raises(ValueError, match=r"sample_weight with shape \(3,\)"):
        C.loss_backward(dp, p, t, LOSSES["mean_squared_error"], np.ones(2))
    with pytest.raises(TypeError, match="sample_weight with dtype float64"):
        C.loss_backward(dp, p, t, LOSSES["mean_squared_error"], np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"per_sample with shape \(3,\)"):
        C.loss_backward(dp, p, t, LOSSES["mean_squared_error"], None, np.ones((3, 1)))
    with pytest.raises(ValueError, match="grad not to share memory with per_sample"):
        C.loss_backward(dp, p, t, LOSSES["mean_squared_error"], None, dp.reshape(-1)[:3])
    with pytest.raises(ValueError, match="delta > 0"):
        C.huber_backward(dp, p, t, 0.0)


def test_loss_object_methods_pass_sample_weight_to_the_kernel():
    rng = np.random.default_rng(4)
    p, t = rng.random((4, 3)), rng.random((4, 3))
    sw = rng.random(4)
    loss = losses.MeanAbsoluteError()
    dp = np.empty_like(p)
    assert loss.value_and_grad(dp, p, t, sample_weight=sw) == pytest.approx(
        loss(t, p, sample_weight=sw), rel=1e-12)
    assert loss.value(p, t, sample_weight=sw) == pytest.approx((sw * losses.mae(t, p)).mean())
    np.testing.assert_allclose(dp, np.sign(p - t) / 3 * sw[:, None] / 4)


# ---- label smoothing, from_logits, ignore_class -------------------------------------------

def test_label_smoothing_smooths_the_targets():
    rng = np.random.default_rng(5)
    t = np.eye(4)[rng.integers(0, 4, 6)]
    p = rng.random((6, 4)) + 0.1
    # Keras: categorical t (1 - ls) + ls / classes; binary t (1 - ls) + ls / 2
    cce = losses.CategoricalCrossentropy(label_smoothing=0.2)
    assert cce(t, p) == pytest.approx(losses.CategoricalCrossentropy()(t * 0.8 + 0.05, p))
    np.testing.assert_allclose(losses.categorical_crossentropy(t, p, label_smoothing=0.2),
                               losses.categorical_crossentropy(t * 0.8 + 0.05, p))
    q = p / p.sum(1, keepdims=True)
    bce = losses.BinaryCrossentropy(label_smoothing=0.3)
    assert bce(t, q) == pytest.approx(losses.BinaryCrossentropy()(t * 0.7 + 0.15, q))
    np.testing.assert_allclose(losses.binary_crossentropy(t, q, label_smoothing=0.3),
                               losses.binary_crossentropy(t * 0.7 + 0.15, q))
    dp1, dp2 = np.empty_like(p), np.empty_like(p)
    cce.value_and_grad(dp1, p, t)
    losses.CategoricalCrossentropy().value_and_grad(dp2, p, t * 0.8 + 0.05)
    np.testing.assert_allclose(dp1, dp2)
    # the fused path smooths too
    dz1, dz2 = np.empty_like(p), np.empty_like(p)
    cce.fused_value_and_grad(dz1, q, t)
    np.testing.assert_allclose(dz1, (q - (t * 0.8 + 0.05)) / 6)
    del dz2


def test_from_logits_is_the_probability_form_after_sigmoid_or_softmax():
    rng = np.random.default_rng(6)
    z = rng.standard_normal((5, 3)) * 2
    e = np.exp(z - z.max(1, keepdims=True))
    soft, sig = e / e.sum(1, keepdims=True), 1 / (1 + np.exp(-z))
    b = rng.integers(0, 2, (5, 3)).astype(float)
    labels = rng.integers(0, 3, 5)
    onehot = np.eye(3)[labels]
    np.testing.assert_allclose(losses.binary_crossentropy(b, z, from_logits=True),
                               losses.binary_crossentropy(b, sig), rtol=1e-12)
    np.testing.assert_allclose(losses.categorical_crossentropy(onehot, z, from_logits=True),
                               losses.categorical_crossentropy(onehot, soft), rtol=1e-12)
    np.testing.assert_allclose(losses.sparse_categorical_crossentropy(labels, z, from_logits=True),
                               losses.sparse_categorical_crossentropy(labels, soft), rtol=1e-12)
    assert losses.BinaryCrossentropy(from_logits=True)(b, z) == pytest.approx(
        losses.BinaryCrossentropy()(b, sig), rel=1e-12)
    # the binary one from logits: the kernel's gradient is w.r.t. the logits
    bce = losses.BinaryCrossentropy(from_logits=True)
    assert not bce.softmax_logits and bce.code == LOSSES["sigmoid_binary_crossentropy"]
    dz = np.empty_like(z)
    bce.value_and_grad(dz, z, b)
    np.testing.assert_allclose(dz, (sig - b) / 15, rtol=1e-12)
    assert losses.CategoricalCrossentropy(from_logits=True).softmax_logits


def test_ignore_class_masks_as_keras():
    p = np.array([[0.05, 0.95, 0.0], [0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    y = np.array([1, -1, 2, -1])
    full = losses.sparse_categorical_crossentropy(np.array([1, 0, 2, 0]), p)
    values = losses.sparse_categorical_crossentropy(y, p, ignore_class=-1)
    np.testing.assert_allclose(values, [full[0], 0, full[2], 0])
    sw = np.array([1.0, 2.0, 3.0, 4.0])
    scce = losses.SparseCategoricalCrossentropy
    # Keras: the mean is over the valid samples (mask weight total / valid)
    assert scce(ignore_class=-1)(y, p) == pytest.approx((full[0] + full[2]) / 2)
    assert scce(ignore_class=-1)(y, p, sample_weight=sw) == pytest.approx(
        (full[0] + 3 * full[2]) / 2)
    assert scce(ignore_class=-1, reduction="sum")(y, p, sample_weight=sw) == pytest.approx(
        full[0] + 3 * full[2])
    assert scce(ignore_class=-1, reduction="mean_with_sample_weight")(
        y, p, sample_weight=sw) == pytest.approx((full[0] + 3 * full[2]) / 4)
    np.testing.assert_allclose(scce(ignore_class=-1, reduction=None)(y, p, sample_weight=sw),
                               [full[0], 0, 3 * full[2], 0])
    # the training side: the same value, and no gradient from the ignored samples
    dp = np.empty_like(p)
    loss = scce(ignore_class=-1)
    t = loss.prepare_targets(y, 3, np.float64)
    assert loss.value_and_grad(dp, p, t) == pytest.approx((full[0] + full[2]) / 2)
    assert np.all(dp[[1, 3]] == 0) and np.all(dp[[0, 2]] != 0)
    assert not loss.kernel_only
    assert scce(ignore_class=-1)(np.array([-1, -1]), p[:2]) == 0.0  # no valid sample: 0


# ---- the twins' gradients ----------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in LOSSES if "softmax" not in n])
def test_twins_match_finite_differences(name):
    rng = np.random.default_rng(7)
    n, k = 4, 5
    p, t = _loss_inputs(name, n, k, np.float64, rng)
    if name in ("kl_divergence", "poisson"):
        p = rng.uniform(0.05, 0.9, (n, k))  # inside the clip range
    if name == "cosine_similarity":
        p = rng.standard_normal((n, k))
    if name == "mean_absolute_percentage_error":
        t[0, 0] = 0.5  # not 0: |p| / 1e-7 would make the sum too large for differences of h
    sw = rng.random(n) + 0.5
    dp = np.empty_like(p)
    value = R.loss_backward(dp, p, t, LOSSES[name], sw)
    assert value == pytest.approx(R.loss_backward(None, p, t, LOSSES[name], sw), rel=1e-15)
    # away from the kinks (|e| = delta, margin 0, a tie of the max): central differences
    np.testing.assert_allclose(dp, numgrad(lambda: R.loss_backward(None, p, t, LOSSES[name], sw), p),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("delta", [0.3, 2.0])
def test_huber_twin_with_delta_matches_finite_differences(delta):
    rng = np.random.default_rng(8)
    p, t = rng.standard_normal((3, 4)) * 2, rng.standard_normal((3, 4))
    dp = np.empty_like(p)
    R.huber_backward(dp, p, t, delta)
    np.testing.assert_allclose(dp, numgrad(lambda: R.huber_backward(None, p, t, delta), p),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("sparse", [False, True])
def test_fused_softmax_twins_with_weights_are_the_gradient_through_softmax(sparse):
    rng = np.random.default_rng(9)
    z = rng.standard_normal((5, 4)) * 2
    labels = rng.integers(0, 4, 5)
    t = labels if sparse else rng.dirichlet(np.ones(4), 5)
    sw = rng.random(5)
    plain, fused = ("sparse_categorical_crossentropy", "sparse_softmax_crossentropy") if sparse \
        else ("categorical_crossentropy", "softmax_crossentropy")

    def loss():
        p = np.empty_like(z)
        R.act_forward(p, z, R.SOFTMAX, ())
        return R.loss_backward(None, p, t, LOSSES[plain], sw)

    p, dz = np.empty_like(z), np.empty_like(z)
    R.act_forward(p, z, R.SOFTMAX, ())
    assert R.loss_backward(dz, p, t, LOSSES[fused], sw) == pytest.approx(loss(), rel=1e-14)
    np.testing.assert_allclose(dz, numgrad(loss, z), rtol=1e-6, atol=1e-8)


# ---- through a model: the training step's gradient ----------------------------------------

@pytest.mark.parametrize("loss,act,kind", [
    (losses.MeanAbsoluteError(), "linear", "real"), (losses.Huber(delta=0.7), "linear", "real"),
    (losses.LogCosh(), "linear", "real"), (losses.Poisson(), "softplus", "count"),
    (losses.KLDivergence(), "softmax", "dist"), (losses.Hinge(), "tanh", "binary"),
    (losses.CategoricalHinge(), "linear", "onehot"),
    (losses.CosineSimilarity(), "linear", "real"),
    (losses.MeanAbsolutePercentageError(), "linear", "real"),
    (losses.MeanSquaredLogarithmicError(), "relu", "count"),
    (losses.SquaredHinge(), "tanh", "binary"),
    (losses.BinaryCrossentropy(from_logits=True), "linear", "binary"),
    (losses.BinaryCrossentropy(label_smoothing=0.2), "sigmoid", "binary"),
    (losses.CategoricalCrossentropy(label_smoothing=0.1), "softmax", "onehot"),
    (losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1), "linear", "onehot"),
    (losses.SparseCategoricalCrossentropy(ignore_class=1), "softmax", "labels"),
    (losses.MeanSquaredError(reduction="sum"), "linear", "real")])
def test_training_gradient_and_loss_value(loss, act, kind):
    """fastnn.gradcheck: the step's analytic gradient (value_and_grad / the fused kernels) is
    the gradient of the step's loss; and fit's loss is the loss object's value."""
    if act == "softplus":
        act = "relu"  # positive predictions for poisson: relu of a positive bias
    rng = np.random.default_rng(10)
    x = rng.standard_normal((12, 4))
    y = {"real": rng.standard_normal((12, 3)), "count": rng.integers(0, 3, (12, 3)).astype(float),
         "dist": rng.dirichlet(np.ones(3), 12), "binary": rng.integers(0, 2, (12, 3)).astype(float),
         "onehot": np.eye(3)[rng.integers(0, 3, 12)], "labels": rng.integers(0, 3, 12)}[kind]
    m = models.Sequential([layers.Input((4,)), layers.Dense(5, activation="tanh"),
                           layers.Dense(3, activation=act,
                                        bias_initializer="ones" if act == "relu" else "zeros")],
                          seed=0)
    m.compile(optimizer="sgd", loss=loss)
    worst = gradcheck(m, x, y)
    assert max(worst.values()) < 1e-5, worst
    m.fit(x.astype(np.float32), y, epochs=2, batch_size=4, verbose=0)
    pred = m.predict(x.astype(np.float32), verbose=0)
    assert m.evaluate(x.astype(np.float32), y, verbose=0) == pytest.approx(
        loss(y, pred), rel=1e-4)


@pytest.mark.parametrize("loss", ["mae", "huber", "log_cosh", "hinge", "categorical_hinge",
                                  "cosine_similarity", "kl_divergence", "poisson",
                                  "mape", "msle", "squared_hinge",
                                  losses.BinaryCrossentropy(from_logits=True)])
def test_compiled_step_equals_the_layer_by_layer_step(loss):
    """The compiled step runs the new kernels through the dispatcher: bit-identical weights."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((20, 6)).astype(np.float32)
    y = rng.random((20, 3)).astype(np.float32)
    weights = []
    for jit in (True, False):
        m = models.Sequential([layers.Input((6,)), layers.Dense(8, activation="relu"),
                               layers.Dense(3, activation="softmax")], seed=1)
        m.compile(optimizer="adam", loss=loss, jit_compile=jit)
        m.fit(x, y, epochs=2, batch_size=5, verbose=0, shuffle=False)
        weights.append(m.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


# ---- configs, names, errors -----------------------------------------------------------------

@pytest.mark.parametrize("cls", list(CLASSES.values()))
def test_get_config_from_config_round_trip(cls):
    loss = cls(reduction="sum", name="custom")
    cfg = loss.get_config()
    assert cfg["name"] == "custom" and cfg["reduction"] == "sum"
    again = cls.from_config(cfg)
    assert type(again) is cls and again.get_config() == cfg
    assert losses.deserialize(losses.serialize(loss)).get_config() == cfg
    assert losses.from_config(losses.serialize(loss)).get_config() == cfg
    assert cls().name == losses.serialize(cls())["config"]["name"]


def test_keras_configs():
    # the keys and defaults Keras 3.15's get_config gives
    assert losses.CategoricalCrossentropy().get_config() == {
        "name": "categorical_crossentropy", "reduction": "sum_over_batch_size",
        "from_logits": False, "label_smoothing": 0.0, "axis": -1}
    assert losses.SparseCategoricalCrossentropy(ignore_class=-1).get_config() == {
        "name": "sparse_categorical_crossentropy", "reduction": "sum_over_batch_size",
        "from_logits": False, "ignore_class": -1}
    assert losses.Huber().get_config() == {"name": "huber_loss",
                                           "reduction": "sum_over_batch_size", "delta": 1.0}
    assert losses.CosineSimilarity().get_config() == {"name": "cosine_similarity",
                                                      "reduction": "sum_over_batch_size"}
    assert losses.serialize(losses.mse) == {"module": "builtins", "class_name": "function",
                                            "config": "mean_squared_error",
                                            "registered_name": "function"}
    # Keras' positional order
    bce = losses.BinaryCrossentropy(True, 0.1, -1, "sum", "b")
    assert (bce.from_logits, bce.label_smoothing, bce.reduction, bce.name) == (True, 0.1, "sum", "b")
    scce = losses.SparseCategoricalCrossentropy(True, 3, "sum")
    assert (scce.from_logits, scce.ignore_class, scce.reduction) == (True, 3, "sum")
    assert losses.Huber(2.0, "sum").delta == 2.0


@pytest.mark.parametrize("name,cls", [
    ("mse", losses.MeanSquaredError), ("MSE", losses.MeanSquaredError),
    ("mae", losses.MeanAbsoluteError), ("kld", losses.KLDivergence),
    ("bce", losses.BinaryCrossentropy), ("huber", losses.Huber), ("Huber", losses.Huber),
    ("log_cosh", losses.LogCosh), ("CategoricalHinge", losses.CategoricalHinge),
    ("cosine_similarity", losses.CosineSimilarity), ("Poisson", losses.Poisson),
    ("mape", losses.MeanAbsolutePercentageError), ("MAPE", losses.MeanAbsolutePercentageError),
    ("MeanAbsolutePercentageError", losses.MeanAbsolutePercentageError),
    ("msle", losses.MeanSquaredLogarithmicError),
    ("mean_squared_logarithmic_error", losses.MeanSquaredLogarithmicError),
    ("squared_hinge", losses.SquaredHinge), ("SquaredHinge", losses.SquaredHinge)])
def test_get_by_name(name, cls):
    assert type(losses.get(name)) is cls
    assert type(losses.get(getattr(losses, name))) is cls
    assert type(losses.deserialize(name)) is cls


def test_old_fastnn_configs_still_load():
    assert losses.from_config({"name": "mean_squared_error", "from_logits": False}).name == \
        "mean_squared_error"
    assert losses.from_config({"name": "categorical_crossentropy", "from_logits": True}).from_logits
    with pytest.raises(TypeError, match="from_logits to be a bool"):
        losses.from_config({"name": "categorical_crossentropy", "from_logits": 1})


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"reduction.*Received: reduction='average'"):
        losses.MeanSquaredError(reduction="average")
    with pytest.raises(ValueError, match=r"label_smoothing to be a float in \[0, 1\]. Received: "
                                         r"label_smoothing=1.5"):
        losses.CategoricalCrossentropy(label_smoothing=1.5)
    with pytest.raises(ValueError, match="delta to be a positive float. Received: delta=0"):
        losses.Huber(delta=0)
    with pytest.raises(ValueError, match="axis=-1.*Received: axis=0"):
        losses.BinaryCrossentropy(axis=0)
    with pytest.raises(ValueError, match="ignore_class to be an int or None"):
        losses.SparseCategoricalCrossentropy(ignore_class="void")
    with pytest.raises(TypeError, match="from_logits to be a bool"):
        losses.CategoricalCrossentropy(from_logits="yes")
    with pytest.raises(ValueError, match="Expected loss to be one of .*Received: loss='dice'"):
        losses.get("dice")
    with pytest.raises(ValueError, match=r"labels in \[0, 3\).*Received: a label 3"):
        losses.sparse_categorical_crossentropy([0, 3], np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"Expected y with shape \(batch, 3\)"):
        losses.mean_absolute_error(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="reduced to a scalar for training"):
        losses.MeanSquaredError(reduction=None).value_and_grad(np.empty((1, 1)), np.ones((1, 1)),
                                                               np.ones((1, 1)))
    with pytest.raises(ValueError, match="Expected a loss class"):
        losses.deserialize({"class_name": "Dice", "config": {}})
    with pytest.raises(ValueError, match="Expected a config of Huber"):
        losses.deserialize({"class_name": "Huber", "config": {"alpha": 1}})


def test_numpy_backend_gives_the_same_values():
    rng = np.random.default_rng(12)
    t, p = _inputs("huber", (4, 3), rng)
    before = fastnn.get_backend()
    try:
        fastnn.set_backend("numpy")
        ref = losses.Huber(0.5)(t, p, sample_weight=np.arange(4.0))
    finally:
        fastnn.set_backend(before)
    assert losses.Huber(0.5)(t, p, sample_weight=np.arange(4.0)) == pytest.approx(ref, rel=1e-12)
