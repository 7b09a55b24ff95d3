"""The benchmark scripts still run against this tree (slow: `pytest -m slow`): a kernel's
signature change must not leave bench/ broken.  Their figures are checked by the scripts
themselves (each verifies fastnn against the NumPy reference before timing)."""
import json
import os
import subprocess
import sys

import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")


def _run(*args):
    out = subprocess.run([sys.executable, *args], cwd=BENCH, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_bf16_bench_runs_and_verifies():
    out = _run("bf16.py", "--quick")
    assert "verified: every path's forward matches the NumPy twin" in out
    assert "one kernel (dense_backward_step_bf16)" in out


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["fastnn", "fastnn-bf16", "numpy"])
def test_e2e_bench_trains(impl):
    r = json.loads(_run("e2e.py", "--impl", impl, "--batch-size", "128", "--steps", "40"))
    assert r["impl"] == impl and len(r["epoch_times"]) == 1 and r["test_acc"] > 0.5
