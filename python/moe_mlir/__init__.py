"""MoE-MLIR: a compiler for Mixture-of-Experts layers.

* :func:`load_spec`, :func:`weight_shapes`, :func:`spec_hash` -- layer specs.
* :mod:`moe_mlir.reference` -- independent NumPy reference of every layer kind.
* :func:`upcycle` -- build MoE expert weights from a dense FFN.
* :func:`compile` -- compile a spec with moe-compile for the CPU or
  (``target="cuda"``) NVIDIA GPUs; the returned :class:`Layer` runs the
  kernel on NumPy arrays, and CUDA layers also on torch CUDA tensors and
  other device arrays, in place.
* :func:`cuda_available` -- whether a CUDA driver and device are present;
  :class:`CUDAError` -- a CUDA layer's driver failure;
  :func:`set_cuda_scratch_cache`, :func:`trim_cuda_scratch`,
  :func:`cuda_scratch_reserved` -- the CUDA layers' cached scratch memory.
* :func:`load` -- a layer saved by :meth:`Layer.save`, without the compiler.
* :func:`set_num_threads`, :func:`get_num_threads` -- the threads kernels use.
* :mod:`moe_mlir.torch` -- compiled layers as torch custom ops and the
  ``MoELayer`` module (needs PyTorch; imported only by ``import moe_mlir.torch``).
* :func:`from_hf`, :func:`patch_model`, :func:`spec_from_config`,
  :func:`load_hf_weights` -- Hugging Face transformers MoE blocks and
  checkpoints (:mod:`moe_mlir.hf`; torch and transformers load on first use).
"""

from . import reference, rng
from .compiler import (BoundLayer, CompileError, CompilerWarning, CUDABuffer,  # noqa: A004
                       CUDAError, Layer, SpecError, compile, cuda_available,
                       cuda_scratch_reserved, get_num_threads, load,
                       set_cuda_scratch_cache, set_num_threads, trim_cuda_scratch)
from .reference import round_to_dtype
from .spec import load_spec, spec_hash, weight_shapes
from .upcycle import init_gate, upcycle

__version__ = "0.1.0"

__all__ = [
    "reference",
    "rng",
    "load_spec",
    "weight_shapes",
    "spec_hash",
    "round_to_dtype",
    "upcycle",
    "init_gate",
    "compile",
    "load",
    "Layer",
    "BoundLayer",
    "CompileError",
    "SpecError",
    "CompilerWarning",
    "CUDAError",
    "CUDABuffer",
    "cuda_available",
    "set_cuda_scratch_cache",
    "trim_cuda_scratch",
    "cuda_scratch_reserved",
    "set_num_threads",
    "get_num_threads",
    "from_hf",
    "patch_model",
    "spec_from_config",
    "load_hf_weights",
]

# Loaded on first use: importing moe_mlir must not import torch.
_HF_NAMES = ("from_hf", "patch_model", "spec_from_config", "load_hf_weights")


def __getattr__(name):
    if name in _HF_NAMES:
        from . import hf
        return getattr(hf, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
