#!/usr/bin/env bash
# The one-shot GPU check, run ON the GPU machine from the repo root (a copy of
# the working tree with gpu-carry/ from scripts/gpu/prepare.sh); docs/gpu.md
# gives the device-tool call.  Writes at most 8 files to $OUT:
#   smi.txt      nvidia-smi
#   run.log      this script's steps and their times
#   pytest.log   the GPU pytest module against gpu-carry/tests (if present)
#   bench.log    benchmarks/run_gpu.py's output
#   gpu.json gpu.md gpu.png   the benchmark's results (rewritten after every case)
#   logs.tar.gz  everything else (worker logs, JUnit XML, environment)
# Every step is time-boxed with `timeout`; the whole script ends within
# GPU_RUN_TOTAL_S seconds (default 510 = 8.5 min) even when a step hangs, and
# the results written so far are kept.
#
# Environment: OUT (default ./gpu-out), GPU_CARRY (default gpu-carry),
# GPU_RUN_TOTAL_S (510), GPU_PYTEST_S (at most this for pytest, 150),
# GPU_PYTEST_MODULES (default python/tests/test_cuda*.py python/tests/test_gpu*.py),
# GPU_BENCH_ARGS (more run_gpu.py arguments, e.g. "--cases qwen3 --no-compile").
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root" || exit 1
OUT="${OUT:-$root/gpu-out}"
carry="${GPU_CARRY:-gpu-carry}"
[[ "$carry" == /* ]] || carry="$root/$carry"
total="${GPU_RUN_TOTAL_S:-510}"
pytest_cap="${GPU_PYTEST_S:-150}"
work="$(mktemp -d /tmp/gpu-run.XXXXXX)"
mkdir -p "$OUT"
runlog="$OUT/run.log"
: > "$runlog"
start=$SECONDS

say() { echo "[$((SECONDS - start)) s] $*" | tee -a "$runlog"; }
left() { echo $((total - (SECONDS - start))); }

finish() {
  say "collecting logs"
  {
    env | grep -E '^(CUDA|NVIDIA|MOE|GPU_|PYTHON|LD_LIBRARY)' | sort
    echo
    python3 -m pip list 2>/dev/null | grep -i -E '^(torch|transformers|triton|numpy|pytest|matplotlib) '
  } > "$work/environment.txt" 2>&1
  cp "$runlog" "$work/" 2>/dev/null
  tar -C "$work" -czf "$OUT/logs.tar.gz" . 2>/dev/null || true
  rm -f "$OUT"/*.tmp
  # The device tool returns files of at most 16 MiB: keep the logs' ends.
  for f in "$OUT/pytest.log" "$OUT/bench.log"; do
    if [[ -f "$f" && $(stat -c %s "$f") -gt 8388608 ]]; then
      tail -c 8388608 "$f" > "$work/tail.log" && mv "$work/tail.log" "$f"
    fi
  done
  # The tool's output_tail: the results even if no file comes back.
  [[ -f "$OUT/pytest.log" ]] && tail -n 15 "$OUT/pytest.log"
  [[ -f "$OUT/gpu.md" ]] && cat "$OUT/gpu.md"
  say "done: $(find "$OUT" -maxdepth 1 -type f -printf '%f ')"
}
trap finish EXIT
trap 'say "terminated by a signal"; exit 143' TERM INT

say "GPU check in $root; OUT=$OUT; carry=$carry; total budget ${total} s"
if [[ -d "$carry/python/moe_mlir" ]]; then
  export PYTHONPATH="$carry/python${PYTHONPATH:+:$PYTHONPATH}"
else
  say "no $carry/python: using the repo's python/ (did scripts/gpu/prepare.sh run?)"
  export PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
unset MOE_CUDA_DRIVER

# 1. The device.
{
  timeout -k 5 20 nvidia-smi
  echo
  timeout -k 5 20 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv
} > "$OUT/smi.txt" 2>&1
say "nvidia-smi: $(grep -m1 -o 'NVIDIA H[0-9A-Za-z ]*' "$OUT/smi.txt" || echo 'no GPU listed')"
timeout -k 5 60 python3 -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-"); sys.stdout.flush()' 2>&1 | tee -a "$runlog"
if [[ -f "$carry/MANIFEST.txt" ]]; then
  head -3 "$carry/MANIFEST.txt" | tee -a "$runlog"
else
  say "WARNING: no $carry/MANIFEST.txt: our layers will read n/a"
fi

# 2. The GPU pytest module against the precompiled test layers.
modules=()
# shellcheck disable=SC2086  # a list of paths or globs
for f in ${GPU_PYTEST_MODULES:-python/tests/test_cuda*.py python/tests/test_gpu*.py}; do
  [[ -f "$f" ]] && modules+=("$f")
done
if [[ -d "$carry/tests" && ${#modules[@]} -gt 0 ]]; then
  cap=$(( $(left) - 240 ))
  (( cap > pytest_cap )) && cap=$pytest_cap
  if (( cap < 30 )); then
    say "pytest skipped: ${cap} s left for it"
  else
    per_test=()
    if python3 -c 'import pytest_timeout' 2>/dev/null; then
      per_test=(--timeout=90)
    fi
    say "pytest ${modules[*]} (MOE_GPU_LAYERS=$carry/tests, at most ${cap} s)"
    MOE_GPU_LAYERS="$carry/tests" timeout -k 10 "$cap" \
      python3 -m pytest -q -rs -p no:cacheprovider "${per_test[@]}" \
      --junitxml="$work/pytest.xml" "${modules[@]}" > "$OUT/pytest.log" 2>&1
    rc=$?
    say "pytest: exit $rc$([[ $rc -eq 124 || $rc -eq 137 ]] && echo ' (TIMED OUT)'): $(tail -1 "$OUT/pytest.log")"
  fi
else
  say "pytest skipped: no $carry/tests or no python/tests/test_gpu*.py / test_cuda*.py" | tee "$OUT/pytest.log"
fi

# 3. The benchmark, with what is left (minus time to collect the logs).
room=$(( $(left) - 20 ))
if (( room < 60 )); then
  say "benchmark skipped: ${room} s left"
else
  budget=$(( room - 35 ))   # the orchestrator's budget; its last worker may overrun by its grace
  say "benchmark: budget ${budget} s, hard limit ${room} s"
  # shellcheck disable=SC2086  # GPU_BENCH_ARGS is a list of arguments
  timeout -k 10 "$room" python3 benchmarks/run_gpu.py --layers "$carry/layers" \
    --out "$OUT" --work "$work/bench" --budget "$budget" ${GPU_BENCH_ARGS:-} > "$OUT/bench.log" 2>&1
  rc=$?
  say "benchmark: exit $rc$([[ $rc -eq 124 || $rc -eq 137 ]] && echo ' (TIMED OUT)')"
fi
