"""benchmarks/hf_blocks.py: which specs transformers has a block for, and
that the block built from a spec and its weights computes what the NumPy
reference computes (so the peer the main job and the benchmark compare with
is the same layer). The blocks need torch and transformers, which are
optional: those tests are skipped without them."""

import sys
from pathlib import Path

import numpy as np
import pytest

import moe_mlir
from moe_mlir import reference

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import hf_blocks  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("spec, case", [
    ("mixtral.yaml", "mixtral"),
    ("qwen_moe.yaml", "qwen2_moe"),
    ("deepseek_v3.yaml", "deepseek_v3"),
    ("mh_moe.yaml", None),
    ("switch.yaml", None),
    ("peer.yaml", None),
    ("pkm.json", None),
])
def test_case_of_examples(spec, case):
    got, why_not = hf_blocks.hf_case(moe_mlir.load_spec(str(EXAMPLES / spec)))
    assert got == case
    assert (why_not is None) == (case is not None)


BASE = dict(name="hf", kind="moe", d_model=32, experts=8, expert_hidden=16)
SPECS = {
    "mixtral": dict(BASE, router=dict(top_k=2, order="topk_then_score")),
    "qwen3": dict(BASE, router=dict(top_k=3, normalize=True)),
    "qwen3_unnormalized": dict(BASE, router=dict(top_k=3)),
    "qwen2_moe": dict(BASE, router=dict(top_k=2), shared_experts=dict(hidden=24, gate=True)),
    "deepseek_v3": dict(BASE, router=dict(top_k=3, score="sigmoid", normalize=True, scaling=2.5,
                                          selection_bias=True, groups=4, topk_groups=2,
                                          group_score="top2_sum"),
                        shared_experts=dict(hidden=32)),
    "deepseek_v3_unbiased": dict(BASE, router=dict(top_k=3, score="sigmoid"),
                                 shared_experts=dict(hidden=16)),
}
UNMATCHED = {
    "geglu": dict(BASE, activation="geglu", router=dict(top_k=2)),
    "capacity": dict(BASE, router=dict(top_k=2), capacity=dict(factor=1.0)),
    "max_groups": dict(BASE, router=dict(top_k=2, score="sigmoid", groups=2, topk_groups=1),
                       shared_experts=dict(hidden=16)),
    "ungated_shared_softmax": dict(BASE, router=dict(top_k=2), shared_experts=dict(hidden=16)),
}


@pytest.mark.parametrize("name", sorted(UNMATCHED))
def test_no_case_says_why(name):
    case, why_not = hf_blocks.hf_case(moe_mlir.load_spec(UNMATCHED[name]))
    assert case is None and why_not


@pytest.mark.skipif(hf_blocks.import_error() is not None,
                    reason=f"torch/transformers not importable: {hf_blocks.import_error()}")
@pytest.mark.parametrize("name", sorted(SPECS))
def test_block_matches_reference(name):
    import torch
    spec = moe_mlir.load_spec(SPECS[name])
    case, why_not = hf_blocks.hf_case(spec)
    assert case == name.split("_unbiased")[0].split("_unnormalized")[0], why_not
    rng = np.random.default_rng(7)
    W = {n: (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
         for n, (shape, _) in moe_mlir.weight_shapes(spec).items()}
    x = rng.standard_normal((40, spec["d_model"])).astype(np.float32)
    block, _ = hf_blocks.build_hf_block(case, spec, W)
    with torch.no_grad():
        got = block(torch.from_numpy(x).view(1, *x.shape)).view(*x.shape).numpy()
    want = reference.forward(spec, x, **W)["out"]
    # float32 against the float64 reference: sums of d_model and hidden terms.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.max(np.abs(want)))


@pytest.mark.skipif(hf_blocks.import_error() is not None,
                    reason=f"torch/transformers not importable: {hf_blocks.import_error()}")
@pytest.mark.parametrize("name", sorted(SPECS))
def test_block_reads_back(name):
    """moe_mlir.from_hf, the other direction, reads the block built from a
    spec back as that spec and those weights."""
    from moe_mlir import hf
    spec = moe_mlir.load_spec(SPECS[name])
    case, _ = hf_blocks.hf_case(spec)
    rng = np.random.default_rng(3)
    W = {n: (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
         for n, (shape, _) in moe_mlir.weight_shapes(spec).items()}
    block, _ = hf_blocks.build_hf_block(case, spec, W)
    back = hf.from_hf(block, name=spec["name"])
    want = dict(spec)
    if case == "deepseek_v3" and not spec["router"]["selection_bias"]:
        # The block always has a bias (zero here): read back as a zero gate_bias.
        want["router"] = dict(spec["router"], selection_bias=True)
        assert not back.weights["gate_bias"].any()
    if spec["router"]["groups"] == 1:
        want["router"] = dict(want["router"], group_score="max")
    assert back.spec == moe_mlir.load_spec(want)
    for n, w in W.items():
        np.testing.assert_array_equal(back.weights[n].numpy(), w, err_msg=n)
