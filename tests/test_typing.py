"""fastnn's type hints: the package ships them (fastnn/py.typed, PEP 561), it passes
`mypy --strict` with the [tool.mypy] settings of pyproject.toml, and the stub of the compiled
module (fastnn/_kernels.pyi) matches what fastnn/_kernels.pyx defines (mypy's stubtest).

Each check runs mypy in a subprocess from the repository root (mypy keeps its cache in
build/.mypy_cache): a few seconds each (under 15 s together from a cold cache)."""
import pathlib
import subprocess
import sys

import pytest

import fastnn

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyproject.toml"
INSTALLED = pathlib.Path(fastnn.__file__).resolve().parent
# the source tree when the tests run from one (always, here), else the installed package
PACKAGE = ROOT / "fastnn" if (ROOT / "fastnn" / "__init__.py").is_file() else INSTALLED


def _run(*args):
    pytest.importorskip("mypy", reason="mypy is not installed (pip install mypy, or the test "
                                       "extra: pip install '.[test]')")
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_the_package_ships_its_type_hints():
    for pkg in {PACKAGE, INSTALLED}:
        assert (pkg / "py.typed").is_file(), pkg
        assert (pkg / "_kernels.pyi").is_file(), pkg


def test_mypy_strict_passes_on_the_package():
    out = _run("mypy", "--strict", "--config-file", str(CONFIG), str(PACKAGE))
    assert out.returncode == 0, f"mypy --strict {PACKAGE}:\n{out.stdout}{out.stderr}"
    assert "Success: no issues found" in out.stdout


def test_the_stub_matches_the_compiled_module(tmp_path):
    pytest.importorskip("fastnn._kernels", reason="the compiled module is not built")
    allowlist = tmp_path / "allowlist.txt"
    # what Cython adds to every module it compiles
    allowlist.write_text("fastnn\\._kernels\\.__test__\n"
                         "fastnn\\._kernels\\.__(reduce|setstate)_cython__\n")
    out = _run("mypy.stubtest", "--concise", "--mypy-config-file", str(CONFIG),
               "--allowlist", str(allowlist), "--ignore-unused-allowlist", "fastnn._kernels")
    # recent stubtest also asks for PEP 800's @disjoint_base on cdef classes, which older
    # mypy releases cannot read: not a mismatch of names, arguments or defaults
    problems = [line for line in out.stdout.splitlines()
                if line.strip() and "is a disjoint base at runtime" not in line]
    assert out.returncode == 0 or (not problems and not out.stderr.strip()), \
        f"stubtest fastnn._kernels:\n{out.stdout}{out.stderr}"
