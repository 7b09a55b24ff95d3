"""The training step: one concept, one definition per backend.

A step is: gather the batch, each layer's forward kernel, one loss kernel (value and
gradient; fused with a final softmax), each layer's backward kernel in reverse, and one
optimizer kernel over all parameters (they live in one flat buffer, see `pack_parameters`).
`TrainStep` owns everything a step needs besides the layers' weights: the batch buffers, the
fused-softmax decision, the fast paths and the choice of the step that runs:

- **compiled** (the compiled backend, a stack of Dense layers after optional Flattens, an
  optimizer declared by its rule): the whole step is one call into C, `_kernels.DenseStack`
  (`fnn_dense_stack_step` in src_c/step.inc), with its fast paths: at batch size 1 the first
  kernel's gradient goes to the optimizer as the factors of x dz.T (never written); with
  several threads the first layer is owned by rows.  It is the only step such a model runs
  (fit, train_on_batch).
- **layer by layer** (every other model, the NumPy backend, and `jit_compile=False`): the
  same kernels called from Python, one layer at a time (`Layer.call` / `Layer.backward`),
  with the same rank-1 fast path.  On the NumPy backend this is the reference step, the
  oracle of the compiled one; on the compiled backend it makes the same kernel calls in the
  same order, so the two agree bit for bit (except where the first layer is owned by rows,
  which rounds its sum differently; tests/test_train_step.py).

Entry points (used by models.py, gradcheck.py and the tests): `pack_parameters`,
`forward`, and `TrainStep.run`, `gradients`, `loss_value`, `gather`,
`compiled_step`.  This module never imports models.py.
"""
from __future__ import annotations

import contextlib
import weakref
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterator, Sequence, cast

import numpy as np

from fastnn import _codes, _data, backend, distribution, initializers
from fastnn.layers import Buffers, Dense, Flatten
from fastnn.optimizers import Optimizer

if TYPE_CHECKING:
    import threading

    from numpy.typing import NDArray

    from fastnn._kernels import DenseStack
    from fastnn.layers import Layer
    from fastnn.losses import Loss
    from fastnn.metrics import Metric

_SOFTMAX = _codes.ACTIVATIONS["softmax"]


def pack_parameters(layers: Sequence[Layer], rng: np.random.Generator
                    ) -> tuple[list[NDArray[Any]], list[NDArray[Any]]]:
    """Make every layer's weights (and gradients) views of one flat array (`Layer.bind_weights`):
    the optimizer then updates all parameters in one kernel call, one pass.  Weights a layer
    already has are copied in; declared ones (`Layer.add_weight`) are initialized in place with
    rng, so the peak memory is the weights and gradients (checked to fit first).  Returns
    (params, grads): one array each, or one per weight where the layers' dtypes differ."""
    specs = [(l, shape, init) for l in layers for _, shape, init in l.weight_specs]
    if not specs:
        return [], []
    sizes = [int(np.prod(shape)) for _, shape, _ in specs]
    _data.ensure_memory(2 * sum(n * l.dtype.itemsize for (l, _, _), n in zip(specs, sizes)),
                        "the model's weights and their gradients")
    dtypes, flat = {l.dtype for l, _, _ in specs}, None
    if len(dtypes) == 1:
        flat = np.empty(sum(sizes), dtypes.pop())
        gflat = np.zeros_like(flat)
        ends = np.cumsum(sizes)
        cut = [(flat[e - n:e], gflat[e - n:e]) for e, n in zip(ends, sizes)]
    else:  # mixed precision: one array each
        cut = [(np.empty(n, l.dtype), np.zeros(n, l.dtype)) for (l, _, _), n in zip(specs, sizes)]
    k = 0
    for layer in layers:
        views: list[NDArray[Any]] = []
        gviews: list[NDArray[Any]] = []
        for i, (_, shape, init) in enumerate(layer.weight_specs):
            w, g = (a.reshape(shape) for a in cut[k])
            if len(layer.weights) == len(layer.weight_specs):
                w[...] = layer.weights[i]
            else:
                initializers.fill(init, w, rng)
            views.append(w)
            gviews.append(g)
            k += 1
        layer.bind_weights(views, gviews)
    if flat is not None:
        return [flat], [gflat]
    return [w for w, _ in cut], [g for _, g in cut]


def _bases(a: Any) -> Iterator[NDArray[Any]]:
    """a and the arrays it views (a view's memory is its base's: pinning a pins that)."""
    while isinstance(a, np.ndarray):
        yield a
        a = a.base


def forward(layers: Sequence[Layer], x: NDArray[Any], training: bool) -> NDArray[Any]:
    """The layers' outputs for the batch x (a layer's reused buffer: copy to keep it)."""
    for layer in layers:
        x = layer.call(x, training=training)
    return x


class TrainStep:
    """The training step of `layers` under `loss`, over the parameter buffers (params, grads)
    of `pack_parameters`.  jit_compile=False: always the layer-by-layer step."""

    def __init__(self, layers: Sequence[Layer], loss: Loss, params: list[NDArray[Any]],
                 grads: list[NDArray[Any]], jit_compile: bool | str = True) -> None:
        self.layers, self.loss = list(layers), loss
        self.params, self.grads = params, grads
        self.jit_compile = jit_compile
        self.buffers = Buffers()  # batch copies, loss gradient, probabilities, compiled step's
        with_weights = [i for i, l in enumerate(self.layers) if l.weights]
        # layers before the first one with weights need no input gradient
        self.first = with_weights[0] if with_weights else len(self.layers)
        act = self.layers[-1].activation
        self.fused = (loss.fused_code is not None and not loss.from_logits and act is not None
                      and act.name == "softmax")
        first = self.layers[self.first] if self.first < len(self.layers) else None
        # at batch size 1 the first kernel's gradient goes to the optimizer as x dz.T
        self.rank1 = type(first) is Dense and len(params) == 1
        # batch size -> (compiled step or None, what it was built for)
        self._stacks: dict[int, tuple[DenseStack | None, tuple[Any, ...]]] = {}

    @contextlib.contextmanager
    def running(self, lock: threading.Lock,
                *arrays: NDArray[Any]) -> Iterator[list[weakref.ref[NDArray[Any]]]]:
        """fit's (and train_on_batch's) hold on a model: one at a time (a second call in
        another thread raises RuntimeError instead of racing on the weights), the training
        arrays pinned for the duration (NumPy refuses to resize an array that has a weak
        reference, so none can move under a kernel), the compiled steps dropped at the end."""
        if not lock.acquire(blocking=False):
            raise RuntimeError("Expected one fit or train_on_batch at a time on a model. "
                               "Received a call while another runs on it in another thread.")
        pins = [weakref.ref(b) for a in arrays for b in _bases(a)]
        try:
            yield pins
        finally:
            self.release()
            lock.release()

    def evaluate(self, x: NDArray[Any], t: NDArray[Any], batch_size: int,
                 metrics: Sequence[Metric]) -> float:
        """The summed loss over prepared (x, t), batch by batch (the metrics take every batch);
        the mean is that over len(x)."""
        metric_t = _data.metric_targets(metrics, t)
        total = 0.0
        for s in range(0, len(x), batch_size):
            e = min(len(x), s + batch_size)
            p = forward(self.layers, x[s:e], training=False)
            total += float(self.loss_value(p, t[s:e])) * (e - s)
            for m, mt in zip(metrics, metric_t):
                m.update(p, mt[s:e])
        return total

    def release(self) -> None:
        """Drop the compiled steps: they hold the training arrays (fit calls this at its end,
        so a finished fit keeps no reference to the caller's data)."""
        self._stacks.clear()

    # ---- the step ---------------------------------------------------------------------------

    def run(self, optimizer: Optimizer, x: NDArray[Any], t: NDArray[Any],
            idx: NDArray[Any]) -> tuple[float, NDArray[Any] | None]:
        """One optimizer step on the samples idx of (x, t), prepared arrays: fit's step.
        Returns (loss value, predictions: a reused buffer).  Under a distribution
        (fastnn.distribution) this rank's share of idx is stepped: see _distributed."""
        dist = distribution.active()
        if dist is not None:
            return self._distributed(dist, optimizer, x, t, idx)
        stack = self.compiled_step(optimizer, x, t, len(idx))
        if stack is None:
            return self._python_step(optimizer, self.gather("x", x, idx), self.gather("t", t, idx))
        optimizer.begin_step(self.params)
        return stack.run(idx), stack.predictions

    def gradients(self, xb: NDArray[Any], tb: NDArray[Any]) -> float:
        """Forward, loss and backward on the batch, layer by layer: fills every layer's grads
        (nothing is stepped).  Returns the loss value."""
        return self._gradients(xb, tb, rank1_ok=False)[0]

    def loss_value(self, p: NDArray[Any], tb: NDArray[Any]) -> float:
        """The loss of the outputs p (probabilities, or logits for a from_logits loss)."""
        if self.loss.from_logits:
            probs = self.buffers.get("probs", p.shape, p.dtype, training=False)
            backend.K.act_forward(probs, p, _SOFTMAX, ())
            p = probs
        return self.loss.value(p, tb)

    def gather(self, key: Hashable, a: NDArray[Any], idx: NDArray[Any]) -> NDArray[Any]:
        """a[idx] written into the step's reused batch buffer `key` (one per shape)."""
        buf = self.buffers.get(key, (len(idx), *a.shape[1:]), a.dtype)
        backend.K.gather_rows(buf, a, idx)
        return buf

    def _distributed(self, dist: distribution.DataParallel, optimizer: Optimizer,
                     x: NDArray[Any], t: NDArray[Any],
                     idx: NDArray[Any]) -> tuple[float, NDArray[Any] | None]:
        """Data parallel: this rank's rows of the global batch idx, their gradient (layer by
        layer) scaled by their share of the batch, the gradients summed over the ranks in place
        (one allreduce per parameter buffer), then the same optimizer step on every rank.
        Returns (this rank's part of the batch loss, its predictions or None)."""
        s, e = dist.shard(len(idx))
        p: NDArray[Any] | None
        value, p = 0.0, None
        if e > s:
            value, p, _ = self._gradients(self.gather("x", x, idx[s:e]),
                                          self.gather("t", t, idx[s:e]), rank1_ok=False)
            share = (e - s) / len(idx)
            value *= share
            for g in self.grads:
                g *= g.dtype.type(share)
        else:
            for g in self.grads:
                g[...] = 0
        for g in self.grads:
            dist.allreduce_(g)
        optimizer.apply(self.params, self.grads)
        return value, p

    # ---- layer by layer -----------------------------------------------------------------------

    def _python_step(self, optimizer: Optimizer, xb: NDArray[Any],
                     tb: NDArray[Any]) -> tuple[float, NDArray[Any]]:
        value, p, rank1 = self._gradients(xb, tb, rank1_ok=True)
        optimizer.apply(self.params, self.grads, rank1)
        return value, p

    def _gradients(self, xb: NDArray[Any], tb: NDArray[Any], rank1_ok: bool
                   ) -> tuple[float, NDArray[Any], tuple[NDArray[Any], NDArray[Any]] | None]:
        """Forward, loss and backward: fills every layer's grads and returns (loss, predictions,
        rank1).  With rank1_ok and a single sample, the first dense kernel's gradient is left
        as rank1 = (x, dz) for the optimizer instead; else rank1 is None."""
        inputs = []
        p = xb
        for layer in self.layers:
            inputs.append(p)
            p = layer.call(p, training=True)
        grad = self.buffers.get("grad", p.shape, p.dtype)
        if self.fused:
            value = self.loss.fused_value_and_grad(grad, p, tb)
        elif self.loss.from_logits:  # the model outputs logits: softmax here, fused gradient
            probs = self.buffers.get("probs", p.shape, p.dtype)
            backend.K.act_forward(probs, p, _SOFTMAX, ())
            value = self.loss.fused_value_and_grad(grad, probs, tb)
        else:
            value = self.loss.value_and_grad(grad, p, tb)
        d = grad
        last, first = len(self.layers) - 1, self.first
        for i in range(last, first, -1):
            d = cast("NDArray[Any]",  # need_dx=True: an array
                     self.layers[i].backward(d, need_dx=True,
                                             skip_activation=self.fused and i == last))
        rank1 = None
        if first <= last:
            layer, skip = self.layers[first], self.fused and first == last
            if rank1_ok and len(xb) == 1 and self.rank1:
                cast(Dense, layer).backward(  # self.rank1: the layer is a Dense
                    d, need_dx=False, skip_activation=skip, need_dw=False)
                rank1 = (inputs[first].reshape(-1), d.reshape(-1))  # d now holds dz
            else:
                layer.backward(d, need_dx=False, skip_activation=skip)
        return value, p, rank1

    # ---- compiled -------------------------------------------------------------------------------

    def compiled_step(self, optimizer: Optimizer, x: NDArray[Any], t: NDArray[Any],
                      n: int) -> DenseStack | None:
        """The compiled step (`_kernels.DenseStack`) that runs batches of n samples of the
        prepared (x, t) under this optimizer, built on first use; None where the layer-by-layer
        step runs (see the module docstring)."""
        kernels = optimizer.kernels(self.params) if self.params else None
        built_for = (optimizer, kernels, x, t)
        hit = self._stacks.pop(n, None)
        if hit is not None and all(a is b for a, b in zip(hit[1], built_for)):
            self._stacks[n] = hit  # most recently used last
            return hit[0]
        stack = None
        make = getattr(backend.K, "DenseStack", None)
        dense = self.layers[self.first:]
        if (make is not None and self.jit_compile is not False and dense and len(self.params) == 1
                and type(optimizer).apply is Optimizer.apply
                and all(type(l) is Flatten for l in self.layers[:self.first])
                and all(type(l) is Dense for l in dense)
                and (self.fused or not self.loss.from_logits)):
            # (params is not empty, and every layer in dense is a Dense)
            stack = self._build_stack(make, cast("list[Any]", kernels)[0], x, t, n,
                                      cast("list[Dense]", dense))
        if len(self._stacks) >= 2:  # an epoch's two batch sizes (full, last); no more
            del self._stacks[next(iter(self._stacks))]
        self._stacks[n] = (stack, built_for)
        return stack

    def _build_stack(self, make: Callable[..., DenseStack], opt_kernel: Any, x: NDArray[Any],
                     t: NDArray[Any], n: int, dense: Sequence[Dense]) -> DenseStack:
        loss = self.loss.fused_code if self.fused else self.loss.code
        buf = self.buffers.get
        specs: list[tuple[Any, ...]] = []
        width = cast("NDArray[Any]", dense[0].kernel).shape[0]  # bound by the model
        for i, l in enumerate(dense):
            act = l.activation
            specs.append((l.kernel, l.bias, l.grads[0], l.grads[1] if l.use_bias else None,
                          buf(("y", i), (n, l.units), x.dtype),
                          buf(("z", i), (n, l.units), x.dtype) if act.needs_preactivation else None,
                          buf(("dx", i), (n, width), x.dtype) if i else None, act.code, act.params))
            width = l.units
        threads = backend.K.get_num_threads()["openmp"]
        part = (buf("part", (threads - 1, n, dense[0].units), x.dtype)
                if threads > 1 and n > 1 else None)
        return make(x, t, buf("x", (n, *x.shape[1:]), x.dtype), buf("t", (n, *t.shape[1:]), t.dtype),
                    buf("grad", (n, width), x.dtype), specs, loss, self.params[0], self.grads[0],
                    opt_kernel, self.rank1, part, threads)
