"""Export a model for other runtimes, as Keras 3's `model.export(filepath, format=...)`.

    model.export("m.onnx", format="onnx")          # Sequential.export calls export() below

    import onnxruntime as ort
    session = ort.InferenceSession("m.onnx")
    y = session.run(["y"], {"x": x.astype("float32")})[0]     # model.predict(x), to rounding

The file is an ONNX model (opset OPSET = 17, IR version 8: onnxruntime supports them from
1.13 on; checked with 1.15.1 and 1.32.0) with one input "x" of shape [batch, *input_shape]
and one output "y" of shape [batch, *output_shape]; "batch" is a symbolic dimension, so any
batch size runs.
Both have the model's dtype: float32, or float64 for a float64 model.  Each fastnn layer
becomes a group of nodes named after it ("<layer name>/..."), its weights initializers named
"<layer name>/kernel" and "<layer name>/bias":

    Dense           MatMul (x @ kernel), Add (bias; none when use_bias=False), the activation
    Activation      the activation (Identity for linear)
    Flatten         Flatten(axis=1)
    Dropout         Identity: dropout is the identity at inference, as in predict
    (and the layers of issue #11: see "the layers of issue #11" below)

    linear          nothing (Identity in an Activation layer)
    relu, sigmoid,
    tanh            Relu, Sigmoid, Tanh
    softmax         Softmax(axis=-1), over the last axis as fastnn's
    log_softmax     LogSoftmax(axis=-1)
    leaky_relu      LeakyRelu(alpha)                 float64: Where(x > 0, x, alpha * x)
    (relu with only negative_slope is leaky_relu, relu(max_value=6) relu6)
    relu (other     Where(x > threshold, Min(Max(x, 0), max_value), negative_slope * (x -
     arguments)     threshold)) (no Max without max_value, as Keras)
    relu6           Min(Max(x, 0), 6)
    elu             Elu(alpha)                       float64: Where(x > 0, x,
                                                              alpha * (exp(min(x, 0)) - 1))
    selu            Selu(alpha, gamma)               float64: scale * the elu form
    gelu            0.5 * x * (1 + Erf(x / sqrt 2)), the exact gelu (Keras' approximate=False);
                    float64: x * Phi(x) with Phi from erfc, see _gelu_float64 below;
                    approximate=True: x * Sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)), Keras'
                    x/2 (1 + tanh(...)) without its cancellation for x < -3
    silu            x * Sigmoid(x)
    softplus        Softplus                         float64: Max(x, 0) + log1p(Exp(-Abs(x)))
    softsign        Softsign                         float64: x / (1 + Abs(x))
    hard_sigmoid    HardSigmoid(alpha=1/6, beta=1/2) (Keras 3's relu6(x + 3) / 6)
                                                     float64: Min(Max(x + 3, 0), 6) / 6
    hard_silu       x * the hard_sigmoid above (HardSwish is the same formula)
    exponential     Exp
    mish            x * Tanh(softplus(x))
    hard_tanh       Min(Max(x, -1), 1)
    hard_shrink     Where(Abs(x) > threshold, x, 0)
    soft_shrink     Where(x > t, x - t, Where(x < -t, x + t, 0))
    tanh_shrink     x - Tanh(x)
    threshold       Where(x > threshold, x, default_value)
    log_sigmoid     -softplus(-x), the softplus above
    celu            Celu(alpha)                      float64: Where(x > 0, x,
                                                              alpha * (exp(min(x, 0) / alpha) - 1))
    squareplus      Where(x < 0, b / (2 (s + Abs(x))), (x + s) / 2), s = Sqrt(x * x + b), as
                    fastnn's kernels (no cancellation for x < 0)
    sparse_plus     Where(x < 1, Max(x + 1, 0)^2 / 4, x)
    sparse_sigmoid  Min(Max(x + 1, 0), 2) / 2
    sparsemax       over the last axis, in double (a float32 model Casts in and out, as the
                    kernels compute tau in double): z = TopK(x, all) descending, c =
                    CumSum(z), r = 1, 2, ... (a CumSum of ones), support 1 + r z > c, k its
                    size, tau = (sum of z over it - 1) / k, Max(x - tau, 0): the projection
                    onto the simplex (Keras 3.15's threshold is wrong, keras-team/keras#23425)
    (log1p(u) in float64: Log(w) * u / (w - 1), w = 1 + u, u where w == 1: Goldberg's
    accurate form, as ONNX has no Log1p)

The float64 forms are there because onnxruntime's CPU kernels of Elu, Erf, Selu, Softplus,
Softsign, HardSigmoid (and of LeakyRelu in recent opsets) are float32 only: written with ops it runs in double (Where,
Greater, Less, Min, Exp, Mul, Add, Sub, Div, Abs), a float64 model computes in float64
throughout and matches predict to float64 rounding.  Opset 17 is chosen for reach (the Gelu
op came in opset 20), so gelu is the Erf form, which onnxruntime fuses into its Gelu kernel
(it matches x / sqrt 2, not x * (1 / sqrt 2)).

Dense is MatMul + Add rather than Gemm: onnxruntime fuses either into its own Gemm kernels
for float32, and older versions (1.15) fuse Gemm + Relu into a float32-only FusedGemm even in
a float64 graph, which then fails to load.

The model is checked with `onnx.checker.check_model(..., full_check=True)` (which runs shape
inference) before it is written.  The file is written atomically: a temporary file in the
target's directory, renamed over it.  Weights of more than _MAX_INLINE_BYTES (protobuf's limit
of 2 GiB on one message) go instead to one external data file beside the model,
"<file name>.data", as ONNX prescribes (runtimes load it from there; that case is written
in place, not atomically).

Only the built model is exported (its current weights): an unbuilt one is refused, as Keras
does.  Exporting while `fit` runs in another thread reads the weights as they are at that
moment (see predict).  Needs the `onnx` package (`pip install onnx`); onnxruntime only to run
the file.
"""
from __future__ import annotations

import functools
import math
import os
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, cast

import numpy as np

from fastnn import _codes, _files, activations
from fastnn import layers as layers_module

if TYPE_CHECKING:
    import onnx
    from _typeshed import StrOrBytesPath
    from numpy.typing import ArrayLike, NDArray

    from fastnn.activations import Spec
    from fastnn.models import Sequential

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17 (onnx 1.12): the oldest runtimes of opset 17 load it
FORMATS = ("onnx",)
INPUT_NAME, OUTPUT_NAME = "x", "y"
_MAX_INLINE_BYTES = (1 << 31) - (1 << 24)  # 2 GiB, less room for the graph itself


def export(model: Sequential, filepath: StrOrBytesPath, format: str = "onnx",
           verbose: bool = False) -> None:
    """Export `model` to `filepath` in `format` (Keras 3's model.export); only "onnx" (the
    default) is supported.  verbose=True (default False) prints where the file went."""
    if not isinstance(format, str) or format not in FORMATS:
        raise ValueError(f"Expected format to be one of {list(FORMATS)}: fastnn exports ONNX "
                         f"models only. Received: format={format!r}")
    export_onnx(model, filepath)
    if verbose:
        print(f"Saved artifact at '{os.fsdecode(filepath)}'.")


def export_onnx(model: Sequential, filepath: StrOrBytesPath) -> None:
    """Write the built `model` as an ONNX file at `filepath` (str or os.PathLike); see the
    module docstring for the graph.  Returns None."""
    filepath = _check_path(filepath)
    onnx = _import_onnx()
    proto = to_onnx(model, check=False)
    if _weight_bytes(proto) <= _MAX_INLINE_BYTES:
        onnx.checker.check_model(proto, full_check=True)
        data = proto.SerializeToString()
        _files.write_atomic(filepath, lambda f: f.write(data))
        return
    # too large for one protobuf message: the weights go to "<file name>.data" beside it
    from onnx import external_data_helper
    location = os.path.basename(filepath) + ".data"
    external_data_helper.convert_model_to_external_data(
        proto, all_tensors_to_one_file=True, location=location, size_threshold=1024)
    data_path = os.path.join(os.path.dirname(filepath), location)
    if os.path.lexists(data_path):  # onnx appends to an existing data file
        os.remove(data_path)
    onnx.save_model(proto, filepath)
    onnx.checker.check_model(filepath, full_check=True)


def to_onnx(model: Sequential, check: bool = True) -> onnx.ModelProto:
    """The built `model` as an onnx.ModelProto (the graph export_onnx writes), e.g. for
    `onnxruntime.InferenceSession(to_onnx(model).SerializeToString())`.  check=True (the
    default) runs onnx.checker.check_model on it."""
    onnx = _import_onnx()
    from onnx import helper

    dtype = _check_model(model)
    g = _Graph(dtype)
    t = INPUT_NAME
    for layer in model._leaves():  # (a nested model's layers in its place)
        t = g.layer(layer, t)
    # every layer adds at least one node, so the last node makes the output: name it "y"
    g.nodes[-1].output[0] = OUTPUT_NAME

    elem = helper.np_dtype_to_tensor_dtype(dtype)
    batch: list[str | int | None] = ["batch"]
    # (the shapes of a built model, as _check_model made sure)
    input_shape, output_shape = model.input_shape, model.output_shape
    graph = helper.make_graph(
        g.nodes, model.name or "sequential",
        [helper.make_tensor_value_info(INPUT_NAME, elem, batch + list(input_shape[1:]))],
        [helper.make_tensor_value_info(OUTPUT_NAME, elem, batch + list(output_shape[1:]))],
        initializer=g.initializers)
    from fastnn import __version__
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="fastnn", producer_version=__version__,
                              doc_string=f"fastnn Sequential model {model.name!r}")
    proto.ir_version = IR_VERSION
    if check:
        onnx.checker.check_model(proto, full_check=True)
    return proto


# ---- checks ---------------------------------------------------------------------------------

def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as e:
        raise ImportError("Exporting to ONNX needs the onnx package: pip install onnx "
                          "(and onnxruntime to run the exported model)") from e
    return onnx


def _check_path(filepath: object) -> str:
    """filepath (str, bytes or os.PathLike) as a str."""
    if not isinstance(filepath, (str, bytes, os.PathLike)):
        raise TypeError(f"Expected filepath to be a str or os.PathLike. Received: {filepath!r}")
    filepath = os.fsdecode(os.fspath(filepath))
    if not filepath:
        raise ValueError("Expected a filepath to write the model to. Received: ''")
    if os.path.isdir(filepath):
        raise ValueError(f"Expected filepath to name a file. Received a directory: {filepath!r}")
    return filepath


_KINDS = (layers_module.Dense, layers_module.Activation, layers_module.Flatten,
          layers_module.Dropout, layers_module.BatchNormalization,
          layers_module.LayerNormalization, layers_module.ReLU, layers_module.LeakyReLU,
          layers_module.PReLU, layers_module.Softmax, layers_module.GaussianNoise,
          layers_module.Reshape, layers_module.Rescaling, layers_module.Normalization)


def _check_model(model: Sequential) -> np.dtype[Any]:
    """The model's dtype, once the model is known to be exportable."""
    if not getattr(model, "built", False) or not getattr(model, "layers", None):
        raise ValueError("Expected a built model before export. Build it first: give "
                         "input_shape= to the first layer (or start with layers.Input(shape=...)), "
                         "call model.build((None, *input_shape)), or fit/predict on data.")
    dtype = np.dtype(model._leaves()[0].dtype)  # what predict converts the inputs to
    for layer in model._leaves():
        if not isinstance(layer, _KINDS):
            raise ValueError(f"Expected layers of the types {[k.__name__ for k in _KINDS]} for "
                             f"ONNX export. Received: layer {layer.name!r} of type "
                             f"{type(layer).__name__}")
        if isinstance(layer, (layers_module.Dense, layers_module.Activation)):
            if np.dtype(layer.dtype) != dtype:
                raise ValueError(f"Expected every layer in the model's dtype {dtype.name} (the "
                                 f"first layer's), as predict does. Received: layer "
                                 f"{layer.name!r} with dtype {np.dtype(layer.dtype).name}")
            if _CODE_NAMES[layer.activation.code] not in _ACTIVATIONS:
                raise ValueError(f"Expected activations in {sorted(_ACTIVATIONS)} for ONNX "
                                 f"export. Received: {layer.activation!r} in layer "
                                 f"{layer.name!r}")
    return dtype


def _weight_bytes(proto: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in proto.graph.initializer)


# ---- the graph ------------------------------------------------------------------------------

class _Graph:
    """Nodes and initializers in the making, every name unique (ONNX's single assignment)."""

    def __init__(self, dtype: np.dtype[Any]) -> None:
        self.dtype = dtype
        self.nodes: list[onnx.NodeProto]
        self.initializers: list[onnx.TensorProto]
        self.nodes, self.initializers = [], []
        self._names = {INPUT_NAME, OUTPUT_NAME}
        self._prefixes: set[str] = set()

    def _unique(self, name: str) -> str:
        return _fresh(name, self._names)

    def prefix(self, layer_name: str) -> str:
        """A name prefix for one layer's nodes and weights (layer names may repeat)."""
        return _fresh(layer_name, self._prefixes)

    def weight(self, name: str, array: ArrayLike) -> str:
        """An initializer holding `array` (a copy, in the graph's dtype); returns its name."""
        from onnx import numpy_helper
        name = self._unique(name)
        self.initializers.append(
            numpy_helper.from_array(np.ascontiguousarray(array, dtype=self.dtype), name))
        return name

    def const(self, name: str, value: float) -> str:
        """A scalar constant in the graph's dtype."""
        return self.weight(name, np.asarray(value, dtype=self.dtype))

    def node(self, op: str, inputs: Iterable[str], name: str, **attrs: Any) -> str:
        """Add node `op` on `inputs`; returns the name of its (one) output."""
        from onnx import helper
        name = self._unique(name)
        self.nodes.append(helper.make_node(op, list(inputs), [name], name=name, **attrs))
        return name

    def layer(self, layer: layers_module.Layer, t: str) -> str:
        p = self.prefix(layer.name)
        if isinstance(layer, layers_module.Dense):
            kernel = cast("NDArray[Any]", layer.kernel)  # a built model's
            t = self.node("MatMul", [t, self.weight(f"{p}/kernel", kernel)], f"{p}/MatMul")
            if layer.use_bias:
                bias = cast("NDArray[Any]", layer.bias)  # (use_bias: an array)
                t = self.node("Add", [t, self.weight(f"{p}/bias", bias)], f"{p}/Add")
            return self.activation(layer.activation, t, p)
        if isinstance(layer, layers_module.Activation):
            out = self.activation(layer.activation, t, p)
            return self.node("Identity", [t], f"{p}/Identity") if out == t else out
        if isinstance(layer, layers_module.Flatten):
            return self.node("Flatten", [t], f"{p}/Flatten", axis=1)
        if isinstance(layer, (layers_module.Dropout, layers_module.GaussianNoise)):
            return self.node("Identity", [t], f"{p}/Identity")
        return _NEW_LAYERS[type(layer)](self, layer, t, p)

    def ints(self, name: str, values: Iterable[int]) -> str:
        """An int64 initializer (a shape); returns its name."""
        from onnx import numpy_helper
        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.array(list(values), np.int64), name))
        return name

    def activation(self, spec: Spec, t: str, p: str) -> str:
        return _ACTIVATIONS[_CODE_NAMES[spec.code]](self, t, p, spec.params)


if TYPE_CHECKING:
    # an activation's nodes: (graph, input name, name prefix, kernel parameters) -> output name
    _Activation = Callable[[_Graph, str, str, Sequence[float]], str]

_CODE_NAMES = {code: name for name, code in _codes.ACTIVATIONS.items()}


def _linear(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    return t


def _op(op: str, **attrs: Any) -> _Activation:
    return lambda g, t, p, params: g.node(op, [t], f"{p}/{op}", **attrs)


def _op32(op: str, composed: _Activation, **attrs: Any) -> _Activation:
    """The ONNX op in float32; `composed` (ops onnxruntime runs in double) in float64."""
    def act(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
        if g.dtype == np.float32:
            return g.node(op, [t], f"{p}/{op}", **attrs)
        return composed(g, t, p, params)
    return act


def _bin(g: _Graph, op: str, a: str, b: str, p: str) -> str:
    return g.node(op, [a, b], f"{p}/{op}")


def _clip(g: _Graph, t: str, p: str, lo: float, hi: float) -> str:
    """Min(Max(t, lo), hi), either side left out when infinite (NaN passes, as Keras')."""
    if not math.isinf(lo):
        t = _bin(g, "Max", t, g.const(f"{p}/lo", lo), p)
    if not math.isinf(hi):
        t = _bin(g, "Min", t, g.const(f"{p}/hi", hi), p)
    return t


def _relu_general(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    slope, hi, thr = params
    c = _clip(g, t, p, -math.inf if math.isinf(hi) else 0.0, hi)
    below = _bin(g, "Mul", _bin(g, "Sub", t, g.const(f"{p}/threshold", thr), p),
                 g.const(f"{p}/slope", slope), p)
    above = _bin(g, "Greater", t, g.const(f"{p}/threshold", thr), p)
    return g.node("Where", [above, c, below], f"{p}/Where")


def _relu6(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    return _clip(g, t, p, 0.0, 6.0)


def _hard_sigmoid64(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    c = _clip(g, _bin(g, "Add", t, g.const(f"{p}/three", 3), p), p, 0.0, 6.0)
    return _bin(g, "Div", c, g.const(f"{p}/six", 6), p)


def _hard_silu(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    return _bin(g, "Mul", t, _ACTIVATIONS["hard_sigmoid"](g, t, p, params), p)


def _log1p(g: _Graph, u: str, p: str) -> str:
    """log(1 + u) to float64 accuracy for small u: Log(w) * u / (w - 1), w = 1 + u (u itself
    where w rounds to 1)."""
    w = _bin(g, "Add", u, g.const(f"{p}/one", 1), p)
    wm1 = _bin(g, "Sub", w, g.const(f"{p}/one", 1), p)
    exact = _bin(g, "Div", _bin(g, "Mul", g.node("Log", [w], f"{p}/Log"), u, p), wm1, p)
    tiny = _bin(g, "Equal", w, g.const(f"{p}/one", 1), p)
    return g.node("Where", [tiny, u, exact], f"{p}/Where")


def _softplus64(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    """max(x, 0) + log1p(exp(-|x|)), as fastnn's kernels."""
    e = g.node("Exp", [g.node("Neg", [g.node("Abs", [t], f"{p}/Abs")], f"{p}/Neg")], f"{p}/Exp")
    return _bin(g, "Add", _bin(g, "Max", t, g.const(f"{p}/zero", 0), p), _log1p(g, e, p), p)


def _softsign64(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    d = _bin(g, "Add", g.node("Abs", [t], f"{p}/Abs"), g.const(f"{p}/one", 1), p)
    return _bin(g, "Div", t, d, p)


def _selu64(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    e = _elu(g, t, p, (activations.SELU_ALPHA,))
    return _bin(g, "Mul", e, g.const(f"{p}/scale", activations.SELU_SCALE), p)


def _silu(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    return _bin(g, "Mul", t, g.node("Sigmoid", [t], f"{p}/Sigmoid"), p)


def _mish(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    sp = _ACTIVATIONS["softplus"](g, t, p, params)
    return _bin(g, "Mul", t, g.node("Tanh", [sp], f"{p}/Tanh"), p)


def _gelu_tanh(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    """Keras' approximate gelu x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), as
    fastnn's kernels write it: x * Sigmoid(2u) (no cancellation for x < -3)."""
    x3 = _bin(g, "Mul", _bin(g, "Mul", t, t, p), t, p)
    inner = _bin(g, "Add", t, _bin(g, "Mul", x3, g.const(f"{p}/c", 0.044715), p), p)
    s = g.node("Sigmoid", [_bin(g, "Mul", inner, g.const(f"{p}/k2", 2 * math.sqrt(2 / math.pi)),
                                p)], f"{p}/Sigmoid")
    return _bin(g, "Mul", t, s, p)


def _leaky_relu(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    alpha = params[0]
    if g.dtype == np.float32:
        return g.node("LeakyRelu", [t], f"{p}/LeakyRelu", alpha=float(alpha))
    return _where_positive(g, t, p, g.node("Mul", [t, g.const(f"{p}/alpha", alpha)], f"{p}/Mul"))


def _elu(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    alpha = params[0]
    if g.dtype == np.float32:
        return g.node("Elu", [t], f"{p}/Elu", alpha=float(alpha))
    e = g.node("Exp", [g.node("Min", [t, g.const(f"{p}/zero", 0)], f"{p}/Min")], f"{p}/Exp")
    em1 = g.node("Sub", [e, g.const(f"{p}/one", 1)], f"{p}/Sub")
    return _where_positive(g, t, p, g.node("Mul", [em1, g.const(f"{p}/alpha", alpha)],
                                           f"{p}/Mul"))


def _where_positive(g: _Graph, t: str, p: str, otherwise: str) -> str:
    """Where(t > 0, t, otherwise), as fastnn's kernels write leaky_relu and elu."""
    positive = g.node("Greater", [t, g.const(f"{p}/zero", 0)], f"{p}/Greater")
    return g.node("Where", [positive, t, otherwise], f"{p}/Where")


def _gelu(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    if g.dtype == np.float32:  # 0.5 * x * (1 + erf(x / sqrt 2)): onnxruntime fuses this form
        s = g.node("Div", [t, g.const(f"{p}/sqrt2", math.sqrt(2))], f"{p}/Div")
        erf1 = g.node("Add", [g.node("Erf", [s], f"{p}/Erf"), g.const(f"{p}/one", 1)],
                      f"{p}/Add")
        half_x = g.node("Mul", [t, g.const(f"{p}/half", 0.5)], f"{p}/Mul")
        return g.node("Mul", [half_x, erf1], f"{p}/Mul")
    return _gelu_float64(g, t, p)


def _gelu_float64(g: _Graph, t: str, p: str) -> str:
    """x * Phi(x) in float64 without Erf: Phi(-|x|) = erfc(z) / 2, z = |x| / sqrt 2, with
    erfc(z) = exp(-z^2) * R(z) and R the polynomial of _erfc_fit; Phi(x) = 1 - Phi(-x) for x >= 0.
    (Written from erfc, x * Phi(x) keeps its relative accuracy for negative x, where
    1 + erf(x / sqrt 2) cancels.)"""
    c, z_max, tmin, coef = _erfc_fit()
    z = g.node("Mul", [g.node("Abs", [t], f"{p}/Abs"), g.const(f"{p}/sqrt1_2", math.sqrt(0.5))],
               f"{p}/Mul")
    z = g.node("Min", [z, g.const(f"{p}/z_max", z_max)], f"{p}/Min")  # R's fitted range
    # u = the map of tau = c / (c + z) from [tmin, 1] onto [-1, 1]
    scale = 2 / (1 - tmin)
    u = g.node("Div", [g.const(f"{p}/c_scale", c * scale),
                       g.node("Add", [z, g.const(f"{p}/c", c)], f"{p}/Add")], f"{p}/Div")
    u = g.node("Add", [u, g.const(f"{p}/shift", -(tmin + 1) / (1 - tmin))], f"{p}/Add")
    r = g.const(f"{p}/r{len(coef) - 1}", coef[-1])  # Horner
    for k in range(len(coef) - 2, -1, -1):
        r = g.node("Add", [g.node("Mul", [r, u], f"{p}/Mul"), g.const(f"{p}/r{k}", coef[k])],
                   f"{p}/Add")
    # exp(-z^2) = exp(-x^2 / 2), from x (one rounding fewer than from z)
    x2 = g.node("Mul", [t, t], f"{p}/Mul")
    e = g.node("Exp", [g.node("Mul", [x2, g.const(f"{p}/minus_half", -0.5)], f"{p}/Mul")],
               f"{p}/Exp")
    q = g.node("Mul", [g.node("Mul", [e, r], f"{p}/Mul"), g.const(f"{p}/half", 0.5)],
               f"{p}/Mul")  # Phi(-|x|)
    negative = g.node("Less", [t, g.const(f"{p}/zero", 0)], f"{p}/Less")
    phi = g.node("Where", [negative, q,
                           g.node("Sub", [g.const(f"{p}/one", 1), q], f"{p}/Sub")], f"{p}/Where")
    return g.node("Mul", [t, phi], f"{p}/Mul")


# R(z) = erfc(z) exp(z^2) on [0, _ERFC_Z_MAX], as a polynomial in u, the affine map onto [-1, 1]
# of tau = c / (c + z): R is smooth and slowly varying in tau, so degree 18 reaches the
# accuracy of math.erfc(z) * exp(z^2) itself (relative error <= 3e-14 over the range, ~1e-15
# for z < 3).  Past z_max, erfc(z) < 3e-45: the clamp there changes only such tiny values.
_ERFC_Z_MAX, _ERFC_C, _ERFC_DEGREE = 10.0, 4.0, 18


@functools.lru_cache(maxsize=None)
def _erfc_fit() -> tuple[float, float, float, tuple[float, ...]]:
    """(c, z_max, tau_min, power-series coefficients in u): Chebyshev interpolation of R at
    degree _ERFC_DEGREE, converted to the power basis (its coefficients are all below 1 in
    magnitude, so Horner's rule in u loses nothing)."""
    c, z_max = _ERFC_C, _ERFC_Z_MAX
    tmin = c / (c + z_max)

    def r_of_tau(tau: NDArray[Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
        z = c / np.asarray(tau, dtype=np.float64) - c
        return np.array([math.erfc(v) * math.exp(v * v) for v in np.ravel(z)]).reshape(z.shape)

    cheb = np.polynomial.Chebyshev.interpolate(r_of_tau, _ERFC_DEGREE, domain=[tmin, 1])
    coef = np.polynomial.chebyshev.cheb2poly(cheb.coef)
    return c, z_max, tmin, tuple(float(v) for v in coef)


# Keras 3's further element-wise activations (issue #11), written as fastnn's kernels write them

def _hard_tanh(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    return _clip(g, t, p, -1.0, 1.0)


def _hard_shrink(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    outside = _bin(g, "Greater", g.node("Abs", [t], f"{p}/Abs"),
                  g.const(f"{p}/threshold", params[0]), p)
    return g.node("Where", [outside, t, g.const(f"{p}/zero", 0)], f"{p}/Where")


def _soft_shrink(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    thr, minus = g.const(f"{p}/threshold", params[0]), g.const(f"{p}/minus_threshold", -params[0])
    below = g.node("Where", [_bin(g, "Less", t, minus, p), _bin(g, "Add", t, thr, p),
                             g.const(f"{p}/zero", 0)], f"{p}/Where")
    return g.node("Where", [_bin(g, "Greater", t, thr, p), _bin(g, "Sub", t, thr, p), below],
                  f"{p}/Where")


def _tanh_shrink(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    return _bin(g, "Sub", t, g.node("Tanh", [t], f"{p}/Tanh"), p)


def _threshold(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    above = _bin(g, "Greater", t, g.const(f"{p}/threshold", params[0]), p)
    return g.node("Where", [above, t, g.const(f"{p}/default_value", params[1])], f"{p}/Where")


def _log_sigmoid(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    sp = _ACTIVATIONS["softplus"](g, g.node("Neg", [t], f"{p}/Neg"), p, ())
    return g.node("Neg", [sp], f"{p}/Neg")


def _celu(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    alpha = params[0]
    if g.dtype == np.float32:
        return g.node("Celu", [t], f"{p}/Celu", alpha=float(alpha))
    u = _bin(g, "Div", g.node("Min", [t, g.const(f"{p}/zero", 0)], f"{p}/Min"),
             g.const(f"{p}/alpha", alpha), p)
    em1 = _bin(g, "Sub", g.node("Exp", [u], f"{p}/Exp"), g.const(f"{p}/one", 1), p)
    return _where_positive(g, t, p, _bin(g, "Mul", em1, g.const(f"{p}/alpha", alpha), p))


def _squareplus(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    b = g.const(f"{p}/b", params[0])
    s = g.node("Sqrt", [_bin(g, "Add", _bin(g, "Mul", t, t, p), b, p)], f"{p}/Sqrt")
    pos = _bin(g, "Mul", _bin(g, "Add", t, s, p), g.const(f"{p}/half", 0.5), p)
    d = _bin(g, "Mul", _bin(g, "Add", s, g.node("Abs", [t], f"{p}/Abs"), p),
             g.const(f"{p}/two", 2), p)
    neg = _bin(g, "Div", b, d, p)
    return g.node("Where", [_bin(g, "Less", t, g.const(f"{p}/zero", 0), p), neg, pos],
                  f"{p}/Where")


def _sparse_plus(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    w = _clip(g, _bin(g, "Add", t, g.const(f"{p}/one", 1), p), p, 0.0, math.inf)
    q = _bin(g, "Mul", _bin(g, "Mul", w, w, p), g.const(f"{p}/quarter", 0.25), p)
    return g.node("Where", [_bin(g, "Less", t, g.const(f"{p}/one", 1), p), q, t], f"{p}/Where")


def _sparse_sigmoid(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    c = _clip(g, _bin(g, "Add", t, g.const(f"{p}/one", 1), p), p, 0.0, 2.0)
    return _bin(g, "Mul", c, g.const(f"{p}/half", 0.5), p)


def _sparsemax(g: _Graph, t: str, p: str, params: Sequence[float]) -> str:
    from onnx import TensorProto, helper, numpy_helper

    def const(name: str, value: Any, dtype: Any) -> str:  # a scalar of another dtype too
        name = g._unique(f"{p}/{name}")
        g.initializers.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    x = t if g.dtype == np.float64 else g.node("Cast", [t], f"{p}/Cast", to=TensorProto.DOUBLE)
    last = g.node("Shape", [x], f"{p}/Shape", start=-1)  # [m]
    z, idx = g._unique(f"{p}/TopK"), g._unique(f"{p}/TopK_indices")  # (two outputs)
    g.nodes.append(helper.make_node("TopK", [x, last], [z, idx], name=z, axis=-1, largest=1,
                                    sorted=1))
    axis = const("axis", -1, np.int64)
    one = const("one", 1.0, np.float64)
    c = g.node("CumSum", [z, axis], f"{p}/CumSum")
    r = g.node("CumSum", [g.node("Expand", [one, g.node("Shape", [x], f"{p}/Shape")],
                                 f"{p}/Expand"), axis], f"{p}/CumSum")
    support = _bin(g, "Greater", _bin(g, "Add", _bin(g, "Mul", r, z, p), one, p), c, p)
    axes = g.ints(f"{p}/axes", [-1])
    k = g.node("ReduceSum", [g.node("Cast", [support], f"{p}/Cast", to=TensorProto.DOUBLE),
                             axes], f"{p}/ReduceSum", keepdims=1)
    top = g.node("ReduceSum", [g.node("Where", [support, z, const("zero", 0.0, np.float64)],
                                      f"{p}/Where"), axes], f"{p}/ReduceSum", keepdims=1)
    tau = _bin(g, "Div", _bin(g, "Sub", top, one, p), k, p)
    y = _bin(g, "Max", _bin(g, "Sub", x, tau, p), const("zero", 0.0, np.float64), p)
    return y if g.dtype == np.float64 else g.node("Cast", [y], f"{p}/Cast",
                                                  to=TensorProto.FLOAT)


_ACTIVATIONS: dict[str, _Activation] = {
    "linear": _linear, "relu": _op("Relu"), "sigmoid": _op("Sigmoid"), "tanh": _op("Tanh"),
    "softmax": _op("Softmax", axis=-1), "leaky_relu": _leaky_relu, "elu": _elu, "gelu": _gelu,
    "relu_general": _relu_general, "gelu_tanh": _gelu_tanh, "silu": _silu,
    "softplus": _op32("Softplus", _softplus64), "softsign": _op32("Softsign", _softsign64),
    "selu": _op32("Selu", _selu64, alpha=activations.SELU_ALPHA, gamma=activations.SELU_SCALE),
    "hard_sigmoid": _op32("HardSigmoid", _hard_sigmoid64, alpha=1 / 6, beta=0.5),
    "hard_silu": _hard_silu, "exponential": _op("Exp"), "relu6": _relu6, "mish": _mish,
    "log_softmax": _op("LogSoftmax", axis=-1),
    "hard_tanh": _hard_tanh, "hard_shrink": _hard_shrink, "soft_shrink": _soft_shrink,
    "tanh_shrink": _tanh_shrink, "threshold": _threshold, "log_sigmoid": _log_sigmoid,
    "celu": _celu, "squareplus": _squareplus, "sparse_plus": _sparse_plus,
    "sparse_sigmoid": _sparse_sigmoid, "sparsemax": _sparsemax,
}


# ---- the layers of issue #11 (normalization, activation layers, reshaping, preprocessing) -----
#
#   BatchNormalization  inference (the moving statistics): BatchNormalization on 2-D float32
#                       inputs (features on axis 1, as ONNX wants them), else x * a + b with
#                       a = gamma / sqrt(moving_variance + epsilon), b = beta - moving_mean * a
#   LayerNormalization  LayerNormalization (opset 17) over the trailing axes it normalizes;
#                       float64: ReduceMean, Sub, Mul, Add, Sqrt, Div (the ops' epsilon
#                       attribute is a float32, off by 5e-8 relative for 1e-3)
#   ReLU                as the relu activation with the layer's arguments (Relu, LeakyRelu,
#                       relu6's Min(Max(x, 0), 6), or the Where form of relu_general above)
#   LeakyReLU           as the leaky_relu activation;  PReLU  PRelu (float64: Where)
#   Softmax             Softmax(axis)  (one axis)
#   Reshape             Reshape to (batch, *output shape);  GaussianNoise  Identity
#   Rescaling           Mul, Add;  Normalization  Sub, Div (invert: Mul, Add)
# Not exportable (a ValueError naming the layer): Softmax over several axes,
# LayerNormalization over axes that are not the trailing ones.


def _bn(g: _Graph, layer: Any, t: str, p: str) -> str:
    bn = cast(layers_module.BatchNormalization, layer)
    shape = cast("tuple[int, ...]", bn.input_shape)
    m = bn.moving_mean.shape[0]
    gamma = np.ones(m) if bn.gamma is None else bn.gamma
    beta = np.zeros(m) if bn.beta is None else bn.beta
    if len(shape) == 1 and g.dtype == np.float32:
        return g.node("BatchNormalization",
                      [t, g.weight(f"{p}/gamma", gamma), g.weight(f"{p}/beta", beta),
                       g.weight(f"{p}/moving_mean", bn.moving_mean),
                       g.weight(f"{p}/moving_variance", bn.moving_variance)],
                      f"{p}/BatchNormalization", epsilon=float(bn.epsilon))
    a = gamma / np.sqrt(bn.moving_variance.astype(np.float64) + bn.epsilon)
    b = beta - bn.moving_mean * a
    axis = bn.axis % (len(shape) + 1)
    bshape = [1] * len(shape)
    bshape[axis - 1] = m
    t = g.node("Mul", [t, g.weight(f"{p}/scale", a.reshape(bshape))], f"{p}/Mul")
    return g.node("Add", [t, g.weight(f"{p}/offset", b.reshape(bshape))], f"{p}/Add")


def _ln(g: _Graph, layer: Any, t: str, p: str) -> str:
    ln = cast(layers_module.LayerNormalization, layer)
    rank = len(cast("tuple[int, ...]", ln.input_shape)) + 1
    axes = [a % rank for a in cast("list[int]", ln.axis)]
    if axes != list(range(axes[0], rank)):
        raise ValueError(f"Expected LayerNormalization over trailing axes for ONNX export (its "
                         f"LayerNormalization op normalizes axes [axis, rank)). Received: layer "
                         f"{ln.name!r} with axis={ln.axis}")
    shape = [cast("tuple[int, ...]", ln.input_shape)[a - 1] for a in axes]
    gamma = np.ones(shape) if ln.gamma is None else ln.gamma
    if g.dtype != np.float32:  # written out: the op's epsilon attribute is a float32
        mean = g.node("ReduceMean", [t], f"{p}/ReduceMean", axes=axes, keepdims=1)
        d = g.node("Sub", [t, mean], f"{p}/Sub")
        var = g.node("ReduceMean", [g.node("Mul", [d, d], f"{p}/Mul")], f"{p}/ReduceMean",
                     axes=axes, keepdims=1)
        std = g.node("Sqrt", [g.node("Add", [var, g.const(f"{p}/epsilon", ln.epsilon)],
                                     f"{p}/Add")], f"{p}/Sqrt")
        y = g.node("Mul", [g.node("Div", [d, std], f"{p}/Div"), g.weight(f"{p}/gamma", gamma)],
                   f"{p}/Mul")
        return y if ln.beta is None else g.node("Add", [y, g.weight(f"{p}/beta", ln.beta)],
                                                f"{p}/Add")
    inputs = [t, g.weight(f"{p}/gamma", gamma)]
    if ln.beta is not None:
        inputs.append(g.weight(f"{p}/beta", ln.beta))
    return g.node("LayerNormalization", inputs, f"{p}/LayerNormalization", axis=axes[0],
                  epsilon=float(ln.epsilon))


def _relu_layer(g: _Graph, layer: Any, t: str, p: str) -> str:
    """As the relu activation with the layer's arguments (the kernel it runs)."""
    return g.activation(cast(layers_module.ReLU, layer)._kernel, t, p)


def _leaky_layer(g: _Graph, layer: Any, t: str, p: str) -> str:
    return g.activation(cast(layers_module.LeakyReLU, layer)._spec, t, p)


def _prelu(g: _Graph, layer: Any, t: str, p: str) -> str:
    alpha = g.weight(f"{p}/alpha", cast("NDArray[Any]", cast(layers_module.PReLU, layer).alpha))
    if g.dtype == np.float32:
        return g.node("PRelu", [t, alpha], f"{p}/PRelu")
    return _where_positive(g, t, p, g.node("Mul", [t, alpha], f"{p}/Mul"))


def _softmax_layer(g: _Graph, layer: Any, t: str, p: str) -> str:
    sm = cast(layers_module.Softmax, layer)
    axes = sm.axis if isinstance(sm.axis, list) else [sm.axis]
    if len(axes) != 1:
        raise ValueError(f"Expected Softmax over one axis for ONNX export. Received: layer "
                         f"{sm.name!r} with axis={sm.axis}")
    return g.node("Softmax", [t], f"{p}/Softmax", axis=int(axes[0]))


def _reshape(g: _Graph, layer: Any, t: str, p: str) -> str:
    shape = g.ints(f"{p}/shape", [0, *layer.output_shape])  # 0: the batch size, kept
    return g.node("Reshape", [t, shape], f"{p}/Reshape")


def _rescaling(g: _Graph, layer: Any, t: str, p: str) -> str:
    r = cast(layers_module.Rescaling, layer)
    t = g.node("Mul", [t, g.weight(f"{p}/scale", np.asarray(r.scale, np.float64))], f"{p}/Mul")
    return g.node("Add", [t, g.weight(f"{p}/offset", np.asarray(r.offset, np.float64))],
                  f"{p}/Add")


def _normalization(g: _Graph, layer: Any, t: str, p: str) -> str:
    n = cast(layers_module.Normalization, layer)
    mean, std = (a.reshape(a.shape[1:]) for a in n._stats())  # without the batch axis
    m, s = g.weight(f"{p}/mean", mean), g.weight(f"{p}/std", std)
    if n.invert:
        return g.node("Add", [g.node("Mul", [t, s], f"{p}/Mul"), m], f"{p}/Add")
    return g.node("Div", [g.node("Sub", [t, m], f"{p}/Sub"), s], f"{p}/Div")


_NEW_LAYERS: dict[type, Callable[[_Graph, Any, str, str], str]] = {
    layers_module.BatchNormalization: _bn, layers_module.LayerNormalization: _ln,
    layers_module.ReLU: _relu_layer, layers_module.LeakyReLU: _leaky_layer,
    layers_module.PReLU: _prelu, layers_module.Softmax: _softmax_layer,
    layers_module.Reshape: _reshape, layers_module.Rescaling: _rescaling,
    layers_module.Normalization: _normalization}


def _fresh(name: str, taken: set[str]) -> str:
    """name, or name_1, name_2, ...: the first not in taken, which then holds it."""
    out, k = name, 1
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    taken.add(out)
    return out
