"""Threads on a machine fastnn does not have to itself (README, "Threads").

fastnn's team is capped at the CPUs the process may use (affinity mask, cgroup quota), so asking
for more threads than cores behaves as asking for the cores' count; work split per thread is cut
in that many shares whatever team computes them (a busy machine shrinks the team), so the
results depend on the count only.  Each case runs in its own interpreter (the cap and
FASTNN_ALLOW_OVERSUBSCRIPTION are read at import) with a generous timeout: no timing
assertions here, bench/contention.py measures the speed.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn
from fastnn import _kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPENMP = bool(_kernels.build_info()["openmp"])
LINUX = sys.platform.startswith("linux")

PRELUDE = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import fastnn
    from fastnn import _kernels, layers, models

    def train(threads, batch_size=32, epochs=2):
        # layer 0 is owned by rows at batch 32 (32 x 300 x 256 > 2**21); batch 1 splits the
        # forward GEMV and steps the kernel from the rank-1 gradient; layer 1's small
        # products are split in row blocks
        if threads:
            fastnn.set_num_threads(threads)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((192, 300)).astype(np.float32)
        y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 192)]
        m = models.Sequential([layers.Dense(256, activation="relu", input_shape=(300,)),
                               layers.Dense(4, activation="softmax")], seed=1)
        m.compile("rmsprop", "categorical_crossentropy")
        m.fit(x[:64] if batch_size == 1 else x, y[:64] if batch_size == 1 else y,
              epochs=epochs, batch_size=batch_size, verbose=0)
        p = m.predict(x, batch_size=64, verbose=0)
        return [w.tolist() for w in m.get_weights()] + [p.tolist()]
""")


def run(code, env=None, drop=("FASTNN_ALLOW_OVERSUBSCRIPTION", "OMP_THREAD_LIMIT",
                              "OMP_NUM_THREADS", "OMP_DYNAMIC", "OPENBLAS_NUM_THREADS"),
        timeout=240, pre=""):
    """Runs PRELUDE + code in a fresh interpreter of this tree (`pre` before fastnn's import);
    returns its last stdout line as JSON."""
    e = {k: v for k, v in os.environ.items() if k not in drop}
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e["PYTHONWARNINGS"] = "ignore"
    e.update(env or {})
    prelude = PRELUDE.replace("import fastnn\n", pre + "\nimport fastnn\n", 1)
    out = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=e,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


pytestmark = pytest.mark.skipif(not OPENMP, reason="built without OpenMP: one thread only")


def test_more_threads_than_cores_runs_as_many_as_cores():
    """set_num_threads(64): the team and the BLAS's jobs are capped at the CPUs (no 64-thread
    pool is started), the count asked for is still reported, and training and predicting give
    the same results as with the cores' count, and finish."""
    got = run("""
        tasks = lambda: len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 0
        ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        a = train(ncpu)
        before = tasks()
        b = train(64)
        print(json.dumps({"same": a == b, "grew": tasks() - before, "ncpu": ncpu,
                          "asked": fastnn.get_num_threads(), "counts": _kernels.get_num_threads()}))
    """)
    assert got["same"]
    assert got["asked"] == 64
    assert got["counts"] == {"openmp": min(64, got["ncpu"]), "blas": 64}
    if LINUX:
        assert got["grew"] < 8, got  # uncapped, GNU OpenMP would have started 63 more threads


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_a_process_pinned_to_one_cpu_runs_one_thread():
    """Pinned to one CPU before import (taskset -c 0), fastnn's team is one thread whatever
    set_num_threads asks; the BLAS keeps the count asked for as the caller's; training works."""
    got = run("""
        w = train(4, epochs=1)
        print(json.dumps({"counts": _kernels.get_num_threads(), "asked": fastnn.get_num_threads(),
                          "finite": bool(np.isfinite(np.asarray(w[-1])).all())}))
    """, pre="os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})")
    assert got == {"counts": {"openmp": 1, "blas": 4}, "asked": 4, "finite": True}


@pytest.mark.skipif(not LINUX or cpus() < 2, reason="needs Linux and two CPUs")
@pytest.mark.parametrize("binding", ["OMP_PROC_BIND", "GOMP_CPU_AFFINITY"])
def test_openmp_binding_keeps_every_cpu(binding):
    """Under OpenMP binding libgomp pins the main thread to its first place before fastnn is
    imported: its affinity mask is one CPU, yet the team may use every place's CPUs (it ran on
    one thread before; README, Threads)."""
    env = ({"OMP_PROC_BIND": "true"} if binding == "OMP_PROC_BIND"
           else {"GOMP_CPU_AFFINITY": " ".join(map(str, sorted(os.sched_getaffinity(0))))})
    got = run("""
        print(json.dumps({"mask": len(os.sched_getaffinity(0)), "counts": _kernels.get_num_threads()}))
    """, env=env)
    assert got["mask"] == 1, got  # libgomp did pin this thread (else the case proves nothing)
    assert got["counts"]["openmp"] == cpus(), got


@pytest.mark.parametrize("batch_size", [32, 1])
def test_results_depend_on_the_count_not_on_the_team(batch_size):
    """Three shares computed by three threads, by a team of two, or by one thread (GNU
    OpenMP's thread limit makes the teams smaller, as a busy machine does) give bit-identical
    weights and predictions: the layer owned by rows (batch 32), the split GEMV and the rank-1
    step (batch 1), the row blocks of the small products."""
    code = f"print(json.dumps(train(3, batch_size={batch_size})))"
    over = {"FASTNN_ALLOW_OVERSUBSCRIPTION": "1"}  # three shares even on fewer cores
    full = run(code, env=over)
    for limit in ("2", "1"):
        assert run(code, env={**over, "OMP_THREAD_LIMIT": limit}) == full, limit


def test_oversubscription_allowed_keeps_the_count():
    """FASTNN_ALLOW_OVERSUBSCRIPTION=1 (read at import) lifts the cap: the team is the count
    asked for (tests use it for odd team sizes on small machines)."""
    n = cpus() + 1
    got = run(f"""
        fastnn.set_num_threads({n})
        print(json.dumps(_kernels.get_num_threads()))
    """, env={"FASTNN_ALLOW_OVERSUBSCRIPTION": "1"})
    assert got == {"openmp": n, "blas": n}


def test_blas_count_set_from_outside_is_capped_and_reported():
    """A BLAS count set from outside fastnn (threadpoolctl, as bench/common.py does) is
    reported as the caller's count, and the BLAS runs at most the cores' count of jobs."""
    pytest.importorskip("threadpoolctl")
    got = run("""
        from threadpoolctl import threadpool_info, threadpool_limits
        threadpool_limits(64)
        w = train(None, epochs=1)
        ours = [p["num_threads"] for p in threadpool_info()
                if p["filepath"].endswith("libscipy_openblas.so")]
        ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(json.dumps({"ours": ours, "ncpu": ncpu, "counts": _kernels.get_num_threads()}))
    """)
    if not got["ours"]:
        pytest.skip("threadpoolctl does not see scipy-openblas32's library")
    assert got["counts"]["blas"] == 64
    assert all(n <= got["ncpu"] for n in got["ours"]), got


def test_in_process_counts_follow_set_num_threads():
    """In this process: the count asked for comes back from get_num_threads; the team is it,
    capped at the CPUs unless oversubscription is allowed."""
    before = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(2 * cpus())
        assert fastnn.get_num_threads() == 2 * cpus()
        team = _kernels.get_num_threads()["openmp"]
        if os.environ.get("FASTNN_ALLOW_OVERSUBSCRIPTION") == "1":
            assert team == 2 * cpus()
        else:
            assert team == cpus()
    finally:
        fastnn.set_num_threads(before)
