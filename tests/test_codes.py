"""fastnn/_codes.py mirrors the codes and constants of src_c/fastnn.h: checked against the
compiled module (its values come from the header's enums), and the Python side reads them
from that one place."""
import ast
import pathlib

import pytest

from fastnn import _codes, activations, config, losses

C = pytest.importorskip("fastnn._kernels")


def test_codes_match_the_compiled_header():
    built = C.codes()
    assert built["activations"] == _codes.ACTIVATIONS
    assert built["n_activations"] == len(_codes.ACTIVATIONS)
    assert built["act_needs_x"] == _codes.ACT_NEEDS_X
    assert built["act_params"] == _codes.ACT_PARAMS
    assert built["losses"] == _codes.LOSSES
    assert built["n_losses"] == len(_codes.LOSSES)
    assert built["optimizer_rules"] == _codes.OPTIMIZER_RULES
    assert built["n_optimizer_rules"] == len(_codes.OPTIMIZER_RULES)
    assert built["epsilon"] == _codes.EPSILON
    assert built["bf16_paths"] == _codes.BF16_PATHS
    assert built["n_bf16_paths"] == len(_codes.BF16_PATHS)
    assert built["gemm_paths"] == _codes.GEMM_PATHS
    assert built["n_gemm_paths"] == len(_codes.GEMM_PATHS)


def test_every_public_module_reads_the_codes_not_the_oracle():
    """The public API never imports the NumPy oracle for constants."""
    root = pathlib.Path(activations.__file__).parent
    for path in root.glob("*.py"):
        if path.name in ("_reference.py", "backend.py"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "fastnn._reference", path.name
                assert "_reference" not in [a.name for a in node.names], path.name


def test_the_constants_are_used_where_they_belong():
    assert config.epsilon() == _codes.EPSILON
    assert activations.spec("gelu").code == _codes.ACTIVATIONS["gelu"]
    assert losses.get("categorical_crossentropy").fused_code == _codes.LOSSES["softmax_crossentropy"]
