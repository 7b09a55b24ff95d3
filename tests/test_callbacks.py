"""Callbacks and progress output."""
import csv
import math

import numpy as np
import pytest

from fastnn import callbacks, models, optimizers
from conftest import blobs, tiny_model


def test_early_stopping_restores_best_weights():
    x, y, _ = blobs(n=40)
    m = tiny_model(seed=0, optimizer=optimizers.SGD(learning_rate=0.05))
    seen = []
    snap = callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append((logs["loss"], m.get_weights())))
    # monitor the training loss in 'max' mode: epoch 0 is "best", then no improvement
    es = callbacks.EarlyStopping(monitor="loss", mode="max", patience=2, restore_best_weights=True)
    h = m.fit(x, y, epochs=10, batch_size=8, verbose=0, callbacks=[snap, es])
    assert len(h.epoch) == 3 and es.stopped_epoch == 2
    for a, b in zip(m.get_weights(), seen[0][1]):
        np.testing.assert_array_equal(a, b)


def test_terminate_on_nan_stops_a_diverging_run(capsys):
    x, y, _ = blobs(n=40)
    m = tiny_model(seed=0, optimizer=optimizers.SGD(learning_rate=1e4), loss="mse", act="linear")
    h = m.fit(x, y * 1e3, epochs=50, batch_size=4, verbose=0, callbacks=[callbacks.TerminateOnNaN()])
    assert "Invalid loss, terminating training" in capsys.readouterr().out
    assert len(h.epoch) < 50 and not math.isfinite(h.history["loss"][-1])


def test_model_checkpoint_and_csv_logger(tmp_path):
    x, y, _ = blobs(n=40)
    m = tiny_model(seed=0, metrics=["accuracy"])
    ck = callbacks.ModelCheckpoint(str(tmp_path / "ck-{epoch:02d}.fastnn"))
    log = callbacks.CSVLogger(tmp_path / "log.csv")
    h = m.fit(x, y, epochs=3, batch_size=8, verbose=0, callbacks=[ck, log])
    assert sorted(p.name for p in tmp_path.glob("ck-*")) == ["ck-01.fastnn", "ck-02.fastnn", "ck-03.fastnn"]
    last = models.load_model(tmp_path / "ck-03.fastnn")
    np.testing.assert_array_equal(last.get_weights()[0], m.get_weights()[0])
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert float(rows[2]["loss"]) == pytest.approx(h.history["loss"][2])


def test_learning_rate_scheduler_and_schedules():
    x, y, _ = blobs(n=16)
    m = tiny_model(seed=0, optimizer=optimizers.SGD(learning_rate=0.1))
    h = m.fit(x, y, epochs=3, batch_size=8, verbose=0,
              callbacks=[callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)])
    assert h.history["learning_rate"] == pytest.approx([0.05, 0.025, 0.0125])
    s = optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5, staircase=True)
    assert [s(0), s(9), s(10), s(25)] == pytest.approx([0.1, 0.1, 0.05, 0.025])
    s2 = optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    assert s2(5) == pytest.approx(0.1 * 0.5 ** 0.5)
    inv = optimizers.schedules.InverseTimeDecay(0.1, decay_steps=10, decay_rate=1.0)
    assert [inv(0), inv(10), inv(30)] == pytest.approx([0.1, 0.05, 0.025])
    p = optimizers.schedules.PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1])
    assert [p(0), p(10), p(11), p(21)] == [1.0, 1.0, 0.5, 0.1]
    opt = optimizers.SGD(learning_rate=s)
    m2 = tiny_model(seed=0, optimizer=opt)
    m2.fit(x, y, epochs=6, batch_size=8, verbose=0)  # 12 steps
    assert opt.learning_rate == pytest.approx(0.05)


def test_progress_output_verbose_levels(capsys):
    x, y, _ = blobs(n=40)
    m = tiny_model(seed=0, metrics=["accuracy"])
    m.fit(x, y, epochs=2, batch_size=8, verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    assert "5/5 ━━━━━━━━━━━━━━━━━━━━" in out and "/step - accuracy: " in out and " - loss: " in out
    m.fit(x, y, epochs=1, batch_size=8, verbose=2)
    out = capsys.readouterr().out
    assert "5/5 - " in out and "━" not in out
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert capsys.readouterr().out == ""


def test_keyboard_interrupt_stops_between_steps_and_training_can_continue():
    x, y, _ = blobs(n=40)
    m = tiny_model(seed=0)
    weights_at = {}

    def on_batch_end(batch, logs):
        weights_at[batch] = m.get_weights()
        if m.optimizer.iterations == 7:  # second epoch, third batch
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):  # it propagates, as in Keras
        m.fit(x, y, epochs=5, batch_size=8, verbose=0,
              callbacks=[callbacks.LambdaCallback(on_batch_end=on_batch_end)])
    assert m.history.epoch == [0]  # the finished epoch only
    for a, b in zip(m.get_weights(), weights_at[1]):
        np.testing.assert_array_equal(a, b)
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert m.optimizer.iterations == 12


def test_predict_and_evaluate_print_one_progress_line(capsys):
    x, y, _ = blobs(n=40)
    m = tiny_model(seed=0)
    m.predict(x, batch_size=8)
    m.evaluate(x, y, batch_size=8)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(line.startswith("5/5 ━") for line in out)
    assert " - loss: " in out[1]
    np.testing.assert_allclose(m(x), m.predict(x, verbose=0))
