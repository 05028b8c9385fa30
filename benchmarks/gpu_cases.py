#!/usr/bin/env python3
"""The layers of the GPU benchmark (issue #7 item 7), in one place.

scripts/gpu/prepare.sh compiles these specs for the GPU (``moe-compile
--target=cuda``) and benchmarks/run_gpu.py runs them on it, so the two can
never disagree about a case.  bf16 weights (``weight_dtype: bf16``): the
layers read what transformers' bf16 blocks read.

    python3 benchmarks/gpu_cases.py write-specs <dir> [--tiny]

writes ``<dir>/<case>.json`` for every case (``--tiny``: the small shapes of
``run_gpu.py --dry-run``) and prints the case names, one a line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Case order is the benchmark's order: the fine-grained decode case first
# (the headline target), the 256-expert one before PEER.
CASES = ("qwen3", "mixtral", "deepseek_v3", "peer")

TITLES = {
    "qwen3": "Qwen3-30B-A3B (D2048 F768 E128 k8)",
    "mixtral": "Mixtral (D4096 F14336 E8 k2)",
    "deepseek_v3": "DeepSeek-V3 (D7168 F2048 E256 k8, σ + bias + 8 groups keep 4, 1 shared)",
    "peer": "PEER (D1024 N=1024² h8 k16)",
}

# Which transformers block computes each case (benchmarks/hf_blocks.py); PEER
# has none: its peer is an eager torch module (run_gpu.py TorchPEER).
HF_CASE = {"qwen3": "qwen3", "mixtral": "mixtral", "deepseek_v3": "deepseek_v3", "peer": None}

T_VALUES = (1, 16, 128, 1024, 8192)
T_VALUES_DRY = (1, 16, 64)


def _moe(name, D, E, F, router, shared=0):
    spec = dict(name=name, kind="moe", d_model=D, experts=E, expert_hidden=F,
                activation="swiglu", weight_dtype="bf16", router=router)
    if shared:
        spec["shared_experts"] = dict(hidden=shared, gate=False)
    return spec


def _peer(name, D, n, heads, top_k, key_dim):
    return dict(name=name, kind="peer", d_model=D, experts=n * n, heads=heads, top_k=top_k,
                key_dim=key_dim, score="softmax", query_batchnorm=True, activation="gelu",
                weight_dtype="bf16")


def _router(kind, top_k, groups=1, keep=1):
    if kind == "mixtral":           # top-k of the logits, softmax over the k
        return dict(top_k=top_k, score="softmax", order="topk_then_score")
    if kind == "qwen3":             # softmax over E, top-k, renormalised
        return dict(top_k=top_k, score="softmax", order="score_then_topk", normalize=True)
    # DeepSeek-V3: sigmoid, choice by score + bias, groups ranked by their top-2 sum
    return dict(top_k=top_k, score="sigmoid", order="score_then_topk", normalize=True,
                scaling=2.5, selection_bias=True, groups=groups, topk_groups=keep,
                group_score="top2_sum")


def specs(tiny: bool = False) -> dict:
    """case -> spec dict (names ``gpubench_<case>``; ``_tiny`` for the dry run)."""
    s = "_tiny" if tiny else ""
    if tiny:
        return {
            "qwen3": _moe("gpubench_qwen3" + s, 64, 16, 32, _router("qwen3", 4)),
            "mixtral": _moe("gpubench_mixtral" + s, 64, 8, 96, _router("mixtral", 2)),
            "deepseek_v3": _moe("gpubench_deepseek_v3" + s, 64, 16, 32,
                                _router("deepseek_v3", 4, groups=4, keep=2), shared=32),
            "peer": _peer("gpubench_peer" + s, 32, 16, 2, 4, 16),
        }
    return {
        "qwen3": _moe("gpubench_qwen3", 2048, 128, 768, _router("qwen3", 8)),
        "mixtral": _moe("gpubench_mixtral", 4096, 8, 14336, _router("mixtral", 2)),
        "deepseek_v3": _moe("gpubench_deepseek_v3", 7168, 256, 2048,
                            _router("deepseek_v3", 8, groups=8, keep=4), shared=2048),
        "peer": _peer("gpubench_peer", 1024, 1024, 8, 16, 128),
    }


def normalized(spec: dict) -> dict:
    """The spec with every default filled in (moe_mlir.load_spec: pure
    Python, no compiler), as the compiled layer's manifest holds it."""
    try:
        import moe_mlir
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
        import moe_mlir
    return moe_mlir.load_spec(spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write-specs", help="write <dir>/<case>.json for every case")
    w.add_argument("dir")
    w.add_argument("--tiny", action="store_true", help="the dry run's small shapes")
    args = ap.parse_args(argv)
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    for case, spec in specs(args.tiny).items():
        (out / f"{case}.json").write_text(json.dumps(spec, indent=1) + "\n")
        print(case)
    return 0


if __name__ == "__main__":
    sys.exit(main())
