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

    def train(case, dist):
        opt, loss, act, target, batch, dtype = case
        fastnn.config.set_floatx(dtype)
        if dist:
            distribution.set_distribution(distribution.DataParallel())
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
