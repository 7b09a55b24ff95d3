"""Every C kernel against its NumPy twin: one registry of cases, one parametrized test.

A case builds its inputs from a seed, runs one backend, and returns everything the kernel
wrote (outputs, updated state, returned loss).  The same case runs on both backends and
the results must agree within the dtype's tolerance.
"""
import io
import math

import numpy as np
import pytest

import fastnn
from fastnn import _kernels as C
from fastnn import _reference as R
from fastnn import _codes, optimizers
from fastnn._codes import ACT_NEEDS_X, LOSSES
from act_params import PARAMS
from tolerances import TOL

ACTS = list(R.ACT_CODES)


def _rand(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# ---- the cases -----------------------------------------------------------------------------

def dense_forward_case(act, n, i, o, bias, keep_z, params=None):
    params = PARAMS.get(act, ()) if params is None else params

    def run(K, dtype, rng):
        x, w = _rand(rng, (n, i), dtype), _rand(rng, (i, o), dtype, 1 / np.sqrt(i))
        b = _rand(rng, (o,), dtype) if bias else None
        y = np.full((n, o), np.nan, dtype)
        z = np.full((n, o), np.nan, dtype) if keep_z else None
        K.dense_forward(y, z, x, w, b, R.ACT_CODES[act], params)
        return [y] + ([z] if keep_z else [])
    return run


def dense_backward_case(act, n, i, o, bias, want_dx, dz_is_dy, params=None):
    params = PARAMS.get(act, ()) if params is None else params

    def run(K, dtype, rng):
        code = R.ACT_CODES[act]
        x, w = _rand(rng, (n, i), dtype), _rand(rng, (i, o), dtype, 1 / np.sqrt(i))
        z = _rand(rng, (n, o), dtype)
        y = np.empty_like(z)
        R.act_forward(y, z, code, params)  # the same forward output for both backends
        # dy at the scale of a batch-mean loss's gradient, 1/n, as in training: at O(1) the
        # float32 rounding of a 131-term sum near zero reaches the absolute tolerance
        dy = _rand(rng, (n, o), dtype, 1.0 / n)
        dz = dy if dz_is_dy else np.full_like(dy, np.nan)
        dw = np.full((i, o), np.nan, dtype)
        db = np.full((o,), np.nan, dtype) if bias else None
        dx = np.full((n, i), np.nan, dtype) if want_dx else None
        K.dense_backward(dw, db, dx, dz, dy, x, w, y, z, code, params)
        return [a for a in (dw, db, dx, dz) if a is not None]
    return run


def act_case(act, n, m, backward, params=None, scale=3.0):
    params = PARAMS.get(act, ()) if params is None else params

    def run(K, dtype, rng):
        code = R.ACT_CODES[act]
        x = _rand(rng, (n, m), dtype, scale)
        y = np.full_like(x, np.nan)
        K.act_forward(y, x, code, params)
        if not backward:
            return [y]
        dy, dx = _rand(rng, (n, m), dtype), np.full_like(x, np.nan)
        R.act_forward(y, x, code, params)
        K.act_backward(dx, dy, y, x, code, params)
        return [dx]
    return run


def _loss_inputs(name, n, k, dtype, rng):
    """(p, t) in each loss's domain, with its edges: clipped probabilities, targets of 0,
    huber errors on both sides of delta, a zero row for cosine_similarity."""
    logits = _rand(rng, (n, k), dtype, 2.0)
    labels = rng.integers(0, k, n)
    onehot = np.eye(k, dtype=dtype)[labels]
    if "sparse" in name:
        t = labels
    elif name in ("binary_crossentropy", "sigmoid_binary_crossentropy"):
        t = rng.integers(0, 2, (n, k)).astype(dtype)
        t[0] = rng.random(k).astype(dtype)  # one soft-label row
    elif name in ("hinge", "squared_hinge"):  # {0, 1} (converted) when n is odd, else {-1, 1}
        t = rng.integers(0, 2, (n, k)).astype(dtype)
        if n % 2 == 0:
            t = 2 * t - 1
    elif name == "categorical_hinge":
        t = onehot
    elif name == "poisson":
        t = rng.integers(0, 4, (n, k)).astype(dtype)
    elif name == "mean_absolute_percentage_error":  # a zero target: divided by eps
        t = _rand(rng, (n, k), dtype)
        t[0, 0] = 0
    elif name == "mean_squared_logarithmic_error":  # counts; p of both signs (max(p, eps))
        t = rng.integers(0, 4, (n, k)).astype(dtype)
    elif name in ("mean_squared_error", "mean_absolute_error", "huber", "log_cosh",
                  "cosine_similarity"):
        t = _rand(rng, (n, k), dtype)
    else:  # categorical, kl_divergence: distributions, one soft row
        t = onehot
        t[0] = rng.random(k).astype(dtype)
        t[0] /= t[0].sum()
    if "softmax" in name or "categorical_crossentropy" in name or name == "kl_divergence":
        p = np.empty_like(logits)
        R.act_forward(p, logits, R.SOFTMAX, ())
        if "softmax" not in name and name != "kl_divergence":
            p *= dtype(1.5)  # unnormalised probabilities exercise the normalisation
    elif name == "binary_crossentropy":
        p = np.empty_like(logits)
        R.act_forward(p, logits, R.SIGMOID, ())
    elif name == "poisson":
        p = np.exp(logits / 2)
    else:
        p = logits
    if name == "cosine_similarity" and n > 1:
        p[-1] = 0  # |p| < eps: p_hat = p / eps
    return p, t


def loss_case(name, n, k, weighted=False):
    fused = "softmax" in name

    def run(K, dtype, rng):
        p, t = _loss_inputs(name, n, k, dtype, rng)
        sw = rng.random(n).astype(dtype) if weighted else None
        dp = np.full((n, k), np.nan, dtype)
        per_sample = np.full(n, np.nan, dtype)
        code = LOSSES[name]
        out = [np.array(K.loss_backward(dp, p, t, code, sw, per_sample)), dp, per_sample]
        if not fused:
            out.append(np.array(K.loss_backward(None, p, t, code, sw)))
        return out
    return run


def huber_case(n, k, delta, weighted):
    def run(K, dtype, rng):
        p, t = _rand(rng, (n, k), dtype, 2.0), _rand(rng, (n, k), dtype)
        sw = rng.random(n).astype(dtype) if weighted else None
        dp, per_sample = np.full((n, k), np.nan, dtype), np.full(n, np.nan, dtype)
        return [np.array(K.huber_backward(dp, p, t, delta, sw, per_sample)), dp, per_sample]
    return run


def _on_backend(K, fn):
    before = fastnn.get_backend()
    fastnn.set_backend(K.NAME)
    try:
        return fn()
    finally:
        fastnn.set_backend(before)


def optimizer_case(make, size, steps=3):
    """`steps` steps of the optimizer make() on one parameter array, through its one
    declaration (Optimizer.apply -> the backend's OptimizerStep)."""
    def run(K, dtype, rng):
        def steps_():
            opt, p = make(), _rand(rng, size, dtype)
            for _ in range(steps):
                opt.apply([p], [_rand(rng, size, dtype)])
            return [p] + opt.variables
        return _on_backend(K, steps_)
    return run


def outer_step_case(make, rows, cols, tail=5):
    """The rank-1 step against the same rule given the explicit gradient outer(a, b): the
    reference forms it, the compiled kernel never does; `tail` more parameters after the
    rows x cols block take the plain step, as a dense layer's bias does."""
    def run(K, dtype, rng):
        def steps_():
            opt, p = make(), _rand(rng, rows * cols + tail, dtype)
            for _ in range(3):
                a, b = _rand(rng, (rows,), dtype), _rand(rng, (cols,), dtype)
                g = np.concatenate([np.full(rows * cols, np.nan, dtype), _rand(rng, tail, dtype)])
                opt.apply([p], [g], rank1=(a, b))
            return [p] + opt.variables
        return _on_backend(K, steps_)
    return run


OPTIMIZERS = {
    "sgd": lambda: optimizers.SGD(0.1), "sgd_momentum": lambda: optimizers.SGD(0.1, momentum=0.9),
    "sgd_wd": lambda: optimizers.SGD(0.1, weight_decay=0.01),
    "sgd_nesterov": lambda: optimizers.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.004),
    "adagrad": lambda: optimizers.Adagrad(0.1),
    "adagrad_wd": lambda: optimizers.Adagrad(0.1, weight_decay=0.01),
    "rmsprop": lambda: optimizers.RMSprop(0.01),
    "rmsprop_momentum": lambda: optimizers.RMSprop(0.01, momentum=0.5),
    "rmsprop_centered": lambda: optimizers.RMSprop(0.01, centered=True),
    "rmsprop_all": lambda: optimizers.RMSprop(0.01, centered=True, momentum=0.5, weight_decay=0.01),
    "adam": lambda: optimizers.Adam(0.01), "adam_amsgrad": lambda: optimizers.Adam(0.01, amsgrad=True),
    "adam_wd": lambda: optimizers.Adam(0.01, weight_decay=0.004),
    "adamw": lambda: optimizers.AdamW(0.01),
    "nadam": lambda: optimizers.Nadam(0.01),
    "nadam_wd": lambda: optimizers.Nadam(0.01, beta_1=0.5, weight_decay=0.004),
    "adamax": lambda: optimizers.Adamax(0.01),
    "adamax_wd": lambda: optimizers.Adamax(0.01, beta_1=0.5, beta_2=0.8, weight_decay=0.004),
    "adadelta": lambda: optimizers.Adadelta(1.0),
    "adadelta_wd": lambda: optimizers.Adadelta(0.5, rho=0.8, epsilon=1e-4, weight_decay=0.01),
    "lion": lambda: optimizers.Lion(0.01),
    "lion_wd": lambda: optimizers.Lion(0.01, beta_1=0.5, beta_2=0.9, weight_decay=0.04),
}


def gather_case(shape, dtype_override=None):
    def run(K, dtype, rng):
        dt = dtype_override or dtype
        x = (rng.standard_normal(shape) * 10).astype(dt)
        idx = rng.integers(0, shape[0], 2 * shape[0] + 1)
        out = np.zeros((len(idx),) + shape[1:], dt)
        K.gather_rows(out, x, idx)
        return [out.astype(dtype)]
    return run


def norm_case(op, n, m, affine, training=True, dx_is_dy=False):
    """batchnorm/layernorm forward (training or with given statistics) and backward, prelu
    forward and backward (src_c/norm.inc); affine=False: gamma, beta (dgamma, dbeta) None."""
    def run(K, dtype, rng):
        x = _rand(rng, (n, m), dtype, 2.0) + dtype(0.5)
        gamma = _rand(rng, (m,), dtype) if affine else None
        beta = _rand(rng, (m,), dtype) if affine else None
        y, dy = np.full_like(x, np.nan), _rand(rng, (n, m), dtype, 1.0 / n)
        dx = dy.copy() if dx_is_dy else np.full_like(x, np.nan)
        if op == "prelu":
            alpha = _rand(rng, (m,), dtype, 0.5)
            K.prelu_forward(y, x, alpha)
            da = np.full((m,), np.nan, dtype) if affine else None
            K.prelu_backward(dx, da, dx if dx_is_dy else dy, x, alpha)
            return [y, dx] + ([da] if affine else [])
        if op == "batchnorm":
            mean, var = np.full((m,), np.nan, dtype), np.full((m,), np.nan, dtype)
            if not training:
                mean, var = _rand(rng, (m,), dtype), rng.random(m).astype(dtype) + dtype(0.1)
            K.batchnorm_forward(y, mean, var, x, gamma, beta, 1e-3, training)
            R.batchnorm_forward(y.copy(), mean, var, x, gamma, beta, 1e-3, training)  # same stats
            dg, db = np.full((m,), np.nan, dtype), np.full((m,), np.nan, dtype)
            K.batchnorm_backward(dx, dg, db, dx if dx_is_dy else dy, x, mean, var, gamma, 1e-3)
            return [y, mean, var, dx, dg, db]
        mean, rstd = np.full((n,), np.nan, dtype), np.full((n,), np.nan, dtype)
        K.layernorm_forward(y, mean, rstd, x, gamma, beta, 1e-3)
        R.layernorm_forward(y.copy(), mean, rstd, x, gamma, beta, 1e-3)
        dg = np.full((m,), np.nan, dtype) if affine else None
        db = np.full((m,), np.nan, dtype) if affine else None
        K.layernorm_backward(dx, dg, db, dx if dx_is_dy else dy, x, mean, rstd, gamma)
        return [y, mean, rstd, dx] + ([dg, db] if affine else [])
    return run


# fnn_matmul_forward's tiles are 6 rows x 64, 16 or 8 (f32; f64: half) columns on its avx512,
# avx2 and base kernels, its panels 256 rows of b, its row blocks 192 rows: sizes on, off and one
# past each, and the owned products of the book's network (2 shares).
# Not in the registry: its sums of k products run in another order than NumPy's (and than
# itself under another build, e.g. the sanitizers' -O1), so it is held to the rounding bound.
MATMUL_SHAPES = [(1, 1, 1), (6, 64, 256), (7, 65, 257), (5, 33, 3), (13, 130, 100),
                 (128, 512, 392), (192, 17, 40), (193, 40, 300), (400, 70, 513)]


def _registry():
    cases = {}
    # (64, 100, 10) and (131, 515, 11) are small products that the kernels split into row
    # blocks across threads (2 and 4 blocks at two threads), (1, 301, 200) a GEMV split by rows
    # of w with the partial sums added; the others go to the BLAS whole
    dense_shapes = [(1, 1, 1), (1, 7, 3), (5, 17, 33), (3, 16, 129), (64, 100, 10), (131, 515, 11),
                    (1, 301, 200)]
    for act in ACTS:
        for n, i, o in dense_shapes:
            for bias in (True, False):
                b = "b" if bias else "nob"
                cases[f"dense_forward-{act}-{n}x{i}x{o}-{b}"] = dense_forward_case(
                    act, n, i, o, bias, keep_z=act in ACT_NEEDS_X)
                cases[f"dense_backward-{act}-{n}x{i}x{o}-{b}"] = dense_backward_case(
                    act, n, i, o, bias, want_dx=bias, dz_is_dy=not bias)
        cases[f"dense_forward-{act}-5x17x33-b-keepz"] = dense_forward_case(act, 5, 17, 33, True, True)
        for n, m in [(1, 1), (3, 17), (64, 100), (2, 70000)]:
            cases[f"act_forward-{act}-{n}x{m}"] = act_case(act, n, m, False)
            cases[f"act_backward-{act}-{n}x{m}"] = act_case(act, n, m, True)
    # other parameters of the parametrised codes: relu without max_value (no clip below) and
    # a negative threshold, relu with all three and a threshold below 0, other slopes/alphas
    for label, (act, params) in {"relu_general_nomax": ("relu_general", (0.0, math.inf, -0.5)),
                                 "relu_general_neg": ("relu_general", (0.3, 1.0, -0.7)),
                                 "leaky_relu_1.7": ("leaky_relu", (1.7,)),
                                 "elu_0.4": ("elu", (0.4,)),
                                 # issue #11's: other thresholds (0: soft_shrink is x), a
                                 # default_value above the threshold and one below, alphas, b
                                 "hard_shrink_1.3": ("hard_shrink", (1.3,)),
                                 "soft_shrink_0": ("soft_shrink", (0.0,)),
                                 "soft_shrink_1.2": ("soft_shrink", (1.2,)),
                                 "threshold_above": ("threshold", (0.3, 2.0)),
                                 "threshold_neg": ("threshold", (-0.8, 0.0)),
                                 "celu_0.4": ("celu", (0.4,)), "celu_2.5": ("celu", (2.5,)),
                                 "squareplus_0.5": ("squareplus", (0.5,))}.items():
        for n, i, o in [(1, 7, 3), (5, 17, 33), (64, 100, 10)]:
            cases[f"dense_forward-{label}-{n}x{i}x{o}-b"] = dense_forward_case(
                act, n, i, o, True, True, params)
            cases[f"dense_backward-{label}-{n}x{i}x{o}-b"] = dense_backward_case(
                act, n, i, o, True, True, False, params)
        for n, m in [(1, 1), (3, 17), (64, 100)]:
            cases[f"act_forward-{label}-{n}x{m}"] = act_case(act, n, m, False, params)
            cases[f"act_backward-{label}-{n}x{m}"] = act_case(act, n, m, True, params)
    # sparsemax on close values: supports of many entries (the kernel's fixpoint takes several
    # rounds; the twin sorts), and a row of ties
    for n, m in [(3, 17), (64, 100), (2, 70000)]:
        cases[f"act_forward-sparsemax_close-{n}x{m}"] = act_case("sparsemax", n, m, False, scale=0.05)
        cases[f"act_backward-sparsemax_close-{n}x{m}"] = act_case("sparsemax", n, m, True, scale=0.05)
    cases["act_forward-sparsemax_ties-4x9"] = act_case("sparsemax", 4, 9, False, scale=0.0)
    for name in LOSSES:
        for n, k in [(1, 1), (1, 3), (7, 10), (33, 5), (4, 37)]:
            cases[f"{name}-{n}x{k}"] = loss_case(name, n, k)
        cases[f"{name}-weighted-9x17"] = loss_case(name, 9, 17, weighted=True)
    for delta in (0.5, 2.0):
        cases[f"huber_delta{delta}-7x10"] = huber_case(7, 10, delta, False)
        cases[f"huber_delta{delta}-weighted-1x19"] = huber_case(1, 19, delta, True)
    for label, make in OPTIMIZERS.items():
        for size in [(1,), (17,), (31, 33), (300001,)]:
            cases[f"{label}_step-{'x'.join(map(str, size))}"] = optimizer_case(make, size)
        for rows, cols in [(1, 1), (3, 17), (784, 512)]:
            cases[f"{label}_outer_step-{rows}x{cols}"] = outer_step_case(make, rows, cols)
    for shape in [(1, 1), (7, 13), (300, 784), (5, 4, 3)]:
        cases[f"gather-{'x'.join(map(str, shape))}"] = gather_case(shape)
    cases["gather-int64-labels"] = gather_case((50,), np.int64)
    # 1 x 1, sizes off the SIMD width and the 64-column chunks, one past FNN_OMP_MIN_ELEMS
    for n, m in [(1, 1), (2, 3), (7, 65), (33, 130), (300, 129)]:
        for affine in (True, False):
            a = "affine" if affine else "plain"
            for op in ("batchnorm", "layernorm", "prelu"):
                cases[f"{op}-{n}x{m}-{a}"] = norm_case(op, n, m, affine)
            cases[f"batchnorm_inference-{n}x{m}-{a}"] = norm_case("batchnorm", n, m, affine, False)
        for op in ("batchnorm", "layernorm", "prelu"):
            cases[f"{op}-{n}x{m}-dx_is_dy"] = norm_case(op, n, m, True, dx_is_dy=True)
    return cases


CASES = _registry()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(CASES))
def test_kernel_matches_reference(case, dtype):
    run = CASES[case]
    got = run(C, dtype, np.random.default_rng(0))
    want = run(R, dtype, np.random.default_rng(0))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert np.all(np.isfinite(g)), "a kernel left its output (partly) unwritten"
        np.testing.assert_allclose(g, w, **TOL[dtype])


def _gemm_path(name):
    why = f"this machine does not run the {name} kernel (it runs {C.matmul_paths()})"
    return pytest.param(name, id=name,
                        marks=pytest.mark.skipif(name not in C.matmul_paths(), reason=why))


@pytest.mark.parametrize("path", [_gemm_path(p) for p in _codes.GEMM_PATHS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("ta", [False, True], ids=["a", "aT"])
@pytest.mark.parametrize("m,n,k", MATMUL_SHAPES + [(13, 130, 600), (3, 70, 1000)])
def test_matmul_forward_within_the_rounding_bound(m, n, k, ta, dtype, path):
    """Long sums differ from NumPy's in their order, so fnn_matmul_forward is held to the
    forward error bound of a dot product of k terms: |c - a @ b| <= gamma_k (|a| @ |b|),
    gamma_k = k u / (1 - k u), u the unit roundoff; a @ b and |a| @ |b| in extended precision.
    Each instruction set's kernel in turn."""
    rng = np.random.default_rng(3)
    a = _rand(rng, (k, m) if ta else (m, k), dtype)
    b = _rand(rng, (k, n), dtype)
    c = np.full((m, n), np.nan, dtype)
    C.matmul_forward(c, a, b, ta, path=path)
    wide = np.longdouble
    exact, size = np.empty((m, n), wide), np.empty((m, n), wide)
    R.matmul_forward(exact, a.astype(wide), b.astype(wide), ta)
    R.matmul_forward(size, np.abs(a).astype(wide), np.abs(b).astype(wide), ta)
    u = wide(np.finfo(dtype).eps) / 2
    assert np.all(np.abs(c.astype(wide) - exact) <= k * u / (1 - k * u) * size)


def test_matmul_forward_runs_the_best_kernel_and_refuses_one_the_machine_lacks():
    paths = C.matmul_paths()
    assert paths[-1] == "base" and paths == [p for p in reversed(list(_codes.GEMM_PATHS)) if p in paths]
    rng = np.random.default_rng(4)
    a, b = _rand(rng, (7, 300), np.float32), _rand(rng, (300, 33), np.float32)
    best, on_first = np.empty((7, 33), np.float32), np.empty((7, 33), np.float32)
    C.matmul_forward(best, a, b)
    C.matmul_forward(on_first, a, b, path=paths[0])
    np.testing.assert_array_equal(best, on_first)
    out = io.StringIO()
    fastnn.show_config(file=out)
    assert f"fastnn's own GEMM: {paths[0]}" in out.getvalue()
    for bad in ["sse", *(p for p in _codes.GEMM_PATHS if p not in paths)]:
        with pytest.raises(ValueError, match=f"Expected path to be one of .* Received: path='{bad}'"):
            C.matmul_forward(best, a, b, path=bad)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("case", ["dense_forward-softmax-131x515x11-b", "dense_forward-relu-64x100x10-nob",
                                  "dense_forward-tanh-1x301x200-b", "dense_forward-softmax-1x301x200-nob",
                                  "dense_backward-relu-131x515x11-b", "dense_backward-tanh-64x100x10-nob"])
def test_dense_kernels_at_other_thread_counts(case, threads):
    """The row-block split of small products, and the batch-1 GEMV split, at one thread (no
    split) and at three (shared unevenly) give the reference's results too."""
    before = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(threads)
        got = CASES[case](C, np.float32, np.random.default_rng(1))
    finally:
        fastnn.set_num_threads(before)
    want = CASES[case](R, np.float32, np.random.default_rng(1))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, **TOL[np.float32])


@pytest.mark.parametrize("act", ["sigmoid", "tanh", "softmax", "elu", "gelu", "log_sigmoid",
                                 "celu", "tanh_shrink", "squareplus"])
def test_exp_based_activations_over_their_whole_range(act):
    """The vectorised float32 exp/tanh against NumPy on a dense sweep, including the
    overflow and subnormal edges (exp(88.7) ~ FLT_MAX, exp(-103) is subnormal)."""
    v = np.concatenate([np.linspace(-110, 110, 200_000), [-0.625, 0.625, -1e-30, 0.0, 1e-30]])
    x = v.astype(np.float32).reshape(-1, 5) if act == "softmax" else v.astype(np.float32).reshape(1, -1)
    got, want = np.empty_like(x), np.empty_like(x)
    C.act_forward(got, x, R.ACT_CODES[act], PARAMS.get(act, ()))
    R.act_forward(want, x, R.ACT_CODES[act], PARAMS.get(act, ()))
    np.testing.assert_allclose(got, want, **TOL[np.float32])
    if act == "softmax":  # exp itself, where the results span every exponent: relative error
        z = np.stack([v, np.zeros_like(v)], 1).astype(np.float32)
        p = np.empty_like(z)
        C.act_forward(p, z, R.ACT_CODES["softmax"], ())
        e = np.exp(-np.abs(z[:, 0].astype(np.float64)))
        small = e / (1 + e)  # the smaller of the two probabilities
        mine = np.minimum(p[:, 0], p[:, 1]).astype(np.float64)
        ok = small > 1e-37  # normal range: relative accuracy of a few ulp
        np.testing.assert_allclose(mine[ok], small[ok], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("act", ACTS)
def test_nan_and_inf_propagate_like_numpy(act, dtype):
    """A diverged network feeds NaN and +-inf to the kernels: they pass them on as NumPy does
    (softmax rows containing NaN become NaN), never turning them into finite numbers."""
    x = np.array([[np.nan, 1.0, -2.0], [np.inf, 0.5, 0.0], [-np.inf, 3.0, 1.0]], dtype)
    code, params = R.ACT_CODES[act], PARAMS.get(act, ())
    got, want = np.empty_like(x), np.empty_like(x)
    C.act_forward(got, x, code, params)
    with np.errstate(all="ignore"):
        R.act_forward(want, x, code, params)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], **TOL[dtype])
    np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])
