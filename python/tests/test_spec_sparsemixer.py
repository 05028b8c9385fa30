"""Sparsemixer routing (PhiMoE, ``router.score: sparsemixer``): the spec's
checks, the NumPy reference against transformers' own ``sparsemixer`` and a
hand computation of its k > 2 extension, and the compiled layer (fast and
reference pipelines) against the reference, crafted logits included (ties,
NaN, all equal, values one ulp either side of the threshold, jitter_eps 0
and huge).

Tolerances: against transformers' f32 sparsemixer 1e-6 (our weights are
computed in f64 from the same f32 logits, the mask in f32 as torch does);
the compiled layer against the reference 1e-5 (compile_helpers.RTOL/ATOL:
f32 kernels, f64 reference); routing ids exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from moe_mlir import reference as R
from moe_mlir.spec import load_spec, spec_hash, weight_shapes

from compile_helpers import (compiled, compare, make_weights, make_x, mh_spec, moe_spec,
                             requires_compiler)

PIPELINES = ("fast", "reference")
# T = 1 (decode), and T that are not multiples of any tile.
TOKENS = (1, 7, 37)



def sm_router(**kw):
    return dict(dict(top_k=2, score="sparsemixer"), **kw)


def weights(spec, seed=0):
    """make_weights, with router vectors wide enough to move the choices."""
    W = make_weights(spec, seed)
    rs = np.random.default_rng(seed + 100)
    if "logit_bias" in W:
        W["logit_bias"] = (rs.standard_normal(W["logit_bias"].shape) * 1.5).astype(np.float32)
    if "router_norm" in W:
        W["router_norm"] = rs.uniform(0.2, 3.0, W["router_norm"].shape).astype(np.float32)
    return W


def check(spec, T, pipeline, seed=0):
    W = weights(spec, seed)
    x = make_x(T, spec["d_model"], seed=seed + 1)
    kw = {"seed": seed} if load_spec(spec)["router"]["noise"] else {}
    got = compiled(spec, pipeline).forward(x, **kw, **W)
    ref = R.forward(spec, x, **kw, **W)
    compare(got, ref)
    return ref


# The jitter_eps values keep a fair share of the experts within reach of
# each choice (the logits spread over ~±4): the weights are neither 1 nor a
# plain softmax.
SPARSEMIXER = {
    # PhiMoE: top-2 of the logits, SwiGLU experts.
    "phimoe": moe_spec("sm_phimoe", experts=8, router=sm_router(jitter_eps=0.15)),
    # k = 3 (the extension), normalised and scaled, logit bias and soft-cap
    # before the mask, every aux loss; bf16 weights.
    "top3_bf16": moe_spec("sm_top3_bf16", weight_dtype="bf16", experts=8,
                          router=sm_router(top_k=3, jitter_eps=0.1, normalize=True,
                                           scaling=1.5, logit_bias=True, softcap=3.0),
                          aux_losses=["load_balance", "importance", "z_loss"]),
    # next_choice fallback columns (weighed by the same steps) with
    # batch_prioritized; an RMSNorm of the router input; the default eps.
    "next_choice": moe_spec("sm_next", activation="gelu",
                            router=sm_router(rms_norm=True),
                            capacity=dict(factor=1.0, overflow="next_choice",
                                          priority="batch_prioritized"),
                            aux_losses=["load_balance"]),
    # Noisy logits (the mask and weights see them, aux losses the clean
    # ones), the weight on the expert input, a shared expert.
    "noise_input": moe_spec("sm_noise", router=sm_router(jitter_eps=0.2, noise=True,
                                                         apply_score="input"),
                            shared_experts=dict(hidden=8), aux_losses=["load_balance",
                                                                       "z_loss"]),
    "mh_moe": mh_spec("sm_mh", router=sm_router(jitter_eps=0.1, normalize=True),
                      capacity=dict(factor=1.5), aux_losses=["load_balance", "importance"]),
}


# --------------------------------------------------------------------------- #
# Spec
# --------------------------------------------------------------------------- #

def test_sparsemixer_spec_defaults():
    r = load_spec(moe_spec(router=dict(top_k=2, score="sparsemixer")))["router"]
    assert r["order"] == "topk_then_score" and r["jitter_eps"] == 0.01
    assert isinstance(r["jitter_eps"], float)
    r = load_spec(moe_spec(router=sm_router(jitter_eps=0, order="topk_then_score")))["router"]
    assert r["jitter_eps"] == 0.0 and isinstance(r["jitter_eps"], float)
    s = load_spec(SPARSEMIXER["top3_bf16"])
    assert load_spec(s) == s                                   # idempotent
    assert list(weight_shapes(s)) == ["gate", "logit_bias", "w1", "w3", "w2"]  # no new weight
    # Other scores have no jitter_eps: their specs hash as before.
    for score in ("softmax", "sigmoid", "sqrt_softplus"):
        assert "jitter_eps" not in load_spec(moe_spec(router=dict(top_k=2, score=score)))["router"]
    assert (spec_hash(moe_spec(router=sm_router(jitter_eps=0.1)))
            != spec_hash(moe_spec(router=sm_router(jitter_eps=0.2))))


@pytest.mark.parametrize("router, message", [
    (sm_router(jitter_eps=-0.01), "field 'router.jitter_eps' must be >= 0, got -0.01"),
    (sm_router(jitter_eps=float("inf")), "field 'router.jitter_eps' must be finite, got inf"),
    (sm_router(jitter_eps=float("nan")), "field 'router.jitter_eps' must be finite, got nan"),
    (sm_router(jitter_eps="0.01"), "field 'router.jitter_eps' must be a number, got '0.01'"),
    (sm_router(jitter_eps=True), "field 'router.jitter_eps' must be a number, got True"),
    (dict(top_k=2, jitter_eps=0.01),
     "router.jitter_eps applies to router.score sparsemixer only, got score softmax"),
    (dict(top_k=2, score="sigmoid", jitter_eps=0.01),
     "router.jitter_eps applies to router.score sparsemixer only, got score sigmoid"),
    (sm_router(order="score_then_topk"),
     "router.score sparsemixer chooses by the logits: router.order must be topk_then_score"),
    (sm_router(selection_bias=True),
     "router.score sparsemixer does not take router.selection_bias"),
    (sm_router(groups=2), "router.score sparsemixer does not take router.groups"),
])
def test_sparsemixer_spec_errors(router, message):
    with pytest.raises(ValueError) as info:
        load_spec(moe_spec(experts=6, router=router))
    assert str(info.value) == message


def test_sparsemixer_not_a_product_key_score():
    for kind in ("pkm", "peer"):
        with pytest.raises(ValueError, match="'score' must be one of softmax, sigmoid"):
            load_spec({"name": "p", "kind": kind, "d_model": 8, "experts": 16, "heads": 1,
                       "top_k": 2, "key_dim": 4, "score": "sparsemixer"})


# --------------------------------------------------------------------------- #
# Reference
# --------------------------------------------------------------------------- #

def near_threshold_logits(rs, T, E, eps):
    """Logits where some expert sits one ulp either side of the mask's
    threshold of the top logit m (and, for the second column, of the second
    logit): (m - l) / max(|l|, m) = 2 eps in f32 arithmetic, give or take."""
    thr = np.float32(2 * eps)
    l = (rs.standard_normal((T, E)) * 0.5).astype(np.float32)
    for t in range(T):
        order = np.argsort(-l[t], kind="stable")
        m = np.float32(abs(l[t, order[0]]) + 0.5)
        l[t, order[0]] = m
        # l = m (1 - thr) solves (m - l) / m = thr for 0 <= l <= m.
        target = np.float32(m * (np.float32(1) - thr))
        for j, steps in zip(order[2:5], (-1, 0, 1)):
            v = target
            for _ in range(abs(steps)):
                v = np.nextafter(v, np.float32(np.sign(steps) * np.inf), dtype=np.float32)
            l[t, j] = v
    return l


def test_reference_matches_transformers_sparsemixer():
    """R.route_tokens == transformers' sparsemixer(l, eps, training=False)
    for k = 2: random logits, coarse (tied) ones, negative ones, and logits
    one ulp around the threshold."""
    torch = pytest.importorskip("torch", reason="torch is needed for the parity test")
    pytest.importorskip("transformers", reason="transformers is needed for the parity test")
    from transformers.models.phimoe.modeling_phimoe import sparsemixer

    rs = np.random.default_rng(0)
    T, E = 400, 8
    random = (rs.standard_normal((T, E)) * 0.7).astype(np.float32)
    cases = {"random": random,
             "ties": (np.round(random * 4) / 4).astype(np.float32),
             "negative": (-np.abs(random) - 0.1).astype(np.float32),
             "all_equal": np.full((5, E), 0.75, dtype=np.float32),
             "zero_max": np.where(np.arange(E) == 3, 0.0, -np.abs(random[:9]) - 0.1
                                  ).astype(np.float32)}
    flipped = 0
    for eps in (0.0, 0.01, 0.1, 0.4, 1e30):
        cases[f"threshold_{eps}"] = near_threshold_logits(rs, 200, E, eps if eps < 1 else 0.1)
        for name, l in cases.items():
            r = load_spec(moe_spec(experts=E, router=sm_router(jitter_eps=eps)))["router"]
            ids, w = R.route_tokens(l, r)
            tw, tid = sparsemixer(torch.from_numpy(l), eps, False)
            np.testing.assert_array_equal(ids, tid.numpy(), err_msg=f"{name}, eps {eps}")
            np.testing.assert_allclose(w, tw.numpy(), rtol=1e-6, atol=1e-6,
                                       err_msg=f"{name}, eps {eps}")
            if name.startswith("threshold"):
                # The one-ulp neighbours decide differently: masked or not.
                one = R.sparsemixer_weights(l, ids, eps)[:, 0]
                flipped += int(np.sum(one < 1))
        del cases[f"threshold_{eps}"]
    assert flipped > 0


def hand_sparsemixer(l, k, eps):
    """The semantics restated token by token in plain Python floats: column
    i picks the best remaining logit m (ties to the lower id); the experts j
    not picked before whose f32 (m - l_j) / max(|l_j|, m) is at most 2 eps
    weigh it 1 / sum_j exp(l_j - m)."""
    thr = np.float32(2 * eps)
    ids, ws = [], []
    for row in l:
        picked = []
        out_w = []
        for _ in range(k):
            s = max((j for j in range(len(row)) if j not in picked), key=lambda j: (row[j], -j))
            m = row[s]
            total = 0.0
            m32 = np.float32(m)
            for j in range(len(row)):
                if j in picked:
                    continue
                l32 = np.float32(row[j])
                with np.errstate(invalid="ignore"):         # 0 / 0: unmasked
                    masked = (m32 - l32) / np.maximum(np.abs(l32), m32) > thr
                if not masked:
                    total += math.exp(float(row[j]) - float(m))
            picked.append(s)
            out_w.append(1.0 / total)
        ids.append(picked)
        ws.append(out_w)
    return np.array(ids), np.array(ws)


@pytest.mark.parametrize("k, eps", [(1, 0.05), (3, 0.1), (4, 0.3), (6, 0.0)])
def test_reference_by_hand(k, eps):
    rs = np.random.default_rng(k)
    l = np.round(rs.standard_normal((60, 6)) * 8).astype(np.float32) / 8   # some ties
    r = load_spec(moe_spec(experts=6, router=sm_router(top_k=k, jitter_eps=eps)))["router"]
    ids, w = R.route_tokens(l, r)
    want_ids, want_w = hand_sparsemixer(l, k, eps)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(w, want_w, rtol=1e-12)
    if eps == 0.0:
        # Only ties with the choice stay unmasked: 1 / (# experts tied with it).
        assert np.all(w <= 1.0) and np.any(w < 1.0)


def test_reference_layer():
    """Through the layer: the choices are topk_then_score's, the weights
    the sparsemixer's (neither 1 nor a softmax), normalize and scaling
    applied after; aux losses from the softmax of the clean logits."""
    spec = load_spec(SPARSEMIXER["top3_bf16"])
    W = weights(spec)
    x = make_x(37, spec["d_model"], seed=1)
    ref = R.forward(spec, x, **W)
    Wr = {n: R.round_to_dtype(a, "bf16" if n in ("gate",) else "f32").astype(np.float64)
          for n, a in W.items()}
    l = R.softcap(x.astype(np.float64) @ Wr["gate"].T + Wr["logit_bias"], 3.0)
    softmax_router = dict(spec["router"], score="softmax")
    softmax_router.pop("jitter_eps")
    ids, _ = R.route_tokens(l, softmax_router)
    np.testing.assert_array_equal(ref["topk_ids"], ids)
    raw = R.sparsemixer_weights(l, ids, 0.1)
    assert np.any(raw < 0.99) and np.any(raw > 0.999)           # the mask matters
    np.testing.assert_allclose(ref["topk_weights"], 1.5 * raw / raw.sum(axis=1, keepdims=True),
                               rtol=1e-6)
    lb = R.load_balance_loss(l, ids, spec["experts"], "softmax")
    np.testing.assert_allclose(ref["load_balance"], lb, rtol=1e-12)
    np.testing.assert_allclose(ref["z_loss"], R.z_loss(l), rtol=1e-12)


def test_reference_next_choice_columns():
    """Fallback columns k..C-1 are weighed as the top-k ones are: column i
    over the experts not ranked ahead of its choice."""
    spec = load_spec(SPARSEMIXER["next_choice"])
    rs = np.random.default_rng(3)
    l = rs.standard_normal((20, spec["experts"]))
    ids, w = R.route_tokens(l, spec["router"], fallbacks=True)
    assert ids.shape == (20, 4)
    want_ids, want_w = hand_sparsemixer(l, 4, 0.01)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_allclose(w, want_w, rtol=1e-6)


# --------------------------------------------------------------------------- #
# Compiled layer
# --------------------------------------------------------------------------- #

@requires_compiler
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("name", sorted(SPARSEMIXER))
def test_sparsemixer_compiled(name, pipeline):
    weighed = False
    for T in TOKENS:
        ref = check(SPARSEMIXER[name], T, pipeline, seed=T)
        weighed |= bool(np.any(np.abs(ref["topk_weights"]) < 0.99 * ref["topk_weights"].max()))
    assert weighed


# Crafted logits: with x the identity (one token per feature), token t's
# logits are exactly gate[:, t] on both sides.
D_EDGE, E_EDGE = 16, 6
EDGES = {
    "phimoe_eps": moe_spec("sm_edge", d_model=D_EDGE, experts=E_EDGE,
                           router=sm_router(), aux_losses=["load_balance", "z_loss"]),
    "eps_zero_top3": moe_spec("sm_edge_zero", d_model=D_EDGE, experts=E_EDGE,
                              router=sm_router(top_k=3, jitter_eps=0.0)),
    "eps_huge_top3": moe_spec("sm_edge_huge", d_model=D_EDGE, experts=E_EDGE,
                              router=sm_router(top_k=3, jitter_eps=1e30, normalize=True)),
}


def edge_logits(eps):
    """[16, 6] logits: ties first and second, all equal, zero, negative,
    a threshold one ulp either side, a huge spread."""
    rs = np.random.default_rng(7)
    l = (rs.standard_normal((D_EDGE, E_EDGE)) * 0.3).astype(np.float32)
    l[0] = [1.0, 2.0, 2.0, 0.5, 1.99, -1.0]         # tie for the first choice
    l[1] = [3.0, 1.0, 0.0, 1.0, 1.0, 2.9]           # tie for the third
    l[2] = 0.5                                      # all equal
    l[3] = 0.0                                      # all zero (0 / 0: unmasked)
    l[4] = [0.0, -1e-3, -2.0, -1e-30, -5.0, -0.5]    # zero maximum
    l[5] = [-3.0, -2.5, -2.49, -2.6, -9.0, -2.45]   # all negative
    thr = np.float32(2 * min(eps, 0.25))
    target = np.float32(np.float32(1.5) * (np.float32(1) - thr))
    up = np.nextafter(target, np.float32(np.inf), dtype=np.float32)
    down = np.nextafter(target, np.float32(-np.inf), dtype=np.float32)
    l[6] = [1.5, down, target, up, 0.1, -0.2]        # around the threshold
    l[7] = [60.0, -60.0, 59.5, 0.0, 58.0, 1e-3]      # exp's range
    return l


@requires_compiler
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("name", sorted(EDGES))
def test_sparsemixer_crafted_logits(name, pipeline):
    spec = load_spec(EDGES[name])
    eps = spec["router"]["jitter_eps"]
    W = make_weights(spec, 11)
    W["gate"] = np.ascontiguousarray(edge_logits(eps).T)
    x = np.eye(D_EDGE, dtype=np.float32)
    got = compiled(spec, pipeline).forward(x, **W)
    compare(got, R.forward(spec, x, **W))
    if name == "eps_zero_top3":
        # jitter_eps 0: only experts tied with a choice share its weight.
        np.testing.assert_allclose(got["topk_weights"][0], [0.5, 1.0, 1.0], rtol=1e-6)
        np.testing.assert_allclose(got["topk_weights"][2], [1 / 6, 1 / 5, 1 / 4], rtol=1e-6)


@requires_compiler
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_sparsemixer_nan_logit(pipeline):
    """One expert's logit NaN for every token: never chosen ahead of a
    number, left unmasked (its ratio is NaN), so every weight is NaN, as
    transformers' softmax over it gives."""
    spec = load_spec(EDGES["phimoe_eps"])
    W = make_weights(spec, 12)
    W["gate"][1, 0] = np.nan
    x = make_x(9, D_EDGE, seed=13)
    x[:, 0] = np.abs(x[:, 0]) + 0.5
    got = compiled(spec, pipeline).forward(x, **W)
    with np.errstate(all="ignore"):
        ref = R.forward(spec, x, **W)
    compare(got, ref, equal_nan=True)
    assert not np.any(got["topk_ids"] == 1) and np.all(np.isnan(got["topk_weights"]))
