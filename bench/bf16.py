"""bfloat16 products (src_c/bf16.c) on each path this machine runs, beside float32 in the same run.

Verify, then time.  For the book's dense layers (forward 128x784x512 and 128x512x10, and their
backward products dw := x.T @ dz, dx := dz @ w.T) and a large 2048^3 product: GFLOP/s (median
and best over repeats) of fastnn's bf16 kernels on each path, of fastnn's float32 kernels (the
BLAS's sgemm) and of NumPy's float32 matmul, with every pool pinned to the same thread count;
torch.matmul in bfloat16 too when torch imports.  Also the fused optimizer step + pack against
the plain step followed by a separate pack.

    python bench/bf16.py [--threads 2] [--quick]
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, pin_threads, timeit  # noqa: E402

from fastnn import _codes  # noqa: E402
from fastnn import _kernels as C  # noqa: E402
from fastnn import _reference as R  # noqa: E402

LINEAR = _codes.ACTIVATIONS["linear"]


def gflops(flops, t):
    return flops / t / 1e9


def layer(rng, n, i, o):
    x = rng.standard_normal((n, i)).astype(np.float32)
    w = (rng.standard_normal((i, o)) / np.sqrt(i)).astype(np.float32)
    x16 = np.empty(x.shape, np.uint16)
    C.bf16_convert_forward(x16, x)
    wp = np.empty(C.bf16_packed_size(i, o), np.uint16)
    wtp = np.empty(C.bf16_packed_size(o, i), np.uint16)
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
        R.dense_forward_bf16(want, None, None, x16, wp, None, LINEAR, 0.0)
        for p in paths:
            C.bf16_set_path(p)
            y = np.empty((n, o), np.float32)
            C.dense_forward_bf16(y, None, None, x16, wp, None, LINEAR, 0.0)
            err = np.abs(y - want) - bf16_product_atol(a, b) - 1e-6
            assert (err <= 0).all(), f"{p} forward {n}x{i}x{o}: off by {err.max()}"
    C.bf16_set_path(None)
    print("verified: every path's forward matches the NumPy twin within the bound "
          "(tests/tolerances.py bf16_product_atol)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    pin_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    print("\n".join(environment(args.threads)))
    print(f"load average: {os.getloadavg()}")
    if torch is not None:
        print(f"torch {torch.__version__}: {torch.__config__.parallel_info().splitlines()[0:3]}")
    else:
        print("torch: not installed (pip install torch for its bf16 column)")
    paths = C.bf16_paths()
    book = [(128, 784, 512), (128, 512, 10)]
    verify(paths, book + [(2048, 2048, 2048)] if not args.quick else book)

    rep = 5 if args.quick else 11
    rng = np.random.default_rng(1)

    print(f"\nGFLOP/s, median (best) over {rep} repeats; bf16 paths {paths}, float32: fastnn's "
          f"kernel (sgemm inside) and NumPy's matmul")
    for n, i, o in book + [(2048, 2048, 2048)]:
        big = n == 2048
        x, w, x16, wp, wtp, dy = layer(rng, n, i, o)
        y = np.empty((n, o), np.float32)
        fns = []
        for p in paths:
            if big and p == "portable" and args.quick:
                continue

            def fwd(p=p):
                C.dense_forward_bf16(y, None, None, x16, wp, None, LINEAR, 0.0)
            C.bf16_set_path(p)
            med, best = timeit(fwd, repeat=3 if big else rep, warmup=1, min_time=0.002)
            fns.append((f"bf16 {p}", gflops(2 * n * i * o, med), gflops(2 * n * i * o, best)))
        C.bf16_set_path(None)
        for label, fn in (("f32 fastnn", lambda: C.dense_forward(y, None, x, w, None, LINEAR, 0.0)),
                          ("f32 numpy", lambda: np.matmul(x, w, out=y))):
            med, best = timeit(fn, repeat=3 if big else rep, warmup=1, min_time=0.002)
            fns.append((label, gflops(2 * n * i * o, med), gflops(2 * n * i * o, best)))
        if torch is not None:
            tx, tw = torch.from_numpy(x).bfloat16(), torch.from_numpy(w).bfloat16()
            med, best = timeit(lambda: torch.matmul(tx, tw), repeat=3 if big else rep, warmup=1,
                               min_time=0.002)
            fns.append(("torch bf16", gflops(2 * n * i * o, med), gflops(2 * n * i * o, best)))
        print(f"forward {n}x{i}x{o:<14}" + "  ".join(f"{l}: {m:7.1f} ({b:7.1f})" for l, m, b in fns),
              flush=True)
        if big:
            continue
        # backward: dw := x.T @ dz and dx := dz @ w.T (2 products), db and the bf16 copies
        dw, dx, db = np.empty((i, o), np.float32), np.empty((n, i), np.float32), np.empty(o, np.float32)
        dz = np.empty_like(dy)
        scratch = np.empty(C.bf16_backward_scratch_size(n, i, o), np.uint16)
        fns = []
        for p in paths:
            C.bf16_set_path(p)
            med, best = timeit(lambda: C.dense_backward_bf16(dw, db, dx, dz, scratch, dy, x16, wtp, y,
                                                             None, LINEAR, 0.0),
                               repeat=rep, warmup=1, min_time=0.002)
            fns.append((f"bf16 {p}", gflops(4 * n * i * o, med), gflops(4 * n * i * o, best)))
        C.bf16_set_path(None)
        for label, fn in (
                ("f32 fastnn", lambda: C.dense_backward(dw, db, dx, dz, dy, x, w, y, None, LINEAR, 0.0)),
                ("f32 numpy", lambda: (np.matmul(x.T, dy, out=dw), np.matmul(dy, w.T, out=dx),
                                       dy.sum(axis=0, out=db)))):
            med, best = timeit(fn, repeat=rep, warmup=1, min_time=0.002)
            fns.append((label, gflops(4 * n * i * o, med), gflops(4 * n * i * o, best)))
        if torch is not None:
            tx, tw, tdz = (torch.from_numpy(a).bfloat16() for a in (x, w, dy))
            med, best = timeit(lambda: (torch.matmul(tx.T, tdz), torch.matmul(tdz, tw.T)),
                               repeat=rep, warmup=1, min_time=0.002)
            fns.append(("torch bf16", gflops(4 * n * i * o, med), gflops(4 * n * i * o, best)))
        print(f"backward {n}x{i}x{o:<13}" + "  ".join(f"{l}: {m:7.1f} ({b:7.1f})" for l, m, b in fns),
              flush=True)

    # the fused optimizer step + pack (adam on the 784 x 512 kernel) against step, then pack
    i, o = 784, 512
    p = rng.standard_normal(i * o).astype(np.float32)
    g = rng.standard_normal(i * o).astype(np.float32)
    slots = {"momentums": np.zeros_like(p), "velocities": np.zeros_like(p)}
    opt = C.OptimizerStep(p, "adam", {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}, slots)
    opt.begin(1e-3, 1)
    wp, wtp = np.empty(C.bf16_packed_size(i, o), np.uint16), np.empty(C.bf16_packed_size(o, i), np.uint16)
    fused, _ = timeit(lambda: C.optimizer_step_bf16pack(opt, p, wp, wtp, g, 0, i, o), repeat=rep,
                      warmup=1, min_time=0.002)
    plain, _ = timeit(lambda: opt.step(p, g), repeat=rep, warmup=1, min_time=0.002)
    pack, _ = timeit(lambda: C.bf16_pack_forward(wp, wtp, p.reshape(i, o)), repeat=rep, warmup=1,
                     min_time=0.002)
    print(f"\nadam step on a 784x512 kernel + both packs: fused {fused * 1e6:.0f} us; step "
          f"{plain * 1e6:.0f} us + pack {pack * 1e6:.0f} us = {(plain + pack) * 1e6:.0f} us "
          f"(bf16 path {C.bf16_path()})")


if __name__ == "__main__":
    main()
