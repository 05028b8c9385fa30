"""moe_mlir.hf_gemma4: Gemma 4's MoE (Gemma4TextDecoderLayer with
enable_moe_block) read into a spec and weights, compiled, and checked
against transformers' own modules (router -> pre_feedforward_layernorm_2 ->
experts -> post_feedforward_layernorm_2): outputs and routing, f32 and bf16
weights; the swap inside a small Gemma4ForCausalLM (same logits); the
safetensors reader; the refusals.  Needs torch and transformers with Gemma 4
(skipped without)."""

import copy
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed (pip install torch)")
transformers = pytest.importorskip("transformers",
                                   reason="transformers not installed (pip install transformers)")
gemma4 = pytest.importorskip("transformers.models.gemma4.modeling_gemma4",
                             reason="this transformers has no Gemma 4 (5.24 has)")

from moe_mlir import hf_gemma4 as G  # noqa: E402
from moe_mlir.hf import UnsupportedBlockError  # noqa: E402
from moe_mlir.spec import spec_hash  # noqa: E402

from compile_helpers import compiled, requires_compiler  # noqa: E402

transformers.logging.set_verbosity_error()

D, E, F, K = 32, 8, 16, 2
T = 2 * 24          # tokens of a [2, 24, D] batch


def _config(layers=1, **more):
    sizes = dict(
        vocab_size=64, hidden_size=D, intermediate_size=24, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, global_head_dim=16,
        enable_moe_block=True, num_experts=E, top_k_experts=K, moe_intermediate_size=F,
        hidden_size_per_layer_input=0, vocab_size_per_layer_input=64,
        layer_types=(["sliding_attention", "full_attention"] * layers)[:layers],
        sliding_window=8)
    cfg = transformers.Gemma4TextConfig(**dict(sizes, **more))
    cfg._experts_implementation = "eager"
    return cfg


def _randomize(module, seed):
    """Every parameter ~ N(0, 1/fan_in); the router's scale, the per-expert
    scale and the norms' weights (ones by default, which would hide a weight
    applied to the wrong input) uniform in [0.25, 2.25)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in module.named_parameters():
            if n.endswith(("router.scale", "per_expert_scale", "layernorm_2.weight")) or (
                    p.dim() == 1 and "norm" in n):
                p.copy_(torch.rand(p.shape, generator=g) * 2.0 + 0.25)
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[-1] ** 0.5)
    return module


def _decoder_layer(seed=0, **more):
    layer = gemma4.Gemma4TextDecoderLayer(_config(**more), 0)
    return _randomize(layer, seed).eval()


@pytest.fixture(scope="module")
def x():
    # The residual stream: a few times the unit scale, as after the embedding.
    return 3.0 * torch.randn(T, D, generator=torch.Generator().manual_seed(1))


def _moe_path(layer, x2):
    """transformers' MoE branch of the decoder layer from its own modules:
    (experts' output, after post_feedforward_layernorm_2, top-k weights with
    the per-expert scale, top-k ids)."""
    with torch.no_grad():
        _, w, ids = layer.router(x2)
        h = layer.experts(layer.pre_feedforward_layernorm_2(x2), ids, w)
        return h, layer.post_feedforward_layernorm_2(h), w, ids


def _numpy(weights):
    return {n: t.detach().float().contiguous().numpy() for n, t in weights.items()}


def _check_parity(spec, weights, ref_layer, x):
    """The compiled layer (NumPy API) against ``ref_layer``'s MoE path in
    float32: the MoE output (before and after post_feedforward_layernorm_2,
    applied in torch), the top-k ids and weights."""
    got = compiled(spec).forward(x.numpy(), **_numpy(weights))
    want_h, want_post, want_w, want_ids = _moe_path(ref_layer, x)
    # f32 kernels against torch's f32: sums of D and F terms in other orders
    # (the 1e-5 test_hf_import.py takes for every family).
    np.testing.assert_allclose(got["out"], want_h.numpy(), rtol=1e-5,
                               atol=1e-5 * want_h.abs().max().item())
    with torch.no_grad():
        post = ref_layer.post_feedforward_layernorm_2(torch.from_numpy(got["out"]))
    np.testing.assert_allclose(post.numpy(), want_post.numpy(), rtol=1e-5,
                               atol=1e-5 * want_post.abs().max().item())
    # Both order a token's choices by descending score (no ties in random data).
    np.testing.assert_array_equal(got["topk_ids"], want_ids.numpy())
    # topk_weights are the router's, without the per-expert scale (semantics
    # §6): transformers' top_k_weights carry it.
    scale = weights["expert_scale"].float().numpy()
    np.testing.assert_allclose(got["topk_weights"] * scale[got["topk_ids"]], want_w.numpy(),
                               rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ spec

def test_spec_of_the_decoder_layer():
    layer = _decoder_layer()
    spec, weights = G.gemma4_spec_and_weights(layer)
    assert spec["name"] == "gemma4" and spec["kind"] == "moe"
    assert (spec["d_model"], spec["experts"], spec["expert_hidden"]) == (D, E, F)
    assert spec["activation"] == "geglu_tanh"          # gelu_pytorch_tanh, gated
    assert spec["weight_dtype"] == "f32"
    assert spec["expert_scale"] and spec["expert_rms_norm"]
    assert spec["expert_rms_norm_eps"] == layer.pre_feedforward_layernorm_2.eps
    r = spec["router"]
    assert (r["top_k"], r["score"], r["order"], r["normalize"], r["rms_norm"]) == (
        K, "softmax", "score_then_topk", True, True)
    assert r["rms_norm_eps"] == layer.router.norm.eps
    assert list(weights) == ["router_norm", "expert_norm", "gate", "w1", "w3", "w2",
                             "expert_scale"]
    # scale · D^-1/2 rounded once to f32 (torch's f32 product rounds the
    # scalar first): within an f32 ulp.
    torch.testing.assert_close(weights["router_norm"],
                               layer.router.scale.detach() * D ** -0.5, rtol=2**-23, atol=0)
    assert torch.equal(weights["expert_norm"], layer.pre_feedforward_layernorm_2.weight)
    assert torch.equal(weights["w1"], layer.experts.gate_up_proj[:, :F])
    assert torch.equal(weights["w3"], layer.experts.gate_up_proj[:, F:])
    # Zero-copy: the expert weights are views of the layer's parameters.
    assert weights["w2"].untyped_storage().data_ptr() == \
        layer.experts.down_proj.untyped_storage().data_ptr()
    # Equal layers, equal specs (one compiled library); name= renames.
    assert spec_hash(G.gemma4_spec_and_weights(_decoder_layer(seed=5))[0]) == spec_hash(spec)
    assert G.gemma4_from_hf(layer, name="g4").spec["name"] == "g4"
    assert G.gemma4_from_hf(layer).family == "gemma4"


def test_spec_of_a_meta_layer():
    """A layer on the meta device (no values, as spec_from_config builds
    models) gives the same spec."""
    with torch.device("meta"):
        meta = gemma4.Gemma4TextDecoderLayer(_config(), 0)
    spec, weights = G.gemma4_spec_and_weights(meta)
    assert spec == G.gemma4_spec_and_weights(_decoder_layer())[0]
    assert all(t.is_meta for t in weights.values())


def test_weight_dtype():
    layer = _decoder_layer().to(torch.bfloat16)
    spec, weights = G.gemma4_spec_and_weights(layer)
    assert spec["weight_dtype"] == "bf16"
    assert weights["w1"].dtype == weights["gate"].dtype == torch.bfloat16
    for n in ("router_norm", "expert_norm", "expert_scale"):     # the contract's f32
        assert weights[n].dtype == torch.float32, n
    spec32, weights32 = G.gemma4_spec_and_weights(layer, weight_dtype="f32")
    assert spec32["weight_dtype"] == "f32" and weights32["w1"].dtype == torch.float32
    # A float32 router whose values are not bf16 values: f32 (a widening).
    layer.router.proj.float()
    with torch.no_grad():
        layer.router.proj.weight.add_(1e-4)
    assert G.gemma4_spec_and_weights(layer)[0]["weight_dtype"] == "f32"
    with pytest.raises(ValueError, match="weight_dtype must be one of"):
        G.gemma4_spec_and_weights(layer, weight_dtype="fp8")


# ------------------------------------------------------------------ parity

@requires_compiler
def test_parity_f32(x):
    layer = _decoder_layer()
    spec, weights = G.gemma4_spec_and_weights(layer)
    _check_parity(spec, weights, layer, x)


@requires_compiler
def test_parity_bf16(x):
    """bf16 weights: the spec is bf16, and the compiled layer equals the
    layer's MoE path run in float32 on the same (bf16) values, as
    test_hf_import.py checks every family's bf16 import."""
    layer = _decoder_layer().to(torch.bfloat16)
    spec, weights = G.gemma4_spec_and_weights(layer)
    assert spec["weight_dtype"] == "bf16"
    _check_parity(spec, weights, copy.deepcopy(layer).float(), x)


@requires_compiler
def test_parity_weight_dtype_f32_of_bf16_layer(x):
    """weight_dtype='f32' of a bf16 layer: the same values, widened."""
    layer = _decoder_layer().to(torch.bfloat16)
    spec, weights = G.gemma4_spec_and_weights(layer, weight_dtype="f32")
    _check_parity(spec, weights, copy.deepcopy(layer).float(), x)


@requires_compiler
def test_bf16_activations(x):
    """The swapped experts module in a bf16 layer: bf16 residual tokens in,
    bf16 out, the f32 result rounded once."""
    layer = _decoder_layer().to(torch.bfloat16)
    native, ref = copy.deepcopy(layer), copy.deepcopy(layer).float()
    spec, _ = G.gemma4_spec_and_weights(layer)
    experts = G.patch_gemma4_layer(layer, compiled=compiled(spec))
    xb = x.to(torch.bfloat16)
    with torch.no_grad():
        got = layer.experts(xb)
        got_ids = experts.moe.route(xb)[0].numpy()
    want = _moe_path(ref, xb.float())[0]
    assert experts is layer.experts and got.dtype == torch.bfloat16 and got.shape == xb.shape
    # One bf16 rounding of two f32 results that agree to ~1e-6: at most one
    # bf16 ulp apart (2^-7 relative) where they straddle a rounding boundary.
    torch.testing.assert_close(got.float(), want.to(torch.bfloat16).float(), rtol=2**-7,
                               atol=1e-6)
    # transformers' own bf16 path rounds to bf16 at every step (router norm,
    # scale, logits, experts' norm, gate/up, activation, down, weighted sum,
    # the k-term sum): about ten roundings of at most 2^-9 relative each, up
    # to ~2% of the output's scale (0.5-0.7% measured over five seeds); and a
    # token whose k-th and (k+1)-th scores lie within a bf16 rounding may
    # choose another expert (none did in those seeds).  On the tokens routed
    # alike the outputs agree to 2^-6 of the output's largest magnitude.
    h, _, _, ids = _moe_path(native, xb)
    same = (np.sort(got_ids, 1) == np.sort(ids.numpy(), 1)).all(1)
    assert same.mean() >= 0.9
    scale = h.float().abs().max().item()
    torch.testing.assert_close(got.float()[same], h.float()[same], rtol=0, atol=2**-6 * scale)


# ------------------------------------------------------------------ swapping

def _tiny_model(layers=2, seed=0):
    cfg = _config(layers=layers)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    return _randomize(model, seed)


@requires_compiler
def test_patch_model_same_logits():
    """Every decoder layer of a small Gemma4ForCausalLM swapped: the same
    logits (f32), one compiled library shared by the layers."""
    from moe_mlir.torch import MoELayer
    model = _tiny_model()
    assert type(model).__name__ == "Gemma4ForCausalLM"
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(ids).logits
    swapped = []
    for layer in model.model.layers:
        spec, _ = G.gemma4_spec_and_weights(layer)
        swapped.append(G.patch_gemma4_layer(layer, compiled=compiled(spec)))
    assert len(swapped) == 2
    assert len({spec_hash(m.spec) for m in swapped}) == 1
    assert len({id(m.moe.layer) for m in swapped}) == 1
    for layer, m in zip(model.model.layers, swapped):
        assert isinstance(m.moe, MoELayer) and layer.experts is m
        assert isinstance(layer.pre_feedforward_layernorm_2, torch.nn.Identity)
        assert layer.router(torch.zeros(1, D)) == (None, None, None)
        assert "router" not in dict(layer.named_children())
    assert not [n for n, _ in model.named_modules() if n.endswith(".router.proj")]
    with torch.no_grad():
        got = model(ids).logits
    # Ten decoder-layer steps after the MoE (attention, norms, lm_head) on
    # outputs that agree to ~1e-6 relative: test_hf_import.py's 1e-4.
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(UnsupportedBlockError, match="already patched"):
        G.patch_gemma4_layer(model.model.layers[0])


@requires_compiler
def test_patch_compiles_when_not_given_a_layer(x):
    layer = _decoder_layer()
    ref = copy.deepcopy(layer)
    experts = G.patch_gemma4_layer(layer)       # the fast pipeline, through the cache
    with torch.no_grad():
        got = experts(x)
    want = _moe_path(ref, x)[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    with pytest.raises(ValueError, match="routes the tokens itself"):
        experts(x, torch.zeros(T, K, dtype=torch.long), torch.ones(T, K))


def test_owner_of_a_router():
    model = _tiny_model(layers=1)
    path, block = "model.layers.0.router", model.model.layers[0].router
    assert G.gemma4_owner(model, path, block) == ("model.layers.0", model.model.layers[0])
    mlp = model.model.layers[0].mlp
    assert G.gemma4_owner(model, "model.layers.0.mlp", mlp) == ("model.layers.0.mlp", mlp)
    assert G.is_gemma4_decoder_layer(model.model.layers[0])
    assert not G.is_gemma4_decoder_layer(block)


# ------------------------------------------------------------------ checkpoints

def test_safetensors_round_trip(tmp_path):
    model = _tiny_model()
    model.save_pretrained(tmp_path)
    for i, layer in enumerate(model.model.layers):
        spec, weights = G.gemma4_spec_and_weights(layer)
        for prefix in (f"model.layers.{i}", f"model.layers.{i}.router"):
            loaded = G.load_gemma4_weights(tmp_path, prefix, spec)
            assert list(loaded) == list(weights)
            for n, t in loaded.items():
                assert torch.equal(t, weights[n]), (prefix, n)
    with pytest.raises(ValueError, match="no tensor model.layers.7.router.proj.weight|"
                                         "no tensor model.layers.7"):
        G.load_gemma4_weights(tmp_path, "model.layers.7", spec)
    with pytest.raises(ValueError, match="not a Gemma 4 spec"):
        G.load_gemma4_weights(tmp_path, "model.layers.0", dict(spec, expert_rms_norm=False))
    with pytest.raises(ValueError, match="shape"):
        G.load_gemma4_weights(tmp_path, "model.layers.0", dict(spec, d_model=2 * D))


# ------------------------------------------------------------------ refusals

def _refused(layer, match):
    with pytest.raises(UnsupportedBlockError, match=match):
        G.gemma4_spec_and_weights(layer)


def test_dense_layer_is_refused():
    dense = gemma4.Gemma4TextDecoderLayer(_config(enable_moe_block=False), 0)
    _refused(dense, "without enable_moe_block has no MoE")


def test_not_a_decoder_layer():
    layer = _decoder_layer()
    _refused(layer.router, "is not a Gemma4TextDecoderLayer")
    with pytest.raises(UnsupportedBlockError, match="router alone is not its MoE"):
        G.read_gemma4_router(layer.router, "model.layers.0.router")


def test_router_bias_is_refused():
    layer = _decoder_layer()
    layer.router.proj = torch.nn.Linear(D, E, bias=True)
    _refused(layer, "router.proj has a bias")


def test_unexpected_modules_are_refused():
    layer = _decoder_layer()
    layer.router = torch.nn.Linear(D, E)
    _refused(layer, "router: expected transformers' Gemma4TextRouter, got Linear")
    layer = _decoder_layer()
    layer.pre_feedforward_layernorm_2 = torch.nn.LayerNorm(D)
    _refused(layer, "pre_feedforward_layernorm_2: expected transformers' Gemma4RMSNorm")


def test_unsupported_activation_is_refused():
    layer = _decoder_layer()
    layer.experts.act_fn = transformers.activations.QuickGELUActivation()
    _refused(layer, "QuickGELUActivation is not expressible")


def test_expert_variants_are_refused():
    layer = _decoder_layer()
    layer.experts.has_post_expert_norm = True
    _refused(layer, "has_post_expert_norm")
    layer = _decoder_layer()
    layer.experts._is_expert_parallel = True
    _refused(layer, "expert-parallel")
    layer = _decoder_layer()
    layer.experts.has_bias = True
    _refused(layer, "has biases")


def test_top_k_beyond_the_experts_is_refused():
    layer = _decoder_layer()
    layer.router.config.top_k_experts = E + 1
    _refused(layer, r"router.top_k' \(9\) must be <= experts \(8\)")
    layer.router.config.top_k_experts = None
    _refused(layer, "top_k_experts None is not an integer")


def test_swap_needs_a_gemma4_spec():
    layer = _decoder_layer()
    other = types.SimpleNamespace(spec={"router": {"rms_norm": False}})
    with pytest.raises(ValueError, match="MoELayer of a Gemma 4 spec"):
        G.swap_gemma4_moe(layer, other)
    assert type(layer.router).__name__ == "Gemma4TextRouter"    # left as it was
    with pytest.raises(UnsupportedBlockError, match="is not a Gemma4TextDecoderLayer"):
        G.swap_gemma4_moe(layer.mlp, other)
