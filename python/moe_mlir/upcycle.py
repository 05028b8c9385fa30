"""Sparse upcycling: build the expert weights of an E-expert MoE from a dense FFN.

``dense`` is the dense FFN in PyTorch layout: ``w1 [F, D]``, ``w2 [D, F]`` and,
for gated activations (SwiGLU/GeGLU), ``w3 [F, D]``.

* ``mode="copy"`` (Komatsuzaki et al. 2023): every expert is a copy of the
  dense FFN (F' = F).  With any router whose k weights sum to 1
  (``normalize: true``, ``scaling: 1``) and no capacity drops, the MoE output
  equals the dense FFN output.
* ``mode="split"`` (fine-grained upcycling): the F hidden units are
  partitioned into E contiguous chunks of F/E; expert e gets hidden units
  [e*F/E, (e+1)*F/E) (rows of w1/w3, columns of w2).  The sum of all E experts'
  outputs equals the dense FFN output (the activation acts per hidden unit);
  e.g. k = E with every weight 1.

The router gate is initialised too (see :func:`upcycle`).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from .spec import GATED_ACTIVATIONS, load_spec

__all__ = ["upcycle", "init_gate"]


def init_gate(experts: int, d_model: int, init: str = "zeros", seed=None,
              std: float = 0.02) -> np.ndarray:
    """Router gate [E, D] float32.

    ``zeros``: all logits 0, so every expert scores the same and the ranking
    rule picks experts 0..k-1 (uniform weights 1/E under softmax).
    ``normal``: N(0, std^2) entries from ``numpy.random.default_rng(seed)``
    (PCG64; ``seed`` required), to break the symmetry for training.
    """
    if init == "zeros":
        return np.zeros((experts, d_model), dtype=np.float32)
    if init == "normal":
        if seed is None:
            raise ValueError("gate init 'normal' needs a seed")
        g = np.random.default_rng(seed).normal(0.0, std, size=(experts, d_model))
        return g.astype(np.float32)
    raise ValueError(f"unknown gate init {init!r} (expected 'zeros' or 'normal')")


def upcycle(dense: Dict[str, np.ndarray], experts: Optional[int] = None, mode: str = "copy",
            spec=None, *, gate: str = "zeros", seed=None, gate_std: float = 0.02
            ) -> Dict[str, np.ndarray]:
    """Upcycle a dense FFN into E experts.

    Returns ``{"w1": [E, F', D], "w3": [E, F', D] (if dense has w3),
    "w2": [E, D, F'], "gate": [E, D]}`` as float32 (F' = F for copy, F/E for
    split), plus ``gate_bias`` zeros [E] when ``spec`` has
    ``router.selection_bias``, ``logit_bias`` zeros [E] when it has
    ``router.logit_bias``, ``router_norm`` ones when it has ``router.rms_norm``,
    and the neutral expert biases (zeros), expert scales (ones) and output
    bias (zeros) when it has ``expert_bias``, ``expert_scale``,
    ``output_bias``.  ``experts`` defaults to ``spec["experts"]``.
    With a ``spec`` (moe or mh_moe) the shapes are checked against it
    (d_model, or d_model/heads for mh_moe; experts; expert_hidden = F';
    w3 present iff the activation is gated).  Raises ValueError on any
    mismatch, on an unknown mode, or (split) when E does not divide F.
    """
    s = load_spec(spec) if spec is not None else None
    if experts is None:
        if s is None:
            raise ValueError("upcycle: give experts or a spec")
        experts = s["experts"]
    if isinstance(experts, bool) or not isinstance(experts, (int, np.integer)) or experts < 1:
        raise ValueError(f"upcycle: experts must be a positive integer, got {experts!r}")
    E = int(experts)
    unknown = set(dense) - {"w1", "w2", "w3"}
    if unknown:
        raise ValueError(f"upcycle: unknown dense weights {sorted(unknown)} (expected w1, w2, w3)")
    if "w1" not in dense or "w2" not in dense:
        raise ValueError("upcycle: dense needs w1 [F, D] and w2 [D, F]")
    w1 = np.asarray(dense["w1"], dtype=np.float32)
    w2 = np.asarray(dense["w2"], dtype=np.float32)
    w3 = None if dense.get("w3") is None else np.asarray(dense["w3"], dtype=np.float32)
    if w1.ndim != 2:
        raise ValueError(f"upcycle: w1 must be [F, D], got shape {w1.shape}")
    F, D = w1.shape
    if w2.shape != (D, F):
        raise ValueError(f"upcycle: w2 must be [D, F] = {(D, F)}, got {w2.shape}")
    if w3 is not None and w3.shape != (F, D):
        raise ValueError(f"upcycle: w3 must be [F, D] = {(F, D)}, got {w3.shape}")

    if mode == "copy":
        Fp = F
        out = {"w1": np.repeat(w1[None], E, axis=0)}
        if w3 is not None:
            out["w3"] = np.repeat(w3[None], E, axis=0)
        out["w2"] = np.repeat(w2[None], E, axis=0)
    elif mode == "split":
        if F % E != 0:
            raise ValueError(f"upcycle: split needs experts ({E}) to divide the hidden "
                             f"width F ({F})")
        Fp = F // E
        out = {"w1": w1.reshape(E, Fp, D).copy()}               # rows e*Fp .. (e+1)*Fp-1
        if w3 is not None:
            out["w3"] = w3.reshape(E, Fp, D).copy()
        out["w2"] = np.ascontiguousarray(w2.reshape(D, E, Fp).transpose(1, 0, 2))
    else:
        raise ValueError(f"upcycle: unknown mode {mode!r} (expected 'copy' or 'split')")

    if s is not None:
        if s["kind"] not in ("moe", "mh_moe"):
            raise ValueError(f"upcycle: spec kind must be moe or mh_moe, got {s['kind']}")
        Dx = s["d_model"] // s["heads"] if s["kind"] == "mh_moe" else s["d_model"]
        if D != Dx:
            raise ValueError(f"upcycle: dense input width {D} != the spec's expert input "
                             f"width {Dx}")
        if E != s["experts"]:
            raise ValueError(f"upcycle: experts {E} != spec experts {s['experts']}")
        if Fp != s["expert_hidden"]:
            raise ValueError(f"upcycle: expert hidden width {Fp} != spec expert_hidden "
                             f"{s['expert_hidden']}")
        gated = s["activation"] in GATED_ACTIVATIONS
        if gated != (w3 is not None):
            raise ValueError(f"upcycle: activation {s['activation']} "
                             f"{'needs' if gated else 'takes no'} w3")

    if s is not None and s["router"]["rms_norm"]:
        out["router_norm"] = np.ones(D, dtype=np.float32)
    out["gate"] = init_gate(E, D, gate, seed=seed, std=gate_std)
    if s is not None and s["router"]["logit_bias"]:
        out["logit_bias"] = np.zeros(E, dtype=np.float32)
    if s is not None and s["router"]["selection_bias"]:
        out["gate_bias"] = np.zeros(E, dtype=np.float32)
    if s is not None:
        # The expert features the dense FFN has none of, at their neutral
        # values: the upcycled layer still computes the dense function.
        if s.get("expert_bias"):
            out["b1"] = np.zeros((E, Fp), dtype=np.float32)
            if w3 is not None:
                out["b3"] = np.zeros((E, Fp), dtype=np.float32)
            out["b2"] = np.zeros((E, D), dtype=np.float32)
        if s.get("expert_scale"):
            out["expert_scale"] = np.ones(E, dtype=np.float32)
        if s.get("output_bias"):
            out["output_bias"] = np.zeros(s["d_model"], dtype=np.float32)
    return out
