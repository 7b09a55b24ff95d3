"""fit's compiled training step (`_kernels.DenseStack`, one call into C per step) against
the Python step that calls the same kernels one by one: the weights, optimizer state and
logged losses must be bit-identical, for every optimizer, loss and activation it takes; and
equal to float32 rounding where a big first layer is owned by rows per thread."""
import functools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn
from fastnn import _kernels, activations, callbacks, layers, losses, models, optimizers
from conftest import blobs


def _model(hidden_act="relu", out_act="softmax", use_bias=True, flatten=False, seed=3,
           dtype=None):
    first = [layers.Flatten(input_shape=(2, 3)),
             layers.Dense(7, activation=hidden_act, use_bias=use_bias, dtype=dtype)] if flatten \
        else [layers.Dense(7, activation=hidden_act, use_bias=use_bias, input_shape=(6,), dtype=dtype)]
    return models.Sequential(first + [layers.Dense(5, activation="tanh", dtype=dtype),
                                      layers.Dense(3, activation=out_act, dtype=dtype)], seed=seed)


def _compiled_steps(m, x, y, *batch_sizes):
    """The compiled step each batch size runs with (None: layer by layer)."""
    xp = np.ascontiguousarray(x, m.layers[0].dtype)
    t = m.loss.prepare_targets(y, m.output_shape[-1], xp.dtype)
    return [m.trainer.compiled_step(m.optimizer, xp, t, n) for n in batch_sizes]


def _train(compiled_step, make_opt, loss, x, y, batch_size, **model_kw):
    """Train a fresh model; compiled_step=False runs it layer by layer (jit_compile=False)."""
    m = _model(**model_kw)
    m.compile(make_opt(), loss, metrics=["accuracy"], jit_compile="auto" if compiled_step else False)
    logged = []
    cb = callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: logged.append(logs["loss"]))
    m.fit(x, y, epochs=2, batch_size=batch_size, verbose=0, callbacks=[cb])
    last = len(x) % batch_size or batch_size
    used = _compiled_steps(m, x, y, batch_size, last)
    state = [a.copy() for a in m.optimizer.variables]
    return m.get_weights(), state, logged, used


OPTIMIZERS = {
    "sgd": lambda: optimizers.SGD(0.05),
    "sgd_nesterov_wd": lambda: optimizers.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adagrad": lambda: optimizers.Adagrad(0.05),
    "rmsprop": lambda: optimizers.RMSprop(),
    "rmsprop_centered_momentum": lambda: optimizers.RMSprop(momentum=0.5, centered=True, weight_decay=0.004),
    "adam": lambda: optimizers.Adam(0.01),
    "adam_amsgrad_schedule": lambda: optimizers.Adam(
        optimizers.schedules.ExponentialDecay(0.01, decay_steps=3, decay_rate=0.5), amsgrad=True),
    "adamw": lambda: optimizers.AdamW(0.01),
    "nadam_wd": lambda: optimizers.Nadam(0.01, weight_decay=0.004),
}


def _assert_same(a, b):
    (wa, sa, la, used_a), (wb, sb, lb, used_b) = a, b
    assert used_a and all(s is not None for s in used_a), "the compiled step did not run"
    assert used_b == [None] * len(used_b)
    for u, v in zip(wa + sa, wb + sb):
        assert np.array_equal(u, v)
    assert la == lb


@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("batch_size", [1, 7, 16])  # 7: a last partial batch; 1: the rank-1 step
def test_compiled_step_is_the_python_step_for_every_optimizer(opt, batch_size):
    x, y, _ = blobs(n=30, d=6, k=3)
    runs = [_train(c, OPTIMIZERS[opt], "categorical_crossentropy", x, y, batch_size)
            for c in (True, False)]
    _assert_same(*runs)


@pytest.mark.parametrize("loss, out_act, target", [
    ("categorical_crossentropy", "softmax", "onehot"),
    ("sparse_categorical_crossentropy", "softmax", "labels"),
    ("categorical_crossentropy", "sigmoid", "onehot"),  # not fused: the loss's own gradient
    ("sparse_categorical_crossentropy", "sigmoid", "labels"),
    ("binary_crossentropy", "sigmoid", "onehot"),
    ("mse", "linear", "onehot"),
])
def test_compiled_step_is_the_python_step_for_every_loss(loss, out_act, target):
    x, y, labels = blobs(n=30, d=6, k=3)
    t = labels if target == "labels" else y
    runs = [_train(c, OPTIMIZERS["rmsprop"], loss, x, t, 8, out_act=out_act)
            for c in (True, False)]
    _assert_same(*runs)


@pytest.mark.parametrize("act", list(activations.NAMES) + [
    functools.partial(activations.relu, negative_slope=0.1, max_value=2.0, threshold=0.2),
    functools.partial(activations.relu, max_value=6.0), functools.partial(activations.elu, alpha=0.4),
    functools.partial(activations.gelu, approximate=True)], ids=repr)
def test_compiled_step_is_the_python_step_for_every_activation(act):
    """Every activation (and kernel code: relu with arguments, relu6, gelu's tanh form) as a
    hidden layer: the compiled step gives the layer-by-layer step's results bit for bit."""
    x, y, _ = blobs(n=30, d=6, k=3)
    runs = [_train(c, OPTIMIZERS["adam"], "categorical_crossentropy", x, y, 8,
                   hidden_act=act, use_bias=act != "tanh") for c in (True, False)]
    _assert_same(*runs)


def test_compiled_step_takes_flatten_and_float64():
    x, y, _ = blobs(n=30, d=6, k=3)
    images = x.reshape(30, 2, 3)
    _assert_same(*[_train(c, OPTIMIZERS["sgd"], "categorical_crossentropy", images, y, 8,
                          flatten=True) for c in (True, False)])
    _assert_same(*[_train(c, OPTIMIZERS["rmsprop"], "categorical_crossentropy", x.astype(np.float64),
                          y, 8, dtype="float64") for c in (True, False)])


def test_python_step_where_the_compiled_one_does_not_apply():
    x, y, _ = blobs(n=30, d=6, k=3)
    cases = {
        "dropout": models.Sequential([layers.Dense(4, input_shape=(6,)), layers.Dropout(0.5),
                                      layers.Dense(3, activation="softmax")], seed=0),
        "activation layer": models.Sequential([layers.Dense(4, input_shape=(6,)),
                                               layers.Activation("relu"),
                                               layers.Dense(3, activation="softmax")], seed=0),
    }
    for name, m in cases.items():
        m.compile("sgd", "categorical_crossentropy")
        m.fit(x, y, epochs=1, batch_size=10, verbose=0)
        assert _compiled_steps(m, x, y, 10) == [None], name
    m = _model(out_act="linear")
    m.compile("sgd", losses.CategoricalCrossentropy(from_logits=True))
    m.fit(x, y, epochs=1, batch_size=10, verbose=0)
    assert _compiled_steps(m, x, y, 10) == [None]
    m = _model()
    m.compile("sgd", "categorical_crossentropy", jit_compile=False)
    assert _compiled_steps(m, x, y, 10) == [None]
    fastnn.set_backend("numpy")
    try:
        m = _model()
        m.compile("sgd", "categorical_crossentropy")
        m.fit(x, y, epochs=1, batch_size=10, verbose=0)
        assert _compiled_steps(m, x, y, 10) == [None]
    finally:
        fastnn.set_backend("compiled")


@pytest.mark.parametrize("opt", ["rmsprop", "adam_amsgrad_schedule", "nadam_wd"])
def test_compiled_step_matches_the_numpy_reference_step(opt):
    """The compiled step against its oracle: the same model trained on the NumPy backend
    (the layer-by-layer step on the reference kernels), to float64 rounding."""
    x, y, _ = blobs(n=30, d=6, k=3)
    runs = []
    for name in ("compiled", "numpy"):
        fastnn.set_backend(name)
        try:
            m = _model(dtype="float64")
            m.compile(OPTIMIZERS[opt](), "categorical_crossentropy")
            m.fit(x.astype(np.float64), y, epochs=2, batch_size=8, verbose=0)
            if name == "compiled":
                assert all(s is not None for s in _compiled_steps(m, x, y, 8, 6))
            runs.append(m.get_weights() + [a.copy() for a in m.optimizer.variables])
        finally:
            fastnn.set_backend("compiled")
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_train_on_batch_runs_the_compiled_step():
    """Where the compiled step runs, it is the only step: train_on_batch takes it too, and
    gives what the layer-by-layer step gives."""
    x, y, _ = blobs(n=16, d=6, k=3)
    out = []
    for jit in ("auto", False):
        m = _model()
        m.compile("adam", "categorical_crossentropy", jit_compile=jit)
        losses_ = [m.train_on_batch(x, y) for _ in range(3)]
        out.append((losses_, m.get_weights()))
        assert (_compiled_steps(m, x, y, 16)[0] is not None) == (jit == "auto")
    assert out[0][0] == out[1][0]
    for a, b in zip(out[0][1], out[1][1]):
        assert np.array_equal(a, b)


def test_compiled_step_follows_a_rebuilt_optimizer_state():
    """A callback that swaps the optimizer mid-fit brings new state: the step must use it."""
    x, y, _ = blobs(n=40, d=6, k=3)
    m = _model()
    m.compile("adam", "categorical_crossentropy")
    after_first = []

    def swap(epoch, logs):
        if epoch == 0:
            after_first.extend(m.get_weights())
            m.optimizer = optimizers.SGD(0.0)  # learning rate 0: the weights must not move
    m.fit(x, y, epochs=2, batch_size=8, verbose=0,
          callbacks=[callbacks.LambdaCallback(on_epoch_end=swap)])
    assert m.optimizer.iterations == 5
    for a, b in zip(after_first, m.get_weights()):
        assert np.array_equal(a, b)


def _fitted_stack(optimizer):
    """A model fitted one epoch on 30 samples in batches of 10, and its compiled step."""
    x, y, _ = blobs(n=30, d=6, k=3)
    m = _model()
    m.compile(optimizer, "categorical_crossentropy")
    m.fit(x, y, epochs=1, batch_size=10, verbose=0)
    return m, _compiled_steps(m, x, y, 10)[0]


def test_compiled_step_refuses_bad_indices():
    _, stack = _fitted_stack("sgd")
    with pytest.raises(ValueError, match=r"Expected idx in \[0, 30\)"):
        stack.run(np.arange(25, 35, dtype=np.int64))
    with pytest.raises(ValueError, match="shape"):
        stack.run(np.arange(5, dtype=np.int64))
    with pytest.raises(TypeError, match="int64"):
        stack.run(np.arange(10, dtype=np.int32))


_WATCH_BLAS = textwrap.dedent("""
    import ctypes, glob, os, threading
    import numpy as np, scipy_openblas32, fastnn
    from fastnn import layers, models
    lib = ctypes.CDLL(glob.glob(os.path.join(scipy_openblas32.get_lib_dir(), "*.so*"))[0])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1024, 784)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, 1024)]
    m = models.Sequential([layers.Dense(512, activation="relu", input_shape=(784,)),
                           layers.Dense(10, activation="softmax")], seed=1)
    m.compile("rmsprop", "categorical_crossentropy")
    fastnn.set_num_threads(2)
    seen, done = set(), threading.Event()
    def watch():
        while not done.is_set():
            seen.add(lib.scipy_openblas_get_num_threads())
    watcher = threading.Thread(target=watch)
    watcher.start()
    m.fit(x, y, epochs=3, batch_size=128, verbose=0)
    done.set()
    watcher.join()
    print(sorted(seen))
""")


@pytest.mark.skipif(not _kernels.build_info()["openmp"], reason="built without OpenMP")
def test_the_row_owned_step_never_changes_the_blas_thread_count():
    """The per-thread products of a row-owned first layer (the book's network at two threads)
    run in fastnn's own GEMM: the BLAS's thread count, read from another thread all through
    fit, stays the caller's 2 (it used to drop to 1 for those products).  In a child process
    without the contention monitor (FASTNN_ALLOW_OVERSUBSCRIPTION=1), which would otherwise
    shrink the count for the busy watching thread."""
    env = dict(os.environ, FASTNN_ALLOW_OVERSUBSCRIPTION="1")
    out = subprocess.run([sys.executable, "-c", _WATCH_BLAS], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[2]"]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_row_owned_first_layer_trains_as_the_python_step(threads):
    """A first layer big enough (batch x inputs x units > 2**21) is computed with each thread
    owning a block of its kernel's rows: the forward product is summed in per-thread parts,
    which rounds differently from one BLAS call, so the weights agree with the Python step to
    float32 rounding rather than bit for bit (one thread: no split, bit for bit)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((192, 300)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 192)]
    before = fastnn.get_num_threads()
    runs = []
    try:
        fastnn.set_num_threads(threads)
        for compiled_step in (True, False):
            m = models.Sequential([layers.Dense(256, activation="relu", input_shape=(300,)),
                                   layers.Dense(4, activation="softmax")], seed=1)
            m.compile("rmsprop", "categorical_crossentropy", jit_compile="auto" if compiled_step else False)
            m.fit(x, y, epochs=2, batch_size=32, verbose=0)
            if compiled_step:
                stack = _compiled_steps(m, x, y, 32)[0]
                openmp = bool(_kernels.build_info()["openmp"])  # else one thread only
                assert stack.owns_first_layer == (threads > 1 and openmp)
                assert _kernels.get_num_threads()["blas"] == threads  # set back after the step
            runs.append(m.get_weights() + [a.copy() for a in m.optimizer.variables])
    finally:
        fastnn.set_num_threads(before)
    for a, b in zip(*runs):
        if threads == 1:
            assert np.array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_a_compiled_step_without_optimizer_leaves_the_layer_by_layer_gradients():
    # (the data-parallel step: each rank's gradients in one call, then the allreduce)
    x, y, _ = blobs(40, 6, 3)
    m = _model()
    m.compile(optimizers.RMSprop(), "categorical_crossentropy")
    t = m.loss.prepare_targets(y, 3, np.float32)
    sw = np.linspace(0.5, 1.5, 40).astype(np.float32)
    idx = np.arange(3, 19, dtype=np.int64)
    w0 = m.get_weights()
    m.trainer.gradients(x[idx], t[idx], sw[idx])
    want = [g.copy() for l in m.layers for g in l.grads]
    stack = m.trainer.compiled_step(m.optimizer, x, t, len(idx), sw, grads_only=True)
    assert stack is not None and not stack.owns_first_layer
    stack.run(idx)
    for a, b in zip([g for l in m.layers for g in l.grads], want):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(m.get_weights(), w0):  # nothing stepped
        np.testing.assert_array_equal(a, b)


def test_the_step_arrays_start_on_cache_lines():
    """The weights, gradients, optimizer state and batch buffers start on 64-byte boundaries
    (fastnn._data.aligned_empty): NumPy's own large arrays start 16 bytes past one, which cost
    the bf16 step 12% (bench/e2e.py, same run)."""
    from fastnn import _data
    for shape, dtype in [((3,), np.float32), ((5, 7), np.float64), ((0,), np.uint16)]:
        a = _data.aligned_empty(shape, dtype, zero=True)
        assert a.shape == shape and a.dtype == dtype and (a == 0).all()
        assert a.size == 0 or a.ctypes.data % 64 == 0  # (an empty array's pointer is NumPy's)
    x, y, _ = blobs(n=40, d=30)
    m = models.Sequential([layers.Dense(64, activation="relu", input_shape=(30,)),
                           layers.Dense(3, activation="softmax")], seed=0)
    m.compile("rmsprop", "categorical_crossentropy")
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)
    stack = _compiled_steps(m, x, y, 8)[0]
    assert stack is not None
    arrays = [m.weights[0], m.trainer.grads[0], *m.optimizer.variables[1:]]
    assert all(a.ctypes.data % 64 == 0 for a in arrays if a.ndim)


# ---- fit's joined steps: runs of batches in one call into C (DenseStack.run_steps) ----------

def _fit_calls(monkeypatch, join, make_opt, x, y, batch_size, dtype=None,
               loss="categorical_crossentropy", metrics=None, weighted_metrics=None, **fit_kw):
    """Fit a fresh model with nothing between steps (join: no batch hook; else a batch hook
    that does nothing, so every step is its own call).  Returns (weights, optimizer state,
    losses logged per epoch, iterations, the steps per joined call that C ran, the history)."""
    from fastnn import _step
    calls = []
    run_steps = _step.TrainStep.run_steps

    def counting(self, optimizer, x, t, idx, n, sw=None, keep=False):
        losses = run_steps(self, optimizer, x, t, idx, n, sw, keep)
        calls.append(None if losses is None else len(losses))
        return losses
    monkeypatch.setattr(_step.TrainStep, "run_steps", counting)
    m = _model(dtype=dtype)
    m.compile(make_opt(), loss, metrics=metrics, weighted_metrics=weighted_metrics)
    cbs = [] if join else [callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: None)]
    h = m.fit(x, y, batch_size=batch_size, verbose=0, callbacks=cbs, **fit_kw)
    state = [a.copy() for a in m.optimizer.variables]
    return m.get_weights(), state, h.history["loss"], m.optimizer.iterations, calls, h.history


@pytest.mark.parametrize("dtype", [None, "float64", "mixed_bfloat16"])
@pytest.mark.parametrize("opt", ["sgd_nesterov_wd", "rmsprop", "adam_amsgrad_schedule",
                                 "nadam_wd"])
def test_joined_steps_are_fits_step_by_step_steps(monkeypatch, opt, dtype):
    """fit joins steps where nothing runs between them: the same bits as one call per step
    (the optimizer's scalars, a schedule's rate and nadam's product, counted step by step)."""
    x, y, _ = blobs(n=200, d=6, k=3)
    fit = functools.partial(_fit_calls, monkeypatch, make_opt=OPTIMIZERS[opt], x=x, y=y,
                            batch_size=7, dtype=dtype, epochs=3)
    joined, single = fit(join=True), fit(join=False)
    assert max(joined[4]) > 1 and None not in joined[4]  # steps were joined, all in C
    assert single[4] == []
    for u, v in zip(joined[0] + joined[1], single[0] + single[1]):
        assert np.array_equal(u, v)
    assert joined[2] == single[2] and joined[3] == single[3] == 3 * 29


@pytest.mark.parametrize("dtype", [None, "mixed_bfloat16"])
def test_joined_steps_with_sample_weights_and_integer_labels(monkeypatch, dtype):
    """Per-sample weights (gathered with each joined step's rows) and a sparse loss."""
    x, _, labels = blobs(n=150, d=6, k=3)
    sw = np.random.default_rng(2).uniform(0.1, 2.0, len(x)).astype(np.float32)
    fit = functools.partial(_fit_calls, monkeypatch, make_opt=OPTIMIZERS["adam"], x=x,
                            y=labels, batch_size=8, dtype=dtype, epochs=2, sample_weight=sw,
                            loss="sparse_categorical_crossentropy")
    joined, single = fit(join=True), fit(join=False)
    assert max(joined[4]) > 1 and None not in joined[4] and single[4] == []
    for u, v in zip(joined[0] + joined[1], single[0] + single[1]):
        assert np.array_equal(u, v)
    assert joined[2] == single[2]


def test_joined_steps_with_steps_per_epoch(monkeypatch):
    """Epochs of 10 steps over 30 batches (each epoch goes on where the last one stopped):
    each epoch's first step alone (it times the step), then the others joined, never across
    an epoch's end (nine in one call unless a step takes over 3 ms)."""
    x, y, _ = blobs(n=210, d=6, k=3)
    fit = functools.partial(_fit_calls, monkeypatch, make_opt=OPTIMIZERS["rmsprop"], x=x, y=y,
                            batch_size=7, epochs=3, steps_per_epoch=10)
    joined, single = fit(join=True), fit(join=False)
    assert max(joined[4]) > 1 and all(c <= 9 for c in joined[4])
    for u, v in zip(joined[0] + joined[1], single[0] + single[1]):
        assert np.array_equal(u, v)
    assert joined[2] == single[2] and joined[3] == single[3] == 30


def test_joined_steps_fall_back_where_the_step_is_not_compiled(monkeypatch):
    """Where the step runs layer by layer (an optimizer that clips the whole gradient) the
    joined batches are stepped one by one: the same results as with a batch hook."""
    x, y, _ = blobs(n=100, d=6, k=3)
    fit = functools.partial(_fit_calls, monkeypatch, x=x, y=y, batch_size=8, epochs=2,
                            make_opt=lambda: optimizers.Adam(0.01, global_clipnorm=0.5),
                            steps_per_epoch=5)
    joined, single = fit(join=True), fit(join=False)
    assert joined[4] and set(joined[4]) == {None}  # asked, and refused
    for u, v in zip(joined[0] + joined[1], single[0] + single[1]):
        assert np.array_equal(u, v)
    assert joined[2] == single[2] and joined[3] == single[3] == 10


@pytest.mark.parametrize("dtype", [None, "float64", "mixed_bfloat16"])
@pytest.mark.parametrize("sparse", [False, True], ids=["one-hot", "labels"])
def test_joined_steps_with_accuracy_metrics(monkeypatch, dtype, sparse):
    """Accuracy metrics (a count of samples) take a joined run's predictions at once: the
    same weights and the same logged accuracy, bit for bit, as one step per call."""
    x, y, labels = blobs(n=200, d=6, k=3)
    fit = functools.partial(
        _fit_calls, monkeypatch, make_opt=OPTIMIZERS["rmsprop"], x=x,
        y=labels if sparse else y, batch_size=7, dtype=dtype, epochs=3,
        loss="sparse_categorical_crossentropy" if sparse else "categorical_crossentropy",
        metrics=["accuracy", "sparse_top_k_categorical_accuracy" if sparse
                 else "top_k_categorical_accuracy"])
    joined, single = fit(join=True), fit(join=False)
    assert max(joined[4]) > 1 and None not in joined[4] and single[4] == []
    for u, v in zip(joined[0] + joined[1], single[0] + single[1]):
        assert np.array_equal(u, v)
    assert joined[5] == single[5] and len(joined[5]) == 3
    hits = np.array(joined[5]["accuracy"]) * len(x)  # a count of the epoch's 200 samples
    assert np.allclose(hits, np.round(hits), rtol=0, atol=1e-9) and hits[-1] > hits[0]


def test_metrics_that_do_not_join_exactly_keep_a_call_per_step(monkeypatch):
    """A mean of float values (mae), or an accuracy weighted by sample weights, sums in another
    order when its batches are joined: fit then steps one batch per call."""
    x, y, _ = blobs(n=120, d=6, k=3)
    sw = np.random.default_rng(2).uniform(0.1, 2.0, len(x)).astype(np.float32)
    for kw in ({"metrics": ["mae"]},
               {"weighted_metrics": ["accuracy"], "sample_weight": sw}):
        joined = _fit_calls(monkeypatch, True, OPTIMIZERS["adam"], x, y, 8, epochs=2, **kw)
        single = _fit_calls(monkeypatch, False, OPTIMIZERS["adam"], x, y, 8, epochs=2, **kw)
        assert all(c in (None, 1) for c in joined[4])  # never more than a step per call
        assert joined[5] == single[5]


def test_the_progress_bar_alone_lets_fit_join_steps(monkeypatch, capsys):
    """The progress bar (verbose=1, 2) is drawn after each joined run of steps, with the
    run's last step and the running loss: the same weights and logs as one call per step,
    and the same last line of each epoch; a callback of the user's with a batch hook, or a
    progress bar subclass that overrides one, still gets every batch."""
    from fastnn import _step
    x, y, _ = blobs(n=203, d=6, k=3)  # 29 batches of 7: the epoch's last run joins steps
    calls = []
    run_steps = _step.TrainStep.run_steps

    def counting(self, optimizer, x, t, idx, n, sw=None, keep=False):
        losses = run_steps(self, optimizer, x, t, idx, n, sw, keep)
        calls.append(len(losses))
        return losses
    monkeypatch.setattr(_step.TrainStep, "run_steps", counting)
    seen = []

    class Bar(callbacks.ProgbarLogger):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)
            super().on_train_batch_end(batch, logs)

    def fit(verbose, cbs=()):
        calls.clear()
        m = _model()
        m.compile(OPTIMIZERS["rmsprop"](), "categorical_crossentropy")
        h = m.fit(x, y, batch_size=7, epochs=2, verbose=verbose, callbacks=list(cbs))
        out = capsys.readouterr().out
        return m.get_weights(), h.history["loss"], list(calls), out
    quiet = fit(0)
    for verbose in (1, 2):
        shown = fit(verbose)
        assert max(shown[2]) > 1  # joined, as with verbose=0
        for u, v in zip(shown[0], quiet[0]):
            assert np.array_equal(u, v)
        assert shown[1] == quiet[1]
        lines = shown[3].splitlines()
        assert [ln for ln in lines if ln.startswith("Epoch")] == ["Epoch 1/2", "Epoch 2/2"]
        last = [ln for ln in lines if ln.startswith("29/29")]
        assert len(last) == 2 and all(f"loss: {v:.4f}" in ln for ln, v in zip(last, quiet[1]))
    bar = callbacks.ProgbarLogger()  # the user's own bar: drawn last after step 29 of 29
    assert max(fit(1, [bar])[2]) > 1 and bar.seen == 29
    every = fit(1, [callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: None)])
    assert every[2] == [] and every[1] == quiet[1]
    seen.clear()
    sub = fit(1, [Bar()])
    assert sub[2] == [] and seen == list(range(29)) * 2


def test_joined_batches_keep_the_epochs_order():
    from fastnn import _batches
    order = np.random.default_rng(0).permutation(100)
    epoch = ((s, _batches.Batch(None, None, None, [], order[i:i + 7]))
             for s, i in enumerate(range(0, 100, 7)))  # 14 batches of 7, then 2
    got = list(_batches.joined(epoch, lambda: 4))
    assert [(s, c, len(b.idx)) for s, b, c in got] == [(0, 4, 28), (4, 4, 28), (8, 4, 28),
                                                       (12, 2, 14), (14, 1, 2)]
    assert np.array_equal(np.concatenate([b.idx for _, b, _ in got]), order)


def test_run_steps_refuses_bad_scalars_and_indices():
    m, stack = _fitted_stack("adam")
    before = m.get_weights()
    ok = np.array([[0.01, 4, 1.0], [0.01, 5, 1.0]])
    with pytest.raises(ValueError, match=r"Expected idx in \[0, 30\)"):
        stack.run_steps(np.arange(15, 35, dtype=np.int64), ok)
    with pytest.raises(ValueError, match="shape"):
        stack.run_steps(np.arange(10, dtype=np.int64), ok)  # 10 indices for 2 steps of 10
    with pytest.raises(ValueError, match="shape"):
        stack.run_steps(np.arange(20, dtype=np.int64), ok[:, :2])
    with pytest.raises(ValueError, match="t >= 1"):
        stack.run_steps(np.arange(20, dtype=np.int64), np.array([[0.01, 0, 1.0]] * 2))
    with pytest.raises(TypeError, match="float64"):
        stack.run_steps(np.arange(20, dtype=np.int64), ok.astype(np.float32))
    assert all(np.array_equal(u, v) for u, v in zip(before, m.get_weights()))  # nothing ran
    stack.run_steps(np.arange(20, dtype=np.int64), ok)
    assert not all(np.array_equal(u, v) for u, v in zip(before, m.get_weights()))
