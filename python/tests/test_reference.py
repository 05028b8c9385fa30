"""Tests of the NumPy reference, the spec loader, the RNG and upcycling.

The reference is checked against hand-worked cases and against direct,
differently written formulations (per-token Python loops, brute force).
"""

import json
import math
import struct

import numpy as np
import pytest

import moe_mlir
from moe_mlir import reference as R
from moe_mlir import rng
from moe_mlir.spec import load_spec, spec_hash, weight_shapes

NAN = float("nan")
INF = float("inf")


# =========================================================================== #
# Helpers: an independent, per-token formulation of the MoE layer
# =========================================================================== #

def rank_key(v, i):
    """sorted() key of the ranking rule: larger first, ties lower index, NaN last."""
    return (1, 0.0, i) if math.isnan(v) else (0, -v, i)


def n_sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def n_act(z, name):
    if name in ("gelu", "geglu"):
        return 0.5 * z * (1.0 + math.erf(z / math.sqrt(2.0)))
    if name in ("silu", "swiglu"):
        return z * n_sigmoid(z)
    if name == "relu":
        return max(z, 0.0)
    raise AssertionError(name)


def n_ffn(x, w1, w2, w3, act):
    F = w1.shape[0]
    h = []
    for f in range(F):
        a = n_act(float(np.dot(w1[f], x)), act)
        if act in ("swiglu", "geglu"):
            a *= float(np.dot(w3[f], x))
        h.append(a)
    return np.array([sum(w2[d, f] * h[f] for f in range(F)) for d in range(w2.shape[0])])


def bf16_nearest(v):
    """bf16 rounding as 'pick the nearer of the two neighbours, ties to even'."""
    if math.isnan(v) or math.isinf(v):
        return v
    bits = struct.unpack("<I", struct.pack("<f", v))[0]
    down = bits & 0xFFFF0000
    up = down + 0x10000
    fd = struct.unpack("<f", struct.pack("<I", down))[0]
    if (up & 0x7F800000) == 0x7F800000:
        fu = math.copysign(INF, v)
    else:
        fu = struct.unpack("<f", struct.pack("<I", up))[0]
    dd, du = abs(v - fd), abs(fu - v)
    if dd < du or (dd == du and ((down >> 16) & 1) == 0):
        return fd
    return fu


def n_round(a, dtype):
    a = np.asarray(a, dtype=np.float32)
    if dtype == "bf16":
        return np.array([bf16_nearest(float(v)) for v in a.ravel()]).reshape(a.shape)
    if dtype == "f16":
        return a.astype(np.float16).astype(np.float64)
    return a.astype(np.float64)


def naive_moe(spec, x, W, seed=None):
    """Per-token MoE, written independently of moe_mlir.reference."""
    s = load_spec(spec)
    r = s["router"]
    T = x.shape[0]
    E, k = s["experts"], r["top_k"]
    shapes = weight_shapes(s)
    W = {n: n_round(a, shapes[n][1]) for n, a in W.items()}
    x = x.astype(np.float64)
    noise = rng.normal(seed, T, E) if r["noise"] else None
    ids, wts = [], []
    clean_logits = []
    for t in range(T):
        l = [float(np.dot(W["gate"][e], x[t])) for e in range(E)]
        clean_logits.append(list(l))
        if noise is not None:
            for e in range(E):
                z = float(np.dot(W["w_noise"][e], x[t]))
                l[e] += float(noise[t, e]) * (math.log1p(math.exp(-abs(z))) + max(z, 0.0))
        bias = [float(b) for b in W["gate_bias"]] if r["selection_bias"] else [0.0] * E
        if r["order"] == "score_then_topk":
            if r["score"] == "softmax":
                m = max(l)
                ex = [math.exp(v - m) for v in l]
                sc = [v / sum(ex) for v in ex]
            else:
                sc = [n_sigmoid(v) for v in l]
            key = [sc[e] + bias[e] for e in range(E)]
        else:
            key = [l[e] + bias[e] for e in range(E)]
        G = r["groups"]
        gsz = E // G
        gscore = []
        for g in range(G):
            members = sorted(range(g * gsz, (g + 1) * gsz), key=lambda e: rank_key(key[e], e))
            vals = [key[e] for e in members]
            gscore.append(vals[0] if r["group_score"] == "max" else vals[0] + vals[1])
        kept = sorted(range(G), key=lambda g: rank_key(gscore[g], g))[:r["topk_groups"]]
        allowed = [e for e in range(E) if e // gsz in kept]
        ranked = sorted(allowed, key=lambda e: rank_key(key[e], e))
        chosen = ranked[:min(2 * k, len(allowed))]
        if r["order"] == "score_then_topk":
            raw = [sc[e] for e in chosen]
        elif r["score"] == "sigmoid":
            raw = [n_sigmoid(l[e]) for e in chosen]
        else:
            m = max(l[e] for e in chosen[:k])
            Z = sum(math.exp(l[e] - m) for e in chosen[:k])
            raw = [math.exp(l[e] - m) / Z for e in chosen]
        if r["normalize"]:
            tot = sum(raw[:k])
            raw = [v / tot for v in raw]
        ids.append(chosen)
        wts.append([r["scaling"] * v for v in raw])

    # capacity
    cap_spec = s["capacity"]
    cap = INF if cap_spec is None else math.ceil(cap_spec["factor"] * T * k / E)
    if cap_spec is not None and cap_spec["priority"] == "batch_prioritized":
        order = sorted(range(T), key=lambda t: rank_key(wts[t][0], t))
    else:
        order = list(range(T))
    counts = [0] * E
    dropped = 0
    kept_assign = [[None] * k for _ in range(T)]
    used = [set() for _ in range(T)]
    for j in range(k):
        for t in order:
            e = ids[t][j]
            if counts[e] < cap:
                kept_assign[t][j] = (e, wts[t][j])
                counts[e] += 1
                continue
            placed = False
            if cap_spec is not None and cap_spec["overflow"] == "next_choice":
                for c in range(k, len(ids[t])):
                    e2 = ids[t][c]
                    if c not in used[t] and counts[e2] < cap:
                        used[t].add(c)
                        kept_assign[t][j] = (e2, wts[t][c])
                        counts[e2] += 1
                        placed = True
                        break
            if not placed:
                dropped += 1

    out = np.zeros_like(x)
    for t in range(T):
        acc = np.zeros(x.shape[1])
        if s["kind"] == "moe" and s["shared_experts"]["hidden"]:
            acc = n_ffn(x[t], W["shared_w1"], W["shared_w2"], W.get("shared_w3"),
                        s["activation"])
            if s["shared_experts"]["gate"]:
                acc = acc * n_sigmoid(float(np.dot(W["shared_gate"][0], x[t])))
        for j in range(k):
            if kept_assign[t][j] is None:
                continue
            e, w = kept_assign[t][j]
            acc = acc + w * n_ffn(x[t], W["w1"][e], W["w2"][e],
                                  W["w3"][e] if "w3" in W else None, s["activation"])
        out[t] = acc
    return dict(out=out, ids=np.array([c[:k] for c in ids]),
                weights=np.array([w[:k] for w in wts]), counts=np.array(counts),
                dropped=dropped, logits=np.array(clean_logits))


def make_weights(spec, seed=0, scale=0.5):
    rs = np.random.default_rng(seed)
    W = {}
    for name, (shape, _) in weight_shapes(spec).items():
        a = rs.standard_normal(shape) * scale
        if name == "bn_var":
            a = np.abs(a) + 0.5
        W[name] = a.astype(np.float32)
    return W


def rand_x(T, D, seed=1):
    return np.random.default_rng(seed).standard_normal((T, D)).astype(np.float32)


def moe_spec(**kw):
    router = kw.pop("router", {})
    base = dict(name="m", kind="moe", d_model=8, experts=8, expert_hidden=6,
                router=dict(dict(top_k=2), **router))
    base.update(kw)
    return base


# =========================================================================== #
# RNG
# =========================================================================== #

@pytest.mark.parametrize("counter,key,expect", [
    ((0, 0, 0, 0), (0, 0), (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
    ((0xffffffff,) * 4, (0xffffffff,) * 2, (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
    ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
     (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1)),
])
def test_philox_known_answers(counter, key, expect):
    assert [int(v) for v in rng.philox4x32(counter, key)] == list(expect)


def scalar_philox(ctr, key):
    c = list(ctr)
    k0, k1 = key
    for _ in range(10):
        p0 = 0xD2511F53 * c[0]
        p1 = 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k0, p1 & 0xFFFFFFFF, (p0 >> 32) ^ c[3] ^ k1, p0 & 0xFFFFFFFF]
        k0 = (k0 + 0x9E3779B9) & 0xFFFFFFFF
        k1 = (k1 + 0xBB67AE85) & 0xFFFFFFFF
    return c


def test_philox_vectorised_matches_scalar():
    rs = np.random.default_rng(3)
    ctr = rs.integers(0, 2 ** 32, size=(20, 4), dtype=np.uint64)
    key = rs.integers(0, 2 ** 32, size=(20, 2), dtype=np.uint64)
    got = rng.philox4x32(ctr, key)
    for i in range(20):
        assert [int(v) for v in got[i]] == scalar_philox([int(v) for v in ctr[i]],
                                                         [int(v) for v in key[i]])


def test_normal_sample_by_hand():
    seed = 0x0123456789ABCDEF
    t, e = 3, 5
    r = scalar_philox([e, t, 0, 0], [seed & 0xFFFFFFFF, seed >> 32])
    u1 = np.float32(((r[0] >> 8) + 1) / 2 ** 24)
    u2 = np.float32((r[1] >> 8) / 2 ** 24)
    n = np.sqrt(np.float32(-2) * np.log(u1)) * np.cos(np.float32(2 * math.pi) * u2)
    got = rng.normal(seed, 4, 6)
    assert got.dtype == np.float32
    assert got[t, e] == np.float32(n)
    assert abs(float(n) - math.sqrt(-2 * math.log(float(u1))) * math.cos(2 * math.pi * float(u2))) < 1e-5


def test_normal_moments_and_seeds():
    n = rng.normal(7, 500, 128).astype(np.float64)
    assert abs(n.mean()) < 0.02 and abs(n.var() - 1) < 0.03
    assert np.array_equal(rng.normal(7, 5, 3), rng.normal(7, 5, 3))
    assert not np.array_equal(rng.normal(7, 5, 3), rng.normal(8, 5, 3))
    assert np.array_equal(rng.normal(-1, 5, 3), rng.normal(2 ** 64 - 1, 5, 3))
    assert rng.seed_to_key(2 ** 32 + 5) == (5, 1)
    # a prefix of tokens/experts gives the same samples (counter = (e, t, 0, 0))
    assert np.array_equal(rng.normal(7, 9, 5)[:4, :3], rng.normal(7, 4, 3))
    with pytest.raises(ValueError):
        rng.seed_to_key(1.5)


def test_uniform_ranges():
    u1, u2 = rng.uniform_pair(np.array([0, 0xFFFFFFFF], np.uint32),
                              np.array([0, 0xFFFFFFFF], np.uint32))
    assert u1[0] == np.float32(2 ** -24) and u1[1] == np.float32(1.0)
    assert u2[0] == 0.0 and u2[1] == np.float32(1 - 2 ** -24)


# =========================================================================== #
# Dtypes
# =========================================================================== #

def f32(bits):
    return np.array([bits], np.uint32).view(np.float32)[0]


def bits_of(v):
    return int(np.array([v], np.float32).view(np.uint32)[0])


@pytest.mark.parametrize("inp,out", [
    (0x3F800000, 0x3F800000),   # 1.0 exact
    (0x3F808000, 0x3F800000),   # halfway, lsb even -> down
    (0x3F818000, 0x3F820000),   # halfway, lsb odd -> up
    (0x3F808001, 0x3F810000),   # above halfway -> up
    (0x3F807FFF, 0x3F800000),   # below halfway -> down
    (0xBF818000, 0xBF820000),   # negative, halfway odd -> away (up in magnitude)
    (0x7F7FFFFF, 0x7F800000),   # max float -> +inf
    (0x7F800000, 0x7F800000),   # +inf
    (0xFF800000, 0xFF800000),   # -inf
    (0x00008000, 0x00000000),   # subnormal halfway even -> 0
    (0x00018000, 0x00020000),   # subnormal halfway odd -> up
    (0x80000000, 0x80000000),   # -0.0
])
def test_bf16_round_to_nearest_even(inp, out):
    got = moe_mlir.round_to_dtype(np.array([f32(inp)], np.float32), "bf16")
    assert got.dtype == np.float32
    assert bits_of(got[0]) == out


def test_bf16_nan_and_random_against_nearest():
    nans = np.array([0x7FC00000, 0x7FFFFFFF, 0xFF800001, 0x7F800001], np.uint32).view(np.float32)
    got = moe_mlir.round_to_dtype(nans, "bf16")
    assert np.isnan(got).all()
    a = (np.random.default_rng(0).standard_normal(500) * 10).astype(np.float32)
    np.testing.assert_array_equal(R.round_to_dtype(a, "bf16"), n_round(a, "bf16"))
    raw = np.array([0x3F80, 0xC000], np.uint16)           # uint16 = raw bf16 bits
    np.testing.assert_array_equal(R.round_to_dtype(raw, "bf16"), [1.0, -2.0])


def test_f16_and_f32_rounding():
    a = np.array([1.0, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 70000.0, 1 / 3], np.float32)
    got = R.round_to_dtype(a, "f16")
    assert got.dtype == np.float32
    assert got[0] == 1.0 and got[1] == 1.0 and got[2] == np.float32(1 + 2 ** -9)
    assert got[3] == INF and got[4] == np.float32(np.float16(1 / 3))
    np.testing.assert_array_equal(R.round_to_dtype(a, "f32"), a)
    with pytest.raises(ValueError):
        R.round_to_dtype(a, "f8")


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
def test_weight_dtype_rounds_weights(dtype):
    spec = moe_spec(weight_dtype=dtype, router=dict(selection_bias=True))
    W = make_weights(spec)
    x = rand_x(6, 8)
    got = R.forward(spec, x, **W)
    pre = {n: (R.round_to_dtype(a, dtype) if n != "gate_bias" else a) for n, a in W.items()}
    f32_spec = dict(spec, weight_dtype="f32")
    want = R.forward(f32_spec, x, **pre)
    np.testing.assert_array_equal(got["out"], want["out"])
    # gate_bias stays f32 even with a low-precision weight_dtype
    assert weight_shapes(spec)["gate_bias"] == ((8,), "f32")


# =========================================================================== #
# Top-k ranking rule
# =========================================================================== #

def test_topk_ties_lower_index():
    v, i = R.topk([1.0, 3.0, 3.0, 2.0, 3.0], 3)
    assert i.tolist() == [1, 2, 4] and v.tolist() == [3.0, 3.0, 3.0]
    v, i = R.topk([0.0, -0.0, 0.0], 2)          # +0 == -0: a tie
    assert i.tolist() == [0, 1]


def test_topk_nan_ranks_last():
    _, i = R.topk([NAN, -INF, 1.0, NAN, INF], 5)
    assert i.tolist() == [4, 2, 1, 0, 3]
    _, i = R.topk([NAN, NAN, NAN], 2)
    assert i.tolist() == [0, 1]


def test_topk_excluded_below_nan_and_tiebreak():
    _, i = R.topk([5.0, NAN, 1.0], 3, excluded=[True, False, False])
    assert i.tolist() == [2, 1, 0]
    _, i = R.topk([2.0, 2.0, 1.0], 2, tiebreak=[9, 3, 0])
    assert i.tolist() == [1, 0]


def test_topk_random_rows_vs_sorted():
    rs = np.random.default_rng(5)
    v = rs.integers(-3, 4, size=(50, 9)).astype(np.float64)   # many ties
    v[rs.random(v.shape) < 0.1] = NAN
    v[rs.random(v.shape) < 0.05] = -INF
    vals, idx = R.topk(v, 4)
    for row, got in zip(v, idx):
        assert got.tolist() == sorted(range(9), key=lambda e: rank_key(row[e], e))[:4]


# =========================================================================== #
# Activations, scores
# =========================================================================== #

def test_activations_known_values():
    np.testing.assert_allclose(R.gelu([1.0, -1.0, 0.0]),
                               [0.8413447460685429, -0.15865525393145707, 0.0], rtol=1e-15)
    np.testing.assert_allclose(R.silu([1.0, -2.0]), [0.7310585786300049, -0.2384058440442351],
                               rtol=1e-15)
    assert R.relu([-1.0, 2.0]).tolist() == [0.0, 2.0]
    assert np.isnan(R.relu([NAN]))[0]
    np.testing.assert_allclose(R.softplus([0.0, 50.0, -50.0]),
                               [math.log(2), 50.0, math.log1p(math.exp(-50))], rtol=1e-15)


def test_softmax_nan_row_and_max_subtraction():
    s = R.score_fn(np.array([[1000.0, 1000.0], [1.0, NAN]]), "softmax")
    assert s[0].tolist() == [0.5, 0.5]
    assert np.isnan(s[1]).all()


# =========================================================================== #
# Routing
# =========================================================================== #

@pytest.mark.parametrize("score", ["softmax", "sigmoid"])
@pytest.mark.parametrize("order", ["score_then_topk", "topk_then_score"])
@pytest.mark.parametrize("normalize", [False, True])
def test_route_vs_per_token_loop(score, order, normalize):
    spec = moe_spec(router=dict(top_k=3, score=score, order=order, normalize=normalize,
                                scaling=1.5))
    W = make_weights(spec, seed=11, scale=1.0)
    x = rand_x(20, 8, seed=12)
    ids, w = R.route(spec, x, gate=W["gate"])
    ref = naive_moe(spec, x, W)
    assert ids.dtype == np.int32 and w.dtype == np.float32
    np.testing.assert_array_equal(ids, ref["ids"])
    np.testing.assert_allclose(w, ref["weights"], rtol=1e-6)
    if normalize:
        np.testing.assert_allclose(w.sum(1), 1.5, rtol=1e-6)


def test_topk_then_score_hand_case():
    r = load_spec(moe_spec(experts=3, router=dict(order="topk_then_score")))["router"]
    ids, w = R.route_tokens(np.array([[1.0, 3.0, 2.0]]), r)
    e = math.e
    assert ids.tolist() == [[1, 2]]
    np.testing.assert_allclose(w, [[e / (e + 1), 1 / (e + 1)]], rtol=1e-15)


def group_router(score, **kw):
    return load_spec(moe_spec(experts=6, router=dict(
        top_k=2, order="topk_then_score", score="sigmoid", groups=3, topk_groups=2,
        group_score=score, **kw)))["router"]


def test_group_limited_max_hand_case():
    key = np.array([[0.1, 0.9, 0.5, 0.6, 0.8, 0.05]])
    # group maxima: g0 .9, g1 .6, g2 .8 -> keep g0, g2 -> experts {0, 1, 4, 5}
    excl = R.group_exclusion(key, 3, 2, "max")
    assert excl.tolist() == [[False, False, True, True, False, False]]
    ids, w = R.route_tokens(key, group_router("max"), fallbacks=True)
    assert ids.tolist() == [[1, 4, 0, 5]]          # top-2, then fallbacks inside kept groups
    np.testing.assert_allclose(w, R.sigmoid(key[:, [1, 4, 0, 5]]))


def test_group_limited_top2_sum_hand_case():
    key = np.array([[0.1, 0.9, 0.5, 0.6, 0.8, 0.05]])
    # top-2 sums: g0 1.0, g1 1.1, g2 .85 -> keep g1, g0 -> experts {0, 1, 2, 3}
    assert R.group_exclusion(key, 3, 2, "top2_sum").tolist() == \
        [[False, False, False, False, True, True]]
    ids, _ = R.route_tokens(key, group_router("top2_sum"))
    assert ids.tolist() == [[1, 3]]


def test_group_ties_prefer_lower_group():
    key = np.array([[1.0, 0.0, 0.0, 1.0, 0.5, 0.5]])    # maxima 1, 1, .5 (g0/g1 tie)
    assert R.group_exclusion(key, 3, 1, "max").tolist() == [[False, False, True, True,
                                                             True, True]]


def test_selection_bias_chooses_by_biased_score_weights_by_score():
    spec = moe_spec(experts=3, router=dict(top_k=1, selection_bias=True))
    r = load_spec(spec)["router"]
    logits = np.array([[2.0, 1.0, 0.0]])
    s = np.exp(logits) / np.exp(logits).sum()
    ids, w = R.route_tokens(logits, r, gate_bias=np.array([0.0, 0.0, 1.0]))
    assert ids.tolist() == [[2]]
    np.testing.assert_allclose(w, [[s[0, 2]]], rtol=1e-15)
    ids, _ = R.route_tokens(logits, r, gate_bias=np.zeros(3))
    assert ids.tolist() == [[0]]


def test_noise_replaces_logits_and_needs_seed():
    spec = moe_spec(router=dict(noise=True, normalize=True), aux_losses=["z_loss"])
    W = make_weights(spec, seed=2)
    x = rand_x(10, 8, seed=3)
    with pytest.raises(ValueError, match="seed"):
        R.forward(spec, x, **W)
    res = R.forward(spec, x, seed=99, **W)
    xd = x.astype(np.float64)
    clean = xd @ W["gate"].astype(np.float64).T
    z = xd @ W["w_noise"].astype(np.float64).T
    noisy = clean + rng.normal(99, 10, 8) * (np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0))
    ids, w = R.route_tokens(noisy, load_spec(spec)["router"])
    np.testing.assert_array_equal(res["topk_ids"], ids)
    np.testing.assert_allclose(res["topk_weights"], w, rtol=1e-6)
    assert res["z_loss"] == pytest.approx(R.z_loss(clean), rel=1e-12)   # clean logits
    again = R.forward(spec, x, seed=99, **W)
    np.testing.assert_array_equal(res["out"], again["out"])
    other = R.forward(spec, x, seed=100, **W)
    assert not np.array_equal(res["topk_weights"], other["topk_weights"])


def test_fallback_weights_use_topk_normaliser():
    # score_then_topk softmax, normalize, scaling 2
    r = load_spec(moe_spec(experts=4, router=dict(normalize=True, scaling=2.0)))["router"]
    l = np.array([[0.0, 1.0, 2.0, 3.0]])
    s = np.exp(l - 3) / np.exp(l - 3).sum()
    ids, w = R.route_tokens(l, r, fallbacks=True)
    assert ids.tolist() == [[3, 2, 1, 0]]
    np.testing.assert_allclose(w[0], 2 * s[0, [3, 2, 1, 0]] / (s[0, 3] + s[0, 2]), rtol=1e-14)
    # topk_then_score softmax: fallback score exp(l_e - m) / sum_topk exp(l - m)
    r = load_spec(moe_spec(experts=4, router=dict(order="topk_then_score")))["router"]
    ids, w = R.route_tokens(l, r, fallbacks=True)
    Z = math.exp(0) + math.exp(-1)
    np.testing.assert_allclose(w[0], [1 / Z, math.exp(-1) / Z, math.exp(-2) / Z,
                                      math.exp(-3) / Z], rtol=1e-14)


# =========================================================================== #
# Capacity and dispatch
# =========================================================================== #

def test_capacity_formula():
    assert R.capacity(1.25, 10, 2, 8) == 4          # ceil(3.125)
    assert R.capacity(1.0, 4, 1, 4) == 1
    assert R.capacity(2.0, 3, 2, 4) == 3
    # evaluated in float64 left to right, not as an exact rational (which gives 55)
    assert R.capacity(1.1, 100, 1, 2) == 56          # 1.1*100/2 = 55.00000000000001
    # clamped to T*k (no expert can take more), so a huge factor stays an integer
    assert R.capacity(8.0, 10, 2, 4) == 20
    assert R.capacity(1e308, 65, 2, 6) == 130        # 1e308*65 overflows to inf
    assert R.capacity(1.0, 0, 2, 4) == 0


def test_huge_capacity_factor_is_dropless():
    spec = moe_spec(capacity={"factor": 1.7e308, "overflow": "drop"})
    W = make_weights(spec, 3)
    x = rand_x(9, 8, 4)
    huge = R.forward(spec, x, **W)
    dropless = R.forward(moe_spec(), x, **W)
    assert huge["dropped"] == 0
    for key in dropless:
        np.testing.assert_array_equal(huge[key], dropless[key])


def test_dispatch_drop_hand_case():
    ids = np.array([[0, 1], [0, 1], [0, 1], [1, 0]])
    w = np.array([[.6, .4], [.7, .3], [.8, .2], [.9, .1]])
    d = R.dispatch(ids, w, 2, 2, capacity=R.capacity(0.5, 4, 2, 2))     # cap 2
    # j=0: t0->e0 s0, t1->e0 s1, t2 drop, t3->e1 s0; j=1: t0->e1 s1, t1/t2/t3 drop
    assert d.expert.tolist() == [[0, 1], [0, -1], [-1, -1], [1, -1]]
    assert d.slot.tolist() == [[0, 1], [1, -1], [-1, -1], [0, -1]]
    assert d.weight.tolist() == [[.6, .4], [.7, 0], [0, 0], [.9, 0]]
    assert d.counts.tolist() == [2, 2] and d.dropped == 4


def test_dispatch_next_choice_hand_case():
    ids = np.array([[0, 1], [0, 1], [0, 2], [1, 3]])       # k=1, C=2
    w = np.array([[.6, .3], [.5, .4], [.7, .2], [.8, .1]])
    d = R.dispatch(ids, w, 1, 4, capacity=1, overflow="next_choice")
    # t0->e0; t1: e0 full -> e1; t2: e0 full -> e2; t3: e1 full (t1) -> e3
    assert d.expert.tolist() == [[0], [1], [2], [3]]
    assert d.weight.tolist() == [[.6], [.4], [.2], [.1]]
    assert d.column.tolist() == [[0], [1], [1], [1]]
    assert d.slot.tolist() == [[0], [0], [0], [0]]
    assert d.counts.tolist() == [1, 1, 1, 1] and d.dropped == 0
    dd = R.dispatch(ids, w, 1, 4, capacity=1, overflow="drop")
    assert dd.expert.tolist() == [[0], [-1], [-1], [1]] and dd.dropped == 2


def test_dispatch_next_choice_fallback_used_once():
    ids = np.array([[0, 1, 2]] * 3)                        # k=2, E=3, C=3
    w = np.array([[.5, .3, .2]] * 3)
    d = R.dispatch(ids, w, 2, 3, capacity=2, overflow="next_choice")
    # j=0: t0->e0, t1->e0, t2: e0 full -> fallback e2 (col 2)
    # j=1: t0->e1, t1->e1, t2: e1 full; its only fallback column is used -> dropped
    assert d.expert.tolist() == [[0, 1], [0, 1], [2, -1]]
    assert d.column.tolist() == [[0, 1], [0, 1], [2, -1]]
    assert d.counts.tolist() == [2, 2, 1] and d.dropped == 1


def test_dispatch_batch_prioritized_hand_case():
    ids = np.zeros((4, 1), dtype=np.int64)
    w = np.array([[.1], [.4], [NAN], [.4]])
    d = R.dispatch(ids, w, 1, 2, capacity=2, priority="batch_prioritized")
    # order: t1 (.4), t3 (.4, tie -> after t1), t0 (.1), t2 (NaN last)
    assert d.expert[:, 0].tolist() == [-1, 0, -1, 0]
    assert d.slot[:, 0].tolist() == [-1, 0, -1, 1]
    d = R.dispatch(ids, w, 1, 2, capacity=2, priority="token_order")
    assert d.expert[:, 0].tolist() == [0, 0, -1, -1]


def test_dispatch_dropless_counts():
    ids = np.array([[2, 0], [2, 1], [0, 2]])
    d = R.dispatch(ids, np.ones((3, 2)), 2, 4)
    assert d.counts.tolist() == [2, 1, 3, 0] and d.dropped == 0
    # j=0: t0->e2 s0, t1->e2 s1, t2->e0 s0; j=1: t0->e0 s1, t1->e1 s0, t2->e2 s2
    assert d.slot.tolist() == [[0, 1], [1, 0], [0, 2]]


@pytest.mark.parametrize("overflow", ["drop", "next_choice"])
@pytest.mark.parametrize("priority", ["token_order", "batch_prioritized"])
def test_capacity_conservation(overflow, priority):
    spec = moe_spec(router=dict(top_k=3, normalize=True),
                    capacity=dict(factor=0.75, overflow=overflow, priority=priority))
    W = make_weights(spec, seed=4, scale=1.5)
    x = rand_x(40, 8, seed=5)
    res = R.forward(spec, x, **W)
    cap = R.capacity(0.75, 40, 3, 8)
    assert res["expert_counts"].sum() + res["dropped"] == 40 * 3
    assert res["expert_counts"].max() <= cap and res["dropped"] > 0
    assert res["expert_counts"].dtype == np.int32 and isinstance(res["dropped"], int)


# =========================================================================== #
# Whole layers vs the independent per-token formulation
# =========================================================================== #

NAIVE_CASES = {
    "softmax_top2_swiglu": moe_spec(router=dict(normalize=True)),
    "sigmoid_scaled_geglu": moe_spec(activation="geglu",
                                     router=dict(score="sigmoid", normalize=True, scaling=2.5)),
    "mixtral_relu": moe_spec(activation="relu", router=dict(order="topk_then_score")),
    "topk_sigmoid_gelu": moe_spec(activation="gelu",
                                  router=dict(order="topk_then_score", score="sigmoid")),
    "deepseek_v3": moe_spec(activation="silu", router=dict(
        score="sigmoid", normalize=True, scaling=2.5, selection_bias=True, groups=4,
        topk_groups=2, group_score="top2_sum", top_k=3),
        shared_experts=dict(hidden=5)),
    "groups_max": moe_spec(router=dict(groups=4, topk_groups=3)),
    "noise": moe_spec(router=dict(noise=True, top_k=1)),
    "cap_drop": moe_spec(capacity=dict(factor=0.5)),
    "cap_next_batch_groups": moe_spec(router=dict(groups=2, topk_groups=1, top_k=3),
                                      capacity=dict(factor=0.6, overflow="next_choice",
                                                    priority="batch_prioritized")),
    "switch_next": moe_spec(router=dict(top_k=1),
                            capacity=dict(factor=1.0, overflow="next_choice")),
    "shared_gated_qwen": moe_spec(router=dict(top_k=4),
                                  shared_experts=dict(hidden=7, gate=True)),
    "bf16": moe_spec(weight_dtype="bf16", router=dict(normalize=True)),
    "f16_dense": moe_spec(weight_dtype="f16", router=dict(top_k=8)),
}


@pytest.mark.parametrize("name", sorted(NAIVE_CASES))
def test_moe_vs_naive(name):
    spec = NAIVE_CASES[name]
    W = make_weights(spec, seed=sum(map(ord, name)))
    x = rand_x(16, 8, seed=7)
    res = R.forward(spec, x, seed=1234, **W)
    ref = naive_moe(spec, x, W, seed=1234)
    np.testing.assert_array_equal(res["topk_ids"], ref["ids"])
    np.testing.assert_allclose(res["topk_weights"], ref["weights"], rtol=1e-6)
    np.testing.assert_array_equal(res["expert_counts"], ref["counts"])
    assert res["dropped"] == ref["dropped"]
    np.testing.assert_allclose(res["out"], ref["out"], rtol=1e-6, atol=1e-6)
    assert res["out"].dtype == np.float32


def test_dense_k_equals_E_is_full_softmax_mixture():
    spec = moe_spec(experts=4, router=dict(top_k=4), activation="gelu")
    W = make_weights(spec, seed=8)
    x = rand_x(5, 8, seed=9).astype(np.float64)
    p = R.softmax(x @ W["gate"].astype(np.float64).T)
    want = sum(p[:, [e]] * R.expert_ffn(x, W["w1"][e], W["w2"][e], None, "gelu")
               for e in range(4))
    res = R.forward(spec, x.astype(np.float32), **W)
    np.testing.assert_allclose(res["out"], want, rtol=1e-6, atol=1e-7)
    assert res["expert_counts"].tolist() == [5, 5, 5, 5]


def test_every_token_on_one_expert():
    spec = moe_spec(experts=4, router=dict(top_k=1), capacity=dict(factor=1.0))
    W = make_weights(spec, seed=10)
    W["gate"][:] = 0
    W["gate"][2] = 1.0
    x = np.abs(rand_x(8, 8)) + 0.1                   # positive: expert 2 always wins
    res = R.forward(spec, x, **W)
    assert (res["topk_ids"][:, 0] == 2).all()
    cap = R.capacity(1.0, 8, 1, 4)                   # 2
    assert res["expert_counts"].tolist() == [0, 0, cap, 0] and res["dropped"] == 8 - cap
    # dropped tokens produce exactly zero (no shared expert)
    assert (res["out"][cap:] == 0).all() and (res["out"][:cap] != 0).any()
    # dropless: all 8 on expert 2
    res = R.forward(dict(spec, capacity=None), x, **W)
    assert res["expert_counts"].tolist() == [0, 0, 8, 0] and res["dropped"] == 0


def test_shared_expert_gate_direct():
    spec = moe_spec(activation="relu", shared_experts=dict(hidden=4, gate=True))
    W = make_weights(spec, seed=13)
    x = rand_x(6, 8, seed=14)
    xd = x.astype(np.float64)
    sh = (np.maximum(xd @ W["shared_w1"].T.astype(np.float64), 0) @ W["shared_w2"].T
          * (1 / (1 + np.exp(-(xd @ W["shared_gate"].T.astype(np.float64))))))
    no_shared = {k: v for k, v in W.items() if not k.startswith("shared")}
    routed = R.forward(moe_spec(activation="relu"), x, **no_shared)["out"]
    np.testing.assert_allclose(R.layer_output(spec, x, **W), routed + sh, rtol=1e-5, atol=1e-6)


def test_nan_propagates_arithmetically():
    spec = moe_spec()
    W = make_weights(spec, seed=15)
    x = rand_x(3, 8)
    x[1, 0] = NAN
    res = R.forward(spec, x, **W)
    assert np.isnan(res["out"][1]).all() and np.isfinite(res["out"][[0, 2]]).all()
    assert res["topk_ids"][1].tolist() == [0, 1]          # all-NaN row: by index


# =========================================================================== #
# Aux losses
# =========================================================================== #

@pytest.mark.parametrize("score", ["softmax", "sigmoid"])
def test_load_balance_uniform_routing_is_one(score):
    spec = moe_spec(d_model=4, experts=4, router=dict(top_k=1, score=score),
                    aux_losses=["load_balance"])
    W = make_weights(spec, seed=16)
    W["gate"] = (np.eye(4) * 3).astype(np.float32)
    x = np.tile(np.eye(4), (3, 1)).astype(np.float32)    # token t -> expert t mod 4
    res = R.forward(spec, x, **W)
    assert res["expert_counts"].tolist() == [3, 3, 3, 3]
    assert res["load_balance"] == pytest.approx(1.0, abs=1e-12)


def test_aux_losses_hand_cases():
    l = np.array([[0.0, math.log(3)], [0.0, math.log(3)]])  # p = [.25, .75] for both
    ids = np.array([[1], [1]])
    assert R.load_balance_loss(l, ids, 2) == pytest.approx(2 * 0.75)
    sg = 1 / (1 + np.exp(-l))
    assert R.load_balance_loss(l, ids, 2, "sigmoid") == pytest.approx(
        2 * (sg[0, 1] / sg[0].sum()))
    assert R.importance_loss(np.array([[0], [0], [1]]), np.array([[.5], [.5], [1.]]), 2) == 0
    assert R.importance_loss(np.array([[0, 1], [0, 0]]), np.array([[2., 1.], [.5, .5]]), 2) \
        == pytest.approx(1 / (4 + 1e-10))               # imp = [3, 1]: var 1, mean 2
    lz = np.array([[0.0, 0.0], [math.log(3), 0.0]])        # lse = ln 2, ln 4
    assert R.z_loss(lz) == pytest.approx(2.5 * math.log(2) ** 2, rel=1e-14)


def test_aux_losses_in_forward_match_direct():
    spec = moe_spec(router=dict(top_k=2, normalize=True, scaling=0.7),
                    aux_losses=["z_loss", "importance", "load_balance"],
                    capacity=dict(factor=0.5))
    W = make_weights(spec, seed=17)
    x = rand_x(12, 8, seed=18)
    res = R.forward(spec, x, **W)
    l = x.astype(np.float64) @ W["gate"].astype(np.float64).T
    p = np.exp(l - l.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    f = np.array([(res["topk_ids"] == i).sum() for i in range(8)]) / (12 * 2)
    assert res["load_balance"] == pytest.approx(8 * (f * p.mean(0)).sum(), rel=1e-12)
    imp = np.array([res["topk_weights"][res["topk_ids"] == i].astype(np.float64).sum()
                    for i in range(8)])
    assert res["importance"] == pytest.approx(imp.var() / imp.mean() ** 2, rel=1e-5)
    lse = np.log(np.exp(l).sum(1))
    assert res["z_loss"] == pytest.approx((lse ** 2).mean(), rel=1e-12)
    got = R.aux_losses(spec, x, gate=W["gate"])
    assert got == {k: res[k] for k in ("load_balance", "importance", "z_loss")}


# =========================================================================== #
# Product keys: PEER and PKM
# =========================================================================== #

@pytest.mark.parametrize("k", [1, 3, 5, 8, 16])
def test_product_key_two_stage_equals_bruteforce(k):
    rs = np.random.default_rng(k)
    n, half = 4, 3
    q1, q2 = rs.standard_normal((30, half)), rs.standard_normal((30, half))
    k1, k2 = rs.standard_normal((n, half)), rs.standard_normal((n, half))
    s, ids = R.product_key_topk(q1, q2, k1, k2, k)
    sb, idb = R.product_key_topk_bruteforce(q1, q2, k1, k2, k)
    np.testing.assert_array_equal(ids, idb)
    np.testing.assert_allclose(s, sb, rtol=1e-15)


def test_product_key_two_stage_with_ties():
    rs = np.random.default_rng(21)
    n = 5
    q1 = rs.integers(-1, 2, size=(60, 2)).astype(float)     # small integers: exact sums,
    q2 = rs.integers(-1, 2, size=(60, 2)).astype(float)     # many ties
    k1 = rs.integers(-1, 2, size=(n, 2)).astype(float)
    k2 = rs.integers(-1, 2, size=(n, 2)).astype(float)
    for k in (2, 4, 7):
        _, ids = R.product_key_topk(q1, q2, k1, k2, k)
        _, idb = R.product_key_topk_bruteforce(q1, q2, k1, k2, k)
        np.testing.assert_array_equal(ids, idb)
    # all equal: lowest expert ids
    _, ids = R.product_key_topk(np.ones((1, 1)), np.zeros((1, 1)), np.ones((3, 1)),
                                np.ones((3, 1)), 4)
    assert ids.tolist() == [[0, 1, 2, 3]]


def pk_spec(kind, **kw):
    base = dict(name="p", kind=kind, d_model=6, experts=9, heads=2, top_k=3, key_dim=4)
    base.update(kw)
    return base


def direct_product_key(spec, x, W):
    """Score all N full keys [keys1[i]; keys2[j]] directly, rank with sorted()."""
    s = load_spec(spec)
    n = math.isqrt(s["experts"])
    dk, h, k = s["key_dim"], s["heads"], s["top_k"]
    Wd = {n_: v.astype(np.float64) for n_, v in W.items()}
    full_keys = np.array([np.concatenate([Wd["keys1"][i], Wd["keys2"][j]])
                          for i in range(n) for j in range(n)])
    q = x.astype(np.float64) @ Wd["query"].T
    if s["query_batchnorm"]:
        q = (q - Wd["bn_mean"]) / np.sqrt(Wd["bn_var"] + 1e-5) * Wd["bn_weight"] + Wd["bn_bias"]
    out = np.zeros((x.shape[0], x.shape[1]))
    all_ids = np.zeros((x.shape[0], h, k), dtype=int)
    for t in range(x.shape[0]):
        for hh in range(h):
            sc = full_keys @ q[t, hh * dk:(hh + 1) * dk]
            top = sorted(range(n * n), key=lambda e: rank_key(sc[e], e))[:k]
            all_ids[t, hh] = top
            if s["score"] == "softmax":
                m = max(sc[e] for e in top)
                g = [math.exp(sc[e] - m) for e in top]
                g = [v / sum(g) for v in g]
            else:
                g = [n_sigmoid(sc[e]) for e in top]
            for gi, e in zip(g, top):
                if s["kind"] == "peer":
                    a = n_act(float(Wd["expert_in"][e] @ x[t]), s["activation"])
                    out[t] += gi * a * Wd["expert_out"][e]
                else:
                    out[t] += gi * Wd["values"][e]
    return out, all_ids


@pytest.mark.parametrize("kind,kw", [
    ("peer", {}),
    ("peer", dict(activation="relu", score="sigmoid", query_batchnorm=True)),
    ("peer", dict(activation="silu", top_k=9, heads=1)),
    ("pkm", {}),
    ("pkm", dict(query_batchnorm=True, score="sigmoid", top_k=5)),
])
def test_product_key_layers_vs_direct(kind, kw):
    spec = pk_spec(kind, **kw)
    W = make_weights(spec, seed=22)
    x = rand_x(7, 6, seed=23)
    res = R.forward(spec, x, **W)
    out, ids = direct_product_key(spec, x, W)
    np.testing.assert_array_equal(res["topk_ids"], ids)
    np.testing.assert_allclose(res["out"], out, rtol=1e-5, atol=1e-6)
    assert res["topk_ids"].shape == (7, load_spec(spec)["heads"], load_spec(spec)["top_k"])
    assert set(res) == {"out", "topk_ids", "topk_weights"}


def test_pkm_hand_case():
    spec = dict(name="p", kind="pkm", d_model=2, experts=4, heads=1, top_k=2, key_dim=2)
    W = dict(query=np.eye(2, dtype=np.float32), keys1=np.array([[1.], [2.]], np.float32),
             keys2=np.array([[3.], [-1.]], np.float32),
             values=np.array([[1, 0], [0, 1], [2, 2], [5, 5]], np.float32))
    res = R.forward(spec, np.array([[1.0, 1.0]], np.float32), **W)
    # s1 = [1, 2], s2 = [3, -1]: best sums 2+3 (id 2), 1+3 (id 0)
    e = math.e
    assert res["topk_ids"].tolist() == [[[2, 0]]]
    np.testing.assert_allclose(res["topk_weights"][0, 0], [e / (1 + e), 1 / (1 + e)], rtol=1e-6)
    np.testing.assert_allclose(res["out"][0], [(2 * e + 1) / (1 + e)] * 1 + [2 * e / (1 + e)],
                               rtol=1e-6)


# =========================================================================== #
# MH-MoE
# =========================================================================== #

def test_mh_moe_one_head_is_projected_moe():
    router = dict(top_k=2, normalize=True)
    mh = dict(name="h", kind="mh_moe", d_model=8, heads=1, experts=4, expert_hidden=5,
              router=router, aux_losses=["load_balance"])
    plain = dict(name="m", kind="moe", d_model=8, experts=4, expert_hidden=5, router=router,
                 aux_losses=["load_balance"])
    W = make_weights(mh, seed=24)
    x = rand_x(9, 8, seed=25)
    res = R.forward(mh, x, **W)
    xp = (x.astype(np.float64) @ W["head_proj"].T).astype(np.float32)
    inner = R.forward(plain, xp, **{k: W[k] for k in ("gate", "w1", "w2", "w3")})
    np.testing.assert_array_equal(res["topk_ids"], inner["topk_ids"])
    np.testing.assert_allclose(res["out"], inner["out"].astype(np.float64) @ W["merge_proj"].T,
                               rtol=1e-5, atol=1e-5)
    assert res["load_balance"] == pytest.approx(inner["load_balance"], rel=1e-5)


def test_mh_moe_sub_token_layout_and_noise():
    h, D = 4, 8
    mh = dict(name="h", kind="mh_moe", d_model=D, heads=h, experts=4, expert_hidden=3,
              activation="gelu", router=dict(top_k=2, noise=True),
              capacity=dict(factor=1.0))
    sub = dict(name="s", kind="moe", d_model=D // h, experts=4, expert_hidden=3,
               activation="gelu", router=dict(top_k=2, noise=True), capacity=dict(factor=1.0))
    W = make_weights(mh, seed=26)
    x = rand_x(5, D, seed=27)
    xp = x.astype(np.float64) @ W["head_proj"].T
    rows = [xp[t, i * (D // h):(i + 1) * (D // h)] for t in range(5) for i in range(h)]
    subx = np.array(rows)
    res = R.forward(mh, x, seed=5, **W)
    assert res["topk_ids"].shape == (5 * h, 2)
    inner = naive_moe(sub, subx, {k: W[k] for k in ("gate", "w_noise", "w1", "w2")}, seed=5)
    np.testing.assert_array_equal(res["topk_ids"], inner["ids"])
    np.testing.assert_array_equal(res["expert_counts"], inner["counts"])
    assert res["dropped"] == inner["dropped"]
    merged = inner["out"].reshape(5, D)
    np.testing.assert_allclose(res["out"], merged @ W["merge_proj"].T, rtol=1e-5, atol=1e-6)


# =========================================================================== #
# Upcycling
# =========================================================================== #

@pytest.mark.parametrize("act", ["swiglu", "relu"])
def test_upcycle_copy_equals_dense(act):
    rs = np.random.default_rng(30)
    F, D = 6, 8
    dense = dict(w1=rs.standard_normal((F, D)).astype(np.float32),
                 w2=rs.standard_normal((D, F)).astype(np.float32))
    if act == "swiglu":
        dense["w3"] = rs.standard_normal((F, D)).astype(np.float32)
    spec = moe_spec(activation=act, expert_hidden=F, router=dict(top_k=3, normalize=True))
    W = moe_mlir.upcycle(dense, 8, "copy", spec=spec, gate="normal", seed=1, gate_std=1.0)
    assert W["w1"].shape == (8, F, D) and W["w2"].shape == (8, D, F)
    x = rand_x(10, 8, seed=31)
    got = R.layer_output(spec, x, **W)
    want = R.expert_ffn(x, dense["w1"], dense["w2"], dense.get("w3"), act)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    ids, _ = R.route(spec, x, gate=W["gate"])
    assert len(np.unique(ids)) > 3                     # a random gate really routes


def test_upcycle_split_sums_to_dense():
    rs = np.random.default_rng(32)
    F, D, E = 12, 8, 4
    dense = dict(w1=rs.standard_normal((F, D)), w3=rs.standard_normal((F, D)),
                 w2=rs.standard_normal((D, F)))
    W = moe_mlir.upcycle(dense, E, mode="split")
    assert W["w1"].shape == (E, 3, D) and W["w2"].shape == (E, D, 3)
    assert W["gate"].shape == (E, D) and not W["gate"].any()
    np.testing.assert_array_equal(W["w1"][1], dense["w1"][3:6].astype(np.float32))
    np.testing.assert_array_equal(W["w2"][2], dense["w2"][:, 6:9].astype(np.float32))
    x = rand_x(6, D, seed=33)
    want = R.expert_ffn(x, *(dense[k].astype(np.float32) for k in ("w1", "w2", "w3")), "swiglu")
    total = sum(R.expert_ffn(x, W["w1"][e], W["w2"][e], W["w3"][e], "swiglu") for e in range(E))
    np.testing.assert_allclose(total, want, rtol=1e-10, atol=1e-10)
    # through the layer: k = E, sigmoid(0) * 2 = 1 for every expert
    spec = moe_spec(experts=E, expert_hidden=3, router=dict(top_k=E, score="sigmoid",
                                                             scaling=2.0))
    np.testing.assert_allclose(R.layer_output(spec, x, **W), want, rtol=1e-5, atol=1e-5)


def test_upcycle_errors():
    dense = dict(w1=np.zeros((6, 4)), w2=np.zeros((4, 6)))
    with pytest.raises(ValueError, match="divide"):
        moe_mlir.upcycle(dense, 4, "split")
    with pytest.raises(ValueError, match="mode"):
        moe_mlir.upcycle(dense, 2, "clone")
    with pytest.raises(ValueError, match="seed"):
        moe_mlir.upcycle(dense, 2, gate="normal")
    with pytest.raises(ValueError, match="w3"):
        moe_mlir.upcycle(dense, 2, spec=moe_spec(d_model=4, experts=2))
    with pytest.raises(ValueError, match="w2"):
        moe_mlir.upcycle(dict(w1=np.zeros((6, 4)), w2=np.zeros((6, 4))), 2)
    W = moe_mlir.upcycle(dense, spec=moe_spec(d_model=4, experts=2, activation="gelu",
                                              router=dict(selection_bias=True)))
    assert W["gate_bias"].shape == (2,) and set(W) == {"w1", "w2", "gate", "gate_bias"}


# =========================================================================== #
# Spec loader
# =========================================================================== #

def test_spec_defaults_moe():
    s = load_spec("name: a\nkind: moe\nd_model: 16\nexperts: 4\nexpert_hidden: 32\n"
                  "router: {top_k: 2}\n")
    assert s == dict(
        name="a", kind="moe", d_model=16, experts=4, weight_dtype="f32", expert_hidden=32,
        activation="swiglu", swiglu=None, expert_bias=False, expert_scale=False,
        output_bias=False,
        router=dict(top_k=2, score="softmax", order="score_then_topk", normalize=False,
                    scaling=1.0, selection_bias=False, groups=1, topk_groups=1,
                    group_score="max", noise=False, logit_bias=False, softcap=None,
                    rms_norm=False, rms_norm_eps=1e-6, apply_score="output"),
        shared_experts=dict(hidden=0, gate=False), capacity=None, aux_losses=[])
    assert load_spec(s) == s                               # idempotent


def test_spec_defaults_other_kinds():
    p = load_spec(dict(name="p", kind="peer", d_model=8, experts=16, heads=2, top_k=4,
                       key_dim=8))
    assert p["activation"] == "gelu" and p["score"] == "softmax"
    assert p["query_batchnorm"] is False and p["weight_dtype"] == "f32"
    k = load_spec(dict(name="k", kind="pkm", d_model=8, experts=16, heads=1, top_k=4,
                       key_dim=8))
    assert "activation" not in k
    m = load_spec(dict(name="m", kind="mh_moe", d_model=8, heads=2, experts=4,
                       expert_hidden=4, router=dict(top_k=1),
                       capacity=dict(factor=2), aux_losses=["z_loss", "load_balance"]))
    assert m["capacity"] == dict(factor=2.0, overflow="drop", priority="token_order")
    assert isinstance(m["capacity"]["factor"], float)
    assert m["aux_losses"] == ["load_balance", "z_loss"] and "shared_experts" not in m
    assert m["activation"] == "swiglu"


def test_spec_sources(tmp_path):
    d = moe_spec(capacity=dict(factor=1.25))
    (tmp_path / "a.json").write_text(json.dumps(d))
    (tmp_path / "b.yaml").write_text(
        "name: m\nkind: moe\nd_model: 8\nexperts: 8\nexpert_hidden: 6\n"
        "router:\n  top_k: 2\ncapacity:\n  factor: 125e-2\n")
    want = load_spec(d)
    assert load_spec(str(tmp_path / "a.json")) == want
    assert load_spec(tmp_path / "b.yaml") == want          # PathLike, YAML 1.2 float
    assert load_spec(json.dumps(d)) == want               # JSON text
    assert spec_hash(tmp_path / "b.yaml") == spec_hash(d)
    assert spec_hash(d) != spec_hash(moe_spec(capacity=dict(factor=1.5)))
    assert spec_hash(dict(d, router=dict(top_k=2, scaling=1))) == spec_hash(d)
    assert len(spec_hash(d)) == 64
    (tmp_path / "bad.yaml").write_text("name: m\nkind: moe\nd_model: 8\nexperts: 8\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*expert_hidden"):
        load_spec(tmp_path / "bad.yaml")
    with pytest.raises(FileNotFoundError):
        load_spec(str(tmp_path / "missing.yaml"))


PK = dict(name="p", kind="peer", d_model=8, experts=16, heads=2, top_k=4, key_dim=8)


def with_(base, **kw):
    d = json.loads(json.dumps(base))
    for k, v in kw.items():
        if "__" in k:
            outer, inner = k.split("__")
            d.setdefault(outer, {})[inner] = v
        elif v is None:
            d.pop(k)
        else:
            d[k] = v
    return d


BASE = moe_spec()
SPEC_ERRORS = [
    # unknown keys
    (with_(BASE, heads=2), "heads"),
    (with_(BASE, router__temperature=1.0), "router.temperature"),
    (with_(BASE, capacity={"factor": 1, "slack": 2}), "capacity.slack"),
    (with_(PK, activation_fn="gelu"), "activation_fn"),
    (dict(with_(PK, kind="pkm"), activation="gelu"), "activation"),
    # missing required
    (with_(BASE, name=None), "name"),
    (with_(BASE, d_model=None), "d_model"),
    (with_(BASE, expert_hidden=None), "expert_hidden"),
    (with_(BASE, router={"score": "softmax"}), "router.top_k"),
    (with_(PK, key_dim=None), "key_dim"),
    (with_(PK, heads=None), "heads"),
    ({"name": "x", "d_model": 4}, "kind"),
    (with_(BASE, capacity={"overflow": "drop"}), "capacity.factor"),
    # wrong types
    (with_(BASE, d_model="8"), "d_model"),
    (with_(BASE, experts=8.0), "experts"),
    (with_(BASE, experts=True), "experts"),
    (with_(BASE, router__normalize="yes"), "router.normalize"),
    (with_(BASE, router__scaling="big"), "router.scaling"),
    (with_(BASE, aux_losses="z_loss"), "aux_losses"),
    (with_(BASE, router=[1, 2]), "router"),
    (with_(BASE, name="3d-moe"), "name"),
    # bad enum values
    (with_(BASE, kind="dense"), "kind"),
    (with_(BASE, activation="tanh"), "activation"),
    (with_(BASE, weight_dtype="f8"), "weight_dtype"),
    (with_(BASE, router__score="relu"), "router.score"),
    (with_(BASE, router__order="random"), "router.order"),
    (with_(BASE, router__group_score="mean"), "router.group_score"),
    (with_(BASE, capacity={"factor": 1, "overflow": "spill"}), "capacity.overflow"),
    (with_(BASE, capacity={"factor": 1, "priority": "random"}), "capacity.priority"),
    (with_(BASE, aux_losses=["entropy"]), "aux_losses[0]"),
    (with_(PK, activation="swiglu"), "activation"),
    # impossible sizes / values
    (with_(PK, experts=10), "experts"),
    (with_(PK, key_dim=7), "key_dim"),
    (with_(PK, experts=4, top_k=5), "top_k"),
    ({"name": "h", "kind": "mh_moe", "d_model": 10, "heads": 3, "experts": 4,
      "expert_hidden": 4, "router": {"top_k": 1}}, "heads"),
    (with_(BASE, router__top_k=9), "router.top_k"),
    (with_(BASE, router__top_k=0), "router.top_k"),
    (with_(BASE, router__groups=3), "router.groups"),
    (with_(BASE, router__groups=2, router__topk_groups=3), "router.topk_groups"),
    (with_(BASE, router__groups=4, router__topk_groups=1, router__top_k=3), "router.top_k"),
    (with_(BASE, router__groups=8, router__topk_groups=8, router__group_score="top2_sum"),
     "router.group_score"),
    (with_(BASE, capacity={"factor": 0}), "capacity.factor"),
    (with_(BASE, shared_experts={"gate": True}), "shared_experts.gate"),
    (with_(BASE, shared_experts={"hidden": -1}), "shared_experts.hidden"),
    (with_(BASE, aux_losses=["z_loss", "z_loss"]), "aux_losses[1]"),
    ("[1, 2]", "mapping"),
]


@pytest.mark.parametrize("spec,field", SPEC_ERRORS, ids=[f"{i}-{f}" for i, (_, f) in
                                                         enumerate(SPEC_ERRORS)])
def test_spec_errors_name_the_field(spec, field):
    with pytest.raises(ValueError) as err:
        load_spec(spec)
    assert field in str(err.value)


def test_weight_shapes_contract():
    s = moe_spec(d_model=4, experts=2, expert_hidden=3, weight_dtype="bf16",
                 router=dict(top_k=1, selection_bias=True, noise=True),
                 shared_experts=dict(hidden=5, gate=True))
    assert weight_shapes(s) == {
        "gate": ((2, 4), "bf16"), "gate_bias": ((2,), "f32"), "w_noise": ((2, 4), "bf16"),
        "w1": ((2, 3, 4), "bf16"), "w3": ((2, 3, 4), "bf16"), "w2": ((2, 4, 3), "bf16"),
        "shared_w1": ((5, 4), "bf16"), "shared_w3": ((5, 4), "bf16"),
        "shared_w2": ((4, 5), "bf16"), "shared_gate": ((1, 4), "bf16")}
    assert list(weight_shapes(moe_spec(activation="gelu", d_model=4, experts=2,
                                       expert_hidden=3))) == ["gate", "w1", "w2"]
    assert weight_shapes(dict(PK, query_batchnorm=True, weight_dtype="f16")) == {
        "query": ((16, 8), "f16"), "bn_mean": ((16,), "f32"), "bn_var": ((16,), "f32"),
        "bn_weight": ((16,), "f32"), "bn_bias": ((16,), "f32"), "keys1": ((4, 4), "f16"),
        "keys2": ((4, 4), "f16"), "expert_in": ((16, 8), "f16"),
        "expert_out": ((16, 8), "f16")}
    assert list(weight_shapes(dict(PK, kind="pkm"))) == ["query", "keys1", "keys2", "values"]
    assert weight_shapes(dict(PK, kind="pkm"))["values"] == ((16, 8), "f32")
    assert weight_shapes(dict(name="h", kind="mh_moe", d_model=8, heads=2, experts=3,
                              expert_hidden=5, router=dict(top_k=1))) == {
        "head_proj": ((8, 8), "f32"), "merge_proj": ((8, 8), "f32"), "gate": ((3, 4), "f32"),
        "w1": ((3, 5, 4), "f32"), "w3": ((3, 5, 4), "f32"), "w2": ((3, 4, 5), "f32")}


def test_forward_validates_weights():
    spec = moe_spec()
    W = make_weights(spec)
    x = rand_x(2, 8)
    with pytest.raises(ValueError, match="missing weight 'w3'"):
        R.forward(spec, x, **{k: v for k, v in W.items() if k != "w3"})
    with pytest.raises(ValueError, match="unknown weight 'w4'"):
        R.forward(spec, x, w4=W["w1"], **W)
    with pytest.raises(ValueError, match="'w1' must have shape"):
        R.forward(spec, x, **dict(W, w1=W["w1"][:, :5]))
    with pytest.raises(ValueError, match="x must have shape"):
        R.forward(spec, x[:, :4], **W)


def test_public_api():
    for name in ("reference", "upcycle", "load_spec", "weight_shapes", "spec_hash",
                 "round_to_dtype"):
        assert hasattr(moe_mlir, name)
    for name in ("score_fn", "topk", "route_tokens", "capacity", "dispatch", "expert_ffn",
                 "activation", "product_key_topk", "peer", "pkm", "mh_moe",
                 "load_balance_loss", "importance_loss", "z_loss", "forward",
                 "layer_output", "route", "aux_losses", "round_to_dtype",
                 "product_key_topk_bruteforce"):
        assert callable(getattr(R, name))
