"""Soak: a long-running process that fits, predicts, saves and loads with ever-changing shapes
keeps its memory, open files and threads flat.  Opt-in (pytest -m slow); the duration is
FASTNN_SOAK_SECONDS (default 120)."""
import gc
import os
import threading
import time

import numpy as np
import pytest

from fastnn import layers, models

pytestmark = pytest.mark.slow


def _rss_mb():
    with open(f"/proc/{os.getpid()}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024


def _fds():
    return len(os.listdir(f"/proc/{os.getpid()}/fd"))


def _round(rng, tmp_path, i):
    d, k = int(rng.integers(3, 40)), int(rng.integers(2, 6))
    m = models.Sequential([layers.Dense(int(rng.integers(4, 64)), activation="relu", input_shape=(d,)),
                           layers.Dropout(0.1), layers.Dense(k, activation="softmax")], seed=i)
    m.compile(["sgd", "adam", "rmsprop", "nadam"][i % 4], "sparse_categorical_crossentropy",
              metrics=["accuracy"])
    n = int(rng.integers(5, 300))
    x = rng.random((n, d), dtype=np.float32)
    y = rng.integers(0, k, n)
    m.fit(x, y, epochs=2, batch_size=int(rng.integers(1, 64)), verbose=0)
    m.predict(x, batch_size=int(rng.integers(1, 100)), verbose=0)
    m.evaluate(x, y, batch_size=int(rng.integers(1, 100)), verbose=0)
    path = tmp_path / f"m{i % 3}.fastnn"
    m.save(path)
    again = models.load_model(path)
    np.testing.assert_array_equal(again.predict(x[:3], verbose=0), m.predict(x[:3], verbose=0))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
def test_soak_memory_files_and_threads_stay_flat(tmp_path):
    seconds = float(os.environ.get("FASTNN_SOAK_SECONDS", "120"))
    rng = np.random.default_rng(0)
    for i in range(20):  # warm up: every code path, every allocator pool
        _round(rng, tmp_path, i)
    gc.collect()
    rss0, fds0, threads0 = _rss_mb(), _fds(), threading.active_count()
    end, i, samples = time.monotonic() + seconds, 20, []
    while time.monotonic() < end:
        _round(rng, tmp_path, i)
        i += 1
        if i % 50 == 0:
            gc.collect()
            samples.append(_rss_mb())
    gc.collect()
    growth = _rss_mb() - rss0
    assert growth < 30, f"RSS grew by {growth:.1f} MB over {i - 20} rounds: {samples}"
    assert _fds() == fds0
    assert threading.active_count() == threads0
