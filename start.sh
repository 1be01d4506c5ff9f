#!/bin/sh
# Ki2API, one command (Linux, macOS): make the venv, install the locked dependencies, start.
#   ./start.sh               serve with your Kiro login, or the demo when none is found
#   ./start.sh portable      any other ki2api command, from the same venv (`./start.sh --help`)
# Settings: VENV (default .venv), PYTHON (default: the newest python3.x >= 3.11 on PATH), and
# everything in .env / the environment as for `ki2api serve`. Windows: start.bat / start.ps1.
set -eu
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  if [ -z "${PYTHON:-}" ]; then
    for candidate in python3.14 python3.13 python3.12 python3.11 python3; do
      if command -v "$candidate" >/dev/null 2>&1 &&
        "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        PYTHON="$candidate"
        break
      fi
    done
  fi
  if [ -z "${PYTHON:-}" ]; then
    echo "start.sh: Python 3.11 or newer is needed (macOS: brew install python@3.12;" \
      "Debian/Ubuntu: apt install python3 python3-venv), or set PYTHON=/path/to/python3" >&2
    exit 1
  fi
  "$PYTHON" -m venv "$VENV"
fi
# Install (again) when the lock or the project changed since the last install.
STAMP="$VENV/.start-installed"
if [ ! -f "$STAMP" ] || [ -n "$(find requirements.lock pyproject.toml -newer "$STAMP")" ]; then
  echo "start.sh: installing Ki2API and its locked dependencies into $VENV ..." >&2
  pip_install() {
    "$VENV/bin/python" -m pip --disable-pip-version-check install --quiet -c requirements.lock "$@"
  }
  pip_install setuptools wheel
  pip_install --no-build-isolation -e .
  touch "$STAMP"
fi
[ "$#" -gt 0 ] || set -- start
exec "$VENV/bin/ki2api" "$@"
