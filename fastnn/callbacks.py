"""Callbacks, named as in `keras.callbacks`, and the progress bar fit() draws.

Every hook of Keras 3's `Callback` exists, with Keras' arguments.  fit(), evaluate() and
predict() call them through a `CallbackList` as Keras' trainer does: `on_train_begin()`;
per epoch `on_epoch_begin(epoch)`, per step `on_train_batch_begin(step)` and
`on_train_batch_end(step, logs)`, the validation run's `on_test_begin()`,
`on_test_batch_begin/end` and `on_test_end(logs)`, then `on_epoch_end(epoch, logs)`; at the
end `on_train_end(logs)` with the last epoch's logs (not called when an exception leaves
fit, as in Keras).  Every hook receives a dict (an empty one where Keras passes none); batch
hooks are called with `logs=` as a keyword, the others positionally, as Keras calls them.

A per-batch hook is called only if some callback in the list overrides it (as Keras checks
with `utils.default`), so the epoch-level callbacks cost nothing per step.
"""
from __future__ import annotations

import csv
import json
import math
import operator
import os
import shutil
import sys
import time
import warnings
from typing import IO, TYPE_CHECKING, Any, Callable, Sequence, cast

import numpy as np

from fastnn import _files, distribution, saving

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from fastnn.models import Sequential



class Callback:
    """Base class used to build new callbacks, as `keras.callbacks.Callback`: subclass it and
    override the hooks of the stages of interest.

    Attributes:
        model: the model being trained, evaluated or run (set by fit/evaluate/predict
            through `set_model` before any hook).
        params: dict of the run's parameters: `verbose`, `epochs`, `steps` (steps per epoch).

    As in Keras, `on_batch_begin` / `on_batch_end` are backwards-compatible aliases: the
    default `on_train_batch_begin` / `on_train_batch_end` call them.
    """

    def __init__(self) -> None:
        # the model being trained: fit sets it (set_model) before it calls any hook
        self.model: Sequential = None  # type: ignore[assignment]
        self.params: dict[str, Any] = {}

    def set_model(self, model: Sequential) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """A backwards compatibility alias for `on_train_batch_begin`."""

    def on_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """A backwards compatibility alias for `on_train_batch_end`."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """At the start of epoch `epoch` (from 0) of fit; logs is empty."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """At the end of an epoch of fit; logs: the epoch's metrics, validation ones prefixed
        with `val_`, e.g. {'loss': 0.2, 'accuracy': 0.7, 'val_loss': 0.3}."""

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Before training step `batch` (from 0 in each epoch); logs is empty."""
        self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """After training step `batch`; logs: the epoch's running metrics."""
        self.on_batch_end(batch, logs=logs)

    def on_test_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Before a batch of evaluate (or of fit's validation run); logs is empty."""

    def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """After a batch of evaluate (or of fit's validation run); logs: running metrics."""

    def on_predict_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Before a batch of predict; logs is empty."""

    def on_predict_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """After a batch of predict; logs: {'outputs': the batch's outputs}."""

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """At the start of fit; logs is empty."""

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """At the end of fit; logs: the last epoch's (empty if no epoch ran)."""

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        """At the start of evaluate or of fit's validation run; logs is empty."""

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        """At the end of evaluate or of fit's validation run; logs: its final metrics."""

    def on_predict_begin(self, logs: dict[str, Any] | None = None) -> None:
        """At the start of predict; logs is empty."""

    def on_predict_end(self, logs: dict[str, Any] | None = None) -> None:
        """At the end of predict; logs is empty."""


# the per-batch hooks of each mode ("train" also counts the on_batch_* aliases)
_BATCH_HOOKS = {"train": ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin",
                          "on_batch_end"),
                "test": ("on_test_batch_begin", "on_test_batch_end"),
                "predict": ("on_predict_batch_begin", "on_predict_batch_end")}


def _overrides(cb: Callback, hook: str) -> bool:
    """Whether cb's hook is not the base class' no-op (a subclass' method, or a function set
    on the instance as LambdaCallback does)."""
    f = getattr(cb, hook)
    return getattr(f, "__func__", None) is not getattr(Callback, hook)


def uses_batch_hooks(cb: Callback, mode: str = "train") -> bool:
    """Whether cb overrides a per-batch hook of mode ("train", "test" or "predict")."""
    return any(_overrides(cb, h) for h in _BATCH_HOOKS[mode])


def needs_every_batch(cb: Callback, mode: str = "train") -> bool:
    """Whether cb's per-batch hooks of mode must run after every batch: those of any callback
    but the progress bar's own (ProgbarLogger's, which redraws at most ten times a second, so
    fit may call them once per run of steps it joins)."""
    if not uses_batch_hooks(cb, mode):
        return False
    return not (isinstance(cb, ProgbarLogger) and all(
        getattr(getattr(cb, h), "__func__", None) is getattr(ProgbarLogger, h)
        for h in _BATCH_HOOKS[mode]))


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


class MonitorCallback(Callback):
    """Base of the callbacks that watch one logged quantity (EarlyStopping, ModelCheckpoint,
    ReduceLROnPlateau), as Keras' MonitorCallback.

    mode: "min", "max" or "auto".  As in Keras, an unknown mode warns and falls back to
    "auto", and "auto" is resolved at the first on_epoch_end: "min" for `loss` / `val_loss`,
    else the direction of the compiled metric of that name (accuracies "max", mae/mse
    "min"); a name it cannot resolve raises ValueError then.
    An improvement is `value - min_delta > best` ("max") or `value + min_delta < best`
    ("min"); any value improves on best=None.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "auto",
                 baseline: float | None = None, min_delta: float = 0) -> None:
        super().__init__()
        if mode not in ("auto", "min", "max"):
            warnings.warn(f"{type(self).__name__} mode '{mode}' is unknown, fallback to auto "
                          "mode.", stacklevel=3)
            mode = "auto"
        self.monitor, self.mode = monitor, mode
        self.best: float | None = baseline
        self.min_delta = abs(min_delta)
        self.monitor_op: Callable[[Any, Any], Any] | None = None

    def _set_monitor_op(self) -> None:
        if self.mode == "min":
            self.monitor_op = operator.lt
        elif self.mode == "max":
            self.monitor_op = operator.gt
        else:
            name = self.monitor.removeprefix("val_")
            if name == "loss":
                self.monitor_op = operator.lt
            for m in getattr(self.model, "metrics", None) or []:
                direction = getattr(m, "direction", None)
                if m.name == name and direction is not None:
                    self.monitor_op = operator.gt if direction == "up" else operator.lt
            if self.monitor_op is None:
                raise ValueError(
                    f"{type(self).__name__} callback received monitor={self.monitor}, but "
                    "fastnn isn't able to automatically determine whether that metric should "
                    "be maximized or minimized. Pass `mode='max'` in order to monitor based on "
                    "the highest metric value, or pass `mode='min'` in order to use the lowest "
                    "value.")
        if self.monitor_op is operator.lt:
            self.min_delta *= -1

    def _is_improvement(self, value: Any, reference: Any) -> bool:
        if reference is None:
            return True
        return bool(cast("Callable[[Any, Any], Any]", self.monitor_op)(  # set by on_epoch_end
            value - self.min_delta, reference))


class EarlyStopping(MonitorCallback):
    """Stop training when a monitored metric has stopped improving, as Keras' EarlyStopping.

    At the end of every epoch from `start_from_epoch` on, `wait` counts the epochs since the
    last improvement of `monitor` over `best` (see MonitorCallback for mode and min_delta);
    when it reaches `patience` (and the epoch is not the first, epoch 0), training stops and
    `stopped_epoch` is that epoch.  With a `baseline`, an epoch that improves on `best` but
    not on the baseline does not reset `wait`: training stops after `patience` epochs
    without beating the baseline.  A missing monitor warns and the epoch is skipped.

    restore_best_weights=True keeps the weights of the best epoch (the first monitored epoch
    if none improves, e.g. none beats the baseline) and restores them at the end of training,
    also when training ran all its epochs or another callback stopped it (as Keras 3 does).

    Args:
        monitor: quantity to be monitored (default "val_loss").
        min_delta: minimum change that counts as an improvement (default 0).
        patience: epochs without improvement before stopping (default 0).
        verbose: 0 (default) or 1: print when stopping and restoring.
        mode: "auto" (default), "min" or "max".
        baseline: a value the monitored quantity must beat (default None).
        restore_best_weights: default False.
        start_from_epoch: epochs of warm-up that are not monitored (default 0).
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0, patience: int = 0,
                 verbose: int = 0, mode: str = "auto", baseline: float | None = None,
                 restore_best_weights: bool = False, start_from_epoch: int = 0) -> None:
        super().__init__(monitor, mode, min_delta=min_delta)
        self.patience, self.verbose, self.baseline = patience, verbose, baseline
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
        self.restore_best_weights = restore_best_weights
        self.best_weights: list[NDArray[Any]] | None = None
        self.start_from_epoch = start_from_epoch

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        # instances may be re-used across fit() calls
        self.wait, self.stopped_epoch, self.best_epoch = 0, 0, 0
        self.best, self.best_weights = None, None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.monitor_op is None:
            self._set_monitor_op()
        current = self.get_monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            # the first monitored epoch is the best until one improves on it
            self.best_weights, self.best_epoch = self.model.get_weights(), epoch
        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            # restart the wait only when beating both the baseline and the previous best
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print("Restoring model weights from the end of the best epoch: "
                      f"{self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)

    def get_monitor_value(self, logs: dict[str, Any] | None) -> Any:
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            warnings.warn(f"Early stopping conditioned on metric `{self.monitor}` which is not "
                          f"available. Available metrics are: {','.join(logs)}", stacklevel=3)
        return value


class ReduceLROnPlateau(MonitorCallback):
    """Reduce the learning rate when a metric has stopped improving, as Keras'.

    At the end of every epoch the current learning rate is logged as `learning_rate`; then,
    outside the `cooldown` epochs that follow a reduction, `wait` counts the epochs without
    improvement of `monitor` (see MonitorCallback; here min_delta defaults to 1e-4) and at
    `patience` the rate becomes max(lr * factor, min_lr) if lr > float32(min_lr) (Keras
    compares in float32), `wait` restarts and the cooldown begins.

    Args:
        monitor: default "val_loss".
        factor: new_lr = lr * factor; below 1.0 (default 0.1), else ValueError.
        patience: epochs without improvement before a reduction (default 10).
        verbose: 0 (default) or 1: print every reduction.
        mode: "auto" (default), "min" or "max".
        min_delta: threshold of an improvement (default 1e-4).
        cooldown: epochs after a reduction during which `wait` stays 0 (default 0).
        min_lr: lower bound of the learning rate (default 0.0).

    An optimizer built on a learning-rate schedule has no settable rate: the first
    reduction raises TypeError, as in Keras.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 verbose: int = 0, mode: str = "auto", min_delta: float = 1e-4,
                 cooldown: int = 0, min_lr: float = 0.0) -> None:
        super().__init__(monitor, mode, min_delta=min_delta)
        if factor >= 1.0:
            raise ValueError("ReduceLROnPlateau does not support a factor >= 1.0. "
                             f"Received factor={factor}")
        self.factor, self.min_lr, self.patience = factor, min_lr, patience
        self.verbose, self.cooldown = verbose, cooldown
        self.cooldown_counter, self.wait = 0, 0

    def _reset(self) -> None:
        self.best, self.cooldown_counter, self.wait = None, 0, 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._reset()

    def in_cooldown(self) -> bool:
        return self.cooldown_counter > 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.monitor_op is None:
            self._set_monitor_op()
        logs = logs if logs is not None else {}
        opt = self.model.optimizer
        logs["learning_rate"] = float(opt.learning_rate)
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"Learning rate reduction is conditioned on metric `{self.monitor}` "
                          f"which is not available. Available metrics are: {','.join(logs)}.",
                          stacklevel=3)
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best, self.wait = current, 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                old_lr = float(opt.learning_rate)
                if old_lr > np.float32(self.min_lr):
                    new_lr = max(old_lr * self.factor, self.min_lr)
                    opt.learning_rate = new_lr  # (TypeError on a schedule)
                    if self.verbose > 0:
                        print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate "
                              f"to {new_lr}.")
                    self.cooldown_counter, self.wait = self.cooldown, 0


class ModelCheckpoint(MonitorCallback):
    """Save the model (or only its weights) during fit, as Keras' ModelCheckpoint.

    Args:
        filepath: str or os.PathLike; may hold `{epoch:02d}`, `{batch}` (with an int
            save_freq) and log keys, e.g. "ckpt-{epoch:02d}-{val_loss:.2f}.keras" (a key
            missing from the logs raises KeyError).  Missing directories are created.  As
            Keras: with save_weights_only=True it must end in ".weights.h5", else in
            ".keras" (ValueError otherwise); fastnn also takes its own ".fastnn" in both
            cases, and refuses Keras' legacy ".h5" (it writes no HDF5 model files).
        monitor: the logged quantity save_best_only compares (default "val_loss").
        verbose: 0 (default) or 1: print every decision.
        save_best_only: save only when `monitor` improves on the best so far (default False);
            a missing monitor warns and saves anyway, as Keras.
        save_weights_only: model.save_weights instead of model.save (default False).
        mode: "auto" (default), "min" or "max" (see MonitorCallback).
        save_freq: "epoch" (default: at every epoch's end) or an int: every that many
            training batches (counted across epochs).
        initial_value_threshold: the initial best value for save_best_only (default None).

    Every file is written atomically (a crash mid-save leaves the previous one whole).
    """

    def __init__(self, filepath: str | os.PathLike[str], monitor: str = "val_loss",
                 verbose: int = 0, save_best_only: bool = False, save_weights_only: bool = False,
                 mode: str = "auto", save_freq: str | int = "epoch",
                 initial_value_threshold: float | None = None) -> None:
        super().__init__(monitor, mode, initial_value_threshold)
        self.verbose, self.filepath = verbose, os.fspath(filepath)
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self.save_freq = save_freq
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen: int | None = None
        self._current_epoch = 0
        if save_freq != "epoch" and not isinstance(save_freq, int):
            raise ValueError(f"Unrecognized save_freq: {save_freq}. Expected save_freq are "
                             "'epoch' or integer values")
        if save_weights_only:
            if not self.filepath.endswith((".weights.h5", ".fastnn")):
                raise ValueError("When using `save_weights_only=True` in `ModelCheckpoint`, the "
                                 "filepath provided must end in `.weights.h5` (Keras weights "
                                 "format) or `.fastnn`. Received: filepath=" + self.filepath)
        elif not self.filepath.endswith((".keras", ".fastnn")):
            raise ValueError("The filepath provided must end in `.keras` (Keras model format) "
                             "or `.fastnn` (fastnn's). Received: filepath=" + self.filepath)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._current_epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if _count_batches(self, batch):
            self._save_model(self._current_epoch, batch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.monitor_op is None:
            self._set_monitor_op()
        if self.save_freq == "epoch":
            self._save_model(epoch, None, logs)

    def _should_save_model(self, epoch: int, logs: dict[str, Any], filepath: str) -> bool:
        if not self.save_best_only:
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: saving model to {filepath}")
            return True
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"Can save best model only with {self.monitor} available.",
                          stacklevel=4)
            return True
        best = "None" if self.best is None else f"{self.best:.5f}"
        if self._is_improvement(current, self.best):
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {best} to "
                      f"{current:.5f}, saving model to {filepath}")
            self.best = current
            return True
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {best}")
        return False

    def _save_model(self, epoch: int, batch: int | None, logs: dict[str, Any] | None) -> None:
        logs = logs or {}
        try:
            if batch is None or "batch" in logs:
                filepath = self.filepath.format(epoch=epoch + 1, **logs)
            else:
                filepath = self.filepath.format(epoch=epoch + 1, batch=batch + 1, **logs)
        except KeyError as e:
            raise KeyError(f'Failed to format this callback filepath: "{self.filepath}". '
                           f"Reason: {e}") from e
        if not self._should_save_model(epoch, logs, filepath):
            return
        if os.path.isdir(filepath):
            raise OSError("Please specify a non-directory filepath for ModelCheckpoint. "
                          f"Filepath used is an existing directory: {filepath}")
        dirname = os.path.dirname(filepath)
        if dirname:
            os.makedirs(dirname, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(filepath)
        else:
            self.model.save(filepath)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: finished saving model to {filepath}")


def _count_batches(cb: ModelCheckpoint | BackupAndRestore, batch: int) -> bool:
    """Whether an int save_freq's count of training batches is reached at `batch` (Keras'
    count: a batch index not above the last one seen starts a new epoch)."""
    if cb.save_freq == "epoch":
        return False
    last = cb._last_batch_seen
    cb._batches_seen_since_last_saving += batch + 1 if last is None or batch <= last \
        else batch - last
    cb._last_batch_seen = batch
    if cb._batches_seen_since_last_saving >= cast(int, cb.save_freq):
        cb._batches_seen_since_last_saving = 0
        return True
    return False


def _generators(model: Sequential) -> list[np.random.Generator]:
    """The random generators a fit draws from: the model's (shuffling), then each layer's
    own (dropout masks), in layer order."""
    return [model._rng] + [g for l in model._leaves()
                           if isinstance(g := getattr(l, "rng", None), np.random.Generator)]


class BackupAndRestore(Callback):
    """Back up the training state and restore it after an interruption, as Keras'.

    At the end of every epoch (or every `save_freq` training batches) the model's weights,
    its optimizer's state, step count and learning rate, the epoch count and the state of
    the model's random generators (shuffling, dropout) are written to one file,
    `backup_dir/latest.fastnn`, atomically: a crash while writing leaves the previous backup
    whole.  At the start of the next fit, if that file exists, all of it is restored and
    training continues from the epoch after the last backed-up one (the backed-up epoch
    count replaces fit's initial_epoch, as Keras' `model._initial_epoch`): with
    save_freq="epoch", a fit interrupted and resumed ends with exactly the weights of an
    uninterrupted one.  As in Keras, a backup taken mid-epoch (int save_freq) restores that
    epoch's mid-way weights and runs the whole epoch again.  At the successful end of fit
    the backup directory is removed (delete_checkpoint=True), as Keras does.

    Args:
        backup_dir: the directory of the backup (not to be shared with other callbacks or
            runs); an empty one raises ValueError.
        save_freq: "epoch" (default) or an int: every that many training batches.
        double_checkpoint: keep the previous backup too (`latest.fastnn.bkp`) and restore
            it if the latest cannot be read (default False).
        delete_checkpoint: remove backup_dir at the end of a successful fit (default True).

    The model must be the one that was backed up (same layers, compiled with the same
    optimizer class); a model whose learning rate is a plain callable cannot be backed up.
    In a distributed fit, rank 0 writes and removes the backup and every rank restores it.
    """

    def __init__(self, backup_dir: str | os.PathLike[str], save_freq: str | int = "epoch",
                 double_checkpoint: bool = False, delete_checkpoint: bool = True) -> None:
        super().__init__()
        self.save_freq, self.double_checkpoint = save_freq, double_checkpoint
        self.delete_checkpoint = delete_checkpoint
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen: int | None = 0
        self._current_epoch = 0
        if not backup_dir:
            raise ValueError("Empty `backup_dir` argument passed")
        self.backup_dir = os.fspath(backup_dir)
        self._path = os.path.join(self.backup_dir, "latest.fastnn")
        self._prev_path = self._path + ".bkp"
        if save_freq != "epoch" and not isinstance(save_freq, int):
            raise ValueError("Invalid value for argument `save_freq`. Received: "
                             f"save_freq={save_freq}. Expected either 'epoch' or an integer "
                             "value.")

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        try:
            self._load_model()
        except (OSError, saving.FileFormatError):
            if not os.path.exists(self._prev_path):
                raise
            self._load_model(self._prev_path)

    def _load_model(self, path: str | None = None) -> None:
        path = path or self._path
        if not os.path.exists(path):
            return
        generators = _generators(self.model)

        def check(state: Any) -> dict[str, Any]:
            """The backed-up state, checked (the generators' states on new generators)."""
            where = f"{path!r}: training_state"
            if not isinstance(state, dict) or type(state.get("epoch")) is not int \
                    or state["epoch"] < 0 or not isinstance(state.get("generators"), list) \
                    or len(state["generators"]) != len(generators):
                raise saving.FileFormatError(
                    f"{where}: Expected {{'epoch': an int >= 0, 'generators': a list of "
                    f"{len(generators)} generator states}}. Received: {_files.short(state)}")
            for g, s in zip(generators, state["generators"]):
                try:
                    type(g.bit_generator)().state = s
                except (TypeError, ValueError, KeyError, OverflowError) as e:
                    raise saving.FileFormatError(f"{where}: invalid generator state: {e}") from e
            return cast("dict[str, Any]", state)

        state = saving.load_training_state(self.model, path, check)
        for g, s in zip(generators, state["generators"]):
            g.bit_generator.state = s
        self._current_epoch = state["epoch"]
        self.model._initial_epoch = state["epoch"]

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._current_epoch = epoch  # (Keras keeps the count of the last epoch_end only)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._current_epoch, self._last_batch_seen = epoch + 1, 0
        if self.save_freq == "epoch":
            self._save_model()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if _count_batches(self, batch):
            self._save_model()

    def _save_model(self) -> None:
        if not distribution.is_primary():
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        if self.double_checkpoint and os.path.exists(self._path):
            with open(self._path, "rb") as src:  # a whole copy or none
                _files.write_atomic(self._prev_path, lambda f: shutil.copyfileobj(src, f))
        state = {"epoch": self._current_epoch, "batch": self._last_batch_seen,
                 "generators": [g.bit_generator.state for g in _generators(self.model)]}
        saving.save_model(self.model, self._path, training_state=state)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.delete_checkpoint and distribution.is_primary() \
                and os.path.exists(self.backup_dir):
            shutil.rmtree(self.backup_dir)


class TerminateOnNaN(Callback):
    """Terminates training when a batch's loss is NaN or infinite, as Keras' TerminateOnNaN.

    raise_error=False (the default): prints "Batch {batch}: Invalid loss, terminating
    training" and stops gracefully (model.stop_training; on_train_end still runs).
    raise_error=True: raises RuntimeError at once, so no on_train_end runs (e.g. a
    BackupAndRestore keeps its backup), as Keras."""

    def __init__(self, raise_error: bool = False) -> None:
        super().__init__()
        self.raise_error = raise_error

    def on_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and (np.isnan(loss) or np.isinf(loss)):
            if self.raise_error:
                raise RuntimeError(f"NaN or Inf loss encountered at batch {batch}. Loss value: "
                                   f"{loss}. Terminating training immediately.")
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
    """A callback from plain functions, as Keras' LambdaCallback.

    Args:
        on_epoch_begin, on_epoch_end: called as f(epoch, logs).
        on_train_begin, on_train_end: called as f(logs).
        on_train_batch_begin, on_train_batch_end: called as f(batch, logs=logs).
        **kwargs: any other hook by its name, e.g. on_test_end=f or on_batch_end=f (called
            with that hook's arguments); as in Keras every keyword becomes an attribute of
            the callback, whatever its name.
    Each defaults to None (the hook does nothing).
    """

    def __init__(self, on_epoch_begin: Callable[..., Any] | None = None,
                 on_epoch_end: Callable[..., Any] | None = None,
                 on_train_begin: Callable[..., Any] | None = None,
                 on_train_end: Callable[..., Any] | None = None,
                 on_train_batch_begin: Callable[..., Any] | None = None,
                 on_train_batch_end: Callable[..., Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__()
        self.__dict__.update(kwargs)
        for name, f in (("on_epoch_begin", on_epoch_begin), ("on_epoch_end", on_epoch_end),
                        ("on_train_begin", on_train_begin), ("on_train_end", on_train_end),
                        ("on_train_batch_begin", on_train_batch_begin),
                        ("on_train_batch_end", on_train_batch_end)):
            if f is not None:
                setattr(self, name, f)


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of every epoch, as Keras' LearningRateScheduler:
    lr = schedule(epoch, lr) with the current rate (epoch from 0), or schedule(epoch) if that
    call raises TypeError.  The result must be a float (Python, np.float32 or np.float64;
    an int too is refused with ValueError, as Keras).  At every epoch's end the rate is
    logged as `learning_rate`.  An optimizer built on a learning-rate schedule has no
    settable rate: TypeError, as Keras.  verbose: 0 (default) or 1: print every change."""

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        opt = self.model.optimizer
        try:
            lr = self.schedule(epoch, float(opt.learning_rate))
        except TypeError:  # the schedule(epoch) form
            lr = self.schedule(epoch)
        if not isinstance(lr, (float, np.float32, np.float64)):
            raise ValueError(f"The output of the `schedule` function should be a float. Got: {lr}")
        opt.learning_rate = float(lr)  # (TypeError on a schedule, as Keras)
        if self.verbose > 0:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class ProgbarLogger(Callback):
    """Prints the progress bar and metrics of fit, evaluate and predict, as Keras'
    ProgbarLogger: fit, evaluate and predict add one when verbose != 0 (unless the callbacks
    hold one).  params["verbose"]: 1 draws a bar (redrawn while on a terminal), 2 one line
    per epoch; "Epoch i/n" heads each epoch when n > 1 (as Keras: none for epochs=1).  In
    fit, the validation run's test hooks draw nothing (the epoch's line shows val_ keys)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen, self.verbose, self.epochs = 0, 1, 1
        self.target: int | None = None
        self.progbar: Progbar | None = None
        self._called_in_fit = False

    def set_params(self, params: dict[str, Any]) -> None:
        super().set_params(params)
        verbose = params["verbose"]
        self.verbose = 1 if verbose == "auto" else verbose
        self.epochs, self.target = params["epochs"], params["steps"]

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._called_in_fit = True

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        if not self._called_in_fit:
            self._reset_progbar()

    def on_predict_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._reset_progbar()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._reset_progbar()
        if self.verbose and self.epochs > 1:
            print(f"Epoch {epoch + 1}/{self.epochs}")

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._update_progbar(batch, logs)

    def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if not self._called_in_fit:
            self._update_progbar(batch, logs)

    def on_predict_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._update_progbar(batch, None)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._finalize_progbar(logs)

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        if not self._called_in_fit:
            self._finalize_progbar(logs)

    def on_predict_end(self, logs: dict[str, Any] | None = None) -> None:
        self._finalize_progbar(logs)

    def _reset_progbar(self) -> None:  # a new bar: its clock starts now
        self.seen, self.progbar = 0, None
        self._bar()

    def _bar(self) -> Progbar:
        if self.progbar is None:
            self.progbar = Progbar(cast(int, self.target), self.verbose)  # (fit's steps)
        return self.progbar

    def _update_progbar(self, batch: int, logs: dict[str, Any] | None) -> None:
        self.seen = batch + 1
        if self.verbose == 1:
            self._bar().update(self.seen, lambda: logs or {})

    def _finalize_progbar(self, logs: dict[str, Any] | None) -> None:
        bar = self._bar()
        if self.target is None:
            self.target = bar.steps = self.seen
        bar.update(self.target, lambda: logs or {}, final=True)


def _as_callbacks(callbacks: Any) -> list[Callback]:
    """None, a Callback or a list/tuple of them, as a list; TypeError for anything else."""
    cbs = [] if callbacks is None else [callbacks] if isinstance(callbacks, Callback) \
        else list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
    for cb in cbs:
        if not isinstance(cb, Callback):
            raise TypeError("Expected callbacks to be a list of fastnn.callbacks.Callback. "
                            f"Received: {cb!r} ({type(cb).__name__})")
    return cbs


def _logs(logs: dict[str, Any] | None) -> dict[str, Any]:
    """A hook's logs as Keras passes them: a new dict, keys sorted (one dict for all)."""
    return {k: logs[k] for k in sorted(logs)} if logs else {}


class CallbackList(Callback):
    """Calls a list of callbacks in order, as Keras' CallbackList (itself a Callback).

    Args:
        callbacks: a Callback or a list of them (default None).
        add_history: append a History unless the list holds one (default False).
        add_progbar: append a ProgbarLogger unless the list holds one (default False).
        model: the model, given to every callback (and model.history set to the list's
            History) (default None).
        **params: given to every callback (set_params), e.g. verbose=1, epochs=10,
            steps=100.

    Every hook is called on every callback in list order with one dict of logs (a copy of
    the caller's, keys sorted, as Keras), so a callback that adds a key (e.g.
    LearningRateScheduler's `learning_rate`) shows it to those after it.
    `uses_batch_hooks(mode)` tells a loop whether it needs to call the per-batch hooks.
    """

    def __init__(self, callbacks: Callback | Sequence[Callback] | None = None,
                 add_history: bool = False, add_progbar: bool = False,
                 model: Sequential | None = None, **params: Any) -> None:
        super().__init__()
        self.callbacks = _as_callbacks(callbacks)
        self._history = next((cb for cb in self.callbacks if isinstance(cb, History)), None)
        self._progbar = next((cb for cb in self.callbacks if isinstance(cb, ProgbarLogger)),
                             None)
        if self._history is None and add_history:
            self._history = History()
            self.callbacks.append(self._history)
        if self._progbar is None and add_progbar:
            self._progbar = ProgbarLogger()
            self.callbacks.append(self._progbar)
        if model is not None:
            self.set_model(model)
        self.set_params(params)

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params
        if params:
            for cb in self.callbacks:
                cb.set_params(params)

    def set_model(self, model: Sequential) -> None:
        self.model = model
        if self._history is not None:
            model.history = self._history
        for cb in self.callbacks:
            cb.set_model(model)

    def uses_batch_hooks(self, mode: str = "train") -> bool:
        """Whether a callback overrides a per-batch hook of mode: "train", "test", "predict"."""
        return any(uses_batch_hooks(cb, mode) for cb in self.callbacks)

    def needs_every_batch(self, mode: str = "train") -> bool:
        """Whether a callback's per-batch hooks of mode must run after every batch (any but
        the progress bar's: needs_every_batch)."""
        return any(needs_every_batch(cb, mode) for cb in self.callbacks)

    def on_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        logs = _logs(logs)
        for cb in self.callbacks:
            cb.on_batch_begin(batch, logs=logs)

    def on_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        logs = _logs(logs)
        for cb in self.callbacks:
            cb.on_batch_end(batch, logs=logs)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = _logs(logs)
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = _logs(logs)
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        logs = _logs(logs)
        for cb in self.callbacks:
            cb.on_train_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        logs = _logs(logs)
        for cb in self.callbacks:
            cb.on_train_batch_end(batch, logs=logs)

    def on_test_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        logs = _logs(logs)
        for cb in self.callbacks:
            cb.on_test_batch_begin(batch, logs=logs)

    def on_test_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        logs = _logs(logs)
        for cb in self.callbacks:
            cb.on_test_batch_end(batch, logs=logs)

    def on_predict_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        logs = _logs(logs)
        for cb in self.callbacks:
            cb.on_predict_batch_begin(batch, logs=logs)

    def on_predict_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        logs = _logs(logs)
        for cb in self.callbacks:
            cb.on_predict_batch_end(batch, logs=logs)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        logs = _logs(logs)
        for cb in self.callbacks:
            cb.on_train_begin(logs)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        logs = _logs(logs)
        for cb in self.callbacks:
            cb.on_train_end(logs)

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        logs = _logs(logs)
        for cb in self.callbacks:
            cb.on_test_begin(logs)

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        logs = _logs(logs)
        for cb in self.callbacks:
            cb.on_test_end(logs)

    def on_predict_begin(self, logs: dict[str, Any] | None = None) -> None:
        logs = _logs(logs)
        for cb in self.callbacks:
            cb.on_predict_begin(logs)

    def on_predict_end(self, logs: dict[str, Any] | None = None) -> None:
        logs = _logs(logs)
        for cb in self.callbacks:
            cb.on_predict_end(logs)


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
