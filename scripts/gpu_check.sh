#!/usr/bin/env bash
# The GPU check: everything vaekit's CUDA path should do, in under 8 minutes on one H100.
#
#   bash scripts/gpu_check.sh [OUT_JSON]      # default results/gpu-check.json
#
# Stages (each with its own time limit; a failed stage is recorded in the JSON and the
# next one still runs):
#   env         python, torch, CUDA, the GPU's name (nvidia-smi)
#   tests       pytest -m cuda (tests/test_cuda.py): round trips, bit-identical resume,
#               1-rank NCCL under torchrun, bf16 / compile / channels_last steps, estimators
#   bench_train benchmarks/bench_train.py --sections device --device cuda: the MLP VAE
#               (784-400-20) with the whole Fashion-MNIST on the GPU, vaekit fp32 / autograd /
#               bf16 / compile and a plain loop eager and as a CUDA graph, batch 128 and 4096
#               (vaekit-compile in a stage of its own: a time-out there loses only it)
#   bench_conv  benchmarks/bench_conv.py --device cuda: the conv VAE of Dai & Wipf, batch 64,
#               NCHW and channels_last
#   quickstart  one epoch of the quick start's model (vaekit train --device cuda) + evaluate
# and writes one JSON of all figures (img/s, test counts, timings, device, torch version).
#
# Exit status: 0 = a CUDA GPU was found and every stage passed; 1 = some stage failed (the
# JSON says which and why); 3 = no CUDA GPU: nothing GPU-specific could be checked (the
# CUDA tests ran and skipped, the GPU stages are recorded as skipped), so a CPU-only
# machine never reports a passing GPU check.
#
# GPU_CHECK_DEVICE=cpu runs the GPU stages on the CPU at --quick sizes (and the CUDA tests
# on the CPU: VAEKIT_CUDA_TESTS_ON=cpu) with 8x the time limits (GPU_CHECK_LIMIT_SCALE), to
# test this script itself where there is no GPU (~15 min on 2 cores); its exit status is then
# 0 or 1 by the stages, and the JSON says "device": "cpu".
#
# Needs Fashion-MNIST for the benchmarks and the quick start (scripts/setup.sh --with-data,
# or its IDX files in $VAEKIT_DATA/fashion-mnist/: a machine without network gets them
# copied along). Python: $PYTHON, else .venv/bin/python, else python3 (vaekit is imported
# from this checkout; it need not be installed).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT_JSON=${1:-results/gpu-check.json}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 VAEKIT_NO_REPORT=1
if [ -n "${PYTHON:-}" ]; then :
elif [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then PYTHON=.venv/bin/python
else PYTHON=python3; fi
export PYTHON
start=$(date +%s)
DEV=${GPU_CHECK_DEVICE:-cuda}
QUICK=() SCALE=1  # SCALE: the stages' time limits x this (a CPU dry run is far slower)
if [ "$DEV" = cpu ]; then
  QUICK=(--quick) SCALE=${GPU_CHECK_LIMIT_SCALE:-8}
  export VAEKIT_CUDA_TESTS_ON=cpu VAEKIT_ALLOW_SLOW_BF16=1
fi

# stage NAME LIMIT_S CMD...: run CMD with a time limit, its output in $WORK/NAME.log and
# its exit status, seconds and status in $WORK/NAME.status (never stops this script)
stage() {
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS rc=0
  limit=$((limit * SCALE))
  echo "[gpu-check] $name (limit ${limit} s): $*"
  timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.log" 2>&1 || rc=$?
  local status
  case "$rc" in
    0) status=passed ;;
    124|137) status="timed out after ${limit} s" ;;
    *) status="failed (exit $rc)" ;;
  esac
  printf '%s\n%s\n%s\n' "$rc" "$((SECONDS - t0))" "$status" >"$WORK/$name.status"
  echo "[gpu-check] $name: $status ($((SECONDS - t0)) s)"
  tail -n 3 "$WORK/$name.log" | sed 's/^/    /'
}
skip() {  # skip NAME WHY
  printf '%s\n%s\n%s\n' "-" "0" "skipped: $2" >"$WORK/$1.status"
  echo "[gpu-check] $1: skipped ($2)"
}

"$PYTHON" - >"$WORK/env.json" <<'EOF' || echo '{"error": "python or torch does not start"}' >"$WORK/env.json"
import json, platform, shutil, subprocess, torch
cuda = torch.cuda.is_available()
smi = shutil.which("nvidia-smi")
info = {"python": platform.python_version(), "torch": torch.__version__,
        "cuda_available": cuda, "torch_cuda": torch.version.cuda,
        "device_name": torch.cuda.get_device_name(0) if cuda else None,
        "device_count": torch.cuda.device_count() if cuda else 0,
        "bf16_supported": torch.cuda.is_bf16_supported() if cuda else None,
        "cpu_capability": torch.backends.cpu.get_cpu_capability()}
if smi:
    q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total",
                        "--format=csv,noheader"], capture_output=True, text=True)
    info["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
print(json.dumps(info))
EOF
GPU=$("$PYTHON" -c "import json,sys; print(int(bool(json.load(open(sys.argv[1])).get('cuda_available'))))" "$WORK/env.json")
if [ "$DEV" = cpu ]; then
  GPU=1
  echo "[gpu-check] GPU_CHECK_DEVICE=cpu: a dry run of this script on the CPU (quick sizes)"
elif [ "$GPU" = 1 ]; then
  echo "[gpu-check] GPU: $("$PYTHON" -c "import json,sys; print(json.load(open(sys.argv[1]))['device_name'])" "$WORK/env.json")"
else
  echo "[gpu-check] NO CUDA GPU here (torch.cuda.is_available() is False): the CUDA tests will skip and the GPU stages are skipped; exit status 3"
fi

stage tests 120 "$PYTHON" -m pytest -m cuda -q -rs -p no:cacheprovider \
  --junitxml="$WORK/junit.xml" --durations=10

GPU_STAGES="bench_train_b128 bench_train_compile bench_train_b4096 bench_conv quickstart"
FMNIST=$("$PYTHON" -c "from vaekit.data.datasets import locate; print(locate('fashion-mnist') or '')")
if [ "$GPU" != 1 ]; then
  for s in $GPU_STAGES; do skip "$s" "no CUDA GPU"; done
elif [ -z "$FMNIST" ]; then
  for s in $GPU_STAGES; do
    skip "$s" "Fashion-MNIST not found (scripts/setup.sh --with-data, or its IDX files in \$VAEKIT_DATA/fashion-mnist/)"
  done
else
  stage bench_train_b128 90 "$PYTHON" benchmarks/bench_train.py --sections device --device "$DEV" \
    --device-batches 128 --epochs 3 --device-contenders tensor-loop tensor-loop-cudagraph vaekit \
    vaekit-autograd vaekit-bf16 ${QUICK[@]+"${QUICK[@]}"} --json "$WORK/bench_train_b128.json"
  stage bench_train_compile 75 "$PYTHON" benchmarks/bench_train.py --sections device --device "$DEV" \
    --device-batches 128 --epochs 3 --device-contenders vaekit-compile ${QUICK[@]+"${QUICK[@]}"} \
    --json "$WORK/bench_train_compile.json"
  stage bench_train_b4096 60 "$PYTHON" benchmarks/bench_train.py --sections device --device "$DEV" \
    --device-batches 4096 --epochs 5 --device-contenders tensor-loop tensor-loop-cudagraph vaekit vaekit-bf16 \
    ${QUICK[@]+"${QUICK[@]}"} --json "$WORK/bench_train_b4096.json"
  stage bench_conv 75 "$PYTHON" benchmarks/bench_conv.py --device "$DEV" --cycles 10 --chunk-steps 40 \
    --contenders tensor-loop vaekit tensor-loop-channels-last vaekit-channels-last \
    ${QUICK[@]+"${QUICK[@]}"} --json "$WORK/bench_conv.json"
  LIMIT=()
  [ "$DEV" = cpu ] && LIMIT=(--limit 6000)
  stage quickstart 60 bash -c '"$PYTHON" -m vaekit train --data fashion-mnist --device "$1" --epochs 1 \
      --out "$0/quickstart" --no-progress "${@:2}" && "$PYTHON" -m vaekit evaluate "$0/quickstart" \
      --k 1000 --device "$1" --no-report' "$WORK" "$DEV" ${LIMIT[@]+"${LIMIT[@]}"}
fi

TOTAL=$(( $(date +%s) - start ))
mkdir -p "$(dirname "$OUT_JSON")"
rc=0
"$PYTHON" - "$WORK" "$OUT_JSON" "$TOTAL" "$GPU" "$DEV" <<'EOF' || rc=$?
import json, sys, xml.etree.ElementTree as ET
from pathlib import Path

work, out, total = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
ran, device = sys.argv[4] == "1", sys.argv[5]  # ran: the GPU stages ran (on device)

def load(name):
    p = work / name
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None

def status(name):
    p = work / f"{name}.status"
    if not p.is_file():
        return None
    rc, seconds, what = p.read_text().splitlines()[:3]
    log = work / f"{name}.log"
    tail = log.read_text(errors="replace").splitlines()[-15:] if log.is_file() else []
    return {"status": what, "exit_code": None if rc == "-" else int(rc),
            "seconds": int(seconds),
            **({} if what.startswith(("passed", "skipped")) else {"log_tail": tail})}

def tests():
    rec = {}
    try:
        suite = ET.parse(work / "junit.xml").getroot()
        suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
        n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        rec = {**n, "passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"],
               "seconds": float(suite.get("time", 0)), "cases": {}}
        for case in suite.iter("testcase"):
            kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
            reason = next((c.get("message", "") for c in case
                           if c.tag in ("failure", "error", "skipped")), "")
            rec["cases"][f"{case.get('classname')}::{case.get('name')}"] = {
                "result": kind, "seconds": float(case.get("time", 0)),
                **({"reason": reason[:300]} if reason else {})}
    except (OSError, ET.ParseError) as err:
        rec["error"] = f"no junit report: {err}"
    return rec

def throughput(name):
    b = load(f"{name}.json")
    if not b:
        return None
    if "device" in b and isinstance(b["device"], dict):  # bench_train --sections device
        return {k: {f: r.get(f) for f in ("images_per_s", "images_per_s_best", "test_neg_elbo",
                                           "fast_path", "notes", "skipped", "error") if r.get(f)}
                for k, r in b["device"].get("results", {}).items()}
    res = b.get("interleaved", {})  # bench_conv
    return {"device_name": res.get("device_name"), "error": res.get("error"),
            **{k: {"images_per_s": r.get("images_per_s")}
               for k, r in res.get("results", {}).items()}}

def quickstart():
    run = work / "quickstart"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] \
        if (run / "metrics.jsonl").is_file() else []
    ev = load("quickstart/eval-test.json")
    return {"epochs": rows, "eval_test": ev} if rows or ev else None

names = ["tests", "bench_train_b128", "bench_train_compile", "bench_train_b4096", "bench_conv",
         "quickstart"]
stages = {n: status(n) for n in names}
failed = [n for n, s in stages.items() if s and not s["status"].startswith(("passed", "skipped"))]
env = load("env.json") or {}
dry = " (a dry run on the CPU)" if device == "cpu" else ""
rec = {"gpu": bool(env.get("cuda_available")), "device": device, "env": env,
       "total_seconds": total,
       "result": ("no CUDA GPU: nothing GPU-specific was checked (exit 3)" if not ran else
                  f"failed: {', '.join(failed)}{dry} (exit 1)" if failed else
                  f"all passed{dry} (exit 0)"),
       "stages": stages, "tests": tests(),
       "bench_train": {"batch_128": {**(throughput("bench_train_b128") or {}),
                                     **(throughput("bench_train_compile") or {})},
                       "batch_4096": throughput("bench_train_b4096")},
       "bench_conv": throughput("bench_conv"), "quickstart": quickstart()}
out.write_text(json.dumps(rec, indent=2) + "\n")
t = rec["tests"]
print(f"[gpu-check] tests: {t.get('passed')} passed, {t.get('failures')} failed, "
      f"{t.get('errors')} errors, {t.get('skipped')} skipped")
print(f"[gpu-check] {rec['result']}; {total} s in all; figures in {out}")
sys.exit(3 if not ran else 1 if failed else 0)
EOF
rm -rf "$WORK"
exit "$rc"
