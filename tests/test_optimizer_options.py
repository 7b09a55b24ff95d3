"""The options every Keras 3 optimizer takes (clipnorm, clipvalue, global_clipnorm, use_ema,
ema_momentum, ema_overwrite_frequency, loss_scale_factor, gradient_accumulation_steps,
exclude_from_weight_decay, get_config/from_config), checked against hand computations from
the model's own unclipped gradient (`trainer.gradients`) with plain SGD, whose step is
elementwise: w := w - lr * g."""
import numpy as np
import pytest

from fastnn import layers, models, optimizers
from conftest import blobs


def _model(seed=0):
    return models.Sequential([layers.Dense(6, activation="tanh", input_shape=(4,)),
                              layers.Dense(3, activation="softmax")], seed=seed)


def _data(n=16):
    x, y, _ = blobs(n, 4, 3, seed=2)
    return x, y


def _grads(m, x, y):
    """The model's gradient (per weight, copies) on the batch (x, y) at its current weights."""
    t = m.loss.prepare_targets(y, 3, np.float32)
    m.trainer.gradients(np.ascontiguousarray(x), t)
    return [g.copy() for l in m.layers for g in l.grads]


def _one_step(opt, x, y, **fit):
    m = _model()
    m.compile(opt, "categorical_crossentropy")
    w0 = m.get_weights()
    g = _grads(m, x, y)
    m.fit(x, y, epochs=1, batch_size=len(x), shuffle=False, verbose=0, **fit)
    return m, w0, g


def test_clipnorm_clips_each_variable_by_its_own_norm():
    x, y = _data()
    m, w0, g = _one_step(optimizers.SGD(0.5, clipnorm=0.05), x, y)
    for w, w_before, gi in zip(m.get_weights(), w0, g):
        norm = np.sqrt(np.sum(gi.astype(np.float64) ** 2))
        clipped = gi * 0.05 / max(norm, 0.05)
        np.testing.assert_allclose(w, w_before - 0.5 * clipped, rtol=1e-5, atol=1e-7)
    assert any(np.sqrt(np.sum(gi ** 2)) > 0.05 for gi in g)  # the clip did something


def test_global_clipnorm_scales_all_gradients_by_one_factor():
    x, y = _data()
    m, w0, g = _one_step(optimizers.SGD(0.5, global_clipnorm=0.05), x, y)
    norm = np.sqrt(sum(np.sum(gi.astype(np.float64) ** 2) for gi in g))
    assert norm > 0.05
    for w, w_before, gi in zip(m.get_weights(), w0, g):
        np.testing.assert_allclose(w, w_before - 0.5 * gi * (0.05 / norm), rtol=1e-5, atol=1e-7)


def test_clipvalue_clips_each_element():
    x, y = _data()
    m, w0, g = _one_step(optimizers.SGD(0.5, clipvalue=0.01), x, y)
    for w, w_before, gi in zip(m.get_weights(), w0, g):
        np.testing.assert_allclose(w, w_before - 0.5 * np.clip(gi, -0.01, 0.01),
                                   rtol=1e-5, atol=1e-7)


def test_gradient_accumulation_updates_every_k_steps_with_the_mean():
    x, y = _data(16)
    m = _model()
    m.compile(optimizers.SGD(0.5, gradient_accumulation_steps=2), "categorical_crossentropy")
    w0 = m.get_weights()
    g1, g2 = _grads(m, x[:8], y[:8]), _grads(m, x[8:], y[8:])  # both at w0
    m.train_on_batch(x[:8], y[:8])
    for a, b in zip(m.get_weights(), w0):
        np.testing.assert_array_equal(a, b)  # the first call only accumulates
    assert m.optimizer.iterations == 0 and m.optimizer.calls == 1
    m.train_on_batch(x[8:], y[8:])
    for w, w_before, a, b in zip(m.get_weights(), w0, g1, g2):
        np.testing.assert_allclose(w, w_before - 0.5 * (a + b) / 2, rtol=1e-5, atol=1e-7)
    assert m.optimizer.iterations == 1 and m.optimizer.calls == 2
    assert all(not acc.any() for acc in m.optimizer.gradient_accumulators)


def test_ema_follows_keras_and_fit_ends_on_the_average():
    x, y = _data(24)
    m = _model()
    m.compile(optimizers.SGD(0.5, use_ema=True, ema_momentum=0.9), "categorical_crossentropy")
    after = []
    for s in range(3):
        m.train_on_batch(x[8 * s:8 * s + 8], y[8 * s:8 * s + 8])
        after.append(np.concatenate([w.reshape(-1) for w in m.get_weights()]))
    # Keras: the first update sets the average to the weights, then avg := m avg + (1 - m) w
    avg = after[0]
    for w in after[1:]:
        avg = 0.9 * avg + 0.1 * w
    np.testing.assert_allclose(m.optimizer.moving_averages[0], avg, rtol=1e-6)
    assert not np.allclose(after[-1], avg)
    m2 = _model()
    m2.compile(optimizers.SGD(0.5, use_ema=True, ema_momentum=0.9), "categorical_crossentropy")
    m2.fit(x, y, epochs=1, batch_size=8, shuffle=False, verbose=0)
    final = np.concatenate([w.reshape(-1) for w in m2.get_weights()])
    np.testing.assert_allclose(final, avg, rtol=1e-6)  # fit's end: the weights := the average


def test_ema_overwrite_frequency():
    x, y = _data(16)
    m = _model()
    m.compile(optimizers.SGD(0.5, use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=2),
              "categorical_crossentropy")
    m.train_on_batch(x[:8], y[:8])
    w1 = np.concatenate([w.reshape(-1) for w in m.get_weights()])
    m.train_on_batch(x[8:], y[8:])
    # step 2 ((1 + 1) % 2 == 0): the weights are overwritten with the average 0.5 w1 + 0.5 w2
    np.testing.assert_allclose(np.concatenate([w.reshape(-1) for w in m.get_weights()]),
                               m.optimizer.moving_averages[0], rtol=0, atol=0)
    assert not np.allclose(m.optimizer.moving_averages[0], w1)


def test_loss_scale_factor_leaves_the_step_and_the_logged_loss_unchanged():
    x, y = _data()
    out = []
    for factor in (None, 1024.0):  # a power of two: scaling and unscaling are exact
        m = _model()
        m.compile(optimizers.SGD(0.5, loss_scale_factor=factor), "categorical_crossentropy")
        h = m.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
        out.append((m.get_weights(), h.history["loss"]))
    for a, b in zip(out[0][0], out[1][0]):
        np.testing.assert_array_equal(a, b)
    assert out[0][1] == out[1][1]
    assert optimizers.SGD(loss_scale_factor=4.0).scale_loss(2.5) == 10.0


def test_exclude_from_weight_decay_by_name():
    x, y = _data()
    opt = optimizers.SGD(0.5, weight_decay=0.1)
    opt.exclude_from_weight_decay(var_names=["bias"])
    m, w0, g = _one_step(opt, x, y)
    for i, (w, w_before, gi) in enumerate(zip(m.get_weights(), w0, g)):
        decay = 0.0 if i % 2 else 0.5 * 0.1 * w_before  # odd: the biases
        np.testing.assert_allclose(w, w_before - decay - 0.5 * gi, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="before the optimizer is built"):
        opt.exclude_from_weight_decay(var_names=["kernel"])


def test_options_leave_the_compiled_step_only_when_needed():
    x, y = _data()
    for opt, compiled in ((optimizers.SGD(0.1), True), (optimizers.Adam(clipnorm=1.0), False),
                          (optimizers.Adam(use_ema=True), False)):
        m = _model()
        m.compile(opt, "categorical_crossentropy")
        t = m.loss.prepare_targets(y, 3, np.float32)
        assert (m.trainer.compiled_step(m.optimizer, x, t, 8) is not None) is compiled


@pytest.mark.parametrize("kwargs,match", [
    ({"clipnorm": 1.0, "clipvalue": 1.0}, "Only one of"),
    ({"gradient_accumulation_steps": 1}, "gradient_accumulation_steps"),
    ({"use_ema": True, "ema_momentum": 1.5}, "ema_momentum"),
    ({"use_ema": True, "ema_overwrite_frequency": 0}, "ema_overwrite_frequency"),
    ({"clipnorm": -1.0}, "clipnorm"),
    ({"decay_rate": 0.1}, "not recognized"),
])
def test_bad_options_raise_value_error_as_keras(kwargs, match):
    with pytest.raises(ValueError, match=match):
        optimizers.Adam(**kwargs)


@pytest.mark.parametrize("cls", [optimizers.SGD, optimizers.Adagrad, optimizers.RMSprop,
                                 optimizers.Adam, optimizers.AdamW, optimizers.Nadam,
                                 optimizers.Adamax, optimizers.Adadelta, optimizers.Lion])
def test_get_config_from_config_round_trip(cls):
    sched = optimizers.schedules.ExponentialDecay(0.1, 100, 0.5, name="decay")
    opt = cls(learning_rate=sched, clipnorm=2.0, use_ema=True, ema_momentum=0.5,
              gradient_accumulation_steps=3, name="mine")
    cfg = opt.get_config()
    assert {"name", "learning_rate", "weight_decay", "clipnorm", "global_clipnorm", "clipvalue",
            "use_ema", "ema_momentum", "ema_overwrite_frequency", "loss_scale_factor",
            "gradient_accumulation_steps"} <= set(cfg)
    back = cls.from_config(cfg)
    assert type(back) is cls and back.get_config() == cfg
    assert back.learning_rate == sched(0) and back.name == "mine"


def test_schedules_take_a_name_and_round_trip():
    s = optimizers.schedules
    for sched, default in ((s.ExponentialDecay(0.1, 10, 0.9), "ExponentialDecay"),
                           (s.InverseTimeDecay(0.1, 10, 0.9), "InverseTimeDecay"),
                           (s.PiecewiseConstantDecay([5], [0.1, 0.01]), "PiecewiseConstant")):
        assert sched.get_config()["name"] == default
        back = type(sched).from_config(sched.get_config())
        assert [back(k) for k in (0, 7, 20)] == [sched(k) for k in (0, 7, 20)]


@pytest.mark.parametrize("ext", [".keras", ".fastnn"])
def test_ema_and_accumulation_state_survive_saving(tmp_path, ext):
    pytest.importorskip("h5py")
    x, y = _data(24)
    m = _model()
    m.compile(optimizers.Adam(use_ema=True, gradient_accumulation_steps=2),
              "categorical_crossentropy")
    for s in range(3):
        m.train_on_batch(x[8 * s:8 * s + 8], y[8 * s:8 * s + 8])
    path = tmp_path / f"m{ext}"
    m.save(path)
    back = models.load_model(path)
    assert back.optimizer.calls == 3 and back.optimizer.iterations == 1
    for a, b in zip(m.optimizer.moving_averages + m.optimizer.gradient_accumulators
                    + m.optimizer.variables,
                    back.optimizer.moving_averages + back.optimizer.gradient_accumulators
                    + back.optimizer.variables):
        np.testing.assert_array_equal(a, b)
    assert any(a.any() for a in back.optimizer.gradient_accumulators)  # one pending call


@pytest.mark.parametrize("ext", [".keras", ".fastnn"])
@pytest.mark.parametrize("make", [
    lambda: optimizers.Adamax(0.01, use_ema=True, gradient_accumulation_steps=2),
    lambda: optimizers.Adadelta(1.0, use_ema=True, gradient_accumulation_steps=2),
    lambda: optimizers.Lion(0.001, use_ema=True, gradient_accumulation_steps=2)],
    ids=["adamax", "adadelta", "lion"])
def test_new_optimizers_state_survives_saving_with_the_options(tmp_path, ext, make):
    """Adamax, Adadelta and Lion with the moving average and gradient accumulation: their
    rule's state, the averages and the pending gradient come back, and the next update step
    is the same bit for bit."""
    pytest.importorskip("h5py")
    x, y = _data(40)
    m = _model()
    m.compile(make(), "categorical_crossentropy")
    for s in range(3):
        m.train_on_batch(x[8 * s:8 * s + 8], y[8 * s:8 * s + 8])
    m.save(tmp_path / f"m{ext}")
    back = models.load_model(tmp_path / f"m{ext}")
    assert type(back.optimizer) is type(m.optimizer) and back.optimizer.calls == 3
    assert back.optimizer.get_config() == m.optimizer.get_config()
    assert all(v.any() for v in back.optimizer.variables)
    for a, b in zip(m.optimizer.moving_averages + m.optimizer.gradient_accumulators
                    + m.optimizer.variables,
                    back.optimizer.moving_averages + back.optimizer.gradient_accumulators
                    + back.optimizer.variables):
        np.testing.assert_array_equal(a, b)
    for model in (m, back):
        model.train_on_batch(x[24:32], y[24:32])  # the second update step
    for a, b in zip(m.get_weights() + m.optimizer.variables,
                    back.get_weights() + back.optimizer.variables):
        np.testing.assert_array_equal(a, b)
