"""Hydra multiruns: what a job returns to a sweeper (objective), how a sweep records and summarises its jobs
(job_records, summary), and the Optuna search behind hydra/sweeper=optuna (search_space, storage, optuna_search,
search_outputs)."""
