#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds, runs the lit suite
# (check-moe) and prints one closing "N passed, N failed" line.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${MOE_BUILD_DIR:-$root/build}"

"$root/scripts/install-deps.sh" || exit 1
"$root/scripts/build.sh" || exit 1

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
"$root/scripts/build.sh" check-moe 2>&1 | tee "$log" || status=1

count() { # count LABEL: the number lit printed after "LABEL:", or 0
  local n
  n="$(grep -E "^\s*$1:" "$log" | tail -n 1 | awk '{print $2}')"
  echo "${n:-0}"
}
passed=$(( $(count Passed) + $(count "Expectedly Failed") ))
failed=$(( $(count Failed) + $(count "Unexpectedly Passed") + $(count Unresolved) + $(count "Timed Out") ))
skipped=$(( $(count Unsupported) + $(count Skipped) ))
if (( passed == 0 )); then
  echo "test.sh: no test ran" >&2
  status=1
fi
(( failed == 0 )) || status=1
echo "lit: ${passed} passed, ${failed} failed, ${skipped} skipped"
exit $status
