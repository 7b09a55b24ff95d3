"""The Keras layers of issue #11 (fastnn/layers.py, the block at its end), regularizers and
constraints: the NumPy twins of the normalization/PReLU kernels against central finite
differences in float64 (the kernels against the twins are in tests/test_kernels.py), Keras'
training semantics (moving statistics, frozen layers), Keras' documented examples, penalties in
the loss and their gradients, constraints after a step, Normalization.adapt, files (fastnn's,
Keras'), ONNX and a small training run.  Hard-coded values come from Keras' docstrings (cited)
or from hand computations stated beside them."""
import numpy as np
import pytest

import fastnn
from fastnn import _reference as R
from fastnn import constraints, layers, models, optimizers, regularizers
from tolerances import TOL

C = pytest.importorskip("fastnn._kernels")

F64 = TOL[np.float64]


def _model(*ls, shape, seed=0, dtype=None):
    m = models.Sequential(list(ls), seed=seed)
    m.build((None, *shape))
    return m


# ---- the twins against finite differences (float64) ------------------------------------------

def _numeric_grad(f, a, h=1e-6):
    """Central differences of the scalar f() with respect to every element of a (in place)."""
    g = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        keep = a[i]
        a[i] = keep + h
        up = f()
        a[i] = keep - h
        down = f()
        a[i] = keep
        g[i] = (up - down) / (2 * h)
    return g


@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_twin_gradient_matches_finite_differences(affine):
    rng = np.random.default_rng(0)
    n, m = 5, 3
    x = rng.standard_normal((n, m)) * 2 + 1
    gamma, beta = rng.standard_normal(m), rng.standard_normal(m)
    r = rng.standard_normal((n, m))  # loss = sum(r * y): dy = r
    g, b = (gamma, beta) if affine else (None, None)

    def loss():
        y, mean, var = np.empty_like(x), np.empty(m), np.empty(m)
        R.batchnorm_forward(y, mean, var, x, g, b, 1e-3, True)
        return float((r * y).sum())
    y, mean, var = np.empty_like(x), np.empty(m), np.empty(m)
    R.batchnorm_forward(y, mean, var, x, g, b, 1e-3, True)
    dx, dg, db = np.empty_like(x), np.empty(m), np.empty(m)
    R.batchnorm_backward(dx, dg, db, r.copy(), x, mean, var, g, 1e-3)
    np.testing.assert_allclose(dx, _numeric_grad(loss, x), rtol=1e-6, atol=1e-8)
    if affine:
        np.testing.assert_allclose(dg, _numeric_grad(loss, gamma), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(db, _numeric_grad(loss, beta), rtol=1e-6, atol=1e-8)
    # the statistics are Keras' (biased variance)
    np.testing.assert_allclose(mean, x.mean(0), **F64)
    np.testing.assert_allclose(var, x.var(0), **F64)


@pytest.mark.parametrize("affine", [True, False])
def test_layernorm_twin_gradient_matches_finite_differences(affine):
    rng = np.random.default_rng(1)
    n, m = 4, 6
    x = rng.standard_normal((n, m)) * 3 - 1
    gamma, beta = rng.standard_normal(m), rng.standard_normal(m)
    r = rng.standard_normal((n, m))
    g, b = (gamma, beta) if affine else (None, None)

    def forward():
        y, mean, rstd = np.empty_like(x), np.empty(n), np.empty(n)
        R.layernorm_forward(y, mean, rstd, x, g, b, 1e-3)
        return y, mean, rstd
    y, mean, rstd = forward()
    # y by hand: (x - mean) / sqrt(var + eps) * gamma + beta, per row
    want = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-3)
    np.testing.assert_allclose(y, want * gamma + beta if affine else want, **F64)
    dx, dg, db = np.empty_like(x), np.empty(m), np.empty(m)
    R.layernorm_backward(dx, dg if affine else None, db if affine else None, r.copy(), x, mean,
                         rstd, g)
    loss = lambda: float((r * forward()[0]).sum())  # noqa: E731
    np.testing.assert_allclose(dx, _numeric_grad(loss, x), rtol=1e-6, atol=1e-8)
    if affine:
        np.testing.assert_allclose(dg, _numeric_grad(loss, gamma), rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(db, _numeric_grad(loss, beta), rtol=1e-6, atol=1e-8)


def test_prelu_twin_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 4))
    x[np.abs(x) < 0.05] = 0.5  # away from the kink
    alpha, r = rng.standard_normal(4), rng.standard_normal((6, 4))

    def loss():
        y = np.empty_like(x)
        R.prelu_forward(y, x, alpha)
        return float((r * y).sum())
    dx, da = np.empty_like(x), np.empty(4)
    R.prelu_backward(dx, da, r.copy(), x, alpha)
    np.testing.assert_allclose(dx, _numeric_grad(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(da, _numeric_grad(loss, alpha), rtol=1e-6, atol=1e-8)


def test_kernels_refuse_bad_operands():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="mean"):
        C.batchnorm_forward(np.empty_like(x), np.empty(3, np.float32), np.empty(4, np.float32),
                            x, None, None, 1e-3, True)
    with pytest.raises(TypeError, match="gamma"):
        C.layernorm_forward(np.empty_like(x), np.empty(3, np.float32), np.empty(3, np.float32),
                            x, np.ones(4), None, 1e-3)
    with pytest.raises(ValueError, match="epsilon"):
        C.batchnorm_forward(np.empty_like(x), np.empty(4, np.float32), np.empty(4, np.float32),
                            x, None, None, 0.0, True)
    with pytest.raises(ValueError, match="share memory"):
        C.prelu_forward(x, x, np.ones(4, np.float32))


# ---- BatchNormalization: Keras' training semantics -----------------------------------------

def test_batchnorm_moving_statistics_follow_keras_update():
    """fit without shuffling: after each batch, moving := moving * momentum + batch_stat *
    (1 - momentum), with the batch's biased variance (Keras' formula), computed here by hand."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((24, 4)) * [1, 2, 3, 4] + [0, 1, -1, 5]
    y = rng.standard_normal((24, 2))
    bn = layers.BatchNormalization(momentum=0.9, dtype="float64")
    m = _model(bn, layers.Dense(2, dtype="float64"), shape=(4,))
    m.compile(optimizers.SGD(0.01), "mse")
    m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    mm, mv = np.zeros(4), np.ones(4)
    for _ in range(2):
        for s in range(0, 24, 8):
            b = x[s:s + 8]
            mm = mm * 0.9 + b.mean(0) * (1 - 0.9)
            mv = mv * 0.9 + b.var(0) * (1 - 0.9)
    np.testing.assert_allclose(bn.moving_mean, mm, **F64)
    np.testing.assert_allclose(bn.moving_variance, mv, **F64)
    assert [w.shape for w in bn.weights] == [(4,)] * 4  # gamma, beta, moving_mean, moving_var
    assert len(bn.trainable_weights) == 2 and len(bn.non_trainable_weights) == 2


def test_batchnorm_training_uses_batch_statistics_and_inference_moving_ones():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((10, 3)) * 2 + 1
    bn = layers.BatchNormalization(dtype="float64")
    m = _model(bn, shape=(3,))
    bn.gamma[...] = [1.0, 2.0, 0.5]
    bn.beta[...] = [0.0, -1.0, 3.0]
    bn.moving_mean[...] = [0.5, 0.1, -0.2]
    bn.moving_variance[...] = [2.0, 1.5, 0.7]
    infer = (x - bn.moving_mean) / np.sqrt(bn.moving_variance + 1e-3) * bn.gamma + bn.beta
    np.testing.assert_allclose(m.predict(x, verbose=0), infer, **F64)
    np.testing.assert_allclose(m(x), infer, **F64)  # training=False by default
    train = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3) * bn.gamma + bn.beta
    np.testing.assert_allclose(m(x, training=True), train, **F64)
    # that call updated the moving statistics, as Keras' layer(x, training=True) does
    np.testing.assert_allclose(bn.moving_mean, np.array([0.5, 0.1, -0.2]) * 0.99
                               + x.mean(0) * 0.01, **F64)


def test_frozen_batchnorm_uses_moving_statistics_in_training():
    """Keras: `if training and self.trainable` -- a frozen layer normalizes with its moving
    statistics and leaves them, even in fit."""
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((16, 3)), rng.standard_normal((16, 3))
    bn = layers.BatchNormalization(dtype="float64")
    m = _model(bn, layers.Dense(3, dtype="float64"), shape=(3,))
    bn.trainable = False
    m.compile(optimizers.SGD(0.1), "mse")
    before = [w.copy() for w in bn.weights]
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for a, b in zip(before, bn.weights):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(m(x, training=True), m(x), **F64)


@pytest.mark.parametrize("axis", [1, -2])
def test_batchnorm_on_another_axis(axis):
    """Features on axis 1 of (batch, 3, 4) samples: statistics over axes 0 and 2."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 3, 4))
    bn = layers.BatchNormalization(axis=axis, dtype="float64")
    m = _model(bn, shape=(3, 4))
    assert bn.gamma.shape == (3,)
    mean, var = x.mean((0, 2), keepdims=True), x.var((0, 2), keepdims=True)
    np.testing.assert_allclose(m(x, training=True), (x - mean) / np.sqrt(var + 1e-3), **F64)


def test_batchnorm_and_dense_train_on_a_tiny_dataset():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((64, 5)).astype("float32") * 3 + 2
    y = np.eye(3, dtype="float32")[(x[:, 0] > 2).astype(int) + (x[:, 1] > 4).astype(int)]
    m = models.Sequential([layers.Input(shape=(5,)), layers.Dense(16),
                           layers.BatchNormalization(), layers.ReLU(),
                           layers.Dense(3, activation="softmax")], seed=1)
    m.compile(optimizers.Adam(0.01), "categorical_crossentropy", metrics=["accuracy"])
    assert m.trainer.compiled_step(m.optimizer, x, y, 8) is None  # layer by layer
    before = m.evaluate(x, y, verbose=0)[0]
    hist = m.fit(x, y, epochs=20, batch_size=8, verbose=0).history
    assert hist["loss"][-1] < 0.5 * hist["loss"][0]
    loss, acc = m.evaluate(x, y, verbose=0)  # inference (moving statistics) learned it too
    assert loss < 0.3 * before and acc > 0.8


# ---- LayerNormalization, PReLU -----------------------------------------------------------------

def test_layernorm_keras_example_shapes_and_values():
    # Keras' docstring: LayerNormalization(axis=[1, 2, 3]) built for [5, 20, 30, 40] has gamma
    # and beta of shape (20, 30, 40)
    ln = layers.LayerNormalization(axis=[1, 2, 3], dtype="float64")
    m = _model(ln, shape=(20, 30, 40))
    assert ln.gamma.shape == ln.beta.shape == (20, 30, 40) and ln.axis == [1, 2, 3]
    # keras.ops.layer_normalization(arange(5)) = [-1.4142135, -0.70710677, 0, 0.7071067,
    # 1.4142135] with epsilon 1e-7; with the layer's 1e-3: (x - 2) / sqrt(2 + 1e-3)
    ln2 = layers.LayerNormalization(dtype="float64")
    m2 = _model(ln2, shape=(5,))
    np.testing.assert_allclose(m2(np.arange(5.0)[None]), [(np.arange(5.0) - 2) / np.sqrt(2.001)],
                               **F64)
    x = np.random.default_rng(8).standard_normal((2, 20, 30, 40))
    want = (x - x.mean((1, 2, 3), keepdims=True)) / np.sqrt(x.var((1, 2, 3), keepdims=True)
                                                            + 1e-3)
    np.testing.assert_allclose(m(x), want, **F64)


def test_layernorm_on_a_middle_axis_and_its_gradient():
    """axis=1 of (batch, 3, 4): each (sample, column) normalized over the 3 rows; the layer's
    backward (through the transposes) against finite differences of its forward."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 4))
    ln = layers.LayerNormalization(axis=1, dtype="float64")
    m = _model(ln, shape=(3, 4))
    ln.gamma[...] = [1.0, -2.0, 0.5]
    ln.beta[...] = [0.1, 0.2, 0.3]
    want = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-3)
    np.testing.assert_allclose(m(x), want * ln.gamma[:, None] + ln.beta[:, None], **F64)
    r = rng.standard_normal(x.shape)
    ln.call(x, training=True)
    dx = ln.backward(r.copy(), need_dx=True)
    np.testing.assert_allclose(dx, _numeric_grad(lambda: float((m(x) * r).sum()), x),
                               rtol=1e-6, atol=1e-8)


def test_prelu_shared_axes_and_gradient():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((4, 3, 5))
    p = layers.PReLU(alpha_initializer="random_normal", shared_axes=[1], dtype="float64")
    m = _model(p, shape=(3, 5))
    assert p.alpha.shape == (1, 5)
    np.testing.assert_allclose(m(x), np.where(x > 0, x, p.alpha * x), **F64)
    m.compile(optimizers.SGD(0.1), "mse")
    r = rng.standard_normal(x.shape)
    p.call(x, training=True)
    p.backward(r.copy(), need_dx=True)
    want = (r * np.minimum(x, 0)).sum(axis=(0, 1), keepdims=True)[0]
    np.testing.assert_allclose(p.grads[0], want, **F64)
    # Keras' default alpha is zeros: a plain relu
    assert np.all(_model(layers.PReLU(), shape=(3,)).layers[0].alpha == 0)


# ---- activation layers, Keras' documented examples ------------------------------------------

def _apply(layer, x):
    x = np.asarray(x, "float32")
    return _model(layer, shape=x.shape[1:])(x)


def test_relu_leakyrelu_softmax_keras_examples():
    x = [[-10, -5, 0.0, 5, 10]]
    # keras.layers.ReLU docstring: ReLU(max_value=10, negative_slope=0.5, threshold=0)
    np.testing.assert_allclose(_apply(layers.ReLU(max_value=10, negative_slope=0.5), x),
                               [[-5.0, -2.5, 0.0, 5.0, 10.0]])
    # keras.activations.relu docstring: max_value=5 -> [0, 0, 0, 5, 5]; threshold=5 ->
    # [-0, -0, 0, 0, 10]; negative_slope=0.5 -> [-5, -2.5, 0, 5, 10]
    np.testing.assert_allclose(_apply(layers.ReLU(max_value=5.0), x), [[0, 0, 0, 5, 5]])
    np.testing.assert_allclose(_apply(layers.ReLU(threshold=5.0), x), [[0, 0, 0, 0, 10]])
    np.testing.assert_allclose(_apply(layers.ReLU(negative_slope=0.5), x),
                               [[-5.0, -2.5, 0.0, 5.0, 10.0]])
    # keras.layers.LeakyReLU docstring: negative_slope=0.5
    np.testing.assert_allclose(_apply(layers.LeakyReLU(negative_slope=0.5), x),
                               [[-5.0, -2.5, 0.0, 5.0, 10.0]])
    assert layers.LeakyReLU().negative_slope == 0.3  # the layer's default (the function: 0.2)
    # keras.layers.Softmax docstring: [1, 2, 1] -> [0.21194157, 0.5761169, 0.21194157]
    np.testing.assert_allclose(_apply(layers.Softmax(), [[1.0, 2.0, 1.0]]),
                               [[0.21194157, 0.5761169, 0.21194157]], rtol=1e-6)


def test_relu_with_threshold_and_cap_trains_with_its_gradient():
    """The NumPy path (max_value, threshold): f'(x) = 1 on (threshold, max_value), 0 above,
    negative_slope below the threshold; by hand on chosen points."""
    r = layers.ReLU(max_value=2.0, negative_slope=0.25, threshold=0.5, dtype="float64")
    x = np.array([[-1.0, 0.2, 1.0, 3.0]])
    m = _model(r, shape=(4,))
    # x > 0.5: min(x, 2); else 0.25 * (x - 0.5)
    np.testing.assert_allclose(m(x), [[-0.375, -0.075, 1.0, 2.0]], **F64)
    r.call(x, training=True)
    np.testing.assert_allclose(r.backward(np.ones((1, 4)), True), [[0.25, 0.25, 1.0, 0.0]], **F64)


def test_softmax_layer_over_an_inner_axis_and_fused_with_the_loss():
    x = np.random.default_rng(11).standard_normal((3, 4, 2))
    e = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(_apply(layers.Softmax(axis=1, dtype="float64"), x),
                               e / e.sum(1, keepdims=True), **TOL[np.float32])
    m = models.Sequential([layers.Dense(3, input_shape=(4,)), layers.Softmax()])
    m.compile("sgd", "categorical_crossentropy")
    assert m.trainer.fused  # a last-axis Softmax fuses with crossentropy, as Dense(softmax)


def test_argument_validation_names_the_argument():
    cases = [(lambda: layers.ReLU(max_value=-1), "max_value"),
             (lambda: layers.ReLU(negative_slope=-0.1), "negative_slope"),
             (lambda: layers.ReLU(threshold=-1), "threshold"),
             (lambda: layers.LeakyReLU(negative_slope=-1), "negative_slope"),
             (lambda: layers.GaussianNoise(1.5), "stddev"),
             (lambda: layers.Reshape((2, -1, -1)), "target_shape"),
             (lambda: layers.Reshape((-2, 3)), "target_shape"),
             (lambda: layers.BatchNormalization(renorm=True), "renorm"),
             (lambda: layers.BatchNormalization(axis=[1, 2]), "axis"),
             (lambda: layers.Normalization(mean=1.0), "variance"),
             (lambda: layers.Normalization(mean=[1.0, 2.0], variance=[1.0]), "same shape"),
             (lambda: regularizers.L2(-1.0), "l2"),
             (lambda: regularizers.L1L2(l1=float("nan")), "l1"),
             (lambda: regularizers.get("l3"), "regularizer"),
             (lambda: constraints.get("max"), "constraint")]
    for make, word in cases:
        with pytest.raises(ValueError, match=word):
            make()
    with pytest.raises(TypeError, match="axis"):
        layers.LayerNormalization(axis="last")
    with pytest.raises(ValueError, match="total size"):
        _model(layers.Reshape((5, -1)), shape=(12,))
    with pytest.raises(ValueError, match="out of bounds"):
        _model(layers.BatchNormalization(axis=3), shape=(4,))


# ---- GaussianNoise, Reshape, Rescaling ---------------------------------------------------------

def test_gaussian_noise_only_in_training():
    x = np.zeros((2000, 5))
    m = _model(layers.GaussianNoise(0.3, seed=1, dtype="float64"), shape=(5,))
    np.testing.assert_array_equal(m(x), x)  # inference: the identity
    noisy = m(x, training=True)
    # 10000 draws of N(0, 0.09): the sample std within 3% of 0.3 (its standard error is 0.7%)
    assert abs(noisy.std() - 0.3) < 0.01 and abs(noisy.mean()) < 0.02


def test_reshape_keras_examples():
    # keras.layers.Reshape docstring: (None, 12) -> Reshape((3, 4)) -> (None, 3, 4);
    # Reshape((-1, 2, 2)) -> (None, 3, 2, 2)
    assert _model(layers.Reshape((3, 4)), shape=(12,)).output_shape == (None, 3, 4)
    m = _model(layers.Reshape((-1, 2, 2)), shape=(12,))
    assert m.output_shape == (None, 3, 2, 2)
    x = np.arange(24.0).reshape(2, 12)
    np.testing.assert_array_equal(m(x), x.reshape(2, 3, 2, 2))


def test_rescaling_and_its_gradient():
    m = _model(layers.Rescaling(1 / 255.0, offset=-1.0, dtype="float64"), layers.Dense(1),
               shape=(3,))
    np.testing.assert_allclose(m.layers[0].call(np.array([[0.0, 255.0, 510.0]])),
                               [[-1.0, 0.0, 1.0]], **F64)
    dy = np.array([[2.0, 4.0, 6.0]])
    np.testing.assert_allclose(m.layers[0].backward(dy, True), [[2 / 255, 4 / 255, 6 / 255]],
                               **F64)


# ---- Normalization --------------------------------------------------------------------------

def test_normalization_keras_examples():
    # keras.layers.Normalization docstring, the four examples
    # (axis=None: one mean and variance for all values; fastnn's samples have at least one
    # value, so the 1-D data of the example is given as one value per sample)
    layer = layers.Normalization(axis=None)
    layer.adapt(np.array([[1.0], [2.0], [3.0], [4.0], [5.0]], "float32"))
    np.testing.assert_allclose(_model(layer, shape=(1,))(np.array([[1.0], [2.0], [3.0]])),
                               [[-1.4142135], [-0.70710677], [0.0]], rtol=1e-6)
    adapt = np.array([[0.0, 7.0, 4.0], [2.0, 9.0, 6.0], [0.0, 7.0, 4.0], [2.0, 9.0, 6.0]],
                     "float32")
    layer = layers.Normalization(axis=-1)
    layer.adapt(adapt)
    np.testing.assert_allclose(_model(layer, shape=(3,))(adapt[:1]), [[-1.0, -1.0, -1.0]])
    np.testing.assert_allclose(
        _apply(layers.Normalization(mean=3.0, variance=2.0), [[1.0], [2.0], [3.0]]),
        [[-1.4142135], [-0.70710677], [0.0]], rtol=1e-6)
    layer = layers.Normalization(axis=-1, invert=True)
    layer.adapt(adapt)
    np.testing.assert_allclose(_model(layer, shape=(3,))(np.array([[1.0, 2.0, 3.0]])),
                               [[2.0, 10.0, 8.0]])


def test_normalization_adapt_matches_numpy_whole_and_in_batches():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((100, 3, 4)) * [[1], [2], [3]] + 5
    whole = layers.Normalization(axis=(1, 2), dtype="float64")
    whole.adapt(x)
    np.testing.assert_allclose(whole.weights[0], x.mean(0), **F64)
    np.testing.assert_allclose(whole.weights[1], x.var(0), **F64)
    batches = layers.Normalization(axis=1, dtype="float64")
    batches.adapt([x[:30], x[30:37], x[37:]])  # Keras' running combination of the batches
    np.testing.assert_allclose(batches.weights[0], x.mean((0, 2)), **F64)
    np.testing.assert_allclose(batches.weights[1], x.var((0, 2)), **F64)
    m = _model(batches, shape=(3, 4))
    want = (x - x.mean((0, 2))[:, None]) / np.sqrt(x.var((0, 2)))[:, None]
    np.testing.assert_allclose(m(x), want, **F64)
    assert len(m.non_trainable_weights) == 2 and not m.trainable_weights


# ---- regularizers and constraints ----------------------------------------------------------

def test_regularizers_keras_examples():
    # keras.regularizers docstring: L2(2.)(ones((5, 5))) == 50.0
    assert regularizers.L2(2.0)(np.ones((5, 5))) == 50.0
    # Dense(5, kernel_initializer='ones', kernel_regularizer=L1(0.01),
    # activity_regularizer=L2(0.01)) on ones((5, 5)) * 2: penalties 0.25 + 5.0 = 5.25.  The
    # targets equal the outputs (10 everywhere), so evaluate's loss is the penalties alone.
    m = _model(layers.Dense(5, kernel_initializer="ones", kernel_regularizer=regularizers.L1(0.01),
                            activity_regularizer=regularizers.L2(0.01)), shape=(5,))
    m.compile("sgd", "mse")
    np.testing.assert_allclose(m.evaluate(np.ones((5, 5)) * 2.0, np.full((5, 5), 10.0),
                                          verbose=0), 5.25, rtol=1e-6)
    assert regularizers.L1().get_config() == {"l1": float(np.float32(0.01))}  # Keras' float32
    assert regularizers.get("l2").get_config() == {"l2": 0.01}
    assert regularizers.serialize(regularizers.L1L2(0.1, 0.2)) == {
        "module": "keras.regularizers", "class_name": "L1L2",
        "config": {"l1": 0.1, "l2": 0.2}, "registered_name": None}
    assert type(regularizers.get(regularizers.serialize(regularizers.L2(0.3)))) is regularizers.L2
    # keras.constraints docstring: a non-negative constraint of (-1, 1) is [0, 1]
    np.testing.assert_array_equal(constraints.NonNeg()(np.array([-1.0, 1.0])), [0.0, 1.0])


def test_regularized_loss_and_step_match_a_hand_computation():
    """train_on_batch's loss = mse + kernel L1L2 + bias L2 + activity L1 / n (Keras), and the
    SGD step uses the gradient of all of it, computed here by hand."""
    rng = np.random.default_rng(13)
    x, t = rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
    m = _model(layers.Dense(3, kernel_regularizer=regularizers.L1L2(0.01, 0.02),
                            bias_regularizer=regularizers.L2(0.1),
                            activity_regularizer=regularizers.L1(0.05), dtype="float64",
                            bias_initializer="random_normal"), shape=(4,))
    m.compile(optimizers.SGD(0.1), "mse")
    assert m.trainer.compiled_step(m.optimizer, x, t, 6) is None
    w, b = (a.copy() for a in m.get_weights())
    l1 = float(np.float32(0.05))  # L1 keeps its factor as a float32, as Keras
    p = x @ w + b
    penalty = 0.01 * np.abs(w).sum() + 0.02 * (w ** 2).sum() + 0.1 * (b ** 2).sum() \
        + l1 * np.abs(p).sum() / 6
    loss = m.train_on_batch(x, t)
    np.testing.assert_allclose(loss, ((p - t) ** 2).mean() + penalty, **F64)
    dp = 2 * (p - t) / p.size + l1 * np.sign(p) / 6
    gw = x.T @ dp + 0.01 * np.sign(w) + 2 * 0.02 * w
    gb = dp.sum(0) + 2 * 0.1 * b
    np.testing.assert_allclose(m.layers[0].kernel, w - 0.1 * gw, **F64)
    np.testing.assert_allclose(m.layers[0].bias, b - 0.1 * gb, **F64)


def test_max_norm_constraint_after_each_step():
    """The kernel's columns after a step: the unconstrained step's, rescaled to a norm <= 0.5
    (MaxNorm: w * clip(norm, 0, 0.5) / (1e-7 + norm)); the bias by NonNeg."""
    rng = np.random.default_rng(14)
    x, t = rng.standard_normal((8, 4)) * 5, rng.standard_normal((8, 3)) * 5
    kw = dict(dtype="float64", bias_initializer="random_normal")
    free = _model(layers.Dense(3, **kw), shape=(4,), seed=3)
    tied = _model(layers.Dense(3, kernel_constraint=constraints.MaxNorm(0.5),
                               bias_constraint="non_neg", **kw), shape=(4,), seed=3)
    for m in (free, tied):
        m.compile(optimizers.SGD(0.5), "mse")
        m.train_on_batch(x, t)
    w, b = free.get_weights()
    norms = np.sqrt((w ** 2).sum(0, keepdims=True))
    np.testing.assert_allclose(tied.get_weights()[0], w * np.clip(norms, 0, 0.5) / (1e-7 + norms),
                               **F64)
    np.testing.assert_allclose(tied.get_weights()[1], np.maximum(b, 0), **F64)
    assert np.all(np.sqrt((tied.get_weights()[0] ** 2).sum(0)) <= 0.5 + 1e-12)
    u = constraints.UnitNorm(axis=1)(w)
    np.testing.assert_allclose((u ** 2).sum(1), 1.0, rtol=1e-6)
    mm = constraints.MinMaxNorm(1.0, 2.0, rate=0.5)(w)
    n = np.sqrt((w ** 2).sum(0))
    np.testing.assert_allclose(np.sqrt((mm ** 2).sum(0)), 0.5 * np.clip(n, 1, 2) + 0.5 * n,
                               rtol=1e-6)


def test_unregularized_dense_stack_keeps_the_compiled_step():
    if fastnn.get_backend() != "compiled":
        pytest.skip("the compiled step is the compiled backend's")
    x, t = np.ones((4, 3), "float32"), np.ones((4, 2), "float32")
    m = _model(layers.Dense(2), shape=(3,))
    m.compile("sgd", "mse")
    assert m.trainer.compiled_step(m.optimizer, x, t, 4) is not None


# ---- files and ONNX ---------------------------------------------------------------------------

def _every_new_layer(dtype="float32"):
    rng = np.random.default_rng(15)
    x = rng.standard_normal((40, 12)).astype(dtype)
    norm = layers.Normalization(dtype=dtype)
    norm.adapt(x)
    m = models.Sequential([
        norm, layers.Rescaling(0.5, 0.1, dtype=dtype),
        layers.Dense(12, kernel_regularizer="l2", bias_regularizer=regularizers.L1L2(0.01, 0.02),
                     activity_regularizer=regularizers.L1(0.01),
                     kernel_constraint=constraints.MaxNorm(3), dtype=dtype),
        layers.BatchNormalization(momentum=0.8, dtype=dtype),
        layers.PReLU(alpha_initializer="random_normal", dtype=dtype),
        layers.Reshape((3, 4), dtype=dtype), layers.LayerNormalization(dtype=dtype),
        layers.BatchNormalization(axis=1, dtype=dtype),
        layers.ReLU(max_value=1.0, negative_slope=0.1, threshold=0.2, dtype=dtype),
        layers.LeakyReLU(dtype=dtype), layers.Softmax(axis=1, dtype=dtype),
        layers.GaussianNoise(0.1, seed=4, dtype=dtype), layers.Reshape((-1,), dtype=dtype),
        layers.ReLU(dtype=dtype), layers.Dense(3, dtype=dtype)], seed=1)
    m.build((None, 12))
    m.compile("adam", "mse")
    m.fit(x, x[:, :3] * 2, epochs=2, batch_size=8, verbose=0)
    return m, x


def test_fastnn_file_round_trip(tmp_path):
    m, x = _every_new_layer()
    m.save(tmp_path / "m.fastnn")
    m2 = models.load_model(tmp_path / "m.fastnn")
    np.testing.assert_array_equal(m.predict(x, verbose=0), m2.predict(x, verbose=0))
    assert [l.get_config() for l in m.layers] == [l.get_config() for l in m2.layers]
    assert m2.layers[2].weight_regularizers["kernel"].get_config() == {"l2": 0.01}


def test_keras_file_round_trip(tmp_path):
    pytest.importorskip("h5py")
    m, x = _every_new_layer()
    m.save(tmp_path / "m.keras")
    m2 = models.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(m.predict(x, verbose=0), m2.predict(x, verbose=0))
    for a, b in zip(m.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert [type(l) for l in m.layers] == [type(l) for l in m2.layers]
    assert type(m2.layers[2].weight_constraints["kernel"]) is constraints.MaxNorm
    assert m2.layers[2].activity_regularizer.get_config() == {"l1": float(np.float32(0.01))}
    # training resumes with the same penalties: the same loss on both
    y = x[:, :3]
    assert m.evaluate(x, y, verbose=0) == m2.evaluate(x, y, verbose=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_onnx_export_matches_predict(tmp_path, dtype):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from fastnn import export
    m, x = _every_new_layer(dtype)
    sess = ort.InferenceSession(export.to_onnx(m).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    for n in (1, 7, 40):
        np.testing.assert_allclose(sess.run(["y"], {"x": x[:n]})[0], m.predict(x[:n], verbose=0),
                                   **TOL[np.dtype(dtype).type])


def test_onnx_refuses_what_it_cannot_express():
    pytest.importorskip("onnx")
    from fastnn import export
    m = _model(layers.Softmax(axis=[1, 2]), shape=(2, 3))
    with pytest.raises(ValueError, match="Softmax over one axis"):
        export.to_onnx(m)
    m = _model(layers.LayerNormalization(axis=1), shape=(2, 3))
    with pytest.raises(ValueError, match="trailing axes"):
        export.to_onnx(m)


_KERAS_SCRIPT = """
import json, sys
import numpy as np
try:
    import keras
except Exception as e:
    print("NO KERAS", e)
    sys.exit(3)
d = sys.argv[1]
x, y = np.load(d + "/x.npy"), np.load(d + "/y.npy")
m = keras.saving.load_model(d + "/fastnn.keras")
np.save(d + "/keras_pred.npy", m.predict(x, verbose=0))
out = {"evaluate": float(m.evaluate(x, y, verbose=0)),
       "classes": [l.__class__.__name__ for l in m.layers]}
m.fit(x, y, epochs=1, batch_size=8, verbose=0, shuffle=False)
m.save(d + "/keras.keras")
np.save(d + "/keras_own_pred.npy", m.predict(x, verbose=0))
print(json.dumps(out))
"""


def test_real_keras_reads_and_writes_these_layers(tmp_path):
    """Keras 3 (when installed, in a subprocess) loads fastnn's file of every new layer and
    predicts the same, with the same evaluated loss (penalties included); fastnn reads the file
    Keras writes after training it and predicts as Keras does."""
    import json
    import subprocess
    import sys

    from test_keras_format import _keras_env
    env = _keras_env()
    if env is None:
        pytest.skip("Keras 3 with a backend is not installed")
    pytest.importorskip("h5py")
    m, x = _every_new_layer()
    y = x[:, :3] * 2
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    m.save(tmp_path / "fastnn.keras")
    run = subprocess.run([sys.executable, "-c", _KERAS_SCRIPT, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=600)
    if run.returncode == 3:
        pytest.skip(f"Keras does not import here: {run.stdout.strip()}")
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["classes"] == [type(l).__name__ for l in m.layers]
    np.testing.assert_allclose(np.load(tmp_path / "keras_pred.npy"), m.predict(x, verbose=0),
                               **TOL[np.float32])
    np.testing.assert_allclose(out["evaluate"], m.evaluate(x, y, verbose=0), rtol=1e-5)
    k = models.load_model(tmp_path / "keras.keras")
    np.testing.assert_allclose(k.predict(x, verbose=0), np.load(tmp_path / "keras_own_pred.npy"),
                               **TOL[np.float32])


def test_penalty_gradients_follow_the_loss_scale_factor():
    """Keras scales the whole loss, penalties included, by loss_scale_factor and unscales the
    gradients: a step with it is the step without it."""
    rng = np.random.default_rng(16)
    x, t = rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
    out = []
    for scale in (None, 8.0):
        m = _model(layers.Dense(3, kernel_regularizer=regularizers.L1L2(0.01, 0.02),
                                activity_regularizer=regularizers.L2(0.05), dtype="float64"),
                   shape=(4,), seed=2)
        m.compile(optimizers.SGD(0.1, loss_scale_factor=scale), "mse")
        out.append((m.train_on_batch(x, t), m.get_weights()))
    np.testing.assert_allclose(out[0][0], out[1][0], **F64)
    for a, b in zip(out[0][1], out[1][1]):
        np.testing.assert_allclose(a, b, **F64)
