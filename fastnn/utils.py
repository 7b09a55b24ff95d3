"""Helpers named as in `keras.utils`: one-hot labels and seeding."""
import random

import numpy as np

_seed_source = np.random.default_rng()


def to_categorical(x, num_classes=None):
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


def set_random_seed(seed):
    """Seed Python's `random`, NumPy's global RNG and fastnn's own seed source, as
    `keras.utils.set_random_seed` does: models built afterwards get identical weights and
    identical training runs."""
    global _seed_source
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"Expected seed to be a non-negative int. Received: seed={seed!r}")
    random.seed(int(seed))
    np.random.seed(int(seed) % 2**32)
    _seed_source = np.random.default_rng(int(seed))


def new_rng(seed=None):
    """A fresh Generator: from seed if given, else drawn from fastnn's seed source."""
    if seed is None:
        seed = int(_seed_source.integers(0, 2**63 - 1))
    return np.random.default_rng(seed)
