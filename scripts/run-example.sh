#!/usr/bin/env bash
# The main job: installs dependencies, builds the compiler, compiles an example
# layer spec to the moe dialect and verifies it with moe-opt.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${MOE_BUILD_DIR:-$root/build}"
spec="${1:-$root/examples/mixtral.yaml}"

"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" moe-opt moe-compile

echo "== moe-compile --emit=mlir $(basename "$spec")"
start=$(date +%s.%N)
"$build/bin/moe-compile" --emit=mlir "$spec" | tee /dev/stderr | "$build/bin/moe-opt" >/dev/null
end=$(date +%s.%N)
printf '== verified by moe-opt (%.2f s)\n' "$(echo "$end - $start" | bc)"
