"""Keras 3's native files: `.keras` models and `.weights.h5` weights (needs h5py).

    save_keras(model, "m.keras")             a fastnn Sequential as a file Keras 3 loads
    load_keras("m.keras", compile=True)      a .keras file (Keras 3's or save_keras's) as a
                                             fastnn Sequential with the same weights
    save_weights_h5(model, "m.weights.h5")   the weights (and optimizer state) in Keras' layout
    load_weights_h5(model, "m.weights.h5")   the layer weights of such a file into a built model

The layout, as Keras 3 writes and reads it (keras/src/saving/saving_lib.py, serialization_lib.py,
models/sequential.py, layers/core/{dense,input_layer}.py, layers/reshaping/flatten.py,
layers/regularization/dropout.py, layers/activations/*.py, optimizers/*.py), checked against the
files Keras 3.15 writes:

  a ZIP archive of three stored entries, in this order
    metadata.json     {"keras_version": KERAS_VERSION, "date_saved": "%Y-%m-%d@%H:%M:%S"}; fastnn
                      adds "saved_by": "fastnn <version>" (Keras never reads this entry)
    config.json       the model as `keras.saving.serialize_keras_object` gives it:
                      {"module": "keras", "class_name": "Sequential", "registered_name": null,
                       "config": {"name", "trainable": true, "dtype": <DTypePolicy>,
                                  "layers": [<InputLayer>, <layer>...],
                                  "build_input_shape": [null, d1, ...]},
                       "build_config": {"input_shape": [null, d1, ...]},
                       "compile_config": {"optimizer", "loss", "loss_weights", "metrics",
                                          "weighted_metrics", "run_eagerly",
                                          "steps_per_execution", "jit_compile"} or {}}
                      each layer {"module": "keras.layers", "class_name", "config",
                      "registered_name": null} (+ "build_config": {"input_shape": [null, ...]}
                      for Dense and Flatten); initializers, optimizers, schedules and losses are
                      nested objects of the same form (module keras.initializers, ...)
    model.weights.h5  HDF5:
                        /vars                    group, attribute name = the model's name
                        /layers/<key>/vars/<i>   the i-th variable of a layer (Dense: 0 kernel
                                                 (in, units), 1 bias), attribute name = the
                                                 layer's name; <key> is the snake_case class
                                                 name made unique in layer order ("dense",
                                                 "dense_1", "dropout", "dense_2"...), never the
                                                 layer's own name; every layer has its group
                        /layers/<key>/layers/... a nested Sequential's layers, keyed within it
                                                 (its entry in config.json: the model's form
                                                 above, with "compile_config": {})
                        /optimizer/vars/<i>      optimizer.variables in Keras' order (below)

  A `.weights.h5` file (model.save_weights) is that HDF5 file on its own.

What fastnn writes, in Keras' terms: Sequential of InputLayer (always), Dense, Activation, Flatten
(channels_last), Dropout; every activation of fastnn.activations by its Keras name.  Keras'
activation strings carry no argument: a relu, leaky_relu or elu with arguments other than Keras'
defaults is written as a ReLU(max_value, negative_slope, threshold), LeakyReLU(negative_slope)
or ELU(alpha) layer (after a linear Dense, for a Dense); gelu(approximate=True) has no Keras file
form (ValueError).  Initializers by Keras class
(every Keras 3 initializer but STFT, with its config).
Config keys that only recent Keras releases know and that hold their default (Dense's
quantization_config, InputLayer's ragged and optional, the optimizers' loss_scale_factor and
gradient_accumulation_steps, the initializers' input_axes and output_axes) are left out, so that
older Keras 3 releases, which refuse unknown keys, read the file too (checked: Keras 3.3, 3.6,
3.12 and 3.15 load fastnn's files and predict the same; fastnn reads theirs).

compile_config (a compiled model): the optimizer by Keras class (SGD, Adagrad, RMSprop, Adam,
AdamW, Nadam, Adamax, Adadelta, Lion) with its hyper-parameters (learning-rate schedules
ExponentialDecay, PiecewiseConstantDecay, InverseTimeDecay, PolynomialDecay, CosineDecay,
CosineDecayRestarts as keras.optimizers.schedules
objects), the loss by its Keras function name at its class's defaults, else as a keras.losses
object with its get_config() (CategoricalCrossentropy, SparseCategoricalCrossentropy,
BinaryCrossentropy, MeanSquaredError, MeanAbsoluteError, Huber (with its delta, which Keras' own
Huber config leaves out), LogCosh, KLDivergence, Poisson, Hinge, CategoricalHinge,
CosineSimilarity, MeanAbsolutePercentageError, MeanSquaredLogarithmicError, SquaredHinge), the
metrics by Keras name, jit_compile "auto".
The optimizer variables are written in full, as Keras 3 builds them: iterations (int64 scalar),
learning_rate (float32 scalar; none with a schedule), then the state arrays, one per weight:
SGD momentums (if momentum); Adagrad accumulators; RMSprop all velocities, then all momentums (if
momentum), then all average_gradients (if centered); Adam/AdamW momentum and velocity
interleaved weight by weight, then all velocity_hats (if amsgrad); Nadam momentum and velocity
interleaved, then u_product (float scalar); Adamax momentum and norm interleaved; Adadelta
accumulated_grad and accumulated_delta_var interleaved; Lion momentums.  A compiled model that
has not trained yet gets the initial state (zeros; Adagrad's initial_accumulator_value).  Keras
reloads all of it, so training resumes where it stopped, in Keras or in fastnn.

The layers of issue #11 are written and read under their Keras class names with Keras' config
keys and variables: BatchNormalization (gamma, beta, moving_mean, moving_variance),
LayerNormalization, PReLU, ReLU, LeakyReLU, Softmax, GaussianNoise, Reshape, Rescaling and
Normalization (mean, variance and its int count); regularizers L1, L2, L1L2 and constraints
MaxNorm, NonNeg, UnitNorm, MinMaxNorm as keras.regularizers / keras.constraints objects (checked:
Keras 3.15 loads such a file and predicts and evaluates the same; fastnn reads Keras' own).

Reading (load_keras) accepts what Keras 3 writes for those layers, plus Keras' ELU layer, read
as a fastnn Activation layer.  Anything fastnn cannot compute the same way raises
UnsupportedError (a ValueError) naming it and the file (a Conv2D layer, a regularizer, a mixed-precision dtype
policy, Flatten(channels_first) of a multi-axis input, ...).  A compile_config fastnn does not
understand (another optimizer, loss or metric, clipping, EMA, loss weights, a lambda) leaves
the model uncompiled, with a warning naming it; compile=False skips it.

Hostile files: the same guarantees as fastnn's own format (fastnn/saving.py).  Nothing is
executed: config.json is plain JSON read field by field, never through a class registry, so a
Lambda layer, a `__lambda__` object or a custom class is refused by name; HDF5 data is read as
numbers only.  Sizes are bounded before anything is read or allocated: config.json at most
16 MiB and 32 levels deep; a model of more parameters than the file's bytes can hold is refused
before it is built; model.weights.h5 at most the bytes the architecture implies (weights and at
most three optimizer slots of 8-byte floats) plus 1 MiB and 16 KiB per HDF5 object, compressed
(deflate) or stored; every HDF5 object is reached by hard link only (soft and external links,
external and virtual datasets refused) and every dataset's shape and dtype are checked against
the model before its data is read, so a dataset declaring more data than the architecture implies
is never read, whatever its filters.  Anything wrong with the file raises
`fastnn.saving.FileFormatError` (a ValueError naming the file and the problem); a missing file
FileNotFoundError.  The HDF5 bytes themselves are parsed by libhdf5 (through h5py), as in Keras:
fastnn bounds and checks what it asks of them, but a crafted file that triggers a bug inside
libhdf5 is beyond what Python code can guard.

Writing is atomic (a temporary file in the target's directory, renamed over it; removed on any
error), keeps an existing file's permission mode, and writes through a symlink to its target.
"""
from __future__ import annotations

import datetime
import io
import json
import math
import os
import warnings
import zipfile
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Mapping, NoReturn, Sequence, cast

import numpy as np

from fastnn import (_files, activations, distribution, initializers, losses,
                    mixed_precision, optimizers)
from fastnn import layers as layers_module
from fastnn import metrics as metrics_module
from fastnn.saving import FileFormatError

if TYPE_CHECKING:
    import h5py
    from _typeshed import StrOrBytesPath
    from numpy.typing import DTypeLike, NDArray

    # an initializer: a built-in one (fastnn.initializers.Initializer) or any callable
    Initializer = Callable[..., Any]
    from fastnn.models import Sequential

    # a layer as Keras has it: (class name, config, weights, input shape or None, and for a
    # nested Sequential its own layers so)
    _KerasLayer = tuple[str, dict[str, Any], list[NDArray[Any]], tuple[int, ...] | None,
                        list[Any]]

# the layers of issue #11 that fastnn writes and reads under their Keras class names (see
# _new_layer_config and _read_new_layer); ReLU, LeakyReLU and Softmax are read as these too
_NEW_LAYERS = ("BatchNormalization", "LayerNormalization", "PReLU", "GaussianNoise", "Reshape",
               "Rescaling", "Normalization")

__all__ = ["save_keras", "load_keras", "save_weights_h5", "load_weights_h5", "UnsupportedError",
           "KERAS_VERSION"]

KERAS_VERSION = "3.15.1"  # the Keras release whose files this layout was checked against

_CONFIG = "config.json"
_METADATA = "metadata.json"
_WEIGHTS = "model.weights.h5"
_MAX_JSON = 16 << 20        # bytes of config.json
_MAX_DEPTH = 32             # its nesting (Keras writes at most 8)
_MAX_LAYERS = 10_000        # as fastnn's own format
_MAX_SLOTS = 3              # optimizer state arrays per weight, at most (Adam with amsgrad)
_H5_BASE = 1 << 20          # HDF5 allowance: superblock, heaps, B-trees...
_H5_PER_OBJECT = 16 << 10   # ... and per group or dataset (Keras' files take about 1 KiB)

# ---- the Keras names of what fastnn has -----------------------------------------------------

# The key of a layer class in model.weights.h5: its snake_case name (keras.src.utils.naming).
_KEYS = {"Dense": "dense", "Activation": "activation", "Flatten": "flatten",
         "Dropout": "dropout", "LeakyReLU": "leaky_re_lu", "ELU": "elu", "ReLU": "re_lu",
         "Softmax": "softmax", "BatchNormalization": "batch_normalization",
         "LayerNormalization": "layer_normalization", "PReLU": "p_re_lu",
         "GaussianNoise": "gaussian_noise", "Reshape": "reshape", "Rescaling": "rescaling",
         "Normalization": "normalization", "Sequential": "sequential"}
_SUPPORTED = ("InputLayer", "Dense", "Activation", "Flatten", "Dropout", "ReLU", "LeakyReLU",
              "ELU", "Softmax", *_NEW_LAYERS)

# The optimizers: fastnn class -> Keras class name (the same names)
_OPTIMIZERS: dict[str, type[optimizers.Optimizer]] = {
    c.__name__: c for c in (optimizers.SGD, optimizers.Adagrad, optimizers.RMSprop,
                            optimizers.Adam, optimizers.AdamW, optimizers.Nadam,
                            optimizers.Adamax, optimizers.Adadelta, optimizers.Lion)}
# Keras' base optimizer options, as fastnn writes them (all off)
_OPTIMIZER_BASE = ("clipnorm", "global_clipnorm", "clipvalue", "use_ema", "ema_momentum",
                   "ema_overwrite_frequency", "loss_scale_factor", "gradient_accumulation_steps")
# ... and what fastnn accepts reading besides: the value that means "off" (a type: any of these)
_OPTIMIZER_OFF = {"decay": (type(None), int, float), "jit_compile": (bool,),
                  "is_legacy_optimizer": False}
_OPTIMIZER_KEYS = {  # each class's own hyper-parameters (besides learning_rate, weight_decay)
    "SGD": ("momentum", "nesterov"), "Adagrad": ("initial_accumulator_value", "epsilon"),
    "RMSprop": ("rho", "momentum", "epsilon", "centered"),
    "Adam": ("beta_1", "beta_2", "epsilon", "amsgrad"),
    "AdamW": ("beta_1", "beta_2", "epsilon", "amsgrad"),
    "Nadam": ("beta_1", "beta_2", "epsilon"), "Adamax": ("beta_1", "beta_2", "epsilon"),
    "Adadelta": ("rho", "epsilon"), "Lion": ("beta_1", "beta_2")}
_SCHEDULES: dict[str, type[optimizers.LearningRateSchedule]] = {
    c.__name__: c for c in (optimizers.ExponentialDecay, optimizers.PiecewiseConstantDecay,
                            optimizers.InverseTimeDecay, optimizers.PolynomialDecay,
                            optimizers.CosineDecay, optimizers.CosineDecayRestarts)}

# every fastnn loss is a Keras class of the same name (fastnn/losses.py); a loss at its class's
# defaults is written as the name of its Keras function, as compile(loss="...") records it
_LOSS_FUNCTION_OF = {c: name for name, c in losses._CLASS_OF_FUNCTION.items()}
# metric strings both libraries know, and Keras metric classes by fastnn name
_METRIC_NAMES = ("accuracy", "acc", "categorical_accuracy", "sparse_categorical_accuracy",
                 "binary_accuracy", "mae", "mean_absolute_error", "mse", "mean_squared_error",
                 "true_positives", "false_positives", "true_negatives", "false_negatives",
                 "f1_score", "r2_score")
_METRIC_CLASSES = {"CategoricalAccuracy": "categorical_accuracy",
                   "SparseCategoricalAccuracy": "sparse_categorical_accuracy",
                   "BinaryAccuracy": "binary_accuracy",
                   "MeanAbsoluteError": "mean_absolute_error",
                   "MeanSquaredError": "mean_squared_error"}


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise ImportError("Keras' .keras and .weights.h5 files need h5py: pip install h5py") \
            from None
    return h5py


def _obj(module: str, class_name: str, config: dict[str, Any]) -> dict[str, Any]:
    """A Keras object reference as serialize_keras_object writes it."""
    return {"module": module, "class_name": class_name, "config": config,
            "registered_name": None}


def _policy(dtype: Any) -> dict[str, Any]:
    """Keras' DTypePolicy of a dtype or a fastnn.mixed_precision policy."""
    name = dtype.name if isinstance(dtype, mixed_precision.DTypePolicy) else np.dtype(dtype).name
    return _obj("keras", "DTypePolicy", {"name": name})


def _plain(value: Any) -> Any:
    """A config with NumPy scalars and tuples in it as JSON values."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _slot_groups(opt: optimizers.Optimizer) -> Sequence[tuple[str, ...]]:
    """The optimizer's state arrays in Keras' order: a list of groups of slot names; within a
    group the slots are interleaved weight by weight (Keras' add_optimizer_variables with a
    list of names), one group after the other.  Flattened, it is also fastnn's slot order."""
    name = type(opt).__name__
    if name == "SGD":
        return [("momentums",)] if cast(optimizers.SGD, opt).momentum != 0 else []
    if name == "Adagrad":
        return [("accumulators",)]
    if name == "RMSprop":
        rms = cast(optimizers.RMSprop, opt)
        return ([("velocities",)] + ([("momentums",)] if rms.momentum > 0 else [])
                + ([("average_gradients",)] if rms.centered else []))
    if name in ("Adam", "AdamW"):
        return [("momentums", "velocities")] + ([("velocity_hats",)]
                                                if cast(optimizers.Adam, opt).amsgrad else [])
    if name == "Adamax":
        return [("momentums", "norms")]
    if name == "Adadelta":
        return [("accumulated_grads", "accumulated_delta_vars")]
    if name == "Lion":
        return [("momentums",)]
    return [("momentums", "velocities")]  # Nadam


def _nadam_product(beta_1: float, t: int) -> float:
    """Keras Nadam's u_product after t steps: prod over s = 1..t of beta_1 (1 - 0.5 * 0.96^s)
    (past s = 1000 the factor is beta_1 in double precision)."""
    return beta_1 ** t * math.prod(1.0 - 0.5 * 0.96 ** s for s in range(1, min(t, 1000) + 1))


def _has_schedule(opt: optimizers.Optimizer) -> bool:
    return isinstance(opt.get_config()["learning_rate"], dict)


# ---- writing ----------------------------------------------------------------------------------

def _initializer(init: str | Initializer, where: str) -> dict[str, Any]:
    """An initializer as Keras' object config; the axes of the variance scaling ones are left
    out when None (older Keras 3 releases refuse the keys)."""
    obj = initializers.get(init)
    if not isinstance(obj, initializers.Initializer) or \
            type(obj).__name__ not in initializers.NAMES_BY_CLASS:
        raise ValueError(f"{where}: the initializer {init!r} has no Keras equivalent; Keras "
                         f"files take {sorted(initializers.NAMES)}")
    cfg = {k: v for k, v in obj.get_config().items()
           if not (k in ("input_axes", "output_axes") and v is None)}
    return _obj("keras.initializers", type(obj).__name__, cfg)


def _parametrized(spec: activations.Spec) -> bool:
    """True for an activation with arguments other than Keras' defaults (no string for it)."""
    return bool(spec.kwargs)


# the Keras layer of an activation with arguments: class name, its config keys
_ACTIVATION_LAYERS = {"relu": ("ReLU", ("max_value", "negative_slope", "threshold")),
                      "leaky_relu": ("LeakyReLU", ("negative_slope",)),
                      "elu": ("ELU", ("alpha",))}


def _activation_layer(spec: activations.Spec, name: str,
                      dtype: DTypeLike) -> tuple[str, dict[str, Any]]:
    base = {"name": name, "trainable": True, "dtype": _policy(dtype)}
    if not _parametrized(spec):
        return "Activation", {**base, "activation": spec.name}
    if spec.name not in _ACTIVATION_LAYERS:
        raise ValueError(f"{name}: the activation {spec!r} has no Keras file form (Keras "
                         f"layers take arguments only for {sorted(_ACTIVATION_LAYERS)}).")
    cls, keys = _ACTIVATION_LAYERS[spec.name]
    kw = {**activations.DEFAULTS[spec.name], **spec.kwargs}
    if spec.name == "relu" and kw["threshold"] < 0:  # Keras' ReLU layer refuses it
        raise ValueError(f"{name}: the activation {spec!r} has no Keras file form (Keras' ReLU "
                         f"layer takes a threshold >= 0).")
    return cls, {**base, **{k: kw[k] for k in keys}}


def _keras_layers(model: Sequential, taken: frozenset[str] = frozenset()) -> list[_KerasLayer]:
    """The model's layers as Keras layers: [(class_name, config, weights, input shape or None,
    a nested model's own)] (a Dense with a parametrized activation becomes two; a nested
    Sequential is one, written as Keras nests it).  taken: the names of the enclosing models'
    layers (their input layers' names avoid them)."""
    out: list[_KerasLayer]
    shape: tuple[int, ...]
    # (cast: a built model's input shape, (None, d1, ...), is not None)
    out, shape = [], tuple(cast("tuple[Any, ...]", model.input_shape)[1:])
    for layer in model.layers:
        where = f"layer {layer.name!r}"
        if not isinstance(layer, layers_module.Layer):  # a nested Sequential
            inner = _keras_layers(layer, taken | {l.name for l in model.layers})
            config = _model_config(layer, inner, taken | {l.name for l in model.layers})
            out.append(("Sequential", config["config"], [], shape, inner))
            shape = tuple(cast("tuple[int, ...]", layer.output_shape)[1:])
            continue
        base = {"name": layer.name, "trainable": layer.trainable,
                "dtype": _policy(layer.dtype_policy)}
        kind = type(layer)
        # (the casts: mypy narrows layer by `type(layer) is`, not by `kind is`)
        if kind is layers_module.Dense:
            layer = cast(layers_module.Dense, layer)
            act = layer.activation
            split = _parametrized(act)
            cfg = {**base, "units": layer.units, "activation": "linear" if split else act.name,
                   "use_bias": layer.use_bias,
                   "kernel_initializer": _initializer(layer.kernel_initializer, where),
                   "bias_initializer": _initializer(layer.bias_initializer, where),
                   "kernel_regularizer": None, "bias_regularizer": None,
                   "kernel_constraint": None, "bias_constraint": None,
                   **_regularizer_entries(layer, ("kernel", "bias"))}
            out.append(("Dense", cfg, layer.weights, shape, []))
            if split:
                out.append((*_activation_layer(act, f"{layer.name}_activation", layer.dtype),
                            [], None, []))
        elif kind is layers_module.Activation:
            layer = cast(layers_module.Activation, layer)
            out.append((*_activation_layer(layer.activation, layer.name, layer.dtype), [], None,
                        []))
        elif kind is layers_module.Flatten:
            out.append(("Flatten", {**base, "data_format": "channels_last"}, [], shape, []))
        elif kind is layers_module.Dropout:
            layer = cast(layers_module.Dropout, layer)
            seed = layer.seed
            if seed is not None and not isinstance(seed, (int, np.integer)):
                raise ValueError(f"{where}: Keras takes an int seed for Dropout. Received: "
                                 f"{seed!r}")
            out.append(("Dropout", {**base, "rate": layer.rate,
                                    "seed": None if seed is None else int(seed),
                                    "noise_shape": None if layer.noise_shape is None
                                    else list(layer.noise_shape)}, [], None, []))
        elif kind.__name__ in _NEW_LAYERS + ("ReLU", "LeakyReLU", "Softmax"):
            cfg, built = _new_layer_config(layer, base, where)
            out.append((kind.__name__, cfg, _variables(layer), shape if built else None, []))
        else:
            raise ValueError(f"{where}: {kind.__name__} layers cannot be written in Keras "
                             "format; fastnn writes Dense, Activation, Flatten, Dropout and "
                             f"{', '.join(_NEW_LAYERS)}, ReLU, LeakyReLU, Softmax.")
        shape = tuple(layer.output_shape)
    names = [cfg["name"] for _, cfg, _, _, _ in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"Keras needs unique layer names; the model has {twice} more than "
                         "once (give the layers distinct name=...).")
    return out


def _variables(layer: layers_module.Layer) -> list[NDArray[Any]]:
    """A layer's variables as Keras stores them: its weights, and Normalization's int count."""
    if isinstance(layer, layers_module.Normalization) and layer.weights:
        return [*layer.weights, layer.count]
    return list(layer.weights)


def _regularizer_entries(layer: layers_module.Layer, prefixes: Iterable[str]) -> dict[str, Any]:
    """Keras' <prefix>_regularizer / _constraint entries (all of them, None where unset), and
    activity_regularizer when set (Keras leaves it out otherwise)."""
    from fastnn import constraints, regularizers
    out: dict[str, Any] = {}
    for w in prefixes:
        out[f"{w}_regularizer"] = _plain(regularizers.serialize(layer.weight_regularizers.get(w)))
        out[f"{w}_constraint"] = _plain(constraints.serialize(layer.weight_constraints.get(w)))
    if layer.activity_regularizer is not None:
        out["activity_regularizer"] = _plain(regularizers.serialize(layer.activity_regularizer))
    return out


def _new_layer_config(layer: Any, base: dict[str, Any], where: str
                      ) -> tuple[dict[str, Any], bool]:
    """(Keras config, whether Keras writes a build_config) of a layer of issue #11."""
    L = layers_module
    if isinstance(layer, L.BatchNormalization):
        return {**base, "axis": layer.axis, "momentum": layer.momentum, "epsilon": layer.epsilon,
                "center": layer.center, "scale": layer.scale,
                **{f"{k}_initializer": _initializer(getattr(layer, f"{k}_initializer"), where)
                   for k in ("beta", "gamma", "moving_mean", "moving_variance")},
                **_regularizer_entries(layer, ("beta", "gamma")),
                "synchronized": False, "renorm": False, "renorm_clipping": None,
                "renorm_momentum": 0.99}, True
    if isinstance(layer, L.LayerNormalization):
        return {**base, "axis": layer.axis, "epsilon": layer.epsilon, "center": layer.center,
                "scale": layer.scale, "rms_scaling": False,
                "beta_initializer": _initializer(layer.beta_initializer, where),
                "gamma_initializer": _initializer(layer.gamma_initializer, where),
                **_regularizer_entries(layer, ("beta", "gamma"))}, True
    if isinstance(layer, L.PReLU):
        return {**base, "alpha_initializer": _initializer(layer.alpha_initializer, where),
                **_regularizer_entries(layer, ("alpha",)),
                "shared_axes": layer.shared_axes}, True
    if isinstance(layer, L.ReLU):
        return {**base, "max_value": layer.max_value, "negative_slope": layer.negative_slope,
                "threshold": layer.threshold}, False
    if isinstance(layer, L.LeakyReLU):
        return {**base, "negative_slope": layer.negative_slope}, False
    if isinstance(layer, L.Softmax):
        return {**base, "axis": layer.axis}, False
    if isinstance(layer, L.GaussianNoise):
        if layer.seed is not None and not isinstance(layer.seed, (int, np.integer)):
            raise ValueError(f"{where}: Keras takes an int seed for GaussianNoise. Received: "
                             f"{layer.seed!r}")
        return {**base, "stddev": layer.stddev,
                "seed": None if layer.seed is None else int(layer.seed)}, False
    if isinstance(layer, L.Reshape):
        return {**base, "target_shape": list(layer.target_shape)}, False
    if isinstance(layer, L.Rescaling):
        cfg = layer.get_config()
        return {**base, "scale": cfg["scale"], "offset": cfg["offset"]}, True
    cfg = layer.get_config()  # Normalization
    return {**base, "axis": cfg["axis"], "invert": cfg["invert"], "mean": cfg["mean"],
            "variance": cfg["variance"]}, True


def _unique_keys(class_names: Iterable[str]) -> list[str]:
    """The HDF5 group keys of layers of these classes, in order (dense, dense_1, ...)."""
    used: dict[str, int]
    keys: list[str]
    used, keys = {}, []
    for c in class_names:
        k = _KEYS[c]
        if k in used:
            used[k] += 1
            keys.append(f"{k}_{used[k]}")
        else:
            used[k] = 0
            keys.append(k)
    return keys


def _optimizer_config(opt: optimizers.Optimizer) -> dict[str, Any]:
    name = type(opt).__name__
    if _OPTIMIZERS.get(name) is not type(opt):
        raise ValueError(f"The optimizer {type(opt).__name__} has no Keras equivalent; Keras "
                         f"files take {sorted(_OPTIMIZERS)}")
    cfg = _plain(opt.get_config())  # a plain-callable learning rate raises here, with reasons
    lr = cfg.pop("learning_rate")
    if isinstance(lr, dict):
        sched = {k: _plain(v) for k, v in lr["config"].items()}
        lr = _obj("keras.optimizers.schedules", lr["schedule"], {**sched, "name": lr["schedule"]})
    else:
        lr = float(lr)
    wd = cfg.pop("weight_decay")
    config = {"name": cfg.pop("name"), "learning_rate": lr,
              "weight_decay": None if wd is None else float(wd),
              **{k: cfg[k] for k in _OPTIMIZER_BASE}}
    config.update({k: cfg[k] for k in _OPTIMIZER_KEYS[name]})
    return _obj("keras.optimizers", name, config)


def _loss_config(loss: losses.Loss) -> str | dict[str, Any]:
    cls = type(loss)
    if cls not in _LOSS_FUNCTION_OF:
        raise ValueError(f"The loss {cls.__name__} has no Keras equivalent; Keras files take "
                         f"{sorted(c.__name__ for c in _LOSS_FUNCTION_OF)}")
    if loss.get_config() == cls().get_config():
        return _LOSS_FUNCTION_OF[cls]
    return cast("dict[str, Any]", _plain(losses.serialize(loss)))


def _default_metric(m: dict[str, Any]) -> bool:
    """Whether a serialized metric is its class with every default (its name says it all)."""
    metric = metrics_module.deserialize(m)
    try:
        return type(metric)().get_config() == metric.get_config()
    except TypeError:  # a required argument (PrecisionAtRecall's recall): never a default
        return False


def _compile_config(model: Sequential) -> dict[str, Any]:
    if not model.compiled:
        return {}
    cc = cast("dict[str, Any]", model.get_compile_config())  # (compiled)
    names: dict[str, list[str]] = {}
    for key in ("metrics", "weighted_metrics"):
        for m in cc[key]:
            if not isinstance(m, str) and not _default_metric(m):
                raise ValueError(f"The metric {m['class_name']}({_files.short(m['config'])}) "
                                 "has no Keras file form in fastnn (it writes metrics by name, "
                                 "with their defaults); compile with its name or save in "
                                 "fastnn's own format.")
        names[key] = [m if isinstance(m, str) else m["config"]["name"] for m in cc[key]]
        for m in names[key]:
            if m not in _METRIC_NAMES:
                raise ValueError(f"The metric {m!r} has no Keras name; Keras files take "
                                 f"{list(_METRIC_NAMES)}")
    lw = cc["loss_weights"]  # as compile took it (a number, or a list of one), as Keras writes
    return {"optimizer": _optimizer_config(model.optimizer), "loss": _loss_config(model.loss),
            "loss_weights": list(lw) if isinstance(lw, tuple) else lw,
            "metrics": names["metrics"] or None, "weighted_metrics": names["weighted_metrics"] or None,
            "run_eagerly": False, "steps_per_execution": 1, "jit_compile": "auto"}


def _model_config(model: Sequential, keras_layers: list[_KerasLayer],
                  taken: frozenset[str] = frozenset()) -> dict[str, Any]:
    shape = [None, *cast("tuple[Any, ...]", model.input_shape)[1:]]  # (built: not None)
    dtype = model._leaves()[0].dtype if model.layers else np.dtype("float32")
    names = taken | {cfg["name"] for _, cfg, _, _, _ in keras_layers}
    input_name = "input_layer"
    k = 0
    while input_name in names:
        k += 1
        input_name = f"input_layer_{k}"
    entries = [_obj("keras.layers", "InputLayer",
                    {"batch_shape": shape, "dtype": np.dtype(dtype).name, "sparse": False,
                     "name": input_name})]
    for cls, cfg, _, in_shape, _ in keras_layers:
        entry = _obj("keras" if cls == "Sequential" else "keras.layers", cls, cfg)
        if in_shape is not None:
            entry["build_config"] = {"input_shape": [None, *in_shape]}
        if cls == "Sequential":
            entry["compile_config"] = {}  # (as Keras writes a nested model)
        entries.append(entry)
    config = _obj("keras", "Sequential", {"name": model.name, "trainable": model.trainable,
                                          "dtype": _policy(dtype), "layers": entries,
                                          "build_input_shape": shape})
    config["build_config"] = {"input_shape": shape}
    config["compile_config"] = _compile_config(model)
    return config


def _per_weight(buffers: Sequence[NDArray[Any]], weights: Sequence[NDArray[Any]]
                ) -> list[NDArray[Any]]:
    """Flat per-parameter-buffer arrays cut into arrays shaped as the weights (in order)."""
    flat = np.concatenate([a.reshape(-1) for a in buffers])
    if flat.size != sum(w.size for w in weights):
        raise RuntimeError("the optimizer state does not match the model's weights")
    ends = np.cumsum([w.size for w in weights])
    return [flat[e - w.size:e].reshape(w.shape) for e, w in zip(ends, weights)]


def _optimizer_extras(opt: optimizers.Optimizer) -> list[list[NDArray[Any]]]:
    """The optimizer's arrays Keras keeps before the rule's: the moving averages (use_ema),
    then the gradient accumulators, each per parameter buffer (None: not built yet)."""
    built = opt.state is not None
    out = []
    if opt.use_ema:
        out.append(opt.moving_averages if built else [])
    if opt.gradient_accumulation_steps:
        out.append(opt.gradient_accumulators if built else [])
    return out


def _optimizer_arrays(model: Sequential) -> list[NDArray[Any]]:
    """optimizer.variables as Keras 3 orders them (see the module docstring)."""
    opt, weights = model.optimizer, model.trainable_weights
    groups = _slot_groups(opt)
    slots = [s for g in groups for s in g]
    mine = opt.variables
    per_slot = {}
    if mine and slots:  # fastnn: per parameter buffer, each slot (flat)
        ns = len(slots)
        if len(mine) % ns:
            raise RuntimeError(f"{type(opt).__name__} holds {len(mine)} state arrays for "
                               f"{ns} slots")
        for j, s in enumerate(slots):
            per_slot[s] = _per_weight(mine[j::ns], weights)
    else:  # not trained yet: the state Keras builds
        init = (cast(optimizers.Adagrad, opt).initial_accumulator_value
                if type(opt).__name__ == "Adagrad" else 0.0)
        per_slot = {s: [np.full(w.shape, init, w.dtype) for w in weights] for s in slots}
    arrays = [np.array(opt.calls, np.int64)]
    if not _has_schedule(opt):
        arrays.append(np.array(opt.learning_rate, np.float32))
    for extra in _optimizer_extras(opt):
        arrays.extend(_per_weight(extra, weights) if extra else
                      [np.zeros(w.shape, w.dtype) for w in weights])
    for group in groups:
        for i in range(len(weights)):
            arrays.extend(per_slot[s][i] for s in group)
    if type(opt).__name__ == "Nadam":
        dtype = weights[0].dtype if weights else np.float32
        arrays.append(np.array(_nadam_product(cast(optimizers.Nadam, opt).beta_1,
                                              opt.iterations), dtype))
    return arrays


def _write_layers(group: Any, keras_layers: list[_KerasLayer]) -> None:
    """Each layer's group <key>/vars (attribute name, datasets 0, 1, ...) in the HDF5 group;
    a nested model's layers in its own <key>/layers."""
    keys = _unique_keys([cls for cls, _, _, _, _ in keras_layers])
    for key, (cls, cfg, weights, _, inner) in zip(keys, keras_layers):
        g = group.create_group(key)
        if cls == "Sequential":
            _write_layers(g.create_group("layers"), inner)
        v = g.create_group("vars")
        v.attrs["name"] = cfg["name"]
        for i, w in enumerate(weights):
            v.create_dataset(str(i), data=np.asarray(w, order="C"))  # (0-d stays 0-d)


def _h5_bytes(model: Sequential, keras_layers: list[_KerasLayer]) -> bytes:
    """model.weights.h5 (also a .weights.h5 file) for these Keras layers, as bytes."""
    h5py = _h5py()
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_group("vars").attrs["name"] = model.name
        _write_layers(f.create_group("layers"), keras_layers)
        if model.compiled:
            v = f.create_group("optimizer").create_group("vars")
            v.attrs["name"] = model.optimizer.name
            for i, a in enumerate(_optimizer_arrays(model)):
                v.create_dataset(str(i), data=a)
    return buf.getvalue()


def _require_built(model: Sequential, what: str) -> None:
    if not getattr(model, "built", False):
        raise ValueError(f"Expected a built model to {what}. Build it (or fit it) first.")


def save_keras(model: Sequential, filepath: StrOrBytesPath) -> None:
    """Write model (a built fastnn Sequential) as a Keras 3 `.keras` file, atomically: Keras 3's
    `keras.saving.load_model(filepath)` opens it and predicts the same; a compiled model keeps
    its optimizer, loss, metrics and optimizer state.  Keras itself wants the `.keras` suffix.
    A ValueError names anything Keras cannot represent (before the file is touched)."""
    if not distribution.is_primary():  # a distributed fit: rank 0 writes
        return
    _require_built(model, "save")
    keras_layers = _keras_layers(model)
    config = _model_config(model, keras_layers)
    import fastnn
    metadata = {"keras_version": KERAS_VERSION,
                "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S"),
                "saved_by": f"fastnn {fastnn.__version__}"}
    entries = [(_METADATA, json.dumps(metadata).encode()),
               (_CONFIG, json.dumps(config).encode()),
               (_WEIGHTS, _h5_bytes(model, keras_layers))]

    def write(f: IO[bytes]) -> None:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
            for name, data in entries:
                z.writestr(name, data)
    _files.write_atomic(filepath, write)


def save_weights_h5(model: Sequential, filepath: StrOrBytesPath) -> None:
    """Write the model's weights in Keras 3's `.weights.h5` layout (what Keras'
    model.save_weights writes: the layers' variables, and the optimizer's when compiled),
    atomically.  Keras' load_weights reads it into the same architecture (Keras wants the
    `.weights.h5` suffix)."""
    if not distribution.is_primary():  # a distributed fit: rank 0 writes
        return
    _require_built(model, "save weights from")
    data = _h5_bytes(model, _keras_layers(model))
    _files.write_atomic(filepath, lambda f: f.write(data))


# ---- reading: checked access to the file ----------------------------------------------------

class UnsupportedError(ValueError):
    """The file is a valid Keras file, but uses a layer, option or setting fastnn does not have
    (the message names it and the file).  In a compile_config it only leaves the model
    uncompiled, with a warning."""


class _File(_files.CheckedFile):
    """Messages and type checks that name the file (check: see _files.CheckedFile)."""

    error = FileFormatError

    def unsupported(self, message: str) -> NoReturn:
        raise UnsupportedError(f"{self.path!r}: {message}")

    def shape(self, value: Any, where: str) -> tuple[int, ...]:
        """[null or int, d1, d2, ...] with every d a positive int: the sample shape."""
        self.check(value, "list", where)
        if len(value) < 2 or (value[0] is not None and type(value[0]) is not int) or \
                any(type(d) is not int or d < 1 for d in value[1:]):
            self.fail(f"Expected {where} to be [null, d1, ...] with positive ints. Received: "
                     f"{_files.short(value)}")
        return tuple(value[1:])


def _find_lambda(value: Any) -> bool:
    """True if the parsed JSON holds a Python-code object of Keras (`__lambda__`)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if v.get("class_name") == "__lambda__":
                return True
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


class _Archive(_File, _files.BoundedZip):
    """A .keras ZIP, each entry read at most to a given size (see _files.BoundedZip)."""

    kind = "Keras 3 .keras file"
    methods = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)  # Keras stores; deflated is read too

    def unreadable(self, e: BaseException) -> NoReturn:
        with open(self.path, "rb") as f:
            hdf5 = f.read(8) == b"\x89HDF\r\n\x1a\n"
        if hdf5:
            self.fail("an HDF5 file, not a .keras archive: Keras 2's legacy .h5 models are "
                      "not read by fastnn (a .weights.h5 file goes to load_weights_h5).")
        self.fail(f"not a readable .keras file (a ZIP archive; truncated, corrupted or "
                  f"another format): {e}")

    def config(self) -> Any:
        return self.read_json(_CONFIG, _MAX_JSON, _MAX_DEPTH)


class _H5(_File):
    """Checked access to model.weights.h5 / a .weights.h5 file: hard links only, datasets
    checked for shape and dtype before their data is read."""

    ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError)

    def __init__(self, path: str, source: str | IO[bytes], what: str) -> None:
        super().__init__(path)
        self.h5py = _h5py()
        self.what = what
        try:
            self.file = self.h5py.File(source, "r")
        except self.ERRORS as e:
            self.fail(f"{what} is not a readable HDF5 file: {e}")

    def child(self, group: h5py.Group, name: str, where: str, kind: str,
              optional: bool = False) -> Any:
        """group[name], a hard link to a group (kind "group") or dataset (kind "dataset")."""
        h5py = self.h5py
        try:
            if name not in group:
                if optional:
                    return None
                self.fail(f"{self.what} has no {where} (the file does not match the model).")
            link = group.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                self.fail(f"{self.what}: {where} is a {type(link).__name__}; only plain "
                         "groups and datasets are read.")
            obj = group[name]
        except FileFormatError:
            raise
        except self.ERRORS as e:
            self.fail(f"{self.what}: cannot read {where}: {e}")
        expected = h5py.Group if kind == "group" else h5py.Dataset
        if not isinstance(obj, expected):
            self.fail(f"{self.what}: Expected {where} to be an HDF5 {kind}. Received: "
                     f"{type(obj).__name__}")
        return obj

    def count(self, group: h5py.Group, where: str) -> int:
        try:
            return len(group)
        except self.ERRORS as e:
            self.fail(f"{self.what}: cannot read {where}: {e}")

    def array(self, group: h5py.Group, name: str, where: str, shape: Iterable[int],
              kinds: str = "f") -> NDArray[Any]:
        """The dataset group[name], checked to have this shape and a dtype of these kinds
        (f: float32/float64, i: an integer) before its data is read."""
        ds = self.child(group, name, where, "dataset")
        try:
            if ds.external or ds.is_virtual:
                self.fail(f"{self.what}: {where} keeps its data outside the file; refused.")
            dtype, got = ds.dtype, ds.shape
        except FileFormatError:
            raise
        except self.ERRORS as e:
            self.fail(f"{self.what}: cannot read {where}: {e}")
        ok = (dtype.kind == "f" and dtype.itemsize in (4, 8)) if kinds == "f" else \
            (dtype.kind in "iu" and dtype.itemsize <= 8)
        if not ok:
            self.fail(f"{self.what}: Expected {where} to hold "
                     f"{'float32 or float64' if kinds == 'f' else 'an integer'}. "
                     f"Received: dtype {dtype}")
        if got != tuple(shape):
            self.fail(f"{self.what}: Expected {where} of shape {tuple(shape)} (what the model "
                     f"implies). Received: shape {got}")
        try:
            return np.asarray(ds[()])
        except self.ERRORS as e:
            self.fail(f"{self.what}: cannot read {where} (truncated or corrupted): {e}")

    def close(self) -> None:
        self.file.close()


# ---- reading: the model -------------------------------------------------------------------

def _keras_object(f: _File, value: Any, where: str) -> tuple[str, Any]:
    """The (class_name, config) of a Keras object reference, checked to name a Keras built-in
    (never a custom, registered or Python-code object)."""
    f.check(value, "dict", where)
    cls = f.check(value.get("class_name"), "str", f"{where}.class_name")
    module = f.check(value.get("module"), "str", f"{where}.module", null=True)
    registered = f.check(value.get("registered_name"), "str", f"{where}.registered_name",
                        null=True)
    if cls in ("Lambda", "__lambda__"):
        f.unsupported(f"{where} is a Lambda: fastnn never runs code from a file, and Lambda "
                      "layers are Python code. Lambda is not supported by fastnn.")
    # Keras' built-ins have registered_name null (a function: its own name, in config)
    builtin = registered in (None, cls) or (cls == "function" and registered == value.get("config"))
    if (module is not None and module.split(".")[0] != "keras") or not builtin:
        f.unsupported(f"{where} is the custom class {cls!r} (module {module!r}, registered as "
                      f"{registered!r}); it is not supported by fastnn.")
    return cls, value.get("config")


def _dtype(f: _File, value: Any, where: str) -> str | None:
    """A layer's dtype: a DTypePolicy object or a string, float32, float64 or mixed_bfloat16
    (fastnn.mixed_precision)."""
    if value is None:
        return None
    name = value
    if isinstance(value, dict):
        cls, cfg = _keras_object(f, value, where)
        f.check(cfg, "dict", f"{where}.config")
        if cls not in ("DTypePolicy", "FloatDTypePolicy"):
            f.unsupported(f"{where}: the dtype policy {cls} is not supported by fastnn "
                          "(float32 or float64 only).")
        name = cfg.get("name")
    f.check(name, "str", where)
    if name not in ("float32", "float64", "mixed_bfloat16"):
        f.unsupported(f"{where}: dtype {name!r} is not supported by fastnn (its kernels compute "
                      "in float32, float64 or mixed_bfloat16).")
    return cast(str, name)  # (checked above: a str)


def _activation(f: _File, value: Any, where: str) -> activations.Spec:
    """An activation (a Keras name or function reference) as a fastnn Spec."""
    if value is None:
        return activations.Spec("linear")
    name = value
    if isinstance(value, dict):
        cls, cfg = _keras_object(f, value, where)
        if cls != "function" or type(cfg) is not str:
            f.unsupported(f"{where}: the activation object {cls} is not supported by fastnn.")
        name = cfg
    f.check(name, "str", where)
    if name not in activations.NAMES and name not in activations.ALIASES:
        f.unsupported(f"{where}: the activation {name!r} is not supported by fastnn (it has "
                      f"{list(activations.NAMES)}).")
    return activations.Spec(name)


def _initializer_name(f: _File, value: Any, where: str) -> str | Initializer:
    """An initializer of a Keras file: its snake_case name when it has Keras' defaults (and no
    seed), else the initializer."""
    if type(value) is str:
        if value not in initializers.ALL:
            f.unsupported(f"{where}: the initializer {value!r} is not supported by fastnn (it has "
                          f"{sorted(initializers.NAMES_BY_CLASS)}).")
        return initializers.NAMES_BY_CLASS[initializers.ALL[value].__name__]
    cls, cfg = _keras_object(f, value, where)
    cfg = f.check(cfg if cfg is not None else {}, "dict", f"{where}.config")
    if cls not in initializers.NAMES_BY_CLASS:
        f.unsupported(f"{where}: the initializer {cls} is not supported by fastnn (it has "
                      f"{sorted(initializers.NAMES_BY_CLASS)}).")
    f.check(cfg.get("seed"), "int", f"{where}.config.seed", null=True)
    try:
        obj = initializers.deserialize({"class_name": cls, "config": cfg})
    except (ValueError, TypeError) as e:
        f.unsupported(f"{where}: {cls}({_files.short(cfg)}) is not supported by fastnn ({e}).")
    if obj == type(obj)():
        return initializers.NAMES_BY_CLASS[cls]
    return cast("Initializer", obj)


def _options(f: _File, cfg: dict[str, Any], allowed: Mapping[str, object], cls: str,
             where: str) -> None:
    """Check that cfg has only the keys in allowed (name -> value meaning "off", or a callable
    check) plus name/trainable/dtype; returns nothing, raises naming the first other option."""
    for key, value in cfg.items():
        if key in ("name", "trainable", "dtype"):
            continue
        if key not in allowed:
            f.unsupported(f"{where}: the {cls} option {key!r} is not supported by fastnn.")
        check = allowed[key]
        if callable(check):
            check(value, f"{where}.config.{key}")
        elif value != check or type(value) is not type(check):
            f.unsupported(f"{where}: {cls}({key}={_files.short(value)}) is not supported by fastnn "
                          f"(only {key}={check!r}).")


def _layer(f: _File, entry: Any, where: str,
           shape: tuple[int, ...]) -> tuple[layers_module.Layer, str, tuple[int, ...], int]:
    """One Keras layer entry as (fastnn layer, class name, output shape, parameter count),
    for samples of shape; raises naming anything fastnn does not have."""
    cls, cfg = _keras_object(f, entry, where)
    if cls not in _SUPPORTED:
        f.unsupported(f"{where}: {cls} is not supported by fastnn (it reads Sequential models "
                      f"of {', '.join(_SUPPORTED)}).")
    if cls == "InputLayer":
        f.unsupported(f"{where}: an InputLayer is only read as the first layer.")
    f.check(cfg, "dict", f"{where}.config")
    name = f.check(cfg.get("name"), "str", f"{where}.config.name", null=True)
    f.check(cfg.get("trainable", True), "bool", f"{where}.config.trainable")
    dtype = _dtype(f, cfg.get("dtype"), f"{where}.config.dtype")
    kw = {"name": name, "dtype": dtype}
    null: dict[str, object] = {k: None for k in ("quantization_config", "lora_rank",
                                                 "lora_alpha")}
    # regularizers and constraints: checked here, made by the layer from the checked dicts
    null.update({k: lambda v, w: _regularizer_object(f, v, w) for k in (
        "kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
        "bias_constraint")})

    def number(lo: float = 0.0) -> Callable[[Any, str], None]:
        def check(v: Any, w: str) -> None:
            f.check(v, "number", w)
            if v < lo:
                f.fail(f"Expected {w} >= {lo}. Received: {v}")
        return check

    def build_config_matches() -> None:
        bc = entry.get("build_config")
        if bc is not None:
            f.check(bc, "dict", f"{where}.build_config")
            if "input_shape" in bc and f.shape(bc["input_shape"], f"{where}.build_config."
                                               "input_shape") != shape:
                f.fail(f"{where} was built for inputs {bc['input_shape']}, but receives "
                      f"{[None, *shape]}.")

    if cls == "Dense":
        _options(f, cfg, {"units": lambda v, w: f.check(v, "int", w),
                          "activation": lambda v, w: None,
                          "use_bias": lambda v, w: f.check(v, "bool", w),
                          "kernel_initializer": lambda v, w: None,
                          "bias_initializer": lambda v, w: None, **null}, cls, where)
        units = f.check(cfg.get("units"), "int", f"{where}.config.units")
        if units < 1:
            f.fail(f"Expected {where}.config.units to be a positive int. Received: {units}")
        if len(shape) != 1:
            f.unsupported(f"{where}: Dense on inputs of shape {[None, *shape]} is not supported "
                          "by fastnn (its Dense takes (batch, features); add a Flatten).")
        build_config_matches()
        use_bias = f.check(cfg.get("use_bias", True), "bool", f"{where}.config.use_bias")
        layer = layers_module.Dense(
            units, activation=_activation(f, cfg.get("activation"), f"{where}.config.activation"),
            use_bias=use_bias,
            kernel_initializer=_initializer_name(f, cfg.get("kernel_initializer",
                                                            "glorot_uniform"),
                                                 f"{where}.config.kernel_initializer"),
            bias_initializer=_initializer_name(f, cfg.get("bias_initializer", "zeros"),
                                               f"{where}.config.bias_initializer"),
            **{k: cfg.get(k) for k in ("kernel_regularizer", "bias_regularizer",
                                       "activity_regularizer", "kernel_constraint",
                                       "bias_constraint")}, **kw)
        return layer, cls, (units,), (shape[0] + use_bias) * units
    if cls == "Flatten":
        _options(f, cfg, {"data_format": lambda v, w: None}, cls, where)
        fmt = cfg.get("data_format", "channels_last")
        if fmt not in (None, "channels_last", "channels_first"):
            f.fail(f"Expected {where}.config.data_format to be channels_last or channels_first. "
                  f"Received: {_files.short(fmt)}")
        if fmt == "channels_first" and len(shape) > 1:
            f.unsupported(f"{where}: Flatten(data_format='channels_first') of inputs "
                          f"{[None, *shape]} is not supported by fastnn (it flattens "
                          "channels_last).")
        build_config_matches()
        return layers_module.Flatten(**kw), cls, (math.prod(shape),), 0
    if cls == "Dropout":
        def noise_shape(v: Any, w: str) -> None:
            if v is not None:
                for i, d in enumerate(f.check(v, "list", w)):
                    f.check(d, "int", f"{w}[{i}]", null=True)
        _options(f, cfg, {"rate": number(), "seed": lambda v, w: f.check(v, "int", w, null=True),
                          "noise_shape": noise_shape}, cls, where)
        rate = f.check(cfg.get("rate"), "number", f"{where}.config.rate")
        return layers_module.Dropout(rate, noise_shape=cfg.get("noise_shape"),
                                     seed=cfg.get("seed"), **kw), cls, shape, 0
    if cls in _NEW_LAYERS + ("ReLU", "LeakyReLU", "Softmax"):
        return _read_new_layer(f, cls, cfg, entry, where, shape, kw, number)
    if cls == "Activation":
        _options(f, cfg, {"activation": lambda v, w: None}, cls, where)
        spec = _activation(f, cfg.get("activation"), f"{where}.config.activation")
    else:  # ELU
        _options(f, cfg, {"alpha": number(-math.inf)}, cls, where)
        if cfg.get("alpha", 1.0) <= 0:
            f.unsupported(f"{where}: ELU(alpha={cfg['alpha']}) is not supported by fastnn "
                          "(alpha > 0 only).")
        spec = activations.Spec("elu", {"alpha": cfg.get("alpha", 1.0)})
    return layers_module.Activation(spec, **kw), cls, shape, 0


def _regularizer_object(f: _File, value: Any, where: str) -> None:
    """A Keras regularizer or constraint entry fastnn has (None, or keras.regularizers L1, L2,
    L1L2 / keras.constraints MaxNorm, NonNeg, UnitNorm, MinMaxNorm with number options)."""
    if value is None:
        return
    from fastnn import constraints, regularizers
    cls, cfg = _keras_object(f, value, where)
    module = regularizers if where.endswith("regularizer") else constraints
    if cls not in module._BY_NAME or not cls[0].isupper():
        f.unsupported(f"{where}: {cls} is not supported by fastnn (it has "
                      f"{sorted(k for k in module._BY_NAME if k[0].isupper())}).")
    cfg = f.check(cfg if cfg is not None else {}, "dict", f"{where}.config")
    for k, v in cfg.items():
        if k == "axis" and isinstance(v, list):
            for a in v:
                f.check(a, "int", f"{where}.config.axis")
        elif k == "axis":
            f.check(v, "int", f"{where}.config.axis")
        else:
            f.check(v, "number", f"{where}.config.{k}", null=k in ("l1", "l2"))
    try:
        module.get(value)
    except (ValueError, TypeError) as e:
        f.fail(f"invalid {where}: {e}")


def _read_new_layer(f: _File, cls: str, cfg: dict[str, Any], entry: Any, where: str,
                    shape: tuple[int, ...], kw: dict[str, Any], number: Callable[..., Any]
                    ) -> tuple[layers_module.Layer, str, tuple[int, ...], int]:
    """A layer of issue #11 (and Keras' ReLU, LeakyReLU, Softmax) from its Keras config:
    (fastnn layer, class, output shape, parameter count)."""
    L = layers_module

    def init(key: str, default: str) -> str | Initializer:
        return _initializer_name(f, cfg.get(key, default), f"{where}.config.{key}")

    def reg(*keys: str) -> dict[str, Any]:
        for k in keys:
            _regularizer_object(f, cfg.get(k), f"{where}.config.{k}")
        return {k: cfg.get(k) for k in keys}

    def anything(v: Any, w: str) -> None:
        pass

    def boolean(v: Any, w: str) -> None:
        f.check(v, "bool", w)

    def axis_list(v: Any, w: str) -> None:
        for a in (v if isinstance(v, list) else [v]):
            f.check(a, "int", w)

    layer: layers_module.Layer
    if cls == "BatchNormalization":
        norm_regs = ("beta_regularizer", "gamma_regularizer", "beta_constraint",
                     "gamma_constraint")
        _options(f, cfg, {"axis": lambda v, w: f.check(v, "int", w), "momentum": number(-math.inf),
                          "epsilon": number(), "center": boolean, "scale": boolean,
                          **{f"{k}_initializer": anything for k in ("beta", "gamma",
                                                                    "moving_mean",
                                                                    "moving_variance")},
                          **{k: anything for k in norm_regs},
                          "synchronized": False, "renorm": False, "renorm_clipping": None,
                          "renorm_momentum": number(-math.inf)}, cls, where)
        layer = L.BatchNormalization(
            axis=cfg.get("axis", -1), momentum=cfg.get("momentum", 0.99),
            epsilon=cfg.get("epsilon", 1e-3), center=cfg.get("center", True),
            scale=cfg.get("scale", True), beta_initializer=init("beta_initializer", "zeros"),
            gamma_initializer=init("gamma_initializer", "ones"),
            moving_mean_initializer=init("moving_mean_initializer", "zeros"),
            moving_variance_initializer=init("moving_variance_initializer", "ones"),
            **reg(*norm_regs), **kw)
    elif cls == "LayerNormalization":
        norm_regs = ("beta_regularizer", "gamma_regularizer", "beta_constraint",
                     "gamma_constraint")
        _options(f, cfg, {"axis": axis_list, "epsilon": number(), "center": boolean,
                          "scale": boolean, "rms_scaling": False, "beta_initializer": anything,
                          "gamma_initializer": anything, **{k: anything for k in norm_regs}},
                 cls, where)
        layer = L.LayerNormalization(
            axis=cfg.get("axis", -1), epsilon=cfg.get("epsilon", 1e-3),
            center=cfg.get("center", True), scale=cfg.get("scale", True),
            beta_initializer=init("beta_initializer", "zeros"),
            gamma_initializer=init("gamma_initializer", "ones"), **reg(*norm_regs), **kw)
    elif cls == "PReLU":
        _options(f, cfg, {"alpha_initializer": anything, "alpha_regularizer": anything,
                          "alpha_constraint": anything,
                          "shared_axes": lambda v, w: None if v is None else axis_list(v, w)},
                 cls, where)
        layer = L.PReLU(alpha_initializer=init("alpha_initializer", "zeros"),
                        shared_axes=cfg.get("shared_axes"),
                        **reg("alpha_regularizer", "alpha_constraint"), **kw)
    elif cls == "ReLU":
        _options(f, cfg, {"max_value": lambda v, w: f.check(v, "number", w, null=True),
                          "negative_slope": number(), "threshold": number()}, cls, where)
        layer = L.ReLU(max_value=cfg.get("max_value"),
                       negative_slope=cfg.get("negative_slope", 0.0),
                       threshold=cfg.get("threshold", 0.0), **kw)
    elif cls == "LeakyReLU":
        key = "alpha" if "alpha" in cfg and "negative_slope" not in cfg else "negative_slope"
        _options(f, cfg, {key: number()}, cls, where)
        layer = L.LeakyReLU(cfg.get(key, 0.3), **kw)  # Keras' default: 0.3
    elif cls == "Softmax":
        _options(f, cfg, {"axis": axis_list}, cls, where)
        layer = L.Softmax(axis=cfg.get("axis", -1), **kw)
    elif cls == "GaussianNoise":
        _options(f, cfg, {"stddev": number(), "seed": lambda v, w: f.check(v, "int", w, null=True)},
                 cls, where)
        layer = L.GaussianNoise(f.check(cfg.get("stddev"), "number", f"{where}.config.stddev"),
                                seed=cfg.get("seed"), **kw)
    elif cls == "Reshape":
        _options(f, cfg, {"target_shape": axis_list}, cls, where)
        layer = L.Reshape(f.check(cfg.get("target_shape"), "list", f"{where}.config.target_shape"),
                          **kw)
    elif cls == "Rescaling":
        def num_or_list(v: Any, w: str) -> None:
            if not isinstance(v, list):
                f.check(v, "number", w)
            elif not all(type(e) in (int, float) for e in np.ravel(np.asarray(v, object))):
                f.fail(f"Expected {w} to hold numbers. Received: {_files.short(v)}")
        _options(f, cfg, {"scale": num_or_list, "offset": num_or_list}, cls, where)
        layer = L.Rescaling(cfg.get("scale"), cfg.get("offset", 0.0), **kw)
    else:  # Normalization
        def stats(v: Any, w: str) -> None:
            if v is not None and not isinstance(v, list):
                f.check(v, "number", w)
        _options(f, cfg, {"axis": lambda v, w: None if v is None else axis_list(v, w),
                          "invert": boolean, "mean": stats, "variance": stats}, cls, where)
        layer = L.Normalization(axis=cfg.get("axis", -1), mean=cfg.get("mean"),
                                variance=cfg.get("variance"), invert=cfg.get("invert", False),
                                **kw)
    out_shape = layer.compute_output_shape(shape)
    if cls in ("BatchNormalization", "LayerNormalization", "PReLU", "Normalization"):
        # its weights (the model copies them in; the file overwrites them)
        layer.build(cast("tuple[int, ...]", (None, *shape)))
        count = sum(math.prod(s.shape) for s in layer.weight_specs)
    else:
        count = 0
    return layer, cls, tuple(out_shape), count


def _input_shape(f: _File, config: dict[str, Any], entries: list[Any],
                 where: str = "model") -> tuple[tuple[int, ...] | None, list[Any]]:
    """(the sample shape or None, the layer entries after the InputLayer): from the InputLayer,
    else from the model's build_input_shape.  where: the model's place in the file."""
    if entries:
        first = f"{where}.layers[0]"
        cls, cfg = _keras_object(f, entries[0], first)
        if cls == "InputLayer":
            f.check(cfg, "dict", f"{first}.config")
            for key, value in cfg.items():
                if key in ("batch_shape", "batch_input_shape", "name"):
                    continue
                if key == "dtype":
                    _dtype(f, value, f"{first}.config.dtype")
                elif key not in ("sparse", "ragged", "optional"):
                    f.unsupported(f"{first}: the InputLayer option {key!r} is not "
                                  "supported by fastnn.")
                elif value not in (None, False):
                    f.unsupported(f"{first}: Input({key}={_files.short(value)}) is not "
                                  "supported by fastnn.")
            key = "batch_shape" if "batch_shape" in cfg else "batch_input_shape"
            return f.shape(cfg.get(key), f"{first}.config.{key}"), entries[1:]
    if config.get("build_input_shape") is not None:
        return f.shape(config["build_input_shape"], f"{where}.config.build_input_shape"), entries
    return None, entries


def _model(f: _Archive, top: Any) -> tuple[Sequential, list[Any], int]:
    """(the fastnn Sequential that config.json describes, built; the Keras class of each of its
    layers, a nested model's as ("Sequential", its classes); its parameter count).  Nothing is
    allocated before the count is checked against the file's size."""
    f.check(top, "dict", "config.json")
    if _find_lambda(top.get("config")):  # (one in compile_config only leaves it uncompiled)
        f.unsupported("it holds a Python lambda (`__lambda__`): fastnn never runs code from a "
                      "file; Lambda is not supported by fastnn.")
    cls, config = _keras_object(f, top, "the model")
    if cls != "Sequential":
        f.unsupported(f"the model is a {cls}: fastnn reads Sequential models only ({cls} is "
                      "not supported by fastnn).")
    bc = top.get("build_config")
    shape = (f.shape(bc["input_shape"], "build_config.input_shape")
             if isinstance(bc, dict) and bc.get("input_shape") is not None else None)
    model, classes, count, shape, _ = _sequential(f, config, "model", shape, nested=False)
    if count * 4 > f.size:  # 4 bytes: the smallest float
        f.fail(f"its model has {count} parameters, more than its {f.size} bytes can hold.")
    try:
        model.build((None, *shape))
    except (ValueError, TypeError) as e:
        f.fail(f"invalid model description: {e}")
    return model, classes, count


_MAX_NESTING = 32  # Sequential models inside Sequential models


def _sequential(f: _Archive, config: Any, where: str, shape: tuple[int, ...] | None,
                nested: bool, depth: int = 0
                ) -> tuple[Sequential, list[Any], int, tuple[int, ...], tuple[int, ...]]:
    """A Sequential's config as (the model, unbuilt; its layers' Keras classes; its parameter
    count; its input and output sample shapes).  shape: the input shape the enclosing model
    gives a nested one (a nested model's own must agree), else a fallback for the top one."""
    from fastnn.models import Sequential

    if depth > _MAX_NESTING:
        f.fail(f"Expected Sequential models nested at most {_MAX_NESTING} deep. Received more.")
    f.check(config, "dict", f"{where}.config")
    name = f.check(config.get("name"), "str", f"{where}.config.name", null=True)
    model_trainable = f.check(config.get("trainable", True), "bool", f"{where}.config.trainable")
    _dtype(f, config.get("dtype"), f"{where}.config.dtype")
    entries = f.check(config.get("layers"), "list", f"{where}.config.layers")
    if len(entries) > _MAX_LAYERS:
        f.fail(f"Expected at most {_MAX_LAYERS} layers. Received: {len(entries)}")
    first = len(entries)
    own, entries = _input_shape(f, config, entries, where)
    first -= len(entries)  # 1 after an InputLayer: the index of entries[0] in the file
    if nested and own is not None and shape is not None and own != shape:
        f.fail(f"{where} takes samples of shape {own}; the layer before it gives {shape}.")
    shape = shape if nested else (own or shape)
    if shape is None or not entries:
        f.unsupported(f"{'the model' if not nested else where} has no input shape or no layers "
                      "(it was saved unbuilt, without weights); fastnn reads built models.")
    layers: list[Any] = []
    classes: list[Any] = []
    layer: Any
    count, s = 0, shape
    for i, entry in enumerate(entries):
        at = f"{where}.layers[{first + i}]"
        try:
            if isinstance(entry, dict) and entry.get("class_name") == "Sequential":
                _, cfg = _keras_object(f, entry, at)
                layer, inner, n, _, s = _sequential(f, cfg, at, s, nested=True, depth=depth + 1)
                classes.append(("Sequential", inner))
            else:
                layer, lcls, s, n = _layer(f, entry, at, s)
                layer.trainable = entry["config"].get("trainable", True)  # (checked: a bool)
                classes.append(lcls)
        except (UnsupportedError, FileFormatError):
            raise
        except (ValueError, TypeError) as e:  # refused by the layer's constructor
            f.fail(f"invalid {at}: {e}")
        layers.append(layer)
        count += n
    try:
        model = Sequential(name=name)
        for layer in layers:
            model.add(layer, build=False)
        if not model_trainable:
            model.trainable = False
    except (ValueError, TypeError) as e:
        f.fail(f"invalid model description: {e}")
    return model, classes, count, shape, s


def _h5_limit(count: int, n_layers: int, n_weights: int) -> int:
    """The most bytes a weights file of this architecture takes: its parameters and at most
    _MAX_SLOTS optimizer arrays of each, 8-byte floats, and the HDF5 structure."""
    n_objects = 8 + 2 * n_layers + (2 + _MAX_SLOTS) * n_weights
    return 8 * count * (1 + _MAX_SLOTS) + 64 + _H5_BASE + _H5_PER_OBJECT * n_objects


def _read_weights(h5: _H5, model: Sequential, classes: list[Any]) -> None:
    """Read the layers' variables of an open weights file, checked against the model, into it.
    classes: the Keras class of each layer (their keys in the file), a nested model's as
    ("Sequential", its classes)."""
    group = h5.child(h5.file, "layers", "the group layers", "group", optional=not model.weights)
    if group is None:
        return
    values: list[NDArray[Any]] = []
    counts: list[tuple[NDArray[Any], NDArray[Any]]] = []
    _read_layers(h5, group, "layers", model.layers, classes, values, counts)
    model.set_weights(values)
    for target, value in counts:
        target[...] = value


def _read_layers(h5: _H5, group: Any, path: str, layers: Sequence[Any], classes: list[Any],
                 values: list[NDArray[Any]], counts: list[tuple[NDArray[Any], NDArray[Any]]]
                 ) -> None:
    """The variables of these layers from the group at path, appended to values in the
    model's weight order (Normalization's counts to counts); a nested model's from its own
    <key>/layers group."""
    keys = _unique_keys([c if isinstance(c, str) else c[0] for c in classes])
    for key, layer, c in zip(keys, layers, classes):
        where = f"{path}/{key}/vars"
        sub = h5.child(group, key, f"{path}/{key}", "group", optional=not layer.weights)
        if sub is None:  # a layer without weights may have no group
            continue
        if not isinstance(c, str):  # a nested Sequential
            inner = h5.child(sub, "layers", f"{path}/{key}/layers", "group",
                             optional=not layer.weights)
            if inner is not None:
                _read_layers(h5, inner, f"{path}/{key}/layers", layer.layers, c[1], values,
                             counts)
            continue
        v = h5.child(sub, "vars", where, "group", optional=not layer.weights)
        if v is None:
            continue
        n = h5.count(v, where)
        variables = _variables(layer)
        if n != len(variables):
            h5.fail(f"{h5.what}: {where} holds {n} variables; layer {layer.name!r} has "
                   f"{len(variables)}.")
        values += [h5.array(v, str(i), f"{where}/{i}", w.shape)
                   for i, w in enumerate(layer.weights)]
        if len(variables) > len(layer.weights):  # Normalization's count, an int
            counts.append((variables[-1], h5.array(v, str(n - 1), f"{where}/{n - 1}", (),
                                                   kinds="i")))
    try:
        extra = [k for k in group if k not in keys]
    except h5.ERRORS as e:
        h5.fail(f"{h5.what}: cannot read the group {path}: {e}")
    for k in extra:  # Keras ignores these; weights there mean another architecture
        sub = h5.child(group, k, f"{path}/{k}", "group")
        v = h5.child(sub, "vars", f"{path}/{k}/vars", "group", optional=True)
        if v is not None and h5.count(v, f"{path}/{k}/vars"):
            h5.fail(f"{h5.what} holds weights for {path}/{k}, a layer the model does not have "
                   f"(its layers: {keys}).")


def _keras_classes(model: Sequential) -> list[Any]:
    """The Keras class of each of the model's layers (their keys in a weights file), a nested
    model's as ("Sequential", its classes)."""
    return [_keras_class(layer) if isinstance(layer, layers_module.Layer)
            else ("Sequential", _keras_classes(layer)) for layer in model.layers]


def _keras_class(layer: layers_module.Layer) -> str:
    """The Keras class a fastnn layer is written as (its key in a weights file)."""
    kind = type(layer)
    if kind is layers_module.Activation:
        act = cast(layers_module.Activation, layer)
        return _activation_layer(act.activation, act.name, act.dtype)[0]
    if kind in (layers_module.Dense, layers_module.Flatten, layers_module.Dropout) or \
            kind.__name__ in _NEW_LAYERS + ("ReLU", "LeakyReLU", "Softmax"):
        return kind.__name__
    raise ValueError(f"layer {layer.name!r}: {kind.__name__} has no Keras weights layout.")


def _check_off(f: _File, cfg: dict[str, Any], off: Mapping[str, object], what: str) -> None:
    """Every key of cfg is a known option set to what means "off" in off (a value, or a tuple
    of accepted types); else UnsupportedError."""
    for key, value in cfg.items():
        if key not in off:
            f.unsupported(f"the {what} option {key!r} is not supported by fastnn.")
        want = off[key]
        if isinstance(want, tuple):  # any value of these types (exactly: a bool is no int)
            ok = type(value) in want
        else:
            ok = value == want and type(value) is type(want)
        if not ok:
            f.unsupported(f"{what}({key}={_files.short(value)}) is not supported by fastnn.")


def _read_optimizer(f: _File, value: Any) -> optimizers.Optimizer:
    if type(value) is str:
        if value.lower() not in {k.lower() for k in _OPTIMIZERS}:
            f.unsupported(f"the optimizer {value!r} is not supported by fastnn.")
        return optimizers.get(value)
    if value is None:
        f.unsupported("a compile_config without an optimizer is not supported by fastnn.")
    cls, cfg = _keras_object(f, value, "compile_config.optimizer")
    if cls not in _OPTIMIZERS:
        f.unsupported(f"the optimizer {cls} is not supported by fastnn (it has "
                      f"{sorted(_OPTIMIZERS)}).")
    cfg = dict(f.check(cfg, "dict", "compile_config.optimizer.config"))
    kwargs = {k: cfg.pop(k) for k in _OPTIMIZER_KEYS[cls] + _OPTIMIZER_BASE if k in cfg}
    for flag in ("nesterov", "amsgrad", "centered", "use_ema"):
        if flag in kwargs:
            f.check(kwargs[flag], "bool", f"compile_config.optimizer.config.{flag}")
    name = f.check(cfg.pop("name", None), "str", "compile_config.optimizer.config.name", null=True)
    lr = cfg.pop("learning_rate", None)
    wd = cfg.pop("weight_decay", None)
    _check_off(f, cfg, _OPTIMIZER_OFF, cls)
    if isinstance(lr, dict):
        scls, scfg = _keras_object(f, lr, "compile_config.optimizer.config.learning_rate")
        if scls not in _SCHEDULES:
            f.unsupported(f"the learning-rate schedule {scls} is not supported by fastnn (it "
                          f"has {sorted(_SCHEDULES)}).")
        scfg = dict(f.check(scfg, "dict", "the learning-rate schedule's config"))
        scfg.pop("name", None)
        if "staircase" in scfg:
            f.check(scfg["staircase"], "bool", "the learning-rate schedule's staircase")
        lr = _SCHEDULES[scls](**scfg)
    if lr is not None:
        kwargs["learning_rate"] = lr
    if wd is not None or cls == "AdamW":
        kwargs["weight_decay"] = wd
    return _OPTIMIZERS[cls](name=name, **kwargs)


def _read_loss(f: _File, value: Any) -> losses.Loss:
    if value is None:
        f.unsupported("a compile_config without a loss is not supported by fastnn.")
    name: Any  # (parsed JSON until checked below)
    cfg: dict[str, Any] | None = None
    if type(value) is str:
        name = value
    else:
        name, cfg = _keras_object(f, value, "compile_config.loss")
        if name == "function":
            name, cfg = cfg, None
    known = losses._CLASSES if cfg is not None else {n: None for n in losses.NAMES}
    if type(name) is not str or name not in known:
        f.unsupported(f"the loss {_files.short(name)} is not supported by fastnn (it has "
                      f"{losses.NAMES}).")
    if cfg is None:
        return losses.get(name)
    cfg = dict(f.check(cfg, "dict", "compile_config.loss.config"))
    if "from_logits" in cfg:
        f.check(cfg["from_logits"], "bool", "compile_config.loss.config.from_logits")
    cfg.pop("dtype", None)
    if cfg.get("reduction", "sum_over_batch_size") in (None, "none"):
        f.unsupported(f"the loss {name} with reduction={cfg['reduction']!r} (no scalar to "
                      "train on) is not supported by fastnn.")
    try:
        return losses.deserialize({"class_name": name, "config": cfg})
    except (TypeError, ValueError) as e:
        f.unsupported(f"the loss {name} with config {_files.short(cfg)} is not supported by "
                      f"fastnn: {e}")


def _read_metrics(f: _File, value: Any, key: str = "metrics") -> list[str]:
    if value is None:
        return []
    if type(value) is not list:
        f.unsupported(f"metrics of the form {_files.short(value)} (several outputs) are not "
                      "supported by fastnn.")
    out = []
    name: str | None  # (None: a metric class fastnn does not have)
    for i, m in enumerate(value):
        where = f"compile_config.{key}[{i}]"
        if type(m) is str:
            name = m
        elif type(m) is not dict:
            f.unsupported(f"{where}: metrics of the form {_files.short(m)} are not supported by "
                          "fastnn.")
        else:
            cls, cfg = _keras_object(f, m, where)
            if cls == "function":
                name = cfg
            else:
                cfg = f.check(cfg if cfg is not None else {}, "dict", f"{where}.config")
                extra = {k: v for k, v in cfg.items() if k not in ("name", "dtype")}
                name = _METRIC_CLASSES.get(cls)
                if name is None or extra not in ({}, {"threshold": 0.5}):
                    f.unsupported(f"{where}: the metric {cls}"
                                  f"{'(' + _files.short(extra) + ')' if extra else ''} is not "
                                  "supported by fastnn.")
        if name not in _METRIC_NAMES:
            f.unsupported(f"{where}: the metric {_files.short(name)} is not supported by fastnn (it "
                          f"has {list(_METRIC_NAMES)}).")
        out.append(name)
    return out


def _compile(f: _File, model: Sequential, cc: Any) -> None:
    """Compile model as the compile_config says (UnsupportedError if fastnn lacks any of it)."""
    f.check(cc, "dict", "compile_config")
    lw = cc.get("loss_weights")
    number = _files.KINDS["number"][0]
    if not (lw is None or number(lw) or (type(lw) is list and len(lw) == 1 and number(lw[0]))):
        f.unsupported(f"compile_config.loss_weights {_files.short(lw)} is not supported by "
                      "fastnn (one output: a number or a list of one number).")
    try:
        optimizer = _read_optimizer(f, cc.get("optimizer", "rmsprop"))
        loss = _read_loss(f, cc.get("loss"))
        metrics = _read_metrics(f, cc.get("metrics"))
        weighted = _read_metrics(f, cc.get("weighted_metrics"), "weighted_metrics")
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics, loss_weights=lw,
                      weighted_metrics=weighted or None)
    except (UnsupportedError, FileFormatError):
        raise
    except (ValueError, TypeError) as e:  # refused by a constructor: a poisoned value
        f.fail(f"invalid compile settings: {e}")


def _read_optimizer_state(h5: _H5, model: Sequential) -> None:
    """The optimizer variables (Keras' order) into the compiled model's optimizer: all of them,
    or only iterations (and learning_rate) when the file's optimizer had not stepped yet."""
    opt, weights = model.optimizer, model.trainable_weights
    g = h5.child(h5.file, "optimizer", "the group optimizer", "group", optional=True)
    v = None if g is None else h5.child(g, "vars", "optimizer/vars", "group", optional=True)
    if v is None:
        return
    groups = _slot_groups(opt)
    slots = [s for grp in groups for s in grp]
    scalars = 1 + (not _has_schedule(opt))
    nadam = type(opt).__name__ == "Nadam"
    n_extra = len(_optimizer_extras(opt))
    full = scalars + (n_extra + len(slots)) * len(weights) + nadam
    n = h5.count(v, "optimizer/vars")
    if n not in (0, scalars, full):
        h5.fail(f"{h5.what}: optimizer/vars holds {n} variables; a {type(opt).__name__} for this "
               f"model has {full} (or {scalars} before its first step).")
    if n == 0:
        return
    it = int(h5.array(v, "0", "optimizer/vars/0 (iterations)", (), kinds="i"))
    if not 0 <= it < 2**63 - 1:
        h5.fail(f"{h5.what}: Expected iterations in [0, 2**63 - 1). Received: {it}")
    lr = None
    if scalars == 2:
        lr = float(h5.array(v, "1", "optimizer/vars/1 (learning_rate)", ()))
        if not math.isfinite(lr) or lr < 0:
            h5.fail(f"{h5.what}: Expected a finite learning rate >= 0. Received: {lr}")
    if n == full:
        per_slot: dict[str, list[Any]]  # (None until each array is read)
        per_slot, k = {s: [None] * len(weights) for s in slots}, scalars
        extras = []
        for e in range(n_extra):
            extras.append([h5.array(v, str(k + i), f"optimizer/vars/{k + i}", w.shape)
                           for i, w in enumerate(weights)])
            k += len(weights)
        for grp in groups:
            for i, w in enumerate(weights):
                for s in grp:
                    a = h5.array(v, str(k), f"optimizer/vars/{k} ({s} of weight {i})", w.shape)
                    if not np.isfinite(a).all():
                        h5.fail(f"{h5.what}: optimizer/vars/{k} holds NaN or Inf; training from "
                               "it would produce NaN.")
                    per_slot[s][i] = a
                    k += 1
        if nadam:  # fastnn recomputes u_product from iterations
            u = h5.array(v, str(k), f"optimizer/vars/{k} (u_product)", ())
            if not np.isfinite(u):
                h5.fail(f"{h5.what}: optimizer/vars/{k} holds NaN or Inf.")
        model.build_optimizer()
        for arrays, bufs in zip(extras, _optimizer_extras(opt)):
            flat, start = np.concatenate([a.reshape(-1) for a in arrays]), 0
            if not np.isfinite(flat).all():
                h5.fail(f"{h5.what}: an optimizer average or accumulator holds NaN or Inf.")
            for buf in bufs:
                buf.reshape(-1)[...] = flat[start:start + buf.size]
                start += buf.size
        if slots:  # fastnn's state: per parameter buffer, each slot, flat
            mine, ns = opt.variables, len(slots)
            for j, s in enumerate(slots):
                flat = np.concatenate([a.reshape(-1) for a in per_slot[s]])
                start = 0
                for buf in mine[j::ns]:
                    buf.reshape(-1)[...] = flat[start:start + buf.size]
                    start += buf.size
    opt.calls = it
    if lr is not None and np.float32(lr) != np.float32(opt.learning_rate):
        opt.learning_rate = lr  # changed since the config was written (else keep its digits)


def load_keras(filepath: StrOrBytesPath, compile: bool = True) -> Sequential:
    """Read a Keras 3 `.keras` file (written by Keras 3 or by save_keras) as a fastnn Sequential
    with the same weights; compiled, with its optimizer state, when its compile_config is one
    fastnn understands (else uncompiled, with a warning naming what is not; compile=False skips
    it).  Raises FileFormatError for a bad file, UnsupportedError (a ValueError) naming a layer
    or option fastnn does not have; never executes code from the file."""
    f = _Archive(filepath)
    try:
        top = f.config()
        model, classes, count = _model(f, top)
        limit = _h5_limit(count, len(model.layers), len(model.weights))
        h5 = _H5(f.path, io.BytesIO(f.read(_WEIGHTS, limit)), _WEIGHTS)
        try:
            _read_weights(h5, model, classes)
            cc = top.get("compile_config")
            if compile and cc:
                try:
                    _compile(f, model, cc)
                except UnsupportedError as e:  # raised before model.compile
                    warnings.warn(f"{e} The model is loaded uncompiled.", stacklevel=2)
                else:
                    _read_optimizer_state(h5, model)
        finally:
            h5.close()
        return model
    finally:
        f.close()


def load_weights_h5(model: Sequential, filepath: StrOrBytesPath) -> None:
    """Read a Keras 3 `.weights.h5` file (Keras' model.save_weights, or save_weights_h5) into
    this built model: the layers' variables, matched by Keras' layer keys (dense, dense_1, ...)
    and checked for count, shape and dtype (the optimizer's are not read).  FileFormatError
    for a file that is bad or does not fit the model; the model is unchanged then."""
    _require_built(model, "load weights into")
    path = _files.path_str(filepath)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No weights file at {path!r}")
    classes = _keras_classes(model)
    limit = _h5_limit(sum(w.size for w in model.weights), len(model.layers),
                      len(model.weights))
    size = os.path.getsize(path)
    if size > limit:
        raise FileFormatError(f"{path!r}: Expected at most {limit} bytes for this model's "
                              f"weights. Received: {size} bytes")
    h5 = _H5(path, path, "the weights file")
    try:
        try:
            legacy = "layers" not in h5.file and "layer_names" in h5.file.attrs
        except h5.ERRORS as e:
            h5.fail(f"the weights file cannot be read: {e}")
        if legacy:
            h5.fail("Keras 2's legacy HDF5 weights layout (layer_names) is not read by fastnn.")
        _read_weights(h5, model, classes)
    finally:
        h5.close()
