#!/usr/bin/env bash
# The population launcher's GPU measurements (docs/sweeps.md; a run's results are to be committed under
# sweeps/results/gpu_population/ — the 1-epoch grid reports have not been produced on a GPU yet):
#   bash sweeps/gpu_population.sh            # on a GPU machine, from the project root
# 1. member-steps/s against K for the small / medium / largest cells, fp32 and TF32, against one
#    Lightning run on the same GPU; 2. the EBGAN-PT and EBGAN paper grids (512 runs each) at one
#    epoch, stacked, each under its own time limit (a sweep cut short reports what completed; a
#    relaunch trains the rest), with model.cuda_graphs=true where the captured population was found
#    equal to the eager one (GRAPHS=false turns it off). Results under $OUT (default
#    outputs/gpu_population).
# SMOKE=1 runs the same steps tiny, on whatever device there is (to check the script).
set -u
OUT=${OUT:-outputs/gpu_population}
mkdir -p "$OUT"
SMOKE=${SMOKE:-0}
stamp() { echo "[$(date +%T)] $*"; }

if [ "$SMOKE" = 1 ]; then
  BENCH=(--members 1 2 --steps 2 --lightning-batches 3 --cells "mlp small (2x400 / 2x128)")
  GRID=(trainer.limit_train_batches=3 callbacks.generative_metrics.n_samples=200
    callbacks.generative_metrics.n_real=300 callbacks.generative_metrics.kid_subset_size=50
    "arch.nLayerG=2" "arch.nLayerD=2" "arch.sizeG=400" "arch.sizeD=128,256")
  LIMITS=(120 120 120)
else
  BENCH=(--members 1 8 32 128 --max-members largest=32 --steps 40 --lightning-batches 300)
  GRID=()
  LIMITS=(${BENCH_LIMIT:-140} ${PT_LIMIT:-220} ${EBGAN_LIMIT:-120})
fi

stamp "device"
nvidia-smi --query-gpu=name,memory.total --format=csv 2>&1 | tee "$OUT/device.txt"
python -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)" \
  2>&1 | tee -a "$OUT/device.txt"

# populations replayed from CUDA graphs: checked against eager first; the grids use them only if equal
graphs=false
if [ "$SMOKE" != 1 ]; then
  stamp "captured vs eager population"
  timeout 90 python -m pytest -q -p no:cacheprovider -s --no-header \
    tests/test_population.py::test_a_captured_population_steps_as_the_eager_one_on_the_gpu \
    > "$OUT/pytest_population_graphs.log" 2>&1
  grep -E "relative|passed|failed|rror" "$OUT/pytest_population_graphs.log" | tail -5
  { grep -q " passed" "$OUT/pytest_population_graphs.log" && ! grep -q -E "failed|error" \
      "$OUT/pytest_population_graphs.log"; } && graphs=${GRAPHS:-true}
fi

stamp "benchmark"
timeout "${LIMITS[0]}" python src/benchmark_population.py "${BENCH[@]}" \
  --matmul-precision highest high --out "$OUT/benchmark_population.json" 2>&1 | tee "$OUT/benchmark.log"
# population steps replayed from CUDA graphs (the members' model.cuda_graphs), fp32; GPU only
if [ "$SMOKE" != 1 ]; then
  timeout "${GRAPHS_LIMIT:-90}" python src/benchmark_population.py "${BENCH[@]}" --cuda-graphs off on \
    --lightning-batches 0 --out "$OUT/benchmark_population_graphs.json" 2>&1 | tee -a "$OUT/benchmark.log"
fi
# the per-member optimizer (K fused-Adam launches a step) against the vectorized one, on the device
timeout 40 python src/benchmark_population.py "${BENCH[@]}" --cells "mlp medium (3x800 / 3x256)" \
  --optimizers per_member --lightning-batches 20 --out "$OUT/benchmark_per_member.json" 2>&1 \
  | tee -a "$OUT/benchmark.log"

for sweep in ebgan_pt_mnist_grid ebgan_mnist_grid; do
  limit=${LIMITS[1]}
  [ $sweep = ebgan_mnist_grid ] && limit=${LIMITS[2]}
  stamp "grid $sweep (limit ${limit} s)"
  timeout "$limit" python src/train.py -cd sweeps -cn $sweep hydra/launcher=population \
    hydra.launcher.max_members=64 hydra.launcher.max_padding=${MAX_PADDING:-4} \
    hydra.sweep.dir=outputs/sweeps/gpu_$sweep trainer.max_epochs=1 \
    callbacks.sample_grid.every_n_epochs=1 callbacks.generative_metrics.n_samples=5000 \
    callbacks.model_checkpoint=null callbacks.interrupt_checkpoint=null model.cuda_graphs=$graphs "${GRID[@]}" \
    > "$OUT/grid_$sweep.log" 2>&1
  stamp "grid $sweep: exit $?, $(ls outputs/sweeps/gpu_$sweep/*/metrics.json 2>/dev/null | wc -l) runs written"
  tail -3 "$OUT/grid_$sweep.log"
done

stamp "report"
python src/report.py outputs/sweeps/gpu_ebgan_pt_mnist_grid outputs/sweeps/gpu_ebgan_mnist_grid \
  --out "$OUT/report" --is-threshold 5 2>&1 | tail -5
# what the report and the cost extrapolation need, small enough to bring back
tar czf "$OUT/grid_runs.tgz" $(find outputs/sweeps/gpu_ebgan_pt_mnist_grid outputs/sweeps/gpu_ebgan_mnist_grid \
  \( -name metrics.json -o -name overrides.yaml -o -name last.png \) 2>/dev/null) "$OUT"/grid_*.log
tar czf "$OUT/report.tgz" -C "$OUT" report
rm -rf "$OUT/report" "$OUT"/grid_*.log
stamp "done"
ls -la "$OUT"
