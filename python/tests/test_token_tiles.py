"""Routing chains per token tile (``moe-tile-token-ops``) end to end.

The fast pipeline runs the router matmul, the score and the top-k of a tile
of tokens in one loop (PEER/PKM: the query projection, BatchNorm, both
sub-key top-k's, the candidate top-k and the weighted expert gather). A tile
splits tokens, never a sum, so the bits may not depend on the token tile,
the thread count or the batch a token runs in; these tests hold every
output to that, with tiles of 1, 3, 16 (the default) and 64 tokens, T = 1
and T not a multiple of the tile, and to the NumPy reference (tolerance
1e-5, the f32 kernel against the f64 reference, as everywhere).
"""

from __future__ import annotations

import numpy as np
import pytest

import moe_mlir
from moe_mlir import reference as R
from compile_helpers import (assert_same_bits, compare, make_weights, make_x, moe_spec, pk_spec,
                             requires_compiler)

pytestmark = requires_compiler

SPECS = {
    "softmax": moe_spec("tt_softmax", d_model=20, experts=6, expert_hidden=13,
                        router={"top_k": 2, "normalize": True},
                        aux_losses=["load_balance", "z_loss"]),
    "deepseek": moe_spec("tt_deepseek", d_model=32, experts=8, expert_hidden=16,
                         router={"top_k": 2, "score": "sigmoid", "selection_bias": True,
                                 "groups": 4, "topk_groups": 2, "normalize": True,
                                 "scaling": 2.5},
                         shared_experts={"hidden": 24}),
    "peer": pk_spec("peer", name="tt_peer", d_model=24, n=6, heads=3, top_k=4, key_dim=8,
                    weight_dtype="bf16"),
    "pkm": pk_spec("pkm", name="tt_pkm", d_model=16, n=5, heads=2, top_k=3, key_dim=6),
}
# The default (16), a tile per token, a tile that divides nothing here, and
# one larger than most batches below.
TILES = ["", "token-tile=1", "token-tile=3", "token-tile=64"]
# A tiny fusion budget keeps the producers outside the loop.
UNFUSED = "max-fused-weight-bytes=0"
OFF = "tile-token-ops=false"

_LAYERS = {}


def _layer(name, tiles=""):
    key = (name, tiles)
    if key not in _LAYERS:
        _LAYERS[key] = moe_mlir.compile(SPECS[name], tiles=tiles)
    return _LAYERS[key]


@pytest.fixture(autouse=True)
def _default_threads():
    moe_mlir.set_num_threads(0)
    yield
    moe_mlir.set_num_threads(0)


@pytest.mark.parametrize("T", [1, 21, 70])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_token_tiles_match_the_reference(name, T):
    spec = SPECS[name]
    x = make_x(T, spec["d_model"], seed=T)
    W = make_weights(spec)
    compare(_layer(name).forward(x, **W), R.forward(spec, x, **W))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_token_tile_bits_do_not_depend_on_tile_threads_or_fusion(name):
    spec = SPECS[name]
    x = make_x(70, spec["d_model"], seed=11)
    W = make_weights(spec)
    moe_mlir.set_num_threads(1)
    base = _layer(name, OFF).forward(x, **W)
    for threads in (1, 2, 3):
        moe_mlir.set_num_threads(threads)
        for tiles in TILES + [UNFUSED]:
            got = _layer(name, tiles).forward(x, **W)
            for key, value in base.items():
                assert_same_bits(got[key], value, f"{name}.{key} with {tiles!r}, {threads} threads")


@pytest.mark.parametrize("name", sorted(SPECS))
def test_token_tile_bits_do_not_depend_on_the_batch(name):
    """A token alone, at the end of a short batch (T = 5 < tile, T = 19 ends
    in a partial tile) and inside a long one: the same bits."""
    spec = SPECS[name]
    x = make_x(70, spec["d_model"], seed=4)
    W = make_weights(spec)
    for tiles in ("", "token-tile=3"):
        layer = _layer(name, tiles)
        batch = layer.forward(x, **W)
        for t in (0, 4, 18, 69):
            for lo in (t, max(0, t - 4), max(0, t - 18)):
                got = layer.forward(x[lo:t + 1], **W)
                for key in ("out", "topk_ids", "topk_weights"):
                    assert_same_bits(got[key][t - lo], batch[key][t],
                                     f"{name}.{key} token {t} in x[{lo}:{t + 1}] ({tiles!r})")


@pytest.mark.parametrize("name", ["softmax", "deepseek"])
def test_token_tile_routing_only_variant(name):
    """``<layer>_route`` (routing alone, one tile loop) gives the forward's
    routing bits at every tile."""
    spec = SPECS[name]
    x = make_x(37, spec["d_model"], seed=9)
    W = make_weights(spec)
    ids, weights = _layer(name, OFF).route(x, **W)
    for tiles in TILES:
        got_ids, got_weights = _layer(name, tiles).route(x, **W)
        assert_same_bits(got_ids, ids, f"{name} route ids ({tiles!r})")
        assert_same_bits(got_weights, weights, f"{name} route weights ({tiles!r})")


def test_token_tile_nan_token_stays_in_its_row():
    """A NaN token inside a tile: its row of the fused router is NaN, the
    other tokens of the tile route and combine as without it."""
    spec = SPECS["softmax"]
    W = make_weights(spec)
    x = make_x(20, spec["d_model"], seed=2)
    clean = _layer("softmax").forward(x, **W)
    x[5, 3] = np.nan
    got = _layer("softmax").forward(x, **W)
    assert np.isnan(got["out"][5]).all()
    for key in ("out", "topk_ids", "topk_weights"):
        assert_same_bits(np.delete(got[key], 5, axis=0), np.delete(clean[key], 5, axis=0), key)


def test_bad_token_tile_is_refused():
    with pytest.raises(moe_mlir.CompileError,
                       match="bad --tiles 'token-tile=0': token-tile must be positive, got 0"):
        moe_mlir.compile(SPECS["softmax"], tiles="token-tile=0")
