"""Data-parallel training under real MPI: `mpiexec -n 2` on this machine (loopback only).
Two ranks training with DataParallel reach the weights of a single process with the same seed
and global batch size, for every optimizer and loss, with uneven last batches (one with no row
for a rank); logs are global; only rank 0 prints and writes; an error on one rank ends both.
Skipped, saying why, only where the `[mpi]` extra (mpi4py and an MPI) is not installed."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn
from fastnn import callbacks, distribution, layers, models
from conftest import blobs
from tolerances import TOL

try:
    import mpi4py  # noqa: F401
    MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep
                           + os.environ.get("PATH", ""))
except ImportError:
    MPIEXEC = None
needs_mpi = pytest.mark.skipif(MPIEXEC is None, reason="the [mpi] extra (mpi4py, mpiexec) is "
                               "not installed: pip install 'fastnn[mpi]'")

CASES = {  # name: (optimizer, loss, output activation, targets, batch size, dtype)
    "rmsprop-cce": ("rmsprop", "categorical_crossentropy", "softmax", "onehot", 16, "float64"),
    "adam-scce-b7": ("adam", "sparse_categorical_crossentropy", "softmax", "labels", 7, "float64"),
    "sgd-mse": ("sgd", "mse", "linear", "onehot", 16, "float64"),
    "nadam-bce": ("nadam", "binary_crossentropy", "sigmoid", "onehot", 12, "float64"),
    "rmsprop-cce-f32": ("rmsprop", "categorical_crossentropy", "softmax", "onehot", 16, "float32"),
    # per-sample weights (fit's sample_weight): each rank weighs its share of the batch
    "adam-cce-weighted": ("adam", "categorical_crossentropy", "softmax", "onehot-weighted", 16,
                          "float64"),
}

TRAIN = textwrap.dedent("""
    import json, sys
    import numpy as np
    import fastnn
    from fastnn import callbacks, distribution, layers, models

    def data():
        rng = np.random.default_rng(0)
        labels = rng.integers(0, 3, 49)  # 49 rows: batches of 16 end with 1 row, of 7 with 7
        x = (np.eye(3)[labels] @ rng.standard_normal((3, 6)) * 2 + rng.standard_normal((49, 6)))
        return x, labels

    def train(case, dist, overlap=False):
        opt, loss, act, target, batch, dtype = case
        fastnn.config.set_floatx(dtype)
        if dist:  # overlap: buckets of a row or three of the first kernel's gradient
            distribution.set_distribution(distribution.DataParallel(overlap=overlap,
                                                                    bucket_cap_mb=1e-4))
        x, labels = data()
        y = labels if target == "labels" else np.eye(3)[labels]
        sw = np.linspace(0.2, 2.0, len(x)) if target.endswith("weighted") else None
        m = models.Sequential([layers.Dense(8, activation="tanh", input_shape=(6,)),
                               layers.Dense(3, activation=act)], seed=1)
        # (AUC and Precision: states of confusion counts at thresholds, summed over the ranks;
        # as in Keras, they take targets of the outputs' shape)
        m.compile(opt, loss, metrics=["accuracy"] + (["auc", "precision"]
                                                     if target.startswith("onehot") else []))
        h = m.fit(x.astype(dtype), y, epochs=3, batch_size=batch, verbose=0, validation_split=0.2,
                  sample_weight=sw)
        distribution.set_distribution(None)
        fastnn.config.set_floatx("float32")
        return m.get_weights(), h.history

    def one_row_last(jit, dist):
        # 33 rows in batches of 16: the last batch's one row goes to rank 1, rank 0 gets none
        if dist:
            distribution.set_distribution(distribution.DataParallel(overlap=True,
                                                                    bucket_cap_mb=1e-4))
        x, labels = data()
        m = models.Sequential([layers.Dense(8, activation="tanh", input_shape=(6,)),
                               layers.Dense(3, activation="softmax")], seed=1)
        m.compile("adam", "sparse_categorical_crossentropy", jit_compile=jit)
        m.fit(x[:33], labels[:33], epochs=2, batch_size=16, verbose=0,
              sample_weight=np.linspace(0.2, 2.0, 33))
        distribution.set_distribution(None)
        return m.get_weights()
""")


def _script(tmp_path, body):
    path = tmp_path / "script.py"
    path.write_text(TRAIN + textwrap.dedent(body))
    return path


def _mpiexec(tmp_path, body, n=2, timeout=240):
    return subprocess.run([MPIEXEC, "-n", str(n), sys.executable, str(_script(tmp_path, body))],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


@needs_mpi
def test_two_ranks_reach_the_single_process_weights(tmp_path):
    out = _mpiexec(tmp_path, """
        cases = json.loads(sys.argv[1]) if len(sys.argv) > 1 else None
        r = distribution.DataParallel().rank
        for name, case in CASES.items():
            w, hist = train(case, dist=True)
            np.savez(f"{name}-rank{r}.npz", *w)
            with open(f"{name}-rank{r}.json", "w") as f:
                json.dump(hist, f)
    """.replace("CASES", repr(CASES)))
    assert out.returncode == 0, out.stderr[-3000:]
    exec(compile(TRAIN, "train", "exec"), ns := {})
    for name, case in CASES.items():
        tol = dict(rtol=1e-9, atol=1e-12) if case[-1] == "float64" else dict(rtol=2e-5, atol=1e-6)
        want_w, want_h = ns["train"](case, dist=False)
        ranks = [np.load(tmp_path / f"{name}-rank{r}.npz") for r in (0, 1)]
        for i, w in enumerate(want_w):
            np.testing.assert_array_equal(ranks[0][f"arr_{i}"], ranks[1][f"arr_{i}"])  # one model
            np.testing.assert_allclose(ranks[0][f"arr_{i}"], w, **tol, err_msg=name)
        for r in (0, 1):  # the logs are global: the single process's, on every rank
            got = json.loads((tmp_path / f"{name}-rank{r}.json").read_text())
            assert got.keys() == want_h.keys()
            for k in want_h:
                np.testing.assert_allclose(got[k], want_h[k], **tol, err_msg=f"{name} {k}")


OVERLAP_CASES = ("rmsprop-cce", "adam-scce-b7", "adam-cce-weighted", "rmsprop-cce-f32")


@needs_mpi
def test_two_ranks_with_overlap_reach_the_single_process_weights(tmp_path):
    """DataParallel(overlap=True): the gradients reduced in buckets (non-blocking allreduces
    started by the compiled step's callback as each bucket is final, every layer's and the
    first kernel's in chunks), in float64 and float32, uneven last batches, sample_weight; a
    last batch of one row (the rank that gets none posts the same buckets, of zeros); and a
    model stepped layer by layer (its buckets posted after its backward)."""
    cases = {k: CASES[k] for k in OVERLAP_CASES}
    out = _mpiexec(tmp_path, """
        r = distribution.DataParallel().rank
        posted = []  # (offset, count) of every bucket posted, counted here
        ready = distribution.BucketedAllreduce.ready
        distribution.BucketedAllreduce.ready = lambda self, o, c: (posted.append((o, c)),
                                                                   ready(self, o, c))[-1]
        for name, case in CASES.items():
            posted.clear()
            w, hist = train(case, dist=True, overlap=True)
            np.savez(f"{name}-rank{r}.npz", *w)
            with open(f"{name}-rank{r}.json", "w") as f:
                json.dump(posted, f)
        for jit in (True, False):
            np.savez(f"one-row-{jit}-rank{r}.npz", *one_row_last(jit, dist=True))
    """.replace("CASES", repr(cases)))
    assert out.returncode == 0, out.stderr[-3000:]
    exec(compile(TRAIN, "train", "exec"), ns := {})
    for jit in (True, False):  # the compiled step, and layer by layer (buckets posted after)
        ranks = [np.load(tmp_path / f"one-row-{jit}-rank{r}.npz") for r in (0, 1)]
        for i, w in enumerate(ns["one_row_last"](jit, dist=False)):
            np.testing.assert_array_equal(ranks[0][f"arr_{i}"], ranks[1][f"arr_{i}"])
            np.testing.assert_allclose(ranks[0][f"arr_{i}"], w, rtol=2e-5, atol=1e-6)  # float32
    for name, case in cases.items():
        tol = dict(rtol=1e-9, atol=1e-12) if case[-1] == "float64" else dict(rtol=2e-5, atol=1e-6)
        want_w, _ = ns["train"](case, dist=False)
        ranks = [np.load(tmp_path / f"{name}-rank{r}.npz") for r in (0, 1)]
        for i, w in enumerate(want_w):
            np.testing.assert_array_equal(ranks[0][f"arr_{i}"], ranks[1][f"arr_{i}"])  # one model
            np.testing.assert_allclose(ranks[0][f"arr_{i}"], w, **tol, err_msg=name)
        posted = [json.loads((tmp_path / f"{name}-rank{r}.json").read_text()) for r in (0, 1)]
        assert posted[0] == posted[1]  # the same buckets in the same order on both ranks
        n = sum(w.size for w in want_w)  # 6 x 8 + 8 + 8 x 3 + 3: first kernel in row chunks
        rows = 3 if case[-1] == "float32" else 1  # 100 bytes / (8 values of 4 or 8 bytes)
        cuts = sorted({0, 56} | set(range(8 * rows, 48, 8 * rows)))
        per_step = [[c, n - c] for c in [56]] + [[a, b - a] for a, b in
                                                zip(cuts[-2::-1], cuts[:0:-1])]
        assert posted[0][:len(per_step)] == per_step, name
        assert posted[0] == per_step * (len(posted[0]) // len(per_step)), name


@needs_mpi
def test_ranks_progress_files_and_early_stopping(tmp_path):
    out = _mpiexec(tmp_path, """
        d = distribution.DataParallel()
        distribution.set_distribution(d)
        assert (distribution.rank(), distribution.size(), distribution.is_primary()) == \\
            (d.rank, 2, d.rank == 0)
        x, labels = data()
        m = models.Sequential([layers.Dense(3, activation="softmax", input_shape=(6,))], seed=2)
        m.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
        stop = callbacks.EarlyStopping(monitor="loss", min_delta=10.0, patience=1)
        h = m.fit(x, labels, epochs=20, batch_size=8, verbose=1, callbacks=[
            stop, callbacks.CSVLogger("log.csv")])
        m.save("model.fastnn")
        one = m.train_on_batch(x[:1], labels[:1], return_dict=True)  # a rank gets no row of it
        assert set(one) == {"loss", "accuracy"} and np.isfinite(one["loss"])
        with open(f"epochs-{d.rank}.json", "w") as f:
            json.dump(len(h.epoch), f)
        m.evaluate(x, labels, verbose=1)
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("Epoch 1/20") == 1  # rank 0 prints, rank 1 does not
    epochs = [json.loads((tmp_path / f"epochs-{r}.json").read_text()) for r in (0, 1)]
    assert epochs[0] == epochs[1] == 2  # stopped together (global logs)
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 3  # header + 2 epochs
    assert models.load_model(tmp_path / "model.fastnn").built


@needs_mpi
def test_an_error_on_one_rank_ends_every_rank(tmp_path):
    out = _mpiexec(tmp_path, """
        d = distribution.DataParallel()
        distribution.set_distribution(d)
        x, labels = data()
        m = models.Sequential([layers.Dense(3, activation="softmax", input_shape=(6,))], seed=2)
        m.compile("sgd", "sparse_categorical_crossentropy")

        def fail(epoch, logs):
            if d.rank == 1 and epoch == 1:
                raise RuntimeError("rank 1 fails")
        m.fit(x, labels, epochs=50, batch_size=4, verbose=0,
              callbacks=[callbacks.LambdaCallback(on_epoch_end=fail)])
    """, timeout=120)
    assert out.returncode != 0  # not a hang: rank 0 did not wait in an allreduce for ever
    assert "Traceback" in out.stderr  # (MPI_Abort may cut the rest of the report short)


def test_without_mpi4py_under_mpiexec_the_error_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "from fastnn import distribution\n"
            "distribution.DataParallel()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PMI_SIZE": "2", "PMI_RANK": "0"}, cwd=tmp_path)
    assert out.returncode != 0
    assert "pip install \"fastnn[mpi]\"" in out.stderr


def test_data_parallel_in_a_plain_process_is_a_plain_fit():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 40)]
    runs = []
    for dist in (None, "plain"):
        if dist:
            d = distribution.DataParallel()
            if d.size > 1:
                pytest.skip("running under mpiexec")
            distribution.set_distribution(d)
        try:
            m = models.Sequential([layers.Dense(4, input_shape=(5,)),
                                   layers.Dense(3, activation="softmax")], seed=0)
            m.compile("adam", "categorical_crossentropy")
            m.fit(x, y, epochs=2, batch_size=8, verbose=0)
            runs.append(m.get_weights())
        finally:
            distribution.set_distribution(None)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    assert (distribution.rank(), distribution.size(), distribution.is_primary()) == (0, 1, True)
    with pytest.raises(TypeError, match="DataParallel or None"):
        distribution.set_distribution("data_parallel")


class _Recorder:
    """Stands for distribution.BucketedAllreduce in the compiled step: records every bucket
    handed over, with its contents at that moment and whether layer 0's kernel gradient was
    still unwritten (NaN) then."""

    def __init__(self, g, buckets, kernel0):
        self.g, self.buckets, self.kernel0, self.calls = g, np.asarray(buckets, np.int64), kernel0, []

    def ready(self, off, count):
        self.calls.append((off, count, self.g[off:off + count].copy(),
                           bool(np.isnan(self.kernel0).all())))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("frozen", [False, True])
def test_overlapped_step_hands_over_buckets_that_tile_the_gradients_once_final(dtype, frozen):
    """The grads-only compiled step with buckets (fastnn.h, struct fnn_dense_stack ready):
    it calls ready once per bucket, top first, tiling g exactly, each bucket holding its final
    gradients when handed (g starts as NaN: nothing is handed before it is written); the last
    layer's bucket is handed before layer 0's kernel gradient is computed (the overlap); and
    the gradients equal the step without buckets (layer 0's kernel gradient computed in row
    chunks, to float rounding)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 13)).astype(dtype)
    labels = rng.integers(0, 3, 40)
    y = np.eye(3, dtype=dtype)[labels]
    sw = rng.uniform(0.5, 2.0, 40).astype(dtype)
    m = models.Sequential([layers.Dense(20, activation="relu", input_shape=(13,), dtype=dtype),
                           layers.Dense(7, activation="tanh", dtype=dtype),
                           layers.Dense(3, activation="softmax", dtype=dtype)], seed=0)
    if frozen:  # its gradients lie outside g (pack_parameters): no bucket waits for them
        m.layers[1].trainable = False
    m.compile("adam", "categorical_crossentropy")
    m.fit(x, y, epochs=1, batch_size=40, verbose=0)  # builds the step (m.trainer)
    step, g = m.trainer, m.trainer.grads[0]
    t = m.loss.prepare_targets(y, 3, x.dtype)
    idx = rng.permutation(40)[:16].astype(np.int64)
    plain = step.compiled_step(m.optimizer, x, t, 16, sw, grads_only=True)
    assert plain is not None
    plain.run(idx)
    want = g.copy()
    k0 = m.layers[0].grads[0]
    assert k0.base is not None and np.shares_memory(k0, g) and g.size == len(want)
    top = g.size - (7 * 3 + 3)  # the last layer's gradients start here (it is trainable)
    # boundaries: layer 0's kernel (13 x 20) in chunks, some mid-row, one mid-bias, one in
    # the last layer's kernel, one at a layer's start
    cuts = [0, 7, 40, 41, 200, 13 * 20 + 5, 13 * 20 + 20, top + 4, g.size]
    rec = _Recorder(g, sorted(set(cuts)), k0)
    stack = step.compiled_step(m.optimizer, x, t, 16, sw, grads_only=True, bucketed=rec)
    assert stack is not None and stack is not plain
    for _ in range(2):  # the same buckets every step
        rec.calls = []
        g[...] = np.nan
        stack.run(idx)
        b = rec.buckets
        assert [(o, c) for o, c, _, _ in rec.calls] == \
            [(int(b[i]), int(b[i + 1] - b[i])) for i in range(len(b) - 2, -1, -1)]
        tol = TOL[np.dtype(dtype).type]
        for o, c, seen, _ in rec.calls:
            np.testing.assert_array_equal(seen, g[o:o + c])  # final when handed
        np.testing.assert_allclose(g, want, **tol)
        assert rec.calls[0][3]  # the top bucket went before layer 0's kernel gradient ran
        assert not rec.calls[-1][3]


def test_overlapped_step_refuses_buckets_it_cannot_honour():
    x, y, _ = blobs(n=20, d=6, k=3)
    m = models.Sequential([layers.Dense(4, input_shape=(6,)),
                           layers.Dense(3, activation="softmax")], seed=0)
    m.compile("sgd", "categorical_crossentropy")
    m.fit(x, y, epochs=1, batch_size=20, verbose=0)
    g = m.trainer.grads[0]
    t = m.loss.prepare_targets(y, 3, x.dtype)
    for buckets, match in [([0, g.size - 1], "ascending from 0"), ([0, 9, 9, g.size], "ascending"),
                           ([1, g.size], "ascending from 0")]:
        with pytest.raises(ValueError, match=match):
            m.trainer.compiled_step(m.optimizer, x, t, 5, grads_only=True,
                                    bucketed=_Recorder(g, buckets, g))
    with pytest.raises(ValueError, match="grads-only"):
        m.trainer.compiled_step(m.optimizer, x, t, 6, bucketed=_Recorder(g, [0, g.size], g))
    # gradients in g out of layer order (layer 1's below layer 0's): a bucket handed once
    # layer 1 is done would hold layer 0's unfinished gradients
    l0, l1 = m.layers
    l0.grads, l1.grads = [g[15:39].reshape(6, 4), g[39:43]], [g[:12].reshape(4, 3), g[12:15]]
    assert g.size == 43
    with pytest.raises(ValueError, match="in layer order"):
        m.trainer.compiled_step(m.optimizer, x, t, 7, grads_only=True,
                                bucketed=_Recorder(g, [0, 20, g.size], g))
    with pytest.raises(ValueError, match="overlap to be True or False"):
        distribution.DataParallel(overlap="yes")
    with pytest.raises(ValueError, match="bucket_cap_mb"):
        distribution.DataParallel(bucket_cap_mb=0)


def test_an_exception_in_ready_is_raised_after_the_step():
    x, y, _ = blobs(n=20, d=6, k=3)
    m = models.Sequential([layers.Dense(4, input_shape=(6,)),
                           layers.Dense(3, activation="softmax")], seed=0)
    m.compile("sgd", "categorical_crossentropy")
    m.fit(x, y, epochs=1, batch_size=20, verbose=0)
    g = m.trainer.grads[0]
    t = m.loss.prepare_targets(y, 3, x.dtype)
    rec = _Recorder(g, [0, 10, g.size], g)
    calls = []

    def fail(off, count):
        calls.append(off)
        raise KeyError("from ready")
    rec.ready = fail
    stack = m.trainer.compiled_step(m.optimizer, x, t, 5, grads_only=True, bucketed=rec)
    with pytest.raises(KeyError, match="from ready"):
        stack.run(np.arange(5, dtype=np.int64))
    assert calls == [10]  # the first failure stops the calls; the step ran to its end
