"""Independent NumPy reference of every layer kind (the oracle for the compiler).

Written from docs/semantics.md, not from any compiler code.  Inputs are
float32 (weights are first rounded to the spec's ``weight_dtype``); all
arithmetic is float64 (but for the threshold test of sparsemixer's mask, made
in float32 as the layer and transformers make it); results are returned as
float32.  Clarity comes before speed: every step of the semantics is a small
function that can be tested on its own.

Entry points: :func:`forward` (all outputs), :func:`layer_output`,
:func:`route`, :func:`aux_losses`; per kind :func:`moe`, :func:`mh_moe`,
:func:`peer`, :func:`pkm`.
"""

from __future__ import annotations

import math
from typing import Dict, NamedTuple, Optional, Tuple

import numpy as np

from . import rng
from .spec import GATED_ACTIVATIONS, load_spec, weight_shapes

__all__ = [
    "round_to_dtype", "sigmoid", "softplus", "softmax", "gelu", "silu", "relu",
    "gelu_tanh", "relu2",
    "activation", "score_fn", "rank_order", "topk", "group_exclusion", "noisy_logits",
    "route_tokens", "hash_route", "sparsemixer_weights", "capacity", "fixed_capacity",
    "fraction_capacity", "spec_capacity", "Dispatch", "dispatch", "expert_ffn",
    "load_balance_loss", "importance_loss", "z_loss",
    "product_key_topk", "product_key_topk_bruteforce",
    "moe", "mh_moe", "peer", "pkm",
    "forward", "layer_output", "route", "aux_losses",
    "BN_EPS", "LN_EPS", "IMPORTANCE_EPS",
]

BN_EPS = 1e-5          # query BatchNorm epsilon (PEER / PKM)
LN_EPS = 1e-5          # query LayerNorm epsilon (PKM)
IMPORTANCE_EPS = 1e-10  # importance loss: var / (mean^2 + eps)

_F64 = np.float64


# --------------------------------------------------------------------------- #
# Dtypes
# --------------------------------------------------------------------------- #

_DTYPE_ALIASES = {"f32": "f32", "float32": "f32", "bf16": "bf16", "bfloat16": "bf16",
                  "f16": "f16", "float16": "f16"}


def round_to_dtype(a, dtype: str) -> np.ndarray:
    """Round an array to ``dtype`` (f32 | bf16 | f16); returns float32 values.

    The input is first converted to float32 (a float64 array is rounded to
    nearest even).  bf16: round-to-nearest-even on the float32 bit pattern,
    keeping the top 16 bits (NaN stays NaN, overflow goes to +-inf).  f16:
    numpy's float16 conversion (round-to-nearest-even, overflow to +-inf).
    A uint16 array given for bf16 is taken as raw bf16 bit patterns.
    """
    dt = _DTYPE_ALIASES.get(dtype)
    if dt is None:
        raise ValueError(f"unknown dtype {dtype!r} (expected f32, bf16 or f16)")
    a = np.asarray(a)
    if dt == "bf16" and a.dtype == np.uint16:
        return (a.astype(np.uint32) << np.uint32(16)).view(np.float32)
    a32 = np.array(a, dtype=np.float32, copy=True)
    if dt == "f32":
        return a32
    if dt == "f16":
        with np.errstate(over="ignore"):
            return a32.astype(np.float16).astype(np.float32)
    bits = a32.view(np.uint32).astype(np.uint64)
    lsb = (bits >> np.uint64(16)) & np.uint64(1)
    rounded = ((bits + np.uint64(0x7FFF) + lsb) >> np.uint64(16)) << np.uint64(16)
    # NaN: keep the sign and top payload bits and force a quiet NaN, so it can
    # neither round to infinity nor lose its NaN-ness.
    nan_bits = ((bits >> np.uint64(16)) | np.uint64(0x0040)) << np.uint64(16)
    out = np.where(np.isnan(a32), nan_bits, rounded).astype(np.uint32)
    return out.view(np.float32)


def _as_f64(a) -> np.ndarray:
    return np.asarray(a, dtype=_F64)


# --------------------------------------------------------------------------- #
# Elementwise functions (float64)
# --------------------------------------------------------------------------- #

def sigmoid(z):
    """sigma(z) = 1 / (1 + exp(-z))."""
    z = _as_f64(z)
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))


def softplus(z):
    """softplus(z) = log1p(exp(-|z|)) + max(z, 0)."""
    z = _as_f64(z)
    return np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0.0)


def softmax(z, axis: int = -1):
    """exp(z - m) / sum exp(z - m), m the max along ``axis`` (NaN propagates)."""
    z = _as_f64(z)
    with np.errstate(invalid="ignore"):
        m = np.max(z, axis=axis, keepdims=True) if z.shape[axis] else 0.0
        e = np.exp(z - m)
        return e / np.sum(e, axis=axis, keepdims=True)


_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(z):
    """Exact GELU: 0.5 z (1 + erf(z / sqrt 2))."""
    z = _as_f64(z)
    with np.errstate(invalid="ignore"):
        return 0.5 * z * (1.0 + _erf(z / math.sqrt(2.0)).astype(_F64))


def silu(z):
    """SiLU: z * sigma(z)."""
    z = _as_f64(z)
    with np.errstate(invalid="ignore"):
        return z * sigmoid(z)


def relu(z):
    """max(z, 0); NaN stays NaN."""
    return np.maximum(_as_f64(z), 0.0)


def gelu_tanh(z):
    """Tanh-approximated GELU: 0.5 z (1 + tanh(sqrt(2 / pi) (z + 0.044715 z^3)))."""
    z = _as_f64(z)
    with np.errstate(invalid="ignore", over="ignore"):
        return 0.5 * z * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3)))


def relu2(z):
    """relu(z)^2 (squared ReLU); NaN stays NaN."""
    r = relu(z)
    with np.errstate(over="ignore"):
        return r * r


def activation(z, name: str):
    """The pointwise nonlinearity of an activation name.

    swiglu uses silu, geglu uses gelu and geglu_tanh uses gelu_tanh on the w1
    branch (the product with the w3 branch happens in :func:`expert_ffn`).
    """
    fn = {"gelu": gelu, "geglu": gelu, "silu": silu, "swiglu": silu, "relu": relu,
          "gelu_tanh": gelu_tanh, "geglu_tanh": gelu_tanh, "relu2": relu2}.get(name)
    if fn is None:
        raise ValueError(f"unknown activation {name!r}")
    return fn(z)


# --------------------------------------------------------------------------- #
# Ranking and top-k
# --------------------------------------------------------------------------- #

def rank_order(values, excluded=None, tiebreak=None) -> np.ndarray:
    """Permutation that sorts the last axis by the ranking rule.

    a ranks ahead of b iff a > b, or a == b and tiebreak_a < tiebreak_b
    (tiebreak defaults to the position).  NaN ranks below every number
    (including -inf); NaN vs NaN by tiebreak.  Entries marked ``excluded``
    rank below everything, NaN included.  Implemented as a stable lexicographic
    sort on (category, -value, tiebreak), category = 0 number, 1 NaN,
    2 excluded.  +0.0 and -0.0 are equal.
    """
    v = _as_f64(values)
    nan = np.isnan(v)
    category = nan.astype(np.int8)
    if excluded is not None:
        category = np.where(np.broadcast_to(excluded, v.shape), np.int8(2), category)
    neg = np.where(nan, 0.0, -v)
    if tiebreak is None:
        tiebreak = np.broadcast_to(np.arange(v.shape[-1]), v.shape)
    else:
        tiebreak = np.broadcast_to(np.asarray(tiebreak), v.shape)
    # np.lexsort: the LAST key is the primary one.
    return np.lexsort((tiebreak, neg, category), axis=-1)


def topk(values, k: int, excluded=None, tiebreak=None) -> Tuple[np.ndarray, np.ndarray]:
    """The k first entries of the last axis under the ranking rule.

    Returns (values, positions) each [..., k]; positions are int64 indices
    into the last axis, in rank order.
    """
    values = _as_f64(values)
    if k > values.shape[-1]:
        raise ValueError(f"topk: k={k} exceeds the axis length {values.shape[-1]}")
    idx = rank_order(values, excluded=excluded, tiebreak=tiebreak)[..., :k]
    return np.take_along_axis(values, idx, axis=-1), idx.astype(np.int64)


# --------------------------------------------------------------------------- #
# Router
# --------------------------------------------------------------------------- #

def sqrt_softplus(z):
    """DeepSeek-V4's router score sqrt(softplus(z))."""
    return np.sqrt(softplus(z))


def elementwise_score(z, score: str):
    """The elementwise router scores (every score but softmax)."""
    if score == "sigmoid":
        return sigmoid(z)
    if score == "sqrt_softplus":
        return sqrt_softplus(z)
    raise ValueError(f"unknown elementwise score function {score!r}")


def softcap(logits, cap: float):
    """Laguna's tanh soft-cap of the router logits: cap * tanh(logits / cap)."""
    return cap * np.tanh(_as_f64(logits) / cap)


def sparsemixer_weights(logits, ids, jitter_eps: float) -> np.ndarray:
    """PhiMoE's sparsemixer weight of each chosen column (eval mode).

    ``ids`` [T, C]: the experts ranked by the logits ``l``.  Column i, with
    m = l[s_i]: expert j is masked when (m - l_j) / max(|l_j|, m) > 2·jitter_eps,
    evaluated in f32 as transformers does (a NaN |l_j| or m leaves it
    unmasked); the weight is 1 / sum exp(l_j - m) over the unmasked j not
    ranked ahead of s_i (s_i itself among them).  For C = 2 this is
    transformers' ``sparsemixer(l, jitter_eps, training=False)``; each further
    column repeats its second step.
    """
    l = _as_f64(logits)
    ids = np.asarray(ids, dtype=np.int64)
    T, C = ids.shape
    l32 = l.astype(np.float32)
    thr = np.float32(2 * jitter_eps)
    rows = np.arange(T)
    ahead = np.zeros(l.shape, dtype=bool)
    raw = np.zeros((T, C), dtype=_F64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for i in range(C):
            s = ids[:, i]
            m32 = l32[rows, s][:, None]
            # torch.clamp(|l|, min=m) is np.maximum: NaN on either side stays NaN.
            masked = (m32 - l32) / np.maximum(np.abs(l32), m32) > thr
            kept = ~masked & ~ahead
            e = np.where(kept, np.exp(l - l[rows, s][:, None]), 0.0)
            raw[:, i] = 1.0 / np.sum(e, axis=1)
            ahead[rows, s] = True
    return raw


def score_fn(logits, score: str) -> np.ndarray:
    """Router scores over all experts: softmax of each row, or elementwise
    sigmoid or sqrt(softplus)."""
    if score == "softmax":
        return softmax(logits, axis=-1)
    if score in ("sigmoid", "sqrt_softplus"):
        return elementwise_score(_as_f64(logits), score)
    raise ValueError(f"unknown score function {score!r}")


def group_exclusion(key, groups: int, topk_groups: int, group_score: str) -> np.ndarray:
    """Group-limited routing: boolean mask [T, E] of experts outside the kept groups.

    Experts form ``groups`` contiguous groups of E/G.  A group's score is its
    first-ranked key (``max``) or the sum of its two first-ranked keys
    (``top2_sum``), ranking by the ranking rule (so a NaN key only counts when
    a group has no other).  The ``topk_groups`` best groups by the ranking rule
    (ties -> lower group index) are kept.
    """
    key = _as_f64(key)
    T, E = key.shape
    if groups == 1:
        return np.zeros((T, E), dtype=bool)
    size = E // groups
    per_group = key.reshape(T, groups, size)
    if group_score == "max":
        gscore = topk(per_group, 1)[0][..., 0]
    elif group_score == "top2_sum":
        top2 = topk(per_group, 2)[0]
        gscore = top2[..., 0] + top2[..., 1]
    else:
        raise ValueError(f"unknown group_score {group_score!r}")
    kept = topk(gscore, topk_groups)[1]                  # [T, topk_groups]
    keep = np.zeros((T, groups), dtype=bool)
    np.put_along_axis(keep, kept, True, axis=1)
    return ~np.repeat(keep, size, axis=1)


def noisy_logits(logits, x, w_noise, seed) -> np.ndarray:
    """l + n * softplus(x . w_noise^T), n = rng.normal(seed, T, E) (float32 samples)."""
    logits = _as_f64(logits)
    T, E = logits.shape
    n = rng.normal(seed, T, E).astype(_F64)
    return logits + n * softplus(_as_f64(x) @ _as_f64(w_noise).T)


def hash_route(logits, router: dict, token_ids, tid2eid):
    """DeepSeek-V4's hash routing: ids[t, j] = tid2eid[token_ids[t], j] for
    j < k, weighted by the scores of those experts (``raw_j = s[t, ids_j]``,
    as score_then_topk weighs), then normalize (a raw weight of 0 stays 0)
    and scaling.  A token id outside [0, hash_vocab) or a table entry outside
    [0, E) gives id -1 and weight 0 (the dispatch drops it).  Returns (ids
    [T, k] int64, weights [T, k] float64)."""
    l = _as_f64(logits)
    T, E = l.shape
    table = np.asarray(tid2eid, dtype=np.int64)
    tokens = np.asarray(token_ids, dtype=np.int64).reshape(T)
    V, k = table.shape
    known = (tokens >= 0) & (tokens < V)
    ids = np.where(known[:, None], table[np.where(known, tokens, 0)], -1)
    ids = np.where((ids >= 0) & (ids < E), ids, -1)
    valid = ids >= 0
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        s = score_fn(l, router["score"])
        raw = np.where(valid, np.take_along_axis(s, np.where(valid, ids, 0), axis=1), 0.0)
        if router["normalize"]:
            # A token whose every choice is dropped sums to 0: its weights stay 0.
            raw = np.where(raw == 0.0, 0.0, raw / np.sum(raw, axis=1, keepdims=True))
        weights = router["scaling"] * raw
    return ids, weights


def route_tokens(logits, router: dict, gate_bias=None, fallbacks: bool = False,
                 token_ids=None, tid2eid=None):
    """Top-k routing of every token.

    ``router`` is a normalized ``spec["router"]``.  Returns (ids, weights):
    ids [T, C] int64 experts in rank order, weights [T, C] float64 final
    weights (after normalize and scaling).  C = k, or with ``fallbacks`` the
    next_choice width min(2k, experts available in the kept groups); columns
    k..C-1 are the fallback choices, weighted with the top-k normaliser
    (sparsemixer: each column by :func:`sparsemixer_weights`, before it).
    A hash router (``router.hash_vocab``) looks the experts up by
    ``token_ids`` in ``tid2eid`` instead (:func:`hash_route`; no fallbacks).
    """
    if "hash_vocab" in router:
        if token_ids is None or tid2eid is None:
            raise ValueError("router.hash_vocab routes by token id: token_ids and tid2eid "
                             "are needed")
        return hash_route(logits, router, token_ids, tid2eid)
    l = _as_f64(logits)
    T, E = l.shape
    k = router["top_k"]
    bias = None
    if router["selection_bias"]:
        if gate_bias is None:
            raise ValueError("router.selection_bias needs gate_bias")
        bias = _as_f64(gate_bias)

    if router["order"] == "score_then_topk":
        s = score_fn(l, router["score"])
        key = s + bias if bias is not None else s
    else:
        s = None
        key = l + bias if bias is not None else l

    G, g = router["groups"], router["topk_groups"]
    excluded = group_exclusion(key, G, g, router["group_score"])
    available = g * (E // G)
    C = min(2 * k, available) if fallbacks else k
    ids = topk(key, C, excluded=excluded)[1]

    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if s is not None:                                   # score_then_topk
            raw = np.take_along_axis(s, ids, axis=1)
        elif router["score"] == "sparsemixer":              # PhiMoE, by the logits
            raw = sparsemixer_weights(l, ids, router["jitter_eps"])
        elif router["score"] != "softmax":                  # topk_then_score, elementwise
            raw = elementwise_score(np.take_along_axis(l, ids, axis=1), router["score"])
        else:                                               # topk_then_score, softmax
            lc = np.take_along_axis(l, ids, axis=1)
            top = lc[:, :k]
            m = np.max(top, axis=1, keepdims=True) if T else np.zeros((0, 1))
            z = np.sum(np.exp(top - m), axis=1, keepdims=True)
            raw = np.exp(lc - m) / z
        if router["normalize"]:
            raw = raw / np.sum(raw[:, :k], axis=1, keepdims=True)
        weights = router["scaling"] * raw
    return ids, weights


# --------------------------------------------------------------------------- #
# Capacity and dispatch
# --------------------------------------------------------------------------- #

def fixed_capacity(capacity_tokens: int, tokens: int, k: int) -> int:
    """Slots per expert of a fixed capacity (Switch's expert_capacity),
    clamped to tokens * k like the factor's."""
    return min(int(capacity_tokens), tokens * k)


def fraction_capacity(fraction: float, tokens: int, k: int) -> int:
    """Slots per expert of a capacity in a fraction of the tokens (NLLB-MoE's
    math.ceil(moe_eval_capacity_token_fraction * nb_tokens), float64),
    clamped to tokens * k like the factor's."""
    c = fraction * tokens
    limit = tokens * k
    return limit if not c < limit else int(math.ceil(c))


def spec_capacity(cap_spec: dict, tokens: int, k: int, experts: int) -> int:
    """Slots per expert of a normalised ``spec["capacity"]``."""
    if "tokens" in cap_spec:
        return fixed_capacity(cap_spec["tokens"], tokens, k)
    if "token_fraction" in cap_spec:
        return fraction_capacity(cap_spec["token_fraction"], tokens, k)
    return capacity(cap_spec["factor"], tokens, k, experts)


def capacity(factor: float, tokens: int, k: int, experts: int) -> int:
    """Slots per expert: math.ceil(factor * tokens * k / experts) (float64, left to
    right), clamped to tokens * k.

    No expert can receive more than tokens * k assignments, so the clamp never
    changes a dispatch; it keeps a huge factor (whose product overflows to inf)
    an integer.
    """
    c = factor * tokens * k / experts
    limit = tokens * k
    return limit if not c < limit else int(math.ceil(c))


class Dispatch(NamedTuple):
    """Result of :func:`dispatch`.

    expert [T, k] int64: the expert each assignment (t, j) landed on (-1 dropped);
    slot [T, k] int64: its position in that expert's buffer (arrival order, -1 dropped);
    weight [T, k] float64: its weight (0 when dropped);
    column [T, k] int64: the routing column used (j, a fallback column >= k, or -1);
    counts [E] int64: assignments that got a slot, per expert;
    dropped int: dropped assignments.
    """
    expert: np.ndarray
    slot: np.ndarray
    weight: np.ndarray
    column: np.ndarray
    counts: np.ndarray
    dropped: int


def priority_order(weights, priority: str) -> np.ndarray:
    """Token visiting order: token_order, or batch_prioritized (first-choice weight
    w[t, 0] descending by the ranking rule, ties -> lower token index)."""
    weights = _as_f64(weights)
    T = weights.shape[0]
    if priority == "token_order":
        return np.arange(T)
    if priority == "batch_prioritized":
        return rank_order(weights[:, 0])
    raise ValueError(f"unknown priority {priority!r}")


RENORMALIZE_MIN = 2.0 ** -23   # NLLB-MoE's clamp of the sum: torch.finfo(float32).eps


def dispatch(ids, weights, k: int, experts: int, capacity: Optional[int] = None,
             overflow: str = "drop", priority: str = "token_order",
             renormalize: bool = False) -> Dispatch:
    """Assign routing choices to expert slots (GShard order).

    ids/weights [T, C] from :func:`route_tokens` (C >= k; columns >= k are
    next_choice fallbacks).  For j = 0..k-1, for each token in priority order,
    (t, j) takes a slot of e = ids[t, j] if count[e] < capacity; otherwise it
    overflows: ``drop`` drops it; ``next_choice`` takes the token's first
    fallback column (k..C-1, rank order) not used by this token before whose
    expert has room, with that column's weight, else drops it.  An id of -1
    (hash routing's unknown token or table entry) is dropped.
    ``capacity=None`` means unlimited (dropless).  ``renormalize``
    (NLLB-MoE): then each token's kept weights are divided by
    max(their sum over j = 0..k-1, 2^-23); dropped ones stay 0.
    """
    ids = np.asarray(ids, dtype=np.int64)
    weights = _as_f64(weights)
    T, C = ids.shape
    cap = math.inf if capacity is None else capacity
    if overflow not in ("drop", "next_choice"):
        raise ValueError(f"unknown overflow {overflow!r}")
    expert = np.full((T, k), -1, dtype=np.int64)
    slot = np.full((T, k), -1, dtype=np.int64)
    column = np.full((T, k), -1, dtype=np.int64)
    weight = np.zeros((T, k), dtype=_F64)
    counts = np.zeros(experts, dtype=np.int64)
    used = np.zeros((T, C), dtype=bool)
    dropped = 0
    order = priority_order(weights, priority) if T else np.arange(0)

    def take(t, j, c):
        e = ids[t, c]
        expert[t, j], slot[t, j], column[t, j] = e, counts[e], c
        weight[t, j] = weights[t, c]
        counts[e] += 1
        used[t, c] = True

    for j in range(k):
        for t in order:
            if ids[t, j] < 0:
                dropped += 1
                continue
            if counts[ids[t, j]] < cap:
                take(t, j, j)
                continue
            if overflow == "next_choice":
                for c in range(k, C):
                    if not used[t, c] and counts[ids[t, c]] < cap:
                        take(t, j, c)
                        break
                else:
                    dropped += 1
            else:
                dropped += 1
    if renormalize:
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            total = np.zeros(T, dtype=_F64)
            for j in range(k):
                total = total + weight[:, j]
            weight = weight / np.maximum(total, RENORMALIZE_MIN)[:, None]
    return Dispatch(expert, slot, weight, column, counts, dropped)


# --------------------------------------------------------------------------- #
# Experts
# --------------------------------------------------------------------------- #

def expert_ffn(x, w1, w2, w3=None, activation_name: str = "swiglu",
               swiglu: Optional[dict] = None, b1=None, b3=None, b2=None) -> np.ndarray:
    """One expert MLP on rows x [N, D]: w1 [F, D], w3 [F, D] (gated only), w2 [D, F].

    gated (swiglu, geglu, geglu_tanh): w2 . (act(w1 . x) * (w3 . x)); otherwise
    w2 . act(w1 . x).  ``swiglu`` (the spec's options, swiglu only): with
    g = w1 . x, u = w3 . x and L = limit, the hidden value is
    g' sigma(alpha g') * (clip(u, -L, L) + up_offset) with g' = min(g, L), or
    min(g sigma(alpha g), L) for the gate branch when clamp is after_activation.
    Biases (``expert_bias``): b1 [F] is added to w1 . x and b3 [F] to w3 . x
    before the activation, b2 [D] to the output. (``expert_scale`` multiplies
    the result in the caller.)
    """
    x = _as_f64(x)
    g = x @ _as_f64(w1).T
    if b1 is not None:
        g = g + _as_f64(b1)
    if swiglu is None:
        h = activation(g, activation_name)
    else:
        if activation_name != "swiglu":
            raise ValueError("swiglu options need activation swiglu")
        limit, after = swiglu["limit"], swiglu["clamp"] == "after_activation"
        with np.errstate(invalid="ignore", over="ignore"):
            if limit is not None and not after:
                g = np.minimum(g, limit)
            h = g * sigmoid(swiglu["alpha"] * g)
            if limit is not None and after:
                h = np.minimum(h, limit)
    if activation_name in GATED_ACTIVATIONS:
        if w3 is None:
            raise ValueError(f"activation {activation_name} needs w3")
        u = x @ _as_f64(w3).T
        if b3 is not None:
            u = u + _as_f64(b3)
        if swiglu is not None:
            if swiglu["limit"] is not None:
                u = np.minimum(np.maximum(u, -swiglu["limit"]), swiglu["limit"])
            u = u + swiglu["up_offset"]
        h = h * u
    y = h @ _as_f64(w2).T
    return y if b2 is None else y + _as_f64(b2)


# --------------------------------------------------------------------------- #
# Auxiliary losses
# --------------------------------------------------------------------------- #

def load_balance_loss(logits, ids, experts: int, score: str = "softmax") -> float:
    """Switch loss E * sum_i f_i P_i.

    f_i = (# top-k choices equal to i) / (T k), pre-capacity (an id of -1, a
    choice hash routing drops, counts for no expert); P_i = mean_t p[t, i]
    with p = softmax(clean logits), or for the elementwise scores (sigmoid,
    sqrt_softplus) s(l) / sum_e s(l).
    """
    l = _as_f64(logits)
    ids = np.asarray(ids)
    T, k = ids.shape
    with np.errstate(invalid="ignore", divide="ignore"):
        chosen = ids.ravel()
        f = np.bincount(chosen[chosen >= 0], minlength=experts).astype(_F64) / (T * k)
        if score == "softmax":
            p = softmax(l, axis=1)
        else:
            sg = elementwise_score(l, score)
            p = sg / np.sum(sg, axis=1, keepdims=True)
        P = np.sum(p, axis=0) / T
        return float(experts * np.sum(f * P))


def importance_loss(ids, weights, experts: int) -> float:
    """CV^2 of importance: var(imp) / (mean(imp)^2 + 1e-10), population variance,
    imp_i = sum over (t, j) with ids[t, j] = i of weights[t, j] (ids of -1 skipped)."""
    imp = np.zeros(experts, dtype=_F64)
    ids, weights = np.asarray(ids).ravel(), _as_f64(weights).ravel()
    np.add.at(imp, ids[ids >= 0], weights[ids >= 0])
    mean = np.mean(imp)
    return float(np.mean((imp - mean) ** 2) / (mean ** 2 + IMPORTANCE_EPS))


def z_loss(logits) -> float:
    """mean_t (logsumexp_e l[t, e])^2, logsumexp = m + log sum exp(l - m)."""
    l = _as_f64(logits)
    with np.errstate(invalid="ignore", divide="ignore"):
        if l.shape[0] == 0:
            return float("nan")
        m = np.max(l, axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.sum(np.exp(l - m), axis=1))
        return float(np.mean(lse ** 2))


# --------------------------------------------------------------------------- #
# Product keys (PEER / PKM)
# --------------------------------------------------------------------------- #

def product_key_topk(q1, q2, keys1, keys2, k: int):
    """Two-stage product-key search.

    s1 = keys1 . q1, s2 = keys2 . q2 (per token); k' = min(k, n); top-k' of s1
    (i) and of s2 (j); top-k of the k' x k' sums s1[i] + s2[j] by the ranking
    rule with ties -> lower expert id i*n + j.  q1, q2 [T, d/2]; keys [n, d/2].
    Returns (scores [T, k] float64, ids [T, k] int64).
    """
    s1 = _as_f64(q1) @ _as_f64(keys1).T           # [T, n]
    s2 = _as_f64(q2) @ _as_f64(keys2).T
    T, n = s1.shape
    kp = min(k, n)
    v1, i = topk(s1, kp)
    v2, j = topk(s2, kp)
    cand = (v1[:, :, None] + v2[:, None, :]).reshape(T, kp * kp)
    cand_id = (i[:, :, None] * n + j[:, None, :]).reshape(T, kp * kp)
    scores, pos = topk(cand, k, tiebreak=cand_id)
    return scores, np.take_along_axis(cand_id, pos, axis=1)


def product_key_topk_bruteforce(q1, q2, keys1, keys2, k: int):
    """Top-k over all n*n sums s1[i] + s2[j] (expert id i*n + j). Test oracle only."""
    s1 = _as_f64(q1) @ _as_f64(keys1).T
    s2 = _as_f64(q2) @ _as_f64(keys2).T
    T, n = s1.shape
    full = (s1[:, :, None] + s2[:, None, :]).reshape(T, n * n)
    return topk(full, k)


def _query(spec, x, W) -> np.ndarray:
    q = x @ W["query"].T
    if spec["query_batchnorm"]:
        q = (q - W["bn_mean"]) / np.sqrt(W["bn_var"] + BN_EPS) * W["bn_weight"] + W["bn_bias"]
    if spec["query_layernorm"]:
        # Over each token's h * d_k channels: mean, then the biased variance.
        mean = q.mean(axis=1, keepdims=True)
        var = ((q - mean) ** 2).mean(axis=1, keepdims=True)
        q = (q - mean) / np.sqrt(var + LN_EPS) * W["ln_weight"] + W["ln_bias"]
    return q


def _product_key_route(spec, x, W):
    """ids [T, h, k] int64, weights [T, h, k] float64."""
    T = x.shape[0]
    h, dk, k = spec["heads"], spec["key_dim"], spec["top_k"]
    q = _query(spec, x, W)
    ids = np.zeros((T, h, k), dtype=np.int64)
    weights = np.zeros((T, h, k), dtype=_F64)
    for head in range(h):
        qh = q[:, head * dk:(head + 1) * dk]
        keys1, keys2 = ((W["keys1"][head], W["keys2"][head]) if spec["keys_per_head"]
                        else (W["keys1"], W["keys2"]))
        scores, idx = product_key_topk(qh[:, :dk // 2], qh[:, dk // 2:], keys1, keys2, k)
        ids[:, head] = idx
        weights[:, head] = score_fn(scores, spec["score"])
    return ids, weights


def _product_key_layer(spec, x, W):
    ids, g = _product_key_route(spec, x, W)
    T, D = x.shape
    out = np.zeros((T, D), dtype=_F64)
    for head in range(spec["heads"]):
        for j in range(spec["top_k"]):
            e = ids[:, head, j]
            if spec["kind"] == "peer":
                a = activation(np.sum(W["expert_in"][e] * x, axis=1), spec["activation"])
                out += (g[:, head, j] * a)[:, None] * W["expert_out"][e]
            else:
                out += g[:, head, j][:, None] * W["values"][e]
    return out, ids, g


# --------------------------------------------------------------------------- #
# Routed MoE core (moe and the sub-tokens of mh_moe)
# --------------------------------------------------------------------------- #

class _Routed(NamedTuple):
    out: np.ndarray            # [T, D] float64 (routed part only)
    ids: np.ndarray            # [T, k] int64, pre-capacity
    weights: np.ndarray        # [T, k] float64, pre-capacity
    counts: np.ndarray
    dropped: int
    losses: Dict[str, float]
    logits: np.ndarray         # clean logits


def rms_norm(x, weight, eps: float) -> np.ndarray:
    """Gemma 4's router input norm: x * (mean(x^2) + eps)^-1/2 * weight, per row."""
    x = _as_f64(x)
    return x * (np.mean(x * x, axis=1, keepdims=True) + eps) ** -0.5 * _as_f64(weight)


def _expert_input(spec, x, W):
    """What the experts read: Gemma 4 normalises it apart from the router."""
    if spec.get("expert_rms_norm"):
        return rms_norm(x, W["expert_norm"], spec["expert_rms_norm_eps"])
    return x


def _router_logits(spec, x, W, seed):
    if spec["router"]["rms_norm"]:
        # Only the router sees the normalised tokens (its noise projection too).
        x = rms_norm(x, W["router_norm"], spec["router"]["rms_norm_eps"])
    clean = x @ W["gate"].T
    if spec["router"]["logit_bias"]:
        # GPT-OSS: part of the logits (F.linear's bias), so aux losses see it.
        clean = clean + W["logit_bias"]
    if spec["router"]["softcap"] is not None:
        # Laguna: the capped logits are the router's logits (aux losses too).
        clean = softcap(clean, spec["router"]["softcap"])
    if spec["router"]["noise"]:
        if seed is None:
            raise ValueError("router.noise is true: a seed is required")
        return clean, noisy_logits(clean, x, W["w_noise"], seed)
    return clean, clean


def _losses(spec, clean, ids, weights) -> Dict[str, float]:
    E = spec["experts"]
    out = {}
    # PhiMoE's load-balancing loss takes the softmax of a sparsemixer's logits.
    score = spec["router"]["score"]
    score = "softmax" if score == "sparsemixer" else score
    for name in spec["aux_losses"]:
        if name == "load_balance":
            out[name] = load_balance_loss(clean, ids, E, score)
        elif name == "importance":
            out[name] = importance_loss(ids, weights, E)
        elif name == "z_loss":
            out[name] = z_loss(clean)
    return out


def _routed_moe(spec, x, W, seed, start=None, token_ids=None) -> _Routed:
    """The routed experts; their weighted outputs are added to ``start`` (the
    shared experts' output) in ascending expert id per token."""
    r, cap_spec = spec["router"], spec["capacity"]
    T = x.shape[0]
    E, k = spec["experts"], r["top_k"]
    clean, logits = _router_logits(spec, x, W, seed)
    x = _expert_input(spec, x, W)
    next_choice = cap_spec is not None and cap_spec["overflow"] == "next_choice"
    ids_all, w_all = route_tokens(logits, r, W.get("gate_bias"), fallbacks=next_choice,
                                  token_ids=token_ids, tid2eid=W.get("tid2eid"))
    ids, weights = ids_all[:, :k], w_all[:, :k]
    losses = _losses(spec, clean, ids, weights)
    if cap_spec is None:
        d = dispatch(ids, weights, k, E)
    else:
        d = dispatch(ids_all, w_all, k, E, spec_capacity(cap_spec, T, k, E),
                     cap_spec["overflow"], cap_spec["priority"],
                     cap_spec.get("renormalize", False))
    contrib = np.zeros((k,) + x.shape, dtype=_F64)          # [k, T, D]
    for e in range(E):
        tt, jj = np.nonzero(d.expert == e)                   # assignments kept on e
        if tt.size == 0:
            continue
        w = d.weight[tt, jj][:, None]
        # Llama 4 (apply_score input): the weight scales the expert's input,
        # the output is summed as it is.
        on_input = r["apply_score"] == "input"
        y = expert_ffn(x[tt] * w if on_input else x[tt], W["w1"][e], W["w2"][e],
                       W["w3"][e] if "w3" in W else None, spec["activation"],
                       spec.get("swiglu"),
                       *(W[b][e] if b in W else None for b in ("b1", "b3", "b2")))
        if "expert_scale" in W:
            y = W["expert_scale"][e] * y
        contrib[jj, tt] = y if on_input else w * y
    return _Routed(_sum_by_expert(contrib, d.expert, E, start), ids, weights, d.counts,
                   d.dropped, losses, clean)


def _sum_by_expert(contrib, expert, E, start=None) -> np.ndarray:
    """``start + Σ_j contrib[j, t]`` per token, the kept assignments taken in
    ascending expert id (the expert-major order of the dispatch plan; dropped
    ones, expert -1, contribute zero)."""
    k, T = expert.shape[1], expert.shape[0]
    order = np.argsort(np.where(expert < 0, E, expert), axis=1, kind="stable")
    out = np.zeros(contrib.shape[1:], dtype=_F64) if start is None else start
    tokens = np.arange(T)
    for r in range(k):
        out = out + contrib[order[:, r], tokens]
    return out


def _shared(spec, x, W) -> np.ndarray:
    sh = spec["shared_experts"]
    if sh["hidden"] == 0:
        return np.zeros(x.shape, dtype=_F64)
    y = expert_ffn(x, W["shared_w1"], W["shared_w2"], W.get("shared_w3"), spec["activation"],
                   spec.get("swiglu"))
    if sh["gate"]:
        y = sigmoid(x @ W["shared_gate"].T) * y             # [T, 1] * [T, D]
    return y


# --------------------------------------------------------------------------- #
# Inputs
# --------------------------------------------------------------------------- #

_ROUTER_WEIGHTS = {
    "moe": ("router_norm", "gate", "tid2eid", "logit_bias", "gate_bias", "w_noise"),
    "mh_moe": ("head_proj", "router_norm", "gate", "logit_bias", "gate_bias", "w_noise"),
    "peer": ("query", "bn_mean", "bn_var", "bn_weight", "bn_bias", "ln_weight", "ln_bias",
             "keys1", "keys2"),
    "pkm": ("query", "bn_mean", "bn_var", "bn_weight", "bn_bias", "ln_weight", "ln_bias",
            "keys1", "keys2"),
}


def _prepare(spec, x, weights, router_only=False):
    """Validate and convert inputs: x -> float64 [T, D]; weights rounded to their
    dtype then float64.  Unknown or missing weights and wrong shapes raise."""
    shapes = weight_shapes(spec)
    for name in weights:
        if name not in shapes:
            raise ValueError(f"unknown weight '{name}' for spec {spec['name']} "
                             f"(expected: {', '.join(shapes)})")
    needed = [n for n in shapes if not router_only or n in _ROUTER_WEIGHTS[spec["kind"]]]
    for name in needed:
        if name not in weights:
            raise ValueError(f"missing weight '{name}' {shapes[name][0]} "
                             f"for spec {spec['name']}")
    W = {}
    for name, arr in weights.items():
        shape, dt = shapes[name]
        a = np.asarray(arr)
        if a.shape != shape:
            raise ValueError(f"weight '{name}' must have shape {shape}, got {a.shape}")
        if dt == "i32":
            # tid2eid: expert ids, kept as integers (any value: one outside
            # [0, E) routes to no expert).
            if a.dtype.kind not in "iu":
                raise ValueError(f"weight '{name}' holds expert ids: it must be an integer "
                                 f"array, got {a.dtype}")
            W[name] = a.astype(np.int64)
            continue
        W[name] = round_to_dtype(a, dt).astype(_F64)
    xa = np.asarray(x)
    if xa.ndim != 2 or xa.shape[1] != spec["d_model"]:
        raise ValueError(f"x must have shape [T, {spec['d_model']}], got {xa.shape}")
    return xa.astype(np.float32).astype(_F64), W


def _token_ids(spec, token_ids, tokens: int) -> Optional[np.ndarray]:
    """The token ids of a hash-routed layer as int64 [T] (any integers: an
    id outside [0, hash_vocab) routes to no expert); None for other layers,
    which take none."""
    hashed = spec["kind"] == "moe" and "hash_vocab" in spec["router"]
    if not hashed:
        if token_ids is not None:
            raise ValueError(f"spec {spec['name']} has no hash router (router.hash_vocab): "
                             f"it takes no token_ids")
        return None
    if token_ids is None:
        raise ValueError(f"spec {spec['name']} routes by token id (router.hash_vocab): "
                         f"token_ids are needed")
    ids = np.asarray(token_ids)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"token_ids must hold integers, got {ids.dtype}")
    if ids.shape != (tokens,):
        raise ValueError(f"token_ids must have shape ({tokens},) (one id per token), "
                         f"got {ids.shape}")
    return ids.astype(np.int64)


def _moe_result(out, routed: _Routed) -> dict:
    res = {
        "out": out.astype(np.float32),
        "topk_ids": routed.ids.astype(np.int32),
        "topk_weights": routed.weights.astype(np.float32),
        "expert_counts": routed.counts.astype(np.int32),
        "dropped": int(routed.dropped),
    }
    res.update(routed.losses)
    return res


# --------------------------------------------------------------------------- #
# Layers
# --------------------------------------------------------------------------- #

def moe(spec, x, seed=None, token_ids=None, **weights) -> dict:
    """Sparse top-k MoE (kind moe); see :func:`forward` for the result keys."""
    spec = load_spec(spec)
    _expect_kind(spec, ("moe",))
    x, W = _prepare(spec, x, weights)
    token_ids = _token_ids(spec, token_ids, x.shape[0])
    start = _shared(spec, _expert_input(spec, x, W), W)
    if "output_bias" in W:                  # the sum starts from the output bias
        start = W["output_bias"] + start
    routed = _routed_moe(spec, x, W, seed, start=start, token_ids=token_ids)
    return _moe_result(routed.out, routed)


def _mh_split(spec, x, W):
    T, D = x.shape
    h = spec["heads"]
    xp = x @ W["head_proj"].T
    return xp.reshape(T * h, D // h)          # sub-token t*h + i = xp[t, i*D/h:(i+1)*D/h]


def mh_moe(spec, x, seed=None, **weights) -> dict:
    """Multi-head MoE: project, split into T*h sub-tokens, routed MoE, merge, project."""
    spec = load_spec(spec)
    _expect_kind(spec, ("mh_moe",))
    x, W = _prepare(spec, x, weights)
    T, D = x.shape
    sub = _mh_split(spec, x, W)
    routed = _routed_moe(spec, sub, W, seed)
    merged = routed.out.reshape(T, D)
    out = merged @ W["merge_proj"].T
    if "output_bias" in W:
        out = W["output_bias"] + out
    return _moe_result(out, routed)


def _product_key_forward(spec, x, kind: str, weights) -> dict:
    spec = load_spec(spec)
    _expect_kind(spec, (kind,))
    x, W = _prepare(spec, x, weights)
    out, ids, g = _product_key_layer(spec, x, W)
    return {"out": out.astype(np.float32), "topk_ids": ids.astype(np.int32),
            "topk_weights": g.astype(np.float32)}


def peer(spec, x, **weights) -> dict:
    """PEER: product-key retrieval of single-neuron experts, h heads."""
    return _product_key_forward(spec, x, "peer", weights)


def pkm(spec, x, **weights) -> dict:
    """Product Key Memory: product-key retrieval, weighted sum of value rows."""
    return _product_key_forward(spec, x, "pkm", weights)


def _expect_kind(spec, kinds):
    if spec["kind"] not in kinds:
        raise ValueError(f"spec kind is {spec['kind']}, expected {' or '.join(kinds)}")


# --------------------------------------------------------------------------- #
# Public entry points
# --------------------------------------------------------------------------- #

def forward(spec, x, seed=None, token_ids=None, **weights) -> dict:
    """Run a layer.  ``spec``: anything :func:`moe_mlir.load_spec` accepts.

    Returns a dict: ``out`` [T, D] float32; moe/mh_moe: ``topk_ids`` [T, k]
    int32 ([T*h, k] for mh_moe), ``topk_weights`` float32 (same shape, router
    top-k before capacity), ``expert_counts`` [E] int32, ``dropped`` int and
    one float per requested aux loss; peer/pkm: ``topk_ids`` / ``topk_weights``
    [T, h, k].  ``seed`` is required when router.noise is true (ignored
    otherwise).  ``token_ids`` (one integer per token) is required by hash
    routers (router.hash_vocab) and refused by other layers.
    """
    spec = load_spec(spec)
    kind = spec["kind"]
    if kind == "moe":
        return moe(spec, x, seed, token_ids, **weights)
    _token_ids(spec, token_ids, 0)
    if kind == "mh_moe":
        return mh_moe(spec, x, seed, **weights)
    if kind == "peer":
        return peer(spec, x, **weights)
    return pkm(spec, x, **weights)


def layer_output(spec, x, seed=None, token_ids=None, **weights) -> np.ndarray:
    """Just ``forward(...)["out"]``."""
    return forward(spec, x, seed, token_ids, **weights)["out"]


def route(spec, x, seed=None, token_ids=None, **weights) -> Tuple[np.ndarray, np.ndarray]:
    """(topk_ids int32, topk_weights float32) of the router, before capacity.

    Needs only the router's weights (gate, tid2eid, logit_bias, gate_bias, w_noise; head_proj for
    mh_moe; query, keys, bn_* for peer/pkm); other known weights are accepted.
    """
    spec = load_spec(spec)
    x, W = _prepare(spec, x, weights, router_only=True)
    token_ids = _token_ids(spec, token_ids, x.shape[0])
    if spec["kind"] in ("peer", "pkm"):
        ids, g = _product_key_route(spec, x, W)
        return ids.astype(np.int32), g.astype(np.float32)
    if spec["kind"] == "mh_moe":
        x = _mh_split(spec, x, W)
    clean, logits = _router_logits(spec, x, W, seed)
    ids, w = route_tokens(logits, spec["router"], W.get("gate_bias"), token_ids=token_ids,
                          tid2eid=W.get("tid2eid"))
    return ids.astype(np.int32), w.astype(np.float32)


def aux_losses(spec, x, seed=None, token_ids=None, **weights) -> Dict[str, float]:
    """The spec's requested aux losses (empty for peer/pkm); router weights suffice."""
    spec = load_spec(spec)
    x, W = _prepare(spec, x, weights, router_only=True)
    token_ids = _token_ids(spec, token_ids, x.shape[0])
    if spec["kind"] in ("peer", "pkm"):
        return {}
    if spec["kind"] == "mh_moe":
        x = _mh_split(spec, x, W)
    clean, logits = _router_logits(spec, x, W, seed)
    ids, w = route_tokens(logits, spec["router"], W.get("gate_bias"), token_ids=token_ids,
                          tid2eid=W.get("tid2eid"))
    return _losses(spec, clean, ids, w)
