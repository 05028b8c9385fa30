"""Runs a compiled CUDA layer (a saved layer directory) on torch tensors.

The one place where benchmarks/run_gpu.py touches our layer, kept apart so the
names can follow the Python CUDA API when it lands.  Two drivers:

* ``api``: ``moe_mlir.load(dir)`` then ``layer.bind(**weights)`` and
  ``bound(x)`` on torch CUDA tensors (the contract of the CUDA Python API:
  asynchronous, on torch's current stream).  Used when ``moe_mlir`` has
  ``cuda_available``.
* ``ctypes``: the layer library's C entry point called directly from the
  layer's abi.json, with torch tensors' data pointers and torch's current
  stream -- what the API does underneath, written out here so the benchmark
  runs before that API exists.  Works with the fake driver of the build
  (``MOE_CUDA_DRIVER=build/test/Runtime/libfake-cuda.so``) on CPU tensors:
  its device memory is host memory.

``open_layer(dir, driver="auto")`` returns an object with ``.driver``,
``.spec``, ``.weight_specs`` (name -> (shape, dtype)) and ``.bind(weights)``
-> callable ``f(x) -> out`` (x: float32 [T, D]; out: float32 [T, D]).

    python3 benchmarks/gpu_layer.py host-check <layers-dir> [--T 1,16,...]

(with ``MOE_CUDA_DRIVER`` naming the fake driver; NumPy only, no torch) calls
every layer under ``<layers-dir>`` at each T with placeholder weights: the
fake driver runs nothing, so this checks that the host side of each layer
takes every T -- scratch sizes, grid and block limits -- before any device
time is spent (scripts/gpu/prepare.sh runs it).  It also counts the kernel
launches of a call (every output asked for) from the fake driver's log.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
from pathlib import Path

torch = None          # imported on first use: host-check needs NumPy only


def _torch():
    global torch
    if torch is None:
        import torch as t
        torch = t
    return torch


def _torch_dtype(name: str):
    t = _torch()
    return {"f32": t.float32, "i32": t.int32, "bf16": t.bfloat16, "f16": t.float16}[name]


class LayerError(RuntimeError):
    """A compiled layer refused a call (its moe_status and moe_last_error)."""


def _read_dir(directory: Path):
    manifest = json.loads((directory / "layer.json").read_text())
    abi = json.loads((directory / "abi.json").read_text())
    layers = abi.get("layers", [])
    if len(layers) != 1:
        raise ValueError(f"{directory}/abi.json: expected one layer, found {len(layers)}")
    return manifest, layers[0]


class CtypesLayer:
    driver = "ctypes"

    def __init__(self, directory):
        directory = Path(directory)
        self.directory = directory
        self.manifest, self.abi = _read_dir(directory)
        self.spec = self.manifest["spec"]
        if self.abi.get("device") != "cuda":
            raise ValueError(f"{directory}: not a CUDA layer (abi device "
                             f"{self.abi.get('device')!r}); compile with --target=cuda")
        self.lib = ctypes.CDLL(str(directory / Path(self.manifest["library"]).name))
        self.lib.moe_last_error.restype = ctypes.c_char_p
        self.inputs = self.abi["inputs"]           # x first, then the weights
        self.outputs = self.abi["outputs"]
        fn = getattr(self.lib, self.abi["entry_point"])
        fn.argtypes = ([ctypes.c_int64, ctypes.c_int64] + [ctypes.c_void_p] * len(self.inputs)
                       + ([ctypes.c_uint64] if self.abi["seed"] else [])
                       + [ctypes.c_void_p] * len(self.outputs) + [ctypes.c_void_p])
        fn.restype = ctypes.c_int32
        self.fn = fn
        self.weight_specs = {b["name"]: (tuple(b["shape"]), b["dtype"]) for b in self.inputs[1:]}

    def device_count(self) -> int:
        f = self.lib.moe_cuda_device_count
        f.restype = ctypes.c_int32
        return int(f())

    def bind(self, weights: dict):
        args = []
        for b in self.inputs[1:]:
            name = b["name"]
            if name not in weights:
                raise ValueError(f"missing weight {name!r}")
            t = weights[name]
            want = _torch_dtype(b["dtype"])
            if t.dtype != want or tuple(t.shape) != tuple(b["shape"]) or not t.is_contiguous():
                raise ValueError(f"weight {name!r}: need contiguous {want} {b['shape']}, got "
                                 f"{t.dtype} {list(t.shape)} contiguous={t.is_contiguous()}")
            args.append(t)
        return _CtypesBound(self, args)


class _CtypesBound:
    def __init__(self, layer: CtypesLayer, args):
        self.layer = layer
        self.args = args                       # keeps the tensors alive
        self.ptrs = [ctypes.c_void_p(t.data_ptr()) for t in args]

    def forward(self, x, poison: bool = False):
        """Every output of the layer, by name.  ``poison`` fills them with NaN
        (i32: -1) first, so that what a kernel leaves unwritten shows."""
        torch = _torch()
        L = self.layer
        if x.dtype != torch.float32 or x.dim() != 2 or x.shape[1] != L.abi["d_model"]:
            raise ValueError(f"x must be float32 [T, {L.abi['d_model']}], got {x.dtype} "
                             f"{list(x.shape)}")
        x = x.contiguous()
        T = x.shape[0]
        outs = {}
        for b in L.outputs:
            shape = [T * b.get("rows_per_token", 1) if d < 0 else d for d in b["shape"]]
            dt = _torch_dtype(b["dtype"])
            if poison:
                fill = -1 if dt == torch.int32 else float("nan")
                outs[b["name"]] = torch.full(shape, fill, dtype=dt, device=x.device)
            else:
                outs[b["name"]] = torch.empty(shape, dtype=dt, device=x.device)
        stream = torch.cuda.current_stream(x.device).cuda_stream if x.is_cuda else 0
        seed = [ctypes.c_uint64(0)] if L.abi["seed"] else []
        status = L.fn(T, L.abi["d_model"], ctypes.c_void_p(x.data_ptr()), *self.ptrs, *seed,
                      *[ctypes.c_void_p(o.data_ptr()) for o in outs.values()],
                      ctypes.c_void_p(stream or None))
        if status != 0:
            raise LayerError(f"{L.abi['entry_point']} returned {status}: "
                             f"{L.lib.moe_last_error().decode(errors='replace')}")
        return outs

    def __call__(self, x):
        return self.forward(x)["out"]


class ApiLayer:
    """The CUDA Python API (moe_mlir.load / bind / bound(x)), when present."""
    driver = "api"

    def __init__(self, directory):
        import moe_mlir
        self.directory = Path(directory)
        self.layer = moe_mlir.load(self.directory)
        self.manifest, self.abi = _read_dir(self.directory)
        self.spec = self.manifest["spec"]
        self.weight_specs = {b["name"]: (tuple(b["shape"]), b["dtype"]) for b in self.abi["inputs"][1:]}

    def bind(self, weights: dict):
        bound = self.layer.bind(**weights)

        def run(x):
            out = bound(x)
            return out["out"] if isinstance(out, dict) else out
        return run


def api_available() -> bool:
    try:
        import moe_mlir
    except Exception:  # noqa: BLE001
        return False
    return hasattr(moe_mlir, "cuda_available")


def open_layer(directory, driver: str = "auto"):
    """The layer saved in ``directory`` with the ``driver`` asked for
    (``auto``: the API when moe_mlir has it, else ctypes)."""
    if driver == "auto":
        driver = "api" if api_available() else "ctypes"
    if driver == "api":
        return ApiLayer(directory)
    if driver == "ctypes":
        return CtypesLayer(directory)
    raise ValueError(f"driver must be auto, api or ctypes, got {driver!r}")


def host_check(layers_dir, tokens) -> int:
    """Calls every CUDA layer under ``layers_dir`` at each of ``tokens`` with
    placeholder weights, through the driver MOE_CUDA_DRIVER names (the fake
    one: nothing runs).  Returns the number of failed calls."""
    import numpy as np
    driver = os.environ.get("MOE_CUDA_DRIVER", "")
    if "fake" not in driver:
        raise SystemExit("host-check runs through the fake driver: set MOE_CUDA_DRIVER="
                         "build/test/Runtime/libfake-cuda.so (a real GPU would run the kernels on "
                         "placeholder weights)")
    import tempfile
    failed = 0
    # The fake driver logs each launch to $FAKE_CUDA_LOG, read at every call.
    log_before = os.environ.get("FAKE_CUDA_LOG")
    log = Path(tempfile.mkdtemp(prefix="host-check-")) / "fake-cuda.log"
    os.environ["FAKE_CUDA_LOG"] = str(log)
    for d in sorted(p.parent for p in Path(layers_dir).glob("*/layer.json")):
        manifest, abi = _read_dir(d)
        lib = ctypes.CDLL(str(d / Path(manifest["library"]).name))
        lib.moe_last_error.restype = ctypes.c_char_p
        fn = getattr(lib, abi["entry_point"])
        fn.restype = ctypes.c_int32
        placeholder = np.zeros(64, np.float32)     # weights: never read on the host
        bad = 0
        launches = {}
        for T in tokens:
            x = np.zeros((T, abi["d_model"]), np.float32)
            outs = []
            for b in abi["outputs"]:
                shape = [T * b.get("rows_per_token", 1) if s < 0 else s for s in b["shape"]]
                outs.append(np.zeros(shape, np.float32 if b["dtype"] == "f32" else np.int32))
            args = [ctypes.c_int64(T), ctypes.c_int64(abi["d_model"]), ctypes.c_void_p(x.ctypes.data)]
            args += [ctypes.c_void_p(placeholder.ctypes.data) for _ in abi["inputs"][1:]]
            if abi["seed"]:
                args.append(ctypes.c_uint64(0))
            args += [ctypes.c_void_p(o.ctypes.data) for o in outs] + [ctypes.c_void_p(None)]
            log.write_text("")
            status = fn(*args)
            launches[T] = sum(line.startswith("fake-cuda: launch ")
                              for line in log.read_text().splitlines())
            if status != 0:
                bad += 1
                print(f"host-check {d.name} T={T}: status {status}: "
                      f"{lib.moe_last_error().decode(errors='replace')}")
        counts = sorted(set(launches.values()))
        per_call = (f"{counts[0]} kernel launches per call" if len(counts) == 1 else
                    "kernel launches per call " + ", ".join(f"{n} at T = {T}"
                                                            for T, n in launches.items()))
        print(f"host-check {d.name}: T = {', '.join(map(str, tokens))}: "
              + ("ok" if not bad else "FAILED") + f"; {per_call}")
        failed += bad
    if log_before is None:
        os.environ.pop("FAKE_CUDA_LOG", None)
    else:
        os.environ["FAKE_CUDA_LOG"] = log_before
    log.unlink(missing_ok=True)
    log.parent.rmdir()
    return failed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("host-check", help="call every layer through the fake driver")
    h.add_argument("layers")
    h.add_argument("--T", default="1,16,128,1024,8192")
    args = ap.parse_args(argv)
    return 1 if host_check(args.layers, [int(t) for t in args.T.split(",")]) else 0


if __name__ == "__main__":
    sys.exit(main())
