#!/usr/bin/env bash
# Install on a fresh machine, then run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ee demo "$@"
