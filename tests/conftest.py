import os

# Some tests run 3 threads on purpose (odd team sizes in the split products) on machines with
# fewer cores: let fastnn take the count asked for (tests/test_contention.py clears it).
os.environ.setdefault("FASTNN_ALLOW_OVERSUBSCRIPTION", "1")

import numpy as np  # noqa: E402
import pytest
from hypothesis import settings

import fastnn

# The default run draws the same examples every time (CI must not depend on luck); the
# long fuzzing tests (pytest -m slow) set derandomize=False to explore new ones.
settings.register_profile("fastnn", derandomize=True, deadline=None)
settings.load_profile("fastnn")


@pytest.fixture
def numpy_backend():
    """Run a test on the NumPy reference backend, restoring the previous one after."""
    before = fastnn.get_backend()
    fastnn.set_backend("numpy")
    yield
    fastnn.set_backend(before)


@pytest.fixture(scope="session")
def mnist_small():
    """The first 2000 training and 500 test images, scaled, with one-hot labels."""
    from fastnn.datasets import mnist
    from fastnn.utils import to_categorical

    (x, y), (xt, yt) = mnist.load_data()
    x = x[:2000].reshape(-1, 784).astype("float32") / 255
    xt = xt[:500].reshape(-1, 784).astype("float32") / 255
    return x, to_categorical(y[:2000]), xt, to_categorical(yt[:500]), y[:2000], yt[:500]


def tiny_model(seed=0, act="softmax", units=(8, 3), input_dim=5, **compile_kw):
    from fastnn import layers, models
    m = models.Sequential([layers.Dense(units[0], activation="relu", input_shape=(input_dim,)),
                           layers.Dense(units[1], activation=act)], seed=seed)
    compile_kw.setdefault("optimizer", "sgd")
    compile_kw.setdefault("loss", "categorical_crossentropy")
    m.compile(**compile_kw)
    return m


def blobs(n=60, d=5, k=3, seed=0):
    """A separable toy problem: k Gaussian blobs in d dimensions, one-hot labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    centers = rng.standard_normal((k, d)) * 3
    x = (centers[labels] + rng.standard_normal((n, d))).astype("float32")
    return x, np.eye(k, dtype="float32")[labels], labels


def numgrad(f, a, h=1e-6):
    """Central differences of the scalar f() with respect to every entry of a (in place)."""
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + h
        up = f()
        a[idx] = old - h
        down = f()
        a[idx] = old
        g[idx] = (up - down) / (2 * h)
    return g
