"""Runs one scenario of a saved CUDA layer in a fresh process (test_cuda_target.py).

The runtime reads $MOE_CUDA_DRIVER once per process, so each driver setup
(the fake driver of test/Runtime, a missing driver, no device, a failing
driver call) needs its own process.  Prints one JSON object: what ran, the
outputs' shapes and dtypes, and the exception raised (type and message).
usage: cuda_subprocess.py <saved layer dir> <scenario> [tokens]
"""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import moe_mlir  # noqa: E402
from moe_mlir import _cuda  # noqa: E402


class FakeDeviceArray:
    """Host memory announced as device memory (__cuda_array_interface__):
    under the fake driver, device memory is host memory."""

    def __init__(self, array, stream=None):
        self.array = array
        self.__cuda_array_interface__ = {
            "shape": array.shape, "typestr": array.dtype.str, "data": (array.ctypes.data, False),
            "strides": None if array.flags.c_contiguous else array.strides, "version": 3,
            "stream": stream}


class FakeDLPack:
    """A DLPack object claiming a CUDA device over host memory."""

    def __init__(self, array):
        self.array = array

    def __dlpack__(self, stream=None):
        return self.array.__dlpack__()

    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA, device 0


def describe(result):
    out = {}
    for name, value in result.items():
        if isinstance(value, moe_mlir.CUDABuffer):
            out[name] = [list(value.shape), value.dtype, "CUDABuffer"]
        elif isinstance(value, np.ndarray):
            out[name] = [list(value.shape), str(value.dtype), "ndarray"]
        else:
            out[name] = [[], type(value).__name__, type(value).__name__]
    return out


def weights(layer, seed=0):
    rs = np.random.default_rng(seed)
    return {n: (rs.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)
            for n, (shape, _) in layer.weight_shapes.items()}


def device_weights(layer, W, wrap):
    """``W`` converted to the spec's dtypes as the kernel reads them, wrapped."""
    out = {}
    for n, a in W.items():
        bits = layer._check_weight(n, a)  # f16 comes back as its uint16 bits
        out[n] = wrap(bits.view(np.float16) if layer.weight_shapes[n][1] == "f16" else bits)
    return out


def torch_shim(layer, W, x, seed):
    """The torch branch of a CUDA layer's call without a GPU: CPU tensors
    dressed as CUDA tensors (their host memory is device memory to the fake
    driver), torch.empty/current_stream/device shimmed to match."""
    import contextlib
    from types import SimpleNamespace

    import torch

    cuda0 = torch.device("cuda", 0)

    class FakeCuda(torch.Tensor):
        @property
        def device(self):
            return cuda0

    def dress(t):
        return torch.Tensor._make_subclass(FakeCuda, t)

    made = []
    real_empty = torch.empty

    def empty(shape, dtype=None, device=None):
        assert device == cuda0, device
        made.append(dress(real_empty(shape, dtype=dtype)))
        return made[-1]

    torch.empty = empty
    torch.cuda.current_stream = lambda device=None: SimpleNamespace(cuda_stream=0x7047C4)
    torch.cuda.device = lambda device: contextlib.nullcontext()
    tw = {}
    for n, a in W.items():
        bits = torch.from_numpy(layer._check_weight(n, a).copy())
        dtype = layer.weight_shapes[n][1]
        tw[n] = dress(bits.view(torch.bfloat16) if dtype == "bf16" else
                      bits.view(torch.float16) if dtype == "f16" else bits)
    xt = dress(torch.from_numpy(x.copy()))
    result = layer.forward(xt, seed=seed, **tw)
    out = {"forward": {k: [list(v.shape), str(v.dtype), type(v).__name__,
                           any(v is m for m in made)] for k, v in result.items()}}
    out["bound"] = list(layer.bind(**tw)(xt, seed=seed).shape)
    try:
        layer.forward(dress(torch.from_numpy(np.repeat(x, 2, axis=1))[:, ::2]), seed=seed, **tw)
    except ValueError as err:
        out["transposed"] = str(err)
    try:
        layer.forward(xt, seed=seed, **dict(tw, w1=dress(torch.zeros(tw["w1"].shape,
                                                                     dtype=torch.float16))))
    except ValueError as err:
        out["wrong_dtype"] = str(err)
    return out


def main():
    path, scenario = sys.argv[1], sys.argv[2]
    tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    report = {"scenario": scenario}
    try:
        report["cuda_available"] = moe_mlir.cuda_available()  # before any layer is loaded
        layer = moe_mlir.load(path)
        report["device"], report["gpu_arch"] = layer.device, layer.gpu_arch
        seed = 7 if layer._abi["seed"] else None
        W = weights(layer)
        x = np.random.default_rng(1).standard_normal((tokens, layer.d_model)).astype(np.float32)
        if scenario == "numpy":
            report["forward"] = describe(layer.forward(x, seed=seed, **W))
            ids, w = layer.route(x, seed=seed, **W)
            report["route"] = describe({"topk_ids": ids, "topk_weights": w})
        elif scenario == "bind":
            with open(sys.argv[4], "a") as log:
                log.write("fake-cuda: -- bind\n")
            bound = layer.bind(**W)
            for _ in range(2):
                with open(sys.argv[4], "a") as log:
                    log.write("fake-cuda: -- forward\n")
                report["forward"] = describe(bound.forward(x, seed=seed))
            with open(sys.argv[4], "a") as log:
                log.write("fake-cuda: -- close\n")
            bound.close()
            try:
                bound(x, seed=seed)
            except ValueError as err:
                report["closed"] = str(err)
        elif scenario in ("cai", "dlpack"):
            wrap = FakeDeviceArray if scenario == "cai" else FakeDLPack
            stream = 0x5EED if scenario == "cai" else None
            dx = FakeDeviceArray(x, stream) if scenario == "cai" else FakeDLPack(x)
            result = layer.forward(dx, seed=seed, **device_weights(layer, W, wrap))
            report["forward"] = describe(result)
            report["out"] = result["out"].numpy().tolist()  # memcpy'd back: what was there
        elif scenario == "scratch":
            # The runtime's scratch pool: freed scratch stays reserved
            # between calls, up to the cache limit (the numpy path
            # synchronises after every call).
            steps = {"before": moe_mlir.cuda_scratch_reserved()}
            layer.forward(x, seed=seed, **W)
            steps["first call"] = moe_mlir.cuda_scratch_reserved()
            layer.forward(x, seed=seed, **W)
            steps["second call"] = moe_mlir.cuda_scratch_reserved()
            moe_mlir.set_cuda_scratch_cache(0)
            layer.forward(x, seed=seed, **W)
            steps["limit 0"] = moe_mlir.cuda_scratch_reserved()
            moe_mlir.set_cuda_scratch_cache(None)
            layer.forward(x, seed=seed, **W)
            steps["no limit"] = moe_mlir.cuda_scratch_reserved()
            # A second Layer of the same library shares its runtime copy.
            second = moe_mlir.load(path)
            steps["loaded twice"] = moe_mlir.cuda_scratch_reserved()
            del second
            moe_mlir.trim_cuda_scratch()
            steps["trimmed"] = moe_mlir.cuda_scratch_reserved()
            report["reserved"] = steps
        elif scenario == "torch_shim":
            report.update(torch_shim(layer, W, x, seed))
        else:
            raise SystemExit(f"unknown scenario {scenario}")
    except Exception as err:  # noqa: BLE001 - reported to the test
        report["error"] = [type(err).__name__, str(err),
                           [c.__name__ for c in type(err).__mro__]]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
