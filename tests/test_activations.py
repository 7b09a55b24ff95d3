"""fastnn.activations as keras.activations (Keras 3.15): the functions against Keras'
documented formulas and examples, get/serialize/deserialize, the arguments layers keep and
serialize, and the errors.  (The kernels against their NumPy twins: tests/test_kernels.py;
the twins against finite differences: tests/test_reference.py and below.)"""
import functools
import math

import numpy as np
import pytest

from fastnn import _codes, activations, initializers, layers, models
from fastnn import _reference as R
from tolerances import TOL

A = activations
X = np.linspace(-4, 4, 81)  # every piece of the piecewise ones (kinks at -3, 0, 3, 6)
_erf = np.vectorize(math.erf)


def _softplus(x):
    return np.log(np.exp(x) + 1)


def _simplex_tau(x):
    """sparsemax's threshold by its definition, sum max(x - tau, 0) = 1 over the last axis,
    by bisection on [max - 1, max] (independent of the kernels' and twin's algorithms)."""
    hi = x.max(axis=-1, keepdims=True)
    lo = hi - 1
    for _ in range(200):
        mid = (lo + hi) / 2
        above = np.maximum(x - mid, 0).sum(axis=-1, keepdims=True) > 1
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return (lo + hi) / 2


# Keras' documented definitions (keras/src/activations/activations.py docstrings), written
# naively in float64 (accurate enough on [-4, 4])
FORMULAS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.2 * x),
    "relu6": lambda x: np.minimum(np.maximum(x, 0), 6),
    "elu": lambda x: np.where(x > 0, x, np.exp(x) - 1),
    # Keras' docstring gives the constants to 9 digits (alpha=1.67326324, scale=1.05070098)
    "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * (np.exp(x) - 1)),
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "silu": lambda x: x / (1 + np.exp(-x)),
    "softplus": _softplus,
    "softsign": lambda x: x / (np.abs(x) + 1),
    "hard_sigmoid": lambda x: np.where(x <= -3, 0, np.where(x >= 3, 1, x / 6 + 0.5)),
    "hard_silu": lambda x: np.where(x < -3, 0, np.where(x > 3, x, x * (x + 3) / 6)),
    "exponential": np.exp,
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "softmax": lambda x: np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True),
    "log_softmax": lambda x: x - np.log(np.exp(x).sum(axis=-1, keepdims=True)),
    # issue #11's, with Keras' defaults (threshold=0.5, alpha=1, b=4); threshold, which has
    # none, is tested on its own below
    "hard_tanh": lambda x: np.where(x < -1, -1, np.where(x > 1, 1, x)),
    "hard_shrink": lambda x: np.where(np.abs(x) > 0.5, x, 0),
    "soft_shrink": lambda x: np.where(x > 0.5, x - 0.5, np.where(x < -0.5, x + 0.5, 0)),
    "tanh_shrink": lambda x: x - np.tanh(x),
    "log_sigmoid": lambda x: np.log(1 / (1 + np.exp(-x))),
    "celu": lambda x: np.where(x >= 0, x, 1.0 * (np.exp(x / 1.0) - 1)),
    "squareplus": lambda x: (x + np.sqrt(x ** 2 + 4)) / 2,
    "sparse_plus": lambda x: np.where(x <= -1, 0, np.where(x >= 1, x, 0.25 * (x + 1) ** 2)),
    "sparse_sigmoid": lambda x: np.where(x <= -1, 0, np.where(x >= 1, 1, 0.5 * (x + 1))),
    "sparsemax": lambda x: np.maximum(x - _simplex_tau(x), 0),
}


def test_every_function_has_a_formula_here():
    assert set(FORMULAS) == set(A.NAMES)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_functions_match_keras_formulas(name):
    x = X.reshape(9, 9)
    got = getattr(A, name)(x)
    assert got.shape == x.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, FORMULAS[name](x), **TOL[np.float64])
    got32 = getattr(A, name)(x.astype(np.float32))
    assert got32.dtype == np.float32
    np.testing.assert_allclose(got32, FORMULAS[name](x).astype(np.float32), **TOL[np.float32])


def test_relu_docstring_examples():
    # keras.activations.relu's docstring examples
    x = [-10, -5, 0.0, 5, 10]
    np.testing.assert_array_equal(A.relu(x), [0, 0, 0, 5, 10])
    np.testing.assert_array_equal(A.relu(x, negative_slope=0.5), [-5, -2.5, 0, 5, 10])
    np.testing.assert_array_equal(A.relu(x, max_value=5.0), [0, 0, 0, 5, 5])
    np.testing.assert_array_equal(A.relu(x, threshold=5.0), [0, 0, 0, 0, 10])


def test_relu_with_every_argument_as_keras_computes_it():
    # Keras' ReLU.static_call by hand: x > t: clip(x, 0, max_value), else slope * (x - t);
    # without max_value no clip below (x in (t, 0) stays), with it 0
    x = np.array([-3.0, -1.0, -0.5, 0.5, 2.0])
    np.testing.assert_allclose(A.relu(x, negative_slope=0.5, threshold=1.0, max_value=1.5),
                               [-2.0, -1.0, -0.75, -0.25, 1.5])
    np.testing.assert_allclose(A.relu(x, threshold=-0.7), [0, 0, -0.5, 0.5, 2.0])
    np.testing.assert_allclose(A.relu(x, threshold=-0.7, max_value=1.0), [0, 0, 0, 0.5, 1.0])
    np.testing.assert_allclose(A.relu(x, negative_slope=0.1, threshold=-2.0),
                               [-0.1, -1.0, -0.5, 0.5, 2.0])


def test_issue11_docstring_examples():
    # the examples of keras.ops.<name>'s docstrings (keras/src/ops/nn.py, Keras 3.15), to
    # half a unit of their last printed digit
    x = np.array([-1.0, 0.0, 1.0])
    np.testing.assert_allclose(A.celu(x), [-0.63212056, 0.0, 1.0], atol=5e-9)
    np.testing.assert_array_equal(A.hard_shrink([-0.5, 0.0, 1.0]), [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(A.hard_tanh([-2.0, -1.0, 0.0, 1.0, 2.0]), [-1, -1, 0, 1, 1])
    np.testing.assert_allclose(A.log_sigmoid(np.float32([-0.541391, 0.0, 0.50, 5.0])),
                               [-1.0000418, -0.6931472, -0.474077, -0.00671535], atol=5e-7)
    np.testing.assert_array_equal(A.soft_shrink(x), [-0.5, 0.0, 0.5])
    np.testing.assert_array_equal(A.sparse_plus(x), [0.0, 0.25, 1.0])
    np.testing.assert_array_equal(A.sparse_sigmoid([-6.0, 1.0, 0.0, 1.0, 6.0]), [0, 1, 0.5, 1, 1])
    np.testing.assert_allclose(A.squareplus(x), [0.6180, 1.0, 1.6180], atol=5e-5)
    np.testing.assert_allclose(A.tanh_shrink(x), [-0.23840584, 0.0, 0.23840584], atol=5e-9)
    np.testing.assert_array_equal(A.threshold([-1.0, 0.0, 1.0, 2.0], 1, 0), [0, 0, 0, 2])
    np.testing.assert_array_equal(A.sparsemax(x), [0.0, 0.0, 1.0])


def test_sparsemax_is_the_projection_onto_the_simplex():
    # Keras' tests (activations_test.py, ops/nn_test.py): one-hot results on every axis layout
    x = np.linspace(1, 12, num=12)
    for shape in [(12,), (6, 2), (4, 1, 3)]:
        want = np.zeros(shape)
        want[..., -1] = 1.0
        np.testing.assert_array_equal(A.sparsemax(x.reshape(shape)), want)
    np.testing.assert_array_equal(A.sparsemax(np.float32([-0.5, 0, 1, 2, 3])), [0, 0, 0, 0, 1])
    # several entries in the support, by hand (keras-team/keras#23425, where Keras 3.15.1 gives
    # [0, 0, 0.25] and zeros): sorted [1, 0.5, 0], support of 2, tau = (1.5 - 1) / 2 = 0.25;
    # [0.1 .. 0.5]: all five, tau = (1.5 - 1) / 5 = 0.1
    np.testing.assert_allclose(A.sparsemax([[0.0, 0.5, 1.0]]), [[0, 0.25, 0.75]],
                               **TOL[np.float64])
    np.testing.assert_allclose(A.sparsemax([0.1, 0.2, 0.3, 0.4, 0.5]), [0, 0.1, 0.2, 0.3, 0.4],
                               **TOL[np.float64])
    # rows sum to 1, over any axis; a row shifted by a constant gives the same
    v = np.random.default_rng(0).standard_normal((3, 5, 4)) * 0.4
    for axis in (0, 1, -1):
        y = A.sparsemax(v, axis=axis)
        np.testing.assert_allclose(y.sum(axis=axis), 1.0, **TOL[np.float64])
        np.testing.assert_allclose(A.sparsemax(v + 3.0, axis=axis), y, **TOL[np.float64])
    with pytest.raises(ValueError, match=r"sparsemax over the last axis \(axis=-1\) in a layer"):
        layers.Activation(functools.partial(A.sparsemax, axis=0))


def test_issue11_arguments_and_edges():
    x = np.array([-2.0, -0.75, 0.25, 1.0, 3.0])
    # by hand from Keras' definitions
    np.testing.assert_array_equal(A.hard_shrink(x, threshold=1.0), [-2.0, 0, 0, 0, 3.0])
    np.testing.assert_array_equal(A.soft_shrink(x, threshold=0.0), x)
    np.testing.assert_array_equal(A.soft_shrink(x, threshold=1.0), [-1.0, 0, 0, 0, 2.0])
    np.testing.assert_array_equal(A.threshold(x, threshold=0.25, default_value=7.0),
                                  [7.0, 7.0, 7.0, 1.0, 3.0])
    np.testing.assert_array_equal(A.threshold(x, -1.0, -5.0), [-5.0, -0.75, 0.25, 1.0, 3.0])
    # celu(alpha=2): 2 (e^(-1) - 1) = -1.2642411176571153, 2 (e^(-0.375) - 1) = -0.6254...
    np.testing.assert_allclose(A.celu(x, alpha=2.0), [2 * math.expm1(-1.0),
                                                      2 * math.expm1(-0.375), 0.25, 1.0, 3.0],
                               **TOL[np.float64])
    # squareplus(b=1) at 0 is sqrt(1) / 2; at -0.75: (-0.75 + 1.25) / 2 = 0.25
    np.testing.assert_allclose(A.squareplus([0.0, -0.75], b=1), [0.5, 0.25], **TOL[np.float64])
    # squareplus without Keras' cancellation: (x + sqrt(x^2 + 4)) / 2 at x = -1e4 is
    # 4 / (2 (sqrt(1e8 + 4) + 1e4)) = 1e-4 (1 - 1e-8 ...); float32 x + sqrt(...) is 0
    np.testing.assert_allclose(A.squareplus(np.float32([-1e4])), [1e-4], rtol=1e-6)
    # log_sigmoid without overflow: log_sigmoid(-100) = -100 - log1p(e^-100), (100): -e^-100
    np.testing.assert_allclose(A.log_sigmoid([-100.0, 100.0]), [-100.0, -math.exp(-100)],
                               rtol=1e-15)
    # NaN passes through (Keras' where gives 0, 0 and default_value: documented difference)
    for f in (A.hard_shrink, A.soft_shrink, functools.partial(A.threshold, threshold=0.0,
                                                              default_value=1.0)):
        assert np.isnan(f([np.nan])).all()


def test_threshold_needs_its_arguments_as_in_keras(tmp_path):
    assert A.get("threshold") is A.threshold and A.deserialize("threshold") is A.threshold
    assert A.serialize(A.threshold) == "threshold" and "threshold" not in A.NAMES
    for call in (lambda: layers.Dense(2, activation="threshold"),
                 lambda: layers.Activation(A.threshold), lambda: A.spec("threshold"),
                 lambda: layers.Activation(functools.partial(A.threshold, threshold=1.0))):
        with pytest.raises(ValueError, match=r"Expected threshold's arguments threshold and "
                                             r"default_value .*Received: no "):
            call()
    f = functools.partial(A.threshold, threshold=0.5, default_value=-1.0)
    assert A.serialize(f) == {"module": "keras.activations", "class_name": "function",
                              "config": "threshold", "registered_name": None,
                              "kwargs": {"threshold": 0.5, "default_value": -1.0}}
    m = models.Sequential([layers.Dense(4, activation=f, input_shape=(3,)),
                           layers.Activation(functools.partial(A.celu, alpha=0.5))], seed=0)
    m.save(tmp_path / "m.fastnn")
    m2 = models.load_model(tmp_path / "m.fastnn")
    assert [l.activation for l in m2.layers] == [l.activation for l in m.layers]
    x = np.linspace(-2, 2, 12).reshape(4, 3)
    np.testing.assert_array_equal(m2.predict(x, verbose=0), m.predict(x, verbose=0))


@pytest.mark.parametrize("act", [functools.partial(A.threshold, threshold=0.5, default_value=0.0),
                                 functools.partial(A.celu, alpha=0.5),
                                 functools.partial(A.squareplus, b=1.0),
                                 functools.partial(A.hard_shrink, threshold=0.2),
                                 functools.partial(A.soft_shrink, threshold=1.0)], ids=repr)
def test_issue11_arguments_have_no_keras_file_form(tmp_path, act):
    """Keras writes an activation as its name only, and has no layer for these with arguments:
    save_keras refuses them, as gelu(approximate=True)."""
    from fastnn import keras_format
    m = models.Sequential([layers.Dense(2, activation=act, input_shape=(3,))], seed=0)
    with pytest.raises(ValueError, match="has no Keras file form"):
        keras_format.save_keras(m, tmp_path / "m.keras")


def test_gelu_approximate_is_the_tanh_form():
    x = np.linspace(-3, 3, 61)
    want = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(A.gelu(x, approximate=True), want, **TOL[np.float64])
    # and differs from the exact one (by up to ~5e-4)
    assert 1e-4 < np.abs(A.gelu(x, approximate=True) - A.gelu(x)).max() < 1e-3


def test_softmax_and_log_softmax_over_any_axis():
    x = np.arange(24.0).reshape(2, 3, 4) / 7
    for axis in (0, 1, -2, 2, -1):
        e = np.exp(x)
        np.testing.assert_allclose(A.softmax(x, axis=axis), e / e.sum(axis=axis, keepdims=True),
                                   **TOL[np.float64])
        np.testing.assert_allclose(A.log_softmax(x, axis=axis),
                                   x - np.log(e.sum(axis=axis, keepdims=True)), **TOL[np.float64])
    with pytest.raises(ValueError, match=r"axis in \[-3, 3\).*Received: axis=3"):
        A.softmax(x, axis=3)


def test_integer_and_scalar_inputs():
    assert A.relu([1, -2]).dtype == np.float32
    assert A.sigmoid(0.0) == 0.5 and A.softmax(3.0) == 1.0
    assert A.relu(np.empty((0, 3))).shape == (0, 3)


# ---- get, serialize, deserialize --------------------------------------------------------------

def test_get_returns_the_function_as_keras():
    assert A.get("relu") is A.relu and A.get(None) is A.linear
    assert A.get("swish") is A.silu and A.get("hard_swish") is A.hard_silu
    assert A.swish is A.silu and A.hard_swish is A.hard_silu
    f = lambda x: x  # noqa: E731  (any callable is returned as is, as Keras does)
    assert A.get(f) is f and A.get(A.gelu) is A.gelu
    assert A.get({"module": "keras.activations", "class_name": "function", "config": "elu",
                  "registered_name": None}) is A.elu
    for bad in ("nope", 3):
        with pytest.raises(ValueError, match=f"Could not interpret activation function identifier: "
                                             f"{bad}"):
            A.get(bad)


@pytest.mark.parametrize("name", A.NAMES)
def test_serialize_round_trips(name):
    f = getattr(A, name)
    assert A.serialize(f) == name and A.deserialize(name) is f
    assert A.deserialize(A.serialize(f)) is f


def test_serialize_partials_keep_their_arguments():
    f = functools.partial(A.relu, max_value=6.0, threshold=0.5)
    cfg = A.serialize(f)
    assert cfg == {"module": "keras.activations", "class_name": "function", "config": "relu",
                   "registered_name": None, "kwargs": {"max_value": 6.0, "threshold": 0.5}}
    g = A.deserialize(cfg)
    x = np.linspace(-2, 8, 11)
    np.testing.assert_array_equal(g(x), f(x))
    assert A.serialize(A.swish) == "silu"
    # arguments equal to Keras' defaults are dropped: the plain name
    assert A.serialize(functools.partial(A.leaky_relu, negative_slope=0.2)) == "leaky_relu"
    with pytest.raises(ValueError, match="cannot be serialized"):
        A.serialize(lambda x: x)
    with pytest.raises(ValueError, match="Could not interpret activation.*'glu'"):
        A.deserialize("glu")  # (Keras returns the string; fastnn refuses it)
    assert A.deserialize("mine", custom_objects={"mine": np.tanh}) is np.tanh


# ---- the kernel a spec picks, and layers ------------------------------------------------------

@pytest.mark.parametrize("identifier, code, params", [
    ("relu", "relu", ()),
    (functools.partial(A.relu, negative_slope=0.3), "leaky_relu", (0.3,)),
    (functools.partial(A.relu, max_value=6), "relu6", ()),
    (functools.partial(A.relu, max_value=2.0), "relu_general", (0.0, 2.0, 0.0)),
    (functools.partial(A.relu, threshold=-1.0), "relu_general", (0.0, math.inf, -1.0)),
    ("leaky_relu", "leaky_relu", (0.2,)), ("elu", "elu", (1.0,)),
    (functools.partial(A.gelu, approximate=True), "gelu_tanh", ()),
    ("swish", "silu", ()), ("hard_swish", "hard_silu", ()), (None, "linear", ()),
    ("hard_tanh", "hard_tanh", ()), ("hard_shrink", "hard_shrink", (0.5,)),
    (functools.partial(A.soft_shrink, threshold=2), "soft_shrink", (2.0,)),
    ("tanh_shrink", "tanh_shrink", ()), ("log_sigmoid", "log_sigmoid", ()),
    (functools.partial(A.threshold, threshold=0.3, default_value=-1), "threshold", (0.3, -1.0)),
    ("celu", "celu", (1.0,)), ("squareplus", "squareplus", (4.0,)),
    ("sparse_plus", "sparse_plus", ()), ("sparse_sigmoid", "sparse_sigmoid", ()),
    ("sparsemax", "sparsemax", ()),
])
def test_spec_picks_the_kernel(identifier, code, params):
    s = A.spec(identifier)
    assert s.code == _codes.ACTIVATIONS[code] and s.params == params
    assert s.needs_preactivation == (code in _codes.ACT_NEEDS_X)


def test_layers_keep_and_serialize_the_arguments(tmp_path):
    relu6 = functools.partial(A.relu, max_value=6.0)
    d = layers.Dense(3, activation=relu6, input_shape=(4,))
    assert d.activation.kwargs == {"max_value": 6.0}
    assert d.get_config()["activation"] == A.serialize(relu6)
    assert layers.Dense(3, activation="relu").get_config()["activation"] == "relu"
    assert layers.Dense(3).get_config()["activation"] == "linear"
    a = layers.Activation(functools.partial(A.elu, alpha=0.5))
    assert a.get_config()["activation"]["kwargs"] == {"alpha": 0.5}
    assert layers.Activation.from_config(a.get_config()).activation == a.activation
    x = np.linspace(-9, 9, 12).reshape(3, 4)
    np.testing.assert_array_equal(d.activation(x), np.clip(x, 0, 6))  # callable, as Keras'
    # through fastnn's own file format
    m = models.Sequential([d, layers.Activation(functools.partial(A.relu, threshold=0.5)),
                           layers.Dense(2, kernel_initializer=initializers.Orthogonal(gain=2.0,
                                                                                      seed=4))],
                          seed=0)
    m.save(tmp_path / "m.fastnn")
    m2 = models.load_model(tmp_path / "m.fastnn")
    assert [l.activation for l in m2.layers] == [l.activation for l in m.layers]
    assert m2.layers[2].kernel_initializer == initializers.Orthogonal(gain=2.0, seed=4)
    np.testing.assert_array_equal(m2.predict(x, verbose=0), m.predict(x, verbose=0))


@pytest.mark.parametrize("call, match", [
    (lambda: A.relu([1.0], negative_slope=-0.1), r"relu's negative_slope to be a finite number >= 0. Received: negative_slope=-0.1"),
    (lambda: A.relu([1.0], max_value=-1), r"relu's max_value to be a finite number >= 0. Received: max_value=-1"),
    (lambda: A.relu([1.0], threshold=math.nan), r"relu's threshold to be a finite number. Received: threshold=nan"),
    (lambda: A.elu([1.0], alpha=0), r"elu's alpha to be a finite number > 0. Received: alpha=0"),
    (lambda: A.leaky_relu([1.0], negative_slope="a"), r"negative_slope='a'"),
    (lambda: A.gelu([1.0], approximate="yes"), r"gelu's approximate to be a bool. Received: approximate='yes'"),
    (lambda: A.softmax([1.0], axis=1.5), r"softmax's axis to be an int. Received: axis=1.5"),
    (lambda: layers.Dense(2, activation=functools.partial(A.relu, slope=1)),
     r"arguments of activation 'relu' among \['max_value', 'negative_slope', 'threshold'\]. Received: slope=1"),
    (lambda: layers.Activation(functools.partial(A.softmax, axis=1)),
     r"softmax over the last axis \(axis=-1\) in a layer.*Received: axis=1"),
    (lambda: A.hard_shrink([1.0], threshold=-0.1), r"hard_shrink's threshold to be a finite number >= 0. Received: threshold=-0.1"),
    (lambda: A.soft_shrink([1.0], threshold=math.inf), r"soft_shrink's threshold to be a finite number >= 0. Received: threshold=inf"),
    (lambda: A.celu([1.0], alpha=0), r"celu's alpha to be a finite number > 0. Received: alpha=0"),
    (lambda: A.squareplus([1.0], b=-4), r"squareplus's b to be a finite number > 0. Received: b=-4"),
    (lambda: A.threshold([1.0], "a", 0), r"threshold's threshold to be a finite number. Received: threshold='a'"),
    (lambda: A.threshold([1.0], 0.5, None), r"threshold's arguments threshold and default_value.*Received: no default_value"),
    (lambda: layers.Dense(2, activation=functools.partial(A.celu, b=1)),
     r"arguments of activation 'celu' among \['alpha'\]. Received: b=1"),
    (lambda: layers.Dense(2, activation=lambda x: x), r"Expected activation to be one of"),
    (lambda: layers.Dense(2, activation=functools.partial(A.relu, 0.1)), r"keyword arguments only"),
])
def test_bad_arguments_raise_value_errors_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---- the twins of the parametrised codes against finite differences (float64) ----------------

@pytest.mark.parametrize("code, params", [
    ("relu_general", (0.0, math.inf, -0.5)), ("relu_general", (0.3, 1.0, -0.7)),
    ("relu_general", (0.2, 1.5, 0.4)), ("leaky_relu", (1.7,)), ("elu", (0.4,)),
    ("hard_shrink", (1.3,)), ("soft_shrink", (0.0,)), ("soft_shrink", (1.2,)),
    ("threshold", (0.3, 2.0)), ("threshold", (-0.8, 0.0)), ("celu", (0.4,)), ("celu", (2.5,)),
    ("squareplus", (0.5,)),
])
def test_parametrised_twins_match_finite_differences(code, params):
    rng = np.random.default_rng(5)
    x, r = rng.standard_normal((4, 7)) * 2, rng.standard_normal((4, 7))
    c = _codes.ACTIVATIONS[code]
    y, dx = np.empty_like(x), np.empty_like(x)
    R.act_forward(y, x, c, params)
    R.act_backward(dx, r, y, x, c, params)
    h, num = 1e-6, np.empty_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        yu, yd = np.empty_like(x), np.empty_like(x)
        R.act_forward(yu, up, c, params)
        R.act_forward(yd, down, c, params)
        num[idx] = ((yu - yd) * r).sum() / (2 * h)
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


# ---- issue #11's with arguments in training: the compiled step is the layer-by-layer one ------

@pytest.mark.parametrize("act", [
    functools.partial(A.threshold, threshold=0.1, default_value=-0.5),
    functools.partial(A.celu, alpha=0.4), functools.partial(A.squareplus, b=0.5),
    functools.partial(A.hard_shrink, threshold=0.2), functools.partial(A.soft_shrink, threshold=0.3)],
    ids=repr)
def test_compiled_step_is_the_python_step_with_arguments(act):
    """A hidden layer with each parametrised activation (threshold: the pre-activation kept for
    its derivative): the compiled step gives the layer-by-layer step's results bit for bit
    (tests/test_train_step.py runs every name with Keras' defaults)."""
    from conftest import blobs
    from test_train_step import OPTIMIZERS, _assert_same, _train
    x, y, _ = blobs(n=30, d=6, k=3)
    _assert_same(*[_train(c, OPTIMIZERS["adam"], "categorical_crossentropy", x, y, 8,
                          hidden_act=act) for c in (True, False)])
