"""Hydra plugins of this project (found by Hydra's scan of the `hydra_plugins` namespace): hydra/sweeper=optuna."""
