"""Models, named as in `keras.models`: Sequential, and load_model.

A training step is: gather the batch into a reused buffer, each layer's fused forward
kernel, one loss kernel (value and gradient; fused with a final softmax), each layer's
fused backward kernel in reverse, and one fused optimizer kernel over all parameters (they
live in one flat buffer, see _pack_weights).
Every buffer is owned by a layer or the model and reused, so a warmed-up loop allocates
nothing per step.  For a stack of Dense layers on the compiled backend, fit runs that step as
one call into C (`_kernels.DenseStack`: the same kernels, bit-identical results but where its
first layer is owned by rows per thread, see src_c/fastnn.h), which saves the interpreter's
time between kernels (~60 us per step on the book's example).

The file format of `save`/`load_model` is documented in `fastnn/saving.py`.
"""
import math
import signal
import threading
import time

import numpy as np

from fastnn import callbacks as callbacks_module
from fastnn import backend, config, losses, metrics as metrics_module, optimizers, saving, utils
from fastnn._reference import SOFTMAX
from fastnn.layers import LAYERS, Buffers, Dense, Flatten, InputLayer, Layer


class Sequential:
    """A linear stack of layers.

        model = Sequential([layers.Dense(512, activation="relu", input_shape=(784,)),
                            layers.Dense(10, activation="softmax")])
        model.compile(optimizer="rmsprop", loss="categorical_crossentropy",
                      metrics=["accuracy"])
        model.fit(x, y, epochs=5, batch_size=128)

    Args:
        layers: optional list of layers to add.
        name: the model's name.
        seed: int or None.  Seeds this model's weight initialisation, shuffling and dropout;
            None draws one from fastnn's seed source (see `fastnn.utils.set_random_seed`).
    """

    def __init__(self, layers=None, name=None, seed=None):
        self.name = name or "sequential"
        self.layers = []
        self.seed = seed
        self._rng = utils.new_rng(seed)
        self._input_shape = None
        self.built = False
        self.optimizer = self.loss = None
        self.compiled = False
        self.metrics = []
        self.stop_training = False
        self.history = None
        self._buffers = Buffers()  # batch copies, loss gradient, probabilities
        for layer in layers or []:
            self.add(layer)

    # ---- structure --------------------------------------------------------------------------

    def add(self, layer):
        """Append a layer (or set the input shape with `layers.Input(shape=...)`)."""
        if isinstance(layer, InputLayer):
            if self.layers or self._input_shape is not None:
                raise ValueError("Expected Input(...) only as the first entry of a Sequential model. "
                                 f"Received it after {len(self.layers)} layers.")
            self._input_shape = layer.input_shape
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Expected a fastnn layer. Received: {layer!r} ({type(layer).__name__})")
        if any(l is layer for l in self.layers):
            raise ValueError(f"Layer {layer.name!r} is already in the model.")
        if not self.layers and self._input_shape is None and layer.input_shape is not None:
            self._input_shape = layer.input_shape
        self.layers.append(layer)
        self.built = False
        if self._input_shape is not None:
            self.build()

    def build(self, input_shape=None):
        """Create the weights.  input_shape includes the batch dimension, as in Keras:
        `model.build((None, 784))`."""
        if input_shape is not None:
            input_shape = tuple(input_shape)[1:]
            if self._input_shape is not None and input_shape != self._input_shape:
                raise ValueError(f"Expected input_shape {(None, *self._input_shape)}. "
                                 f"Received: {(None, *input_shape)}")
            self._input_shape = input_shape
        if self._input_shape is None:
            raise ValueError("The model has no input shape yet: give input_shape= to the first "
                             "layer, add layers.Input(shape=...), or call fit/build with data.")
        shape = self._input_shape
        for layer in self.layers:
            if not layer.built:
                if isinstance(layer, Dense):
                    layer.build(shape, rng=self._rng)
                else:
                    layer.build(shape)
                    if hasattr(layer, "rng") and layer.seed is None:
                        layer.rng = np.random.default_rng(self._rng.integers(2**63))
            elif layer.input_shape != shape:
                raise ValueError(f"Layer {layer.name!r} was built for input {layer.input_shape}, "
                                 f"but receives {shape}.")
            shape = layer.output_shape
        self.built = True
        self._pack_weights()
        # layers before the first one with weights need no input gradient
        with_weights = [i for i, l in enumerate(self.layers) if l.weights]
        self._first_trainable = with_weights[0] if with_weights else len(self.layers)

    def _pack_weights(self):
        """Move every layer's weights (and gradients) into one flat array, the layers keeping
        views: the optimizer then updates all parameters in one kernel call, one pass."""
        weights = [w for l in self.layers for w in l.weights]
        self._params = self._grads = []
        if not weights:
            return
        if len({w.dtype for w in weights}) > 1:  # mixed precision: one array each
            self._params = weights
            self._grads = [g for l in self.layers for g in l.grads]
            return
        flat = np.empty(sum(w.size for w in weights), weights[0].dtype)
        gflat = np.zeros_like(flat)
        offset = 0
        for layer in self.layers:
            views, gviews = [], []
            for w in layer.weights:
                views.append(flat[offset:offset + w.size].reshape(w.shape))
                gviews.append(gflat[offset:offset + w.size].reshape(w.shape))
                views[-1][...] = w
                offset += w.size
            layer.bind_weights(views, gviews)
        self._params, self._grads = [flat], [gflat]
        if self.optimizer is not None:
            self.optimizer.state = None  # the parameters moved: state starts afresh

    @property
    def input_shape(self):
        return None if self._input_shape is None else (None, *self._input_shape)

    @property
    def output_shape(self):
        return (None, *self.layers[-1].output_shape) if self.built else None

    @property
    def weights(self):
        """The weight arrays, layer by layer (views into the model's parameter buffer)."""
        return [w for l in self.layers for w in l.weights] if self.built else []

    def count_params(self):
        return int(sum(w.size for w in self.weights))

    def get_weights(self):
        """Copies of every weight array, layer by layer."""
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        """Assign weights (as from get_weights) in place; shapes must match."""
        if not self.built:
            raise ValueError("Expected a built model before set_weights. Build it first.")
        mine = self.weights
        if len(weights) != len(mine):
            raise ValueError(f"Expected {len(mine)} weight arrays. Received: {len(weights)}")
        new = []
        for i, (w, v) in enumerate(zip(mine, weights)):
            v = np.asarray(v)
            if v.shape != w.shape:
                raise ValueError(f"Expected weights[{i}] with shape {w.shape}. Received: {v.shape}")
            new.append(v)
        for w, v in zip(mine, new):  # checked first, so nothing is half-assigned
            w[...] = v

    def summary(self, print_fn=print):
        """Print the layers, their output shapes and parameter counts."""
        rows = [(f"{l.name} ({type(l).__name__})",
                 str((None, *l.output_shape)) if l.built else "?", f"{l.count_params():,}")
                for l in self.layers]
        w = [max([len(h)] + [len(r[i]) for r in rows]) + 2
             for i, h in enumerate(("Layer (type)", "Output Shape", "Param #"))]
        total = self.count_params()
        size = total * config.dtype().itemsize
        lines = [f'Model: "{self.name}"', "┏" + "┳".join("━" * x for x in w) + "┓",
                 "┃" + "┃".join(h.ljust(x) if i < 2 else h.rjust(x) for i, (h, x) in
                                enumerate(zip(("Layer (type)", "Output Shape", "Param #"), w))) + "┃",
                 "┡" + "╇".join("━" * x for x in w) + "┩"]
        for r in rows:
            lines.append("│" + "│".join(c.ljust(x) if i < 2 else c.rjust(x)
                                        for i, (c, x) in enumerate(zip(r, w))) + "│")
        lines.append("└" + "┴".join("─" * x for x in w) + "┘")
        lines += [f" Total params: {total:,} ({_bytes(size)})",
                  f" Trainable params: {total:,} ({_bytes(size)})",
                  " Non-trainable params: 0 (0.00 B)"]
        print_fn("\n".join(lines))

    # ---- compile ----------------------------------------------------------------------------

    def compile(self, optimizer="rmsprop", loss=None, metrics=None):
        """Set the optimizer (name or instance), loss (name or instance) and metrics."""
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
        self.compiled = True
        self.metrics = []

    def _resolve_metrics(self):
        n_out = self.layers[-1].output_shape[-1]
        self.metrics = [metrics_module.get(m, self.loss, n_out) for m in self._metric_ids]

    def _fused_softmax(self):
        """The last layer ends in softmax and the loss is a crossentropy on probabilities."""
        last = self.layers[-1]
        act = getattr(last, "activation", None)
        return (self.loss.fusable and not self.loss.from_logits and act is not None
                and act.name == "softmax")

    # ---- data checks ------------------------------------------------------------------------

    def _prepare_x(self, x, name="x"):
        """Validate and convert inputs once: a C-contiguous float array of the model's dtype."""
        if isinstance(x, (list, tuple)):
            x = np.asarray(x)
        if not isinstance(x, np.ndarray):
            raise TypeError(f"Expected {name} to be a NumPy array. Received: {type(x).__name__}")
        if x.dtype.kind not in "fiub":
            raise TypeError(f"Expected {name} to hold real numbers (float, int or bool). "
                            f"Received: {name}.dtype={x.dtype}")
        if x.ndim < 2 or x.shape[0] == 0:
            raise ValueError(f"Expected {name} of shape (batch, ...) with at least one sample. "
                             f"Received: {name}.shape={x.shape}")
        if not self.built:
            if self._input_shape is None:
                self._input_shape = tuple(x.shape[1:])
            self.build()
        if tuple(x.shape[1:]) != self._input_shape:
            want = (f"{self._input_shape[0]} features" if len(self._input_shape) == 1
                    else f"samples of shape {self._input_shape}")
            raise ValueError(f"Expected {name} with {want}. Received: {name}.shape={x.shape}")
        dtype = self.layers[0].dtype if self.layers else config.dtype()
        x = np.ascontiguousarray(x, dtype=dtype)
        if x.dtype.kind == "f" and not _all_finite(x):
            bad = int(np.argwhere(~np.isfinite(x.reshape(len(x), -1)))[0, 0])
            raise ValueError(f"Expected finite values in {name}. Received: NaN or Inf in sample {bad}")
        return x

    def _prepare_xy(self, x, y, name="x"):
        x = self._prepare_x(x, name)
        if y is None:
            raise ValueError(f"Expected targets y for {name}. Received: None")
        y = np.asarray(y)
        if y.dtype.kind not in "fiub":
            raise TypeError(f"Expected y to hold real numbers. Received: y.dtype={y.dtype}")
        if len(y) != len(x):
            raise ValueError(f"Expected x and y with the same number of samples. "
                             f"Received: len(x)={len(x)}, len(y)={len(y)}")
        n_out = self.layers[-1].output_shape[-1]
        t = self.loss.prepare_targets(y, n_out, x.dtype)
        if t.dtype.kind == "f" and not _all_finite(t):
            raise ValueError("Expected finite values in y. Received: NaN or Inf")
        return x, t

    def _require_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f"You must call compile() before {what}().")

    # ---- one step ---------------------------------------------------------------------------

    def _forward(self, x, training):
        for layer in self.layers:
            x = layer.call(x, training=training)
        return x

    def _train_step(self, xb, tb):
        """One optimizer step on a batch; returns (loss value, predictions)."""
        value, p, rank1 = self._compute_gradients(xb, tb, training=True, rank1_ok=True)
        self.optimizer.apply(self._params, self._grads, rank1)
        return value, p

    def _rank1_layer(self):
        """The first layer with weights, when its kernel gradient for a single sample can go to
        the optimizer as the factors (x, dz) of x dz.T: a Dense layer whose kernel opens the
        flat parameter buffer.  Saves writing and re-reading the largest gradient at batch 1."""
        if self._first_trainable >= len(self.layers) or len(self._params) != 1:
            return None
        layer = self.layers[self._first_trainable]
        return layer if isinstance(layer, Dense) and np.shares_memory(layer.kernel, self._params[0][:1]) else None

    def _compute_gradients(self, xb, tb, training, rank1_ok=False):
        """Forward, loss and backward: fills every layer's grads and returns (loss, predictions,
        rank1).  With rank1_ok and a single sample, the first dense kernel's gradient is left
        as rank1 = (x, dz) for the optimizer instead (see _rank1_layer); else rank1 is None."""
        p = self._forward(xb, training=training)
        grad = self._buffers.get("grad", p.shape, p.dtype)
        fused = self._fused
        if fused:
            value = self.loss.fused_value_and_grad(grad, p, tb)
        elif self.loss.from_logits:  # the model outputs logits: softmax here, fused gradient
            probs = self._buffers.get("probs", p.shape, p.dtype)
            backend.K.act_forward(probs, p, SOFTMAX, 0.0)
            value = self.loss.fused_value_and_grad(grad, probs, tb)
        else:
            value = self.loss.value_and_grad(grad, p, tb)
        d = grad
        last, first = len(self.layers) - 1, self._first_trainable
        for i in range(last, first, -1):
            d = self.layers[i].backward(d, need_dx=True, skip_activation=fused and i == last)
        rank1 = None
        if first <= last:
            layer = self.layers[first]
            if rank1_ok and len(xb) == 1 and layer is self._rank1:
                layer.backward(d, need_dx=False, skip_activation=fused and first == last,
                               need_dw=False)
                rank1 = (layer._x.reshape(-1), d.reshape(-1))  # d now holds dz
            else:
                layer.backward(d, need_dx=False, skip_activation=fused and first == last)
        return value, p, rank1

    def _train_rows(self, x, t, idx):
        """One optimizer step on the samples idx of (x, t): fit's step.  Returns (loss value,
        predictions).  Runs as one compiled call where it can (see _dense_stack)."""
        stack = self._dense_stack(x, t, len(idx))
        if stack is None:
            return self._train_step(self._gather("x", x, idx), self._gather("t", t, idx))
        opt = self.optimizer
        lr = opt.learning_rate  # as Optimizer.apply: the rate for this step, then count it
        opt.iterations += 1
        return stack.run(idx, lr, opt.iterations), stack.predictions

    def _dense_stack(self, x, t, n):
        """The compiled training step (`_kernels.DenseStack`) for batches of n samples of
        (x, t): the same kernels as _train_step in one call, without the interpreter between
        them.  None where the Python step is needed: the NumPy backend, layers other than
        Dense (after leading Flattens), several parameter arrays (mixed dtypes), a loss on
        logits, or an optimizer or layer subclass."""
        hit = self._stacks.get(n)
        opt = self.optimizer
        if opt.state is None:
            opt.build(self._params)
        if hit is not None and hit[1] is opt and hit[2] is opt.state and hit[3] is x and hit[4] is t:
            return hit[0]
        stack, first = None, self._first_trainable
        make = getattr(backend.K, "DenseStack", None)
        dense = self.layers[first:]
        if (make is not None and dense and len(self._params) == 1
                and type(opt) in (optimizers.SGD, optimizers.Adagrad, optimizers.RMSprop, optimizers.Adam)
                and all(type(l) is Flatten for l in self.layers[:first])
                and all(type(l) is Dense for l in dense)
                and (self._fused or not self.loss.from_logits)):
            if self._fused:
                loss = "sparse_softmax_crossentropy" if self.loss.sparse else "softmax_crossentropy"
            else:
                loss = self.loss.kernel
            specs, width = [], dense[0].input_shape[0]
            for i, l in enumerate(dense):
                specs.append((l.kernel, l.bias, l.grads[0], l.grads[1] if l.use_bias else None,
                              l._buf("y", (n, l.units)),
                              l._buf("z", (n, l.units)) if l.activation.needs_preactivation else None,
                              l._buf("dx", (n, width)) if i else None,
                              l.activation.code, l.activation.alpha))
                width = l.units
            name, state, hyper, flag = opt._stack_args(opt.state[0])
            threads = backend.K.get_num_threads()["openmp"]
            part = (self._buffers.get("part", (threads - 1, n, dense[0].units), x.dtype)
                    if threads > 1 and n > 1 else None)
            stack = make(x, t, self._buffers.get("x", (n, *x.shape[1:]), x.dtype),
                         self._buffers.get("t", (n, *t.shape[1:]), t.dtype),
                         self._buffers.get("grad", (n, width), x.dtype), specs, loss, name,
                         self._params[0], self._grads[0], state, hyper, flag,
                         opt.weight_decay or 0.0, self._rank1 is dense[0], part, threads)
            stack.predictions = specs[-1][4]
        self._stacks[n] = (stack, opt, opt.state, x, t)
        return stack

    def _gather(self, key, a, idx):
        """a[idx] written into the model's reused batch buffer `key` (one per shape)."""
        buf = self._buffers.get(key, (len(idx), *a.shape[1:]), a.dtype)
        backend.K.gather_rows(buf, a, idx)
        return buf

    def _loss_value(self, p, tb):
        if self.loss.from_logits:
            probs = self._buffers.get("probs", p.shape, p.dtype, training=False)
            backend.K.act_forward(probs, p, SOFTMAX, 0.0)
            p = probs
        return self.loss.value(p, tb)

    def train_on_batch(self, x, y, return_dict=False):
        """One optimizer step on (x, y); returns the loss (and metrics) on that batch."""
        self._require_compiled("train_on_batch")
        x, t = self._prepare_xy(x, y)
        self._begin_training()
        value, p = self._train_step(x, t)
        logs = {"loss": float(value)}
        for m, mt in zip(self.metrics, _metric_targets(self.metrics, t)):
            m.reset_state()
            m.update(p, mt)
            logs[m.name] = m.result()
        return _format_logs(logs, return_dict)

    def _begin_training(self):
        self._fused = self._fused_softmax()
        self._rank1 = self._rank1_layer()
        self._stacks = {}  # batch size -> compiled step (built on first use)
        if not self.metrics and self._metric_ids:
            self._resolve_metrics()

    # ---- fit / evaluate / predict -------------------------------------------------------------

    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0):
        """Train for `epochs` epochs of mini-batch steps; returns a History.

        batch_size=1 is true SGD, batch_size=len(x) full-batch gradient descent.
        validation_split takes the last fraction of the samples (before shuffling);
        validation_data=(x_val, y_val) overrides it.  Ctrl-C stops between steps: the
        weights are those of the last completed step and History holds the finished epochs.
        """
        self._require_compiled("fit")
        batch_size = 32 if batch_size is None else batch_size
        _check_int("epochs", epochs, 0)
        _check_int("initial_epoch", initial_epoch, 0)
        _check_int("batch_size", batch_size, 1)
        verbose = _check_verbose(verbose)
        if not isinstance(validation_split, (int, float)) or not 0 <= validation_split < 1:
            raise ValueError(f"Expected validation_split in [0, 1). Received: {validation_split!r}")
        x, t = self._prepare_xy(x, y)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("Expected validation_data=(x_val, y_val). "
                                 f"Received: {type(validation_data).__name__}")
            val = self._prepare_xy(*validation_data, name="x_val")
        elif validation_split:
            split = int(len(x) * (1.0 - validation_split))
            if split == 0 or split == len(x):
                raise ValueError(f"validation_split={validation_split} leaves "
                                 f"{split} training and {len(x) - split} validation samples.")
            x, t, val = x[:split], t[:split], (x[split:], t[split:])
        n = len(x)
        if batch_size > n:
            raise ValueError(f"Expected batch_size <= the number of training samples ({n}). "
                             f"Received: batch_size={batch_size}. For full-batch gradient "
                             f"descent use batch_size={n}.")
        self._begin_training()
        self._resolve_metrics()
        metric_t = _metric_targets(self.metrics, t)
        steps = math.ceil(n / batch_size)
        history = callbacks_module.History()
        cbs = callbacks_module.CallbackList(
            list(callbacks or []) + [history], self,  # History last, as in Keras: it sees every key
            {"verbose": verbose, "epochs": epochs, "steps": steps})
        self.history = history
        self.stop_training = False
        cbs.on_train_begin()
        logs = {}
        loss_sum, seen = 0.0, 0

        def running():  # the epoch's running means, as Keras logs them
            return {"loss": loss_sum / max(seen, 1), **{m.name: m.result() for m in self.metrics}}
        interrupted = _defer_sigint()
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
                    idx = order[s:e]
                    value, p = self._train_rows(x, t, idx)
                    mts = [self._gather(("m", i), mt, idx) for i, mt in enumerate(metric_t)]
                    loss_sum += float(value) * (e - s)
                    seen += e - s
                    for m, mt in zip(self.metrics, mts):
                        m.update(p, mt)
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
        except KeyboardInterrupt:
            # stop between steps: weights are those of the last finished optimizer step
            if verbose:
                print("\nInterrupted: training stopped; the model keeps the weights of the "
                      "last completed step.")
            self.stop_training = True
        finally:
            interrupted.restore()
        cbs.on_train_end(logs)
        return history

    def _evaluate_prepared(self, x, t, batch_size):
        # fresh metric objects: evaluate may run in several threads at once
        n_out = self.layers[-1].output_shape[-1]
        metrics = [metrics_module.get(m, self.loss, n_out) for m in self._metric_ids]
        metric_t = _metric_targets(metrics, t)
        total = 0.0
        for s in range(0, len(x), batch_size):
            e = min(len(x), s + batch_size)
            p = self._forward(x[s:e], training=False)
            total += float(self._loss_value(p, t[s:e])) * (e - s)
            for m, mt in zip(metrics, metric_t):
                m.update(p, mt[s:e])
        return {"loss": total / len(x), **{m.name: m.result() for m in metrics}}

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", return_dict=False):
        """The loss (and metrics) on (x, y): a float without metrics, else
        [loss, *metrics]; a dict with return_dict=True."""
        self._require_compiled("evaluate")
        batch_size = 32 if batch_size is None else batch_size
        _check_int("batch_size", batch_size, 1)
        verbose = _check_verbose(verbose)
        x, t = self._prepare_xy(x, y)
        start = time.perf_counter()
        logs = self._evaluate_prepared(x, t, batch_size)
        if verbose:
            steps = math.ceil(len(x) / batch_size)
            bar = callbacks_module.Progbar(steps, verbose)
            bar.start = start
            bar.update(steps, lambda: logs, final=True)
        return _format_logs(logs, return_dict)

    def predict(self, x, batch_size=None, verbose="auto"):
        """The model's outputs for x, computed batch by batch; a new array."""
        batch_size = 32 if batch_size is None else batch_size
        _check_int("batch_size", batch_size, 1)
        verbose = _check_verbose(verbose)
        x = self._prepare_x(x)
        start = time.perf_counter()
        out = np.empty((len(x), *self.layers[-1].output_shape), x.dtype)
        for s in range(0, len(x), batch_size):
            e = min(len(x), s + batch_size)
            out[s:e] = self._forward(x[s:e], training=False)
        if verbose:
            steps = math.ceil(len(x) / batch_size)
            bar = callbacks_module.Progbar(steps, verbose)
            bar.start = start
            bar.update(steps, dict, final=True)
        return out

    def __call__(self, x, training=False):
        """The outputs for x in one batch; training=True applies dropout."""
        return self._forward(self._prepare_x(x), training=bool(training)).copy()

    # ---- saving -----------------------------------------------------------------------------

    def get_config(self):
        return {"name": self.name, "seed": self.seed,
                "input_shape": list(self._input_shape) if self._input_shape else None,
                "layers": [{"class": type(l).__name__, "config": l.get_config()} for l in self.layers]}

    @classmethod
    def from_config(cls, cfg):
        model = cls(name=cfg.get("name"), seed=cfg.get("seed"))
        if cfg.get("input_shape"):
            model._input_shape = tuple(cfg["input_shape"])
        for entry in cfg["layers"]:
            if entry.get("class") not in LAYERS:
                raise ValueError(f"Unknown layer class {entry.get('class')!r} in the saved model")
            model.add(LAYERS[entry["class"]].from_config(entry["config"]))
        return model

    def save(self, filepath):
        """Save architecture, weights, compile settings and optimizer state to one file,
        atomically (see fastnn/saving.py for the format)."""
        saving.save_model(self, filepath)

    def save_weights(self, filepath):
        """Save only the weight arrays (atomically)."""
        saving.save_weights(self, filepath)

    def load_weights(self, filepath):
        """Load weights saved by save_weights (or save) into this built model."""
        saving.load_weights(self, filepath)


def load_model(filepath):
    """Load a model written by `model.save(filepath)`; never executes code from the file."""
    return saving.load_model(filepath, Sequential)


class _defer_sigint:
    """While fit runs (in the main thread, with Python's default Ctrl-C handler), Ctrl-C
    only sets a flag that fit checks between steps, so a step is never cut in half: the
    weights stay those of the last completed step.  A second Ctrl-C interrupts at once."""

    def __init__(self):
        self.pending = False
        self.previous = None
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self.previous = signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum, frame):
        if self.pending:
            raise KeyboardInterrupt
        self.pending = True

    def __call__(self):
        return self.pending

    def restore(self):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None


def _metric_targets(metrics, t):
    """Each metric's targets, prepared once per call (class indices for the accuracies)."""
    return [m.prepare_targets(t) if m.sparse_targets and t.ndim == 2 else t for m in metrics]


def _all_finite(a):
    """No NaN or Inf in a, without a temporary the size of a: min and max propagate NaN,
    and an infinity is an extreme."""
    return bool(np.isfinite(np.min(a)) and np.isfinite(np.max(a)))


def _format_logs(logs, return_dict):
    logs = {k: float(v) for k, v in logs.items()}
    if return_dict:
        return logs
    if len(logs) == 1:
        return logs["loss"]
    return list(logs.values())


def _bytes(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}"
        n /= 1024


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"Expected {name} to be an int >= {low}. Received: {name}={value!r}")


def _check_verbose(verbose):
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2):
        raise ValueError(f"Expected verbose in ('auto', 0, 1, 2). Received: verbose={verbose!r}")
    return verbose
