"""PKM/PEER variants: a sub-key table pair per head (`keys_per_head`) and a
LayerNorm on the queries (`query_layernorm`), compiled by both pipelines and
compared with the NumPy reference; a model built as lucidrains'
product-key-memory PKM builds it gives the same output through the spec."""

import numpy as np
import pytest

import moe_mlir
from moe_mlir import reference as R
from moe_mlir.spec import load_spec, weight_shapes

from compile_helpers import (make_weights, make_x, moe_spec, pk_spec, precompile,
                             requires_compiler)

pytestmark = requires_compiler

SPECS = {
    "pkm_keys_per_head": pk_spec("pkm", "pkm_kph", heads=3, n=5, top_k=4, key_dim=10,
                                 keys_per_head=True),
    "pkm_layernorm": pk_spec("pkm", "pkm_ln", query_layernorm=True),
    "pkm_lucidrains": pk_spec("pkm", "pkm_luci", heads=4, n=6, top_k=5, key_dim=8,
                              d_model=32, keys_per_head=True, query_layernorm=True),
    "pkm_bf16": pk_spec("pkm", "pkm_kph_bf16", weight_dtype="bf16", keys_per_head=True,
                        query_layernorm=True),
    "peer_keys_per_head": pk_spec("peer", "peer_kph", heads=4, n=4, top_k=3, key_dim=6,
                                  d_model=24, keys_per_head=True, activation="gelu"),
    "peer_layernorm_sigmoid": pk_spec("peer", "peer_ln_sig", query_layernorm=True,
                                      score="sigmoid", activation="silu",
                                      keys_per_head=True),
    "peer_f16": pk_spec("peer", "peer_kph_f16", weight_dtype="f16", keys_per_head=True),
}
TOKENS = [1, 7, 33]
PIPELINES = ["fast", "reference"]


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    precompile(SPECS.values())


def _layer(spec, pipeline):
    return moe_mlir.compile(spec, pipeline=pipeline)


def test_weight_contract():
    shapes = weight_shapes(SPECS["pkm_lucidrains"])
    assert list(shapes) == ["query", "ln_weight", "ln_bias", "keys1", "keys2", "values"]
    assert shapes["keys1"] == ((4, 6, 4), "f32")
    assert shapes["ln_weight"] == ((32,), "f32")
    assert weight_shapes(pk_spec("pkm", "p"))["keys1"] == ((4, 4), "f32")


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("T", TOKENS)
@pytest.mark.parametrize("name", sorted(SPECS))
def test_matches_reference(name, T, pipeline):
    spec = load_spec(SPECS[name])
    W = make_weights(spec, seed=len(name) + T)
    x = make_x(T, spec["d_model"], seed=T)
    got = _layer(spec, pipeline).forward(x, **W)
    ref = R.forward(spec, x, **W)
    np.testing.assert_array_equal(got["topk_ids"], ref["topk_ids"])
    np.testing.assert_allclose(got["topk_weights"], ref["topk_weights"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["out"], ref["out"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["pkm", "peer"])
def test_equal_tables_per_head_give_the_shared_keys_bits(kind):
    """keys_per_head with every head's table the shared one computes exactly
    the shared-keys layer: the per-head path indexes, it does not reorder."""
    shared = load_spec(pk_spec(kind, f"{kind}_shared_keys", heads=3, n=5, top_k=4, key_dim=6))
    per_head = load_spec(dict(shared, name=f"{kind}_own_keys", keys_per_head=True))
    W = make_weights(shared, seed=5)
    W_heads = dict(W, keys1=np.stack([W["keys1"]] * 3), keys2=np.stack([W["keys2"]] * 3))
    x = make_x(19, shared["d_model"], seed=6)
    for pipeline in PIPELINES:
        a = _layer(shared, pipeline).forward(x, **W)
        b = _layer(per_head, pipeline).forward(x, **W_heads)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{pipeline} {key}")


def test_heads_use_their_own_tables():
    """Swapping two heads' tables changes exactly those heads' choices."""
    spec = load_spec(SPECS["pkm_keys_per_head"])
    W = make_weights(spec, seed=8)
    x = make_x(9, spec["d_model"], seed=9)
    layer = _layer(spec, "fast")
    ids, _ = layer.route(x, **W)
    swapped = dict(W, keys1=W["keys1"][[1, 0, 2]].copy(), keys2=W["keys2"][[1, 0, 2]].copy())
    ids2, _ = layer.route(x, **swapped)
    np.testing.assert_array_equal(ids2[:, 2], ids[:, 2])
    assert not np.array_equal(ids2[:, :2], ids[:, :2])
    ref_ids, _ = R.route(spec, x, **swapped)
    np.testing.assert_array_equal(ids2, ref_ids)


def test_layernorm_of_a_constant_query_is_the_shift():
    """A token whose query channels are all the same small integer has an
    exact mean and variance 0: its normalised query is ln_bias exactly
    (0 / sqrt(eps) = 0), in both pipelines as in the reference."""
    spec = load_spec(SPECS["pkm_layernorm"])
    W = make_weights(spec, seed=3)
    W["query"][:] = 0.0
    W["query"][:, 0] = 1.0            # every channel = x[:, 0]
    x = make_x(5, spec["d_model"], seed=4)
    x[:, 0] = [-3.0, 0.0, 1.0, 2.0, 7.0]
    ref = R.forward(spec, x, **W)
    # The reference routes exactly as a query equal to ln_bias does.
    np.testing.assert_array_equal(
        ref["topk_ids"], R.forward(spec, np.zeros_like(x), **W)["topk_ids"])
    for pipeline in PIPELINES:
        got = _layer(spec, pipeline).forward(x, **W)
        np.testing.assert_array_equal(got["topk_ids"], ref["topk_ids"])
        np.testing.assert_allclose(got["out"], ref["out"], rtol=1e-5, atol=1e-6)


def test_token_alone_or_in_a_batch():
    spec = load_spec(SPECS["pkm_lucidrains"])
    W = make_weights(spec, seed=11)
    x = make_x(40, spec["d_model"], seed=12)
    layer = _layer(spec, "fast")
    batch = layer.forward(x, **W)
    for t in (0, 17, 39):
        alone = layer.forward(x[t:t + 1], **W)
        for key in ("out", "topk_ids", "topk_weights"):
            np.testing.assert_array_equal(alone[key][0], batch[key][t], err_msg=key)


@pytest.mark.parametrize("spec, message", [
    (pk_spec("pkm", "bad", query_batchnorm=True, query_layernorm=True),
     "at most one query norm"),
    (pk_spec("pkm", "bad", keys_per_head="yes"), "keys_per_head"),
    (moe_spec("bad", query_layernorm=True), "query_layernorm"),
])
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        load_spec(spec)
    with pytest.raises(ValueError, match=message):
        moe_mlir.compile(spec)


# --------------------------------------------------------------------------- #
# Parity with a PKM built as lucidrains' product-key-memory builds it
# --------------------------------------------------------------------------- #

def _lucidrains_pkm(torch, x, Wq, ln_w, ln_b, keys, values, heads, topk):
    """The forward of product_key_memory.PKM (LayerNorm version) in torch:
    queries = LayerNorm(x Wq^T); the two query halves are the first and the
    second half of all heads' channels ('(p h d)'); keys [h, n, 2, d/2]."""
    n = keys.shape[1]
    T = x.shape[0]
    q = torch.nn.functional.layer_norm(x @ Wq.T, (Wq.shape[0],), ln_w, ln_b, eps=1e-5)
    q = torch.stack(q.chunk(2, dim=-1)).reshape(2, T, heads, -1)
    dots = torch.einsum("pthd,hnpd->thpn", q, keys)
    scores, indices = dots.topk(k=topk, dim=-1)
    s1, s2 = scores.unbind(dim=2)
    i1, i2 = indices.unbind(dim=2)
    all_scores = (s1[..., :, None] + s2[..., None, :]).reshape(T, heads, -1)
    all_ids = (i1[..., :, None] * n + i2[..., None, :]).reshape(T, heads, -1)
    best, pos = all_scores.topk(topk, dim=-1)
    ids = all_ids.gather(-1, pos)
    attn = best.softmax(dim=-1)
    out = torch.nn.functional.embedding_bag(ids.reshape(T, -1), values, mode="sum",
                                            per_sample_weights=attn.reshape(T, -1))
    return out, ids


def _spec_weights_from_lucidrains(Wq, ln_w, ln_b, keys, values, heads):
    """Our contract's weights for that PKM: the query rows (and the
    LayerNorm's channels, a permutation it commutes with) reordered from
    '(p h d)' to head-major '(h p d)', keys split into the two tables."""
    C = Wq.shape[0]
    half = C // (2 * heads)
    perm = np.arange(C).reshape(2, heads, half).transpose(1, 0, 2).reshape(-1)
    return {"query": Wq[perm], "ln_weight": ln_w[perm], "ln_bias": ln_b[perm],
            "keys1": np.ascontiguousarray(keys[:, :, 0]),
            "keys2": np.ascontiguousarray(keys[:, :, 1]), "values": values}


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_parity_with_lucidrains_pkm(pipeline):
    torch = pytest.importorskip("torch", reason="the parity test builds the PKM in torch")
    spec = load_spec(SPECS["pkm_lucidrains"])
    h, n, dk, D, k = spec["heads"], 6, spec["key_dim"], spec["d_model"], spec["top_k"]
    rs = np.random.default_rng(21)
    Wq = (rs.standard_normal((h * dk, D)) / np.sqrt(D)).astype(np.float32)
    ln_w = rs.uniform(0.5, 1.5, h * dk).astype(np.float32)
    ln_b = (rs.standard_normal(h * dk) * 0.2).astype(np.float32)
    keys = (rs.standard_normal((h, n, 2, dk // 2)) / np.sqrt(dk)).astype(np.float32)
    values = (rs.standard_normal((n * n, D)) / np.sqrt(D)).astype(np.float32)
    x = make_x(23, D, seed=22)
    with torch.no_grad():
        want, want_ids = _lucidrains_pkm(torch, *(torch.from_numpy(a) for a in
                                                  (x, Wq, ln_w, ln_b, keys, values)), h, k)
    W = _spec_weights_from_lucidrains(Wq, ln_w, ln_b, keys, values, h)
    got = _layer(spec, pipeline).forward(x, **W)
    np.testing.assert_array_equal(got["topk_ids"], want_ids.numpy())
    np.testing.assert_allclose(got["out"], want.numpy(), rtol=1e-4, atol=1e-5)
