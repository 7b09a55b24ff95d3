"""MNIST loading: the bundled real data, overrides, verification and the download path."""
import functools
import hashlib
import http.server
import os
import threading

import numpy as np
import pytest

from fastnn.datasets import mnist
from fastnn.utils import to_categorical


def test_bundled_mnist_is_the_real_data():
    (x, y), (xt, yt) = mnist.load_data()
    assert (x.shape, y.shape, xt.shape, yt.shape) == ((60000, 28, 28), (60000,), (10000, 28, 28), (10000,))
    assert x.dtype == y.dtype == np.uint8
    assert mnist.sha256_of(mnist.BUNDLED) in mnist.SHA256
    # facts from the data set's README: pixel mean/std after /255 and the first label counts
    assert x.mean() / 255 == pytest.approx(0.1307, abs=1e-4)
    assert (x / 255).std() == pytest.approx(0.3081, abs=1e-4)
    assert list(np.bincount(y)[:2]) == [5923, 6742]


def test_path_and_env_override(tmp_path, monkeypatch):
    small = tmp_path / "mnist.npz"
    np.savez(small, x_train=np.zeros((60000, 28, 28), np.uint8), y_train=np.ones(60000, np.uint8),
             x_test=np.zeros((10000, 28, 28), np.uint8), y_test=np.full(10000, 2, np.uint8))
    (_, y), _ = mnist.load_data(path=small)
    assert y[0] == 1
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path))
    _, (_, yt) = mnist.load_data()
    assert yt[0] == 2


def test_wrong_or_corrupt_file(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((5, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="not a valid mnist.npz"):
        mnist.load_data(path=bad)
    (tmp_path / "junk.npz").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a valid mnist.npz"):
        mnist.load_data(path=tmp_path / "junk.npz")


@pytest.fixture
def loopback_server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_verifies_sha256_over_loopback(loopback_server, tmp_path):
    root, base = loopback_server
    payload = os.urandom(200_000)
    (root / "data.bin").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    dest = tmp_path / "cache" / "data.bin"
    assert mnist.download(f"{base}/data.bin", str(dest), digest, progress=False) == str(dest)
    assert dest.read_bytes() == payload
    with pytest.raises(ValueError, match="failed verification"):
        mnist.download(f"{base}/data.bin", str(tmp_path / "other.bin"), "0" * 64, progress=False)
    assert not (tmp_path / "other.bin").exists()
    assert list((tmp_path / "cache").iterdir()) == [dest]  # no partial file left


def test_to_categorical():
    np.testing.assert_array_equal(to_categorical([0, 2, 1]), np.eye(3, dtype="float32")[[0, 2, 1]])
    assert to_categorical([1], num_classes=4).shape == (1, 4)
    with pytest.raises(ValueError, match="below num_classes=2"):
        to_categorical([2], num_classes=2)
