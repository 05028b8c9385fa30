"""moe_mlir.hf: transformers' own MoE blocks (tiny configs, random weights)
read by from_hf and compiled, against the blocks themselves: outputs and
routing ids, f32 and bf16 weights; spec_from_config + load_hf_weights through
save_pretrained; patch_model on small models; clear errors for the families
the spec cannot express yet.  Needs torch and transformers (skipped without)."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed (pip install torch)")
transformers = pytest.importorskip("transformers",
                                   reason="transformers not installed (pip install transformers)")
pytest.importorskip("safetensors", reason="safetensors not installed (pip install safetensors)")

import moe_mlir  # noqa: E402
from moe_mlir import hf  # noqa: E402

transformers.logging.set_verbosity_error()

D, E, F = 32, 8, 16
T = 2 * 24          # tokens of a [2, 24, D] batch


def _config(name):
    """(config, block class, route) of a family: route(block, x2d) -> (weights, ids)."""
    t = transformers
    gate = lambda b, x: b.gate(x)[1:]                          # noqa: E731
    router = lambda b, x: b.router(x)[1:]                      # noqa: E731
    if name == "mixtral":
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock as B
        return t.MixtralConfig(hidden_size=D, intermediate_size=F, num_local_experts=E,
                               num_experts_per_tok=2), B, gate
    if name == "qwen2_moe":
        from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock as B
        return t.Qwen2MoeConfig(hidden_size=D, moe_intermediate_size=F, num_experts=E,
                                num_experts_per_tok=2, norm_topk_prob=False,
                                shared_expert_intermediate_size=24), B, gate
    if name == "qwen3_moe":
        from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock as B
        return t.Qwen3MoeConfig(hidden_size=D, moe_intermediate_size=F, num_experts=E,
                                num_experts_per_tok=3, norm_topk_prob=True), B, gate
    if name == "qwen3_next":
        from transformers.models.qwen3_next.modeling_qwen3_next import (
            Qwen3NextSparseMoeBlock as B)
        return t.Qwen3NextConfig(hidden_size=D, moe_intermediate_size=F, num_experts=E,
                                 num_experts_per_tok=2, norm_topk_prob=True,
                                 shared_expert_intermediate_size=16), B, gate
    if name == "olmoe":
        from transformers.models.olmoe.modeling_olmoe import OlmoeSparseMoeBlock as B
        return t.OlmoeConfig(hidden_size=D, intermediate_size=F, num_experts=E,
                             num_experts_per_tok=2, norm_topk_prob=False), B, gate
    if name == "deepseek_v2":
        from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2Moe as B
        return t.DeepseekV2Config(hidden_size=D, moe_intermediate_size=F, n_routed_experts=E,
                                  num_experts_per_tok=3, n_shared_experts=2,
                                  routed_scaling_factor=1.5, topk_method="group_limited_greedy",
                                  n_group=4, topk_group=2), B, gate
    if name == "deepseek_v2_greedy":
        from transformers.models.deepseek_v2.modeling_deepseek_v2 import DeepseekV2Moe as B
        return t.DeepseekV2Config(hidden_size=D, moe_intermediate_size=F, n_routed_experts=E,
                                  num_experts_per_tok=2, n_shared_experts=1), B, gate
    if name == "deepseek_v3":
        from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE as B
        return t.DeepseekV3Config(hidden_size=D, moe_intermediate_size=F, n_routed_experts=E,
                                  num_experts_per_tok=3, n_group=4, topk_group=2,
                                  norm_topk_prob=True, routed_scaling_factor=2.5,
                                  n_shared_experts=2), B, gate
    if name == "granitemoe":
        from transformers.models.granitemoe.modeling_granitemoe import GraniteMoeMoE as B
        return t.GraniteMoeConfig(hidden_size=D, intermediate_size=F, num_local_experts=E,
                                  num_experts_per_tok=2), B, router
    if name == "granitemoeshared":
        from transformers.models.granitemoeshared.modeling_granitemoeshared import (
            GraniteMoeSharedMoE as B)
        return t.GraniteMoeSharedConfig(hidden_size=D, intermediate_size=F, num_local_experts=E,
                                        num_experts_per_tok=2,
                                        shared_intermediate_size=16), B, router
    if name == "jamba":
        from transformers.models.jamba.modeling_jamba import JambaSparseMoeBlock as B
        return t.JambaConfig(hidden_size=D, intermediate_size=F, num_experts=E,
                             num_experts_per_tok=2), B, router
    if name == "minimax":
        from transformers.models.minimax.modeling_minimax import MiniMaxSparseMoeBlock as B
        return t.MiniMaxConfig(hidden_size=D, intermediate_size=F, num_local_experts=E,
                               num_experts_per_tok=2), B, gate
    if name == "qwen3_5_moe":
        from transformers.models.qwen3_5_moe.modeling_qwen3_5_moe import (
            Qwen3_5MoeSparseMoeBlock as B)
        return t.Qwen3_5MoeTextConfig(hidden_size=D, moe_intermediate_size=F, num_experts=E,
                                      num_experts_per_tok=3,
                                      shared_expert_intermediate_size=16), B, gate
    if name == "qwen3_vl_moe":
        from transformers.models.qwen3_vl_moe.modeling_qwen3_vl_moe import (
            Qwen3VLMoeTextSparseMoeBlock as B)
        return t.Qwen3VLMoeTextConfig(hidden_size=D, moe_intermediate_size=F, num_experts=E,
                                      num_experts_per_tok=3), B, gate
    if name == "flex_olmo":
        from transformers.models.flex_olmo.modeling_flex_olmo import FlexOlmoSparseMoeBlock as B
        return t.FlexOlmoConfig(hidden_size=D, intermediate_size=F, num_experts=E,
                                num_experts_per_tok=2, norm_topk_prob=True), B, gate
    if name == "granitemoehybrid":
        from transformers.models.granitemoehybrid.modeling_granitemoehybrid import (
            GraniteMoeHybridMoE as B)
        return t.GraniteMoeHybridConfig(hidden_size=D, intermediate_size=F,
                                        num_local_experts=E, num_experts_per_tok=2,
                                        mamba_n_heads=8, mamba_d_head=8), B, router
    if name == "dbrx":
        from transformers.models.dbrx.modeling_dbrx import DbrxFFN as B
        cfg = t.DbrxConfig(d_model=D, ffn_config=dict(ffn_hidden_size=F, moe_num_experts=E,
                                                      moe_top_k=2))
        return cfg, B, lambda b, x: b.route_tokens_to_experts(b.router(x))
    if name == "deepseek_v4":
        from transformers.models.deepseek_v4.modeling_deepseek_v4 import (
            DeepseekV4SparseMoeBlock)
        cfg = t.DeepseekV4Config(hidden_size=D, intermediate_size=F, num_local_experts=E,
                                 num_experts_per_tok=3, routed_scaling_factor=1.5,
                                 swiglu_limit=1.0)    # a limit the parity input reaches
        layer = cfg.mlp_layer_types.index("moe")      # the first layers are hash-routed
        return cfg, lambda c: DeepseekV4SparseMoeBlock(c, layer), gate
    if name == "laguna":
        from transformers.models.laguna.modeling_laguna import LagunaSparseMoeBlock as B

        def laguna_route(b, x):    # the block scales the routed sum, not the weights
            w, ids = b.gate(x)[1:]
            return w * b.routed_scaling_factor, ids
        return t.LagunaConfig(hidden_size=D, moe_intermediate_size=F, num_experts=E,
                              num_experts_per_tok=3, shared_expert_intermediate_size=16,
                              moe_router_logit_softcapping=0.5,   # below the logits: it caps
                              moe_routed_scaling_factor=2.0), B, laguna_route
    if name == "llama4":
        from transformers.models.llama4.modeling_llama4 import Llama4TextMoe as B

        def llama4_route(b, x):    # top-k of the logits, sigmoid of those
            top, ids = b.router(x)[1].topk(b.router.top_k, dim=1)
            return torch.sigmoid(top), ids
        return t.Llama4TextConfig(hidden_size=D, intermediate_size=F, num_local_experts=E,
                                  num_experts_per_tok=2), B, llama4_route
    if name == "mixtral_gelu_tanh":    # gelu_pytorch_tanh gated experts: geglu_tanh
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock as B
        return t.MixtralConfig(hidden_size=D, intermediate_size=F, num_local_experts=E,
                               num_experts_per_tok=2, hidden_act="gelu_pytorch_tanh"), B, gate
    if name == "nemotron_h":
        from transformers.models.nemotron_h.modeling_nemotron_h import NemotronHMoE as B
        return t.NemotronHConfig(hidden_size=D, moe_intermediate_size=F, n_routed_experts=E,
                                 num_experts_per_tok=3, n_group=4, topk_group=2,
                                 norm_topk_prob=True, routed_scaling_factor=2.0,
                                 moe_shared_expert_intermediate_size=24), B, gate
    if name == "jetmoe":
        from transformers.models.jetmoe.modeling_jetmoe import JetMoeMoE as B

        def jet_route(b, x):     # the router's own steps: top-k logits, softmax of those
            top, ids = b.router.layer(x).float().topk(b.router.top_k, dim=1)
            return torch.softmax(top, dim=1), ids
        return t.JetMoeConfig(hidden_size=D, intermediate_size=F, num_local_experts=E,
                              num_experts_per_tok=2), B, jet_route
    if name == "phimoe":
        from transformers.models.phimoe.modeling_phimoe import PhimoeSparseMoeBlock as B
        # A jitter_eps that leaves a few experts within reach of each choice
        # (the default 0.01 masks nearly all: weights of 1).
        return t.PhimoeConfig(hidden_size=D, intermediate_size=F, num_local_experts=E,
                              router_jitter_noise=0.2), B, router
    if name == "gpt_oss":
        from transformers.models.gpt_oss.modeling_gpt_oss import GptOssMLP as B
        return t.GptOssConfig(hidden_size=D, intermediate_size=F, num_local_experts=E,
                              num_experts_per_tok=2), B, router
    raise KeyError(name)


FAMILIES = {"mixtral": "mixtral", "qwen2_moe": "qwen2_moe", "qwen3_moe": "qwen3_moe",
            "qwen3_next": "qwen2_moe", "olmoe": "olmoe", "deepseek_v2": "deepseek_v2",
            "deepseek_v2_greedy": "deepseek_v2", "deepseek_v3": "deepseek_v3",
            "granitemoe": "granitemoe", "granitemoeshared": "granitemoe", "jamba": "jamba",
            "dbrx": "dbrx", "minimax": "mixtral", "qwen3_5_moe": "qwen3_5_moe",
            "qwen3_vl_moe": "qwen3_vl_moe", "flex_olmo": "olmoe",
            "granitemoehybrid": "granitemoe", "nemotron_h": "nemotron_h", "jetmoe": "jetmoe",
            "gpt_oss": "gpt_oss", "mixtral_gelu_tanh": "mixtral",
            "deepseek_v4": "deepseek_v4", "laguna": "laguna", "llama4": "llama4",
            "phimoe": "phimoe"}


def _randomize(module, seed):
    """Every parameter ~ N(0, 1/fan_in) (the blocks' own init leaves some
    uninitialised); DeepSeek-V3's selection bias too, so it matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[-1]))
        for n, b in list(module.named_buffers()) + list(module.named_parameters()):
            if n.endswith("e_score_correction_bias"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
    return module


def _block(name, seed=0):
    cfg, cls, route = _config(name)
    cfg._experts_implementation = "eager"
    block = _randomize(cls(cfg), seed).eval()
    if name == "gpt_oss":
        # Gate/up values well past swiglu_limit (7): the clamps matter.
        with torch.no_grad():
            block.experts.gate_up_proj.mul_(8)
    return block, route


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, T // 2, D, generator=torch.Generator().manual_seed(1))


def _sorted_routing(ids, w):
    ids = np.asarray(ids)
    order = np.argsort(ids, axis=-1, kind="stable")
    return np.take_along_axis(ids, order, -1), np.take_along_axis(np.asarray(w), order, -1)


# The fast pipeline (the default, what patch_model uses) for a few families,
# the reference one (compiles ~8x faster; the two agree to rounding, see
# test_compile_moe.py) for the rest: the mapping is what is under test here.
FAST = ("mixtral", "deepseek_v3", "gpt_oss")


def _check_parity(layer_import, block, route, x, pipeline):
    """Our compiled layer (NumPy API) against the block in float32: output,
    routing ids and weights."""
    spec, _ = layer_import
    layer = moe_mlir.compile(spec, pipeline=pipeline)
    x2 = x.reshape(-1, D)
    ref_block = block.float()
    with torch.no_grad():
        want = ref_block(x)
        if isinstance(want, tuple):      # GPT-OSS: (output, router scores)
            want = want[0]
        want = want.reshape(-1, D).numpy()
        want_w, want_ids = route(ref_block, x2)
    got = layer.forward(x2.numpy(), **layer_import.numpy_weights())
    # f32 kernels against torch's f32: sums of D and F terms in other orders.
    np.testing.assert_allclose(got["out"], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    got_ids, got_w = _sorted_routing(got["topk_ids"], got["topk_weights"])
    want_ids, want_w = _sorted_routing(want_ids.numpy(), want_w.float().numpy())
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_w, want_w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_parity_f32(name, x):
    block, route = _block(name)
    assert hf.from_hf(block).spec["name"] == FAMILIES[name]
    # One name for every test spec: families with the same math share a library.
    imported = hf.from_hf(block, name="hf")
    assert imported.family == FAMILIES[name]
    assert imported.spec["weight_dtype"] == "f32"
    # Zero-copy: the experts' weights are views of the block's parameters.
    assert imported.weights["w1"].untyped_storage().data_ptr() in {
        p.untyped_storage().data_ptr() for p in block.parameters()}
    _check_parity(imported, block, route, x, "fast" if name in FAST else "reference")


# Look-alike blocks: (model folder, block class, config class) -> family.
LOOKALIKES = {
    ("glm4_moe", "Glm4MoeMoE", "Glm4MoeConfig"): "deepseek_v3",
    ("glm4_moe_lite", "Glm4MoeLiteMoE", "Glm4MoeLiteConfig"): "deepseek_v3",
    ("glm4v_moe", "Glm4vMoeTextMoE", "Glm4vMoeTextConfig"): "deepseek_v3",
    ("glm_moe_dsa", "GlmMoeDsaMoE", "GlmMoeDsaConfig"): "deepseek_v3",
    ("dots1", "Dots1MoE", "Dots1Config"): "deepseek_v3",
    ("dots3_note", "Dots3NoteTextMoE", "Dots3NoteTextConfig"): "deepseek_v3",
    ("solar_open", "SolarOpenMoE", "SolarOpenConfig"): "deepseek_v3",
    ("exaone_moe", "ExaoneMoeSparseMoEBlock", "ExaoneMoeConfig"): "deepseek_v3",
    ("kimi_linear", "KimiLinearMoE", "KimiLinearConfig"): "deepseek_v3",
    ("deepseek_v32", "DeepseekV32MoE", "DeepseekV32Config"): "deepseek_v3",
    ("bailing_hybrid", "BailingHybridMoE", "BailingHybridConfig"): "deepseek_v3",
    ("deepseek_ocr2", "DeepseekOcr2TextMoe", "DeepseekOcr2TextConfig"): "deepseek_v2",
    ("unlimited_ocr", "UnlimitedOcrTextMoe", "UnlimitedOcrTextConfig"): "deepseek_v2",
    ("mellum", "MellumSparseMoeBlock", "MellumConfig"): "qwen3_moe",
    ("qwen3_omni_moe", "Qwen3OmniMoeThinkerTextSparseMoeBlock",
     "Qwen3OmniMoeTextConfig"): "qwen3_moe",
    ("qwen4_exp", "Qwen4ExpTextSparseMoeBlock", "Qwen4ExpTextConfig"): "qwen2_moe",
}
# Their configs name the sizes differently: whichever of these a config has.
LOOKALIKE_SIZES = dict(
    hidden_size=D, moe_intermediate_size=F, intermediate_size=F, n_routed_experts=E,
    num_experts=E, num_local_experts=E, num_experts_per_tok=3, n_group=4, topk_group=2,
    n_shared_experts=1, num_shared_experts=1, norm_topk_prob=True, routed_scaling_factor=2.0,
    shared_expert_intermediate_size=16, moe_shared_expert_intermediate_size=16,
    topk_method="group_limited_greedy")


@pytest.mark.parametrize("key", sorted(LOOKALIKES), ids=lambda k: k[0])
def test_parity_lookalikes(key, x):
    import importlib
    folder, block_name, config_name = key
    try:
        module = importlib.import_module(f"transformers.models.{folder}.modeling_{folder}")
    except ImportError:   # written against 5.24; older 5.x releases lack some models
        pytest.skip(f"transformers {transformers.__version__} has no {folder}")
    cfg = getattr(importlib.import_module(f"transformers.models.{folder}"), config_name)()
    for k, v in LOOKALIKE_SIZES.items():
        if hasattr(cfg, k):
            setattr(cfg, k, v)
    cfg._experts_implementation = "eager"
    block = _randomize(getattr(module, block_name)(cfg), 0).eval()
    imported = hf.from_hf(block, name="hf")
    assert imported.family == LOOKALIKES[key]
    assert imported.spec["router"]["top_k"] == 3 and imported.spec["experts"] == E
    _check_parity(imported, block, lambda b, x2: b.gate(x2)[1:], x, "reference")


@pytest.mark.parametrize("name", ["mixtral", "qwen2_moe", "deepseek_v3", "dbrx", "granitemoe",
                                  "nemotron_h", "jetmoe", "gpt_oss", "deepseek_v4", "llama4",
                                  "phimoe"])
def test_parity_bf16(name, x):
    """bf16 weights: the spec is bf16, and the compiled layer equals the block
    run in float32 on the same (bf16) values."""
    block, route = _block(name)
    block = block.to(torch.bfloat16)
    imported = hf.from_hf(block, name="hf")
    assert imported.spec["weight_dtype"] == "bf16"
    assert imported.weights["w1"].dtype == torch.bfloat16
    if name in ("deepseek_v3", "nemotron_h"):
        assert imported.weights["gate_bias"].dtype == torch.float32   # the contract's f32
    for n in ("logit_bias", "b1", "b3", "b2", "output_bias"):
        if n in imported.weights:
            assert imported.weights[n].dtype == torch.float32, n
    _check_parity(imported, block, route, x, "fast" if name in FAST else "reference")


def test_module_keeps_shape_and_dtype(x):
    """HFLayer.module(): a MoELayer taking the block's [B, S, D] hidden states
    in the model's dtype; bf16 activations give the f32 result rounded once."""
    _moe_torch()
    block, _ = _block("qwen3_moe")
    block = block.to(torch.bfloat16)
    module = hf.from_hf(block, name="hf").module(pipeline="reference")
    xb = x.to(torch.bfloat16)
    with torch.no_grad():
        got = module(xb)
        want = block.float()(xb.float())
    assert got.shape == xb.shape and got.dtype == torch.bfloat16
    # One bf16 rounding of two f32 results that agree to ~1e-6: at most one
    # bf16 ulp apart (2^-7 relative) where they straddle a rounding boundary.
    torch.testing.assert_close(got.float(), want.to(torch.bfloat16).float(), rtol=2**-7,
                               atol=1e-6)


def test_float32_router_beside_bf16_experts(x):
    """A float32 router beside bf16 experts (DeepSeek-V3 keeps its router in
    float32): a bf16 spec when the router's values are bf16 values, else f32."""
    block, route = _block("deepseek_v3")
    block.experts.to(torch.bfloat16)
    block.shared_experts.to(torch.bfloat16)
    with torch.no_grad():
        block.gate.weight.copy_(block.gate.weight.to(torch.bfloat16).float())
    imported = hf.from_hf(block, name="hf")
    assert block.gate.weight.dtype == torch.float32
    assert imported.spec["weight_dtype"] == "bf16"
    _check_parity(imported, block, route, x, "reference")
    block.experts.to(torch.bfloat16)              # _check_parity ran it in float32
    block.shared_experts.to(torch.bfloat16)
    with torch.no_grad():
        block.gate.weight.add_(1e-4)              # no longer bf16 values
    imported = hf.from_hf(block, name="hf")
    assert block.experts.gate_up_proj.dtype == torch.bfloat16
    assert imported.spec["weight_dtype"] == "f32"
    assert imported.weights["w1"].dtype == torch.float32
    _check_parity(imported, block, route, x, "reference")


def test_new_family_specs(x):
    """What each newer family's reader maps, beside the parity tests: the
    spec fields that carry its math."""
    spec = hf.from_hf(_block("nemotron_h")[0]).spec
    assert spec["activation"] == "relu2" and "w3" not in moe_mlir.weight_shapes(spec)
    assert spec["shared_experts"] == {"hidden": 24, "gate": False}
    assert spec["router"]["score"] == "sigmoid" and spec["router"]["group_score"] == "top2_sum"
    assert hf.from_hf(_block("mixtral_gelu_tanh")[0]).spec["activation"] == "geglu_tanh"
    spec = hf.from_hf(_block("deepseek_v4")[0]).spec
    assert spec["router"]["score"] == "sqrt_softplus" and spec["swiglu"]["limit"] == 1.0
    spec = hf.from_hf(_block("jetmoe")[0]).spec
    assert spec["output_bias"] and spec["router"]["order"] == "topk_then_score"
    block, _ = _block("gpt_oss")
    spec = hf.from_hf(block).spec
    assert spec["swiglu"] == {"limit": 7.0, "alpha": 1.702, "up_offset": 1.0,
                              "clamp": "before_activation"}
    assert spec["expert_bias"] and spec["router"]["logit_bias"]
    # The parity input drives both branches past the limit (else the clamps
    # would go untested): gate columns above 7, up columns below -7.
    with torch.no_grad():
        gate_up = x.reshape(-1, D) @ block.experts.gate_up_proj[0]
    assert (gate_up[:, 0::2] > 7).any() and (gate_up[:, 1::2] < -7).any()


def test_phimoe_picks_two_experts_whatever_num_experts_per_tok():
    """PhiMoE's sparsemixer ignores its top_k argument: two experts per token
    for any num_experts_per_tok, so the spec's top_k is 2."""
    cfg, cls, route = _config("phimoe")
    cfg.num_experts_per_tok = 3
    block = _randomize(cls(cfg), 0).eval()
    spec = hf.from_hf(block).spec
    assert spec["router"]["top_k"] == 2 and spec["router"]["jitter_eps"] == 0.2
    with torch.no_grad():
        assert route(block, torch.randn(5, D))[1].shape == (5, 2)


def test_nemotron_h_latent_projection_is_refused():
    cfg, cls, _ = _config("nemotron_h")
    cfg.moe_latent_size = 16
    with torch.device("meta"):
        block = cls(cfg)
    with pytest.raises(hf.UnsupportedBlockError, match="latent projection"):
        hf.from_hf(block, where="backbone.layers.1.mixer")


def test_identical_blocks_equal_specs():
    a, _ = _block("mixtral", seed=0)
    b, _ = _block("mixtral", seed=5)
    assert hf.from_hf(a).spec == hf.from_hf(b).spec
    assert hf.from_hf(a, name="layer7").spec["name"] == "layer7"


def test_unpacks_as_spec_and_weights():
    block, _ = _block("qwen2_moe")
    spec, weights = hf.from_hf(block)
    assert list(weights) == list(moe_mlir.weight_shapes(spec))
    assert spec["shared_experts"] == {"hidden": 24, "gate": True}


# --------------------------------------------------------------- unsupported

def _meta_block(cls_path, cfg, *args):
    module, cls = cls_path.rsplit(".", 1)
    import importlib
    B = getattr(importlib.import_module(module), cls)
    with torch.device("meta"):
        return B(cfg, *args)


_NLLB = "transformers.models.nllb_moe.modeling_nllb_moe.NllbMoeSparseMLP"
_SWITCH = ("transformers.models.switch_transformers.modeling_switch_transformers."
           "SwitchTransformersSparseMLP")


def _nllb_config(**options):
    return lambda: transformers.NllbMoeConfig(d_model=D, num_experts=E, **options)


UNSUPPORTED = {
    # NLLB-MoE variants the spec cannot say (the block itself is supported).
    "nllb_moe_sampling": (_NLLB, _nllb_config(second_expert_policy="sampling"), (F,),
                          "second_expert_policy 'sampling' .* random second-expert choice"),
    "nllb_moe_random": (_NLLB, _nllb_config(second_expert_policy="random"), (F,),
                        "second_expert_policy 'random' .* random second-expert choice"),
    "nllb_moe_router_dtype": (_NLLB, _nllb_config(router_dtype="bfloat16"), (F,),
                              "router_dtype bfloat16"),
    "nllb_moe_prioritized_normalized": (
        _NLLB, _nllb_config(batch_prioritized_routing=True,
                            normalize_router_prob_before_dropping=True), (F,),
        "priority by the unnormalised weight"),
    "nllb_moe_quick_gelu": (_NLLB, _nllb_config(activation_function="quick_gelu"), (F,),
                            "QuickGELUActivation is not expressible"),
    "switch_router_dtype": (_SWITCH, lambda: transformers.SwitchTransformersConfig(
        d_model=D, d_ff=F, num_experts=E, router_dtype="bfloat16"), (),
        "router_dtype bfloat16 .* computes in float32"),
    "switch_quick_gelu": (_SWITCH, lambda: transformers.SwitchTransformersConfig(
        d_model=D, d_ff=F, num_experts=E, dense_act_fn="quick_gelu"), (),
        "QuickGELUActivation is not expressible"),
}


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_family_names_missing_feature(name):
    path, cfg, args, feature = UNSUPPORTED[name]
    block = _meta_block(path, cfg(), *args)
    with pytest.raises(hf.UnsupportedBlockError, match=feature) as info:
        hf.from_hf(block, where="model.layers.0.mlp")
    assert "model.layers.0.mlp" in str(info.value)


def test_nllb_moe_capacity_of_the_first_batch_is_refused():
    """A fraction <= 0 without expert_capacity (a None the config refuses, set
    on the router): transformers takes 2·ceil(T / E) of the first batch it
    routes and keeps it."""
    block = _meta_block(_NLLB, _nllb_config(moe_eval_capacity_token_fraction=0.0)(), F)
    block.router.expert_capacity = None
    with pytest.raises(hf.UnsupportedBlockError, match="capacity set by a previous call"):
        hf.from_hf(block)


def test_not_a_moe_block():
    with pytest.raises(hf.UnsupportedBlockError, match="not a known transformers MoE block"):
        hf.from_hf(torch.nn.Linear(4, 4))


def test_unsupported_variant_dbrx_p2():
    block, _ = _block("dbrx")
    block.moe_normalize_expert_weights = 2.0
    with pytest.raises(hf.UnsupportedBlockError, match="p-norm"):
        hf.from_hf(block)


def test_unsupported_activation():
    cfg, cls, _ = _config("mixtral")
    cfg.hidden_act = "quick_gelu"
    with torch.device("meta"):
        block = cls(cfg)
    with pytest.raises(hf.UnsupportedBlockError, match="QuickGELUActivation is not expressible"):
        hf.from_hf(block)


# ------------------------------------------------------------------ NLLB-MoE
#
# transformers 5.24's NllbMoeExperts.forward one-hot encodes the router's
# top-1 one-hot mask, so it runs expert 1 for every token's first choice and
# expert 0 for all its other entries.  The parity below is with the NLLB-MoE
# combination built from transformers' own pieces: the router's router_probs
# [T, E] (the combine weights after the drops and the renormalisation) and
# the block's expert modules, sum_e probs[:, e] · expert_e(x) · (1 - p).

def _nllb_block(seed=0, **options):
    from transformers.models.nllb_moe.modeling_nllb_moe import NllbMoeSparseMLP
    cfg = transformers.NllbMoeConfig(d_model=D, num_experts=E, router_bias=True,
                                     moe_token_dropout=0.2, **options)
    block = _randomize(NllbMoeSparseMLP(cfg, F), seed).eval()
    with torch.no_grad():
        block.router.classifier.weight[0] += 0.3     # expert 0 is everyone's favourite
    return block


def _nllb_correct(block, x2, padding_mask=None):
    """(output, router_probs) of the NLLB-MoE math on the block's own router
    and experts."""
    _, probs, _ = block.router(x2, padding_mask)
    out = sum(probs[:, e, None] * block.experts[f"expert_{e}"](x2) for e in range(E))
    return out * (1 - block.experts.moe_token_dropout), probs


NLLB_VARIANTS = {
    # normalize_router_prob_before_dropping False: renormalised after the drops.
    "default": dict(moe_eval_capacity_token_fraction=0.15),
    "prioritized": dict(moe_eval_capacity_token_fraction=0.15, batch_prioritized_routing=True),
    "normalized_first": dict(moe_eval_capacity_token_fraction=0.15,
                             normalize_router_prob_before_dropping=True),
    # A fraction <= 0: the fixed expert_capacity (capacity.tokens).
    "expert_capacity": dict(moe_eval_capacity_token_fraction=0.0, expert_capacity=5,
                            batch_prioritized_routing=True, activation_function="gelu"),
}


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("variant", sorted(NLLB_VARIANTS))
def test_nllb_moe_parity(variant, dtype, x):
    block = _nllb_block(**NLLB_VARIANTS[variant])
    if dtype == "bf16":
        block = block.to(torch.bfloat16)
    imported = hf.from_hf(block, name="hf")
    spec = imported.spec
    assert imported.family == "nllb_moe" and spec["weight_dtype"] == dtype
    assert spec["expert_bias"] and spec["expert_scale"] and spec["router"]["logit_bias"]
    opts = NLLB_VARIANTS[variant]
    cap = spec["capacity"]
    assert cap.get("renormalize", False) != opts.get("normalize_router_prob_before_dropping",
                                                     False)
    assert spec["router"]["normalize"] == opts.get("normalize_router_prob_before_dropping",
                                                   False)
    assert cap["priority"] == ("batch_prioritized" if opts.get("batch_prioritized_routing")
                               else "token_order")
    assert cap.get("token_fraction", cap.get("tokens")) in (0.15, 5)
    np.testing.assert_array_equal(imported.weights["expert_scale"].numpy(), np.float32(0.8))
    layer = moe_mlir.compile(spec, pipeline="fast" if variant == "default" else "reference")
    block = block.float()
    x2 = x.reshape(-1, D)
    with torch.no_grad():
        want, probs = _nllb_correct(block, x2)
        _, _, logits = block.router(x2)
        buggy = block(x).reshape(-1, D)
    want, probs = want.numpy(), probs.numpy()
    got = layer.forward(x2.numpy(), **imported.numpy_weights())
    np.testing.assert_allclose(got["out"], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    # The choices before the capacity: NLLB's argmax of the probabilities, then
    # of the other logits.
    top1 = torch.softmax(logits, -1).argmax(-1)
    top2 = logits.masked_fill(torch.nn.functional.one_hot(top1, E).bool(), -np.inf).argmax(-1)
    np.testing.assert_array_equal(got["topk_ids"], torch.stack([top1, top2], 1).numpy())
    kept = probs > 0                                          # [T, E]: the pairs kept
    np.testing.assert_array_equal(got["expert_counts"], kept.sum(axis=0))
    assert got["dropped"] == 2 * T - int(kept.sum()) and got["dropped"] > 0
    # transformers' own block runs other experts (see above).
    assert not np.allclose(buggy.numpy(), want, atol=1e-3), (
        "NllbMoeSparseMLP now combines its experts correctly: compare with it directly and "
        "update docs/pytorch.md")


def _tiny_nllb(**options):
    from transformers import NllbMoeForConditionalGeneration
    cfg = transformers.NllbMoeConfig(
        vocab_size=64, d_model=D, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=F,
        decoder_ffn_dim=F, encoder_attention_heads=4, decoder_attention_heads=4, num_experts=E,
        encoder_sparse_step=2, decoder_sparse_step=2, max_position_embeddings=64,
        router_bias=True, **options)
    torch.manual_seed(0)
    model = NllbMoeForConditionalGeneration(cfg).eval()
    return _randomize_moe(model, 0)


def _with_correct_nllb_blocks(model):
    """A copy of ``model`` whose sparse MLPs compute the NLLB-MoE math (a
    torch module, called as the encoder and decoder layers call the block)."""
    import copy

    class CorrectNllb(torch.nn.Module):
        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, hidden_states, padding_mask=None):
            out, _ = _nllb_correct(self.block, hidden_states.reshape(-1, D), padding_mask)
            return out.reshape(hidden_states.shape)

    ref = copy.deepcopy(model)
    for path, block in hf.moe_blocks(ref):
        parent, _, attr = path.rpartition(".")
        setattr(ref.get_submodule(parent), attr, CorrectNllb(block))
    return ref


def test_patch_model_nllb_moe():
    """Encoder and decoder sparse layers swapped; the same logits as the
    NLLB-MoE math, with and without padding (the layers pass their attention
    mask as padding_mask: padded tokens get no expert)."""
    _moe_torch()
    model = _tiny_nllb(moe_eval_capacity_token_fraction=1.0)
    want_model = _with_correct_nllb_blocks(model)
    report = moe_mlir.patch_model(model, pipeline="reference")
    assert [p for p, *_ in report.swapped] == ["model.encoder.layers.1.ffn",
                                               "model.decoder.layers.1.ffn"]
    assert report.specs == 1 and not report.left and not hf.moe_blocks(model)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 64, (2, 12), generator=g)
    dec = torch.randint(3, 64, (2, 7), generator=g)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0
    for attention_mask in (None, mask):
        with torch.no_grad():
            want = want_model(input_ids=ids, attention_mask=attention_mask,
                              decoder_input_ids=dec).logits
            got = model(input_ids=ids, attention_mask=attention_mask,
                        decoder_input_ids=dec).logits
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_patch_model_nllb_moe_padding_with_drops():
    """A capacity below the token count: the padded tokens would take no
    capacity in transformers and do in the compiled layer, so a batch with
    padding is refused; one without padding is the NLLB-MoE math."""
    _moe_torch()
    model = _tiny_nllb(moe_eval_capacity_token_fraction=0.3)
    want_model = _with_correct_nllb_blocks(model)
    moe_mlir.patch_model(model, pipeline="reference")
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(3, 64, (2, 12), generator=g)
    dec = torch.randint(3, 64, (2, 7), generator=g)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids, decoder_input_ids=dec).logits,
                                   want_model(input_ids=ids, decoder_input_ids=dec).logits,
                                   rtol=1e-4, atol=1e-4)
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[0, 10:] = 0
    with torch.no_grad(), pytest.raises(ValueError, match="2 padding token.*capacity of 8 < 24"):
        model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)


# ------------------------------------------------- config.json + safetensors

CHECKPOINTS = {
    "mixtral": lambda: transformers.MixtralConfig(
        hidden_size=D, intermediate_size=F, num_local_experts=E, num_experts_per_tok=2,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=64),
    "qwen2_moe": lambda: transformers.Qwen2MoeConfig(
        hidden_size=D, intermediate_size=F, moe_intermediate_size=F, num_experts=E,
        num_experts_per_tok=2, shared_expert_intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, vocab_size=64),
    "granitemoe": lambda: transformers.GraniteMoeConfig(
        hidden_size=D, intermediate_size=F, num_local_experts=E, num_experts_per_tok=2,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=64),
    "jamba": lambda: transformers.JambaConfig(
        hidden_size=D, intermediate_size=F, num_experts=E, num_experts_per_tok=2,
        attn_layer_period=1, attn_layer_offset=0, expert_layer_period=2, expert_layer_offset=1,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=64),
    "deepseek_v2": lambda: transformers.DeepseekV2Config(
        hidden_size=D, intermediate_size=F, moe_intermediate_size=F, n_routed_experts=E,
        num_experts_per_tok=2, n_shared_experts=1, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8,
        qk_nope_head_dim=8, v_head_dim=8, vocab_size=64),
    "deepseek_v3": lambda: transformers.DeepseekV3Config(
        hidden_size=D, intermediate_size=F, moe_intermediate_size=F, n_routed_experts=E,
        num_experts_per_tok=2, n_group=2, topk_group=1, n_shared_experts=1,
        first_k_dense_replace=1, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8,
        qk_nope_head_dim=8, v_head_dim=8, vocab_size=64),
    "gpt_oss": lambda: transformers.GptOssConfig(
        hidden_size=D, intermediate_size=F, num_local_experts=E, num_experts_per_tok=2,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        vocab_size=64),
    "llama4": lambda: transformers.Llama4TextConfig(
        hidden_size=D, intermediate_size=F, intermediate_size_mlp=F, num_local_experts=E,
        num_experts_per_tok=1, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, vocab_size=64, interleave_moe_layer_step=1),
    # Saved per expert (block_sparse_moe.experts.{e}.w1/w3/w2, gate.weight).
    "phimoe": lambda: transformers.PhimoeConfig(
        hidden_size=D, intermediate_size=F, num_local_experts=E, num_experts_per_tok=2,
        router_jitter_noise=0.2, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=64),
    "nemotron_h": lambda: transformers.NemotronHConfig(
        hidden_size=D, moe_intermediate_size=F, n_routed_experts=E, num_experts_per_tok=2,
        n_group=1, topk_group=1, moe_shared_expert_intermediate_size=16,
        layers_block_type=["attention", "moe"], num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, vocab_size=64,
        time_step_limit=(0.0, 1e4)),   # its default's inf does not survive config.json
}


def _tiny_model(name, seed=0):
    from transformers import AutoModelForCausalLM
    cfg = CHECKPOINTS[name]()
    cfg._experts_implementation = "eager"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    return _randomize(model, seed) if name != "deepseek_v3" else _randomize_moe(model, seed)


def _randomize_moe(model, seed):
    for _, block in hf.moe_blocks(model):
        _randomize(block, seed)
    return model


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_config_and_safetensors_round_trip(name, tmp_path):
    model = _tiny_model(name)
    model.save_pretrained(tmp_path)
    blocks = hf.moe_blocks(model)
    path, block = blocks[-1]
    layer = hf._layer_index(path)
    spec = moe_mlir.spec_from_config(tmp_path / "config.json", layer=layer)
    imported = hf.from_hf(block)
    assert spec == imported.spec
    if name == "nemotron_h":     # its checkpoint names the model "backbone"
        path = "backbone." + path.partition(".")[2]
    weights = moe_mlir.load_hf_weights(tmp_path, path, spec)
    assert list(weights) == list(imported.weights)
    for n, t in weights.items():
        assert torch.equal(t, imported.weights[n]), n
    if name == "deepseek_v3":
        with pytest.raises(ValueError, match="layer 0 .* no MoE block"):
            moe_mlir.spec_from_config(tmp_path, layer=0)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_safetensors_of_block_modules(name, tmp_path):
    """A block's own tensor names (transformers 5's fused layouts, DBRX's
    w1/v1/w2) read back as from_hf reads the block."""
    from safetensors.torch import save_file
    block, _ = _block(name)
    prefix = "model.layers.5.mlp"
    save_file({f"{prefix}.{k}": v.contiguous() for k, v in block.state_dict().items()},
              str(tmp_path / "model.safetensors"))
    imported = hf.from_hf(block)
    weights = moe_mlir.load_hf_weights(tmp_path / "model.safetensors", prefix, imported.spec)
    assert list(weights) == list(imported.weights)
    for n, t in weights.items():
        assert torch.equal(t, imported.weights[n]), n


def test_load_hf_weights_errors(tmp_path):
    model = _tiny_model("mixtral")
    model.save_pretrained(tmp_path)
    spec = moe_mlir.spec_from_config(tmp_path)
    with pytest.raises(ValueError, match="no tensor named model.layers.9.mlp"):
        moe_mlir.load_hf_weights(tmp_path, "model.layers.9.mlp", spec)
    bigger = dict(spec, experts=2 * E)
    with pytest.raises(ValueError, match="experts.8"):
        moe_mlir.load_hf_weights(tmp_path, "model.layers.0.mlp", bigger)
    with pytest.raises(FileNotFoundError):
        moe_mlir.load_hf_weights(tmp_path / "nope", "model.layers.0.mlp", spec)
    from safetensors.torch import save_file
    fp8 = {f"model.layers.0.mlp.{k}": v for k, v in
           hf.from_hf(model.model.layers[0].mlp).weights.items()}
    fp8 = {"model.layers.0.mlp.gate.weight": fp8["model.layers.0.mlp.gate"],
           "model.layers.0.mlp.experts.gate_up_proj": torch.cat(
               [fp8["model.layers.0.mlp.w1"], fp8["model.layers.0.mlp.w3"]], 1
           ).to(torch.float8_e4m3fn),
           "model.layers.0.mlp.experts.down_proj": fp8["model.layers.0.mlp.w2"].contiguous()}
    save_file(fp8, str(tmp_path / "fp8.safetensors"))
    with pytest.raises(ValueError, match="weight w1 is float8_e4m3fn .* dequantize"):
        moe_mlir.load_hf_weights(tmp_path / "fp8.safetensors", "model.layers.0.mlp", spec)


# ------------------------------------------------------------------ patching

def _moe_torch():
    return pytest.importorskip("moe_mlir.torch", reason="moe_mlir.torch (MoELayer) not present")


@pytest.mark.parametrize("name, pipeline, moe_layers", [
    ("mixtral", "fast", 2), ("qwen2_moe", "reference", 2),
    ("deepseek_v3", "reference", 1),     # layer 0 is dense (first_k_dense_replace)
    # Blocks returning (output, router scores/logits): swapped for a module that does too.
    ("gpt_oss", "reference", 2), ("llama4", "reference", 2),
    ("nemotron_h", "reference", 1),      # layer 0 is attention
    ("phimoe", "reference", 2),
])
def test_patch_model_same_logits(name, pipeline, moe_layers):
    moe_torch = _moe_torch()
    model = _tiny_model(name)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(ids).logits
    report = moe_mlir.patch_model(model, pipeline=pipeline)
    assert len(report.swapped) == moe_layers and report.specs == 1 and not report.left
    swapped = [m for m in model.modules() if isinstance(m, moe_torch.MoELayer)]
    assert len(swapped) == moe_layers
    assert len({id(m.layer) for m in swapped}) == 1      # one compiled library, shared
    assert f"swapped {moe_layers} MoE block(s)" in str(report)
    assert not hf.moe_blocks(model)
    with torch.no_grad():
        got = model(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_patch_model_reports_unsupported():
    _moe_torch()
    model = _tiny_model("mixtral")
    model.model.layers[1].mlp.experts.act_fn = transformers.activations.QuickGELUActivation()
    report = moe_mlir.patch_model(model)
    assert [p for p, *_ in report.swapped] == ["model.layers.0.mlp"]
    assert report.left[0][0] == "model.layers.1.mlp"
    assert "QuickGELUActivation is not expressible" in report.left[0][2]


def test_patch_model_reports_unknown_moe_blocks():
    """A block of a class the table does not know is left, and reported."""
    class OtherMoe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = torch.nn.Linear(D, E, bias=False)
            self.experts = torch.nn.ModuleList(torch.nn.Linear(D, D) for _ in range(E))

    model = torch.nn.Sequential(torch.nn.Linear(D, D), OtherMoe())
    report = moe_mlir.patch_model(model)
    assert not report.swapped
    assert report.left == [("1", "OtherMoe", report.left[0][2])]
    assert "unknown MoE block class" in report.left[0][2]


def test_import_moe_mlir_does_not_import_torch():
    import os
    import subprocess
    import sys
    from pathlib import Path
    code = ("import sys, moe_mlir; assert 'torch' not in sys.modules; "
            "moe_mlir.from_hf; assert 'torch' not in sys.modules; print('ok')")
    env = dict(os.environ, PYTHONPATH=str(Path(moe_mlir.__file__).parents[1]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


# ------------------------------------------------ DeepSeek-V4 hash routing
#
# The first mlp_layer_types ("hash_moe") route by token id: row input_ids[t]
# of the router's buffer tid2eid [vocab, k], weighed by the scores.
# transformers initialises tid2eid to zeros (the checkpoint fills it): the
# tests fill it with random expert ids.

V4_VOCAB = 64


def _hash_block(seed=0):
    from transformers.models.deepseek_v4.modeling_deepseek_v4 import DeepseekV4SparseMoeBlock
    cfg = transformers.DeepseekV4Config(hidden_size=D, intermediate_size=F, num_local_experts=E,
                                        num_experts_per_tok=3, routed_scaling_factor=1.5,
                                        swiglu_limit=1.0, vocab_size=V4_VOCAB)
    cfg._experts_implementation = "eager"
    assert cfg.mlp_layer_types[0] == "hash_moe"
    block = _randomize(DeepseekV4SparseMoeBlock(cfg, 0), seed).eval()
    assert block.is_hash
    _fill_tid2eid(block.gate.tid2eid, seed)
    return block


def _fill_tid2eid(table, seed):
    with torch.no_grad():
        table.copy_(torch.randint(0, E, table.shape, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_deepseek_v4_hash_parity(dtype, x):
    """A hash-routed DeepseekV4SparseMoeBlock: router.hash_vocab = vocab, the
    table as int32, no selection bias; the compiled layer given the token
    ids equals the block given them as input_ids (outputs, ids, weights)."""
    block = _hash_block()
    if dtype == "bf16":
        block = block.to(torch.bfloat16)
    imported = hf.from_hf(block, name="hf_hash")
    spec = imported.spec
    assert imported.family == "deepseek_v4" and spec["weight_dtype"] == dtype
    r = spec["router"]
    assert (r["hash_vocab"], r["top_k"], r["score"], r["normalize"], r["scaling"],
            r["selection_bias"]) == (V4_VOCAB, 3, "sqrt_softplus", True, 1.5, False)
    assert list(imported.weights)[:2] == ["gate", "tid2eid"]
    assert imported.weights["tid2eid"].dtype == torch.int32
    block = block.float()
    x2 = x.reshape(-1, D)
    ids = torch.randint(0, V4_VOCAB, x.shape[:-1], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = block(x, input_ids=ids).reshape(-1, D).numpy()
        _, want_w, want_ids = block.gate(x, ids)
    # The reference pipeline (test_hash_routing.py checks the fast one against it).
    layer = moe_mlir.compile(spec, pipeline="reference")
    got = layer.forward(x2.numpy(), token_ids=ids.reshape(-1).numpy(),
                        **imported.numpy_weights())
    np.testing.assert_allclose(got["out"], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    # The table's order: no sorting needed.
    np.testing.assert_array_equal(got["topk_ids"], want_ids.numpy())
    np.testing.assert_allclose(got["topk_weights"], want_w.numpy(), rtol=1e-5, atol=1e-6)


def test_deepseek_v4_hash_table_checks(tmp_path):
    """Expert ids outside [0, E) are refused (int32 would keep them, the
    layer refuses them); the table reads back from safetensors as int32."""
    from safetensors.torch import save_file
    block = _hash_block()
    prefix = "model.layers.0.mlp"
    save_file({f"{prefix}.{k}": v.contiguous() for k, v in block.state_dict().items()},
              str(tmp_path / "model.safetensors"))
    imported = hf.from_hf(block)
    weights = moe_mlir.load_hf_weights(tmp_path / "model.safetensors", prefix, imported.spec)
    assert list(weights) == list(imported.weights)
    for n, t in weights.items():
        assert torch.equal(t, imported.weights[n]), n
    with torch.no_grad():
        block.gate.tid2eid[5, 1] = E
    with pytest.raises(hf.UnsupportedBlockError, match=r"tid2eid holds expert ids outside "
                                                       r"\[0, 8\): 8"):
        hf.from_hf(block, where="model.layers.0.mlp")


def _tiny_deepseek_v4(seed=0):
    from transformers import AutoModelForCausalLM
    cfg = transformers.DeepseekV4Config(
        hidden_size=D, intermediate_size=F, num_local_experts=E, num_experts_per_tok=3,
        num_hidden_layers=2, mlp_layer_types=["hash_moe", "moe"], num_attention_heads=4,
        num_key_value_heads=1, head_dim=16, qk_rope_head_dim=8, q_lora_rank=16, o_groups=2,
        o_lora_rank=16, index_n_heads=2, index_head_dim=8, index_topk=4, sliding_window=8,
        hc_mult=2, swiglu_limit=1.0, vocab_size=V4_VOCAB)
    cfg._experts_implementation = "eager"
    torch.manual_seed(seed)
    model = _randomize_moe(AutoModelForCausalLM.from_config(cfg).eval(), seed)
    _fill_tid2eid(model.model.layers[0].mlp.gate.tid2eid, seed)
    return model


def test_patch_model_deepseek_v4_hash():
    """A DeepSeek-V4 model with a hash-routed layer: both MoE layers swapped
    (two specs), the decoder layer's input_ids reach the hash layer as its
    token ids, the same logits; inputs_embeds alone give it none."""
    _moe_torch()
    model = _tiny_deepseek_v4()
    spec = moe_mlir.spec_from_config(model.config, layer=0)
    assert spec["router"]["hash_vocab"] == V4_VOCAB
    assert "hash_vocab" not in moe_mlir.spec_from_config(model.config, layer=1)["router"]
    ids = torch.randint(0, V4_VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = model(ids).logits
    report = moe_mlir.patch_model(model, pipeline="reference")
    assert [p for p, *_ in report.swapped] == ["model.layers.0.mlp", "model.layers.1.mlp"]
    assert report.specs == 2 and not report.left and not hf.moe_blocks(model)
    with torch.no_grad():
        got = model(ids).logits
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
        embeds = model.model.embed_tokens(ids)
        with pytest.raises(ValueError, match="chooses its experts by token id: call the model "
                                             "with input_ids"):
            model(inputs_embeds=embeds)


# ------------------------------------------------------- Switch Transformers
#
# Switch's router counts expert_capacity per sequence (a cumsum over each
# row of the batch): the layer, whose capacity.tokens counts over the tokens
# of a call, is called once per sequence.

def _switch_block(seed=0, **options):
    from transformers.models.switch_transformers.modeling_switch_transformers import (
        SwitchTransformersSparseMLP)
    cfg = transformers.SwitchTransformersConfig(d_model=D, d_ff=F, num_experts=E,
                                                expert_capacity=4, **options)
    block = _randomize(SwitchTransformersSparseMLP(cfg), seed).eval()
    with torch.no_grad():
        block.router.classifier.weight[0] += 0.4        # expert 0 is everyone's favourite
    return block


@pytest.mark.parametrize("router_bias", [False, True])
def test_switch_per_sequence_parity(router_bias):
    """3 sequences of 16 tokens, a capacity of 4 per expert and sequence:
    drops in every sequence.  Layer.forward on each sequence equals the
    block on the batch (outputs; the argmax experts; per-sequence counts
    and drops from the router's capacity mask); the module applies it per
    sequence, and so does the layer on a sequence alone."""
    _moe_torch()
    block = _switch_block(router_bias=router_bias)
    imported = hf.from_hf(block, name="hf_switch")
    spec = imported.spec
    assert imported.family == "switch_transformers" and imported.per_sequence
    assert spec["capacity"] == {"tokens": 4, "overflow": "drop", "priority": "token_order"}
    assert spec["router"]["top_k"] == 1 and spec["activation"] == "relu"
    assert spec["router"]["logit_bias"] == router_bias
    x3 = torch.randn(3, 16, D, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = block(x3).numpy()
        mask, _, logits = block.router(x3)               # mask [3, 16, E]: kept one-hots
    layer = moe_mlir.compile(spec, pipeline="reference")
    W = imported.numpy_weights()
    for b in range(3):
        got = layer.forward(x3[b].numpy(), **W)
        np.testing.assert_allclose(got["out"], want[b], rtol=1e-5,
                                   atol=1e-5 * np.abs(want).max())
        np.testing.assert_array_equal(got["topk_ids"][:, 0], logits[b].argmax(-1).numpy())
        kept = mask[b].numpy().astype(np.int32)
        np.testing.assert_array_equal(got["expert_counts"], kept.sum(axis=0))
        assert got["dropped"] == 16 - int(kept.sum()) and got["dropped"] > 0
    # One call on the 48 tokens would count the capacity over all three.
    assert not np.allclose(layer(x3.reshape(-1, D).numpy(), **W), want.reshape(-1, D),
                           atol=1e-3)
    module = imported.module(compiled=layer)
    with torch.no_grad():
        torch.testing.assert_close(module(x3), torch.from_numpy(want), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(module(x3[1]), torch.from_numpy(want[1]), rtol=1e-5,
                                   atol=1e-5)


def test_patch_model_switch_transformers():
    """Encoder and decoder sparse MLPs swapped for the per-sequence module:
    the same logits on a batch of 3 whose sequences overflow the capacity."""
    _moe_torch()
    model = _tiny_switch()
    g = torch.Generator().manual_seed(3)
    ids, dec = torch.randint(0, 64, (3, 12), generator=g), torch.randint(0, 64, (3, 7),
                                                                         generator=g)
    with torch.no_grad():
        want = model(input_ids=ids, decoder_input_ids=dec).logits
    report = moe_mlir.patch_model(model, pipeline="reference")
    assert [p for p, *_ in report.swapped] == ["encoder.block.1.layer.1.mlp",
                                               "decoder.block.1.layer.2.mlp"]
    assert report.specs == 1 and not report.left and not hf.moe_blocks(model)
    with torch.no_grad():
        got = model(input_ids=ids, decoder_input_ids=dec).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# ------------------------------------ Switch / NLLB-MoE checkpoints (safetensors)

def _save_block(block, path, prefix):
    from safetensors.torch import save_file
    save_file({f"{prefix}.{k}": v.contiguous() for k, v in block.state_dict().items()},
              str(path))


def _same_weights(weights, imported):
    assert list(weights) == list(imported.weights)
    for n, t in weights.items():
        assert t.dtype == imported.weights[n].dtype, n
        assert torch.equal(t, imported.weights[n]), n


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("router_bias", [False, True])
def test_load_hf_weights_switch(router_bias, dtype, tmp_path):
    """Switch Transformers' router.classifier (+ bias: logit_bias) and
    per-expert experts.expert_{e}.wi/wo read back as from_hf reads the block."""
    block = _switch_block(router_bias=router_bias)
    if dtype == "bf16":
        block = block.to(torch.bfloat16)
    prefix = "encoder.block.1.layer.1.mlp"
    _save_block(block, tmp_path / "model.safetensors", prefix)
    imported = hf.from_hf(block)
    assert imported.spec["weight_dtype"] == dtype
    assert ("logit_bias" in imported.weights) == router_bias
    weights = moe_mlir.load_hf_weights(tmp_path / "model.safetensors", prefix, imported.spec)
    _same_weights(weights, imported)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_load_hf_weights_nllb_moe(dtype, tmp_path):
    """NLLB-MoE's router.classifier (+ bias), experts.expert_{e}.fc1/fc2 with
    their biases (b1, b2); expert_scale (1 - moe_token_dropout) is not in the
    checkpoint: the caller passes it (a number or E numbers), else ValueError."""
    block = _nllb_block()
    if dtype == "bf16":
        block = block.to(torch.bfloat16)
    prefix = "model.encoder.layers.1.ffn"
    _save_block(block, tmp_path / "model.safetensors", prefix)
    imported = hf.from_hf(block)
    spec = imported.spec
    assert spec["weight_dtype"] == dtype and spec["expert_scale"] and spec["expert_bias"]
    ck = tmp_path / "model.safetensors"
    with pytest.raises(ValueError, match="expert_scale.*moe_token_dropout.*expert_scale="):
        moe_mlir.load_hf_weights(ck, prefix, spec)
    _same_weights(moe_mlir.load_hf_weights(ck, prefix, spec, expert_scale=1.0 - 0.2), imported)
    _same_weights(moe_mlir.load_hf_weights(ck, prefix, spec, expert_scale=[1.0 - 0.2] * E),
                  imported)
    with pytest.raises(ValueError, match="expert_scale must be a number or"):
        moe_mlir.load_hf_weights(ck, prefix, spec, expert_scale=[0.8] * (E + 1))


def test_load_hf_weights_nllb_moe_without_dropout_or_biases(tmp_path):
    """moe_token_dropout 0: no expert_scale, nothing to pass; a missing
    per-expert fc bias is named."""
    block = _nllb_block().eval()
    block.experts.moe_token_dropout = 0.0
    prefix = "model.decoder.layers.3.ffn"
    _save_block(block, tmp_path / "model.safetensors", prefix)
    imported = hf.from_hf(block)
    assert "expert_scale" not in imported.weights
    _same_weights(moe_mlir.load_hf_weights(tmp_path / "model.safetensors", prefix,
                                           imported.spec), imported)
    from safetensors.torch import save_file
    state = {f"{prefix}.{k}": v.contiguous() for k, v in block.state_dict().items()
             if k != "experts.expert_2.fc2.bias"}
    save_file(state, str(tmp_path / "nobias.safetensors"))
    with pytest.raises(ValueError, match=r"experts\.expert_2\.fc2\.bias"):
        moe_mlir.load_hf_weights(tmp_path / "nobias.safetensors", prefix, imported.spec)


def _tiny_switch(**options):
    cfg = transformers.SwitchTransformersConfig(
        vocab_size=64, d_model=D, d_ff=F, d_kv=8, num_heads=4, num_layers=2,
        num_decoder_layers=2, num_sparse_encoder_layers=1, num_sparse_decoder_layers=1,
        num_experts=E, expert_capacity=2, **options)
    torch.manual_seed(0)
    return _randomize_moe(transformers.SwitchTransformersForConditionalGeneration(cfg).eval(),
                          0)


@pytest.mark.parametrize("name", ["switch_transformers", "nllb_moe"])
def test_encoder_decoder_checkpoint_folder(name, tmp_path):
    """A whole encoder-decoder checkpoint (save_pretrained): its config.json
    gives each sparse layer's spec as from_hf reads the block, encoder and
    decoder alike, and its safetensors the block's weights."""
    model = _tiny_switch(router_bias=True) if name == "switch_transformers" else _tiny_nllb(
        moe_eval_capacity_token_fraction=0.5)
    model.save_pretrained(tmp_path)
    blocks = hf.moe_blocks(model)
    assert len(blocks) == 2
    extra = {} if name == "switch_transformers" else {"expert_scale": 1.0 - 0.2}
    for path, block in blocks:
        imported = hf.from_hf(block)
        assert imported.family == name
        spec = moe_mlir.spec_from_config(tmp_path, layer=path)
        assert spec == imported.spec, path
        assert moe_mlir.spec_from_config(tmp_path, layer=hf._layer_index(path)) == spec
        weights = moe_mlir.load_hf_weights(tmp_path, path, spec, **extra)
        _same_weights(weights, imported)


def test_spec_from_config_encoder_and_decoder_of_other_sizes(tmp_path):
    """Encoder and decoder experts of other widths: the layer index names
    both blocks and is refused; each block's path gives its own spec."""
    from transformers import NllbMoeForConditionalGeneration
    cfg = transformers.NllbMoeConfig(
        vocab_size=64, d_model=D, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=F,
        decoder_ffn_dim=2 * F, encoder_attention_heads=4, decoder_attention_heads=4,
        num_experts=E, encoder_sparse_step=2, decoder_sparse_step=2,
        max_position_embeddings=64)
    cfg.save_pretrained(tmp_path)
    model = NllbMoeForConditionalGeneration(cfg)
    paths = ["model.encoder.layers.1.ffn", "model.decoder.layers.1.ffn"]
    assert [p for p, _ in hf.moe_blocks(model)] == paths
    for path, hidden in zip(paths, (F, 2 * F)):
        spec = moe_mlir.spec_from_config(tmp_path, layer=path)
        assert spec == hf.from_hf(model.get_submodule(path)).spec
        assert spec["expert_hidden"] == hidden
    with pytest.raises(ValueError, match=r"layer 1 of 'nllb-moe' names MoE blocks of "
                       r"different specs: .*encoder.*decoder.*pass the block's path"):
        moe_mlir.spec_from_config(tmp_path, layer=1)
    assert moe_mlir.spec_from_config(tmp_path, layer="decoder.layers.1.ffn")["expert_hidden"] \
        == 2 * F
    with pytest.raises(ValueError, match=r"names MoE blocks of different specs"):
        moe_mlir.spec_from_config(tmp_path, layer="layers.1.ffn")
    with pytest.raises(ValueError, match=r"'model.decoder.layers.0.ffn' is not a MoE block"):
        moe_mlir.spec_from_config(tmp_path, layer="model.decoder.layers.0.ffn")
    with pytest.raises(TypeError, match="layer must be an index or a block's module path"):
        moe_mlir.spec_from_config(tmp_path, layer=1.0)
