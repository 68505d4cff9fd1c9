# shellcheck shell=bash disable=SC2034
# Sourced by the real-boot scripts: where the private Docker engine, the registry and the image
# cache live. Nothing here touches a system-wide Docker: the engine has its own socket, and its
# data root sits in the cache so that built images survive between runs.
IAC_RB_CACHE="${IAC_REALBOOT_CACHE:-$HOME/.cache/iac-realboot}"
IAC_RB_RUN="${IAC_REALBOOT_RUN:-/run/iac-realboot}"
export DOCKER_HOST="unix://$IAC_RB_RUN/docker.sock"
# The engine's own client (20.10, Debian's docker.io); another client on PATH may be newer.
DOCKER=/usr/bin/docker
# docker0 gets an address no VM's own Docker picks (they take 172.17.0.0/16 like any fresh
# install); the registry listens there and nowhere else. images/vm/daemon.json names it too.
IAC_RB_BRIDGE_IP=10.213.0.1
IAC_RB_REGISTRY="$IAC_RB_BRIDGE_IP:5000"
IAC_RB_SUITE=bookworm
dk() { "$DOCKER" "$@"; }
rb_log() { printf '%s realboot: %s\n' "$(date -u +%T)" "$*" >&2; }
# shellcheck source=scripts/realboot/lock.sh
. "$(dirname "${BASH_SOURCE[0]}")/lock.sh"
