#!/usr/bin/env python3
"""CPU benchmark of MoE-MLIR's compiled layers against their CPU peers.

    python3 benchmarks/run_cpu.py [--quick] [--cases mixtral,qwen3,...] [--out benchmarks/results]

One run, one machine: it measures the machine's limits (read bandwidth, SGEMM
rate), then per case the compiled kernel with f32 and with bf16 weights, the
reference lowering, transformers' own MoE blocks (eager and grouped_mm
experts), a plain NumPy per-expert loop, and for PEER an eager torch module.
It prints one line per measurement, a Markdown table at the end, and writes
<out>/cpu.md, <out>/cpu.json and <out>/cpu.png.  torch, transformers and
matplotlib are optional: without them their columns read "n/a".

Not part of the test suite.  See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import inspect
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))
import moe_mlir  # noqa: E402
from hf_blocks import build_hf_block  # noqa: E402  (this script's directory is on sys.path)

try:
    import torch
    import torch.nn.functional as TF
except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
    torch = None
    TORCH_ERROR = f"{type(exc).__name__}: {exc}"
else:
    TORCH_ERROR = None

try:
    if torch is None:
        raise ImportError("torch is missing")
    import transformers
except Exception as exc:  # noqa: BLE001
    transformers = None
    HF_ERROR = f"{type(exc).__name__}: {exc}"
else:
    HF_ERROR = None

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
except Exception as exc:  # noqa: BLE001
    plt = None
    MPL_ERROR = f"{type(exc).__name__}: {exc}"
else:
    MPL_ERROR = None

GIB = 1 << 30
TOL = 1e-4      # max|diff| / max|reference| allowed between two f32 computations of one layer
START = time.perf_counter()


def log(msg: str = "") -> None:
    print(msg, flush=True)


def stamp() -> str:
    return f"[{time.perf_counter() - START:7.1f} s]"


# --------------------------------------------------------------------------- #
# Settings
# --------------------------------------------------------------------------- #

# budget: seconds of timed repetitions per measurement (after the warm-up);
# reps: at most this many timed repetitions (the median is reported);
# cap: skip a measurement whose predicted single call exceeds this (seconds);
# ref_cap: the same for the (single-run) reference lowering.
FULL = dict(budget=4.0, reps=7, cap=30.0, ref_cap=30.0,
            moe_T=(1, 16, 128, 512), peer_N=(128, 256, 512, 1024), peer_T=(1, 64),
            mh_T=(1, 64), cases=("qwen3", "deepseek_v3", "mixtral", "peer", "mh_moe"))
QUICK = dict(budget=1.0, reps=3, cap=4.0, ref_cap=3.0,
             moe_T=(1, 16), peer_N=(128,), peer_T=(1, 64),
             mh_T=(1,), cases=("deepseek_v3", "peer", "mh_moe"))
ALL_CASES = ("qwen3", "deepseek_v3", "mixtral", "peer", "mh_moe")
CASE_ALIASES = {"qwen": "qwen3", "qwen3": "qwen3", "deepseek": "deepseek_v3",
                "deepseek_v3": "deepseek_v3", "dsv3": "deepseek_v3", "mixtral": "mixtral",
                "peer": "peer", "mh_moe": "mh_moe", "mhmoe": "mh_moe"}

# Column keys -> labels.  "peers" are the columns "ours" is compared with.
COLUMNS = {
    "ours_f32": "ours f32",
    "ours_bf16": "ours bf16",
    "ref_lowering": "reference lowering",
    "hf_eager": "transformers eager",
    "hf_grouped_mm": "transformers grouped_mm",
    "numpy_loop": "NumPy loop",
    "torch_peer": "torch PEER (eager)",
    "numpy_reference": "NumPy reference (float64)",
}
PEERS = ("hf_eager", "hf_grouped_mm", "numpy_loop", "torch_peer")

MOE_CASES = {
    "qwen3": dict(
        title="Qwen3-30B-A3B-like",
        spec=dict(name="bench_qwen3", kind="moe", d_model=2048, experts=128, expert_hidden=768,
                  activation="swiglu",
                  router=dict(top_k=8, score="softmax", order="score_then_topk", normalize=True))),
    "deepseek_v3": dict(
        title="DeepSeek-V3-like",
        spec=dict(name="bench_deepseek_v3", kind="moe", d_model=2048, experts=64,
                  expert_hidden=1408, activation="swiglu",
                  router=dict(top_k=6, score="sigmoid", order="score_then_topk", normalize=True,
                              scaling=2.5, selection_bias=True, groups=8, topk_groups=4,
                              group_score="top2_sum"),
                  shared_experts=dict(hidden=1408, gate=False))),
    "mixtral": dict(
        title="Mixtral-8x7B-like",
        spec=dict(name="bench_mixtral", kind="moe", d_model=4096, experts=8, expert_hidden=14336,
                  activation="swiglu",
                  router=dict(top_k=2, score="softmax", order="topk_then_score"))),
}
PEER_BASE = dict(kind="peer", d_model=1024, heads=8, top_k=16, key_dim=128, score="softmax",
                 query_batchnorm=True, activation="gelu")


# --------------------------------------------------------------------------- #
# Machine and its limits
# --------------------------------------------------------------------------- #

def meminfo(key: str) -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def machine_info() -> dict:
    model, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1]
    except OSError:
        pass
    isa = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16",
                       "amx_tile") if f in flags.split()]
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip())
    except Exception:  # noqa: BLE001
        nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        commit += "+dirty" if dirty else ""
    except Exception:  # noqa: BLE001
        commit = "unknown"
    info = dict(cpu_model=model, nproc=nproc, cpu_count=os.cpu_count(), isa=isa,
                mem_total_gib=round(meminfo("MemTotal") / GIB, 1),
                mem_available_gib=round(meminfo("MemAvailable") / GIB, 1),
                platform=platform.platform(), python=platform.python_version(),
                numpy=np.__version__, torch=torch.__version__ if torch else None,
                transformers=transformers.__version__ if transformers else None,
                matplotlib=matplotlib.__version__ if plt else None,
                moe_mlir=getattr(moe_mlir, "__version__", "?"), repo_commit=commit,
                date=datetime.datetime.now().isoformat(timespec="seconds"),
                loadavg_start=list(os.getloadavg()) if hasattr(os, "getloadavg") else None)
    return info


def measure_limits(nproc: int, quick: bool) -> dict:
    """Read bandwidth (streaming reductions over a large array, best of several
    methods and repetitions) and the SGEMM rate (2048^3 f32 matmul, best of
    several)."""
    reps = 3 if quick else 6
    nbytes = (512 << 20) if quick else GIB
    n = nbytes // 4
    a = np.empty(n, np.float32)
    a[:] = 1.0                                        # touch every page first
    methods = {}

    def best_rate(fn, work):
        fn()
        best = 0.0
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            best = max(best, work / (time.perf_counter() - t0))
        return best

    parts = max(1, nproc)
    chunks = np.array_split(a, parts)
    with ThreadPoolExecutor(parts) as ex:       # SIMD max reductions, one slice per thread
        methods["numpy max, %d threads" % parts] = best_rate(
            lambda: list(ex.map(np.max, chunks)), nbytes) / 1e9
    ones = np.ones(4096, np.float32)
    mat = a.reshape(-1, 4096)
    methods["numpy gemv (BLAS threads)"] = best_rate(lambda: mat @ ones, nbytes) / 1e9
    if torch is not None:
        ta, tm, to = torch.from_numpy(a), torch.from_numpy(mat), torch.from_numpy(ones)
        methods["torch sum, %d threads" % torch.get_num_threads()] = best_rate(
            lambda: ta.sum(), nbytes) / 1e9
        methods["torch mv, %d threads" % torch.get_num_threads()] = best_rate(
            lambda: tm @ to, nbytes) / 1e9
    bw_method = max(methods, key=methods.get)
    del a, chunks, mat
    if torch is not None:
        del ta, tm, to
    gc.collect()

    m = 2048
    rng = np.random.default_rng(1)
    b = rng.standard_normal((m, m), dtype=np.float32)
    c = rng.standard_normal((m, m), dtype=np.float32)
    gemm = {"numpy matmul": best_rate(lambda: b @ c, 2.0 * m ** 3) / 1e9}
    if torch is not None:
        tb, tc = torch.from_numpy(b), torch.from_numpy(c)
        gemm["torch matmul"] = best_rate(lambda: tb @ tc, 2.0 * m ** 3) / 1e9
    gemm_method = max(gemm, key=gemm.get)
    return dict(read_bw_gbs=methods[bw_method], read_bw_method=bw_method, read_bw_all=methods,
                read_bw_bytes=nbytes, sgemm_gflops=gemm[gemm_method], sgemm_method=gemm_method,
                sgemm_all=gemm, sgemm_size=m)


# --------------------------------------------------------------------------- #
# Weights
# --------------------------------------------------------------------------- #

class WeightFactory:
    """N(0, scale^2) float32 arrays from a fixed seed.

    Small arrays are drawn directly.  Large ones (expert stacks of up to 8 GB)
    are filled from a 64 MiB pool of N(0, 1) samples copied at random offsets
    with random signs, in 64 Ki-element chunks: drawing ~20 GB of fresh normals
    would take minutes on a small machine, and the kernels' speed and the
    correctness checks do not depend on the samples being independent.
    """

    POOL = 1 << 24
    CHUNK = 1 << 16

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.pool = self.rng.standard_normal(self.POOL, dtype=np.float32)

    def normal(self, shape, scale: float) -> np.ndarray:
        shape = tuple(int(s) for s in shape)
        size = int(np.prod(shape))
        if size <= self.POOL // 4:
            a = self.rng.standard_normal(shape, dtype=np.float32)
            a *= np.float32(scale)
            return a
        a = np.empty(shape, np.float32)
        flat = a.reshape(-1)
        nchunks = -(-size // self.CHUNK)
        offsets = self.rng.integers(0, self.POOL - self.CHUNK, size=nchunks)
        signs = np.where(self.rng.random(nchunks) < 0.5, -scale, scale).astype(np.float32)
        for i in range(nchunks):
            lo = i * self.CHUNK
            hi = min(size, lo + self.CHUNK)
            o = offsets[i]
            np.multiply(self.pool[o:o + hi - lo], signs[i], out=flat[lo:hi])
        return a

    def uniform(self, shape, lo: float, hi: float) -> np.ndarray:
        return self.rng.uniform(lo, hi, size=shape).astype(np.float32)


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns (uint16), round to nearest even, done once
    outside any timing (torch's conversion when available: it is threaded)."""
    if torch is not None:
        return torch.from_numpy(a).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    out = np.empty(a.shape, np.uint16)
    src, dst = a.reshape(-1).view(np.uint32), out.reshape(-1)
    step = 1 << 22
    for i in range(0, src.size, step):
        b = src[i:i + step]
        dst[i:i + step] = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return out


def bf16_round(a: np.ndarray) -> np.ndarray:
    """float32 values rounded to bf16 (as float32), for the untimed checks."""
    return (to_bf16_bits(np.ascontiguousarray(a)).astype(np.uint32) << np.uint32(16)).view(np.float32)


def bf16_weights(layer_shapes: dict, W: dict) -> dict:
    return {n: (to_bf16_bits(W[n]) if dt == "bf16" else W[n]) for n, (_, dt) in layer_shapes.items()}


def moe_weights(spec: dict, wf: WeightFactory) -> dict:
    shapes = moe_mlir.weight_shapes(spec)
    W = {}
    for name, (shape, _) in shapes.items():
        if name == "gate_bias":
            W[name] = wf.normal(shape, 0.05)            # DeepSeek-V3 bias: small vs sigmoid scores
        else:
            W[name] = wf.normal(shape, 1.0 / math.sqrt(shape[-1]))   # fan_in = last dim
    return W


def peer_weights(spec: dict, wf: WeightFactory) -> dict:
    shapes = moe_mlir.weight_shapes(spec)
    D, h, dk = spec["d_model"], spec["heads"], spec["key_dim"]
    W = {}
    for name, (shape, _) in shapes.items():
        if name == "query":
            W[name] = wf.normal(shape, 1.0 / math.sqrt(D))
        elif name == "bn_mean":
            W[name] = wf.normal(shape, 0.1)
        elif name == "bn_var":
            W[name] = wf.uniform(shape, 0.5, 1.5)
        elif name == "bn_weight":
            W[name] = wf.uniform(shape, 0.8, 1.2)
        elif name == "bn_bias":
            W[name] = wf.normal(shape, 0.1)
        elif name in ("keys1", "keys2"):
            W[name] = wf.normal(shape, 1.0 / math.sqrt(dk // 2))
        elif name == "expert_in":
            W[name] = wf.normal(shape, 1.0 / math.sqrt(D))
        elif name == "expert_out":
            W[name] = wf.normal(shape, 1.0 / math.sqrt(h))
        else:
            raise KeyError(name)
    return W


def mh_weights(spec: dict, wf: WeightFactory) -> dict:
    return {name: wf.normal(shape, 1.0 / math.sqrt(shape[-1]))
            for name, (shape, _) in moe_mlir.weight_shapes(spec).items()}


def nbytes_of(W: dict) -> int:
    return sum(a.nbytes for a in W.values())


# --------------------------------------------------------------------------- #
# Timing
# --------------------------------------------------------------------------- #

class Measurement(dict):
    """status: ok | skipped | n/a | error; ms (median), samples_ms, n, single."""


def timed(fn, budget: float, reps: int, warmup: bool = True):
    """Warm-up call (timed), then up to ``reps`` timed calls within ``budget``
    seconds; the median is reported.  A warm-up call longer than the budget is
    itself the single sample.  Returns (Measurement, output of the first call)."""
    t0 = time.perf_counter()
    first_out = fn()
    first = time.perf_counter() - t0
    if not warmup or first > budget:
        return Measurement(status="ok", ms=first * 1e3, samples_ms=[first * 1e3], n=1,
                           single=True), first_out
    n = int(max(1, min(reps, budget // max(first, 1e-9))))
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return Measurement(status="ok", ms=float(np.median(samples)), samples_ms=samples, n=n,
                       single=False, first_ms=first * 1e3), first_out


class Predictor:
    """Predicts a call's time from the last measurement of the same column in
    the same case, scaled by useful FLOPs (an upper bound: work grows at most
    as fast as FLOPs with T), else from the slowest rate seen for that column
    on another case of the same kind, else from ``prior_gflops``.  With
    ``scale=False`` (the peers, whose small-T times are mostly overhead) the
    last time is scaled by the square root of the FLOPs ratio instead, and a
    peer's first size is never skipped."""

    def __init__(self):
        self.last = {}      # (case, col) -> (flops, seconds)
        self.rates = {}     # (kind, col) -> min GFLOP/s seen

    def predict(self, case, kind, col, flops, prior_gflops=None, scale=True):
        if (case, col) in self.last:
            f0, s0 = self.last[(case, col)]
            ratio = max(1.0, flops / max(f0, 1.0))
            return s0 * (ratio if scale else math.sqrt(ratio))
        if not scale:
            return None
        rate = self.rates.get((kind, col), prior_gflops)
        return None if rate is None else flops / (rate * 1e9)

    def record(self, case, kind, col, flops, seconds):
        self.last[(case, col)] = (flops, seconds)
        r = flops / max(seconds, 1e-12) / 1e9
        self.rates[(kind, col)] = min(self.rates.get((kind, col), r), r)


def rel_err(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    scale = float(np.max(np.abs(b))) or 1.0
    return float(np.max(np.abs(a - b))) / scale


# --------------------------------------------------------------------------- #
# Peers: NumPy loop, transformers blocks, torch PEER
# --------------------------------------------------------------------------- #

def _silu(z):
    with np.errstate(over="ignore"):
        return z / (np.float32(1.0) + np.exp(-z))


def _softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _sigmoid(z):
    with np.errstate(over="ignore"):
        return np.float32(1.0) / (np.float32(1.0) + np.exp(-z))


def numpy_route(x, W, r, E):
    """Top-k routing in float32 NumPy, as a CPU user would write it."""
    logits = x @ W["gate"].T                                   # [T, E]
    bias = W.get("gate_bias") if r["selection_bias"] else None
    if r["order"] == "score_then_topk":
        s = _softmax(logits) if r["score"] == "softmax" else _sigmoid(logits)
        key = s + bias if bias is not None else s
    else:
        s = None
        key = logits + bias if bias is not None else logits
    G = r["groups"]
    if G > 1:
        T = x.shape[0]
        per = key.reshape(T, G, E // G)
        if r["group_score"] == "top2_sum":
            top2 = -np.partition(-per, 1, axis=-1)[..., :2]
            gscore = top2.sum(-1)
        else:
            gscore = per.max(-1)
        kept = np.argsort(-gscore, axis=1, kind="stable")[:, :r["topk_groups"]]
        mask = np.ones((T, G), bool)
        np.put_along_axis(mask, kept, False, axis=1)
        key = np.where(np.repeat(mask, E // G, axis=1), -np.inf, key)
    k = r["top_k"]
    ids = np.argsort(-key, axis=1, kind="stable")[:, :k]
    if s is not None:
        w = np.take_along_axis(s, ids, 1)
    elif r["score"] == "softmax":
        w = _softmax(np.take_along_axis(logits, ids, 1))
    else:
        w = _sigmoid(np.take_along_axis(logits, ids, 1))
    if r["normalize"]:
        w = w / w.sum(1, keepdims=True)
    return ids, (w * np.float32(r["scaling"])).astype(np.float32)


def numpy_moe(spec, x, W, bf16=False):
    """Per-expert loop: gather rows, x@w1.T, act, * x@w3.T, @w2.T, weighted index-add.
    With ``bf16`` (checks only, untimed) every weight matrix is first rounded to
    bf16, expert by expert, so the result is what a bf16-weight layer computes."""
    if bf16:
        rnd = bf16_round
        W = {n: (a if n == "gate_bias" or n in ("w1", "w2", "w3") else rnd(a)) for n, a in W.items()}
        W = _LazyRound(W) if "w1" in W else W
    E, r = spec["experts"], spec["router"]
    gated = spec["activation"] in ("swiglu", "geglu")
    assert spec["activation"] in ("swiglu", "silu"), "the NumPy loop implements silu/swiglu"
    ids, w = numpy_route(x, W, r, E)
    T, k = ids.shape
    if spec["shared_experts"]["hidden"]:
        hs = _silu(x @ W["shared_w1"].T)
        if gated:
            hs *= x @ W["shared_w3"].T
        out = hs @ W["shared_w2"].T
    else:
        out = np.zeros_like(x)
    flat = ids.reshape(-1)
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=E)
    tok = order // k
    wts = w.reshape(-1)[order]
    start = 0
    for e in np.nonzero(counts)[0]:
        end = start + counts[e]
        rows = tok[start:end]
        xe = x[rows]
        h = _silu(xe @ W["w1"][e].T)
        if gated:
            h *= xe @ W["w3"][e].T
        out[rows] += (h @ W["w2"][e].T) * wts[start:end, None]   # a token visits e once
        start = end
    return out


class _LazyRound(dict):
    """Expert stacks whose [e] slices come back rounded to bf16 (checks only)."""

    class _Stack:
        def __init__(self, a):
            self.a = a

        def __getitem__(self, e):
            return bf16_round(self.a[e])

    def __getitem__(self, name):
        a = dict.__getitem__(self, name)
        return self._Stack(a) if name in ("w1", "w2", "w3") else a


class TorchPEER(torch.nn.Module if torch is not None else object):
    """A straightforward eager PEER (He, 2024): query projection, inference
    BatchNorm, product-key top-k over two sub-key tables, softmax, embedding
    gathers of the single-neuron experts, activation, weighted sum."""

    def __init__(self, spec, W, bf16=False):
        super().__init__()
        self.round = bf16      # checks only: bf16-rounded weights, expert rows rounded on gather
        if bf16:
            W = {n: (bf16_round(a) if n in ("query", "keys1", "keys2") else a) for n, a in W.items()}
        self.h, self.k, self.dk = spec["heads"], spec["top_k"], spec["key_dim"]
        self.n = math.isqrt(spec["experts"])
        self.act = {"gelu": TF.gelu, "relu": TF.relu, "silu": TF.silu}[spec["activation"]]
        t = torch.from_numpy
        self.query = t(W["query"])
        self.bn = None
        if spec["query_batchnorm"]:
            self.bn = torch.nn.BatchNorm1d(self.h * self.dk, eps=1e-5)
            self.bn.running_mean.copy_(t(W["bn_mean"]))
            self.bn.running_var.copy_(t(W["bn_var"]))
            self.bn.weight.data.copy_(t(W["bn_weight"]))
            self.bn.bias.data.copy_(t(W["bn_bias"]))
            self.bn.eval()
        self.keys1, self.keys2 = t(W["keys1"]), t(W["keys2"])
        self.u, self.v = t(W["expert_in"]), t(W["expert_out"])     # shared with NumPy

    def forward(self, x):
        T = x.shape[0]
        h, k, half, n = self.h, self.k, self.dk // 2, self.n
        q = TF.linear(x, self.query)
        if self.bn is not None:
            q = self.bn(q)
        q = q.view(T, h, 2, half)
        s1 = torch.einsum("thd,nd->thn", q[:, :, 0], self.keys1)
        s2 = torch.einsum("thd,nd->thn", q[:, :, 1], self.keys2)
        kk = min(k, n)
        v1, i1 = s1.topk(kk, dim=-1)
        v2, i2 = s2.topk(kk, dim=-1)
        cand = (v1[..., :, None] + v2[..., None, :]).view(T, h, kk * kk)
        cid = (i1[..., :, None] * n + i2[..., None, :]).view(T, h, kk * kk)
        scores, pos = cand.topk(k, dim=-1)
        ids = cid.gather(-1, pos)                                   # [T, h, k]
        g = scores.softmax(-1)
        u = TF.embedding(ids, self.u)                              # [T, h, k, D]
        if self.round:
            u = u.to(torch.bfloat16).float()
        a = self.act(torch.einsum("thkd,td->thk", u, x))
        v = TF.embedding(ids, self.v)
        if self.round:
            v = v.to(torch.bfloat16).float()
        return torch.einsum("thk,thkd->td", a * g, v)


# --------------------------------------------------------------------------- #
# Work accounting (useful MACs, bytes of weights touched)
# --------------------------------------------------------------------------- #

def moe_work(spec, T, ids=None, counts=None, wbytes=4):
    """(useful MACs, weight bytes touched) of one moe call.  ids: [T, k] routing
    (distinct experts = those touched); counts: kept assignments per expert."""
    D, E, F = spec["d_model"], spec["experts"], spec["expert_hidden"]
    k = spec["router"]["top_k"]
    mats = 3 if spec["activation"] in ("swiglu", "geglu") else 2
    Fs = spec.get("shared_experts", {}).get("hidden", 0) if spec["kind"] == "moe" else 0
    if counts is not None:
        assignments, distinct = int(np.sum(counts)), int(np.count_nonzero(counts))
    elif ids is not None:
        assignments, distinct = ids.size, int(np.unique(ids).size)
    else:                                   # before any routing: all choices distinct
        assignments, distinct = T * k, min(E, T * k)
    macs = T * E * D + assignments * mats * D * F + T * mats * D * Fs
    bytes_ = (E * D + distinct * mats * F * D + mats * D * Fs) * wbytes
    if spec["router"]["selection_bias"]:
        bytes_ += E * 4
    return macs, bytes_


def mh_work(spec, T, counts=None, wbytes=4):
    D, h = spec["d_model"], spec["heads"]
    Dh, E, F, k = D // h, spec["experts"], spec["expert_hidden"], spec["router"]["top_k"]
    mats = 3 if spec["activation"] in ("swiglu", "geglu") else 2
    if counts is not None:
        assignments, distinct = int(np.sum(counts)), int(np.count_nonzero(counts))
    else:
        assignments, distinct = T * h * k, min(E, T * h * k)
    macs = 2 * T * D * D + T * h * E * Dh + assignments * mats * Dh * F
    bytes_ = (2 * D * D + E * Dh + distinct * mats * F * Dh) * wbytes
    return macs, bytes_


def peer_work(spec, T, ids=None, wbytes=4):
    D, h, k, dk = spec["d_model"], spec["heads"], spec["top_k"], spec["key_dim"]
    n = math.isqrt(spec["experts"])
    distinct = int(np.unique(ids).size) if ids is not None else min(spec["experts"], T * h * k)
    kk = min(k, n)
    macs = T * D * h * dk + T * h * n * dk + T * h * kk * kk + T * h * k * 2 * D
    bytes_ = (h * dk * D + 2 * n * (dk // 2) + distinct * 2 * D) * wbytes
    if spec["query_batchnorm"]:
        bytes_ += 4 * h * dk * 4
    return macs, bytes_


# --------------------------------------------------------------------------- #
# The run
# --------------------------------------------------------------------------- #

class Bench:
    def __init__(self, args, settings, machine, limits):
        self.args, self.S = args, settings
        self.machine, self.limits = machine, limits
        self.rows = []          # one dict per (case, size)
        self.checks = []        # correctness checks
        self.notes = []
        self.pred = Predictor()
        self.compile_s = {}
        self.bind_s = {}
        self.compile_errors = {}
        params = inspect.signature(moe_mlir.compile).parameters
        self.has_pipeline_kw = "pipeline" in params
        default = params["pipeline"].default if self.has_pipeline_kw else None
        self.ours_mode = (f"moe_mlir.compile(spec, pipeline={args.pipeline!r})" if args.pipeline else
                          "moe_mlir.compile(spec)" + (f" (default pipeline {default!r})" if default else ""))
        self.ours_mode += ", run as layer.bind(**W)(x) (expert weights packed once, not timed)"
        self.ref_mode = "pipeline='reference'" if self.has_pipeline_kw else "default pipeline (fallback)"
        if not self.has_pipeline_kw:
            self.notes.append("moe_mlir.compile has no `pipeline` keyword yet: the reference-lowering "
                              "column used the default pipeline (marked *); today that IS the "
                              "reference lowering, so it equals the ours-f32 column.")

    # ------------------------------------------------------------ helpers
    def compile(self, spec, reference=False):
        """The compiled layer, or None (with a note) when compiling fails."""
        key = spec["name"] + (" (reference)" if reference else "")
        t0 = time.perf_counter()
        try:
            if reference and self.has_pipeline_kw:
                try:
                    layer = moe_mlir.compile(spec, pipeline="reference")
                except TypeError as exc:
                    self.has_pipeline_kw = False
                    self.ref_mode = "default pipeline (fallback)"
                    self.notes.append(f"compile(pipeline='reference') failed ({exc}); the reference-"
                                      "lowering column used the default pipeline (marked *).")
                    layer = moe_mlir.compile(spec)
            elif self.args.pipeline:
                layer = moe_mlir.compile(spec, pipeline=self.args.pipeline)
            else:
                layer = moe_mlir.compile(spec)
        except Exception as exc:  # noqa: BLE001
            lines = str(exc).strip().splitlines() or [""]
            first = re.sub(r" -o \S+", "", lines[0])
            msg = f"compiling {key} failed: {type(exc).__name__}: {first[:240]}"
            if any("Stack dump" in ln for ln in lines):
                frames = [ln for ln in lines if "runOnOperation" in ln or "Pass" in ln]
                where = frames[0].split(")", 1)[-1].strip()[:120] if frames else ""
                msg += f" (moe-compile crashed{': ' + where if where else ''})"
            elif len(lines) > 1:
                msg += " " + " ".join(ln.strip() for ln in lines[1:3])[:240]
            self.notes.append(msg)
            log(f"{stamp()} {msg}")
            self.compile_errors[key] = msg
            return None
        self.compile_s[key] = time.perf_counter() - t0
        log(f"{stamp()} compiled {key} in {self.compile_s[key]:.1f} s")
        return layer

    def missing(self, layer):
        return "compile failed" if layer is None else None

    def bind(self, layer, W, key):
        """``layer.bind(**W)`` (None when the layer failed to compile): the
        weights checked, converted and, where the layer packs them, packed
        once into the kernels' layout, as an application would run it. The
        one-time cost is logged and kept in the JSON (``bind_s``)."""
        if layer is None:
            return None
        t0 = time.perf_counter()
        bound = layer.bind(**W)
        self.bind_s[key] = time.perf_counter() - t0
        packed = " (expert weights packed)" if getattr(layer, "packs_weights", False) else ""
        log(f"{stamp()} bound {key}{packed} in {self.bind_s[key]:.1f} s")
        return bound

    def row(self, case, kind, title, T, N=None):
        r = dict(case=case, kind=kind, title=title, T=T, cols={})
        if N is not None:
            r["N"] = N
        self.rows.append(r)
        return r

    def run_col(self, row, col, fn, flops, *, single=False, prior_gflops=None, cap=None,
                unavailable=None):
        """Measure fn() for one cell; returns its first output (or None)."""
        case, kind = row["case"], row["kind"]
        label = f"{case:<12} {('N=%d² ' % row['N']) if 'N' in row else ''}T={row['T']:<4} {COLUMNS[col]:<26}"
        if unavailable:
            status = "error" if unavailable.startswith("compile") else "n/a"
            row["cols"][col] = Measurement(status=status, note=unavailable)
            log(f"{stamp()} {label} {status} ({unavailable})")
            return None
        cap = self.S["ref_cap"] if single else (cap or self.S["cap"])
        est = self.pred.predict(case, kind, col, flops, prior_gflops, scale=col not in PEERS)
        if est is not None and est > cap:
            row["cols"][col] = Measurement(status="skipped", est_s=est,
                                           note=f"est. {est:.0f} s > cap {cap:.0f} s")
            log(f"{stamp()} {label} skipped (est. {est:.1f} s > {cap:.0f} s)")
            return None
        try:
            gc.collect()
            m, out = timed(fn, self.S["budget"], self.S["reps"], warmup=not single)
        except Exception as exc:  # noqa: BLE001
            row["cols"][col] = Measurement(status="error", note=f"{type(exc).__name__}: {exc}")
            log(f"{stamp()} {label} ERROR {type(exc).__name__}: {exc}")
            if self.args.verbose:
                traceback.print_exc()
            return None
        self.pred.record(case, kind, col, flops, m["ms"] / 1e3)
        if single and col == "ref_lowering" and not self.has_pipeline_kw:
            m["note"] = "default pipeline (no pipeline keyword)"
        row["cols"][col] = m
        how = "single run" if m["single"] else f"median of {m['n']}"
        log(f"{stamp()} {label} {m['ms']:10.2f} ms  ({how})")
        return out

    def check(self, case, what, a, b, tol, T=None, N=None):
        e = rel_err(a, b)
        ok = e <= tol
        self.checks.append(dict(case=case, T=T, N=N, what=what, rel_err=e, tol=tol, ok=ok))
        flag = "ok" if ok else "MISMATCH"
        where = (f"N={N}² " if N else "") + (f"T={T}" if T is not None else "")
        log(f"{stamp()} check {case:<12} {where:<12} {what:<44} max|diff|/max|ref| = {e:.2e}  {flag}")
        return ok

    def derive(self, row, macs, bytes_f32, bytes_bf16):
        row["useful_macs"] = macs
        row["weight_bytes"] = {"ours_f32": bytes_f32, "ours_bf16": bytes_bf16}
        bw, peak = self.limits["read_bw_gbs"], self.limits["sgemm_gflops"]
        peers = [row["cols"][c]["ms"] for c in PEERS
                 if c in row["cols"] and row["cols"][c]["status"] == "ok"
                 and not (row["kind"] == "mh_moe")]
        best = min(peers) if peers else None
        if row["kind"] == "mh_moe" and "numpy_reference" in row["cols"] \
                and row["cols"]["numpy_reference"]["status"] == "ok":
            best = row["cols"]["numpy_reference"]["ms"]
        row["best_peer_ms"] = best
        row["derived"] = {}
        for col, nb in (("ours_f32", bytes_f32), ("ours_bf16", bytes_bf16)):
            m = row["cols"].get(col)
            if not m or m["status"] != "ok":
                continue
            s = m["ms"] / 1e3
            d = dict(gbs=nb / s / 1e9, gflops=2 * macs / s / 1e9)
            d["pct_bw"] = 100 * d["gbs"] / bw
            d["pct_sgemm"] = 100 * d["gflops"] / peak
            if best is not None:
                d["speedup_vs_best_peer"] = best / m["ms"]
            row["derived"][col] = d

    # ------------------------------------------------------------ moe cases
    def moe_case(self, case):
        cfg = MOE_CASES[case]
        spec = moe_mlir.load_spec(dict(cfg["spec"], weight_dtype="f32"))
        spec_bf = moe_mlir.load_spec(dict(cfg["spec"], name=cfg["spec"]["name"] + "_bf16",
                                          weight_dtype="bf16"))
        Ts = self.S["moe_T"]
        f32_bytes = sum(int(np.prod(s)) * 4 for s, _ in moe_mlir.weight_shapes(spec).values())
        E, F, D = spec["experts"], spec["expert_hidden"], spec["d_model"]
        hf_bytes = E * 2 * F * D * 4
        bf_bytes = f32_bytes // 2
        avail = meminfo("MemAvailable")
        log(f"\n== {cfg['title']} ({case}): D={D} F={F} E={E} k={spec['router']['top_k']}, "
            f"f32 weights {f32_bytes / GIB:.2f} GiB, MemAvailable {avail / GIB:.1f} GiB")
        do_hf, do_bf = transformers is not None, True
        margin = 2 * GIB
        if avail and f32_bytes + margin > avail:
            self.notes.append(f"{case}: not enough memory for the f32 weights "
                              f"({f32_bytes / GIB:.1f} GiB, {avail / GIB:.1f} GiB available): skipped")
            log("   skipped: not enough memory")
            return
        if avail and f32_bytes + max(hf_bytes, bf_bytes) + margin > avail:
            do_hf = False
            self.notes.append(f"{case}: too little memory for transformers' fused gate_up copy "
                              f"({hf_bytes / GIB:.1f} GiB more): transformers columns not measured")
        t0 = time.perf_counter()
        wf = WeightFactory(seed=1234 + len(case))
        W = moe_weights(spec, wf)
        xs = {T: np.random.default_rng(T).standard_normal((T, D), dtype=np.float32) for T in Ts}
        log(f"{stamp()} weights generated in {time.perf_counter() - t0:.1f} s")
        rows = {T: self.row(case, "moe", cfg["title"], T) for T in Ts}
        layer = self.compile(spec)
        ref_layer = self.compile(spec, reference=True)
        layer_bf = self.compile(spec_bf)
        base = {T: moe_work(spec, T) for T in Ts}            # before routing is known
        ours_out, numpy_out, routing = {}, {}, {}

        bound = self.bind(layer, W, spec["name"])
        for T in Ts:                                          # ours, f32
            x = xs[T]
            out = self.run_col(rows[T], "ours_f32", lambda: bound.forward(x), 2 * base[T][0],
                               unavailable=self.missing(layer))
            if out is not None:
                ours_out[T] = out["out"]
                routing[T] = out["topk_ids"]
        del bound                                             # its packed copy of the weights
        gc.collect()
        for T in Ts:                                          # NumPy loop
            x = xs[T]
            out = self.run_col(rows[T], "numpy_loop", lambda: numpy_moe(spec, x, W), 2 * base[T][0])
            if out is not None:
                numpy_out[T] = out
                if T in ours_out:
                    self.check(case, "NumPy loop vs ours f32", out, ours_out[T], TOL, T=T)
                if T not in routing:
                    routing[T] = numpy_route(x, W, spec["router"], E)[0]
        for T in Ts:                                          # reference lowering, once
            x = xs[T]
            out = self.run_col(rows[T], "ref_lowering", lambda: ref_layer(x, **W), 2 * base[T][0],
                               unavailable=self.missing(ref_layer),
                               single=True, prior_gflops=0.5)
            if out is not None and T in ours_out:
                self.check(case, "reference lowering vs ours f32", out, ours_out[T], TOL, T=T)
        del ref_layer
        if do_bf:                                             # ours, bf16 (bits made once)
            t0 = time.perf_counter()
            Wb = bf16_weights(moe_mlir.weight_shapes(spec_bf), W)
            log(f"{stamp()} bf16 weights made in {time.perf_counter() - t0:.1f} s")
            checked = False
            bound_bf = self.bind(layer_bf, Wb, spec_bf["name"])
            for T in Ts:
                x = xs[T]
                out = self.run_col(rows[T], "ours_bf16", lambda: bound_bf(x), 2 * base[T][0],
                               unavailable=self.missing(layer_bf))
                if out is not None and not checked:     # once: rounding experts on the fly is slow
                    checked = True
                    self.check(case, "ours bf16 vs NumPy loop on bf16-rounded weights", out,
                               numpy_moe(spec, x, W, bf16=True), TOL, T=T)
            del Wb, bound_bf
            gc.collect()
        hf_note = None if do_hf else (f"transformers unavailable ({HF_ERROR})" if transformers is None
                                      else "not enough memory")
        block = None
        if do_hf:
            try:
                t0 = time.perf_counter()
                block, hf_cfg = build_hf_block(case, spec, W)
                log(f"{stamp()} transformers {type(block).__name__} built in {time.perf_counter() - t0:.1f} s")
            except Exception as exc:  # noqa: BLE001
                hf_note = f"could not build the transformers block: {type(exc).__name__}: {exc}"
                self.notes.append(f"{case}: {hf_note}")
                log(f"   {hf_note}")
                if self.args.verbose:
                    traceback.print_exc()
        for impl, col in (("eager", "hf_eager"), ("grouped_mm", "hf_grouped_mm")):
            if block is not None:
                hf_cfg._experts_implementation = impl
            checked = False
            for T in Ts:
                if block is None:
                    self.run_col(rows[T], col, None, 0, unavailable=hf_note)
                    continue
                xt = torch.from_numpy(xs[T]).view(1, T, D)

                def call(xt=xt):
                    with torch.no_grad():
                        return block(xt)
                out = self.run_col(rows[T], col, call, 2 * base[T][0])
                if out is None:
                    continue
                out = out.view(T, D).numpy()
                if T in ours_out and not checked:    # once per case and implementation
                    checked = True
                    self.check(case, f"transformers {impl} vs ours f32", out, ours_out[T], TOL, T=T)
                elif T in numpy_out and T not in ours_out and not checked:
                    checked = True
                    self.check(case, f"transformers {impl} vs NumPy loop", out, numpy_out[T], TOL, T=T)
        del block
        gc.collect()
        for T in Ts:
            macs, b32 = moe_work(spec, T, ids=routing.get(T))
            _, b16 = moe_work(spec, T, ids=routing.get(T), wbytes=2)
            self.derive(rows[T], macs, b32, b16)
        del W
        gc.collect()

    # ------------------------------------------------------------ PEER
    def peer_case(self):
        log(f"\n== PEER: D=1024, heads 8, top_k 16, key_dim 128, query BatchNorm, gelu")
        for n in self.S["peer_N"]:
            N = n * n
            spec = moe_mlir.load_spec(dict(PEER_BASE, name=f"bench_peer_{n}", experts=N,
                                           weight_dtype="f32"))
            spec_bf = moe_mlir.load_spec(dict(spec, name=f"bench_peer_{n}_bf16", weight_dtype="bf16"))
            need = 2 * N * 1024 * 4 * 1.5 + GIB
            avail = meminfo("MemAvailable")
            if avail and need > avail:
                self.notes.append(f"PEER N={n}²: not enough memory ({need / GIB:.1f} GiB needed)")
                log(f"   N={n}²: skipped, not enough memory")
                continue
            t0 = time.perf_counter()
            W = peer_weights(spec, WeightFactory(seed=77 + n))
            log(f"{stamp()} N={n}²: weights ({nbytes_of(W) / GIB:.2f} GiB f32) generated in "
                f"{time.perf_counter() - t0:.1f} s")
            layer, layer_bf = self.compile(spec), self.compile(spec_bf)
            ref_layer = self.compile(spec, reference=True)
            tp = TorchPEER(spec, W) if torch is not None else None
            case = f"peer_{n}"
            Ts = self.S["peer_T"]
            rows = {T: self.row(case, "peer", "PEER", T, N=n) for T in Ts}
            xs = {T: np.random.default_rng(T + 5).standard_normal((T, 1024), dtype=np.float32) for T in Ts}
            base = {T: peer_work(spec, T) for T in Ts}
            ours_out, ids = {}, {}
            bound = self.bind(layer, W, f"{spec['name']} N={n}²")
            for T in Ts:
                x = xs[T]
                out = self.run_col(rows[T], "ours_f32", lambda: bound.forward(x), 2 * base[T][0],
                               unavailable=self.missing(layer))
                if out is not None:
                    ours_out[T], ids[T] = out["out"], out["topk_ids"]
            for T in Ts:
                x = xs[T]
                if tp is None:
                    self.run_col(rows[T], "torch_peer", None, 0, unavailable=f"torch unavailable ({TORCH_ERROR})")
                    continue
                xt = torch.from_numpy(x)

                def call(xt=xt):
                    with torch.no_grad():
                        return tp(xt)
                out = self.run_col(rows[T], "torch_peer", call, 2 * base[T][0])
                if out is not None and T in ours_out:
                    self.check("peer", "torch PEER vs ours f32", out.numpy(), ours_out[T], TOL, T=T, N=n)
            for T in Ts:
                x = xs[T]
                out = self.run_col(rows[T], "ref_lowering", lambda: ref_layer(x, **W), 2 * base[T][0],
                               unavailable=self.missing(ref_layer),
                                   single=True, prior_gflops=0.5)
                if out is not None and T in ours_out:
                    self.check("peer", "reference lowering vs ours f32", out, ours_out[T], TOL, T=T, N=n)
            t0 = time.perf_counter()
            Wb = bf16_weights(moe_mlir.weight_shapes(spec_bf), W)
            log(f"{stamp()} N={n}²: bf16 weights made in {time.perf_counter() - t0:.1f} s")
            bound_bf = self.bind(layer_bf, Wb, f"{spec_bf['name']} N={n}²")
            for T in Ts:
                x = xs[T]
                out = self.run_col(rows[T], "ours_bf16", lambda: bound_bf(x), 2 * base[T][0],
                               unavailable=self.missing(layer_bf))
                if out is not None and torch is not None:
                    with torch.no_grad():
                        want = TorchPEER(spec, W, bf16=True)(torch.from_numpy(x)).numpy()
                    self.check("peer", "ours bf16 vs torch PEER on bf16-rounded weights", out, want,
                               TOL, T=T, N=n)
                elif out is not None and n <= 256:     # the float64 oracle: fine for small tables
                    want = moe_mlir.reference.forward(spec_bf, x, **Wb)["out"]
                    self.check("peer", "ours bf16 vs NumPy reference with bf16 weights", out, want,
                               TOL, T=T, N=n)
            for T in Ts:
                macs, b32 = peer_work(spec, T, ids=ids.get(T))
                _, b16 = peer_work(spec, T, ids=ids.get(T), wbytes=2)
                self.derive(rows[T], macs, b32, b16)
            del W, Wb, tp, ref_layer
            gc.collect()

    # ------------------------------------------------------------ MH-MoE
    def mh_case(self):
        spec = moe_mlir.load_spec(str(REPO / "examples" / "mh_moe.yaml"))
        spec = moe_mlir.load_spec(dict(spec, weight_dtype="f32"))
        spec_bf = moe_mlir.load_spec(dict(spec, name=spec["name"] + "_bf16", weight_dtype="bf16"))
        log(f"\n== MH-MoE (examples/mh_moe.yaml): D={spec['d_model']} heads={spec['heads']} "
            f"E={spec['experts']} F={spec['expert_hidden']} k={spec['router']['top_k']}, capacity "
            f"{spec['capacity']['factor']} {spec['capacity']['overflow']}")
        W = mh_weights(spec, WeightFactory(seed=99))
        layer, layer_bf = self.compile(spec), self.compile(spec_bf)
        ref_layer = self.compile(spec, reference=True)
        Ts = self.S["mh_T"]
        rows = {T: self.row("mh_moe", "mh_moe", "MH-MoE", T) for T in Ts}
        xs = {T: np.random.default_rng(T + 9).standard_normal((T, spec["d_model"]), dtype=np.float32)
              for T in Ts}
        base = {T: mh_work(spec, T) for T in Ts}
        ours_out, counts = {}, {}
        bound = self.bind(layer, W, spec["name"])
        for T in Ts:
            x = xs[T]
            out = self.run_col(rows[T], "ours_f32", lambda: bound.forward(x), 2 * base[T][0],
                               unavailable=self.missing(layer))
            if out is not None:
                ours_out[T], counts[T] = out["out"], out["expert_counts"]
        for T in Ts:
            x = xs[T]
            out = self.run_col(rows[T], "numpy_reference",
                               lambda: moe_mlir.reference.forward(spec, x, **W)["out"], 2 * base[T][0])
            if out is not None and T in ours_out:
                self.check("mh_moe", "NumPy reference vs ours f32", out, ours_out[T], TOL, T=T)
        for T in Ts:
            x = xs[T]
            out = self.run_col(rows[T], "ref_lowering", lambda: ref_layer(x, **W), 2 * base[T][0],
                               unavailable=self.missing(ref_layer),
                               single=True, prior_gflops=0.5)
            if out is not None and T in ours_out:
                self.check("mh_moe", "reference lowering vs ours f32", out, ours_out[T], TOL, T=T)
        Wb = bf16_weights(moe_mlir.weight_shapes(spec_bf), W)
        bound_bf = self.bind(layer_bf, Wb, spec_bf["name"])
        for T in Ts:
            x = xs[T]
            out = self.run_col(rows[T], "ours_bf16", lambda: bound_bf(x), 2 * base[T][0],
                               unavailable=self.missing(layer_bf))
            if out is not None:
                self.check("mh_moe", "ours bf16 vs NumPy reference with bf16 weights", out,
                           moe_mlir.reference.forward(spec_bf, x, **Wb)["out"], TOL, T=T)
        for T in Ts:
            macs, b32 = mh_work(spec, T, counts=counts.get(T))
            _, b16 = mh_work(spec, T, counts=counts.get(T), wbytes=2)
            self.derive(rows[T], macs, b32, b16)


# --------------------------------------------------------------------------- #
# Report
# --------------------------------------------------------------------------- #

def fmt_ms(m, star=False):
    if m is None:
        return "—"
    st = m["status"]
    if st == "ok":
        v = m["ms"]
        s = f"{v:.3g}" if v < 100 else f"{v:.0f}"
        if m.get("single"):
            s += "¹"
        return s + ("*" if star else "")
    if st == "skipped":
        return "skipped"
    if st == "n/a":
        return "n/a"
    return "error"


def fmt_rate(d, key, pct):
    if d is None:
        return "—"
    return f"{d[key]:.3g} ({d[pct]:.0f}%)"


def fmt_x(d):
    if d is None or "speedup_vs_best_peer" not in d:
        return "—"
    return f"{d['speedup_vs_best_peer']:.3g}×"


def geomean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def markdown(bench: Bench, elapsed: float) -> str:
    M, L = bench.machine, bench.limits
    star = not bench.has_pipeline_kw
    out = ["# MoE-MLIR CPU benchmark", ""]
    out.append(f"Machine: {M['cpu_model']}, nproc {M['nproc']}, {M['mem_total_gib']} GiB, ISA "
               f"{' '.join(M['isa'])}; numpy {M['numpy']}, torch {M['torch'] or 'n/a'}, transformers "
               f"{M['transformers'] or 'n/a'}; repo {M['repo_commit']}; {M['date']}; run took "
               f"{elapsed / 60:.1f} min{' (--quick)' if bench.args.quick else ''}"
               + (f"; load average {M['loadavg_start'][0]:.1f} at the start, {M['loadavg_end'][0]:.1f} "
                  f"at the end" if M.get("loadavg_start") and M.get("loadavg_end") else "") + ".")
    out.append(f"Limits measured in this run: read bandwidth **{L['read_bw_gbs']:.1f} GB/s** "
               f"({L['read_bw_method']}, {L['read_bw_bytes'] / GIB:.1f} GiB array, best of several), "
               f"SGEMM **{L['sgemm_gflops']:.0f} GFLOP/s** ({L['sgemm_method']}, {L['sgemm_size']}³ f32).")
    out.append("")
    out.append("Times are ms, median of the repetitions after a warm-up (¹ a single run). "
               "GB/s = bytes of the weights the call touched (router + distinct routed experts + "
               "shared expert) / time, GFLOP/s = 2·useful MACs / time, with % of the measured limits "
               "(a working set that stays in cache across the repetitions, e.g. MH-MoE, can exceed 100% "
               "of the DRAM bandwidth). "
               "Speedup = best peer time / our time (> 1: ours faster). "
               f"Ours: {bench.ours_mode}. Reference lowering: {bench.ref_mode}{' (*)' if star else ''}.")
    out.append("")

    def table(kind, title, peer_cols, size_label):
        rows = [r for r in bench.rows if r["kind"] == kind]
        if not rows:
            return
        out.append(f"## {title}")
        out.append("")
        head = (["case", size_label] + [COLUMNS[c] + " ms" for c in ("ours_f32", "ours_bf16", "ref_lowering")]
                + [COLUMNS[c] + " ms" for c in peer_cols]
                + ["f32 GB/s (%BW)", "f32 GFLOP/s (%SGEMM)", "bf16 GB/s (%BW)", "bf16 GFLOP/s (%SGEMM)",
                   "f32 speedup", "bf16 speedup"])
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for r in rows:
            c, d = r["cols"], r.get("derived", {})
            size = f"N={r['N']}², T={r['T']}" if "N" in r else str(r["T"])
            cells = [r["title"] if kind != "peer" else "PEER", size,
                     fmt_ms(c.get("ours_f32")), fmt_ms(c.get("ours_bf16")),
                     fmt_ms(c.get("ref_lowering"), star)]
            cells += [fmt_ms(c.get(p)) for p in peer_cols]
            cells += [fmt_rate(d.get("ours_f32"), "gbs", "pct_bw"),
                      fmt_rate(d.get("ours_f32"), "gflops", "pct_sgemm"),
                      fmt_rate(d.get("ours_bf16"), "gbs", "pct_bw"),
                      fmt_rate(d.get("ours_bf16"), "gflops", "pct_sgemm"),
                      fmt_x(d.get("ours_f32")), fmt_x(d.get("ours_bf16"))]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")

    table("moe", "Sparse MoE (peers: transformers blocks, NumPy per-expert loop; all f32)",
          ("hf_eager", "hf_grouped_mm", "numpy_loop"), "T")
    table("peer", "PEER (peer: eager torch PEER, f32)", ("torch_peer",), "size")
    table("mh_moe", "MH-MoE (examples/mh_moe.yaml; peer: the float64 NumPy reference)",
          ("numpy_reference",), "T")

    out.append("## Summary")
    out.append("")
    for col in ("ours_f32", "ours_bf16"):
        vals = [r["derived"][col]["speedup_vs_best_peer"] for r in bench.rows
                if r["kind"] != "mh_moe" and col in r.get("derived", {})
                and "speedup_vs_best_peer" in r["derived"][col]]
        g = geomean(vals)
        out.append(f"- Geometric mean speedup of {COLUMNS[col]} vs the best peer over {len(vals)} rows "
                   f"(MoE and PEER; MH-MoE left out, its peer being the float64 oracle): "
                   + (f"**{g:.3g}×**" if g else "n/a"))
    bad = [c for c in bench.checks if not c["ok"]]
    worst = {}
    for c in bench.checks:
        key = (c["case"], c["what"])
        worst[key] = max(worst.get(key, 0.0), c["rel_err"])
    out.append(f"- Correctness checks: {len(bench.checks) - len(bad)} of {len(bench.checks)} within "
               "tolerance (max|diff| / max|reference output|)" + (": **MISMATCHES below**" if bad else "."))
    for (case, what), e in sorted(worst.items()):
        tol = next(c["tol"] for c in bench.checks if c["case"] == case and c["what"] == what)
        out.append(f"  - {case}: {what}: worst {e:.2e} (tol {tol:g})")
    for c in bad:
        out.append(f"  - **MISMATCH** {c['case']} T={c['T']}{' N=%d²' % c['N'] if c['N'] else ''}: "
                   f"{c['what']}: {c['rel_err']:.2e} > {c['tol']:g}")
    skipped = sorted({(r["case"], COLUMNS[k], m.get("note", "")) for r in bench.rows
                      for k, m in r["cols"].items() if m["status"] in ("skipped", "error")})
    if skipped:
        out.append("- Skipped or failed cells: " + "; ".join(
            f"{case} {col} ({note})" for case, col, note in skipped[:12])
            + (f"; and {len(skipped) - 12} more (see cpu.json)" if len(skipped) > 12 else ""))
    for n in bench.notes:
        out.append(f"- {n}")
    out.append("")
    return "\n".join(out)


def chart(bench: Bench, path: Path) -> str | None:
    if plt is None:
        return f"matplotlib unavailable ({MPL_ERROR}): no chart"
    L = bench.limits
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))

    def bars(ax, rows, key, limit, limit_label, ylabel, title):
        labels = [f"{r['case'].replace('deepseek_v3', 'dsv3')}\nT={r['T']}" for r in rows]
        xs = np.arange(len(rows))
        for i, (col, color) in enumerate((("ours_f32", "tab:blue"), ("ours_bf16", "tab:orange"))):
            vals = [r.get("derived", {}).get(col, {}).get(key, 0.0) for r in rows]
            ax.bar(xs + (i - 0.5) * 0.38, vals, 0.38, label=COLUMNS[col], color=color)
        if limit:
            ax.axhline(limit, color="red", ls="--", label=limit_label)
        ax.set_xticks(xs, labels, fontsize=7)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=8)

    decode = [r for r in bench.rows if r["kind"] == "moe" and r["T"] <= 16]
    prefill = [r for r in bench.rows if r["kind"] == "moe" and r["T"] >= 128]
    bars(axes[0], decode, "gbs", L["read_bw_gbs"], f"read bandwidth {L['read_bw_gbs']:.1f} GB/s",
         "GB/s (weights touched / time)", "Decode (T ≤ 16): achieved bandwidth")
    bars(axes[1], prefill, "gflops", L["sgemm_gflops"], f"SGEMM {L['sgemm_gflops']:.0f} GFLOP/s",
         "GFLOP/s (2·useful MACs / time)", "Prefill (T ≥ 128): achieved compute")
    ax = axes[2]
    rows = [r for r in bench.rows if r.get("best_peer_ms") and r["kind"] != "mh_moe"]
    labels = [(f"PEER {r['N']}²" if "N" in r else r["case"].replace("deepseek_v3", "dsv3"))
              + f"\nT={r['T']}" for r in rows]
    xs = np.arange(len(rows))
    for i, (col, color) in enumerate((("ours_f32", "tab:blue"), ("ours_bf16", "tab:orange"))):
        vals = [r.get("derived", {}).get(col, {}).get("speedup_vs_best_peer", np.nan) for r in rows]
        ax.bar(xs + (i - 0.5) * 0.38, vals, 0.38, label=COLUMNS[col], color=color)
    ax.axhline(1.0, color="red", ls="--", label="parity with best peer")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(xs, labels, fontsize=6, rotation=90)
    ax.set_ylabel("best peer time / our time")
    ax.set_title("Speedup vs best peer (log)")
    ax.legend(fontsize=8)
    for ax, rows in ((axes[0], decode), (axes[1], prefill)):
        ax.set_ylim(bottom=0)
        if not rows:
            ax.text(0.5, 0.5, "no rows of this kind in this run", ha="center", va="center",
                    transform=ax.transAxes)
    fig.suptitle(f"MoE-MLIR CPU benchmark — {bench.machine['cpu_model']}, nproc {bench.machine['nproc']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def to_json(o):
    if isinstance(o, dict):
        return {str(k): to_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [to_json(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="~2-minute smoke run: fewer cases, sizes, repetitions")
    ap.add_argument("--cases", default=None,
                    help=f"comma-separated subset of {','.join(ALL_CASES)} (default: all; --quick: "
                         f"{','.join(QUICK['cases'])})")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"), help="output folder")
    ap.add_argument("--pipeline", default=None,
                    help="pipeline of the 'ours' columns (default: moe_mlir.compile's default)")
    ap.add_argument("--verbose", action="store_true", help="print tracebacks of failed measurements")
    args = ap.parse_args(argv)
    S = dict(QUICK if args.quick else FULL)
    if args.cases:
        cases = []
        for c in args.cases.split(","):
            c = c.strip().lower()
            if c not in CASE_ALIASES:
                ap.error(f"unknown case {c!r} (expected some of {', '.join(ALL_CASES)})")
            cases.append(CASE_ALIASES[c])
        S["cases"] = tuple(dict.fromkeys(cases))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    machine = machine_info()
    if torch is not None:
        torch.set_num_threads(machine["nproc"])
    log(f"MoE-MLIR CPU benchmark{' (--quick)' if args.quick else ''}: {machine['cpu_model']}, "
        f"nproc {machine['nproc']}, {machine['mem_total_gib']} GiB, ISA {' '.join(machine['isa'])}")
    log(f"cases: {', '.join(S['cases'])}; budget {S['budget']} s/measurement, <= {S['reps']} reps, "
        f"skip calls predicted > {S['cap']} s (reference lowering: > {S['ref_cap']} s)")
    missing = []
    if torch is None:
        missing.append(f"torch ({TORCH_ERROR})")
    if transformers is None:
        missing.append(f"transformers ({HF_ERROR})")
    if plt is None:
        missing.append(f"matplotlib ({MPL_ERROR})")
    if missing:
        log("optional peers missing, their columns read n/a: " + "; ".join(missing)
            + "  (pip install -r benchmarks/requirements.txt)")
    load = machine.get("loadavg_start")
    if load and load[0] > 0.5 * machine["nproc"]:
        log(f"WARNING: the machine is busy (load average {load[0]:.1f} on {machine['nproc']} cores): "
            "timings will be noisy and low")
    log(f"{stamp()} measuring the machine's limits ...")
    limits = measure_limits(machine["nproc"], args.quick)
    log(f"{stamp()} read bandwidth {limits['read_bw_gbs']:.1f} GB/s ({limits['read_bw_method']}; "
        + ", ".join(f"{k} {v:.1f}" for k, v in limits["read_bw_all"].items()) + ")")
    log(f"{stamp()} SGEMM {limits['sgemm_gflops']:.0f} GFLOP/s ({limits['sgemm_method']}; "
        + ", ".join(f"{k} {v:.0f}" for k, v in limits["sgemm_all"].items()) + ")")

    bench = Bench(args, S, machine, limits)
    log(f"{stamp()} ours: {bench.ours_mode}; reference lowering: {bench.ref_mode}")
    if missing:
        bench.notes.append("missing optional packages (columns n/a): " + "; ".join(missing))
    for case in S["cases"]:
        try:
            if case in MOE_CASES:
                bench.moe_case(case)
            elif case == "peer":
                bench.peer_case()
            elif case == "mh_moe":
                bench.mh_case()
        except MemoryError as exc:
            bench.notes.append(f"{case}: out of memory ({exc})")
            log(f"   {case}: out of memory")
        gc.collect()

    if not args.quick:          # the limits again at the end: keep the best of both
        log(f"{stamp()} measuring the machine's limits again ...")
        again = measure_limits(machine["nproc"], args.quick)
        limits["at_start"], limits["at_end"] = dict(limits), again
        for key, method, every in (("read_bw_gbs", "read_bw_method", "read_bw_all"),
                                   ("sgemm_gflops", "sgemm_method", "sgemm_all")):
            if again[key] > limits[key]:
                limits[key], limits[method] = again[key], again[method] + " (end of run)"
        log(f"{stamp()} read bandwidth {again['read_bw_gbs']:.1f} GB/s, SGEMM "
            f"{again['sgemm_gflops']:.0f} GFLOP/s; using the best: {limits['read_bw_gbs']:.1f} GB/s, "
            f"{limits['sgemm_gflops']:.0f} GFLOP/s")
        for r in bench.rows:           # derived metrics against the final limits
            if "useful_macs" in r:
                bench.derive(r, r["useful_macs"], r["weight_bytes"]["ours_f32"], r["weight_bytes"]["ours_bf16"])
    machine["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    note = chart(bench, out_dir / "cpu.png")
    if note:
        bench.notes.append(note)
    elapsed = time.perf_counter() - START
    md = markdown(bench, elapsed)
    (out_dir / "cpu.md").write_text(md)
    result = dict(machine=machine, limits=limits, settings=S, elapsed_s=elapsed,
                  reference_lowering=bench.ref_mode, ours=bench.ours_mode, compile_s=bench.compile_s,
                  bind_s=bench.bind_s,
                  rows=bench.rows, checks=bench.checks, notes=bench.notes, argv=sys.argv[1:])
    (out_dir / "cpu.json").write_text(json.dumps(to_json(result), indent=1))
    log("")
    log(md)
    log(f"wrote {out_dir / 'cpu.md'}, {out_dir / 'cpu.json'}"
        + (f", {out_dir / 'cpu.png'}" if not note else f" ({note})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
