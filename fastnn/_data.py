"""Checks and conversions of what users pass to fit / evaluate / predict / train_on_batch:
arrays of samples and targets (validated and converted once per call), ints, verbosity, and
the shape of returned logs (as Keras returns them)."""
from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, Sequence, cast

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import DTypeLike, NDArray

    from fastnn.losses import Loss
    from fastnn.metrics import Metric


def as_samples(x: Any, name: str = "x") -> NDArray[Any]:
    """x as a NumPy array of real numbers of shape (batch, ...) with a sample at least
    (nested lists and objects with __array__ are converted)."""
    if isinstance(x, (list, tuple)) or (hasattr(x, "__array__") and not isinstance(x, np.ndarray)):
        try:
            x = np.asarray(x)
        except ValueError:
            raise TypeError(f"Expected {name} to be a NumPy array (or nested lists of numbers). "
                            f"Received a {type(x).__name__} that does not form an array, such "
                            f"as a list of (x, y) batches: pass x and y as arrays") from None
    if not isinstance(x, np.ndarray):
        raise TypeError(f"Expected {name} to be a NumPy array. Received: {type(x).__name__}")
    if x.dtype.kind not in "fiub":
        raise TypeError(f"Expected {name} to hold real numbers (float, int or bool). "
                        f"Received: {name}.dtype={x.dtype}")
    if x.ndim < 2 or x.shape[0] == 0 or 0 in x.shape[1:]:
        raise ValueError(f"Expected {name} of shape (batch, ...) with at least one sample of "
                         f"at least one value. Received: {name}.shape={x.shape}")
    return x


def as_list(callbacks: Any) -> list[Any]:
    """None, one callback, or a list of them, as a list."""
    if callbacks is None:
        return []
    return list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]


def conform_samples(x: NDArray[Any], sample_shape: tuple[int, ...], dtype: DTypeLike,
                    name: str = "x") -> NDArray[Any]:
    """x (from as_samples) as a C-contiguous, finite array of dtype with samples of sample_shape."""
    if tuple(x.shape[1:]) != sample_shape:
        want = (f"{sample_shape[0]} features" if len(sample_shape) == 1
                else f"samples of shape {sample_shape}")
        raise ValueError(f"Expected {name} with {want}. Received: {name}.shape={x.shape}")
    x = np.ascontiguousarray(x, dtype=dtype)
    if x.dtype.kind == "f" and not all_finite(x):
        bad = int(np.argwhere(~np.isfinite(x.reshape(len(x), -1)))[0, 0])
        raise ValueError(f"Expected finite values in {name}. Received: NaN or Inf in sample {bad}")
    return x


def as_targets(y: Any, n: int, loss: Loss, n_out: int, dtype: DTypeLike,
               name: str = "x") -> NDArray[Any]:
    """y as the loss's targets (loss.prepare_targets) for n samples, checked finite."""
    if y is None:
        raise ValueError(f"Expected targets y for {name}. Received: None")
    y = np.asarray(y)
    if y.dtype.kind not in "fiub":
        raise TypeError(f"Expected y to hold real numbers. Received: y.dtype={y.dtype}")
    if len(y) != n:
        raise ValueError(f"Expected x and y with the same number of samples. "
                         f"Received: len(x)={n}, len(y)={len(y)}")
    t = loss.prepare_targets(y, n_out, dtype)
    if t.dtype.kind == "f" and not all_finite(t):
        raise ValueError("Expected finite values in y. Received: NaN or Inf")
    return t


def check_validation(validation_split: float, validation_data: Any) -> None:
    # (cast: to mypy a float is no numbers.Real, so the lines below would be unreachable)
    if isinstance(validation_split, bool) or not isinstance(cast(Any, validation_split),
                                                            numbers.Real) \
            or not 0 <= validation_split < 1:
        raise ValueError(f"Expected validation_split in [0, 1). Received: {validation_split!r}")
    from fastnn import _batches
    if validation_data is not None and not _batches.is_stream(validation_data) and (
            not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3)):
        raise ValueError("Expected validation_data=(x_val, y_val), (x_val, y_val, "
                         "val_sample_weight) or a generator / PyDataset of batches. "
                         f"Received: {type(validation_data).__name__}")


def split_validation(x: NDArray[Any], t: NDArray[Any], validation_split: float
                     ) -> tuple[NDArray[Any], NDArray[Any],
                                tuple[NDArray[Any], NDArray[Any]] | None]:
    """(x, t, (x_val, t_val)): the last validation_split of the samples, as Keras takes them
    (before shuffling); (x, t, None) for 0."""
    if not validation_split:
        return x, t, None
    split = int(len(x) * (1.0 - validation_split))
    if split == 0 or split == len(x):
        raise ValueError(f"validation_split={validation_split} leaves "
                         f"{split} training and {len(x) - split} validation samples.")
    return x[:split], t[:split], (x[split:], t[split:])


def aligned_empty(shape: int | tuple[int, ...], dtype: DTypeLike, zero: bool = False
                  ) -> NDArray[Any]:
    """np.empty (np.zeros when zero) whose data start on a 64-byte boundary (a cache line, an
    AVX-512 vector, an AMX tile row): NumPy's large arrays start 16 bytes past one, and a tile
    row or vector that straddles two cache lines costs the kernels 7-28% (measured)."""
    dt = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64))
    raw = (np.zeros if zero else np.empty)(n * dt.itemsize + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start:start + n * dt.itemsize].view(dt).reshape(shape)


def ensure_memory(nbytes: int, what: str) -> None:
    """MemoryError, before allocating, if nbytes cannot fit in the memory available now (Linux's
    MemAvailable): the alternative is the OOM killer ending the process later."""
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(l.split()[1]) * 1024 for l in f if l.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return
    if nbytes > avail:
        raise MemoryError(f"Expected {what} to fit in memory. Received: they need "
                          f"{nbytes / 2**30:.2f} GiB, {avail / 2**30:.2f} GiB is available")


def all_finite(a: NDArray[Any]) -> bool:
    """No NaN or Inf in a, without a temporary the size of a.  First a's sum, one pass: a NaN
    or an infinity makes any sum NaN or infinite, so a finite sum proves them absent; then,
    only if the sum is not finite (finite values can overflow it), min and max, which
    propagate NaN and meet an infinity as an extreme."""
    with np.errstate(over="ignore", invalid="ignore"):  # (an overflow is no error here)
        total = np.sum(a)
    return bool(np.isfinite(total) or (np.isfinite(np.min(a)) and np.isfinite(np.max(a))))


def metric_targets(metrics: Sequence[Metric], t: NDArray[Any]) -> list[NDArray[Any]]:
    """Each metric's targets, prepared once per call (class indices for the accuracies)."""
    return [m.prepare_targets(t) for m in metrics]


def format_logs(logs: dict[str, Any], return_dict: bool
                ) -> dict[str, Any] | Any | list[Any]:
    """As Keras returns them: a dict, the loss alone, or [loss, *metrics]; a scalar as a float,
    a metric's vector result (F1Score(average=None), several thresholds) as an array."""
    logs = {k: float(v) if np.ndim(v) == 0 else np.array(v, np.float64) for k, v in logs.items()}
    if return_dict:
        return logs
    if len(logs) == 1:
        return logs["loss"]
    return list(logs.values())


def check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"Expected {name} to be an int >= {low}. Received: {name}={value!r}")


def check_verbose(verbose: int | str) -> int:
    """verbose as 0, 1 or 2 ("auto": 1); 0 on every rank but the first of a distributed run,
    so only rank 0 prints progress."""
    if verbose == "auto":
        verbose = 1
    if verbose not in (0, 1, 2):
        raise ValueError(f"Expected verbose in ('auto', 0, 1, 2). Received: verbose={verbose!r}")
    from fastnn import distribution
    return verbose if distribution.is_primary() else 0
