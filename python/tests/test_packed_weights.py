"""Expert weights packed once into the kernels' panel layout.

``moe-compile`` exports ``<layer>_pack_weights`` (each expert MLP weight
[(E,) N, K] -> [(E,) ceil(N / P), K, P], the tail tile zero-padded) and
``<layer>_forward_packed``, which runs on its outputs; ``Layer.bind()`` uses
both. The packed forward reads every panel straight from the packed weights
with the same FMA chains as the panel kernel of ``<layer>_forward``, so the
two must agree bit for bit — on every output, at any T, for any thread count
and batch — and both must match the NumPy reference.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import moe_mlir
from moe_mlir import reference as R
from compile_helpers import (assert_same_bits, compare, make_weights, make_x, mh_spec, moe_spec, pk_spec,
                             requires_compiler)

pytestmark = requires_compiler

# Shapes off every tile: 13 and 21 hidden columns pad the last packed tile,
# depths 20 and 37 end inside a vector.
SPECS = {
    "swiglu": moe_spec("pw_swiglu", d_model=20, experts=6, expert_hidden=13,
                       router={"top_k": 2, "normalize": True}),
    "gelu_bf16": moe_spec("pw_gelu_bf16", d_model=37, experts=5, expert_hidden=40,
                          activation="gelu", weight_dtype="bf16",
                          router={"top_k": 3, "order": "topk_then_score"}),
    "relu_f16_shared": moe_spec("pw_relu_f16", d_model=16, experts=4, expert_hidden=9,
                                activation="relu", weight_dtype="f16",
                                shared_experts={"hidden": 21, "gate": True}),
    "deepseek_bf16": moe_spec("pw_deepseek", d_model=32, experts=8, expert_hidden=16,
                              weight_dtype="bf16",
                              router={"top_k": 2, "score": "sigmoid", "selection_bias": True,
                                      "groups": 4, "topk_groups": 2, "normalize": True,
                                      "scaling": 2.5},
                              shared_experts={"hidden": 24}),
    "mh_moe": mh_spec("pw_mh", d_model=24, heads=3, experts=6, expert_hidden=10),
    "capacity": moe_spec("pw_capacity", d_model=16, experts=4, expert_hidden=8,
                         capacity={"factor": 0.75, "overflow": "next_choice"}),
}

_LAYERS = {}


def _layer(name, **options):
    key = (name, tuple(sorted(options.items())))
    if key not in _LAYERS:
        spec = SPECS[name] if name in SPECS else name
        _LAYERS[key] = moe_mlir.compile(spec, **options)
    return _LAYERS[key]


def _allassert_same_bits(got, want, what):
    assert set(got) == set(want)
    for name in want:
        assert_same_bits(got[name], want[name], f"{what}: {name}")


@pytest.mark.parametrize("T", [1, 5, 70])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_packed_forward_is_the_forward_bit_for_bit(name, T):
    layer = _layer(name)
    assert layer.packs_weights
    spec = SPECS[name]
    x = make_x(T, spec["d_model"], seed=T)
    W = make_weights(spec)
    bound = layer.bind(**W).forward(x)
    _allassert_same_bits(bound, layer.forward(x, **W), f"{name} T={T}")
    compare(bound, R.forward(spec, x, **W))


def _numpy_pack(w, tile):
    """[(E,) N, K] -> [(E,) ceil(N / tile), K, tile], zero-padded."""
    *lead, n, k = w.shape
    tiles = -(-n // tile)
    padded = np.zeros((*lead, tiles * tile, k), dtype=w.dtype)
    padded[..., :n, :] = w
    return np.ascontiguousarray(padded.reshape(*lead, tiles, tile, k).swapaxes(-1, -2))


@pytest.mark.parametrize("name", ["swiglu", "gelu_bf16", "relu_f16_shared"])
def test_pack_weights_writes_the_documented_layout(name):
    layer = _layer(name)
    checked = dict(zip(layer.weight_shapes, layer._check_weights(make_weights(SPECS[name]))))
    packed_inputs = layer._pack(list(checked.values()))
    names = [b["name"] for b in layer._abi["packed"]["inputs"][1:]]
    packed = dict(zip(names, packed_inputs))
    outputs = layer._abi["packed"]["pack_outputs"]
    assert outputs and all(b["name"].endswith("_packed") for b in outputs)
    for buf in outputs:
        source = checked[buf["name"][:-len("_packed")]]
        tile = buf["shape"][-1]
        assert tile % 8 == 0
        assert_same_bits(packed[buf["name"]], _numpy_pack(source, tile), buf["name"])


@pytest.mark.parametrize("name", ["swiglu", "deepseek_bf16"])
def test_packed_forward_is_the_same_for_any_thread_count(name):
    spec = SPECS[name]
    layer = _layer(name)
    bound = layer.bind(**make_weights(spec))
    x = make_x(70, spec["d_model"], seed=3)
    before = moe_mlir.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            moe_mlir.set_num_threads(n)
            results.append(bound.forward(x))
    finally:
        moe_mlir.set_num_threads(before)
    for n, got in zip((2, 3), results[1:]):
        _allassert_same_bits(got, results[0], f"{n} threads")


@pytest.mark.parametrize("name", ["gelu_bf16", "relu_f16_shared", "mh_moe"])
def test_packed_forward_is_batch_invariant(name):
    spec = SPECS[name]
    bound = _layer(name).bind(**make_weights(spec))
    x = make_x(33, spec["d_model"], seed=4)
    batch = bound(x)
    for t in (0, 17, 32):
        assert_same_bits(bound(x[t:t + 1]), batch[t:t + 1], f"token {t} alone")


def test_bind_packs_a_copy():
    spec = SPECS["swiglu"]
    W = make_weights(spec)
    bound = _layer("swiglu").bind(**W)
    x = make_x(4, spec["d_model"])
    before = bound(x)
    W["w1"][:] = 0  # packed at bind(): the bound layer keeps the old weights
    assert_same_bits(bound(x), before, "after changing the caller's w1")


@pytest.mark.parametrize("which", ["pkm", "reference", "row-dot"])
def test_layers_without_packed_variants_still_bind(which):
    # PKM has no expert MLP; the reference pipeline and the row-dot kernel
    # export no packed forward (row-dot tiles sum in another order).
    if which == "pkm":
        spec = pk_spec("pkm", name="pw_pkm")
        layer = moe_mlir.compile(spec)
    else:
        spec = SPECS["swiglu"]
        layer = (_layer("swiglu", pipeline="reference") if which == "reference"
                 else _layer("swiglu", tiles="expert-kernel=row-dot"))
    assert not layer.packs_weights
    W = make_weights(spec)
    x = make_x(3, spec["d_model"])
    _allassert_same_bits(layer.bind(**W).forward(x), layer.forward(x, **W), which)


def test_pack_weights_reports_a_null_pointer():
    layer = _layer("swiglu")
    n = len(layer._abi["packed"]["pack_inputs"]) + len(layer._abi["packed"]["pack_outputs"])
    status = layer._pack_fn(*([None] * n))
    assert status == 1  # MOE_ERROR_NULL_ARGUMENT
    assert layer._lib.moe_last_error().decode() == \
        "pw_swiglu_pack_weights: argument 'w1' is NULL"


# --------------------------------------------------------------------------- #
# <layer>_route: the routing alone
# --------------------------------------------------------------------------- #

ROUTE_SPECS = {
    "moe": SPECS["deepseek_bf16"],
    "mh_moe": SPECS["mh_moe"],
    "capacity": SPECS["capacity"],
    "noisy": moe_spec("pw_noisy", router={"top_k": 2, "noise": True}),
    "peer": pk_spec("peer", name="pw_peer"),
}
EXPERT_WEIGHTS = {"w1", "w2", "w3", "shared_w1", "shared_w2", "shared_w3", "shared_gate",
                  "expert_in", "expert_out", "values"}


@pytest.mark.parametrize("name", sorted(ROUTE_SPECS))
def test_route_reads_only_the_router_and_matches_forward(name):
    spec = ROUTE_SPECS[name]
    layer = moe_mlir.compile(spec)
    route_inputs = [b["name"] for b in layer._abi["route"]["inputs"][1:]]
    assert route_inputs and not set(route_inputs) & EXPERT_WEIGHTS, route_inputs
    W = make_weights(spec)
    x = make_x(9, spec["d_model"], seed=2)
    seed = 11 if name == "noisy" else None
    full = layer.forward(x, seed=seed, **W)
    for ids, weights in (layer.route(x, seed=seed, **W),
                         layer.route(x, seed=seed, **{n: W[n] for n in route_inputs}),
                         layer.bind(**W).route(x, seed=seed)):
        assert_same_bits(ids, full["topk_ids"], f"{name} topk_ids")
        assert_same_bits(weights, full["topk_weights"], f"{name} topk_weights")
    with pytest.raises(ValueError, match=f"missing weight {route_inputs[0]!r}"):
        layer.route(x, seed=seed, **{n: W[n] for n in route_inputs[1:]})
