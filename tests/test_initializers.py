"""Weight initializers: the distributions Keras documents, checked on large draws."""
import math

import numpy as np
import pytest

from fastnn import initializers, layers, models


@pytest.mark.parametrize("name, std", [
    ("glorot_uniform", math.sqrt(2.0 / (300 + 200))),   # U(-l, l) with l = sqrt(6/(in+out))
    ("glorot_normal", math.sqrt(2.0 / (300 + 200))),
    ("he_uniform", math.sqrt(2.0 / 300)),
    ("he_normal", math.sqrt(2.0 / 300)),
    ("random_normal", 0.05),
])
def test_initializer_spread(name, std):
    w = initializers.get(name)((300, 200), np.float32, np.random.default_rng(0))
    assert w.shape == (300, 200) and w.dtype == np.float32
    assert abs(w.mean()) < 0.05 * std
    assert w.std() == pytest.approx(std, rel=0.03)
    if name.endswith("uniform"):
        assert np.abs(w).max() <= math.sqrt(3) * std * (1 + 1e-6)
    if name in ("glorot_normal", "he_normal"):  # truncated at two (scaled) standard deviations
        assert np.abs(w).max() <= 2 * std / 0.87962566103423978 * (1 + 1e-6)


def test_zeros_ones_callables_and_unknown_names():
    rng = np.random.default_rng(0)
    assert not initializers.get("zeros")((3, 2), np.float64, rng).any()
    assert initializers.get("ones")((4,), np.float32, rng).sum() == 4
    custom = lambda shape, dtype, rng: np.full(shape, 0.5, dtype)  # noqa: E731
    m = models.Sequential([layers.Dense(2, input_shape=(3,), kernel_initializer=custom,
                                        bias_initializer="ones")])
    np.testing.assert_array_equal(m.get_weights()[0], np.full((3, 2), 0.5, np.float32))
    np.testing.assert_array_equal(m.get_weights()[1], np.ones(2, np.float32))
    with pytest.raises(ValueError, match=r"Could not interpret initializer identifier: .*'xavier'.*"
                                         r"expected a name in \[.*'he_normal'"):
        layers.Dense(2, kernel_initializer="xavier")


# ---- every Keras 3 initializer ---------------------------------------------------------------
# Statistics of 60000 draws: the sample mean is within 5 standard errors (sigma / sqrt(n)) of
# the true mean, the sample standard deviation within 2% (its standard error is ~0.3%).

N_IN, N_OUT = 300, 200
SE = 5 / math.sqrt(N_IN * N_OUT)


def _stats(w, mean, std):
    assert abs(w.mean() - mean) < SE * std + 1e-12
    assert w.std() == pytest.approx(std, rel=0.02)


@pytest.mark.parametrize("init, mean, std, bound", [
    # name or instance, the Keras distribution's mean and stddev, the bound of |w - mean|
    ("random_uniform", 0.0, 0.1 / math.sqrt(12), 0.05),           # U(-0.05, 0.05)
    (initializers.RandomUniform(-1.0, 3.0), 1.0, 4 / math.sqrt(12), 2.0),
    ("random_normal", 0.0, 0.05, None),
    (initializers.RandomNormal(mean=2.0, stddev=0.5), 2.0, 0.5, None),
    # a standard normal truncated at +-2 has stddev 0.87962566...
    ("truncated_normal", 0.0, 0.05 * 0.87962566103423978, 0.1),
    (initializers.TruncatedNormal(1.0, 0.2), 1.0, 0.2 * 0.87962566103423978, 0.4),
    # VarianceScaling: variance scale / n, the truncated normal corrected to reach it
    ("variance_scaling", 0.0, math.sqrt(1 / N_IN), 2 * math.sqrt(1 / N_IN) / 0.87962566103423978),
    (initializers.VarianceScaling(2.0, "fan_out", "uniform"), 0.0, math.sqrt(2 / N_OUT),
     math.sqrt(6 / N_OUT)),
    (initializers.VarianceScaling(0.5, "fan_avg", "untruncated_normal"), 0.0,
     math.sqrt(0.5 / 250), None),
    (initializers.VarianceScaling(3.0, "fan_in", "normal"), 0.0, math.sqrt(3 / N_IN),
     2 * math.sqrt(3 / N_IN) / 0.87962566103423978),
    ("lecun_uniform", 0.0, math.sqrt(1 / N_IN), math.sqrt(3 / N_IN)),
    ("lecun_normal", 0.0, math.sqrt(1 / N_IN), 2 * math.sqrt(1 / N_IN) / 0.87962566103423978),
    ("glorot_uniform", 0.0, math.sqrt(1 / 250), math.sqrt(6 / 500)),
    ("he_normal", 0.0, math.sqrt(2 / N_IN), 2 * math.sqrt(2 / N_IN) / 0.87962566103423978),
], ids=repr)
def test_random_initializers_statistics(init, mean, std, bound):
    w = initializers.get(init)((N_IN, N_OUT), "float64", np.random.default_rng(3))
    assert w.shape == (N_IN, N_OUT) and w.dtype == np.float64
    _stats(w, mean, std)
    if bound is not None:
        assert np.abs(w - mean).max() <= bound * (1 + 1e-12)
        assert np.abs(w - mean).max() > 0.95 * bound  # and the bound is reached


def test_constant_zeros_ones_identity():
    assert (initializers.Constant(2.5)((3, 4)) == 2.5).all()
    assert initializers.get("constant")((2,), "float64").tolist() == [0.0, 0.0]
    assert initializers.get("Zeros")((2, 2), "float32").dtype == np.float32
    assert (initializers.get("one")((3,)) == 1).all()
    np.testing.assert_array_equal(initializers.Identity(gain=3.0)((3, 5)), 3 * np.eye(3, 5))
    with pytest.raises(ValueError, match=r"Identity matrix initializer can only be used for 2D "
                                         r"matrices. Received: shape=\(2, 2, 2\) of rank 3"):
        initializers.Identity()((2, 2, 2))


@pytest.mark.parametrize("shape", [(7, 4), (4, 7), (5, 5), (2, 3, 4), (3, 2, 10)])
def test_orthogonal(shape):
    w = initializers.Orthogonal(gain=1.5, seed=0)(shape, "float64")
    assert w.shape == shape
    rows, cols = math.prod(shape[:-1]), shape[-1]
    q = w.reshape(rows, cols) / 1.5
    small = q.T @ q if rows >= cols else q @ q.T  # orthonormal columns (rows when wide)
    np.testing.assert_allclose(small, np.eye(min(rows, cols)), atol=1e-12)
    with pytest.raises(ValueError, match=r"at least two-dimensional. Received: shape=\(4,\)"):
        initializers.Orthogonal()((4,))


def test_seeded_initializers_repeat_and_unseeded_follow_the_models_seed():
    for cls in (initializers.RandomUniform, initializers.RandomNormal,
                initializers.TruncatedNormal, initializers.GlorotNormal, initializers.HeUniform,
                initializers.Orthogonal, initializers.LecunNormal):
        a, b = cls(seed=7)((20, 30)), cls(seed=7)((20, 30))
        np.testing.assert_array_equal(a, b)
        init = cls(seed=7)
        np.testing.assert_array_equal(init((20, 30)), init((20, 30)))  # each call, as Keras
        assert not np.array_equal(a, cls(seed=8)((20, 30)))
    # in a model: a seeded initializer gives the same kernel whatever the model's seed
    kernels = [models.Sequential([layers.Dense(4, input_shape=(3,), kernel_initializer=k)],
                                 seed=s).get_weights()[0]
               for k in (initializers.HeNormal(seed=1), initializers.HeNormal(seed=1))
               for s in (0, 1)]
    for k in kernels[1:]:
        np.testing.assert_array_equal(k, kernels[0])
    plain = [models.Sequential([layers.Dense(4, input_shape=(3,), kernel_initializer="he_normal")],
                               seed=s).get_weights()[0] for s in (0, 0, 1)]
    np.testing.assert_array_equal(plain[0], plain[1])
    assert not np.array_equal(plain[0], plain[2])


@pytest.mark.parametrize("name", initializers.NAMES)
def test_get_config_and_serialize_round_trip(name):
    cls = initializers.get(name).__class__
    assert getattr(initializers, name) is cls  # the snake_case name is the class, as Keras'
    assert initializers.get(cls.__name__) == cls() and initializers.get(cls) == cls()
    init = cls()
    assert cls.from_config(init.get_config()) == init
    cfg = initializers.serialize(init)
    assert cfg["module"] == "keras.initializers" and cfg["class_name"] == cls.__name__
    assert initializers.deserialize(cfg) == init and initializers.get(cfg) == init
    assert init.clone() == init and init.clone() is not init


def test_configs_are_keras():
    # the get_config keys and defaults of Keras 3.15
    assert initializers.GlorotUniform().get_config() == {"seed": None, "input_axes": None,
                                                         "output_axes": None}
    assert initializers.RandomNormal(seed=3).get_config() == {"seed": 3, "mean": 0.0,
                                                              "stddev": 0.05}
    assert initializers.VarianceScaling().get_config() == {
        "seed": None, "scale": 1.0, "mode": "fan_in", "distribution": "truncated_normal",
        "input_axes": None, "output_axes": None}
    assert initializers.Orthogonal().get_config() == {"seed": None, "gain": 1.0}
    assert initializers.Constant(1).get_config() == {"value": 1.0}
    assert initializers.get("normal") == initializers.RandomNormal()
    assert initializers.get(None) is None
    f = lambda shape, dtype=None: np.ones(shape)  # noqa: E731
    assert initializers.get(f) is f
    a = np.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(initializers.get(a)((2, 3)), a)


@pytest.mark.parametrize("make, match", [
    (lambda: initializers.VarianceScaling(scale=0), r"`scale` must be positive float. Received: scale=0"),
    (lambda: initializers.VarianceScaling(mode="fan"), r"Invalid `mode` argument: 'fan'"),
    (lambda: initializers.VarianceScaling(distribution="cauchy"), r"Invalid `distribution` argument: 'cauchy'"),
    (lambda: initializers.RandomNormal(seed="x"), r"`seed` argument should be an integer or None. Received: seed='x'"),
    (lambda: initializers.RandomUniform(minval=math.inf), r"RandomUniform's minval to be a finite number"),
    (lambda: initializers.get("xavier"), r"Could not interpret initializer identifier"),
    (lambda: initializers.get(3), r"Could not interpret initializer identifier: 3"),
    (lambda: initializers.deserialize({"class_name": "Orthogonal", "config": {"gains": 1}}),
     r"Unexpected arguments for initializer Orthogonal: \['gains'\]"),
])
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_keras_style_custom_initializers_fill_a_model():
    class Halves(initializers.Initializer):  # a Keras-style subclass: __call__(shape, dtype)
        def __call__(self, shape, dtype=None):
            return np.full(shape, 0.5)

    m = models.Sequential([layers.Dense(2, input_shape=(3,), kernel_initializer=Halves(),
                                        bias_initializer=lambda shape, dtype=None: np.ones(shape))])
    np.testing.assert_array_equal(m.get_weights()[0], np.full((3, 2), 0.5, np.float32))
    np.testing.assert_array_equal(m.get_weights()[1], np.ones(2, np.float32))
