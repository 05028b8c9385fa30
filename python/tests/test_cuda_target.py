"""CUDA layers from Python: ``moe_mlir.compile(spec, target="cuda")``.

Without a GPU (CI): compiling (needs ptxas), the errors of a missing driver
or device, and the host side of every call path end to end against the fake
driver of test/Runtime (``libfake-cuda.so``: device memory is host memory,
launches are only logged, nothing computes -- so only shapes, dtypes and the
driver calls are checked there), each in its own process (the runtime reads
$MOE_CUDA_DRIVER once per process).

On a GPU (skipped with a reason where ``moe_mlir.cuda_available()`` is
False): the layers of :mod:`moe_mlir.gpu_layers` against the NumPy
reference, batch invariance, determinism, torch CUDA tensors in place and on
a non-default stream.  A GPU machine without the compiler runs them on
layers saved here: ``python -m moe_mlir.gpu_layers prepare <dir>``, then
``MOE_GPU_LAYERS=<dir> python -m pytest python/tests/test_cuda_target.py``.
"""

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import moe_mlir
from moe_mlir import _cuda, gpu_layers
from moe_mlir import reference as R
from moe_mlir.compiler import find_compiler

from compile_helpers import HAVE_COMPILER, make_weights, make_x, moe_spec

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TINY = REPO / "examples" / "app" / "tiny_moe.yaml"


def _have_ptxas() -> bool:
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / "ptxas").is_file():
            return True
    return shutil.which("ptxas") is not None


HAVE_PTXAS = _have_ptxas()
CAN_COMPILE = HAVE_COMPILER and HAVE_PTXAS
GPU_LAYERS = gpu_layers.layers_dir()

pytestmark = pytest.mark.skipif(
    not CAN_COMPILE and GPU_LAYERS is None,
    reason="CUDA layers cannot be compiled here: " + (
        "ptxas (CUDA toolkit) not found in $CUDA_HOME, /usr/local/cuda or PATH"
        if HAVE_COMPILER else "moe-compile not built") +
    ", and $MOE_GPU_LAYERS names no precompiled layers")
requires_compile = pytest.mark.skipif(
    not CAN_COMPILE, reason="compiling CUDA layers needs moe-compile and ptxas")


def _fake_driver():
    try:
        path = find_compiler().resolve().parent.parent / "test" / "Runtime" / "libfake-cuda.so"
    except FileNotFoundError:
        return None
    return path if path.is_file() else None


FAKE = _fake_driver() if CAN_COMPILE else None
requires_fake = pytest.mark.skipif(
    FAKE is None, reason="no libfake-cuda.so next to the moe-compile in use (build the "
                         "fake-cuda target) or no compiler")

# A small layer with every kind of output: routing, aux losses (0-d), a seed.
AUX_SPEC = moe_spec("cu_aux", d_model=16, router={"normalize": True, "noise": True},
                    aux_losses=["load_balance", "z_loss"])


# --------------------------------------------------------------------------- #
# Without a GPU
# --------------------------------------------------------------------------- #

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """tiny_moe.yaml and AUX_SPEC compiled for CUDA and saved."""
    if not CAN_COMPILE:
        pytest.skip("compiling CUDA layers needs moe-compile and ptxas")
    root = tmp_path_factory.mktemp("cuda_layers")
    return {"tiny": moe_mlir.compile(TINY, "cuda", mcpu="x86-64-v2").save(root / "tiny"),
            "aux": moe_mlir.compile(AUX_SPEC, "cuda", mcpu="x86-64-v2").save(root / "aux")}


def _run(path, scenario, tokens=5, env=None, extra=()):
    full = {k: v for k, v in os.environ.items()
            if not k.startswith(("FAKE_CUDA_", "MOE_CUDA_DRIVER"))}
    full.update(env or {})
    proc = subprocess.run([sys.executable, str(HERE / "cuda_subprocess.py"), str(path), scenario,
                           str(tokens), *map(str, extra)],
                          capture_output=True, text=True, env=full, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fake_env(tmp_path, **kw):
    log = tmp_path / "fake-cuda.log"
    env = {"MOE_CUDA_DRIVER": str(FAKE), "FAKE_CUDA_LOG": str(log)}
    env.update(kw)
    return env, log


def _expected(spec, tokens):
    """Each output's [shape, dtype] as the CPU layer gives it."""
    cpu = moe_mlir.compile(spec)
    out = {}
    for b in cpu._abi["outputs"]:
        shape = [tokens * b["rows_per_token"] if d < 0 else d for d in b["shape"]]
        scalar = {"f32": "float", "i32": "int"}[b["dtype"]]
        out[b["name"]] = ([], scalar, scalar) if not shape else \
            (shape, {"f32": "float32", "i32": "int32"}[b["dtype"]], "ndarray")
    return {k: [list(v[0]), v[1], v[2]] for k, v in out.items()}


@requires_compile
def test_compile_for_cuda(saved):
    layer = moe_mlir.compile(TINY, "cuda")
    assert layer.device == "cuda" and layer.gpu_arch == "sm_90"
    assert layer._abi["device"] == "cuda"
    sm80 = moe_mlir.compile(TINY, "cuda", gpu_arch="sm_80")
    assert sm80.gpu_arch == "sm_80"
    assert sm80.library_path.parent != layer.library_path.parent  # the arch is in the cache key
    cpu = moe_mlir.compile(TINY)
    assert cpu.device == "cpu" and cpu.gpu_arch is None
    assert cpu.library_path.parent != layer.library_path.parent  # and the target
    manifest = json.loads((saved["tiny"] / "layer.json").read_text())
    assert manifest["target"] == "cuda" and manifest["gpu_arch"] == "sm_90"


@requires_compile
def test_cpu_only_options_are_refused():
    with pytest.raises(ValueError, match="pipeline='reference' is an option of the CPU target"):
        moe_mlir.compile(TINY, "cuda", pipeline="reference")
    with pytest.raises(ValueError, match="tiles are options of the CPU target"):
        moe_mlir.compile(TINY, "cuda", tiles="row-block=8")
    with pytest.raises(ValueError, match="gpu_arch must name a CUDA architecture"):
        moe_mlir.compile(TINY, "cuda", gpu_arch="hopper")
    with pytest.raises(ValueError, match="gpu_arch='sm_80' is an option of target='cuda'"):
        moe_mlir.compile(TINY, "cpu", gpu_arch="sm_80")
    with pytest.raises(ValueError, match="target must be one of"):
        moe_mlir.compile(TINY, "rocm")
    with pytest.raises(ValueError, match="tensor_cores and mma_precision are options of "
                                         "target='cuda'"):
        moe_mlir.compile(TINY, "cpu", tensor_cores=False)
    with pytest.raises(ValueError, match="mma_precision must be 'f32' or 'bf16', got 'fp8'"):
        moe_mlir.compile(TINY, "cuda", mma_precision="fp8")
    with pytest.raises(ValueError, match="tensor_cores must be True or False"):
        moe_mlir.compile(TINY, "cuda", tensor_cores="yes")


@requires_compile
def test_forward_without_a_driver(saved, tmp_path):
    """No libcuda: loading works, calling raises CUDAError naming the missing
    driver (also for route, bind and device arrays), cuda_available() is False."""
    env = {"MOE_CUDA_DRIVER": str(tmp_path / "missing-libcuda.so")}
    for scenario in ("numpy", "bind", "cai"):
        r = _run(saved["tiny"], scenario, env=env, extra=[tmp_path / "log"])
        assert r["cuda_available"] is False
        assert r["device"] == "cuda" and r["gpu_arch"] == "sm_90"
        kind, message, mro = r["error"]
        assert kind == "CUDAError" and "RuntimeError" in mro, r
        assert "no CUDA driver: dlopen(" in message and "missing-libcuda.so) failed" in message
        assert message.startswith("tiny_moe"), message


@requires_fake
def test_numpy_path_on_the_fake_driver(saved, tmp_path):
    """NumPy inputs are copied to the device, the layer runs on the default
    stream, outputs come back as NumPy arrays of the CPU layer's shapes and
    dtypes, every device buffer is freed."""
    for name, spec in (("tiny", TINY), ("aux", AUX_SPEC)):
        env, log = _fake_env(tmp_path / name)
        (tmp_path / name).mkdir()
        r = _run(saved[name], "numpy", tokens=5, env=env)
        assert "error" not in r, r
        assert r["cuda_available"] is True
        assert r["forward"] == _expected(spec, 5)
        assert r["route"] == {k: r["forward"][k] for k in ("topk_ids", "topk_weights")}
        lines = log.read_text().splitlines()
        text = "\n".join(lines)
        n_outputs = len(r["forward"])
        abi = moe_mlir.load(saved[name])._abi
        # forward: x and every weight; route: x and the routing weights only.
        n_copies = len(abi["inputs"]) + len(abi["route"]["inputs"])
        assert text.count("cuMemcpyHtoDAsync_v2") == n_copies
        assert text.count("cuMemcpyDtoHAsync_v2") >= n_outputs + 2
        assert "launch " in text and "cuStreamSynchronize stream=(nil)" in text
        assert all("stream=(nil)" in line for line in lines if line.startswith("fake-cuda: launch"))
        assert text.count("cuMemAlloc_v2") == text.count("cuMemFree_v2")


@requires_fake
def test_bind_copies_numpy_weights_once(saved, tmp_path):
    env, log = _fake_env(tmp_path)
    r = _run(saved["tiny"], "bind", env=env, extra=[log])
    assert "error" not in r, r
    assert r["forward"] == _expected(TINY, 5)
    assert "is closed" in r["closed"]
    sections = {}
    current = None
    for line in log.read_text().splitlines():
        if line.startswith("fake-cuda: -- "):
            current = line.split("-- ")[1]
            sections.setdefault(current, [])
        elif current:
            sections[current].append(line)
    n_weights = len(moe_mlir.weight_shapes(moe_mlir.load_spec(TINY)))
    bind = "\n".join(sections["bind"])
    assert bind.count("cuMemcpyHtoDAsync") == n_weights and bind.count("cuMemAlloc_v2") == n_weights
    forward = "\n".join(sections["forward"])  # two calls: x only, each
    assert forward.count("cuMemcpyHtoDAsync") == 2
    assert forward.count("cuMemAlloc_v2") == forward.count("cuMemFree_v2")
    assert "\n".join(sections["close"]).count("cuMemFree_v2") == n_weights


@requires_fake
@pytest.mark.parametrize("scenario", ["cai", "dlpack"])
def test_device_arrays_in_place(saved, tmp_path, scenario):
    """Device arrays (__cuda_array_interface__, DLPack on a CUDA device) are
    passed in place: no copy to the device; outputs are CUDABuffers
    (device memory of the runtime); the producer's stream is used."""
    env, log = _fake_env(tmp_path)
    r = _run(saved["aux"], scenario, env=env)
    assert "error" not in r, r
    names = {"float32": "f32", "int32": "i32", "float": "f32", "int": "i32"}
    want = {k: [v[0], names[v[1]], "CUDABuffer"] for k, v in _expected(AUX_SPEC, 5).items()}
    assert r["forward"] == want
    text = log.read_text()
    assert "cuMemcpyHtoDAsync" not in text
    stream = "0x5eed" if scenario == "cai" else "(nil)"
    launches = [line for line in text.splitlines() if line.startswith("fake-cuda: launch")]
    assert launches and all(f"stream={stream}" in line for line in launches), launches[:2]
    assert "cuStreamSynchronize stream=(nil)" in text  # CUDABuffer.numpy() only


@requires_fake
def test_torch_branch_shimmed(saved, tmp_path):
    """The torch branch without a GPU: CPU tensors dressed as CUDA tensors
    (the fake driver's device memory is host memory) and torch's allocation,
    stream and device calls shimmed: outputs come from torch.empty on x's
    device, the call runs on torch's current stream, checks hold."""
    pytest.importorskip("torch")
    env, log = _fake_env(tmp_path)
    r = _run(saved["aux"], "torch_shim", env=env)
    assert "error" not in r, r
    dtypes = {"float32": "torch.float32", "int32": "torch.int32", "float": "torch.float32",
              "int": "torch.int32"}
    assert r["forward"] == {k: [v[0], dtypes[v[1]], "FakeCuda", True]
                            for k, v in _expected(AUX_SPEC, 5).items()}
    assert r["bound"] == [5, 16]
    assert "x must be contiguous" in r["transposed"]
    assert "weight 'w1' (f32) on the device must be float32, got float16" in r["wrong_dtype"]
    text = log.read_text()
    launches = [line for line in text.splitlines() if line.startswith("fake-cuda: launch")]
    assert launches and all("stream=0x7047c4" in line for line in launches)
    assert "cuMemcpy" not in text and "cuStreamSynchronize" not in text  # no copy, no wait


@requires_fake
def test_out_of_device_memory(saved, tmp_path):
    """The layer's scratch allocation fails: MemoryError, as on the CPU (status 3)."""
    env, _ = _fake_env(tmp_path, FAKE_CUDA_FAIL="cuMemAllocFromPoolAsync")
    r = _run(saved["tiny"], "numpy", env=env)
    kind, message, _ = r["error"]
    assert kind == "MemoryError", r
    assert "tiny_moe_forward" in message
    env, _ = _fake_env(tmp_path, FAKE_CUDA_FAIL="cuMemAlloc_v2")
    r = _run(saved["tiny"], "numpy", env=env)
    assert r["error"][0] == "MemoryError", r


@requires_fake
def test_scratch_pool_caches_between_calls(saved, tmp_path):
    """Scratch comes from the runtime's own pool (created once, no release
    threshold): it stays reserved between calls until the cache limit or a
    trim hands it back. The fake driver counts reserved bytes as the driver
    does."""
    env, log = _fake_env(tmp_path)
    r = _run(saved["tiny"], "scratch", env=env)
    assert "error" not in r, r
    steps = r["reserved"]
    assert steps["before"] == 0
    assert steps["first call"] > 0
    assert steps["second call"] == steps["first call"]
    assert steps["limit 0"] == 0
    assert steps["no limit"] == steps["first call"]
    assert steps["loaded twice"] == steps["first call"]
    assert steps["trimmed"] == 0
    text = log.read_text()
    assert text.count("cuMemPoolCreate device=0") == 1
    assert "cuMemAllocAsync" not in text  # never the device's default pool
    assert "cuMemPoolSetAttribute release_threshold=0" in text
    assert text.count("cuMemAllocFromPoolAsync") == text.count("cuMemFreeAsync")


def test_scratch_cache_limit_checks():
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="scratch cache limit"):
            moe_mlir.set_cuda_scratch_cache(bad)


@requires_fake
def test_no_device(saved, tmp_path):
    env, _ = _fake_env(tmp_path, FAKE_CUDA_DEVICES="0")
    r = _run(saved["tiny"], "numpy", env=env)
    assert r["cuda_available"] is False
    kind, message, _ = r["error"]
    assert kind == "CUDAError" and "no CUDA device" in message, r


@requires_fake
def test_failing_launch(saved, tmp_path):
    env, _ = _fake_env(tmp_path, FAKE_CUDA_FAIL="cuLaunchKernel")
    kind, message, _ = _run(saved["tiny"], "numpy", env=env)["error"]
    assert kind == "CUDAError" and "cuLaunchKernel" in message


@requires_compile
def test_saved_cuda_layer_loads_without_the_compiler(saved, tmp_path):
    """A process without moe-compile (and without a GPU) loads the saved CUDA
    layer; calling it raises CUDAError; with the fake driver it runs."""
    env = {"MOE_COMPILE": str(tmp_path / "no-moe-compile"), "MOE_BUILD_DIR": str(tmp_path),
           "PATH": "/usr/bin:/bin", "MOE_CUDA_DRIVER": str(tmp_path / "missing.so")}
    r = _run(saved["aux"], "numpy", env=env)
    assert r["device"] == "cuda" and r["gpu_arch"] == "sm_90"
    assert r["error"][0] == "CUDAError"
    if FAKE is not None:
        env["MOE_CUDA_DRIVER"] = str(FAKE)
        env["FAKE_CUDA_LOG"] = str(tmp_path / "log")
        r = _run(saved["aux"], "numpy", env=env)
        assert "error" not in r, r
        assert r["forward"] == _expected(AUX_SPEC, 5)
    again = moe_mlir.load(moe_mlir.load(saved["aux"]).save(tmp_path / "again"))
    assert again.device == "cuda" and again.gpu_arch == "sm_90"
    assert again.spec == moe_mlir.load_spec(AUX_SPEC)


@requires_compile
def test_argument_checks(saved):
    """Device arrays are used in place: wrong dtype, non-contiguous, device
    mix-ups raise ValueError before any driver call."""
    layer = moe_mlir.load(saved["aux"])
    W = make_weights(layer.spec)
    x = make_x(4, 16)

    def dev(a, device=0, contiguous=True, dtype=None):
        return _cuda.DeviceArray(a, a.ctypes.data, a.shape, dtype or _cuda._TYPESTRS[a.dtype.str],
                                 contiguous, device, "cai")

    DW = {n: dev(a) for n, a in W.items()}
    with pytest.raises(ValueError, match="x must be float32, got float16"):
        layer.forward(dev(x.astype(np.float16)), seed=1, **DW)
    with pytest.raises(ValueError, match=r"x must be contiguous .* never copied"):
        layer.forward(dev(x, contiguous=False), seed=1, **DW)
    with pytest.raises(ValueError, match=r"x must have shape \[T, 16\]"):
        layer.forward(dev(x[:, :8].copy()), seed=1, **DW)
    bad = dict(DW, w1=dev(W["w1"], contiguous=False))
    with pytest.raises(ValueError, match="weight 'w1' must be contiguous"):
        layer.forward(dev(x), seed=1, **bad)
    bad = dict(DW, w1=dev(W["w1"].astype(np.float16)))
    with pytest.raises(ValueError, match=r"weight 'w1' \(f32\) on the device must be float32, "
                                         r"got float16: device arrays are used in place"):
        layer.forward(dev(x), seed=1, **bad)
    bad = dict(DW, w2=dev(W["w2"], device=1))
    with pytest.raises(ValueError, match="tensors on different devices"):
        layer.forward(dev(x), seed=1, **bad)
    with pytest.raises(ValueError, match="weight 'gate' is a NumPy array: tensors on different"):
        layer.forward(dev(x), seed=1, **dict(DW, gate=W["gate"]))
    with pytest.raises(ValueError, match="x is a NumPy array but weight 'gate' is a cai array"):
        layer.forward(x, seed=1, **dict(W, gate=DW["gate"]))
    with pytest.raises(ValueError, match="x must be a numpy.ndarray or a CUDA array"):
        layer.forward([[0.0] * 16], seed=1, **W)
    with pytest.raises(ValueError, match="pass seed=<int>"):
        layer.forward(x, **W)
    bf16 = moe_mlir.compile(dict(moe_spec("cu_bf16", d_model=16), weight_dtype="bf16"), "cuda")
    Wb = make_weights(bf16.spec)
    Db = {n: dev(bf16._check_weight(n, a)) for n, a in Wb.items()}  # bf16 as uint16 bits: fine
    with pytest.raises(ValueError, match=r"weight 'w1' \(bf16\) on the device must be bfloat16 "
                                         r"or uint16 bits, got float32"):
        bf16.forward(dev(x), **dict(Db, w1=dev(Wb["w1"])))


@requires_compile
def test_gpu_layers_prepare(tmp_path, monkeypatch):
    """`python -m moe_mlir.gpu_layers prepare` saves the GPU tests' layers by
    name; layer() takes them from $MOE_GPU_LAYERS and refuses a stale one."""
    only = ["gpu_softmax_f32", "gpu_pkm_bf16"]
    proc = subprocess.run([sys.executable, "-m", "moe_mlir.gpu_layers", "prepare",
                           str(tmp_path), "--only", *only], capture_output=True, text=True,
                          cwd=REPO / "python", env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path)) == sorted(only)
    monkeypatch.setenv("MOE_GPU_LAYERS", str(tmp_path))
    for name in only:
        layer = gpu_layers.layer(name)
        assert layer.device == "cuda" and layer.library_path.parent == tmp_path / name
    shutil.copytree(tmp_path / "gpu_softmax_f32", tmp_path / "gpu_sigmoid_f32")
    with pytest.raises(ValueError, match="another spec"):
        gpu_layers.layer("gpu_sigmoid_f32")


def test_torch_cuda_layer_without_a_gpu(tmp_path):
    """MoELayer(..., target="cuda") builds where torch sees no GPU (buffers
    stay on the CPU) and runs CPU tensors through the copies."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available() or not CAN_COMPILE or FAKE is None:
        pytest.skip("checks the no-GPU path with the fake driver")
    script = f"""
import sys, json
sys.path.insert(0, {str(REPO / 'python')!r})
import numpy as np, torch, moe_mlir, moe_mlir.torch as mt
m = mt.MoELayer({str(TINY)!r}, {{n: torch.randn(*s) for n, (s, _) in
    moe_mlir.weight_shapes(moe_mlir.load_spec({str(TINY)!r})).items()}}, target="cuda",
    mcpu="x86-64-v2")
y = m(torch.randn(2, 3, 64))
ids, w = m.route(torch.randn(5, 64))
print(json.dumps([m.layer.device, list(y.shape), str(y.dtype), list(ids.shape), str(w.dtype),
                  str(m.w1.device)]))
"""
    env = dict(os.environ, MOE_CUDA_DRIVER=str(FAKE), FAKE_CUDA_LOG=str(tmp_path / "log"))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == [
        "cuda", [2, 3, 64], "torch.float32", [5, 2], "torch.float32", "cpu"]
    assert "launch tiny_moe_forward" in (tmp_path / "log").read_text()


# --------------------------------------------------------------------------- #
# On a GPU
# --------------------------------------------------------------------------- #

def _gpu_reason():
    if GPU_LAYERS is not None and GPU_LAYERS.is_dir():
        # A loaded CUDA layer library answers (no runtime library needed).
        try:
            gpu_layers.layer(next(iter(gpu_layers.SPECS)))
        except Exception as err:  # noqa: BLE001 - reported as the skip reason
            return f"the layers of MOE_GPU_LAYERS={GPU_LAYERS} do not load: {err}"
    if not moe_mlir.cuda_available():
        return ("no CUDA device: moe_mlir.cuda_available() is False (no driver, no device, "
                "or no CUDA layer/runtime library to ask)")
    return None


GPU_REASON = _gpu_reason() if (CAN_COMPILE or GPU_LAYERS is not None) else "no layers"
requires_gpu = pytest.mark.skipif(GPU_REASON is not None, reason=GPU_REASON or "")

# Tolerances against the float64 reference.  The kernels compute in f32 with
# f32 activations; bf16 weights are rounded to bf16 exactly as the reference
# rounds them (round-to-nearest-even, reference.round_to_dtype), so both sides
# multiply the same weight values and the dtype adds no error of its own: the
# differences are f32 rounding of the accumulations (in the kernels' order,
# with FMA contraction by ptxas) and libdevice's exp/erf/tanh (<= 2 ulp), which
# the CPU tests bound by 1e-5; the softmax/normalisation chain and the GPU's
# accumulation order get a factor 10 on top.  Routing ids must match exactly
# (the test weights keep logits well apart).
GPU_RTOL = 1e-4
GPU_ATOL = 1e-5
# Tensor cores (bf16 weights) with mma_precision="f32" multiply three exact
# bf16 terms of each activation: the same products, summed in the MMA's
# order, within the tolerances above. With "bf16" each activation is rounded
# to bf16 once (relative error <= 2^-9 per product): elementwise errors are
# relative to the products, not to outputs that cancel to near zero, so the
# bound is normwise, as for any bf16 GEMM (the CPU emulation of these tiles
# measured ~3e-3).
BF16_NORMWISE = 1e-2
BF16_ACTIVATIONS = {n for n, o in gpu_layers.OPTIONS.items() if o.get("mma_precision") == "bf16"}
TOKENS = [1, 7, 64]
CAPACITY = {n for n, s in gpu_layers.SPECS.items() if "capacity" in s}


@functools.lru_cache(maxsize=None)
def _layer(name):
    return gpu_layers.layer(name)


def _inputs(name, T, seed=0):
    spec = gpu_layers.SPECS[name]
    W = make_weights(spec, seed)
    x = make_x(T, spec["d_model"], seed + 1)
    s = 11 if spec.get("router", {}).get("noise") else None
    return W, x, s


def _compare(got, ref, rtol=GPU_RTOL, atol=GPU_ATOL):
    assert set(got) == set(ref)
    np.testing.assert_array_equal(np.asarray(got["topk_ids"]), np.asarray(ref["topk_ids"]))
    for key in ("expert_counts", "dropped"):
        if key in ref:
            np.testing.assert_array_equal(np.asarray(got[key]), np.asarray(ref[key]), err_msg=key)
    for key, value in ref.items():
        if key in ("topk_ids", "expert_counts", "dropped"):
            continue
        np.testing.assert_allclose(np.asarray(got[key], np.float64),
                                   np.asarray(value, np.float64), rtol=rtol,
                                   atol=atol, err_msg=f"{key} differs from the reference")


def _assert_normwise_close(got, ref, bound=BF16_NORMWISE):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    error = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert error <= bound, f"normwise error {error:.2e} > {bound:.0e}"


def _bits_equal(a, b, what):
    a, b = np.atleast_1d(np.asarray(a)), np.atleast_1d(np.asarray(b))
    assert a.shape == b.shape and a.dtype == b.dtype, what
    assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), f"{what}: bits differ"


@requires_gpu
@pytest.mark.parametrize("T", TOKENS)
@pytest.mark.parametrize("name", list(gpu_layers.SPECS))
def test_gpu_matches_reference(name, T):
    layer = _layer(name)
    W, x, seed = _inputs(name, T)
    got = layer.forward(x, seed=seed, **W)
    kw = {} if seed is None else {"seed": seed}
    ref = R.forward(layer.spec, x, **kw, **W)
    if name in BF16_ACTIVATIONS:
        np.testing.assert_array_equal(np.asarray(got["topk_ids"]), np.asarray(ref["topk_ids"]))
        _assert_normwise_close(got["out"], ref["out"])
    else:
        _compare(got, ref)
    ids, w = layer.route(x, seed=seed, **W)
    _bits_equal(ids, got["topk_ids"], "route topk_ids")


@requires_gpu
def test_gpu_tensor_cores_match_simt():
    """One bf16 layer three ways: one thread per output (the reference's
    order), tensor cores with exact bf16 terms (the same products in the
    MMA's order: f32 rounding apart) and with activations rounded to bf16."""
    W, x, _ = _inputs("gpu_simt_bf16", 33)
    simt = _layer("gpu_simt_bf16").forward(x, **W)["out"]
    exact = _layer("gpu_tc_f32act_bf16").forward(x, **W)["out"]
    rounded = _layer("gpu_tc_bf16act_bf16").forward(x, **W)["out"]
    np.testing.assert_allclose(exact, simt, rtol=1e-5, atol=1e-6)
    _assert_normwise_close(rounded, simt)
    assert not np.array_equal(rounded, exact), "mma_precision='bf16' changed nothing"


@requires_gpu
@pytest.mark.parametrize("name", list(gpu_layers.SPECS))
def test_gpu_deterministic_and_batch_invariant(name):
    layer = _layer(name)
    W, x, seed = _inputs(name, 64)
    bound = layer.bind(**W)
    first = bound.forward(x, seed=seed)
    second = bound.forward(x, seed=seed)
    for key in first:
        _bits_equal(first[key], second[key], f"two runs: {key}")
    _bits_equal(layer.forward(x, seed=seed, **W)["out"], first["out"], "bound vs unbound")
    if name in CAPACITY or seed is not None:
        return  # capacity drops and the noise of a token depend on the batch
    for t in (0, 5, 63):
        alone = bound.forward(x[t:t + 1], seed=seed)
        for key in ("out", "topk_ids", "topk_weights"):
            rows = first[key].shape[0] // x.shape[0]  # mh_moe: a row per head
            _bits_equal(alone[key], first[key][t * rows:(t + 1) * rows], f"token {t} alone: {key}")


def _torch_weights(torch, layer, W):
    out = {}
    for n, a in W.items():
        bits = layer._check_weight(n, a)
        dtype = layer.weight_shapes[n][1]
        t = torch.from_numpy(bits)
        if dtype == "bf16":
            t = t.view(torch.bfloat16)
        elif dtype == "f16":
            t = t.view(torch.float16)
        out[n] = t.cuda()
    return out


@requires_gpu
@pytest.mark.parametrize("name", ["gpu_softmax_f32", "gpu_groups_bf16", "gpu_peer_bf16",
                                  "gpu_shared_f32"])
def test_gpu_torch_tensors_in_place(name, monkeypatch):
    """torch CUDA tensors: no host copies (the copy helpers are not called),
    outputs are CUDA tensors on x's device with the NumPy path's bits."""
    torch = pytest.importorskip("torch")
    layer = _layer(name)
    W, x, seed = _inputs(name, 7)
    want = layer.forward(x, seed=seed, **W)
    TW = _torch_weights(torch, layer, W)
    xt = torch.from_numpy(x).cuda()

    def no_copy(*a, **k):
        raise AssertionError("a host copy on the torch path")

    for helper in ("to_device", "to_host", "malloc", "upload", "synchronize"):
        monkeypatch.setattr(layer._cuda, helper, no_copy)
    got = layer.forward(xt, seed=seed, **TW)
    monkeypatch.undo()
    for key, value in got.items():
        assert isinstance(value, torch.Tensor) and value.device == xt.device, key
    torch.cuda.synchronize()
    for key in want:
        _bits_equal(got[key].cpu().numpy(), want[key], key)
    bound = layer.bind(**TW)  # device tensors bound in place
    _bits_equal(bound(xt, seed=seed).cpu().numpy(), want["out"], "bound torch")


@requires_gpu
def test_gpu_torch_stream():
    """The call runs on torch's current stream, asynchronously: queued after
    a sleep on a side stream it is not done yet, and it reads x written on
    that stream after the sleep."""
    torch = pytest.importorskip("torch")
    name = "gpu_softmax_f32"
    layer = _layer(name)
    W, x, seed = _inputs(name, 64)
    want = layer.forward(x, seed=seed, **W)["out"]
    TW = _torch_weights(torch, layer, W)
    xt = torch.from_numpy(x).cuda()
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU cycles
        x_late = xt * 1.0  # written on the side stream after the sleep
        out = layer(x_late, seed=seed, **TW)
        assert not stream.query(), "the call waited for the stream (it must be asynchronous)"
    stream.synchronize()
    _bits_equal(out.cpu().numpy(), want, "out on a side stream")


@requires_gpu
def test_gpu_scratch_pool():
    """On the device: a call's scratch stays reserved for the next call, whose
    scratch comes from the cache (reserved does not grow), until a trim."""
    torch = pytest.importorskip("torch")
    name = "gpu_softmax_f32"
    layer = _layer(name)
    W, x, seed = _inputs(name, 64)
    TW = _torch_weights(torch, layer, W)
    xt = torch.from_numpy(x).cuda()
    layer(xt, seed=seed, **TW)
    torch.cuda.synchronize()
    cached = moe_mlir.cuda_scratch_reserved()
    assert cached > 0
    layer(xt, seed=seed, **TW)
    torch.cuda.synchronize()
    assert moe_mlir.cuda_scratch_reserved() == cached
    moe_mlir.trim_cuda_scratch()
    assert moe_mlir.cuda_scratch_reserved() == 0


@requires_gpu
def test_gpu_torch_module_and_ops():
    torch = pytest.importorskip("torch")
    import moe_mlir.torch as mt
    name = "gpu_sigmoid_bf16"
    layer = _layer(name)
    W, x, seed = _inputs(name, 7)
    want = layer.forward(x, seed=seed, **W)
    m = mt.MoELayer(layer, W)
    assert all(getattr(m, n).is_cuda for n in layer.weight_shapes)
    assert getattr(m, "w1").dtype == torch.bfloat16
    xt = torch.from_numpy(x).cuda()
    y = m(xt)
    assert y.is_cuda and y.dtype == torch.float32
    _bits_equal(y.cpu().numpy(), want["out"], "MoELayer out")
    ids, w = m.route(xt)
    _bits_equal(ids.cpu().numpy(), want["topk_ids"], "MoELayer route")
    yb = m(xt.to(torch.bfloat16))
    assert yb.dtype == torch.bfloat16 and yb.is_cuda
    compiled = torch.compile(m, fullgraph=True)
    _bits_equal(compiled(xt).cpu().numpy(), want["out"], "torch.compile")
    with pytest.raises(ValueError, match="different devices"):
        torch.ops.moe_mlir.layer_forward(xt, [w.cpu() for w in m._weights()], m._handle, None)
