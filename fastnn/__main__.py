"""Command line: `fastnn mnist` trains the book's first example; `fastnn info` shows the build.

    fastnn mnist [--epochs 5] [--batch-size 128] [--optimizer rmsprop] [--backend numpy]
                 [--plot curves.png] [--seed 0] [--threads N] [--verbose 1]
    fastnn --version

Every option is checked before the data is loaded: a bad value (--epochs -1, --batch-size 0,
--threads 0, --plot into a missing folder) is an argparse error (exit code 2) naming the
option, not a traceback after training. --epochs 0 trains nothing, as Keras' fit(epochs=0),
and reports the untrained model's test accuracy.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Callable, Sequence

import fastnn


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type= for ints >= minimum; argparse names the option in its error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {minimum}, received {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, received {value}")
        return value
    parse.__name__ = f"int >= {minimum}"
    return parse


def plot_path_problem(path: str) -> str | None:
    """Why the training curves could not be written to path, or None if they can."""
    if not path:
        return "expected a file name such as curves.png, received ''"
    if os.path.isdir(path):
        return f"{path!r} is a folder, expected a file name such as curves.png"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"cannot write {path!r}: folder {folder!r} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot write {path!r}: folder {folder!r} is not writable"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"cannot write {path!r}: the file exists and is not writable"
    return None


def check_mnist_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse's type= cannot see: the checks that must fail before any training."""
    if args.plot is not None:
        if args.epochs == 0:
            parser.error("argument --plot: --epochs 0 trains nothing, so there are no curves "
                         "to plot; expected --epochs >= 1 with --plot")
        problem = plot_path_problem(args.plot)
        if problem:
            parser.error(f"argument --plot: {problem}")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            sys.exit(f"{parser.prog}: error: --plot needs matplotlib: pip install 'fastnn[plot]'")


def mnist_main(args: argparse.Namespace) -> int:
    from fastnn import callbacks, layers, models
    from fastnn.datasets import mnist
    from fastnn.utils import to_categorical

    fastnn.set_backend(args.backend)
    if args.threads is not None:
        fastnn.set_num_threads(args.threads)
    if args.seed is not None:
        fastnn.utils.set_random_seed(args.seed)
    fastnn.mixed_precision.set_global_policy(args.dtype)
    try:
        return _train_mnist(args)
    finally:
        fastnn.mixed_precision.set_global_policy(None)


def _train_mnist(args: argparse.Namespace) -> int:
    from fastnn import callbacks, layers, models
    from fastnn.datasets import mnist
    from fastnn.utils import to_categorical

    if args.plot:
        import matplotlib  # importable: check_mnist_args made sure
        matplotlib.use("Agg")

    (train_images, train_labels), (test_images, test_labels) = mnist.load_data()
    train_images = train_images.reshape((60000, 28 * 28)).astype("float32") / 255
    test_images = test_images.reshape((10000, 28 * 28)).astype("float32") / 255
    train_labels, test_labels = to_categorical(train_labels), to_categorical(test_labels)

    network = models.Sequential()
    network.add(layers.Dense(512, activation="relu", input_shape=(28 * 28,)))
    network.add(layers.Dense(10, activation="softmax"))
    network.compile(optimizer=args.optimizer, loss="categorical_crossentropy", metrics=["accuracy"])

    times: list[float] = []
    timer = callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: times.append(time.perf_counter()),
        on_epoch_end=lambda e, logs: times.__setitem__(-1, time.perf_counter() - times[-1]))
    cbs = [timer]
    if args.plot:  # the test set as validation data, for the curves only
        history = network.fit(train_images, train_labels, epochs=args.epochs,
                              batch_size=args.batch_size, verbose=args.verbose, callbacks=cbs,
                              validation_data=(test_images, test_labels))
    else:
        history = network.fit(train_images, train_labels, epochs=args.epochs,
                              batch_size=args.batch_size, verbose=args.verbose, callbacks=cbs)
    test_loss, test_acc = network.evaluate(test_images, test_labels, verbose=0)
    print(f"backend: {fastnn.get_backend()}  optimizer: {args.optimizer}  "
          f"batch size: {args.batch_size}  threads: {fastnn.get_num_threads()}  "
          f"dtype policy: {args.dtype}")
    if times:
        print("time per epoch: " + ", ".join(f"{t:.2f}s" for t in times) +
              f"  (median {sorted(times)[len(times) // 2]:.2f}s)")
    else:
        print("time per epoch: none (--epochs 0: the model is untrained)")
    print(f"test_loss: {test_loss:.4f}  test_acc: {test_acc:.4f}")
    if args.plot:
        plot_history(history.history, args.plot, f"MNIST 784-512-10, {args.optimizer}")
        print(f"training curves written to {args.plot}")
    return 0


def plot_history(hist: dict[str, list[Any]], path: str, title: str) -> None:
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = range(1, len(hist["loss"]) + 1)
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, hist[key], "o-", label=f"training {key}")
        if "val_" + key in hist:
            ax.plot(epochs, hist["val_" + key], "s--", label=f"test {key}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_title(key)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastnn", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fastnn {fastnn.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("mnist", help="train Dense(512, relu) + Dense(10, softmax) on MNIST")
    m.add_argument("--epochs", type=int_at_least(0), default=5,
                   help="training epochs, >= 0 (default 5); 0 trains nothing, as Keras' "
                        "fit(epochs=0), and reports the untrained model's test accuracy")
    m.add_argument("--batch-size", type=int_at_least(1), default=128,
                   help="samples per training step, >= 1 (default 128)")
    m.add_argument("--optimizer", default="rmsprop",
                   choices=["sgd", "adagrad", "rmsprop", "adam", "adamw", "nadam", "adamax",
                            "adadelta", "lion"])
    m.add_argument("--backend", default=fastnn.get_backend(), choices=list(fastnn.backend.BACKENDS))
    m.add_argument("--plot", metavar="PNG",
                   help="write training curves to this PNG (needs matplotlib and --epochs >= 1; "
                        "its folder must exist and be writable, checked before training)")
    m.add_argument("--seed", type=int_at_least(0), default=None,
                   help="seed for identical runs, >= 0")
    m.add_argument("--threads", type=int_at_least(1), default=None,
                   help="threads for kernels and BLAS, >= 1 (default: fastnn's current count)")
    m.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2])
    m.add_argument("--dtype", default="float32", choices=["float32", "mixed_bfloat16"],
                   help="the dtype policy (fastnn.mixed_precision): mixed_bfloat16 runs the "
                        "matrix products in bfloat16 with float32 sums (AMX where available)")
    m.add_argument("--mixed-precision", dest="dtype", action="store_const",
                   const="mixed_bfloat16", help="the same as --dtype mixed_bfloat16")
    sub.add_parser("info", help="show the build (BLAS, OpenMP, SIMD, threads)")
    args = parser.parse_args(argv)
    if args.command == "info":
        fastnn.show_config()
        return 0
    check_mnist_args(m, args)
    try:
        return mnist_main(args)
    except KeyboardInterrupt:  # fit finished its step in progress and let Ctrl-C through
        print("fastnn mnist: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
