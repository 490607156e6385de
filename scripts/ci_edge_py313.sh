#!/usr/bin/env bash
# CI, after the main suite: the Pi side as a Raspberry Pi OS Trixie user installs it. Builds the
# sdist and, from it, the wheel; installs the wheel with its [edge] extra into a fresh Python 3.13
# environment (no TensorFlow); runs the edge_side tests from this checkout's tests/ against that
# installation, with the checkout kept off sys.path. The server those tests talk to runs in the
# main environment (it has TensorFlow) on a bundle partitioned there.
#   PYTHON313        the 3.13 interpreter (default: python3.13 on PATH, else ~/.pyenv/versions/3.13.*)
#   SPLITPOINT_VENV  the main environment, made by scripts/test.sh (default: .venv in the repository)
#   BUILD_PYTHON     the interpreter that runs `python -m build` (default: the main environment's)
#   KEEP_WORK=1      keep the temporary directory (wheel, environment, bundle) for a look afterwards
# Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MAIN_PY="${SPLITPOINT_VENV:-$ROOT/.venv}/bin/python"
say() { echo "ci_edge_py313: $*" >&2; }

if [ ! -x "$MAIN_PY" ]; then
  say "no main environment at $MAIN_PY: run scripts/test.sh first (it creates it)"
  exit 2
fi
BUILD_PY="${BUILD_PYTHON:-$MAIN_PY}"
if ! "$BUILD_PY" -c 'import build' 2>/dev/null; then
  say "$BUILD_PY has no 'build' module (dev extra): rerun scripts/test.sh to refresh the environment"
  exit 2
fi

# the first candidate that runs and says 3.13 (a pyenv shim on PATH may exist and still fail)
is313() { [ -n "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; }
PY313=""
for candidate in "${PYTHON313:-}" "$(command -v python3.13 || true)" \
    $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python 2>/dev/null | sort -rV); do
  if is313 "$candidate"; then PY313="$candidate"; break; fi
done
if [ -z "$PY313" ]; then
  if [ "${CI:-}" = "true" ]; then
    say "no Python 3.13 found (looked at PYTHON313=${PYTHON313:-}, python3.13 on PATH, ~/.pyenv/versions/3.13*): set PYTHON313=/path/to/python3.13"
    exit 2
  fi
  say "no Python 3.13 found; skipping the Python 3.13 edge run (set PYTHON313 to run it)"
  exit 0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/splitpoint-py313.XXXXXX")"
if [ "${KEEP_WORK:-}" = "1" ]; then say "keeping $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi

say "building the sdist and, from it, the wheel"
# the sdist step leaves splitpoint.egg-info in the checkout: remove it unless it was there before
[ -e "$ROOT/splitpoint.egg-info" ] && had_egg_info=1 || had_egg_info=0
"$BUILD_PY" -m build --outdir "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log" >&2; exit 1; }
[ "$had_egg_info" = 1 ] || rm -rf "$ROOT/splitpoint.egg-info"
WHEEL="$(ls "$WORK"/dist/splitpoint-*-py3-none-any.whl)"

say "installing $(basename "$WHEEL")[edge] into a fresh $("$PY313" --version) environment"
"$PY313" -m venv "$WORK/venv"
EPY="$WORK/venv/bin/python"
# not from this machine's local wheel folder: a user's pip has only the package index
env -u PIP_FIND_LINKS "$EPY" -m pip install --quiet "$WHEEL[edge]" "pytest>=8" "hypothesis>=6.100"

cd "$WORK"  # `python -m` puts the working directory first on sys.path: not the checkout
if "$EPY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("tensorflow") is None)'; then
  say "TensorFlow is importable in the [edge] environment: the edge extra must not pull it in"
  exit 1
fi
say "edge_node imported from $(env -u PYTHONPATH "$EPY" -c 'import edge_node; print(edge_node.__file__)')"

say "partitioning the digits CNN in the main environment for the server"
PYTHONPATH="$ROOT" TF_CPP_MIN_LOG_LEVEL=2 "$MAIN_PY" -m splitpoint partition digits-cnn -o "$WORK/bundle" \
  >"$WORK/partition.log" 2>&1 || { cat "$WORK/partition.log" >&2; exit 1; }

say "running the edge_side tests on Python 3.13 against the installed wheel"
env -u PYTHONPATH SPLITPOINT_EDGE_WHEEL_RUN=1 SPLITPOINT_TEST_BUNDLE="$WORK/bundle" SPLITPOINT_CLOUD_PYTHON="$MAIN_PY" \
  "$EPY" -m pytest -c "$ROOT/pyproject.toml" --rootdir "$ROOT" --import-mode=importlib -p no:cacheprovider \
  -q -m edge_side "$@" "$ROOT/tests"
