"""NLLB-MoE's capacity features: ``capacity.token_fraction`` (each expert
holds min(ceil(f·T), T·k) assignments) and ``capacity.renormalize`` (each
token's kept weights divided by their sum after the drops): the spec's
checks, the NumPy reference against a hand computation and against
transformers' NllbMoeTop2Router, and the compiled layer (fast and reference
pipelines) against the reference, drops included (a token losing every
choice, top-1 weights renormalised to 1).

Tolerances: the compiled layer against the reference 1e-5
(compile_helpers.RTOL/ATOL: f32 kernels, f64 reference), routing ids, counts
and drops exactly; the reference against transformers' f32 router 1e-6."""

from __future__ import annotations


import numpy as np
import pytest

from moe_mlir import reference as R
from moe_mlir.spec import load_spec, spec_hash

from compile_helpers import (compiled, compare, make_weights, make_x, mh_spec, moe_spec,
                             requires_compiler)

PIPELINES = ("fast", "reference")
TOKENS = (1, 7, 37)



def weights(spec, seed=0):
    """make_weights; the router's vectors wide enough to move the choices, and
    expert 0 favoured so that it overflows."""
    W = make_weights(spec, seed)
    rs = np.random.default_rng(seed + 100)
    if "logit_bias" in W:
        W["logit_bias"] = (rs.standard_normal(W["logit_bias"].shape) * 1.5).astype(np.float32)
    if "expert_scale" in W:
        W["expert_scale"] = rs.uniform(0.5, 1.5, W["expert_scale"].shape).astype(np.float32)
    W["gate"][0] += 0.5
    return W


def check(spec, T, pipeline, seed=0):
    W = weights(spec, seed)
    x = make_x(T, spec["d_model"], seed=seed + 1)
    got = compiled(spec, pipeline).forward(x, **W)
    ref = R.forward(spec, x, **W)
    compare(got, ref)
    return ref


RENORMALIZE = {
    # NLLB-MoE: top-2 softmax with a router bias, relu experts with biases,
    # outputs scaled (moe_token_dropout), ceil(0.3 T) slots, renormalised.
    "nllb": moe_spec("rn_nllb", activation="relu", expert_bias=True, expert_scale=True,
                     router=dict(top_k=2, logit_bias=True),
                     capacity=dict(token_fraction=0.3, renormalize=True)),
    # batch_prioritized (NLLB's batch_prioritized_routing), bf16, aux losses.
    "prioritized_bf16": moe_spec("rn_prio_bf16", weight_dtype="bf16", activation="gelu",
                                 router=dict(top_k=2),
                                 capacity=dict(token_fraction=0.35, priority="batch_prioritized",
                                               renormalize=True),
                                 aux_losses=["load_balance", "importance", "z_loss"]),
    # next_choice fallbacks land with their own weight, then renormalised.
    "next_choice": moe_spec("rn_next", router=dict(top_k=2, score="sigmoid"),
                            capacity=dict(token_fraction=0.25, overflow="next_choice",
                                          priority="batch_prioritized", renormalize=True)),
    # renormalize with the other capacities; top-3, normalised first.
    "tokens_top3": moe_spec("rn_tokens", experts=8, router=dict(top_k=3, normalize=True),
                            capacity=dict(tokens=3, renormalize=True)),
    "factor_top1": moe_spec("rn_top1", router=dict(top_k=1, score="sigmoid",
                                                   order="topk_then_score"),
                            capacity=dict(factor=1.0, renormalize=True),
                            shared_experts=dict(hidden=8)),
    # token_fraction alone (no renormalisation), and on the weight of the input.
    "fraction_input": moe_spec("rn_fraction", router=dict(top_k=2, apply_score="input"),
                               capacity=dict(token_fraction=0.4)),
    "mh_moe": mh_spec("rn_mh", router=dict(top_k=2),
                      capacity=dict(token_fraction=0.3, renormalize=True)),
}


# --------------------------------------------------------------------------- #
# Spec
# --------------------------------------------------------------------------- #

def test_capacity_spec_forms():
    s = load_spec(RENORMALIZE["nllb"])
    assert s["capacity"] == {"token_fraction": 0.3, "overflow": "drop",
                             "priority": "token_order", "renormalize": True}
    assert load_spec(s) == s                                   # idempotent
    c = load_spec(moe_spec(capacity=dict(token_fraction=2)))["capacity"]
    assert c == {"token_fraction": 2.0, "overflow": "drop", "priority": "token_order"}
    assert isinstance(c["token_fraction"], float)
    # renormalize false is the default and left out: other specs hash as before.
    for cap in (dict(factor=1.0), dict(tokens=4), dict(token_fraction=0.5)):
        plain = load_spec(moe_spec(capacity=cap))
        assert "renormalize" not in plain["capacity"]
        assert spec_hash(moe_spec(capacity=dict(cap, renormalize=False))) == spec_hash(plain)
        assert spec_hash(moe_spec(capacity=dict(cap, renormalize=True))) != spec_hash(plain)


@pytest.mark.parametrize("capacity, message", [
    (dict(), "missing required field 'capacity.factor' or 'capacity.tokens' or "
             "'capacity.token_fraction'"),
    (dict(overflow="drop"), "missing required field 'capacity.factor' or 'capacity.tokens' or "
                            "'capacity.token_fraction'"),
    (dict(factor=1.0, tokens=2), "fields 'capacity.factor' and 'capacity.tokens' exclude each "
                                 "other"),
    (dict(factor=1.0, token_fraction=0.5),
     "fields 'capacity.factor' and 'capacity.token_fraction' exclude each other"),
    (dict(tokens=2, token_fraction=0.5),
     "fields 'capacity.tokens' and 'capacity.token_fraction' exclude each other"),
    (dict(factor=1.0, tokens=2, token_fraction=0.5),
     "fields 'capacity.factor', 'capacity.tokens' and 'capacity.token_fraction' exclude each "
     "other"),
    (dict(token_fraction=0), "field 'capacity.token_fraction' must be > 0, got 0.0"),
    (dict(token_fraction=-0.5), "field 'capacity.token_fraction' must be > 0, got -0.5"),
    (dict(token_fraction=float("inf")), "field 'capacity.token_fraction' must be finite, got inf"),
    (dict(token_fraction=float("nan")), "field 'capacity.token_fraction' must be finite, got nan"),
    (dict(token_fraction="0.5"), "field 'capacity.token_fraction' must be a number, got '0.5'"),
    (dict(token_fraction=True), "field 'capacity.token_fraction' must be a number, got True"),
    (dict(token_fraction=0.5, renormalize="yes"),
     "field 'capacity.renormalize' must be a boolean, got 'yes'"),
])
def test_capacity_spec_errors(capacity, message):
    with pytest.raises(ValueError) as info:
        load_spec(moe_spec(capacity=capacity))
    assert str(info.value) == message


# --------------------------------------------------------------------------- #
# Reference
# --------------------------------------------------------------------------- #

def test_fraction_capacity():
    # f·T in float64, then ceil: 1.1 · 50 = 55.00000000000001 -> 56.
    assert R.fraction_capacity(1.1, 50, 2) == 56
    assert R.fraction_capacity(0.25, 8, 2) == 2 and R.fraction_capacity(0.3, 1, 2) == 1
    assert R.fraction_capacity(1.0, 37, 2) == 37
    assert R.fraction_capacity(5.0, 7, 2) == 14                   # clamped to T·k
    assert R.fraction_capacity(1e308, 7, 2) == 14                 # f·T overflows: the clamp
    assert R.fraction_capacity(0.5, 0, 2) == 0
    spec = load_spec(RENORMALIZE["nllb"])
    assert R.spec_capacity(spec["capacity"], 37, 2, 6) == 12


def test_renormalize_by_hand():
    """Each token's kept weights over their sum (at least 2^-23); the counts
    and drops as without it."""
    ids = np.array([[0, 1], [0, 2], [0, 1], [2, 0], [1, 2]])
    w = np.array([[0.6, 0.3], [0.5, 0.4], [0.7, 0.2], [0.9, 0.05], [1e-9, 1e-9]])
    plain = R.dispatch(ids, w, 2, 3, capacity=2)
    d = R.dispatch(ids, w, 2, 3, capacity=2, renormalize=True)
    np.testing.assert_array_equal(d.expert, plain.expert)
    np.testing.assert_array_equal(d.counts, plain.counts)
    assert d.dropped == plain.dropped == 4
    # Expert 0 is full after tokens 0 and 1, expert 1 after tokens 4 and 0,
    # expert 2 after tokens 3 and 1: token 2 loses both choices, tokens 3
    # and 4 their second.
    np.testing.assert_array_equal(d.expert, [[0, 1], [0, 2], [-1, -1], [2, -1], [1, -1]])
    np.testing.assert_allclose(d.weight, [[2 / 3, 1 / 3], [5 / 9, 4 / 9], [0, 0], [1, 0],
                                          [1e-9 / 2 ** -23, 0]], rtol=1e-15)


def test_renormalize_layer_by_hand():
    """out = Σ over the kept assignments of (w / S_t) · scale_e · y_e(x_t)."""
    spec = load_spec(RENORMALIZE["nllb"])
    W = weights(spec)
    x = make_x(37, spec["d_model"], seed=3)
    ref = R.forward(spec, x, **W)
    assert ref["dropped"] > 5
    Wd = {n: a.astype(np.float64) for n, a in W.items()}
    x64 = x.astype(np.float64)
    ids, w = R.route_tokens(x64 @ Wd["gate"].T + Wd["logit_bias"], spec["router"])
    d = R.dispatch(ids, w, 2, spec["experts"], R.spec_capacity(spec["capacity"], 37, 2, 6))
    kept = np.where(d.expert >= 0, d.weight, 0.0)
    S = kept.sum(axis=1)
    want = np.zeros_like(x64)
    for t in range(37):
        for j in range(2):
            e = d.expert[t, j]
            if e >= 0:
                y = R.expert_ffn(x64[t:t + 1], Wd["w1"][e], Wd["w2"][e], None, "relu",
                                 None, Wd["b1"][e], None, Wd["b2"][e])[0]
                want[t] += kept[t, j] / max(S[t], 2.0 ** -23) * Wd["expert_scale"][e] * y
    np.testing.assert_allclose(ref["out"], want, rtol=1e-5, atol=1e-6)
    plain = R.forward(dict(spec, capacity=dict(spec["capacity"], renormalize=False)), x, **W)
    assert not np.allclose(plain["out"], ref["out"])
    np.testing.assert_array_equal(plain["expert_counts"], ref["expert_counts"])


def _nllb_router(tf, torch, E, D, **options):
    from transformers.models.nllb_moe.modeling_nllb_moe import NllbMoeTop2Router
    cfg = tf.NllbMoeConfig(d_model=D, num_experts=E, router_bias=True, **options)
    return NllbMoeTop2Router(cfg).eval()


def _kept_weights(spec, logits):
    """The reference's kept weights as NLLB's router_probs [T, E]."""
    T, E = logits.shape
    ids, w = R.route_tokens(logits, spec["router"])
    c = spec["capacity"]
    d = R.dispatch(ids, w, 2, E, R.spec_capacity(c, T, 2, E), c["overflow"], c["priority"],
                   c.get("renormalize", False))
    got = np.zeros((T, E))
    for j in range(2):
        kept = d.expert[:, j] >= 0
        got[np.nonzero(kept)[0], d.expert[kept, j]] = d.weight[kept, j]
    return got, d.dropped


def _nllb_spec(E, D, f, normalize_first, prioritized):
    return load_spec(moe_spec(d_model=D, experts=E, router=dict(top_k=2, logit_bias=True,
                                                                normalize=normalize_first),
                              capacity=dict(token_fraction=f, renormalize=not normalize_first,
                                            priority=("batch_prioritized" if prioritized
                                                      else "token_order"))))


@pytest.mark.parametrize("normalize_first, prioritized",
                         [(False, False), (False, True), (True, False)])
def test_reference_matches_nllb_router(normalize_first, prioritized):
    """NllbMoeTop2Router's router_probs [T, E] (the combine weights after the
    drops and any renormalisation) are the reference's kept (token, expert)
    weights: the same pairs, the same weights."""
    torch = pytest.importorskip("torch", reason="torch is needed for the parity test")
    tf = pytest.importorskip("transformers", reason="transformers is needed for the parity test")
    E, D, T, f = 4, 16, 41, 0.3
    router = _nllb_router(tf, torch, E, D, moe_eval_capacity_token_fraction=f,
                          normalize_router_prob_before_dropping=normalize_first,
                          batch_prioritized_routing=prioritized)
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        router.classifier.weight.copy_(torch.randn(E, D, generator=g))
        router.classifier.weight[0] += 0.5                   # expert 0 overflows
        router.classifier.bias.copy_(torch.randn(E, generator=g))
    x = torch.randn(T, D, generator=g)
    with torch.no_grad():
        _, probs, logits = router(x)
    got, dropped = _kept_weights(_nllb_spec(E, D, f, normalize_first, prioritized),
                                 logits.numpy())
    assert dropped > 5
    np.testing.assert_array_equal(got > 0, probs.numpy() > 0)
    np.testing.assert_allclose(got, probs.numpy(), rtol=1e-6, atol=1e-7)


def test_nllb_priority_of_normalised_weights_differs():
    """With normalize_router_prob_before_dropping and batch_prioritized_routing
    NLLB orders tokens by their top-1 probability p1, the spec's
    batch_prioritized by the final (normalised) weight p1 / (p1 + p2): token
    A (p = .5, .4) goes first in NLLB, token B (p = .4, .25) in the spec,
    and expert 0 has room for one.  hf.from_hf refuses that configuration."""
    torch = pytest.importorskip("torch", reason="torch is needed for the parity test")
    tf = pytest.importorskip("transformers", reason="transformers is needed for the parity test")
    E = D = T = 4
    probs = np.array([[0.5, 0.4, 0.05, 0.05], [0.4, 0.1, 0.25, 0.25],
                      [0.25] * 4, [0.25] * 4])
    router = _nllb_router(tf, torch, E, D, moe_eval_capacity_token_fraction=0.25,
                          normalize_router_prob_before_dropping=True,
                          batch_prioritized_routing=True)
    with torch.no_grad():
        router.classifier.weight.copy_(torch.from_numpy(np.log(probs).T.astype(np.float32)))
        router.classifier.bias.zero_()
        _, want, logits = router(torch.eye(T))
    got, _ = _kept_weights(_nllb_spec(E, D, 0.25, True, True), logits.numpy())
    assert want[0, 0] > 0 and want[1, 0] == 0               # NLLB: A keeps expert 0
    assert got[0, 0] == 0 and got[1, 0] > 0                 # the spec: B does


# --------------------------------------------------------------------------- #
# Compiled layer
# --------------------------------------------------------------------------- #

@requires_compiler
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("name", sorted(RENORMALIZE))
def test_renormalize_compiled(name, pipeline):
    dropped = 0
    for T in TOKENS:
        dropped += check(RENORMALIZE[name], T, pipeline, seed=T)["dropped"]
    assert dropped > 0


@requires_compiler
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_token_losing_every_choice(pipeline):
    """Tokens 0..5 all choose experts 0 and 1 first; a capacity of ceil(0.5·T)
    = 3 leaves tokens 3..5 with no expert: their output is 0 (the bias of no
    expert), their kept weights sum to 0 and are not divided."""
    spec = RENORMALIZE["nllb"]
    spec = dict(spec, name="rn_lose_all", capacity=dict(token_fraction=0.5, renormalize=True))
    W = weights(spec, 9)
    W["gate"][:, 0] = [4.0, 3.5, -4.0, -4.0, -4.0, -4.0]
    W["logit_bias"][:] = 0.0
    x = make_x(6, spec["d_model"], seed=10) * 0.1
    x[:, 0] = 4.0
    got = compiled(spec, pipeline).forward(x, **W)
    ref = R.forward(spec, x, **W)
    compare(got, ref)
    np.testing.assert_array_equal(got["topk_ids"], [[0, 1]] * 6)
    assert got["dropped"] == 6
    assert np.all(got["out"][3:] == 0) and np.all(np.abs(got["out"][:3]) > 0)


@requires_compiler
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_top1_renormalized_to_one(pipeline):
    """k = 1 with renormalize: a kept token's weight is w / w = 1, so its
    output is its expert's (plus the shared expert), the router's weight
    gone."""
    spec = load_spec(RENORMALIZE["factor_top1"])
    W = weights(spec, 4)
    x = make_x(23, spec["d_model"], seed=5)
    got = compiled(spec, pipeline).forward(x, **W)
    compare(got, R.forward(spec, x, **W))
    Wd = {n: a.astype(np.float64) for n, a in W.items()}
    x64 = x.astype(np.float64)
    shared = R.expert_ffn(x64, Wd["shared_w1"], Wd["shared_w2"], Wd["shared_w3"], "swiglu")
    cap = R.spec_capacity(spec["capacity"], 23, 1, spec["experts"])
    seen = np.zeros(spec["experts"], dtype=int)
    for t in range(23):
        e = got["topk_ids"][t, 0]
        want = shared[t].copy()
        if seen[e] < cap:
            want += R.expert_ffn(x64[t:t + 1], Wd["w1"][e], Wd["w2"][e], Wd["w3"][e],
                                 "swiglu")[0]
        seen[e] += 1
        np.testing.assert_allclose(got["out"][t], want, rtol=1e-5, atol=1e-5)
    assert got["dropped"] > 0 and not np.allclose(got["topk_weights"], 1.0)
