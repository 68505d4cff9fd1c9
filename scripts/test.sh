#!/usr/bin/env bash
# The test command: formatting, lints, then every test (unit, emulator integration, rendered
# artifacts checked by shellcheck / nginx -t / docker-compose config).
# Needs: the emulator venv (created here if missing), shellcheck, nginx, docker-compose, openssl,
# and for the real boots Debian's docker.io, docker-registry and mmdebstrap (.ci/run installs them).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

missing=()
for tool in shellcheck nginx haproxy docker-compose openssl jq dash node npm; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing tools: ${missing[*]} (on Debian/Ubuntu: apt-get install shellcheck nginx-light haproxy docker-compose openssl jq dash nodejs npm; or run .ci/run)" >&2
  exit 1
fi
scripts/emulator.sh install
export IAC_MOTO_SERVER="$root/.venv/bin/moto_server"

cargo fmt --all -- --check
# The provider modules are declared by build.rs's generated code, which cargo fmt does not follow.
rustfmt --edition 2021 --check src/aws/provider/*.rs
cargo clippy --workspace --all-targets --quiet -- -D warnings
# Real boots (tests/real_boot.rs): a private Docker engine, the local registry and the images
# (cached in ~/.cache/iac-realboot). Missing tools fail here, loudly; everything is stopped and
# docker's bridge and firewall rules removed when this script ends, on failure too.
# One real-boot engine per machine (fixed socket and bridge address): another checkout's run
# waits here instead of sharing or stopping it.
# shellcheck source=scripts/realboot/lock.sh
. scripts/realboot/lock.sh
rb_lock
bash scripts/realboot/daemons.sh start
trap 'bash scripts/realboot/daemons.sh stop || { echo "error: stopping the real-boot engine failed (scripts/realboot/daemons.sh stop)" >&2; exit 1; }' EXIT
bash scripts/realboot/images.sh

cargo test --workspace --all-targets --no-fail-fast
