#!/usr/bin/env bash
# Install everything on a fresh machine, then run the linters and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
. .venv/bin/activate
ruff check .
python -m pytest -q "$@"
