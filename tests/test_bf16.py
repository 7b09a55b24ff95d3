"""The bfloat16 kernels (src_c/bf16.c) on each path this machine runs, forced in turn, against
their NumPy twins (fastnn/_reference.py) and against each other.

The conversion and the packing are bit-exact on every path; the products differ between paths
only in the order of float32 additions, bounded by tolerances.bf16_product_atol (derived there
once from bfloat16's 8-bit significand and K).  The twins are checked by independent means:
the conversion against the nearest bfloat16 found in float64, the packing against the layout's
formula (src_c/bf16.c), the products against float64 products of the same bfloat16 values.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from fastnn import _codes
from fastnn import _reference as R
from act_params import PARAMS
from tolerances import TOL, bf16_product_atol

C = pytest.importorskip("fastnn._kernels")

F32 = TOL[np.float32]
ACT = _codes.ACTIVATIONS
ALL_PATHS = list(_codes.BF16_PATHS)


def _path_param(name):
    why = f"this machine does not run the {name} path (it runs {C.bf16_paths()})"
    return pytest.param(name, id=name,
                        marks=pytest.mark.skipif(name not in C.bf16_paths(), reason=why))


PATHS = [_path_param(p) for p in ALL_PATHS]


@pytest.fixture
def on_path(request):
    """Forces the bf16 path of the test's `path` parameter, then restores the default."""
    C.bf16_set_path(request.getfixturevalue("path"))
    yield
    C.bf16_set_path(None)


def _bits(u32):
    return np.asarray(u32, np.uint32).view(np.float32)


def _x16(rng, shape, scale=1.0):
    return R._bf16(rng.standard_normal(shape) * scale)


# ---- conversion --------------------------------------------------------------------------

# float32 bits -> bfloat16 bits, each worked out by hand from the rule (top 16 bits, + 1 when
# the low 16 bits exceed 0x8000 or equal it with an odd top half; NaN quiet; subnormal -> 0)
SPECIAL = {
    0x3F800000: 0x3F80,  # 1.0 exact
    0x3F808000: 0x3F80,  # a tie, even below: stays
    0x3F818000: 0x3F82,  # a tie, odd below: up to even
    0x3F808001: 0x3F81,  # just above the tie: up
    0x3F807FFF: 0x3F80,  # just below: down
    0xBF818000: 0xBF82,  # ties of negatives alike
    0x7F7FFFFF: 0x7F80,  # FLT_MAX rounds to +inf
    0x7F800000: 0x7F80,  # +inf
    0xFF800000: 0xFF80,  # -inf
    0x7FC00000: 0x7FC0,  # quiet NaN
    0x7F800001: 0x7FC0,  # signalling NaN, payload only in the low bits: stays NaN, made quiet
    0xFF800001: 0xFFC0,
    0xFFFFFFFF: 0xFFFF,  # NaN whose rounding would carry: kept
    0x7FBFFFFF: 0x7FFF,  # signalling NaN with a high payload: quiet bit set
    0x00000001: 0x0000,  # subnormals: a zero of their sign
    0x007FFFFF: 0x0000,
    0x807FFFFF: 0x8000,
    0x00800000: 0x0080,  # the smallest normal: kept
    0x00000000: 0x0000,
    0x80000000: 0x8000,
}


def test_twin_conversion_by_hand():
    x = _bits(list(SPECIAL))
    y = np.empty(x.shape, np.uint16)
    R.bf16_convert_forward(y, x)
    np.testing.assert_array_equal(y, np.array(list(SPECIAL.values()), np.uint16))


def test_twin_conversion_is_the_nearest_bfloat16_ties_to_even():
    """For finite normal floats, the twin picks the nearer of the two bfloat16 around x
    (computed in float64), the even one on a tie; +-inf past the largest bfloat16."""
    rng = np.random.default_rng(0)
    u = rng.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32)
    u = np.concatenate([u, (u & 0xFFFF0000) | 0x8000])  # and as many exact ties
    x = _bits(u)
    ok = np.isfinite(x) & (np.abs(x) >= np.finfo(np.float32).tiny)
    x, u = x[ok], u[ok]
    y = np.empty(x.shape, np.uint16)
    R.bf16_convert_forward(y, x)
    lo = (u >> 16).astype(np.uint32)  # truncation toward zero, and the next one away from it
    keep = (lo & 0x7FFF) != 0x7F7F  # past the largest bfloat16 (-> inf): SPECIAL covers it
    x, y, lo = x[keep], y[keep], lo[keep]
    hi = lo + 1
    v = x.astype(np.float64)
    dlo = np.abs(v - (lo << 16).view(np.float32).astype(np.float64))
    dhi = np.abs((hi << 16).view(np.float32).astype(np.float64) - v)
    want = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi, np.where(lo % 2 == 0, lo, hi)))
    np.testing.assert_array_equal(y, want.astype(np.uint16))


@pytest.mark.parametrize("path", PATHS)
def test_conversion_bit_exact(path, on_path):
    rng = np.random.default_rng(1)
    special = _bits(list(SPECIAL))
    random_bits = _bits(rng.integers(0, 2 ** 32, 300_001, dtype=np.uint64).astype(np.uint32))
    ties = _bits((rng.integers(0, 2 ** 32, 1000, dtype=np.uint64).astype(np.uint32) & 0xFFFF0000) | 0x8000)
    for x in (special, random_bits, ties, rng.standard_normal((37, 13)).astype(np.float32)):
        got, want = np.empty(x.shape, np.uint16), np.empty(x.shape, np.uint16)
        C.bf16_convert_forward(got, x)
        R.bf16_convert_forward(want, x)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n,width", [(1, 1), (3, 17), (128, 784), (200, 33)])
def test_gather_converts_the_rows_it_copies(path, on_path, n, width):
    rng = np.random.default_rng(width)
    x = rng.standard_normal((257, width)).astype(np.float32)
    x[5, 0] = np.nan
    idx = rng.integers(0, 257, n).astype(np.int64)
    idx[0] = 5
    got, want = np.empty((n, width), np.uint16), np.empty((n, width), np.uint16)
    C.bf16_gather_forward(got, x, idx)
    R.bf16_gather_forward(want, x, idx)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="idx"):
        C.bf16_gather_forward(got, x, np.full(n, 257, np.int64))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n", [1, 15, 16, 17, 31, 32, 33, 4099])
def test_conversion_writes_exactly_its_elements(path, on_path, n):
    """Masked tails: nothing past y[n - 1] is written."""
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    buf = np.full(n + 40, 0xABCD, np.uint16)
    C.bf16_convert_forward(buf[:n], x)
    want = np.empty(n, np.uint16)
    R.bf16_convert_forward(want, x)
    np.testing.assert_array_equal(buf[:n], want)
    assert (buf[n:] == 0xABCD).all()


# ---- packing ---------------------------------------------------------------------------------

def test_twin_packing_follows_the_layout():
    """packed[((j // 16) ceil(k / 32) + i // 32) 512 + ((i % 32) // 2) 32 + (j % 16) 2 + i % 2]
    = B[i, j] (src_c/bf16.c), zero elsewhere; unpack inverts it."""
    k, n = 45, 19
    b = np.arange(1, k * n + 1, dtype=np.uint16).reshape(k, n)
    p = R._bf16_pack(b)
    kb = -(-k // 32)
    assert p.size == R.bf16_packed_size(k, n) == 2 * 2 * 512
    want = np.zeros(p.size, np.uint16)
    for i in range(k):
        for j in range(n):
            want[((j // 16) * kb + i // 32) * 512 + ((i % 32) // 2) * 32 + (j % 16) * 2 + i % 2] = b[i, j]
    np.testing.assert_array_equal(p, want)
    np.testing.assert_array_equal(R._bf16_unpack(p, k, n), b)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 33), (17, 10), (33, 1), (64, 32), (784, 512), (95, 47)])
def test_pack_bit_exact(path, on_path, shape):
    w = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    i, o = shape
    got = [np.full(C.bf16_packed_size(i, o), 0xFFFF, np.uint16),
           np.full(C.bf16_packed_size(o, i), 0xFFFF, np.uint16)]
    want = [np.empty_like(a) for a in got]
    C.bf16_pack_forward(got[0], got[1], w)
    R.bf16_pack_forward(want[0], want[1], w)
    for g, t in zip(got, want):
        np.testing.assert_array_equal(g, t)  # padding included (0xFFFF would be a NaN)
    one = np.zeros_like(got[1])
    C.bf16_pack_forward(None, one, w)
    np.testing.assert_array_equal(one, want[1])
    # wp alone (its own code on the SIMD paths: straight from the float32 rows), padding and
    # the values the rounding treats apart (NaN, infinities, subnormals, a tie) included
    special = np.array([np.nan, -np.inf, np.inf, -0.0, 1e-40, -1e-39,
                        np.frombuffer(np.uint32(0x3F808000).tobytes(), np.float32)[0]], np.float32)
    w.flat[::7][:special.size] = special[:w.flat[::7].size]
    only = np.full_like(got[0], 0xFFFF)
    C.bf16_pack_forward(only, None, w)
    R.bf16_pack_forward(want[0], None, w)
    np.testing.assert_array_equal(only, want[0])


# ---- forward and backward against the twins ------------------------------------------------

SHAPES = [(n, i, o) for n in (1, 3, 128) for i in (1, 17, 784) for o in (1, 10, 33, 512)]
# the AMX product keeps each row block's partial k tile of a for up to 32 row blocks (1024
# rows of a): at that limit, and past it, where each block copies its own
SHAPES += [(1024, 17, 40), (1100, 17, 40), (1100, 784, 300)]
ACTS3 = ("linear", "relu", "softmax")


def _forward(K, x16, w, b, act, keep_z=False, params=()):
    n, o = x16.shape[0], w.shape[1]
    wp = np.empty(R.bf16_packed_size(*w.shape), np.uint16)
    R.bf16_pack_forward(wp, None, w)
    y = np.full((n, o), np.nan, np.float32)
    z = np.full((n, o), np.nan, np.float32) if keep_z else None
    y16 = np.full((n, o), 0xFFFF, np.uint16)
    K.dense_forward_bf16(y, z, y16, x16, wp, b, ACT[act], params)
    return y, z, y16


def _forward_atol(x16, w, y, act):
    """The product's bound, carried through the activation: 1-Lipschitz ones keep it; softmax
    moves y_j by at most y_j (e^(2 d) - 1) when each logit moves by at most d."""
    atol = bf16_product_atol(np.abs(R._f32(x16)).astype(np.float64),
                             np.abs(R._f32(R._bf16(w))).astype(np.float64))
    if act == "softmax":
        d = atol.max(axis=1, keepdims=True)
        atol = np.abs(y) * np.expm1(2 * d)
    return atol


def _case(n, i, o, seed):
    rng = np.random.default_rng(seed)
    x16 = _x16(rng, (n, i))
    w = (rng.standard_normal((i, o)) / np.sqrt(i)).astype(np.float32)
    b = rng.standard_normal(o).astype(np.float32) if seed % 2 else None
    return rng, x16, w, b


def _close(got, want, atol):
    """|got - want| <= atol (the bound) + float32's own tolerance for the epilogue."""
    err = np.abs(got.astype(np.float64) - want)
    lim = atol + F32["atol"] + F32["rtol"] * np.abs(want)
    assert np.isfinite(got).all(), "a kernel left its output (partly) unwritten"
    assert (err <= lim).all(), f"max excess {(err - lim).max()} at {np.unravel_index(np.argmax(err - lim), err.shape)}"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dense_forward_bf16_matches_twin(path, on_path, shape):
    n, i, o = shape
    seed = SHAPES.index(shape)
    act = ACTS3[seed % 3]
    _, x16, w, b = _case(n, i, o, seed)
    y, _, y16 = _forward(C, x16, w, b, act)
    want, _, _ = _forward(R, x16, w, b, act)
    _close(y, want, _forward_atol(x16, w, want, act))
    y16_of_y = np.empty_like(y16)
    R.bf16_convert_forward(y16_of_y, y)
    np.testing.assert_array_equal(y16, y16_of_y)  # the epilogue's copy: bf16 of its own y


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("act", list(ACT))
def test_dense_forward_bf16_every_activation(path, on_path, act):
    """The epilogue is the float32 dense kernel's (layers.inc), z the pre-activation."""
    _, x16, w, b = _case(5, 37, 40, 3)
    params = PARAMS.get(act, ())
    y, z, _ = _forward(C, x16, w, b, act, keep_z=True, params=params)
    want_y, want_z, _ = _forward(R, x16, w, b, act, keep_z=True, params=params)
    pre_atol = _forward_atol(x16, w, want_z, "linear")
    _close(z, want_z, pre_atol)
    y_of_z = np.empty_like(y)  # y is act(z) exactly as the float32 kernel computes it
    C.act_forward(y_of_z, z, ACT[act], params)
    np.testing.assert_array_equal(y, y_of_z)


@pytest.mark.parametrize("path", PATHS)
def test_dense_forward_bf16_big_product(path, on_path):
    """A product big enough for the AMX path's panels (a past 2^19 elements, more than 256
    columns, k in two chunks of 512 with c accumulated between them), every edge ragged."""
    _, x16, w, b = _case(700, 777, 300, 1)
    y, _, _ = _forward(C, x16, w, b, "linear")
    want, _, _ = _forward(R, x16, w, b, "linear")
    _close(y, want, _forward_atol(x16, w, want, "linear"))


def test_twin_products_are_exact_bf16_products():
    """The twin's product, against float64 sums of the same bfloat16 values (exact products):
    within one float32 summation order's bound (half of bf16_product_atol) + its last rounding."""
    _, x16, w, b = _case(7, 300, 20, 0)
    y, _, _ = _forward(R, x16, w, None, "linear")
    a, bb = R._f32(x16).astype(np.float64), R._f32(R._bf16(w)).astype(np.float64)
    exact = a @ bb
    bound = bf16_product_atol(np.abs(a), np.abs(bb)) / 2 + 2.0 ** -24 * np.abs(exact)
    assert (np.abs(y - exact) <= bound).all()


def _backward(K, x16, w, y, dy, act, want=("dw", "db", "dx")):
    n, i = x16.shape
    o = w.shape[1]
    wtp = np.empty(R.bf16_packed_size(o, i), np.uint16)
    R.bf16_pack_forward(None, wtp, w)
    dw = np.full((i, o), np.nan, np.float32) if "dw" in want else None
    db = np.full(o, np.nan, np.float32) if "db" in want else None
    dx = np.full((n, i), np.nan, np.float32) if "dx" in want else None
    dz = np.full_like(dy, np.nan)
    scratch = np.zeros(K.bf16_backward_scratch_size(n, i, o), np.uint16)
    K.dense_backward_bf16(dw, db, dx, dz, scratch, dy, x16, wtp, y, None, ACT[act], ())
    return dw, db, dx, dz, scratch


def _backward_check(got, want, x16, w, n):
    dw, db, dx, dz, scratch = got
    wdw, wdb, wdx, wdz, wscratch = want
    np.testing.assert_allclose(dz, wdz, **F32)
    dz16 = R._f32(R._bf16(wdz)).astype(np.float64)
    if dw is not None:
        _close(dw, wdw, bf16_product_atol(np.abs(R._f32(x16).T).astype(np.float64), np.abs(dz16)))
    if dx is not None:
        _close(dx, wdx, bf16_product_atol(np.abs(dz16), np.abs(R._f32(R._bf16(w)).T).astype(np.float64)))
    if db is not None:
        np.testing.assert_allclose(db, wdb, **F32)
    if dw is not None and dx is not None:
        # bf16(dz), pack(bf16(dz)), x16.T: the same bits (computed from the same dz), each
        # where its own scratch's alignment puts it
        if np.array_equal(dz, wdz):
            i, o = w.shape
            for part, wpart in zip(R._bf16_scratch_parts(scratch, n, i, o),
                                   R._bf16_scratch_parts(wscratch, n, i, o)):
                np.testing.assert_array_equal(scratch[part], wscratch[wpart])


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_dense_backward_bf16_matches_twin(path, on_path, shape):
    n, i, o = shape
    seed = SHAPES.index(shape)
    act = ACTS3[seed % 3]
    rng, x16, w, b = _case(n, i, o, seed)
    y, _, _ = _forward(R, x16, w, b, act)
    dy = (rng.standard_normal((n, o)) / n).astype(np.float32)
    want = ("dw", "db", "dx") if seed % 4 else ("dw",) if seed % 8 else ("dx", "db")
    got = _backward(C, x16, w, y, dy, act, want)
    _backward_check(got, _backward(R, x16, w, y, dy, act, want), x16, w, n)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shift", [0, 1, 8, 31])
def test_backward_scratch_parts_start_on_64_bytes(path, on_path, shift):
    """bf16(dz), its pack and x16.T each start on a 64-byte address wherever the scratch
    starts (shift: elements past a 64-byte boundary): the C kernel writes them where the twin
    does, bit for bit, and nothing else of the scratch (0xABCD kept)."""
    n, i, o = 33, 47, 19
    rng, x16, w, b = _case(n, i, o, 7)
    y, _, _ = _forward(R, x16, w, b, "relu")
    dy = rng.standard_normal((n, o)).astype(np.float32)
    wtp = np.empty(R.bf16_packed_size(o, i), np.uint16)
    R.bf16_pack_forward(None, wtp, w)
    size = C.bf16_backward_scratch_size(n, i, o)
    assert size == R.bf16_backward_scratch_size(n, i, o)
    got = []
    for K in (C, R):
        raw = np.full(size + 64, 0xABCD, np.uint16)
        start = (-raw.ctypes.data) % 64 // 2 + shift
        scratch = raw[start:start + size]
        dw, dx = np.empty((i, o), np.float32), np.empty((n, i), np.float32)
        K.dense_backward_bf16(dw, np.empty(o, np.float32), dx, np.empty_like(dy), scratch, dy, x16,
                              wtp, y, None, ACT["relu"], ())
        got.append(scratch.copy())
        parts = R._bf16_scratch_parts(scratch, n, i, o)
        assert [(scratch.ctypes.data + 2 * q.start) % 64 for q in parts] == [0, 0, 0]
        assert parts[2].stop <= size
    np.testing.assert_array_equal(got[0], got[1])
    assert (got[0] != 0xABCD).sum() > 0.9 * (size - 96)


def test_dense_backward_bf16_dz_may_be_dy():
    rng, x16, w, b = _case(9, 40, 21, 5)
    y, _, _ = _forward(R, x16, w, b, "relu")
    dy = rng.standard_normal((9, 21)).astype(np.float32)
    want = _backward(R, x16, w, y, dy, "relu")
    wtp = np.empty(R.bf16_packed_size(21, 40), np.uint16)
    R.bf16_pack_forward(None, wtp, w)
    dw, dx, db = np.empty((40, 21), np.float32), np.empty((9, 40), np.float32), np.empty(21, np.float32)
    scratch = np.empty(C.bf16_backward_scratch_size(9, 40, 21), np.uint16)
    dz = dy.copy()
    C.dense_backward_bf16(dw, db, dx, dz, scratch, dz, x16, wtp, y, None, ACT["relu"], ())
    _backward_check((dw, db, dx, dz, scratch), want, x16, w, 9)


@pytest.mark.parametrize("shape", [(128, 784, 512), (128, 512, 10), (3, 17, 33), (1, 784, 10)],
                         ids=lambda s: "x".join(map(str, s)))
def test_paths_agree_with_each_other(shape):
    paths = C.bf16_paths()
    if len(paths) < 2:
        pytest.skip(f"this machine runs only {paths}")
    n, i, o = shape
    rng, x16, w, b = _case(n, i, o, 7)
    dy = (rng.standard_normal((n, o)) / n).astype(np.float32)
    results = {}
    try:
        for p in paths:
            C.bf16_set_path(p)
            y, _, _ = _forward(C, x16, w, b, "linear")
            results[p] = (y, _backward(C, x16, w, y * 0, dy, "linear"))
    finally:
        C.bf16_set_path(None)
    a16, w16 = np.abs(R._f32(x16)).astype(np.float64), np.abs(R._f32(R._bf16(w))).astype(np.float64)
    dz16 = np.abs(R._f32(R._bf16(dy))).astype(np.float64)
    first = results[paths[0]]
    for p in paths[1:]:
        y, (dw, db, dx, dz, scratch) = results[p]
        _close(y, first[0].astype(np.float64), bf16_product_atol(a16, w16))
        _close(dw, first[1][0].astype(np.float64), bf16_product_atol(a16.T, dz16))
        _close(dx, first[1][2].astype(np.float64), bf16_product_atol(dz16, w16.T))
        np.testing.assert_array_equal(db, first[1][1])  # the same float32 sums on every path
        for part, fpart in zip(R._bf16_scratch_parts(scratch, n, i, o),
                               R._bf16_scratch_parts(first[1][4], n, i, o)):
            np.testing.assert_array_equal(scratch[part], first[1][4][fpart])


# ---- the fused optimizer step + pack ---------------------------------------------------------

OPTIMIZERS = {
    "sgd": ("sgd", {}, ()), "sgd_momentum_wd": ("sgd", {"momentum": 0.9, "weight_decay": 0.01}, ("momentums",)),
    "sgd_nesterov": ("sgd", {"momentum": 0.9, "nesterov": True}, ("momentums",)),
    "adagrad": ("adagrad", {"epsilon": 1e-7}, ("accumulators",)),
    "rmsprop_all": ("rmsprop", {"rho": 0.9, "momentum": 0.5, "epsilon": 1e-7, "weight_decay": 0.01},
                    ("velocities", "momentums", "average_gradients")),
    "adam_amsgrad": ("adam", {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
                     ("momentums", "velocities", "velocity_hats")),
    "adamw": ("adam", {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "weight_decay": 0.004},
              ("momentums", "velocities")),
    "nadam": ("nadam", {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}, ("momentums", "velocities")),
    "rmsprop": ("rmsprop", {"rho": 0.9, "epsilon": 1e-7}, ("velocities",)),
    "adamax": ("adamax", {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}, ("momentums", "norms")),
    "adadelta": ("adadelta", {"rho": 0.95, "epsilon": 1e-7},
                 ("accumulated_grads", "accumulated_delta_vars")),
    "lion": ("lion", {"beta_1": 0.9, "beta_2": 0.99}, ("momentums",)),
}


def _optimizer(K, p, label):
    rule, hyper, slots = OPTIMIZERS[label]
    state = {s: np.zeros_like(p) for s in slots}
    return K.OptimizerStep(p, rule, hyper, state), state


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("label", list(OPTIMIZERS))
@pytest.mark.parametrize("shape", [(1, 1), (17, 33), (33, 10), (784, 512)], ids=lambda s: "x".join(map(str, s)))
def test_fused_step_and_pack(path, on_path, label, shape):
    """Three steps of the fused kernel on a kernel w inside p: p and the state bit-identical
    to the plain float32 step's, the packs bit-identical to packing the updated w (and to the
    twin's packing of it, test_pack_bit_exact), p and the state within float32's tolerance of
    the twin's."""
    i, o = shape
    rng = np.random.default_rng(11)
    k = i * o  # p = [head (o) | w (k) | tail (o)]: the head is never stepped
    p0 = rng.standard_normal(o + k + o).astype(np.float32)
    p_fused, p_plain, p_twin = p0.copy(), p0.copy(), p0.copy()
    opt_fused, s_fused = _optimizer(C, p_fused, label)
    opt_plain, s_plain = _optimizer(C, p_plain, label)
    opt_twin, s_twin = _optimizer(R, p_twin, label)
    wp = np.empty(C.bf16_packed_size(i, o), np.uint16)
    wtp = np.empty(C.bf16_packed_size(o, i), np.uint16)
    twp, twtp = np.empty_like(wp), np.empty_like(wtp)
    u = 1.0
    for t in range(1, 4):
        g = rng.standard_normal(p0.size).astype(np.float32)
        u *= 0.9 * (1 - 0.5 * 0.96 ** t)
        for opt in (opt_fused, opt_plain, opt_twin):
            opt.begin(0.01, t, u)
        C.optimizer_step_bf16pack(opt_fused, p_fused, wp, wtp, g, o, i, o)
        opt_fused.step(p_fused, g, o + k)  # the tail by the plain step
        opt_plain.step(p_plain, g, o)  # w and the tail
        R.optimizer_step_bf16pack(opt_twin, p_twin, twp, twtp, g, o, i, o)
        opt_twin.step(p_twin, g, o + k)
    np.testing.assert_array_equal(p_fused, p_plain)
    for s in s_fused:
        np.testing.assert_array_equal(s_fused[s], s_plain[s])
    pwp, pwtp = np.empty_like(wp), np.empty_like(wtp)
    C.bf16_pack_forward(pwp, pwtp, p_plain[o:o + k].reshape(i, o))
    np.testing.assert_array_equal(wp, pwp)
    np.testing.assert_array_equal(wtp, pwtp)
    np.testing.assert_allclose(p_fused, p_twin, **F32)
    for s in s_fused:
        np.testing.assert_allclose(s_fused[s], s_twin[s], **F32)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("label", list(OPTIMIZERS))
@pytest.mark.parametrize("shape", [(1, 1, 1), (33, 47, 19), (40, 130, 300), (128, 784, 512)],
                         ids=lambda s: "x".join(map(str, s)))
def test_backward_and_step_in_one_pass(path, on_path, label, shape):
    """dense_backward_step_bf16 (the first layer of the compiled bf16 step, which steps each
    32 x 32 block of dw from its cache: every rule's block form) against dense_backward_bf16
    then optimizer_step_bf16pack, two steps: every output bit-identical (dz, db, the scratch,
    p, the state, wp: so the block form of the rule is the rule, and dw is the product that
    dense_backward_bf16's test bounds against its twin); and against its twin: dz, db within
    float32's tolerance."""
    if path == "portable" and shape[1] * shape[2] > 100_000 and label not in ("rmsprop", "adamw"):
        pytest.skip("the portable product of the book's shape is slow: two rules suffice")
    n, i, o = shape
    rng, x16, w, b = _case(n, i, o, 3)
    y, _, _ = _forward(R, x16, w, b, "relu")
    k = i * o  # p = [head (o) | w (k) | tail (o)]
    p0 = rng.standard_normal(o + k + o).astype(np.float32)
    runs = []
    for kind in ("one", "two", "twin"):
        K = R if kind == "twin" else C
        p = p0.copy()
        opt, state = _optimizer(K, p, label)
        g = np.full_like(p, np.nan)  # (dw, in the two-kernel run)
        wp = np.full(C.bf16_packed_size(i, o), 0xFFFF, np.uint16)
        db, dz = np.full(o, np.nan, np.float32), np.full((n, o), np.nan, np.float32)
        scratch = np.zeros(C.bf16_backward_scratch_size(n, i, o), np.uint16)
        u = 1.0
        for t in (1, 2):
            dy = (np.random.default_rng(t).standard_normal((n, o)) / n).astype(np.float32)
            u *= 0.9 * (1 - 0.5 * 0.96 ** t)  # (nadam's product of its u_s, as its optimizer's)
            opt.begin(0.01, t, u)
            if kind == "two":
                C.dense_backward_bf16(g[o:o + k].reshape(i, o), db, None, dz, scratch, dy, x16,
                                      np.empty(C.bf16_packed_size(o, i), np.uint16), y, None,
                                      ACT["relu"], ())
                C.optimizer_step_bf16pack(opt, p, wp, None, g, o, i, o)
            else:
                K.dense_backward_step_bf16(opt, p, wp, db, dz, scratch, dy, x16, y, None, o,
                                           ACT["relu"], ())
        runs.append((p, wp, db, dz, scratch, state))
    for a, b_ in zip(runs[0][:4], runs[1][:4]):
        np.testing.assert_array_equal(a, b_)
    for part, part2 in zip(R._bf16_scratch_parts(runs[0][4], n, i, o)[1:],  # no dx: no bf16(dz)
                           R._bf16_scratch_parts(runs[1][4], n, i, o)[1:]):
        np.testing.assert_array_equal(runs[0][4][part], runs[1][4][part2])
    for s_ in runs[0][5]:
        np.testing.assert_array_equal(runs[0][5][s_], runs[1][5][s_])
    assert np.array_equal(runs[0][0][:o], p0[:o]) and np.array_equal(runs[0][0][o + k:], p0[o + k:])
    twin = runs[2]
    np.testing.assert_allclose(runs[0][3], twin[3], **F32)
    np.testing.assert_allclose(runs[0][2], twin[2], **F32)


# ---- paths, errors, bounds -------------------------------------------------------------------

def test_paths_are_reported():
    paths = C.bf16_paths()
    assert paths[-1] == "portable" and set(paths) <= set(_codes.BF16_PATHS)
    assert C.bf16_path() == paths[0]  # the best, unless the environment forces one
    if os.environ.get("FASTNN_BF16_PATH"):
        pytest.skip("FASTNN_BF16_PATH is set")


def _run_with_env(value, code):
    env = dict(os.environ, FASTNN_BF16_PATH=value)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)


def test_environment_forces_a_path():
    out = _run_with_env("portable", "from fastnn import _kernels as C; print(C.bf16_path())")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "portable"


def test_environment_naming_an_unavailable_path_is_a_clear_error():
    code = ("import numpy as np\nfrom fastnn import _kernels as C\n"
            "try:\n    C.bf16_convert_forward(np.empty(3, np.uint16), np.ones(3, np.float32))\n"
            "except ValueError as e:\n    print(e)\n")
    out = _run_with_env("tpu", code)
    assert out.returncode == 0, out.stderr
    assert "Expected FASTNN_BF16_PATH to name a bf16 path this machine runs" in out.stdout
    assert "Received: FASTNN_BF16_PATH='tpu'" in out.stdout


def test_set_path_refuses_unknown_names():
    with pytest.raises(ValueError, match="Expected path to be one of"):
        C.bf16_set_path("gpu")
    missing = [p for p in _codes.BF16_PATHS if p not in C.bf16_paths()]
    for p in missing:
        with pytest.raises(ValueError, match="Expected a bf16 path this machine runs"):
            C.bf16_set_path(p)


def test_bad_operands_are_refused():
    x16 = np.zeros((3, 17), np.uint16)
    w = np.zeros((17, 5), np.float32)
    wp = np.zeros(C.bf16_packed_size(17, 5), np.uint16)
    y = np.zeros((3, 5), np.float32)
    with pytest.raises(TypeError, match="Expected x16 with dtype uint16"):
        C.dense_forward_bf16(y, None, None, x16.astype(np.float32), wp, None, 0, ())
    with pytest.raises(ValueError, match=r"Expected wp with shape \(512,\)"):
        C.dense_forward_bf16(y, None, None, x16, wp[:-1], None, 0, ())
    with pytest.raises(ValueError, match="Expected y16 with shape"):
        C.dense_forward_bf16(y, None, np.zeros((3, 4), np.uint16), x16, wp, None, 0, ())
    with pytest.raises(ValueError, match="Expected y16 not to share memory with x16"):
        C.dense_forward_bf16(y, None, x16.reshape(-1)[:15].reshape(3, 5), x16, wp, None, 0, ())
    with pytest.raises(ValueError, match="Expected y with shape"):
        C.bf16_convert_forward(np.zeros(4, np.uint16), np.zeros((2, 2), np.float32))
    with pytest.raises(TypeError, match="Expected w with dtype float32"):
        C.bf16_pack_forward(wp, None, w.astype(np.float64))
    with pytest.raises(ValueError, match="Expected scratch with shape"):
        C.dense_backward_bf16(None, None, None, y.copy(), np.zeros(3, np.uint16), y, x16,
                              np.zeros(C.bf16_packed_size(5, 17), np.uint16), y, None, 0, ())
    p = np.zeros(5 + 17 * 5, np.float32)
    opt = C.OptimizerStep(p, "sgd", {}, {})
    with pytest.raises(ValueError, match="Expected start in"):
        C.optimizer_step_bf16pack(opt, p, wp, None, p.copy(), 6, 17, 5)


GUARD = r"""
import ctypes, mmap, sys
import numpy as np
from fastnn import _kernels as C, _reference as R
libc = ctypes.CDLL(None)
PAGE = mmap.PAGESIZE

def at_page_end(nbytes):
    '''A buffer of nbytes ending where a PROT_NONE page begins: a read or write past it faults.'''
    pages = -(-nbytes // PAGE) + 1
    m = mmap.mmap(-1, pages * PAGE)
    keep.append(m)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    assert libc.mprotect(ctypes.c_void_p(base + (pages - 1) * PAGE), PAGE, 0) == 0
    return np.frombuffer(m, np.uint8, nbytes, (pages - 1) * PAGE - nbytes)

keep = []
n, i, o = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
w = rng.standard_normal((i, o)).astype(np.float32)
for path in C.bf16_paths():
    C.bf16_set_path(path)
    x16 = at_page_end(2 * n * i).view(np.uint16).reshape(n, i)
    x16[...] = R._bf16(rng.standard_normal((n, i)))
    wp = at_page_end(2 * C.bf16_packed_size(i, o)).view(np.uint16)
    wtp = at_page_end(2 * C.bf16_packed_size(o, i)).view(np.uint16)
    C.bf16_pack_forward(wp, wtp, w)
    y = at_page_end(4 * n * o).view(np.float32).reshape(n, o)
    y16 = at_page_end(2 * n * o).view(np.uint16).reshape(n, o)
    C.dense_forward_bf16(y, None, y16, x16, wp, None, 0, ())
    dw = at_page_end(4 * i * o).view(np.float32).reshape(i, o)
    dx = at_page_end(4 * n * i).view(np.float32).reshape(n, i)
    db = at_page_end(4 * o).view(np.float32)
    dz = at_page_end(4 * n * o).view(np.float32).reshape(n, o)
    scratch = at_page_end(2 * C.bf16_backward_scratch_size(n, i, o)).view(np.uint16)
    dy = at_page_end(4 * n * o).view(np.float32).reshape(n, o)
    dy[...] = y
    C.dense_backward_bf16(dw, db, dx, dz, scratch, dy, x16, wtp, y, None, 0, ())
    c = at_page_end(2 * n * o).view(np.uint16)
    C.bf16_convert_forward(c, dy.reshape(-1))
print("ok")
"""


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 17, 33), (17, 33, 10), (33, 63, 47), (64, 64, 32)],
                         ids=lambda s: "x".join(map(str, s)))
def test_no_access_past_any_operand(shape):
    """Every operand ends at a page the process may not touch: a tile load or store (or any
    access) past an operand's end would fault.  In a child process, on every path."""
    out = subprocess.run([sys.executable, "-c", GUARD, *map(str, shape)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", (out.returncode, out.stderr[-2000:])
