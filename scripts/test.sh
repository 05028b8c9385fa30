#!/usr/bin/env bash
# The whole test suite: installs dependencies, builds, runs the lit suite
# (check-moe: dialect, front end, lowering, integration, ABI, example app,
# installed package) and the Python tests (reference and compiled layers),
# then prints one closing "N passed, N failed" line.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export MOE_BUILD_DIR="${MOE_BUILD_DIR:-$root/build}"

"$root/scripts/install-deps.sh" || exit 1
"$root/scripts/build.sh" || exit 1

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0

echo "== lit (check-moe)"
"$root/scripts/build.sh" check-moe 2>&1 | tee "$log" || status=1
lit_count() { # the number lit printed after "LABEL:", or 0
  local n
  n="$(grep -E "^\s*$1:" "$log" | tail -n 1 | sed -E 's/.*:\s*([0-9]+).*/\1/')"
  echo "${n:-0}"
}
passed=$(( $(lit_count Passed) + $(lit_count "Expectedly Failed") ))
failed=$(( $(lit_count Failed) + $(lit_count "Unexpectedly Passed") + $(lit_count Unresolved) + $(lit_count "Timed Out") ))
skipped=$(( $(lit_count Unsupported) + $(lit_count Skipped) ))
echo "lit: ${passed} passed, ${failed} failed, ${skipped} skipped"

# One pytest worker per core (MOE_TEST_JOBS=N for N; 1: in this process),
# a test file per worker at a time: a file's layers are compiled once.
jobs="${MOE_TEST_JOBS:-$(nproc)}"
((jobs > 1)) && parallel=(-n "$jobs" --dist loadfile) || parallel=()
echo "== pytest (python/tests, ${jobs} worker(s))"
(cd "$root" && python3 -m pytest python/tests -q -p no:cacheprovider "${parallel[@]}") 2>&1 | tee "$log"
pytest_status=${PIPESTATUS[0]}
summary="$(tail -n 1 "$log")"
py_count() { # the number before WORD in pytest's summary line, or 0
  local n
  n="$(echo "$summary" | grep -oE "[0-9]+ $1" | awk '{print $1}')"
  echo "${n:-0}"
}
py_passed=$(py_count passed)
py_failed=$(( $(py_count failed) + $(py_count error) + $(py_count errors) ))
py_skipped=$(py_count skipped)
# Exit 5 means no test was collected: that is a failure here too.
if (( pytest_status != 0 )) && (( py_failed == 0 )); then
  py_failed=1
fi

passed=$(( passed + py_passed ))
failed=$(( failed + py_failed ))
skipped=$(( skipped + py_skipped ))
if (( passed == 0 )); then
  echo "test.sh: no test ran" >&2
  status=1
fi
(( failed == 0 )) || status=1
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
exit $status
