#!/usr/bin/env bash
# Prints cargo's target directory for this checkout (CARGO_TARGET_DIR, a config's
# build.target-dir, or ./target), so scripts find the binaries cargo just built.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
