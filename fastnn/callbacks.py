"""Callbacks, named as in `keras.callbacks`, and the progress bar fit() draws.

fit() calls a callback's per-batch hooks only if its class overrides them, so the
epoch-level callbacks cost nothing per step.
"""
from __future__ import annotations

import csv
import math
import os
import sys
import time
import warnings
from typing import IO, TYPE_CHECKING, Any, Callable, Sequence, cast

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from fastnn.models import Sequential


class Callback:
    """Base class; `self.model` and `self.params` are set by fit()."""

    def __init__(self) -> None:
        # the model being trained: fit sets it (set_model) before it calls any hook
        self.model: Sequential = None  # type: ignore[assignment]
        self.params: dict[str, Any] = {}

    def set_model(self, model: Sequential) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None: pass
    def on_train_end(self, logs: dict[str, Any] | None = None) -> None: pass
    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None: pass
    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None: pass
    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None: pass
    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None: pass


def uses_batch_hooks(cb: Callback) -> bool:
    cls = type(cb)
    return (cls.on_train_batch_begin is not Callback.on_train_batch_begin or
            cls.on_train_batch_end is not Callback.on_train_batch_end or
            isinstance(cb, LambdaCallback) and cb.has_batch_hooks)


class History(Callback):
    """Records the logs of every epoch: `history.history[key]` is a list, `history.epoch`
    the epoch indices.  fit() returns it."""

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.epoch: list[int] = []
        self.history: dict[str, list[Any]] = {}

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


def _mode(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"Expected mode in ('auto', 'min', 'max'). Received: mode={mode!r}")
    if mode == "auto":
        return "max" if monitor.endswith(("acc", "accuracy", "auc")) else "min"
    return mode


class EarlyStopping(Callback):
    """Stops training when `monitor` has not improved by more than min_delta for `patience`
    epochs; with restore_best_weights=True the best epoch's weights are restored.

    Defaults: monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto" ("max"
    for an accuracy or auc, else "min"), baseline=None, restore_best_weights=False,
    start_from_epoch=0."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0, patience: int = 0,
                 verbose: int = 0, mode: str = "auto", baseline: float | None = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0) -> None:
        super().__init__()
        self.monitor, self.patience, self.verbose = monitor, int(patience), verbose
        self.mode = _mode(monitor, mode)
        self.min_delta = abs(min_delta) * (1 if self.mode == "max" else -1)
        self.baseline, self.restore_best_weights = baseline, restore_best_weights
        self.start_from_epoch = start_from_epoch

    def _better(self, value: float, ref: float) -> bool:
        return value - self.min_delta > ref if self.mode == "max" else value - self.min_delta < ref

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
        self.best = self.baseline if self.baseline is not None else \
            (-math.inf if self.mode == "max" else math.inf)
        self.best_weights: list[NDArray[Any]] | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
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

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.stopped_epoch and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None and self.stopped_epoch:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Saves the model (or only its weights) at the end of every epoch, or only when
    `monitor` improves with save_best_only=True.  filepath may hold `{epoch:02d}` and
    log keys, e.g. "ckpt-{epoch:02d}-{val_loss:.2f}.fastnn".

    Defaults: monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
    mode="auto" ("max" for an accuracy or auc, else "min"), save_freq="epoch" (the only
    one)."""

    def __init__(self, filepath: str | os.PathLike[str], monitor: str = "val_loss",
                 verbose: int = 0, save_best_only: bool = False, save_weights_only: bool = False,
                 mode: str = "auto", save_freq: str = "epoch") -> None:
        super().__init__()
        if save_freq != "epoch":
            raise ValueError(f"Expected save_freq='epoch'. Received: save_freq={save_freq!r}")
        self.filepath, self.monitor, self.verbose = os.fspath(filepath), monitor, verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self.mode = _mode(monitor, mode)
        self.best = -math.inf if self.mode == "max" else math.inf

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
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

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


class CSVLogger(Callback):
    """Writes one CSV row per epoch: epoch, then the log keys (in a distributed fit, rank 0
    writes; the logs are the same on every rank).  Defaults: separator=",", append=False
    (overwrite the file)."""

    def __init__(self, filename: str | os.PathLike[str], separator: str = ",",
                 append: bool = False) -> None:
        super().__init__()
        self.filename, self.sep, self.append = os.fspath(filename), separator, append
        self.keys: list[str] | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        from fastnn import distribution
        self._writer: csv.DictWriter[str] | None
        if not distribution.is_primary():
            self._file = open(os.devnull, "w", newline="")
            self._writer, self._header = None, False
            return
        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename)
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._writer = None
        self._header = not exists

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        if self._writer is None:
            self.keys = sorted(logs)
            self._writer = csv.DictWriter(self._file, fieldnames=["epoch"] + self.keys,
                                          delimiter=self.sep)
            if self._header:
                self._writer.writeheader()
        keys = cast("list[str]", self.keys)  # set with the writer
        self._writer.writerow({"epoch": epoch, **{k: logs.get(k, "NA") for k in keys}})
        self._file.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._file.close()


class LambdaCallback(Callback):
    """A callback from plain functions: on_epoch_begin(epoch, logs), on_epoch_end(epoch,
    logs), on_batch_begin/on_train_batch_begin(batch, logs), on_batch_end/on_train_batch_end
    (batch, logs), on_train_begin(logs), on_train_end(logs).  Each defaults to None (nothing
    is called)."""

    def __init__(self, on_epoch_begin: Callable[..., Any] | None = None,
                 on_epoch_end: Callable[..., Any] | None = None,
                 on_batch_begin: Callable[..., Any] | None = None,
                 on_batch_end: Callable[..., Any] | None = None,
                 on_train_begin: Callable[..., Any] | None = None,
                 on_train_end: Callable[..., Any] | None = None,
                 on_train_batch_begin: Callable[..., Any] | None = None,
                 on_train_batch_end: Callable[..., Any] | None = None) -> None:
        super().__init__()
        noop: Callable[..., Any] = lambda *a: None  # noqa: E731
        self._f = {"epoch_begin": on_epoch_begin or noop, "epoch_end": on_epoch_end or noop,
                   "batch_begin": on_train_batch_begin or on_batch_begin or noop,
                   "batch_end": on_train_batch_end or on_batch_end or noop,
                   "train_begin": on_train_begin or noop, "train_end": on_train_end or noop}
        self.has_batch_hooks = any((on_batch_begin, on_batch_end, on_train_batch_begin,
                                    on_train_batch_end))

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._f["epoch_begin"](epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._f["epoch_end"](epoch, logs)

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._f["batch_begin"](batch, logs)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._f["batch_end"](batch, logs)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._f["train_begin"](logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._f["train_end"](logs)


class LearningRateScheduler(Callback):
    """At the start of every epoch sets the optimizer's learning rate to
    schedule(epoch, lr) (or schedule(epoch)).  Default verbose=0."""

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
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

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class CallbackList:
    """Calls a list of callbacks in order."""

    def __init__(self, callbacks: Callback | Sequence[Callback], model: Sequential,
                 params: dict[str, Any]) -> None:
        self.callbacks = [callbacks] if isinstance(callbacks, Callback) else list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError("Expected callbacks to be a list of fastnn.callbacks.Callback. "
                                f"Received: {cb!r} ({type(cb).__name__})")
        for cb in self.callbacks:
            cb.set_model(model)
            cb.set_params(params)
        self.batch_callbacks = [cb for cb in self.callbacks if uses_batch_hooks(cb)]

    def __getattr__(self, hook: str) -> Callable[..., None]:
        def call(*args: Any) -> None:
            for cb in (self.batch_callbacks if "batch" in hook else self.callbacks):
                getattr(cb, hook)(*args)
        return call


# ---- progress output -------------------------------------------------------------------------

def _fmt_time(seconds: float) -> str:
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{int(round(seconds))}s"


def _fmt_per_step(seconds: float) -> str:
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

    def __init__(self, steps: int, verbose: int = 1, file: IO[str] | None = None,
                 interval: float = 0.1) -> None:
        self.steps, self.verbose, self.interval = steps, verbose, interval
        self.file = file or sys.stdout
        self.dynamic = getattr(self.file, "isatty", lambda: False)()
        self.start = self.last = time.perf_counter()

    @classmethod
    def report(cls, steps: int, verbose: int, start: float, logs: dict[str, float]) -> None:
        """The final line of work of `steps` steps begun at `start` (perf_counter)."""
        if verbose:
            bar = cls(steps, verbose)
            bar.start = start
            bar.update(steps, lambda: logs, final=True)

    def update(self, step: int, logs_fn: Callable[[], dict[str, float]],
               final: bool = False) -> None:
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
