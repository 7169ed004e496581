"""Hydra launcher ``hydra/launcher=population`` (population_launcher.py): trains a sweep's
same-shape jobs as populations (src/population). Hydra only takes launchers defined in the
``hydra_plugins`` namespace, hence this package."""
