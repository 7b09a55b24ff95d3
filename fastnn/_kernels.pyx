# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled backend: thin checked wrappers around the C kernels in src_c/.

Every function and class here has a twin of the same name and arguments in
`fastnn/_reference.py`.  The decision: the public layers convert inputs
(`np.ascontiguousarray(x, dtype)`); this module refuses what a kernel cannot take,
with a TypeError/ValueError naming the operand, and never copies.  Sizes come from the
shapes; the real type (float32 or float64) from the first array operand: each wrapper is
written once over the fused type `real` (see _kernels.pxd) and called for that type.
"""
cimport numpy as cnp
from libc.stdint cimport int64_t, uint16_t, uintptr_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

import os
import weakref

import numpy as np

from fastnn import _codes

cnp.import_array()
fnn_init()

ACT_CODES = _codes.ACTIVATIONS
NAME = "compiled"
cdef int64_t _BLAS_MAX = 2147483647  # scipy-openblas32 takes 32-bit sizes


# enum fnn_act, by the names of fastnn/_codes.py
_ACT_ENUM = {"linear": FNN_LINEAR, "relu": FNN_RELU, "sigmoid": FNN_SIGMOID, "tanh": FNN_TANH,
             "softmax": FNN_SOFTMAX, "leaky_relu": FNN_LEAKY_RELU, "elu": FNN_ELU,
             "gelu": FNN_GELU, "relu_general": FNN_RELU_GENERAL, "gelu_tanh": FNN_GELU_TANH,
             "silu": FNN_SILU, "softplus": FNN_SOFTPLUS, "softsign": FNN_SOFTSIGN,
             "selu": FNN_SELU, "hard_sigmoid": FNN_HARD_SIGMOID, "hard_silu": FNN_HARD_SILU,
             "exponential": FNN_EXPONENTIAL, "relu6": FNN_RELU6, "mish": FNN_MISH,
             "log_softmax": FNN_LOG_SOFTMAX, "hard_tanh": FNN_HARD_TANH,
             "hard_shrink": FNN_HARD_SHRINK, "soft_shrink": FNN_SOFT_SHRINK,
             "tanh_shrink": FNN_TANH_SHRINK, "threshold": FNN_THRESHOLD,
             "log_sigmoid": FNN_LOG_SIGMOID, "celu": FNN_CELU, "squareplus": FNN_SQUAREPLUS,
             "sparse_plus": FNN_SPARSE_PLUS, "sparse_sigmoid": FNN_SPARSE_SIGMOID,
             "sparsemax": FNN_SPARSEMAX}


def codes():
    """The codes and constants this build was compiled with (tests/test_codes.py compares
    them with fastnn/_codes.py)."""
    return {
        "activations": _ACT_ENUM,
        "n_activations": FNN_N_ACT,
        "act_needs_x": tuple(k for k, v in _ACT_ENUM.items() if FNN_ACT_NEEDS_X(v)),
        "act_params": FNN_ACT_PARAMS,
        "losses": {"categorical_crossentropy": FNN_LOSS_CCE,
                   "sparse_categorical_crossentropy": FNN_LOSS_SCCE,
                   "softmax_crossentropy": FNN_LOSS_SOFTMAX_CCE,
                   "sparse_softmax_crossentropy": FNN_LOSS_SOFTMAX_SCCE,
                   "binary_crossentropy": FNN_LOSS_BCE, "mean_squared_error": FNN_LOSS_MSE,
                   "mean_absolute_error": FNN_LOSS_MAE, "huber": FNN_LOSS_HUBER,
                   "log_cosh": FNN_LOSS_LOG_COSH, "kl_divergence": FNN_LOSS_KLD,
                   "poisson": FNN_LOSS_POISSON, "hinge": FNN_LOSS_HINGE,
                   "categorical_hinge": FNN_LOSS_CATEGORICAL_HINGE,
                   "cosine_similarity": FNN_LOSS_COSINE,
                   "sigmoid_binary_crossentropy": FNN_LOSS_SIGMOID_BCE,
                   "mean_absolute_percentage_error": FNN_LOSS_MAPE,
                   "mean_squared_logarithmic_error": FNN_LOSS_MSLE,
                   "squared_hinge": FNN_LOSS_SQUARED_HINGE},
        "n_losses": FNN_N_LOSS,
        "optimizer_rules": {"sgd": FNN_OPT_SGD, "adagrad": FNN_OPT_ADAGRAD,
                            "rmsprop": FNN_OPT_RMSPROP, "adam": FNN_OPT_ADAM,
                            "nadam": FNN_OPT_NADAM, "adamax": FNN_OPT_ADAMAX,
                            "adadelta": FNN_OPT_ADADELTA, "lion": FNN_OPT_LION},
        "n_optimizer_rules": FNN_N_OPT,
        "epsilon": FNN_EPSILON,
        "bf16_paths": {"portable": FNN_BF16_PORTABLE, "avx512bf16": FNN_BF16_AVX512BF16,
                       "amx": FNN_BF16_AMX},
        "n_bf16_paths": FNN_BF16_N_PATH,
        "gemm_paths": {"base": FNN_GEMM_BASE, "avx2": FNN_GEMM_AVX2, "avx512": FNN_GEMM_AVX512},
        "n_gemm_paths": FNN_GEMM_N_PATH,
    }


cdef inline int _typenum(real *kind) noexcept:
    return cnp.NPY_FLOAT32 if real is float else cnp.NPY_FLOAT64


cdef bint _is_f32(object a, str name) except -1:
    return _dtype_of(a, name) == cnp.NPY_FLOAT32


# ---- operand checks ----------------------------------------------------------------------

cdef int _dtype_of(object a, str name) except -1:
    if not cnp.PyArray_Check(a):
        raise TypeError(f"Expected {name} to be a numpy.ndarray. Received: {type(a).__name__}")
    cdef int t = cnp.PyArray_TYPE(<cnp.ndarray>a)
    if t != cnp.NPY_FLOAT32 and t != cnp.NPY_FLOAT64:
        raise TypeError(f"Expected {name} with dtype float32 or float64. "
                        f"Received: {name}.dtype={a.dtype}")
    return t


cdef void *_ptr(object a, str name, int typenum, int ndim, int64_t d0, int64_t d1,
                bint out, str dtype_from) except NULL:
    """Check one operand and return its data pointer.

    ndim 1 or 2 checks the shape (d0,) or (d0, d1); ndim 0 checks only the size d0."""
    if not cnp.PyArray_Check(a):
        raise TypeError(f"Expected {name} to be a numpy.ndarray. Received: {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) != typenum or not a.dtype.isnative:
        want = np.dtype(np.int64 if typenum == cnp.NPY_INT64 else
                        np.float32 if typenum == cnp.NPY_FLOAT32 else
                        np.uint16 if typenum == cnp.NPY_UINT16 else np.float64)
        raise TypeError(f"Expected {name} with dtype {want} in native byte order"
                        f"{' (the dtype of ' + dtype_from + ')' if dtype_from else ''}. "
                        f"Received: {name}.dtype={a.dtype.str}")
    if ndim == 0:
        if cnp.PyArray_SIZE(arr) != d0:
            raise ValueError(f"Expected {name} with {d0} elements. "
                             f"Received: {name}.shape={a.shape}")
    elif cnp.PyArray_NDIM(arr) != ndim or arr.shape[0] != d0 or (ndim == 2 and arr.shape[1] != d1):
        want = f"({d0},)" if ndim == 1 else f"({d0}, {d1})"
        raise ValueError(f"Expected {name} with shape {want}. Received: {name}.shape={a.shape}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"Expected {name} to be C-contiguous. Received an array with "
                         f"strides {a.strides}; pass np.ascontiguousarray({name}).")
    if out and not cnp.PyArray_ISWRITEABLE(arr):
        raise ValueError(f"Expected {name} to be writeable: the kernel writes it. "
                         f"Received a read-only array.")
    return cnp.PyArray_DATA(arr)


cdef int _disjoint(str out_name, object out, str in_name, object other) except -1:
    """Refuse an output that overlaps another operand (the kernels assume no aliasing)."""
    if other is None or out is None:
        return 0
    cdef cnp.ndarray a = <cnp.ndarray>out, b = <cnp.ndarray>other
    cdef uintptr_t a0 = <uintptr_t>cnp.PyArray_DATA(a), b0 = <uintptr_t>cnp.PyArray_DATA(b)
    if a0 < b0 + <uintptr_t>cnp.PyArray_NBYTES(b) and b0 < a0 + <uintptr_t>cnp.PyArray_NBYTES(a):
        raise ValueError(f"Expected {out_name} not to share memory with {in_name}. "
                         f"Received overlapping arrays; pass a separate output buffer.")
    return 0


cdef int _outputs_disjoint(tuple outs, tuple ins, object dx=None, object dy=None) except -1:
    """Refuse an output (outs: (name, array or None) pairs) that overlaps an input (ins) or
    another output; dx may be exactly dy (the same data, an in-place backward), but no other
    output may overlap dy."""
    cdef Py_ssize_t k
    in_place = (dx is not None and dy is not None and
                cnp.PyArray_DATA(<cnp.ndarray>dx) == cnp.PyArray_DATA(<cnp.ndarray>dy))
    for k, (oname, out) in enumerate(outs):
        for iname, inp in ins:
            _disjoint(oname, out, iname, inp)
        for oname2, out2 in outs[k + 1:]:
            _disjoint(oname, out, oname2, out2)
        if dy is not None and not (in_place and out is dx):
            _disjoint(oname, out, "dy", dy)
    return 0


cdef fnn_activation _activation(int act, object params) except *:
    """The struct fnn_activation of code act and its parameters (a sequence of at most
    FNN_ACT_PARAMS floats, the missing ones 0), checked as the kernels need them."""
    cdef fnn_activation a
    cdef int k
    if act < 0 or act >= FNN_N_ACT:
        raise ValueError(f"Expected act to be an activation code in {sorted(_codes.ACTIVATIONS.values())}. "
                         f"Received: act={act}")
    params = tuple(params)
    if len(params) > FNN_ACT_PARAMS:
        raise ValueError(f"Expected at most {FNN_ACT_PARAMS} activation parameters. "
                         f"Received: params={params}")
    a.code = act
    for k in range(FNN_ACT_PARAMS):
        a.param[k] = float(params[k]) if k < len(params) else 0.0
        if a.param[k] != a.param[k]:
            raise ValueError(f"Expected activation parameters that are not NaN. Received: params={params}")
    if (act == FNN_LEAKY_RELU and a.param[0] < 0) or (act == FNN_ELU and a.param[0] <= 0):
        raise ValueError(f"Expected alpha >= 0 for leaky_relu and > 0 for elu (the backward "
                         f"pass reads the sign of the output). Received: alpha={a.param[0]}")
    if act == FNN_RELU_GENERAL and (a.param[0] < 0 or a.param[1] < 0 or a.param[2] in (float("inf"), float("-inf"))):
        raise ValueError(f"Expected relu parameters negative_slope >= 0, max_value >= 0 (inf: "
                         f"None) and a finite threshold. Received: params={params}")
    return a


cdef int _check_sizes(int64_t n, int64_t a, int64_t b) except -1:
    if n < 1 or a < 1 or b < 1:
        raise ValueError(f"Expected non-empty operands. Received sizes {(n, a, b)}")
    if n > _BLAS_MAX or a > _BLAS_MAX or b > _BLAS_MAX:
        raise ValueError(f"Expected every dimension below 2**31 (32-bit BLAS). "
                         f"Received sizes {(n, a, b)}")
    return 0


cdef int _check_labels(const int64_t *lab, int64_t n, int64_t k) except -1:
    cdef int64_t i
    for i in range(n):
        if lab[i] < 0 or lab[i] >= k:
            raise ValueError(f"Expected labels in [0, {k}). Received: labels[{i}]={lab[i]}")
    return 0


# ---- dense and activation --------------------------------------------------------------

def dense_forward(y, z, x, w, b, int act, params):
    """y := act(x @ w + b); z (or None) receives x @ w + b.  x (n, in), w (in, out);
    params: act's parameters (struct fnn_activation)."""
    if _is_f32(x, "x"):
        _dense_forward(<float *>NULL, y, z, x, w, b, act, params)
    else:
        _dense_forward(<double *>NULL, y, z, x, w, b, act, params)


cdef int _dense_forward(real *kind, y, z, x, w, b, int act, params) except -1:
    cdef int t = _typenum(kind)
    if cnp.PyArray_NDIM(<cnp.ndarray>x) != 2 or not cnp.PyArray_Check(w) or cnp.PyArray_NDIM(<cnp.ndarray>w) != 2:
        raise ValueError(f"Expected 2-D x and w. Received: x.shape={np.shape(x)}, "
                         f"w.shape={np.shape(w)}")
    cdef int64_t n = x.shape[0], i = x.shape[1], o = w.shape[1]
    _check_sizes(n, i, o)
    cdef fnn_activation a = _activation(act, params)
    cdef real *px = <real *>_ptr(x, "x", t, 2, n, i, False, None)
    cdef real *pw = <real *>_ptr(w, "w", t, 2, i, o, False, "x")
    cdef real *pb = NULL
    cdef real *pz = NULL
    if b is not None:
        pb = <real *>_ptr(b, "b", t, 1, o, 0, False, "x")
    cdef real *py = <real *>_ptr(y, "y", t, 2, n, o, True, "x")
    if z is not None:
        pz = <real *>_ptr(z, "z", t, 2, n, o, True, "x")
    for oname, out in (("y", y), ("z", z)):
        _disjoint(oname, out, "x", x); _disjoint(oname, out, "w", w); _disjoint(oname, out, "b", b)
    _disjoint("y", y, "z", z)
    with nogil:
        dense_forward_k(py, pz, px, pw, pb, n, i, o, a)
    return 0


def dense_backward(dw, db, dx, dz, dy, x, w, y, z, int act, params):
    """dz := dy * act'(.), dw := x.T @ dz, db := sum(dz), dx := dz @ w.T (dw, db, dx may be None).

    dz is scratch of dy's shape and may be dy itself; z (pre-activation) is needed for the
    codes of _codes.ACT_NEEDS_X (gelu, ...)."""
    if _is_f32(x, "x"):
        _dense_backward(<float *>NULL, dw, db, dx, dz, dy, x, w, y, z, act, params)
    else:
        _dense_backward(<double *>NULL, dw, db, dx, dz, dy, x, w, y, z, act, params)


cdef int _dense_backward(real *kind, dw, db, dx, dz, dy, x, w, y, z, int act,
                         params) except -1:
    cdef int t = _typenum(kind)
    if cnp.PyArray_NDIM(<cnp.ndarray>x) != 2 or not cnp.PyArray_Check(w) or cnp.PyArray_NDIM(<cnp.ndarray>w) != 2:
        raise ValueError(f"Expected 2-D x and w. Received: x.shape={np.shape(x)}, "
                         f"w.shape={np.shape(w)}")
    cdef int64_t n = x.shape[0], i = x.shape[1], o = w.shape[1]
    _check_sizes(n, i, o)
    cdef fnn_activation a = _activation(act, params)
    if FNN_ACT_NEEDS_X(act) and z is None:
        raise ValueError(f"Expected z (the pre-activation) for act={act}. Received: z=None")
    cdef real *px = <real *>_ptr(x, "x", t, 2, n, i, False, None)
    cdef real *pw = <real *>_ptr(w, "w", t, 2, i, o, False, "x")
    cdef real *pdy = <real *>_ptr(dy, "dy", t, 2, n, o, False, "x")
    cdef real *py = <real *>_ptr(y, "y", t, 2, n, o, False, "x")
    cdef real *pz = NULL
    if z is not None:
        pz = <real *>_ptr(z, "z", t, 2, n, o, False, "x")
    cdef real *pdz = <real *>_ptr(dz, "dz", t, 2, n, o, True, "x")
    cdef real *pdw = NULL
    cdef real *pdb = NULL
    cdef real *pdx = NULL
    if dw is not None:
        pdw = <real *>_ptr(dw, "dw", t, 2, i, o, True, "x")
    if db is not None:
        pdb = <real *>_ptr(db, "db", t, 1, o, 0, True, "x")
    if dx is not None:
        pdx = <real *>_ptr(dx, "dx", t, 2, n, i, True, "x")
    ins = (("x", x), ("w", w), ("y", y), ("z", z))
    outs = (("dw", dw), ("db", db), ("dx", dx), ("dz", dz))
    for k, (oname, out) in enumerate(outs):
        for iname, inp in ins:
            _disjoint(oname, out, iname, inp)
        for oname2, out2 in outs[k + 1:]:
            _disjoint(oname, out, oname2, out2)
        if pdz != pdy or oname != "dz":  # dz may be exactly dy, nothing else may touch dy
            _disjoint(oname, out, "dy", dy)
    with nogil:
        dense_backward_k(pdw, pdb, pdx, pdz, pdy, px, pw, py, pz, n, i, o, a)
    return 0


def act_forward(y, x, int act, params):
    """y := act(x), row-wise over the last axis for (log_)softmax.  x, y (n, m); y may be x."""
    if _is_f32(x, "x"):
        _act_forward(<float *>NULL, y, x, act, params)
    else:
        _act_forward(<double *>NULL, y, x, act, params)


cdef int _act_forward(real *kind, y, x, int act, params) except -1:
    cdef int t = _typenum(kind)
    if cnp.PyArray_NDIM(<cnp.ndarray>x) != 2:
        raise ValueError(f"Expected 2-D x. Received: x.shape={np.shape(x)}")
    cdef int64_t n = x.shape[0], m = x.shape[1]
    _check_sizes(n, m, 1)
    cdef fnn_activation a = _activation(act, params)
    cdef real *px = <real *>_ptr(x, "x", t, 2, n, m, False, None)
    cdef real *py = <real *>_ptr(y, "y", t, 2, n, m, True, "x")
    if py != px:
        _disjoint("y", y, "x", x)
    with nogil:
        act_forward_k(py, px, n, m, a)
    return 0


def act_backward(dx, dy, y, x, int act, params):
    """dx := dy * act'(x) from y = act(x) (x is read only for the codes of _codes.ACT_NEEDS_X
    and may be None otherwise)."""
    if _is_f32(dy, "dy"):
        _act_backward(<float *>NULL, dx, dy, y, x, act, params)
    else:
        _act_backward(<double *>NULL, dx, dy, y, x, act, params)


cdef int _act_backward(real *kind, dx, dy, y, x, int act, params) except -1:
    cdef int t = _typenum(kind)
    if cnp.PyArray_NDIM(<cnp.ndarray>dy) != 2:
        raise ValueError(f"Expected 2-D dy. Received: dy.shape={np.shape(dy)}")
    cdef int64_t n = dy.shape[0], m = dy.shape[1]
    _check_sizes(n, m, 1)
    cdef fnn_activation a = _activation(act, params)
    if FNN_ACT_NEEDS_X(act) and x is None:
        raise ValueError(f"Expected x (the pre-activation) for act={act}. Received: x=None")
    cdef real *pdy = <real *>_ptr(dy, "dy", t, 2, n, m, False, None)
    cdef real *py = <real *>_ptr(y, "y", t, 2, n, m, False, "dy")
    cdef real *px = NULL
    if x is not None:
        px = <real *>_ptr(x, "x", t, 2, n, m, False, "dy")
    cdef real *pdx = <real *>_ptr(dx, "dx", t, 2, n, m, True, "dy")
    if pdx != pdy:
        _disjoint("dx", dx, "dy", dy)
    _disjoint("dx", dx, "y", y)
    _disjoint("dx", dx, "x", x)
    with nogil:
        act_backward_k(pdx, pdy, py, px, n, m, a)
    return 0


# ---- normalization and PReLU (src_c/norm.inc) ------------------------------------------------

cdef int _rows_2d(x, str name) except -1:
    if not cnp.PyArray_Check(x) or cnp.PyArray_NDIM(<cnp.ndarray>x) != 2:
        raise ValueError(f"Expected 2-D {name} (rows, features). Received: {name}.shape={np.shape(x)}")
    _check_sizes(x.shape[0], x.shape[1], 1)
    return 0


cdef real *_opt(real *kind, a, str name, int t, int64_t d0, bint out) except? NULL:
    """The data pointer of a 1-D operand (d0,), or NULL for None."""
    if a is None:
        return NULL
    return <real *>_ptr(a, name, t, 1, d0, 0, out, "x")


def batchnorm_forward(y, mean, var, x, gamma, beta, double epsilon, bint training):
    """y := (x - mean) * gamma / sqrt(var + epsilon) + beta over the rows of x (n, m); training:
    mean, var (m) := the batch's (biased variance), else they are read.  gamma, beta or None."""
    if _is_f32(x, "x"):
        _batchnorm_forward(<float *>NULL, y, mean, var, x, gamma, beta, epsilon, training)
    else:
        _batchnorm_forward(<double *>NULL, y, mean, var, x, gamma, beta, epsilon, training)


cdef int _batchnorm_forward(real *kind, y, mean, var, x, gamma, beta, double epsilon,
                            bint training) except -1:
    cdef int t = _typenum(kind)
    _rows_2d(x, "x")
    if not epsilon > 0:
        raise ValueError(f"Expected epsilon > 0. Received: epsilon={epsilon}")
    cdef int64_t n = x.shape[0], m = x.shape[1]
    cdef real *px = <real *>_ptr(x, "x", t, 2, n, m, False, None)
    cdef real *py = <real *>_ptr(y, "y", t, 2, n, m, True, "x")
    cdef real *pm = <real *>_ptr(mean, "mean", t, 1, m, 0, training, "x")
    cdef real *pv = <real *>_ptr(var, "var", t, 1, m, 0, training, "x")
    cdef real *pg = _opt(kind, gamma, "gamma", t, m, False)
    cdef real *pb = _opt(kind, beta, "beta", t, m, False)
    _outputs_disjoint((("y", y), ("mean", mean), ("var", var)) if training else (("y", y),),
                      (("x", x), ("gamma", gamma), ("beta", beta))
                      + (() if training else (("mean", mean), ("var", var))))
    with nogil:
        batchnorm_forward_k(py, pm, pv, px, pg, pb, n, m, epsilon, training)
    return 0


def batchnorm_backward(dx, dgamma, dbeta, dy, x, mean, var, gamma, double epsilon):
    """The gradient of batchnorm_forward(training=True) with its batch statistics mean, var:
    dx (may be dy), dgamma, dbeta (m, required); gamma or None."""
    if _is_f32(x, "x"):
        _batchnorm_backward(<float *>NULL, dx, dgamma, dbeta, dy, x, mean, var, gamma, epsilon)
    else:
        _batchnorm_backward(<double *>NULL, dx, dgamma, dbeta, dy, x, mean, var, gamma, epsilon)


cdef int _batchnorm_backward(real *kind, dx, dgamma, dbeta, dy, x, mean, var, gamma,
                             double epsilon) except -1:
    cdef int t = _typenum(kind)
    _rows_2d(x, "x")
    if not epsilon > 0:
        raise ValueError(f"Expected epsilon > 0. Received: epsilon={epsilon}")
    cdef int64_t n = x.shape[0], m = x.shape[1]
    cdef real *px = <real *>_ptr(x, "x", t, 2, n, m, False, None)
    cdef real *pdy = <real *>_ptr(dy, "dy", t, 2, n, m, False, "x")
    cdef real *pdx = <real *>_ptr(dx, "dx", t, 2, n, m, True, "x")
    cdef real *pm = <real *>_ptr(mean, "mean", t, 1, m, 0, False, "x")
    cdef real *pv = <real *>_ptr(var, "var", t, 1, m, 0, False, "x")
    cdef real *pdg = <real *>_ptr(dgamma, "dgamma", t, 1, m, 0, True, "x")
    cdef real *pdb = <real *>_ptr(dbeta, "dbeta", t, 1, m, 0, True, "x")
    cdef real *pg = _opt(kind, gamma, "gamma", t, m, False)
    _outputs_disjoint((("dx", dx), ("dgamma", dgamma), ("dbeta", dbeta)),
                      (("x", x), ("mean", mean), ("var", var), ("gamma", gamma)), dx, dy)
    with nogil:
        batchnorm_backward_k(pdx, pdg, pdb, pdy, px, pm, pv, pg, n, m, epsilon)
    return 0


def layernorm_forward(y, mean, rstd, x, gamma, beta, double epsilon):
    """y := (x - mean) * rstd * gamma + beta per row of x (n, m); mean, rstd (n) written."""
    if _is_f32(x, "x"):
        _layernorm_forward(<float *>NULL, y, mean, rstd, x, gamma, beta, epsilon)
    else:
        _layernorm_forward(<double *>NULL, y, mean, rstd, x, gamma, beta, epsilon)


cdef int _layernorm_forward(real *kind, y, mean, rstd, x, gamma, beta, double epsilon) except -1:
    cdef int t = _typenum(kind)
    _rows_2d(x, "x")
    if not epsilon > 0:
        raise ValueError(f"Expected epsilon > 0. Received: epsilon={epsilon}")
    cdef int64_t n = x.shape[0], m = x.shape[1]
    cdef real *px = <real *>_ptr(x, "x", t, 2, n, m, False, None)
    cdef real *py = <real *>_ptr(y, "y", t, 2, n, m, True, "x")
    cdef real *pm = <real *>_ptr(mean, "mean", t, 1, n, 0, True, "x")
    cdef real *pr = <real *>_ptr(rstd, "rstd", t, 1, n, 0, True, "x")
    cdef real *pg = _opt(kind, gamma, "gamma", t, m, False)
    cdef real *pb = _opt(kind, beta, "beta", t, m, False)
    _outputs_disjoint((("y", y), ("mean", mean), ("rstd", rstd)),
                      (("x", x), ("gamma", gamma), ("beta", beta)))
    with nogil:
        layernorm_forward_k(py, pm, pr, px, pg, pb, n, m, epsilon)
    return 0


def layernorm_backward(dx, dgamma, dbeta, dy, x, mean, rstd, gamma):
    """The gradient of layernorm_forward: dx (may be dy); dgamma, dbeta, gamma or None."""
    if _is_f32(x, "x"):
        _layernorm_backward(<float *>NULL, dx, dgamma, dbeta, dy, x, mean, rstd, gamma)
    else:
        _layernorm_backward(<double *>NULL, dx, dgamma, dbeta, dy, x, mean, rstd, gamma)


cdef int _layernorm_backward(real *kind, dx, dgamma, dbeta, dy, x, mean, rstd, gamma) except -1:
    cdef int t = _typenum(kind)
    _rows_2d(x, "x")
    cdef int64_t n = x.shape[0], m = x.shape[1]
    cdef real *px = <real *>_ptr(x, "x", t, 2, n, m, False, None)
    cdef real *pdy = <real *>_ptr(dy, "dy", t, 2, n, m, False, "x")
    cdef real *pdx = <real *>_ptr(dx, "dx", t, 2, n, m, True, "x")
    cdef real *pm = <real *>_ptr(mean, "mean", t, 1, n, 0, False, "x")
    cdef real *pr = <real *>_ptr(rstd, "rstd", t, 1, n, 0, False, "x")
    cdef real *pdg = _opt(kind, dgamma, "dgamma", t, m, True)
    cdef real *pdb = _opt(kind, dbeta, "dbeta", t, m, True)
    cdef real *pg = _opt(kind, gamma, "gamma", t, m, False)
    _outputs_disjoint((("dx", dx), ("dgamma", dgamma), ("dbeta", dbeta)),
                      (("x", x), ("mean", mean), ("rstd", rstd), ("gamma", gamma)), dx, dy)
    with nogil:
        layernorm_backward_k(pdx, pdg, pdb, pdy, px, pm, pr, pg, n, m)
    return 0


def prelu_forward(y, x, alpha):
    """y := x > 0 ? x : alpha * x; x, y (n, m), alpha (m) per column."""
    if _is_f32(x, "x"):
        _prelu_forward(<float *>NULL, y, x, alpha)
    else:
        _prelu_forward(<double *>NULL, y, x, alpha)


cdef int _prelu_forward(real *kind, y, x, alpha) except -1:
    cdef int t = _typenum(kind)
    _rows_2d(x, "x")
    cdef int64_t n = x.shape[0], m = x.shape[1]
    cdef real *px = <real *>_ptr(x, "x", t, 2, n, m, False, None)
    cdef real *pa = <real *>_ptr(alpha, "alpha", t, 1, m, 0, False, "x")
    cdef real *py = <real *>_ptr(y, "y", t, 2, n, m, True, "x")
    _disjoint("y", y, "x", x)
    _disjoint("y", y, "alpha", alpha)
    with nogil:
        prelu_forward_k(py, px, pa, n, m)
    return 0


def prelu_backward(dx, dalpha, dy, x, alpha):
    """dx := dy * (x > 0 ? 1 : alpha) (dx may be dy), dalpha := sum_rows(dy * min(x, 0)) or None."""
    if _is_f32(x, "x"):
        _prelu_backward(<float *>NULL, dx, dalpha, dy, x, alpha)
    else:
        _prelu_backward(<double *>NULL, dx, dalpha, dy, x, alpha)


cdef int _prelu_backward(real *kind, dx, dalpha, dy, x, alpha) except -1:
    cdef int t = _typenum(kind)
    _rows_2d(x, "x")
    cdef int64_t n = x.shape[0], m = x.shape[1]
    cdef real *px = <real *>_ptr(x, "x", t, 2, n, m, False, None)
    cdef real *pa = <real *>_ptr(alpha, "alpha", t, 1, m, 0, False, "x")
    cdef real *pdy = <real *>_ptr(dy, "dy", t, 2, n, m, False, "x")
    cdef real *pdx = <real *>_ptr(dx, "dx", t, 2, n, m, True, "x")
    cdef real *pda = _opt(kind, dalpha, "dalpha", t, m, True)
    _outputs_disjoint((("dx", dx), ("dalpha", dalpha)), (("x", x), ("alpha", alpha)), dx, dy)
    with nogil:
        prelu_backward_k(pdx, pda, pdy, px, pa, n, m)
    return 0


# ---- losses ------------------------------------------------------------------------------
# Every loss kernel by its code (fastnn/_codes.py LOSSES): the targets are int64 labels (n,)
# for the sparse ones, else an array shaped like p.  dp None: the value only.  sw (n,) or None:
# per-sample weights; per_sample (n,) or None receives each sample's unweighted loss.

_GEMM_NAMES = {code: name for name, code in _codes.GEMM_PATHS.items()}


def matmul_paths():
    """The kernels of matmul_forward this machine runs, best first: names of
    fastnn/_codes.py GEMM_PATHS (matmul_forward runs the first)."""
    cdef int avail = fnn_matmul_paths()
    return [_GEMM_NAMES[p] for p in range(FNN_GEMM_N_PATH - 1, -1, -1) if (avail >> p) & 1]


def matmul_forward(c, a, b, bint trans_a=False, path=None):
    """c := op(a) @ b on the calling thread, never the BLAS (the step's row-owned products);
    op(a) (m, k) is a, or a.T when trans_a (a stored (k, m)); b (k, n), c (m, n).  path: a
    name of matmul_paths() (None: the best)."""
    if path is None:
        path = matmul_paths()[0]
    elif path not in matmul_paths():
        raise ValueError(f"Expected path to be one of {matmul_paths()} (the kernels this "
                         f"machine runs) or None. Received: path={path!r}")
    cdef int code = _codes.GEMM_PATHS[path]
    if _is_f32(a, "a"):
        _matmul_forward(<float *>NULL, code, c, a, b, trans_a)
    else:
        _matmul_forward(<double *>NULL, code, c, a, b, trans_a)


cdef int _matmul_forward(real *kind, int path, c, a, b, bint trans_a) except -1:
    cdef int t = _typenum(kind)
    _rows_2d(a, "a")
    _rows_2d(b, "b")
    cdef int64_t m = a.shape[1] if trans_a else a.shape[0]
    cdef int64_t k = a.shape[0] if trans_a else a.shape[1]
    cdef int64_t n = b.shape[1]
    cdef real *pa = <real *>_ptr(a, "a", t, 2, a.shape[0], a.shape[1], False, None)
    cdef real *pb = <real *>_ptr(b, "b", t, 2, k, n, False, "a")
    cdef real *pc = <real *>_ptr(c, "c", t, 2, m, n, True, "a")
    _disjoint("c", c, "a", a)
    _disjoint("c", c, "b", b)
    with nogil:
        matmul_forward_k(path, pc, pa, pb, trans_a, m, n, k)
    return 0


def loss_backward(dp, p, t, int loss, sw=None, per_sample=None):
    """sum_i sw_i l_i / n, the weighted losses of p against t over the batch size (Keras'
    "sum_over_batch_size"); writes dp := d(that) / d p unless dp is None (the fused softmax
    ones: dp := d(that) / d logits, required) and per_sample := l unless None."""
    if _is_f32(p, "y_pred"):
        return _loss(<float *>NULL, dp, p, t, loss, sw, per_sample, 1.0)
    return _loss(<double *>NULL, dp, p, t, loss, sw, per_sample, 1.0)


def huber_backward(dp, p, t, double delta, sw=None, per_sample=None):
    """loss_backward for the Huber loss with its delta (> 0)."""
    if not delta > 0:
        raise ValueError(f"Expected delta > 0. Received: delta={delta}")
    if _is_f32(p, "y_pred"):
        return _loss(<float *>NULL, dp, p, t, FNN_LOSS_HUBER, sw, per_sample, delta)
    return _loss(<double *>NULL, dp, p, t, FNN_LOSS_HUBER, sw, per_sample, delta)


cdef double _loss(real *kind, dp, p, t, int loss, sw, per_sample, double delta) except? -1:
    cdef int ty = _typenum(kind)
    if loss < 0 or loss >= FNN_N_LOSS:
        raise ValueError(f"Expected loss to be a loss code in {sorted(_codes.LOSSES.values())}. "
                         f"Received: loss={loss}")
    cdef bint sparse = loss == FNN_LOSS_SCCE or loss == FNN_LOSS_SOFTMAX_SCCE
    if dp is None and (loss == FNN_LOSS_SOFTMAX_CCE or loss == FNN_LOSS_SOFTMAX_SCCE):
        raise ValueError("Expected dz, the gradient buffer. Received: None")
    if cnp.PyArray_NDIM(<cnp.ndarray>p) != 2:
        raise ValueError(f"Expected 2-D y_pred (batch, classes). Received: y_pred.shape={np.shape(p)}")
    cdef int64_t n = p.shape[0], k = p.shape[1]
    _check_sizes(n, k, 1)
    cdef real *pp = <real *>_ptr(p, "y_pred", ty, 2, n, k, False, None)
    cdef void *pt
    if sparse:
        pt = _ptr(t, "labels", cnp.NPY_INT64, 1, n, 0, False, None)
        _check_labels(<int64_t *>pt, n, k)
    else:
        pt = _ptr(t, "y_true", ty, 2, n, k, False, "y_pred")
    cdef real *psw = NULL
    if sw is not None:
        psw = <real *>_ptr(sw, "sample_weight", ty, 1, n, 0, False, "y_pred")
    cdef real *pdp = NULL
    cdef real *pps = NULL
    if per_sample is not None:
        pps = <real *>_ptr(per_sample, "per_sample", ty, 1, n, 0, True, "y_pred")
    if dp is not None:
        pdp = <real *>_ptr(dp, "grad", ty, 2, n, k, True, "y_pred")
    for oname, out in (("grad", dp), ("per_sample", per_sample)):
        _disjoint(oname, out, "y_pred", p)
        _disjoint(oname, out, "y_true", t)
        _disjoint(oname, out, "sample_weight", sw)
    _disjoint("grad", dp, "per_sample", per_sample)
    cdef double r
    with nogil:
        if loss == FNN_LOSS_HUBER:
            r = huber_backward_k(pdp, pps, pp, <const real *>pt, psw, n, k, delta)
        else:
            r = loss_backward_k(pdp, pps, pp, pt, psw, n, k, loss)
    return r


# ---- optimizers --------------------------------------------------------------------------

cdef class OptimizerStep:
    """One optimizer's C description (struct fnn_optimizer, see src_c/fastnn.h) for a parameter
    array p of n elements: its rule, hyper-parameters and state arrays, set once; each step
    then sets its scalars (begin) and runs on p (step, outer_step).

      rule: a name of fastnn/_codes.py OPTIMIZER_RULES;  hyper: {name: value} of
      OPTIMIZER_HYPER and "weight_decay";  slots: {name: array or None} of OPTIMIZER_SLOTS,
      each array of p's dtype and size, kept alive here."""
    cdef fnn_optimizer o
    cdef readonly int64_t size
    cdef readonly object dtype
    cdef object slots

    def __cinit__(self, p, str rule, dict hyper, dict slots):
        cdef int t = _dtype_of(p, "p")
        self.size = cnp.PyArray_SIZE(<cnp.ndarray>p)
        self.dtype = p.dtype
        if rule not in _codes.OPTIMIZER_RULES:
            raise ValueError(f"Expected rule in {sorted(_codes.OPTIMIZER_RULES)}. Received: {rule!r}")
        for name in hyper:
            if name not in _codes.OPTIMIZER_HYPER and name != "weight_decay":
                raise ValueError(f"Unknown optimizer hyper-parameter {name!r}")
        for name in slots:
            if name not in _codes.OPTIMIZER_SLOTS:
                raise ValueError(f"Unknown optimizer state {name!r}")
        for name in _codes.OPTIMIZER_REQUIRED[rule]:
            if slots.get(name) is None:
                raise ValueError(f"Expected the {rule} state array {name!r}. Received: None")
        if rule == "sgd" and hyper.get("momentum", 0.0) != 0 and slots.get("momentums") is None:
            raise ValueError(f"Expected a momentum buffer 'momentums' for momentum="
                             f"{hyper['momentum']}. Received: None")
        self.o.rule = _codes.OPTIMIZER_RULES[rule]
        self.o.momentum = hyper.get("momentum", 0.0)
        self.o.nesterov = bool(hyper.get("nesterov", False))
        self.o.rho = hyper.get("rho", 0.0)
        self.o.epsilon = hyper.get("epsilon", 0.0)
        self.o.beta_1 = hyper.get("beta_1", 0.0)
        self.o.beta_2 = hyper.get("beta_2", 0.0)
        self.o.weight_decay = hyper.get("weight_decay", 0.0) or 0.0
        self.o.learning_rate, self.o.iterations, self.o.u_product = 0.0, 0, 1.0
        names = [n for n in _codes.OPTIMIZER_SLOTS if slots.get(n) is not None]
        cdef void *ptr[8]
        for k, name in enumerate(names):
            ptr[k] = _ptr(slots[name], name, t, 0, self.size, 0, True, "p")
            _disjoint(name, slots[name], "p", p)
            for other in names[:k]:
                _disjoint(name, slots[name], other, slots[other])
        self.o.momentums = self.o.velocities = self.o.velocity_hats = NULL
        self.o.average_gradients = self.o.accumulators = NULL
        self.o.norms = self.o.accumulated_grads = self.o.accumulated_delta_vars = NULL
        for k, name in enumerate(names):
            if name == "momentums": self.o.momentums = ptr[k]
            elif name == "velocities": self.o.velocities = ptr[k]
            elif name == "velocity_hats": self.o.velocity_hats = ptr[k]
            elif name == "average_gradients": self.o.average_gradients = ptr[k]
            elif name == "accumulators": self.o.accumulators = ptr[k]
            elif name == "norms": self.o.norms = ptr[k]
            elif name == "accumulated_grads": self.o.accumulated_grads = ptr[k]
            else: self.o.accumulated_delta_vars = ptr[k]
        self.slots = {n: slots[n] for n in names}

    def begin(self, double learning_rate, int64_t iterations, double u_product=1.0):
        """This step's scalars: its learning rate, its number t (from 1) and, for nadam, the
        product u_1 ... u_t."""
        if iterations < 1:
            raise ValueError(f"Expected the step count t >= 1. Received: t={iterations}")
        self.o.learning_rate, self.o.iterations, self.o.u_product = learning_rate, iterations, u_product

    cdef int _check_p(self, p, int t) except -1:
        _ptr(p, "p", t, 0, self.size, 0, True, None)
        for name, a in self.slots.items():
            _disjoint(name, a, "p", p)
        return 0

    def step(self, p, g, int64_t start=0, stop=None):
        """The step on elements [start, stop) of p (flat view), g and the state (stop None:
        the size)."""
        cdef int64_t end = self.size if stop is None else stop
        if end < start or end > self.size:
            raise ValueError(f"Expected stop in [start, {self.size}]. Received: stop={stop}")
        if _is_f32(p, "p"):
            self._step(<float *>NULL, p, g, start, end)
        else:
            self._step(<double *>NULL, p, g, start, end)

    cdef int _step(self, real *kind, p, g, int64_t start, int64_t end) except -1:
        cdef int t = _typenum(kind)
        self._check_p(p, t)
        cdef real *pg = <real *>_ptr(g, "g", t, 0, self.size, 0, False, "p")
        _disjoint("g", g, "p", p)
        for name, a in self.slots.items():
            _disjoint(name, a, "g", g)
        if start < 0 or start > self.size:
            raise ValueError(f"Expected start in [0, {self.size}]. Received: start={start}")
        cdef real *pp = <real *>cnp.PyArray_DATA(<cnp.ndarray>p)
        if start < end:
            with nogil:
                optimizer_step_k(pp, pg, start, end - start, &self.o)
        return 0

    def outer_step(self, p, a, b):
        """The step on elements [0, a.size * b.size) of p and the state, with the rank-1
        gradient outer(a, b) (a dense kernel's for one sample), never formed."""
        if _is_f32(p, "p"):
            self._outer_step(<float *>NULL, p, a, b)
        else:
            self._outer_step(<double *>NULL, p, a, b)

    cdef int _outer_step(self, real *kind, p, a, b) except -1:
        cdef int t = _typenum(kind)
        for name, f in (("a", a), ("b", b)):
            if not cnp.PyArray_Check(f):
                raise TypeError(f"Expected {name} to be a numpy.ndarray. Received: {type(f).__name__}")
        cdef int64_t rows = cnp.PyArray_SIZE(<cnp.ndarray>a), cols = cnp.PyArray_SIZE(<cnp.ndarray>b)
        if rows < 1 or cols < 1 or rows * cols > self.size:
            raise ValueError(f"Expected a and b with a.size * b.size in [1, {self.size}]. "
                             f"Received: a.shape={a.shape}, b.shape={b.shape}")
        self._check_p(p, t)
        cdef real *pa = <real *>_ptr(a, "a", t, 1, rows, 0, False, "p")
        cdef real *pb = <real *>_ptr(b, "b", t, 1, cols, 0, False, "p")
        for name, arr in [("p", p)] + list(self.slots.items()):
            _disjoint(name, arr, "a", a)
            _disjoint(name, arr, "b", b)
        cdef real *pp = <real *>cnp.PyArray_DATA(<cnp.ndarray>p)
        with nogil:
            optimizer_outer_step_k(pp, pa, pb, rows, cols, &self.o)
        return 0


# ---- batch gather ------------------------------------------------------------------------------

def gather_rows(out, x, idx):
    """out := x[idx] along the first axis (any dtype; the rows are copied as bytes)."""
    for name, a in (("out", out), ("x", x)):
        if not cnp.PyArray_Check(a):
            raise TypeError(f"Expected {name} to be a numpy.ndarray. Received: {type(a).__name__}")
        if not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a):
            raise ValueError(f"Expected {name} to be C-contiguous.")
    if cnp.PyArray_NDIM(<cnp.ndarray>x) < 1 or x.shape[0] == 0:
        raise ValueError(f"Expected x with at least one row. Received: x.shape={x.shape}")
    cdef int64_t n = len(idx) if cnp.PyArray_Check(idx) else 0
    cdef const int64_t *pi = <const int64_t *>_ptr(idx, "idx", cnp.NPY_INT64, 1, n, 0, False, None)
    if out.dtype != x.dtype or out.shape != (n,) + x.shape[1:]:
        raise ValueError(f"Expected out with dtype {x.dtype} and shape {(n,) + x.shape[1:]}. "
                         f"Received: out.dtype={out.dtype}, out.shape={out.shape}")
    if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out):
        raise ValueError("Expected out to be writeable. Received a read-only array.")
    _disjoint("out", out, "x", x)
    cdef int64_t rows = x.shape[0], i
    for i in range(n):
        if pi[i] < 0 or pi[i] >= rows:
            raise ValueError(f"Expected idx in [0, {rows}). Received: idx[{i}]={pi[i]}")
    cdef int64_t row_bytes = x.dtype.itemsize * (cnp.PyArray_SIZE(<cnp.ndarray>x) // rows)
    cdef void *po = cnp.PyArray_DATA(<cnp.ndarray>out)
    cdef const void *px = cnp.PyArray_DATA(<cnp.ndarray>x)
    with nogil:
        fnn_gather_forward_u8(po, px, pi, n, row_bytes)


# ---- a whole training step for a stack of dense layers -------------------------------------

cdef class DenseStack:
    """A training step for a stack of Dense layers as one call into C (the GIL released):
    gather, forward, loss, backward and the optimizer step, with the same kernel calls in the
    same order as the layer-by-layer step (fastnn/_step.py), so the results are bit-identical;
    except where layer 0 is owned by rows per thread (`owns_first_layer`, see fastnn.h): its
    forward product is then summed in per-thread parts, which rounds differently.

    Built by fastnn/_step.py for one batch size from arrays it owns (this object keeps them
    alive); every size is checked here, so run() only checks the batch's indices.
      layers: [(w, b, dw, db, y, z, dx, act, params)] with None for absent arrays;
      loss: a code of fastnn/_codes.py LOSSES;  opt: the OptimizerStep of p (its scalars set
      by begin() before each run), or None: run() leaves the gradients in g, unstepped;  part: scratch of (part_threads - 1) x n x (layer 0's
      width) for the row-owned layer 0;  sw, swb: per-sample weights of x's rows and their
      batch buffer (n), or None (unweighted);  ready, buckets (data parallel with overlap,
      opt None): run() calls ready(off, count) for each bucket g[off:off + count] as soon as
      its gradients are final, top bucket first (buckets: int64 boundaries 0 < ... < p.size,
      see fastnn.h); an exception ready raises is raised by run() once the step is over."""
    cdef fnn_dense_stack s
    cdef fnn_dense_layer *layer
    cdef object keep
    cdef object pins
    cdef int dtype
    cdef readonly int64_t batch_size
    cdef int64_t rows
    cdef readonly object predictions  # the last layer's output buffer
    cdef object ready, buckets, error  # overlap: the callable, boundaries, its exception
    cdef OptimizerStep opt

    def __cinit__(self, x, t, xb, tb, grad, list layers, int loss, p, g, OptimizerStep opt,
                  bint rank1, part=None, int64_t part_threads=0, sw=None, swb=None,
                  scratch=None, ready=None, buckets=None):
        self.layer = NULL
        self.s.ready, self.s.ready_ctx, self.s.buckets, self.s.n_buckets = NULL, NULL, NULL, 0
        self.keep = (x, t, xb, tb, grad, layers, p, g, opt, part, sw, swb, scratch)
        self.opt = opt
        # this object holds raw pointers into x, t and sw: a weak reference makes NumPy refuse
        # to resize them (even with refcheck=False) while it lives, so they cannot move under it
        self.pins = [weakref.ref(a) for a in (x, t, sw) if isinstance(a, np.ndarray)]
        cdef int dt = _dtype_of(p, "p")
        self.dtype = dt
        if not layers:
            raise ValueError("Expected 1+ layers.")
        if loss < 0 or loss >= FNN_N_LOSS:
            raise ValueError(f"Unknown loss code {loss}")
        cdef int64_t n = xb.shape[0], L = len(layers), i, nparams = cnp.PyArray_SIZE(<cnp.ndarray>p)
        if opt is None and (rank1 or part is not None or scratch is not None):
            raise ValueError("Expected an optimizer for a step with rank1, part or bf16.")
        if opt is not None and (opt.size != nparams or opt.dtype != p.dtype):
            raise ValueError(f"Expected an optimizer for {nparams} parameters of {p.dtype}. "
                             f"Received one for {opt.size} of {opt.dtype}")
        self.batch_size = n
        self.rows = x.shape[0]
        self.layer = <fnn_dense_layer *>malloc(L * sizeof(fnn_dense_layer))
        if self.layer == NULL:
            raise MemoryError()
        cdef int64_t width = cnp.PyArray_SIZE(<cnp.ndarray>xb) // n if n else 0
        # mixed bfloat16: scratch given, xb holds bf16 rows, each layer adds (wp, wtp, y16)
        cdef bint bf16 = scratch is not None
        if bf16 and (dt != cnp.NPY_FLOAT32 or rank1):
            raise ValueError("Expected a float32 stack without rank1 for bfloat16.")
        cdef int xbt = cnp.NPY_UINT16 if bf16 else dt  # the batch: bf16 rows, gathered
        cdef int64_t widest = 0
        for i in range(L):
            if len(layers[i]) != (12 if bf16 else 9):
                raise ValueError(f"Expected layer {i} as {12 if bf16 else 9} entries. "
                                 f"Received: {len(layers[i])}")
            w, b, dw, db, y, z, dx, act, params = layers[i][:9]
            self.layer[i].act = _activation(act, params)
            if FNN_ACT_NEEDS_X(act) and z is None:
                raise ValueError(f"Expected z (the pre-activation) for layer {i}'s act={act}. Received: z=None")
            fi, fo = w.shape[0], w.shape[1]
            if fi != width:
                raise ValueError(f"Expected layer {i} to take {width} inputs. Received: w.shape={w.shape}")
            self.layer[i].in_, self.layer[i].out = fi, fo
            self.layer[i].w = _ptr(w, "w", dt, 2, fi, fo, False, "p")
            self.layer[i].b = _ptr(b, "b", dt, 1, fo, 0, False, "p") if b is not None else NULL
            self.layer[i].dw = _ptr(dw, "dw", dt, 2, fi, fo, True, "p")
            self.layer[i].db = _ptr(db, "db", dt, 1, fo, 0, True, "p") if db is not None else NULL
            self.layer[i].y = _ptr(y, "y", dt, 2, n, fo, True, "p")
            self.layer[i].z = _ptr(z, "z", dt, 2, n, fo, True, "p") if z is not None else NULL
            self.layer[i].dx = _ptr(dx, "dx", dt, 2, n, fi, True, "p") if dx is not None else NULL
            if i and dx is None:
                raise ValueError(f"Expected dx for layer {i}")
            self.layer[i].wp = self.layer[i].wtp = self.layer[i].y16 = NULL
            if bf16:
                wp, wtp, y16 = layers[i][9:]
                self.layer[i].wp = _ptr(wp, "wp", cnp.NPY_UINT16, 0,
                                        fnn_bf16_packed_size(fi, fo), 0, True, None)
                self.layer[i].wtp = _ptr(wtp, "wtp", cnp.NPY_UINT16, 0,
                                         fnn_bf16_packed_size(fo, fi), 0, True, None)
                if i < L - 1:
                    self.layer[i].y16 = _ptr(y16, "y16", cnp.NPY_UINT16, 2, n, fo, True, None)
                widest = max(widest, fnn_bf16_backward_scratch_size(n, fi, fo))
            width = fo
        self.predictions = layers[L - 1][4]
        self.s.n_layers = L
        self.s.layer = self.layer
        cdef int64_t k = width, x_elems = cnp.PyArray_SIZE(<cnp.ndarray>x) // self.rows
        self.s.x = _ptr(x, "x", dt, 0, self.rows * x_elems, 0, False, "p")
        self.s.xb = _ptr(xb, "xb", xbt, 0, n * x_elems, 0, True, None)
        self.s.x_row_bytes = x_elems * x.dtype.itemsize
        if x_elems != self.layer[0].in_:
            raise ValueError(f"Expected samples of {self.layer[0].in_} values. Received: x.shape={x.shape}")
        cdef bint sparse = loss == FNN_LOSS_SCCE or loss == FNN_LOSS_SOFTMAX_SCCE
        if len(t) != self.rows:
            raise ValueError(f"Expected {self.rows} targets. Received: {len(t)}")
        self.s.t = _ptr(t, "t", cnp.NPY_INT64 if sparse else dt, 0, self.rows * (1 if sparse else k), 0, False, None)
        self.s.tb = _ptr(tb, "tb", cnp.NPY_INT64 if sparse else dt, 0, n * (1 if sparse else k), 0, True, None)
        self.s.t_row_bytes = 8 if sparse else k * x.dtype.itemsize
        self.s.grad = _ptr(grad, "grad", dt, 2, n, k, True, "p")
        self.s.sw, self.s.swb = NULL, NULL
        if (sw is None) != (swb is None):
            raise ValueError("Expected both sw and swb, or neither.")
        if sw is not None:  # per-sample weights of the rows of x, and their batch buffer
            self.s.sw = _ptr(sw, "sw", dt, 1, self.rows, 0, False, "p")
            self.s.swb = _ptr(swb, "swb", dt, 1, n, 0, True, "p")
        self.s.loss = loss
        self.s.p = _ptr(p, "p", dt, 0, nparams, 0, True, None)
        self.s.g = _ptr(g, "g", dt, 0, nparams, 0, True, "p")
        self.s.n_params = nparams
        self.s.opt = &opt.o if opt is not None else NULL
        self.s.rank1 = rank1
        self.s.bf16, self.s.scratch = bf16, NULL
        if bf16:
            self.s.scratch = _ptr(scratch, "scratch", cnp.NPY_UINT16, 0,
                                  cnp.PyArray_SIZE(<cnp.ndarray>scratch), 0, True, None)
            if cnp.PyArray_SIZE(<cnp.ndarray>scratch) < widest:
                raise ValueError(f"Expected a scratch of {widest} elements at least. "
                                 f"Received: {cnp.PyArray_SIZE(<cnp.ndarray>scratch)}")
        self.s.part, self.s.part_threads = NULL, 0
        if part is not None and part_threads > 1:  # layer 0 owned by rows: see fastnn.h
            self.s.part = _ptr(part, "part", dt, 0, (part_threads - 1) * n * self.layer[0].out,
                               0, True, "p")
            self.s.part_threads = part_threads
        if ready is not None or buckets is not None:
            self._set_ready(ready, buckets, layers, g, opt is None and not bf16)

    cdef int _set_ready(self, ready, buckets, list layers, g, bint grads_only) except -1:
        """Check and set struct fnn_dense_stack's ready and buckets."""
        if not callable(ready) or buckets is None:
            raise ValueError(f"Expected ready (a callable) and buckets together. "
                             f"Received: ready={ready!r}, buckets={buckets!r}")
        if not grads_only:
            raise ValueError("Expected a grads-only step (opt=None, no bf16) for ready.")
        cdef int64_t m = len(buckets) if cnp.PyArray_Check(buckets) else 0
        cdef int64_t nparams = self.s.n_params, i, lo = 0, off, size
        _ptr(buckets, "buckets", cnp.NPY_INT64, 1, m, 0, False, None)
        b = np.array(buckets)  # a copy: the values checked are the values used
        if m < 2 or b[0] != 0 or b[m - 1] != nparams or not np.all(np.diff(b) > 0):
            raise ValueError(f"Expected buckets ascending from 0 to {nparams} (p.size). "
                             f"Received: buckets={buckets}")
        cdef uintptr_t g0 = <uintptr_t>cnp.PyArray_DATA(<cnp.ndarray>g)
        cdef int64_t item = g.dtype.itemsize
        for i in range(len(layers)):  # the gradients in g must lie in layer order
            for name, a in (("dw", layers[i][2]), ("db", layers[i][3])):
                if a is None:
                    continue
                off = <int64_t>(<uintptr_t>cnp.PyArray_DATA(<cnp.ndarray>a) - g0) // item
                size = cnp.PyArray_SIZE(<cnp.ndarray>a)
                if off + size <= 0 or off >= nparams:
                    continue  # a frozen layer's, outside g
                if off < lo or off + size > nparams:
                    raise ValueError(f"Expected the layers' gradients in g in layer order. "
                                     f"Received: layer {i}'s {name} at [{off}, {off + size}) "
                                     f"of g, after {lo}")
                lo = off + size
        self.ready, self.buckets, self.error = ready, b, None
        self.s.buckets = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>b)
        self.s.n_buckets = m - 1
        self.s.ready_ctx = <void *>self
        self.s.ready = _bucket_ready
        return 0

    def __dealloc__(self):
        free(self.layer)

    @property
    def owns_first_layer(self):
        """Whether run() now computes layer 0 with each thread owning rows of its kernel."""
        return bool(fnn_dense_stack_owns(&self.s, self.batch_size))

    cdef const int64_t *_rows(self, idx, str name, int64_t count) except NULL:
        """idx's data: count int64 indices of samples, each checked in [0, rows)."""
        cdef const int64_t *pi = <const int64_t *>_ptr(idx, name, cnp.NPY_INT64, 1, count, 0,
                                                       False, None)
        cdef int64_t i
        for i in range(count):
            if pi[i] < 0 or pi[i] >= self.rows:
                raise ValueError(f"Expected {name} in [0, {self.rows}). Received: "
                                 f"{name}[{i}]={pi[i]}")
        return pi

    cdef double _step(self, const int64_t *pi) noexcept nogil:
        if self.dtype == cnp.NPY_FLOAT32:
            return dense_stack_step_k(<float *>NULL, &self.s, pi, self.batch_size)
        return dense_stack_step_k(<double *>NULL, &self.s, pi, self.batch_size)

    cdef int _raise(self) except -1:
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return 0

    def run(self, idx):
        """One step on the samples idx (int64, batch_size of them), the optimizer's scalars
        for this step already set; returns the loss."""
        cdef const int64_t *pi = self._rows(idx, "idx", self.batch_size)
        cdef double loss
        with nogil:
            loss = self._step(pi)
        self._raise()
        return loss

    def run_steps(self, idx, scalars, preds=None):
        """len(scalars) steps in one call: step k on the samples idx[k n:(k + 1) n] (n the batch
        size; idx int64) with the optimizer's scalars scalars[k] = (learning rate, step number
        t >= 1, u product), float64 (steps, 3) (OptimizerStep.begin's, set before each step).
        preds, or None: (steps n, outputs) of the stack's dtype, rows [k n, (k + 1) n) := step
        k's predictions (as `predictions` holds them after it).  Returns the (steps,) float64
        losses."""
        if self.opt is None:
            raise ValueError("Expected a stack with an optimizer for run_steps.")
        cdef const double *sc = <const double *>_ptr(scalars, "scalars", cnp.NPY_FLOAT64, 2,
                                                     len(scalars), 3, False, None)
        cdef int64_t steps = len(scalars), n = self.batch_size, k
        if steps < 1 or not np.all(scalars[:, 1] >= 1):
            raise ValueError(f"Expected 1+ steps, each t >= 1. Received: scalars={scalars}")
        cdef const int64_t *pi = self._rows(idx, "idx", steps * n)
        cdef int64_t width = self.predictions.shape[1]
        cdef size_t row_bytes = <size_t>(n * width) * self.predictions.itemsize
        cdef char *pp = NULL
        cdef const char *src = <const char *>cnp.PyArray_DATA(<cnp.ndarray>self.predictions)
        if preds is not None:
            pp = <char *>_ptr(preds, "preds", self.dtype, 2, steps * n, width, True, None)
            _disjoint("preds", preds, "predictions", self.predictions)
        losses = np.empty(steps)
        cdef double[::1] out = losses
        cdef fnn_optimizer *o = &self.opt.o
        with nogil:
            for k in range(steps):
                o.learning_rate, o.iterations, o.u_product = sc[3 * k], <int64_t>sc[3 * k + 1], sc[3 * k + 2]
                out[k] = self._step(pi + k * n)
                if pp != NULL:
                    memcpy(pp + k * row_bytes, src, row_bytes)
        self._raise()
        return losses


cdef void _bucket_ready(void *ctx, int64_t off, int64_t count) noexcept nogil:
    """struct fnn_dense_stack's ready: the DenseStack's ready(off, count), under the GIL; its
    first exception is kept for run() to raise (the C step cannot unwind), later calls skipped."""
    with gil:
        stack = <DenseStack>ctx
        if stack.error is None:
            try:
                stack.ready(off, count)
            except BaseException as e:
                stack.error = e


# ---- bfloat16 products with float32 sums (src_c/bf16.c) -------------------------------------
# A bf16 array is a numpy.uint16 array of the top 16 bits of float32 values (bf16_convert_forward
# makes one); the packed forms of a weight matrix are 1-D uint16 arrays of bf16_packed_size
# elements.  Every kernel runs on the path bf16_path() names.

_BF16_NAMES = {code: name for name, code in _codes.BF16_PATHS.items()}


def bf16_paths():
    """The bf16 paths this machine runs, best first: names of fastnn/_codes.py BF16_PATHS."""
    cdef int avail = fnn_bf16_paths()
    return [_BF16_NAMES[p] for p in range(FNN_BF16_N_PATH - 1, -1, -1) if (avail >> p) & 1]


def bf16_path():
    """The path the bf16 kernels run: the one bf16_set_path forced, else the one the environment
    variable FASTNN_BF16_PATH names (read once, at the first bf16 call), else the best.

    Raises ValueError when FASTNN_BF16_PATH names a path this machine cannot run."""
    cdef int p = fnn_bf16_get_path()
    if p < 0:
        raise ValueError(f"Expected FASTNN_BF16_PATH to name a bf16 path this machine runs, one "
                         f"of {bf16_paths()}. Received: FASTNN_BF16_PATH="
                         f"{os.environ.get('FASTNN_BF16_PATH')!r} (read at the first bf16 call)")
    return _BF16_NAMES[p]


def bf16_set_path(path):
    """Force the bf16 kernels onto `path` (a name of bf16_paths()); None: back to
    FASTNN_BF16_PATH, else the best path."""
    if path is None:
        fnn_bf16_set_path(-1)
        return
    if path not in _codes.BF16_PATHS:
        raise ValueError(f"Expected path to be one of {list(_codes.BF16_PATHS)} or None. "
                         f"Received: path={path!r}")
    if fnn_bf16_set_path(_codes.BF16_PATHS[path]) < 0:
        raise ValueError(f"Expected a bf16 path this machine runs, one of {bf16_paths()}. "
                         f"Received: path={path!r}, which this CPU (or its operating system) "
                         f"does not offer")


def bf16_packed_size(int64_t k, int64_t n):
    """Elements (uint16) of the packed form of a (k, n) matrix."""
    _check_sizes(k, n, 1)
    return fnn_bf16_packed_size(k, n)


def bf16_backward_scratch_size(int64_t n, int64_t in_, int64_t out):
    """Elements (uint16) of dense_backward_bf16's scratch for n samples, in -> out."""
    _check_sizes(n, in_, out)
    return fnn_bf16_backward_scratch_size(n, in_, out)


cdef int _bf16_ready() except -1:
    bf16_path()  # raises for an unavailable FASTNN_BF16_PATH
    return 0


cdef int _shape2(object a, str name) except -1:
    if not cnp.PyArray_Check(a) or cnp.PyArray_NDIM(<cnp.ndarray>a) != 2:
        raise ValueError(f"Expected {name} to be a 2-D numpy.ndarray. Received: "
                         f"{name}.shape={np.shape(a)}")
    return 0


def bf16_convert_forward(y, x):
    """y := bf16(x) elementwise: x float32, y uint16 of x's shape (round to nearest even; NaN
    stays NaN, subnormals become zeros of their sign)."""
    _bf16_ready()
    if not cnp.PyArray_Check(x):
        raise TypeError(f"Expected x to be a numpy.ndarray. Received: {type(x).__name__}")
    cdef int64_t n = cnp.PyArray_SIZE(<cnp.ndarray>x)
    cdef const float *px = <const float *>_ptr(x, "x", cnp.NPY_FLOAT32, 0, n, 0, False, None)
    cdef uint16_t *py = <uint16_t *>_ptr(y, "y", cnp.NPY_UINT16, 0, n, 0, True, None)
    if y.shape != x.shape:
        raise ValueError(f"Expected y with shape {x.shape}. Received: y.shape={y.shape}")
    _disjoint("y", y, "x", x)
    with nogil:
        fnn_bf16_convert_forward(py, px, n)


def bf16_gather_forward(out, x, idx):
    """out[i] := bf16(x[idx[i]]): rows of x (rows, width) float32 gathered into out (n,
    width) uint16, converted as they are copied (the mixed step's batch gather)."""
    _bf16_ready()
    if not cnp.PyArray_Check(x) or cnp.PyArray_NDIM(<cnp.ndarray>x) != 2:
        raise ValueError(f"Expected x of shape (rows, width). Received: {np.shape(x)}")
    cdef int64_t rows = x.shape[0], width = x.shape[1]
    cdef const int64_t *pi = <const int64_t *>_ptr(idx, "idx", cnp.NPY_INT64, 1, len(idx), 0,
                                                   False, None)
    cdef int64_t n = len(idx), i
    cdef const float *px = <const float *>_ptr(x, "x", cnp.NPY_FLOAT32, 2, rows, width, False, None)
    cdef uint16_t *po = <uint16_t *>_ptr(out, "out", cnp.NPY_UINT16, 2, n, width, True, None)
    for i in range(n):
        if pi[i] < 0 or pi[i] >= rows:
            raise ValueError(f"Expected idx in [0, {rows}). Received: idx[{i}]={pi[i]}")
    with nogil:
        fnn_bf16_gather_forward(po, px, pi, n, width)


def bf16_pack_forward(wp, wtp, w):
    """wp := pack(bf16(w)) (the forward's weights), wtp := pack(bf16(w.T)) (the backward's);
    w float32 (in, out); wp of bf16_packed_size(in, out), wtp of bf16_packed_size(out, in)
    elements, either may be None."""
    _bf16_ready()
    _shape2(w, "w")
    cdef int64_t i = w.shape[0], o = w.shape[1]
    _check_sizes(i, o, 1)
    cdef const float *pw = <const float *>_ptr(w, "w", cnp.NPY_FLOAT32, 2, i, o, False, None)
    cdef uint16_t *pp = NULL
    cdef uint16_t *pt = NULL
    if wp is not None:
        pp = <uint16_t *>_ptr(wp, "wp", cnp.NPY_UINT16, 1, fnn_bf16_packed_size(i, o), 0, True, None)
        _disjoint("wp", wp, "w", w)
    if wtp is not None:
        pt = <uint16_t *>_ptr(wtp, "wtp", cnp.NPY_UINT16, 1, fnn_bf16_packed_size(o, i), 0, True, None)
        _disjoint("wtp", wtp, "w", w)
        _disjoint("wtp", wtp, "wp", wp)
    with nogil:
        fnn_bf16_pack_forward(pp, pt, pw, i, o)


def optimizer_step_bf16pack(OptimizerStep opt, p, wp, wtp, g, int64_t start, int64_t in_,
                            int64_t out):
    """opt.step on the kernel w = p[start : start + in_ out] (in_, out) only, with its packs
    written in the same pass: wp := pack(bf16(w)), wtp := pack(bf16(w.T)) of the updated w (as
    bf16_pack_forward, either may be None).  p float32; the float32 results are opt.step's,
    bit for bit."""
    _bf16_ready()
    if opt.dtype != np.float32:
        raise TypeError(f"Expected an optimizer of float32 parameters. Received one of {opt.dtype}")
    _check_sizes(in_, out, 1)
    if start < 0 or start + in_ * out > opt.size:
        raise ValueError(f"Expected start in [0, {opt.size - in_ * out}] for a ({in_}, {out}) "
                         f"kernel in {opt.size} parameters. Received: start={start}")
    opt._check_p(p, cnp.NPY_FLOAT32)
    cdef const float *pg = <const float *>_ptr(g, "g", cnp.NPY_FLOAT32, 0, opt.size, 0, False, "p")
    cdef uint16_t *pp = NULL
    cdef uint16_t *pt = NULL
    if wp is not None:
        pp = <uint16_t *>_ptr(wp, "wp", cnp.NPY_UINT16, 1, fnn_bf16_packed_size(in_, out), 0, True, None)
    if wtp is not None:
        pt = <uint16_t *>_ptr(wtp, "wtp", cnp.NPY_UINT16, 1, fnn_bf16_packed_size(out, in_), 0, True, None)
    _disjoint("g", g, "p", p)
    _disjoint("wtp", wtp, "wp", wp)
    for name, a in [("p", p), ("g", g)] + list(opt.slots.items()):
        _disjoint("wp", wp, name, a)
        _disjoint("wtp", wtp, name, a)
        if name != "g" and name != "p":
            _disjoint(name, a, "g", g)
    cdef float *pv = <float *>cnp.PyArray_DATA(<cnp.ndarray>p)
    with nogil:
        fnn_optimizer_step_bf16pack_f32(pv, pp, pt, pg, start, in_, out, &opt.o)


def dense_forward_bf16(y, z, y16, x16, wp, b, int act, params):
    """y := act(x @ w + b) with bfloat16 products and float32 sums.  x16 (n, in) bf16 (uint16);
    wp the packed w (bf16_pack_forward); b (out) float32 or None; y (n, out) float32; z (or
    None) receives x @ w + b, y16 (or None) bf16(y)."""
    _bf16_ready()
    _shape2(x16, "x16")
    _shape2(y, "y")
    cdef int64_t n = x16.shape[0], i = x16.shape[1], o = y.shape[1]
    _check_sizes(n, i, o)
    cdef fnn_activation a = _activation(act, params)
    cdef const uint16_t *px = <const uint16_t *>_ptr(x16, "x16", cnp.NPY_UINT16, 2, n, i, False, None)
    cdef const uint16_t *pw = <const uint16_t *>_ptr(wp, "wp", cnp.NPY_UINT16, 1, fnn_bf16_packed_size(i, o), 0, False, None)
    cdef float *py = <float *>_ptr(y, "y", cnp.NPY_FLOAT32, 2, n, o, True, None)
    cdef const float *pb = NULL
    cdef float *pz = NULL
    cdef uint16_t *py16 = NULL
    if b is not None:
        pb = <const float *>_ptr(b, "b", cnp.NPY_FLOAT32, 1, o, 0, False, None)
    if z is not None:
        pz = <float *>_ptr(z, "z", cnp.NPY_FLOAT32, 2, n, o, True, None)
    if y16 is not None:
        py16 = <uint16_t *>_ptr(y16, "y16", cnp.NPY_UINT16, 2, n, o, True, None)
    outs = (("y", y), ("z", z), ("y16", y16))
    for k, (oname, out) in enumerate(outs):
        _disjoint(oname, out, "x16", x16); _disjoint(oname, out, "wp", wp); _disjoint(oname, out, "b", b)
        for oname2, out2 in outs[k + 1:]:
            _disjoint(oname, out, oname2, out2)
    with nogil:
        fnn_dense_forward_bf16(py, pz, py16, px, pw, pb, n, i, o, a)


def dense_backward_bf16(dw, db, dx, dz, scratch, dy, x16, wtp, y, z, int act, params):
    """dz := dy * act'(.), db := sum(dz) (float32), dw := x.T @ bf16(dz), dx := bf16(dz) @ w.T
    (bfloat16 products, float32 sums).  x16 (n, in) bf16, the forward's input; wtp the packed
    w.T (bf16_pack_forward); dy, y, z (n, out) float32 (z, the pre-activation: ACT_NEEDS_X);
    dz (n, out) float32, may be dy; dw (in, out), db (out), dx (n, in) float32 or None; scratch
    uint16 of bf16_backward_scratch_size(n, in, out)."""
    _bf16_ready()
    _shape2(x16, "x16")
    _shape2(dy, "dy")
    cdef int64_t n = x16.shape[0], i = x16.shape[1], o = dy.shape[1]
    _check_sizes(n, i, o)
    cdef fnn_activation a = _activation(act, params)
    if FNN_ACT_NEEDS_X(act) and z is None:
        raise ValueError(f"Expected z (the pre-activation) for act={act}. Received: z=None")
    cdef const uint16_t *px = <const uint16_t *>_ptr(x16, "x16", cnp.NPY_UINT16, 2, n, i, False, None)
    cdef const uint16_t *pw = <const uint16_t *>_ptr(wtp, "wtp", cnp.NPY_UINT16, 1, fnn_bf16_packed_size(o, i), 0, False, None)
    cdef const float *pdy = <const float *>_ptr(dy, "dy", cnp.NPY_FLOAT32, 2, n, o, False, None)
    cdef const float *py = <const float *>_ptr(y, "y", cnp.NPY_FLOAT32, 2, n, o, False, None)
    cdef const float *pz = NULL
    if z is not None:
        pz = <const float *>_ptr(z, "z", cnp.NPY_FLOAT32, 2, n, o, False, None)
    cdef float *pdz = <float *>_ptr(dz, "dz", cnp.NPY_FLOAT32, 2, n, o, True, None)
    cdef uint16_t *ps = <uint16_t *>_ptr(scratch, "scratch", cnp.NPY_UINT16, 1,
                                         fnn_bf16_backward_scratch_size(n, i, o), 0, True, None)
    cdef float *pdw = NULL
    cdef float *pdb = NULL
    cdef float *pdx = NULL
    if dw is not None:
        pdw = <float *>_ptr(dw, "dw", cnp.NPY_FLOAT32, 2, i, o, True, None)
    if db is not None:
        pdb = <float *>_ptr(db, "db", cnp.NPY_FLOAT32, 1, o, 0, True, None)
    if dx is not None:
        pdx = <float *>_ptr(dx, "dx", cnp.NPY_FLOAT32, 2, n, i, True, None)
    ins = (("x16", x16), ("wtp", wtp), ("y", y), ("z", z))
    outs = (("dw", dw), ("db", db), ("dx", dx), ("dz", dz), ("scratch", scratch))
    for k, (oname, out) in enumerate(outs):
        for iname, inp in ins:
            _disjoint(oname, out, iname, inp)
        for oname2, out2 in outs[k + 1:]:
            _disjoint(oname, out, oname2, out2)
        if <const float *>pdz != pdy or oname != "dz":  # dz may be exactly dy, nothing else
            _disjoint(oname, out, "dy", dy)
    with nogil:
        fnn_dense_backward_bf16(pdw, pdb, pdx, pdz, ps, pdy, px, pw, py, pz, n, i, o, a)


def dense_backward_step_bf16(OptimizerStep opt, p, wp, db, dz, scratch, dy, x16, y, z,
                             int64_t start, int act, params):
    """A first layer's backward and its kernel's step in one pass: the p, state, wp, db, dz
    and scratch that dense_backward_bf16(dw, db, None, dz, scratch, dy, x16, -, y, z, act,
    params) then optimizer_step_bf16pack(opt, p, wp, None, g, start, in, out) give, with dw =
    g[start : start + in out] (in, out), bit for bit (no dx, so no wtp); dw itself is never
    written to memory.  p float32 of opt.size; wp of bf16_packed_size(in, out); the rest as
    dense_backward_bf16 (db may be None)."""
    _bf16_ready()
    if opt.dtype != np.float32:
        raise TypeError(f"Expected an optimizer of float32 parameters. Received one of {opt.dtype}")
    _shape2(x16, "x16")
    _shape2(dy, "dy")
    cdef int64_t n = x16.shape[0], i = x16.shape[1], o = dy.shape[1]
    _check_sizes(n, i, o)
    if start < 0 or start + i * o > opt.size:
        raise ValueError(f"Expected start in [0, {opt.size - i * o}] for a ({i}, {o}) "
                         f"kernel in {opt.size} parameters. Received: start={start}")
    cdef fnn_activation a = _activation(act, params)
    if FNN_ACT_NEEDS_X(act) and z is None:
        raise ValueError(f"Expected z (the pre-activation) for act={act}. Received: z=None")
    opt._check_p(p, cnp.NPY_FLOAT32)
    cdef float *pp = <float *>cnp.PyArray_DATA(<cnp.ndarray>p)
    cdef uint16_t *pwp = <uint16_t *>_ptr(wp, "wp", cnp.NPY_UINT16, 1, fnn_bf16_packed_size(i, o), 0, True, None)
    cdef const uint16_t *px = <const uint16_t *>_ptr(x16, "x16", cnp.NPY_UINT16, 2, n, i, False, None)
    cdef const float *pdy = <const float *>_ptr(dy, "dy", cnp.NPY_FLOAT32, 2, n, o, False, None)
    cdef const float *py = <const float *>_ptr(y, "y", cnp.NPY_FLOAT32, 2, n, o, False, None)
    cdef const float *pz = NULL
    if z is not None:
        pz = <const float *>_ptr(z, "z", cnp.NPY_FLOAT32, 2, n, o, False, None)
    cdef float *pdz = <float *>_ptr(dz, "dz", cnp.NPY_FLOAT32, 2, n, o, True, None)
    cdef uint16_t *ps = <uint16_t *>_ptr(scratch, "scratch", cnp.NPY_UINT16, 1,
                                         fnn_bf16_backward_scratch_size(n, i, o), 0, True, None)
    cdef float *pdb = NULL
    if db is not None:
        pdb = <float *>_ptr(db, "db", cnp.NPY_FLOAT32, 1, o, 0, True, None)
    ins = (("x16", x16), ("y", y), ("z", z))
    outs = [("p", p), ("wp", wp), ("db", db), ("dz", dz), ("scratch", scratch)]
    outs += list(opt.slots.items())
    for k, (oname, out) in enumerate(outs):
        for iname, inp in ins:
            _disjoint(oname, out, iname, inp)
        for oname2, out2 in outs[k + 1:]:
            _disjoint(oname, out, oname2, out2)
        if <const float *>pdz != pdy or oname != "dz":  # dz may be exactly dy, nothing else
            _disjoint(oname, out, "dy", dy)
    with nogil:
        fnn_dense_backward_step_bf16(pp, pwp, pdb, pdz, ps, pdy, px, py, pz, start, n, i,
                                     o, a, &opt.o)


# ---- build facts and threads ---------------------------------------------------------------

def build_info():
    return {
        "openmp": fnn_have_openmp(),
        "simd": fnn_simd_targets().decode(),
        "blas": fnn_blas_config().decode(),
    }


def set_num_threads(int n):
    if n < 1:
        raise ValueError(f"Expected n >= 1 threads. Received: n={n}")
    fnn_set_num_threads(n)


def get_num_threads():
    return {"openmp": fnn_get_num_threads(), "blas": fnn_blas_get_num_threads()}


def forked_child():
    """Whether this process was forked after fastnn loaded (its loops then run on one thread,
    the BLAS on its own threads)."""
    return bool(fnn_forked_child())
