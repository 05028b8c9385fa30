"""Every spec variant of the end-to-end suites through the CUDA target.

For each layer the other test files compile (routers, shared experts,
capacity, aux losses, activations, expert options, PEER/PKM, MH-MoE):

* the CUDA target's tensor-level algorithms (`convert-moe-to-gpu`), run on
  the CPU, give the reference lowering's bits at T = 1 and T = 19;
* `moe-compile --target=cuda` lowers the layer to a host object with its
  kernels compiled by ptxas (skipped without a CUDA toolkit).

Whether the device computes those bits needs a GPU (docs/cuda.md).
"""

import json
import os
import shutil
import subprocess

import pytest

import moe_mlir
from compile_helpers import assert_same_bits, make_weights, make_x, requires_compiler
from moe_mlir.compiler import find_compiler
from moe_mlir.spec import load_spec

import test_compile_moe as tcm
import test_compile_product_key as tpk
import test_pkm_variants as tpv
import test_spec_experts as tse
import test_spec_renormalize as tsn
import test_spec_router as tsr
import test_spec_sparsemixer as tsm

pytestmark = requires_compiler


def _collect():
    specs = {}
    for module, names in ((tcm, ["ROUTERS", "SHARED", "CAPACITY", "AUX", "ACTIVATIONS",
                                 "DTYPES"]),
                          (tsr, ["LOGIT_BIAS", "SOFTCAP", "SQRT_SOFTPLUS", "RMS_NORM",
                                 "CAPACITY_TOKENS", "APPLY_SCORE"]),
                          (tse, ["ACTIVATION_SPECS", "SWIGLU_SPECS", "BIAS_SPECS",
                                 "SCALE_BIAS_SPECS"]),
                          (tpv, ["SPECS"]),
                          (tsm, ["SPARSEMIXER"]),
                          (tsn, ["RENORMALIZE"])):
        for name in names:
            for spec in getattr(module, name, {}).values():
                specs[spec["name"]] = spec
    for spec in (tcm.NOISY_SIGMOID_BIAS, tcm.TIE_SPEC_CAP, tsr.ALL_ROUTER_FEATURES):
        specs[spec["name"]] = spec
    for name in dir(tpk):
        value = getattr(tpk, name)
        if isinstance(value, dict) and value.get("kind") in ("pkm", "peer"):
            specs[value["name"]] = value
    return specs


SPECS = _collect()


def _ptxas() -> bool:
    cuda = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    return bool(shutil.which("ptxas")) or os.path.exists(os.path.join(cuda, "bin", "ptxas"))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_gpu_algorithms_same_bits(name):
    spec = SPECS[name]
    reference = moe_mlir.compile(spec, pipeline="reference")
    gpu = moe_mlir.compile(spec, pipeline="reference", tiles="gpu-patterns=true")
    W = make_weights(spec)
    seed = 5 if load_spec(spec).get("router", {}).get("noise") else None
    for tokens in (1, 19):
        x = make_x(tokens, load_spec(spec)["d_model"], seed=tokens)
        want = reference.forward(x, seed=seed, **W)
        got = gpu.forward(x, seed=seed, **W)
        for output in want:
            assert_same_bits(got[output], want[output], f"{output} at T = {tokens}")


@pytest.mark.skipif(not _ptxas(), reason="no CUDA toolkit (ptxas) to compile kernels")
# Every third variant: each is a whole CUDA compile (ptxas included), and
# test/Target/cuda.test compiles every example for sm_80 and sm_90.
@pytest.mark.parametrize("name", sorted(SPECS)[::3])
def test_compiles_for_cuda(name, tmp_path):
    spec_file = tmp_path / f"{name}.json"
    spec_file.write_text(json.dumps(SPECS[name]))
    out = tmp_path / "layer.o"
    run = subprocess.run([str(find_compiler()), "--target=cuda", "--emit=obj", str(spec_file),
                          "-o", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.stat().st_size > 0
