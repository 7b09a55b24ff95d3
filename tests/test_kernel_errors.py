"""Bad input at the kernel boundary: a clear TypeError/ValueError naming the operand, the
expectation and what was received; never a crash, never a half-written output."""
import os

import numpy as np
import pytest

import fastnn
from fastnn import _kernels as C
from fastnn._codes import LOSSES

RELU = C.ACT_CODES["relu"]


def dense_args(n=4, i=3, o=2, dtype=np.float32):
    return dict(y=np.zeros((n, o), dtype), z=None, x=np.ones((n, i), dtype),
                w=np.ones((i, o), dtype), b=np.ones(o, dtype), act=RELU, params=())


def test_compiled_backend_is_the_one_in_use():
    # CI must fail when the extension did not build: the default backend is the C one.
    if os.environ.get("FASTNN_BACKEND") != "numpy":
        assert fastnn.get_backend() == "compiled"
        assert fastnn.backend.K is C


@pytest.mark.parametrize("field, value, exc, words", [
    ("w", np.ones((3, 2), np.float64), TypeError, ["w", "float32", "<f8"]),
    ("w", np.ones((4, 2), np.float32), ValueError, ["w", "(3, 2)", "(4, 2)"]),
    ("b", np.ones(3, np.float32), ValueError, ["b", "(2,)", "(3,)"]),
    ("y", np.zeros((4, 3), np.float32), ValueError, ["y", "(4, 2)", "(4, 3)"]),
    ("y", np.zeros((2, 4), np.float32).T, ValueError, ["y", "C-contiguous"]),
    ("x", np.ones((4, 3), np.int64), TypeError, ["x", "float32 or float64", "int64"]),
    ("x", [[1.0, 2.0, 3.0]], TypeError, ["x", "numpy.ndarray", "list"]),
    ("w", np.ones((3, 2), ">f4"), TypeError, ["w", "native byte order", ">f4"]),
    ("act", 99, ValueError, ["act", "99"]),
])
def test_dense_forward_rejects_bad_operands(field, value, exc, words):
    args = dense_args()
    args[field] = value
    with pytest.raises(exc) as info:
        C.dense_forward(**args)
    for word in words:
        assert word in str(info.value)


def test_read_only_output_is_refused_and_untouched():
    args = dense_args()
    args["y"].flags.writeable = False
    with pytest.raises(ValueError, match="y to be writeable"):
        C.dense_forward(**args)
    assert np.all(args["y"] == 0)


def test_read_only_inputs_are_accepted():
    args = dense_args()
    for k in ("x", "w", "b"):
        args[k].flags.writeable = False
    C.dense_forward(**args)
    np.testing.assert_array_equal(args["y"], np.full((4, 2), 4.0, np.float32))


@pytest.mark.parametrize("alias", ["x", "w"])
def test_output_overlapping_an_input_is_refused(alias):
    buf = np.ones((4, 4), np.float32)
    args = dense_args(n=4, i=4, o=4)
    args[alias] = buf
    args["y"] = buf
    with pytest.raises(ValueError, match=f"y not to share memory with {alias}"):
        C.dense_forward(**args)


def test_empty_batch_is_refused():
    args = dense_args(n=0)
    with pytest.raises(ValueError, match="non-empty"):
        C.dense_forward(**args)


def test_dense_backward_gelu_needs_the_preactivation():
    x, w = np.ones((2, 3)), np.ones((3, 2))
    y, dy = np.ones((2, 2)), np.ones((2, 2))
    with pytest.raises(ValueError, match=f"z .the pre-activation. for act={C.ACT_CODES['gelu']}"):
        C.dense_backward(np.empty((3, 2)), None, None, np.empty((2, 2)), dy, x, w, y, None,
                         C.ACT_CODES["gelu"], ())


def test_dense_backward_dz_may_be_dy_but_dw_may_not():
    x, w, y, dy = np.ones((2, 3)), np.ones((3, 2)), np.ones((2, 2)), np.ones((2, 2))
    C.dense_backward(np.empty((3, 2)), None, None, dy, dy, x, w, y, None, RELU, ())
    big = np.ones((6, 2))
    with pytest.raises(ValueError, match="dw not to share memory with dy"):
        C.dense_backward(big[:3], None, None, np.empty((2, 2)), big[2:4], x, w, y, None, RELU, ())


def test_sparse_labels_out_of_range():
    p = np.full((3, 4), 0.25, np.float32)
    scce, fused = LOSSES["sparse_categorical_crossentropy"], LOSSES["sparse_softmax_crossentropy"]
    with pytest.raises(ValueError, match=r"labels in \[0, 4\). Received: labels\[2\]=4"):
        C.loss_backward(None, p, np.array([0, 1, 4]), scce)
    with pytest.raises(ValueError, match=r"labels\[0\]=-1"):
        C.loss_backward(np.empty_like(p), p, np.array([-1, 1, 2]), fused)
    with pytest.raises(TypeError, match="labels with dtype int64"):
        C.loss_backward(None, p, np.array([0, 1, 2], np.int32), scce)
    with pytest.raises(ValueError, match="dz, the gradient buffer"):
        C.loss_backward(None, p, np.array([0, 1, 2]), fused)
    with pytest.raises(ValueError, match="loss code"):
        C.loss_backward(None, p, np.array([0, 1, 2]), 99)


def test_loss_target_shape_mismatch():
    p = np.full((3, 4), 0.25, np.float32)
    with pytest.raises(ValueError, match=r"y_true with shape \(3, 4\). Received: y_true.shape=\(3, 5\)"):
        C.loss_backward(None, p, np.zeros((3, 5), np.float32), LOSSES["categorical_crossentropy"])


def _opt(p, rule, hyper=None, **slots):
    return C.OptimizerStep(p, rule, hyper or {}, slots)


def test_optimizer_operands_checked():
    p, g = np.ones(10, np.float32), np.ones(10, np.float32)
    with pytest.raises(ValueError, match=r"g with 10 elements. Received: g.shape=\(9,\)"):
        _opt(p, "sgd").step(p, np.ones(9, np.float32))
    with pytest.raises(TypeError, match=r"velocities with dtype float32"):
        _opt(p, "rmsprop", velocities=np.zeros(10))
    with pytest.raises(ValueError, match="g not to share memory with p"):
        _opt(p, "sgd").step(p, p)
    with pytest.raises(ValueError, match="momentum buffer 'momentums'"):
        _opt(p, "sgd", {"momentum": 0.9})
    with pytest.raises(ValueError, match="adam state array 'velocities'"):
        _opt(p, "adam", momentums=np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="momentums not to share memory with p"):
        _opt(p, "adam", momentums=p, velocities=np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="t >= 1"):
        _opt(p, "adam", momentums=np.zeros(10, np.float32),
             velocities=np.zeros(10, np.float32)).begin(0.1, 0)
    with pytest.raises(ValueError, match="rule in"):
        _opt(p, "ftrl")
    with pytest.raises(ValueError, match=r"p with 10 elements. Received: p.shape=\(4,\)"):
        _opt(p, "sgd").step(np.ones(4, np.float32), g)
    np.testing.assert_array_equal(p, np.ones(10, np.float32))  # nothing half-applied


def test_set_num_threads_validates_and_applies():
    before = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(1)
        assert fastnn.get_num_threads() == 1
        assert C.get_num_threads() == {"openmp": 1, "blas": 1}
    finally:
        fastnn.set_num_threads(before)
    for bad in (0, -1, 257, 50000, 2**31, 2.0, True, "2"):
        with pytest.raises(ValueError, match="an int from 1 to 256"):
            fastnn.set_num_threads(bad)
    assert fastnn.get_num_threads() == before


def test_set_num_threads_is_process_wide():
    """Set in one thread, the team size holds in every thread (OpenMP's own setting is per
    thread), and np.int64 counts are accepted."""
    import threading
    before = fastnn.get_num_threads()
    seen = []
    try:
        fastnn.set_num_threads(np.int64(1))
        t = threading.Thread(target=lambda: seen.append(C.get_num_threads()))
        t.start()
        t.join()
        assert seen == [{"openmp": 1, "blas": 1}] if C.build_info()["openmp"] else seen
        t = threading.Thread(target=fastnn.set_num_threads, args=(2,))
        t.start()
        t.join()
        assert C.get_num_threads()["blas"] == 2
        if C.build_info()["openmp"]:
            assert C.get_num_threads()["openmp"] == 2
    finally:
        fastnn.set_num_threads(before)


def test_gather_rows_checks_indices_and_shapes():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = np.empty((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"idx in \[0, 4\). Received: idx\[1\]=4"):
        C.gather_rows(out, x, np.array([0, 4]))
    with pytest.raises(ValueError, match=r"out with dtype float32 and shape \(2, 3\)"):
        C.gather_rows(np.empty((2, 4), np.float32), x, np.array([0, 1]))
    with pytest.raises(TypeError, match="idx with dtype int64"):
        C.gather_rows(out, x, np.array([0, 1], np.int32))


def test_outer_step_checks_the_factors():
    p, v = np.ones(12, np.float32), np.zeros(12, np.float32)
    a, b = np.ones(4, np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match=r"a.size \* b.size in \[1, 12\]"):
        _opt(p, "rmsprop", velocities=v).outer_step(p, np.ones(5, np.float32), b)
    with pytest.raises(TypeError, match="b with dtype float32"):
        _opt(p, "sgd").outer_step(p, a, b.astype(np.float64))
    with pytest.raises(ValueError, match="p not to share memory with a"):
        _opt(p, "adagrad", accumulators=v).outer_step(p, p[:4], b)
    np.testing.assert_array_equal(p, 1)


@pytest.mark.parametrize("env", [{"OMP_DYNAMIC": "true"}, {"OMP_THREAD_LIMIT": "1"}])
def test_unusual_openmp_settings_neither_hang_nor_change_results(env, tmp_path):
    """The BLAS runs its jobs on fastnn's OpenMP team only where OpenMP promises full teams;
    elsewhere it keeps its own threads.  Either way a threaded GEMM finishes and is right."""
    import subprocess
    import sys
    code = ("import numpy as np, fastnn\n"
            "from fastnn import _kernels as C\n"
            "rng = np.random.default_rng(0)\n"
            "x, w = rng.random((256, 784), 'float32'), rng.random((784, 512), 'float32')\n"
            "y = np.empty((256, 512), 'float32')\n"
            "C.dense_forward(y, None, x, w, None, 0, ())\n"
            "print(np.allclose(y, x.astype('float64') @ w, rtol=1e-4))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_norm_and_prelu_kernels_refuse_overlapping_outputs_but_take_dx_in_place():
    """One aliasing check for the norm and PReLU wrappers (_kernels._outputs_disjoint): an
    output may not overlap an input, another output or dy, except dx exactly dy."""
    rng = np.random.default_rng(0)
    x, dy = rng.random((4, 3)), rng.random((4, 3))
    mean, var = x.mean(0), x.var(0)
    C.batchnorm_backward(dy, np.empty(3), np.empty(3), dy, x, mean, var, None, 1e-3)  # in place
    C.prelu_backward(dy, None, dy, x, np.ones(3))
    with pytest.raises(ValueError, match="dgamma not to share memory with dy"):
        C.batchnorm_backward(np.empty((4, 3)), dy[0], np.empty(3), dy, x, mean, var, None, 1e-3)
    with pytest.raises(ValueError, match="dgamma not to share memory with dbeta"):
        d = np.empty(3)
        C.layernorm_backward(np.empty((4, 3)), d, d, dy, x, np.empty(4), np.ones(4), None)
    with pytest.raises(ValueError, match="dalpha not to share memory with dy"):
        C.prelu_backward(np.empty((4, 3)), dy[1], dy, x, np.ones(3))
    with pytest.raises(ValueError, match="y not to share memory with x"):
        C.layernorm_forward(x, np.empty(4), np.empty(4), x, None, None, 1e-3)
    with pytest.raises(ValueError, match="mean not to share memory with x"):
        C.batchnorm_forward(np.empty((4, 3)), x[0], np.empty(3), x, None, None, 1e-3, True)
