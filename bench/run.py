"""fastnn benchmarks: verify, then time; writes bench/results/latest.{md,json,png}.

    pip install ".[bench]"
    python bench/run.py [--threads 2] [--quick] [--save]

1. kernels against the best plain-NumPy formulation (bench/kernels.py);
2. the book's MNIST example end to end: fastnn, fastnn on its NumPy backend, a plain NumPy
   script (bench/plain_numpy.py) and PyTorch eager when importable, each in its own process
   (time per epoch = median of epochs 2-5, total time, peak memory, test accuracy);
3. the same at batch size 1 (a fixed number of steps) and at full batch;
4. the roofline: the bare BLAS products of one epoch, and fastnn's epoch as a multiple.
Threads are pinned equal on every side.  If OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set,
the script restarts itself without them (they slow a current NumPy) and says so.

A busy machine makes figures untrustworthy: the run records the load average before and after,
times the BLAS floor in every round, and flags the run (a "Trust" section, and no figure that
cannot be: fastnn far below the bare-BLAS floor or its batch-1 kernels) when the load
exceeds the cores, the floor varies by more than 15% between rounds, or an impossible figure
appears.  Results go to a temporary folder unless --save writes bench/results/latest.*.
"""
import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(v in os.environ for v in _BLAS_VARS) and "FASTNN_BENCH_CHILD" not in os.environ:
    removed = {v: os.environ[v] for v in _BLAS_VARS if v in os.environ}
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_VARS}
    env["FASTNN_BENCH_CHILD"] = json.dumps(removed)
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import numpy as np  # noqa: E402

import kernels  # noqa: E402
from common import environment, pin_threads, timeit  # noqa: E402


def e2e(impl, threads, batch_size, epochs=5, steps=0):
    cmd = [sys.executable, os.path.join(HERE, "e2e.py"), "--impl", impl, "--threads", str(threads),
           "--batch-size", str(batch_size), "--epochs", str(epochs)]
    if steps:
        cmd += ["--steps", str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def blas_floor(threads, batch_size=128, n=60000):
    """Seconds for the matrix products of one epoch alone (np.matmul into preallocated
    outputs): x@w1, h@w2, h.T@dz, dz@w2.T, x.T@dh per step."""
    rng = np.random.default_rng(0)
    f = np.float32
    x = rng.random((batch_size, 784), dtype=f)
    w1, w2 = rng.random((784, 512), dtype=f), rng.random((512, 10), dtype=f)
    h, z, dz, dh = (np.empty((batch_size, 512), f), np.empty((batch_size, 10), f),
                    rng.random((batch_size, 10), dtype=f), np.empty((batch_size, 512), f))
    dw1, dw2 = np.empty_like(w1), np.empty_like(w2)
    steps = math.ceil(n / batch_size)

    def epoch():
        for _ in range(steps):
            np.matmul(x, w1, out=h)
            np.matmul(h, w2, out=z)
            np.matmul(h.T, dz, out=dw2)
            np.matmul(dz, w2.T, out=dh)
            np.matmul(x.T, dh, out=dw1)
    return timeit(epoch, repeat=5, warmup=1)[0]


def have_torch():
    """Whether torch is importable, asked of a child process (importing it here would
    load a second OpenMP runtime into the benchmark process)."""
    out = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    return out.returncode == 0


def fmt(v, digits=3):
    return "–" if v is None else f"{v:.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fewer cases and epochs (a smoke run)")
    ap.add_argument("--save", action="store_true",
                    help="write bench/results/latest.{md,json,png} (the committed results); "
                         "without it results go to a temporary folder")
    ap.add_argument("--out", default=None, help="folder for the results (overrides --save)")
    args = ap.parse_args()
    if args.out is None:
        args.out = (os.path.join(HERE, "results") if args.save else
                    os.path.join(tempfile.gettempdir(), "fastnn-bench"))
    load_before = os.getloadavg()
    pin_threads(args.threads)
    env_lines = environment(args.threads)
    if "FASTNN_BENCH_CHILD" in os.environ:
        env_lines.append(f"unset for this run: {json.loads(os.environ['FASTNN_BENCH_CHILD'])}")
    print("\n".join(env_lines))
    rng = np.random.default_rng(0)
    print(kernels.verify(rng) + "; timing")

    rows = kernels.dense_forward_rows(rng, args.quick) + kernels.dense_backward_rows(rng)
    rows += kernels.own_gemm_rows(rng)
    rows += kernels.activation_backward_rows(rng) + kernels.loss_rows(rng)
    rows += kernels.optimizer_rows(rng, (1000, 407_050) if args.quick else (1000, 100_000, 407_050, 10_000_000))
    copy_bw = kernels.copy_bandwidth()
    denormal = kernels.denormal_rows(rng)
    for r in rows:
        print(f"{r['group']:20s} {r['case']:44s} fastnn {r['fastnn_ms']:9.4f} ms  numpy "
              f"{fmt(r['numpy_ms'], 4):>9s} ms  x{fmt(r['speedup'], 2):>6s}  "
              f"{fmt(r['rate'], 1)} {r['unit'] or ''}")
    print(f"copy bandwidth (np.copyto, 10M floats): {copy_bw:.1f} GB/s")
    for r in denormal:
        print(f"subnormal inputs: {r['case']:40s} {r['normal_ms']:.4f} ms normal, "
              f"{r['subnormal_ms']:.4f} ms subnormal (x{r['slowdown']:.2f})")

    impls = (["fastnn", "fastnn-bf16", "fastnn-numpy", "numpy"]
             + (["torch", "torch-bf16"] if have_torch() else []))
    epochs = 2 if args.quick else 5
    book, sgd1, full = {}, {}, {}
    # The machine drifts during a run (shared host), so the implementations take turns:
    # `rounds` rounds, each running every implementation once; an implementation's epoch
    # time is the median over all rounds of its epochs after the first of each process.
    rounds = 1 if args.quick else 3
    floors = []
    for r in range(rounds):
        floors.append(blas_floor(args.threads))
        for impl in impls:
            print(f"end to end, round {r + 1}/{rounds}: {impl} ...", flush=True)
            res = e2e(impl, args.threads, 128, epochs)
            book.setdefault(impl, dict(res, steady=[]))["steady"] += res["epoch_times"][1:] or res["epoch_times"]
            if r == 0:
                sgd1[impl] = e2e(impl, args.threads, 1, steps=300 if args.quick else 2000)
                full[impl] = e2e(impl, args.threads, 60000, epochs=2 if args.quick else 4)
    floors.append(blas_floor(args.threads))
    floor = statistics.median(floors)
    b1_kernels = kernels.batch1_kernel_time(rng)
    load_after = os.getloadavg()

    def epoch_time(res):
        t = res.get("steady") or res["epoch_times"][1:] or res["epoch_times"]
        return statistics.median(t)

    doubts = trust(load_before, load_after, floors, epoch_time(book["fastnn"]),
                   sgd1["fastnn"]["epoch_times"][0] / sgd1["fastnn"]["steps"], sum(b1_kernels.values()))
    md = [f"# fastnn benchmarks ({datetime.date.today().isoformat()})", "",
          "Command: `python bench/run.py" + (" --quick" if args.quick else "") + f" --threads {args.threads}`", "",
          "```", *env_lines, "```", "", "Verified first: " + kernels.verify(rng) + ".", "",
          "## Trust", "",
          f"Load average {load_before[0]:.2f} before, {load_after[0]:.2f} after, on "
          f"{os.cpu_count()} cores; the BLAS floor of one epoch measured {len(floors)} times: "
          + ", ".join(f"{f:.3f}" for f in floors) + " s.", "",
          *(["**This run is not trustworthy:** " + "; ".join(doubts) + ". Rerun on an idle machine.", ""]
            if doubts else ["The machine was idle and the floor steady: the figures below can be compared.", ""]),
          "## The book's MNIST example (784-512-10, rmsprop, batch 128)", "",
          f"Each implementation ran {rounds} time(s), taking turns; s / epoch is the median over those "
          f"runs of epochs 2-{epochs}. Total time, peak memory and accuracy are from the first run.", "",
          "| implementation | s / epoch (median) | vs plain NumPy | total s | peak MB | test acc |",
          "| --- | --- | --- | --- | --- | --- |"]
    base = epoch_time(book["numpy"])
    for impl in impls:
        r = book[impl]
        md.append(f"| {impl} | {epoch_time(r):.3f} | {epoch_time(r) / base:.2f} x | {r['total']:.2f} | "
                  f"{r['peak_mb']:.0f} | {r['test_acc']:.4f} |")
    ratio = epoch_time(book["fastnn"]) / floor
    md += ["", f"Bare BLAS products of one epoch (np.matmul, same threads): **{floor:.3f} s** (median "
               f"of {len(floors)}); fastnn's epoch is "
               + (f"**{ratio:.2f} x** that floor" if ratio >= 0.85 else
                  "far below that floor, which cannot be: not reported (see Trust).")
               + (" (below it: the first layer's products run in fastnn's own GEMM, faster "
                  "than OpenBLAS's on these shapes)." if 0.85 <= ratio < 1 else
                  "." if ratio >= 1 else ""), ""]
    if "torch" in book:
        md.append(f"fastnn / PyTorch eager: {epoch_time(book['fastnn']) / epoch_time(book['torch']):.2f} x")
    else:
        md.append("PyTorch: not importable in this environment, not measured.")
    f32, bf = epoch_time(book["fastnn"]), epoch_time(book["fastnn-bf16"])
    md += ["", "## Mixed precision (mixed_bfloat16: bf16 products, float32 sums; targets of #13)", "",
           "| ratio | measured | target |", "| --- | --- | --- |",
           f"| fastnn-bf16 / fastnn float32 epoch | {bf / f32:.2f} x | <= 0.40 x |"]
    if "torch" in book:
        md += [f"| fastnn-bf16 / PyTorch eager float32 | {bf / epoch_time(book['torch']):.2f} x | <= 0.20 x |",
               f"| fastnn-bf16 / PyTorch bf16 autocast | {bf / epoch_time(book['torch-bf16']):.2f} x "
               f"| <= 0.25 x |"]
    md += ["", f"Test accuracy after {epochs} epochs: fastnn-bf16 {book['fastnn-bf16']['test_acc']:.4f}, "
               f"fastnn float32 {book['fastnn']['test_acc']:.4f}.  The bf16 products alone: "
               "`python bench/bf16.py` (GFLOP/s per path beside float32 and PyTorch)."]
    md += ["", "## Batch size 1 (true SGD) and full batch", "",
           "| implementation | batch 1: us / step | batch 1: s / 60k-sample epoch (extrapolated) | full batch: s / step |",
           "| --- | --- | --- | --- |"]
    for impl in impls:
        per_step = sgd1[impl]["epoch_times"][0] / sgd1[impl]["steps"]
        md.append(f"| {impl} | {per_step * 1e6:.0f} | {per_step * 60000:.1f} | {epoch_time(full[impl]):.3f} |")
    k_total = sum(b1_kernels.values())
    step = sgd1["fastnn"]["epoch_times"][0] / sgd1["fastnn"]["steps"]
    md += ["", f"fastnn at batch size 1: the step's kernels alone take {k_total * 1e6:.0f} us "
               f"(warm caches: " + ", ".join(f"{k} {v * 1e6:.0f}" for k, v in b1_kernels.items()) +
           f"); fit's measured step is {step * 1e6:.0f} us, so the per-step overhead (Python, "
           f"callbacks, cold caches) is " + (f"{(step - k_total) * 1e6:.0f} us." if step >= k_total
                                             else "below what the kernels cost timed one Python "
                                             "call each: fit runs them in one call into C for "
                                             "runs of steps (no Python between them).")]
    md += ["", "## Kernels (float32) against the best plain-NumPy formulation", "",
           f"Copy bandwidth of this machine (np.copyto, 10M floats): {copy_bw:.1f} GB/s.", "",
           "| group | case | fastnn ms (median) | fastnn ms (min) | NumPy ms (median) | speed-up | fastnn rate |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        md.append(f"| {r['group']} | {r['case']} | {r['fastnn_ms']:.4f} | {r['fastnn_min_ms']:.4f} | "
                  f"{fmt(r['numpy_ms'], 4)} | {fmt(r['speedup'], 2)} x | "
                  f"{fmt(r['rate'], 1)} {r['unit'] or ''} |")
    md += ["", "## Subnormal inputs", "",
           "Each kernel timed on normal values and on values of 1e-40 (subnormal in float32).", "",
           "| kernel | normal ms | subnormal ms | slowdown |", "| --- | --- | --- | --- |"]
    md += [f"| {r['case']} | {r['normal_ms']:.4f} | {r['subnormal_ms']:.4f} | {r['slowdown']:.2f} x |"
           for r in denormal]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump({"env": env_lines, "trust": {"doubts": doubts, "load_before": load_before,
                                                 "load_after": load_after, "floors_s": floors},
                   "kernels": rows, "copy_bandwidth_gbs": copy_bw, "book": book,
                   "batch1": sgd1, "batch1_kernels_s": b1_kernels, "full_batch": full, "blas_floor_s": floor,
                   "subnormal": denormal}, f, indent=1)
    chart(os.path.join(args.out, "latest.png"), impls, book, epoch_time, floor, rows)
    print("\n".join(md))
    print(f"results written to {args.out}" + ("" if args.save else " (--save writes bench/results)"))
    if doubts:
        print("WARNING: this run is not trustworthy: " + "; ".join(doubts), file=sys.stderr)


def trust(load_before, load_after, floors, fastnn_epoch, b1_step, b1_kernels):
    """Why this run's figures cannot be trusted (empty: they can)."""
    doubts, cores = [], os.cpu_count() or 1
    if max(load_before[0], load_after[0]) > cores + 0.5:
        doubts.append(f"the load average ({load_before[0]:.2f} before, {load_after[0]:.2f} after) "
                      f"exceeded the {cores} cores: other work shared them")
    if max(floors) > 1.15 * min(floors):
        doubts.append(f"the BLAS floor varied from {min(floors):.3f} to {max(floors):.3f} s "
                      "between rounds")
    # fastnn runs the first layer's products in its own GEMM (src_c/gemm.inc), 10-15% faster
    # than OpenBLAS on them: an epoch somewhat below the BLAS floor is real, far below is not
    if fastnn_epoch < 0.85 * statistics.median(floors):
        doubts.append("fastnn's epoch came out more than 15% below the bare BLAS products, "
                      "more than its own GEMM can gain on them")
    # fit runs the kernels in one call into C for runs of steps, with nothing in Python between
    # them, where each kernel alone is timed as one Python call (about 1 us each): a step
    # somewhat below their sum is real, far below is not
    if b1_step < 0.75 * b1_kernels:
        doubts.append("fit's batch-1 step came out more than 25% below its kernels alone")
    return doubts


def chart(path, impls, book, epoch_time, floor, rows):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart (pip install '.[bench]')")
        return
    sel = [r for r in rows if r["speedup"]]
    # the epoch bars on top; the kernel speed-ups below, tall enough for labels at normal size
    fig, (a, b) = plt.subplots(2, 1, figsize=(11, 3 + 0.28 * len(sel)),
                               gridspec_kw={"height_ratios": [3, 0.28 * len(sel)]})
    names = impls + ["bare BLAS floor"]
    vals = [epoch_time(book[i]) for i in impls] + [floor]
    a.barh(names, vals, color=["C2", "C1", "C0", "C3"][:len(impls)] + ["grey"])
    for i, v in enumerate(vals):
        a.text(v, i, f" {v:.2f} s", va="center")
    a.set_xlim(0, max(vals) * 1.18)  # room for the value labels inside the frame
    a.invert_yaxis()
    a.set_xlabel("seconds per epoch (lower is better)")
    a.set_title("The book's MNIST network (784-512-10, rmsprop, batch 128): time per epoch")
    b.barh([f"{r['group']}: {r['case']}" for r in sel], [r["speedup"] for r in sel], color="C2")
    b.axvline(1, color="k", lw=0.8)
    b.set_xscale("log")
    b.invert_yaxis()
    b.set_xlabel("speed-up over the best plain-NumPy formulation (log scale; 1 = as fast)")
    b.set_title("Kernels (float32): fastnn against NumPy")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"bench finished in {time.perf_counter() - t0:.0f} s")
