"""Compiled MoE-MLIR layers as PyTorch custom ops and an ``nn.Module``.

``import moe_mlir.torch`` (never done by ``import moe_mlir``) registers two
``torch.library`` custom ops in the ``moe_mlir`` namespace and defines
:class:`MoELayer`, the module that holds a compiled layer's weights::

    layer = moe_mlir.torch.MoELayer("examples/mixtral.yaml", weights)
    y = layer(hidden_states)                  # [..., D] f32/bf16/f16 -> same
    y = torch.compile(layer, fullgraph=True)(hidden_states)   # the same bits

The ops (CPU and CUDA tensors)::

    moe_mlir::layer_forward(Tensor x, Tensor[] weights, int handle, int? seed,
                            Tensor? token_ids=None) -> Tensor[]
    moe_mlir::layer_route(Tensor x, Tensor[] weights, int handle, int? seed,
                          Tensor? token_ids=None) -> (Tensor, Tensor)

Why this schema: a custom op takes tensors, scalars and lists of them, never
a Python object, so the compiled :class:`moe_mlir.Layer` lives in a registry
here and the op names it by an integer ``handle`` (:func:`register`).  The
weights are still arguments, in the spec's order (``layer.weight_shapes``):
the graph then shows the data the op reads (an in-place update of a weight
is ordered before the op, and keeps it alive), and the op stays correct for
any tensors it is given.  The registry keeps, per handle, the weights bound
last (:meth:`moe_mlir.Layer.bind`: checked, converted, expert weights packed)
keyed by each tensor's storage address, layout and version counter: a call on
the same, unmodified tensors reuses them (no per-call conversion or copy), a
call on other or in-place-modified tensors binds those first (packed layers
re-pack: one bind per change, never a stale result).  ``layer_forward``
returns every output of the layer in the ABI's order (``out`` first, then the
routing results and aux losses, docs/spec.md "Results"); aux losses and
``dropped`` are 0-d tensors.  ``token_ids`` (``[T]`` integers) is the
per-token input of hash-routed layers (``router.hash_vocab``) and None
otherwise; the CUDA kernel converts int64 ids to int32 on the device.

Zero-copy: ``x`` (float32 ``[T, D]``) and the weights reach the kernel as
NumPy views of the tensors' storage; only a non-contiguous ``x`` or weight is
copied (as :class:`moe_mlir.Layer` does), and bf16/f16 weights are read as
their 16-bit patterns in place.  Outputs are new tensors over the kernel's
output buffers.  Kernels compute in f32 with f32 activations.

A fake (meta) kernel gives every output's shape and dtype, so the ops run
under ``torch.compile(fullgraph=True)``, ``FakeTensorMode`` and on meta
tensors.  No backward exists: the ops are inference-only, and autograd
through them raises a RuntimeError saying so (run under ``torch.no_grad()``).
CUDA layers (``compile(spec, target="cuda")``, ``MoELayer(...,
target="cuda")``): the ops have a CUDA kernel (registered for the CUDA
dispatch key) that passes the tensors' device pointers to the layer in place
-- no copy, no host round trip -- allocates the outputs with ``torch.empty``
on ``x``'s device and runs on torch's current stream without synchronising.
Every tensor must be on ``x``'s device; CPU tensors given to a CUDA layer run
through the CPU kernel, which copies them to the GPU and back.  CUDA tensors
given to a CPU layer raise ValueError.
Thread-safety and the thread count are those of :mod:`moe_mlir`
(:func:`moe_mlir.set_num_threads`).
"""

from __future__ import annotations

import copy
import itertools
import threading
import weakref
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from .compiler import Layer, _bf16_bits
from .compiler import compile as _compile

__all__ = ["MoELayer", "register", "unregister", "layer_forward", "layer_route"]

_TORCH_DTYPES = {"f32": torch.float32, "i32": torch.int32}
# Weight dtypes accepted per spec dtype: the spec's own, float32 (rounded to
# it as Layer rounds), and for f32 weights the 16-bit floats (widened exactly).
_WEIGHT_DTYPES = {
    "f32": (torch.float32, torch.bfloat16, torch.float16),
    "bf16": (torch.bfloat16, torch.float32),
    "f16": (torch.float16, torch.float32),
    "i32": (torch.int32, torch.int64),  # tid2eid, hash routing's table
}
_STORAGE_DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16,
                   "i32": torch.int32}
_ACTIVATION_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_GPU_BACKEND = ("CUDA tensors need a layer compiled for CUDA (target='cuda'); move them to "
                "the CPU (.cpu()) for a CPU layer")
_NO_BACKWARD = ("moe_mlir layers are inference-only: they have no backward. Run them under "
                "torch.no_grad() or torch.inference_mode(), or detach their inputs")


# --------------------------------------------------------------------------- #
# The registry of layers the ops run
# --------------------------------------------------------------------------- #

class _Entry:
    """A registered layer and the weights it was bound to last."""

    def __init__(self, layer: Layer):
        self.layer = layer
        self.lock = threading.Lock()
        self.key: Optional[tuple] = None
        # The tensors of ``key``: held so their storage (and address) cannot
        # be reused by other tensors while ``key`` names it.
        self.tensors: List[torch.Tensor] = []
        self.bound = None
        self.binds = 0  # how many times weights were bound (tests, profiling)


_registry: Dict[int, _Entry] = {}
_registry_lock = threading.Lock()
_handles = itertools.count(1)


def register(layer: Layer) -> int:
    """Registers a compiled ``layer`` for the ops; returns its handle.  Each
    call gives a new handle with its own bound weights (one per module)."""
    if not isinstance(layer, Layer):
        raise ValueError(f"layer must be a moe_mlir.Layer, got {type(layer).__name__}")
    with _registry_lock:
        handle = next(_handles)
        _registry[handle] = _Entry(layer)
    return handle


def unregister(handle: int) -> None:
    """Forgets ``handle`` and the weights bound to it (a no-op if unknown)."""
    with _registry_lock:
        _registry.pop(handle, None)


def _entry(handle: int) -> _Entry:
    with _registry_lock:
        entry = _registry.get(handle)
    if entry is None:
        raise ValueError(f"no moe_mlir layer is registered under handle {handle} "
                         f"(moe_mlir.torch.register(layer) gives one)")
    return entry


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference tensors have no version counter
        return -1


def _check_device(x: torch.Tensor, weights: Sequence[torch.Tensor],
                  layer: Optional[Layer] = None) -> None:
    """The CPU kernel's check: CPU tensors (a CUDA layer takes them too, by
    copies); CUDA tensors only reach the CUDA kernel."""
    for t in (x, *weights):
        if t.device.type == "cuda":
            raise ValueError(f"layer {layer.name!r}: {_GPU_BACKEND}" if layer is not None
                             else _GPU_BACKEND)
        if t.device.type != "cpu":
            raise ValueError(f"moe_mlir layers run on CPU or CUDA tensors, got a "
                             f"{t.device.type} tensor")


def _check_cuda(layer: Layer, x: torch.Tensor, weights: Sequence[torch.Tensor]) -> None:
    """The CUDA kernel's check: a CUDA layer, every tensor on x's device."""
    if layer.device != "cuda":
        raise ValueError(f"layer {layer.name!r} was compiled for the CPU: {_GPU_BACKEND}")
    names = list(layer.weight_shapes)
    for name, t in zip(["x", *names], (x, *weights)):
        if t.device != x.device:
            what = "hidden_states/x" if name == "x" else f"weight {name!r}"
            raise ValueError(f"{what} is on {t.device} but x on {x.device}: tensors on "
                             f"different devices (move the module with .to({str(x.device)!r}))")


def _weight_array(name: str, t: torch.Tensor, dtype: str) -> np.ndarray:
    """``t`` as the NumPy array :meth:`Layer.bind` takes for a ``dtype``
    weight: a view of its storage except where a conversion is needed."""
    if t.dtype not in _WEIGHT_DTYPES[dtype]:
        allowed = ", ".join(str(d).replace("torch.", "") for d in _WEIGHT_DTYPES[dtype])
        raise ValueError(f"weight {name!r} ({dtype}) must be {allowed}, got "
                         f"{str(t.dtype).replace('torch.', '')}")
    t = t.detach()
    if t.dtype == torch.bfloat16:
        if dtype == "f32":
            return t.float().numpy()
        return t.view(torch.uint16).numpy()  # the bit patterns Layer takes
    if t.dtype == torch.float16 and dtype == "f32":
        return t.float().numpy()
    return t.numpy()


def _cuda_weight(layer: Layer, name: str, t: torch.Tensor, dtype: str) -> torch.Tensor:
    """``t`` as the CUDA layer reads it in place: the spec's dtype (f32
    rounded to bf16/f16 on the device, round-to-nearest-even), contiguous.
    Expert ids (hash routing's table) are checked once here, as the CPU path
    checks them."""
    if t.dtype not in _WEIGHT_DTYPES[dtype]:
        allowed = ", ".join(str(d).replace("torch.", "") for d in _WEIGHT_DTYPES[dtype])
        raise ValueError(f"weight {name!r} ({dtype}) must be {allowed}, got "
                         f"{str(t.dtype).replace('torch.', '')}")
    if dtype == "i32" and t.numel():
        experts = layer.spec["experts"]
        low, high = int(t.min()), int(t.max())
        if low < 0 or high >= experts:
            raise ValueError(f"weight {name!r} holds expert ids, each in [0, {experts}), "
                             f"got {low if low < 0 else high}")
    return t.detach().to(_STORAGE_DTYPES[dtype]).contiguous()


def _bound(entry: _Entry, weights: Sequence[torch.Tensor]):
    """The BoundLayer of ``entry`` for ``weights``: the cached one when they
    are the tensors bound last, unmodified; else a new binding.  CUDA
    tensors are bound in place (a CUDA layer reads them where they are); CPU
    tensors of a CUDA layer are copied to the device once per binding."""
    layer = entry.layer
    names = list(layer.weight_shapes)
    if len(weights) != len(names):
        raise ValueError(f"layer {layer.name!r} takes {len(names)} weights {names}, "
                         f"got {len(weights)}")
    key = tuple((t.device, t.data_ptr(), t.dtype, tuple(t.shape), tuple(t.stride()), _version(t))
                for t in weights)
    with entry.lock:
        if entry.key == key:
            return entry.bound
        arrays = {}
        for name, t in zip(names, weights):
            shape, dtype = layer.weight_shapes[name]
            if tuple(t.shape) != tuple(shape):
                raise ValueError(f"weight {name!r} must have shape {list(shape)}, "
                                 f"got {list(t.shape)}")
            arrays[name] = (_cuda_weight(layer, name, t, dtype) if t.device.type == "cuda"
                            else _weight_array(name, t, dtype))
        bound = layer.bind(**arrays)
        entry.key, entry.tensors, entry.bound = key, list(weights), bound
        entry.binds += 1
        return bound


def _check_x(layer: Layer, x: torch.Tensor) -> None:
    if x.dtype != torch.float32:
        raise ValueError(f"x must be float32, got {str(x.dtype).replace('torch.', '')}")
    if x.dim() != 2 or x.shape[1] != layer.d_model:
        raise ValueError(f"x must have shape [T, {layer.d_model}], got {list(x.shape)}")


def _to_tensor(value, dtype: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    return torch.tensor(value, dtype=_TORCH_DTYPES[dtype])  # a 0-d result


def _empty_like_outputs(x: torch.Tensor, buffers) -> List[torch.Tensor]:
    tokens = x.shape[0]
    return [x.new_empty([tokens * b["rows_per_token"] if d < 0 else d for d in b["shape"]],
                        dtype=_TORCH_DTYPES[b["dtype"]]) for b in buffers]


def _route_outputs(layer: Layer):
    buffers = (layer._route or layer._abi)["outputs"]
    by_name = {b["name"]: b for b in buffers}
    return [by_name["topk_ids"], by_name["topk_weights"]]


# --------------------------------------------------------------------------- #
# The ops
# --------------------------------------------------------------------------- #

def _token_ids_array(token_ids: Optional[torch.Tensor]):
    """The CPU kernel's token ids: a NumPy view (the Layer checks them)."""
    if token_ids is None:
        return None
    if token_ids.device.type != "cpu":
        raise ValueError(f"token_ids is on {token_ids.device} but x on the CPU: tensors on "
                         f"different devices")
    return token_ids.detach().numpy()


def _token_ids_cuda(token_ids: Optional[torch.Tensor], x: torch.Tensor):
    """The CUDA kernel's token ids: int32 on x's device, used in place
    (int64 ids, as tokenizers give them, converted on the device)."""
    if token_ids is None:
        return None
    if token_ids.device != x.device:
        raise ValueError(f"token_ids is on {token_ids.device} but x on {x.device}: tensors "
                         f"on different devices")
    if token_ids.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"token_ids must be int32 or int64, "
                         f"got {str(token_ids.dtype).replace('torch.', '')}")
    return token_ids.detach().to(torch.int32).contiguous()


@torch.library.custom_op("moe_mlir::layer_forward", mutates_args=())
def layer_forward(x: torch.Tensor, weights: List[torch.Tensor], handle: int,
                  seed: Optional[int],
                  token_ids: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
    """Every output of the layer registered under ``handle`` on float32
    ``x [T, D]`` and ``weights`` (spec order), in the ABI's order."""
    entry = _entry(handle)
    _check_device(x, weights, entry.layer)
    _check_x(entry.layer, x)
    result = _bound(entry, weights).forward(x.detach().numpy(), seed=seed,
                                            token_ids=_token_ids_array(token_ids))
    return [_to_tensor(result[b["name"]], b["dtype"]) for b in entry.layer._abi["outputs"]]


@layer_forward.register_kernel("cuda")
def _layer_forward_cuda(x, weights, handle, seed, token_ids=None):
    # A CUDA layer on CUDA tensors: in place, on torch's current stream,
    # asynchronous; the outputs are new tensors on x's device.
    entry = _entry(handle)
    _check_cuda(entry.layer, x, weights)
    _check_x(entry.layer, x)
    result = _bound(entry, weights).forward(x.detach().contiguous(), seed=seed,
                                            token_ids=_token_ids_cuda(token_ids, x))
    return [result[b["name"]] for b in entry.layer._abi["outputs"]]


@layer_forward.register_fake
def _layer_forward_fake(x, weights, handle, seed, token_ids=None):
    layer = _entry(handle).layer
    _check_x(layer, x)
    return _empty_like_outputs(x, layer._abi["outputs"])


@torch.library.custom_op("moe_mlir::layer_route", mutates_args=())
def layer_route(x: torch.Tensor, weights: List[torch.Tensor], handle: int,
                seed: Optional[int],
                token_ids: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(topk_ids, topk_weights)`` of the router, as :meth:`Layer.route`:
    the routing alone, no expert run (the same bits as ``layer_forward``'s)."""
    entry = _entry(handle)
    _check_device(x, weights, entry.layer)
    _check_x(entry.layer, x)
    ids, w = _bound(entry, weights).route(x.detach().numpy(), seed=seed,
                                          token_ids=_token_ids_array(token_ids))
    return torch.from_numpy(ids), torch.from_numpy(w)


@layer_route.register_kernel("cuda")
def _layer_route_cuda(x, weights, handle, seed, token_ids=None):
    entry = _entry(handle)
    _check_cuda(entry.layer, x, weights)
    _check_x(entry.layer, x)
    return _bound(entry, weights).route(x.detach().contiguous(), seed=seed,
                                        token_ids=_token_ids_cuda(token_ids, x))


@layer_route.register_fake
def _layer_route_fake(x, weights, handle, seed, token_ids=None):
    layer = _entry(handle).layer
    _check_x(layer, x)
    ids, w = _empty_like_outputs(x, _route_outputs(layer))
    return ids, w


def _setup_context(ctx, inputs, output) -> None:
    pass


def _no_backward(ctx, *grads):
    raise RuntimeError(_NO_BACKWARD)


torch.library.register_autograd("moe_mlir::layer_forward", _no_backward,
                                setup_context=_setup_context)
torch.library.register_autograd("moe_mlir::layer_route", _no_backward,
                                setup_context=_setup_context)


# --------------------------------------------------------------------------- #
# The module
# --------------------------------------------------------------------------- #

def _seed_arg(seed) -> Optional[int]:
    """``seed`` as the ops' int64 argument: the same 64 bits as the uint64
    seed :class:`Layer` takes (``seed mod 2**64``)."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer or None, got {type(seed).__name__}")
    seed = int(seed) % (1 << 64)
    return seed - (1 << 64) if seed >= 1 << 63 else seed


def _as_tensor(name: str, value, layer: Optional[Layer] = None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.device.type == "cuda" and (layer is None or layer.device != "cuda"):
            raise ValueError(f"weight {name!r}: {_GPU_BACKEND}")
        return value.detach()
    if isinstance(value, np.ndarray):
        integer = value.dtype in (np.int32, np.int64)  # hash routing's tid2eid
        if value.dtype not in (np.float32, np.float16, np.uint16) and not integer:
            raise ValueError(f"weight {name!r} must be float32, float16 or uint16 (bf16 bits) "
                             f"(int32/int64 for expert ids), got {value.dtype}")
        # Buffers are written in place (load_state_dict): a read-only array
        # (a read-only memory map) is copied rather than shared.
        array = np.ascontiguousarray(value) if value.flags.writeable else np.array(value, order="C")
        t = torch.from_numpy(array)
        return t.view(torch.bfloat16) if value.dtype == np.uint16 else t
    raise ValueError(f"weight {name!r} must be a torch.Tensor or numpy.ndarray, "
                     f"got {type(value).__name__}")


def _module_weights(layer: Layer, weights: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """The weights as the tensors the module keeps: each in the spec's dtype
    (f32 input rounded once as Layer rounds it), sharing the caller's storage
    where no conversion is needed."""
    if not isinstance(weights, Mapping):
        raise ValueError(f"weights must be a mapping name -> tensor, got {type(weights).__name__}")
    unknown = sorted(set(weights) - set(layer.weight_shapes))
    if unknown:
        raise ValueError(f"unknown weight {unknown[0]!r} for layer {layer.name!r} "
                         f"(expected {list(layer.weight_shapes)})")
    out = {}
    for name, (shape, dtype) in layer.weight_shapes.items():
        if name not in weights:
            raise ValueError(f"missing weight {name!r} for layer {layer.name!r}")
        t = _as_tensor(name, weights[name], layer)
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"weight {name!r} must have shape {list(shape)}, got {list(t.shape)}")
        if t.dtype not in _WEIGHT_DTYPES[dtype]:
            allowed = ", ".join(str(d).replace("torch.", "") for d in _WEIGHT_DTYPES[dtype])
            raise ValueError(f"weight {name!r} ({dtype}) must be {allowed}, got "
                             f"{str(t.dtype).replace('torch.', '')}")
        t = t.contiguous()
        if t.dtype != _STORAGE_DTYPES[dtype]:
            device = t.device
            t = t.cpu()  # converted as Layer converts, then moved back
            if dtype == "bf16":  # f32 rounded to nearest even, as Layer rounds it
                t = torch.from_numpy(_bf16_bits(t.numpy())).view(torch.bfloat16)
            elif dtype == "f16":
                t = torch.from_numpy(t.numpy().astype(np.float16))
            elif dtype == "i32":  # int64 expert ids; Layer checks their range
                t = t.to(torch.int32)
            else:  # bf16/f16 to f32: exact
                t = t.float()
            t = t.to(device)
        out[name] = t
    return out


class MoELayer(torch.nn.Module):
    """A compiled MoE-MLIR layer as a module, its weights held as buffers.

    ``spec`` is what :func:`moe_mlir.compile` takes (a path, YAML/JSON text or
    a dict), compiled with ``pipeline`` and ``compile_options`` (``opt_level``,
    ``mcpu``, ``tiles``, ...); a compiled :class:`moe_mlir.Layer` is used as it
    is (and takes no compile option).  ``weights`` maps every weight name of the spec's contract
    (docs/spec.md "Weights") to a torch.Tensor or numpy.ndarray of its shape:
    float32 (rounded to the spec's ``weight_dtype`` once, as Layer rounds it),
    a bf16/f16 tensor for bf16/f16 weights (kept as it is: its bits are what
    the kernel reads), or uint16 bf16 bit patterns; f32 weights also take
    bf16/f16 tensors (widened exactly).  Tensors needing no conversion are
    shared, not copied.  The weights are bound once here (checked, converted,
    expert weights packed) and every call reuses the binding; an in-place
    change to a buffer (``load_state_dict`` included) is seen: the next call
    binds again.  The buffers keep the spec's dtype: ``.to(dtype)``,
    ``.half()`` and the like move them between devices but never cast them.

    ``forward(hidden_states, seed=None, token_ids=None)`` takes ``[..., D]``
    float32, bfloat16 or float16 (the leading dims are flattened to T tokens)
    and returns the same shape and dtype.  The kernels compute in f32 with f32
    activations: ``hidden_states`` is converted to f32 and the output back to
    its dtype.  Noisy routers need an integer ``seed``; hash-routed layers
    (``router.hash_vocab``) the ``token_ids`` of the tokens (integers shaped
    as ``hidden_states`` without its last dim, e.g. a model's ``input_ids``).  No backward exists
    (inference-only): autograd through the layer raises RuntimeError.

    ``target="cuda"`` (or a CUDA :class:`moe_mlir.Layer`) runs the layer on
    NVIDIA GPUs (``gpu_arch`` among the compile options, default ``"sm_90"``):
    the buffers are CUDA tensors -- on the device of the CUDA tensors among
    ``weights``, else the current CUDA device; where torch sees no GPU they
    stay on the CPU until the module is moved (``.cuda()``).  CUDA
    ``hidden_states`` on the buffers' device run in place on torch's current
    stream, asynchronously, and give CUDA outputs; CPU ``hidden_states`` with
    CPU buffers are copied to the GPU and back for each call.
    """

    def __init__(self, spec, weights: Mapping[str, Any], *, target: Optional[str] = None,
                 pipeline: str = "fast", **compile_options):
        super().__init__()
        if isinstance(spec, Layer):
            if pipeline != "fast" or compile_options:
                raise ValueError("a compiled moe_mlir.Layer takes no pipeline or compile options "
                                 "(compile the spec with them instead)")
            if target is not None and target != spec.device:
                raise ValueError(f"target={target!r} but the layer was compiled for "
                                 f"{spec.device!r}")
            layer = spec
        elif target == "cuda":
            if pipeline != "fast":
                raise ValueError(f"pipeline={pipeline!r} is an option of the CPU target")
            layer = _compile(spec, "cuda", **compile_options)
        else:
            layer = _compile(spec, target or "cpu", pipeline=pipeline, **compile_options)
        self.layer = layer
        self.spec = layer.spec
        buffers = _module_weights(layer, weights)
        if layer.device == "cuda":
            devices = [t.device for t in buffers.values() if t.device.type == "cuda"]
            if devices or torch.cuda.is_available():
                device = devices[0] if devices else torch.device("cuda", torch.cuda.current_device())
                buffers = {name: t.to(device) for name, t in buffers.items()}
        for name, t in buffers.items():
            self.register_buffer(name, t)
        self._weight_names = tuple(layer.weight_shapes)
        self._output_names = tuple(layer.output_names)
        self._handle = register(layer)
        weakref.finalize(self, unregister, self._handle)
        # Bind (pack) once, now -- except a CUDA layer's CPU buffers, which
        # would be copied to a GPU there may not be (bound on first call).
        if layer.device == "cpu" or all(t.device.type == "cuda" for t in self._weights()):
            _bound(_entry(self._handle), self._weights())

    def _weights(self) -> List[torch.Tensor]:
        return [getattr(self, name) for name in self._weight_names]

    def _flat(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not isinstance(hidden_states, torch.Tensor):
            raise ValueError(f"hidden_states must be a torch.Tensor, "
                             f"got {type(hidden_states).__name__}")
        if hidden_states.device.type == "cuda" and self.layer.device != "cuda":
            raise ValueError(f"layer {self.layer.name!r} was compiled for the CPU: {_GPU_BACKEND}")
        if hidden_states.dtype not in _ACTIVATION_DTYPES:
            raise ValueError(f"hidden_states must be float32, bfloat16 or float16, "
                             f"got {str(hidden_states.dtype).replace('torch.', '')}")
        d = self.layer.d_model
        if hidden_states.dim() < 1 or hidden_states.shape[-1] != d:
            raise ValueError(f"hidden_states must have shape [..., {d}], "
                             f"got {list(hidden_states.shape)}")
        return hidden_states.reshape(-1, d).to(torch.float32)

    def _flat_ids(self, token_ids, hidden_states: torch.Tensor) -> Optional[torch.Tensor]:
        """``token_ids`` flattened as ``hidden_states``' tokens are."""
        if token_ids is None:
            return None
        if not isinstance(token_ids, torch.Tensor):
            raise ValueError(f"token_ids must be a torch.Tensor, got {type(token_ids).__name__}")
        if tuple(token_ids.shape) != tuple(hidden_states.shape[:-1]):
            raise ValueError(f"token_ids must have shape {list(hidden_states.shape[:-1])} "
                             f"(hidden_states without its last dim), "
                             f"got {list(token_ids.shape)}")
        return token_ids.reshape(-1)

    def forward_all(self, hidden_states: torch.Tensor, seed=None,
                    token_ids=None) -> Dict[str, torch.Tensor]:
        """Every output by name: ``out`` shaped and typed as ``hidden_states``,
        the routing results over the flattened tokens (``topk_ids``
        ``[T * rows_per_token, k]`` int32, ...), aux losses as 0-d tensors."""
        outputs = torch.ops.moe_mlir.layer_forward(
            self._flat(hidden_states), self._weights(), self._handle, _seed_arg(seed),
            self._flat_ids(token_ids, hidden_states))
        result = dict(zip(self._output_names, outputs))
        result["out"] = result["out"].reshape(hidden_states.shape).to(hidden_states.dtype)
        return result

    def forward(self, hidden_states: torch.Tensor, seed=None, token_ids=None) -> torch.Tensor:
        return self.forward_all(hidden_states, seed=seed, token_ids=token_ids)["out"]

    def route(self, hidden_states: torch.Tensor, seed=None,
              token_ids=None) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(topk_ids, topk_weights)`` over the flattened tokens: the routing
        alone (no expert runs), the same bits as :meth:`forward_all`'s."""
        return torch.ops.moe_mlir.layer_route(
            self._flat(hidden_states), self._weights(), self._handle, _seed_arg(seed),
            self._flat_ids(token_ids, hidden_states))

    def _apply(self, fn, recurse=True):
        # The spec fixes the weights' dtype (the kernels read it): device
        # moves apply to the buffers, dtype casts (model.to(torch.bfloat16))
        # do not.
        before = {name: self._buffers[name] for name in self._weight_names}
        super()._apply(fn, recurse)
        for name, old in before.items():
            new = self._buffers[name]
            if new is not None and new.dtype != old.dtype:
                self._buffers[name] = old.to(device=new.device)
        return self

    def __deepcopy__(self, memo):
        # The compiled layer is immutable and shared (its ctypes handles
        # cannot be copied); the copy gets its own weights and handle.
        weights = {name: copy.deepcopy(getattr(self, name), memo) for name in self._weight_names}
        new = type(self)(self.layer, weights)
        memo[id(self)] = new
        new.train(self.training)
        return new

    def extra_repr(self) -> str:
        return f"{self.layer.name!r}, kind={self.spec['kind']!r}, d_model={self.layer.d_model}"
