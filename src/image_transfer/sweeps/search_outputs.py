"""What an Optuna search leaves in its sweep dir, rewritten from the study (so it covers every worker and every
resumed run): optimization_results.yaml, trials.csv, experiment/best_recipe.yaml and Optuna's plots as PNG."""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from image_transfer.files import write_atomically, write_csv

log = logging.getLogger(__name__)
RECIPE = Path("experiment") / "best_recipe.yaml"
# The search itself; the experiment it started from (included as such); debug settings. train.yaml lists
# hparams_search and debug after experiment, and an experiment can only override the groups listed before it.
NOT_RECIPE = {"hparams_search", "experiment", "debug"}


def write_search_outputs(study: optuna.Study, sweep_dir: Path, metric: str, storage: str) -> None:
    trials = [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
    write_trials_csv(sweep_dir / "trials.csv", trials)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState if state.is_finished()}
    results = {
        "name": study.study_name,
        "storage": storage,
        "optimized_metric": metric,
        "direction": study.direction.name.lower(),
        "trials": counts | {"running": sum(t.state == TrialState.RUNNING for t in trials)},
    }
    if any(t.state == TrialState.COMPLETE for t in trials):
        best = study.best_trial
        results |= {
            "best_value": best.value,
            "best_params": best.params,
            "best_trial": best.number,
            "best_overrides": best.user_attrs.get("overrides", []),
            "best_job_dir": best.user_attrs.get("job_dir"),
            "best_recipe": str(write_best_recipe(sweep_dir, best, metric)),
            "run_best_recipe": f"python -m image_transfer.train --config-dir {sweep_dir} experiment={RECIPE.stem}",
        }
    write_atomically(sweep_dir / "optimization_results.yaml", OmegaConf.to_yaml(results))
    write_plots(study, sweep_dir)
    log.info("Optuna search results: %s", sweep_dir / "optimization_results.yaml")


def write_trials_csv(path: Path, trials: list[FrozenTrial]) -> None:
    names = sorted({name for t in trials for name in t.params})
    header = ["number", "state", "value", *names, "duration_s", "job_dir", "error"]
    rows = [
        [
            t.number,
            t.state.name,
            t.value,
            *(t.params.get(name) for name in names),
            round(t.duration.total_seconds(), 1) if t.duration else None,
            t.user_attrs.get("job_dir"),
            t.user_attrs.get("error"),
        ]
        for t in trials
    ]
    write_csv(path, header, rows)


def write_best_recipe(sweep_dir: Path, best: FrozenTrial, metric: str) -> Path:
    """The best trial as an experiment config (# @package _global_): the experiment it started from (if any),
    every config group as that job chose it (the search config's own choices included), its value overrides."""
    choices = {
        group: option
        for group, option in best.user_attrs.get("choices", {}).items()
        if not group.startswith("hydra/") and group not in NOT_RECIPE and option is not None
    }
    values = OmegaConf.create()
    for override in OverridesParser.create().parse_overrides(best.user_attrs.get("overrides", [])):
        key = override.key_or_group
        if key not in choices and key not in NOT_RECIPE:
            OmegaConf.update(values, key, None if override.is_delete() else override.value(), force_add=True)
    experiment = best.user_attrs.get("choices", {}).get("experiment")  # searched on top of a recipe: include it
    defaults = [f"/experiment/{experiment}"] if experiment else []
    defaults += [{f"override /{group}": option} for group, option in choices.items()]
    header = (
        "# @package _global_\n"
        f"# The best trial ({best.number}, {metric}={best.value:.4f}) of the Optuna search in {sweep_dir}.\n"
        f"# Run it: python -m image_transfer.train --config-dir {sweep_dir} experiment={RECIPE.stem}\n"
        "# (or copy it to configs/experiment/<name>.yaml and run experiment=<name>)\n"
    )
    body = OmegaConf.to_yaml(OmegaConf.create({"defaults": defaults})) + (OmegaConf.to_yaml(values) if values else "")
    return write_atomically(sweep_dir / RECIPE, header + body)


def write_plots(study: optuna.Study, sweep_dir: Path) -> None:
    """Optuna's matplotlib plots as PNG. A plot that cannot be drawn yet (importances and parallel coordinates
    need two completed trials) is skipped with a log line: plots never fail a search."""
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    evaluator = optuna.importance.PedAnovaImportanceEvaluator()  # needs no scikit-learn (fANOVA, the default, does)
    for name, draw in (
        ("optimization_history", lambda: plots.plot_optimization_history(study)),
        ("param_importances", lambda: plots.plot_param_importances(study, evaluator=evaluator)),
        ("parallel_coordinate", lambda: plots.plot_parallel_coordinate(study)),
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = draw()
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        except Exception as error:  # e.g. too few completed trials
            log.info("plot %s skipped: %s", name, " ".join(str(error).split()) or type(error).__name__)
            continue
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", bbox_inches="tight", dpi=120)
        plt.close(figure)
        write_atomically(sweep_dir / f"{name}.png", buffer.getvalue())
