"""fastnn in a forked child (GNU OpenMP's thread pool does not survive fork): after training
and predicting in the parent, a child made by os.fork, a multiprocessing fork Process or a
fork Pool trains and predicts correctly, with the default threads and with set_num_threads,
and never hangs.  Each case runs in its own interpreter with a timeout."""
import os
import subprocess
import sys
import textwrap

import pytest

if sys.platform == "win32":
    pytest.skip("no fork on Windows", allow_module_level=True)

PRELUDE = textwrap.dedent("""
    import os, sys, multiprocessing as mp
    import numpy as np
    import fastnn
    from fastnn import layers, models

    rng = np.random.default_rng(0)
    x = rng.random((512, 300), dtype=np.float32)
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 512)]

    def train(threads=None):
        if threads:
            fastnn.set_num_threads(threads)
        m = models.Sequential([layers.Dense(256, activation="relu", input_shape=(300,)),
                               layers.Dense(4, activation="softmax")], seed=0)
        m.compile("rmsprop", "categorical_crossentropy")
        m.fit(x, y, epochs=2, batch_size=128, verbose=0)
        return m.predict(x, batch_size=128, verbose=0)

    def work(threads=None):
        return float(np.abs(train(threads) - parent).max())

    parent = train()                      # fastnn's threads ran in the parent
""")

CASES = {
    "os.fork": """
        pid = os.fork()
        if pid == 0:
            err = work(2)
            os._exit(0 if err < 1e-4 else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
    """,
    "multiprocessing fork Process": """
        ctx = mp.get_context("fork")
        q = ctx.Queue()
        p = ctx.Process(target=lambda: q.put(work()))
        p.start()
        err = q.get(timeout=120)
        p.join()
        assert p.exitcode == 0 and err < 1e-4, (p.exitcode, err)
    """,
    "multiprocessing fork Pool": """
        with mp.get_context("fork").Pool(2) as pool:
            errs = pool.map(work, [None, 1, 2])
        assert max(errs) < 1e-4, errs
    """,
}


@pytest.mark.parametrize("case", list(CASES))
def test_forked_child_trains_and_predicts(case, tmp_path):
    code = PRELUDE + textwrap.dedent(CASES[case]) + "\nprint('ok')\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=180, cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")
