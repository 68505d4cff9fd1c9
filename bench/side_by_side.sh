#!/usr/bin/env bash
# bench/side_by_side.sh [-m ready|plain] [-n ROUNDS] [-s "STACK_FILE..."] [-c OPERATION] [-a] [-f N] IAC_BIN...
# Two (or more) builds of iac side by side in one run: each round, each binary's first `up
# --no-wait` of each stack (a new stack each time), through bench/aws_delay_proxy.py (40 ms per
# call; in ready mode an instance looks `pending` for its first 3 s), then its `down`. Prints
# per up: the calls of one operation (-c, default ec2:DescribeInstances), all calls and the wall
# time. Defaults: ready, 3 rounds, the lb-vms and swarm examples. -a measures a second `up` of
# the same file instead (nothing to change: a no-op). -f N first fills the account with N other
# stacks' DB subnet groups, target groups and load balancers (tagged for `other<i>`), as a busy
# account has. Needs the emulator venv (scripts/emulator.sh install).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode=ready; rounds=3; stacks="stacks/bookstore-lb-vms.yaml stacks/bookstore-swarm.yaml"; op=ec2:DescribeInstances; again=""; foreign=0
while getopts "m:n:s:c:af:" o; do
  case $o in
    m) mode=$OPTARG ;; n) rounds=$OPTARG ;; s) stacks=$OPTARG ;; c) op=$OPTARG ;; a) again=1 ;; f) foreign=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "usage: bench/side_by_side.sh [-m ready|plain] [-n ROUNDS] [-s \"STACK_FILE...\"] [-c OPERATION] [-a] [-f N] IAC_BIN..." >&2; exit 2; }
py="$root/.venv/bin/python"
cd "$root"
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 100); do "$py" -c "import urllib.request; urllib.request.urlopen('$1', timeout=1)" 2>/dev/null && return 0; sleep 0.1; done; return 1; }
tmp=$(mktemp -d)
mp=$(free_port)
MOTO_IAM_LOAD_MANAGED_POLICIES=true "$root/.venv/bin/moto_server" -H 127.0.0.1 -p "$mp" >"$tmp/moto.log" 2>&1 & moto=$!
proxy=""
trap 'kill $moto $proxy 2>/dev/null || true; rm -rf "$tmp"' EXIT
wait_http "http://127.0.0.1:$mp/moto-api/data.json"
AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 "$py" scripts/seed_emulator.py "http://127.0.0.1:$mp" >/dev/null
AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 "$py" - "http://127.0.0.1:$mp" "$foreign" <<'PY'
import sys, boto3
url, n = sys.argv[1], int(sys.argv[2])
if n:
    ec2, rds, elb = (boto3.client(s, endpoint_url=url) for s in ("ec2", "rds", "elbv2"))
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    zones = {}
    for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"]:
        zones.setdefault(s["AvailabilityZone"], s["SubnetId"])
    subnets = list(zones.values())[:2]
    for i in range(n):
        tags = [{"Key": "iac:stack", "Value": f"other{i}"}]
        rds.create_db_subnet_group(DBSubnetGroupName=f"other{i}-db", DBSubnetGroupDescription="other", SubnetIds=subnets, Tags=tags)
        elb.create_target_group(Name=f"other{i}-tg", Protocol="HTTP", Port=80, VpcId=vpc, Tags=tags)
        elb.create_load_balancer(Name=f"other{i}-alb", Subnets=subnets, Tags=tags)
PY
pp=$(free_port)
"$py" bench/aws_delay_proxy.py "$pp" "$mp" --delay-ms 40 --mode "$mode" >"$tmp/proxy.log" 2>&1 & proxy=$!
px="http://127.0.0.1:$pp"; wait_http "$px/__bench/counts"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true CI=true
control() { "$py" -c "import urllib.request as u; print(u.urlopen(u.Request('$px/__bench/$1', method='$2')).read().decode())"; }
n=0
for round in $(seq 1 "$rounds"); do
for bin in "$@"; do
  for st in $stacks; do
    n=$((n+1)); name="m$n"
    sed -E "s/^name: .*/name: $name/" "$st" > "$tmp/$name.yaml"
    if [ -n "$again" ]; then
      "$bin" --endpoint-url "$px" up "$tmp/$name.yaml" --yes --no-wait >"$tmp/$name.first.log" 2>&1 || { tail "$tmp/$name.first.log"; exit 1; }
    fi
    control reset POST >/dev/null
    t0=$(date +%s%N)
    "$bin" --endpoint-url "$px" up "$tmp/$name.yaml" --yes --no-wait >"$tmp/$name.log" 2>&1 || { tail "$tmp/$name.log"; exit 1; }
    t1=$(date +%s%N)
    c=$(control counts GET | "$py" -c 'import json,sys; d=json.load(sys.stdin)["calls"]; print(d.get(sys.argv[1],0), sum(d.values()))' "$op")
    echo "round $round $(basename "$bin") $(basename "$st") $op/total=$c secs=$(( (t1-t0)/1000000 ))ms"
    "$bin" --endpoint-url "$px" down "$tmp/$name.yaml" --yes --delete-data --skip-final-snapshot >/dev/null 2>&1 || true
  done
done
done
