"""A search space written in Hydra's override grammar, as Optuna distributions (the grammar upstream's
hydra-optuna-sweeper reads, so its configs port over):

    choice(a, b, c)                  categorical (lists too: choice([1], [2]))
    range(1, 4) | range(0.1, 0.5, 0.1)   integers / a float grid; the stop is excluded, as in Hydra
    interval(1e-4, 1e-2)             float; int(interval(1, 8)) integer; tag(log, interval(...)) log scale
"""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import Trial

from image_transfer.errors import ConfigError


def parse(overrides: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """(distributions, fixed overrides), both by key; for a key given twice the later one wins (the command
    line, after hydra.sweeper.params)."""
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed[key] = override.input_line
    return space, fixed


def distribution(override: Override) -> BaseDistribution:
    if override.is_choice_sweep() or (override.is_range_sweep() and override.value().shuffle):
        # Optuna's choices are plain values; others (lists, dicts) travel as their override text.
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        values = list(override.sweep_iterator())
        if all(isinstance(v, int) for v in values):
            step = values[1] - values[0] if len(values) > 1 else 1
            return IntDistribution(values[0], values[-1], step=step)
        return FloatDistribution(values[0], values[-1], step=override.value().step)
    if override.is_interval_sweep():
        interval = override.value()
        log = "log" in interval.tags
        if isinstance(interval.start, int) and isinstance(interval.end, int):
            return IntDistribution(interval.start, interval.end, log=log)
        return FloatDistribution(float(interval.start), float(interval.end), log=log)
    raise ConfigError(f"{override.input_line}: the Optuna sweeper does not support this sweep")


def suggest(trial: Trial, name: str, dist: BaseDistribution) -> object:
    """The trial's value for `name` (Optuna's public suggest API)."""
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def probes(space: dict[str, BaseDistribution], fixed: dict[str, str]) -> list[list[str]]:
    """Override lists that between them hold every choice and both ends of every range: if they all compose,
    no trial fails to compose."""

    def value(dist: BaseDistribution, i: int) -> object:
        if isinstance(dist, CategoricalDistribution):
            return dist.choices[i % len(dist.choices)]
        return dist.low if i % 2 == 0 else dist.high

    count = max([2] + [len(d.choices) for d in space.values() if isinstance(d, CategoricalDistribution)])
    return [[*fixed.values(), *(f"{k}={value(d, i)}" for k, d in space.items())] for i in range(count)]
