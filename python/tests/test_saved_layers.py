"""Compiled layers as files: Layer.save() writes the shared library, abi.json
and layer.json; moe_mlir.load() reads them back where moe-compile and LLVM
are absent (how layers are shipped, and how they reach the GPU machine)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import moe_mlir
from compile_helpers import (make_weights, make_x, mh_spec, moe_spec, pk_spec,
                             requires_compiler)

pytestmark = requires_compiler

PYTHON_DIR = Path(__file__).resolve().parents[1]
SPECS = {
    "moe": moe_spec("saved_moe", router=dict(top_k=2, normalize=True),
                    shared_experts=dict(hidden=8, gate=True),
                    aux_losses=["load_balance", "z_loss"]),
    "noisy": moe_spec("saved_noisy", router=dict(top_k=2, noise=True)),
    "mh_moe": mh_spec("saved_mh"),
    "pkm": pk_spec("pkm", "saved_pkm"),
}


def _same_bits(a, b):
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each layer compiled for a named CPU (so it loads on any x86-64-v2
    host), saved, and the outputs it gave before saving."""
    root = tmp_path_factory.mktemp("saved")
    out = {}
    for name, spec in SPECS.items():
        layer = moe_mlir.compile(spec, mcpu="x86-64-v2")
        W = make_weights(layer.spec, 3)
        x = make_x(13, layer.spec["d_model"], 4)
        seed = 9 if name == "noisy" else None
        out[name] = (layer.save(root / name), W, x, seed, layer.forward(x, seed=seed, **W))
    return out


@pytest.mark.parametrize("name", sorted(SPECS))
def test_load_gives_the_same_layer(saved, name):
    path, W, x, seed, want = saved[name]
    assert sorted(os.listdir(path)) == sorted(["abi.json", "layer.json",
                                               f"lib{SPECS[name]['name']}.so"])
    layer = moe_mlir.load(path)
    assert layer.spec == moe_mlir.load_spec(SPECS[name])
    _same_bits(layer.forward(x, seed=seed, **W), want)
    _same_bits(layer.bind(**W).forward(x, seed=seed), want)
    assert moe_mlir.load(path / "layer.json").spec == layer.spec


def test_saved_again_is_the_same(saved, tmp_path):
    path, W, x, seed, want = saved["moe"]
    again = moe_mlir.load(moe_mlir.load(path).save(tmp_path / "again"))
    _same_bits(again.forward(x, **W), want)


def test_compile_cache_entries_load(saved):
    layer = moe_mlir.compile(SPECS["moe"], mcpu="x86-64-v2")
    path, W, x, _, want = saved["moe"]
    _same_bits(moe_mlir.load(layer.library_path.parent).forward(x, **W), want)


def test_load_without_the_compiler(saved, tmp_path):
    """A process that cannot find moe-compile (no build tree, not on PATH)
    loads and runs the saved layer and gets the same bits."""
    path, W, x, _, want = saved["moe"]
    np.savez(tmp_path / "inputs.npz", x=x, **W)
    script = f"""
import numpy as np, moe_mlir
from moe_mlir.compiler import find_compiler
try:
    find_compiler()
    raise SystemExit("moe-compile is reachable: the test proves nothing")
except FileNotFoundError:
    pass
inputs = dict(np.load({str(tmp_path / 'inputs.npz')!r}))
x = inputs.pop("x")
out = moe_mlir.load({str(path)!r}).forward(x, **inputs)
np.savez({str(tmp_path / 'out.npz')!r}, **{{k: np.asarray(v) for k, v in out.items()}})
"""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(PYTHON_DIR),
           "MOE_BUILD_DIR": str(tmp_path / "no-build"),
           "MOE_MLIR_CACHE": str(tmp_path / "no-cache")}
    for var in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS"):  # the sanitized build's
        if var in os.environ:
            env[var] = os.environ[var]
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    got = dict(np.load(tmp_path / "out.npz"))
    _same_bits({k: got[k] for k in want}, {k: np.asarray(v) for k, v in want.items()})
    assert not (tmp_path / "no-cache").exists()


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #

@pytest.fixture
def copy(saved, tmp_path):
    dst = tmp_path / "layer"
    shutil.copytree(saved["moe"][0], dst)
    return dst


def _edit_manifest(path, **changes):
    manifest = json.loads((path / "layer.json").read_text())
    manifest.update(changes)
    (path / "layer.json").write_text(json.dumps(manifest))


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved layer"):
        moe_mlir.load(tmp_path / "absent")


def test_directory_without_manifest(copy):
    (copy / "layer.json").unlink()
    with pytest.raises(FileNotFoundError, match="not a saved layer: no layer.json"):
        moe_mlir.load(copy)


def test_missing_abi(copy):
    (copy / "abi.json").unlink()
    with pytest.raises(FileNotFoundError, match="no abi.json"):
        moe_mlir.load(copy)


def test_missing_library(copy):
    (copy / "libsaved_moe.so").unlink()
    with pytest.raises(FileNotFoundError, match="library 'libsaved_moe.so' is missing"):
        moe_mlir.load(copy)


def test_library_outside_the_directory_is_refused(copy):
    _edit_manifest(copy, library="../../libsaved_moe.so")
    with pytest.raises(FileNotFoundError, match="is missing"):
        moe_mlir.load(copy)


def test_corrupt_manifest(copy):
    (copy / "layer.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt saved layer"):
        moe_mlir.load(copy)


def test_unknown_format(copy):
    _edit_manifest(copy, format=99)
    with pytest.raises(ValueError, match="unknown saved-layer format 99"):
        moe_mlir.load(copy)


def test_other_abi_version(copy):
    abi = json.loads((copy / "abi.json").read_text())
    abi["abi_version"] = 2
    (copy / "abi.json").write_text(json.dumps(abi))
    with pytest.raises(ValueError, match="ABI version 2"):
        moe_mlir.load(copy)


def test_manifest_spec_must_match_the_library(copy):
    """A spec edited after compiling no longer matches the weights the
    library was compiled for: refused, not run."""
    manifest = json.loads((copy / "layer.json").read_text())
    manifest["spec"]["expert_hidden"] += 1
    (copy / "layer.json").write_text(json.dumps(manifest))
    with pytest.raises(moe_mlir.CompileError, match="disagree with the spec"):
        moe_mlir.load(copy)


def test_native_layer_from_another_cpu(copy):
    _edit_manifest(copy, host="x86_64:0000000000000000")
    with pytest.raises(ValueError, match="compiled for the CPU of another machine"):
        moe_mlir.load(copy)
    assert moe_mlir.load(copy, check_host=False).name == "saved_moe"


def test_native_layer_loads_on_its_own_host(tmp_path):
    layer = moe_mlir.compile(SPECS["moe"])  # mcpu="native"
    W = make_weights(layer.spec, 3)
    x = make_x(5, layer.spec["d_model"], 4)
    _same_bits(moe_mlir.load(layer.save(tmp_path / "native")).forward(x, **W),
               layer.forward(x, **W))
