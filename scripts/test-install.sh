#!/usr/bin/env bash
# The out-of-tree consumer test: installs a built MoE-MLIR tree into a fresh
# prefix, checks the installed tools run, then configures, builds and runs
# examples/app on its own against the installed package:
#   cmake -S examples/app -B <work>/app -DMoEMLIR_DIR=<prefix>/lib/cmake/MoEMLIR
#
# Usage: scripts/test-install.sh [--build-dir DIR] [--work-dir DIR]
#   --build-dir  the configured and built MoE-MLIR tree ($MOE_BUILD_DIR, or
#                build/); everything `cmake --install` installs must be built
#   --work-dir   where to put the prefix and the consumer's build (kept); by
#                default a temporary directory, removed at exit
# Compilers: $CC/$CXX, else the ones the MoE-MLIR build used.
# Prints "test-install: OK" and exits 0 when every step passed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${MOE_BUILD_DIR:-$root/build}"
work=""
while (($#)); do
  case "$1" in
    --build-dir) build="$2"; shift 2 ;;
    --work-dir) work="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "test-install: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

die() { echo "test-install: FAILED: $*" >&2; exit 1; }

[[ -f "$build/CMakeCache.txt" ]] || die "no configured build in '$build'"
build="$(cd "$build" && pwd)"
if [[ -z "$work" ]]; then
  work="$(mktemp -d "${TMPDIR:-/tmp}/moe-test-install.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"
work="$(cd "$work" && pwd)"
prefix="$work/prefix"
rm -rf "$prefix" "$work/app"

cache_value() { # cache_value VAR: VAR's value in the build's CMakeCache.txt
  sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt" | head -n 1
}
cc="${CC:-$(cache_value CMAKE_C_COMPILER)}"
cxx="${CXX:-$(cache_value CMAKE_CXX_COMPILER)}"

# 1. Install.
cmake --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 \
  || { cat "$work/install.log" >&2; die "cmake --install $build"; }
for f in bin/moe-compile bin/moe-opt lib/libmoe_runtime.so lib/libmoe_runtime.a \
         include/moe-c/moe_runtime.h \
         lib/cmake/MoEMLIR/MoEMLIRConfig.cmake \
         lib/cmake/MoEMLIR/MoEMLIRConfigVersion.cmake \
         lib/cmake/MoEMLIR/MoEMLIRTargets.cmake \
         lib/cmake/MoEMLIR/MoEMLIR.cmake; do
  [[ -e "$prefix/$f" ]] || die "$f is not installed"
done
echo "test-install: installed into $prefix"

# 2. The installed tools run without LD_LIBRARY_PATH (their RUNPATH finds
#    libMLIR.so), from the prefix, not the build tree.
spec="$root/examples/app/tiny_moe.yaml"
env -u LD_LIBRARY_PATH "$prefix/bin/moe-compile" --emit=mlir "$spec" \
  | env -u LD_LIBRARY_PATH "$prefix/bin/moe-opt" >/dev/null \
  || die "the installed moe-compile | moe-opt failed"
echo "test-install: installed moe-opt runs"
env -u LD_LIBRARY_PATH "$prefix/bin/moe-compile" --emit=shared "$spec" \
  -o "$work/tiny_moe.so" || die "the installed moe-compile --emit=shared failed"
# The kernel embeds the runtime: it defines moe_rt_fail rather than needing it.
if command -v nm >/dev/null; then
  defined="$(nm -D --defined-only "$work/tiny_moe.so")"
  undefined="$(nm -D --undefined-only "$work/tiny_moe.so")"
  grep -q ' T tiny_moe_forward$' <<<"$defined" \
    || die "tiny_moe.so does not export tiny_moe_forward"
  if grep -q 'moe_rt_fail' <<<"$undefined"; then
    die "tiny_moe.so does not embed the runtime"
  fi
fi
echo "test-install: installed moe-compile --emit=shared links $prefix/lib/libmoe_runtime.a"

# 3. The consumer, configured against the installed package only.
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake "${generator[@]}" -S "$root/examples/app" -B "$work/app" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON \
  -DMoEMLIR_DIR="$prefix/lib/cmake/MoEMLIR" >"$work/configure.log" 2>&1 \
  || { cat "$work/configure.log" >&2; die "configuring examples/app"; }
found="$(sed -n 's/^MoEMLIR_DIR:[A-Z]*=//p' "$work/app/CMakeCache.txt")"
[[ "$found" == "$prefix/lib/cmake/MoEMLIR" ]] \
  || die "examples/app found MoEMLIR in '$found', not the prefix"
echo "test-install: consumer configured with MoEMLIR_DIR=$found"
cmake --build "$work/app" -- -j "$(nproc 2>/dev/null || echo 2)" \
  >"$work/build.log" 2>&1 \
  || { cat "$work/build.log" >&2; die "building examples/app"; }
# moe_add_layer ran the installed moe-compile.
grep -rqF "$prefix/bin/moe-compile" "$work/app" --include='*.ninja' \
  --include='build.make' || die "examples/app did not use the installed moe-compile"

# 4. Run it.
"$work/app/moe-example-app" || die "moe-example-app failed"
echo "test-install: OK"
