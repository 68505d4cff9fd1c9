#!/usr/bin/env bash
# The custom scaler on this machine: `iac scale --custom-monitor` with a local fleet of real
# iac-agent processes that all play one simulated scenario: 10 % load, 95 % from 10 s to 25 s.
# Watch the pool grow, then shrink after the cooldown; the timeline lands in $1 (CSV + SVG).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${1:-$root/target/scaler-demo}"
stack=stacks/custom-scaler-local.yaml

cargo build --quiet -p iac -p iac-agent
bin="$(bash "$root/scripts/target-dir.sh")/debug"
# The shared token: generated here, passed in the environment (never as a flag).
IAC_SCALER_TOKEN="$(openssl rand -hex 24)"
export IAC_SCALER_TOKEN

"$bin/iac" scale --custom-monitor "$stack" --stop-after 65 --timeline "$out" \
  --agent-bin "$bin/iac-agent" --agent-arg=--simulate --agent-arg=spike:10,95,10,15 \
  --agent-arg=--simulate-since --agent-arg="$(date +%s%3N)" &
monitor=$!
trap 'kill "$monitor" 2>/dev/null || true' EXIT

for at in 5 20 40 60; do
  sleep $(( at - ${last:-0} )); last=$at
  echo; echo "\$ iac scale status $stack    # t=${at}s"
  "$bin/iac" scale status "$stack" || true
done
wait "$monitor"
trap - EXIT
echo; echo "timeline: $out/timeline.csv, $out/timeline.svg"
grep -v '"hold' "$out/timeline.csv"
