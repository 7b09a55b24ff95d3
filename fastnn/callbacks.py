"""Callbacks, named as in `keras.callbacks`, and the progress bar fit() draws.

fit() calls a callback's per-batch hooks only if its class overrides them, so the
epoch-level callbacks cost nothing per step.
"""
import csv
import math
import os
import sys
import time
import warnings

import numpy as np


class Callback:
    """Base class; `self.model` and `self.params` are set by fit()."""

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_train_batch_begin(self, batch, logs=None): pass
    def on_train_batch_end(self, batch, logs=None): pass


def uses_batch_hooks(cb):
    cls = type(cb)
    return (cls.on_train_batch_begin is not Callback.on_train_batch_begin or
            cls.on_train_batch_end is not Callback.on_train_batch_end or
            isinstance(cb, LambdaCallback) and cb.has_batch_hooks)


class History(Callback):
    """Records the logs of every epoch: `history.history[key]` is a list, `history.epoch`
    the epoch indices.  fit() returns it."""

    def on_train_begin(self, logs=None):
        self.epoch = []
        self.history = {}

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


def _mode(monitor, mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"Expected mode in ('auto', 'min', 'max'). Received: mode={mode!r}")
    if mode == "auto":
        return "max" if monitor.endswith(("acc", "accuracy", "auc")) else "min"
    return mode


class EarlyStopping(Callback):
    """Stops training when `monitor` has not improved by more than min_delta for `patience`
    epochs; with restore_best_weights=True the best epoch's weights are restored."""

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto",
                 baseline=None, restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        self.monitor, self.patience, self.verbose = monitor, int(patience), verbose
        self.mode = _mode(monitor, mode)
        self.min_delta = abs(min_delta) * (1 if self.mode == "max" else -1)
        self.baseline, self.restore_best_weights = baseline, restore_best_weights
        self.start_from_epoch = start_from_epoch

    def _better(self, value, ref):
        return value - self.min_delta > ref if self.mode == "max" else value - self.min_delta < ref

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
        self.best = self.baseline if self.baseline is not None else \
            (-math.inf if self.mode == "max" else math.inf)
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            warnings.warn(f"EarlyStopping: monitor {self.monitor!r} is not in the logs "
                          f"(available: {sorted(logs or {})}); not stopping.", stacklevel=2)
            return
        if epoch < self.start_from_epoch:
            return
        self.wait += 1
        if self._better(value, self.best):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None and self.stopped_epoch:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Saves the model (or only its weights) at the end of every epoch, or only when
    `monitor` improves with save_best_only=True.  filepath may hold `{epoch:02d}` and
    log keys, e.g. "ckpt-{epoch:02d}-{val_loss:.2f}.fastnn"."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False,
                 save_weights_only=False, mode="auto", save_freq="epoch"):
        super().__init__()
        if save_freq != "epoch":
            raise ValueError(f"Expected save_freq='epoch'. Received: save_freq={save_freq!r}")
        self.filepath, self.monitor, self.verbose = os.fspath(filepath), monitor, verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self.mode = _mode(monitor, mode)
        self.best = -math.inf if self.mode == "max" else math.inf

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None:
                warnings.warn(f"ModelCheckpoint: monitor {self.monitor!r} is not in the logs; "
                              "skipping.", stacklevel=2)
                return
            if not (value > self.best if self.mode == "max" else value < self.best):
                return
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best:.5f} to "
                      f"{value:.5f}, saving model to {path}")
            self.best = value
        elif self.verbose:
            print(f"\nEpoch {epoch + 1}: saving model to {path}")
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class TerminateOnNaN(Callback):
    """Stops training as soon as a batch's loss is NaN or infinite."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


class CSVLogger(Callback):
    """Writes one CSV row per epoch: epoch, then the log keys (in a distributed fit, rank 0
    writes; the logs are the same on every rank)."""

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename, self.sep, self.append = os.fspath(filename), separator, append
        self.keys = None

    def on_train_begin(self, logs=None):
        from fastnn import distribution
        if not distribution.is_primary():
            self._file = open(os.devnull, "w", newline="")
            self._writer, self._header = None, False
            return
        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename)
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._writer = None
        self._header = not exists

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._writer is None:
            self.keys = sorted(logs)
            self._writer = csv.DictWriter(self._file, fieldnames=["epoch"] + self.keys,
                                          delimiter=self.sep)
            if self._header:
                self._writer.writeheader()
        self._writer.writerow({"epoch": epoch, **{k: logs.get(k, "NA") for k in self.keys}})
        self._file.flush()

    def on_train_end(self, logs=None):
        self._file.close()


class LambdaCallback(Callback):
    """A callback from plain functions: on_epoch_begin(epoch, logs), on_epoch_end(epoch,
    logs), on_batch_begin/on_train_batch_begin(batch, logs), on_batch_end/on_train_batch_end
    (batch, logs), on_train_begin(logs), on_train_end(logs)."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_batch_begin=None,
                 on_batch_end=None, on_train_begin=None, on_train_end=None,
                 on_train_batch_begin=None, on_train_batch_end=None):
        super().__init__()
        noop = lambda *a: None  # noqa: E731
        self._f = {"epoch_begin": on_epoch_begin or noop, "epoch_end": on_epoch_end or noop,
                   "batch_begin": on_train_batch_begin or on_batch_begin or noop,
                   "batch_end": on_train_batch_end or on_batch_end or noop,
                   "train_begin": on_train_begin or noop, "train_end": on_train_end or noop}
        self.has_batch_hooks = any((on_batch_begin, on_batch_end, on_train_batch_begin,
                                    on_train_batch_end))

    def on_epoch_begin(self, epoch, logs=None): self._f["epoch_begin"](epoch, logs)
    def on_epoch_end(self, epoch, logs=None): self._f["epoch_end"](epoch, logs)
    def on_train_batch_begin(self, batch, logs=None): self._f["batch_begin"](batch, logs)
    def on_train_batch_end(self, batch, logs=None): self._f["batch_end"](batch, logs)
    def on_train_begin(self, logs=None): self._f["train_begin"](logs)
    def on_train_end(self, logs=None): self._f["train_end"](logs)


class LearningRateScheduler(Callback):
    """At the start of every epoch sets the optimizer's learning rate to
    schedule(epoch, lr) (or schedule(epoch))."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        opt = self.model.optimizer
        try:
            lr = self.schedule(epoch, opt.learning_rate)
        except TypeError:
            lr = self.schedule(epoch)
        if not isinstance(lr, (float, int, np.floating, np.integer)) or not math.isfinite(lr):
            raise ValueError(f"Expected the schedule to return a finite float. Received: {lr!r}")
        opt.learning_rate = float(lr)
        if self.verbose:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class CallbackList:
    """Calls a list of callbacks in order."""

    def __init__(self, callbacks, model, params):
        self.callbacks = [callbacks] if isinstance(callbacks, Callback) else list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError("Expected callbacks to be a list of fastnn.callbacks.Callback. "
                                f"Received: {cb!r} ({type(cb).__name__})")
        for cb in self.callbacks:
            cb.set_model(model)
            cb.set_params(params)
        self.batch_callbacks = [cb for cb in self.callbacks if uses_batch_hooks(cb)]

    def __getattr__(self, hook):
        def call(*args):
            for cb in (self.batch_callbacks if "batch" in hook else self.callbacks):
                getattr(cb, hook)(*args)
        return call


# ---- progress output -------------------------------------------------------------------------

def _fmt_time(seconds):
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{int(round(seconds))}s"


def _fmt_per_step(seconds):
    if seconds >= 1:
        return f"{seconds:.0f}s/step"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.0f}ms/step"
    return f"{seconds * 1e6:.0f}us/step"


class Progbar:
    """Keras-style progress: verbose=1 redraws `step/steps bar time per-step - metrics`
    at most ten times a second (on a terminal; elsewhere once, at the end of the epoch);
    verbose=2 prints one line per epoch; verbose=0 prints nothing."""

    WIDTH = 20

    def __init__(self, steps, verbose=1, file=None, interval=0.1):
        self.steps, self.verbose, self.interval = steps, verbose, interval
        self.file = file or sys.stdout
        self.dynamic = getattr(self.file, "isatty", lambda: False)()
        self.start = self.last = time.perf_counter()

    @classmethod
    def report(cls, steps, verbose, start, logs):
        """The final line of work of `steps` steps begun at `start` (perf_counter)."""
        if verbose:
            bar = cls(steps, verbose)
            bar.start = start
            bar.update(steps, lambda: logs, final=True)

    def update(self, step, logs_fn, final=False):
        """step: steps done; logs_fn: called only when a line is drawn."""
        if self.verbose == 0:
            return
        now = time.perf_counter()
        if not final and (self.verbose == 2 or not self.dynamic or now - self.last < self.interval):
            return
        self.last = now
        elapsed = now - self.start
        per_step = elapsed / max(step, 1)
        metrics = " - ".join(f"{k}: {v:.4f}" for k, v in sorted(logs_fn().items()))
        metrics = f" - {metrics}" if metrics else ""
        if self.verbose == 2:
            line = f"{step}/{self.steps} - {_fmt_time(elapsed)} - {_fmt_per_step(per_step)}{metrics}"
        else:
            done = int(self.WIDTH * step / self.steps)
            bar = "━" * done + ("╺" if done < self.WIDTH else "") + " " * max(self.WIDTH - done - 1, 0)
            when = _fmt_time(elapsed) if final else _fmt_time(per_step * (self.steps - step))
            line = f"{step}/{self.steps} {bar} {when} {_fmt_per_step(per_step)}{metrics}"
        self.file.write(("\r" + line + "\x1b[K" if self.dynamic else line) + ("\n" if final else ""))
        self.file.flush()
