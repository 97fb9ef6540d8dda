"""The search space: a YAML of trainer keys and their distributions, checked before any trial.

Every entry is tried against the trainer's own config (its low, high and default values, and
each choice), so an unknown key, a value of the wrong type or one the trainer rejects fails
here, naming the entry, rather than in a trial an hour into the sweep.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
import yaml
from omegaconf import OmegaConf

from ganimator.config import ConfigError, load_config, qualify
from ganimator.networks import check_fits, check_kernel
from ganimator.schedule import Schedule

TYPES = ("log", "uniform", "int", "categorical")
FIELDS = {"type", "low", "high", "default", "log", "choices"}


@dataclass(frozen=True)
class Param:
    key: str  # as written in the YAML; also the parameter's name in Tune and Optuna
    distribution: optuna.distributions.BaseDistribution
    default: object

    def extremes(self) -> list:
        """The values that bound what a trial may get: every choice, or a range's ends."""
        d = self.distribution
        return list(d.choices) if isinstance(d, optuna.distributions.CategoricalDistribution) else [d.low, d.high]


class SearchSpace(dict):
    """name -> Param, in the YAML's order."""

    def distributions(self) -> dict:
        return {k: p.distribution for k, p in self.items()}

    def defaults(self) -> dict:
        return {k: p.default for k, p in self.items()}


def space_path(name) -> Path:
    """A YAML file, or the name of a space shipped beside space.yaml (`budget`: space-budget.yaml)."""
    path = Path(name)
    shipped = Path(__file__).with_name(f"space-{name}.yaml") if str(name).isidentifier() else None
    if not path.is_file() and shipped and shipped.is_file():
        return shipped
    if not path.is_file():
        raise ConfigError(f"search space {path} does not exist")
    return path


def load_space(path, trainer_overrides: list[str] = ()) -> SearchSpace:
    path = space_path(path)
    try:
        entries = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"search space {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(entries, dict) or not entries:
        raise ConfigError(f"search space {path} must map trainer keys to distributions")
    base = load_config(list(trainer_overrides))
    space = SearchSpace()
    for key, spec in entries.items():
        where = f"search space {path}, key {key!r}"
        try:
            space[key] = _param(str(key), spec, base, list(trainer_overrides))
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
    return space


def _param(key: str, spec, base, trainer_overrides: list[str]) -> Param:
    qualify(key)  # an unknown trainer key
    if not isinstance(spec, dict):
        raise ConfigError(f"expected a mapping such as {{type: log, low: 0.1, high: 10}}, got {spec!r}")
    unknown = set(spec) - FIELDS
    if unknown:
        raise ConfigError(f"unknown field(s) {sorted(unknown)}; expected some of {sorted(FIELDS)}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise ConfigError(f"type must be one of {list(TYPES)}, got {kind!r}")
    default = spec.get("default", _current(base, key))

    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError("categorical needs a non-empty list 'choices'")
        if default not in choices:
            raise ConfigError(f"default {default!r} is not among the choices {choices}")
        values, dist = choices, optuna.distributions.CategoricalDistribution(choices)
    else:
        low, high = spec.get("low"), spec.get("high")
        number = int if kind == "int" else (int, float)
        for name, v in (("low", low), ("high", high), ("default", default)):
            if not isinstance(v, number) or isinstance(v, bool) or not math.isfinite(v):
                raise ConfigError(f"{name} must be {'an integer' if kind == 'int' else 'a number'}, got {v!r}")
        if not low < high:
            raise ConfigError(f"empty range: low ({low}) must be below high ({high})")
        log = kind == "log" or bool(spec.get("log", False))
        if log and low <= 0:
            raise ConfigError(f"a log range needs low > 0, got {low}")
        if not low <= default <= high:
            raise ConfigError(f"default {default} is outside [{low}, {high}]")
        if kind == "int":
            dist = optuna.distributions.IntDistribution(low, high, log=log)
        else:
            dist = optuna.distributions.FloatDistribution(float(low), float(high), log=log)
            default = float(default)
        values = [low, high, default]
    for value in values:  # the trainer's own checks: type, sign, list index
        load_config(trainer_overrides + [f"{key}={value}"])
    return Param(key, dist, default)


def _current(base, key: str):
    """The trainer's value for `key`, the default of an entry that names none."""
    return OmegaConf.select(base, qualify(key))


def check_on_data(space: SearchSpace, trainer_overrides: list[str], dataset, check_memory: bool) -> None:
    """What the trainer checks against the clip (stages, a kernel wider than the coarsest level,
    networks too large for this machine's memory), for every choice and range end of the space:
    refused here, naming the entry, instead of in each trial on the cluster."""
    for key, param in space.items():
        for value in param.extremes():
            cfg = load_config([*trainer_overrides, f"{key}={value}"])
            try:
                Schedule.of(cfg, dataset.num_levels, dataset.source or "the data")  # its stages and their weights
                check_kernel(cfg, dataset)
                if check_memory:
                    check_fits(cfg, dataset, torch.device("cpu"))
            except ConfigError as e:
                raise ConfigError(f"search space key {key!r}, value {value!r}: {e}") from None
