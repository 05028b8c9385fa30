"""Tile options in the spec (``tiles:``): the loader keeps them (and the cache
key sees them), moe-compile applies them as ``--tiles`` would, ``compile(...,
tiles=...)`` goes on top, and bad entries are errors naming the field."""

import json

import numpy as np
import pytest
import yaml

import moe_mlir
from moe_mlir import reference as R
from moe_mlir.spec import load_spec, spec_hash

from compile_helpers import (assert_same_bits, compare, make_weights, make_x, moe_spec, pk_spec,
                             requires_compiler)

# Row-dot experts (no packed forward: visible in the ABI), 4 lanes and small
# blocks: every one of them differs from the defaults of an x86-64 host.
TILES = {"expert-kernel": "row-dot", "vector-width": 4, "row-block": 3, "col-block": 8,
         "depth-block": 8}
TILES_OPTION = " ".join(f"{k}={v}" for k, v in TILES.items())

BASE = moe_spec("tiles_moe", d_model=24, experts=5, expert_hidden=12, router={"top_k": 2},
                shared_experts={"hidden": 6})
WITH_TILES = {**BASE, "tiles": TILES}
PK_BASE = pk_spec("pkm", "tiles_pkm")
PK_WITH_TILES = {**PK_BASE, "tiles": {"vector-width": 4, "token-block": 2}}


def _forward(layer, spec, T=11):
    x = make_x(T, load_spec(spec)["d_model"], 3)
    W = make_weights(load_spec(spec), 4)
    return layer.forward(x, **W), x, W


def _assert_same_results(got, want, what):
    assert set(got) == set(want), what
    for key in want:
        assert_same_bits(got[key], want[key], f"{what}: {key}")


# --------------------------------------------------------------------------- #
# The loader
# --------------------------------------------------------------------------- #

def test_loader_keeps_tiles():
    s = load_spec(WITH_TILES)
    assert s["tiles"] == TILES
    assert load_spec(s) == s                                  # idempotent
    assert spec_hash(WITH_TILES) != spec_hash(BASE)           # the cache key sees them
    # In any order, the same spec.
    assert spec_hash({**BASE, "tiles": dict(reversed(list(TILES.items())))}) == \
        spec_hash(WITH_TILES)
    # No tiles, null or an empty mapping: no key, the same hash as before.
    for none in (None, {}):
        assert "tiles" not in load_spec({**BASE, "tiles": none})
        assert spec_hash({**BASE, "tiles": none}) == spec_hash(BASE)
    text = yaml.safe_dump(BASE) + "tiles:\n  row-block: 32\n  expert-kernel: row-dot\n"
    assert load_spec(text)["tiles"] == {"row-block": 32, "expert-kernel": "row-dot"}
    assert load_spec(PK_WITH_TILES)["tiles"] == PK_WITH_TILES["tiles"]


@pytest.mark.parametrize("tiles, message", [
    ([["row-block", 32]], r"field 'tiles' must be a mapping"),
    ("row-block=32", r"field 'tiles' must be a mapping"),
    ({"row-block": -1}, r"field 'tiles.row-block' must be >= 0"),
    ({"row-block": 1.5}, r"field 'tiles.row-block' must be an integer or a string, got 1.5"),
    ({"row-block": True}, r"field 'tiles.row-block' must be an integer or a string, got True"),
    ({"row-block": [32]}, r"field 'tiles.row-block' must be an integer or a string"),
    ({"row-block": None}, r"field 'tiles.row-block' must be an integer or a string, got None"),
    ({"": 1}, r"field 'tiles': option names must be non-empty strings"),
])
def test_loader_rejects_bad_tiles(tiles, message):
    with pytest.raises(ValueError, match=message):
        load_spec({**BASE, "tiles": tiles})
    with pytest.raises(ValueError, match=message):
        moe_mlir.compile({**BASE, "tiles": tiles})


# --------------------------------------------------------------------------- #
# Compiling
# --------------------------------------------------------------------------- #

@requires_compiler
def test_spec_tiles_equal_command_line_tiles():
    """The spec's tiles build the kernels --tiles builds: the same bits, and
    the NumPy reference to 1e-5 (f32 sums in another order than f64)."""
    from_spec = moe_mlir.compile(WITH_TILES)
    from_option = moe_mlir.compile(BASE, tiles=TILES_OPTION)
    default = moe_mlir.compile(BASE)
    # row-dot experts export no packed forward; the defaults (panel) do.
    assert not from_spec.packs_weights and not from_option.packs_weights
    assert default.packs_weights
    assert from_spec.library_path != default.library_path
    got, x, W = _forward(from_spec, WITH_TILES)
    want, _, _ = _forward(from_option, BASE)
    _assert_same_results(got, want, "spec tiles vs compile(tiles=...)")
    compare(got, R.forward(WITH_TILES, x, **W))


@requires_compiler
def test_spec_tiles_of_a_product_key_layer():
    got, x, W = _forward(moe_mlir.compile(PK_WITH_TILES), PK_WITH_TILES)
    want, _, _ = _forward(moe_mlir.compile(PK_BASE, tiles="vector-width=4 token-block=2"),
                          PK_BASE)
    _assert_same_results(got, want, "pkm spec tiles vs compile(tiles=...)")
    compare(got, R.forward(PK_WITH_TILES, x, **W))


@requires_compiler
def test_command_line_tiles_win(tmp_path):
    """compile(tiles=...) overrides the spec per option: the panel kernel
    here, with the spec's other tiles kept (the same bits as all of them
    given on the command line)."""
    path = tmp_path / "tiles_moe.yaml"
    path.write_text(yaml.safe_dump(WITH_TILES, sort_keys=False))
    layer = moe_mlir.compile(path, tiles="expert-kernel=panel")
    assert layer.packs_weights
    want = moe_mlir.compile(BASE, tiles=TILES_OPTION + " expert-kernel=panel")
    got, x, W = _forward(layer, WITH_TILES)
    _assert_same_results(got, _forward(want, BASE)[0], "spec tiles under compile(tiles=...)")
    compare(got, R.forward(BASE, x, **W))


@requires_compiler
def test_reference_pipeline_ignores_tiles():
    layer = moe_mlir.compile(WITH_TILES, pipeline="reference")
    got, x, W = _forward(layer, WITH_TILES)
    _assert_same_results(got, _forward(moe_mlir.compile(BASE, pipeline="reference"), BASE)[0],
                         "reference pipeline with and without tiles")


@requires_compiler
@pytest.mark.parametrize("tiles, at_value, message", [
    ({"row-blok": 32}, False, r"unknown tile option 'row-blok' in 'tiles' \(accepted options: "
                              r"col-block, .*row-block.*\)"),
    ({"vector-width": 3}, True, r"invalid value '3' for 'tiles.vector-width': vector-width "
                                r"must be a power of two, got 3"),
    ({"expert-kernel": "foo"}, True, r"invalid value ['\"]foo['\"] for 'tiles.expert-kernel': "
                                     r"expert-kernel must be panel or row-dot, got 'foo'"),
    ({"row-block": "32"}, True, r"expected an integer for 'tiles.row-block', "
                                r"got the string \"32\""),
    ({"reference": 1}, False, r"unknown tile option 'reference'"),
])
def test_front_end_rejects_bad_tiles(tmp_path, tiles, at_value, message):
    """Names and values are moe-compile's to check: SpecError (a ValueError)
    with its file:line:col diagnostic at the entry's key or value."""
    text = yaml.safe_dump(BASE, sort_keys=False) + yaml.safe_dump({"tiles": tiles})
    line = text.splitlines().index("tiles:") + 2
    (name,) = tiles
    column = 3 + (len(name) + 2 if at_value else 0)
    path = tmp_path / "bad_tiles.yaml"
    path.write_text(text)
    with pytest.raises(moe_mlir.SpecError,
                       match=rf"bad_tiles.yaml:{line}:{column}: error: {message}"):
        moe_mlir.compile(path)
    # The same from a dict (moe-compile reads it as JSON, where strings are
    # quoted).
    with pytest.raises(moe_mlir.SpecError, match=r":\d+:\d+: error: " + message):
        moe_mlir.compile(json.loads(json.dumps({**BASE, "tiles": tiles})))
