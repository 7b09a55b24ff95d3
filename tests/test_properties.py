"""Property-based checks (hypothesis): drawn shapes and values, including magnitudes that
overflow a naive softmax or sigmoid.  The default run draws a few dozen examples per
property; `pytest -m slow` runs the long fuzzing pass."""
import functools

import numpy as np

from fastnn._codes import LOSSES
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastnn import _kernels as C
from fastnn import _reference as R
from act_params import PARAMS
from tolerances import TOL

dtypes = st.sampled_from([np.float32, np.float64])
acts = st.sampled_from(list(R.ACT_CODES))


@st.composite
def matrices(draw, max_side=40, magnitude=1e4):
    dtype = draw(dtypes)
    shape = draw(st.tuples(st.integers(1, max_side), st.integers(1, max_side)))
    elems = st.floats(-magnitude, magnitude, allow_nan=False, width=32)
    return draw(hnp.arrays(dtype, shape, elements=elems))


def flushed(a):
    """a with subnormal numbers replaced by zero: the kernels run with FTZ/DAZ (documented
    in src_c/fastnn.h), so this is what they compute with.  Elsewhere they equal NumPy."""
    return np.where(np.abs(a) < np.finfo(a.dtype).tiny, a.dtype.type(0), a)


def check_activation(x, act):
    code, params = R.ACT_CODES[act], PARAMS.get(act, ())
    got, want = np.empty_like(x), np.empty_like(x)
    C.act_forward(got, x, code, params)
    with np.errstate(over="ignore"):
        R.act_forward(want, flushed(x), code, params)
    # exponential overflows where exp does (past 88.7 in float32), as NumPy's; no other may
    finite = np.isfinite(want) if act == "exponential" else np.ones(x.shape, bool)
    assert np.array_equal(np.isfinite(got), finite), f"{act} overflowed"
    np.testing.assert_allclose(got, want, **TOL[x.dtype.type])
    dy = np.ones_like(x)
    dgot, dwant = np.empty_like(x), np.empty_like(x)
    C.act_backward(dgot, dy, want, x, code, params)
    R.act_backward(dwant, dy, flushed(want), flushed(x), code, params)
    assert np.array_equal(np.isfinite(dgot), finite)
    np.testing.assert_allclose(dgot, dwant, **TOL[x.dtype.type])


@settings(max_examples=60, deadline=None)
@given(matrices(), acts)
def test_activations_stay_finite_and_match(x, act):
    check_activation(x, act)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 70), st.integers(1, 40), acts, dtypes, st.booleans(),
       st.integers(0, 2**32 - 1))
def test_dense_round_trip_matches(n, i, o, act, dtype, bias, seed):
    rng = np.random.default_rng(seed)
    code, params = R.ACT_CODES[act], PARAMS.get(act, ())
    x = rng.standard_normal((n, i)).astype(dtype)
    w = (rng.standard_normal((i, o)) / np.sqrt(i)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype) if bias else None
    outs = []
    for K in (C, R):
        y, z = np.empty((n, o), dtype), np.empty((n, o), dtype)
        K.dense_forward(y, z, x, w, b, code, params)
        dw, dx, dz = np.empty((i, o), dtype), np.empty((n, i), dtype), np.empty((n, o), dtype)
        db = np.empty(o, dtype) if bias else None
        K.dense_backward(dw, db, dx, dz, np.ones((n, o), dtype), x, w, y, z, code, params)
        outs.append([a for a in (y, z, dw, db, dx) if a is not None])
    for got, want in zip(*outs):
        np.testing.assert_allclose(got, want, **TOL[dtype])


@settings(max_examples=40, deadline=None)
@given(matrices(max_side=20), st.integers(0, 2**32 - 1))
def test_softmax_crossentropy_on_extreme_logits(z, seed):
    labels = np.random.default_rng(seed).integers(0, z.shape[1], z.shape[0])
    p = np.empty_like(z)
    C.act_forward(p, z, C.ACT_CODES["softmax"], ())
    got, want = np.empty_like(z), np.empty_like(z)
    code = LOSSES["sparse_softmax_crossentropy"]
    lg = C.loss_backward(got, p, labels, code)
    lw = R.loss_backward(want, p, labels, code)
    assert np.isfinite(lg) and lg <= -np.log(1e-7) + 1e-3  # clipped, never infinite
    assert lg == pytest.approx(lw, rel=1e-5)
    np.testing.assert_allclose(got, want, **TOL[z.dtype.type])


@pytest.mark.slow
@settings(max_examples=3000, deadline=None, derandomize=False)
@given(matrices(max_side=200), acts)
def test_activations_long_fuzz(x, act):
    check_activation(x, act)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, derandomize=False)
@given(matrices(max_side=60, magnitude=1e4), acts, st.integers(1, 3), st.booleans())
def test_public_api_long_fuzz_over_strides_and_dtypes(x, act, step, fortran):
    """Strided, Fortran-ordered, float32/float64 inputs through the public activation
    functions give exactly what a contiguous copy gives, and stay finite."""
    from fastnn import activations
    big = np.zeros((x.shape[0], x.shape[1] * step), x.dtype)
    big[:, ::step] = x
    view = big[:, ::step]
    if fortran:
        view = np.asfortranarray(view)
    # the public function of each kernel code (relu_general, threshold: with arguments)
    f = {"relu_general": functools.partial(activations.relu, negative_slope=0.1, max_value=2.5,
                                           threshold=0.3),
         "gelu_tanh": functools.partial(activations.gelu, approximate=True),
         "threshold": functools.partial(activations.threshold, threshold=0.3,
                                        default_value=-1.5)}.get(
        act, getattr(activations, act, None))
    got = f(view)
    want = f(np.ascontiguousarray(x))  # both through the kernels
    assert act == "exponential" or np.all(np.isfinite(got))  # exp overflows as NumPy's
    np.testing.assert_array_equal(got, want)
