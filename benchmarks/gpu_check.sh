#!/usr/bin/env bash
# The checks and timings that need a GPU, as one script for a lent GPU machine with PyTorch but no
# package registry (run from the repository root):
#   1. tests/test_cuda.py: every baselines-suite method on the GPU, both engines, against the CPU reference;
#   2. benchmarks/speed_synthetic.py on cuda: the headline run (fedbench run, cold and warm data cache),
#      the FedEM authors' code on the same GPU (when AUTHORS names a checkout of omarfoq/FedEM), and the
#      in-process synthetic workload;
#   3. the headline run on the same machine's CPU.
# Output goes to $OUT (default ./gpu-out): test_cuda.log, speed_gpu.md, speed_cpu.md.
# Environment: AUTHORS (checkout, optional), AUTHORS_ROUNDS (default 20), STUB (a folder put on
# PYTHONPATH for the authors' run, e.g. one holding a stand-in cvxpy module where it cannot be installed).
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || exit 1
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log" | tail -15
authors=()
if [ -n "${AUTHORS:-}" ]; then
  authors=(--authors "$AUTHORS" --authors-python python3 --authors-rounds "${AUTHORS_ROUNDS:-20}")
fi
PYTHONPATH=${STUB:-} python3 benchmarks/speed_synthetic.py --device cuda --engines vectorized \
  --only "headline${AUTHORS:+,authors},synthetic" "${authors[@]}" --out "$OUT/speed_gpu.md" 2>&1 | tee "$OUT/bench_gpu.log"
python3 benchmarks/speed_synthetic.py --device cpu --only headline --out "$OUT/speed_cpu.md" 2>&1 | tee "$OUT/bench_cpu.log"
