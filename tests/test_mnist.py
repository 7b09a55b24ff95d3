"""The book's first example, end to end, on the real MNIST data."""
import os
import subprocess
import sys

import pytest

import fastnn
from fastnn import layers, models
from fastnn.datasets import mnist
from fastnn.utils import to_categorical


def book_example(seed):
    fastnn.utils.set_random_seed(seed)
    (train_images, train_labels), (test_images, test_labels) = mnist.load_data()
    train_images = train_images.reshape((60000, 28 * 28)).astype("float32") / 255
    test_images = test_images.reshape((10000, 28 * 28)).astype("float32") / 255
    train_labels, test_labels = to_categorical(train_labels), to_categorical(test_labels)
    network = models.Sequential()
    network.add(layers.Dense(512, activation="relu", input_shape=(28 * 28,)))
    network.add(layers.Dense(10, activation="softmax"))
    network.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    network.fit(train_images, train_labels, epochs=5, batch_size=128, verbose=0)
    return network.evaluate(test_images, test_labels, verbose=0)


def test_book_example_reaches_the_books_accuracy():
    test_loss, test_acc = book_example(seed=0)
    assert test_acc >= 0.975
    assert test_loss < 0.1


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_book_example_every_seed(seed):
    assert book_example(seed)[1] >= 0.975


def fastnn_command():
    """The installed console script (beside this interpreter), as the README runs it."""
    script = os.path.join(os.path.dirname(sys.executable), "fastnn")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "fastnn"]


def test_cli_runs_the_main_job(tmp_path):
    # run outside the source tree, where only the installed package can be imported
    out = subprocess.run(fastnn_command() + ["mnist", "--epochs", "1", "--verbose", "0", "--seed", "0"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    acc = float(out.stdout.split("test_acc:")[1].split()[0])
    assert acc > 0.94
    assert "time per epoch:" in out.stdout


def test_cli_info_and_bad_option(tmp_path):
    out = subprocess.run([sys.executable, "-m", "fastnn", "info"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0 and "BLAS: scipy-openblas32" in out.stdout, out.stderr
    bad = subprocess.run(fastnn_command() + ["mnist", "--optimizer", "ftrl"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "invalid choice: 'ftrl'" in bad.stderr


def test_cli_plot_writes_training_curves(tmp_path):
    out = subprocess.run(fastnn_command() + ["mnist", "--epochs", "1", "--verbose", "0", "--seed", "1",
                                             "--plot", str(tmp_path / "curves.png")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "training curves written to" in out.stdout
