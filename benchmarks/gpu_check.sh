#!/usr/bin/env bash
# The checks and timings that need a GPU, as one script for a lent GPU machine with PyTorch but no package
# registry (run from the repository root), cheapest first so that a lease that ends early still returns whole rows.
# STEPS (default tests,engines,cells,jobs,cost) picks and orders the parts, so a second call can do only the rest:
#   tests:   tests/test_cuda.py: every baselines-suite method on the GPU, both engines, against the CPU reference;
#   engines: benchmarks/paper_models_engines.py on cuda: both engines on each paper model, and whether auto picks the faster;
#   cells:   real-size stand-ins of the paper's data sets (benchmarks/standin_data.py, numpy only), then
#            benchmarks/paper_speed.py on cuda: each real cell (EMNIST, then CIFAR-10; FedAvg, then FedEM; DATASETS can add
#            cifar100, femnist and shakespeare) in whole rounds, fedbench beside the FedEM authors' code on the same files
#            and GPU (when AUTHORS names a checkout of omarfoq/FedEM: their seconds per round and per evaluation read from
#            their prints), then the same cells of fedbench on the other engine;
#   jobs:    several runs on the one GPU (issue 28 item 6): benchmarks/speed_jobs.py, JOBS_CELL (default emnist/fedavg)
#            x seeds 1..max(JOBS_LIST) with --jobs 1,2,4,8 --devices cuda:0, ROUNDS rounds each: runs per hour, peak
#            host and GPU memory;
#   cost:    the paper suite projected on this GPU (issue 28 item 7): benchmarks/paper_cost.py --device cuda, every cell
#            of COST_DATASETS (default emnist,cifar10) through the engine a run picks, COST_SAMPLES samples a cell;
#   (SYNTHETIC=1) the synthetic headline run of benchmarks/speed_synthetic.py on cuda and on the CPU.
# Output goes to $OUT (default ./gpu-out): test_cuda.log, engines_gpu.md, paper_speed_gpu.md (rewritten after every cell),
# paper_speed.log, jobs_gpu.md, paper_cost_gpu.md, and with SYNTHETIC=1 speed_gpu.md and speed_cpu.md.
# Environment: AUTHORS (checkout, optional), ROUNDS (default 2), CELL_TIMEOUT (seconds per process, default 240),
# DATASETS (default emnist,cifar10), METHODS (default fedavg,fedem), LAYOUTS (default "default"; "default,channels_last" adds a
# row of fedbench with train.channels_last per cell), JOBS_CELL, JOBS_LIST (default 1,2,4,8), COST_DATASETS, COST_SAMPLES
# (default 4096).
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . || exit 1
STEPS=",${STEPS:-tests,engines,cells,jobs,cost},"
STANDIN=${STANDIN:-/tmp/standin}
written=","
standin() {  # write the stand-ins of the comma-separated data sets $1 that this call has not written yet
  local todo=() d list
  for d in ${1//,/ }; do [[ $written == *,$d,* ]] || todo+=("$d"); done
  if [ ${#todo[@]} -gt 0 ]; then
    list=$(IFS=,; echo "${todo[*]}")
    python3 benchmarks/standin_data.py --root "$STANDIN" --only "$list" 2>&1 | tail -3
    written="$written$list,"
  fi
}
if [[ $STEPS == *,tests,* ]]; then
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log" | tail -5
fi
if [[ $STEPS == *,engines,* ]]; then
  timeout 180 python3 benchmarks/paper_models_engines.py --device cuda --repeats 3 --clients 16 --samples 256 --batch 128 \
    2>&1 | tee "$OUT/engines_gpu.md" | tail -6
fi
if [[ $STEPS == *,cells,* ]]; then
  standin "${DATASETS:-emnist,cifar10}"
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
fi
if [[ $STEPS == *,jobs,* ]]; then
  cell=${JOBS_CELL:-emnist/fedavg}
  jobs_list=${JOBS_LIST:-1,2,4,8}
  standin "${cell%%/*}"
  python3 benchmarks/speed_jobs.py --suite paper --datasets "${cell%%/*}" --methods "${cell##*/}" \
    --seeds "1-${jobs_list##*,}" --set rounds="${ROUNDS:-2}" --data-root "$STANDIN" --devices cuda:0 \
    --jobs-list "$jobs_list" --out "$OUT/jobs_gpu.md" 2>&1 | tee "$OUT/jobs_gpu.log" | tail -8
fi
if [[ $STEPS == *,cost,* ]]; then
  standin "${COST_DATASETS:-emnist,cifar10}"
  python3 benchmarks/paper_cost.py --data-root "$STANDIN" --device cuda --datasets "${COST_DATASETS:-emnist,cifar10}" \
    --samples "${COST_SAMPLES:-4096}" --out "$OUT/paper_cost_gpu.md" 2>&1 | tee "$OUT/paper_cost_gpu.log" | tail -12
fi
if [ -n "${SYNTHETIC:-}" ]; then
  python3 benchmarks/speed_synthetic.py --device cuda --engines vectorized --only headline,synthetic \
    --out "$OUT/speed_gpu.md" 2>&1 | tee "$OUT/bench_gpu.log"
  python3 benchmarks/speed_synthetic.py --device cpu --only headline --out "$OUT/speed_cpu.md" 2>&1 | tee "$OUT/bench_cpu.log"
fi
