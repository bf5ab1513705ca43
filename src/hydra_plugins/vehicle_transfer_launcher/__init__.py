"""Hydra plugins (found by Hydra's scan of the `hydra_plugins` namespace): a sweep that outlives failed jobs."""
