"""`fastnn` on the command line: option checks, --epochs 0, --plot's folder, --version.

Bad options must fail before any training, so every in-process test here replaces MNIST's
loader with one that fails the test: nothing here trains. The one subprocess run of
`fastnn mnist` uses --epochs 0 (loads the data and evaluates the untrained model).
The real training runs are in tests/test_mnist.py.
"""
import importlib.metadata
import os
import subprocess
import sys

import pytest

import fastnn
from fastnn.__main__ import main
from fastnn.datasets import mnist


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fastnn", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if `fastnn mnist` gets as far as loading the data."""
    def load_data(*args, **kwargs):
        raise AssertionError("fastnn mnist started loading data: the bad option was not refused")
    monkeypatch.setattr(mnist, "load_data", load_data)


def usage_error(capsys, argv):
    """Run main(argv) in this process; return stderr of the argparse error it must give."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "Traceback" not in err
    assert err.startswith("usage: fastnn mnist"), err
    return " ".join(err.split())  # argparse wraps lines at the terminal's width


@pytest.mark.parametrize("option, value, expected", [
    ("--epochs", "-1", "expected an integer >= 0, received -1"),
    ("--epochs", "-5", "expected an integer >= 0, received -5"),
    ("--epochs", "two", "expected an integer >= 0, received 'two'"),
    ("--batch-size", "0", "expected an integer >= 1, received 0"),
    ("--batch-size", "-128", "expected an integer >= 1, received -128"),
    ("--threads", "0", "expected an integer >= 1, received 0"),
    ("--threads", "-2", "expected an integer >= 1, received -2"),
    ("--seed", "-1", "expected an integer >= 0, received -1"),
])
def test_bad_numbers_are_argparse_errors(no_training, capsys, option, value, expected):
    err = usage_error(capsys, ["mnist", option, value, "--verbose", "0"])
    assert f"fastnn mnist: error: argument {option}: {expected}" in err


def test_bad_number_in_a_subprocess_has_no_traceback(tmp_path):
    out = run_cli("mnist", "--batch-size", "0", cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "argument --batch-size: expected an integer >= 1, received 0" in out.stderr
    assert out.stdout == ""


def test_epochs_zero_reports_the_untrained_model(tmp_path):
    # as Keras' fit(epochs=0): nothing is trained, the test set is still evaluated
    out = run_cli("mnist", "--epochs", "0", "--verbose", "0", "--seed", "0", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert "time per epoch: none" in out.stdout
    acc = float(out.stdout.split("test_acc:")[1].split()[0])
    assert 0.0 <= acc < 0.5  # untrained: about chance (0.1), far from 0.98
    assert "test_loss:" in out.stdout


def test_help_documents_epochs_zero_and_the_limits(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["mnist", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "0 trains nothing" in out
    assert ">= 1" in out.split("--batch-size BATCH_SIZE", 2)[2].split("--optimizer")[0]
    assert ">= 1" in out.split("--threads THREADS", 2)[2]


def test_plot_into_a_missing_folder_fails_before_training(no_training, capsys, tmp_path):
    path = tmp_path / "no such folder" / "curves.png"
    err = usage_error(capsys, ["mnist", "--epochs", "1", "--plot", str(path)])
    assert "argument --plot:" in err
    assert "does not exist" in err and str(tmp_path / "no such folder") in err
    assert not path.parent.exists()


def test_plot_to_a_folder_fails_before_training(no_training, capsys, tmp_path):
    err = usage_error(capsys, ["mnist", "--epochs", "1", "--plot", str(tmp_path)])
    assert "argument --plot:" in err and "is a folder" in err


def test_plot_into_a_read_only_folder_fails_before_training(no_training, capsys, monkeypatch,
                                                            tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root writes anywhere: see the folder as a user would
            access = os.access
            monkeypatch.setattr(os, "access", lambda path, mode, **kw: (
                False if os.fspath(path) == str(folder) and mode & os.W_OK
                else access(path, mode, **kw)))
        err = usage_error(capsys, ["mnist", "--epochs", "1", "--plot", str(folder / "c.png")])
        assert "argument --plot:" in err and "is not writable" in err
    finally:
        folder.chmod(0o700)


def test_plot_with_epochs_zero_is_refused(no_training, capsys, tmp_path):
    err = usage_error(capsys, ["mnist", "--epochs", "0", "--plot", str(tmp_path / "c.png")])
    assert "argument --plot:" in err and "--epochs >= 1" in err


def test_plot_without_matplotlib_fails_before_training(no_training, capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(SystemExit) as exc:
        main(["mnist", "--epochs", "1", "--plot", str(tmp_path / "c.png")])
    assert exc.value.code not in (0, None)
    message = str(exc.value.code) + capsys.readouterr().err
    assert "--plot needs matplotlib" in message
    assert not (tmp_path / "c.png").exists()


def test_version(tmp_path):
    """The installed distribution's version (pyproject.toml), as fastnn.__version__ says."""
    out = run_cli("--version", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"fastnn {importlib.metadata.version('fastnn')}\n"
    assert fastnn.__version__ == importlib.metadata.version("fastnn")
