#!/usr/bin/env bash
# Set up .venv with vaekit (+ test extras). With --with-data, also make Fashion-MNIST available.
# torch==2.13.0 is installed first when no torch is present: it is the CPU build served
# locally; any other version would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "[setup] installing torch==2.13.0 (CPU build)"
  .venv/bin/python -m pip install -q torch==2.13.0 2>&1 | grep -v "is ignored: it is neither" || true
  .venv/bin/python -c "import torch" 2>/dev/null \
    || { echo "[setup] error: torch did not install" >&2; exit 1; }
fi
if ! .venv/bin/python -c "import vaekit, pytest, ruff" 2>/dev/null; then
  echo "[setup] installing vaekit with its test extras"
  .venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v "is ignored: it is neither" || true
  .venv/bin/python -c "import vaekit" || { echo "[setup] error: vaekit did not install" >&2; exit 1; }
fi

if [ "${1:-}" = "--with-data" ]; then
  if .venv/bin/python -c "from vaekit.data.datasets import locate; import sys; sys.exit(locate('fashion-mnist') is None)"; then
    echo "[setup] Fashion-MNIST found"
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing Debian package dataset-fashion-mnist"
    apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } \
      || { echo "[setup] error: could not install dataset-fashion-mnist" >&2; exit 1; }
  else
    echo "[setup] error: Fashion-MNIST not found. Install it with 'sudo apt-get install dataset-fashion-mnist'," >&2
    echo "        or put train-images-idx3-ubyte.gz and t10k-images-idx3-ubyte.gz in \$VAEKIT_DATA/fashion-mnist/" >&2
    exit 1
  fi
fi
