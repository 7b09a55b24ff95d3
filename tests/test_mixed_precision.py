"""Mixed bfloat16 training (`fastnn.mixed_precision`, Keras' DTypePolicy names): the policy
API; a mixed Dense layer against a NumPy emulation of bfloat16 rounding (round to nearest even
of float32) with float32 sums, within the bound of tests/tolerances.py; the compiled step
bit-identical to the layer-by-layer one; the NumPy backend's layer-by-layer step as their
oracle; the bf16 kernel paths forced in turn; files and summaries; and (-m slow) the book's
network reaching 0.975 on five seeds."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn
from fastnn import backend, layers, mixed_precision, models, optimizers
from conftest import blobs
from tolerances import bf16_product_atol


@pytest.fixture(autouse=True)
def _reset_policy():
    yield
    mixed_precision.set_global_policy(None)


def bf16(a):
    """float32 -> bfloat16 -> float32, round to nearest even (finite values)."""
    u = np.asarray(a, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


def _model(dtype="mixed_bfloat16", seed=0, hidden=33, inputs=20, out=4):
    return models.Sequential([layers.Dense(hidden, activation="relu", input_shape=(inputs,),
                                           dtype=dtype),
                              layers.Dense(out, activation="softmax", dtype=dtype)], seed=seed)


def _data(n=96, d=20, k=4, seed=0):
    x, y, _ = blobs(n, d, k, seed=seed)
    return x, y


# ---- the policy API ------------------------------------------------------------------------

def test_policies_as_keras_names_them():
    p = mixed_precision.Policy("mixed_bfloat16")
    assert (p.name, p.variable_dtype, p.compute_dtype) == ("mixed_bfloat16", "float32", "bfloat16")
    assert mixed_precision.DTypePolicy("float64").compute_dtype == "float64"
    assert mixed_precision.global_policy().name == "float32"
    mixed_precision.set_global_policy("mixed_bfloat16")
    assert mixed_precision.global_policy() == p
    d = layers.Dense(3)
    assert d.dtype_policy == p and d.dtype == np.float32 and d.get_config()["dtype"] == p.name
    assert layers.Dense.from_config(d.get_config()).dtype_policy == p
    mixed_precision.set_global_policy(None)
    assert layers.Dense(3).dtype_policy.name == "float32"
    assert mixed_precision.DTypePolicy.from_config(p.get_config()) == p
    with pytest.raises(ValueError, match="no float16 kernels"):
        mixed_precision.set_global_policy("mixed_float16")
    with pytest.raises(ValueError, match="Expected dtype"):
        layers.Dense(3, dtype="int8")


# ---- one layer against the emulation -------------------------------------------------------

@pytest.mark.parametrize("act", ["linear", "relu", "softmax"])
def test_mixed_dense_is_bf16_products_with_float32_sums(act):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 37)).astype(np.float32)
    d = layers.Dense(19, activation=act, dtype="mixed_bfloat16",
                     bias_initializer="random_normal")
    y = d(x)
    w, b = d.get_weights()
    xa, wa = bf16(x).astype(np.float64), bf16(w).astype(np.float64)
    z = xa @ wa + b
    tol = bf16_product_atol(np.abs(xa), np.abs(wa)) + 2 ** -23 * np.abs(z)
    if act == "linear":
        assert np.all(np.abs(y - z) <= tol)
    elif act == "relu":
        assert np.all(np.abs(y - np.maximum(z, 0)) <= tol)
    else:
        e = np.exp(z - z.max(1, keepdims=True))
        np.testing.assert_allclose(y, e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-6)
    # the products really are in bfloat16: float32 products differ by more than the bound
    z32 = x.astype(np.float64) @ w.astype(np.float64) + b
    assert np.max(np.abs(z32 - z)) > 10 * np.max(tol)


# ---- the training step -----------------------------------------------------------------------

@pytest.mark.parametrize("opt", ["sgd", "rmsprop", "adam", "nadam"])
@pytest.mark.parametrize("batch_size", [1, 32, 96])
def test_compiled_mixed_step_is_the_layer_by_layer_step(opt, batch_size):
    x, y = _data()
    sw = np.linspace(0.5, 2, len(x)).astype(np.float32)
    out = []
    for jit in ("auto", False):
        m = _model()
        m.compile(opt, "categorical_crossentropy", jit_compile=jit)
        h = m.fit(x, y, sample_weight=sw, epochs=2, batch_size=batch_size, verbose=0)
        t = m.loss.prepare_targets(y, 4, np.float32)
        assert (m.trainer.compiled_step(m.optimizer, x, t, batch_size, sw) is not None) == \
            (jit == "auto")
        out.append((m.get_weights(), m.optimizer.variables, h.history["loss"]))
    for a, b in zip(out[0][0] + out[0][1], out[1][0] + out[1][1]):
        np.testing.assert_array_equal(a, b)
    assert out[0][2] == out[1][2]


@pytest.mark.parametrize("path", ["portable", "avx512bf16", "amx"])
@pytest.mark.parametrize("opt", ["rmsprop", "adam"])
@pytest.mark.parametrize("shape", [(20, 33, 32), (130, 300, 40)], ids=["small", "wide"])
def test_compiled_mixed_step_is_the_layer_by_layer_step_on_every_path(path, opt, shape):
    """The compiled step runs layer 0's backward and its kernel's step as one kernel
    (fnn_dense_backward_step_bf16), each thread on its rows: bit-identical to the layer-by-layer
    step's separate kernels on every path, also where the kernel is big enough to be shared by
    the team (130 x 300 weights) and a batch is not a multiple of 32 rows."""
    K = backend.compiled
    if path not in K.bf16_paths():
        pytest.skip(f"this machine has no {path} path")
    inputs, hidden, batch_size = shape
    x, y = _data(96, inputs)
    out = []
    K.bf16_set_path(path)
    try:
        for jit in ("auto", False):
            m = _model(hidden=hidden, inputs=inputs)
            m.compile(opt, "categorical_crossentropy", jit_compile=jit)
            h = m.fit(x, y, epochs=2, batch_size=batch_size, verbose=0)
            out.append((m.get_weights(), m.optimizer.variables, h.history["loss"]))
    finally:
        K.bf16_set_path(None)
    for a, b in zip(out[0][0] + out[0][1], out[1][0] + out[1][1]):
        np.testing.assert_array_equal(a, b)
    assert out[0][2] == out[1][2]


@pytest.mark.parametrize("case", ["deep", "frozen first"])
def test_compiled_mixed_step_orders_the_other_steps_freely(case):
    """The compiled step runs the small optimizer steps of layers 1.. (fewer than 2^15
    weights) inside layer 0's backward, on its least loaded thread, and the others after it;
    without a trainable layer 0 kernel, all after the backward: each rule is element-wise, so
    the layer-by-layer step's order gives the same bits."""
    x, y = _data(96, 20)
    out = []
    for jit in ("auto", False):
        m = models.Sequential([layers.Dense(200, activation="relu", input_shape=(20,),
                                            dtype="mixed_bfloat16"),
                               layers.Dense(200, activation="relu", dtype="mixed_bfloat16"),
                               layers.Dense(4, activation="softmax", dtype="mixed_bfloat16")],
                              seed=1)
        if case == "frozen first":
            m.layers[0].trainable = False
        m.compile("rmsprop", "categorical_crossentropy", jit_compile=jit)
        t = m.loss.prepare_targets(y, 4, np.float32)
        assert (m.trainer.compiled_step(m.optimizer, x, t, 32, None) is not None) == \
            (jit == "auto")
        h = m.fit(x, y, epochs=2, batch_size=32, verbose=0)
        out.append((m.get_weights(), m.optimizer.variables, h.history["loss"]))
    for a, b in zip(out[0][0] + out[0][1], out[1][0] + out[1][1]):
        np.testing.assert_array_equal(a, b)
    assert out[0][2] == out[1][2]


def _owns_first_layer(threads):
    """Whether the compiled mixed step owns a big first layer by rows at this thread count:
    with OpenMP, more than one thread, on the AMX path (fastnn.h, struct fnn_dense_stack)."""
    K = backend.compiled
    return threads > 1 and bool(K.build_info()["openmp"]) and K.bf16_path() == "amx"


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_row_owned_first_layer_under_mixed_precision(threads):
    """A first layer big enough (batch x inputs x units > 2**21) is owned by rows per thread
    on AMX: thread u's share of the forward product is the 32-row tiles of the kernel that its
    backward + step updates, and the shares' products are added in share order.  That is
    another float32 order of the same bf16 products: the same training as the layer-by-layer
    step to float32 sums (the tolerance of the paths' test below), bit for bit where the layer
    is not owned (one thread, other paths)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((192, 300)).astype(np.float32)  # 300 inputs: 9 tiles and a part
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 192)]
    before = fastnn.get_num_threads()
    runs = []
    try:
        fastnn.set_num_threads(threads)
        for jit in ("auto", False):
            m = _model(hidden=256, inputs=300, seed=1)
            m.compile(optimizers.SGD(0.1), "categorical_crossentropy", jit_compile=jit)
            m.fit(x, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
            if jit == "auto":
                t = m.loss.prepare_targets(y, 4, np.float32)
                stack = m.trainer.compiled_step(m.optimizer, x, t, 32)
                assert stack.owns_first_layer == _owns_first_layer(threads)
            runs.append(m.get_weights())
    finally:
        fastnn.set_num_threads(before)
    for a, b in zip(*runs):
        if _owns_first_layer(threads):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        else:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("n, inputs, units", [(64, 784, 64), (50, 1000, 45)])
def test_the_owned_first_layer_is_bf16_products_with_float32_sums(n, inputs, units):
    """The owned forward itself against the emulation: one compiled step's output of a linear
    layer, within the bound of tests/tolerances.py: the book's 784 inputs (24 full k tiles and
    a half one, in two shares), and a batch and a width that end inside a tile (50 rows, 45
    columns, 1000 inputs: 31 tiles and a quarter)."""
    if not _owns_first_layer(2) or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the first layer is owned by rows only on AMX, with two threads")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2 * n, inputs)).astype(np.float32)
    t = rng.standard_normal((2 * n, units)).astype(np.float32)
    before = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(2)
        m = models.Sequential([layers.Dense(units, input_shape=(inputs,),
                                            dtype="mixed_bfloat16",
                                            bias_initializer="random_normal")], seed=3)
        m.compile(optimizers.SGD(0.01), "mse")
        m.fit(x[:n], t[:n], epochs=1, batch_size=n, verbose=0)  # builds the step
        stack = m.trainer.compiled_step(m.optimizer, x, t, n)
        assert stack.owns_first_layer
        w, b = m.layers[0].get_weights()
        idx = np.arange(n, 2 * n, dtype=np.int64)
        stack.run(idx)  # its predictions: the forward before this step's update
        y = stack.predictions.copy()
    finally:
        fastnn.set_num_threads(before)
    xa, wa = bf16(x[idx]).astype(np.float64), bf16(w).astype(np.float64)
    z = xa @ wa + b
    tol = bf16_product_atol(np.abs(xa), np.abs(wa)) + 2 ** -23 * np.abs(z)
    assert np.all(np.abs(y - z) <= tol)


def test_a_frozen_layer_under_mixed_precision():
    x, y = _data()
    m = _model()
    m.layers[0].trainable = False
    m.compile("adam", "categorical_crossentropy")
    w0 = m.layers[0].get_weights()
    m.fit(x, y, epochs=2, batch_size=32, verbose=0)
    for a, b in zip(m.layers[0].get_weights(), w0):
        np.testing.assert_array_equal(a, b)


def _sgd_epoch(x, y, batch_size=16, dtype="mixed_bfloat16"):
    """The weights after one in-order SGD(0.1) epoch of a fresh mixed model."""
    m = _model(dtype=dtype)
    m.compile(optimizers.SGD(0.1), "categorical_crossentropy")
    m.fit(x, y, epochs=1, batch_size=batch_size, shuffle=False, verbose=0)
    return m.get_weights()


def test_the_numpy_backend_is_the_oracle_of_the_mixed_step():
    # the reference backend emulates bf16 rounding with float32 sums in its own order: the
    # same training to float32 summation differences (a few steps, a tolerance of float32's)
    x, y = _data(64)
    out = []
    for name in ("compiled", "numpy"):
        fastnn.set_backend(name)
        try:
            out.append(_sgd_epoch(x, y))
        finally:
            fastnn.set_backend("compiled")
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_mixed_training_differs_from_float32_but_follows_it():
    x, y = _data()
    res = {}
    for dtype in ("float32", "mixed_bfloat16"):
        res[dtype] = _sgd_epoch(x, y, batch_size=32, dtype=dtype)
    for a, b in zip(res["float32"], res["mixed_bfloat16"]):
        assert not np.array_equal(a, b)
        np.testing.assert_allclose(a, b, atol=2e-2)


@pytest.mark.parametrize("path", ["portable", "avx512bf16", "amx"])
def test_every_bf16_path_trains_the_same_to_float32_sums(path):
    K = backend.compiled
    if path not in K.bf16_paths():
        pytest.skip(f"this machine has no {path} path")
    x, y = _data(64)
    out = []
    for p in ("portable", path):
        K.bf16_set_path(p)
        try:
            out.append(_sgd_epoch(x, y))
        finally:
            K.bf16_set_path(None)
    for a, b in zip(*out):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# ---- files and reports -----------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".keras", ".fastnn"])
def test_files_keep_the_policy(tmp_path, ext):
    pytest.importorskip("h5py")
    x, y = _data(32)
    m = _model()
    m.compile("adam", "categorical_crossentropy")
    m.fit(x, y, epochs=1, verbose=0)
    m.save(tmp_path / f"m{ext}")
    back = models.load_model(tmp_path / f"m{ext}")
    assert [l.dtype_policy.name for l in back.layers] == ["mixed_bfloat16"] * 2
    np.testing.assert_array_equal(back.predict(x, verbose=0), m.predict(x, verbose=0))


def test_summary_and_show_config_name_the_policy_and_path(capsys):
    m = _model()
    lines = []
    m.summary(print_fn=lines.append)
    assert f"Dtype policy: mixed_bfloat16 (bf16 products: {backend.compiled.bf16_path()})" \
        in "\n".join(lines)
    mixed_precision.set_global_policy("mixed_bfloat16")
    fastnn.show_config()
    out = capsys.readouterr().out
    assert "dtype policy: mixed_bfloat16" in out and "bf16 products:" in out


def test_cli_runs_the_main_job_in_mixed_precision(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fastnn", "mnist", "--epochs", "1", "--verbose",
                          "0", "--seed", "0", "--dtype", "mixed_bfloat16"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "dtype policy: mixed_bfloat16" in out.stdout
    assert float(out.stdout.split("test_acc:")[1].split()[0]) > 0.94


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_book_example_in_mixed_bfloat16_every_seed(seed):
    from test_mnist import book_example
    mixed_precision.set_global_policy("mixed_bfloat16")
    assert book_example(seed)[1] >= 0.975
