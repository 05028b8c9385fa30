"""Gemma 4's separate RMSNorm of the experts' input (``expert_rms_norm``):
the spec's checks, the reference against a hand computation, and the
compiled layer (fast and reference pipelines) against the reference.

Tolerances: compile_helpers.RTOL/ATOL (f32 kernels, f64 reference); routing
ids exactly (the router does not read the experts' norm)."""

from __future__ import annotations


import numpy as np
import pytest

from moe_mlir import reference as R
from moe_mlir.spec import load_spec, weight_shapes

from compile_helpers import (compiled, compare, make_weights, make_x, mh_spec, moe_spec,
                             requires_compiler)

PIPELINES = ("fast", "reference")
TOKENS = (1, 7, 37)



def weights(spec, seed=0):
    """make_weights, with norm weights far from 1 so that a norm read by the
    wrong consumer shows."""
    W = make_weights(spec, seed)
    rs = np.random.default_rng(seed + 7)
    for name in ("router_norm", "expert_norm"):
        if name in W:
            W[name] = rs.uniform(0.2, 3.0, W[name].shape).astype(np.float32)
    return W


SPECS = {
    # Gemma 4: both norms, tanh GeGLU experts, per-expert scale, normalised.
    "gemma4": moe_spec("en_gemma4", experts=8, activation="geglu_tanh", expert_scale=True,
                       expert_rms_norm=True, expert_rms_norm_eps=1e-5,
                       router=dict(top_k=2, normalize=True, rms_norm=True)),
    # The experts' norm alone; the shared expert reads it too; bf16 weights.
    "shared_bf16": moe_spec("en_shared_bf16", weight_dtype="bf16", expert_rms_norm=True,
                            router=dict(top_k=2), shared_experts=dict(hidden=8, gate=True)),
    # With capacity and the weight on the input (the normalised input is scaled).
    "capacity_input": moe_spec("en_capacity", expert_rms_norm=True,
                               router=dict(top_k=2, apply_score="input"),
                               capacity=dict(factor=1.0)),
    "mh_moe": mh_spec("en_mh", expert_rms_norm=True, router=dict(top_k=2, rms_norm=True)),
}


def test_spec_and_weights():
    s = load_spec(SPECS["gemma4"])
    assert s["expert_rms_norm"] is True and s["expert_rms_norm_eps"] == 1e-5
    names = list(weight_shapes(s))
    assert names[:3] == ["router_norm", "expert_norm", "gate"]
    assert weight_shapes(s)["expert_norm"] == ((s["d_model"],), "f32")
    mh = load_spec(SPECS["mh_moe"])
    assert weight_shapes(mh)["expert_norm"] == ((mh["d_model"] // mh["heads"],), "f32")
    # Absent unless set: other specs normalise (and hash) as before.
    plain = load_spec(moe_spec(router=dict(top_k=2)))
    assert "expert_rms_norm" not in plain and "expert_rms_norm_eps" not in plain
    assert load_spec(moe_spec(router=dict(top_k=2), expert_rms_norm=False)) == plain


@pytest.mark.parametrize("extra, message", [
    (dict(expert_rms_norm="yes"), "field 'expert_rms_norm' must be a boolean"),
    (dict(expert_rms_norm=True, expert_rms_norm_eps=0), "field 'expert_rms_norm_eps' must be > 0"),
    (dict(expert_rms_norm=True, expert_rms_norm_eps=float("inf")),
     "field 'expert_rms_norm_eps' must be finite"),
])
def test_spec_errors(extra, message):
    with pytest.raises(ValueError, match=message):
        load_spec(moe_spec(router=dict(top_k=2), **extra))


def test_reference_normalises_only_the_experts_input():
    spec = SPECS["capacity_input"]
    s = load_spec(spec)
    W = weights(spec)
    x = make_x(9, s["d_model"], seed=3)
    got = R.forward(spec, x, **W)
    # The router reads x itself: the same choices as without the norm.
    plain = dict(spec, name="en_plain")
    plain.pop("expert_rms_norm")
    Wp = {k: v for k, v in W.items() if k != "expert_norm"}
    np.testing.assert_array_equal(got["topk_ids"], R.forward(plain, x, **Wp)["topk_ids"])
    # The experts read the normalised tokens: the plain layer on them.
    x64 = x.astype(np.float64)
    xe = x64 / np.sqrt((x64 * x64).mean(1, keepdims=True) + 1e-6) * W["expert_norm"]
    y = np.zeros_like(x64)
    d = R.dispatch(got["topk_ids"], got["topk_weights"], 2, s["experts"],
                   R.spec_capacity(s["capacity"], 9, 2, s["experts"]))
    for t in range(9):
        for j in range(2):
            e = d.expert[t, j]
            if e < 0:
                continue
            y[t] += R.expert_ffn(xe[t:t + 1] * d.weight[t, j], W["w1"][e], W["w2"][e],
                                 W["w3"][e], s["activation"], s.get("swiglu"))[0]
    np.testing.assert_allclose(got["out"], y, rtol=1e-6, atol=1e-6)


@requires_compiler
@pytest.mark.parametrize("T", TOKENS)
@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("case", list(SPECS))
def test_compiled_matches_reference(case, pipeline, T):
    spec = SPECS[case]
    W = weights(spec)
    x = make_x(T, spec["d_model"], seed=T)
    compare(compiled(spec, pipeline).forward(x, **W), R.forward(spec, x, **W))


@requires_compiler
def test_bound_packed_weights_same_bits():
    spec = SPECS["gemma4"]
    layer = compiled(spec, "fast")
    W = weights(spec)
    x = make_x(37, spec["d_model"], seed=5)
    np.testing.assert_array_equal(layer.bind(**W)(x), layer(x, **W))
