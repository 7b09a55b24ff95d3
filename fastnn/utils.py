"""Helpers named as in `keras.utils`: one-hot labels and seeding; the model summary table and
fit's Ctrl-C handling."""
from __future__ import annotations

import random
import signal
import threading
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from fastnn import config as _config

if TYPE_CHECKING:
    from types import FrameType

    from numpy.typing import ArrayLike, NDArray

    from fastnn.models import Sequential

_seed_source = np.random.default_rng()


def to_categorical(x: ArrayLike, num_classes: int | None = None) -> NDArray[np.float32]:
    """One-hot encode integer labels: shape (n,) -> (n, num_classes), float32.

    num_classes defaults to max(x) + 1, as in Keras."""
    x = np.asarray(x)
    if x.size and not np.issubdtype(x.dtype, np.integer):
        if not np.all(np.equal(np.mod(x, 1), 0)):
            raise ValueError(f"Expected integer class labels. Received: x.dtype={x.dtype} "
                             "with non-integer values")
    x = x.astype(np.int64)
    if x.ndim > 1 and x.shape[-1] == 1:
        x = x.reshape(x.shape[:-1])
    if x.size and x.min() < 0:
        raise ValueError(f"Expected class labels >= 0. Received: min(x)={x.min()}")
    if num_classes is None:
        num_classes = int(x.max()) + 1 if x.size else 0
    elif x.size and x.max() >= num_classes:
        raise ValueError(f"Expected labels below num_classes={num_classes}. "
                         f"Received: max(x)={x.max()}")
    out = np.zeros(x.shape + (num_classes,), dtype=np.float32)
    np.put_along_axis(out, x[..., None], 1.0, axis=-1)
    return out


class PyDataset:
    """Keras' `keras.utils.PyDataset`: a dataset of batches for fit, evaluate and predict,
    for data that does not fit in memory.  Subclass it: `__getitem__(index)` returns batch
    `index` as (x, y), (x, y, sample_weight) or, for predict, x; `__len__` the number of
    batches (or override `num_batches`, None for an unknown length: batches are then read until
    __getitem__ raises IndexError).  `on_epoch_begin`/`on_epoch_end` run around every epoch.

    Args:
        workers: threads fetching batches ahead (default 1: in the training thread).
        use_multiprocessing: accepted for Keras compatibility; fastnn always uses threads
            (its kernels release the GIL, so threads overlap loading with training).
        max_queue_size: batches fetched ahead at most with workers > 1 (default 10).
    """

    def __init__(self, workers: int = 1, use_multiprocessing: bool = False,
                 max_queue_size: int = 10) -> None:
        for name, value in (("workers", workers), ("max_queue_size", max_queue_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected {name} to be an int >= 1. Received: {name}={value!r}")
        self._workers, self._max_queue_size = workers, max_queue_size
        self._use_multiprocessing = bool(use_multiprocessing)

    @property
    def workers(self) -> int:
        return getattr(self, "_workers", 1)

    @property
    def use_multiprocessing(self) -> bool:
        return getattr(self, "_use_multiprocessing", False)

    @property
    def max_queue_size(self) -> int:
        return getattr(self, "_max_queue_size", 10)

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__(index)")

    @property
    def num_batches(self) -> int | None:
        """The number of batches (len(self)); None when the dataset has no __len__."""
        if hasattr(self, "__len__"):
            return len(self)
        return None

    def on_epoch_begin(self) -> None:
        """Called at the start of every epoch."""

    def on_epoch_end(self) -> None:
        """Called at the end of every epoch (e.g. to reshuffle)."""


def set_random_seed(seed: int) -> None:
    """Seed Python's `random`, NumPy's global RNG and fastnn's own seed source, as
    `keras.utils.set_random_seed` does: models built afterwards get identical weights and
    identical training runs."""
    global _seed_source
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"Expected seed to be a non-negative int. Received: seed={seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    _seed_source = np.random.default_rng(int(seed))


def new_rng(seed: int | None = None) -> np.random.Generator:
    """A fresh Generator: from seed if given, else drawn from fastnn's seed source."""
    if seed is None:
        seed = int(_seed_source.integers(0, 2**63 - 1))
    return np.random.default_rng(seed)


def print_summary(model: Sequential, print_fn: Callable[[str], Any] = print) -> None:
    """Print a model's layers, their output shapes and parameter counts (`model.summary()`)."""
    rows = [(f"{l.name} ({type(l).__name__})", _output_shape(l),
             f"{l.count_params():,}" if l.built else "0 (unbuilt)") for l in model.layers]
    w = [max([len(h)] + [len(r[i]) for r in rows]) + 2
         for i, h in enumerate(("Layer (type)", "Output Shape", "Param #"))]
    total = model.count_params() if model.built else 0
    size = total * _config.dtype().itemsize
    frozen = int(sum(w.size for w in model.non_trainable_weights))
    fsize = frozen * _config.dtype().itemsize
    lines = [f'Model: "{model.name}"', "┏" + "┳".join("━" * x for x in w) + "┓",
             "┃" + "┃".join(h.ljust(x) if i < 2 else h.rjust(x) for i, (h, x) in
                            enumerate(zip(("Layer (type)", "Output Shape", "Param #"), w))) + "┃",
             "┡" + "╇".join("━" * x for x in w) + "┩"]
    for r in rows:
        lines.append("│" + "│".join(c.ljust(x) if i < 2 else c.rjust(x)
                                    for i, (c, x) in enumerate(zip(r, w))) + "│")
    lines.append("└" + "┴".join("─" * x for x in w) + "┘")
    lines += [f" Total params: {total:,} ({_bytes(size)})",
              f" Trainable params: {total - frozen:,} ({_bytes(size - fsize)})",
              f" Non-trainable params: {frozen:,} ({_bytes(fsize)})"]
    policies = {l.dtype_policy.name for l in model.layers if hasattr(l, "dtype_policy")}
    if any(p != "float32" for p in policies):  # which policy, and which bf16 kernels run
        from fastnn import backend
        path = ""
        if "mixed_bfloat16" in policies and backend.compiled is not None:
            try:
                path = f" (bf16 products: {backend.compiled.bf16_path()})"
            except ValueError as e:
                path = f" (bf16 products: none: {e})"
        lines.append(f" Dtype policy: {', '.join(sorted(policies))}{path}")
    print_fn("\n".join(lines))


def _output_shape(layer: Any) -> str:
    """A summary row's output shape: a nested model's own (batch first), a layer's with None
    for the batch; "?" before it is built."""
    if not layer.built:
        return "?"
    if hasattr(layer, "_leaves"):  # a Sequential: (batch, ...) already
        return str(layer.output_shape)
    return str((None, *layer.output_shape))


def _bytes(n: float) -> str:  # type: ignore[return]  # (the loop returns, at "GB" at the latest)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}"
        n /= 1024


class defer_sigint:
    """While fit runs (in the main thread, with Python's default Ctrl-C handler), Ctrl-C
    only sets a flag that fit checks between steps, so a step is never cut in half: the
    weights stay those of the last completed step.  A second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.pending = False
        self.previous: Any = None  # the handler to restore (signal.signal's return value)
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self.previous = signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.pending:
            raise KeyboardInterrupt
        self.pending = True

    def __call__(self) -> bool:
        return self.pending

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None
