"""The Keras-style model API: structure, compile, fit/evaluate/predict, errors."""
import warnings

import numpy as np
import pytest

import fastnn
from fastnn import callbacks, layers, losses, models, optimizers
from conftest import blobs, tiny_model


def test_summary_counts_parameters(capsys):
    m = models.Sequential([layers.Dense(512, activation="relu", input_shape=(784,)),
                           layers.Dense(10, activation="softmax")])
    assert m.count_params() == 784 * 512 + 512 + 512 * 10 + 10
    m.summary()
    out = capsys.readouterr().out
    assert "(None, 512)" in out and "401,920" in out and "5,130" in out and "407,050" in out


def test_input_layer_and_flatten_take_images():
    m = models.Sequential([layers.Input(shape=(4, 3)), layers.Flatten(),
                           layers.Dense(2, activation="softmax")], seed=1)
    assert m.output_shape == (None, 2)
    x = np.random.default_rng(0).random((5, 4, 3)).astype("float32")
    p = m.predict(x)
    w, b = m.get_weights()
    z = x.reshape(5, 12) @ w + b
    e = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(p, e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_predict_is_the_forward_pass_computed_independently():
    m = tiny_model(seed=3)
    x = np.random.default_rng(1).standard_normal((7, 5)).astype("float32")
    w1, b1, w2, b2 = m.get_weights()
    h = np.maximum(x @ w1 + b1, 0)
    z = h @ w2 + b2
    e = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(m.predict(x, batch_size=3), e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)


def test_one_sgd_step_matches_a_hand_written_numpy_step():
    m = tiny_model(seed=4, optimizer=optimizers.SGD(learning_rate=0.5))
    x, y, _ = blobs(n=6)
    w1, b1, w2, b2 = [w.astype(np.float64) for w in m.get_weights()]
    # forward, loss and backward by hand (float64)
    z1 = x @ w1 + b1
    h = np.maximum(z1, 0)
    z2 = h @ w2 + b2
    p = np.exp(z2 - z2.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    loss = -np.mean(np.sum(y * np.log(p), 1))
    dz2 = (p - y) / len(x)
    dw2, db2 = h.T @ dz2, dz2.sum(0)
    dz1 = (dz2 @ w2.T) * (z1 > 0)
    dw1, db1 = x.T @ dz1, dz1.sum(0)
    got = m.train_on_batch(x, y)
    assert got == pytest.approx(loss, rel=1e-5)
    for new, old, g in zip(m.get_weights(), (w1, b1, w2, b2), (dw1, db1, dw2, db2)):
        np.testing.assert_allclose(new, old - 0.5 * g, rtol=1e-5, atol=1e-6)


def test_fit_learns_and_returns_history():
    x, y, labels = blobs(n=120)
    m = tiny_model(seed=0, optimizer="adam", metrics=["accuracy"])
    h = m.fit(x, y, epochs=30, batch_size=16, verbose=0)
    assert h.epoch == list(range(30))
    assert set(h.history) == {"loss", "accuracy"}
    assert h.history["loss"][-1] < h.history["loss"][0] / 3
    loss, acc = m.evaluate(x, y, verbose=0)
    assert acc == pytest.approx(np.mean(m.predict(x).argmax(1) == labels))
    assert acc > 0.9


def test_fit_logs_are_batch_size_weighted_running_means():
    # with lr=0 nothing changes, so the epoch loss must equal the full-data loss
    x, y, _ = blobs(n=50)
    m = tiny_model(seed=0, optimizer=optimizers.SGD(learning_rate=0.0), metrics=["accuracy"])
    h = m.fit(x, y, epochs=1, batch_size=16, verbose=0)  # batches 16, 16, 16, 2
    loss, acc = m.evaluate(x, y, batch_size=50, verbose=0)
    assert h.history["loss"][0] == pytest.approx(loss, rel=1e-5)
    assert h.history["accuracy"][0] == pytest.approx(acc)


def test_evaluate_returns_scalar_without_metrics_and_dict_on_request():
    x, y, _ = blobs(n=20)
    m = tiny_model(seed=0)
    assert isinstance(m.evaluate(x, y, verbose=0), float)
    m2 = tiny_model(seed=0, metrics=["accuracy", "mse"])
    d = m2.evaluate(x, y, verbose=0, return_dict=True)
    assert set(d) == {"loss", "accuracy", "mse"}
    assert d["mse"] == pytest.approx(np.mean((m2.predict(x) - y) ** 2), rel=1e-5)


@pytest.mark.parametrize("batch_size", [1, 7, 60])
def test_true_minibatch_and_full_batch_sgd(batch_size):
    x, y, _ = blobs(n=60)
    m = tiny_model(seed=2, optimizer=optimizers.SGD(learning_rate=0.1))
    before = m.evaluate(x, y, verbose=0)
    h = m.fit(x, y, epochs=3, batch_size=batch_size, verbose=0)
    assert m.optimizer.iterations == 3 * -(-60 // batch_size)
    assert h.history["loss"][-1] < before


def test_validation_split_takes_the_last_samples_before_shuffling():
    x, y, _ = blobs(n=100)
    m = tiny_model(seed=0, metrics=["accuracy"])
    h = m.fit(x, y, epochs=1, batch_size=10, validation_split=0.2, verbose=0)
    assert m.optimizer.iterations == 8  # 80 training samples
    val_loss, val_acc = m.evaluate(x[80:], y[80:], verbose=0)
    assert h.history["val_loss"][0] == pytest.approx(val_loss, rel=1e-5)
    assert h.history["val_accuracy"][0] == pytest.approx(val_acc)
    h2 = m.fit(x, y, epochs=1, batch_size=10, validation_data=(x[:5], y[:5]), validation_split=0.5, verbose=0)
    assert h2.history["val_loss"][0] == pytest.approx(m.evaluate(x[:5], y[:5], verbose=0)[0], rel=1e-5)


def test_same_seed_same_weights_and_same_training():
    x, y, _ = blobs(n=40)
    runs = []
    for _ in range(2):
        fastnn.utils.set_random_seed(123)
        m = tiny_model(seed=None, optimizer="rmsprop")
        w0 = m.get_weights()
        m.fit(x, y, epochs=2, batch_size=8, verbose=0)
        runs.append((w0, m.get_weights()))
    for a, b in zip(runs[0][0] + runs[0][1], runs[1][0] + runs[1][1]):
        np.testing.assert_array_equal(a, b)
    # a different seed gives different weights
    assert not np.array_equal(tiny_model(seed=1).get_weights()[0], tiny_model(seed=2).get_weights()[0])


def test_fit_does_not_consume_the_global_numpy_rng():
    x, y, _ = blobs(n=40)
    m = tiny_model(seed=0)
    np.random.seed(7)
    m.fit(x, y, epochs=2, batch_size=8, verbose=0)
    after = np.random.random()
    np.random.seed(7)
    assert np.random.random() == after


def test_float64_end_to_end():
    fastnn.config.set_floatx("float64")
    try:
        m = tiny_model(seed=0)
        x, y, _ = blobs(n=20)
        m.fit(x, y, epochs=1, batch_size=5, verbose=0)
        assert all(w.dtype == np.float64 for w in m.get_weights())
        assert m.predict(x).dtype == np.float64
    finally:
        fastnn.config.set_floatx("float32")


def test_compiled_and_numpy_backends_train_identically_for_50_steps(mnist_small):
    """The training-level oracle: same seed, same data, the loss of every step agrees."""
    x, y = mnist_small[0][:1600], mnist_small[1][:1600]
    losses_by_backend = {}
    for name in ("compiled", "numpy"):
        fastnn.set_backend(name)
        try:
            m = models.Sequential([layers.Dense(512, activation="relu", input_shape=(784,)),
                                   layers.Dense(10, activation="softmax")], seed=42)
            m.compile("rmsprop", "categorical_crossentropy")
            per_step = []
            cb = callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: per_step.append(logs["loss"]))
            m.fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=[cb])
            losses_by_backend[name] = per_step
        finally:
            fastnn.set_backend("compiled")
    assert len(losses_by_backend["compiled"]) == 50
    np.testing.assert_allclose(losses_by_backend["compiled"], losses_by_backend["numpy"], rtol=1e-4)


@pytest.mark.parametrize("loss, act, y_kind", [
    ("sparse_categorical_crossentropy", "softmax", "labels"),
    ("binary_crossentropy", "sigmoid", "binary"),
    ("mse", "linear", "onehot"),
    (losses.CategoricalCrossentropy(from_logits=True), "linear", "onehot"),
])
def test_losses_train_and_match_their_function(loss, act, y_kind):
    x, y, labels = blobs(n=60)
    target = {"labels": labels, "onehot": y, "binary": y}[y_kind]
    m = tiny_model(seed=0, act=act, loss=loss, optimizer="adam", metrics=["accuracy"])
    before = m.evaluate(x, target, verbose=0)[0]
    m.fit(x, target, epochs=20, batch_size=10, verbose=0)
    after, acc = m.evaluate(x, target, verbose=0)
    assert after < before
    fn = losses.get(loss)
    assert fn(target, m.predict(x)) == pytest.approx(after, rel=1e-5)


def test_keras_accuracy_resolution():
    from fastnn import metrics
    assert type(metrics.get("accuracy", losses.get("sparse_categorical_crossentropy"), 10)).__name__ == "SparseCategoricalAccuracy"
    assert type(metrics.get("accuracy", losses.get("categorical_crossentropy"), 10)).__name__ == "CategoricalAccuracy"
    assert type(metrics.get("accuracy", losses.get("mse"), 1)).__name__ == "BinaryAccuracy"


# ---- errors a user meets first ----------------------------------------------------------

def test_fit_before_compile():
    m = models.Sequential([layers.Dense(2, input_shape=(3,))])
    with pytest.raises(RuntimeError, match="compile"):
        m.fit(np.ones((4, 3)), np.ones((4, 2)))


@pytest.mark.parametrize("kwargs, match", [
    (dict(optimizer="ftrl"), r"optimizer to be one of \['adadelta', 'adagrad', 'adam', 'adamax', 'adamw', 'lion', 'nadam', 'rmsprop', 'sgd'\].*'ftrl'"),
    (dict(loss="crossentropy"), r"loss to be one of .*'crossentropy'"),
    (dict(metrics=["pearson_correlation"]), r"metrics from .*'precision'.*'pearson_correlation'"),
])
def test_unknown_names_list_the_valid_ones(kwargs, match):
    m = models.Sequential([layers.Dense(2, input_shape=(3,))])
    kw = dict(optimizer="sgd", loss="mse")
    kw.update(kwargs)
    with pytest.raises(ValueError, match=match):
        m.compile(**kw)


def test_unknown_activation():
    # glu is a Keras 3 activation fastnn does not have
    with pytest.raises(ValueError, match=r"Could not interpret activation function identifier: "
                                         r"'glu' \(expected one of .*'swish'"):
        layers.Dense(3, activation="glu")


def test_wrong_input_size_and_length_mismatch_and_nan():
    m = tiny_model(seed=0)
    x, y, _ = blobs(n=10)
    with pytest.raises(ValueError, match=r"Expected x with 5 features. Received: x.shape=\(10, 6\)"):
        m.fit(np.ones((10, 6), "float32"), y)
    with pytest.raises(ValueError, match=r"same number of samples. Received: len\(x\)=10, len\(y\)=9"):
        m.fit(x, y[:9])
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf in sample 3"):
        m.fit(bad, y)
    with pytest.raises(ValueError, match=r"shape \(batch, 3\).*to_categorical"):
        m.fit(x, np.arange(10) % 3)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_finiteness_check_of_inputs(dtype):
    """fit's check sums x first: a NaN or an infinity anywhere is found, and finite values
    whose sum overflows (to inf, or to nan from +inf and -inf parts) are not refused."""
    from fastnn import _data
    big = np.finfo(dtype).max / 2
    a = np.full((4, 1000), big, dtype)
    with np.errstate(over="ignore"):
        assert not np.isfinite(a.sum())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the check itself warns of nothing
        assert _data.all_finite(a)
    a[2:] = -big  # parts of both signs overflow: their sum is nan
    with np.errstate(over="ignore", invalid="ignore"):
        assert np.isnan(a.sum())
    assert _data.all_finite(a)
    for bad in (np.nan, np.inf, -np.inf):
        for where in ((0, 0), (3, 999), (2, 500)):
            b = np.ones((4, 1000), dtype)
            b[where] = bad
            assert not _data.all_finite(b)
            a2 = a.copy()
            a2[where] = bad
            assert not _data.all_finite(a2)


def test_labels_out_of_range_for_sparse_loss():
    m = tiny_model(seed=0, loss="sparse_categorical_crossentropy")
    x, _, labels = blobs(n=10)
    labels = labels.copy()
    labels[4] = 3
    w = m.get_weights()
    with pytest.raises(ValueError, match=r"labels in \[0, 3\).*Received: a label 3"):
        m.fit(x, labels, verbose=0)
    for a, b in zip(w, m.get_weights()):
        np.testing.assert_array_equal(a, b)  # nothing half-updated


def test_batch_size_checks():
    m = tiny_model(seed=0)
    x, y, _ = blobs(n=10)
    with pytest.raises(ValueError, match="batch_size to be an int >= 1. Received: batch_size=0"):
        m.fit(x, y, batch_size=0)



def test_batch_size_larger_than_the_data_trains_one_batch_of_all_samples():
    """Keras clamps batch_size to the data: fit(x, y) on 20 samples with the default 32 is
    full-batch gradient descent, the same steps as batch_size=20."""
    x, y, _ = blobs(n=20)
    runs = []
    for bs in (None, 20, 1000):
        m = tiny_model(seed=0)
        seen = []
        m.fit(x, y, epochs=3, batch_size=bs, verbose=0, shuffle=False,
              callbacks=[fastnn.callbacks.LambdaCallback(
                  on_train_batch_end=lambda b, logs: seen.append(b))])
        assert seen == [0, 0, 0]
        runs.append(m.get_weights())
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


def test_integer_and_bool_inputs_are_converted_like_keras():
    m = tiny_model(seed=0)
    x, y, _ = blobs(n=10)
    xi = np.round(x).astype(np.int32)
    np.testing.assert_allclose(m.predict(xi), m.predict(xi.astype("float32")))
    with pytest.raises(TypeError, match="real numbers.*complex"):
        m.predict(x.astype(np.complex64))
    with pytest.raises(TypeError, match="real numbers.*<U"):
        m.predict(np.array([["a"] * 5]))


def test_training_steps_allocate_no_arrays_once_warmed_up():
    import tracemalloc
    rng = np.random.default_rng(0)
    x = rng.random((2048, 1024), dtype=np.float32)  # one batch of 256 is 1 MB
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 2048)]
    m = models.Sequential([layers.Dense(64, activation="relu", input_shape=(1024,)),
                           layers.Dense(3, activation="softmax")], seed=0)
    m.compile("rmsprop", "categorical_crossentropy", metrics=["accuracy"])
    m.fit(x, y, epochs=1, batch_size=256, verbose=0)  # warm-up: buffers are created here
    tracemalloc.start()
    try:
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        m.fit(x, y, epochs=3, batch_size=256, verbose=0)  # 24 steps
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # a per-step batch copy or gradient temporary would add at least 1 MB at the peak
    assert peak - start < 256 * 1024, f"{(peak - start) / 1024:.0f} KiB allocated during fit"


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "rmsprop", "adam", "nadam", "adamw",
                                       optimizers.SGD(momentum=0.9, nesterov=True)])
def test_batch_one_rank1_update_matches_the_explicit_gradient(optimizer):
    """At batch size 1 the first Dense kernel's gradient goes to the optimizer as the
    factors of x dz.T, never formed; the NumPy backend forms outer(x, dz) explicitly.  In
    float64 the weights after training agree to rounding."""
    x, y, _ = blobs(n=30, d=5, k=3)
    runs = []
    fastnn.config.set_floatx("float64")
    try:
        for name in ("compiled", "numpy"):
            fastnn.set_backend(name)
            opt = optimizers.get(optimizer) if isinstance(optimizer, str) else \
                optimizers.SGD(momentum=0.9, nesterov=True)
            m = tiny_model(seed=0, optimizer=opt)
            m.fit(x, y, epochs=2, batch_size=1, verbose=0)
            runs.append(m.get_weights())
    finally:
        fastnn.set_backend("compiled")
        fastnn.config.set_floatx("float32")
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_top_level_names_as_in_keras():
    model = fastnn.Sequential([fastnn.Input(shape=(3,)), fastnn.layers.Dense(2)])
    assert isinstance(model, models.Sequential) and model.output_shape == (None, 2)
