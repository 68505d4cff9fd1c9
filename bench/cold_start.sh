#!/usr/bin/env bash
# Benchmark: the release binary's size and the cold start of `iac validate`, side by side with a
# baseline run in the same loop: check-jsonschema (the independent validator the tests use, from
# .venv) validating the same file against schemas/stack.schema.json. Runs alternate, so the
# machine's load falls on both alike; the result is reported as a ratio of medians.
#   bench/cold_start.sh [-n RUNS] [-s STACK] [-B]     (-B: use the binaries already built)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
runs=30; stack=stacks/bookstore-vm.yaml; build=1
while getopts "n:s:B" o; do
  case $o in n) runs=$OPTARG ;; s) stack=$OPTARG ;; B) build= ;; *) exit 2 ;; esac
done

if [ -n "$build" ]; then
  cargo build --quiet --release --bin iac
  cargo build --quiet --bin iac
fi
target="$(bash "$root/scripts/target-dir.sh")"
iac="$target/release/iac"
bash scripts/emulator.sh install
checker="$root/.venv/bin/check-jsonschema"

# Milliseconds of one run of "$@" (output discarded; a failure stops the benchmark).
ms() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
kb() { if [ -f "$1" ]; then echo $(($(stat -c %s "$1") / 1024)); else echo "-"; fi; }
# Peak resident memory of one run, in kB (GNU time).
rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1; }

# One warm-up each (page cache), then alternate.
ms "$iac" validate "$stack" >/dev/null
ms "$checker" --schemafile schemas/stack.schema.json "$stack" >/dev/null
a=(); b=()
for _ in $(seq 1 "$runs"); do
  a+=("$(ms "$iac" validate "$stack")")
  b+=("$(ms "$checker" --schemafile schemas/stack.schema.json "$stack")")
done
ma=$(printf '%s\n' "${a[@]}" | median)
mb=$(printf '%s\n' "${b[@]}" | median)

printf "stack=%s runs=%d\n" "$stack" "$runs"
printf "%-46s %8s\n" "binary" "size_kB"
printf "%-46s %8s\n" "iac (release: lto, codegen-units=1, strip)" "$(kb "$iac")"
printf "%-46s %8s\n" "iac (debug)" "$(kb "$target/debug/iac")"
printf "%-46s %8s %8s\n" "cold start" "median_ms" "peak_kB"
printf "%-46s %8s %8s\n" "iac validate" "$ma" "$(rss "$iac" validate "$stack")"
printf "%-46s %8s %8s\n" "check-jsonschema (baseline)" "$mb" "$(rss "$checker" --schemafile schemas/stack.schema.json "$stack")"
awk -v a="$ma" -v b="$mb" 'BEGIN { if (a > 0) printf "ratio baseline/iac: %.1fx\n", b / a; else print "ratio: iac under 1 ms" }'
