"""MNIST handwritten digits, as `keras.datasets.mnist`.

The real data set ships inside the package (mnist.npz, with its provenance and license in
MNIST_README.md), so `load_data()` works offline.  Lookup order: `path=` if given, then
`$FASTNN_DATA/mnist.npz` if that variable is set, then the bundled file, then a cached
download (verified by sha256) for a build without the bundled file.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import urllib.request
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

if TYPE_CHECKING:
    from _typeshed import StrPath
    from numpy.typing import NDArray

    # ((x_train, y_train), (x_test, y_test)), uint8 arrays (typed NDArray[Any]: callers
    # rebind the names to float arrays, as the book's example does)
    _Data = tuple[tuple[NDArray[Any], NDArray[Any]], tuple[NDArray[Any], NDArray[Any]]]

URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
# sha256 of the well-known public copy and of the bundled file (same arrays, other zip layout)
SHA256 = {"731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
          "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"}
BUNDLED = os.path.join(os.path.dirname(__file__), "mnist.npz")
SHAPES = {"x_train": (60000, 28, 28), "y_train": (60000,),
          "x_test": (10000, 28, 28), "y_test": (10000,)}


def load_data(path: StrPath | None = None) -> _Data:
    """Returns (x_train, y_train), (x_test, y_test): uint8 arrays of shapes
    (60000, 28, 28), (60000,), (10000, 28, 28), (10000,).

    Args:
        path: an mnist.npz to read instead of the default lookup (default None: the lookup
            order of the module docstring).
    """
    if path is None:
        env = os.environ.get("FASTNN_DATA")
        if env and os.path.exists(os.path.join(env, "mnist.npz")):
            path = os.path.join(env, "mnist.npz")
        elif os.path.exists(BUNDLED):
            path = BUNDLED
        else:
            path = download(URL, os.path.join(cache_dir(), "mnist.npz"), SHA256)
    return _read(os.fspath(path))


def _read(path: str) -> _Data:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No MNIST file at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays: dict[str, NDArray[Any]] = {k: f[k] for k in SHAPES}
    except (KeyError, ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path!r} is not a valid mnist.npz (expected arrays {sorted(SHAPES)}): "
                         f"{e}") from None
    for k, shape in SHAPES.items():
        if arrays[k].shape != shape or arrays[k].dtype != np.uint8:
            raise ValueError(f"{path!r} is not a valid mnist.npz: expected {k} uint8 {shape}. "
                             f"Received: {arrays[k].dtype} {arrays[k].shape}")
    if arrays["y_train"].max() > 9 or arrays["y_test"].max() > 9:
        raise ValueError(f"{path!r} is not a valid mnist.npz: labels beyond 9")
    return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])


def cache_dir() -> str:
    """Where downloads are kept: $FASTNN_DATA, else ~/.fastnn/datasets."""
    return os.environ.get("FASTNN_DATA") or os.path.join(os.path.expanduser("~"), ".fastnn", "datasets")


def sha256_of(path: StrPath) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: str, sha256: str | Iterable[str], timeout: float = 60,
             progress: bool = True) -> str:
    """Fetch url to dest unless a verified copy is there; check sha256 (a str or a set of
    accepted digests) before moving it into place (timeout: seconds, default 60; progress:
    print the percentage done, default True).  Returns dest."""
    accepted = {sha256} if isinstance(sha256, str) else set(sha256)
    if os.path.exists(dest) and sha256_of(dest) in accepted:
        return dest
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(dest)), suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            done = 0
            while True:
                chunk = resp.read(1 << 16)
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                if progress and total:
                    sys.stderr.write(f"\rDownloading {url}: {done * 100 // total}%")
            if progress and total:
                sys.stderr.write("\n")
        digest = sha256_of(tmp)
        if digest not in accepted:
            raise ValueError(f"Download of {url} failed verification: sha256 {digest} is not "
                             f"the expected {sorted(accepted)}")
        shutil.move(tmp, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
