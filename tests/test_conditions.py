"""Behaviour under the conditions real programs create: many batch sizes (bounded memory),
refused calls (the model stays as it was), two threads on one model, arrays resized under a
running fit, and the loose ends of argument handling."""
import threading
import tracemalloc

import numpy as np
import pytest

import fastnn
from fastnn import callbacks, layers, models
from conftest import blobs


def _model(seed=0, d=6):
    m = models.Sequential([layers.Dense(16, activation="relu"),
                           layers.Dense(3, activation="softmax")], seed=seed)
    m.compile("rmsprop", "categorical_crossentropy")
    return m


# ---- memory: buffers are kept for the current shape only ------------------------------------

def test_predict_over_many_batch_sizes_keeps_memory_flat():
    """Before, every batch size kept its buffers for ever (1,000 sizes: 51 MB -> 1 GB)."""
    m = _model()
    x = np.random.default_rng(0).random((400, 6), dtype=np.float32)
    m.predict(x, batch_size=7, verbose=0)
    tracemalloc.start()
    try:
        for bs in range(1, 200):
            m.predict(x[:bs], batch_size=bs, verbose=0)
            m.train_on_batch(x[:bs], np.eye(3, dtype=np.float32)[np.arange(bs) % 3])
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the arrays of one batch size are a few kB; 200 sizes kept would be ~ 3 MB
    assert current < 400_000, current


def test_fit_keeps_no_reference_to_the_training_data():
    import gc
    import weakref
    m = _model()
    x, y, _ = blobs(n=64, d=6, k=3)
    m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    ref = weakref.ref(x)
    del x
    gc.collect()
    assert ref() is None
    x2 = np.ones((10, 6), np.float32)
    x2.resize((5, 6))  # fit is over: the caller's arrays are theirs again


# ---- a refused call leaves the model as it was ----------------------------------------------

@pytest.mark.parametrize("bad", [np.ones((8, 2, 3), np.float32), np.ones((8, 0), np.float32)],
                         ids=["3-D", "zero-width"])
def test_refused_first_call_leaves_an_unbuilt_model_usable(bad):
    x, y, _ = blobs(n=32, d=6, k=3)
    fresh = _model(seed=5)
    fresh.fit(x, y, epochs=1, batch_size=8, verbose=0)
    m = _model(seed=5)
    with pytest.raises(ValueError):
        m.fit(bad, y[:8], epochs=1, verbose=0)
    assert not m.built and m._input_shape is None  # (m.input_shape: AttributeError, as Keras)
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)  # as if the refused call never happened
    for a, b in zip(m.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_empty_model_is_refused_clearly():
    m = models.Sequential([])
    m.compile("sgd", "mse")
    with pytest.raises(ValueError, match="at least one layer"):
        m.fit(np.ones((4, 2), np.float32), np.ones((4, 1), np.float32), verbose=0)


# ---- two threads, one model ----------------------------------------------------------------

def test_a_second_concurrent_fit_on_one_model_is_refused():
    m = _model()
    x, y, _ = blobs(n=256, d=6, k=3)
    started, release = threading.Event(), threading.Event()

    class Hold(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            started.set()
            release.wait(30)

    t = threading.Thread(target=lambda: m.fit(x, y, epochs=1, batch_size=32, verbose=0,
                                              callbacks=[Hold()]))
    t.start()
    try:
        assert started.wait(30)
        with pytest.raises(RuntimeError, match="one fit or train_on_batch at a time"):
            m.fit(x, y, epochs=1, verbose=0)
        with pytest.raises(RuntimeError, match="one fit or train_on_batch at a time"):
            m.train_on_batch(x[:4], y[:4])
        m.predict(x[:4], verbose=0)  # reading during fit is allowed (see README)
    finally:
        release.set()
        t.join()
    m.fit(x, y, epochs=1, batch_size=32, verbose=0)  # free again afterwards


def test_the_training_arrays_cannot_be_resized_under_a_running_fit():
    """fit keeps raw pointers into x and y: NumPy must refuse to move them, even with
    refcheck=False (before: a heap use-after-free under ASan)."""
    m = _model()
    x, y, _ = blobs(n=128, d=6, k=3)
    errors = []

    class Resize(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                for a in (x, y):
                    try:
                        a.resize((1, a.shape[1]), refcheck=False)
                    except ValueError as e:
                        errors.append(str(e))

    m.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[Resize()])
    assert len(errors) == 2 and all("resize" in e for e in errors)
    assert x.shape == (128, 6)


def test_a_view_of_the_data_pins_its_base_too():
    m = _model()
    x, y, _ = blobs(n=128, d=6, k=3)
    base_x = np.ascontiguousarray(np.concatenate([x, x]))
    refused = []

    class Resize(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                try:
                    base_x.resize((1, 6), refcheck=False)
                except ValueError:
                    refused.append(True)

    m.fit(base_x[:128], y, epochs=1, batch_size=16, verbose=0, callbacks=[Resize()])
    assert refused == [True]


# ---- loose ends ---------------------------------------------------------------------------

def test_callbacks_are_checked_and_a_bare_one_is_accepted():
    m = _model()
    x, y, _ = blobs(n=32, d=6, k=3)
    with pytest.raises(TypeError, match="fastnn.callbacks.Callback. Received: <object"):
        m.fit(x, y, verbose=0, callbacks=[object()])
    seen = []
    m.fit(x, y, epochs=2, verbose=0,
          callbacks=callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(e)))
    assert seen == [0, 1]


def test_a_list_of_batches_is_refused_clearly():
    m = _model()
    x, y, _ = blobs(n=32, d=6, k=3)
    with pytest.raises(TypeError, match=r"does not form an array, such as a list of \(x, y\) batches"):
        m.fit([(x[:16], y[:16]), (x[16:], y[16:])], verbose=0)


def test_numpy_scalars_where_python_numbers_are_accepted():
    m = _model()
    x, y, _ = blobs(n=40, d=6, k=3)
    h = m.fit(x, y, epochs=1, verbose=0, validation_split=np.float32(0.25))
    assert "val_loss" in h.history
    assert layers.Dropout(np.float32(0.5)).rate == 0.5
    fastnn.set_num_threads(np.int64(fastnn.get_num_threads()))


def test_x_with_array_interface_is_accepted_as_y_is():
    class Wrapped:
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a

    m = _model()
    x, y, _ = blobs(n=32, d=6, k=3)
    m.fit(Wrapped(x), Wrapped(y), epochs=1, verbose=0)
    np.testing.assert_array_equal(m.predict(Wrapped(x), verbose=0), m.predict(x, verbose=0))


def test_a_huge_sparse_label_is_reported_as_it_is():
    m = models.Sequential([layers.Dense(3, activation="softmax")])
    m.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"labels in \[0, 3\).*Received: a label 1e\+20"):
        m.fit(np.ones((2, 4), np.float32), np.array([0.0, 1e20]), verbose=0)


# ---- building: memory for the weights and gradients only ---------------------------------

def test_building_a_model_needs_only_its_weights_and_gradients():
    """Before: float64 initializer temporaries and gradients made before the flat copy took
    3-5x the parameter bytes."""
    tracemalloc.start()
    try:
        m = models.Sequential([layers.Dense(2048, input_shape=(2048,)), layers.Dense(10)], seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    nbytes = m.count_params() * 4
    assert peak <= 2 * nbytes + (1 << 20), (peak, nbytes)
    w = m.get_weights()[0]  # and the initializer's distribution is intact
    limit = np.sqrt(6 / (2048 + 2048))
    assert abs(w.min() + limit) < 1e-3 and abs(w.max() - limit) < 1e-3 and abs(w.mean()) < 1e-3


def test_a_model_larger_than_memory_raises_memoryerror_before_allocating():
    with pytest.raises(MemoryError, match="weights and their gradients to fit in memory"):
        models.Sequential([layers.Dense(300_000, input_shape=(300_000,))])


def test_seeded_initialization_is_chunk_independent():
    """Weights are drawn chunk by chunk into the parameter buffer: the same values as one
    draw of the whole array from the same generator."""
    m = models.Sequential([layers.Dense(700, input_shape=(300,))], seed=3)
    rng = fastnn.utils.new_rng(3)
    limit = np.sqrt(6 / (300 + 700))
    np.testing.assert_array_equal(m.get_weights()[0],
                                  rng.uniform(-limit, limit, (300, 700)).astype(np.float32))


def test_optimizer_state_larger_than_memory_raises_memoryerror_before_allocating():
    from fastnn import optimizers
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape=(2**40,), strides=(0,))
    with pytest.raises(MemoryError, match="the Adam state to fit in memory"):
        optimizers.Adam().build([huge])
