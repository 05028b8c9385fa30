#!/usr/bin/env bash
# Installs everything MoE-MLIR needs on a fresh Debian 12 machine. Idempotent:
# a machine that already has the packages is left as it is.
set -euo pipefail

LLVM_VERSION="${MOE_LLVM_VERSION:-22}"
APT_PACKAGES=(
  "libmlir-${LLVM_VERSION}-dev" "mlir-${LLVM_VERSION}-tools"
  "llvm-${LLVM_VERSION}-dev" "llvm-${LLVM_VERSION}-tools" "clang-${LLVM_VERSION}"
  # ASan/UBSan and libFuzzer runtimes (scripts/test-sanitized.sh, fuzz.sh).
  "libclang-rt-${LLVM_VERSION}-dev"
  ninja-build cmake
)
PIP_PACKAGES=(numpy pytest pytest-xdist pyyaml)
# PyTorch and transformers (moe_mlir.torch, the Hugging Face import and its
# parity tests; the tests skip without them). From PyPI: its Linux torch
# wheel brings the CUDA libraries (torch 2.15: 57 wheels, 3.05 GB to download,
# 5.6 GB installed; 11.5 min on a loaded 2-core VM). MOE_SKIP_TORCH=1 leaves
# them out.
TORCH_PACKAGES=(torch "transformers>=5" safetensors)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "install-deps: apt-get install ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
[[ "${MOE_SKIP_TORCH:-0}" == 1 ]] || PIP_PACKAGES+=("${TORCH_PACKAGES[@]}")
pip_missing=()
for pkg in "${PIP_PACKAGES[@]}"; do
  case "$pkg" in
    pyyaml) check="import yaml" ;;
    pytest-xdist) check="import xdist" ;;
    # Found without importing them (torch takes seconds to import);
    # transformers 4.x lacks the MoE blocks the parity tests build.
    torch|safetensors) check="import importlib.util as u, sys; sys.exit(u.find_spec('$pkg') is None)" ;;
    transformers*) check="from importlib.metadata import version; assert int(version('transformers').split('.')[0]) >= 5" ;;
    *) check="import $pkg" ;;
  esac
  "$PYTHON" -c "$check" 2>/dev/null || pip_missing+=("$pkg")
done
if ((${#pip_missing[@]})); then
  echo "install-deps: pip install ${pip_missing[*]}"
  "$PYTHON" -m pip install -q "${pip_missing[@]}"
fi
echo "install-deps: LLVM/MLIR ${LLVM_VERSION} toolchain and Python packages present"
