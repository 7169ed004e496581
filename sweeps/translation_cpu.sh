#!/usr/bin/env bash
# The numbers of docs/translation.md (sweeps/results/translation/): each task at one
# 2-core-CPU budget, the adversarial model next to the baseline that needs no adversary.
#   bash sweeps/translation_cpu.sh          # from the project root, DATA_DIR set
# pix2pix: 2 epochs (1 718 batches of 64) on edges2digit, inpaint and grey2colour, with the paper's ablation
# "L1 alone" (model.adversarial_weight=0) at the same budget. CycleGAN: experiment=cyclegan_cpu
# (2 epochs of 600 batches of 16) on mnist2colour and mnist2fashion, against the identity map.
# Each run is then scored by evaluate.py (model, and baseline=identity) on the first 10 000 test
# images of A; a completed run is not trained again (relaunch to finish an interrupted one).
set -eu
OUT=${OUT:-$PWD/outputs/translation}
RESULTS=${RESULTS:-sweeps/results/translation}
mkdir -p "$OUT" "$RESULTS"

run() {  # run <name> <overrides...>: train, score, keep the grid and the evaluations
  local name=$1; shift
  python src/train.py "$@" logger=csv print_config=false paths.output_dir="$OUT/$name" \
    hydra.run.dir="$OUT/$name" \
    > "$OUT/$name.log" 2>&1 || { echo "$name: training failed (see $OUT/$name.log)"; return; }
  local ckpt="$OUT/$name/checkpoints/last.ckpt"
  python src/evaluate.py ckpt_path="$ckpt" > /dev/null 2>&1
  python src/evaluate.py ckpt_path="$ckpt" baseline=identity > /dev/null 2>&1
  mkdir -p "$RESULTS/$name"
  cp "$OUT/$name/evaluation.json" "$OUT/$name/evaluation_identity.json" "$RESULTS/$name/"
  cp "$OUT/$name/samples/last.png" "$RESULTS/$name/grid.png"
  python - "$OUT/$name/metrics.json" "$RESULTS/$name/training.json" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
keep = {k: run[k] for k in ("status", "wall_time_s", "epochs_completed", "optimizer_steps", "overrides")}
json.dump(keep, open(sys.argv[2], "w"), indent=2)
PY
  echo "$name: $(python -c "import json; print(json.load(open('$OUT/$name/metrics.json'))['wall_time_s'])") s"
}

run pix2pix_edges2digit model=pix2pix data=edges2digit trainer.max_epochs=2
run l1_edges2digit model=pix2pix data=edges2digit trainer.max_epochs=2 model.adversarial_weight=0
run pix2pix_inpaint model=pix2pix data=inpaint trainer.max_epochs=2
run l1_inpaint model=pix2pix data=inpaint trainer.max_epochs=2 model.adversarial_weight=0
run pix2pix_grey2colour model=pix2pix data=grey2colour trainer.max_epochs=2
run l1_grey2colour model=pix2pix data=grey2colour trainer.max_epochs=2 model.adversarial_weight=0
run cyclegan_mnist2colour experiment=cyclegan_cpu data=mnist2colour
run cyclegan_mnist2fashion experiment=cyclegan_cpu data=mnist2fashion
