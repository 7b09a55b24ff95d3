"""Where fit, evaluate and predict take their batches from (Keras' data adapters and epoch
iterator), one definition for the three.

A batch is `Batch(x, t, sw, mt, idx)`: the step reads rows idx of the prepared arrays x
(inputs), t (the loss's targets), sw (per-sample weights, or None) and mt (each metric's
targets).  From arrays (`ArraySource`) x, t, sw, mt are the whole prepared arrays and idx a
slice of this epoch's order, so a batch costs no copy before the step's own gather.  From a
Python generator / iterator or a `fastnn.utils.PyDataset` (`StreamSource`) each batch is
prepared on arrival and copied into staging arrays kept per batch size (so the compiled step,
built for its arrays, is reused from batch to batch), and idx is 0..n-1: data larger than
memory trains batch by batch.

`EpochIterator` cuts a source into epochs as Keras' does: `steps_per_epoch` batches each (the
source's own length when None), continuing where the last epoch stopped, with Keras' warning
when the source runs out first.
"""
from __future__ import annotations

import concurrent.futures
import math
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from fastnn.utils import PyDataset


class Batch(NamedTuple):
    x: NDArray[Any]
    t: NDArray[Any] | None
    sw: NDArray[Any] | None
    mt: list[NDArray[Any]]
    idx: NDArray[np.int64]


def is_stream(x: Any) -> bool:
    """Whether x is a source of batches (a PyDataset, a generator or any iterator) rather
    than an array of samples."""
    from fastnn.utils import PyDataset
    return isinstance(x, PyDataset) or (hasattr(x, "__next__") and hasattr(x, "__iter__"))


class ArraySource:
    """Batches of batch_size rows of prepared arrays, in a new order every epoch when
    shuffling (rng's permutation), else in order."""

    def __init__(self, x: NDArray[Any], t: NDArray[Any] | None, sw: NDArray[Any] | None,
                 mt: list[NDArray[Any]], batch_size: int, shuffle: bool = False,
                 rng: np.random.Generator | None = None) -> None:
        self.x, self.t, self.sw, self.mt = x, t, sw, mt
        self.batch_size, self.shuffle, self.rng = batch_size, shuffle, rng

    @property
    def num_batches(self) -> int | None:
        return math.ceil(len(self.x) / self.batch_size)

    def batches(self) -> Iterator[Batch]:
        n = len(self.x)
        order = (self.rng.permutation(n) if self.shuffle and self.rng is not None
                 else np.arange(n))
        for s in range(0, n, self.batch_size):
            yield Batch(self.x, self.t, self.sw, self.mt, order[s:s + self.batch_size])

    def on_epoch_begin(self) -> None:
        pass

    def on_epoch_end(self) -> None:
        pass


Prepare = Callable[[Any], "tuple[NDArray[Any], NDArray[Any] | None, NDArray[Any] | None, list[NDArray[Any]]]"]


class StreamSource:
    """Batches from a PyDataset (its __getitem__, in index order or shuffled per epoch; with
    workers > 1 fetched ahead by that many threads) or from an iterator (pulled one after the
    other; its next epoch continues where the last stopped).  prepare(item) turns what the
    source yields into prepared (x, t, sw, mt) arrays, checked."""

    def __init__(self, data: Any, prepare: Prepare, shuffle: bool = False,
                 rng: np.random.Generator | None = None) -> None:
        from fastnn.utils import PyDataset
        self.data, self.prepare, self.shuffle, self.rng = data, prepare, shuffle, rng
        self.dataset: PyDataset | None = data if isinstance(data, PyDataset) else None
        self.num_batches = None if self.dataset is None else self.dataset.num_batches
        # per batch size (the last two seen): staging arrays, so the step's arrays stay the same
        self._stage: dict[tuple[int, ...], list[NDArray[Any] | None]] = {}

    def _items(self) -> Iterator[Any]:
        if self.dataset is None:
            yield from self.data
            return
        n = self.dataset.num_batches
        if n is None:
            i = 0
            while True:  # an unknown length: until an IndexError, as Keras' adapter
                try:
                    yield self.dataset[i]
                except IndexError:
                    return
                i += 1
        order = (self.rng.permutation(n) if self.shuffle and self.rng is not None
                 else np.arange(n))
        if self.dataset.workers <= 1:
            for i in order:
                yield self.dataset[int(i)]
            return
        with concurrent.futures.ThreadPoolExecutor(self.dataset.workers) as pool:
            ahead = max(self.dataset.max_queue_size, self.dataset.workers)
            pending = [pool.submit(self.dataset.__getitem__, int(i)) for i in order[:ahead]]
            for k in range(n):
                if k + ahead < n:
                    pending.append(pool.submit(self.dataset.__getitem__, int(order[k + ahead])))
                yield pending[k].result()
                pending[k] = None  # type: ignore[call-overload]  # (drop the finished batch)

    def batches(self) -> Iterator[Batch]:
        for item in self._items():
            x, t, sw, mt = self.prepare(item)
            arrays = [x, t, sw, *mt]
            key = tuple(a.shape[0] if a is not None else -1 for a in arrays) + (len(x),)
            stage = self._stage.pop(key, None)
            if stage is None or any((s is None) != (a is None) or
                                    (s is not None and a is not None and
                                     (s.shape != a.shape or s.dtype != a.dtype))
                                    for s, a in zip(stage, arrays)):
                stage = [None if a is None else np.empty_like(a) for a in arrays]
            if len(self._stage) >= 2:
                del self._stage[next(iter(self._stage))]
            self._stage[key] = stage
            for s, a in zip(stage, arrays):
                if s is not None:
                    s[...] = a
            xs, ts, sws, *mts = stage
            yield Batch(xs, ts, sws, mts, np.arange(len(x)))  # type: ignore[arg-type]

    def on_epoch_begin(self) -> None:
        if self.dataset is not None:
            self.dataset.on_epoch_begin()

    def on_epoch_end(self) -> None:
        if self.dataset is not None:
            self.dataset.on_epoch_end()


Source = "ArraySource | StreamSource"


def joined(epoch: Iterator[tuple[int, Batch]], most: Callable[[], int]
           ) -> Iterator[tuple[int, Batch, int]]:
    """An epoch of an ArraySource's batches as (step, batch, count): batch joins the count (up
    to most()) consecutive batches of one size from step on, their idx concatenated (a
    StreamSource's cannot be joined: its next batch overwrites the current one's staging
    arrays)."""
    pending = next(epoch, None)
    while pending is not None:
        step, first = pending
        group = [first.idx]
        pending = next(epoch, None)
        while (pending is not None and len(group) < most()
               and len(pending[1].idx) == len(first.idx)):
            group.append(pending[1].idx)
            pending = next(epoch, None)
        idx = group[0] if len(group) == 1 else np.concatenate(group)
        yield step, first._replace(idx=idx), len(group)


class EpochIterator:
    """A source's batches cut into epochs, as Keras' EpochIterator: `steps_per_epoch` batches
    an epoch (None: the source's length, or until it ends), an epoch continuing the previous
    one's pass when steps_per_epoch is set, and Keras' warning when the data runs out first
    (also, as Keras, at the end of an iterator's pass).  `empty`: the last epoch had no batch
    (an exhausted iterator): fit then stops."""

    def __init__(self, source: ArraySource | StreamSource, steps_per_epoch: int | None = None
                 ) -> None:
        self.source, self.steps_per_epoch = source, steps_per_epoch
        self._current: Iterator[Batch] | None = None
        self._seen = 0
        self._known = source.num_batches
        self.empty = False

    @property
    def num_batches(self) -> int | None:
        """Batches per epoch (the progress bar's target), None when unknown."""
        return self.steps_per_epoch or self._known

    def _warn(self) -> None:
        warnings.warn("Your input ran out of data; interrupting training. Make sure that your "
                      "dataset or generator can generate at least `steps_per_epoch * epochs` "
                      "batches.", stacklevel=4)

    def epoch(self) -> Iterator[tuple[int, Batch]]:
        """One epoch: (step, batch) pairs."""
        self.source.on_epoch_begin()
        limit = self.steps_per_epoch or self._known
        if self._current is None or self.steps_per_epoch is None:
            self._current, self._seen = self.source.batches(), 0
        step = 0
        while limit is None or step < limit:
            if self._known is not None and self._seen >= self._known:
                if self.steps_per_epoch:
                    self._warn()
                break
            try:
                batch = next(self._current)
            except StopIteration:
                if self._known is None:
                    self._known = self._seen
                self._warn()
                self._current = None
                break
            self._seen += 1
            yield step, batch
            step += 1
        self.empty = step == 0
        if self._known is not None and self._seen >= self._known:
            self._current, self._seen = None, 0
        self.source.on_epoch_end()
