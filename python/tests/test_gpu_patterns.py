"""The CUDA target's tensor-level algorithms, run on the CPU.

`convert-moe-to-gpu` replaces lowerings whose loops would serialise on a GPU
(the grouped expert FFN's loop over experts with sizes read from device
memory) by data-parallel ones. They are target independent, so the CPU
pipeline runs them too (`gpu-patterns=true`): here they must give the
reference lowering's bits exactly (the same sums in the same order) for
every layer kind, expert option and edge case, and match the NumPy
reference. A GPU run gives these same bits only if its code generation
(launch mapping, NVVM, ptxas) is right: that part needs a device.
"""

import numpy as np
import pytest

import moe_mlir
from compile_helpers import (assert_same_bits, make_weights, make_x, mh_spec, moe_spec,
                             requires_compiler)

pytestmark = requires_compiler

SPECS = [
    moe_spec("gp_swiglu", experts=5, expert_hidden=12),
    moe_spec("gp_gelu", activation="gelu", router={"top_k": 1}),
    moe_spec("gp_geglu_bias", activation="geglu", expert_bias=True,
             expert_scale=True),
    moe_spec("gp_clamped", swiglu={"limit": 0.5, "alpha": 1.702, "up_offset": 1.0},
             expert_bias=True),
    moe_spec("gp_capacity", router={"top_k": 2}, capacity={"factor": 0.5}),
    moe_spec("gp_bf16", weight_dtype="bf16", experts=4),
    moe_spec("gp_shared", shared_experts={"hidden": 8, "gate": True}, experts=8,
             router={"top_k": 2, "score": "sigmoid", "groups": 4, "topk_groups": 2}),
    mh_spec("gp_mh", experts=4),
]


def _layers(spec):
    reference = moe_mlir.compile(spec, pipeline="reference")
    gpu = moe_mlir.compile(spec, pipeline="reference", tiles="gpu-patterns=true")
    return reference, gpu


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s["name"])
@pytest.mark.parametrize("tokens", [1, 7, 33])
def test_same_bits_as_reference(spec, tokens):
    try:
        reference, gpu = _layers(spec)
    except ValueError as error:  # a spec key this version does not have
        pytest.skip(f"spec not accepted: {error}")
    W = make_weights(spec, seed=tokens)
    x = make_x(tokens, spec["d_model"], seed=tokens + 1)
    want = reference.forward(x, **W)
    got = gpu.forward(x, **W)
    assert want.keys() == got.keys()
    for name in want:
        assert_same_bits(got[name], want[name], name)


def test_skewed_and_unused_experts():
    """Every token on one expert, the others empty: the bisection must give
    empty segments to nobody."""
    spec = moe_spec("gp_skew", experts=6)
    reference, gpu = _layers(spec)
    W = make_weights(spec)
    W["gate"] = np.zeros_like(W["gate"])
    W["gate"][3] = 5.0  # expert 3 first for every positive token
    x = np.abs(make_x(20, spec["d_model"])) + 0.1
    want, got = reference.forward(x, **W), gpu.forward(x, **W)
    assert np.all(want["expert_counts"][[0, 1, 2, 4, 5]] <= 20)
    for name in want:
        assert_same_bits(got[name], want[name], name)


@pytest.mark.parametrize("tokens", [128, 129, 300, 700])
@pytest.mark.parametrize("skew", [False, True], ids=["random", "skewed"])
def test_dispatch_over_many_chunks(tokens, skew):
    """The parallel dispatch plan cuts the T·k assignments into chunks of
    256: more than one chunk, partial last chunks, experts absent from some
    chunks (skewed: most tokens on two experts), the reference's bits."""
    spec = moe_spec("gp_chunks", experts=7, router={"top_k": 2})
    reference, gpu = _layers(spec)
    W = make_weights(spec, seed=tokens)
    if skew:
        W["gate"][[2, 5]] *= 6.0
    x = make_x(tokens, spec["d_model"], seed=tokens + 1)
    want, got = reference.forward(x, **W), gpu.forward(x, **W)
    for name in want:
        assert_same_bits(got[name], want[name], name)
