"""Shared helpers of the end-to-end tests (compiled kernel vs. NumPy reference).

* :func:`compiled` compiles a spec once per test session (keyed by its hash);
  :func:`precompile` compiles a list of specs on a small thread pool (each
  compile is a ``moe-compile`` subprocess, so threads overlap well).
* :func:`make_weights` / :func:`make_x` draw seeded inputs whose router logits
  are well spread, so f32 (kernel) and f64 (reference) rank them the same.
* :func:`check_forward` runs both sides and compares every output: integer
  routing results exactly (ids first, so a tie-order mismatch is reported as
  such), floats to 1e-5.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterable, Optional

import numpy as np
import pytest

import moe_mlir
from moe_mlir import reference as R
from moe_mlir.compiler import find_compiler
from moe_mlir.spec import load_spec, spec_hash, weight_shapes

RTOL = 1e-5
ATOL = 1e-5


def _have_compiler() -> bool:
    try:
        find_compiler()
        return True
    except FileNotFoundError:
        return False


HAVE_COMPILER = _have_compiler()
requires_compiler = pytest.mark.skipif(
    not HAVE_COMPILER, reason="moe-compile not built (scripts/build.sh) and not on PATH")

# --------------------------------------------------------------------------- #
# Compiling
# --------------------------------------------------------------------------- #

_LAYERS: Dict[str, "moe_mlir.Layer"] = {}
_LOCK = threading.Lock()


def compiled(spec, pipeline: str = "fast") -> "moe_mlir.Layer":
    """The compiled layer of ``spec`` for ``pipeline``, compiled at most once
    per session."""
    key = (spec_hash(spec), pipeline)
    with _LOCK:
        layer = _LAYERS.get(key)
    if layer is None:
        layer = moe_mlir.compile(spec, pipeline=pipeline)
        with _LOCK:
            layer = _LAYERS.setdefault(key, layer)
    return layer


def precompile(specs: Iterable) -> None:
    """Compile ``specs`` concurrently (a module fixture calls this once)."""
    todo = {}
    for s in specs:
        todo.setdefault(spec_hash(s), s)
    todo = [s for h, s in todo.items() if h not in _LAYERS]
    if not todo or not HAVE_COMPILER:
        return
    # Under pytest -n N the cores are shared with N - 1 other workers.
    cores = (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    workers = max(1, min(len(todo), cores, 8))
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(compiled, todo))


# --------------------------------------------------------------------------- #
# Specs
# --------------------------------------------------------------------------- #

def moe_spec(name="moe_t", d_model=16, experts=6, expert_hidden=8, activation="swiglu",
             router=None, **kw) -> dict:
    """A small moe spec; ``router`` entries override ``top_k: 2``."""
    r = {"top_k": 2}
    r.update(router or {})
    s = {"name": name, "kind": "moe", "d_model": d_model, "experts": experts,
         "expert_hidden": expert_hidden, "activation": activation, "router": r}
    s.update(kw)
    return s


def mh_spec(name="mh_t", d_model=16, heads=2, experts=6, expert_hidden=8,
            activation="gelu", router=None, **kw) -> dict:
    s = moe_spec(name, d_model, experts, expert_hidden, activation, router, **kw)
    s["kind"] = "mh_moe"
    s["heads"] = heads
    return s


def pk_spec(kind="pkm", name=None, d_model=16, n=4, heads=2, top_k=3, key_dim=8, **kw) -> dict:
    s = {"name": name or f"{kind}_t", "kind": kind, "d_model": d_model, "experts": n * n,
         "heads": heads, "top_k": top_k, "key_dim": key_dim}
    s.update(kw)
    return s


# --------------------------------------------------------------------------- #
# Inputs
# --------------------------------------------------------------------------- #

def make_weights(spec, seed: int = 0, gate_scale: float = 2.0) -> Dict[str, np.ndarray]:
    """Seeded float32 weights for every weight of ``spec``.

    Matrices are N(0, 1/fan_in) so activations stay O(1); the router gate is
    ``gate_scale`` times wider so the logits of a token are well separated.
    ``bn_var`` is positive; BatchNorm and LayerNorm scales are near 1.  Values are not pre-rounded: the bf16/f16 cases
    check that both sides round the same way.
    """
    s = load_spec(spec)
    rs = np.random.default_rng(seed)
    W = {}
    for name, (shape, dtype) in weight_shapes(s).items():
        if dtype == "i32":  # tid2eid (hash routing): random expert ids
            W[name] = rs.integers(0, s["experts"], shape).astype(np.int32)
            continue
        fan_in = shape[-1]
        a = rs.standard_normal(shape) / np.sqrt(fan_in)
        if name in ("gate", "shared_gate"):
            a = a * gate_scale
        elif name == "gate_bias":
            a = rs.standard_normal(shape) * 0.3
        elif name == "bn_mean":
            a = rs.standard_normal(shape) * 0.2
        elif name == "bn_var":
            a = rs.uniform(0.25, 2.0, shape)
        elif name in ("bn_weight", "ln_weight"):
            a = rs.uniform(0.5, 1.5, shape)
        elif name in ("bn_bias", "ln_bias"):
            a = rs.standard_normal(shape) * 0.2
        elif name in ("keys1", "keys2"):
            a = a * 2.0
        W[name] = a.astype(np.float32)
    return W


def make_x(T: int, D: int, seed: int = 1, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((T, D)) * scale).astype(np.float32)


def dominated_gate(spec, expert: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """Weights whose gate makes ``expert`` win every token whose x[:, 0] is 4
    (the caller sets it): gate[:, 0] is +3 for ``expert`` and -3 for all
    others, a logit margin of 24 over the rest."""
    s = load_spec(spec)
    W = make_weights(s, seed)
    g = W["gate"]
    g[:, 0] = -3.0
    g[expert, 0] = 3.0
    return W


# --------------------------------------------------------------------------- #
# Comparing
# --------------------------------------------------------------------------- #

def assert_close(got, ref, what: str, rtol: float = RTOL, atol: float = ATOL,
                 equal_nan: bool = False) -> None:
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64),
                               np.asarray(ref, dtype=np.float64),
                               rtol=rtol, atol=atol, equal_nan=equal_nan,
                               err_msg=f"{what} differs from the reference")


def assert_same_bits(a, b, what: str) -> None:
    """``a`` and ``b`` hold the same bits (shape, dtype, every byte)."""
    a, b = np.atleast_1d(np.asarray(a)), np.atleast_1d(np.asarray(b))
    assert a.shape == b.shape and a.dtype == b.dtype, what
    assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), \
        f"{what}: {np.sum(a != b)} elements differ in their bits"


def assert_same_routing(got: dict, ref: dict) -> None:
    """Integer routing results, exactly; ids first."""
    ids, rids = np.asarray(got["topk_ids"]), np.asarray(ref["topk_ids"])
    assert ids.dtype == np.int32
    assert ids.shape == rids.shape
    bad = np.argwhere(ids != rids)
    if bad.size:
        row = tuple(bad[0][:-1])
        raise AssertionError(
            f"topk_ids differ at {len(bad)} positions; first at {tuple(bad[0])}: "
            f"kernel row {ids[row].tolist()} vs reference {rids[row].tolist()} "
            f"(kernel weights {np.asarray(got['topk_weights'])[row].tolist()}, "
            f"reference weights {np.asarray(ref['topk_weights'])[row].tolist()})")
    for key in ("expert_counts", "dropped"):
        if key in ref:
            g, r = np.asarray(got[key]), np.asarray(ref[key])
            assert np.array_equal(g, r), f"{key}: kernel {g.tolist()} vs reference {r.tolist()}"


def compare(got: dict, ref: dict, equal_nan: bool = False, out_rtol: float = RTOL,
            out_atol: float = ATOL) -> None:
    assert set(got) == set(ref), f"result keys {sorted(got)} vs reference {sorted(ref)}"
    assert_same_routing(got, ref)
    assert_close(got["topk_weights"], ref["topk_weights"], "topk_weights", equal_nan=equal_nan)
    assert got["out"].dtype == np.float32 and got["out"].shape == ref["out"].shape
    assert_close(got["out"], ref["out"], "out", rtol=out_rtol, atol=out_atol,
                 equal_nan=equal_nan)
    for name in ("load_balance", "importance", "z_loss"):
        if name in ref:
            assert isinstance(got[name], float), f"{name} should be a Python float"
            assert_close(got[name], ref[name], name, equal_nan=equal_nan)


def check_forward(spec, x, W, seed: Optional[int] = None, equal_nan: bool = False,
                  **tol) -> dict:
    """Run the compiled layer and the reference on the same inputs, compare
    every output, and return the kernel's results."""
    layer = compiled(spec)
    kw = {} if seed is None else {"seed": seed}
    got = layer.forward(x, **kw, **W)
    with np.errstate(all="ignore"):
        ref = R.forward(spec, x, **kw, **W)
    compare(got, ref, equal_nan=equal_nan, **tol)
    return got
