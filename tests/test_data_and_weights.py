"""fit / evaluate / predict / train_on_batch with Keras' data arguments: sample_weight,
class_weight, weighted_metrics, loss_weights, validation data with weights, steps_per_epoch,
validation_freq / validation_steps, and batches from a Python generator or a
`fastnn.utils.PyDataset`.  Expected values come from hand computations with the model's own
per-sample gradients, from the loss functions' per-sample values, or from the same training
on arrays (the same kernels on the same numbers: bit-identical)."""
import warnings

import numpy as np
import pytest

from fastnn import callbacks, layers, losses, models, optimizers, utils
from conftest import blobs


def _model(seed=0, **compile_kw):
    m = models.Sequential([layers.Dense(6, activation="tanh", input_shape=(4,)),
                           layers.Dense(3, activation="softmax")], seed=seed)
    kw = {"optimizer": optimizers.SGD(0.5), "loss": "categorical_crossentropy"}
    kw.update(compile_kw)
    m.compile(**kw)
    return m


def _data(n=24, seed=2):
    x, y, labels = blobs(n, 4, 3, seed=seed)
    return x, y, labels


def _grad(m, x, y):
    t = m.loss.prepare_targets(y, 3, np.float32)
    m.trainer.gradients(np.ascontiguousarray(x), t)
    return [g.copy() for l in m.layers for g in l.grads]


# ---- sample and class weights --------------------------------------------------------------

@pytest.mark.parametrize("jit", ["auto", False])
def test_sample_weight_scales_each_samples_gradient(jit):
    # Keras: the batch loss is sum_i w_i l_i / n, so its gradient is sum_i w_i g_i / n with
    # g_i the gradient of sample i alone; one SGD step moves the weights by -lr times that.
    x, y, _ = _data(8)
    w = np.array([0.0, 1, 2, 0.5, 3, 1, 0.25, 1], np.float32)
    m = _model(jit_compile=jit)
    w0 = m.get_weights()
    per_sample = [_grad(m, x[i:i + 1], y[i:i + 1]) for i in range(8)]
    m.fit(x, y, sample_weight=w, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for j, (after, before) in enumerate(zip(m.get_weights(), w0)):
        g = sum(w[i] * per_sample[i][j].astype(np.float64) for i in range(8)) / 8
        np.testing.assert_allclose(after, before - 0.5 * g, rtol=2e-5, atol=1e-6)


def test_compiled_and_layer_by_layer_steps_agree_with_weights():
    x, y, _ = _data(40)
    w = np.random.default_rng(0).random(40).astype(np.float32)
    out = []
    for jit in ("auto", False):
        m = _model(optimizer="adam", jit_compile=jit)
        h = m.fit(x, y, sample_weight=w, batch_size=16, epochs=2, verbose=0)
        out.append((m.get_weights(), h.history["loss"]))
    for a, b in zip(out[0][0], out[1][0]):
        np.testing.assert_array_equal(a, b)
    assert out[0][1] == out[1][1]


def test_class_weight_is_the_sample_weight_of_each_label():
    x, y, labels = _data(30)
    cw = {0: 1.0, 1: 3.0, 2: 0.5}
    a, b = _model(), _model()
    a.fit(x, y, class_weight=cw, batch_size=10, epochs=2, shuffle=False, verbose=0)
    b.fit(x, y, sample_weight=np.array([cw[k] for k in labels]), batch_size=10, epochs=2,
          shuffle=False, verbose=0)
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(p, q)
    # sparse labels: the same classes
    c = _model(loss="sparse_categorical_crossentropy")
    c.fit(x, labels, class_weight=cw, batch_size=10, epochs=2, shuffle=False, verbose=0)
    for p, q in zip(a.get_weights(), c.get_weights()):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-7)


def test_evaluate_with_sample_weight_is_the_weighted_mean_over_the_batch_size():
    x, y, _ = _data(20)
    w = np.linspace(0, 2, 20).astype(np.float32)
    m = _model(weighted_metrics=["accuracy"], metrics=["accuracy"])
    p = m.predict(x, verbose=0)
    per_sample = losses.categorical_crossentropy(y, p)
    logs = m.evaluate(x, y, sample_weight=w, batch_size=7, verbose=0, return_dict=True)
    np.testing.assert_allclose(logs["loss"], np.sum(w * per_sample) / 20, rtol=1e-5)
    hit = (p.argmax(1) == y.argmax(1)).astype(np.float64)
    # metrics ignore sample weights, weighted_metrics use them (Keras' rule and names)
    assert list(logs) == ["loss", "accuracy", "weighted_accuracy"]
    np.testing.assert_allclose(logs["accuracy"], hit.mean(), rtol=1e-6)
    np.testing.assert_allclose(logs["weighted_accuracy"], np.sum(w * hit) / np.sum(w), rtol=1e-6)


def test_validation_data_may_carry_sample_weights():
    x, y, _ = _data(30)
    xv, yv, _ = _data(12, seed=5)
    wv = np.arange(12, dtype=np.float32) / 6
    m = _model()
    h = m.fit(x, y, validation_data=(xv, yv, wv), epochs=1, batch_size=10, verbose=0)
    expect = m.evaluate(xv, yv, sample_weight=wv, verbose=0)
    np.testing.assert_allclose(h.history["val_loss"][0], expect, rtol=1e-6)


def test_train_on_batch_takes_weights():
    x, y, labels = _data(8)
    cw = {0: 2.0, 1: 1.0, 2: 0.0}
    a, b = _model(), _model()
    la = a.train_on_batch(x, y, class_weight=cw)
    lb = b.train_on_batch(x, y, sample_weight=np.array([cw[k] for k in labels], np.float32))
    assert la == lb
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(p, q)


def test_loss_weights_scale_the_loss():
    x, y, _ = _data(16)
    a, b = _model(), _model(loss_weights=2.0)
    la = a.evaluate(x, y, verbose=0)
    lb = b.evaluate(x, y, verbose=0)
    np.testing.assert_allclose(lb, 2 * la, rtol=1e-6)


@pytest.mark.parametrize("kw,match", [
    ({"sample_weight": np.ones(5), "class_weight": {0: 1.0}}, "at the same time"),
    ({"sample_weight": np.ones(5)}, "sample_weight"),
    ({"sample_weight": np.full(24, np.nan)}, "finite"),
    ({"class_weight": [1.0, 2.0]}, "class_weight"),
])
def test_bad_weights_raise(kw, match):
    x, y, _ = _data(24)
    with pytest.raises(ValueError, match=match):
        _model().fit(x, y, verbose=0, **kw)


# ---- steps and validation frequency ----------------------------------------------------------

def _steps_per_epoch(m, *args, **kw):
    counts = []
    cb = callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: counts.append(0),
                                  on_train_batch_end=lambda b, logs: counts.__setitem__(
                                      -1, counts[-1] + 1))
    h = m.fit(*args, callbacks=[cb], verbose=0, **kw)
    return counts, h


def test_steps_per_epoch_continues_the_pass_and_warns_when_it_runs_out():
    x, y, _ = _data(40)
    m = _model()
    with pytest.warns(UserWarning, match="ran out of data"):
        counts, _ = _steps_per_epoch(m, x, y, batch_size=10, epochs=3, steps_per_epoch=3)
    assert counts == [3, 1, 3]  # Keras: 4 batches a pass; the 2nd epoch ends the pass


def test_validation_freq_and_steps():
    x, y, _ = _data(20)
    for freq, expect in ((2, [False, True, False, True]), ([1, 3], [True, False, True, False])):
        validated = []
        cb = callbacks.LambdaCallback(
            on_epoch_end=lambda e, logs: validated.append("val_loss" in logs))
        _model().fit(x, y, validation_data=(x, y), validation_freq=freq, epochs=4,
                     batch_size=10, verbose=0, callbacks=[cb])
        assert validated == expect
    m = _model()
    m.fit(x, y, epochs=1, verbose=0)
    v = m.evaluate(x[:8], y[:8], batch_size=4, verbose=0)
    assert m.evaluate(x, y, batch_size=4, steps=2, verbose=0) == pytest.approx(v, rel=1e-6)


# ---- generators and PyDataset ----------------------------------------------------------------

def _batches(x, y, bs, w=None):
    for s in range(0, len(x), bs):
        yield (x[s:s + bs], y[s:s + bs]) if w is None else (x[s:s + bs], y[s:s + bs], w[s:s + bs])


class _Dataset(utils.PyDataset):
    def __init__(self, x, y, bs, **kw):
        super().__init__(**kw)
        self.x, self.y, self.bs, self.ends = x, y, bs, 0

    def __len__(self):
        return -(-len(self.x) // self.bs)

    def __getitem__(self, i):
        return self.x[i * self.bs:(i + 1) * self.bs], self.y[i * self.bs:(i + 1) * self.bs]

    def on_epoch_end(self):
        self.ends += 1


@pytest.mark.parametrize("weighted", [False, True])
def test_a_generator_trains_as_the_same_arrays(weighted):
    x, y, _ = _data(40)
    w = np.linspace(0.5, 1.5, 40).astype(np.float32) if weighted else None
    a, b = _model(optimizer="adam"), _model(optimizer="adam")
    a.fit(x, y, sample_weight=w, batch_size=16, epochs=1, shuffle=False, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (Keras warns at the end of a generator's pass)
        b.fit(_batches(x, y, 16, w), epochs=1, verbose=0)
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(p, q)


def test_an_exhausted_generator_stops_training_with_keras_warning():
    x, y, _ = _data(40)
    with pytest.warns(UserWarning, match="ran out of data"):
        counts, h = _steps_per_epoch(_model(), _batches(x, y, 10), epochs=3)
    assert counts[0] == 4 and len(h.history["loss"]) == 1


def test_a_generator_builds_an_unbuilt_model():
    x, y, _ = _data(20)
    m = models.Sequential([layers.Dense(5, activation="relu"), layers.Dense(3, activation="softmax")])
    m.compile("adam", "categorical_crossentropy")
    m.fit(_batches(x, y, 10), steps_per_epoch=2, epochs=1, verbose=0)
    assert m.built and m.input_shape == (None, 4)


@pytest.mark.parametrize("workers", [1, 3])
def test_pydataset_trains_as_the_arrays_and_calls_its_epoch_hook(workers):
    x, y, _ = _data(40)
    a, b = _model(optimizer="adam"), _model(optimizer="adam")
    a.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    ds = _Dataset(x, y, 16, workers=workers)
    b.fit(ds, epochs=2, shuffle=False, verbose=0)
    for p, q in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(p, q)
    assert ds.ends == 2


def test_pydataset_shuffles_its_batches():
    x, y, _ = _data(40)
    seen = []

    class Recording(_Dataset):
        def __getitem__(self, i):
            seen.append(i)
            return super().__getitem__(i)
    m = _model()
    m.fit(Recording(x, y, 10), epochs=3, shuffle=True, verbose=0)
    epochs = [seen[k:k + 4] for k in range(0, 12, 4)]
    assert all(sorted(e) == [0, 1, 2, 3] for e in epochs)
    assert any(e != [0, 1, 2, 3] for e in epochs)


def test_evaluate_and_predict_take_streams():
    x, y, _ = _data(30)
    m = _model()
    np.testing.assert_array_equal(m.predict(_batches(x, y, 8), verbose=0),
                                  m.predict(x, batch_size=8, verbose=0))
    np.testing.assert_array_equal(m.predict((xb for xb, _ in _batches(x, y, 8)), verbose=0),
                                  m.predict(x, verbose=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = m.evaluate(_batches(x, y, 8), verbose=0)
    assert ev == pytest.approx(m.evaluate(x, y, batch_size=8, verbose=0), rel=1e-6)
    assert m.evaluate(_Dataset(x, y, 8), verbose=0) == pytest.approx(ev, rel=1e-6)
    h = m.fit(x, y, validation_data=_Dataset(x, y, 8), epochs=1, verbose=0)
    assert h.history["val_loss"][0] == pytest.approx(m.evaluate(x, y, verbose=0), rel=1e-6)


@pytest.mark.parametrize("kw,match", [
    ({"y": np.zeros(3)}, "`y` argument is not supported"),
    ({"sample_weight": np.ones(3)}, "`sample_weight` argument is not supported"),
    ({"class_weight": {0: 1.0}}, "class_weight"),
    ({"validation_split": 0.5}, "validation_split"),
])
def test_stream_arguments_refused_as_keras(kw, match):
    x, y, _ = _data(20)
    with pytest.raises(ValueError, match=match):
        _model().fit(_batches(x, y, 10), verbose=0, **kw)


def test_bad_batches_are_named():
    x, y, _ = _data(20)
    with pytest.raises(ValueError, match="tuple"):
        _model().fit(iter([(x,)]), verbose=0)
    with pytest.raises(ValueError, match="workers"):
        _Dataset(x, y, 4, workers=0)


# ---- recompiling inside fit, batch logs, compile settings in files ----------------------------

def test_recompiling_in_a_callback_applies_the_new_optimizer_loss_and_metrics():
    # Keras: compile() inside fit takes effect from the next step.  After the switch at the end
    # of epoch 1, epoch 2's steps are SGD(0.0) steps: the weights stay, and the logs carry the
    # new metric.
    x, y, _ = _data(32)
    m = _model(optimizer=optimizers.Adam(0.01))
    state = {}

    def switch(epoch, logs):
        if epoch == 0:
            m.compile(optimizers.SGD(0.0), "categorical_crossentropy", metrics=["mae"])
            state["w"] = m.get_weights()
    h = m.fit(x, y, epochs=2, batch_size=8, verbose=0,
              callbacks=[callbacks.LambdaCallback(on_epoch_end=switch)])
    for a, b in zip(m.get_weights(), state["w"]):
        np.testing.assert_array_equal(a, b)
    assert "mae" in h.history and len(h.history["mae"]) == 1  # epoch 2 only
    m2 = _model()
    m2.compile(optimizers.SGD(0.1), "categorical_crossentropy")

    def to_sparse(epoch, logs):
        m2.compile(optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="same targets"):
        m2.fit(x, y, epochs=2, verbose=0, callbacks=[callbacks.LambdaCallback(
            on_epoch_end=to_sparse)])


def test_batch_logs_are_the_epochs_running_means_as_keras():
    x, y, _ = _data(24)
    m = _model(metrics=["accuracy"])
    seen = []
    m.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0, callbacks=[
        callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(logs["loss"]))])
    w0 = _model(metrics=["accuracy"])
    per_batch = [w0.train_on_batch(x[s:s + 8], y[s:s + 8], return_dict=True)["loss"]
                 for s in (0, 8, 16)]
    np.testing.assert_allclose(seen, np.cumsum(per_batch) / np.arange(1, 4), rtol=1e-6)


def test_metric_objects_weighted_metrics_and_loss_weights_survive_fastnn_files(tmp_path):
    from fastnn import metrics
    x, y, _ = _data(24)
    m = _model(metrics=[metrics.Precision(thresholds=0.3, name="p30")],
               weighted_metrics=["accuracy"], loss_weights=0.5)
    m.fit(x, y, epochs=1, verbose=0)
    m.save(tmp_path / "m.fastnn")
    back = models.load_model(tmp_path / "m.fastnn")
    w = np.linspace(0, 1, 24)
    want = m.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)
    assert list(want) == ["loss", "p30", "accuracy"]
    assert back.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True) == want
