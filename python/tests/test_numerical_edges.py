"""Numerical edge cases of docs/semantics.md §2 (numerical-edges), through every pipeline.

Each case runs one layer of every kind (moe with aux losses, mh_moe, pkm, peer)
compiled by the fast pipeline and by the reference lowering, and compares both
with the NumPy reference: NaN and ±inf inputs and logits, all-equal scores,
logits far beyond exp's f32 range (stable softmax and log-sum-exp), logits
vanishingly small, and capacity below one token.  Routing results must agree
exactly, floats to 1e-5 (NaN equal to NaN where the semantics make it NaN).
"""

from __future__ import annotations

import numpy as np
import pytest

import moe_mlir
from moe_mlir import reference as R
from moe_mlir.spec import load_spec, spec_hash

from compile_helpers import (HAVE_COMPILER, assert_close, compare, make_weights, make_x,
                             mh_spec, moe_spec, pk_spec, requires_compiler)

pytestmark = requires_compiler

PIPELINES = ("fast", "reference")

LAYERS = {
    "moe_softmax": moe_spec("edge_soft", experts=6, router={"top_k": 2},
                            aux_losses=["load_balance", "importance", "z_loss"]),
    "moe_sigmoid_tts": moe_spec("edge_sig", experts=6, router={
        "top_k": 3, "score": "sigmoid", "order": "topk_then_score", "normalize": True},
        aux_losses=["z_loss"]),
    "moe_groups": moe_spec("edge_grp", experts=8, router={
        "top_k": 2, "score": "sigmoid", "selection_bias": True, "groups": 4,
        "topk_groups": 2, "group_score": "top2_sum", "normalize": True},
        shared_experts={"hidden": 8}),
    "mh_moe": mh_spec("edge_mh", router={"top_k": 2}, aux_losses=["z_loss"]),
    "pkm": pk_spec("pkm", "edge_pkm", n=4, top_k=3, heads=2),
    "peer": pk_spec("peer", "edge_peer", n=4, top_k=3, heads=2, activation="silu"),
}
ROUTED = [k for k in LAYERS if not k.startswith(("pkm", "peer"))]

_LAYERS = {}


def layer_of(spec, pipeline: str) -> "moe_mlir.Layer":
    key = (spec_hash(spec), pipeline)
    if key not in _LAYERS:
        _LAYERS[key] = moe_mlir.compile(spec, pipeline=pipeline)
    return _LAYERS[key]


@pytest.fixture(scope="module", autouse=True)
def _compile_all():
    if not HAVE_COMPILER:
        return
    from concurrent.futures import ThreadPoolExecutor
    jobs = [(s, p) for s in LAYERS.values() for p in PIPELINES]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda job: layer_of(*job), jobs))


def run_both(case: str, pipeline: str, x, W, **tol) -> dict:
    """The compiled layer's results, after comparing them with the reference."""
    spec = load_spec(LAYERS[case])
    got = layer_of(spec, pipeline).forward(x, **W)
    with np.errstate(all="ignore"):
        ref = R.forward(spec, x, **W)
    compare(got, ref, equal_nan=True, **tol)
    return got


def routing_weight(case: str) -> str:
    """The weight whose scale sets the routing scores of ``case``."""
    return "keys1" if case in ("pkm", "peer") else "gate"


# --------------------------------------------------------------------------- #
# NaN and infinities in the input
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("case", list(LAYERS))
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_nonfinite_input_stays_in_its_token(case, pipeline, value):
    """A token with a NaN/±inf feature gets the result the reference gives it
    (NaN or inf where the formulas make it so); the other tokens are untouched:
    their bits equal a run without that token."""
    spec = load_spec(LAYERS[case])
    W = make_weights(spec, 201)
    x = make_x(7, spec["d_model"], 202)
    x[3, 5] = value
    got = run_both(case, pipeline, x, W)
    assert not np.isfinite(got["out"][3]).all()
    keep = np.arange(7) != 3
    alone = layer_of(spec, pipeline).forward(np.ascontiguousarray(x[keep]), **W)
    np.testing.assert_array_equal(got["out"][keep], alone["out"])
    assert np.isfinite(got["out"][keep]).all()


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("case", ["moe_softmax", "moe_sigmoid_tts", "mh_moe"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_nonfinite_router_row(case, pipeline, value):
    """One expert's gate row holds a NaN/±inf: its logit is NaN or ±inf for every
    token; ranking, scores and weights follow the ranking rule and IEEE
    arithmetic as the reference does."""
    spec = load_spec(LAYERS[case])
    W = make_weights(spec, 203)
    W["gate"][1, 0] = value
    x = make_x(9, spec["d_model"], 204)
    x[:, 0] = np.abs(x[:, 0]) + 0.5  # the sign of the logit is known: value's own
    if case == "mh_moe":
        D = spec["d_model"]
        W["head_proj"] = np.eye(D, dtype=np.float32)  # sub-token feature 0 is x's
        x[:, D // spec["heads"]] = np.abs(x[:, D // spec["heads"]]) + 0.5
    got = run_both(case, pipeline, x, W)
    ids = got["topk_ids"].reshape(-1, got["topk_ids"].shape[-1])
    k = ids.shape[-1]
    softmax_first = LAYERS[case]["router"].get("order") != "topk_then_score"
    if value < 0:
        assert (ids != 1).all(), "-inf ranks last while finite logits remain"
    elif softmax_first:
        # The softmax over all experts is NaN for the whole row (its max is NaN
        # or exp(inf - inf) is): every score ties as NaN, ids go by index.
        assert (ids == np.arange(k)).all()
        assert np.isnan(got["topk_weights"]).all() and np.isnan(got["out"]).all()
    elif np.isnan(value):
        assert (ids != 1).all(), "a NaN logit ranks below every number"
        assert np.isfinite(got["out"]).all()
    else:
        assert (ids[:, 0] == 1).all(), "+inf ranks first"


# --------------------------------------------------------------------------- #
# All-equal scores
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("case", list(LAYERS))
def test_all_equal_scores_pick_lowest_ids(case, pipeline):
    """Every score ties: the ranking rule picks the lowest ids, with equal weights."""
    spec = load_spec(LAYERS[case])
    W = make_weights(spec, 205)
    W[routing_weight(case)][...] = 0.0
    if "keys2" in W:
        W["keys2"][...] = 0.0
    if "gate_bias" in W:
        W["gate_bias"][...] = 0.0
    got = run_both(case, pipeline, make_x(5, spec["d_model"], 206), W)
    k = got["topk_ids"].shape[-1]
    if case in ("pkm", "peer"):
        # Product ids: sub-key pairs in (i, j) order, lowest first.
        n = int(round(np.sqrt(spec["experts"])))
        want = [i * n + j for i in range(n) for j in range(n)][:k]
    elif case == "moe_groups":
        want = [0, 1]  # group 0 ranks first; its two members
    else:
        want = list(range(k))
    assert (got["topk_ids"] == want).all()
    w = got["topk_weights"]
    np.testing.assert_array_equal(w, np.broadcast_to(w[..., :1], w.shape))


# --------------------------------------------------------------------------- #
# Very large and very small logits
# --------------------------------------------------------------------------- #

def integer_inputs(case: str, spec, T: int, offset: float, seed: int):
    """x and weights of small integers, so that every logit (or sub-key score)
    is an integer that f32 holds exactly, all of them shifted by ``offset``
    through feature 0: the kernel and the float64 reference then see the same
    logits, and only the way exp is evaluated can differ."""
    rs = np.random.default_rng(seed)
    W = make_weights(spec, seed)
    D = spec["d_model"]
    x = rs.integers(-2, 3, (T, D)).astype(np.float32)
    x[:, 0] = 1.0
    if case in ("pkm", "peer"):
        # Sub-key scores q_h · key, q = query · x: integer query rows, keys with
        # an integer column 0 of 1, and query feature 0 of every head = offset.
        key_dim = spec["key_dim"]
        W["query"] = rs.integers(-1, 2, W["query"].shape).astype(np.float32)
        W["query"][:, 0] = 0.0
        for half in range(W["query"].shape[0] // (key_dim // 2)):
            W["query"][half * (key_dim // 2), :] = 0.0
            W["query"][half * (key_dim // 2), 0] = offset
        for name in ("keys1", "keys2"):
            W[name] = rs.integers(-2, 3, W[name].shape).astype(np.float32)
            W[name][..., 0] = 1.0
    else:
        if case == "mh_moe":
            W["head_proj"] = np.eye(D, dtype=np.float32)
            x[:, D // spec["heads"]] = 1.0  # feature 0 of every sub-token
        W["gate"] = rs.integers(-3, 4, W["gate"].shape).astype(np.float32)
        W["gate"][:, 0] = offset
        if "gate_bias" in W:
            W["gate_bias"] = rs.integers(-2, 3, W["gate_bias"].shape).astype(np.float32)
    return x, W


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("case", list(LAYERS))
@pytest.mark.parametrize("offset", [1e3, -1e3, 1e6], ids=["1e3", "-1e3", "1e6"])
def test_huge_logits_are_stable(case, pipeline, offset):
    """Logits far beyond exp's f32 range (|l| > 88, where exp overflows to inf
    or underflows to 0 for every entry): softmax and log-sum-exp subtract the
    row max first, so weights stay finite, and z_loss is the square of a
    finite log-sum-exp; both agree with the reference."""
    spec = load_spec(LAYERS[case])
    x, W = integer_inputs(case, spec, 6, offset, 207)
    got = run_both(case, pipeline, x, W)
    router = spec.get("router", {})
    if offset < 0 and router.get("score") == "sigmoid" and router.get("normalize"):
        # Every sigmoid score underflows to 0 (f32 and float64 alike), and
        # normalize divides by their sum as written: 0/0 is NaN.
        assert np.isnan(got["topk_weights"]).all() and np.isnan(got["out"]).all()
        return
    assert np.isfinite(got["topk_weights"]).all()
    assert np.isfinite(got["out"]).all()
    for name in ("z_loss", "load_balance", "importance"):
        if name in got:
            assert np.isfinite(got[name]), name


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("case", ["moe_softmax", "mh_moe"])
def test_aux_loss_beyond_f32_is_inf(case, pipeline):
    """Aux losses are f32 results (returned as Python floats): logits near 1e20
    make z_loss = mean(lse²) ≈ 1e40, beyond f32's range, so it is +inf, the
    float32 value of the reference's float64 loss; out and weights stay right."""
    spec = load_spec(LAYERS[case])
    x, W = integer_inputs(case, spec, 4, 1e20, 209)
    got = layer_of(spec, pipeline).forward(x, **W)
    with np.errstate(all="ignore"):
        ref = R.forward(spec, x, **W)
    with np.errstate(over="ignore"):
        assert np.float32(ref["z_loss"]) == np.inf and got["z_loss"] == np.inf
    ref["z_loss"] = got["z_loss"]
    compare(got, ref)


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("case", list(LAYERS))
def test_tiny_logits(case, pipeline):
    """Logits of 1e-30 and below: every score equals the others to f32 (and
    float64) precision, so the ranking rule's ties decide, as in the reference."""
    spec = load_spec(LAYERS[case])
    W = make_weights(spec, 211)
    W[routing_weight(case)] *= np.float32(1e-30)
    if "gate_bias" in W:
        W["gate_bias"] *= np.float32(1e-30)
    got = run_both(case, pipeline, make_x(6, spec["d_model"], 212), W)
    assert np.isfinite(got["out"]).all()


# x scales that put each layer's output near 1e-40, below f32's smallest normal
# (1.2e-38): swiglu experts are quadratic in x, gelu and silu ones linear.
SUBNORMAL_SCALE = {"moe_softmax": 1e-20, "moe_sigmoid_tts": 1e-20, "moe_groups": 1e-20,
                   "mh_moe": 1e-40, "peer": 1e-40}


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("case", list(SUBNORMAL_SCALE))
def test_subnormals_are_not_flushed(case, pipeline):
    """Outputs (and partial products) in f32's subnormal range are kept, not
    flushed to zero: they agree with the reference to the precision subnormals
    have (an ulp of 1.4e-45)."""
    spec = load_spec(LAYERS[case])
    W = make_weights(spec, 213)
    x = make_x(5, spec["d_model"], 214, scale=SUBNORMAL_SCALE[case])
    got = run_both(case, pipeline, x, W, out_rtol=1e-3, out_atol=1e-43)
    out = np.abs(got["out"])
    assert ((out > 0) & (out < np.finfo(np.float32).tiny)).any(), "no subnormal output"


# --------------------------------------------------------------------------- #
# Capacity below one token
# --------------------------------------------------------------------------- #

CAPACITY = {
    # factor·T·k/E = 0.0625: C_e = ceil(...) = 1, each expert keeps one assignment.
    "fraction": (moe_spec("edge_cap_frac", experts=8, router={"top_k": 1},
                          capacity={"factor": 0.5}, shared_experts={"hidden": 4}), 1),
    # factor·T·k/E underflows float64 to 0: C_e = 0 and every assignment drops;
    # out is the shared expert alone.
    "underflow": (moe_spec("edge_cap_zero", experts=8, router={"top_k": 1},
                           capacity={"factor": 5e-324}, shared_experts={"hidden": 4}), 0),
    "underflow_next_choice": (moe_spec("edge_cap_zero_nc", experts=8, router={"top_k": 1},
                                       capacity={"factor": 5e-324, "overflow": "next_choice"}),
                              0),
}


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("case", list(CAPACITY))
def test_capacity_below_one_token(case, pipeline):
    spec, per_expert = CAPACITY[case]
    spec = load_spec(spec)
    T = 1
    assert R.capacity(spec["capacity"]["factor"], T, 1, spec["experts"]) == per_expert
    W = make_weights(spec, 215)
    x = make_x(T, spec["d_model"], 216)
    layer = moe_mlir.compile(spec, pipeline=pipeline)
    got = layer.forward(x, **W)
    with np.errstate(all="ignore"):
        ref = R.forward(spec, x, **W)
    compare(got, ref)
    assert got["dropped"] == (0 if per_expert else T)
    if per_expert == 0:
        shared = R.forward(dict(spec, capacity=None), x, **W)
        routed_only = shared["out"] - ref["out"]
        assert np.abs(routed_only).max() > 0, "the routed experts add something when kept"
        if "shared_w1" in W:
            assert_close(got["out"], R._shared(spec, x.astype(np.float64), W), "shared expert")
        else:
            assert (got["out"] == 0).all()
