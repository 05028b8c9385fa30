#!/usr/bin/env python3
"""Swap the MoE blocks of a transformers model for compiled MoE-MLIR layers.

Builds a small MoE model from a config (random weights, no hub download),
runs it, swaps every MoE block with moe_mlir.patch_model, runs it again and
shows that the logits agree, then times one MoE layer: transformers' block
against the compiled layer on the same hidden states.

    python3 examples/hf_swap.py                      # Mixtral-like, one short run
    python3 examples/hf_swap.py --family qwen2_moe --tokens 256 --repeat 20

Needs torch and transformers (pip install torch transformers safetensors)
and a build of moe-compile (scripts/build.sh, or MOE_BUILD_DIR).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
import moe_mlir  # noqa: E402


def make_config(family: str, d: int, experts: int, hidden: int, layers: int):
    import transformers
    common = dict(hidden_size=d, num_hidden_layers=layers, num_attention_heads=8,
                  num_key_value_heads=4, vocab_size=1024, max_position_embeddings=1024)
    if family == "mixtral":
        return transformers.MixtralConfig(intermediate_size=hidden, num_local_experts=experts,
                                          num_experts_per_tok=2, **common)
    if family == "qwen2_moe":
        return transformers.Qwen2MoeConfig(intermediate_size=hidden, moe_intermediate_size=hidden,
                                           num_experts=experts, num_experts_per_tok=4,
                                           shared_expert_intermediate_size=2 * hidden,
                                           norm_topk_prob=True, **common)
    if family == "deepseek_v3":
        common["num_key_value_heads"] = 8
        return transformers.DeepseekV3Config(
            intermediate_size=2 * hidden, moe_intermediate_size=hidden, n_routed_experts=experts,
            num_experts_per_tok=4, n_group=4, topk_group=2, n_shared_experts=1,
            first_k_dense_replace=1, kv_lora_rank=64, q_lora_rank=64, qk_rope_head_dim=16,
            qk_nope_head_dim=16, v_head_dim=32, **common)
    raise SystemExit(f"unknown family {family!r}")


def best_ms(fn, x, repeat):
    import torch
    with torch.no_grad():
        fn(x)                                       # warm-up
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - start)
    return 1e3 * min(times), 1e3 * statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="mixtral", choices=["mixtral", "qwen2_moe", "deepseek_v3"])
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--expert-hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128, help="tokens of the timed batch")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--pipeline", default="fast", choices=["fast", "reference"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="dtype of the model's weights and activations")
    args = ap.parse_args()

    import torch
    import transformers
    from moe_mlir import hf
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)

    cfg = make_config(args.family, args.d_model, args.experts, args.expert_hidden, args.layers)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    model.to(getattr(torch, args.dtype))
    print(f"{type(model).__name__}: d_model {args.d_model}, {args.experts} experts of "
          f"{args.expert_hidden}, {args.layers} layers, {args.dtype}, transformers experts "
          f"implementation {cfg._experts_implementation!r}")

    ids = torch.randint(0, cfg.vocab_size, (2, 32), generator=torch.Generator().manual_seed(1))
    originals = dict(hf.moe_blocks(model))          # kept for the timing below
    with torch.no_grad():
        want = model(ids).logits.float()

    start = time.perf_counter()
    report = moe_mlir.patch_model(model, pipeline=args.pipeline)
    print(f"patch_model ({time.perf_counter() - start:.1f} s, compiles once per spec):")
    print(report)
    with torch.no_grad():
        got = model(ids).logits.float()
    diff = (got - want).abs().max().item()
    print(f"logits: max |ours - transformers| = {diff:.3g} (max |logit| "
          f"{want.abs().max().item():.3g})")

    path, block = next(iter(originals.items()))
    ours = model.get_submodule(path)
    x = torch.randn(1, args.tokens, args.d_model, generator=torch.Generator().manual_seed(2))
    x = x.to(getattr(torch, args.dtype))
    t_hf = best_ms(block, x, args.repeat)
    t_ours = best_ms(ours, x, args.repeat)
    layer_diff = (ours(x).float() - block(x).float()).abs().max().item()
    print(f"MoE layer {path}, {args.tokens} tokens, {moe_mlir.get_num_threads()} thread(s): "
          f"transformers {t_hf[0]:.2f} ms (median {t_hf[1]:.2f}), moe-mlir {t_ours[0]:.2f} ms "
          f"(median {t_ours[1]:.2f}): {t_hf[0] / t_ours[0]:.1f}x; max |diff| {layer_diff:.3g}")
    tolerance = 1e-3 if args.dtype == "float32" else 0.25
    if diff > tolerance * max(1.0, want.abs().max().item()):
        raise SystemExit(f"logits disagree: {diff:.3g}")


if __name__ == "__main__":
    main()
