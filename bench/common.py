"""Shared benchmark helpers: thread pinning, timing, environment report."""
import os
import platform
import statistics
import time

import numpy as np


def pin_threads(n):
    """Pin every pool to n threads: fastnn (OpenMP + its BLAS), NumPy's BLAS, torch."""
    import fastnn
    fastnn.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(n)
    except ImportError:
        pass
    import sys
    if "torch" in sys.modules:  # never import it here: it would inflate every peak memory
        sys.modules["torch"].set_num_threads(n)


def timeit(fn, repeat=21, warmup=3, min_time=0.0, settle=0.2):
    """Median and min seconds of fn() over `repeat` runs after `warmup` runs.  Each run
    loops fn until min_time has passed (for tiny kernels) and reports time per call.
    First a pause of `settle` seconds: the thread pool that ran last (NumPy's OpenBLAS,
    fastnn's OpenMP team) spins for a while after its last job, and on 2 cores those spinning
    threads took the timed code's cores (fastnn's 128x784x512 forward read 1.2-1.5 ms right
    after np.matmul, 0.88 ms after a pause, on the AVX2 machine)."""
    time.sleep(settle)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            t = time.perf_counter() - t0
            if t >= min_time:
                break
        times.append(t / n)
    return statistics.median(times), min(times)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(threads):
    import io

    import fastnn
    buf = io.StringIO()
    fastnn.show_config(file=buf)
    lines = [f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; threads pinned to {threads} on every side",
             *buf.getvalue().strip().splitlines()]
    try:
        from threadpoolctl import threadpool_info
        for p in threadpool_info():
            lines.append(f"pool: {p.get('internal_api')} {p.get('version')} "
                         f"({os.path.basename(p.get('filepath', ''))}) threads={p.get('num_threads')} "
                         f"arch={p.get('architecture')}")
    except ImportError:
        lines.append("threadpoolctl not installed: NumPy's BLAS threads not pinned (pip install '.[bench]')")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_WAIT_POLICY"):
        if var in os.environ:
            lines.append(f"{var}={os.environ[var]}")
    return lines
