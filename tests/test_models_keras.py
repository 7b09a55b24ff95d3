"""Keras parity of the models and layers API (issue #11): Sequential.pop, compute_output_shape,
predict_on_batch, test_on_batch, layers, names, nesting, pickling, configs; layers' Keras
build, call, weights, Input, Dropout(noise_shape) and settable activations.  Expected values
are computed here with NumPy, or are Keras 3.15's documented behaviour (stated where used)."""
import copy
import json
import pickle
import zipfile

import numpy as np
import pytest

import fastnn
from fastnn import layers, models, optimizers
from conftest import blobs


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _three_layers(seed=0):
    return models.Sequential([layers.Dense(4, activation="relu", input_shape=(5,)),
                              layers.Dense(3, activation="softmax"), layers.Dense(2)], seed=seed)


# ---- Sequential ------------------------------------------------------------------------------

def test_pop_removes_the_last_layer_and_predicts_as_a_model_without_it():
    m = _three_layers()
    w1, b1, w2, b2, _, _ = m.get_weights()
    last = m.layers[-1]
    assert m.pop() is last
    assert [l.name for l in m.layers] == [l.name for l in m.layers[:2]] and len(m.layers) == 2
    assert m.built and m.output_shape == (None, 3) and len(m.weights) == 4
    x = np.random.default_rng(1).standard_normal((6, 5)).astype("float32")
    expected = _softmax(np.maximum(x @ w1 + b1, 0) @ w2 + b2)
    np.testing.assert_allclose(m.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    twin = models.Sequential([layers.Dense(4, activation="relu", input_shape=(5,)),
                              layers.Dense(3, activation="softmax")], seed=9)
    twin.set_weights([w1, b1, w2, b2])
    np.testing.assert_array_equal(m.predict(x, verbose=0), twin.predict(x, verbose=0))
    # rebuild=False leaves the model unbuilt; the next predict builds it, weights kept
    m.pop(rebuild=False)
    assert not m.built
    np.testing.assert_allclose(m.predict(x, verbose=0), np.maximum(x @ w1 + b1, 0), rtol=1e-6)
    m.pop()
    assert m.layers == [] and not m.built
    with pytest.raises(IndexError, match="no layers"):  # Keras: IndexError (list.pop)
        m.pop()


def test_pop_then_train_the_remaining_layers():
    x, y, _ = blobs(n=30)
    m = models.Sequential([layers.Dense(8, activation="relu", input_shape=(5,)),
                           layers.Dense(3, activation="softmax"), layers.Dense(7)], seed=0)
    m.pop()
    m.compile(optimizers.SGD(learning_rate=0.5), "categorical_crossentropy")
    w1, b1, w2, b2 = [w.astype(np.float64) for w in m.get_weights()]
    z1 = x @ w1 + b1
    h = np.maximum(z1, 0)
    p = _softmax(h @ w2 + b2)
    dz2 = (p - y) / len(x)
    dz1 = (dz2 @ w2.T) * (z1 > 0)
    assert m.train_on_batch(x, y) == pytest.approx(-np.mean(np.sum(y * np.log(p), 1)), rel=1e-5)
    for new, old, g in zip(m.get_weights(), (w1, b1, w2, b2),
                           (x.T @ dz1, dz1.sum(0), h.T @ dz2, dz2.sum(0))):
        np.testing.assert_allclose(new, old - 0.5 * g, rtol=1e-5, atol=1e-6)


def test_compute_output_shape_keeps_the_batch_dimension_and_builds_nothing():
    m = models.Sequential([layers.Flatten(), layers.Dense(3), layers.Dense(2)])
    assert m.compute_output_shape((None, 3, 4)) == (None, 2)
    assert m.compute_output_shape((7, 3, 4)) == (7, 2)  # as Keras: (7, 5) -> (7, 2)
    assert not m.built


def test_predict_on_batch_is_the_forward_pass():
    m = _three_layers(seed=2)
    w1, b1, w2, b2, w3, b3 = m.get_weights()
    x = np.random.default_rng(3).standard_normal((9, 5)).astype("float32")
    expected = _softmax(np.maximum(x @ w1 + b1, 0) @ w2 + b2) @ w3 + b3
    out = m.predict_on_batch(x)
    assert isinstance(out, np.ndarray) and out.shape == (9, 2)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_test_on_batch_is_loss_and_metrics_of_that_batch_alone():
    m = models.Sequential([layers.Dense(2, input_shape=(3,))], seed=0)
    m.compile("sgd", "mse", metrics=["mae"])
    w, b = m.get_weights()
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 3)).astype("float32"), rng.standard_normal((8, 2)).astype("float32")

    def expected(xs, ys):
        err = xs @ w + b - ys
        return [np.mean(err ** 2), np.mean(np.abs(err))]
    np.testing.assert_allclose(m.test_on_batch(x, y), expected(x, y), rtol=1e-5)
    # (as Keras: a second call's metrics are that batch's, not a running mean)
    np.testing.assert_allclose(m.test_on_batch(x[4:], y[4:]), expected(x[4:], y[4:]), rtol=1e-5)
    d = m.test_on_batch(x, y, return_dict=True)
    assert set(d) == {"loss", "mae"} and d["loss"] == pytest.approx(expected(x, y)[0], rel=1e-5)
    np.testing.assert_array_equal(m.get_weights()[0], w)  # nothing trained
    # Keras' reduction "sum_over_batch_size": sum_i sw_i l_i / n; (unweighted) metrics plain
    sw = np.array([0, 1, 2, 3, 0.5, 1, 1, 4], "float32")
    per_sample = np.mean((x @ w + b - y) ** 2, axis=1)
    np.testing.assert_allclose(m.test_on_batch(x, y, sample_weight=sw),
                               [np.sum(sw * per_sample) / 8, expected(x, y)[1]], rtol=1e-5)


def test_layers_is_a_copy_and_cannot_be_assigned():
    m = _three_layers()
    got = m.layers
    got.append(layers.Dense(9))
    assert len(m.layers) == 3
    with pytest.raises(AttributeError, match="reserved"):  # Keras' message
        m.layers = []


def test_layer_names_must_be_unique():
    m = models.Sequential([layers.Dense(3, name="a", input_shape=(2,))])
    with pytest.raises(ValueError, match="should have unique names. Name 'a' is already"):
        m.add(layers.Dense(2, name="a"))
    assert len(m.layers) == 1
    with pytest.raises(ValueError, match="unique names"):
        models.Sequential([layers.Dense(3, name="b"), layers.Dense(2, name="b")])
    cfg = models.Sequential([layers.Dense(3, name="c"), layers.Dense(2, name="e")]).get_config()
    cfg["layers"][1]["config"]["name"] = "c"
    with pytest.raises(ValueError, match="Name 'c' is already"):
        models.Sequential.from_config(cfg)


def test_an_empty_model_is_refused():
    m = models.Sequential()
    with pytest.raises(ValueError, match="cannot be built because it has no layers"):
        m.build((None, 3))
    m.compile("sgd", "mse")
    x = np.ones((2, 3), "float32")
    with pytest.raises(ValueError, match="at least one layer"):
        m.predict(x, verbose=0)
    with pytest.raises(ValueError, match="at least one layer"):
        m.fit(x, x, verbose=0)
    with pytest.raises(ValueError, match="isn't built"):  # as Keras
        m.count_params()
    with pytest.raises(AttributeError, match="no defined input shape"):
        m.input_shape


def test_input_batch_size_shows_in_the_shapes_only():
    m = models.Sequential([layers.Input((3,), batch_size=4), layers.Dense(2)], seed=0)
    assert m.input_shape == (4, 3) and m.output_shape == (4, 2)  # as Keras 3.15
    assert m.predict(np.ones((7, 3)), verbose=0).shape == (7, 2)  # Keras predicts 7 too
    assert layers.Input(batch_shape=(None, 3, 2)).input_shape == (3, 2)
    assert layers.Input(batch_shape=(5, 3)).batch_size == 5
    with pytest.raises(ValueError, match="shape.*or batch_shape"):
        layers.Input((3,), batch_shape=(None, 3))
    with pytest.raises(ValueError, match="sparse"):
        layers.Input((3,), sparse=True)


# ---- a Sequential inside a Sequential --------------------------------------------------------

def _nested(seed):
    inner = models.Sequential([layers.Dense(4, activation="relu"),
                               layers.Dense(6, activation="tanh")], name="inner")
    return models.Sequential([layers.Input((5,)), inner,
                              layers.Dense(3, activation="softmax")], seed=seed), inner


def _flat(seed):
    return models.Sequential([layers.Input((5,)), layers.Dense(4, activation="relu"),
                              layers.Dense(6, activation="tanh"),
                              layers.Dense(3, activation="softmax")], seed=seed)


def test_nested_model_is_one_layer_that_predicts_its_layers():
    m, inner = _nested(seed=0)
    assert [l.name for l in m.layers] == ["inner", m.layers[1].name] and m.layers[0] is inner
    assert inner.built and inner.input_shape == (None, 5) and inner.output_shape == (None, 6)
    assert m.count_params() == (5 * 4 + 4) + (4 * 6 + 6) + (6 * 3 + 3)
    w1, b1, w2, b2, w3, b3 = m.get_weights()
    x = np.random.default_rng(0).standard_normal((7, 5)).astype("float32")
    h = np.tanh(np.maximum(x @ w1 + b1, 0) @ w2 + b2)
    np.testing.assert_allclose(inner.predict(x, verbose=0), h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.predict(x, verbose=0), _softmax(h @ w3 + b3), rtol=1e-5, atol=1e-6)
    lines = []
    m.summary(print_fn=lines.append)
    assert "inner (Sequential)" in lines[0] and "(None, 6)" in lines[0] and "54" in lines[0]


@pytest.mark.parametrize("jit_compile", ["auto", False])
def test_nested_model_trains_as_the_same_layers_flat(jit_compile):
    x, y, _ = blobs(n=40)
    m, inner = _nested(seed=3)
    flat = _flat(seed=3)
    flat.set_weights(m.get_weights())
    for model in (m, flat):
        model.compile("adam", "categorical_crossentropy", jit_compile=jit_compile)
    h1 = m.fit(x, y, epochs=3, batch_size=8, verbose=0).history["loss"]
    h2 = flat.fit(x, y, epochs=3, batch_size=8, verbose=0).history["loss"]
    assert h1 == h2
    for a, b in zip(m.get_weights(), flat.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the inner model holds views of the outer model's weights: it sees the training
    np.testing.assert_array_equal(inner.get_weights()[0], m.get_weights()[0])


def test_nested_model_saves_and_loads(tmp_path):
    m, _ = _nested(seed=1)
    m.compile("rmsprop", "categorical_crossentropy")
    x, y, _ = blobs(n=20)
    m.fit(x, y, epochs=1, batch_size=5, verbose=0)
    m.save(tmp_path / "m.fastnn")
    m2 = models.load_model(tmp_path / "m.fastnn")
    assert [type(l).__name__ for l in m2.layers] == ["Sequential", "Dense"]
    assert [l.name for l in m2.layers[0].layers] == [l.name for l in m.layers[0].layers]
    np.testing.assert_array_equal(m2.predict(x, verbose=0), m.predict(x, verbose=0))
    a = m.fit(x, y, epochs=1, batch_size=5, shuffle=False, verbose=0).history["loss"]
    b = m2.fit(x, y, epochs=1, batch_size=5, shuffle=False, verbose=0).history["loss"]
    assert a == b  # the optimizer state came back too
    m.save(tmp_path / "m.keras")  # Keras' format nests it too (tests/test_keras_format.py)
    m3 = models.load_model(tmp_path / "m.keras")
    assert [type(l).__name__ for l in m3.layers] == ["Sequential", "Dense"]
    np.testing.assert_array_equal(m3.predict(x, verbose=0), m.predict(x, verbose=0))


def test_changing_a_nested_model_rebuilds_the_outer_one():
    x, y, _ = blobs(n=20)
    m, inner = _nested(seed=2)
    m.compile(optimizers.SGD(learning_rate=0.1), "categorical_crossentropy")
    m.fit(x, y, epochs=1, batch_size=5, verbose=0)
    inner.add(layers.Dense(6, activation="relu"))  # inner builds itself anew, for (None, 5)
    w1, b1, w2, b2, w3, b3, w4, b4 = m.get_weights()
    h = np.maximum(np.tanh(np.maximum(x @ w1 + b1, 0) @ w2 + b2) @ w3 + b3, 0)
    p = m.predict(x, verbose=0)  # the outer model sees the new layer, trained weights kept
    np.testing.assert_allclose(p, _softmax(h @ w4 + b4), rtol=1e-5, atol=1e-6)
    m.fit(x, y, epochs=1, batch_size=5, verbose=0)  # trains every weight, in one buffer again
    assert all(np.shares_memory(w, m._params[0]) for w in m.weights)
    assert not np.array_equal(m.get_weights()[4], w3)
    np.testing.assert_array_equal(inner.get_weights()[4], m.get_weights()[4])
    inner.pop(rebuild=False)
    assert m.predict(x, verbose=0).shape == (20, 3) and len(m.weights) == 6


def test_a_frozen_nested_model_keeps_its_weights():
    x, y, _ = blobs(n=40)
    m, inner = _nested(seed=6)
    inner.trainable = False  # as Keras: every layer of it, applied at compile
    m.compile("adam", "categorical_crossentropy")
    before = m.get_weights()
    m.fit(x, y, epochs=2, batch_size=8, verbose=0)
    after = m.get_weights()
    assert [np.array_equal(a, b) for a, b in zip(before, after)] == [True] * 4 + [False] * 2
    assert len(m.trainable_weights) == 2 and len(m.non_trainable_weights) == 4


def test_a_model_cannot_contain_itself():
    m = models.Sequential([layers.Dense(2)])
    with pytest.raises(ValueError, match="itself"):
        m.add(m)
    outer = models.Sequential([m])
    with pytest.raises(ValueError, match="contains it"):
        m.add(outer)


# ---- pickling --------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_a_copy_predicts_and_trains_on_exactly_as_the_original(how):
    x, y, _ = blobs(n=40)
    m = models.Sequential([layers.Dense(8, activation="relu", input_shape=(5,)),
                           layers.Dropout(0.3), layers.Dense(3, activation="softmax")], seed=4)
    m.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    m.fit(x, y, epochs=2, batch_size=8, verbose=0)
    c = pickle.loads(pickle.dumps(m)) if how == "pickle" else copy.deepcopy(m)
    assert c is not m and c.optimizer.iterations == m.optimizer.iterations == 10
    np.testing.assert_array_equal(c.predict(x, verbose=0), m.predict(x, verbose=0))
    for a, b in zip(c.optimizer.variables, m.optimizer.variables):
        np.testing.assert_array_equal(a, b)
    # the same shuffles, dropout masks and steps: the same losses and weights
    h_copy = c.fit(x, y, epochs=2, batch_size=8, verbose=0).history
    before = [w.copy() for w in m.get_weights()]
    np.testing.assert_array_equal(before[0], m.get_weights()[0])  # the copy is independent
    h_orig = m.fit(x, y, epochs=2, batch_size=8, verbose=0).history
    assert h_copy == h_orig
    for a, b in zip(c.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)
    # one parameter buffer again: the compiled step's and the layers' weights are the same
    assert all(np.shares_memory(w, c._params[0]) for w in c.weights)


def test_an_unbuilt_model_pickles():
    m = models.Sequential([layers.Dense(3), layers.Dense(2)], name="plain")
    c = pickle.loads(pickle.dumps(m))
    assert not c.built and [l.name for l in c.layers] == [l.name for l in m.layers]
    assert c.predict(np.ones((2, 4)), verbose=0).shape == (2, 2)


# ---- configs ---------------------------------------------------------------------------------

def test_dense_config_has_keras_keys_and_default_values():
    d = layers.Dense(3, name="d")
    # Keras 3.15's Dense(3).get_config() keys, in its order; values as plain names here
    assert d.get_config() == {
        "name": "d", "trainable": True, "dtype": "float32", "units": 3, "activation": "linear",
        "use_bias": True, "kernel_initializer": "glorot_uniform", "bias_initializer": "zeros",
        "kernel_regularizer": None, "bias_regularizer": None, "kernel_constraint": None,
        "bias_constraint": None, "quantization_config": None}
    assert list(d.get_config()) == ["name", "trainable", "dtype", "units", "activation",
                                    "use_bias", "kernel_initializer", "bias_initializer",
                                    "kernel_regularizer", "bias_regularizer",
                                    "kernel_constraint", "bias_constraint", "quantization_config"]


@pytest.mark.parametrize("layer, keys", [
    (layers.Dense(3, activation="relu", use_bias=False), None),
    (layers.Dropout(0.25, noise_shape=(None, 1), seed=7), ["rate", "seed", "noise_shape"]),
    (layers.Flatten(), ["data_format"]),
    (layers.Activation("tanh"), ["activation"]),
    (layers.Input((3, 2), batch_size=4), None),
])
def test_every_layer_round_trips_its_config(layer, keys):
    cfg = layer.get_config()
    if keys is not None:  # Keras' keys: name, trainable, dtype, then the layer's own
        assert list(cfg) == ["name", "trainable", "dtype", *keys]
    again = type(layer).from_config(cfg)
    assert type(again) is type(layer) and again.get_config() == cfg
    if isinstance(layer, layers.InputLayer):  # Keras' InputLayer config
        assert cfg == {"batch_shape": (4, 3, 2), "dtype": "float32", "sparse": False,
                       "ragged": False, "name": layer.name, "optional": False}


def test_sequential_config_rebuilds_an_equal_architecture():
    m, _ = _nested(seed=5)
    m.add(layers.Dropout(0.5, seed=1))
    cfg = m.get_config()
    assert list(cfg)[:4] == ["name", "trainable", "dtype", "layers"]
    assert cfg["build_input_shape"] == (None, 5)
    assert [e["class_name"] for e in cfg["layers"]] == ["InputLayer", "Sequential", "Dense",
                                                        "Dropout"]
    again = models.Sequential.from_config(cfg)
    assert again.built and again.get_config() == cfg
    assert [w.shape for w in again.get_weights()] == [w.shape for w in m.get_weights()]


def test_trainable_goes_through_the_config():
    cfg = layers.Dense(2, trainable=False).get_config()
    assert cfg["trainable"] is False and layers.Dense.from_config(cfg).trainable is False
    with pytest.raises(TypeError, match="trainable"):
        layers.Dense.from_config({**cfg, "trainable": "yes"})


# ---- layers on their own ---------------------------------------------------------------------

def test_standalone_dense_builds_with_the_batch_dimension_and_calls_on_arrays():
    d = layers.Dense(3)
    assert not d.built and d.get_weights() == []
    d.build((None, 4))  # Keras' form: the batch dimension first
    assert d.built and [w.shape for w in d.weights] == [(4, 3), (3,)] and d.count_params() == 15
    x = np.random.default_rng(0).standard_normal((2, 4))
    kernel, bias = d.get_weights()
    np.testing.assert_allclose(d(x), x.astype("float32") @ kernel + bias, rtol=1e-6)
    assert d(x).dtype == np.float32 and d(x).shape == (2, 3)
    with pytest.raises(ValueError, match=r"4 features. Received: x.shape=\(2, 5\)"):
        d(np.ones((2, 5)))
    e = layers.Dense(3, activation="relu")
    y = e(np.ones((2, 4)))  # built by the call, as Keras
    k2, b2 = e.get_weights()
    np.testing.assert_allclose(y, np.maximum(np.ones((2, 4), "float32") @ k2 + b2, 0), rtol=1e-6)
    f = layers.Dense(2)
    f.build((32, 6))  # a fixed batch size is a batch size too
    assert f.get_weights()[0].shape == (6, 2)
    g = layers.Dense(2)
    g.build((6,))  # one entry: the features, as Keras' Dense.build((6,)) makes a (6, 2) kernel
    assert g.get_weights()[0].shape == (6, 2)


def test_a_built_layer_keeps_its_weights_in_a_model():
    d = layers.Dense(3, input_dim=4)
    assert d.input_shape == (4,)
    d.build((None, 4))
    w = d.get_weights()
    m = models.Sequential([d, layers.Dense(2)], seed=0)
    np.testing.assert_array_equal(m.get_weights()[0], w[0])
    assert m.input_shape == (None, 4)


def test_set_weights_checks_count_and_shapes():
    d = layers.Dense(3)
    d.build((None, 4))
    k, b = d.get_weights()
    k[0, 0] += 1  # get_weights copies
    assert d.get_weights()[0][0, 0] != k[0, 0]
    d.set_weights([k, b])
    np.testing.assert_array_equal(d.kernel, k)
    with pytest.raises(ValueError, match=r"weight shape \(4, 3\) is not compatible with provided "
                                         r"weight shape \(5, 3\)"):
        d.set_weights([np.ones((5, 3)), b])
    with pytest.raises(ValueError, match="list of length 1, but the layer was expecting 2"):
        d.set_weights([k])
    np.testing.assert_array_equal(d.kernel, k)  # a refused call assigns nothing
    with pytest.raises(ValueError, match="isn't built"):
        layers.Dense(2).count_params()


def test_layer_attributes():
    d = layers.Dense(3, name="out", dtype="float64")
    assert d.name == "out" and d.dtype == "float64" and not d.built
    assert layers.InputLayer(shape=(2,)).name.startswith("input_layer")  # Keras' snake_case
    with pytest.raises(ValueError, match="not both"):
        layers.Dense(3, input_dim=4, input_shape=(4,))
    with pytest.raises(ValueError, match="lora_rank"):
        layers.Dense(3, lora_rank=4)


# ---- Dropout ---------------------------------------------------------------------------------

def test_dropout_noise_shape_masks_whole_broadcast_axes():
    x = np.arange(1, 1 + 8 * 6, dtype="float32").reshape(8, 6)
    rows = layers.Dropout(0.5, noise_shape=(None, 1), seed=3)(x, training=True)
    keep = np.random.default_rng(3).random((8, 1), dtype=np.float32) >= 0.5  # the layer's draw
    np.testing.assert_array_equal(rows, x * keep * 2)
    assert 0 < keep.sum() < 8  # (both kinds of rows occur with this seed)
    cols = layers.Dropout(0.5, noise_shape=(1, None), seed=5)(x, training=True)
    kept = cols != 0
    assert (kept == kept[0]).all() and 0 < kept[0].sum() < 6  # the same columns in every row
    np.testing.assert_array_equal(cols[kept], (x * 2)[kept])
    # the same seed, the same masks; inference is the identity
    np.testing.assert_array_equal(layers.Dropout(0.5, noise_shape=(None, 1), seed=3)(
        x, training=True), rows)
    np.testing.assert_array_equal(layers.Dropout(0.5, noise_shape=(None, 1))(x), x)
    with pytest.raises(ValueError, match="noise_shape"):
        layers.Dropout(0.5, noise_shape=(None, 3))(x, training=True)
    with pytest.raises(ValueError, match="noise_shape"):
        layers.Dropout(0.5, noise_shape=5)


def test_dropout_noise_shape_goes_through_keras_files(tmp_path):
    pytest.importorskip("h5py")
    m = models.Sequential([layers.Input((4,)), layers.Dense(6),
                           layers.Dropout(0.5, noise_shape=(None, 1), seed=2)], seed=0)
    m.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:  # as Keras 3.15 writes it: a list
        cfg = json.loads(z.read("config.json"))["config"]["layers"][2]["config"]
    assert cfg["noise_shape"] == [None, 1] and cfg["seed"] == 2
    d = models.load_model(tmp_path / "m.keras").layers[1]
    assert d.noise_shape == (None, 1) and d.seed == 2


def test_dropout_noise_shape_backward_masks_the_same_axes():
    d = layers.Dropout(0.5, noise_shape=(None, 1), seed=3)
    x = np.ones((8, 6), "float32")
    y = d(x, training=True)  # builds; then the layer's own call/backward, as a step runs them
    y = d.call(x, training=True).copy()
    dy = np.full((8, 6), 3.0, "float32")
    np.testing.assert_array_equal(d.backward(dy, need_dx=True), 3.0 * y)


# ---- activations set after construction ------------------------------------------------------

@pytest.mark.parametrize("jit_compile", ["auto", False])
def test_an_activation_set_after_fit_takes_effect_in_predict_and_the_next_step(jit_compile):
    x, y, _ = blobs(n=12)
    m = models.Sequential([layers.Dense(6, input_shape=(5,)),
                           layers.Dense(3, activation="softmax")], seed=0)
    m.compile(optimizers.SGD(learning_rate=0.5), "categorical_crossentropy",
              jit_compile=jit_compile)
    m.fit(x, y, epochs=1, batch_size=4, verbose=0)  # the step is made for a linear first layer
    m.layers[0].activation = "relu"
    assert m.layers[0].activation.name == "relu"
    w1, b1, w2, b2 = [w.astype(np.float64) for w in m.get_weights()]
    z1 = x @ w1 + b1
    h = np.maximum(z1, 0)
    p = _softmax(h @ w2 + b2)
    np.testing.assert_allclose(m.predict(x, verbose=0), p, rtol=1e-5, atol=1e-6)
    dz2 = (p - y) / len(x)
    dz1 = (dz2 @ w2.T) * (z1 > 0)
    assert m.train_on_batch(x, y) == pytest.approx(-np.mean(np.sum(y * np.log(p), 1)), rel=1e-5)
    for new, old, g in zip(m.get_weights(), (w1, b1, w2, b2),
                           (x.T @ dz1, dz1.sum(0), h.T @ dz2, dz2.sum(0))):
        np.testing.assert_allclose(new, old - 0.5 * g, rtol=1e-5, atol=1e-6)
    # the last activation decides the fused softmax-crossentropy gradient: a sigmoid now
    m.layers[1].activation = "sigmoid"
    fresh = models.Sequential([layers.Dense(6, activation="relu", input_shape=(5,)),
                               layers.Dense(3, activation="sigmoid")], seed=1)
    fresh.compile(optimizers.SGD(learning_rate=0.5), "categorical_crossentropy",
                  jit_compile=jit_compile)
    fresh.set_weights(m.get_weights())
    assert m.train_on_batch(x, y) == fresh.train_on_batch(x, y)
    for a, b in zip(m.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="activation"):
        m.layers[1].activation = "glu"  # (not in fastnn)


def test_flatten_channels_first_only_where_it_is_the_same():
    assert layers.Flatten(data_format="channels_first")(np.ones((2, 3))).shape == (2, 3)
    with pytest.raises(ValueError, match="channels_first"):
        layers.Flatten(data_format="channels_first")(np.ones((2, 3, 4)))


def test_top_level_input_signature_is_keras():
    import inspect
    assert list(inspect.signature(fastnn.Input).parameters) == [
        "shape", "batch_size", "dtype", "sparse", "ragged", "batch_shape", "name", "tensor",
        "optional"]
    assert list(inspect.signature(layers.Dropout).parameters)[:3] == ["rate", "noise_shape", "seed"]
