"""The book's MNIST network trained with each optimizer, side by side.

    python -m fastnn.examples.compare_optimizers [--epochs 5] [--out optimizers.png]

SGD, SGD with momentum, Adagrad, RMSprop and Adam, each with its Keras default learning
rate (SGD's 0.01) and the same initial weights; the last 10,000 training images are held
out for validation.  Prints a table of final accuracies and time per epoch and writes the
training and validation curves to a PNG (needs matplotlib: pip install "fastnn[plot]").
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Callable, Sequence

from fastnn import callbacks, layers, models, optimizers
from fastnn.datasets import mnist
from fastnn.utils import to_categorical

OPTIMIZERS: dict[str, Callable[[], optimizers.Optimizer]] = {
    "SGD": lambda: optimizers.SGD(),
    "SGD + momentum 0.9": lambda: optimizers.SGD(momentum=0.9),
    "Adagrad": lambda: optimizers.Adagrad(),
    "RMSprop": lambda: optimizers.RMSprop(),
    "Adam": lambda: optimizers.Adam(),
}


def run(epochs: int = 5, n_train: int = 60_000, verbose: int = 1) -> dict[str, dict[str, Any]]:
    (x, y), _ = mnist.load_data()
    x = x[:n_train].reshape(-1, 784).astype("float32") / 255
    y = to_categorical(y[:n_train])
    results = {}
    for name, make in OPTIMIZERS.items():
        model = models.Sequential([layers.Dense(512, activation="relu", input_shape=(784,)),
                                   layers.Dense(10, activation="softmax")], seed=0)
        model.compile(optimizer=make(), loss="categorical_crossentropy", metrics=["accuracy"])
        times: list[float] = []
        timer = callbacks.LambdaCallback(
            on_epoch_begin=lambda e, logs: times.append(time.perf_counter()),
            on_epoch_end=lambda e, logs: times.__setitem__(-1, time.perf_counter() - times[-1]))
        if verbose:
            print(f"\n{name}")
        h = model.fit(x, y, epochs=epochs, batch_size=128, validation_split=1 / 6,
                      verbose=2 if verbose else 0, callbacks=[timer])
        results[name] = {"history": h.history, "epoch_s": sorted(times)[len(times) // 2]}
    return results


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| optimizer | train accuracy | validation accuracy | s / epoch |", "| --- | --- | --- | --- |"]
    for name, r in results.items():
        h = r["history"]
        lines.append(f"| {name} | {h['accuracy'][-1]:.4f} | {h['val_accuracy'][-1]:.4f} | {r['epoch_s']:.2f} |")
    return "\n".join(lines)


def plot(results: dict[str, dict[str, Any]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    markers = "osD^vP*X"  # each optimizer its own marker: lines that overlap stay apart
    for i, (name, r) in enumerate(results.items()):
        h = r["history"]
        ep = range(1, len(h["loss"]) + 1)
        for ax, key in zip(axes, ("loss", "accuracy")):
            ax.plot(ep, h[key], "-", marker=markers[i % len(markers)], color=f"C{i}",
                    label=f"{name} (train)")
            ax.plot(ep, h["val_" + key], "--", marker=markers[i % len(markers)], color=f"C{i}",
                    mfc="none", label=f"{name} (validation)")
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_title(key)
    axes[0].set_yscale("log")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.suptitle("MNIST 784-512-10, batch 128: solid = training, dashed = validation")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", default="optimizers.png")
    args = ap.parse_args(argv)
    results = run(args.epochs)
    print("\n" + table(results))
    try:
        plot(results, args.out)
        print(f"\ncurves written to {args.out}")
    except ImportError:
        print("\nmatplotlib not installed: no picture (pip install 'fastnn[plot]')")


if __name__ == "__main__":
    main()
