"""Type stub of the compiled module fastnn._kernels (fastnn/_kernels.pyx): the functions and
classes it defines for Python, with the argument names and defaults of the .pyx.

Every array operand is a numpy.ndarray: float32 or float64 (the dtype of the first array
operand decides), int64 for labels and indices; outputs are written in place.  The .pyx
checks dtype, shape, contiguity, writability and aliasing at run time (TypeError/ValueError).
The two classes are cdef classes: their arguments go to __cinit__, hence __new__ below.
tests/test_typing.py checks this stub against the built module (mypy's stubtest).
"""
from typing import Any, Sequence

import numpy as np
from numpy.typing import NDArray
from typing_extensions import Self

_Array = NDArray[Any]

ACT_CODES: dict[str, int]
NAME: str

def codes() -> dict[str, Any]: ...

# ---- dense and activation ----------------------------------------------------------------

def dense_forward(y: _Array, z: _Array | None, x: _Array, w: _Array, b: _Array | None,
                  act: int, params: Sequence[float]) -> None: ...
def dense_backward(dw: _Array | None, db: _Array | None, dx: _Array | None, dz: _Array,
                   dy: _Array, x: _Array, w: _Array, y: _Array, z: _Array | None, act: int,
                   params: Sequence[float]) -> None: ...
def act_forward(y: _Array, x: _Array, act: int, params: Sequence[float]) -> None: ...
def act_backward(dx: _Array, dy: _Array, y: _Array, x: _Array | None, act: int,
                 params: Sequence[float]) -> None: ...

# ---- losses ------------------------------------------------------------------------------

def loss_backward(dp: _Array | None, p: _Array, t: _Array, loss: int) -> float: ...

# ---- optimizers --------------------------------------------------------------------------

class OptimizerStep:
    @property
    def size(self) -> int: ...
    @property
    def dtype(self) -> np.dtype[Any]: ...
    def __new__(cls, p: _Array, rule: str, hyper: dict[str, Any],
                slots: dict[str, _Array | None]) -> Self: ...
    def begin(self, learning_rate: float, iterations: int, u_product: float = 1.0) -> None: ...
    def step(self, p: _Array, g: _Array, start: int = 0) -> None: ...
    def outer_step(self, p: _Array, a: _Array, b: _Array) -> None: ...

# ---- batch gather ------------------------------------------------------------------------

def gather_rows(out: _Array, x: _Array, idx: _Array) -> None: ...

# ---- a whole training step for a stack of dense layers -----------------------------------

class DenseStack:
    @property
    def batch_size(self) -> int: ...
    @property
    def predictions(self) -> _Array: ...
    def __new__(cls, x: _Array, t: _Array, xb: _Array, tb: _Array, grad: _Array,
                layers: list[tuple[Any, ...]], loss: int, p: _Array, g: _Array,
                opt: OptimizerStep, rank1: bool, part: _Array | None = None,
                part_threads: int = 0) -> Self: ...
    @property
    def owns_first_layer(self) -> bool: ...
    def run(self, idx: _Array) -> float: ...

# ---- build facts and threads -------------------------------------------------------------

def build_info() -> dict[str, Any]: ...
def set_num_threads(n: int) -> None: ...
def get_num_threads() -> dict[str, int]: ...
def forked_child() -> bool: ...
