"""Calls the forward entry point of a CUDA layer library through ctypes.

With the fake driver of test/Runtime (MOE_CUDA_DRIVER), device memory is host
memory and launches are only logged: this checks the host side of a compiled
layer (argument checks, scratch on the stream, every launch accepted by the
runtime) without a GPU. Prints the status and the runtime's message.
usage: run_cuda_layer.py <layer.so> <abi.json> <tokens>
"""
import ctypes
import json
import sys

import numpy as np

lib = ctypes.CDLL(sys.argv[1])
layer = json.load(open(sys.argv[2]))["layers"][0]
tokens = int(sys.argv[3])
assert layer["device"] == "cuda", layer["device"]

DTYPES = {"f32": np.float32, "i32": np.int32, "bf16": np.uint16, "f16": np.float16}


def buffer(desc):
    shape = [tokens * desc.get("rows_per_token", 1) if d == -1 else d
             for d in desc["shape"]]
    return np.zeros(shape, dtype=DTYPES.get(desc["dtype"], np.float32))


inputs = [buffer(b) for b in layer["inputs"]]
outputs = [buffer(b) for b in layer["outputs"]]
args = [ctypes.c_int64(tokens), ctypes.c_int64(layer["d_model"])]
args += [ctypes.c_void_p(a.ctypes.data) for a in inputs]
if layer["seed"]:
    args.append(ctypes.c_uint64(1))
args += [ctypes.c_void_p(a.ctypes.data) for a in outputs]
args.append(ctypes.c_void_p(0))  # the default stream
forward = getattr(lib, layer["entry_point"])
forward.restype = ctypes.c_int32
status = forward(*args)
lib.moe_last_error.restype = ctypes.c_char_p
print(f"status {status}: {lib.moe_last_error().decode()}")
