#!/usr/bin/env bash
# THE test command (README): installs what the tests need (tests/setup.sh), then runs every test:
# unit and integration tests (real process trees, real uvicorn), doc tests, and the tray
# end-to-end test (a real tray under Xvfb). Works from any directory; extra arguments go to
# `cargo test --all-targets`. Exits non-zero as soon as a step fails.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

bash tests/setup.sh all
# The integration tests start uvicorn with this interpreter (absolute: tests change directory).
export BACKEND_WARDEN_TEST_PYTHON=$ROOT/target/test-venv/bin/python
cargo test --all-targets "$@"
cargo test --doc   # --all-targets does not include doc tests
bash tests/tray/run-e2e.sh
