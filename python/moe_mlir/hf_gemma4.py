"""Gemma 4's MoE (the ``enable_moe_block`` part of ``Gemma4TextDecoderLayer``)
as a MoE-MLIR spec, its weights, and the swap that runs it compiled.

Gemma 4 has no MoE block module: the router, the experts and the experts'
input norm are three modules of the decoder layer, which reads two inputs
(``residual`` for the router, ``pre_feedforward_layernorm_2(residual)`` for
the experts).  So the decoder layer is what is read and patched here; the
router (a ``Gemma4TextRouter``) marks the layers that have a MoE.

Wiring in ``hf.py`` (hf.py imports this module lazily, inside the functions:
this module imports ``hf`` at its top)::

    # _F32_VECTORS: add "expert_norm" (an f32 vector of the contract)
    # beside the other readers; FAMILIES' gemma4 entry, in place of missing=
    def _read_gemma4_router(block, where):
        from .hf_gemma4 import read_gemma4_router
        return read_gemma4_router(block, where)      # refuses: pass the decoder layer
    Family("gemma4", ("Gemma4TextRouter",), _read_gemma4_router, note="...")
    # from_hf, first lines
    from . import hf_gemma4
    if hf_gemma4.is_gemma4_decoder_layer(block):
        return hf_gemma4.gemma4_from_hf(block, name=name, where=where)
    # patch_model's loop, first line: the router's decoder layer is read and swapped
    path, block = hf_gemma4.gemma4_owner(model, path, block)  # others: unchanged
    # patch_model, once compiled[key] exists, before the generic swap
    if hf_gemma4.is_gemma4_decoder_layer(block):
        hf_gemma4.swap_gemma4_moe(block, layer.module(compiled=compiled[key]))
        report.swapped.append((path, layer.family, layer.spec["name"], key))
        continue
    # spec_from_config: the blocks as patch_model reads them
    model = _meta_model(cfg)
    blocks = [gemma4_owner(model, p, b) for p, b in moe_blocks(model)]
    # load_hf_weights, after spec = load_spec(spec)
    if spec.get("expert_rms_norm"):     # only Gemma 4's MoE has it
        from .hf_gemma4 import load_gemma4_weights
        return load_gemma4_weights(files, prefix, spec)

The math (transformers 5.24, ``modeling_gemma4.py``):

* router: ``Gemma4RMSNorm(with_scale=False)`` then ``* scale * hidden_size**-0.5``
  is ``router.rms_norm`` with ``router_norm = scale * hidden_size**-0.5``
  (times the norm's own weight if it has one); ``proj`` is ``gate``; softmax
  over every expert, top-k, renormalised: ``score_then_topk``,
  ``normalize``; ``per_expert_scale[top_k_index]`` multiplies the weights,
  which is the spec's ``expert_scale`` (each expert's output times its scale).
* ``pre_feedforward_layernorm_2`` (``x * rsqrt(mean(x²) + eps) * weight``: a
  plain weight, not ``1 + weight``) is ``expert_rms_norm`` with
  ``expert_norm = weight``.
* experts: ``gate_up_proj`` [E, 2F, D] (gate rows first), ``down_proj``
  [E, D, F], ``act(gate) * up`` with the config's ``hidden_activation``
  (``gelu_pytorch_tanh``: ``geglu_tanh``).
* stays in PyTorch: ``post_feedforward_layernorm_2`` (on the MoE output), the
  dense MLP, ``post_feedforward_layernorm_1``, the residual.

The swap (:func:`swap_gemma4_moe`) leaves ``Gemma4TextDecoderLayer.forward``
as it is: ``router`` becomes a function returning ``(None, None, None)``,
``pre_feedforward_layernorm_2`` an ``nn.Identity``, and ``experts`` a module
that runs the compiled layer (a ``moe_mlir.torch.MoELayer``) on the raw
residual tokens it now receives.  Training mode changes none of this math (no
dropout or jitter in the MoE path); the compiled layer has no backward.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from .hf import HFLayer, UnsupportedBlockError
from .spec import load_spec, weight_shapes

__all__ = [
    "is_gemma4_decoder_layer",
    "gemma4_from_hf",
    "gemma4_spec_and_weights",
    "read_gemma4_router",
    "gemma4_owner",
    "swap_gemma4_moe",
    "patch_gemma4_layer",
    "load_gemma4_weights",
]

FAMILY = "gemma4"
_LAYER = "Gemma4TextDecoderLayer"
_DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}


def _torch():
    import torch
    return torch


def _is(module, class_name: str) -> bool:
    """``module`` is (or derives from) transformers' class ``class_name``."""
    return any(c.__name__ == class_name for c in type(module).__mro__)


def is_gemma4_decoder_layer(module) -> bool:
    """Whether ``module`` is a Gemma 4 text decoder layer (with a MoE or not)."""
    return _is(module, _LAYER)


def read_gemma4_router(block, where: str):
    """The family reader for the router class: the router alone is not the
    MoE (the experts and their norm are its decoder layer's), so it is refused
    with what to pass instead."""
    raise UnsupportedBlockError(
        f"{where}: Gemma 4's router alone is not its MoE (the experts and their input norm "
        f"are modules of the decoder layer): pass the {_LAYER} that holds it (from_hf "
        f"and patch_model read the router's parent)")


def gemma4_owner(model, path: str, block) -> Tuple[str, Any]:
    """(path, module) to read and swap for the MoE block ``block`` found at
    ``path`` of ``model``: a Gemma 4 router's decoder layer, else the block."""
    if not _is(block, "Gemma4TextRouter") or "." not in path:
        return path, block
    owner = path.rpartition(".")[0]
    return owner, model.get_submodule(owner)


# --------------------------------------------------------------------------- #
# Reading
# --------------------------------------------------------------------------- #

def _check_modules(layer, where: str) -> None:
    """The decoder layer's MoE modules are transformers' own: another class
    (a subclass by another name, a patched layer) may compute something else."""
    if not is_gemma4_decoder_layer(layer):
        raise UnsupportedBlockError(f"{where}: {type(layer).__name__} is not a {_LAYER}")
    if not getattr(layer, "enable_moe_block", False):
        raise UnsupportedBlockError(f"{where}: a {_LAYER} without enable_moe_block has no MoE "
                                    f"(its dense MLP stays in PyTorch)")
    if _is(getattr(layer, "experts", None), "Gemma4CompiledExperts"):
        raise UnsupportedBlockError(f"{where}: already patched (its experts are a compiled "
                                    f"layer: swap_gemma4_moe was applied)")
    want = {"router": "Gemma4TextRouter", "experts": "Gemma4TextExperts",
            "pre_feedforward_layernorm_2": "Gemma4RMSNorm",
            "post_feedforward_layernorm_2": "Gemma4RMSNorm"}
    for attr, cls in want.items():
        module = getattr(layer, attr, None)
        if module is None or not _is(module, cls):
            got = type(module).__name__ if module is not None else "nothing"
            raise UnsupportedBlockError(f"{where}.{attr}: expected transformers' {cls}, got "
                                        f"{got} (what another module computes is not checked "
                                        f"against the spec)")
    if not _is(layer.router.norm, "Gemma4RMSNorm"):
        raise UnsupportedBlockError(f"{where}.router.norm: expected Gemma4RMSNorm, got "
                                    f"{type(layer.router.norm).__name__}")


def _norm_weight(norm, d_model: int):
    """A Gemma4RMSNorm's weight as the f32 vector the spec multiplies by:
    ``x * rsqrt(mean(x²) + eps) * weight`` (ones without a scale)."""
    torch = _torch()
    if getattr(norm, "with_scale", True):
        return norm.weight.detach().float()
    return torch.ones(d_model, dtype=torch.float32)


def _read(layer, where: str):
    """Router options, weights (torch tensors in contract names: views of the
    layer's parameters where the layouts agree), activation, norm epsilons."""
    from .hf import _fused_experts, _no_bias
    torch = _torch()
    _check_modules(layer, where)
    router, experts = layer.router, layer.experts
    if getattr(experts, "has_post_expert_norm", False):
        raise UnsupportedBlockError(f"{where}.experts: a norm after each expert "
                                    f"(has_post_expert_norm; Gemma 4 has none)")
    if getattr(experts, "_is_expert_parallel", False):
        raise UnsupportedBlockError(f"{where}.experts: expert-parallel (this rank holds a "
                                    f"slice of the experts; the spec is the whole layer)")
    w, act = _fused_experts(experts, f"{where}.experts")
    if "w3" not in w:
        raise UnsupportedBlockError(f"{where}.experts: experts without a gate (Gemma 4's are "
                                    f"gated)")
    gate = _no_bias(router.proj, f"{where}.router.proj")
    D = int(gate.shape[1])
    top_k = getattr(router.config, "top_k_experts", None)
    if not isinstance(top_k, int) or isinstance(top_k, bool):
        raise UnsupportedBlockError(f"{where}.router: config.top_k_experts {top_k!r} is not an "
                                    f"integer")
    # norm(x) * scale * hidden_size^-1/2: one weight of the spec's router norm.
    root = float(router.scalar_root_size)
    norm = _norm_weight(router.norm, D)
    if norm.is_meta or router.scale.is_meta:
        router_norm = torch.empty(D, dtype=torch.float32, device="meta")
    else:
        router_norm = (norm.double() * router.scale.detach().double() * root).float()
    pre = layer.pre_feedforward_layernorm_2
    expert_norm = _norm_weight(pre, D)
    weights = {"router_norm": router_norm, "expert_norm": expert_norm, "gate": gate, **w,
               "expert_scale": router.per_expert_scale.detach().float()}
    router_opts = dict(top_k=top_k, score="softmax", order="score_then_topk", normalize=True,
                       rms_norm=True, rms_norm_eps=float(router.norm.eps))
    return router_opts, weights, act, float(pre.eps)


# Contract weights that are f32 whatever the weight_dtype.
_VECTORS = ("router_norm", "expert_norm", "expert_scale")


def gemma4_from_hf(decoder_layer, *, name: Optional[str] = None, where: str = "layer",
                   weight_dtype: Optional[str] = None) -> HFLayer:
    """The MoE of a ``Gemma4TextDecoderLayer`` (``enable_moe_block``) as an
    :class:`moe_mlir.hf.HFLayer` (family ``gemma4``).  ``name``: the spec's
    name (default ``gemma4``, so equal layers share one compiled library);
    ``weight_dtype``: the spec's (default: the experts' dtype when the router
    matrix holds values of it exactly, else f32); the matrices are converted
    to it (f32 to bf16/f16 rounds).  Raises UnsupportedBlockError naming
    what the spec cannot express."""
    from .hf import _dtype_of
    torch = _torch()
    router_opts, w, act, expert_eps = _read(decoder_layer, where)
    E, F, D = w["w1"].shape
    matrices = [t for n, t in w.items() if n not in _VECTORS]
    if weight_dtype is None:
        weight_dtype = _dtype_of(w["w1"], matrices)
    elif weight_dtype not in _DTYPES:
        raise ValueError(f"weight_dtype must be one of {', '.join(_DTYPES)}, got "
                         f"{weight_dtype!r}")
    raw = {"name": name or FAMILY, "kind": "moe", "d_model": int(D), "experts": int(E),
           "expert_hidden": int(F), "activation": act, "weight_dtype": weight_dtype,
           "expert_scale": True, "expert_rms_norm": True, "expert_rms_norm_eps": expert_eps,
           "router": router_opts}
    try:
        spec = load_spec(raw)
    except ValueError as exc:   # e.g. top_k_experts > num_experts
        raise UnsupportedBlockError(f"{where}: {exc}") from exc
    weights: Dict[str, Any] = {}
    for n, (shape, dtype) in weight_shapes(spec).items():
        t = w[n].detach()
        if tuple(t.shape) != tuple(shape):
            raise UnsupportedBlockError(f"{where}: weight {n} has shape {list(t.shape)}, the "
                                        f"spec contract says {list(shape)}")
        want = getattr(torch, _DTYPES[dtype])
        weights[n] = t if t.dtype == want else t.to(want)
    return HFLayer(FAMILY, spec, weights)


def gemma4_spec_and_weights(decoder_layer, name: Optional[str] = None,
                            weight_dtype: Optional[str] = None
                            ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(spec, weights) of a Gemma 4 decoder layer's MoE: the normalized spec
    dict and {contract name: torch tensor} (see :func:`gemma4_from_hf`)."""
    layer = gemma4_from_hf(decoder_layer, name=name, weight_dtype=weight_dtype)
    return layer.spec, layer.weights


# --------------------------------------------------------------------------- #
# Swapping
# --------------------------------------------------------------------------- #

_EXPERTS_CLASS = None


def _experts_class():
    """The compiled experts module class (an nn.Module, defined once
    torch is in)."""
    global _EXPERTS_CLASS
    if _EXPERTS_CLASS is not None:
        return _EXPERTS_CLASS
    torch = _torch()

    class Gemma4CompiledExperts(torch.nn.Module):
        """Stands in for Gemma4TextExperts: ``moe`` (a MoELayer) computes the
        whole MoE (router norm, routing, experts' norm, experts, per-expert
        scale) from the residual tokens the decoder layer now passes (its
        ``pre_feedforward_layernorm_2`` is an Identity)."""

        def __init__(self, moe):
            super().__init__()
            self.moe = moe

        @property
        def spec(self) -> Dict[str, Any]:
            return self.moe.spec

        def forward(self, hidden_states, top_k_index=None, top_k_weights=None):
            if top_k_index is not None or top_k_weights is not None:
                raise ValueError("Gemma4CompiledExperts routes the tokens itself: the decoder "
                                 "layer's router must be the function swap_gemma4_moe puts in "
                                 "(it got routing from another router)")
            return self.moe(hidden_states)

    _EXPERTS_CLASS = Gemma4CompiledExperts
    return _EXPERTS_CLASS


def _no_routing(hidden_states):
    """A patched decoder layer's ``router``: the compiled experts route, so
    the layer's own routing is None.  A function, not a module: the patched
    layer then holds no router (state_dict, named_modules), and is not taken
    for a MoE block of an unknown class (it has experts but no router)."""
    return None, None, None


def swap_gemma4_moe(decoder_layer, moe):
    """Swaps ``decoder_layer``'s router, experts' norm and experts for
    ``moe`` (a ``moe_mlir.torch.MoELayer`` of the layer's Gemma 4 spec;
    the router becomes a function returning ``(None, None, None)``):
    ``Gemma4TextDecoderLayer.forward``, unchanged, then computes the MoE
    branch with it.  Returns the new ``experts`` module (its ``moe`` is the
    MoELayer, its ``spec`` the spec)."""
    torch = _torch()
    compiled_experts = _experts_class()
    if not is_gemma4_decoder_layer(decoder_layer):
        raise UnsupportedBlockError(f"{type(decoder_layer).__name__} is not a {_LAYER}")
    spec = getattr(moe, "spec", None) or {}
    if not (spec.get("expert_rms_norm") and spec.get("expert_scale")
            and spec.get("router", {}).get("rms_norm")):
        raise ValueError("swap_gemma4_moe takes a MoELayer of a Gemma 4 spec (router.rms_norm, "
                         "expert_rms_norm, expert_scale)")
    experts = compiled_experts(moe)
    delattr(decoder_layer, "router")
    decoder_layer.router = _no_routing
    decoder_layer.pre_feedforward_layernorm_2 = torch.nn.Identity()
    decoder_layer.experts = experts
    return experts


def patch_gemma4_layer(decoder_layer, *, name: Optional[str] = None, where: str = "layer",
                       compiled=None, pipeline: str = "fast", **compile_options):
    """Reads ``decoder_layer``'s MoE (:func:`gemma4_from_hf`), compiles it
    (or shares ``compiled``, a :class:`moe_mlir.Layer` of the same spec) and
    swaps it in (:func:`swap_gemma4_moe`).  Returns the new ``experts``
    module; ``module.spec`` and ``spec_hash(module.spec)`` are what
    ``hf.patch_model`` reports.  Leaves the layer as it was on
    UnsupportedBlockError."""
    layer = gemma4_from_hf(decoder_layer, name=name, where=where)
    if compiled is not None:
        moe = layer.module(compiled=compiled)
    else:
        moe = layer.module(pipeline=pipeline, **compile_options)
    return swap_gemma4_moe(decoder_layer, moe)


# --------------------------------------------------------------------------- #
# Checkpoints
# --------------------------------------------------------------------------- #

def load_gemma4_weights(files, prefix: str, spec) -> Dict[str, Any]:
    """The MoE weights of the Gemma 4 decoder layer at ``prefix`` (e.g.
    ``model.language_model.layers.3`` or ``model.layers.3``) in safetensors
    ``files`` (a file, a list, or a checkpoint folder), in the contract's
    names and dtypes, as :func:`moe_mlir.load_hf_weights` gives them.  Reads
    ``router.{proj.weight,scale,per_expert_scale}``,
    ``pre_feedforward_layernorm_2.weight`` and
    ``experts.{gate_up_proj,down_proj}``; the router's scale is folded with
    ``hidden_size^-1/2`` into ``router_norm``.  Raises ValueError naming a
    missing or misshapen tensor."""
    from .hf import _Checkpoint
    torch = _torch()
    spec = load_spec(spec)
    if not spec.get("expert_rms_norm"):
        raise ValueError(f"spec {spec['name']!r} is not a Gemma 4 spec (no expert_rms_norm)")
    shapes = weight_shapes(spec)
    ck = _Checkpoint(files)
    base = prefix.rstrip(".")
    if base.endswith((".router", ".experts")):    # a module path inside the layer
        base = base.rpartition(".")[0]

    def get(name):
        if not ck.has(f"{base}.{name}"):
            raise ValueError(f"{base}: no tensor {base}.{name} in the checkpoint (a Gemma 4 "
                             f"decoder layer's prefix is e.g. model.language_model.layers.0)")
        return ck.get(f"{base}.{name}")

    gate_up, D = get("experts.gate_up_proj"), spec["d_model"]
    F = spec["expert_hidden"]
    scale = get("router.scale").double()
    if ck.has(f"{base}.router.norm.weight"):    # a router norm with a scale (not Gemma 4's)
        scale = scale * ck.get(f"{base}.router.norm.weight").double()
    w = {"router_norm": (scale * D ** -0.5).float(),
         "expert_norm": get("pre_feedforward_layernorm_2.weight"),
         "gate": get("router.proj.weight"),
         "w1": gate_up[:, :F], "w3": gate_up[:, F:], "w2": get("experts.down_proj"),
         "expert_scale": get("router.per_expert_scale")}
    if gate_up.dim() != 3 or gate_up.shape[1] != 2 * F:
        raise ValueError(f"{base}: experts.gate_up_proj has shape {list(gate_up.shape)}, "
                         f"expected [experts, 2 * expert_hidden = {2 * F}, d_model]")
    want = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
    out = {}
    for n, (shape, dtype) in shapes.items():
        t = w[n]
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{base}: weight {n} has shape {list(t.shape)} in the checkpoint, "
                             f"the spec says {list(shape)}")
        if t.dtype not in want.values():
            raise ValueError(f"{base}: weight {n} is {str(t.dtype).replace('torch.', '')} in "
                             f"the checkpoint (quantized?); the spec takes float32, bfloat16 "
                             f"or float16 weights: dequantize the checkpoint first")
        out[n] = t.to(want[dtype]) if t.dtype != want[dtype] else t
    return out
