"""Weight initializers, named and configured as in `keras.initializers` (Keras 3).

    init = initializers.HeNormal(seed=1)       # or initializers.get("he_normal")
    w = init((784, 512), dtype="float32")       # an array, as Keras' init(shape, dtype=None)
    layers.Dense(512, kernel_initializer=initializers.Orthogonal(gain=2.0))

Every Keras 3 initializer but STFT: the classes Zeros, Ones, Constant, RandomUniform,
RandomNormal, TruncatedNormal, VarianceScaling, GlorotUniform, GlorotNormal, HeUniform,
HeNormal, LecunUniform, LecunNormal, Orthogonal and Identity, each also under its snake_case
name (`initializers.glorot_uniform is initializers.GlorotUniform`, as in Keras), with Keras'
defaults, formulas, `get_config`/`from_config`, `serialize`/`deserialize` and `get`.

Seeds, as Keras': an initializer made with seed=<int> draws the same values at every call
(a fresh generator from that seed each time), whatever the model.  One without a seed draws
from the generator it is given: a model builds its weights in place in its parameter buffer
with the model's generator (`fill`, called by `_step.pack_parameters`), so `Sequential(...,
seed=s)` decides them; called on its own, it draws from fresh OS entropy.  The elementwise
draws fill the output chunk by chunk, with no temporary of its size.

fastnn's addition: `__call__(shape, dtype=None, rng=None, out=None)` also takes the generator
to draw from (when unseeded) and an array to fill in place.
"""
from __future__ import annotations

import inspect
import math
import numbers
import re
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from fastnn import config

if TYPE_CHECKING:
    from numpy.typing import DTypeLike, NDArray

_CHUNK = 1 << 16  # elements drawn at a time (float64 temporaries of 512 KB at most)
# Keras' correction of a normal truncated at two standard deviations: the stddev of such a
# standard normal (VarianceScaling divides its stddev by it)
TRUNCATED_STDDEV = 0.87962566103423978


def _chunks(out: NDArray[Any]) -> Iterator[NDArray[Any]]:
    flat = out.reshape(-1)
    for s in range(0, flat.size, _CHUNK):
        yield flat[s:s + _CHUNK]


def _number(cls: str, key: str, value: Any, positive: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        math.isfinite(float(value)) and (not positive or float(value) > 0)
    if not ok:
        raise ValueError(f"Expected {cls}'s {key} to be a finite{' positive' if positive else ''}"
                         f" number. Received: {key}={value!r}")
    return float(value)


def _seed(value: Any) -> int | None:
    if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool)):
        raise ValueError(f"`seed` argument should be an integer or None. Received: seed={value!r}")
    return None if value is None else int(value)


def compute_fans(shape: Sequence[int], input_axes: Sequence[int] | None = None,
                 output_axes: Sequence[int] | None = None) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight shape, as Keras': a vector counts as both, a kernel
    (in, out) gives (in, out), a convolution kernel (..., in, out) multiplies both by its
    receptive field; input_axes and output_axes (both given) name the axes instead."""
    shape = tuple(shape)
    if input_axes is not None and output_axes is not None:
        return math.prod(shape[a] for a in input_axes), math.prod(shape[a] for a in output_axes)
    if len(shape) < 1:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    field = math.prod(shape[:-2])
    return shape[-2] * field, shape[-1] * field


class Initializer:
    """Base class, as `keras.initializers.Initializer`: `init(shape, dtype=None)` returns a new
    array.  A subclass writes `_fill(out, rng)` (out: the array to fill; rng: the generator to
    draw from), or overrides `__call__(shape, dtype=None)` as in Keras."""

    seed: int | None = None

    def __call__(self, shape: Sequence[int] | int, dtype: DTypeLike | None = None,
                 rng: np.random.Generator | None = None,
                 out: NDArray[Any] | None = None) -> NDArray[Any]:
        """An array of shape and dtype (default `fastnn.config.floatx()`), or out filled in
        place; drawn from a generator of the seed if it has one, else from rng (default:
        fresh entropy)."""
        if out is None:
            shape = (int(shape),) if isinstance(shape, (int, np.integer)) else \
                tuple(int(d) for d in shape)
            out = np.empty(shape, config.dtype(dtype))
        if self.seed is not None:
            rng = np.random.default_rng(self.seed)
        elif rng is None:
            rng = np.random.default_rng()
        self._fill(out, rng)
        return out

    def _fill(self, out: NDArray[Any], rng: np.random.Generator) -> None:
        raise NotImplementedError("Initializer subclasses must implement _fill(out, rng) or "
                                  "__call__(shape, dtype=None).")

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Initializer:
        return cls(**config)

    def clone(self) -> Initializer:
        return self.from_config(self.get_config())

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and \
            self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, repr(sorted(self.get_config().items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Zeros(Initializer):
    """All zeros."""

    def _fill(self, out: NDArray[Any], rng: np.random.Generator) -> None:
        out[...] = 0


class Ones(Initializer):
    """All ones."""

    def _fill(self, out: NDArray[Any], rng: np.random.Generator) -> None:
        out[...] = 1


class Constant(Initializer):
    """All `value` (default 0.0; a number: fastnn takes no array, Keras does)."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = _number("Constant", "value", value)

    def _fill(self, out: NDArray[Any], rng: np.random.Generator) -> None:
        out[...] = self.value

    def get_config(self) -> dict[str, Any]:
        return {"value": self.value}


class Identity(Initializer):
    """gain * the identity matrix (eye(rows, cols)): for 2-D shapes only (ValueError else)."""

    def __init__(self, gain: float = 1.0) -> None:
        self.gain = _number("Identity", "gain", gain)

    def _fill(self, out: NDArray[Any], rng: np.random.Generator) -> None:
        if out.ndim != 2:
            raise ValueError("Identity matrix initializer can only be used for 2D matrices. "
                             f"Received: shape={out.shape} of rank {out.ndim}.")
        out[...] = self.gain * np.eye(*out.shape)

    def get_config(self) -> dict[str, Any]:
        return {"gain": self.gain}


class _Elementwise(Initializer):
    """Independent draws: `_draw(shape, n, rng)` gives n float64 values, taken in order chunk
    by chunk (shape is the whole array's)."""

    def _draw(self, shape: tuple[int, ...], n: int,
              rng: np.random.Generator) -> NDArray[np.float64]:
        raise NotImplementedError

    def _fill(self, out: NDArray[Any], rng: np.random.Generator) -> None:
        for chunk in _chunks(out):
            chunk[...] = self._draw(out.shape, chunk.size, rng)


def _truncated_standard_normal(n: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """n standard normal draws, those beyond two standard deviations redrawn."""
    x = rng.standard_normal(n)
    bad = np.abs(x) > 2
    while bad.any():
        x[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(x) > 2
    return x


class RandomUniform(_Elementwise):
    """U(minval, maxval), defaults -0.05 and 0.05."""

    def __init__(self, minval: float = -0.05, maxval: float = 0.05,
                 seed: int | None = None) -> None:
        self.minval = _number("RandomUniform", "minval", minval)
        self.maxval = _number("RandomUniform", "maxval", maxval)
        self.seed = _seed(seed)

    def _draw(self, shape: tuple[int, ...], n: int,
              rng: np.random.Generator) -> NDArray[np.float64]:
        return rng.uniform(self.minval, self.maxval, n)

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed, "minval": self.minval, "maxval": self.maxval}


class RandomNormal(_Elementwise):
    """N(mean, stddev^2), defaults 0.0 and 0.05."""

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        self.mean = _number(type(self).__name__, "mean", mean)
        self.stddev = _number(type(self).__name__, "stddev", stddev)
        self.seed = _seed(seed)

    def _draw(self, shape: tuple[int, ...], n: int,
              rng: np.random.Generator) -> NDArray[np.float64]:
        return self.mean + rng.standard_normal(n) * self.stddev

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed, "mean": self.mean, "stddev": self.stddev}


class TruncatedNormal(RandomNormal):
    """N(mean, stddev^2) with the draws beyond two standard deviations of the mean redrawn
    (so the values lie in [mean - 2 stddev, mean + 2 stddev]); defaults 0.0 and 0.05."""

    def _draw(self, shape: tuple[int, ...], n: int,
              rng: np.random.Generator) -> NDArray[np.float64]:
        return self.mean + _truncated_standard_normal(n, rng) * self.stddev


class VarianceScaling(_Elementwise):
    """Draws of variance scale / n, n = fan_in, fan_out or their mean (mode) as
    `compute_fans` gives them (each at least 1):
        "truncated_normal" (default; "normal" means it): a normal truncated at two standard
            deviations, stddev sqrt(scale / n) / 0.87962566103423978 (so that the truncated
            draws have that variance);
        "untruncated_normal": N(0, scale / n);  "uniform": U(-l, l), l = sqrt(3 scale / n).
    ValueError for scale <= 0, another mode or distribution."""

    scale: float
    mode: str
    distribution: str
    input_axes: list[int] | None
    output_axes: list[int] | None

    def __init__(self, scale: float = 1.0, mode: str = "fan_in",
                 distribution: str = "truncated_normal", seed: int | None = None,
                 input_axes: Sequence[int] | None = None,
                 output_axes: Sequence[int] | None = None) -> None:
        if not isinstance(scale, numbers.Real) or isinstance(scale, bool) or \
                not math.isfinite(float(scale)) or scale <= 0.0:
            raise ValueError(f"Argument `scale` must be positive float. Received: scale={scale!r}")
        modes = ("fan_in", "fan_out", "fan_avg")
        if mode not in modes:
            raise ValueError(f"Invalid `mode` argument: {mode!r}. Please use one of {list(modes)}")
        dist = distribution.lower() if isinstance(distribution, str) else distribution
        dist = "truncated_normal" if dist == "normal" else dist
        dists = ("uniform", "truncated_normal", "untruncated_normal")
        if dist not in dists:
            raise ValueError(f"Invalid `distribution` argument: {distribution!r}. Please use one "
                             f"of {list(dists)}")
        self.scale, self.mode, self.distribution = float(scale), mode, str(dist)
        self.input_axes = None if input_axes is None else [int(a) for a in input_axes]
        self.output_axes = None if output_axes is None else [int(a) for a in output_axes]
        self.seed = _seed(seed)

    def _variance(self, shape: tuple[int, ...]) -> float:
        fan_in, fan_out = compute_fans(shape, self.input_axes, self.output_axes)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        return self.scale / max(1.0, n)

    def _draw(self, shape: tuple[int, ...], n: int,
              rng: np.random.Generator) -> NDArray[np.float64]:
        var = self._variance(shape)
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * var)
            return rng.uniform(-limit, limit, n)
        if self.distribution == "untruncated_normal":
            return rng.standard_normal(n) * math.sqrt(var)
        return _truncated_standard_normal(n, rng) * (math.sqrt(var) / TRUNCATED_STDDEV)

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed, "scale": self.scale, "mode": self.mode,
                "distribution": self.distribution, "input_axes": self.input_axes,
                "output_axes": self.output_axes}


class _Preset(VarianceScaling):
    """A VarianceScaling of fixed scale, mode and distribution (its config: the seed and axes)."""

    _preset: tuple[float, str, str]

    def __init__(self, seed: int | None = None, input_axes: Sequence[int] | None = None,
                 output_axes: Sequence[int] | None = None) -> None:
        scale, mode, distribution = self._preset
        super().__init__(scale, mode, distribution, seed, input_axes, output_axes)

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed, "input_axes": self.input_axes,
                "output_axes": self.output_axes}


class GlorotUniform(_Preset):
    """U(-l, l), l = sqrt(6 / (fan_in + fan_out)) (Keras' default kernel initializer)."""
    _preset = (1.0, "fan_avg", "uniform")


class GlorotNormal(_Preset):
    """Truncated normal of stddev sqrt(2 / (fan_in + fan_out)) / 0.8796..."""
    _preset = (1.0, "fan_avg", "truncated_normal")


class HeUniform(_Preset):
    """U(-l, l), l = sqrt(6 / fan_in)."""
    _preset = (2.0, "fan_in", "uniform")


class HeNormal(_Preset):
    """Truncated normal of stddev sqrt(2 / fan_in) / 0.8796..."""
    _preset = (2.0, "fan_in", "truncated_normal")


class LecunUniform(_Preset):
    """U(-l, l), l = sqrt(3 / fan_in)."""
    _preset = (1.0, "fan_in", "uniform")


class LecunNormal(_Preset):
    """Truncated normal of stddev sqrt(1 / fan_in) / 0.8796..."""
    _preset = (1.0, "fan_in", "truncated_normal")


class Orthogonal(Initializer):
    """gain * an orthogonal matrix (orthonormal rows or columns, whichever are fewer), from
    the QR decomposition of a standard normal (prod(shape[:-1]), shape[-1]) draw with the
    signs of R's diagonal, as Keras; ValueError for shapes of rank < 2."""

    def __init__(self, gain: float = 1.0, seed: int | None = None) -> None:
        self.gain = _number("Orthogonal", "gain", gain)
        self.seed = _seed(seed)

    def _fill(self, out: NDArray[Any], rng: np.random.Generator) -> None:
        if out.ndim < 2:
            raise ValueError("The tensor to initialize must be at least two-dimensional. "
                             f"Received: shape={out.shape} of rank {out.ndim}.")
        rows, cols = math.prod(out.shape[:-1]), out.shape[-1]
        a = rng.standard_normal((max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        out[...] = (self.gain * q).reshape(out.shape)

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed, "gain": self.gain}


# Keras' function-style names are the classes (keras.initializers.glorot_uniform is
# GlorotUniform)
zeros, ones, constant, identity = Zeros, Ones, Constant, Identity
random_uniform, random_normal, truncated_normal = RandomUniform, RandomNormal, TruncatedNormal
variance_scaling, orthogonal = VarianceScaling, Orthogonal
glorot_uniform, glorot_normal, he_uniform, he_normal = (GlorotUniform, GlorotNormal, HeUniform,
                                                        HeNormal)
lecun_uniform, lecun_normal = LecunUniform, LecunNormal

_CLASSES: tuple[type[Initializer], ...] = (
    Zeros, Ones, Constant, Identity, RandomUniform, RandomNormal, TruncatedNormal,
    VarianceScaling, GlorotUniform, GlorotNormal, HeUniform, HeNormal, LecunUniform,
    LecunNormal, Orthogonal)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# Keras' names: each class by its name and snake_case name, and Keras' aliases
ALL: dict[str, type[Initializer]] = {
    **{c.__name__: c for c in _CLASSES}, **{_snake(c.__name__): c for c in _CLASSES},
    "IdentityInitializer": Identity, "OrthogonalInitializer": Orthogonal,
    "normal": RandomNormal, "uniform": RandomUniform, "one": Ones, "zero": Zeros}
NAMES = tuple(_snake(c.__name__) for c in _CLASSES)
NAMES_BY_CLASS = {c.__name__: _snake(c.__name__) for c in _CLASSES}


def serialize(initializer: Initializer) -> dict[str, Any]:
    """An initializer's config, as `keras.initializers.serialize`."""
    if not isinstance(initializer, Initializer) or type(initializer).__name__ not in ALL:
        raise ValueError(f"Expected an initializer of fastnn.initializers to serialize. "
                         f"Received: {initializer!r}")
    return {"module": "keras.initializers", "class_name": type(initializer).__name__,
            "config": initializer.get_config(), "registered_name": None}


def deserialize(config: dict[str, Any] | str,
                custom_objects: dict[str, Any] | None = None) -> Any:
    """The initializer of a config (`serialize`'s dict, or a name), as
    `keras.initializers.deserialize`; custom_objects (name -> class) are looked up first."""
    if isinstance(config, str):
        config = {"class_name": config, "config": {}}
    if not isinstance(config, dict):
        raise ValueError(f"Could not interpret initializer identifier: {config!r}")
    name, cfg = config.get("class_name"), config.get("config") or {}
    cls = (custom_objects or {}).get(name) if isinstance(name, str) else None
    cls = cls or (ALL.get(name) if isinstance(name, str) else None)
    if cls is None or not isinstance(cfg, dict):
        raise ValueError(f"Could not interpret initializer identifier: {config!r} (expected a "
                         f"name in {sorted(ALL)})")
    try:
        return cls.from_config(cfg)
    except TypeError as e:
        raise ValueError(f"Unexpected arguments for initializer {name}: {sorted(cfg)} ({e})") \
            from None


def get(identifier: Any) -> Any:
    """An initializer from an identifier, as `keras.initializers.get`: a name ("he_normal",
    "HeNormal", Keras' aliases) or a config dict gives a new instance, a class an instance of
    it, an instance or any other callable itself, an array a function returning it (for its
    shape only); None gives None.  ValueError for anything else."""
    if identifier is None:
        return None
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier)
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()
    if isinstance(identifier, np.ndarray):
        value = identifier

        def initialize_fn(shape: Sequence[int], dtype: DTypeLike | None = None) -> NDArray[Any]:
            if tuple(shape) != value.shape:
                raise ValueError(f"Expected the shape {value.shape} of the array initializer. "
                                 f"Received: shape={tuple(shape)}")
            return np.array(value, dtype=config.dtype(dtype))
        return initialize_fn
    if callable(identifier):
        return identifier
    raise ValueError(f"Could not interpret initializer identifier: {identifier!r}")


def fill(init: Callable[..., Any], out: NDArray[Any], rng: np.random.Generator) -> None:
    """Initialize out in place: a built-in initializer fills it (chunk by chunk for the
    elementwise draws), drawing from rng unless it has its own seed; a custom one's result
    (a Keras-style `init(shape, dtype)`, or fastnn's older `init(shape, dtype, rng)`) is copied
    in."""
    if isinstance(init, Initializer) and type(init).__call__ is Initializer.__call__:
        init(out.shape, out.dtype, rng, out=out)
        return
    try:
        inspect.signature(init).bind(out.shape, out.dtype, rng)
        takes_rng = True
    except (TypeError, ValueError):
        takes_rng = False
    out[...] = init(out.shape, out.dtype, rng) if takes_rng else init(out.shape, out.dtype)
