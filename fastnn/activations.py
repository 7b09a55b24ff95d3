"""Activation functions, named and called as in `keras.activations` (Keras 3).

    activations.relu(x, negative_slope=0.0, max_value=None, threshold=0.0)
    activations.get("relu") is activations.relu            # the function, as Keras
    layers.Dense(8, activation=functools.partial(activations.relu, max_value=6.0))

Each function applies its kernel to an array (the compiled one, or the NumPy twin under
`fastnn.set_backend("numpy")`) and returns a new array.  A layer resolves its activation with
`spec(identifier)` (internal) to the kernel code and parameters that Dense fuses into its
matmul epilogue and Activation applies on its own: a name, one of these functions, or a
`functools.partial` of one with keyword arguments (the arguments are kept, and serialized).

Where fastnn differs from Keras (each said again in its docstring):
- arguments are checked: a negative `negative_slope` or `max_value`, a non-positive elu
  `alpha`, a non-finite value or a non-bool `approximate` raise ValueError naming it (Keras
  computes something); so do a negative hard_shrink/soft_shrink `threshold`, a non-positive
  celu `alpha` or squareplus `b`;
- `threshold` has no defaults, as in Keras: a layer given "threshold" without its two arguments
  raises ValueError when built from it (Keras fails when it first calls it); NAMES, the names a
  layer takes alone, leaves it out;
- NaN passes through hard_shrink, soft_shrink and threshold (Keras' `where` makes it 0, 0 and
  default_value), as through every other kernel;
- layers apply softmax, log_softmax and sparsemax over the last axis only (`axis=-1`); the
  functions take any axis;
- sparsemax is the projection onto the simplex its docstring and reference define (its rows
  sum to 1): Keras 3.15's backends compute a wrong threshold when more than one entry is in
  the support (keras-team/keras#23425, fixed upstream after 3.15.1);
- `deserialize` of an unknown name raises ValueError (Keras returns the string) and accepts
  the aliases "swish" and "hard_swish" (Keras' deserialize refuses them, its get accepts them);
- `serialize` of a `functools.partial` of one of these functions gives Keras' function dict
  with the extra key "kwargs" (Keras raises TypeError: it cannot serialize one).
"""
from __future__ import annotations

import functools
import math
import numbers
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from fastnn import _codes, backend

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, NDArray

# The keyword arguments of the parametrised activations and Keras' defaults.
DEFAULTS: dict[str, dict[str, Any]] = {
    "relu": {"negative_slope": 0.0, "max_value": None, "threshold": 0.0},
    "leaky_relu": {"negative_slope": 0.2},
    "elu": {"alpha": 1.0},
    "gelu": {"approximate": False},
    "softmax": {"axis": -1},
    "log_softmax": {"axis": -1},
    "hard_shrink": {"threshold": 0.5},
    "soft_shrink": {"threshold": 0.5},
    "threshold": {"threshold": None, "default_value": None},  # Keras' has no defaults: required
    "celu": {"alpha": 1.0},
    "squareplus": {"b": 4},
    "sparsemax": {"axis": -1},
}
# The activations whose arguments Keras requires (their DEFAULTS entries are None)
REQUIRED = {"threshold": ("threshold", "default_value")}
# Keras' selu constants (keras.activations.selu; the kernels' FNN_SELU_ALPHA, FNN_SELU_SCALE)
SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
# Keras' aliases (keras.activations.swish is silu, hard_swish is hard_silu)
ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}


def _number(name: str, key: str, value: Any, lo: float | None = None,
            strict: bool = False) -> float:
    """value as a finite float (>= lo, or > lo if strict); ValueError naming it otherwise."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        math.isfinite(float(value))
    if ok and lo is not None:
        ok = float(value) > lo if strict else float(value) >= lo
    if not ok:
        bound = "" if lo is None else f" {'>' if strict else '>='} {lo:g}"
        raise ValueError(f"Expected {name}'s {key} to be a finite number{bound}. "
                         f"Received: {key}={value!r}")
    return float(value)


def _resolve(name: str, kwargs: dict[str, Any], any_axis: bool) -> tuple[str, tuple[float, ...]]:
    """(kernel code name, its parameters) of Keras' activation `name` called with kwargs (each
    checked); any_axis=False refuses a (log_)softmax over another axis than the last."""
    allowed = DEFAULTS.get(name, {})
    for key in kwargs:
        if key not in allowed:
            raise ValueError(f"Expected the arguments of activation {name!r} among "
                             f"{sorted(allowed)}. Received: {key}={kwargs[key]!r}")
    kw = {**allowed, **kwargs}
    if name == "relu":
        slope = _number(name, "negative_slope", kw["negative_slope"], 0.0)
        hi = kw["max_value"]
        hi = math.inf if hi is None else _number(name, "max_value", hi, 0.0)
        t = _number(name, "threshold", kw["threshold"])
        if t == 0 and math.isinf(hi):  # the cheaper kernels of the common cases
            return ("leaky_relu", (slope,)) if slope else ("relu", ())
        if t == 0 and hi == 6 and not slope:
            return "relu6", ()
        return "relu_general", (slope, hi, t)
    if name == "leaky_relu":
        return name, (_number(name, "negative_slope", kw["negative_slope"], 0.0),)
    if name == "elu":
        return name, (_number(name, "alpha", kw["alpha"], 0.0, strict=True),)
    if name == "gelu":
        if not isinstance(kw["approximate"], (bool, np.bool_)):
            raise ValueError(f"Expected gelu's approximate to be a bool. "
                             f"Received: approximate={kw['approximate']!r}")
        return ("gelu_tanh" if kw["approximate"] else "gelu"), ()
    if name in REQUIRED:
        missing = [k for k in REQUIRED[name] if kw[k] is None]
        if missing:
            raise ValueError(f"Expected {name}'s arguments {' and '.join(REQUIRED[name])} (Keras' "
                             f"{name} has no defaults: pass a functools.partial of it with "
                             f"them). Received: no {' and no '.join(missing)}")
    if name in ("hard_shrink", "soft_shrink"):
        return name, (_number(name, "threshold", kw["threshold"], 0.0),)
    if name == "threshold":
        return name, (_number(name, "threshold", kw["threshold"]),
                      _number(name, "default_value", kw["default_value"]))
    if name == "celu":
        return name, (_number(name, "alpha", kw["alpha"], 0.0, strict=True),)
    if name == "squareplus":
        return name, (_number(name, "b", kw["b"], 0.0, strict=True),)
    if name in ("softmax", "log_softmax", "sparsemax"):
        axis = kw["axis"]
        if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
            raise ValueError(f"Expected {name}'s axis to be an int. Received: axis={axis!r}")
        if axis != -1 and not any_axis:
            raise ValueError(f"Expected {name} over the last axis (axis=-1) in a layer: "
                             f"fastnn's layers apply it there only. Received: axis={axis}")
    return name, ()


class Spec:
    """A resolved activation (internal, see `spec`): its Keras name, the keyword arguments
    given that differ from Keras' defaults, the kernel code and the kernel's parameters.
    Calling it applies it, as the Keras function it stands for."""

    __slots__ = ("name", "kwargs", "code", "params")

    def __init__(self, name: str, kwargs: dict[str, Any] | None = None) -> None:
        name = ALIASES.get(name, name)
        if name not in _FUNCTIONS:
            raise ValueError(f"Expected an activation name in {sorted(_FUNCTIONS)}. "
                             f"Received: {name!r}")
        defaults = DEFAULTS.get(name, {})
        kwargs = dict(kwargs or {})
        code, self.params = _resolve(name, kwargs, any_axis=False)
        self.name, self.code = name, _codes.ACTIVATIONS[code]
        self.kwargs = {k: v for k, v in kwargs.items() if v != defaults[k]}
        for k, v in self.kwargs.items():  # plain Python values, as in a config
            self.kwargs[k] = v if v is None or isinstance(v, bool) else \
                int(v) if k == "axis" else float(v)

    @property
    def needs_preactivation(self) -> bool:
        """Whether the backward pass reads the pre-activation (gelu, silu, mish, ...), not only
        the output."""
        return _CODE_NAMES[self.code] in _codes.ACT_NEEDS_X

    @property
    def function(self) -> Callable[..., NDArray[Any]]:
        """The Keras-style function: this module's, or a functools.partial of it."""
        f = _FUNCTIONS[self.name]
        return functools.partial(f, **self.kwargs) if self.kwargs else f

    def __call__(self, x: ArrayLike) -> NDArray[Any]:
        return _apply(self.name, x, self.kwargs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Spec) and (self.name, self.kwargs) == (other.name, other.kwargs)

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.kwargs.items()))))

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.kwargs.items())
        return f"activations.{self.name}" + (f"(x{args})" if args else "")


_CODE_NAMES = {code: name for name, code in _codes.ACTIVATIONS.items()}


def spec(identifier: Any) -> Spec:
    """The Spec of an activation identifier, as a layer takes it: None (linear), a name, a
    function of this module, a functools.partial of one with keyword arguments, a config
    (`serialize`'s dict) or a Spec.  ValueError for anything else (a custom function: fastnn's
    layers run their activation in C)."""
    if isinstance(identifier, Spec):
        return identifier
    if identifier is None:
        return Spec("linear")
    if isinstance(identifier, (str, dict)):
        identifier = deserialize(identifier)
    f, kwargs = identifier, {}
    if isinstance(identifier, functools.partial):
        f, kwargs = identifier.func, dict(identifier.keywords)
        if identifier.args:
            raise ValueError(f"Expected a functools.partial of an activation with keyword "
                             f"arguments only. Received: {identifier!r}")
    name = getattr(f, "__name__", None)
    if not isinstance(name, str) or _FUNCTIONS.get(name) is not f:
        raise ValueError(f"Expected activation to be one of {sorted(_FUNCTIONS)} (a name, a "
                         f"function of fastnn.activations or a functools.partial of one) or "
                         f"None. Received: activation={identifier!r}")
    return Spec(name, kwargs)


def get(identifier: Any) -> Callable[..., Any]:
    """The activation function of an identifier, as `keras.activations.get`: None gives
    `linear`, a name (or Keras' alias "swish", "hard_swish") its function, a config dict
    `deserialize`'s, a callable itself.  ValueError for anything else."""
    if identifier is None:
        return linear
    if isinstance(identifier, dict):
        return deserialize(identifier)
    obj = _ALL.get(identifier) if isinstance(identifier, str) else identifier
    if callable(obj):
        return obj
    raise ValueError(f"Could not interpret activation function identifier: {identifier}")


def serialize(activation: Any) -> str | dict[str, Any]:
    """An activation's config, as `keras.activations.serialize`: a function of this module
    gives its name ("relu"; "silu" for swish).  A functools.partial of one with arguments
    (or a Spec with arguments) gives Keras' function dict with fastnn's extra key "kwargs"
    (Keras cannot serialize one).  ValueError for anything else."""
    fname = getattr(activation, "__name__", None)
    if isinstance(fname, str) and _FUNCTIONS.get(fname) is activation:
        return fname  # (threshold too, whose Spec needs arguments)
    try:
        s = spec(activation)
    except ValueError:
        raise ValueError(f"Unknown activation function '{activation}' cannot be serialized: "
                         f"expected a function of fastnn.activations or a functools.partial "
                         f"of one.") from None
    if not s.kwargs:
        return s.name
    return {"module": "keras.activations", "class_name": "function", "config": s.name,
            "registered_name": None, "kwargs": dict(s.kwargs)}


def deserialize(config: str | dict[str, Any],
                custom_objects: dict[str, Any] | None = None) -> Callable[..., Any]:
    """The activation function of a config (`serialize`'s): a name, or Keras' function dict
    {"class_name": "function", "config": name, ...} (with fastnn's "kwargs": a
    functools.partial).  custom_objects (name -> function) are looked up first.  An unknown
    name raises ValueError (Keras returns the string itself)."""
    kwargs: dict[str, Any] = {}
    name: Any = config
    if isinstance(config, dict):
        name, kwargs = config.get("config"), config.get("kwargs") or {}
        if config.get("class_name") != "function" or not isinstance(kwargs, dict):
            raise ValueError(f"Expected an activation config {{'class_name': 'function', "
                             f"'config': <name>}}. Received: {config!r}")
    if custom_objects and isinstance(name, str) and name in custom_objects:
        return custom_objects[name]  # type: ignore[no-any-return]
    if not isinstance(name, str) or name not in _ALL:
        raise ValueError(f"Could not interpret activation function identifier: {config!r} "
                         f"(expected one of {sorted(_ALL)})")
    if kwargs:
        return Spec(name, kwargs).function
    return _ALL[name]


def _apply(name: str, x: ArrayLike, kwargs: dict[str, Any]) -> NDArray[Any]:
    """Keras' activation `name` with kwargs on x: float32 or float64 (other inputs become
    float32), the same shape; (log_)softmax and sparsemax over kwargs' axis."""
    code, params = _resolve(name, kwargs, any_axis=True)
    a: NDArray[Any] = np.asarray(x)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    axis = kwargs.get("axis", -1)
    if a.ndim and axis not in (-1, a.ndim - 1):
        if not -a.ndim <= axis < a.ndim:
            raise ValueError(f"Expected axis in [-{a.ndim}, {a.ndim}) for an input of shape "
                             f"{a.shape}. Received: axis={axis}")
        moved: NDArray[Any] = np.moveaxis(_apply(name, np.moveaxis(a, axis, -1), {}), -1, axis)
        return moved
    if a.size == 0:
        empty: NDArray[Any] = a.copy()
        return empty
    flat = np.ascontiguousarray(a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1))
    y = np.empty_like(flat)
    backend.K.act_forward(y, flat, _codes.ACTIVATIONS[code], params)
    return y.reshape(a.shape)


def linear(x: ArrayLike) -> NDArray[Any]:
    """The identity (as an array: float32 or float64)."""
    return _apply("linear", x, {})


def relu(x: ArrayLike, negative_slope: float = 0.0, max_value: float | None = None,
         threshold: float = 0.0) -> NDArray[Any]:
    """Keras' relu: x > threshold gives x (clipped to [0, max_value] when max_value is set),
    x <= threshold gives negative_slope * (x - threshold).  With the defaults, max(x, 0).

    As in Keras, with max_value set an x in (threshold, 0) (a negative threshold) gives 0.
    ValueError for a negative negative_slope or max_value or a non-finite one (Keras'
    ReLU layer refuses those too)."""
    return _apply("relu", x, {"negative_slope": negative_slope, "max_value": max_value,
                              "threshold": threshold})


def leaky_relu(x: ArrayLike, negative_slope: float = 0.2) -> NDArray[Any]:
    """x if x > 0, else negative_slope * x (ValueError for a negative slope)."""
    return _apply("leaky_relu", x, {"negative_slope": negative_slope})


def relu6(x: ArrayLike) -> NDArray[Any]:
    """min(max(x, 0), 6)."""
    return _apply("relu6", x, {})


def elu(x: ArrayLike, alpha: float = 1.0) -> NDArray[Any]:
    """x if x > 0, else alpha * (exp(x) - 1) (ValueError for alpha <= 0)."""
    return _apply("elu", x, {"alpha": alpha})


def selu(x: ArrayLike) -> NDArray[Any]:
    """scale * elu(x, alpha), Keras' constants alpha = 1.67326324, scale = 1.05070098."""
    return _apply("selu", x, {})


def gelu(x: ArrayLike, approximate: bool = False) -> NDArray[Any]:
    """x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)); approximate=True: the tanh form
    0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""
    return _apply("gelu", x, {"approximate": approximate})


def sigmoid(x: ArrayLike) -> NDArray[Any]:
    """1 / (1 + exp(-x))."""
    return _apply("sigmoid", x, {})


def tanh(x: ArrayLike) -> NDArray[Any]:
    return _apply("tanh", x, {})


def silu(x: ArrayLike) -> NDArray[Any]:
    """x * sigmoid(x) (Keras' swish is this function)."""
    return _apply("silu", x, {})


swish = silu


def softplus(x: ArrayLike) -> NDArray[Any]:
    """log(exp(x) + 1)."""
    return _apply("softplus", x, {})


def softsign(x: ArrayLike) -> NDArray[Any]:
    """x / (abs(x) + 1)."""
    return _apply("softsign", x, {})


def hard_sigmoid(x: ArrayLike) -> NDArray[Any]:
    """Keras 3's relu6(x + 3) / 6: 0 for x <= -3, 1 for x >= 3, x / 6 + 0.5 between."""
    return _apply("hard_sigmoid", x, {})


def hard_silu(x: ArrayLike) -> NDArray[Any]:
    """x * hard_sigmoid(x) (Keras' hard_swish is this function)."""
    return _apply("hard_silu", x, {})


hard_swish = hard_silu


def exponential(x: ArrayLike) -> NDArray[Any]:
    """exp(x)."""
    return _apply("exponential", x, {})


def mish(x: ArrayLike) -> NDArray[Any]:
    """x * tanh(softplus(x))."""
    return _apply("mish", x, {})


def softmax(x: ArrayLike, axis: int = -1) -> NDArray[Any]:
    """exp(x) / sum(exp(x)) along axis (layers: the last axis only)."""
    return _apply("softmax", x, {"axis": axis})


def log_softmax(x: ArrayLike, axis: int = -1) -> NDArray[Any]:
    """x - log(sum(exp(x))) along axis (layers: the last axis only)."""
    return _apply("log_softmax", x, {"axis": axis})


# ---- Keras 3's further element-wise activations (issue #11) ----------------------------------

def hard_tanh(x: ArrayLike) -> NDArray[Any]:
    """-1 for x < -1, x for -1 <= x <= 1, 1 for x > 1 (clip(x, -1, 1))."""
    return _apply("hard_tanh", x, {})


def hard_shrink(x: ArrayLike, threshold: float = 0.5) -> NDArray[Any]:
    """x if |x| > threshold, else 0 (ValueError for a negative threshold; NaN stays NaN, where
    Keras gives 0)."""
    return _apply("hard_shrink", x, {"threshold": threshold})


def soft_shrink(x: ArrayLike, threshold: float = 0.5) -> NDArray[Any]:
    """x - threshold if x > threshold, x + threshold if x < -threshold, else 0 (ValueError for
    a negative threshold; NaN stays NaN, where Keras gives 0)."""
    return _apply("soft_shrink", x, {"threshold": threshold})


def tanh_shrink(x: ArrayLike) -> NDArray[Any]:
    """x - tanh(x)."""
    return _apply("tanh_shrink", x, {})


def threshold(x: ArrayLike, threshold: float, default_value: float) -> NDArray[Any]:
    """x if x > threshold, else default_value.  Both arguments are required, as in Keras: a
    layer takes this activation as a functools.partial with both (NaN stays NaN, where Keras
    gives default_value)."""
    return _apply("threshold", x, {"threshold": threshold, "default_value": default_value})


def log_sigmoid(x: ArrayLike) -> NDArray[Any]:
    """log(1 / (1 + exp(-x))) = -softplus(-x), computed without overflow."""
    return _apply("log_sigmoid", x, {})


def celu(x: ArrayLike, alpha: float = 1.0) -> NDArray[Any]:
    """x if x >= 0, else alpha * (exp(x / alpha) - 1) (ValueError for alpha <= 0)."""
    return _apply("celu", x, {"alpha": alpha})


def squareplus(x: ArrayLike, b: float = 4) -> NDArray[Any]:
    """(x + sqrt(x^2 + b)) / 2 (ValueError for b <= 0).  For x < 0 computed as the equal
    b / (2 (sqrt(x^2 + b) - x)): Keras' form cancels there (float32 x = -1e4 gives 0 in Keras,
    1e-4 here)."""
    return _apply("squareplus", x, {"b": b})


def sparse_plus(x: ArrayLike) -> NDArray[Any]:
    """0 for x <= -1, (x + 1)^2 / 4 for -1 < x < 1, x for x >= 1."""
    return _apply("sparse_plus", x, {})


def sparse_sigmoid(x: ArrayLike) -> NDArray[Any]:
    """0 for x <= -1, (x + 1) / 2 for -1 < x < 1, 1 for x >= 1."""
    return _apply("sparse_sigmoid", x, {})


def sparsemax(x: ArrayLike, axis: int = -1) -> NDArray[Any]:
    """max(x - tau, 0) along axis, tau such that the result sums to 1 there: the Euclidean
    projection onto the probability simplex (Martins & Astudillo 2016; layers: the last axis
    only).  Keras 3.15.1 computes a wrong tau when more than one entry is in the support (its
    rows then do not sum to 1, keras-team/keras#23425): for [1.0, 0.8, 0.0] it gives
    [0.1, 0, 0], fastnn the projection [0.6, 0.4, 0] (the two agree when one entry is)."""
    return _apply("sparsemax", x, {"axis": axis})


# Keras' function names (Keras 3.15 has one more: glu, which halves the last axis)
_FUNCTIONS: dict[str, Callable[..., NDArray[Any]]] = {
    f.__name__: f for f in (linear, relu, leaky_relu, relu6, elu, selu, gelu, sigmoid, tanh,
                            silu, softplus, softsign, hard_sigmoid, hard_silu, exponential,
                            mish, softmax, log_softmax, hard_tanh, hard_shrink, soft_shrink,
                            tanh_shrink, threshold, log_sigmoid, celu, squareplus, sparse_plus,
                            sparse_sigmoid, sparsemax)}
_ALL = {**_FUNCTIONS, **{a: _FUNCTIONS[n] for a, n in ALIASES.items()}}
# the names a layer takes alone: every function but threshold (its arguments are required)
NAMES = tuple(n for n in _FUNCTIONS if n not in REQUIRED)
