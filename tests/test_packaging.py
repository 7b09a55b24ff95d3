"""What a newcomer does right after `pip install .`: import fastnn from the repository root
(where ./fastnn shadows the installed package), read its version, and, where the compiled
module is missing from a source tree, get an error that says what happened and how to fix it."""
import importlib.metadata
import os
import pathlib
import subprocess
import sys

import pytest

import fastnn

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_version_comes_from_the_package_metadata():
    assert fastnn.__version__ == importlib.metadata.version("fastnn")


@pytest.mark.skipif(not (ROOT / "setup.py").exists(), reason="needs the source tree")
def test_import_from_the_repository_root_works():
    out = subprocess.run([sys.executable, "-c", "import fastnn; print(fastnn.get_backend(), "
                          "fastnn.__file__)"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    backend, path = out.stdout.split()
    assert backend == "compiled"


def test_a_source_tree_without_the_compiled_module_says_how_to_fix_it(tmp_path):
    """A copy of the package without its extension, imported from its tree: the error names
    the tree and the command that builds it."""
    tree = tmp_path / "checkout"
    pkg = pathlib.Path(fastnn.__file__).parent
    (tree / "src_c").mkdir(parents=True)
    (tree / "setup.py").write_text("")
    import shutil
    shutil.copytree(pkg, tree / "fastnn", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    out = subprocess.run([sys.executable, "-c", "import fastnn._kernels as k; print(k.__file__)"],
                         capture_output=True, text=True, cwd=tree,
                         env={**os.environ, "FASTNN_BACKEND": "compiled"})
    if out.returncode == 0 and str(tree) not in out.stdout:
        pytest.skip("an editable install maps fastnn._kernels to its checkout")
    assert out.returncode != 0
    assert f"imported from its source tree {tree}" in out.stderr
    assert "python setup.py build_ext --inplace" in out.stderr
