#!/usr/bin/env bash
# The checks and timings that need a GPU, as one script for a lent GPU machine with PyTorch but no package
# registry (run from the repository root), cheapest first so that a lease that ends early still returns whole rows:
#   1. tests/test_cuda.py: every baselines-suite method on the GPU, both engines, against the CPU reference;
#   1b. benchmarks/paper_models_engines.py on cuda: both engines on each paper model, and whether auto picks the faster;
#   2. real-size stand-ins of the paper's CIFAR-10 and EMNIST (benchmarks/standin_data.py, numpy only);
#   3. benchmarks/paper_speed.py on cuda: each real cell (EMNIST, then CIFAR-10; FedAvg, then FedEM) in whole rounds
#      (MobileNetV2 and the LSTM train vectorised too since keyed dropout and the written-out LSTM; DATASETS can add
#      cifar100, femnist and shakespeare),
#      fedbench beside the FedEM authors' code on the same files and GPU (when AUTHORS names a checkout of
#      omarfoq/FedEM), then the same cells of fedbench on the other engine;
#   4. (SYNTHETIC=1) the synthetic headline run of benchmarks/speed_synthetic.py on cuda and on the CPU.
# Output goes to $OUT (default ./gpu-out): test_cuda.log, engines_gpu.md, paper_speed_gpu.md (rewritten after every cell),
# paper_speed.log, and with SYNTHETIC=1 speed_gpu.md and speed_cpu.md.
# Environment: AUTHORS (checkout, optional), ROUNDS (default 2), CELL_TIMEOUT (seconds per process, default 240),
# DATASETS (default emnist,cifar10), METHODS (default fedavg,fedem), LAYOUTS (default "default"; "default,channels_last" adds a
# row of fedbench with train.channels_last per cell).
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || exit 1
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log" | tail -5
timeout 180 python3 benchmarks/paper_models_engines.py --device cuda --repeats 3 --clients 16 --samples 256 --batch 128 \
  2>&1 | tee "$OUT/engines_gpu.md" | tail -6
STANDIN=${STANDIN:-/tmp/standin}
python3 benchmarks/standin_data.py --root "$STANDIN" --only "${DATASETS:-emnist,cifar10}" 2>&1 | tail -3
authors=()
if [ -n "${AUTHORS:-}" ]; then
  authors=(--authors "$AUTHORS" --authors-python python3)
fi
python3 benchmarks/paper_speed.py --data-root "$STANDIN" --device cuda --datasets "${DATASETS:-emnist,cifar10}" \
  --methods "${METHODS:-fedavg,fedem}" --rounds "${ROUNDS:-2}" --timeout "${CELL_TIMEOUT:-240}" "${authors[@]}" \
  --layouts "${LAYOUTS:-default}" \
  --out "$OUT/paper_speed_gpu.md" 2>&1 | tee "$OUT/paper_speed.log"
python3 benchmarks/paper_speed.py --data-root "$STANDIN" --device cuda --datasets "${DATASETS:-emnist,cifar10}" \
  --methods "${METHODS:-fedavg,fedem}" --rounds "${ROUNDS:-2}" --timeout "${CELL_TIMEOUT:-240}" --engines sequential,vectorized \
  --out "$OUT/paper_speed_gpu_engines.md" 2>&1 | tee -a "$OUT/paper_speed.log"
if [ -n "${SYNTHETIC:-}" ]; then
  python3 benchmarks/speed_synthetic.py --device cuda --engines vectorized --only headline,synthetic \
    --out "$OUT/speed_gpu.md" 2>&1 | tee "$OUT/bench_gpu.log"
  python3 benchmarks/speed_synthetic.py --device cpu --only headline --out "$OUT/speed_cpu.md" 2>&1 | tee "$OUT/bench_cpu.log"
fi
