"""Weight initializers, named as in `keras.initializers` (the ones Dense uses most)."""
import math

import numpy as np


def _fans(shape):
    """(fan_in, fan_out) of a kernel (in, out); a vector counts as both."""
    return (shape[0], shape[1]) if len(shape) > 1 else (shape[0], shape[0])


def zeros(shape, dtype, rng):
    return np.zeros(shape, dtype)


def ones(shape, dtype, rng):
    return np.ones(shape, dtype)


def glorot_uniform(shape, dtype, rng):
    """U(-l, l), l = sqrt(6 / (fan_in + fan_out)) (Keras' default kernel initializer)."""
    fan_in, fan_out = _fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(dtype)


def glorot_normal(shape, dtype, rng):
    fan_in, fan_out = _fans(shape)
    return _truncated_normal(shape, math.sqrt(2.0 / (fan_in + fan_out)), dtype, rng)


def he_uniform(shape, dtype, rng):
    limit = math.sqrt(6.0 / _fans(shape)[0])
    return rng.uniform(-limit, limit, shape).astype(dtype)


def he_normal(shape, dtype, rng):
    return _truncated_normal(shape, math.sqrt(2.0 / _fans(shape)[0]), dtype, rng)


def random_normal(shape, dtype, rng):
    return (rng.standard_normal(shape) * 0.05).astype(dtype)


def _truncated_normal(shape, stddev, dtype, rng):
    """Normal draws beyond two standard deviations redrawn; scaled as Keras' variance
    scaling does (stddev / 0.87962566103423978)."""
    x = rng.standard_normal(shape)
    bad = np.abs(x) > 2
    while bad.any():
        x[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(x) > 2
    return (x * stddev / 0.87962566103423978).astype(dtype)


_ALL = {f.__name__: f for f in (zeros, ones, glorot_uniform, glorot_normal, he_uniform,
                                 he_normal, random_normal)}


def get(identifier):
    """Resolve a name or a callable(shape, dtype, rng) to an initializer."""
    if callable(identifier):
        return identifier
    if identifier not in _ALL:
        raise ValueError(f"Expected an initializer name in {sorted(_ALL)} or a callable. "
                         f"Received: {identifier!r}")
    return _ALL[identifier]
