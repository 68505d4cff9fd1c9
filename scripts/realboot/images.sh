#!/usr/bin/env bash
# Builds the real-boot images from Debian's archive only (no Docker Hub, no GitHub) and pushes
# the ones the boot scripts pull to the local registry, under the Docker Hub names the stacks
# use. An image is rebuilt only when the hash of its inputs (its directory under images/, its
# base's, the machine's extra CA certificates) changed; the engine's data root and the registry storage are in the cache (env.sh).
#   local/base:bookworm   mmdebstrap minbase, then docker import
#   local/vm:bookworm     systemd, metadata stub, AWS CLI, user-data unit (the "VM")
#   mysql:8.0             MariaDB with the mysql image's MYSQL_* / *_FILE variables
#   bookstore:test        the BookStore stand-in, also as bookstore:test2 (an "update" to it);
#                         with BOOKSTORE_FAIL_ON_INSTANCE=<its instance id> it exits at start
#   bookstore:crash       a release that exits at start (the tests' failed update)
# Needs the engine and registry of daemons.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/realboot/env.sh
. "$here/env.sh"

# The machine's own extra CA certificates (an egress proxy that re-signs TLS, as on these
# machines) go into the VM image, so pip inside a VM trusts what pip on the host trusts.
cas=(/usr/local/share/ca-certificates/*.crt)
[ -e "${cas[0]}" ] || cas=()
# Each image's inputs: its own directory, its parent's inputs, and how it is built.
h16() { sha256sum | cut -c1-16; }
base_in=$(echo "$IAC_RB_SUITE minbase ca-certificates" | h16)
dir_in() { (cd "$here/images/$1" && find . -type f | LC_ALL=C sort | xargs sha256sum; echo "$base_in"; cat "${cas[@]}" /dev/null) | h16; }
label() { dk image inspect -f '{{ index .Config.Labels "iac.inputs" }}' "$1" 2>/dev/null || true; }
fresh() { [ "$(label "$1")" = "$2" ]; }

if ! fresh local/base:$IAC_RB_SUITE "$base_in"; then
  rb_log "building local/base:$IAC_RB_SUITE with mmdebstrap (inputs $base_in)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mmdebstrap --quiet --variant=minbase --include=ca-certificates "$IAC_RB_SUITE" "$tmp/base.tar"
  dk import --change "LABEL iac.inputs=$base_in" --change 'CMD ["/bin/bash"]' "$tmp/base.tar" "local/base:$IAC_RB_SUITE" >/dev/null
  rm -f "$tmp/base.tar"
fi
build() {
  local tag=$1 dir=$2 ctx inputs
  inputs=$(dir_in "$dir")
  if fresh "$tag" "$inputs"; then return 0; fi
  rb_log "building $tag"
  ctx=$(mktemp -d)
  cp -r "$here/images/$dir/." "$ctx/"
  mkdir -p "$ctx/ca" && touch "$ctx/ca/.keep"
  [ ${#cas[@]} -eq 0 ] || cp "${cas[@]}" "$ctx/ca/"
  dk build -q --force-rm --label "iac.inputs=$inputs" -t "$tag" "$ctx" >/dev/null || { rm -rf "$ctx"; return 1; }
  rm -rf "$ctx"
}
build local/vm:$IAC_RB_SUITE vm
build local/mysql:8.0 db
build local/bookstore:test app
build local/bookstore:crash app-crash

# The mirror answers Docker Hub names: mysql:8.0 is library/mysql:8.0 there.
publish() {
  local src=$1 name=$2 remote="$IAC_RB_REGISTRY/library/$2" inputs
  inputs=$(label "$1")
  if curl -fsS -o /dev/null -m 5 -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$IAC_RB_REGISTRY/v2/library/${name%%:*}/manifests/${name#*:}" 2>/dev/null &&
    [ "$(cat "$IAC_RB_CACHE/pushed-${name/:/_}" 2>/dev/null)" = "$inputs" ]; then
    return 0
  fi
  rb_log "pushing $name to the local registry"
  dk tag "$src" "$remote"
  dk push -q "$remote" >/dev/null
  echo "$inputs" >"$IAC_RB_CACHE/pushed-${name/:/_}"
}
publish local/mysql:8.0 mysql:8.0
publish local/bookstore:test bookstore:test
publish local/bookstore:test bookstore:test2
publish local/bookstore:crash bookstore:crash
rb_log "images ready"
