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
    with pytest.raises(ValueError, match="Could not interpret activation.*'celu'"):
        A.deserialize("celu")  # (Keras returns the string; fastnn refuses it)
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
