"""save/load_model: round trip with optimizer state, atomic writes, hostile files."""
import io
import json
import os
import zipfile

import numpy as np
import pytest

from fastnn import models, optimizers
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
