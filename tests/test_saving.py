"""save/load_model: round trip with optimizer state, atomic writes, hostile files."""
import base64
import io
import json
import os
import zipfile
import zlib

import numpy as np
import pytest

from fastnn import layers, models, optimizers
from conftest import blobs, tiny_model


def test_round_trip_resumes_training_exactly(tmp_path):
    x, y, _ = blobs(n=40)
    m = tiny_model(seed=0, optimizer=optimizers.RMSprop(momentum=0.5, centered=True), metrics=["accuracy"])
    m.fit(x, y, epochs=2, batch_size=8, verbose=0)
    path = tmp_path / "model.fastnn"
    m.save(path)
    m2 = models.load_model(path)
    for a, b in zip(m.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert m2.optimizer.iterations == m.optimizer.iterations == 10
    np.testing.assert_array_equal(m.predict(x), m2.predict(x))
    # continuing: both take the identical next step (state restored, not restarted)
    m.train_on_batch(x[:8], y[:8])
    m2.train_on_batch(x[:8], y[:8])
    for a, b in zip(m.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert m2.evaluate(x, y, verbose=0) == m.evaluate(x, y, verbose=0)


def test_save_weights_and_load_weights(tmp_path):
    m, m2 = tiny_model(seed=0), tiny_model(seed=1)
    m.save_weights(tmp_path / "w.fastnn")
    m2.load_weights(tmp_path / "w.fastnn")
    for a, b in zip(m.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_crash_mid_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m.fastnn"
    m = tiny_model(seed=0)
    m.save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np.lib.format, "write_array", boom)
    with pytest.raises(OSError, match="disk full"):
        tiny_model(seed=5).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.fastnn"]  # no temporary left behind


def _rewrite(src, dst, edit):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = edit(item.filename, zin.read(item.filename))
            if data is not None:
                zout.writestr(item.filename, data)


def test_truncated_corrupted_and_wrong_files_give_clear_errors(tmp_path):
    path = tmp_path / "m.fastnn"
    tiny_model(seed=0).save(path)
    data = path.read_bytes()
    (tmp_path / "trunc").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable fastnn model file"):
        models.load_model(tmp_path / "trunc")
    (tmp_path / "text").write_text("hello")
    with pytest.raises(ValueError, match="not a readable fastnn model file"):
        models.load_model(tmp_path / "text")
    _rewrite(path, tmp_path / "v9", lambda n, d: json.dumps({**json.loads(d), "version": 9}).encode()
             if n == "fastnn.json" else d)
    with pytest.raises(ValueError, match="format version 9"):
        models.load_model(tmp_path / "v9")
    _rewrite(path, tmp_path / "missing", lambda n, d: None if n == "weights/1.npy" else d)
    with pytest.raises(ValueError, match="weights/1.npy"):
        models.load_model(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        models.load_model(tmp_path / "nope")


def test_a_pickle_inside_is_refused_and_never_run(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    path = tmp_path / "m.fastnn"
    tiny_model(seed=0).save(path)
    buf = io.BytesIO()
    np.save(buf, np.array([Evil()], dtype=object), allow_pickle=True)
    _rewrite(path, tmp_path / "evil", lambda n, d: buf.getvalue() if n == "weights/0.npy" else d)
    with pytest.raises(ValueError, match="Python objects"):
        models.load_model(tmp_path / "evil")
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ValueError):
        models.load_model(tmp_path / "raw.pkl")
    assert not (tmp_path / "pwned").exists()


def test_unknown_layer_class_is_refused(tmp_path):
    path = tmp_path / "m.fastnn"
    tiny_model(seed=0).save(path)

    def edit(n, d):
        if n != "fastnn.json":
            return d
        meta = json.loads(d)
        meta["model"]["layers"][0]["class"] = "os.system"
        return json.dumps(meta).encode()
    _rewrite(path, tmp_path / "bad", edit)
    with pytest.raises(ValueError, match="Unknown layer class 'os.system'"):
        models.load_model(tmp_path / "bad")


def test_learning_rate_schedule_survives_save_and_load(tmp_path):
    x, y, _ = blobs(n=16)
    sched = optimizers.schedules.ExponentialDecay(0.1, decay_steps=3, decay_rate=0.5, staircase=True)
    m = tiny_model(seed=0, optimizer=optimizers.SGD(learning_rate=sched, momentum=0.9))
    m.fit(x, y, epochs=2, batch_size=4, verbose=0)
    m.save(tmp_path / "s.fastnn")
    m2 = models.load_model(tmp_path / "s.fastnn")
    assert m2.optimizer.learning_rate == m.optimizer.learning_rate == pytest.approx(0.1 * 0.5 ** 2)
    m.train_on_batch(x[:4], y[:4])
    m2.train_on_batch(x[:4], y[:4])
    for a, b in zip(m.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)


_S = optimizers.schedules


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("make", [
    lambda: optimizers.SGD(momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda: optimizers.SGD(_S.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.9, staircase=True)),
    lambda: optimizers.Adagrad(_S.InverseTimeDecay(0.1, decay_steps=3, decay_rate=0.5)),
    lambda: optimizers.RMSprop(momentum=0.2, centered=True),
    lambda: optimizers.Adam(_S.PiecewiseConstantDecay([2, 5], [0.01, 0.005, 0.001]), amsgrad=True),
    lambda: optimizers.AdamW(),
    lambda: optimizers.Nadam(),
], ids=["sgd", "sgd-exp", "adagrad-inv", "rmsprop", "adam-piecewise", "adamw", "nadam"])
def test_every_optimizer_schedule_layer_and_dtype_round_trip(tmp_path, make, dtype):
    """What fastnn writes loads back identically: config, weights, optimizer state, and the
    next training step (the format is unchanged, so files of earlier versions load too)."""
    x, y, _ = blobs(n=24)
    m = models.Sequential([layers.Input((5,)), layers.Dense(6, activation="relu", dtype=dtype),
                           layers.Dropout(0.0, dtype=dtype), layers.Activation("tanh", dtype=dtype),
                           layers.Flatten(dtype=dtype), layers.Dense(3, activation="softmax", dtype=dtype)],
                          seed=0)
    m.compile(optimizer=make(), loss="categorical_crossentropy", metrics=["accuracy", "mae"])
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)
    m.save(tmp_path / "m.fastnn")
    m2 = models.load_model(tmp_path / "m.fastnn")
    assert m2.get_config() == m.get_config() and m2.get_compile_config() == m.get_compile_config()
    assert optimizers.serialize(m2.optimizer) == optimizers.serialize(m.optimizer)
    for a, b in zip(m.optimizer.variables + m.get_weights(), m2.optimizer.variables + m2.get_weights()):
        assert a.dtype == b.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a, b)
    m.train_on_batch(x[:8], y[:8])
    m2.train_on_batch(x[:8], y[:8])
    for a, b in zip(m.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)


_OLD_FILE = (  # written by fastnn before saving.py checked files (commit 4c5b7cd), zlib + base64
    "eNqtVLtv00AYT0nDEKhYKpYuxkt4hNKkIEFUWpACDFVRUEGooGJd7XN6cL4Ld+dAKIGKqSMCiceGyoz4A6gKIw/xB8CI"
    "BFMlZlRQ+e4c5+GqC8XW2Xe/7/37Prsyme4fTOnrm3tv1n+391WQTqX02gWYj6RibPi65Gwha9k+FwFSdgl2RnA44B6m"
    "dh5EdSwk4QxkBX2MBCULrCyboQBrI049rWvZEmMPgBFzIKwWKkfOo5pWugqQNQqPWSOkqAGOY1x7A9ClSGrMLmMmsXGp"
    "Uc58Um3FtLrCei0N2KmGCWL7lCM1WmwLQkaU9liMAeQqUkcqqsiWpBpw0vETSuzMEaQtlAhxDN/AgmHqEHBGECV3sNDG"
    "VcoFVw6E0PS1fWj7pCq8uLSNQjPbesxmraZm1OVBjVAcc0q5ocDU2q40wIg58maIBPYcLAQXUTjbFzxwKK9GVfqISgx4"
    "01AcYCWIaziOY/GaIkErKROtzfj0uXLUwl62bYqRYIRVHYEUbvfAlu489kKTtX3mdo0zzHS9ZeyixpZ9a5HiJH2ODB9r"
    "N1I7cKTCtZ6uRfBmdakQES6SuKv4mOKIoFuYVOeVYxyAEgspzfdQGxeuRzuAKsKgK4TNMOQieH0TuQRgM0Y6z0KLXuZE"
    "4eLcAehmvJBtVnq+Sjn2vfwM9noNwGpZHxkZZrXG4/OXpiozfal6aiHnYemKXMnKjflHc3krBwOnBIwEFx7W+FmdG+Dm"
    "Y4Pz/tG8VTyQt5rWP1/Z959+j79+dH/19LUfJy8OLU4crD54++fCqYneEjI/x9aWYL+UKKGw7RKK+e0VACU8fNoYv/xh"
    "Y7U35aF9c4dewF6vPbDaLfoPvB/fftLrA5/fTC9/PbE+MLUyvXyldPfj85XVXy9LMV6Z7NsxmN761x5fi32p3h990jA5"
    "fR3DJ+nELCZNk13vmM70J2YgaZpkv2O6O7OpF5XJzE4t7Id7Dd5fMvr0F52mxM8=")


def test_a_file_written_by_the_previous_fastnn_loads_exactly(tmp_path):
    """The file: Dense(2, sigmoid) on 3 inputs, mse, SGD(momentum=0.5) with
    ExponentialDecay(0.5, decay_steps=2, decay_rate=0.5), after one step from the weights below
    on x = [1, 2, 3], y = [0, 1].  The expected state is that step, computed here."""
    path = tmp_path / "old.fastnn"
    path.write_bytes(zlib.decompress(base64.b64decode(_OLD_FILE)))
    w = np.array([[0.5, -0.25], [0.125, 1.0], [-1.0, 0.75]])
    b = np.array([0.25, -0.5])
    x, t = np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0])
    p = 1 / (1 + np.exp(-(x @ w + b)))
    dz = 2 * (p - t) / 2 * p * (1 - p)          # mean over the 2 outputs, through the sigmoid
    velocity = -0.5 * np.concatenate([np.outer(x, dz).ravel(), dz])  # m := 0.5 * 0 - lr * g
    m = models.load_model(path)
    np.testing.assert_allclose(m.get_weights()[0], w + velocity[:6].reshape(3, 2), rtol=1e-6)
    np.testing.assert_allclose(m.get_weights()[1], b + velocity[6:], rtol=1e-6)
    np.testing.assert_allclose(m.optimizer.variables[0], velocity, rtol=1e-5)
    assert m.optimizer.iterations == 1 and m.optimizer.momentum == 0.5
    assert m.optimizer.learning_rate == pytest.approx(0.5 * 0.5 ** 0.5)
    assert (m.name, m.layers[0].name, m.loss.name) == ("old", "d", "mean_squared_error")
