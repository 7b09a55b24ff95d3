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
import itertools
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Sequence, cast, overload

import numpy as np

from fastnn import _batches, _data, _step, distribution
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
        self._weighted_ids: list[str | metrics_module.Metric] = []
        self._weighted: list[bool] = []   # per metric of self.metrics: takes sample weights
        self._metric_names: list[str] = []  # per metric: its name in the logs
        self.loss_weights: Any = None
        self.run_eagerly = False
        self.steps_per_execution = 1
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
                loss_weights: Any = None,
                metrics: Sequence[str | metrics_module.Metric] | None = None,
                weighted_metrics: Sequence[str | metrics_module.Metric] | None = None,
                run_eagerly: bool = False, steps_per_execution: int = 1,
                jit_compile: bool | str = "auto", auto_scale_loss: bool = True) -> None:
        """Set the optimizer (name or instance), loss (name or instance) and metrics, with
        Keras' arguments in Keras' order.

        optimizer: a name ("sgd", "adagrad", "rmsprop", "adam", "adamw", "nadam") or a
        `fastnn.optimizers.Optimizer`; default "rmsprop" (with its default hyper-parameters).
        loss: a name (e.g. "categorical_crossentropy") or a `fastnn.losses.Loss`; required
        (the default None is refused with a ValueError).
        loss_weights: None, or for fastnn's single-output models a number (the loss times it),
            or a list of one number.
        metrics: a list of metric names (e.g. ["accuracy"]) or `fastnn.metrics.Metric`s;
            default None (no metrics).  They ignore sample weights, as Keras' `metrics` do.
        weighted_metrics: metrics that take fit's and evaluate's sample weights (Keras'
            rule); logged as "weighted_<name>" where the name is already taken.
        run_eagerly: True runs every step layer by layer (as jit_compile=False).
        steps_per_execution: accepted for Keras compatibility (an int >= 1); fastnn runs and
            reports every step (it has no per-execution overhead to amortize).
        jit_compile: "auto" (the default) or True runs a stack of Dense layers as one compiled
            call per step (see fastnn/_step.py); False runs every step layer by layer.
        auto_scale_loss: accepted for Keras compatibility (it acts on float16 policies)."""
        self.optimizer = optimizers.get(optimizer)
        if loss is None:
            raise ValueError("Expected a loss, e.g. loss='categorical_crossentropy'. Received: None")
        self.loss = losses.get(loss)
        if loss_weights is not None:
            lw = loss_weights[0] if (isinstance(loss_weights, (list, tuple))
                                     and len(loss_weights) == 1) else loss_weights
            if isinstance(lw, bool) or not isinstance(lw, (int, float, np.integer, np.floating)):
                raise ValueError("Expected loss_weights to be a number or a list of one number "
                                 f"(one output). Received: loss_weights={loss_weights!r}")
        self.loss_weights = loss_weights
        ids = []
        for arg, value in (("metrics", metrics), ("weighted_metrics", weighted_metrics)):
            if value is None:
                value = []
            if isinstance(value, (str, metrics_module.Metric)):
                raise TypeError(f"Expected {arg} to be a list. Received: {arg}={value!r}; "
                                f"write {arg}=[{value!r}]")
            for m in value:  # validate names now, resolve against shapes at fit time
                metrics_module.get(m, self.loss, None)
            ids.append(list(value))
        self._metric_ids, self._weighted_ids = ids
        _data.check_int("steps_per_execution", steps_per_execution, 1)
        if jit_compile not in ("auto", True, False):
            raise ValueError(f"Expected jit_compile in ('auto', True, False). "
                             f"Received: jit_compile={jit_compile!r}")
        if run_eagerly and jit_compile is True:
            raise ValueError("You cannot set both `run_eagerly` and `jit_compile`.")
        self.run_eagerly = bool(run_eagerly)
        self.steps_per_execution = steps_per_execution
        jit_compile = False if run_eagerly else jit_compile
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
        """The compile() arguments as plain data (loss config, metric names or Keras'
        serialized metrics, weighted metrics, loss weights), or None."""
        if not self.compiled:
            return None
        return {"loss": self.loss.get_config(),
                "metrics": [metrics_module.serialize(m) for m in self._metric_ids],
                "weighted_metrics": [metrics_module.serialize(m) for m in self._weighted_ids],
                "loss_weights": self.loss_weights}

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
        self.metrics = self._new_metrics(fresh=False)
        self._weighted = [False] * len(self._metric_ids) + [True] * len(self._weighted_ids)
        names: list[str] = []  # Keras' log names: weighted ones renamed where taken
        for m, weighted in zip(self.metrics, self._weighted):
            name = m.name
            if name in names and weighted:
                name = f"weighted_{m.name}"
            k, base = 1, name
            while name in names:
                name, k = f"{base}_{k}", k + 1
            names.append(name)
        self._metric_names = names

    def _new_metrics(self, fresh: bool) -> list[metrics_module.Metric]:
        """The compiled metrics resolved for the model's output (fresh: empty copies of any
        instances, for an evaluation that must not touch fit's)."""
        n_out = self._leaves()[-1].output_shape[-1]
        out = [metrics_module.get(copy.deepcopy(m) if fresh else m, self.loss, n_out)
               for m in self._metric_ids + self._weighted_ids]
        if fresh:
            for m in out:
                m.reset_state()
        return out

    def _logs(self, loss: float, metrics: Sequence[metrics_module.Metric]) -> dict[str, float]:
        return {"loss": loss, **{n: m.result() for n, m in zip(self._metric_names, metrics)}}


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

    # ---- data: arrays, or batches from a generator / PyDataset (fastnn/_batches.py) --------

    def _sample_weights(self, sample_weight: Any, class_weight: Any, t: NDArray[Any],
                        name: str = "sample_weight") -> NDArray[Any] | None:
        """Per-sample weights (n,) of the model's dtype from sample_weight ((n,) or (n, 1)) or
        class_weight ({class index: weight}, the class of each target as Keras finds it: the
        argmax of a one-hot row, else the rounded label), times compile's loss_weights; None
        when all are absent.  Keras refuses both sample_weight and class_weight."""
        n, dtype = len(t), self._leaves()[0].dtype
        if sample_weight is not None and class_weight is not None:
            raise ValueError("You cannot `class_weight` and `sample_weight` at the same time.")
        sw: NDArray[Any] | None = None
        if sample_weight is not None:
            sw = np.asarray(sample_weight)
            if sw.ndim == 2 and sw.shape[1] == 1:
                sw = sw[:, 0]
            if sw.dtype.kind not in "fiub" or sw.shape != (n,):
                raise ValueError(f"Expected {name} with one number per sample, shape ({n},). "
                                 f"Received: {name}.shape={sw.shape}, dtype={sw.dtype}")
            sw = np.ascontiguousarray(sw, dtype)
            if not _data.all_finite(sw):
                raise ValueError(f"Expected finite values in {name}. Received: NaN or Inf")
        elif class_weight is not None:
            if not isinstance(class_weight, dict) or not all(
                    isinstance(k, (int, np.integer)) and not isinstance(k, bool)
                    for k in class_weight):
                raise ValueError("Expected class_weight to be a dict {class index: weight}. "
                                 f"Received: class_weight={class_weight!r}")
            labels = (t if t.ndim == 1 else np.argmax(t, axis=1) if t.shape[1] > 1
                      else np.round(t[:, 0])).astype(np.int64)
            sw = np.ones(n, dtype)
            for k, w in class_weight.items():
                sw[labels == k] = w
        if self.loss_weights is not None:
            lw = (self.loss_weights[0] if isinstance(self.loss_weights, (list, tuple))
                  else self.loss_weights)
            sw = np.full(n, lw, dtype) if sw is None else sw * dtype.type(lw)
        return sw

    def _array_source(self, x: Any, y: Any, sample_weight: Any, class_weight: Any,
                      batch_size: int, shuffle: bool, metrics: Sequence[metrics_module.Metric],
                      name: str = "x") -> _batches.ArraySource:
        xa, t = self._prepare_xy(x, y, name)
        sw = self._sample_weights(sample_weight, class_weight, t)
        return _batches.ArraySource(xa, t, sw, _data.metric_targets(metrics, t),
                                    min(batch_size, len(xa)), shuffle, self._rng)

    def _stream_source(self, data: Any, class_weight: Any, shuffle: bool,
                       metrics: Callable[[], Sequence[metrics_module.Metric]],
                       targets: bool = True) -> _batches.StreamSource:
        """Batches of a generator / iterator / PyDataset, each an (x, y[, sample_weight])
        tuple (or x alone, for predict: targets=False), prepared and checked on arrival."""
        def prepare(item: Any) -> tuple[NDArray[Any], NDArray[Any] | None,
                                        NDArray[Any] | None, list[NDArray[Any]]]:
            parts = item if isinstance(item, tuple) else (item,)
            if not 1 <= len(parts) <= 3 or (targets and len(parts) < 2):
                raise ValueError("Expected each batch to be a tuple (x, y) or (x, y, "
                                 f"sample_weight){' or x' if not targets else ''}. Received: "
                                 f"a {type(item).__name__} of {len(parts)} items")
            if not targets:
                return self._prepare_x(parts[0]), None, None, []
            xb, t = self._prepare_xy(parts[0], parts[1])
            sw = self._sample_weights(parts[2] if len(parts) == 3 else None, class_weight, t)
            return xb, t, sw, _data.metric_targets(metrics(), t)
        return _batches.StreamSource(data, prepare, shuffle, self._rng)

    def _source(self, x: Any, y: Any, sample_weight: Any, class_weight: Any, batch_size: int,
                shuffle: bool, metrics: Callable[[], Sequence[metrics_module.Metric]],
                targets: bool = True) -> _batches.ArraySource | _batches.StreamSource:
        """fit's / evaluate's / predict's batches of x (arrays, or a stream of batches)."""
        if not _batches.is_stream(x):
            if not targets:
                xa = self._prepare_x(x)
                return _batches.ArraySource(xa, None, None, [], min(batch_size, len(xa)))
            return self._array_source(x, y, sample_weight, class_weight, batch_size, shuffle,
                                      metrics())
        kind = "a PyDataset" if isinstance(x, utils.PyDataset) else "a Python generator"
        for arg, value in (("y", y), ("sample_weight", sample_weight)):
            if value is not None:
                raise ValueError(f"`{arg}` argument is not supported when using {kind} as "
                                 f"input: yield it with x in each batch.")
        if class_weight is not None and not isinstance(x, utils.PyDataset):
            raise ValueError("Argument `class_weight` is not supported for Python generator "
                             f"inputs. Received: class_weight={class_weight}")
        return self._stream_source(self._build_from(x), class_weight, shuffle, metrics, targets)

    def _build_from(self, x: Any) -> Any:
        """Build an unbuilt model for the samples of x (arrays, or the first batch of a stream:
        a generator's is put back in front); returns x (or the generator with it)."""
        if self.built or x is None:
            return x
        if not _batches.is_stream(x):
            self._prepare_x(x)
            return x
        if isinstance(x, utils.PyDataset):
            first = x[0]
        else:
            first = next(x, None)
            if first is None:
                raise ValueError("Expected a generator of batches. Received an exhausted one.")
            x = itertools.chain([first], x)
        self._prepare_x((first if isinstance(first, tuple) else (first,))[0])
        return x

    # ---- training ---------------------------------------------------------------------------

    # (return_dict=True: a dict; else a float or a list, by the metrics compiled: Any)
    @overload
    def train_on_batch(self, x: ArrayLike, y: ArrayLike | None = None,
                       sample_weight: ArrayLike | None = None,
                       class_weight: dict[int, float] | None = None, *,
                       return_dict: Literal[True]) -> dict[str, float]: ...
    @overload
    def train_on_batch(self, x: ArrayLike, y: ArrayLike | None = None,
                       sample_weight: ArrayLike | None = None,
                       class_weight: dict[int, float] | None = None,
                       return_dict: bool = False) -> Any: ...

    def train_on_batch(self, x: ArrayLike, y: ArrayLike | None = None,
                       sample_weight: ArrayLike | None = None,
                       class_weight: dict[int, float] | None = None,
                       return_dict: bool = False) -> float | list[float] | dict[str, float]:
        """One optimizer step on (x, y), weighted by sample_weight or class_weight as in fit;
        returns the loss (and metrics) on that batch: a float without metrics, else
        [loss, *metrics]; a dict with return_dict=True (default False)."""
        self._require_compiled("train_on_batch")
        if not self.built:
            self._prepare_x(x)
        if not self.metrics:
            self._resolve_metrics()
        for m in self.metrics:
            m.reset_state()
        src = self._array_source(x, y, sample_weight, class_weight, 1 << 62, False, self.metrics)
        batch = next(src.batches())
        # (fit's step, distributed or not)
        with self.trainer.running(self._lock, src.x, cast("NDArray[Any]", src.t)):
            value = self._train_batch(self.trainer, batch)
        return _data.format_logs(self._logs(value, self.metrics), return_dict)

    def fit(self, x: Any = None, y: ArrayLike | None = None, batch_size: int | None = None,
            epochs: int = 1, verbose: int | str = "auto",
            callbacks: callbacks_module.Callback | Sequence[callbacks_module.Callback] | None
            = None, validation_split: float = 0.0, validation_data: Any = None,
            shuffle: bool = True, class_weight: dict[int, float] | None = None,
            sample_weight: ArrayLike | None = None, initial_epoch: int = 0,
            steps_per_epoch: int | None = None, validation_steps: int | None = None,
            validation_batch_size: int | None = None,
            validation_freq: int | Sequence[int] = 1) -> callbacks_module.History:
        """Train for `epochs` epochs of mini-batch steps; returns a History.  Arguments in
        Keras' order, with Keras' meaning.

        Args:
            x, y: the samples (batch, ...) and their targets, arrays or nested lists; or x a
                Python generator / iterator of (x, y) or (x, y, sample_weight) batches or a
                `fastnn.utils.PyDataset` (then y is None): data larger than memory trains
                batch by batch.
            batch_size: samples per step (arrays); defaults to 32 (None means 32, as in
                Keras).  batch_size=1 is true SGD, batch_size=len(x) (or more: Keras clamps
                it) full-batch gradient descent.
            epochs: training runs epochs initial_epoch to epochs - 1 (default 1).
            verbose: "auto" (the default, same as 1), 0 (silent), 1 (progress bar) or 2
                (one line per epoch).
            callbacks: a `fastnn.callbacks.Callback` or a list of them (default None).
            validation_split: the last fraction of the samples (before shuffling) held
                out for validation, in [0, 1) (default 0.0: none); arrays only.
            validation_data: (x_val, y_val) or (x_val, y_val, val_sample_weight), or a
                generator / PyDataset of such batches, evaluated at the end of an epoch;
                overrides validation_split (default None).
            shuffle: shuffle the samples (a PyDataset: its batches) before every epoch
                (default True).
            class_weight: {class index: weight}: each sample's loss is weighted by its
                class' weight (default None); not with sample_weight (ValueError, as Keras).
            sample_weight: (n,) weights of the samples' losses (default None).  As Keras:
                the loss of a batch is sum(w * loss) / batch size; `weighted_metrics` see
                them, `metrics` do not.
            initial_epoch: the epoch to start at, e.g. to resume a run (default 0).
            steps_per_epoch: batches per epoch (default None: one pass over the data, or
                until the generator ends); as Keras, an epoch then continues where the last
                stopped, with a warning if the data runs out.
            validation_steps: batches of the validation data per evaluation (default None:
                all of it).
            validation_batch_size: (default None: batch_size).
            validation_freq: validate every that many epochs (an int), or after the epochs
                listed (1-based, as Keras) (default 1).

        Ctrl-C finishes the step in progress, then KeyboardInterrupt propagates, as in Keras:
        the model keeps the weights and optimizer state of the last completed step and
        model.history the finished epochs.
        """
        self._require_compiled("fit")
        batch_size = 32 if batch_size is None else batch_size
        _data.check_int("epochs", epochs, 0)
        _data.check_int("initial_epoch", initial_epoch, 0)
        _data.check_int("batch_size", batch_size, 1)
        for arg, v in (("steps_per_epoch", steps_per_epoch), ("validation_steps",
                                                              validation_steps),
                       ("validation_batch_size", validation_batch_size)):
            if v is not None:
                _data.check_int(arg, v, 1)
        if isinstance(validation_freq, (list, tuple, set)):
            if not all(isinstance(e, int) and not isinstance(e, bool) for e in validation_freq):
                raise ValueError("Expected validation_freq to be an int or a list of ints. "
                                 f"Received: validation_freq={validation_freq!r}")
        else:
            _data.check_int("validation_freq", validation_freq, 1)
        verbose = _data.check_verbose(verbose)
        stream = _batches.is_stream(x)
        _data.check_validation(validation_split, validation_data)
        if stream and validation_split:
            raise ValueError("`validation_split` is only supported for Tensors or NumPy arrays. "
                             f"Found incompatible type in the input: {type(x).__name__}")
        x = self._build_from(x)
        self._resolve_metrics()
        source = self._source(x, y, sample_weight, class_weight, batch_size, shuffle,
                              lambda: self.metrics)
        val: Any = None
        if validation_data is not None:
            val = validation_data
        elif validation_split:
            src = cast(_batches.ArraySource, source)
            cut = int(len(src.x) * (1.0 - validation_split))
            if cut == 0 or cut == len(src.x):
                raise ValueError(f"validation_split={validation_split} leaves "
                                 f"{cut} training and {len(src.x) - cut} validation samples.")
            val = _batches.ArraySource(src.x[cut:], cast("NDArray[Any]", src.t)[cut:],
                                       None if src.sw is None else src.sw[cut:],
                                       [m[cut:] for m in src.mt], 1)  # (batch size: below)
            source = _batches.ArraySource(
                src.x[:cut], cast("NDArray[Any]", src.t)[:cut],
                None if src.sw is None else src.sw[:cut], [m[:cut] for m in src.mt],
                min(batch_size, cut), shuffle, self._rng)
        dist = distribution.active()
        if dist is not None:  # rank 0's weights, optimizer state and shuffle on every rank
            distribution.sync_replicas(dist, self._params, self._frozen, self.optimizer, self._rng)
        pinned = ((source.x, source.t) if isinstance(source, _batches.ArraySource) else ())
        with self.trainer.running(self._lock, *pinned):  # one fit at a time; x, t pinned
            return self._fit_epochs(
                _batches.EpochIterator(source, steps_per_epoch), val,
                validation_batch_size or batch_size, validation_steps, validation_freq,
                epochs, verbose, callbacks, initial_epoch)

    def _fit_epochs(self, data: _batches.EpochIterator, val: Any, val_batch_size: int,
                    val_steps: int | None, val_freq: int | Sequence[int], epochs: int,
                    verbose: int, callbacks: Any, initial_epoch: int) -> callbacks_module.History:
        trainer, loss = self.trainer, self.loss
        # as Keras: the callbacks, then History (it sees every key), then a ProgbarLogger
        history = callbacks_module.History()
        cbs = callbacks_module.CallbackList(
            _data.as_list(callbacks) + [history], add_progbar=verbose != 0,
            model=cast("Sequential", self),  # (a Trainer is always a model's base class)
            verbose=verbose, epochs=epochs, steps=data.num_batches)
        self.history = history
        self.stop_training = False
        self._initial_epoch: int | None = None  # BackupAndRestore may set it in on_train_begin
        cbs.on_train_begin()
        initial_epoch = self._initial_epoch or initial_epoch
        self._initial_epoch = None
        batch_hooks = cbs.uses_batch_hooks("train")
        every_batch = cbs.needs_every_batch("train")
        logs: dict[str, float] = {}
        loss_sum, seen = 0.0, 0
        val_source: Any = None

        def running() -> dict[str, float]:  # the epoch's running means, as Keras logs them
            return self._logs(loss_sum / max(seen, 1), self.metrics)
        interrupted = utils.defer_sigint()
        try:
            for epoch in range(initial_epoch, epochs):
                cbs.on_epoch_begin(epoch)
                for m in self.metrics:
                    m.reset_state()
                loss_sum, seen = 0.0, 0
                # from arrays, with nothing to call between steps (no batch hooks but the
                # progress bar's, drawn after each run), metrics that take a run's rows at once
                # (joins_exactly) and one process, runs of steps go to C in one call each
                join = (not every_batch and all(m.joins_exactly for m in self.metrics)
                        and self._trainer is not None and distribution.active() is None)
                for step, batch, count in self._epoch_batches(data, join):
                    if batch_hooks:
                        cbs.on_train_batch_begin(step)
                    if self._trainer is None:  # recompiled (a callback): as Keras, the new
                        trainer.release()      # loss, optimizer and metrics apply from now
                        trainer = self._recompiled(data, loss)
                        loss, batch = self.loss, batch._replace(mt=_data.metric_targets(
                            self.metrics, cast("NDArray[Any]", batch.t)))
                    n = len(batch.idx) // count  # (count batches of n rows, in order)
                    for value in (self._train_batches(trainer, batch, count) if count > 1
                                  else [self._train_batch(trainer, batch)]):
                        loss_sum += value * n
                        seen += n
                    if batch_hooks:  # (Keras: running means; a joined run's last step)
                        cbs.on_train_batch_end(step + count - 1, running())
                    if interrupted():
                        raise KeyboardInterrupt
                    if self.stop_training:
                        break
                if data.empty:  # an exhausted generator: nothing more to train on
                    self.stop_training = True
                    break
                logs = running()
                if val is not None and _should_validate(epoch, val_freq):
                    if val_source is None:  # once: the arrays are prepared once per fit
                        val_source = (val if isinstance(val, _batches.ArraySource) else
                                      self._validation_source(val, val_batch_size))
                    if isinstance(val_source, _batches.ArraySource):
                        val_source.batch_size = min(val_batch_size, len(val_source.x))
                    # (calls the on_test_* hooks, as Keras' fit)
                    val_logs = self._evaluate_source(
                        _batches.EpochIterator(val_source, val_steps), cbs,
                        self._new_metrics(fresh=True))
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
            trainer.release()
            if epochs > 0:  # as Keras: with use_ema, the weights become their moving average
                self.optimizer.finalize_variable_values(self._params)
        cbs.on_train_end(logs)
        return history

    def _recompiled(self, data: _batches.EpochIterator, before: losses.Loss) -> _step.TrainStep:
        """The step after compile() ran inside fit: its metrics resolved, the arrays' metric
        targets made for them.  A loss that takes other targets than the one fit prepared them
        for (integer labels against one-hot rows) is refused: fit no longer has the raw y."""
        if self.loss.sparse != before.sparse:
            raise ValueError(f"Expected a loss taking the same targets when recompiling inside "
                             f"fit. Received: {type(self.loss).__name__} after "
                             f"{type(before).__name__}; call fit again instead.")
        self._resolve_metrics()
        src = data.source
        if isinstance(src, _batches.ArraySource):
            src.mt = _data.metric_targets(self.metrics, cast("NDArray[Any]", src.t))
        return self.trainer

    def _validation_source(self, val: Any, batch_size: int
                           ) -> _batches.ArraySource | _batches.StreamSource:
        if _batches.is_stream(val):
            return self._source(self._build_from(val), None, None, None, batch_size, False,
                                lambda: self.metrics)
        if not isinstance(val, (tuple, list)) or len(val) not in (2, 3):
            raise ValueError("Expected validation_data=(x_val, y_val) or (x_val, y_val, "
                             f"val_sample_weight). Received: {type(val).__name__}")
        return self._array_source(val[0], val[1], val[2] if len(val) == 3 else None, None,
                                  batch_size, False, self.metrics, name="x_val")

    def _epoch_batches(self, data: _batches.EpochIterator, join: bool
                       ) -> Iterator[tuple[int, _batches.Batch, int]]:
        """One epoch of fit's batches as (step, batch, count): with join, from arrays, runs of
        batches of about 25 ms of steps joined (count of them, `_batches.joined`), else one
        batch at a time."""
        if not join or not isinstance(data.source, _batches.ArraySource):
            for step, batch in data.epoch():
                yield step, batch, 1
            return
        most, t0 = 1, time.perf_counter()
        for step, batch, count in _batches.joined(data.epoch(), lambda: most):
            yield step, batch, count
            t1 = time.perf_counter()  # as many steps as the last ones took 25 ms for, 1 to 64
            most, t0 = max(1, min(64, int(0.025 * count / max(t1 - t0, 1e-9)))), t1

    def _train_batches(self, trainer: _step.TrainStep, b: _batches.Batch, count: int
                       ) -> list[float]:
        """count steps of _train_batch's on the joined batch b (count batches of as many
        rows; metrics that join exactly, one process) in one call into C where the step is
        compiled, the metrics updated once with every step's predictions, else one after the
        other (also where a metric takes sample weights).  Returns their losses."""
        n = len(b.idx) // count
        weighted = b.sw is not None and any(self._weighted)
        losses = None if weighted else trainer.run_steps(
            self.optimizer, b.x, cast("NDArray[Any]", b.t), b.idx, n, b.sw,
            keep=bool(self.metrics))
        if losses is not None:
            for i, (m, mt) in enumerate(zip(self.metrics, b.mt)):
                m.update(cast("NDArray[Any]", trainer.steps_predictions),
                         trainer.gather(("m", i), mt, b.idx), None)
            return [float(v) for v in losses]
        return [self._train_batch(trainer, b._replace(idx=b.idx[i * n:(i + 1) * n]))
                for i in range(count)]

    def _train_batch(self, trainer: _step.TrainStep, b: _batches.Batch) -> float:
        """One optimizer step on the batch; the metrics take its predictions (the weighted
        ones its sample weights).  Returns the batch's loss.  Distributed, this rank takes its
        share of the rows, and the loss and the metrics are summed over the ranks (the same
        logs on every rank)."""
        dist = distribution.active()
        rows = b.idx if dist is None else b.idx[slice(*dist.shard(len(b.idx)))]
        before = [m.state() for m in self.metrics] if dist is not None else None
        value, p = trainer.run(self.optimizer, b.x, cast("NDArray[Any]", b.t), b.idx, b.sw)
        if len(rows):
            sw = (trainer.gather("metric_sw", b.sw, rows)
                  if b.sw is not None and any(self._weighted) else None)
            for i, (m, mt, weighted) in enumerate(zip(self.metrics, b.mt, self._weighted)):
                # (p: this rank's predictions, an array as it has rows)
                m.update(cast("NDArray[Any]", p), trainer.gather(("m", i), mt, rows),
                         sw if weighted else None)
        if dist is not None:
            value = distribution.allreduce_sums(dist, [value], self.metrics, before)[0]
        return float(value)

    # ---- evaluation and prediction ------------------------------------------------------------

    def _evaluate_source(self, data: _batches.EpochIterator,
                         cbs: callbacks_module.CallbackList | None,
                         metrics: list[metrics_module.Metric]) -> dict[str, float]:
        """The mean loss and metrics over one epoch of data (fresh metrics: evaluate may run in
        several threads at once, and during fit); distributed, each rank takes its share of
        every batch and the sums are reduced over the ranks.  cbs: its on_test_* hooks are
        called as Keras' evaluate calls them (the batch hooks, if any callback has one, batch
        by batch with the running loss and metrics; distributed, of this rank's share)."""
        dist = distribution.active()
        if cbs is not None:
            cbs.on_test_begin()
        self.stop_evaluating = False
        hooks = cbs is not None and cbs.uses_batch_hooks("test")
        total, n = 0.0, 0.0
        weighted = self._weighted or [False] * len(metrics)
        for step, b in data.epoch():
            if dist is not None:
                b = b._replace(idx=b.idx[slice(*dist.shard(len(b.idx)))])
            if hooks:
                cast(callbacks_module.CallbackList, cbs).on_test_batch_begin(step)
            s, c = self.trainer.evaluate([b], metrics, weighted)
            total, n = total + s, n + c
            if hooks:
                cast(callbacks_module.CallbackList, cbs).on_test_batch_end(
                    step, self._logs(total / max(n, 1), metrics))
            if self.stop_evaluating:
                break
        if dist is not None:
            total, n = distribution.allreduce_sums(dist, [total, n], metrics)
        logs = self._logs(total / n if n else 0.0, metrics)
        if cbs is not None:
            cbs.on_test_end(logs)
        return logs

    # (return_dict=True: a dict; else a float or a list, by the metrics compiled: Any)
    @overload
    def evaluate(self, x: Any = None, y: ArrayLike | None = None,
                 batch_size: int | None = None, verbose: int | str = "auto",
                 sample_weight: ArrayLike | None = None, steps: int | None = None,
                 callbacks: callbacks_module.Callback | Sequence[callbacks_module.Callback]
                 | None = None, *, return_dict: Literal[True]) -> dict[str, float]: ...
    @overload
    def evaluate(self, x: Any = None, y: ArrayLike | None = None,
                 batch_size: int | None = None, verbose: int | str = "auto",
                 sample_weight: ArrayLike | None = None, steps: int | None = None,
                 callbacks: callbacks_module.Callback | Sequence[callbacks_module.Callback]
                 | None = None, return_dict: bool = False) -> Any: ...

    def evaluate(self, x: Any = None, y: ArrayLike | None = None,
                 batch_size: int | None = None, verbose: int | str = "auto",
                 sample_weight: ArrayLike | None = None, steps: int | None = None,
                 callbacks: callbacks_module.Callback | Sequence[callbacks_module.Callback]
                 | None = None,
                 return_dict: bool = False) -> float | list[float] | dict[str, float]:
        """The loss (and metrics) on (x, y): a float without metrics, else
        [loss, *metrics]; a dict with return_dict=True (default False).  Arguments in Keras'
        order, with Keras' meaning.

        x, y: arrays, or x a generator / PyDataset of (x, y[, sample_weight]) batches.
        batch_size: samples per batch; defaults to 32 (None means 32, as in Keras).
        verbose: "auto" (the default, same as 1), 0 (silent), 1 or 2 (a final line).
        sample_weight: (n,) weights of the samples' losses (and of `weighted_metrics`).
        steps: batches to evaluate (default None: all).
        callbacks: a Callback or a list of them (default None): on_test_begin(),
        on_test_batch_begin/end per batch, on_test_end(logs), as in Keras."""
        self._require_compiled("evaluate")
        batch_size = 32 if batch_size is None else batch_size
        _data.check_int("batch_size", batch_size, 1)
        if steps is not None:
            _data.check_int("steps", steps, 1)
        verbose = _data.check_verbose(verbose)
        x = self._build_from(x)
        if not self.metrics:
            self._resolve_metrics()
        metrics = self._new_metrics(fresh=True)
        data = _batches.EpochIterator(self._source(x, y, sample_weight, None, batch_size, False,
                                                   lambda: metrics), steps)
        cbs = callbacks_module.CallbackList(
            callbacks, add_progbar=verbose != 0, model=cast("Sequential", self),
            verbose=verbose, epochs=1, steps=data.num_batches)
        logs = self._evaluate_source(data, cbs, metrics)
        return _data.format_logs(logs, return_dict)

    def predict(self, x: Any, batch_size: int | None = None, verbose: int | str = "auto",
                steps: int | None = None,
                callbacks: callbacks_module.Callback | Sequence[callbacks_module.Callback]
                | None = None) -> NDArray[Any]:
        """The model's outputs for x, computed batch by batch; a new array.

        x: an array, or a generator / PyDataset of batches (x, or tuples whose first item is
            x, as Keras).
        batch_size: samples per batch; defaults to 32 (None means 32, as in Keras).
        verbose: "auto" (the default, same as 1), 0 (silent), 1 or 2 (a final line).
        steps: batches to predict (default None: all).
        callbacks: a Callback or a list of them (default None): on_predict_begin(),
        on_predict_batch_begin(batch) and on_predict_batch_end(batch, {"outputs": the
        batch's outputs}) per batch, on_predict_end(), as in Keras; a callback setting
        model.stop_predicting = True ends it after that batch (the outputs so far)."""
        batch_size = 32 if batch_size is None else batch_size
        _data.check_int("batch_size", batch_size, 1)
        if steps is not None:
            _data.check_int("steps", steps, 1)
        verbose = _data.check_verbose(verbose)
        data = _batches.EpochIterator(self._source(x, None, None, None, batch_size, False,
                                                   lambda: [], targets=False), steps)
        cbs = callbacks_module.CallbackList(
            callbacks, add_progbar=verbose != 0, model=cast("Sequential", self),
            verbose=verbose, epochs=1, steps=data.num_batches)
        batch_hooks = cbs.uses_batch_hooks("predict")
        self.stop_predicting = False
        cbs.on_predict_begin()
        arrays = isinstance(data.source, _batches.ArraySource)
        n = len(data.source.x) if isinstance(data.source, _batches.ArraySource) else 0
        out_shape = cast("tuple[int, ...]", self.output_shape)[1:]
        leaves = self._leaves()
        dtype = leaves[0].dtype
        out: NDArray[Any] = np.empty((n, *out_shape), dtype)
        parts: list[NDArray[Any]] = []
        done = 0
        for step, b in data.epoch():
            if batch_hooks:
                cbs.on_predict_batch_begin(step)
            y = _step.forward(leaves, b.x[_step.rows(b.idx)], training=False)
            if arrays:
                out[done:done + len(y)] = y
                y = out[done:done + len(y)]
            else:
                y = y.copy()
                parts.append(y)
            done += len(y)
            if batch_hooks:
                cbs.on_predict_batch_end(step, {"outputs": y})
            if self.stop_predicting:
                break
        cbs.on_predict_end()
        if arrays:
            return out[:done]
        return np.concatenate(parts) if parts else np.empty((0, *out_shape), dtype)

    def predict_on_batch(self, x: ArrayLike) -> NDArray[Any]:
        """The model's outputs for x as one batch (a new array), as Keras."""
        return self(x)

    # (return_dict=True: a dict; else a float or a list, by the metrics compiled: Any)
    @overload
    def test_on_batch(self, x: ArrayLike, y: ArrayLike | None = None,
                      sample_weight: ArrayLike | None = None, *,
                      return_dict: Literal[True]) -> dict[str, float]: ...
    @overload
    def test_on_batch(self, x: ArrayLike, y: ArrayLike | None = None,
                      sample_weight: ArrayLike | None = None,
                      return_dict: bool = False) -> Any: ...

    def test_on_batch(self, x: ArrayLike, y: ArrayLike | None = None,
                      sample_weight: ArrayLike | None = None,
                      return_dict: bool = False) -> float | list[float] | dict[str, float]:
        """The loss (and metrics) on (x, y) as one batch, weighted by sample_weight as
        evaluate (metrics of this batch alone, as Keras'): a float without metrics, else
        [loss, *metrics]; a dict with return_dict=True (default False)."""
        self._require_compiled("test_on_batch")
        x = self._build_from(x)
        if not self.metrics:
            self._resolve_metrics()
        metrics = self._new_metrics(fresh=True)
        src = self._array_source(x, y, sample_weight, None, 1 << 62, False, metrics)
        logs = self._evaluate_source(_batches.EpochIterator(src), None, metrics)
        return _data.format_logs(logs, return_dict)

    def __call__(self, x: ArrayLike, training: bool = False) -> NDArray[Any]:
        """The outputs for x in one batch; training=True applies dropout (default False)."""
        x = self._prepare_x(x)
        out: NDArray[Any] = _step.forward(self._leaves(), x, training=bool(training)).copy()
        return out


def _should_validate(epoch: int, freq: int | Sequence[int]) -> bool:
    """Keras' rule: validate after epoch (0-based) when (epoch + 1) % freq == 0, or, freq a
    list, when epoch + 1 is in it."""
    if isinstance(freq, int):
        return (epoch + 1) % freq == 0
    return epoch + 1 in freq
