"""Reference backend: every compiled kernel written plainly in NumPy.

Same names and argument order as `fastnn._kernels`; outputs are written into the
caller's arrays the same way.  Written for clarity, not speed: this is the oracle the
tests compare the C kernels against (and itself is checked by finite differences), and
the backend `fastnn.set_backend("numpy")` selects.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Sequence, cast

import numpy as np

from fastnn import _codes

if TYPE_CHECKING:
    from numpy.typing import NDArray

NAME = "numpy"

ACT_CODES = _codes.ACTIVATIONS
(LINEAR, RELU, SIGMOID, TANH, SOFTMAX, LEAKY_RELU, ELU, GELU, RELU_GENERAL, GELU_TANH, SILU,
 SOFTPLUS, SOFTSIGN, SELU, HARD_SIGMOID, HARD_SILU, EXPONENTIAL, RELU6, MISH,
 LOG_SOFTMAX, HARD_TANH, HARD_SHRINK, SOFT_SHRINK, TANH_SHRINK, THRESHOLD, LOG_SIGMOID, CELU,
 SQUAREPLUS, SPARSE_PLUS, SPARSE_SIGMOID, SPARSEMAX) = range(31)
assert list(ACT_CODES.values()) == list(range(31))
_CLIP = _codes.EPSILON
_erf = np.vectorize(math.erf, otypes=[np.float64])
SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
GELU_K, GELU_C = math.sqrt(2 / math.pi), 0.044715  # gelu's tanh form


def _param(params: Sequence[float], dtype: Any) -> list[Any]:
    """The FNN_ACT_PARAMS parameters (missing ones 0) as scalars of dtype, as the kernels
    convert them."""
    if len(params) > _codes.ACT_PARAMS:
        raise ValueError(f"Expected at most {_codes.ACT_PARAMS} activation parameters. "
                         f"Received: params={tuple(params)}")
    return [dtype.type(params[k]) if k < len(params) else dtype.type(0)
            for k in range(_codes.ACT_PARAMS)]


def _sigmoid(v: NDArray[Any]) -> NDArray[Any]:
    # 1 / (1 + e^-v) without overflow: e^-|v| never exceeds 1
    e = np.exp(-np.abs(v))
    return np.where(v >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(v: NDArray[Any]) -> NDArray[Any]:
    """log(1 + e^v) = max(v, 0) + log1p(e^-|v|)."""
    return np.maximum(v, 0) + np.log1p(np.exp(-np.abs(v)))


def _relu_general(v: NDArray[Any], slope: Any, hi: Any, t: Any) -> NDArray[Any]:
    """Keras' relu(v, negative_slope, max_value (inf: None), threshold)."""
    lo = -np.inf if np.isinf(hi) else 0
    return np.where(v > t, np.minimum(np.maximum(v, lo), hi), slope * (v - t))


def _sparsemax(v: NDArray[Any]) -> NDArray[Any]:
    """Row-wise sparsemax by sorting (Martins & Astudillo 2016, Algorithm 1, as Keras' backends
    write it once the threshold is fixed, keras-team/keras#23425): with z sorted descending and
    c its cumulative sums (in float64), the support is the first k with 1 + r z_r > c_r and
    tau = (c_k - 1) / k; y = max(v - tau, 0).  Rows with NaN or +inf, or only -inf: NaN."""
    z = -np.sort(-v, axis=1)
    c = np.cumsum(z, axis=1, dtype=np.float64)
    r = np.arange(1, v.shape[1] + 1)
    with np.errstate(invalid="ignore"):
        k = (1 + r * z.astype(np.float64) > c).sum(axis=1, keepdims=True)
        tau = (np.take_along_axis(c, np.maximum(k, 1) - 1, axis=1) - 1) / np.maximum(k, 1)
        y = np.maximum(v.astype(np.float64) - tau, 0).astype(v.dtype)
    bad = np.isnan(v).any(axis=1) | np.isposinf(v).any(axis=1) | np.isneginf(v).all(axis=1)
    y[bad] = np.nan
    return y


def _act(v: NDArray[Any], act: int, params: Sequence[float]) -> NDArray[Any]:
    """act(v) for a 2-D array v ((log_)softmax over the last axis)."""
    p = _param(params, v.dtype)
    if act == LINEAR:
        return v
    if act == RELU:
        return np.maximum(v, 0)
    if act == SIGMOID:
        return _sigmoid(v)
    if act == TANH:
        return np.tanh(v)
    if act == SOFTMAX:
        e = np.exp(v - v.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if act == LEAKY_RELU:
        return np.where(v > 0, v, p[0] * v)
    if act == ELU:
        return np.where(v > 0, v, p[0] * np.expm1(np.minimum(v, 0)))
    if act == GELU:
        return 0.5 * v * (1 + _erf(v / math.sqrt(2)).astype(v.dtype))
    if act == RELU_GENERAL:
        return _relu_general(v, *p)
    if act == GELU_TANH:
        # Keras' v/2 (1 + tanh(u)) written as v sigmoid(2u): no cancellation for v < -3
        return v * _sigmoid(2 * GELU_K * (v + GELU_C * v ** 3))
    if act == SILU:
        return v * _sigmoid(v)
    if act == SOFTPLUS:
        return _softplus(v)
    if act == SOFTSIGN:
        return v / (1 + np.abs(v))
    if act == SELU:
        return SELU_SCALE * np.where(v > 0, v, SELU_ALPHA * np.expm1(np.minimum(v, 0)))
    if act == HARD_SIGMOID:
        return np.clip(v + 3, 0, 6) / 6
    if act == HARD_SILU:
        return v * (np.clip(v + 3, 0, 6) / 6)
    if act == EXPONENTIAL:
        return np.exp(v)
    if act == RELU6:
        return np.clip(v, 0, 6)
    if act == MISH:
        return v * np.tanh(_softplus(v))
    if act == LOG_SOFTMAX:  # the sum in float64, as the kernels
        s = v - v.max(axis=1, keepdims=True)
        return s - np.log(np.exp(s).sum(axis=1, keepdims=True, dtype=np.float64).astype(v.dtype))
    # Keras 3's further element-wise activations (issue #11); NaN passes through each
    if act == HARD_TANH:
        return np.clip(v, -1, 1)
    if act == HARD_SHRINK:  # |v| > threshold: v, else 0
        return np.where(np.abs(v) <= p[0], 0, v)
    if act == SOFT_SHRINK:  # |v| > t: v - sign(v) t, else 0
        return np.where(np.abs(v) <= p[0], 0, v - np.copysign(p[0], v))
    if act == TANH_SHRINK:
        return v - np.tanh(v)
    if act == THRESHOLD:  # v > threshold: v, else default_value
        return np.where(v <= p[0], p[1], v)
    if act == LOG_SIGMOID:  # -softplus(-v) = min(v, 0) - log1p(e^-|v|)
        return np.minimum(v, 0) - np.log1p(np.exp(-np.abs(v)))
    if act == CELU:  # alpha (e^(v / alpha) - 1) for v <= 0
        return np.where(v > 0, v, p[0] * np.expm1(np.minimum(v, 0) / p[0]))
    if act == SQUAREPLUS:  # (v + s) / 2, s = sqrt(v^2 + b); v < 0: b / (2 (s + |v|)), the same
        s = np.sqrt(v * v + p[0])
        return np.where(v >= 0, (v + s) * 0.5, p[0] / (2 * (s + np.abs(v))))
    if act == SPARSE_PLUS:
        return np.where(v <= -1, 0, np.where(v >= 1, v, (v + 1) * (v + 1) * 0.25))
    if act == SPARSE_SIGMOID:
        return np.clip(v + 1, 0, 2) * 0.5
    if act == SPARSEMAX:
        return _sparsemax(v)
    raise ValueError(f"Expected act to be an activation code in {sorted(ACT_CODES.values())}. "
                     f"Received: act={act}")


def _act_grad(dy: NDArray[Any], y: NDArray[Any], x: NDArray[Any] | None, act: int,
              params: Sequence[float]) -> NDArray[Any]:
    """dy * act'(.) written from the output y (and the pre-activation x for the codes of
    _codes.ACT_NEEDS_X)."""
    p = _param(params, dy.dtype)
    if act == LINEAR:
        return dy
    if act == RELU:
        return np.where(y > 0, dy, 0)
    if act == SIGMOID:
        return dy * y * (1 - y)
    if act == TANH:
        return dy * (1 - y * y)
    if act == SOFTMAX:  # Jacobian-vector product: y * (dy - <dy, y>)
        return y * (dy - (dy * y).sum(axis=1, keepdims=True))
    if act == LEAKY_RELU:
        return np.where(y > 0, dy, p[0] * dy)
    if act == ELU:  # alpha (e^x - 1) has derivative alpha e^x = y + alpha
        return np.where(y > 0, dy, dy * (y + p[0]))
    if act == SOFTPLUS:  # sigmoid(x) = 1 - e^-y
        return dy * -np.expm1(-y)
    if act == SOFTSIGN:  # 1 / (1 + |x|)^2 = (1 - |y|)^2
        return dy * (1 - np.abs(y)) ** 2
    if act == SELU:  # x <= 0: scale alpha e^x = y + scale alpha
        return np.where(y > 0, dy * SELU_SCALE, dy * (y + SELU_SCALE * SELU_ALPHA))
    if act == HARD_SIGMOID:
        return np.where((y > 0) & (y < 1), dy / 6, 0)
    if act == EXPONENTIAL:
        return dy * y
    if act == RELU6:
        return np.where((y > 0) & (y < 6), dy, 0)
    if act == LOG_SOFTMAX:  # dy - e^y sum(dy), the sum in float64 as the kernels
        return dy - np.exp(y) * dy.sum(axis=1, keepdims=True, dtype=np.float64).astype(dy.dtype)
    if act == HARD_TANH:
        return np.where((y > -1) & (y < 1), dy, 0)
    if act in (HARD_SHRINK, SOFT_SHRINK):  # 1 where |x| > threshold (>= 0): where y != 0
        return np.where(y != 0, dy, 0)
    if act == LOG_SIGMOID:  # sigmoid(-x) = 1 - e^y
        return dy * -np.expm1(y)
    if act == CELU:  # x <= 0: e^(x / alpha) = y / alpha + 1
        return np.where(y > 0, dy, dy * (y * (1 / p[0]) + 1))
    if act == SQUAREPLUS:  # (1 + x / s) / 2 = y / s = y^2 / (y^2 + b / 4)
        return dy * (y * y / (y * y + p[0] / 4))
    if act == SPARSE_PLUS:  # (x + 1) / 2 = sqrt(y) inside (-1, 1), 0 below, 1 above
        return dy * np.minimum(np.sqrt(y), 1)
    if act == SPARSE_SIGMOID:
        return np.where((y > 0) & (y < 1), dy * 0.5, 0)
    if act == SPARSEMAX:  # J = diag(s) - s s^T / |S|, s = [y > 0]: s (dy - mean_S dy)
        s = y > 0
        k = s.sum(axis=1, keepdims=True)
        total = np.where(s, dy, 0).sum(axis=1, keepdims=True, dtype=np.float64)
        mean = (total / np.maximum(k, 1)).astype(dy.dtype)
        return np.where(s, dy - mean, 0)
    x = cast("NDArray[Any]", x)  # the callers of the codes below pass the pre-activation
    if act == GELU:  # Phi(x) + x phi(x)
        cdf = 0.5 * (1 + _erf(x / math.sqrt(2)).astype(x.dtype))
        return dy * (cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi))
    if act == RELU_GENERAL:  # x > t: 1 strictly inside (lo, hi), else 0; x <= t: slope
        slope, hi, t = p
        lo = -np.inf if np.isinf(hi) else 0
        return np.where(x > t, np.where((x > lo) & (x < hi), dy, 0), slope * dy)
    if act == GELU_TANH:
        s = _sigmoid(2 * GELU_K * (x + GELU_C * x ** 3))  # s + x 2 s (1 - s) du/dx
        return dy * (s + x * s * (1 - s) * (2 * GELU_K) * (1 + 3 * GELU_C * x * x))
    if act == SILU:  # s (1 + x (1 - s))
        s = _sigmoid(x)
        return dy * (s * (1 + x * (1 - s)))
    if act == HARD_SILU:
        return dy * np.where(x < -3, 0, np.where(x > 3, 1, (2 * x + 3) / 6))
    if act == MISH:  # tanh(sp) + x (1 - tanh(sp)^2) sigmoid(x)
        th = np.tanh(_softplus(x))
        return dy * (th + x * (1 - th * th) * _sigmoid(x))
    if act == TANH_SHRINK:  # 1 - (1 - tanh(x)^2)
        return dy * np.tanh(x) ** 2
    if act == THRESHOLD:  # 1 where x > threshold
        return np.where(x > p[0], dy, 0)
    raise ValueError(f"Expected act to be an activation code. Received: act={act}")


# ---- dense and activation ------------------------------------------------------------------

def dense_forward(y: NDArray[Any], z: NDArray[Any] | None, x: NDArray[Any], w: NDArray[Any],
                  b: NDArray[Any] | None, act: int, params: Sequence[float]) -> None:
    """y := act(x @ w + b); z (or None) receives x @ w + b."""
    pre = x @ w
    if b is not None:
        pre += b
    if z is not None:
        z[...] = pre
    y[...] = _act(pre, act, params)


def dense_backward(dw: NDArray[Any] | None, db: NDArray[Any] | None, dx: NDArray[Any] | None,
                   dz: NDArray[Any], dy: NDArray[Any], x: NDArray[Any], w: NDArray[Any],
                   y: NDArray[Any], z: NDArray[Any] | None, act: int,
                   params: Sequence[float]) -> None:
    """dz := dy * act'(.), dw := x.T @ dz, db := sum(dz), dx := dz @ w.T."""
    dz[...] = _act_grad(dy, y, z, act, params)
    if dw is not None:
        dw[...] = x.T @ dz
    if db is not None:
        db[...] = dz.sum(axis=0)
    if dx is not None:
        dx[...] = dz @ w.T


def act_forward(y: NDArray[Any], x: NDArray[Any], act: int, params: Sequence[float]) -> None:
    y[...] = _act(x, act, params)


def act_backward(dx: NDArray[Any], dy: NDArray[Any], y: NDArray[Any], x: NDArray[Any] | None,
                 act: int, params: Sequence[float]) -> None:
    dx[...] = _act_grad(dy, y, x, act, params)


def gather_rows(out: NDArray[Any], x: NDArray[Any], idx: NDArray[Any]) -> None:
    """out := x[idx] along the first axis."""
    np.take(x, idx, axis=0, out=out)


# ---- normalization and PReLU (src_c/norm.inc) ---------------------------------------------

def batchnorm_forward(y: NDArray[Any], mean: NDArray[Any], var: NDArray[Any], x: NDArray[Any],
                      gamma: NDArray[Any] | None, beta: NDArray[Any] | None, epsilon: float,
                      training: bool) -> None:
    """y := (x - mean) * gamma / sqrt(var + epsilon) + beta over the rows of x; training:
    mean, var := the batch's (biased variance, as Keras' ops.moments), else read."""
    if training:
        x64 = x.astype(np.float64)
        mu = x64.mean(axis=0)
        mean[...] = mu
        var[...] = ((x64 - mu) ** 2).mean(axis=0)
    g = (1 if gamma is None else gamma) / np.sqrt(var + x.dtype.type(epsilon))
    y[...] = (x - mean) * g + (0 if beta is None else beta)


def batchnorm_backward(dx: NDArray[Any], dgamma: NDArray[Any], dbeta: NDArray[Any],
                       dy: NDArray[Any], x: NDArray[Any], mean: NDArray[Any], var: NDArray[Any],
                       gamma: NDArray[Any] | None, epsilon: float) -> None:
    """The gradient through the batch statistics: dbeta := sum dy, dgamma := sum dy xhat,
    dx := gamma / sqrt(var + eps) / n * (n dy - dbeta - xhat dgamma)."""
    n = x.shape[0]
    inv = 1 / np.sqrt(var + x.dtype.type(epsilon))
    xhat = (x - mean) * inv
    db = dy.sum(axis=0, dtype=np.float64)
    dg = (dy.astype(np.float64) * xhat).sum(axis=0)
    dbeta[...] = db
    dgamma[...] = dg
    g = (1 if gamma is None else gamma) * inv / x.dtype.type(n)
    dx[...] = g * (n * dy - dbeta - xhat * dgamma)


def layernorm_forward(y: NDArray[Any], mean: NDArray[Any], rstd: NDArray[Any], x: NDArray[Any],
                      gamma: NDArray[Any] | None, beta: NDArray[Any] | None,
                      epsilon: float) -> None:
    """Per row: mean, rstd := 1 / sqrt(var + epsilon); y := (x - mean) rstd gamma + beta."""
    x64 = x.astype(np.float64)
    mu = x64.mean(axis=1)
    mean[...] = mu
    rstd[...] = 1 / np.sqrt(((x64 - mu[:, None]) ** 2).mean(axis=1) + epsilon)
    y[...] = ((x - mean[:, None]) * rstd[:, None] * (1 if gamma is None else gamma)
              + (0 if beta is None else beta))


def layernorm_backward(dx: NDArray[Any], dgamma: NDArray[Any] | None, dbeta: NDArray[Any] | None,
                       dy: NDArray[Any], x: NDArray[Any], mean: NDArray[Any], rstd: NDArray[Any],
                       gamma: NDArray[Any] | None) -> None:
    """xhat := (x - mean) rstd, g := dy gamma; dx := rstd (g - mean(g) - xhat mean(g xhat))."""
    xhat = (x - mean[:, None]) * rstd[:, None]
    if dgamma is not None:
        dgamma[...] = (dy.astype(np.float64) * xhat).sum(axis=0)
    if dbeta is not None:
        dbeta[...] = dy.sum(axis=0, dtype=np.float64)
    g = dy * (1 if gamma is None else gamma)
    dx[...] = rstd[:, None] * (g - g.mean(axis=1, keepdims=True)
                               - xhat * (g * xhat).mean(axis=1, keepdims=True))


def matmul_forward(c: NDArray[Any], a: NDArray[Any], b: NDArray[Any],
                   trans_a: bool = False) -> None:
    """c := op(a) @ b; op(a) is a, or a.T when trans_a."""
    c[...] = (a.T if trans_a else a) @ b


def prelu_forward(y: NDArray[Any], x: NDArray[Any], alpha: NDArray[Any]) -> None:
    """y := x > 0 ? x : alpha x (alpha per column)."""
    y[...] = np.where(x > 0, x, alpha * x)


def prelu_backward(dx: NDArray[Any], dalpha: NDArray[Any] | None, dy: NDArray[Any],
                   x: NDArray[Any], alpha: NDArray[Any]) -> None:
    """dalpha := sum_rows(dy min(x, 0)); dx := dy (x > 0 ? 1 : alpha)."""
    if dalpha is not None:
        dalpha[...] = (dy.astype(np.float64) * np.minimum(x, 0)).sum(axis=0)
    dx[...] = np.where(x > 0, dy, alpha * dy)


# ---- losses: per-sample values l (n,) and their gradients d l_i / d p_i (n, k) -------------
# Keras' formulas over the last axis (see fnn_loss_backward in src_c/fastnn.h); each takes
# (p, t) and returns (l, g).  loss_backward weights and averages them.

def _clip_and_mask(q: NDArray[Any], hi: float = 1 - _CLIP) -> tuple[NDArray[Any], NDArray[Any]]:
    return np.clip(q, _CLIP, hi), (q >= _CLIP) & (q <= hi)


def _cce(p: NDArray[Any], t: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """Keras' categorical crossentropy from probabilities:
    q = p / sum(p), l = -sum t log clip(q); dl/dp through both the clip and the normalisation."""
    s = p.sum(axis=1, keepdims=True)
    q = p / s
    c, inside = _clip_and_mask(q)
    gq = np.where(inside, -t / c, 0).astype(p.dtype)
    return -(t * np.log(c)).sum(axis=1), (gq - (gq * q).sum(axis=1, keepdims=True)) / s


def _one_hot(labels: NDArray[Any], p: NDArray[Any]) -> NDArray[Any]:
    t = np.zeros_like(p)
    t[np.arange(len(labels)), labels] = 1
    return t


def _softmax_cce(p: NDArray[Any], t: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """p = softmax(logits); the gradient w.r.t. the logits: p * sum(t) - t."""
    return _cce(p, t)[0], p * t.sum(axis=1, keepdims=True) - t


def _bce(p: NDArray[Any], t: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """l = mean -(t log c + (1 - t) log(1 - c)), c = clip(p)."""
    c, inside = _clip_and_mask(p)
    g = np.where(inside, -t / c + (1 - t) / (1 - c), 0) / p.shape[1]
    return -(t * np.log(c) + (1 - t) * np.log(1 - c)).mean(axis=1), g


def _sigmoid_bce(z: NDArray[Any], t: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """From logits z: l = mean softplus(z) - t z (= -t log sigmoid(z) - (1 - t) log sigmoid(-z));
    the gradient w.r.t. z: (sigmoid(z) - t) / k."""
    return (_softplus(z) - t * z).mean(axis=1), (_act(z, SIGMOID, ()) - t) / z.shape[1]


def _mse(p: NDArray[Any], t: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """l = mean (p - t)^2."""
    d = p - t
    return (d * d).mean(axis=1), 2 * d / p.shape[1]


def _mae(p: NDArray[Any], t: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """l = mean |p - t|."""
    return np.abs(p - t).mean(axis=1), np.sign(p - t) / p.shape[1]


def _huber(p: NDArray[Any], t: NDArray[Any], delta: float = 1.0
           ) -> tuple[NDArray[Any], NDArray[Any]]:
    """e = p - t, l = mean (|e| <= delta ? e^2 / 2 : delta |e| - delta^2 / 2)."""
    e = p - t
    delta, half = p.dtype.type(delta), p.dtype.type(0.5)
    quad = np.abs(e) <= delta
    l = np.where(quad, half * e * e, delta * np.abs(e) - half * delta * delta).mean(axis=1)
    return l, np.where(quad, e, delta * np.sign(e)) / p.shape[1]


def _log_cosh(p: NDArray[Any], t: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """Keras' form: e = p - t, l = mean e + softplus(-2 e) - log 2; d/de = tanh(e)."""
    e = p - t
    return (e + _softplus(-2 * e) - p.dtype.type(math.log(2))).mean(axis=1), np.tanh(e) / p.shape[1]


def _kld(p: NDArray[Any], t: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """l = sum tc log(tc / pc), tc = clip(t, eps, 1), pc = clip(p, eps, 1)."""
    tc = np.clip(t, _CLIP, 1)
    pc, inside = _clip_and_mask(p, 1.0)
    return (tc * np.log(tc / pc)).sum(axis=1), np.where(inside, -tc / pc, 0)


def _poisson(p: NDArray[Any], t: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """l = mean p - t log(p + eps)."""
    q = p + p.dtype.type(_CLIP)
    return (p - t * np.log(q)).mean(axis=1), (1 - t / q) / p.shape[1]


def _hinge(p: NDArray[Any], t: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """y = 2 t - 1 if every target is 0 or 1 (Keras' conversion), else t;
    l = mean max(1 - y p, 0)."""
    y = 2 * t - 1 if np.all((t == 0) | (t == 1)) else t
    m = 1 - y * p
    return np.maximum(m, 0).mean(axis=1), np.where(m > 0, -y, 0) / p.shape[1]


def _categorical_hinge(p: NDArray[Any], t: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """l = max(neg - pos + 1, 0), pos = sum t p, neg = max (1 - t) p; the max's gradient shared
    among its ties (as JAX's)."""
    v = (1 - t) * p
    neg = v.max(axis=1, keepdims=True)
    at_max = (v == neg).astype(p.dtype)
    l = neg[:, 0] - (t * p).sum(axis=1) + 1
    g = -t + (1 - t) * at_max / at_max.sum(axis=1, keepdims=True)
    return np.maximum(l, 0), np.where((l > 0)[:, None], g, 0)


def _cosine(p: NDArray[Any], t: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """l = -sum t_hat p_hat, x_hat = x min(1 / |x|, 1 / eps) (Keras' l2 normalize)."""
    big = p.dtype.type(1 / _CLIP)
    with np.errstate(divide="ignore"):
        rp = 1 / np.sqrt((p * p).sum(axis=1, keepdims=True))
        rt = np.minimum(1 / np.sqrt((t * t).sum(axis=1, keepdims=True)), big)
    p_norm = rp < big
    rp = np.where(p_norm, rp, big)
    t_hat, p_hat = t * rt, p * rp
    l = -(t_hat * p_hat).sum(axis=1)
    # |p| > eps: d l/dp = -(t_hat - (t_hat . p_hat) p_hat) / |p|; else -t_hat / eps
    return l, np.where(p_norm, -(t_hat + l[:, None] * p_hat) * rp, -t_hat * big)


def _mape(p: NDArray[Any], t: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """l = 100 mean |t - p| / max(|t|, eps)."""
    den = np.maximum(np.abs(t), p.dtype.type(_CLIP))
    return 100 * (np.abs(p - t) / den).mean(axis=1), 100 * np.sign(p - t) / den / p.shape[1]


def _msle(p: NDArray[Any], t: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """e = log(max(p, eps) + 1) - log(max(t, eps) + 1), l = mean e^2 (no gradient where
    p <= eps)."""
    eps = p.dtype.type(_CLIP)
    pc = np.maximum(p, eps)
    e = np.log(pc + 1) - np.log(np.maximum(t, eps) + 1)
    return (e * e).mean(axis=1), np.where(p > eps, 2 * e / (pc + 1), 0) / p.shape[1]


def _squared_hinge(p: NDArray[Any], t: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """y as _hinge's, l = mean max(1 - y p, 0)^2."""
    y = 2 * t - 1 if np.all((t == 0) | (t == 1)) else t
    m = np.maximum(1 - y * p, 0)
    return (m * m).mean(axis=1), -2 * y * m / p.shape[1]


# each (p, t) -> (l, g); the sparse ones run as the dense ones on one-hot targets
_LOSSES: dict[str, Callable[..., tuple[NDArray[Any], NDArray[Any]]]] = {
    "categorical_crossentropy": _cce, "softmax_crossentropy": _softmax_cce,
    "binary_crossentropy": _bce, "mean_squared_error": _mse, "mean_absolute_error": _mae,
    "huber": _huber, "log_cosh": _log_cosh, "kl_divergence": _kld, "poisson": _poisson,
    "hinge": _hinge, "categorical_hinge": _categorical_hinge, "cosine_similarity": _cosine,
    "sigmoid_binary_crossentropy": _sigmoid_bce, "mean_absolute_percentage_error": _mape,
    "mean_squared_logarithmic_error": _msle, "squared_hinge": _squared_hinge}
_LOSS_NAMES = {code: name for name, code in _codes.LOSSES.items()}
_FUSED = ("softmax_crossentropy", "sparse_softmax_crossentropy")


def loss_backward(dp: NDArray[Any] | None, p: NDArray[Any], t: NDArray[Any], loss: int,
                  sw: NDArray[Any] | None = None, per_sample: NDArray[Any] | None = None) -> float:
    """sum_i sw_i l_i / n for the loss `loss` (a code of fastnn/_codes.py LOSSES) of p against
    t (int64 labels for the sparse ones), sw (n,) or None (ones); writes dp := d(that) / d p
    unless dp is None (the fused softmax ones: required, w.r.t. the logits) and per_sample := l
    unless None."""
    return _weighted_loss(dp, p, t, loss, sw, per_sample, {})


def _weighted_loss(dp: NDArray[Any] | None, p: NDArray[Any], t: NDArray[Any], loss: int,
                   sw: NDArray[Any] | None, per_sample: NDArray[Any] | None,
                   hyper: dict[str, float]) -> float:
    name = _LOSS_NAMES.get(loss)
    if name is None:
        raise ValueError(f"Expected loss to be a loss code in {sorted(_LOSS_NAMES)}. "
                         f"Received: loss={loss}")
    if dp is None and name in _FUSED:
        raise ValueError("Expected dz, the gradient buffer. Received: None")
    if name in _codes.SPARSE_LOSSES:
        t, name = _one_hot(t, p), name.replace("sparse_", "")
    n = p.shape[0]
    l, g = _LOSSES[name](p, t, **hyper)
    w = np.ones(n, p.dtype) if sw is None else sw
    if dp is not None:
        dp[...] = g * (w / p.dtype.type(n))[:, None]
    if per_sample is not None:
        per_sample[...] = l
    return float((w.astype(np.float64) * l).sum() / n)


def huber_backward(dp: NDArray[Any] | None, p: NDArray[Any], t: NDArray[Any], delta: float,
                   sw: NDArray[Any] | None = None, per_sample: NDArray[Any] | None = None
                   ) -> float:
    """loss_backward for the Huber loss with its delta (> 0)."""
    if not delta > 0:
        raise ValueError(f"Expected delta > 0. Received: delta={delta}")
    return _weighted_loss(dp, p, t, _codes.LOSSES["huber"], sw, per_sample, {"delta": delta})


# ---- optimizers (Keras 3 rules, see struct fnn_optimizer in src_c/fastnn.h) ---------------

def _scalars(p: NDArray[Any], *values: float) -> list[Any]:
    return [p.dtype.type(v) for v in values]


def _sgd(p: NDArray[Any], g: NDArray[Any], s: dict[str, NDArray[Any]], o: OptimizerStep) -> None:
    lr, mu, wd = _scalars(p, o.learning_rate, o.momentum, o.weight_decay)
    p *= 1 - lr * wd
    m = s.get("momentums")
    if m is None:
        p -= lr * g
        return
    m[...] = mu * m - lr * g
    p += (mu * m - lr * g) if o.nesterov else m


def _adagrad(p: NDArray[Any], g: NDArray[Any], s: dict[str, NDArray[Any]],
             o: OptimizerStep) -> None:
    lr, eps, wd = _scalars(p, o.learning_rate, o.epsilon, o.weight_decay)
    a = s["accumulators"]
    p *= 1 - lr * wd
    a += g * g
    p -= lr * g / np.sqrt(a + eps)


def _rmsprop(p: NDArray[Any], g: NDArray[Any], s: dict[str, NDArray[Any]],
             o: OptimizerStep) -> None:
    lr, rho, mu, eps, wd = _scalars(p, o.learning_rate, o.rho, o.momentum, o.epsilon,
                                    o.weight_decay)
    v, mom, mg = s["velocities"], s.get("momentums"), s.get("average_gradients")
    p *= 1 - lr * wd
    v[...] = rho * v + (1 - rho) * g * g
    if mg is not None:
        mg[...] = rho * mg + (1 - rho) * g
        denominator = v - mg * mg + eps
    else:
        denominator = v + eps
    increment = lr * g / np.sqrt(denominator)
    if mom is not None:
        mom[...] = mu * mom + increment
        increment = mom
    p -= increment


def _adam(p: NDArray[Any], g: NDArray[Any], s: dict[str, NDArray[Any]], o: OptimizerStep) -> None:
    t = o.iterations
    a = o.learning_rate * math.sqrt(1 - o.beta_2 ** t) / (1 - o.beta_1 ** t)
    lr, b1, b2, eps, wd, a = _scalars(p, o.learning_rate, o.beta_1, o.beta_2, o.epsilon,
                                      o.weight_decay, a)
    m, v, vhat = s["momentums"], s["velocities"], s.get("velocity_hats")
    p *= 1 - lr * wd
    m += (g - m) * (1 - b1)
    v += (g * g - v) * (1 - b2)
    vv = v
    if vhat is not None:
        np.maximum(vhat, v, out=vhat)
        vv = vhat
    p -= a * m / (np.sqrt(vv) + eps)


def _nadam(p: NDArray[Any], g: NDArray[Any], s: dict[str, NDArray[Any]], o: OptimizerStep) -> None:
    t, b1 = o.iterations, o.beta_1
    u_t, u_t1 = b1 * (1 - 0.5 * 0.96 ** t), b1 * (1 - 0.5 * 0.96 ** (t + 1))
    pt, pt1 = o.u_product, o.u_product * u_t1
    lr, b1, b2, eps, wd, cm, cg, cv = _scalars(
        p, o.learning_rate, b1, o.beta_2, o.epsilon, o.weight_decay, u_t1 / (1 - pt1),
        (1 - u_t) / (1 - pt), 1 / (1 - o.beta_2 ** t))
    m, v = s["momentums"], s["velocities"]
    p *= 1 - lr * wd
    m += (g - m) * (1 - b1)
    v += (g * g - v) * (1 - b2)
    p -= lr * (cm * m + cg * g) / (np.sqrt(cv * v) + eps)


def _adamax(p: NDArray[Any], g: NDArray[Any], s: dict[str, NDArray[Any]],
            o: OptimizerStep) -> None:
    a = o.learning_rate / (1 - o.beta_1 ** o.iterations)
    lr, b1, b2, eps, wd, a = _scalars(p, o.learning_rate, o.beta_1, o.beta_2, o.epsilon,
                                      o.weight_decay, a)
    m, u = s["momentums"], s["norms"]
    p *= 1 - lr * wd
    m += (g - m) * (1 - b1)
    np.maximum(b2 * u, np.abs(g), out=u)
    p -= a * m / (u + eps)


def _adadelta(p: NDArray[Any], g: NDArray[Any], s: dict[str, NDArray[Any]],
              o: OptimizerStep) -> None:
    lr, rho, eps, wd = _scalars(p, o.learning_rate, o.rho, o.epsilon, o.weight_decay)
    ag, ad = s["accumulated_grads"], s["accumulated_delta_vars"]
    p *= 1 - lr * wd
    ag[...] = rho * ag + (1 - rho) * (g * g)
    delta = -(np.sqrt(ad + eps) * g) / np.sqrt(ag + eps)
    ad[...] = rho * ad + (1 - rho) * (delta * delta)
    p += lr * delta


def _lion(p: NDArray[Any], g: NDArray[Any], s: dict[str, NDArray[Any]], o: OptimizerStep) -> None:
    lr, b1, b2, wd = _scalars(p, o.learning_rate, o.beta_1, o.beta_2, o.weight_decay)
    m = s["momentums"]
    p *= 1 - lr * wd
    p -= lr * np.sign(m * b1 + g * (1 - b1))
    m[...] = m * b2 + g * (1 - b2)


_RULES = {"sgd": _sgd, "adagrad": _adagrad, "rmsprop": _rmsprop, "adam": _adam, "nadam": _nadam,
          "adamax": _adamax, "adadelta": _adadelta, "lion": _lion}


class OptimizerStep:
    """One optimizer for a parameter array p: its rule, hyper-parameters and state (set once),
    this step's scalars (begin), and the step on p (step, outer_step); the NumPy twin of
    `_kernels.OptimizerStep` (struct fnn_optimizer in src_c/fastnn.h)."""

    # the hyper-parameters (fastnn/_codes.py OPTIMIZER_HYPER), set by __init__ with setattr
    momentum: float
    nesterov: bool
    rho: float
    epsilon: float
    beta_1: float
    beta_2: float

    def __init__(self, p: NDArray[Any], rule: str, hyper: dict[str, Any],
                 slots: dict[str, NDArray[Any] | None]) -> None:
        if rule not in _RULES:
            raise ValueError(f"Expected rule in {sorted(_RULES)}. Received: {rule!r}")
        for name in _codes.OPTIMIZER_REQUIRED[rule]:
            if slots.get(name) is None:
                raise ValueError(f"Expected the {rule} state array {name!r}. Received: None")
        self.rule, self.size, self.dtype = rule, p.size, p.dtype
        for name in _codes.OPTIMIZER_HYPER:
            setattr(self, name, hyper.get(name, 0.0))
        self.weight_decay = hyper.get("weight_decay") or 0.0
        self.slots = {n: a.reshape(-1) for n, a in slots.items() if a is not None}
        self.learning_rate, self.iterations, self.u_product = 0.0, 0, 1.0

    def begin(self, learning_rate: float, iterations: int, u_product: float = 1.0) -> None:
        """This step's scalars: its learning rate, its number t (from 1), nadam's product."""
        self.learning_rate, self.iterations, self.u_product = learning_rate, iterations, u_product

    def step(self, p: NDArray[Any], g: NDArray[Any], start: int = 0,
             stop: int | None = None) -> None:
        """The step on elements [start, stop) of p, g and the state (stop None: the size)."""
        end = self.size if stop is None else stop
        if not start <= end <= self.size:
            raise ValueError(f"Expected stop in [start, {self.size}]. Received: stop={stop}")
        views = {n: a[start:end] for n, a in self.slots.items()}
        _RULES[self.rule](p.reshape(-1)[start:end], g.reshape(-1)[start:end], views, self)

    def outer_step(self, p: NDArray[Any], a: NDArray[Any], b: NDArray[Any]) -> None:
        """The step on elements [0, a.size * b.size) with the gradient outer(a, b)."""
        k = a.size * b.size
        views = {n: v[:k] for n, v in self.slots.items()}
        _RULES[self.rule](p.reshape(-1)[:k], np.outer(a, b).reshape(-1), views, self)


# ---- bfloat16 products with float32 sums (src_c/bf16.c) ------------------------------------
# A bf16 array is uint16: the top 16 bits of a float32.  The twins round exactly as the C
# kernels do, and multiply in float32 (a product of two bfloat16 is exact there), adding in
# NumPy's order: a C path and its twin differ only in the order of float32 additions.

_BF16_TK, _BF16_TN = 32, 16  # a packed tile: 32 rows (k) x 16 columns, in pairs of rows


def _bf16(x: NDArray[Any]) -> NDArray[np.uint16]:
    """float32 -> bfloat16 bits: round to nearest even on the top 16 bits; NaN stays NaN (made
    quiet, bit 6 set); zero and subnormal inputs become a zero of their sign (VCVTNEPS2BF16)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    tiny = (u & 0x7F800000) == 0
    rne = (u + (0x7FFF + ((u >> 16) & 1))) >> 16  # wraps around only for negative NaNs
    return np.where(nan, (u >> 16) | 0x40, np.where(tiny, (u >> 16) & 0x8000, rne)).astype(np.uint16)


def _f32(h: NDArray[Any]) -> NDArray[np.float32]:
    """bfloat16 bits -> their float32 values (exact)."""
    return (np.asarray(h, np.uint16).astype(np.uint32) << 16).view(np.float32)


def _bf16_pack(b: NDArray[Any]) -> NDArray[np.uint16]:
    """The packed form of a bf16 (k, n) matrix: tiles of 32 rows x 16 columns, zero-padded,
    each 16 rows of 16 column pairs (b[2r, j], b[2r + 1, j]); a column block's tiles in a row."""
    k, n = b.shape
    kb, nb = -(-k // _BF16_TK), -(-n // _BF16_TN)
    pad = np.zeros((kb * _BF16_TK, nb * _BF16_TN), np.uint16)
    pad[:k, :n] = b
    # pad[32 t + 2 r + e, 16 s + c] -> packed[s, t, r, c, e]
    return pad.reshape(kb, 16, 2, nb, 16).transpose(3, 0, 1, 4, 2).reshape(-1)


def _bf16_unpack(bp: NDArray[Any], k: int, n: int) -> NDArray[np.uint16]:
    """The (k, n) bf16 matrix of its packed form (the inverse of _bf16_pack)."""
    kb, nb = -(-k // _BF16_TK), -(-n // _BF16_TN)
    t = np.asarray(bp).reshape(nb, kb, 16, 16, 2).transpose(1, 2, 4, 0, 3)
    return t.reshape(kb * _BF16_TK, nb * _BF16_TN)[:k, :n]


def bf16_paths() -> list[str]:
    """The reference has one path: NumPy."""
    return ["numpy"]


def bf16_path() -> str:
    return "numpy"


def bf16_set_path(path: str | None) -> None:
    if path not in (None, "numpy"):
        raise ValueError(f"Expected path to be 'numpy' or None (the NumPy backend has no other "
                         f"bf16 path). Received: path={path!r}")


def bf16_packed_size(k: int, n: int) -> int:
    """Elements (uint16) of the packed form of a (k, n) matrix."""
    return -(-n // _BF16_TN) * -(-k // _BF16_TK) * _BF16_TK * _BF16_TN


def bf16_backward_scratch_size(n: int, in_: int, out: int) -> int:
    """Elements of dense_backward_bf16's scratch: bf16(dz), pack(bf16(dz)), x16.T, each
    starting on 64 bytes (up to 31 elements of padding before each)."""
    return n * out + bf16_packed_size(n, out) + in_ * n + 3 * 32


def _bf16_scratch_parts(scratch: NDArray[Any], n: int, in_: int,
                        out: int) -> tuple[slice, slice, slice]:
    """Where bf16(dz), its pack and x16.T lie in scratch, as the C kernel places them: each
    from the first 64-byte address at or past the end of the previous part."""
    base = int(scratch.ctypes.data)

    def align(e: int) -> int:
        return e + (-(base + 2 * e)) % 64 // 2

    a = align(0)
    b = align(a + n * out)
    c = align(b + bf16_packed_size(n, out))
    return slice(a, a + n * out), slice(b, b + bf16_packed_size(n, out)), slice(c, c + in_ * n)


def bf16_convert_forward(y: NDArray[Any], x: NDArray[Any]) -> None:
    """y := bf16(x) elementwise."""
    y[...] = _bf16(x)


def bf16_gather_forward(out: NDArray[Any], x: NDArray[Any], idx: NDArray[Any]) -> None:
    """out[i] := bf16(x[idx[i]])."""
    out[...] = _bf16(x[idx])


def bf16_pack_forward(wp: NDArray[Any] | None, wtp: NDArray[Any] | None,
                      w: NDArray[Any]) -> None:
    """wp := pack(bf16(w)), wtp := pack(bf16(w.T)); either may be None."""
    w16 = _bf16(w)
    if wp is not None:
        wp[...] = _bf16_pack(w16)
    if wtp is not None:
        wtp[...] = _bf16_pack(w16.T)


def optimizer_step_bf16pack(opt: OptimizerStep, p: NDArray[Any], wp: NDArray[Any] | None,
                            wtp: NDArray[Any] | None, g: NDArray[Any], start: int, in_: int,
                            out: int) -> None:
    """opt's step on the kernel w = p[start : start + in_ out] (in_, out), then its packs."""
    stop = start + in_ * out
    views = {n: a[start:stop] for n, a in opt.slots.items()}
    w = p.reshape(-1)[start:stop]
    _RULES[opt.rule](w, g.reshape(-1)[start:stop], views, opt)
    bf16_pack_forward(wp, wtp, w.reshape(in_, out))


def dense_forward_bf16(y: NDArray[Any], z: NDArray[Any] | None, y16: NDArray[Any] | None,
                       x16: NDArray[Any], wp: NDArray[Any], b: NDArray[Any] | None, act: int,
                       params: Sequence[float]) -> None:
    """y := act(x @ w + b), bf16 products and float32 sums; z: x @ w + b; y16: bf16(y)."""
    n, k = x16.shape
    pre = _f32(x16) @ _f32(_bf16_unpack(wp, k, y.shape[1]))
    if b is not None:
        pre += b
    if z is not None:
        z[...] = pre
    y[...] = _act(pre, act, params)
    if y16 is not None:
        y16[...] = _bf16(y)


def dense_backward_bf16(dw: NDArray[Any] | None, db: NDArray[Any] | None,
                        dx: NDArray[Any] | None, dz: NDArray[Any], scratch: NDArray[Any],
                        dy: NDArray[Any], x16: NDArray[Any], wtp: NDArray[Any], y: NDArray[Any],
                        z: NDArray[Any] | None, act: int, params: Sequence[float]) -> None:
    """dz := dy * act'(.), db := sum(dz), dw := x.T @ bf16(dz), dx := bf16(dz) @ w.T; scratch
    receives bf16(dz) (for dx), then pack(bf16(dz)) and x16.T (for dw), as the C kernel's."""
    n, k = x16.shape
    out = dy.shape[1]
    dz[...] = _act_grad(dy, y, z, act, params)
    dz16 = _bf16(dz)
    s1, s2, s3 = _bf16_scratch_parts(scratch, n, k, out)
    if db is not None:
        db[...] = dz.sum(axis=0)
    if dx is not None:
        scratch[s1] = dz16.reshape(-1)
        dx[...] = _f32(dz16) @ _f32(_bf16_unpack(wtp, out, k))
    if dw is not None:
        scratch[s2] = _bf16_pack(dz16)
        scratch[s3] = x16.T.reshape(-1)
        dw[...] = _f32(x16).T @ _f32(dz16)


def dense_backward_step_bf16(opt: OptimizerStep, p: NDArray[Any], wp: NDArray[Any],
                             db: NDArray[Any] | None, dz: NDArray[Any], scratch: NDArray[Any],
                             dy: NDArray[Any], x16: NDArray[Any], y: NDArray[Any],
                             z: NDArray[Any] | None, start: int, act: int,
                             params: Sequence[float]) -> None:
    """dense_backward_bf16 into dw (no dx), then optimizer_step_bf16pack on that kernel
    (no wtp), with the gradient dw at start in a gradient array of p's size."""
    in_, out = x16.shape[1], dy.shape[1]
    g = np.zeros_like(p)
    dw = g[start:start + in_ * out].reshape(in_, out)
    dense_backward_bf16(dw, db, None, dz, scratch, dy, x16, np.empty(0, np.uint16), y, z, act,
                        params)
    optimizer_step_bf16pack(opt, p, wp, None, g, start, in_, out)
