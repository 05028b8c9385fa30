"""The arguments of CUDA layers (``compile(spec, target="cuda")``).

Device arrays -- torch CUDA tensors, objects with ``__cuda_array_interface__``
(CuPy, Numba, ...) and DLPack objects on a CUDA device -- reach the kernels in
place: their pointer is passed, nothing is copied or converted.  NumPy arrays
are copied to device memory of the runtime (``moe_cuda_malloc``) and results
copied back.  Nothing here imports torch: a torch tensor is recognised only
when torch is already imported (no torch tensor can exist otherwise).
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any, Optional, Sequence, Tuple

import numpy as np

__all__ = ["CUDAError", "DeviceArray", "CUDABuffer", "as_device_array"]

# moe_status of moe_runtime.h.
MOE_OK = 0
MOE_ERROR_BAD_SIZE = 2
MOE_ERROR_OUT_OF_MEMORY = 3
MOE_ERROR_CUDA = 4


class CUDAError(RuntimeError):
    """A CUDA layer's call failed in the CUDA driver: no driver, no device, or
    a failing driver call (status MOE_ERROR_CUDA); the message is the runtime's."""


# Element types by the names of abi.json; "u16" is bf16 given as its bits.
_TYPESTRS = {"<f4": "f32", "<f2": "f16", "<i4": "i32", "<u2": "u16"}
_ITEMSIZE = {"f32": 4, "f16": 2, "bf16": 2, "u16": 2, "i32": 4}
_NP = {"f32": np.float32, "f16": np.float16, "i32": np.int32, "u16": np.uint16,
       "bf16": np.uint16}
_DTYPE_NAMES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "u16": "uint16",
                "i32": "int32"}


def dtype_name(dtype: str) -> str:
    return _DTYPE_NAMES.get(dtype, dtype)


def _torch():
    return sys.modules.get("torch")


def _torch_dtypes(torch):
    return {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16",
            torch.int32: "i32", torch.uint16: "u16"}


def _c_contiguous(shape: Sequence[int], strides: Optional[Sequence[int]], itemsize: int) -> bool:
    """Whether ``strides`` (in bytes; None: C order) describe a C-contiguous
    array; the stride of a dimension of size 1 does not matter."""
    if strides is None:
        return True
    expected = itemsize
    for size, stride in zip(reversed(shape), reversed(strides)):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


class DeviceArray:
    """A device array argument as the kernel sees it: its pointer, shape,
    element type, contiguity and device; ``obj`` (and ``keep``) stay
    referenced as long as the argument is used."""

    __slots__ = ("obj", "ptr", "shape", "dtype", "contiguous", "device", "framework",
                 "stream", "keep")

    def __init__(self, obj, ptr: int, shape: Tuple[int, ...], dtype: Optional[str],
                 contiguous: bool, device: Optional[int], framework: str,
                 stream: Optional[int] = None, keep: Any = None):
        self.obj = obj
        self.ptr = ptr
        self.shape = tuple(int(d) for d in shape)
        self.dtype = dtype  # None: a type no layer takes
        self.contiguous = contiguous
        self.device = device  # the CUDA device ordinal; None where unknown
        self.framework = framework  # "torch", "cupy", "cai", "dlpack" or "moe"
        self.stream = stream  # the producer's stream (__cuda_array_interface__ v3)
        self.keep = keep

    def describe(self) -> str:
        where = "a CUDA device" if self.device is None else f"CUDA device {self.device}"
        return f"{self.framework} array on {where}"


# DLPack (dlpack.h, unversioned capsules named "dltensor").
class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_KDL_CPU, _KDL_CUDA, _KDL_CUDA_MANAGED = 1, 2, 13
_DL_CODES = {(2, 32): "f32", (2, 16): "f16", (4, 16): "bf16", (0, 32): "i32", (1, 16): "u16"}
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _from_dlpack(value, what: str) -> DeviceArray:
    capsule = value.__dlpack__()
    try:
        address = _capsule_pointer(capsule, b"dltensor")
    except ValueError:
        raise ValueError(f"{what}: __dlpack__ gave no DLPack tensor capsule") from None
    t = _DLTensor.from_address(address)  # the first member of DLManagedTensor
    ndim = t.ndim
    shape = tuple(t.shape[i] for i in range(ndim))
    dtype = _DL_CODES.get((t.dtype.code, t.dtype.bits)) if t.dtype.lanes == 1 else None
    itemsize = max(1, t.dtype.bits // 8)
    strides = None if not t.strides else tuple(t.strides[i] * itemsize for i in range(ndim))
    # The capsule (not renamed: its destructor calls the producer's deleter)
    # keeps the memory alive while it is referenced.
    return DeviceArray(value, (t.data or 0) + t.byte_offset, shape, dtype,
                       _c_contiguous(shape, strides, itemsize), t.device.device_id, "dlpack",
                       keep=capsule)


def as_device_array(value, what: str) -> Optional[DeviceArray]:
    """``value`` as a :class:`DeviceArray` when it lives in CUDA memory, None
    for a NumPy array; ValueError for anything else (naming ``what``)."""
    if isinstance(value, np.ndarray):
        return None
    if isinstance(value, DeviceArray):
        return value
    torch = _torch()
    if torch is not None and isinstance(value, torch.Tensor):
        if value.device.type != "cuda":
            raise ValueError(f"{what} is a torch tensor on {value.device.type}: a CUDA layer "
                             f"takes CUDA tensors (used in place) or NumPy arrays (copied to "
                             f"the device)")
        dtype = _torch_dtypes(torch).get(value.dtype)
        return DeviceArray(value, value.data_ptr(), tuple(value.shape), dtype,
                           value.is_contiguous(), value.device.index, "torch")
    interface = getattr(value, "__cuda_array_interface__", None)
    if interface is not None:
        shape = tuple(interface["shape"])
        dtype = _TYPESTRS.get(interface["typestr"])
        itemsize = np.dtype(interface["typestr"]).itemsize
        strides = interface.get("strides")
        ptr = interface["data"][0] or 0
        framework, device = "cai", None
        if type(value).__module__.split(".")[0] == "cupy":
            framework, device = "cupy", int(value.device.id)
        elif isinstance(value, CUDABuffer):
            framework, device = "moe", value.device
        return DeviceArray(value, ptr, shape, dtype, _c_contiguous(shape, strides, itemsize),
                           device, framework, stream=interface.get("stream"))
    if hasattr(value, "__dlpack__") and hasattr(value, "__dlpack_device__"):
        device_type, device_id = value.__dlpack_device__()
        if int(device_type) in (_KDL_CUDA, _KDL_CUDA_MANAGED):
            return _from_dlpack(value, what)
        raise ValueError(f"{what} is a DLPack array on device type {int(device_type)} "
                         f"(not CUDA): pass a NumPy array (copied to the device) or a CUDA "
                         f"array")
    raise ValueError(f"{what} must be a numpy.ndarray or a CUDA array (a torch CUDA tensor, "
                     f"__cuda_array_interface__ or DLPack), got {type(value).__name__}")


# --------------------------------------------------------------------------- #
# The runtime's device memory helpers, per layer library
# --------------------------------------------------------------------------- #

class Runtime:
    """The CUDA helpers of one layer library's runtime (each library embeds
    its own copy: its own driver handle, module cache and last error)."""

    def __init__(self, lib: ctypes.CDLL):
        self.lib = lib
        lib.moe_cuda_device_count.argtypes, lib.moe_cuda_device_count.restype = [], ctypes.c_int32
        lib.moe_cuda_malloc.argtypes, lib.moe_cuda_malloc.restype = [ctypes.c_int64], ctypes.c_void_p
        lib.moe_cuda_free.argtypes, lib.moe_cuda_free.restype = [ctypes.c_void_p], None
        for name in ("moe_cuda_memcpy_to_device", "moe_cuda_memcpy_to_host"):
            fn = getattr(lib, name)
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
            fn.restype = ctypes.c_int32
        lib.moe_cuda_synchronize.argtypes = [ctypes.c_void_p]
        lib.moe_cuda_synchronize.restype = ctypes.c_int32
        lib.moe_last_error.restype = ctypes.c_char_p
        lib.moe_last_error_code.argtypes, lib.moe_last_error_code.restype = [], ctypes.c_int32
        # The controls of the runtime's scratch pools; layer libraries built
        # before the pools lack them.
        self.has_scratch_pool = hasattr(lib, "moe_cuda_trim_scratch")
        if self.has_scratch_pool:
            lib.moe_cuda_set_scratch_cache_limit.argtypes = [ctypes.c_int64]
            lib.moe_cuda_set_scratch_cache_limit.restype = ctypes.c_int32
            for name, restype in (("moe_cuda_get_scratch_cache_limit", ctypes.c_int64),
                                  ("moe_cuda_trim_scratch", ctypes.c_int32),
                                  ("moe_cuda_scratch_reserved", ctypes.c_int64)):
                getattr(lib, name).argtypes, getattr(lib, name).restype = [], restype

    def message(self) -> str:
        return self.lib.moe_last_error().decode(errors="replace")

    def fail(self, what: str, status: int):
        """The exception for ``status`` of the call ``what``."""
        message = self.message()
        if what and not message.startswith(what):
            message = f"{what}: {message}"
        if status == MOE_ERROR_OUT_OF_MEMORY:
            return MemoryError(message)
        if status == MOE_ERROR_CUDA:
            return CUDAError(message)
        if status == MOE_ERROR_BAD_SIZE:
            return ValueError(message)
        return RuntimeError(f"{what} failed ({status}): {message}")

    def device_count(self) -> int:
        return int(self.lib.moe_cuda_device_count())

    def set_scratch_cache_limit(self, limit: int) -> None:
        """Sets the cache limit of this runtime's scratch pools (< 0: none)."""
        if self.has_scratch_pool:
            status = self.lib.moe_cuda_set_scratch_cache_limit(limit)
            if status != MOE_OK:
                raise self.fail("moe_cuda_set_scratch_cache_limit", status)

    def trim_scratch(self) -> None:
        if self.has_scratch_pool:
            status = self.lib.moe_cuda_trim_scratch()
            if status != MOE_OK:
                raise self.fail("moe_cuda_trim_scratch", status)

    def scratch_reserved(self) -> int:
        if not self.has_scratch_pool:
            return 0
        reserved = int(self.lib.moe_cuda_scratch_reserved())
        if reserved < 0:
            raise self.fail("moe_cuda_scratch_reserved", MOE_ERROR_CUDA)
        return reserved

    def malloc(self, nbytes: int, what: str) -> int:
        ptr = self.lib.moe_cuda_malloc(int(nbytes))
        if not ptr:
            raise self.fail(what, int(self.lib.moe_last_error_code()) or MOE_ERROR_CUDA)
        return ptr

    def free(self, ptr: int) -> None:
        self.lib.moe_cuda_free(ptr)

    def to_device(self, dst: int, src: np.ndarray, what: str, stream=None) -> None:
        status = self.lib.moe_cuda_memcpy_to_device(dst, src.ctypes.data, src.nbytes, stream)
        if status:
            raise self.fail(what, status)

    def to_host(self, dst: np.ndarray, src: int, what: str, stream=None) -> None:
        status = self.lib.moe_cuda_memcpy_to_host(dst.ctypes.data, src, dst.nbytes, stream)
        if status:
            raise self.fail(what, status)

    def synchronize(self, what: str, stream=None) -> None:
        status = self.lib.moe_cuda_synchronize(stream)
        if status:
            raise self.fail(what, status)

    def upload(self, array: np.ndarray, what: str) -> int:
        """A new device buffer holding ``array`` (copied on the default stream;
        the caller synchronises before using or freeing it)."""
        ptr = self.malloc(array.nbytes, what)
        try:
            self.to_device(ptr, array, what)
        except BaseException:
            self.free(ptr)
            raise
        return ptr


def current_device() -> int:
    """The device the runtime's next call uses when no argument says: the
    device torch made current, else device 0 (the runtime's primary context)."""
    torch = _torch()
    try:
        if torch is not None and torch.cuda.is_initialized():
            return int(torch.cuda.current_device())
    except Exception:  # noqa: BLE001 - a torch without CUDA
        pass
    return 0


class CUDABuffer:
    """Device memory of a layer's runtime (``moe_cuda_malloc``), freed when
    the object goes away: the outputs of a CUDA layer called with device
    arrays of no known framework, and the weights :meth:`Layer.bind` copied
    to the device.  Exposes ``__cuda_array_interface__`` (version 3), so
    CuPy, Numba or torch (``torch.as_tensor(buf, device="cuda")``) can read
    it in place; :meth:`numpy` copies it to the host."""

    def __init__(self, runtime: Runtime, shape, dtype: str, device: Optional[int] = None,
                 what: str = "moe_cuda_malloc"):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = dtype
        self.device = current_device() if device is None else device
        self._runtime = runtime
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * _ITEMSIZE[dtype]
        self.ptr = runtime.malloc(self.nbytes, what)

    @property
    def __cuda_array_interface__(self):
        typestr = {v: k for k, v in _TYPESTRS.items()}["u16" if self.dtype == "bf16" else self.dtype]
        return {"shape": self.shape, "typestr": typestr, "data": (self.ptr, False),
                "strides": None, "version": 3, "stream": None}

    def numpy(self, stream=None) -> np.ndarray:
        """A host copy (waits for the work queued on ``stream``, default the
        legacy default stream)."""
        out = np.empty(self.shape, dtype=_NP[self.dtype])
        self._runtime.to_host(out, self.ptr, "CUDABuffer.numpy", stream)
        self._runtime.synchronize("CUDABuffer.numpy", stream)
        return out

    def free(self) -> None:
        """Frees the memory now (once no queued work uses it)."""
        ptr, self.ptr = self.ptr, None
        if ptr:
            self._runtime.free(ptr)

    def __del__(self):
        try:
            self.free()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"CUDABuffer(shape={list(self.shape)}, dtype={dtype_name(self.dtype)})"
