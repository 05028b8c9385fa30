"""Layer specs: loading, validation, defaults, weight contract, hashing.

A spec describes one MoE-family layer (see docs/semantics.md, "Spec").  It can
be given as a path to a ``.yaml``/``.yml``/``.json`` file, as YAML or JSON
text, or as a dict.  :func:`load_spec` returns a *normalized* dict: every key
of the schema for that kind is present with its default filled in, numbers
have their canonical Python types, and ``capacity`` is ``None`` for a
dropless layer.  ``tiles`` (tile options of the compiled kernels) is kept only
when the spec sets some.  Every problem raises :class:`ValueError` whose message names
the offending field with its dotted path (``router.top_k``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
from typing import Any, Dict, Mapping, Tuple

import yaml

__all__ = [
    "KINDS",
    "ACTIVATIONS",
    "GATED_ACTIVATIONS",
    "WEIGHT_DTYPES",
    "load_spec",
    "weight_shapes",
    "spec_hash",
    "product_key_side",
]

KINDS = ("moe", "peer", "pkm", "mh_moe")
ACTIVATIONS = ("swiglu", "geglu", "gelu", "relu", "silu", "gelu_tanh", "geglu_tanh", "relu2")
GATED_ACTIVATIONS = ("swiglu", "geglu", "geglu_tanh")
PEER_ACTIVATIONS = ("gelu", "relu", "silu", "gelu_tanh", "relu2")
WEIGHT_DTYPES = ("f32", "bf16", "f16")
SCORES = ("softmax", "sigmoid")
# Router scores: the product-key scores plus DeepSeek-V4's sqrt(softplus(l))
# and PhiMoE's sparsemixer (chosen by the logits, weighed over the experts
# within 2·jitter_eps of each choice).
ROUTER_SCORES = SCORES + ("sqrt_softplus", "sparsemixer")
ORDERS = ("score_then_topk", "topk_then_score")
GROUP_SCORES = ("max", "top2_sum")
OVERFLOWS = ("drop", "next_choice")
PRIORITIES = ("token_order", "batch_prioritized")
AUX_LOSSES = ("load_balance", "importance", "z_loss")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# What a compiled layer can address (include/moe/ABI/SizeLimits.h): a size is
# an id bound kept in 32 bits, dispatch slots are counted in 32 bits, and no
# buffer may span more than the 2^47-byte user address space.
INT32_MAX = 2**31 - 1
MAX_BUFFER_BYTES = 2**47

# Keys allowed at the top level, per kind.
_TOP_KEYS = {
    "moe": ("name", "kind", "d_model", "experts", "expert_hidden", "activation",
            "weight_dtype", "router", "shared_experts", "capacity", "aux_losses",
            "tiles", "swiglu", "expert_bias", "expert_scale", "output_bias",
            "expert_rms_norm", "expert_rms_norm_eps"),
    "mh_moe": ("name", "kind", "d_model", "heads", "experts", "expert_hidden",
               "activation", "weight_dtype", "router", "capacity", "aux_losses", "tiles",
               "swiglu", "expert_bias", "expert_scale", "output_bias", "expert_rms_norm",
               "expert_rms_norm_eps"),
    "peer": ("name", "kind", "d_model", "experts", "heads", "top_k", "key_dim",
             "score", "query_batchnorm", "query_layernorm", "keys_per_head", "activation",
             "weight_dtype", "tiles"),
    "pkm": ("name", "kind", "d_model", "experts", "heads", "top_k", "key_dim",
            "score", "query_batchnorm", "query_layernorm", "keys_per_head", "weight_dtype",
            "tiles"),
}
_ROUTER_KEYS = ("top_k", "score", "order", "normalize", "scaling", "selection_bias",
                "groups", "topk_groups", "group_score", "noise",
                "logit_bias", "softcap", "rms_norm", "rms_norm_eps", "apply_score",
                "jitter_eps", "hash_vocab")
_SHARED_KEYS = ("hidden", "gate")
_CAPACITY_KEYS = ("factor", "tokens", "token_fraction", "overflow", "priority", "renormalize")
# PhiMoE's router_jitter_noise default.
SPARSEMIXER_JITTER_EPS = 0.01
_SWIGLU_KEYS = ("limit", "alpha", "up_offset", "clamp")
SWIGLU_CLAMPS = ("before_activation", "after_activation")


# --------------------------------------------------------------------------- #
# Parsing
# --------------------------------------------------------------------------- #

class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats such as ``1e-3``.

    PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a *string*; a spec
    author writing ``factor: 2e0`` means a number.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)

_SPEC_SUFFIXES = (".yaml", ".yml", ".json")


def _too_deep(source: str) -> ValueError:
    # PyYAML's composer and json recurse once per level of nesting: a spec
    # nested thousands of levels deep ([[[[...]]]]) exhausts Python's stack.
    return ValueError(f"{source}: cannot parse spec: nested too deeply "
                      f"(a layer spec is a few levels of mappings)")


def _parse_text(text: str, source: str):
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            pass  # maybe YAML flow style; fall through
        except RecursionError:
            raise _too_deep(source) from None
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source}: cannot parse spec: {exc}") from None
    except RecursionError:
        raise _too_deep(source) from None


def _read(spec) -> Tuple[Any, str]:
    """Return (raw object, source description)."""
    if isinstance(spec, Mapping):
        try:
            return copy.deepcopy(dict(spec)), "spec"
        except RecursionError:
            raise _too_deep("spec") from None
    if isinstance(spec, os.PathLike):
        path = os.fspath(spec)
        return _read_file(path), path
    if isinstance(spec, bytes):
        spec = spec.decode("utf-8")
    if isinstance(spec, str):
        one_line = "\n" not in spec and "\r" not in spec
        if one_line and (spec.strip().lower().endswith(_SPEC_SUFFIXES)
                         or os.path.isfile(spec)):
            return _read_file(spec), spec
        return _parse_text(spec, "spec"), "spec"
    raise ValueError(
        f"spec: expected a path, YAML/JSON text or a dict, got {type(spec).__name__}")


def _read_file(path: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"spec file not found: {path}")
    with open(path, "r", encoding="utf-8") as fh:
        text = fh.read()
    if path.lower().endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: cannot parse JSON spec: {exc}") from None
        except RecursionError:
            raise _too_deep(path) from None
    return _parse_text(text, path)


# --------------------------------------------------------------------------- #
# Field checkers
# --------------------------------------------------------------------------- #

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(d, key, path, *, minimum=None, default=None, required=False,
         maximum=INT32_MAX):
    if key not in d or d[key] is None:
        if required:
            raise ValueError(f"missing required field '{path}'")
        return default
    v = d[key]
    if not _is_int(v):
        raise ValueError(f"field '{path}' must be an integer, got {v!r}")
    if minimum is not None and v < minimum:
        raise ValueError(f"field '{path}' must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"field '{path}' must be <= {maximum}, got {v}")
    return v


def _bool(d, key, path, default):
    if key not in d or d[key] is None:
        return default
    v = d[key]
    if not isinstance(v, bool):
        raise ValueError(f"field '{path}' must be a boolean, got {v!r}")
    return v


def _float(d, key, path, default=None, required=False, positive=False):
    if key not in d or d[key] is None:
        if required:
            raise ValueError(f"missing required field '{path}'")
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"field '{path}' must be a number, got {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"field '{path}' must be finite, got {v!r}")
    if positive and not v > 0:
        raise ValueError(f"field '{path}' must be > 0, got {v!r}")
    return v


def _enum(d, key, path, choices, default=None, required=False):
    if key not in d or d[key] is None:
        if required:
            raise ValueError(f"missing required field '{path}'")
        return default
    v = d[key]
    if not isinstance(v, str):
        raise ValueError(f"field '{path}' must be a string (one of {', '.join(choices)}), "
                         f"got {v!r}")
    if v not in choices:
        raise ValueError(f"field '{path}' must be one of {', '.join(choices)}, got {v!r}")
    return v


def _mapping(d, key, path):
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise ValueError(f"field '{path}' must be a mapping, got {v!r}")
    return v


def _check_keys(d: Mapping, allowed, where: str, kind: str):
    for key in d:
        if not isinstance(key, str):
            raise ValueError(f"{where}: field names must be strings, got {key!r}")
        if key not in allowed:
            prefix = f"{where}." if where != "spec" else ""
            raise ValueError(f"unknown field '{prefix}{key}' for kind {kind} "
                             f"(allowed: {', '.join(allowed)})")


def product_key_side(experts: int) -> int:
    """n with n*n == experts, or ValueError."""
    n = math.isqrt(experts)
    if n * n != experts:
        raise ValueError(f"field 'experts' must be a perfect square n*n for product keys, "
                         f"got {experts}")
    return n


# --------------------------------------------------------------------------- #
# Normalisation
# --------------------------------------------------------------------------- #

# The layer name prefixes C symbols: keywords would not compile.
_C_KEYWORDS = frozenset("""
    auto bool break case char const continue default do double else enum extern
    false float for goto if inline int long register restrict return short
    signed sizeof static struct switch true typedef union unsigned void volatile
    while""".split())


def _normalize(raw) -> Dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"spec must be a mapping of fields, got {type(raw).__name__}")
    kind = _enum(raw, "kind", "kind", KINDS, required=True)
    _check_keys(raw, _TOP_KEYS[kind], "spec", kind)

    name = raw.get("name")
    if name is None:
        raise ValueError("missing required field 'name'")
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValueError(f"field 'name' must be a C identifier, got {name!r}")
    if name in _C_KEYWORDS:
        raise ValueError(f"field 'name' must not be a C keyword, got {name!r}")

    out: Dict[str, Any] = {"name": name, "kind": kind}
    out["d_model"] = _int(raw, "d_model", "d_model", minimum=1, required=True)
    out["experts"] = _int(raw, "experts", "experts", minimum=1, required=True)
    out["weight_dtype"] = _enum(raw, "weight_dtype", "weight_dtype", WEIGHT_DTYPES, "f32")

    if kind in ("moe", "mh_moe"):
        _normalize_moe(raw, out, kind)
    else:
        _normalize_product_key(raw, out, kind)
    _check_addressable(out)
    tiles = _tiles(raw)
    if tiles:
        out["tiles"] = tiles
    return out


def _buffer_fits(what, factors, element_bytes, element_type):
    """Raises ValueError naming the largest factor's field if ``what``, the
    product of ``factors`` ((field, name, value) triples) elements of
    ``element_bytes`` bytes, spans more than MAX_BUFFER_BYTES."""
    count = math.prod(value for _, _, value in factors)
    nbytes = count * element_bytes
    if nbytes <= MAX_BUFFER_BYTES:
        return
    field = max(factors, key=lambda f: f[2])[0]   # the first of equals
    names = " x ".join(name for _, name, _ in factors)
    values = " x ".join(str(value) for _, _, value in factors)
    raise ValueError(f"field '{field}': {what} ({names} = {values} {element_type}) needs "
                     f"{nbytes} bytes, more than 2^47 (the address space a buffer may span)")


def _router_choices(spec) -> int:
    """Choices the router returns per (sub-)token: ``top_k``, or with
    ``overflow: next_choice`` fallbacks up to ``min(2 top_k, experts of the
    kept groups)``."""
    r, cap = spec["router"], spec["capacity"]
    if cap is None or cap["overflow"] != "next_choice":
        return r["top_k"]
    kept = r["topk_groups"] * (spec["experts"] // r["groups"])
    return min(2 * r["top_k"], kept)


def _check_addressable(out):
    """The products of sizes that a buffer or a 32-bit count depends on, as
    moe-compile checks them (docs/spec.md, "Limits")."""
    wd = out["weight_dtype"]
    wbytes = 4 if wd == "f32" else 2
    D, E = out["d_model"], out["experts"]
    d = ("d_model", "d_model", D)
    e = ("experts", "experts", E)
    if out["kind"] in ("moe", "mh_moe"):
        mh = out["kind"] == "mh_moe"
        W = D // out["heads"] if mh else D
        w = ("d_model", "d_model / heads", W) if mh else d
        F = out["expert_hidden"]
        f = ("expert_hidden", "expert_hidden", F)
        weights = []
        if mh:
            weights.append(("head_proj", [d, d]))
        weights += [("gate", [e, w]), ("w1", [e, f, w])]
        if not mh and out["shared_experts"]["hidden"] > 0:
            weights.append(("shared_w1", [("shared_experts.hidden", "shared_experts.hidden",
                                           out["shared_experts"]["hidden"]), d]))
        for name, factors in weights:
            _buffer_fits(f"weight '{name}'", factors, wbytes, wd)
        if "hash_vocab" in out["router"]:
            _buffer_fits("weight 'tid2eid'",
                         [("router.hash_vocab", "router.hash_vocab", out["router"]["hash_vocab"]),
                          ("router.top_k", "router.top_k", out["router"]["top_k"])], 4, "i32")
        choices = _router_choices(out)
        slots = [("heads", "heads", out["heads"])] if mh else []
        slots.append(("router.top_k",
                      "router.top_k" if choices == out["router"]["top_k"] else "router choices",
                      choices))
        per_token = math.prod(v for _, _, v in slots)
        if per_token > INT32_MAX:
            field = max(slots, key=lambda f: f[2])[0]
            names = " x ".join(n for _, n, _ in slots)
            values = " x ".join(str(v) for _, _, v in slots)
            raise ValueError(f"field '{field}': at most {INT32_MAX} dispatch slots per token "
                             f"(their counts and offsets are 32-bit), got {names} = {values} "
                             f"= {per_token}")
        _buffer_fits("one token's expert rows", slots + [w if W > F else f], 4, "f32")
        return
    n = product_key_side(E)
    h = ("heads", "heads", out["heads"])
    dk = out["key_dim"]
    _buffer_fits("weight 'query'", [h, ("key_dim", "key_dim", dk), d], wbytes, wd)
    keys = [("experts", "n", n), ("key_dim", "key_dim / 2", dk // 2)]
    _buffer_fits("weight 'keys1'", ([h] if out["keys_per_head"] else []) + keys, wbytes, wd)
    _buffer_fits(f"weight '{'expert_in' if out['kind'] == 'peer' else 'values'}'", [e, d],
                 wbytes, wd)
    _buffer_fits("one token's queries", [h, ("key_dim", "key_dim", dk)], 4, "f32")
    kept = ("top_k", "min(top_k, n)", min(out["top_k"], n))
    _buffer_fits("one token's product-key candidates", [h, kept, kept], 4, "f32")


def _tiles(raw) -> Dict[str, Any]:
    """The spec's tile options: ``{option: int >= 0 or str}``.  Option names
    and values are moe-compile's to check (the options of moe-lower-to-cpu):
    it rejects a bad one with its file:line:col diagnostic."""
    t = _mapping(raw, "tiles", "tiles")
    if t is None:
        return {}
    tiles = {}
    for name, value in t.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"field 'tiles': option names must be non-empty strings, "
                             f"got {name!r}")
        path = f"tiles.{name}"
        if _is_int(value):
            if value < 0:
                raise ValueError(f"field '{path}' must be >= 0 (0: the target's default), "
                                 f"got {value}")
        elif not isinstance(value, str):
            raise ValueError(f"field '{path}' must be an integer or a string, got {value!r}")
        tiles[name] = value
    return tiles


def _swiglu_options(raw, activation, kind):
    """The ``swiglu`` mapping (clamped SwiGLU), or None when absent/null."""
    s = _mapping(raw, "swiglu", "swiglu")
    if s is None:
        return None
    _check_keys(s, _SWIGLU_KEYS, "swiglu", kind)
    if activation != "swiglu":
        raise ValueError(f"field 'swiglu' needs activation swiglu, got activation {activation!r}")
    opts = {
        "limit": _float(s, "limit", "swiglu.limit", None, positive=True),
        "alpha": _float(s, "alpha", "swiglu.alpha", 1.0, positive=True),
        "up_offset": _float(s, "up_offset", "swiglu.up_offset", 0.0),
        "clamp": _enum(s, "clamp", "swiglu.clamp", SWIGLU_CLAMPS, "before_activation"),
    }
    if opts["clamp"] == "after_activation" and opts["limit"] is None:
        raise ValueError("field 'swiglu.clamp' after_activation needs swiglu.limit")
    return opts


def _sparsemixer_options(r, router):
    """PhiMoE's sparsemixer: ``router.jitter_eps`` (only with it, kept in the
    normalised router only then, so other specs hash as before) and the
    options it does not combine with."""
    score = router["score"]
    v = r.get("jitter_eps")
    if score != "sparsemixer":
        if v is not None:
            raise ValueError(f"router.jitter_eps applies to router.score sparsemixer only, "
                             f"got score {score}")
        return
    if router["order"] != "topk_then_score":
        raise ValueError("router.score sparsemixer chooses by the logits: router.order must be "
                         "topk_then_score")
    if router["selection_bias"]:
        raise ValueError("router.score sparsemixer does not take router.selection_bias")
    if router["groups"] > 1:
        raise ValueError("router.score sparsemixer does not take router.groups")
    v = _float(r, "jitter_eps", "router.jitter_eps", SPARSEMIXER_JITTER_EPS)
    if not v >= 0:
        raise ValueError(f"field 'router.jitter_eps' must be >= 0, got {v!r}")
    router["jitter_eps"] = v


def _hash_options(r, router, kind):
    """DeepSeek-V4's hash routing: ``router.hash_vocab`` (kept in the
    normalised router only when given, so other specs hash as before).  The
    table picks the experts and the scores only weigh them, so nothing else
    may pick: no selection bias, noise, groups or sparsemixer, the order
    score_then_topk; the token ids are the layer's tokens (kind moe)."""
    if r.get("hash_vocab") is None:
        return
    vocab = _int(r, "hash_vocab", "router.hash_vocab", maximum=None)
    if not 1 <= vocab <= INT32_MAX:
        raise ValueError(f"field 'router.hash_vocab' must be in [1, {INT32_MAX}], got {vocab}")
    router["hash_vocab"] = vocab
    if kind != "moe":
        raise ValueError("router.hash_vocab needs kind moe (token ids route whole tokens)")
    if router["score"] == "sparsemixer":
        raise ValueError("router.hash_vocab does not take router.score sparsemixer")
    if router["order"] != "score_then_topk":
        raise ValueError("router.hash_vocab weighs the looked-up experts by their scores: "
                         "router.order must be score_then_topk")
    for option in ("selection_bias", "noise"):
        if router[option]:
            raise ValueError(f"router.hash_vocab does not take router.{option}")
    if router["groups"] > 1:
        raise ValueError("router.hash_vocab does not take router.groups")


def _normalize_moe(raw, out, kind):
    E = out["experts"]
    D = out["d_model"]
    if kind == "mh_moe":
        out["heads"] = _int(raw, "heads", "heads", minimum=1, required=True)
        if D % out["heads"] != 0:
            raise ValueError(f"field 'heads' must divide d_model ({D}), got {out['heads']}")
    out["expert_hidden"] = _int(raw, "expert_hidden", "expert_hidden", minimum=1,
                                required=True)
    out["activation"] = _enum(raw, "activation", "activation", ACTIVATIONS, "swiglu")
    out["swiglu"] = _swiglu_options(raw, out["activation"], kind)
    out["expert_bias"] = _bool(raw, "expert_bias", "expert_bias", False)
    out["expert_scale"] = _bool(raw, "expert_scale", "expert_scale", False)
    out["output_bias"] = _bool(raw, "output_bias", "output_bias", False)
    # Gemma 4: the experts read their own RMSNorm of the tokens (weight
    # expert_norm). Present only when set, so other specs hash as before.
    if _bool(raw, "expert_rms_norm", "expert_rms_norm", False):
        out["expert_rms_norm"] = True
        out["expert_rms_norm_eps"] = _float(raw, "expert_rms_norm_eps", "expert_rms_norm_eps",
                                            1e-6, positive=True)
    else:
        _float(raw, "expert_rms_norm_eps", "expert_rms_norm_eps", 1e-6, positive=True)

    r = _mapping(raw, "router", "router")
    if r is None:
        raise ValueError("missing required field 'router' (router.top_k is required)")
    _check_keys(r, _ROUTER_KEYS, "router", kind)
    score = _enum(r, "score", "router.score", ROUTER_SCORES, "softmax")
    router = {
        "top_k": _int(r, "top_k", "router.top_k", minimum=1, required=True),
        "score": score,
        # sparsemixer chooses by the logits: its order is topk_then_score.
        "order": _enum(r, "order", "router.order", ORDERS,
                       "topk_then_score" if score == "sparsemixer" else "score_then_topk"),
        "normalize": _bool(r, "normalize", "router.normalize", False),
        "scaling": _float(r, "scaling", "router.scaling", 1.0, positive=True),
        "selection_bias": _bool(r, "selection_bias", "router.selection_bias", False),
        "groups": _int(r, "groups", "router.groups", minimum=1, default=1),
        "topk_groups": _int(r, "topk_groups", "router.topk_groups", minimum=1, default=1),
        "group_score": _enum(r, "group_score", "router.group_score", GROUP_SCORES, "max"),
        "noise": _bool(r, "noise", "router.noise", False),
        "logit_bias": _bool(r, "logit_bias", "router.logit_bias", False),
        # Laguna: c·tanh(l / c) on the logits; None (absent or null) is none.
        "softcap": _float(r, "softcap", "router.softcap", None, positive=True),
        # Gemma 4: RMSNorm of the router's input (weight router_norm).
        "rms_norm": _bool(r, "rms_norm", "router.rms_norm", False),
        "rms_norm_eps": _float(r, "rms_norm_eps", "router.rms_norm_eps", 1e-6,
                               positive=True),
        # Llama 4: the weight scales the expert input (outputs summed as they are).
        "apply_score": _enum(r, "apply_score", "router.apply_score", ("output", "input"),
                             "output"),
    }
    _sparsemixer_options(r, router)
    _hash_options(r, router, kind)
    k, G, g = router["top_k"], router["groups"], router["topk_groups"]
    if k > E:
        raise ValueError(f"field 'router.top_k' ({k}) must be <= experts ({E})")
    if E % G != 0:
        raise ValueError(f"field 'router.groups' ({G}) must divide experts ({E})")
    if g > G:
        raise ValueError(f"field 'router.topk_groups' ({g}) must be <= router.groups ({G})")
    if k > g * (E // G):
        raise ValueError(f"field 'router.top_k' ({k}) exceeds the experts in the kept groups "
                         f"(topk_groups * experts / groups = {g * (E // G)})")
    if G > 1 and router["group_score"] == "top2_sum" and E // G < 2:
        raise ValueError("field 'router.group_score' top2_sum needs at least 2 experts "
                         f"per group (experts / groups = {E // G})")
    out["router"] = router

    if kind == "moe":
        s = _mapping(raw, "shared_experts", "shared_experts")
        s = {} if s is None else s
        _check_keys(s, _SHARED_KEYS, "shared_experts", kind)
        shared = {
            "hidden": _int(s, "hidden", "shared_experts.hidden", minimum=0, default=0),
            "gate": _bool(s, "gate", "shared_experts.gate", False),
        }
        if shared["gate"] and shared["hidden"] == 0:
            raise ValueError("field 'shared_experts.gate' is true but shared_experts.hidden "
                             "is 0 (no shared expert to gate)")
        out["shared_experts"] = shared

    c = _mapping(raw, "capacity", "capacity")
    if c is None:
        out["capacity"] = None
    else:
        _check_keys(c, _CAPACITY_KEYS, "capacity", kind)
        # Exactly one of factor (ceil(factor T k / E)), tokens (Switch's
        # fixed expert_capacity) and token_fraction (NLLB-MoE's
        # ceil(f T)); the normalised form keeps the one given.
        given = [key for key in ("factor", "tokens", "token_fraction")
                 if c.get(key) is not None]
        if not given:
            raise ValueError("missing required field 'capacity.factor' or 'capacity.tokens' "
                             "or 'capacity.token_fraction'")
        if len(given) > 1:
            names = [f"'capacity.{key}'" for key in given]
            raise ValueError(f"fields {', '.join(names[:-1])} and {names[-1]} exclude each "
                             f"other")
        if given[0] == "factor":
            size = {"factor": _float(c, "factor", "capacity.factor", positive=True)}
        elif given[0] == "tokens":
            size = {"tokens": _int(c, "tokens", "capacity.tokens", minimum=1)}
        else:
            size = {"token_fraction": _float(c, "token_fraction", "capacity.token_fraction",
                                             positive=True)}
        out["capacity"] = dict(size, **{
            "overflow": _enum(c, "overflow", "capacity.overflow", OVERFLOWS, "drop"),
            "priority": _enum(c, "priority", "capacity.priority", PRIORITIES, "token_order"),
        })
        # NLLB-MoE: each token's kept weights divided by their sum after the
        # drops; kept only when true, so other specs hash as before.
        if _bool(c, "renormalize", "capacity.renormalize", False):
            out["capacity"]["renormalize"] = True
        if "hash_vocab" in router and out["capacity"]["overflow"] != "drop":
            raise ValueError("router.hash_vocab has no fallback choices: capacity.overflow "
                             "must be drop")

    aux = raw.get("aux_losses")
    if aux is None:
        aux = []
    if isinstance(aux, str) or not isinstance(aux, (list, tuple)):
        raise ValueError(f"field 'aux_losses' must be a list, got {aux!r}")
    seen = []
    for i, name in enumerate(aux):
        if not isinstance(name, str) or name not in AUX_LOSSES:
            raise ValueError(f"field 'aux_losses[{i}]' must be one of "
                             f"{', '.join(AUX_LOSSES)}, got {name!r}")
        if name in seen:
            raise ValueError(f"field 'aux_losses[{i}]': {name!r} listed twice")
        seen.append(name)
    out["aux_losses"] = [a for a in AUX_LOSSES if a in seen]   # canonical order


def _normalize_product_key(raw, out, kind):
    E = out["experts"]
    n = product_key_side(E)
    out["heads"] = _int(raw, "heads", "heads", minimum=1, required=True)
    out["top_k"] = _int(raw, "top_k", "top_k", minimum=1, required=True)
    out["key_dim"] = _int(raw, "key_dim", "key_dim", minimum=2, required=True)
    if out["key_dim"] % 2 != 0:
        raise ValueError(f"field 'key_dim' must be even, got {out['key_dim']}")
    if out["top_k"] > n * n:
        raise ValueError(f"field 'top_k' ({out['top_k']}) must be <= experts ({n * n})")
    out["score"] = _enum(raw, "score", "score", SCORES, "softmax")
    out["query_batchnorm"] = _bool(raw, "query_batchnorm", "query_batchnorm", False)
    out["query_layernorm"] = _bool(raw, "query_layernorm", "query_layernorm", False)
    if out["query_batchnorm"] and out["query_layernorm"]:
        raise ValueError("field 'query_layernorm': at most one query norm (query_batchnorm "
                         "and query_layernorm are both true)")
    out["keys_per_head"] = _bool(raw, "keys_per_head", "keys_per_head", False)
    if kind == "peer":
        out["activation"] = _enum(raw, "activation", "activation", PEER_ACTIVATIONS, "gelu")


def load_spec(spec) -> Dict[str, Any]:
    """Load, validate and normalize a layer spec.

    ``spec`` is a path (str or PathLike) to a .yaml/.yml/.json file, YAML or
    JSON text, or a dict (a normalized spec is accepted and returned equal).
    Returns a new dict with every default filled in.  Raises ValueError naming
    the field on any problem (FileNotFoundError for a missing spec file).
    """
    raw, source = _read(spec)
    try:
        return _normalize(raw)
    except ValueError as exc:
        if source != "spec":
            raise ValueError(f"{source}: {exc}") from None
        raise


# --------------------------------------------------------------------------- #
# Weights contract
# --------------------------------------------------------------------------- #

def weight_shapes(spec) -> Dict[str, Tuple[Tuple[int, ...], str]]:
    """Exactly the weights a spec needs: ``{name: (shape, dtype)}``.

    Layout is PyTorch ``[out, in]`` stacked over experts.  Matrices have the
    spec's ``weight_dtype``; the vectors ``router_norm``, ``logit_bias``,
    ``gate_bias`` and ``bn_*`` and the expert biases ``b1``, ``b3``, ``b2`` are
    always ``f32``; hash routing's table ``tid2eid`` (expert ids, right after
    ``gate``) is ``i32``.  The order of the dict is the order of the contract.
    """
    s = load_spec(spec)
    wd = s["weight_dtype"]
    D, E = s["d_model"], s["experts"]
    shapes: Dict[str, Tuple[Tuple[int, ...], str]] = {}
    kind = s["kind"]
    if kind in ("moe", "mh_moe"):
        F = s["expert_hidden"]
        gated = s["activation"] in GATED_ACTIVATIONS
        r = s["router"]
        Dx = D
        if kind == "mh_moe":
            Dx = D // s["heads"]
            shapes["head_proj"] = ((D, D), wd)
            shapes["merge_proj"] = ((D, D), wd)
        if r["rms_norm"]:
            shapes["router_norm"] = ((Dx,), "f32")
        if s.get("expert_rms_norm"):
            shapes["expert_norm"] = ((Dx,), "f32")
        shapes["gate"] = ((E, Dx), wd)
        if "hash_vocab" in r:
            shapes["tid2eid"] = ((r["hash_vocab"], r["top_k"]), "i32")
        if r["logit_bias"]:
            shapes["logit_bias"] = ((E,), "f32")
        if r["selection_bias"]:
            shapes["gate_bias"] = ((E,), "f32")
        if r["noise"]:
            shapes["w_noise"] = ((E, Dx), wd)
        shapes["w1"] = ((E, F, Dx), wd)
        if gated:
            shapes["w3"] = ((E, F, Dx), wd)
        shapes["w2"] = ((E, Dx, F), wd)
        if s["expert_bias"]:
            shapes["b1"] = ((E, F), "f32")
            if gated:
                shapes["b3"] = ((E, F), "f32")
            shapes["b2"] = ((E, Dx), "f32")
        if s["expert_scale"]:
            shapes["expert_scale"] = ((E,), "f32")
        if kind == "moe":
            Fs = s["shared_experts"]["hidden"]
            if Fs > 0:
                shapes["shared_w1"] = ((Fs, D), wd)
                if gated:
                    shapes["shared_w3"] = ((Fs, D), wd)
                shapes["shared_w2"] = ((D, Fs), wd)
                if s["shared_experts"]["gate"]:
                    shapes["shared_gate"] = ((1, D), wd)
        if s["output_bias"]:
            shapes["output_bias"] = ((D,), "f32")
    else:
        h, dk = s["heads"], s["key_dim"]
        n = product_key_side(E)
        shapes["query"] = ((h * dk, D), wd)
        if s["query_batchnorm"]:
            for b in ("bn_mean", "bn_var", "bn_weight", "bn_bias"):
                shapes[b] = ((h * dk,), "f32")
        if s["query_layernorm"]:
            for b in ("ln_weight", "ln_bias"):
                shapes[b] = ((h * dk,), "f32")
        keys = (h, n, dk // 2) if s["keys_per_head"] else (n, dk // 2)
        shapes["keys1"] = (keys, wd)
        shapes["keys2"] = (keys, wd)
        if kind == "peer":
            shapes["expert_in"] = ((E, D), wd)
            shapes["expert_out"] = ((E, D), wd)
        else:
            shapes["values"] = ((E, D), wd)
    return shapes


def spec_hash(spec) -> str:
    """Stable sha256 (hex) of the normalized spec, for the compile cache."""
    s = load_spec(spec)
    text = json.dumps(s, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
