"""Callbacks against Keras 3.15's behaviour: hook order, ReduceLROnPlateau, EarlyStopping,
ModelCheckpoint, BackupAndRestore, TerminateOnNaN, LambdaCallback, LearningRateScheduler,
ProgbarLogger, CallbackList, and the callbacks of evaluate/predict.

Monitored values are scripted (a callback writes them into the epoch's logs before the
monitoring callback reads them), and every expected value is worked out by hand in a
comment from Keras' rules (keras/src/callbacks/*.py); the same scripts run under real Keras
3.15 (jax) gave the same results."""
import os
import warnings

import numpy as np
import pytest

from fastnn import callbacks, layers, models, optimizers, saving
from conftest import blobs, tiny_model


class Inject(callbacks.Callback):
    """Writes seq[epoch] into the epoch's logs under key (placed before the callback that
    reads it: every callback of a fit gets the same logs dict)."""

    def __init__(self, seq, key="val_loss"):
        super().__init__()
        self.seq, self.key = seq, key

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.seq[epoch]


def _fit(m, epochs, cbs, n=16, **kw):
    x, y, _ = blobs(n=n)
    kw.setdefault("batch_size", 8)
    return m.fit(x, y, epochs=epochs, verbose=0, callbacks=cbs, **kw)


# ---- hooks -----------------------------------------------------------------------------------

HOOKS = ["on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
         "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_end",
         "on_test_batch_begin", "on_test_batch_end", "on_predict_begin", "on_predict_end",
         "on_predict_batch_begin", "on_predict_batch_end"]


def _recorder(rec):
    def make(hook):
        def f(*args, **kwargs):
            logs = kwargs["logs"] if "logs" in kwargs else args[-1]
            index = args[0] if args and isinstance(args[0], int) else None
            rec.append((hook, index, sorted(logs)))
        return f
    return callbacks.LambdaCallback(**{h: make(h) for h in HOOKS})


def test_hook_order_and_logs_match_keras():
    """The calls and logs keys Keras 3.15 makes for this script (fit of 4 samples, batch 2, 2
    epochs, validation on 2 samples; evaluate; predict), recorded from real Keras."""
    rec = []
    cb = _recorder(rec)
    m = models.Sequential([layers.Dense(2, input_shape=(3,))], seed=0)
    m.compile("sgd", "mse", metrics=["mae"])
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 2), "float32")
    m.fit(x, y, batch_size=2, epochs=2, validation_data=(x[:2], y[:2]), callbacks=[cb], verbose=0)
    epoch = lambda e: [  # noqa: E731
        ("on_epoch_begin", e, []),
        ("on_train_batch_begin", 0, []), ("on_train_batch_end", 0, ["loss", "mae"]),
        ("on_train_batch_begin", 1, []), ("on_train_batch_end", 1, ["loss", "mae"]),
        ("on_test_begin", None, []),
        ("on_test_batch_begin", 0, []), ("on_test_batch_end", 0, ["loss", "mae"]),
        ("on_test_end", None, ["loss", "mae"]),
        ("on_epoch_end", e, ["loss", "mae", "val_loss", "val_mae"])]
    assert rec == [("on_train_begin", None, []), *epoch(0), *epoch(1),
                   ("on_train_end", None, ["loss", "mae", "val_loss", "val_mae"])]
    rec.clear()
    m.evaluate(x, y, batch_size=2, callbacks=[cb], verbose=0)
    assert rec == [("on_test_begin", None, []),
                   ("on_test_batch_begin", 0, []), ("on_test_batch_end", 0, ["loss", "mae"]),
                   ("on_test_batch_begin", 1, []), ("on_test_batch_end", 1, ["loss", "mae"]),
                   ("on_test_end", None, ["loss", "mae"])]
    rec.clear()
    m.predict(x, batch_size=2, callbacks=cb, verbose=0)
    assert rec == [("on_predict_begin", None, []),
                   ("on_predict_batch_begin", 0, []), ("on_predict_batch_end", 0, ["outputs"]),
                   ("on_predict_batch_begin", 1, []), ("on_predict_batch_end", 1, ["outputs"]),
                   ("on_predict_end", None, [])]


def test_base_callback_has_every_keras_hook_and_batch_aliases():
    cb = callbacks.Callback()
    for hook in HOOKS + ["on_batch_begin", "on_batch_end"]:
        assert callable(getattr(cb, hook))
    seen = []

    class Old(callbacks.Callback):  # Keras 2 style: the on_batch_* aliases
        def on_batch_begin(self, batch, logs=None):
            seen.append(("begin", batch))

        def on_batch_end(self, batch, logs=None):
            seen.append(("end", batch, sorted(logs)))
    _fit(tiny_model(seed=0), 1, [Old()], n=16)
    assert seen == [("begin", 0), ("end", 0, ["loss"]), ("begin", 1), ("end", 1, ["loss"])]


def test_lambda_callback_keyword_hooks_become_attributes():
    calls = []
    cb = callbacks.LambdaCallback(on_test_end=lambda logs: calls.append(("test_end", logs)),
                                  on_batch_end=lambda b, logs: calls.append(("batch", b)),
                                  custom=42)
    assert cb.custom == 42  # as Keras: every keyword is set on the callback
    m = tiny_model(seed=0)
    _fit(m, 1, [cb], n=8)
    assert calls == [("batch", 0)]
    out = m.evaluate(*blobs(n=8)[:2], callbacks=[cb], verbose=0, return_dict=True)
    assert calls[1] == ("test_end", out)


def test_evaluate_and_predict_callbacks_see_running_logs_and_outputs():
    x, y, _ = blobs(n=20)
    m = tiny_model(seed=0, metrics=["accuracy"])
    ends = []
    cb = callbacks.LambdaCallback(on_test_batch_end=lambda b, logs: ends.append(logs))
    m.evaluate(x, y, batch_size=8, callbacks=[cb], verbose=0)
    # the running loss after batch b is the loss of the first min(8(b+1), 20) samples
    assert len(ends) == 3
    for b, logs in enumerate(ends):
        first = m.evaluate(x[:min(8 * (b + 1), 20)], y[:min(8 * (b + 1), 20)], verbose=0,
                           return_dict=True)
        assert logs == pytest.approx(first, rel=1e-6)
    outs = []
    m.predict(x, batch_size=8, verbose=0, callbacks=[callbacks.LambdaCallback(
        on_predict_batch_end=lambda b, logs: outs.append(logs["outputs"].copy()))])
    np.testing.assert_array_equal(np.concatenate(outs), m.predict(x, verbose=0))
    assert [len(o) for o in outs] == [8, 8, 4]

    def stop(batch, logs):
        m.stop_predicting = True
    first = m.predict(x, batch_size=8, verbose=0,
                      callbacks=[callbacks.LambdaCallback(on_predict_batch_end=stop)])
    np.testing.assert_array_equal(first, m.predict(x[:8], verbose=0))


def test_callback_list_is_keras_public_one():
    m = tiny_model(seed=0)
    cb = callbacks.LambdaCallback()
    cl = callbacks.CallbackList([cb], add_history=True, add_progbar=True, model=m, verbose=0,
                                epochs=3, steps=2)
    assert [type(c) for c in cl.callbacks] == [callbacks.LambdaCallback, callbacks.History,
                                               callbacks.ProgbarLogger]
    assert cb.params == {"verbose": 0, "epochs": 3, "steps": 2} and cb.model is m
    assert m.history is cl.callbacks[1]
    assert isinstance(cl, callbacks.Callback) and cl.uses_batch_hooks("test")  # the progbar's
    assert not callbacks.CallbackList([cb, callbacks.History()]).uses_batch_hooks("train")
    with pytest.raises(TypeError, match="Expected callbacks to be a list"):
        callbacks.CallbackList([cb, "nope"])


def test_progbar_logger_is_added_once_and_heads_epochs_only_when_several(capsys):
    x, y, _ = blobs(n=16)
    m = tiny_model(seed=0)
    m.fit(x, y, epochs=1, batch_size=8, verbose=1)
    out = capsys.readouterr().out
    assert "Epoch 1/1" not in out and out.count("2/2 ━") == 1  # as Keras: no head for 1 epoch
    m.fit(x, y, epochs=2, batch_size=8, verbose=2, callbacks=[callbacks.ProgbarLogger()])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Epoch 1/2" and out[2] == "Epoch 2/2" and len(out) == 4
    assert out[1].startswith("2/2 - ") and " - loss: " in out[1]


# ---- ReduceLROnPlateau -----------------------------------------------------------------------

def test_reduce_lr_on_plateau_sequence_by_hand():
    # monitor val_loss (min), min_delta 0.01, patience 2, factor 0.5, cooldown 1, min_lr 0.02:
    # e0 1.0 best; e1 0.9 best; e2 0.9 wait 1; e3 0.9 wait 2: 0.1 -> 0.05, cooldown 1;
    # e4 0.95 cooldown ends (wait 0), no improvement: wait 1; e5 0.8 best; e6 wait 1;
    # e7 wait 2: 0.05 -> 0.025, cooldown; e8 wait 1; e9 wait 2: max(0.0125, 0.02) = 0.02.
    # The logged learning_rate is the rate before that epoch's reduction.
    m = tiny_model(seed=0, optimizer=optimizers.SGD(learning_rate=0.1))
    seq = [1.0, 0.9, 0.9, 0.9, 0.95, 0.8, 0.8, 0.8, 0.8, 0.8]
    rl = callbacks.ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_delta=0.01,
                                     min_lr=0.02)
    h = _fit(m, 10, [Inject(seq), rl])
    assert h.history["learning_rate"] == pytest.approx(
        [0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025], rel=1e-15)
    assert m.optimizer.learning_rate == pytest.approx(0.02, rel=1e-15)
    # at min_lr nothing changes any more
    h = _fit(m, 4, [Inject([1.0] * 4), callbacks.ReduceLROnPlateau(patience=0, min_lr=0.02)])
    assert h.history["learning_rate"] == pytest.approx([0.02] * 4, rel=1e-15)


def test_reduce_lr_on_plateau_arguments_and_schedules():
    with pytest.raises(ValueError, match="factor >= 1.0"):
        callbacks.ReduceLROnPlateau(factor=1.0)
    rl = callbacks.ReduceLROnPlateau()
    assert (rl.monitor, rl.factor, rl.patience, rl.min_delta, rl.cooldown, rl.min_lr) == \
        ("val_loss", 0.1, 10, 1e-4, 0, 0.0)
    sched = optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    m = tiny_model(seed=0, optimizer=optimizers.SGD(learning_rate=sched))
    with pytest.raises(TypeError, match="not settable"):  # as Keras' optimizer setter
        _fit(m, 3, [Inject([1.0, 1.0, 1.0]), callbacks.ReduceLROnPlateau(patience=1)])
    # auto mode follows the metric's direction: accuracy is maximized
    # (0.5 best, 0.4 wait 1: lr 0.1 -> 0.01 at epoch 1)
    m = tiny_model(seed=0, optimizer=optimizers.SGD(learning_rate=0.1), metrics=["accuracy"])
    h = _fit(m, 3, [Inject([0.5, 0.4, 0.6], "accuracy"),
                    callbacks.ReduceLROnPlateau(monitor="accuracy", patience=1)])
    assert h.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.01])


# ---- EarlyStopping ---------------------------------------------------------------------------

@pytest.mark.parametrize("kw, seq, epochs_run, stopped, best, wait, best_epoch", [
    # baseline 0.5 is never beaten: wait counts every epoch, stop at wait 3 (epoch 2)
    (dict(patience=3, baseline=0.5), [1.0, 0.9, 0.95, 0.8, 0.7, 0.6], 3, 2, 0.9, 3, 1),
    # 0.97 is not 0.05 below 1.0; 0.9 is; 0.88 and 0.87 are not below 0.85
    (dict(patience=2, min_delta=0.05), [1.0, 0.97, 0.9, 0.88, 0.87, 0.5], 5, 4, 0.9, 2, 2),
    # epochs 0-2 unmonitored; 4.0 best at epoch 3, 5.0 worse: stop at 4
    (dict(patience=1, start_from_epoch=3), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 5, 4, 4.0, 1, 3),
    # patience 0: the first epoch without improvement stops
    (dict(patience=0), [1.0, 2.0, 3.0], 2, 1, 1.0, 1, 0),
    # no stop: stopped_epoch stays 0
    (dict(patience=1), [3.0, 2.0, 1.0], 3, 0, 1.0, 0, 2),
])
def test_early_stopping_scripted(kw, seq, epochs_run, stopped, best, wait, best_epoch):
    es = callbacks.EarlyStopping(**kw)
    h = _fit(tiny_model(seed=0), len(seq), [Inject(seq), es])
    assert (len(h.epoch), es.stopped_epoch, es.best, es.wait, es.best_epoch) == \
        (epochs_run, stopped, best, wait, best_epoch)


def test_early_stopping_with_initial_epoch():
    es = callbacks.EarlyStopping(patience=1)
    h = _fit(tiny_model(seed=0), 8, [Inject([9, 9, 9, 1.0, 2.0, 3.0, 4, 5]), es],
             initial_epoch=3)
    assert h.epoch == [3, 4] and es.stopped_epoch == 4 and es.best == 1.0


def _weights_by_epoch(m, store):
    return callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: store.__setitem__(e, m.get_weights()))


def test_restore_best_weights_without_beating_the_baseline_and_when_another_callback_stops():
    m = tiny_model(seed=0)
    w = {}
    es = callbacks.EarlyStopping(patience=3, baseline=0.5, restore_best_weights=True)
    _fit(m, 6, [_weights_by_epoch(m, w), Inject([1.0, 0.9, 0.95, 0.8, 0.7, 0.6]), es])
    for a, b in zip(m.get_weights(), w[1]):  # epoch 1 (0.9) was the best seen
        np.testing.assert_array_equal(a, b)
    # another callback stops at epoch 3; the best epoch is 1
    m, w = tiny_model(seed=0), {}

    def stop(epoch, logs):
        if epoch == 3:
            m.stop_training = True
    es = callbacks.EarlyStopping(patience=10, restore_best_weights=True)
    h = _fit(m, 10, [_weights_by_epoch(m, w), Inject([1.0, 0.5, 0.7, 0.8]), es,
                     callbacks.LambdaCallback(on_epoch_end=stop)])
    assert h.epoch == [0, 1, 2, 3] and es.stopped_epoch == 0
    for a, b in zip(m.get_weights(), w[1]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(w[1][0], w[3][0])


def test_monitor_modes_and_missing_monitor():
    with pytest.warns(UserWarning, match="mode 'bogus' is unknown, fallback to auto mode"):
        es = callbacks.EarlyStopping(mode="bogus")
    assert es.mode == "auto"
    with pytest.raises(ValueError, match="monitor=foo"):  # auto cannot resolve foo
        _fit(tiny_model(seed=0), 1, [Inject([1.0], "foo"), callbacks.EarlyStopping(monitor="foo")])
    with pytest.warns(UserWarning, match="`val_loss` which is not available"):
        h = _fit(tiny_model(seed=0), 2, [callbacks.EarlyStopping(patience=0)])
    assert len(h.epoch) == 2
    # auto: accuracy is maximized (0.6 best at epoch 1, 0.55 worse: stop at 2)
    es = callbacks.EarlyStopping(monitor="val_accuracy", patience=1)
    h = _fit(tiny_model(seed=0, metrics=["accuracy"]), 5,
             [Inject([0.5, 0.6, 0.55, 0.9, 0.9], "val_accuracy"), es])
    assert h.epoch == [0, 1, 2] and es.best == 0.6


# ---- ModelCheckpoint -------------------------------------------------------------------------

def test_model_checkpoint_creates_directories_and_formats_names(tmp_path):
    path = tmp_path / "a" / "b" / "ck-{epoch:02d}-{val_loss:.2f}.fastnn"
    m = tiny_model(seed=0)
    _fit(m, 2, [Inject([0.5, 0.25]), callbacks.ModelCheckpoint(path)])
    assert sorted(os.listdir(tmp_path / "a" / "b")) == ["ck-01-0.50.fastnn", "ck-02-0.25.fastnn"]
    last = models.load_model(tmp_path / "a" / "b" / "ck-02-0.25.fastnn")
    for a, b in zip(last.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(KeyError, match="Failed to format this callback filepath"):
        _fit(m, 1, [callbacks.ModelCheckpoint(tmp_path / "{nope}.fastnn")])


@pytest.mark.parametrize("kw, saved", [
    (dict(), [1, 2, 4]),                                  # min: 1.0, 0.8, (0.9), 0.7
    (dict(initial_value_threshold=0.85), [2, 4]),         # 1.0 is not below 0.85
    (dict(mode="max"), [1]),                              # nothing above 1.0
])
def test_model_checkpoint_save_best_only(tmp_path, kw, saved):
    ck = callbacks.ModelCheckpoint(tmp_path / "{epoch}.fastnn", save_best_only=True, **kw)
    _fit(tiny_model(seed=0), 4, [Inject([1.0, 0.8, 0.9, 0.7]), ck])
    assert sorted(int(p.stem) for p in tmp_path.glob("*.fastnn")) == saved


def test_model_checkpoint_saves_with_a_warning_when_the_monitor_is_missing(tmp_path):
    ck = callbacks.ModelCheckpoint(tmp_path / "{epoch}.fastnn", save_best_only=True)
    with pytest.warns(UserWarning, match="Can save best model only with val_loss available"):
        _fit(tiny_model(seed=0), 2, [ck])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.fastnn", "2.fastnn"]


def test_model_checkpoint_int_save_freq_counts_batches(tmp_path):
    # 5 batches per epoch, every 2: after batches 2, 4 of epoch 1; the count goes on into
    # epoch 2 (1 left over + batch 1 = 2), then batches 3, 5
    ck = callbacks.ModelCheckpoint(tmp_path / "ck-{epoch}-{batch}.fastnn", save_freq=2)
    _fit(tiny_model(seed=0), 2, [ck], n=40, batch_size=8)
    assert sorted(p.stem for p in tmp_path.iterdir()) == \
        ["ck-1-2", "ck-1-4", "ck-2-1", "ck-2-3", "ck-2-5"]


def test_model_checkpoint_weights_only_and_filepath_checks(tmp_path):
    pytest.importorskip("h5py")
    m = tiny_model(seed=0)
    _fit(m, 1, [callbacks.ModelCheckpoint(tmp_path / "w.weights.h5", save_weights_only=True)])
    other = tiny_model(seed=1)
    other.load_weights(tmp_path / "w.weights.h5")
    for a, b in zip(other.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="must end in `.weights.h5`"):
        callbacks.ModelCheckpoint("w.keras", save_weights_only=True)
    for bad in ("m.weights.h5", "m.h5", "m.txt"):
        with pytest.raises(ValueError, match="must end in `.keras`"):
            callbacks.ModelCheckpoint(bad)
    with pytest.raises(ValueError, match="Unrecognized save_freq"):
        callbacks.ModelCheckpoint("m.keras", save_freq="batch")


# ---- TerminateOnNaN, LearningRateScheduler --------------------------------------------------

def _diverging():
    return tiny_model(seed=0, optimizer=optimizers.SGD(learning_rate=1e4), loss="mse",
                      act="linear")


def test_terminate_on_nan_raise_error_skips_on_train_end():
    x, y, _ = blobs(n=40)
    ended = []
    end = callbacks.LambdaCallback(on_train_end=lambda logs: ended.append(True))
    with pytest.raises(RuntimeError, match="NaN or Inf loss encountered at batch"):
        _diverging().fit(x, y * 1e3, epochs=50, batch_size=4, verbose=0,
                         callbacks=[callbacks.TerminateOnNaN(raise_error=True), end])
    assert ended == []
    h = _diverging().fit(x, y * 1e3, epochs=50, batch_size=4, verbose=0,
                         callbacks=[callbacks.TerminateOnNaN(), end])
    assert ended == [True] and len(h.epoch) < 50


def test_learning_rate_scheduler_forms_and_refusals(capsys):
    m = tiny_model(seed=0, optimizer=optimizers.SGD(learning_rate=0.1))
    h = _fit(m, 3, [callbacks.LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1), verbose=1)])
    assert h.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.1 / 3], rel=1e-15)
    out = capsys.readouterr().out
    assert "Epoch 2: LearningRateScheduler setting learning rate to 0.05." in out
    with pytest.raises(ValueError, match="should be a float. Got: 1"):  # an int, as Keras
        _fit(m, 1, [callbacks.LearningRateScheduler(lambda epoch: 1)])
    sched = optimizers.schedules.InverseTimeDecay(0.1, decay_steps=1, decay_rate=1.0)
    with pytest.raises(TypeError, match="not settable"):
        _fit(tiny_model(seed=0, optimizer=optimizers.SGD(learning_rate=sched)), 1,
             [callbacks.LearningRateScheduler(lambda epoch, lr: lr)])


# ---- BackupAndRestore ------------------------------------------------------------------------

def _dropout_model():
    m = models.Sequential([layers.Dense(8, activation="relu", input_shape=(5,)),
                           layers.Dropout(0.3), layers.Dense(3, activation="softmax")], seed=3)
    m.compile(optimizers.Adam(0.01), "categorical_crossentropy", metrics=["accuracy"])
    return m


class Crash(callbacks.Callback):
    def __init__(self, epoch, batch=None):
        super().__init__()
        self.epoch, self.batch = epoch, batch

    def on_epoch_begin(self, epoch, logs=None):
        self.now = epoch
        if epoch == self.epoch and self.batch is None:
            raise RuntimeError("crash")

    def on_train_batch_begin(self, batch, logs=None):
        if self.now == self.epoch and batch == self.batch:
            raise RuntimeError("crash")


def _reference(epochs=6):
    x, y, _ = blobs(n=40)
    m = _dropout_model()
    m.fit(x, y, epochs=epochs, batch_size=8, verbose=0)
    return m


@pytest.mark.parametrize("crash", [Crash(3), Crash(3, batch=2)])
def test_backup_and_restore_resumes_exactly(tmp_path, crash):
    x, y, _ = blobs(n=40)
    ref = _reference()
    backup = tmp_path / "backup"
    first = _dropout_model()
    with pytest.raises(RuntimeError, match="crash"):
        first.fit(x, y, epochs=6, batch_size=8, verbose=0,
                  callbacks=[callbacks.BackupAndRestore(backup), crash])
    assert os.listdir(backup) == ["latest.fastnn"]
    again = _dropout_model()  # a new process: a fresh model of the same seed
    h = again.fit(x, y, epochs=6, batch_size=8, verbose=0,
                  callbacks=[callbacks.BackupAndRestore(backup)])
    assert h.epoch == [3, 4, 5]  # epochs 0-2 were backed up
    for a, b in zip(again.get_weights(), ref.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(again.optimizer.variables, ref.optimizer.variables):
        np.testing.assert_array_equal(a, b)
    assert again.optimizer.iterations == ref.optimizer.iterations == 30
    assert not backup.exists()  # delete_checkpoint=True


def test_backup_write_interrupted_keeps_the_previous_backup(tmp_path, monkeypatch):
    x, y, _ = blobs(n=40)
    backup = tmp_path / "backup"
    m = _dropout_model()
    m.fit(x, y, epochs=1, batch_size=8, verbose=0,
          callbacks=[callbacks.BackupAndRestore(backup, delete_checkpoint=False)])
    real, calls = saving._npy, []

    def failing(a):  # the second array of the next backup: a crash mid-write
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk gone")
        return real(a)
    monkeypatch.setattr(saving, "_npy", failing)
    with pytest.raises(OSError, match="disk gone"):
        m.fit(x, y, epochs=3, batch_size=8, verbose=0,
              callbacks=[callbacks.BackupAndRestore(backup, delete_checkpoint=False)])
    monkeypatch.setattr(saving, "_npy", real)
    assert os.listdir(backup) == ["latest.fastnn"]  # no temporary file left
    # the backup of epoch 0 is whole: a resumed run continues at epoch 1 and ends as the
    # uninterrupted one
    again = _dropout_model()
    h = again.fit(x, y, epochs=6, batch_size=8, verbose=0,
                  callbacks=[callbacks.BackupAndRestore(backup)])
    assert h.epoch == [1, 2, 3, 4, 5]
    for a, b in zip(again.get_weights(), _reference().get_weights()):
        np.testing.assert_array_equal(a, b)


def test_double_checkpoint_restores_the_previous_backup_when_the_latest_is_unreadable(tmp_path):
    x, y, _ = blobs(n=40)
    backup = tmp_path / "backup"
    with pytest.raises(RuntimeError):
        _dropout_model().fit(x, y, epochs=6, batch_size=8, verbose=0, callbacks=[
            callbacks.BackupAndRestore(backup, double_checkpoint=True), Crash(3)])
    assert sorted(os.listdir(backup)) == ["latest.fastnn", "latest.fastnn.bkp"]
    (backup / "latest.fastnn").write_bytes(b"not a zip")
    again = _dropout_model()
    h = again.fit(x, y, epochs=6, batch_size=8, verbose=0,
                  callbacks=[callbacks.BackupAndRestore(backup, double_checkpoint=True)])
    assert h.epoch == [2, 3, 4, 5]  # the previous backup: after epoch 1
    for a, b in zip(again.get_weights(), _reference().get_weights()):
        np.testing.assert_array_equal(a, b)
    # without double_checkpoint an unreadable backup is an error
    (backup.mkdir(), (backup / "latest.fastnn").write_bytes(b"not a zip"))
    with pytest.raises(saving.FileFormatError):
        _dropout_model().fit(x, y, epochs=1, verbose=0,
                             callbacks=[callbacks.BackupAndRestore(backup)])


def test_backup_int_save_freq_restores_mid_epoch_weights_and_reruns_the_epoch(tmp_path):
    """As Keras: a backup taken after 3 batches of epoch 0 restores those weights and runs
    epoch 0 again from its start."""
    x, y, _ = blobs(n=40)
    backup, after = tmp_path / "backup", {}
    m = _dropout_model()
    rec = callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: after.__setitem__(b, m.get_weights()))
    with pytest.raises(RuntimeError):
        m.fit(x, y, epochs=2, batch_size=8, verbose=0,
              callbacks=[rec, callbacks.BackupAndRestore(backup, save_freq=3), Crash(0, 4)])
    again, start = _dropout_model(), []
    h = again.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[
        callbacks.BackupAndRestore(backup, save_freq=3, delete_checkpoint=False),
        callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: start.append(again.get_weights()))])
    assert h.epoch == [0, 1] and backup.exists()
    for a, b in zip(start[0], after[2]):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="Empty `backup_dir`"):
        callbacks.BackupAndRestore("")
    with pytest.raises(ValueError, match="save_freq"):
        callbacks.BackupAndRestore(backup, save_freq="batch")


def test_backup_refuses_a_different_model(tmp_path):
    x, y, _ = blobs(n=40)
    backup = tmp_path / "backup"
    with pytest.raises(RuntimeError):
        _dropout_model().fit(x, y, epochs=3, batch_size=8, verbose=0,
                             callbacks=[callbacks.BackupAndRestore(backup), Crash(1)])
    other = tiny_model(seed=0, optimizer="adam")  # no Dropout layer: one generator less
    before = other.get_weights()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(saving.FileFormatError, match="generator"):
            other.fit(x, y, epochs=3, verbose=0, callbacks=[callbacks.BackupAndRestore(backup)])
    for a, b in zip(other.get_weights(), before):  # nothing was assigned
        np.testing.assert_array_equal(a, b)
