"""Comparison tolerances of compiled kernels against the NumPy reference, by dtype (as in
scikit-learn's BLAS tests).  One place, never loosened to make a test pass."""
import numpy as np

TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}
