"""Training, evaluation and prediction, named as in Keras: `Trainer` is the base class that
gives a model compile, fit, evaluate, predict, train_on_batch, test_on_batch and
predict_on_batch, as `keras.Model` gets them from Keras' Trainer.  The model built on it
provides `_leaves()` (the layers a step runs, in order), `_stale()`, `build(input_shape)`,
`built`, `input_shape`, `output_shape`, and sets, when built, the attributes Trainer.__init__ declares
(its sample shape, random generator and parameter buffers).  What one training step does is
fastnn/_step.py's; this module never imports models.py.
"""
from __future__ import annotations

import copy
import math
import threading
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence, cast, overload

import numpy as np

from fastnn import _data, _step, distribution
from fastnn import callbacks as callbacks_module
from fastnn import losses, metrics as metrics_module, optimizers, utils

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

    from fastnn.layers import Layer
    from fastnn.models import Sequential


class Trainer:
    """compile / fit / evaluate / predict / train_on_batch for a model (see the module)."""

    # provided by the model class (Sequential): whether its layers are built, and the
    # layers a step runs, in order (`_leaves()`)
    built: bool
    if TYPE_CHECKING:
        def _leaves(self) -> list[Layer]:
            """The model's layers, nested models' layers in their place."""

        def _stale(self) -> bool:
            """Whether the built model must be built again (a nested model changed)."""

        def build(self, input_shape: Sequence[int | None] | None = None) -> None:
            """Create the weights (the model's)."""

        @property
        def output_shape(self) -> tuple[int | None, ...] | None:
            """(None, *the output shape of one sample) once built, else None (the model's)."""

    # None until compile(), which every use of them follows
    optimizer: optimizers.Optimizer
    loss: losses.Loss

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self.optimizer = self.loss = None  # type: ignore[assignment]
        self.compiled = False
        self.metrics: list[metrics_module.Metric] = []
        self.stop_training = False
        self.history: callbacks_module.History | None = None
        self.jit_compile: bool | str = "auto"
        self._metric_ids: list[str | metrics_module.Metric] = []
        # set by the model: the shape of one sample, the generator of its initialisation,
        # shuffling and dropout, and its parameter buffers (see _step.pack_parameters)
        self._input_shape: tuple[int, ...] | None = None
        self._rng = utils.new_rng(seed)
        self._params: list[NDArray[Any]]
        self._grads: list[NDArray[Any]]
        self._frozen: list[NDArray[Any]]  # the non-trainable weights
        self._params, self._grads, self._frozen = [], [], []
        self._packed_for: list[list[bool]] | None = None  # each layer's weight_trainable()
        self._trainer: _step.TrainStep | None = None
        self._lock = threading.Lock()  # held by fit and train_on_batch

    def __getstate__(self) -> dict[str, Any]:
        """What pickle and deepcopy copy: everything but the lock and the training step
        (made again on first use)."""
        state = self.__dict__.copy()
        state["_lock"], state["_trainer"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def compile(self, optimizer: str | optimizers.Optimizer = "rmsprop",
                loss: str | losses.Loss | type[losses.Loss] | Callable[..., Any] | None = None,
                metrics: Sequence[str | metrics_module.Metric] | None = None,
                jit_compile: bool | str = "auto") -> None:
        """Set the optimizer (name or instance), loss (name or instance) and metrics.

        optimizer: a name ("sgd", "adagrad", "rmsprop", "adam", "adamw", "nadam") or a
        `fastnn.optimizers.Optimizer`; default "rmsprop" (with its default hyper-parameters).
        loss: a name (e.g. "categorical_crossentropy") or a `fastnn.losses.Loss`; required
        (the default None is refused with a ValueError).
        metrics: a list of metric names (e.g. ["accuracy"]) or `fastnn.metrics.Metric`s;
        default None (no metrics).
        jit_compile: "auto" (the default) or True runs a stack of Dense layers as one compiled
        call per step (see fastnn/_step.py); False runs every step layer by layer."""
        self.optimizer = optimizers.get(optimizer)
        if loss is None:
            raise ValueError("Expected a loss, e.g. loss='categorical_crossentropy'. Received: None")
        self.loss = losses.get(loss)
        if metrics is None:
            metrics = []
        if isinstance(metrics, (str, metrics_module.Metric)):
            raise TypeError(f"Expected metrics to be a list. Received: metrics={metrics!r}; "
                            f"write metrics=[{metrics!r}]")
        self._metric_ids = list(metrics)
        for m in self._metric_ids:  # validate names now, resolve against shapes at fit time
            metrics_module.get(m, self.loss, None)
        if jit_compile not in ("auto", True, False):
            raise ValueError(f"Expected jit_compile in ('auto', True, False). "
                             f"Received: jit_compile={jit_compile!r}")
        self.jit_compile = jit_compile
        self.compiled = True
        self.metrics = []
        self._trainer = None
        if self.built and self._packed_for != [l.weight_trainable() for l in self._leaves()]:
            self._pack_weights()  # `trainable` changed since: as Keras, compile applies it

    def _pack_weights(self) -> None:
        """One flat parameter buffer, trainable weights first; the layers keep views (see
        _step.pack_parameters).  The optimizer's state starts afresh."""
        self._params, self._grads, self._frozen = _step.pack_parameters(self._leaves(), self._rng)
        self._packed_for = [l.weight_trainable() for l in self._leaves()]
        self._trainer = None
        if self.optimizer is not None:
            self.optimizer.state = None

    def get_compile_config(self) -> dict[str, Any] | None:
        """The compile() arguments as plain data (loss config, metric names), or None."""
        if not self.compiled:
            return None
        return {"loss": self.loss.get_config(),
                "metrics": [m if isinstance(m, str) else m.name for m in self._metric_ids]}

    def build_optimizer(self) -> list[NDArray[Any]]:
        """Create the optimizer's state for this model's parameters now (the first training
        step does it otherwise), e.g. to load saved optimizer variables into it.  Returns
        `optimizer.variables`."""
        self._require_compiled("build_optimizer")
        if not self.built:
            raise ValueError("Expected a built model before build_optimizer. Build it first.")
        self.optimizer.build(self._params)
        return self.optimizer.variables

    @property
    def trainer(self) -> _step.TrainStep:
        """fastnn's training step for this model (fastnn/_step.py `TrainStep`), e.g.
        `model.trainer.compiled_step(model.optimizer, x, y, batch_size)`."""
        self._require_compiled("trainer")
        if self._trainer is None or self._trainer.stale():  # (stale: an activation was set)
            if not self.built:
                self.build()
            self._trainer = _step.TrainStep(self._leaves(), self.loss, self._params, self._grads,
                                            self.jit_compile)
            # the trainable variables by Keras' names ("dense/kernel"), for clipnorm and
            # exclude_from_weight_decay
            self.optimizer.set_variables(
                [(f"{l.name}/{spec.name}", w) for l in self._leaves()
                 for w, spec, t in zip(l.weights, l.weight_specs, l.weight_trainable()) if t],
                self._params)
        return self._trainer

    def _resolve_metrics(self) -> None:
        n_out = self._leaves()[-1].output_shape[-1]
        self.metrics = [metrics_module.get(m, self.loss, n_out) for m in self._metric_ids]


    def _prepare_x(self, x: Any, name: str = "x") -> NDArray[Any]:
        """Validate and convert inputs once: a C-contiguous float array of the model's dtype
        (an unbuilt model is built for their shape)."""
        x = _data.as_samples(x, name)
        leaves = self._leaves()
        if not leaves:
            raise ValueError("Expected a model with at least one layer. Received: an empty model")
        if self.built and self._stale():
            self.built = False  # (the weights stay; they move to a new buffer)
        if not self.built:  # built for x's samples; a refused x leaves the model as it was
            inferred = self._input_shape is None
            try:
                self.build((None, *x.shape[1:]) if inferred else None)
            except Exception:
                self._input_shape = None if inferred else self._input_shape
                raise
        dtype = leaves[0].dtype
        sample_shape = cast("tuple[int, ...]", self._input_shape)  # a built model's
        return _data.conform_samples(x, sample_shape, dtype, name)

    def _prepare_xy(self, x: Any, y: Any,
                    name: str = "x") -> tuple[NDArray[Any], NDArray[Any]]:
        x = self._prepare_x(x, name)
        output_shape = cast("tuple[int, ...]", self.output_shape)  # built by _prepare_x
        return x, _data.as_targets(y, len(x), self.loss, output_shape[-1], x.dtype, name)

    def _require_compiled(self, what: str) -> None:
        if not self.compiled:
            raise RuntimeError(f"You must call compile() before {what}().")

    # (return_dict=True: a dict; else a float or a list, by the metrics compiled: Any)
    @overload
    def train_on_batch(self, x: ArrayLike, y: ArrayLike, *,
                       return_dict: Literal[True]) -> dict[str, float]: ...
    @overload
    def train_on_batch(self, x: ArrayLike, y: ArrayLike, return_dict: bool = False) -> Any: ...

    def train_on_batch(self, x: ArrayLike, y: ArrayLike, return_dict: bool = False
                       ) -> float | list[float] | dict[str, float]:
        """One optimizer step on (x, y); returns the loss (and metrics) on that batch: a float
        without metrics, else [loss, *metrics]; a dict with return_dict=True (default False)."""
        self._require_compiled("train_on_batch")
        x, t = self._prepare_xy(x, y)
        if not self.metrics:
            self._resolve_metrics()
        for m in self.metrics:
            m.reset_state()
        with self.trainer.running(self._lock, x, t):  # the step fit takes, distributed or not
            value = self._train_batch(self.trainer, x, t, np.arange(len(x), dtype=np.int64),
                                      _data.metric_targets(self.metrics, t))
        logs = {"loss": value, **{m.name: m.result() for m in self.metrics}}
        return _data.format_logs(logs, return_dict)


    def fit(self, x: ArrayLike | None = None, y: ArrayLike | None = None,
            batch_size: int | None = None, epochs: int = 1, verbose: int | str = "auto",
            callbacks: callbacks_module.Callback | Sequence[callbacks_module.Callback] | None
            = None, validation_split: float = 0.0,
            validation_data: tuple[ArrayLike, ArrayLike] | None = None, shuffle: bool = True,
            initial_epoch: int = 0) -> callbacks_module.History:
        """Train for `epochs` epochs of mini-batch steps; returns a History.

        Args:
            x, y: the samples (batch, ...) and their targets, arrays or nested lists.
            batch_size: samples per step; defaults to 32 (None means 32, as in Keras).
                batch_size=1 is true SGD, batch_size=len(x) (or more: Keras clamps it)
                full-batch gradient descent.
            epochs: passes over the data (default 1); training runs epochs initial_epoch
                to epochs - 1.
            verbose: "auto" (the default, same as 1), 0 (silent), 1 (progress bar) or 2
                (one line per epoch).
            callbacks: a `fastnn.callbacks.Callback` or a list of them (default None).
            validation_split: the last fraction of the samples (before shuffling) held
                out for validation, in [0, 1) (default 0.0: none).
            validation_data: (x_val, y_val) to evaluate at the end of every epoch;
                overrides validation_split (default None).
            shuffle: shuffle the samples before every epoch (default True).
            initial_epoch: the epoch to start at, e.g. to resume a run (default 0).

        Ctrl-C finishes the step in progress, then KeyboardInterrupt propagates, as in Keras:
        the model keeps the weights and optimizer state of the last completed step and
        model.history the finished epochs.
        """
        self._require_compiled("fit")
        batch_size = 32 if batch_size is None else batch_size
        _data.check_int("epochs", epochs, 0)
        _data.check_int("initial_epoch", initial_epoch, 0)
        _data.check_int("batch_size", batch_size, 1)
        verbose = _data.check_verbose(verbose)
        _data.check_validation(validation_split, validation_data)
        x, t = self._prepare_xy(x, y)
        val: tuple[NDArray[Any], NDArray[Any]] | None
        if validation_data is not None:
            val = self._prepare_xy(*validation_data, name="x_val")
        else:
            x, t, val = _data.split_validation(x, t, validation_split)
        batch_size = min(batch_size, len(x))  # as Keras: one batch of all samples
        self._resolve_metrics()
        dist = distribution.active()
        if dist is not None:  # rank 0's weights, optimizer state and shuffle on every rank
            distribution.sync_replicas(dist, self._params, self._frozen, self.optimizer, self._rng)
        with self.trainer.running(self._lock, x, t):  # one fit at a time; x, t pinned
            return self._fit_epochs(x, t, val, batch_size, epochs, verbose, callbacks, shuffle,
                                    initial_epoch)

    def _fit_epochs(self, x: NDArray[Any], t: NDArray[Any],
                    val: tuple[NDArray[Any], NDArray[Any]] | None, batch_size: int, epochs: int,
                    verbose: int, callbacks: Any, shuffle: bool,
                    initial_epoch: int) -> callbacks_module.History:
        trainer, n = self.trainer, len(x)
        metric_t = _data.metric_targets(self.metrics, t)
        steps = math.ceil(n / batch_size)
        # as Keras: the callbacks, then History (it sees every key), then a ProgbarLogger
        history = callbacks_module.History()
        cbs = callbacks_module.CallbackList(
            _data.as_list(callbacks) + [history], add_progbar=verbose != 0,
            model=cast("Sequential", self),  # (a Trainer is always a model's base class)
            verbose=verbose, epochs=epochs, steps=steps)
        self.history = history
        self.stop_training = False
        self._initial_epoch: int | None = None  # BackupAndRestore may set it in on_train_begin
        cbs.on_train_begin()
        initial_epoch = self._initial_epoch or initial_epoch
        self._initial_epoch = None
        batch_hooks = cbs.uses_batch_hooks("train")
        logs: dict[str, float] = {}
        loss_sum, seen = 0.0, 0

        def running() -> dict[str, float]:  # the epoch's running means, as Keras logs them
            return {"loss": loss_sum / max(seen, 1), **{m.name: m.result() for m in self.metrics}}
        interrupted = utils.defer_sigint()
        try:
            for epoch in range(initial_epoch, epochs):
                cbs.on_epoch_begin(epoch)
                order = self._rng.permutation(n) if shuffle else np.arange(n)
                for m in self.metrics:
                    m.reset_state()
                loss_sum, seen = 0.0, 0
                for step in range(steps):
                    s, e = step * batch_size, min(n, (step + 1) * batch_size)
                    if batch_hooks:
                        cbs.on_train_batch_begin(step)
                    value = self._train_batch(trainer, x, t, order[s:e], metric_t)
                    loss_sum += value * (e - s)
                    seen += e - s
                    if batch_hooks:
                        cbs.on_train_batch_end(step, {**running(), "loss": float(value)})
                    if interrupted():
                        raise KeyboardInterrupt
                    if self.stop_training:
                        break
                logs = running()
                if val is not None:  # calls the on_test_* hooks, as Keras' fit
                    val_logs = self._evaluate_prepared(*val, batch_size, cbs)
                    logs.update({"val_" + k: v for k, v in val_logs.items()})
                cbs.on_epoch_end(epoch, logs)
                if self.stop_training:
                    break
        except KeyboardInterrupt:  # between steps: the weights of the last finished step
            if verbose:
                print("\nInterrupted: the model keeps the weights of the last completed step.")
            self.stop_training = True
            raise  # as Keras: Ctrl-C leaves fit; model.history holds the finished epochs
        finally:
            interrupted.restore()
            if epochs > 0:  # as Keras: with use_ema, the weights become their moving average
                self.optimizer.finalize_variable_values(self._params)
        cbs.on_train_end(logs)
        return history

    def _train_batch(self, trainer: _step.TrainStep, x: NDArray[Any], t: NDArray[Any],
                     idx: NDArray[Any], metric_t: list[NDArray[Any]]) -> float:
        """One optimizer step on the rows idx of (x, t); the metrics take its predictions.
        Returns the batch's loss.  Distributed, this rank takes its share of the rows, and the
        loss and the metrics are summed over the ranks (the same logs on every rank)."""
        dist = distribution.active()
        rows = idx if dist is None else idx[slice(*dist.shard(len(idx)))]
        before = [m.state() for m in self.metrics] if dist is not None else None
        value, p = trainer.run(self.optimizer, x, t, idx)
        if len(rows):
            for i, (m, mt) in enumerate(zip(self.metrics, metric_t)):
                # (p: this rank's predictions, an array as it has rows)
                m.update(cast("NDArray[Any]", p), trainer.gather(("m", i), mt, rows))
        if dist is not None:
            value = distribution.allreduce_sums(dist, [value], self.metrics, before)[0]
        return float(value)

    def _evaluate_prepared(self, x: NDArray[Any], t: NDArray[Any], batch_size: int,
                           cbs: callbacks_module.CallbackList | None = None) -> dict[str, float]:
        """The mean loss and metrics on prepared (x, t); distributed, each rank takes its shard
        and the sums are reduced over the ranks.  cbs: its on_test_* hooks are called as
        Keras' evaluate calls them (the batch hooks, if any callback has one, batch by batch
        with the running loss and metrics; distributed, of this rank's shard)."""
        # fresh metric objects (empty copies of the instances compiled, which fit updates):
        # evaluate may run in several threads at once, and during fit
        n_out = self._leaves()[-1].output_shape[-1]
        metrics = [metrics_module.get(copy.deepcopy(m), self.loss, n_out) for m in self._metric_ids]
        for m in metrics:
            m.reset_state()
        dist = distribution.active()
        if dist is not None:
            x, t = (a[slice(*dist.shard(len(a)))] for a in (x, t))
        if cbs is not None:
            cbs.on_test_begin()
        self.stop_evaluating = False
        if cbs is None or not cbs.uses_batch_hooks("test"):
            total, n = self.trainer.evaluate(x, t, batch_size, metrics), len(x)
        else:
            total, n = 0.0, 0
            for step, s in enumerate(range(0, len(x), batch_size)):
                e = min(len(x), s + batch_size)
                cbs.on_test_batch_begin(step)
                total += self.trainer.evaluate(x[s:e], t[s:e], batch_size, metrics)
                n = e
                cbs.on_test_batch_end(step, {"loss": total / n,
                                             **{m.name: m.result() for m in metrics}})
                if self.stop_evaluating:
                    break
        if dist is not None:
            total, n = distribution.allreduce_sums(dist, [total, n], metrics)
        logs = {"loss": total / n, **{m.name: m.result() for m in metrics}}
        if cbs is not None:
            cbs.on_test_end(logs)
        return logs

    # (return_dict=True: a dict; else a float or a list, by the metrics compiled: Any)
    @overload
    def evaluate(self, x: ArrayLike | None = None, y: ArrayLike | None = None,
                 batch_size: int | None = None, verbose: int | str = "auto",
                 callbacks: callbacks_module.Callback | Sequence[callbacks_module.Callback]
                 | None = None, *, return_dict: Literal[True]) -> dict[str, float]: ...
    @overload
    def evaluate(self, x: ArrayLike | None = None, y: ArrayLike | None = None,
                 batch_size: int | None = None, verbose: int | str = "auto",
                 callbacks: callbacks_module.Callback | Sequence[callbacks_module.Callback]
                 | None = None, return_dict: bool = False) -> Any: ...

    def evaluate(self, x: ArrayLike | None = None, y: ArrayLike | None = None,
                 batch_size: int | None = None, verbose: int | str = "auto",
                 callbacks: callbacks_module.Callback | Sequence[callbacks_module.Callback]
                 | None = None,
                 return_dict: bool = False) -> float | list[float] | dict[str, float]:
        """The loss (and metrics) on (x, y): a float without metrics, else
        [loss, *metrics]; a dict with return_dict=True (default False).

        batch_size: samples per batch; defaults to 32 (None means 32, as in Keras).
        verbose: "auto" (the default, same as 1), 0 (silent), 1 or 2 (a final line).
        callbacks: a Callback or a list of them (default None): on_test_begin(),
        on_test_batch_begin/end per batch, on_test_end(logs), as in Keras."""
        self._require_compiled("evaluate")
        batch_size = 32 if batch_size is None else batch_size
        _data.check_int("batch_size", batch_size, 1)
        verbose = _data.check_verbose(verbose)
        x, t = self._prepare_xy(x, y)
        cbs = callbacks_module.CallbackList(
            callbacks, add_progbar=verbose != 0, model=cast("Sequential", self),
            verbose=verbose, epochs=1, steps=math.ceil(len(x) / batch_size))
        logs = self._evaluate_prepared(x, t, batch_size, cbs)
        return _data.format_logs(logs, return_dict)

    def predict(self, x: ArrayLike, batch_size: int | None = None,
                verbose: int | str = "auto",
                callbacks: callbacks_module.Callback | Sequence[callbacks_module.Callback]
                | None = None) -> NDArray[Any]:
        """The model's outputs for x, computed batch by batch; a new array.

        batch_size: samples per batch; defaults to 32 (None means 32, as in Keras).
        verbose: "auto" (the default, same as 1), 0 (silent), 1 or 2 (a final line).
        callbacks: a Callback or a list of them (default None): on_predict_begin(),
        on_predict_batch_begin(batch) and on_predict_batch_end(batch, {"outputs": the
        batch's outputs}) per batch, on_predict_end(), as in Keras; a callback setting
        model.stop_predicting = True ends it after that batch (the outputs so far)."""
        batch_size = 32 if batch_size is None else batch_size
        _data.check_int("batch_size", batch_size, 1)
        verbose = _data.check_verbose(verbose)
        x = self._prepare_x(x)
        cbs = callbacks_module.CallbackList(
            callbacks, add_progbar=verbose != 0, model=cast("Sequential", self),
            verbose=verbose, epochs=1, steps=math.ceil(len(x) / batch_size))
        batch_hooks = cbs.uses_batch_hooks("predict")
        self.stop_predicting = False
        cbs.on_predict_begin()
        leaves = self._leaves()
        out: NDArray[Any] = np.empty((len(x), *leaves[-1].output_shape), x.dtype)
        for step, s in enumerate(range(0, len(x), batch_size)):
            e = min(len(x), s + batch_size)
            if batch_hooks:
                cbs.on_predict_batch_begin(step)
            out[s:e] = _step.forward(leaves, x[s:e], training=False)
            if batch_hooks:
                cbs.on_predict_batch_end(step, {"outputs": out[s:e]})
            if self.stop_predicting:
                out = out[:e]
                break
        cbs.on_predict_end()
        return out

    def __call__(self, x: ArrayLike, training: bool = False) -> NDArray[Any]:
        """The outputs for x in one batch; training=True applies dropout (default False)."""
        x = self._prepare_x(x)
        out: NDArray[Any] = _step.forward(self._leaves(), x, training=bool(training)).copy()
        return out

    def predict_on_batch(self, x: ArrayLike) -> NDArray[Any]:
        """The model's outputs for x as one batch (a new array), as Keras."""
        return self(x)

    # (return_dict=True: a dict; else a float or a list, by the metrics compiled: Any)
    @overload
    def test_on_batch(self, x: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None,
                      *, return_dict: Literal[True]) -> dict[str, float]: ...
    @overload
    def test_on_batch(self, x: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None,
                      return_dict: bool = False) -> Any: ...

    def test_on_batch(self, x: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None,
                      return_dict: bool = False) -> float | list[float] | dict[str, float]:
        """The loss (and metrics) on (x, y) as one batch, as evaluate returns them (metrics of
        this batch alone, as Keras'): a float without metrics, else [loss, *metrics]; a dict
        with return_dict=True (default False).  sample_weight: not supported by this fastnn's
        evaluation yet (NotImplementedError unless None)."""
        self._require_compiled("test_on_batch")
        if sample_weight is not None:
            raise NotImplementedError("test_on_batch(sample_weight=...) is not supported: "
                                      "fastnn's evaluation takes no sample weights yet.")
        x, t = self._prepare_xy(x, y)
        return _data.format_logs(self._evaluate_prepared(x, t, len(x)), return_dict)
