#!/usr/bin/env bash
# Prepares what the one-shot GPU check carries to the GPU machine, which has
# no LLVM/MLIR and no network (docs/gpu.md):
#
#   scripts/gpu/prepare.sh [--tiny] [--cases a,b] [--gpu-arch sm_90] [--no-tests] [carry-dir]
#
# into <carry-dir> (default: gpu-carry/ in the repo root, git-ignored):
#   layers/<case>/   the benchmark's layers (benchmarks/gpu_cases.py) compiled
#                    by moe-compile --target=cuda: lib<name>.so + abi.json +
#                    layer.json (what Layer.save writes) + spec.json
#   tests/           the GPU pytest module's precompiled layers
#                    (python -m moe_mlir.gpu_layers prepare), when the package
#                    has that module (not with --no-tests)
#   python/moe_mlir  the Python package the layers were built with
#   lib/             the runtime's shared library (libmoe_runtime.so)
#   MANIFEST.txt     what is there, its size, the commit
# and fails if what would travel (working tree + carry) reaches 64 MiB.
# Weights are not carried: the benchmark makes random ones on the device.
#
# Needs the build (scripts/build.sh; MOE_BUILD_DIR, default build/) and ptxas
# (/usr/local/cuda). --tiny compiles the small shapes of run_gpu.py --dry-run.
# The host code is compiled for MOE_GPU_HOST_CPU (default x86-64-v2): the GPU
# machine has another CPU than this one.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
build="${MOE_BUILD_DIR:-$root/build}"
compiler="${MOE_COMPILE:-$build/bin/moe-compile}"
arch=sm_90
mcpu="${MOE_GPU_HOST_CPU:-x86-64-v2}"
tiny=()
cases=""
carry=""
no_tests=0
failed=()
limit=$((64 * 1024 * 1024))

while [[ $# -gt 0 ]]; do
  case "$1" in
    --tiny) tiny=(--tiny) ;;
    --cases) cases="$2"; shift ;;
    --gpu-arch) arch="$2"; shift ;;
    --no-tests) no_tests=1 ;;
    -h|--help) sed -n '2,26p' "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "prepare.sh: unknown option $1" >&2; exit 2 ;;
    *) carry="$1" ;;
  esac
  shift
done
carry="${carry:-$root/gpu-carry}"
mkdir -p "$carry"
carry="$(cd "$carry" && pwd)"

if [[ ! -x "$compiler" ]]; then
  echo "prepare.sh: no moe-compile at $compiler: build first (scripts/build.sh) or set MOE_BUILD_DIR / MOE_COMPILE" >&2
  exit 1
fi
export PATH="$PATH:/usr/local/cuda/bin"
if ! command -v ptxas >/dev/null; then
  echo "prepare.sh: ptxas not found (CUDA toolkit, /usr/local/cuda/bin): moe-compile --target=cuda needs it" >&2
  exit 1
fi

rm -rf "${carry:?}/layers" "${carry:?}/specs" "${carry:?}/tests" "${carry:?}/python" "${carry:?}/lib" "${carry:?}/MANIFEST.txt"
mkdir -p "$carry/layers" "$carry/specs" "$carry/lib" "$carry/python"
export PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}"

mapfile -t all < <(python3 "$root/benchmarks/gpu_cases.py" write-specs "$carry/specs" "${tiny[@]}")
selected=()
for c in "${all[@]}"; do
  if [[ -z "$cases" || ",$cases," == *",$c,"* ]]; then
    selected+=("$c")
  fi
done
if [[ ${#selected[@]} -eq 0 ]]; then
  echo "prepare.sh: no case selected (have: ${all[*]})" >&2
  exit 2
fi

for c in "${selected[@]}"; do
  spec="$carry/specs/$c.json"
  dir="$carry/layers/$c"
  mkdir -p "$dir"
  name="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["name"])' "$spec")"
  # Host code (argument checks, launches) for a baseline x86-64: the GPU
  # machine has another CPU than this one (moe-compile defaults to this host).
  opts=(--target=cuda "--gpu-arch=$arch" "--mcpu=$mcpu")
  t0=$SECONDS
  if ! "$compiler" "${opts[@]}" --emit=abi "$spec" > "$dir/abi.json" ||
     ! "$compiler" "${opts[@]}" --emit=shared "$spec" -o "$dir/lib$name.so"; then
    echo "prepare.sh: compiling $c FAILED (the benchmark reads n/a for it)" >&2
    rm -rf "$dir"
    failed+=("$c")
    continue
  fi
  cp "$spec" "$dir/spec.json"
  # layer.json as Layer.save writes it (python/moe_mlir/compiler.py).
  python3 - "$spec" "$dir" "lib$name.so" "${opts[@]}" <<'PY'
import json
import sys
from pathlib import Path

import moe_mlir
from moe_mlir import compiler

spec_file, directory, library, *options = sys.argv[1:]
gpu_arch = next(o.split("=", 1)[1] for o in options if o.startswith("--gpu-arch="))
manifest = {"format": compiler.MANIFEST_FORMAT,
            "spec": moe_mlir.load_spec(json.loads(Path(spec_file).read_text())),
            "library": library, "target": "cuda", "options": options, "gpu_arch": gpu_arch,
            "host": None}
Path(directory, compiler.MANIFEST_NAME).write_text(json.dumps(manifest, indent=1))
abi = json.loads(Path(directory, "abi.json").read_text())
assert [layer["device"] for layer in abi["layers"]] == ["cuda"], abi["layers"]
PY
  echo "compiled $c ($name, $arch) in $((SECONDS - t0)) s: $(du -sh "$dir" | cut -f1)"
done

# The host side of every layer at every T of the benchmark, through the
# build's fake driver (nothing runs): scratch sizes, grid and block limits.
fake="$build/test/Runtime/libfake-cuda.so"
if [[ -f "$fake" ]]; then
  if [[ ${#tiny[@]} -gt 0 ]]; then tokens=1,16,64; else tokens=1,16,128,1024,8192; fi
  if ! MOE_CUDA_DRIVER="$fake" \
      python3 "$root/benchmarks/gpu_layer.py" host-check "$carry/layers" --T "$tokens" \
      | tee "$carry/host-check.txt"; then
    echo "prepare.sh: a layer's host side refused a T (above): those cells will read error" >&2
    failed+=("host-check")
  fi
else
  echo "note: no $fake: the layers' host side was not checked"
fi

# The package, without caches.
tar -C "$root/python" --exclude=__pycache__ --exclude='*.pyc' -cf - moe_mlir | tar -C "$carry/python" -xf -
if [[ -f "$build/lib/libmoe_runtime.so" ]]; then
  cp "$build/lib/libmoe_runtime.so" "$carry/lib/"
else
  echo "prepare.sh: warning: no $build/lib/libmoe_runtime.so to carry" >&2
fi

# The GPU pytest module's layers (the CUDA Python API's own preparer).
if [[ $no_tests -eq 1 ]]; then
  echo "note: --no-tests: no GPU test layers"
elif [[ -f "$root/python/moe_mlir/gpu_layers.py" ]]; then
  if MOE_COMPILE="$compiler" python3 -m moe_mlir.gpu_layers prepare "$carry/tests"; then
    echo "prepared the GPU test layers in $carry/tests"
  else
    echo "prepare.sh: preparing the GPU test layers FAILED (run.sh skips pytest)" >&2
    rm -rf "${carry:?}/tests"
    failed+=("gpu-test-layers")
  fi
else
  echo "note: python/moe_mlir/gpu_layers.py absent: no GPU test layers (run.sh skips that step)"
fi

commit="$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)"
carry_bytes="$(du -sb "$carry" | cut -f1)"
# What the device tool sends: tracked + untracked-not-ignored files + the carry.
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
  tree_bytes="$(cd "$root" && git ls-files -z -c -o --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null \
    | awk '{s += $1} END {print s + 0}')"
else  # not a git checkout: everything but the build folders and the carry
  tree_bytes="$(cd "$root" && find . \( -path './build*' -o -path ./gpu-carry -o -path "./${carry#"$root"/}" \) \
    -prune -o -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')"
fi
total=$((carry_bytes + tree_bytes))
{
  echo "gpu-carry prepared $(date -u +%Y-%m-%dT%H:%M:%SZ) from commit $commit, gpu-arch $arch${tiny:+ (tiny shapes)}"
  echo "cases: ${selected[*]}${failed[*]:+; FAILED: ${failed[*]}}"
  echo "carry: $carry_bytes bytes; working tree: $tree_bytes bytes; together $total of $limit"
  [[ -f "$carry/host-check.txt" ]] && cat "$carry/host-check.txt"
  (cd "$carry" && find . -type f -printf '%s\t%p\n' | sort -k2)
} > "$carry/MANIFEST.txt"
echo "carry $carry: $((carry_bytes / 1024)) KiB; with the working tree $((total / 1024)) KiB of the 65536 KiB the device tool takes"
if [[ $total -ge $limit ]]; then
  echo "prepare.sh: too big for the device tool's 64 MiB" >&2
  exit 1
fi
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "prepare.sh: prepared, but these FAILED: ${failed[*]} (the rest is usable)" >&2
  exit 3
fi
