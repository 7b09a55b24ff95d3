"""Command line: `fastnn mnist` trains the book's first example; `fastnn info` shows the build.

    fastnn mnist [--epochs 5] [--batch-size 128] [--optimizer rmsprop] [--backend numpy]
                 [--plot curves.png] [--seed 0] [--threads N] [--verbose 1]
"""
import argparse
import sys
import time

import fastnn


def mnist_main(args):
    from fastnn import callbacks, layers, models
    from fastnn.datasets import mnist
    from fastnn.utils import to_categorical

    fastnn.set_backend(args.backend)
    if args.threads:
        fastnn.set_num_threads(args.threads)
    if args.seed is not None:
        fastnn.utils.set_random_seed(args.seed)
    if args.plot:
        try:
            import matplotlib
        except ImportError:
            sys.exit("--plot needs matplotlib: pip install 'fastnn[plot]'")
        matplotlib.use("Agg")

    (train_images, train_labels), (test_images, test_labels) = mnist.load_data()
    train_images = train_images.reshape((60000, 28 * 28)).astype("float32") / 255
    test_images = test_images.reshape((10000, 28 * 28)).astype("float32") / 255
    train_labels, test_labels = to_categorical(train_labels), to_categorical(test_labels)

    network = models.Sequential()
    network.add(layers.Dense(512, activation="relu", input_shape=(28 * 28,)))
    network.add(layers.Dense(10, activation="softmax"))
    network.compile(optimizer=args.optimizer, loss="categorical_crossentropy", metrics=["accuracy"])

    times = []
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
          f"batch size: {args.batch_size}  threads: {fastnn.get_num_threads()}")
    print("time per epoch: " + ", ".join(f"{t:.2f}s" for t in times) +
          f"  (median {sorted(times)[len(times) // 2]:.2f}s)")
    print(f"test_loss: {test_loss:.4f}  test_acc: {test_acc:.4f}")
    if args.plot:
        plot_history(history.history, args.plot, f"MNIST 784-512-10, {args.optimizer}")
        print(f"training curves written to {args.plot}")
    return 0


def plot_history(hist, path, title):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = range(1, len(hist["loss"]) + 1)
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, hist[key], "o-", label=f"training {key}")
        if "val_" + key in hist:
            ax.plot(epochs, hist["val_" + key], "s--", label=f"test {key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fastnn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("mnist", help="train Dense(512, relu) + Dense(10, softmax) on MNIST")
    m.add_argument("--epochs", type=int, default=5)
    m.add_argument("--batch-size", type=int, default=128)
    m.add_argument("--optimizer", default="rmsprop", choices=["sgd", "adagrad", "rmsprop", "adam"])
    m.add_argument("--backend", default=fastnn.get_backend(), choices=list(fastnn.backend.BACKENDS))
    m.add_argument("--plot", metavar="PNG", help="write training curves to this PNG (matplotlib)")
    m.add_argument("--seed", type=int, default=None, help="seed for identical runs")
    m.add_argument("--threads", type=int, default=None, help="threads for kernels and BLAS")
    m.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2])
    sub.add_parser("info", help="show the build (BLAS, OpenMP, SIMD, threads)")
    args = parser.parse_args(argv)
    if args.command == "info":
        fastnn.show_config()
        return 0
    return mnist_main(args)


if __name__ == "__main__":
    sys.exit(main())
