"""End-to-end tests of compiled MH-MoE layers against the NumPy reference.

Head split/merge, the routed MoE on T*h sub-tokens (router options, capacity
on T*h, aux losses over sub-tokens, noise indexed by sub-token), dtypes,
h = 1 against the plain MoE, upcycling, NaN tokens and random draws.
"""

import numpy as np
import pytest

import moe_mlir
from moe_mlir import reference as R
from moe_mlir.spec import load_spec

from compile_helpers import (assert_close, check_forward, compiled, make_weights, make_x,
                             mh_spec, moe_spec, precompile, requires_compiler)

pytestmark = requires_compiler

TOKENS = [1, 2, 5, 17, 33, 65]

CASES = {
    "basic": mh_spec("mh_basic"),
    "h1": mh_spec("mh_h1", heads=1),
    "h4_swiglu": mh_spec("mh_h4", d_model=32, heads=4, activation="swiglu"),
    "h3_sigmoid_normalize": mh_spec("mh_h3", d_model=24, heads=3, experts=5, router={
        "score": "sigmoid", "normalize": True, "scaling": 1.5}),
    "topk_then_score": mh_spec("mh_tts", experts=8, router={"order": "topk_then_score",
                                                           "top_k": 3}),
    "selection_bias_groups": mh_spec("mh_grp", experts=8, router={
        "top_k": 2, "selection_bias": True, "groups": 4, "topk_groups": 2,
        "group_score": "top2_sum", "score": "sigmoid"}),
    "capacity_drop": mh_spec("mh_cap_drop", capacity={"factor": 1.0},
                             aux_losses=["load_balance"]),
    "capacity_next_choice": mh_spec("mh_cap_next", d_model=48, heads=4, experts=8,
                                    router={"normalize": True},
                                    capacity={"factor": 1.25, "overflow": "next_choice"},
                                    aux_losses=["load_balance", "z_loss"]),
    "capacity_bp": mh_spec("mh_cap_bp", experts=3, router={"top_k": 1}, capacity={
        "factor": 0.75, "priority": "batch_prioritized", "overflow": "next_choice"},
        aux_losses=["importance"]),
    "aux_all": mh_spec("mh_aux", heads=4, experts=5, activation="relu",
                       aux_losses=["load_balance", "importance", "z_loss"]),
    "dense_k_eq_e": mh_spec("mh_dense", experts=4, router={"top_k": 4}, activation="silu"),
    "geglu_bf16": mh_spec("mh_bf16", activation="geglu", weight_dtype="bf16",
                          aux_losses=["z_loss"]),
    "relu_f16": mh_spec("mh_f16", activation="relu", weight_dtype="f16",
                        capacity={"factor": 1.0}),
}

NOISY = mh_spec("mh_noisy", heads=4, d_model=32, experts=6, router={"noise": True},
                capacity={"factor": 1.0, "overflow": "next_choice"},
                aux_losses=["load_balance", "importance"])

H1 = mh_spec("mh_eq_moe", heads=1, d_model=16, experts=5, activation="swiglu",
             router={"top_k": 2, "score": "sigmoid"}, capacity={"factor": 1.0},
             aux_losses=["load_balance", "z_loss"])
H1_PLAIN = moe_spec("mh_eq_moe_plain", d_model=16, experts=5, activation="swiglu",
                    router={"top_k": 2, "score": "sigmoid"}, capacity={"factor": 1.0},
                    aux_losses=["load_balance", "z_loss"])

UPCYCLE = mh_spec("mh_up", d_model=24, heads=3, experts=4, expert_hidden=6,
                  activation="gelu", router={"top_k": 2, "normalize": True})


def random_mh_spec(draw: int) -> dict:
    rs = np.random.default_rng(3000 + draw)
    h = int(rs.choice([1, 2, 3, 4]))
    D = h * int(rs.integers(2, 13))
    E = int(rs.choice([3, 4, 5, 6, 8, 12]))
    k = int(rs.integers(1, min(E, 3) + 1))
    spec = mh_spec(f"rand_mh{draw}", d_model=D, heads=h, experts=E,
                   expert_hidden=int(rs.integers(4, 33)),
                   activation=str(rs.choice(["swiglu", "geglu", "gelu", "relu", "silu"])),
                   weight_dtype=str(rs.choice(["f32", "bf16", "f16"])),
                   router={"top_k": k, "score": str(rs.choice(["softmax", "sigmoid"])),
                           "order": str(rs.choice(["score_then_topk", "topk_then_score"])),
                           "normalize": bool(rs.random() < 0.5),
                           "noise": bool(rs.random() < 0.3)},
                   aux_losses=[a for a in ("load_balance", "importance", "z_loss")
                               if rs.random() < 0.5])
    if rs.random() < 0.6:
        spec["capacity"] = {"factor": float(rs.choice([0.5, 1.0, 1.5])),
                            "overflow": str(rs.choice(["drop", "next_choice"])),
                            "priority": str(rs.choice(["token_order", "batch_prioritized"]))}
    return spec


RANDOM = [random_mh_spec(i) for i in range(5)]


@pytest.fixture(scope="module", autouse=True)
def _compile_all():
    precompile(list(CASES.values()) + [NOISY, H1, H1_PLAIN, UPCYCLE] + RANDOM)


def run_case(spec, T, seed, **kw):
    s = load_spec(spec)
    W = make_weights(s, seed)
    x = make_x(T, s["d_model"], seed + 5)
    got = check_forward(s, x, W, **kw)
    k, h = s["router"]["top_k"], s["heads"]
    assert got["topk_ids"].shape == (T * h, k)
    assert int(got["expert_counts"].sum()) + got["dropped"] == T * h * k
    return got


@pytest.mark.parametrize("T", TOKENS)
@pytest.mark.parametrize("case", list(CASES))
def test_mh_moe(case, T):
    got = run_case(CASES[case], T, seed=500 + list(CASES).index(case))
    cap = load_spec(CASES[case])["capacity"]
    if cap is not None:
        s = load_spec(CASES[case])
        C = R.capacity(cap["factor"], T * s["heads"], s["router"]["top_k"], s["experts"])
        assert got["expert_counts"].max() <= C


def test_capacity_counts_sub_tokens():
    """Capacity uses T*h sub-tokens: with a zero gate every sub-token's first
    choice is expert 0, which takes exactly ceil(factor*T*h*k/E) of them."""
    s = load_spec(CASES["capacity_drop"])
    W = make_weights(s, 7)
    W["gate"][:] = 0.0
    T = 17
    got = check_forward(s, make_x(T, s["d_model"], 8), W)
    C = R.capacity(1.0, T * s["heads"], 2, s["experts"])
    assert got["expert_counts"].tolist() == [C, C, 0, 0, 0, 0]
    assert got["dropped"] == T * s["heads"] * 2 - 2 * C


@pytest.mark.parametrize("seed", [0, 42, 2 ** 63 + 17])
def test_noise_by_sub_token(seed):
    s = load_spec(NOISY)
    W = make_weights(s, 9)
    W["w_noise"] *= 3.0
    x = make_x(17, s["d_model"], 10)
    a = check_forward(s, x, W, seed=seed)
    b = compiled(s).forward(x, seed=seed, **W)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    c = compiled(s).forward(x, seed=seed + 1, **W)
    assert (a["topk_ids"] != c["topk_ids"]).any()


def test_one_head_equals_plain_moe():
    """h = 1: the plain MoE on x.head_proj^T, then merge_proj (computed by the
    compiled plain moe layer and NumPy)."""
    s, p = load_spec(H1), load_spec(H1_PLAIN)
    W = make_weights(s, 11)
    T = 33
    x = make_x(T, 16, 12)
    got = check_forward(s, x, W)
    xp = (x.astype(np.float64) @ W["head_proj"].T.astype(np.float64)).astype(np.float32)
    inner = compiled(p).forward(xp, **{n: W[n] for n in ("gate", "w1", "w3", "w2")})
    np.testing.assert_array_equal(got["topk_ids"], inner["topk_ids"])
    np.testing.assert_array_equal(got["expert_counts"], inner["expert_counts"])
    assert got["dropped"] == inner["dropped"]
    out = inner["out"].astype(np.float64) @ W["merge_proj"].T.astype(np.float64)
    assert_close(got["out"], out, "h=1 MH-MoE vs plain MoE")
    for name in ("load_balance", "z_loss"):
        assert_close(got[name], inner[name], name)


def test_upcycle_copy():
    """Upcycled (copy) experts and a normalised router: every sub-token gets the
    dense FFN of width D/h, so out = merge(dense(sub-tokens)) . merge_proj^T."""
    s = load_spec(UPCYCLE)
    Dh, F = s["d_model"] // s["heads"], s["expert_hidden"]
    rs = np.random.default_rng(13)
    dense = {"w1": (rs.standard_normal((F, Dh)) / np.sqrt(Dh)).astype(np.float32),
             "w2": (rs.standard_normal((Dh, F)) / np.sqrt(F)).astype(np.float32)}
    W = moe_mlir.upcycle(dense, spec=s, gate="normal", seed=3, gate_std=0.5)
    W["head_proj"] = (rs.standard_normal((24, 24)) / np.sqrt(24)).astype(np.float32)
    W["merge_proj"] = (rs.standard_normal((24, 24)) / np.sqrt(24)).astype(np.float32)
    T = 17
    x = make_x(T, 24, 14)
    got = check_forward(s, x, W)
    sub = (x.astype(np.float64) @ W["head_proj"].T.astype(np.float64)).reshape(T * 3, Dh)
    y = R.gelu(sub @ dense["w1"].T.astype(np.float64)) @ dense["w2"].T.astype(np.float64)
    want = y.reshape(T, 24) @ W["merge_proj"].T.astype(np.float64)
    assert_close(got["out"], want, "upcycled MH-MoE vs dense")


@pytest.mark.parametrize("T", [3, 33])
def test_nan_token(T):
    s = load_spec(CASES["aux_all"])
    W = make_weights(s, 15)
    x = make_x(T, s["d_model"], 16)
    x[1, 5] = np.nan                # head_proj spreads it over all sub-tokens of token 1
    got = check_forward(s, x, W, equal_nan=True)
    assert np.isnan(got["out"][1]).all()
    keep = np.arange(T) != 1
    assert np.isfinite(got["out"][keep]).all()
    clean = compiled(s).forward(np.ascontiguousarray(x[keep]), **W)
    assert_close(got["out"][keep], clean["out"], "out of the other tokens")


@pytest.mark.parametrize("draw", range(len(RANDOM)))
def test_random_spec(draw):
    s = load_spec(RANDOM[draw])
    rs = np.random.default_rng(draw)
    for T in (int(rs.integers(1, 8)), int(rs.integers(8, 70))):
        W = make_weights(s, 600 + draw)
        x = make_x(T, s["d_model"], 610 + draw)
        check_forward(s, x, W, seed=draw + 1 if s["router"]["noise"] else None)
