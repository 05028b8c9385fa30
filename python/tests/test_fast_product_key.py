"""The fast CPU kernels of PEER and PKM (convert-moe-to-cpu's product_key_topk
and single_neuron_experts patterns) against the NumPy reference and the
reference lowering, and their exactness: bit-identical results for any thread
count and whatever batch a token runs in.

The shapes reach the kernels' edge cases: n not a multiple of the vector width
(partial sub-key vectors), n large enough for the vectorised skip of the scan
(the lane-wise lower bound of the k'-th score), d_k/2 below, at and above the
vector width, top_k > n (k' = n) and top_k = n·n, d_model with whole and
partial column chunks of the accumulation, bf16/f16 weights, query BatchNorm
on and off, softmax and sigmoid, every PEER activation.
"""

import numpy as np
import pytest

import moe_mlir
from moe_mlir.spec import load_spec

from compile_helpers import (assert_close, check_forward, compiled, make_weights, make_x,
                             pk_spec, precompile, requires_compiler)

pytestmark = requires_compiler

TOKENS = [1, 5, 64]

SPECS = {
    # n = 5: one partial vector of sub-keys; d_k/2 = 4 < vector width.
    "peer_n5": pk_spec("peer", "fpk_peer_n5", d_model=24, n=5, heads=2, top_k=3, key_dim=8,
                       activation="gelu"),
    # n = 11, d_k/2 = 6, three heads, BatchNorm, sigmoid.
    "peer_n11_bn_sigmoid": pk_spec("peer", "fpk_peer_n11", d_model=40, n=11, heads=3, top_k=6,
                                   key_dim=12, activation="silu", score="sigmoid",
                                   query_batchnorm=True),
    # n = 20, d_k/2 = 10 (a vector and a masked tail), bf16, d_model = 300:
    # a whole 256-column chunk and a partial one.
    "peer_n20_bf16": pk_spec("peer", "fpk_peer_n20_bf16", d_model=300, n=20, heads=4, top_k=16,
                             key_dim=20, activation="relu", weight_dtype="bf16",
                             query_batchnorm=True),
    # n = 40 (5 whole vectors), top_k = 16: the scan skips vectors below the
    # lane-wise lower bound; f16 weights.
    "peer_n40_f16": pk_spec("peer", "fpk_peer_n40_f16", d_model=64, n=40, heads=8, top_k=16,
                            key_dim=32, activation="gelu", weight_dtype="f16"),
    # top_k > n: k' = n, both stages keep every sub-key.
    "peer_k_gt_n": pk_spec("peer", "fpk_peer_k_gt_n", d_model=16, n=3, heads=2, top_k=7,
                           key_dim=4, activation="silu"),
    # top_k = n·n: every expert, in rank order.
    "pkm_k_eq_nn": pk_spec("pkm", "fpk_pkm_k_nn", d_model=16, n=3, heads=1, top_k=9, key_dim=2),
    # n = 13, d_k/2 = 17 (two vectors and one lane), d_model = 520.
    "pkm_n13_bn": pk_spec("pkm", "fpk_pkm_n13", d_model=520, n=13, heads=2, top_k=5, key_dim=34,
                          query_batchnorm=True),
    # bf16 keys and values, top_k > n, sigmoid.
    "pkm_n9_bf16_sigmoid": pk_spec("pkm", "fpk_pkm_n9_bf16", d_model=64, n=9, heads=2, top_k=12,
                                   key_dim=16, weight_dtype="bf16", score="sigmoid"),
    # n = 64, top_k = 4: eight whole vectors, k' below the vector width.
    "pkm_n64": pk_spec("pkm", "fpk_pkm_n64", d_model=32, n=64, heads=4, top_k=4, key_dim=16),
}

# Other tile sizes and vector widths (a 4-lane and a 16-lane build).
TILES = ["vector-width=4 row-tile=2 token-block=3", "vector-width=16 row-tile=1 token-block=1"]
TILED = ["peer_n20_bf16", "pkm_n13_bn", "peer_n40_f16"]


def _tiled(case, tiles):
    return moe_mlir.compile(SPECS[case], tiles=tiles)


@pytest.fixture(scope="module", autouse=True)
def _compile_all():
    precompile(list(SPECS.values()))


@pytest.fixture(autouse=True)
def _default_threads():
    moe_mlir.set_num_threads(0)
    yield
    moe_mlir.set_num_threads(0)


def _inputs(case, T, seed):
    s = load_spec(SPECS[case])
    return s, make_weights(s, seed), make_x(T, s["d_model"], seed + 1)


def _same(a, b, what):
    for key in ("out", "topk_ids", "topk_weights"):
        assert np.array_equal(a[key], b[key]), f"{what}: {key} differs"


@pytest.mark.parametrize("T", TOKENS)
@pytest.mark.parametrize("case", list(SPECS))
def test_matches_reference(case, T):
    """ids exactly, weights and out to 1e-5 of the float64 NumPy reference."""
    s, W, x = _inputs(case, T, seed=500 + list(SPECS).index(case))
    got = check_forward(s, x, W)
    ids = got["topk_ids"].reshape(T * s["heads"], -1)
    assert ((ids >= 0) & (ids < s["experts"])).all()
    assert all(len(set(row)) == len(row) for row in ids.tolist())


@pytest.mark.parametrize("case", ["peer_n20_bf16", "pkm_n13_bn", "peer_n40_f16",
                                  "pkm_n9_bf16_sigmoid"])
def test_matches_reference_lowering(case):
    """Same ids as the scalar reference lowering; outputs to 1e-5."""
    s, W, x = _inputs(case, 17, seed=600)
    fast = compiled(s).forward(x, **W)
    ref = moe_mlir.compile(s, pipeline="reference").forward(x, **W)
    np.testing.assert_array_equal(fast["topk_ids"], ref["topk_ids"])
    assert_close(fast["topk_weights"], ref["topk_weights"], "topk_weights")
    assert_close(fast["out"], ref["out"], "out")


@pytest.mark.parametrize("tiles", TILES)
@pytest.mark.parametrize("case", TILED)
def test_other_tiles_and_vector_widths(case, tiles):
    s, W, x = _inputs(case, 13, seed=700)
    got = _tiled(case, tiles).forward(x, **W)
    ref = compiled(s).forward(x, **W)
    np.testing.assert_array_equal(got["topk_ids"], ref["topk_ids"])
    assert_close(got["topk_weights"], ref["topk_weights"], "topk_weights")
    assert_close(got["out"], ref["out"], "out")


@pytest.mark.parametrize("case", list(SPECS))
def test_bit_identical_for_any_thread_count(case):
    s, W, x = _inputs(case, 37, seed=800)
    layer = compiled(s)
    results = []
    for threads in (1, 2, 3):
        moe_mlir.set_num_threads(threads)
        results.append(layer.forward(x, **W))
    for threads, got in zip((2, 3), results[1:]):
        _same(results[0], got, f"{threads} threads vs 1")


@pytest.mark.parametrize("case", list(SPECS))
def test_bit_identical_alone_and_in_a_batch(case):
    s, W, x = _inputs(case, 29, seed=900)
    layer = compiled(s)
    full = layer.forward(x, **W)
    for t in (0, 13, 28):
        alone = layer.forward(np.ascontiguousarray(x[t:t + 1]), **W)
        _same({k: full[k][t:t + 1] for k in full}, alone, f"token {t} alone")
    part = layer.forward(np.ascontiguousarray(x[5:22]), **W)
    _same({k: full[k][5:22] for k in full}, part, "tokens 5..21")


@pytest.mark.parametrize("kind", ["peer", "pkm"])
def test_all_scores_tied(kind):
    """q = 0 with n = 24 (three vectors of sub-keys): every score is 0 and
    equals the lower bound, so nothing is skipped; ties go to the lower index
    in both stages and to the lower expert id among the candidates."""
    s = load_spec(pk_spec(kind, f"fpk_{kind}_tied", d_model=16, n=24, heads=2, top_k=5,
                          key_dim=16))
    W = make_weights(s, 11)
    W["query"][:] = 0.0
    got = check_forward(s, make_x(7, s["d_model"], 12), W)
    assert (got["topk_ids"] == np.arange(5)).all()


@pytest.mark.parametrize("kind", ["peer", "pkm"])
def test_duplicate_sub_keys_large_n(kind):
    """Equal sub-keys in the vectorised scan: the lower index ranks first."""
    s = load_spec(pk_spec(kind, f"fpk_{kind}_dup", d_model=16, n=32, heads=2, top_k=6,
                          key_dim=16))
    W = make_weights(s, 13)
    W["keys1"][17] = W["keys1"][3]
    W["keys1"][30] = W["keys1"][3]
    W["keys2"][25] = W["keys2"][9]
    got = check_forward(s, make_x(33, s["d_model"], 14), W)
    n = 32
    for row in got["topk_ids"].reshape(-1, s["top_k"]).tolist():
        for e in row:
            i, j = divmod(e, n)
            twin = (3 if i in (17, 30) else i) * n + (9 if j == 25 else j)
            if twin != e:
                assert twin in row and row.index(twin) < row.index(e), row


@pytest.mark.parametrize("kind", ["peer", "pkm"])
def test_nan_sub_keys_and_nan_token_large_n(kind):
    """NaN sub-key rows never enter a list that has numbers to take; an
    all-NaN token (no usable lower bound) takes sub-keys 0..k'-1 by index."""
    s = load_spec(pk_spec(kind, f"fpk_{kind}_nan", d_model=16, n=24, heads=2, top_k=4,
                          key_dim=16))
    W = make_weights(s, 15)
    W["keys1"][[1, 9, 20]] = np.nan
    W["keys2"][0] = np.nan
    x = make_x(9, s["d_model"], 16)
    x[4, 0] = np.nan
    got = check_forward(s, x, W, equal_nan=True)
    ok = np.arange(9) != 4
    i, j = np.divmod(got["topk_ids"][ok], 24)
    assert not np.isin(i, [1, 9, 20]).any() and not (j == 0).any()
    assert np.isfinite(got["out"][ok]).all()
    assert np.isnan(got["out"][4]).all()
    assert (got["topk_ids"][4] == np.arange(4)).all()


def test_infinite_sub_keys():
    """±inf scores: +inf ranks first (ties by index), -inf rows are kept when
    needed; the skip bound falls back to scanning everything."""
    s = load_spec(pk_spec("pkm", "fpk_pkm_inf", d_model=16, n=16, heads=1, top_k=3,
                          key_dim=8))
    W = make_weights(s, 17)
    W["query"][:] = 0.0
    W["query"][0, 0] = 1.0
    W["query"][4, 1] = 1.0
    W["keys1"][:, 0] = -np.inf
    W["keys1"][5, 0] = np.inf
    W["keys1"][7, 0] = 2.0
    W["keys2"][:, 0] = np.arange(16, dtype=np.float32)
    x = np.zeros((3, 16), np.float32)
    x[:, 0] = 1.0
    x[:, 1] = 1.0
    got = compiled(s).forward(x, **W)
    ref = moe_mlir.compile(s, pipeline="reference").forward(x, **W)
    np.testing.assert_array_equal(got["topk_ids"], ref["topk_ids"])
    # Stage 1 keeps sub-keys 5 (+inf), 7 and 0 (the first -inf) of keys1 and
    # 15, 14, 13 of keys2; the three sums with 5 are +inf, ranked by id.
    assert got["topk_ids"][:, 0].tolist() == [[93, 94, 95]] * 3
