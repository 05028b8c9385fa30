"""The CUDA target's tensor-core tiles, emulated on the CPU.

For bf16 weights `moe-lower-to-nvvm` builds the expert GEMMs from warp-level
16×8×16 `mma.sync` tiles (lib/Conversion/MoEToGPU/TensorCoreMatmul.cpp).
`gpu-patterns=true gpu-tensor-cores=true` builds the same tiles for the CPU
with the instruction replaced by a loop that reads every A and B element
from the fragment register of the lane the PTX layout puts it in, computed
by the kernel's own fragment code with that lane's id. So these tests run
the tiling, the per-expert masking of tiles whose rows span experts, the
edges (d_model and expert_hidden not multiples of 16 or 8, T not a multiple
of 16), the f32 → bf16 term split and the fragment layout against the
reference. What they cannot check is the instruction itself (its operand
order and types are FileChecked on the PTX in test/Target/cuda.test; its
results need a GPU: test_cuda_target.py).
"""

import numpy as np
import pytest

import moe_mlir
from compile_helpers import (assert_same_bits, compare, make_weights, make_x, mh_spec,
                             moe_spec, requires_compiler)

pytestmark = requires_compiler

# mma_precision="f32": the activations' three bf16 terms sum to them exactly,
# so every product is the reference's and only the order of the f32 sums
# differs (16-deep MMA steps, the lo, mid and hi terms in turn): f32
# rounding, as between the CPU's fast and reference pipelines. (A split that
# lost bits would show bf16's ~3e-3 here.)
F32_RTOL, F32_ATOL = 1e-5, 1e-5
# mma_precision="bf16": each activation rounded to bf16 once (relative error
# <= 2^-9 per product). Elementwise errors are relative to the products, not
# to outputs that cancel to near zero, so the bound is normwise, as for any
# bf16 GEMM: ||got - ref|| / ||ref|| <= 1e-2 (measured here: ~3e-3).
BF16_NORMWISE = 1e-2


def assert_normwise_close(got, ref, bound=BF16_NORMWISE):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    error = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert error <= bound, f"normwise error {error:.2e} > {bound:.0e}"

SPECS = [
    # d_model 24 and expert_hidden 20: partial depth steps and column tiles.
    moe_spec("tc_edges", d_model=24, experts=5, expert_hidden=20, weight_dtype="bf16"),
    moe_spec("tc_aligned", d_model=32, experts=4, expert_hidden=16, weight_dtype="bf16"),
    moe_spec("tc_geglu_bias", activation="geglu", expert_bias=True, expert_scale=True,
             weight_dtype="bf16"),
    # 16 experts, top-8: a 16-row tile spans many experts.
    moe_spec("tc_many", d_model=16, experts=16, expert_hidden=8, router={"top_k": 8},
             weight_dtype="bf16"),
    moe_spec("tc_capacity", router={"top_k": 2}, capacity={"factor": 0.5},
             weight_dtype="bf16"),
    moe_spec("tc_shared", shared_experts={"hidden": 8, "gate": True}, experts=8,
             weight_dtype="bf16"),
    mh_spec("tc_mh", experts=4, weight_dtype="bf16"),
]


def _compile(spec, precision="f32"):
    return moe_mlir.compile(spec, pipeline="reference",
                            tiles=f"gpu-patterns=true gpu-tensor-cores=true "
                                  f"gpu-mma-precision={precision}")


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s["name"])
@pytest.mark.parametrize("tokens", [1, 7, 16, 33])
def test_matches_reference(spec, tokens):
    layer = _compile(spec)
    W = make_weights(spec, seed=tokens)
    x = make_x(tokens, spec["d_model"], seed=tokens + 1)
    got = layer.forward(x, **W)
    ref = moe_mlir.compile(spec, pipeline="reference").forward(x, **W)
    compare(got, ref, out_rtol=F32_RTOL, out_atol=F32_ATOL)


@pytest.mark.parametrize("spec", SPECS[:2], ids=lambda s: s["name"])
def test_bf16_activations(spec):
    layer = _compile(spec, "bf16")
    W = make_weights(spec)
    x = make_x(33, spec["d_model"])
    got = layer.forward(x, **W)
    ref = moe_mlir.compile(spec, pipeline="reference").forward(x, **W)
    np.testing.assert_array_equal(got["topk_ids"], ref["topk_ids"])
    assert_normwise_close(got["out"], ref["out"])
    exact = _compile(spec).forward(x, **W)
    assert not np.array_equal(got["out"], exact["out"]), "rounding to bf16 changed nothing"


@pytest.mark.parametrize("spec", [SPECS[0], SPECS[3]], ids=lambda s: s["name"])
def test_batch_invariant(spec):
    """A token's bits do not depend on the other rows of its tile."""
    layer = _compile(spec).bind(**make_weights(spec))
    x = make_x(40, spec["d_model"])
    batch = layer.forward(x)
    for t in (0, 15, 16, 39):
        alone = layer.forward(x[t:t + 1])
        assert_same_bits(alone["out"], batch["out"][t:t + 1], f"token {t}")


def test_skewed_and_unused_experts():
    spec = moe_spec("tc_skew", experts=6, weight_dtype="bf16")
    W = make_weights(spec)
    W["gate"] = np.zeros_like(W["gate"])
    W["gate"][3] = 5.0
    x = np.abs(make_x(20, spec["d_model"])) + 0.1
    got = _compile(spec).forward(x, **W)
    ref = moe_mlir.compile(spec, pipeline="reference").forward(x, **W)
    compare(got, ref, out_rtol=F32_RTOL, out_atol=F32_ATOL)


def test_non_finite_activations():
    """±Inf keeps its zero mid and lo terms (no Inf - Inf), NaN stays NaN."""
    spec = SPECS[1]
    W = make_weights(spec)
    x = make_x(5, spec["d_model"])
    x[1, 3] = np.inf
    x[2, 0] = -np.inf
    x[3, 7] = np.nan
    got = _compile(spec).forward(x, **W)
    ref = moe_mlir.compile(spec, pipeline="reference").forward(x, **W)
    for t in range(5):
        np.testing.assert_array_equal(np.isnan(got["out"][t]), np.isnan(ref["out"][t]),
                                      err_msg=f"token {t}: NaNs")
        np.testing.assert_array_equal(np.isinf(got["out"][t]), np.isinf(ref["out"][t]),
                                      err_msg=f"token {t}: Infs")
    finite = np.isfinite(ref["out"])
    np.testing.assert_allclose(got["out"][finite], ref["out"][finite], rtol=F32_RTOL,
                               atol=F32_ATOL)


def test_f32_weights_keep_the_reference_bits():
    """Tensor cores take bf16 weights only: f32 layers stay SIMT, bit for bit."""
    spec = moe_spec("tc_f32", d_model=24, experts=5, expert_hidden=20)
    W = make_weights(spec)
    x = make_x(9, spec["d_model"])
    got = _compile(spec).forward(x, **W)
    ref = moe_mlir.compile(spec, pipeline="reference").forward(x, **W)
    for key in ref:
        assert_same_bits(got[key], ref[key], key)
