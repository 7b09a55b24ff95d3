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

import functools
import numbers
import re
import threading
from typing import TYPE_CHECKING, Any, Callable, Hashable, NamedTuple, Sequence, TypeVar, cast

import numpy as np

from fastnn import _data, activations, backend, config, initializers, utils

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, DTypeLike, NDArray
    from typing_extensions import Self

    from fastnn.initializers import Initializer


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

    def __reduce__(self) -> tuple[type[Buffers], tuple[()]]:
        return Buffers, ()  # a copy (pickle, deepcopy) starts with no buffers


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


def _batch_shape(name: str, shape: Any) -> tuple[int | None, tuple[int, ...]]:
    """A Keras shape, batch dimension first, as (batch size or None, the sample's shape)."""
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"Expected {name} to be a tuple (batch, d1, ...), the batch dimension "
                        f"first (None: any). Received: {shape!r}") from None
    if len(shape) < 2:
        raise ValueError(f"Expected {name} to be a tuple (batch, d1, ...), the batch dimension "
                         f"first (None: any). Received: {shape!r}")
    batch = None if shape[0] is None else _shape_tuple(name, shape[:1])[0]
    return batch, _shape_tuple(name, shape[1:])


_Build = TypeVar("_Build", bound=Callable[..., None])


def _keras_build(build: _Build) -> _Build:
    """A layer class' `build(self, input_shape, rng)`, written for ONE sample's shape (how a
    model builds its layers, `Layer._build_sample`), made Keras' public `build(input_shape)`
    too: called from outside, input_shape includes the batch dimension (`(None, 784)`; one
    entry, `(784,)`, is one sample's, as Keras' Dense reads only the last axis), the rng
    defaults to one from fastnn's seed source, and the weights are made at once (the layer's
    own parameter buffer; a model it joins copies them into its own)."""
    if getattr(build, "_keras_build", False):
        return build

    @functools.wraps(build)
    def public(self: Layer, input_shape: Any, rng: np.random.Generator | None = None) -> None:
        if self._building:  # a model's build, or a subclass' super().build(...)
            return build(self, input_shape, rng)
        shape = (_shape_tuple("input_shape", input_shape) if len(tuple(input_shape)) == 1
                 else _batch_shape("input_shape", input_shape)[1])
        if self.built:
            if self.input_shape != shape:
                raise ValueError(f"Layer {self.name!r} was built for input_shape "
                                 f"{(None, *cast('tuple[int, ...]', self.input_shape))}. "
                                 f"Received: input_shape={tuple(input_shape)}")
            return
        rng = utils.new_rng() if rng is None else rng
        self._build_sample(shape, rng)
        if self.weight_specs:
            from fastnn import _step  # (imports this module)
            _step.pack_parameters([self], rng)
    public._keras_build = True  # type: ignore[attr-defined]
    return cast("_Build", public)


class _ActivationAttribute:
    """`layer.activation`: a resolved `activations.Spec`; assigning a name, a function of
    `fastnn.activations` or None (linear) resolves it, as Keras lets one set a layer's
    activation after construction.  It takes effect at the next call: predict at once, and
    fit too (the model rebuilds its training step when an activation changed, see
    Trainer.trainer), where Keras' compiled functions keep the old one until recompiled."""

    def __get__(self, layer: Layer | None, owner: type | None = None) -> activations.Spec:
        return cast(activations.Spec, layer.__dict__["_activation"]) if layer is not None \
            else self  # type: ignore[return-value]  # (on the class: the attribute itself)

    def __set__(self, layer: Layer,
                value: str | activations.Spec | Callable[..., Any] | None) -> None:
        layer.__dict__["_activation"] = activations.get(value)


class Layer:
    """Base class: name, dtype, build state and per-batch-size buffers.

    `build(input_shape)` is Keras': input_shape includes the batch dimension,
    `Dense(3).build((None, 4))`, and a layer built on its own has its weights at once; a
    layer called on an array, `Dense(3)(x)`, is built for x's shape and returns its output.
    Inside, a model builds every layer for the shape of ONE sample with its random generator
    (for initializers and noise): `_build_sample(input_shape, rng)`.  A layer class writes
    its `build(self, input_shape, rng)` in those terms; `__init_subclass__` makes it the
    public one too (`_keras_build`)."""

    _count: dict[str, int] = {}
    # the activation a layer ends in (Dense, Activation), else None
    activation: activations.Spec | None = None
    _building = False  # inside _build_sample (see _keras_build)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "build" in cls.__dict__:  # (each class' own build, once)
            setattr(cls, "build", _keras_build(cls.__dict__["build"]))

    def __init__(self, name: str | None = None, input_shape: int | Sequence[int] | None = None,
                 dtype: DTypeLike | None = None, trainable: bool = True) -> None:
        kind = re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()  # as Keras: input_layer
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

    @_keras_build
    def build(self, input_shape: Sequence[int], rng: np.random.Generator | None = None) -> None:
        self.input_shape = tuple(input_shape)
        self.built = True

    def _build_sample(self, input_shape: Sequence[int], rng: np.random.Generator) -> None:
        """Build for samples of input_shape (no batch dimension), with rng: a model's build."""
        self._building = True
        try:
            self.build(input_shape, rng)
        finally:
            self._building = False

    def __call__(self, x: ArrayLike, training: bool = False) -> NDArray[Any]:
        """The layer's output for the batch x, a new array, as a Keras layer called on an
        array: an unbuilt layer is built for x's shape first; x is converted to the layer's
        dtype.  training=True: training behaviour (dropout), default False."""
        x = _data.as_samples(x)
        if not self.built:
            self.build(cast("tuple[int, ...]", (None, *x.shape[1:])))  # (Keras' form)
        x = _data.conform_samples(x, cast("tuple[int, ...]", self.input_shape), self.dtype)
        out: NDArray[Any] = self.call(x, training=bool(training)).copy()
        return out

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
        """The number of weight values; ValueError on an unbuilt layer, as Keras."""
        if not self.built:
            raise ValueError(f"You tried to call `count_params` on layer '{self.name}', but the "
                             "layer isn't built. You can build it manually via: "
                             "`layer.build(input_shape)`.")
        return int(sum(w.size for w in self.weights))

    def get_weights(self) -> list[NDArray[Any]]:
        """Copies of the weight arrays, in `weights` order (none before the layer is built)."""
        return [w.copy() for w in self.weights]

    def set_weights(self, weights: Sequence[ArrayLike]) -> None:
        """Assign the weight arrays in place, as from get_weights: as many, of the same shapes
        (ValueError with Keras' message otherwise; nothing is assigned unless all fit)."""
        new = [np.asarray(v) for v in weights]
        if len(new) != len(self.weights):
            raise ValueError(f"You called `set_weights(weights)` on layer '{self.name}' with a "
                             f"weight list of length {len(new)}, but the layer was expecting "
                             f"{len(self.weights)} weights.")
        for w, v in zip(self.weights, new):
            if v.shape != w.shape:
                raise ValueError(f"Layer {self.name} weight shape {w.shape} is not compatible "
                                 f"with provided weight shape {v.shape}.")
        for w, v in zip(self.weights, new):
            w[...] = v

    def _buf(self, key: Hashable, shape: tuple[int, ...], training: bool = True) -> NDArray[Any]:
        """The layer's reusable buffer `key` for this shape (allocated on first use)."""
        return self._buffers.get(key, shape, self.dtype, training)

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, by Keras' config keys (values as plain data: the dtype,
        activation and initializers by name)."""
        return {"name": self.name, "trainable": self.trainable, "dtype": self.dtype.name}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Self:
        """A new, unbuilt layer of get_config()'s configuration."""
        cfg = dict(cfg)
        trainable = cfg.pop("trainable", True)
        layer = cls(**cfg)
        layer.trainable = trainable
        return layer

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name}>"


class InputLayer(Layer):
    """The model's input, as Keras' InputLayer: shape without the batch dimension, or
    batch_shape with it; batch_size (default None: any) only shows in the model's input and
    output shapes (Keras too predicts any batch size).  sparse, ragged, input_tensor and
    optional are Keras' and not supported by fastnn (only their defaults are accepted)."""

    def __init__(self, shape: int | Sequence[int] | None = None, batch_size: int | None = None,
                 dtype: DTypeLike | None = None, sparse: bool | None = None,
                 ragged: bool | None = None, batch_shape: Sequence[int | None] | None = None,
                 input_tensor: Any = None, optional: bool = False,
                 name: str | None = None) -> None:
        for key, value in (("sparse", sparse), ("ragged", ragged), ("optional", optional)):
            if value not in (None, False):
                raise ValueError(f"Input({key}={value!r}) is not supported by fastnn. "
                                 f"Expected {key}=False.")
        if input_tensor is not None:
            raise ValueError("Input(tensor=...) is not supported by fastnn (it has no symbolic "
                             "tensors). Expected None.")
        if batch_shape is not None:
            if shape is not None or batch_size is not None:
                raise ValueError("Expected either shape (and batch_size) or batch_shape. "
                                 f"Received: shape={shape!r}, batch_size={batch_size!r}, "
                                 f"batch_shape={batch_shape!r}")
            batch_size, shape = _batch_shape("batch_shape", batch_shape)
        if shape is None:
            raise ValueError("Expected Input(shape=...) with the shape of one sample. Received: None")
        super().__init__(name=name, input_shape=shape, dtype=dtype)
        if batch_size is not None:
            batch_size = _shape_tuple("batch_size", (batch_size,))[0]
        self.batch_size = batch_size

    @property
    def batch_shape(self) -> tuple[int | None, ...]:
        return (self.batch_size, *cast("tuple[int, ...]", self.input_shape))  # (not None)

    def get_config(self) -> dict[str, Any]:
        return {"batch_shape": self.batch_shape, "dtype": self.dtype.name, "sparse": False,
                "ragged": False, "name": self.name, "optional": False}


def Input(shape: int | Sequence[int] | None = None, batch_size: int | None = None,
          dtype: DTypeLike | None = None, sparse: bool | None = None,
          ragged: bool | None = None, batch_shape: Sequence[int | None] | None = None,
          name: str | None = None, tensor: Any = None, optional: bool = False) -> InputLayer:
    """Declare the input shape of a Sequential model: shape without the batch dimension (or
    batch_shape with it), Keras' arguments in Keras' order (see InputLayer)."""
    return InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, sparse=sparse,
                      ragged=ragged, batch_shape=batch_shape, input_tensor=tensor,
                      optional=optional, name=name)


class Dense(Layer):
    """y = activation(x @ kernel + bias): the matmul, bias and activation run as one fused
    kernel.

    Args:
        units: positive int, the output width.
        activation: a name from `fastnn.activations` (e.g. "relu", "softmax") or None
            (the default: linear, no activation).
        use_bias: whether to add a bias vector (default True).
        kernel_initializer, bias_initializer: names from `fastnn.initializers` or callables
            (shape, dtype, rng) -> array; defaults "glorot_uniform" and "zeros".
        input_shape: the shape of one sample, when this is the first layer (default None);
            or input_dim=n, Keras' shorthand for input_shape=(n,).
        name: the layer's name (default None: "dense", "dense_1", ...).
        dtype: "float32" or "float64" (default None: `fastnn.config.floatx()`).
        Keras' kernel_regularizer, bias_regularizer, activity_regularizer, kernel_constraint,
        bias_constraint, lora_rank, lora_alpha and quantization_config are accepted as None
        only (not supported by fastnn).
    """

    activation = _ActivationAttribute()  # (a Spec; assigning resolves a name)
    kernel: NDArray[Any] | None  # views into the model's parameters, once it binds them
    bias: NDArray[Any] | None

    def __init__(self, units: int,
                 activation: str | activations.Spec | Callable[..., Any] | None = None,
                 use_bias: bool = True, kernel_initializer: str | Initializer = "glorot_uniform",
                 bias_initializer: str | Initializer = "zeros",
                 input_shape: int | Sequence[int] | None = None, name: str | None = None,
                 dtype: DTypeLike | None = None, **kwargs: Any) -> None:
        trainable = kwargs.pop("trainable", True)
        input_dim = kwargs.pop("input_dim", None)
        if input_dim is not None:
            if input_shape is not None:
                raise ValueError("Expected input_shape or input_dim, not both. Received: "
                                 f"input_shape={input_shape!r}, input_dim={input_dim!r}")
            input_shape = _shape_tuple("input_dim", input_dim)
        for key in _DENSE_OFF:
            if kwargs.pop(key, None) is not None:
                raise ValueError(f"Dense({key}=...) is not supported by fastnn. Expected "
                                 f"{key}=None.")
        if kwargs:
            raise TypeError(f"Dense got unexpected keyword arguments: {sorted(kwargs)}")
        super().__init__(name=name, input_shape=input_shape, dtype=dtype, trainable=trainable)
        if not isinstance(units, (int, np.integer)) or isinstance(units, bool) or units < 1:
            raise ValueError(f"Expected units to be a positive int. Received: units={units!r}")
        self.units = int(units)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = kernel_initializer
        self.bias_initializer = bias_initializer
        self._kernel_init = initializers.get(kernel_initializer)
        self._bias_init = initializers.get(bias_initializer)

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
                                self.activation.alpha)
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
                                 self.kernel, self._y, self._z, act.code, act.alpha)
        return dx

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units,
                "activation": self.activation.name, "use_bias": self.use_bias,
                "kernel_initializer": _init_name(self.kernel_initializer),
                "bias_initializer": _init_name(self.bias_initializer),
                **{k: None for k in _DENSE_CONFIG}}


# Keras' Dense options fastnn has only off (None); those Keras 3.15's get_config lists
_DENSE_OFF = ("kernel_regularizer", "bias_regularizer", "activity_regularizer",
              "kernel_constraint", "bias_constraint", "lora_rank", "lora_alpha",
              "quantization_config")
_DENSE_CONFIG = ("kernel_regularizer", "bias_regularizer", "kernel_constraint",
                 "bias_constraint", "quantization_config")
_LINEAR = activations.Spec("linear")


def _init_name(init: str | Initializer) -> str:
    return init if isinstance(init, str) else getattr(init, "__name__", "glorot_uniform")


class Activation(Layer):
    """Applies an activation function to its input (softmax over the last axis)."""

    activation = _ActivationAttribute()  # (a Spec; assigning resolves a name)

    def __init__(self, activation: str | activations.Spec | Callable[..., Any] | None,
                 input_shape: int | Sequence[int] | None = None, name: str | None = None,
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, input_shape=input_shape, dtype=dtype)
        self.activation = activations.get(activation)

    def call(self, x: NDArray[Any], training: bool = False) -> NDArray[Any]:
        x2 = x.reshape(-1, x.shape[-1])
        y = self._buf("y", x2.shape, training)
        backend.K.act_forward(y, x2, self.activation.code, self.activation.alpha)
        if training:
            self._x, self._y = x2, y
        return y.reshape(x.shape)

    def backward(self, dy: NDArray[Any], need_dx: bool,
                 skip_activation: bool = False) -> NDArray[Any]:
        if skip_activation:
            return dy
        dy2 = dy.reshape(self._y.shape)
        backend.K.act_backward(dy2, dy2, self._y, self._x, self.activation.code,
                               self.activation.alpha)
        return dy

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "activation": self.activation.name}


class Flatten(Layer):
    """Flattens each sample to one axis: (batch, d1, d2, ...) -> (batch, d1 * d2 * ...).

    data_format: Keras' "channels_last" (the default, None) or "channels_first", which Keras
    flattens channels last: fastnn takes it for samples of one axis only (the same result)."""

    def __init__(self, data_format: str | None = None,
                 input_shape: int | Sequence[int] | None = None, name: str | None = None,
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, input_shape=input_shape, dtype=dtype)
        if data_format not in (None, "channels_last", "channels_first"):
            raise ValueError("Expected data_format to be 'channels_last' or 'channels_first'. "
                             f"Received: data_format={data_format!r}")
        self.data_format = data_format or "channels_last"

    def build(self, input_shape: Sequence[int], rng: np.random.Generator | None = None) -> None:
        if self.data_format == "channels_first" and len(input_shape) > 1:
            raise ValueError(f"Flatten(data_format='channels_first') of inputs "
                             f"{(None, *input_shape)} is not supported by fastnn. Expected "
                             "data_format='channels_last'.")
        super().build(input_shape, rng)

    def compute_output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        return (int(np.prod(input_shape)),)

    def call(self, x: NDArray[Any], training: bool = False) -> NDArray[Any]:
        if training:
            self._in_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy: NDArray[Any], need_dx: bool,
                 skip_activation: bool = False) -> NDArray[Any] | None:
        return dy.reshape(self._in_shape) if need_dx else None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "data_format": self.data_format}


class Dropout(Layer):
    """Sets a fraction `rate` of inputs to 0 during training and scales the rest by
    1 / (1 - rate); the identity at inference.

    Args:
        rate: the fraction dropped, in [0, 1).
        noise_shape: None (the default: every value drawn on its own) or the shape of the
            mask, batch axis first, as Keras: a 1 shares one draw along that axis (whole rows,
            channels...), None takes the input's size, e.g. (None, 1) drops whole samples.
        seed: int or None (the default: drawn from the model's seed).  The same seed gives
            the same masks.
    """

    def __init__(self, rate: float, noise_shape: Sequence[int | None] | None = None,
                 seed: int | None = None, input_shape: int | Sequence[int] | None = None, name: str | None = None,
                 dtype: DTypeLike | None = None) -> None:
        super().__init__(name=name, input_shape=input_shape, dtype=dtype)
        # (cast: to mypy a float is no numbers.Real, so the lines below would be unreachable)
        if not isinstance(cast(Any, rate), numbers.Real) or isinstance(rate, bool) \
                or not 0 <= rate < 1:
            raise ValueError(f"Expected rate in [0, 1). Received: rate={rate!r}")
        self.rate = float(rate)
        if noise_shape is not None:
            try:
                noise_shape = tuple(None if d is None else _shape_tuple("noise_shape", (d,))[0]
                                    for d in noise_shape)
            except TypeError:
                raise ValueError("Expected noise_shape to be None or a tuple of positive ints "
                                 f"or None. Received: noise_shape={noise_shape!r}") from None
        self.noise_shape = noise_shape
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
        mask = self._buf("mask", self._mask_shape(x.shape))
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
            dy *= self._buf("mask", self._mask_shape(dy.shape))
        return dy

    def _mask_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The mask's shape for inputs of shape: noise_shape with None read from shape."""
        if self.noise_shape is None:
            return shape
        mask = tuple(n if d is None else d for d, n in zip(self.noise_shape, shape))
        if len(self.noise_shape) != len(shape) or any(d not in (1, n) for d, n in zip(mask, shape)):
            raise ValueError(f"Expected noise_shape broadcastable to the inputs of Dropout "
                             f"{self.name!r}, of their rank with 1, None or the input's size on "
                             f"each axis. Received: noise_shape={self.noise_shape}, inputs of "
                             f"shape {shape}")
        return mask

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate, "seed": self.seed,
                "noise_shape": self.noise_shape}


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
                layer._build_sample(shape, rng)
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
