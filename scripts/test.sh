#!/usr/bin/env bash
# Set up (if needed) and run the test suite and the linter. CI runs exactly this.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` for quick feedback;
# the 15 slowest tests are listed at the end of every run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check vaekit tests benchmarks scripts
.venv/bin/python -m pytest --durations=15 "$@"
