"""fastnn.keras_format: Keras 3's native .keras and .weights.h5 files.

The layout is checked against what Keras 3 documents and writes (keras/src/saving/saving_lib.py,
serialization_lib.py, models/sequential.py, the layers' get_config), with expected values
written out here or computed independently (the optimizer state from hand-computed gradients).
Hostile files must raise FileFormatError (a bad file) or UnsupportedError (a valid Keras file
using something fastnn does not have), quickly and without running anything from the file.
The interoperability test runs real Keras 3 in a subprocess where it is installed."""
import functools
import importlib.util
import io
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from fastnn import activations, config, initializers, layers, losses, models, optimizers  # noqa: E402
from fastnn import keras_format as kf  # noqa: E402
from fastnn.keras_format import UnsupportedError  # noqa: E402
from fastnn.saving import FileFormatError  # noqa: E402


def _data(n=24, seed=0, shape=(3, 4), k=3):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape)).astype("float32")
    return x, np.eye(k, dtype="float32")[rng.integers(0, k, n)]


def _every_layer(optimizer="adam", dropout=0.25, seed=0):
    """A trained model with every layer class, activation and initializer fastnn writes."""
    m = models.Sequential([
        layers.Input((3, 4)), layers.Flatten(),
        layers.Dense(8, activation="relu"),
        layers.Dropout(dropout, seed=3),
        layers.Dense(7, activation=functools.partial(activations.leaky_relu, negative_slope=0.1),
                     kernel_initializer="glorot_normal"),
        layers.Activation("elu"),
        layers.Dense(6, activation="gelu", kernel_initializer="he_normal",
                     bias_initializer="ones"),
        layers.Activation(functools.partial(activations.elu, alpha=0.5)),
        layers.Dense(5, activation="tanh", kernel_initializer="he_uniform"),
        layers.Dense(5, activation="leaky_relu", kernel_initializer="random_normal"),
        layers.Dense(4, use_bias=False, kernel_initializer="ones"),
        layers.Activation("sigmoid"), layers.Activation("linear"),
        layers.Dense(3, activation="softmax", bias_initializer="zeros")], seed=seed)
    m.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy", "mae"])
    x, y = _data()
    m.fit(x, y, epochs=2, batch_size=8, verbose=0)
    return m


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.keras"
    kf.save_keras(_every_layer(), path)
    return path


def _rewrite(src, dst, edit_config=None, edit_h5=None, compression=zipfile.ZIP_STORED):
    """Copy the .keras src to dst with its config (a dict) and/or its model.weights.h5 (an
    h5py.File opened r+) edited in place by the given functions."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compression) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json" and edit_config:
                cfg = json.loads(data)
                edit_config(cfg)
                data = json.dumps(cfg).encode()
            if item.filename == "model.weights.h5" and edit_h5:
                buf = io.BytesIO(data)
                with h5py.File(buf, "r+") as f:
                    edit_h5(f)
                data = buf.getvalue()
            zout.writestr(item.filename, data)
    return dst


def _layer_entries(cfg):
    return cfg["config"]["layers"]


# ---- round trips ------------------------------------------------------------------------------

def test_round_trip_keeps_predictions_weights_and_compile(saved):
    m = _every_layer()
    kf.save_keras(m, saved)
    m2 = kf.load_keras(saved)
    x, _ = _data(seed=1)
    assert np.array_equal(m.predict(x, verbose=0), m2.predict(x, verbose=0))
    for a, b in zip(m.get_weights(), m2.get_weights()):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    # a Dense with a parametrized activation comes back as Dense(linear) + an activation layer
    # (Keras' LeakyReLU layer for leaky_relu, an Activation for elu)
    assert [type(l).__name__ for l in m2.layers] == [
        "Flatten", "Dense", "Dropout", "Dense", "LeakyReLU", "Activation", "Dense",
        "Activation", "Dense", "Dense", "Dense", "Activation", "Activation", "Dense"]
    assert m2.layers[4].negative_slope == 0.1
    assert m2.layers[7].activation.name == "elu" and m2.layers[7].activation.kwargs == {"alpha": 0.5}
    assert [l.name for l in m2.layers if type(l).__name__ == "Dense"] == \
        [l.name for l in m.layers if type(l).__name__ == "Dense"]
    assert m2.input_shape == (None, 3, 4) and m2.name == m.name
    assert m2.layers[2].rate == 0.25 and m2.layers[2].seed == 3
    assert m2.compiled and type(m2.optimizer) is optimizers.Adam
    assert m2.get_compile_config() == m.get_compile_config()
    assert m2.optimizer.get_config() == m.optimizer.get_config()
    assert m2.optimizer.iterations == m.optimizer.iterations == 6
    for a, b in zip(m.optimizer.variables, m2.optimizer.variables):
        assert np.array_equal(a, b)
    # the layers' configs (initializers by name) survive
    for a, b in zip([l for l in m.layers if type(l).__name__ == "Dense"],
                    [l for l in m2.layers if type(l).__name__ == "Dense"]):
        assert (a.kernel_initializer, a.bias_initializer, a.use_bias, a.units) == \
            (b.kernel_initializer, b.bias_initializer, b.use_bias, b.units)


@pytest.mark.parametrize("make", [
    lambda: optimizers.SGD(0.05),
    lambda: optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    lambda: optimizers.Adagrad(0.05, initial_accumulator_value=0.2),
    lambda: optimizers.RMSprop(momentum=0.5, centered=True),
    lambda: optimizers.Adam(amsgrad=True, weight_decay=0.01),
    lambda: optimizers.AdamW(0.01),
    lambda: optimizers.Nadam(0.01),
    lambda: optimizers.SGD(optimizers.ExponentialDecay(0.1, 3, 0.5, staircase=True), 0.5),
    lambda: optimizers.Adam(optimizers.PiecewiseConstantDecay([2, 5], [0.01, 0.005, 0.001])),
    lambda: optimizers.RMSprop(optimizers.InverseTimeDecay(0.01, 2, 0.5)),
    lambda: optimizers.Adamax(0.01, weight_decay=0.01),
    lambda: optimizers.Adadelta(1.0, rho=0.9),
    lambda: optimizers.Lion(0.001, beta_2=0.9),
    lambda: optimizers.SGD(optimizers.PolynomialDecay(0.1, 2, 0.01, power=2.0, cycle=True)),
    lambda: optimizers.Adam(optimizers.CosineDecay(0.001, 5, alpha=0.1, warmup_target=0.01,
                                                   warmup_steps=2)),
    lambda: optimizers.RMSprop(optimizers.CosineDecayRestarts(0.01, 2, t_mul=1.5, m_mul=0.5)),
], ids=["sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw", "nadam", "exp", "piecewise",
        "inverse", "adamax", "adadelta", "lion", "polynomial", "cosine", "restarts"])
def test_round_trip_resumes_training_exactly(tmp_path, make):
    """The optimizer state survives: the next step is the same, bit for bit."""
    m = _every_layer(optimizer=make(), dropout=0.0)
    kf.save_keras(m, tmp_path / "m.keras")
    m2 = kf.load_keras(tmp_path / "m.keras")
    assert type(m2.optimizer) is type(m.optimizer)
    assert m2.optimizer.get_config() == m.optimizer.get_config()
    x, y = _data(seed=2)
    for model in (m, m2):
        model.train_on_batch(x, y)
    for a, b in zip(m.get_weights(), m2.get_weights()):
        assert np.array_equal(a, b)


def test_compiled_but_untrained_and_uncompiled(tmp_path):
    m = models.Sequential([layers.Input((5,)), layers.Dense(3)], seed=0)
    kf.save_keras(m, tmp_path / "plain.keras")
    m2 = kf.load_keras(tmp_path / "plain.keras")
    assert not m2.compiled
    assert json.loads(zipfile.ZipFile(tmp_path / "plain.keras").read("config.json"))[
        "compile_config"] == {}
    with h5py.File(io.BytesIO(zipfile.ZipFile(tmp_path / "plain.keras").read(
            "model.weights.h5"))) as f:
        assert "optimizer" not in f
    m.compile(optimizer=optimizers.Adagrad(initial_accumulator_value=0.3), loss="mse")
    kf.save_keras(m, tmp_path / "fresh.keras")
    with h5py.File(io.BytesIO(zipfile.ZipFile(tmp_path / "fresh.keras").read(
            "model.weights.h5"))) as f:  # the state Keras builds: the initial accumulators
        assert int(f["optimizer/vars/0"][()]) == 0
        assert np.all(f["optimizer/vars/2"][()] == np.float32(0.3))
        assert len(f["optimizer/vars"]) == 4
    m2 = kf.load_keras(tmp_path / "fresh.keras")
    assert m2.optimizer.iterations == 0
    assert kf.load_keras(tmp_path / "fresh.keras", compile=False).compiled is False


@pytest.mark.parametrize("loss,written", [
    ("huber", "huber"), ("log_cosh", "log_cosh"), ("kld", "kl_divergence"),
    ("poisson", "poisson"), ("hinge", "hinge"), ("categorical_hinge", "categorical_hinge"),
    ("cosine_similarity", "cosine_similarity"), ("mae", "mean_absolute_error"),
    (losses.Huber(delta=2.5), {"name": "huber_loss", "reduction": "sum_over_batch_size",
                               "delta": 2.5}),
    (losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1),
     {"name": "binary_crossentropy", "reduction": "sum_over_batch_size", "from_logits": True,
      "label_smoothing": 0.1, "axis": -1}),
    (losses.SparseCategoricalCrossentropy(ignore_class=0, reduction="sum"),
     {"name": "sparse_categorical_crossentropy", "reduction": "sum", "from_logits": False,
      "ignore_class": 0}),
    (losses.MeanSquaredError(name="my_mse"), {"name": "my_mse",
                                              "reduction": "sum_over_batch_size"}),
    ("mape", "mean_absolute_percentage_error"), ("msle", "mean_squared_logarithmic_error"),
    ("squared_hinge", "squared_hinge"),
    (losses.MeanSquaredLogarithmicError(reduction="sum"),
     {"name": "mean_squared_logarithmic_error", "reduction": "sum"})])
def test_every_loss_round_trips(tmp_path, loss, written):
    """A loss at its defaults is written as Keras' function name, else as its Keras class and
    get_config() (the keys of Keras 3.15's serialize_keras_object), and read back the same."""
    m = models.Sequential([layers.Input((4,)), layers.Dense(3)], seed=0)
    m.compile(optimizer="sgd", loss=loss)
    kf.save_keras(m, tmp_path / "m.keras")
    cc = json.loads(zipfile.ZipFile(tmp_path / "m.keras").read("config.json"))["compile_config"]
    if isinstance(written, str):
        assert cc["loss"] == written
    else:
        assert cc["loss"] == {"module": "keras.losses", "class_name": type(loss).__name__,
                              "config": written, "registered_name": None}
    m2 = kf.load_keras(tmp_path / "m.keras")
    assert type(m2.loss) is type(m.loss) and m2.loss.get_config() == m.loss.get_config()


def test_float64_round_trip(tmp_path):
    before = config.floatx()
    config.set_floatx("float64")
    try:
        m = models.Sequential([layers.Input((4,)), layers.Dense(3, activation="tanh")], seed=1)
    finally:
        config.set_floatx(before)
    kf.save_keras(m, tmp_path / "m.keras")
    cfg = json.loads(zipfile.ZipFile(tmp_path / "m.keras").read("config.json"))
    assert _layer_entries(cfg)[1]["config"]["dtype"]["config"] == {"name": "float64"}
    assert _layer_entries(cfg)[0]["config"]["dtype"] == "float64"
    m2 = kf.load_keras(tmp_path / "m.keras")
    assert m2.layers[0].dtype == np.float64
    x = np.random.default_rng(0).standard_normal((5, 4))
    assert np.array_equal(m.predict(x, verbose=0), m2.predict(x, verbose=0))


def test_weights_h5_round_trip_and_mismatch(tmp_path):
    m = _every_layer()
    kf.save_weights_h5(m, tmp_path / "m.weights.h5")
    other = _every_layer(seed=5)
    assert not np.array_equal(other.get_weights()[0], m.get_weights()[0])
    kf.load_weights_h5(other, tmp_path / "m.weights.h5")
    for a, b in zip(m.get_weights(), other.get_weights()):
        assert np.array_equal(a, b)
    # another architecture: refused, the model unchanged
    small = models.Sequential([layers.Input((3, 4)), layers.Flatten(), layers.Dense(8)], seed=0)
    before = small.get_weights()
    with pytest.raises(FileFormatError, match="dense_1"):
        kf.load_weights_h5(small, tmp_path / "m.weights.h5")
    wide = models.Sequential([layers.Input((3, 4)), layers.Flatten(), layers.Dense(9)], seed=0)
    with pytest.raises(FileFormatError, match=r"shape \(12, 9\)"):
        kf.load_weights_h5(wide, tmp_path / "m.weights.h5")
    assert all(np.array_equal(a, b) for a, b in zip(before, small.get_weights()))
    with pytest.raises(FileNotFoundError):
        kf.load_weights_h5(m, tmp_path / "missing.weights.h5")


# ---- the layout, against Keras' -------------------------------------------------------------

_P = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
      "registered_name": None}


def _init(cls, cfg):
    return {"module": "keras.initializers", "class_name": cls, "config": cfg,
            "registered_name": None}


def test_layout_matches_keras(tmp_path):
    m = models.Sequential([
        layers.Input((4,)), layers.Dense(3, activation="relu", name="hidden"),
        layers.Dropout(0.5, seed=7, name="drop"),
        layers.Dense(2, activation=functools.partial(activations.leaky_relu, negative_slope=0.1), use_bias=False,
                     kernel_initializer="he_uniform", name="out"),
        layers.Activation("softmax", name="probs")], name="net", seed=0)
    m.compile(optimizer=optimizers.RMSprop(momentum=0.5, centered=True),
              loss="categorical_crossentropy", metrics=["accuracy"])
    x, y = _data(n=8, shape=(4,), k=2)
    m.fit(x, y, epochs=1, batch_size=4, verbose=0)
    kf.save_keras(m, tmp_path / "m.keras")

    z = zipfile.ZipFile(tmp_path / "m.keras")
    assert [i.filename for i in z.infolist()] == ["metadata.json", "config.json",
                                                  "model.weights.h5"]
    assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())
    meta = json.loads(z.read("metadata.json"))
    assert meta["keras_version"].startswith("3.") and meta["saved_by"].startswith("fastnn ")
    time.strptime(meta["date_saved"], "%Y-%m-%d@%H:%M:%S")

    def layer(cls, cfg, build=None):
        entry = {"module": "keras.layers", "class_name": cls, "config": cfg,
                 "registered_name": None}
        if build:
            entry["build_config"] = {"input_shape": build}
        return entry
    none4 = {"kernel_regularizer": None, "bias_regularizer": None, "kernel_constraint": None,
             "bias_constraint": None}
    expected = {
        "module": "keras", "class_name": "Sequential", "registered_name": None,
        "config": {
            "name": "net", "trainable": True, "dtype": _P,
            "layers": [
                layer("InputLayer", {"batch_shape": [None, 4], "dtype": "float32",
                                     "sparse": False, "name": "input_layer"}),
                layer("Dense", {"name": "hidden", "trainable": True, "dtype": _P, "units": 3,
                                "activation": "relu", "use_bias": True,
                                "kernel_initializer": _init("GlorotUniform", {"seed": None}),
                                "bias_initializer": _init("Zeros", {}), **none4}, [None, 4]),
                layer("Dropout", {"name": "drop", "trainable": True, "dtype": _P, "rate": 0.5,
                                  "seed": 7, "noise_shape": None}),
                layer("Dense", {"name": "out", "trainable": True, "dtype": _P, "units": 2,
                                "activation": "linear", "use_bias": False,
                                "kernel_initializer": _init("HeUniform", {"seed": None}),
                                "bias_initializer": _init("Zeros", {}), **none4}, [None, 3]),
                layer("LeakyReLU", {"name": "out_activation", "trainable": True, "dtype": _P,
                                    "negative_slope": 0.1}),
                layer("Activation", {"name": "probs", "trainable": True, "dtype": _P,
                                     "activation": "softmax"})],
            "build_input_shape": [None, 4]},
        "build_config": {"input_shape": [None, 4]},
        "compile_config": {
            "optimizer": {"module": "keras.optimizers", "class_name": "RMSprop",
                          "registered_name": None,
                          "config": {"name": "rmsprop", "learning_rate": 0.001,
                                     "weight_decay": None, "clipnorm": None,
                                     "global_clipnorm": None, "clipvalue": None,
                                     "use_ema": False, "ema_momentum": 0.99,
                                     "ema_overwrite_frequency": None,
                                     "loss_scale_factor": None,  # (Keras 3.15's get_config)
                                     "gradient_accumulation_steps": None, "rho": 0.9,
                                     "momentum": 0.5, "epsilon": 1e-07, "centered": True}},
            "loss": "categorical_crossentropy", "loss_weights": None, "metrics": ["accuracy"],
            "weighted_metrics": None, "run_eagerly": False, "steps_per_execution": 1,
            "jit_compile": "auto"}}
    assert json.loads(z.read("config.json")) == expected

    f = h5py.File(io.BytesIO(z.read("model.weights.h5")))
    found = {}

    def visit(name, obj):  # (a visitor returning a value would stop the walk)
        found[name] = "dataset" if isinstance(obj, h5py.Dataset) else "group"
    f.visititems(visit)
    groups = ["vars", "layers", "optimizer", "optimizer/vars"] + [
        f"layers/{k}{v}" for k in ("dense", "dropout", "dense_1", "leaky_re_lu", "activation")
        for v in ("", "/vars")]
    datasets = ["layers/dense/vars/0", "layers/dense/vars/1", "layers/dense_1/vars/0"] + [
        f"optimizer/vars/{i}" for i in range(2 + 3 * 3)]  # 3 slots of 3 weights
    assert found == {**{g: "group" for g in groups}, **{d: "dataset" for d in datasets}}
    names = {"vars": "net", "layers/dense/vars": "hidden", "layers/dropout/vars": "drop",
             "layers/dense_1/vars": "out", "layers/leaky_re_lu/vars": "out_activation",
             "layers/activation/vars": "probs", "optimizer/vars": "rmsprop"}
    assert {g: f[g].attrs["name"] for g in names} == names
    w = m.get_weights()
    assert np.array_equal(f["layers/dense/vars/0"][()], w[0])
    assert np.array_equal(f["layers/dense/vars/1"][()], w[1])
    assert np.array_equal(f["layers/dense_1/vars/0"][()], w[2])
    assert int(f["optimizer/vars/0"][()]) == 2
    assert f["optimizer/vars/1"][()] == np.float32(0.001)
    assert f["optimizer/vars/1"].dtype == np.float32
    assert [f[f"optimizer/vars/{i}"].shape for i in range(2, 11)] == \
        [(4, 3), (3,), (3, 2)] * 3  # velocities, then momentums, then average_gradients


def _step_by_hand(opt_name):
    """One training step of a linear Dense(2) on 4 inputs with mean squared error, from known
    weights; returns (model, the expected optimizer variables in Keras' order)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 4)).astype("float32")
    t = rng.standard_normal((6, 2)).astype("float32")
    w0 = rng.standard_normal((4, 2)).astype("float32")
    b0 = rng.standard_normal(2).astype("float32")
    opt = {"rmsprop": optimizers.RMSprop(momentum=0.5, centered=True),
           "adam": optimizers.Adam(amsgrad=True), "nadam": optimizers.Nadam(),
           "sgd": optimizers.SGD(0.01, momentum=0.9), "adamax": optimizers.Adamax(),
           "adadelta": optimizers.Adadelta(), "lion": optimizers.Lion()}[opt_name]
    m = models.Sequential([layers.Input((4,)), layers.Dense(2)], seed=0)
    m.compile(optimizer=opt, loss="mse")
    m.set_weights([w0, b0])
    m.train_on_batch(x, t)
    x64, t64 = x.astype(np.float64), t.astype(np.float64)
    dp = 2 * (x64 @ w0 + b0 - t64) / t64.size  # d mean((p - t)^2) / dp
    grads = [x64.T @ dp, dp.sum(axis=0)]
    head = [1, 0.01 if opt_name == "sgd" else 0.001]
    if opt_name == "rmsprop":
        v = [0.1 * g * g for g in grads]
        avg = [0.1 * g for g in grads]
        mom = [0.001 * g / np.sqrt(vi - ai * ai + 1e-7) for g, vi, ai in zip(grads, v, avg)]
        return m, head + v + mom + avg
    if opt_name == "sgd":
        return m, head + [-0.01 * g for g in grads]
    if opt_name == "adamax":  # momentum 0.1 g and norm |g|, interleaved per weight
        return m, head + [a for g in grads for a in (0.1 * g, np.abs(g))]
    if opt_name == "adadelta":  # accumulated_grad 0.05 g^2, accumulated_delta_var 0.05 d^2
        d = [-np.sqrt(1e-7) * g / np.sqrt(0.05 * g * g + 1e-7) for g in grads]
        return m, head + [a for g, di in zip(grads, d) for a in (0.05 * g * g, 0.05 * di * di)]
    if opt_name == "lion":  # momentum (1 - 0.99) g
        return m, head + [0.01 * g for g in grads]
    mv = [a for g in grads for a in (0.1 * g, 0.001 * g * g)]  # interleaved per weight
    if opt_name == "adam":
        return m, head + mv + [0.001 * g * g for g in grads]  # then velocity_hats
    return m, head + mv + [0.9 * (1 - 0.5 * 0.96)]  # nadam: u_product after one step


@pytest.mark.parametrize("opt_name", ["rmsprop", "adam", "nadam", "sgd", "adamax", "adadelta",
                                      "lion"])
def test_optimizer_variables_in_keras_order(tmp_path, opt_name):
    m, expected = _step_by_hand(opt_name)
    kf.save_weights_h5(m, tmp_path / "m.weights.h5")
    with h5py.File(tmp_path / "m.weights.h5") as f:
        got = [f[f"optimizer/vars/{i}"][()] for i in range(len(f["optimizer/vars"]))]
        assert sorted(f) == ["layers", "optimizer", "vars"]
        assert f["layers/dense/vars/0"].shape == (4, 2)
    assert len(got) == len(expected)
    assert got[0] == 1 and got[0].dtype == np.int64
    for g, e in zip(got[1:], expected[1:]):
        assert np.shape(g) == np.shape(e)
        np.testing.assert_allclose(g, e, rtol=2e-5, atol=1e-9)


def test_layer_keys_follow_classes_not_names(tmp_path):
    m = models.Sequential([layers.Input((2,)), layers.Dense(3, name="a"),
                           layers.Activation("relu", name="b"), layers.Dense(2, name="dense_1"),
                           layers.Dense(1, name="dense")], seed=0)
    kf.save_weights_h5(m, tmp_path / "m.weights.h5")
    with h5py.File(tmp_path / "m.weights.h5") as f:
        assert sorted(f["layers"]) == ["activation", "dense", "dense_1", "dense_2"]
        assert f["layers/dense_1/vars"].attrs["name"] == "dense_1"
        assert f["layers/dense_2/vars"].attrs["name"] == "dense"
        assert f["layers/dense_2/vars/0"].shape == (2, 1)


def test_what_keras_cannot_represent_is_refused_before_writing(tmp_path):
    path = tmp_path / "m.keras"
    path.write_bytes(b"previous")
    os.chmod(path, 0o640)

    class Custom(layers.Layer):
        pass
    cases = [
        models.Sequential([layers.Input((2,)), layers.Dense(2), Custom()]),
        # x is written as two Keras layers, x and x_activation (an ELU): a name used twice
        models.Sequential([layers.Input((2,)), layers.Dense(2, name="x", activation=
                                                            activations.Spec("elu", {"alpha": 0.5})),
                           layers.Dense(2, name="x_activation")]),
        models.Sequential([layers.Input((2,)), layers.Dense(2, kernel_initializer=lambda s, d,
                                                            r: np.zeros(s, d))]),
    ]
    for m in cases:
        with pytest.raises(ValueError):
            kf.save_keras(m, path)
    m = models.Sequential([layers.Input((2,)), layers.Dense(2)])
    m.compile(optimizer=optimizers.SGD(lambda: 0.1), loss="mse")
    with pytest.raises(ValueError, match="callable"):
        kf.save_keras(m, path)
    m = models.Sequential([layers.Dense(2)])
    with pytest.raises(ValueError, match="built"):
        kf.save_keras(m, path)
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["m.keras"]  # no temporary file left
    kf.save_keras(models.Sequential([layers.Input((2,)), layers.Dense(2)]), path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640  # re-saving keeps the mode
    link = tmp_path / "link.keras"
    link.symlink_to(path)
    kf.save_keras(models.Sequential([layers.Input((2,)), layers.Dense(5)]), link)
    assert link.is_symlink() and kf.load_keras(path).layers[0].units == 5


# ---- files written by Keras (layouts Keras 3 writes, built here by hand) ---------------------

def _keras_style_file(tmp_path, layer_entries, weights, compile_config=None, input_shape=(4,)):
    """A .keras file as Keras 3.15 writes it: its extra keys (quantization_config, ragged,
    optional, input_axes, shared_object_id...) included."""
    def policy():
        return {**_P, "shared_object_id": 1234}
    entries = [{"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
                "config": {"batch_shape": [None, *input_shape], "dtype": "float32",
                           "sparse": False, "ragged": False, "name": "input_layer",
                           "optional": False}}]
    for cls, cfg in layer_entries:
        entries.append({"module": "keras.layers", "class_name": cls, "registered_name": None,
                        "config": {"name": cfg.pop("name"), "trainable": True,
                                   "dtype": policy(), **cfg}})
    top = {"module": "keras", "class_name": "Sequential", "registered_name": None,
           "config": {"name": "sequential", "trainable": True, "dtype": policy(),
                      "layers": entries, "build_input_shape": [None, *input_shape]},
           "build_config": {"input_shape": [None, *input_shape]},
           "compile_config": compile_config or {}}
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_group("vars")
        for key, arrays in weights.items():
            g = f.create_group(key).create_group("vars")
            for i, a in enumerate(arrays):
                g[str(i)] = a
    path = tmp_path / "k.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        z.writestr("config.json", json.dumps(top))
        z.writestr("model.weights.h5", buf.getvalue())
    return path


def _dense(name, units, activation="linear", use_bias=True):
    glorot = _init("GlorotUniform", {"seed": None, "input_axes": None, "output_axes": None})
    return ("Dense", {"name": name, "units": units, "activation": activation,
                      "use_bias": use_bias, "kernel_initializer": glorot,
                      "bias_initializer": _init("Zeros", {}), "kernel_regularizer": None,
                      "bias_regularizer": None, "kernel_constraint": None,
                      "bias_constraint": None, "quantization_config": None})


def test_reads_keras_activation_layers_and_compile_config(tmp_path):
    rng = np.random.default_rng(0)
    w = [rng.standard_normal(s).astype("float32") for s in ((4, 5), (5,), (5, 3), (3,))]
    adam = {"module": "keras.optimizers", "class_name": "Adam", "registered_name": None,
            "config": {"name": "adam", "learning_rate": 0.0010000000474974513,
                       "weight_decay": None, "clipnorm": None, "global_clipnorm": None,
                       "clipvalue": None, "use_ema": False, "ema_momentum": 0.99,
                       "ema_overwrite_frequency": None, "loss_scale_factor": None,
                       "gradient_accumulation_steps": None, "beta_1": 0.9, "beta_2": 0.999,
                       "epsilon": 1e-07, "amsgrad": False}}
    cc = {"optimizer": adam,
          "loss": {"module": "keras.losses", "class_name": "CategoricalCrossentropy",
                   "registered_name": None,
                   "config": {"name": "categorical_crossentropy",
                              "reduction": "sum_over_batch_size", "from_logits": True,
                              "label_smoothing": 0.0, "axis": -1}},
          "loss_weights": None,
          "metrics": [{"module": "keras.metrics", "class_name": "CategoricalAccuracy",
                       "registered_name": None,
                       "config": {"name": "categorical_accuracy", "dtype": "float32"}},
                      {"module": "keras.metrics", "class_name": "function", "config": "mae",
                       "registered_name": "mae"}],
          "weighted_metrics": None, "run_eagerly": False, "steps_per_execution": 1,
          "jit_compile": True}
    path = _keras_style_file(
        tmp_path,
        [_dense("dense", 5, activation={"module": "keras.activations", "class_name": "function",
                                        "config": "linear", "registered_name": "linear"}),
         ("LeakyReLU", {"name": "leaky_re_lu", "negative_slope": 0.1}),
         ("ELU", {"name": "elu", "alpha": 0.5}),
         ("ReLU", {"name": "re_lu", "max_value": None, "negative_slope": 0.0,
                   "threshold": 0.0}),
         ("Dropout", {"name": "dropout", "rate": 0.3, "seed": None, "noise_shape": None}),
         _dense("dense_1", 3), ("Softmax", {"name": "softmax", "axis": -1})],
        {"layers/dense": w[:2], "layers/dense_1": w[2:],
         **{f"layers/{k}": [] for k in ("leaky_re_lu", "elu", "re_lu", "dropout", "softmax")}},
        compile_config=cc)
    m = kf.load_keras(path)
    x = rng.standard_normal((7, 4)).astype("float32")
    h = x @ w[0] + w[1]
    h = np.where(h > 0, h, 0.1 * h)
    h = np.where(h > 0, h, 0.5 * np.expm1(np.minimum(h, 0)))
    h = np.maximum(h, 0) @ w[2] + w[3]
    e = np.exp(h - h.max(axis=1, keepdims=True))
    np.testing.assert_allclose(m.predict(x, verbose=0), e / e.sum(axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-6)
    assert m.compiled and type(m.optimizer) is optimizers.Adam and m.loss.from_logits
    assert m.get_compile_config()["metrics"] == ["categorical_accuracy", "mae"]
    assert m.optimizer.learning_rate == 0.0010000000474974513


DATA = os.path.join(os.path.dirname(__file__), "data")


def test_reads_a_nested_model_keras_wrote():
    """tests/data/keras_nested.keras was written by Keras 3.15.1: Input(3) -> Dense(6, relu)
    -> Sequential "block" [Dense(5, tanh), Dense(4, relu)] -> Dense(2, softmax), Adam(0.01)
    after two steps; the .npz holds Keras' predictions and its weights after a third step."""
    want = np.load(os.path.join(DATA, "keras_nested_expected.npz"))
    m = kf.load_keras(os.path.join(DATA, "keras_nested.keras"))
    block = m.layers[1]
    assert type(block) is models.Sequential and block.name == "block"
    assert [type(l).__name__ for l in block.layers] == ["Dense", "Dense"]
    assert np.abs(m.predict(want["x"], verbose=0) - want["predictions"]).max() < 1e-6
    assert type(m.optimizer) is optimizers.Adam and m.optimizer.iterations == 2
    m.train_on_batch(want["x"], want["y"])  # Keras' third step, from Keras' optimizer state
    for i, w in enumerate(m.get_weights()):
        assert np.abs(want[f"after_{i}"] - w).max() < 1e-6


def _nested_model():
    inner = models.Sequential([layers.Dense(5, activation="tanh"), layers.Dense(4, name="d")],
                              name="block")
    m = models.Sequential([layers.Input((3,)), layers.Dense(6, activation="relu"), inner,
                           layers.Dense(2, activation="softmax")], seed=5)
    m.compile(optimizers.Adam(0.01), "categorical_crossentropy")
    return m


def test_nested_models_are_written_as_keras_nests_them(tmp_path):
    """A Sequential inside a Sequential is one entry (module "keras", its own InputLayer and
    layers, compile_config {}) and its weights sit under layers/sequential/layers/<key>, as in
    the file Keras wrote (tests/data/keras_nested.keras); the file reads back the same."""
    x, y = _data(8, seed=1, shape=(3,), k=2)
    m = _nested_model()
    m.fit(x, y, epochs=2, batch_size=4, verbose=0)
    kf.save_keras(m, tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z, \
            zipfile.ZipFile(os.path.join(DATA, "keras_nested.keras")) as zk:
        mine, theirs = (json.loads(a.read("config.json"))["config"]["layers"][2] for a in (z, zk))
        assert {k: v for k, v in mine.items() if k != "config"} == \
            {k: v for k, v in theirs.items() if k != "config"}  # module, class, build/compile
        assert [e["class_name"] for e in mine["config"]["layers"]] == \
            [e["class_name"] for e in theirs["config"]["layers"]] == ["InputLayer", "Dense", "Dense"]
        tree = []
        for a in (z, zk):
            f = h5py.File(io.BytesIO(a.read("model.weights.h5")))
            found = []
            f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset)
                         and name.startswith("layers/") else None)
            tree.append(sorted(found))
        assert tree[0] == tree[1] and "layers/sequential/layers/dense_1/vars/1" in tree[0]
    k = kf.load_keras(tmp_path / "m.keras")
    assert type(k.layers[1]) is models.Sequential and k.layers[1].layers[1].name == "d"
    np.testing.assert_array_equal(k.predict(x, verbose=0), m.predict(x, verbose=0))
    for a, b in zip(k.optimizer.variables, m.optimizer.variables):
        np.testing.assert_array_equal(a, b)
    m.train_on_batch(x, y)
    k.train_on_batch(x, y)
    for a, b in zip(k.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)
    kf.save_weights_h5(m, tmp_path / "m.weights.h5")  # and the weights file alone
    fresh = _nested_model()
    fresh.build((None, 3))
    kf.load_weights_h5(fresh, tmp_path / "m.weights.h5")
    for a, b in zip(fresh.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_nested_model_that_disagrees_with_its_input_is_refused(tmp_path):
    def edit(config):  # the nested model's InputLayer says 7 features; the layer before gives 6
        config["config"]["layers"][2]["config"]["layers"][0]["config"]["batch_shape"] = [None, 7]
    _rewrite(os.path.join(DATA, "keras_nested.keras"), tmp_path / "bad.keras", edit)
    with pytest.raises(FileFormatError, match=r"model.layers\[2\] takes samples of shape"):
        kf.load_keras(tmp_path / "bad.keras")


@pytest.mark.parametrize("loss_weights", [0.5, [0.25]])
def test_loss_weights_and_weighted_metrics_round_trip_as_keras_writes_them(tmp_path, loss_weights):
    """Keras 3.15 writes compile(loss_weights=0.5, weighted_metrics=["accuracy", "mse"]) as
    "loss_weights": 0.5 ([0.25] as given) and "weighted_metrics": ["accuracy", "mse"] (checked
    with Keras); fastnn writes the same and reads them back into compile."""
    x, y = _data(seed=2, shape=(5,))
    sw = np.linspace(0.1, 2.0, len(x)).astype("float32")
    m = models.Sequential([layers.Input((x.shape[1],)), layers.Dense(y.shape[1], activation="softmax")],
                          seed=3)
    m.compile("adam", "categorical_crossentropy", loss_weights=loss_weights, metrics=["accuracy"],
              weighted_metrics=["accuracy", "mse"])
    m.fit(x, y, sample_weight=sw, epochs=1, batch_size=8, verbose=0)
    kf.save_keras(m, tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        cc = json.loads(z.read("config.json"))["compile_config"]
    assert cc["loss_weights"] == loss_weights
    assert cc["metrics"] == ["accuracy"] and cc["weighted_metrics"] == ["accuracy", "mse"]
    k = kf.load_keras(tmp_path / "m.keras")
    assert k.get_compile_config() == m.get_compile_config()
    got = k.evaluate(x, y, sample_weight=sw, batch_size=8, verbose=0, return_dict=True)
    want = m.evaluate(x, y, sample_weight=sw, batch_size=8, verbose=0, return_dict=True)
    assert got == want and set(got) == {"loss", "accuracy", "weighted_accuracy", "mse"}
    p = m.predict(x, verbose=0)  # the weighted loss, by hand: loss_weights x weighted mean
    lw = loss_weights if isinstance(loss_weights, float) else loss_weights[0]
    cce = -np.sum(y * np.log(np.clip(p, 1e-7, 1 - 1e-7)), axis=1)
    assert got["loss"] == pytest.approx(lw * np.sum(sw * cce) / len(x), rel=1e-5)


def test_unsupported_compile_config_loads_uncompiled_with_a_warning(tmp_path):
    w = [np.ones((4, 2), "float32"), np.zeros(2, "float32")]
    ftrl = {"module": "keras.optimizers", "class_name": "Ftrl", "registered_name": None,
            "config": {"name": "ftrl", "learning_rate": 0.001}}
    for cc, what in [({"optimizer": ftrl, "loss": "mse"}, "Ftrl"),
                     ({"optimizer": "adam", "loss": "binary_focal_crossentropy"},
                      "binary_focal_crossentropy"),
                     ({"optimizer": "adam", "loss": {
                         "module": "keras.losses", "class_name": "MeanSquaredError",
                         "registered_name": None,
                         "config": {"name": "mse", "reduction": None}}}, "reduction=None"),
                     ({"optimizer": "adam", "loss": {
                         "module": "keras.losses", "class_name": "CategoricalCrossentropy",
                         "registered_name": None,
                         "config": {"name": "cce", "reduction": "sum_over_batch_size",
                                    "from_logits": False, "label_smoothing": 0.0,
                                    "axis": 1}}}, "axis"),
                     ({"optimizer": "adam", "loss": "mse", "loss_weights": [0.5, 0.5]},
                      "loss_weights"),
                     ({"optimizer": "adam", "loss": "mse", "loss_weights": {"out": 0.5}},
                      "loss_weights"),
                     ({"optimizer": "adam", "loss": "mse", "weighted_metrics": ["auc"]},
                      "auc")]:
        path = _keras_style_file(tmp_path, [_dense("dense", 2)], {"layers/dense": w}, cc)
        with pytest.warns(UserWarning, match=what):
            m = kf.load_keras(path)
        assert not m.compiled and np.array_equal(m.get_weights()[0], w[0])


# ---- hostile and malformed files ------------------------------------------------------------

@pytest.mark.parametrize("entry,match", [
    ({"module": "keras.layers", "class_name": "Conv2D", "config": {"filters": 3},
      "registered_name": None}, "Conv2D is not supported by fastnn"),
    ({"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
      "config": {"name": "l", "function": {"class_name": "__lambda__",
                                           "config": {"value": "4wEAAAAAAAA="}}}}, "Lambda"),
    ({"module": "my_package.layers", "class_name": "Dense", "config": {"units": 3},
      "registered_name": "my_package>Dense"}, "custom class"),
    ({"module": "keras.layers", "class_name": "Dense", "config": {"units": 3, "activation": {
        "class_name": "__lambda__", "config": {"value": "x"}}}}, "lambda"),
    ({"module": "keras.layers", "class_name": "Dense", "config": {"units": 3,
                                                                  "activation": "glu"}},
     "glu"),
    ({"module": "keras.layers", "class_name": "Dense", "config": {
        "units": 3, "kernel_regularizer": {"module": "keras.regularizers",
                                           "class_name": "OrthogonalRegularizer",
                                           "config": {"factor": 0.01, "mode": "rows"}}}},
     "OrthogonalRegularizer"),
    ({"module": "keras.layers", "class_name": "Dense", "config": {
        "units": 3, "dtype": {"module": "keras", "class_name": "DTypePolicy",
                              "config": {"name": "mixed_float16"}}}}, "mixed_float16"),
    ({"module": "keras.layers", "class_name": "Dense", "config": {
        "units": 3, "kernel_initializer": {"module": "keras.initializers",
                                           "class_name": "STFT", "config": {}}}},
     "STFT"),
])
def test_unsupported_layers_and_options_are_named(saved, tmp_path, entry, match):
    bad = _rewrite(saved, tmp_path / "bad.keras",
                   edit_config=lambda c: _layer_entries(c).append(entry))
    with pytest.raises(UnsupportedError, match=match) as e:
        kf.load_keras(bad)
    assert not isinstance(e.value, FileFormatError) and isinstance(e.value, ValueError)
    assert "bad.keras" in str(e.value)


def test_functional_models_are_refused(saved, tmp_path):
    bad = _rewrite(saved, tmp_path / "bad.keras",
                   edit_config=lambda c: c.update(class_name="Functional"))
    with pytest.raises(UnsupportedError, match="Sequential models only"):
        kf.load_keras(bad)


def _dense_entry(cfg, i=2):
    return _layer_entries(cfg)[i]["config"]  # the first Dense of _every_layer


@pytest.mark.parametrize("edit,match", [
    (lambda c: _dense_entry(c).update(units="8"), "units"),
    (lambda c: _dense_entry(c).update(units=0), "units"),
    (lambda c: _layer_entries(c)[-1]["config"].update(units=10**12), "parameters, more than"),
    (lambda c: _layer_entries(c)[3]["config"].update(rate=1.5), "rate"),
    (lambda c: _layer_entries(c)[0]["config"].update(batch_shape=[None, -3, 4]),
     "batch_shape"),
    (lambda c: c["config"].update(layers="dense"), "layers"),
    (lambda c: c["compile_config"]["optimizer"]["config"].update(learning_rate=-1.0),
     "learning_rate"),
    (lambda c: c["compile_config"]["optimizer"]["config"].update(learning_rate=float("nan")),
     "learning_rate"),
    (lambda c: _dense_entry(c).update(name={"not": "a name"}), "name"),
    (lambda c: _layer_entries(c)[2].update(build_config={"input_shape": [None, 5]}),
     "built for"),
])
def test_malformed_configs_raise_file_format_error(saved, tmp_path, edit, match):
    bad = _rewrite(saved, tmp_path / "bad.keras", edit_config=edit)
    start = time.perf_counter()
    with pytest.raises(FileFormatError, match=match):
        kf.load_keras(bad)
    assert time.perf_counter() - start < 2


def _replace_dataset(path, **kw):
    def edit(f):
        del f[path]
        f.create_dataset(path, **kw)
    return edit


@pytest.mark.parametrize("edit,match", [
    # declares 40 GB, stores almost nothing (chunked, compressed, never written)
    (_replace_dataset("layers/dense/vars/0", shape=(10**5, 10**5), dtype="float32",
                      chunks=(100, 100), compression="gzip"), r"shape \(12, 8\)"),
    (_replace_dataset("layers/dense/vars/0", data=np.zeros((12, 8), "int32")), "dtype int32"),
    (_replace_dataset("layers/dense/vars/1", data=np.array([b"abc"] * 8)), "dtype"),
    (_replace_dataset("optimizer/vars/4", data=np.full((8,), np.nan, "float32")), "NaN"),
    (_replace_dataset("optimizer/vars/0", data=np.array(-5)), "iterations"),
    (_replace_dataset("optimizer/vars/0", data=np.array(1.5)), "integer"),
    (lambda f: f.create_dataset("layers/dense/vars/2", data=np.zeros(3)), "holds 3 variables"),
    (lambda f: f.copy("layers/dense", "layers/dense_99"), "dense_99"),
    (lambda f: f.__delitem__("layers/dense_1"), "no layers/dense_1"),
    (lambda f: f.create_dataset("optimizer/vars/99", data=np.zeros(3)), "optimizer/vars holds"),
])
def test_malformed_weights_raise_file_format_error(saved, tmp_path, edit, match):
    bad = _rewrite(saved, tmp_path / "bad.keras", edit_h5=edit)
    start = time.perf_counter()
    with pytest.raises(FileFormatError, match=match):
        kf.load_keras(bad)
    assert time.perf_counter() - start < 2


def test_links_and_external_data_are_refused(saved, tmp_path):
    def soft(f):
        f.move("layers/dense/vars/0", "elsewhere")
        f["layers/dense/vars/0"] = h5py.SoftLink("/elsewhere")

    def external(f):
        del f["layers/dense/vars/0"]
        f["layers/dense/vars/0"] = h5py.ExternalLink("/etc/passwd", "/x")

    def external_storage(f):
        del f["layers/dense/vars/0"]
        f.create_dataset("layers/dense/vars/0", shape=(12, 8), dtype="float32",
                         external=[(str(tmp_path / "raw.bin"), 0, 12 * 8 * 4)])
    (tmp_path / "raw.bin").write_bytes(bytes(12 * 8 * 4))
    for edit, match in ((soft, "SoftLink"), (external, "ExternalLink"),
                        (external_storage, "outside the file")):
        bad = _rewrite(saved, tmp_path / "bad.keras", edit_h5=edit)
        with pytest.raises(FileFormatError, match=match):
            kf.load_keras(bad)


def test_oversized_and_compressed_entries(saved, tmp_path):
    # model.weights.h5 larger than the architecture implies: refused before it is read
    bad = _rewrite(saved, tmp_path / "big.keras", edit_h5=lambda f: f.create_dataset(
        "padding", data=np.zeros(1 << 20, "float64")))
    with pytest.raises(FileFormatError, match="at most"):
        kf.load_keras(bad)
    # a deflate bomb: a config.json that inflates to 64 MiB
    bomb = tmp_path / "bomb.keras"
    with zipfile.ZipFile(saved) as zin, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", b" " * (64 << 20))
        z.writestr("model.weights.h5", zin.read("model.weights.h5"))
    assert os.path.getsize(bomb) < 1 << 20
    start = time.perf_counter()
    with pytest.raises(FileFormatError, match="config.json of at most"):
        kf.load_keras(bomb)
    assert time.perf_counter() - start < 1
    # deflated entries of the right size are fine (Keras itself reads them)
    m = kf.load_keras(_rewrite(saved, tmp_path / "deflated.keras",
                               compression=zipfile.ZIP_DEFLATED))
    assert m.compiled
    # other compression methods and encryption are refused
    with zipfile.ZipFile(saved) as zin, zipfile.ZipFile(tmp_path / "bz.keras", "w",
                                                         zipfile.ZIP_BZIP2) as z:
        for name in zin.namelist():
            z.writestr(name, zin.read(name))
    with pytest.raises(FileFormatError, match="ZIP method"):
        kf.load_keras(tmp_path / "bz.keras")
    raw = bytearray(saved.read_bytes())
    at = raw.find(b"PK\x01\x02")  # first central directory entry: set its encrypted flag
    raw[at + 8] |= 1
    (tmp_path / "enc.keras").write_bytes(bytes(raw))
    with pytest.raises(FileFormatError, match="encrypted"):
        kf.load_keras(tmp_path / "enc.keras")


def test_truncated_corrupted_and_foreign_files(saved, tmp_path):
    data = saved.read_bytes()
    for cut in (0, 10, len(data) // 3, len(data) // 2, len(data) - 30, len(data) - 1):
        (tmp_path / "cut.keras").write_bytes(data[:cut])
        with pytest.raises(FileFormatError):
            kf.load_keras(tmp_path / "cut.keras")
    flipped = bytearray(data)
    at = data.find(b"\x89HDF")
    flipped[at + 600] ^= 0xFF  # inside the HDF5 entry: the ZIP CRC no longer matches
    (tmp_path / "flip.keras").write_bytes(bytes(flipped))
    with pytest.raises(FileFormatError):
        kf.load_keras(tmp_path / "flip.keras")
    for name, body, match in [
            ("config.json", b"{not json", "not valid JSON"),
            ("config.json", b"[" * 100 + b"]" * 100, "nested"),
            ("config.json", b'"a string"', "object"),
            ("model.weights.h5", b"not hdf5 at all", "HDF5")]:
        with zipfile.ZipFile(saved) as zin, zipfile.ZipFile(tmp_path / "x.keras", "w") as z:
            for item in zin.namelist():
                z.writestr(item, body if item == name else zin.read(item))
        with pytest.raises(FileFormatError, match=match):
            kf.load_keras(tmp_path / "x.keras")
    with zipfile.ZipFile(saved) as zin, zipfile.ZipFile(tmp_path / "x.keras", "w") as z:
        z.writestr("config.json", zin.read("config.json"))
    with pytest.raises(FileFormatError, match="model.weights.h5 is missing"):
        kf.load_keras(tmp_path / "x.keras")
    with h5py.File(tmp_path / "legacy.h5", "w") as f:
        f.attrs["layer_names"] = [b"dense"]
    with pytest.raises(FileFormatError, match="legacy"):
        kf.load_keras(tmp_path / "legacy.h5")
    m = _every_layer()
    with pytest.raises(FileFormatError, match="legacy"):
        kf.load_weights_h5(m, tmp_path / "legacy.h5")
    (tmp_path / "junk.weights.h5").write_bytes(b"junk" * 10)
    with pytest.raises(FileFormatError, match="HDF5"):
        kf.load_weights_h5(m, tmp_path / "junk.weights.h5")
    with pytest.raises(FileNotFoundError):
        kf.load_keras(tmp_path / "missing.keras")


# ---- real Keras ---------------------------------------------------------------------------------

def _keras_env():
    """An environment in which a subprocess imports Keras 3 with an installed backend, or None.
    Keras runs in a subprocess: importing it (and JAX's or TensorFlow's threads) into the test
    process would change what the fork tests see."""
    if importlib.util.find_spec("keras") is None:
        return None
    env = dict(os.environ)
    if "KERAS_BACKEND" not in env:
        for backend in ("jax", "tensorflow", "torch"):
            if importlib.util.find_spec(backend) is not None:
                env["KERAS_BACKEND"] = backend
                break
        else:
            return None
    return env


_KERAS_SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    warnings.simplefilter("always")
    import numpy as np
    try:
        import keras
    except Exception as e:  # not installed, or no usable backend
        print("NO KERAS", e)
        sys.exit(3)
    d = sys.argv[1]
    out = {"keras": keras.__version__, "backend": keras.backend.backend()}
    x, y = np.load(d + "/x.npy"), np.load(d + "/y.npy")
    # fastnn's file: load, predict, resume training for one step
    with warnings.catch_warnings(record=True) as caught:
        m = keras.saving.load_model(d + "/fastnn.keras")
        np.save(d + "/keras_pred.npy", m.predict(x, verbose=0))
        out["iterations"] = int(m.optimizer.iterations.numpy())
        m.train_on_batch(x, y)
        np.savez(d + "/keras_step.npz", *m.get_weights())
        # fastnn's .weights.h5 into the same architecture
        m2 = keras.Sequential.from_config(m.get_config())
        m2.load_weights(d + "/fastnn.weights.h5")
        np.save(d + "/keras_pred_h5.npy", m2.predict(x, verbose=0))
    # Keras' own warnings about loading (NumPy deprecations from inside JAX aside)
    out["warnings"] = [str(w.message)[:200] for w in caught
                       if issubclass(w.category, UserWarning)]
    # Keras' own file, for fastnn to read
    L = keras.layers
    keras.utils.set_random_seed(0)
    k = keras.Sequential([keras.Input((3, 4)), L.Flatten(), L.Dense(8, activation="relu"),
                          L.Dropout(0.0), L.Dense(6, kernel_initializer="he_normal"),
                          L.LeakyReLU(0.1), L.Dense(5, activation="gelu", use_bias=False),
                          L.ELU(0.5), L.Dense(5, activation="tanh"), L.ReLU(), L.Dense(3),
                          L.Softmax()])
    k.compile(optimizer=keras.optimizers.Nadam(0.01), loss="categorical_crossentropy",
              metrics=["accuracy"])
    k.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
    k.save(d + "/keras.keras")
    k.save_weights(d + "/keras.weights.h5")
    np.save(d + "/keras_own_pred.npy", k.predict(x, verbose=0))
    k.train_on_batch(x, y)
    np.savez(d + "/keras_own_step.npz", *k.get_weights())
    print(json.dumps(out))
""")


def test_real_keras_reads_fastnn_files_and_fastnn_reads_keras_files(tmp_path):
    env = _keras_env()
    if env is None:
        pytest.skip("Keras 3 with a backend (jax, tensorflow or torch) is not installed")
    m = _every_layer(optimizer=optimizers.Adam(amsgrad=True), dropout=0.0)
    x, y = _data(seed=4)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    kf.save_keras(m, tmp_path / "fastnn.keras")
    kf.save_weights_h5(m, tmp_path / "fastnn.weights.h5")
    run = subprocess.run([sys.executable, "-c", _KERAS_SCRIPT, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=600)
    if run.returncode == 3:
        pytest.skip(f"Keras does not import here: {run.stdout.strip()}")
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    # Keras read fastnn's files: same predictions, the optimizer state, no warning
    pred = m.predict(x, verbose=0)
    assert np.abs(np.load(tmp_path / "keras_pred.npy") - pred).max() < 1e-5
    assert np.abs(np.load(tmp_path / "keras_pred_h5.npy") - pred).max() < 1e-5
    assert out["iterations"] == m.optimizer.iterations
    assert out["warnings"] == [], out["warnings"]
    m.train_on_batch(x, y)  # Keras' next step from fastnn's state is fastnn's next step
    step = np.load(tmp_path / "keras_step.npz")
    for i, w in enumerate(m.get_weights()):
        assert np.abs(step[f"arr_{i}"] - w).max() < 1e-5
    # fastnn reads Keras' files: same predictions, compiled, the same next step
    k = kf.load_keras(tmp_path / "keras.keras")
    own = np.load(tmp_path / "keras_own_pred.npy")
    assert np.abs(k.predict(x, verbose=0) - own).max() < 1e-5
    assert type(k.optimizer) is optimizers.Nadam and k.optimizer.iterations == 6
    k.train_on_batch(x, y)
    step = np.load(tmp_path / "keras_own_step.npz")
    for i, w in enumerate(k.get_weights()):
        assert np.abs(step[f"arr_{i}"] - w).max() < 1e-5
    fresh = kf.load_keras(tmp_path / "keras.keras", compile=False)
    fresh.set_weights([np.zeros_like(w) for w in fresh.get_weights()])
    kf.load_weights_h5(fresh, tmp_path / "keras.weights.h5")
    assert np.abs(fresh.predict(x, verbose=0) - own).max() < 1e-5


_KERAS_OPTIMIZERS_SCRIPT = textwrap.dedent("""
    import json, sys, warnings
    warnings.simplefilter("always")
    import numpy as np
    try:
        import keras
    except Exception as e:  # not installed, or no usable backend
        print("NO KERAS", e)
        sys.exit(3)
    d, out = sys.argv[1], {}
    x, y = np.load(d + "/x.npy"), np.load(d + "/y.npy")
    OPTS = {"Adamax": dict(learning_rate=0.01, beta_1=0.8, beta_2=0.95, epsilon=1e-5,
                           weight_decay=0.01),
            "Adadelta": dict(learning_rate=1.0, rho=0.9, epsilon=1e-6),
            "Lion": dict(learning_rate=0.001, beta_1=0.8, beta_2=0.9, weight_decay=0.05)}
    LOSS = {"Adamax": "msle", "Adadelta": "squared_hinge", "Lion": "mape"}
    for name, kw in OPTS.items():
        # fastnn's file: load (no warning), resume training for one step
        with warnings.catch_warnings(record=True) as caught:
            m = keras.saving.load_model(d + f"/fastnn_{name}.keras")
            iterations = int(m.optimizer.iterations.numpy())
            m.train_on_batch(x, y)
        np.savez(d + f"/keras_step_{name}.npz", *m.get_weights())
        out[name] = {"class": type(m.optimizer).__name__, "iterations": iterations,
                     "config": {k: v for k, v in m.optimizer.get_config().items()
                                if k in kw or k == "name"},
                     "warnings": [str(w.message)[:200] for w in caught
                                  if issubclass(w.category, UserWarning)]}
        # Keras' own file after three steps, and its fourth step
        keras.utils.set_random_seed(0)
        k = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="tanh"),
                              keras.layers.Dense(3, activation="softmax")])
        k.compile(optimizer=getattr(keras.optimizers, name)(**kw), loss=LOSS[name])
        k.fit(x, y, epochs=3, batch_size=len(x), verbose=0, shuffle=False)
        k.save(d + f"/keras_{name}.keras")
        k.train_on_batch(x, y)
        np.savez(d + f"/keras_own_step_{name}.npz", *k.get_weights())
    print(json.dumps(out))
""")


def test_real_keras_and_fastnn_exchange_adamax_adadelta_lion(tmp_path):
    """Each way, the optimizer and its state: Keras resumes fastnn's Adamax/Adadelta/Lion (its
    class, config and next step), and fastnn resumes Keras' (the same next step); the models
    train with msle, squared_hinge and mape, so those losses' gradients are Keras' too."""
    env = _keras_env()
    if env is None:
        pytest.skip("Keras 3 with a backend (jax, tensorflow or torch) is not installed")
    x, y = _data(n=16, seed=5, shape=(4,))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    opts = {"Adamax": lambda: optimizers.Adamax(0.01, beta_1=0.8, beta_2=0.95, epsilon=1e-5,
                                                weight_decay=0.01),
            "Adadelta": lambda: optimizers.Adadelta(1.0, rho=0.9, epsilon=1e-6),
            "Lion": lambda: optimizers.Lion(0.001, beta_1=0.8, beta_2=0.9, weight_decay=0.05)}
    mine, loss = {}, {"Adamax": "msle", "Adadelta": "squared_hinge", "Lion": "mape"}
    for name, make in opts.items():
        m = models.Sequential([layers.Input((4,)), layers.Dense(5, activation="tanh"),
                               layers.Dense(3, activation="softmax")], seed=1)
        m.compile(make(), loss[name])
        m.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
        kf.save_keras(m, tmp_path / f"fastnn_{name}.keras")
        mine[name] = m
    run = subprocess.run([sys.executable, "-c", _KERAS_OPTIMIZERS_SCRIPT, str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=600)
    if run.returncode == 3:
        pytest.skip(f"Keras does not import here: {run.stdout.strip()}")
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    for name, m in mine.items():
        got = out[name]
        assert got["class"] == name and got["iterations"] == 4 and got["warnings"] == []
        want = {k: v for k, v in m.optimizer.get_config().items() if k in got["config"]}
        assert got["config"] == pytest.approx(want)
        m.train_on_batch(x, y)  # Keras' next step from fastnn's state is fastnn's next step
        step = np.load(tmp_path / f"keras_step_{name}.npz")
        for i, w in enumerate(m.get_weights()):
            assert np.abs(step[f"arr_{i}"] - w).max() < 1e-5, name
        k = kf.load_keras(tmp_path / f"keras_{name}.keras")
        assert type(k.optimizer).__name__ == name and k.optimizer.iterations == 3
        assert type(k.loss) is type(losses.get(loss[name]))
        k.train_on_batch(x, y)  # from Keras' state, Keras' fourth step
        step = np.load(tmp_path / f"keras_own_step_{name}.npz")
        for i, w in enumerate(k.get_weights()):
            assert np.abs(step[f"arr_{i}"] - w).max() < 1e-5, name


def test_model_save_and_load_model_take_the_keras_format_by_its_suffix(tmp_path):
    """model.save("m.keras") writes Keras 3's format (not fastnn's ZIP under Keras' name), and
    models.load_model / save_weights / load_weights follow the suffix likewise."""
    import zipfile
    from fastnn import layers, models
    m = models.Sequential([layers.Dense(4, activation="relu", input_shape=(3,)),
                           layers.Dense(2, activation="softmax")], seed=0)
    m.compile("adam", "categorical_crossentropy")
    m.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        assert sorted(z.namelist()) == ["config.json", "metadata.json", "model.weights.h5"]
    x = np.random.default_rng(0).random((5, 3), dtype=np.float32)
    again = models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), m.predict(x, verbose=0), rtol=1e-6)
    m.save_weights(str(tmp_path / "w.weights.h5"))
    with open(tmp_path / "w.weights.h5", "rb") as f:
        assert f.read(8) == b"\x89HDF\r\n\x1a\n"  # HDF5, not a ZIP
    fresh = models.Sequential([layers.Dense(4, activation="relu", input_shape=(3,)),
                               layers.Dense(2, activation="softmax")], seed=9)
    fresh.load_weights(tmp_path / "w.weights.h5")
    np.testing.assert_allclose(fresh.predict(x, verbose=0), m.predict(x, verbose=0), rtol=1e-6)
    assert models.load_model(tmp_path / "m.keras", compile=False).compiled is False


def test_every_activation_and_initializer_round_trips(tmp_path):
    """Every activation by its Keras name, relu/leaky_relu/elu with arguments as Keras' ReLU,
    LeakyReLU and ELU layers, and every initializer class with its config (a seed kept)."""
    relu = functools.partial(activations.relu, negative_slope=0.1, max_value=2.0, threshold=0.3)
    inits = [initializers.Orthogonal(gain=2.0, seed=1), "lecun_normal",
             initializers.VarianceScaling(0.5, "fan_out", "uniform"),
             initializers.TruncatedNormal(0.1, 0.2, seed=3), initializers.Constant(0.25),
             initializers.Identity(0.5), "random_uniform"]
    stack = [layers.Input((6,))]
    for i, name in enumerate(activations.NAMES):
        stack.append(layers.Dense(6, activation=name if name != "exponential" else "tanh",
                                  kernel_initializer=inits[i % len(inits)]))
        stack.append(layers.Activation(name if name not in ("exponential", "relu") else relu))
    m = models.Sequential(stack, seed=0)
    kf.save_keras(m, tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        cfg = json.loads(z.read("config.json"))["config"]["layers"]
    relu_layers = [l["config"] for l in cfg if l["class_name"] == "ReLU"]
    assert relu_layers and {k: relu_layers[0][k] for k in ("negative_slope", "max_value",
                                                           "threshold")} == \
        {"negative_slope": 0.1, "max_value": 2.0, "threshold": 0.3}
    ortho = [l["config"]["kernel_initializer"] for l in cfg if l["class_name"] == "Dense"][0]
    assert ortho == {"module": "keras.initializers", "class_name": "Orthogonal",
                     "config": {"seed": 1, "gain": 2.0}, "registered_name": None}
    m2 = kf.load_keras(tmp_path / "m.keras")
    x = np.random.default_rng(0).standard_normal((5, 6)).astype("float32")
    np.testing.assert_array_equal(m2.predict(x, verbose=0), m.predict(x, verbose=0))
    # (the relu with arguments comes back as Keras' ReLU layer, with them)
    assert [l.activation for l in m2.layers if type(l).__name__ != "ReLU"] == \
        [l.activation for l in m.layers if l.activation != activations.spec(relu)]
    assert [(l.negative_slope, l.max_value, l.threshold) for l in m2.layers
            if type(l).__name__ == "ReLU"] == [(0.1, 2.0, 0.3)] * 2
    dense = [(a, b) for a, b in zip(m.layers, m2.layers) if type(a).__name__ == "Dense"]
    for a, b in dense:
        assert initializers.get(a.kernel_initializer) == initializers.get(b.kernel_initializer)
    with pytest.raises(ValueError, match="no Keras file form"):
        kf.save_keras(models.Sequential([layers.Dense(2, input_shape=(3,), activation=functools.partial(
            activations.gelu, approximate=True))]), tmp_path / "g.keras")


def test_new_schedules_and_metric_names_are_written_as_keras_writes_them(tmp_path):
    """PolynomialDecay, CosineDecay and CosineDecayRestarts as keras.optimizers.schedules
    objects with Keras' config keys; the metric names Keras' compile(metrics=[...]) records
    for TruePositives ... FalseNegatives, F1Score and R2Score, read back as those metrics."""
    names = ["true_positives", "false_positives", "true_negatives", "false_negatives",
             "f1_score", "r2_score"]
    sched = optimizers.CosineDecay(0.001, 5, alpha=0.1, warmup_target=0.01, warmup_steps=2)
    m = models.Sequential([layers.Input((5,)), layers.Dense(1, activation="sigmoid")], seed=0)
    m.compile(optimizers.Adam(sched), "binary_crossentropy", metrics=names)
    kf.save_keras(m, tmp_path / "m.keras")
    cc = json.loads(zipfile.ZipFile(tmp_path / "m.keras").read("config.json"))["compile_config"]
    assert cc["metrics"] == names
    lr = cc["optimizer"]["config"]["learning_rate"]
    assert lr["module"] == "keras.optimizers.schedules" and lr["class_name"] == "CosineDecay"
    assert lr["config"] == {"initial_learning_rate": 0.001, "decay_steps": 5, "alpha": 0.1,
                            "name": "CosineDecay", "warmup_target": 0.01, "warmup_steps": 2}
    m2 = kf.load_keras(tmp_path / "m.keras")
    assert m2.optimizer.schedule.get_config() == sched.get_config()
    assert m2.get_compile_config()["metrics"] == names
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 5)).astype(np.float32)
    y = (rng.random((20, 1)) < 0.5).astype(np.float32)
    hist = m2.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert set(names) <= set(hist.history)
    from fastnn import metrics
    assert [type(x) for x in m2.metrics] == [
        metrics.TruePositives, metrics.FalsePositives, metrics.TrueNegatives,
        metrics.FalseNegatives, metrics.F1Score, metrics.R2Score]


@pytest.mark.parametrize("key, value", [("decay_steps", 0), ("warmup_steps", -1),
                                        ("alpha", "x"), ("warmup_target", float("nan"))])
def test_a_poisoned_cosine_decay_is_refused(tmp_path, key, value):
    m = models.Sequential([layers.Input((5,)), layers.Dense(1)], seed=0)
    m.compile(optimizers.SGD(optimizers.CosineDecay(0.01, 5, warmup_target=0.1,
                                                    warmup_steps=2)), "mse")
    kf.save_keras(m, tmp_path / "m.keras")

    def edit(c):
        c["compile_config"]["optimizer"]["config"]["learning_rate"]["config"][key] = value
    bad = _rewrite(tmp_path / "m.keras", tmp_path / "bad.keras", edit_config=edit)
    with pytest.raises(FileFormatError, match=key):
        kf.load_keras(bad)


def test_metric_objects_with_settings_are_refused_before_writing(tmp_path):
    """fastnn writes metrics by name: a metric object with non-default settings would come back
    with its defaults, so it is refused (the file untouched); with its defaults it is its name."""
    from fastnn import metrics
    path = tmp_path / "m.keras"
    for metric in (metrics.F1Score(average="macro"), metrics.BinaryAccuracy(threshold=0.7),
                   metrics.PrecisionAtRecall(0.5)):
        m = models.Sequential([layers.Input((3,)), layers.Dense(2, activation="softmax")])
        m.compile("adam", "categorical_crossentropy", metrics=[metric])
        with pytest.raises(ValueError, match="no Keras file form"):
            kf.save_keras(m, path)
        assert not path.exists()
    m = models.Sequential([layers.Input((3,)), layers.Dense(2, activation="softmax")])
    m.compile("adam", "categorical_crossentropy", metrics=[metrics.F1Score()])
    kf.save_keras(m, path)
    with zipfile.ZipFile(path) as z:
        assert json.loads(z.read("config.json"))["compile_config"]["metrics"] == ["f1_score"]
