"""ONNX export (fastnn/export.py): the exported graph, run by onnxruntime, gives predict's
outputs for every layer and activation, in float32 and float64, at any batch size.

Tolerance: tests/tolerances.py TOL, the project's one table for "the same computation to the
dtype's rounding": float32 rtol 1e-5, atol 1e-6; float64 rtol 1e-12, atol 1e-13.  The two
sides compute the same formulas with different kernels: each Dense output is a dot product of
up to 784 terms that OpenBLAS (fastnn) and MLAS (onnxruntime) sum in different orders, which
moves it by a few units of the last place times sqrt(784) at most in practice (~3e-6 relative
in float32), and exp/tanh/erf are different vectorised approximations (1-2 ulp).  The
tolerance is tight enough to catch any wrong formula: a wrong alpha, the tanh approximation
of gelu (off by up to 5e-4 in float32; asserted below), softmax over another axis, Dropout
applied at inference.
"""
import functools
import math
import os
import stat

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from fastnn import activations, export, layers, models  # noqa: E402
from tolerances import TOL  # noqa: E402

DTYPES = ("float32", "float64")
BATCHES = (1, 7, 33, 300)  # one sample, odd sizes, and one larger than any kernel's block


def session(source):
    """An onnxruntime session on a file path or a ModelProto."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not isinstance(source, (str, os.PathLike)):
        source = source.SerializeToString()
    else:
        source = os.fspath(source)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])


def assert_matches(model, sess, x):
    got = sess.run(["y"], {"x": x})[0]
    want = model.predict(x, verbose=0)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, **TOL[want.dtype.type])


def samples(n, shape, dtype, scale=2.0, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, *shape)) * scale).astype(dtype)


def exported(model, tmp_path, name="m.onnx"):
    path = tmp_path / name
    export.export(model, path, "onnx")
    return path, session(path)


# ---- every activation, every layer ---------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", activations.NAMES)
def test_every_activation_matches_predict(tmp_path, act, dtype):
    """Each activation fused in Dense and in an Activation layer, at batch 1, 7, 33, 300.
    (exponential follows a tanh layer: exp(exp(x)) would reach 1e280, where one ulp of the
    inner exp moves the outer one by 600 ulps.)"""
    first = "tanh" if act == "exponential" else act
    model = models.Sequential([layers.Dense(24, activation=first, input_shape=(6,), dtype=dtype),
                               layers.Activation(act, dtype=dtype),
                               layers.Dense(5, activation=act, dtype=dtype)], seed=3)
    path, sess = exported(model, tmp_path)
    onnx.checker.check_model(str(path), full_check=True)
    for n in BATCHES:
        assert_matches(model, sess, samples(n, (6,), dtype, seed=n))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,alpha", [("leaky_relu", 0.05), ("leaky_relu", 1.7),
                                        ("elu", 0.4), ("elu", 2.5)])
def test_alpha_of_leaky_relu_and_elu_is_exported(tmp_path, name, alpha, dtype):
    key = "negative_slope" if name == "leaky_relu" else "alpha"
    spec = functools.partial(getattr(activations, name), **{key: alpha})
    model = models.Sequential([layers.Dense(16, activation=spec, input_shape=(5,), dtype=dtype),
                               layers.Activation(spec, dtype=dtype)], seed=1)
    assert model.layers[0].activation.params == (alpha,)
    _, sess = exported(model, tmp_path)
    for n in (1, 33):
        assert_matches(model, sess, samples(n, (5,), dtype, seed=n))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", [
    functools.partial(activations.relu, negative_slope=0.1, max_value=2.0, threshold=0.3),
    functools.partial(activations.relu, threshold=-0.5),
    functools.partial(activations.relu, max_value=1.5),
    functools.partial(activations.relu, max_value=6.0),
    functools.partial(activations.relu, negative_slope=0.25),
    functools.partial(activations.gelu, approximate=True),
    # issue #11's: threshold (which has no defaults), the others with other arguments
    functools.partial(activations.threshold, threshold=0.3, default_value=-1.5),
    functools.partial(activations.threshold, threshold=-0.2, default_value=2.0),
    functools.partial(activations.hard_shrink, threshold=1.2),
    functools.partial(activations.soft_shrink, threshold=0.0),
    functools.partial(activations.soft_shrink, threshold=1.5),
    functools.partial(activations.celu, alpha=0.4), functools.partial(activations.celu, alpha=2.5),
    functools.partial(activations.squareplus, b=0.5)], ids=repr)
def test_activation_arguments_are_exported(tmp_path, act, dtype):
    """relu with arguments (every kernel it maps to), gelu's tanh form, and issue #11's with
    arguments."""
    model = models.Sequential([layers.Dense(24, activation=act, input_shape=(6,), dtype=dtype),
                               layers.Activation(act, dtype=dtype),
                               layers.Dense(5, activation=act, dtype=dtype)], seed=3)
    _, sess = exported(model, tmp_path)
    for n in (1, 33):
        assert_matches(model, sess, samples(n, (6,), dtype, seed=n))


def test_every_layer_kind(tmp_path):
    """One model with every layer class fastnn has (a new class fails here until exported),
    on 3-D samples: the Activation layers act on the last axis, softmax included."""
    model = models.Sequential([layers.Input(shape=(4, 7)),
                               layers.Activation("softmax"),
                               layers.Activation("tanh"),
                               layers.Flatten(),
                               layers.Dense(16, activation="relu"),
                               layers.Dropout(0.5),
                               layers.Dense(8, use_bias=False),
                               layers.Activation("softmax"),
                               # the layers of issue #11 (tests/test_layers_keras.py has more)
                               layers.Rescaling(2.0, -1.0), layers.Normalization(mean=0.1,
                                                                                 variance=0.5),
                               layers.BatchNormalization(), layers.PReLU(),
                               layers.Reshape((2, 4)), layers.LayerNormalization(),
                               layers.ReLU(max_value=1.0), layers.LeakyReLU(),
                               layers.Softmax(axis=1), layers.GaussianNoise(0.1)], seed=2)
    kinds = {type(l) for l in model.layers} | {layers.InputLayer}
    assert kinds == set(layers.LAYERS.values())
    _, sess = exported(model, tmp_path)
    for n in BATCHES:
        assert_matches(model, sess, samples(n, (4, 7), "float32", seed=n))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparsemax_on_the_last_axis_of_3d_samples(tmp_path, dtype):
    """sparsemax's sorted, cumulative form over the last axis of (batch, 4, 7) samples, with
    ties and rows whose support is several entries (scale 0.3)."""
    model = models.Sequential([layers.Input(shape=(4, 7), dtype=dtype),
                               layers.Activation("sparsemax", dtype=dtype)], seed=0)
    _, sess = exported(model, tmp_path)
    for n in (1, 33):
        x = samples(n, (4, 7), dtype, scale=0.3, seed=n)
        x[:, 0, :2] = 0.25  # a tie inside the support
        assert_matches(model, sess, x)
        assert np.all(model.predict(x, verbose=0).astype(bool).sum(axis=-1)[:, 1:] > 1)


def test_graph_nodes_per_layer(tmp_path):
    model = models.Sequential([layers.Flatten(input_shape=(2, 3), name="flat"),
                               layers.Dense(4, activation="gelu", name="hidden"),
                               layers.Dropout(0.1, name="drop"),
                               layers.Dense(3, use_bias=False, activation="softmax", name="out"),
                               layers.Activation("linear", name="act")], seed=0)
    path, _ = exported(model, tmp_path)
    graph = onnx.load(str(path)).graph
    ops = [(n.name.split("/")[0], n.op_type) for n in graph.node]
    assert ops == [("flat", "Flatten"), ("hidden", "MatMul"), ("hidden", "Add"),
                   ("hidden", "Div"), ("hidden", "Erf"), ("hidden", "Add"), ("hidden", "Mul"),
                   ("hidden", "Mul"), ("drop", "Identity"), ("out", "MatMul"),
                   ("out", "Softmax"), ("act", "Identity")]
    assert graph.node[-1].output[0] == "y"
    softmax = next(n for n in graph.node if n.op_type == "Softmax")
    assert [(a.name, a.i) for a in softmax.attribute] == [("axis", -1)]
    assert [list(n.input) for n in graph.node if n.name.endswith(("MatMul", "Add"))][:2] == [
        ["flat/Flatten", "hidden/kernel"], ["hidden/MatMul", "hidden/bias"]]
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    np.testing.assert_array_equal(weights["hidden/kernel"], model.layers[1].kernel)
    np.testing.assert_array_equal(weights["hidden/bias"], model.layers[1].bias)
    np.testing.assert_array_equal(weights["out/kernel"], model.layers[3].kernel)
    assert "Dropout" not in {n.op_type for n in graph.node}


# ---- the networks of the brief --------------------------------------------------------------

def test_book_network(tmp_path, mnist_small):
    """Dense(512, relu) + Dense(10, softmax) on 784 inputs, trained one epoch on MNIST
    images: the exported model gives predict's probabilities and the same accuracy."""
    x, y, xt, _, _, labels = mnist_small
    model = models.Sequential([layers.Dense(512, activation="relu", input_shape=(784,)),
                               layers.Dense(10, activation="softmax")], seed=0)
    model.compile(optimizer="rmsprop", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, batch_size=128, verbose=0)
    _, sess = exported(model, tmp_path, "mnist.onnx")
    for n in (1, 7, 33):
        assert_matches(model, sess, xt[:n])
    assert_matches(model, sess, xt)  # 500 images in one batch
    probs = sess.run(["y"], {"x": xt})[0]
    np.testing.assert_array_equal(probs.argmax(1), model.predict(xt, verbose=0).argmax(1))
    assert (probs.argmax(1) == labels).mean() > 0.8


def test_flatten_model_on_28x28_images(tmp_path, mnist_small):
    x = mnist_small[2].reshape(-1, 28, 28)
    model = models.Sequential([layers.Flatten(input_shape=(28, 28)),
                               layers.Dense(32, activation="relu"),
                               layers.Dense(10, activation="softmax")], seed=0)
    path, sess = exported(model, tmp_path)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 28, 28]
    for n in BATCHES:
        assert_matches(model, sess, x[:n])


def test_dropout_is_the_identity_at_inference(tmp_path):
    x = samples(64, (10,), "float32")
    y = np.eye(3, dtype="float32")[np.arange(64) % 3]
    model = models.Sequential([layers.Dense(32, activation="relu", input_shape=(10,)),
                               layers.Dropout(0.5),
                               layers.Dense(3, activation="softmax")], seed=0)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)  # dropout active in training
    path, sess = exported(model, tmp_path)
    assert [n.op_type for n in onnx.load(str(path)).graph.node] == [
        "MatMul", "Add", "Relu", "Identity", "MatMul", "Add", "Softmax"]
    for n in BATCHES:
        assert_matches(model, sess, samples(n, (10,), "float32", seed=n))
    # and not what training does
    assert not np.allclose(model(x, training=True), sess.run(["y"], {"x": x})[0])


# ---- the graph's interface ------------------------------------------------------------------

@pytest.mark.parametrize("dtype,elem", [("float32", 1), ("float64", 11)])  # FLOAT, DOUBLE
def test_interface_opset_and_checker(tmp_path, dtype, elem):
    model = models.Sequential([layers.Dense(5, activation="gelu", input_shape=(3,), dtype=dtype),
                               layers.Dense(2, activation="elu", dtype=dtype)], seed=0)
    path, sess = exported(model, tmp_path)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.ir_version == export.IR_VERSION == 8
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", export.OPSET)]
    assert export.OPSET == 17 and proto.producer_name == "fastnn"
    (inp,), (out,) = proto.graph.input, proto.graph.output
    for v, dims in ((inp, ["batch", 3]), (out, ["batch", 2])):
        assert v.type.tensor_type.elem_type == elem
        assert [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] == dims
    assert inp.name == "x" and out.name == "y"
    assert [i.name for i in sess.get_inputs()] == ["x"]
    assert sess.get_inputs()[0].shape == ["batch", 3]
    assert sess.get_outputs()[0].type == ("tensor(float)" if dtype == "float32"
                                          else "tensor(double)")


def test_to_onnx_in_memory_and_model_unchanged(tmp_path):
    model = models.Sequential([layers.Dense(4, activation="tanh", input_shape=(3,))], seed=0)
    before = model.get_weights()
    proto = export.to_onnx(model)
    assert_matches(model, session(proto), samples(7, (3,), "float32"))
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the weights are copied: training on does not change the proto
    model.layers[0].kernel[...] += 1
    assert not np.allclose(session(proto).run(["y"], {"x": samples(7, (3,), "float32")})[0],
                           model.predict(samples(7, (3,), "float32"), verbose=0))


def test_float64_gelu_to_float64_rounding():
    """float64 gelu has no Erf kernel in onnxruntime: export writes x * Phi(x) from erfc.
    It matches predict, and x * erfc(-x / sqrt 2) / 2 to relative 1e-13 for |x| <= 14 (more
    closely than predict's 0.5 x (1 + erf(x / sqrt 2)), which cancels for negative x); past
    that the values are below 1e-40 and the polynomial's argument is clamped."""
    grid = np.concatenate([np.linspace(-40, 40, 4001), -np.geomspace(1e-300, 40, 300),
                           np.geomspace(1e-300, 40, 300), [0.0, -0.0, 1e308, -1e308]])
    model = models.Sequential([layers.Activation("gelu", input_shape=(grid.size,),
                                                 dtype="float64")])
    x = grid[None, :]
    got = session(export.to_onnx(model)).run(["y"], {"x": x})[0][0]
    np.testing.assert_allclose(got, model.predict(x, verbose=0)[0], **TOL[np.float64])
    truth = np.array([v * (math.erfc(-v / math.sqrt(2)) / 2) for v in grid])
    near = np.abs(grid) <= 14
    np.testing.assert_allclose(got[near], truth[near], rtol=1e-13, atol=0)
    np.testing.assert_allclose(got[~near], truth[~near], rtol=1e-13, atol=1e-40)
    assert got[-2] == 1e308 and got[-1] == 0  # the tails


def test_float32_gelu_is_exact_gelu_not_the_tanh_approximation():
    """The tolerance tells exact gelu from its tanh approximation (Keras' approximate=True)."""
    x = np.linspace(-6, 6, 1201, dtype="float32")[None, :]
    model = models.Sequential([layers.Activation("gelu", input_shape=(x.shape[1],))])
    got = session(export.to_onnx(model)).run(["y"], {"x": x})[0]
    want = model.predict(x, verbose=0)
    np.testing.assert_allclose(got, want, **TOL[np.float32])
    approx = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    assert not np.allclose(approx, want, **TOL[np.float32])


# ---- refusals -------------------------------------------------------------------------------

def test_unbuilt_model_is_refused(tmp_path):
    path = tmp_path / "m.onnx"
    for model in (models.Sequential([layers.Dense(3)]), models.Sequential()):
        with pytest.raises(ValueError, match="Expected a built model before export"):
            export.export(model, path, "onnx")
        with pytest.raises(ValueError, match="Expected a built model"):
            export.export_onnx(model, path)
    assert not path.exists()


@pytest.mark.parametrize("fmt", ["tf_saved_model", "ONNX", "openvino", "", None, 1])
def test_unsupported_format_is_refused(tmp_path, fmt):
    model = models.Sequential([layers.Dense(3, input_shape=(2,))], seed=0)
    with pytest.raises(ValueError, match=r"Expected format to be one of \['onnx'\].*"
                                         r"Received: format=" + repr(fmt).replace("'", ".")):
        export.export(model, tmp_path / "m.onnx", fmt)
    assert list(tmp_path.iterdir()) == []


def test_mixed_dtypes_are_refused_as_predict_refuses_them(tmp_path):
    model = models.Sequential([layers.Dense(3, input_shape=(2,)),
                               layers.Dense(2, dtype="float64")], seed=0)
    with pytest.raises(ValueError, match="dtype float32.*'dense.*float64"):
        export.export_onnx(model, tmp_path / "m.onnx")


@pytest.mark.parametrize("bad", [None, 3, ["m.onnx"]])
def test_bad_filepath_is_refused(bad):
    model = models.Sequential([layers.Dense(3, input_shape=(2,))], seed=0)
    with pytest.raises(TypeError, match="Expected filepath"):
        export.export_onnx(model, bad)


def test_directory_filepath_is_refused(tmp_path):
    model = models.Sequential([layers.Dense(3, input_shape=(2,))], seed=0)
    with pytest.raises(ValueError, match="directory"):
        export.export_onnx(model, tmp_path)


# ---- the file -------------------------------------------------------------------------------

def test_overwrite_keeps_mode_and_leaves_no_temporary_file(tmp_path, capsys):
    model = models.Sequential([layers.Dense(3, activation="relu", input_shape=(2,))], seed=0)
    path = tmp_path / "m.onnx"
    export.export(model, str(path), "onnx", verbose=True)
    assert "Saved artifact at" in capsys.readouterr().out
    os.chmod(path, 0o640)
    model.layers[0].kernel[...] *= -1
    export.export(model, path.as_posix().encode(), "onnx")  # bytes paths too
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    assert_matches(model, session(path), samples(5, (2,), "float32"))
    # a refused export leaves the file as it was
    with pytest.raises(ValueError):
        export.export(models.Sequential([layers.Dense(2)]), path, "onnx")
    assert_matches(model, session(path), samples(5, (2,), "float32"))


def test_large_weights_go_to_external_data(tmp_path, monkeypatch):
    """Past protobuf's 2 GiB the weights go to "<file>.data" (threshold lowered here)."""
    monkeypatch.setattr(export, "_MAX_INLINE_BYTES", 0)
    model = models.Sequential([layers.Dense(64, activation="relu", input_shape=(32,)),
                               layers.Dense(4, activation="softmax")], seed=0)
    path = tmp_path / "big.onnx"
    (tmp_path / "big.onnx.data").write_bytes(b"stale")  # replaced, not appended to
    export.export_onnx(model, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    kernels = sum(l.kernel.nbytes for l in model.layers)
    assert (tmp_path / "big.onnx.data").stat().st_size >= kernels
    for n in (1, 33):
        assert_matches(model, session(path), samples(n, (32,), "float32", seed=n))


def test_repeated_layer_names_get_unique_node_names(tmp_path):
    # (names are unique within a model, as Keras; a nested model may repeat one)
    model = models.Sequential([layers.Dense(4, activation="elu", input_shape=(3,), name="d"),
                               models.Sequential([layers.Dense(4, activation="elu", name="d")]),
                               layers.Dense(2, name="d_1")], seed=0)
    path, sess = exported(model, tmp_path)
    graph = onnx.load(str(path)).graph
    assert [t.name for t in graph.initializer] == [
        "d/kernel", "d/bias", "d_1/kernel", "d_1/bias", "d_1_1/kernel", "d_1_1/bias"]
    assert_matches(model, sess, samples(7, (3,), "float32"))


def test_without_onnx_the_error_says_what_to_install(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "onnx", None)
    model = models.Sequential([layers.Dense(3, input_shape=(2,))], seed=0)
    with pytest.raises(ImportError, match="pip install onnx"):
        export.export(model, tmp_path / "m.onnx", "onnx")
