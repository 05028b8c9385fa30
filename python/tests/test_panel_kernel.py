"""The panel expert kernel (``expert-kernel=panel``) end to end.

Expert MLPs become outer products on weight panels packed per depth chunk
(items with few rows skip the panel and transpose in registers), so every
output is one FMA chain over k in order. These tests hold it to the NumPy
reference over the edge cases, and to its exactness promises: the same bits
for any thread count, any batch a token runs in, either path (panel or
direct), and any tile size or vector width, since none of them reorders a
chain.
"""

from __future__ import annotations

import numpy as np
import pytest

import moe_mlir
from moe_mlir import reference as R
from compile_helpers import (assert_same_bits, compare, dominated_gate, make_weights, make_x, mh_spec, moe_spec,
                             requires_compiler)

pytestmark = requires_compiler

PANEL = "expert-kernel=panel"
# Shapes off every tile: 13 hidden columns pad the last register tile, depth
# 20 ends inside a vector, 37 depth chunks of 8 with a tail.
SPECS = {
    "swiglu": moe_spec("pn_swiglu", d_model=20, experts=6, expert_hidden=13,
                       router={"top_k": 2, "normalize": True}),
    "gelu_bf16": moe_spec("pn_gelu_bf16", d_model=37, experts=5, expert_hidden=40,
                          activation="gelu", weight_dtype="bf16",
                          router={"top_k": 3, "order": "topk_then_score"}),
    "relu_f16_shared": moe_spec("pn_relu_f16", d_model=16, experts=4, expert_hidden=9,
                                activation="relu", weight_dtype="f16",
                                shared_experts={"hidden": 11, "gate": True}),
    "deepseek": moe_spec("pn_deepseek", d_model=32, experts=8, expert_hidden=16,
                         router={"top_k": 2, "score": "sigmoid", "selection_bias": True,
                                 "groups": 4, "topk_groups": 2, "normalize": True,
                                 "scaling": 2.5},
                         shared_experts={"hidden": 24}),
    "mh_moe": mh_spec("pn_mh", d_model=24, heads=3, experts=6, expert_hidden=10),
    "capacity": moe_spec("pn_capacity", d_model=16, experts=4, expert_hidden=8,
                         capacity={"factor": 0.75, "overflow": "next_choice"}),
}
# Tilings that move rows between the panel and the direct path (row-block 2
# leaves every item few rows), chunk the depth and change the register tile:
# none of it may change a bit.
TILINGS = [
    "panel-depth-block=8 panel-row-tile=2 row-block=5 col-block=8",
    "row-block=2 panel-col-vectors=1",
    "panel-row-tile=5 panel-depth-block=12 col-block=24",
]

_LAYERS = {}


def _layer(name, tiles=PANEL):
    key = (name, tiles)
    if key not in _LAYERS:
        _LAYERS[key] = moe_mlir.compile(SPECS[name], tiles=tiles)
    return _LAYERS[key]


@pytest.mark.parametrize("T", [1, 5, 70])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_panel_kernel_matches_the_reference(name, T):
    spec = SPECS[name]
    x = make_x(T, spec["d_model"], seed=T)
    W = make_weights(spec)
    got = _layer(name).forward(x, **W)
    compare(got, R.forward(spec, x, **W))


@pytest.mark.parametrize("width", [4, 16])
def test_panel_kernel_at_other_vector_widths(width):
    """4 and 16 lanes transpose through the generic shuffle rounds."""
    spec = SPECS["gelu_bf16"]
    x = make_x(70, spec["d_model"], seed=6)
    W = make_weights(spec)
    got = _layer("gelu_bf16", f"{PANEL} vector-width={width}").forward(x, **W)
    compare(got, R.forward(spec, x, **W))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_panel_bits_do_not_depend_on_tiles_threads_or_path(name):
    spec = SPECS[name]
    x = make_x(70, spec["d_model"], seed=11)
    W = make_weights(spec)
    moe_mlir.set_num_threads(1)
    base = _layer(name).forward(x, **W)
    try:
        moe_mlir.set_num_threads(3)
        for tiles in [PANEL] + [f"{PANEL} {t}" for t in TILINGS]:
            got = _layer(name, tiles).forward(x, **W)
            for key, value in base.items():
                assert_same_bits(got[key], value, f"{name}.{key} with {tiles!r}, 3 threads")
    finally:
        moe_mlir.set_num_threads(0)


@pytest.mark.parametrize("name", sorted(set(SPECS) - {"capacity"}))
def test_panel_token_bits_do_not_depend_on_the_batch(name):
    spec = SPECS[name]
    x = make_x(70, spec["d_model"], seed=4)
    W = make_weights(spec)
    layer = _layer(name)
    batch = layer.forward(x, **W)["out"]
    for t in (0, 33, 69):
        assert_same_bits(layer.forward(x[t:t + 1], **W)["out"][0], batch[t], f"{name}: token {t}")


def test_panel_skew_unused_experts_and_nan():
    """Every token on one expert (one item far larger than a row block, the
    others empty), then a NaN token that must stay in its own row."""
    spec = SPECS["swiglu"]
    W = dict(make_weights(spec), **dominated_gate(spec, expert=4))
    x = make_x(300, spec["d_model"], seed=2)
    compare(_layer("swiglu").forward(x, **W), R.forward(spec, x, **W))
    x[7, 3] = np.nan
    got = _layer("swiglu").forward(x, **W)
    assert np.isnan(got["out"][7]).all()
    assert np.isfinite(np.delete(got["out"], 7, axis=0)).all()


def test_bad_expert_kernel_is_refused():
    with pytest.raises(moe_mlir.CompileError,
                       match="bad --tiles 'expert-kernel=fancy': expert-kernel must be panel "
                             "or row-dot, got 'fancy'"):
        moe_mlir.compile(SPECS["swiglu"], tiles="expert-kernel=fancy")
