"""The training step: one concept, one definition per backend.

A step is: gather the batch, each layer's forward kernel, one loss kernel (value and
gradient; fused with a final softmax), each layer's backward kernel in reverse, and one
optimizer kernel over all parameters (they live in one flat buffer, see `pack_parameters`).
`TrainStep` owns everything a step needs besides the layers' weights: the batch buffers, the
fused-softmax decision, the fast paths and the choice of the step that runs:

- **compiled** (the compiled backend, a stack of Dense layers after optional Flattens, a
  `plain` optimizer declared by its rule (no clipping, accumulation, EMA, loss scaling or
  decay exclusion), a loss its kernel computes alone, no regularizer or constraint, and every
  Dense in float32/float64 or every one in mixed_bfloat16; any other layer (BatchNormalization,
  LayerNormalization, PReLU, ...) takes the layer-by-layer step): the whole step is one call
  into C, `_kernels.DenseStack` (`fnn_dense_stack_step` in src_c/step.inc), per-sample weights
  included, with its fast paths: at batch size 1 the first kernel's gradient goes to the
  optimizer as the factors of x dz.T (never written); with several threads the first layer is
  owned by rows.  Under mixed_bfloat16 it is `bf16_step`: the batch gathered into bfloat16,
  the products on the bf16 kernels, each kernel's optimizer pass writing its packs (and on AMX
  with several threads the first layer owned by rows too).  It is the
  only step such a model runs (fit, train_on_batch).
- **layer by layer** (every other model, the NumPy backend, and `jit_compile=False`): the
  same kernels called from Python, one layer at a time (`Layer.call` / `Layer.backward`),
  with the same rank-1 fast path.  On the NumPy backend this is the reference step, the
  oracle of the compiled one; on the compiled backend it makes the same kernel calls in the
  same order, so the two agree bit for bit (except where the first layer is owned by rows,
  which rounds its sum differently; tests/test_train_step.py, test_mixed_precision.py).

Regularizers and constraints (fastnn/regularizers.py, constraints.py) are applied in one
place, `TrainStep._activity`, the end of `_gradients` and `TrainStep._constrain`: the weight
and activity penalties are added to the loss (fit's and evaluate's, as Keras reports them) and their gradients to the
gradients before the optimizer step; the constraints project the weights after it.

Entry points (used by models.py, gradcheck.py and the tests): `pack_parameters`,
`forward`, and `TrainStep.run`, `gradients`, `loss_value`, `gather`,
`compiled_step`.  This module never imports models.py.
"""
from __future__ import annotations

import contextlib
import weakref
from typing import (TYPE_CHECKING, Any, Callable, Hashable, Iterable, Iterator, NamedTuple,
                    Sequence, cast)

import numpy as np

from fastnn import _codes, _data, backend, distribution, initializers
from fastnn.layers import Buffers, Dense, Flatten
from fastnn.optimizers import Optimizer

if TYPE_CHECKING:
    import threading

    from fastnn._batches import Batch
    from numpy.typing import NDArray

    from fastnn._kernels import DenseStack
    from fastnn.layers import Layer
    from fastnn.losses import Loss
    from fastnn.metrics import Metric

_SOFTMAX = _codes.ACTIVATIONS["softmax"]


class Packed(NamedTuple):
    """The parameter buffers of `pack_parameters`: the trainable weights and their gradients
    (what the optimizer steps), and the non-trainable weights (never stepped)."""
    params: list[NDArray[Any]]
    grads: list[NDArray[Any]]
    frozen: list[NDArray[Any]]


def pack_parameters(layers: Sequence[Layer], rng: np.random.Generator) -> Packed:
    """Make every layer's weights (and gradients) views of one flat array (`Layer.bind_weights`):
    the optimizer then updates all parameters in one kernel call, one pass.  The trainable
    weights come first (in layer order), then the non-trainable ones (`Layer.weight_trainable`:
    a frozen layer's, moving statistics), so the optimizer's buffer is the flat array's prefix.
    Weights a layer already has are copied in; declared ones (`Layer.add_weight`) are
    initialized in place with rng, so the peak memory is the weights and gradients (checked to
    fit first).  Returns one array each, or one per weight where the layers' dtypes differ."""
    specs = [(l, i, spec, trainable) for l in layers
             for i, (spec, trainable) in enumerate(zip(l.weight_specs, l.weight_trainable()))]
    if not specs:
        return Packed([], [], [])
    order = sorted(range(len(specs)), key=lambda j: not specs[j][3])  # stable: trainable first
    sizes = [int(np.prod(spec.shape)) for _, _, spec, _ in specs]
    _data.ensure_memory(2 * sum(n * l.dtype.itemsize for (l, _, _, _), n in zip(specs, sizes)),
                        "the model's weights and their gradients")
    dtypes = {l.dtype for l, _, _, _ in specs}
    n_train = sum(sizes[j] for j in order if specs[j][3])
    cut: dict[int, tuple[NDArray[Any], NDArray[Any]]] = {}
    if len(dtypes) == 1:
        flat = _data.aligned_empty(sum(sizes), dtypes.pop())
        gflat = _data.aligned_empty(flat.shape, flat.dtype, zero=True)
        e = 0
        for j in order:
            cut[j] = (flat[e:e + sizes[j]], gflat[e:e + sizes[j]])
            e += sizes[j]
        packed = Packed([flat[:n_train]] if n_train else [], [gflat[:n_train]] if n_train else [],
                        [flat[n_train:]] if n_train < len(flat) else [])
    else:  # mixed precision: one array each
        for j, (l, _, _, _) in enumerate(specs):
            cut[j] = (np.empty(sizes[j], l.dtype), np.zeros(sizes[j], l.dtype))
        packed = Packed([cut[j][0] for j in order if specs[j][3]],
                        [cut[j][1] for j in order if specs[j][3]],
                        [cut[j][0] for j in order if not specs[j][3]])
    j = 0
    for layer in layers:
        views: list[NDArray[Any]] = []
        gviews: list[NDArray[Any]] = []
        for i, spec in enumerate(layer.weight_specs):
            w, g = (a.reshape(spec.shape) for a in cut[j])
            if len(layer.weights) == len(layer.weight_specs):
                w[...] = layer.weights[i]
            else:
                initializers.fill(spec.initializer, w, rng)
            views.append(w)
            gviews.append(g)
            j += 1
        layer.bind_weights(views, gviews)
    return packed


def rows(idx: NDArray[Any]) -> slice | NDArray[Any]:
    """idx as a slice when it is a run of consecutive rows (a view, no copy), else idx."""
    if len(idx) and idx[-1] - idx[0] == len(idx) - 1 and (len(idx) < 3 or
                                                           bool(np.all(np.diff(idx) == 1))):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


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
        # any penalty or constraint: the layer-by-layer step, see _activity and _constrain
        self.regularized = any(l.regularized for l in self.layers)
        self.fused = (loss.fused_code is not None and not loss.softmax_logits and act is not None
                      and act.name == "softmax"
                      and self.layers[-1].activity_regularizer is None)
        first = self.layers[self.first] if self.first < len(self.layers) else None
        # the first kernel leads the optimizer's buffer (a trainable Dense): with threads it may
        # be owned by rows; at batch size 1 its gradient goes to the optimizer as x dz.T, but
        # not for mixed_bfloat16 Dense layers (their products in bf16)
        self.mixed = [l.dtype_policy.mixed for l in self.layers if type(l) is Dense]
        self.owned = (type(first) is Dense and len(params) == 1
                      and all(first.weight_trainable()) and not self.regularized)
        self.rank1 = self.owned and not any(self.mixed)
        # batch size -> (compiled step or None, what it was built for)
        self._stacks: dict[int, tuple[DenseStack | None, tuple[Any, ...]]] = {}
        # DataParallel(overlap=True): (its distribution, the bucketed allreduce of grads)
        self._bucketed_for: tuple[distribution.DataParallel,
                                  distribution.BucketedAllreduce] | None = None
        self._activations = [l.activation for l in self.layers]  # what the step was made for
        self.steps_predictions: NDArray[Any] | None = None  # run_steps(keep=True)'s

    def stale(self) -> bool:
        """Whether a layer's activation was assigned since this step was made (the fused
        softmax decision and the compiled steps read them once): the model then makes a new
        one."""
        return any(l.activation is not a for l, a in zip(self.layers, self._activations))

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

    def evaluate(self, batches: Iterable[Batch], metrics: Sequence[Metric],
                 weighted: Sequence[bool]) -> tuple[float, float]:
        """The summed loss over the batches (`fastnn._batches`: prepared arrays and the rows of
        each batch), and the number of samples; the metrics take every batch (those weighted
        with the batch's sample weights)."""
        total, count = 0.0, 0
        for b in batches:
            sl = rows(b.idx)
            if self.regularized:  # Keras' evaluated loss includes the penalties
                p, penalty = self._forward_penalized(b.x[sl])
            else:
                p, penalty = forward(self.layers, b.x[sl], training=False), 0.0
            sw = None if b.sw is None else b.sw[sl]
            total += (float(self.loss_value(p, cast("NDArray[Any]", b.t)[sl], sw))
                      + penalty) * len(b.idx)
            count += len(b.idx)
            for m, mt, w in zip(metrics, b.mt, weighted):
                m.update(p, mt[sl], sw if w else None)
        return total, count

    def release(self) -> None:
        """Drop the compiled steps: they hold the training arrays (fit calls this at its end,
        so a finished fit keeps no reference to the caller's data)."""
        self._stacks.clear()

    # ---- the step ---------------------------------------------------------------------------

    def run(self, optimizer: Optimizer, x: NDArray[Any], t: NDArray[Any],
            idx: NDArray[Any], sw: NDArray[Any] | None = None
            ) -> tuple[float, NDArray[Any] | None]:
        """One optimizer step on the samples idx of (x, t), prepared arrays, weighted by the
        per-sample weights sw (or None): fit's step.  Returns (loss value, predictions: a
        reused buffer).  Under a distribution (fastnn.distribution) this rank's share of idx
        is stepped: see _distributed."""
        dist = distribution.active()
        if dist is not None:
            return self._distributed(dist, optimizer, x, t, idx, sw)
        stack = self.compiled_step(optimizer, x, t, len(idx), sw)
        if stack is None:
            return self._python_step(optimizer, self.gather("x", x, idx), self.gather("t", t, idx),
                                     None if sw is None else self.gather("sw", sw, idx))
        optimizer.begin_step(self.params)
        return stack.run(idx), stack.predictions

    def run_steps(self, optimizer: Optimizer, x: NDArray[Any], t: NDArray[Any],
                  idx: NDArray[Any], n: int, sw: NDArray[Any] | None = None,
                  keep: bool = False) -> NDArray[np.float64] | None:
        """len(idx) // n steps of run's, batch after batch of n samples of idx, in one call
        into C: their losses, or None (nothing stepped) where that step is not compiled or a
        distribution is active (then run each).  keep: each step's predictions too, their rows
        in idx's order, in `steps_predictions` (until the next call)."""
        if distribution.active() is not None or len(idx) % n:
            return None
        stack = self.compiled_step(optimizer, x, t, n, sw)
        if stack is None:
            return None
        p = stack.predictions
        self.steps_predictions = (self.buffers.get("steps_predictions", (len(idx), p.shape[1]),
                                                   p.dtype) if keep else None)
        return stack.run_steps(idx, optimizer.count_steps(len(idx) // n), self.steps_predictions)

    def gradients(self, xb: NDArray[Any], tb: NDArray[Any],
                  swb: NDArray[Any] | None = None) -> float:
        """Forward, loss and backward on the batch (weighted by swb, or None), layer by layer:
        fills every layer's grads (nothing is stepped).  Returns the loss value."""
        return self._gradients(xb, tb, rank1_ok=False, swb=swb)[0]

    def loss_value(self, p: NDArray[Any], tb: NDArray[Any],
                   swb: NDArray[Any] | None = None) -> float:
        """The loss of the outputs p (probabilities, or logits for a from_logits loss),
        weighted by swb (or None)."""
        if self.loss.softmax_logits:
            probs = self.buffers.get("probs", p.shape, p.dtype, training=False)
            backend.K.act_forward(probs, p, _SOFTMAX, ())
            p = probs
        return self.loss.value(p, tb, swb)

    def gather(self, key: Hashable, a: NDArray[Any], idx: NDArray[Any]) -> NDArray[Any]:
        """a[idx] written into the step's reused batch buffer `key` (one per shape)."""
        buf = self.buffers.get(key, (len(idx), *a.shape[1:]), a.dtype)
        backend.K.gather_rows(buf, a, idx)
        return buf

    def _distributed(self, dist: distribution.DataParallel, optimizer: Optimizer,
                     x: NDArray[Any], t: NDArray[Any], idx: NDArray[Any],
                     sw: NDArray[Any] | None) -> tuple[float, NDArray[Any] | None]:
        """Data parallel: this rank's rows of the global batch idx, their gradient (one call
        into C for a Dense stack, `compiled_step(grads_only=True)`, else layer by layer) scaled
        by their share of the batch, the gradients summed over the ranks in place
        (one allreduce per parameter buffer), then the same optimizer step on every rank.
        Returns (this rank's part of the batch loss, its predictions or None)."""
        s, e = dist.shard(len(idx))
        p: NDArray[Any] | None
        value, p = 0.0, None
        share = (e - s) / len(idx)
        bucketed = self._bucketed(dist)
        if bucketed is not None:
            bucketed.start(share if e > s else 1.0)
        stack = (self.compiled_step(optimizer, x, t, e - s, sw, grads_only=True,
                                    bucketed=bucketed) if e > s else None)
        if stack is not None:  # this rank's gradients in one call into C, unstepped
            value, p = stack.run(idx[s:e]), stack.predictions  # (bucketed: posted as final)
        if e > s:
            if stack is None:
                value, p, _ = self._gradients(
                    self.gather("x", x, idx[s:e]), self.gather("t", t, idx[s:e]),
                    rank1_ok=False, loss_scale=optimizer.loss_scale_factor,
                    swb=None if sw is None else self.gather("sw", sw, idx[s:e]))
            value *= share
            if bucketed is None:  # (else each bucket is scaled as it is posted)
                for g in self.grads:
                    g *= g.dtype.type(share)
        else:
            for g in self.grads:
                g[...] = 0
        if bucketed is not None:
            bucketed.finish()
        else:
            for g in self.grads:
                dist.allreduce_(g)
        optimizer.apply(self.params, self.grads)
        self._constrain()
        return value, p

    def _bucketed(self, dist: distribution.DataParallel) -> distribution.BucketedAllreduce | None:
        """The bucketed allreduce of the gradient buffer under dist's overlap (one buffer: a
        model of mixed dtypes reduces each of its buffers whole), made once per distribution:
        one bucket per layer's trainable gradients, the lowest layer's kernel gradient (the
        one the overlapped compiled step computes in row chunks) cut in chunks of about
        bucket_cap_mb."""
        if not dist.overlap or len(self.grads) != 1:
            return None
        hit = self._bucketed_for
        if hit is not None and hit[0] is dist and hit[1].buf is self.grads[0]:
            return hit[1]
        g = self.grads[0]
        g0, item = g.__array_interface__["data"][0], g.dtype.itemsize
        cuts = {0, g.size}
        kernels = []  # (offset, rows, row size) of each layer's first gradient in g, if 2-D
        for layer in self.layers:
            spans = [((a.__array_interface__["data"][0] - g0) // item, a) for a in layer.grads]
            spans = [(o, a) for o, a in spans if 0 <= o < g.size]
            if spans:
                o, a = min(spans, key=lambda oa: oa[0])
                cuts.add(o)
                if a.ndim == 2:
                    kernels.append((o, a.shape[0], a.shape[1]))
        if kernels:  # the first layer's kernel gradient in row chunks
            o, r, c = min(kernels)
            step = max(1, int(dist.bucket_cap_mb * 1e6) // (c * item))
            cuts.update(o + k * c for k in range(step, r, step))
        bucketed = distribution.BucketedAllreduce(dist, g, np.array(sorted(cuts), np.int64))
        self._bucketed_for = (dist, bucketed)
        return bucketed

    # ---- layer by layer -----------------------------------------------------------------------

    def _python_step(self, optimizer: Optimizer, xb: NDArray[Any], tb: NDArray[Any],
                     swb: NDArray[Any] | None) -> tuple[float, NDArray[Any]]:
        value, p, rank1 = self._gradients(xb, tb, rank1_ok=optimizer.plain,
                                          loss_scale=optimizer.loss_scale_factor, swb=swb)
        optimizer.apply(self.params, self.grads, rank1)
        self._constrain()
        return value, p

    def _gradients(self, xb: NDArray[Any], tb: NDArray[Any], rank1_ok: bool,
                   loss_scale: float | None = None, swb: NDArray[Any] | None = None
                   ) -> tuple[float, NDArray[Any], tuple[NDArray[Any], NDArray[Any]] | None]:
        """Forward, loss and backward: fills every layer's grads and returns (loss, predictions,
        rank1).  With rank1_ok and a single sample, the first dense kernel's gradient is left
        as rank1 = (x, dz) for the optimizer instead; else rank1 is None.  loss_scale: the
        gradients are of loss * loss_scale (the optimizer's loss_scale_factor; the returned
        loss is unscaled, as Keras logs it)."""
        inputs = []
        p = xb
        for layer in self.layers:
            inputs.append(p)
            p = layer.call(p, training=True)
        grad = self.buffers.get("grad", p.shape, p.dtype)
        if self.fused:
            value = self.loss.fused_value_and_grad(grad, p, tb, swb)
        elif self.loss.softmax_logits:  # the model outputs logits: softmax here, fused gradient
            probs = self.buffers.get("probs", p.shape, p.dtype)
            backend.K.act_forward(probs, p, _SOFTMAX, ())
            value = self.loss.fused_value_and_grad(grad, probs, tb, swb)
        else:
            value = self.loss.value_and_grad(grad, p, tb, swb)
        if loss_scale is not None:
            grad *= grad.dtype.type(loss_scale)
        d = grad
        last, first = len(self.layers) - 1, self.first
        outputs = inputs[1:] + [p]
        for i in range(last, first, -1):
            if self.regularized:
                value += self._activity(i, outputs[i], d, loss_scale)
            d = cast("NDArray[Any]",  # need_dx=True: an array
                     self.layers[i].backward(d, need_dx=True,
                                             skip_activation=self.fused and i == last))
        rank1 = None
        if self.regularized:
            value += sum(self._activity(i, outputs[i], d if i == first else None, loss_scale)
                         for i in range(min(first, last) + 1))
        if first <= last:
            layer, skip = self.layers[first], self.fused and first == last
            if rank1_ok and len(xb) == 1 and self.rank1:
                cast(Dense, layer).backward(  # self.rank1: the layer is a Dense
                    d, need_dx=False, skip_activation=skip, need_dw=False)
                rank1 = (inputs[first].reshape(-1), d.reshape(-1))  # d now holds dz
            else:
                layer.backward(d, need_dx=False, skip_activation=skip)
        if self.regularized:  # the weight penalties' gradients, after backward wrote the grads
            value += sum(l.regularization_loss(add_gradients=True, scale=loss_scale or 1.0)
                         for l in self.layers)
        return value, p, rank1

    # ---- regularizers and constraints (the one place the step applies them) ----------------

    def _activity(self, i: int, y: NDArray[Any], dy: NDArray[Any] | None,
                  loss_scale: float | None) -> float:
        """Layer i's activity penalty of its output y, its gradient (times the optimizer's
        loss_scale_factor, as the loss's) added to dy (the gradient of the loss with respect to
        y) unless None; the weight penalties are added at the end of _gradients, once backward
        has written the weight gradients."""
        return self.layers[i].activity_loss(y, dy, scale=loss_scale or 1.0)

    def _forward_penalized(self, x: NDArray[Any]) -> tuple[NDArray[Any], float]:
        """forward(training=False) and the penalties Keras adds to an evaluated loss."""
        penalty = 0.0
        for layer in self.layers:
            x = layer.call(x, training=False)
            penalty += layer.regularization_loss(add_gradients=False)
            penalty += layer.activity_loss(x)
        return x, penalty

    def _constrain(self) -> None:
        """Project the constrained weights after the optimizer step, as Keras."""
        if self.regularized:
            for layer in self.layers:
                layer.apply_constraints()

    # ---- compiled -------------------------------------------------------------------------------

    def compiled_step(self, optimizer: Optimizer, x: NDArray[Any], t: NDArray[Any],
                      n: int, sw: NDArray[Any] | None = None, grads_only: bool = False,
                      bucketed: distribution.BucketedAllreduce | None = None
                      ) -> DenseStack | None:
        """The compiled step (`_kernels.DenseStack`) that runs batches of n samples of the
        prepared (x, t) (weighted by sw, or None) under this optimizer, built on first use;
        None where the layer-by-layer step runs (see the module docstring).  grads_only: a
        step that stops with the gradients (data parallel; float32/float64 models); bucketed
        (with grads_only): the step hands it each bucket of gradients as soon as it is final."""
        kernels = optimizer.kernels(self.params) if self.params and not grads_only else None
        built_for = (optimizer, kernels, x, t, sw, grads_only, bucketed)
        hit = self._stacks.pop(n, None)
        if hit is not None and all(a is b for a, b in zip(hit[1], built_for)):
            self._stacks[n] = hit  # most recently used last
            return hit[0]
        stack = None
        make = getattr(backend.K, "DenseStack", None)
        dense = self.layers[self.first:]
        if (make is not None and self.jit_compile is not False and dense and len(self.params) == 1
                and not self.regularized
                and type(optimizer).apply is Optimizer.apply and optimizer.plain
                and all(type(l) is Flatten for l in self.layers[:self.first])
                and all(type(l) is Dense for l in dense)
                and (self.fused or not self.loss.softmax_logits) and self.loss.kernel_only
                and (all(self.mixed) or not any(self.mixed))
                and not (grads_only and any(self.mixed))):
            # (params is not empty, and every layer in dense is a Dense)
            stack = self._build_stack(make, None if grads_only else cast("list[Any]", kernels)[0],
                                      x, t, n, cast("list[Dense]", dense), sw,
                                      bucketed)
        if len(self._stacks) >= 2:  # an epoch's two batch sizes (full, last); no more
            del self._stacks[next(iter(self._stacks))]
        self._stacks[n] = (stack, built_for)
        return stack

    def _build_stack(self, make: Callable[..., DenseStack], opt_kernel: Any, x: NDArray[Any],
                     t: NDArray[Any], n: int, dense: Sequence[Dense],
                     sw: NDArray[Any] | None,
                     bucketed: distribution.BucketedAllreduce | None = None) -> DenseStack:
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
        rank1 = self.rank1 and opt_kernel is not None
        part = (buf("part", (threads - 1, n, dense[0].units), x.dtype)
                if threads > 1 and n > 1 and self.owned and opt_kernel is not None else None)
        scratch = None
        xb = buf("x", (n, *x.shape[1:]), x.dtype)
        if all(self.mixed):  # the batch in bf16, and per layer its packs and bf16 output
            K = backend.K
            xb = buf("x16", (n, *x.shape[1:]), np.uint16)
            for i, l in enumerate(dense):
                fi, fo = cast("NDArray[Any]", l.kernel).shape
                wp = buf(("wp", i), (K.bf16_packed_size(fi, fo),), np.uint16)
                wtp = buf(("wtp", i), (K.bf16_packed_size(fo, fi),), np.uint16)
                K.bf16_pack_forward(wp, wtp, l.kernel)  # (then each step's optimizer pass)
                specs[i] += (wp, wtp, buf(("y16", i), (n, fo), np.uint16)
                             if i < len(dense) - 1 else None)
            scratch = buf("bf16_scratch", (max(K.bf16_backward_scratch_size(
                n, *cast("NDArray[Any]", l.kernel).shape) for l in dense),), np.uint16)
        return make(x, t, xb, buf("t", (n, *t.shape[1:]), t.dtype),
                    buf("grad", (n, width), self.params[0].dtype), specs, loss, self.params[0],
                    self.grads[0], opt_kernel, rank1, part, threads, sw,
                    None if sw is None else buf("sw", (n,), self.params[0].dtype), scratch,
                    *((bucketed.ready, bucketed.buckets) if bucketed is not None else ()))
