"""The GPU benchmark's plumbing, without a GPU: benchmarks/run_gpu.py --dry-run
(tiny shapes, torch on the CPU) and, where the build is there, a tiny layer
compiled by scripts/gpu/prepare.sh --tiny called through the fake CUDA driver
of the build (nothing computes: the host side of every call is what is
tested).  The benchmark itself runs on the GPU machine (docs/gpu.md)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import moe_mlir

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_cases  # noqa: E402
import hf_blocks  # noqa: E402

BUILD = Path(os.environ.get("MOE_BUILD_DIR", REPO / "build"))
FAKE_DRIVER = BUILD / "test" / "Runtime" / "libfake-cuda.so"


@pytest.mark.parametrize("tiny", [False, True])
def test_cases_are_valid_specs(tiny):
    specs = gpu_cases.specs(tiny)
    assert tuple(specs) == gpu_cases.CASES
    for case, spec in specs.items():
        normalized = moe_mlir.load_spec(spec)
        assert normalized["weight_dtype"] == "bf16"
        if gpu_cases.HF_CASE[case]:
            assert hf_blocks.hf_case(normalized) == (gpu_cases.HF_CASE[case], None)


def test_full_cases_are_the_issue_shapes():
    s = gpu_cases.specs()
    assert [s["mixtral"][k] for k in ("d_model", "expert_hidden", "experts")] == [4096, 14336, 8]
    assert s["mixtral"]["router"]["top_k"] == 2
    assert [s["qwen3"][k] for k in ("d_model", "expert_hidden", "experts")] == [2048, 768, 128]
    assert s["qwen3"]["router"]["top_k"] == 8
    ds = s["deepseek_v3"]
    assert [ds[k] for k in ("d_model", "expert_hidden", "experts")] == [7168, 2048, 256]
    assert (ds["router"]["top_k"], ds["router"]["groups"], ds["router"]["topk_groups"]) == (8, 8, 4)
    assert ds["router"]["score"] == "sigmoid" and ds["router"]["selection_bias"]
    assert ds["shared_experts"]["hidden"] == 2048
    p = s["peer"]
    assert (p["d_model"], p["experts"], p["heads"], p["top_k"]) == (1024, 1024 ** 2, 8, 16)


def test_scripts_are_shellcheck_clean():
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not installed")
    scripts = sorted(str(p) for p in (REPO / "scripts" / "gpu").glob("*.sh"))
    assert scripts
    proc = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _can_compile_cuda():
    return ((BUILD / "bin" / "moe-compile").is_file() and FAKE_DRIVER.is_file()
            and (shutil.which("ptxas") or Path("/usr/local/cuda/bin/ptxas").is_file()))


@pytest.mark.skipif(hf_blocks.import_error() is not None,
                    reason=f"torch/transformers not importable: {hf_blocks.import_error()}")
def test_dry_run(tmp_path):
    """One dry run: qwen3 with our tiny layer through the fake driver (when the
    build is there), mixtral whose layer fails and (simulated) breaks the CUDA
    context, so the case is rerun without it, PEER without a compiled layer."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "python"), PYTHONUNBUFFERED="1")
    layers = None
    if _can_compile_cuda():
        carry = tmp_path / "carry"
        proc = subprocess.run([str(REPO / "scripts" / "gpu" / "prepare.sh"), "--tiny",
                               "--cases", "qwen3,mixtral", "--no-tests", str(carry)],
                              capture_output=True, text=True, env=dict(env, MOE_BUILD_DIR=str(BUILD)))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "too big" not in proc.stderr
        layer_dir = carry / "layers" / "qwen3"
        manifest = json.loads((layer_dir / "layer.json").read_text())
        assert manifest["format"] == 1 and manifest["target"] == "cuda"
        assert manifest["gpu_arch"] == "sm_90"
        assert "--mcpu=x86-64-v2" in manifest["options"]        # the GPU machine's CPU is another
        assert (layer_dir / manifest["library"]).is_file()
        assert json.loads((layer_dir / "abi.json").read_text())["layers"][0]["device"] == "cuda"
        assert (carry / "python" / "moe_mlir" / "__init__.py").is_file()
        assert "together" in (carry / "MANIFEST.txt").read_text()
        layers = carry / "layers"
        env.update(MOE_CUDA_DRIVER=str(FAKE_DRIVER), FAKE_CUDA_LOG=str(tmp_path / "fake.log"))
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "benchmarks" / "run_gpu.py"), "--dry-run",
           "--cases", "qwen3,mixtral,peer", "--T", "1,16", "--reps", "2", "--warmup", "1",
           "--cell-budget", "0.2", "--budget", "120", "--out", str(out),
           "--ours-driver", "ctypes"]
    if layers:
        cmd += ["--layers", str(layers), "--simulate-broken-context", "mixtral"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads((out / "gpu.json").read_text())
    md = (out / "gpu.md").read_text()
    assert "DRY RUN" in md
    assert result["dry_run"] and result["limits"]["read_bw_gbs"] > 0
    assert result["limits"]["matmul_tflops"] > 0
    qwen, peer = result["cases"]["qwen3"], result["cases"]["peer"]
    assert qwen["status"] == "done" and peer["status"] == "done", (qwen, peer)
    assert [r["T"] for r in qwen["rows"]] == [1, 16]
    for row in qwen["rows"]:
        assert row["cols"]["hf_eager"]["status"] == "ok"
        assert row["cols"]["hf_grouped_mm"]["status"] == "ok"
        assert row["cols"]["hf_compile"]["status"] == "n/a"          # not in a dry run
        assert row["floor_ms"] > 0 and row["bytes"] > 0 and row["flops"] > 0
        assert 1 <= row["distinct"] <= 16 and row["assignments"] == row["T"] * 4
    for row in peer["rows"]:
        assert row["cols"]["torch_peer"]["status"] == "ok"
        assert row["cols"]["ours"]["status"] == "n/a"              # no compiled layer
    # transformers' bf16 block against the f32 reference on the same weights
    # (bf16 PEER scores can pick another expert on a near tie: finite only)
    for chk in qwen["checks"]:
        assert chk["peer_vs_ref32"]["rel"] < 5e-2, chk
    for chk in peer["checks"]:
        assert chk["peer_vs_ref32"]["rel"] is not None, chk
    if layers:
        assert qwen["ours_driver"] == "ctypes" and qwen["fake_driver"]
        assert all(r["cols"]["ours"]["status"] == "ok" for r in qwen["rows"]), qwen["rows"]
        assert all(c["ok"] is None for c in qwen["checks"])          # fake: not judged
        # outputs are NaN-filled before the check calls: nothing wrote them
        assert all(c["ours_vs_ref32"]["rel"] is None for c in qwen["checks"])
        assert "max abs nan" in md
        log = (tmp_path / "fake.log").read_text()
        assert "cuModuleLoadData" in log and "launch" in log
        mixtral = result["cases"]["mixtral"]
        assert mixtral["status"] == "done" and "ours" in mixtral["first_attempt"]["context_broken"]
        assert "rerun without it" in mixtral["notes"][0]
        assert all(r["cols"]["ours"]["status"] == "error" for r in mixtral["rows"])
        assert all(r["cols"]["hf_eager"]["status"] == "ok" for r in mixtral["rows"])
        assert mixtral["checks"][0]["ok"] is False
    else:
        assert all(r["cols"]["ours"]["status"] == "n/a" for r in qwen["rows"])


def test_report_from_synthetic_results(tmp_path):
    """derive/markdown/targets on made-up numbers, nulls (NaN in a worker's
    JSON) included: no torch, no GPU."""
    import run_gpu
    spec = dict(gpu_cases.specs()["qwen3"], shared_experts=None)
    spec["router"] = dict(spec["router"], selection_bias=False)
    ok = lambda ms: dict(status="ok", ms=ms)  # noqa: E731
    result = dict(dry_run=False, budget_s=300, elapsed_s=120, date="d", notes=[], limits=None,
                  cases={"qwen3": dict(
                      case="qwen3", kind="moe", status="done", spec=spec, title="Qwen3",
                      checks=[dict(T=1, ok=False, ours_vs_ref32=dict(max_abs=None, rel=None,
                                                                     ref_max=1.0))],
                      rows=[dict(T=1, distinct=8, assignments=8,
                                 cols=dict(ours=ok(0.05), hf_eager=ok(3.5), hf_grouped_mm=ok(1.0),
                                           hf_compile=dict(ok(0.3), compile_s=3.0))),
                            dict(T=8192, distinct=128, assignments=8 * 8192,
                                 cols=dict(ours=ok(1.0), hf_eager=dict(status="skipped",
                                                                       note="skipped: projected 9 s"),
                                           hf_grouped_mm=dict(status="error", note="boom"),
                                           hf_compile=dict(status="ok", ms=None)))])})
    run_gpu.derive(result)
    assert not result["limits_used"]["measured"]          # the TOOLCHAIN.md numbers instead
    r1, r8 = result["cases"]["qwen3"]["rows"]
    # the issue's floor for Qwen3 at T=1 is 0.018 ms (4190 GB/s, 8 experts)
    assert abs(r1["floor_ms"] - 0.018) < 0.002
    assert r1["cols"]["ours"]["speedup_vs_best_peer"] == pytest.approx(0.3 / 0.05)
    assert r8["cols"]["hf_compile"]["status"] == "error"   # an ok without a time
    md = run_gpu.markdown(result)
    assert "NOT measured" in md and "skipped: projected 9 s" in md
    assert "max abs nan" in md and "**FAILED**" in md
    assert "error: transformers grouped_mm at T = 8192: boom" in md
    assert "qwen3 T=1: " in md and "target 3×" in md and "of the matmul rate" in md
