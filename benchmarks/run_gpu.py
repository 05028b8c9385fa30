#!/usr/bin/env python3
"""GPU benchmark of MoE-MLIR's compiled CUDA layers against transformers' blocks.

    python3 benchmarks/run_gpu.py --layers gpu-carry/layers [--out DIR] [--budget SECONDS]
    python3 benchmarks/run_gpu.py --dry-run [--layers DIR]      # plumbing on the CPU

One run, one machine (issue #7 item 7).  bf16 weights and activations; the
cases of benchmarks/gpu_cases.py (Mixtral, Qwen3-30B-A3B, DeepSeek-V3, PEER)
at T in {1, 16, 128, 1024, 8192}.  Columns:

* ``ours``: the layer compiled by ``moe-compile --target=cuda`` (loaded from
  ``--layers/<case>``, no compiler needed), fed ``x.float()`` (its activations
  are f32) and timed with that conversion;
* ``hf_eager``, ``hf_grouped_mm``: transformers' block of the case
  (``config._experts_implementation``), built from its config with random
  bf16 weights made on the GPU (our layer gets the same weights);
* ``hf_compile``: ``torch.compile`` of the grouped_mm block (one static
  compile per T; the compile time is recorded, not timed);
* PEER: ``torch_peer``, an eager torch PEER module in bf16.

Every measurement is the whole layer, routing included, timed with CUDA
events: warm-up calls, then the median of up to ``--reps`` timed calls.  The
limits are measured in the same run (streaming read GB/s, bf16 matmul TFLOP/s
at 8192³) and each row gets its floor = max(bytes of the experts its routing
touched / bandwidth, FLOPs / matmul rate), achieved GB/s and TFLOP/s.  A
correctness spot check per case at T = 1 and 16 compares our output with
transformers' eager output and with an f32 torch reference on the same
(bf16-valued) weights.

Each case runs in its own worker process under a time budget: our kernels are
today's SIMT reference lowering (slow), so each case runs T = 1 first,
projects the larger T from it and skips those that would not fit (the table
says "skipped: projected N s"); a worker that hangs or crashes is killed at
its deadline and the results written so far are kept.  Writes ``gpu.json``,
``gpu.md`` and (with matplotlib) ``gpu.png`` to ``--out`` after every case.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import gpu_cases  # noqa: E402

START = time.time()

COLUMNS = {
    "ours": "ours (moe-compile cuda)",
    "hf_eager": "transformers eager",
    "hf_grouped_mm": "transformers grouped_mm",
    "hf_compile": "torch.compile(grouped_mm)",
    "torch_peer": "torch PEER (eager)",
}
MOE_COLUMNS = ("ours", "hf_eager", "hf_grouped_mm", "hf_compile")
PEER_COLUMNS = ("ours", "torch_peer")

# The issue's table (H200, one earlier run; NOT measured by this script),
# for the targets: case -> T -> ms.
ISSUE_VLLM = {
    "mixtral": {1: 0.236, 16: 0.708, 1024: 1.768, 8192: 11.16},
    "qwen3": {1: 0.205, 16: 0.262, 1024: 0.452, 8192: 1.600},
    "deepseek_v3": {1: 0.241, 128: 5.26, 1024: 6.41, 8192: 18.0},
}
# Used only when the limits could not be measured in this run (TOOLCHAIN.md).
FALLBACK_LIMITS = dict(read_bw_gbs=4190.0, matmul_tflops=784.0)

CHECK_T = (1, 16)
TOL_REF32 = 1e-3     # ours vs the f32 reference: both accumulate in f32 on the same weights


def log(msg: str = "") -> None:
    print(f"[{time.time() - START:7.1f} s] {msg}" if msg else "", flush=True)


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(clean(data), indent=1))
    os.replace(tmp, path)


def clean(o):
    if isinstance(o, dict):
        return {str(k): clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [clean(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


# =========================================================================== #
# Worker side (imports torch)
# =========================================================================== #

def torch_stack_rows(a, b):
    """[E, F, D] and [E, F, D] -> [E, 2F, D] with rows a0, b0, a1, b1, ..."""
    import torch
    E, F, D = a.shape
    return torch.stack([a, b], dim=2).reshape(E, 2 * F, D)


class Worker:
    """One case (or the limits) in this process; results go to ``self.out``
    (rewritten after every measurement, so a killed worker leaves them)."""

    def __init__(self, args, job: str):
        import torch
        self.torch = torch
        self.args = args
        self.job = job
        self.deadline = args.deadline
        self.dev = torch.device("cpu" if args.dry_run else "cuda")
        self.result = dict(job=job, status="running", notes=[], rows=[], checks=[], timings={})
        self.case_budget = max(1.0, self.deadline - time.time()) if self.deadline else 1e9
        self.spent = {}           # column -> seconds spent on it (cells and checks)
        self.out = Path(args.worker_out)
        torch.manual_seed(1234)
        if args.dry_run:
            torch.set_num_threads(1)     # tiny shapes: threads only contend
        if self.dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False

    # ------------------------------------------------------------ plumbing
    def save(self):
        write_json(self.out, self.result)

    def left(self) -> float:
        return self.deadline - time.time()

    def note(self, msg: str):
        log(f"{self.job}: {msg}")
        self.result["notes"].append(msg)

    def check_context(self, where: str, exc: Exception):
        """After a failure in ``where``: if the CUDA context is broken (a
        faulting kernel poisons it for the process), record it and exit, so
        the orchestrator can rerun the case without our layer."""
        torch = self.torch
        try:
            if self.args.simulate_broken_context == self.job and where.startswith("ours"):
                raise RuntimeError("simulated (--simulate-broken-context)")
            if self.dev.type != "cuda":
                return
            torch.cuda.synchronize()
            torch.ones(1, device=self.dev).add_(1).sum().item()
        except Exception as exc2:  # noqa: BLE001
            self.result["context_broken"] = (f"{where}: {type(exc).__name__}: {str(exc)[:200]} "
                                             f"(then: {type(exc2).__name__}: {str(exc2)[:200]})")
            self.result["status"] = "context broken"
            self.note(f"the CUDA context is broken after {where}; stopping this worker")
            self.save()
            sys.stdout.flush()
            os._exit(5)

    def sync(self):
        if self.dev.type == "cuda":
            self.torch.cuda.synchronize()

    def time_call(self, fn):
        """(ms of one call of fn, its output), synchronised."""
        torch = self.torch
        if self.dev.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            out = fn()
            b.record()
            b.synchronize()
            return a.elapsed_time(b), out
        t0 = time.perf_counter()
        out = fn()
        return (time.perf_counter() - t0) * 1e3, out

    def measure(self, fn, budget_s: float):
        """Warm-up then the median of up to --reps timed calls within
        ``budget_s``; a first call slower than the budget is the one sample."""
        first, _ = self.time_call(fn)
        if first / 1e3 > budget_s:
            return dict(status="ok", ms=first, samples_ms=[first], n=1, single=True,
                        first_ms=first)
        warm = min(self.args.warmup, max(0, int(0.3 * budget_s / max(first / 1e3, 1e-6))))
        for _ in range(warm):
            self.time_call(fn)
        n = int(max(1, min(self.args.reps, (0.7 * budget_s) // max(first / 1e3, 1e-6))))
        samples = [self.time_call(fn)[0] for _ in range(n)]
        samples.sort()
        med = samples[len(samples) // 2] if n % 2 else 0.5 * (samples[n // 2 - 1] + samples[n // 2])
        return dict(status="ok", ms=med, samples_ms=samples, n=n, single=n == 1 and warm == 0,
                    first_ms=first, min_ms=samples[0])

    # -------------------------------------------------------------- limits
    def run_limits(self):
        torch = self.torch
        info = dict(torch=torch.__version__, python=platform.python_version(),
                    platform=platform.platform(), dry_run=self.args.dry_run)
        try:                      # the version without importing it (seconds)
            from importlib.metadata import version
            info["transformers"] = version("transformers")
        except Exception as exc:  # noqa: BLE001
            info["transformers"] = f"missing ({type(exc).__name__}: {exc})"
        if self.dev.type == "cuda":
            p = torch.cuda.get_device_properties(0)
            info.update(device=p.name, sms=p.multi_processor_count,
                        memory_gib=round(p.total_memory / 2**30, 1),
                        capability=f"{p.major}.{p.minor}", cuda=torch.version.cuda)
        else:
            info.update(device="cpu (dry run)")
        self.result["machine"] = info
        self.save()
        dry = self.args.dry_run
        nbytes = (64 << 20) if dry else (4 << 30)
        reps = 3 if dry else 10
        mb = 0.3 if dry else 2.0
        bw = {}
        a = torch.ones(nbytes // 4, dtype=torch.float32, device=self.dev)
        for name, fn in (("sum f32", lambda: a.sum()), ("max f32", lambda: a.max())):
            m = self.measure(fn, budget_s=mb)
            bw[name] = nbytes / (m["ms"] / 1e3) / 1e9
        del a
        cols = 8192 if not dry else 1024
        A = torch.ones(nbytes // 2 // cols, cols, dtype=torch.bfloat16, device=self.dev)
        v = torch.ones(cols, dtype=torch.bfloat16, device=self.dev)
        m = self.measure(lambda: torch.mv(A, v), budget_s=mb)
        bw["mv bf16 (GEMV)"] = A.numel() * 2 / (m["ms"] / 1e3) / 1e9
        del A, v
        best = max(bw, key=bw.get)
        n = 512 if dry else 8192
        g = torch.Generator(device=self.dev).manual_seed(7)
        B = torch.randn(n, n, device=self.dev, dtype=torch.bfloat16, generator=g)
        C = torch.randn(n, n, device=self.dev, dtype=torch.bfloat16, generator=g)
        old = self.args.reps
        self.args.reps = reps
        m = self.measure(lambda: B @ C, budget_s=1.5 * mb)
        self.args.reps = old
        tflops = 2.0 * n ** 3 / (m["ms"] / 1e3) / 1e12
        del B, C
        self.result["limits"] = dict(read_bw_gbs=bw[best], read_bw_method=best, read_bw_all=bw,
                                     read_bw_bytes=nbytes, matmul_tflops=tflops,
                                     matmul_size=n, matmul_samples_ms=m["samples_ms"])
        log(f"limits: read {bw[best]:.0f} GB/s ({best}; "
            + ", ".join(f"{k} {v:.0f}" for k, v in bw.items())
            + f"), bf16 matmul {n}^3 {tflops:.1f} TFLOP/s")
        self.result["status"] = "done"
        self.save()

    # ------------------------------------------------------------- weights
    def randn(self, shape, scale, dtype=None, gen=None):
        """N(0, scale²) of ``shape`` on the device, drawn in slices of at most
        2^28 elements along the first dimension (tensors of 2^32+ elements)."""
        torch = self.torch
        t = torch.empty(*shape, device=self.dev, dtype=dtype or torch.bfloat16)
        per_row = max(1, t[0].numel()) if t.dim() > 1 else 1
        step = max(1, (1 << 28) // per_row)
        for i in range(0, t.shape[0], step):
            t[i:i + step].normal_(0.0, scale, generator=gen)
        return t

    def moe_tensors(self, spec):
        """Random bf16 weights on the device: the transformers layout
        (gate_up_proj = [w1; w3] per expert, down_proj = w2) and ours."""
        torch = self.torch
        D, E, F = spec["d_model"], spec["experts"], spec["expert_hidden"]
        g = torch.Generator(device=self.dev).manual_seed(11)
        hf = dict(gate=self.randn((E, D), D ** -0.5, gen=g),
                  gate_up=self.randn((E, 2 * F, D), D ** -0.5, gen=g),
                  down=self.randn((E, D, F), F ** -0.5, gen=g))
        ours = dict(gate=hf["gate"], w1=hf["gate_up"][:, :F].contiguous(),
                    w3=hf["gate_up"][:, F:].contiguous(), w2=hf["down"])
        if spec["router"]["selection_bias"]:
            ours["gate_bias"] = hf["bias"] = self.randn((E,), 0.05, torch.float32, gen=g)
        Fs = (spec.get("shared_experts") or {}).get("hidden", 0)
        if Fs:
            for n, shape, fan in (("shared_w1", (Fs, D), D), ("shared_w3", (Fs, D), D),
                                  ("shared_w2", (D, Fs), Fs)):
                ours[n] = hf[n] = self.randn(shape, fan ** -0.5, gen=g)
        return hf, ours

    def peer_tensors(self, spec):
        torch = self.torch
        D, h, dk, N = spec["d_model"], spec["heads"], spec["key_dim"], spec["experts"]
        n = math.isqrt(N)
        g = torch.Generator(device=self.dev).manual_seed(13)
        f32 = torch.float32
        W = dict(query=self.randn((h * dk, D), D ** -0.5, gen=g),
                 bn_mean=self.randn((h * dk,), 0.1, f32, gen=g),
                 bn_var=torch.rand(h * dk, device=self.dev, generator=g).add_(0.5),
                 bn_weight=torch.rand(h * dk, device=self.dev, generator=g).mul_(0.4).add_(0.8),
                 bn_bias=self.randn((h * dk,), 0.1, f32, gen=g),
                 keys1=self.randn((n, dk // 2), (dk // 2) ** -0.5, gen=g),
                 keys2=self.randn((n, dk // 2), (dk // 2) ** -0.5, gen=g),
                 expert_in=self.randn((N, D), D ** -0.5, gen=g),
                 expert_out=self.randn((N, D), h ** -0.5, gen=g))
        return W

    def hf_blocks(self, case, spec, hf):
        """(eager block, grouped_mm block) sharing the same weight tensors."""
        torch = self.torch
        import hf_blocks
        blocks = []
        layout = None
        for impl in ("eager", "grouped_mm"):
            cls, cfg = hf_blocks.hf_config(gpu_cases.HF_CASE[case], spec)
            cfg._experts_implementation = impl
            with torch.device("meta"):
                block = cls(cfg)
            if layout is None:
                layout = self.expert_layout(block.experts, hf)
            hf_blocks._set_tensor(block, "experts.gate_up_proj", layout[0])
            hf_blocks._set_tensor(block, "experts.down_proj", layout[1])
            # DeepSeek-V3's router keeps an f32 weight (it computes in f32).
            gdt = block.gate.weight.dtype if case == "deepseek_v3" else torch.bfloat16
            hf_blocks._set_tensor(block, "gate.weight", hf["gate"].to(gdt))
            if case == "deepseek_v3":
                hf_blocks._set_tensor(block, "gate.e_score_correction_bias", hf["bias"], buffer=True)
                hf_blocks._set_tensor(block, "shared_experts.gate_proj.weight", hf["shared_w1"])
                hf_blocks._set_tensor(block, "shared_experts.up_proj.weight", hf["shared_w3"])
                hf_blocks._set_tensor(block, "shared_experts.down_proj.weight", hf["shared_w2"])
            left = [n for n, t in list(block.named_parameters()) + list(block.named_buffers())
                    if t.device.type == "meta"]
            for name in left:         # a tensor this transformers version adds: zeros
                t = block.get_parameter(name) if name in dict(block.named_parameters()) \
                    else block.get_buffer(name)
                hf_blocks._set_tensor(block, name, torch.zeros(t.shape, dtype=t.dtype, device=self.dev),
                                      buffer=name not in dict(block.named_parameters()))
            if left and impl == "eager":
                self.note(f"transformers block: tensors not mapped, set to zeros: {left}")
            block.eval()
            blocks.append((block, cfg))
        return blocks

    def expert_layout(self, experts, hf):
        """(gate_up_proj, down_proj) in the layout of this transformers
        version's experts module (python/moe_mlir/hf.py _fused_experts read
        backwards): [E, 2F, D] gate rows first, or interleaved
        (``is_concatenated=False``), or transposed (``is_transposed``)."""
        gu, dn = hf["gate_up"], hf["down"]
        E, F2, D = gu.shape
        if not getattr(experts, "is_concatenated", True):
            gu = torch_stack_rows(gu[:, :F2 // 2], gu[:, F2 // 2:])
            self.note("transformers experts: interleaved gate/up rows")
        if getattr(experts, "is_transposed", False):
            gu, dn = gu.transpose(1, 2).contiguous(), dn.transpose(1, 2).contiguous()
            self.note("transformers experts: transposed weights (a copy)")
        for name, t in (("gate_up_proj", gu), ("down_proj", dn)):
            want = tuple(getattr(experts, name).shape)
            if tuple(t.shape) != want:
                raise RuntimeError(f"transformers' experts.{name} is {list(want)}, the weights "
                                   f"made are {list(t.shape)}: an unknown layout")
        return gu, dn

    # ------------------------------------------------------ references (f32)
    def route32(self, spec, x32, W):
        torch = self.torch
        r, E = spec["router"], spec["experts"]
        logits = x32 @ W["gate"].float().T
        bias = W.get("gate_bias") if r["selection_bias"] else None
        act = torch.softmax if r["score"] == "softmax" else (lambda z, dim=-1: torch.sigmoid(z))
        if r["order"] == "score_then_topk":
            s = act(logits, dim=-1)
            key = s + bias if bias is not None else s
        else:
            s = None
            key = logits + bias if bias is not None else logits
        G = r["groups"]
        T = x32.shape[0]
        if G > 1:
            per = key.view(T, G, E // G)
            gs = per.topk(2, -1).values.sum(-1) if r["group_score"] == "top2_sum" else per.amax(-1)
            kept = gs.topk(r["topk_groups"], -1).indices
            drop = torch.ones(T, G, dtype=torch.bool, device=key.device)
            drop.scatter_(1, kept, False)
            key = key.masked_fill(drop.repeat_interleave(E // G, 1), float("-inf"))
        ids = key.topk(r["top_k"], -1).indices
        if s is not None:
            w = s.gather(1, ids)
        else:
            w = act(logits.gather(1, ids), dim=-1)
        if r["normalize"]:
            w = w / w.sum(1, keepdim=True)
        return ids, w * r["scaling"]

    def moe_ref32(self, spec, x32, W):
        """The layer in f32 on the bf16-valued weights (experts one by one)."""
        torch = self.torch
        silu = torch.nn.functional.silu
        ids, w = self.route32(spec, x32, W)
        out = torch.zeros_like(x32)
        if "shared_w1" in W:
            h = silu(x32 @ W["shared_w1"].float().T) * (x32 @ W["shared_w3"].float().T)
            out += h @ W["shared_w2"].float().T
        for e in ids.unique().tolist():
            rows, slot = (ids == e).nonzero(as_tuple=True)
            xe = x32[rows]
            h = silu(xe @ W["w1"][e].float().T) * (xe @ W["w3"][e].float().T)
            out.index_add_(0, rows, (h @ W["w2"][e].float().T) * w[rows, slot, None])
        return out, ids

    def peer_forward(self, spec, W, x, cdt):
        """Eager PEER (He, 2024) with compute dtype ``cdt``: bf16 is the
        'torch_peer' column, f32 the reference."""
        torch = self.torch
        TF = torch.nn.functional
        T = x.shape[0]
        h, k, dk = spec["heads"], spec["top_k"], spec["key_dim"]
        n = math.isqrt(spec["experts"])
        half = dk // 2
        xc = x.to(cdt)
        q = TF.linear(xc, W["query"].to(cdt)).float()
        q = (q - W["bn_mean"]) * torch.rsqrt(W["bn_var"] + 1e-5) * W["bn_weight"] + W["bn_bias"]
        q = q.to(cdt).view(T, h, 2, half)
        s1 = torch.einsum("thd,nd->thn", q[:, :, 0], W["keys1"].to(cdt))
        s2 = torch.einsum("thd,nd->thn", q[:, :, 1], W["keys2"].to(cdt))
        kk = min(k, n)
        v1, i1 = s1.float().topk(kk, dim=-1)
        v2, i2 = s2.float().topk(kk, dim=-1)
        cand = (v1[..., :, None] + v2[..., None, :]).view(T, h, kk * kk)
        cid = (i1[..., :, None] * n + i2[..., None, :]).view(T, h, kk * kk)
        scores, pos = cand.topk(k, dim=-1)
        ids = cid.gather(-1, pos)
        g = scores.softmax(-1)
        u = TF.embedding(ids, W["expert_in"]).to(cdt)
        a = TF.gelu(torch.einsum("thkd,td->thk", u, xc).float())
        v = TF.embedding(ids, W["expert_out"]).to(cdt)
        out = torch.einsum("thk,thkd->td", (a * g).to(cdt), v)
        return out, ids

    # ---------------------------------------------------------------- ours
    def open_ours(self, case):
        """(layer, None) or (None, why not)."""
        if self.args.no_ours:
            return None, "left out (--no-ours)"
        if not self.args.layers:
            return None, "no --layers directory"
        d = Path(self.args.layers) / case
        if not (d / "layer.json").is_file():
            return None, f"no compiled layer at {d} (scripts/gpu/prepare.sh)"
        import gpu_layer
        try:
            layer = gpu_layer.open_layer(d, self.args.ours_driver)
        except Exception as exc:  # noqa: BLE001
            if self.args.ours_driver != "auto" or not gpu_layer.api_available():
                return None, f"loading {d} failed: {type(exc).__name__}: {exc}"
            self.note(f"moe_mlir.load({d}) failed ({type(exc).__name__}: {exc}); "
                      "using the ctypes driver")
            try:
                layer = gpu_layer.CtypesLayer(d)
            except Exception as exc2:  # noqa: BLE001
                return None, f"loading {d} failed: {type(exc2).__name__}: {exc2}"
        self.result["ours_driver"] = layer.driver
        return layer, None

    def bind_ours(self, case, layer, weights, probe=None):
        """(layer, bound callable); falls back from the API to ctypes when
        binding, or a first call on ``probe`` (an x), fails through the API."""
        import gpu_layer
        try:
            bound = layer.bind(weights)
            if probe is not None and layer.driver == "api":
                bound(probe.float())
                self.sync()
            return layer, bound
        except Exception as exc:  # noqa: BLE001
            if layer.driver != "api" or self.args.ours_driver != "auto":
                raise
            self.note(f"binding through the moe_mlir API failed ({type(exc).__name__}: {exc}); "
                      "using the ctypes driver")
            layer = gpu_layer.CtypesLayer(layer.directory)
            self.result["ours_driver"] = "ctypes (API failed)"
            return layer, layer.bind(weights)

    # ---------------------------------------------------------------- case
    def run_case(self):
        torch = self.torch
        case = self.job
        dry = self.args.dry_run
        spec = gpu_cases.normalized(gpu_cases.specs(tiny=dry)[case])
        kind = spec["kind"]
        title = gpu_cases.TITLES[case] + (" — tiny dry-run shape" if dry else "")
        self.result.update(case=case, title=title, spec=spec, kind=kind,
                           fake_driver="fake" in os.environ.get("MOE_CUDA_DRIVER", ""))
        t0 = time.time()
        layer, why = self.open_ours(case)
        if layer is not None and tuple(layer.spec.get(k) for k in ("d_model", "experts")) != (
                spec["d_model"], spec["experts"]):
            why, layer = (f"the layer at {layer.directory} is not this case's shape "
                          f"(d_model/experts {layer.spec.get('d_model')}/{layer.spec.get('experts')}); "
                          "rerun scripts/gpu/prepare.sh"), None
        if why:
            self.note(f"ours: n/a ({why})")
        peer_why = None           # why the peers are missing (their block failed)
        if kind == "moe":
            hf, W = self.moe_tensors(spec)
            D = spec["d_model"]
            try:
                (eager, _), (gmm, gcfg) = self.hf_blocks(case, spec, hf)
            except Exception as exc:  # noqa: BLE001 - ours and the reference still run
                peer_why = f"transformers block failed: {type(exc).__name__}: {exc}"[:300]
                self.note(peer_why)
                if self.args.verbose:
                    traceback.print_exc()

            def run_hf(block):
                def f(x):
                    y = block(x.view(1, -1, D))
                    return (y[0] if isinstance(y, tuple) else y).reshape(-1, D)
                return f
            peers = {} if peer_why else {"hf_eager": run_hf(eager), "hf_grouped_mm": run_hf(gmm)}
            compiled = None
            if peer_why:
                why_compile = peer_why
            elif self.args.no_compile:
                why_compile = "--no-compile"
            else:
                why_compile = None
                import torch._dynamo
                for knob in ("cache_size_limit", "recompile_limit"):    # one compile per T
                    try:
                        setattr(torch._dynamo.config, knob,
                                max(16, getattr(torch._dynamo.config, knob)))
                    except Exception:  # noqa: BLE001 - absent in this torch
                        pass
                compiled = torch.compile(gmm, dynamic=False)
                peers["hf_compile"] = run_hf(compiled)
            ref = lambda x32: self.moe_ref32(spec, x32, W)  # noqa: E731
            check_peer = "hf_eager"
        else:
            W = self.peer_tensors(spec)
            peers = {"torch_peer": lambda x: self.peer_forward(spec, W, x, torch.bfloat16)[0]}
            ref = lambda x32: self.peer_forward(spec, W, x32, torch.float32)  # noqa: E731
            check_peer = "torch_peer"
            why_compile = None
        self.sync()
        self.result["timings"]["weights_s"] = time.time() - t0
        self.result["weight_bytes"] = sum(t.numel() * t.element_size() for t in W.values())
        log(f"{case}: weights made in {time.time() - t0:.1f} s "
            f"({self.result['weight_bytes'] / 2**30:.2f} GiB ours)")
        bound = None
        if layer is not None:
            try:
                t1 = time.time()
                probe = torch.randn(1, spec["d_model"], device=self.dev, dtype=torch.bfloat16)
                layer, bound = self.bind_ours(case, layer, W, probe)
                self.result["timings"]["bind_s"] = time.time() - t1
            except Exception as exc:  # noqa: BLE001
                why = f"bind failed: {type(exc).__name__}: {exc}"
                self.note(f"ours: {why}")
        ours_fn = (lambda x: bound(x.float())) if bound is not None else None
        # The checks call the layer through ctypes whatever times it: NaN-filled
        # outputs, and its routing too (the API returns the output alone).
        check_fn = ours_fn
        if bound is not None:
            try:
                import gpu_layer
                cbound = bound if hasattr(bound, "forward") else \
                    gpu_layer.CtypesLayer(layer.directory).bind(W)
                check_fn = lambda x: cbound.forward(x.float(), poison=True)  # noqa: E731
            except Exception as exc:  # noqa: BLE001
                self.note(f"checks through the timing driver ({type(exc).__name__}: {exc})")
        if ours_fn is not None and self.args.simulate_broken_context == case:
            def ours_fn(x):  # noqa: ARG001 - tests: a failing kernel
                raise RuntimeError("simulated failure of our layer")
            check_fn = ours_fn
        self.save()

        # ---- correctness spot checks
        g = torch.Generator(device=self.dev).manual_seed(99)
        D = spec["d_model"]
        last = {}                     # col -> (T, ms) of its last (or first, cold) call
        for T in CHECK_T:
            if self.left() < 5:
                self.note(f"check T={T} skipped: out of time")
                break
            if "ours" in last and ours_fn is not None:
                est = last["ours"][1] / 1e3 * T / last["ours"][0]
                if est > min(0.25 * self.left(), 0.5 * self.args.ours_share * self.case_budget):
                    self.note(f"check T={T} skipped: ours projected {est:.3g} s")
                    break
            x = torch.randn(T, D, device=self.dev, dtype=torch.bfloat16, generator=g)
            chk = dict(T=T)
            try:
                with torch.no_grad():
                    r32, rids = ref(x.float())
                    p = peers[check_peer](x).float() if check_peer in peers else None
                if p is not None:
                    chk["peer_vs_ref32"] = self.errors(p, r32)
                if ours_fn is not None:
                    try:
                        t0c = time.time()
                        with torch.no_grad():
                            o = check_fn(x)
                        self.sync()
                        if isinstance(o, dict):
                            chk["routing_agreement"] = self.agreement(o.get("topk_ids"), rids)
                            o = o["out"]
                        chk["ours_call_s"] = time.time() - t0c
                        self.spent["ours"] = self.spent.get("ours", 0.0) + chk["ours_call_s"]
                        last["ours"] = (T, chk["ours_call_s"] * 1e3)
                        chk["ours_vs_ref32"] = self.errors(o.float(), r32)
                        if p is not None:
                            chk["ours_vs_" + check_peer] = self.errors(o.float(), p)
                        if self.result["fake_driver"]:
                            chk["note"] = "fake CUDA driver: nothing computed, errors meaningless"
                            chk["ok"] = None
                        else:
                            chk["ok"] = (chk["ours_vs_ref32"]["rel"] <= self.args.check_tol)
                            chk["tol"] = self.args.check_tol
                    except Exception as exc:  # noqa: BLE001
                        chk["ours_error"] = f"{type(exc).__name__}: {exc}"
                        chk["ok"] = False
                        self.note(f"ours failed at T={T}: {chk['ours_error']}")
                        self.result["checks"].append(chk)
                        self.check_context(f"ours (check T={T})", exc)
                        self.result["checks"].pop()
                        ours_fn, why = None, f"failed in the check: {chk['ours_error']}"
                else:
                    chk["ok"] = None
                    chk["note"] = f"ours n/a ({why})"
            except Exception as exc:  # noqa: BLE001
                chk["error"] = f"{type(exc).__name__}: {exc}"
                chk["ok"] = False
                self.note(f"check T={T} failed: {chk['error']}")
                if self.args.verbose:
                    traceback.print_exc()
            self.result["checks"].append(chk)
            log(f"{case}: check T={T}: " + ", ".join(
                f"{k} rel {v['rel']:.2e}" for k, v in chk.items() if isinstance(v, dict)))
            self.save()

        # ---- timings, T ascending
        Ts = tuple(self.args.T) if self.args.T else (
            gpu_cases.T_VALUES_DRY if dry else gpu_cases.T_VALUES)
        cols = MOE_COLUMNS if kind == "moe" else PEER_COLUMNS
        for T in Ts:
            x = torch.randn(T, D, device=self.dev, dtype=torch.bfloat16, generator=g)
            row = dict(T=T, cols={})
            self.result["rows"].append(row)
            try:
                with torch.no_grad():
                    ids = self.route_ids(spec, x, W)
                row["distinct"] = int(ids.unique().numel())
                row["assignments"] = int(ids.numel())
            except Exception as exc:  # noqa: BLE001
                self.note(f"routing T={T} failed: {type(exc).__name__}: {exc}")
            for col in cols:
                if col == "ours":
                    fn, na = ours_fn, (None if ours_fn is not None else why)
                elif col == "hf_compile" and why_compile:
                    fn, na = None, why_compile
                elif col not in peers:
                    fn, na = None, peer_why or "unavailable"
                else:
                    fn, na = peers[col], None
                row["cols"][col] = self.cell(case, col, T, fn, na, last, x,
                                             compiled_col=col == "hf_compile")
                self.save()
            if self.dev.type == "cuda":
                del x
                torch.cuda.empty_cache()
        self.result["status"] = "done"
        self.result["timings"]["total_s"] = time.time() - t0
        self.save()

    def route_ids(self, spec, x, W):
        """The expert ids of the routing (for the bytes touched): the f32
        routing of a moe layer, the bf16 torch PEER's retrieval."""
        if spec["kind"] == "moe":
            return self.route32(spec, x.float(), W)[0]
        # PEER in chunks: its expert gathers are [T, h, k, D]
        ids = [self.peer_forward(spec, W, c, self.torch.bfloat16)[1] for c in x.split(1024)]
        return self.torch.cat(ids)

    def agreement(self, ids, ref_ids):
        """Fraction of (token, head) rows whose set of chosen experts equals
        the reference's (None when the layer returned no ids)."""
        if ids is None or ref_ids is None or ids.numel() != ref_ids.numel():
            return None
        a = ids.reshape(-1, ids.shape[-1]).to(ref_ids.dtype).sort(-1).values
        b = ref_ids.reshape(-1, ref_ids.shape[-1]).sort(-1).values
        return (a == b).all(-1).float().mean().item()

    def errors(self, a, b):
        d = (a - b).abs().max().item()
        s = b.abs().max().item() or 1.0
        return dict(max_abs=d, rel=d / s, ref_max=s)

    def cell(self, case, col, T, fn, na, last, x, compiled_col=False):
        """One measurement of ``fn(x)`` with the budget rules; returns its record."""
        torch = self.torch
        label = f"{case} T={T} {COLUMNS[col]}"
        if na:
            status = "error" if na.startswith(("failed", "bind failed", "loading", "transformers block failed")) else "n/a"
            log(f"{label}: {status} ({na})")
            return dict(status=status, note=na)
        left = self.left()
        if left < 2:
            return dict(status="skipped", note="case budget spent")
        est = None
        if col in last:
            T0, ms0 = last[col]
            est = ms0 / 1e3 * (T / T0)            # linear in T: an upper bound for these layers
        # A cell needs about two calls' time (a slow call runs once after its
        # first). Ours may spend --ours-share of the case's budget in all
        # (its check calls included); no cell may take 90% of what is left.
        room = 0.9 * left
        if col == "ours":
            room = min(room, self.args.ours_share * self.case_budget - self.spent.get("ours", 0.0))
        if est is not None and est * 2 > room:
            note = f"skipped: projected {est:.3g} s per call"
            log(f"{label}: {note} ({left:.0f} s left in the case, {max(room, 0):.0f} s for it)")
            return dict(status="skipped", note=note, projected_s=est)
        t_cell = time.time()
        try:
            return self._cell(case, col, T, fn, last, x, compiled_col, label, left)
        finally:
            self.spent[col] = self.spent.get(col, 0.0) + time.time() - t_cell

    def _cell(self, case, col, T, fn, last, x, compiled_col, label, left):
        torch = self.torch
        rec = {}
        try:
            with torch.no_grad():
                if compiled_col:
                    if left < self.args.compile_reserve:
                        return dict(status="skipped", note=f"skipped: {left:.0f} s left, compile "
                                    f"needs ~{self.args.compile_reserve:.0f} s")
                    t0 = time.time()
                    fn(x)                                 # compiles this shape
                    self.sync()
                    rec["compile_s"] = time.time() - t0
                fn = self._bind_x(fn, x)
                budget = min(self.args.cell_budget, max(0.5, 0.25 * self.left()))
                rec.update(self.measure(fn, budget))
        except Exception as exc:  # noqa: BLE001
            msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            log(f"{label}: error {msg}")
            if self.args.verbose:
                traceback.print_exc()
            row = self.result["rows"][-1] if self.result["rows"] else None
            if row is not None:
                row["cols"][col] = dict(status="error", note=msg)
            self.check_context(f"{'ours' if col == 'ours' else col} (T={T})", exc)
            if self.dev.type == "cuda":
                torch.cuda.empty_cache()
            return dict(status="error", note=msg)
        last[col] = (T, rec["ms"])
        log(f"{label}: {rec['ms']:.4g} ms (n={rec['n']}"
            + (f", compile {rec['compile_s']:.1f} s" if "compile_s" in rec else "") + ")")
        return rec

    @staticmethod
    def _bind_x(fn, x):
        return lambda: fn(x)


def worker_main(args) -> int:
    w = Worker(args, args.worker)

    def on_term(signum, frame):  # noqa: ARG001
        w.result["status"] = "killed"
        w.save()
        os._exit(3)
    signal.signal(signal.SIGTERM, on_term)
    try:
        if args.worker == "limits":
            w.run_limits()
        else:
            w.run_case()
    except Exception as exc:  # noqa: BLE001
        w.result["status"] = "error"
        w.result["error"] = f"{type(exc).__name__}: {exc}"
        w.result["traceback"] = traceback.format_exc()
        traceback.print_exc()
        w.save()
        return 1
    return 0


# =========================================================================== #
# Orchestrator side (no torch: it survives whatever a worker does)
# =========================================================================== #

def work_of(case_res: dict, row: dict):
    """(FLOPs, bytes) of one call: useful FLOPs and the bf16 weights its
    routing touched (router + distinct experts + shared expert)."""
    spec = case_res["spec"]
    T = row["T"]
    if spec["kind"] == "moe":
        D, E, F, k = spec["d_model"], spec["experts"], spec["expert_hidden"], spec["router"]["top_k"]
        Fs = (spec.get("shared_experts") or {}).get("hidden", 0)
        distinct = row.get("distinct", min(E, T * k))
        assignments = row.get("assignments", T * k)
        macs = T * E * D + assignments * 3 * D * F + T * 3 * D * Fs
        nbytes = (E * D + distinct * 3 * F * D + 3 * D * Fs) * 2
        if spec["router"]["selection_bias"]:
            nbytes += E * 4
        return 2.0 * macs, float(nbytes)
    D, h, k, dk = spec["d_model"], spec["heads"], spec["top_k"], spec["key_dim"]
    n = math.isqrt(spec["experts"])
    distinct = row.get("distinct", min(spec["experts"], T * h * k))
    kk = min(k, n)
    macs = T * D * h * dk + T * h * n * dk + T * h * kk * kk + T * h * k * 2 * D
    nbytes = (h * dk * D + 2 * n * (dk // 2) + distinct * 2 * D) * 2 + 4 * h * dk * 4
    return 2.0 * macs, float(nbytes)


def derive(result: dict) -> None:
    lim = result.get("limits") or {}
    bw = lim.get("read_bw_gbs") or FALLBACK_LIMITS["read_bw_gbs"]
    mm = lim.get("matmul_tflops") or FALLBACK_LIMITS["matmul_tflops"]
    result["limits_used"] = dict(read_bw_gbs=bw, matmul_tflops=mm,
                                 measured=bool(lim.get("read_bw_gbs")))
    for c in result["cases"].values():
        for row in c.get("rows", []):
            flops, nbytes = work_of(c, row)
            floor = max(nbytes / (bw * 1e9), flops / (mm * 1e12)) * 1e3
            row.update(flops=flops, bytes=nbytes, floor_ms=floor)
            for m in row["cols"].values():
                if m.get("status") == "ok" and not (isinstance(m.get("ms"), (int, float))
                                                    and m["ms"] > 0):
                    m["status"], m["note"] = "error", f"no valid time ({m.get('ms')!r})"
            peers = [m["ms"] for k, m in row["cols"].items()
                     if k != "ours" and m.get("status") == "ok"]
            vllm = None if result["dry_run"] else ISSUE_VLLM.get(c.get("case"), {}).get(row["T"])
            row["vllm_issue_ms"] = vllm
            for m in row["cols"].values():
                if m.get("status") != "ok":
                    continue
                s = m["ms"] / 1e3
                m["gbs"] = nbytes / s / 1e9
                m["tflops"] = flops / s / 1e12
                m["pct_bw"] = 100 * m["gbs"] / bw
                m["pct_mm"] = 100 * m["tflops"] / mm
                m["floor_ratio"] = m["ms"] / floor if floor else None
            ours = row["cols"].get("ours", {})
            if ours.get("status") == "ok" and peers:
                ours["speedup_vs_best_peer"] = min(peers) / ours["ms"]


def F(v, spec: str) -> str:
    """``v`` formatted with ``spec``; "nan" for what JSON turned into null
    (a NaN or inf, say from a kernel's output) or anything not a number."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "nan"
    return format(v, spec)


def fmt_ms(m):
    if not m:
        return "—"
    st = m.get("status")
    if st == "ok":
        v = m["ms"]
        s = f"{v:.3g}" if v < 1000 else f"{v:.0f}"
        return s + ("¹" if m.get("single") else "")
    if st == "skipped":
        return m.get("note", "skipped")
    if st == "n/a":
        return "n/a"
    return "error"


def markdown(result: dict) -> str:
    M = result.get("machine") or {}
    L = result["limits_used"]
    lim = result.get("limits") or {}
    out = ["# MoE-MLIR GPU benchmark" + (" (DRY RUN on the CPU: not a measurement)"
                                          if result["dry_run"] else ""), ""]
    out.append(f"Device: {M.get('device', '?')} ({M.get('sms', '?')} SMs, {M.get('memory_gib', '?')} GiB), "
               f"torch {M.get('torch', '?')} (CUDA {M.get('cuda', '?')}), transformers "
               f"{M.get('transformers', '?')}; repo {result.get('repo_commit', '?')}; "
               + (f"layers: {result['carry_manifest'][0]}; " if result.get("carry_manifest") else "")
               + f"{result['date']}; run took {F(result['elapsed_s'] / 60, '.1f')} min of a "
               f"{F(result['budget_s'] / 60, '.1f')} min budget.")
    if L["measured"]:
        out.append(f"Limits measured in this run: streaming read **{F(L['read_bw_gbs'], '.0f')} GB/s** "
                   f"({lim.get('read_bw_method')}, {F(lim.get('read_bw_bytes', 0) / 2**30, '.1f')} GiB), "
                   f"bf16 matmul **{F(L['matmul_tflops'], '.0f')} TFLOP/s** ({lim.get('matmul_size')}³, "
                   "random data, median).")
    else:
        out.append(f"Limits NOT measured in this run (the limits worker failed): the H200's "
                   f"{F(L['read_bw_gbs'], '.0f')} GB/s and {F(L['matmul_tflops'], '.0f')} TFLOP/s of "
                   "shared/TOOLCHAIN.md are used.")
    out.append("")
    out.append("Times in ms: CUDA events around the whole layer (routing included), median of "
               "the timed calls after warm-up (¹ a single call). bf16 weights and activations; "
               "ours takes f32 activations, so its time includes `x.float()`. "
               "floor = max(bytes of the weights touched / read bandwidth, FLOPs / matmul rate), "
               "bytes and FLOPs from the f32 routing of the same tokens (router + distinct routed "
               "experts + shared expert). GB/s and TFLOP/s of ours against those limits. "
               "The vLLM column is the ISSUE's table (an earlier H200 run), not measured here.")
    out.append("")
    for name, c in result["cases"].items():
        out.append(f"## {c.get('title', name)}")
        out.append("")
        status = c.get("status")
        if status != "done":
            out.append(f"Worker status: **{status}**" + (f" — {c['error']}" if c.get("error") else ""))
            out.append("")
        cols = MOE_COLUMNS if c.get("kind", "moe") == "moe" else PEER_COLUMNS
        head = (["T", "floor"] + [COLUMNS[k] for k in cols]
                + (["vLLM fused_moe (issue)"] if c.get("kind", "moe") == "moe" else [])
                + ["ours GB/s (%BW)", "ours TFLOP/s (%MM)", "ours / floor", "ours speedup vs best peer"])
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for row in c.get("rows", []):
            o = row["cols"].get("ours", {})
            cells = [str(row["T"]), f"{F(row.get('floor_ms', float('nan')), '.3g')}"]
            cells += [fmt_ms(row["cols"].get(k)) for k in cols]
            if c.get("kind", "moe") == "moe":
                cells.append(f"{row['vllm_issue_ms']:g}" if row.get("vllm_issue_ms") else "—")
            if o.get("status") == "ok":
                cells += [f"{F(o['gbs'], '.3g')} ({F(o['pct_bw'], '.2g')}%)",
                          f"{F(o['tflops'], '.3g')} ({F(o['pct_mm'], '.2g')}%)",
                          f"{F(o['floor_ratio'], '.3g')}×",
                          f"{F(o['speedup_vs_best_peer'], '.3g')}×" if "speedup_vs_best_peer" in o else "—"]
            else:
                cells += ["—"] * 4
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        errors = {}                 # (column, message) -> [T]
        for row in c.get("rows", []):
            for k, m in row["cols"].items():
                if m.get("status") == "error":
                    errors.setdefault((k, m.get("note", "")), []).append(row["T"])
        for (k, note), Ts in errors.items():
            out.append(f"- error: {COLUMNS.get(k, k)} at T = {', '.join(map(str, Ts))}: {note}")
        comp = [(row["T"], row["cols"]["hf_compile"]["compile_s"]) for row in c.get("rows", [])
                if row["cols"].get("hf_compile", {}).get("compile_s") is not None]
        if comp:
            out.append("torch.compile time per shape (not timed): "
                       + ", ".join(f"T={T}: {F(s, '.1f')} s" for T, s in comp) + ".")
        for chk in c.get("checks", []):
            parts = [f"{k} max abs {F(v['max_abs'], '.3g')} rel {F(v['rel'], '.2e')}"
                     for k, v in chk.items() if isinstance(v, dict)]
            if chk.get("routing_agreement") is not None:
                parts.append(f"routing agreement with the reference {F(chk['routing_agreement'], '.1%')}")
            verdict = {True: "ok", False: "**FAILED**", None: "not judged"}[chk.get("ok")]
            extra = chk.get("note") or chk.get("ours_error") or chk.get("error") or ""
            out.append(f"- check T={chk['T']} ({verdict}; tol ours vs ref32 {chk.get('tol', TOL_REF32):g}): "
                       + "; ".join(parts) + (f" — {extra}" if extra else ""))
        for n in c.get("notes", []):
            out.append(f"- {n}")
        t = c.get("timings", {})
        if t:
            out.append("- worker: " + ", ".join(f"{k} {F(v, '.1f')} s" for k, v in t.items())
                       + (f"; ours through the {c['ours_driver']} driver" if c.get("ours_driver") else ""))
        out.append("")
    out += targets(result)
    notes = list(result.get("notes", []))
    if result.get("chart") and result["chart"] != "gpu.png":
        notes.append(result["chart"])
    if notes:
        out.append("## Notes")
        out.append("")
        out += [f"- {n}" for n in notes]
        out.append("")
    return "\n".join(out)


# Issue #7's targets: the rate at T <= 16 (of the bandwidth) and at T = 8192
# (of the matmul rate), per case.
TARGET_MM = {"mixtral": 80.0, "qwen3": 60.0, "deepseek_v3": 60.0}
TARGET_BW = 80.0


def targets(result: dict) -> list:
    """The issue's targets, one line per (case, T) where ours was measured."""
    lines = []
    for name, c in result["cases"].items():
        if c.get("kind", "moe") != "moe":
            continue
        for row in c.get("rows", []):
            o, cols, T = row["cols"].get("ours", {}), row["cols"], row["T"]
            if o.get("status") != "ok":
                continue
            verdicts = []
            if T <= 16:
                verdicts.append(f"{F(o['pct_bw'], '.2g')}% of the bandwidth "
                                f"({'ok' if o['pct_bw'] >= TARGET_BW else 'MISS'}, target {TARGET_BW:g}%)")
            if T == 8192 and name in TARGET_MM:
                verdicts.append(f"{F(o['pct_mm'], '.2g')}% of the matmul rate "
                                f"({'ok' if o['pct_mm'] >= TARGET_MM[name] else 'MISS'}, target "
                                f"{TARGET_MM[name]:g}%)")
            fast = [v for v in (row.get("vllm_issue_ms"),
                                cols.get("hf_compile", {}).get("ms")
                                if cols.get("hf_compile", {}).get("status") == "ok" else None) if v]
            if fast:
                need = min(fast) / (3.0 if (name == "qwen3" and T == 1) else 1.0)
                verdicts.append(f"vs the faster of vLLM (issue) and torch.compile "
                                f"{F(min(fast), '.3g')} ms: {F(min(fast) / o['ms'], '.3g')}× "
                                f"({'ok' if o['ms'] <= need else 'MISS'}"
                                f"{', target 3×' if need < min(fast) else ''})")
            slow = [cols[k]["ms"] for k in ("hf_eager", "hf_grouped_mm")
                    if cols.get(k, {}).get("status") == "ok"]
            if slow:
                verdicts.append(f"vs transformers eager/grouped_mm: "
                                f"{'ok' if o['ms'] < min(slow) else 'MISS'}")
            lines.append(f"- {name} T={T}: " + "; ".join(verdicts))
    if not lines:
        return []
    return ["## Issue #7's targets (where ours was measured)", ""] + lines + [""]


def chart(result: dict, path: Path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:  # noqa: BLE001
        return f"matplotlib unavailable ({type(exc).__name__}): no chart"
    cases = [c for c in result["cases"].values() if c.get("rows")]
    if not cases:
        return "no rows: no chart"
    ncol = min(2, len(cases))
    nrow = -(-len(cases) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.4 * ncol, 4.8 * nrow), squeeze=False)
    for ax in axes.flat[len(cases):]:
        ax.set_visible(False)
    styles = {"ours": ("tab:blue", "o"), "hf_eager": ("tab:red", "s"),
              "hf_grouped_mm": ("tab:orange", "^"), "hf_compile": ("tab:green", "v"),
              "torch_peer": ("tab:red", "s")}
    for ax, c in zip(axes.flat, cases):
        rows = c["rows"]
        Ts = [r["T"] for r in rows]
        ax.plot(Ts, [r.get("floor_ms") for r in rows], "k--", label="floor (this run's limits)")
        vl = [(r["T"], r["vllm_issue_ms"]) for r in rows if r.get("vllm_issue_ms")]
        if vl:
            ax.plot(*zip(*vl), ":", color="gray", marker="x", label="vLLM fused_moe (issue)")
        for col, (color, marker) in styles.items():
            pts = [(r["T"], r["cols"][col]["ms"]) for r in rows
                   if r["cols"].get(col, {}).get("status") == "ok"]
            if pts:
                ax.plot(*zip(*pts), color=color, marker=marker, label=COLUMNS[col])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tokens T")
        ax.set_ylabel("ms (whole layer)")
        ax.set_title(c.get("title", c.get("case", "")), fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    M = result.get("machine") or {}
    fig.suptitle(f"MoE-MLIR GPU benchmark — {M.get('device', '?')}"
                 + (" — DRY RUN (CPU)" if result["dry_run"] else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def repo_commit() -> str:
    try:
        c = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, timeout=10).stdout.strip()
        return c or "unknown"
    except Exception:  # noqa: BLE001
        return "unknown"


def carry_manifest(layers):
    """The first lines of the MANIFEST.txt scripts/gpu/prepare.sh wrote beside
    ``layers`` (which commit the layers were compiled from), or None."""
    if not layers:
        return None
    path = Path(layers).parent / "MANIFEST.txt"
    try:
        return path.read_text().splitlines()[:3]
    except OSError:
        return None


class Orchestrator:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(args.work) if args.work else self.out / "workers"
        self.work.mkdir(parents=True, exist_ok=True)
        self.deadline = START + args.budget
        self.child = None
        self.current = None          # (job, its worker JSON) while one runs
        self.result = dict(dry_run=args.dry_run, budget_s=args.budget, argv=sys.argv[1:],
                           date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                           repo_commit=repo_commit(), layers=args.layers,
                           carry_manifest=carry_manifest(args.layers), machine=None,
                           limits=None, cases={}, jobs={}, notes=[])

    def write(self):
        """gpu.json, gpu.md, gpu.png from what is there; a failure here is
        reported in the files, never fatal to the run."""
        self.result["elapsed_s"] = time.time() - START
        for step in ("derive", "chart", "json", "markdown"):
            try:
                if step == "derive":
                    derive(self.result)
                elif step == "chart":
                    self.result["chart"] = chart(self.result, self.out / "gpu.png") or "gpu.png"
                elif step == "json":
                    write_json(self.out / "gpu.json", self.result)
                else:
                    (self.out / "gpu.md").write_text(markdown(self.result))
            except Exception as exc:  # noqa: BLE001
                msg = f"writing the results failed in {step}: {type(exc).__name__}: {exc}"
                log(msg)
                traceback.print_exc()
                if step == "chart":
                    self.result["chart"] = msg
                elif step == "markdown":
                    (self.out / "gpu.md").write_text(f"# MoE-MLIR GPU benchmark\n\n{msg}\n\n"
                                                     "See gpu.json.\n")

    def run_job(self, job: str, budget: float, extra=()):
        wout = self.work / f"{job}.json"
        wlog = self.work / f"{job}.log"
        if wout.exists():
            wout.unlink()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", job,
               "--worker-out", str(wout), "--deadline", str(time.time() + budget)]
        cmd += self.passthrough() + list(extra)
        log(f"job {job}: budget {budget:.0f} s")
        self.current = (job, wout)
        t0 = time.time()
        status = None
        with open(wlog, "w") as lf:
            self.child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          start_new_session=True, bufsize=0)
            hard = t0 + budget + self.args.grace
            import selectors
            fd = self.child.stdout.fileno()
            os.set_blocking(fd, False)
            sel = selectors.DefaultSelector()
            sel.register(fd, selectors.EVENT_READ)
            while True:
                remaining = hard - time.time()
                if remaining <= 0:
                    status = f"killed after {time.time() - t0:.0f} s (budget {budget:.0f} s + grace)"
                    self.kill_child()
                    break
                if sel.select(timeout=min(1.0, remaining)):
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        break
                    text = chunk.decode(errors="replace")
                    sys.stdout.write(text)
                    sys.stdout.flush()
                    lf.write(text)
                    lf.flush()
            sel.close()
            rc = self.child.wait()
            self.child = None
        data = {}
        if wout.exists():
            try:
                data = json.loads(wout.read_text())
            except json.JSONDecodeError as exc:
                data = dict(status="error", error=f"unreadable worker output: {exc}")
        if status is None and rc != 0 and data.get("status") in (None, "running"):
            status = f"worker exited with {rc}" + (" (signal %d)" % -rc if rc < 0 else "")
        if status:
            data["status"] = status if data.get("status") in (None, "running", "killed") else data["status"]
            self.result["notes"].append(f"{job}: {status}")
        data.setdefault("status", "no output")
        self.result["jobs"][job] = dict(seconds=time.time() - t0, rc=rc, status=data.get("status"))
        log(f"job {job}: {data.get('status')} in {time.time() - t0:.0f} s")
        return data

    def kill_child(self):
        if self.child and self.child.poll() is None:
            try:
                os.killpg(self.child.pid, signal.SIGTERM)
                try:
                    self.child.wait(5)
                except subprocess.TimeoutExpired:
                    os.killpg(self.child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def passthrough(self):
        a = self.args
        p = ["--ours-driver", a.ours_driver, "--reps", str(a.reps), "--warmup", str(a.warmup),
             "--ours-share", str(a.ours_share), "--check-tol", str(a.check_tol),
             "--cell-budget", str(a.cell_budget), "--compile-reserve", str(a.compile_reserve)]
        if a.layers:
            p += ["--layers", a.layers]
        if a.dry_run:
            p.append("--dry-run")
        if a.dry_run_compile:
            p.append("--dry-run-compile")
        if a.no_compile:
            p.append("--no-compile")
        if a.no_ours:
            p.append("--no-ours")
        if a.verbose:
            p.append("--verbose")
        if a.simulate_broken_context:
            p += ["--simulate-broken-context", a.simulate_broken_context]
        if a.T:
            p += ["--T", ",".join(map(str, a.T))]
        return p

    def run(self) -> int:
        def on_term(signum, frame):  # noqa: ARG001
            self.kill_child()
            self.result["notes"].append(f"interrupted by signal {signum}: partial results")
            job, wout = self.current or (None, None)
            if job and job != "limits" and wout and wout.exists():
                try:           # what the interrupted case measured so far
                    data = json.loads(wout.read_text())
                    data["status"] = f"interrupted by signal {signum}"
                    data.setdefault("spec", gpu_cases.specs(self.args.dry_run)[job])
                    data.setdefault("kind", data["spec"]["kind"])
                    data.setdefault("rows", [])
                    self.result["cases"].setdefault(job, data)
                except (OSError, ValueError, KeyError):
                    pass
            self.write()
            os._exit(4)
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        cases = self.args.cases
        log(f"GPU benchmark{' (dry run)' if self.args.dry_run else ''}: cases {', '.join(cases)}; "
            f"budget {self.args.budget:.0f} s; layers {self.args.layers or 'none'}; out {self.out}")
        reserve = 5.0                                # for the final write
        lim_budget = min(60.0, max(10.0, 0.08 * self.args.budget))
        data = self.run_job("limits", lim_budget)
        self.result["machine"] = data.get("machine")
        self.result["limits"] = data.get("limits")
        if not data.get("limits"):
            self.result["notes"].append("limits not measured: " + str(data.get("error") or data.get("status")))
        self.write()
        for i, case in enumerate(cases):
            left = self.deadline - time.time() - reserve
            budget = (left - self.args.grace) / (len(cases) - i)
            if budget < 8:
                self.result["cases"][case] = dict(case=case, title=gpu_cases.TITLES[case],
                                                  status=f"not run: {max(left, 0):.0f} s left",
                                                  rows=[], notes=[])
                continue
            case_deadline = time.time() + budget
            data = self.run_job(case, budget)
            broken = data.get("context_broken")
            rerun = case_deadline - time.time()
            if broken and broken.startswith("ours") and not self.args.no_ours and rerun >= 15:
                log(f"{case}: our layer broke the CUDA context; rerunning the case without it")
                first = data
                data = self.run_job(case, rerun, extra=["--no-ours"])
                data.setdefault("notes", []).insert(
                    0, f"first attempt: our layer broke the CUDA context ({broken}); the case was "
                       "rerun without it (the ours cells and checks are the first attempt's)")
                data["checks"] = first.get("checks", []) + data.get("checks", [])
                ours_by_T = {r["T"]: r["cols"].get("ours") for r in first.get("rows", [])
                             if r["cols"].get("ours")}
                for r in data.get("rows", []):
                    r["cols"]["ours"] = ours_by_T.get(r["T"]) or dict(
                        status="error", note="not run: our layer broke the CUDA context in the "
                                             "first attempt")
                data["first_attempt"] = {k: first.get(k) for k in ("status", "context_broken", "notes")}
            elif broken:
                self.result["notes"].append(f"{case}: CUDA context broken ({broken}); no time or "
                                            "reason to rerun")
            data.setdefault("case", case)
            data.setdefault("title", gpu_cases.TITLES[case])
            data.setdefault("spec", gpu_cases.specs(self.args.dry_run)[case])
            data.setdefault("kind", data["spec"]["kind"])
            data.setdefault("rows", [])
            self.result["cases"][case] = data
            self.write()
        self.write()
        md = (self.out / "gpu.md").read_text()
        print(md, flush=True)
        log(f"wrote {self.out / 'gpu.json'}, {self.out / 'gpu.md'}"
            + ("" if (self.out / "gpu.png").exists() else " (no PNG)"))
        bad = [c for c, d in self.result["cases"].items() if d.get("status") != "done"]
        return 1 if bad and self.args.strict else 0


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", default=None,
                    help="directory of compiled layers, <case>/layer.json (scripts/gpu/prepare.sh)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu"), help="output folder")
    ap.add_argument("--work", default=None,
                    help="folder of the workers' own JSON and logs (default: <out>/workers)")
    ap.add_argument("--budget", type=float, default=330.0,
                    help="seconds for the whole run (limits + every case), default 330")
    ap.add_argument("--cases", default=",".join(gpu_cases.CASES),
                    help=f"comma-separated subset of {','.join(gpu_cases.CASES)}")
    ap.add_argument("--T", default=None, help="comma-separated token counts (default: the issue's)")
    ap.add_argument("--reps", type=int, default=20, help="timed calls per measurement, at most")
    ap.add_argument("--warmup", type=int, default=3, help="warm-up calls per measurement, at most")
    ap.add_argument("--cell-budget", type=float, default=3.0,
                    help="seconds of timed calls per measurement, at most")
    ap.add_argument("--check-tol", type=float, default=TOL_REF32,
                    help="max |ours - f32 reference| / max |reference| of the check (default 1e-3: "
                         "f32 activations; a kernel rounding its hidden activations to bf16 needs ~1e-2)")
    ap.add_argument("--ours-share", type=float, default=0.5,
                    help="fraction of a case's budget our (slow, SIMT) layer may spend, default 0.5")
    ap.add_argument("--compile-reserve", type=float, default=20.0,
                    help="skip a torch.compile shape with less than this many seconds left in the case")
    ap.add_argument("--grace", type=float, default=15.0,
                    help="seconds a worker may overrun its budget before it is killed")
    ap.add_argument("--ours-driver", default="auto", choices=("auto", "api", "ctypes"),
                    help="how our layer is called (benchmarks/gpu_layer.py)")
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile column")
    ap.add_argument("--no-ours", action="store_true",
                    help="leave out our layer (the rerun of a case whose layer broke the CUDA context)")
    ap.add_argument("--dry-run", action="store_true",
                    help="tiny shapes on the CPU (torch CPU; ours only with --layers of tiny layers "
                         "and MOE_CUDA_DRIVER=<fake driver>): tests the plumbing, measures nothing")
    ap.add_argument("--dry-run-compile", action="store_true",
                    help="with --dry-run: keep the torch.compile column (slow on the CPU)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a case did not finish")
    ap.add_argument("--verbose", action="store_true")
    # Tests: an error of our layer counts as a broken CUDA context (the rerun path).
    ap.add_argument("--simulate-broken-context", default=None, metavar="CASE", help=argparse.SUPPRESS)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cases = []
    for c in args.cases.split(","):
        c = c.strip().lower()
        if c not in gpu_cases.CASES:
            ap.error(f"unknown case {c!r} (expected some of {', '.join(gpu_cases.CASES)})")
        cases.append(c)
    args.cases = tuple(dict.fromkeys(cases))
    if isinstance(args.T, str):
        args.T = tuple(int(t) for t in args.T.split(",") if t.strip())
    if args.dry_run and not args.dry_run_compile:
        args.no_compile = True
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    return Orchestrator(args).run()


if __name__ == "__main__":
    sys.exit(main())
