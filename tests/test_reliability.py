"""Reliability: any array layout is handled, bad input gets a clear error, Ctrl-C stops
cleanly, threads share a model safely, extreme values stay finite."""
import os
import signal
import threading

import numpy as np
import pytest

from fastnn import activations, callbacks, layers, losses, models, optimizers
from conftest import blobs, tiny_model


def _layouts(x, tmp_path):
    """The same values as Fortran-ordered, strided, read-only, big-endian and memory-mapped
    arrays, and as float64."""
    f = np.asfortranarray(x)
    wide = np.zeros((x.shape[0], x.shape[1] * 2), x.dtype)
    wide[:, ::2] = x
    ro = x.copy()
    ro.flags.writeable = False
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=x.dtype, shape=x.shape)
    mm[...] = x
    mm.flush()
    return {"fortran": f, "strided": wide[:, ::2], "read-only": ro, "big-endian": x.astype(">f4"),
            "memmap": np.load(tmp_path / "x.npy", mmap_mode="r"), "float64": x.astype(np.float64)}


def test_every_array_layout_gives_the_same_results(tmp_path):
    x, y, _ = blobs(n=24)
    ref_model = tiny_model(seed=0, optimizer="adam")
    ref_pred = ref_model.predict(x)
    ref_model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
    for name, xv in _layouts(x, tmp_path).items():
        m = tiny_model(seed=0, optimizer="adam")
        np.testing.assert_array_equal(m.predict(xv), ref_pred, err_msg=name)
        m.fit(xv, y, epochs=2, batch_size=8, shuffle=False, verbose=0)
        for a, b in zip(m.get_weights(), ref_model.get_weights()):
            np.testing.assert_array_equal(a, b, err_msg=name)
    assert np.shares_memory(x, x)  # the caller's array is never modified
    np.testing.assert_array_equal(x, blobs(n=24)[0])


@pytest.mark.parametrize("bad, exc, match", [
    (np.zeros((0, 5), "float32"), ValueError, "at least one sample"),
    (np.zeros(5, "float32"), ValueError, r"shape \(batch, ...\)"),
    (np.zeros((2, 5), complex), TypeError, "complex"),
    (np.array([[object()] * 5]), TypeError, "object"),
    ("not an array", TypeError, "NumPy array. Received: str"),
])
def test_bad_x_everywhere(bad, exc, match):
    m = tiny_model(seed=0)
    w = m.get_weights()
    for call in (lambda: m.predict(bad), lambda: m.evaluate(bad, np.zeros((2, 3))),
                 lambda: m.fit(bad, np.zeros((2, 3)), verbose=0),
                 lambda: m.train_on_batch(bad, np.zeros((2, 3)))):
        with pytest.raises(exc, match=match):
            call()
    for a, b in zip(w, m.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_bool_and_int_inputs_and_targets_are_converted():
    x, y, labels = blobs(n=12)
    m = tiny_model(seed=0, loss="sparse_categorical_crossentropy")
    m.fit(x > 0, labels.astype(np.uint8), epochs=1, batch_size=4, verbose=0)
    m2 = tiny_model(seed=0, loss="sparse_categorical_crossentropy")
    m2.fit((x > 0).astype("float32"), labels.astype(np.int64), epochs=1, batch_size=4, verbose=0)
    for a, b in zip(m.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_losses_layers_optimizers_reject_bad_arguments():
    with pytest.raises(ValueError, match=r"Expected y with shape \(batch, 3\).*Received: y.shape=\(4, 2\)"):
        losses.categorical_crossentropy(np.zeros((4, 2)), np.full((4, 3), 1 / 3))
    with pytest.raises(ValueError, match="units to be a positive int. Received: units=0"):
        layers.Dense(0)
    with pytest.raises(ValueError, match=r"rate in \[0, 1\). Received: rate=1.5"):
        layers.Dropout(1.5)
    with pytest.raises(ValueError, match="learning_rate to be a non-negative float. Received: learning_rate=-1"):
        optimizers.Adam(learning_rate=-1)
    with pytest.raises(ValueError, match=r"momentum to be a float in \[0, 1\]"):
        optimizers.SGD(momentum=2.0)
    with pytest.raises(TypeError, match="Expected a fastnn layer"):
        models.Sequential().add("dense")


@pytest.fixture
def python_ctrl_c():
    """Python's own Ctrl-C handler, as an interactive run has it (a shell starts background
    jobs with SIGINT ignored, and Python then keeps it ignored: fit leaves that alone)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_between_steps_keeps_the_last_step_and_can_resume(python_ctrl_c):
    x, y, _ = blobs(n=40)
    m = tiny_model(seed=0)
    after_step = {}

    def begin(batch, logs):
        if m.optimizer.iterations == 6:  # the 7th step is about to run: press Ctrl-C
            signal.raise_signal(signal.SIGINT)  # to this (the main) thread, not any thread

    def end(batch, logs):
        after_step[m.optimizer.iterations] = m.get_weights()
    cb = callbacks.LambdaCallback(on_train_batch_begin=begin, on_train_batch_end=end)
    with pytest.raises(KeyboardInterrupt):  # propagated once the step in progress finished
        m.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[cb])
    h = m.history
    assert m.optimizer.iterations == 7  # the interrupted step completed, no more ran
    for a, b in zip(m.get_weights(), after_step[7]):
        np.testing.assert_array_equal(a, b)
    assert h.epoch == [0]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert m.optimizer.iterations == 12


def test_predict_and_evaluate_from_many_threads_match_serial():
    x, y, _ = blobs(n=300, d=5, k=3, seed=3)
    m = tiny_model(seed=0, metrics=["accuracy"])
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    chunks = [(x[i::4], y[i::4]) for i in range(4)]
    serial = [(m.predict(cx, batch_size=7), m.evaluate(cx, cy, batch_size=7, verbose=0)) for cx, cy in chunks]
    results = [[] for _ in chunks]
    errors = []

    def work(i):
        try:
            for _ in range(25):
                cx, cy = chunks[i]
                results[i].append((m.predict(cx, batch_size=7), m.evaluate(cx, cy, batch_size=7, verbose=0)))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, runs in enumerate(results):
        for pred, ev in runs:
            np.testing.assert_array_equal(pred, serial[i][0])
            assert ev == serial[i][1]


@pytest.mark.parametrize("act", ["softmax", "sigmoid", "tanh", "elu", "gelu"])
def test_extreme_inputs_stay_finite(act):
    x = np.array([[1e4, -1e4, 3.0, -2.0], [-1e4, -1e4, -1e4, -1e4]], "float32")
    y = getattr(activations, act)(x)
    assert np.all(np.isfinite(y))
    m = models.Sequential([layers.Dense(3, activation=act, input_shape=(4,), kernel_initializer="ones")])
    m.compile("sgd", "categorical_crossentropy" if act == "softmax" else "mse")
    p = m.predict(x * 10)  # pre-activations of magnitude 1e5
    assert np.all(np.isfinite(p))
    loss = m.evaluate(x, np.eye(3, dtype="float32")[[0, 1]], verbose=0)
    assert np.isfinite(loss)


def test_kernels_restore_the_callers_floating_point_mode():
    """Kernels flush subnormals while they run (FTZ/DAZ) and must restore the caller's mode:
    NumPy arithmetic afterwards still produces subnormal numbers."""
    from fastnn import _kernels as C
    tiny = np.array([1e-38], np.float32)
    x, y, _ = blobs(n=40)
    m = tiny_model(seed=0, optimizer="rmsprop")
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)  # dense, loss and optimizer kernels
    a = np.full((2, 3), 1e-40, np.float32)
    C.act_forward(np.empty_like(a), a, C.ACT_CODES["sigmoid"], ())
    assert (tiny * np.float32(0.01))[0] > 0  # still a subnormal, not flushed to zero
    assert np.float32(1e-40) * np.float32(1) > 0
