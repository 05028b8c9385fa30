"""DeepSeek-V4's hash routing (``router.hash_vocab``): the spec's checks and
weight contract, the NumPy reference against a hand computation, and the
compiled layer (fast and reference pipelines) against the reference --
every output, bind() and route(), batch invariance, the token_ids argument
and its errors, and the C ABI's defined result for ids Python refuses.

Tolerances: compile_helpers.RTOL/ATOL (f32 kernels, f64 reference); routing
ids, expert counts and drops exactly; bind(), route() and a token alone
against forward in a batch bit for bit (the same kernels)."""

from __future__ import annotations


import numpy as np
import pytest

from moe_mlir import reference as R
from moe_mlir.spec import load_spec, spec_hash, weight_shapes

from compile_helpers import (HAVE_COMPILER, assert_same_bits, compare, compiled, make_weights,
                             make_x, mh_spec, moe_spec, requires_compiler)

PIPELINES = ("fast", "reference")
# T = 1 (decode), T that are not multiples of any tile, and a multiple.
TOKENS = (1, 7, 37, 64)



def hash_router(**kw):
    return dict(dict(top_k=2, hash_vocab=50), **kw)


SPECS = {
    # DeepSeek-V4: sqrt(softplus) scores, renormalised and scaled, clamped
    # SwiGLU experts and shared expert, every aux loss.
    "deepseek_v4": moe_spec("hash_v4", experts=8, swiglu=dict(limit=1.0),
                            router=hash_router(top_k=3, score="sqrt_softplus", normalize=True,
                                               scaling=1.5),
                            shared_experts=dict(hidden=8),
                            aux_losses=["load_balance", "importance", "z_loss"]),
    # Sigmoid scores, unnormalised and scaled, bf16 weights, a capacity
    # factor with drops, a logit bias the scores see.
    "sigmoid_bf16": moe_spec("hash_sigmoid_bf16", weight_dtype="bf16", activation="gelu",
                             router=hash_router(score="sigmoid", scaling=2.0, logit_bias=True,
                                                hash_vocab=1000),
                             capacity=dict(factor=1.0), aux_losses=["load_balance"]),
    # Softmax scores renormalised, NLLB-MoE's capacity in a fraction of the
    # tokens, batch-prioritized, a gated shared expert; bf16.
    "softmax_fraction": moe_spec("hash_softmax", weight_dtype="bf16",
                                 router=hash_router(top_k=3, normalize=True, hash_vocab=7),
                                 shared_experts=dict(hidden=8, gate=True),
                                 capacity=dict(token_fraction=0.3,
                                               priority="batch_prioritized"),
                                 aux_losses=["importance", "z_loss"]),
}


@pytest.fixture(scope="module", autouse=True)
def _compile_all():
    if not HAVE_COMPILER:
        return
    from concurrent.futures import ThreadPoolExecutor
    todo = [(s, p) for s in SPECS.values() for p in PIPELINES]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda sp: compiled(*sp), todo))


def weights(spec, seed=0):
    """make_weights: tid2eid rows of random expert ids, some repeating an
    expert (two slots of one expert); distinct ids under batch_prioritized
    (a row of one expert has the weights 1/k of every such row: ties in f64
    that f32 rounding orders at random)."""
    W = make_weights(spec, seed)
    rs = np.random.default_rng(seed + 5)
    if "logit_bias" in W:
        W["logit_bias"] = (rs.standard_normal(W["logit_bias"].shape) * 1.5).astype(np.float32)
    s = load_spec(spec)
    if s["capacity"] is not None and s["capacity"]["priority"] == "batch_prioritized":
        V, k = W["tid2eid"].shape
        W["tid2eid"] = np.stack([rs.permutation(s["experts"])[:k] for _ in range(V)]
                                ).astype(np.int32)
    return W


def token_ids(spec, T, seed=0):
    """Ids of the whole vocabulary, some repeated (as a sequence's are)."""
    V = load_spec(spec)["router"]["hash_vocab"]
    return np.random.default_rng(seed + 11).integers(0, V, T)


# --------------------------------------------------------------------------- #
# Spec
# --------------------------------------------------------------------------- #

def test_spec_and_weight_contract():
    s = load_spec(SPECS["deepseek_v4"])
    assert s["router"]["hash_vocab"] == 50 and load_spec(s) == s
    shapes = weight_shapes(s)
    assert list(shapes)[:2] == ["gate", "tid2eid"]
    assert shapes["tid2eid"] == ((50, 3), "i32")
    s = load_spec(SPECS["sigmoid_bf16"])
    assert list(weight_shapes(s))[:3] == ["gate", "tid2eid", "logit_bias"]
    # Absent unless set: other specs normalise (and hash) as before.
    plain = load_spec(moe_spec(router=dict(top_k=2)))
    assert "hash_vocab" not in plain["router"]
    assert load_spec(moe_spec(router=dict(top_k=2, hash_vocab=None))) == plain
    assert (spec_hash(moe_spec(router=hash_router(hash_vocab=5)))
            != spec_hash(moe_spec(router=hash_router(hash_vocab=6))))
    assert load_spec(moe_spec(router=hash_router(hash_vocab=2**31 - 1)))


@pytest.mark.parametrize("spec, message", [
    (moe_spec(router=hash_router(hash_vocab=0)),
     "field 'router.hash_vocab' must be in [1, 2147483647], got 0"),
    (moe_spec(router=hash_router(hash_vocab=2**31)),
     "field 'router.hash_vocab' must be in [1, 2147483647], got 2147483648"),
    (moe_spec(router=hash_router(hash_vocab=1.5)),
     "field 'router.hash_vocab' must be an integer, got 1.5"),
    (moe_spec(router=hash_router(hash_vocab=True)),
     "field 'router.hash_vocab' must be an integer, got True"),
    (moe_spec(router=hash_router(order="topk_then_score")),
     "router.hash_vocab weighs the looked-up experts by their scores: router.order must be "
     "score_then_topk"),
    (moe_spec(router=hash_router(score="sparsemixer")),
     "router.hash_vocab does not take router.score sparsemixer"),
    (moe_spec(router=hash_router(selection_bias=True)),
     "router.hash_vocab does not take router.selection_bias"),
    (moe_spec(router=hash_router(noise=True)), "router.hash_vocab does not take router.noise"),
    (moe_spec(router=hash_router(groups=2)), "router.hash_vocab does not take router.groups"),
    (mh_spec(router=hash_router()),
     "router.hash_vocab needs kind moe (token ids route whole tokens)"),
    (moe_spec(router=hash_router(), capacity=dict(factor=1.0, overflow="next_choice")),
     "router.hash_vocab has no fallback choices: capacity.overflow must be drop"),
    # The table's bytes: 2^31 - 1 ids x 2^15 choices of 4 bytes.
    (moe_spec(d_model=1, expert_hidden=1, experts=2**15,
              router=hash_router(top_k=2**15, hash_vocab=2**31 - 1)),
     "field 'router.hash_vocab': weight 'tid2eid' (router.hash_vocab x router.top_k = "
     "2147483647 x 32768 i32) needs 281474976579584 bytes, more than 2^47"),
])
def test_spec_errors(spec, message):
    with pytest.raises(ValueError) as info:
        load_spec(spec)
    assert str(info.value).startswith(message)


# --------------------------------------------------------------------------- #
# Reference
# --------------------------------------------------------------------------- #

def test_reference_by_hand():
    """ids from the table at the token's id; raw weights the scores of those
    experts; normalised (a 0 raw weight stays 0) and scaled; -1 and weight 0
    for an unknown token id or table entry."""
    r = load_spec(moe_spec(experts=4, router=hash_router(hash_vocab=3, score="sigmoid",
                                                         normalize=True, scaling=2.0)))["router"]
    logits = np.array([[0.0, 1.0, -1.0, 2.0]] * 4)
    table = np.array([[3, 1], [0, 0], [2, 9]])
    ids, w = R.route_tokens(logits, r, token_ids=[0, 1, 2, 5], tid2eid=table)
    np.testing.assert_array_equal(ids, [[3, 1], [0, 0], [2, -1], [-1, -1]])
    s = R.sigmoid(logits[0])
    np.testing.assert_allclose(w, [[2 * s[3] / (s[3] + s[1]), 2 * s[1] / (s[3] + s[1])],
                                   [1.0, 1.0], [2.0, 0.0], [0.0, 0.0]], rtol=1e-15)
    # Softmax over every expert, unnormalised.
    r = dict(r, score="softmax", normalize=False, scaling=1.0)
    ids, w = R.route_tokens(logits[:1], r, token_ids=[0], tid2eid=table)
    np.testing.assert_allclose(w, R.softmax(logits[:1])[:, [3, 1]], rtol=1e-15)


def test_reference_drops_and_losses_skip_unknown_ids():
    spec = SPECS["deepseek_v4"]
    W = weights(spec)
    W["tid2eid"][4] = [-1, 2, 8]
    x = make_x(6, 16)
    ref = R.forward(spec, x, token_ids=np.array([4, 0, 50, 1, 2, -3]), **W)
    assert (ref["topk_ids"][[2, 5]] == -1).all() and (ref["topk_weights"][[2, 5]] == 0).all()
    np.testing.assert_array_equal(ref["topk_ids"][0], [-1, 2, -1])
    assert ref["dropped"] == 2 + 2 * 3 and ref["expert_counts"].sum() == 6 * 3 - ref["dropped"]
    # A token routed to no expert gets the shared expert's output alone.
    sw = {n: R.round_to_dtype(W[n], "f32") for n in ("shared_w1", "shared_w2", "shared_w3")}
    shared = R.expert_ffn(x[[2, 5]], sw["shared_w1"], sw["shared_w2"], sw["shared_w3"],
                          "swiglu", load_spec(spec)["swiglu"])
    np.testing.assert_allclose(ref["out"][[2, 5]], shared, rtol=1e-6, atol=1e-7)
    assert all(np.isfinite(ref[n]) for n in ("load_balance", "importance", "z_loss"))


def test_reference_token_ids_argument():
    spec = SPECS["deepseek_v4"]
    W, x = weights(spec), make_x(3, 16)
    with pytest.raises(ValueError, match="routes by token id"):
        R.forward(spec, x, **W)
    with pytest.raises(ValueError, match="token_ids must hold integers"):
        R.forward(spec, x, token_ids=np.zeros(3), **W)
    with pytest.raises(ValueError, match=r"token_ids must have shape \(3,\)"):
        R.forward(spec, x, token_ids=np.zeros((3, 1), dtype=np.int64), **W)
    with pytest.raises(ValueError, match="tid2eid' holds expert ids"):
        R.forward(spec, x, token_ids=[0, 1, 2], **dict(W, tid2eid=W["tid2eid"] + 0.5))
    plain = moe_spec(router=dict(top_k=2))
    with pytest.raises(ValueError, match="takes no token_ids"):
        R.forward(plain, x, token_ids=[0, 1, 2], **make_weights(plain))
    ids, w = R.route(spec, x, token_ids=[0, 1, 2], gate=W["gate"], tid2eid=W["tid2eid"])
    np.testing.assert_array_equal(ids, W["tid2eid"][[0, 1, 2]])


# --------------------------------------------------------------------------- #
# Compiled layers against the reference
# --------------------------------------------------------------------------- #

@requires_compiler
@pytest.mark.parametrize("T", TOKENS)
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("name", sorted(SPECS))
def test_compiled_matches_reference(name, pipeline, T):
    spec = SPECS[name]
    layer = compiled(spec, pipeline)
    assert layer.takes_token_ids
    W, x, ids = weights(spec, T), make_x(T, 16, seed=T), token_ids(spec, T, T)
    got = layer.forward(x, token_ids=ids, **W)
    ref = R.forward(spec, x, token_ids=ids, **W)
    compare(got, ref)
    rows = W["tid2eid"][ids]
    np.testing.assert_array_equal(got["topk_ids"], rows)
    if load_spec(spec)["capacity"] is not None and T == 64:
        assert got["dropped"] > 0          # the capacity binds
    # The routing alone: the same bits as forward's.
    rid, rw = layer.route(x, token_ids=ids, **W)
    assert_same_bits(rid, got["topk_ids"], "route topk_ids")
    assert_same_bits(rw, got["topk_weights"], "route topk_weights")
    # bind() (packed expert weights on the fast pipeline): the same bits.
    bound = layer.bind(**W).forward(x, token_ids=ids)
    for key in got:
        assert_same_bits(bound[key], got[key], f"bound {key}")


@requires_compiler
@pytest.mark.parametrize("name", ["deepseek_v4"])
def test_batch_invariant(name):
    """A token's outputs alone are its row of a batch, bit for bit (no
    capacity: nothing else couples the tokens)."""
    spec = SPECS[name]
    layer = compiled(spec, "fast")
    W, x, ids = weights(spec), make_x(37, 16, seed=4), token_ids(spec, 37, 4)
    batch = layer.forward(x, token_ids=ids, **W)
    bound = layer.bind(**W)
    for t in (0, 17, 36):
        alone = layer.forward(x[t:t + 1], token_ids=ids[t:t + 1], **W)
        for key in ("out", "topk_ids", "topk_weights"):
            assert_same_bits(alone[key], batch[key][t:t + 1], f"token {t} alone: {key}")
        assert_same_bits(bound(x[t:t + 1], token_ids=ids[t:t + 1]), batch["out"][t:t + 1],
                         f"token {t} alone, bound")


@requires_compiler
def test_token_ids_dtypes():
    """Any integer array: int64 (as tokenizers give), int32, unsigned, a
    strided view; all the same bits."""
    spec = SPECS["deepseek_v4"]
    layer = compiled(spec, "reference")
    W, x = weights(spec), make_x(9, 16)
    ids = token_ids(spec, 9)
    want = layer.forward(x, token_ids=ids.astype(np.int64), **W)
    strided = np.repeat(ids, 2)[::2]
    for given in (ids.astype(np.int32), ids.astype(np.uint8), ids.astype(np.uint64),
                  ids.astype(np.int16), strided):
        got = layer.forward(x, token_ids=given, **W)
        for key in want:
            assert_same_bits(got[key], want[key], f"{given.dtype} {key}")
    # tid2eid as int64 (transformers' buffer) or unsigned: the same ids.
    got = layer.forward(x, token_ids=ids, **dict(W, tid2eid=W["tid2eid"].astype(np.uint16)))
    assert_same_bits(got["out"], want["out"], "uint16 tid2eid")


@requires_compiler
def test_token_ids_errors():
    spec = SPECS["deepseek_v4"]
    layer = compiled(spec, "reference")
    W, x = weights(spec), make_x(4, 16)
    ids = np.array([0, 1, 2, 49])
    with pytest.raises(ValueError, match="routes by token id .* pass token_ids"):
        layer.forward(x, **W)
    with pytest.raises(ValueError, match="routes by token id"):
        layer.route(x, **W)
    with pytest.raises(ValueError, match="routes by token id"):
        layer.bind(**W)(x)
    with pytest.raises(ValueError, match=r"token_ids must have shape \[4\]"):
        layer.forward(x, token_ids=ids[:3], **W)
    with pytest.raises(ValueError, match=r"token_ids must have shape \[4\]"):
        layer.forward(x, token_ids=ids.reshape(2, 2), **W)
    with pytest.raises(ValueError, match="token_ids must hold integers, got float32"):
        layer.forward(x, token_ids=ids.astype(np.float32), **W)
    with pytest.raises(ValueError, match="token_ids must be a numpy.ndarray, got list"):
        layer.forward(x, token_ids=ids.tolist(), **W)
    for bad in (-1, 50, 2**40):
        with pytest.raises(ValueError, match=rf"token_ids must lie in \[0, 50\) "
                                             rf"\(router.hash_vocab\), got {bad}"):
            layer.forward(x, token_ids=np.array([0, bad, 1, 2]), **W)
    for bad in (-1, 8):
        table = W["tid2eid"].copy()
        table[7, 1] = bad
        with pytest.raises(ValueError, match=rf"weight 'tid2eid' holds expert ids, each in "
                                             rf"\[0, 8\), got {bad}"):
            layer.forward(x, token_ids=ids, **dict(W, tid2eid=table))
    with pytest.raises(ValueError, match="weight 'tid2eid' must hold integers, got float32"):
        layer.forward(x, token_ids=ids, **dict(W, tid2eid=W["tid2eid"].astype(np.float32)))
    with pytest.raises(ValueError, match=r"weight 'tid2eid' must have shape \[50, 3\]"):
        layer.forward(x, token_ids=ids, **dict(W, tid2eid=W["tid2eid"][:, :2]))
    # A layer without a hash router takes none.
    plain = compiled(moe_spec("hash_none", router=dict(top_k=2)), "reference")
    assert not plain.takes_token_ids
    with pytest.raises(ValueError, match="has no hash router and takes no token_ids"):
        plain.forward(x, token_ids=ids, **make_weights(plain.spec))



@requires_compiler
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_c_abi_out_of_range_ids_route_nowhere(pipeline, monkeypatch):
    """Ids Python refuses, through the entry point itself: a token id
    outside [0, hash_vocab) or a table entry outside [0, E) gives id -1 and
    weight 0, the dispatch drops it and counts it in ``dropped`` -- the
    reference's result (docs/semantics.md 4.3)."""
    spec = SPECS["deepseek_v4"]
    layer = compiled(spec, pipeline)
    W, x = weights(spec), make_x(6, 16, seed=2)
    W["tid2eid"][3] = [-7, 8, 1000]            # no expert at all
    W["tid2eid"][4, 1] = 2**31 - 1
    ids = np.array([3, 50, 4, -1, 2**31 - 1, 5], dtype=np.int32)
    ref = R.forward(spec, x, token_ids=ids, **W)
    assert ref["dropped"] == 3 + 3 + 1 + 3 + 3 and (ref["topk_ids"][0] == -1).all()
    # The checked weights as the entry point takes them, the table unchecked.
    args = [np.ascontiguousarray(W[n], dtype=np.int32 if d == "i32" else np.float32)
            for n, (_, d) in layer.weight_shapes.items()]
    monkeypatch.setattr(layer, "_check_token_ids",
                        lambda token_ids, tokens, takes: [np.ascontiguousarray(token_ids)])
    got = layer._forward(x, args, None, token_ids=ids)
    compare(got, ref)
