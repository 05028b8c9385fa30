"""transformers' own MoE blocks built from a MoE-MLIR spec and its weights.

The peers of benchmarks/run_cpu.py and examples/run_layer.py.  torch and
transformers are optional (`pip install -r benchmarks/requirements.txt`) and
are imported on first use, not with this module: importing torch takes
seconds, and a spec without a transformers block needs neither.
"""

from __future__ import annotations

INSTALL_HINT = "pip install -r benchmarks/requirements.txt"


def hf_case(spec: dict):
    """(case, None) when a block that `build_hf_block(case, ...)` builds
    computes what the (loaded) spec computes, else (None, why not)."""
    kind = spec["kind"]
    if kind != "moe":
        names = {"mh_moe": "MH-MoE", "peer": "PEER", "pkm": "Product-Key Memory"}
        return None, f"transformers has no {names[kind]} block"
    r, shared = spec["router"], spec["shared_experts"]
    if spec["activation"] != "swiglu":
        return None, f"transformers' MoE blocks have SwiGLU experts, not {spec['activation']}"
    if spec.get("capacity"):
        return None, "transformers' MoE blocks have no expert capacity"
    if r["noise"]:
        return None, "transformers' MoE blocks have no noisy router"
    if r.get("logit_bias"):
        return None, "the blocks built here have no router logit bias (GPT-OSS has one)"
    if r.get("apply_score", "output") != "output":
        return None, "the blocks built here weight the expert outputs (Llama 4 its inputs)"
    if r.get("rms_norm"):
        return None, "the blocks built here have no router input norm (Gemma 4 has one)"
    if r.get("softcap") is not None:
        return None, "the blocks built here have no router logit soft-cap (Laguna has one)"
    if r["score"] not in ("softmax", "sigmoid"):
        return None, f"the blocks built here have no {r['score']} router score"
    if r["score"] == "sigmoid":
        # DeepseekV3MoE: groups ranked by the sum of their top-2 scores, an
        # always-on shared expert of n x F without gate.
        if (r["order"] == "score_then_topk" and shared["hidden"] > 0 and not shared["gate"]
                and shared["hidden"] % spec["expert_hidden"] == 0
                and (r["groups"] == 1 or r["group_score"] == "top2_sum")):
            return "deepseek_v3", None
        return None, ("a sigmoid router matches DeepseekV3MoE only with score_then_topk, "
                      "top2_sum groups and an ungated shared expert of n x expert_hidden")
    if r["scaling"] != 1.0 or r["selection_bias"] or r["groups"] != 1:
        return None, "transformers' softmax routers have no scaling, selection bias or groups"
    if r["order"] == "topk_then_score" and shared["hidden"] == 0:
        return "mixtral", None
    if r["order"] == "score_then_topk" and shared["hidden"] == 0:
        return "qwen3", None
    if r["order"] == "score_then_topk" and shared["gate"]:
        return "qwen2_moe", None
    return None, "no transformers block combines this router order and shared expert"


def import_error() -> str | None:
    """Why torch or transformers cannot be imported, or None."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        return f"{type(exc).__name__}: {exc}"
    return None


def _set_tensor(module, path: str, value, buffer=False):
    import torch
    *parents, leaf = path.split(".")
    for p in parents:
        module = getattr(module, p)
    if buffer:
        setattr(module, leaf, value)
    else:
        setattr(module, leaf, torch.nn.Parameter(value, requires_grad=False))


def hf_config(case: str, spec: dict):
    """(block class, config) of transformers' block for the case (see
    hf_case), its config's ``_experts_implementation`` left unset."""
    import transformers
    from transformers import (DeepseekV3Config, MixtralConfig, Qwen2MoeConfig, Qwen3MoeConfig)
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
    from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock
    transformers.logging.set_verbosity_error()

    D, E, F = spec["d_model"], spec["experts"], spec["expert_hidden"]
    r = spec["router"]
    if case == "mixtral":
        cfg = MixtralConfig(hidden_size=D, intermediate_size=F, num_local_experts=E,
                            num_experts_per_tok=r["top_k"], hidden_act="silu", router_jitter_noise=0.0)
        cls = MixtralSparseMoeBlock
    elif case == "qwen3":
        cfg = Qwen3MoeConfig(hidden_size=D, moe_intermediate_size=F, num_experts=E,
                             num_experts_per_tok=r["top_k"], norm_topk_prob=r["normalize"],
                             hidden_act="silu")
        cls = Qwen3MoeSparseMoeBlock
    elif case == "qwen2_moe":
        cfg = Qwen2MoeConfig(hidden_size=D, moe_intermediate_size=F, num_experts=E,
                             shared_expert_intermediate_size=spec["shared_experts"]["hidden"],
                             num_experts_per_tok=r["top_k"], norm_topk_prob=r["normalize"],
                             hidden_act="silu")
        cls = Qwen2MoeSparseMoeBlock
    elif case == "deepseek_v3":
        sh = spec["shared_experts"]["hidden"]
        assert sh % F == 0
        cfg = DeepseekV3Config(hidden_size=D, moe_intermediate_size=F, n_routed_experts=E,
                               num_experts_per_tok=r["top_k"], n_group=r["groups"],
                               topk_group=r["topk_groups"], norm_topk_prob=r["normalize"],
                               routed_scaling_factor=r["scaling"], n_shared_experts=sh // F,
                               hidden_act="silu")
        cls = DeepseekV3MoE
    else:
        raise KeyError(case)
    return cls, cfg


def build_hf_block(case: str, spec: dict, W: dict):
    """The transformers block for the case, built on the meta device and given
    the SAME weights (no random init of GBs).  Expert weights: gate_up_proj
    [E, 2F, D] = [w1; w3] per expert (gate rows first: `gate, up =
    linear(x, gate_up_proj[e]).chunk(2)`), down_proj [E, D, F] = w2 (shared
    with NumPy via torch.from_numpy); router gate.weight [E, D].  Returns
    (block, config); the config's `_experts_implementation` is "eager"."""
    import numpy as np
    import torch

    cls, cfg = hf_config(case, spec)
    D, E, F = spec["d_model"], spec["experts"], spec["expert_hidden"]
    cfg._experts_implementation = "eager"
    with torch.device("meta"):
        block = cls(cfg)
    gate_up = np.empty((E, 2 * F, D), np.float32)               # built once per case
    gate_up[:, :F] = W["w1"]
    gate_up[:, F:] = W["w3"]
    _set_tensor(block, "experts.gate_up_proj", torch.from_numpy(gate_up))
    _set_tensor(block, "experts.down_proj", torch.from_numpy(W["w2"]))
    _set_tensor(block, "gate.weight", torch.from_numpy(W["gate"]))
    if case == "deepseek_v3":
        # Without selection_bias the choice is by score alone: a zero bias.
        bias = W.get("gate_bias", np.zeros(E, np.float32))
        _set_tensor(block, "gate.e_score_correction_bias", torch.from_numpy(bias), buffer=True)
        _set_tensor(block, "shared_experts.gate_proj.weight", torch.from_numpy(W["shared_w1"]))
        _set_tensor(block, "shared_experts.up_proj.weight", torch.from_numpy(W["shared_w3"]))
        _set_tensor(block, "shared_experts.down_proj.weight", torch.from_numpy(W["shared_w2"]))
    if case == "qwen2_moe":
        _set_tensor(block, "shared_expert.gate_proj.weight", torch.from_numpy(W["shared_w1"]))
        _set_tensor(block, "shared_expert.up_proj.weight", torch.from_numpy(W["shared_w3"]))
        _set_tensor(block, "shared_expert.down_proj.weight", torch.from_numpy(W["shared_w2"]))
        _set_tensor(block, "shared_expert_gate.weight", torch.from_numpy(W["shared_gate"]))
    left = [n for n, t in list(block.named_parameters()) + list(block.named_buffers())
            if t.device.type == "meta"]
    if left:
        raise RuntimeError(f"transformers block has tensors without weights: {left}")
    block.eval()
    return block, cfg
