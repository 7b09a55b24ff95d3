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
