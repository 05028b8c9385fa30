"""The CUDA layers of the GPU tests (python/tests/test_cuda_target.py), and
how they reach a GPU machine that cannot compile.

A GPU machine without LLVM/MLIR cannot run ``moe-compile``, so the layers
are compiled where the compiler is and shipped as saved layers
(:meth:`moe_mlir.Layer.save`)::

    python -m moe_mlir.gpu_layers prepare <dir>          # here: compile + save
    MOE_GPU_LAYERS=<dir> python -m pytest python/tests/test_cuda_target.py   # there

``prepare`` compiles exactly the layers of :data:`SPECS` (``<dir>/<name>``);
:func:`layer` loads them from ``$MOE_GPU_LAYERS`` when it is set (and checks
the saved spec is the one of :data:`SPECS`), else compiles them.  The host
code is compiled for ``x86-64-v2`` (not ``native``): the GPU machine's CPU
is another one.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path
from typing import Dict, Optional

from .compiler import GPU_ARCH_DEFAULT, Layer
from .compiler import compile as _compile
from .compiler import load as _load
from .spec import load_spec

__all__ = ["SPECS", "OPTIONS", "MCPU", "layer", "prepare", "layers_dir"]

#: The host CPU the shipped layers' host code is compiled for.
MCPU = "x86-64-v2"
ENV = "MOE_GPU_LAYERS"


def _moe(name, d_model=32, experts=8, expert_hidden=16, activation="swiglu", router=None,
         **kw) -> dict:
    r = {"top_k": 2}
    r.update(router or {})
    s = {"name": name, "kind": "moe", "d_model": d_model, "experts": experts,
         "expert_hidden": expert_hidden, "activation": activation, "router": r}
    s.update(kw)
    return s


def _pk(kind, name, d_model=32, n=4, heads=2, top_k=3, key_dim=8, **kw) -> dict:
    s = {"name": name, "kind": kind, "d_model": d_model, "experts": n * n, "heads": heads,
         "top_k": top_k, "key_dim": key_dim}
    s.update(kw)
    return s


def _both_dtypes(specs: Dict[str, dict]) -> Dict[str, dict]:
    """Each spec with f32 and with bf16 weights (names ``<name>_f32``, ``<name>_bf16``)."""
    out = {}
    for name, s in specs.items():
        for dt in ("f32", "bf16"):
            t = copy.deepcopy(s)
            t["name"] = f"{name}_{dt}"
            t["weight_dtype"] = dt
            out[t["name"]] = t
    return out


#: name -> spec of every layer the GPU tests run (the spec's name is the key).
SPECS: Dict[str, dict] = _both_dtypes({
    "gpu_softmax": _moe("gpu_softmax", router={"normalize": True},
                        aux_losses=["load_balance", "z_loss"]),
    "gpu_sigmoid": _moe("gpu_sigmoid", activation="gelu", router={
        "score": "sigmoid", "selection_bias": True, "normalize": True, "scaling": 2.5}),
    "gpu_groups": _moe("gpu_groups", experts=16, router={
        "top_k": 4, "score": "sigmoid", "selection_bias": True, "groups": 8,
        "topk_groups": 3, "group_score": "top2_sum", "normalize": True}),
    "gpu_shared": _moe("gpu_shared", experts=6, router={"order": "topk_then_score"},
                       shared_experts={"hidden": 24, "gate": True}),
    "gpu_capacity": _moe("gpu_capacity", router={"top_k": 2}, capacity={
        "factor": 1.0, "overflow": "next_choice", "priority": "batch_prioritized"},
        aux_losses=["importance"]),
    "gpu_pkm": _pk("pkm", "gpu_pkm"),
    "gpu_peer": _pk("peer", "gpu_peer"),
})
SPECS.update({
    # One noisy router (seeded noise on the GPU = the reference's) and one
    # multi-head layer, f32 only.
    "gpu_noisy_f32": _moe("gpu_noisy_f32", router={"noise": True}),
    "gpu_mh_f32": dict(_moe("gpu_mh_f32", activation="gelu"), kind="mh_moe", heads=2),
    # Tensor-core tiles at their edges: d_model and expert_hidden not
    # multiples of the 16-deep steps or 8-wide tiles, tiles of rows that
    # span several experts; activations rounded to bf16 once; and the SIMT
    # path of bf16 weights (tensor cores off).
    "gpu_tc_edges_bf16": _moe("gpu_tc_edges_bf16", d_model=40, experts=5, expert_hidden=20,
                              weight_dtype="bf16", expert_bias=True),
    "gpu_tc_f32act_bf16": _moe("gpu_tc_f32act_bf16", weight_dtype="bf16"),
    "gpu_tc_bf16act_bf16": _moe("gpu_tc_bf16act_bf16", weight_dtype="bf16"),
    "gpu_simt_bf16": _moe("gpu_simt_bf16", weight_dtype="bf16"),
    # PhiMoE's sparsemixer weights; NLLB-MoE's capacity (a fraction of the
    # tokens) with renormalisation after the drops (f32 only).
    "gpu_sparsemixer_f32": _moe("gpu_sparsemixer_f32", router={
        "score": "sparsemixer", "jitter_eps": 0.05}, aux_losses=["load_balance"]),
    "gpu_nllb_f32": _moe("gpu_nllb_f32", activation="relu", expert_bias=True, capacity={
        "token_fraction": 0.5, "renormalize": True}),
})

#: Compile options of the layers that do not take the defaults.
OPTIONS: Dict[str, dict] = {
    "gpu_tc_bf16act_bf16": {"mma_precision": "bf16"},
    "gpu_simt_bf16": {"tensor_cores": False},
}


def layers_dir() -> Optional[Path]:
    """$MOE_GPU_LAYERS, where saved layers are taken from (None: compile)."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


def layer(name: str, directory=None, gpu_arch: str = GPU_ARCH_DEFAULT) -> Layer:
    """The CUDA layer ``name`` of :data:`SPECS`: loaded from ``directory``
    (default $MOE_GPU_LAYERS) when given, else compiled (needs moe-compile and
    ptxas)."""
    if name not in SPECS:
        raise KeyError(f"no GPU test layer {name!r} (have {sorted(SPECS)})")
    directory = Path(directory) if directory is not None else layers_dir()
    if directory is None:
        return _compile(SPECS[name], "cuda", gpu_arch=gpu_arch, mcpu=MCPU,
                        **OPTIONS.get(name, {}))
    loaded = _load(directory / name)
    if loaded.spec != load_spec(SPECS[name]):
        raise ValueError(f"{directory / name} holds another spec than moe_mlir.gpu_layers."
                         f"SPECS[{name!r}]: prepare the directory again")
    if loaded.device != "cuda":
        raise ValueError(f"{directory / name} is a {loaded.device} layer, not a CUDA one")
    return loaded


def prepare(directory, gpu_arch: str = GPU_ARCH_DEFAULT, names=None) -> Path:
    """Compiles the layers of :data:`SPECS` (or ``names``) for ``gpu_arch``
    and saves each to ``directory/<name>``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in names or SPECS:
        layer(name, directory=None, gpu_arch=gpu_arch).save(directory / name)
    return directory


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m moe_mlir.gpu_layers",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="compile and save the GPU tests' layers to DIR")
    p.add_argument("directory")
    p.add_argument("--gpu-arch", default=GPU_ARCH_DEFAULT)
    p.add_argument("--only", nargs="*", help="these layers only (default: all)")
    sub.add_parser("list", help="print the layers' names")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(SPECS))
        return 0
    prepare(args.directory, args.gpu_arch, args.only)
    total = sum(f.stat().st_size for f in Path(args.directory).rglob("*") if f.is_file())
    print(f"{len(args.only or SPECS)} layers for {args.gpu_arch} in {args.directory} "
          f"({total / 2**20:.1f} MiB); run there: {ENV}={args.directory} python -m pytest "
          f"python/tests/test_cuda_target.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
