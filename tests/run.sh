#!/usr/bin/env bash
# The test command: installs what the tests need (tests/setup.sh), then runs every test:
# unit and integration tests (real processes, real uvicorn) and the tray end-to-end test
# (a real tray under Xvfb). Extra arguments go to `cargo test`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash tests/setup.sh all
export BACKEND_WARDEN_TEST_PYTHON=$ROOT/target/test-venv/bin/python
cargo test --all-targets "$@"
cargo test --doc
bash tests/tray/run-e2e.sh
