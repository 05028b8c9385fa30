#!/usr/bin/env python3
"""Compile a layer spec for the CPU, run it on random input and check it
against the independent NumPy reference (moe_mlir.reference) and, where
transformers has the same block and torch and transformers are installed,
against transformers' own block.

    python3 examples/run_layer.py examples/mh_moe.yaml --tokens 64
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))
sys.path.insert(0, str(REPO / "benchmarks"))
import hf_blocks  # noqa: E402
import moe_mlir  # noqa: E402
from moe_mlir import reference  # noqa: E402


def random_weights(layer, rng):
    """Weights scaled by 1/sqrt(fan_in), as an initialised layer would be."""
    weights = {}
    for name, (shape, _) in layer.weight_shapes.items():
        if name == "bn_var":
            weights[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
            continue
        scale = 1.0 / np.sqrt(shape[-1]) if len(shape) > 1 else 0.1
        weights[name] = (rng.standard_normal(shape) * scale).astype(np.float32)
    return weights


def transformers_peer(layer, x, weights, repeat, out):
    """(line, ok): transformers' block for this spec, timed and compared with
    the kernel's output, or why there is none; whether the outputs agree
    (True when there is nothing to compare)."""
    case, why_not = hf_blocks.hf_case(layer.spec)
    if case is None:
        return f"transformers: no peer ({why_not})", True
    missing = hf_blocks.import_error()
    if missing:
        return f"transformers: not installed ({missing}); {hf_blocks.INSTALL_HINT} adds it as a peer", True
    import torch
    # The weights the kernel computes with: rounded to the spec's dtype.
    torch_dtypes = {"bf16": torch.bfloat16, "f16": torch.float16}
    rounded = {name: (weights[name] if dtype == "f32" else
                      torch.from_numpy(weights[name]).to(torch_dtypes[dtype]).float().numpy())
               for name, (_, dtype) in layer.weight_shapes.items()}
    block, _ = hf_blocks.build_hf_block(case, layer.spec, rounded)
    xt = torch.from_numpy(x).view(1, *x.shape)
    times = []
    with torch.no_grad():
        y = block(xt)                                    # warm-up
        for _ in range(repeat):
            start = time.perf_counter()
            block(xt)
            times.append(time.perf_counter() - start)
    y = y.view(*x.shape).numpy()
    scale = float(np.max(np.abs(y))) or 1.0
    line = (f"transformers {type(block).__name__} (eager): {np.median(times) * 1e3:.2f} ms "
            f"(median of {repeat}); max |kernel - transformers| = {float(np.max(np.abs(out - y))):.3g}")
    return line, np.allclose(out, y, rtol=1e-4, atol=1e-4 * scale)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default=str(Path(__file__).parent / "mh_moe.yaml"))
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=5, help="timed kernel runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    layer = moe_mlir.compile(args.spec, cache=False)
    compile_s = time.perf_counter() - start
    print(f"compiled {layer.name} ({layer.spec['kind']}) in {compile_s:.2f} s -> {layer.library_path}")

    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.tokens, layer.d_model)).astype(np.float32)
    weights = random_weights(layer, rng)
    noisy = layer.spec.get("router", {}).get("noise", False)
    seed = 1234 if noisy else None

    bound = layer.bind(**weights)                        # weight conversion, once
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        got = bound.forward(x, seed=seed)
        times.append(time.perf_counter() - start)
    # Before the NumPy reference: after its float64 copies of the weights,
    # torch's allocations page-fault (examples/qwen_moe.yaml: 0.6 s a call
    # before, 2-5 s after).
    peer_line, peer_ok = transformers_peer(layer, x, weights, args.repeat, got["out"])
    start = time.perf_counter()
    ref = reference.forward(layer.spec, x, seed=seed, **weights)
    ref_s = time.perf_counter() - start

    out, want = got["out"], ref["out"]
    abs_err = float(np.max(np.abs(out - want)))
    scale = float(np.max(np.abs(want))) or 1.0
    # f32 kernels against a float64 reference: sums over d_model terms.
    ok = np.allclose(out, want, rtol=1e-4, atol=1e-4 * scale)
    if "topk_ids" in got:
        ok = ok and np.array_equal(got["topk_ids"], ref["topk_ids"])
    print(f"T = {args.tokens}, d_model = {layer.d_model}: kernel {np.median(times) * 1e3:.2f} ms "
          f"(median of {args.repeat}), NumPy reference {ref_s * 1e3:.1f} ms")
    print(peer_line)
    ok = ok and peer_ok
    print(f"max |kernel - reference| = {abs_err:.3g} (output scale {scale:.3g}); "
          f"routing ids {'match' if 'topk_ids' not in got or np.array_equal(got['topk_ids'], ref['topk_ids']) else 'DIFFER'}")
    for name in layer.spec.get("aux_losses", []):
        print(f"  {name}: kernel {got[name]:.6g}, reference {ref[name]:.6g}")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
