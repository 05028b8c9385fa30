"""End-to-end tests of compiled PEER and PKM layers against the NumPy reference.

Product-key search (two stages, k' = min(k, n), ties by expert id), softmax and
sigmoid scores, query BatchNorm, every PEER activation, top_k > n (up to n*n),
weight dtypes, ties, NaN tokens and seeded random draws.
"""

import numpy as np
import pytest

from moe_mlir import reference as R
from moe_mlir.spec import load_spec

from compile_helpers import (assert_close, check_forward, compiled, make_weights, make_x,
                             pk_spec, precompile, requires_compiler)

pytestmark = requires_compiler

TOKENS = [1, 2, 5, 17, 33, 65]

PKM = {
    "softmax": pk_spec("pkm", "pkm_soft"),
    "sigmoid": pk_spec("pkm", "pkm_sig", score="sigmoid"),
    "batchnorm": pk_spec("pkm", "pkm_bn", query_batchnorm=True),
    "batchnorm_sigmoid_3heads": pk_spec("pkm", "pkm_bn_sig", heads=3, n=5, top_k=4,
                                        key_dim=10, score="sigmoid", query_batchnorm=True),
    "top1": pk_spec("pkm", "pkm_top1", heads=1, top_k=1, key_dim=2),
    "top_k_eq_n": pk_spec("pkm", "pkm_k_n", n=3, top_k=3),
    "top_k_gt_n": pk_spec("pkm", "pkm_k_gt_n", n=3, top_k=5, d_model=24),
    "top_k_eq_nn": pk_spec("pkm", "pkm_k_nn", n=3, top_k=9, heads=1),
    "bf16": pk_spec("pkm", "pkm_bf16", weight_dtype="bf16", query_batchnorm=True),
    "f16": pk_spec("pkm", "pkm_f16", weight_dtype="f16"),
}

PEER = {
    "gelu": pk_spec("peer", "peer_gelu", activation="gelu"),
    "relu": pk_spec("peer", "peer_relu", activation="relu"),
    "silu": pk_spec("peer", "peer_silu", activation="silu"),
    "gelu_batchnorm": pk_spec("peer", "peer_gelu_bn", activation="gelu", query_batchnorm=True),
    "relu_batchnorm_sigmoid": pk_spec("peer", "peer_relu_bn_sig", activation="relu",
                                      query_batchnorm=True, score="sigmoid"),
    "silu_sigmoid": pk_spec("peer", "peer_silu_sig", activation="silu", score="sigmoid"),
    "top_k_gt_n": pk_spec("peer", "peer_k_gt_n", n=4, top_k=7, heads=2),
    "top_k_eq_nn_sigmoid": pk_spec("peer", "peer_k_nn", n=2, top_k=4, heads=3,
                                   score="sigmoid", activation="silu"),
    "many_heads": pk_spec("peer", "peer_heads", n=5, heads=4, top_k=3, key_dim=6,
                          d_model=40, query_batchnorm=True),
    "bf16": pk_spec("peer", "peer_bf16", weight_dtype="bf16", activation="silu"),
    "f16_batchnorm": pk_spec("peer", "peer_f16", weight_dtype="f16", query_batchnorm=True),
}


def random_pk_spec(draw: int) -> dict:
    rs = np.random.default_rng(2000 + draw)
    kind = "peer" if draw % 2 else "pkm"
    n = int(rs.integers(2, 7))
    spec = pk_spec(kind, f"rand_{kind}{draw}", d_model=int(rs.integers(8, 49)), n=n,
                   heads=int(rs.integers(1, 5)), top_k=int(rs.integers(1, n * n + 1)),
                   key_dim=2 * int(rs.integers(1, 9)),
                   score=str(rs.choice(["softmax", "sigmoid"])),
                   query_batchnorm=bool(rs.random() < 0.5),
                   weight_dtype=str(rs.choice(["f32", "bf16", "f16"])))
    if kind == "peer":
        spec["activation"] = str(rs.choice(["gelu", "relu", "silu"]))
    return spec


RANDOM = [random_pk_spec(i) for i in range(6)]
TIES = {k: pk_spec(k, f"{k}_ties", n=4, top_k=6, heads=2) for k in ("pkm", "peer")}
NANS = {k: pk_spec(k, f"{k}_nan", n=3, top_k=4, heads=2, query_batchnorm=True)
        for k in ("pkm", "peer")}


@pytest.fixture(scope="module", autouse=True)
def _compile_all():
    precompile(list(PKM.values()) + list(PEER.values()) + RANDOM + list(TIES.values())
               + list(NANS.values()) + list(EXACT.values()))


def run_case(spec, T, seed):
    s = load_spec(spec)
    W = make_weights(s, seed)
    x = make_x(T, s["d_model"], seed + 3)
    got = check_forward(s, x, W)
    assert got["topk_ids"].shape == (T, s["heads"], s["top_k"])
    ids = got["topk_ids"].reshape(T * s["heads"], -1)
    assert ((ids >= 0) & (ids < s["experts"])).all()
    assert all(len(set(row)) == len(row) for row in ids.tolist()), "an expert twice in a head"
    return got


@pytest.mark.parametrize("T", TOKENS)
@pytest.mark.parametrize("case", list(PKM))
def test_pkm(case, T):
    run_case(PKM[case], T, seed=200 + list(PKM).index(case))


@pytest.mark.parametrize("T", TOKENS)
@pytest.mark.parametrize("case", list(PEER))
def test_peer(case, T):
    run_case(PEER[case], T, seed=300 + list(PEER).index(case))


def test_two_stage_equals_bruteforce_here():
    """With well separated scores the two-stage search is the full top-k over
    all n*n sums; check the kernel's ids against the brute force too."""
    s = load_spec(PKM["top_k_gt_n"])
    W = make_weights(s, 7)
    x = make_x(17, s["d_model"], 8)
    got = compiled(s).forward(x, **W)
    q = x.astype(np.float64) @ W["query"].astype(np.float64).T
    dk = s["key_dim"]
    for h in range(s["heads"]):
        qh = q[:, h * dk:(h + 1) * dk]
        _, ids = R.product_key_topk_bruteforce(qh[:, :dk // 2], qh[:, dk // 2:],
                                               W["keys1"], W["keys2"], s["top_k"])
        np.testing.assert_array_equal(got["topk_ids"][:, h], ids)


def test_softmax_weights_sum_to_one_per_head():
    s = load_spec(PEER["gelu"])
    got = run_case(s, 33, seed=9)
    np.testing.assert_allclose(got["topk_weights"].sum(axis=-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("kind", list(TIES))
def test_zero_query_ties_by_expert_id(kind):
    """q = 0: every score is 0; each stage keeps sub-keys 0..k'-1 and the
    candidates rank by expert id i*n + j."""
    s = load_spec(TIES[kind])
    W = make_weights(s, 11)
    W["query"][:] = 0.0
    got = check_forward(s, make_x(5, s["d_model"], 12), W)
    n = 4
    cand = sorted(i * n + j for i in range(4) for j in range(4))[:s["top_k"]]
    assert (got["topk_ids"] == np.array(cand)).all()


@pytest.mark.parametrize("kind", list(TIES))
def test_duplicate_sub_keys_tie_by_expert_id(kind):
    """keys1 rows 0 and 2 equal and keys2 rows 1 and 3 equal: equal sums go to
    the lower expert id."""
    s = load_spec(TIES[kind])
    W = make_weights(s, 13)
    W["keys1"][2] = W["keys1"][0]
    W["keys2"][3] = W["keys2"][1]
    got = check_forward(s, make_x(33, s["d_model"], 14), W)
    n = 4
    for row in got["topk_ids"].reshape(-1, s["top_k"]).tolist():
        for e in row:
            i, j = divmod(e, n)
            twins = [(0 if i == 2 else i) * n + (1 if j == 3 else j)]
            for t in twins:
                if t != e:
                    assert t in row and row.index(t) < row.index(e), row


EXACT = {k: pk_spec(k, f"{k}_exact", n=3, top_k=3, heads=1, key_dim=2, d_model=8)
         for k in ("pkm", "peer")}


@pytest.mark.parametrize("kind", list(EXACT))
def test_equal_sums_tie_by_expert_id_not_position(kind):
    """Hand-computed: q1 = q2 = 1, keys1 = [1, 2, -5], keys2 = [2, 1, -5].
    Stage 1 ranks i = 1, 0, 2 and stage 2 ranks j = 0, 1, 2.  The sums are
    (1,0) = 4, then (0,0) = 3 = (1,1), ...: the tie goes to the lower expert id
    0 (= 0*3+0), before 4 (= 1*3+1), although (1,1) comes first in the
    candidate list.  So ids = [3, 0, 4]."""
    s = load_spec(EXACT[kind])
    W = make_weights(s, 19)
    W["query"][:] = 0.0
    W["query"][0, 0] = 1.0
    W["query"][1, 1] = 1.0
    W["keys1"][:, 0] = [1.0, 2.0, -5.0]
    W["keys2"][:, 0] = [2.0, 1.0, -5.0]
    x = make_x(4, 8, 20)
    x[:, :2] = 1.0
    got = check_forward(s, x, W)
    assert got["topk_ids"].reshape(4, 3).tolist() == [[3, 0, 4]] * 4


@pytest.mark.parametrize("T", [2, 17])
@pytest.mark.parametrize("kind", list(NANS))
def test_nan_token(kind, T):
    s = load_spec(NANS[kind])
    W = make_weights(s, 15)
    x = make_x(T, s["d_model"], 16)
    bad = T - 1
    x[bad, 0] = np.nan
    got = check_forward(s, x, W, equal_nan=True)
    assert np.isnan(got["out"][bad]).all()
    keep = np.arange(T) != bad
    assert np.isfinite(got["out"][keep]).all()
    clean = compiled(s).forward(np.ascontiguousarray(x[keep]), **W)
    assert_close(got["out"][keep], clean["out"], "out of the other tokens")
    np.testing.assert_array_equal(got["topk_ids"][keep], clean["topk_ids"])


def test_nan_in_one_sub_key():
    """A NaN row of keys1 makes those sub-scores NaN: they rank last, so with
    k' <= n - 1 no expert of that row is ever chosen."""
    s = load_spec(PKM["softmax"])          # n = 4, top_k = 3
    W = make_weights(s, 17)
    W["keys1"][1] = np.nan
    got = check_forward(s, make_x(17, s["d_model"], 18), W, equal_nan=True)
    assert (got["topk_ids"] // 4 != 1).all()
    assert np.isfinite(got["out"]).all()


@pytest.mark.parametrize("draw", range(len(RANDOM)))
def test_random_spec(draw):
    s = load_spec(RANDOM[draw])
    rs = np.random.default_rng(draw)
    for T in (int(rs.integers(1, 8)), int(rs.integers(8, 70))):
        run_case(s, T, seed=400 + draw)
