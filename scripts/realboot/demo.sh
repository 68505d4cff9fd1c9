#!/usr/bin/env bash
# The real-boot demo (`bash scripts/demo.sh --real`): the single-vm example stack, with the app
# image the local mirror serves and no domain, goes `up` on the emulator; the instance runner
# boots its VM container, which runs the real boot script; then a row is written and read back
# through the VM's nginx, and `down --delete-data` removes the VM and its data volume. Everything is stopped at the end.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
# shellcheck source=scripts/realboot/env.sh
. "$here/env.sh"
rb_lock

cargo build --quiet --bin iac
iac="$(bash "$root/scripts/target-dir.sh")/debug/iac"
work=$(mktemp -d)
runner_pid=
cleanup() {
  if [ -n "$runner_pid" ]; then kill "$runner_pid" 2>/dev/null || true; wait "$runner_pid" 2>/dev/null || true; fi
  scripts/emulator.sh stop
  bash "$here/daemons.sh" stop
  rm -rf "$work"
}
trap cleanup EXIT

url="$(scripts/emulator.sh start)"
scripts/emulator.sh seed "$url"
bash "$here/daemons.sh" start
bash "$here/images.sh"

stack="$work/bookstore-demo.yaml"
sed -e 's/^name: .*/name: bookstore-demo/' -e 's#ghcr.io/example/bookstore:1.0.0#bookstore:test#' \
  -e '/^domain:/,/^$/d' stacks/bookstore-vm.yaml >"$stack"

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
export AWS_ENDPOINT_URL="$url"
echo; echo "\$ iac up $stack --yes"
"$iac" up "$stack" --yes

"$root/.venv/bin/python" "$here/runner.py" --endpoint "$url" --stack bookstore-demo --state "$work/runner" &
runner_pid=$!
echo; echo "waiting for the VM to run its boot script (log: docker exec <vm> tail -f /var/log/cloud-init-output.log)"
report="$work/runner/instances.json"
for _ in $(seq 1 450); do
  rc=$(jq -r '[.instances[] | .user_data_rc] | first // empty' "$report" 2>/dev/null || true)
  [ -z "$rc" ] || [ "$rc" = null ] || break
  sleep 2
done
jq . "$report"
[ "$rc" = 0 ] || { echo "the boot script exited ${rc:-nothing}" >&2; exit 1; }
addr=$(jq -r '[.instances[] | .ports["80"]] | first' "$report")

echo; echo "\$ curl -X POST --data-binary 'Dune' http://$addr/book/catalog"
curl -fsS -X POST --data-binary 'Dune' "http://$addr/book/catalog"; echo
echo "\$ curl http://$addr/book/catalog"
curl -fsS "http://$addr/book/catalog"; echo

echo; echo "\$ iac down $stack --yes --delete-data   # the demo keeps nothing, not even the data volume"
"$iac" down "$stack" --yes --delete-data
for _ in $(seq 1 60); do
  [ -z "$(dk ps -aq --filter label=iac.localcloud.stack=bookstore-demo)" ] && break
  sleep 1
done
echo "VM containers left: $(dk ps -aq --filter label=iac.localcloud.stack=bookstore-demo | wc -l)"
