#!/usr/bin/env bash
# Configures and builds MoE-MLIR in $MOE_BUILD_DIR (default: build/) with
# Ninja and clang against the Debian LLVM/MLIR packages.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${MOE_BUILD_DIR:-$root/build}"
llvm_version="${MOE_LLVM_VERSION:-22}"
llvm_bin="/usr/lib/llvm-${llvm_version}/bin"

if [[ ! -f "$build/build.ninja" ]]; then
  cmake -G Ninja -S "$root" -B "$build" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER="clang-${llvm_version}" \
    -DCMAKE_CXX_COMPILER="clang++-${llvm_version}" \
    -DMOE_LLVM_VERSION="${llvm_version}" \
    -DLLVM_EXTERNAL_LIT="${llvm_bin}/lit" >/dev/null
fi
ninja -C "$build" "$@"
