#!/usr/bin/env bash
# The main job, on a fresh machine: build iac, start the local AWS emulator, then
# validate / plan / up / status / down stacks/bookstore-vm.yaml against it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# --real: the same stack really booted in a local VM container (scripts/realboot/demo.sh).
if [ "${1:-}" = --real ]; then exec bash scripts/realboot/demo.sh; fi
stack="${1:-stacks/bookstore-vm.yaml}"

cargo build --quiet --bin iac
iac="$(bash "$root/scripts/target-dir.sh")/debug/iac"

url="$(scripts/emulator.sh start)"
trap 'scripts/emulator.sh stop' EXIT
scripts/emulator.sh seed "$url"

# Dummy credentials for the emulator only; real AWS uses your normal credential chain.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
export AWS_ENDPOINT_URL="$url"

run() { echo; echo "\$ iac $*"; "$iac" "$@"; }
run validate "$stack"
run plan "$stack"
run up "$stack" --yes
run status "$stack"
run up "$stack" --yes
# `down` keeps the data volume and says so with exit code 4 (README: exit codes): the demo's
# expected end, not a failure.
rc=0; run down "$stack" --yes || rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 4 ] || exit "$rc"
