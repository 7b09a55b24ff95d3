"""Kernel benchmarks: each fastnn kernel against the best plain-NumPy formulation.

Verify first (every kernel here matches the NumPy reference at the benchmark shapes),
then time: median and min over repeats, GFLOP/s for products, GB/s for memory-bound
kernels, and the ratio NumPy time / fastnn time measured in the same run.
"""
import numpy as np

from common import timeit

from fastnn import _codes
from fastnn import _kernels as C
from fastnn import _reference as R

F32 = np.float32
ACT = R.ACT_CODES
LOSS = _codes.LOSSES
PARAMS = {"leaky_relu": (0.2,), "elu": (1.0,), "relu_general": (0.1, 2.5, 0.3)}  # kernel parameters
# the benchmarked optimizers' hyper-parameters (the values the old per-rule calls passed; no weight decay)
SGD_MOMENTUM = {"momentum": 0.9, "nesterov": False, "weight_decay": 0.0}
ADAGRAD = {"epsilon": 1e-7, "weight_decay": 0.0}
RMSPROP = {"rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "weight_decay": 0.0}
ADAM = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "weight_decay": 0.0}


def _rand(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(F32)


def optimizer_step(K, p, rule, hyper, slots, learning_rate, t=1):
    """Backend K's optimizer object for p, built once (not timed) with this step's scalars
    set (learning rate, step number t); time its .step(p, g) / .outer_step(p, a, b)."""
    k = K.OptimizerStep(p, rule, hyper, slots)
    k.begin(learning_rate, t)
    return k


# ---- the NumPy way: in place, with out= wherever NumPy allows -----------------------------

# the activations np_act_inplace writes in NumPy (the others have no NumPy column)
NP_ACTS = ("linear", "relu", "sigmoid", "tanh", "softmax", "leaky_relu", "elu")


def np_act_inplace(y, act):
    if act == "relu":
        np.maximum(y, 0, out=y)
    elif act == "sigmoid":
        np.negative(y, out=y)
        np.exp(y, out=y)
        y += 1
        np.reciprocal(y, out=y)
    elif act == "tanh":
        np.tanh(y, out=y)
    elif act == "softmax":
        y -= y.max(axis=1, keepdims=True)
        np.exp(y, out=y)
        y /= y.sum(axis=1, keepdims=True)
    elif act == "leaky_relu":
        np.multiply(y, np.where(y > 0, F32(1), F32(0.2)), out=y)
    elif act == "elu":
        neg = y < 0
        y[neg] = np.expm1(y[neg])


def np_act_grad(dx, dy, y, act):
    if act == "relu":
        np.multiply(dy, y > 0, out=dx)
    elif act == "sigmoid":
        np.multiply(dy, y * (1 - y), out=dx)
    elif act == "tanh":
        np.multiply(dy, 1 - y * y, out=dx)
    elif act == "softmax":
        np.multiply(y, dy - (dy * y).sum(axis=1, keepdims=True), out=dx)
    elif act == "leaky_relu":
        np.multiply(dy, np.where(y > 0, F32(1), F32(0.2)), out=dx)
    elif act == "elu":
        np.multiply(dy, np.where(y > 0, F32(1), y + 1), out=dx)
    else:
        dx[...] = dy


def _np_scaled_descent(p, g, d, lr, eps, tmp):
    """p -= lr g / sqrt(d + eps), in place through tmp (rmsprop's and adagrad's last passes)."""
    np.add(d, eps, out=tmp)
    np.sqrt(tmp, out=tmp)
    np.divide(g, tmp, out=tmp)
    tmp *= lr
    p -= tmp


def np_rmsprop(p, v, g, lr=1e-3, rho=0.9, eps=1e-7, tmp=None):
    """The best in-place NumPy rmsprop: no allocation, five passes."""
    v *= rho
    np.multiply(g, g, out=tmp)
    tmp *= 1 - rho
    v += tmp
    _np_scaled_descent(p, g, v, lr, eps, tmp)


def np_sgd_momentum(p, m, g, lr=0.01, mu=0.9, tmp=None):
    m *= mu
    np.multiply(g, lr, out=tmp)
    m -= tmp
    p += m


def np_adagrad(p, a, g, lr=1e-3, eps=1e-7, tmp=None):
    np.multiply(g, g, out=tmp)
    a += tmp
    _np_scaled_descent(p, g, a, lr, eps, tmp)


def np_adam(p, m, v, g, t=1, lr=1e-3, b1=0.9, b2=0.999, eps=1e-7, tmp=None):
    a = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    np.subtract(g, m, out=tmp)
    tmp *= 1 - b1
    m += tmp
    np.multiply(g, g, out=tmp)
    tmp -= v
    tmp *= 1 - b2
    v += tmp
    np.sqrt(v, out=tmp)
    tmp += eps
    np.divide(m, tmp, out=tmp)
    tmp *= a
    p -= tmp


# ---- benchmarks ------------------------------------------------------------------------------

def row(group, case, ours, theirs, work=None, unit=None):
    r = {"group": group, "case": case, "fastnn_ms": ours[0] * 1e3, "fastnn_min_ms": ours[1] * 1e3,
         "numpy_ms": theirs[0] * 1e3 if theirs else None,
         "speedup": theirs[0] / ours[0] if theirs else None, "rate": None, "unit": unit}
    if work:
        r["rate"] = work / ours[0] / 1e9
    return r


def verify(rng):
    """Every kernel benchmarked here against the reference, at the benchmark shapes."""
    x, w, b = _rand(rng, (128, 784)), _rand(rng, (784, 512), 0.05), _rand(rng, (512,))
    for act in ACT:
        got, want = np.empty((128, 512), F32), np.empty((128, 512), F32)
        z = np.empty_like(got) if act == "gelu" else None
        C.dense_forward(got, z, x, w, b, ACT[act], PARAMS.get(act, ()))
        R.dense_forward(want, None, x, w, b, ACT[act], PARAMS.get(act, ()))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    xs = np.ascontiguousarray(x[:, :392])
    for path in C.matmul_paths():
        got = np.empty((128, 512), F32)
        C.matmul_forward(got, xs, w[:392], path=path)
        np.testing.assert_allclose(got, xs @ w[:392], rtol=1e-5, atol=1e-5)
    g = _rand(rng, (407050,), 1e-3)
    for name in ("rmsprop", "adam"):
        outs = []
        for K in (C, R):
            p, s1, s2 = np.ones_like(g), np.zeros_like(g), np.zeros_like(g)
            if name == "rmsprop":
                k = optimizer_step(K, p, "rmsprop", RMSPROP, {"velocities": s1}, 1e-3)
            else:
                k = optimizer_step(K, p, "adam", ADAM, {"momentums": s1, "velocities": s2}, 1e-3, t=1)
            k.step(p, g)
            outs.append(p)
        np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-7)
    return "all benchmarked kernels match the NumPy reference"


def dense_forward_rows(rng, quick=False):
    rows = []
    shapes = [(128, 784, 512, "relu"), (128, 512, 10, "softmax"), (1, 784, 512, "relu")]
    if not quick:
        shapes += [(128, 784, 512, a) for a in ACT if a not in ("relu",)]
        shapes += [(1024, 1024, 1024, "relu")]
    for n, i, o, act in shapes:
        x, w, b = _rand(rng, (n, i)), _rand(rng, (i, o), 0.05), _rand(rng, (o,))
        y = np.empty((n, o), F32)
        z = np.empty_like(y) if act == "gelu" else None
        mt = 0.02 if n * i * o < 1e6 else 0.0
        ours = timeit(lambda: C.dense_forward(y, z, x, w, b, ACT[act], PARAMS.get(act, ())), min_time=mt)

        def numpy_way():
            np.matmul(x, w, out=y)
            np.add(y, b, out=y)
            np_act_inplace(y, act)
        theirs = timeit(numpy_way, min_time=mt) if act in NP_ACTS else None
        flops = 2.0 * n * i * o
        rows.append(row("dense forward", f"{n}x{i}x{o} +bias {act}", ours, theirs, flops, "GFLOP/s"))
        if act == "relu" and n == 128:
            bare = timeit(lambda: np.matmul(x, w, out=y), min_time=mt)
            rows.append(row("dense forward", f"{n}x{i}x{o} bare GEMM (np.matmul)", bare, None, flops, "GFLOP/s"))
    return rows


def dense_backward_rows(rng):
    rows = []
    for n, i, o, act, need_dx in [(128, 784, 512, "relu", False), (128, 512, 10, "linear", True)]:
        x, w = _rand(rng, (n, i)), _rand(rng, (i, o), 0.05)
        y = np.maximum(_rand(rng, (n, o)), 0)
        dy0 = _rand(rng, (n, o))
        dz, dw, db = np.empty_like(dy0), np.empty_like(w), np.empty(o, F32)
        dx = np.empty_like(x) if need_dx else None
        ours = timeit(lambda: C.dense_backward(dw, db, dx, dz, dy0, x, w, y, None, ACT[act], ()), min_time=0.02)

        def numpy_way():
            np_act_grad(dz, dy0, y, act)
            np.matmul(x.T, dz, out=dw)
            np.sum(dz, axis=0, out=db)
            if need_dx:
                np.matmul(dz, w.T, out=dx)
        theirs = timeit(numpy_way, min_time=0.02)
        flops = 2.0 * n * i * o * (2 if need_dx else 1)
        rows.append(row("dense backward", f"{n}x{i}x{o} {act}{' +dx' if need_dx else ''}", ours, theirs,
                        flops, "GFLOP/s"))
    return rows


def own_gemm_rows(rng):
    """fastnn's own serial GEMM (fnn_matmul_forward: the row-owned products of fit's step, one
    per thread), each kernel this machine runs, against np.matmul pinned to one thread, on the
    first layer's shares at two threads: the forward's x[:, rows] @ w[rows] and dw's rows."""
    from threadpoolctl import threadpool_limits
    rows = []
    for m, k, n, ta in [(128, 392, 512, False), (392, 128, 512, True)]:
        a, b = _rand(rng, (k, m) if ta else (m, k)), _rand(rng, (k, n))
        c = np.empty((m, n), F32)
        op = a.T if ta else a
        with threadpool_limits(1):
            theirs = timeit(lambda: np.matmul(op, b, out=c), min_time=0.02)
        for path in C.matmul_paths():
            ours = timeit(lambda: C.matmul_forward(c, a, b, ta, path=path), min_time=0.02)
            rows.append(row("own GEMM, 1 thread", f"{m}x{k}x{n}{' (a.T)' if ta else ''} {path}",
                            ours, theirs, 2.0 * m * n * k, "GFLOP/s"))
    return rows


def activation_backward_rows(rng):
    rows = []
    n, m = 128, 512
    x = _rand(rng, (n, m))
    for act in ("relu", "sigmoid", "tanh", "softmax", "leaky_relu", "elu"):
        y = np.empty_like(x)
        R.act_forward(y, x, ACT[act], PARAMS.get(act, ()))
        dy, dx = _rand(rng, (n, m)), np.empty_like(x)
        ours = timeit(lambda: C.act_backward(dx, dy, y, None, ACT[act], PARAMS.get(act, ())), min_time=0.02)
        theirs = timeit(lambda: np_act_grad(dx, dy, y, act), min_time=0.02)
        rows.append(row("activation backward", f"{n}x{m} {act}", ours, theirs, 3 * n * m * 4, "GB/s"))
    return rows


def loss_rows(rng):
    rows = []
    n, k = 128, 10
    z = _rand(rng, (n, k), 2)
    p = np.empty_like(z)
    R.act_forward(p, z, ACT["softmax"], ())
    t = np.eye(k, dtype=F32)[rng.integers(0, k, n)]
    d = np.empty_like(p)
    ours = timeit(lambda: C.loss_backward(d, p, t, LOSS["softmax_crossentropy"]), min_time=0.02)

    def numpy_fused():
        loss = -np.mean(np.sum(t * np.log(np.clip(p, 1e-7, 1 - 1e-7)), axis=1))
        np.subtract(p, t, out=d)
        np.divide(d, n, out=d)
        return loss
    rows.append(row("loss", f"{n}x{k} softmax+crossentropy (value+grad)", ours, timeit(numpy_fused, min_time=0.02)))
    labels = t.argmax(axis=1)
    ours = timeit(lambda: C.loss_backward(d, p, labels, LOSS["sparse_softmax_crossentropy"]), min_time=0.02)

    def numpy_sparse():
        loss = -np.mean(np.log(np.clip(p[np.arange(n), labels], 1e-7, 1 - 1e-7)))
        np.divide(p, n, out=d)
        d[np.arange(n), labels] -= 1 / n
        return loss
    rows.append(row("loss", f"{n}x{k} softmax+sparse crossentropy (value+grad)", ours,
                    timeit(numpy_sparse, min_time=0.02)))
    ours = timeit(lambda: C.loss_backward(d, p, t, LOSS["categorical_crossentropy"]), min_time=0.02)

    def numpy_cce():
        s = p.sum(axis=1, keepdims=True)
        q = np.clip(p / s, 1e-7, 1 - 1e-7)
        loss = -np.mean(np.sum(t * np.log(q), axis=1))
        g = -t / q
        np.subtract(g, (g * (p / s)).sum(axis=1, keepdims=True), out=d)
        np.divide(d, s * n, out=d)
        return loss
    rows.append(row("loss", f"{n}x{k} crossentropy from probabilities (value+grad)", ours,
                    timeit(numpy_cce, min_time=0.02)))
    pb = np.clip(p, 0.01, 0.99)
    ours = timeit(lambda: C.loss_backward(d, pb, t, LOSS["binary_crossentropy"]), min_time=0.02)

    def numpy_bce():
        c = np.clip(pb, 1e-7, 1 - 1e-7)
        loss = -np.mean(t * np.log(c) + (1 - t) * np.log(1 - c))
        np.divide((1 - t) / (1 - c) - t / c, pb.size, out=d)
        return loss
    rows.append(row("loss", f"{n}x{k} binary crossentropy (value+grad)", ours,
                    timeit(numpy_bce, min_time=0.02)))
    ours = timeit(lambda: C.loss_backward(d, p, t, LOSS["mean_squared_error"]), min_time=0.02)

    def numpy_mse():
        np.subtract(p, t, out=d)
        loss = float(np.mean(d * d))
        np.multiply(d, 2 / d.size, out=d)
        return loss
    rows.append(row("loss", f"{n}x{k} mse (value+grad)", ours, timeit(numpy_mse, min_time=0.02)))
    return rows


def optimizer_rows(rng, sizes=(1000, 100_000, 407_050, 10_000_000)):
    rows = []
    for size in sizes:
        g = _rand(rng, (size,), 1e-3)
        p, s1, s2, tmp = np.ones_like(g), np.empty_like(g), np.empty_like(g), np.empty_like(g)
        mt = 0.02 if size < 1e6 else 0.0
        rep = 21 if size < 1e6 else 9
        # the optimizer objects are built once, outside the timed calls (s1, s2 are reset in place)
        k_sgd = optimizer_step(C, p, "sgd", SGD_MOMENTUM, {"momentums": s1}, 0.01)
        k_adagrad = optimizer_step(C, p, "adagrad", ADAGRAD, {"accumulators": s1}, 1e-3)
        k_rmsprop = optimizer_step(C, p, "rmsprop", RMSPROP, {"velocities": s1}, 1e-3)
        k_adam = optimizer_step(C, p, "adam", ADAM, {"momentums": s1, "velocities": s2}, 1e-3, t=1)
        cases = [  # name, arrays streamed, the state's start value (Keras'), ours, NumPy's
            ("sgd momentum", 4, 0.0, lambda: k_sgd.step(p, g),
             lambda: np_sgd_momentum(p, s1, g, tmp=tmp)),
            ("adagrad", 4, 0.1, lambda: k_adagrad.step(p, g),
             lambda: np_adagrad(p, s1, g, tmp=tmp)),
            ("rmsprop", 5, 0.0, lambda: k_rmsprop.step(p, g),
             lambda: np_rmsprop(p, s1, g, tmp=tmp)),
            ("adam", 7, 0.0, lambda: k_adam.step(p, g),
             lambda: np_adam(p, s1, s2, g, tmp=tmp)),
        ]
        for name, streams, start, ours_fn, np_fn in cases:
            s1[...], s2[...] = start, 0.0  # each optimizer from its own fresh state
            ours = timeit(ours_fn, repeat=rep, min_time=mt)
            s1[...], s2[...] = start, 0.0
            theirs = timeit(np_fn, repeat=rep, min_time=mt)
            rows.append(row("optimizer step", f"{name} {size:,} params", ours, theirs,
                            streams * 4.0 * size, "GB/s"))
    return rows


def copy_bandwidth(size=10_000_000):
    """The machine's copy bandwidth (read + write bytes per second) at this size."""
    a, b = np.ones(size, F32), np.empty(size, F32)
    med, _ = timeit(lambda: np.copyto(b, a), repeat=9)
    return 2 * 4 * size / med / 1e9


def denormal_rows(rng):
    """The same kernels on subnormal inputs (|v| < 1.2e-38) versus normal ones: fastnn's
    optimizer steps flush subnormals inside the kernel (FTZ/DAZ); the rest of the work runs on
    the hardware as it is.  A ratio near 1 means no slowdown."""
    rows = []
    size = 407_050
    tiny = F32(1e-40)
    cases = []
    g_zero, p = np.zeros(size, F32), np.ones(size, F32)
    v_norm, v_sub = np.full(size, F32(1e-3)), np.full(size, tiny)

    def rmsprop_on(v):  # the optimizer object for velocity v, built before the timing
        k = optimizer_step(C, p, "rmsprop", RMSPROP, {"velocities": v}, 1e-3)
        return lambda: k.step(p, g_zero)
    cases.append(("rmsprop step, decaying velocity", rmsprop_on, v_norm, v_sub))
    x_norm, x_sub = _rand(rng, (128, 784)), np.full((128, 784), tiny)
    w, b, y = _rand(rng, (784, 512), 0.05), np.zeros(512, F32), np.empty((128, 512), F32)
    cases.append(("dense forward 128x784x512 relu", lambda xx: (lambda: C.dense_forward(
        y, None, xx, w, b, ACT["relu"], ())), x_norm, x_sub))
    a_norm, a_sub, out = _rand(rng, (128, 512)), np.full((128, 512), tiny), np.empty((128, 512), F32)
    cases.append(("activation forward 128x512 sigmoid", lambda a: (lambda: C.act_forward(
        out, a, ACT["sigmoid"], ())), a_norm, a_sub))
    for name, make, normal, sub in cases:
        t_norm = timeit(make(normal.copy()), min_time=0.02)
        t_sub = timeit(make(sub.copy()) if name.startswith("rmsprop") else make(sub), min_time=0.02)
        rows.append({"case": name, "normal_ms": t_norm[0] * 1e3, "subnormal_ms": t_sub[0] * 1e3,
                     "slowdown": t_sub[0] / t_norm[0]})
    return rows


def batch1_kernel_time(rng):
    """Seconds the kernels of one batch-size-1 training step of the book's network take on
    their own (each timed in a loop, warm caches), as fit runs them: gather, two dense
    forwards, the fused loss, two dense backwards (the first without its kernel gradient),
    the rank-1 rmsprop step of the first kernel and one rmsprop step over the other 5,642
    parameters.  fit's measured step minus this is the per-step overhead."""
    x, t = _rand(rng, (60000, 784)), np.eye(10, dtype=F32)[rng.integers(0, 10, 60000)]
    idx = np.array([123])
    xb, tb = np.empty((1, 784), F32), np.empty((1, 10), F32)
    w1, b1, w2, b2 = _rand(rng, (784, 512), 0.05), np.zeros(512, F32), _rand(rng, (512, 10), 0.05), np.zeros(10, F32)
    h, p, dz, dh = np.empty((1, 512), F32), np.empty((1, 10), F32), np.empty((1, 10), F32), np.empty((1, 512), F32)
    rest, g_rest, v_rest = np.zeros(5642, F32), np.zeros(5642, F32), np.zeros(5642, F32)
    v1, db1, dw2, db2 = np.zeros_like(w1), np.zeros_like(b1), np.zeros_like(w2), np.zeros_like(b2)
    k1 = optimizer_step(C, w1, "rmsprop", RMSPROP, {"velocities": v1}, 1e-3)
    k_rest = optimizer_step(C, rest, "rmsprop", RMSPROP, {"velocities": v_rest}, 1e-3)
    C.gather_rows(xb, x, idx)
    C.dense_forward(h, None, xb, w1, b1, ACT["relu"], ())
    C.dense_forward(p, None, h, w2, b2, ACT["softmax"], ())
    parts = {
        "gather": lambda: (C.gather_rows(xb, x, idx), C.gather_rows(tb, t, idx)),
        "dense forward 784x512 relu": lambda: C.dense_forward(h, None, xb, w1, b1, ACT["relu"], ()),
        "dense forward 512x10 softmax": lambda: C.dense_forward(p, None, h, w2, b2, ACT["softmax"], ()),
        "softmax+crossentropy": lambda: C.loss_backward(dz, p, tb, LOSS["softmax_crossentropy"]),
        "dense backward 512x10 +dx": lambda: C.dense_backward(dw2, db2, dh, dz, dz.copy(), h, w2, p, None, ACT["linear"], ()),
        "dense backward 784x512 relu (no dw)": lambda: C.dense_backward(None, db1, None, dh, dh, xb, w1, h, None, ACT["relu"], ()),
        "rmsprop rank-1 784x512": lambda: k1.outer_step(w1, xb[0], dh[0]),
        "rmsprop 5,642": lambda: k_rest.step(rest, g_rest),
    }
    return {name: timeit(fn, min_time=0.01)[0] for name, fn in parts.items()}
