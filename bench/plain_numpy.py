"""The book's MNIST network trained the obvious way in plain NumPy: the yardstick the
speed targets are measured against.  One function per step, NumPy expressions throughout,
rmsprop written as in Keras (v = rho v + (1 - rho) g^2; p -= lr g / sqrt(v + eps))."""
import numpy as np


def init(rng, dtype=np.float32):
    def glorot(i, o):
        lim = np.sqrt(6 / (i + o))
        return rng.uniform(-lim, lim, (i, o)).astype(dtype)
    params = [glorot(784, 512), np.zeros(512, dtype), glorot(512, 10), np.zeros(10, dtype)]
    return params, [np.zeros_like(p) for p in params]


def train_step(params, vel, x, y, lr=0.001, rho=0.9, eps=1e-7):
    w1, b1, w2, b2 = params
    h = np.maximum(x @ w1 + b1, 0)
    z = h @ w2 + b2
    e = np.exp(z - z.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    loss = -np.mean(np.sum(y * np.log(np.clip(p, 1e-7, 1 - 1e-7)), axis=1))
    dz = (p - y) / len(x)
    dh = (dz @ w2.T) * (h > 0)
    grads = [x.T @ dh, dh.sum(axis=0), h.T @ dz, dz.sum(axis=0)]
    for p_, v, g in zip(params, vel, grads):
        v[...] = rho * v + (1 - rho) * g * g
        p_ -= lr * g / np.sqrt(v + eps)
    return loss


def train_epoch(params, vel, x, y, batch_size, rng, steps=None):
    perm = rng.permutation(len(x))
    n_steps = -(-len(x) // batch_size) if steps is None else steps
    for s in range(n_steps):
        idx = perm[s * batch_size:(s + 1) * batch_size]
        train_step(params, vel, x[idx], y[idx])


def accuracy(params, x, labels):
    w1, b1, w2, b2 = params
    return float(np.mean((np.maximum(x @ w1 + b1, 0) @ w2 + b2).argmax(1) == labels))
