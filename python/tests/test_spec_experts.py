"""Expert-side spec features of issue #9 against the NumPy reference, on both
pipelines (fast and reference), and parity with the transformers blocks whose
features they are.

* activations ``gelu_tanh``, ``geglu_tanh`` (Gemma) and ``relu2`` (Nemotron-H),
  on routed and shared experts and on PEER neurons;
* the ``swiglu`` options (clamped SwiGLU: GPT-OSS, MiniMax-M3, GLM5-Next,
  HY-V4, Step3.7);
* expert biases (GPT-OSS, NLLB-MoE), the per-expert output scale (Gemma 4) and
  the output bias (JetMoE).

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

from compile_helpers import (compare, make_weights, make_x, mh_spec, moe_spec, pk_spec,
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
# SwiGLU options
# --------------------------------------------------------------------------- #

# Limits small enough that the clamps bind for a good share of the O(1)
# projections (the tests check that they do).
SWIGLU_SPECS = {
    "gpt_oss": moe_spec("x_sw_gpt_oss", swiglu={"limit": 0.6, "alpha": 1.702, "up_offset": 1.0},
                        router={"order": "topk_then_score"}, shared_experts={"hidden": 6}),
    "limit_bf16": moe_spec("x_sw_limit_bf16", weight_dtype="bf16", expert_hidden=12,
                           swiglu={"limit": 0.5}),
    "step_after": moe_spec("x_sw_step", swiglu={"limit": 0.15, "clamp": "after_activation"},
                           shared_experts={"hidden": 6, "gate": True}),
    "mh_alpha_offset": mh_spec("x_sw_mh", activation="swiglu",
                               swiglu={"alpha": 0.5, "up_offset": -0.25}),
}


def _plain(spec):
    s = dict(spec)
    s.pop("swiglu")
    return s


@requires_compiler
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("name", sorted(SWIGLU_SPECS))
def test_swiglu_options_match_reference(name, pipeline):
    for T in TOKENS:
        _check(SWIGLU_SPECS[name], pipeline, T)


@pytest.mark.parametrize("name", sorted(SWIGLU_SPECS))
def test_swiglu_options_change_the_output(name):
    """The options (and their clamps) matter on these inputs: a kernel that
    ignored them would fail the comparison above."""
    spec = SWIGLU_SPECS[name]
    W, x = make_weights(spec, 0), make_x(33, spec["d_model"], seed=1)
    with_options = R.forward(spec, x, **W)["out"]
    plain = R.forward(_plain(spec), x, **W)["out"]
    assert np.max(np.abs(with_options - plain)) > 1e-2


def test_swiglu_defaults_are_plain_swiglu():
    spec = moe_spec("x_sw_defaults", swiglu={})
    W, x = make_weights(spec, 0), make_x(9, spec["d_model"], seed=1)
    np.testing.assert_array_equal(R.forward(spec, x, **W)["out"],
                                  R.forward(_plain(spec), x, **W)["out"])


@pytest.mark.parametrize("swiglu, message", [
    ({"limit": 0.0}, "swiglu.limit"),
    ({"limit": float("inf")}, "swiglu.limit"),
    ({"alpha": -1.0}, "swiglu.alpha"),
    ({"up_offset": float("nan")}, "swiglu.up_offset"),
    ({"clamp": "after_activation"}, "swiglu.clamp"),
    ({"clamp": "after"}, "swiglu.clamp"),
    ({"beta": 1.0}, "beta"),
])
def test_swiglu_options_are_checked(swiglu, message):
    with pytest.raises(ValueError, match=message):
        moe_mlir.load_spec(moe_spec("bad", swiglu=swiglu))


def test_swiglu_options_need_swiglu():
    with pytest.raises(ValueError, match="activation swiglu"):
        moe_mlir.load_spec(moe_spec("bad", activation="geglu", swiglu={"limit": 1.0}))
    with pytest.raises(ValueError, match="swiglu"):
        moe_mlir.load_spec(pk_spec("peer", swiglu={"limit": 1.0}))


@requires_compiler
def test_swiglu_spec_errors_match_the_compiler(tmp_path):
    """moe-compile rejects what load_spec rejects (the C++ and Python checks agree)."""
    import json
    import subprocess
    from moe_mlir.compiler import find_compiler
    for swiglu in ({"limit": -1.0}, {"alpha": 0.0}, {"clamp": "after_activation"}):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(moe_spec("bad", swiglu=swiglu)))
        run = subprocess.run([find_compiler(), "--emit=mlir", str(path)],
                             capture_output=True, text=True)
        assert run.returncode != 0 and "swiglu." in run.stderr, run.stderr


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


def _gate_up(rs, T, F, scale=1.0):
    return (rs.standard_normal((T, 2 * F)) * scale).astype(np.float32)


@pytest.mark.parametrize("family", ["gpt_oss", "minimax_m3", "glm5_next", "hy_v4", "step3p7"])
def test_swiglu_options_match_transformers_gates(family):
    """The hidden value of each family's own `_apply_gate` (given gate/up
    projections) is the reference's for the spec options that name it."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from types import SimpleNamespace
    from transformers.activations import ACT2FN
    import importlib
    silu = ACT2FN["silu"]
    L = 0.8
    cases = {
        # (module, class, fake self, interleaved gate/up, spec options)
        "gpt_oss": ("gpt_oss", "GptOssExperts", SimpleNamespace(alpha=1.702, limit=L), True,
                    {"limit": L, "alpha": 1.702, "up_offset": 1.0}),
        "minimax_m3": ("minimax_m3_vl", "MiniMaxM3VLExperts",
                       SimpleNamespace(swiglu_alpha=1.702, swiglu_limit=L), False,
                       {"limit": L, "alpha": 1.702, "up_offset": 1.0}),
        "glm5_next": ("glm5_next", "Glm5NextTextExperts", SimpleNamespace(swiglu_limit=L), False,
                      {"limit": L}),
        "hy_v4": ("hy_v4", "HYV4Experts", SimpleNamespace(swiglu_limit=L, act_fn=silu), False,
                  {"limit": L}),
        "step3p7": ("step3p7", "Step3p7Experts", SimpleNamespace(limit=L / 4, act_fn=silu), False,
                    {"limit": L / 4, "clamp": "after_activation"}),
    }
    module, cls, fake, interleaved, options = cases[family]
    try:
        mod = importlib.import_module(f"transformers.models.{module}.modeling_{module}")
    except ImportError as e:
        pytest.skip(f"transformers has no {module}: {e}")
    block_cls = getattr(mod, cls, None)
    if block_cls is None:
        pytest.skip(f"transformers.models.{module} has no {cls}")
    T, F, D = 23, 16, 8
    rs = np.random.default_rng(11)
    x = rs.standard_normal((T, D)).astype(np.float32)
    w1 = (rs.standard_normal((F, D)) / np.sqrt(D)).astype(np.float32)
    w3 = (rs.standard_normal((F, D)) / np.sqrt(D)).astype(np.float32)
    eye = np.eye(F, dtype=np.float32)          # w2 = identity: the hidden value itself
    g, u = x @ w1.T, x @ w3.T
    if interleaved:
        gate_up = np.stack([g, u], axis=-1).reshape(T, 2 * F)
    else:
        gate_up = np.concatenate([g, u], axis=-1)
    with torch.no_grad():
        want = block_cls._apply_gate(fake, torch.from_numpy(gate_up)).numpy()
    spec = load = moe_mlir.load_spec(moe_spec("p", d_model=D, expert_hidden=F, swiglu=options))
    got = R.expert_ffn(x, w1, eye, w3, "swiglu", load["swiglu"])
    clamped = np.mean((g > options["limit"]) | (np.abs(u) > options["limit"]))
    assert clamped > 0.05, "the clamps should bind in this test"
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@requires_compiler
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_gpt_oss_mlp_parity(dtype):
    """GptOssMLP with a zero router bias (softmax over the top-k logits, as
    `order: topk_then_score`) and zero expert biases: its clamped SwiGLU with
    interleaved gate_up weights."""
    torch = pytest.importorskip("torch")
    gpt_oss = pytest.importorskip("transformers.models.gpt_oss.modeling_gpt_oss")
    from transformers import GptOssConfig
    D, E, F, k, L = 32, 8, 16, 2, 1.5
    config = GptOssConfig(hidden_size=D, intermediate_size=F, num_local_experts=E,
                          num_experts_per_tok=k, swiglu_limit=L)
    block = gpt_oss.GptOssMLP(config).float().eval()
    spec = moe_spec(f"gpt_oss_{dtype}", d_model=D, experts=E, expert_hidden=F,
                    weight_dtype=dtype, router={"top_k": k, "order": "topk_then_score"},
                    swiglu={"limit": L, "alpha": 1.702, "up_offset": 1.0})
    W = make_weights(spec, seed=4)
    W = {n: R.round_to_dtype(w, moe_mlir.weight_shapes(spec)[n][1]).astype(np.float32)
         for n, w in W.items()}
    gate_up = np.empty((E, D, 2 * F), np.float32)
    gate_up[:, :, 0::2] = W["w1"].transpose(0, 2, 1)
    gate_up[:, :, 1::2] = W["w3"].transpose(0, 2, 1)
    with torch.no_grad():
        block.router.weight.copy_(torch.from_numpy(W["gate"]))
        block.router.bias.zero_()
        block.experts.gate_up_proj.copy_(torch.from_numpy(gate_up))
        block.experts.gate_up_proj_bias.zero_()
        block.experts.down_proj.copy_(torch.from_numpy(W["w2"].transpose(0, 2, 1).copy()))
        block.experts.down_proj_bias.zero_()
        x = make_x(31, D, seed=6, scale=2.0)
        want = block(torch.from_numpy(x)[None])[0].numpy()[0]
        _, _, want_ids = block.router(torch.from_numpy(x))
    for pipeline in PIPELINES:
        got = _layer(spec, pipeline).forward(x, **W)
        assert np.array_equal(got["topk_ids"], want_ids.numpy().astype(np.int32))
        np.testing.assert_allclose(got["out"], want, rtol=1e-4,
                                   atol=1e-4 * np.max(np.abs(want)))


# --------------------------------------------------------------------------- #
# Expert biases
# --------------------------------------------------------------------------- #

BIAS_SPECS = {
    "gpt_oss": moe_spec("x_b_gpt_oss", swiglu={"limit": 0.8, "alpha": 1.702, "up_offset": 1.0},
                        expert_bias=True, router={"order": "topk_then_score"},
                        shared_experts={"hidden": 6}),
    "relu_bf16_capacity": moe_spec("x_b_relu_bf16", activation="relu", weight_dtype="bf16",
                                   expert_bias=True, experts=5, expert_hidden=12,
                                   capacity={"factor": 0.75}),
    "mh_gelu_tanh": mh_spec("x_b_mh", activation="gelu_tanh", expert_bias=True),
}


def _zero_biases(W):
    return {n: (np.zeros_like(w) if n in ("b1", "b3", "b2") else w) for n, w in W.items()}


@requires_compiler
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("name", sorted(BIAS_SPECS))
def test_expert_biases_match_reference(name, pipeline):
    for T in TOKENS:
        _check(BIAS_SPECS[name], pipeline, T)


@pytest.mark.parametrize("name", sorted(BIAS_SPECS))
def test_expert_biases_change_the_output(name):
    spec = BIAS_SPECS[name]
    W, x = make_weights(spec, 0), make_x(33, spec["d_model"], seed=1)
    with_biases = R.forward(spec, x, **W)["out"]
    without = R.forward(spec, x, **_zero_biases(W))["out"]
    assert np.max(np.abs(with_biases - without)) > 1e-2


def test_expert_bias_weights():
    shapes = moe_mlir.weight_shapes(moe_spec("b", expert_bias=True, experts=4, d_model=16,
                                             expert_hidden=8))
    names = list(shapes)
    assert names[names.index("w2") + 1:names.index("w2") + 4] == ["b1", "b3", "b2"]
    assert shapes["b1"] == ((4, 8), "f32") and shapes["b3"] == ((4, 8), "f32")
    assert shapes["b2"] == ((4, 16), "f32")
    shapes = moe_mlir.weight_shapes(moe_spec("b", activation="gelu", expert_bias=True))
    assert "b1" in shapes and "b2" in shapes and "b3" not in shapes
    with pytest.raises(ValueError, match="expert_bias"):
        moe_mlir.load_spec(moe_spec("b", expert_bias=1))


@requires_compiler
@pytest.mark.parametrize("name", ["gpt_oss", "relu_bf16_capacity"])
def test_expert_biases_packed_weights_bit_for_bit(name):
    """Layer.bind packs w1/w3/w2; the biases stay f32 vectors: the bound
    layer computes the unbound one's bits, for any thread count and (dropless)
    batch composition."""
    from compile_helpers import assert_same_bits
    spec = BIAS_SPECS[name]
    layer = _layer(spec, "fast")
    W = make_weights(spec)
    bound = layer.bind(**W)
    x = make_x(37, spec["d_model"], seed=2)
    want = layer.forward(x, **W)
    before = moe_mlir.get_num_threads()
    try:
        for n in (1, 3):
            moe_mlir.set_num_threads(n)
            got = bound.forward(x)
            for key in want:
                assert_same_bits(got[key], want[key], f"{key}, {n} threads")
    finally:
        moe_mlir.set_num_threads(before)
    if "capacity" in spec:      # capacity depends on T: no batch invariance
        return
    for t in (0, 36):
        assert_same_bits(bound(x[t:t + 1]), want["out"][t:t + 1], f"token {t} alone")


@requires_compiler
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_gpt_oss_mlp_with_expert_biases_parity(dtype):
    """GptOssMLP with its expert biases (interleaved gate_up bias) and a zero
    router bias (the router bias is another spec feature)."""
    torch = pytest.importorskip("torch")
    gpt_oss = pytest.importorskip("transformers.models.gpt_oss.modeling_gpt_oss")
    from transformers import GptOssConfig
    D, E, F, k, L = 32, 8, 16, 2, 1.5
    config = GptOssConfig(hidden_size=D, intermediate_size=F, num_local_experts=E,
                          num_experts_per_tok=k, swiglu_limit=L)
    block = gpt_oss.GptOssMLP(config).float().eval()
    spec = moe_spec(f"gpt_oss_b_{dtype}", d_model=D, experts=E, expert_hidden=F,
                    weight_dtype=dtype, router={"top_k": k, "order": "topk_then_score"},
                    swiglu={"limit": L, "alpha": 1.702, "up_offset": 1.0}, expert_bias=True)
    W = make_weights(spec, seed=8)
    W = {n: R.round_to_dtype(w, moe_mlir.weight_shapes(spec)[n][1]).astype(np.float32)
         for n, w in W.items()}
    gate_up = np.empty((E, D, 2 * F), np.float32)
    gate_up[:, :, 0::2] = W["w1"].transpose(0, 2, 1)
    gate_up[:, :, 1::2] = W["w3"].transpose(0, 2, 1)
    gate_up_bias = np.empty((E, 2 * F), np.float32)
    gate_up_bias[:, 0::2], gate_up_bias[:, 1::2] = W["b1"], W["b3"]
    with torch.no_grad():
        block.router.weight.copy_(torch.from_numpy(W["gate"]))
        block.router.bias.zero_()
        block.experts.gate_up_proj.copy_(torch.from_numpy(gate_up))
        block.experts.gate_up_proj_bias.copy_(torch.from_numpy(gate_up_bias))
        block.experts.down_proj.copy_(torch.from_numpy(W["w2"].transpose(0, 2, 1).copy()))
        block.experts.down_proj_bias.copy_(torch.from_numpy(W["b2"]))
        x = make_x(31, D, seed=6, scale=2.0)
        want = block(torch.from_numpy(x)[None])[0].numpy()[0]
        _, _, want_ids = block.router(torch.from_numpy(x))
    for pipeline in PIPELINES:
        got = _layer(spec, pipeline).forward(x, **W)
        assert np.array_equal(got["topk_ids"], want_ids.numpy().astype(np.int32))
        np.testing.assert_allclose(got["out"], want, rtol=1e-4,
                                   atol=1e-4 * np.max(np.abs(want)))


# --------------------------------------------------------------------------- #
# Per-expert output scale and output bias
# --------------------------------------------------------------------------- #

SCALE_BIAS_SPECS = {
    "scale_geglu_tanh_bf16": moe_spec("x_s_gemma", activation="geglu_tanh", weight_dtype="bf16",
                                      expert_scale=True, router={"normalize": True}),
    "scale_bias_out_bias": moe_spec("x_s_all", swiglu={"limit": 0.8, "alpha": 1.702,
                                                       "up_offset": 1.0},
                                    expert_bias=True, expert_scale=True, output_bias=True,
                                    shared_experts={"hidden": 6, "gate": True},
                                    capacity={"factor": 1.0, "overflow": "next_choice"}),
    "out_bias": moe_spec("x_ob", router={"order": "topk_then_score"}, output_bias=True),
    "mh_out_bias_scale": mh_spec("x_ob_mh", activation="relu2", output_bias=True,
                                 expert_scale=True),
}


def _with_scales(spec, W):
    """Scales away from 1 (make_weights draws them around 0) so they matter."""
    W = dict(W)
    if "expert_scale" in W:
        E = W["expert_scale"].shape[0]
        W["expert_scale"] = np.linspace(0.25, 2.0, E).astype(np.float32)
    return W


@requires_compiler
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("name", sorted(SCALE_BIAS_SPECS))
def test_scale_and_output_bias_match_reference(name, pipeline):
    spec = SCALE_BIAS_SPECS[name]
    layer = _layer(spec, pipeline)
    for T in TOKENS:
        W = _with_scales(spec, make_weights(spec, T))
        x = make_x(T, spec["d_model"], seed=T + 1)
        compare(layer.forward(x, **W), R.forward(spec, x, **W))


def test_scale_and_output_bias_weights():
    spec = moe_spec("w", experts=4, d_model=16, expert_scale=True, output_bias=True,
                    shared_experts={"hidden": 4})
    shapes = moe_mlir.weight_shapes(spec)
    assert shapes["expert_scale"] == ((4,), "f32")
    assert shapes["output_bias"] == ((16,), "f32")
    assert list(shapes)[-1] == "output_bias"
    spec = moe_spec("w", experts=4, d_model=16)
    W, x = make_weights(spec), make_x(5, 16)
    plain = R.forward(spec, x, **W)["out"]
    bias = np.arange(16, dtype=np.float32)
    got = R.forward(dict(spec, output_bias=True), x, output_bias=bias, **W)["out"]
    np.testing.assert_allclose(got, plain + bias, rtol=1e-6, atol=1e-6)
    scaled = R.forward(dict(spec, expert_scale=True), x,
                       expert_scale=np.full(4, 2.0, np.float32), **W)["out"]
    np.testing.assert_allclose(scaled, 2.0 * plain, rtol=1e-6, atol=1e-6)


@requires_compiler
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_jetmoe_moe_parity(dtype):
    """JetMoeMoE: softmax over the top-k logits, SwiGLU experts stored as one
    [E, 2F, D] input projection (w1 then w3), and the output bias."""
    torch = pytest.importorskip("torch")
    jetmoe = pytest.importorskip("transformers.models.jetmoe.modeling_jetmoe")
    from transformers import JetMoeConfig
    D, E, F, k = 32, 8, 16, 2
    config = JetMoeConfig(hidden_size=D, intermediate_size=F, num_local_experts=E,
                          num_experts_per_tok=k, activation_function="silu")
    block = jetmoe.JetMoeMoE(config).float().eval()
    spec = moe_spec(f"jetmoe_{dtype}", d_model=D, experts=E, expert_hidden=F,
                    weight_dtype=dtype, router={"top_k": k, "order": "topk_then_score"},
                    output_bias=True)
    W = make_weights(spec, seed=9)
    W = {n: R.round_to_dtype(w, moe_mlir.weight_shapes(spec)[n][1]).astype(np.float32)
         for n, w in W.items()}
    with torch.no_grad():
        block.router.layer.weight.copy_(torch.from_numpy(W["gate"]))
        block.input_linear.weight.copy_(torch.from_numpy(np.concatenate([W["w1"], W["w3"]], 1)))
        block.output_linear.weight.copy_(torch.from_numpy(W["w2"]))
        block.bias.copy_(torch.from_numpy(W["output_bias"]))
        x = make_x(27, D, seed=3)
        want = block(torch.from_numpy(x)[None]).numpy()[0]
    for pipeline in PIPELINES:
        got = _layer(spec, pipeline).forward(x, **W)
        np.testing.assert_allclose(got["out"], want, rtol=1e-4,
                                   atol=1e-4 * np.max(np.abs(want)))


def test_upcycle_fills_the_neutral_expert_features():
    """upcycle of a dense FFN into a spec with biases, scales and an output
    bias: neutral values, so the layer is still the dense FFN (split mode,
    k = E, sigmoid scores scaled to weight 1 each: the sum of the experts)."""
    from moe_mlir.upcycle import upcycle
    D, F, E = 12, 8, 4
    spec = moe_spec("u", d_model=D, experts=E, expert_hidden=F // E, expert_bias=True,
                    expert_scale=True, output_bias=True,
                    router={"top_k": E, "score": "sigmoid", "scaling": 2.0})
    rs = np.random.default_rng(0)
    dense = {"w1": rs.standard_normal((F, D)).astype(np.float32),
             "w3": rs.standard_normal((F, D)).astype(np.float32),
             "w2": rs.standard_normal((D, F)).astype(np.float32)}
    W = upcycle(dense, mode="split", spec=spec)
    assert set(W) == set(moe_mlir.weight_shapes(spec))
    x = make_x(5, D)
    want = R.expert_ffn(x, dense["w1"], dense["w2"], dense["w3"], "swiglu")
    np.testing.assert_allclose(R.forward(spec, x, **W)["out"], want, rtol=1e-5, atol=1e-5)
