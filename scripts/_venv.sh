# Sourced by scripts/demo.sh and scripts/test.sh: make sure a virtual environment
# with splitpoint and everything it needs exists, (re)installing when pyproject.toml changed.
#   SPLITPOINT_VENV  where the environment lives (default: .venv in the repository)
#   PYTHON           interpreter to build it from (default: python3.11, else python3)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SPLITPOINT_VENV:-$ROOT/.venv}"
if [ -z "${PYTHON:-}" ]; then
  if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "splitpoint needs Python >= 3.11; $PYTHON is $("$PYTHON" --version 2>&1). Set PYTHON=/path/to/python3.11" >&2
  exit 2
fi
STAMP="$VENV/.splitpoint-installed"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtual environment $VENV ..." >&2
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ]; then
  echo "installing splitpoint[edge,cloud,video,dev,bench] into $VENV (a few minutes the first time: TensorFlow is large) ..." >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[edge,cloud,video,dev,bench]"
  touch "$STAMP"
fi
