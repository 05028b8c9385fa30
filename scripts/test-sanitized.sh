#!/usr/bin/env bash
# The whole test suite on an ASan + UBSan build: the compiler, the runtime,
# the generated kernels and the fuzz targets instrumented
# (MOE_SANITIZE=address,undefined, MOE_BUILD_FUZZERS=ON) in $MOE_BUILD_DIR
# (default: build-asan/). Any sanitizer report fails the test it happens in.
#
#   scripts/test-sanitized.sh                 build, then lit and every pytest file
#   scripts/test-sanitized.sh --build-only    configure and build (fuzz.sh)
#   PYTEST_ARGS="-k route" scripts/test-sanitized.sh    a subset of pytest
#   MOE_SANITIZED_PYTEST=quick scripts/test-sanitized.sh
#       pytest only the QUICK_PYTEST files below (a few minutes)
#
# Under ASan pytest costs about 3x the plain suite's CPU time (every layer
# is recompiled by the instrumented compiler); it runs on one worker per core
# (MOE_TEST_JOBS, at most 4: an instrumented moe-compile holds up to 1.2 GB).
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

# Kernels of every layer kind through both pipelines (numerical edges), the
# thread pool from many threads, the out-of-memory path, the API's checks.
QUICK_PYTEST=(
  python/tests/test_numerical_edges.py
  python/tests/test_threads.py
  python/tests/test_out_of_memory.py
  python/tests/test_hostile_inputs.py
)
if [[ "${MOE_SANITIZED_PYTEST:-}" == quick ]]; then
  pytest_files=("${QUICK_PYTEST[@]}")
else
  pytest_files=(python/tests)
fi
jobs="${MOE_TEST_JOBS:-$(nproc)}"
((jobs > 4)) && jobs=4
((jobs > 1)) && parallel=(-n "$jobs" --dist loadfile) || parallel=()
echo "== pytest (${pytest_files[*]}, sanitized, ${jobs} worker(s))"
# The interpreter is not instrumented: the ASan runtime must be the first
# library of the process to load kernels (ctypes), so it is preloaded, and
# CPython's own allocations at exit are not leaks of ours. The suite keeps
# its compiled layers in a cache of its own run (python/tests/conftest.py).
asan_runtime="$("$clang" -print-file-name=libclang_rt.asan-x86_64.so)"
(
  cd "$root" &&
    MOE_BUILD_DIR="$build" \
    LD_PRELOAD="$asan_runtime" ASAN_OPTIONS="detect_leaks=0" \
    python3 -m pytest "${pytest_files[@]}" -q -p no:cacheprovider "${parallel[@]}" \
      ${PYTEST_ARGS:-}
) || status=1

if ((status == 0)); then
  echo "test-sanitized: lit and pytest passed under ASan + UBSan"
else
  echo "test-sanitized: FAILED" >&2
fi
exit $status
