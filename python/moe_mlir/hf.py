"""Hugging Face transformers MoE blocks as MoE-MLIR specs and weights.

:func:`from_hf` reads a transformers MoE block instance (its class says the
family, its tensors and attributes the sizes and router options) and returns
the layer spec and the weights in the spec contract's names;
:func:`patch_model` swaps every supported block of a model for a compiled
layer; :func:`spec_from_config` and :func:`load_hf_weights` do the same from a
``config.json`` and safetensors files, without instantiating weights.

Every family is one entry of :data:`FAMILIES`: the block classes it covers,
a reader, or the spec features it still lacks.  torch and transformers are
imported on first use, not with this module.
"""

from __future__ import annotations

import dataclasses
import json
import os
import numbers
import re
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from .spec import load_spec, spec_hash, weight_shapes

__all__ = [
    "FAMILIES",
    "HFLayer",
    "PatchReport",
    "UnsupportedBlockError",
    "Family",
    "from_hf",
    "family_of",
    "moe_blocks",
    "patch_model",
    "spec_from_config",
    "load_hf_weights",
]


class UnsupportedBlockError(ValueError):
    """A transformers block whose math the spec cannot express (yet)."""


# --------------------------------------------------------------------------- #
# Reading blocks
# --------------------------------------------------------------------------- #

_DTYPES = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def _torch():
    import torch
    return torch


def _activation(act, where: str, gated: bool) -> str:
    """The spec activation of a transformers activation module."""
    torch = _torch()
    from transformers import activations as A
    name = type(act).__name__
    if isinstance(act, (torch.nn.SiLU, A.SiLUActivation)):
        return "swiglu" if gated else "silu"
    if isinstance(act, A.GELUActivation) or (isinstance(act, torch.nn.GELU)
                                             and act.approximate == "none"):
        return "geglu" if gated else "gelu"
    if isinstance(act, torch.nn.ReLU) and not gated:
        return "relu"
    # PyTorch's gelu(approximate="tanh"): GELUTanh (gelu_pytorch_tanh) calls
    # it; NewGELU and FastGELU spell the same tanh formula out (FastGELU's
    # sqrt(2/pi) to 10 digits, 1e-11 off: far below f32 rounding).
    if (name in ("GELUTanh", "PytorchGELUTanh", "NewGELUActivation", "FastGELUActivation")
            or (isinstance(act, torch.nn.GELU) and act.approximate == "tanh")):
        return "geglu_tanh" if gated else "gelu_tanh"
    if name == "ReLUSquaredActivation" and not gated:
        return "relu2"
    missing = {"ReLUSquaredActivation": "gated relu² experts"}.get(name)
    if isinstance(act, torch.nn.ReLU):
        missing = "gated ReLU experts"
    raise UnsupportedBlockError(
        f"{where}: activation {name} is not expressible"
        + (f" (missing spec feature: {missing})" if missing else
           " (the spec has silu/gelu/gelu_tanh/relu/relu2 experts and swiglu/geglu/geglu_tanh "
             "gated ones)"))


def _dtype_of(experts, tensors) -> str:
    """The spec's weight_dtype: the expert weights' dtype when every other
    matrix (a router kept in float32 beside bf16 experts, as DeepSeek-V3's
    is) holds values of that dtype exactly, else f32 (a widening that keeps
    every value).  Meta tensors have no values: they are taken as exact (the
    checkpoint then decides, see load_hf_weights)."""
    for t in tensors:
        name = str(t.dtype).replace("torch.", "")
        if name not in _DTYPES:
            raise UnsupportedBlockError(f"weights of dtype {name} (the spec takes float32, "
                                        f"bfloat16 or float16 matrices)")
    want = experts.dtype
    for t in tensors:
        if t.dtype == want or t.is_meta:
            continue
        t = t.detach()
        if not _torch().equal(t.to(want).to(t.dtype), t):
            return "f32"
    return _DTYPES[str(want).replace("torch.", "")]


def _no_bias(linear, where: str):
    if getattr(linear, "bias", None) is not None:
        raise UnsupportedBlockError(f"{where} has a bias (missing spec feature: expert biases)")
    return linear.weight


def _fused_experts(experts, where: str) -> Tuple[Dict[str, Any], str]:
    """w1, w3, w2 (views) of transformers 5's fused experts: ``gate_up_proj``
    [E, 2F, D] (gate rows first, or interleaved gate/up rows), ``down_proj``
    [E, D, F]; or [E, D, 2F] / [E, F, D] when ``is_transposed``."""
    if getattr(experts, "has_bias", False):
        raise UnsupportedBlockError(f"{where} has biases (missing spec feature: expert biases)")
    if not getattr(experts, "has_gate", True):
        w1 = experts.up_proj
        w2 = experts.down_proj
        if getattr(experts, "is_transposed", False):
            w1, w2 = w1.transpose(1, 2), w2.transpose(1, 2)
        return {"w1": w1, "w2": w2}, _activation(experts.act_fn, where, gated=False)
    gate_up, down = experts.gate_up_proj, experts.down_proj
    if getattr(experts, "is_transposed", False):
        gate_up, down = gate_up.transpose(1, 2), down.transpose(1, 2)
    if getattr(experts, "is_concatenated", True):
        F = gate_up.shape[1] // 2
        w1, w3 = gate_up[:, :F], gate_up[:, F:]
    else:
        w1, w3 = gate_up[:, 0::2], gate_up[:, 1::2]
    return {"w1": w1, "w3": w3, "w2": down}, _activation(experts.act_fn, where, gated=True)


def _dense_mlp(mlp, where: str) -> Tuple[Dict[str, Any], str]:
    """A gate_proj/up_proj/down_proj MLP (shared experts) as shared_w1/w3/w2."""
    w = {"shared_w1": _no_bias(mlp.gate_proj, where), "shared_w3": _no_bias(mlp.up_proj, where),
         "shared_w2": _no_bias(mlp.down_proj, where)}
    return w, _activation(mlp.act_fn, where, gated=True)


def _router(top_k, *, score="softmax", order="score_then_topk", normalize=False, scaling=1.0,
            selection_bias=False, groups=1, topk_groups=1, group_score="max",
            **more) -> Dict[str, Any]:
    """Router options; ``more``: the newer ones (logit_bias, softcap,
    rms_norm, rms_norm_eps, apply_score, jitter_eps, hash_vocab), given only
    when a family uses them."""
    return dict(top_k=int(top_k), score=score, order=order, normalize=bool(normalize),
                scaling=float(scaling), selection_bias=selection_bias, groups=int(groups),
                topk_groups=int(topk_groups), group_score=group_score, **more)


@dataclasses.dataclass
class _Read:
    """What a reader finds in a block: router options, weights (torch tensors
    in contract names), activation, shared expert."""
    router: Dict[str, Any]
    weights: Dict[str, Any]
    activation: str
    shared: Optional[Dict[str, Any]] = None
    # Other top-level spec fields (swiglu, expert_bias, expert_scale, output_bias).
    options: Dict[str, Any] = dataclasses.field(default_factory=dict)
    # The block counts capacity per sequence: one call of the layer per row
    # of the batch dim.
    per_sequence: bool = False


def _shared_activation(read_act: str, shared_act: str, where: str):
    if read_act != shared_act:
        raise UnsupportedBlockError(f"{where}: shared expert activation {shared_act} differs "
                                    f"from the experts' {read_act} (the spec has one activation)")


def _read_topk_softmax(block, where, *, order=None, normalize=None) -> _Read:
    """Mixtral, Qwen2/3-MoE, OLMoE and look-alikes: softmax over the logits of
    ``gate.weight``, top-k, renormalised if ``normalize`` (None: as the
    router's ``norm_topk_prob`` says)."""
    gate = block.gate
    experts, act = _fused_experts(block.experts, f"{where}.experts")
    if order == "topk_then_score":
        # softmax, top-k, renormalise == softmax over the top-k logits.
        r = _router(gate.top_k, order="topk_then_score")
    else:
        r = _router(gate.top_k,
                    normalize=gate.norm_topk_prob if normalize is None else normalize)
    weights = {"gate": gate.weight, **experts}
    shared = None
    if hasattr(block, "shared_expert"):
        sw, sact = _dense_mlp(block.shared_expert, f"{where}.shared_expert")
        _shared_activation(act, sact, where)
        weights.update(sw)
        weights["shared_gate"] = _no_bias(block.shared_expert_gate, f"{where}.shared_expert_gate")
        shared = {"hidden": int(sw["shared_w1"].shape[0]), "gate": True}
    return _Read(r, weights, act, shared)


def _read_mixtral(block, where):
    return _read_topk_softmax(block, where, order="topk_then_score")


def _read_qwen(block, where):
    return _read_topk_softmax(block, where)


def _read_qwen_normalized(block, where):
    # Qwen3-VL-MoE, Qwen3.5-MoE: the router renormalises always.
    return _read_topk_softmax(block, where, normalize=True)


def _read_granite(block, where):
    # top-k of the logits, softmax over those k.
    experts, act = _fused_experts(block.experts, f"{where}.experts")
    r = _router(block.router.top_k, order="topk_then_score")
    return _Read(r, {"gate": block.router.weight, **experts}, act)


def _read_jamba(block, where):
    # softmax over every expert, top-k, the k weights left unnormalised.
    experts, act = _fused_experts(block.experts, f"{where}.experts")
    return _Read(_router(block.router.top_k), {"gate": block.router.weight, **experts}, act)


def _read_deepseek_shared(block, where, act, weights):
    sw, sact = _dense_mlp(block.shared_experts, f"{where}.shared_experts")
    _shared_activation(act, sact, where)
    weights.update(sw)
    return {"hidden": int(sw["shared_w1"].shape[0]), "gate": False}


def _read_deepseek_v2(block, where):
    g = block.gate
    experts, act = _fused_experts(block.experts, f"{where}.experts")
    if g.topk_method == "greedy":
        r = _router(g.top_k, scaling=g.routed_scaling_factor)
    elif g.topk_method == "group_limited_greedy":
        # Groups ranked by their best softmax score; the other groups' scores
        # are set to 0, below any kept (positive) score: excluded.
        r = _router(g.top_k, scaling=g.routed_scaling_factor, groups=g.num_group,
                    topk_groups=g.topk_group, group_score="max")
    else:
        raise UnsupportedBlockError(f"{where}.gate: topk_method {g.topk_method!r} (the "
                                    f"spec expresses 'greedy' and 'group_limited_greedy')")
    weights = {"gate": g.weight, **experts}
    shared = _read_deepseek_shared(block, where, act, weights)
    return _Read(r, weights, act, shared)


def _read_deepseek_v3(block, where):
    g = block.gate
    experts, act = _fused_experts(block.experts, f"{where}.experts")
    groups = int(g.num_group or 1)       # n_group None or 1: no groups
    r = _router(g.top_k, score="sigmoid", normalize=g.norm_topk_prob,
                scaling=g.routed_scaling_factor, selection_bias=True, groups=groups,
                topk_groups=g.topk_group if groups > 1 else 1,
                group_score="top2_sum" if groups > 1 else "max")
    weights = {"gate": g.weight, "gate_bias": g.e_score_correction_bias, **experts}
    shared = _read_deepseek_shared(block, where, act, weights)
    return _Read(r, weights, act, shared)


def _read_dbrx(block, where):
    p = block.moe_normalize_expert_weights
    if p is not None and float(p) != 1.0:
        raise UnsupportedBlockError(f"{where}: moe_normalize_expert_weights={p} (missing spec "
                                    f"feature: p-norm renormalisation; the spec has p = 1)")
    mlp = block.experts.mlp
    E, F = block.experts.num_experts, block.experts.ffn_hidden_size
    D = block.experts.hidden_size
    # w1, v1, w2: [E*F, D]; the expert computes act(x w1ᵀ) * (x v1ᵀ) @ w2.
    weights = {"gate": _no_bias(block.router.layer, f"{where}.router.layer"),
               "w1": mlp.w1.view(E, F, D), "w3": mlp.v1.view(E, F, D),
               "w2": mlp.w2.view(E, F, D).transpose(1, 2)}
    act = _activation(mlp.activation_fn, f"{where}.experts.mlp", gated=True)
    return _Read(_router(block.top_k, normalize=p is not None), weights, act)


# Weights the contract keeps in f32 whatever weight_dtype (they do not decide it).
_F32_VECTORS = frozenset(("gate_bias", "logit_bias", "router_norm", "expert_norm", "b1", "b3",
                          "b2", "expert_scale", "output_bias"))


def _read_nemotron_h(block, where):
    """Nemotron-H: relu² experts without a gate (up_proj, down_proj), a
    DeepSeek-V3 router (sigmoid, selection bias, top-2-sum groups,
    renormalised, scaled) and an ungated relu² shared expert."""
    torch = _torch()
    for n in ("fc1_latent_proj", "fc2_latent_proj"):
        if not isinstance(getattr(block, n, None), torch.nn.Identity):
            raise UnsupportedBlockError(f"{where}.{n}: a latent projection around the experts "
                                        f"(moe_latent_size; missing spec feature: expert "
                                        f"latent projections)")
    experts, act = _fused_experts(block.experts, f"{where}.experts")
    g = block.gate
    groups = int(g.num_group or 1)
    # The block renormalises with a + 1e-20 in the denominator: a sum of k
    # sigmoids (each > 0) is far above it in f32, so the division is the same.
    r = _router(g.top_k, score="sigmoid", normalize=g.norm_topk_prob,
                scaling=g.routed_scaling_factor, selection_bias=True, groups=groups,
                topk_groups=g.topk_group if groups > 1 else 1,
                group_score="top2_sum" if groups > 1 else "max")
    weights = {"gate": g.weight, "gate_bias": g.e_score_correction_bias, **experts}
    mlp = block.shared_experts
    sw = {"shared_w1": _no_bias(mlp.up_proj, f"{where}.shared_experts.up_proj"),
          "shared_w2": _no_bias(mlp.down_proj, f"{where}.shared_experts.down_proj")}
    _shared_activation(act, _activation(mlp.act_fn, f"{where}.shared_experts", gated=False),
                       where)
    weights.update(sw)
    return _Read(r, weights, act, {"hidden": int(sw["shared_w1"].shape[0]), "gate": False})


def _read_jetmoe(block, where):
    """JetMoE's MoE MLP (JetMoeMoE): top-k of the logits, softmax over those
    k; gated experts from input_linear [E, 2F, D] (gate rows first) and
    output_linear [E, D, F]; a bias added to the block's output."""
    F = block.hidden_size
    gate_up = block.input_linear.weight
    act = _activation(block.activation, f"{where}.activation", gated=True)
    weights = {"gate": _no_bias(block.router.layer, f"{where}.router.layer"),
               "w1": gate_up[:, :F], "w3": gate_up[:, F:], "w2": block.output_linear.weight,
               "output_bias": block.bias}
    return _Read(_router(block.router.top_k, order="topk_then_score"), weights, act,
                 options={"output_bias": True})


def _read_gpt_oss(block, where):
    """GPT-OSS (GptOssMLP): router logits with a bias, top-k of them, softmax
    over those k; experts with biases and the clamped SwiGLU
    ``(clamp(up, ±limit) + 1) · g · σ(alpha · g)``, ``g = min(gate, limit)``,
    from gate_up_proj [E, D, 2F] (gate and up columns interleaved) and
    down_proj [E, F, D] (transposed layouts)."""
    ex = block.experts
    gate_up, down = ex.gate_up_proj.transpose(1, 2), ex.down_proj.transpose(1, 2)
    bias = ex.gate_up_proj_bias
    weights = {"gate": block.router.weight, "logit_bias": block.router.bias,
               "w1": gate_up[:, 0::2], "w3": gate_up[:, 1::2], "w2": down,
               "b1": bias[:, 0::2], "b3": bias[:, 1::2], "b2": ex.down_proj_bias}
    swiglu = {"alpha": float(ex.alpha), "up_offset": 1.0}
    if ex.limit is not None:
        swiglu["limit"] = float(ex.limit)
    return _Read(_router(block.router.top_k, order="topk_then_score", logit_bias=True),
                 weights, "swiglu", options={"swiglu": swiglu, "expert_bias": True})


def _read_deepseek_v4(block, where):
    """DeepSeek-V4: sqrt(softplus) (or sigmoid) scores, top-k of score +
    selection bias, renormalised, scaled; SwiGLU experts and shared expert
    with the gate clamped to at most ``limit`` and the up branch to
    ``[-limit, limit]``.  Its hash-routed layers (``is_hash``:
    DeepseekV4HashRouter) take the experts of a token from row
    ``input_ids[t]`` of the buffer ``tid2eid [vocab, k]`` instead
    (``router.hash_vocab``, weight ``tid2eid``), weighed by their scores as
    the other layers weigh theirs; the layer then takes the token ids."""
    from transformers import activations as A
    torch = _torch()
    g = block.gate
    hashed = getattr(block, "is_hash", False) or hasattr(g, "tid2eid")
    if isinstance(g.score_fn, A.SqrtSoftplusActivation):
        score = "sqrt_softplus"
    elif isinstance(g.score_fn, torch.nn.Sigmoid):
        score = "sigmoid"
    else:
        raise UnsupportedBlockError(f"{where}.gate: score function {type(g.score_fn).__name__} "
                                    f"(the spec has softmax, sigmoid and sqrt_softplus)")
    experts, act = _fused_experts(block.experts, f"{where}.experts")
    if act != "swiglu":
        raise UnsupportedBlockError(f"{where}.experts: clamped {act} (the spec clamps SwiGLU "
                                    f"only)")
    # The block renormalises with + 1e-20 in the denominator: far below a sum
    # of k positive scores in f32.
    if hashed:
        table = g.tid2eid
        if table.dim() != 2 or table.shape[1] != g.top_k:
            raise UnsupportedBlockError(f"{where}.gate: tid2eid of shape {list(table.shape)} "
                                        f"(the spec's table is [vocab, top_k = {g.top_k}])")
        r = _router(g.top_k, score=score, normalize=True, scaling=g.routed_scaling_factor,
                    hash_vocab=int(table.shape[0]))
        weights = {"gate": g.weight, "tid2eid": table, **experts}
    else:
        r = _router(g.top_k, score=score, normalize=True, scaling=g.routed_scaling_factor,
                    selection_bias=True)
        weights = {"gate": g.weight, "gate_bias": g.e_score_correction_bias, **experts}
    sw, sact = _dense_mlp(block.shared_experts, f"{where}.shared_experts")
    _shared_activation(act, sact, where)
    limit, shared_limit = block.experts.limit, block.shared_experts.limit
    if limit != shared_limit:
        raise UnsupportedBlockError(f"{where}: shared expert swiglu limit {shared_limit} differs "
                                    f"from the experts' {limit} (the spec has one)")
    weights.update(sw)
    options = {"swiglu": {"limit": float(limit)}} if limit is not None else {}
    return _Read(r, weights, act, {"hidden": int(sw["shared_w1"].shape[0]), "gate": False},
                 options)


def _read_laguna(block, where):
    """Laguna: logits soft-capped ``c · tanh(l / c)`` (when the config's
    moe_router_logit_softcapping > 0), sigmoid scores, top-k of score +
    selection bias, renormalised; the routed sum scaled by
    moe_routed_scaling_factor (the router's scaling: the same products);
    a SwiGLU shared expert."""
    g = block.gate
    experts, act = _fused_experts(block.experts, f"{where}.experts")
    cap = float(g.router_logit_softcapping or 0.0)
    more = {"softcap": cap} if cap > 0.0 else {}
    r = _router(g.top_k, score="sigmoid", normalize=True, scaling=block.routed_scaling_factor,
                selection_bias=True, **more)
    weights = {"gate": g.weight, "gate_bias": g.e_score_correction_bias, **experts}
    shared = _read_deepseek_shared(block, where, act, weights)
    return _Read(r, weights, act, shared)


def _read_llama4(block, where):
    """Llama 4 (Llama4TextMoe): top-k of the logits, sigmoid of those k, each
    scaling the token's input to its expert (router.apply_score: input; the
    block runs every expert on every token, the others' inputs scaled by
    sigmoid(-inf) = 0, which adds nothing without biases); SwiGLU experts
    from gate_up_proj [E, D, 2F] (gate columns first) and down_proj
    [E, F, D] (transposed layouts); an ungated SwiGLU shared expert."""
    ex = block.experts
    gate_up, down = ex.gate_up_proj.transpose(1, 2), ex.down_proj.transpose(1, 2)
    F = gate_up.shape[1] // 2
    act = _activation(ex.act_fn, f"{where}.experts", gated=True)
    weights = {"gate": _no_bias(block.router, f"{where}.router"),
               "w1": gate_up[:, :F], "w3": gate_up[:, F:], "w2": down}
    sw = {"shared_w1": _no_bias(block.shared_expert.gate_proj, f"{where}.shared_expert"),
          "shared_w3": _no_bias(block.shared_expert.up_proj, f"{where}.shared_expert"),
          "shared_w2": _no_bias(block.shared_expert.down_proj, f"{where}.shared_expert")}
    _shared_activation(act, _activation(block.shared_expert.activation_fn,
                                        f"{where}.shared_expert", gated=True), where)
    weights.update(sw)
    r = _router(block.router.top_k, score="sigmoid", order="topk_then_score",
                apply_score="input")
    return _Read(r, weights, act, {"hidden": int(sw["shared_w1"].shape[0]), "gate": False})


def _read_phimoe(block, where):
    """PhiMoE: sparsemixer routing of the router's logits (eval mode: the
    top-2 logits, each weighed by a softmax over the experts within
    2·router_jitter_noise of it, ``router.jitter_eps``); Mixtral's fused
    SwiGLU experts.  Its sparsemixer picks two experts whatever
    num_experts_per_tok says: top_k is 2.  The input jitter
    (input_jitter_noise) and the Gumbel sampling apply in training mode
    only."""
    router = block.router
    experts, act = _fused_experts(block.experts, f"{where}.experts")
    if getattr(router, "bias", None) is not None:
        raise UnsupportedBlockError(f"{where}.router has a bias (PhiMoE's router has none; "
                                    f"the reader maps none)")
    r = _router(2, score="sparsemixer", order="topk_then_score",
                jitter_eps=float(router.router_jitter_noise))
    return _Read(r, {"gate": router.weight, **experts}, act)


def _nllb_capacity(router, where) -> Dict[str, Any]:
    """The capacity of NLLB-MoE's eval-mode router: ceil(f·T) for a
    moe_eval_capacity_token_fraction f > 0, else its expert_capacity."""
    f = float(router.moe_eval_capacity_token_fraction)
    if f > 0:
        return {"token_fraction": f}
    n = router.expert_capacity
    if n is None:
        # Then transformers sets it from the first batch it routes
        # (2·ceil(T / E)) and keeps it for every later one.
        raise UnsupportedBlockError(
            f"{where}.router: moe_eval_capacity_token_fraction {f} <= 0 and expert_capacity "
            f"None: transformers fixes the capacity from the first batch it routes (missing "
            f"spec feature: a capacity set by a previous call)")
    if int(n) < 1:
        raise UnsupportedBlockError(f"{where}.router: expert_capacity {n} (the spec's "
                                    f"capacity.tokens is >= 1)")
    return {"tokens": int(n)}


def _expert_modules(block, E: int, where: str):
    """``block.experts.expert_{e}`` for e < E (Switch, NLLB-MoE: a module
    per expert) and their one ungated activation; experts whose activations
    differ are refused (the spec has one)."""
    experts = [block.experts[f"expert_{e}"] for e in range(E)]
    act = _activation(experts[0].act, f"{where}.experts.expert_0", gated=False)
    for e, ex in enumerate(experts[1:], 1):
        if type(ex.act) is not type(experts[0].act):
            raise UnsupportedBlockError(f"{where}.experts.expert_{e}: activation "
                                        f"{type(ex.act).__name__} differs from expert_0's (the "
                                        f"spec has one activation)")
    return experts, act


def _read_nllb_moe(block, where):
    """NLLB-MoE (NllbMoeSparseMLP), eval mode: softmax over the classifier's
    logits (its bias ``logit_bias``), top-2; each expert holds
    ceil(moe_eval_capacity_token_fraction · T) assignments (else
    expert_capacity), the rest dropped, tokens in order or by their top-1
    probability (batch_prioritized_routing); the two weights renormalised
    before the drops (normalize_router_prob_before_dropping) or after them
    (``capacity.renormalize``); experts fc2(act(fc1 x)) with biases, their
    outputs scaled by 1 - moe_token_dropout (``expert_scale``).  The
    correct NLLB-MoE combination, which transformers 5.24's NllbMoeExperts
    does not compute (docs/pytorch.md)."""
    torch = _torch()
    router = block.router
    if router.second_expert_policy != "all":
        raise UnsupportedBlockError(
            f"{where}.router: second_expert_policy {router.second_expert_policy!r} draws the "
            f"second expert at random (missing spec feature: random second-expert choice; the "
            f"spec computes 'all')")
    if router.dtype != torch.float32:
        raise UnsupportedBlockError(
            f"{where}.router: router_dtype {str(router.dtype).replace('torch.', '')} (the "
            f"spec's router computes in float32)")
    normalize_first = bool(router.normalize_router_prob_before_dropping)
    prioritized = bool(router.batch_prioritized_routing)
    if normalize_first and prioritized:
        # NLLB orders tokens by their top-1 probability, the spec's
        # batch_prioritized by the final first-choice weight p1 / (p1 + p2).
        raise UnsupportedBlockError(
            f"{where}.router: batch_prioritized_routing with "
            f"normalize_router_prob_before_dropping orders tokens by their top-1 probability "
            f"before normalisation (missing spec feature: a priority by the unnormalised "
            f"weight; the spec's batch_prioritized takes the normalised one)")
    capacity = _nllb_capacity(router, where)
    capacity.update(overflow="drop",
                    priority="batch_prioritized" if prioritized else "token_order")
    if not normalize_first:
        capacity["renormalize"] = True
    experts, act = _expert_modules(block, int(router.num_experts), where)

    def bias(linear, rows):
        b = linear.bias
        return b if b is not None else torch.zeros(rows, dtype=torch.float32)

    weights = {"gate": router.classifier.weight,
               "w1": torch.stack([ex.fc1.weight for ex in experts]),
               "w2": torch.stack([ex.fc2.weight for ex in experts]),
               "b1": torch.stack([bias(ex.fc1, ex.fc1.out_features) for ex in experts]),
               "b2": torch.stack([bias(ex.fc2, ex.fc2.out_features) for ex in experts])}
    more = {}
    if router.classifier.bias is not None:
        weights["logit_bias"] = router.classifier.bias
        more["logit_bias"] = True
    options = {"capacity": capacity, "expert_bias": True}
    p = float(block.experts.moe_token_dropout)
    if p > 0:
        # Eval-time token dropout: every expert output times (1 - p).
        weights["expert_scale"] = torch.full((len(experts),), 1.0 - p, dtype=torch.float32)
        options["expert_scale"] = True
    r = _router(2, normalize=normalize_first, **more)
    return _Read(r, weights, act, options=options)


def _read_switch(block, where):
    """Switch Transformers (SwitchTransformersSparseMLP), eval mode: softmax
    over the classifier's logits (its bias ``logit_bias``), the top-1
    expert weighted by its probability; each expert takes the first
    ``expert_capacity`` tokens routed to it *per sequence* (the rest
    dropped: output 0), so the layer is applied per sequence (per row of
    the batch dim: ``per_sequence``); experts wo(act(wi x)).  The input
    jitter (router_jitter_noise) and the dropout apply in training mode only."""
    torch = _torch()
    router = block.router
    if router.dtype != torch.float32:
        raise UnsupportedBlockError(
            f"{where}.router: router_dtype {str(router.dtype).replace('torch.', '')} (the "
            f"spec's router computes in float32)")
    n = router.expert_capacity
    if n is None or int(n) < 1:
        raise UnsupportedBlockError(f"{where}.router: expert_capacity {n} (the spec's "
                                    f"capacity.tokens is >= 1)")
    experts, act = _expert_modules(block, int(router.num_experts), where)
    weights = {"gate": router.classifier.weight,
               "w1": torch.stack([_no_bias(ex.wi, f"{where}.experts.expert_{e}.wi")
                                  for e, ex in enumerate(experts)]),
               "w2": torch.stack([_no_bias(ex.wo, f"{where}.experts.expert_{e}.wo")
                                  for e, ex in enumerate(experts)])}
    more = {}
    if router.classifier.bias is not None:
        weights["logit_bias"] = router.classifier.bias
        more["logit_bias"] = True
    capacity = {"tokens": int(n), "overflow": "drop", "priority": "token_order"}
    return _Read(_router(1, **more), weights, act, options={"capacity": capacity},
                 per_sequence=True)


def _read_gemma4_router(block, where):
    from .hf_gemma4 import read_gemma4_router
    return read_gemma4_router(block, where)


@dataclasses.dataclass(frozen=True)
class Family:
    """One transformers MoE family: the block classes (by name) it covers,
    its reader, or the spec features it lacks (then ``read`` is None)."""
    name: str
    blocks: Tuple[str, ...]
    read: Optional[Callable[[Any, str], _Read]] = None
    missing: Tuple[str, ...] = ()
    note: str = ""


FAMILIES: Tuple[Family, ...] = (
    Family("mixtral", ("MixtralSparseMoeBlock", "MiniMaxSparseMoeBlock"), _read_mixtral),
    # Look-alikes: blocks whose forward, router and experts code is the same
    # as the family's (up to class names), each checked by a parity test.
    Family("qwen2_moe", ("Qwen2MoeSparseMoeBlock", "Qwen3NextSparseMoeBlock",
                         "Qwen4ExpTextSparseMoeBlock"), _read_qwen),
    Family("qwen3_5_moe", ("Qwen3_5MoeSparseMoeBlock",), _read_qwen_normalized),
    Family("qwen3_moe", ("Qwen3MoeSparseMoeBlock", "Qwen3OmniMoeThinkerTextSparseMoeBlock",
                         "MellumSparseMoeBlock"), _read_qwen),
    Family("qwen3_vl_moe", ("Qwen3VLMoeTextSparseMoeBlock",), _read_qwen_normalized),
    Family("olmoe", ("OlmoeSparseMoeBlock", "FlexOlmoSparseMoeBlock"), _read_qwen),
    Family("deepseek_v2", ("DeepseekV2Moe", "DeepseekOcr2TextMoe", "UnlimitedOcrTextMoe"),
           _read_deepseek_v2),
    Family("deepseek_v3", ("DeepseekV3MoE", "DeepseekV32MoE", "Glm4MoeMoE", "Glm4MoeLiteMoE",
                           "Glm4vMoeTextMoE", "GlmMoeDsaMoE", "Dots1MoE", "Dots3NoteTextMoE",
                           "SolarOpenMoE", "ExaoneMoeSparseMoEBlock", "KimiLinearMoE",
                           "BailingHybridMoE"), _read_deepseek_v3),
    Family("granitemoe", ("GraniteMoeMoE", "GraniteMoeSharedMoE", "GraniteMoeHybridMoE"),
           _read_granite,
           note="GraniteMoeShared's shared MLP sits beside the block in the decoder layer "
                "and stays in PyTorch"),
    Family("jamba", ("JambaSparseMoeBlock",), _read_jamba),
    Family("dbrx", ("DbrxFFN",), _read_dbrx),
    Family("gpt_oss", ("GptOssMLP",), _read_gpt_oss,
           note="the block returns (output, router scores): patch_model swaps it for a module "
                "that does too"),
    Family("jetmoe", ("JetMoeMoE",), _read_jetmoe,
           note="JetMoE's attention experts (JetMoeMoA) stay in PyTorch"),
    Family("nemotron_h", ("NemotronHMoE",), _read_nemotron_h),
    Family("deepseek_v4", ("DeepseekV4SparseMoeBlock",), _read_deepseek_v4,
           note="its hash-routed layers (mlp_layer_types hash_moe: experts by token id, "
                "router.hash_vocab) take the model's input_ids: the decoder layer passes them, "
                "and patch_model's swap passes them on as token_ids (a model called with "
                "inputs_embeds alone cannot run them)"),
    Family("laguna", ("LagunaSparseMoeBlock",), _read_laguna),
    Family("llama4", ("Llama4TextMoe",), _read_llama4,
           note="the block returns (output, router logits): patch_model swaps it for a module "
                "returning (output, top-k weights), which the decoder layer discards"),
    Family("switch_transformers", ("SwitchTransformersSparseMLP",), _read_switch,
           note="its expert_capacity counts per sequence: the spec's capacity.tokens counts "
                "over the tokens of a call, so the layer is called once per sequence (row of "
                "the batch dim; HFLayer.per_sequence, and what its module() and patch_model's "
                "swap do)"),
    # The spec cannot express these yet (features other branches add).
    # Gemma 4's router and experts sit in the decoder layer (no block module):
    # the router marks a MoE layer; hf_gemma4 reads and swaps its decoder layer.
    Family("gemma4", ("Gemma4TextRouter",), _read_gemma4_router,
           note="read from and swapped in the router's Gemma4TextDecoderLayer (from_hf takes "
                "the decoder layer); the dense MLP branch and post_feedforward_layernorm_1/2 "
                "stay in PyTorch"),
    Family("phimoe", ("PhimoeSparseMoeBlock",), _read_phimoe),
    Family("nllb_moe", ("NllbMoeSparseMLP",), _read_nllb_moe,
           note="the correct NLLB-MoE combination, not transformers 5.24's NllbMoeExperts "
                "(which runs expert 1 for every first choice); the block takes padding_mask: "
                "its swap accepts it (docs/pytorch.md)"),
)

_BY_CLASS = {cls: fam for fam in FAMILIES for cls in fam.blocks}


def family_of(block) -> Optional[Family]:
    """The family whose block class ``block`` is (or derives from), or None."""
    for cls in type(block).__mro__:
        fam = _BY_CLASS.get(cls.__name__)
        if fam is not None:
            return fam
    return None


# --------------------------------------------------------------------------- #
# from_hf
# --------------------------------------------------------------------------- #

@dataclasses.dataclass
class HFLayer:
    """A transformers block as a MoE-MLIR layer: ``spec`` (normalized),
    ``weights`` ({contract name: torch tensor}, views of the block's tensors
    where the layouts agree), ``family``.  Unpacks as ``spec, weights``.

    ``per_sequence``: the block counts its capacity per sequence (Switch
    Transformers' expert_capacity) where the spec counts it over the tokens
    of a call, so the block is the layer called once per sequence -- per row
    of the batch dim of its ``[B, S, D]`` input -- as :meth:`module` does."""
    family: str
    spec: Dict[str, Any]
    weights: Dict[str, Any]
    per_sequence: bool = False

    def __iter__(self) -> Iterator[Any]:
        yield self.spec
        yield self.weights

    def numpy_weights(self) -> Dict[str, Any]:
        """The weights as NumPy arrays for :meth:`moe_mlir.Layer.forward`:
        float32 (bf16/f16 values widen exactly); int32 expert ids (tid2eid)."""
        torch = _torch()
        return {n: (t.detach().to(torch.int32) if n == "tid2eid" else t.detach().float()
                    ).contiguous().cpu().numpy() for n, t in self.weights.items()}

    def module(self, *, pipeline: str = "fast", compiled=None, **compile_options):
        """The compiled layer as a ``moe_mlir.torch.MoELayer`` (an
        ``nn.Module``) holding these weights.  ``compiled``: a
        :class:`moe_mlir.Layer` of this spec to share (else the spec is
        compiled with ``pipeline`` and ``compile_options``).  A
        ``per_sequence`` block gets a module that calls that MoELayer (its
        ``moe``) once per row of the batch dim of ``[..., S, D]`` inputs
        (a ``[S, D]`` input is one sequence)."""
        from .torch import MoELayer
        if compiled is not None:
            if spec_hash(compiled.spec) != spec_hash(self.spec):
                raise ValueError(f"compiled layer {compiled.name!r} has another spec than "
                                 f"this {self.family} block")
            moe = MoELayer(compiled, self.weights)
        else:
            moe = MoELayer(self.spec, self.weights, pipeline=pipeline, **compile_options)
        return _adapters()[2](moe) if self.per_sequence else moe


def _read_block(block, where: str) -> Tuple[Family, _Read]:
    fam = family_of(block)
    cls = type(block).__name__
    if fam is None:
        known = ", ".join(sorted(_BY_CLASS))
        raise UnsupportedBlockError(f"{where}: {cls} is not a known transformers MoE block "
                                    f"(known: {known})")
    if fam.read is None:
        raise UnsupportedBlockError(f"{where}: {cls} ({fam.name}) needs spec features that do "
                                    f"not exist yet: {'; '.join(fam.missing)}")
    return fam, fam.read(block, where)


def from_hf(block, *, name: Optional[str] = None, where: str = "block") -> HFLayer:
    """The spec and weights of a transformers MoE block instance.

    The family is detected from the block's class (see :data:`FAMILIES`);
    sizes come from its tensors, router options from its router.  ``name``
    is the spec's name (default: the family, so identical blocks give equal
    specs and share one compiled library).  Raises UnsupportedBlockError
    (a ValueError) naming the block and the missing spec feature(s) for a
    block the spec cannot express.  Gemma 4: pass the Gemma4TextDecoderLayer
    (its MoE has no block module; :mod:`moe_mlir.hf_gemma4`)."""
    from . import hf_gemma4
    if hf_gemma4.is_gemma4_decoder_layer(block):
        return hf_gemma4.gemma4_from_hf(block, name=name, where=where)
    fam, read = _read_block(block, where)
    w = read.weights
    E, F, D = w["w1"].shape
    matrices = [t for n, t in w.items() if n not in _F32_VECTORS and n != "tid2eid"]
    raw = {
        "name": name or fam.name, "kind": "moe", "d_model": int(D), "experts": int(E),
        "expert_hidden": int(F), "activation": read.activation,
        "weight_dtype": _dtype_of(w["w1"], matrices), "router": read.router,
    }
    if read.shared:
        raw["shared_experts"] = read.shared
    raw.update(read.options)
    spec = load_spec(raw)
    weights = {}
    shapes = weight_shapes(spec)
    torch = _torch()
    want = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16,
            "i32": torch.int32}
    for n, (shape, dtype) in shapes.items():
        t = w[n].detach()
        if tuple(t.shape) != tuple(shape):
            raise UnsupportedBlockError(f"{where}: weight {n} has shape {list(t.shape)}, the "
                                        f"spec contract says {list(shape)}")
        if dtype == "i32":
            _check_expert_ids(t, int(E), f"{where}: weight {n}")
        if t.dtype != want[dtype]:
            t = t.to(want[dtype])   # widening, or exact: see _dtype_of (ids: checked)
        weights[n] = t
    return HFLayer(fam.name, spec, weights, per_sequence=read.per_sequence)


def _check_expert_ids(t, experts: int, what: str, error=UnsupportedBlockError) -> None:
    """A table of expert ids (tid2eid, int64 in transformers) holds ids in
    [0, experts): int32 keeps them, and the layer refuses others (meta
    tensors have no values to check)."""
    torch = _torch()
    if t.dtype not in (torch.int32, torch.int64, torch.int16, torch.uint8):
        raise error(f"{what} holds expert ids: an integer tensor, got "
                    f"{str(t.dtype).replace('torch.', '')}")
    if t.is_meta or not t.numel():
        return
    low, high = int(t.min()), int(t.max())
    if low < 0 or high >= experts:
        raise error(f"{what} holds expert ids outside [0, {experts}): "
                    f"{low if low < 0 else high}")


# --------------------------------------------------------------------------- #
# patch_model
# --------------------------------------------------------------------------- #

@dataclasses.dataclass
class PatchReport:
    """What :func:`patch_model` did: ``swapped`` [(module path, family, spec
    name, spec hash)], ``left`` [(module path, class name, why)]."""
    swapped: List[Tuple[str, str, str, str]] = dataclasses.field(default_factory=list)
    left: List[Tuple[str, str, str]] = dataclasses.field(default_factory=list)

    @property
    def specs(self) -> int:
        """How many distinct specs (compiled libraries) the swapped blocks use."""
        return len({h for *_, h in self.swapped})

    def __str__(self) -> str:
        lines = [f"swapped {len(self.swapped)} MoE block(s) ({self.specs} distinct spec(s))"]
        lines += [f"  {path}: {fam} -> spec {sname} ({h[:12]})"
                  for path, fam, sname, h in self.swapped]
        if self.left:
            lines.append(f"left {len(self.left)} block(s) in PyTorch")
            lines += [f"  {path} ({cls}): {why}" for path, cls, why in self.left]
        return "\n".join(lines)


_ADAPTERS = None


def _adapters():
    """The call-convention adapters (nn.Modules, defined once torch is in)."""
    global _ADAPTERS
    if _ADAPTERS is not None:
        return _ADAPTERS
    torch = _torch()

    class HFBlockCall(torch.nn.Module):
        """A compiled layer with a transformers block's call convention:
        ``(output, top-k weights)`` ``with_scores``; the ``input_ids`` the
        decoder layer passes are the token ids of a hash-routed layer."""

        def __init__(self, moe, with_scores: bool, hash_routed: bool = False):
            super().__init__()
            self.moe = moe
            self.with_scores = with_scores
            self.hash_routed = hash_routed

        def forward(self, hidden_states, input_ids=None):
            token_ids = None
            if self.hash_routed:
                if input_ids is None:
                    raise ValueError(
                        "a hash-routed MoE layer (DeepSeek-V4 hash_moe) chooses its experts "
                        "by token id: call the model with input_ids (inputs_embeds alone "
                        "give it none)")
                token_ids = input_ids
            if not self.with_scores:
                return self.moe(hidden_states, token_ids=token_ids)
            out = self.moe.forward_all(hidden_states, token_ids=token_ids)
            return out["out"], out["topk_weights"]

    class PerSequenceCall(torch.nn.Module):
        """A block whose capacity counts per sequence (Switch Transformers):
        the compiled layer ``moe`` called on each sequence -- each row of
        the batch dims of ``[..., S, D]`` -- alone (``[S, D]``: one)."""

        def __init__(self, moe):
            super().__init__()
            self.moe = moe

        def forward(self, hidden_states):
            if hidden_states.dim() <= 2:
                return self.moe(hidden_states)
            rows = hidden_states.reshape(-1, *hidden_states.shape[-2:])
            return torch.stack([self.moe(row) for row in rows]).reshape(hidden_states.shape)

    class NllbMoeCall(torch.nn.Module):
        """NLLB-MoE's call ``ffn(hidden_states, padding_mask)`` (the encoder
        and decoder layers pass their attention mask).  transformers' router
        leaves the tokens that mask marks out of the routing (output 0, no
        capacity taken); the compiled layer routes every token, so a marked
        token is zeroed afterwards when no expert can overflow (capacity >=
        tokens: the others are then routed the same), and refused
        otherwise."""

        def __init__(self, moe, spec, ignore_padding: bool):
            super().__init__()
            self.moe = moe
            self.capacity, self.experts = dict(spec["capacity"]), spec["experts"]
            self.ignore_padding = ignore_padding

        def forward(self, hidden_states, padding_mask=None):
            out = self.moe(hidden_states)
            if padding_mask is None or self.ignore_padding:
                return out
            T = hidden_states.numel() // hidden_states.shape[-1]
            mask = padding_mask
            if mask.dim() == 4:
                # As NllbMoeTop2Router reads an attention mask: its last row.
                mask = mask[:, :, -1, :].reshape(-1)[-T:]
            padding = mask.reshape(-1).bool()
            if padding.numel() != T:
                raise ValueError(f"NllbMoeSparseMLP: padding_mask of {padding.numel()} "
                                 f"tokens for {T} tokens")
            if not bool(padding.any()):
                return out
            from .reference import spec_capacity
            room = spec_capacity(self.capacity, T, 2, self.experts)
            if room < T:
                raise ValueError(
                    f"NllbMoeSparseMLP: {int(padding.sum())} padding token(s) and a capacity of "
                    f"{room} < {T} tokens per expert: transformers routes the padding tokens "
                    f"to no expert and counts no capacity for them, the compiled layer routes "
                    f"every token (the same only when no expert can overflow, e.g. "
                    f"moe_eval_capacity_token_fraction >= 1)")
            return out.masked_fill(padding.reshape(hidden_states.shape[:-1] + (1,)), 0.0)

    _ADAPTERS = HFBlockCall, NllbMoeCall, PerSequenceCall
    return _ADAPTERS


def _calling_like(block, module, spec):
    """``module`` (a MoELayer of ``spec``) called as ``block`` is by its
    decoder layer: GPT-OSS's and Llama 4's blocks return ``(output, router
    scores or logits)`` (the decoder layers discard the second: the module
    returns its top-k weights there), DeepSeek-V4's takes ``input_ids=``
    (the token ids of its hash-routed layers), NLLB-MoE's a
    ``padding_mask`` (see ``NllbMoeCall``)."""
    fam = family_of(block)
    if fam is None:
        return module
    if fam.name == "nllb_moe":
        return _adapters()[1](module, spec, bool(block.router.router_ignore_padding_tokens))
    if fam.name not in ("gpt_oss", "llama4", "deepseek_v4"):
        return module
    return _adapters()[0](module, with_scores=fam.name in ("gpt_oss", "llama4"),
                          hash_routed="hash_vocab" in spec["router"])


def patch_model(model, *, pipeline: str = "fast", **compile_options) -> PatchReport:
    """Swaps every supported MoE block of a (loaded) transformers model for a
    compiled ``moe_mlir.torch.MoELayer`` holding the block's weights.

    Blocks are replaced on their parent module; a block the spec cannot
    express stays and is listed in the report with the reason.  Blocks with
    equal specs share one compiled library (the compile cache keys by spec).
    The swapped blocks no longer record ``router_logits``
    (``output_router_logits``).  Returns a :class:`PatchReport`."""
    from .compiler import compile as compile_spec
    report = PatchReport()
    compiled: Dict[str, Any] = {}   # spec hash -> the Layer its blocks share
    for path, block in model.named_modules():
        if path and family_of(block) is None and _looks_like_moe(block):
            report.left.append((path, type(block).__name__,
                                "unknown MoE block class: not in moe_mlir.hf.FAMILIES (what it "
                                "computes is not checked against the spec)"))
    from . import hf_gemma4
    for path, block in moe_blocks(model):
        # Gemma 4: the router's decoder layer is read and swapped.
        path, block = hf_gemma4.gemma4_owner(model, path, block)
        try:
            layer = from_hf(block, where=path)
        except UnsupportedBlockError as exc:
            report.left.append((path, type(block).__name__, str(exc)))
            continue
        key = spec_hash(layer.spec)
        if key not in compiled:
            compiled[key] = compile_spec(layer.spec, pipeline=pipeline, **compile_options)
        if hf_gemma4.is_gemma4_decoder_layer(block):
            hf_gemma4.swap_gemma4_moe(block, layer.module(compiled=compiled[key]))
            report.swapped.append((path, layer.family, layer.spec["name"], key))
            continue
        module = _calling_like(block, layer.module(compiled=compiled[key]), layer.spec)
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        if attr.isdigit() and isinstance(parent, (_torch().nn.ModuleList,
                                                  _torch().nn.Sequential)):
            parent[int(attr)] = module
        else:
            setattr(parent, attr, module)
        report.swapped.append((path, layer.family, layer.spec["name"], key))
    return report


# --------------------------------------------------------------------------- #
# config.json and safetensors
# --------------------------------------------------------------------------- #

def _load_config(config):
    from transformers import AutoConfig, PretrainedConfig
    if isinstance(config, PretrainedConfig):
        return config
    path = os.fspath(config)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config not found: {path}")
    with open(path, encoding="utf-8") as fh:
        raw = json.load(fh)
    if "model_type" not in raw:
        raise ValueError(f"{path}: no 'model_type' (not a transformers config.json)")
    return AutoConfig.for_model(**raw)


def _meta_model(config):
    """The model of ``config`` on the meta device: its modules, no weights."""
    torch = _torch()
    import transformers
    from transformers import AutoModel, AutoModelForCausalLM
    transformers.logging.set_verbosity_error()
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    with torch.device("meta"):
        for auto in (AutoModelForCausalLM, AutoModel):
            try:
                return auto.from_config(config, dtype=dtype)
            except ValueError:
                continue
    raise ValueError(f"transformers has no model class for model_type {config.model_type!r}")


def _looks_like_moe(module) -> bool:
    """A module of an unknown class holding experts and a router: a MoE block
    patch_model leaves (and says so) rather than passing over in silence."""
    torch = _torch()
    experts = getattr(module, "experts", None)
    routed = any(isinstance(getattr(module, n, None), torch.nn.Module)
                 for n in ("gate", "router"))
    return (isinstance(experts, torch.nn.Module) and routed
            and not any(family_of(c) is not None for c in module.children()))


def moe_blocks(model) -> List[Tuple[str, Any]]:
    """[(path, block)] of the known MoE blocks of ``model`` (supported or not)."""
    return [(p, m) for p, m in model.named_modules() if p and family_of(m) is not None]


def _layer_index(path: str) -> Optional[int]:
    found = re.findall(r"\.layers?\.(\d+)\.", f".{path}.") or re.findall(r"\.(\d+)\.", f".{path}.")
    return int(found[-1]) if found else None


def spec_from_config(config, layer: Union[int, str, None] = None, *,
                     name: Optional[str] = None,
                     weight_dtype: Optional[str] = None) -> Dict[str, Any]:
    """The spec of MoE layer ``layer`` of a model given by its transformers
    config, a ``config.json`` path or a checkpoint folder.  ``layer`` is a
    layer index (default: the first MoE layer) or a block's module path, as
    :func:`patch_model` reports it (``"model.decoder.layers.1.ffn"``; a path
    of the model's inner model, or a path's last parts, name it too): an
    encoder-decoder model has an encoder and a decoder layer of each index,
    and an index naming blocks of different specs is refused.  The model is
    built on the meta device (no weights) and its block read as
    :func:`from_hf` reads it; ``weight_dtype`` overrides the one of the
    config's ``dtype``."""
    from .hf_gemma4 import gemma4_owner
    cfg = _load_config(config)
    model = _meta_model(cfg)
    blocks = [gemma4_owner(model, p, b) for p, b in moe_blocks(model)]
    if not blocks:
        raise UnsupportedBlockError(f"model_type {cfg.model_type!r}: no known MoE block")
    if layer is None:
        hits = blocks[:1]
    elif isinstance(layer, str):
        # The meta model may be the checkpoint's inner model (NllbMoeModel
        # for a saved NllbMoeForConditionalGeneration): paths agree up to
        # the wrapper's leading parts.
        hits = [(p, b) for p, b in blocks
                if p == layer or p.endswith("." + layer) or layer.endswith("." + p)]
        if not hits:
            raise ValueError(f"{layer!r} is not a MoE block of {cfg.model_type!r} "
                             f"(its MoE blocks: {[p for p, _ in blocks]})")
    elif isinstance(layer, numbers.Integral) and not isinstance(layer, bool):
        hits = [(p, b) for p, b in blocks if _layer_index(p) == layer]
        if not hits:
            moe_layers = sorted({_layer_index(p) for p, _ in blocks} - {None})
            raise ValueError(f"layer {layer} of {cfg.model_type!r} has no MoE block "
                             f"(MoE layers: {moe_layers})")
    else:
        raise TypeError(f"layer must be an index or a block's module path, got {layer!r}")
    specs = [from_hf(b, name=name, where=p).spec for p, b in hits]
    if any(s != specs[0] for s in specs[1:]):
        raise ValueError(f"layer {layer!r} of {cfg.model_type!r} names MoE blocks of different "
                         f"specs: {[p for p, _ in hits]}; pass the block's path as layer=")
    spec = specs[0]
    if weight_dtype is not None:
        spec = load_spec(dict(spec, weight_dtype=weight_dtype))
    return spec


# Checkpoint tensor names, relative to the block's prefix: fused (transformers 5
# modules) and per-expert ({e}: the expert index) layouts.  The first name set
# found in the files wins.
_ROUTER_NAMES = ("gate.weight", "router.weight", "router.layer.weight", "gate.wg.weight",
                 "router.classifier.weight")
_BIAS_NAMES = ("gate.e_score_correction_bias", "e_score_correction_bias")
_PER_EXPERT = (("experts.{e}.gate_proj.weight", "experts.{e}.up_proj.weight",
                "experts.{e}.down_proj.weight"),
               ("experts.{e}.w1.weight", "experts.{e}.w3.weight", "experts.{e}.w2.weight"))
# Ungated per-expert layouts (up, down): Nemotron-H; Switch Transformers'
# wi/wo; NLLB-MoE's fc1/fc2 (their ``.bias`` beside them: b1, b2).
_PER_EXPERT_UNGATED = (("experts.{e}.up_proj.weight", None, "experts.{e}.down_proj.weight"),
                       ("experts.expert_{e}.wi.weight", None, "experts.expert_{e}.wo.weight"),
                       ("experts.expert_{e}.fc1.weight", None, "experts.expert_{e}.fc2.weight"))
_SHARED = (("shared_expert.gate_proj.weight", "shared_expert.up_proj.weight",
            "shared_expert.down_proj.weight"),
           ("shared_experts.gate_proj.weight", "shared_experts.up_proj.weight",
            "shared_experts.down_proj.weight"))
# Fused [E, 2F, D] gate/up (gate rows first) and [E, D, F] down projections:
# transformers 5's modules, and Granite-MoE checkpoints.
_FUSED = (("experts.gate_up_proj", "experts.down_proj"),
          ("input_linear.weight", "output_linear.weight"))
# Names a block's checkpoint prefix has besides its module path's last part.
_BLOCK_ALIASES = ("mlp", "block_sparse_moe", "feed_forward", "ffn", "moe")


class _Checkpoint:
    """Lazy tensors of a set of safetensors files, by name."""

    def __init__(self, files):
        from safetensors import safe_open
        if isinstance(files, (str, os.PathLike)):
            files = [files]
        paths = []
        for f in files:
            f = os.fspath(f)
            if os.path.isdir(f):
                paths += sorted(os.path.join(f, n) for n in os.listdir(f)
                                if n.endswith(".safetensors"))
            elif os.path.isfile(f):
                paths.append(f)
            else:
                raise FileNotFoundError(f"safetensors file not found: {f}")
        if not paths:
            raise FileNotFoundError(f"no .safetensors files in {list(map(os.fspath, files))}")
        self.where = {}
        self._handles = [safe_open(p, framework="pt") for p in paths]
        for h in self._handles:
            for key in h.keys():
                self.where[key] = h

    def has(self, name: str) -> bool:
        return name in self.where

    def get(self, name: str):
        return self.where[name].get_tensor(name)


def _expert_scale_vector(value, experts: int, base: str):
    """The spec's ``expert_scale`` [E] (float32) from the caller's value: a
    number (every expert) or E numbers."""
    torch = _torch()
    if value is None:
        raise ValueError(
            f"{base}: the spec has expert_scale, which checkpoints do not hold (NLLB-MoE: "
            f"1 - config.moe_token_dropout): pass load_hf_weights(..., expert_scale=...)")
    t = torch.as_tensor(value, dtype=torch.float32)
    if t.dim() == 0:
        t = t.expand(experts).clone()
    if tuple(t.shape) != (experts,):
        raise ValueError(f"{base}: expert_scale must be a number or {experts} numbers, got "
                         f"shape {list(t.shape)}")
    return t


def load_hf_weights(files, prefix: str, spec, *, expert_scale=None) -> Dict[str, Any]:
    """The weights of the MoE block at ``prefix`` (e.g. ``model.layers.3.mlp``)
    in safetensors ``files`` (a file, a list, or a checkpoint folder), in the
    spec contract's names and shapes as torch tensors of the spec's
    weight_dtype.  Reads the Hugging Face names of both layouts checkpoints
    use: fused ``experts.gate_up_proj``/``down_proj`` (Granite:
    ``input_linear``/``output_linear``; DBRX: ``experts.mlp.w1,v1,w2``) and
    per-expert ``experts.{e}.{gate,up,down}_proj`` / ``w1,w3,w2``, Switch
    Transformers' ``experts.expert_{e}.wi,wo`` and NLLB-MoE's
    ``experts.expert_{e}.fc1,fc2`` (with their biases) beside
    ``router.classifier`` (its bias ``logit_bias``), and
    DeepSeek-V4's hash table ``gate.tid2eid`` (as int32); ``prefix`` may name the
    block by its module path or by its checkpoint name (``mlp`` and
    ``block_sparse_moe`` are tried for each other).  A spec with
    ``expert_scale`` (NLLB-MoE with moe_token_dropout p > 0: 1 - p) needs it
    from the caller, as it is not in checkpoints: ``expert_scale`` a number
    (every expert) or E numbers, else ValueError.  Raises ValueError naming
    the tensor that is missing or misshapen."""
    torch = _torch()
    spec = load_spec(spec)
    if spec.get("expert_rms_norm"):     # only Gemma 4's MoE has it
        from .hf_gemma4 import load_gemma4_weights
        return load_gemma4_weights(files, prefix, spec)
    shapes = weight_shapes(spec)
    ck = _Checkpoint(files)
    prefix = prefix.rstrip(".")
    head, _, last = prefix.rpartition(".")
    candidates = [prefix] + [f"{head}.{a}" if head else a for a in _BLOCK_ALIASES if a != last]
    base = next((c for c in candidates if any(k.startswith(c + ".") for k in ck.where)), None)
    if base is None:
        raise ValueError(f"no tensor named {prefix}.* in the checkpoint (also tried "
                         f"{', '.join(candidates[1:])})")

    def first(names, what):
        for n in names:
            if ck.has(f"{base}.{n}"):
                return ck.get(f"{base}.{n}")
        raise ValueError(f"{base}: no {what} tensor (looked for "
                         f"{', '.join(base + '.' + n for n in names)})")

    E = spec["experts"]
    w: Dict[str, Any] = {"gate": first(_ROUTER_NAMES, "router weight")}
    if "gate_bias" in shapes:
        w["gate_bias"] = first(_BIAS_NAMES, "selection bias")
    if "tid2eid" in shapes:
        w["tid2eid"] = first(("gate.tid2eid", "tid2eid"), "hash routing table (tid2eid)")
    if "logit_bias" in shapes:
        w["logit_bias"] = first(("router.bias", "gate.bias", "router.classifier.bias"),
                                "router logit bias")
    if "output_bias" in shapes:
        w["output_bias"] = first(("bias",), "output bias")
    fused = next(((g, d) for g, d in _FUSED if ck.has(f"{base}.{g}")), None)
    # GPT-OSS (its gate_up bias names it) and Llama 4 (score on the input)
    # store gate_up [E, D, 2F] and down [E, F, D]; GPT-OSS interleaves the
    # gate and up columns.
    gpt_oss = ck.has(f"{base}.experts.gate_up_proj_bias")
    transposed = gpt_oss or spec["router"]["apply_score"] == "input"
    if fused is not None:
        gate_up = ck.get(f"{base}.{fused[0]}")
        down = first((fused[1],), "expert down projection")
        if transposed:
            gate_up, down = gate_up.transpose(1, 2), down.transpose(1, 2)
        F = gate_up.shape[1] // 2
        if gpt_oss:
            w["w1"], w["w3"] = gate_up[:, 0::2], gate_up[:, 1::2]
        else:
            w["w1"], w["w3"] = gate_up[:, :F], gate_up[:, F:]
        w["w2"] = down
        if "b1" in shapes:
            bias = first(("experts.gate_up_proj_bias",), "expert gate/up bias")
            w["b1"], w["b3"] = (bias[:, 0::2], bias[:, 1::2]) if gpt_oss else (bias[:, :F],
                                                                              bias[:, F:])
            w["b2"] = first(("experts.down_proj_bias",), "expert down bias")
    elif ck.has(f"{base}.experts.mlp.w1"):
        # DBRX: w1, v1, w2 [E*F, D]; the expert computes (...) @ w2.
        F = spec["expert_hidden"]
        rows = [ck.get(f"{base}.experts.mlp.{n}") for n in ("w1", "v1", "w2")]
        if any(r.dim() != 2 or r.shape[0] != E * F for r in rows):
            raise ValueError(f"{base}: experts.mlp.w1/v1/w2 must be [experts * expert_hidden "
                             f"= {E * F}, d_model], got {[list(r.shape) for r in rows]}")
        w["w1"], w["w3"] = rows[0].view(E, F, -1), rows[1].view(E, F, -1)
        w["w2"] = rows[2].view(E, F, -1).transpose(1, 2)
    elif ck.has(f"{base}.experts.up_proj") and "w3" not in shapes:
        w["w1"] = ck.get(f"{base}.experts.up_proj")
        w["w2"] = ck.get(f"{base}.experts.down_proj")
    else:
        layouts = _PER_EXPERT
        if "w3" not in shapes and not ck.has(f"{base}.{_PER_EXPERT[0][0].format(e=0)}"):
            # Ungated experts: up_proj, down_proj (Nemotron-H), wi, wo
            # (Switch), fc1, fc2 (NLLB-MoE).
            layouts = _PER_EXPERT_UNGATED
        for layout in layouts:
            if ck.has(f"{base}.{layout[0].format(e=0)}"):
                names = ("w1", "w3", "w2") if "w3" in shapes else ("w1", None, "w2")
                for ours, pattern in zip(names, layout):
                    if ours is not None:
                        missing = [e for e in range(E)
                                   if not ck.has(f"{base}.{pattern.format(e=e)}")]
                        if missing:
                            raise ValueError(f"{base}: no tensor "
                                             f"{base}.{pattern.format(e=missing[0])}")
                        w[ours] = torch.stack([ck.get(f"{base}.{pattern.format(e=e)}")
                                               for e in range(E)])
                        if "b1" in shapes and pattern.endswith(".weight"):
                            # Per-expert biases beside the weights (NLLB-MoE).
                            b = "b" + ours[1:]
                            bias = pattern[:-len("weight")] + "bias"
                            w[b] = torch.stack([first((bias.format(e=e),), f"expert bias {b}")
                                                for e in range(E)])
                break
        else:
            raise ValueError(f"{base}: no expert tensors (looked for experts.gate_up_proj and "
                             f"per-expert experts.0.gate_proj.weight / experts.0.w1.weight / "
                             f"experts.expert_0.wi.weight / experts.expert_0.fc1.weight)")
    if "shared_w1" in shapes and "shared_w3" not in shapes:
        # Ungated shared experts (Nemotron-H): up_proj, down_proj.
        for prefix in ("shared_experts", "shared_expert"):
            if ck.has(f"{base}.{prefix}.up_proj.weight"):
                w["shared_w1"] = ck.get(f"{base}.{prefix}.up_proj.weight")
                w["shared_w2"] = first((f"{prefix}.down_proj.weight",), "shared down projection")
                break
        else:
            raise ValueError(f"{base}: no shared expert tensors (looked for "
                             f"{base}.shared_expert(s).up_proj.weight)")
    elif "shared_w1" in shapes:
        for layout in _SHARED:
            if ck.has(f"{base}.{layout[0]}"):
                w["shared_w1"], w["shared_w3"], w["shared_w2"] = (
                    ck.get(f"{base}.{n}") for n in layout)
                break
        else:
            raise ValueError(f"{base}: no shared expert tensors (looked for "
                             f"{base}.shared_expert(s).gate_proj.weight)")
    if "shared_gate" in shapes:
        w["shared_gate"] = first(("shared_expert_gate.weight",), "shared expert gate")
    if "expert_scale" in shapes:
        w["expert_scale"] = _expert_scale_vector(expert_scale, E, base)
    want = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
    out = {}
    for n, (shape, dtype) in shapes.items():
        t = w[n]
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{base}: weight {n} has shape {list(t.shape)} in the checkpoint, "
                             f"the spec says {list(shape)}")
        if dtype == "i32":   # expert ids (int64 in transformers' checkpoints)
            _check_expert_ids(t, E, f"{base}: weight {n}", ValueError)
            out[n] = t.to(torch.int32)
            continue
        if t.dtype not in want.values():
            # e.g. float8 with scales beside it: converting would drop the scales.
            raise ValueError(f"{base}: weight {n} is {str(t.dtype).replace('torch.', '')} in "
                             f"the checkpoint (quantized?); the spec takes float32, bfloat16 "
                             f"or float16 weights: dequantize the checkpoint first")
        out[n] = t.to(want[dtype]) if t.dtype != want[dtype] else t
    return out
