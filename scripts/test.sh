#!/usr/bin/env bash
# Set up (first run) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$ROOT"
export TF_CPP_MIN_LOG_LEVEL=2
exec "$VENV/bin/python" -m pytest "$@"
