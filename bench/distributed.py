"""Data-parallel training on this machine: the book's MNIST epoch with two ranks of one thread
each (mpiexec -n 2) against one process of two threads, and the allreduce's share of a step.

    pip install ".[mpi,bench]"
    python bench/distributed.py [--epochs 3] [--save]

Each configuration runs in its own processes; the epoch time is the median of epochs 2..E.
The allreduce is timed alone on the book network's gradient buffer (407,050 float32, 1.6 MB)
between the two ranks, as a median over 200 calls.  --save writes bench/results/distributed.md.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))

RUN = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import fastnn
    from fastnn import callbacks, distribution, layers, models
    from fastnn.datasets import mnist

    epochs, threads, dist = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "dist"
    fastnn.set_num_threads(threads)
    if dist:
        distribution.set_distribution(distribution.DataParallel())
    (x, y), _ = mnist.load_data()
    x = x.reshape(60000, 784).astype("float32") / 255
    y = np.eye(10, dtype="float32")[y]
    m = models.Sequential([layers.Dense(512, activation="relu", input_shape=(784,)),
                           layers.Dense(10, activation="softmax")], seed=0)
    m.compile("rmsprop", "categorical_crossentropy")
    times = []
    cb = callbacks.LambdaCallback(
        on_epoch_begin=lambda e, l: times.append(time.perf_counter()),
        on_epoch_end=lambda e, l: times.__setitem__(-1, time.perf_counter() - times[-1]))
    m.fit(x, y, epochs=epochs, batch_size=128, verbose=0, callbacks=[cb])
    out = {"epoch_times": times}
    if dist:
        d = distribution.distribution()
        g = np.ones(407050, np.float32)
        for _ in range(20):
            d.allreduce_(g)
        ts = []
        for _ in range(200):
            d.comm.Barrier()
            t0 = time.perf_counter()
            d.allreduce_(g)
            ts.append(time.perf_counter() - t0)
        out["allreduce_s"] = float(np.median(ts))
    if distribution.is_primary():
        print(json.dumps(out))
""")


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE,
                         env={**os.environ, "OMP_NUM_THREADS": cmd[-2]})
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--save", action="store_true")
    args = ap.parse_args()
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep
                           + os.environ.get("PATH", ""))
    if mpiexec is None:
        raise SystemExit("mpiexec not found: pip install '.[mpi]'")
    script = os.path.join(HERE, ".distributed_run.py")
    with open(script, "w") as f:
        f.write(RUN)
    load = os.getloadavg()
    try:
        one = run([sys.executable, script, str(args.epochs), "2", "plain"])
        two = run([mpiexec, "-n", "2", sys.executable, script, str(args.epochs), "1", "dist"])
    finally:
        os.remove(script)
    e1 = statistics.median(one["epoch_times"][1:] or one["epoch_times"])
    e2 = statistics.median(two["epoch_times"][1:] or two["epoch_times"])
    steps = 469
    ar = two["allreduce_s"]
    lines = [
        "# Data-parallel training on this machine (2 cores)", "",
        f"Load average before: {load[0]:.2f}. The book's MNIST network, rmsprop, global batch 128, "
        f"median of epochs 2-{args.epochs}.", "",
        "| configuration | s / epoch | us / step |", "| --- | --- | --- |",
        f"| 1 process x 2 threads (compiled step) | {e1:.3f} | {e1 / steps * 1e6:.0f} |",
        f"| 2 ranks x 1 thread (DataParallel, mpiexec -n 2) | {e2:.3f} | {e2 / steps * 1e6:.0f} |",
        "",
        f"Allreduce of the 1.6 MB gradient between the two ranks: {ar * 1e6:.0f} us per step "
        f"({ar * steps:.3f} s per epoch, {ar / (e2 / steps):.0%} of a distributed step).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    print(json.dumps({"one_process_epoch_s": e1, "two_ranks_epoch_s": e2, "allreduce_s": ar}))
    if args.save:
        with open(os.path.join(HERE, "results", "distributed.md"), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
