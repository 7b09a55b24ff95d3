"""Training, evaluation and prediction, named as in Keras: `Trainer` is the base class that
gives a model compile, fit, evaluate, predict and train_on_batch, as `keras.Model` gets them
from Keras' Trainer.  The model built on it provides `layers`, `build(input_shape)`, `built`,
`input_shape`, `output_shape`, and sets, when built, the attributes Trainer.__init__ declares
(its sample shape, random generator and parameter buffers).  What one training step does is
fastnn/_step.py's; this module never imports models.py.
"""
import math
import threading
import time

import numpy as np

from fastnn import _data, _step, distribution
from fastnn import callbacks as callbacks_module
from fastnn import config, losses, metrics as metrics_module, optimizers, utils


class Trainer:
    """compile / fit / evaluate / predict / train_on_batch for a model (see the module)."""

    def __init__(self, seed=None):
        self.seed = seed
        self.optimizer = self.loss = None
        self.compiled = False
        self.metrics = []
        self.stop_training = False
        self.history = None
        self.jit_compile = "auto"
        self._metric_ids = []
        # set by the model: the shape of one sample, the generator of its initialisation,
        # shuffling and dropout, and its parameter buffers (see _step.pack_parameters)
        self._input_shape = None
        self._rng = utils.new_rng(seed)
        self._params = self._grads = []
        self._trainer = None
        self._lock = threading.Lock()  # held by fit and train_on_batch

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, jit_compile="auto"):
        """Set the optimizer (name or instance), loss (name or instance) and metrics.

        jit_compile: "auto" or True runs a stack of Dense layers as one compiled call per step
        (see fastnn/_step.py); False runs every step layer by layer."""
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

    def get_compile_config(self):
        """The compile() arguments as plain data (loss config, metric names), or None."""
        if not self.compiled:
            return None
        return {"loss": self.loss.get_config(),
                "metrics": [m if isinstance(m, str) else m.name for m in self._metric_ids]}

    def build_optimizer(self):
        """Create the optimizer's state for this model's parameters now (the first training
        step does it otherwise), e.g. to load saved optimizer variables into it.  Returns
        `optimizer.variables`."""
        self._require_compiled("build_optimizer")
        if not self.built:
            raise ValueError("Expected a built model before build_optimizer. Build it first.")
        self.optimizer.build(self._params)
        return self.optimizer.variables

    @property
    def trainer(self):
        """fastnn's training step for this model (fastnn/_step.py `TrainStep`), e.g.
        `model.trainer.compiled_step(model.optimizer, x, y, batch_size)`."""
        self._require_compiled("trainer")
        if self._trainer is None:
            if not self.built:
                self.build()
            self._trainer = _step.TrainStep(self.layers, self.loss, self._params, self._grads,
                                            self.jit_compile)
        return self._trainer

    def _resolve_metrics(self):
        n_out = self.layers[-1].output_shape[-1]
        self.metrics = [metrics_module.get(m, self.loss, n_out) for m in self._metric_ids]


    def _prepare_x(self, x, name="x"):
        """Validate and convert inputs once: a C-contiguous float array of the model's dtype
        (an unbuilt model is built for their shape)."""
        x = _data.as_samples(x, name)
        if not self.layers:
            raise ValueError("Expected a model with at least one layer. Received: an empty model")
        if not self.built:  # built for x's samples; a refused x leaves the model as it was
            inferred = self._input_shape is None
            try:
                self.build((None, *x.shape[1:]) if inferred else None)
            except Exception:
                self._input_shape = None if inferred else self._input_shape
                raise
        dtype = self.layers[0].dtype if self.layers else config.dtype()
        return _data.conform_samples(x, self._input_shape, dtype, name)

    def _prepare_xy(self, x, y, name="x"):
        x = self._prepare_x(x, name)
        return x, _data.as_targets(y, len(x), self.loss, self.output_shape[-1], x.dtype, name)

    def _require_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f"You must call compile() before {what}().")

    def train_on_batch(self, x, y, return_dict=False):
        """One optimizer step on (x, y); returns the loss (and metrics) on that batch."""
        self._require_compiled("train_on_batch")
        x, t = self._prepare_xy(x, y)
        if not self.metrics:
            self._resolve_metrics()
        with self.trainer.running(self._lock, x, t):
            value, p = self.trainer.run_batch(self.optimizer, x, t)
        logs = {"loss": float(value)}
        for m, mt in zip(self.metrics, _data.metric_targets(self.metrics, t)):
            m.reset_state()
            m.update(p, mt)
            logs[m.name] = m.result()
        return _data.format_logs(logs, return_dict)


    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0):
        """Train for `epochs` epochs of mini-batch steps; returns a History.

        batch_size=1 is true SGD, batch_size=len(x) (or more: Keras clamps it) full-batch
        gradient descent.
        validation_split takes the last fraction of the samples (before shuffling);
        validation_data=(x_val, y_val) overrides it.  Ctrl-C finishes the step in progress,
        then KeyboardInterrupt propagates, as in Keras: the model keeps the weights and
        optimizer state of the last completed step and model.history the finished epochs.
        """
        self._require_compiled("fit")
        batch_size = 32 if batch_size is None else batch_size
        _data.check_int("epochs", epochs, 0)
        _data.check_int("initial_epoch", initial_epoch, 0)
        _data.check_int("batch_size", batch_size, 1)
        verbose = _data.check_verbose(verbose)
        _data.check_validation(validation_split, validation_data)
        x, t = self._prepare_xy(x, y)
        if validation_data is not None:
            val = self._prepare_xy(*validation_data, name="x_val")
        else:
            x, t, val = _data.split_validation(x, t, validation_split)
        batch_size = min(batch_size, len(x))  # as Keras: one batch of all samples
        self._resolve_metrics()
        dist = distribution.active()
        if dist is not None:  # rank 0's weights, optimizer state and shuffle on every rank
            distribution.sync_replicas(dist, self._params, self.optimizer, self._rng)
        with self.trainer.running(self._lock, x, t):  # one fit at a time; x, t pinned
            return self._fit_epochs(x, t, val, batch_size, epochs, verbose, callbacks, shuffle,
                                    initial_epoch)

    def _fit_epochs(self, x, t, val, batch_size, epochs, verbose, callbacks, shuffle,
                    initial_epoch):
        trainer, n = self.trainer, len(x)
        metric_t = _data.metric_targets(self.metrics, t)
        steps = math.ceil(n / batch_size)
        history = callbacks_module.History()
        cbs = callbacks_module.CallbackList(
            _data.as_list(callbacks) + [history], self,  # History last, as in Keras: it sees every key
            {"verbose": verbose, "epochs": epochs, "steps": steps})
        self.history = history
        self.stop_training = False
        cbs.on_train_begin()
        logs = {}
        loss_sum, seen = 0.0, 0

        def running():  # the epoch's running means, as Keras logs them
            return {"loss": loss_sum / max(seen, 1), **{m.name: m.result() for m in self.metrics}}
        interrupted = utils.defer_sigint()
        try:
            for epoch in range(initial_epoch, epochs):
                cbs.on_epoch_begin(epoch)
                if verbose:
                    print(f"Epoch {epoch + 1}/{epochs}")
                bar = callbacks_module.Progbar(steps, verbose)
                order = self._rng.permutation(n) if shuffle else np.arange(n)
                for m in self.metrics:
                    m.reset_state()
                loss_sum, seen = 0.0, 0
                for step in range(steps):
                    s, e = step * batch_size, min(n, (step + 1) * batch_size)
                    if cbs.batch_callbacks:
                        cbs.on_train_batch_begin(step)
                    value = self._train_batch(trainer, x, t, order[s:e], metric_t)
                    loss_sum += value * (e - s)
                    seen += e - s
                    if cbs.batch_callbacks:
                        cbs.on_train_batch_end(step, {**running(), "loss": float(value)})
                    bar.update(step + 1, running)
                    if interrupted():
                        raise KeyboardInterrupt
                    if self.stop_training:
                        break
                logs = running()
                if val is not None:
                    val_logs = self._evaluate_prepared(*val, batch_size)
                    logs.update({"val_" + k: v for k, v in val_logs.items()})
                bar.update(step + 1, lambda: logs, final=True)
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
        cbs.on_train_end(logs)
        return history

    def _train_batch(self, trainer, x, t, idx, metric_t):
        """One optimizer step on the rows idx of (x, t); the metrics take its predictions.
        Returns the batch's loss.  Distributed, this rank takes its share of the rows, and the
        loss and the metrics are summed over the ranks (the same logs on every rank)."""
        dist = distribution.active()
        rows = idx if dist is None else idx[slice(*dist.shard(len(idx)))]
        before = [m.state() for m in self.metrics] if dist is not None else None
        value, p = trainer.run(self.optimizer, x, t, idx)
        if len(rows):
            for i, (m, mt) in enumerate(zip(self.metrics, metric_t)):
                m.update(p, trainer.gather(("m", i), mt, rows))
        if dist is not None:
            value = distribution.allreduce_sums(dist, [value], self.metrics, before)[0]
        return float(value)

    def _evaluate_prepared(self, x, t, batch_size):
        """The mean loss and metrics on prepared (x, t); distributed, each rank takes its shard
        and the sums are reduced over the ranks."""
        # fresh metric objects: evaluate may run in several threads at once
        n_out = self.layers[-1].output_shape[-1]
        metrics = [metrics_module.get(m, self.loss, n_out) for m in self._metric_ids]
        dist = distribution.active()
        if dist is not None:
            x, t = (a[slice(*dist.shard(len(a)))] for a in (x, t))
        total, n = self.trainer.evaluate(x, t, batch_size, metrics), len(x)
        if dist is not None:
            total, n = distribution.allreduce_sums(dist, [total, n], metrics)
        return {"loss": total / n, **{m.name: m.result() for m in metrics}}

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", return_dict=False):
        """The loss (and metrics) on (x, y): a float without metrics, else
        [loss, *metrics]; a dict with return_dict=True."""
        self._require_compiled("evaluate")
        batch_size = 32 if batch_size is None else batch_size
        _data.check_int("batch_size", batch_size, 1)
        verbose = _data.check_verbose(verbose)
        x, t = self._prepare_xy(x, y)
        start = time.perf_counter()
        logs = self._evaluate_prepared(x, t, batch_size)
        callbacks_module.Progbar.report(math.ceil(len(x) / batch_size), verbose, start, logs)
        return _data.format_logs(logs, return_dict)

    def predict(self, x, batch_size=None, verbose="auto"):
        """The model's outputs for x, computed batch by batch; a new array."""
        batch_size = 32 if batch_size is None else batch_size
        _data.check_int("batch_size", batch_size, 1)
        verbose = _data.check_verbose(verbose)
        x = self._prepare_x(x)
        start = time.perf_counter()
        out = np.empty((len(x), *self.layers[-1].output_shape), x.dtype)
        for s in range(0, len(x), batch_size):
            e = min(len(x), s + batch_size)
            out[s:e] = _step.forward(self.layers, x[s:e], training=False)
        callbacks_module.Progbar.report(math.ceil(len(x) / batch_size), verbose, start, {})
        return out

    def __call__(self, x, training=False):
        """The outputs for x in one batch; training=True applies dropout."""
        return _step.forward(self.layers, self._prepare_x(x), training=bool(training)).copy()
