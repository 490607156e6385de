#!/usr/bin/env bash
# Set up (first run) and run the demo: the bundled digits CNN split between a local
# server and agent on loopback. Extra arguments go to `splitpoint demo`.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$ROOT"
exec "$VENV/bin/splitpoint" demo "$@"
