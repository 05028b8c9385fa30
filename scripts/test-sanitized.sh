#!/usr/bin/env bash
# The whole test suite (lit + pytest) on an ASan + UBSan build: the compiler,
# the runtime, the generated kernels and the fuzz targets instrumented
# (MOE_SANITIZE=address,undefined, MOE_BUILD_FUZZERS=ON) in $MOE_BUILD_DIR
# (default: build-asan/). Any sanitizer report fails the test it happens in.
#
#   scripts/test-sanitized.sh                 build, then lit and pytest
#   scripts/test-sanitized.sh --build-only    configure and build (fuzz.sh)
#   PYTEST_ARGS="-k route" scripts/test-sanitized.sh    a subset of pytest
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${MOE_BUILD_DIR:-$root/build-asan}"
llvm_version="${MOE_LLVM_VERSION:-22}"
llvm_bin="/usr/lib/llvm-${llvm_version}/bin"
clang="clang-${llvm_version}"

"$root/scripts/install-deps.sh" || exit 1
if [[ ! -f "$build/build.ninja" ]]; then
  cmake -G Ninja -S "$root" -B "$build" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER="$clang" \
    -DCMAKE_CXX_COMPILER="clang++-${llvm_version}" \
    -DMOE_LLVM_VERSION="${llvm_version}" \
    -DLLVM_EXTERNAL_LIT="${llvm_bin}/lit" \
    -DMOE_SANITIZE=address,undefined \
    -DMOE_BUILD_FUZZERS=ON >/dev/null || exit 1
fi
ninja -C "$build" ${MOE_JOBS:+-j "$MOE_JOBS"} || exit 1
[[ "${1:-}" == "--build-only" ]] && exit 0

# Reports with symbols; UBSan stops at its first report (the build also says
# -fno-sanitize-recover); leaks fail the compiler's tests.
export ASAN_SYMBOLIZER_PATH="${llvm_bin}/llvm-symbolizer"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0"
status=0

echo "== lit (check-moe, sanitized)"
ninja -C "$build" check-moe || status=1

echo "== pytest (python/tests, sanitized)"
# The interpreter is not instrumented: the ASan runtime must be the first
# library of the process to load kernels (ctypes), so it is preloaded, and
# CPython's own allocations at exit are not leaks of ours. Compiled layers
# go to a cache of their own: the plain build's kernels have the same specs.
asan_runtime="$("$clang" -print-file-name=libclang_rt.asan-x86_64.so)"
(
  cd "$root" &&
    MOE_BUILD_DIR="$build" MOE_MLIR_CACHE="$build/moe-mlir-cache" \
    LD_PRELOAD="$asan_runtime" ASAN_OPTIONS="detect_leaks=0" \
    python3 -m pytest python/tests -q -p no:cacheprovider ${PYTEST_ARGS:-}
) || status=1

if ((status == 0)); then
  echo "test-sanitized: lit and pytest passed under ASan + UBSan"
else
  echo "test-sanitized: FAILED" >&2
fi
exit $status
