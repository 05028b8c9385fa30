"""Compile layer specs with ``moe-compile`` and run the kernels on NumPy arrays.

``compile(spec)`` validates the spec, compiles it once per (spec, target,
options, compiler build) into a shared library kept in an on-disk cache, and
returns a :class:`Layer` whose calls check every argument before the kernel
sees it.  The argument order comes from the compiler (``--emit=abi``), never
from a second copy of the contract here.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
import weakref
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from . import _cuda
from ._cuda import CUDABuffer, CUDAError
from .spec import load_spec, spec_hash, weight_shapes

__all__ = ["compile", "load", "Layer", "BoundLayer", "CompileError", "SpecError", "CUDAError",
           "CUDABuffer", "find_compiler", "cache_dir", "set_num_threads", "get_num_threads",
           "cuda_available"]

TARGETS = ("cpu", "cuda")
GPU_ARCH_DEFAULT = "sm_90"
_GPU_ARCH = re.compile(r"sm_[0-9]{2,3}[af]?")
# The "abi_version" of moe-compile --emit=abi this module calls.
_ABI_VERSION = 1


class CompileError(RuntimeError):
    """moe-compile failed for a reason other than the spec itself."""


class SpecError(ValueError):
    """moe-compile rejected the spec; the message is its file:line:col diagnostic."""


class CompilerWarning(UserWarning):
    """moe-compile built the layer but remarked on it: a scratch buffer whose
    size it could not bound before the work starts is allocated where it is
    used, so running out of memory there aborts instead of returning
    MOE_ERROR_OUT_OF_MEMORY.  The message has moe-compile's located remarks."""


# What moe-compile says about a layer it still builds.
_REMARK = re.compile(r"\bremark: ")


# moe-compile locates spec errors: `<file>:<line>:<col>: error: <message>`.
_LOCATED_ERROR = re.compile(r"^.+:\d+:\d+: error: ", re.MULTILINE)


def find_compiler() -> Path:
    """The moe-compile executable: $MOE_COMPILE, the repo's build tree, or PATH."""
    env = os.environ.get("MOE_COMPILE")
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"MOE_COMPILE={env} is not a file")
        return path
    repo = Path(__file__).resolve().parents[2]
    build = Path(os.environ.get("MOE_BUILD_DIR", repo / "build"))
    candidate = build / "bin" / "moe-compile"
    if candidate.is_file():
        return candidate
    found = shutil.which("moe-compile")
    if found:
        return Path(found)
    raise FileNotFoundError(
        "moe-compile not found: build the project (scripts/build.sh), put "
        "moe-compile on PATH, or set MOE_COMPILE")


def cache_dir() -> Path:
    """Where compiled layers are kept: $MOE_MLIR_CACHE or ~/.cache/moe_mlir."""
    env = os.environ.get("MOE_MLIR_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "moe_mlir"


def _compiler_fingerprint(compiler: Path) -> str:
    # A rebuilt compiler may generate different code, and a rebuilt runtime
    # is linked into every layer: key the cache on both.
    parts = []
    for path in (compiler, compiler.parent.parent / "lib" / "libmoe_runtime.a"):
        if path.is_file():
            st = path.stat()
            parts.append(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}")
    return ";".join(parts)


def _ptxas_fingerprint() -> str:
    """The ptxas moe-compile uses for --target=cuda ($CUDA_HOME, $CUDA_PATH,
    /usr/local/cuda, PATH): another toolkit may assemble other SASS."""
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "ptxas").is_file():
            path = (Path(root) / "bin" / "ptxas").resolve()
            break
    else:
        found = shutil.which("ptxas")
        if not found:
            return ""
        path = Path(found).resolve()
    st = path.stat()
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def _host_fingerprint() -> str:
    """Identifies the host CPU for --mcpu=native: a cache shared between
    machines must not hand one CPU's kernel to another."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return f"{platform.machine()}:{hashlib.sha256(flags.encode()).hexdigest()[:16]}"


def _spec_source(spec) -> Tuple[Optional[Path], Optional[str]]:
    """The file moe-compile should read (so its errors point into it), or text."""
    if isinstance(spec, Mapping):
        return None, json.dumps(spec)
    if isinstance(spec, os.PathLike):
        return Path(spec), None
    if isinstance(spec, str):
        text = spec.strip()
        if "\n" not in text and (text.endswith((".yaml", ".yml", ".json")) or os.path.isfile(text)):
            return Path(text), None
        return None, spec
    raise TypeError(f"spec must be a path, YAML/JSON text or a dict, got {type(spec).__name__}")


def _run(compiler: Path, args, source: Path) -> str:
    proc = subprocess.run([str(compiler), *args, str(source)], capture_output=True, text=True)
    if proc.returncode != 0:
        message = proc.stderr.strip()
        if _LOCATED_ERROR.search(message) and str(source) in message:
            raise SpecError(message)
        raise CompileError(f"moe-compile {' '.join(args)} failed:\n{message}")
    if _REMARK.search(proc.stderr):
        warnings.warn(CompilerWarning(f"moe-compile {' '.join(args)}:\n{proc.stderr.strip()}"),
                      stacklevel=3)
    return proc.stdout


PIPELINES = ("fast", "reference")


def compile(spec, target: str = "cpu", *, gpu_arch: str = GPU_ARCH_DEFAULT, opt_level: int = 3,
            mcpu: str = "native", mattr: str = "", pipeline: str = "fast", tiles: str = "",
            tensor_cores: bool = True, mma_precision: str = "f32",
            cache: bool = True) -> "Layer":  # noqa: A001
    """Compiles ``spec`` (a path, YAML/JSON text or a dict) for ``target``:
    ``"cpu"`` or ``"cuda"`` (NVIDIA GPUs of ``gpu_arch``, e.g. ``"sm_90"``
    for H100/H200, ``"sm_80"`` for A100; needs ptxas of the CUDA toolkit, no
    GPU).  A CUDA layer's kernels are embedded as a fatbin (SASS for
    ``gpu_arch``, PTX for newer GPUs); its host code is compiled for ``mcpu``
    like a CPU layer's.  ``pipeline`` and ``tiles`` are CPU options.
    ``tensor_cores`` and ``mma_precision`` are CUDA options: bf16 expert
    GEMMs on tensor cores (sm_80 and newer) with the f32 activations as three
    exact bf16 terms (``"f32"``, results within f32 rounding of the
    reference) or rounded once (``"bf16"``); ``tensor_cores=False`` gives
    the reference's bits.

    ``pipeline`` is ``"fast"`` (tiled, vectorised, multithreaded kernels) or
    ``"reference"`` (the scalar reference lowering, the compiler's oracle);
    ``tiles`` overrides tile sizes of the fast kernels as moe-lower-to-cpu
    options, e.g. ``"row-block=32 col-block=128"``, on top of the spec's own
    ``tiles`` (per option, these win).

    Raises ValueError for an invalid spec, naming the field (SpecError, a
    ValueError, when only moe-compile's stricter checks reject it, with its
    file:line:col diagnostic); CompileError if the compiler fails otherwise.  With ``cache`` the shared library is reused across
    processes for the same spec, target, options and compiler build.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if not isinstance(gpu_arch, str) or not _GPU_ARCH.fullmatch(gpu_arch):
        raise ValueError(f"gpu_arch must name a CUDA architecture like 'sm_90' or 'sm_80', "
                         f"got {gpu_arch!r}")
    if target == "cpu" and gpu_arch != GPU_ARCH_DEFAULT:
        raise ValueError(f"gpu_arch={gpu_arch!r} is an option of target='cuda', not 'cpu'")
    if not isinstance(tensor_cores, bool):
        raise ValueError(f"tensor_cores must be True or False, got {tensor_cores!r}")
    if mma_precision not in ("f32", "bf16"):
        raise ValueError(f"mma_precision must be 'f32' or 'bf16', got {mma_precision!r}")
    if target == "cpu" and (not tensor_cores or mma_precision != "f32"):
        raise ValueError("tensor_cores and mma_precision are options of target='cuda'")
    if target == "cuda":
        if pipeline != "fast":
            raise ValueError(f"pipeline={pipeline!r} is an option of the CPU target: "
                             f"target='cuda' has one pipeline")
        if tiles:
            raise ValueError("tiles are options of the CPU target's kernels, not of "
                             "target='cuda'")
    if (isinstance(opt_level, bool) or not isinstance(opt_level, (int, np.integer))
            or opt_level not in (0, 1, 2, 3)):
        raise ValueError(f"opt_level must be 0..3, got {opt_level!r}")
    # Not a string, they would reach moe-compile's command line as their repr.
    for option, value in (("mcpu", mcpu), ("mattr", mattr)):
        if not isinstance(value, str):
            raise ValueError(f"{option} must be a string, got {type(value).__name__}")
    if pipeline not in PIPELINES:
        raise ValueError(f"pipeline must be one of {PIPELINES}, got {pipeline!r}")
    if not isinstance(tiles, str):
        raise ValueError(f"tiles must be a string of pipeline options, got {type(tiles).__name__}")
    normalized = load_spec(spec)
    compiler = find_compiler()
    if target == "cuda":
        # --mcpu/--mattr: the host code (argument checks, launches).
        options = [f"--target={target}", f"--gpu-arch={gpu_arch}", f"-O{opt_level}",
                   f"--mcpu={mcpu}", f"--gpu-tensor-cores={str(tensor_cores).lower()}",
                   f"--gpu-mma-precision={mma_precision}"]
    else:
        options = [f"--target={target}", f"-O{opt_level}", f"--mcpu={mcpu}",
                   f"--pipeline={pipeline}"]
    if tiles:
        options.append(f"--tiles={tiles}")
    if mattr:
        options.append(f"--mattr={mattr}")
    identity = [spec_hash(normalized), *options, _compiler_fingerprint(compiler)]
    if target == "cuda":
        identity.append(_ptxas_fingerprint())
    if mcpu == "native":
        identity.append(_host_fingerprint())
    key = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:32]
    entry = cache_dir() / key
    library = entry / f"lib{normalized['name']}.so"
    abi_file = entry / "abi.json"
    manifest_file = entry / MANIFEST_NAME
    if not (cache and library.is_file() and abi_file.is_file() and manifest_file.is_file()):
        entry.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=entry) as tmp:
            path, text = _spec_source(spec)
            if path is None:
                suffix = ".json" if isinstance(spec, Mapping) else ".yaml"
                path = Path(tmp) / f"{normalized['name']}{suffix}"
                path.write_text(text)
            abi_text = _run(compiler, [*options, "--emit=abi"], path)
            built = Path(tmp) / library.name
            _run(compiler, [*options, "--emit=shared", "-o", str(built)], path)
            (Path(tmp) / "abi.json").write_text(abi_text)
            manifest = {"format": MANIFEST_FORMAT, "spec": normalized, "library": library.name,
                        "target": target, "options": options,
                        "gpu_arch": gpu_arch if target == "cuda" else None,
                        "host": _host_fingerprint() if mcpu == "native" else None}
            (Path(tmp) / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
            # Renames are atomic: a concurrent reader sees all or nothing;
            # the manifest goes last, so its presence means a whole entry.
            os.replace(Path(tmp) / "abi.json", abi_file)
            os.replace(built, library)
            os.replace(Path(tmp) / MANIFEST_NAME, manifest_file)
    # The cache key already holds this host's fingerprint for mcpu=native.
    return _load_entry(entry, check_host=False)


# --------------------------------------------------------------------------- #
# Compiled layers as files: save() and load() without the compiler
# --------------------------------------------------------------------------- #

# A saved layer is a directory of three files: the shared library (the
# kernels with the runtime linked in, needing only libc and libm), abi.json
# (moe-compile --emit=abi) and this manifest (the normalised spec and how the
# library was compiled).  It loads where moe-compile and LLVM are absent.
MANIFEST_NAME = "layer.json"
MANIFEST_FORMAT = 1


def _load_entry(directory: Path, check_host: bool = True) -> "Layer":
    manifest_file = directory / MANIFEST_NAME
    if not manifest_file.is_file():
        raise FileNotFoundError(f"{directory} is not a saved layer: no {MANIFEST_NAME} "
                                f"(save one with Layer.save)")
    try:
        manifest = json.loads(manifest_file.read_text())
        abi = json.loads((directory / "abi.json").read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{directory}: corrupt saved layer ({err})") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"{directory} is not a saved layer: no abi.json") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{manifest_file}: unknown saved-layer format "
                         f"{manifest.get('format') if isinstance(manifest, dict) else manifest!r}"
                         f" (this moe_mlir reads format {MANIFEST_FORMAT})")
    if abi.get("abi_version") != _ABI_VERSION:
        raise ValueError(f"{directory / 'abi.json'}: ABI version {abi.get('abi_version')!r}, "
                         f"this moe_mlir calls version {_ABI_VERSION}")
    layers = abi.get("layers", [])
    if len(layers) != 1:
        raise CompileError(f"expected one layer in {directory / 'abi.json'}, found {len(layers)}")
    library = directory / manifest["library"]
    if library.name != Path(manifest["library"]).name or not library.is_file():
        raise FileNotFoundError(f"{directory}: the layer's library {manifest['library']!r} "
                                f"is missing")
    # Kernels compiled for the host CPU (mcpu=native) may use instructions
    # another CPU lacks: an illegal instruction would kill the process.
    host = manifest.get("host")
    if check_host and host is not None and host != _host_fingerprint():
        raise ValueError(
            f"{directory}: compiled for the CPU of another machine (mcpu=native); "
            f"compile with mcpu set to a CPU both machines have to ship a layer, or "
            f"load(..., check_host=False) if this CPU has every feature of that one")
    spec = load_spec(manifest["spec"])
    return Layer(spec, library, layers[0], manifest)


def load(path, *, check_host: bool = True) -> "Layer":
    """Loads a layer saved by :meth:`Layer.save` (or a compile-cache entry):
    ``path`` is the directory, or its ``layer.json``.  Needs neither
    moe-compile nor LLVM: this is how compiled layers are shipped.

    A layer compiled with ``mcpu="native"`` loads only on a CPU with the same
    features (``check_host=False`` skips the check); compile with an explicit
    ``mcpu`` (e.g. ``"x86-64-v3"``) for layers meant for other machines."""
    path = Path(path)
    if path.name == MANIFEST_NAME:
        path = path.parent
    if not path.is_dir():
        raise FileNotFoundError(f"no saved layer at {path}")
    return _load_entry(path, check_host)


# --------------------------------------------------------------------------- #
# Threads
# --------------------------------------------------------------------------- #

# Each layer library embeds its own copy of the runtime, with its own thread
# pool and setting: the setting lives here and goes to every one of them.
_INT32_MAX = 2**31 - 1
_threads_lock = threading.Lock()
_num_threads: Optional[int] = None  # None: the runtime's default
# moe_status of moe_runtime.h.
_MOE_ERROR_OUT_OF_MEMORY = 3

_thread_libraries: "weakref.WeakSet[ctypes.CDLL]" = weakref.WeakSet()

# --------------------------------------------------------------------------- #
# CUDA
# --------------------------------------------------------------------------- #

_cuda_lock = threading.Lock()
# The runtimes of the CUDA layer libraries loaded so far.
_cuda_runtimes: "weakref.WeakSet[_cuda.Runtime]" = weakref.WeakSet()
_runtime_library: Optional[_cuda.Runtime] = None
# The scratch cache limit set by set_cuda_scratch_cache (None: no limit).
_scratch_cache_limit: Optional[int] = None


def _runtime_shared_library() -> Optional[Path]:
    """The runtime's own shared library (libmoe_runtime.so of a build):
    $MOE_RUNTIME_LIBRARY, beside the moe-compile in use, or the repo's build."""
    env = os.environ.get("MOE_RUNTIME_LIBRARY")
    if env:
        return Path(env) if Path(env).is_file() else None
    candidates = []
    try:
        candidates.append(find_compiler().resolve().parent.parent / "lib")
    except FileNotFoundError:
        pass
    repo = Path(__file__).resolve().parents[2]
    candidates.append(Path(os.environ.get("MOE_BUILD_DIR", repo / "build")) / "lib")
    for directory in candidates:
        if (directory / "libmoe_runtime.so").is_file():
            return directory / "libmoe_runtime.so"
    return None


def cuda_available() -> bool:
    """Whether a CUDA driver and at least one device are present, as the
    runtime of CUDA layers sees them (``moe_cuda_device_count() > 0``):
    asked through a CUDA layer library already loaded, else the runtime's
    shared library (libmoe_runtime.so beside moe-compile, or
    $MOE_RUNTIME_LIBRARY).  False without a driver, a device, or either
    library.  Honours $MOE_CUDA_DRIVER as the runtime does."""
    global _runtime_library
    with _cuda_lock:
        runtimes = list(_cuda_runtimes)
        if not runtimes:
            if _runtime_library is None:
                path = _runtime_shared_library()
                if path is None:
                    return False
                try:
                    _runtime_library = _cuda.Runtime(ctypes.CDLL(str(path)))
                except (OSError, AttributeError):
                    return False
            runtimes = [_runtime_library]
    return runtimes[0].device_count() > 0


def set_cuda_scratch_cache(limit: Optional[int]) -> None:
    """Sets how much freed device scratch memory each CUDA layer's runtime
    keeps reserved for its next call, in bytes, in every CUDA layer loaded
    so far and every one loaded later.  ``None`` (the default): no limit,
    as a caching allocator; ``0``: hand all of it back to the device at each
    synchronisation.  Each layer library has its own memory pool per device
    (not the device's default pool)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer))
                              or not 0 <= limit < 2**63):
        raise ValueError(f"scratch cache limit must be None or an int >= 0 (bytes), got {limit!r}")
    global _scratch_cache_limit
    with _cuda_lock:
        _scratch_cache_limit = None if limit is None else int(limit)
        for rt in list(_cuda_runtimes):
            rt.set_scratch_cache_limit(-1 if limit is None else int(limit))


def trim_cuda_scratch() -> None:
    """Hands the device scratch memory that the CUDA layers' pools hold but no
    call uses back to the device.  Memory of calls still queued on a stream
    is only free once the stream got there: synchronise first (e.g.
    ``torch.cuda.synchronize()``) to release all of it."""
    with _cuda_lock:
        for rt in list(_cuda_runtimes):
            rt.trim_scratch()


def cuda_scratch_reserved() -> int:
    """The bytes of device memory the scratch pools of the loaded CUDA layers
    hold now, in use or cached (0 before any CUDA call)."""
    with _cuda_lock:
        # Layers of one library share its runtime copy: count it once.
        copies = {rt.lib._handle: rt for rt in list(_cuda_runtimes)}
        return sum(rt.scratch_reserved() for rt in copies.values())


def _positive_int32(text: Optional[str]) -> Optional[int]:
    """``text`` as the runtime reads $MOE_NUM_THREADS: a positive int32, else None."""
    if text is None or not re.fullmatch(r"\s*[+-]?[0-9]+\s*", text):
        return None
    value = int(text)
    return value if 0 < value <= _INT32_MAX else None


def _default_num_threads() -> int:
    """The runtime's default: $MOE_NUM_THREADS if it is a positive integer,
    else every core this process may run on."""
    value = _positive_int32(os.environ.get("MOE_NUM_THREADS"))
    if value:
        return value
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_num_threads(n: int) -> int:
    """Sets the number of threads compiled kernels use (the calling thread
    included), in every layer loaded so far and every one loaded later.
    ``0`` restores the default: $MOE_NUM_THREADS, else every core this process
    may run on.  Returns the number now in effect."""
    if (isinstance(n, bool) or not isinstance(n, (int, np.integer))
            or not 0 <= n <= _INT32_MAX):
        raise ValueError(f"number of threads must be an int >= 0 (0: the default), got {n!r}")
    global _num_threads
    with _threads_lock:
        _num_threads = int(n) or None
        for lib in list(_thread_libraries):
            lib.moe_set_num_threads(int(n))
    return get_num_threads()


def get_num_threads() -> int:
    """The number of threads compiled kernels use (the calling thread included)."""
    with _threads_lock:
        if _num_threads is not None:
            return _num_threads
        for lib in list(_thread_libraries):
            return int(lib.moe_get_num_threads())
    return _default_num_threads()


def _attach_threads(lib: ctypes.CDLL) -> None:
    """Applies the thread setting to a newly loaded layer library."""
    try:
        set_threads, get_threads = lib.moe_set_num_threads, lib.moe_get_num_threads
    except AttributeError:
        return  # built by a moe-compile whose runtime had no thread pool
    set_threads.argtypes, set_threads.restype = [ctypes.c_int32], ctypes.c_int32
    get_threads.argtypes, get_threads.restype = [], ctypes.c_int32
    with _threads_lock:
        set_threads(_num_threads or 0)
        _thread_libraries.add(lib)


_NP_DTYPES = {"f32": np.float32, "i32": np.int32}

#: The per-token input of hash-routed layers (router.hash_vocab), after x.
TOKEN_IDS = "token_ids"


def _weight_inputs(inputs):
    """The weights among the ABI ``inputs``: all but x and token_ids."""
    return [b for b in inputs[1:] if b["name"] != TOKEN_IDS]

# Elements converted per step of _bf16_bits: its uint32 temporaries stay in
# the caches instead of costing several copies of a multi-GB weight.
_BF16_CHUNK = 1 << 20


def _bf16_bits(a32: np.ndarray) -> np.ndarray:
    """The bf16 bit patterns of float32 ``a32`` rounded to nearest even (as
    ``round_to_dtype(a32, "bf16")``: NaN stays a quiet NaN of the same sign)."""
    out = np.empty(a32.shape, dtype=np.uint16)
    src, dst = a32.reshape(-1).view(np.uint32), out.reshape(-1)
    for start in range(0, src.size, _BF16_CHUNK):
        bits = src[start:start + _BF16_CHUNK]
        # No overflow: only NaN bit patterns reach 2**32 - 0x8000.
        rounded = bits + ((bits >> np.uint32(16)) & np.uint32(1)) + np.uint32(0x7FFF)
        rounded >>= np.uint32(16)
        nan = (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
        if nan.any():
            rounded[nan] = (bits[nan] >> np.uint32(16)) | np.uint32(0x0040)
        dst[start:start + _BF16_CHUNK] = rounded
    return out


class Layer:
    """A compiled layer.  ``layer(x, **weights)`` returns the output [T, D].

    ``x`` is float32 ``[T, D]`` with 1 <= T <= :attr:`max_tokens`; weights
    are named and shaped as in the spec contract (docs/spec.md) and given as
    float32 (rounded to the spec's weight_dtype, round-to-nearest-even), or
    as float16 for f16 weights / raw uint16 bit patterns for bf16 weights.
    Non-contiguous arrays are copied, read-only ones are read in place, and
    outputs are new arrays.  Noisy routers need an integer ``seed``; other
    layers take no seed (any seed but None is refused).  Hash-routed layers
    (``router.hash_vocab``) need ``token_ids``, one integer in
    ``[0, hash_vocab)`` per token; other layers refuse them.  Every
    bad argument raises ValueError.

    CUDA layers (:attr:`device` ``"cuda"``) take the same NumPy arguments
    (copied to the GPU, run on the default stream, synchronised, outputs
    copied back), and device arrays -- torch CUDA tensors,
    ``__cuda_array_interface__`` or DLPack objects on a CUDA device -- in
    place, without copies: they must be contiguous and of the kernel's dtype
    (ValueError otherwise), all on one device.  Their outputs are allocated
    with the caller's framework (``torch.empty`` on ``x``'s device, ...;
    0-d arrays for aux losses) and the call runs on its stream (torch's
    current stream) without waiting for the GPU.  Driver failures (no
    driver, no device, a failing driver call) raise :class:`CUDAError`.
    """

    def __init__(self, spec: Dict[str, Any], library: Path, abi: Dict[str, Any],
                 manifest: Optional[Dict[str, Any]] = None):
        self.spec = spec
        self._manifest = manifest
        self.name = spec["name"]
        self.library_path = library
        self._abi = abi
        self._lib = ctypes.CDLL(str(library))
        #: Where the kernels run: "cpu", or "cuda" (compile(..., target="cuda")).
        self.device = abi.get("device", "cpu")
        if self.device not in TARGETS:
            raise CompileError(f"{library}: unknown device {self.device!r} in its ABI")
        self._cuda = None
        if self.device == "cuda":
            self._cuda = _cuda.Runtime(self._lib)
            with _cuda_lock:
                if _scratch_cache_limit is not None:
                    self._cuda.set_scratch_cache_limit(_scratch_cache_limit)
                _cuda_runtimes.add(self._cuda)
        self._fn = self._forward_function(abi["entry_point"], len(abi["inputs"]))
        # The routing alone, where the layer has routing results: route()
        # does not run the experts.
        self._route = abi.get("route")
        if self._route:
            self._route_fn = self._forward_function(
                self._route["entry_point"], len(self._route["inputs"]),
                seed=self._route["seed"], n_out=len(self._route["outputs"]))
        # Layers with pre-packable expert weights also export a packing
        # function and a forward on its outputs (what bind() uses).
        self._packed = abi.get("packed")
        if self._packed:
            self._packed_fn = self._forward_function(self._packed["entry_point"],
                                                     len(self._packed["inputs"]))
            self._pack_fn = getattr(self._lib, self._packed["pack_entry_point"])
            self._pack_fn.argtypes = [ctypes.c_void_p] * (
                len(self._packed["pack_inputs"]) + len(self._packed["pack_outputs"]))
            self._pack_fn.restype = ctypes.c_int32
        self._lib.moe_last_error.restype = ctypes.c_char_p
        _attach_threads(self._lib)
        self.weight_shapes = weight_shapes(spec)
        compiled = [(b["name"], list(b["shape"]), b["dtype"]) for b in _weight_inputs(abi["inputs"])]
        contract = [(n, list(shape), dtype) for n, (shape, dtype) in self.weight_shapes.items()]
        if compiled != contract:
            raise CompileError(f"compiled weights {compiled} disagree with the spec contract "
                               f"{contract}")

    def _forward_function(self, name: str, n_in: int, seed=None, n_out=None):
        fn = getattr(self._lib, name)
        seed = self._abi["seed"] if seed is None else seed
        n_out = len(self._abi["outputs"]) if n_out is None else n_out
        fn.argtypes = ([ctypes.c_int64, ctypes.c_int64] + [ctypes.c_void_p] * n_in
                       + ([ctypes.c_uint64] if seed else [])
                       + [ctypes.c_void_p] * n_out
                       + ([ctypes.c_void_p] if self.device == "cuda" else []))  # CUstream
        fn.restype = ctypes.c_int32
        return fn

    @property
    def d_model(self) -> int:
        return self._abi["d_model"]

    @property
    def gpu_arch(self) -> Optional[str]:
        """The CUDA architecture of a CUDA layer's kernels (``"sm_90"``, ...); None for CPU layers."""
        if self.device != "cuda":
            return None
        arch = (self._manifest or {}).get("gpu_arch")
        if arch:
            return arch
        for option in (self._manifest or {}).get("options", []):
            if option.startswith("--gpu-arch="):
                return option.split("=", 1)[1]
        return GPU_ARCH_DEFAULT

    @property
    def output_names(self):
        return [b["name"] for b in self._abi["outputs"]]

    # ---------------------------------------------------------------- checks

    @property
    def max_tokens(self) -> int:
        """The most tokens one call takes: past it a buffer of the layer
        would exceed the address space or a 32-bit count of its dispatch
        would overflow (the entry point refuses it with MOE_ERROR_BAD_SIZE)."""
        return self._abi["max_tokens"]

    def _route_max_tokens(self) -> int:
        # One limit for every call of a layer: the routing alone could index
        # more tokens, but no caller of the layer should depend on that.
        return min(self.max_tokens, self._route["max_tokens"])

    def _check_x(self, x, max_tokens: int) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise ValueError(f"x must be a numpy.ndarray, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise ValueError(f"x must be float32, got {x.dtype}")
        if x.ndim != 2 or x.shape[1] != self.d_model:
            raise ValueError(f"x must have shape [T, {self.d_model}], got {list(x.shape)}")
        if x.shape[0] < 1:
            raise ValueError("x must hold at least one token (T >= 1)")
        # Before any copy or output allocation: a broadcast view of 2^40
        # rows is a few bytes until it is made contiguous.
        if x.shape[0] > max_tokens:
            raise ValueError(f"x has {x.shape[0]} tokens; layer {self.name!r} takes at most "
                             f"{max_tokens} per call (its buffers and 32-bit dispatch counts "
                             f"could not be indexed past that)")
        # Non-contiguous views (slices, transposes, broadcasts) are copied;
        # read-only arrays are read in place.
        return np.ascontiguousarray(x)

    def _check_weight(self, name: str, value) -> np.ndarray:
        shape, dtype = self.weight_shapes[name]
        if self.device == "cuda" and not isinstance(value, np.ndarray):
            return self._check_device_weight(name, value, shape, dtype)
        if not isinstance(value, np.ndarray):
            raise ValueError(f"weight {name!r} must be a numpy.ndarray, got {type(value).__name__}")
        if value.shape != tuple(shape):
            raise ValueError(f"weight {name!r} must have shape {list(shape)}, "
                             f"got {list(value.shape)}")
        if dtype == "i32":
            # tid2eid, hash routing's table: expert ids.
            if value.dtype.kind not in "iu":
                raise ValueError(f"weight {name!r} must hold integers, got {value.dtype}")
            experts = self.spec["experts"]
            if value.size and (value.min() < 0 or value.max() >= experts):
                bad = value[(value < 0) | (value >= experts)][0]
                raise ValueError(f"weight {name!r} holds expert ids, each in [0, {experts}), "
                                 f"got {int(bad)}")
            return np.ascontiguousarray(value, dtype=np.int32)
        if dtype == "f32":
            if value.dtype != np.float32:
                raise ValueError(f"weight {name!r} must be float32, got {value.dtype}")
            return np.ascontiguousarray(value)
        if dtype == "f16":
            if value.dtype == np.float16:
                return np.ascontiguousarray(value).view(np.uint16)
            if value.dtype == np.float32:
                return np.ascontiguousarray(value.astype(np.float16)).view(np.uint16)
            raise ValueError(f"weight {name!r} (f16) must be float32 or float16, got {value.dtype}")
        # bf16: float32 values rounded to nearest even, or raw bit patterns.
        if value.dtype == np.uint16:
            return np.ascontiguousarray(value)
        if value.dtype == np.float32:
            return _bf16_bits(np.ascontiguousarray(value))
        raise ValueError(f"weight {name!r} (bf16) must be float32 or uint16 bits, got {value.dtype}")

    def _check_device_weight(self, name, value, shape, dtype) -> "_cuda.DeviceArray":
        """A weight of a CUDA layer given as a device array: used in place,
        so it must already have the spec's shape, element type and layout."""
        arr = _cuda.as_device_array(value, f"weight {name!r}")
        if arr.shape != tuple(shape):
            raise ValueError(f"weight {name!r} must have shape {list(shape)}, got {list(arr.shape)}")
        allowed = ("bf16", "u16") if dtype == "bf16" else (dtype,)
        if arr.dtype not in allowed:
            want = " or ".join(_cuda.dtype_name(d) + (" bits" if d == "u16" else "") for d in allowed)
            raise ValueError(f"weight {name!r} ({dtype}) on the device must be {want}, got "
                             f"{_cuda.dtype_name(arr.dtype) if arr.dtype else 'another dtype'}: "
                             f"device arrays are used in place, never converted (convert it "
                             f"first, or pass a NumPy array, which is converted and copied)")
        if not arr.contiguous:
            raise ValueError(f"weight {name!r} must be contiguous (C order) on the device: "
                             f"device arrays are used in place, never copied "
                             f"(.contiguous() first)")
        return arr

    def _check_weights(self, weights: Mapping[str, Any], needed=None):
        """The weights ``needed`` (default: all, in spec order), checked and
        converted; others may be given too, as long as the layer has them."""
        unknown = sorted(set(weights) - set(self.weight_shapes))
        if unknown:
            raise ValueError(f"unknown weight {unknown[0]!r} for layer {self.name!r} "
                             f"(expected {list(self.weight_shapes)})")
        needed = list(self.weight_shapes) if needed is None else needed
        missing = [n for n in needed if n not in weights]
        if missing:
            raise ValueError(f"missing weight {missing[0]!r} for layer {self.name!r}")
        return [self._check_weight(n, weights[n]) for n in needed]

    @property
    def takes_token_ids(self) -> bool:
        """Whether calls need ``token_ids`` (a hash-routed layer)."""
        return any(b["name"] == TOKEN_IDS for b in self._abi["inputs"])

    def _hash_vocab(self) -> int:
        return next(b["shape"][0] for b in self._abi["inputs"] if b["name"] == "tid2eid")

    def _check_token_ids(self, token_ids, tokens: int, takes: bool):
        """[token_ids] for a function that ``takes`` them, else []: an
        integer array of one id in [0, hash_vocab) per token, as int32 (a
        device array: int32, contiguous, used in place, its values unchecked)."""
        if not takes:
            if token_ids is not None:
                raise ValueError(f"layer {self.name!r} has no hash router and takes no "
                                 f"token_ids; pass token_ids=None")
            return []
        if token_ids is None:
            raise ValueError(f"layer {self.name!r} routes by token id (router.hash_vocab): "
                             f"pass token_ids=<integer array of {tokens} ids>")
        if self.device == "cuda" and not isinstance(token_ids, np.ndarray):
            arr = _cuda.as_device_array(token_ids, "token_ids")
            if arr is not None:
                if arr.dtype != "i32" or tuple(arr.shape) != (tokens,) or not arr.contiguous:
                    raise ValueError(f"token_ids on the device must be contiguous int32 of "
                                     f"shape [{tokens}], got "
                                     f"{_cuda.dtype_name(arr.dtype) if arr.dtype else 'another dtype'}"
                                     f" {list(arr.shape)}")
                return [arr]
        if not isinstance(token_ids, np.ndarray):
            raise ValueError(f"token_ids must be a numpy.ndarray, got {type(token_ids).__name__}")
        if token_ids.dtype.kind not in "iu":
            raise ValueError(f"token_ids must hold integers, got {token_ids.dtype}")
        if token_ids.shape != (tokens,):
            raise ValueError(f"token_ids must have shape [{tokens}] (one id per token of x), "
                             f"got {list(token_ids.shape)}")
        vocab = self._hash_vocab()
        if tokens and (token_ids.min() < 0 or token_ids.max() >= vocab):
            bad = token_ids[(token_ids < 0) | (token_ids >= vocab)][0]
            raise ValueError(f"token_ids must lie in [0, {vocab}) (router.hash_vocab), "
                             f"got {int(bad)}")
        return [np.ascontiguousarray(token_ids, dtype=np.int32)]

    def _check_seed(self, seed, takes_seed: bool):
        """The seed argument of a function that ``takes_seed``, else []. A
        noisy router needs an integer seed; a layer without one refuses any
        seed but None: a seed given to it would be silently meaningless, a
        sign the caller has the wrong layer or spec."""
        if not takes_seed:
            if seed is not None:
                raise ValueError(f"layer {self.name!r} has no noisy router and takes no seed "
                                 f"(got seed={seed!r}); pass seed=None")
            return []
        if seed is None:
            raise ValueError(f"layer {self.name!r} has a noisy router: pass seed=<int>")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer or None, got {type(seed).__name__}")
        return [ctypes.c_uint64(int(seed) % (1 << 64))]

    # ------------------------------------------------------------------ runs

    def forward(self, x, seed=None, token_ids=None, **weights) -> Dict[str, Any]:
        """Every output of the layer: ``out``, routing results, aux losses."""
        return self._forward(x, self._check_weights(weights), seed, token_ids=token_ids)

    @property
    def packs_weights(self) -> bool:
        """Whether :meth:`bind` packs the expert weights into the kernels'
        panel layout (layers with expert MLPs, compiled by the fast pipeline)."""
        return bool(self._packed)

    def bind(self, **weights) -> "BoundLayer":
        """Checks and converts ``weights`` once (bf16/f16 rounding included)
        and returns a callable holding them: ``bound(x)``, ``bound.forward(x)``.

        Where the layer :attr:`packs_weights`, the expert weights are packed
        once into the kernels' panel layout (a copy: later changes to the
        arrays are not seen) and every call runs ``<layer>_forward_packed``,
        whose outputs equal the ``expert-kernel=panel`` kernels' bit for bit.
        Other arrays are kept, not copied, where they are already in the
        kernel's layout; later changes to such an array are seen by the kernel."""
        args = self._check_weights(weights)
        if self.device == "cuda":
            return self._bind_cuda(args)
        if not self._packed:
            return BoundLayer(self, self._fn, args, list(self.weight_shapes))
        return BoundLayer(self, self._packed_fn, self._pack(args),
                          [b["name"] for b in _weight_inputs(self._packed["inputs"])],
                          self._packed["max_tokens"])

    def _pack(self, args):
        """The arguments of the packed forward: ``args`` (checked weights in
        spec order) with the packable ones packed by ``<layer>_pack_weights``."""
        by_name = dict(zip(self.weight_shapes, args))
        packed = {}
        for buf in self._packed["pack_outputs"]:
            dtype = np.float32 if buf["dtype"] == "f32" else np.uint16
            packed[buf["name"]] = np.empty(buf["shape"], dtype=dtype)
        pointers = [by_name[b["name"]].ctypes.data_as(ctypes.c_void_p)
                    for b in self._packed["pack_inputs"]]
        pointers += [a.ctypes.data_as(ctypes.c_void_p) for a in packed.values()]
        self._check_status(self._packed["pack_entry_point"], self._pack_fn(*pointers))
        by_name.update(packed)
        return [by_name[b["name"]] for b in _weight_inputs(self._packed["inputs"])]

    def _bind_cuda(self, args) -> "BoundLayer":
        """NumPy weights copied to device buffers once (kept by the
        BoundLayer, freed by its close()); device arrays kept as they are."""
        rt = self._cuda
        owned = []
        try:
            for i, (name, (_, dtype)) in enumerate(self.weight_shapes.items()):
                a = args[i]
                if isinstance(a, np.ndarray):
                    buf = CUDABuffer(rt, a.shape, dtype, what=f"{self.name}: weight {name!r}")
                    owned.append(buf)
                    rt.to_device(buf.ptr, a, f"{self.name}: weight {name!r}")
                    args[i] = _cuda.as_device_array(buf, name)
            if owned:
                rt.synchronize(f"{self.name}: bind")
        except BaseException:
            for buf in owned:
                buf.free()
            raise
        return BoundLayer(self, self._fn, args, list(self.weight_shapes), owned=owned)

    def _check_status(self, entry_point: str, status: int) -> None:
        if status != 0:
            message = self._lib.moe_last_error().decode(errors="replace")
            # The kernel took its scratch memory before any work: nothing
            # was written, and the call can be retried with fewer tokens.
            if status == _MOE_ERROR_OUT_OF_MEMORY:
                raise MemoryError(message)
            if status == _cuda.MOE_ERROR_CUDA:
                raise CUDAError(message)
            raise RuntimeError(f"{entry_point} failed ({status}): {message}")

    def _forward(self, x, args, seed, fn=None, abi=None,
                 max_tokens: Optional[int] = None, token_ids=None) -> Dict[str, Any]:
        """Runs ``fn`` (default: the forward) of the ABI ``abi`` (default: the
        layer's) on ``x`` (and ``token_ids`` where it takes them) and the
        checked weights ``args``; ``max_tokens`` is ``fn``'s limit (default:
        ``abi``'s)."""
        abi = abi or self._abi
        takes_ids = any(b["name"] == TOKEN_IDS for b in abi["inputs"])
        if self.device == "cuda":
            return self._forward_cuda(x, args, seed, fn or self._fn, abi,
                                      abi["max_tokens"] if max_tokens is None else max_tokens,
                                      token_ids, takes_ids)
        x = self._check_x(x, abi["max_tokens"] if max_tokens is None else max_tokens)
        seed_arg = self._check_seed(seed, abi["seed"])
        tokens = x.shape[0]
        args = [*self._check_token_ids(token_ids, tokens, takes_ids), *args]
        outputs = {}
        for buf in abi["outputs"]:
            shape = [tokens * buf["rows_per_token"] if d < 0 else d for d in buf["shape"]]
            outputs[buf["name"]] = np.empty(shape, dtype=_NP_DTYPES[buf["dtype"]])
        pointers = [a.ctypes.data_as(ctypes.c_void_p) for a in [x, *args]]
        out_pointers = [o.ctypes.data_as(ctypes.c_void_p) for o in outputs.values()]
        fn = fn or self._fn
        self._check_status(fn.__name__, fn(tokens, self.d_model, *pointers, *seed_arg,
                                            *out_pointers))
        return {name: (value.item() if value.ndim == 0 else value)
                for name, value in outputs.items()}

    # ------------------------------------------------------------ CUDA runs

    def _forward_cuda(self, x, args, seed, fn, abi, max_tokens: int, token_ids=None,
                      takes_ids: bool = False) -> Dict[str, Any]:
        """Runs the CUDA entry point ``fn``: in place on device arrays (on
        their stream, asynchronously), or on NumPy ``x`` by copies."""
        seed_arg = self._check_seed(seed, abi["seed"])
        names = [b["name"] for b in abi["inputs"][1:]]
        dx = _cuda.as_device_array(x, "x")
        if dx is None:
            x = self._check_x(x, max_tokens)
            ids = self._check_token_ids(token_ids, x.shape[0], takes_ids)
            return self._forward_cuda_host(x, [*ids, *args], names, seed_arg, fn, abi)
        self._check_device_x(dx, max_tokens)
        args = [*self._check_token_ids(token_ids, dx.shape[0], takes_ids), *args]
        device = dx.device
        for name, a in zip(names, args):
            if isinstance(a, np.ndarray):
                kind = "input" if name == TOKEN_IDS else "weight"
                raise ValueError(
                    f"x is a {dx.describe()} but {kind} {name!r} is a NumPy array: tensors "
                    f"on different devices (pass the weights as CUDA arrays too, or bind() "
                    f"them once: NumPy weights are then copied to the device)")
            if a.device is not None and device is not None and a.device != device:
                raise ValueError(f"x is on CUDA device {device} but weight {name!r} on CUDA "
                                 f"device {a.device}: tensors on different devices")
            device = a.device if device is None else device
        tokens = dx.shape[0]
        shapes = [[tokens * b["rows_per_token"] if d < 0 else d for d in b["shape"]]
                  for b in abi["outputs"]]
        torch = _cuda._torch()
        if dx.framework == "torch":
            dev = dx.obj.device
            stream = torch.cuda.current_stream(dev).cuda_stream
            dtypes = {"f32": torch.float32, "i32": torch.int32}
            outputs = [torch.empty(shape, dtype=dtypes[b["dtype"]], device=dev)
                       for shape, b in zip(shapes, abi["outputs"])]
            out_ptrs = [o.data_ptr() for o in outputs]
            context = torch.cuda.device(dev)
        elif dx.framework == "cupy":
            cupy = sys.modules["cupy"]
            with cupy.cuda.Device(dx.device):
                stream = cupy.cuda.get_current_stream().ptr
                outputs = [cupy.empty(shape, dtype=_NP_DTYPES[b["dtype"]])
                           for shape, b in zip(shapes, abi["outputs"])]
            out_ptrs = [o.data.ptr for o in outputs]
            context = cupy.cuda.Device(dx.device)
        else:
            # The producer's stream (__cuda_array_interface__ v3), else the
            # legacy default stream.
            stream = dx.stream if isinstance(dx.stream, int) and dx.stream > 0 else None
            outputs = [CUDABuffer(self._cuda, shape, b["dtype"], device=device,
                                  what=fn.__name__) for shape, b in zip(shapes, abi["outputs"])]
            out_ptrs = [o.ptr for o in outputs]
            context = contextlib.nullcontext()
        with context:
            status = fn(tokens, self.d_model, dx.ptr, *[a.ptr for a in args], *seed_arg,
                        *out_ptrs, stream)
        self._check_status(fn.__name__, status)
        return dict(zip([b["name"] for b in abi["outputs"]], outputs))

    def _check_device_x(self, dx: "_cuda.DeviceArray", max_tokens: int) -> None:
        if dx.dtype != "f32":
            raise ValueError(f"x must be float32, got "
                             f"{_cuda.dtype_name(dx.dtype) if dx.dtype else 'another dtype'}")
        if len(dx.shape) != 2 or dx.shape[1] != self.d_model:
            raise ValueError(f"x must have shape [T, {self.d_model}], got {list(dx.shape)}")
        if dx.shape[0] < 1:
            raise ValueError("x must hold at least one token (T >= 1)")
        if dx.shape[0] > max_tokens:
            raise ValueError(f"x has {dx.shape[0]} tokens; layer {self.name!r} takes at most "
                             f"{max_tokens} per call (its buffers and 32-bit dispatch counts "
                             f"could not be indexed past that)")
        if not dx.contiguous:
            raise ValueError("x must be contiguous (C order) on the device: device arrays are "
                             "used in place, never copied (.contiguous() first)")

    def _forward_cuda_host(self, x: np.ndarray, args, names, seed_arg, fn,
                           abi) -> Dict[str, Any]:
        """NumPy ``x``: copied to the device with the NumPy weights, run on the
        default stream, synchronised, outputs copied back; every device
        buffer of the call freed, also on errors."""
        rt = self._cuda
        what = fn.__name__
        for name, a in zip(names, args):
            if not isinstance(a, np.ndarray) and a.framework != "moe":
                kind = "input" if name == TOKEN_IDS else "weight"
                raise ValueError(
                    f"x is a NumPy array but {kind} {name!r} is a {a.describe()}: tensors on "
                    f"different devices (pass x on the device too, or all as NumPy arrays)")
        tokens = x.shape[0]
        outputs = {}
        for buf in abi["outputs"]:
            shape = [tokens * buf["rows_per_token"] if d < 0 else d for d in buf["shape"]]
            outputs[buf["name"]] = np.empty(shape, dtype=_NP_DTYPES[buf["dtype"]])
        owned = []
        queued = False
        try:
            pointers = []
            for a in [x, *args]:
                if isinstance(a, np.ndarray):
                    owned.append(rt.malloc(a.nbytes, what))
                    queued = True
                    rt.to_device(owned[-1], a, what)
                    pointers.append(owned[-1])
                else:
                    pointers.append(a.ptr)
            out_pointers = []
            for o in outputs.values():
                owned.append(rt.malloc(o.nbytes, what))
                out_pointers.append(owned[-1])
            queued = True
            self._check_status(what, fn(tokens, self.d_model, *pointers, *seed_arg,
                                        *out_pointers, None))
            for o, p in zip(outputs.values(), out_pointers):
                rt.to_host(o, p, what)
            rt.synchronize(what)
            queued = False
        finally:
            if queued:  # an error: wait for what was queued before freeing
                rt.lib.moe_cuda_synchronize(None)
            for p in owned:
                rt.free(p)
        return {name: (value.item() if value.ndim == 0 else value)
                for name, value in outputs.items()}

    def __call__(self, x, seed=None, token_ids=None, **weights) -> np.ndarray:
        return self.forward(x, seed=seed, token_ids=token_ids, **weights)["out"]

    def route(self, x, seed=None, token_ids=None, **weights) -> Tuple[np.ndarray, np.ndarray]:
        """``(topk_ids, topk_weights)`` of the router (before capacity), the
        same bits as :meth:`forward`'s.  Runs ``<layer>_route``, which reads
        only the weights routing needs (the others may be left out) and runs
        no expert."""
        if not self._route:
            result = self.forward(x, seed=seed, token_ids=token_ids, **weights)
        else:
            needed = [b["name"] for b in _weight_inputs(self._route["inputs"])]
            result = self._forward(x, self._check_weights(weights, needed), seed,
                                   self._route_fn, self._route, self._route_max_tokens(),
                                   token_ids=token_ids)
        return result["topk_ids"], result["topk_weights"]

    def aux_losses(self, x, seed=None, token_ids=None, **weights) -> Dict[str, float]:
        """The aux losses the spec asks for, by name."""
        result = self.forward(x, seed=seed, token_ids=token_ids, **weights)
        return {name: result[name] for name in self.spec.get("aux_losses", [])}

    def save(self, directory) -> Path:
        """Writes the compiled layer to ``directory`` (created; files of the
        same names replaced): its shared library, abi.json and layer.json.
        :func:`load` reads it back, without moe-compile.  Returns the path."""
        if self._manifest is None:
            raise ValueError(f"layer {self.name!r} has no manifest to save (build it with "
                             f"moe_mlir.compile or moe_mlir.load)")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.library_path, directory / self.library_path.name)
        (directory / "abi.json").write_text(json.dumps(
            {"abi_version": _ABI_VERSION, "layers": [self._abi]}, indent=2))
        (directory / MANIFEST_NAME).write_text(json.dumps(
            {**self._manifest, "library": self.library_path.name}, indent=1))
        return directory

    def __repr__(self) -> str:
        device = f", device='cuda', gpu_arch={self.gpu_arch!r}" if self.device == "cuda" else ""
        return (f"Layer({self.name!r}, kind={self.spec['kind']!r}{device}, "
                f"library={str(self.library_path)!r})")


class BoundLayer:
    """A compiled layer with its weights checked and converted once
    (:meth:`Layer.bind`); calls take only ``x`` (and ``seed`` for noisy routers,
    ``token_ids`` for hash routers)."""

    def __init__(self, layer: Layer, fn, args, names, max_tokens: Optional[int] = None,
                 owned=()):
        self.layer = layer
        self._fn = fn
        self._args = args
        self._by_name = dict(zip(names, args))
        self._max_tokens = max_tokens
        # CUDA layers: the device copies of NumPy weights, freed by close().
        self._owned = list(owned)

    def close(self) -> None:
        """Frees the device copies of the weights bind() copied to the GPU
        (CUDA layers; a no-op otherwise), after the work queued on the
        default stream; calls with work still queued on other streams must
        be synchronised first.  The BoundLayer cannot be called afterwards.
        Also done when it is garbage-collected."""
        owned, self._owned = self._owned, []
        if owned:
            self._args = None
            self._by_name = {}
            self.layer._cuda.lib.moe_cuda_synchronize(None)
            for buf in owned:
                buf.free()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __enter__(self) -> "BoundLayer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._args is None:
            raise ValueError(f"BoundLayer of {self.layer.name!r} is closed")

    def forward(self, x, seed=None, token_ids=None) -> Dict[str, Any]:
        self._check_open()
        return self.layer._forward(x, self._args, seed, self._fn,
                                   max_tokens=self._max_tokens, token_ids=token_ids)

    def __call__(self, x, seed=None, token_ids=None) -> np.ndarray:
        return self.forward(x, seed=seed, token_ids=token_ids)["out"]

    def route(self, x, seed=None, token_ids=None) -> Tuple[np.ndarray, np.ndarray]:
        """As :meth:`Layer.route`: the routing alone, no expert run."""
        self._check_open()
        layer = self.layer
        if not layer._route:
            result = self.forward(x, seed=seed, token_ids=token_ids)
        else:
            # Routing reads no packed weight: the router's are never packed.
            args = [self._by_name[b["name"]] for b in _weight_inputs(layer._route["inputs"])]
            result = layer._forward(x, args, seed, layer._route_fn, layer._route,
                                    layer._route_max_tokens(), token_ids=token_ids)
        return result["topk_ids"], result["topk_weights"]

    def __repr__(self) -> str:
        return f"BoundLayer({self.layer.name!r})"
