#!/usr/bin/env bash
# The budget study ("Are GANs created equal?", Lucic et al. 2018, on MNIST), one command, resumable:
# every step is an Optuna study in SQLite (outputs/search/<study>/study.db) or a sweep whose completed
# runs are skipped, so running this again continues where it stopped.
#   bash sweeps/budget_study/run.sh            # then: python src/budget_report.py
# 1. N random configurations per model from its conf/hparams_search/<model>.yaml space;
# 2. the best configuration of each model rerun over SEEDS seeds;
# 3. random vs TPE vs pruned TPE at equal compute (epochs trained) for COMPARED models.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODELS=${MODELS:-"gan lsgan wgan wgan_gp began ebgan ebgan_pt"}
COMPARED=${COMPARED:-"gan ebgan"}
N=${N:-100}
SEEDS=${SEEDS:-10}
EPOCHS=$(python -c "from omegaconf import OmegaConf; print(OmegaConf.load('sweeps/budget_study/cpu_cell.yaml').trainer.max_epochs)")
search=(python src/train.py -cd sweeps/budget_study -cn cpu_cell hydra/launcher=population "$@")

for model in $MODELS; do
  "${search[@]}" hparams_search="$model" hydra.sweeper.study_name="${model}_random" \
    hydra/sweeper/sampler=random hydra.sweeper.sampler.seed=0 hydra/sweeper/pruner=none \
    hydra.sweeper.n_trials="$N" hydra.sweeper.n_jobs="$N"
done

for model in $MODELS; do
  # the best random configuration, SEEDS seeds, as one sweep (basic sweeper, population launcher)
  best=$(python src/budget_report.py best_overrides="outputs/search/${model}_random/study.db")
  python src/train.py -cd sweeps/budget_study -cn cpu_cell hparams_search="$model" \
    hydra/sweeper=basic hydra/launcher=population "hydra.sweep.dir=outputs/search/${model}_seeds" \
    'hydra.sweep.subdir=seed_${seed}' $best "seed=range(1,$((SEEDS + 1)))" "$@"
done

for model in $COMPARED; do
  # TPE asks 8 trials at a time (it learns from those told); pruned TPE: the same compute
  "${search[@]}" hparams_search="$model" hydra.sweeper.study_name="${model}_tpe" \
    hydra.sweeper.sampler.seed=0 hydra/sweeper/pruner=none hydra.sweeper.n_trials="$N" \
    hydra.sweeper.n_jobs=8
  "${search[@]}" hparams_search="$model" hydra.sweeper.study_name="${model}_pruned_tpe" \
    hydra.sweeper.sampler.seed=0 hydra/sweeper/pruner=successive_halving \
    hydra.sweeper.n_trials=$((4 * N)) hydra.sweeper.n_jobs=8 \
    hydra.sweeper.max_member_epochs=$((N * EPOCHS))
done
