# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled backend: thin checked wrappers around the C kernels in src_c/.

Every function here has a twin of the same name and argument order in
`fastnn/_reference.py`.  The decision: the public layers convert inputs
(`np.ascontiguousarray(x, dtype)`); this module refuses what a kernel cannot take,
with a TypeError/ValueError naming the operand, and never copies.  Sizes come from the
shapes; the dtype (float32 -> *_f32, float64 -> *_f64) from the first array operand.
"""
cimport numpy as cnp
from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport free, malloc

import numpy as np

cnp.import_array()
fnn_init()

ACT_CODES = {
    "linear": FNN_LINEAR, "relu": FNN_RELU, "sigmoid": FNN_SIGMOID, "tanh": FNN_TANH,
    "softmax": FNN_SOFTMAX, "leaky_relu": FNN_LEAKY_RELU, "elu": FNN_ELU, "gelu": FNN_GELU,
}
NAME = "compiled"
cdef int64_t _BLAS_MAX = 2147483647  # scipy-openblas32 takes 32-bit sizes


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
                        np.float32 if typenum == cnp.NPY_FLOAT32 else np.float64)
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


cdef int _check_act(int act, double alpha) except -1:
    if act < 0 or act >= FNN_N_ACT:
        raise ValueError(f"Expected act to be an activation code in {sorted(ACT_CODES.values())}. "
                         f"Received: act={act}")
    if (act == FNN_LEAKY_RELU and alpha < 0) or (act == FNN_ELU and alpha <= 0):
        raise ValueError(f"Expected alpha >= 0 for leaky_relu and > 0 for elu (the backward "
                         f"pass reads the sign of the output). Received: alpha={alpha}")
    return 0


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

def dense_forward(y, z, x, w, b, int act, double alpha):
    """y := act(x @ w + b); z (or None) receives x @ w + b.  x (n, in), w (in, out)."""
    cdef int t = _dtype_of(x, "x")
    if cnp.PyArray_NDIM(<cnp.ndarray>x) != 2 or cnp.PyArray_NDIM(<cnp.ndarray>w) != 2:
        raise ValueError(f"Expected 2-D x and w. Received: x.shape={np.shape(x)}, "
                         f"w.shape={np.shape(w)}")
    cdef int64_t n = x.shape[0], i = x.shape[1], o = w.shape[1]
    _check_sizes(n, i, o)
    _check_act(act, alpha)
    cdef void *px = _ptr(x, "x", t, 2, n, i, False, None)
    cdef void *pw = _ptr(w, "w", t, 2, i, o, False, "x")
    cdef void *pb = NULL
    cdef void *pz = NULL
    if b is not None:
        pb = _ptr(b, "b", t, 1, o, 0, False, "x")
    cdef void *py = _ptr(y, "y", t, 2, n, o, True, "x")
    if z is not None:
        pz = _ptr(z, "z", t, 2, n, o, True, "x")
    for oname, out in (("y", y), ("z", z)):
        _disjoint(oname, out, "x", x); _disjoint(oname, out, "w", w); _disjoint(oname, out, "b", b)
    _disjoint("y", y, "z", z)
    if t == cnp.NPY_FLOAT32:
        with nogil:
            fnn_dense_forward_f32(<float *>py, <float *>pz, <float *>px, <float *>pw,
                                  <float *>pb, n, i, o, act, <float>alpha)
    else:
        with nogil:
            fnn_dense_forward_f64(<double *>py, <double *>pz, <double *>px, <double *>pw,
                                  <double *>pb, n, i, o, act, alpha)


def dense_backward(dw, db, dx, dz, dy, x, w, y, z, int act, double alpha):
    """dz := dy * act'(.), dw := x.T @ dz, db := sum(dz), dx := dz @ w.T (dw, db, dx may be None).

    dz is scratch of dy's shape and may be dy itself; z (pre-activation) is needed for gelu."""
    cdef int t = _dtype_of(x, "x")
    if cnp.PyArray_NDIM(<cnp.ndarray>x) != 2 or cnp.PyArray_NDIM(<cnp.ndarray>w) != 2:
        raise ValueError(f"Expected 2-D x and w. Received: x.shape={np.shape(x)}, "
                         f"w.shape={np.shape(w)}")
    cdef int64_t n = x.shape[0], i = x.shape[1], o = w.shape[1]
    _check_sizes(n, i, o)
    _check_act(act, alpha)
    if act == FNN_GELU and z is None:
        raise ValueError("Expected z (the pre-activation) for act=gelu. Received: z=None")
    cdef void *px = _ptr(x, "x", t, 2, n, i, False, None)
    cdef void *pw = _ptr(w, "w", t, 2, i, o, False, "x")
    cdef void *pdy = _ptr(dy, "dy", t, 2, n, o, False, "x")
    cdef void *py = _ptr(y, "y", t, 2, n, o, False, "x")
    cdef void *pz = NULL
    if z is not None:
        pz = _ptr(z, "z", t, 2, n, o, False, "x")
    cdef void *pdz = _ptr(dz, "dz", t, 2, n, o, True, "x")
    cdef void *pdw = NULL
    if dw is not None:
        pdw = _ptr(dw, "dw", t, 2, i, o, True, "x")
    cdef void *pdb = NULL
    cdef void *pdx = NULL
    if db is not None:
        pdb = _ptr(db, "db", t, 1, o, 0, True, "x")
    if dx is not None:
        pdx = _ptr(dx, "dx", t, 2, n, i, True, "x")
    ins = (("x", x), ("w", w), ("y", y), ("z", z))
    outs = (("dw", dw), ("db", db), ("dx", dx), ("dz", dz))
    for k, (oname, out) in enumerate(outs):
        for iname, inp in ins:
            _disjoint(oname, out, iname, inp)
        for oname2, out2 in outs[k + 1:]:
            _disjoint(oname, out, oname2, out2)
        if pdz != pdy or oname != "dz":  # dz may be exactly dy, nothing else may touch dy
            _disjoint(oname, out, "dy", dy)
    if t == cnp.NPY_FLOAT32:
        with nogil:
            fnn_dense_backward_f32(<float *>pdw, <float *>pdb, <float *>pdx, <float *>pdz,
                                   <float *>pdy, <float *>px, <float *>pw, <float *>py,
                                   <float *>pz, n, i, o, act, <float>alpha)
    else:
        with nogil:
            fnn_dense_backward_f64(<double *>pdw, <double *>pdb, <double *>pdx, <double *>pdz,
                                   <double *>pdy, <double *>px, <double *>pw, <double *>py,
                                   <double *>pz, n, i, o, act, alpha)


def act_forward(y, x, int act, double alpha):
    """y := act(x), row-wise over the last axis for softmax.  x, y (n, m); y may be x."""
    cdef int t = _dtype_of(x, "x")
    if cnp.PyArray_NDIM(<cnp.ndarray>x) != 2:
        raise ValueError(f"Expected 2-D x. Received: x.shape={np.shape(x)}")
    cdef int64_t n = x.shape[0], m = x.shape[1]
    _check_sizes(n, m, 1)
    _check_act(act, alpha)
    cdef void *px = _ptr(x, "x", t, 2, n, m, False, None)
    cdef void *py = _ptr(y, "y", t, 2, n, m, True, "x")
    if py != px:
        _disjoint("y", y, "x", x)
    if t == cnp.NPY_FLOAT32:
        with nogil:
            fnn_act_forward_f32(<float *>py, <float *>px, n, m, act, <float>alpha)
    else:
        with nogil:
            fnn_act_forward_f64(<double *>py, <double *>px, n, m, act, alpha)


def act_backward(dx, dy, y, x, int act, double alpha):
    """dx := dy * act'(x) from y = act(x) (x is read only for gelu and may be None otherwise)."""
    cdef int t = _dtype_of(dy, "dy")
    if cnp.PyArray_NDIM(<cnp.ndarray>dy) != 2:
        raise ValueError(f"Expected 2-D dy. Received: dy.shape={np.shape(dy)}")
    cdef int64_t n = dy.shape[0], m = dy.shape[1]
    _check_sizes(n, m, 1)
    _check_act(act, alpha)
    if act == FNN_GELU and x is None:
        raise ValueError("Expected x (the pre-activation) for act=gelu. Received: x=None")
    cdef void *pdy = _ptr(dy, "dy", t, 2, n, m, False, None)
    cdef void *py = _ptr(y, "y", t, 2, n, m, False, "dy")
    cdef void *px = NULL
    if x is not None:
        px = _ptr(x, "x", t, 2, n, m, False, "dy")
    cdef void *pdx = _ptr(dx, "dx", t, 2, n, m, True, "dy")
    if pdx != pdy:
        _disjoint("dx", dx, "dy", dy)
    _disjoint("dx", dx, "y", y)
    _disjoint("dx", dx, "x", x)
    if t == cnp.NPY_FLOAT32:
        with nogil:
            fnn_act_backward_f32(<float *>pdx, <float *>pdy, <float *>py, <float *>px, n, m,
                                 act, <float>alpha)
    else:
        with nogil:
            fnn_act_backward_f64(<double *>pdx, <double *>pdy, <double *>py, <double *>px,
                                 n, m, act, alpha)


# ---- losses ------------------------------------------------------------------------------
# One dispatcher serves every loss: `which` picks the kernel pair, `sparse` says whether the
# targets are int64 labels (n,) rather than an array shaped like p.

cdef enum _Loss:
    CCE, SCCE, SOFTMAX_CCE, SOFTMAX_SCCE, BCE, MSE


cdef double _loss(int which, object dp, object p, object t, bint sparse) except? -1:
    cdef int ty = _dtype_of(p, "y_pred")
    if cnp.PyArray_NDIM(<cnp.ndarray>p) != 2:
        raise ValueError(f"Expected 2-D y_pred (batch, classes). Received: y_pred.shape={np.shape(p)}")
    cdef int64_t n = p.shape[0], k = p.shape[1]
    _check_sizes(n, k, 1)
    cdef void *pp = _ptr(p, "y_pred", ty, 2, n, k, False, None)
    cdef void *pt
    if sparse:
        pt = _ptr(t, "labels", cnp.NPY_INT64, 1, n, 0, False, None)
        _check_labels(<int64_t *>pt, n, k)
    else:
        pt = _ptr(t, "y_true", ty, 2, n, k, False, "y_pred")
    cdef void *pdp = NULL
    if dp is not None:
        pdp = _ptr(dp, "grad", ty, 2, n, k, True, "y_pred")
        _disjoint("grad", dp, "y_pred", p)
        _disjoint("grad", dp, "y_true", t)
    cdef double r
    if ty == cnp.NPY_FLOAT32:
        with nogil:
            if which == CCE:
                r = fnn_categorical_crossentropy_backward_f32(<float *>pdp, <float *>pp, <float *>pt, n, k)
            elif which == SCCE:
                r = fnn_sparse_categorical_crossentropy_backward_f32(<float *>pdp, <float *>pp, <int64_t *>pt, n, k)
            elif which == SOFTMAX_CCE:
                r = fnn_softmax_crossentropy_backward_f32(<float *>pdp, <float *>pp, <float *>pt, n, k)
            elif which == SOFTMAX_SCCE:
                r = fnn_sparse_softmax_crossentropy_backward_f32(<float *>pdp, <float *>pp, <int64_t *>pt, n, k)
            elif which == BCE:
                r = fnn_binary_crossentropy_backward_f32(<float *>pdp, <float *>pp, <float *>pt, n, k)
            else:
                r = fnn_mean_squared_error_backward_f32(<float *>pdp, <float *>pp, <float *>pt, n, k)
    else:
        with nogil:
            if which == CCE:
                r = fnn_categorical_crossentropy_backward_f64(<double *>pdp, <double *>pp, <double *>pt, n, k)
            elif which == SCCE:
                r = fnn_sparse_categorical_crossentropy_backward_f64(<double *>pdp, <double *>pp, <int64_t *>pt, n, k)
            elif which == SOFTMAX_CCE:
                r = fnn_softmax_crossentropy_backward_f64(<double *>pdp, <double *>pp, <double *>pt, n, k)
            elif which == SOFTMAX_SCCE:
                r = fnn_sparse_softmax_crossentropy_backward_f64(<double *>pdp, <double *>pp, <int64_t *>pt, n, k)
            elif which == BCE:
                r = fnn_binary_crossentropy_backward_f64(<double *>pdp, <double *>pp, <double *>pt, n, k)
            else:
                r = fnn_mean_squared_error_backward_f64(<double *>pdp, <double *>pp, <double *>pt, n, k)
    return r


# The *_forward kernels are the *_backward ones with dp = NULL (one C code path for both).
def categorical_crossentropy_forward(p, t):
    return _loss(CCE, None, p, t, False)

def categorical_crossentropy_backward(dp, p, t):
    return _loss(CCE, dp, p, t, False)

def sparse_categorical_crossentropy_forward(p, labels):
    return _loss(SCCE, None, p, labels, True)

def sparse_categorical_crossentropy_backward(dp, p, labels):
    return _loss(SCCE, dp, p, labels, True)

def softmax_crossentropy_backward(dz, p, t):
    if dz is None:
        raise ValueError("Expected dz, the gradient buffer. Received: None")
    return _loss(SOFTMAX_CCE, dz, p, t, False)

def sparse_softmax_crossentropy_backward(dz, p, labels):
    if dz is None:
        raise ValueError("Expected dz, the gradient buffer. Received: None")
    return _loss(SOFTMAX_SCCE, dz, p, labels, True)

def binary_crossentropy_forward(p, t):
    return _loss(BCE, None, p, t, False)

def binary_crossentropy_backward(dp, p, t):
    return _loss(BCE, dp, p, t, False)

def mean_squared_error_forward(p, t):
    return _loss(MSE, None, p, t, False)

def mean_squared_error_backward(dp, p, t):
    return _loss(MSE, dp, p, t, False)


# ---- optimizer steps ---------------------------------------------------------------------

cdef int64_t _step_operands(list names, list arrays, void **ptrs) except -1:
    """Check p (first) and its state/gradient arrays: same dtype and size, contiguous,
    pairwise disjoint; None entries stay NULL.  Returns the element count."""
    p = arrays[0]
    cdef int t = _dtype_of(p, names[0])
    cdef int64_t n = cnp.PyArray_SIZE(<cnp.ndarray>p)
    if n < 1:
        raise ValueError(f"Expected a non-empty {names[0]}. Received: {names[0]}.shape={p.shape}")
    cdef int k, j
    for k in range(len(arrays)):
        a = arrays[k]
        ptrs[k] = NULL
        if a is None:
            continue
        # the gradient (last) is read-only input; everything else is written
        ptrs[k] = _ptr(a, names[k], t, 0, n, 0, k < len(arrays) - 1, names[0] if k else None)
        for j in range(k):
            _disjoint(names[k], a, names[j], arrays[j])
    return n


def sgd_step(p, m, g, double lr, double momentum, bint nesterov, double weight_decay):
    """p := p - lr*wd*p; then m is None: p := p - lr g; else m := mu m - lr g,
    p := p + m (nesterov: p := p + mu m - lr g)."""
    cdef void *ptr[3]
    if m is None and momentum != 0:
        raise ValueError(f"Expected a momentum buffer m for momentum={momentum}. Received: m=None")
    cdef int64_t n = _step_operands(["p", "m", "g"], [p, m, g], ptr)
    if p.dtype == np.float32:
        with nogil:
            fnn_sgd_step_f32(<float *>ptr[0], <float *>ptr[1], <float *>ptr[2], n, <float>lr,
                             <float>momentum, nesterov, <float>weight_decay)
    else:
        with nogil:
            fnn_sgd_step_f64(<double *>ptr[0], <double *>ptr[1], <double *>ptr[2], n, lr,
                             momentum, nesterov, weight_decay)


def adagrad_step(p, a, g, double lr, double epsilon, double weight_decay):
    """a := a + g^2;  p := p - lr g / sqrt(a + eps)  (after decoupled weight decay)."""
    cdef void *ptr[3]
    if a is None:
        raise ValueError("Expected the accumulator a. Received: a=None")
    cdef int64_t n = _step_operands(["p", "a", "g"], [p, a, g], ptr)
    if p.dtype == np.float32:
        with nogil:
            fnn_adagrad_step_f32(<float *>ptr[0], <float *>ptr[1], <float *>ptr[2], n,
                                 <float>lr, <float>epsilon, <float>weight_decay)
    else:
        with nogil:
            fnn_adagrad_step_f64(<double *>ptr[0], <double *>ptr[1], <double *>ptr[2], n, lr,
                                 epsilon, weight_decay)


def rmsprop_step(p, v, mom, mg, g, double lr, double rho, double momentum, double epsilon,
                 double weight_decay):
    """v := rho v + (1-rho) g^2; centered: mg := rho mg + (1-rho) g, d := v - mg^2 + eps,
    else d := v + eps; inc := lr g / sqrt(d); mom: mom := mu mom + inc, p -= mom, else p -= inc."""
    cdef void *ptr[5]
    if v is None:
        raise ValueError("Expected the velocity v. Received: v=None")
    cdef int64_t n = _step_operands(["p", "v", "mom", "mg", "g"], [p, v, mom, mg, g], ptr)
    if p.dtype == np.float32:
        with nogil:
            fnn_rmsprop_step_f32(<float *>ptr[0], <float *>ptr[1], <float *>ptr[2],
                                 <float *>ptr[3], <float *>ptr[4], n, <float>lr, <float>rho,
                                 <float>momentum, <float>epsilon, <float>weight_decay)
    else:
        with nogil:
            fnn_rmsprop_step_f64(<double *>ptr[0], <double *>ptr[1], <double *>ptr[2],
                                 <double *>ptr[3], <double *>ptr[4], n, lr, rho, momentum,
                                 epsilon, weight_decay)


def adam_step(p, m, v, vhat, g, double lr, double beta_1, double beta_2, double epsilon,
              double weight_decay, int64_t t):
    """a := lr sqrt(1 - b2^t) / (1 - b1^t); m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2);
    amsgrad: vhat := max(vhat, v) used for v; p := p - a m / (sqrt(v) + eps)."""
    cdef void *ptr[5]
    if m is None or v is None:
        raise ValueError("Expected the moment buffers m and v. Received: None")
    if t < 1:
        raise ValueError(f"Expected the step count t >= 1. Received: t={t}")
    cdef int64_t n = _step_operands(["p", "m", "v", "vhat", "g"], [p, m, v, vhat, g], ptr)
    if p.dtype == np.float32:
        with nogil:
            fnn_adam_step_f32(<float *>ptr[0], <float *>ptr[1], <float *>ptr[2],
                              <float *>ptr[3], <float *>ptr[4], n, <float>lr, <float>beta_1,
                              <float>beta_2, <float>epsilon, <float>weight_decay, t)
    else:
        with nogil:
            fnn_adam_step_f64(<double *>ptr[0], <double *>ptr[1], <double *>ptr[2],
                              <double *>ptr[3], <double *>ptr[4], n, lr, beta_1, beta_2,
                              epsilon, weight_decay, t)


# ---- optimizer steps with a rank-1 gradient a b.T (a dense kernel's, for one sample) --------

cdef int _outer_operands(list names, list arrays, object a, object b, void **ptrs,
                         int64_t *rows, int64_t *cols) except -1:
    """Check p = arrays[0] and its state (written, rows * cols elements each, pairwise
    disjoint; None stays NULL) and the gradient's factors a (rows,), b (cols,); ptrs gets
    p, the state arrays, then a and b.  Returns the dtype."""
    cdef int t = _dtype_of(arrays[0], names[0])
    for name, f in (("a", a), ("b", b)):
        if not cnp.PyArray_Check(f):
            raise TypeError(f"Expected {name} to be a numpy.ndarray. Received: {type(f).__name__}")
    rows[0], cols[0] = cnp.PyArray_SIZE(<cnp.ndarray>a), cnp.PyArray_SIZE(<cnp.ndarray>b)
    if rows[0] < 1 or cols[0] < 1:
        raise ValueError(f"Expected non-empty a and b. Received: a.shape={a.shape}, b.shape={b.shape}")
    cdef int64_t n = rows[0] * cols[0]
    cdef int i, j, count = len(arrays)
    for i in range(count):
        ptrs[i] = NULL
        if arrays[i] is not None:
            ptrs[i] = _ptr(arrays[i], names[i], t, 0, n, 0, True, names[0] if i else None)
            for j in range(i):
                _disjoint(names[i], arrays[i], names[j], arrays[j])
    ptrs[count] = _ptr(a, "a", t, 1, rows[0], 0, False, names[0])
    ptrs[count + 1] = _ptr(b, "b", t, 1, cols[0], 0, False, names[0])
    for i in range(count):
        _disjoint(names[i], arrays[i], "a", a)
        _disjoint(names[i], arrays[i], "b", b)
    return t


def sgd_outer_step(p, m, a, b, double lr, double momentum, bint nesterov, double weight_decay):
    """sgd_step with the gradient g = outer(a, b)."""
    cdef void *ptr[4]
    cdef int64_t rows, cols
    if m is None and momentum != 0:
        raise ValueError(f"Expected a momentum buffer m for momentum={momentum}. Received: m=None")
    t = _outer_operands(["p", "m"], [p, m], a, b, ptr, &rows, &cols)
    if t == cnp.NPY_FLOAT32:
        with nogil:
            fnn_sgd_outer_step_f32(<float *>ptr[0], <float *>ptr[1], <float *>ptr[2], <float *>ptr[3],
                                   rows, cols, <float>lr, <float>momentum, nesterov, <float>weight_decay)
    else:
        with nogil:
            fnn_sgd_outer_step_f64(<double *>ptr[0], <double *>ptr[1], <double *>ptr[2], <double *>ptr[3],
                                   rows, cols, lr, momentum, nesterov, weight_decay)


def adagrad_outer_step(p, acc, a, b, double lr, double epsilon, double weight_decay):
    """adagrad_step with the gradient g = outer(a, b)."""
    cdef void *ptr[4]
    cdef int64_t rows, cols
    if acc is None:
        raise ValueError("Expected the accumulator acc. Received: acc=None")
    t = _outer_operands(["p", "acc"], [p, acc], a, b, ptr, &rows, &cols)
    if t == cnp.NPY_FLOAT32:
        with nogil:
            fnn_adagrad_outer_step_f32(<float *>ptr[0], <float *>ptr[1], <float *>ptr[2], <float *>ptr[3],
                                       rows, cols, <float>lr, <float>epsilon, <float>weight_decay)
    else:
        with nogil:
            fnn_adagrad_outer_step_f64(<double *>ptr[0], <double *>ptr[1], <double *>ptr[2], <double *>ptr[3],
                                       rows, cols, lr, epsilon, weight_decay)


def rmsprop_outer_step(p, v, mom, mg, a, b, double lr, double rho, double momentum,
                       double epsilon, double weight_decay):
    """rmsprop_step with the gradient g = outer(a, b)."""
    cdef void *ptr[6]
    cdef int64_t rows, cols
    if v is None:
        raise ValueError("Expected the velocity v. Received: v=None")
    t = _outer_operands(["p", "v", "mom", "mg"], [p, v, mom, mg], a, b, ptr, &rows, &cols)
    if t == cnp.NPY_FLOAT32:
        with nogil:
            fnn_rmsprop_outer_step_f32(<float *>ptr[0], <float *>ptr[1], <float *>ptr[2], <float *>ptr[3],
                                       <float *>ptr[4], <float *>ptr[5], rows, cols, <float>lr, <float>rho,
                                       <float>momentum, <float>epsilon, <float>weight_decay)
    else:
        with nogil:
            fnn_rmsprop_outer_step_f64(<double *>ptr[0], <double *>ptr[1], <double *>ptr[2], <double *>ptr[3],
                                       <double *>ptr[4], <double *>ptr[5], rows, cols, lr, rho, momentum,
                                       epsilon, weight_decay)


def adam_outer_step(p, m, v, vhat, a, b, double lr, double beta_1, double beta_2, double epsilon,
                    double weight_decay, int64_t t):
    """adam_step with the gradient g = outer(a, b)."""
    cdef void *ptr[6]
    cdef int64_t rows, cols
    if m is None or v is None:
        raise ValueError("Expected the moment buffers m and v. Received: None")
    if t < 1:
        raise ValueError(f"Expected the step count t >= 1. Received: t={t}")
    ty = _outer_operands(["p", "m", "v", "vhat"], [p, m, v, vhat], a, b, ptr, &rows, &cols)
    if ty == cnp.NPY_FLOAT32:
        with nogil:
            fnn_adam_outer_step_f32(<float *>ptr[0], <float *>ptr[1], <float *>ptr[2], <float *>ptr[3],
                                    <float *>ptr[4], <float *>ptr[5], rows, cols, <float>lr, <float>beta_1,
                                    <float>beta_2, <float>epsilon, <float>weight_decay, t)
    else:
        with nogil:
            fnn_adam_outer_step_f64(<double *>ptr[0], <double *>ptr[1], <double *>ptr[2], <double *>ptr[3],
                                    <double *>ptr[4], <double *>ptr[5], rows, cols, lr, beta_1, beta_2,
                                    epsilon, weight_decay, t)


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

LOSS_CODES = {"categorical_crossentropy": FNN_LOSS_CCE,
              "sparse_categorical_crossentropy": FNN_LOSS_SCCE,
              "softmax_crossentropy": FNN_LOSS_SOFTMAX_CCE,
              "sparse_softmax_crossentropy": FNN_LOSS_SOFTMAX_SCCE,
              "binary_crossentropy": FNN_LOSS_BCE, "mean_squared_error": FNN_LOSS_MSE}
OPT_CODES = {"sgd": FNN_OPT_SGD, "adagrad": FNN_OPT_ADAGRAD, "rmsprop": FNN_OPT_RMSPROP,
             "adam": FNN_OPT_ADAM}


cdef class DenseStack:
    """fit's training step for a Sequential of Dense layers as one call into C (the GIL
    released): gather, forward, loss, backward and the optimizer step, with the same kernel
    calls in the same order as the Python step, so the results are bit-identical; except where
    layer 0 is owned by rows per thread (`owns_first_layer`, see fastnn.h): its forward product
    is then summed in per-thread parts, which rounds differently.

    Built by Sequential for one batch size from the arrays it owns (this object keeps them
    alive); every size is checked here, so run() only checks the batch's indices.
      layers: [(w, b, dw, db, y, z, dx, act, alpha)] with None for absent arrays;
      state: up to 3 optimizer arrays in the step kernel's order; hyper: up to 3 scalars;
      part: scratch of (part_threads - 1) x n x (layer 0's width) for the row-owned layer 0."""
    cdef fnn_dense_stack s
    cdef fnn_dense_layer *layer
    cdef object keep
    cdef int dtype
    cdef readonly int64_t batch_size
    cdef int64_t rows
    cdef public object predictions  # the last layer's output buffer, for fit's metrics

    def __cinit__(self, x, t, xb, tb, grad, list layers, str loss, str opt, p, g, list state,
                  list hyper, bint flag, double weight_decay, bint rank1, part=None,
                  int64_t part_threads=0):
        self.layer = NULL
        self.keep = (x, t, xb, tb, grad, layers, p, g, state, part)
        cdef int dt = _dtype_of(p, "p")
        self.dtype = dt
        if not layers or len(state) > 3 or len(hyper) > 3:
            raise ValueError("Expected 1+ layers, at most 3 state arrays and 3 scalars.")
        if loss not in LOSS_CODES or opt not in OPT_CODES:
            raise ValueError(f"Unknown loss {loss!r} or optimizer {opt!r}")
        cdef int64_t n = xb.shape[0], L = len(layers), i, nparams = cnp.PyArray_SIZE(<cnp.ndarray>p)
        self.batch_size = n
        self.rows = x.shape[0]
        self.layer = <fnn_dense_layer *>malloc(L * sizeof(fnn_dense_layer))
        if self.layer == NULL:
            raise MemoryError()
        cdef int64_t width = cnp.PyArray_SIZE(<cnp.ndarray>xb) // n if n else 0
        for i in range(L):
            w, b, dw, db, y, z, dx, act, alpha = layers[i]
            _check_act(act, alpha)
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
            self.layer[i].act, self.layer[i].alpha = act, alpha
            width = fo
        self.s.n_layers = L
        self.s.layer = self.layer
        cdef int64_t k = width, x_elems = cnp.PyArray_SIZE(<cnp.ndarray>x) // self.rows
        self.s.x = _ptr(x, "x", dt, 0, self.rows * x_elems, 0, False, "p")
        self.s.xb = _ptr(xb, "xb", dt, 0, n * x_elems, 0, True, "p")
        self.s.x_row_bytes = x_elems * x.dtype.itemsize
        if x_elems != self.layer[0].in_:
            raise ValueError(f"Expected samples of {self.layer[0].in_} values. Received: x.shape={x.shape}")
        cdef bint sparse = loss in ("sparse_categorical_crossentropy", "sparse_softmax_crossentropy")
        if len(t) != self.rows:
            raise ValueError(f"Expected {self.rows} targets. Received: {len(t)}")
        self.s.t = _ptr(t, "t", cnp.NPY_INT64 if sparse else dt, 0, self.rows * (1 if sparse else k), 0, False, None)
        self.s.tb = _ptr(tb, "tb", cnp.NPY_INT64 if sparse else dt, 0, n * (1 if sparse else k), 0, True, None)
        self.s.t_row_bytes = 8 if sparse else k * x.dtype.itemsize
        self.s.grad = _ptr(grad, "grad", dt, 2, n, k, True, "p")
        self.s.loss, self.s.opt = LOSS_CODES[loss], OPT_CODES[opt]
        self.s.p = _ptr(p, "p", dt, 0, nparams, 0, True, None)
        self.s.g = _ptr(g, "g", dt, 0, nparams, 0, True, "p")
        for i in range(3):
            self.s.state[i] = NULL
            self.s.hyper[i] = 0.0
            if i < len(state) and state[i] is not None:
                self.s.state[i] = _ptr(state[i], "state", dt, 0, nparams, 0, True, "p")
            if i < len(hyper):
                self.s.hyper[i] = hyper[i]
        self.s.n_params = nparams
        self.s.flag, self.s.wd = flag, weight_decay
        self.s.rank1 = rank1
        self.s.part, self.s.part_threads = NULL, 0
        if part is not None and part_threads > 1:  # layer 0 owned by rows: see fastnn.h
            self.s.part = _ptr(part, "part", dt, 0, (part_threads - 1) * n * self.layer[0].out,
                               0, True, "p")
            self.s.part_threads = part_threads

    def __dealloc__(self):
        free(self.layer)

    @property
    def owns_first_layer(self):
        """Whether run() now computes layer 0 with each thread owning rows of its kernel."""
        return bool(fnn_dense_stack_owns(&self.s, self.batch_size))

    def run(self, idx, double lr, int64_t t):
        """One step on the samples idx (int64, batch_size of them); returns the loss."""
        cdef const int64_t *pi = <const int64_t *>_ptr(idx, "idx", cnp.NPY_INT64, 1,
                                                       self.batch_size, 0, False, None)
        cdef int64_t i
        for i in range(self.batch_size):
            if pi[i] < 0 or pi[i] >= self.rows:
                raise ValueError(f"Expected idx in [0, {self.rows}). Received: idx[{i}]={pi[i]}")
        cdef double loss
        if self.dtype == cnp.NPY_FLOAT32:
            with nogil:
                loss = fnn_dense_stack_step_f32(&self.s, pi, self.batch_size, lr, t)
        else:
            with nogil:
                loss = fnn_dense_stack_step_f64(&self.s, pi, self.batch_size, lr, t)
        return loss


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
