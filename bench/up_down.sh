#!/usr/bin/env bash
# Benchmark: `iac up` + `iac down` of a stack against the local emulator.
# Reports wall time and AWS call counts per phase, as the median of N runs, for each
# --parallelism given, optionally with a latency added to every call by a loopback proxy.
#   bench/up_down.sh [-n RUNS] [-s STACK] [-d DELAY_MS] [-p "1 8"]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
runs=5; stack=stacks/bookstore-vm.yaml; delay=0; pars="8"
while getopts "n:s:d:p:" o; do
  case $o in n) runs=$OPTARG ;; s) stack=$OPTARG ;; d) delay=$OPTARG ;; p) pars=$OPTARG ;; *) exit 2 ;; esac
done

# Debug by default (the time is the emulator's and the network's, not iac's CPU);
# BENCH_PROFILE=release for an optimised binary.
profile="${BENCH_PROFILE:-debug}"
if [ "$profile" = release ]; then cargo build --quiet --release --bin iac; else cargo build --quiet --bin iac; fi
iac="$(bash "$root/scripts/target-dir.sh")/$profile/iac"
url="$(scripts/emulator.sh start)"
trap 'scripts/emulator.sh stop; [ -n "${proxy_pid:-}" ] && kill "$proxy_pid" 2>/dev/null || true' EXIT
scripts/emulator.sh seed "$url" >/dev/null
tmp="$(mktemp -d)"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true CI=true
endpoint="$url"
if [ "$delay" -gt 0 ]; then
  port="${url##*:}"
  proxy_port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  .venv/bin/python bench/slow_proxy.py "$proxy_port" "$port" "$delay" &
  proxy_pid=$!
  sleep 0.5
  endpoint="http://127.0.0.1:$proxy_port"
fi
export AWS_ENDPOINT_URL="$endpoint"

# Warm the emulator's EC2 backend (its first call loads it, ~1.4 s) so runs compare fairly.
"$iac" status --stack warmup >/dev/null

summary() { grep '"event":"summary"' | tail -1; }
printf "stack=%s runs=%d added_latency_ms=%d\n" "$stack" "$runs" "$delay"
printf "%-12s %-6s %10s %10s %10s\n" parallelism phase median_ms calls mutating
for par in $pars; do
  for phase in up down; do : > "/tmp/iac-bench-$phase"; done
  for i in $(seq 1 "$runs"); do
    # A fresh stack name per run: the emulator names a new Aurora cluster's automated snapshot
    # after the minute, so re-creating the same cluster within a minute collides.
    run_stack="$tmp/run-$par-$i.yaml"
    sed -E "s/^name: (.*)$/name: \1-$par-$i/" "$stack" > "$run_stack"
    "$iac" -o json up "$run_stack" --yes --parallelism "$par" | summary >> /tmp/iac-bench-up
    "$iac" -o json down "$run_stack" --yes --delete-data --skip-final-snapshot --parallelism "$par" | summary >> /tmp/iac-bench-down
  done
  for phase in up down; do
    .venv/bin/python - "$par" "$phase" "/tmp/iac-bench-$phase" <<'PY'
import json, statistics, sys
par, phase, path = sys.argv[1:]
rows = [json.loads(l) for l in open(path) if l.strip()]
ms = statistics.median(r["elapsed_ms"] for r in rows)
calls = statistics.median(r["api_calls_total"] for r in rows)
mut = statistics.median(sum(r["mutating_calls"].values()) for r in rows)
print(f"{par:<12} {phase:<6} {ms:>10.0f} {calls:>10.0f} {mut:>10.0f}")
PY
  done
done
