#!/usr/bin/env bash
# The GPU checks of one run's fast path (docs/speed.md; sweeps/results/gpu_fast_path/):
#   bash sweeps/gpu_fast_path.sh            # on a GPU machine, from the project root
# 1. tests/test_cuda_graphs.py: every model of the shared loop, captured vs eager on the GPU;
# 2. src/benchmark_fast_path.py: batches/s of plain / Lightning / + data.on_device / + cuda_graphs;
# 3. BEGAN's gamma claim at a longer length (sweeps/began_gamma.yaml's settings, the paper's n = h
#    = 64, 25 000 steps, one seed per gamma, four runs side by side), with CUDA graphs where step 1
#    found them exact for BEGAN. Each step under its own time limit. Results under $OUT.
set -u
OUT=${OUT:-outputs/gpu_fast_path}
mkdir -p "$OUT"
stamp() { echo "[$(date +%T)] $*"; }
quiet() { grep -v -E "Warning|warn\(|litlogger|TPU available|GPU available|LOCAL_RANK|^\s*$"; }

stamp "device"
nvidia-smi --query-gpu=name,memory.total --format=csv 2>&1 | tee "$OUT/device.txt"
python -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)" \
  2>&1 | tee -a "$OUT/device.txt"

if [ "${TEST_LIMIT:-150}" -gt 0 ]; then
  stamp "captured vs eager"
  timeout "${TEST_LIMIT:-150}" python -m pytest -q -p no:cacheprovider -s --no-header \
    tests/test_cuda_graphs.py \
    tests/test_population.py::test_a_captured_population_steps_as_the_eager_one_on_the_gpu \
    > "$OUT/pytest_cuda_graphs.log" 2>&1
  stamp "pytest exit $?"
  grep -E "relative|passed|failed|Error|error" "$OUT/pytest_cuda_graphs.log" | tail -25
fi

stamp "benchmark"
timeout "${BENCH_LIMIT:-200}" python src/benchmark_fast_path.py ${BENCH_ARGS:---batches 600 --rounds 1} \
  --out "$OUT/benchmark_fast_path.json" 2>&1 | quiet | tee "$OUT/benchmark.log" | grep -E "batches/s|Error"

if [ "${BEGAN_LIMIT:-150}" -gt 0 ]; then
  graphs=true
  # graphs only where step 1 ran and passed (a timed-out or skipped step leaves no verdict)
  { grep -q " passed" "$OUT/pytest_cuda_graphs.log" && ! grep -q -E "failed|error" \
      "$OUT/pytest_cuda_graphs.log"; } 2>/dev/null || graphs=false
  [ "${ACCEL:-gpu}" = cpu ] && graphs=false  # a check of the script without a GPU
  stamp "BEGAN gamma runs (cuda_graphs=$graphs, limit ${BEGAN_LIMIT:-150} s)"
  for gamma in 0.3 0.5 0.7 0.9; do
    timeout "${BEGAN_LIMIT:-150}" python src/train.py -cd sweeps -cn began_gamma hydra.mode=RUN \
      model.gamma=$gamma seed=1 arch.filters=${BEGAN_SIZE:-64} arch.hidden_dim=${BEGAN_SIZE:-64} \
      trainer.accelerator=${ACCEL:-gpu} data.on_device=true callbacks.sample_grid.every_n_epochs=${BEGAN_EPOCHS:-10} \
      model.cuda_graphs=$graphs trainer.max_epochs=${BEGAN_EPOCHS:-10} \
      trainer.limit_train_batches=${BEGAN_STEPS:-2500} logger=csv print_config=false \
      hydra.run.dir=outputs/began_long/gamma_$gamma > "$OUT/began_gamma_$gamma.log" 2>&1 &
  done
  wait
  stamp "BEGAN done"
  for gamma in 0.3 0.5 0.7 0.9; do tail -2 "$OUT/began_gamma_$gamma.log"; done
  tar czf "$OUT/began_long.tgz" $(find outputs/began_long \( -name metrics.json -o -name "*.csv" \
    -o -name "*.png" -o -name overrides.yaml -o -name config.yaml \) 2>/dev/null) "$OUT"/began_gamma_*.log
  rm -f "$OUT"/began_gamma_*.log
fi
stamp "done"
ls -la "$OUT"
