#!/usr/bin/env bash
# The main job: set up, train the default VAE on Fashion-MNIST, evaluate it on the test set,
# and write sample / reconstruction grids and a metrics file into a new run directory.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-data
RUN=${RUN:-runs/quickstart-$(date +%Y%m%d-%H%M%S)}
EPOCHS=${EPOCHS:-10}
start=$(date +%s)
.venv/bin/vaekit train --data fashion-mnist --epochs "$EPOCHS" --out "$RUN"
.venv/bin/vaekit evaluate "$RUN" --k 1000
.venv/bin/vaekit sample "$RUN" -n 64
.venv/bin/vaekit reconstruct "$RUN" -n 32
echo
echo "done in $(( $(date +%s) - start )) s. Results in $RUN:"
echo "  eval-test.json       test ELBO, IWAE-1000 bound, KL, active units (nats/example, bits/dim)"
echo "  metrics.csv/.jsonl   per-epoch training loss and validation ELBO"
echo "  samples.png          64 samples x = E[x|z], z ~ N(0, I)"
echo "  reconstructions.png  test images (odd rows) and their reconstructions (even rows)"
