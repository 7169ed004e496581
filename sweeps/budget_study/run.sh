#!/usr/bin/env bash
# The budget study ("Are GANs created equal?", Lucic et al. 2018, on MNIST), one command, resumable:
# every step is an Optuna study in SQLite (outputs/search/<study>/study.db) or a sweep whose completed
# runs are skipped, so running this again continues where it stopped.
#   bash sweeps/budget_study/run.sh  # then: python src/budget_report.py (sweeps/results/budget_study/)
# Extra arguments go to every command (e.g. hydra.launcher.n_jobs=2 torch_threads=1: two populations
# at once on a 2-core CPU, as the committed results were made).
# 1. N random configurations per model from its conf/hparams_search/<model>.yaml space;
# 2. the best configuration of each model rerun over SEEDS seeds;
# 3. random vs TPE vs pruned TPE at equal compute (epochs trained) for COMPARED models.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODELS=${MODELS:-"gan lsgan wgan wgan_gp began ebgan ebgan_pt"}
COMPARED=${COMPARED:-"gan ebgan"}
N=${N:-100}
# trials of the TPE searches (pruned TPE: the same epochs)
N_COMPARED=${N_COMPARED:-50}
SEEDS=${SEEDS:-10}
EPOCHS=$(python -c "from omegaconf import OmegaConf; print(OmegaConf.load('sweeps/budget_study/cpu_cell.yaml').trainer.max_epochs)")
search=(python src/train.py -cd sweeps/budget_study -cn cpu_cell hydra/launcher=population "$@")

for model in $MODELS; do
  "${search[@]}" hparams_search="$model" hydra.sweeper.study_name="${model}_random" \
    hydra/sweeper/sampler=random hydra.sweeper.sampler.seed=0 hydra/sweeper/pruner=none \
    hydra.sweeper.n_trials="$N" hydra.sweeper.n_jobs="$N"
done

seeds=$(seq -s, 1 "$SEEDS")
for model in $MODELS; do
  # the best random configuration (fixed overrides) over SEEDS seeds: the grid sampler over seed
  best=$(python src/budget_report.py --best-overrides "outputs/search/${model}_random/study.db")
  # shellcheck disable=SC2086
  "${search[@]}" hparams_search="$model" hydra.sweeper.study_name="${model}_seeds" \
    hydra/sweeper/sampler=grid hydra/sweeper/pruner=none $best "seed=choice($seeds)" \
    hydra.sweeper.n_trials="$SEEDS" hydra.sweeper.n_jobs="$SEEDS"
done

for model in $COMPARED; do
  # TPE asks 8 trials at a time (it learns from those told); pruned TPE: the same compute
  "${search[@]}" hparams_search="$model" hydra.sweeper.study_name="${model}_tpe" \
    hydra.sweeper.sampler.seed=0 hydra/sweeper/pruner=none hydra.sweeper.n_trials="$N_COMPARED" \
    hydra.sweeper.n_jobs=8
  "${search[@]}" hparams_search="$model" hydra.sweeper.study_name="${model}_pruned_tpe" \
    hydra.sweeper.sampler.seed=0 hydra/sweeper/pruner=successive_halving \
    hydra.sweeper.n_trials=$((4 * N_COMPARED)) hydra.sweeper.n_jobs=8 \
    hydra.sweeper.max_member_epochs=$((N_COMPARED * EPOCHS))
done
