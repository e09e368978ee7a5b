#!/usr/bin/env bash
# Set up (if needed) and run the test suite and the linter. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check vaekit tests benchmarks scripts
.venv/bin/python -m pytest "$@"
