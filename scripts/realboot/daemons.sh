#!/usr/bin/env bash
# The private Docker engine and the local registry for the real-boot tests and demo.
#   daemons.sh start   start dockerd (own socket, data root in the cache) and the registry on docker0
#   daemons.sh stop    remove every container, stop both daemons, delete docker0 and docker's
#                      nftables/iptables rules (docker sets FORWARD to drop, which breaks the
#                      network-namespace tests that run after)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/realboot/env.sh
. "$here/env.sh"

need() {
  local missing=()
  for t in dockerd /usr/bin/docker docker-registry mmdebstrap iptables ip; do
    command -v "$t" >/dev/null 2>&1 || [ -x "$t" ] || [ -x "/usr/sbin/$t" ] || missing+=("$t")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "real boot: missing ${missing[*]} (apt-get install docker.io docker-registry mmdebstrap iproute2; or run .ci/run)" >&2
    exit 1
  fi
}

start() {
  need
  mkdir -p "$IAC_RB_RUN" "$IAC_RB_CACHE/docker" "$IAC_RB_CACHE/registry"
  if ! dk info >/dev/null 2>&1; then
    rb_log "starting dockerd ($DOCKER_HOST, data root $IAC_RB_CACHE/docker)"
    # setsid: the engine outlives the shell that started it (stop ends it by its pid file).
    setsid dockerd --host "$DOCKER_HOST" --data-root "$IAC_RB_CACHE/docker" --exec-root "$IAC_RB_RUN/exec" \
      --pidfile "$IAC_RB_RUN/dockerd.pid" --storage-driver overlay2 \
      --exec-opt native.cgroupdriver=cgroupfs --bip "$IAC_RB_BRIDGE_IP/24" \
      --insecure-registry "$IAC_RB_REGISTRY" --ip 127.0.0.1 \
      >"$IAC_RB_RUN/dockerd.log" 2>&1 9>&- &
    # `info` answers only once the engine's containerd does too.
    for _ in $(seq 1 150); do dk info >/dev/null 2>&1 && break; sleep 0.2; done
    dk info >/dev/null 2>&1 || { tail -20 "$IAC_RB_RUN/dockerd.log" >&2; echo "dockerd did not start; see $IAC_RB_RUN/dockerd.log" >&2; exit 1; }
  fi
  if ! curl -fsS -m 2 "http://$IAC_RB_REGISTRY/v2/" >/dev/null 2>&1; then
    rb_log "starting the registry on $IAC_RB_REGISTRY (storage $IAC_RB_CACHE/registry)"
    cat >"$IAC_RB_RUN/registry.yml" <<CFG
version: 0.1
log: { level: warn }
storage:
  filesystem: { rootdirectory: $IAC_RB_CACHE/registry }
  delete: { enabled: true }
http:
  addr: $IAC_RB_REGISTRY
CFG
    # 9>&-: the daemons never hold the run lock (scripts/realboot/lock.sh) of whoever started them.
    docker-registry serve "$IAC_RB_RUN/registry.yml" >"$IAC_RB_RUN/registry.log" 2>&1 9>&- &
    echo $! >"$IAC_RB_RUN/registry.pid"
    for _ in $(seq 1 50); do curl -fsS -m 1 "http://$IAC_RB_REGISTRY/v2/" >/dev/null 2>&1 && break; sleep 0.2; done
    curl -fsS -m 2 "http://$IAC_RB_REGISTRY/v2/" >/dev/null || { echo "the registry did not start; see $IAC_RB_RUN/registry.log" >&2; exit 1; }
  fi
}

stop_pid() {
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# Only docker's own rules and chains go; anything else in the tables is left as it was.
drop_docker_rules() {
  local ipt t rule chain
  for ipt in iptables ip6tables; do
    command -v $ipt >/dev/null 2>&1 || continue
    for t in filter nat; do
      # `|| true`: a table without docker's rules (ip6tables, when docker left IPv6 alone) is
      # not an error; under pipefail grep's "no match" would end the script with status 1.
      { $ipt -t $t -S 2>/dev/null || true; } | { grep -E '^-A .*(DOCKER|docker0)' || true; } | sed 's/^-A/-D/' | while read -r rule; do
        eval "$ipt -t $t $rule" 2>/dev/null || true
      done
      for chain in $($ipt -t $t -S 2>/dev/null | sed -n 's/^-N \(DOCKER[A-Z0-9_-]*\)$/\1/p'); do
        $ipt -t $t -F "$chain" 2>/dev/null || true; $ipt -t $t -X "$chain" 2>/dev/null || true
      done
    done
    $ipt -P FORWARD ACCEPT 2>/dev/null || true
    # With iptables-nft the tables stay as empty nftables tables: delete them when nothing
    # but the default policies is left in them.
    if command -v nft >/dev/null 2>&1; then
      local fam=ip; [ $ipt = iptables ] || fam=ip6
      for t in filter nat; do
        if ! $ipt -t $t -S 2>/dev/null | grep -qv '^-P .* ACCEPT$'; then nft delete table $fam $t 2>/dev/null || true; fi
      done
    fi
  done
}

stop() {
  if dk version >/dev/null 2>&1; then
    ids=$(dk ps -aq)
    # shellcheck disable=SC2086 # one id per word
    [ -z "$ids" ] || dk rm -f -v $ids >/dev/null 2>&1 || true
    dk network prune -f >/dev/null 2>&1 || true
  fi
  stop_pid "$IAC_RB_RUN/registry.pid"
  stop_pid "$IAC_RB_RUN/dockerd.pid"
  # The containerd dockerd started stops with it, but not always before a new dockerd starts.
  stop_pid "$IAC_RB_RUN/exec/containerd/containerd.pid"
  # The managed containerd exits with dockerd; docker0 and docker's firewall rules stay behind.
  ip link delete docker0 2>/dev/null || true
  drop_docker_rules
  rm -rf "$IAC_RB_RUN/exec"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
