"""Reference backend: every compiled kernel written plainly in NumPy.

Same names and argument order as `fastnn._kernels`; outputs are written into the
caller's arrays the same way.  Written for clarity, not speed: this is the oracle the
tests compare the C kernels against (and itself is checked by finite differences), and
the backend `fastnn.set_backend("numpy")` selects.
"""
import math

import numpy as np

NAME = "numpy"

LINEAR, RELU, SIGMOID, TANH, SOFTMAX, LEAKY_RELU, ELU, GELU = range(8)
ACT_CODES = {
    "linear": LINEAR, "relu": RELU, "sigmoid": SIGMOID, "tanh": TANH,
    "softmax": SOFTMAX, "leaky_relu": LEAKY_RELU, "elu": ELU, "gelu": GELU,
}
_CLIP = 1e-7
_erf = np.vectorize(math.erf, otypes=[np.float64])


def _act(v, act, alpha):
    """act(v) for a 2-D array v (softmax over the last axis)."""
    if act == LINEAR:
        return v
    if act == RELU:
        return np.maximum(v, 0)
    if act == SIGMOID:
        # 1 / (1 + e^-v) without overflow: e^-|v| never exceeds 1
        e = np.exp(-np.abs(v))
        return np.where(v >= 0, 1 / (1 + e), e / (1 + e))
    if act == TANH:
        return np.tanh(v)
    if act == SOFTMAX:
        e = np.exp(v - v.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if act == LEAKY_RELU:
        return np.where(v > 0, v, alpha * v)
    if act == ELU:
        return np.where(v > 0, v, alpha * np.expm1(np.minimum(v, 0)))
    if act == GELU:
        return 0.5 * v * (1 + _erf(v / math.sqrt(2)).astype(v.dtype))
    raise ValueError(f"Expected act to be an activation code in {sorted(ACT_CODES.values())}. "
                     f"Received: act={act}")


def _act_grad(dy, y, x, act, alpha):
    """dy * act'(.) written from the output y (and the pre-activation x for gelu)."""
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
        return np.where(y > 0, dy, alpha * dy)
    if act == ELU:  # alpha (e^x - 1) has derivative alpha e^x = y + alpha
        return np.where(y > 0, dy, dy * (y + alpha))
    if act == GELU:  # Phi(x) + x phi(x)
        cdf = 0.5 * (1 + _erf(x / math.sqrt(2)).astype(x.dtype))
        return dy * (cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi))
    raise ValueError(f"Expected act to be an activation code. Received: act={act}")


# ---- dense and activation ------------------------------------------------------------------

def dense_forward(y, z, x, w, b, act, alpha):
    """y := act(x @ w + b); z (or None) receives x @ w + b."""
    pre = x @ w
    if b is not None:
        pre += b
    if z is not None:
        z[...] = pre
    y[...] = _act(pre, act, alpha)


def dense_backward(dw, db, dx, dz, dy, x, w, y, z, act, alpha):
    """dz := dy * act'(.), dw := x.T @ dz, db := sum(dz), dx := dz @ w.T."""
    dz[...] = _act_grad(dy, y, z, act, alpha)
    if dw is not None:
        dw[...] = x.T @ dz
    if db is not None:
        db[...] = dz.sum(axis=0)
    if dx is not None:
        dx[...] = dz @ w.T


def act_forward(y, x, act, alpha):
    y[...] = _act(x, act, alpha)


def act_backward(dx, dy, y, x, act, alpha):
    dx[...] = _act_grad(dy, y, x, act, alpha)


def gather_rows(out, x, idx):
    """out := x[idx] along the first axis."""
    np.take(x, idx, axis=0, out=out)


# ---- losses: value (batch mean) and, when dp is given, its gradient -----------------------

def _clip_and_mask(q):
    return np.clip(q, _CLIP, 1 - _CLIP), (q >= _CLIP) & (q <= 1 - _CLIP)


def _cce(dp, p, t):
    """Keras' categorical crossentropy from probabilities:
    q = p / sum(p), l = -sum t log clip(q); dl/dp through both the clip and the normalisation."""
    n = p.shape[0]
    s = p.sum(axis=1, keepdims=True)
    q = p / s
    c, inside = _clip_and_mask(q)
    loss = float(-(t * np.log(c)).sum(dtype=np.float64) / n)
    if dp is not None:
        gq = np.where(inside, -t / c, 0).astype(p.dtype)
        dp[...] = (gq - (gq * q).sum(axis=1, keepdims=True)) / s / n
    return loss


def _one_hot(labels, p):
    t = np.zeros_like(p)
    t[np.arange(len(labels)), labels] = 1
    return t


def categorical_crossentropy_forward(p, t):
    return _cce(None, p, t)


def categorical_crossentropy_backward(dp, p, t):
    return _cce(dp, p, t)


def sparse_categorical_crossentropy_forward(p, labels):
    return _cce(None, p, _one_hot(labels, p))


def sparse_categorical_crossentropy_backward(dp, p, labels):
    return _cce(dp, p, _one_hot(labels, p))


def softmax_crossentropy_backward(dz, p, t):
    """p = softmax(logits); dz := (p * sum(t) - t) / n, the gradient w.r.t. the logits."""
    dz[...] = (p * t.sum(axis=1, keepdims=True) - t) / p.shape[0]
    return _cce(None, p, t)


def sparse_softmax_crossentropy_backward(dz, p, labels):
    return softmax_crossentropy_backward(dz, p, _one_hot(labels, p))


def binary_crossentropy_forward(p, t):
    return binary_crossentropy_backward(None, p, t)


def binary_crossentropy_backward(dp, p, t):
    """l = mean -(t log c + (1 - t) log(1 - c)), c = clip(p)."""
    c, inside = _clip_and_mask(p)
    loss = float(-(t * np.log(c) + (1 - t) * np.log(1 - c)).mean(dtype=np.float64))
    if dp is not None:
        dp[...] = np.where(inside, -t / c + (1 - t) / (1 - c), 0) / p.size
    return loss


def mean_squared_error_forward(p, t):
    return mean_squared_error_backward(None, p, t)


def mean_squared_error_backward(dp, p, t):
    """l = mean (p - t)^2."""
    d = p - t
    if dp is not None:
        dp[...] = 2 * d / p.size
    return float((d.astype(np.float64) ** 2).mean())


# ---- optimizer steps (Keras 3 rules; weight decay first: p := p (1 - lr wd)) ---------------

def _scalars(p, *values):
    return [p.dtype.type(v) for v in values]


def sgd_step(p, m, g, lr, momentum, nesterov, weight_decay):
    lr, mu, wd = _scalars(p, lr, momentum, weight_decay)
    p *= 1 - lr * wd
    if m is None:
        p -= lr * g
        return
    m[...] = mu * m - lr * g
    p += (mu * m - lr * g) if nesterov else m


def adagrad_step(p, a, g, lr, epsilon, weight_decay):
    lr, eps, wd = _scalars(p, lr, epsilon, weight_decay)
    p *= 1 - lr * wd
    a += g * g
    p -= lr * g / np.sqrt(a + eps)


def rmsprop_step(p, v, mom, mg, g, lr, rho, momentum, epsilon, weight_decay):
    lr, rho, mu, eps, wd = _scalars(p, lr, rho, momentum, epsilon, weight_decay)
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


def adam_step(p, m, v, vhat, g, lr, beta_1, beta_2, epsilon, weight_decay, t):
    a = lr * math.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t)
    lr, b1, b2, eps, wd, a = _scalars(p, lr, beta_1, beta_2, epsilon, weight_decay, a)
    p *= 1 - lr * wd
    m += (g - m) * (1 - b1)
    v += (g * g - v) * (1 - b2)
    vv = v
    if vhat is not None:
        np.maximum(vhat, v, out=vhat)
        vv = vhat
    p -= a * m / (np.sqrt(vv) + eps)


# ---- the same steps with the rank-1 gradient outer(a, b) (one sample's dense kernel) -------

def sgd_outer_step(p, m, a, b, lr, momentum, nesterov, weight_decay):
    sgd_step(p, m, np.outer(a, b).reshape(p.shape), lr, momentum, nesterov, weight_decay)


def adagrad_outer_step(p, acc, a, b, lr, epsilon, weight_decay):
    adagrad_step(p, acc, np.outer(a, b).reshape(p.shape), lr, epsilon, weight_decay)


def rmsprop_outer_step(p, v, mom, mg, a, b, lr, rho, momentum, epsilon, weight_decay):
    rmsprop_step(p, v, mom, mg, np.outer(a, b).reshape(p.shape), lr, rho, momentum, epsilon,
                 weight_decay)


def adam_outer_step(p, m, v, vhat, a, b, lr, beta_1, beta_2, epsilon, weight_decay, t):
    adam_step(p, m, v, vhat, np.outer(a, b).reshape(p.shape), lr, beta_1, beta_2, epsilon,
              weight_decay, t)
