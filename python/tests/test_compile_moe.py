"""End-to-end tests of compiled moe layers against the NumPy reference.

Every router option, capacity mode, aux loss, activation and weight dtype of
docs/semantics.md, plus the edge cases: one token, token counts that are no
multiple of any tile, expert counts that are no power of two, all tokens on
one expert, unused experts, exact ties, NaN tokens, noise seeds, upcycling and
seeded random spec draws.
"""

import numpy as np
import pytest

import moe_mlir
from moe_mlir import reference as R
from moe_mlir.spec import load_spec

from compile_helpers import (assert_close, check_forward, compiled, dominated_gate,
                             make_weights, make_x, moe_spec, precompile, requires_compiler)

pytestmark = requires_compiler

TOKENS = [1, 2, 5, 17, 33, 65]

# --------------------------------------------------------------------------- #
# Specs (named so that ids in test reports say what is covered)
# --------------------------------------------------------------------------- #

ROUTERS = {
    "softmax": moe_spec("r_softmax"),
    "sigmoid": moe_spec("r_sigmoid", router={"score": "sigmoid"}),
    "topk_then_softmax": moe_spec("r_tts", router={"order": "topk_then_score"}),
    "topk_then_sigmoid": moe_spec("r_tts_sig", router={"order": "topk_then_score",
                                                        "score": "sigmoid"}),
    "softmax_normalize": moe_spec("r_norm", router={"normalize": True}),
    "sigmoid_normalize_scaling": moe_spec("r_sig_norm_sc", router={
        "score": "sigmoid", "normalize": True, "scaling": 2.5}),
    "topk_then_softmax_normalize_scaling": moe_spec("r_tts_norm_sc", router={
        "order": "topk_then_score", "normalize": True, "scaling": 0.7}),
    "topk_then_sigmoid_normalize": moe_spec("r_tts_sig_norm", router={
        "order": "topk_then_score", "score": "sigmoid", "normalize": True}),
    "softmax_scaling": moe_spec("r_scale", router={"scaling": 3.0}),
    "selection_bias_sigmoid": moe_spec("r_bias_sig", router={
        "score": "sigmoid", "selection_bias": True, "normalize": True}),
    "selection_bias_softmax": moe_spec("r_bias_soft", router={"selection_bias": True}),
    "selection_bias_topk_then_score": moe_spec("r_bias_tts", router={
        "order": "topk_then_score", "selection_bias": True}),
    "groups_max": moe_spec("r_grp_max", experts=8, router={
        "top_k": 3, "groups": 4, "topk_groups": 2}),
    "groups_top2_sum": moe_spec("r_grp_top2", experts=12, router={
        "top_k": 4, "groups": 4, "topk_groups": 2, "group_score": "top2_sum"}),
    "groups_deepseek": moe_spec("r_grp_ds", experts=16, router={
        "top_k": 4, "score": "sigmoid", "selection_bias": True, "groups": 8,
        "topk_groups": 3, "group_score": "top2_sum", "normalize": True, "scaling": 2.5}),
    "groups_topk_then_score": moe_spec("r_grp_tts", experts=6, router={
        "top_k": 2, "order": "topk_then_score", "groups": 3, "topk_groups": 1,
        "group_score": "top2_sum"}),
    "groups_all_kept": moe_spec("r_grp_all", experts=6, router={
        "top_k": 3, "groups": 3, "topk_groups": 3}),
    "dense_k_eq_e": moe_spec("r_dense", experts=5, router={"top_k": 5}),
    "dense_sigmoid_tts": moe_spec("r_dense_sig", experts=3, router={
        "top_k": 3, "score": "sigmoid", "order": "topk_then_score"}),
    "top1": moe_spec("r_top1", experts=3, router={"top_k": 1}),
    "top1_topk_then_score": moe_spec("r_top1_tts", experts=5, router={
        "top_k": 1, "order": "topk_then_score"}),
}

SHARED = {
    "shared": moe_spec("sh_plain", shared_experts={"hidden": 12}),
    "shared_gated": moe_spec("sh_gated", shared_experts={"hidden": 12, "gate": True}),
    "shared_gelu_gated": moe_spec("sh_gelu", activation="gelu",
                                  shared_experts={"hidden": 5, "gate": True}),
    "shared_zero_hidden": moe_spec("sh_zero", shared_experts={"hidden": 0}),
}

CAPACITY = {
    "drop_token_order": moe_spec("c_drop", capacity={"factor": 1.0}),
    "drop_batch_prioritized": moe_spec("c_drop_bp", capacity={
        "factor": 1.0, "priority": "batch_prioritized"}),
    "drop_small_factor": moe_spec("c_drop_small", capacity={"factor": 0.4}),
    "next_choice_token_order": moe_spec("c_next", capacity={
        "factor": 1.0, "overflow": "next_choice"}),
    "next_choice_batch_prioritized": moe_spec("c_next_bp", router={"top_k": 3}, capacity={
        "factor": 0.8, "overflow": "next_choice", "priority": "batch_prioritized"}),
    "next_choice_top1": moe_spec("c_next_top1", experts=5, router={"top_k": 1}, capacity={
        "factor": 1.1, "overflow": "next_choice"}),
    "next_choice_few_fallbacks": moe_spec("c_next_grp", experts=8, router={
        "top_k": 3, "groups": 4, "topk_groups": 2}, capacity={
        "factor": 1.0, "overflow": "next_choice"}),
    "next_choice_tts_norm": moe_spec("c_next_tts", router={
        "order": "topk_then_score", "normalize": True, "scaling": 1.5}, capacity={
        "factor": 0.9, "overflow": "next_choice"}),
    "next_choice_sigmoid_bias": moe_spec("c_next_bias", router={
        "score": "sigmoid", "selection_bias": True}, capacity={
        "factor": 0.75, "overflow": "next_choice", "priority": "batch_prioritized"}),
    "large_factor": moe_spec("c_large", capacity={"factor": 4.0}),
    "switch": moe_spec("c_switch", experts=5, activation="relu", router={"top_k": 1},
                       capacity={"factor": 1.25, "priority": "batch_prioritized"},
                       aux_losses=["load_balance"]),
}

AUX = {
    "load_balance": moe_spec("a_lb", aux_losses=["load_balance"]),
    "load_balance_sigmoid": moe_spec("a_lb_sig", router={"score": "sigmoid"},
                                     aux_losses=["load_balance"]),
    "importance": moe_spec("a_imp", aux_losses=["importance"]),
    "importance_scaled": moe_spec("a_imp_sc", router={"normalize": True, "scaling": 2.0},
                                  aux_losses=["importance"]),
    "z_loss": moe_spec("a_z", aux_losses=["z_loss"]),
    "lb_z": moe_spec("a_lb_z", aux_losses=["z_loss", "load_balance"]),
    "imp_z_tts": moe_spec("a_imp_z", router={"order": "topk_then_score"},
                          aux_losses=["importance", "z_loss"]),
    "all_capacity": moe_spec("a_all_cap", router={"score": "sigmoid", "normalize": True},
                             capacity={"factor": 0.8, "overflow": "next_choice"},
                             aux_losses=["load_balance", "importance", "z_loss"]),
    "all_groups": moe_spec("a_all_grp", experts=8, router={
        "top_k": 2, "groups": 4, "topk_groups": 2, "selection_bias": True},
        aux_losses=["importance", "load_balance", "z_loss"]),
}

ACTIVATIONS = {a: moe_spec(f"act_{a}", activation=a) for a in
               ("swiglu", "geglu", "gelu", "relu", "silu", "gelu_tanh", "geglu_tanh", "relu2")}

DTYPES = {
    f"{dt}_{act}": moe_spec(f"dt_{dt}_{act}", weight_dtype=dt, activation=act,
                            router={"score": "sigmoid", "selection_bias": act == "swiglu"},
                            shared_experts={"hidden": 6, "gate": True})
    for dt in ("f32", "bf16", "f16") for act in ("swiglu", "relu")
}

NOISY = moe_spec("noisy", experts=6, router={"noise": True})
NOISY_FULL = moe_spec("noisy_full", experts=8, router={
    "noise": True, "top_k": 2, "groups": 2, "topk_groups": 1, "order": "topk_then_score",
    "normalize": True}, capacity={"factor": 1.0, "overflow": "next_choice"},
    aux_losses=["load_balance", "importance", "z_loss"])
NOISY_SIGMOID_BIAS = moe_spec("noisy_sig", router={
    "noise": True, "score": "sigmoid", "selection_bias": True},
    capacity={"factor": 1.0, "priority": "batch_prioritized"})

EXPERT_COUNTS = {E: moe_spec(f"e{E}", experts=E, router={"top_k": min(2, E)})
                 for E in (1, 3, 5, 6, 12, 16)}

TIE_SPEC = moe_spec("ties", experts=6, router={"top_k": 3})
TIE_SPEC_TTS = moe_spec("ties_tts", experts=6, router={"top_k": 3, "order": "topk_then_score",
                                                      "normalize": True})
TIE_SPEC_CAP = moe_spec("ties_cap", experts=6, router={"top_k": 2},
                        capacity={"factor": 1.0, "overflow": "next_choice"},
                        aux_losses=["load_balance", "importance"])
TIE_SPEC_GRP = moe_spec("ties_grp", experts=6, router={"top_k": 2, "groups": 3,
                                                      "topk_groups": 2,
                                                      "group_score": "top2_sum"})

NAN_SPECS = {
    "dropless": moe_spec("nan_plain", router={"top_k": 2},
                         aux_losses=["load_balance", "importance", "z_loss"]),
    "sigmoid": moe_spec("nan_sig", router={"score": "sigmoid", "normalize": True}),
    "topk_then_score": moe_spec("nan_tts", router={"order": "topk_then_score"}),
    "capacity_bp": moe_spec("nan_cap", capacity={"factor": 1.0,
                                                "priority": "batch_prioritized"}),
    "next_choice": moe_spec("nan_next", capacity={"factor": 1.0, "overflow": "next_choice"}),
    "groups": moe_spec("nan_grp", experts=8, router={"groups": 4, "topk_groups": 2}),
    "shared": moe_spec("nan_sh", activation="relu", shared_experts={"hidden": 4, "gate": True}),
}

NAN_GROUPS = moe_spec("nan_groups", experts=12, router={
    "top_k": 3, "score": "sigmoid", "selection_bias": True, "groups": 4, "topk_groups": 2,
    "group_score": "top2_sum"}, capacity={"factor": 1.0, "overflow": "next_choice"})
HUGE_CAP = moe_spec("huge_cap", experts=5, router={"top_k": 2, "score": "sigmoid"})
NEG_INF = moe_spec("neg_inf", experts=4, router={"top_k": 2, "order": "topk_then_score"},
                   aux_losses=["z_loss"])

DOMINATED = {
    "dropless": moe_spec("dom_plain", experts=5, router={"top_k": 2}),
    "top1": moe_spec("dom_top1", experts=5, router={"top_k": 1}),
    "drop": moe_spec("dom_drop", experts=5, router={"top_k": 2}, capacity={"factor": 1.0}),
    # top-1 topk_then_score: every first-choice weight is exactly 1 (in f32 and
    # f64), so batch_prioritized sees exact ties and keeps token order.  (With
    # score_then_topk the weights would be 1 - 4e-11: 1.0 in f32 but not in
    # f64, a near-tie the contract leaves open.)
    "drop_bp": moe_spec("dom_drop_bp", experts=5, router={
        "top_k": 1, "order": "topk_then_score"}, capacity={
        "factor": 1.5, "priority": "batch_prioritized"}),
    "next_choice": moe_spec("dom_next", experts=5, router={"top_k": 2}, capacity={
        "factor": 1.0, "overflow": "next_choice"}),
}

UPCYCLE_COPY = {
    act: moe_spec(f"up_copy_{act}", d_model=12, experts=4, expert_hidden=10, activation=act,
                  router={"top_k": 2, "normalize": True})
    for act in ("swiglu", "gelu")
}
UPCYCLE_COPY_TTS = moe_spec("up_copy_tts", d_model=12, experts=4, expert_hidden=10,
                            activation="geglu", router={"top_k": 3, "order": "topk_then_score"})
UPCYCLE_SPLIT = moe_spec("up_split", d_model=12, experts=4, expert_hidden=3,
                         activation="swiglu",
                         router={"top_k": 4, "score": "sigmoid", "scaling": 2.0})


def random_moe_spec(draw: int) -> dict:
    """A seeded random draw over the moe spec space (always a valid spec)."""
    rs = np.random.default_rng(1000 + draw)
    E = int(rs.choice([3, 4, 5, 6, 8, 9, 12, 16]))
    divisors = [g for g in range(1, E + 1) if E % g == 0]
    G = int(rs.choice(divisors)) if rs.random() < 0.4 else 1
    g = int(rs.integers(1, G + 1))
    group_score = "top2_sum" if (G > 1 and E // G >= 2 and rs.random() < 0.5) else "max"
    k = int(rs.integers(1, min(4, g * (E // G)) + 1))
    router = {"top_k": k, "score": str(rs.choice(["softmax", "sigmoid"])),
              "order": str(rs.choice(["score_then_topk", "topk_then_score"])),
              "normalize": bool(rs.random() < 0.5),
              "scaling": float(rs.choice([1.0, 0.5, 2.5])),
              "selection_bias": bool(rs.random() < 0.3),
              "groups": G, "topk_groups": g, "group_score": group_score,
              "noise": bool(rs.random() < 0.3)}
    act = str(rs.choice(["swiglu", "geglu", "gelu", "relu", "silu"]))
    spec = moe_spec(f"rand{draw}", d_model=int(rs.integers(8, 49)), experts=E,
                    expert_hidden=int(rs.integers(4, 33)), activation=act, router=router,
                    weight_dtype=str(rs.choice(["f32", "bf16", "f16"])))
    if rs.random() < 0.5:
        spec["capacity"] = {"factor": float(rs.choice([0.5, 1.0, 1.25, 2.0])),
                            "overflow": str(rs.choice(["drop", "next_choice"])),
                            "priority": str(rs.choice(["token_order", "batch_prioritized"]))}
    if rs.random() < 0.4:
        spec["shared_experts"] = {"hidden": int(rs.integers(1, 17)),
                                  "gate": bool(rs.random() < 0.5)}
    losses = [a for a in ("load_balance", "importance", "z_loss") if rs.random() < 0.4]
    spec["aux_losses"] = losses
    return spec


RANDOM = [random_moe_spec(i) for i in range(8)]

ALL_SPECS = (list(ROUTERS.values()) + list(SHARED.values()) + list(CAPACITY.values())
             + list(AUX.values()) + list(ACTIVATIONS.values()) + list(DTYPES.values())
             + [NOISY, NOISY_FULL, NOISY_SIGMOID_BIAS] + list(EXPERT_COUNTS.values())
             + [TIE_SPEC, TIE_SPEC_TTS, TIE_SPEC_CAP, TIE_SPEC_GRP] + list(NAN_SPECS.values())
             + [NAN_GROUPS, NEG_INF]
             + list(DOMINATED.values()) + list(UPCYCLE_COPY.values())
             + [UPCYCLE_COPY_TTS, UPCYCLE_SPLIT] + RANDOM)


@pytest.fixture(scope="module", autouse=True)
def _compile_all():
    precompile(ALL_SPECS)


def run_case(spec, T, seed, **kw):
    s = load_spec(spec)
    W = make_weights(s, seed)
    x = make_x(T, s["d_model"], seed + 7)
    return check_forward(s, x, W, **kw)


# --------------------------------------------------------------------------- #
# Router options
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("T", TOKENS)
@pytest.mark.parametrize("case", list(ROUTERS))
def test_router(case, T):
    got = run_case(ROUTERS[case], T, seed=list(ROUTERS).index(case))
    assert got["dropped"] == 0
    assert int(got["expert_counts"].sum()) == T * ROUTERS[case]["router"]["top_k"]


def test_topk_then_score_weights_sum_to_one():
    got = run_case(ROUTERS["topk_then_softmax"], 17, seed=3)
    np.testing.assert_allclose(got["topk_weights"].sum(axis=1), 1.0, rtol=1e-6)


def test_groups_only_kept_groups():
    spec = load_spec(ROUTERS["groups_max"])
    got = run_case(spec, 33, seed=5)
    groups = got["topk_ids"] // (spec["experts"] // spec["router"]["groups"])
    assert all(len(set(row)) <= spec["router"]["topk_groups"] for row in groups.tolist())


# --------------------------------------------------------------------------- #
# Shared experts, activations, dtypes
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("T", [1, 17, 65])
@pytest.mark.parametrize("case", list(SHARED))
def test_shared_experts(case, T):
    run_case(SHARED[case], T, seed=11)


@pytest.mark.parametrize("T", [1, 5, 33])
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_activation(act, T):
    run_case(ACTIVATIONS[act], T, seed=21)


@pytest.mark.parametrize("T", [2, 17, 65])
@pytest.mark.parametrize("case", list(DTYPES))
def test_weight_dtype(case, T):
    # bf16/f16 weights are exact after rounding, so the usual tolerance holds.
    run_case(DTYPES[case], T, seed=31)


@pytest.mark.parametrize("dt", ["bf16", "f16"])
def test_weight_dtype_rounds_like_reference(dt):
    """The layer rounds f32 weights to the dtype: passing pre-rounded weights,
    or f32 values half-way between two representable values (ties to even),
    gives the same output as the reference."""
    spec = load_spec(DTYPES[f"{dt}_swiglu"])
    W = make_weights(spec, 4)
    x = make_x(9, spec["d_model"], 5)
    for name in W:
        if name != "gate_bias":
            r = moe_mlir.round_to_dtype(W[name], dt)
            if dt == "bf16":
                # Half-way between r and its bf16 successor: rounds to even.
                bits = r.view(np.uint32).copy()
                bits[::3] += np.uint32(0x8000)
                W[name] = bits.view(np.float32)
            else:
                W[name] = r
    got = check_forward(spec, x, W)
    rounded = {n: (moe_mlir.round_to_dtype(a, dt) if n != "gate_bias" else a)
               for n, a in W.items()}
    again = compiled(spec).forward(x, **rounded)
    np.testing.assert_array_equal(got["out"], again["out"])


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("dt", ["bf16", "f16"])
def test_weight_dtype_subnormals_and_overflow(dt):
    """f16 subnormals survive (kernel widening must keep them); values past the
    dtype's largest finite number become inf on both sides (and NaN/inf reach
    out only through the experts that use them)."""
    spec = load_spec(DTYPES[f"{dt}_relu"])
    W = make_weights(spec, 6)
    for name in W:
        if name != "gate_bias":
            W[name][..., ::2] *= 1e-4                  # f16: below 6.1e-5 is subnormal
    W["w2"][2, 0, 0] = 7e4 if dt == "f16" else 3.4e38  # rounds to +inf
    x = make_x(17, spec["d_model"], 7)
    got = check_forward(spec, x, W, equal_nan=True)
    hit = (got["topk_ids"] == 2).any(axis=1)
    assert hit.any() and (~hit).any()
    assert np.isfinite(got["out"][~hit]).all()


# --------------------------------------------------------------------------- #
# Capacity
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("T", TOKENS)
@pytest.mark.parametrize("case", list(CAPACITY))
def test_capacity(case, T):
    spec = load_spec(CAPACITY[case])
    got = run_case(spec, T, seed=41)
    k, E = spec["router"]["top_k"], spec["experts"]
    assert int(got["expert_counts"].sum()) + got["dropped"] == T * k
    cap = R.capacity(spec["capacity"]["factor"], T, k, E)
    assert got["expert_counts"].max() <= cap


def test_capacity_overflow_is_counted():
    """A small factor with many tokens must drop: dropped equals the reference's
    and is positive; next_choice drops fewer than drop."""
    T = 65
    drop = run_case(CAPACITY["drop_small_factor"], T, seed=42)
    assert drop["dropped"] > 0
    d1 = run_case(CAPACITY["drop_token_order"], T, seed=43)
    n1 = run_case(CAPACITY["next_choice_token_order"], T, seed=43)
    assert d1["dropped"] > 0
    assert n1["dropped"] < d1["dropped"]
    np.testing.assert_array_equal(d1["topk_ids"], n1["topk_ids"])


def test_capacity_per_expert_rounding():
    """C_e = ceil(factor*T*k/E) in float64: 1.1*100*1/2 = 55.000000000000014 -> 56."""
    spec = moe_spec("cap_round", d_model=8, experts=2, expert_hidden=4,
                    router={"top_k": 1}, capacity={"factor": 1.1})
    W = make_weights(spec, 0)
    W["gate"][:] = 0.0                        # every token ties: all go to expert 0
    x = make_x(100, 8, 1)
    got = check_forward(spec, x, W)
    assert got["expert_counts"].tolist() == [56, 0]
    assert got["dropped"] == 44


@pytest.mark.parametrize("factor", [4.0, 1e300, 1.7e308])
def test_huge_capacity_factor_is_dropless(factor):
    """C_e >= T*k is the dropless result, also when factor*T*k/E overflows to
    inf (docs/semantics.md section 6: C_e is clamped to T*k)."""
    spec = load_spec(HUGE_CAP)
    s = dict(spec, capacity={"factor": factor, "overflow": "drop",
                             "priority": "batch_prioritized"}, name="huge_cap")
    W = make_weights(s, 44)
    x = make_x(65, s["d_model"], 45)
    got = check_forward(s, x, W)
    assert got["dropped"] == 0
    plain = compiled(dict(s, capacity=None, name="huge_cap_plain")).forward(x, **W)
    for key in got:
        assert_close(got[key], plain[key], key)


# --------------------------------------------------------------------------- #
# Aux losses
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("T", [1, 5, 33, 65])
@pytest.mark.parametrize("case", list(AUX))
def test_aux_losses(case, T):
    spec = load_spec(AUX[case])
    got = run_case(spec, T, seed=51)
    layer = compiled(spec)
    W = make_weights(spec, 51)
    x = make_x(T, spec["d_model"], 58)
    losses = layer.aux_losses(x, **W)
    assert list(losses) == spec["aux_losses"]
    for name, value in losses.items():
        assert value == got[name]


def test_load_balance_uniform_is_one():
    """All tokens tie (zero gate), k = E: every f_i = 1/E, so the loss is 1."""
    spec = load_spec(moe_spec("lb_uniform", experts=4, router={"top_k": 4},
                              aux_losses=["load_balance", "importance"]))
    W = make_weights(spec, 0)
    W["gate"][:] = 0.0
    got = check_forward(spec, make_x(7, spec["d_model"]), W)
    assert abs(got["load_balance"] - 1.0) < 1e-6
    assert abs(got["importance"]) < 1e-6


# --------------------------------------------------------------------------- #
# Noise
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("spec", [NOISY, NOISY_FULL, NOISY_SIGMOID_BIAS],
                         ids=["noisy", "noisy_full", "noisy_sigmoid_bias"])
@pytest.mark.parametrize("seed", [0, 12345, 2 ** 64 - 1, 0xDEADBEEF_CAFEBABE])
def test_noise_matches_reference(spec, seed):
    s = load_spec(spec)
    W = make_weights(s, 61)
    W["w_noise"] *= 3.0                      # noise comparable to the logit gaps
    x = make_x(33, s["d_model"], 62)
    check_forward(s, x, W, seed=seed)


def test_noise_seed_determinism():
    s = load_spec(NOISY_FULL)
    layer = compiled(s)
    W = make_weights(s, 63)
    W["w_noise"] *= 3.0
    x = make_x(33, s["d_model"], 64)
    a = layer.forward(x, seed=7, **W)
    b = layer.forward(x, seed=7, **W)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)   # bit-identical
    c = layer.forward(x, seed=8, **W)
    assert (a["topk_ids"] != c["topk_ids"]).any(), "another seed should change some routing"
    # A negative seed is taken mod 2^64, like the reference.
    d = layer.forward(x, seed=-1, **W)
    e = layer.forward(x, seed=2 ** 64 - 1, **W)
    np.testing.assert_array_equal(d["out"], e["out"])


def test_vanishing_noise_scale_gives_clean_routing():
    """softplus(x.w_noise) = 0 exactly: the noise term vanishes and routing equals
    the clean router's."""
    s = load_spec(NOISY)
    W = make_weights(s, 65)
    W["w_noise"][:] = 0.0
    W["w_noise"][:, 0] = -1e4          # softplus(-huge) = 0 exactly in f32 and f64
    x = make_x(17, s["d_model"], 66)
    x[:, 0] = np.abs(x[:, 0]) + 0.5
    got = check_forward(s, x, W, seed=99)
    clean = R.route(moe_spec("noisy_clean", experts=6), x, gate=W["gate"])
    np.testing.assert_array_equal(got["topk_ids"], clean[0])


# --------------------------------------------------------------------------- #
# Token and expert counts
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("T", TOKENS)
@pytest.mark.parametrize("E", list(EXPERT_COUNTS))
def test_expert_counts_not_power_of_two(E, T):
    run_case(EXPERT_COUNTS[E], T, seed=71 + E)


def test_unused_experts_have_zero_counts():
    spec = load_spec(moe_spec("unused", experts=12, router={"top_k": 2}))
    W = make_weights(spec, 72)
    W["gate"][:, 0] = np.where(np.arange(12) < 4, 2.0, -2.0)   # experts 0..3 favoured
    x = make_x(17, spec["d_model"], 73)
    x[:, 0] = 5.0
    got = check_forward(spec, x, W)
    assert (got["expert_counts"][4:] == 0).all()
    assert got["expert_counts"].sum() == 34


def test_unused_expert_weights_never_evaluated():
    """NaN/inf in the weights of an expert no token selects cannot reach out."""
    spec = load_spec(moe_spec("unused", experts=12, router={"top_k": 2}))
    W = make_weights(spec, 74)
    W["gate"][:, 0] = np.where(np.arange(12) < 4, 2.0, -2.0)
    x = make_x(17, spec["d_model"], 75)
    x[:, 0] = 5.0
    for name in ("w1", "w2", "w3"):
        W[name][7] = np.nan
        W[name][9] = np.inf
    got = check_forward(spec, x, W)
    assert np.isfinite(got["out"]).all()


# --------------------------------------------------------------------------- #
# One expert takes everything
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("T", [1, 17, 65])
@pytest.mark.parametrize("case", list(DOMINATED))
def test_one_expert_dominates(case, T):
    spec = load_spec(DOMINATED[case])
    W = dominated_gate(spec, expert=3, seed=81)
    x = make_x(T, spec["d_model"], 82)
    x[:, 0] = 4.0
    got = check_forward(spec, x, W)
    assert (got["topk_ids"][:, 0] == 3).all()
    k, E = spec["router"]["top_k"], spec["experts"]
    if spec["capacity"] is None:
        assert got["expert_counts"][3] == T and got["dropped"] == 0
    else:
        cap = R.capacity(spec["capacity"]["factor"], T, k, E)
        assert got["expert_counts"][3] == min(T, cap)
        if spec["capacity"]["overflow"] == "drop":
            assert got["dropped"] == T * k - got["expert_counts"].sum()
            assert got["dropped"] >= T - min(T, cap)


# --------------------------------------------------------------------------- #
# Exact ties
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("T", [1, 5, 33])
@pytest.mark.parametrize("spec", [TIE_SPEC, TIE_SPEC_TTS, TIE_SPEC_CAP, TIE_SPEC_GRP],
                         ids=["score_then_topk", "topk_then_score", "capacity", "groups"])
def test_zero_gate_ties_go_to_lower_index(spec, T):
    s = load_spec(spec)
    W = make_weights(s, 91)
    W["gate"][:] = 0.0
    got = check_forward(s, make_x(T, s["d_model"], 92), W)
    k = s["router"]["top_k"]
    if s["capacity"] is None:
        assert (got["topk_ids"] == np.arange(k)).all()


@pytest.mark.parametrize("T", [5, 33])
@pytest.mark.parametrize("spec", [TIE_SPEC, TIE_SPEC_TTS, TIE_SPEC_CAP],
                         ids=["score_then_topk", "topk_then_score", "capacity"])
def test_identical_gate_rows(spec, T):
    """Duplicate gate rows give bit-equal logits: the lower index ranks first."""
    s = load_spec(spec)
    W = make_weights(s, 93)
    W["gate"][4] = W["gate"][1]
    W["gate"][5] = W["gate"][1]
    W["gate"][2] = W["gate"][0]
    got = check_forward(s, make_x(T, s["d_model"], 94), W)
    ids = got["topk_ids"].tolist()
    for row in ids:
        for hi, lo in ((4, 1), (5, 1), (5, 4), (2, 0)):
            if hi in row:
                assert lo in row and row.index(lo) < row.index(hi), row


def test_signed_zero_ties():
    """+0.0 == -0.0: logits of exactly +-0 tie and go to the lower index."""
    s = load_spec(moe_spec("szero", d_model=8, experts=4, router={
        "top_k": 2, "order": "topk_then_score"}))
    W = make_weights(s, 95)
    W["gate"][:] = 0.0
    W["gate"][0, 0] = -1.0
    W["gate"][2, 0] = 1.0
    x = make_x(4, 8, 96)
    x[:, 0] = 0.0                                # logits: -0, 0, +0, 0
    x[1, 0] = -0.0
    got = check_forward(s, x, W)
    assert (got["topk_ids"] == [0, 1]).all()


# --------------------------------------------------------------------------- #
# NaN
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("T", [5, 33])
@pytest.mark.parametrize("case", list(NAN_SPECS))
def test_nan_token(case, T):
    s = load_spec(NAN_SPECS[case])
    W = make_weights(s, 101)
    x = make_x(T, s["d_model"], 102)
    bad = T // 2
    x[bad, 3] = np.nan
    got = check_forward(s, x, W, equal_nan=True)
    assert np.isnan(got["out"][bad]).all()
    if s["capacity"] is None:
        # Dropless routing is per token: the others equal a run without the NaN row.
        keep = np.arange(T) != bad
        clean = compiled(s).forward(np.ascontiguousarray(x[keep]), **W)
        assert_close(got["out"][keep], clean["out"], "out of the other tokens")
        np.testing.assert_array_equal(got["topk_ids"][keep], clean["topk_ids"])
        assert np.isfinite(got["out"][keep]).all()


def test_nan_logit_ranks_last():
    """A NaN in one gate row makes that expert's logit NaN for every token: it
    ranks below every number (topk_then_score keeps the other logits finite)."""
    s = load_spec(moe_spec("nan_gate", experts=5, router={
        "top_k": 4, "order": "topk_then_score", "score": "sigmoid"}))
    W = make_weights(s, 103)
    W["gate"][1, 2] = np.nan
    got = check_forward(s, make_x(9, s["d_model"], 104), W, equal_nan=True)
    assert (got["topk_ids"] != 1).all()
    assert np.isfinite(got["out"]).all()


def test_nan_keys_in_groups():
    """NaN selection keys (via gate_bias) under group-limited routing: a group
    whose keys are all NaN scores NaN and is never kept while finite groups
    remain; a single NaN in a group of 3 does not enter its top2_sum."""
    s = load_spec(NAN_GROUPS)
    W = make_weights(s, 107)
    W["gate_bias"][3:6] = np.nan                  # group 1: all NaN
    W["gate_bias"][7] = np.nan                    # group 2: one NaN
    got = check_forward(s, make_x(33, s["d_model"], 108), W, equal_nan=True)
    assert not np.isin(got["topk_ids"], [3, 4, 5, 7]).any()
    assert np.isfinite(got["out"]).all()


@pytest.mark.parametrize("n_inf", [3, 4])
def test_minus_inf_logits(n_inf):
    """-inf logits: topk_then_score softmax gives the -inf choice weight 0 while
    a finite logit is chosen (its expert still runs, times 0), and NaN weights
    (and out) when every chosen logit is -inf (exp(-inf - -inf))."""
    s = load_spec(NEG_INF)
    W = make_weights(s, 109)
    W["gate"][4 - n_inf:, 0] = -np.inf
    x = make_x(9, s["d_model"], 110)
    x[:, 0] = np.abs(x[:, 0]) + 0.1
    got = check_forward(s, x, W, equal_nan=True)
    if n_inf == 3:
        assert (got["topk_ids"] == [0, 1]).all()
        assert (got["topk_weights"] == [1.0, 0.0]).all()
        assert np.isfinite(got["out"]).all()
    else:
        assert np.isnan(got["out"]).all()


def test_inf_logit():
    """+inf logit: under softmax score_then_topk the whole row is NaN (all tie:
    lower index wins), under sigmoid it ranks first with weight 1."""
    for score in ("softmax", "sigmoid"):
        s = load_spec(moe_spec(f"inf_{score}", experts=5, router={"top_k": 2, "score": score}))
        W = make_weights(s, 105)
        x = make_x(6, s["d_model"], 106)
        W["gate"][3, 0] = np.inf
        x[:, 0] = np.abs(x[:, 0]) + 0.1
        check_forward(s, x, W, equal_nan=True)


# --------------------------------------------------------------------------- #
# Upcycling
# --------------------------------------------------------------------------- #

def dense_ffn(x, w1, w2, w3, act):
    x = x.astype(np.float64)
    h = R.activation(x @ w1.T.astype(np.float64), act)
    if w3 is not None:
        h = h * (x @ w3.T.astype(np.float64))
    return h @ w2.T.astype(np.float64)


def dense_weights(D, F, gated, seed):
    rs = np.random.default_rng(seed)
    d = {"w1": (rs.standard_normal((F, D)) / np.sqrt(D)).astype(np.float32),
         "w2": (rs.standard_normal((D, F)) / np.sqrt(F)).astype(np.float32)}
    if gated:
        d["w3"] = (rs.standard_normal((F, D)) / np.sqrt(D)).astype(np.float32)
    return d


@pytest.mark.parametrize("gate", ["zeros", "normal"])
@pytest.mark.parametrize("spec", list(UPCYCLE_COPY.values()) + [UPCYCLE_COPY_TTS],
                         ids=list(UPCYCLE_COPY) + ["geglu_topk_then_score"])
def test_upcycle_copy_equals_dense(spec, gate):
    s = load_spec(spec)
    gated = s["activation"] in ("swiglu", "geglu")
    dense = dense_weights(s["d_model"], s["expert_hidden"], gated, 111)
    W = moe_mlir.upcycle(dense, spec=s, gate=gate, seed=5, gate_std=0.5)
    x = make_x(17, s["d_model"], 112)
    got = check_forward(s, x, W)
    act = s["activation"]
    assert_close(got["out"], dense_ffn(x, dense["w1"], dense["w2"], dense.get("w3"), act),
                 "upcycled (copy) MoE vs the dense FFN")


def test_upcycle_split_sums_to_dense():
    s = load_spec(UPCYCLE_SPLIT)
    F = s["expert_hidden"] * s["experts"]
    dense = dense_weights(s["d_model"], F, True, 113)
    W = moe_mlir.upcycle(dense, mode="split", spec=s)
    x = make_x(33, s["d_model"], 114)
    got = check_forward(s, x, W)
    assert (got["topk_weights"] == 1.0).all()          # sigmoid(0) * 2
    assert_close(got["out"], dense_ffn(x, dense["w1"], dense["w2"], dense["w3"], "swiglu"),
                 "upcycled (split) MoE vs the dense FFN")


# --------------------------------------------------------------------------- #
# Seeded random draws
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("draw", range(len(RANDOM)))
def test_random_spec(draw):
    s = load_spec(RANDOM[draw])
    rs = np.random.default_rng(draw)
    for T in (int(rs.integers(1, 8)), int(rs.integers(8, 70))):
        W = make_weights(s, 120 + draw)
        x = make_x(T, s["d_model"], 130 + draw)
        check_forward(s, x, W, seed=draw * 7919 if s["router"]["noise"] else None)
