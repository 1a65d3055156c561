#!/usr/bin/env bash
# Builds the warden and runs the tray end-to-end test (tests/tray/e2e.sh) in a throwaway
# desktop: Xvfb, a private session bus, xfce4-panel's tray and dunst (tray-e2e-env.sh).
# Screenshots go to target/tray-e2e/ (kept, to look at).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
# backend-warden, backend-warden-tray (which it becomes) and the tests' fake backend
cargo build -q --bins --example fake-backend
export APP=$ROOT/target/debug/backend-warden FAKE=$ROOT/target/debug/examples/fake-backend
export SHOTS=$ROOT/target/tray-e2e
rm -rf "$SHOTS"; mkdir -p "$SHOTS"
TRAY_E2E_HOST=${TRAY_E2E_HOST:-xfce} TRAY_E2E_TIMEOUT=${TRAY_E2E_TIMEOUT:-240} \
  bash tests/tray/tray-e2e-env.sh run bash tests/tray/e2e.sh
