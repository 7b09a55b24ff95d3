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
from typing import (TYPE_CHECKING, Any, Callable, Hashable, Iterator, NamedTuple, Sequence,
                    TypeVar, cast)

import numpy as np

from fastnn import (_data, activations, backend, config, constraints, initializers,
                    mixed_precision, regularizers, utils)

if TYPE_CHECKING:
    from numpy.typing import ArrayLike, DTypeLike, NDArray
    from typing_extensions import Self

    from fastnn.constraints import Constraint
    # an initializer: a built-in one (fastnn.initializers.Initializer) or any callable
    Initializer = Callable[..., Any]
    from fastnn.regularizers import Regularizer


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
            b = bufs[key] = _data.aligned_empty(shape, dtype)
        return b

    def __reduce__(self) -> tuple[type[Buffers], tuple[()]]:
        return Buffers, ()  # a copy (pickle, deepcopy) starts with no buffers


def _snake_case(name: str) -> str:
    """Keras' default layer names (keras.src.utils.naming.to_snake_case): ReLU -> re_lu."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


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
        layer.__dict__["_activation"] = activations.spec(value)


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
        kind = _snake_case(type(self).__name__)  # as Keras: "dense", "batch_normalization"
        Layer._count[kind] = Layer._count.get(kind, 0) + 1
        if name is not None and not isinstance(name, str):
            raise TypeError(f"Expected name to be a str. Received: {name!r}")
        self.name = name or (kind if Layer._count[kind] == 1 else f"{kind}_{Layer._count[kind] - 1}")
        self.input_shape = None if input_shape is None else _shape_tuple("input_shape", input_shape)
        # Keras' DTypePolicy (fastnn.mixed_precision): dtype is the variables' (float32 or
        # float64); under "mixed_bfloat16" a Dense layer's products run in bfloat16
        self.dtype_policy = mixed_precision.get(dtype)
        self.dtype = np.dtype(self.dtype_policy.variable_dtype)
        self.built = False
        self.trainable = trainable
        # each weight's declaration (name, shape, initializer, trainable), made by build
        self.weight_specs: list[WeightSpec] = []
        # parameter arrays, updated in place by the optimizer
        self.weights: list[NDArray[Any]] = []
        self.grads: list[NDArray[Any]] = []    # their gradients, same order and shapes
        self._buffers = Buffers()
        # by weight name: the penalties and constraints the training step applies (see
        # regularization_loss, apply_constraints); the penalty of the output, over batch size
        self.weight_regularizers: dict[str, Regularizer] = {}
        self.weight_constraints: dict[str, Constraint] = {}
        self.activity_regularizer: Regularizer | None = None

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

    def _build_sample(self, input_shape: Sequence[int],
                      rng: np.random.Generator | None = None) -> None:
        """Build for samples of input_shape (no batch dimension), with rng (None: the build
        makes one if it needs one): a model's build; declares the weights only."""
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
        return {"name": self.name, "trainable": self.trainable, "dtype": self.dtype_policy.name}

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

    # ---- regularizers and constraints (fastnn/regularizers.py, fastnn/constraints.py) ----------

    @property
    def regularized(self) -> bool:
        """Whether the training step has penalties or constraints to apply for this layer."""
        return bool(self.weight_regularizers or self.weight_constraints
                    or self.activity_regularizer is not None)

    def _named_weights(self, table: dict[str, Any]) -> list[tuple[int, Any]]:
        """(index, table[name]) of the trainable weights named in table (as Keras, a frozen
        weight has no penalty and no constraint)."""
        names = [s.name for s in self.weight_specs]
        trainable = self.weight_trainable()
        return [(names.index(n), v) for n, v in table.items()
                if n in names and trainable[names.index(n)]]

    def regularization_loss(self, add_gradients: bool, scale: float = 1.0) -> float:
        """The sum of the weight penalties (as Keras' layer.losses from weight regularizers);
        add_gradients: also add each penalty's gradient (times scale) to its weight's gradient
        (self.grads)."""
        total = 0.0
        for i, reg in self._named_weights(self.weight_regularizers):
            total += reg(self.weights[i])
            if add_gradients:
                if scale == 1.0:
                    reg.add_gradient(self.weights[i], self.grads[i])
                else:
                    g = np.zeros_like(self.grads[i])
                    reg.add_gradient(self.weights[i], g)
                    self.grads[i] += g * g.dtype.type(scale)
        return total

    def activity_loss(self, y: NDArray[Any], dy: NDArray[Any] | None = None,
                      scale: float = 1.0) -> float:
        """activity_regularizer(y) / batch size, as Keras; dy (the gradient of the loss with
        respect to the output y, or None): its gradient (times scale) is added in place."""
        reg = self.activity_regularizer
        if reg is None:
            return 0.0
        n = y.shape[0]
        if dy is not None:
            g = np.zeros_like(y)
            reg.add_gradient(y, g)
            dy += g * dy.dtype.type(scale / n)
        penalty: float = reg(y) / n
        return penalty

    def apply_constraints(self) -> None:
        """Project the constrained weights in place (after each optimizer step, as Keras)."""
        for i, c in self._named_weights(self.weight_constraints):
            self.weights[i][...] = c(self.weights[i])


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
        activation: a name from `fastnn.activations` (e.g. "relu", "softmax"), one of its
            functions, a functools.partial of one with keyword arguments (e.g.
            `functools.partial(activations.relu, max_value=6.0)`), or None (the default:
            linear, no activation).  Kept as `self.activation`, a callable that applies it.
        use_bias: whether to add a bias vector (default True).
        kernel_initializer, bias_initializer: names or instances of `fastnn.initializers`
            (e.g. "he_normal", `initializers.Orthogonal(gain=2.0)`), or callables
            (shape, dtype=None) -> array; defaults "glorot_uniform" and "zeros".
        kernel_regularizer, bias_regularizer, activity_regularizer: `fastnn.regularizers`
            (or names, e.g. "l2"); the penalty is added to the training loss, the activity
            one divided by the batch size (default None).
        kernel_constraint, bias_constraint: `fastnn.constraints` (or names, e.g. "max_norm"),
            applied after each optimizer step (default None).  A Dense layer with any of these
            five trains layer by layer, not in the compiled Dense-stack step.
        input_shape: the shape of one sample, when this is the first layer (default None);
            or input_dim=n, Keras' shorthand for input_shape=(n,).
        name: the layer's name (default None: "dense", "dense_1", ...).
        dtype: "float32" or "float64" (default None: `fastnn.config.floatx()`).
        Keras' lora_rank, lora_alpha and quantization_config are accepted as None only (not
        supported by fastnn).
    """

    activation = _ActivationAttribute()  # (a Spec; assigning resolves a name)
    kernel: NDArray[Any] | None  # views into the model's parameters, once it binds them
    bias: NDArray[Any] | None

    def __init__(self, units: int,
                 activation: str | activations.Spec | Callable[..., Any] | None = None,
                 use_bias: bool = True, kernel_initializer: str | Initializer = "glorot_uniform",
                 bias_initializer: str | Initializer = "zeros",
                 kernel_regularizer: Any = None, bias_regularizer: Any = None,
                 activity_regularizer: Any = None, kernel_constraint: Any = None,
                 bias_constraint: Any = None,
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
        _set_regularizers(self, {"kernel": (kernel_regularizer, kernel_constraint),
                                 "bias": (bias_regularizer, bias_constraint)},
                          activity_regularizer)
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
        if self.dtype_policy.mixed:
            return self._call_bf16(x, y, z, training)
        backend.K.dense_forward(y, z, x, self.kernel, self.bias, self.activation.code,
                                self.activation.params)
        if training:  # what backward needs
            self._x, self._y, self._z = x, y, z
        return y

    def _call_bf16(self, x: NDArray[Any], y: NDArray[Any], z: NDArray[Any] | None,
                   training: bool) -> NDArray[Any]:
        """mixed_bfloat16: x and the kernel rounded to bfloat16 (the kernel packed as the
        product reads it, and its transpose for the backward), sums, bias and activation in
        float32.  The compiled step (src_c/step.inc bf16_step) makes the same calls."""
        K, (i, o) = backend.K, cast("NDArray[Any]", self.kernel).shape
        get = self._buffers.get
        x16 = get("x16", x.shape, np.uint16, training)
        K.bf16_convert_forward(x16, x)
        wp = get("wp", (K.bf16_packed_size(i, o),), np.uint16, training)
        K.bf16_pack_forward(wp, None, self.kernel)
        K.dense_forward_bf16(y, z, None, x16, wp, self.bias, self.activation.code,
                             self.activation.params)
        if training:
            self._x, self._x16, self._y, self._z = x, x16, y, z
        return y

    def backward(self, dy: NDArray[Any], need_dx: bool, skip_activation: bool = False,
                 need_dw: bool = True) -> NDArray[Any] | None:
        """dy is consumed: it becomes dz, the gradient of the pre-activation.
        skip_activation: dy already is that (the fused softmax + crossentropy path).
        need_dw=False leaves the kernel gradient x.T @ dz to the caller (a rank-1 step)."""
        act = _LINEAR if skip_activation else self.activation
        dx = self._buf("dx", self._x.shape) if need_dx else None
        if self.dtype_policy.mixed:  # (need_dw: the compiled step never asks otherwise)
            K, n = backend.K, self._x.shape[0]
            scratch = self._buffers.get("scratch", (K.bf16_backward_scratch_size(
                n, self._x.shape[1], self.units),), np.uint16)
            i, o = cast("NDArray[Any]", self.kernel).shape
            wtp = self._buffers.get("wtp", (K.bf16_packed_size(o, i),), np.uint16)
            if need_dx:  # w.T packed, for dx (the first layer needs none)
                K.bf16_pack_forward(None, wtp, self.kernel)
            K.dense_backward_bf16(self.grads[0], self.grads[1] if self.use_bias else None, dx,
                                  dy, scratch, dy, self._x16, wtp, self._y, self._z,
                                  act.code, act.params)
            return dx
        backend.K.dense_backward(self.grads[0] if need_dw else None,
                                 self.grads[1] if self.use_bias else None, dx, dy, dy, self._x,
                                 self.kernel, self._y, self._z, act.code, act.params)
        return dx

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units,
                "activation": activations.serialize(self.activation), "use_bias": self.use_bias,
                "kernel_initializer": _init_name(self.kernel_initializer),
                "bias_initializer": _init_name(self.bias_initializer),
                "kernel_regularizer": None, "bias_regularizer": None,  # (Keras' keys, in
                "kernel_constraint": None, "bias_constraint": None,  # its order)
                **_regularizer_config(self, {"kernel": "kernel", "bias": "bias"}),
                "quantization_config": None}


# Keras' Dense options fastnn has only off (None)
_DENSE_OFF = ("lora_rank", "lora_alpha", "quantization_config")
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

    activation = _ActivationAttribute()  # (a Spec; assigning resolves a name)

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


# ==== Keras layers for dense networks (issue #11): normalization, activation layers, noise,
# reshaping, preprocessing; with the regularizer/constraint plumbing Dense shares. ============

def _set_regularizers(layer: Layer, table: dict[str, tuple[Any, Any]],
                      activity_regularizer: Any = None) -> None:
    """Resolve {weight name: (regularizer, constraint)} (names, dicts, objects or None) onto the
    layer (`Layer.regularization_loss`, `Layer.apply_constraints`)."""
    for weight, (reg, con) in table.items():
        r, c = regularizers.get(reg), constraints.get(con)
        if r is not None:
            layer.weight_regularizers[weight] = r
        if c is not None:
            layer.weight_constraints[weight] = c
    layer.activity_regularizer = regularizers.get(activity_regularizer)


def _regularizer_config(layer: Layer, keys: dict[str, str]) -> dict[str, Any]:
    """The config entries <key>_regularizer / <key>_constraint (keys: config prefix -> weight
    name) and activity_regularizer that are set (serialized as Keras does); unset ones are left
    out, so configs without them stay as they were."""
    out: dict[str, Any] = {}
    for prefix, weight in keys.items():
        if weight in layer.weight_regularizers:
            out[f"{prefix}_regularizer"] = regularizers.serialize(layer.weight_regularizers[weight])
        if weight in layer.weight_constraints:
            out[f"{prefix}_constraint"] = constraints.serialize(layer.weight_constraints[weight])
    if layer.activity_regularizer is not None:
        out["activity_regularizer"] = regularizers.serialize(layer.activity_regularizer)
    return out


class _AffineNorm(Layer):
    """What BatchNormalization and LayerNormalization share (set by _set_affine)."""

    epsilon: float
    center: bool
    scale: bool
    beta_initializer: Any
    gamma_initializer: Any
    gamma: NDArray[Any] | None
    beta: NDArray[Any] | None


def _set_affine(layer: _AffineNorm, epsilon: Any, center: Any, scale: Any, beta_initializer: Any,
                gamma_initializer: Any, beta_regularizer: Any, gamma_regularizer: Any,
                beta_constraint: Any, gamma_constraint: Any) -> None:
    """The settings BatchNormalization and LayerNormalization share: epsilon (> 0), center and
    scale, beta's and gamma's initializers (checked), regularizers and constraints; gamma and
    beta are made by build."""
    layer.epsilon = _number("epsilon", epsilon)
    if not layer.epsilon > 0:
        raise ValueError(f"Expected epsilon > 0. Received: epsilon={epsilon!r}")
    layer.center, layer.scale = bool(center), bool(scale)
    layer.beta_initializer, layer.gamma_initializer = beta_initializer, gamma_initializer
    initializers.get(beta_initializer)
    initializers.get(gamma_initializer)
    _set_regularizers(layer, {"beta": (beta_regularizer, beta_constraint),
                              "gamma": (gamma_regularizer, gamma_constraint)})
    layer.gamma = None
    layer.beta = None


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise ValueError(f"Expected {name} to be a number. Received: {name}={value!r}")
    return float(value)


def _axes(name: str, axis: Any, rank: int, input_shape: Sequence[int]) -> tuple[int, ...]:
    """Keras axes (ints into the input shape with its batch dimension, negative from the end)
    as sorted non-negative ints, each a sample axis (>= 1)."""
    items = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    out = []
    for a in items:
        if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or not -rank <= a < rank:
            raise ValueError(f"Axis {a!r} is out of bounds for input shape "
                             f"{(None, *input_shape)}. Received: {name}={axis!r}")
        a = int(a) % rank
        if a == 0:
            raise ValueError(f"Expected {name} to name sample axes, not the batch axis 0 "
                             f"(fastnn normalizes within a batch's features). Received: "
                             f"{name}={axis!r}")
        out.append(a)
    if len(set(out)) != len(out):
        raise ValueError(f"Expected distinct axes. Received: {name}={axis!r}")
    return tuple(sorted(out))


class _FeaturesLast:
    """x (batch, ...) as a C-contiguous 2-D (rows, features) array with `axes` (sorted, of the
    full shape) as the features, and back.  A view when the axes are the trailing ones (the
    usual axis=-1), else a transposed copy."""

    def __init__(self, shape: Sequence[int], axes: Sequence[int]) -> None:
        rank = len(shape)
        rest = [d for d in range(rank) if d not in axes]
        self.order = rest + list(axes)
        self.identity = self.order == list(range(rank))
        self.features = int(np.prod([shape[a] for a in axes]))

    def rows(self, x: NDArray[Any]) -> tuple[NDArray[Any], tuple[int, ...]]:
        moved = x if self.identity else np.ascontiguousarray(x.transpose(self.order))
        return moved.reshape(-1, self.features), moved.shape

    def back(self, y2: NDArray[Any], moved_shape: tuple[int, ...]) -> NDArray[Any]:
        y = y2.reshape(moved_shape)
        return y if self.identity else np.ascontiguousarray(y.transpose(np.argsort(self.order)))


class BatchNormalization(_AffineNorm):
    """Normalizes each feature with the batch's statistics in training and moving statistics at
    inference, as keras.layers.BatchNormalization:

        training=True (fit, train_on_batch, model(x, training=True)):
            mean, var := the batch's per-feature mean and (biased) variance;
            moving_mean := moving_mean * momentum + mean * (1 - momentum)   (likewise var)
        training=False (predict, evaluate, model(x)):  mean, var := moving_mean, moving_var
        y := (x - mean) * gamma / sqrt(var + epsilon) + beta

    The gradient flows through the batch statistics (the C kernels of src_c/norm.inc).

    Args:
        axis: the feature axis (an int of the input shape with its batch axis; default -1).
        momentum: of the moving statistics (default 0.99).
        epsilon: added to the variance (default 1e-3; must be > 0 in fastnn).
        center, scale: learn beta / gamma (default True each).
        beta_initializer, gamma_initializer, moving_mean_initializer,
        moving_variance_initializer: defaults "zeros", "ones", "zeros", "ones".
        beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint: default None.
        renorm, synchronized: only False (fastnn has neither batch renormalization nor several
            devices); renorm_clipping, renorm_momentum are accepted for Keras' configs.

    Weights: gamma (if scale), beta (if center), trainable; moving_mean, moving_variance,
    non-trainable (`add_weight(trainable=False)`), in Keras' order.  As Keras, a frozen layer
    (trainable=False) uses the moving statistics in training too.
    """

    def __init__(self, axis: int = -1, momentum: float = 0.99, epsilon: float = 1e-3,
                 center: bool = True, scale: bool = True,
                 beta_initializer: str | Initializer = "zeros",
                 gamma_initializer: str | Initializer = "ones",
                 moving_mean_initializer: str | Initializer = "zeros",
                 moving_variance_initializer: str | Initializer = "ones",
                 beta_regularizer: Any = None, gamma_regularizer: Any = None,
                 beta_constraint: Any = None, gamma_constraint: Any = None,
                 renorm: bool = False, renorm_clipping: Any = None,
                 renorm_momentum: float = 0.99, synchronized: bool = False,
                 input_shape: int | Sequence[int] | None = None, name: str | None = None,
                 dtype: DTypeLike | None = None, trainable: bool = True) -> None:
        super().__init__(name=name, input_shape=input_shape, dtype=dtype, trainable=trainable)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise ValueError(f"Expected axis to be an int. Received: axis={axis!r}")
        if renorm or synchronized:
            raise ValueError(f"Expected renorm=False and synchronized=False: fastnn has neither. "
                             f"Received: renorm={renorm!r}, synchronized={synchronized!r}")
        self.axis = int(axis)
        self.momentum = _number("momentum", momentum)
        _set_affine(self, epsilon, center, scale, beta_initializer, gamma_initializer,
                    beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint)
        self.moving_mean_initializer = moving_mean_initializer
        self.moving_variance_initializer = moving_variance_initializer
        initializers.get(moving_mean_initializer)
        initializers.get(moving_variance_initializer)
        self.renorm_clipping, self.renorm_momentum = renorm_clipping, renorm_momentum

    def build(self, input_shape: Sequence[int], rng: np.random.Generator | None = None) -> None:
        full = (1, *input_shape)
        axes = _axes("axis", self.axis, len(full), input_shape)
        super().build(input_shape, rng)
        self._layout = _FeaturesLast(full, axes)
        m = (full[axes[0]],)
        if self.scale:
            self.add_weight(m, self.gamma_initializer, "gamma")
        if self.center:
            self.add_weight(m, self.beta_initializer, "beta")
        self.add_weight(m, self.moving_mean_initializer, "moving_mean", trainable=False)
        self.add_weight(m, self.moving_variance_initializer, "moving_variance", trainable=False)

    def bind_weights(self, weights: Sequence[NDArray[Any]], grads: Sequence[NDArray[Any]]) -> None:
        super().bind_weights(weights, grads)
        it = iter(self.weights)
        self.gamma = next(it) if self.scale else None
        self.beta = next(it) if self.center else None
        self.moving_mean, self.moving_variance = next(it), next(it)

    def call(self, x: NDArray[Any], training: bool = False) -> NDArray[Any]:
        x2, moved = self._layout.rows(x)
        m = x2.shape[1]
        y2 = self._buf("y", x2.shape, training)
        # as Keras, a frozen layer (trainable=False) normalizes with the moving statistics
        # even in training, and leaves them as they are
        self._batch_stats = training and self.trainable
        if self._batch_stats:
            mean, var = self._buf("mean", (m,)), self._buf("var", (m,))
            backend.K.batchnorm_forward(y2, mean, var, x2, self.gamma, self.beta, self.epsilon,
                                        True)
            mo, keep = self.dtype.type(1.0 - self.momentum), self.dtype.type(self.momentum)
            # Keras' update: moving := moving * momentum + batch * (1 - momentum)
            self.moving_mean[...] = self.moving_mean * keep + mean * mo
            self.moving_variance[...] = self.moving_variance * keep + var * mo
            self._x2, self._moved, self._mean, self._var = x2, moved, mean, var
        else:
            backend.K.batchnorm_forward(y2, self.moving_mean, self.moving_variance, x2,
                                        self.gamma, self.beta, self.epsilon, False)
            if training:
                self._moved = moved
        return self._layout.back(y2, moved)

    def backward(self, dy: NDArray[Any], need_dx: bool,
                 skip_activation: bool = False) -> NDArray[Any] | None:
        dy2, _ = self._layout.rows(dy)
        if not self._batch_stats:  # frozen: a fixed affine map, dx := dy * gamma / sqrt(var + eps)
            dy2 *= (1 if self.gamma is None else self.gamma) / np.sqrt(
                self.moving_variance + self.dtype.type(self.epsilon))
            return self._layout.back(dy2, self._moved) if need_dx else None
        m = dy2.shape[1]
        g = iter(self.grads)
        dgamma = next(g) if self.scale else self._buf("dgamma", (m,))
        dbeta = next(g) if self.center else self._buf("dbeta", (m,))
        backend.K.batchnorm_backward(dy2, dgamma, dbeta, dy2, self._x2, self._mean, self._var,
                                     self.gamma, self.epsilon)
        return self._layout.back(dy2, self._moved) if need_dx else None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum,
                "epsilon": self.epsilon, "center": self.center, "scale": self.scale,
                "beta_initializer": _init_name(self.beta_initializer),
                "gamma_initializer": _init_name(self.gamma_initializer),
                "moving_mean_initializer": _init_name(self.moving_mean_initializer),
                "moving_variance_initializer": _init_name(self.moving_variance_initializer),
                **_regularizer_config(self, {"beta": "beta", "gamma": "gamma"})}


class LayerNormalization(_AffineNorm):
    """Normalizes each sample over `axis`, as keras.layers.LayerNormalization:
    y := (x - mean) / sqrt(var + epsilon) * gamma + beta, mean and (biased) var of each sample
    over the axes; the same in training and inference (C kernels, src_c/norm.inc).

    Args:
        axis: an int or a list of ints of the input shape (with its batch axis; default -1).
            As Keras, `layer.axis` becomes a sorted list once built.
        epsilon: default 1e-3 (must be > 0 in fastnn).  center, scale: default True.
        beta_initializer, gamma_initializer: default "zeros", "ones".
        beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint: default None.
    Weights: gamma (if scale), beta (if center), of the shape of the normalized axes.
    """

    def __init__(self, axis: int | Sequence[int] = -1, epsilon: float = 1e-3,
                 center: bool = True, scale: bool = True,
                 beta_initializer: str | Initializer = "zeros",
                 gamma_initializer: str | Initializer = "ones",
                 beta_regularizer: Any = None, gamma_regularizer: Any = None,
                 beta_constraint: Any = None, gamma_constraint: Any = None,
                 rms_scaling: bool = False,
                 input_shape: int | Sequence[int] | None = None, name: str | None = None,
                 dtype: DTypeLike | None = None, trainable: bool = True) -> None:
        super().__init__(name=name, input_shape=input_shape, dtype=dtype, trainable=trainable)
        if isinstance(axis, (list, tuple)):
            self.axis: int | list[int] = list(axis)
        elif isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
            self.axis = int(axis)
        else:
            raise TypeError("Expected an int or a list/tuple of ints for the argument 'axis', "
                            f"but received: {axis!r}")
        if rms_scaling:
            raise ValueError("Expected rms_scaling=False (deprecated in Keras, not in fastnn). "
                             f"Received: rms_scaling={rms_scaling!r}")
        _set_affine(self, epsilon, center, scale, beta_initializer, gamma_initializer,
                    beta_regularizer, gamma_regularizer, beta_constraint, gamma_constraint)

    def build(self, input_shape: Sequence[int], rng: np.random.Generator | None = None) -> None:
        full = (1, *input_shape)
        axes = _axes("axis", self.axis, len(full), input_shape)
        super().build(input_shape, rng)
        self._layout = _FeaturesLast(full, axes)
        self.axis = sorted(self.axis if isinstance(self.axis, list) else [self.axis])
        shape = tuple(full[a] for a in axes)
        if self.scale:
            self.add_weight(shape, self.gamma_initializer, "gamma")
        if self.center:
            self.add_weight(shape, self.beta_initializer, "beta")

    def bind_weights(self, weights: Sequence[NDArray[Any]], grads: Sequence[NDArray[Any]]) -> None:
        super().bind_weights(weights, grads)
        it = iter(self.weights)
        self.gamma = next(it) if self.scale else None
        self.beta = next(it) if self.center else None

    def call(self, x: NDArray[Any], training: bool = False) -> NDArray[Any]:
        x2, moved = self._layout.rows(x)
        n = x2.shape[0]
        y2 = self._buf("y", x2.shape, training)
        mean, rstd = self._buf("mean", (n,), training), self._buf("rstd", (n,), training)
        gamma = None if self.gamma is None else self.gamma.reshape(-1)
        beta = None if self.beta is None else self.beta.reshape(-1)
        backend.K.layernorm_forward(y2, mean, rstd, x2, gamma, beta, self.epsilon)
        if training:
            self._x2, self._moved, self._mean, self._rstd = x2, moved, mean, rstd
        return self._layout.back(y2, moved)

    def backward(self, dy: NDArray[Any], need_dx: bool,
                 skip_activation: bool = False) -> NDArray[Any] | None:
        dy2, _ = self._layout.rows(dy)
        g = iter(self.grads)
        dgamma = next(g).reshape(-1) if self.scale else None
        dbeta = next(g).reshape(-1) if self.center else None
        backend.K.layernorm_backward(dy2, dgamma, dbeta, dy2, self._x2, self._mean, self._rstd,
                                     None if self.gamma is None else self.gamma.reshape(-1))
        return self._layout.back(dy2, self._moved) if need_dx else None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale,
                "beta_initializer": _init_name(self.beta_initializer),
                "gamma_initializer": _init_name(self.gamma_initializer),
                **_regularizer_config(self, {"beta": "beta", "gamma": "gamma"})}


class _Elementwise(Layer):
    """An activation-like layer: the same shape out, the activation kernels over the rows."""

    def _rows(self, x: NDArray[Any]) -> NDArray[Any]:
        return x.reshape(x.shape[0], -1)


class ReLU(_Elementwise):
    """keras.layers.ReLU: f(x) = min(x, max_value) for x > threshold, else
    negative_slope * (x - threshold) (Keras' relu with its three options).

    Args:
        max_value: None (the default: no cap) or a float >= 0.
        negative_slope: float >= 0 (default 0.0).  threshold: float >= 0 (default 0.0).
    It runs the kernel of `activations.relu` with these arguments (the plain relu, leaky
    relu, relu6 or the general one, fastnn.activations.spec picks).
    """

    def __init__(self, max_value: float | None = None, negative_slope: float = 0.0,
                 threshold: float = 0.0, input_shape: int | Sequence[int] | None = None,
                 name: str | None = None, dtype: DTypeLike | None = None, trainable: bool = True) -> None:
        super().__init__(name=name, input_shape=input_shape, dtype=dtype, trainable=trainable)
        if max_value is not None and _number("max_value", max_value) < 0.0:
            raise ValueError("max_value of a ReLU layer cannot be a negative value. "
                             f"Received: max_value={max_value}")
        if negative_slope is None or _number("negative_slope", negative_slope) < 0.0:
            raise ValueError("negative_slope of a ReLU layer cannot be None or a negative value. "
                             f"Received: negative_slope={negative_slope}")
        if threshold is None or _number("threshold", threshold) < 0.0:
            raise ValueError("threshold of a ReLU layer cannot be None or a negative value. "
                             f"Received: threshold={threshold}")
        self.max_value = None if max_value is None else float(max_value)
        self.negative_slope, self.threshold = float(negative_slope), float(threshold)
        self._kernel = activations.Spec("relu", {"max_value": self.max_value,
                                                 "negative_slope": self.negative_slope,
                                                 "threshold": self.threshold})

    def call(self, x: NDArray[Any], training: bool = False) -> NDArray[Any]:
        x2 = self._rows(x)
        y = self._buf("y", x2.shape, training)
        backend.K.act_forward(y, x2, self._kernel.code, self._kernel.params)
        if training:
            self._x, self._y = x2, y
        return y.reshape(x.shape)

    def backward(self, dy: NDArray[Any], need_dx: bool,
                 skip_activation: bool = False) -> NDArray[Any]:
        dy2 = dy.reshape(self._y.shape)
        backend.K.act_backward(dy2, dy2, self._y, self._x, self._kernel.code,
                               self._kernel.params)
        return dy

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_value": self.max_value,
                "negative_slope": self.negative_slope, "threshold": self.threshold}


class LeakyReLU(_Elementwise):
    """keras.layers.LeakyReLU: f(x) = x for x > 0, negative_slope * x otherwise.
    negative_slope: float >= 0; default 0.3, Keras' layer default (the function
    `activations.leaky_relu` defaults to 0.2).  Keras' deprecated `alpha=` is accepted too."""

    def __init__(self, negative_slope: float = 0.3, input_shape: int | Sequence[int] | None = None,
                 name: str | None = None, dtype: DTypeLike | None = None, trainable: bool = True,
                 **kwargs: Any) -> None:
        if "alpha" in kwargs:
            negative_slope = kwargs.pop("alpha")
        if kwargs:
            raise TypeError(f"LeakyReLU got unexpected keyword arguments: {sorted(kwargs)}")
        super().__init__(name=name, input_shape=input_shape, dtype=dtype, trainable=trainable)
        if negative_slope is None or _number("negative_slope", negative_slope) < 0:
            raise ValueError("The negative_slope value of a Leaky ReLU layer cannot be None or "
                             "negative value. Expected a float. "
                             f"Received: negative_slope={negative_slope}")
        self.negative_slope = float(negative_slope)
        self._spec = activations.Spec("leaky_relu", {"negative_slope": self.negative_slope})

    def call(self, x: NDArray[Any], training: bool = False) -> NDArray[Any]:
        x2 = self._rows(x)
        y = self._buf("y", x2.shape, training)
        backend.K.act_forward(y, x2, self._spec.code, self._spec.params)
        if training:
            self._y = y
        return y.reshape(x.shape)

    def backward(self, dy: NDArray[Any], need_dx: bool,
                 skip_activation: bool = False) -> NDArray[Any]:
        dy2 = dy.reshape(self._y.shape)
        backend.K.act_backward(dy2, dy2, self._y, None, self._spec.code, self._spec.params)
        return dy

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "negative_slope": self.negative_slope}


class PReLU(Layer):
    """keras.layers.PReLU: f(x) = x for x > 0, alpha * x otherwise, with a learned alpha of the
    sample's shape (1 along shared_axes); C kernels (src_c/norm.inc).

    Args:
        alpha_initializer: default "zeros" (Keras writes "Zeros").
        alpha_regularizer, alpha_constraint: default None.
        shared_axes: None (the default), an int or a list of axes (of the input shape with its
            batch axis) along which alpha is shared.
    """

    def __init__(self, alpha_initializer: str | Initializer = "zeros",
                 alpha_regularizer: Any = None, alpha_constraint: Any = None,
                 shared_axes: int | Sequence[int] | None = None,
                 input_shape: int | Sequence[int] | None = None, name: str | None = None,
                 dtype: DTypeLike | None = None, trainable: bool = True) -> None:
        super().__init__(name=name, input_shape=input_shape, dtype=dtype, trainable=trainable)
        self.alpha_initializer = alpha_initializer
        initializers.get(alpha_initializer)
        if shared_axes is None:
            self.shared_axes: list[int] | None = None
        else:
            items = list(shared_axes) if isinstance(shared_axes, (list, tuple)) else [shared_axes]
            for a in items:
                if isinstance(a, bool) or not isinstance(a, (int, np.integer)) or a < 1:
                    raise ValueError(f"Expected shared_axes to be axes >= 1 of the input shape. "
                                     f"Received: shared_axes={shared_axes!r}")
            self.shared_axes = [int(cast(int, a)) for a in items]
        _set_regularizers(self, {"alpha": (alpha_regularizer, alpha_constraint)})
        self.alpha: NDArray[Any] | None = None

    def build(self, input_shape: Sequence[int], rng: np.random.Generator | None = None) -> None:
        shape = list(input_shape)
        for a in self.shared_axes or []:
            if a > len(shape):
                raise ValueError(f"Expected shared_axes within the input's {len(shape)} sample "
                                 f"axes. Received: shared_axes={self.shared_axes}")
            shape[a - 1] = 1
        super().build(input_shape, rng)
        self.add_weight(tuple(shape), self.alpha_initializer, "alpha")

    def bind_weights(self, weights: Sequence[NDArray[Any]], grads: Sequence[NDArray[Any]]) -> None:
        super().bind_weights(weights, grads)
        self.alpha = self.weights[0]

    def _alpha_row(self, training: bool) -> NDArray[Any]:
        """alpha broadcast to one sample, flat (a view without shared axes)."""
        alpha = cast("NDArray[Any]", self.alpha)
        sample = cast("tuple[int, ...]", self.input_shape)
        if alpha.shape == sample:
            return alpha.reshape(-1)
        row = self._buf("alpha", (int(np.prod(sample)),), training)
        row.reshape(sample)[...] = alpha
        return row

    def call(self, x: NDArray[Any], training: bool = False) -> NDArray[Any]:
        x2 = x.reshape(x.shape[0], -1)
        y = self._buf("y", x2.shape, training)
        a = self._alpha_row(training)
        backend.K.prelu_forward(y, x2, a)
        if training:
            self._x, self._a = x2, a
        return y.reshape(x.shape)

    def backward(self, dy: NDArray[Any], need_dx: bool,
                 skip_activation: bool = False) -> NDArray[Any] | None:
        dy2 = dy.reshape(self._x.shape)
        grad = self.grads[0]
        shared = grad.shape != self.input_shape
        da = self._buf("dalpha", self._a.shape) if shared else grad.reshape(-1)
        backend.K.prelu_backward(dy2, da, dy2, self._x, self._a)
        if shared:  # the sum over the shared axes
            sample = cast("tuple[int, ...]", self.input_shape)
            axes = tuple(a - 1 for a in self.shared_axes or [])
            grad[...] = da.reshape(sample).sum(axis=axes, keepdims=True)
        return dy if need_dx else None

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "alpha_initializer": _init_name(self.alpha_initializer),
                "shared_axes": self.shared_axes,
                **_regularizer_config(self, {"alpha": "alpha"})}


class Softmax(Layer):
    """keras.layers.Softmax: softmax over `axis` (an int or a list of axes of the input shape
    with its batch axis; default -1).  Over the last axis it is an output softmax that a
    crossentropy loss fuses with, as a Dense(activation="softmax") is."""

    def __init__(self, axis: int | Sequence[int] = -1,
                 input_shape: int | Sequence[int] | None = None, name: str | None = None,
                 dtype: DTypeLike | None = None, trainable: bool = True) -> None:
        super().__init__(name=name, input_shape=input_shape, dtype=dtype, trainable=trainable)
        if isinstance(axis, (list, tuple)):
            self.axis: int | list[int] = [int(a) for a in axis]
        elif isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
            self.axis = int(axis)
        else:
            raise ValueError(f"Expected axis to be an int or a list of ints. Received: "
                             f"axis={axis!r}")

    def build(self, input_shape: Sequence[int], rng: np.random.Generator | None = None) -> None:
        full = (1, *input_shape)
        axes = _axes("axis", self.axis, len(full), input_shape)
        super().build(input_shape, rng)
        self._layout = _FeaturesLast(full, axes)
        if axes == (len(full) - 1,):
            self.activation = activations.Spec("softmax")  # fused with the loss when last

    def call(self, x: NDArray[Any], training: bool = False) -> NDArray[Any]:
        x2, moved = self._layout.rows(x)
        y = self._buf("y", x2.shape, training)
        backend.K.act_forward(y, x2, activations.Spec("softmax").code, ())
        if training:
            self._y, self._moved = y, moved
        return self._layout.back(y, moved)

    def backward(self, dy: NDArray[Any], need_dx: bool,
                 skip_activation: bool = False) -> NDArray[Any]:
        if skip_activation:
            return dy
        dy2, _ = self._layout.rows(dy)
        backend.K.act_backward(dy2, dy2, self._y, None, activations.Spec("softmax").code, ())
        return self._layout.back(dy2, self._moved)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": self.axis}


class GaussianNoise(Layer):
    """keras.layers.GaussianNoise: adds N(0, stddev^2) noise in training only; the identity at
    inference.  stddev: in [0, 1] (Keras' check).  seed: an int or None (then the model's
    generator seeds it, as Dropout)."""

    def __init__(self, stddev: float, seed: int | None = None,
                 input_shape: int | Sequence[int] | None = None, name: str | None = None,
                 dtype: DTypeLike | None = None, trainable: bool = True) -> None:
        super().__init__(name=name, input_shape=input_shape, dtype=dtype, trainable=trainable)
        if not 0 <= _number("stddev", stddev) <= 1:
            raise ValueError("Invalid value received for argument `stddev`. Expected a float "
                             f"value between 0 and 1. Received: stddev={stddev}")
        self.stddev, self.seed = float(stddev), seed
        self.rng = np.random.default_rng(seed)

    def build(self, input_shape: Sequence[int], rng: np.random.Generator | None = None) -> None:
        super().build(input_shape, rng)
        if self.seed is None and rng is not None:
            self.rng = np.random.default_rng(rng.integers(2**63))

    def call(self, x: NDArray[Any], training: bool = False) -> NDArray[Any]:
        if not training or self.stddev == 0:
            return x
        y = self._buf("y", x.shape)
        self.rng.standard_normal(dtype=self.dtype, out=y)
        y *= self.dtype.type(self.stddev)
        y += x
        return y

    def backward(self, dy: NDArray[Any], need_dx: bool,
                 skip_activation: bool = False) -> NDArray[Any]:
        return dy

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "stddev": self.stddev, "seed": self.seed}


class Reshape(Layer):
    """keras.layers.Reshape: each sample to target_shape (a tuple of ints, at most one -1 for
    the size that makes the total unchanged)."""

    def __init__(self, target_shape: Sequence[int],
                 input_shape: int | Sequence[int] | None = None, name: str | None = None,
                 dtype: DTypeLike | None = None, trainable: bool = True) -> None:
        super().__init__(name=name, input_shape=input_shape, dtype=dtype, trainable=trainable)
        try:
            target = tuple(target_shape)
        except TypeError:
            raise ValueError(f"Expected target_shape to be a tuple of ints. "
                             f"Received: target_shape={target_shape!r}") from None
        for d in target:
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < -1 or d == 0:
                raise ValueError("Each dimension in `target_shape` must be a positive integer, "
                                 f"or `-1` for a single unknown dimension. Received: "
                                 f"target_shape={target_shape!r}.")
        if sum(d == -1 for d in target) > 1:
            raise ValueError("There must be at most one unknown dimension (-1) in "
                             f"`target_shape`. Received: target_shape={target_shape!r}.")
        self.target_shape = tuple(int(d) for d in target)

    def compute_output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        size, known = int(np.prod(input_shape)), int(np.prod([d for d in self.target_shape
                                                               if d != -1]))
        if -1 not in self.target_shape:
            if size != known:
                raise ValueError("The total size of the tensor must be unchanged. Received: "
                                 f"input_shape={tuple(input_shape)}, "
                                 f"target_shape={self.target_shape}")
            return self.target_shape
        if size % known:
            raise ValueError("The total size of the tensor must be unchanged. Received: "
                             f"input_shape={tuple(input_shape)}, target_shape={self.target_shape}")
        return tuple(size // known if d == -1 else d for d in self.target_shape)

    def build(self, input_shape: Sequence[int], rng: np.random.Generator | None = None) -> None:
        self.compute_output_shape(input_shape)  # refuses a size that does not fit
        super().build(input_shape, rng)

    def call(self, x: NDArray[Any], training: bool = False) -> NDArray[Any]:
        return x.reshape(x.shape[0], *self.output_shape)

    def backward(self, dy: NDArray[Any], need_dx: bool,
                 skip_activation: bool = False) -> NDArray[Any]:
        return dy.reshape(dy.shape[0], *cast("tuple[int, ...]", self.input_shape))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "target_shape": list(self.target_shape)}


class Rescaling(Layer):
    """keras.layers.Rescaling: y := x * scale + offset (e.g. scale=1/255 for pixels).
    scale, offset: numbers, or arrays that broadcast against one sample."""

    def __init__(self, scale: Any, offset: Any = 0.0,
                 input_shape: int | Sequence[int] | None = None, name: str | None = None,
                 dtype: DTypeLike | None = None, trainable: bool = True) -> None:
        super().__init__(name=name, input_shape=input_shape, dtype=dtype, trainable=trainable)
        for key, v in (("scale", scale), ("offset", offset)):
            a = np.asarray(v)
            if a.dtype.kind not in "fiu" or not np.all(np.isfinite(a)):
                raise ValueError(f"Expected {key} to be a finite number or array of numbers. "
                                 f"Received: {key}={v!r}")
        self.scale, self.offset = scale, offset
        self._scale = np.asarray(scale, self.dtype)
        self._offset = np.asarray(offset, self.dtype)

    def build(self, input_shape: Sequence[int], rng: np.random.Generator | None = None) -> None:
        for key, a in (("scale", self._scale), ("offset", self._offset)):
            try:
                shape = np.broadcast_shapes(a.shape, tuple(input_shape))
            except ValueError:
                shape = None
            if shape != tuple(input_shape):
                raise ValueError(f"Expected {key} to broadcast against samples of shape "
                                 f"{tuple(input_shape)}. Received: {key}.shape={a.shape}")
        super().build(input_shape, rng)

    def call(self, x: NDArray[Any], training: bool = False) -> NDArray[Any]:
        y = self._buf("y", x.shape, training)
        np.multiply(x, self._scale, out=y)
        y += self._offset
        return y

    def backward(self, dy: NDArray[Any], need_dx: bool,
                 skip_activation: bool = False) -> NDArray[Any]:
        dy *= self._scale
        return dy

    def get_config(self) -> dict[str, Any]:
        plain = [v.tolist() if isinstance(v, np.ndarray) else
                 float(v) if isinstance(v, (numbers.Real, np.floating)) else v
                 for v in (self.scale, self.offset)]
        return {**super().get_config(), "scale": plain[0], "offset": plain[1]}


class Normalization(Layer):
    """keras.layers.Normalization: y := (x - mean) / max(sqrt(variance), 1e-7), per position of
    `axis` (invert=True: y := mean + x * max(sqrt(variance), 1e-7)).

    Args:
        axis: the axes kept (an int, a tuple of ints of the input shape with its batch axis, or
            None: one mean and variance for everything); default -1.
        mean, variance: fixed statistics (numbers or arrays; both or neither), or None and
            `adapt(data)` computes them.
        invert: default False.

    `adapt(data)`: data an array (samples first) or an iterable of such batches; mean and
    variance (biased) over all but the kept axes, as Keras (for batches, Keras' running
    combination of the batch means and variances).  The statistics are not trained.
    """

    def __init__(self, axis: int | Sequence[int] | None = -1, mean: Any = None,
                 variance: Any = None, invert: bool = False,
                 input_shape: int | Sequence[int] | None = None, name: str | None = None,
                 dtype: DTypeLike | None = None, trainable: bool = True) -> None:
        super().__init__(name=name, input_shape=input_shape, dtype=dtype, trainable=trainable)
        if axis is None:
            self.axis: tuple[int, ...] = ()
        elif isinstance(axis, (int, np.integer)) and not isinstance(axis, bool):
            self.axis = (int(axis),)
        else:
            self.axis = tuple(cast("Sequence[int]", axis))
        if (mean is not None) != (variance is not None):
            raise ValueError("When setting values directly, both `mean` and `variance` must be "
                             f"set. Received: mean={mean} and variance={variance}")
        if mean is not None:
            if np.shape(mean) != np.shape(variance):
                raise ValueError("When setting values directly, `mean` and `variance` must have "
                                 f"the same shape. Received: mean shape {np.shape(mean)} and "
                                 f"variance shape {np.shape(variance)}")
            if len(np.shape(mean)) > len(self.axis):
                raise ValueError("The rank of `mean` must be less than or equal to the number "
                                 f"of axes ({len(self.axis)}). Received: mean shape "
                                 f"{np.shape(mean)} for axis {self.axis}")
        self.input_mean, self.input_variance, self.invert = mean, variance, bool(invert)
        self.mean: NDArray[Any] | None = None  # the fixed statistics, broadcast (built)
        self.variance: NDArray[Any] | None = None
        self.count = np.zeros((), np.int32)

    def build(self, input_shape: Sequence[int], rng: np.random.Generator | None = None) -> None:
        full = (1, *input_shape)
        nd = len(full)
        if any(not -nd <= a < nd for a in self.axis):
            raise ValueError("All `axis` values must be in the range [-ndim, ndim). Received "
                             f"inputs with ndim={nd}, while axis={self.axis}")
        keep = tuple(sorted(a % nd for a in self.axis))
        if 0 in keep:
            raise ValueError(f"Expected axis to keep sample axes, not the batch axis 0. "
                             f"Received: axis={self.axis}")
        super().build(input_shape, rng)
        self._keep, self._reduce = keep, tuple(d for d in range(nd) if d not in keep)
        self._broadcast = tuple(full[d] if d in keep else 1 for d in range(nd))
        stats_shape = tuple(full[d] for d in keep)
        self.mean = self.variance = None
        if self.input_mean is None:  # Keras' non-trainable weights mean, variance (and count)
            self.add_weight(stats_shape, "zeros", "mean", trainable=False)
            self.add_weight(stats_shape, "ones", "variance", trainable=False)
            # Keras' third weight, an int that its adapt(array) leaves at 0: kept here, outside
            # the model's float buffer (keras_format writes and reads it)
            self.count = np.zeros((), np.int32)
            if not self.weights:  # adapt() before the model packs the weights: arrays of its own
                w = [np.zeros(stats_shape, self.dtype), np.ones(stats_shape, self.dtype)]
                self.bind_weights(w, [np.zeros_like(a) for a in w])
        else:
            mean, var = (np.asarray(v, np.float64) for v in (self.input_mean, self.input_variance))
            if mean.ndim:
                expanded = [1] * nd
                for i in range(1, mean.ndim + 1):
                    expanded[keep[-i]] = mean.shape[-i]
                mean, var = mean.reshape(expanded), var.reshape(expanded)
            self.mean = np.broadcast_to(mean, self._broadcast).astype(self.dtype)
            self.variance = np.broadcast_to(var, self._broadcast).astype(self.dtype)

    def _stats(self) -> tuple[NDArray[Any], NDArray[Any]]:
        """(mean, max(sqrt(variance), 1e-7)) broadcast against a batch: the fixed statistics,
        else the adapted weights as they are now (after adapt, set_weights or loading)."""
        if self.mean is not None and self.variance is not None:
            mean, var = self.mean, self.variance
        else:
            mean, var = (w.reshape(self._broadcast) for w in self.weights[:2])
        return mean, np.maximum(np.sqrt(var), self.dtype.type(1e-7))

    def adapt(self, data: Any) -> None:
        """Compute mean and variance from data (an array, samples first, or an iterable of
        batches), as Keras' adapt."""
        batches: Any
        first: Any
        if isinstance(data, np.ndarray) or (hasattr(data, "__array__")
                                            and not hasattr(data, "__next__")):
            first, batches, whole = np.asarray(data), None, True
        elif hasattr(data, "__iter__"):
            it = iter(data)
            first = next(it, None)
            if first is None:
                raise ValueError("adapt() received an empty iterable (no batches). Expected at "
                                 "least one batch.")
            first = np.asarray(first)
            batches, whole = _chain(first, it), False
        else:
            raise TypeError(f"Unsupported data type: {type(data)}. `adapt` supports "
                            "`np.ndarray` and iterables of batches.")
        if first.ndim < 1 or first.dtype.kind not in "fiub":
            raise ValueError(f"Expected adapt data of numbers with a batch axis. Received: "
                             f"shape {first.shape}, dtype {first.dtype}")
        if not self.built:
            self.build(cast("tuple[int, ...]", (None, *first.shape[1:])))
        elif tuple(first.shape[1:]) != self.input_shape:
            raise ValueError(f"The layer was built with input_shape={self.input_shape} (one "
                             f"sample), but adapt() is being called with data with an incompatible "
                             f"shape, data.shape={first.shape}")
        if self.input_mean is not None:
            raise ValueError("adapt() is for a Normalization layer without fixed mean and "
                             "variance. Received a layer built with mean= and variance=.")
        if whole:
            x = first.astype(np.float64)
            total_mean, total_var = x.mean(axis=self._reduce), x.var(axis=self._reduce)
        else:
            total_mean = np.zeros(self.weights[0].shape)
            total_var = np.zeros(self.weights[0].shape)
            total = 0
            for b in batches:
                b = np.asarray(b, self.dtype)
                if tuple(b.shape[1:]) != self.input_shape:
                    raise ValueError(f"adapt() yielded a batch with incompatible shape. "
                                     f"Expected samples of {self.input_shape}, got {b.shape}.")
                bm, bv = b.mean(axis=self._reduce), b.var(axis=self._reduce)
                count = int(np.prod([b.shape[d] for d in self._reduce])) if self._reduce else 1
                total += count
                w = count / total
                new_mean = total_mean * (1 - w) + bm * w
                total_var = (total_var + (total_mean - new_mean) ** 2) * (1 - w) + \
                    (bv + (bm - new_mean) ** 2) * w
                total_mean = new_mean
        self.weights[0][...] = total_mean
        self.weights[1][...] = total_var

    def call(self, x: NDArray[Any], training: bool = False) -> NDArray[Any]:
        y = self._buf("y", x.shape, training)
        mean, std = self._stats()
        if self.invert:
            np.multiply(x, std, out=y)
            y += mean
        else:
            np.subtract(x, mean, out=y)
            y /= std
        return y

    def backward(self, dy: NDArray[Any], need_dx: bool,
                 skip_activation: bool = False) -> NDArray[Any]:
        std = self._stats()[1]
        if self.invert:
            dy *= std
        else:
            dy /= std
        return dy

    def get_config(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            return None if v is None else np.asarray(v).tolist()
        return {**super().get_config(), "axis": list(self.axis), "invert": self.invert,
                "mean": plain(self.input_mean), "variance": plain(self.input_variance)}


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


LAYERS.update({c.__name__: c for c in (
    BatchNormalization, LayerNormalization, ReLU, LeakyReLU, PReLU, Softmax, GaussianNoise,
    Reshape, Rescaling, Normalization)})
