#!/usr/bin/env bash
# The main job: installs dependencies, builds the compiler, compiles an example
# layer for the CPU, runs it on random input and checks it against the NumPy
# reference. Usage: scripts/run-example.sh [SPEC] [--tokens N]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" moe-compile moe_runtime_static
export MOE_BUILD_DIR="${MOE_BUILD_DIR:-$root/build}"
exec python3 "$root/examples/run_layer.py" "$@"
