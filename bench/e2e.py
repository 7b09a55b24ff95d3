"""One end-to-end training run of the book's MNIST network, in this process; prints JSON.

    python bench/e2e.py --impl {fastnn,fastnn-bf16,fastnn-numpy,numpy,torch,torch-bf16} \
        --batch-size 128 --epochs 5
    python bench/e2e.py --impl fastnn --batch-size 1 --steps 3000
    python bench/e2e.py --impl fastnn-bf16 --book-setup   # as `fastnn mnist` fits

--book-setup (fastnn only): compile with metrics=["accuracy"] and fit with verbose=1 (the bar
drawn into a discarded stream), as the book and `fastnn mnist` do; else no metric, verbose=0.

run.py starts one process per implementation, so each peak memory (ru_maxrss) is its own.
"""
import argparse
import contextlib
import io
import json
import resource
import sys
import time

import numpy as np

from common import pin_threads


def load(dtype=np.float32):
    from fastnn.datasets import mnist
    (x, y), (xt, yt) = mnist.load_data()
    x = x.reshape(60000, 784).astype(dtype) / 255
    xt = xt.reshape(10000, 784).astype(dtype) / 255
    return x, np.eye(10, dtype=dtype)[y], xt, yt


def run_fastnn(args, x, y, xt, yt):
    import fastnn
    from fastnn import callbacks, layers, models
    if args.impl == "fastnn-numpy":
        fastnn.set_backend("numpy")
    if args.impl == "fastnn-bf16":
        fastnn.mixed_precision.set_global_policy("mixed_bfloat16")
    model = models.Sequential([layers.Dense(512, activation="relu", input_shape=(784,)),
                               layers.Dense(10, activation="softmax")], seed=0)
    model.compile("rmsprop", "categorical_crossentropy",
                  metrics=["accuracy"] if args.book_setup else None)
    times = []
    cb = callbacks.LambdaCallback(
        on_epoch_begin=lambda e, l: times.append(time.perf_counter()),
        on_epoch_end=lambda e, l: times.__setitem__(-1, time.perf_counter() - times[-1]))
    verbose = 1 if args.book_setup else 0
    with contextlib.redirect_stdout(io.StringIO()):  # (the bar of --book-setup, not the JSON)
        if args.steps:  # a fixed number of steps: the first steps*batch samples, one epoch
            n = args.steps * args.batch_size
            model.fit(x[:n], y[:n], epochs=1, batch_size=args.batch_size, verbose=verbose,
                      callbacks=[cb])
        else:
            model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, verbose=verbose,
                      callbacks=[cb])
    acc = float(np.mean(model.predict(xt, batch_size=1000, verbose=0).argmax(1) == yt))
    return times, acc


def run_numpy(args, x, y, xt, yt):
    import plain_numpy
    rng = np.random.default_rng(0)
    params, vel = plain_numpy.init(rng)
    times = []
    for _ in range(1 if args.steps else args.epochs):
        t0 = time.perf_counter()
        plain_numpy.train_epoch(params, vel, x, y, args.batch_size, rng, steps=args.steps or None)
        times.append(time.perf_counter() - t0)
    return times, plain_numpy.accuracy(params, xt, yt)


def run_torch(args, x, y, xt, yt):
    import torch
    pin_threads(args.threads)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
    opt = torch.optim.RMSprop(net.parameters(), lr=0.001, alpha=0.9, eps=1e-7)
    lossf = torch.nn.CrossEntropyLoss()
    X, Y = torch.from_numpy(x), torch.from_numpy(y.argmax(1))
    g = torch.Generator().manual_seed(0)
    times = []
    for _ in range(1 if args.steps else args.epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(X), generator=g)
        steps = args.steps or -(-len(X) // args.batch_size)
        for s in range(steps):
            idx = perm[s * args.batch_size:(s + 1) * args.batch_size]
            opt.zero_grad()
            if args.impl == "torch-bf16":  # PyTorch's CPU autocast to bfloat16
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = lossf(net(X[idx]), Y[idx])
            else:
                loss = lossf(net(X[idx]), Y[idx])
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    with torch.no_grad():
        acc = float((net(torch.from_numpy(xt)).argmax(1).numpy() == yt).mean())
    return times, acc


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--impl", required=True, choices=["fastnn", "fastnn-bf16", "fastnn-numpy",
                                                     "numpy", "torch", "torch-bf16"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--steps", type=int, default=0, help="a fixed number of steps instead of epochs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--book-setup", action="store_true",
                   help="fastnn with metrics=['accuracy'] and the progress bar, as `fastnn mnist`")
    args = p.parse_args(argv)
    if args.book_setup and not args.impl.startswith("fastnn"):
        p.error("--book-setup is for the fastnn implementations")
    pin_threads(args.threads)
    data = load()
    run = {"fastnn": run_fastnn, "fastnn-bf16": run_fastnn, "fastnn-numpy": run_fastnn,
           "numpy": run_numpy, "torch": run_torch, "torch-bf16": run_torch}[args.impl]
    t0 = time.perf_counter()
    times, acc = run(args, *data)
    total = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    json.dump({"impl": args.impl, "batch_size": args.batch_size, "epoch_times": times, "total": total,
               "test_acc": acc, "peak_mb": peak_mb, "steps": args.steps}, sys.stdout)


if __name__ == "__main__":
    main()
