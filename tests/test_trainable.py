"""Frozen layers (`layer.trainable = False`) and non-trainable weights, as in Keras: the
optimizer never changes them, the other layers train as they would (their gradients do not
depend on whether another layer steps), a change applies at the next compile(), and the
counts, weight lists, configs and files say so."""
import numpy as np
import pytest

import fastnn
from fastnn import _step, layers, models, optimizers, utils
from conftest import blobs


def _model(seed=0, frozen=(), dtype=None):
    m = models.Sequential([layers.Dense(9, activation="relu", input_shape=(6,), dtype=dtype),
                           layers.Dense(5, activation="tanh", dtype=dtype),
                           layers.Dense(3, activation="softmax", dtype=dtype)], seed=seed)
    for i in frozen:
        m.layers[i].trainable = False
    return m


def _data(n=40):
    x, y, _ = blobs(n, 6, 3, seed=1)
    return x, y


@pytest.mark.parametrize("jit", ["auto", False])
@pytest.mark.parametrize("batch_size", [1, 8, 40])
@pytest.mark.parametrize("frozen", [(0,), (1,), (2,), (0, 2)])
def test_frozen_layers_keep_their_weights_and_the_others_step_as_unfrozen(jit, batch_size,
                                                                          frozen):
    # One SGD step is elementwise: a trainable layer's new weights are w - lr * g, and its
    # gradient g does not depend on whether another layer steps.  So after one step each
    # trainable layer equals the same layer of an unfrozen twin; each frozen one is unchanged.
    x, y = _data(batch_size)
    m, twin = _model(frozen=frozen), _model()
    before = m.get_weights()
    for model in (m, twin):
        model.compile(optimizers.SGD(0.1), "categorical_crossentropy", jit_compile=jit)
        model.fit(x, y, epochs=1, batch_size=batch_size, shuffle=False, verbose=0)
    for i, (layer, other) in enumerate(zip(m.layers, twin.layers)):
        for w, w0, wt in zip(layer.weights, before[2 * i:2 * i + 2], other.weights):
            if i in frozen:
                np.testing.assert_array_equal(w, w0)
            else:
                assert not np.array_equal(w, w0)
                np.testing.assert_allclose(w, wt, rtol=1e-6, atol=1e-7)


def test_frozen_layers_under_a_stateful_optimizer_over_epochs():
    x, y = _data(64)
    m = _model(frozen=(1,))
    m.compile("adam", "categorical_crossentropy")
    frozen_before = [w.copy() for w in m.layers[1].weights]
    m.fit(x, y, epochs=3, batch_size=16, verbose=0)
    for w, w0 in zip(m.layers[1].weights, frozen_before):
        np.testing.assert_array_equal(w, w0)
    # the optimizer holds state for the trainable parameters only
    n_train = sum(w.size for w in m.trainable_weights)
    assert sum(v.size for v in m.optimizer.variables) == 2 * n_train  # adam: m and v
    assert n_train == m.count_params() - (9 * 5 + 5)


def test_compiled_step_with_a_frozen_layer_is_the_layer_by_layer_step():
    x, y = _data(48)
    out = []
    for jit in ("auto", False):
        m = _model(frozen=(0,), seed=4)
        m.compile("rmsprop", "categorical_crossentropy", jit_compile=jit)
        m.fit(x, y, epochs=2, batch_size=16, verbose=0)
        out.append(m.get_weights())
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)


def test_trainable_applies_at_the_next_compile_as_keras():
    x, y = _data(32)
    m = _model()
    m.compile(optimizers.SGD(0.1), "categorical_crossentropy")
    m.fit(x, y, epochs=1, batch_size=32, verbose=0)
    m.layers[0].trainable = False  # not applied yet: Keras needs compile() again
    w0 = [w.copy() for w in m.layers[0].weights]
    m.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert not np.array_equal(m.layers[0].weights[0], w0[0])
    m.compile(optimizers.SGD(0.1), "categorical_crossentropy")
    w1 = [w.copy() for w in m.layers[0].weights]
    m.fit(x, y, epochs=2, batch_size=32, verbose=0)
    for a, b in zip(m.layers[0].weights, w1):
        np.testing.assert_array_equal(a, b)
    # and back: trainable again after a recompile
    m.layers[0].trainable = True
    m.compile(optimizers.SGD(0.1), "categorical_crossentropy")
    m.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert not np.array_equal(m.layers[0].weights[0], w1[0])


def test_recompiling_keeps_the_weights():
    m = _model()
    m.compile("sgd", "categorical_crossentropy")
    w = m.get_weights()
    m.layers[1].trainable = False
    m.compile("sgd", "categorical_crossentropy")
    for a, b in zip(m.get_weights(), w):
        np.testing.assert_array_equal(a, b)


def test_model_trainable_false_freezes_every_layer():
    x, y = _data(16)
    m = _model()
    m.trainable = False
    assert not m.trainable and all(not l.trainable for l in m.layers)
    m.compile("adam", "categorical_crossentropy")
    w = m.get_weights()
    m.fit(x, y, epochs=2, batch_size=8, verbose=0)
    for a, b in zip(m.get_weights(), w):
        np.testing.assert_array_equal(a, b)
    assert m.trainable_weights == [] and len(m.non_trainable_weights) == 6


def test_weight_lists_and_summary_counts():
    m = _model(frozen=(1,))
    assert [w.shape for w in m.layers[1].non_trainable_weights] == [(9, 5), (5,)]
    assert m.layers[1].trainable_weights == []
    assert [w.shape for w in m.trainable_weights] == [(6, 9), (9,), (5, 3), (3,)]
    lines = []
    m.summary(print_fn=lines.append)
    text = "\n".join(lines)
    total = 6 * 9 + 9 + 9 * 5 + 5 + 5 * 3 + 3
    assert f"Total params: {total:,}" in text
    assert f"Trainable params: {total - 50:,}" in text
    assert "Non-trainable params: 50 (200.00 B)" in text  # 50 float32 values


def test_non_trainable_weights_are_packed_after_the_trainable_ones():
    class Stats(layers.Layer):  # a layer with one trainable and one non-trainable weight
        def build(self, input_shape, rng=None):
            self.add_weight((input_shape[-1],), "ones", "scale")
            self.add_weight((input_shape[-1],), "zeros", "moving_mean", trainable=False)
            super().build(input_shape, rng)

    a, b = Stats(), Stats()
    a.build((4,)); b.build((3,))
    packed = _step.pack_parameters([a, b], np.random.default_rng(0))
    assert [p.size for p in packed.params] == [7] and [f.size for f in packed.frozen] == [7]
    np.testing.assert_array_equal(packed.params[0], np.ones(7))   # scales first
    np.testing.assert_array_equal(packed.frozen[0], np.zeros(7))  # then the statistics
    assert np.shares_memory(a.weights[1], packed.frozen[0])
    assert [w.size for w in a.non_trainable_weights] == [4]


def test_config_and_keras_file_keep_trainable(tmp_path):
    m = _model(frozen=(0,))
    assert m.layers[0].get_config()["trainable"] is False
    clone = layers.Dense.from_config(m.layers[0].get_config())
    assert clone.trainable is False
    assert layers.Dense(3, trainable=False).trainable is False
    m.compile("sgd", "categorical_crossentropy")
    path = tmp_path / "m.keras"
    m.save(path)
    back = models.load_model(path)
    assert [l.trainable for l in back.layers] == [False, True, True]
    assert [w.shape for w in back.non_trainable_weights] == [(6, 9), (9,)]


def test_trainable_must_be_a_bool():
    with pytest.raises(TypeError, match="trainable"):
        layers.Dense(3).trainable = "no"
