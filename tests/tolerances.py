"""Comparison tolerances of compiled kernels against the NumPy reference, by dtype (as in
scikit-learn's BLAS tests).  One place, never loosened to make a test pass."""
import numpy as np

TOL = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}

# bfloat16 products with float32 sums (src_c/bf16.c, fastnn/_reference.py's twins).  A
# bfloat16 has an 8-bit significand, so the product of two (16 bits) is exact in float32 (24
# bits): two paths, or a path and its NumPy twin, start from the same bits (the conversion is
# bit-exact) and differ only in the order they add the K products of each output in float32.
# Any order's error is at most (K - 1) u sum_k |a_ik b_kj| with u = 2^-24 (Higham, Accuracy and
# Stability of Numerical Algorithms, 4.2; blocked and pairwise orders included), so two orders
# differ by at most twice that.  Derived once, here: the element-wise bound of a product.
BF16_SIGNIFICAND_BITS = 8
assert 2 * BF16_SIGNIFICAND_BITS <= 24  # the products are exact in float32


def bf16_product_atol(abs_a, abs_b):
    """The largest difference two float32 summation orders allow in a @ b for bfloat16 a
    (m, K) and b (K, n), from |a| and |b| as float64: 2 (K - 1) 2^-24 (|a| @ |b|)."""
    k = abs_a.shape[1]
    return 2.0 * max(k - 1, 0) * 2.0 ** -24 * (abs_a @ abs_b)
