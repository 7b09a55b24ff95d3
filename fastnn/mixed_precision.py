"""Dtype policies, named as in `keras.mixed_precision`: a layer's variables and its
computations may have different dtypes.

    fastnn.mixed_precision.set_global_policy("mixed_bfloat16")
    model = Sequential([layers.Dense(512, activation="relu"), layers.Dense(10, "softmax")])

Under "mixed_bfloat16" (Keras' DTypePolicy semantics: variable_dtype float32, compute_dtype
bfloat16) a Dense layer's matrix products take bfloat16 inputs (its input and its kernel,
rounded to nearest even) and add in float32; everything else stays float32: the bias, the
activation, the softmax, the losses and their gradients (so, unlike Keras' guide, no layer needs
to be forced to float32), the master weights and the optimizer state (the fused optimizer
steps are unchanged; the step that writes the float32 weights also writes the packed
bfloat16 copy the next forward reads).  The products run on AMX tiles, AVX512-BF16
instructions or a portable float32 path, the best the machine has (`fastnn.show_config()`
says which; the environment variable FASTNN_BF16_PATH forces one).

Policies: "float32", "float64" and "mixed_bfloat16".  Keras' "mixed_float16", "bfloat16" and
"float16" are refused (fastnn has no float16 kernels, and keeps variables in float32 or
float64).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from fastnn import config

_NAMES = ("float32", "float64", "mixed_bfloat16")


class DTypePolicy:
    """A dtype policy: `name`, `variable_dtype` (the weights'), `compute_dtype` (the
    matrix products' inputs).

    Args:
        name: "float32", "float64" or "mixed_bfloat16" (default None: `config.floatx()`).
    """

    def __init__(self, name: str | None = None) -> None:
        if name is None:
            name = config.floatx()
        if not isinstance(name, str) or name not in _NAMES:
            hint = (" fastnn has no float16 kernels; use 'mixed_bfloat16'."
                    if isinstance(name, str) and "float16" in name else "")
            raise ValueError(f"Expected dtype to be a dtype policy name in {list(_NAMES)}. "
                             f"Received: dtype={name!r}.{hint}")
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def variable_dtype(self) -> str:
        return "float32" if self._name == "mixed_bfloat16" else self._name

    @property
    def compute_dtype(self) -> str:
        return "bfloat16" if self._name == "mixed_bfloat16" else self._name

    @property
    def mixed(self) -> bool:
        """Whether the matrix products run in bfloat16 (fastnn's)."""
        return self._name == "mixed_bfloat16"

    def get_config(self) -> dict[str, Any]:
        return {"name": self._name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DTypePolicy:
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DTypePolicy) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self._name)

    def __repr__(self) -> str:
        return f'<DTypePolicy "{self._name}">'


Policy = DTypePolicy  # Keras' alias

_global: DTypePolicy | None = None


def set_global_policy(policy: str | DTypePolicy | None) -> None:
    """The policy of layers created afterwards without a dtype (None: back to floatx)."""
    global _global
    _global = None if policy is None else get(policy)


def global_policy() -> DTypePolicy:
    """The policy set by set_global_policy, else `DTypePolicy(config.floatx())`."""
    return _global if _global is not None else DTypePolicy()


dtype_policy = global_policy  # Keras' other name


def get(identifier: Any) -> DTypePolicy:
    """A policy from a name, a DTypePolicy, a NumPy float dtype, or None (the global one)."""
    if identifier is None:
        return global_policy()
    if isinstance(identifier, DTypePolicy):
        return identifier
    if isinstance(identifier, dict):
        return DTypePolicy.from_config(identifier.get("config", identifier))
    if not isinstance(identifier, str):
        try:
            identifier = config.dtype(identifier).name
        except (ValueError, TypeError):
            pass
    return DTypePolicy(identifier if isinstance(identifier, str) else repr(identifier))


def variable_dtype(identifier: Any) -> np.dtype[Any]:
    """The NumPy dtype of the variables of a layer created with dtype=identifier."""
    return np.dtype(get(identifier).variable_dtype)
