#!/usr/bin/env bash
# Install everything on a fresh machine, then run the linters and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
. .venv/bin/activate
ruff check .
# code written twice in the package or the bundled plugins
pylint --disable=all --enable=duplicate-code --min-similarity-lines=6 --score=n embedeverything plugins
python -m pytest -q "$@"
