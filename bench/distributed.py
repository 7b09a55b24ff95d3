"""Data-parallel training on this machine: the book's MNIST epoch with two ranks of one thread
each (mpiexec -n 2) against one process of two threads, the gradient allreduce blocking or
overlapped with the backward (DataParallel(overlap=True), also with MPICH's asynchronous
progress thread), and the allreduce's share of a step.

    pip install ".[mpi,bench]"
    python bench/distributed.py [--epochs 3] [--repeats 3] [--save]

Each configuration runs in its own processes, --repeats times, the configurations interleaved
(a busy machine slows them alike); a run's epoch time is the median of its epochs 2..E, a
configuration's the median over its runs (min also shown).  The reduction's time inside a step
(the allreduce, or the bucket posts and the final wait under overlap) is timed on rank 0 over
epochs 2..E.  The allreduce is also timed alone on the book network's gradient buffer (407,050
float32, 1.6 MB) between the two ranks, as a median over 200 calls.  --save writes
bench/results/distributed.md.
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

    epochs, threads, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    dist = mode != "plain"
    fastnn.set_num_threads(threads)
    reducing = [0.0, 0]  # seconds inside the gradient reduction this epoch, nesting depth

    def timed(f):
        def wrapper(self, *args):
            t0 = time.perf_counter()
            reducing[1] += 1
            try:
                return f(self, *args)
            finally:
                reducing[1] -= 1
                if not reducing[1]:  # (finish calls ready: counted once)
                    reducing[0] += time.perf_counter() - t0
        return wrapper
    if dist:
        distribution.set_distribution(distribution.DataParallel(overlap=mode == "overlap"))
        allreduce = distribution.DataParallel.allreduce_
        distribution.DataParallel.allreduce_ = lambda self, buf: (
            timed(allreduce)(self, buf) if buf.size > 1000 else allreduce(self, buf))
        for name in ("ready", "finish"):
            setattr(distribution.BucketedAllreduce, name,
                    timed(getattr(distribution.BucketedAllreduce, name)))
    (x, y), _ = mnist.load_data()
    x = x.reshape(60000, 784).astype("float32") / 255
    y = np.eye(10, dtype="float32")[y]
    m = models.Sequential([layers.Dense(512, activation="relu", input_shape=(784,)),
                           layers.Dense(10, activation="softmax")], seed=0)
    m.compile("rmsprop", "categorical_crossentropy")
    times, reduce_times = [], []

    def begin(e, logs):
        reducing[0] = 0.0
        times.append(time.perf_counter())

    def end(e, logs):
        times[-1] = time.perf_counter() - times[-1]
        reduce_times.append(reducing[0])
    cb = callbacks.LambdaCallback(on_epoch_begin=begin, on_epoch_end=end)
    cbs = [cb]
    if mode == "alternate":  # overlap off and on in turns of 20 steps, each step timed
        step_s, t_step = {False: [], True: []}, [0.0]

        def batch_begin(b, logs):
            distribution.distribution().overlap = (b // 20) % 2 == 1  # the same on every rank
            t_step[0] = time.perf_counter()

        def batch_end(b, logs):
            if len(times) > 1:  # epochs 2..E
                step_s[distribution.distribution().overlap].append(time.perf_counter() - t_step[0])
        cbs.append(callbacks.LambdaCallback(on_train_batch_begin=batch_begin,
                                            on_train_batch_end=batch_end))
    m.fit(x, y, epochs=epochs, batch_size=128, verbose=0, callbacks=cbs)
    out = {"epoch_times": times, "reduce_times": reduce_times}
    if mode == "alternate":
        out["step_s"] = {k: float(np.median(step_s[v])) for k, v in (("blocking", False),
                                                                     ("overlap", True))}
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
        # the same sum as non-blocking allreduces (Iallreduce, then wait): the whole buffer as
        # one bucket, and in this run's buckets under overlap, nothing computed meanwhile
        d.overlap = d.overlap or mode == "alternate"
        plan = m.trainer._bucketed(d)
        for key, cuts in (("iallreduce_s", [0, g.size]),
                          ("buckets_s", None if plan is None else plan.buckets)):
            if cuts is None:
                continue
            b = distribution.BucketedAllreduce(d, g, np.asarray(cuts, np.int64))
            ts = []
            for i in range(220):
                d.comm.Barrier()
                t0 = time.perf_counter()
                b.start(1.0)
                b.finish()
                ts.append(time.perf_counter() - t0)
            out[key] = float(np.median(ts[20:]))
            out[key.replace("_s", "_count")] = len(cuts) - 1
    if distribution.is_primary():
        print(json.dumps(out))
""")


CONFIGS = {  # name: (ranks, threads each, mode, extra environment)
    "1 process x 2 threads (compiled step)": (1, 2, "plain", {}),
    "2 ranks x 1 thread, blocking allreduce": (2, 1, "dist", {}),
    "2 ranks x 1 thread, overlap=True": (2, 1, "overlap", {}),
}
ALTERNATE = "2 ranks x 1 thread, blocking and overlap in turns of 20 steps"
CONFIGS[ALTERNATE] = (2, 1, "alternate", {})
ASYNC = {"2 ranks x 1 thread, overlap=True, MPIR_CVAR_ASYNC_PROGRESS=1": (
    2, 1, "overlap", {"MPIR_CVAR_ASYNC_PROGRESS": "1"})}  # --async-progress


def run(cmd, env):
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE,
                         env={**os.environ, "OMP_NUM_THREADS": cmd[-2], **env})
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--async-progress", action="store_true",
                    help="also overlap with MPICH's asynchronous progress thread")
    ap.add_argument("--save", action="store_true")
    args = ap.parse_args()
    configs = {**CONFIGS, **(ASYNC if args.async_progress else {})}
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep
                           + os.environ.get("PATH", ""))
    if mpiexec is None:
        raise SystemExit("mpiexec not found: pip install '.[mpi]'")
    script = os.path.join(HERE, ".distributed_run.py")
    with open(script, "w") as f:
        f.write(RUN)
    load = os.getloadavg()
    runs = {name: [] for name in configs}
    try:
        for _ in range(args.repeats):  # interleaved
            for name, (ranks, threads, mode, env) in configs.items():
                cmd = [sys.executable, script, str(args.epochs), str(threads), mode]
                runs[name].append(run(([mpiexec, "-n", str(ranks)] if ranks > 1 else []) + cmd,
                                      env))
    finally:
        os.remove(script)
    load_after = os.getloadavg()
    steps = 469

    def later(a):  # epochs 2..E (all of them with one epoch)
        return a[1:] or a

    lines = [
        "# Data-parallel training on this machine (2 cores)", "",
        f"Load average (1 min) before: {load[0]:.2f}, after: {load_after[0]:.2f}. The book's "
        f"MNIST network, rmsprop, global batch 128; per run the median of epochs 2-{args.epochs}, "
        f"then the median (and min) over {args.repeats} runs per configuration, interleaved.", "",
        "| configuration | s / epoch (median) | min | us / step | reduction in a step, us "
        "(share of the step) | the same reduction alone, us |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    summary = {}
    for name, rs in runs.items():
        epoch = [statistics.median(later(r["epoch_times"])) for r in rs]
        red = [statistics.median(later(r["reduce_times"])) for r in rs]
        e, rd = statistics.median(epoch), statistics.median(red)
        alone = statistics.median(r.get("buckets_s", r.get("allreduce_s", 0.0)) for r in rs)
        summary[name] = {"epoch_s": e, "epoch_s_runs": epoch, "reduce_s": rd, "alone_s": alone}
        cells = (f"{rd / steps * 1e6:.0f} ({rd / e:.0%}) | {alone * 1e6:.0f}"
                 if configs[name][0] > 1 else "- | -")
        lines.append(f"| {name} | {e:.3f} | {min(epoch):.3f} | {e / steps * 1e6:.0f} | {cells} |")
    alt = {k: statistics.median(r["step_s"][k] for r in runs[ALTERNATE])
           for k in ("blocking", "overlap")}
    summary[ALTERNATE]["step_s"] = alt
    dist_runs = [r for rs in runs.values() for r in rs if "allreduce_s" in r]
    ar = statistics.median(r["allreduce_s"] for r in dist_runs)
    iar = statistics.median(r["iallreduce_s"] for r in dist_runs)
    count = next(r["buckets_count"] for r in dist_runs if "buckets_count" in r)
    lines += [
        "",
        f"The reduction alone: the 1.6 MB gradient between the two ranks, nothing computed "
        f"meanwhile, median of 200 calls: one blocking Allreduce (the blocking rows) "
        f"{ar * 1e6:.0f} us ({ar * steps:.3f} s per epoch), one Iallreduce and its wait "
        f"{iar * 1e6:.0f} us, overlap's {count} buckets (an Iallreduce each as `ready` posts "
        f"them, then the waits: the overlap rows).  The reduction in a step is timed on rank 0 "
        f"and also holds the wait for the slower rank.",
        "",
        f"In turns within one run (the same load on both): median step {alt['blocking'] * 1e6:.0f}"
        f" us with the blocking allreduce, {alt['overlap'] * 1e6:.0f} us with overlap "
        f"({alt['overlap'] / alt['blocking']:.2f}x).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    print(json.dumps({"configs": summary, "allreduce_s": ar, "iallreduce_s": iar,
                      "load": [load, load_after]}))
    if args.save:
        with open(os.path.join(HERE, "results", "distributed.md"), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
