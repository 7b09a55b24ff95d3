"""fastnn: a small, fast neural-network library for the CPU with a Keras-style API.

    from fastnn import models, layers
    model = models.Sequential([layers.Dense(512, activation="relu"),
                               layers.Dense(10, activation="softmax")])
"""
import typing as _typing

import scipy_openblas32 as _blas  # noqa: F401  (loads the BLAS the compiled kernels link to)

# (`name as name`: a re-export, for type checkers)
from fastnn import backend
from fastnn.backend import get_backend as get_backend, set_backend as set_backend
from fastnn import (activations, callbacks, config, datasets, initializers, layers,  # noqa: E402
                    losses, metrics, mixed_precision, models, optimizers, utils)

from fastnn.gradcheck import (gradcheck as gradcheck,  # noqa: E402
                              gradcheck_function as gradcheck_function)
from fastnn.layers import Input as Input  # noqa: E402  (keras.Input)
from fastnn.models import Sequential as Sequential  # noqa: E402  (keras.Sequential)

if _typing.TYPE_CHECKING:  # imported on first use, by __getattr__ below
    from fastnn import wrappers as wrappers

def _version() -> str:
    """The installed distribution's version (pyproject.toml), else that of the source tree."""
    from importlib import metadata
    try:
        return metadata.version("fastnn")
    except metadata.PackageNotFoundError:
        return "0.1.0+source"


__version__ = _version()


MAX_THREADS = 256


if not _typing.TYPE_CHECKING:  # (type checkers see fastnn.wrappers imported above, no other name)
    def __getattr__(name):
        """fastnn.wrappers on first use (it imports scikit-learn, a second's work)."""
        if name == "wrappers":
            import importlib
            return importlib.import_module("fastnn.wrappers")
        raise AttributeError(f"module 'fastnn' has no attribute {name!r}")


def set_num_threads(n: int) -> None:
    """Use n threads in every pool fastnn runs, for every thread of the process: its OpenMP
    loops and the BLAS it calls.  n: an int from 1 to MAX_THREADS (256).  In a process
    forked after fastnn loaded, the loops stay on one thread (the BLAS takes n)."""
    import numbers
    # (cast: to mypy an int is no numbers.Integral, so the lines below would be unreachable)
    if isinstance(n, bool) or not isinstance(_typing.cast(_typing.Any, n), numbers.Integral) \
            or not 1 <= n <= MAX_THREADS:
        raise ValueError(f"Expected n to be an int from 1 to {MAX_THREADS}. Received: n={n!r}")
    if backend.compiled is not None:
        backend.compiled.set_num_threads(int(n))


def get_num_threads() -> int:
    """Threads fastnn uses: its OpenMP team and the BLAS's jobs (set_num_threads keeps
    them equal; without OpenMP only the BLAS is threaded)."""
    if backend.compiled is None:
        return 1
    return _typing.cast(int, max(backend.compiled.get_num_threads().values()))


def show_config(file: _typing.IO[str] | None = None) -> None:
    """Print what was built (BLAS, OpenMP, SIMD) and the thread counts in use."""
    import platform
    import sys

    import numpy as np

    cpu = platform.processor() or "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    lines = [f"fastnn {__version__}", f"backend: {get_backend()}",
             f"python: {sys.version.split()[0]}  numpy: {np.__version__}  "
             f"machine: {platform.machine()} ({cpu})"]
    if backend.compiled is None:
        lines.append(f"compiled module: NOT AVAILABLE ({backend.compiled_import_error})")
    else:
        info = backend.compiled.build_info()
        threads = backend.compiled.get_num_threads()
        lines += [
            f"BLAS: scipy-openblas32 {_blas.__version__}: {info['blas'].strip()}",
            f"OpenMP: {'yes (' + str(info['openmp']) + ')' if info['openmp'] else 'no'}",
            f"SIMD: {info['simd']}; fastnn's own GEMM: {backend.compiled.matmul_paths()[0]}",
            f"threads: openmp={threads['openmp']} blas={threads['blas']}",
        ]
        try:  # the bf16 kernels' path (src_c/bf16.c): the best, or FASTNN_BF16_PATH's
            bf16 = backend.compiled.bf16_path()
        except ValueError as e:
            bf16 = f"none ({e})"
        lines.append(f"bf16 products: {bf16} (this machine runs: "
                     f"{', '.join(backend.compiled.bf16_paths())})")
    lines.append(f"dtype policy: {mixed_precision.global_policy().name}")
    print("\n".join(lines), file=file)
