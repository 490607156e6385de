#!/usr/bin/env bash
# mypy on the four packages (settings in pyproject.toml [tool.mypy]; the generated
# splitpoint/v1/*_pb2* stubs are excluded there). CI (.ci/run) fails on any error.
set -euo pipefail
source "$(dirname "$0")/_venv.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m mypy splitpoint edge_node cloud_server scheduler "$@"
