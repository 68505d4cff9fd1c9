#!/usr/bin/env bash
# Benchmark (issue 14): `iac up` against the hand-written boto3 script (bench/baseline_boto3.py)
# that creates the same resources one call after another with boto3's waiters. Both run against
# one private moto behind bench/aws_delay_proxy.py (DELAY_MS per call; in "ready" mode new
# instances, load balancers, Aurora clusters and instances and EFS file systems look not ready
# for 3 / 6 / 10 / 10 / 3 s). For each stack and mode: N runs of each side, alternating which
# goes first; each run under a fresh stack name, timed by this script around the command, its
# calls counted by the proxy; each followed (untimed) by its `down`. The first iac run of each
# cell is followed by a second, no-op `up`, whose calls are reported by service.
#   bench/up_vs_script.sh [-n RUNS] [-d DELAY_MS] [-m "plain ready"] [-s "STACK_FILE ..."] [-B] [-o DIR]
#     -B  do not build (use the binary already built for BENCH_PROFILE)
#     -o  keep the raw results (results.jsonl, logs) in DIR
# BENCH_PROFILE: cargo profile of the iac build (default release; `debug` for a dev build).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
runs=3; delay=40; modes="plain ready"; stacks="stacks/bookstore-vm.yaml stacks/bookstore-asg.yaml"; build=1; out=""
while getopts "n:d:m:s:Bo:" o; do
  case $o in
    n) runs=$OPTARG ;; d) delay=$OPTARG ;; m) modes=$OPTARG ;; s) stacks=$OPTARG ;; B) build=0 ;; o) out=$OPTARG ;;
    *) exit 2 ;;
  esac
done
py="$root/.venv/bin/python"
[ -x "$root/.venv/bin/moto_server" ] || { echo "no emulator in .venv: run scripts/emulator.sh install" >&2; exit 2; }

profile="${BENCH_PROFILE:-release}"
if [ "$profile" = debug ]; then cargo_profile=dev; else cargo_profile=$profile; fi
if [ "$build" = 1 ]; then cargo build --quiet --profile "$cargo_profile" --bin iac; fi
iac="$(bash "$root/scripts/target-dir.sh")/$profile/iac"
[ -x "$iac" ] || { echo "no iac binary at $iac" >&2; exit 2; }

tmp="$(mktemp -d)"
[ -n "$out" ] || out="$tmp/out"
mkdir -p "$out"
moto_pid=""; proxy_pid=""
cleanup() {
  [ -z "$proxy_pid" ] || kill "$proxy_pid" 2>/dev/null || true
  [ -z "$moto_pid" ] || kill "$moto_pid" 2>/dev/null || true
  rm -rf "$tmp/runs"
}
trap cleanup EXIT

free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 1 100); do
    if "$py" -c "import urllib.request; urllib.request.urlopen('$1', timeout=1)" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing answers at $1" >&2; return 1
}

moto_port="$(free_port)"
MOTO_IAM_LOAD_MANAGED_POLICIES=true "$root/.venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$out/moto.log" 2>&1 &
moto_pid=$!
wait_http "http://127.0.0.1:$moto_port/moto-api/data.json"
AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 \
  "$py" scripts/seed_emulator.py "http://127.0.0.1:$moto_port" >/dev/null
proxy_port="$(free_port)"
"$py" bench/aws_delay_proxy.py "$proxy_port" "$moto_port" --delay-ms "$delay" >"$out/proxy.log" 2>&1 &
proxy_pid=$!
proxy="http://127.0.0.1:$proxy_port"
wait_http "$proxy/__bench/counts"

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true CI=true
control() { "$py" -c "import urllib.request as u; print(u.urlopen(u.Request('$proxy/__bench/$1', method='$2')).read().decode())"; }
now_ns() { date +%s%N; }

mkdir -p "$tmp/runs"
results="$out/results.jsonl"
: >"$results"

# One side's `up` of STACK_FILE under NAME: timed, its calls counted; then (untimed) its down.
# record TIER MODE TOOL RUN KIND SECONDS_NS: appends the proxy's counts as one JSON line.
record() {
  local counts; counts="$(control counts GET)"
  "$py" - "$@" "$counts" >>"$results" <<'PY'
import json, sys
tier, mode, tool, run, kind, ns, counts = sys.argv[1:]
print(json.dumps({"stack": tier, "mode": mode, "tool": tool, "run": int(run), "kind": kind,
                  "secs": int(ns) / 1e9, "calls": json.loads(counts)["calls"]}))
PY
}

run_iac() { # STACK_FILE TIER MODE RUN NAME NOOP
  local file="$tmp/runs/$5.yaml" t0 t1
  sed -E "s/^name: .*/name: $5/" "$1" >"$file"
  control reset POST >/dev/null
  t0=$(now_ns)
  "$iac" --endpoint-url "$proxy" up "$file" --yes --no-wait >"$out/$5.up.log" 2>&1 || { tail -20 "$out/$5.up.log" >&2; return 1; }
  t1=$(now_ns)
  record "$2" "$3" iac "$4" up $((t1 - t0))
  if [ "$6" = 1 ]; then
    control reset POST >/dev/null
    t0=$(now_ns)
    "$iac" --endpoint-url "$proxy" up "$file" --yes --no-wait >"$out/$5.noop.log" 2>&1 || { tail -20 "$out/$5.noop.log" >&2; return 1; }
    t1=$(now_ns)
    record "$2" "$3" iac "$4" noop $((t1 - t0))
  fi
  "$iac" --endpoint-url "$proxy" down "$file" --yes --delete-data --skip-final-snapshot >"$out/$5.down.log" 2>&1 \
    || { tail -20 "$out/$5.down.log" >&2; return 1; }
}

run_script() { # STACK_FILE TIER MODE RUN NAME USER_DATA
  local t0 t1
  control reset POST >/dev/null
  t0=$(now_ns)
  "$py" bench/baseline_boto3.py up "$1" --name "$5" --user-data "$6" --endpoint-url "$proxy" >"$out/$5.up.log" 2>&1 \
    || { tail -20 "$out/$5.up.log" >&2; return 1; }
  t1=$(now_ns)
  record "$2" "$3" script "$4" up $((t1 - t0))
  # The script's fixed cost (interpreter, boto3 import, clients), no AWS call: for reading the
  # plain cells, where it is a large part of the script's time.
  t0=$(now_ns)
  "$py" bench/baseline_boto3.py startup "$1" --name "$5"
  t1=$(now_ns)
  control reset POST >/dev/null
  record "$2" "$3" script "$4" startup $((t1 - t0))
  "$py" bench/baseline_boto3.py down "$1" --name "$5" --endpoint-url "$proxy" >"$out/$5.down.log" 2>&1 \
    || { tail -20 "$out/$5.down.log" >&2; return 1; }
}

tier_of() { sed -nE 's/^tier: *([a-z-]+).*/\1/p' "$1"; }

# Warm-up, not recorded: the emulator loads each service's backend on its first call (~1.4 s
# for EC2), and Python compiles the script once.
control mode/plain POST >/dev/null
for stack in $stacks; do
  tier="$(tier_of "$stack")"
  "$iac" render "$stack" >"$tmp/ud-$tier"
  run_iac "$stack" "$tier" warm 0 "w-$tier-iac" 0
  run_script "$stack" "$tier" warm 0 "w-$tier-py" "$tmp/ud-$tier"
done
: >"$results"

echo "iac: $iac ($profile); delay ${delay} ms per call; $runs runs per cell; raw results in $out" >&2
for stack in $stacks; do
  tier="$(tier_of "$stack")"
  for mode in $modes; do
    control "mode/$mode" POST >/dev/null
    for i in $(seq 1 "$runs"); do
      noop=0; [ "$i" = 1 ] && noop=1
      if [ $((i % 2)) = 1 ]; then
        run_iac "$stack" "$tier" "$mode" "$i" "b-$tier-$mode-$i-iac" "$noop"
        run_script "$stack" "$tier" "$mode" "$i" "b-$tier-$mode-$i-py" "$tmp/ud-$tier"
      else
        run_script "$stack" "$tier" "$mode" "$i" "b-$tier-$mode-$i-py" "$tmp/ud-$tier"
        run_iac "$stack" "$tier" "$mode" "$i" "b-$tier-$mode-$i-iac" "$noop"
      fi
      echo "  $tier $mode run $i done" >&2
    done
  done
done

"$py" - "$results" <<'PY'
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
READ = ("Describe", "List", "Get")


def total(r):
    return sum(r["calls"].values())


def fmt_s(x):
    return "%.2f s" % x if x < 10 else "%.1f s" % x


print("| stack | mode | iac | script | iac / script | AWS calls iac / script |")
print("|---|---|---|---|---|---|")
cells = []
for r in rows:
    if (r["stack"], r["mode"]) not in cells:
        cells.append((r["stack"], r["mode"]))
for stack, mode in cells:
    pick = lambda tool: [r for r in rows if (r["stack"], r["mode"], r["tool"], r["kind"]) == (stack, mode, tool, "up")]
    iac, script = pick("iac"), pick("script")
    ti, ts = statistics.median(r["secs"] for r in iac), statistics.median(r["secs"] for r in script)
    ci, cs = statistics.median(total(r) for r in iac), statistics.median(total(r) for r in script)
    print("| %s | %s | %s | %s | %.2f | %g / %g |" % (stack, mode, fmt_s(ti), fmt_s(ts), ti / ts, ci, cs))

print()
print("Every run (seconds, in run order), and the script's start-up alone (interpreter, imports, clients):")
print()
print("| stack | mode | iac runs | script runs | script start-up, median |")
print("|---|---|---|---|---|")
for stack, mode in cells:
    secs = lambda tool, kind: [r["secs"] for r in rows if (r["stack"], r["mode"], r["tool"], r["kind"]) == (stack, mode, tool, kind)]
    start = secs("script", "startup")
    print("| %s | %s | %s | %s | %s |" % (stack, mode, ", ".join("%.2f" % x for x in secs("iac", "up")),
                                        ", ".join("%.2f" % x for x in secs("script", "up")),
                                        fmt_s(statistics.median(start)) if start else "-"))
print()
print("No-op `up` (a second run, nothing to change): calls by service (reads / other)")
print()
print("| stack | mode | time | calls | reads by service | other (mutating) calls |")
print("|---|---|---|---|---|---|")
for r in rows:
    if r["kind"] != "noop":
        continue
    reads, other = {}, {}
    for name, n in sorted(r["calls"].items()):
        service, op = name.split(":", 1)
        if op.startswith(READ):
            reads[service] = reads.get(service, 0) + n
        else:
            other[name] = n
    print("| %s | %s | %s | %d | %s | %s |" % (
        r["stack"], r["mode"], fmt_s(r["secs"]), total(r),
        ", ".join("%s %d" % kv for kv in sorted(reads.items())),
        ", ".join("%s %d" % kv for kv in sorted(other.items())) or "none"))
PY
