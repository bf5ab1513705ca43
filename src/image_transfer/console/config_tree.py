"""The composed config as a tree on the console at a run's start (its resolved copy is the run dir's config.yaml)."""

from __future__ import annotations

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax
from rich.tree import Tree


def config_tree(cfg: DictConfig) -> Tree:
    """One branch per group (data, model, trainer ...) holding its YAML; the top-level settings in one branch."""
    tree = Tree("config", guide_style="dim")
    settings = {k: v for k, v in cfg.items() if not isinstance(v, DictConfig)}
    if settings:
        tree.add("settings").add(Syntax(OmegaConf.to_yaml(settings, resolve=True).rstrip(), "yaml"))
    for name, node in cfg.items():
        if isinstance(node, DictConfig):
            branch = tree.add(str(name))
            branch.add(Syntax(OmegaConf.to_yaml(node, resolve=True).rstrip(), "yaml") if node else "(empty)")
    return tree


@rank_zero_only  # under DDP, once
def print_config_tree(cfg: DictConfig, console: Console | None = None) -> None:
    (console or Console()).print(config_tree(cfg))
