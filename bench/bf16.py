"""bfloat16 products (src_c/bf16.c) on each path this machine runs, beside float32 in the same run.

Verify, then time.  For the book's dense layers (forward 128x784x512 and 128x512x10, and their
backward products dw := x.T @ dz, dx := dz @ w.T) and a large 2048^3 product: GFLOP/s (median
and best over repeats) of fastnn's bf16 kernels on each path, of fastnn's float32 kernels (the
BLAS's sgemm) and of NumPy's float32 matmul, with every pool pinned to the same thread count;
torch.matmul in bfloat16 too when torch imports.  Also the fused optimizer step + pack against
the plain step followed by a separate pack, and the first layer's backward + rmsprop step as
two kernels against dense_backward_step_bf16 (one kernel, as the compiled step runs it).

    python bench/bf16.py [--threads 2] [--quick]
"""
import argparse
import ast
import os
import subprocess
import sys
import time

import numpy as np

# fastnn's contention monitor (src_c/runtime.c) shrinks its team while other threads keep this
# process's threads waiting for a core; here those are this benchmark's own pools (NumPy's
# OpenBLAS, which spins for a while after each product of the twin and of the NumPy phase), and
# a shrunk team would time fastnn's products on one thread.  The phases run one at a time, so
# the monitor is off here (the load average printed says whether other processes ran).
os.environ["FASTNN_ALLOW_OVERSUBSCRIPTION"] = "1"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, pin_threads, timeit  # noqa: E402

from fastnn import _codes  # noqa: E402
from fastnn import _kernels as C  # noqa: E402
from fastnn import _reference as R  # noqa: E402
from fastnn._data import aligned_empty  # noqa: E402

LINEAR = _codes.ACTIVATIONS["linear"]


def gflops(flops, t):
    return flops / t / 1e9


def empty(shape, dtype=np.float32):
    """Arrays on 64-byte boundaries, as the compiled step allocates its own (_data.aligned_empty):
    NumPy's start 16 bytes past one, and a tile row across two cache lines costs the kernels."""
    return aligned_empty(shape, dtype)


def layer(rng, n, i, o):
    x = empty((n, i))
    x[...] = rng.standard_normal((n, i))
    w = empty((i, o))
    w[...] = rng.standard_normal((i, o)) / np.sqrt(i)
    x16 = empty(x.shape, np.uint16)
    C.bf16_convert_forward(x16, x)
    wp = empty(C.bf16_packed_size(i, o), np.uint16)
    wtp = empty(C.bf16_packed_size(o, i), np.uint16)
    C.bf16_pack_forward(wp, wtp, w)
    dy = (rng.standard_normal((n, o)) / n).astype(np.float32)
    return x, w, x16, wp, wtp, dy


def verify(paths, shapes):
    """Every path's forward and backward within the summation-order bound of the NumPy twin."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from tolerances import bf16_product_atol
    rng = np.random.default_rng(0)
    for n, i, o in shapes:
        x, w, x16, wp, wtp, dy = layer(rng, n, i, o)
        a, b = np.abs(R._f32(x16)).astype(np.float64), np.abs(R._f32(R._bf16(w))).astype(np.float64)
        want = np.empty((n, o), np.float32)
        R.dense_forward_bf16(want, None, None, x16, wp, None, LINEAR, ())
        for p in paths:
            C.bf16_set_path(p)
            y = np.empty((n, o), np.float32)
            C.dense_forward_bf16(y, None, None, x16, wp, None, LINEAR, ())
            err = np.abs(y - want) - bf16_product_atol(a, b) - 1e-6
            assert (err <= 0).all(), f"{p} forward {n}x{i}x{o}: off by {err.max()}"
    C.bf16_set_path(None)
    print("verified: every path's forward matches the NumPy twin within the bound "
          "(tests/tolerances.py bf16_product_atol)")


SHAPES = [(128, 784, 512), (128, 512, 10), (2048, 2048, 2048)]


def measure_torch(threads, rep):
    """torch.matmul in bfloat16 for the same products: {(kind, shape): (median, best)}."""
    import torch
    torch.set_num_threads(threads)
    rng = np.random.default_rng(1)
    out = {}
    for n, i, o in SHAPES:
        big = n == 2048
        tx, tw, tdz = (torch.from_numpy(rng.standard_normal(s).astype(np.float32)).bfloat16()
                       for s in ((n, i), (i, o), (n, o)))
        out[("forward", (n, i, o))] = timeit(lambda: torch.matmul(tx, tw), repeat=3 if big else rep,
                                              warmup=1, min_time=0.002)
        if not big:
            out[("backward", (n, i, o))] = timeit(
                lambda: (torch.matmul(tx.T, tdz), torch.matmul(tdz, tw.T)), repeat=rep, warmup=1,
                min_time=0.002)
            out[("dw", (n, i, o))] = timeit(lambda: torch.matmul(tx.T, tdz), repeat=rep,
                                            warmup=1, min_time=0.002)
            out[("dx", (n, i, o))] = timeit(lambda: torch.matmul(tdz, tw.T), repeat=rep,
                                            warmup=1, min_time=0.002)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fewer repeats, no portable 2048^3")
    ap.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    rep = 5 if args.quick else 11
    if args.torch_child:  # its own process: torch's thread pool never meets fastnn's
        print(repr({k: v for k, v in measure_torch(args.threads, rep).items()}))
        return
    pin_threads(args.threads)
    print("\n".join(environment(args.threads)))
    print(f"load average: {os.getloadavg()}")
    print("contention monitor: off (FASTNN_ALLOW_OVERSUBSCRIPTION=1, see the top of this file)")
    paths = C.bf16_paths()
    # (the backward's products dw (in x n by n x out) and dx (n x out by out x in) as forwards)
    verify(paths, (SHAPES[:2] if args.quick else SHAPES)
           + [s for n, i, o in SHAPES[:2] for s in ((i, n, o), (n, o, i))])

    # phase 1: fastnn (bf16 on each path, float32), phase 2: NumPy, phase 3: torch in a child
    # process; each phase alone, so no thread pool spins while another one works (the twin of
    # verify runs NumPy's OpenBLAS, whose idle threads spin a while: with them on both cores,
    # the first product timed here took 10 ms a call, 12 GFLOP/s, in two runs of three)
    time.sleep(0.5)
    rng = np.random.default_rng(1)
    res = {}
    for n, i, o in SHAPES:
        big = n == 2048
        reps = 3 if big else rep
        x, w, x16, wp, wtp, dy = layer(rng, n, i, o)
        y = empty((n, o))
        dw, dx, db = empty((i, o)), empty((n, i)), empty(o)
        dz = empty(dy.shape)
        scratch = empty(C.bf16_backward_scratch_size(n, i, o), np.uint16)
        xt16, dz16 = empty((i, n), np.uint16), empty((n, o), np.uint16)
        C.bf16_convert_forward(xt16, np.ascontiguousarray(x.T))
        C.bf16_convert_forward(dz16, dy)
        dzp = empty(C.bf16_packed_size(n, o), np.uint16)
        C.bf16_pack_forward(dzp, None, dy)
        for p in paths:
            if big and p == "portable" and args.quick:
                continue
            C.bf16_set_path(p)
            res[("forward", (n, i, o), f"bf16 {p}")] = timeit(
                lambda: C.dense_forward_bf16(y, None, None, x16, wp, None, LINEAR, ()),
                repeat=reps, warmup=1, min_time=0.002)
            if not big:
                res[("backward", (n, i, o), f"bf16 {p}")] = timeit(
                    lambda: C.dense_backward_bf16(dw, db, dx, dz, scratch, dy, x16, wtp, y, None,
                                                  LINEAR, ()), repeat=reps, warmup=1, min_time=0.002)
                # the backward's two products alone, from the operands it prepares (xt :=
                # bf16(x).T, dzp := pack(bf16(dz)), dz16 := bf16(dz)), as the forward's kernel
                # runs a product (no bias, linear: its epilogue does nothing)
                res[("dw", (n, i, o), f"bf16 {p}")] = timeit(
                    lambda: C.dense_forward_bf16(dw, None, None, xt16, dzp, None, LINEAR, ()),
                    repeat=reps, warmup=1, min_time=0.002)
                res[("dx", (n, i, o), f"bf16 {p}")] = timeit(
                    lambda: C.dense_forward_bf16(dx, None, None, dz16, wtp, None, LINEAR, ()),
                    repeat=reps, warmup=1, min_time=0.002)
        C.bf16_set_path(None)
        res[("forward", (n, i, o), "f32 fastnn")] = timeit(
            lambda: C.dense_forward(y, None, x, w, None, LINEAR, ()), repeat=reps, warmup=1,
            min_time=0.002)
        if not big:
            res[("backward", (n, i, o), "f32 fastnn")] = timeit(
                lambda: C.dense_backward(dw, db, dx, dz, dy, x, w, y, None, LINEAR, ()),
                repeat=reps, warmup=1, min_time=0.002)

    # the fused optimizer step + pack (adam on the 784 x 512 kernel) against step, then pack
    i, o = 784, 512
    p, g = empty(i * o), empty(i * o)
    p[...], g[...] = rng.standard_normal(i * o), rng.standard_normal(i * o)
    slots = {"momentums": aligned_empty(i * o, np.float32, zero=True),
             "velocities": aligned_empty(i * o, np.float32, zero=True)}
    opt = C.OptimizerStep(p, "adam", {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}, slots)
    opt.begin(1e-3, 1)
    wp, wtp = empty(C.bf16_packed_size(i, o), np.uint16), empty(C.bf16_packed_size(o, i), np.uint16)
    fused = timeit(lambda: C.optimizer_step_bf16pack(opt, p, wp, wtp, g, 0, i, o), repeat=rep,
                   warmup=1, min_time=0.002)
    plain = timeit(lambda: opt.step(p, g), repeat=rep, warmup=1, min_time=0.002)
    pack = timeit(lambda: C.bf16_pack_forward(wp, wtp, p.reshape(i, o)), repeat=rep, warmup=1,
                  min_time=0.002)

    # the book's first layer in the compiled step: its backward (no dx) then its rmsprop step
    # + pack, as two kernels and as one (dense_backward_step_bf16)
    n = 128
    x, w, x16, wp, wtp, dy = layer(rng, n, i, o)
    relu = _codes.ACTIVATIONS["relu"]
    y = empty((n, o))
    y[...] = np.maximum(x @ w, 0)
    time.sleep(0.5)  # (OpenBLAS's threads, after x @ w, stop spinning)
    p1 = empty(i * o)
    p1[...] = w.reshape(-1)
    g1, db, dz = empty(i * o), empty(o), empty(dy.shape)
    scratch = empty(C.bf16_backward_scratch_size(n, i, o), np.uint16)
    rms = C.OptimizerStep(p1, "rmsprop", {"rho": 0.9, "epsilon": 1e-7},
                          {"velocities": aligned_empty(i * o, np.float32, zero=True)})
    rms.begin(1e-3, 1)
    two = timeit(lambda: (C.dense_backward_bf16(g1.reshape(i, o), db, None, dz, scratch, dy, x16,
                                                wtp, y, None, relu, ()),
                          C.optimizer_step_bf16pack(rms, p1, wp, None, g1, 0, i, o)),
                 repeat=rep, warmup=1, min_time=0.002)
    one = timeit(lambda: C.dense_backward_step_bf16(rms, p1, wp, db, dz, scratch, dy, x16, y,
                                                    None, 0, relu, ()),
                 repeat=rep, warmup=1, min_time=0.002)

    time.sleep(0.5)  # fastnn's threads stop spinning
    for n, i, o in SHAPES:
        big = n == 2048
        x, w, _, _, _, dy = layer(rng, n, i, o)
        y, dw, dx = np.empty((n, o), np.float32), np.empty((i, o), np.float32), np.empty((n, i), np.float32)
        res[("forward", (n, i, o), "f32 numpy")] = timeit(
            lambda: np.matmul(x, w, out=y), repeat=3 if big else rep, warmup=1, min_time=0.002)
        if not big:
            res[("backward", (n, i, o), "f32 numpy")] = timeit(
                lambda: (np.matmul(x.T, dy, out=dw), np.matmul(dy, w.T, out=dx)), repeat=rep,
                warmup=1, min_time=0.002)

    time.sleep(0.5)
    child = subprocess.run([sys.executable, os.path.abspath(__file__), "--torch-child",
                            "--threads", str(args.threads)] + (["--quick"] if args.quick else []),
                           capture_output=True, text=True)
    if child.returncode == 0:
        for (kind, shape), v in ast.literal_eval(child.stdout.strip().splitlines()[-1]).items():
            res[(kind, shape, "torch bf16")] = v
        torch_note = "torch bf16: torch.matmul on bfloat16 tensors, in a separate process"
    else:
        torch_note = "torch: not importable (pip install torch for its bf16 column)"

    print(f"\nGFLOP/s, median (best) over {rep} repeats (3 for 2048^3); each library timed in a "
          f"phase of its own, threads pinned to {args.threads}.  bf16 paths: {paths}; f32 fastnn: "
          f"fastnn's float32 kernels (sgemm inside); f32 numpy: np.matmul; {torch_note}")
    labels = [f"bf16 {p}" for p in paths] + ["f32 fastnn", "f32 numpy", "torch bf16"]
    for kind in ("forward", "backward", "dw", "dx"):
        for n, i, o in SHAPES:
            flops = (4 if kind == "backward" else 2) * n * i * o
            cells = [f"{lab}: {gflops(flops, res[(kind, (n, i, o), lab)][0]):7.1f} "
                     f"({gflops(flops, res[(kind, (n, i, o), lab)][1]):7.1f})"
                     for lab in labels if (kind, (n, i, o), lab) in res]
            if cells:
                print(f"{kind:8s} {n}x{i}x{o:<10} " + "  ".join(cells))
    print("(backward: dw := x.T @ dz and dx := dz @ w.T, 4 n in out flops; fastnn's kernels also "
          "write db and, for bf16, bf16(dz) and its packs; dw, dx: each of those two products "
          "alone, from operands already in bf16 (fastnn: through its forward kernel))")
    print(f"\nadam step on a 784x512 kernel + both packs (median): fused {fused[0] * 1e6:.0f} us; "
          f"step {plain[0] * 1e6:.0f} us + pack {pack[0] * 1e6:.0f} us = "
          f"{(plain[0] + pack[0]) * 1e6:.0f} us (bf16 path {C.bf16_path()})")
    print(f"layer 0 of the book (128x784x512, relu), backward without dx + rmsprop step + pack "
          f"(median (best)): two kernels {two[0] * 1e6:.0f} ({two[1] * 1e6:.0f}) us; one kernel "
          f"(dense_backward_step_bf16) {one[0] * 1e6:.0f} ({one[1] * 1e6:.0f}) us")


if __name__ == "__main__":
    main()
