"""Router spec features of issue 9 (router logit bias, ...): the compiled
layer (fast and reference pipelines) against the NumPy reference, the spec's
checks, and parity with the transformers router that has the feature.

Tolerance: 1e-5 (compile_helpers.RTOL/ATOL), the kernels computing in f32
and the reference in f64; routing ids and counts exactly."""

from __future__ import annotations


import numpy as np
import pytest

import moe_mlir
from moe_mlir import reference as R
from moe_mlir.spec import load_spec, weight_shapes

from compile_helpers import (compiled, compare, make_weights, make_x, mh_spec, moe_spec,
                             requires_compiler)

PIPELINES = ("fast", "reference")
# T = 1 (decode), and T that are not multiples of any tile (row blocks of 4,
# 8, 16, token tiles of 32/64).
TOKENS = (1, 7, 37)



def weights(spec, seed=0):
    """make_weights, with router vectors wide enough to move the choices."""
    W = make_weights(spec, seed)
    rs = np.random.default_rng(seed + 100)
    if "logit_bias" in W:
        W["logit_bias"] = (rs.standard_normal(W["logit_bias"].shape) * 1.5).astype(np.float32)
    return W


def check(spec, T, pipeline, seed=0):
    W = weights(spec, seed)
    x = make_x(T, spec["d_model"], seed=seed + 1)
    got = compiled(spec, pipeline).forward(x, **W)
    ref = R.forward(spec, x, **W)
    compare(got, ref)
    return W, x, ref


# --------------------------------------------------------------------------- #
# 1. Router logit bias (GPT-OSS router.bias)
# --------------------------------------------------------------------------- #

LOGIT_BIAS = {
    # GPT-OSS: F.linear(x, weight, bias), top-k of the logits, softmax of those.
    "gpt_oss": moe_spec("lb_gpt_oss", router=dict(top_k=2, order="topk_then_score",
                                                  logit_bias=True)),
    "gpt_oss_bf16": moe_spec("lb_gpt_oss_bf16", weight_dtype="bf16",
                             router=dict(top_k=2, order="topk_then_score", logit_bias=True)),
    # With a selection bias too (both vectors, distinct weights), sigmoid
    # scores and every aux loss (which see the biased logits).
    "sigmoid_both_biases": moe_spec(
        "lb_sigmoid", activation="gelu", experts=8,
        router=dict(top_k=3, score="sigmoid", normalize=True, selection_bias=True,
                    logit_bias=True, groups=2, topk_groups=1, group_score="top2_sum"),
        aux_losses=["load_balance", "importance", "z_loss"]),
    "capacity_next_choice": moe_spec(
        "lb_capacity", router=dict(top_k=2, logit_bias=True),
        capacity=dict(factor=1.0, overflow="next_choice")),
    "mh_moe": mh_spec("lb_mh", router=dict(top_k=2, logit_bias=True)),
}


def test_logit_bias_contract():
    s = load_spec(LOGIT_BIAS["sigmoid_both_biases"])
    assert s["router"]["logit_bias"] is True
    assert load_spec(moe_spec())["router"]["logit_bias"] is False
    names = list(weight_shapes(s))
    assert names[:3] == ["gate", "logit_bias", "gate_bias"]
    assert weight_shapes(s)["logit_bias"] == ((8,), "f32")
    assert weight_shapes(LOGIT_BIAS["mh_moe"])["logit_bias"] == ((6,), "f32")
    with pytest.raises(ValueError, match="router.logit_bias"):
        load_spec(moe_spec(router=dict(top_k=2, logit_bias="yes")))


def test_logit_bias_reference_moves_routing():
    """The test data below exercises the bias: the reference's choices and aux
    losses change when the bias is zeroed."""
    spec = LOGIT_BIAS["sigmoid_both_biases"]
    W = weights(spec)
    x = make_x(37, spec["d_model"], seed=1)
    with_bias = R.forward(spec, x, **W)
    W0 = dict(W, logit_bias=np.zeros_like(W["logit_bias"]))
    without = R.forward(spec, x, **W0)
    assert not np.array_equal(with_bias["topk_ids"], without["topk_ids"])
    assert with_bias["z_loss"] != without["z_loss"]
    # Bias b on the logits is the same as a gate with an extra input column
    # that is always 1 (independent restatement of the formula).
    spec1 = dict(spec, name="lb_aug", d_model=spec["d_model"] + 1,
                 router=dict(spec["router"], logit_bias=False))
    W1 = {n: a for n, a in W.items() if n != "logit_bias"}
    W1["gate"] = np.concatenate([W["gate"], W["logit_bias"][:, None]], axis=1)
    pad = lambda a, axis: np.concatenate(  # noqa: E731
        [a, np.zeros(a.shape[:axis] + (1,) + a.shape[axis + 1:], np.float32)], axis=axis)
    W1["w1"], W1["w2"] = pad(W["w1"], 2), pad(W["w2"], 1)
    aug = R.forward(spec1, np.concatenate([x, np.ones((37, 1), np.float32)], axis=1), **W1)
    np.testing.assert_array_equal(aug["topk_ids"], with_bias["topk_ids"])
    np.testing.assert_allclose(aug["z_loss"], with_bias["z_loss"], rtol=1e-12)


@requires_compiler
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("name", sorted(LOGIT_BIAS))
def test_logit_bias_compiled(name, pipeline):
    for T in TOKENS:
        check(LOGIT_BIAS[name], T, pipeline, seed=T)


@requires_compiler
def test_logit_bias_route_entry_point():
    spec = LOGIT_BIAS["gpt_oss"]
    layer = compiled(spec, "fast")
    W = weights(spec)
    x = make_x(9, spec["d_model"])
    router_only = {n: W[n] for n in ("gate", "logit_bias")}
    ids, w = layer.route(x, **router_only)
    rids, rw = R.route(spec, x, **router_only)
    np.testing.assert_array_equal(ids, rids)
    np.testing.assert_allclose(w, rw, rtol=1e-5, atol=1e-5)
    bound = layer.bind(**W)
    bids, bw = bound.route(x)
    np.testing.assert_array_equal(bids, ids)
    np.testing.assert_array_equal(bw, w)


@requires_compiler
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_gpt_oss_router_parity(dtype):
    """GptOssTopKRouter (transformers) vs Layer.route: same ids, weights to 1e-5."""
    torch = pytest.importorskip("torch", reason="torch is needed for the parity test")
    tf = pytest.importorskip("transformers", reason="transformers is needed for the parity test")
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssTopKRouter

    E, D, k = 8, 16, 2
    config = tf.GptOssConfig(hidden_size=D, num_local_experts=E, num_experts_per_tok=k,
                             intermediate_size=8, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    router = GptOssTopKRouter(config).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        router.weight.copy_(torch.randn(E, D, generator=g) * 0.5)
        router.bias.copy_(torch.randn(E, generator=g))
        if dtype == "bf16":
            # The compiled layer rounds the gate to bf16; hand the block the
            # same rounded values (the bias stays f32 on both sides).
            router.weight.copy_(router.weight.to(torch.bfloat16).float())
    x = torch.randn(11, D, generator=g)
    with torch.no_grad():
        _, scores, indices = router(x)
    spec = moe_spec(f"gpt_oss_router_{dtype}", d_model=D, experts=E, weight_dtype=dtype,
                    router=dict(top_k=k, order="topk_then_score", logit_bias=True))
    layer = compiled(spec, "fast")
    ids, w = layer.route(x.numpy(), gate=router.weight.detach().numpy(),
                         logit_bias=router.bias.detach().numpy())
    np.testing.assert_array_equal(ids, indices.numpy())
    np.testing.assert_allclose(w, scores.numpy(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- #
# 2. Tanh soft-cap of the router logits (Laguna)
# --------------------------------------------------------------------------- #

SOFTCAP = {
    # Laguna: cap, sigmoid, selection bias, normalised; a cap of 1.5 is well
    # inside the logits' range (|l| up to ~6), so it changes the choices. The
    # caps keep |l / cap| small enough that f32 tanh does not tie two logits.
    "laguna": moe_spec("sc_laguna", router=dict(top_k=2, score="sigmoid", normalize=True,
                                                selection_bias=True, softcap=1.5),
                       shared_experts=dict(hidden=8)),
    "softmax_bf16": moe_spec("sc_softmax_bf16", weight_dtype="bf16",
                             router=dict(top_k=3, softcap=2.0),
                             aux_losses=["load_balance", "z_loss"]),
    "topk_then_score_bias": moe_spec("sc_topk_first", activation="relu",
                                     router=dict(top_k=2, order="topk_then_score",
                                                 logit_bias=True, softcap=2.5),
                                     capacity=dict(factor=1.0)),
    "mh_moe": mh_spec("sc_mh", router=dict(top_k=2, softcap=2.0)),
}


def test_softcap_contract():
    assert load_spec(moe_spec())["router"]["softcap"] is None
    assert load_spec(moe_spec(router=dict(top_k=2, softcap=None)))["router"]["softcap"] is None
    s = load_spec(moe_spec(router=dict(top_k=2, softcap=30)))
    assert s["router"]["softcap"] == 30.0 and isinstance(s["router"]["softcap"], float)
    assert list(weight_shapes(s)) == list(weight_shapes(moe_spec()))  # no new weight
    for bad in (0, -1.0, float("inf"), float("nan"), "30", True):
        with pytest.raises(ValueError, match="router.softcap"):
            load_spec(moe_spec(router=dict(top_k=2, softcap=bad)))


def test_softcap_reference():
    spec = SOFTCAP["softmax_bf16"]
    W = weights(spec)
    x = make_x(37, spec["d_model"], seed=1)
    capped = R.forward(spec, x, **W)
    uncapped = R.forward(dict(spec, router=dict(spec["router"], softcap=None)), x, **W)
    assert not np.array_equal(capped["topk_weights"], uncapped["topk_weights"])
    assert capped["z_loss"] < uncapped["z_loss"]
    # The capped logits are bounded by the cap: z_loss <= (cap + log E)^2.
    assert capped["z_loss"] <= (2.0 + np.log(spec["experts"])) ** 2
    # Restated: softcap is the reference's own router on c·tanh(l / c).
    l = x.astype(np.float64) @ R.round_to_dtype(W["gate"], "bf16").astype(np.float64).T
    np.testing.assert_allclose(R.softcap(l, 2.0), 2.0 * np.tanh(l / 2.0), rtol=0, atol=0)
    ids, w = R.route_tokens(2.0 * np.tanh(l / 2.0), load_spec(spec)["router"])
    np.testing.assert_array_equal(capped["topk_ids"], ids)


@requires_compiler
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("name", sorted(SOFTCAP))
def test_softcap_compiled(name, pipeline):
    for T in TOKENS:
        check(SOFTCAP[name], T, pipeline, seed=T)


@requires_compiler
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_laguna_block_parity(dtype):
    """LagunaSparseMoeBlock (soft-capped sigmoid router with a selection bias,
    normalised, scaled, with an ungated shared expert) vs the compiled layer."""
    torch = pytest.importorskip("torch", reason="torch is needed for the parity test")
    tf = pytest.importorskip("transformers", reason="transformers is needed for the parity test")
    from transformers.models.laguna.modeling_laguna import LagunaSparseMoeBlock

    E, D, F, Fs, k, cap, scale = 8, 16, 12, 20, 2, 2.5, 1.75
    config = tf.LagunaConfig(hidden_size=D, moe_intermediate_size=F,
                             shared_expert_intermediate_size=Fs, num_experts=E,
                             num_experts_per_tok=k, moe_routed_scaling_factor=scale,
                             moe_router_logit_softcapping=cap, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    block = LagunaSparseMoeBlock(config).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(p.shape[-1]))
        block.gate.weight.mul_(2.5)
        block.gate.e_score_correction_bias.copy_(torch.randn(E, generator=g) * 0.2)
        if dtype == "bf16":
            for name, p in block.named_parameters():
                if name != "gate.e_score_correction_bias":
                    p.copy_(p.to(torch.bfloat16).float())
    x = torch.randn(1, 13, D, generator=g)
    with torch.no_grad():
        want = block(x)[0].numpy()
        _, want_w, want_ids = block.gate(x[0])
    spec = moe_spec(f"laguna_{dtype}", d_model=D, experts=E, expert_hidden=F,
                    weight_dtype=dtype,
                    router=dict(top_k=k, score="sigmoid", normalize=True, scaling=scale,
                                selection_bias=True, softcap=cap),
                    shared_experts=dict(hidden=Fs))
    gu = block.experts.gate_up_proj.detach().numpy()
    W = dict(gate=block.gate.weight.detach().numpy(),
             gate_bias=block.gate.e_score_correction_bias.detach().numpy(),
             w1=gu[:, :F], w3=gu[:, F:], w2=block.experts.down_proj.detach().numpy(),
             shared_w1=block.shared_experts.gate_proj.weight.detach().numpy(),
             shared_w3=block.shared_experts.up_proj.weight.detach().numpy(),
             shared_w2=block.shared_experts.down_proj.weight.detach().numpy())
    got = compiled(spec, "fast").forward(x[0].numpy(), **W)
    # Laguna sorts each token's top-k by score; so does the layer (rank order).
    np.testing.assert_array_equal(got["topk_ids"], want_ids.numpy())
    np.testing.assert_allclose(got["topk_weights"], scale * want_w.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["out"], want, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- #
# 3. sqrt-softplus scores (DeepSeek-V4)
# --------------------------------------------------------------------------- #

SQRT_SOFTPLUS = {
    # DeepSeek-V4: sqrt(softplus), selection bias, normalised, scaling 1.5,
    # a shared expert.
    "deepseek_v4": moe_spec("ssp_v4", router=dict(top_k=3, score="sqrt_softplus",
                                                  normalize=True, scaling=1.5,
                                                  selection_bias=True),
                            shared_experts=dict(hidden=8)),
    "groups_bf16": moe_spec("ssp_groups_bf16", weight_dtype="bf16", experts=8,
                            router=dict(top_k=2, score="sqrt_softplus", groups=4,
                                        topk_groups=2, group_score="top2_sum"),
                            aux_losses=["load_balance", "importance", "z_loss"]),
    "topk_then_score": moe_spec("ssp_topk_first", activation="silu",
                                router=dict(top_k=2, score="sqrt_softplus",
                                            order="topk_then_score"),
                                capacity=dict(factor=1.0, overflow="next_choice",
                                              priority="batch_prioritized")),
    "mh_moe": mh_spec("ssp_mh", router=dict(top_k=2, score="sqrt_softplus", normalize=True)),
}


def test_sqrt_softplus_contract():
    assert load_spec(SQRT_SOFTPLUS["deepseek_v4"])["router"]["score"] == "sqrt_softplus"
    # Product-key scores stay softmax or sigmoid.
    with pytest.raises(ValueError, match="score"):
        load_spec({"name": "p", "kind": "pkm", "d_model": 8, "experts": 16, "heads": 1,
                   "top_k": 2, "key_dim": 4, "score": "sqrt_softplus"})


def test_sqrt_softplus_reference():
    z = np.array([-800.0, -30.0, -1.0, 0.0, 1e-3, 2.0, 30.0, 800.0])
    want = np.sqrt(np.logaddexp(0.0, z))            # log(1 + e^z), overflow-free
    np.testing.assert_allclose(R.sqrt_softplus(z), want, rtol=1e-15)
    spec = SQRT_SOFTPLUS["groups_bf16"]
    W = weights(spec)
    x = make_x(37, spec["d_model"], seed=1)
    ref = R.forward(spec, x, **W)
    sig = R.forward(dict(spec, router=dict(spec["router"], score="sigmoid")), x, **W)
    assert not np.allclose(ref["topk_weights"], sig["topk_weights"])
    # load_balance normalises the elementwise scores per token, as for sigmoid.
    l = x.astype(np.float64) @ R.round_to_dtype(W["gate"], "bf16").astype(np.float64).T
    p = R.sqrt_softplus(l)
    p = p / p.sum(axis=1, keepdims=True)
    f = np.bincount(ref["topk_ids"].ravel(), minlength=8) / ref["topk_ids"].size
    np.testing.assert_allclose(ref["load_balance"], 8 * np.sum(f * p.mean(axis=0)), rtol=1e-12)


@requires_compiler
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("name", sorted(SQRT_SOFTPLUS))
def test_sqrt_softplus_compiled(name, pipeline):
    for T in TOKENS:
        check(SQRT_SOFTPLUS[name], T, pipeline, seed=T)


@requires_compiler
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_deepseek_v4_router_parity(dtype):
    """DeepseekV4TopKRouter vs Layer.route (its experts' clamped SwiGLU is the
    experts helper's feature; the router is compared alone)."""
    torch = pytest.importorskip("torch", reason="torch is needed for the parity test")
    tf = pytest.importorskip("transformers", reason="transformers is needed for the parity test")
    from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4TopKRouter

    E, D, k = 16, 24, 4
    config = tf.DeepseekV4Config(hidden_size=D, n_routed_experts=E, num_experts_per_tok=k,
                                 routed_scaling_factor=1.5, num_hidden_layers=1)
    router = DeepseekV4TopKRouter(config).eval()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        router.weight.copy_(torch.randn(E, D, generator=g) * 0.6)
        router.e_score_correction_bias.copy_(torch.randn(E, generator=g) * 0.1)
        if dtype == "bf16":
            router.weight.copy_(router.weight.to(torch.bfloat16).float())
    x = torch.randn(10, D, generator=g)
    with torch.no_grad():
        _, want_w, want_ids = router(x)
    # torch.topk(sorted=False) returns the chosen set in no set order; the
    # layer returns it in rank order: compare each token's (id, weight) sets.
    spec = moe_spec(f"deepseek_v4_router_{dtype}", d_model=D, experts=E, weight_dtype=dtype,
                    router=dict(top_k=k, score="sqrt_softplus", normalize=True, scaling=1.5,
                                selection_bias=True))
    ids, w = compiled(spec, "fast").route(
        x.numpy(), gate=router.weight.detach().numpy(),
        gate_bias=router.e_score_correction_bias.detach().numpy())
    order = np.argsort(want_ids.numpy(), axis=1)
    np.testing.assert_array_equal(np.sort(ids, axis=1),
                                  np.take_along_axis(want_ids.numpy(), order, axis=1))
    mine = np.take_along_axis(w, np.argsort(ids, axis=1), axis=1)
    np.testing.assert_allclose(mine, np.take_along_axis(want_w.numpy(), order, axis=1),
                               rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- #
# 4. RMSNorm of the router input (Gemma 4)
# --------------------------------------------------------------------------- #

RMS_NORM = {
    "gemma4": moe_spec("rn_gemma4", activation="gelu",
                       router=dict(top_k=2, normalize=True, rms_norm=True)),
    "bf16_shared": moe_spec("rn_bf16", weight_dtype="bf16",
                                  router=dict(top_k=2, rms_norm=True, rms_norm_eps=1e-3,
                                              score="sigmoid", logit_bias=True),
                                  shared_experts=dict(hidden=8, gate=True),
                                  aux_losses=["load_balance", "z_loss"]),
    "mh_moe": mh_spec("rn_mh", router=dict(top_k=2, rms_norm=True)),
}


def norm_weights(spec, seed=0):
    W = weights(spec, seed)
    W["router_norm"] = np.random.default_rng(seed + 7).uniform(0.2, 3.0,
                                                               W["router_norm"].shape)
    return {n: np.asarray(a, np.float32) for n, a in W.items()}


def test_rms_norm_contract_and_reference():
    s = load_spec(RMS_NORM["gemma4"])
    assert s["router"]["rms_norm"] is True and s["router"]["rms_norm_eps"] == 1e-6
    assert list(weight_shapes(s))[:2] == ["router_norm", "gate"]
    assert weight_shapes(RMS_NORM["mh_moe"])["router_norm"] == ((8,), "f32")
    for bad in (0, -1e-6, float("inf")):
        with pytest.raises(ValueError, match="router.rms_norm_eps"):
            load_spec(moe_spec(router=dict(top_k=2, rms_norm=True, rms_norm_eps=bad)))
    spec = RMS_NORM["gemma4"]
    W = norm_weights(spec)
    x = make_x(37, spec["d_model"], seed=1) * np.linspace(0.1, 10.0, 37)[:, None].astype(np.float32)
    ref = R.forward(spec, x, **W)
    # Restated: route on x / rms(x) * w; the experts see x.
    x64 = x.astype(np.float64)
    xr = x64 / np.sqrt(np.mean(x64 ** 2, axis=1, keepdims=True) + 1e-6) * W["router_norm"]
    ids, w = R.route_tokens(xr @ W["gate"].astype(np.float64).T, s["router"])
    np.testing.assert_array_equal(ref["topk_ids"], ids)
    unnormed = R.forward(dict(spec, router=dict(spec["router"], rms_norm=False)), x,
                         **{n: a for n, a in W.items() if n != "router_norm"})
    assert not np.array_equal(ref["topk_ids"], unnormed["topk_ids"])


@requires_compiler
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("name", sorted(RMS_NORM))
def test_rms_norm_compiled(name, pipeline):
    spec = RMS_NORM[name]
    for T in TOKENS:
        W = norm_weights(spec, seed=T)
        x = make_x(T, spec["d_model"], seed=T + 1)
        compare(compiled(spec, pipeline).forward(x, **W), R.forward(spec, x, **W))


@requires_compiler
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_gemma4_router_parity(dtype):
    """Gemma4TextRouter (RMSNorm without scale, times scale and D^-1/2, then
    softmax, top-k, renormalised) vs Layer.route; its per-expert scale (ones
    here) multiplies the expert outputs and is the experts helper's feature."""
    torch = pytest.importorskip("torch", reason="torch is needed for the parity test")
    tf = pytest.importorskip("transformers", reason="transformers is needed for the parity test")
    from transformers.models.gemma4.modeling_gemma4 import Gemma4TextRouter

    E, D, k = 8, 32, 2
    config = tf.Gemma4TextConfig(hidden_size=D, num_experts=E, top_k_experts=k,
                                 rms_norm_eps=1e-6, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    router = Gemma4TextRouter(config).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        router.proj.weight.copy_(torch.randn(E, D, generator=g))
        router.scale.copy_(torch.rand(D, generator=g) * 2.0 + 0.25)
        if dtype == "bf16":
            router.proj.weight.copy_(router.proj.weight.to(torch.bfloat16).float())
    x = torch.randn(12, D, generator=g) * 3.0
    with torch.no_grad():
        _, want_w, want_ids = router(x)
    spec = moe_spec(f"gemma4_router_{dtype}", d_model=D, experts=E, weight_dtype=dtype,
                    activation="gelu", router=dict(top_k=k, normalize=True, rms_norm=True,
                                                   rms_norm_eps=1e-6))
    norm = (router.scale.detach().numpy().astype(np.float64) * D ** -0.5).astype(np.float32)
    ids, w = compiled(spec, "fast").route(x.numpy(), router_norm=norm,
                                          gate=router.proj.weight.detach().numpy())
    np.testing.assert_array_equal(ids, want_ids.numpy())
    np.testing.assert_allclose(w, want_w.numpy(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- #
# Exactness of the new router steps (fast pipeline)
# --------------------------------------------------------------------------- #

ALL_ROUTER_FEATURES = moe_spec(
    "router_all", d_model=20, experts=8, expert_hidden=13,
    router=dict(top_k=3, score="sqrt_softplus", normalize=True, selection_bias=True,
                logit_bias=True, softcap=4.0, rms_norm=True),
    shared_experts=dict(hidden=8))


def _bits_equal(a, b, what):
    a, b = np.atleast_1d(np.asarray(a)), np.atleast_1d(np.asarray(b))
    assert a.shape == b.shape and a.dtype == b.dtype, what
    assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), f"{what}: bits differ"


@requires_compiler
def test_router_features_exact():
    """Same bits for 1, 2 and 3 threads, and a token's outputs the same bits
    alone as in a batch of 70 (every new step is per token)."""
    spec = ALL_ROUTER_FEATURES
    layer = compiled(spec, "fast")
    W = norm_weights(spec)
    x = make_x(70, spec["d_model"], seed=5)
    compare(layer.forward(x, **W), R.forward(spec, x, **W))
    try:
        moe_mlir.set_num_threads(1)
        one = layer.forward(x, **W)
        for threads in (2, 3):
            moe_mlir.set_num_threads(threads)
            many = layer.forward(x, **W)
            for key in ("out", "topk_ids", "topk_weights", "expert_counts"):
                _bits_equal(many[key], one[key], f"{key} with {threads} threads")
    finally:
        moe_mlir.set_num_threads(0)
    for t in (0, 33, 69):
        alone = layer.forward(x[t:t + 1], **W)
        for key in ("out", "topk_ids", "topk_weights"):
            _bits_equal(alone[key][0], one[key][t], f"{key} of token {t} alone")


# --------------------------------------------------------------------------- #
# 6. A fixed capacity in tokens (Switch expert_capacity)
# --------------------------------------------------------------------------- #

CAPACITY_TOKENS = {
    "switch": moe_spec("ct_switch", activation="relu", router=dict(top_k=1),
                       capacity=dict(tokens=3)),
    "next_choice_bf16": moe_spec("ct_next_bf16", weight_dtype="bf16", router=dict(top_k=2),
                                 capacity=dict(tokens=4, overflow="next_choice",
                                               priority="batch_prioritized"),
                                 aux_losses=["load_balance"]),
    "mh_moe": mh_spec("ct_mh", router=dict(top_k=2), capacity=dict(tokens=5)),
}


def test_capacity_tokens_contract_and_reference():
    s = load_spec(CAPACITY_TOKENS["switch"])
    assert s["capacity"] == {"tokens": 3, "overflow": "drop", "priority": "token_order"}
    assert load_spec(moe_spec(capacity=dict(factor=1)))["capacity"]["factor"] == 1.0
    for bad, match in ((dict(), "capacity.factor' or 'capacity.tokens"),
                       (dict(factor=1.0, tokens=2), "exclude each other"),
                       (dict(tokens=0), "capacity.tokens"), (dict(tokens=2.0), "capacity.tokens")):
        with pytest.raises(ValueError, match=match):
            load_spec(moe_spec(capacity=bad))
    assert R.fixed_capacity(3, 37, 1) == 3 and R.fixed_capacity(64, 5, 2) == 10
    # Every expert keeps at most N assignments, whatever T; the rest drop.
    spec = CAPACITY_TOKENS["switch"]
    W = weights(spec)
    for T in (1, 7, 37):
        ref = R.forward(spec, make_x(T, spec["d_model"], seed=T), **W)
        counts = np.bincount(ref["topk_ids"].ravel(), minlength=spec["experts"])
        np.testing.assert_array_equal(ref["expert_counts"], np.minimum(counts, 3))
        assert ref["dropped"] == int(np.sum(counts - np.minimum(counts, 3)))
    assert ref["dropped"] > 0


@requires_compiler
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("name", sorted(CAPACITY_TOKENS))
def test_capacity_tokens_compiled(name, pipeline):
    for T in TOKENS:
        check(CAPACITY_TOKENS[name], T, pipeline, seed=T)


@requires_compiler
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_switch_expert_capacity_parity(dtype):
    """SwitchTransformersSparseMLP with expert_capacity (one sequence): the
    same choices, drops and output."""
    torch = pytest.importorskip("torch", reason="torch is needed for the parity test")
    tf = pytest.importorskip("transformers", reason="transformers is needed for the parity test")
    from transformers.models.switch_transformers.modeling_switch_transformers import (
        SwitchTransformersSparseMLP)

    E, D, F, N, T = 4, 16, 24, 3, 19
    config = tf.SwitchTransformersConfig(d_model=D, d_ff=F, num_experts=E, expert_capacity=N,
                                         router_bias=False, dense_act_fn="relu",
                                         num_layers=1, num_heads=2, d_kv=8)
    block = SwitchTransformersSparseMLP(config).eval()
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(p.shape[-1]))
        block.router.classifier.weight.mul_(3.0)
        if dtype == "bf16":
            for p in block.parameters():
                p.copy_(p.to(torch.bfloat16).float())
    x = torch.randn(1, T, D, generator=g)
    with torch.no_grad():
        want = block(x)[0].numpy()
        mask, _, _ = block.router(x)
    spec = moe_spec(f"switch_capacity_{dtype}", d_model=D, experts=E, expert_hidden=F,
                    activation="relu", weight_dtype=dtype, router=dict(top_k=1),
                    capacity=dict(tokens=N))
    experts = [block.experts[f"expert_{e}"] for e in range(E)]
    W = dict(gate=block.router.classifier.weight.detach().numpy(),
             w1=np.stack([m.wi.weight.detach().numpy() for m in experts]),
             w2=np.stack([m.wo.weight.detach().numpy() for m in experts]))
    got = compiled(spec, "fast").forward(x[0].numpy(), **W)
    kept = mask[0].numpy().astype(np.int32)                 # [T, E] one-hot, drops zeroed
    np.testing.assert_array_equal(got["expert_counts"], kept.sum(axis=0))
    assert got["dropped"] == T - int(kept.sum()) and got["dropped"] > 0
    np.testing.assert_allclose(got["out"], want, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- #
# 5. Router score applied to the expert input (Llama 4)
# --------------------------------------------------------------------------- #

APPLY_SCORE = {
    "llama4": moe_spec("as_llama4", router=dict(top_k=1, score="sigmoid",
                                                order="topk_then_score", apply_score="input"),
                       shared_experts=dict(hidden=8)),
    "top2_capacity_bf16": moe_spec("as_top2_bf16", weight_dtype="bf16", activation="gelu",
                                   router=dict(top_k=2, normalize=True, scaling=2.0,
                                               apply_score="input"),
                                   capacity=dict(factor=1.0, overflow="next_choice")),
    "mh_moe": mh_spec("as_mh", router=dict(top_k=2, score="sigmoid", apply_score="input")),
}


def test_apply_score_contract_and_reference():
    assert load_spec(moe_spec())["router"]["apply_score"] == "output"
    with pytest.raises(ValueError, match="router.apply_score"):
        load_spec(moe_spec(router=dict(top_k=2, apply_score="inside")))
    spec = APPLY_SCORE["llama4"]
    W = weights(spec)
    x = make_x(9, spec["d_model"], seed=1)
    got = R.forward(spec, x, **W)
    # Restated for top-1: out = shared(x) + expert_id(w · x).
    x64 = x.astype(np.float64)
    Wd = {n: a.astype(np.float64) for n, a in W.items()}
    want = R.expert_ffn(x64, Wd["shared_w1"], Wd["shared_w2"], Wd["shared_w3"], "swiglu")
    for t in range(9):
        e, w = got["topk_ids"][t, 0], float(got["topk_weights"][t, 0])
        want[t] += R.expert_ffn(x64[t:t + 1] * w, Wd["w1"][e], Wd["w2"][e], Wd["w3"][e],
                                "swiglu")[0]
    np.testing.assert_allclose(got["out"], want, rtol=1e-5, atol=1e-6)
    out = R.forward(dict(spec, router=dict(spec["router"], apply_score="output")), x, **W)
    assert not np.allclose(out["out"], got["out"])


@requires_compiler
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("name", sorted(APPLY_SCORE))
def test_apply_score_compiled(name, pipeline):
    for T in TOKENS:
        check(APPLY_SCORE[name], T, pipeline, seed=T)


@requires_compiler
def test_apply_score_bound_and_exact():
    """The packed-weights forward (Layer.bind) and 1 vs 3 threads give the
    same bits; a token alone the same bits as in its batch."""
    spec = APPLY_SCORE["llama4"]
    layer = compiled(spec, "fast")
    W = weights(spec)
    x = make_x(40, spec["d_model"], seed=2)
    plain = layer.forward(x, **W)
    _bits_equal(layer.bind(**W).forward(x)["out"], plain["out"], "bound out")
    try:
        moe_mlir.set_num_threads(3)
        _bits_equal(layer.forward(x, **W)["out"], plain["out"], "out with 3 threads")
    finally:
        moe_mlir.set_num_threads(0)
    _bits_equal(layer.forward(x[17:18], **W)["out"][0], plain["out"][17], "token 17 alone")


@requires_compiler
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_llama4_moe_parity(dtype):
    """Llama4TextMoe: top-1 sigmoid of the chosen logit scales the expert
    input, plus a shared expert; same output."""
    torch = pytest.importorskip("torch", reason="torch is needed for the parity test")
    tf = pytest.importorskip("transformers", reason="transformers is needed for the parity test")
    from transformers.models.llama4.modeling_llama4 import Llama4TextMoe

    E, D, F, k = 4, 16, 12, 1
    config = tf.Llama4TextConfig(hidden_size=D, intermediate_size=F, num_local_experts=E,
                                 num_experts_per_tok=k, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    block = Llama4TextMoe(config).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(D))
        if dtype == "bf16":
            for p in block.parameters():
                p.copy_(p.to(torch.bfloat16).float())
    x = torch.randn(13, D, generator=g)
    with torch.no_grad():
        want, _ = block(x)
    spec = moe_spec(f"llama4_{dtype}", d_model=D, experts=E, expert_hidden=F, weight_dtype=dtype,
                    router=dict(top_k=k, score="sigmoid", order="topk_then_score",
                                apply_score="input"),
                    shared_experts=dict(hidden=F))
    gu = block.experts.gate_up_proj.detach().numpy()      # [E, D, 2F]
    W = dict(gate=block.router.weight.detach().numpy(),
             w1=np.ascontiguousarray(gu[:, :, :F].transpose(0, 2, 1)),
             w3=np.ascontiguousarray(gu[:, :, F:].transpose(0, 2, 1)),
             w2=np.ascontiguousarray(block.experts.down_proj.detach().numpy().transpose(0, 2, 1)),
             shared_w1=block.shared_expert.gate_proj.weight.detach().numpy(),
             shared_w3=block.shared_expert.up_proj.weight.detach().numpy(),
             shared_w2=block.shared_expert.down_proj.weight.detach().numpy())
    got = compiled(spec, "fast").forward(x.numpy(), **W)
    np.testing.assert_allclose(got["out"], want.numpy(), rtol=1e-4, atol=1e-5)
