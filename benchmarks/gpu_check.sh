#!/usr/bin/env bash
# GPU check (issue #15): on a fresh machine with a CUDA GPU and this repository, install,
# run the device-parametrised tests on CUDA, and print throughput on the GPU against raw
# forward / forward+backward on that GPU and against the same code on the CPU; then the
# memory budget and autocast measurements on the GPU. Needs nothing but the repository
# (and the package registries for the install). About 5-8 minutes.
#   bash benchmarks/gpu_check.sh             # everything
#   SKIP_INSTALL=1 bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - t0 )) s)"; }
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  step "install"
  bash scripts/install.sh > /tmp/robcurve-install.log 2>&1 || { tail -30 /tmp/robcurve-install.log; exit 1; }
fi
PY=.venv/bin/python
step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch: nothing to check')" || exit 1
rc=0
step "device-parametrised tests (cpu and cuda)"
timeout 240 $PY -m pytest -q -p no:cacheprovider tests/test_devices.py -k "cuda or budget or autocast" || rc=1
step "bench on cuda (the main job, n = 300)"
timeout 120 .venv/bin/robcurve bench --model vit_small --attack pgd --device cuda --out /tmp/robcurve-gpu-bench --fresh --no-progress | tail -8 || rc=1
cd benchmarks
step "throughput: GPU vs raw on the GPU and vs the CPU"
timeout 240 ../$PY gpu.py --device cuda --repeats 3 || rc=1
step "memory: working peak vs n and the budget, on cuda"
timeout 120 ../$PY memory.py --device cuda --quick || rc=1
step "autocast bf16 / fp16 vs float32 on cuda"
timeout 120 ../$PY autocast.py --device cuda --quick || rc=1
step "done, exit $rc"
exit $rc
