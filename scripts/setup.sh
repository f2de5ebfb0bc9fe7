#!/usr/bin/env bash
# Create .venv and install embedeverything with what its tests and examples need.
# torch comes first and pinned: these machines carry torch 2.14.1 / torchvision 0.29.1 on local disk;
# a bare `pip install -e .` would otherwise pull a newer CUDA torch of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.14.1 torchvision==0.29.1
python -m pip install -q -e ".[dask,eval,dev,search]"
if [ "${1:-}" = "--tests" ]; then
  python -m pip install -q -e tests/ee-testenc
  for ex in examples/ee-*/; do
    [ -f "$ex/pyproject.toml" ] && python -m pip install -q -e "$ex"
  done
  bash scripts/install_chromium.sh
fi
