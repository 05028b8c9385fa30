"""Exact by construction: the fast kernels' bits for every layer kind.

* the same bits for 1, 2 and 3 threads (every output, NaN included);
* a token's output is bit-identical whether it runs alone, in its batch or in
  a batch of other tokens in another order (layers without capacity, which
  couples tokens by design, and without router noise, whose samples are keyed
  by token position);
* the combine order of docs/semantics.md (shared output first, then the
  token's experts in ascending id), checked bit for bit where another order
  gives other bits.
"""

from __future__ import annotations

import numpy as np
import pytest

import moe_mlir
from compile_helpers import (compiled, make_weights, make_x, mh_spec, moe_spec, pk_spec,
                             precompile, requires_compiler)

pytestmark = requires_compiler

# Shapes off every tile size (d_model 20, hidden 13) and batches of several
# work items per expert, so row and column remainders are exercised.
SPECS = {
    "swiglu": moe_spec("ex_swiglu", d_model=20, experts=6, expert_hidden=13,
                       router={"top_k": 2, "normalize": True}),
    "gelu_bf16": moe_spec("ex_gelu_bf16", d_model=24, experts=5, expert_hidden=40,
                          activation="gelu", weight_dtype="bf16",
                          router={"top_k": 3, "order": "topk_then_score"}),
    "deepseek": moe_spec("ex_deepseek", d_model=32, experts=8, expert_hidden=16,
                         router={"top_k": 2, "score": "sigmoid", "selection_bias": True,
                                 "groups": 4, "topk_groups": 2, "normalize": True,
                                 "scaling": 2.5},
                         shared_experts={"hidden": 24, "gate": True}),
    "relu_f16": moe_spec("ex_relu_f16", d_model=16, experts=4, expert_hidden=9,
                         activation="relu", weight_dtype="f16",
                         aux_losses=["load_balance", "z_loss"]),
    "mh_moe": mh_spec("ex_mh", d_model=24, heads=3, experts=6, expert_hidden=10),
    "peer": pk_spec("peer", name="ex_peer", d_model=20, n=5, heads=2, top_k=4, key_dim=8,
                    activation="gelu", query_batchnorm=True),
    "pkm": pk_spec("pkm", name="ex_pkm", d_model=18, n=6, heads=3, top_k=5, key_dim=6),
    "capacity": moe_spec("ex_capacity", d_model=16, experts=4, expert_hidden=8,
                         capacity={"factor": 0.75, "overflow": "next_choice"}),
    "noisy": moe_spec("ex_noisy", d_model=16, experts=4, expert_hidden=8,
                      router={"top_k": 2, "noise": True}),
    # PhiMoE's sparsemixer: per-pick sums over the experts not ranked ahead.
    "sparsemixer": moe_spec("ex_sparsemixer", d_model=20, experts=6, expert_hidden=13,
                            router={"top_k": 2, "score": "sparsemixer",
                                    "jitter_eps": 0.1}),
    # Gemma 4: both RMSNorms (router input, experts' input), per-expert scale.
    "expert_norm": moe_spec("ex_expert_norm", d_model=20, experts=6, expert_hidden=13,
                            activation="geglu_tanh", expert_scale=True,
                            expert_rms_norm=True, weight_dtype="bf16",
                            router={"top_k": 2, "normalize": True, "rms_norm": True},
                            shared_experts={"hidden": 11}),
    # NLLB-MoE: ceil(f T) slots per expert, kept weights renormalised.
    "renormalize": moe_spec("ex_renormalize", d_model=16, experts=4, expert_hidden=8,
                            activation="relu", expert_bias=True,
                            router={"top_k": 2, "logit_bias": True},
                            capacity={"token_fraction": 0.3, "renormalize": True}),
}
BATCH_COUPLED = {"capacity", "noisy", "renormalize"}
T = 70


@pytest.fixture(scope="module", autouse=True)
def _compile_all():
    precompile(SPECS.values())
    yield
    moe_mlir.set_num_threads(0)


def _run(name, x, seed=None):
    spec = SPECS[name]
    kw = {"seed": seed} if name == "noisy" else {}
    return compiled(spec).forward(x, **kw, **make_weights(spec))


def _assert_bits_equal(a, b, what):
    a, b = np.atleast_1d(np.asarray(a)), np.atleast_1d(np.asarray(b))
    assert a.shape == b.shape and a.dtype == b.dtype, what
    assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), \
        f"{what}: {np.sum(a != b)} elements differ in their bits"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_same_bits_for_any_thread_count(name):
    x = make_x(T, SPECS[name]["d_model"], seed=3)
    moe_mlir.set_num_threads(1)
    one = _run(name, x, seed=7)
    for threads in (2, 3):
        moe_mlir.set_num_threads(threads)
        many = _run(name, x, seed=7)
        for key, value in one.items():
            _assert_bits_equal(many[key], value, f"{name}.{key} with {threads} threads")
    moe_mlir.set_num_threads(0)


@pytest.mark.parametrize("name", sorted(set(SPECS) - BATCH_COUPLED))
def test_token_bits_do_not_depend_on_the_batch(name):
    x = make_x(T, SPECS[name]["d_model"], seed=4)
    batch = _run(name, x)
    rows_per_token = batch["topk_ids"].shape[0] // T
    # Alone, one token at a time.
    for t in (0, 1, 37, T - 1):
        alone = _run(name, x[t:t + 1])
        _assert_bits_equal(alone["out"][0], batch["out"][t], f"{name}: token {t} alone")
        rows = slice(t * rows_per_token, (t + 1) * rows_per_token)
        _assert_bits_equal(alone["topk_ids"], batch["topk_ids"][rows], f"{name}: ids of {t}")
    # In a different batch, in another order.
    pick = np.arange(T)[::-3]
    other = _run(name, np.ascontiguousarray(x[pick]))
    _assert_bits_equal(other["out"], batch["out"][pick], f"{name}: tokens in another batch")


@pytest.mark.parametrize("pipeline", ["fast", "reference"])
def test_combine_order_is_shared_then_ascending_expert(pipeline):
    """out = ((shared + w_1·y_1) + w_3·y_3) for a token routed to experts 3
    (first choice) then 1, with values where the order shows in the bits."""
    spec = moe_spec(f"order_{pipeline}", d_model=8, experts=4, expert_hidden=8,
                    activation="relu", router={"top_k": 2},
                    shared_experts={"hidden": 8})
    eye = np.eye(8, dtype=np.float32)
    W = {"gate": np.full((4, 8), -5.0, np.float32),
         "w1": np.stack([eye] * 4), "w2": np.stack([eye] * 4),
         "shared_w1": eye, "shared_w2": -1.0e8 * eye}
    W["gate"][3, 0], W["gate"][1, 0] = 2.0, 1.9          # rank: expert 3, then 1
    W["w2"][1] = 2.0e8 * eye                              # y_1 = [2e8, 0, ...]
    W["w2"][3] = 3.0 * eye                                # y_3 = [3, 0, ...]
    x = np.zeros((1, 8), np.float32)
    x[0, 0] = 1.0
    got = moe_mlir.compile(spec, pipeline=pipeline).forward(x, **W)
    assert got["topk_ids"].tolist() == [[3, 1]]
    w3, w1 = got["topk_weights"][0]
    f32 = np.float32
    shared = f32(-1.0e8)
    by_expert = (shared + w1 * f32(2.0e8)) + w3 * f32(3.0)
    by_rank = (shared + w3 * f32(3.0)) + w1 * f32(2.0e8)
    assert by_expert != by_rank, "the case must tell the two orders apart"
    _assert_bits_equal(got["out"][0, 0], f32(by_expert), f"{pipeline}: out[0, 0]")
    ref = moe_mlir.reference.forward(spec, x, **W)["out"][0, 0]
    assert abs(float(ref) - float(by_expert)) < 1.0


@pytest.mark.parametrize("name", ["swiglu", "gelu_bf16", "deepseek", "mh_moe", "expert_norm"])
def test_same_bits_for_any_partition(name):
    """Row and column blocks, register tiles and depth chunks move work
    between items and threads but never reorder a sum: the bits stay."""
    spec = SPECS[name]
    x = make_x(T, spec["d_model"], seed=5)
    W = make_weights(spec)
    base = compiled(spec).forward(x, **W)
    for tiles in ("depth-block=8 row-block=4 col-block=4",
                  "row-tile=2 col-tile=2 depth-block=16 row-block=7 col-block=6 token-block=3"):
        got = moe_mlir.compile(spec, tiles=tiles).forward(x, **W)
        for key, value in base.items():
            _assert_bits_equal(got[key], value, f"{name}.{key} with tiles {tiles!r}")


@pytest.mark.parametrize("dtype", ["bf16", "f16"])
def test_16bit_weights_with_masked_tails(dtype):
    """Depths 20, 13 and 11 end in masked 16-bit loads (widened in
    registers); the kernel must link and agree with the reference."""
    from compile_helpers import check_forward
    spec = moe_spec(f"tail_{dtype}", d_model=20, experts=5, expert_hidden=13,
                    weight_dtype=dtype, shared_experts={"hidden": 11})
    check_forward(spec, make_x(37, 20), make_weights(spec))
