#!/usr/bin/env bash
# Sets up (or reuses) the project's virtual environment, then runs a command in it.
#
#   bash scripts/dev.sh test                 # ruff, mypy and the whole test suite
#   bash scripts/dev.sh ml-automations ...   # any command, inside the environment
#
# The environment lives outside the checkout, keyed by the dependency list, so a fresh clone
# (CI's included) reuses the ~1 GB of wheels instead of reinstalling them on every run.
set -euo pipefail
here="$PWD"  # commands run where the person stands: their paths are relative to it
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

python="${PYTHON:-python3}"
key="$( { "$python" --version; cat pyproject.toml; grep -- '-e "' scripts/dev.sh; } | sha256sum | cut -c1-16)"
venv="${ML_AUTOMATIONS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/prefect-ml-automations/venv-$key}"

# Runs a set-up step, showing its output only when it fails.
quietly() {
  local log
  log="$(mktemp)"
  if ! "$@" >"$log" 2>&1; then
    grep -v "is ignored: it is neither" "$log" >&2
    rm -f "$log"
    echo "Set-up step failed: $*" >&2
    exit 1
  fi
  rm -f "$log"
}

if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "Setting up $venv (first run takes a few minutes) ..." >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  quietly "$venv/bin/python" -m pip install --upgrade pip
  quietly "$venv/bin/python" -m pip install -e ".[dev,mlflow]"
  "$venv/bin/python" -c "import prefect_ml_automations, prefect, pytest" >/dev/null
  touch "$venv/.complete"
else
  # The environment may have been built from another checkout: point the package at this one.
  quietly "$venv/bin/python" -m pip install --no-deps -e .
fi
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
export ML_AUTOMATIONS_DEV_SH="$root/scripts/dev.sh"  # hints name the way you came in

if [ "${1:-}" = "test" ]; then
  shift
  python -c "import prefect, pandas, numpy; print(f'prefect {prefect.__version__}, pandas {pandas.__version__}, numpy {numpy.__version__}')"
  ruff check prefect_ml_automations tests benchmarks
  ruff format --check prefect_ml_automations tests benchmarks
  mypy
  exec python -m pytest "$@"
fi
cd "$here"
exec "$@"
