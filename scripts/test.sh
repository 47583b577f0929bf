#!/usr/bin/env bash
# The test command (README; .ci/run calls exactly this): set up, lint, run the default test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow` for the large-scale tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0
.venv/bin/ruff check .
if [ "$#" -eq 0 ]; then
  set -- -m "not slow"
fi
exec .venv/bin/python -m pytest "$@"
