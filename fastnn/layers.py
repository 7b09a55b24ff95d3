"""Layers, named as in `keras.layers`: Input, Dense, Activation, Flatten, Dropout.

A layer is config + build + call, as in Keras: `__init__` validates and stores its
config, `build(input_shape)` creates the weights, `call(x, training)` only dispatches to a
kernel.  `backward(dy, need_dx)` is fastnn's: it writes the weight gradients into
`layer.grads` (same order as `layer.weights`) and returns dx (or None).

Buffers are owned by the layer and reused: one set per batch size, so a training loop
allocates nothing per step once every batch size has been seen.  Inference (training=False)
uses a separate set per thread, so several threads may predict with one model at once.
"""
from __future__ import annotations

import numbers
import threading
from typing import TYPE_CHECKING, Any, Callable, Hashable, NamedTuple, Sequence, cast

import numpy as np

from fastnn import activations, backend, config, initializers

if TYPE_CHECKING:
    from numpy.typing import DTypeLike, NDArray
    from typing_extensions import Self

    # an initializer: a built-in one (fastnn.initializers.Initializer) or any callable
    Initializer = Callable[..., Any]


class Buffers:
    """Reusable arrays by name: one set for training, and one per thread for inference
    (training=False), so several threads may predict at once.  Each name keeps only the array
    of the shape and dtype last asked for: a loop over batches of one size allocates nothing
    once warmed up, and a stream of new sizes frees the old arrays (memory stays bounded)."""

    def __init__(self) -> None:
        self._train: dict[Hashable, NDArray[Any]] = {}
        self._local = threading.local()

    def get(self, key: Hashable, shape: tuple[int, ...], dtype: DTypeLike,
            training: bool = True) -> NDArray[Any]:
        bufs: dict[Hashable, NDArray[Any]] | None
        bufs = self._train
        if not training:
            bufs = cast("dict[Hashable, NDArray[Any]] | None", getattr(self._local, "bufs", None))
            if bufs is None:
                bufs = self._local.bufs = {}
        b = bufs.get(key)
        if b is None or b.shape != shape or b.dtype != dtype:
            b = bufs[key] = np.empty(shape, dtype)
        return b


class WeightSpec(NamedTuple):
    """A weight declared by `Layer.add_weight`: made when the model packs its parameters."""
    name: str
    shape: tuple[int, ...]
    initializer: Initializer
    trainable: bool = True


def _shape_tuple(name: str, shape: Any) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,)
    try:
        shape = tuple(int(d) for d in shape)
    except TypeError:
        raise TypeError(f"Expected {name} to be a tuple of positive ints. Received: {shape!r}")
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"Expected {name} to be a tuple of positive ints. Received: {shape!r}")
    return cast("tuple[int, ...]", shape)


class Layer:
    """Base class: name, dtype, build state and per-batch-size buffers.

    Every layer is built the same way, `build(input_shape, rng)`: the shape of one sample and
    the model's random generator (for initializers and noise; None: a fresh one)."""

    _count: dict[str, int] = {}
    # the activation a layer ends in (Dense, Activation), else None
    activation: activations.Spec | None = None

    def __init__(self, name: str | None = None, input_shape: int | Sequence[int] | None = None,
                 dtype: DTypeLike | None = None, trainable: bool = True) -> None:
        kind = type(self).__name__.lower()
        Layer._count[kind] = Layer._count.get(kind, 0) + 1
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Expected name to be a str. Received: {name!r}")
        self.name = name or (kind if Layer._count[kind] == 1 else f"{kind}_{Layer._count[kind] - 1}")
        self.input_shape = None if input_shape is None else _shape_tuple("input_shape", input_shape)
        self.dtype = config.dtype(dtype)
        self.built = False
        self.trainable = trainable
        # each weight's declaration (name, shape, initializer, trainable), made by build
        self.weight_specs: list[WeightSpec] = []
        # parameter arrays, updated in place by the optimizer
        self.weights: list[NDArray[Any]] = []
        self.grads: list[NDArray[Any]] = []    # their gradients, same order and shapes
        self._buffers = Buffers()

    if TYPE_CHECKING:  # every layer of a model defines these two (not InputLayer)
        def call(self, x: NDArray[Any], training: bool = False) -> NDArray[Any]:
            """The layer's output for the batch x (a reused buffer)."""

        def backward(self, dy: NDArray[Any], need_dx: bool,
                     skip_activation: bool = False) -> NDArray[Any] | None:
            """Writes the weight gradients into self.grads; returns dx (or None)."""

    def build(self, input_shape: Sequence[int], rng: np.random.Generator | None = None) -> None:
        self.input_shape = tuple(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(input_shape)

    def add_weight(self, shape: Sequence[int], initializer: str | Initializer,
                   name: str, trainable: bool = True) -> None:
        """Declare a weight, as Keras' add_weight: its array is made when the model packs its
        parameters (`_step.pack_parameters`), initialized in place in the model's one buffer,
        so building needs no memory beyond the weights and their gradients.  A non-trainable
        weight (trainable=False, e.g. a moving statistic) is never stepped by the optimizer."""
        self.weight_specs.append(WeightSpec(name, tuple(int(d) for d in shape),
                                            initializers.get(initializer), bool(trainable)))

    @property
    def trainable(self) -> bool:
        """Whether the optimizer updates this layer's weights, as in Keras: setting it takes
        effect at the model's next compile() (Keras' rule), which re-packs the parameters."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"Expected trainable to be a bool. Received: trainable={value!r}")
        self._trainable = bool(value)

    def weight_trainable(self) -> list[bool]:
        """For each weight (declaration order): whether the optimizer steps it."""
        return [self._trainable and s.trainable for s in self.weight_specs]

    @property
    def trainable_weights(self) -> list[NDArray[Any]]:
        return [w for w, t in zip(self.weights, self.weight_trainable()) if t]

    @property
    def non_trainable_weights(self) -> list[NDArray[Any]]:
        return [w for w, t in zip(self.weights, self.weight_trainable()) if not t]

    def bind_weights(self, weights: Sequence[NDArray[Any]], grads: Sequence[NDArray[Any]]) -> None:
        """Use these arrays (same shapes, same values) as the weights and gradients."""
        self.weights, self.grads = list(weights), list(grads)

    @property
    def output_shape(self) -> tuple[int, ...]:
        # (of a built layer, which has an input shape)
        return self.compute_output_shape(cast("tuple[int, ...]", self.input_shape))

    def count_params(self) -> int:
        return int(sum(w.size for w in self.weights))

    def _buf(self, key: Hashable, shape: tuple[int, ...], training: bool = True) -> NDArray[Any]:
        """The layer's reusable buffer `key` for this shape (allocated on first use)."""
        return self._buffers.get(key, shape, self.dtype, training)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "trainable": self.trainable, "dtype": self.dtype.name}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Self:
        cfg = dict(cfg)
        trainable = cfg.pop("trainable", True)
        layer = cls(**cfg)
        layer.trainable = trainable
        return layer

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}>"


class InputLayer(Layer):
    """The model's input: shape without the batch dimension."""

    def __init__(self, shape: int | Sequence[int] | None = None, name: str | None = None,
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, input_shape=shape, dtype=dtype)
        if shape is None:
            raise ValueError("Expected Input(shape=...) with the shape of one sample. Received: None")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(),
                "shape": list(cast("tuple[int, ...]", self.input_shape))}  # not None: checked


def Input(shape: int | Sequence[int] | None = None, name: str | None = None,
          dtype: DTypeLike | None = None) -> InputLayer:
    """Declare the input shape of a Sequential model (without the batch dimension)."""
    return InputLayer(shape=shape, name=name, dtype=dtype)


class Dense(Layer):
    """y = activation(x @ kernel + bias): the matmul, bias and activation run as one fused
    kernel.

    Args:
        units: positive int, the output width.
        activation: a name from `fastnn.activations` (e.g. "relu", "softmax"), one of its
            functions, a functools.partial of one with keyword arguments (e.g.
            `functools.partial(activations.relu, max_value=6.0)`), or None (the default:
            linear, no activation).  Kept as `self.activation`, a callable that applies it.
        use_bias: whether to add a bias vector (default True).
        kernel_initializer, bias_initializer: names or instances of `fastnn.initializers`
            (e.g. "he_normal", `initializers.Orthogonal(gain=2.0)`), or callables
            (shape, dtype=None) -> array; defaults "glorot_uniform" and "zeros".
        input_shape: the shape of one sample, when this is the first layer (default None).
        name: the layer's name (default None: "dense", "dense_1", ...).
        dtype: "float32" or "float64" (default None: `fastnn.config.floatx()`).
    """

    activation: activations.Spec
    kernel: NDArray[Any] | None  # views into the model's parameters, once it binds them
    bias: NDArray[Any] | None

    def __init__(self, units: int,
                 activation: str | activations.Spec | Callable[..., Any] | None = None,
                 use_bias: bool = True, kernel_initializer: str | Initializer = "glorot_uniform",
                 bias_initializer: str | Initializer = "zeros",
                 input_shape: int | Sequence[int] | None = None, name: str | None = None,
                 dtype: DTypeLike | None = None, **kwargs: Any) -> None:
        trainable = kwargs.pop("trainable", True)
        if kwargs:
            raise TypeError(f"Dense got unexpected keyword arguments: {sorted(kwargs)}")
        super().__init__(name=name, input_shape=input_shape, dtype=dtype, trainable=trainable)
        if not isinstance(units, (int, np.integer)) or isinstance(units, bool) or units < 1:
            raise ValueError(f"Expected units to be a positive int. Received: units={units!r}")
        self.units = int(units)
        self.activation = activations.spec(activation)
        self.use_bias = bool(use_bias)
        self._kernel_init = initializers.get(kernel_initializer)
        self._bias_init = initializers.get(bias_initializer)
        # as given when a name, else resolved (a config dict or class becomes an instance)
        self.kernel_initializer = kernel_initializer if isinstance(kernel_initializer, str) \
            else self._kernel_init
        self.bias_initializer = bias_initializer if isinstance(bias_initializer, str) \
            else self._bias_init

    def build(self, input_shape: Sequence[int], rng: np.random.Generator | None = None) -> None:
        if len(input_shape) != 1:
            raise ValueError(f"Expected Dense {self.name!r} input of rank 2 (batch, features). "
                             f"Received: input_shape={(None, *input_shape)}; add a Flatten layer first.")
        super().build(input_shape, rng)
        self.add_weight((input_shape[0], self.units), self._kernel_init, "kernel")
        if self.use_bias:
            self.add_weight((self.units,), self._bias_init, "bias")
        self.kernel = self.bias = None  # until the model binds the arrays

    def compute_output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        return (self.units,)

    def bind_weights(self, weights: Sequence[NDArray[Any]], grads: Sequence[NDArray[Any]]) -> None:
        super().bind_weights(weights, grads)
        self.kernel = self.weights[0]
        self.bias = self.weights[1] if self.use_bias else None

    def call(self, x: NDArray[Any], training: bool = False) -> NDArray[Any]:
        n = x.shape[0]
        y = self._buf("y", (n, self.units), training)
        z = self._buf("z", (n, self.units), training) if self.activation.needs_preactivation else None
        backend.K.dense_forward(y, z, x, self.kernel, self.bias, self.activation.code,
                                self.activation.params)
        if training:  # what backward needs
            self._x, self._y, self._z = x, y, z
        return y

    def backward(self, dy: NDArray[Any], need_dx: bool, skip_activation: bool = False,
                 need_dw: bool = True) -> NDArray[Any] | None:
        """dy is consumed: it becomes dz, the gradient of the pre-activation.
        skip_activation: dy already is that (the fused softmax + crossentropy path).
        need_dw=False leaves the kernel gradient x.T @ dz to the caller (a rank-1 step)."""
        act = _LINEAR if skip_activation else self.activation
        dx = self._buf("dx", self._x.shape) if need_dx else None
        backend.K.dense_backward(self.grads[0] if need_dw else None,
                                 self.grads[1] if self.use_bias else None, dx, dy, dy, self._x,
                                 self.kernel, self._y, self._z, act.code, act.params)
        return dx

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units,
                "activation": activations.serialize(self.activation), "use_bias": self.use_bias,
                "kernel_initializer": _init_name(self.kernel_initializer),
                "bias_initializer": _init_name(self.bias_initializer)}


_LINEAR = activations.Spec("linear")


def _init_name(init: str | Initializer) -> str | dict[str, Any]:
    """An initializer as a layer's config holds it: a name as given, a built-in initializer's
    Keras config (`initializers.serialize`), else the callable's name."""
    if isinstance(init, str):
        return init
    if isinstance(init, initializers.Initializer):
        return initializers.serialize(init)
    return cast(str, getattr(init, "__name__", "glorot_uniform"))


class Activation(Layer):
    """Applies an activation function to its input (softmax over the last axis): a name, a
    function of `fastnn.activations` or a functools.partial of one, as Dense takes it."""

    activation: activations.Spec

    def __init__(self, activation: str | activations.Spec | Callable[..., Any] | None,
                 input_shape: int | Sequence[int] | None = None, name: str | None = None,
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, input_shape=input_shape, dtype=dtype)
        self.activation = activations.spec(activation)

    def call(self, x: NDArray[Any], training: bool = False) -> NDArray[Any]:
        x2 = x.reshape(-1, x.shape[-1])
        y = self._buf("y", x2.shape, training)
        backend.K.act_forward(y, x2, self.activation.code, self.activation.params)
        if training:
            self._x, self._y = x2, y
        return y.reshape(x.shape)

    def backward(self, dy: NDArray[Any], need_dx: bool,
                 skip_activation: bool = False) -> NDArray[Any]:
        if skip_activation:
            return dy
        dy2 = dy.reshape(self._y.shape)
        backend.K.act_backward(dy2, dy2, self._y, self._x, self.activation.code,
                               self.activation.params)
        return dy

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "activation": activations.serialize(self.activation)}


class Flatten(Layer):
    """Flattens each sample to one axis: (batch, d1, d2, ...) -> (batch, d1 * d2 * ...)."""

    def compute_output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        return (int(np.prod(input_shape)),)

    def call(self, x: NDArray[Any], training: bool = False) -> NDArray[Any]:
        if training:
            self._in_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy: NDArray[Any], need_dx: bool,
                 skip_activation: bool = False) -> NDArray[Any] | None:
        return dy.reshape(self._in_shape) if need_dx else None


class Dropout(Layer):
    """Sets a fraction `rate` of inputs to 0 during training and scales the rest by
    1 / (1 - rate); the identity at inference."""

    def __init__(self, rate: float, seed: int | None = None,
                 input_shape: int | Sequence[int] | None = None, name: str | None = None,
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, input_shape=input_shape, dtype=dtype)
        # (cast: to mypy a float is no numbers.Real, so the lines below would be unreachable)
        if not isinstance(cast(Any, rate), numbers.Real) or isinstance(rate, bool) \
                or not 0 <= rate < 1:
            raise ValueError(f"Expected rate in [0, 1). Received: rate={rate!r}")
        self.rate = float(rate)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def build(self, input_shape: Sequence[int], rng: np.random.Generator | None = None) -> None:
        super().build(input_shape, rng)
        if self.seed is None and rng is not None:  # the model's seed decides the masks
            self.rng = np.random.default_rng(rng.integers(2**63))

    def call(self, x: NDArray[Any], training: bool = False) -> NDArray[Any]:
        if not training:
            return x
        self._training = self.rate > 0
        if not self._training:
            return x
        mask = self._buf("mask", x.shape)
        self.rng.random(dtype=self.dtype, out=mask)
        # mask := (u >= rate) / (1 - rate)
        np.greater_equal(mask, self.rate, out=mask)
        mask *= self.dtype.type(1.0 / (1.0 - self.rate))
        y = self._buf("y", x.shape)
        np.multiply(x, mask, out=y)
        return y

    def backward(self, dy: NDArray[Any], need_dx: bool,
                 skip_activation: bool = False) -> NDArray[Any]:
        if self._training:
            dy *= self._buf("mask", dy.shape)
        return dy

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def build_all(layers: Sequence[Layer], input_shape: Sequence[int],
              rng: np.random.Generator) -> tuple[int, ...]:
    """Build the layers in order for samples of input_shape (each layer's input the previous
    one's output), with the random generator rng; all or nothing: if a layer refuses its
    input, the layers and rng are left as they were and the error propagates.  Returns the
    output shape."""
    state, fresh = rng.bit_generator.state, [(l, l.input_shape) for l in layers if not l.built]
    shape = tuple(input_shape)
    try:
        for layer in layers:
            if not layer.built:
                layer.build(shape, rng)
            elif layer.input_shape != shape:
                raise ValueError(f"Layer {layer.name!r} was built for input {layer.input_shape}, "
                                 f"but receives {shape}.")
            shape = layer.output_shape
    except Exception:
        rng.bit_generator.state = state
        for layer, before in fresh:
            layer.built, layer.input_shape, layer.weight_specs = False, before, []
        raise
    return shape


LAYERS: dict[str, type[Layer]] = {
    c.__name__: c for c in (InputLayer, Dense, Activation, Flatten, Dropout)}
