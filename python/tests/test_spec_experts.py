"""Expert-side spec features of issue #9 against the NumPy reference, on both
pipelines (fast and reference), and parity with the transformers blocks whose
features they are.

* activations ``gelu_tanh``, ``geglu_tanh`` (Gemma) and ``relu2`` (Nemotron-H),
  on routed and shared experts and on PEER neurons.

Tolerances: the kernels compute in f32 against the float64 reference, so
outputs agree to the project's 1e-5 (compile_helpers.RTOL/ATOL); against
transformers (float32 torch, another summation order) to 1e-4 relative to the
output's scale.
"""

from __future__ import annotations

import numpy as np
import pytest

import moe_mlir
from moe_mlir import reference as R
from moe_mlir.spec import spec_hash

from compile_helpers import (compare, make_weights, make_x, moe_spec, pk_spec,
                             requires_compiler)

PIPELINES = ("fast", "reference")
TOKENS = (1, 7, 33)

_LAYERS = {}


def _layer(spec, pipeline):
    key = (spec_hash(spec), pipeline)
    if key not in _LAYERS:
        _LAYERS[key] = moe_mlir.compile(spec, pipeline=pipeline)
    return _LAYERS[key]


def _check(spec, pipeline, T, seed=0, **tol):
    layer = _layer(spec, pipeline)
    W = make_weights(spec, seed)
    x = make_x(T, spec["d_model"], seed=seed + 1)
    got = layer.forward(x, **W)
    with np.errstate(all="ignore"):
        ref = R.forward(spec, x, **W)
    compare(got, ref, **tol)


# --------------------------------------------------------------------------- #
# Activations
# --------------------------------------------------------------------------- #

ACTIVATION_SPECS = {
    "gelu_tanh": moe_spec("x_gelu_tanh", activation="gelu_tanh",
                          shared_experts={"hidden": 6, "gate": True}),
    "geglu_tanh_bf16": moe_spec("x_geglu_tanh_bf16", activation="geglu_tanh",
                                weight_dtype="bf16", expert_hidden=12,
                                shared_experts={"hidden": 6}),
    "relu2": moe_spec("x_relu2", activation="relu2", experts=5, router={"top_k": 3},
                      shared_experts={"hidden": 10}),
    "relu2_bf16": moe_spec("x_relu2_bf16", activation="relu2", weight_dtype="bf16"),
    "peer_gelu_tanh": pk_spec("peer", name="x_peer_gelu_tanh", activation="gelu_tanh"),
    "peer_relu2": pk_spec("peer", name="x_peer_relu2", activation="relu2",
                          weight_dtype="bf16"),
}


@requires_compiler
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("name", sorted(ACTIVATION_SPECS))
def test_activation_matches_reference(name, pipeline):
    for T in TOKENS:
        _check(ACTIVATION_SPECS[name], pipeline, T)


def test_reference_activations_are_the_documented_formulas():
    z = np.linspace(-6.0, 6.0, 97)
    want = 0.5 * z * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (z + 0.044715 * z ** 3)))
    np.testing.assert_allclose(R.activation(z, "gelu_tanh"), want, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(R.activation(z, "geglu_tanh"), want, rtol=1e-15, atol=1e-15)
    np.testing.assert_array_equal(R.activation(z, "relu2"), np.maximum(z, 0.0) ** 2)
    assert np.isnan(R.activation(np.array([np.nan]), "relu2")[0])
    # The tanh form is not the erf form (they differ by up to ~1e-3 near |z| = 2).
    assert np.max(np.abs(R.activation(z, "gelu_tanh") - R.activation(z, "gelu"))) > 1e-4


def test_spec_gating_of_new_activations():
    s = moe_mlir.load_spec(moe_spec("g", activation="geglu_tanh",
                                    shared_experts={"hidden": 4}))
    shapes = moe_mlir.weight_shapes(s)
    assert "w3" in shapes and "shared_w3" in shapes
    for act in ("gelu_tanh", "relu2"):
        shapes = moe_mlir.weight_shapes(moe_spec("u", activation=act,
                                                 shared_experts={"hidden": 4}))
        assert "w3" not in shapes and "shared_w3" not in shapes
    with pytest.raises(ValueError, match="activation"):
        moe_mlir.load_spec(pk_spec("peer", activation="geglu_tanh"))


# --------------------------------------------------------------------------- #
# Parity with transformers
# --------------------------------------------------------------------------- #

def test_activations_match_transformers():
    torch = pytest.importorskip("torch")
    activations = pytest.importorskip("transformers.activations")
    z = np.linspace(-8.0, 8.0, 1001)
    t = torch.from_numpy(z)
    np.testing.assert_allclose(
        R.gelu_tanh(z), activations.ACT2FN["gelu_pytorch_tanh"](t).numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        R.gelu_tanh(z), torch.nn.functional.gelu(t, approximate="tanh").numpy(),
        rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(R.relu2(z), activations.ACT2FN["relu2"](t).numpy(),
                               rtol=1e-12, atol=1e-12)


@requires_compiler
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_nemotron_h_moe_parity(dtype):
    """NemotronHMoE: relu2 experts (no gate projection), DeepSeek-V3 routing,
    an ungated relu2 shared expert."""
    torch = pytest.importorskip("torch")
    nemotron = pytest.importorskip("transformers.models.nemotron_h.modeling_nemotron_h")
    from transformers import NemotronHConfig
    D, E, F, Fs, k, G, g = 32, 8, 16, 24, 2, 4, 2
    config = NemotronHConfig(hidden_size=D, n_routed_experts=E, moe_intermediate_size=F,
                             moe_shared_expert_intermediate_size=Fs, num_experts_per_tok=k,
                             n_group=G, topk_group=g, norm_topk_prob=True,
                             routed_scaling_factor=2.5, mlp_hidden_act="relu2")
    block = nemotron.NemotronHMoE(config).float().eval()
    spec = moe_spec(f"nemotron_h_{dtype}", d_model=D, experts=E, expert_hidden=F,
                    activation="relu2", weight_dtype=dtype,
                    router={"top_k": k, "score": "sigmoid", "selection_bias": True,
                            "groups": G, "topk_groups": g, "group_score": "top2_sum",
                            "normalize": True, "scaling": 2.5},
                    shared_experts={"hidden": Fs})
    W = make_weights(spec, seed=3)
    if dtype == "bf16":   # the block computes with the weights the layer sees
        W = {n: R.round_to_dtype(w, moe_mlir.weight_shapes(spec)[n][1]).astype(np.float32)
             for n, w in W.items()}
    with torch.no_grad():
        block.gate.weight.copy_(torch.from_numpy(W["gate"]))
        block.gate.e_score_correction_bias.copy_(torch.from_numpy(W["gate_bias"]))
        block.experts.up_proj.copy_(torch.from_numpy(W["w1"]))
        block.experts.down_proj.copy_(torch.from_numpy(W["w2"]))
        block.shared_experts.up_proj.weight.copy_(torch.from_numpy(W["shared_w1"]))
        block.shared_experts.down_proj.weight.copy_(torch.from_numpy(W["shared_w2"]))
        x = make_x(29, D, seed=5)
        want = block(torch.from_numpy(x)[None]).numpy()[0]
        _, _, want_ids = block.gate(torch.from_numpy(x))
    for pipeline in PIPELINES:
        got = _layer(spec, pipeline).forward(x, **W)
        assert np.array_equal(np.sort(got["topk_ids"], axis=1),
                              np.sort(want_ids.numpy(), axis=1))
        np.testing.assert_allclose(got["out"], want, rtol=1e-4,
                                   atol=1e-4 * np.max(np.abs(want)))
