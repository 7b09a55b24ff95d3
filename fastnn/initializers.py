"""Weight initializers, named as in `keras.initializers` (the ones Dense uses most).

An initializer is a callable (shape, dtype, rng) -> array.  The built-in ones also take
out=: they then fill that array in place, in chunks, with no temporary of its size (a model's
weights are initialized in place in its parameter buffer, see `fill`).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import DTypeLike, NDArray

    # an initializer: (shape, dtype, rng) -> array (the built-in ones also take out=)
    Initializer = Callable[..., NDArray[Any]]
    # what a built-in one draws: (shape, n, rng) -> n float64 values
    _Draw = Callable[[tuple[int, ...], int, np.random.Generator], NDArray[np.float64]]

_CHUNK = 1 << 16  # elements drawn at a time (float64 temporaries of 512 KB at most)


def _chunks(out: NDArray[Any]) -> Iterator[NDArray[Any]]:
    flat = out.reshape(-1)
    for s in range(0, flat.size, _CHUNK):
        yield flat[s:s + _CHUNK]


def fill(init: Initializer, out: NDArray[Any], rng: np.random.Generator) -> None:
    """Initialize out in place: a built-in initializer fills it chunk by chunk; a custom one's
    result is copied in."""
    if getattr(init, "fills_in_place", False):
        init(out.shape, out.dtype, rng, out=out)
    else:
        out[...] = init(out.shape, out.dtype, rng)


def _in_place(draw: _Draw) -> Initializer:
    """A built-in initializer from draw(shape, n, rng) -> n float64 values, taken in order
    chunk by chunk (the same values as one draw of the whole size for the plain draws)."""
    def init(shape: tuple[int, ...], dtype: DTypeLike, rng: np.random.Generator,
             out: NDArray[Any] | None = None) -> NDArray[Any]:
        out = np.empty(shape, dtype) if out is None else out
        for chunk in _chunks(out):
            chunk[...] = draw(shape, chunk.size, rng)
        return out
    # fills_in_place: a function attribute, read by fill() (mypy knows no such attribute)
    init.__name__, init.__doc__, init.fills_in_place = (  # type: ignore[attr-defined]
        draw.__name__, draw.__doc__, True)
    # pickled by name, as the module-level function it replaces (models pickle, see models.py)
    init.__qualname__, init.__module__ = draw.__qualname__, draw.__module__
    return init


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a kernel (in, out); a vector counts as both."""
    return (shape[0], shape[1]) if len(shape) > 1 else (shape[0], shape[0])


@_in_place
def zeros(shape: tuple[int, ...], n: int, rng: np.random.Generator) -> NDArray[np.float64]:
    return np.zeros(n)


@_in_place
def ones(shape: tuple[int, ...], n: int, rng: np.random.Generator) -> NDArray[np.float64]:
    return np.ones(n)


@_in_place
def glorot_uniform(shape: tuple[int, ...], n: int,
                   rng: np.random.Generator) -> NDArray[np.float64]:
    """U(-l, l), l = sqrt(6 / (fan_in + fan_out)) (Keras' default kernel initializer)."""
    fan_in, fan_out = _fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, n)


@_in_place
def glorot_normal(shape: tuple[int, ...], n: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """Truncated normal, stddev sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(shape)
    return _truncated_normal(n, math.sqrt(2.0 / (fan_in + fan_out)), rng)


@_in_place
def he_uniform(shape: tuple[int, ...], n: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """U(-l, l), l = sqrt(6 / fan_in)."""
    limit = math.sqrt(6.0 / _fans(shape)[0])
    return rng.uniform(-limit, limit, n)


@_in_place
def he_normal(shape: tuple[int, ...], n: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """Truncated normal, stddev sqrt(2 / fan_in)."""
    return _truncated_normal(n, math.sqrt(2.0 / _fans(shape)[0]), rng)


@_in_place
def random_normal(shape: tuple[int, ...], n: int,
                  rng: np.random.Generator) -> NDArray[np.float64]:
    """N(0, 0.05^2)."""
    return rng.standard_normal(n) * 0.05


def _truncated_normal(n: int, stddev: float, rng: np.random.Generator) -> NDArray[np.float64]:
    """Normal draws beyond two standard deviations redrawn; scaled as Keras' variance
    scaling does (stddev / 0.87962566103423978)."""
    x = rng.standard_normal(n)
    bad = np.abs(x) > 2
    while bad.any():
        x[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(x) > 2
    return x * stddev / 0.87962566103423978


_ALL = {f.__name__: f for f in (zeros, ones, glorot_uniform, glorot_normal, he_uniform,
                                 he_normal, random_normal)}


def get(identifier: str | Initializer) -> Initializer:
    """Resolve a name or a callable(shape, dtype, rng) to an initializer."""
    if callable(identifier):
        return identifier
    if identifier not in _ALL:
        raise ValueError(f"Expected an initializer name in {sorted(_ALL)} or a callable. "
                         f"Received: {identifier!r}")
    return _ALL[identifier]
