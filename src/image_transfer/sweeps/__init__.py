"""Hydra multiruns: what a job returns to a sweeper (objective), how a sweep records and summarises its jobs
(job_records, summary), and the Optuna search behind hydra/sweeper=optuna (search_space, storage, optuna_search,
search_outputs)."""

# hydra.sweeper._target_ of the Optuna search. The plugin (src/hydra_plugins/image_transfer_sweeper) imports it from
# here, so the package never imports the plugin back: no import circle.
SWEEPER_TARGET = "hydra_plugins.image_transfer_sweeper.optuna_sweeper.OptunaSweeper"
