#!/usr/bin/env bash
# Runs each libFuzzer target of tools/fuzz for SECONDS (default 60) on its
# corpus, seeded from examples/, test/ and the regression inputs of
# test/Fuzz, with the dictionaries of tools/fuzz. Builds them first (the
# sanitized build of scripts/test-sanitized.sh, $MOE_BUILD_DIR, default
# build-asan/). Fails if a target finds a crash, a hang (10 s per spec, 30 s
# per module), a leak or a sanitizer report; the input is kept as
# <work>/artifacts/<target>-*.
#
#   scripts/fuzz.sh [SECONDS] [moe-fuzz-spec|moe-fuzz-ir ...]
#
# The corpora grow in $MOE_FUZZ_DIR (default <build>/fuzz) from run to run.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export MOE_BUILD_DIR="${MOE_BUILD_DIR:-$root/build-asan}"
build="$MOE_BUILD_DIR"
work="${MOE_FUZZ_DIR:-$build/fuzz}"
seconds="${1:-60}"
shift $(($# > 0 ? 1 : 0))
targets=("$@")
((${#targets[@]})) || targets=(moe-fuzz-spec moe-fuzz-ir)
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || ((seconds == 0)); then
  echo "fuzz.sh: SECONDS must be a positive integer, got '$seconds'" >&2
  exit 2
fi

"$root/scripts/test-sanitized.sh" --build-only || exit 1

# Seeds: every spec and every moe module of the repository, one module per
# file (split at `// -----` as -split-input-file does).
mkdir -p "$work/seed-spec" "$work/seed-ir" "$work/artifacts"
python3 - "$root" "$work" <<'EOF' || exit 1
import hashlib, pathlib, re, sys
root, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
def put(kind, text):
    name = hashlib.sha1(text.encode()).hexdigest()
    (work / f"seed-{kind}" / name).write_text(text)
specs = [p for d in ("examples", "test/Frontend/Inputs", "test/Fuzz/Inputs")
         for p in (root / d).glob("*") if p.suffix in (".yaml", ".yml", ".json")]
for path in specs:
    put("spec", path.read_text())
for path in (root / "test").rglob("*.mlir"):
    for module in re.split(r"^// -----.*$", path.read_text(), flags=re.M):
        if module.strip():
            put("ir", module)
EOF

export ASAN_SYMBOLIZER_PATH="/usr/lib/llvm-${MOE_LLVM_VERSION:-22}/bin/llvm-symbolizer"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
status=0
for target in "${targets[@]}"; do
  case "$target" in
  # An input slower than this is a hang. Lowering one small layer takes
  # 0.5 s of CPU (1.8 s under ASan) but 15 s of wall time on a loaded 2-core
  # machine, so the IR target gets more.
  moe-fuzz-spec) kind=spec timeout=10 ;;
  moe-fuzz-ir) kind=ir timeout=30 ;;
  *) echo "fuzz.sh: unknown target '$target'" >&2; exit 2 ;;
  esac
  mkdir -p "$work/corpus-$kind"
  log="$work/$target.log"
  echo "== $target: ${seconds} s"
  "$build/bin/$target" -max_total_time="$seconds" -timeout="$timeout" \
    -rss_limit_mb=4096 -print_final_stats=1 \
    -dict="$root/tools/fuzz/$kind.dict" \
    -artifact_prefix="$work/artifacts/$target-" \
    "$work/corpus-$kind" "$work/seed-$kind" >"$log" 2>&1
  rc=$?
  runs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$')"
  units="$(ls "$work/corpus-$kind" | wc -l)"
  if ((rc == 0)); then
    echo "$target: ${runs:-?} executions in ${seconds} s, corpus $units inputs, no finding"
  else
    status=1
    tail -n 60 "$log"
    echo "$target: FAILED (exit $rc) after ${runs:-?} executions; log $log," \
      "input in $work/artifacts/" >&2
  fi
done
exit $status
