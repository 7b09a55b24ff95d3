"""Which kernels run: the compiled module (default) or the NumPy reference.

Both modules expose the same functions (see fastnn/_reference.py); layers, losses and
optimizers call `backend.K.<kernel>(...)`, so switching is one assignment.
`FASTNN_BACKEND=numpy` in the environment, or `fastnn.set_backend("numpy")`, selects the
reference.
"""
from __future__ import annotations

import os
from types import ModuleType
from typing import Any, cast

from fastnn import _reference

compiled: ModuleType | None
compiled_import_error: ImportError | None
try:
    from fastnn import _kernels as compiled  # the compiled module (None: it did not import)
    compiled_import_error = None
except ImportError as e:  # a broken build: say so when the compiled backend is asked for
    compiled = None
    compiled_import_error = e

BACKENDS = ("compiled", "numpy")
K: Any = None  # the active kernels module (fastnn._kernels or fastnn._reference)


def set_backend(name: str) -> None:
    """Select the kernels: "compiled" (C, the default) or "numpy" (the reference)."""
    global K
    if name not in BACKENDS:
        raise ValueError(f"Expected backend to be one of {BACKENDS}. Received: backend={name!r}")
    if name == "compiled":
        if compiled is None:
            raise ImportError(_missing_compiled_module())
        K = compiled
    else:
        K = _reference


def _missing_compiled_module() -> str:
    """What happened when fastnn._kernels did not import, and the one command that fixes it."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.exists(os.path.join(here, "setup.py")) and os.path.isdir(os.path.join(here, "src_c")):
        return (f"fastnn was imported from its source tree {here} (a directory on sys.path, "
                "such as the current one, comes before the installed package), and that tree "
                f"has no compiled fastnn._kernels ({compiled_import_error}). Fix: run "
                f"`pip install .` (or `python setup.py build_ext --inplace`) in {here}, or start "
                "Python from another directory.")
    return (f"fastnn's compiled module fastnn._kernels could not be imported "
            f"({compiled_import_error}). Reinstall with `pip install .` (it needs a C compiler), "
            "or use the NumPy backend: FASTNN_BACKEND=numpy.")


def get_backend() -> str:
    """The name of the active backend: "compiled" or "numpy"."""
    return cast(str, K.NAME)


set_backend(os.environ.get("FASTNN_BACKEND", "compiled"))
