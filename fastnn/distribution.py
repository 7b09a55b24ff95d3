"""Data-parallel training over MPI, named as in `keras.distribution`.

    from fastnn import distribution
    distribution.set_distribution(distribution.DataParallel())  # run: mpiexec -n N python train.py
    model.compile(...); model.fit(x, y, batch_size=B, epochs=E)

One process per node (or socket), through mpi4py (`pip install "fastnn[mpi]"`).  Every rank
passes the same full (x, y); fit takes the same seeded shuffle on every rank and gives each
rank its share of each global batch of B rows (contiguous parts, as even as they go; a rank
may get none of a short last batch).  Each rank computes the gradient of its rows, scaled by
its share of the batch; one in-place allreduce over the flat gradient buffer sums them into the
gradient of the whole batch (with `DataParallel(overlap=True)`, bucket by bucket as the backward
finishes them), and every rank takes the same optimizer step: all ranks hold the
same weights, equal to a single process's fit with the same seed and batch size (to float
rounding).  At the start of fit the weights, the optimizer state and the generator of shuffling
and dropout are broadcast from rank 0.  Logged losses and metrics are global (one small
allreduce per step), so callbacks such as EarlyStopping and TerminateOnNaN decide the same on
every rank; evaluate and validation are sharded and reduced.  Only rank 0 prints progress and
writes files (save, save_weights, ModelCheckpoint, CSVLogger).  An uncaught exception on any
rank aborts every rank (MPI_Abort) instead of leaving the others waiting in an allreduce.

Without the `[mpi]` extra, `DataParallel()` in a plain process is a single-process run; under
mpiexec it raises an ImportError naming the extra.
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from types import TracebackType

    from numpy.typing import NDArray

    from fastnn.metrics import Metric
    from fastnn.optimizers import Optimizer

_current: DataParallel | None = None

# set by the launchers of MPICH (Hydra), Open MPI, Intel MPI and Slurm for every rank
_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS")


def _launched_size() -> int:
    """The number of ranks the environment says this process was launched with (1: none)."""
    for var in _LAUNCHER_SIZE_VARS:
        try:
            return max(1, int(os.environ[var]))
        except (KeyError, ValueError):
            continue
    return 1


class DataParallel:
    """Data parallelism over the MPI world: a replica of the model on every rank, each global
    batch split across the ranks, gradients averaged by allreduce (see the module docstring).

    Args:
        devices: accepted for Keras' signature; fastnn runs one rank per process (None).
        overlap: fastnn's, not Keras' (PyTorch DDP buckets always, its knob is
            `bucket_cap_mb`).  True: the gradient buffer is reduced in buckets, one per layer
            and the first layer's kernel gradient in row chunks of about `bucket_cap_mb`, each
            handed to a non-blocking allreduce as soon as the compiled backward has finished
            it (the last layer's first), so the reduction of the first buckets can run while the
            backward computes the next (as Horovod and DDP do); the optimizer step waits for all
            of them.  Default False: slower where it was measured, two ranks on a 2-core
            machine (bench/distributed.py: a step 1.2x longer with overlap, and 4x with MPICH's
            progress thread): both cores compute, and a shared-memory allreduce is itself CPU
            work (copies and sums) that advances only inside MPI calls, so nothing is idle to
            overlap with, while the buckets add calls and synchronization points.  It is meant
            for ranks on separate nodes, where the network card moves the data (with MPICH,
            MPIR_CVAR_ASYNC_PROGRESS=1 where a core is spare).
        bucket_cap_mb: the size of the first layer's kernel gradient chunks under overlap, in
            megabytes (10^6 bytes), > 0.
    """

    def __init__(self, devices: Any = None, overlap: bool = False, bucket_cap_mb: float = 0.25,
                 **kwargs: Any) -> None:
        if not isinstance(overlap, (bool, np.bool_)):
            raise ValueError(f"Expected overlap to be True or False. Received: overlap={overlap!r}")
        if (isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, (int, float))
                or not 0 < bucket_cap_mb < float("inf")):
            raise ValueError(f"Expected bucket_cap_mb to be a number > 0. "
                             f"Received: bucket_cap_mb={bucket_cap_mb!r}")
        self.overlap, self.bucket_cap_mb = bool(overlap), float(bucket_cap_mb)
        self.comm: Any = None  # mpi4py's MPI.COMM_WORLD, None without mpi4py
        try:
            from mpi4py import MPI
        except ImportError as e:
            if _launched_size() > 1:
                raise ImportError(
                    f"DataParallel: this process was started by mpiexec as one of "
                    f"{_launched_size()} ranks, but mpi4py cannot be imported ({e}). Install "
                    "the MPI extra: pip install \"fastnn[mpi]\"") from None
            # (ignore: a module to mypy where mpi4py is installed, Any where it is not)
            MPI = None  # type: ignore[assignment, unused-ignore]
        if MPI is not None:
            self.comm = MPI.COMM_WORLD
            self._mpi = MPI
        self.rank: int = self.comm.Get_rank() if self.comm else 0
        self.size: int = self.comm.Get_size() if self.comm else 1
        if self.size > 1:
            _abort_on_uncaught_exceptions(self.comm)

    # ---- collective operations (every rank calls them, in the same order) ----------------------

    def shard(self, n: int) -> tuple[int, int]:
        """[start, end) of this rank's part of n rows: contiguous, as even as they go."""
        return n * self.rank // self.size, n * (self.rank + 1) // self.size

    def allreduce_(self, buf: NDArray[Any]) -> NDArray[Any]:
        """buf := the sum of buf over the ranks, in place (a C-contiguous array)."""
        if self.size > 1:
            self.comm.Allreduce(self._mpi.IN_PLACE, buf, op=self._mpi.SUM)
        return buf

    def broadcast_(self, buf: NDArray[Any], root: int = 0) -> NDArray[Any]:
        """buf := rank root's buf, in place."""
        if self.size > 1:
            self.comm.Bcast(buf, root=root)
        return buf

    def broadcast(self, obj: Any, root: int = 0) -> Any:
        """Rank root's obj (any picklable value fastnn itself makes)."""
        return self.comm.bcast(obj, root=root) if self.size > 1 else obj

    def __repr__(self) -> str:
        return f"<DataParallel rank {self.rank} of {self.size}>"


class BucketedAllreduce:
    """The allreduce of one flat gradient buffer in buckets (DataParallel's overlap): bucket i
    is buf[buckets[i]:buckets[i + 1]] (int64 boundaries, 0 to buf.size).  Each step: `start`,
    then `ready` for buckets as they are final (the compiled step's callback, top bucket first),
    then `finish`, which posts the buckets not posted yet (top first) and waits for all.  Every
    rank posts the same buckets in the same order (MPI matches collectives by order)."""

    def __init__(self, dist: DataParallel, buf: NDArray[Any], buckets: NDArray[np.int64]) -> None:
        self.comm, self._mpi = dist.comm, dist._mpi
        self.buf, self.buckets = buf, buckets
        self.scale = 1.0
        self.requests: list[Any] = []

    def start(self, scale: float) -> None:
        """A new step, whose buckets are scaled by `scale` (this rank's share of the batch)
        before they are reduced."""
        self.scale, self.requests = scale, []

    def ready(self, off: int, count: int) -> None:
        """buf[off:off + count] (the next bucket, top first) is final: scale it, start its
        allreduce, and let MPI progress the ones in flight."""
        seg = self.buf[off:off + count]
        if self.scale != 1.0:
            seg *= seg.dtype.type(self.scale)
        self.requests.append(self.comm.Iallreduce(self._mpi.IN_PLACE, seg, op=self._mpi.SUM))
        self._mpi.Request.Testall(self.requests)

    def finish(self) -> None:
        """Post the buckets not posted yet (top first), then wait for every allreduce: buf is
        the sum over the ranks."""
        b = self.buckets
        for i in range(len(b) - 2 - len(self.requests), -1, -1):
            self.ready(int(b[i]), int(b[i + 1] - b[i]))
        self._mpi.Request.Waitall(self.requests)
        self.requests = []


def _abort_on_uncaught_exceptions(comm: Any) -> None:
    """An exception that ends one rank ends them all (MPI_Abort), after its traceback."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        previous(kind, value, tb)
        sys.stderr.flush()
        comm.Abort(1)
    sys.excepthook = hook


def set_distribution(value: DataParallel | None) -> None:
    """Use `value` (a DataParallel, or None for a single process) for every fit from now on."""
    global _current
    if value is not None and not isinstance(value, DataParallel):
        raise TypeError(f"Expected a fastnn.distribution.DataParallel or None. "
                        f"Received: {value!r} ({type(value).__name__})")
    _current = value


def distribution() -> DataParallel | None:
    """The distribution set with set_distribution, or None."""
    return _current


def active() -> DataParallel | None:
    """The distribution when it spans more than one rank, else None (a plain run)."""
    return _current if _current is not None and _current.size > 1 else None


def rank() -> int:
    """This process's rank (0 without a distribution)."""
    return _current.rank if _current is not None else 0


def size() -> int:
    """The number of ranks (1 without a distribution)."""
    return _current.size if _current is not None else 1


def is_primary() -> bool:
    """Whether this is rank 0: the one that prints progress and writes files."""
    return rank() == 0


def allreduce_sums(dist: DataParallel, values: Sequence[float], metrics: Sequence[Metric] = (),
                   since: Sequence[NDArray[np.float64]] | None = None) -> NDArray[np.float64]:
    """The sums over the ranks of `values` (floats), returned, and of the metrics' states
    (`Metric.state()`, flat float64 arrays of sums): each metric's change since the states
    `since` (all of it when None) is summed and added to `since`, so the metrics hold the
    global state on every rank.  One small allreduce."""
    states = [m.state() for m in metrics]
    since = since if since is not None else [np.zeros_like(s) for s in states]
    buf = np.concatenate([np.asarray(values, np.float64)] +
                         [s - b for s, b in zip(states, since)])
    dist.allreduce_(buf)
    k = len(values)
    for m, b in zip(metrics, since):
        m.set_state(b + buf[k:k + b.size])
        k += b.size
    return buf[:len(values)]


def sync_replicas(dist: DataParallel, params: Sequence[NDArray[Any]],
                  frozen: Sequence[NDArray[Any]], optimizer: Optimizer,
                  rng: np.random.Generator) -> None:
    """Rank 0's weights (trainable params, non-trainable frozen), optimizer state and step
    count, and generator on every rank (at the start of fit; the optimizer's state built
    first)."""
    optimizer.kernels(params)
    for a in (list(params) + list(frozen) + optimizer.variables + optimizer.moving_averages
              + optimizer.gradient_accumulators):
        dist.broadcast_(a)
    optimizer.calls = dist.broadcast(optimizer.calls)
    rng.bit_generator.state = dist.broadcast(rng.bit_generator.state)
