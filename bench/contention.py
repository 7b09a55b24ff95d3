"""fastnn's speed on a busy machine: the book's MNIST epoch with other processes on the cores.

    python bench/contention.py [--busy N] [--epochs 4] [--rounds 1] [--timeout 240]

Starts N busy processes (`while True: pass`; default: one fewer than the CPUs this process may
use, at least one), each killed at the end (also on Ctrl-C or SIGTERM), and measures in its own
process, under that load, the book's MNIST training (rmsprop, batch 128; the median epoch of
epochs 2..E) and `evaluate` on the 10,000 test images (batch 32), with the default threads,
set_num_threads(1), set_num_threads(4) and set_num_threads(64); then, without the busy
processes, the idle baseline (default threads and one thread).  Prints one table with the
machine, the build and the load averages, and exits 1 when a target fails:

  - busy: the default-thread epoch <= 1.3 x the one-thread epoch under the same load;
  - busy: set_num_threads(4) and (64), epoch and evaluate, no slower than the default
    (the cores' count) beyond --slack (default 15%, for the machine's noise);
  - idle: the default-thread epoch faster than the one-thread epoch (the team is used).

Other processes (a test run) also load the machine: the load average before the run is printed,
and --rounds R takes the median of R runs of every configuration, taken in turn.
`--env NAME=VALUE` (repeatable) sets a variable in the measured processes only (e.g.
OMP_WAIT_POLICY=passive, FASTNN_ALLOW_OVERSUBSCRIPTION=1).
"""
import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# ---- the measured process ------------------------------------------------------------------

def worker(args):
    import numpy as np

    import fastnn
    from fastnn import callbacks, layers, models
    from fastnn.datasets import mnist
    if args.threads:
        fastnn.set_num_threads(args.threads)
    (x, y), (xt, yt) = mnist.load_data()
    x = x.reshape(60000, 784).astype(np.float32) / 255
    xt = xt.reshape(10000, 784).astype(np.float32) / 255
    y1, yt1 = np.eye(10, dtype=np.float32)[y], np.eye(10, dtype=np.float32)[yt]
    model = models.Sequential([layers.Dense(512, activation="relu", input_shape=(784,)),
                               layers.Dense(10, activation="softmax")], seed=0)
    model.compile("rmsprop", "categorical_crossentropy", metrics=["accuracy"])
    times = []
    cb = callbacks.LambdaCallback(
        on_epoch_begin=lambda e, l: times.append(time.perf_counter()),
        on_epoch_end=lambda e, l: times.__setitem__(-1, time.perf_counter() - times[-1]))
    model.fit(x, y1, epochs=args.epochs, batch_size=128, verbose=0, callbacks=[cb])
    t0 = time.perf_counter()
    _, acc = model.evaluate(xt, yt1, verbose=0)
    ev = time.perf_counter() - t0
    json.dump({"epochs": times, "evaluate": ev, "acc": float(acc),
               "threads": fastnn.get_num_threads()}, sys.stdout)


# ---- the driver ----------------------------------------------------------------------------

BUSY = []  # the busy processes this script started


def start_busy(n):
    for _ in range(n):
        BUSY.append(subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                     stdin=subprocess.DEVNULL))
    time.sleep(0.5)  # let them reach the cores


def stop_busy():
    while BUSY:
        p = BUSY.pop()
        p.kill()
        p.wait()


def on_signal(signum, frame):
    stop_busy()
    raise SystemExit(128 + signum)


def measure(threads, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--epochs", str(args.epochs)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    for kv in args.env:
        k, _, v = kv.partition("=")
        env[k] = v
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        raise SystemExit(f"the measured process failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["epoch"] = statistics.median(r["epochs"][1:] if len(r["epochs"]) > 1 else r["epochs"])
    return r


def cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--epochs", type=int, default=4, help="epochs per run (the first is not timed)")
    p.add_argument("--busy", type=int, default=None,
                   help="busy processes (default: CPUs - 1, at least 1; at most 4 x CPUs)")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--timeout", type=float, default=240, help="seconds per measured process")
    p.add_argument("--slack", type=float, default=0.15,
                   help="noise allowed on 'no slower than the cores' count' (fraction)")
    p.add_argument("--only", default="", help="comma-separated configs to run (debugging): "
                   "busy-default,busy-1,busy-4,busy-64,idle-default,idle-1")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    args = p.parse_args()
    if args.worker:
        return worker(args)

    ncpu = cpus()
    nbusy = max(1, ncpu - 1) if args.busy is None else args.busy
    nbusy = max(0, min(nbusy, 4 * ncpu))  # a bounded number, whatever is asked
    busy_cfgs = [("busy-default", None), ("busy-1", 1), ("busy-4", 4), ("busy-64", 64)]
    idle_cfgs = [("idle-default", None), ("idle-1", 1)]
    only = set(filter(None, args.only.split(",")))
    if only:
        busy_cfgs = [c for c in busy_cfgs if c[0] in only]
        idle_cfgs = [c for c in idle_cfgs if c[0] in only]
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(f"warning: load average {load_before[0]:.2f} before the run: other processes are "
              "running, the numbers will be noisy", file=sys.stderr)
    res = {name: [] for name, _ in busy_cfgs + idle_cfgs}
    load_busy = None
    try:
        for r in range(args.rounds):
            if busy_cfgs:
                start_busy(nbusy)
                try:
                    for name, threads in busy_cfgs:
                        res[name].append(measure(threads, args))
                        print(f"round {r + 1}: {name} done", file=sys.stderr)
                    load_busy = os.getloadavg()
                finally:
                    stop_busy()
            for name, threads in idle_cfgs:
                res[name].append(measure(threads, args))
                print(f"round {r + 1}: {name} done", file=sys.stderr)
    finally:
        stop_busy()

    def med(name, key):
        runs = res.get(name) or []
        if not runs or any(x is None for x in runs):
            return None
        return statistics.median(x[key] for x in runs)

    def fmt(v, nd=3):
        return "timeout" if v is None else f"{v:.{nd}f}"

    lines = [f"# fastnn on a busy machine: {nbusy} busy process(es) on {ncpu} CPU(s)", "",
             f"The book's MNIST network, rmsprop, batch 128: median epoch of epochs 2-{args.epochs}"
             f" over {args.rounds} round(s); evaluate: 10,000 images, batch 32.  x 1 thread: "
             "against set_num_threads(1) in the same state.", "",
             "| state | threads | s / epoch | x 1 thread | evaluate s | test acc |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, threads in busy_cfgs + idle_cfgs:
        state = name.split("-")[0]
        e, ev, acc, ref = (med(name, "epoch"), med(name, "evaluate"), med(name, "acc"),
                           med(state + "-1", "epoch"))
        x = f"{e / ref:.2f}" if e is not None and ref else ""
        label = f"{nbusy} busy process(es)" if state == "busy" else "idle"
        asked = f"set_num_threads({threads})" if threads else "default"
        lines.append(f"| {label} | {asked} | {fmt(e)} | {x} | {fmt(ev)} | "
                     f"{'' if acc is None else f'{acc:.4f}'} |")

    fails = []
    bd, b1 = med("busy-default", "epoch"), med("busy-1", "epoch")
    if "busy-default" in res and "busy-1" in res:
        if bd is None or b1 is None or bd > 1.3 * b1:
            fails.append(f"busy: default epoch {fmt(bd)} s > 1.3 x one-thread epoch {fmt(b1)} s")
    for n in ("busy-4", "busy-64"):
        if n not in res or "busy-default" not in res:
            continue
        for key in ("epoch", "evaluate"):
            v, base = med(n, key), med("busy-default", key)
            if v is None or base is None or v > (1 + args.slack) * base:
                fails.append(f"{n}: {key} {fmt(v)} s > {1 + args.slack:.2f} x the default's "
                             f"{fmt(base)} s")
    if "idle-default" in res and "idle-1" in res:
        idd, id1 = med("idle-default", "epoch"), med("idle-1", "epoch")
        if idd is None or id1 is None or not idd < id1:
            fails.append(f"idle: default epoch {fmt(idd)} s not faster than one thread {fmt(id1)} s")

    import fastnn  # the report only: never imported before the measured processes ran
    from io import StringIO
    buf = StringIO()
    fastnn.show_config(file=buf)
    lines += ["", "```", f"{platform.node()}: {ncpu} CPU(s) usable by this process, "
              f"os.cpu_count() = {os.cpu_count()}", *buf.getvalue().strip().splitlines(),
              "load average before: %.2f %.2f %.2f" % load_before]
    if load_busy:
        lines.append("load average at the end of the busy runs: %.2f %.2f %.2f" % load_busy)
    lines.append("load average after: %.2f %.2f %.2f" % os.getloadavg())
    for kv in args.env:
        lines.append(f"measured processes ran with {kv}")
    for var in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "OMP_DYNAMIC",
                "FASTNN_ALLOW_OVERSUBSCRIPTION"):
        if var in os.environ:
            lines.append(f"{var}={os.environ[var]}")
    lines += ["```", "", "targets: " + ("all met" if not fails else "FAILED")]
    lines += [f"  - {f}" for f in fails]
    print("\n".join(lines))
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
